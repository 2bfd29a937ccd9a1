/* macro_influence.c - FuseGPT Macro Influence (see macro_influence.h). */
#include "compress/macro_influence.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "collective.h"
#include "compress/importance.h"
#include "tags.h"
#include "util/log.h"

void mf_mi_acc_init(mf_mi_acc *a, int L) {
    a->L = L;
    a->cos_sum = mf_calloc((size_t)L, sizeof *a->cos_sum);
    a->tokens = 0;
}

void mf_mi_acc_reset(mf_mi_acc *a) {
    memset(a->cos_sum, 0, (size_t)a->L * sizeof *a->cos_sum);
    a->tokens = 0;
}

void mf_mi_acc_free(mf_mi_acc *a) {
    free(a->cos_sum);
    a->cos_sum = NULL;
}

void mf_mi_window(mf_stage *st, float *const *cache, const unsigned char *skip, int T, int head, const float *ref,
                  mf_mi_acc *acc, mf_mi_variant_fn on_variant, void *ctx) {
    int L = st->model->cfg.n_layers, D = st->model->cfg.dim;
    for (int i = 0; i < L; i++) {
        if (skip[i]) continue;
        if (!mf_stage_forward_without(st, cache, skip, i, T, head, MF_TAG_VARIANT)) continue;
        if (acc) { /* the variants run without hooks: host_act is free for the download */
            const float *h = st->model->be->is_host ? st->st->x : st->st->host_act;
            if (h != st->st->x) st->model->be->download(st->st->host_act, st->st->x, (size_t)T * D * sizeof(float));
            acc->cos_sum[i] += mf_mean_cos(ref, h, T, D) * T;
        }
        if (on_variant) on_variant(ctx, i, st);
    }
    if (acc) acc->tokens += T;
}

void mf_mi_finish(const mf_mi_acc *a, const unsigned char *skip, double *mi) {
    for (int i = 0; i < a->L; i++) mi[i] = skip[i] ? NAN : 1.0 - a->cos_sum[i] / (double)a->tokens;
}

int mf_macro_influence(mf_stage *st, const int32_t *ids, int nwin, int T, const unsigned char *skip, double *mi,
                       const volatile sig_atomic_t *stop, mf_watchdog *wd) {
    const mf_config *c = &st->model->cfg;
    int L = c->n_layers, D = c->dim;
    mf_coll coll;
    mf_coll_init(&coll, st->pipe.comm, st->model->be);
    mf_importance imp;
    mf_importance_init(&imp, c, st->pipe.l0, st->pipe.l1, T, MF_AGG_MEAN, MF_AGG_L2, 0, 0, 1);
    mf_mi_acc acc;
    mf_mi_acc_init(&acc, L);
    float *ref = st->pipe.last ? mf_malloc((size_t)T * D * sizeof *ref) : NULL;
    int32_t *in = mf_malloc((size_t)T * sizeof *in);
    int stopped = 0;
    mf_progress prog;
    mf_progress_start(&prog, "macro influence", nwin);
    for (int w = 0; w < nwin; w++) {
        mf_watchdog_kick(wd, "macro influence");
        in[0] = c->bos_id;
        memcpy(in + 1, ids + (size_t)w * T, (size_t)(T - 1) * sizeof *in);
        st->st->hooks = &imp.hooks;
        if (mf_stage_forward_ex(st, in, T, 0, MF_TAG_REF, skip, 0)) st->model->be->download(ref, st->st->x, (size_t)T * D * sizeof *ref);
        st->st->hooks = NULL;
        mf_mi_window(st, imp.cache, skip, T, 0, ref, &acc, NULL, NULL);
        if (st->pipe.last) mf_progress_update(&prog, w + 1, "windows");
        if (stop) {
            mf_pipe_flush(&st->pipe);
            if ((stopped = mf_coll_any(&coll, *stop != 0))) break;
        }
    }
    mf_pipe_flush(&st->pipe);
    if (!stopped) {
        mf_mi_finish(&acc, skip, mi);
        mf_coll_bcast(&coll, mi, (size_t)L * sizeof *mi, st->pipe.size - 1);
    }
    mf_mi_acc_free(&acc);
    free(ref); free(in);
    mf_importance_free(&imp);
    mf_coll_free(&coll);
    return stopped;
}

int mf_mi_argmin(const double *mi, const unsigned char *skip, int n) {
    int pick = -1;
    for (int i = 0; i < n; i++)
        if (!skip[i] && (pick < 0 || mi[i] < mi[pick])) pick = i;
    return pick;
}
