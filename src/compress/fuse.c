/* fuse.c - FuseGPT learnable layer fusion of one window (see fuse.h). */
#include "compress/fuse.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/optim.h"

/* Slots of mf_layer_tensors(): the seven linears and the two norm scales. */
static const int LIN_SLOT[MF_FUSE_LINEARS] = {1, 2, 3, 7, 9, 10, 11};
static const int NORM_SLOT[2] = {0, 8};

int mf_fuse_window_span(int n, int p, int size, int *count) {
    int c = size < n ? size : n, before = size / 2;
    int lo = p - before;
    if (lo + c > n) lo = n - c;
    if (lo < 0) lo = 0;
    *count = c;
    return lo;
}

/* n floats of the backend's memory, zeroed. */
static float *zeroed(const mf_backend *be, size_t n) {
    float *p = be->alloc((n ? n : 1) * sizeof *p);
    be->zero(p, (n ? n : 1) * sizeof *p);
    return p;
}

/* Append a trainable tensor to a list: data allocated (zeroed) here, the
 * gradient the next piece of the window's flat buffer; freed by mf_fuse_window_free. */
static mf_param *push(mf_fuse_window *w, mf_params *ps, const char *name, int64_t d0, int64_t d1) {
    size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    if (w->grad_pos + n > w->grad_n) mf_fatal("fuse: adapter gradients overflow their buffer (%s)", name);
    float *g = w->grad_flat + w->grad_pos;
    w->grad_pos += n;
    return mf_params_push(ps, name, d0, d1, zeroed(w->be, n), g);
}

/* Floats of adapter and norm gradients of one receiving block. */
static size_t block_grad_floats(const mf_layer_tensor *lt, int r) {
    size_t n = 0;
    for (int j = 0; j < MF_FUSE_LINEARS; j++) n += 2 * (size_t)r * (size_t)(lt[LIN_SLOT[j]].d0 + lt[LIN_SLOT[j]].d1);
    for (int j = 0; j < 2; j++) n += (size_t)lt[NORM_SLOT[j]].d0;
    return n;
}

/* U(-1/sqrt(in), 1/sqrt(in)) from a stream of its own, drawn on the host, into x (backend memory). */
static void kaiming(const mf_backend *be, float *x, size_t n, int in, uint64_t seed) {
    mf_rng r;
    mf_rng_seed(&r, seed);
    float b = 1.0f / sqrtf((float)in), *h = mf_malloc((n ? n : 1) * sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = (float)((2.0 * mf_rng_uniform(&r) - 1.0) * b);
    be->upload(x, h, n * sizeof *h);
    free(h);
}

static void window_model(mf_model *m, const mf_backend *be, const mf_config *c, mf_layer *layers, int n) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->cfg.n_layers = n;
    m->be = be;
    m->layer_begin = 0;
    m->layer_end = n;
    m->layers = layers;
    m->inv_freq = mf_malloc((size_t)(c->head_dim / 2 > 0 ? c->head_dim / 2 : 1) * sizeof *m->inv_freq);
    mf_config_rope_inv_freq(c, m->inv_freq);
}

/* Trainable tensors and W_eff of receiving block b (student index k, original index L). */
static void add_block(mf_fuse_window *w, int k, int b, int L, uint64_t seed, const mf_layer_tensor *lt) {
    mf_layer *src = &w->blocks[b], *rm = &w->blocks[w->drop], *dst = &w->student_layers[k];
    *dst = *src; /* biases and anything else as they are */
    char name[160];
    for (int j = 0; j < MF_FUSE_LINEARS; j++) {
        const mf_layer_tensor *t = &lt[LIN_SLOT[j]];
        mf_fuse_lin *f = &w->lin[k * MF_FUSE_LINEARS + j];
        char mod[96];
        snprintf(mod, sizeof mod, "%.*s", (int)(strlen(t->suffix) - strlen(".weight")), t->suffix);
        f->out = (int)t->d0;
        f->in = (int)t->d1;
        f->W = *mf_layer_slot(src, t);
        f->P = *mf_layer_slot(rm, t);
        int r = w->rank;
        /* push() may move the list: keep the data and gradient pointers, not the entries */
        mf_param *e;
        snprintf(name, sizeof name, "fuse.layers.%d.%s.lora_A", L, mod);
        e = push(w, &w->base, name, r, f->in), f->A = e->data, f->dA = e->grad;
        snprintf(name, sizeof name, "fuse.layers.%d.%s.lora_B", L, mod);
        e = push(w, &w->base, name, f->out, r), f->B = e->data, f->dB = e->grad;
        snprintf(name, sizeof name, "fuse.layers.%d.%s.gate_U", L, mod);
        e = push(w, &w->gates, name, f->out, r), f->U = e->data, f->dU = e->grad;
        snprintf(name, sizeof name, "fuse.layers.%d.%s.gate_V", L, mod);
        e = push(w, &w->gates, name, r, f->in), f->V = e->data, f->dV = e->grad;
        uint64_t s = seed * 0x9E3779B97F4A7C15ull + (uint64_t)L * 64 + (uint64_t)j * 2;
        kaiming(w->be, f->A, (size_t)r * f->in, f->in, s);
        kaiming(w->be, f->V, (size_t)r * f->in, f->in, s + 1);
        f->W_eff = w->be->alloc((size_t)f->out * f->in * sizeof(float));
        f->G = zeroed(w->be, (size_t)f->out * f->in);
        *mf_layer_slot(dst, t) = f->W_eff;
        mf_params_push(&w->wgrad, t->suffix, f->out, f->in, f->W_eff, f->G);
    }
    for (int j = 0; j < 2; j++) { /* norm scales: trainable, and in wgrad with the same data and gradient */
        const mf_layer_tensor *t = &lt[NORM_SLOT[j]];
        snprintf(name, sizeof name, "fuse.layers.%d.%s", L, t->suffix);
        mf_param *g = push(w, &w->base, name, t->d0, 0);
        w->be->copy(g->data, *mf_layer_slot(src, t), g->numel * sizeof(float));
        *mf_layer_slot(dst, t) = g->data;
        mf_params_push(&w->wgrad, t->suffix, t->d0, 0, g->data, g->grad);
    }
}

int mf_fuse_window_init(mf_fuse_window *w, const mf_backend *be, const mf_config *c, mf_layer *blocks, const int *orig,
                        int n, int drop, int rank, uint64_t seed, int max_T, int n_slots, int recompute, mf_err *err) {
    memset(w, 0, sizeof *w);
    w->be = be;
    if (n < 2 || drop < 0 || drop >= n)
        return mf_err_set(err, "fuse: a window needs at least 2 blocks and the removed block inside it (n %d, drop %d)", n, drop);
    if (rank < 1) return mf_err_set(err, "fuse: --rank %d must be at least 1", rank);
    w->cfg = *c;
    w->n = n;
    w->drop = drop;
    w->rank = rank;
    w->blocks = blocks;
    w->max_T = max_T;
    w->n_slots = n_slots;
    w->student_layers = mf_calloc((size_t)(n - 1), sizeof *w->student_layers);
    w->n_lin = (n - 1) * MF_FUSE_LINEARS;
    w->lin = mf_calloc((size_t)w->n_lin, sizeof *w->lin);
    mf_layer_tensor lt[MF_LAYER_TENSORS];
    mf_layer_tensors(c, lt);
    size_t big = 0;
    w->grad_n = (size_t)(n - 1) * block_grad_floats(lt, rank);
    w->grad_flat = zeroed(be, w->grad_n);
    for (int k = 0, b = 0; b < n; b++) {
        if (b == drop) continue;
        add_block(w, k++, b, orig[b], seed, lt);
    }
    w->gates.be = w->base.be = be; /* data, gradients (views of grad_flat) and AdamW moments: backend memory */
    for (int i = 0; i < w->n_lin; i++)
        if ((size_t)w->lin[i].out * w->lin[i].in > big) big = (size_t)w->lin[i].out * w->lin[i].in;
    w->scratch = be->alloc((big ? big : 1) * sizeof(float));
    if (!be->is_host) w->x_dev = be->alloc((size_t)max_T * c->dim * sizeof(float));
    window_model(&w->teacher, be, c, blocks, n);
    window_model(&w->student, be, c, w->student_layers, n - 1);
    mf_fuse_materialize(w);
    w->tst = mf_state_new(&w->teacher, max_T, max_T);
    w->ts = mf_calloc((size_t)n_slots, sizeof *w->ts);
    for (int s = 0; s < n_slots; s++)
        if (!(w->ts[s] = mf_train_state_new(&w->student, max_T, recompute, err))) return -1;
    return 0;
}

void mf_fuse_window_free(mf_fuse_window *w) {
    for (int s = 0; w->ts && s < w->n_slots; s++) mf_train_state_free(w->ts[s]);
    free(w->ts);
    if (w->tst) mf_state_free(&w->teacher, w->tst);
    const mf_backend *be = w->be;
    for (int i = 0; w->lin && i < w->n_lin; i++) {
        if (w->lin[i].W_eff) be->free(w->lin[i].W_eff);
        if (w->lin[i].G) be->free(w->lin[i].G);
    }
    for (int i = 0; i < w->gates.n; i++) be->free(w->gates.p[i].data);
    for (int i = 0; i < w->base.n; i++) be->free(w->base.p[i].data);
    free(w->gates.p);
    free(w->base.p);
    if (w->grad_flat) be->free(w->grad_flat);
    free(w->wgrad.p);
    free(w->lin);
    free(w->student_layers);
    if (w->scratch) be->free(w->scratch);
    if (w->x_dev) be->free(w->x_dev);
    free(w->teacher.inv_freq);
    free(w->student.inv_freq);
    memset(w, 0, sizeof *w);
}

void mf_fuse_teacher(mf_fuse_window *w, const float *x_in, int T, float *out) {
    size_t n = (size_t)T * w->cfg.dim;
    w->be->upload(w->tst->x, x_in, n * sizeof(float));
    mf_forward_layers(&w->teacher, w->tst, T, 0);
    w->be->download(out, w->tst->x, n * sizeof(float));
}

void mf_fuse_zero_grad(mf_fuse_window *w) {
    w->be->zero(w->grad_flat, w->grad_n * sizeof(float));
    for (int i = 0; i < w->n_lin; i++) w->be->zero(w->lin[i].G, (size_t)w->lin[i].out * w->lin[i].in * sizeof(float));
}

void mf_fuse_materialize(mf_fuse_window *w) {
    const mf_backend *be = w->be;
    for (int i = 0; i < w->n_lin; i++) {
        mf_fuse_lin *f = &w->lin[i];
        be->fuse_weight(f->W_eff, f->W, f->P, f->A, f->B, f->U, f->V, f->out, f->in, w->rank, w->scratch);
    }
}

const float *mf_fuse_forward(mf_fuse_window *w, int slot, const float *x_in, int T) {
    mf_err err;
    if (w->x_dev) { /* x_in is host memory: mf_train_forward copies its input from backend memory */
        w->be->upload(w->x_dev, x_in, (size_t)T * w->cfg.dim * sizeof(float));
        x_in = w->x_dev;
    }
    if (mf_train_forward(&w->student, w->ts[slot], NULL, x_in, T, NULL, &err) != 0) mf_fatal_err(&err);
    return w->ts[slot]->x_out;
}

void mf_fuse_backward(mf_fuse_window *w, int slot, const float *dout) {
    mf_train_backward(&w->student, w->ts[slot], &w->wgrad, dout, NULL, NULL);
}

void mf_fuse_param_grads(mf_fuse_window *w) {
    const mf_backend *be = w->be;
    for (int i = 0; i < w->n_lin; i++) {
        mf_fuse_lin *f = &w->lin[i];
        be->fuse_weight_bwd(f->dA, f->dB, f->dU, f->dV, f->G, f->P, f->A, f->B, f->U, f->V, f->out, f->in, w->rank,
                            w->scratch);
    }
}

void mf_fuse_fold(mf_fuse_window *w) {
    mf_fuse_materialize(w);
    mf_layer_tensor lt[MF_LAYER_TENSORS];
    mf_layer_tensors(&w->cfg, lt);
    for (int k = 0, b = 0; b < w->n; b++) {
        if (b == w->drop) continue;
        mf_layer *dst = &w->blocks[b], *s = &w->student_layers[k];
        for (int j = 0; j < MF_FUSE_LINEARS; j++) {
            const mf_layer_tensor *t = &lt[LIN_SLOT[j]];
            w->be->copy(*mf_layer_slot(dst, t), *mf_layer_slot(s, t), (size_t)t->d0 * t->d1 * sizeof(float));
        }
        for (int j = 0; j < 2; j++) {
            const mf_layer_tensor *t = &lt[NORM_SLOT[j]];
            w->be->copy(*mf_layer_slot(dst, t), *mf_layer_slot(s, t), (size_t)t->d0 * sizeof(float));
        }
        k++;
    }
}

size_t mf_fuse_trainable(const mf_fuse_window *w) { return w->gates.total + w->base.total; }
