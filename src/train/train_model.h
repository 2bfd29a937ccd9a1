/* train_model.h - training forward and backward of one pipeline stage (CPU).
 *
 * mf_train_forward runs the stage's owned layers on one micro-batch of T
 * tokens (positions 0..T-1) and keeps what the backward needs; with
 * recompute = 1 it keeps only each layer's input and the backward recomputes
 * the layer forward (activation recomputation: same results, bit for bit).
 * The last stage adds the final norm + head (mf_train_head_forward /
 * mf_train_head_backward). mf_train_backward takes the gradient w.r.t. the
 * stage output and returns the gradient w.r.t. the stage input, accumulating
 * parameter gradients into the mf_params built from the same model (matched
 * by weight pointer: a weight not listed gets no gradient, i.e. is frozen).
 * The first stage also accumulates the embedding gradient.
 *
 * Pipeline use (lead's driver): stage p forwards x_out -> stage p+1 as x_in;
 * the last stage computes logits, a loss gradient dlogits, dx_out via the
 * head backward; each stage's dx_in goes to stage p-1 as its dx_out.
 * Tied embeddings: the last stage's head gradient goes into the param named
 * model.embed_tokens.weight of its own list (see params.h). */
#ifndef MF_TRAIN_MODEL_H
#define MF_TRAIN_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include "model/model.h"
#include "train/params.h"
#include "util/err.h"

/* What the backward of one layer needs, for T tokens. */
typedef struct mf_layer_acts {
    float *x_in;        /* [T][D] layer input (residual stream) */
    float *rms1, *rms2; /* [T] inverse rms of input_layernorm / post_attention_layernorm */
    float *xn1;         /* [T][D] input_layernorm output */
    float *q, *k, *v;   /* [T][H*hd], [T][KV*hd] x2: q and k after RoPE */
    float *att;         /* [T][H*hd] attention context (o_proj input) */
    float *x_mid;       /* [T][D] residual after attention */
    float *xn2;         /* [T][D] post_attention_layernorm output */
    float *gate, *up;   /* [T][F] MLP pre-activations */
} mf_layer_acts;

typedef struct mf_train_state {
    const mf_backend *be;   /* every buffer below (but ids and skip) is its memory */
    int max_T, T;           /* capacity; tokens of the last forward */
    int recompute;          /* 1: keep only layer inputs, recompute in backward */
    int n_layers;           /* owned layers */
    unsigned char *skip;    /* [cfg.n_layers] layers skipped by the last forward (identity) */
    int32_t *ids;           /* [max_T] first stage: ids of the last forward */
    mf_layer_acts *acts;    /* [n_layers] (recompute: only .x_in set) */
    mf_layer_acts work;     /* recompute: the layer being differentiated */
    float *x_out;           /* [T][D] stage output (before the final norm) */
    /* last stage */
    float *rms_f;           /* [T] */
    float *xn_f;            /* [T][D] final norm output */
    float *logits;          /* [T][V] */
    float *dlogits;         /* [T][V] scratch for the caller's loss gradient */
    float *dx;              /* [T][D] scratch for the caller (e.g. head backward output) */
    /* backward scratch */
    float *g;               /* [T][D] running gradient of the residual stream */
    float *dxn;             /* [T][D] */
    float *dq, *datt;       /* [T][H*hd] */
    float *dk, *dv;         /* [T][KV*hd] */
    float *h, *dh;          /* [T][F] swiglu output / its gradient */
    float *dgate, *dup;     /* [T][F] */
    float *scratch_out;     /* [T][D] recompute: discarded layer output */
    size_t bytes;           /* memory held */
    /* NULL, or called by mf_train_backward once owned layer `layer` (global
     * index) has added its parameter gradients: a data-parallel schedule
     * starts that layer's gradient sum while the backward goes on. */
    void (*on_layer_grads)(void *ctx, int layer);
    void *hook_ctx;
} mf_train_state;

/* State for micro-batches of up to max_T tokens, in the model's backend's memory
 * (a host backend for now: the optimizer is host code). */
mf_train_state *mf_train_state_new(const mf_model *m, int max_T, int recompute, mf_err *err);
void mf_train_state_free(mf_train_state *ts);

/* Forward through the owned layers for T tokens at positions 0..T-1. First
 * stage: embeds ids[T] (x_in unused); other stages: x_in [T][D]. skip[l] != 0
 * (global layer index, array of cfg.n_layers; NULL: none) makes layer l the
 * identity. Output in ts->x_out. -1 (err set) on bad T or ids. */
int mf_train_forward(const mf_model *m, mf_train_state *ts, const int32_t *ids, const float *x_in, int T,
                     const unsigned char *skip, mf_err *err);

/* Output [T][D] of owned layer l (global index) in the last forward, e.g. for
 * a hidden-state loss; the stage output for the last owned layer. NULL if not owned. */
const float *mf_train_layer_output(const mf_model *m, const mf_train_state *ts, int l);

/* Last stage: final norm + head on ts->x_out; returns ts->logits [T][V]. */
float *mf_train_head_forward(const mf_model *m, mf_train_state *ts);

/* Last stage: dlogits [T][V] -> dx [T][D] (written: gradient w.r.t. ts->x_out);
 * accumulates the grads of model.norm.weight and lm_head.weight (or the tied
 * model.embed_tokens.weight). dlogits may be ts->dlogits, dx may be ts->dx. */
void mf_train_head_backward(const mf_model *m, mf_train_state *ts, mf_params *ps, const float *dlogits, float *dx);

/* Backward through the owned layers of the last forward: dx_out [T][D] ->
 * dx_in [T][D] (written; NULL: not needed, e.g. on the first stage). dx_out
 * may alias dx_in. dlayer_out: NULL, or per owned layer (index l - layer_begin)
 * NULL or an extra gradient [T][D] w.r.t. that layer's output (hidden-state
 * losses), added before going through the layer. The first stage accumulates
 * the embedding gradient. */
void mf_train_backward(const mf_model *m, mf_train_state *ts, mf_params *ps, const float *dx_out, float *dx_in,
                       const float *const *dlayer_out);

#endif
