/* rankings.h - the rankings file: importance scores written by `minifuse score`
 * and read by `minifuse prune`.
 *
 * One HDF5 file (schema: docs/rankings_schema.md). It is written collectively
 * by the MPI pipeline ranks through parallel HDF5 (MPI-IO driver): rank r
 * writes the per-layer width scores of its layers [l0,l1), rank 0 the depth
 * scores. It is read serially by any process. Every metric is optional: the
 * file holds what was computed, listed in the root attribute "metrics". */
#ifndef MF_RANKINGS_H
#define MF_RANKINGS_H

#include <mpi.h>
#include <stdint.h>
#include "model/config.h"
#include "util/err.h"

#define MF_RANKINGS_FORMAT "minifuse-rankings"
#define MF_RANKINGS_VERSION 1

/* Metrics (bits of mf_rankings.metrics); names as in the "metrics" attribute. */
enum {
    MF_RK_MLP_NEURONS = 1 << 0,   /* "mlp_neurons":   /layers/NN/mlp_neurons [intermediate_size] */
    MF_RK_ATTN_HEADS = 1 << 1,    /* "attn_heads":    /layers/NN/attn_heads [num_attention_heads] */
    MF_RK_EMB_ATTN_NORM = 1 << 2, /* "emb_attn_norm": /layers/NN/emb_attn_norm [hidden_size] */
    MF_RK_EMB_MLP_NORM = 1 << 3,  /* "emb_mlp_norm":  /layers/NN/emb_mlp_norm [hidden_size] */
    MF_RK_BI = 1 << 4,            /* "bi":  /depth/bi [n_layers], /orders/bi */
    MF_RK_PPL = 1 << 5,           /* "ppl": /depth/ppl [n_layers] (+ attr ppl_full), /orders/ppl */
    MF_RK_MI = 1 << 6,            /* "mi":  /depth/mi [n_iter][n_layers], /orders/mi [n_iter] */
    MF_RK_N_METRICS = 7
};
#define MF_RK_WIDTH (MF_RK_MLP_NEURONS | MF_RK_ATTN_HEADS | MF_RK_EMB_ATTN_NORM | MF_RK_EMB_MLP_NORM)

/* Name of one metric bit ("mlp_neurons", ...), NULL for anything else. */
const char *mf_rankings_metric_name(unsigned bit);

/* Provenance and model shape (root attributes). Strings: "" means unknown. */
typedef struct mf_rankings_meta {
    char *software_version; /* on write, NULL -> MF_VERSION */
    char *created;          /* ISO-8601 UTC "2025-01-31T12:00:00Z"; on write, NULL -> now */
    char *model_path, *model_sha256;
    char *data_path, *data_sha256;
    char *options;          /* JSON text of the scoring options */
    char *provenance;       /* JSON text: backend, BLAS core (and how it was chosen), threads, ranks ("" when absent) */
    int64_t n_tokens;       /* calibration tokens scored */
    int64_t n_samples;      /* calibration sequences */
    int ctx;                /* tokens per sequence */
    int n_layers, hidden_size, intermediate_size;
    int n_heads, n_kv_heads, head_dim, vocab_size;
} mf_rankings_meta;

/* Copy the model-shape fields of c into m. */
void mf_rankings_meta_set_config(mf_rankings_meta *m, const mf_config *c);

/* Width scores of one layer; a NULL array = metric not computed. */
typedef struct mf_layer_scores {
    double *mlp_neurons;   /* [intermediate_size] */
    double *attn_heads;    /* [n_heads] */
    double *emb_attn_norm; /* [hidden_size] channels of the attention-norm output */
    double *emb_mlp_norm;  /* [hidden_size] channels of the MLP-norm output */
} mf_layer_scores;

/* Depth scores; NULL / 0 = not computed. */
typedef struct mf_depth_scores {
    double *bi;       /* [n_layers] Block Importance */
    double *ppl;      /* [n_layers] perplexity with layer i alone removed */
    double ppl_full;  /* perplexity of the whole model (stored with ppl) */
    int n_mi_iter;    /* iterations of the iterative (FuseGPT) removal; 0 = no MI */
    double *mi;       /* [n_mi_iter][n_layers] Macro Influence; NaN = removed before iteration t */
    int *mi_order;    /* [n_mi_iter] layer removed at iteration t (distinct) */
} mf_depth_scores;

/* Everything in a rankings file (mf_rankings_read). */
typedef struct mf_rankings {
    char *path;
    mf_rankings_meta meta;
    unsigned metrics;          /* MF_RK_* bits present */
    mf_layer_scores *layers;   /* [n_layers]; arrays NULL for absent metrics */
    mf_depth_scores depth;
    double *width_emb;         /* [hidden_size] sum over layers of emb_attn_norm + emb_mlp_norm, or NULL */
    int *order_bi, *order_ppl; /* [n_layers] layer indices, least important first, or NULL */
} mf_rankings;

/* Write `path`. Collective over comm: every rank calls it, with its own layer
 * range [l0,l1) and scores mine[l1-l0]; the ranges must tile [0, n_layers).
 * meta and depth are taken from rank 0 (ignored elsewhere; may be NULL there).
 * Writes path.tmp with the MPI-IO driver and renames it to path when complete.
 * On any failure every rank returns -1 with the same message and no new file
 * is left at path (a previous file at path is left as it was). */
int mf_rankings_write(const char *path, MPI_Comm comm, const mf_rankings_meta *meta, int l0, int l1,
                      const mf_layer_scores *mine, const mf_depth_scores *depth, mf_err *err);

/* Read and validate a rankings file (serial; needs no MPI). Errors name the
 * file and the attribute or dataset at fault. out is zeroed first; on error
 * nothing needs freeing. */
int mf_rankings_read(const char *path, mf_rankings *out, mf_err *err);
/* The same for a given model: the file's model shape (and model_sha256, when
 * both are known) must match cfg, checked as by mf_rankings_check_model
 * before any dataset is read, so no buffer is sized by the file alone. */
int mf_rankings_read_model(const char *path, const mf_config *cfg, const char *model_sha256, mf_rankings *out,
                           mf_err *err);
void mf_rankings_free(mf_rankings *r);

/* Check that r was computed on a model of shape c (and, when both are known,
 * with the given model_sha256, which may be NULL). The message names the field. */
int mf_rankings_check_model(const mf_rankings *r, const mf_config *c, const char *model_sha256, mf_err *err);

#endif
