/* fuse_run.c - FuseGPT fusion of a whole model: the loop, the window, the
 * training step (see fuse_run.h). Checkpoints and resume: fuse_ckpt.c. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress/fuse_internal.h"
#include "compress/macro_influence.h"
#include "compress/prune.h"
#include "hf_collective.h"
#include "tags.h"
#include "util/log.h"
#include "version.h"

/* ----------------------------------------------------------------- layout */

static mf_layer *model_layer(fuser *f, int l) { return &f->st.model->layers[l - f->st.model->layer_begin]; }
static int owns(const fuser *f, int l) { return l >= f->st.pipe.l0 && l < f->st.pipe.l1; }

/* ----------------------------------------------------------------- the window */

/* Gather the window of block f->pick onto every rank (backend memory, broadcast by its owner). */
static void gather_window(fuser *f) {
    int *alive = mf_malloc((size_t)f->L0 * sizeof *alive), n = 0, p = -1;
    for (int l = 0; l < f->L0; l++) if (!f->removed[l]) { if (l == f->pick) p = n; alive[n++] = l; }
    f->win_first = mf_fuse_window_span(n, p, f->o.window, &f->win_n);
    f->win_drop = p - f->win_first;
    f->win_orig = mf_malloc((size_t)f->win_n * sizeof *f->win_orig);
    f->blocks = mf_calloc((size_t)f->win_n, sizeof *f->blocks);
    mf_layer_tensor lt[MF_LAYER_TENSORS];
    mf_layer_tensors(&f->st.model->cfg, lt);
    for (int k = 0; k < f->win_n; k++) {
        int l = f->win_orig[k] = alive[f->win_first + k], o = mf_pipe_owner(&f->st.pipe, l);
        for (int i = 0; i < MF_LAYER_TENSORS; i++) {
            if (lt[i].is_bias && !f->st.model->cfg.qkv_bias) continue;
            size_t cnt = (size_t)lt[i].d0 * (size_t)(lt[i].d1 ? lt[i].d1 : 1);
            float *b = f->st.model->be->alloc(cnt * sizeof *b);
            if (o == f->rank) f->st.model->be->copy(b, *mf_layer_slot(model_layer(f, l), &lt[i]), cnt * sizeof *b);
            mf_coll_bcast_f32(&f->coll, b, cnt, o);
            *mf_layer_slot(&f->blocks[k], &lt[i]) = b;
        }
    }
    free(alive);
}

static void free_window(fuser *f) {
    mf_fuse_window_free(&f->fw);
    mf_layer_tensor lt[MF_LAYER_TENSORS];
    mf_layer_tensors(&f->st.model->cfg, lt);
    for (int k = 0; k < f->win_n; k++)
        for (int i = 0; i < MF_LAYER_TENSORS; i++) {
            float *b = *mf_layer_slot(&f->blocks[k], &lt[i]);
            if (b) f->st.model->be->free(b);
        }
    free(f->blocks); free(f->win_orig);
    f->blocks = NULL;
    f->win_orig = NULL;
    mf_adamw_free(&f->opt_g);
    mf_adamw_free(&f->opt_b);
}

/* Window inputs of every sample (pipelined prefix forward), sent to their owners;
 * then each owner computes the teacher outputs. */
static void window_data(fuser *f) {
    int T = f->T, N = f->o.samples, last = f->size - 1;
    size_t n = (size_t)T * f->D;
    unsigned char *skip = mf_malloc((size_t)f->L0);
    for (int l = 0; l < f->L0; l++) skip[l] = f->removed[l] || l >= f->win_orig[0];
    MPI_Request *req = mf_malloc((size_t)(f->n_own + 1) * sizeof *req);
    int nreq = 0;
    for (int s = f->rank; s < N && f->rank != last; s += f->size)
        MPI_Irecv(f->X[s / f->size], (int)n, MPI_FLOAT, last, MF_TAG_FUSE_X, f->comm, &req[nreq++]);
    int32_t *in = mf_malloc((size_t)T * sizeof *in);
    float *xbuf = NULL;
    size_t xcap = 0;
    for (int s = 0; s < N; s++) {
        mf_watchdog_kick(f->wd, "window inputs");
        in[0] = f->st.model->cfg.bos_id;
        memcpy(in + 1, f->ids + (size_t)s * T, (size_t)(T - 1) * sizeof *in);
        if (!mf_stage_forward_ex(&f->st, in, T, 0, MF_TAG_REF, skip, 0)) continue;
        const float *x = mf_stage_to_host(&f->st, f->st.st->x, n, &xbuf, &xcap);
        if (s % f->size == f->rank) memcpy(f->X[s / f->size], x, n * sizeof(float));
        else MPI_Send(x, (int)n, MPI_FLOAT, s % f->size, MF_TAG_FUSE_X, f->comm);
    }
    mf_pipe_flush(&f->st.pipe);
    MPI_Waitall(nreq, req, MPI_STATUSES_IGNORE);
    for (int k = 0; k < f->n_own; k++) mf_fuse_teacher(&f->fw, f->X[k], T, f->Tg[k]);
    free(req); free(in); free(skip); free(xbuf);
}

/* ----------------------------------------------------------------- one step */

/* Bring this rank's batch elements (j = rank, rank + P, ...) from their owners. */
static void exchange_batch(fuser *f, const int *batch) {
    int B = f->o.batch;
    size_t n = (size_t)f->T * f->D;
    MPI_Request *req = mf_malloc((size_t)(4 * B + 1) * sizeof *req);
    int nreq = 0;
    for (int j = 0; j < B; j++) {
        int s = batch[j], o = s % f->size, w = j % f->size, jl = j / f->size;
        if (w == f->rank) {
            if (o == f->rank) { f->xp[jl] = f->X[s / f->size]; f->tp[jl] = f->Tg[s / f->size]; continue; }
            MPI_Irecv(f->xin[jl], (int)n, MPI_FLOAT, o, MF_TAG_FUSE_BATCH_X, f->comm, &req[nreq++]);
            MPI_Irecv(f->tin[jl], (int)n, MPI_FLOAT, o, MF_TAG_FUSE_BATCH_T, f->comm, &req[nreq++]);
            f->xp[jl] = f->xin[jl];
            f->tp[jl] = f->tin[jl];
        } else if (o == f->rank) {
            MPI_Isend(f->X[s / f->size], (int)n, MPI_FLOAT, w, MF_TAG_FUSE_BATCH_X, f->comm, &req[nreq++]);
            MPI_Isend(f->Tg[s / f->size], (int)n, MPI_FLOAT, w, MF_TAG_FUSE_BATCH_T, f->comm, &req[nreq++]);
        }
    }
    MPI_Waitall(nreq, req, MPI_STATUSES_IGNORE);
    free(req);
}

/* Loss of the batch and the gradient w.r.t. this rank's outputs (into the slots'
 * dS). S and dS are backend memory, the teacher outputs f->tp host memory. */
static double batch_loss(fuser *f, const float **S, float **dS) {
    int B = f->o.batch, T = f->T, D = f->D;
    size_t n = (size_t)T * D;
    const mf_backend *be = f->st.model->be;
    double loss = 0;
    if (f->o.loss == MF_FUSE_LOSS_KL_BATCH) { /* every rank sees the whole batch: same loss bits for any P */
        for (int j = 0; j < B; j++) {
            int w = j % f->size, jl = j / f->size;
            if (w == f->rank) {
                be->copy(f->Sall + j * n, S[jl], n * sizeof(float));
                be->upload(f->Tall + j * n, f->tp[jl], n * sizeof(float));
            }
            mf_coll_bcast_f32(&f->coll, f->Sall + j * n, n, w);
            mf_coll_bcast_f32(&f->coll, f->Tall + j * n, n, w);
        }
        loss = be->loss_kl_batch(f->Sall, f->Tall, B, n, B, f->dSall);
        for (int j = f->rank; j < B; j += f->size) be->copy(dS[j / f->size], f->dSall + j * n, n * sizeof(float));
        return loss;
    }
    for (int j = f->rank; j < B; j += f->size) {
        int jl = j / f->size;
        const float *t = f->tp[jl];
        if (!be->is_host) {
            be->upload(f->tdev, t, n * sizeof(float));
            t = f->tdev;
        }
        loss += f->o.loss == MF_FUSE_LOSS_NMSE ? be->loss_nmse(S[jl], t, T, D, (double)B * T, dS[jl])
                                               : be->loss_cosine(S[jl], t, T, D, (double)B * T, dS[jl]);
    }
    return mf_coll_sum_f64(&f->coll, loss);
}

static double train_step(fuser *f, int *batch, float **dS) {
    int B = f->o.batch;
    double t0 = mf_now();
    for (int j = 0; j < B; j++) batch[j] = (int)mf_epochs_at(&f->order_s, f->step * B + j);
    exchange_batch(f, batch);
    mf_fuse_zero_grad(&f->fw);
    mf_fuse_materialize(&f->fw);
    const float **S = mf_calloc((size_t)f->n_slots, sizeof *S);
    for (int j = f->rank; j < B; j += f->size) S[j / f->size] = mf_fuse_forward(&f->fw, j / f->size, f->xp[j / f->size], f->T);
    double loss = batch_loss(f, S, dS);
    for (int j = f->rank; j < B; j += f->size) mf_fuse_backward(&f->fw, j / f->size, dS[j / f->size]);
    free(S);
    mf_fuse_param_grads(&f->fw);
    mf_coll_sum(&f->coll, f->fw.grad_flat, f->fw.grad_n); /* one data-parallel sum of every adapter gradient */
    double lr_g = mf_lr_at(&f->sched_g, f->step), lr_b = mf_lr_at(&f->sched_b, f->step);
    mf_adamw_step(&f->opt_g, &f->fw.gates, lr_g, 1.0f);
    mf_adamw_step(&f->opt_b, &f->fw.base, lr_b, 1.0f);
    f->step++;
    f->gstep++;
    f->tokens += (int64_t)B * f->T;
    if (f->rank == 0) {
        double secs = mf_now() - t0, tps = (double)B * f->T / secs;
        fprintf(f->logf, "{\"iteration\":%d,\"block\":%d,\"step\":%lld,\"loss\":%.8g,\"lr\":%.6g,\"lr_base\":%.6g,"
                "\"tokens_per_s\":%.2f,\"tokens\":%lld}\n", f->it + 1, f->pick, (long long)f->step, loss, lr_g, lr_b, tps,
                (long long)f->tokens);
        fflush(f->logf);
    }
    return loss;
}

/* ----------------------------------------------------------------- set-up per iteration */

void mf_fuser_start_window(fuser *f) {
    gather_window(f);
    mf_err err;
    if (mf_fuse_window_init(&f->fw, f->st.model->be, &f->st.model->cfg, f->blocks, f->win_orig, f->win_n, f->win_drop, f->o.rank,
                            f->o.seed + (uint64_t)f->it, f->T, f->n_slots, f->o.recompute, &err) != 0)
        mf_fatal_err(&err);
    mf_adamw_opts ao;
    mf_adamw_defaults(&ao);
    ao.beta1 = 0.9;
    ao.beta2 = 0.95;
    ao.eps = 1e-8;
    ao.weight_decay = 0;
    mf_adamw_init(&f->opt_g, &f->fw.gates, &ao);
    mf_adamw_init(&f->opt_b, &f->fw.base, &ao);
    f->steps = (int64_t)f->o.epochs * (f->o.samples / f->o.batch);
    f->sched_g = (mf_lr_sched){.max_lr = f->o.lr, .min_lr = 0, .warmup = 0, .total = f->steps};
    f->sched_b = (mf_lr_sched){.max_lr = f->o.lr_base, .min_lr = 0, .warmup = 0, .total = f->steps};
    f->step = 0;
    mf_epochs_free(&f->order_s);
    mf_epochs_init(&f->order_s, f->o.seed, (uint64_t)f->it, f->o.samples);
    window_data(f);
}

static void fold_window(fuser *f) {
    mf_fuse_fold(&f->fw);
    mf_layer_tensor lt[MF_LAYER_TENSORS];
    mf_layer_tensors(&f->st.model->cfg, lt);
    for (int k = 0; k < f->win_n; k++) {
        int l = f->win_orig[k];
        f->touched[l] = 1;
        if (k == f->win_drop || !owns(f, l)) continue;
        for (int i = 0; i < MF_LAYER_TENSORS; i++) {
            float *src = *mf_layer_slot(&f->blocks[k], &lt[i]);
            if (src)
                f->st.model->be->copy(*mf_layer_slot(model_layer(f, l), &lt[i]), src,
                                      (size_t)lt[i].d0 * (lt[i].d1 ? lt[i].d1 : 1) * sizeof(float));
        }
    }
    f->removed[f->pick] = 1;
    f->order[f->it] = f->pick;
}

/* ----------------------------------------------------------------- output */

/* A float option as the user wrote it (0.01, not 0.009999999776482582) for JSON. */
static double float_as_written(float x) {
    char b[32];
    snprintf(b, sizeof b, "%.7g", (double)x);
    return strtod(b, NULL);
}

static void write_output(fuser *f, const char *tok) {
    mf_rankings rk = {0};
    rk.path = (char *)"fuse";
    rk.depth.n_mi_iter = f->o.drop;
    rk.depth.mi = f->mi;
    rk.depth.mi_order = f->order;
    mf_prune_opts po = {.drop_layers = f->o.drop, .metric = MF_DEPTH_MI, .align = 1};
    mf_prune_plan plan;
    mf_err err;
    if (mf_prune_plan_make(&plan, &f->st.model->cfg, &rk, &po, &err) != 0) mf_fatal_err(&err);
    json_t *dropped = json_array();
    for (int i = 0; i < f->o.drop; i++) json_array_append_new(dropped, json_integer(plan.dropped[i]));
    json_t *mf = json_pack("{s:s, s:s, s:s, s:o, s:s, s:i, s:i, s:i, s:i, s:f, s:f, s:s, s:I}", "version", MF_VERSION,
                           "command", "fuse", "fused_from", f->o.model, "dropped_layers", dropped,
                           "depth_metric", f->o.blocks ? "given" : "mi", "window", f->o.window, "rank", f->o.rank,
                           "samples", f->o.samples, "epochs", f->o.epochs, "lr", float_as_written(f->o.lr),
                           "lr_base", float_as_written(f->o.lr_base), "loss", f->o.loss_name,
                           "tokens", (json_int_t)f->tokens);
    if (tok) json_object_set_new(mf, "tokenizer", json_string(tok));
    json_t *extra = json_pack("{s:o}", "minifuse", mf);
    char *ex = json_dumps(extra, JSON_COMPACT);
    mf_tensor_ref *t;
    mf_model *tmp;
    int n = mf_prune_slice(&plan, mf_model_host(f->st.model, &tmp), &t); /* a device backend's weights, downloaded */
    mf_model_free(tmp);
    mf_hf_write_collective(f->o.out, f->comm, &plan.new_cfg, t, n, ex, f->o.force, "fuse");
    mf_prune_tensors_free(t, n);
    free(ex);
    json_decref(extra);
    mf_prune_plan_free(&plan);
}

/* ----------------------------------------------------------------- the loop */

/* Train the current window to the end (or a stop signal: returns 1). */
static int train_window(fuser *f) {
    int *batch = mf_malloc((size_t)f->o.batch * sizeof *batch);
    float **dS = mf_calloc((size_t)f->n_slots, sizeof *dS);
    const mf_backend *be = f->st.model->be;
    for (int k = 0; k < f->n_slots; k++) dS[k] = be->alloc((size_t)f->T * f->D * sizeof(float));
    mf_progress prog;
    char what[64];
    snprintf(what, sizeof what, "fuse block %d (%d/%d)", f->pick, f->it + 1, f->o.drop);
    mf_progress_start(&prog, what, (long)f->steps);
    mf_fuse_iter *r = &f->rec[f->it];
    int stop = 0;
    while (f->step < f->steps) {
        char phase[96];
        snprintf(phase, sizeof phase, "block %d step %lld", f->pick, (long long)f->step + 1);
        mf_watchdog_kick(f->wd, phase);
        double t0 = mf_now();
        double loss = train_step(f, batch, dS);
        r->sec_train += mf_now() - t0;
        mf_watchdog_step_time(f->wd, mf_now() - t0);
        mf_watchdog_kick(f->wd, "checkpoint or stop agreement");
        if (f->step == 1 || r->loss_first == 0) r->loss_first = loss;
        r->loss_last = loss;
        int any = mf_run_stop_agreed(&f->run), cap = mf_run_at_limit(&f->run, f->gstep) && f->step < f->steps;
        if (any || cap || (mf_run_ckpt_due(&f->run, f->step) && f->step < f->steps)) mf_fuser_save(f, 1);
        if (any || cap) {
            if (f->rank == 0 && any) mf_log_always("signal %d: checkpoint written at block %d step %lld, exiting (resume with --resume)",
                                     any, f->pick, (long long)f->step);
            if (f->rank == 0 && !any) mf_log_always("--max-steps %lld: checkpoint %lld written at block %d step %lld, exiting (resume "
                                                    "with --resume)", (long long)f->run.max_steps, (long long)f->gstep, f->pick,
                                                    (long long)f->step);
            stop = 1;
            break;
        }
        if (f->rank == 0) mf_progress_update(&prog, (long)f->step, "steps");
    }
    for (int k = 0; k < f->n_slots; k++) be->free(dS[k]);
    free(dS); free(batch);
    return stop;
}

/* resumed_mid: resume() rebuilt the current window and its adapters from a mid-iteration checkpoint. */
static int fuse_loop(fuser *f, int resumed_mid) {
    while (f->it < f->o.drop) {
        f->iter_t0 = mf_now();
        mf_fuse_iter *r = &f->rec[f->it];
        if (resumed_mid) {
            resumed_mid = 0;
            if (f->rank == 0) mf_log_always("resumed block %d (iteration %d) at step %lld", f->pick, f->it + 1, (long long)f->step);
        } else {
            double *row = f->mi + (size_t)f->it * f->L0;
            if (f->o.blocks) {
                for (int l = 0; l < f->L0; l++) row[l] = NAN;
                f->pick = f->o.blocks[f->it];
            } else {
                double t0 = mf_now();
                int stopped = mf_macro_influence(&f->st, f->ids, f->o.mi_samples, f->T, f->removed, row, mf_run_stop_flag(), f->wd);
                r->sec_mi += mf_now() - t0;
                if (stopped) {
                    if (f->rank == 0)
                        mf_log_always("signal %d during Macro Influence of iteration %d: exiting; --resume redoes it from the last "
                               "checkpoint (%d blocks removed)", (int)*mf_run_stop_flag(), f->it + 1, f->it);
                    return 1;
                }
                f->pick = mf_mi_argmin(row, f->removed, f->L0);
            }
            mf_fuser_start_window(f);
        }
        r->block = f->pick;
        r->first = f->win_orig[0];
        r->count = f->win_n;
        if (f->rank == 0) {
            double mi = f->mi[(size_t)f->it * f->L0 + f->pick];
            char why[48];
            if (isnan(mi)) snprintf(why, sizeof why, "from --blocks");
            else snprintf(why, sizeof why, "MI %.6f", mi);
            mf_log("fuse %d/%d: block %d (%s) into blocks %d..%d (%d in the window), %lld steps, %zu trainable", f->it + 1,
                   f->o.drop, f->pick, why, f->win_orig[0], f->win_orig[f->win_n - 1], f->win_n, (long long)f->steps,
                   mf_fuse_trainable(&f->fw));
        }
        if (train_window(f)) { free_window(f); return 1; }
        fold_window(f);
        f->it++;
        f->gstep++;
        free_window(f);
        r->seconds += mf_now() - f->iter_t0; /* plus the time before a resume inside this iteration */
        char parts[128] = ""; /* unknown for an iteration begun under an older checkpoint format */
        if (!isnan(r->sec_mi + r->sec_train))
            snprintf(parts, sizeof parts, " (Macro Influence %.1fs, training %.1fs, window set-up and fold %.1fs)", r->sec_mi,
                     r->sec_train, r->seconds - r->sec_mi - r->sec_train);
        if (f->rank == 0)
            mf_log("fuse %d/%d: block %d folded; loss %.6g -> %.6g in %.1fs%s", f->it, f->o.drop, r->block, r->loss_first,
                   r->loss_last, r->seconds, parts);
        mf_fuser_save(f, 0);
        int any = mf_run_stop_agreed(&f->run); /* a signal during the MI pass or the fold: stop at this checkpoint */
        if ((any || mf_run_at_limit(&f->run, f->gstep)) && f->it < f->o.drop) {
            if (f->rank == 0 && any) mf_log_always("signal %d: checkpoint written after block %d, exiting (resume with --resume)", any, r->block);
            if (f->rank == 0 && !any) mf_log_always("--max-steps %lld: checkpoint %lld written after block %d, exiting (resume with "
                                                    "--resume)", (long long)f->run.max_steps, (long long)f->gstep, r->block);
            return 1;
        }
    }
    return 0;
}

/* ----------------------------------------------------------------- set-up */

/* The model as in the file (again, after a failed resume attempt), writable. */
static void open_model(fuser *f) {
    const mf_backend *be = mf_backend_get(f->o.backend);
    if (!be) mf_fatal("fuse: --backend '%s' is not one of %s", f->o.backend, mf_backend_names());
    if (f->st.model) mf_stage_close(&f->st);
    mf_stage_open(&f->st, f->o.model, f->comm, be, f->o.ctx, f->o.ctx);
    mf_model_make_layers_writable(f->st.model);
}

static void setup(fuser *f, MPI_Comm comm, size_t n) {
    mf_fuse_opts *o = &f->o;
    f->comm = comm;
    MPI_Comm_rank(f->comm, &f->rank);
    MPI_Comm_size(f->comm, &f->size);
    if (n < (size_t)o->samples * o->ctx)
        mf_fatal("fuse: %s has %zu tokens, fewer than --samples %d x --ctx %d", o->text, n, o->samples, o->ctx);
    open_model(f);
    mf_coll_init(&f->coll, f->comm, f->st.model->be);
    mf_stage_log_layout(&f->st, "fuse");
    f->L0 = f->st.model->cfg.n_layers;
    f->T = o->ctx;
    f->D = f->st.model->cfg.dim;
    if (o->drop < 1 || o->drop >= f->L0) mf_fatal("fuse: --drop-layers %d must be between 1 and %d", o->drop, f->L0 - 1);
    if (o->blocks) for (int i = 0; i < o->drop; i++)
        if (o->blocks[i] >= f->L0) mf_fatal("fuse: --blocks entry %d is not a block index 0..%d", o->blocks[i], f->L0 - 1);
    f->removed = mf_calloc((size_t)f->L0, 1);
    f->touched = mf_calloc((size_t)f->L0, 1);
    f->order = mf_calloc((size_t)o->drop, sizeof *f->order);
    f->mi = mf_calloc((size_t)o->drop * f->L0, sizeof *f->mi);
    f->rec = mf_calloc((size_t)o->drop, sizeof *f->rec);
    mf_epochs_init(&f->order_s, o->seed, 0, o->samples);
    f->n_own = (o->samples - f->rank + f->size - 1) / f->size;
    if (f->n_own < 0) f->n_own = 0;
    size_t nx = (size_t)f->T * f->D;
    f->X = mf_calloc((size_t)f->n_own + 1, sizeof *f->X);
    f->Tg = mf_calloc((size_t)f->n_own + 1, sizeof *f->Tg);
    for (int k = 0; k < f->n_own; k++) { f->X[k] = mf_malloc(nx * sizeof(float)); f->Tg[k] = mf_malloc(nx * sizeof(float)); }
    f->n_slots = (o->batch + f->size - 1) / f->size;
    f->xin = mf_calloc((size_t)f->n_slots, sizeof *f->xin);
    f->tin = mf_calloc((size_t)f->n_slots, sizeof *f->tin);
    f->xp = mf_calloc((size_t)f->n_slots, sizeof *f->xp);
    f->tp = mf_calloc((size_t)f->n_slots, sizeof *f->tp);
    for (int k = 0; k < f->n_slots; k++) { f->xin[k] = mf_malloc(nx * sizeof(float)); f->tin[k] = mf_malloc(nx * sizeof(float)); }
    const mf_backend *be = f->st.model->be;
    if (o->loss == MF_FUSE_LOSS_KL_BATCH) { /* backend memory: the loss runs there */
        f->Sall = be->alloc((size_t)o->batch * nx * sizeof(float));
        f->Tall = be->alloc((size_t)o->batch * nx * sizeof(float));
        f->dSall = be->alloc((size_t)o->batch * nx * sizeof(float));
    }
    if (!be->is_host) f->tdev = be->alloc(nx * sizeof(float));
    mf_run_init(&f->run, "fuse", f->comm, o->ckpt_dir, o->ckpt_every, o->keep);
    f->wd = mf_watchdog_start("fuse", f->rank, o->watchdog);
    mf_run_set_provenance(&f->run, f->st.model->be->name, f->size, 1);
    mf_run_set_layers(&f->run, f->st.pipe.bounds, f->size);
    f->run.max_steps = o->max_steps;
    if (f->rank == 0) {
        f->logf = fopen(o->log, o->resume ? "a" : "w");
        if (!f->logf) mf_fatal("fuse: cannot write --log %s: %s", o->log, strerror(errno));
        mf_log("fuse: remove %d of %d blocks; window %d, rank %d, %d samples x %d tokens, %d epochs of %d steps (batch %d), "
               "loss %s, %d rank(s)", o->drop, f->L0, o->window, o->rank, o->samples, o->ctx, o->epochs,
               o->samples / o->batch, o->batch, o->loss_name, f->size);
    }
}

static void free_window(fuser *f);

static void teardown(fuser *f) {
    mf_watchdog_stop(f->wd);
    mf_run_free(&f->run);
    if (f->logf) fclose(f->logf);
    for (int k = 0; k < f->n_own; k++) { free(f->X[k]); free(f->Tg[k]); }
    for (int k = 0; k < f->n_slots; k++) { free(f->xin[k]); free(f->tin[k]); }
    free(f->X); free(f->Tg); free(f->xin); free(f->tin); free(f->xp); free(f->tp);
    const mf_backend *be = f->st.model->be;
    float *dev[] = {f->Sall, f->Tall, f->dSall, f->tdev};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) be->free(dev[i]);
    free(f->removed); free(f->touched);
    mf_epochs_free(&f->order_s);
    mf_coll_free(&f->coll);
    mf_stage_close(&f->st);
}

/* The newest checkpoint every rank can read (an unreadable or damaged one, its
 * blocks or, mid-iteration, its adapters, is skipped with a message and the
 * previous one tried). 1: resumed inside an iteration (the window rebuilt and
 * its adapters read), 0: after a fold or nothing to resume. */
static int resume(fuser *f, char *path, size_t cap) {
    char **cand;
    int n = mf_run_candidates(&f->run, &cand), mid = 0, i;
    if (n == 0 && f->rank == 0) mf_log("resume: no checkpoint in %s, starting fresh", f->o.ckpt_dir);
    for (i = 0; i < n; i++) {
        mf_err err;
        int rc = mf_fuser_resume_state(f, cand[i], &err);
        int touched = mf_coll_any(&f->coll, rc == -2); /* some rank read weights of a damaged checkpoint */
        if (!mf_run_read_ok(&f->run, cand[i], rc < 0, &err)) {
            if (touched) open_model(f);
            continue;
        }
        if (rc == 1) { /* the adapters of the iteration in progress */
            int wrc = mf_fuser_resume_window(f, cand[i], &err);
            if (!mf_run_read_ok(&f->run, cand[i], wrc, &err)) {
                free_window(f);
                open_model(f); /* this checkpoint's blocks were read into the model */
                continue;
            }
        }
        mid = rc;
        snprintf(path, cap, "%s", cand[i]);
        if (f->rank == 0) mf_log_always("resumed from %s: %d blocks removed%s", path, f->it, mid ? ", inside an iteration" : "");
        break;
    }
    if (n > 0 && i == n) mf_run_no_readable(&f->run, n);
    mf_run_candidates_free(cand, n);
    return mid;
}

int mf_fuse_loss_parse(const char *s) {
    if (strcmp(s, "kl-batch") == 0) return MF_FUSE_LOSS_KL_BATCH;
    if (strcmp(s, "nmse") == 0) return MF_FUSE_LOSS_NMSE;
    if (strcmp(s, "cosine") == 0) return MF_FUSE_LOSS_COSINE;
    return -1;
}

void mf_fuse_run(const mf_fuse_opts *o, MPI_Comm comm, const int32_t *ids, size_t n, const char *text_id,
                 mf_fuse_result *res) {
    fuser f;
    memset(&f, 0, sizeof f);
    f.o = *o;
    f.ids = ids;
    f.text_id = text_id;
    setup(&f, comm, n);
    char tok[4400], tok_abs[PATH_MAX];
    const char *tok_ref = NULL;
    if (mf_source_tokenizer_path(f.st.src, o->tokenizer, tok, sizeof tok) == 0 && realpath(tok, tok_abs)) tok_ref = tok_abs;
    int mid = 0;
    char ckpt[4400] = "";
    if (o->resume) mid = resume(&f, ckpt, sizeof ckpt);
    double t0 = mf_now();
    int stopped = fuse_loop(&f, mid);
    mf_watchdog_disarm(f.wd);
    memset(res, 0, sizeof *res);
    res->seconds = mf_now() - t0;
    if (!stopped) write_output(&f, tok_ref);
    res->finished = !stopped;
    res->n_layers_before = f.L0;
    res->removed = f.it;
    res->tokens = f.tokens;
    res->order = f.order;
    res->mi = f.mi;
    res->iters = f.rec;
    teardown(&f);
}

void mf_fuse_result_free(mf_fuse_result *res) {
    free(res->order); free(res->mi); free(res->iters);
    memset(res, 0, sizeof *res);
}
