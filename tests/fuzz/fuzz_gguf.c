/* fuzz_gguf.c - the GGUF reader: header, every metadata key/value, tensor
 * infos and data placement; then the model view (architecture keys, config
 * validation) and the conversion of every small tensor (dequantization). */
#include "fuzz_common.h"
#include "io/gguf.h"
#include "io/source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4 || memcmp(data, "GGUF", 4) != 0) return 0; /* anything else is the llama.c target's */
    const char *p = fz_path("m.gguf");
    fz_write(p, data, size);
    mf_err err;
    mf_gguf *g = mf_gguf_open(p, &err);
    if (!g) return 0;
    for (size_t i = 0; i < mf_gguf_n_kv(g); i++) {
        const char *k = mf_gguf_kv_key(g, i);
        uint32_t et;
        size_t n;
        int t = mf_gguf_kv_type(g, k, &et, &n);
        const char *s;
        uint64_t u;
        double d;
        if (t == 8) mf_gguf_get_str(g, k, &s, &err);
        else if (t != 9) mf_gguf_get_u64(g, k, &u, &err), mf_gguf_get_f64(g, k, &d, &err);
    }
    mf_gguf_close(g);
    mf_source *src = mf_source_open(p, &err);
    if (!src) return 0;
    for (size_t i = 0;; i++) {
        const mf_gguf_tensor *t = mf_gguf_tensor_at(src->impl, i);
        if (!t) break;
        (void)t;
    }
    /* every tensor the model would ask for, where small */
    static const char *names[] = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
                                  "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
                                  "model.layers.0.mlp.down_proj.weight", "model.layers.0.input_layernorm.weight"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        mf_raw_tensor raw;
        if (src->lookup(src, names[i], &raw) != 0) continue;
        int64_t n = 1;
        for (int d = 0; d < raw.ndim; d++) n *= raw.shape[d];
        if (n <= 0 || n > (1 << 20)) continue;
        int owned;
        float *w = mf_source_get(src, names[i], raw.ndim, raw.shape, &owned, &err);
        if (w && owned) free(w);
    }
    mf_source_close(src);
    return 0;
}
