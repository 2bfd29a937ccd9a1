/* partition.c - the joint teacher + student pipeline layout (see partition.h). */
#include "train/partition.h"

#include <float.h>
#include <stdlib.h>

/* Teacher layer where the stage starting at student layer i starts. */
static int teacher_bound(const mf_joint_model *jm, int i) {
    int Ls = jm->student->n_layers, Lt = jm->teacher->n_layers;
    if (i <= 0) return 0;
    if (i >= Ls) return Lt;
    return jm->map ? jm->map[i] : (int)((long long)i * Lt / Ls);
}

void mf_joint_teacher_bounds(const mf_joint_model *jm, int P, const int *sb, int *tb) {
    for (int s = 0; s <= P; s++) tb[s] = teacher_bound(jm, sb[s]);
}

/* Floats of one student training state (mf_train_state + the stage's dx buffer),
 * for T tokens and n owned layers. */
static double student_state_floats(const mf_config *c, double T, int n, int last, int recompute) {
    double D = c->dim, F = c->ffn_dim, Q = (double)c->n_heads * c->head_dim, KV = (double)c->n_kv_heads * c->head_dim;
    double full = T * (4 * D + 2 * Q + 2 * KV + 2 * F + 2); /* x_in, rms x2, xn1, q, k, v, att, x_mid, xn2, gate, up */
    double acts = recompute ? n * T * D + (full - T * D) + T * D : n * full;
    double scratch = T * (3 * D + 2 * Q + 2 * KV + 4 * F) + 2 * T * D; /* backward scratch, x_out, dx of the stage */
    return acts + scratch + (last ? T * (2 * (double)c->vocab_size + D + 1) : 0);
}

mf_stage_cost mf_joint_stage_cost(const mf_joint_model *jm, int stage, int P, int s0, int s1, int t0, int t1) {
    const mf_config *tc = jm->teacher, *sc = jm->student;
    int first = stage == 0, last = stage == P - 1, teacher = jm->topk <= 0, m = jm->micro_batches;
    double T = jm->ctx, V = sc->vocab_size, tD = tc->dim, sD = sc->dim;
    double ft = T * mf_config_layer_flops(tc, jm->ctx / 2), fs = T * mf_config_layer_flops(sc, jm->ctx / 2);
    /* per window */
    double f = (teacher ? (t1 - t0) * ft : 0) + (s1 - s0) * fs * (jm->recompute ? 4 : 3);
    if (first) f += (teacher ? T * tD : 0) + 2 * T * sD;                      /* lookups, embedding gradient */
    if (last) f += (teacher ? T * mf_config_head_flops(tc) : 0) + 3 * T * mf_config_head_flops(sc) + MF_LOSS_GEMM_FLOPS_PER_LOGIT * T * V;
    mf_stage_cost c;
    c.flops = f * jm->windows * m;
    /* weights: teacher float32; student weight + gradient + two AdamW moments */
    double tw = (double)(t1 - t0) * mf_config_layer_params(tc) + (first ? V * tD : 0) + (last ? V * tD + tD : 0);
    double sw = (double)(s1 - s0) * mf_config_layer_params(sc) + (first ? V * sD : 0) + (last ? V * sD + sD : 0);
    int in_flight = P == 1 ? 1 : jm->onef1b ? (m < P - stage ? m : P - stage) : m;
    double states = (double)jm->windows * in_flight * student_state_floats(sc, T, s1 - s0, last, jm->recompute);
    double tKV = (double)tc->n_kv_heads * tc->head_dim, tQ = (double)tc->n_heads * tc->head_dim;
    double tstate = teacher ? 2 * (t1 - t0) * T * tKV + T * (3 * tD + tQ + 2 * tc->ffn_dim) + (last ? 2 * T * V : 0) : 0;
    c.bytes = 4 * (tw + tstate) + 16 * sw + 4 * states;
    return c;
}

/* a < b: lower max compute, ties (within 1e-12) by lower max memory */
static int better(double fa, double ba, double fb, double bb) {
    if (fa < fb * (1 - 1e-12)) return 1;
    if (fb < fa * (1 - 1e-12)) return 0;
    return ba < bb;
}

int mf_joint_partition(const mf_joint_model *jm, int P, double budget, int *sb, int *tb, mf_err *err) {
    int L = jm->student->n_layers;
    if (P < 1 || P > L)
        return mf_err_set(err, "cannot split the student's %d layers over %d pipeline stages (need 1 <= stages <= layers)", L, P);
    size_t cells = (size_t)(P + 1) * (L + 1);
    double *bf = malloc(cells * sizeof *bf), *bb = malloc(cells * sizeof *bb);
    int *arg = malloc(cells * sizeof *arg);
    if (!bf || !bb || !arg) {
        free(bf); free(bb); free(arg);
        return mf_err_set(err, "pipeline partition: out of memory");
    }
    for (size_t i = 0; i < cells; i++) { bf[i] = DBL_MAX; bb[i] = DBL_MAX; arg[i] = -1; }
    bf[0] = bb[0] = 0;
    /* bf/bb[s][j]: best (max compute, max memory) putting student layers [0, j) on stages [0, s) */
    for (int s = 1; s <= P; s++)
        for (int j = s; j <= L - (P - s); j++)
            for (int i = s - 1; i < j; i++) {
                size_t pi = (size_t)(s - 1) * (L + 1) + i, pj = (size_t)s * (L + 1) + j;
                if (bf[pi] == DBL_MAX) continue;
                mf_stage_cost c = mf_joint_stage_cost(jm, s - 1, P, i, j, teacher_bound(jm, i), teacher_bound(jm, j));
                if (budget > 0 && c.bytes > budget) continue;
                double f = bf[pi] > c.flops ? bf[pi] : c.flops, b = bb[pi] > c.bytes ? bb[pi] : c.bytes;
                if (better(f, b, bf[pj], bb[pj])) { bf[pj] = f; bb[pj] = b; arg[pj] = i; }
            }
    int ok = bf[(size_t)P * (L + 1) + L] != DBL_MAX;
    if (ok) {
        sb[P] = L;
        for (int s = P; s >= 1; s--) sb[s - 1] = arg[(size_t)s * (L + 1) + sb[s]];
        mf_joint_teacher_bounds(jm, P, sb, tb);
    }
    free(bf); free(bb); free(arg);
    if (ok) return 0;
    /* name the stage that overflows in the even split */
    int worst = 0;
    double wb = 0;
    for (int s = 0; s < P; s++) {
        int i = (int)((long long)s * L / P), j = (int)((long long)(s + 1) * L / P);
        double b = mf_joint_stage_cost(jm, s, P, i, j, teacher_bound(jm, i), teacher_bound(jm, j)).bytes;
        if (b > wb) { wb = b; worst = s; }
    }
    return mf_err_set(err, "no split of %d student layers over %d stages fits %.1f MiB per stage (stage %d of an even split "
                      "needs %.1f MiB)", L, P, budget / 1048576.0, worst, wb / 1048576.0);
}
