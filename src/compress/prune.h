/* prune.h - structured pruning plans (depth and width) and weight slicing.
 *
 * A plan says which layers survive and, for every surviving layer, which MLP
 * neurons, query heads and KV groups it keeps, plus the hidden channels kept
 * everywhere (the residual stream is shared). Widths are homogeneous: every
 * layer keeps the same counts, chosen per layer by its own scores (neurons,
 * heads) or globally (hidden channels), as Minitron does. Index lists are
 * sorted ascending so the surviving weights keep their order. */
#ifndef MF_PRUNE_H
#define MF_PRUNE_H

#include "io/hf_write.h"
#include "io/rankings.h"
#include "model/model.h"

typedef enum { MF_DEPTH_BI, MF_DEPTH_PPL, MF_DEPTH_MI, MF_DEPTH_RANDOM } mf_depth_metric;
int mf_depth_metric_parse(const char *s, mf_depth_metric *out);

typedef struct mf_prune_opts {
    int drop_layers;           /* number of blocks to remove */
    mf_depth_metric metric;
    int drop_block;            /* remove one contiguous block of drop_layers */
    const int *drop_list;      /* these drop_layers blocks, by index (no metric); NULL: by metric */
    unsigned long long seed;   /* for MF_DEPTH_RANDOM */
    double ffn_keep, heads_keep, hidden_keep; /* 0 = keep all; (0,1] fraction; > 1 absolute */
    int prune_kv_groups;       /* heads: remove whole KV groups instead of queries within groups */
    int align;                 /* kept sizes rounded to multiples of this (32 default, 256 for K-quants) */
} mf_prune_opts;

typedef struct mf_prune_plan {
    mf_config old_cfg, new_cfg;
    int *keep_layer;           /* [new n_layers] old layer index */
    int *dropped;              /* [old n_layers - new n_layers] */
    int **ffn_idx;             /* [old n_layers] -> [new ffn_dim] (NULL for dropped layers) */
    int **head_idx;            /* [old n_layers] -> [new n_heads] */
    int **kv_idx;              /* [old n_layers] -> [new n_kv_heads] */
    int *hid_idx;              /* [new dim] */
} mf_prune_plan;

/* Build the plan; errors name the option or the missing metric. */
int mf_prune_plan_make(mf_prune_plan *p, const mf_config *c, const mf_rankings *rk, const mf_prune_opts *o, mf_err *err);
void mf_prune_plan_free(mf_prune_plan *p);

/* Sliced tensors of the model's owned, surviving layers (renumbered) plus the
 * embedding / final norm / head it owns. Returns the count; *out and every
 * data pointer are mf_malloc'ed (free with mf_prune_tensors_free). */
int mf_prune_slice(const mf_prune_plan *p, const mf_model *m, mf_tensor_ref **out);
void mf_prune_tensors_free(mf_tensor_ref *t, int n);

/* Size from a keep option: 0 -> full; fraction -> round(full*f); absolute; then
 * rounded to a multiple of align (at least align, at most full). */
int mf_keep_size(double keep, int full, int align);

#endif
