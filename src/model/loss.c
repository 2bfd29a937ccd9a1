#include "model/loss.h"

double mf_nll_sum(const mf_backend *be, const float *logits, const int32_t *targets, int T, int V, double *nll) {
    be->nll(logits, targets, T, V, nll); /* on a device: T doubles come back, not the logits */
    double s = 0;
    for (int t = 0; t < T; t++) s += nll[t];
    return s;
}
