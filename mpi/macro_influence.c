#include "macro_influence.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress/importance.h"
#include "util/log.h"

int mf_macro_influence(mf_stage *st, const int32_t *ids, int nwin, int T, const unsigned char *skip, double *mi,
                       const volatile int *stop) {
    const mf_config *c = &st->model->cfg;
    int L = c->n_layers, D = c->dim;
    mf_importance imp;
    mf_importance_init(&imp, c, st->pipe.l0, st->pipe.l1, T, MF_AGG_MEAN, MF_AGG_L2, 0, 0, 1);
    double *cs = mf_calloc((size_t)L, sizeof *cs);
    float *ref = st->pipe.last ? mf_malloc((size_t)T * D * sizeof *ref) : NULL;
    int32_t *in = mf_malloc((size_t)T * sizeof *in);
    long tokens = 0;
    int stopped = 0;
    mf_progress prog;
    mf_progress_start(&prog, "macro influence", nwin);
    for (int w = 0; w < nwin; w++) {
        in[0] = c->bos_id;
        memcpy(in + 1, ids + (size_t)w * T, (size_t)(T - 1) * sizeof *in);
        st->st->hooks = &imp.hooks;
        if (mf_stage_forward_ex(st, in, T, 0, 2, skip, 0)) memcpy(ref, st->st->x, (size_t)T * D * sizeof *ref);
        st->st->hooks = NULL;
        for (int i = 0; i < L; i++) {
            if (skip[i]) continue;
            if (mf_stage_forward_without(st, imp.cache, skip, i, T, 0, 3)) cs[i] += mf_mean_cos(ref, st->st->x, T, D) * T;
        }
        tokens += T;
        if (st->pipe.last) mf_progress_update(&prog, w + 1, "windows");
        if (stop) {
            mf_pipe_flush(&st->pipe);
            int mine = *stop != 0;
            MPI_Allreduce(&mine, &stopped, 1, MPI_INT, MPI_MAX, st->pipe.comm);
            if (stopped) break;
        }
    }
    mf_pipe_flush(&st->pipe);
    if (!stopped) {
        for (int i = 0; i < L; i++) mi[i] = skip[i] ? NAN : 1.0 - cs[i] / (double)tokens;
        MPI_Bcast(mi, L, MPI_DOUBLE, st->pipe.size - 1, st->pipe.comm);
    }
    free(cs); free(ref); free(in);
    mf_importance_free(&imp);
    return stopped;
}

int mf_mi_argmin(const double *mi, const unsigned char *skip, int n) {
    int pick = -1;
    for (int i = 0; i < n; i++)
        if (!skip[i] && (pick < 0 || mi[i] < mi[pick])) pick = i;
    return pick;
}
