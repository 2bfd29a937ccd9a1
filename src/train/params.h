/* params.h - the trainable tensors a pipeline stage owns, with their gradients.
 *
 * A flat, ordered list built from an mf_model: the embedding (first stage),
 * every owned layer's tensors in a fixed order, the final norm and the untied
 * head (last stage). Names are the global Hugging Face names, so optimizer
 * state and checkpoints written by one rank layout can be read by another.
 * The parameter data pointers are the model's own weights (made writable:
 * tensors that were used in place from a memory map are copied first). */
#ifndef MF_PARAMS_H
#define MF_PARAMS_H

#include <stddef.h>
#include <stdint.h>
#include "model/model.h"

typedef struct mf_param {
    char name[128];
    int ndim;
    int64_t shape[2];
    size_t numel;
    float *data;   /* the model's weight (writable) */
    float *grad;   /* same shape, owned by the list */
} mf_param;

typedef struct mf_params {
    int n;
    mf_param *p;
    size_t total;  /* sum of numel */
    /* Lists built by mf_params_from_model: every gradient is a view into one
     * contiguous buffer (in list order), so a data-parallel sum is one call
     * (or one per bucket); owned layer l's gradients are
     * grad_flat[layer_off[l - layer_begin] .. layer_off[l - layer_begin + 1]). */
    const mf_backend *be;  /* allocator of grad_flat, NULL when the list owns no flat buffer */
    float *grad_flat;
    size_t grad_n;
    int layer_begin, n_layers;
    size_t *layer_off;     /* [n_layers + 1] */
} mf_params;

/* Make every weight of m writable (copy memory-mapped ones) and list them,
 * with their gradients in one zeroed buffer of m's backend. For a tied model
 * the embedding is listed once, by the stage that owns it (the first); with
 * P > 1 the last stage's copy used by the head gets its gradient folded in by
 * the trainer (mf_coll_tied_fold). */
void mf_params_from_model(mf_params *ps, mf_model *m);
void mf_params_free(mf_params *ps);
/* Append a tensor [d0] (d1 = 0) or [d0][d1] with the given data and gradient
 * buffers (either may be NULL; nothing is allocated; mf_params_free frees the
 * gradients of a list without a flat buffer). Returns the entry, valid until
 * the next push. */
mf_param *mf_params_push(mf_params *ps, const char *name, int64_t d0, int64_t d1, float *data, float *grad);
/* Make the weights of m's owned layers writable (copies of memory-mapped ones), without listing them. */
void mf_model_make_layers_writable(mf_model *m);
void mf_params_zero_grad(mf_params *ps);
/* Offset range [*off, *off + *n) in grad_flat of owned layer l's gradients (0 if not owned). */
int mf_params_layer_range(const mf_params *ps, int l, size_t *off, size_t *n);
/* Sum of squared gradient entries, in double: each tensor's sum (in index
 * order, the backend's sumsq when the list has one), added in list order. */
double mf_params_grad_sq(const mf_params *ps);
/* One buffer's sum of squares: ps->be's sumsq (x in its memory), else a host loop. */
double mf_params_sumsq(const mf_params *ps, const float *x, size_t n);
mf_param *mf_params_find(mf_params *ps, const char *name);
/* 0 if every value of every tensor (host or ps->be memory) is finite; else -1 with err
 * naming `where` (a file, "step 12"), the tensor, the element and the value. */
int mf_params_check_finite(const mf_params *ps, const char *where, mf_err *err);

#endif
