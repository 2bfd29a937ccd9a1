/* ref_backward.h - the reference backend's backward ops and losses
 * (ref_backward.c), entries of the ref table (ref.c). Semantics: cpu_backward.h. */
#ifndef MF_REF_BACKWARD_H
#define MF_REF_BACKWARD_H

#include <stddef.h>
#include <stdint.h>

void mf_ref_linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W, int T,
                       int n_in, int n_out, int acc);
void mf_ref_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rinv,
                        int T, int C, int acc);
void mf_ref_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                          const float *v, int T, int n_heads, int n_kv, int hd);
void mf_ref_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n);
void mf_ref_embed_bwd(float *dE, const float *dx, const int32_t *ids, int T, int C, int V);
double mf_ref_loss_ce(const float *logits, const int32_t *targets, int T, int V, double norm, float *dlogits);
double mf_ref_loss_kl(const float *zs, const float *zt, int T, int V, float tau, double norm, float *dzs);
double mf_ref_loss_kl_topk(const float *zs, const int32_t *ids, const float *zt_k, int T, int V, int K, float tau,
                           double norm, float *dzs);
double mf_ref_loss_cosine(const float *a, const float *b, int T, int C, double norm, float *da);
double mf_ref_loss_nmse(const float *a, const float *b, int T, int C, double norm, float *da);
void mf_ref_fuse_weight(float *W_eff, const float *W, const float *P, const float *A, const float *B, const float *U,
                        const float *V, int out, int in, int r, float *scratch);
void mf_ref_fuse_weight_bwd(float *dA, float *dB, float *dU, float *dV, const float *G, const float *P, const float *A,
                            const float *B, const float *U, const float *V, int out, int in, int r, float *scratch);
double mf_ref_loss_kl_batch(const float *S, const float *Tt, int B, size_t n, double norm, float *dS);

#endif
