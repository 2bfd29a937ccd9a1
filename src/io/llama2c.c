/* llama2c.c - llama2.c checkpoint (.bin, legacy v0 format).
 *
 * Header: 7 x int32 {dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len};
 * negative vocab_size means an untied classifier at the end. Then float32:
 *   token_embedding [vocab][dim], rms_att [L][dim], wq [L][dim][dim], wk [L][kv][dim],
 *   wv [L][kv][dim], wo [L][dim][dim], rms_ffn [L][dim], w1 [L][hidden][dim],
 *   w2 [L][dim][hidden], w3 [L][hidden][dim], rms_final [dim],
 *   freq_cis_real [seq][hd/2], freq_cis_imag [seq][hd/2], (wcls [vocab][dim]).
 * q/k rows are in interleaved RoPE order; rope_theta 10000, eps 1e-5. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "io/source.h"
#include "util/mmapfile.h"

typedef struct l2c {
    mf_mmap map;
    size_t off_emb, off_att, off_wq, off_wk, off_wv, off_wo, off_ffn, off_w1, off_w2, off_w3, off_final, off_cls;
} l2c;

/* Which llama2.c array a HF name maps to: sets base offset, per-layer stride and shape. */
static int l2c_locate(const mf_source *s, const char *name, size_t *off, int64_t *rows, int64_t *cols, int *rope_heads) {
    const l2c *m = s->impl;
    const mf_config *c = &s->cfg;
    int64_t D = c->dim, F = c->ffn_dim, KV = (int64_t)c->n_kv_heads * c->head_dim, V = c->vocab_size;
    *rope_heads = 0;
    if (strcmp(name, "model.embed_tokens.weight") == 0) { *off = m->off_emb; *rows = V; *cols = D; return 0; }
    if (strcmp(name, "model.norm.weight") == 0) { *off = m->off_final; *rows = D; *cols = 0; return 0; }
    if (strcmp(name, "lm_head.weight") == 0) {
        if (c->tied_embeddings) return -1;
        *off = m->off_cls; *rows = V; *cols = D; return 0;
    }
    int l, n = 0;
    char rest[128];
    if (sscanf(name, "model.layers.%d.%127s%n", &l, rest, &n) != 2 || l < 0 || l >= c->n_layers) return -1;
    const struct { const char *suffix; size_t base; int64_t r, c; int rope; } map[] = {
        {"input_layernorm.weight", m->off_att, D, 0, 0},
        {"self_attn.q_proj.weight", m->off_wq, D, D, c->n_heads},
        {"self_attn.k_proj.weight", m->off_wk, KV, D, c->n_kv_heads},
        {"self_attn.v_proj.weight", m->off_wv, KV, D, 0},
        {"self_attn.o_proj.weight", m->off_wo, D, D, 0},
        {"post_attention_layernorm.weight", m->off_ffn, D, 0, 0},
        {"mlp.gate_proj.weight", m->off_w1, F, D, 0},
        {"mlp.down_proj.weight", m->off_w2, D, F, 0},
        {"mlp.up_proj.weight", m->off_w3, F, D, 0},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (strcmp(rest, map[i].suffix) != 0) continue;
        int64_t per = map[i].r * (map[i].c ? map[i].c : 1);
        *off = map[i].base + (size_t)(l * per) * sizeof(float);
        *rows = map[i].r;
        *cols = map[i].c;
        *rope_heads = map[i].rope;
        return 0;
    }
    return -1;
}

static int l2c_lookup(const mf_source *s, const char *name, mf_raw_tensor *raw) {
    size_t off;
    int64_t rows, cols;
    int rope;
    if (l2c_locate(s, name, &off, &rows, &cols, &rope) != 0) return -1;
    const l2c *m = s->impl;
    memset(raw, 0, sizeof *raw);
    raw->data = m->map.data + off;
    raw->ndim = cols ? 2 : 1;
    raw->shape[0] = rows;
    raw->shape[1] = cols;
    raw->nbytes = (size_t)(rows * (cols ? cols : 1)) * sizeof(float);
    raw->kind = MF_RAW_ST;
    raw->dtype = MF_DT_F32;
    raw->rope_heads = rope;
    return 0;
}

static void l2c_close(mf_source *s) {
    l2c *m = s->impl;
    if (!m) return;
    mf_mmap_close(&m->map);
    free(m);
}

/* Lay out the array offsets and check the file is exactly long enough. */
static int l2c_layout(l2c *m, const mf_config *c, const char *path, mf_err *err) {
    size_t D = (size_t)c->dim, F = (size_t)c->ffn_dim, L = (size_t)c->n_layers, V = (size_t)c->vocab_size;
    size_t KV = (size_t)c->n_kv_heads * (size_t)c->head_dim, HD = (size_t)c->head_dim, S = (size_t)c->max_seq_len;
    size_t o = 7 * sizeof(int32_t), f = sizeof(float);
    m->off_emb = o; o += V * D * f;
    m->off_att = o; o += L * D * f;
    m->off_wq = o; o += L * D * D * f;
    m->off_wk = o; o += L * KV * D * f;
    m->off_wv = o; o += L * KV * D * f;
    m->off_wo = o; o += L * D * D * f;
    m->off_ffn = o; o += L * D * f;
    m->off_w1 = o; o += L * F * D * f;
    m->off_w2 = o; o += L * D * F * f;
    m->off_w3 = o; o += L * F * D * f;
    m->off_final = o; o += D * f;
    o += S * HD * f; /* freq_cis_real [seq][hd/2] + imag [seq][hd/2] */
    m->off_cls = o;
    if (!c->tied_embeddings) o += V * D * f;
    if (o != m->map.size)
        return mf_err_set(err, "%s: llama2.c checkpoint should be %zu bytes for its header (dim %d, layers %d, vocab %d), file has %zu",
                          path, o, c->dim, c->n_layers, c->vocab_size, m->map.size);
    return 0;
}

int mf_llama2c_open(mf_source *s, const char *path, mf_err *err) {
    l2c *m = mf_calloc(1, sizeof *m);
    s->format = MF_FMT_LLAMA2C;
    s->impl = m;
    s->lookup = l2c_lookup;
    s->close = l2c_close;
    if (mf_mmap_open(&m->map, path, err) != 0) return -1;
    if (m->map.size < 28) return mf_err_set(err, "%s: too short for a llama2.c checkpoint (%zu bytes) and not GGUF", path, m->map.size);
    int32_t h[7];
    memcpy(h, m->map.data, sizeof h);
    mf_config *c = &s->cfg;
    memset(c, 0, sizeof *c);
    c->arch = MF_ARCH_LLAMA;
    c->dim = h[0];
    c->ffn_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    c->tied_embeddings = h[5] > 0;
    /* negative: untied classifier; INT32_MIN has no positive counterpart */
    c->vocab_size = h[5] > 0 ? h[5] : h[5] == INT32_MIN ? 0 : -h[5];
    c->max_seq_len = h[6];
    c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->bos_id = 1;
    c->eos_id = 2;
    if (mf_config_validate(c, path, err) != 0) return mf_err_prefix(err, "not a llama2.c checkpoint or GGUF file");
    if (c->head_dim * c->n_heads != c->dim) return mf_err_set(err, "%s: dim %d not divisible by n_heads %d", path, c->dim, c->n_heads);
    return l2c_layout(m, c, path, err);
}
