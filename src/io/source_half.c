/* source_half.c - a stored tensor as 16-bit weights (bf16/f16), for frozen models (--weights). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/source.h"
#include "util/half.h"
#include "util/mmapfile.h"

mf_dtype mf_source_dtype(const mf_source *s, const char *name) {
    mf_raw_tensor raw;
    if (s->lookup(s, name, &raw) != 0) return MF_DT_F32;
    if (raw.kind != MF_RAW_ST) return MF_DT_F32; /* quantized GGML: dequantized to float */
    return (mf_dtype)raw.dtype;
}

uint16_t *mf_source_get_half(const mf_source *s, const char *name, int ndim, const int64_t *shape, mf_dtype dt,
                             int *owned, mf_err *err) {
    mf_raw_tensor raw;
    *owned = 0;
    if (dt != MF_DT_BF16 && dt != MF_DT_F16) {
        mf_err_set(err, "%s: tensor '%s': %d is not a 16-bit weight type", s->path, name, (int)dt);
        return NULL;
    }
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= shape[i];
    if (s->lookup(s, name, &raw) == 0 && raw.kind == MF_RAW_ST && (mf_dtype)raw.dtype == dt && raw.ndim == ndim &&
        raw.nbytes == (size_t)numel * 2) {
        int same = 1;
        for (int i = 0; i < ndim; i++) same &= raw.shape[i] == shape[i];
        if (same && raw.rope_heads == 0 && (uintptr_t)raw.data % 2 == 0) return (uint16_t *)raw.data; /* in place */
        if (same) {
            uint16_t *h = mf_malloc((size_t)numel * sizeof *h);
            memcpy(h, raw.data, (size_t)numel * sizeof *h);
            if (raw.rope_heads > 0) mf_unpermute_rope_rows(h, sizeof *h, raw.rope_heads, shape[0], ndim > 1 ? shape[1] : 1);
            if (s->mapped) mf_mmap_drop(raw.data, raw.nbytes);
            *owned = 1;
            return h;
        }
    }
    /* another type (F32, quantized, the other half type): through float32, one tensor at a time */
    int fowned;
    float *f = mf_source_get(s, name, ndim, shape, &fowned, err);
    if (!f) return NULL;
    uint16_t *h = mf_malloc((size_t)numel * sizeof *h);
    for (int64_t i = 0; i < numel; i++) h[i] = dt == MF_DT_BF16 ? mf_f32_to_bf16(f[i]) : mf_f32_to_fp16(f[i]);
    if (fowned) free(f);
    else if (s->mapped) mf_mmap_drop(f, (size_t)numel * sizeof *f); /* an F32 file's map, read once */
    *owned = 1;
    return h;
}
