/* cuda_backend.h - the CUDA backend's shared state and the entry points of its
 * kernel files (one .cu per family of ops), declared for C (backend_cuda.c
 * builds the table) and C++ (the .cu files). Semantics of every op:
 * src/backend/backend.h and src/backend/cpu_backward.h; a kernel computes the
 * same formula as the CPU function named next to it. All pointers are device
 * memory except those documented as host (token ids, targets, lse, the AdamW
 * coefficients). Every op is queued on the backend's one stream; ops that
 * return a value to the host (losses, logsumexp, sumsq) wait for it. */
#ifndef MF_CUDA_BACKEND_H
#define MF_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The state of this process's device (one rank, one GPU): set up once by
 * mf_backend_cuda(). */
typedef struct mf_cuda_ctx {
    int device;               /* the CUDA device this rank uses */
    cudaStream_t stream;      /* every op and copy is queued here */
    cublasHandle_t blas;      /* bound to stream */
    cublasComputeType_t math; /* of the float32 products (linear, its backward, fuse_weight): MINIFUSE_CUDA_MATH
                               * fp32 (default: CUBLAS_COMPUTE_32F, plain SGEMM), tf32 (_32F_FAST_TF32) or
                               * bf16 (_32F_FAST_16BF: operands rounded to bf16 on the tensor cores, FP32 sums) */
    const char *math_name;    /* "fp32", "tf32", "bf16" */
    void *blas_ws;            /* cuBLAS workspace (fixed, so GEMMs allocate nothing) */
    size_t blas_ws_bytes;
} mf_cuda_ctx;

/* The initialized context (fatal if mf_backend_cuda() has not set it up). */
mf_cuda_ctx *mf_cuda_ctx_get(void);
/* The stream of the backend (for the NCCL collectives). */
cudaStream_t mf_cuda_stream(void);

/* Scratch buffers in device memory, one per slot, grown on demand (the stream
 * is synchronized before a buffer is replaced). Valid until the next call with
 * the same slot; an op uses its slots only while it runs. */
enum {
    MF_CS_A = 0, /* per-op scratch: lse of attention, 16-bit x of linear_h, row sums */
    MF_CS_B,     /* attention_bwd: the recomputed output; row losses */
    MF_CS_C,     /* attention_bwd: D = rowsum(dout * out) */
    MF_CS_IDS,   /* token ids / targets uploaded from host */
    MF_CS_N
};
void *mf_cuda_scratch(int slot, size_t bytes);

/* Fatal one-line errors naming the CUDA/cuBLAS call and the op. */
void mf_cuda_fail(const char *op, const char *call, const char *what, const char *file, int line);
#define CUDA_CHECK(op, call)                                                                                      \
    do {                                                                                                          \
        cudaError_t e_ = (call);                                                                                  \
        if (e_ != cudaSuccess) mf_cuda_fail(op, #call, cudaGetErrorString(e_), __FILE__, __LINE__);              \
    } while (0)
#define CUBLAS_CHECK(op, call)                                                                                    \
    do {                                                                                                          \
        cublasStatus_t s_ = (call);                                                                               \
        if (s_ != CUBLAS_STATUS_SUCCESS) mf_cuda_fail(op, #call, cublasGetStatusString(s_), __FILE__, __LINE__); \
    } while (0)
/* after a kernel launch: launch errors (bad configuration) name the op */
#define CUDA_LAUNCHED(op) CUDA_CHECK(op, cudaGetLastError())

/* host copies on the stream, waiting for them (pageable host memory) */
void mf_cuda_to_host(const char *op, void *host_dst, const void *dev_src, size_t bytes);
void mf_cuda_to_dev(const char *op, void *dev_dst, const void *host_src, size_t bytes);

/* ---- matmul.cu (cuBLAS / cuBLASLt) ---- */
void mf_cuda_linear(float *y, const float *x, const float *w, const float *b, int T, int n_in, int n_out, int acc);
void mf_cuda_linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W, int T,
                        int n_in, int n_out, int acc);
void mf_cuda_linear_h(float *y, const float *x, const uint16_t *w, mf_dtype dt, const float *b, int T, int n_in,
                      int n_out, int acc);
void mf_cuda_fuse_weight(float *W_eff, const float *W, const float *P, const float *A, const float *B, const float *U,
                         const float *V, int out, int in, int r, float *scratch);
void mf_cuda_fuse_weight_bwd(float *dA, float *dB, float *dU, float *dV, const float *G, const float *P,
                             const float *A, const float *B, const float *U, const float *V, int out, int in, int r,
                             float *scratch);

/* ---- norm_rope.cu ---- */
void mf_cuda_rmsnorm(float *y, float *rinv, const float *x, const float *w, int T, int C, float eps);
void mf_cuda_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rinv,
                         int T, int C, int acc);
void mf_cuda_rope(float *x, int T, int n_heads, int hd, int pos0, const float *inv_freq);
void mf_cuda_rope_bwd(float *dx, int T, int n_heads, int hd, int pos0, const float *inv_freq);

/* ---- attention.cu ---- */
void mf_cuda_attention(float *out, const float *q, const float *kc, const float *vc, int T, int pos0, int n_heads,
                       int n_kv, int hd);
void mf_cuda_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                           const float *v, int T, int n_heads, int n_kv, int hd);

/* ---- elementwise.cu ---- */
void mf_cuda_swiglu(float *h, const float *g, const float *u, size_t n);
void mf_cuda_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n);
void mf_cuda_add(float *y, const float *x, size_t n);
void mf_cuda_embed(float *x, const float *table, const int32_t *ids, int T, int C);
void mf_cuda_embed_h(float *x, const uint16_t *table, mf_dtype dt, const int32_t *ids, int T, int C);
void mf_cuda_embed_bwd(float *dE, const float *dx, const int32_t *ids, int T, int C, int V);

/* ---- losses.cu ---- */
void mf_cuda_logsumexp(const float *logits, int T, int V, double *lse);
void mf_cuda_nll(const float *logits, const int32_t *targets, int T, int V, double *nll);
void mf_cuda_kl_rows(const float *zp, const float *zq, int T, int V, double *kl, int32_t *same);
double mf_cuda_loss_ce(const float *logits, const int32_t *targets, int T, int V, double norm, float *dlogits);
double mf_cuda_loss_kl(const float *zs, const float *zt, int T, int V, float tau, double norm, float *dzs);
double mf_cuda_loss_kl_topk(const float *zs, const int32_t *ids, const float *zt_k, int T, int V, int K, float tau,
                            double norm, float *dzs);
double mf_cuda_loss_cosine(const float *a, const float *b, int T, int C, double norm, float *da);
double mf_cuda_loss_nmse(const float *a, const float *b, int T, int C, double norm, float *da);
double mf_cuda_loss_kl_batch(const float *S, const float *Tt, int B, size_t n, double norm, float *dS);

/* ---- optimizer.cu ---- */
void mf_cuda_adamw(float *p, const float *grad, float *m, float *v, size_t n, float scale, const mf_adamw_coef *k);
double mf_cuda_sumsq(const float *x, size_t n);

#ifdef __cplusplus
}
#endif

#endif
