/* expf_loop.c - not part of the program: tests/test_vectorize.c compiles it with the build's own
 * CFLAGS and asks gcc whether this loop, the shape of the hot loops that call mf_expf (softmax,
 * SiLU, log-sum-exp, the losses), was vectorized. Keep the loop on the line the test names. */
#include "util/fastmath.h"

float mf_probe_expf_sum(const float *x, int n, float shift);
float mf_probe_expf_sum(const float *x, int n, float shift) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += mf_expf(x[i] - shift); /* line 10: the probe */
    return s;
}
