/* test_fuse.c - FuseGPT fusion (src/compress/fuse.c, src/cli/fuse.c).
 *
 * Ops: the fused weight and its backward against float64 formulas written
 * here; the batch-axis softmax KL against a float64 reference and central
 * differences. Window (stories260K): zero-initialized adapters reproduce the
 * window without the block bit for bit; folding is exact (an unfused adapter
 * forward written here, float64 linears, against the folded model: 1e-5);
 * the gradients of A, B, U, V and the norm scales pass central differences.
 * Command: the same result for P = 1, 2, 3; the first Macro Influence equals
 * `score`'s; the fused model beats plain removal of the same block; killed
 * with SIGKILL mid-run (asserted) and resumed, identical weights; SIGTERM
 * mid-run, resumed: the bytes of an uninterrupted run; bad options fail in one line. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/cpu_backward.h"
#include "compress/fuse.h"
#include "io/source.h"
#include "model/model.h"
#include "testutil.h"

#define STORIES "llm_assets/models/stories260K/stories260K.bin"
#define TINY "llm_assets/text/tinystories_train_first2MiB.txt"

static uint64_t rng_state = 7;
static double urand(void) { /* [0, 1) */
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static void fill(float *x, size_t n, double s) {
    for (size_t i = 0; i < n; i++) x[i] = (float)((2 * urand() - 1) * s);
}

/* ------------------------------------------------------------ ops */

Test(fuse, fused_weight_and_backward_vs_float64) {
    int out = 24, in = 20, r = 5;
    size_t n = (size_t)out * in;
    float *W = malloc(n * 4), *P = malloc(n * 4), *A = malloc((size_t)r * in * 4), *B = malloc((size_t)out * r * 4),
          *U = malloc((size_t)out * r * 4), *V = malloc((size_t)r * in * 4), *We = malloc(n * 4), *s = malloc(n * 4),
          *G = malloc(n * 4), *dA = malloc((size_t)r * in * 4), *dB = malloc((size_t)out * r * 4),
          *dU = malloc((size_t)out * r * 4), *dV = malloc((size_t)r * in * 4);
    fill(W, n, 1); fill(P, n, 1); fill(A, (size_t)r * in, 0.5); fill(B, (size_t)out * r, 0.5);
    fill(U, (size_t)out * r, 0.5); fill(V, (size_t)r * in, 0.5); fill(G, n, 1);
    mf_backend_cpu()->fuse_weight(We, W, P, A, B, U, V, out, in, r, s);
    mf_backend_cpu()->fuse_weight_bwd(dA, dB, dU, dV, G, P, A, B, U, V, out, in, r, s);
    double e = 0;
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++) {
            double ba = 0, uv = 0;
            for (int k = 0; k < r; k++) { ba += (double)B[o * r + k] * A[k * in + i]; uv += (double)U[o * r + k] * V[k * in + i]; }
            e = fmax(e, fabs(We[o * in + i] - (W[o * in + i] + ba + uv * P[o * in + i])));
        }
    cr_expect(e < 1e-5, "W_eff differs from W + BA + (UV)*P by %g", e);
    double eb = 0, ea = 0, eu = 0, ev = 0;
    for (int o = 0; o < out; o++)
        for (int k = 0; k < r; k++) {
            double b = 0, u = 0;
            for (int i = 0; i < in; i++) { b += (double)G[o * in + i] * A[k * in + i]; u += (double)G[o * in + i] * P[o * in + i] * V[k * in + i]; }
            eb = fmax(eb, fabs(dB[o * r + k] - b));
            eu = fmax(eu, fabs(dU[o * r + k] - u));
        }
    for (int k = 0; k < r; k++)
        for (int i = 0; i < in; i++) {
            double a = 0, v = 0;
            for (int o = 0; o < out; o++) { a += (double)B[o * r + k] * G[o * in + i]; v += (double)U[o * r + k] * G[o * in + i] * P[o * in + i]; }
            ea = fmax(ea, fabs(dA[k * in + i] - a));
            ev = fmax(ev, fabs(dV[k * in + i] - v));
        }
    cr_expect(ea < 1e-4 && eb < 1e-4 && eu < 1e-4 && ev < 1e-4, "adapter gradients: |dA| %g |dB| %g |dU| %g |dV| %g", ea, eb, eu, ev);
    free(W); free(P); free(A); free(B); free(U); free(V); free(We); free(s); free(G); free(dA); free(dB); free(dU); free(dV);
}

typedef struct { const double *s, *t; int B; size_t n; } klb_ctx;

/* float64 reference: sum over positions of KL(softmax_b t || softmax_b s) / B */
static double klb_ref(const klb_ctx *c) {
    double loss = 0;
    for (size_t i = 0; i < c->n; i++) {
        double ms = -INFINITY, mt = -INFINITY, zs = 0, zt = 0;
        for (int b = 0; b < c->B; b++) { ms = fmax(ms, c->s[b * c->n + i]); mt = fmax(mt, c->t[b * c->n + i]); }
        for (int b = 0; b < c->B; b++) { zs += exp(c->s[b * c->n + i] - ms); zt += exp(c->t[b * c->n + i] - mt); }
        for (int b = 0; b < c->B; b++) {
            double ls = c->s[b * c->n + i] - ms - log(zs), lt = c->t[b * c->n + i] - mt - log(zt);
            loss += exp(lt) * (lt - ls);
        }
    }
    return loss / c->B;
}

Test(fuse, kl_batch_loss_vs_float64_and_finite_differences) {
    int B = 3;
    size_t n = 9000; /* more than one reduction block */
    float *S = malloc(B * n * 4), *Tt = malloc(B * n * 4), *dS = malloc(B * n * 4);
    double *s = malloc(B * n * 8), *t = malloc(B * n * 8);
    fill(S, B * n, 3); fill(Tt, B * n, 3);
    for (size_t i = 0; i < B * n; i++) { s[i] = S[i]; t[i] = Tt[i]; }
    klb_ctx c = {s, t, B, n};
    double got = mf_loss_kl_batch(S, Tt, B, n, B, dS), want = klb_ref(&c);
    cr_expect(fabs(got - want) < 1e-9 * fabs(want), "loss %.12g, float64 reference %.12g", got, want);
    double worst = 0;
    for (int k = 0; k < 40; k++) {
        size_t i = (size_t)(urand() * B * n);
        double h = 1e-4, x = s[i];
        s[i] = x + h; double fp = klb_ref(&c);
        s[i] = x - h; double fm = klb_ref(&c);
        s[i] = x;
        double fd = (fp - fm) / (2 * h);
        worst = fmax(worst, fabs(fd - dS[i]) / (fabs(fd) + 1e-6));
    }
    cr_expect(worst < 1e-4, "dS vs central differences: worst relative error %g", worst);
    /* identical inputs: zero loss */
    cr_expect(fabs(mf_loss_kl_batch(S, S, B, n, B, NULL)) < 1e-9);
    free(S); free(Tt); free(dS); free(s); free(t);
}

/* ------------------------------------------------------------ window (stories260K) */

typedef struct {
    mf_source *src;
    mf_model *m;
    mf_layer *blocks; /* copies of every layer (the window = the whole model) */
    int orig[16];
} wctx;

static void wctx_open(wctx *c) {
    mf_err err;
    c->src = mf_source_open(tu_shared(STORIES), &err);
    cr_assert(c->src, "%s", err.msg);
    c->m = mf_model_load(c->src, mf_backend_cpu(), 0, c->src->cfg.n_layers, 1, 1, &err);
    cr_assert(c->m, "%s", err.msg);
    int L = c->m->cfg.n_layers;
    mf_layer_tensor lt[MF_LAYER_TENSORS];
    mf_layer_tensors(&c->m->cfg, lt);
    c->blocks = calloc((size_t)L, sizeof *c->blocks);
    for (int l = 0; l < L; l++) {
        c->orig[l] = l;
        for (int i = 0; i < MF_LAYER_TENSORS; i++) {
            float *s = *mf_layer_slot(&c->m->layers[l], &lt[i]);
            if (!s) continue;
            size_t n = (size_t)lt[i].d0 * (lt[i].d1 ? lt[i].d1 : 1);
            float *d = malloc(n * 4);
            memcpy(d, s, n * 4);
            *mf_layer_slot(&c->blocks[l], &lt[i]) = d;
        }
    }
}

static void wctx_close(wctx *c) {
    mf_layer_tensor lt[MF_LAYER_TENSORS];
    mf_layer_tensors(&c->m->cfg, lt);
    for (int l = 0; l < c->m->cfg.n_layers; l++)
        for (int i = 0; i < MF_LAYER_TENSORS; i++) free(*mf_layer_slot(&c->blocks[l], &lt[i]));
    free(c->blocks);
    mf_model_free(c->m);
    mf_source_close(c->src);
}

/* Embeddings of T tokens of the text starting at token `at` (bos first). */
static float *embed(const mf_model *m, int T, int at) {
    mf_state *st = mf_state_new(m, T, T);
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    ids[0] = m->cfg.bos_id;
    for (int t = 1; t < T; t++) ids[t] = (int32_t)((at + 37 * t) % m->cfg.vocab_size);
    mf_forward_embed(m, st, ids, T);
    float *x = malloc((size_t)T * m->cfg.dim * 4);
    memcpy(x, st->x, (size_t)T * m->cfg.dim * 4);
    mf_state_free(m, st);
    free(ids);
    return x;
}

Test(fuse, zero_adapters_reproduce_window_without_block) {
    wctx c;
    wctx_open(&c);
    int L = c.m->cfg.n_layers, T = 24, D = c.m->cfg.dim;
    for (int drop = 0; drop < L; drop += L - 1) { /* the first and the last block */
        mf_fuse_window w;
        mf_err err;
        cr_assert_eq(mf_fuse_window_init(&w, mf_backend_cpu(), &c.m->cfg, c.blocks, c.orig, L, drop, 8, 1, T, 1, 0, &err), 0, "%s", err.msg);
        for (int i = 0; i < w.n_lin; i++)
            cr_assert(memcmp(w.lin[i].W_eff, w.lin[i].W, (size_t)w.lin[i].out * w.lin[i].in * 4) == 0,
                      "W_eff != W at initialization (linear %d)", i);
        float *x = embed(c.m, T, 5);
        const float *S = mf_fuse_forward(&w, 0, x, T);
        unsigned char skip[16] = {0};
        skip[drop] = 1;
        mf_state *st = mf_state_new(c.m, T, T);
        memcpy(st->x, x, (size_t)T * D * 4);
        mf_forward_range(c.m, st, T, 0, 0, L, skip);
        double e = 0;
        for (size_t i = 0; i < (size_t)T * D; i++) e = fmax(e, fabs(S[i] - st->x[i]));
        cr_expect(memcmp(S, st->x, (size_t)T * D * 4) == 0, "drop %d: student window differs from the model without the block (max %g)", drop, e);
        mf_state_free(c.m, st);
        free(x);
        mf_fuse_window_free(&w);
    }
    wctx_close(&c);
}

/* Random nonzero adapters and norm scales (B, U start at zero otherwise). */
static void randomize(mf_fuse_window *w, double s) {
    mf_params *ls[2] = {&w->gates, &w->base};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < ls[k]->n; i++) {
            mf_param *p = &ls[k]->p[i];
            if (strstr(p->name, "lora_B") || strstr(p->name, "gate_U")) fill(p->data, p->numel, s);
            if (strstr(p->name, "layernorm")) for (size_t j = 0; j < p->numel; j++) p->data[j] *= (float)(1 + 0.2 * (2 * urand() - 1));
        }
}

/* An adapter linear computed unfused, in float64: x W^T + (x A^T) B^T + x ((U V) * P)^T. */
static void lin_unfused(float *y, const float *x, int T, const mf_fuse_lin *f, int r) {
    int out = f->out, in = f->in;
    double *C = malloc((size_t)out * in * 8), *xa = malloc((size_t)r * 8);
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++) {
            double uv = 0;
            for (int k = 0; k < r; k++) uv += (double)f->U[o * r + k] * f->V[k * in + i];
            C[(size_t)o * in + i] = uv * f->P[(size_t)o * in + i];
        }
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * in;
        for (int k = 0; k < r; k++) { xa[k] = 0; for (int i = 0; i < in; i++) xa[k] += (double)xt[i] * f->A[k * in + i]; }
        for (int o = 0; o < out; o++) {
            double acc = 0;
            for (int i = 0; i < in; i++) acc += (double)xt[i] * (f->W[(size_t)o * in + i] + C[(size_t)o * in + i]);
            for (int k = 0; k < r; k++) acc += xa[k] * f->B[o * r + k];
            y[(size_t)t * out + o] = (float)acc;
        }
    }
    free(C); free(xa);
}

/* One Llama block on x [T][D] in place; lin: the block's 7 adapter linears (unfused) or NULL (plain weights). */
static void block_fwd(float *x, const mf_layer *Lw, const mf_fuse_lin *lin, int r, const mf_config *c, const float *inv_freq, int T) {
    int D = c->dim, F = c->ffn_dim, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim;
    float *xn = malloc((size_t)T * D * 4), *q = malloc((size_t)T * Q * 4), *k = malloc((size_t)T * KV * 4),
          *v = malloc((size_t)T * KV * 4), *att = malloc((size_t)T * Q * 4), *o = malloc((size_t)T * D * 4),
          *g = malloc((size_t)T * F * 4), *u = malloc((size_t)T * F * 4), *h = malloc((size_t)T * F * 4);
    const float *W[7] = {Lw->wq, Lw->wk, Lw->wv, Lw->wo, Lw->w_gate, Lw->w_up, Lw->w_down};
    int ins[7] = {D, D, D, Q, D, D, F}, outs[7] = {Q, KV, KV, D, F, F, D};
#define LIN(j, y, xx) (lin ? lin_unfused(y, xx, T, &lin[j], r) : mf_linear_fwd(y, xx, W[j], NULL, T, ins[j], outs[j], 0))
    mf_rmsnorm_fwd(xn, NULL, x, Lw->attn_norm, T, D, c->norm_eps);
    LIN(0, q, xn); LIN(1, k, xn); LIN(2, v, xn);
    mf_rope_fwd(q, T, c->n_heads, c->head_dim, 0, inv_freq);
    mf_rope_fwd(k, T, c->n_kv_heads, c->head_dim, 0, inv_freq);
    mf_attention_fwd(att, q, k, v, T, c->n_heads, c->n_kv_heads, c->head_dim);
    LIN(3, o, att);
    for (size_t i = 0; i < (size_t)T * D; i++) x[i] += o[i];
    mf_rmsnorm_fwd(xn, NULL, x, Lw->ffn_norm, T, D, c->norm_eps);
    LIN(4, g, xn); LIN(5, u, xn);
    mf_swiglu_fwd(h, g, u, (size_t)T * F);
    LIN(6, o, h);
    for (size_t i = 0; i < (size_t)T * D; i++) x[i] += o[i];
#undef LIN
    free(xn); free(q); free(k); free(v); free(att); free(o); free(g); free(u); free(h);
}

Test(fuse, folding_is_exact) {
    wctx c;
    wctx_open(&c);
    int L = c.m->cfg.n_layers, T = 20, D = c.m->cfg.dim, V = c.m->cfg.vocab_size, drop = 2, r = 8;
    mf_fuse_window w;
    mf_err err;
    cr_assert_eq(mf_fuse_window_init(&w, mf_backend_cpu(), &c.m->cfg, c.blocks, c.orig, L, drop, r, 3, T, 1, 0, &err), 0, "%s", err.msg);
    rng_state = 99;
    randomize(&w, 0.05);
    /* adapter form: embedding -> blocks (window blocks unfused, with the trained norm scales) -> head */
    float *x = embed(c.m, T, 11), *xa = malloc((size_t)T * D * 4);
    memcpy(xa, x, (size_t)T * D * 4);
    for (int k = 0; k < L - 1; k++)
        block_fwd(xa, &w.student_layers[k], &w.lin[k * MF_FUSE_LINEARS], r, &c.m->cfg, c.m->inv_freq, T);
    mf_state *st = mf_state_new(c.m, T, T);
    memcpy(st->x, xa, (size_t)T * D * 4);
    mf_forward_head(c.m, st, T);
    float *za = malloc((size_t)T * V * 4);
    memcpy(za, st->logits, (size_t)T * V * 4);
    /* folded: plain blocks in the model, the removed one skipped, the ordinary forward */
    mf_fuse_fold(&w);
    mf_layer *keep = c.m->layers;
    c.m->layers = c.blocks;
    unsigned char skip[16] = {0};
    skip[drop] = 1;
    memcpy(st->x, x, (size_t)T * D * 4);
    mf_forward_range(c.m, st, T, 0, 0, L, skip);
    mf_forward_head(c.m, st, T);
    c.m->layers = keep;
    double e = 0, zmax = 0, moved = 0;
    for (size_t i = 0; i < (size_t)T * V; i++) {
        e = fmax(e, fabs(st->logits[i] - za[i]));
        zmax = fmax(zmax, fabs(za[i]));
    }
    /* and the adapters did change the function (against the plain model without the block) */
    float *xp = malloc((size_t)T * D * 4);
    memcpy(xp, x, (size_t)T * D * 4);
    for (int l = 0; l < L; l++) if (l != drop) block_fwd(xp, &c.m->layers[l], NULL, r, &c.m->cfg, c.m->inv_freq, T);
    for (size_t i = 0; i < (size_t)T * D; i++) moved = fmax(moved, fabs(xp[i] - xa[i]));
    cr_log_info("folded vs adapter form: max |dlogit| %g of max |logit| %g; adapters moved hidden states by %g", e, zmax, moved);
    cr_expect(e < 1e-5 * zmax, "folded logits differ from the adapter form by %g (max |logit| %g)", e, zmax);
    cr_expect(moved > 1e-2, "the random adapters should change the window (moved %g)", moved);
    mf_state_free(c.m, st);
    free(x); free(xa); free(za); free(xp);
    mf_fuse_window_free(&w);
    wctx_close(&c);
}

/* kl-batch loss of the student window over two samples (gradients when grad). */
static double window_loss(mf_fuse_window *w, float *const *x, const float *Tall, float *Sall, float *dS, int T, int grad) {
    size_t n = (size_t)T * w->cfg.dim;
    if (grad) mf_fuse_zero_grad(w);
    mf_fuse_materialize(w);
    for (int b = 0; b < 2; b++) memcpy(Sall + b * n, mf_fuse_forward(w, b, x[b], T), n * 4);
    double loss = mf_loss_kl_batch(Sall, Tall, 2, n, 2, grad ? dS : NULL);
    if (grad) {
        for (int b = 0; b < 2; b++) mf_fuse_backward(w, b, dS + b * n);
        mf_fuse_param_grads(w);
    }
    return loss;
}

Test(fuse, adapter_gradients_finite_differences) {
    wctx c;
    wctx_open(&c);
    int L = c.m->cfg.n_layers, T = 12, drop = 3, r = 4;
    size_t n = (size_t)T * c.m->cfg.dim;
    mf_fuse_window w;
    mf_err err;
    cr_assert_eq(mf_fuse_window_init(&w, mf_backend_cpu(), &c.m->cfg, c.blocks, c.orig, L, drop, r, 5, T, 2, 0, &err), 0, "%s", err.msg);
    rng_state = 5;
    randomize(&w, 0.1);
    float *x[2] = {embed(c.m, T, 3), embed(c.m, T, 101)};
    float *Tall = malloc(2 * n * 4), *Sall = malloc(2 * n * 4), *dS = malloc(2 * n * 4);
    for (int b = 0; b < 2; b++) mf_fuse_teacher(&w, x[b], T, Tall + b * n);
    window_loss(&w, x, Tall, Sall, dS, T, 1);
    const char *names[] = {"fuse.layers.0.self_attn.q_proj.lora_A", "fuse.layers.1.self_attn.k_proj.lora_B",
                           "fuse.layers.2.self_attn.v_proj.gate_U", "fuse.layers.4.self_attn.o_proj.gate_V",
                           "fuse.layers.1.mlp.gate_proj.gate_V", "fuse.layers.2.mlp.up_proj.lora_A",
                           "fuse.layers.4.mlp.down_proj.gate_U", "fuse.layers.0.input_layernorm.weight",
                           "fuse.layers.4.post_attention_layernorm.weight"};
    double worst = 0;
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        mf_param *p = mf_params_find(&w.gates, names[k]);
        if (!p) p = mf_params_find(&w.base, names[k]);
        cr_assert(p, "%s", names[k]);
        double gmax = 0;
        for (size_t i = 0; i < p->numel; i++) gmax = fmax(gmax, fabsf(p->grad[i]));
        cr_expect(gmax > 0, "%s has no gradient", names[k]);
        size_t best = 0, pick[2];
        for (int q = 0; q < 64; q++) {
            size_t i = (size_t)(urand() * p->numel);
            if (fabsf(p->grad[i]) > fabsf(p->grad[best])) best = i;
        }
        pick[0] = best;
        pick[1] = (size_t)(urand() * p->numel);
        for (int q = 0; q < 2; q++) {
            size_t i = pick[q];
            float v = p->data[i], h = 3e-2f * fmaxf(1.0f, fabsf(v));
            p->data[i] = v + h;
            double fp = window_loss(&w, x, Tall, Sall, NULL, T, 0);
            float vp = p->data[i];
            p->data[i] = v - h;
            double fm = window_loss(&w, x, Tall, Sall, NULL, T, 0);
            float vm = p->data[i];
            p->data[i] = v;
            double fd = (fp - fm) / ((double)vp - vm), an = p->grad[i];
            double e = fabs(fd - an) / (fabs(an) + 0.02 * gmax);
            worst = fmax(worst, e);
            /* float forward: FD noise and curvature reach ~2e-2; a wrong gradient is off by O(1) */
            cr_expect(e < 3e-2, "%s[%zu]: backward %.6g, finite differences %.6g (max |grad| %.3g)", p->name, i, an, fd, gmax);
        }
    }
    cr_log_info("adapter gradients vs finite differences: worst %.3g", worst);
    free(x[0]); free(x[1]); free(Tall); free(Sall); free(dS);
    mf_fuse_window_free(&w);
    wctx_close(&c);
}

Test(fuse, window_span) {
    int cnt;
    cr_expect_eq(mf_fuse_window_span(30, 15, 8, &cnt), 11); cr_expect_eq(cnt, 8);   /* 4 before, 3 after */
    cr_expect_eq(mf_fuse_window_span(30, 0, 8, &cnt), 0);                           /* first block */
    cr_expect_eq(mf_fuse_window_span(30, 29, 8, &cnt), 22);                         /* last block */
    cr_expect_eq(mf_fuse_window_span(30, 27, 8, &cnt), 22);
    cr_expect_eq(mf_fuse_window_span(5, 2, 8, &cnt), 0); cr_expect_eq(cnt, 5);      /* fewer blocks than the window */
    cr_expect_eq(mf_fuse_window_span(10, 5, 2, &cnt), 4); cr_expect_eq(cnt, 2);
}

/* ------------------------------------------------------------ the command */

/* The small stories260K fusion (2 blocks) into DIR/OUT with extra options (a repeated option: the last wins);
 * its exit status, stderr in *err (free it). */
static int fuse_try(const char *dir, const char *out, int P, const char *extra, char **err) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "%s fuse --model %s --text %s --out %s/%s --drop-layers 2 --samples 16 --epochs 3 --rank 8 "
             "--lr 1e-2 --lr-base 1e-3 --ctx 128 %s", tu_mpirun(P), tu_shared(STORIES), tu_shared(TINY), dir, out, extra);
    return tu_run(cmd, NULL, err);
}

static void fuse_run(const char *dir, const char *out, int P, const char *extra) {
    char *err;
    cr_assert_eq(fuse_try(dir, out, P, extra, &err), 0, "fuse %s failed:\n%s", extra, err);
    free(err);
}

static json_t *last_line(const char *path) {
    size_t len;
    char *s = tu_read(path, &len);
    cr_assert(s && len, "no log %s", path);
    char *p = s + len - 1;
    while (p > s && p[-1] != '\n') p--;
    json_t *j = json_loads(p, 0, NULL);
    cr_assert(j, "bad log line %s", p);
    free(s);
    return j;
}

static double ppl(const char *model) {
    char cmd[8192], *out, *err;
    snprintf(cmd, sizeof cmd, "%s eval --model %s --text %s --skip 2000 --max-windows 40 --json", tu_mpirun(2), model, tu_shared(TINY));
    cr_assert_eq(tu_run(cmd, &out, &err), 0, "eval: %s", err);
    json_t *j = json_loads(out, 0, NULL);
    double p = json_real_value(json_object_get(j, "ppl"));
    json_decref(j); free(out); free(err);
    return p;
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = tu_read(a, &na), *y = tu_read(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x); free(y);
    return same;
}

Test(fuse, layouts_agree_mi_matches_score_and_beats_removal, .timeout = 600) {
    const char *dir = tu_tmpdir();
    char cmd[16384], *out, *err, path[4400], p2[4400];
    /* kl-batch: the loss that couples the windows of a batch, the delicate case for data parallelism */
    fuse_run(dir, "a", 1, "--loss kl-batch --json > /dev/null");
    snprintf(cmd, sizeof cmd, "%s fuse --model %s --text %s --out %s/b --drop-layers 2 --samples 16 --epochs 3 --rank 8 "
             "--lr 1e-2 --lr-base 1e-3 --ctx 128 --loss kl-batch --json", tu_mpirun(2), tu_shared(STORIES), tu_shared(TINY), dir);
    cr_assert_eq(tu_run(cmd, &out, &err), 0, "%s", err);
    json_t *sum = json_loads(out, 0, NULL);
    cr_assert(sum, "--json output: %s", out);
    free(out); free(err);
    fuse_run(dir, "c", 3, "--recompute --loss kl-batch");
    /* same losses for P = 1, 2, 3 (reduction noise) */
    double l[3];
    const char *names[3] = {"a", "b", "c"};
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/%s.fuse.jsonl", dir, names[k]);
        json_t *j = last_line(path);
        l[k] = json_real_value(json_object_get(j, "loss"));
        json_decref(j);
    }
    cr_expect(fabs(l[0] - l[1]) < 1e-5 * l[0] && fabs(l[0] - l[2]) < 1e-5 * l[0], "final losses differ: %.9g %.9g %.9g", l[0], l[1], l[2]);
    /* the first MI row is score's first MI pass (same 16 windows) */
    snprintf(cmd, sizeof cmd, "%s score --model %s --text %s --out %s/rk.h5 --samples 16 --ctx 128 --metrics mi --mi-iters 1 --json",
             tu_mpirun(2), tu_shared(STORIES), tu_shared(TINY), dir);
    cr_assert_eq(tu_run(cmd, &out, &err), 0, "%s", err);
    json_t *sc = json_loads(out, 0, NULL);
    cr_assert(sc, "score --json: %s", out);
    free(out); free(err);
    json_t *mi_s = json_array_get(json_object_get(sc, "mi"), 0);
    json_t *it0 = json_array_get(json_object_get(sum, "iterations"), 0);
    json_t *mi_f = json_object_get(it0, "mi");
    cr_assert(json_is_array(mi_s) && json_is_array(mi_f), "no MI rows (score: %s)", json_dumps(sc, 0));
    for (size_t i = 0; i < json_array_size(mi_f); i++) {
        double a = json_number_value(json_array_get(mi_f, i)), b = json_number_value(json_array_get(mi_s, i));
        cr_expect(fabs(a - b) <= 1e-9 * fabs(b), "MI of block %zu: fuse %.17g, score %.10g (printed to 10 digits)", i, a, b);
    }
    /* both layouts write the same model */
    snprintf(path, sizeof path, "%s/a", dir);
    snprintf(p2, sizeof p2, "%s/b", dir);
    double pa = ppl(path), pb = ppl(p2);
    cr_expect(fabs(pa / pb - 1) < 1e-3, "layouts give different models: ppl %.5f vs %.5f", pa, pb);
    char *cfg;
    snprintf(path, sizeof path, "%s/a/config.json", dir);
    size_t len;
    cfg = tu_read(path, &len);
    cr_assert(cfg && strstr(cfg, "\"num_hidden_layers\": 3") , "config.json: %s", cfg ? cfg : "(missing)");
    json_t *root = json_loads(cfg, 0, NULL), *mf = json_object_get(root, "minifuse");
    cr_assert(mf, "config.json has a minifuse section: %s", cfg);
    cr_expect_eq(json_array_size(json_object_get(mf, "dropped_layers")), 2, "config.json names the dropped layers: %s", cfg);
    cr_expect_str_eq(json_string_value(json_object_get(mf, "depth_metric")), "mi");
    cr_expect_eq(json_real_value(json_object_get(mf, "lr")), 0.01, "lr as written: %s", cfg);  /* not 0.009999999776 */
    json_decref(root);
    free(cfg);
    json_decref(sum); json_decref(sc);
}

Test(fuse, fused_block_beats_plain_removal, .timeout = 300) {
    const char *dir = tu_tmpdir();
    char cmd[16384], *out, *err, path[4400], rem[4400];
    snprintf(cmd, sizeof cmd, "%s fuse --model %s --text %s --out %s/f --drop-layers 1 --samples 32 --epochs 4 --rank 16 "
             "--lr 1e-2 --lr-base 1e-3 --ctx 256 --json", tu_mpirun(2), tu_shared(STORIES), tu_shared(TINY), dir);
    cr_assert_eq(tu_run(cmd, &out, &err), 0, "%s", err);
    json_t *sum = json_loads(out, 0, NULL);
    cr_assert(sum, "%s", out);
    json_t *it0 = json_array_get(json_object_get(sum, "iterations"), 0);
    int block = (int)json_integer_value(json_object_get(it0, "block"));
    double secs = json_real_value(json_object_get(it0, "seconds")), smi = json_real_value(json_object_get(it0, "seconds_mi")),
           strain = json_real_value(json_object_get(it0, "seconds_train")),
           sother = json_real_value(json_object_get(it0, "seconds_setup_fold"));
    cr_expect(smi > 0 && strain > 0 && sother > 0 && fabs(smi + strain + sother - secs) < 1e-6 * secs,
              "time breakdown: MI %g + training %g + set-up/fold %g should be the iteration's %g s", smi, strain, sother, secs);
    free(out); free(err);
    /* the same block simply removed: score's MI on the same 32 windows picks the same block */
    snprintf(cmd, sizeof cmd, "%s score --model %s --text %s --out %s/rk.h5 --samples 32 --ctx 256 --metrics mi --mi-iters 1 && "
             "%s prune --model %s --rankings %s/rk.h5 --out %s/z --drop-layers 1 --metric mi", tu_mpirun(2), tu_shared(STORIES),
             tu_shared(TINY), dir, tu_mpirun(1), tu_shared(STORIES), dir, dir);
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "%s", err);
    free(err);
    snprintf(path, sizeof path, "%s/f", dir);
    snprintf(rem, sizeof rem, "%s/z", dir);
    double pf = ppl(path), pz = ppl(rem);
    cr_log_info("block %d: removed ppl %.4f, fused ppl %.4f", block, pz, pf);
    cr_expect(pf < 0.95 * pz, "fusing block %d should beat removing it: ppl %.4f vs %.4f", block, pf, pz);
    json_decref(sum);
}

/* Kill-and-resume runs: 40 epochs x 2 steps per block (about 30 ms a step on 2 ranks), so that a
 * signal sent early in the second block lands with most of it to go. Checkpoint numbers are
 * global: block 1 has steps 1..80 and its fold is 81; block 2 steps 82..161, fold 162. */
#define LONG_EPOCHS "--epochs 40"
#define LONG_LAST 162

Test(fuse, kill_and_resume_bit_identical, .timeout = 600) {
    const char *dir = tu_tmpdir();
    /* --resume on a first start: no checkpoint directory yet */
    fuse_run(dir, "ref", 2, LONG_EPOCHS " --checkpoint-every 2 --resume");
    char cmd[16384], trig[4400], out[4400], pat[4400], ck[4400], why[9000];
    snprintf(ck, sizeof ck, "%s/ref.ckpt", dir);
    cr_assert_eq(tu_newest_ckpt(ck), LONG_LAST, "the uninterrupted run's last checkpoint (the second fold)");
    /* with --checkpoint-every 2: ..., 78, 81 (fold), 83, 85, ...: kill at 85, early in block 2 */
    snprintf(cmd, sizeof cmd, "%s fuse --model %s --text %s --out %s/k --drop-layers 2 --samples 16 " LONG_EPOCHS " --rank 8 "
             "--lr 1e-2 --lr-base 1e-3 --ctx 128 --checkpoint-every 2", tu_mpirun(2), tu_shared(STORIES), tu_shared(TINY), dir);
    snprintf(trig, sizeof trig, "%s/k.ckpt/ckpt-00000085.h5", dir);
    snprintf(out, sizeof out, "%s/k", dir);
    snprintf(pat, sizeof pat, "%s/k --drop-layers", dir);
    tu_interrupt(cmd, trig, out, pat, 9, NULL);
    cr_assert(access(out, F_OK) != 0, "the killed run must not have finished");
    snprintf(ck, sizeof ck, "%s/k.ckpt", dir);
    long newest = tu_newest_ckpt(ck);
    cr_assert(newest >= 85 && newest < LONG_LAST - 10, "the kill did not land early in block 2: newest checkpoint %ld", newest);
    fuse_run(dir, "k", 2, LONG_EPOCHS " --checkpoint-every 2 --resume");
    snprintf(ck, sizeof ck, "%s/ref", dir);
    cr_expect(tu_same_weights(ck, out, why, sizeof why), "resumed weights differ from the uninterrupted run: %s", why);
    /* killed after the first fold (only fold checkpoints), resumed with 3 ranks: same model within noise */
    snprintf(cmd, sizeof cmd, "%s fuse --model %s --text %s --out %s/f --drop-layers 2 --samples 16 " LONG_EPOCHS " --rank 8 "
             "--lr 1e-2 --lr-base 1e-3 --ctx 128", tu_mpirun(2), tu_shared(STORIES), tu_shared(TINY), dir);
    snprintf(trig, sizeof trig, "%s/f.ckpt/ckpt-00000081.h5", dir);
    snprintf(out, sizeof out, "%s/f", dir);
    snprintf(pat, sizeof pat, "%s/f --drop-layers", dir);
    tu_interrupt(cmd, trig, out, pat, 9, NULL);
    cr_assert(access(out, F_OK) != 0, "the killed run must not have finished");
    snprintf(ck, sizeof ck, "%s/f.ckpt", dir);
    cr_assert_eq(tu_newest_ckpt(ck), 81, "killed during block 2: only the first fold's checkpoint");
    fuse_run(dir, "f", 3, LONG_EPOCHS " --resume");
    snprintf(ck, sizeof ck, "%s/ref", dir);
    double pr = ppl(ck), pf = ppl(out);
    cr_expect(fabs(pr / pf - 1) < 1e-3, "resumed with another layout: ppl %.5f vs %.5f", pf, pr);
}

/* A mid-iteration checkpoint whose adapters are damaged (a NaN in a lora_A, then a missing gate_V)
 * is reported and the previous checkpoint used; the run ends with the bytes of an uninterrupted one. */
Test(fuse, damaged_adapters_previous_checkpoint_used, .timeout = 600) {
    const char *dir = tu_tmpdir();
    fuse_run(dir, "ref", 2, "");
    static const struct { const char *name, *edit, *expect; } D[] = {
        {"nan", "d=[k for k in f['params'] if k.endswith('lora_A')][0]; a=f['params'][d][()]; a.flat[3]=np.nan; "
                "f['params'][d][...]=a", "non-finite"},
        {"gone", "del f['params'][[k for k in f['params'] if k.endswith('gate_V')][0]]", "gate_V"},
    };
    for (size_t k = 0; k < sizeof D / sizeof D[0]; k++) {
        char extra[4400], ck[4400], code[2048], *err, why[9000];
        fuse_run(dir, D[k].name, 2, "--max-steps 4 --checkpoint-every 2 --keep 3");
        snprintf(ck, sizeof ck, "%s/%s.ckpt", dir, D[k].name);
        cr_assert_eq(tu_newest_ckpt(ck), 4, "%s: the run must stop at its checkpoint of step 4 (mid-iteration)", D[k].name);
        snprintf(ck, sizeof ck, "%s/%s.ckpt/ckpt-00000004.h5", dir, D[k].name);
        snprintf(code, sizeof code, "%s", D[k].edit);
        tu_h5py_edit(ck, code);
        snprintf(extra, sizeof extra, "--checkpoint-every 2 --keep 3 --resume");
        cr_assert_eq(fuse_try(dir, D[k].name, 2, extra, &err), 0, "%s: resume failed:\n%s", D[k].name, err);
        cr_expect(strstr(err, "cannot resume from") && strstr(err, "ckpt-00000004.h5") && strstr(err, D[k].expect),
                  "%s: the damaged adapters must be reported, naming '%s':\n%s", D[k].name, D[k].expect, err);
        cr_expect(strstr(err, "resumed from") && strstr(err, "ckpt-00000002.h5"), "%s: must resume from step 2:\n%s",
                  D[k].name, err);
        free(err);
        cr_expect(tu_same_weights(tu_path_in(dir, "ref"), tu_path_in(dir, D[k].name), why, sizeof why), "%s: %s", D[k].name, why);
    }
}

/* --resume continues the same run: options that change the result are refused, naming the
 * option; --drop-layers may grow, and a 1-block run extended to 2 equals a 2-block run. */
Test(fuse, resume_checks_options_and_extends, .timeout = 300) {
    const char *dir = tu_tmpdir();
    fuse_run(dir, "two", 2, "");
    fuse_run(dir, "one", 2, "--drop-layers 1");
    char extra[4400], *err, a[4400], b[4400];
    struct { const char *args, *want; } bad[] = {
        {"--window 4", "--window 4 differs from the checkpoint's 8"},
        {"--loss kl-batch", "--loss \"kl-batch\" differs from the checkpoint's \"nmse\""},
        {"--lr-base 2e-3", "--lr-base 0.002 differs from the checkpoint's 0.001"},
        {"--seed 5", "--seed 5 differs"},
        {"--blocks 0,1", "--blocks 0,1 names block 0 there"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char out[64];
        snprintf(out, sizeof out, "bad%zu", k);
        snprintf(extra, sizeof extra, "--checkpoint-dir %s/one.ckpt --resume %s", dir, bad[k].args);
        cr_expect_neq(fuse_try(dir, out, 2, extra, &err), 0, "resume with %s must fail", bad[k].args);
        cr_expect(strstr(err, bad[k].want), "%s: message should say %s: %s", bad[k].args, bad[k].want, err);
        free(err);
        snprintf(a, sizeof a, "%s/%s", dir, out);
        cr_expect(access(a, F_OK) != 0, "a refused resume must not write %s", a);
    }
    /* another text */
    snprintf(extra, sizeof extra, "--checkpoint-dir %s/one.ckpt --resume --text %s", dir,
             tu_shared("llm_assets/text/tinyshakespeare_input.txt"));
    cr_expect_neq(fuse_try(dir, "badtext", 2, extra, &err), 0, "resume on another text must fail");
    cr_expect(strstr(err, "--text \"") && strstr(err, "tokens, fnv1a"), "%s", err);
    free(err);
    snprintf(extra, sizeof extra, "--checkpoint-dir %s/one.ckpt --resume", dir);
    fuse_run(dir, "ext", 2, extra);
    for (int s = 1; s <= 2; s++) {
        snprintf(a, sizeof a, "%s/two/model-0000%d-of-00002.safetensors", dir, s);
        snprintf(b, sizeof b, "%s/ext/model-0000%d-of-00002.safetensors", dir, s);
        cr_expect(same_file(a, b), "1 block + 1 more on --resume differs from 2 blocks at once (%s)", b);
    }
}

/* SIGTERM mid-run: checkpoint at the end of the step, exit 0; --resume at the same layout finishes
 * the job with the bytes of an uninterrupted run. */
Test(fuse, sigterm_checkpoints_exits_and_resumes_identically, .timeout = 300) {
    const char *dir = tu_tmpdir();
    char cmd[16384], trig[4400], out[4400], pat[4400], ck[4400], why[9000], *err;
    /* a singleton (no mpirun): the signal goes to the program itself */
    snprintf(cmd, sizeof cmd, "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 %s fuse "
             "--model %s --text %s --out %s/t --drop-layers 1 --samples 16 --epochs 40 --rank 8 --ctx 128",
             tu_bin(), tu_shared(STORIES), tu_shared(TINY), dir);
    snprintf(trig, sizeof trig, "%s/t.fuse.jsonl", dir);
    snprintf(out, sizeof out, "%s/t", dir);
    snprintf(pat, sizeof pat, "%s/t --drop-layers", dir);
    int rc = tu_interrupt(cmd, trig, out, pat, 15, &err);
    cr_expect_eq(rc, 0, "SIGTERM should end the run cleanly: %s", err);
    cr_expect(strstr(err, "checkpoint written"), "stderr: %s", err);
    free(err);
    cr_assert(access(out, F_OK) != 0, "no output after SIGTERM");
    char logp[4400];
    snprintf(logp, sizeof logp, "%s/t.fuse.jsonl", dir);
    long stopped = tu_last_step(logp);
    cr_assert(stopped >= 1 && stopped < 80, "SIGTERM should stop the block mid-run: last logged step %ld of 80", stopped);
    snprintf(cmd, sizeof cmd, "%s fuse --model %s --text %s --out %s/t --drop-layers 1 --samples 16 --epochs 40 --rank 8 --ctx 128 --resume --json",
             tu_mpirun(1), tu_shared(STORIES), tu_shared(TINY), dir);
    char *sum_s;
    cr_expect_eq(tu_run(cmd, &sum_s, &err), 0, "resume after SIGTERM: %s", err);
    free(err);
    json_t *sum = json_loads(sum_s, 0, NULL);
    cr_assert(sum, "--json summary: %s", sum_s);
    json_t *it0 = json_array_get(json_object_get(sum, "iterations"), 0);
    cr_expect(access(out, F_OK) == 0, "the resumed run writes %s", out);
    /* the same bytes as an uninterrupted run at the same layout */
    snprintf(cmd, sizeof cmd, "%s fuse --model %s --text %s --out %s/ref --drop-layers 1 --samples 16 --epochs 40 --rank 8 --ctx 128",
             tu_mpirun(1), tu_shared(STORIES), tu_shared(TINY), dir);
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "uninterrupted run: %s", err);
    free(err);
    snprintf(ck, sizeof ck, "%s/ref", dir);
    cr_expect(tu_same_weights(ck, out, why, sizeof why), "resumed after SIGTERM at step %ld: weights differ from the uninterrupted run: %s",
              stopped, why);
    /* it continued inside the iteration: the appended log does not start again at step 1 */
    size_t len;
    char *log = tu_read(logp, &len);
    cr_assert(log, "no log %s", logp);
    int starts = 0;
    for (char *q = log; (q = strstr(q, "\"step\":1,")); q++) starts++;
    cr_expect_eq(starts, 1, "the resumed run restarted the block (%d logs of step 1)", starts);
    cr_expect(strstr(log, "\"step\":80,"), "the resumed run reaches the last step (80)");
    /* the summary still knows the iteration's first loss (logged before the signal) and its window */
    json_t *first = json_loads(log, JSON_DISABLE_EOF_CHECK, NULL);
    cr_assert(first, "first log line");
    double want = json_real_value(json_object_get(first, "loss")), got = json_real_value(json_object_get(it0, "loss_first"));
    cr_expect(fabs(got - want) <= 1e-6 * fabs(want), "summary loss_first %.9g, the log's step 1: %.9g", got, want);
    cr_expect_eq(json_integer_value(json_object_get(it0, "window_blocks")), 5, "summary after resume: %s", sum_s);
    json_decref(first); json_decref(sum); free(sum_s);
    free(log);
}

/* A fused model is a plain Hugging Face directory: transformers loads it (no missing or
 * unexpected weight) and gives minifuse's logits (tests/check_hf_load.py). Needs torch and
 * transformers (bash bench/setup_torch.sh, or TORCH_PY=python-with-both): skipped, and named
 * as skipped by tests/run_all.sh, where they are not installed. */
Test(fuse, fused_model_loads_in_transformers, .timeout = 600) {
    char py[4200], cmd[16384], *out, *err;
    const char *tp = getenv("TORCH_PY");
    snprintf(py, sizeof py, "%s", tp && *tp ? tp : tu_cache("torch-venv/bin/python"));
    snprintf(cmd, sizeof cmd, "'%s' -c 'import torch, transformers'", py);
    if (access(py, X_OK) != 0 || tu_run(cmd, NULL, NULL) != 0)
        cr_skip_test("torch + transformers are not installed (%s; bash bench/setup_torch.sh or TORCH_PY=...)", py);
    const char *dir = tu_tmpdir();
    fuse_run(dir, "f", 2, "--drop-layers 1");
    const char *ids = "1,403,407,261,378,432,383,286,261,376,298,315,421,395,317,426";
    snprintf(cmd, sizeof cmd, "%s logits --model %s/f --ids %s --out %s/ours.f32", tu_mpirun(2), dir, ids, dir);
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "%s", err);
    free(err);
    char sp[256];
    snprintf(sp, sizeof sp, "%s", ids);
    for (char *c = sp; *c; c++) if (*c == ',') *c = ' ';
    snprintf(cmd, sizeof cmd, "'%s' tests/check_hf_load.py %s/f %s --out %s/tf.f32 --compare %s/ours.f32 --tol 5e-5", py, dir, sp, dir, dir);
    int rc = tu_run(cmd, &out, &err);
    cr_log_info("%s", out);
    cr_expect_eq(rc, 0, "transformers on the fused model:\n%s%s", out, err);
    free(out); free(err);
}

Test(fuse, bad_options, .timeout = 120) {
    const char *dir = tu_tmpdir();
    struct { const char *args, *want; } cases[] = {
        {"--drop-layers 5", "--drop-layers 5"},
        {"--drop-layers 0", "--drop-layers 0"},
        {"--drop-layers 1 --samples 4 --batch 8", "--samples 4"},
        {"--drop-layers 1 --loss mse", "--loss 'mse'"},
        {"--drop-layers 1 --window 1", "--window"},
        {"--drop-layers 1 --samples 100000", "fewer than --samples"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char cmd[16384], *err;
        snprintf(cmd, sizeof cmd, "%s fuse --model %s --text %s --out %s/x %s", tu_mpirun(2), tu_shared(STORIES),
                 tu_shared(TINY), dir, cases[k].args);
        cr_expect_neq(tu_run(cmd, NULL, &err), 0, "%s should fail", cases[k].args);
        cr_expect(strstr(err, cases[k].want), "%s: message should name %s: %s", cases[k].args, cases[k].want, err);
        free(err);
    }
}
