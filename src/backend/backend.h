/* backend.h - the compute operations the model code is written against.
 *
 * One struct of function pointers per device. The CPU backend (cpu.c) uses
 * OpenBLAS for every matrix product and OpenMP for the rest; the reference
 * backend (ref.c) is plain loops with double accumulation, the oracle of the
 * op-parity test (tests/test_backend_ops.c). A device backend implements the
 * same table. Model code never calls BLAS or a device API directly, so a new
 * device slots in without touching it.
 *
 * Residency: every tensor an op reads or writes (weights, activations,
 * gradients, optimizer state) is memory of that backend, allocated with
 * alloc() and moved with upload()/download()/copy(). A backend with is_host = 1
 * (cpu, ref) works on host memory: a memory-mapped weight file is used in
 * place, with no copy. Arguments documented as "host" (token ids, lse of
 * logsumexp, RoPE's inv_freq, the AdamW coefficients) are always host memory;
 * everything else, rmsnorm's rinv included, is backend memory. All matrices
 * row-major. */
#ifndef MF_BACKEND_H
#define MF_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include "util/dtype.h"

/* Element type of a weight matrix (util/dtype.h). Trainable tensors are always
 * MF_DT_F32; frozen ones (a teacher, eval, score, the frozen base of a fusion
 * window) may be held in 16 bits, MF_DT_BF16 or MF_DT_F16 (--weights). */

/* The per-step scalars of one AdamW update (src/train/optim.c computes them,
 * rounded to float as torch does): decay = 1 - lr*wd (1 for a tensor that does
 * not decay), w1 = 1 - beta1, b2 = beta2, c2 = 1 - beta2, bc2_sqrt =
 * sqrt(1 - beta2^t), eps, neg_step = -lr / (1 - beta1^t). */
typedef struct mf_adamw_coef {
    float decay, w1, b2, c2, bc2_sqrt, eps, neg_step;
} mf_adamw_coef;

typedef struct mf_backend mf_backend;
struct mf_backend {
    const char *name;

    /* memory: alloc never returns NULL (a failure is fatal, naming the size) */
    int is_host;                 /* 1: backend pointers are host pointers (zero-copy upload of mapped weights) */
    void *(*alloc)(size_t bytes);
    void (*free)(void *p);
    void (*upload)(void *dst, const void *host_src, size_t bytes);
    void (*download)(void *host_dst, const void *src, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes); /* device to device */
    void (*zero)(void *p, size_t bytes);
    void (*sync)(void);          /* wait for queued work (no-op on host backends) */

    /* y[T][n_out] (=|+=) x[T][n_in] . W[n_out][n_in]^T (+ b[n_out]); accumulate adds into y */
    void (*linear)(float *y, const float *x, const float *w, const float *b, int T, int n_in, int n_out, int accumulate);

    /* y[T][C] = x / rms(x) * w, rms over C with eps; rinv[T] (backend memory, may be NULL) gets 1/rms per row */
    void (*rmsnorm)(float *y, float *rinv, const float *x, const float *w, int T, int C, float eps);

    /* rotate-half RoPE in place on x[T][n_heads*hd] at positions pos0..pos0+T-1; inv_freq[hd/2] (host) */
    void (*rope)(float *x, int T, int n_heads, int hd, int pos0, const float *inv_freq);

    /* Causal GQA attention for T new tokens at positions pos0.. against a cache
     * of n_ctx = pos0+T keys/values: q[T][nh*hd], k/v cache [n_ctx][nkv*hd],
     * out[T][nh*hd]. Scale 1/sqrt(hd). */
    void (*attention)(float *out, const float *q, const float *kc, const float *vc, int T, int pos0, int n_heads,
                      int n_kv, int hd);

    /* h[n] = silu(g[n]) * u[n] */
    void (*swiglu)(float *h, const float *g, const float *u, size_t n);

    /* y[n] += x[n] */
    void (*add)(float *y, const float *x, size_t n);

    /* x[T][C] = table[ids[t]][C] (ids in host memory) */
    void (*embed)(float *x, const float *table, const int32_t *ids, int T, int C);

    /* Half-precision weights (frozen models only; no backward): the same as
     * linear and embed with w/table holding 16-bit values of type dt
     * (MF_DT_BF16 or MF_DT_F16), x/y float32, float32 accumulation. */
    void (*linear_h)(float *y, const float *x, const uint16_t *w, mf_dtype dt, const float *b, int T, int n_in,
                     int n_out, int accumulate);
    void (*embed_h)(float *x, const uint16_t *table, mf_dtype dt, const int32_t *ids, int T, int C);

    /* Per row of logits[T][V]: logsumexp, into lse[T] (host memory). */
    void (*logsumexp)(const float *logits, int T, int V, double *lse);
    /* Per row: nll[t] = logsumexp(logits[t]) - logits[t][targets[t]], into nll[T]
     * (host memory); targets host memory, each in [0, V). Perplexity without
     * the logits leaving the device: T doubles come back. */
    void (*nll)(const float *logits, const int32_t *targets, int T, int V, double *nll);
    /* Per row of two logits[T][V], p = softmax(zp), q = softmax(zq): kl[t] =
     * KL(p || q) = sum_i p_i (log p_i - log q_i) and same[t] = (argmax zp[t] ==
     * argmax zq[t]), the first index of a maximum, into host memory (eval
     * --ref-model without the logits leaving the device). */
    void (*kl_rows)(const float *zp, const float *zq, int T, int V, double *kl, int32_t *same);

    /* ---- training: backward of each op (parameter gradients accumulate; NULL
     * skips one; `acc` says whether the input gradient is added or written) and
     * the losses with their gradients (written). Semantics: cpu_backward.h. ---- */
    void (*linear_bwd)(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W, int T, int n_in,
                       int n_out, int acc);
    void (*rmsnorm_bwd)(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rinv, int T,
                        int C, int acc);
    void (*rope_bwd)(float *dx, int T, int n_heads, int hd, int pos0, const float *inv_freq);
    void (*attention_bwd)(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                          const float *v, int T, int n_heads, int n_kv, int hd);
    void (*swiglu_bwd)(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n);
    void (*embed_bwd)(float *dE, const float *dx, const int32_t *ids, int T, int C, int V);
    double (*loss_ce)(const float *logits, const int32_t *targets, int T, int V, double norm, float *dlogits);
    double (*loss_kl)(const float *zs, const float *zt, int T, int V, float tau, double norm, float *dzs);
    double (*loss_kl_topk)(const float *zs, const int32_t *ids, const float *zt_k, int T, int V, int K, float tau,
                           double norm, float *dzs);
    double (*loss_cosine)(const float *a, const float *b, int T, int C, double norm, float *da);
    double (*loss_nmse)(const float *a, const float *b, int T, int C, double norm, float *da);
    /* FuseGPT: low-rank fused weight, its backward, batch-axis softmax KL */
    void (*fuse_weight)(float *W_eff, const float *W, const float *P, const float *A, const float *B, const float *U,
                        const float *V, int out, int in, int r, float *scratch);
    void (*fuse_weight_bwd)(float *dA, float *dB, float *dU, float *dV, const float *G, const float *P, const float *A,
                            const float *B, const float *U, const float *V, int out, int in, int r, float *scratch);
    double (*loss_kl_batch)(const float *S, const float *Tt, int B, size_t n, double norm, float *dS);

    /* ---- optimizer on the backend's memory (optim.c's formula, element by element):
     *   g = grad[j] * scale ; p = p * decay ; m = fmaf(w1, g - m, m) ; v = fmaf(c2 g, g, v b2)
     *   p += neg_step * m / (sqrtf(v) / bc2_sqrt + eps)      for j < n (p, m, v updated in place; k is host memory) */
    void (*adamw)(float *p, const float *grad, float *m, float *v, size_t n, float scale, const mf_adamw_coef *k);
    /* sum_j x[j]^2 in double (global-norm clipping) */
    double (*sumsq)(const float *x, size_t n);
};

const mf_backend *mf_backend_cpu(void);
/* Plain loops, double accumulation: slow and obviously correct (ref.c). */
const mf_backend *mf_backend_ref(void);
/* The cpu backend's ops behind a device's rules (devsim.c): is_host = 0 and
 * memory host code cannot touch, so that the device code paths run and are
 * checked on any machine. For tests; results are the cpu backend's bits. */
const mf_backend *mf_backend_devsim(void);
#ifdef MF_CUDA
/* cuda/ (make CUDA=1): cuBLAS + kernels on the GPU of this rank (local rank
 * mod device count). Without a usable device it is fatal with one line. */
const mf_backend *mf_backend_cuda(void);
/* The number of CUDA devices (0 when there is none or the driver fails; then
 * why[n] says what cudaGetDeviceCount answered). Never fatal. */
int mf_cuda_device_count(char *why, size_t n);
#endif
/* Pick by name: "cpu", "ref", "devsim" (and "cuda" in a CUDA build); NULL for any other name. */
const mf_backend *mf_backend_get(const char *name);
/* The names mf_backend_get accepts, for messages ("cpu, ref"). */
const char *mf_backend_names(void);
/* --backend's help line: only what this build can run. */
#ifdef MF_CUDA
#define MF_BACKEND_HELP \
    "compute backend: cpu (default: OpenBLAS + OpenMP), ref (plain loops, for checking), devsim (cpu behind device rules, for testing) or cuda (cuBLAS, one GPU per rank)"
#else
#define MF_BACKEND_HELP \
    "compute backend: cpu (default: OpenBLAS + OpenMP), ref (plain loops, for checking) or devsim (cpu behind device rules, for testing)"
#endif

#endif
