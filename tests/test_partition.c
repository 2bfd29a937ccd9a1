/* test_partition.c - the joint teacher + student pipeline layout of distill
 * (src/train/partition.c): the stage cost model term by term (layers,
 * embeddings, heads and loss, recompute, top-K, micro-batches in flight under
 * 1F1B and GPipe), teacher bounds from a layer map and in proportion, and the
 * partition against a brute force over every split, with and without a memory
 * budget. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "train/partition.h"

static mf_config cfg(int layers, int dim, int ffn) {
    mf_config c;
    memset(&c, 0, sizeof c);
    c.dim = dim; c.ffn_dim = ffn; c.n_layers = layers; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = dim / 4;
    c.vocab_size = 1000; c.max_seq_len = 512; c.tied_embeddings = 1;
    return c;
}

static mf_joint_model model(const mf_config *t, const mf_config *s, const int *map) {
    mf_joint_model jm = {t, s, map, 64, 2, 4, 1, 0, 0};
    return jm;
}

static int close_to(double a, double b) { return fabs(a - b) <= 1e-9 * fabs(b); }

Test(partition, stage_cost_term_by_term) {
    mf_config t = cfg(6, 64, 128), s = cfg(4, 64, 96);
    mf_joint_model jm = model(&t, &s, NULL);
    double T = 64, win = 2 * 4, V = 1000;
    double ft = T * mf_config_layer_flops(&t, 32), fs = T * mf_config_layer_flops(&s, 32);
    /* a middle stage: teacher forward + student forward and backward (3 forwards) */
    mf_stage_cost mid = mf_joint_stage_cost(&jm, 1, 3, 1, 3, 2, 5);
    cr_expect(close_to(mid.flops, win * (3 * ft + 2 * 3 * fs)), "middle stage %g", mid.flops);
    jm.recompute = 1; /* one more forward of the student layers */
    cr_expect(close_to(mf_joint_stage_cost(&jm, 1, 3, 1, 3, 2, 5).flops, win * (3 * ft + 2 * 4 * fs)));
    jm.recompute = 0;
    jm.topk = 8; /* no teacher forward */
    cr_expect(close_to(mf_joint_stage_cost(&jm, 1, 3, 1, 3, 2, 5).flops, win * 2 * 3 * fs));
    jm.topk = 0;
    /* the last stage: teacher head forward, student head forward + backward, the loss per logit (its
     * measured cost in GEMM FLOPs, model/config.h) */
    mf_stage_cost mid0 = mf_joint_stage_cost(&jm, 1, 3, 2, 2, 3, 3), last0 = mf_joint_stage_cost(&jm, 2, 3, 2, 2, 3, 3);
    double heads = win * T * (2 * V * 64 + 3 * 2 * V * 64 + MF_LOSS_GEMM_FLOPS_PER_LOGIT * V);
    cr_expect(close_to(last0.flops - mid0.flops, heads), "head + loss %g, expected %g", last0.flops - mid0.flops, heads);
    /* the first stage: both embeddings' weights (teacher 4 B, student 16 B per parameter) */
    mf_stage_cost first0 = mf_joint_stage_cost(&jm, 0, 3, 0, 0, 0, 0), mid00 = mf_joint_stage_cost(&jm, 1, 3, 0, 0, 0, 0);
    double emb = 4 * V * 64 + 16 * V * 64;
    /* stage 0 also holds one more micro-batch in flight than stage 1 (P - s = 3 vs 2): subtract it */
    mf_joint_model g = jm;
    g.onef1b = 0;
    double state = (mf_joint_stage_cost(&g, 1, 3, 0, 0, 0, 0).bytes - mid00.bytes) / (4 - 2); /* GPipe 4 vs 1F1B 2 in flight */
    cr_expect(close_to(first0.bytes - mid00.bytes - state, emb), "embeddings %g, expected %g", first0.bytes - mid00.bytes - state, emb);
    /* weights of layers: teacher 4 B, student 16 B per parameter, on top of the activations */
    double w = 3 * 4.0 * mf_config_layer_params(&t) + 2 * 16.0 * mf_config_layer_params(&s);
    cr_expect(mid.bytes > w, "weights %g, total %g", w, mid.bytes);
}

/* Micro-batches of activations in flight: 1F1B min(m, P - s), GPipe m, one stage 1. */
Test(partition, activations_in_flight) {
    mf_config t = cfg(8, 64, 128), s = cfg(8, 64, 128);
    mf_joint_model jm = model(&t, &s, NULL);
    int P = 4;
    for (int m = 1; m <= 8; m *= 2)
        for (int st = 0; st < P; st++) {
            jm.micro_batches = m; jm.onef1b = 0;
            double g = mf_joint_stage_cost(&jm, st, P, 2, 4, 2, 4).bytes;
            jm.onef1b = 1;
            double o = mf_joint_stage_cost(&jm, st, P, 2, 4, 2, 4).bytes;
            /* the state of one micro-batch: GPipe m=2 minus m=1 */
            jm.onef1b = 0; jm.micro_batches = 2;
            double two = mf_joint_stage_cost(&jm, st, P, 2, 4, 2, 4).bytes;
            jm.micro_batches = 1;
            double one = mf_joint_stage_cost(&jm, st, P, 2, 4, 2, 4).bytes, per = two - one;
            int alive = m < P - st ? m : P - st;
            cr_expect(per > 0);
            cr_expect(close_to(g - o, (m - alive) * per), "P %d stage %d m %d: GPipe - 1F1B = %g, expected %d states of %g", P, st, m,
                      g - o, m - alive, per);
        }
    jm.micro_batches = 8;
    jm.onef1b = 0;
    double single = mf_joint_stage_cost(&jm, 0, 1, 0, 8, 0, 8).bytes;
    jm.onef1b = 1;
    cr_expect(close_to(single, mf_joint_stage_cost(&jm, 0, 1, 0, 8, 0, 8).bytes), "one stage: one micro-batch in flight either way");
}

Test(partition, teacher_bounds_from_map_or_in_proportion) {
    mf_config t = cfg(5, 64, 128), s = cfg(4, 64, 128), t10 = cfg(10, 64, 128);
    int map[4] = {0, 1, 3, 4}; /* teacher layer 2 dropped */
    mf_joint_model jm = model(&t, &s, map);
    int sb[3] = {0, 2, 4}, tb[3];
    mf_joint_teacher_bounds(&jm, 2, sb, tb);
    cr_expect(tb[0] == 0 && tb[1] == 3 && tb[2] == 5, "mapped: %d %d %d", tb[0], tb[1], tb[2]);
    jm = model(&t10, &s, NULL);
    int sb4[4] = {0, 1, 3, 4}, tb4[4];
    mf_joint_teacher_bounds(&jm, 3, sb4, tb4);
    cr_expect(tb4[0] == 0 && tb4[1] == 2 && tb4[2] == 7 && tb4[3] == 10, "proportional: %d %d %d %d", tb4[0], tb4[1], tb4[2], tb4[3]);
}

/* The largest stage compute of a split, and its largest memory. */
static void eval_split(const mf_joint_model *jm, int P, const int *sb, double *f, double *b) {
    int tb[8];
    mf_joint_teacher_bounds(jm, P, sb, tb);
    *f = *b = 0;
    for (int s = 0; s < P; s++) {
        mf_stage_cost c = mf_joint_stage_cost(jm, s, P, sb[s], sb[s + 1], tb[s], tb[s + 1]);
        if (c.flops > *f) *f = c.flops;
        if (c.bytes > *b) *b = c.bytes;
    }
}

/* Every split of L layers over 3 stages: the best max compute (within budget). */
static double brute3(const mf_joint_model *jm, int L, double budget) {
    double best = INFINITY;
    for (int a = 1; a < L; a++)
        for (int b = a + 1; b < L; b++) {
            int sb[4] = {0, a, b, L};
            double f, m;
            eval_split(jm, 3, sb, &f, &m);
            if ((budget <= 0 || m <= budget) && f < best) best = f;
        }
    return best;
}

Test(partition, optimal_against_brute_force) {
    mf_config t = cfg(12, 64, 256), s = cfg(9, 64, 160);
    int map[9] = {0, 1, 2, 4, 5, 7, 8, 10, 11};
    for (int mapped = 0; mapped < 2; mapped++)
        for (int onef1b = 0; onef1b < 2; onef1b++) {
            mf_joint_model jm = model(&t, &s, mapped ? map : NULL);
            jm.onef1b = onef1b;
            int sb[4], tb[4];
            mf_err err;
            cr_assert_eq(mf_joint_partition(&jm, 3, 0, sb, tb, &err), 0, "%s", err.msg);
            double f, b;
            eval_split(&jm, 3, sb, &f, &b);
            double want = brute3(&jm, 9, 0);
            cr_expect(close_to(f, want), "mapped %d 1f1b %d: max stage %g, best %g (split %d %d)", mapped, onef1b, f, want, sb[1], sb[2]);
            if (mapped) cr_expect(tb[1] == map[sb[1]] && tb[2] == map[sb[2]], "teacher layers follow the map");
            /* a budget below this split's memory: another split within it, or an error naming the overflow */
            double budget = b * 0.999;
            int rc = mf_joint_partition(&jm, 3, budget, sb, tb, &err);
            double want_b = brute3(&jm, 9, budget);
            if (isinf(want_b)) {
                cr_expect_eq(rc, -1);
                cr_expect(strstr(err.msg, "fits") && strstr(err.msg, "stage"), "%s", err.msg);
            } else {
                cr_assert_eq(rc, 0, "%s", err.msg);
                double f2, b2;
                eval_split(&jm, 3, sb, &f2, &b2);
                cr_expect(b2 <= budget && close_to(f2, want_b), "budget %g: memory %g, compute %g vs best %g", budget, b2, f2, want_b);
            }
        }
    /* the head lands on the last stage: with equal layers it gets fewer */
    mf_config u = cfg(12, 64, 256);
    u.vocab_size = 50000;
    mf_joint_model jm = model(&u, &u, NULL);
    int sb[3], tb[3];
    mf_err err;
    cr_assert_eq(mf_joint_partition(&jm, 2, 0, sb, tb, &err), 0);
    cr_expect(sb[1] > 6, "the last stage (heads + loss) should get fewer layers: split at %d", sb[1]);
    cr_expect_eq(mf_joint_partition(&jm, 13, 0, sb, tb, &err), -1);
    cr_expect(strstr(err.msg, "13 pipeline stages"), "%s", err.msg);
    cr_expect_eq(mf_joint_partition(&jm, 2, 1000, sb, tb, &err), -1);
    cr_expect(strstr(err.msg, "MiB"), "%s", err.msg);
}
