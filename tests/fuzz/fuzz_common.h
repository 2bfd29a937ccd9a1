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

/* ---- HDF5 targets: the probe's child (mf_h5_probe) ----
 * A crash of the forked child is minifuse's handled case, not a finding: no
 * death callback (libFuzzer's would save the input as a crash), and a working
 * directory where the relative -artifact_prefix of run_fuzz.sh leads nowhere. */
#include <sanitizer/common_interface_defs.h>

void mf_h5_probe_child_hook(void);
void mf_h5_probe_child_hook(void) {
    __sanitizer_set_death_callback(NULL);
    if (chdir(fz_tmpdir()) != 0) _exit(99);
}

/* ---- HDF5 targets: "crafted" mode ----
 * With MF_FUZZ_H5_CRAFTED=1 in the environment, every mutated input gets its
 * superblock checksum and the checksums of its version-2 object headers
 * ("OHDR" chunk 0) recomputed, so the mutation reaches libhdf5's parsers the
 * way a file forged by someone who knows the format would, instead of being
 * stopped by a checksum. Off by default (make test, make fuzz): it measures
 * libhdf5 itself, which minifuse cannot fix (docs/fuzzing.md). */
#include "io/h5util.h"

static void fz_put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

__attribute__((unused)) static void fz_h5_fixup(uint8_t *d, size_t n) {
    if (n >= 48 && !memcmp(d, "\x89HDF\r\n\x1a\n", 8) && (d[8] == 2 || d[8] == 3))
        fz_put32(d + 44, mf_h5_lookup3(d, 44, 0));
    for (size_t i = 48; i + 8 < n; i++) {
        if (memcmp(d + i, "OHDR", 4) || d[i + 4] != 2) continue;
        uint8_t flags = d[i + 5];
        size_t at = i + 6 + (flags & 0x20 ? 16 : 0) + (flags & 0x10 ? 4 : 0), w = (size_t)1 << (flags & 3);
        if (at + w > n) continue;
        uint64_t len = 0;
        for (size_t k = 0; k < w; k++) len |= (uint64_t)d[at + k] << (8 * k);
        size_t end = at + w;
        if (len > n || end + len + 4 > n) continue;
        end += (size_t)len;
        fz_put32(d + end, mf_h5_lookup3(d + i, end - i, 0));
    }
}

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

#define FZ_H5_MUTATOR                                                                                                  \
    size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed);                   \
    size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed) {                  \
        (void)seed;                                                                                                    \
        size_t n = LLVMFuzzerMutate(data, size, max_size);                                                             \
        static int crafted = -1;                                                                                       \
        if (crafted < 0) crafted = getenv("MF_FUZZ_H5_CRAFTED") && atoi(getenv("MF_FUZZ_H5_CRAFTED")) > 0;             \
        if (crafted) fz_h5_fixup(data, n);                                                                             \
        return n;                                                                                                      \
    }

#endif
