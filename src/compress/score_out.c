#include "compress/score_out.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_blas.h"
#include "io/rankings.h"
#include "util/log.h"
#include "util/sha256.h"

static int cmp_idx(const void *a, const void *b, void *ctx) {
    const double *v = ctx;
    int i = *(const int *)a, j = *(const int *)b;
    double x = v[i], y = v[j];
    int xn = isnan(x), yn = isnan(y);
    if (xn != yn) return xn - yn;
    if (!xn && x != y) return x < y ? -1 : 1;
    return i - j;
}

void mf_argsort_asc(const double *v, int n, int *idx) {
    for (int i = 0; i < n; i++) idx[i] = i;
    qsort_r(idx, (size_t)n, sizeof *idx, cmp_idx, (void *)v);
}

/* Gather per-layer arrays of `per` doubles from the owners to rank 0, in layer order. */
static void gather_layers(const mf_stage *st, const double *mine, int per, double *all) {
    const mf_pipe *p = &st->pipe;
    int *counts = mf_malloc((size_t)p->size * sizeof *counts), *displs = mf_malloc((size_t)p->size * sizeof *displs);
    for (int r = 0; r < p->size; r++) {
        counts[r] = (p->bounds[r + 1] - p->bounds[r]) * per;
        displs[r] = p->bounds[r] * per;
    }
    MPI_Gatherv(mine, counts[p->rank], MPI_DOUBLE, all, counts, displs, MPI_DOUBLE, 0, p->comm);
    free(counts);
    free(displs);
}

static void collect_width(mf_score_result *r, const mf_stage *st, const mf_importance *imp) {
    int n = st->pipe.l1 - st->pipe.l0, F = r->F, H = r->H, D = r->D;
    double *mlp = mf_calloc((size_t)(n ? n : 1) * F, sizeof *mlp), *heads = mf_calloc((size_t)(n ? n : 1) * H, sizeof *heads);
    double *norm = mf_calloc((size_t)(n ? n : 1) * 2 * D, sizeof *norm);
    for (int i = 0; i < n; i++)
        mf_importance_width(imp, st->pipe.l0 + i, mlp + (size_t)i * F, heads + (size_t)i * H, norm + (size_t)i * 2 * D,
                            norm + (size_t)i * 2 * D + D);
    gather_layers(st, mlp, F, r->mlp);
    gather_layers(st, heads, H, r->heads);
    gather_layers(st, norm, 2 * D, r->norm);
    if (st->pipe.rank == 0)
        for (int l = 0; l < r->L; l++) /* layer order: identical for any rank count */
            for (int k = 0; k < 2; k++)
                for (int c = 0; c < D; c++) r->emb[c] += r->norm[((size_t)l * 2 + k) * D + c];
    free(mlp); free(heads); free(norm);
}

void mf_score_collect(mf_score_result *r, const mf_stage *st, const mf_importance *imp, const double *ppl_nll,
                      double base_nll, long ppl_tokens, const double *mi, const int *mi_order, long layer_fwd, long heads) {
    const mf_config *c = &st->model->cfg;
    const mf_pipe *p = &st->pipe;
    r->L = c->n_layers; r->F = c->ffn_dim; r->H = c->n_heads; r->D = c->dim;
    int L = r->L, root = 0, last = p->size - 1;
    r->mlp = mf_calloc((size_t)L * r->F, sizeof(double));
    r->heads = mf_calloc((size_t)L * r->H, sizeof(double));
    r->norm = mf_calloc((size_t)L * 2 * r->D, sizeof(double));
    r->emb = mf_calloc((size_t)r->D, sizeof(double));
    r->bi = mf_calloc((size_t)L, sizeof(double));
    r->ppl = mf_calloc((size_t)L, sizeof(double));
    int it = r->mi_iters > 0 ? r->mi_iters : 1;
    r->mi = mf_calloc((size_t)it * L, sizeof(double));
    r->mi_order = mf_calloc((size_t)it, sizeof(int));
    r->order_bi = mf_calloc((size_t)L, sizeof(int));
    r->order_ppl = mf_calloc((size_t)L, sizeof(int));
    r->order_mi = mf_calloc((size_t)L, sizeof(int));
    if (r->want_width) collect_width(r, st, imp);
    if (r->want_bi) {
        double *bi = mf_calloc((size_t)(p->l1 - p->l0 + 1), sizeof *bi);
        for (int l = p->l0; l < p->l1; l++) bi[l - p->l0] = mf_importance_bi(imp, l);
        gather_layers(st, bi, 1, r->bi);
        free(bi);
    }
    /* depth results live on the last rank */
    if (p->rank == last) {
        for (int i = 0; i < L; i++) r->ppl[i] = ppl_tokens ? exp(ppl_nll[i] / (double)ppl_tokens) : 0;
        r->ppl_full = ppl_tokens ? exp(base_nll / (double)ppl_tokens) : 0;
        memcpy(r->mi, mi, (size_t)it * L * sizeof(double));
        memcpy(r->mi_order, mi_order, (size_t)it * sizeof(int));
    }
    if (last != root) {
        if (p->rank == last) {
            MPI_Send(r->ppl, L, MPI_DOUBLE, root, 7, p->comm);
            MPI_Send(&r->ppl_full, 1, MPI_DOUBLE, root, 7, p->comm);
            MPI_Send(r->mi, it * L, MPI_DOUBLE, root, 7, p->comm);
            MPI_Send(r->mi_order, it, MPI_INT, root, 7, p->comm);
        } else if (p->rank == root) {
            MPI_Recv(r->ppl, L, MPI_DOUBLE, last, 7, p->comm, MPI_STATUS_IGNORE);
            MPI_Recv(&r->ppl_full, 1, MPI_DOUBLE, last, 7, p->comm, MPI_STATUS_IGNORE);
            MPI_Recv(r->mi, it * L, MPI_DOUBLE, last, 7, p->comm, MPI_STATUS_IGNORE);
            MPI_Recv(r->mi_order, it, MPI_INT, last, 7, p->comm, MPI_STATUS_IGNORE);
        }
    }
    long work[2] = {layer_fwd, heads}, tot[2];
    MPI_Reduce(work, tot, 2, MPI_LONG, MPI_SUM, root, p->comm);
    if (p->rank != root) return;
    /* orders, least important first */
    mf_argsort_asc(r->bi, L, r->order_bi);
    mf_argsort_asc(r->ppl, L, r->order_ppl);
    if (r->want_mi) { /* removal order, then the rest by their last MI */
        double *lastmi = mf_malloc((size_t)L * sizeof *lastmi);
        memcpy(lastmi, r->mi + (size_t)(r->mi_iters - 1) * L, (size_t)L * sizeof *lastmi);
        for (int k = 0; k < r->mi_iters; k++) lastmi[r->mi_order[k]] = -1.0 - (r->mi_iters - k);
        mf_argsort_asc(lastmi, L, r->order_mi);
        free(lastmi);
    }
    double layer_cost = mf_config_layer_flops(c, r->opts_ctx / 2), head_cost = mf_config_head_flops(c);
    double full = L * layer_cost + head_cost;
    r->fwd_equiv_total = ((double)tot[0] * layer_cost + (double)tot[1] * head_cost) / full / r->opts_samples;
}

static json_t *jarr_d(const double *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, isnan(v[i]) ? json_null() : json_real(v[i]));
    return a;
}
static json_t *jarr_i(const int *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

void mf_score_print(const mf_score_result *r, int json) {
    int L = r->L;
    if (json) {
        json_t *j = json_object();
        json_object_set_new(j, "seconds", json_real(r->seconds));
        mf_blas_json(j); /* the kernels change the last bits: part of the result's provenance */
        json_object_set_new(j, "samples", json_integer(r->opts_samples));
        json_object_set_new(j, "ctx", json_integer(r->opts_ctx));
        json_object_set_new(j, "forward_equivalents_per_window", json_real(r->fwd_equiv_total));
        if (r->want_bi) { json_object_set_new(j, "bi", jarr_d(r->bi, L)); json_object_set_new(j, "order_bi", jarr_i(r->order_bi, L)); }
        if (r->want_ppl) {
            json_object_set_new(j, "ppl_full", json_real(r->ppl_full));
            json_object_set_new(j, "ppl_drop", jarr_d(r->ppl, L));
            json_object_set_new(j, "order_ppl", jarr_i(r->order_ppl, L));
        }
        if (r->want_mi) {
            json_t *mi = json_array();
            for (int k = 0; k < r->mi_iters; k++) json_array_append_new(mi, jarr_d(r->mi + (size_t)k * L, L));
            json_object_set_new(j, "mi", mi);
            json_object_set_new(j, "mi_removed", jarr_i(r->mi_order, r->mi_iters));
            json_object_set_new(j, "order_mi", jarr_i(r->order_mi, L));
        }
        if (r->want_width) {
            json_t *h = json_array();
            for (int l = 0; l < L; l++) json_array_append_new(h, jarr_d(r->heads + (size_t)l * r->H, r->H));
            json_object_set_new(j, "head_scores", h);
        }
        char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(10));
        printf("%s\n", s);
        free(s);
        json_decref(j);
        return;
    }
    printf("scored %d windows x %d tokens in %.1f s (%.1f full-forward equivalents per window)\n", r->opts_samples,
           r->opts_ctx, r->seconds, r->fwd_equiv_total);
    printf("layer %10s %12s %12s\n", "BI", "ppl-drop", "MI(iter 1)");
    for (int l = 0; l < L; l++)
        printf("%5d %10.5f %12.4f %12.6f\n", l, r->want_bi ? r->bi[l] : NAN, r->want_ppl ? r->ppl[l] : NAN,
               r->want_mi ? r->mi[l] : NAN);
    if (r->want_ppl) printf("full model ppl %.4f\n", r->ppl_full);
    if (r->want_mi) {
        printf("MI removal order:");
        for (int k = 0; k < r->mi_iters; k++) printf(" %d", r->mi_order[k]);
        printf("\n");
    }
}

void mf_score_result_free(mf_score_result *r) {
    free(r->mlp); free(r->heads); free(r->norm); free(r->emb); free(r->bi); free(r->ppl);
    free(r->mi); free(r->mi_order); free(r->order_bi); free(r->order_ppl); free(r->order_mi);
}

/* Options as JSON text for the provenance attribute. */
static char *options_json(const mf_score_result *r) {
    json_t *o = json_pack("{s:i, s:i, s:s, s:s, s:i, s:i, s:b, s:b, s:b, s:b}", "samples", r->opts_samples, "ctx",
                          r->opts_ctx, "agg_seq", mf_agg_name(r->seq), "agg_batch", mf_agg_name(r->batch), "mi_iters",
                          r->mi_iters, "mi_samples", r->mi_samples, "width", r->want_width, "bi", r->want_bi, "ppl",
                          r->want_ppl, "mi", r->want_mi);
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

/* Where the numbers came from, JSON text for the provenance attribute: the
 * backend, the BLAS core (the kernels change the last bits), threads, ranks. */
static char *provenance_json(const char *backend, int ranks) {
    json_t *o = json_object();
    json_object_set_new(o, "backend", json_string(backend));
    mf_blas_json(o);
    json_object_set_new(o, "ranks", json_integer(ranks));
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

void mf_score_write(const mf_score_result *r, const mf_stage *st, const mf_importance *imp, const char *model,
                    const char *text, const char *out, long n_tokens) {
    const mf_pipe *p = &st->pipe;
    const mf_config *c = &st->model->cfg;
    int n = p->l1 - p->l0;
    mf_layer_scores *mine = mf_calloc((size_t)(n ? n : 1), sizeof *mine);
    for (int i = 0; r->want_width && i < n; i++) {
        mine[i].mlp_neurons = mf_malloc((size_t)c->ffn_dim * sizeof(double));
        mine[i].attn_heads = mf_malloc((size_t)c->n_heads * sizeof(double));
        mine[i].emb_attn_norm = mf_malloc((size_t)c->dim * sizeof(double));
        mine[i].emb_mlp_norm = mf_malloc((size_t)c->dim * sizeof(double));
        mf_importance_width(imp, p->l0 + i, mine[i].mlp_neurons, mine[i].attn_heads, mine[i].emb_attn_norm, mine[i].emb_mlp_norm);
    }
    mf_rankings_meta meta = {0};
    mf_depth_scores depth = {0};
    char model_sha[65] = "", data_sha[65] = "";
    mf_err err;
    if (p->rank == 0) {
        if (mf_sha256_path(model, model_sha, &err) != 0 || mf_sha256_path(text, data_sha, &err) != 0) mf_fatal_err(&err);
        mf_rankings_meta_set_config(&meta, c);
        meta.model_path = (char *)model;
        meta.model_sha256 = model_sha;
        meta.data_path = (char *)text;
        meta.data_sha256 = data_sha;
        meta.options = options_json(r);
        meta.provenance = provenance_json(st->model->be->name, p->size);
        meta.n_tokens = n_tokens;
        meta.n_samples = r->opts_samples;
        meta.ctx = r->opts_ctx;
        depth.bi = r->want_bi ? r->bi : NULL;
        depth.ppl = r->want_ppl ? r->ppl : NULL;
        depth.ppl_full = r->ppl_full;
        depth.n_mi_iter = r->want_mi ? r->mi_iters : 0;
        depth.mi = r->want_mi ? r->mi : NULL;
        depth.mi_order = r->want_mi ? r->mi_order : NULL;
    }
    if (mf_rankings_write(out, p->comm, &meta, p->l0, p->l1, mine, &depth, &err) != 0) mf_fatal_err(&err);
    if (p->rank == 0) mf_log("wrote %s", out);
    free(meta.options); free(meta.provenance);
    for (int i = 0; i < n; i++) {
        free(mine[i].mlp_neurons); free(mine[i].attn_heads); free(mine[i].emb_attn_norm); free(mine[i].emb_mlp_norm);
    }
    free(mine);
}
