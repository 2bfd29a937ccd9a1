/* importance.h - Minitron width importance and Block Importance, accumulated
 * from activations during an ordinary forward pass (through mf_hooks).
 *
 * Width (per layer, per calibration sample of T tokens, channel c):
 *   seq aggregate  a_c = mean_t |x_tc|  (or l2: sqrt(sum_t x^2), var: var_t x)
 *   batch aggregate over samples: l2 = sqrt(sum a^2) (default), mean, var
 * at: MLP neurons = input of down_proj [F]; attention heads = input of o_proj,
 * per channel then L2 over head_dim [H]; embedding channels = outputs of both
 * RMSNorms [D] (summed over layers by the caller).
 * Block Importance: BI_l = 1 - mean over tokens of cos(x_in, x_out).
 * Everything is accumulated in double, in sample order, per layer on the rank
 * that owns the layer: results do not depend on the number of ranks. */
#ifndef MF_IMPORTANCE_H
#define MF_IMPORTANCE_H

#include "model/model.h"

typedef enum { MF_AGG_MEAN, MF_AGG_L2, MF_AGG_VAR } mf_agg;
int mf_agg_parse(const char *s, mf_agg *out);
const char *mf_agg_name(mf_agg a);

typedef struct mf_width_acc {
    double *mlp_s, *mlp_q;       /* [F]  sum over samples of a, of a^2 */
    double *att_s, *att_q;       /* [H*hd] */
    double *norm_s[2], *norm_q[2]; /* [D] attention norm, MLP norm */
} mf_width_acc;

typedef struct mf_importance {
    mf_config cfg;
    int l0, l1;
    mf_agg seq, batch;
    int want_width, want_bi, want_cache;
    long n_samples;              /* samples accumulated (width) */
    mf_width_acc *acc;           /* [l1-l0] */
    double *bi_cos;              /* [l1-l0] sum over tokens of cos(in, out) */
    long bi_tokens;
    float *in_copy;              /* [T][D] LAYER_IN copy for BI */
    float **cache;               /* [l1-l0][T][D] input of every owned layer (drop-one variants) */
    int max_T;
    mf_hooks hooks;
} mf_importance;

void mf_importance_init(mf_importance *imp, const mf_config *c, int l0, int l1, int max_T, mf_agg seq, mf_agg batch,
                        int want_width, int want_bi, int want_cache);
void mf_importance_free(mf_importance *imp);
/* Call after each sample's full forward of T tokens (counts it for the statistics). */
void mf_importance_end_sample(mf_importance *imp, int T);

/* Final scores of owned layer l (global index): mlp[F], heads[H], norm_attn[D], norm_mlp[D]. */
void mf_importance_width(const mf_importance *imp, int l, double *mlp, double *heads, double *norm_attn, double *norm_mlp);
double mf_importance_bi(const mf_importance *imp, int l);

/* Mean over T rows of cos(a_t, b_t), accumulated in double. */
double mf_mean_cos(const float *a, const float *b, int T, int C);

#endif
