/* cpu_half.c - half-precision weight ops of the CPU backend (see cpu_half.h). */
#include "backend/cpu_half.h"

#include <cblas.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"
#include "util/half.h"

/* Rows of W converted at a time: about 128 Ki floats (512 KiB), a multiple of 16. */
static int block_rows(int n_in, int n_out) {
    int r = (128 * 1024 / (n_in > 0 ? n_in : 1)) & ~15;
    if (r < 16) r = 16;
    return r < n_out ? r : n_out;
}

void mf_half_to_f32(float *dst, const uint16_t *src, mf_dtype dt, size_t n) {
    if (dt == MF_DT_BF16) {
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)src[i] << 16;
            memcpy(dst + i, &u, 4);
        }
    } else {
        for (size_t i = 0; i < n; i++) dst[i] = mf_fp16_to_f32(src[i]);
    }
}

static void linear_blocked(float *y, const float *x, const uint16_t *w, mf_dtype dt, int T, int n_in, int n_out,
                           float beta) {
    int nb = block_rows(n_in, n_out), n_blocks = (n_out + nb - 1) / nb;
#pragma omp parallel
    {
        float *wf = malloc((size_t)nb * n_in * sizeof *wf); /* [nb][n_in] this thread's converted rows */
        if (!wf) mf_fatal("out of memory for a linear_h block [%d][%d]", nb, n_in);
#pragma omp for schedule(static)
        for (int blk = 0; blk < n_blocks; blk++) {
            int o0 = blk * nb, rows = o0 + nb <= n_out ? nb : n_out - o0;
            mf_half_to_f32(wf, w + (size_t)o0 * n_in, dt, (size_t)rows * n_in);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, rows, n_in, 1.0f, x, n_in, wf, n_in, beta, y + o0,
                        n_out);
        }
        free(wf);
    }
}

typedef void (*sbgemm_fn)(int, int, int, int, int, int, float, const uint16_t *, int, const uint16_t *, int, float,
                          float *, int);

static sbgemm_fn find_sbgemm(void) { return (sbgemm_fn)dlsym(RTLD_DEFAULT, "cblas_sbgemm"); }

int mf_hgemm_sbgemm_available(void) { return find_sbgemm() != NULL; }

static void linear_sbgemm(float *y, const float *x, const uint16_t *w, int T, int n_in, int n_out, float beta) {
    sbgemm_fn f = find_sbgemm();
    if (!f)
        mf_fatal("MINIFUSE_HALF_GEMM=sbgemm: this OpenBLAS (%s) has no cblas_sbgemm (built without BUILD_BFLOAT16); "
                 "unset it to use the blocked conversion", openblas_get_config());
    uint16_t *xb = malloc((size_t)T * n_in * sizeof *xb); /* [T][n_in] x rounded to bf16 */
    if (!xb) mf_fatal("out of memory for sbgemm input [%d][%d]", T, n_in);
    for (size_t i = 0; i < (size_t)T * n_in; i++) xb[i] = mf_f32_to_bf16(x[i]);
    f(CblasRowMajor, CblasNoTrans, CblasTrans, T, n_out, n_in, 1.0f, xb, n_in, w, n_in, beta, y, n_out);
    free(xb);
}

void mf_cpu_linear_h_mode(mf_hgemm_mode mode, float *y, const float *x, const uint16_t *w, mf_dtype dt, const float *b,
                          int T, int n_in, int n_out, int accumulate) {
    if (dt != MF_DT_BF16 && dt != MF_DT_F16) mf_fatal("linear_h: weight type %d is not bf16 or f16", (int)dt);
    float beta = 0.0f;
    if (accumulate) beta = 1.0f;
    else if (b) {
        for (int t = 0; t < T; t++) memcpy(y + (size_t)t * n_out, b, (size_t)n_out * sizeof *y);
        beta = 1.0f;
    }
    if (mode == MF_HGEMM_SBGEMM && dt == MF_DT_BF16) linear_sbgemm(y, x, w, T, n_in, n_out, beta);
    else linear_blocked(y, x, w, dt, T, n_in, n_out, beta);
    if (accumulate && b)
        for (int t = 0; t < T; t++)
            for (int i = 0; i < n_out; i++) y[(size_t)t * n_out + i] += b[i];
}

int mf_hgemm_mode_parse(const char *s) {
    if (!s || !*s || strcmp(s, "blocked") == 0) return MF_HGEMM_BLOCKED;
    if (strcmp(s, "sbgemm") == 0) return MF_HGEMM_SBGEMM;
    return -1;
}

void mf_cpu_linear_h(float *y, const float *x, const uint16_t *w, mf_dtype dt, const float *b, int T, int n_in,
                     int n_out, int accumulate) {
    const char *env = getenv("MINIFUSE_HALF_GEMM");
    int mode = mf_hgemm_mode_parse(env);
    if (mode < 0) mf_fatal("MINIFUSE_HALF_GEMM=%s: expected blocked or sbgemm", env);
    mf_cpu_linear_h_mode((mf_hgemm_mode)mode, y, x, w, dt, b, T, n_in, n_out, accumulate);
}

void mf_cpu_embed_h(float *x, const uint16_t *table, mf_dtype dt, const int32_t *ids, int T, int C) {
    for (int t = 0; t < T; t++) mf_half_to_f32(x + (size_t)t * C, table + (size_t)ids[t] * C, dt, (size_t)C);
}
