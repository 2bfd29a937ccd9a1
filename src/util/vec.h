/* vec.h - small helpers on float vectors shared by the commands. */
#ifndef MF_VEC_H
#define MF_VEC_H

/* Index of the largest of x[0..n) (the first one on ties); n >= 1. */
static inline int mf_argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

#endif
