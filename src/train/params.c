#include "train/params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mmapfile.h"
#include "util/vec.h"

/* Copy a weight into memory the model owns (it may point into a read-only map). A host
 * backend's copy of a mapped tensor drops the tensor's file pages: they would stay resident
 * beside the copy (a float32 student file read in place: its whole size on every rank). */
static float *own(mf_model *m, float *w, size_t n) {
    for (int i = 0; i < m->n_owned; i++)
        if (m->owned[i] == w) return w;
    float *c;
    if (m->be->is_host) {
        c = mf_malloc(n * sizeof *c);
        memcpy(c, w, n * sizeof *c);
        if (m->mapped) mf_mmap_drop(w, n * sizeof *w);
    } else { /* a device backend uploads every tensor it loads; this is for one made since */
        c = m->be->alloc(n * sizeof *c);
        m->be->copy(c, w, n * sizeof *c);
    }
    m->owned = mf_realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *m->owned);
    m->owned[m->n_owned++] = c;
    return c;
}

void mf_model_make_layers_writable(mf_model *m) {
    mf_layer_tensor lt[MF_LAYER_TENSORS];
    mf_layer_tensors(&m->cfg, lt);
    for (int l = m->layer_begin; l < m->layer_end; l++)
        for (int i = 0; i < MF_LAYER_TENSORS; i++) {
            float **slot = mf_layer_slot(&m->layers[l - m->layer_begin], &lt[i]);
            if (*slot) *slot = own(m, *slot, (size_t)lt[i].d0 * (size_t)(lt[i].d1 ? lt[i].d1 : 1));
        }
}

mf_param *mf_params_push(mf_params *ps, const char *name, int64_t d0, int64_t d1, float *data, float *grad) {
    ps->p = mf_realloc(ps->p, (size_t)(ps->n + 1) * sizeof *ps->p);
    mf_param *p = &ps->p[ps->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%.127s", name);
    p->ndim = d1 ? 2 : 1;
    p->shape[0] = d0;
    p->shape[1] = d1;
    p->numel = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    p->data = data;
    p->grad = grad;
    ps->total += p->numel;
    return p;
}

/* Lists the tensor in *slot (if present); pass 0 only counts its elements into
 * *count, pass 1 makes it writable and gives it the next piece of grad_flat. */
static void add(mf_params *ps, mf_model *m, float **slot, const char *name, int64_t d0, int64_t d1, int pass,
                size_t *count) {
    if (!*slot) return;
    size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    if (pass == 0) { *count += n; return; }
    *slot = own(m, *slot, n);
    mf_params_push(ps, name, d0, d1, *slot, ps->grad_flat + *count);
    *count += n;
}

/* The model's trainable tensors in list order: embedding, layers, norm, head. */
static void walk(mf_params *ps, mf_model *m, int pass, size_t *count) {
    const mf_config *c = &m->cfg;
    int64_t D = c->dim;
    int tied_head_copy = m->last && c->tied_embeddings && !m->first;
    if (m->tok_embd && (m->first || tied_head_copy)) {
        float *before = m->tok_embd;
        add(ps, m, &m->tok_embd, "model.embed_tokens.weight", c->vocab_size, D, pass, count);
        if (m->lm_head == before) m->lm_head = m->tok_embd;
    }
    mf_layer_tensor lt[MF_LAYER_TENSORS];
    mf_layer_tensors(c, lt);
    char n[160];
    for (int l = m->layer_begin; l < m->layer_end; l++) {
        if (pass == 1) ps->layer_off[l - m->layer_begin] = *count;
        for (int i = 0; i < MF_LAYER_TENSORS; i++) { /* add() skips absent tensors (biases) */
            snprintf(n, sizeof n, "model.layers.%d.%s", l, lt[i].suffix);
            add(ps, m, mf_layer_slot(&m->layers[l - m->layer_begin], &lt[i]), n, lt[i].d0, lt[i].d1, pass, count);
        }
        if (pass == 1) ps->layer_off[l - m->layer_begin + 1] = *count;
    }
    if (m->last) {
        add(ps, m, &m->out_norm, "model.norm.weight", D, 0, pass, count);
        if (!c->tied_embeddings) add(ps, m, &m->lm_head, "lm_head.weight", c->vocab_size, D, pass, count);
    }
}

void mf_params_from_model(mf_params *ps, mf_model *m) {
    mf_err err;
    if (mf_model_require_f32(m, "training parameters", &err) != 0) mf_fatal_err(&err);
    memset(ps, 0, sizeof *ps);
    size_t total = 0;
    walk(ps, m, 0, &total);
    ps->be = m->be;
    ps->grad_n = total;
    ps->grad_flat = m->be->alloc((total ? total : 1) * sizeof(float));
    m->be->zero(ps->grad_flat, (total ? total : 1) * sizeof(float));
    ps->layer_begin = m->layer_begin;
    ps->n_layers = m->layer_end - m->layer_begin;
    ps->layer_off = mf_calloc((size_t)ps->n_layers + 1, sizeof *ps->layer_off);
    size_t pos = 0;
    walk(ps, m, 1, &pos);
}

void mf_params_free(mf_params *ps) {
    if (ps->grad_flat) ps->be->free(ps->grad_flat);
    else
        for (int i = 0; i < ps->n; i++) free(ps->p[i].grad);
    free(ps->layer_off);
    free(ps->p);
    memset(ps, 0, sizeof *ps);
}

void mf_params_zero_grad(mf_params *ps) {
    if (ps->grad_flat) { ps->be->zero(ps->grad_flat, ps->grad_n * sizeof(float)); return; }
    for (int i = 0; i < ps->n; i++) memset(ps->p[i].grad, 0, ps->p[i].numel * sizeof(float));
}

int mf_params_layer_range(const mf_params *ps, int l, size_t *off, size_t *n) {
    int i = l - ps->layer_begin;
    if (!ps->layer_off || i < 0 || i >= ps->n_layers) return 0;
    *off = ps->layer_off[i];
    *n = ps->layer_off[i + 1] - ps->layer_off[i];
    return 1;
}

double mf_params_sumsq(const mf_params *ps, const float *x, size_t n) {
    if (ps->be) return ps->be->sumsq(x, n);
    double s = 0;
    for (size_t j = 0; j < n; j++) s += (double)x[j] * x[j];
    return s;
}

double mf_params_grad_sq(const mf_params *ps) {
    double s = 0;
    for (int i = 0; i < ps->n; i++) s += mf_params_sumsq(ps, ps->p[i].grad, ps->p[i].numel);
    return s;
}

/* Host memory: scan it. Backend memory: its sum of squares is finite exactly
 * when every element is (|x| < 2^128, so x^2 < 2^256 fits a double); only a
 * tensor that fails is downloaded, to name the element. */
int mf_params_check_finite(const mf_params *ps, const char *where, mf_err *err) {
    for (int i = 0; i < ps->n; i++) {
        const mf_param *p = &ps->p[i];
        if (!p->data) continue;
        const float *x = p->data;
        float *h = NULL;
        if (ps->be && !ps->be->is_host) {
            if (isfinite(ps->be->sumsq(p->data, p->numel))) continue;
            h = mf_malloc(p->numel * sizeof *h);
            ps->be->download(h, p->data, p->numel * sizeof *h);
            x = h;
        }
        long k = mf_first_nonfinite(x, p->numel);
        double v = k >= 0 ? (double)x[k] : 0;
        free(h);
        if (k >= 0) return mf_err_set(err, "%s: tensor %s has a non-finite value (%g at element %ld)", where, p->name, v, k);
    }
    return 0;
}

mf_param *mf_params_find(mf_params *ps, const char *name) {
    for (int i = 0; i < ps->n; i++)
        if (strcmp(ps->p[i].name, name) == 0) return &ps->p[i];
    return NULL;
}
