#include "model/config.h"

#include <math.h>
#include <string.h>

static const struct { const char *name; mf_arch arch; } ARCHS[] = {
    {"LlamaForCausalLM", MF_ARCH_LLAMA},     {"llama", MF_ARCH_LLAMA},
    {"MistralForCausalLM", MF_ARCH_MISTRAL}, {"mistral", MF_ARCH_MISTRAL},
    {"Qwen2ForCausalLM", MF_ARCH_QWEN2},     {"qwen2", MF_ARCH_QWEN2},
};

const char *mf_arch_name(mf_arch a) {
    switch (a) {
    case MF_ARCH_LLAMA: return "llama";
    case MF_ARCH_MISTRAL: return "mistral";
    case MF_ARCH_QWEN2: return "qwen2";
    }
    return "?";
}

int mf_arch_parse(const char *name, mf_arch *out) {
    for (size_t i = 0; i < sizeof ARCHS / sizeof ARCHS[0]; i++)
        if (strcmp(name, ARCHS[i].name) == 0) { *out = ARCHS[i].arch; return 0; }
    return -1;
}

int mf_config_validate(const mf_config *c, const char *what, mf_err *err) {
    const struct { const char *name; int v; int max; } f[] = {
        {"hidden_size", c->dim, 1 << 17},          {"intermediate_size", c->ffn_dim, 1 << 20},
        {"num_hidden_layers", c->n_layers, 4096},  {"num_attention_heads", c->n_heads, 4096},
        {"num_key_value_heads", c->n_kv_heads, 4096}, {"head_dim", c->head_dim, 4096},
        {"vocab_size", c->vocab_size, 1 << 24},    {"max_position_embeddings", c->max_seq_len, 1 << 24},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v <= 0 || f[i].v > f[i].max)
            return mf_err_set(err, "%s: %s = %d is out of range (1..%d)", what, f[i].name, f[i].v, f[i].max);
    if (c->n_heads % c->n_kv_heads != 0)
        return mf_err_set(err, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", what,
                          c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0) return mf_err_set(err, "%s: head_dim %d must be even for RoPE", what, c->head_dim);
    if (!(c->norm_eps > 0) || !(c->rope_theta > 0))
        return mf_err_set(err, "%s: rms_norm_eps and rope_theta must be positive", what);
    if (c->bos_id < 0 || c->bos_id >= c->vocab_size)
        return mf_err_set(err, "%s: bos_token_id %d outside the vocabulary (%d)", what, c->bos_id, c->vocab_size);
    if (c->rope_llama3 && !(c->rope_factor > 0 && c->rope_high_freq_factor > c->rope_low_freq_factor && c->rope_orig_ctx > 0))
        return mf_err_set(err, "%s: rope_scaling llama3 needs factor > 0, high_freq_factor > low_freq_factor and original_max_position_embeddings", what);
    return 0;
}

int mf_config_check_ctx(const mf_config *c, int ctx, const char *what, mf_err *err) {
    if (c->sliding_window > 0 && ctx > c->sliding_window)
        return mf_err_set(err, "%s: sliding_window %d is smaller than the context of %d tokens; minifuse runs full causal "
                          "attention, which differs from this model's beyond %d tokens (use a context of at most %d)",
                          what, c->sliding_window, ctx, c->sliding_window, c->sliding_window);
    return 0;
}

int64_t mf_config_layer_params(const mf_config *c) {
    int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t attn = (int64_t)c->dim * (q + 2 * kv) + q * c->dim + (c->qkv_bias ? q + 2 * kv : 0);
    int64_t mlp = 3 * (int64_t)c->dim * c->ffn_dim;
    return attn + mlp + 2 * (int64_t)c->dim;
}

int64_t mf_config_total_params(const mf_config *c) {
    int64_t emb = (int64_t)c->vocab_size * c->dim;
    return emb * (c->tied_embeddings ? 1 : 2) + c->n_layers * mf_config_layer_params(c) + c->dim;
}

double mf_config_layer_flops(const mf_config *c, int pos) {
    /* 2 FLOPs per weight multiply-add, plus QK^T and PV over pos+1 keys */
    double att = 2.0 * 2.0 * c->n_heads * c->head_dim * (double)(pos + 1);
    return 2.0 * (double)mf_config_layer_params(c) + att;
}

double mf_config_head_flops(const mf_config *c) { return 2.0 * (double)c->vocab_size * c->dim; }

void mf_config_rope_inv_freq(const mf_config *c, float *inv_freq) {
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        double f = pow((double)c->rope_theta, -2.0 * i / c->head_dim);
        if (c->rope_llama3) {
            double lo_wl = c->rope_orig_ctx / c->rope_low_freq_factor;
            double hi_wl = c->rope_orig_ctx / c->rope_high_freq_factor;
            double wl = 2.0 * M_PI / f;
            if (wl > lo_wl) f /= c->rope_factor;
            else if (wl >= hi_wl) {
                double s = (c->rope_orig_ctx / wl - c->rope_low_freq_factor) /
                           (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1 - s) * f / c->rope_factor + s * f;
            }
        }
        inv_freq[i] = (float)f;
    }
}
