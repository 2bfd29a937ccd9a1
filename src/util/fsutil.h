/* fsutil.h - safe file-system chores for outputs: removing a tree without a
 * shell, unique temporary names, cleaning the temporaries of dead writers, and
 * a lock that keeps two jobs from writing the same output.
 *
 * Temporary names are "<final path>.tmp.<host>.<pid>.<8 hex>": the host and
 * pid of the writer and 32 random bits, so two writers never pick the same
 * name, and a later run can tell whether the writer is still alive (same host,
 * pid gone: stale). */
#ifndef MF_FSUTIL_H
#define MF_FSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "util/err.h"

/* Remove path and everything under it (nftw, depth first, symlinks are removed
 * and never followed). A missing path is not an error. */
int mf_rmtree(const char *path, mf_err *err);

/* This host's name as used in temporary names: [A-Za-z0-9-] only, at most 63
 * characters ("host" if it cannot be found). */
const char *mf_host_tag(void);

/* A new unique temporary name for path: "<path>.tmp.<host>.<pid>.<8 hex>"
 * (malloc'ed). */
char *mf_tmp_unique(const char *path);

/* Does name (a file name, no directory) look like a temporary of ours for
 * some final name? On yes, *host_out (cap bytes) and *pid get the writer. */
int mf_tmp_parse(const char *name, char *host_out, size_t cap, pid_t *pid);

/* In dir, remove every temporary (mf_tmp_parse) whose writer ran on this host
 * and is gone (kill(pid, 0) fails with ESRCH). Files and directories alike.
 * prefix, when non-NULL, limits it to names starting with prefix. Returns the
 * number removed; what cannot be removed is skipped. log (may be NULL) is
 * called once per removed entry with its path. */
int mf_clean_stale_tmps(const char *dir, const char *prefix, void (*log)(const char *path));

/* The output lock: an fcntl write lock on the file lockpath, which holds
 * "<pid> <host>" of the holder. Held until the process exits (or
 * mf_lock_release); taking a lock this process already holds succeeds. If
 * another process holds it: -1 with a message naming the lock file, the holder's
 * pid and host, and `what` (the output it protects). */
int mf_lock_acquire(const char *lockpath, const char *what, mf_err *err);
void mf_lock_release(const char *lockpath);
/* Release a lock this process holds and remove its file (when the output it
 * guarded is in place). Safe against a process that opened the file just
 * before: mf_lock_acquire re-checks that the file it locked is still the one
 * at lockpath. Does nothing when the lock is not held. */
void mf_lock_drop(const char *lockpath);

/* Checked size arithmetic for sizes read from files: 0 and *out set when the
 * result fits, -1 on overflow. */
static inline int mf_mul_size(size_t a, size_t b, size_t *out) { return __builtin_mul_overflow(a, b, out) ? -1 : 0; }
static inline int mf_add_size(size_t a, size_t b, size_t *out) { return __builtin_add_overflow(a, b, out) ? -1 : 0; }
static inline int mf_mul_u64(uint64_t a, uint64_t b, uint64_t *out) { return __builtin_mul_overflow(a, b, out) ? -1 : 0; }

#endif
