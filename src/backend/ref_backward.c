/* ref_backward.c - the reference backend's training ops: the backward of each
 * op, the losses with their gradients, and the FuseGPT ops (see ref.c for the
 * rules: plain loops, sums in double, one rounding per output). Semantics are
 * those of cpu_backward.h: parameter gradients (dW, db, dw, dE) accumulate;
 * the input gradient is written, or added when `acc`; NULL skips a gradient;
 * the losses write their gradients; norm <= 0 means "the tokens counted here". */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/ref_backward.h"
#include "util/err.h"

/* ------------------------------------------------------------------ linear */

/* dx[T][n_in] (acc ? += : =) dy[T][n_out] W[n_out][n_in];
 * dW[n_out][n_in] += dy^T x[T][n_in];  db[n_out] += sum_t dy[t] */
void mf_ref_linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W, int T,
                       int n_in, int n_out, int acc) {
    if (dx)
        for (int t = 0; t < T; t++)
            for (int i = 0; i < n_in; i++) {
                double s = acc ? dx[(size_t)t * n_in + i] : 0.0;
                for (int o = 0; o < n_out; o++) s += (double)dy[(size_t)t * n_out + o] * W[(size_t)o * n_in + i];
                dx[(size_t)t * n_in + i] = (float)s;
            }
    if (dW)
        for (int o = 0; o < n_out; o++)
            for (int i = 0; i < n_in; i++) {
                double s = dW[(size_t)o * n_in + i];
                for (int t = 0; t < T; t++) s += (double)dy[(size_t)t * n_out + o] * x[(size_t)t * n_in + i];
                dW[(size_t)o * n_in + i] = (float)s;
            }
    if (db)
        for (int o = 0; o < n_out; o++) {
            double s = db[o];
            for (int t = 0; t < T; t++) s += dy[(size_t)t * n_out + o];
            db[o] = (float)s;
        }
}

/* ----------------------------------------------------------------- RMSNorm */

/* y = x r w with r = rinv[t] (host, from the forward):
 * dx[T][C] (acc ? += : =) r (dy w - x r^2 mean_i(dy w x));  dw[C] += sum_t dy x r */
void mf_ref_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rinv,
                        int T, int C, int acc) {
    if (dx)
        for (int t = 0; t < T; t++) {
            const float *xt = x + (size_t)t * C, *gt = dy + (size_t)t * C;
            double r = rinv[t], gx = 0.0;
            for (int i = 0; i < C; i++) gx += (double)gt[i] * w[i] * xt[i];
            double c = gx / C * r * r;
            for (int i = 0; i < C; i++) {
                double v = r * ((double)gt[i] * w[i] - xt[i] * c);
                float *d = dx + (size_t)t * C + i;
                *d = acc ? (float)(*d + v) : (float)v;
            }
        }
    if (dw)
        for (int i = 0; i < C; i++) {
            double s = dw[i];
            for (int t = 0; t < T; t++) s += (double)dy[(size_t)t * C + i] * x[(size_t)t * C + i] * rinv[t];
            dw[i] = (float)s;
        }
}

/* --------------------------------------------------------------- attention */

/* Causal GQA self-attention over T tokens (pos0 = 0): q, dout, dq [T][H*hd]; k, v, dk, dv [T][KV*hd].
 * Per head h (kv group g = h / (H/KV)): P = causal softmax(q k^T / sqrt(hd)), out = P v;
 * dv_g += P^T dout, dP = dout v^T, dS = P (dP - rowsum(P dP)), dq = dS k / sqrt(hd), dk_g += dS^T q / sqrt(hd).
 * dq, dk, dv written (dk, dv sum the heads of each group). */
void mf_ref_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                          const float *v, int T, int n_heads, int n_kv, int hd) {
    int group = n_heads / n_kv, ldq = n_heads * hd, ldk = n_kv * hd;
    double scale = 1.0 / sqrt((double)hd);
    double *P = mf_malloc((size_t)T * T * sizeof *P), *dS = mf_malloc((size_t)T * T * sizeof *dS);
    double *gk = mf_calloc((size_t)T * ldk, sizeof *gk), *gv = mf_calloc((size_t)T * ldk, sizeof *gv);
    for (int h = 0; h < n_heads; h++) {
        size_t qo = (size_t)h * hd, ko = (size_t)(h / group) * hd;
        for (int t = 0; t < T; t++) { /* P[t][0..t] */
            double m = -INFINITY, sum = 0.0;
            for (int j = 0; j <= t; j++) {
                double s = 0.0;
                for (int d = 0; d < hd; d++) s += (double)q[(size_t)t * ldq + qo + d] * k[(size_t)j * ldk + ko + d];
                P[(size_t)t * T + j] = s * scale;
                if (P[(size_t)t * T + j] > m) m = P[(size_t)t * T + j];
            }
            for (int j = 0; j <= t; j++) sum += P[(size_t)t * T + j] = exp(P[(size_t)t * T + j] - m);
            for (int j = 0; j <= t; j++) P[(size_t)t * T + j] /= sum;
        }
        for (int t = 0; t < T; t++) { /* dS[t][0..t] */
            double dot = 0.0;
            for (int j = 0; j <= t; j++) {
                double s = 0.0;
                for (int d = 0; d < hd; d++) s += (double)dout[(size_t)t * ldq + qo + d] * v[(size_t)j * ldk + ko + d];
                dS[(size_t)t * T + j] = s;
                dot += P[(size_t)t * T + j] * s;
            }
            for (int j = 0; j <= t; j++) dS[(size_t)t * T + j] = P[(size_t)t * T + j] * (dS[(size_t)t * T + j] - dot);
        }
        for (int t = 0; t < T; t++)
            for (int d = 0; d < hd; d++) {
                double s = 0.0;
                for (int j = 0; j <= t; j++) s += dS[(size_t)t * T + j] * k[(size_t)j * ldk + ko + d];
                dq[(size_t)t * ldq + qo + d] = (float)(s * scale);
            }
        for (int j = 0; j < T; j++)
            for (int d = 0; d < hd; d++) {
                double sk = 0.0, sv = 0.0;
                for (int t = j; t < T; t++) {
                    sk += dS[(size_t)t * T + j] * q[(size_t)t * ldq + qo + d];
                    sv += P[(size_t)t * T + j] * dout[(size_t)t * ldq + qo + d];
                }
                gk[(size_t)j * ldk + ko + d] += sk * scale;
                gv[(size_t)j * ldk + ko + d] += sv;
            }
    }
    for (size_t i = 0; i < (size_t)T * ldk; i++) {
        dk[i] = (float)gk[i];
        dv[i] = (float)gv[i];
    }
    free(P);
    free(dS);
    free(gk);
    free(gv);
}

/* ------------------------------------------------------------------ SwiGLU */

/* h = g sigma(g) u:  dg[n] = dh u sigma(g) (1 + g (1 - sigma(g))),  du[n] = dh g sigma(g)  (written) */
void mf_ref_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double x = g[i], s = 1.0 / (1.0 + exp(-x));
        dg[i] = (float)((double)dh[i] * u[i] * s * (1.0 + x * (1.0 - s)));
        du[i] = (float)((double)dh[i] * x * s);
    }
}

/* --------------------------------------------------------------- embedding */

/* dE[V][C]: row ids[t] += dx[t][C] for every t with 0 <= ids[t] < V (others ignored; ids host) */
void mf_ref_embed_bwd(float *dE, const float *dx, const int32_t *ids, int T, int C, int V) {
    double *row = mf_malloc((size_t)(C > 0 ? C : 1) * sizeof *row);
    char *done = mf_calloc((size_t)(T > 0 ? T : 1), 1);
    for (int t = 0; t < T; t++) { /* each distinct id once: the sum of its rows, added to dE */
        if (done[t] || ids[t] < 0 || ids[t] >= V) continue;
        for (int c = 0; c < C; c++) row[c] = 0.0;
        for (int u = t; u < T; u++)
            if (ids[u] == ids[t]) {
                done[u] = 1;
                for (int c = 0; c < C; c++) row[c] += dx[(size_t)u * C + c];
            }
        float *e = dE + (size_t)ids[t] * C;
        for (int c = 0; c < C; c++) e[c] = (float)(e[c] + row[c]);
    }
    free(row);
    free(done);
}

/* ------------------------------------------------------------------ losses */

/* log sum_v exp(z[v] / tau) of one row z[V] */
static double lse_row(const float *z, int V, double tau) {
    double m = -INFINITY, s = 0.0;
    for (int v = 0; v < V; v++)
        if (z[v] / tau > m) m = z[v] / tau;
    for (int v = 0; v < V; v++) s += exp(z[v] / tau - m);
    return m + log(s);
}

/* sum_t (lse(z[t]) - z[t][y_t]) / norm over the t with 0 <= y_t < V (norm <= 0: their count, at least 1);
 * dlogits[T][V] = (softmax(z[t]) - onehot(y_t)) / norm, zero rows for the others (targets host) */
double mf_ref_loss_ce(const float *logits, const int32_t *targets, int T, int V, double norm, float *dlogits) {
    int cnt = 0;
    for (int t = 0; t < T; t++) cnt += targets[t] >= 0 && targets[t] < V;
    if (norm <= 0) norm = cnt > 0 ? cnt : 1;
    double loss = 0.0;
    for (int t = 0; t < T; t++) {
        const float *z = logits + (size_t)t * V;
        int y = targets[t], ok = y >= 0 && y < V;
        double lse = ok ? lse_row(z, V, 1.0) : 0.0;
        if (ok) loss += lse - z[y];
        if (dlogits)
            for (int v = 0; v < V; v++)
                dlogits[(size_t)t * V + v] = ok ? (float)((exp(z[v] - lse) - (v == y)) / norm) : 0.0f;
    }
    return loss / norm;
}

/* KL(teacher || student) at temperature tau: sum_t tau^2 sum_v p_t (log p_t - log p_s) / norm
 * with p = softmax(z / tau) (norm <= 0: T); dzs[T][V] = tau (p_s - p_t) / norm */
double mf_ref_loss_kl(const float *zs, const float *zt, int T, int V, float tau, double norm, float *dzs) {
    if (norm <= 0) norm = T > 0 ? T : 1;
    double loss = 0.0;
    for (int t = 0; t < T; t++) {
        const float *a = zs + (size_t)t * V, *b = zt + (size_t)t * V;
        double ls = lse_row(a, V, tau), lt = lse_row(b, V, tau), kl = 0.0;
        for (int v = 0; v < V; v++) {
            double lps = a[v] / (double)tau - ls, lpt = b[v] / (double)tau - lt;
            kl += exp(lpt) * (lpt - lps);
            if (dzs) dzs[(size_t)t * V + v] = (float)(tau * (exp(lps) - exp(lpt)) / norm);
        }
        loss += (double)tau * tau * kl;
    }
    return loss / norm;
}

/* Sparse KL against the teacher's top K: ids[T][K] (host), zt_k[T][K]; p = softmax over the K of zt_k / tau,
 * q = softmax over all V of zs / tau: sum_t tau^2 sum_k p_k (log p_k - log q_{id_k}) / norm (norm <= 0: T);
 * dzs[T][V] = tau (q - p) / norm, p zero outside the top K */
double mf_ref_loss_kl_topk(const float *zs, const int32_t *ids, const float *zt_k, int T, int V, int K, float tau,
                           double norm, float *dzs) {
    if (norm <= 0) norm = T > 0 ? T : 1;
    double loss = 0.0, *d = mf_malloc((size_t)(V > 0 ? V : 1) * sizeof *d);
    for (int t = 0; t < T; t++) {
        const float *a = zs + (size_t)t * V, *b = zt_k + (size_t)t * K;
        const int32_t *id = ids + (size_t)t * K;
        double ls = lse_row(a, V, tau), lt = lse_row(b, K, tau), kl = 0.0;
        for (int v = 0; v < V; v++) d[v] = exp(a[v] / (double)tau - ls);
        for (int k = 0; k < K; k++) {
            double lp = b[k] / (double)tau - lt, lq = a[id[k]] / (double)tau - ls;
            kl += exp(lp) * (lp - lq);
            d[id[k]] -= exp(lp);
        }
        loss += (double)tau * tau * kl;
        if (dzs)
            for (int v = 0; v < V; v++) dzs[(size_t)t * V + v] = (float)(tau * d[v] / norm);
    }
    free(d);
    return loss / norm;
}

#define HID_EPS 1e-12 /* floor of the squared norms |a|^2, |b|^2 (as the CPU backend) */

/* sum_t (1 - a.b / (|a||b|)) / norm (norm <= 0: T);  da[T][C] = -(b / (|a||b|) - cos a / |a|^2) / norm */
double mf_ref_loss_cosine(const float *a, const float *b, int T, int C, double norm, float *da) {
    if (norm <= 0) norm = T > 0 ? T : 1;
    double loss = 0.0;
    for (int t = 0; t < T; t++) {
        const float *x = a + (size_t)t * C, *y = b + (size_t)t * C;
        double xx = 0.0, yy = 0.0, xy = 0.0;
        for (int i = 0; i < C; i++) {
            xx += (double)x[i] * x[i];
            yy += (double)y[i] * y[i];
            xy += (double)x[i] * y[i];
        }
        double na = sqrt(fmax(xx, HID_EPS)), nb = sqrt(fmax(yy, HID_EPS)), cs = xy / (na * nb);
        loss += 1.0 - cs;
        if (da)
            for (int i = 0; i < C; i++)
                da[(size_t)t * C + i] = (float)(-(y[i] / (na * nb) - cs * x[i] / (na * na)) / norm);
    }
    return loss / norm;
}

/* sum_t |a - b|^2 / |b|^2 / norm (norm <= 0: T);  da[T][C] = 2 (a - b) / |b|^2 / norm */
double mf_ref_loss_nmse(const float *a, const float *b, int T, int C, double norm, float *da) {
    if (norm <= 0) norm = T > 0 ? T : 1;
    double loss = 0.0;
    for (int t = 0; t < T; t++) {
        const float *x = a + (size_t)t * C, *y = b + (size_t)t * C;
        double dd = 0.0, yy = 0.0;
        for (int i = 0; i < C; i++) {
            dd += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
            yy += (double)y[i] * y[i];
        }
        yy = fmax(yy, HID_EPS);
        loss += dd / yy;
        if (da)
            for (int i = 0; i < C; i++) da[(size_t)t * C + i] = (float)(2.0 * ((double)x[i] - y[i]) / yy / norm);
    }
    return loss / norm;
}

/* ---------------------------------------------------------------- FuseGPT */

/* W_eff[out][in] = W + B[out][r] A[r][in] + P * (U[out][r] V[r][in]) (elementwise P; NULL: no second term) */
void mf_ref_fuse_weight(float *W_eff, const float *W, const float *P, const float *A, const float *B, const float *U,
                        const float *V, int out, int in, int r, float *scratch) {
    (void)scratch;
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++) {
            double ba = 0.0, uv = 0.0;
            for (int k = 0; k < r; k++) ba += (double)B[(size_t)o * r + k] * A[(size_t)k * in + i];
            if (P)
                for (int k = 0; k < r; k++) uv += (double)U[(size_t)o * r + k] * V[(size_t)k * in + i];
            size_t j = (size_t)o * in + i;
            W_eff[j] = (float)(W[j] + ba + (P ? P[j] * uv : 0.0));
        }
}

/* From G[out][in] = dL/dW_eff (all written): dB[out][r] = G A^T, dA[r][in] = B^T G,
 * dU[out][r] = (G*P) V^T, dV[r][in] = U^T (G*P) (dU, dV untouched when P is NULL) */
void mf_ref_fuse_weight_bwd(float *dA, float *dB, float *dU, float *dV, const float *G, const float *P, const float *A,
                            const float *B, const float *U, const float *V, int out, int in, int r, float *scratch) {
    (void)scratch;
    for (int o = 0; o < out; o++)
        for (int k = 0; k < r; k++) {
            double sb = 0.0, su = 0.0;
            for (int i = 0; i < in; i++) {
                size_t j = (size_t)o * in + i;
                sb += (double)G[j] * A[(size_t)k * in + i];
                if (P) su += (double)G[j] * P[j] * V[(size_t)k * in + i];
            }
            dB[(size_t)o * r + k] = (float)sb;
            if (P) dU[(size_t)o * r + k] = (float)su;
        }
    for (int k = 0; k < r; k++)
        for (int i = 0; i < in; i++) {
            double sa = 0.0, sv = 0.0;
            for (int o = 0; o < out; o++) {
                size_t j = (size_t)o * in + i;
                sa += (double)B[(size_t)o * r + k] * G[j];
                if (P) sv += (double)U[(size_t)o * r + k] * G[j] * P[j];
            }
            dA[(size_t)k * in + i] = (float)sa;
            if (P) dV[(size_t)k * in + i] = (float)sv;
        }
}

/* At every position i of n, softmax over the B rows: s = softmax_b(S[b][i]), t = softmax_b(Tt[b][i]);
 * loss = sum_i sum_b t (log t - log s) / norm (norm <= 0: B);  dS[B][n] = (s - t) / norm (NULL: skipped) */
double mf_ref_loss_kl_batch(const float *S, const float *Tt, int B, size_t n, double norm, float *dS) {
    if (norm <= 0) norm = B > 0 ? B : 1;
    double loss = 0.0;
    for (size_t i = 0; i < n; i++) {
        double ms = -INFINITY, mt = -INFINITY, ss = 0.0, st = 0.0;
        for (int b = 0; b < B; b++) {
            ms = fmax(ms, S[(size_t)b * n + i]);
            mt = fmax(mt, Tt[(size_t)b * n + i]);
        }
        for (int b = 0; b < B; b++) {
            ss += exp(S[(size_t)b * n + i] - ms);
            st += exp(Tt[(size_t)b * n + i] - mt);
        }
        for (int b = 0; b < B; b++) {
            double ls = S[(size_t)b * n + i] - ms - log(ss), lt = Tt[(size_t)b * n + i] - mt - log(st);
            loss += exp(lt) * (lt - ls);
            if (dS) dS[(size_t)b * n + i] = (float)((exp(ls) - exp(lt)) / norm);
        }
    }
    return loss / norm;
}
