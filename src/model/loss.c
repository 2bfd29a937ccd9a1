#include "model/loss.h"

double mf_nll_sum(const mf_backend *be, const float *logits, const int32_t *targets, int T, int V, double *lse) {
    be->logsumexp(logits, T, V, lse);
    double s = 0;
    for (int t = 0; t < T; t++) {
        const float *p = logits + (size_t)t * V + targets[t];
        float z;
        if (be->is_host) z = *p;
        else be->download(&z, p, sizeof z); /* one logit per token from the device */
        s += lse[t] - (double)z;
    }
    return s;
}
