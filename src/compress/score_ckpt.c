/* score_ckpt.c - checkpoints of the scoring pass (see score_ckpt.h). */
#include "compress/score_ckpt.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#define N_WIDTH 8
static const char *const width_name[N_WIDTH] = {"mlp_s", "mlp_q", "att_s", "att_q",
                                                "norm_attn_s", "norm_attn_q", "norm_mlp_s", "norm_mlp_q"};

/* This rank's float64 arrays, views into the state (depth: a copy of the scalars). */
typedef struct f64_list {
    mf_ckpt_f64 *a;
    char (*names)[96];
    int n;
    double depth[3];  /* base NLL, perplexity tokens, Macro Influence tokens */
} f64_list;

static void push(f64_list *l, double *data, int64_t n, const char *fmt, int layer) {
    snprintf(l->names[l->n], sizeof l->names[l->n], fmt, layer);
    l->a[l->n] = (mf_ckpt_f64){l->names[l->n], n, data};
    l->n++;
}

static void build(mf_score_state *s, f64_list *l) {
    const mf_importance *imp = s->imp;
    const mf_config *c = &imp->cfg;
    int64_t F = c->ffn_dim, Q = (int64_t)c->n_heads * c->head_dim, D = c->dim;
    int cap = (imp->l1 - imp->l0) * (N_WIDTH + 1) + 4;
    l->a = mf_calloc((size_t)cap, sizeof *l->a);
    l->names = mf_calloc((size_t)cap, sizeof *l->names);
    l->n = 0;
    for (int lay = imp->l0; lay < imp->l1; lay++) {
        mf_width_acc *a = &imp->acc[lay - imp->l0];
        if (s->want_width) {
            double *arr[N_WIDTH] = {a->mlp_s, a->mlp_q, a->att_s, a->att_q, a->norm_s[0], a->norm_q[0], a->norm_s[1], a->norm_q[1]};
            int64_t n[N_WIDTH] = {F, F, Q, Q, D, D, D, D};
            for (int k = 0; k < N_WIDTH; k++) {
                char fmt[64];
                snprintf(fmt, sizeof fmt, "score.layers.%%d.%s", width_name[k]);
                push(l, arr[k], n[k], fmt, lay);
            }
        }
        push(l, &imp->bi_cos[lay - imp->l0], 1, "score.layers.%d.bi_cos", lay);
    }
    if (s->last) {
        int rows = s->mi_iters > 0 ? s->mi_iters : 1;
        push(l, s->ppl_nll, s->L, "score.ppl_nll", 0);
        push(l, s->mi_acc->cos_sum, s->L, "score.mi_cos_sum", 0);
        push(l, s->mi, (int64_t)rows * s->L, "score.mi", 0);
        l->depth[0] = *s->base_nll;
        l->depth[1] = (double)*s->ppl_tokens;
        l->depth[2] = (double)s->mi_acc->tokens;
        push(l, l->depth, 3, "score.depth", 0);
    }
}

static void free_list(f64_list *l) { free(l->a); free(l->names); }

void mf_score_ckpt_save(const mf_run *run, mf_score_state *s, const char *model) {
    f64_list l;
    build(s, &l);
    long work[2] = {*s->layer_fwd, *s->heads}, sum[2] = {0, 0};
    MPI_Reduce(work, sum, 2, MPI_LONG, MPI_SUM, 0, run->world.comm);
    json_t *order = json_array();
    for (int i = 0; i < s->pass; i++) json_array_append_new(order, json_integer(s->mi_order[i]));
    json_t *j = json_pack("{s:i, s:i, s:o, s:I, s:I, s:I, s:I}", "pass", s->pass, "window", s->window, "mi_order", order,
                          "n_samples", (json_int_t)s->imp->n_samples, "bi_tokens", (json_int_t)s->imp->bi_tokens,
                          "layer_fwd", (json_int_t)sum[0], "heads", (json_int_t)sum[1]);
    char *state = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    mf_params ps = {0};
    mf_adamw opt = {0};
    mf_train_meta meta = {0};
    meta.step = s->done;
    meta.data_pos = s->window;
    meta.state_json = state;
    meta.student = (char *)model;
    meta.f64 = l.a;
    meta.n_f64 = l.n;
    char path[4400];
    double t0 = mf_now();
    mf_run_save(run, 0, &ps, &opt, &meta, path, sizeof path);
    if (run->world.rank == 0)
        mf_log("checkpoint %s (pass %d, %d windows) in %.1fs", path, s->pass + 1, s->window, mf_now() - t0);
    free(state);
    free_list(&l);
}

/* The progress JSON into s (pass, window, removal order, counters). */
static int parse_state(mf_score_state *s, const char *path, const char *state, long work[2], mf_err *err) {
    json_t *j = json_loads(state ? state : "", 0, NULL);
    if (!json_is_object(j)) return mf_err_set(err, "%s: attribute 'state' is not score progress JSON", path);
    int pass = (int)json_integer_value(json_object_get(j, "pass")), win = (int)json_integer_value(json_object_get(j, "window"));
    json_t *order = json_object_get(j, "mi_order");
    int rc = 0;
    if (pass < 0 || pass >= s->passes || win < 0 || win > (pass == 0 ? s->samples : s->mi_samples) || !json_is_array(order) ||
        (int)json_array_size(order) != pass)
        rc = mf_err_set(err, "%s: score progress does not match this run (%d passes of %d and %d windows): %s", path,
                        s->passes, s->samples, s->mi_samples, state);
    for (int i = 0; rc == 0 && i < pass; i++) {
        json_int_t b = json_integer_value(json_array_get(order, i));
        if (b < 0 || b >= s->L) rc = mf_err_set(err, "%s: removed block %lld is not a block of the model", path, (long long)b);
        else s->mi_order[i] = (int)b;
    }
    if (rc == 0) {
        s->pass = pass;
        s->window = win;
        s->imp->n_samples = (long)json_integer_value(json_object_get(j, "n_samples"));
        s->imp->bi_tokens = (long)json_integer_value(json_object_get(j, "bi_tokens"));
        work[0] = (long)json_integer_value(json_object_get(j, "layer_fwd"));
        work[1] = (long)json_integer_value(json_object_get(j, "heads"));
    }
    json_decref(j);
    return rc;
}

/* Everything of one checkpoint into s; 0, or -1 with err. */
static int read_one(const mf_run *run, mf_score_state *s, const char *path, mf_err *err) {
    mf_params none = {0};
    mf_train_meta meta;
    if (mf_ckpt_read(path, 0, &none, NULL, &meta, err) != 0) return -1;
    mf_run_check_options(run, path, meta.options_json, NULL); /* fatal: another option is not a damaged file */
    long work[2] = {0, 0};
    int rc = parse_state(s, path, meta.state_json, work, err);
    f64_list l;
    build(s, &l);
    if (rc == 0) rc = mf_ckpt_read_f64(path, l.a, l.n, err);
    if (rc == 0 && s->last) {
        *s->base_nll = l.depth[0];
        *s->ppl_tokens = (long)l.depth[1];
        s->mi_acc->tokens = (long)l.depth[2];
    }
    if (rc == 0) {
        s->done = meta.step;
        *s->layer_fwd = run->world.rank == 0 ? work[0] : 0; /* the sums so far; score adds every rank's */
        *s->heads = run->world.rank == 0 ? work[1] : 0;
        mf_run_check_provenance(run, path, meta.provenance_json);
    }
    free_list(&l);
    mf_train_meta_free(&meta);
    return rc;
}

int mf_score_ckpt_resume(const mf_run *run, mf_score_state *s) {
    char **cand;
    int n = mf_run_candidates(run, &cand), i;
    if (n == 0 && run->world.rank == 0) mf_log("resume: no checkpoint in %s, starting fresh", run->ckpt_dir);
    for (i = 0; i < n; i++) {
        mf_err err = {{0}};
        int rc = read_one(run, s, cand[i], &err);
        if (!mf_run_read_ok(run, cand[i], rc, &err)) continue;
        if (run->world.rank == 0)
            mf_log_always("score: resumed from %s at window %lld (pass %d, window %d)", cand[i], (long long)s->done,
                          s->pass + 1, s->window);
        break;
    }
    if (n > 0 && i == n) mf_run_no_readable(run, n);
    mf_run_candidates_free(cand, n);
    return n > 0;
}
