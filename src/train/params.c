#include "train/params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copy a weight into memory the model owns (it may point into a read-only map). */
static float *own(mf_model *m, float *w, size_t n) {
    for (int i = 0; i < m->n_owned; i++)
        if (m->owned[i] == w) return w;
    float *c = mf_malloc(n * sizeof *c);
    memcpy(c, w, n * sizeof *c);
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

static void add(mf_params *ps, mf_model *m, float **slot, const char *name, int64_t d0, int64_t d1) {
    if (!*slot) return;
    size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    *slot = own(m, *slot, n);
    mf_params_push(ps, name, d0, d1, *slot, mf_calloc(n, sizeof(float)));
}

void mf_params_from_model(mf_params *ps, mf_model *m) {
    memset(ps, 0, sizeof *ps);
    const mf_config *c = &m->cfg;
    int64_t D = c->dim;
    int tied_head_copy = m->last && c->tied_embeddings && !m->first;
    if (m->tok_embd && (m->first || tied_head_copy)) {
        float *before = m->tok_embd;
        add(ps, m, &m->tok_embd, "model.embed_tokens.weight", c->vocab_size, D);
        if (m->lm_head == before) m->lm_head = m->tok_embd;
    }
    mf_layer_tensor lt[MF_LAYER_TENSORS];
    mf_layer_tensors(c, lt);
    char n[160];
    for (int l = m->layer_begin; l < m->layer_end; l++)
        for (int i = 0; i < MF_LAYER_TENSORS; i++) { /* add() skips absent tensors (biases) */
            snprintf(n, sizeof n, "model.layers.%d.%s", l, lt[i].suffix);
            add(ps, m, mf_layer_slot(&m->layers[l - m->layer_begin], &lt[i]), n, lt[i].d0, lt[i].d1);
        }
    if (m->last) {
        add(ps, m, &m->out_norm, "model.norm.weight", D, 0);
        if (!c->tied_embeddings) add(ps, m, &m->lm_head, "lm_head.weight", c->vocab_size, D);
    }
}

void mf_params_free(mf_params *ps) {
    for (int i = 0; i < ps->n; i++) free(ps->p[i].grad);
    free(ps->p);
    memset(ps, 0, sizeof *ps);
}

void mf_params_zero_grad(mf_params *ps) {
    for (int i = 0; i < ps->n; i++) memset(ps->p[i].grad, 0, ps->p[i].numel * sizeof(float));
}

double mf_params_grad_sq(const mf_params *ps) {
    double s = 0;
    for (int i = 0; i < ps->n; i++)
        for (size_t j = 0; j < ps->p[i].numel; j++) s += (double)ps->p[i].grad[j] * ps->p[i].grad[j];
    return s;
}

mf_param *mf_params_find(mf_params *ps, const char *name) {
    for (int i = 0; i < ps->n; i++)
        if (strcmp(ps->p[i].name, name) == 0) return &ps->p[i];
    return NULL;
}
