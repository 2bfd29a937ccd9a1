/* fuzz_common.h - shared by the libFuzzer targets in tests/fuzz/ (docs/fuzzing.md).
 *
 * The readers take paths, so each input is written to a file in a private
 * directory under /dev/shm (or $TMPDIR) and read from there. A reader must
 * return an error for bad input - never crash, leak out of bounds, call
 * exit() (mf_fatal) or allocate more than libFuzzer's -malloc_limit_mb. */
#ifndef MF_FUZZ_COMMON_H
#define MF_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fsutil.h"

static char fz_dir[256];

static void fz_cleanup(void) {
    if (fz_dir[0]) mf_rmtree(fz_dir, NULL);
}

/* The private directory (created on first use). */
static const char *fz_tmpdir(void) {
    if (fz_dir[0]) return fz_dir;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(fz_dir, sizeof fz_dir, "%s/minifuse-fuzz-%ld", base, (long)getpid());
    mkdir(fz_dir, 0700);
    atexit(fz_cleanup);
    setenv("MINIFUSE_QUIET", "1", 1);
    return fz_dir;
}

/* "<dir>/<name>" in a static buffer. */
__attribute__((unused)) static const char *fz_path(const char *name) {
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", fz_tmpdir(), name);
    return p;
}

static void fz_write(const char *path, const uint8_t *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n && fwrite(data, 1, n, f) != n) abort();
    fclose(f);
}

#endif
