/* distill.c - `minifuse distill`: knowledge distillation of a (pruned) student
 * from its teacher, pipeline-parallel over the ranks of each replica and
 * data-parallel over --dp replicas, with restartable HDF5 checkpoints.
 *
 * Ranks: world = dp replicas x P pipeline stages; rank = replica * P + stage.
 * Teacher and student are both split over the P stages of a replica (each
 * with its own FLOP-balanced partition). One optimizer step (GPipe):
 *   for each window of this replica's share of the global batch:
 *     teacher forward (pipelined) -> teacher logits on the last stage
 *     student training forward (activations kept per window) -> student logits
 *     loss = kl * KL_tau(teacher || student) + ce * CE(data), mean over the
 *            global batch's tokens; head backward
 *   then for each window: gradient back through the stages
 *   tied embeddings: first + last stage sum their gradients; replicas sum
 *   theirs (MPI_Allreduce); global-norm clipping; AdamW; warm-up + cosine LR.
 * SIGTERM / SIGUSR1: checkpoint at the end of the step and exit 0. --resume
 * continues from the newest complete checkpoint with identical results. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/args.h"
#include "cli/common.h"
#include "hf_collective.h"
#include "stage.h"
#include "backend/cpu_backward.h"
#include "train/checkpoint.h"
#include "train/optim.h"
#include "train/teacher_cache.h"
#include "train/train_model.h"
#include "util/log.h"
#include "util/sha256.h"
#include "version.h"

typedef struct distill_opts {
    const char *teacher, *student, *text, *out, *ckpt_dir, *log, *tokenizer;
    unsigned long long tokens, seed;
    int ctx, batch, dp, warmup, ckpt_every, keep, resume, recompute, force;
    float lr, min_lr, wd, clip, temp, kl, ce, hidden;
    const char *hidden_loss, *tcache_path;
    int topk;
} distill_opts;

/* Intermediate-state distillation: student layer s[k] matches teacher layer t[k]. */
typedef struct hidden_map {
    int n;
    int *s, *t;          /* [n] */
    float **tbuf;        /* [n] teacher outputs held by this rank ([T][D]) when it owns t[k] */
    float **grad;        /* [cfg.n_layers of student] gradient w.r.t. student layer outputs, or NULL */
    MPI_Request *req;    /* [n] sends of teacher outputs */
    int nmse;
} hidden_map;

static volatile sig_atomic_t g_stop_signal; /* set by SIGTERM/SIGUSR1; read once per step */
static void on_signal(int sig) { g_stop_signal = sig; }

typedef struct trainer {
    distill_opts o;
    MPI_Comm world, pipe, dp;
    int wrank, wsize, replica, P, stage;
    mf_stage teacher, student;   /* student.st unused: training state in ts */
    mf_train_state **ts;         /* [n_ts] one per micro-batch in flight */
    float **dxs;                 /* [n_ts] gradient w.r.t. this stage's output, per micro-batch */
    int n_ts;
    mf_params ps;
    int shared_embed;            /* index in ps of the last stage's copy of a tied embedding, or -1 */
    mf_adamw opt;
    mf_lr_sched sched;
    int64_t step, steps, data_pos, n_windows;
    int32_t *ids;
    char text_id[64];          /* identity of the training tokens (mf_cli_tokens_id) */
    int64_t *perm, perm_epoch;   /* window order of the current epoch */
    float *x;                    /* [T][D] activations received from the previous stage */
    FILE *logf;
    hidden_map hm;
    mf_tcache tc;                /* last stage, --teacher-topk: the teacher's top-K logits per window */
    int32_t *tk_ids;             /* [T][K] */
    float *tk_logits;            /* [T][K] */
} trainer;

/* ----------------------------------------------------------------- data */

/* Window index of global sample g: epochs are permutations of the windows,
 * each from the seed and the epoch number alone (so resuming needs no RNG state). */
static int64_t window_of(trainer *t, int64_t g) {
    int64_t epoch = g / t->n_windows;
    if (!t->perm || t->perm_epoch != epoch) {
        if (!t->perm) t->perm = mf_malloc((size_t)t->n_windows * sizeof *t->perm);
        mf_rng_permutation(t->o.seed * 0x9E3779B97F4A7C15ull + (uint64_t)epoch, t->perm, t->n_windows);
        t->perm_epoch = epoch;
    }
    return t->perm[g % t->n_windows];
}

/* ----------------------------------------------------------------- hidden states */

/* Teacher layer outputs for the mapped layers are copied by a forward hook. */
static void capture_teacher(void *ctx, int layer, mf_act_point pt, const float *x, int T, int C) {
    trainer *t = ctx;
    if (pt != MF_ACT_LAYER_OUT) return;
    for (int k = 0; k < t->hm.n; k++)
        if (t->hm.t[k] == layer) memcpy(t->hm.tbuf[k], x, (size_t)T * C * sizeof *x);
}

/* Student layer i <- teacher layer keep[i], from the student's config.json
 * ("minifuse": {"dropped_layers": [...]}) when it was depth-pruned, else identity. */
static void build_hidden_map(trainer *t) {
    hidden_map *h = &t->hm;
    const mf_config *sc = &t->student.model->cfg, *tc = &t->teacher.model->cfg;
    if (sc->dim != tc->dim) mf_fatal("distill: --hidden needs equal hidden sizes (student %d, teacher %d)", sc->dim, tc->dim);
    int *dropped = mf_calloc((size_t)tc->n_layers, sizeof *dropped), nd = 0;
    char path[4400];
    snprintf(path, sizeof path, "%s/config.json", t->o.student);
    json_t *root = json_load_file(path, 0, NULL);
    json_t *dl = json_object_get(json_object_get(root, "minifuse"), "dropped_layers");
    for (size_t i = 0; json_is_array(dl) && i < json_array_size(dl); i++) {
        json_int_t v = json_integer_value(json_array_get(dl, i));
        if (v >= 0 && v < tc->n_layers && !dropped[v]) { dropped[v] = 1; nd++; }
    }
    json_decref(root);
    if (tc->n_layers - nd != sc->n_layers)
        mf_fatal("distill: --hidden: student has %d layers, teacher %d with %d dropped (config.json minifuse.dropped_layers)",
                 sc->n_layers, tc->n_layers, nd);
    h->n = sc->n_layers;
    h->s = mf_malloc((size_t)h->n * sizeof *h->s);
    h->t = mf_malloc((size_t)h->n * sizeof *h->t);
    for (int l = 0, k = 0; l < tc->n_layers; l++) if (!dropped[l]) { h->s[k] = k; h->t[k] = l; k++; }
    free(dropped);
    h->tbuf = mf_calloc((size_t)h->n, sizeof *h->tbuf);
    h->grad = mf_calloc((size_t)sc->n_layers, sizeof *h->grad);
    h->req = mf_malloc((size_t)h->n * sizeof *h->req);
    size_t bytes = (size_t)t->o.ctx * sc->dim * sizeof(float);
    for (int k = 0; k < h->n; k++) {
        h->req[k] = MPI_REQUEST_NULL;
        if (mf_pipe_owner(&t->teacher.pipe, h->t[k]) == t->stage) h->tbuf[k] = mf_malloc(bytes);
        int l = h->s[k];
        if (l >= t->student.model->layer_begin && l < t->student.model->layer_end) {
            h->grad[l] = mf_malloc(bytes);
            if (!h->tbuf[k]) h->tbuf[k] = mf_malloc(bytes); /* receive buffer */
        }
    }
    h->nmse = strcmp(t->o.hidden_loss, "nmse") == 0;
    if (!h->nmse && strcmp(t->o.hidden_loss, "cosine") != 0) mf_fatal("distill: --hidden-loss '%s' is not cosine or nmse", t->o.hidden_loss);
}

/* Teacher owners send their captured outputs to the student owners (non-blocking). */
static void send_teacher_hidden(trainer *t) {
    hidden_map *h = &t->hm;
    int T = t->o.ctx, D = t->student.model->cfg.dim;
    for (int k = 0; k < h->n; k++) {
        int to = mf_pipe_owner(&t->student.pipe, h->s[k]), from = mf_pipe_owner(&t->teacher.pipe, h->t[k]);
        if (from == t->stage && to != t->stage) MPI_Isend(h->tbuf[k], T * D, MPI_FLOAT, to, 200 + k, t->pipe, &h->req[k]);
    }
}

/* Student owners: receive the teacher outputs, loss and gradient per mapped layer. */
static double hidden_losses(trainer *t, double norm) {
    hidden_map *h = &t->hm;
    mf_model *s = t->student.model;
    int T = t->o.ctx, D = s->cfg.dim;
    double loss = 0;
    for (int k = 0; k < h->n; k++) {
        int l = h->s[k];
        if (!h->grad[l]) continue;
        int from = mf_pipe_owner(&t->teacher.pipe, h->t[k]);
        if (from != t->stage) MPI_Recv(h->tbuf[k], T * D, MPI_FLOAT, from, 200 + k, t->pipe, MPI_STATUS_IGNORE);
        const float *a = mf_train_layer_output(s, t->ts[0], l);
        double v = h->nmse ? s->be->loss_nmse(a, h->tbuf[k], T, D, norm * h->n, h->grad[l])
                           : s->be->loss_cosine(a, h->tbuf[k], T, D, norm * h->n, h->grad[l]);
        for (size_t i = 0; i < (size_t)T * D; i++) h->grad[l][i] *= t->o.hidden;
        loss += t->o.hidden * v;
    }
    MPI_Waitall(h->n, h->req, MPI_STATUSES_IGNORE);
    return loss;
}

/* ----------------------------------------------------------------- one window */

/* Loss and dlogits on the last stage, then the head backward into dx. */
static double loss_and_head(trainer *t, mf_train_state *ts, const int32_t *targets, double norm, const float *teacher_logits,
                            float *dx) {
    mf_model *s = t->student.model;
    int T = t->o.ctx, V = s->cfg.vocab_size;
    float *z = mf_train_head_forward(s, ts), *dz = ts->dlogits;
    double loss = 0;
    memset(dz, 0, (size_t)T * V * sizeof *dz);
    if (t->o.kl > 0 && t->o.topk > 0) {
        loss += t->o.kl * s->be->loss_kl_topk(z, t->tk_ids, t->tk_logits, T, V, t->o.topk, t->o.temp, norm, dz);
        if (t->o.kl != 1.0f) for (size_t i = 0; i < (size_t)T * V; i++) dz[i] *= t->o.kl;
    } else if (t->o.kl > 0) {
        loss += t->o.kl * s->be->loss_kl(z, teacher_logits, T, V, t->o.temp, norm, dz);
        if (t->o.kl != 1.0f) for (size_t i = 0; i < (size_t)T * V; i++) dz[i] *= t->o.kl;
    }
    if (t->o.ce > 0) {
        float *dce = mf_malloc((size_t)T * V * sizeof *dce);
        loss += t->o.ce * s->be->loss_ce(z, targets, T, V, norm, dce);
        for (size_t i = 0; i < (size_t)T * V; i++) dz[i] += t->o.ce * dce[i];
        free(dce);
    }
    mf_train_head_backward(s, ts, &t->ps, dz, dx);
    return loss;
}

/* Forward of micro-batch j: teacher (pipelined), student keeping activations in
 * ts[slot]; the last stage computes the loss and the head backward into dxs[slot].
 * Sends are non-blocking, so the next micro-batch can start at once. */
static double forward_window(trainer *t, int slot, int64_t w, const int32_t *in, const int32_t *targets, double norm,
                             float *teacher_logits) {
    mf_model *s = t->student.model;
    mf_pipe *p = &t->student.pipe;
    int T = t->o.ctx, V = s->cfg.vocab_size;
    size_t n = (size_t)T * s->cfg.dim;
    mf_err err;
    if (t->o.topk > 0) { /* the teacher's top-K from the cache: no teacher forward */
        if (p->last && mf_tcache_get(&t->tc, w, t->tk_ids, t->tk_logits, &err) != 0) mf_fatal_err(&err);
    } else {
        mf_hooks hooks = {t, capture_teacher};
        t->teacher.st->hooks = t->hm.n ? &hooks : NULL;
        if (mf_stage_forward(&t->teacher, in, T, 0, 11) && teacher_logits)
            memcpy(teacher_logits, t->teacher.st->logits, (size_t)T * V * sizeof(float));
        t->teacher.st->hooks = NULL;
        if (t->hm.n) send_teacher_hidden(t);
    }
    if (!p->first) mf_pipe_recv_prev(p, t->x, n, 12);
    if (mf_train_forward(s, t->ts[slot], in, t->x, T, NULL, &err) != 0) mf_fatal_err(&err);
    if (!p->last) {
        mf_pipe_send_next(p, t->ts[slot]->x_out, n, 12);
        return 0;
    }
    return loss_and_head(t, t->ts[slot], targets, norm, teacher_logits, t->dxs[slot]);
}

/* Backward of the micro-batch in ts[slot]: gradient from the next stage (or the
 * head), through the owned layers, to the previous stage. */
static void backward_window(trainer *t, int slot, const float *const *dlayer) {
    mf_model *s = t->student.model;
    mf_pipe *p = &t->student.pipe;
    size_t n = (size_t)t->o.ctx * s->cfg.dim;
    if (!p->last) mf_pipe_recv_next(p, t->dxs[slot], n, 13);
    mf_train_backward(s, t->ts[slot], &t->ps, t->dxs[slot], p->first ? NULL : t->dxs[slot], dlayer);
    if (!p->first) mf_pipe_send_prev(p, t->dxs[slot], n, 13);
}

/* ----------------------------------------------------------------- gradients */

/* Sum the tied embedding's two copies (first and last stage) and the replicas' gradients. */
static void reduce_grads(trainer *t) {
    mf_pipe *p = &t->student.pipe;
    if (t->student.model->cfg.tied_embeddings && t->P > 1) {
        mf_param *e = mf_params_find(&t->ps, "model.embed_tokens.weight");
        if (p->first || p->last) {
            int peer = p->first ? t->P - 1 : 0;
            float *tmp = mf_malloc(e->numel * sizeof *tmp);
            MPI_Sendrecv(e->grad, (int)e->numel, MPI_FLOAT, peer, 21, tmp, (int)e->numel, MPI_FLOAT, peer, 21, p->comm, MPI_STATUS_IGNORE);
            /* same order of addition on both ranks: first-stage grad + last-stage grad */
            for (size_t i = 0; i < e->numel; i++) e->grad[i] = p->first ? e->grad[i] + tmp[i] : tmp[i] + e->grad[i];
            free(tmp);
        }
    }
    if (t->o.dp > 1)
        for (int i = 0; i < t->ps.n; i++)
            MPI_Allreduce(MPI_IN_PLACE, t->ps.p[i].grad, (int)t->ps.p[i].numel, MPI_FLOAT, MPI_SUM, t->dp);
}

/* Global gradient norm of one replica (the tied embedding counted once). */
static double grad_norm(trainer *t) {
    double local = 0;
    for (int i = 0; i < t->ps.n; i++) {
        if (i == t->shared_embed) continue;
        const mf_param *q = &t->ps.p[i];
        for (size_t j = 0; j < q->numel; j++) local += (double)q->grad[j] * q->grad[j];
    }
    double *all = mf_malloc((size_t)t->P * sizeof *all), sum = 0;
    MPI_Allgather(&local, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE, t->pipe);
    for (int r = 0; r < t->P; r++) sum += all[r];
    free(all);
    return sqrt(sum);
}

/* ----------------------------------------------------------------- checkpoints */

/* The parameter list and optimizer state without the last stage's tied copy. */
static void ckpt_view(const trainer *t, mf_params *v, mf_adamw *o) {
    *v = t->ps;
    *o = t->opt;
    if (t->shared_embed < 0) return;
    int k = t->shared_embed, n = t->ps.n - 1;
    v->p = mf_malloc((size_t)(n > 0 ? n : 1) * sizeof *v->p);
    o->m = mf_malloc((size_t)(n > 0 ? n : 1) * sizeof *o->m);
    o->v = mf_malloc((size_t)(n > 0 ? n : 1) * sizeof *o->v);
    o->numel = mf_malloc((size_t)(n > 0 ? n : 1) * sizeof *o->numel);
    for (int i = 0, j = 0; i < t->ps.n; i++) {
        if (i == k) continue;
        v->p[j] = t->ps.p[i];
        o->m[j] = t->opt.m[i]; o->v[j] = t->opt.v[i]; o->numel[j] = t->opt.numel[i];
        j++;
    }
    v->n = n;
    o->n = n;
    v->total -= t->ps.p[k].numel;
}

static void ckpt_view_free(const trainer *t, mf_params *v, mf_adamw *o) {
    if (t->shared_embed < 0) return;
    free(v->p); free(o->m); free(o->v); free(o->numel);
}

/* The options that decide the result, as stored in the checkpoint and compared on --resume
 * (the layout, --pp/--dp, may change: results agree within reduction noise). */
static void options_json(const trainer *t, char *buf, size_t cap) {
    snprintf(buf, cap, "{\"ctx\":%d,\"batch\":%d,\"lr\":%g,\"min_lr\":%g,\"warmup\":%d,\"wd\":%g,\"clip\":%g,\"temp\":%g,\"kl\":%g,\"ce\":%g,\"hidden\":%g,\"hidden_loss\":\"%s\",\"seed\":%llu,\"tokens\":%llu,\"text\":\"%s\"}",
             t->o.ctx, t->o.batch, t->o.lr, t->o.min_lr, t->o.warmup, t->o.wd, t->o.clip, t->o.temp, t->o.kl, t->o.ce, t->o.hidden,
             t->o.hidden_loss, t->o.seed, t->o.tokens, t->text_id);
}

static void save_checkpoint(trainer *t) {
    mf_params v;
    mf_adamw o;
    ckpt_view(t, &v, &o);
    mf_train_meta meta = {0};
    meta.step = t->step;
    meta.tokens = t->step * (int64_t)t->o.batch * t->o.ctx;
    meta.data_pos = t->data_pos;
    meta.lr = mf_lr_at(&t->sched, t->step > 0 ? t->step - 1 : 0);
    meta.sched = t->sched;
    mf_rng_seed(&meta.rng, t->o.seed + (uint64_t)t->replica);
    char opts[768];
    options_json(t, opts, sizeof opts);
    meta.options_json = opts;
    meta.student = (char *)t->o.student;
    meta.teacher = (char *)t->o.teacher;
    mf_err err;
    char path[4400];
    double t0 = mf_now();
    if (mf_ckpt_write(t->o.ckpt_dir, t->world, t->replica, &v, &o, &meta, t->o.keep, path, sizeof path, &err) != 0) mf_fatal_err(&err);
    if (t->wrank == 0) mf_log("checkpoint %s (step %lld) in %.1fs", path, (long long)t->step, mf_now() - t0);
    ckpt_view_free(t, &v, &o);
}

static void resume(trainer *t) {
    char path[4400];
    mf_err err;
    int rc = mf_ckpt_find_latest(t->o.ckpt_dir, path, sizeof path, &err);
    if (rc < 0) mf_fatal_err(&err);
    if (rc == 1) { if (t->wrank == 0) mf_log("resume: no checkpoint in %s, starting fresh", t->o.ckpt_dir); return; }
    mf_train_meta meta = {0};
    if (mf_ckpt_read(path, t->replica, &t->ps, &t->opt, &meta, &err) != 0) mf_fatal_err(&err);
    char opts[768];
    options_json(t, opts, sizeof opts);
    if (mf_ckpt_options_check(path, meta.options_json, opts, NULL, &err) != 0) mf_fatal_err(&err);
    t->step = meta.step;
    t->data_pos = meta.data_pos;
    if (t->wrank == 0) mf_log("resumed from %s at step %lld", path, (long long)t->step);
    mf_train_meta_free(&meta);
}

/* ----------------------------------------------------------------- output */

static void write_student(trainer *t) {
    if (t->replica != 0) return;
    mf_tensor_ref *refs = mf_calloc((size_t)(t->ps.n + 1), sizeof *refs);
    int n = 0;
    for (int i = 0; i < t->ps.n; i++) {
        if (i == t->shared_embed) continue;
        const mf_param *q = &t->ps.p[i];
        refs[n].name = q->name;
        refs[n].ndim = q->ndim;
        refs[n].shape[0] = q->shape[0];
        refs[n].shape[1] = q->shape[1];
        refs[n].data = q->data;
        n++;
    }
    char tok[4400], tok_abs[PATH_MAX];
    json_t *mf = json_pack("{s:s, s:s, s:s, s:I, s:I}", "command", "distill", "teacher", t->o.teacher, "student", t->o.student,
                           "steps", (json_int_t)t->step, "tokens", (json_int_t)(t->step * t->o.batch * t->o.ctx));
    if (mf_source_tokenizer_path(t->student.src, t->o.tokenizer, tok, sizeof tok) == 0 && realpath(tok, tok_abs))
        json_object_set_new(mf, "tokenizer", json_string(tok_abs));
    json_t *extra = json_pack("{s:o}", "minifuse", mf);
    char *ex = json_dumps(extra, JSON_COMPACT);
    mf_hf_write_collective(t->o.out, t->pipe, &t->student.model->cfg, refs, n, ex, t->o.force, "distill");
    free(ex);
    json_decref(extra);
    free(refs);
}

/* ----------------------------------------------------------------- the loop */

static void log_step(trainer *t, double loss, double gnorm, double lr, double secs) {
    if (t->wrank != 0) return;
    double tps = (double)t->o.batch * t->o.ctx / secs;
    fprintf(t->logf, "{\"step\":%lld,\"loss\":%.8g,\"lr\":%.6g,\"grad_norm\":%.6g,\"tokens_per_s\":%.2f,\"tokens\":%lld}\n",
            (long long)t->step, loss, lr, gnorm, tps, (long long)(t->step * t->o.batch * t->o.ctx));
    fflush(t->logf);
    mf_log("step %lld/%lld loss %.5f lr %.3g grad-norm %.4f %.0f tokens/s", (long long)t->step, (long long)t->steps, loss, lr, gnorm, tps);
}

/* One optimizer step over this replica's `per` windows. GPipe schedule: the
 * forwards of all windows stream through the stages (several micro-batches in
 * flight), then their backwards stream back; gradients accumulate in window
 * order, so the result equals running the windows one at a time. With a
 * hidden-state loss each window goes forward and backward before the next. */
static void train_step(trainer *t, float *teacher_logits, int32_t *in) {
    int T = t->o.ctx, per = t->o.batch / t->o.dp;
    double norm = (double)t->o.batch * T, loss = 0, t0 = mf_now();
    mf_params_zero_grad(&t->ps);
    for (int j = 0; j < per; j++) {
        int64_t g = t->data_pos + (int64_t)t->replica * per + j;
        int64_t w = window_of(t, g);
        const int32_t *win = t->ids + (size_t)w * T;
        in[0] = t->student.model->cfg.bos_id;
        memcpy(in + 1, win, (size_t)(T - 1) * sizeof *in);
        int slot = t->n_ts > 1 ? j : 0;
        loss += forward_window(t, slot, w, in, win, norm, teacher_logits);
        if (t->n_ts == 1) {
            const float *const *dlayer = NULL;
            if (t->hm.n) {
                loss += hidden_losses(t, norm);
                dlayer = (const float *const *)(t->hm.grad + t->student.model->layer_begin);
            }
            backward_window(t, 0, dlayer);
        }
    }
    for (int j = 0; t->n_ts > 1 && j < per; j++) backward_window(t, j, NULL);
    mf_pipe_flush(&t->student.pipe);
    reduce_grads(t);
    double gnorm = grad_norm(t);
    float clip = mf_clip_factor(gnorm, t->o.clip);
    double lr = mf_lr_at(&t->sched, t->step);
    mf_adamw_step(&t->opt, &t->ps, lr, clip);
    MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, t->world);
    t->step++;
    t->data_pos += t->o.batch;
    log_step(t, loss, gnorm, lr, mf_now() - t0);
}

static void run(trainer *t) {
    int T = t->o.ctx, V = t->student.model->cfg.vocab_size;
    float *teacher_logits = t->student.pipe.last ? mf_malloc((size_t)T * V * sizeof(float)) : NULL;
    int32_t *in = mf_malloc((size_t)T * sizeof *in);
    mf_progress prog;
    mf_progress_start(&prog, "distill", (long)t->steps);
    while (t->step < t->steps) {
        train_step(t, teacher_logits, in);
        int stop = g_stop_signal, any = 0;
        MPI_Allreduce(&stop, &any, 1, MPI_INT, MPI_MAX, t->world);
        int due = t->o.ckpt_every > 0 && t->step % t->o.ckpt_every == 0;
        if (due || any) save_checkpoint(t);
        if (any) {
            if (t->wrank == 0) mf_log("signal %d: checkpoint written at step %lld, exiting (resume with --resume)", any, (long long)t->step);
            break;
        }
        if (t->wrank == 0) mf_progress_update(&prog, (long)t->step, "steps");
    }
    free(teacher_logits);
    free(in);
}

/* ----------------------------------------------------------------- teacher top-K cache */

/* Every replica runs the teacher over its windows (w mod D == replica); its last
 * stage keeps the top K logits of every position; all ranks write one file. */
static void build_teacher_cache(trainer *t) {
    int T = t->o.ctx, K = t->o.topk, V = t->teacher.model->cfg.vocab_size;
    mf_err err;
    mf_tcache c;
    if (mf_tcache_create(t->o.tcache_path, t->world, K, T, t->n_windows, t->o.teacher, t->o.text, &c, &err) != 0) mf_fatal_err(&err);
    int32_t *in = mf_malloc((size_t)T * sizeof *in), *ids = mf_malloc((size_t)T * K * sizeof *ids);
    float *vals = mf_malloc((size_t)T * K * sizeof *vals);
    mf_progress prog;
    mf_progress_start(&prog, "teacher top-K cache", (long)t->n_windows);
    int rc = 0;
    for (int64_t w = t->replica; w < t->n_windows; w += t->o.dp) {
        in[0] = t->teacher.model->cfg.bos_id;
        memcpy(in + 1, t->ids + (size_t)w * T, (size_t)(T - 1) * sizeof *in);
        if (!mf_stage_forward(&t->teacher, in, T, 0, 11)) continue;
        for (int r = 0; r < T; r++) mf_topk(t->teacher.st->logits + (size_t)r * V, V, K, ids + (size_t)r * K, vals + (size_t)r * K);
        if (rc == 0) rc = mf_tcache_put(&c, w, ids, vals, &err);
        if (t->wrank == t->P - 1) mf_progress_update(&prog, (long)(w + 1), "windows");
    }
    mf_pipe_flush(&t->teacher.pipe);
    if (mf_tcache_finish(t->o.tcache_path, t->world, &c, rc, &err) != 0) mf_fatal_err(&err);
    free(in); free(ids); free(vals);
}

static void open_teacher_cache(trainer *t) {
    mf_err err;
    int rc = mf_tcache_open(t->o.tcache_path, t->o.topk, t->o.ctx, t->n_windows, &t->tc, &err);
    if (rc < 0) mf_fatal_err(&err);
    int need = rc == 1, any;
    MPI_Allreduce(&need, &any, 1, MPI_INT, MPI_MAX, t->world);
    if (rc == 0 && (any || !t->student.pipe.last)) mf_tcache_close(&t->tc);
    if (any) {
        if (t->wrank == 0) mf_log("teacher top-%d cache %s: computing it once", t->o.topk, t->o.tcache_path);
        build_teacher_cache(t);
        if (t->student.pipe.last && mf_tcache_open(t->o.tcache_path, t->o.topk, t->o.ctx, t->n_windows, &t->tc, &err) != 0)
            mf_fatal("%s: cannot reopen the teacher cache just written", t->o.tcache_path);
    } else if (t->wrank == 0) mf_log("teacher top-%d cache %s: reusing it (no teacher forward)", t->o.topk, t->o.tcache_path);
    if (t->student.pipe.last) {
        t->tk_ids = mf_malloc((size_t)t->o.ctx * t->o.topk * sizeof *t->tk_ids);
        t->tk_logits = mf_malloc((size_t)t->o.ctx * t->o.topk * sizeof *t->tk_logits);
    }
}

/* ----------------------------------------------------------------- set-up */

static void split_ranks(trainer *t) {
    t->world = MPI_COMM_WORLD;
    MPI_Comm_rank(t->world, &t->wrank);
    MPI_Comm_size(t->world, &t->wsize);
    if (t->o.dp < 1 || t->wsize % t->o.dp != 0)
        mf_fatal("distill: --dp %d must divide the number of ranks %d", t->o.dp, t->wsize);
    t->P = t->wsize / t->o.dp;
    t->replica = t->wrank / t->P;
    t->stage = t->wrank % t->P;
    MPI_Comm_split(t->world, t->replica, t->stage, &t->pipe);
    MPI_Comm_split(t->world, t->stage, t->replica, &t->dp);
}

static void setup(trainer *t) {
    distill_opts *o = &t->o;
    split_ranks(t);
    if (o->batch % o->dp != 0) mf_fatal("distill: --batch %d must be a multiple of --dp %d", o->batch, o->dp);
    size_t n;
    t->ids = mf_cli_tokenize_file(o->student, o->tokenizer, o->text, &n, t->world);
    mf_cli_tokens_id(t->ids, n, t->text_id, sizeof t->text_id);
    t->n_windows = (int64_t)(n / (size_t)o->ctx);
    if (t->n_windows < 1) mf_fatal("distill: %s has %zu tokens, fewer than one window of --ctx %d", o->text, n, o->ctx);
    mf_stage_open(&t->teacher, o->teacher, t->pipe, mf_backend_cpu(), o->ctx, o->ctx);
    mf_stage_open(&t->student, o->student, t->pipe, mf_backend_cpu(), o->ctx, o->ctx);
    const mf_config *sc = &t->student.model->cfg, *tc = &t->teacher.model->cfg;
    if (sc->vocab_size != tc->vocab_size)
        mf_fatal("distill: student %s has vocabulary %d, teacher %s has %d", o->student, sc->vocab_size, o->teacher, tc->vocab_size);
    mf_stage_log_layout(&t->teacher, "teacher");
    mf_stage_log_layout(&t->student, "student");
    mf_err err;
    /* micro-batches in flight: every window of a step (GPipe), or one with a hidden-state loss */
    t->n_ts = o->hidden > 0 || t->P == 1 ? 1 : o->batch / o->dp;
    t->ts = mf_calloc((size_t)t->n_ts, sizeof *t->ts);
    t->dxs = mf_calloc((size_t)t->n_ts, sizeof *t->dxs);
    for (int j = 0; j < t->n_ts; j++) {
        if (!(t->ts[j] = mf_train_state_new(t->student.model, o->ctx, o->recompute, &err))) mf_fatal_err(&err);
        t->dxs[j] = mf_malloc((size_t)o->ctx * sc->dim * sizeof(float));
    }
    mf_params_from_model(&t->ps, t->student.model);
    t->shared_embed = -1;
    if (sc->tied_embeddings && t->P > 1 && t->student.pipe.last)
        for (int i = 0; i < t->ps.n; i++) if (strcmp(t->ps.p[i].name, "model.embed_tokens.weight") == 0) t->shared_embed = i;
    mf_adamw_opts ao;
    mf_adamw_defaults(&ao);
    ao.weight_decay = o->wd;
    mf_adamw_init(&t->opt, &t->ps, &ao);
    t->steps = (int64_t)(o->tokens / ((unsigned long long)o->batch * o->ctx));
    if (t->steps < 1) mf_fatal("distill: --tokens %llu is less than one step (--batch %d x --ctx %d)", o->tokens, o->batch, o->ctx);
    t->sched.max_lr = o->lr;
    t->sched.min_lr = o->min_lr >= 0 ? o->min_lr : o->lr / 10;
    t->sched.warmup = o->warmup >= 0 ? o->warmup : t->steps / 20;
    t->sched.total = t->steps;
    size_t D = (size_t)sc->dim;
    t->x = mf_malloc((size_t)o->ctx * D * sizeof(float));
    if (t->wrank == 0) {
        mkdir(o->ckpt_dir, 0755);
        t->logf = fopen(o->log, o->resume ? "a" : "w");
        if (!t->logf) mf_fatal("distill: cannot write --log %s: %s", o->log, strerror(errno));
        mf_log("distill: %lld steps x %d windows x %d tokens (%llu tokens), %d replica(s) x %d stage(s), %zu student parameters on rank 0",
               (long long)t->steps, o->batch, o->ctx, (unsigned long long)t->steps * o->batch * o->ctx, o->dp, t->P, t->ps.total);
    }
    if (o->hidden > 0) build_hidden_map(t);
    if (o->topk > 0) {
        if (o->hidden > 0) mf_fatal("distill: --teacher-topk and --hidden cannot be combined (hidden states need the teacher forward)");
        if (o->topk > sc->vocab_size) mf_fatal("distill: --teacher-topk %d exceeds the vocabulary (%d)", o->topk, sc->vocab_size);
        open_teacher_cache(t);
    }
    if (o->resume) resume(t);
}

static void teardown(trainer *t) {
    if (t->logf) fclose(t->logf);
    free(t->x); free(t->ids); free(t->perm);
    for (int k = 0; k < t->hm.n; k++) free(t->hm.tbuf[k]);
    for (int l = 0; t->hm.grad && l < t->student.model->cfg.n_layers; l++) free(t->hm.grad[l]);
    free(t->hm.s); free(t->hm.t); free(t->hm.tbuf); free(t->hm.grad); free(t->hm.req);
    if (t->o.topk > 0 && t->student.pipe.last) mf_tcache_close(&t->tc);
    free(t->tk_ids); free(t->tk_logits);
    mf_adamw_free(&t->opt);
    mf_params_free(&t->ps);
    for (int j = 0; j < t->n_ts; j++) { mf_train_state_free(t->ts[j]); free(t->dxs[j]); }
    free(t->ts);
    free(t->dxs);
    mf_stage_close(&t->student);
    mf_stage_close(&t->teacher);
    MPI_Comm_free(&t->pipe);
    MPI_Comm_free(&t->dp);
}

int mf_cmd_distill(int argc, char **argv) {
    trainer t;
    memset(&t, 0, sizeof t);
    distill_opts *o = &t.o;
    *o = (distill_opts){.tokens = 1 << 20, .ctx = 256, .batch = 8, .dp = 1, .warmup = -1, .ckpt_every = 0, .keep = 2,
                        .lr = 1e-4f, .min_lr = -1, .wd = 0.1f, .clip = 1.0f, .temp = 1.0f, .kl = 1.0f, .ce = 0.0f, .seed = 1234,
                        .hidden = 0.0f, .hidden_loss = "cosine"};
    const mf_opt opts[] = {
        {"teacher", MF_OPT_STR, &o->teacher, "teacher model (the original)", 1},
        {"student", MF_OPT_STR, &o->student, "student model to train (e.g. a pruned HF directory)", 1},
        {"text", MF_OPT_STR, &o->text, "training text (UTF-8), cut into windows of --ctx tokens", 1},
        {"out", MF_OPT_STR, &o->out, "output Hugging Face directory for the distilled student", 1},
        {"tokens", MF_OPT_U64, &o->tokens, "training tokens in all (default 1048576)", 0},
        {"ctx", MF_OPT_INT, &o->ctx, "tokens per window (default 256)", 0},
        {"batch", MF_OPT_INT, &o->batch, "windows per optimizer step, all replicas together (default 8)", 0},
        {"dp", MF_OPT_INT, &o->dp, "data-parallel replicas (ranks = dp x pipeline stages; default 1)", 0},
        {"lr", MF_OPT_FLOAT, &o->lr, "peak learning rate (default 1e-4)", 0},
        {"min-lr", MF_OPT_FLOAT, &o->min_lr, "final learning rate of the cosine (default lr/10)", 0},
        {"warmup", MF_OPT_INT, &o->warmup, "linear warm-up steps (default 5% of the steps)", 0},
        {"wd", MF_OPT_FLOAT, &o->wd, "AdamW weight decay on 2-D weights (default 0.1)", 0},
        {"clip", MF_OPT_FLOAT, &o->clip, "global gradient-norm clip, 0 = off (default 1.0)", 0},
        {"temp", MF_OPT_FLOAT, &o->temp, "distillation temperature (default 1)", 0},
        {"kl", MF_OPT_FLOAT, &o->kl, "weight of KL(teacher || student) on logits (default 1)", 0},
        {"ce", MF_OPT_FLOAT, &o->ce, "weight of cross-entropy on the data (default 0)", 0},
        {"hidden", MF_OPT_FLOAT, &o->hidden, "weight of the intermediate hidden-state loss (default 0; depth-pruned students)", 0},
        {"hidden-loss", MF_OPT_STR, &o->hidden_loss, "cosine (default) or nmse, between mapped student/teacher layer outputs", 0},
        {"teacher-topk", MF_OPT_INT, &o->topk, "use the teacher's top-K logits, computed once into --teacher-cache (default 0: full logits every step)", 0},
        {"teacher-cache", MF_OPT_STR, &o->tcache_path, "HDF5 file of the teacher's top-K logits (default OUT.teacher-topk.h5)", 0},
        {"seed", MF_OPT_U64, &o->seed, "seed of the data order (default 1234)", 0},
        {"recompute", MF_OPT_FLAG, &o->recompute, "recompute activations in the backward (less memory, same result)", 0},
        {"checkpoint-every", MF_OPT_INT, &o->ckpt_every, "write a checkpoint every K steps (default 0: only on signals)", 0},
        {"checkpoint-dir", MF_OPT_STR, &o->ckpt_dir, "checkpoint directory (default OUT.ckpt)", 0},
        {"keep", MF_OPT_INT, &o->keep, "complete checkpoints to keep (default 2)", 0},
        {"resume", MF_OPT_FLAG, &o->resume, "continue from the newest complete checkpoint", 0},
        {"log", MF_OPT_STR, &o->log, "per-step JSON lines log (default OUT.train.jsonl)", 0},
        {"tokenizer", MF_OPT_STR, &o->tokenizer, "tokenizer.bin or GGUF file (default: the student's)", 0},
        {"force", MF_OPT_FLAG, &o->force, "replace --out if it exists", 0},
    };
    const char *summary =
        "Distill a student from a teacher: forward KL on logits with temperature (Minitron), optional\n"
        "cross-entropy; pipeline-parallel over the ranks of a replica, data-parallel over --dp replicas;\n"
        "AdamW, warm-up + cosine LR, gradient clipping; HDF5 checkpoints (--checkpoint-every, --resume;\n"
        "SIGTERM/SIGUSR1 checkpoint and exit).";
    if (mf_args_parse_or_die("distill", summary, opts, sizeof opts / sizeof opts[0], argc, argv)) return 0;
    if (o->ctx < 2 || o->batch < 1 || o->lr <= 0 || o->temp <= 0) mf_fatal("distill: --ctx >= 2, --batch >= 1, --lr > 0, --temp > 0 required");
    char ckpt_default[4200], log_default[4200];
    snprintf(ckpt_default, sizeof ckpt_default, "%s.ckpt", o->out);
    snprintf(log_default, sizeof log_default, "%s.train.jsonl", o->out);
    if (!o->ckpt_dir) o->ckpt_dir = ckpt_default;
    if (!o->log) o->log = log_default;
    char tc_default[4200];
    snprintf(tc_default, sizeof tc_default, "%s.teacher-topk.h5", o->out);
    if (!o->tcache_path) o->tcache_path = tc_default;
    if (o->topk < 0) mf_fatal("distill: --teacher-topk %d must not be negative", o->topk);
    struct stat sb;
    if (stat(o->out, &sb) == 0 && !o->force) mf_fatal("distill: --out %s already exists (use --force to replace it)", o->out);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    setup(&t);
    double t0 = mf_now();
    int64_t start = t.step;
    run(&t);
    double secs = mf_now() - t0;
    if (t.step >= t.steps) write_student(&t);
    if (t.wrank == 0)
        mf_log("distill: %lld steps in %.1fs (%.1f tokens/s)%s", (long long)(t.step - start), secs,
               (double)(t.step - start) * o->batch * o->ctx / secs, t.step >= t.steps ? "; wrote the student" : "");
    teardown(&t);
    return 0;
}
