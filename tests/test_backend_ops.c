/* test_backend_ops.c - op parity of every backend against the reference backend
 * (src/backend/ref.c), in the manner of ggml's test-backend-ops; docs/backend_ops.md.
 *
 * A table of op cases (CASES): each builds seeded random inputs, runs the op
 * on "ref" and on every backend named in BACKENDS (inputs put there with
 * alloc/upload, outputs fetched with download, host arguments - token ids,
 * lse, inv_freq - in host memory, as backend.h says; rinv is backend memory), and compares every output by
 *     NMSE = sum (x - ref)^2 / sum ref^2    (sum ref^2 = 0: the sum (x - ref)^2)
 * against the op's threshold. Gradients that accumulate start from random
 * values; outputs that are written start from random junk (a backend that adds
 * instead of writing fails). One line per case and output is printed.
 *
 * Thresholds: an fp32 backend against the double reference. "worst" is the
 * largest NMSE the CPU backend gave over these cases and 30 other seeds; the
 * thresholds keep a margin of 5x..200x over it (docs/backend_ops.md says why
 * per op). linear_h/embed_h take 16-bit weights on both sides (the reference
 * widens the same bf16/f16 values exactly), so they keep fp32 thresholds on
 * cpu. A backend may have its own threshold for an op (DEV_THR: the CUDA
 * attention 1e-10, its linear_h 1e-5 for x rounded to bf16).
 *     op               threshold   worst (cpu)  dominated by
 *     linear           1e-11       1.1e-13      sgemm: fp32 sums of <= 512 products
 *     linear_bwd       1e-10       2.2e-12      1-element dW += dy x cancelling its start; 8.3e-14 else
 *     rmsnorm          1e-12       2.0e-14      fp32 sum of squares
 *     rmsnorm_bwd      1e-11       5.2e-13      C = 2 (dx a difference of close terms); 6e-15 for C >= 7
 *     rope, rope_bwd   1e-9        1.6e-10      fp32 angle pos*inv_freq at position ~2047; 2.3e-13 below 128
 *     attention        1e-11       1.6e-13      fp32 scores, mf_expf, fp32 softmax sums
 *     attention_bwd    1e-11       2.0e-13
 *     swiglu           1e-12       3.2e-14      mf_expf (~2 ulp)
 *     swiglu_bwd       1e-11       8.0e-13      n = 1 (dg cancels near g = -1.28); 3.1e-14 for n >= 127
 *     add, embed       0           0            one rounding or a copy: exact
 *     linear_h         1e-11       see docs     as linear: ref converts the same 16-bit weights exactly,
 *                                               so only fp32 accumulation error remains
 *     embed_h          0           0            an exact widening of 16-bit values
 *     embed_bwd        1e-12       8.4e-16      fp32 sums of repeated rows
 *     logsumexp        1e-13       1.5e-15      mf_expf, double sums
 *     nll              1e-13       2.7e-17      logsumexp minus the target's logit
 *     kl_rows          1e-12       5.6e-17      E_p[d] + log E_p[exp(-d)], no logsumexp; argmax agreement exact
 *     loss_ce          1e-12       4.5e-15      value and gradient
 *     loss_kl          1e-11       2.4e-13      p_s - p_t of close probabilities, fp32 exp
 *     loss_kl_topk     1e-12       3.9e-14
 *     loss_cosine      1e-12       0            the same double formulas on both sides
 *     loss_nmse        1e-12       0
 *     fuse_weight      1e-11       1.4e-13      sgemm over r
 *     fuse_weight_bwd  1e-11       6.8e-14      sgemm over out / in
 *     loss_kl_batch    1e-12       7.7e-28      double on both sides
 *     adamw            1e-12       1.2e-14      optim.c's float formula vs the same in double
 *     sumsq            1e-13       0            double sums on both sides (same order on cpu)
 *
 * Then the reference itself (ref_* tests): hand-computed values and every
 * backward against central differences of its forward. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "util/half.h"

/* The backends compared with "ref" ("devsim": the cpu ops behind device memory
 * rules, so its inputs and outputs go through upload/download like a GPU's). A name mf_backend_get does not know in
 * this build is skipped with a line saying so ("cuda" outside make CUDA=1), and
 * so is "cuda" on a host without a CUDA device ("skipped: no CUDA device"). */
static const char *const BACKENDS[] = {"cpu", "devsim", "cuda"};
#define N_BACKENDS (sizeof BACKENDS / sizeof BACKENDS[0])

/* The backend of that name, or NULL with why[] saying why it is skipped. */
static const mf_backend *backend_or_skip(const char *name, char *why, size_t n) {
#ifdef MF_CUDA
    if (strcmp(name, "cuda") == 0) {
        char e[200];
        if (mf_cuda_device_count(e, sizeof e) <= 0) {
            snprintf(why, n, "skipped: no CUDA device (%s)", e);
            return NULL;
        }
    }
#endif
    const mf_backend *be = mf_backend_get(name);
    if (!be) snprintf(why, n, "not in this build: skipped");
    return be;
}

TestSuite(backend_ops, .timeout = 120);

/* ------------------------------------------------------------------ random */

typedef struct { uint64_t s; } rng;
static uint64_t rng_next(rng *r) { /* splitmix64 */
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float rng_unif(rng *r, float lo, float hi) { return lo + (hi - lo) * (float)((rng_next(r) >> 40) * 0x1p-24); }
static int rng_below(rng *r, int n) { return (int)(rng_next(r) % (uint64_t)n); }

/* ------------------------------------------------------------- the cases */

enum {
    F_BIAS = 1,      /* linear: with a bias */
    F_NO_RINV = 2,   /* rmsnorm: rinv NULL */
    F_NO_DX = 4,     /* backward: input gradient NULL */
    F_NO_DW = 8,     /* backward: weight gradient NULL */
    F_NO_DB = 16,    /* linear_bwd: bias gradient NULL */
    F_NO_GRAD = 32,  /* losses: gradient NULL (value only) */
    F_IGNORE = 64,   /* loss_ce: some targets out of range; embed_bwd: some ids out of range */
    F_NO_P = 128,    /* fuse_weight: P NULL */
    F_TINY = 256,    /* cosine / nmse: a zero row and a row of norm ~1e-8 in b (the clamped norm);
                        rmsnorm: x of magnitude ~1e-3 (eps matters) */
    F_F16 = 512,     /* linear_h, embed_h: IEEE half weights (default bf16) */
    F_CLOSE = 1024   /* kl_rows: zq = zp + noise of 0.05 (a quantized model against its original) */
};

typedef struct op_case {
    const char *op;
    int T, n_in, n_out, C, H, KV, hd, pos0, V, K, r, B, n, acc, flags, step, wd; /* adamw: step, decay on */
    float tau;
    double norm;
} op_case;

static const op_case CASES[] = {
    /* linear: y[T][out] (=|+=) x[T][in] W^T (+ b) */
    {"linear", .T = 1, .n_in = 1, .n_out = 1},
    {"linear", .T = 1, .n_in = 7, .n_out = 33, .flags = F_BIAS},
    {"linear", .T = 7, .n_in = 33, .n_out = 127, .flags = F_BIAS},
    {"linear", .T = 7, .n_in = 33, .n_out = 127, .acc = 1, .flags = F_BIAS},
    {"linear", .T = 64, .n_in = 127, .n_out = 33, .acc = 1},
    {"linear", .T = 64, .n_in = 128, .n_out = 512, .flags = F_BIAS},
    {"linear", .T = 33, .n_in = 512, .n_out = 7},
    /* rmsnorm: x[T][C] */
    {"rmsnorm", .T = 1, .C = 1},
    {"rmsnorm", .T = 1, .C = 7},
    {"rmsnorm", .T = 7, .C = 33},
    {"rmsnorm", .T = 64, .C = 127},
    {"rmsnorm", .T = 33, .C = 512, .flags = F_NO_RINV},
    {"rmsnorm", .T = 7, .C = 33, .flags = F_TINY},
    /* rope: x[T][H*hd] at positions pos0.. */
    {"rope", .T = 1, .H = 1, .hd = 2},
    {"rope", .T = 1, .H = 6, .hd = 8, .pos0 = 63},
    {"rope", .T = 7, .H = 6, .hd = 16},
    {"rope", .T = 64, .H = 4, .hd = 64},
    {"rope", .T = 33, .H = 2, .hd = 128, .pos0 = 64},
    {"rope", .T = 5, .H = 3, .hd = 64, .pos0 = 2043},
    {"rope_bwd", .T = 1, .H = 1, .hd = 2},
    {"rope_bwd", .T = 7, .H = 6, .hd = 16, .pos0 = 1},
    {"rope_bwd", .T = 64, .H = 4, .hd = 64},
    {"rope_bwd", .T = 5, .H = 3, .hd = 64, .pos0 = 2043},
    /* attention: T queries at pos0.. against pos0+T cached keys; H heads, KV groups */
    {"attention", .T = 1, .H = 1, .KV = 1, .hd = 8},
    {"attention", .T = 1, .pos0 = 63, .H = 6, .KV = 2, .hd = 16},
    {"attention", .T = 64, .H = 6, .KV = 2, .hd = 16},
    {"attention", .T = 64, .H = 4, .KV = 1, .hd = 64},
    {"attention", .T = 7, .pos0 = 33, .H = 4, .KV = 1, .hd = 64},
    {"attention", .T = 17, .pos0 = 47, .H = 8, .KV = 8, .hd = 8},
    {"attention", .T = 5, .pos0 = 2, .H = 4, .KV = 2, .hd = 128},
    {"attention_bwd", .T = 1, .H = 1, .KV = 1, .hd = 8},
    {"attention_bwd", .T = 7, .H = 6, .KV = 2, .hd = 16},
    {"attention_bwd", .T = 64, .H = 6, .KV = 2, .hd = 16},
    {"attention_bwd", .T = 64, .H = 4, .KV = 1, .hd = 64},
    {"attention_bwd", .T = 33, .H = 8, .KV = 8, .hd = 8},
    {"attention_bwd", .T = 5, .H = 4, .KV = 2, .hd = 128},
    /* elementwise: n */
    {"swiglu", .n = 1},
    {"swiglu", .n = 127},
    {"swiglu", .n = 4099},
    {"swiglu_bwd", .n = 1},
    {"swiglu_bwd", .n = 127},
    {"swiglu_bwd", .n = 4099},
    {"add", .n = 1},
    {"add", .n = 1000},
    /* linear_h: linear with 16-bit W; out = 600 at in = 512 spans three conversion blocks (256 rows each) */
    {"linear_h", .T = 1, .n_in = 1, .n_out = 1},
    {"linear_h", .T = 1, .n_in = 7, .n_out = 33, .flags = F_BIAS},
    {"linear_h", .T = 7, .n_in = 33, .n_out = 127, .acc = 1, .flags = F_BIAS},
    {"linear_h", .T = 64, .n_in = 128, .n_out = 512, .flags = F_BIAS | F_F16},
    {"linear_h", .T = 33, .n_in = 512, .n_out = 600},
    {"linear_h", .T = 5, .n_in = 512, .n_out = 600, .acc = 1, .flags = F_F16},
    /* embed_h: table[V][C] 16-bit, ids[T] */
    {"embed_h", .T = 1, .C = 1, .V = 1},
    {"embed_h", .T = 7, .C = 33, .V = 512},
    {"embed_h", .T = 64, .C = 64, .V = 127, .flags = F_F16},
    /* embed: table[V][C], ids[T] */
    {"embed", .T = 1, .C = 1, .V = 1},
    {"embed", .T = 7, .C = 33, .V = 512},
    {"embed", .T = 64, .C = 64, .V = 127},
    {"embed_bwd", .T = 1, .C = 1, .V = 1},
    {"embed_bwd", .T = 7, .C = 33, .V = 5},
    {"embed_bwd", .T = 64, .C = 64, .V = 127, .flags = F_IGNORE},
    /* logsumexp: logits[T][V] */
    {"logsumexp", .T = 1, .V = 1},
    {"logsumexp", .T = 1, .V = 512},
    {"logsumexp", .T = 7, .V = 257},
    {"logsumexp", .T = 64, .V = 512},
    {"logsumexp", .T = 2, .V = 32000},
    /* nll: logits[T][V], targets[T] */
    {"nll", .T = 1, .V = 1},
    {"nll", .T = 7, .V = 257},
    {"nll", .T = 64, .V = 512},
    {"nll", .T = 2, .V = 32000},
    /* kl_rows: zp[T][V], zq[T][V] */
    {"kl_rows", .T = 1, .V = 1},
    {"kl_rows", .T = 7, .V = 257},
    {"kl_rows", .T = 64, .V = 512, .flags = F_CLOSE},
    {"kl_rows", .T = 2, .V = 32000},
    {"kl_rows", .T = 3, .V = 32000, .flags = F_CLOSE},
    /* linear_bwd: dy[T][out], x[T][in], W[out][in] */
    {"linear_bwd", .T = 1, .n_in = 1, .n_out = 1},
    {"linear_bwd", .T = 1, .n_in = 7, .n_out = 33, .acc = 1},
    {"linear_bwd", .T = 7, .n_in = 33, .n_out = 127},
    {"linear_bwd", .T = 7, .n_in = 33, .n_out = 127, .acc = 1},
    {"linear_bwd", .T = 64, .n_in = 127, .n_out = 33, .acc = 1},
    {"linear_bwd", .T = 64, .n_in = 128, .n_out = 512},
    {"linear_bwd", .T = 33, .n_in = 64, .n_out = 7, .acc = 1, .flags = F_NO_DX},
    {"linear_bwd", .T = 7, .n_in = 33, .n_out = 127, .flags = F_NO_DW | F_NO_DB},
    /* rmsnorm_bwd: dy, x [T][C] */
    {"rmsnorm_bwd", .T = 1, .C = 2}, /* not C = 1: dx ~ eps there, all cancellation (docs) */
    {"rmsnorm_bwd", .T = 1, .C = 7, .acc = 1},
    {"rmsnorm_bwd", .T = 7, .C = 33},
    {"rmsnorm_bwd", .T = 7, .C = 33, .acc = 1},
    {"rmsnorm_bwd", .T = 64, .C = 127, .acc = 1},
    {"rmsnorm_bwd", .T = 33, .C = 512},
    {"rmsnorm_bwd", .T = 5, .C = 64, .acc = 1, .flags = F_NO_DW},
    {"rmsnorm_bwd", .T = 5, .C = 64, .flags = F_NO_DX},
    {"rmsnorm_bwd", .T = 7, .C = 33, .acc = 1, .flags = F_TINY},
    /* loss_ce: logits[T][V], targets[T] */
    {"loss_ce", .T = 1, .V = 1},
    {"loss_ce", .T = 1, .V = 512},
    {"loss_ce", .T = 7, .V = 257, .flags = F_IGNORE},
    {"loss_ce", .T = 64, .V = 512},
    {"loss_ce", .T = 64, .V = 512, .norm = 200, .flags = F_IGNORE},
    {"loss_ce", .T = 7, .V = 257, .flags = F_NO_GRAD},
    {"loss_ce", .T = 2, .V = 32000},
    /* loss_kl: zs, zt [T][V] at temperature tau */
    {"loss_kl", .T = 1, .V = 1, .tau = 1},
    {"loss_kl", .T = 1, .V = 512, .tau = 1},
    {"loss_kl", .T = 7, .V = 257, .tau = 2},
    {"loss_kl", .T = 64, .V = 512, .tau = 1},
    {"loss_kl", .T = 33, .V = 512, .tau = 0.7f, .norm = 100},
    {"loss_kl", .T = 7, .V = 257, .tau = 1, .flags = F_NO_GRAD},
    /* loss_kl_topk: zs[T][V], the teacher's top K ids and logits [T][K] */
    {"loss_kl_topk", .T = 1, .V = 1, .K = 1, .tau = 1},
    {"loss_kl_topk", .T = 1, .V = 512, .K = 1, .tau = 1},
    {"loss_kl_topk", .T = 7, .V = 257, .K = 8, .tau = 2},
    {"loss_kl_topk", .T = 64, .V = 512, .K = 64, .tau = 1},
    {"loss_kl_topk", .T = 33, .V = 512, .K = 512, .tau = 1.5f},
    {"loss_kl_topk", .T = 7, .V = 257, .K = 33, .tau = 1, .norm = 50, .flags = F_NO_GRAD},
    /* hidden-state losses: a, b [T][C] */
    {"loss_cosine", .T = 1, .C = 1},
    {"loss_cosine", .T = 1, .C = 7},
    {"loss_cosine", .T = 7, .C = 33},
    {"loss_cosine", .T = 64, .C = 512},
    {"loss_cosine", .T = 33, .C = 127, .norm = 100},
    {"loss_cosine", .T = 7, .C = 33, .flags = F_TINY},
    {"loss_cosine", .T = 7, .C = 33, .flags = F_NO_GRAD},
    {"loss_nmse", .T = 1, .C = 1},
    {"loss_nmse", .T = 1, .C = 7},
    {"loss_nmse", .T = 7, .C = 33},
    {"loss_nmse", .T = 64, .C = 512},
    {"loss_nmse", .T = 33, .C = 127, .norm = 100},
    {"loss_nmse", .T = 7, .C = 33, .flags = F_TINY},
    {"loss_nmse", .T = 7, .C = 33, .flags = F_NO_GRAD},
    /* FuseGPT: W, P [out][in], A[r][in], B[out][r], U[out][r], V[r][in] (n_out, n_in) */
    {"fuse_weight", .n_out = 1, .n_in = 1, .r = 1},
    {"fuse_weight", .n_out = 7, .n_in = 33, .r = 1},
    {"fuse_weight", .n_out = 33, .n_in = 127, .r = 8},
    {"fuse_weight", .n_out = 127, .n_in = 33, .r = 4, .flags = F_NO_P},
    {"fuse_weight", .n_out = 64, .n_in = 512, .r = 16},
    {"fuse_weight_bwd", .n_out = 1, .n_in = 1, .r = 1},
    {"fuse_weight_bwd", .n_out = 7, .n_in = 33, .r = 1},
    {"fuse_weight_bwd", .n_out = 33, .n_in = 127, .r = 8},
    {"fuse_weight_bwd", .n_out = 127, .n_in = 33, .r = 4, .flags = F_NO_P},
    {"fuse_weight_bwd", .n_out = 64, .n_in = 512, .r = 16},
    /* loss_kl_batch: S, Tt [B][n], softmax over B */
    {"loss_kl_batch", .B = 1, .n = 7},
    {"loss_kl_batch", .B = 2, .n = 1},
    {"loss_kl_batch", .B = 4, .n = 33},
    {"loss_kl_batch", .B = 8, .n = 5000},
    {"loss_kl_batch", .B = 3, .n = 127, .norm = 10},
    {"loss_kl_batch", .B = 4, .n = 33, .flags = F_NO_GRAD},
    /* optimizer: p, grad, m, v [n] (AdamW step `step`, grad scale tau); sum of squares of x[n] */
    {"adamw", .n = 1, .step = 1, .tau = 1},
    {"adamw", .n = 1000, .step = 1, .tau = 1, .wd = 1},
    {"adamw", .n = 4099, .step = 1000, .tau = 0.37f, .wd = 1},
    {"adamw", .n = 70001, .step = 7, .tau = 1},
    {"sumsq", .n = 1},
    {"sumsq", .n = 1000},
    {"sumsq", .n = 1048579},
};
#define N_CASES (sizeof CASES / sizeof CASES[0])

/* "T=7 in=33 out=127 acc=1 bias": the fields a case sets */
static const char *shape(const op_case *c) {
    static char s[256];
    int n = 0;
    s[0] = 0;
#define FLD(f, name) if (c->f) n += snprintf(s + n, sizeof s - n, "%s=%d ", name, c->f)
    FLD(T, "T"); FLD(n_in, "in"); FLD(n_out, "out"); FLD(C, "C"); FLD(H, "H"); FLD(KV, "KV"); FLD(hd, "hd");
    FLD(pos0, "pos0"); FLD(V, "V"); FLD(K, "K"); FLD(r, "r"); FLD(B, "B"); FLD(n, "n"); FLD(acc, "acc"); FLD(step, "step"); FLD(wd, "wd");
#undef FLD
    if (c->tau) n += snprintf(s + n, sizeof s - n, "tau=%g ", c->tau);
    if (c->norm) n += snprintf(s + n, sizeof s - n, "norm=%g ", c->norm);
    static const char *fl[] = {"bias", "no_rinv", "no_dx", "no_dw", "no_db", "no_grad", "ignore", "no_P", "tiny", "f16"};
    for (int i = 0; i < 10; i++)
        if (c->flags & (1 << i)) n += snprintf(s + n, sizeof s - n, "%s ", fl[i]);
    if (n > 0) s[n - 1] = 0;
    return s;
}

/* ------------------------------------------- buffers on the backend under test */

#define MAX_BUF 32
#define MAX_OUT 6

typedef struct {
    const mf_backend *be;
    rng r;
    void *dev[MAX_BUF], *host[MAX_BUF];
    int n_dev, n_host;
} ctx;

typedef struct {
    int n;
    const char *name[MAX_OUT];
    double *v[MAX_OUT];
    size_t len[MAX_OUT];
} outs;

/* host buffer of n uniform values in [-s, s) (freed with the case) */
static float *rnd(ctx *x, size_t n, float s) {
    float *h = malloc((n ? n : 1) * sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = rng_unif(&x->r, -s, s);
    return x->host[x->n_host++] = h;
}
static void *hbuf(ctx *x, size_t bytes) { return x->host[x->n_host++] = calloc(bytes ? bytes : 1, 1); }
/* a copy of host h[n] in the backend's memory */
static float *put(ctx *x, const float *h, size_t n) {
    float *d = x->be->alloc(n * sizeof *d);
    x->be->upload(d, h, n * sizeof *d);
    return x->dev[x->n_dev++] = d;
}
/* n random values in [-s, s) rounded to 16 bits (bf16, or f16 with F_F16), in the backend's memory */
static uint16_t *dput16(ctx *x, size_t n, float s, int f16) {
    float *h = rnd(x, n, s);
    uint16_t *h16 = hbuf(x, n * sizeof *h16);
    for (size_t i = 0; i < n; i++) h16[i] = f16 ? mf_f32_to_fp16(h[i]) : mf_f32_to_bf16(h[i]);
    uint16_t *d = x->be->alloc(n * sizeof *d);
    x->be->upload(d, h16, n * sizeof *d);
    return x->dev[x->n_dev++] = d;
}
/* n random values in [-s, s) in the backend's memory */
static float *dput(ctx *x, size_t n, float s) { return put(x, rnd(x, n, s), n); }
static void ctx_free(ctx *x) {
    for (int i = 0; i < x->n_dev; i++) x->be->free(x->dev[i]);
    for (int i = 0; i < x->n_host; i++) free(x->host[i]);
    x->n_dev = x->n_host = 0;
}

static double *out_new(outs *o, const char *name, size_t n) {
    o->name[o->n] = name;
    o->len[o->n] = n;
    return o->v[o->n++] = malloc((n ? n : 1) * sizeof(double));
}
/* an output in the backend's memory, downloaded */
static void out_dev(ctx *x, outs *o, const char *name, const float *d, size_t n) {
    float *h = hbuf(x, n * sizeof *h);
    x->be->sync();
    x->be->download(h, d, n * sizeof *h);
    double *v = out_new(o, name, n);
    for (size_t i = 0; i < n; i++) v[i] = h[i];
}
static void out_scalar(outs *o, const char *name, double s) { *out_new(o, name, 1) = s; }
static void outs_free(outs *o) {
    for (int i = 0; i < o->n; i++) free(o->v[i]);
    o->n = 0;
}

/* inv_freq[hd/2] = 10000^(-2i/hd), as the model computes it (float) */
static float *inv_freq(ctx *x, int hd) {
    float *f = hbuf(x, (size_t)(hd / 2) * sizeof *f);
    for (int i = 0; i < hd / 2; i++) f[i] = (float)(1.0 / pow(10000.0, 2.0 * i / hd));
    return f;
}

/* ids[T] in [0, V); with F_IGNORE every 5th is -1 and every 7th is V (out of range) */
static int32_t *ids_of(ctx *x, int T, int V, int ignore) {
    int32_t *id = hbuf(x, (size_t)T * sizeof *id);
    for (int t = 0; t < T; t++) {
        id[t] = rng_below(&x->r, V);
        if (ignore && t % 5 == 2) id[t] = -1;
        if (ignore && t % 7 == 3) id[t] = V;
    }
    return id;
}

/* ids[T][K], zk[T][K]: the K largest of each row of z[T][V], largest first (the teacher's top K) */
static void top_k(const float *z, int T, int V, int K, int32_t *ids, float *zk) {
    char *used = malloc((size_t)V);
    for (int t = 0; t < T; t++) {
        memset(used, 0, (size_t)V);
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int v = 0; v < V; v++)
                if (!used[v] && (best < 0 || z[(size_t)t * V + v] > z[(size_t)t * V + best])) best = v;
            used[best] = 1;
            ids[(size_t)t * K + k] = best;
            zk[(size_t)t * K + k] = z[(size_t)t * V + best];
        }
    }
    free(used);
}

/* ---------------------------------------------------------------- the ops */

static void run_linear(ctx *x, const op_case *c, outs *o) {
    int T = c->T, I = c->n_in, O = c->n_out;
    float *in = dput(x, (size_t)T * I, 1), *W = dput(x, (size_t)O * I, 1);
    float *b = c->flags & F_BIAS ? dput(x, O, 1) : NULL, *y = dput(x, (size_t)T * O, 1);
    x->be->linear(y, in, W, b, T, I, O, c->acc);
    out_dev(x, o, "y", y, (size_t)T * O);
}

static void run_linear_h(ctx *x, const op_case *c, outs *o) {
    int T = c->T, I = c->n_in, O = c->n_out, f16 = c->flags & F_F16;
    float *in = dput(x, (size_t)T * I, 1);
    uint16_t *W = dput16(x, (size_t)O * I, 1, f16);
    float *b = c->flags & F_BIAS ? dput(x, O, 1) : NULL, *y = dput(x, (size_t)T * O, 1);
    x->be->linear_h(y, in, W, f16 ? MF_DT_F16 : MF_DT_BF16, b, T, I, O, c->acc);
    out_dev(x, o, "y", y, (size_t)T * O);
}

static void run_embed_h(ctx *x, const op_case *c, outs *o) {
    size_t n = (size_t)c->T * c->C;
    int f16 = c->flags & F_F16;
    uint16_t *E = dput16(x, (size_t)c->V * c->C, 1, f16);
    float *y = dput(x, n, 1);
    int32_t *ids = ids_of(x, c->T, c->V, 0);
    x->be->embed_h(y, E, f16 ? MF_DT_F16 : MF_DT_BF16, ids, c->T, c->C);
    out_dev(x, o, "x", y, n);
}

static void run_rmsnorm(ctx *x, const op_case *c, outs *o) {
    int T = c->T, C = c->C;
    float *in = dput(x, (size_t)T * C, c->flags & F_TINY ? 2e-3f : 2), *w = dput(x, C, 1);
    float *y = dput(x, (size_t)T * C, 1);
    float *rinv = c->flags & F_NO_RINV ? NULL : dput(x, T, 1);
    x->be->rmsnorm(y, rinv, in, w, T, C, 1e-5f);
    out_dev(x, o, "y", y, (size_t)T * C);
    if (rinv) out_dev(x, o, "rinv", rinv, T);
}

static void run_rope(ctx *x, const op_case *c, outs *o) {
    size_t n = (size_t)c->T * c->H * c->hd;
    float *v = dput(x, n, 1), *f = inv_freq(x, c->hd);
    if (strcmp(c->op, "rope") == 0) x->be->rope(v, c->T, c->H, c->hd, c->pos0, f);
    else x->be->rope_bwd(v, c->T, c->H, c->hd, c->pos0, f);
    out_dev(x, o, strcmp(c->op, "rope") == 0 ? "x" : "dx", v, n);
}

static void run_attention(ctx *x, const op_case *c, outs *o) {
    int T = c->T, n_ctx = c->pos0 + T;
    size_t nq = (size_t)T * c->H * c->hd, nkv = (size_t)n_ctx * c->KV * c->hd;
    float *q = dput(x, nq, 2), *k = dput(x, nkv, 2), *v = dput(x, nkv, 1), *out = dput(x, nq, 1);
    x->be->attention(out, q, k, v, T, c->pos0, c->H, c->KV, c->hd);
    out_dev(x, o, "out", out, nq);
}

static void run_attention_bwd(ctx *x, const op_case *c, outs *o) {
    size_t nq = (size_t)c->T * c->H * c->hd, nkv = (size_t)c->T * c->KV * c->hd;
    float *q = dput(x, nq, 2), *k = dput(x, nkv, 2), *v = dput(x, nkv, 1), *dout = dput(x, nq, 1);
    float *dq = dput(x, nq, 1), *dk = dput(x, nkv, 1), *dv = dput(x, nkv, 1);
    x->be->attention_bwd(dq, dk, dv, dout, q, k, v, c->T, c->H, c->KV, c->hd);
    out_dev(x, o, "dq", dq, nq);
    out_dev(x, o, "dk", dk, nkv);
    out_dev(x, o, "dv", dv, nkv);
}

static void run_swiglu(ctx *x, const op_case *c, outs *o) {
    float *g = dput(x, c->n, 8), *u = dput(x, c->n, 2), *h = dput(x, c->n, 1);
    x->be->swiglu(h, g, u, c->n);
    out_dev(x, o, "h", h, c->n);
}

static void run_swiglu_bwd(ctx *x, const op_case *c, outs *o) {
    float *g = dput(x, c->n, 8), *u = dput(x, c->n, 2), *dh = dput(x, c->n, 1);
    float *dg = dput(x, c->n, 1), *du = dput(x, c->n, 1);
    x->be->swiglu_bwd(dg, du, dh, g, u, c->n);
    out_dev(x, o, "dg", dg, c->n);
    out_dev(x, o, "du", du, c->n);
}

static void run_add(ctx *x, const op_case *c, outs *o) {
    float *y = dput(x, c->n, 1), *a = dput(x, c->n, 1);
    x->be->add(y, a, c->n);
    out_dev(x, o, "y", y, c->n);
}

static void run_embed(ctx *x, const op_case *c, outs *o) {
    size_t n = (size_t)c->T * c->C;
    float *E = dput(x, (size_t)c->V * c->C, 1), *y = dput(x, n, 1);
    int32_t *ids = ids_of(x, c->T, c->V, 0);
    x->be->embed(y, E, ids, c->T, c->C);
    out_dev(x, o, "x", y, n);
}

static void run_embed_bwd(ctx *x, const op_case *c, outs *o) {
    size_t nE = (size_t)c->V * c->C;
    float *dE = dput(x, nE, 1), *dx = dput(x, (size_t)c->T * c->C, 1);
    int32_t *ids = ids_of(x, c->T, c->V, c->flags & F_IGNORE);
    x->be->embed_bwd(dE, dx, ids, c->T, c->C, c->V);
    out_dev(x, o, "dE", dE, nE);
}

static void run_logsumexp(ctx *x, const op_case *c, outs *o) {
    float *z = dput(x, (size_t)c->T * c->V, 6);
    double *lse = hbuf(x, (size_t)c->T * sizeof *lse);
    x->be->logsumexp(z, c->T, c->V, lse);
    double *v = out_new(o, "lse", c->T);
    memcpy(v, lse, (size_t)c->T * sizeof *lse);
}

static void run_nll(ctx *x, const op_case *c, outs *o) {
    float *z = dput(x, (size_t)c->T * c->V, 6);
    int32_t *y = ids_of(x, c->T, c->V, 0);
    double *nll = hbuf(x, (size_t)c->T * sizeof *nll);
    x->be->nll(z, y, c->T, c->V, nll);
    double *v = out_new(o, "nll", c->T);
    memcpy(v, nll, (size_t)c->T * sizeof *nll);
}

static void run_kl_rows(ctx *x, const op_case *c, outs *o) {
    size_t n = (size_t)c->T * c->V;
    float *p = rnd(x, n, 6), *q = rnd(x, n, c->flags & F_CLOSE ? 0.05f : 6);
    if (c->flags & F_CLOSE)
        for (size_t i = 0; i < n; i++) q[i] += p[i];
    double *kl = hbuf(x, (size_t)c->T * sizeof *kl);
    int32_t *same = hbuf(x, (size_t)c->T * sizeof *same);
    x->be->kl_rows(put(x, p, n), put(x, q, n), c->T, c->V, kl, same);
    double *v = out_new(o, "kl", c->T), *s = out_new(o, "same", c->T);
    memcpy(v, kl, (size_t)c->T * sizeof *kl);
    for (int t = 0; t < c->T; t++) s[t] = same[t];
}

static void run_linear_bwd(ctx *x, const op_case *c, outs *o) {
    int T = c->T, I = c->n_in, O = c->n_out;
    float *in = dput(x, (size_t)T * I, 1), *W = dput(x, (size_t)O * I, 1), *dy = dput(x, (size_t)T * O, 1);
    float *dx = c->flags & F_NO_DX ? NULL : dput(x, (size_t)T * I, 1);
    float *dW = c->flags & F_NO_DW ? NULL : dput(x, (size_t)O * I, 1);
    float *db = c->flags & F_NO_DB ? NULL : dput(x, O, 1);
    x->be->linear_bwd(dx, dW, db, dy, in, W, T, I, O, c->acc);
    if (dx) out_dev(x, o, "dx", dx, (size_t)T * I);
    if (dW) out_dev(x, o, "dW", dW, (size_t)O * I);
    if (db) out_dev(x, o, "db", db, O);
}

static void run_rmsnorm_bwd(ctx *x, const op_case *c, outs *o) {
    int T = c->T, C = c->C;
    float *hx = rnd(x, (size_t)T * C, c->flags & F_TINY ? 2e-3f : 2), *hr = hbuf(x, (size_t)T * sizeof *hr);
    for (int t = 0; t < T; t++) { /* the forward's rinv, in the backend's memory as the forward leaves it */
        double ss = 0;
        for (int i = 0; i < C; i++) ss += (double)hx[(size_t)t * C + i] * hx[(size_t)t * C + i];
        hr[t] = (float)(1.0 / sqrt(ss / C + 1e-5));
    }
    float *rinv = put(x, hr, T), *in = put(x, hx, (size_t)T * C), *w = dput(x, C, 1), *dy = dput(x, (size_t)T * C, 1);
    float *dx = c->flags & F_NO_DX ? NULL : dput(x, (size_t)T * C, 1);
    float *dw = c->flags & F_NO_DW ? NULL : dput(x, C, 1);
    x->be->rmsnorm_bwd(dx, dw, dy, in, w, rinv, T, C, c->acc);
    if (dx) out_dev(x, o, "dx", dx, (size_t)T * C);
    if (dw) out_dev(x, o, "dw", dw, C);
}

static void run_loss_ce(ctx *x, const op_case *c, outs *o) {
    size_t n = (size_t)c->T * c->V;
    float *z = dput(x, n, 4), *d = c->flags & F_NO_GRAD ? NULL : dput(x, n, 1);
    int32_t *y = ids_of(x, c->T, c->V, c->flags & F_IGNORE);
    out_scalar(o, "loss", x->be->loss_ce(z, y, c->T, c->V, c->norm, d));
    if (d) out_dev(x, o, "dlogits", d, n);
}

static void run_loss_kl(ctx *x, const op_case *c, outs *o) {
    size_t n = (size_t)c->T * c->V;
    float *zs = dput(x, n, 3), *zt = dput(x, n, 3), *d = c->flags & F_NO_GRAD ? NULL : dput(x, n, 1);
    out_scalar(o, "loss", x->be->loss_kl(zs, zt, c->T, c->V, c->tau, c->norm, d));
    if (d) out_dev(x, o, "dzs", d, n);
}

static void run_loss_kl_topk(ctx *x, const op_case *c, outs *o) {
    int T = c->T, V = c->V, K = c->K;
    float *zs = dput(x, (size_t)T * V, 3), *d = c->flags & F_NO_GRAD ? NULL : dput(x, (size_t)T * V, 1);
    float *full = rnd(x, (size_t)T * V, 3), *zk = hbuf(x, (size_t)T * K * sizeof *zk);
    int32_t *ids = hbuf(x, (size_t)T * K * sizeof *ids);
    top_k(full, T, V, K, ids, zk);
    float *dzk = put(x, zk, (size_t)T * K);
    out_scalar(o, "loss", x->be->loss_kl_topk(zs, ids, dzk, T, V, K, c->tau, c->norm, d));
    if (d) out_dev(x, o, "dzs", d, (size_t)T * V);
}

static void run_loss_hidden(ctx *x, const op_case *c, outs *o) {
    size_t n = (size_t)c->T * c->C;
    float *ha = rnd(x, n, 1), *hb = rnd(x, n, 1);
    if (c->flags & F_TINY) {
        for (int i = 0; i < c->C; i++) hb[i] *= 1e-8f;
        memset(hb + (size_t)(c->T / 2) * c->C, 0, (size_t)c->C * sizeof *hb);
    }
    float *a = put(x, ha, n), *b = put(x, hb, n), *d = c->flags & F_NO_GRAD ? NULL : dput(x, n, 1);
    double l = strcmp(c->op, "loss_cosine") == 0 ? x->be->loss_cosine(a, b, c->T, c->C, c->norm, d)
                                                 : x->be->loss_nmse(a, b, c->T, c->C, c->norm, d);
    out_scalar(o, "loss", l);
    if (d) out_dev(x, o, "da", d, n);
}

static void run_fuse_weight(ctx *x, const op_case *c, outs *o) {
    int O = c->n_out, I = c->n_in, r = c->r;
    size_t n = (size_t)O * I;
    float *W = dput(x, n, 1), *P = c->flags & F_NO_P ? NULL : dput(x, n, 1);
    float *A = dput(x, (size_t)r * I, 1), *B = dput(x, (size_t)O * r, 1), *U = dput(x, (size_t)O * r, 1);
    float *V = dput(x, (size_t)r * I, 1), *We = dput(x, n, 1), *scratch = dput(x, n, 1);
    x->be->fuse_weight(We, W, P, A, B, U, V, O, I, r, scratch);
    out_dev(x, o, "W_eff", We, n);
}

static void run_fuse_weight_bwd(ctx *x, const op_case *c, outs *o) {
    int O = c->n_out, I = c->n_in, r = c->r;
    size_t n = (size_t)O * I;
    float *G = dput(x, n, 1), *P = c->flags & F_NO_P ? NULL : dput(x, n, 1);
    float *A = dput(x, (size_t)r * I, 1), *B = dput(x, (size_t)O * r, 1), *U = dput(x, (size_t)O * r, 1);
    float *V = dput(x, (size_t)r * I, 1), *scratch = dput(x, n, 1);
    float *dA = dput(x, (size_t)r * I, 1), *dB = dput(x, (size_t)O * r, 1), *dU = dput(x, (size_t)O * r, 1);
    float *dV = dput(x, (size_t)r * I, 1);
    x->be->fuse_weight_bwd(dA, dB, dU, dV, G, P, A, B, U, V, O, I, r, scratch);
    out_dev(x, o, "dA", dA, (size_t)r * I);
    out_dev(x, o, "dB", dB, (size_t)O * r);
    out_dev(x, o, "dU", dU, (size_t)O * r); /* P NULL: must be left as they were */
    out_dev(x, o, "dV", dV, (size_t)r * I);
}

static void run_loss_kl_batch(ctx *x, const op_case *c, outs *o) {
    size_t n = (size_t)c->B * c->n;
    float *S = dput(x, n, 3), *Tt = dput(x, n, 3), *d = c->flags & F_NO_GRAD ? NULL : dput(x, n, 1);
    out_scalar(o, "loss", x->be->loss_kl_batch(S, Tt, c->B, c->n, c->norm, d));
    if (d) out_dev(x, o, "dS", d, n);
}

/* AdamW step c->step of src/train/optim.c (lr 1e-3, betas 0.9/0.95, eps 1e-8,
 * weight decay 0.1 when c->wd), coefficients rounded as mf_adamw_step does. */
static void run_adamw(ctx *x, const op_case *c, outs *o) {
    size_t n = (size_t)c->n;
    float *hv = rnd(x, n, 1e-2f);
    for (size_t i = 0; i < n; i++) hv[i] = hv[i] * hv[i]; /* second moments are >= 0 */
    float *p = dput(x, n, 1), *g = dput(x, n, 1), *m = dput(x, n, 1e-2f), *v = put(x, hv, n);
    double lr = 1e-3, b1 = 0.9, b2 = 0.95, t = c->step;
    mf_adamw_coef k = {.decay = c->wd ? (float)(1 - lr * 0.1) : 1.0f,
                       .w1 = (float)(1 - b1),
                       .b2 = (float)b2,
                       .c2 = (float)(1 - b2),
                       .bc2_sqrt = (float)pow(1 - pow(b2, t), 0.5),
                       .eps = 1e-8f,
                       .neg_step = (float)-(lr / (1 - pow(b1, t)))};
    x->be->adamw(p, g, m, v, n, c->tau, &k);
    out_dev(x, o, "p", p, n);
    out_dev(x, o, "m", m, n);
    out_dev(x, o, "v", v, n);
}

static void run_sumsq(ctx *x, const op_case *c, outs *o) {
    float *v = dput(x, (size_t)c->n, 1);
    out_scalar(o, "sum", x->be->sumsq(v, (size_t)c->n));
}

typedef struct {
    const char *op;
    void (*run)(ctx *x, const op_case *c, outs *o);
    double thr; /* NMSE threshold against ref, every output */
} op_def;

static const op_def OPS[] = {
    {"linear", run_linear, 1e-11},
    {"rmsnorm", run_rmsnorm, 1e-12},
    {"rope", run_rope, 1e-9},
    {"attention", run_attention, 1e-11},
    {"swiglu", run_swiglu, 1e-12},
    {"add", run_add, 0},
    {"embed", run_embed, 0},
    {"linear_h", run_linear_h, 1e-11},
    {"embed_h", run_embed_h, 0},
    {"logsumexp", run_logsumexp, 1e-13},
    {"nll", run_nll, 1e-13},
    {"kl_rows", run_kl_rows, 1e-12},
    {"linear_bwd", run_linear_bwd, 1e-10},
    {"rmsnorm_bwd", run_rmsnorm_bwd, 1e-11},
    {"rope_bwd", run_rope, 1e-9},
    {"attention_bwd", run_attention_bwd, 1e-11},
    {"swiglu_bwd", run_swiglu_bwd, 1e-11},
    {"embed_bwd", run_embed_bwd, 1e-12},
    {"loss_ce", run_loss_ce, 1e-12},
    {"loss_kl", run_loss_kl, 1e-11},
    {"loss_kl_topk", run_loss_kl_topk, 1e-12},
    {"loss_cosine", run_loss_hidden, 1e-12},
    {"loss_nmse", run_loss_hidden, 1e-12},
    {"fuse_weight", run_fuse_weight, 1e-11},
    {"fuse_weight_bwd", run_fuse_weight_bwd, 1e-11},
    {"loss_kl_batch", run_loss_kl_batch, 1e-12},
    {"adamw", run_adamw, 1e-12},
    {"sumsq", run_sumsq, 1e-13},
};
#define N_OPS (sizeof OPS / sizeof OPS[0])

static const op_def *find_op(const char *op) {
    for (size_t i = 0; i < N_OPS; i++)
        if (strcmp(OPS[i].op, op) == 0) return &OPS[i];
    return NULL;
}

/* ------------------------------------------------------------ the harness */

static double nmse(const double *x, const double *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (x[i] - ref[i]) * (x[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

/* Thresholds of one backend that differ from the op's (docs/backend_ops.md, cuda/README.md):
 * the CUDA attention's online softmax rescales partial sums (more roundings than
 * the CPU's one softmax per row); its linear_h rounds x to the weights' 16-bit
 * type before the tensor-core product (bf16: 2^-9 relative per element, NMSE ~1e-6). */
static const struct { const char *op, *backend; double thr; } DEV_THR[] = {
    {"attention", "cuda", 1e-10},
    {"attention_bwd", "cuda", 1e-10},
    {"linear_h", "cuda", 1e-5},
};

/* MINIFUSE_CUDA_MATH=tf32 or bf16 (cuda/matmul.cu): the float32 products of cuda run on the tensor
 * cores with operands rounded to tf32 (2^-11 relative) or bf16 (2^-9): an NMSE of about 1e-7 or
 * 1e-6 over sums of up to 512 products; thresholds 1e-5 and 1e-4 (1e-6 / 1e-5 measured nowhere yet). */
static const char *const MATMUL_OPS[] = {"linear", "linear_bwd", "fuse_weight", "fuse_weight_bwd"};

static double threshold(const op_def *d, const char *backend) {
    const char *math = getenv("MINIFUSE_CUDA_MATH");
    if (strcmp(backend, "cuda") == 0 && math && (strcmp(math, "tf32") == 0 || strcmp(math, "bf16") == 0))
        for (size_t i = 0; i < sizeof MATMUL_OPS / sizeof MATMUL_OPS[0]; i++)
            if (strcmp(MATMUL_OPS[i], d->op) == 0) return strcmp(math, "tf32") == 0 ? 1e-5 : 1e-4;
    for (size_t i = 0; i < sizeof DEV_THR / sizeof DEV_THR[0]; i++)
        if (strcmp(DEV_THR[i].op, d->op) == 0 && strcmp(DEV_THR[i].backend, backend) == 0) return DEV_THR[i].thr;
    return d->thr;
}

static void run_on(const mf_backend *be, const op_def *d, const op_case *c, uint64_t seed, outs *o) {
    ctx x = {.be = be, .r = {seed}};
    d->run(&x, c, o);
    ctx_free(&x);
}

/* Every case of `op`, on every backend against ref. */
static void check_op(const char *op) {
    const op_def *d = find_op(op);
    cr_assert_not_null(d, "no op '%s' in OPS", op);
    int n_cases = 0, n_skipped[N_BACKENDS] = {0};
    char why[N_BACKENDS][256];
    for (size_t i = 0; i < N_CASES; i++) {
        const op_case *c = &CASES[i];
        if (strcmp(c->op, op) != 0) continue;
        n_cases++;
        /* seed: FNV-1a of "op shape", so a case keeps its inputs when others are added */
        uint64_t seed = 1469598103934665603ull;
        for (const char *q = op; *q; q++) seed = (seed ^ (uint8_t)*q) * 1099511628211ull;
        for (const char *q = shape(c); *q; q++) seed = (seed ^ (uint8_t)*q) * 1099511628211ull;
        outs ref = {0};
        run_on(mf_backend_ref(), d, c, seed, &ref);
        for (size_t b = 0; b < N_BACKENDS; b++) {
            const mf_backend *be = backend_or_skip(BACKENDS[b], why[b], sizeof why[b]);
            if (!be) {
                printf("%-15s %-40s [%s] %s\n", op, shape(c), BACKENDS[b], why[b]);
                n_skipped[b]++;
                continue;
            }
            outs got = {0};
            double thr = threshold(d, be->name);
            run_on(be, d, c, seed, &got);
            cr_assert_eq(got.n, ref.n, "%s %s [%s]: %d outputs, ref has %d", op, shape(c), be->name, got.n, ref.n);
            for (int k = 0; k < ref.n; k++) {
                double e = nmse(got.v[k], ref.v[k], ref.len[k]);
                int ok = e <= thr;
                printf("%-15s %-40s [%s] %-7s nmse %.3e  (max %.0e) %s\n", op, shape(c), be->name, ref.name[k], e,
                       thr, ok ? "ok" : "FAIL");
                cr_expect(ok, "%s %s [%s] %s: nmse %.3e above %.0e", op, shape(c), be->name, ref.name[k], e, thr);
            }
            outs_free(&got);
        }
        outs_free(&ref);
    }
    for (size_t b = 0; b < N_BACKENDS; b++) /* the count test-gpu reports: never a silent 0 of 0 */
        if (n_skipped[b]) printf("%-15s [%s] %d of %d cases %s\n", op, BACKENDS[b], n_skipped[b], n_cases, why[b]);
    fflush(stdout);
    cr_assert_gt(n_cases, 0, "no cases for %s", op);
}

Test(backend_ops, linear) { check_op("linear"); }
Test(backend_ops, rmsnorm) { check_op("rmsnorm"); }
Test(backend_ops, rope) { check_op("rope"); }
Test(backend_ops, attention) { check_op("attention"); }
Test(backend_ops, swiglu) { check_op("swiglu"); }
Test(backend_ops, add) { check_op("add"); }
Test(backend_ops, embed) { check_op("embed"); }
Test(backend_ops, linear_h) { check_op("linear_h"); }
Test(backend_ops, embed_h) { check_op("embed_h"); }
Test(backend_ops, logsumexp) { check_op("logsumexp"); }
Test(backend_ops, nll) { check_op("nll"); }
Test(backend_ops, kl_rows) { check_op("kl_rows"); }
Test(backend_ops, linear_bwd) { check_op("linear_bwd"); }
Test(backend_ops, rmsnorm_bwd) { check_op("rmsnorm_bwd"); }
Test(backend_ops, rope_bwd) { check_op("rope_bwd"); }
Test(backend_ops, attention_bwd) { check_op("attention_bwd"); }
Test(backend_ops, swiglu_bwd) { check_op("swiglu_bwd"); }
Test(backend_ops, embed_bwd) { check_op("embed_bwd"); }
Test(backend_ops, loss_ce) { check_op("loss_ce"); }
Test(backend_ops, loss_kl) { check_op("loss_kl"); }
Test(backend_ops, loss_kl_topk) { check_op("loss_kl_topk"); }
Test(backend_ops, loss_cosine) { check_op("loss_cosine"); }
Test(backend_ops, loss_nmse) { check_op("loss_nmse"); }
Test(backend_ops, fuse_weight) { check_op("fuse_weight"); }
Test(backend_ops, fuse_weight_bwd) { check_op("fuse_weight_bwd"); }
Test(backend_ops, loss_kl_batch) { check_op("loss_kl_batch"); }
Test(backend_ops, adamw) { check_op("adamw"); }
Test(backend_ops, sumsq) { check_op("sumsq"); }

/* Every case names a known op; every backend fills the whole table; the registry knows ref. */
Test(backend_ops, table_complete) {
    for (size_t i = 0; i < N_CASES; i++)
        cr_expect_not_null(find_op(CASES[i].op), "case %zu: unknown op %s", i, CASES[i].op);
    cr_assert_not_null(mf_backend_get("ref"));
    cr_expect_eq(mf_backend_get("ref"), mf_backend_ref());
#ifdef MF_CUDA
    cr_expect_str_eq(mf_backend_names(), "cpu, ref, devsim, cuda");
#else
    cr_expect_str_eq(mf_backend_names(), "cpu, ref, devsim");
    cr_expect_null(mf_backend_get("cuda"), "a build without CUDA=1 has no cuda backend");
#endif
    for (size_t b = 0; b <= N_BACKENDS; b++) {
        char why[256];
        const mf_backend *be = b < N_BACKENDS ? backend_or_skip(BACKENDS[b], why, sizeof why) : mf_backend_ref();
        if (!be) {
            printf("[%s] %s\n", BACKENDS[b], why);
            continue;
        }
        /* every member after the name and is_host is a function pointer */
        const void *const fns[] = {
            (void *)be->alloc, (void *)be->free, (void *)be->upload, (void *)be->download, (void *)be->copy,
            (void *)be->zero, (void *)be->sync, (void *)be->linear, (void *)be->rmsnorm, (void *)be->rope,
            (void *)be->attention, (void *)be->swiglu, (void *)be->add, (void *)be->embed, (void *)be->logsumexp,
            (void *)be->nll, (void *)be->kl_rows,
            (void *)be->linear_bwd, (void *)be->rmsnorm_bwd, (void *)be->rope_bwd, (void *)be->attention_bwd,
            (void *)be->swiglu_bwd, (void *)be->embed_bwd, (void *)be->loss_ce, (void *)be->loss_kl,
            (void *)be->loss_kl_topk, (void *)be->loss_cosine, (void *)be->loss_nmse, (void *)be->fuse_weight,
            (void *)be->fuse_weight_bwd, (void *)be->loss_kl_batch, (void *)be->adamw, (void *)be->sumsq};
        for (size_t k = 0; k < sizeof fns / sizeof fns[0]; k++)
            cr_expect_not_null(fns[k], "backend %s: table entry %zu is NULL", be->name, k);
    }
}

/* Memory entries of every backend: upload, copy, zero, download round trip. */
Test(backend_ops, memory) {
    for (size_t b = 0; b <= N_BACKENDS; b++) {
        char why[256];
        const mf_backend *be = b < N_BACKENDS ? backend_or_skip(BACKENDS[b], why, sizeof why) : mf_backend_ref();
        if (!be) {
            printf("[%s] %s\n", BACKENDS[b], why);
            continue;
        }
        float h[33], back[33];
        for (int i = 0; i < 33; i++) h[i] = (float)i - 7.5f;
        float *d1 = be->alloc(sizeof h), *d2 = be->alloc(sizeof h);
        be->upload(d1, h, sizeof h);
        be->copy(d2, d1, sizeof h);
        be->zero(d1, 16 * sizeof(float));
        be->sync();
        be->download(back, d2, sizeof back);
        cr_expect_arr_eq(back, h, sizeof h, "%s: upload/copy/download", be->name);
        be->download(back, d1, sizeof back);
        for (int i = 0; i < 33; i++) cr_expect_eq(back[i], i < 16 ? 0.0f : h[i], "%s: zero, element %d", be->name, i);
        be->free(d1);
        be->free(d2);
        be->free(be->alloc(0));
    }
}

/* ==================================================== the reference itself
 * Hand-computed values, and each backward against central differences of its
 * forward (small shapes, every element). The forward outputs are floats, so a
 * difference quotient with step h ~ 1e-2 is good to ~1e-5 relative (NMSE
 * achieved <= 3e-10); the bound of 1e-8 is far below what a wrong term gives
 * (> 1e-3). */

#define FD_H 1e-2f
#define FD_MAX 1e-8

typedef double (*scalar_fn)(void *ctx);

/* NMSE of grad[n] against the central differences of f w.r.t. x[n] (x is
 * perturbed in place and restored; the step is the one float rounding took). */
static double fd_nmse(scalar_fn f, void *fctx, float *x, const float *grad, size_t n, const char *what) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        float x0 = x[i];
        x[i] = x0 + FD_H;
        float xp = x[i];
        double fp = f(fctx);
        x[i] = x0 - FD_H;
        float xm = x[i];
        double fm = f(fctx);
        x[i] = x0;
        double g = (fp - fm) / ((double)xp - xm);
        num += (grad[i] - g) * (grad[i] - g);
        den += g * g;
    }
    double e = den > 0 ? num / den : num;
    printf("ref vs finite differences  %-32s nmse %.3e  (max %.0e) %s\n", what, e, FD_MAX, e <= FD_MAX ? "ok" : "FAIL");
    fflush(stdout);
    cr_expect(e <= FD_MAX, "ref %s: gradient against finite differences, nmse %.3e", what, e);
    return e;
}

static float *urand(rng *r, size_t n, float s) {
    float *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = rng_unif(r, -s, s);
    return v;
}
static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}
#define REF mf_backend_ref()

/* ---- linear */
typedef struct { float *x, *W, *b, *c, *y; int T, I, O; } lin_ctx;
static double lin_f(void *p) {
    lin_ctx *l = p;
    REF->linear(l->y, l->x, l->W, l->b, l->T, l->I, l->O, 0);
    return dot(l->c, l->y, (size_t)l->T * l->O);
}

Test(backend_ops, ref_linear) {
    /* by hand: y = [1 2; 3 4] [[1 0] [1 1] [0 -1]]^T + [10 20 30] */
    float x[4] = {1, 2, 3, 4}, W[6] = {1, 0, 1, 1, 0, -1}, b[3] = {10, 20, 30}, y[6] = {1, 1, 1, 1, 1, 1};
    float want[6] = {11, 23, 28, 13, 27, 26};
    REF->linear(y, x, W, b, 2, 2, 3, 0);
    cr_expect_arr_eq(y, want, sizeof y, "linear by hand");
    REF->linear(y, x, W, NULL, 2, 2, 3, 1); /* += x W^T */
    float want2[6] = {12, 26, 26, 16, 34, 22};
    cr_expect_arr_eq(y, want2, sizeof y, "linear accumulate by hand");

    rng r = {1};
    int T = 3, I = 5, O = 4;
    lin_ctx l = {urand(&r, T * I, 1), urand(&r, O * I, 1), urand(&r, O, 1), urand(&r, T * O, 1), urand(&r, T * O, 1),
                 T, I, O};
    float *dx = calloc(T * I, 4), *dW = calloc(O * I, 4), *db = calloc(O, 4);
    REF->linear_bwd(dx, dW, db, l.c, l.x, l.W, T, I, O, 0);
    fd_nmse(lin_f, &l, l.x, dx, T * I, "linear_bwd dx");
    fd_nmse(lin_f, &l, l.W, dW, O * I, "linear_bwd dW");
    fd_nmse(lin_f, &l, l.b, db, O, "linear_bwd db");
    /* accumulate: dx (acc=1), dW, db add; acc=0 writes dx */
    float *dx2 = malloc(T * I * 4), *dW2 = malloc(O * I * 4), *db2 = malloc(O * 4);
    for (int i = 0; i < T * I; i++) dx2[i] = 1.0f;
    for (int i = 0; i < O * I; i++) dW2[i] = 2.0f;
    for (int i = 0; i < O; i++) db2[i] = 3.0f;
    REF->linear_bwd(dx2, dW2, db2, l.c, l.x, l.W, T, I, O, 1);
    for (int i = 0; i < T * I; i++) cr_expect_float_eq(dx2[i], dx[i] + 1.0f, 1e-6, "acc dx");
    for (int i = 0; i < O * I; i++) cr_expect_float_eq(dW2[i], dW[i] + 2.0f, 1e-6, "dW accumulates");
    for (int i = 0; i < O; i++) cr_expect_float_eq(db2[i], db[i] + 3.0f, 1e-6, "db accumulates");
    REF->linear_bwd(dx2, NULL, NULL, l.c, l.x, l.W, T, I, O, 0);
    cr_expect_arr_eq(dx2, dx, T * I * 4, "acc=0 writes dx");
    free(dx), free(dW), free(db), free(dx2), free(dW2), free(db2);
    free(l.x), free(l.W), free(l.b), free(l.c), free(l.y);
}

/* ---- rmsnorm */
typedef struct { float *x, *w, *c, *y; int T, C; } rms_ctx;
static double rms_f(void *p) {
    rms_ctx *l = p;
    REF->rmsnorm(l->y, NULL, l->x, l->w, l->T, l->C, 1e-5f);
    return dot(l->c, l->y, (size_t)l->T * l->C);
}

Test(backend_ops, ref_rmsnorm) {
    float x[4] = {3, 3, -3, 3}, w[4] = {1, 2, 3, 4}, y[4], rinv;
    REF->rmsnorm(y, &rinv, x, w, 1, 4, 0.0f); /* rms = 3 */
    float want[4] = {1, 2, -3, 4};
    for (int i = 0; i < 4; i++) cr_expect_float_eq(y[i], want[i], 1e-6, "rmsnorm by hand %d", i);
    cr_expect_float_eq(rinv, 1.0f / 3, 1e-7, "rinv by hand");

    rng r = {2};
    int T = 3, C = 6;
    rms_ctx l = {urand(&r, T * C, 2), urand(&r, C, 1), urand(&r, T * C, 1), urand(&r, T * C, 1), T, C};
    float *ri = malloc(T * 4), *dx = malloc(T * C * 4), *dw = calloc(C, 4);
    REF->rmsnorm(l.y, ri, l.x, l.w, T, C, 1e-5f);
    REF->rmsnorm_bwd(dx, dw, l.c, l.x, l.w, ri, T, C, 0);
    fd_nmse(rms_f, &l, l.x, dx, T * C, "rmsnorm_bwd dx");
    fd_nmse(rms_f, &l, l.w, dw, C, "rmsnorm_bwd dw");
    float *dx2 = malloc(T * C * 4), *dw2 = malloc(C * 4);
    for (int i = 0; i < T * C; i++) dx2[i] = 1.0f;
    for (int i = 0; i < C; i++) dw2[i] = -1.0f;
    REF->rmsnorm_bwd(dx2, dw2, l.c, l.x, l.w, ri, T, C, 1);
    for (int i = 0; i < T * C; i++) cr_expect_float_eq(dx2[i], dx[i] + 1.0f, 1e-6, "acc dx");
    for (int i = 0; i < C; i++) cr_expect_float_eq(dw2[i], dw[i] - 1.0f, 1e-6, "dw accumulates");
    free(ri), free(dx), free(dw), free(dx2), free(dw2), free(l.x), free(l.w), free(l.c), free(l.y);
}

/* ---- rope: position 0 is the identity; a quarter turn by hand; rope_bwd is its transpose and inverse */
Test(backend_ops, ref_rope) {
    float f[2] = {1.0f, 0.5f}, x[4] = {1, 2, 3, 4};
    REF->rope(x, 1, 1, 4, 0, f);
    float id[4] = {1, 2, 3, 4};
    cr_expect_arr_eq(x, id, sizeof x, "position 0 leaves x");
    float q[2] = {(float)(M_PI / 2), 0.0f}, y[4] = {1, 2, 3, 4}; /* pair (0,2) turned by pi/2, pair (1,3) by 0 */
    REF->rope(y, 1, 1, 4, 1, q);
    float want[4] = {-3, 2, 1, 4};
    for (int i = 0; i < 4; i++) cr_expect_float_eq(y[i], want[i], 1e-6, "quarter turn %d", i);

    rng r = {3};
    int T = 5, H = 3, hd = 8, n = T * H * hd, pos0 = 17;
    float *inv = malloc(hd / 2 * 4);
    for (int i = 0; i < hd / 2; i++) inv[i] = (float)pow(10000.0, -2.0 * i / hd);
    float *a = urand(&r, n, 1), *b = urand(&r, n, 1), *ra = malloc(n * 4), *rb = malloc(n * 4);
    memcpy(ra, a, n * 4);
    memcpy(rb, b, n * 4);
    REF->rope(ra, T, H, hd, pos0, inv);
    REF->rope_bwd(rb, T, H, hd, pos0, inv);
    double l = dot(ra, b, n), rr = dot(a, rb, n);
    cr_expect(fabs(l - rr) <= 1e-6 * fabs(l), "<rope a, b> = <a, rope_bwd b>: %.9g vs %.9g", l, rr);
    REF->rope_bwd(ra, T, H, hd, pos0, inv);
    for (int i = 0; i < n; i++) cr_expect_float_eq(ra[i], a[i], 1e-6, "rope_bwd undoes rope %d", i);
    free(inv), free(a), free(b), free(ra), free(rb);
}

/* ---- attention */
typedef struct { float *q, *k, *v, *c, *out; int T, H, KV, hd; } att_ctx;
static double att_f(void *p) {
    att_ctx *l = p;
    REF->attention(l->out, l->q, l->k, l->v, l->T, 0, l->H, l->KV, l->hd);
    return dot(l->c, l->out, (size_t)l->T * l->H * l->hd);
}

Test(backend_ops, ref_attention) {
    rng r = {4};
    /* T = 1 at position 0: the one visible value, of each head's group */
    int H = 4, KV = 2, hd = 3;
    float *q = urand(&r, H * hd, 1), *k = urand(&r, KV * hd, 1), *v = urand(&r, KV * hd, 1), out[12];
    REF->attention(out, q, k, v, 1, 0, H, KV, hd);
    for (int h = 0; h < H; h++)
        for (int d = 0; d < hd; d++) cr_expect_float_eq(out[h * hd + d], v[(h / 2) * hd + d], 1e-7, "T=1: out = v");
    free(q), free(k), free(v);
    /* equal keys: the mean of the visible values (query at position 2 sees 3) */
    float q1[2] = {1, 2}, k1[6] = {1, 1, 1, 1, 1, 1}, v1[6] = {1, 2, 3, 4, 8, 9}, o1[2];
    REF->attention(o1, q1, k1, v1, 1, 2, 1, 1, 2);
    cr_expect_float_eq(o1[0], 4.0f, 1e-6, "mean of visible values");
    cr_expect_float_eq(o1[1], 5.0f, 1e-6, "mean of visible values");
    /* two keys by hand: scores (q.k)/sqrt(2) = 0 and ln 3 -> weights 1/4, 3/4 */
    float q2[2] = {(float)(log(3.0) * sqrt(2.0)), 0}, k2[4] = {0, 0, 1, 0}, v2[4] = {4, 0, 0, 8}, o2[2];
    REF->attention(o2, q2, k2, v2, 1, 1, 1, 1, 2);
    cr_expect_float_eq(o2[0], 1.0f, 1e-6, "softmax by hand");
    cr_expect_float_eq(o2[1], 6.0f, 1e-6, "softmax by hand");

    int T = 5;
    H = 4, KV = 2, hd = 4;
    size_t nq = T * H * hd, nk = T * KV * hd;
    att_ctx l = {urand(&r, nq, 1.5f), urand(&r, nk, 1.5f), urand(&r, nk, 1), urand(&r, nq, 1), malloc(nq * 4),
                 T, H, KV, hd};
    float *dq = malloc(nq * 4), *dk = malloc(nk * 4), *dv = malloc(nk * 4);
    REF->attention_bwd(dq, dk, dv, l.c, l.q, l.k, l.v, T, H, KV, hd);
    fd_nmse(att_f, &l, l.q, dq, nq, "attention_bwd dq (GQA 4/2)");
    fd_nmse(att_f, &l, l.k, dk, nk, "attention_bwd dk (GQA 4/2)");
    fd_nmse(att_f, &l, l.v, dv, nk, "attention_bwd dv (GQA 4/2)");
    free(dq), free(dk), free(dv), free(l.q), free(l.k), free(l.v), free(l.c), free(l.out);
}

/* ---- swiglu, add, embed */
typedef struct { float *g, *u, *c, *h; int n; } swi_ctx;
static double swi_f(void *p) {
    swi_ctx *l = p;
    REF->swiglu(l->h, l->g, l->u, l->n);
    return dot(l->c, l->h, l->n);
}

Test(backend_ops, ref_elementwise) {
    float g[3] = {0, 2, -1}, u[3] = {5, 3, 2}, h[3];
    REF->swiglu(h, g, u, 3);
    cr_expect_float_eq(h[0], 0.0f, 1e-7, "silu(0) = 0");
    cr_expect_float_eq(h[1], (float)(2 / (1 + exp(-2.0)) * 3), 1e-6, "silu by hand");
    cr_expect_float_eq(h[2], (float)(-1 / (1 + exp(1.0)) * 2), 1e-6, "silu by hand");
    float y[3] = {1, 2, 3}, a[3] = {0.5f, -2, 4};
    REF->add(y, a, 3);
    cr_expect(y[0] == 1.5f && y[1] == 0 && y[2] == 7, "add by hand");
    float E[6] = {1, 2, 3, 4, 5, 6}, xe[6];
    int32_t ids[3] = {2, 0, 2};
    REF->embed(xe, E, ids, 3, 2);
    float we[6] = {5, 6, 1, 2, 5, 6};
    cr_expect_arr_eq(xe, we, sizeof xe, "embed by hand");
    /* embed_bwd: repeated ids sum, out-of-range ids are ignored, dE accumulates */
    float dE[6] = {1, 1, 1, 1, 1, 1}, dx[8] = {1, 2, 10, 20, 100, 200, 7, 7};
    int32_t ids2[4] = {2, 0, 2, 3};
    REF->embed_bwd(dE, dx, ids2, 4, 2, 3);
    float wd[6] = {11, 21, 1, 1, 102, 203};
    cr_expect_arr_eq(dE, wd, sizeof dE, "embed_bwd by hand");

    rng r = {5};
    int n = 40;
    swi_ctx l = {urand(&r, n, 5), urand(&r, n, 2), urand(&r, n, 1), malloc(n * 4), n};
    float *dg = malloc(n * 4), *du = malloc(n * 4);
    REF->swiglu_bwd(dg, du, l.c, l.g, l.u, n);
    fd_nmse(swi_f, &l, l.g, dg, n, "swiglu_bwd dg");
    fd_nmse(swi_f, &l, l.u, du, n, "swiglu_bwd du");
    free(dg), free(du), free(l.g), free(l.u), free(l.c), free(l.h);
}

/* ---- losses: values by hand, gradients against finite differences of the value */
typedef struct { const char *op; float *a, *b; const int32_t *ids; int T, V, K; float tau; double norm; } loss_ctx;
static double loss_f(void *p) {
    loss_ctx *l = p;
    if (!strcmp(l->op, "ce")) return REF->loss_ce(l->a, l->ids, l->T, l->V, l->norm, NULL);
    if (!strcmp(l->op, "kl")) return REF->loss_kl(l->a, l->b, l->T, l->V, l->tau, l->norm, NULL);
    if (!strcmp(l->op, "topk")) return REF->loss_kl_topk(l->a, l->ids, l->b, l->T, l->V, l->K, l->tau, l->norm, NULL);
    if (!strcmp(l->op, "cos")) return REF->loss_cosine(l->a, l->b, l->T, l->V, l->norm, NULL);
    if (!strcmp(l->op, "nmse")) return REF->loss_nmse(l->a, l->b, l->T, l->V, l->norm, NULL);
    return REF->loss_kl_batch(l->a, l->b, l->T, (size_t)l->V, l->norm, NULL); /* T = B rows, V = n */
}

Test(backend_ops, ref_losses) {
    /* values by hand */
    float z0[8] = {0}, z1[4] = {0, 0, (float)log(3.0), 0};
    int32_t y0[2] = {3, -1}, y1[1] = {2};
    double lse[2];
    REF->logsumexp(z0, 2, 4, lse);
    cr_expect(fabs(lse[0] - log(4.0)) < 1e-12, "logsumexp of zeros = log V");
    float big[3] = {1000, 1000, 1000};
    REF->logsumexp(big, 1, 3, lse);
    cr_expect(fabs(lse[0] - (1000 + log(3.0))) < 1e-9, "logsumexp stable at 1000: %.12g", lse[0]);
    cr_expect(fabs(REF->loss_ce(z0, y0, 2, 4, 0, NULL) - log(4.0)) < 1e-12,
              "ce uniform = log V (ignored row not counted)");
    cr_expect(fabs(REF->loss_ce(z1, y1, 1, 4, 0, NULL) - log(2.0)) < 1e-7, "ce: p = 3/6");
    float d0[8];
    REF->loss_ce(z0, y0, 2, 4, 2.0, d0);
    cr_expect(d0[3] == (float)((0.25 - 1) / 2) && d0[0] == (float)(0.25 / 2) && d0[4] == 0, "ce gradient by hand");
    float za[4] = {1, 2, 3, 4};
    cr_expect(fabs(REF->loss_kl(za, za, 1, 4, 2.0f, 0, NULL)) < 1e-15, "kl of equal rows = 0");
    float ca[2] = {2, 0}, cb[2] = {1, 0}, cc[2] = {0, 5};
    cr_expect(fabs(REF->loss_cosine(ca, cb, 1, 2, 0, NULL)) < 1e-15, "cosine of parallel rows = 0");
    cr_expect(fabs(REF->loss_cosine(ca, cc, 1, 2, 0, NULL) - 1) < 1e-15, "cosine of orthogonal rows = 1");
    cr_expect(fabs(REF->loss_nmse(ca, cb, 1, 2, 0, NULL) - 1) < 1e-15, "nmse |2-1|^2 / 1 = 1");
    float s2[2] = {0, 0}, t2[2] = {(float)log(3.0), 0}; /* B = 2, n = 1: s = (1/2, 1/2), t = (3/4, 1/4) */
    double want = (0.75 * log(1.5) + 0.25 * log(0.5)) / 2;
    cr_expect(fabs(REF->loss_kl_batch(s2, t2, 2, 1, 0, NULL) - want) < 1e-7, "kl_batch by hand");

    rng r = {6};
    int T = 3, V = 7, K = 3;
    float *zs = urand(&r, T * V, 3), *zt = urand(&r, T * V, 3), *d = malloc(T * V * 4);
    int32_t tg[3] = {4, -1, 0};
    loss_ctx l = {"ce", zs, zt, tg, T, V, 0, 1, 0};
    REF->loss_ce(zs, tg, T, V, 0, d);
    fd_nmse(loss_f, &l, zs, d, T * V, "loss_ce dlogits (one ignored)");
    l = (loss_ctx){"kl", zs, zt, NULL, T, V, 0, 2.0f, 5.0};
    REF->loss_kl(zs, zt, T, V, 2.0f, 5.0, d);
    fd_nmse(loss_f, &l, zs, d, T * V, "loss_kl dzs (tau 2)");
    int32_t ids[9];
    float zk[9];
    top_k(zt, T, V, K, ids, zk);
    l = (loss_ctx){"topk", zs, zk, ids, T, V, K, 0.5f, 0};
    REF->loss_kl_topk(zs, ids, zk, T, V, K, 0.5f, 0, d);
    fd_nmse(loss_f, &l, zs, d, T * V, "loss_kl_topk dzs (K 3, tau 0.5)");
    /* K = V: the dense KL */
    int32_t ids7[21];
    float zk7[21];
    top_k(zt, T, V, V, ids7, zk7);
    double dense = REF->loss_kl(zs, zt, T, V, 1.5f, 0, NULL);
    double sparse = REF->loss_kl_topk(zs, ids7, zk7, T, V, V, 1.5f, 0, NULL);
    cr_expect(fabs(dense - sparse) <= 1e-12 * fabs(dense), "top K = V equals the dense KL: %.15g vs %.15g", sparse,
              dense);
    l = (loss_ctx){"cos", zs, zt, NULL, T, V, 0, 0, 0};
    REF->loss_cosine(zs, zt, T, V, 0, d);
    fd_nmse(loss_f, &l, zs, d, T * V, "loss_cosine da");
    l = (loss_ctx){"nmse", zs, zt, NULL, T, V, 0, 0, 4.0};
    REF->loss_nmse(zs, zt, T, V, 4.0, d);
    fd_nmse(loss_f, &l, zs, d, T * V, "loss_nmse da");
    l = (loss_ctx){"batch", zs, zt, NULL, T, V, 0, 0, 0}; /* B = 3 rows of n = 7 */
    REF->loss_kl_batch(zs, zt, T, V, 0, d);
    fd_nmse(loss_f, &l, zs, d, T * V, "loss_kl_batch dS");
    free(zs), free(zt), free(d);
}

/* ---- FuseGPT */
typedef struct { float *W, *P, *A, *B, *U, *V, *G, *We; int O, I, r; } fuse_ctx;
static double fuse_f(void *p) {
    fuse_ctx *l = p;
    REF->fuse_weight(l->We, l->W, l->P, l->A, l->B, l->U, l->V, l->O, l->I, l->r, NULL);
    return dot(l->G, l->We, (size_t)l->O * l->I);
}

Test(backend_ops, ref_fuse) {
    /* by hand, out = in = 2, r = 1: W + B A + (U V) * P */
    float W[4] = {1, 2, 3, 4}, P[4] = {1, 0, 2, 1}, A[2] = {1, 2}, B[2] = {1, -1}, U[2] = {2, 3}, V[2] = {1, 1}, We[4];
    REF->fuse_weight(We, W, P, A, B, U, V, 2, 2, 1, NULL);
    float want[4] = {1 + 1 + 2, 2 + 2 + 0, 3 - 1 + 6, 4 - 2 + 3};
    cr_expect_arr_eq(We, want, sizeof We, "fuse_weight by hand");
    REF->fuse_weight(We, W, NULL, A, B, U, V, 2, 2, 1, NULL);
    float want2[4] = {2, 4, 2, 2};
    cr_expect_arr_eq(We, want2, sizeof We, "fuse_weight without P");

    rng r = {7};
    int O = 4, I = 5, R = 2;
    fuse_ctx l = {urand(&r, O * I, 1), urand(&r, O * I, 1), urand(&r, R * I, 1), urand(&r, O * R, 1),
                  urand(&r, O * R, 1), urand(&r, R * I, 1), urand(&r, O * I, 1), malloc(O * I * 4), O, I, R};
    float *dA = malloc(R * I * 4), *dB = malloc(O * R * 4), *dU = malloc(O * R * 4), *dV = malloc(R * I * 4);
    REF->fuse_weight_bwd(dA, dB, dU, dV, l.G, l.P, l.A, l.B, l.U, l.V, O, I, R, NULL);
    fd_nmse(fuse_f, &l, l.A, dA, R * I, "fuse_weight_bwd dA");
    fd_nmse(fuse_f, &l, l.B, dB, O * R, "fuse_weight_bwd dB");
    fd_nmse(fuse_f, &l, l.U, dU, O * R, "fuse_weight_bwd dU");
    fd_nmse(fuse_f, &l, l.V, dV, R * I, "fuse_weight_bwd dV");
    free(dA), free(dB), free(dU), free(dV);
    free(l.W), free(l.P), free(l.A), free(l.B), free(l.U), free(l.V), free(l.G), free(l.We);
}
