/* ref.c - the reference backend: plain loops, every sum in double, one
 * rounding to float per output element. Slow and obviously correct: the
 * oracle of the op-parity test (tests/test_backend_ops.c, docs/backend_ops.md).
 * No BLAS, no OpenMP, no fast exp: libm's exp/log/sqrt/sin/cos in double.
 *
 * This file: memory, the inference (forward) ops and the table. The backward
 * ops, the losses and the FuseGPT ops are in ref_backward.c. Semantics are
 * those of the CPU backend (backend.h, cpu_backward.h); scratch arguments are
 * ignored. All matrices row-major. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/ref_backward.h"
#include "util/err.h"
#include "util/half.h"

/* ------------------------------------------------------------------ memory */

static void *ref_alloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0)
        mf_fatal("ref backend: out of memory allocating %zu bytes", bytes);
    return p;
}
static void ref_free(void *p) { free(p); }
static void ref_copy(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
static void ref_zero(void *p, size_t bytes) { memset(p, 0, bytes); }
static void ref_sync(void) {}

/* ----------------------------------------------------------------- forward */

/* y[T][n_out] (= | +=) x[T][n_in] . W[n_out][n_in]^T (+ b[n_out]) */
static void ref_linear(float *y, const float *x, const float *w, const float *b, int T, int n_in, int n_out,
                       int accumulate) {
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * n_in;
        for (int o = 0; o < n_out; o++) {
            const float *wo = w + (size_t)o * n_in;
            double s = b ? b[o] : 0.0;
            for (int i = 0; i < n_in; i++) s += (double)xt[i] * wo[i];
            float *yo = y + (size_t)t * n_out + o;
            *yo = accumulate ? (float)(*yo + s) : (float)s;
        }
    }
}

/* y[T][C] = x[T][C] * r[t] * w[C], r[t] = 1 / sqrt(mean_i x[t][i]^2 + eps); rinv[T] (backend memory, may be NULL) = r */
static void ref_rmsnorm(float *y, float *rinv, const float *x, const float *w, int T, int C, float eps) {
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) ss += (double)xt[i] * xt[i];
        double r = 1.0 / sqrt(ss / C + eps);
        if (rinv) rinv[t] = (float)r;
        for (int i = 0; i < C; i++) y[(size_t)t * C + i] = (float)(xt[i] * r * w[i]);
    }
}

/* x[T][n_heads][hd]: rotate the pair (i, i + hd/2) of every head by sign * (pos0 + t) * inv_freq[i] */
static void rope_rotate(float *x, int T, int n_heads, int hd, int pos0, const float *inv_freq, double sign) {
    int half = hd / 2;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * hd;
            for (int i = 0; i < half; i++) {
                double ang = (double)(pos0 + t) * inv_freq[i];
                double c = cos(ang), s = sign * sin(ang), a = v[i], b = v[i + half];
                v[i] = (float)(a * c - b * s);
                v[i + half] = (float)(b * c + a * s);
            }
        }
}

static void ref_rope(float *x, int T, int n_heads, int hd, int pos0, const float *inv_freq) {
    rope_rotate(x, T, n_heads, hd, pos0, inv_freq, 1.0);
}

/* rotation by -angle: the transpose of ref_rope (its backward, in place on dx) */
static void ref_rope_bwd(float *dx, int T, int n_heads, int hd, int pos0, const float *inv_freq) {
    rope_rotate(dx, T, n_heads, hd, pos0, inv_freq, -1.0);
}

/* Causal GQA attention of T queries at positions pos0.. against n_ctx = pos0+T cached keys/values:
 * q, out [T][H*hd]; kc, vc [n_ctx][KV*hd]; head h reads kv group h / (H/KV); query t sees keys 0..pos0+t.
 * out[t][h] = sum_j softmax_j(q[t][h] . k[j][g] / sqrt(hd)) v[j][g] */
static void ref_attention(float *out, const float *q, const float *kc, const float *vc, int T, int pos0, int n_heads,
                          int n_kv, int hd) {
    int group = n_heads / n_kv, ldq = n_heads * hd, ldkv = n_kv * hd;
    double scale = 1.0 / sqrt((double)hd);
    double *p = mf_malloc((size_t)(pos0 + T) * sizeof *p), *o = mf_malloc((size_t)hd * sizeof *o);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < n_heads; h++) {
            const float *qt = q + (size_t)t * ldq + (size_t)h * hd;
            size_t g = (size_t)(h / group) * hd;
            int n = pos0 + t + 1;
            double m = -INFINITY, sum = 0.0;
            for (int j = 0; j < n; j++) {
                double s = 0.0;
                for (int d = 0; d < hd; d++) s += (double)qt[d] * kc[(size_t)j * ldkv + g + d];
                p[j] = s * scale;
                if (p[j] > m) m = p[j];
            }
            for (int j = 0; j < n; j++) sum += p[j] = exp(p[j] - m);
            for (int d = 0; d < hd; d++) o[d] = 0.0;
            for (int j = 0; j < n; j++)
                for (int d = 0; d < hd; d++) o[d] += p[j] * vc[(size_t)j * ldkv + g + d];
            for (int d = 0; d < hd; d++) out[(size_t)t * ldq + (size_t)h * hd + d] = (float)(o[d] / sum);
        }
    free(p);
    free(o);
}

/* h[n] = silu(g) * u = g / (1 + exp(-g)) * u */
static void ref_swiglu(float *h, const float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) h[i] = (float)((double)g[i] / (1.0 + exp(-(double)g[i])) * u[i]);
}

/* y[n] += x[n] */
static void ref_add(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = y[i] + x[i];
}

/* x[T][C] = table[ids[t]][C] (ids host) */
static void ref_embed(float *x, const float *table, const int32_t *ids, int T, int C) {
    for (int t = 0; t < T; t++)
        for (int c = 0; c < C; c++) x[(size_t)t * C + c] = table[(size_t)ids[t] * C + c];
}

/* A 16-bit weight (MF_DT_BF16 or MF_DT_F16) as float: exact conversions. */
static float ref_half(uint16_t v, mf_dtype dt) { return dt == MF_DT_BF16 ? mf_bf16_to_f32(v) : mf_fp16_to_f32(v); }

/* linear with 16-bit W[n_out][n_in]: the same products from the same weight values, double accumulation */
static void ref_linear_h(float *y, const float *x, const uint16_t *w, mf_dtype dt, const float *b, int T, int n_in,
                         int n_out, int accumulate) {
    if (dt != MF_DT_BF16 && dt != MF_DT_F16) mf_fatal("ref linear_h: weight type %d is not bf16 or f16", (int)dt);
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * n_in;
        for (int o = 0; o < n_out; o++) {
            const uint16_t *wo = w + (size_t)o * n_in;
            double s = b ? b[o] : 0.0;
            for (int i = 0; i < n_in; i++) s += (double)xt[i] * ref_half(wo[i], dt);
            float *yo = y + (size_t)t * n_out + o;
            *yo = accumulate ? (float)(*yo + s) : (float)s;
        }
    }
}

/* x[T][C] = float(table[ids[t]][C]) */
static void ref_embed_h(float *x, const uint16_t *table, mf_dtype dt, const int32_t *ids, int T, int C) {
    for (int t = 0; t < T; t++)
        for (int c = 0; c < C; c++) x[(size_t)t * C + c] = ref_half(table[(size_t)ids[t] * C + c], dt);
}

/* lse[T] (host) = log sum_v exp(logits[t][v]) */
static void ref_logsumexp(const float *logits, int T, int V, double *lse) {
    for (int t = 0; t < T; t++) {
        const float *z = logits + (size_t)t * V;
        double m = -INFINITY, s = 0.0;
        for (int v = 0; v < V; v++)
            if (z[v] > m) m = z[v];
        for (int v = 0; v < V; v++) s += exp(z[v] - m);
        lse[t] = m + log(s);
    }
}

static void ref_nll(const float *logits, const int32_t *targets, int T, int V, double *nll) {
    ref_logsumexp(logits, T, V, nll);
    for (int t = 0; t < T; t++) nll[t] -= logits[(size_t)t * V + targets[t]];
}

static void ref_kl_rows(const float *zp, const float *zq, int T, int V, double *kl, int32_t *same) {
    for (int t = 0; t < T; t++) {
        const float *p = zp + (size_t)t * V, *q = zq + (size_t)t * V;
        double lp, lq, k = 0;
        ref_logsumexp(p, 1, V, &lp);
        ref_logsumexp(q, 1, V, &lq);
        int ap = 0, aq = 0;
        for (int i = 0; i < V; i++) {
            double a = p[i] - lp;
            k += exp(a) * (a - (q[i] - lq));
            if (p[i] > p[ap]) ap = i;
            if (q[i] > q[aq]) aq = i;
        }
        kl[t] = k;
        same[t] = ap == aq;
    }
}

/* AdamW in double from the float coefficients, each of p, m, v rounded once (optim.c's formula). */
static void ref_adamw(float *p, const float *grad, float *m, float *v, size_t n, float scale, const mf_adamw_coef *k) {
    for (size_t j = 0; j < n; j++) {
        double g = (double)grad[j] * scale;
        double mj = m[j] + (double)k->w1 * (g - m[j]);
        double vj = (double)v[j] * k->b2 + (double)k->c2 * g * g;
        double denom = sqrt(vj) / k->bc2_sqrt + k->eps;
        p[j] = (float)((double)p[j] * k->decay + (double)k->neg_step * mj / denom);
        m[j] = (float)mj;
        v[j] = (float)vj;
    }
}

static double ref_sumsq(const float *x, size_t n) {
    double s = 0;
    for (size_t j = 0; j < n; j++) s += (double)x[j] * x[j];
    return s;
}

static const mf_backend REF = {
    .name = "ref",
    .is_host = 1,
    .alloc = ref_alloc,
    .free = ref_free,
    .upload = ref_copy,
    .download = ref_copy,
    .copy = ref_copy,
    .zero = ref_zero,
    .sync = ref_sync,
    .linear = ref_linear,
    .rmsnorm = ref_rmsnorm,
    .rope = ref_rope,
    .attention = ref_attention,
    .swiglu = ref_swiglu,
    .add = ref_add,
    .embed = ref_embed,
    .linear_h = ref_linear_h,
    .embed_h = ref_embed_h,
    .logsumexp = ref_logsumexp,
    .nll = ref_nll,
    .kl_rows = ref_kl_rows,
    .linear_bwd = mf_ref_linear_bwd,
    .rmsnorm_bwd = mf_ref_rmsnorm_bwd,
    .rope_bwd = ref_rope_bwd,
    .attention_bwd = mf_ref_attention_bwd,
    .swiglu_bwd = mf_ref_swiglu_bwd,
    .embed_bwd = mf_ref_embed_bwd,
    .loss_ce = mf_ref_loss_ce,
    .loss_kl = mf_ref_loss_kl,
    .loss_kl_topk = mf_ref_loss_kl_topk,
    .loss_cosine = mf_ref_loss_cosine,
    .loss_nmse = mf_ref_loss_nmse,
    .fuse_weight = mf_ref_fuse_weight,
    .fuse_weight_bwd = mf_ref_fuse_weight_bwd,
    .loss_kl_batch = mf_ref_loss_kl_batch,
    .adamw = ref_adamw,
    .sumsq = ref_sumsq,
};

const mf_backend *mf_backend_ref(void) { return &REF; }
