/* optim.c - AdamW (as torch.optim.AdamW), warm-up + cosine schedule, global
 * gradient norm, PCG64 random numbers. See optim.h for the exact formulas. */
#include "train/optim.h"

#include "collective.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

/* ---------------------------------------------------------------- AdamW */

void mf_adamw_defaults(mf_adamw_opts *o) {
    *o = (mf_adamw_opts){.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .decay_1d = 0};
}

/* Moments in the memory of the parameters' backend (host memory for lists without one). */
static float *state_buf(const mf_backend *be, size_t n) {
    if (!be) return mf_calloc(n ? n : 1, sizeof(float));
    float *p = be->alloc((n ? n : 1) * sizeof(float));
    be->zero(p, (n ? n : 1) * sizeof(float));
    return p;
}

static void state_free(const mf_backend *be, float *p) {
    if (!p) return;
    if (be) be->free(p);
    else free(p);
}

void mf_adamw_init(mf_adamw *opt, const mf_params *ps, const mf_adamw_opts *o) {
    memset(opt, 0, sizeof *opt);
    if (o) opt->o = *o;
    else mf_adamw_defaults(&opt->o);
    opt->n = ps->n;
    opt->be = ps->be;
    opt->numel = mf_calloc((size_t)ps->n + 1, sizeof *opt->numel);
    opt->m = mf_calloc((size_t)ps->n + 1, sizeof *opt->m);
    opt->v = mf_calloc((size_t)ps->n + 1, sizeof *opt->v);
    for (int i = 0; i < ps->n; i++) {
        size_t n = ps->p[i].numel;
        opt->numel[i] = n;
        opt->m[i] = state_buf(opt->be, n);
        opt->v[i] = state_buf(opt->be, n);
    }
}

void mf_adamw_free(mf_adamw *opt) {
    if (!opt) return;
    for (int i = 0; i < opt->n; i++) {
        if (opt->m) state_free(opt->be, opt->m[i]);
        if (opt->v) state_free(opt->be, opt->v[i]);
    }
    free(opt->m); free(opt->v); free(opt->numel);
    memset(opt, 0, sizeof *opt);
}

int mf_adamw_decays(const mf_adamw_opts *o, const mf_param *p) {
    return o->weight_decay != 0 && (p->ndim >= 2 || o->decay_1d);
}

/* The per-step scalars, rounded to float where torch uses them as float. */
typedef struct adam_k {
    float decay;      /* 1 - lr*wd */
    float w1;         /* 1 - b1 (lerp weight) */
    float b2, c2;     /* b2, 1 - b2 */
    float bc2_sqrt;   /* sqrt(1 - b2^t) */
    float eps;
    float neg_step;   /* -lr / (1 - b1^t) */
} adam_k;

/* One tensor: p[n], g[n] (times scale), m[n], v[n]. */
static void adam_tensor(float *p, const float *g, float *m, float *v, size_t n, float scale, const adam_k *k,
                        int decay) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t j = 0; j < n; j++) {
        float gj = g[j] * scale;
        float pj = decay ? p[j] * k->decay : p[j];
        float mj = fmaf(k->w1, gj - m[j], m[j]);   /* torch's vectorized lerp_ */
        float vj = fmaf(k->c2 * gj, gj, v[j] * k->b2); /* torch's vectorized addcmul_ */
        float denom = sqrtf(vj) / k->bc2_sqrt + k->eps;
        p[j] = pj + k->neg_step * mj / denom;
        m[j] = mj;
        v[j] = vj;
    }
}

void mf_adamw_step(mf_adamw *opt, mf_params *ps, double lr, float grad_scale) {
    const mf_adamw_opts *o = &opt->o;
    opt->step++;
    double t = (double)opt->step;
    double bc1 = 1 - pow(o->beta1, t), bc2 = 1 - pow(o->beta2, t);
    adam_k k = {
        .decay = (float)(1 - lr * o->weight_decay),
        .w1 = (float)(1 - o->beta1),
        .b2 = (float)o->beta2,
        .c2 = (float)(1 - o->beta2),
        .bc2_sqrt = (float)pow(bc2, 0.5),
        .eps = (float)o->eps,
        .neg_step = (float)-(lr / bc1),
    };
    int n = ps->n < opt->n ? ps->n : opt->n;
    for (int i = 0; i < n; i++) {
        mf_param *p = &ps->p[i];
        size_t len = p->numel < opt->numel[i] ? p->numel : opt->numel[i];
        int decays = mf_adamw_decays(o, p);
        if (opt->be && !opt->be->is_host) { /* the backend's op: the same formula on its memory */
            mf_adamw_coef c = {decays ? k.decay : 1.0f, k.w1, k.b2, k.c2, k.bc2_sqrt, k.eps, k.neg_step};
            opt->be->adamw(p->data, p->grad, opt->m[i], opt->v[i], len, grad_scale, &c);
        } else {
            adam_tensor(p->data, p->grad, opt->m[i], opt->v[i], len, grad_scale, &k, decays);
        }
    }
}

/* ---------------------------------------------------------------- schedule */

double mf_lr_at(const mf_lr_sched *s, int64_t step) {
    if (step < s->warmup) return s->max_lr * (double)(step + 1) / (double)s->warmup;
    if (step >= s->total) return s->min_lr;
    double r = (double)(step - s->warmup) / (double)(s->total - s->warmup);
    return s->min_lr + 0.5 * (s->max_lr - s->min_lr) * (1 + cos(M_PI * r));
}

/* ---------------------------------------------------------------- clipping */

double mf_grad_global_norm(const mf_params *ps, MPI_Comm comm) {
    mf_coll c;
    mf_coll_init(&c, comm, NULL);
    return sqrt(mf_coll_sum_f64(&c, mf_params_grad_sq(ps)));
}

/* In float32, like torch's tensor arithmetic on a float32 norm (its
 * `max_norm / t` is `t.reciprocal() * max_norm`). */
float mf_clip_factor(double norm, double max_norm) {
    if (!(max_norm > 0)) return 1.0f;
    float c = (1.0f / ((float)norm + 1e-6f)) * (float)max_norm;
    return c < 1 ? c : 1.0f;
}

/* ---------------------------------------------------------------- RNG */

uint64_t mf_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void mf_rng_seed(mf_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = mf_splitmix64(&x);
    r->s[3] |= 1;
}

typedef unsigned __int128 u128;

static u128 u128_of(uint64_t hi, uint64_t lo) { return ((u128)hi << 64) | lo; }

/* state = state * MULT + inc; output XSL-RR of the new state (numpy's pcg64). */
uint64_t mf_rng_next(mf_rng *r) {
    const u128 mult = u128_of(2549297995355413924ULL, 4865540595714422341ULL);
    u128 st = u128_of(r->s[0], r->s[1]) * mult + u128_of(r->s[2], r->s[3]);
    r->s[0] = (uint64_t)(st >> 64);
    r->s[1] = (uint64_t)st;
    uint64_t x = r->s[0] ^ r->s[1];
    unsigned rot = (unsigned)(st >> 122);
    return (x >> rot) | (x << ((64 - rot) & 63));
}

double mf_rng_uniform(mf_rng *r) { return (double)(mf_rng_next(r) >> 11) * 0x1.0p-53; }

uint64_t mf_rng_below(mf_rng *r, uint64_t n) {
    u128 m = (u128)mf_rng_next(r) * n;
    uint64_t lo = (uint64_t)m;
    if (lo < n) {
        uint64_t t = (0 - n) % n;
        while (lo < t) {
            m = (u128)mf_rng_next(r) * n;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

void mf_rng_shuffle(mf_rng *r, int64_t *a, int64_t n) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)mf_rng_below(r, (uint64_t)i + 1);
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

void mf_rng_permutation(uint64_t seed, int64_t *a, int64_t n) {
    mf_rng r;
    mf_rng_seed(&r, seed);
    for (int64_t k = 0; k < n; k++) a[k] = k;
    mf_rng_shuffle(&r, a, n);
}
