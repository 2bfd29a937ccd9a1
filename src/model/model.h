/* model.h - the weights one pipeline stage owns, and its forward pass.
 *
 * A stage owns layers [layer_begin, layer_end), plus the token embedding if
 * it is the first stage and the final norm + LM head if it is the last. Only
 * those tensors are materialized (F32 files are used in place from the map).
 *
 * Frozen models (eval, score, logits, generate, a distillation teacher) may
 * hold their matrices - the layers' projections, the embedding and the head -
 * in 16 bits (mf_model.wdt, --weights); norms and biases stay float32. Then
 * those pointers of mf_layer/mf_model hold uint16_t values of type wdt and
 * must never be read as float: code that needs float32 weights (training,
 * prune, writing a model, the fusion window) loads with MF_WEIGHTS_F32
 * (mf_model_load) or calls mf_model_require_f32. */
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

/* --weights: how a frozen model holds its matrices.
 *   f32:  float32 (the map of an F32 file in place, other types converted);
 *   auto: the source's type when every matrix of the model (embedding, head,
 *         projections) is stored as BF16, or every one as F16; else f32;
 *   bf16: BF16, converting other types on load (one tensor at a time). */
typedef enum { MF_WEIGHTS_F32 = 0, MF_WEIGHTS_AUTO, MF_WEIGHTS_BF16 } mf_weights;
#define MF_WEIGHTS_HELP "frozen weights in memory: auto (default: the file's bf16/f16 when all its matrices are), bf16 or f32"
/* "auto", "bf16", "f32" -> 0 and *w; anything else -1. */
int mf_weights_parse(const char *s, mf_weights *w);
const char *mf_dtype_short(mf_dtype dt); /* "f32", "bf16", "f16" */

typedef struct mf_model {
    mf_config cfg;
    const mf_backend *be;
    int layer_begin, layer_end; /* owned layers */
    int first, last;            /* owns embedding / owns final norm + head */
    mf_dtype wdt;               /* type of tok_embd, lm_head and the layers' matrices: MF_DT_F32, MF_DT_BF16 or MF_DT_F16 */
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
    /* 1: every tensor pointer of a host backend that is not in `owned` lies in the source's
     * read-only file maps (mf_model_load), so a copy made of it may drop its pages (mf_mmap_drop) */
    int mapped;
} mf_model;

/* Load the tensors of layers [l0, l1) (plus embedding if first, head if last), float32. */
mf_model *mf_model_load(const mf_source *src, const mf_backend *be, int l0, int l1, int first, int last, mf_err *err);
/* The same, holding the matrices as `w` says (a frozen model). */
mf_model *mf_model_load_w(const mf_source *src, const mf_backend *be, int l0, int l1, int first, int last, mf_weights w,
                          mf_err *err);
/* The type mf_model_load_w holds a source's matrices in for `w` (the same on every rank). */
mf_dtype mf_weights_dtype(const mf_source *src, mf_weights w);
void mf_model_free(mf_model *m);
/* For code that reads weights on the host (slicing, writing a model): m itself
 * when its backend is a host one (*tmp = NULL); else a copy of m whose tensors
 * are host copies, downloaded (*tmp = the copy, on the cpu backend: free it
 * with mf_model_free). */
const mf_model *mf_model_host(const mf_model *m, mf_model **tmp);
/* Bytes of weights this stage holds (its layers, embedding/head if owned), at their held types. */
size_t mf_model_weight_bytes(const mf_model *m);
/* 0 when m holds float32 weights; else -1 and err: "<what> needs float32 weights, <path> is held in bf16". */
int mf_model_require_f32(const mf_model *m, const char *what, mf_err *err);

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
