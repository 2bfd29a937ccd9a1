/* cpu_fuse.c - the FuseGPT ops of the CPU backend: the low-rank fused weight,
 * its backward, and the batch-axis softmax KL of the official code.
 * Semantics in cpu_backward.h; matrix products through OpenBLAS. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_backward.h"
#include "util/err.h"

void mf_fuse_weight(float *W_eff, const float *W, const float *P, const float *A, const float *B, const float *U,
                    const float *V, int out, int in, int r, float *scratch) {
    size_t n = (size_t)out * in;
    memcpy(W_eff, W, n * sizeof *W_eff);
    /* W_eff += B A */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, in, r, 1.0f, B, r, A, in, 1.0f, W_eff, in);
    if (!P) return;
    /* scratch = U V, then W_eff += scratch * P */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, in, r, 1.0f, U, r, V, in, 0.0f, scratch, in);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) W_eff[i] += scratch[i] * P[i];
}

void mf_fuse_weight_bwd(float *dA, float *dB, float *dU, float *dV, const float *G, const float *P, const float *A,
                        const float *B, const float *U, const float *V, int out, int in, int r, float *scratch) {
    /* dB[out][r] = G A^T ; dA[r][in] = B^T G */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, out, r, in, 1.0f, G, in, A, in, 0.0f, dB, r);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, in, out, 1.0f, B, r, G, in, 0.0f, dA, in);
    if (!P) return;
    size_t n = (size_t)out * in;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) scratch[i] = G[i] * P[i];
    /* dU[out][r] = (G*P) V^T ; dV[r][in] = U^T (G*P) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, out, r, in, 1.0f, scratch, in, V, in, 0.0f, dU, r);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, in, out, 1.0f, U, r, scratch, in, 0.0f, dV, in);
}

/* Positions are processed in blocks whose partial sums are added in block
 * order: the result does not depend on the thread count. */
#define KLB_BLOCK 4096

double mf_loss_kl_batch(const float *S, const float *Tt, int B, size_t n, double norm, float *dS) {
    if (norm <= 0) norm = B > 0 ? B : 1;
    size_t nblk = (n + KLB_BLOCK - 1) / KLB_BLOCK;
    double *part = mf_calloc(nblk ? nblk : 1, sizeof *part);
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < nblk; k++) {
        double acc = 0;
        double *ls = mf_malloc((size_t)B * sizeof *ls), *lt = mf_malloc((size_t)B * sizeof *lt);
        size_t i1 = (k + 1) * KLB_BLOCK < n ? (k + 1) * KLB_BLOCK : n;
        for (size_t i = k * KLB_BLOCK; i < i1; i++) {
            double ms = -INFINITY, mt = -INFINITY, ss = 0, st = 0;
            for (int b = 0; b < B; b++) {
                ms = fmax(ms, S[(size_t)b * n + i]);
                mt = fmax(mt, Tt[(size_t)b * n + i]);
            }
            for (int b = 0; b < B; b++) {
                ss += exp(S[(size_t)b * n + i] - ms);
                st += exp(Tt[(size_t)b * n + i] - mt);
            }
            double lzs = ms + log(ss), lzt = mt + log(st);
            for (int b = 0; b < B; b++) {
                ls[b] = S[(size_t)b * n + i] - lzs;  /* log softmax over the batch */
                lt[b] = Tt[(size_t)b * n + i] - lzt;
                double pt = exp(lt[b]);
                acc += pt * (lt[b] - ls[b]);
                if (dS) dS[(size_t)b * n + i] = (float)((exp(ls[b]) - pt) / norm);
            }
        }
        part[k] = acc;
        free(ls);
        free(lt);
    }
    double loss = 0;
    for (size_t k = 0; k < nblk; k++) loss += part[k];
    free(part);
    return loss / norm;
}
