/* cpu_backward.c - the CPU backend's training ops: backward of the Llama block ops and the losses (see cpu_backward.h). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu_backward.h"
#include "util/err.h"
#include "util/fastmath.h"

/* ------------------------------------------------------------------ linear */

/* The training forward runs the very kernels of the CPU inference backend, so a
 * student's training forward equals `eval` on it bit for bit. */
void mf_linear_fwd(float *y, const float *x, const float *W, const float *b, int T, int n_in, int n_out, int acc) {
    mf_backend_cpu()->linear(y, x, W, b, T, n_in, n_out, acc);
}

/* db[n_out] += sum_t dy[t][:] (double, token order) */
static void bias_grad(float *db, const float *dy, int T, int n_out) {
    double *acc = mf_calloc((size_t)n_out, sizeof *acc);
    for (int t = 0; t < T; t++) {
        const float *r = dy + (size_t)t * n_out;
        for (int o = 0; o < n_out; o++) acc[o] += r[o];
    }
    for (int o = 0; o < n_out; o++) db[o] += (float)acc[o];
    free(acc);
}

void mf_linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W, int T, int n_in,
                   int n_out, int acc) {
    if (dx) /* dx[T][in] = dy[T][out] W[out][in] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, n_in, n_out, 1.0f, dy, n_out, W, n_in,
                    acc ? 1.0f : 0.0f, dx, n_in);
    if (dW) /* dW[out][in] += dy^T[out][T] x[T][in] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, n_in, T, 1.0f, dy, n_out, x, n_in, 1.0f, dW, n_in);
    if (db) bias_grad(db, dy, T, n_out);
}

/* ----------------------------------------------------------------- RMSNorm */

void mf_rmsnorm_fwd(float *y, float *rinv, const float *x, const float *w, int T, int C, float eps) {
    mf_backend_cpu()->rmsnorm(y, rinv, x, w, T, C, eps);
}

void mf_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rinv, int T,
                    int C, int acc) {
    if (dx) {
#pragma omp parallel for schedule(static)
        for (int t = 0; t < T; t++) {
            const float *xt = x + (size_t)t * C, *gt = dy + (size_t)t * C;
            float *dt = dx + (size_t)t * C;
            float r = rinv[t];
            double gx = 0.0;
            for (int i = 0; i < C; i++) gx += (double)gt[i] * w[i] * xt[i];
            float c = (float)(gx / C) * r * r;
            for (int i = 0; i < C; i++) {
                float v = r * (gt[i] * w[i] - xt[i] * c);
                dt[i] = acc ? dt[i] + v : v;
            }
        }
    }
    if (dw) {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < C; i++) {
            double s = 0.0;
            for (int t = 0; t < T; t++) s += (double)dy[(size_t)t * C + i] * x[(size_t)t * C + i] * rinv[t];
            dw[i] += (float)s;
        }
    }
}

/* -------------------------------------------------------------------- RoPE */

/* rotate pairs (i, i + hd/2) by sign * angle */
static void rope_rotate(float *x, int T, int n_heads, int hd, int pos0, const float *inv_freq, float sign) {
    int half = hd / 2;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < half; i++) {
            float ang = (float)(pos0 + t) * inv_freq[i];
            float c = cosf(ang), s = sign * sinf(ang);
            for (int h = 0; h < n_heads; h++) {
                float *v = x + ((size_t)t * n_heads + h) * hd;
                float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

void mf_rope_fwd(float *x, int T, int n_heads, int hd, int pos0, const float *inv_freq) {
    mf_backend_cpu()->rope(x, T, n_heads, hd, pos0, inv_freq);
}

void mf_rope_bwd(float *dx, int T, int n_heads, int hd, int pos0, const float *inv_freq) {
    rope_rotate(dx, T, n_heads, hd, pos0, inv_freq, -1.0f);
}

/* --------------------------------------------------------------- attention */

/* S[T][T] = scale q_h k_g^T, then the causal softmax of every row (zeros above the diagonal). */
static void head_probs(float *S, const float *q, const float *k, int T, int ldq, int ldk, int hd) {
    float scale = 1.0f / sqrtf((float)hd);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, q, ldq, k, ldk, 0.0f, S, T);
    for (int t = 0; t < T; t++) {
        float *row = S + (size_t)t * T;
        int n = t + 1;
        float m = row[0];
#pragma omp simd reduction(max : m)
        for (int j = 1; j < n; j++) m = row[j] > m ? row[j] : m;
        float sum = 0.0f; /* at most T terms in (0, 1]: float with vector lanes */
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < n; j++) {
            row[j] = mf_expf(row[j] - m);
            sum += row[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < n; j++) row[j] *= inv;
        for (int j = n; j < T; j++) row[j] = 0.0f;
    }
}

void mf_attention_fwd(float *out, const float *q, const float *k, const float *v, int T, int n_heads, int n_kv, int hd) {
    mf_backend_cpu()->attention(out, q, k, v, T, 0, n_heads, n_kv, hd);
}

/* One head: dq_h written into dq (stride ldq), dk_h, dv_h [T][hd] written. */
static void head_bwd(float *dq, float *dkh, float *dvh, float *S, float *dP, const float *dout, const float *q,
                     const float *k, const float *v, int T, int ldq, int ldk, int hd) {
    float scale = 1.0f / sqrtf((float)hd);
    head_probs(S, q, k, T, ldq, ldk, hd);
    /* dP = dout v^T ; dv = P^T dout */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dout, ldq, v, ldk, 0.0f, dP, T);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, S, T, dout, ldq, 0.0f, dvh, hd);
    /* dS = P (dP - sum_j P dP) * scale, in place in dP */
    for (int t = 0; t < T; t++) {
        const float *p = S + (size_t)t * T;
        float *d = dP + (size_t)t * T;
        double dot = 0.0;
        for (int j = 0; j <= t; j++) dot += (double)p[j] * d[j];
        float fd = (float)dot;
        for (int j = 0; j <= t; j++) d[j] = p[j] * (d[j] - fd) * scale;
        for (int j = t + 1; j < T; j++) d[j] = 0.0f;
    }
    /* dq = dS k ; dk = dS^T q */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, dP, T, k, ldk, 0.0f, dq, ldq);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, dP, T, q, ldq, 0.0f, dkh, hd);
}

void mf_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k, const float *v,
                      int T, int n_heads, int n_kv, int hd) {
    int group = n_heads / n_kv, ldq = n_heads * hd, ldk = n_kv * hd;
    size_t per = (size_t)T * hd;
    float *dkh = mf_malloc((size_t)n_heads * per * sizeof *dkh), *dvh = mf_malloc((size_t)n_heads * per * sizeof *dvh);
#pragma omp parallel
    {
        float *S = mf_malloc((size_t)T * T * sizeof *S), *dP = mf_malloc((size_t)T * T * sizeof *dP);
#pragma omp for schedule(static)
        for (int h = 0; h < n_heads; h++) {
            size_t qo = (size_t)h * hd, ko = (size_t)(h / group) * hd;
            head_bwd(dq + qo, dkh + h * per, dvh + h * per, S, dP, dout + qo, q + qo, k + ko, v + ko, T, ldq, ldk, hd);
        }
        free(S);
        free(dP);
    }
    /* sum the heads of each kv group, in head order */
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++)
        for (int g = 0; g < n_kv; g++) {
            float *ko = dk + (size_t)t * ldk + (size_t)g * hd, *vo = dv + (size_t)t * ldk + (size_t)g * hd;
            for (int d = 0; d < hd; d++) ko[d] = vo[d] = 0.0f;
            for (int h = g * group; h < (g + 1) * group; h++) {
                const float *a = dkh + h * per + (size_t)t * hd, *b = dvh + h * per + (size_t)t * hd;
                for (int d = 0; d < hd; d++) {
                    ko[d] += a[d];
                    vo[d] += b[d];
                }
            }
        }
    free(dkh);
    free(dvh);
}

/* ------------------------------------------------------------------ SwiGLU */

void mf_swiglu_fwd(float *h, const float *g, const float *u, size_t n) { mf_backend_cpu()->swiglu(h, g, u, n); }

void mf_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + mf_expf(-g[i]));
        float silu = g[i] * sg;
        float d = dh[i];
        dg[i] = d * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
        du[i] = d * silu;
    }
}

/* --------------------------------------------------------------- embedding */

typedef struct { int32_t id, t; } id_pos;

static int cmp_id_pos(const void *a, const void *b) {
    const id_pos *x = a, *y = b;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return (x->t > y->t) - (x->t < y->t);
}

void mf_embed_bwd(float *dE, const float *dx, const int32_t *ids, int T, int C, int V) {
    id_pos *ord = mf_malloc((size_t)(T > 0 ? T : 1) * sizeof *ord);
    int n = 0;
    for (int t = 0; t < T; t++)
        if (ids[t] >= 0 && ids[t] < V) ord[n++] = (id_pos){ids[t], t};
    qsort(ord, (size_t)n, sizeof *ord, cmp_id_pos);
    int *start = mf_malloc((size_t)(n + 1) * sizeof *start), ng = 0;
    for (int i = 0; i < n; i++)
        if (i == 0 || ord[i].id != ord[i - 1].id) start[ng++] = i;
    start[ng] = n;
#pragma omp parallel
    {
        float *row = mf_malloc((size_t)C * sizeof *row);
#pragma omp for schedule(static)
        for (int gi = 0; gi < ng; gi++) {
            memcpy(row, dx + (size_t)ord[start[gi]].t * C, (size_t)C * sizeof *row);
            for (int i = start[gi] + 1; i < start[gi + 1]; i++) {
                const float *r = dx + (size_t)ord[i].t * C;
                for (int c = 0; c < C; c++) row[c] += r[c];
            }
            float *e = dE + (size_t)ord[start[gi]].id * C;
            for (int c = 0; c < C; c++) e[c] += row[c];
        }
        free(row);
    }
    free(start);
    free(ord);
}

/* ------------------------------------------------------------------ losses */

/* Row statistics of z * inv_tau: the max m and s = sum_i exp(z[i] inv_tau - m)
 * (exp in float, vectorized; sums in double). logsumexp = m + log(s). */
static void row_stats(const float *z, int V, float inv_tau, float *m_out, double *s_out) {
    float m = z[0] * inv_tau;
#pragma omp simd reduction(max : m)
    for (int i = 1; i < V; i++) m = z[i] * inv_tau > m ? z[i] * inv_tau : m;
    double s = 0.0;
    for (int i0 = 0; i0 < V; i0 += 256) {
        int i1 = i0 + 256 < V ? i0 + 256 : V;
        float part = 0.0f;
#pragma omp simd reduction(+ : part)
        for (int i = i0; i < i1; i++) part += mf_expf(z[i] * inv_tau - m);
        s += part;
    }
    *m_out = m;
    *s_out = s;
}

/* One row of the KL's sums, vectorized (exp in float, 256-element float partial
 * sums added in double, as row_stats): s1 = sum p_t (b - a), s0 = sum p_t, with
 * p_t = exp(b/tau - mt) ist; and, when d is not NULL, the gradient
 * d = (p_s - p_t) gscale, p_s = exp(a/tau - ms) iss. */
static void kl_sums(const float *a, const float *b, int V, float it, float ms, float mt, float iss, float ist,
                    float gscale, float *d, double *s1_out, double *s0_out) {
    double s1 = 0.0, s0 = 0.0;
    for (int i0 = 0; i0 < V; i0 += 256) {
        int i1 = i0 + 256 < V ? i0 + 256 : V;
        float p1 = 0.0f, p0 = 0.0f;
        if (d) {
#pragma omp simd reduction(+ : p1, p0)
            for (int i = i0; i < i1; i++) {
                float pt = mf_expf(b[i] * it - mt) * ist;
                p1 += pt * (b[i] - a[i]);
                p0 += pt;
                d[i] = (mf_expf(a[i] * it - ms) * iss - pt) * gscale;
            }
        } else {
#pragma omp simd reduction(+ : p1, p0)
            for (int i = i0; i < i1; i++) {
                float pt = mf_expf(b[i] * it - mt) * ist;
                p1 += pt * (b[i] - a[i]);
                p0 += pt;
            }
        }
        s1 += p1;
        s0 += p0;
    }
    *s1_out = s1;
    *s0_out = s0;
}

/* sum of a per-row array in row order */
static double sum_rows(const double *r, int T) {
    double s = 0.0;
    for (int t = 0; t < T; t++) s += r[t];
    return s;
}

double mf_loss_ce(const float *logits, const int32_t *targets, int T, int V, double norm, float *dlogits) {
    int cnt = 0;
    for (int t = 0; t < T; t++) cnt += targets[t] >= 0 && targets[t] < V;
    if (norm <= 0) norm = cnt > 0 ? cnt : 1;
    double *rl = mf_calloc((size_t)(T > 0 ? T : 1), sizeof *rl);
    float inv_norm = (float)(1.0 / norm);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *z = logits + (size_t)t * V;
        float *d = dlogits ? dlogits + (size_t)t * V : NULL;
        int y = targets[t];
        if (y < 0 || y >= V) {
            if (d) memset(d, 0, (size_t)V * sizeof *d);
            continue;
        }
        float m;
        double s;
        row_stats(z, V, 1.0f, &m, &s);
        rl[t] = (double)m + log(s) - z[y];
        if (d) {
            float c = (float)(1.0 / (s * norm));
            for (int i = 0; i < V; i++) d[i] = mf_expf(z[i] - m) * c;
            d[y] -= inv_norm;
        }
    }
    double loss = sum_rows(rl, T) / norm;
    free(rl);
    return loss;
}

double mf_loss_kl(const float *zs, const float *zt, int T, int V, float tau, double norm, float *dzs) {
    if (norm <= 0) norm = T > 0 ? T : 1;
    double *rl = mf_calloc((size_t)(T > 0 ? T : 1), sizeof *rl);
    float it = 1.0f / tau, gscale = (float)(tau / norm);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *a = zs + (size_t)t * V, *b = zt + (size_t)t * V;
        float ms, mt;
        double ss, st;
        row_stats(a, V, it, &ms, &ss);
        row_stats(b, V, it, &mt, &st);
        /* log p_t - log p_s = (b - a)/tau - dl, dl = lse_t - lse_s; KL = sum p_t (b - a)/tau - dl sum p_t */
        double dl = ((double)mt + log(st)) - ((double)ms + log(ss));
        double s1, s0;
        kl_sums(a, b, V, it, ms, mt, (float)(1.0 / ss), (float)(1.0 / st), gscale, dzs ? dzs + (size_t)t * V : NULL,
                &s1, &s0);
        rl[t] = (double)tau * tau * (s1 * it - dl * s0);
    }
    double loss = sum_rows(rl, T) / norm;
    free(rl);
    return loss;
}

#define HID_EPS 1e-12

double mf_loss_cosine(const float *a, const float *b, int T, int C, double norm, float *da) {
    if (norm <= 0) norm = T > 0 ? T : 1;
    double *rl = mf_calloc((size_t)(T > 0 ? T : 1), sizeof *rl);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *x = a + (size_t)t * C, *y = b + (size_t)t * C;
        double xx = 0, yy = 0, xy = 0;
        for (int i = 0; i < C; i++) {
            xx += (double)x[i] * x[i];
            yy += (double)y[i] * y[i];
            xy += (double)x[i] * y[i];
        }
        double na = sqrt(xx > HID_EPS ? xx : HID_EPS), nb = sqrt(yy > HID_EPS ? yy : HID_EPS);
        double cs = xy / (na * nb);
        rl[t] = 1.0 - cs;
        if (da) /* d(1 - cos)/da = -(b / (|a||b|) - cos a / |a|^2) */
            for (int i = 0; i < C; i++)
                da[(size_t)t * C + i] = (float)(-(y[i] / (na * nb) - cs * x[i] / (na * na)) / norm);
    }
    double loss = sum_rows(rl, T) / norm;
    free(rl);
    return loss;
}

double mf_loss_nmse(const float *a, const float *b, int T, int C, double norm, float *da) {
    if (norm <= 0) norm = T > 0 ? T : 1;
    double *rl = mf_calloc((size_t)(T > 0 ? T : 1), sizeof *rl);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *x = a + (size_t)t * C, *y = b + (size_t)t * C;
        double dd = 0, yy = 0;
        for (int i = 0; i < C; i++) {
            double e = (double)x[i] - y[i];
            dd += e * e;
            yy += (double)y[i] * y[i];
        }
        if (yy < HID_EPS) yy = HID_EPS;
        rl[t] = dd / yy;
        if (da)
            for (int i = 0; i < C; i++) da[(size_t)t * C + i] = (float)(2.0 * ((double)x[i] - y[i]) / yy / norm);
    }
    double loss = sum_rows(rl, T) / norm;
    free(rl);
    return loss;
}

double mf_loss_kl_topk(const float *zs, const int32_t *ids, const float *zt_k, int T, int V, int K, float tau,
                       double norm, float *dzs) {
    if (norm <= 0) norm = T > 0 ? T : 1;
    double *rl = mf_calloc((size_t)(T > 0 ? T : 1), sizeof *rl);
    float it = 1.0f / tau, g = (float)(tau / norm);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *a = zs + (size_t)t * V, *b = zt_k + (size_t)t * K;
        const int32_t *id = ids + (size_t)t * K;
        float ms;
        double ss;
        row_stats(a, V, it, &ms, &ss);
        double lse_s = ms + log(ss), mt = b[0] * it, st = 0; /* teacher rows are sorted: b[0] is the max */
        for (int k = 0; k < K; k++) st += exp(b[k] * it - mt);
        double lse_t = mt + log(st), kl = 0;
        float *d = dzs ? dzs + (size_t)t * V : NULL;
        if (d) {
            float c = (float)(g / ss);
#pragma omp simd
            for (int i = 0; i < V; i++) d[i] = mf_expf(a[i] * it - ms) * c;
        }
        for (int k = 0; k < K; k++) {
            double lp = b[k] * it - lse_t, p = exp(lp), lq = a[id[k]] * it - lse_s;
            kl += p * (lp - lq);
            if (d) d[id[k]] -= (float)(p * g);
        }
        rl[t] = (double)tau * tau * kl;
    }
    double loss = 0;
    for (int t = 0; t < T; t++) loss += rl[t];
    free(rl);
    return loss / norm;
}
