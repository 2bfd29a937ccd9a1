/* loss_cost.c: what the last pipeline stage's loss costs, in GEMM FLOPs.
 *
 * The pipeline partition (src/train/partition.c) and the planner (src/plan/plan.c)
 * weigh a stage by FLOPs at one GEMM rate. The loss over the vocabulary is no GEMM:
 * exp, max and sums over T x V logits, bound by the vector units and memory. This
 * probe times, on one window of SmolLM2-135M's last stage (T = BENCH_T tokens,
 * default 256; V = 49152; D = 576), each ~BENCH_SECONDS (default 1):
 *   head:    cblas_sgemm logits[T][V] = x[T][D] . W[V][D]^T (the LM head, the GEMM rate);
 *   kl:      mf_loss_kl with its gradient (distill's default loss, tau 1);
 *   ce:      mf_loss_ce with its gradient (distill --loss ce, fuse's logits loss);
 * and prints ns per logit and the GEMM-equivalent FLOPs per logit (ns x the head's
 * GFLOP/s), then one JSON line with all of it, the OpenBLAS core and threads.
 *
 * Build: make build/bench/loss_cost; run: bench/loss_cost.sh (RUNS runs, raw JSON
 * under bench/results/loss-cost-DATE/). */
#define _POSIX_C_SOURCE 199309L
#include <cblas.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "backend/cpu_backward.h"
#include "backend/cpu_blas.h"
#include "bench_json.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* uniform in [-scale, scale), a fixed LCG */
static float *fill(size_t n, unsigned seed, float scale) {
    float *p = malloc(n * sizeof *p);
    if (!p) { fprintf(stderr, "loss_cost: out of memory (%zu floats)\n", n); exit(1); }
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = ((float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f) * scale;
    }
    return p;
}

typedef struct {
    int T, V, D;
    float *x, *w, *zs, *zt, *d;
    int32_t *y;
} work;

enum { HEAD, KL, CE, NWHAT };
static const char *WHAT[NWHAT] = {"head", "kl", "ce"};

static double sink; /* keeps the losses live */

static void call(int what, const work *k) {
    if (what == HEAD)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k->T, k->V, k->D, 1.0f, k->x, k->D, k->w, k->D, 0.0f,
                    k->zs, k->V);
    else if (what == KL)
        sink += mf_loss_kl(k->zs, k->zt, k->T, k->V, 1.0f, 0, k->d);
    else
        sink += mf_loss_ce(k->zs, k->y, k->T, k->V, 0, k->d);
}

/* seconds per call, repeated for at least min_s after one warm-up call */
static double time_call(int what, const work *k, double min_s) {
    call(what, k);
    long reps = 0;
    double t0 = now_s(), t;
    do {
        call(what, k);
        reps++;
        t = now_s() - t0;
    } while (t < min_s);
    return t / reps;
}

int main(int argc, char **argv) {
    (void)argc;
    mf_blas_ensure_core(argv); /* the kernels bin/minifuse runs */
    const char *et = getenv("BENCH_T"), *es = getenv("BENCH_SECONDS");
    work k = {et ? atoi(et) : 256, 49152, 576, NULL, NULL, NULL, NULL, NULL, NULL};
    double min_s = es ? atof(es) : 1.0;
    if (k.T < 1 || !(min_s > 0)) { fprintf(stderr, "loss_cost: BENCH_T and BENCH_SECONDS must be positive\n"); return 2; }
    size_t n = (size_t)k.T * k.V;
    k.x = fill((size_t)k.T * k.D, 1, 1.0f);
    k.w = fill((size_t)k.V * k.D, 2, 0.05f);
    k.zt = fill(n, 3, 8.0f); /* logits of a few units' spread, as a trained head gives */
    k.d = fill(n, 4, 1.0f);
    k.y = malloc((size_t)k.T * sizeof *k.y);
    if (!k.y) { fprintf(stderr, "loss_cost: out of memory\n"); return 1; }
    for (int t = 0; t < k.T; t++) k.y[t] = (int32_t)((t * 7919u) % (unsigned)k.V);
    k.zs = fill(n, 5, 1.0f);
    double sec[NWHAT];
    /* the head writes zs; the losses then read the head's output (finite, a realistic spread) */
    for (int w = 0; w < NWHAT; w++) sec[w] = time_call(w, &k, min_s);
    double gflops = 2.0 * k.T * k.V * k.D / sec[HEAD] * 1e-9;
    json_t *j = json_object();
    for (int w = 0; w < NWHAT; w++) {
        double ns = sec[w] / (double)n * 1e9;
        printf("%-4s %10.3f ms/window  %8.3f ns/logit", WHAT[w], sec[w] * 1e3, ns);
        if (w == HEAD) printf("  %7.2f GFLOP/s\n", gflops);
        else printf("  %7.1f GEMM FLOPs/logit\n", ns * gflops);
        json_object_set_new(j, WHAT[w], json_pack("{s:f, s:f, s:f}", "seconds", sec[w], "ns_per_logit", ns,
                                                  "gemm_flops_per_logit", ns * gflops));
    }
    json_object_set_new(j, "head_gflops", json_real(gflops));
    json_object_set_new(j, "T", json_integer(k.T));
    json_object_set_new(j, "V", json_integer(k.V));
    json_object_set_new(j, "D", json_integer(k.D));
    json_object_set_new(j, "finite", json_boolean(isfinite(sink)));
    bench_print_json(j);
    free(k.x); free(k.w); free(k.zs); free(k.zt); free(k.d); free(k.y);
    return 0;
}
