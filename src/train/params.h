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
} mf_params;

/* Make every weight of m writable (copy memory-mapped ones) and list them. For
 * a tied model the embedding is listed once, by the stage that owns it (the
 * first); with P > 1 the last stage's copy used by the head gets its gradient
 * folded in by the trainer (see distill). */
void mf_params_from_model(mf_params *ps, mf_model *m);
void mf_params_free(mf_params *ps);
/* Append a tensor [d0] (d1 = 0) or [d0][d1] with the given data and gradient
 * buffers (either may be NULL; nothing is allocated). Returns the entry, valid
 * until the next push. */
mf_param *mf_params_push(mf_params *ps, const char *name, int64_t d0, int64_t d1, float *data, float *grad);
/* Make the weights of m's owned layers writable (copies of memory-mapped ones), without listing them. */
void mf_model_make_layers_writable(mf_model *m);
void mf_params_zero_grad(mf_params *ps);
/* Sum of squared gradient entries, in double, in list order. */
double mf_params_grad_sq(const mf_params *ps);
mf_param *mf_params_find(mf_params *ps, const char *name);

#endif
