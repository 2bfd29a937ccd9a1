/* fuzz_safetensors.c - the safetensors reader (header JSON, offsets, dtypes,
 * shapes) and the float conversion of every tensor it accepts. */
#include "fuzz_common.h"
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fz_path("m.safetensors");
    fz_write(p, data, size);
    mf_err err;
    mf_safetensors *st = mf_st_open_file(p, &err);
    if (!st) return 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const mf_st_tensor *t = &st->tensors[i];
        if (mf_st_find(st, t->name) != t) abort(); /* names are unique */
        size_t es = mf_dtype_size(t->dtype), n = es ? t->nbytes / es : 0;
        if (n > (1u << 20)) continue;
        float *dst = malloc((n ? n : 1) * sizeof *dst);
        mf_st_to_f32(t, dst, &err);
        free(dst);
    }
    mf_st_close(st);
    return 0;
}
