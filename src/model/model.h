/* model.h - the weights one pipeline stage owns, and its forward pass.
 *
 * A stage owns layers [layer_begin, layer_end), plus the token embedding if
 * it is the first stage and the final norm + LM head if it is the last. Only
 * those tensors are materialized (F32 files are used in place from the map). */
#ifndef MF_MODEL_H
#define MF_MODEL_H

#include <stdint.h>
#include "backend/backend.h"
#include "io/source.h"
#include "model/config.h"

typedef struct mf_layer {
    float *attn_norm;          /* [D] */
    float *wq, *wk, *wv;       /* [H*hd][D], [KV*hd][D], [KV*hd][D] */
    float *bq, *bk, *bv;       /* [H*hd], [KV*hd], [KV*hd] or NULL */
    float *wo;                 /* [D][H*hd] */
    float *ffn_norm;           /* [D] */
    float *w_gate, *w_up;      /* [F][D] */
    float *w_down;             /* [D][F] */
} mf_layer;

/* The tensors of one layer, in a fixed order: Hugging Face name suffix
 * ("self_attn.q_proj.weight"), where it lives in mf_layer, its shape from the
 * config (d1 = 0 for 1-D), and whether it is a q/k/v bias (only with qkv_bias). */
typedef struct mf_layer_tensor {
    const char *suffix;
    size_t offset;
    int64_t d0, d1;
    int is_bias;
} mf_layer_tensor;
#define MF_LAYER_TENSORS 12
void mf_layer_tensors(const mf_config *c, mf_layer_tensor out[MF_LAYER_TENSORS]);
static inline float **mf_layer_slot(mf_layer *L, const mf_layer_tensor *t) { return (float **)((char *)L + t->offset); }

typedef struct mf_model {
    mf_config cfg;
    const mf_backend *be;
    int layer_begin, layer_end; /* owned layers */
    int first, last;            /* owns embedding / owns final norm + head */
    /* Every tensor is memory of be: a host backend uses a float32 file's map in
     * place (no copy); a device backend gets each tensor uploaded once. */
    float *tok_embd;            /* [V][D] (first stage, or last stage when tied) */
    float *out_norm;            /* [D] */
    float *lm_head;             /* [V][D]; == tok_embd when tied */
    float *inv_freq;            /* [hd/2] RoPE frequencies */
    mf_layer *layers;           /* [layer_end - layer_begin] */
    /* tensors this model must free (converted copies) */
    void **owned;
    int n_owned;
} mf_model;

/* Load the tensors of layers [l0, l1) (plus embedding if first, head if last). */
mf_model *mf_model_load(const mf_source *src, const mf_backend *be, int l0, int l1, int first, int last, mf_err *err);
void mf_model_free(mf_model *m);
/* Bytes of float32 weights this stage holds (its layers, embedding/head if owned). */
size_t mf_model_weight_bytes(const mf_model *m);

/* Observers of intermediate activations (importance scoring, distillation of
 * hidden states). Called with host pointers after each point is computed (a
 * device backend's activations are downloaded first). */
typedef enum {
    MF_ACT_LAYER_IN,   /* residual stream entering a layer   [T][D] */
    MF_ACT_ATTN_NORM,  /* input_layernorm output             [T][D] */
    MF_ACT_ATTN_CTX,   /* attention context, input of o_proj [T][H*hd] */
    MF_ACT_MLP_NORM,   /* post_attention_layernorm output    [T][D] */
    MF_ACT_MLP_ACT,    /* silu(gate)*up, input of down_proj  [T][F] */
    MF_ACT_LAYER_OUT,  /* residual stream leaving a layer    [T][D] */
} mf_act_point;

typedef struct mf_hooks {
    void *ctx;
    void (*on_act)(void *ctx, int layer, mf_act_point point, const float *x, int T, int C);
} mf_hooks;

/* Per-stage working memory for sequences of up to max_T new tokens and a KV
 * cache of max_ctx positions. */
typedef struct mf_state {
    int max_T, max_ctx;
    float *x;                /* [T][D] residual stream (stage input and output) */
    float *xn;               /* [T][D] */
    float *q, *att;          /* [T][H*hd] */
    float *k, *v;            /* [T][KV*hd] (unused when writing straight to the cache) */
    float *gate, *up;        /* [T][F] */
    float *kcache, *vcache;  /* [n_layers_owned][max_ctx][KV*hd] */
    float *logits;           /* [T][V] (last stage) */
    const mf_hooks *hooks;   /* NULL: no observers */
    float *host_act;         /* device backends: host copy handed to the hooks [T][max(D, H*hd, F)] */
} mf_state;

mf_state *mf_state_new(const mf_model *m, int max_T, int max_ctx);
void mf_state_free(const mf_model *m, mf_state *s);

/* Token embedding into s->x (first stage). ids in host memory. */
void mf_forward_embed(const mf_model *m, mf_state *s, const int32_t *ids, int T);
/* Run the owned layers on s->x for T tokens at positions pos0..pos0+T-1. */
void mf_forward_layers(const mf_model *m, mf_state *s, int T, int pos0);
/* Run owned layers l in [from, to) (global indices) except those with skip[l] != 0 (skip may be NULL). */
void mf_forward_range(const mf_model *m, mf_state *s, int T, int pos0, int from, int to, const unsigned char *skip);
/* Final norm + head: s->logits [T][V] from s->x (last stage). */
void mf_forward_head(const mf_model *m, mf_state *s, int T);

#endif
