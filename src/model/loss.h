/* loss.h - next-token negative log-likelihood of a window of logits. */
#ifndef MF_LOSS_H
#define MF_LOSS_H

#include <stdint.h>
#include "backend/backend.h"

/* Sum over t of -log softmax(logits[t])[targets[t]], logits [T][V] on the
 * backend, targets host memory, each in [0, V); nll is host scratch [T] that
 * receives the per-token values (the backend's nll op). Summed in double in
 * token order. */
double mf_nll_sum(const mf_backend *be, const float *logits, const int32_t *targets, int T, int V, double *nll);

#endif
