#include "model/model.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mmapfile.h"
#include "util/vec.h"

/* Keep p (bytes long; owned: malloc'ed by the reader, else in the map) for the model's life: on a device
 * backend it is uploaded once and the host copy freed, or its file pages dropped (a 70B shard's
 * pages would otherwise stay in host memory beside the GPU's copy); host backends use the map in
 * place. Owned pointers are remembered so mf_model_free can release them. */
static void *keep(mf_model *m, void *p, size_t bytes, int owned) {
    if (p && !m->be->is_host) {
        void *d = m->be->alloc(bytes);
        m->be->upload(d, p, bytes);
        if (owned) free(p);
        else if (m->mapped) mf_mmap_drop(p, bytes);
        p = d;
        owned = 1;
    }
    if (p && owned) {
        m->owned = mf_realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *m->owned);
        m->owned[m->n_owned++] = p;
    }
    return p;
}

/* Fetch one float32 tensor, checked finite. */
static float *fetch(mf_model *m, const mf_source *src, const char *name, int64_t d0, int64_t d1, mf_err *err) {
    int64_t shape[2] = {d0, d1};
    int owned;
    float *p = mf_source_get(src, name, d1 ? 2 : 1, shape, &owned, err);
    long bad = p ? mf_first_nonfinite(p, (size_t)d0 * (size_t)(d1 ? d1 : 1)) : -1;
    if (bad >= 0) {
        mf_err_set(err, "%s: tensor %s has a non-finite value (%g at element %ld): the model file is damaged",
                   src->path, name, (double)p[bad], bad);
        if (owned) free(p);
        return NULL;
    }
    return keep(m, p, (size_t)d0 * (size_t)(d1 ? d1 : 1) * sizeof(float), owned);
}

/* A 16-bit value's exponent all ones: inf or nan. */
static long first_nonfinite16(const uint16_t *h, size_t n, mf_dtype dt) {
    uint16_t e = dt == MF_DT_BF16 ? 0x7f80 : 0x7c00;
    for (size_t i = 0; i < n; i++)
        if ((h[i] & e) == e) return (long)i;
    return -1;
}

/* A matrix held in 16 bits (m->wdt): from the map in place when stored so, else converted. */
static void *fetch_half(mf_model *m, const mf_source *src, const char *name, int64_t d0, int64_t d1, mf_err *err) {
    int64_t shape[2] = {d0, d1};
    int owned;
    size_t n = (size_t)d0 * (size_t)d1, bytes = n * sizeof(uint16_t);
    uint16_t *p = mf_source_get_half(src, name, 2, shape, m->wdt, &owned, err);
    long bad = p ? first_nonfinite16(p, n, m->wdt) : -1;
    if (bad >= 0) {
        mf_err_set(err, "%s: tensor %s has a non-finite value in %s (element %ld): the model file is damaged%s", src->path,
                   name, mf_dtype_short(m->wdt), bad, owned ? " or a value overflows the type (use --weights f32)" : "");
        if (owned) free(p);
        return NULL;
    }
    return keep(m, p, bytes, owned);
}

/* A tensor at the type it is held in: matrices (d1 > 0) at m->wdt, vectors float32.
 * Returned as float * (mf_layer's type); with wdt != F32 a matrix holds uint16_t. */
static float *fetch_w(mf_model *m, const mf_source *src, const char *name, int64_t d0, int64_t d1, mf_err *err) {
    if (d1 && m->wdt != MF_DT_F32) return (float *)fetch_half(m, src, name, d0, d1, err);
    return fetch(m, src, name, d0, d1, err);
}

int mf_weights_parse(const char *s, mf_weights *w) {
    if (strcmp(s, "auto") == 0) *w = MF_WEIGHTS_AUTO;
    else if (strcmp(s, "bf16") == 0) *w = MF_WEIGHTS_BF16;
    else if (strcmp(s, "f32") == 0) *w = MF_WEIGHTS_F32;
    else return -1;
    return 0;
}

const char *mf_dtype_short(mf_dtype dt) { return dt == MF_DT_BF16 ? "bf16" : dt == MF_DT_F16 ? "f16" : "f32"; }

/* auto: BF16 or F16 when every matrix of the whole model is stored so (headers only). */
mf_dtype mf_weights_dtype(const mf_source *src, mf_weights w) {
    if (w == MF_WEIGHTS_F32) return MF_DT_F32;
    if (w == MF_WEIGHTS_BF16) return MF_DT_BF16;
    const mf_config *c = &src->cfg;
    mf_dtype dt = mf_source_dtype(src, "model.embed_tokens.weight");
    if (dt != MF_DT_BF16 && dt != MF_DT_F16) return MF_DT_F32;
    if (!c->tied_embeddings && mf_source_has(src, "lm_head.weight") && mf_source_dtype(src, "lm_head.weight") != dt)
        return MF_DT_F32;
    mf_layer_tensor t[MF_LAYER_TENSORS];
    mf_layer_tensors(c, t);
    char n[160];
    for (int l = 0; l < c->n_layers; l++)
        for (int i = 0; i < MF_LAYER_TENSORS; i++) {
            if (!t[i].d1) continue;
            snprintf(n, sizeof n, "model.layers.%d.%s", l, t[i].suffix);
            if (mf_source_dtype(src, n) != dt) return MF_DT_F32;
        }
    return dt;
}

int mf_model_require_f32(const mf_model *m, const char *what, mf_err *err) {
    if (m->wdt == MF_DT_F32) return 0;
    return mf_err_set(err, "%s needs float32 weights, this model holds its matrices in %s (use --weights f32)", what,
                      mf_dtype_short(m->wdt));
}

void mf_layer_tensors(const mf_config *c, mf_layer_tensor out[MF_LAYER_TENSORS]) {
    int64_t D = c->dim, F = c->ffn_dim, Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim;
    const mf_layer_tensor t[MF_LAYER_TENSORS] = {
        {"input_layernorm.weight", offsetof(mf_layer, attn_norm), D, 0, 0},
        {"self_attn.q_proj.weight", offsetof(mf_layer, wq), Q, D, 0},
        {"self_attn.k_proj.weight", offsetof(mf_layer, wk), KV, D, 0},
        {"self_attn.v_proj.weight", offsetof(mf_layer, wv), KV, D, 0},
        {"self_attn.q_proj.bias", offsetof(mf_layer, bq), Q, 0, 1},
        {"self_attn.k_proj.bias", offsetof(mf_layer, bk), KV, 0, 1},
        {"self_attn.v_proj.bias", offsetof(mf_layer, bv), KV, 0, 1},
        {"self_attn.o_proj.weight", offsetof(mf_layer, wo), D, Q, 0},
        {"post_attention_layernorm.weight", offsetof(mf_layer, ffn_norm), D, 0, 0},
        {"mlp.gate_proj.weight", offsetof(mf_layer, w_gate), F, D, 0},
        {"mlp.up_proj.weight", offsetof(mf_layer, w_up), F, D, 0},
        {"mlp.down_proj.weight", offsetof(mf_layer, w_down), D, F, 0},
    };
    memcpy(out, t, sizeof t);
}

static int load_layer(mf_model *m, const mf_source *src, int l, mf_layer *L, mf_err *err) {
    mf_layer_tensor t[MF_LAYER_TENSORS];
    mf_layer_tensors(&m->cfg, t);
    char n[160];
    for (int i = 0; i < MF_LAYER_TENSORS; i++) {
        if (t[i].is_bias && !m->cfg.qkv_bias) continue;
        snprintf(n, sizeof n, "model.layers.%d.%s", l, t[i].suffix);
        if (!(*mf_layer_slot(L, &t[i]) = fetch_w(m, src, n, t[i].d0, t[i].d1, err))) return -1;
    }
    return 0;
}

mf_model *mf_model_load(const mf_source *src, const mf_backend *be, int l0, int l1, int first, int last, mf_err *err) {
    return mf_model_load_w(src, be, l0, l1, first, last, MF_WEIGHTS_F32, err);
}

mf_model *mf_model_load_w(const mf_source *src, const mf_backend *be, int l0, int l1, int first, int last, mf_weights w,
                          mf_err *err) {
    mf_model *m = mf_calloc(1, sizeof *m);
    m->cfg = src->cfg;
    m->wdt = mf_weights_dtype(src, w);
    if (m->wdt != MF_DT_F32 && (!be->linear_h || !be->embed_h)) { /* a backend without the 16-bit weight ops */
        if (w == MF_WEIGHTS_AUTO) m->wdt = MF_DT_F32;
        else {
            mf_err_set(err, "%s: --weights bf16: backend '%s' has no half-precision weight ops (use --weights f32)",
                       src->path, be->name);
            free(m);
            return NULL;
        }
    }
    m->be = be;
    m->mapped = src->mapped;
    m->layer_begin = l0;
    m->layer_end = l1;
    m->first = first;
    m->last = last;
    const mf_config *c = &m->cfg;
    m->inv_freq = mf_malloc((size_t)(c->head_dim / 2) * sizeof *m->inv_freq);
    mf_config_rope_inv_freq(c, m->inv_freq);
    m->layers = mf_calloc((size_t)(l1 - l0 > 0 ? l1 - l0 : 1), sizeof *m->layers);
    if (first || (last && c->tied_embeddings))
        if (!(m->tok_embd = fetch_w(m, src, "model.embed_tokens.weight", c->vocab_size, c->dim, err))) goto fail;
    if (last) {
        if (!(m->out_norm = fetch(m, src, "model.norm.weight", c->dim, 0, err))) goto fail;
        m->lm_head = c->tied_embeddings ? m->tok_embd : fetch_w(m, src, "lm_head.weight", c->vocab_size, c->dim, err);
        if (!m->lm_head) goto fail;
    }
    for (int l = l0; l < l1; l++)
        if (load_layer(m, src, l, &m->layers[l - l0], err) != 0) goto fail;
    return m;
fail:
    mf_model_free(m);
    return NULL;
}

void mf_model_free(mf_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) {
        if (m->be->is_host) free(m->owned[i]);
        else m->be->free(m->owned[i]);
    }
    free(m->owned);
    free(m->layers);
    free(m->inv_freq);
    free(m);
}

/* A host copy of backend tensor src ([d0][d1], matrices at h->wdt), owned by h. */
static float *host_tensor(const mf_model *m, mf_model *h, const float *src, int64_t d0, int64_t d1) {
    if (!src) return NULL;
    size_t el = d1 && m->wdt != MF_DT_F32 ? sizeof(uint16_t) : sizeof(float);
    size_t bytes = (size_t)d0 * (size_t)(d1 ? d1 : 1) * el;
    float *p = mf_malloc(bytes ? bytes : 1);
    if (bytes) m->be->download(p, src, bytes);
    h->owned = mf_realloc(h->owned, (size_t)(h->n_owned + 1) * sizeof *h->owned);
    h->owned[h->n_owned++] = p;
    return p;
}

const mf_model *mf_model_host(const mf_model *m, mf_model **tmp) {
    *tmp = NULL;
    if (m->be->is_host) return m;
    const mf_config *c = &m->cfg;
    mf_model *h = mf_calloc(1, sizeof *h);
    *h = *m;
    h->be = mf_backend_cpu();
    h->owned = NULL;
    h->n_owned = 0;
    size_t hd2 = (size_t)(c->head_dim / 2 > 0 ? c->head_dim / 2 : 1);
    h->inv_freq = mf_malloc(hd2 * sizeof *h->inv_freq);
    memcpy(h->inv_freq, m->inv_freq, hd2 * sizeof *h->inv_freq);
    int nl = m->layer_end - m->layer_begin;
    h->layers = mf_calloc((size_t)(nl > 0 ? nl : 1), sizeof *h->layers);
    h->tok_embd = host_tensor(m, h, m->tok_embd, c->vocab_size, c->dim);
    h->out_norm = host_tensor(m, h, m->out_norm, c->dim, 0);
    h->lm_head = m->lm_head == m->tok_embd ? h->tok_embd : host_tensor(m, h, m->lm_head, c->vocab_size, c->dim);
    mf_layer_tensor lt[MF_LAYER_TENSORS];
    mf_layer_tensors(c, lt);
    for (int i = 0; i < nl; i++)
        for (int k = 0; k < MF_LAYER_TENSORS; k++)
            *mf_layer_slot(&h->layers[i], &lt[k]) =
                host_tensor(m, h, *mf_layer_slot(&m->layers[i], &lt[k]), lt[k].d0, lt[k].d1);
    *tmp = h;
    return h;
}

mf_state *mf_state_new(const mf_model *m, int max_T, int max_ctx) {
    const mf_config *c = &m->cfg;
    const mf_backend *be = m->be;
    size_t T = (size_t)max_T, Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    size_t nl = (size_t)(m->layer_end - m->layer_begin), f = sizeof(float);
    mf_state *s = mf_calloc(1, sizeof *s);
    s->max_T = max_T;
    s->max_ctx = max_ctx;
    s->x = be->alloc(T * c->dim * f);
    s->xn = be->alloc(T * c->dim * f);
    s->q = be->alloc(T * Q * f);
    s->att = be->alloc(T * Q * f);
    s->gate = be->alloc(T * c->ffn_dim * f);
    s->up = be->alloc(T * c->ffn_dim * f);
    if (nl) {
        s->kcache = be->alloc(nl * (size_t)max_ctx * KV * f);
        s->vcache = be->alloc(nl * (size_t)max_ctx * KV * f);
    }
    if (m->last) s->logits = be->alloc(T * (size_t)c->vocab_size * f);
    size_t widest = (size_t)c->dim;
    if (Q > widest) widest = Q;
    if ((size_t)c->ffn_dim > widest) widest = (size_t)c->ffn_dim;
    if (!be->is_host) s->host_act = mf_malloc(T * widest * f);
    return s;
}

void mf_state_free(const mf_model *m, mf_state *s) {
    if (!s) return;
    const mf_backend *be = m->be;
    float *bufs[] = {s->x, s->xn, s->q, s->att, s->gate, s->up, s->kcache, s->vcache, s->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->free(bufs[i]);
    free(s->host_act);
    free(s);
}

/* matrices at sizeof(wdt), norms and biases float32 */
size_t mf_model_weight_bytes(const mf_model *m) {
    const mf_config *c = &m->cfg;
    size_t ew = m->wdt == MF_DT_F32 ? sizeof(float) : sizeof(uint16_t);
    mf_layer_tensor t[MF_LAYER_TENSORS];
    mf_layer_tensors(c, t);
    size_t mat = 0, vec = 0;
    for (int i = 0; i < MF_LAYER_TENSORS; i++) {
        if (t[i].is_bias && !c->qkv_bias) continue;
        if (t[i].d1) mat += (size_t)(t[i].d0 * t[i].d1);
        else vec += (size_t)t[i].d0;
    }
    size_t nl = (size_t)(m->layer_end - m->layer_begin), emb = (size_t)c->vocab_size * c->dim;
    size_t bytes = nl * (mat * ew + vec * sizeof(float));
    if (m->tok_embd) bytes += emb * ew;
    if (m->last) bytes += c->dim * sizeof(float) + (c->tied_embeddings ? 0 : emb * ew);
    return bytes;
}
