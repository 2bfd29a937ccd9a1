/* score_out.h - gather the results of `score` on rank 0, print them, write rankings.h5. */
#ifndef MF_SCORE_OUT_H
#define MF_SCORE_OUT_H

#include "compress/importance.h"
#include "stage.h"

typedef struct mf_score_result {
    /* options echoed into the outputs */
    int opts_samples, opts_ctx, mi_iters, mi_samples;
    int want_width, want_bi, want_ppl, want_mi;
    mf_agg seq, batch;
    double seconds;
    /* rank 0 after mf_score_collect */
    int L, F, H, D;
    double *mlp;      /* [L][F] */
    double *heads;    /* [L][H] */
    double *norm;     /* [L][2][D] attention-norm, MLP-norm channel scores */
    double *emb;      /* [D] sum over layers and both norms */
    double *bi;       /* [L] */
    double *ppl;      /* [L] perplexity with block i removed */
    double ppl_full;
    double *mi;       /* [mi_iters][L], NaN for removed blocks */
    int *mi_order;    /* [mi_iters] */
    int *order_bi, *order_ppl, *order_mi; /* [L] least important first */
    double fwd_equiv_total; /* work done, in full-forward equivalents (FLOPs) */
} mf_score_result;

/* Collective: gather everything to rank 0. Depth inputs are valid on the last rank. */
void mf_score_collect(mf_score_result *r, const mf_stage *st, const mf_importance *imp, const double *ppl_nll,
                      double base_nll, long ppl_tokens, const double *mi, const int *mi_order, long layer_fwd, long heads);
/* Collective: write the HDF5 rankings file. */
void mf_score_write(const mf_score_result *r, const mf_stage *st, const mf_importance *imp, const char *model,
                    const char *text, const char *out, long n_tokens);
void mf_score_print(const mf_score_result *r, int json);
void mf_score_result_free(mf_score_result *r);

/* Indices 0..n-1 sorted by ascending value (ties: lower index first); NaN last. */
void mf_argsort_asc(const double *v, int n, int *idx);

#endif
