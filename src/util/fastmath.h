/* fastmath.h - a vectorizable expf for the hot loops (softmax, SiLU, logsumexp).
 *
 * Cephes-style: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact
 * reduction), exp(r) by a degree-6 polynomial, 2^n put in the exponent bits.
 * Max relative error about 2 ulp over [-87, 88]; below -87 returns 0, above 88
 * returns +inf. Plain C that gcc vectorizes (no libm call), so loops using it
 * run 8 or 16 lanes wide: under -fno-trapping-math (the Makefile's OPT), without
 * which gcc 12 will not if-convert the clamps and runs it a lane at a time, about
 * 6x slower (bench/results/loss-cost-20261207-0150-before and -after). */
#ifndef MF_FASTMATH_H
#define MF_FASTMATH_H

#include <stdint.h>

static inline float mf_expf(float x) {
    const float hi = 88.3762626647949f, lo = -87.3365447504019f;
    float xc = x > hi ? hi : (x < lo ? lo : x);
    /* round to nearest by the 1.5*2^23 trick: vectorizes, unlike floorf */
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } s = {.i = ((int32_t)n + 127) << 23};
    float y = p * s.f;
    y = x < lo ? 0.0f : y;
    return x > hi ? __builtin_inff() : y;
}

#endif
