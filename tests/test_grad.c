/* test_grad.c - the backward pass.
 *
 * Op level: every op's backward (float) against central differences of a
 * float64 reference forward written here, on small random inputs (and the
 * float forward against the same reference).
 * Model level: loss and gradients of stories260K (CE, and KL against the full
 * model with layer 2 skipped), two synthetic HF models (q/k/v biases; untied
 * head + llama3 RoPE) and SmolLM2 (row slices) against PyTorch autograd
 * goldens (tests/gen_grad_goldens.py); whole-model finite differences; a
 * two-stage split and activation recomputation give bit-identical gradients. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/source.h"
#include "model/model.h"
#include "testutil.h"
#include "backend/cpu_backward.h"
#include "train/params.h"
#include "train/train_model.h"

/* ------------------------------------------------------------ helpers */

static uint64_t rng_state;
static double urand(void) { /* [0, 1) */
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
/* n floats uniform in [-s, s], with a float64 copy */
static float *rnd(size_t n, double s, double **dcopy) {
    float *f = malloc(n * sizeof *f);
    double *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = f[i] = (float)((2 * urand() - 1) * s);
    *dcopy = d;
    return f;
}

typedef double (*loss_fn)(void *ctx);

/* central differences of f w.r.t. every x[i] */
static double *fd_grad(double *x, size_t n, loss_fn f, void *ctx, double h) {
    double *g = malloc(n * sizeof *g);
    for (size_t i = 0; i < n; i++) {
        double s = x[i];
        x[i] = s + h;
        double fp = f(ctx);
        x[i] = s - h;
        double fm = f(ctx);
        x[i] = s;
        g[i] = (fp - fm) / (2 * h);
    }
    return g;
}

/* max |got - want| / max |want| */
static double rel_err(const float *got, const double *want, size_t n) {
    double d = 0, m = 1e-30;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs(got[i] - want[i]));
        m = fmax(m, fabs(want[i]));
    }
    return d / m;
}

#define OP_TOL 1e-3
static void expect_close(const char *what, const float *got, const double *want, size_t n, double tol) {
    double e = rel_err(got, want, n);
    cr_log_info("%s: relative error %.3g", what, e);
    cr_expect(e < tol, "%s: relative error %.3g (want < %g)", what, e, tol);
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ------------------------------------------------------------ linear */

typedef struct { int T, I, O; double *x, *W, *b, *R, *y; } lin_ctx;

static double lin_ref(void *p) {
    lin_ctx *c = p;
    for (int t = 0; t < c->T; t++)
        for (int o = 0; o < c->O; o++) {
            double s = c->b[o];
            for (int i = 0; i < c->I; i++) s += c->x[t * c->I + i] * c->W[o * c->I + i];
            c->y[t * c->O + o] = s;
        }
    return dot(c->y, c->R, (size_t)c->T * c->O);
}

Test(grad, linear) {
    rng_state = 1;
    lin_ctx c = {.T = 5, .I = 7, .O = 6};
    float *x = rnd(35, 1, &c.x), *W = rnd(42, 1, &c.W), *b = rnd(6, 1, &c.b), *R = rnd(30, 1, &c.R);
    c.y = malloc(30 * sizeof *c.y);
    float y[30], dx[35], dW[42] = {0}, db[6] = {0}, dx2[35];
    mf_linear_fwd(y, x, W, b, c.T, c.I, c.O, 0);
    lin_ref(&c);
    expect_close("linear forward", y, c.y, 30, 1e-6);
    mf_linear_bwd(dx, dW, db, R, x, W, c.T, c.I, c.O, 0);
    double *gx = fd_grad(c.x, 35, lin_ref, &c, 1e-5), *gW = fd_grad(c.W, 42, lin_ref, &c, 1e-5),
           *gb = fd_grad(c.b, 6, lin_ref, &c, 1e-5);
    expect_close("linear dx", dx, gx, 35, OP_TOL);
    expect_close("linear dW", dW, gW, 42, OP_TOL);
    expect_close("linear db", db, gb, 6, OP_TOL);
    /* accumulation: a second call adds the same again (dW, db) and acc=1 adds into dx */
    for (int i = 0; i < 35; i++) dx2[i] = 1.0f;
    mf_linear_bwd(dx2, dW, db, R, x, W, c.T, c.I, c.O, 1);
    for (int i = 0; i < 35; i++) cr_expect(fabsf(dx2[i] - (1.0f + dx[i])) < 1e-5f, "linear dx accumulate");
    for (int i = 0; i < 42; i++) gW[i] *= 2;
    expect_close("linear dW accumulated twice", dW, gW, 42, OP_TOL);
    /* y += x W^T + b */
    float y2[30];
    for (int i = 0; i < 30; i++) y2[i] = 0.5f;
    mf_linear_fwd(y2, x, W, b, c.T, c.I, c.O, 1);
    for (int i = 0; i < 30; i++) cr_expect(fabsf(y2[i] - 0.5f - y[i]) < 1e-5f, "linear forward accumulate");
    free(x); free(W); free(b); free(R); free(c.x); free(c.W); free(c.b); free(c.R); free(c.y); free(gx); free(gW); free(gb);
}

/* ------------------------------------------------------------ RMSNorm */

typedef struct { int T, C; double eps, *x, *w, *R, *y; } rms_ctx;

static double rms_ref(void *p) {
    rms_ctx *c = p;
    for (int t = 0; t < c->T; t++) {
        double ss = 0;
        for (int i = 0; i < c->C; i++) ss += c->x[t * c->C + i] * c->x[t * c->C + i];
        double r = 1 / sqrt(ss / c->C + c->eps);
        for (int i = 0; i < c->C; i++) c->y[t * c->C + i] = c->x[t * c->C + i] * r * c->w[i];
    }
    return dot(c->y, c->R, (size_t)c->T * c->C);
}

Test(grad, rmsnorm) {
    rng_state = 2;
    rms_ctx c = {.T = 4, .C = 9, .eps = 1e-5};
    size_t n = 36;
    float *x = rnd(n, 2, &c.x), *w = rnd(9, 1.5, &c.w), *R = rnd(n, 1, &c.R);
    c.y = malloc(n * sizeof *c.y);
    float y[36], r[4], dx[36], dw[9] = {0};
    c.eps = (float)c.eps;
    mf_rmsnorm_fwd(y, r, x, w, c.T, c.C, 1e-5f);
    rms_ref(&c);
    expect_close("rmsnorm forward", y, c.y, n, 1e-6);
    mf_rmsnorm_bwd(dx, dw, R, x, w, r, c.T, c.C, 0);
    double *gx = fd_grad(c.x, n, rms_ref, &c, 1e-5), *gw = fd_grad(c.w, 9, rms_ref, &c, 1e-5);
    expect_close("rmsnorm dx", dx, gx, n, OP_TOL);
    expect_close("rmsnorm dw", dw, gw, 9, OP_TOL);
    free(x); free(w); free(R); free(c.x); free(c.w); free(c.R); free(c.y); free(gx); free(gw);
}

/* ------------------------------------------------------------ RoPE */

typedef struct { int T, H, hd, pos0; const float *inv_freq; double *x, *R, *y; } rope_ctx;

static double rope_ref(void *p) {
    rope_ctx *c = p;
    int half = c->hd / 2;
    for (int t = 0; t < c->T; t++)
        for (int h = 0; h < c->H; h++)
            for (int i = 0; i < half; i++) {
                double ang = (float)(c->pos0 + t) * c->inv_freq[i]; /* angle rounded like the float code */
                size_t o = ((size_t)t * c->H + h) * c->hd;
                double a = c->x[o + i], b = c->x[o + i + half];
                c->y[o + i] = a * cos(ang) - b * sin(ang);
                c->y[o + i + half] = b * cos(ang) + a * sin(ang);
            }
    return dot(c->y, c->R, (size_t)c->T * c->H * c->hd);
}

Test(grad, rope) {
    rng_state = 3;
    float inv_freq[4];
    for (int i = 0; i < 4; i++) inv_freq[i] = (float)pow(10000.0, -2.0 * i / 8);
    rope_ctx c = {.T = 5, .H = 3, .hd = 8, .pos0 = 2, .inv_freq = inv_freq};
    size_t n = 120;
    float *x = rnd(n, 1, &c.x), *R = rnd(n, 1, &c.R);
    c.y = malloc(n * sizeof *c.y);
    float y[120], d[120];
    memcpy(y, x, sizeof y);
    mf_rope_fwd(y, c.T, c.H, c.hd, c.pos0, inv_freq);
    rope_ref(&c);
    expect_close("rope forward", y, c.y, n, 1e-6);
    memcpy(d, R, sizeof d);
    mf_rope_bwd(d, c.T, c.H, c.hd, c.pos0, inv_freq);
    double *g = fd_grad(c.x, n, rope_ref, &c, 1e-5);
    expect_close("rope dx", d, g, n, OP_TOL);
    free(x); free(R); free(c.x); free(c.R); free(c.y); free(g);
}

/* ------------------------------------------------------------ attention */

typedef struct { int T, H, KV, hd; double *q, *k, *v, *R, *y; } att_ctx;

static double att_ref(void *p) {
    att_ctx *c = p;
    int T = c->T, hd = c->hd, ldq = c->H * hd, ldk = c->KV * hd, group = c->H / c->KV;
    double *s = malloc((size_t)T * sizeof *s);
    for (int h = 0; h < c->H; h++) {
        int g = h / group;
        for (int t = 0; t < T; t++) {
            double m = -1e300, z = 0;
            for (int j = 0; j <= t; j++) {
                double a = 0;
                for (int d = 0; d < hd; d++) a += c->q[t * ldq + h * hd + d] * c->k[j * ldk + g * hd + d];
                s[j] = a / sqrt((double)hd);
                m = fmax(m, s[j]);
            }
            for (int j = 0; j <= t; j++) z += s[j] = exp(s[j] - m);
            for (int d = 0; d < hd; d++) {
                double o = 0;
                for (int j = 0; j <= t; j++) o += s[j] / z * c->v[j * ldk + g * hd + d];
                c->y[t * ldq + h * hd + d] = o;
            }
        }
    }
    free(s);
    return dot(c->y, c->R, (size_t)T * ldq);
}

static void check_attention(int T, int H, int KV, int hd) {
    att_ctx c = {.T = T, .H = H, .KV = KV, .hd = hd};
    size_t nq = (size_t)T * H * hd, nk = (size_t)T * KV * hd;
    float *q = rnd(nq, 1.5, &c.q), *k = rnd(nk, 1.5, &c.k), *v = rnd(nk, 1, &c.v), *R = rnd(nq, 1, &c.R);
    c.y = malloc(nq * sizeof *c.y);
    float *y = malloc(nq * 4), *dq = malloc(nq * 4), *dk = malloc(nk * 4), *dv = malloc(nk * 4);
    mf_attention_fwd(y, q, k, v, T, H, KV, hd);
    att_ref(&c);
    char what[64];
    snprintf(what, sizeof what, "attention T=%d H=%d KV=%d hd=%d", T, H, KV, hd);
    expect_close(what, y, c.y, nq, 1e-5);
    mf_attention_bwd(dq, dk, dv, R, q, k, v, T, H, KV, hd);
    double *gq = fd_grad(c.q, nq, att_ref, &c, 1e-5), *gk = fd_grad(c.k, nk, att_ref, &c, 1e-5),
           *gv = fd_grad(c.v, nk, att_ref, &c, 1e-5);
    expect_close("attention dq", dq, gq, nq, OP_TOL);
    expect_close("attention dk", dk, gk, nk, OP_TOL);
    expect_close("attention dv", dv, gv, nk, OP_TOL);
    free(q); free(k); free(v); free(R); free(y); free(dq); free(dk); free(dv);
    free(c.q); free(c.k); free(c.v); free(c.R); free(c.y); free(gq); free(gk); free(gv);
}

Test(grad, attention_gqa) {
    rng_state = 4;
    check_attention(7, 4, 2, 4); /* GQA, 2 heads per kv group */
    check_attention(6, 3, 1, 6); /* MQA */
    check_attention(5, 2, 2, 8); /* MHA */
    check_attention(1, 2, 1, 4); /* one token */
}

/* ------------------------------------------------------------ SwiGLU */

typedef struct { size_t n; double *g, *u, *R; } swi_ctx;

static double swi_ref(void *p) {
    swi_ctx *c = p;
    double s = 0;
    for (size_t i = 0; i < c->n; i++) s += c->g[i] / (1 + exp(-c->g[i])) * c->u[i] * c->R[i];
    return s;
}

Test(grad, swiglu) {
    rng_state = 5;
    swi_ctx c = {.n = 64};
    float *g = rnd(64, 5, &c.g), *u = rnd(64, 2, &c.u), *R = rnd(64, 1, &c.R);
    float h[64], dg[64], du[64];
    double hr[64];
    mf_swiglu_fwd(h, g, u, 64);
    for (int i = 0; i < 64; i++) hr[i] = c.g[i] / (1 + exp(-c.g[i])) * c.u[i];
    expect_close("swiglu forward", h, hr, 64, 1e-6);
    mf_swiglu_bwd(dg, du, R, g, u, 64);
    double *gg = fd_grad(c.g, 64, swi_ref, &c, 1e-5), *gu = fd_grad(c.u, 64, swi_ref, &c, 1e-5);
    expect_close("swiglu dg", dg, gg, 64, OP_TOL);
    expect_close("swiglu du", du, gu, 64, OP_TOL);
    free(g); free(u); free(R); free(c.g); free(c.u); free(c.R); free(gg); free(gu);
}

/* ------------------------------------------------------------ embedding */

typedef struct { int T, C; const int32_t *ids; double *E, *R; } emb_ctx;

static double emb_ref(void *p) {
    emb_ctx *c = p;
    double s = 0;
    for (int t = 0; t < c->T; t++)
        if (c->ids[t] >= 0 && c->ids[t] < 10)
            for (int i = 0; i < c->C; i++) s += c->E[c->ids[t] * c->C + i] * c->R[t * c->C + i];
    return s;
}

Test(grad, embedding) {
    rng_state = 6;
    int32_t ids[9] = {3, 1, 3, 9, 0, 3, -1, 1, 12}; /* repeats; -1 and 12 are outside [0, 10): ignored */
    emb_ctx c = {.T = 9, .C = 5, .ids = ids};
    float *E = rnd(50, 1, &c.E), *R = rnd(45, 1, &c.R);
    float dE[50];
    for (int i = 0; i < 50; i++) dE[i] = 0.25f;
    mf_embed_bwd(dE, R, ids, c.T, c.C, 10);
    double *g = fd_grad(c.E, 50, emb_ref, &c, 1e-5);
    for (int i = 0; i < 50; i++) g[i] += 0.25;
    expect_close("embedding dE (accumulated onto 0.25)", dE, g, 50, 1e-6);
    free(E); free(R); free(c.E); free(c.R); free(g);
}

/* ------------------------------------------------------------ losses */

typedef struct { int T, V; const int32_t *y; double norm, tau, *z, *zt; } loss_ctx;

static double lse_d(const double *z, int V, double tau) {
    double m = -1e300, s = 0;
    for (int i = 0; i < V; i++) m = fmax(m, z[i] / tau);
    for (int i = 0; i < V; i++) s += exp(z[i] / tau - m);
    return m + log(s);
}

static double ce_ref(void *p) {
    loss_ctx *c = p;
    double s = 0;
    for (int t = 0; t < c->T; t++)
        if (c->y[t] >= 0 && c->y[t] < c->V) s += lse_d(c->z + t * c->V, c->V, 1) - c->z[t * c->V + c->y[t]];
    return s / c->norm;
}

static double kl_ref(void *p) {
    loss_ctx *c = p;
    double s = 0;
    for (int t = 0; t < c->T; t++) {
        const double *a = c->z + t * c->V, *b = c->zt + t * c->V;
        double ls = lse_d(a, c->V, c->tau), lt = lse_d(b, c->V, c->tau);
        for (int i = 0; i < c->V; i++) {
            double lpt = b[i] / c->tau - lt, lps = a[i] / c->tau - ls;
            s += exp(lpt) * (lpt - lps);
        }
    }
    return c->tau * c->tau * s / c->norm;
}

Test(grad, cross_entropy) {
    rng_state = 7;
    int32_t y[5] = {3, -1, 10, 0, 7};
    loss_ctx c = {.T = 5, .V = 11, .y = y, .norm = 4};
    float *z = rnd(55, 4, &c.z), dz[55];
    double loss = mf_loss_ce(z, y, 5, 11, 0, dz); /* norm 0: the 4 counted targets */
    double want = ce_ref(&c);
    cr_expect(fabs(loss - want) < 1e-6 * want, "CE loss %.9g, float64 reference %.9g", loss, want);
    double *g = fd_grad(c.z, 55, ce_ref, &c, 1e-5);
    expect_close("cross-entropy dlogits", dz, g, 55, OP_TOL);
    for (int i = 0; i < 11; i++) cr_expect(dz[11 + i] == 0.0f, "ignored target row has zero gradient");
    double l3 = mf_loss_ce(z, y, 5, 11, 3.0, NULL);
    cr_expect(fabs(l3 - want * 4 / 3) < 1e-6 * want, "CE with norm 3: %.9g vs %.9g", l3, want * 4 / 3);
    free(z); free(c.z); free(g);
}

Test(grad, kl_divergence) {
    rng_state = 8;
    loss_ctx c = {.T = 4, .V = 13, .norm = 4, .tau = 2};
    float *zs = rnd(52, 4, &c.z), *zt = rnd(52, 4, &c.zt), dz[52];
    double loss = mf_loss_kl(zs, zt, 4, 13, 2.0f, 0, dz);
    double want = kl_ref(&c);
    cr_expect(want > 0 && fabs(loss - want) < 1e-6 * want, "KL loss %.9g, float64 reference %.9g", loss, want);
    double *g = fd_grad(c.z, 52, kl_ref, &c, 1e-5);
    expect_close("KL dlogits (tau 2)", dz, g, 52, OP_TOL);
    /* tau (p_s - p_t) / T in closed form for one entry */
    double ps = exp(c.z[5] / 2 - lse_d(c.z, 13, 2)), pt = exp(c.zt[5] / 2 - lse_d(c.zt, 13, 2));
    cr_expect(fabs(dz[5] - 2 * (ps - pt) / 4) < 1e-6, "dz = tau (p_s - p_t) / T");
    /* against itself: zero loss, zero gradient */
    cr_expect(fabs(mf_loss_kl(zt, zt, 4, 13, 2.0f, 0, dz)) < 1e-6, "KL(p || p) = 0");
    for (int i = 0; i < 52; i++) cr_expect(fabsf(dz[i]) < 1e-7f);
    free(zs); free(zt); free(c.z); free(c.zt); free(g);
}

/* A vocabulary over several of the loss's 256-wide summing blocks (and a partial one), with and without
 * the gradient (eval's path): both against the float64 reference. */
Test(grad, kl_divergence_wide_rows) {
    rng_state = 9;
    loss_ctx c = {.T = 3, .V = 600, .norm = 3, .tau = 1.5};
    float *zs = rnd(1800, 6, &c.z), *zt = rnd(1800, 6, &c.zt), *dz = malloc(1800 * sizeof *dz);
    double want = kl_ref(&c), with = mf_loss_kl(zs, zt, 3, 600, 1.5f, 0, dz), without = mf_loss_kl(zs, zt, 3, 600, 1.5f, 0, NULL);
    cr_expect(want > 0 && fabs(with - want) < 1e-6 * want, "KL with its gradient %.9g, float64 reference %.9g", with, want);
    cr_expect(fabs(without - want) < 1e-6 * want, "KL without the gradient %.9g, float64 reference %.9g", without, want);
    free(zs); free(zt); free(dz); free(c.z); free(c.zt);
}

typedef struct { int T, C, kind; double *a, *b; } hid_ctx;

static double hid_ref(void *p) {
    hid_ctx *c = p;
    double s = 0;
    for (int t = 0; t < c->T; t++) {
        const double *a = c->a + t * c->C, *b = c->b + t * c->C;
        double aa = dot(a, a, c->C), bb = dot(b, b, c->C), ab = dot(a, b, c->C);
        s += c->kind == 0 ? 1 - ab / sqrt(aa * bb) : (aa - 2 * ab + bb) / bb;
    }
    return s / c->T;
}

Test(grad, hidden_losses) {
    rng_state = 9;
    for (int kind = 0; kind < 2; kind++) {
        hid_ctx c = {.T = 4, .C = 10, .kind = kind};
        float *a = rnd(40, 1, &c.a), *b = rnd(40, 1, &c.b), da[40];
        const char *name = kind ? "nmse" : "cosine";
        double loss = kind ? mf_loss_nmse(a, b, 4, 10, 0, da) : mf_loss_cosine(a, b, 4, 10, 0, da);
        double want = hid_ref(&c);
        cr_expect(fabs(loss - want) < 1e-9 + 1e-7 * want, "%s loss %.9g, float64 reference %.9g", name, loss, want);
        double *g = fd_grad(c.a, 40, hid_ref, &c, 1e-6);
        char what[64];
        snprintf(what, sizeof what, "%s da", name);
        expect_close(what, da, g, 40, OP_TOL);
        double self = kind ? mf_loss_nmse(b, b, 4, 10, 0, NULL) : mf_loss_cosine(b, b, 4, 10, 0, NULL);
        cr_expect(fabs(self) < 1e-6, "%s of b against itself is %g", name, self);
        free(a); free(b); free(c.a); free(c.b); free(g);
    }
}

/* ------------------------------------------------------------ model level */

typedef struct {
    mf_source *src;
    mf_model *m;
    mf_params ps;
    mf_train_state *ts;
} stage;

static void stage_open(stage *s, const char *path, int l0, int l1, int first, int last, int max_T, int recompute) {
    mf_err err;
    memset(s, 0, sizeof *s);
    s->src = mf_source_open(path, &err);
    cr_assert(s->src, "%s", err.msg);
    if (l1 < 0) l1 = s->src->cfg.n_layers;
    s->m = mf_model_load(s->src, mf_backend_cpu(), l0, l1, first, last, &err);
    cr_assert(s->m, "%s", err.msg);
    mf_params_from_model(&s->ps, s->m);
    s->ts = mf_train_state_new(s->m, max_T, recompute, &err);
    cr_assert(s->ts, "%s", err.msg);
}

static void stage_close(stage *s) {
    mf_train_state_free(s->ts);
    mf_params_free(&s->ps);
    mf_model_free(s->m);
    mf_source_close(s->src);
}

/* targets[t] = ids[t+1], the last position has none */
static int32_t *next_targets(const int32_t *ids, int T) {
    int32_t *y = malloc((size_t)T * sizeof *y);
    for (int t = 0; t < T - 1; t++) y[t] = ids[t + 1];
    y[T - 1] = -1;
    return y;
}

/* Full forward + CE (+ backward when grad): the loss (mean over T-1 positions). */
static double ce_step(stage *s, const int32_t *ids, int T, int grad) {
    mf_err err;
    cr_assert(mf_train_forward(s->m, s->ts, ids, NULL, T, NULL, &err) == 0, "%s", err.msg);
    float *z = mf_train_head_forward(s->m, s->ts);
    int32_t *y = next_targets(ids, T);
    double loss = mf_loss_ce(z, y, T, s->m->cfg.vocab_size, 0, grad ? s->ts->dlogits : NULL);
    free(y);
    if (grad) {
        mf_train_head_backward(s->m, s->ts, &s->ps, s->ts->dlogits, s->ts->dx);
        mf_train_backward(s->m, s->ts, &s->ps, s->ts->dx, NULL, NULL);
    }
    return loss;
}

/* Teacher logits [T][V] from the inference forward of the full model. */
static float *teacher_logits(const mf_model *m, const int32_t *ids, int T) {
    mf_state *st = mf_state_new(m, T, T);
    mf_forward_embed(m, st, ids, T);
    mf_forward_layers(m, st, T, 0);
    mf_forward_head(m, st, T);
    size_t n = (size_t)T * m->cfg.vocab_size;
    float *z = malloc(n * sizeof *z);
    memcpy(z, st->logits, n * sizeof *z);
    mf_state_free(m, st);
    return z;
}

/* Student (skip) forward + KL against zt + backward. */
static double kl_step(stage *s, const int32_t *ids, int T, const unsigned char *skip, const float *zt, float tau) {
    mf_err err;
    cr_assert(mf_train_forward(s->m, s->ts, ids, NULL, T, skip, &err) == 0, "%s", err.msg);
    float *z = mf_train_head_forward(s->m, s->ts);
    double loss = mf_loss_kl(z, zt, T, s->m->cfg.vocab_size, tau, 0, s->ts->dlogits);
    mf_train_head_backward(s->m, s->ts, &s->ps, s->ts->dlogits, s->ts->dx);
    mf_train_backward(s->m, s->ts, &s->ps, s->ts->dx, NULL, NULL);
    return loss;
}

/* ---- goldens ---- */

typedef struct {
    json_t *root, *c;
    int32_t *ids;
    int T;
    double loss;
    float *data;
} golden;

static void golden_load(golden *g, const char *name) {
    json_error_t je;
    g->root = json_load_file("tests/golden/grad/grad.json", 0, &je);
    cr_assert(g->root, "tests/golden/grad/grad.json: %s", je.text);
    g->c = json_object_get(json_object_get(g->root, "cases"), name);
    cr_assert(g->c, "grad.json has no case %s", name);
    json_t *ids = json_object_get(g->c, "ids");
    g->T = (int)json_array_size(ids);
    g->ids = malloc((size_t)g->T * sizeof *g->ids);
    for (int i = 0; i < g->T; i++) g->ids[i] = (int32_t)json_integer_value(json_array_get(ids, i));
    g->loss = json_real_value(json_object_get(g->c, "loss"));
    char path[256];
    snprintf(path, sizeof path, "tests/golden/grad/%s.f32", name);
    size_t len;
    g->data = tu_read(path, &len);
    cr_assert(g->data, "%s is missing", path);
}

static void golden_free(golden *g) {
    json_decref(g->root);
    free(g->ids);
    free(g->data);
}

/* Every golden tensor (or its stored rows) against the gradient in ps:
 * max |diff| / max |golden| < tol per tensor. */
static void golden_check(const golden *g, mf_params *ps, double tol) {
    json_t *ts = json_object_get(g->c, "tensors");
    double worst = 0;
    for (size_t k = 0; k < json_array_size(ts); k++) {
        json_t *e = json_array_get(ts, k);
        const char *name = json_string_value(json_object_get(e, "name"));
        mf_param *p = mf_params_find(ps, name);
        cr_assert(p, "no parameter %s", name);
        json_t *shape = json_object_get(e, "shape"), *rows = json_object_get(e, "rows");
        size_t off = (size_t)json_integer_value(json_object_get(e, "offset"));
        size_t cols = p->ndim == 2 ? (size_t)p->shape[1] : p->numel;
        size_t nrows = json_is_array(rows) ? json_array_size(rows) : (p->ndim == 2 ? (size_t)p->shape[0] : 1);
        cr_assert_eq((size_t)json_integer_value(json_array_get(shape, json_array_size(shape) - 1)), cols, "%s shape", name);
        double d = 0, m = 1e-30;
        for (size_t r = 0; r < nrows; r++) {
            size_t src = json_is_array(rows) ? (size_t)json_integer_value(json_array_get(rows, r)) : r;
            const float *got = p->grad + src * cols, *want = g->data + off + r * cols;
            for (size_t i = 0; i < cols; i++) {
                d = fmax(d, fabs((double)got[i] - want[i]));
                m = fmax(m, fabs((double)want[i]));
            }
        }
        worst = fmax(worst, d / m);
        cr_expect(d / m < tol, "%s: max |grad - torch| = %.3g, max |torch grad| = %.3g, ratio %.3g (want < %g)", name, d, m,
                  d / m, tol);
    }
    cr_log_info("%zu tensors, worst max|diff|/max|grad| = %.3g", json_array_size(ts), worst);
}

static const char *stories_path(void) { return tu_shared("llm_assets/models/stories260K_hf"); }

static void check_ce_golden(const char *name, const char *path, double loss_tol, double tol) {
    golden g;
    golden_load(&g, name);
    stage s;
    stage_open(&s, path, 0, -1, 1, 1, g.T, 0);
    double loss = ce_step(&s, g.ids, g.T, 1);
    cr_expect(fabs(loss - g.loss) < loss_tol * g.loss, "%s: CE loss %.8f, torch %.8f", name, loss, g.loss);
    cr_log_info("%s: loss %.8f torch %.8f", name, loss, g.loss);
    golden_check(&g, &s.ps, tol);
    stage_close(&s);
    golden_free(&g);
}

Test(grad, stories260K_ce_vs_torch) { check_ce_golden("stories260K_ce", stories_path(), 1e-5, 1e-3); }
Test(grad, qwen2_bias_ce_vs_torch) { check_ce_golden("qwen2_bias_ce", "tests/golden/synthetic/qwen2_bias", 1e-5, 1e-3); }
Test(grad, llama_untied_llama3rope_ce_vs_torch) {
    check_ce_golden("llama_untied_ce", "tests/golden/synthetic/llama_untied_llama3rope", 1e-5, 1e-3);
}

static unsigned char *skip_layer(int n, int l) {
    unsigned char *s = calloc((size_t)n, 1);
    s[l] = 1;
    return s;
}

Test(grad, stories260K_kl_skip2_vs_torch) {
    golden g;
    golden_load(&g, "stories260K_kl");
    double tau = json_real_value(json_object_get(g.root, "tau"));
    int drop = (int)json_integer_value(json_object_get(g.root, "kl_skip_layer"));
    stage s;
    stage_open(&s, stories_path(), 0, -1, 1, 1, g.T, 0);
    float *zt = teacher_logits(s.m, g.ids, g.T);
    unsigned char *skip = skip_layer(s.m->cfg.n_layers, drop);
    double loss = kl_step(&s, g.ids, g.T, skip, zt, (float)tau);
    cr_expect(fabs(loss - g.loss) < 1e-5 * g.loss, "KL loss %.8f, torch %.8f", loss, g.loss);
    cr_log_info("KL loss %.8f torch %.8f", loss, g.loss);
    golden_check(&g, &s.ps, 1e-3);
    /* the skipped layer gets no gradient */
    char n[96];
    snprintf(n, sizeof n, "model.layers.%d.self_attn.q_proj.weight", drop);
    mf_param *p = mf_params_find(&s.ps, n);
    for (size_t i = 0; i < p->numel; i++) cr_assert(p->grad[i] == 0.0f, "skipped layer %d has a gradient", drop);
    free(skip); free(zt);
    stage_close(&s);
    golden_free(&g);
}

/* ---- bit-identity: two stages, recomputation ---- */

static void expect_same_grads(mf_params *a, mf_params *b, const char *what) {
    cr_assert_eq(a->n, b->n, "%s: %d vs %d params", what, a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        cr_assert_str_eq(a->p[i].name, b->p[i].name);
        cr_expect(memcmp(a->p[i].grad, b->p[i].grad, a->p[i].numel * sizeof(float)) == 0, "%s: %s differs", what,
                  a->p[i].name);
    }
}

Test(grad, stories260K_recompute_bit_identical) {
    golden g;
    golden_load(&g, "stories260K_ce");
    stage a, b;
    stage_open(&a, stories_path(), 0, -1, 1, 1, g.T, 0);
    stage_open(&b, stories_path(), 0, -1, 1, 1, g.T, 1);
    cr_expect(b.ts->bytes < a.ts->bytes, "recompute holds less (%zu vs %zu bytes)", b.ts->bytes, a.ts->bytes);
    double la = ce_step(&a, g.ids, g.T, 1), lb = ce_step(&b, g.ids, g.T, 1);
    cr_expect(la == lb, "CE loss %.17g vs %.17g with recompute", la, lb);
    expect_same_grads(&a.ps, &b.ps, "CE, recompute=1 vs 0");
    /* KL with a skipped layer, accumulated onto the CE gradients */
    float *zt = teacher_logits(a.m, g.ids, g.T);
    unsigned char *skip = skip_layer(a.m->cfg.n_layers, 2);
    la = kl_step(&a, g.ids, g.T, skip, zt, 2.0f);
    lb = kl_step(&b, g.ids, g.T, skip, zt, 2.0f);
    cr_expect(la == lb, "KL loss %.17g vs %.17g with recompute", la, lb);
    expect_same_grads(&a.ps, &b.ps, "CE + KL, recompute=1 vs 0");
    free(skip); free(zt);
    stage_close(&a);
    stage_close(&b);
    golden_free(&g);
}

Test(grad, stories260K_two_stages_bit_identical) {
    golden g;
    golden_load(&g, "stories260K_ce");
    int T = g.T;
    stage one, s0, s1;
    stage_open(&one, stories_path(), 0, -1, 1, 1, T, 0);
    stage_open(&s0, stories_path(), 0, 2, 1, 0, T, 0);
    stage_open(&s1, stories_path(), 2, -1, 0, 1, T, 1); /* the second stage also recomputes */
    double l1 = ce_step(&one, g.ids, T, 1);
    /* pipeline by hand: x forward, dx backward */
    mf_err err;
    cr_assert(mf_train_forward(s0.m, s0.ts, g.ids, NULL, T, NULL, &err) == 0, "%s", err.msg);
    cr_assert(mf_train_forward(s1.m, s1.ts, NULL, s0.ts->x_out, T, NULL, &err) == 0, "%s", err.msg);
    float *z = mf_train_head_forward(s1.m, s1.ts);
    int32_t *y = next_targets(g.ids, T);
    double l2 = mf_loss_ce(z, y, T, s1.m->cfg.vocab_size, 0, s1.ts->dlogits);
    mf_train_head_backward(s1.m, s1.ts, &s1.ps, s1.ts->dlogits, s1.ts->dx);
    float *dx = malloc((size_t)T * s1.m->cfg.dim * sizeof *dx);
    mf_train_backward(s1.m, s1.ts, &s1.ps, s1.ts->dx, dx, NULL);
    mf_train_backward(s0.m, s0.ts, &s0.ps, dx, NULL, NULL);
    cr_expect(l1 == l2, "loss %.17g (one stage) vs %.17g (two)", l1, l2);
    /* every parameter bit-identical; the tied embedding is the sum of the two stages' */
    for (int i = 0; i < one.ps.n; i++) {
        mf_param *p = &one.ps.p[i], *q0 = mf_params_find(&s0.ps, p->name), *q1 = mf_params_find(&s1.ps, p->name);
        cr_assert(q0 || q1, "%s is in neither stage", p->name);
        if (q0 && q1) {
            size_t bad = 0;
            for (size_t j = 0; j < p->numel; j++) bad += p->grad[j] != q0->grad[j] + q1->grad[j];
            cr_expect(bad == 0, "%s: %zu entries of stage0 + stage1 differ from one stage", p->name, bad);
        } else {
            mf_param *q = q0 ? q0 : q1;
            cr_expect(memcmp(p->grad, q->grad, p->numel * sizeof(float)) == 0, "%s differs between splits", p->name);
        }
    }
    cr_expect_eq(s0.ps.n + s1.ps.n, one.ps.n + 1, "the tied embedding is listed by both stages");
    free(dx); free(y);
    stage_close(&one); stage_close(&s0); stage_close(&s1);
    golden_free(&g);
}

/* ---- whole-model finite differences (C forward, float) ---- */

Test(grad, stories260K_ce_finite_differences) {
    golden g;
    golden_load(&g, "stories260K_ce");
    stage s;
    stage_open(&s, stories_path(), 0, -1, 1, 1, g.T, 0);
    ce_step(&s, g.ids, g.T, 1);
    const char *names[] = {"model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight",
                           "model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
                           "model.layers.2.self_attn.v_proj.weight", "model.layers.2.self_attn.o_proj.weight",
                           "model.layers.3.mlp.gate_proj.weight", "model.layers.3.mlp.up_proj.weight",
                           "model.layers.4.mlp.down_proj.weight", "model.layers.4.post_attention_layernorm.weight"};
    rng_state = 11;
    double worst = 0;
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        mf_param *p = mf_params_find(&s.ps, names[k]);
        cr_assert(p, "%s", names[k]);
        double gmax = 0;
        for (size_t i = 0; i < p->numel; i++) gmax = fmax(gmax, fabsf(p->grad[i]));
        /* the largest of 64 random entries, and one random entry */
        size_t best = 0, pick[2];
        for (int r = 0; r < 64; r++) {
            size_t i = (size_t)(urand() * p->numel);
            if (fabsf(p->grad[i]) > fabsf(p->grad[best])) best = i;
        }
        pick[0] = best;
        pick[1] = (size_t)(urand() * p->numel);
        for (int r = 0; r < 2; r++) {
            size_t i = pick[r];
            float w = p->data[i], h = 3e-2f * fmaxf(1.0f, fabsf(w)); /* float forward: smaller steps drown in rounding */
            p->data[i] = w + h;
            double fp = ce_step(&s, g.ids, g.T, 0);
            float wp = p->data[i];
            p->data[i] = w - h;
            double fm = ce_step(&s, g.ids, g.T, 0);
            float wm = p->data[i];
            p->data[i] = w;
            double fd = (fp - fm) / ((double)wp - wm), an = p->grad[i];
            double err = fabs(fd - an) / (fabs(an) + 0.02 * gmax);
            worst = fmax(worst, err);
            cr_expect(err < 2e-2, "%s[%zu]: backward %.6g, finite differences %.6g (max |grad| %.3g)", p->name, i, an, fd,
                      gmax);
        }
    }
    cr_log_info("whole-model finite differences: worst |fd - grad| / (|grad| + 0.02 max|grad|) = %.3g", worst);
    stage_close(&s);
    golden_free(&g);
}

/* ---- hidden-state loss injected at a layer output (dlayer_out) ---- */

/* nmse(output of layer 1, b) only: the gradient enters through dlayer_out[1]. */
static double hidden_step(stage *s, const int32_t *ids, int T, const float *b, float *zero, int grad) {
    mf_err err;
    cr_assert(mf_train_forward(s->m, s->ts, ids, NULL, T, NULL, &err) == 0, "%s", err.msg);
    const float *h = mf_train_layer_output(s->m, s->ts, 1);
    int D = s->m->cfg.dim;
    float *da = malloc((size_t)T * D * sizeof *da);
    double loss = mf_loss_nmse(h, b, T, D, 0, da);
    if (grad) {
        const float *extra[5] = {NULL, da, NULL, NULL, NULL};
        mf_train_backward(s->m, s->ts, &s->ps, zero, NULL, extra);
    }
    free(da);
    return loss;
}

Test(grad, stories260K_hidden_loss_finite_differences) {
    golden g;
    golden_load(&g, "stories260K_ce");
    stage s;
    stage_open(&s, stories_path(), 0, -1, 1, 1, g.T, 0);
    int T = g.T, D = s.m->cfg.dim;
    cr_assert(mf_train_layer_output(s.m, s.ts, 4) == s.ts->x_out && mf_train_layer_output(s.m, s.ts, 5) == NULL);
    rng_state = 12;
    double *bd;
    float *b = rnd((size_t)T * D, 1, &bd), *zero = calloc((size_t)T * D, sizeof *zero);
    free(bd);
    hidden_step(&s, g.ids, T, b, zero, 1);
    /* layers after 1 and the final norm get nothing, layers 0-1 and the embedding do */
    const char *none[] = {"model.layers.2.self_attn.q_proj.weight", "model.layers.4.mlp.down_proj.weight", "model.norm.weight"};
    for (int k = 0; k < 3; k++)
        cr_expect(mf_params_find(&s.ps, none[k])->grad[0] == 0.0f, "%s has a gradient from a layer-1 loss", none[k]);
    const char *names[] = {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                           "model.layers.1.mlp.down_proj.weight", "model.layers.1.input_layernorm.weight"};
    double worst = 0;
    for (int k = 0; k < 4; k++) {
        mf_param *p = mf_params_find(&s.ps, names[k]);
        double gmax = 0;
        size_t best = 0;
        for (size_t i = 0; i < p->numel; i++) {
            gmax = fmax(gmax, fabsf(p->grad[i]));
            if (fabsf(p->grad[i]) > fabsf(p->grad[best])) best = i;
        }
        float w = p->data[best], h = 3e-2f * fmaxf(1.0f, fabsf(w));
        p->data[best] = w + h;
        float wp = p->data[best];
        double fp = hidden_step(&s, g.ids, T, b, zero, 0);
        p->data[best] = w - h;
        float wm = p->data[best];
        double fm = hidden_step(&s, g.ids, T, b, zero, 0);
        p->data[best] = w;
        double fd = (fp - fm) / ((double)wp - wm), an = p->grad[best], err = fabs(fd - an) / (fabs(an) + 0.02 * gmax);
        worst = fmax(worst, err);
        cr_expect(err < 2e-2, "%s[%zu]: backward %.6g, finite differences %.6g", names[k], best, an, fd);
    }
    cr_log_info("hidden-state loss at layer 1: worst finite-difference error %.3g", worst);
    free(b); free(zero);
    stage_close(&s);
    golden_free(&g);
}

/* ---- errors ---- */

Test(grad, bad_input) {
    stage s;
    stage_open(&s, stories_path(), 0, -1, 1, 1, 8, 0);
    mf_err err;
    int32_t ids[8] = {1, 2, 3, 600, 4, 5, 6, 7};
    cr_expect(mf_train_forward(s.m, s.ts, ids, NULL, 8, NULL, &err) == -1);
    cr_expect(strstr(err.msg, "600") && strstr(err.msg, "position 3"), "message: %s", err.msg);
    cr_expect(mf_train_forward(s.m, s.ts, ids, NULL, 9, NULL, &err) == -1);
    cr_expect(strstr(err.msg, "9 tokens"), "message: %s", err.msg);
    cr_expect(mf_train_state_new(s.m, 0, 0, &err) == NULL);
    stage_close(&s);
}

/* ---- SmolLM2: golden slices, and the time of one step at T = 256 ---- */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

Test(grad, smollm2_ce_vs_torch, .timeout = 300) { check_ce_golden("smollm2_ce", tu_smollm2(), 1e-5, 2e-3); }

/* Two steps of forward + backward of T = 256 tokens (the golden's TinyStories
 * ids, repeated) on stories260K and SmolLM2: finite loss and gradients, and
 * the second step (state and gradient buffers reused) gives the same bits.
 * Times are logged (the first step includes first-touch page faults; tests
 * run in parallel, so use bench-style runs for quoted numbers). */
static void time_step(const char *path, int T) {
    golden g;
    golden_load(&g, "smollm2_ce");
    stage s;
    stage_open(&s, path, 0, -1, 1, 1, T, 0);
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    for (int t = 0; t < T; t++) ids[t] = g.ids[t % g.T] % s.m->cfg.vocab_size;
    double t0 = now();
    double loss = ce_step(&s, ids, T, 1);
    double t1 = now();
    cr_expect(isfinite(loss) && loss > 0, "loss %g", loss);
    double gs = mf_params_grad_sq(&s.ps);
    cr_expect(isfinite(gs) && gs > 0, "gradient norm^2 %g", gs);
    float **first = malloc((size_t)s.ps.n * sizeof *first);
    for (int i = 0; i < s.ps.n; i++) {
        first[i] = malloc(s.ps.p[i].numel * sizeof(float));
        memcpy(first[i], s.ps.p[i].grad, s.ps.p[i].numel * sizeof(float));
    }
    mf_params_zero_grad(&s.ps);
    double t2 = now();
    double loss2 = ce_step(&s, ids, T, 1);
    double t3 = now();
    cr_expect(loss2 == loss, "second step loss %.17g vs %.17g", loss2, loss);
    for (int i = 0; i < s.ps.n; i++) {
        cr_expect(memcmp(first[i], s.ps.p[i].grad, s.ps.p[i].numel * sizeof(float)) == 0, "%s: second step differs",
                  s.ps.p[i].name);
        free(first[i]);
    }
    free(first);
    cr_log_info("%s: forward+backward of %d tokens: %.3f s (first step), %.3f s (second); loss %.4f, %zu params, "
                "state %.1f MB", path, T, t1 - t0, t3 - t2, loss, s.ps.total, s.ts->bytes / 1e6);
    free(ids);
    stage_close(&s);
    golden_free(&g);
}

Test(grad, step_repeat_stories260K_T256) { time_step(stories_path(), 256); }
Test(grad, step_repeat_smollm2_T256, .timeout = 300) { time_step(tu_smollm2(), 256); }

/* The training forward (model_train.c) and the inference forward (forward.c) run
 * the same backend kernels: the logits agree bit for bit, so the loss a student
 * is trained on is exactly what `eval` measures. */
Test(grad, training_forward_equals_inference_forward) {
    mf_err err;
    mf_source *src = mf_source_open(stories_path(), &err);
    cr_assert(src, "%s", err.msg);
    mf_model *m = mf_model_load(src, mf_backend_cpu(), 0, src->cfg.n_layers, 1, 1, &err);
    cr_assert(m, "%s", err.msg);
    int T = 64, V = m->cfg.vocab_size;
    int32_t ids[64];
    for (int t = 0; t < T; t++) ids[t] = (int32_t)((t * 37 + 1) % V);
    mf_state *s = mf_state_new(m, T, T);
    mf_forward_embed(m, s, ids, T);
    mf_forward_layers(m, s, T, 0);
    mf_forward_head(m, s, T);
    mf_train_state *ts = mf_train_state_new(m, T, 0, &err);
    cr_assert(ts, "%s", err.msg);
    cr_assert_eq(mf_train_forward(m, ts, ids, NULL, T, NULL, &err), 0, "%s", err.msg);
    float *z = mf_train_head_forward(m, ts);
    cr_expect(memcmp(z, s->logits, (size_t)T * V * sizeof *z) == 0, "training and inference logits differ");
    mf_train_state_free(ts);
    mf_state_free(m, s);
    mf_model_free(m);
    mf_source_close(src);
}
