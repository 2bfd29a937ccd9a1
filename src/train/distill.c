/* distill.c - the distillation schedule (see distill.h). */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hf_collective.h"
#include "io/safetensors.h" /* mf_dtype_name */
#include "tags.h"
#include "train/distill_internal.h"
#include "train/host_copy.h"
#include "train/partition.h"
#include "util/log.h"

/* ----------------------------------------------------------------- one window */

/* Loss and dlogits on the last stage, then the head backward into dx. A loss
 * weighted w is the loss over norm / w: its value and gradient come out
 * weighted, on the backend, with no pass over the logits on the host. The
 * first loss writes dlogits (every loss op writes its whole gradient), so it
 * is not zeroed first; teacher_logits is the teacher stage's own buffer. */
static double loss_and_head(trainer *t, mf_train_state *ts, const int32_t *targets, double norm, const float *teacher_logits,
                            float *dx) {
    mf_model *s = t->student.model;
    int T = t->o.ctx, V = s->cfg.vocab_size, K = t->o.topk;
    float *z = mf_train_head_forward(s, ts), *dz = ts->dlogits;
    double loss = 0;
    int kl = t->o.kl > 0;
    if (!kl && !(t->o.ce > 0)) s->be->zero(dz, (size_t)T * V * sizeof *dz); /* no loss on the logits */
    if (kl && K > 0) {
        const float *zt = t->tk_logits;
        if (t->tk_dev) { /* the cache's values are host memory */
            s->be->upload(t->tk_dev, t->tk_logits, (size_t)T * K * sizeof(float));
            zt = t->tk_dev;
        }
        loss += s->be->loss_kl_topk(z, t->tk_ids, zt, T, V, K, t->o.temp, norm / t->o.kl, dz);
    } else if (kl) {
        loss += s->be->loss_kl(z, teacher_logits, T, V, t->o.temp, norm / t->o.kl, dz);
    }
    if (t->o.ce > 0 && !kl) {
        loss += s->be->loss_ce(z, targets, T, V, norm / t->o.ce, dz);
    } else if (t->o.ce > 0) {
        float *dce = s->be->alloc((size_t)T * V * sizeof *dce);
        loss += s->be->loss_ce(z, targets, T, V, norm / t->o.ce, dce);
        s->be->add(dz, dce, (size_t)T * V);
        s->be->free(dce);
    }
    mf_train_head_backward(s, ts, &t->ps, dz, dx);
    return loss;
}

/* Forward of micro-batch j: teacher (pipelined), student keeping activations in
 * ts[slot]; the last stage computes the loss and the head backward into dxs[slot].
 * Sends are non-blocking, so the next micro-batch can start at once. */
static double forward_window(trainer *t, int slot, int64_t w, const int32_t *in, const int32_t *targets, double norm) {
    const float *teacher_logits = NULL; /* the last stage's teacher logits of this window, read before its next forward */
    mf_model *s = t->student.model;
    mf_pipe *p = &t->student.pipe;
    int T = t->o.ctx;
    size_t n = (size_t)T * s->cfg.dim;
    mf_err err;
    if (t->o.topk > 0) { /* the teacher's top-K from the cache: no teacher forward */
        if (p->last && mf_tcache_get(&t->tc, w, t->tk_ids, t->tk_logits, &err) != 0) mf_fatal_err(&err);
    } else {
        mf_hooks hooks = {t, mf_distill_hidden_capture};
        t->teacher.st->hooks = t->hm.n ? &hooks : NULL;
        if (mf_stage_forward(&t->teacher, in, T, 0, MF_TAG_TEACHER)) teacher_logits = t->teacher.st->logits;
        t->teacher.st->hooks = NULL;
        if (t->hm.n) mf_distill_hidden_send(t);
    }
    if (!p->first) mf_pipe_recv_prev(p, t->x, n, MF_TAG_STUDENT_FWD);
    if (mf_train_forward(s, t->ts[slot], in, t->x, T, NULL, &err) != 0) mf_fatal_err(&err);
    if (!p->last) {
        mf_pipe_send_next(p, t->ts[slot]->x_out, n, MF_TAG_STUDENT_FWD);
        return 0;
    }
    return loss_and_head(t, t->ts[slot], targets, norm, teacher_logits, t->dxs[slot]);
}

/* ----------------------------------------------------------------- gradients */

/* Backward hook of the step's last micro-batch: layer l's gradients are final,
 * start their sum over the replicas and let the earlier ones progress. */
static void start_bucket(void *ctx, int l) {
    trainer *t = ctx;
    size_t off, n;
    if (mf_params_layer_range(&t->ps, l, &off, &n) && n > 0)
        mf_coll_sum_start(&t->c_dp, t->ps.grad_flat + off, n, &t->bucket[t->n_buckets++]);
    mf_coll_progress(t->bucket, t->n_buckets);
}

/* Backward of the micro-batch in ts[slot]: gradient from the next stage (or the
 * head), through the owned layers, to the previous stage. last: the step's last
 * micro-batch (its layers' gradients are final as they are done). */
static void backward_window(trainer *t, int slot, const float *const *dlayer, int last) {
    mf_model *s = t->student.model;
    mf_pipe *p = &t->student.pipe;
    size_t n = (size_t)t->o.ctx * s->cfg.dim;
    mf_train_state *ts = t->ts[slot];
    if (!p->last) mf_pipe_recv_next(p, t->dxs[slot], n, MF_TAG_STUDENT_BWD);
    if (last && t->o.dp > 1) { ts->on_layer_grads = start_bucket; ts->hook_ctx = t; }
    mf_train_backward(s, ts, &t->ps, t->dxs[slot], p->first ? NULL : t->dxs[slot], dlayer);
    ts->on_layer_grads = NULL;
    if (!p->first) mf_pipe_send_prev(p, t->dxs[slot], n, MF_TAG_STUDENT_BWD);
}

/* After the backward: the layers' sums over the replicas (started during the
 * backward) are finished, the tied embedding's two copies are summed (first +
 * last stage), then what lies outside the layers (embedding, final norm,
 * head) is summed over the replicas. */
static void reduce_grads(trainer *t) {
    mf_coll_wait(t->bucket, t->n_buckets);
    t->n_buckets = 0;
    if (t->student.model->cfg.tied_embeddings && t->P > 1) {
        mf_param *e = mf_params_find(&t->ps, "model.embed_tokens.weight");
        if (e) mf_coll_tied_fold(&t->c_pipe, e->grad, e->numel);
    }
    if (t->o.dp > 1) {
        size_t lo = t->ps.n_layers ? t->ps.layer_off[0] : t->ps.grad_n, hi = t->ps.n_layers ? t->ps.layer_off[t->ps.n_layers] : t->ps.grad_n;
        mf_coll_sum(&t->c_dp, t->ps.grad_flat, lo);                         /* embedding */
        mf_coll_sum(&t->c_dp, t->ps.grad_flat + hi, t->ps.grad_n - hi);     /* final norm, head */
    }
}

/* Global gradient norm of one replica (the tied embedding counted once): each
 * tensor's sum of squares on the backend, added in list order, then over the stages. */
static double grad_norm(trainer *t) {
    double local = 0;
    for (int i = 0; i < t->ps.n; i++) {
        if (i == t->shared_embed) continue;
        local += mf_params_sumsq(&t->ps, t->ps.p[i].grad, t->ps.p[i].numel);
    }
    return sqrt(mf_coll_sum_f64(&t->c_pipe, local));
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
static void set_options(trainer *t) {
    const mf_distill_opts *o = &t->o;
    mf_run_set_options(&t->run, "{\"ctx\":%d,\"batch\":%d,\"lr\":%g,\"min_lr\":%g,\"warmup\":%d,\"wd\":%g,\"clip\":%g,\"temp\":%g,"
                       "\"kl\":%g,\"ce\":%g,\"hidden\":%g,\"hidden_loss\":\"%s\",\"seed\":%llu,\"tokens\":%llu,\"text\":\"%s\","
                       "\"teacher_topk\":%d,\"teacher_weights\":\"%s\"}",
                       o->ctx, o->batch, o->lr, o->min_lr, o->warmup, o->wd, o->clip, o->temp, o->kl, o->ce, o->hidden,
                       o->hidden_loss, o->seed, o->tokens, t->text_id, o->topk,
                       mf_dtype_name(t->teacher.model->wdt)); /* a 16-bit teacher changes the targets */
}

static void save_checkpoint(trainer *t) {
    mf_params v, hv;
    mf_adamw o, ho;
    ckpt_view(t, &v, &o);
    mf_host_copy_get(&v, &o, &hv, &ho); /* a device backend's tensors, downloaded */
    mf_train_meta meta = {0};
    meta.step = t->step;
    meta.tokens = t->step * (int64_t)t->o.batch * t->o.ctx;
    meta.data_pos = t->data_pos;
    meta.lr = mf_lr_at(&t->sched, t->step > 0 ? t->step - 1 : 0);
    meta.sched = t->sched;
    mf_rng_seed(&meta.rng, t->o.seed + (uint64_t)t->replica);
    meta.student = (char *)t->o.student;
    meta.teacher = (char *)t->o.teacher;
    char path[4400];
    double t0 = mf_now();
    mf_run_save(&t->run, t->replica, &hv, &ho, &meta, path, sizeof path);
    if (t->wrank == 0) mf_log("checkpoint %s (step %lld) in %.1fs", path, (long long)t->step, mf_now() - t0);
    mf_host_copy_free(&v, &hv, &ho);
    ckpt_view_free(t, &v, &o);
}

/* A checkpoint's progress must be one this run can reach: its step within the
 * run, its data position the one that step implies. */
static int check_progress(const trainer *t, const char *path, const mf_train_meta *m, mf_err *err) {
    if (m->step < 0 || m->step > t->steps)
        return mf_err_set(err, "%s: step %lld is outside this run's 0..%lld steps", path, (long long)m->step, (long long)t->steps);
    if (m->data_pos != m->step * t->o.batch)
        return mf_err_set(err, "%s: data position %lld does not match step %lld x --batch %d", path, (long long)m->data_pos,
                          (long long)m->step, t->o.batch);
    if (m->tokens != m->step * (int64_t)t->o.batch * t->o.ctx)
        return mf_err_set(err, "%s: %lld tokens seen does not match step %lld", path, (long long)m->tokens, (long long)m->step);
    return 0;
}

/* The newest checkpoint every rank can read: its weights, moments and progress
 * (refused: other options; skipped with a message: unreadable, damaged, out of
 * range or non-finite, then the previous one is tried). */
static void resume(trainer *t) {
    char **cand;
    int n = mf_run_candidates(&t->run, &cand);
    if (n == 0) {
        if (t->wrank == 0) mf_log("resume: no checkpoint in %s, starting fresh", t->o.ckpt_dir);
        mf_run_candidates_free(cand, n);
        return;
    }
    int i;
    mf_params hp;
    mf_adamw ho;
    mf_host_copy_get(&t->ps, &t->opt, &hp, &ho); /* read into host memory, uploaded once accepted */
    for (i = 0; i < n; i++) {
        mf_err err;
        mf_train_meta meta = {0};
        int rc = mf_ckpt_read(cand[i], t->replica, &hp, &ho, &meta, &err);
        if (rc == 0) rc = check_progress(t, cand[i], &meta, &err);
        if (rc == 0) rc = mf_params_check_finite(&hp, cand[i], &err);
        if (!mf_run_read_ok(&t->run, cand[i], rc, &err)) { mf_train_meta_free(&meta); continue; }
        mf_host_copy_put(&hp, &ho, &t->ps, &t->opt);
        mf_run_check_options(&t->run, cand[i], meta.options_json, NULL);
        mf_run_check_provenance(&t->run, cand[i], meta.provenance_json);
        t->step = meta.step;
        t->data_pos = meta.data_pos;
        if (t->wrank == 0) mf_log_always("resumed from %s at step %lld", cand[i], (long long)t->step);
        mf_train_meta_free(&meta);
        break;
    }
    mf_host_copy_free(&t->ps, &hp, &ho);
    if (i == n) mf_run_no_readable(&t->run, n);
    mf_run_candidates_free(cand, n);
}

/* ----------------------------------------------------------------- output */

static void write_student(trainer *t) {
    if (t->replica != 0) return;
    mf_params hp;
    mf_host_copy_get(&t->ps, NULL, &hp, NULL); /* a device backend's weights, downloaded */
    mf_tensor_ref *refs = mf_calloc((size_t)(t->ps.n + 1), sizeof *refs);
    int n = 0;
    for (int i = 0; i < hp.n; i++) {
        if (i == t->shared_embed) continue;
        const mf_param *q = &hp.p[i];
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
    mf_host_copy_free(&t->ps, &hp, NULL);
}

/* ----------------------------------------------------------------- the loop */

/* The step's line of --log; with more than one rank, every rank's seconds
 * waiting for pipeline neighbours (wait_s: the bubble) and in the gradient sums
 * and norm (sync_s: waiting for the other stages and replicas, and the sums). */
static void log_step(trainer *t, double loss, double gnorm, double lr, double secs, double wait, double sync) {
    double *w = NULL, *y = NULL;
    if (t->wsize > 1) {
        w = mf_malloc((size_t)t->wsize * sizeof *w);
        y = mf_malloc((size_t)t->wsize * sizeof *y);
        mf_coll_gather_f64(&t->c_world, wait, w);
        mf_coll_gather_f64(&t->c_world, sync, y);
    }
    if (t->wrank != 0) { free(w); free(y); return; }
    double tps = (double)t->o.batch * t->o.ctx / secs;
    fprintf(t->logf, "{\"step\":%lld,\"loss\":%.8g,\"lr\":%.6g,\"grad_norm\":%.6g,\"tokens_per_s\":%.2f,\"tokens\":%lld",
            (long long)t->step, loss, lr, gnorm, tps, (long long)(t->step * t->o.batch * t->o.ctx));
    for (int k = 0; w && k < 2; k++) {
        fprintf(t->logf, ",\"%s\":[", k ? "sync_s" : "wait_s");
        for (int r = 0; r < t->wsize; r++) fprintf(t->logf, "%s%.4f", r ? "," : "", (k ? y : w)[r]);
        fputc(']', t->logf);
    }
    fprintf(t->logf, "}\n");
    free(w);
    free(y);
    fflush(t->logf);
    mf_log("step %lld/%lld loss %.5f lr %.3g grad-norm %.4f %.0f tokens/s", (long long)t->step, (long long)t->steps, loss, lr, gnorm, tps);
}

/* After the update: every weight finite on every rank, or the job stops before
 * anything is written. */
static void check_weights(trainer *t) {
    mf_err err;
    char where[64];
    snprintf(where, sizeof where, "distill: step %lld", (long long)t->step + 1);
    int bad = mf_params_check_finite(&t->ps, where, &err) != 0;
    if (mf_coll_any(&t->c_world, bad)) {
        if (bad) mf_fatal("%s; stopping before a checkpoint is written", err.msg);
        mf_fatal("distill: step %lld: another rank found a non-finite weight; stopping", (long long)t->step + 1);
    }
}

/* Forward F(j) of micro-batch j: its k windows, each into its slot (j mod
 * mb_slots, window i); the hidden-state losses right after each window. */
static double forward_micro(trainer *t, int j, int32_t *in, double norm) {
    int T = t->o.ctx, per = t->o.batch / t->o.dp;
    double loss = 0;
    for (int i = 0; i < t->k; i++) {
        int64_t g = t->data_pos + (int64_t)t->replica * per + (int64_t)j * t->k + i;
        int64_t w = mf_epochs_at(&t->order, g);
        const int32_t *win = t->ids + (size_t)w * T;
        in[0] = t->student.model->cfg.bos_id;
        memcpy(in + 1, win, (size_t)(T - 1) * sizeof *in);
        int slot = (j % t->mb_slots) * t->k + i;
        loss += forward_window(t, slot, w, in, win, norm);
        if (t->hm.n) loss += mf_distill_hidden_losses(t, slot, norm);
    }
    return loss;
}

/* Backward B(j) of micro-batch j, window by window; the step's last window
 * starts the data-parallel sums. */
static void backward_micro(trainer *t, int j) {
    const mf_model *s = t->student.model;
    for (int i = 0; i < t->k; i++) {
        int slot = (j % t->mb_slots) * t->k + i;
        const float *const *dlayer = NULL;
        if (t->hm.n) dlayer = (const float *const *)(t->hm.grad + (size_t)slot * s->cfg.n_layers + s->layer_begin);
        backward_window(t, slot, dlayer, j == t->m - 1 && i == t->k - 1);
    }
}

/* Forwards this stage runs before its first backward: 1F1B min(P-s-1, m);
 * GPipe all m; one stage: none (each micro-batch forward then backward). */
static int warmup_forwards(int onef1b, int P, int stage, int m) {
    if (P == 1) return 0;
    if (!onef1b) return m;
    return P - stage - 1 < m ? P - stage - 1 : m;
}

/* One optimizer step over this replica's m micro-batches: w warm-up forwards,
 * then F(j), B(j-w) alternating, then the last w backwards (1F1B: at most
 * P-s micro-batches alive on stage s; GPipe: w = m). Backwards go in
 * micro-batch order either way, so gradients accumulate in window order and
 * equal running the windows one at a time. */
static void train_step(trainer *t, int32_t *in) {
    int m = t->m, w = warmup_forwards(t->onef1b, t->P, t->stage, m);
    double norm = (double)t->o.batch * t->o.ctx, loss = 0, t0 = mf_now();
    t->student.pipe.wait_s = t->teacher.pipe.wait_s = 0;
    mf_params_zero_grad(&t->ps);
    for (int j = 0; j < w; j++) loss += forward_micro(t, j, in, norm);
    for (int j = w; j < m; j++) {
        loss += forward_micro(t, j, in, norm);
        backward_micro(t, j - w);
    }
    for (int j = m - w; j < m; j++) backward_micro(t, j);
    mf_pipe_flush(&t->student.pipe);
    mf_pipe_flush(&t->teacher.pipe);
    double wait = t->student.pipe.wait_s + t->teacher.pipe.wait_s, t_sync = mf_now();
    reduce_grads(t);
    double gnorm = grad_norm(t);
    loss = mf_coll_sum_f64(&t->c_world, loss);
    double sync = mf_now() - t_sync;
    if (!isfinite(loss) || !isfinite(gnorm)) /* the same values on every rank: all stop here */
        mf_fatal("distill: step %lld: the loss is %g and the gradient norm %g; stopping before the weights are updated "
                 "(the last checkpoint is intact; try a lower --lr or --clip)", (long long)t->step + 1, loss, gnorm);
    float clip = mf_clip_factor(gnorm, t->o.clip);
    double lr = mf_lr_at(&t->sched, t->step);
    mf_adamw_step(&t->opt, &t->ps, lr, clip);
    check_weights(t);
    t->step++;
    t->data_pos += t->o.batch;
    log_step(t, loss, gnorm, lr, mf_now() - t0, wait, sync);
}

static void train(trainer *t) {
    int T = t->o.ctx;
    int32_t *in = mf_malloc((size_t)T * sizeof *in);
    mf_progress prog;
    mf_progress_start(&prog, "distill", (long)t->steps);
    while (t->step < t->steps) {
        char phase[64];
        snprintf(phase, sizeof phase, "step %lld", (long long)t->step + 1);
        mf_watchdog_kick(t->wd, phase);
        double t0 = mf_now();
        train_step(t, in);
        mf_watchdog_step_time(t->wd, mf_now() - t0);
        mf_watchdog_kick(t->wd, "checkpoint or stop agreement");
        int sig = mf_run_stop_agreed(&t->run), cap = mf_run_at_limit(&t->run, t->step) && t->step < t->steps;
        if (mf_run_ckpt_due(&t->run, t->step) || sig || cap) save_checkpoint(t);
        if (sig || cap) {
            if (t->wrank == 0 && sig) mf_log_always("signal %d: checkpoint written at step %lld, exiting (resume with --resume)", sig, (long long)t->step);
            if (t->wrank == 0 && !sig) mf_log_always("--max-steps %lld: checkpoint written at step %lld, exiting (resume with --resume)",
                                                     (long long)t->run.max_steps, (long long)t->step);
            break;
        }
        if (t->wrank == 0) mf_progress_update(&prog, (long)t->step, "steps");
    }
    mf_watchdog_disarm(t->wd);
    free(in);
}

/* ----------------------------------------------------------------- set-up */

static void split_ranks(trainer *t, MPI_Comm world) {
    t->world = world;
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

/* --schedule and --micro-batches: m micro-batches of k windows per replica and
 * step; micro-batches in flight on this stage (after its warm-up forwards). */
static void choose_schedule(trainer *t) {
    const mf_distill_opts *o = &t->o;
    int per = o->batch / o->dp;
    if (!o->schedule || strcmp(o->schedule, "1f1b") == 0) t->onef1b = 1;
    else if (strcmp(o->schedule, "gpipe") == 0) t->onef1b = 0;
    else mf_fatal("distill: --schedule '%s' is not 1f1b or gpipe", o->schedule);
    t->m = o->micro_batches > 0 ? o->micro_batches : per;
    if (o->micro_batches < 0 || per % t->m != 0)
        mf_fatal("distill: --micro-batches %d must divide the windows per replica (--batch %d / --dp %d = %d)", o->micro_batches,
                 o->batch, o->dp, per);
    t->k = per / t->m;
    int w = warmup_forwards(t->onef1b, t->P, t->stage, t->m);
    t->mb_slots = w + 1 < t->m ? w + 1 : t->m;
}

/* The joint layout (train/partition.h): student bounds sb and teacher bounds tb
 * [P+1], the same on every rank (computed from the two configs alone). */
static void joint_layout(trainer *t, int *sb, int *tb) {
    const mf_distill_opts *o = &t->o;
    mf_err err;
    mf_source *ts = mf_source_open(o->teacher, &err);
    if (!ts) mf_fatal_err(&err);
    mf_source *ss = mf_source_open(o->student, &err);
    if (!ss) mf_fatal_err(&err);
    int Lt = ts->cfg.n_layers, Ls = ss->cfg.n_layers;
    int *map = mf_malloc((size_t)(Ls > 0 ? Ls : 1) * sizeof *map);
    int mapped = mf_distill_layer_map(o->student, Lt, Ls, map, NULL);
    mf_joint_model jm = {&ts->cfg, &ss->cfg, mapped ? map : NULL, o->ctx, t->k, t->m, t->onef1b, o->recompute, o->topk};
    if (mf_joint_partition(&jm, t->P, o->stage_mem_mib * 1048576.0, sb, tb, &err) != 0)
        mf_fatal("distill: %s%s", err.msg, o->stage_mem_mib > 0 ? " (--stage-memory)" : "");
    for (int s = 0; s < t->P && t->wrank == 0; s++) {
        mf_stage_cost c = mf_joint_stage_cost(&jm, s, t->P, sb[s], sb[s + 1], tb[s], tb[s + 1]);
        mf_log("distill: stage %d: student layers [%d, %d), teacher [%d, %d)%s; modelled %.3g GFLOP per step, %.1f MiB", s,
               sb[s], sb[s + 1], tb[s], tb[s + 1], mapped ? "" : " (no layer map: proportional)", c.flops / 1e9,
               c.bytes / 1048576.0);
    }
    free(map);
    mf_source_close(ss);
    mf_source_close(ts);
}

static void open_models(trainer *t) {
    const mf_distill_opts *o = &t->o;
    const mf_backend *be = mf_backend_get(o->backend);
    if (!be) mf_fatal("distill: --backend '%s' is not one of %s", o->backend, mf_backend_names());
    mf_weights tw;
    if (mf_weights_parse(o->teacher_weights ? o->teacher_weights : "auto", &tw) != 0)
        mf_fatal("distill: --teacher-weights '%s' is not one of auto, bf16, f32", o->teacher_weights);
    int *sb = mf_malloc((size_t)(t->P + 1) * sizeof *sb), *tb = mf_malloc((size_t)(t->P + 1) * sizeof *tb);
    joint_layout(t, sb, tb);
    mf_stage_open_full(&t->teacher, o->teacher, t->pipe, be, o->ctx, o->ctx, tw, tb); /* frozen: may be 16-bit */
    mf_stage_open_bounds(&t->student, o->student, t->pipe, be, o->ctx, o->ctx, sb);
    free(sb);
    free(tb);
    const mf_config *sc = &t->student.model->cfg, *tc = &t->teacher.model->cfg;
    if (sc->vocab_size != tc->vocab_size)
        mf_fatal("distill: student %s has vocabulary %d, teacher %s has %d", o->student, sc->vocab_size, o->teacher, tc->vocab_size);
    mf_stage_log_layout(&t->teacher, "teacher");
    mf_stage_log_layout(&t->student, "student");
    mf_coll_init(&t->c_pipe, t->pipe, be);
    mf_coll_init(&t->c_dp, t->dp, be);
    mf_coll_buckets(&t->c_dp);
    mf_coll_init(&t->c_world, t->world, be);
}

static void setup(trainer *t, MPI_Comm world, size_t n_ids) {
    const mf_distill_opts *o = &t->o;
    split_ranks(t, world);
    if (o->batch % o->dp != 0) mf_fatal("distill: --batch %d must be a multiple of --dp %d", o->batch, o->dp);
    choose_schedule(t);
    t->n_windows = (int64_t)(n_ids / (size_t)o->ctx);
    if (t->n_windows < 1) mf_fatal("distill: %s has %zu tokens, fewer than one window of --ctx %d", o->text, n_ids, o->ctx);
    open_models(t);
    const mf_config *sc = &t->student.model->cfg;
    mf_err err;
    t->n_ts = t->mb_slots * t->k;
    t->ts = mf_calloc((size_t)t->n_ts, sizeof *t->ts);
    t->dxs = mf_calloc((size_t)t->n_ts, sizeof *t->dxs);
    for (int j = 0; j < t->n_ts; j++) {
        if (!(t->ts[j] = mf_train_state_new(t->student.model, o->ctx, o->recompute, &err))) mf_fatal_err(&err);
        t->dxs[j] = t->student.model->be->alloc((size_t)o->ctx * sc->dim * sizeof(float));
    }
    mf_log("distill: stage %d of %d (replica %d): %s, %d micro-batch(es) of %d window(s), at most %d in flight (%.1f MiB of "
           "training state)", t->stage, t->P, t->replica, t->onef1b ? "1F1B" : "GPipe", t->m, t->k, t->mb_slots,
           t->n_ts * (double)t->ts[0]->bytes / 1048576.0);
    mf_params_from_model(&t->ps, t->student.model);
    t->bucket = mf_calloc((size_t)t->ps.n_layers + 1, sizeof *t->bucket);
    mf_coll_req_init(t->bucket, t->ps.n_layers + 1);
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
    mf_epochs_init(&t->order, o->seed, 0, t->n_windows);
    t->x = t->student.model->be->alloc((size_t)o->ctx * sc->dim * sizeof(float)); /* received: backend memory */
    mf_run_init(&t->run, "distill", t->world, o->ckpt_dir, o->ckpt_every, o->keep);
    t->wd = mf_watchdog_start("distill", t->wrank, o->watchdog);
    mf_run_set_provenance(&t->run, t->student.model->be->name, t->P, o->dp);
    mf_run_set_layers(&t->run, t->student.pipe.bounds, t->P);
    t->run.max_steps = o->max_steps;
    set_options(t);
    if (t->wrank == 0) {
        t->logf = fopen(o->log, o->resume ? "a" : "w");
        if (!t->logf) mf_fatal("distill: cannot write --log %s: %s", o->log, strerror(errno));
        mf_log("distill: %lld steps x %d windows x %d tokens (%llu tokens), %d replica(s) x %d stage(s), %zu student parameters on rank 0",
               (long long)t->steps, o->batch, o->ctx, (unsigned long long)t->steps * o->batch * o->ctx, o->dp, t->P, t->ps.total);
    }
    if (o->hidden > 0) mf_distill_hidden_init(t);
    if (o->topk > 0) {
        if (o->hidden > 0) mf_fatal("distill: --teacher-topk and --hidden cannot be combined (hidden states need the teacher forward)");
        if (o->topk > sc->vocab_size) mf_fatal("distill: --teacher-topk %d exceeds the vocabulary (%d)", o->topk, sc->vocab_size);
        mf_distill_topk_open(t);
    }
    if (o->resume) resume(t);
}

static void teardown(trainer *t) {
    mf_watchdog_stop(t->wd);
    mf_run_free(&t->run);
    if (t->logf) fclose(t->logf);
    const mf_backend *be = t->student.model->be;
    if (t->x) be->free(t->x);
    mf_epochs_free(&t->order);
    mf_distill_hidden_free(t);
    if (t->o.topk > 0 && t->student.pipe.last) mf_tcache_close(&t->tc);
    free(t->tk_ids); free(t->tk_logits);
    if (t->tk_dev) be->free(t->tk_dev);
    mf_adamw_free(&t->opt);
    mf_params_free(&t->ps);
    free(t->bucket);
    for (int j = 0; j < t->n_ts; j++) { mf_train_state_free(t->ts[j]); be->free(t->dxs[j]); }
    free(t->ts);
    free(t->dxs);
    mf_stage_close(&t->student);
    mf_stage_close(&t->teacher);
    mf_coll_free(&t->c_dp);
    mf_coll_free(&t->c_pipe);
    mf_coll_free(&t->c_world);
    MPI_Comm_free(&t->pipe);
    MPI_Comm_free(&t->dp);
}

void mf_distill_run(const mf_distill_opts *o, MPI_Comm world, const int32_t *ids, size_t n, const char *text_id,
                    mf_distill_result *res) {
    trainer t;
    memset(&t, 0, sizeof t);
    t.o = *o;
    t.ids = ids;
    t.text_id = text_id;
    setup(&t, world, n);
    double t0 = mf_now();
    int64_t start = t.step;
    train(&t);
    res->seconds = mf_now() - t0;
    res->steps = t.steps;
    res->steps_done = t.step - start;
    res->finished = t.step >= t.steps;
    if (res->finished) write_student(&t);
    teardown(&t);
}
