/* bf16_gemm.c: float32 sgemm against the half-precision weight product (linear_h).
 *
 * For each shape y[M][N] = x[M][K] . W[N][K]^T it times, ~BENCH_SECONDS (default
 * 0.5) each after a warm-up:
 *   sgemm:   cblas_sgemm with W in float32 (what --weights f32 runs);
 *   blocked: the CPU backend's linear_h with W in bf16 (rows converted to
 *            float32 a block at a time, then sgemm; src/backend/cpu_half.c);
 *   sbgemm:  linear_h through OpenBLAS cblas_sbgemm (x rounded to bf16 too),
 *            null when this OpenBLAS does not export it.
 * (M = BENCH_M, default 256) and prints one line per shape, then one JSON line: per shape and method
 * GFLOP/s, plus the forward-weighted aggregate (SmolLM2-135M at ctx 256:
 * 30 layers x {q,k,v,o,gate,up,down} + the head), the OpenBLAS core and threads.
 *
 * Build/run: bench/bf16_gemm.sh (5 runs, raw JSON under bench/results/bf16-DATE/). */
#define _POSIX_C_SOURCE 199309L
#include <cblas.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu_blas.h"
#include "bench_json.h"
#include "backend/cpu_half.h"
#include "util/half.h"

typedef struct {
    const char *name;
    int m, n, k, count;
    double gf[3]; /* sgemm, blocked, sbgemm (0: not run) */
} shape;

static const char *METHOD[3] = {"sgemm", "blocked", "sbgemm"};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *fill(size_t n, unsigned seed) {
    float *p = malloc(n * sizeof *p);
    if (!p) { fprintf(stderr, "bf16_gemm: out of memory (%zu floats)\n", n); exit(1); }
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)((seed >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
    return p;
}

static void call(int method, const shape *s, float *y, const float *x, const float *w, const uint16_t *wh) {
    if (method == 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->m, s->n, s->k, 1.0f, x, s->k, w, s->k, 0.0f, y, s->n);
    else
        mf_cpu_linear_h_mode(method == 1 ? MF_HGEMM_BLOCKED : MF_HGEMM_SBGEMM, y, x, wh, MF_DT_BF16, NULL, s->m, s->k,
                             s->n, 0);
}

static void bench(shape *s, double min_s, int have_sbgemm) {
    float *x = fill((size_t)s->m * s->k, 1), *w = fill((size_t)s->n * s->k, 2);
    float *y = calloc((size_t)s->m * s->n, sizeof *y);
    uint16_t *wh = malloc((size_t)s->n * s->k * sizeof *wh);
    if (!y || !wh) { fprintf(stderr, "bf16_gemm: out of memory\n"); exit(1); }
    for (size_t i = 0; i < (size_t)s->n * s->k; i++) wh[i] = mf_f32_to_bf16(w[i]);
    for (int meth = 0; meth < 3; meth++) {
        s->gf[meth] = 0;
        if (meth == 2 && !have_sbgemm) continue;
        call(meth, s, y, x, w, wh); /* warm-up */
        long reps = 0;
        double t0 = now_s(), t;
        do {
            call(meth, s, y, x, w, wh);
            reps++;
            t = now_s() - t0;
        } while (t < min_s);
        s->gf[meth] = 2.0 * s->m * s->n * s->k / (t / reps) * 1e-9;
    }
    printf("%-5s M=%-4d N=%-6d K=%-5d sgemm %7.2f  blocked-bf16 %7.2f  sbgemm %s GFLOP/s\n", s->name, s->m, s->n, s->k,
           s->gf[0], s->gf[1], have_sbgemm ? "measured" : "n/a");
    fflush(stdout);
    free(x); free(w); free(y); free(wh);
}

int main(int argc, char **argv) {
    (void)argc;
    mf_blas_ensure_core(argv); /* the kernels bin/minifuse runs */
    const char *em = getenv("BENCH_M"); /* tokens per product: 256 (eval, default) or 1 (generate) */
    const int L = 30, T = em ? atoi(em) : 256;
    if (T < 1) { fprintf(stderr, "bf16_gemm: BENCH_M=%s must be a positive integer\n", em); return 2; }
    shape s[] = {
        {"q", T, 576, 576, L, {0}},     {"k", T, 192, 576, L, {0}},    {"v", T, 192, 576, L, {0}},
        {"o", T, 576, 576, L, {0}},     {"gate", T, 1536, 576, L, {0}}, {"up", T, 1536, 576, L, {0}},
        {"down", T, 576, 1536, L, {0}}, {"head", T, 49152, 576, 1, {0}},
    };
    int ns = (int)(sizeof s / sizeof s[0]);
    const char *e = getenv("BENCH_SECONDS");
    double min_s = e ? atof(e) : 0.5;
    int have_sbgemm = mf_hgemm_sbgemm_available();
    for (int i = 0; i < ns; i++) bench(&s[i], min_s, have_sbgemm);
    json_t *j = json_object(), *arr = json_array(), *agg = json_object();
    double flop = 0, sec[3] = {0};
    for (int i = 0; i < ns; i++) {
        double f = s[i].count * 2.0 * s[i].m * s[i].n * s[i].k;
        flop += f;
        json_t *o = json_pack("{s:s, s:i, s:i, s:i, s:i}", "name", s[i].name, "m", s[i].m, "n", s[i].n, "k", s[i].k,
                              "count", s[i].count);
        for (int m = 0; m < 3; m++) {
            json_object_set_new(o, METHOD[m], s[i].gf[m] > 0 ? json_real(s[i].gf[m]) : json_null());
            if (s[i].gf[m] > 0) sec[m] += f / (s[i].gf[m] * 1e9);
        }
        json_array_append_new(arr, o);
    }
    for (int m = 0; m < 3; m++) json_object_set_new(agg, METHOD[m], sec[m] > 0 ? json_real(flop / sec[m] * 1e-9) : json_null());
    json_object_set_new(j, "shapes", arr);
    json_object_set_new(j, "weighted_gflops", agg);
    json_object_set_new(j, "m", json_integer(T));
    json_object_set_new(j, "sbgemm_available", json_boolean(have_sbgemm));
    bench_print_json(j);
    return 0;
}
