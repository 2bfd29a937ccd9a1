/* cpu_backward.h - the training ops of the CPU backend: the forward of each op of the
 * Llama block in the form the backward needs (saving the inverse rms, ...),
 * the backward of each op, and the losses with their gradients.
 *
 * All matrices row-major, HF layout (Linear W is [out][in], y = x W^T + b).
 * Matrix products go through OpenBLAS cblas_sgemm, elementwise loops through
 * OpenMP, reductions are summed in double. Backward functions ACCUMULATE into
 * parameter gradients (dW, db, dw += ...); the gradient w.r.t. the op input
 * is written or accumulated as the `acc` flag says. A NULL gradient pointer
 * skips that gradient (a frozen parameter). Reductions run in fixed orders,
 * so a given thread count repeats results bit for bit. */
#ifndef MF_CPU_BACKWARD_H
#define MF_CPU_BACKWARD_H

#include <stddef.h>
#include <stdint.h>

/* ---- linear: y[T][n_out] (acc ? += : =) x[T][n_in] W[n_out][n_in]^T (+ b[n_out]) ---- */
void mf_linear_fwd(float *y, const float *x, const float *W, const float *b, int T, int n_in, int n_out, int acc);
/* dx[T][n_in] (acc ? += : =) dy W;  dW[n_out][n_in] += dy^T x;  db[n_out] += sum_t dy[t] */
void mf_linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W, int T, int n_in,
                   int n_out, int acc);

/* ---- RMSNorm: y = x * r * w with r[t] = 1 / sqrt(mean_i x[t][i]^2 + eps) ---- */
void mf_rmsnorm_fwd(float *y, float *rinv /* [T] */, const float *x, const float *w, int T, int C, float eps);
/* dx[T][C] (acc ? += : =) r (g - x r^2 mean(g x)) with g = dy w;  dw[C] += sum_t dy x r */
void mf_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rinv, int T,
                    int C, int acc);

/* ---- rotate-half RoPE in place on x[T][n_heads*hd], positions pos0.. ---- */
void mf_rope_fwd(float *x, int T, int n_heads, int hd, int pos0, const float *inv_freq);
/* The transpose of the rotation (rotation by -angle), in place on dx. */
void mf_rope_bwd(float *dx, int T, int n_heads, int hd, int pos0, const float *inv_freq);

/* ---- causal GQA self-attention over T tokens, scale 1/sqrt(hd) ----
 * q[T][H*hd] (post-RoPE), k, v [T][KV*hd], out [T][H*hd]; head h reads kv group h / (H/KV). */
void mf_attention_fwd(float *out, const float *q, const float *k, const float *v, int T, int n_heads, int n_kv, int hd);
/* dq[T][H*hd], dk, dv [T][KV*hd] (all written) from dout; the softmax
 * probabilities are recomputed per head (memory O(T^2) per thread only). */
void mf_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k, const float *v,
                      int T, int n_heads, int n_kv, int hd);

/* ---- SwiGLU: h = silu(g) * u ---- */
void mf_swiglu_fwd(float *h, const float *g, const float *u, size_t n);
/* dg, du written. */
void mf_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n);

/* ---- embedding: x[t] = E[ids[t]] ---- */
/* dE[V][C] row ids[t] += dx[t]. The rows of each distinct id are first summed
 * in token order from zero, then added to dE (so gradients from another source,
 * e.g. a tied head, combine the same way whichever is added first). Ids
 * outside [0, V) are ignored. */
void mf_embed_bwd(float *dE, const float *dx, const int32_t *ids, int T, int C, int V);

/* ---- losses: return the loss; the gradient (if non-NULL) is WRITTEN ----
 * norm: the divisor of the summed per-token losses (the number of tokens the
 * mean is over, e.g. across micro-batches); norm <= 0 means the number of
 * tokens counted in this call. */

/* Softmax cross-entropy: sum_t (logsumexp(z[t]) - z[t][targets[t]]) / norm over
 * the t with 0 <= targets[t] < V (others are ignored and get zero gradient).
 * dlogits = (softmax(z) - onehot) / norm. */
double mf_loss_ce(const float *logits, const int32_t *targets, int T, int V, double norm, float *dlogits);

/* Forward KL(teacher || student) with temperature tau (Minitron):
 * sum_t tau^2 sum_v p_t (log p_t - log p_s) / norm, p = softmax(z / tau).
 * dzs = tau (p_s - p_t) / norm. */
double mf_loss_kl(const float *zs, const float *zt, int T, int V, float tau, double norm, float *dzs);

/* Hidden-state losses on a[T][C] (student) against b[T][C] (target, constant).
 * cosine: sum_t (1 - a.b / (|a||b|)) / norm;  nmse: sum_t |a-b|^2 / |b|^2 / norm.
 * Norms below 1e-12 are clamped (no division by zero). da written. */
double mf_loss_cosine(const float *a, const float *b, int T, int C, double norm, float *da);
double mf_loss_nmse(const float *a, const float *b, int T, int C, double norm, float *da);

/* Sparse forward KL against the teacher's top K (ids, logits [T][K], largest
 * first), teacher probabilities renormalized over the K: sum_t tau^2 sum_k
 * p_k (log p_k - log q_{id_k}) / norm, q = softmax(zs/tau) over all V.
 * dzs (written, [T][V]) = tau (q - p) / norm, p zero outside the top K. */
double mf_loss_kl_topk(const float *zs, const int32_t *ids, const float *zt_k, int T, int V, int K, float tau,
                       double norm, float *dzs);

/* ---- FuseGPT (cpu_fuse.c) ----
 * Fused weight of a receiving linear: W_eff[out][in] = W + B[out][r] A[r][in]
 * + (U[out][r] V[r][in]) * P (elementwise; P NULL: the LoRA term only).
 * scratch [out][in]. */
void mf_fuse_weight(float *W_eff, const float *W, const float *P, const float *A, const float *B, const float *U,
                    const float *V, int out, int in, int r, float *scratch);
/* Its backward from G = dL/dW_eff (written, not accumulated): dB = G A^T,
 * dA = B^T G, dU = (G*P) V^T, dV = U^T (G*P) (dU, dV untouched when P is NULL). */
void mf_fuse_weight_bwd(float *dA, float *dB, float *dU, float *dV, const float *G, const float *P, const float *A,
                        const float *B, const float *U, const float *V, int out, int in, int r, float *scratch);
/* The official FuseGPT loss: at every position i of n, softmax over the B
 * batch rows of S[B][n] (student) and Tt[B][n] (teacher);
 * loss = sum_i sum_b t_b (log t_b - log s_b) / norm (torch kl_div, batchmean:
 * norm = B); dS[B][n] = (s_b - t_b) / norm (written; NULL: not needed). */
double mf_loss_kl_batch(const float *S, const float *Tt, int B, size_t n, double norm, float *dS);

#endif
