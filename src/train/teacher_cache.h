/* teacher_cache.h - the teacher's top-K logits for every training window,
 * computed once and kept in an HDF5 file, so that later epochs (and later runs
 * on the same text) skip the teacher forward.
 *
 * Layout: /ids int32 [W][T][K] and /logits float32 [W][T][K] (raw teacher
 * logits of the K most likely tokens of every position, largest first),
 * /window_sum uint32 [W][2] (lookup3 checksums of each window's ids and
 * logits); root attributes format "minifuse-teacher-topk", format_version 2,
 * K, ctx, n_windows, vocab_size, teacher, teacher_sha256, text, text_sha256
 * (+ their sizes and mtimes, a quick check for the old API), complete = 1
 * (last). Written collectively by all ranks with parallel HDF5 (newest file
 * format, checksummed metadata): the last stage of every data-parallel replica
 * writes the windows its replica computed (window w belongs to replica w mod D);
 * read serially.
 *
 * The cache is keyed on the SHA-256 of the teacher's weights and of the text:
 * a cache built from another teacher, another text, another vocabulary, K,
 * ctx or window count is rebuilt (with a log line), never reused. Every window
 * read is checked against its checksum, and every token id against the
 * vocabulary, before it reaches the loss. */
#ifndef MF_TEACHER_CACHE_H
#define MF_TEACHER_CACHE_H

#include <hdf5.h>
#include <mpi.h>
#include <stdint.h>
#include "util/err.h"

#define MF_TCACHE_FORMAT "minifuse-teacher-topk"
#define MF_TCACHE_VERSION 2

typedef struct mf_tcache {
    hid_t file, ids, logits;
    int K, T;
    int64_t W;
    hid_t sums;  /* /window_sum */
    int V;       /* token ids are in [0, V) */
    char *path;  /* for messages (owned) */
    char *tmp;   /* while writing: the temporary name (owned) */
} mf_tcache;

/* Top-K of a row z[V] into ids[K], vals[K], largest first (ties: lower id first). */
void mf_topk(const float *z, int V, int K, int32_t *ids, float *vals);

/* Collective over world: rank 0 hashes teacher (file or directory, as
 * mf_sha256_path) and text; every rank gets both hex digests. */
int mf_tcache_key(MPI_Comm world, const char *teacher, const char *text, char teacher_sha[65], char text_sha[65],
                  mf_err *err);

/* Collective over world: create path (via a unique temporary name) with room
 * for W windows of a V-token vocabulary, keyed on the given digests. */
int mf_tcache_create_v(const char *path, MPI_Comm world, int K, int T, int64_t W, int V, const char *teacher,
                       const char *teacher_sha, const char *text, const char *text_sha, mf_tcache *c, mf_err *err);
/* The same without a key: rank 0 hashes teacher and text (mf_tcache_key) and
 * reads V from the teacher's model file. */
int mf_tcache_create(const char *path, MPI_Comm world, int K, int T, int64_t W, const char *teacher, const char *text,
                     mf_tcache *c, mf_err *err);
/* Write window w's [T][K] ids and logits and its checksums (independent I/O, any rank). */
int mf_tcache_put(mf_tcache *c, int64_t w, const int32_t *ids, const float *logits, mf_err *err);
/* Collective: mark complete, close, rename the temporary to path. */
int mf_tcache_finish(const char *path, MPI_Comm world, mf_tcache *c, int rc, mf_err *err);

/* Open a complete cache for reading, for K, ctx, W windows (W 0 = any), a V-token
 * vocabulary and the given teacher and text digests. 1: to be (re)built - the
 * file does not exist, is incomplete, or was built for anything else (the
 * reason is logged once, by world rank 0); 0: opened; -1: error (a file that is
 * not a teacher cache, or damaged). */
int mf_tcache_open_v(const char *path, int K, int T, int64_t W, int V, const char *teacher_sha, const char *text_sha,
                     mf_tcache *c, mf_err *err);
/* The same without the run's key: the teacher and text files named in the cache
 * must be unchanged (size and mtime, else their SHA-256 is compared) and ids
 * are checked against the vocabulary size stored in the cache. Prefer
 * mf_tcache_open_v: only it can tell that this run uses another teacher. */
int mf_tcache_open(const char *path, int K, int T, int64_t W, mf_tcache *c, mf_err *err);
/* Window w: checksums verified, every id in [0, V); else -1 naming the file and window. */
int mf_tcache_get(const mf_tcache *c, int64_t w, int32_t *ids, float *logits, mf_err *err);
void mf_tcache_close(mf_tcache *c);

#endif
