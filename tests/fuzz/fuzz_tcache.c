/* fuzz_tcache.c - a teacher top-K cache (HDF5): open it for the key of the
 * seeds (tests/fuzz/seed_h5.c), then read every window; an id outside the
 * vocabulary or a window failing its checksum must be an error. */
#include <hdf5.h>

#include "fuzz_common.h"
#include "train/teacher_cache.h"

#define SHA_T "1111111111111111111111111111111111111111111111111111111111111111"
#define SHA_X "2222222222222222222222222222222222222222222222222222222222222222"

FZ_H5_MUTATOR

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fz_path("c.h5");
    fz_write(p, data, size);
    mf_tcache c;
    mf_err err;
    enum { K = 4, T = 6, W = 5, V = 64 };
    if (mf_tcache_open_v(p, K, T, 0, V, SHA_T, SHA_X, &c, &err) != 0) return 0;
    int32_t ids[T * K];
    float logits[T * K];
    for (int64_t w = 0; w < c.W && w < 64; w++)
        if (mf_tcache_get(&c, w, ids, logits, &err) == 0)
            for (int i = 0; i < T * K; i++)
                if (ids[i] < 0 || ids[i] >= V) abort(); /* an id past the vocabulary got through */
    mf_tcache_close(&c);
    return 0;
}
