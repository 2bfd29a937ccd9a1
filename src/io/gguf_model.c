/* gguf_model.c - a GGUF file as a model source (llama, mistral, qwen2).
 *
 * GGUF tensor ne[] are innermost-first: a Linear weight [out][in] has
 * ne = {in, out}. For the llama architecture, q/k rows are stored in
 * interleaved RoPE order (llama.cpp's convert permutes them); qwen2 is not
 * permuted. The tokenizer comes from the tokenizer.ggml.* metadata. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/dequant.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "io/source.h"

/* HF name -> GGUF name, and whether the rows need RoPE un-permutation (1 = q, 2 = k). */
static int gguf_name(const char *hf, char *out, size_t cap, int *rope) {
    static const struct { const char *hf, *gg; int rope; } layer_map[] = {
        {"input_layernorm.weight", "attn_norm.weight", 0},  {"self_attn.q_proj.weight", "attn_q.weight", 1},
        {"self_attn.k_proj.weight", "attn_k.weight", 2},    {"self_attn.v_proj.weight", "attn_v.weight", 0},
        {"self_attn.q_proj.bias", "attn_q.bias", 1},        {"self_attn.k_proj.bias", "attn_k.bias", 2},
        {"self_attn.v_proj.bias", "attn_v.bias", 0},        {"self_attn.o_proj.weight", "attn_output.weight", 0},
        {"post_attention_layernorm.weight", "ffn_norm.weight", 0}, {"mlp.gate_proj.weight", "ffn_gate.weight", 0},
        {"mlp.up_proj.weight", "ffn_up.weight", 0},         {"mlp.down_proj.weight", "ffn_down.weight", 0},
    };
    *rope = 0;
    if (strcmp(hf, "model.embed_tokens.weight") == 0) { snprintf(out, cap, "token_embd.weight"); return 0; }
    if (strcmp(hf, "model.norm.weight") == 0) { snprintf(out, cap, "output_norm.weight"); return 0; }
    if (strcmp(hf, "lm_head.weight") == 0) { snprintf(out, cap, "output.weight"); return 0; }
    int l;
    char rest[128];
    if (sscanf(hf, "model.layers.%d.%127s", &l, rest) != 2) return -1;
    for (size_t i = 0; i < sizeof layer_map / sizeof layer_map[0]; i++)
        if (strcmp(rest, layer_map[i].hf) == 0) {
            snprintf(out, cap, "blk.%d.%s", l, layer_map[i].gg);
            *rope = layer_map[i].rope;
            return 0;
        }
    return -1;
}

static int gm_lookup(const mf_source *s, const char *name, mf_raw_tensor *raw) {
    char gname[160];
    int rope;
    if (gguf_name(name, gname, sizeof gname, &rope) != 0) return -1;
    const mf_gguf_tensor *t = mf_gguf_find_tensor(s->impl, gname);
    if (!t) return -1;
    memset(raw, 0, sizeof *raw);
    raw->data = t->data;
    raw->nbytes = t->nbytes;
    raw->ndim = t->n_dims;
    for (int i = 0; i < t->n_dims; i++) raw->shape[i] = t->ne[t->n_dims - 1 - i];
    if (t->type == MF_GGML_F32 || t->type == MF_GGML_F16 || t->type == MF_GGML_BF16) {
        raw->kind = MF_RAW_ST;
        raw->dtype = t->type == MF_GGML_F32 ? MF_DT_F32 : t->type == MF_GGML_F16 ? MF_DT_F16 : MF_DT_BF16;
    } else {
        raw->kind = MF_RAW_GGML;
        raw->ggml_type = t->type;
    }
    if (rope && s->cfg.arch != MF_ARCH_QWEN2) raw->rope_heads = rope == 1 ? s->cfg.n_heads : s->cfg.n_kv_heads;
    return 0;
}

static void gm_close(mf_source *s) { mf_gguf_close(s->impl); }

/* Read "<arch>.<key>" as u32; `def` < 0 means required. */
static int arch_u32(const mf_gguf *g, const char *arch, const char *key, long def, int *out, mf_err *err) {
    char full[160];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    uint32_t v;
    if (!mf_gguf_has_key(g, full)) {
        if (def < 0) return mf_err_set(err, "%s: missing metadata key '%s'", mf_gguf_path(g), full);
        *out = (int)def;
        return 0;
    }
    if (mf_gguf_get_u32(g, full, &v, err) != 0) return -1;
    if (v > (1u << 30)) return mf_err_set(err, "%s: metadata '%s' = %u is out of range", mf_gguf_path(g), full, v);
    *out = (int)v;
    return 0;
}

static int arch_f32(const mf_gguf *g, const char *arch, const char *key, double def, float *out, mf_err *err) {
    char full[160];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    if (!mf_gguf_has_key(g, full)) {
        if (def < 0) return mf_err_set(err, "%s: missing metadata key '%s'", mf_gguf_path(g), full);
        *out = (float)def;
        return 0;
    }
    return mf_gguf_get_f32(g, full, out, err);
}

static int gguf_config(const mf_gguf *g, mf_config *c, mf_err *err) {
    const char *arch;
    const char *path = mf_gguf_path(g);
    memset(c, 0, sizeof *c);
    if (mf_gguf_get_str(g, "general.architecture", &arch, err) != 0) return -1;
    if (mf_arch_parse(arch, &c->arch) != 0)
        return mf_err_set(err, "%s: unknown architecture '%s' (supported: llama, mistral, qwen2)", path, arch);
    if (arch_u32(g, arch, "embedding_length", -1, &c->dim, err) || arch_u32(g, arch, "feed_forward_length", -1, &c->ffn_dim, err) ||
        arch_u32(g, arch, "block_count", -1, &c->n_layers, err) || arch_u32(g, arch, "attention.head_count", -1, &c->n_heads, err) ||
        arch_u32(g, arch, "attention.head_count_kv", c->n_heads, &c->n_kv_heads, err) ||
        arch_u32(g, arch, "context_length", 2048, &c->max_seq_len, err) ||
        arch_f32(g, arch, "attention.layer_norm_rms_epsilon", -1, &c->norm_eps, err) ||
        arch_f32(g, arch, "rope.freq_base", 10000, &c->rope_theta, err))
        return -1;
    if (arch_u32(g, arch, "attention.sliding_window", 0, &c->sliding_window, err)) return -1;
    int hd = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    if (arch_u32(g, arch, "attention.key_length", hd, &c->head_dim, err)) return -1;
    const mf_gguf_tensor *emb = mf_gguf_find_tensor(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2) return mf_err_set(err, "%s: missing tensor 'token_embd.weight'", path);
    c->vocab_size = (int)emb->ne[1];
    c->tied_embeddings = mf_gguf_find_tensor(g, "output.weight") == NULL;
    c->qkv_bias = mf_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    uint32_t v;
    c->bos_id = mf_gguf_has_key(g, "tokenizer.ggml.bos_token_id") && mf_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &v, NULL) == 0 ? (int)v : 1;
    c->eos_id = mf_gguf_has_key(g, "tokenizer.ggml.eos_token_id") && mf_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &v, NULL) == 0 ? (int)v : 2;
    int add_bos = 1;
    if (mf_gguf_has_key(g, "tokenizer.ggml.add_bos_token") && mf_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos, NULL) == 0)
        c->no_bos_prompt = !add_bos;
    if (mf_gguf_find_tensor(g, "rope_freqs.weight"))
        return mf_err_set(err, "%s: tensor 'rope_freqs.weight' (llama3 RoPE scaling in GGUF) is not supported yet; load the Hugging Face directory instead", path);
    return 0;
}

int mf_gguf_model_open(mf_source *s, const char *path, mf_err *err) {
    mf_gguf *g = mf_gguf_open(path, err);
    s->format = MF_FMT_GGUF;
    if (!g) return -1;
    s->impl = g;
    s->lookup = gm_lookup;
    s->close = gm_close;
    return gguf_config(g, &s->cfg, err);
}

mf_tokenizer *mf_gguf_file_tokenizer(const char *path, mf_err *err) {
    mf_gguf *g = mf_gguf_open(path, err);
    if (!g) return NULL;
    mf_tokenizer *t = NULL;
    const char *model, *pre = "default";
    const char *const *tokens, *const *merges;
    size_t n_tok, n_merges;
    const int32_t *types = NULL;
    size_t n_types = 0;
    uint32_t bos = 1, eos = 2;
    if (mf_gguf_get_str(g, "tokenizer.ggml.model", &model, err) != 0) goto out;
    if (mf_gguf_get_str_array(g, "tokenizer.ggml.tokens", &tokens, &n_tok, err) != 0) goto out;
    if (mf_gguf_has_key(g, "tokenizer.ggml.token_type") && mf_gguf_get_i32_array(g, "tokenizer.ggml.token_type", &types, &n_types, err) != 0) goto out;
    /* counts from the file: bounded before they become ints (the vocabulary like mf_config_validate's) */
    if (n_tok < 1 || n_tok > (1u << 24)) { mf_err_set(err, "%s: tokenizer.ggml.tokens has %zu entries (1..%u allowed)", path, n_tok, 1u << 24); goto out; }
    if (types && n_types != n_tok) { mf_err_set(err, "%s: tokenizer.ggml.token_type has %zu entries for %zu tokens", path, n_types, n_tok); goto out; }
    if (mf_gguf_has_key(g, "tokenizer.ggml.bos_token_id") && mf_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &bos, err) != 0) goto out;
    if (mf_gguf_has_key(g, "tokenizer.ggml.eos_token_id") && mf_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &eos, err) != 0) goto out;
    if ((bos != UINT32_MAX && bos >= n_tok) || (eos != UINT32_MAX && eos >= n_tok)) {
        mf_err_set(err, "%s: tokenizer BOS id %u / EOS id %u outside the %zu tokens", path, bos, eos, n_tok);
        goto out;
    }
    if (strcmp(model, "gpt2") == 0) {
        if (mf_gguf_has_key(g, "tokenizer.ggml.pre") && mf_gguf_get_str(g, "tokenizer.ggml.pre", &pre, err) != 0) goto out;
        if (mf_gguf_get_str_array(g, "tokenizer.ggml.merges", &merges, &n_merges, err) != 0) goto out;
        if (n_merges > (1u << 26)) { mf_err_set(err, "%s: tokenizer.ggml.merges has %zu entries (at most %u)", path, n_merges, 1u << 26); goto out; }
        t = mf_tok_new_gpt2(tokens, (int)n_tok, merges, (int)n_merges, types, pre, (int)bos, (int)eos, err);
    } else if (strcmp(model, "llama") == 0) {
        const float *scores;
        size_t n_scores;
        int prefix = 1;
        if (mf_gguf_get_f32_array(g, "tokenizer.ggml.scores", &scores, &n_scores, err) != 0) goto out;
        if (n_scores != n_tok) { mf_err_set(err, "%s: tokenizer.ggml.scores has %zu entries for %zu tokens", path, n_scores, n_tok); goto out; }
        if (mf_gguf_has_key(g, "tokenizer.ggml.add_space_prefix") && mf_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &prefix, err) != 0) goto out;
        t = mf_tok_new_sp(tokens, scores, types, (int)n_tok, (int)bos, (int)eos, prefix, err);
    } else {
        mf_err_set(err, "%s: tokenizer.ggml.model '%s' is not supported (llama, gpt2)", path, model);
    }
    if (!t) mf_err_prefix(err, "%s: tokenizer", path);
out:
    mf_gguf_close(g);
    return t;
}
