#include "compress/importance.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int mf_agg_parse(const char *s, mf_agg *out) {
    if (strcmp(s, "mean") == 0) *out = MF_AGG_MEAN;
    else if (strcmp(s, "l2") == 0) *out = MF_AGG_L2;
    else if (strcmp(s, "var") == 0) *out = MF_AGG_VAR;
    else return -1;
    return 0;
}

const char *mf_agg_name(mf_agg a) { return a == MF_AGG_MEAN ? "mean" : a == MF_AGG_L2 ? "l2" : "var"; }

static double *zeros(size_t n) { return mf_calloc(n, sizeof(double)); }

/* Per-channel sequence aggregate of x[T][C], added into s (a) and q (a^2). */
static void accumulate(const float *x, int T, int C, mf_agg seq, double *s, double *q) {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double sa = 0, s1 = 0, s2 = 0;
        for (int t = 0; t < T; t++) {
            double v = x[(size_t)t * C + c];
            sa += fabs(v);
            s1 += v;
            s2 += v * v;
        }
        double a = seq == MF_AGG_MEAN ? sa / T : seq == MF_AGG_L2 ? sqrt(s2) : s2 / T - (s1 / T) * (s1 / T);
        s[c] += a;
        q[c] += a * a;
    }
}

double mf_mean_cos(const float *a, const float *b, int T, int C) {
    double sum = 0;
    for (int t = 0; t < T; t++) {
        const float *x = a + (size_t)t * C, *y = b + (size_t)t * C;
        double xy = 0, xx = 0, yy = 0;
        for (int c = 0; c < C; c++) {
            xy += (double)x[c] * y[c];
            xx += (double)x[c] * x[c];
            yy += (double)y[c] * y[c];
        }
        double den = sqrt(xx) * sqrt(yy);
        sum += den > 0 ? xy / den : 1.0;
    }
    return sum / T;
}

static void on_act(void *ctx, int layer, mf_act_point pt, const float *x, int T, int C) {
    mf_importance *imp = ctx;
    int li = layer - imp->l0;
    mf_width_acc *a = &imp->acc[li];
    switch (pt) {
    case MF_ACT_LAYER_IN:
        if (imp->want_bi) memcpy(imp->in_copy, x, (size_t)T * C * sizeof *x);
        if (imp->want_cache) memcpy(imp->cache[li], x, (size_t)T * C * sizeof *x);
        break;
    case MF_ACT_LAYER_OUT:
        if (imp->want_bi) {
            imp->bi_cos[li] += mf_mean_cos(imp->in_copy, x, T, C) * T;
        }
        break;
    case MF_ACT_ATTN_NORM: if (imp->want_width) accumulate(x, T, C, imp->seq, a->norm_s[0], a->norm_q[0]); break;
    case MF_ACT_MLP_NORM: if (imp->want_width) accumulate(x, T, C, imp->seq, a->norm_s[1], a->norm_q[1]); break;
    case MF_ACT_ATTN_CTX: if (imp->want_width) accumulate(x, T, C, imp->seq, a->att_s, a->att_q); break;
    case MF_ACT_MLP_ACT: if (imp->want_width) accumulate(x, T, C, imp->seq, a->mlp_s, a->mlp_q); break;
    }
}

void mf_importance_init(mf_importance *imp, const mf_config *c, int l0, int l1, int max_T, mf_agg seq, mf_agg batch,
                        int want_width, int want_bi, int want_cache) {
    memset(imp, 0, sizeof *imp);
    imp->cfg = *c;
    imp->l0 = l0;
    imp->l1 = l1;
    imp->seq = seq;
    imp->batch = batch;
    imp->want_width = want_width;
    imp->want_bi = want_bi;
    imp->want_cache = want_cache;
    imp->max_T = max_T;
    int n = l1 - l0, Q = c->n_heads * c->head_dim;
    imp->acc = mf_calloc((size_t)(n > 0 ? n : 1), sizeof *imp->acc);
    imp->bi_cos = zeros((size_t)(n > 0 ? n : 1));
    imp->in_copy = mf_malloc((size_t)max_T * c->dim * sizeof(float));
    imp->cache = mf_calloc((size_t)(n > 0 ? n : 1), sizeof *imp->cache);
    for (int i = 0; i < n; i++) {
        mf_width_acc *a = &imp->acc[i];
        if (want_width) {
            a->mlp_s = zeros((size_t)c->ffn_dim); a->mlp_q = zeros((size_t)c->ffn_dim);
            a->att_s = zeros((size_t)Q); a->att_q = zeros((size_t)Q);
            for (int k = 0; k < 2; k++) { a->norm_s[k] = zeros((size_t)c->dim); a->norm_q[k] = zeros((size_t)c->dim); }
        }
        if (want_cache) imp->cache[i] = mf_malloc((size_t)max_T * c->dim * sizeof(float));
    }
    imp->hooks.ctx = imp;
    imp->hooks.on_act = on_act;
}

void mf_importance_free(mf_importance *imp) {
    for (int i = 0; i < imp->l1 - imp->l0; i++) {
        mf_width_acc *a = &imp->acc[i];
        free(a->mlp_s); free(a->mlp_q); free(a->att_s); free(a->att_q);
        for (int k = 0; k < 2; k++) { free(a->norm_s[k]); free(a->norm_q[k]); }
        free(imp->cache[i]);
    }
    free(imp->acc);
    free(imp->bi_cos);
    free(imp->in_copy);
    free(imp->cache);
    memset(imp, 0, sizeof *imp);
}

void mf_importance_end_sample(mf_importance *imp, int T) {
    imp->n_samples++;
    imp->bi_tokens += T;
}

/* Batch aggregate of one channel from sum and sum of squares over N samples. */
static double batch_agg(mf_agg b, double s, double q, long N) {
    if (N == 0) return 0;
    if (b == MF_AGG_L2) return sqrt(q);
    double mean = s / (double)N;
    return b == MF_AGG_MEAN ? mean : q / (double)N - mean * mean;
}

void mf_importance_width(const mf_importance *imp, int l, double *mlp, double *heads, double *norm_attn, double *norm_mlp) {
    const mf_width_acc *a = &imp->acc[l - imp->l0];
    const mf_config *c = &imp->cfg;
    long N = imp->n_samples;
    for (int j = 0; j < c->ffn_dim; j++) mlp[j] = batch_agg(imp->batch, a->mlp_s[j], a->mlp_q[j], N);
    for (int h = 0; h < c->n_heads; h++) {
        double ss = 0;
        for (int k = 0; k < c->head_dim; k++) {
            int ch = h * c->head_dim + k;
            double v = batch_agg(imp->batch, a->att_s[ch], a->att_q[ch], N);
            ss += v * v;
        }
        heads[h] = sqrt(ss);
    }
    for (int i = 0; i < c->dim; i++) {
        norm_attn[i] = batch_agg(imp->batch, a->norm_s[0][i], a->norm_q[0][i], N);
        norm_mlp[i] = batch_agg(imp->batch, a->norm_s[1][i], a->norm_q[1][i], N);
    }
}

double mf_importance_bi(const mf_importance *imp, int l) {
    return imp->bi_tokens ? 1.0 - imp->bi_cos[l - imp->l0] / (double)imp->bi_tokens : 0.0;
}
