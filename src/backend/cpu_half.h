/* cpu_half.h - the CPU backend's half-precision weight ops (linear_h, embed_h).
 *
 * W[n_out][n_in] holds 16-bit values (MF_DT_BF16 or MF_DT_F16); x, y, b are
 * float32 and products accumulate in float32. Two ways to run linear_h:
 *   blocked (default): a block of W's rows is converted to float32 in a
 *     per-thread scratch [rows][n_in] (about 512 KiB) and multiplied with
 *     cblas_sgemm; no float32 copy of W ever exists as a whole. Threads take
 *     blocks of output columns, so the result does not depend on how they
 *     are split (each y[t][o] is one sgemm dot over n_in).
 *   sbgemm (MINIFUSE_HALF_GEMM=sbgemm, BF16 only): OpenBLAS's cblas_sbgemm,
 *     which also rounds x to bf16 (an extra error of ~2^-9 relative per
 *     product). Looked up at run time: Debian's OpenBLAS 0.3.21 is built
 *     without BUILD_BFLOAT16 and does not export it, and asking for it then
 *     is a one-line fatal error naming the library. */
#ifndef MF_CPU_HALF_H
#define MF_CPU_HALF_H

#include <stddef.h>
#include <stdint.h>
#include "util/dtype.h"

typedef enum { MF_HGEMM_BLOCKED = 0, MF_HGEMM_SBGEMM = 1 } mf_hgemm_mode;

/* MINIFUSE_HALF_GEMM: unset, "" or "blocked" -> blocked, "sbgemm" -> sbgemm;
 * another value is -1 (the caller reports it). */
int mf_hgemm_mode_parse(const char *s);
/* Whether this process's OpenBLAS exports cblas_sbgemm. */
int mf_hgemm_sbgemm_available(void);

/* linear_h with an explicit mode (the benchmark); the backend's linear_h reads MINIFUSE_HALF_GEMM. */
void mf_cpu_linear_h_mode(mf_hgemm_mode mode, float *y, const float *x, const uint16_t *w, mf_dtype dt, const float *b,
                          int T, int n_in, int n_out, int accumulate);
void mf_cpu_linear_h(float *y, const float *x, const uint16_t *w, mf_dtype dt, const float *b, int T, int n_in,
                     int n_out, int accumulate);
/* x[T][C] = float(table[ids[t]][C]) */
void mf_cpu_embed_h(float *x, const uint16_t *table, mf_dtype dt, const int32_t *ids, int T, int C);
/* dst[n] = float(src[n]) for a 16-bit type dt */
void mf_half_to_f32(float *dst, const uint16_t *src, mf_dtype dt, size_t n);

#endif
