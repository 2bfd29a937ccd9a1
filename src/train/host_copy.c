/* host_copy.c - host copies of parameters and moments (see host_copy.h). */
#include "train/host_copy.h"

#include <stdlib.h>
#include <string.h>

static int on_device(const mf_params *ps) { return ps->be && !ps->be->is_host; }

/* A host buffer with n floats of backend memory src (NULL stays NULL). */
static float *fetch(const mf_backend *be, const float *src, size_t n) {
    if (!src) return NULL;
    float *h = mf_malloc((n ? n : 1) * sizeof *h);
    if (n) be->download(h, src, n * sizeof *h);
    return h;
}

void mf_host_copy_get(const mf_params *ps, const mf_adamw *opt, mf_params *hps, mf_adamw *hopt) {
    *hps = *ps;
    if (hopt) {
        if (opt) *hopt = *opt;
        else memset(hopt, 0, sizeof *hopt);
    }
    if (!on_device(ps)) return;
    const mf_backend *be = ps->be;
    hps->be = NULL;
    hps->grad_flat = NULL;
    hps->layer_off = NULL;
    hps->p = mf_malloc((size_t)(ps->n > 0 ? ps->n : 1) * sizeof *hps->p);
    for (int i = 0; i < ps->n; i++) {
        hps->p[i] = ps->p[i];
        hps->p[i].data = fetch(be, ps->p[i].data, ps->p[i].numel);
        hps->p[i].grad = NULL;
    }
    if (!opt || !hopt) return;
    int n = opt->n > 0 ? opt->n : 1;
    hopt->be = NULL;
    hopt->m = mf_calloc((size_t)n, sizeof *hopt->m);
    hopt->v = mf_calloc((size_t)n, sizeof *hopt->v);
    hopt->numel = mf_malloc((size_t)n * sizeof *hopt->numel);
    for (int i = 0; i < opt->n; i++) {
        hopt->numel[i] = opt->numel[i];
        hopt->m[i] = fetch(be, opt->m[i], opt->numel[i]);
        hopt->v[i] = fetch(be, opt->v[i], opt->numel[i]);
    }
}

void mf_host_copy_put(const mf_params *hps, const mf_adamw *hopt, mf_params *ps, mf_adamw *opt) {
    if (opt && hopt) opt->step = hopt->step; /* a value of the struct: aliased copies need it too */
    if (!on_device(ps)) return;
    const mf_backend *be = ps->be;
    for (int i = 0; i < ps->n && i < hps->n; i++)
        if (ps->p[i].data && hps->p[i].data) be->upload(ps->p[i].data, hps->p[i].data, ps->p[i].numel * sizeof(float));
    if (!opt || !hopt) return;
    for (int i = 0; i < opt->n && i < hopt->n; i++) {
        if (opt->m[i] && hopt->m[i]) be->upload(opt->m[i], hopt->m[i], opt->numel[i] * sizeof(float));
        if (opt->v[i] && hopt->v[i]) be->upload(opt->v[i], hopt->v[i], opt->numel[i] * sizeof(float));
    }
}

void mf_host_copy_free(const mf_params *ps, mf_params *hps, mf_adamw *hopt) {
    if (!on_device(ps)) return;
    for (int i = 0; i < hps->n; i++) free(hps->p[i].data);
    free(hps->p);
    memset(hps, 0, sizeof *hps);
    if (!hopt || !hopt->m) return;
    for (int i = 0; i < hopt->n; i++) { free(hopt->m[i]); free(hopt->v[i]); }
    free(hopt->m); free(hopt->v); free(hopt->numel);
    memset(hopt, 0, sizeof *hopt);
}
