/* model_train.c - training forward (saving activations) and backward of a pipeline stage.
 *
 * Layer forward (saved in mf_layer_acts):
 *   xn1 = rmsnorm(x_in) ; q,k,v = xn1 W^T (+b) ; rope(q,k) ; att = attention(q,k,v)
 *   x_mid = x_in + att Wo^T ; xn2 = rmsnorm(x_mid) ; gate, up = xn2 W^T
 *   x_out = x_mid + (silu(gate) * up) Wd^T
 * Layer backward, g = dL/dx_out in, dL/dx_in out (in place):
 *   dh = g Wd ; dgate, dup ; dxn2 = dgate Wg + dup Wu ; g += rmsnorm'(dxn2)   (g = dL/dx_mid)
 *   datt = g Wo ; dq,dk,dv ; rope^T ; dxn1 = dq Wq + dk Wk + dv Wv ; g += rmsnorm'(dxn1) */
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_backward.h"
#include "train/train_model.h"

/* ------------------------------------------------------------------ memory */

/* A zeroed buffer of the model's backend. */
static float *buf(mf_train_state *ts, size_t n) {
    ts->bytes += n * sizeof(float);
    float *p = ts->be->alloc((n ? n : 1) * sizeof(float));
    ts->be->zero(p, (n ? n : 1) * sizeof(float));
    return p;
}

static void release(const mf_backend *be, float *p) {
    if (p) be->free(p);
}

/* everything but x_in */
static void acts_alloc(mf_train_state *ts, mf_layer_acts *a, const mf_config *c, size_t T) {
    size_t D = c->dim, F = c->ffn_dim, Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    a->rms1 = buf(ts, T);
    a->rms2 = buf(ts, T);
    a->xn1 = buf(ts, T * D);
    a->q = buf(ts, T * Q);
    a->k = buf(ts, T * KV);
    a->v = buf(ts, T * KV);
    a->att = buf(ts, T * Q);
    a->x_mid = buf(ts, T * D);
    a->xn2 = buf(ts, T * D);
    a->gate = buf(ts, T * F);
    a->up = buf(ts, T * F);
}

static void acts_free(const mf_backend *be, mf_layer_acts *a) {
    float *p[] = {a->x_in, a->rms1, a->rms2, a->xn1, a->q, a->k, a->v, a->att, a->x_mid, a->xn2, a->gate, a->up};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) release(be, p[i]);
}

mf_train_state *mf_train_state_new(const mf_model *m, int max_T, int recompute, mf_err *err) {
    if (mf_model_require_f32(m, "training (a student)", err) != 0) return NULL; /* never read 16-bit data as float */
    if (max_T < 1) {
        mf_err_set(err, "training: micro-batch length %d must be at least 1", max_T);
        return NULL;
    }
    const mf_config *c = &m->cfg;
    size_t T = (size_t)max_T, D = c->dim, F = c->ffn_dim, V = c->vocab_size;
    size_t Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    mf_train_state *ts = mf_calloc(1, sizeof *ts);
    ts->be = m->be;
    ts->max_T = max_T;
    ts->recompute = recompute ? 1 : 0;
    ts->n_layers = m->layer_end - m->layer_begin;
    ts->skip = mf_calloc((size_t)c->n_layers + 1, 1);
    ts->ids = mf_calloc(T, sizeof *ts->ids);
    ts->acts = mf_calloc((size_t)(ts->n_layers > 0 ? ts->n_layers : 1), sizeof *ts->acts);
    for (int i = 0; i < ts->n_layers; i++) {
        ts->acts[i].x_in = buf(ts, T * D);
        if (!ts->recompute) acts_alloc(ts, &ts->acts[i], c, T);
    }
    if (ts->recompute) {
        acts_alloc(ts, &ts->work, c, T);
        ts->scratch_out = buf(ts, T * D);
    }
    ts->x_out = buf(ts, T * D);
    if (m->last) {
        ts->rms_f = buf(ts, T);
        ts->xn_f = buf(ts, T * D);
        ts->logits = buf(ts, T * V);
        ts->dlogits = buf(ts, T * V);
    }
    ts->dx = buf(ts, T * D);
    ts->g = buf(ts, T * D);
    ts->dxn = buf(ts, T * D);
    ts->dq = buf(ts, T * Q);
    ts->datt = buf(ts, T * Q);
    ts->dk = buf(ts, T * KV);
    ts->dv = buf(ts, T * KV);
    ts->h = buf(ts, T * F);
    ts->dh = buf(ts, T * F);
    ts->dgate = buf(ts, T * F);
    ts->dup = buf(ts, T * F);
    return ts;
}

void mf_train_state_free(mf_train_state *ts) {
    if (!ts) return;
    for (int i = 0; i < ts->n_layers; i++) acts_free(ts->be, &ts->acts[i]);
    acts_free(ts->be, &ts->work);
    float *p[] = {ts->x_out, ts->rms_f, ts->xn_f, ts->logits, ts->dlogits, ts->dx, ts->g, ts->dxn, ts->dq,
                  ts->datt, ts->dk, ts->dv, ts->h, ts->dh, ts->dgate, ts->dup, ts->scratch_out};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) release(ts->be, p[i]);
    free(ts->acts);
    free(ts->skip);
    free(ts->ids);
    free(ts);
}

/* ----------------------------------------------------------------- forward */

/* One layer on a->x_in (T tokens) into x_out; fills every field of a. h: [T][F] scratch. */
static void layer_forward(const mf_model *m, const mf_layer *L, mf_layer_acts *a, float *h, float *x_out, int T) {
    const mf_config *c = &m->cfg;
    int D = c->dim, F = c->ffn_dim, hd = c->head_dim, Q = c->n_heads * hd, KV = c->n_kv_heads * hd;
    size_t TD = (size_t)T * D;
    m->be->rmsnorm(a->xn1, a->rms1, a->x_in, L->attn_norm, T, D, c->norm_eps);
    m->be->linear(a->q, a->xn1, L->wq, L->bq, T, D, Q, 0);
    m->be->linear(a->k, a->xn1, L->wk, L->bk, T, D, KV, 0);
    m->be->linear(a->v, a->xn1, L->wv, L->bv, T, D, KV, 0);
    m->be->rope(a->q, T, c->n_heads, hd, 0, m->inv_freq);
    m->be->rope(a->k, T, c->n_kv_heads, hd, 0, m->inv_freq);
    m->be->attention(a->att, a->q, a->k, a->v, T, 0, c->n_heads, c->n_kv_heads, hd);
    m->be->copy(a->x_mid, a->x_in, TD * sizeof(float));
    m->be->linear(a->x_mid, a->att, L->wo, NULL, T, Q, D, 1); /* residual */
    m->be->rmsnorm(a->xn2, a->rms2, a->x_mid, L->ffn_norm, T, D, c->norm_eps);
    m->be->linear(a->gate, a->xn2, L->w_gate, NULL, T, D, F, 0);
    m->be->linear(a->up, a->xn2, L->w_up, NULL, T, D, F, 0);
    m->be->swiglu(h, a->gate, a->up, (size_t)T * F);
    m->be->copy(x_out, a->x_mid, TD * sizeof(float));
    m->be->linear(x_out, h, L->w_down, NULL, T, F, D, 1); /* residual */
}

/* Where the output of owned layer i goes: the next layer's input, or the stage output. */
static float *layer_out_buf(mf_train_state *ts, int i) {
    return i + 1 < ts->n_layers ? ts->acts[i + 1].x_in : ts->x_out;
}

int mf_train_forward(const mf_model *m, mf_train_state *ts, const int32_t *ids, const float *x_in, int T,
                     const unsigned char *skip, mf_err *err) {
    const mf_config *c = &m->cfg;
    int D = c->dim;
    size_t TD = (size_t)T * D;
    if (T < 1 || T > ts->max_T)
        return mf_err_set(err, "training forward: %d tokens, but the state holds 1 to %d", T, ts->max_T);
    float *x0 = ts->n_layers > 0 ? ts->acts[0].x_in : ts->x_out;
    if (m->first) {
        if (!ids) return mf_err_set(err, "training forward: the first stage needs token ids");
        for (int t = 0; t < T; t++)
            if (ids[t] < 0 || ids[t] >= c->vocab_size)
                return mf_err_set(err, "training forward: token id %d at position %d is outside the vocabulary [0, %d)",
                                  (int)ids[t], t, c->vocab_size);
        memcpy(ts->ids, ids, (size_t)T * sizeof *ids);
        m->be->embed(x0, m->tok_embd, ts->ids, T, D);
    } else {
        if (!x_in) return mf_err_set(err, "training forward: a stage after the first needs its input activations");
        m->be->copy(x0, x_in, TD * sizeof *x0);
    }
    ts->T = T;
    for (int l = 0; l < c->n_layers; l++) ts->skip[l] = skip ? skip[l] != 0 : 0;
    for (int i = 0; i < ts->n_layers; i++) {
        int l = m->layer_begin + i;
        mf_layer_acts *a = &ts->acts[i];
        float *out = layer_out_buf(ts, i);
        if (ts->skip[l]) {
            m->be->copy(out, a->x_in, TD * sizeof *out);
            continue;
        }
        if (ts->recompute) { /* compute into the work set, keep only the input */
            ts->work.x_in = a->x_in;
            layer_forward(m, &m->layers[i], &ts->work, ts->h, out, T);
            ts->work.x_in = NULL;
        } else {
            layer_forward(m, &m->layers[i], a, ts->h, out, T);
        }
    }
    return 0;
}

const float *mf_train_layer_output(const mf_model *m, const mf_train_state *ts, int l) {
    int i = l - m->layer_begin;
    if (i < 0 || i >= ts->n_layers) return NULL;
    return i + 1 < ts->n_layers ? ts->acts[i + 1].x_in : ts->x_out;
}

float *mf_train_head_forward(const mf_model *m, mf_train_state *ts) {
    const mf_config *c = &m->cfg;
    m->be->rmsnorm(ts->xn_f, ts->rms_f, ts->x_out, m->out_norm, ts->T, c->dim, c->norm_eps);
    m->be->linear(ts->logits, ts->xn_f, m->lm_head, NULL, ts->T, c->dim, c->vocab_size, 0);
    return ts->logits;
}

/* ---------------------------------------------------------------- backward */

/* The gradient buffer of weight w in ps (matched by data pointer); NULL if w is NULL or not trainable. */
static float *grad_of(const mf_params *ps, const float *w) {
    if (!w) return NULL;
    for (int i = 0; i < ps->n; i++)
        if (ps->p[i].data == w) return ps->p[i].grad;
    return NULL;
}

void mf_train_head_backward(const mf_model *m, mf_train_state *ts, mf_params *ps, const float *dlogits, float *dx) {
    const mf_config *c = &m->cfg;
    int T = ts->T, D = c->dim, V = c->vocab_size;
    m->be->linear_bwd(ts->dxn, grad_of(ps, m->lm_head), NULL, dlogits, ts->xn_f, m->lm_head, T, D, V, 0);
    m->be->rmsnorm_bwd(dx, grad_of(ps, m->out_norm), ts->dxn, ts->x_out, m->out_norm, ts->rms_f, T, D, 0);
}

/* g [T][D]: dL/d(layer output) in, dL/d(layer input) out. a: the layer's activations. */
static void layer_backward(const mf_model *m, const mf_layer *L, const mf_layer_acts *a, mf_train_state *ts,
                           const mf_params *ps, float *g, int T) {
    const mf_config *c = &m->cfg;
    int D = c->dim, F = c->ffn_dim, hd = c->head_dim, Q = c->n_heads * hd, KV = c->n_kv_heads * hd;
    size_t TF = (size_t)T * F;
    /* MLP: x_out = x_mid + h Wd^T, h = silu(gate) * up */
    m->be->swiglu(ts->h, a->gate, a->up, TF);
    m->be->linear_bwd(ts->dh, grad_of(ps, L->w_down), NULL, g, ts->h, L->w_down, T, F, D, 0);
    m->be->swiglu_bwd(ts->dgate, ts->dup, ts->dh, a->gate, a->up, TF);
    m->be->linear_bwd(ts->dxn, grad_of(ps, L->w_gate), NULL, ts->dgate, a->xn2, L->w_gate, T, D, F, 0);
    m->be->linear_bwd(ts->dxn, grad_of(ps, L->w_up), NULL, ts->dup, a->xn2, L->w_up, T, D, F, 1);
    m->be->rmsnorm_bwd(g, grad_of(ps, L->ffn_norm), ts->dxn, a->x_mid, L->ffn_norm, a->rms2, T, D, 1);
    /* attention: x_mid = x_in + att Wo^T; g is now dL/dx_mid */
    m->be->linear_bwd(ts->datt, grad_of(ps, L->wo), NULL, g, a->att, L->wo, T, Q, D, 0);
    m->be->attention_bwd(ts->dq, ts->dk, ts->dv, ts->datt, a->q, a->k, a->v, T, c->n_heads, c->n_kv_heads, hd);
    m->be->rope_bwd(ts->dq, T, c->n_heads, hd, 0, m->inv_freq);
    m->be->rope_bwd(ts->dk, T, c->n_kv_heads, hd, 0, m->inv_freq);
    m->be->linear_bwd(ts->dxn, grad_of(ps, L->wq), grad_of(ps, L->bq), ts->dq, a->xn1, L->wq, T, D, Q, 0);
    m->be->linear_bwd(ts->dxn, grad_of(ps, L->wk), grad_of(ps, L->bk), ts->dk, a->xn1, L->wk, T, D, KV, 1);
    m->be->linear_bwd(ts->dxn, grad_of(ps, L->wv), grad_of(ps, L->bv), ts->dv, a->xn1, L->wv, T, D, KV, 1);
    m->be->rmsnorm_bwd(g, grad_of(ps, L->attn_norm), ts->dxn, a->x_in, L->attn_norm, a->rms1, T, D, 1);
}

void mf_train_backward(const mf_model *m, mf_train_state *ts, mf_params *ps, const float *dx_out, float *dx_in,
                       const float *const *dlayer_out) {
    const mf_config *c = &m->cfg;
    int T = ts->T, D = c->dim;
    size_t TD = (size_t)T * D;
    float *g = ts->g;
    if (g != dx_out) m->be->copy(g, dx_out, TD * sizeof *g);
    for (int i = ts->n_layers - 1; i >= 0; i--) {
        if (dlayer_out && dlayer_out[i]) m->be->add(g, dlayer_out[i], TD);
        if (ts->skip[m->layer_begin + i]) {
            if (ts->on_layer_grads) ts->on_layer_grads(ts->hook_ctx, m->layer_begin + i);
            continue;
        }
        const mf_layer_acts *a = &ts->acts[i];
        if (ts->recompute) { /* the same forward again: bit-identical activations */
            ts->work.x_in = ts->acts[i].x_in;
            layer_forward(m, &m->layers[i], &ts->work, ts->h, ts->scratch_out, T);
            a = &ts->work;
        }
        layer_backward(m, &m->layers[i], a, ts, ps, g, T);
        ts->work.x_in = NULL;
        if (ts->on_layer_grads) ts->on_layer_grads(ts->hook_ctx, m->layer_begin + i);
    }
    if (m->first) {
        float *dE = grad_of(ps, m->tok_embd);
        if (dE) m->be->embed_bwd(dE, g, ts->ids, T, D, c->vocab_size);
    }
    if (dx_in && dx_in != g) m->be->copy(dx_in, g, TD * sizeof *g);
}
