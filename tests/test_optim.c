/* test_optim.c - AdamW, schedule, clipping and RNG against independent goldens.
 *
 * tests/golden/optim/adamw.json: torch.optim.AdamW + clip_grad_norm_ with the
 * schedule re-implemented in Python; tests/golden/optim/rng.json: numpy's
 * PCG64 / Generator and Vigna's splitmix64 vector. Both made by
 * tests/gen_optim_goldens.py. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "train/optim.h"
#include "train/params.h"

#define ADAMW_GOLDEN "tests/golden/optim/adamw.json"
#define RNG_GOLDEN "tests/golden/optim/rng.json"

static void mpi_setup(void) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) MPI_Init(NULL, NULL);
}

TestSuite(optim, .init = mpi_setup, .timeout = 60);

/* ---- helpers ---- */

static json_t *load(const char *path) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    cr_assert_not_null(j, "%s: %s (line %d); regenerate with tests/gen_optim_goldens.py", path, je.text, je.line);
    return j;
}

static json_t *get(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    cr_assert_not_null(v, "golden: missing key '%s'", k);
    return v;
}

static double num(json_t *o, const char *k) { return json_number_value(get(o, k)); }

static uint64_t u64(json_t *a, size_t i) {
    const char *s = json_string_value(json_array_get(a, i));
    cr_assert_not_null(s, "golden: expected a decimal string");
    return strtoull(s, NULL, 10);
}

/* float array of n from a JSON list */
static void floats(json_t *a, float *out, size_t n) {
    cr_assert_eq(json_array_size(a), n, "golden: %zu values, expected %zu", json_array_size(a), n);
    for (size_t i = 0; i < n; i++) out[i] = (float)json_number_value(json_array_get(a, i));
}

/* The scenario's tensors as a parameter list (data and grad owned here). */
static void make_params(json_t *sc, mf_params *ps) {
    json_t *ts = get(sc, "tensors"), *init = get(sc, "init");
    memset(ps, 0, sizeof *ps);
    ps->n = (int)json_array_size(ts);
    ps->p = calloc((size_t)ps->n, sizeof *ps->p);
    for (int i = 0; i < ps->n; i++) {
        mf_param *p = &ps->p[i];
        json_t *t = json_array_get(ts, (size_t)i), *sh = get(t, "shape");
        snprintf(p->name, sizeof p->name, "%s", json_string_value(get(t, "name")));
        p->ndim = (int)json_array_size(sh);
        p->numel = 1;
        for (int d = 0; d < p->ndim; d++) p->numel *= (size_t)(p->shape[d] = json_integer_value(json_array_get(sh, (size_t)d)));
        p->data = malloc(p->numel * sizeof(float));
        p->grad = calloc(p->numel, sizeof(float));
        floats(json_array_get(init, (size_t)i), p->data, p->numel);
        ps->total += p->numel;
    }
}

static void free_params(mf_params *ps) {
    for (int i = 0; i < ps->n; i++) free(ps->p[i].data);
    mf_params_free(ps);
}

/* max |a - b| / max(|b|, floor) over one golden list */
static double max_rel(const float *a, json_t *gold, size_t n, double floor) {
    float *b = malloc(n * sizeof *b);
    floats(gold, b, n);
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(fabs((double)b[i]), floor);
        if (!(d <= worst)) worst = d; /* NaN propagates */
    }
    free(b);
    return worst;
}

/* Run a scenario through our AdamW; returns the worst relative error of the
 * parameters over all steps (and checks lr, norm, final state). opts may
 * override the golden's options (to show that a wrong setting is caught).
 * torch_norm: clip with torch's float32 norm instead of ours (in double). */
static double run_scenario(json_t *sc, const mf_adamw_opts *override, int check_extras, int torch_norm) {
    mf_params ps;
    make_params(sc, &ps);
    json_t *jo = get(sc, "opts"), *js = get(sc, "sched"), *steps = get(sc, "steps");
    mf_adamw_opts o = {.beta1 = num(jo, "beta1"), .beta2 = num(jo, "beta2"), .eps = num(jo, "eps"),
                       .weight_decay = num(jo, "weight_decay"), .decay_1d = (int)num(jo, "decay_1d")};
    if (override) o = *override;
    mf_lr_sched s = {.max_lr = num(js, "max_lr"), .min_lr = num(js, "min_lr"),
                     .warmup = (int64_t)num(js, "warmup"), .total = (int64_t)num(js, "total")};
    double max_norm = num(sc, "max_norm"), worst = 0;
    mf_adamw opt;
    mf_adamw_init(&opt, &ps, &o);
    for (size_t t = 0; t < json_array_size(steps); t++) {
        json_t *st = json_array_get(steps, t), *grads = get(st, "grads"), *params = get(st, "params");
        for (int i = 0; i < ps.n; i++) floats(json_array_get(grads, (size_t)i), ps.p[i].grad, ps.p[i].numel);
        double lr = mf_lr_at(&s, opt.step);
        if (check_extras)
            cr_assert(fabs(lr - num(st, "lr")) <= 1e-15 * fabs(num(st, "lr")), "step %zu: lr %.17g, torch run %.17g",
                      t, lr, num(st, "lr"));
        float scale = 1;
        if (max_norm > 0) {
            double norm = mf_grad_global_norm(&ps, MPI_COMM_WORLD);
            double want = num(st, "norm");
            if (check_extras)
                cr_assert(fabs(norm - want) <= 1e-6 * want, "step %zu: grad norm %.9g, torch %.9g", t, norm, want);
            scale = mf_clip_factor(torch_norm ? want : norm, max_norm);
        }
        mf_adamw_step(&opt, &ps, lr, scale);
        for (int i = 0; i < ps.n; i++) {
            double e = max_rel(ps.p[i].data, json_array_get(params, (size_t)i), ps.p[i].numel, 1e-3);
            if (!(e <= worst)) worst = e;
        }
    }
    if (check_extras) {
        cr_assert_eq(opt.step, (int64_t)json_array_size(steps));
        for (int i = 0; i < ps.n; i++) {
            cr_assert_eq(json_integer_value(json_array_get(get(sc, "torch_step"), (size_t)i)), opt.step);
            double em = max_rel(opt.m[i], json_array_get(get(sc, "exp_avg"), (size_t)i), ps.p[i].numel, 1e-4);
            double ev = max_rel(opt.v[i], json_array_get(get(sc, "exp_avg_sq"), (size_t)i), ps.p[i].numel, 1e-8);
            cr_assert(em <= 1e-5 && ev <= 1e-5, "%s: exp_avg rel err %g, exp_avg_sq %g", ps.p[i].name, em, ev);
        }
    }
    mf_adamw_free(&opt);
    free_params(&ps);
    return worst;
}

/* ---- AdamW ---- */

Test(optim, adamw_matches_torch_default_with_clipping) {
    json_t *g = load(ADAMW_GOLDEN);
    json_t *sc = json_array_get(get(g, "scenarios"), 0);
    cr_assert_str_eq(json_string_value(get(sc, "name")), "default_clip");
    double e = run_scenario(sc, NULL, 1, 0);
    cr_log_info("default_clip: max rel err %g\n", e);
    cr_assert(e <= 1e-6, "parameter trajectory differs from torch: max rel err %g", e);
    /* with torch's own (float32) norm the clip factor is the same float; what
     * remains is torch's vectorized sqrt (MKL, off by one ulp at times) */
    e = run_scenario(sc, NULL, 1, 1);
    cr_log_info("default_clip with torch's norm: max rel err %g\n", e);
    cr_assert(e <= 1e-6, "with torch's norm: max rel err %g", e);
    json_decref(g);
}

Test(optim, adamw_matches_torch_decay_1d_no_clipping) {
    json_t *g = load(ADAMW_GOLDEN);
    json_t *sc = json_array_get(get(g, "scenarios"), 1);
    cr_assert_str_eq(json_string_value(get(sc, "name")), "decay_1d_noclip");
    double e = run_scenario(sc, NULL, 1, 0);
    cr_log_info("decay_1d_noclip: max rel err %g\n", e);
    cr_assert(e <= 1e-6, "parameter trajectory differs from torch: max rel err %g", e);
    json_decref(g);
}

/* The tolerance is tight enough to see a wrong option. */
Test(optim, adamw_golden_catches_wrong_settings) {
    json_t *g = load(ADAMW_GOLDEN);
    json_t *sc = json_array_get(get(g, "scenarios"), 0);
    mf_adamw_opts o = {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .decay_1d = 1};
    cr_assert(run_scenario(sc, &o, 0, 0) > 1e-4, "decaying 1-D tensors went unnoticed");
    o.decay_1d = 0;
    o.beta2 = 0.999;
    cr_assert(run_scenario(sc, &o, 0, 0) > 1e-4, "a different beta2 went unnoticed");
    o.beta2 = 0.95;
    o.weight_decay = 0.0;
    cr_assert(run_scenario(sc, &o, 0, 0) > 1e-5, "no weight decay went unnoticed");
    json_decref(g);
}

Test(optim, defaults_and_decay_rule) {
    mf_adamw_opts o;
    mf_adamw_defaults(&o);
    cr_assert(o.beta1 == 0.9 && o.beta2 == 0.95 && o.eps == 1e-8 && o.decay_1d == 0);
    mf_param w = {.ndim = 2}, b = {.ndim = 1};
    cr_assert(mf_adamw_decays(&o, &w));
    cr_assert(!mf_adamw_decays(&o, &b));
    o.decay_1d = 1;
    cr_assert(mf_adamw_decays(&o, &b));
    o.weight_decay = 0;
    cr_assert(!mf_adamw_decays(&o, &w));
}

/* ---- schedule and clipping ---- */

Test(optim, lr_schedule_matches_python) {
    json_t *g = load(ADAMW_GOLDEN), *tab = get(g, "schedules");
    cr_assert_eq(json_array_size(tab), 4);
    for (size_t k = 0; k < json_array_size(tab); k++) {
        json_t *e = json_array_get(tab, k), *js = get(e, "sched"), *lrs = get(e, "lr");
        mf_lr_sched s = {.max_lr = num(js, "max_lr"), .min_lr = num(js, "min_lr"),
                         .warmup = (int64_t)num(js, "warmup"), .total = (int64_t)num(js, "total")};
        for (size_t t = 0; t < json_array_size(lrs); t++) {
            double want = json_number_value(json_array_get(lrs, t)), got = mf_lr_at(&s, (int64_t)t);
            cr_assert(fabs(got - want) <= 1e-15 * fabs(want), "schedule %zu step %zu: %.17g, python %.17g", k, t, got,
                      want);
        }
    }
    /* the shape itself: warm-up starts at max/warmup, peaks at warmup, ends at min */
    mf_lr_sched s = {.max_lr = 1.0, .min_lr = 0.1, .warmup = 4, .total = 12};
    cr_assert(mf_lr_at(&s, 0) == 0.25 && mf_lr_at(&s, 3) == 1.0 && mf_lr_at(&s, 4) == 1.0);
    cr_assert(fabs(mf_lr_at(&s, 8) - 0.55) < 1e-15 && mf_lr_at(&s, 12) == 0.1 && mf_lr_at(&s, 1000) == 0.1);
    json_decref(g);
}

Test(optim, clip_factor_like_torch) {
    cr_assert(mf_clip_factor(0.5, 1.0) == 1.0f);
    cr_assert(mf_clip_factor(4.0, 1.0) == 1.0f / (4.0f + 1e-6f));
    cr_assert(mf_clip_factor(1.0, 1.0) == 1.0f / (1.0f + 1e-6f));
    cr_assert(fabsf(mf_clip_factor(3.0, 0.5) - 0.5f / 3.0f) <= 1e-6f);
    cr_assert(mf_clip_factor(1e9, 0.0) == 1.0f); /* off */
    cr_assert(mf_clip_factor(0.0, 1.0) == 1.0f);
}

Test(optim, global_norm_one_rank) {
    float g1[3] = {3, 0, 0}, g2[2] = {0, 4};
    mf_param p[2] = {{.name = "a", .ndim = 1, .shape = {3}, .numel = 3, .grad = g1},
                     {.name = "b", .ndim = 1, .shape = {2}, .numel = 2, .grad = g2}};
    mf_params ps = {.n = 2, .p = p, .total = 5};
    cr_assert(mf_grad_global_norm(&ps, MPI_COMM_WORLD) == 5.0);
    mf_params none = {0};
    cr_assert(mf_grad_global_norm(&none, MPI_COMM_WORLD) == 0.0);
}

/* The backend's adamw and sumsq (the ops a device runs the step with) against
 * mf_adamw_step and mf_params_grad_sq: the CPU backend bit for bit, the
 * reference (double) within float rounding; a 2-D tensor decays, a 1-D one not. */
Test(optim, backend_adamw_equals_optim) {
    enum { N0 = 12, N1 = 5 };
    float d0[N0], d1[N1], g0[N0], g1[N1];
    uint64_t x = 42;
    for (int i = 0; i < N0; i++) d0[i] = (float)((mf_splitmix64(&x) >> 40) * 0x1p-24 - 0.5);
    for (int i = 0; i < N1; i++) d1[i] = (float)((mf_splitmix64(&x) >> 40) * 0x1p-24 - 0.5);
    mf_param p[2] = {{.name = "w", .ndim = 2, .shape = {3, 4}, .numel = N0, .data = d0, .grad = g0},
                     {.name = "b", .ndim = 1, .shape = {N1}, .numel = N1, .data = d1, .grad = g1}};
    mf_params ps = {.n = 2, .p = p, .total = N0 + N1};
    mf_adamw_opts o;
    mf_adamw_defaults(&o);
    mf_adamw opt;
    mf_adamw_init(&opt, &ps, &o);
    const mf_backend *be[2] = {mf_backend_cpu(), mf_backend_ref()};
    float bp[2][2][N0], bm[2][2][N0], bv[2][2][N0];
    memset(bm, 0, sizeof bm);
    memset(bv, 0, sizeof bv);
    for (int k = 0; k < 2; k++) {
        memcpy(bp[k][0], d0, sizeof d0);
        memcpy(bp[k][1], d1, sizeof d1);
    }
    for (int step = 1; step <= 3; step++) {
        for (int i = 0; i < N0; i++) g0[i] = (float)((mf_splitmix64(&x) >> 40) * 0x1p-24 - 0.5);
        for (int i = 0; i < N1; i++) g1[i] = (float)((mf_splitmix64(&x) >> 40) * 0x1p-24 - 0.5);
        double lr = 1e-2 * step, t = step;
        float scale = step == 2 ? 0.5f : 1.0f;
        cr_assert(be[0]->sumsq(g0, N0) + be[0]->sumsq(g1, N1) == mf_params_grad_sq(&ps), "sumsq = grad_sq");
        for (int k = 0; k < 2; k++)
            for (int i = 0; i < 2; i++) {
                mf_adamw_coef c = {.decay = mf_adamw_decays(&o, &p[i]) ? (float)(1 - lr * o.weight_decay) : 1.0f,
                                   .w1 = (float)(1 - o.beta1), .b2 = (float)o.beta2, .c2 = (float)(1 - o.beta2),
                                   .bc2_sqrt = (float)pow(1 - pow(o.beta2, t), 0.5), .eps = (float)o.eps,
                                   .neg_step = (float)-(lr / (1 - pow(o.beta1, t)))};
                be[k]->adamw(bp[k][i], p[i].grad, bm[k][i], bv[k][i], p[i].numel, scale, &c);
            }
        mf_adamw_step(&opt, &ps, lr, scale);
        for (int i = 0; i < 2; i++) {
            size_t n = p[i].numel;
            cr_assert(memcmp(bp[0][i], p[i].data, n * 4) == 0 && memcmp(bm[0][i], opt.m[i], n * 4) == 0 &&
                          memcmp(bv[0][i], opt.v[i], n * 4) == 0,
                      "step %d tensor %s: cpu adamw differs from mf_adamw_step", step, p[i].name);
            for (size_t j = 0; j < n; j++)
                cr_assert(fabsf(bp[1][i][j] - p[i].data[j]) <= 1e-6f * fabsf(p[i].data[j]) + 1e-9f &&
                              fabsf(bm[1][i][j] - opt.m[i][j]) <= 1e-5f * fabsf(opt.m[i][j]) + 1e-12f,
                          "step %d %s[%zu]: ref adamw %.9g vs %.9g", step, p[i].name, j, bp[1][i][j], p[i].data[j]);
        }
    }
    mf_adamw_free(&opt);
}

/* ---- RNG ---- */

Test(optim, splitmix64_reference_vector) {
    json_t *g = load(RNG_GOLDEN), *v = get(g, "splitmix64_1234567");
    uint64_t x = 1234567;
    for (size_t i = 0; i < 5; i++) {
        uint64_t got = mf_splitmix64(&x);
        cr_assert_eq(got, u64(v, i), "output %zu: %llu", i, (unsigned long long)got);
    }
    json_decref(g);
}

Test(optim, pcg64_matches_numpy) {
    json_t *g = load(RNG_GOLDEN), *seeds = get(g, "seeds");
    cr_assert_eq(json_array_size(seeds), 5);
    for (size_t k = 0; k < json_array_size(seeds); k++) {
        json_t *e = json_array_get(seeds, k);
        uint64_t seed = strtoull(json_string_value(get(e, "seed")), NULL, 10);
        mf_rng r, r0;
        mf_rng_seed(&r, seed);
        for (size_t i = 0; i < 4; i++) cr_assert_eq(r.s[i], u64(get(e, "state"), i), "seed %llu state word %zu",
                                                    (unsigned long long)seed, i);
        r0 = r;
        json_t *raw = get(e, "raw");
        for (size_t i = 0; i < json_array_size(raw); i++)
            cr_assert_eq(mf_rng_next(&r), u64(raw, i), "seed %llu raw %zu", (unsigned long long)seed, i);
        for (size_t i = 0; i < 4; i++) cr_assert_eq(r.s[i], u64(get(e, "state_after_10"), i));
        /* restoring a saved state replays the stream */
        mf_rng c = r0;
        cr_assert_eq(mf_rng_next(&c), u64(raw, 0));
        r = r0;
        json_t *uni = get(e, "uniform");
        for (size_t i = 0; i < json_array_size(uni); i++) {
            double u = mf_rng_uniform(&r);
            cr_assert(u == json_number_value(json_array_get(uni, i)), "seed %llu uniform %zu: %.17g",
                      (unsigned long long)seed, i, u);
        }
        r = r0;
        json_t *big = get(e, "integers_3e12");
        for (size_t i = 0; i < json_array_size(big); i++)
            cr_assert_eq(mf_rng_below(&r, 3000000000007ULL), u64(big, i), "seed %llu integers %zu",
                         (unsigned long long)seed, i);
        r = r0;
        json_t *below = get(e, "below"), *bn = get(e, "below_n");
        for (size_t i = 0; i < json_array_size(below); i++)
            cr_assert_eq(mf_rng_below(&r, u64(bn, i)), u64(below, i), "seed %llu below(%llu)",
                         (unsigned long long)seed, (unsigned long long)u64(bn, i));
        r = r0;
        int64_t a[13];
        for (int i = 0; i < 13; i++) a[i] = i;
        mf_rng_shuffle(&r, a, 13);
        json_t *sh = get(e, "shuffle13");
        for (int i = 0; i < 13; i++) cr_assert_eq(a[i], json_integer_value(json_array_get(sh, (size_t)i)));
    }
    json_decref(g);
}

Test(optim, rng_shuffle_is_a_permutation) {
    mf_rng r;
    mf_rng_seed(&r, 7);
    enum { N = 1000 };
    int64_t a[N];
    for (int i = 0; i < N; i++) a[i] = i;
    mf_rng_shuffle(&r, a, N);
    char seen[N] = {0};
    int moved = 0;
    for (int i = 0; i < N; i++) {
        cr_assert(a[i] >= 0 && a[i] < N && !seen[a[i]]);
        seen[a[i]] = 1;
        moved += a[i] != i;
    }
    cr_assert(moved > N / 2);
    mf_rng_shuffle(&r, a, 0);
    mf_rng_shuffle(&r, a, 1);
    double s = 0;
    for (int i = 0; i < 10000; i++) {
        double u = mf_rng_uniform(&r);
        cr_assert(u >= 0 && u < 1);
        s += u;
    }
    cr_assert(fabs(s / 10000 - 0.5) < 0.02);
}
