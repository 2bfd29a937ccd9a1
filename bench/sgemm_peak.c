/* sgemm_peak.c: standalone OpenBLAS cblas_sgemm throughput probe.
 *
 * Measures GFLOP/s of C[M][N] = A[M][K] * W[N][K]^T (row-major, W given like
 * a Linear layer's weight, CblasTrans) for a list of shapes, each repeated
 * until about 1 s has passed, and prints one line per shape plus a final JSON
 * line with a FLOP-weighted aggregate (and the OpenBLAS core it ran, chosen as
 * bin/minifuse chooses it: src/backend/cpu_blas.c).
 *
 * Build: build_sgemm_peak in bench/env.sh (mpicc ... sgemm_peak.c
 *        src/backend/cpu_blas.c src/util/log.c -lopenblas -ljansson)
 * Run:   OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 ./sgemm_peak [M,N,K ...]
 *
 * With no arguments it uses one SmolLM2-135M forward at ctx 256: M = 256
 * tokens and (N,K) in {q/o (576,576), k/v (192,576), gate/up (1536,576),
 * down (576,1536), head (49152,576)}, weighted by how often each matmul runs
 * in a forward (30 layers x {q,k,v,o,gate,up,down} + 1 head). With arguments,
 * every given shape has weight 1.
 */
#define _POSIX_C_SOURCE 199309L
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "backend/cpu_blas.h"

typedef struct {
    const char *name;
    int m, n, k;
    int count;          /* how many times this matmul runs in one forward */
    double gflops;      /* measured */
    double sec_per_call;
} shape;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *alloc_fill(size_t n, unsigned seed) {
    float *p = malloc(n * sizeof(float));
    if (!p) { fprintf(stderr, "sgemm_peak: out of memory (%zu floats)\n", n); exit(1); }
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)((seed >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
    return p;
}

/* Times c[m][n] = a[m][k] * w[n][k]^T until ~min_s seconds. */
static void bench_shape(shape *s, double min_s) {
    float *a = alloc_fill((size_t)s->m * s->k, 1);
    float *w = alloc_fill((size_t)s->n * s->k, 2);
    float *c = calloc((size_t)s->m * s->n, sizeof(float));
    if (!c) { fprintf(stderr, "sgemm_peak: out of memory\n"); exit(1); }
    /* warm-up */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->m, s->n, s->k,
                1.0f, a, s->k, w, s->k, 0.0f, c, s->n);
    long reps = 0;
    double t0 = now_s(), t = 0.0;
    do {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->m, s->n, s->k,
                    1.0f, a, s->k, w, s->k, 0.0f, c, s->n);
        reps++;
        t = now_s() - t0;
    } while (t < min_s);
    double flop = 2.0 * s->m * s->n * s->k;
    s->sec_per_call = t / reps;
    s->gflops = flop / s->sec_per_call * 1e-9;
    printf("%-6s M=%-5d N=%-6d K=%-5d reps=%-7ld %8.2f GFLOP/s  %10.3f us/call\n",
           s->name, s->m, s->n, s->k, reps, s->gflops, s->sec_per_call * 1e6);
    fflush(stdout);
    free(a); free(w); free(c);
}

static int parse_shapes(int argc, char **argv, shape *out, int max) {
    int n = 0;
    for (int i = 1; i < argc && n < max; i++) {
        shape s = {"arg", 0, 0, 0, 1, 0, 0};
        if (sscanf(argv[i], "%d,%d,%d", &s.m, &s.n, &s.k) != 3 ||
            s.m <= 0 || s.n <= 0 || s.k <= 0) {
            fprintf(stderr, "sgemm_peak: bad shape '%s' (want M,N,K positive ints)\n", argv[i]);
            exit(2);
        }
        out[n++] = s;
    }
    return n;
}

static const char *env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return v ? v : dflt;
}

int main(int argc, char **argv) {
    mf_blas_ensure_core(argv); /* the kernels bin/minifuse runs (src/backend/cpu_blas.h) */
    enum { MAXS = 64 };
    shape shapes[MAXS];
    int ns;
    const int L = 30, T = 256;
    if (argc > 1) {
        ns = parse_shapes(argc, argv, shapes, MAXS);
    } else {
        shape d[] = {
            {"q",    T, 576,   576,  L, 0, 0}, {"k",    T, 192,   576,  L, 0, 0},
            {"v",    T, 192,   576,  L, 0, 0}, {"o",    T, 576,   576,  L, 0, 0},
            {"gate", T, 1536,  576,  L, 0, 0}, {"up",   T, 1536,  576,  L, 0, 0},
            {"down", T, 576,   1536, L, 0, 0}, {"head", T, 49152, 576,  1, 0, 0},
        };
        ns = (int)(sizeof d / sizeof d[0]);
        memcpy(shapes, d, sizeof d);
    }
    /* identical shapes (q/o, k/v, gate/up) are measured separately: cheap, and
       shows run-to-run noise */
    for (int i = 0; i < ns; i++) bench_shape(&shapes[i], 1.0);

    double flop = 0.0, sec = 0.0;
    for (int i = 0; i < ns; i++) {
        flop += shapes[i].count * 2.0 * shapes[i].m * shapes[i].n * shapes[i].k;
        sec += shapes[i].count * shapes[i].sec_per_call;
    }
    printf("{\"impl\":\"openblas_sgemm\",\"openblas_threads\":\"%s\",\"omp_threads\":\"%s\","
           "\"config\":\"%s\",\"blas_core\":\"%s\",\"blas_core_source\":\"%s\",\"shapes\":[",
           env_or("OPENBLAS_NUM_THREADS", ""), env_or("OMP_NUM_THREADS", ""),
           openblas_get_config(), mf_blas_core(), mf_blas_core_source());
    for (int i = 0; i < ns; i++)
        printf("%s{\"name\":\"%s\",\"M\":%d,\"N\":%d,\"K\":%d,\"count\":%d,\"gflops\":%.3f}",
               i ? "," : "", shapes[i].name, shapes[i].m, shapes[i].n, shapes[i].k,
               shapes[i].count, shapes[i].gflops);
    printf("],\"forward_gflop\":%.4f,\"forward_matmul_seconds\":%.6f,"
           "\"aggregate_gflops\":%.3f}\n", flop * 1e-9, sec, flop / sec * 1e-9);
    return 0;
}
