/* cpu.c - CPU backend: OpenBLAS sgemm for matrix products, OpenMP loops for the rest. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu_backward.h"
#include "backend/cpu_half.h"
#include "util/fastmath.h"
#include "util/vec.h"
#include "util/err.h"

static void *cpu_alloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) mf_fatal("out of memory allocating %zu bytes", bytes);
    return p;
}
static void cpu_free(void *p) { free(p); }
static void cpu_copy(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
static void cpu_zero(void *p, size_t bytes) { memset(p, 0, bytes); }
static void cpu_sync(void) {}

static void cpu_linear(float *y, const float *x, const float *w, const float *b, int T, int n_in, int n_out, int accumulate) {
    float beta = 0.0f;
    if (accumulate) beta = 1.0f;
    else if (b) {
        for (int t = 0; t < T; t++) memcpy(y + (size_t)t * n_out, b, (size_t)n_out * sizeof *y);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, n_out, n_in, 1.0f, x, n_in, w, n_in, beta, y, n_out);
    if (accumulate && b)
        for (int t = 0; t < T; t++)
            for (int i = 0; i < n_out; i++) y[(size_t)t * n_out + i] += b[i];
}

static void cpu_rmsnorm(float *y, float *rinv, const float *x, const float *w, int T, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * C;
        float *yt = y + (size_t)t * C;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < C; i++) ss += xt[i] * xt[i];
        float s = 1.0f / sqrtf(ss / C + eps);
        if (rinv) rinv[t] = s;
        for (int i = 0; i < C; i++) yt[i] = xt[i] * s * w[i];
    }
}

static void cpu_rope(float *x, int T, int n_heads, int hd, int pos0, const float *inv_freq) {
    int half = hd / 2;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < half; i++) {
            float ang = (float)(pos0 + t) * inv_freq[i];
            float c = cosf(ang), s = sinf(ang);
            for (int h = 0; h < n_heads; h++) {
                float *v = x + ((size_t)t * n_heads + h) * hd;
                float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

/* One head: scores = q k^T / sqrt(hd) (causal), softmax, out = P v. */
static void attend_head(float *out, const float *q, const float *kc, const float *vc, float *S, int T, int pos0,
                        int ldq, int ldkv, int hd) {
    int n_ctx = pos0 + T;
    float scale = 1.0f / sqrtf((float)hd);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, n_ctx, hd, scale, q, ldq, kc, ldkv, 0.0f, S, n_ctx);
    for (int t = 0; t < T; t++) {
        float *row = S + (size_t)t * n_ctx;
        int n = pos0 + t + 1; /* keys visible to this query */
        float m = row[0];
#pragma omp simd reduction(max : m)
        for (int j = 1; j < n; j++) m = row[j] > m ? row[j] : m;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < n; j++) { row[j] = mf_expf(row[j] - m); sum += row[j]; }
        float inv = 1.0f / sum;
        for (int j = 0; j < n; j++) row[j] *= inv;
        for (int j = n; j < n_ctx; j++) row[j] = 0.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, n_ctx, 1.0f, S, n_ctx, vc, ldkv, 0.0f, out, ldq);
}

static void cpu_attention(float *out, const float *q, const float *kc, const float *vc, int T, int pos0, int n_heads,
                          int n_kv, int hd) {
    int n_ctx = pos0 + T, group = n_heads / n_kv;
    int ldq = n_heads * hd, ldkv = n_kv * hd;
#pragma omp parallel
    {
        float *S = malloc((size_t)T * n_ctx * sizeof *S);
        if (!S) mf_fatal("out of memory for attention scores [%d][%d]", T, n_ctx);
#pragma omp for schedule(static)
        for (int h = 0; h < n_heads; h++) {
            int g = h / group;
            attend_head(out + (size_t)h * hd, q + (size_t)h * hd, kc + (size_t)g * hd, vc + (size_t)g * hd, S, T, pos0,
                        ldq, ldkv, hd);
        }
        free(S);
    }
}

static void cpu_swiglu(float *h, const float *g, const float *u, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) h[i] = g[i] / (1.0f + mf_expf(-g[i])) * u[i];
}

static void cpu_add(float *y, const float *x, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

static void cpu_embed(float *x, const float *table, const int32_t *ids, int T, int C) {
    for (int t = 0; t < T; t++) memcpy(x + (size_t)t * C, table + (size_t)ids[t] * C, (size_t)C * sizeof *x);
}

/* exp in float (vectorized mf_expf), sums in double: ~1e-7 relative accuracy on the NLL. */
static void cpu_logsumexp(const float *logits, int T, int V, double *lse) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *row = logits + (size_t)t * V;
        float m = row[0];
#pragma omp simd reduction(max : m)
        for (int i = 1; i < V; i++) m = row[i] > m ? row[i] : m;
        double s = 0.0;
        for (int i0 = 0; i0 < V; i0 += 256) {
            int i1 = i0 + 256 < V ? i0 + 256 : V;
            float part = 0.0f;
#pragma omp simd reduction(+ : part)
            for (int i = i0; i < i1; i++) part += mf_expf(row[i] - m);
            s += part;
        }
        lse[t] = (double)m + log(s);
    }
}

static void cpu_nll(const float *logits, const int32_t *targets, int T, int V, double *nll) {
    cpu_logsumexp(logits, T, V, nll);
    for (int t = 0; t < T; t++) nll[t] -= (double)logits[(size_t)t * V + targets[t]];
}

/* KL(p || q) = E_p[d] + log E_p[exp(-d)] with d = zp - zq (a constant shift of d cancels, so
 * d is taken relative to its value at argmax zp). With p's weights unnormalized (float exp) and
 * both expectations divided by their sum, no logsumexp enters: a model close to its reference
 * (KL ~ 1e-4, where a logsumexp's float rounding would be 1e-4 of the result) keeps full
 * precision; exp(-d) - 1 by expm1 in double. */
static void cpu_kl_rows(const float *zp, const float *zq, int T, int V, double *kl, int32_t *same) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *p = zp + (size_t)t * V, *q = zq + (size_t)t * V;
        int ip = mf_argmax(p, V), iq = mf_argmax(q, V);
        float m = p[ip];
        double c = (double)p[ip] - q[ip], s = 0, s1 = 0, s2 = 0;
        for (int i = 0; i < V; i++) {
            double w = mf_expf(p[i] - m), d = ((double)p[i] - q[i]) - c;
            s += w;
            s1 += w * d;
            s2 += w * expm1(-d);
        }
        kl[t] = s1 / s + log1p(s2 / s);
        same[t] = ip == iq;
    }
}

/* AdamW, element by element, exactly optim.c's adam_tensor (float, fmaf; decay = 1 leaves p as it is). */
static void cpu_adamw(float *p, const float *grad, float *m, float *v, size_t n, float scale, const mf_adamw_coef *k) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t j = 0; j < n; j++) {
        float gj = grad[j] * scale;
        float pj = p[j] * k->decay;
        float mj = fmaf(k->w1, gj - m[j], m[j]);
        float vj = fmaf(k->c2 * gj, gj, v[j] * k->b2);
        float denom = sqrtf(vj) / k->bc2_sqrt + k->eps;
        p[j] = pj + k->neg_step * mj / denom;
        m[j] = mj;
        v[j] = vj;
    }
}

/* sum x^2 in double, in index order (as mf_params_grad_sq) */
static double cpu_sumsq(const float *x, size_t n) {
    double s = 0;
    for (size_t j = 0; j < n; j++) s += (double)x[j] * x[j];
    return s;
}

static const mf_backend CPU = {
    .name = "cpu",
    .is_host = 1,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .linear = cpu_linear,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .embed = cpu_embed,
    .linear_h = mf_cpu_linear_h,
    .embed_h = mf_cpu_embed_h,
    .logsumexp = cpu_logsumexp,
    .nll = cpu_nll,
    .kl_rows = cpu_kl_rows,
    .linear_bwd = mf_linear_bwd,
    .rmsnorm_bwd = mf_rmsnorm_bwd,
    .rope_bwd = mf_rope_bwd,
    .attention_bwd = mf_attention_bwd,
    .swiglu_bwd = mf_swiglu_bwd,
    .embed_bwd = mf_embed_bwd,
    .loss_ce = mf_loss_ce,
    .loss_kl = mf_loss_kl,
    .loss_kl_topk = mf_loss_kl_topk,
    .loss_cosine = mf_loss_cosine,
    .loss_nmse = mf_loss_nmse,
    .fuse_weight = mf_fuse_weight,
    .fuse_weight_bwd = mf_fuse_weight_bwd,
    .loss_kl_batch = mf_loss_kl_batch,
    .adamw = cpu_adamw,
    .sumsq = cpu_sumsq,
};

const mf_backend *mf_backend_cpu(void) { return &CPU; }
