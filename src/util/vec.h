/* vec.h - small helpers on float vectors shared by the commands. */
#ifndef MF_VEC_H
#define MF_VEC_H

/* Index of the largest of x[0..n) (the first one on ties); n >= 1. */
static inline int mf_argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

/* Index of the first NaN or infinity of x[0..n), -1 if every value is finite
 * (a NaN or Inf makes the sum of x*0 NaN: a fast pass, then a search). */
#include <math.h>
#include <stddef.h>
static inline long mf_first_nonfinite(const float *x, size_t n) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (size_t i = 0; i < n; i++) acc += x[i] * 0.0f;
    if (acc == 0.0f) return -1;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return (long)i;
    return -1;
}

#endif
