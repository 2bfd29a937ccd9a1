/* forward.c - the Llama block, written against the backend interface.
 *
 *   x [T][D] -> xn = rmsnorm(x) -> q,k,v -> rope(q,k) -> cache k,v
 *            -> att = softmax(q k^T / sqrt(hd)) v -> x += att Wo^T
 *            -> xn = rmsnorm(x) -> x += (silu(xn Wg^T) * (xn Wu^T)) Wd^T */
#include "model/model.h"

/* y[T][n_out] (=|+=) x W^T (+ b) with W held at m->wdt: float32 or 16 bits (linear_h). */
static void lin(const mf_model *m, float *y, const float *x, const float *w, const float *b, int T, int n_in, int n_out,
                int acc) {
    if (m->wdt == MF_DT_F32) m->be->linear(y, x, w, b, T, n_in, n_out, acc);
    else m->be->linear_h(y, x, (const uint16_t *)w, m->wdt, b, T, n_in, n_out, acc);
}

void mf_forward_embed(const mf_model *m, mf_state *s, const int32_t *ids, int T) {
    if (m->wdt == MF_DT_F32) m->be->embed(s->x, m->tok_embd, ids, T, m->cfg.dim);
    else m->be->embed_h(s->x, (const uint16_t *)m->tok_embd, m->wdt, ids, T, m->cfg.dim);
}

static void observe(const mf_model *m, const mf_state *s, int layer, mf_act_point pt, const float *x, int T, int C) {
    if (!s->hooks) return;
    if (!m->be->is_host) {
        m->be->download(s->host_act, x, (size_t)T * C * sizeof *x);
        x = s->host_act;
    }
    s->hooks->on_act(s->hooks->ctx, layer, pt, x, T, C);
}

static void attention_block(const mf_model *m, const mf_layer *L, mf_state *s, int li, int T, int pos0) {
    const mf_config *c = &m->cfg;
    const mf_backend *be = m->be;
    int D = c->dim, hd = c->head_dim, Q = c->n_heads * hd, KV = c->n_kv_heads * hd;
    float *kc = s->kcache + (size_t)li * s->max_ctx * KV, *vc = s->vcache + (size_t)li * s->max_ctx * KV;
    float *k_new = kc + (size_t)pos0 * KV, *v_new = vc + (size_t)pos0 * KV;

    be->rmsnorm(s->xn, NULL, s->x, L->attn_norm, T, D, c->norm_eps);
    observe(m, s, m->layer_begin + li, MF_ACT_ATTN_NORM, s->xn, T, D);
    lin(m, s->q, s->xn, L->wq, L->bq, T, D, Q, 0);
    lin(m, k_new, s->xn, L->wk, L->bk, T, D, KV, 0); /* straight into the cache */
    lin(m, v_new, s->xn, L->wv, L->bv, T, D, KV, 0);
    be->rope(s->q, T, c->n_heads, hd, pos0, m->inv_freq);
    be->rope(k_new, T, c->n_kv_heads, hd, pos0, m->inv_freq);
    be->attention(s->att, s->q, kc, vc, T, pos0, c->n_heads, c->n_kv_heads, hd);
    observe(m, s, m->layer_begin + li, MF_ACT_ATTN_CTX, s->att, T, Q);
    lin(m, s->x, s->att, L->wo, NULL, T, Q, D, 1); /* residual: x += att Wo^T */
}

static void mlp_block(const mf_model *m, const mf_layer *L, mf_state *s, int layer, int T) {
    const mf_config *c = &m->cfg;
    const mf_backend *be = m->be;
    int D = c->dim, F = c->ffn_dim;
    be->rmsnorm(s->xn, NULL, s->x, L->ffn_norm, T, D, c->norm_eps);
    observe(m, s, layer, MF_ACT_MLP_NORM, s->xn, T, D);
    lin(m, s->gate, s->xn, L->w_gate, NULL, T, D, F, 0);
    lin(m, s->up, s->xn, L->w_up, NULL, T, D, F, 0);
    be->swiglu(s->gate, s->gate, s->up, (size_t)T * F);
    observe(m, s, layer, MF_ACT_MLP_ACT, s->gate, T, F);
    lin(m, s->x, s->gate, L->w_down, NULL, T, F, D, 1); /* residual */
}

void mf_forward_range(const mf_model *m, mf_state *s, int T, int pos0, int from, int to, const unsigned char *skip) {
    if (from < m->layer_begin) from = m->layer_begin;
    if (to > m->layer_end) to = m->layer_end;
    int D = m->cfg.dim;
    for (int l = from; l < to; l++) {
        if (skip && skip[l]) continue;
        const mf_layer *L = &m->layers[l - m->layer_begin];
        observe(m, s, l, MF_ACT_LAYER_IN, s->x, T, D);
        attention_block(m, L, s, l - m->layer_begin, T, pos0);
        mlp_block(m, L, s, l, T);
        observe(m, s, l, MF_ACT_LAYER_OUT, s->x, T, D);
    }
}

void mf_forward_layers(const mf_model *m, mf_state *s, int T, int pos0) {
    mf_forward_range(m, s, T, pos0, m->layer_begin, m->layer_end, NULL);
}

void mf_forward_head(const mf_model *m, mf_state *s, int T) {
    const mf_config *c = &m->cfg;
    m->be->rmsnorm(s->xn, NULL, s->x, m->out_norm, T, c->dim, c->norm_eps);
    lin(m, s->logits, s->xn, m->lm_head, NULL, T, c->dim, c->vocab_size, 0);
}
