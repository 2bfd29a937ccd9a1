/* fuzz_llama2c.c - a llama2.c checkpoint (.bin, legacy v0): the 7-int header,
 * the config checks and the layout that must match the file size exactly;
 * then every tensor as the model asks for it. */
#include "fuzz_common.h"
#include "io/source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size >= 4 && memcmp(data, "GGUF", 4) == 0) return 0; /* the GGUF target's */
    const char *p = fz_path("m.bin");
    fz_write(p, data, size);
    mf_err err;
    mf_source *s = mf_source_open(p, &err);
    if (!s) return 0;
    const mf_config *c = &s->cfg;
    char name[160];
    for (int l = -1; l <= c->n_layers; l++) {
        static const char *suffix[] = {"input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                       "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                                       "post_attention_layernorm.weight", "mlp.gate_proj.weight",
                                       "mlp.down_proj.weight", "mlp.up_proj.weight"};
        for (size_t k = 0; k < 9; k++) {
            if (l < 0) snprintf(name, sizeof name, "%s", k == 0 ? "model.embed_tokens.weight" : k == 1 ? "model.norm.weight" : "lm_head.weight");
            else snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix[k]);
            mf_raw_tensor raw;
            if (s->lookup(s, name, &raw) != 0) continue;
            int owned;
            float *w = mf_source_get(s, name, raw.ndim, raw.shape, &owned, &err);
            if (w) {
                volatile float x = w[0] + w[raw.nbytes / sizeof(float) - 1]; /* first and last element inside the map */
                (void)x;
                if (owned) free(w);
            }
            if (l < 0 && k >= 2) break;
        }
    }
    mf_source_close(s);
    return 0;
}
