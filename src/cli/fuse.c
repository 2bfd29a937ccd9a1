/* fuse.c - `minifuse fuse`: FuseGPT learnable layer fusion, restartable.
 *
 * Until --drop-layers blocks are gone, one iteration:
 *   1. Macro Influence of every surviving block on the first --mi-samples
 *      windows (pipelined, mpi/macro_influence.c); the least influential block
 *      is removed.
 *   2. Its window (--window blocks: half before, the rest after, shifted to
 *      stay inside the model) is gathered onto every rank (broadcast by the
 *      layers' owners): a window that crosses stage boundaries needs nothing
 *      special.
 *   3. The window's input for every training window (--samples) comes from a
 *      pipelined forward of the blocks before it; sample s lives on rank
 *      s mod P. Each rank computes the teacher output (the window with the
 *      block) of its samples.
 *   4. Local distillation, data-parallel over all ranks: each step takes a
 *      batch of --batch samples (the same permutation for any P), element j
 *      goes to rank j mod P (its input and target travel from the owner);
 *      W_eff = W + B A + (U V) * P is materialized, the student window runs
 *      forward and backward, the gradients of A, B, U, V and the norm scales
 *      are summed over ranks (MPI_Allreduce); Adam (0.9, 0.95), cosine to 0,
 *      two learning rates (--lr for the gates U V, --lr-base for A, B, norms).
 *   5. Fold: every receiving block's weights become W_eff (fp32); the owners
 *      keep them; the block is removed.
 * The model keeps its original stage partition; removed blocks are skipped.
 * Checkpoints (parallel HDF5, train/checkpoint.h): the weights of every block
 * changed so far under global names, the removal order and every iteration's
 * MI, and mid-iteration the trainable tensors with their Adam moments; one
 * after every fold and every --checkpoint-every steps. --resume continues at
 * the block and step where the run stopped, with identical results.
 * Output: a Hugging Face directory of an ordinary Llama with fewer layers. */
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
#include "compress/fuse.h"
#include "compress/prune.h"
#include "hf_collective.h"
#include "macro_influence.h"
#include "stage.h"
#include "train/checkpoint.h"
#include "train/optim.h"
#include "util/log.h"
#include "version.h"

enum { TAG_X = 40, TAG_BX = 41, TAG_BT = 42 };
enum { LOSS_KL_BATCH, LOSS_NMSE, LOSS_COSINE };

typedef struct fuse_opts {
    const char *model, *text, *out, *tokenizer, *ckpt_dir, *log, *loss_name, *blocks_s;
    int *blocks;               /* --blocks: removal order given, no MI (NULL: by MI) */
    int drop, window, rank, samples, mi_samples, epochs, ctx, batch, ckpt_every, keep, resume, recompute, force, json;
    float lr, lr_base;
    unsigned long long seed;
    int loss;
} fuse_opts;

/* One iteration's record (rank 0 prints it). */
typedef struct iter_rec {
    int block, first, count;
    double loss_first, loss_last, seconds;
    double sec_mi, sec_train; /* parts of seconds: the Macro Influence pass, the training steps */
} iter_rec;

static volatile int g_stop_signal; /* sig_atomic_t is int here; MI polls it through a const volatile int * */
static void on_signal(int sig) { g_stop_signal = sig; }

typedef struct fuser {
    fuse_opts o;
    MPI_Comm comm;
    int rank, size;
    mf_stage st;
    int L0, T, D;
    int32_t *ids;
    unsigned char *removed, *touched; /* [L0] */
    int it;                    /* blocks removed so far */
    char text_id[64];          /* identity of the training tokens (mf_cli_tokens_id) */
    int *order;                /* [drop] removal order (original indices) */
    double *mi;                /* [drop][L0] MI of each iteration */
    iter_rec *rec;             /* [drop] */
    double iter_t0;            /* when this process started the current iteration */
    /* samples: s lives on rank s % size, at index s / size */
    int n_own;
    float **X, **Tg;           /* [n_own][T][D] window input, teacher output */
    /* the current window */
    int pick, win_first, win_n, win_drop, *win_orig;
    mf_layer *blocks;          /* [win_n] gathered copies */
    mf_fuse_window fw;
    int n_slots;
    float **xin, **tin;        /* [n_slots] this rank's batch elements (receive buffers) */
    const float **xp, **tp;    /* [n_slots] where they are */
    float *Sall, *Tall, *dSall;/* [batch][T][D] (kl-batch) */
    float *dS;                 /* [T][D] */
    mf_adamw opt_g, opt_b;
    mf_lr_sched sched_g, sched_b;
    int64_t step, steps;       /* within the iteration */
    int64_t gstep;             /* optimizer steps + folds over the run: checkpoint numbering */
    int64_t tokens;            /* training tokens over the run */
    int64_t *perm, perm_epoch;
    FILE *logf;
} fuser;

/* ----------------------------------------------------------------- layout */

static mf_layer *model_layer(fuser *f, int l) { return &f->st.model->layers[l - f->st.model->layer_begin]; }
static int owns(const fuser *f, int l) { return l >= f->st.pipe.l0 && l < f->st.pipe.l1; }

/* ----------------------------------------------------------------- the window */

/* Gather the window of block f->pick onto every rank. */
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
            float *b = mf_malloc(cnt * sizeof *b);
            if (o == f->rank) memcpy(b, *mf_layer_slot(model_layer(f, l), &lt[i]), cnt * sizeof *b);
            if (f->size > 1) MPI_Bcast(b, (int)cnt, MPI_FLOAT, o, f->comm);
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
        for (int i = 0; i < MF_LAYER_TENSORS; i++) free(*mf_layer_slot(&f->blocks[k], &lt[i]));
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
        MPI_Irecv(f->X[s / f->size], (int)n, MPI_FLOAT, last, TAG_X, f->comm, &req[nreq++]);
    int32_t *in = mf_malloc((size_t)T * sizeof *in);
    for (int s = 0; s < N; s++) {
        in[0] = f->st.model->cfg.bos_id;
        memcpy(in + 1, f->ids + (size_t)s * T, (size_t)(T - 1) * sizeof *in);
        if (!mf_stage_forward_ex(&f->st, in, T, 0, 2, skip, 0)) continue;
        if (s % f->size == f->rank) memcpy(f->X[s / f->size], f->st.st->x, n * sizeof(float));
        else MPI_Send(f->st.st->x, (int)n, MPI_FLOAT, s % f->size, TAG_X, f->comm);
    }
    mf_pipe_flush(&f->st.pipe);
    MPI_Waitall(nreq, req, MPI_STATUSES_IGNORE);
    for (int k = 0; k < f->n_own; k++) mf_fuse_teacher(&f->fw, f->X[k], T, f->Tg[k]);
    free(req); free(in); free(skip);
}

/* ----------------------------------------------------------------- data order */

/* Sample at global position g of the iteration's stream: epochs are
 * permutations drawn from (seed, iteration, epoch) alone. */
static int sample_at(fuser *f, int64_t g) {
    int64_t N = f->o.samples, epoch = g / N;
    if (!f->perm || f->perm_epoch != epoch) {
        if (!f->perm) f->perm = mf_malloc((size_t)N * sizeof *f->perm);
        mf_rng_permutation(f->o.seed * 0x9E3779B97F4A7C15ull + (uint64_t)f->it * 0x100000001ull + (uint64_t)epoch, f->perm, N);
        f->perm_epoch = epoch;
    }
    return (int)f->perm[g % N];
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
            MPI_Irecv(f->xin[jl], (int)n, MPI_FLOAT, o, TAG_BX, f->comm, &req[nreq++]);
            MPI_Irecv(f->tin[jl], (int)n, MPI_FLOAT, o, TAG_BT, f->comm, &req[nreq++]);
            f->xp[jl] = f->xin[jl];
            f->tp[jl] = f->tin[jl];
        } else if (o == f->rank) {
            MPI_Isend(f->X[s / f->size], (int)n, MPI_FLOAT, w, TAG_BX, f->comm, &req[nreq++]);
            MPI_Isend(f->Tg[s / f->size], (int)n, MPI_FLOAT, w, TAG_BT, f->comm, &req[nreq++]);
        }
    }
    MPI_Waitall(nreq, req, MPI_STATUSES_IGNORE);
    free(req);
}

/* Loss of the batch and the gradient w.r.t. this rank's outputs (into the slots' dS). */
static double batch_loss(fuser *f, const float **S, float **dS) {
    int B = f->o.batch, T = f->T, D = f->D;
    size_t n = (size_t)T * D;
    const mf_backend *be = mf_backend_cpu();
    double loss = 0;
    if (f->o.loss == LOSS_KL_BATCH) { /* every rank sees the whole batch: same loss bits for any P */
        for (int j = 0; j < B; j++) {
            int w = j % f->size, jl = j / f->size;
            if (w == f->rank) {
                memcpy(f->Sall + j * n, S[jl], n * sizeof(float));
                memcpy(f->Tall + j * n, f->tp[jl], n * sizeof(float));
            }
            if (f->size > 1) {
                MPI_Bcast(f->Sall + j * n, (int)n, MPI_FLOAT, w, f->comm);
                MPI_Bcast(f->Tall + j * n, (int)n, MPI_FLOAT, w, f->comm);
            }
        }
        loss = be->loss_kl_batch(f->Sall, f->Tall, B, n, B, f->dSall);
        for (int j = f->rank; j < B; j += f->size) memcpy(dS[j / f->size], f->dSall + j * n, n * sizeof(float));
        return loss;
    }
    for (int j = f->rank; j < B; j += f->size) {
        int jl = j / f->size;
        loss += f->o.loss == LOSS_NMSE ? be->loss_nmse(S[jl], f->tp[jl], T, D, (double)B * T, dS[jl])
                                       : be->loss_cosine(S[jl], f->tp[jl], T, D, (double)B * T, dS[jl]);
    }
    if (f->size > 1) MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, f->comm);
    return loss;
}

static void allreduce_grads(fuser *f, mf_params *ps) {
    if (f->size == 1) return;
    for (int i = 0; i < ps->n; i++)
        MPI_Allreduce(MPI_IN_PLACE, ps->p[i].grad, (int)ps->p[i].numel, MPI_FLOAT, MPI_SUM, f->comm);
}

static double train_step(fuser *f, int *batch, float **dS) {
    int B = f->o.batch;
    double t0 = mf_now();
    for (int j = 0; j < B; j++) batch[j] = sample_at(f, f->step * B + j);
    exchange_batch(f, batch);
    mf_fuse_zero_grad(&f->fw);
    mf_fuse_materialize(&f->fw);
    const float **S = mf_calloc((size_t)f->n_slots, sizeof *S);
    for (int j = f->rank; j < B; j += f->size) S[j / f->size] = mf_fuse_forward(&f->fw, j / f->size, f->xp[j / f->size], f->T);
    double loss = batch_loss(f, S, dS);
    for (int j = f->rank; j < B; j += f->size) mf_fuse_backward(&f->fw, j / f->size, dS[j / f->size]);
    free(S);
    mf_fuse_param_grads(&f->fw);
    allreduce_grads(f, &f->fw.gates);
    allreduce_grads(f, &f->fw.base);
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

/* ----------------------------------------------------------------- checkpoints */

static void push_frozen(mf_params *v, const char *name, int ndim, int64_t d0, int64_t d1, float *data) {
    mf_params_push(v, name, d0, ndim == 2 ? d1 : 0, data, NULL);
}

/* This rank's blocks changed so far (and still there), as frozen tensors. */
static void frozen_view(fuser *f, mf_params *v) {
    memset(v, 0, sizeof *v);
    mf_layer_tensor lt[MF_LAYER_TENSORS];
    mf_layer_tensors(&f->st.model->cfg, lt);
    char name[160];
    for (int l = f->st.pipe.l0; l < f->st.pipe.l1; l++) {
        if (!f->touched[l] || f->removed[l]) continue;
        for (int i = 0; i < MF_LAYER_TENSORS; i++) {
            float *d = *mf_layer_slot(model_layer(f, l), &lt[i]);
            if (!d) continue;
            snprintf(name, sizeof name, "model.layers.%d.%s", l, lt[i].suffix);
            push_frozen(v, name, lt[i].d1 ? 2 : 1, lt[i].d0, lt[i].d1, d);
        }
    }
}

/* Checkpoint tensors: the frozen ones, then (rank 0, mid-iteration) the
 * trainable ones with their moments. opt view: NULL moments for frozen ones. */
static void ckpt_view(fuser *f, int with_frozen, int with_trainable, int trainable_here, mf_params *v, mf_adamw *o,
                      float *mi_buf) {
    memset(v, 0, sizeof *v);
    if (with_frozen) frozen_view(f, v);
    int rows = f->it + (with_trainable ? 1 : 0);
    if (trainable_here && rows > 0) {
        for (size_t i = 0; i < (size_t)rows * f->L0; i++) mi_buf[i] = (float)f->mi[i];
        push_frozen(v, "fuse.macro_influence", 2, rows, f->L0, mi_buf);
    }
    int nf = v->n;
    mf_params *lists[2] = {&f->fw.gates, &f->fw.base};
    mf_adamw *opts[2] = {&f->opt_g, &f->opt_b};
    if (with_trainable && trainable_here)
        for (int k = 0; k < 2; k++)
            for (int i = 0; i < lists[k]->n; i++) {
                mf_param *q = &lists[k]->p[i];
                push_frozen(v, q->name, q->ndim, q->shape[0], q->shape[1], q->data);
            }
    memset(o, 0, sizeof *o);
    mf_adamw_defaults(&o->o);
    o->o.beta2 = 0.95;
    o->o.weight_decay = 0;
    o->n = v->n;
    o->step = f->opt_g.step;
    o->numel = mf_calloc((size_t)v->n + 1, sizeof *o->numel);
    o->m = mf_calloc((size_t)v->n + 1, sizeof *o->m);
    o->v = mf_calloc((size_t)v->n + 1, sizeof *o->v);
    for (int i = 0; i < v->n; i++) o->numel[i] = v->p[i].numel;
    for (int k = 0, j = nf; with_trainable && trainable_here && k < 2; k++)
        for (int i = 0; i < lists[k]->n; i++, j++) { o->m[j] = opts[k]->m[i]; o->v[j] = opts[k]->v[i]; }
}

static void ckpt_view_free(mf_params *v, mf_adamw *o) {
    free(v->p); free(o->numel); free(o->m); free(o->v);
}

static char *state_json(fuser *f, int training) {
    json_t *rm = json_array(), *mi = json_array(), *tc = json_array();
    int rows = f->it + (training ? 1 : 0);
    for (int i = 0; i < f->it; i++) json_array_append_new(rm, json_integer(f->order[i]));
    for (int i = 0; i < rows; i++) {
        json_t *row = json_array();
        for (int l = 0; l < f->L0; l++) {
            double v = f->mi[(size_t)i * f->L0 + l];
            json_array_append_new(row, isnan(v) ? json_null() : json_real(v));
        }
        json_array_append_new(mi, row);
    }
    for (int l = 0; l < f->L0; l++) if (f->touched[l]) json_array_append_new(tc, json_integer(l));
    json_t *j = json_pack("{s:s, s:i, s:o, s:o, s:o, s:I, s:I}", "phase", training ? "train" : "folded", "iteration",
                          f->it, "removed", rm, "touched", tc, "mi", mi, "step", (json_int_t)(training ? f->step : 0),
                          "tokens", (json_int_t)f->tokens);
    if (training) json_object_set_new(j, "block", json_integer(f->pick));
    /* what the --json summary reports per iteration, so a resumed run still reports it */
    json_t *recs = json_array();
    for (int i = 0; i < rows; i++) {
        const iter_rec *r = &f->rec[i];
        double secs = r->seconds + (i == f->it ? mf_now() - f->iter_t0 : 0); /* the current one: so far */
        json_t *rec = json_pack("[i, i, f, f, f]", r->first, r->count, r->loss_first, r->loss_last, secs);
        json_array_append_new(rec, isnan(r->sec_mi) ? json_null() : json_real(r->sec_mi));
        json_array_append_new(rec, isnan(r->sec_train) ? json_null() : json_real(r->sec_train));
        json_array_append_new(recs, rec);
    }
    json_object_set_new(j, "records", recs);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

/* The options that decide the result, as stored in the checkpoint and compared on --resume. */
static void options_json(const fuser *f, char *buf, size_t cap) {
    snprintf(buf, cap, "{\"drop_layers\":%d,\"window\":%d,\"rank\":%d,\"samples\":%d,\"mi_samples\":%d,\"epochs\":%d,"
             "\"ctx\":%d,\"batch\":%d,\"lr\":%g,\"lr_base\":%g,\"loss\":\"%s\",\"seed\":%llu,\"text\":\"%s\"}", f->o.drop,
             f->o.window, f->o.rank, f->o.samples, f->o.mi_samples, f->o.epochs, f->o.ctx, f->o.batch, f->o.lr, f->o.lr_base,
             f->o.loss_name, f->o.seed, f->text_id);
}

static void save_checkpoint(fuser *f, int training) {
    mf_params v;
    mf_adamw o;
    float *mi_buf = mf_malloc((size_t)(f->it + 1) * f->L0 * sizeof *mi_buf);
    ckpt_view(f, 1, training, f->rank == 0, &v, &o, mi_buf);
    char opts[768];
    options_json(f, opts, sizeof opts);
    mf_train_meta meta = {0};
    meta.step = f->gstep;
    meta.tokens = f->tokens;
    meta.data_pos = training ? f->step : 0;
    meta.sched = f->sched_g;
    meta.lr = training ? mf_lr_at(&f->sched_g, f->step > 0 ? f->step - 1 : 0) : 0;
    mf_rng_seed(&meta.rng, f->o.seed);
    meta.options_json = opts;
    meta.state_json = state_json(f, training);
    meta.student = (char *)f->o.model;
    mf_err err;
    char path[4400];
    double t0 = mf_now();
    if (mf_ckpt_write(f->o.ckpt_dir, f->comm, 0, &v, &o, &meta, f->o.keep, path, sizeof path, &err) != 0) mf_fatal_err(&err);
    if (f->rank == 0) mf_log("checkpoint %s (%s, %d blocks removed) in %.1fs", path, training ? "mid-iteration" : "after fold", f->it, mf_now() - t0);
    free(meta.state_json);
    free(mi_buf);
    ckpt_view_free(&v, &o);
}

/* ----------------------------------------------------------------- set-up per iteration */

static void start_window(fuser *f) {
    gather_window(f);
    mf_err err;
    if (mf_fuse_window_init(&f->fw, &f->st.model->cfg, f->blocks, f->win_orig, f->win_n, f->win_drop, f->o.rank,
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
    free(f->perm);
    f->perm = NULL;
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
            if (src) memcpy(*mf_layer_slot(model_layer(f, l), &lt[i]), src, (size_t)lt[i].d0 * (lt[i].d1 ? lt[i].d1 : 1) * sizeof(float));
        }
    }
    f->removed[f->pick] = 1;
    f->order[f->it] = f->pick;
}

/* ----------------------------------------------------------------- resume */

static int json_row(json_t *row, double *out, int n) {
    if (!json_is_array(row) || (int)json_array_size(row) != n) return -1;
    for (int l = 0; l < n; l++) {
        json_t *v = json_array_get(row, l);
        out[l] = json_is_null(v) ? NAN : json_number_value(v);
    }
    return 0;
}

/* Returns 1 when the checkpoint is mid-iteration (the window must be rebuilt and its state read). */
static int resume_state(fuser *f, const char *path) {
    mf_err err;
    mf_params none = {0};
    mf_train_meta meta = {0};
    if (mf_ckpt_read(path, 0, &none, NULL, &meta, &err) != 0) mf_fatal_err(&err);
    /* --drop-layers may grow: the first iterations of a longer run are the same */
    static const char *const free_keys[] = {"drop_layers", NULL};
    char opts[768];
    options_json(f, opts, sizeof opts);
    if (mf_ckpt_options_check(path, meta.options_json, opts, free_keys, &err) != 0) mf_fatal_err(&err);
    json_error_t je;
    json_t *j = json_loads(meta.state_json ? meta.state_json : "", 0, &je);
    if (!j) mf_fatal("%s: attribute 'state' is not fuse progress JSON (%s)", path, je.text);
    const char *phase = json_string_value(json_object_get(j, "phase"));
    json_t *rm = json_object_get(j, "removed"), *tc = json_object_get(j, "touched"), *mi = json_object_get(j, "mi");
    int training = phase && strcmp(phase, "train") == 0;
    f->it = (int)json_integer_value(json_object_get(j, "iteration"));
    if (!phase || !json_is_array(rm) || !json_is_array(tc) || !json_is_array(mi) || f->it < 0 || f->it > f->o.drop ||
        (int)json_array_size(rm) != f->it || (int)json_array_size(mi) != f->it + training)
        mf_fatal("%s: fuse progress does not match this run (--drop-layers %d): %s", path, f->o.drop, meta.state_json);
    for (int i = 0; i < f->it; i++) {
        int l = (int)json_integer_value(json_array_get(rm, i));
        if (l < 0 || l >= f->L0 || f->removed[l]) mf_fatal("%s: removed block %d is not a block of %s", path, l, f->o.model);
        if (f->o.blocks && f->o.blocks[i] != l)
            mf_fatal("%s: the checkpoint removed block %d as number %d, --blocks %s names block %d there", path, l, i + 1,
                     f->o.blocks_s, f->o.blocks[i]);
        f->order[i] = l;
        f->removed[l] = 1;
    }
    for (size_t i = 0; i < json_array_size(tc); i++) {
        json_int_t l = json_integer_value(json_array_get(tc, i));
        if (l >= 0 && l < f->L0) f->touched[l] = 1;
    }
    for (int i = 0; i < f->it + training; i++)
        if (json_row(json_array_get(mi, i), f->mi + (size_t)i * f->L0, f->L0))
            mf_fatal("%s: MI row %d does not have %d entries", path, i, f->L0);
    json_t *recs = json_object_get(j, "records"); /* absent in checkpoints of older versions */
    for (int i = 0; i < f->it + training && i < (int)json_array_size(recs); i++) {
        json_t *e = json_array_get(recs, i);
        iter_rec *r = &f->rec[i];
        r->first = (int)json_integer_value(json_array_get(e, 0));
        r->count = (int)json_integer_value(json_array_get(e, 1));
        r->loss_first = json_number_value(json_array_get(e, 2));
        r->loss_last = json_number_value(json_array_get(e, 3));
        r->seconds = json_number_value(json_array_get(e, 4));
        /* absent in checkpoints of older versions: unknown (NAN stays NAN as time is added) */
        json_t *mi_s = json_array_get(e, 5), *train_s = json_array_get(e, 6);
        r->sec_mi = json_is_number(mi_s) ? json_number_value(mi_s) : NAN;
        r->sec_train = json_is_number(train_s) ? json_number_value(train_s) : NAN;
    }
    f->gstep = meta.step;
    f->tokens = meta.tokens;
    if (training) {
        f->pick = (int)json_integer_value(json_object_get(j, "block"));
        f->step = json_integer_value(json_object_get(j, "step"));
        if (f->pick < 0 || f->pick >= f->L0 || f->removed[f->pick]) mf_fatal("%s: block %d cannot be removed", path, f->pick);
        if (f->o.blocks && f->o.blocks[f->it] != f->pick)
            mf_fatal("%s: the checkpoint is removing block %d as number %d, --blocks %s names block %d there", path, f->pick,
                     f->it + 1, f->o.blocks_s, f->o.blocks[f->it]);
    }
    json_decref(j);
    mf_train_meta_free(&meta);
    /* the changed blocks this rank owns */
    mf_params v;
    frozen_view(f, &v);
    if (mf_ckpt_read(path, 0, &v, NULL, NULL, &err) != 0) mf_fatal_err(&err);
    free(v.p);
    return training;
}

static void resume_window(fuser *f, const char *path) {
    int64_t step = f->step;
    start_window(f);
    f->step = step;
    /* every rank reads the trainable state (it is replicated); its own blocks were read already */
    mf_params v = {0};
    mf_adamw o;
    float *mi_buf = mf_malloc((size_t)(f->it + 1) * f->L0 * sizeof *mi_buf);
    ckpt_view(f, 0, 1, 1, &v, &o, mi_buf);
    mf_err err;
    if (mf_ckpt_read(path, 0, &v, &o, NULL, &err) != 0) mf_fatal_err(&err);
    f->opt_g.step = f->opt_b.step = o.step;
    free(mi_buf);
    ckpt_view_free(&v, &o);
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
    int n = mf_prune_slice(&plan, f->st.model, &t);
    mf_hf_write_collective(f->o.out, f->comm, &plan.new_cfg, t, n, ex, f->o.force, "fuse");
    mf_prune_tensors_free(t, n);
    free(ex);
    json_decref(extra);
    mf_prune_plan_free(&plan);
}

static void print_summary(fuser *f, double secs) {
    json_t *its = json_array();
    for (int i = 0; i < f->it; i++) {
        json_t *row = json_array();
        for (int l = 0; l < f->L0; l++) {
            double v = f->mi[(size_t)i * f->L0 + l];
            json_array_append_new(row, isnan(v) ? json_null() : json_real(v));
        }
        iter_rec *r = &f->rec[i];
        json_t *o = json_pack("{s:i, s:o}", "block", f->order[i], "mi", row);
        if (r->count) { /* not known for iterations done before a resume from an older checkpoint */
            json_object_set_new(o, "window_first", json_integer(r->first));
            json_object_set_new(o, "window_blocks", json_integer(r->count));
            json_object_set_new(o, "loss_first", json_real(r->loss_first));
            json_object_set_new(o, "loss_last", json_real(r->loss_last));
            json_object_set_new(o, "seconds", json_real(r->seconds));
            if (!isnan(r->sec_mi) && !isnan(r->sec_train)) {
                json_object_set_new(o, "seconds_mi", json_real(r->sec_mi));
                json_object_set_new(o, "seconds_train", json_real(r->sec_train));
                /* the rest: gathering the window, the prefix and teacher forwards of its inputs, the fold, checkpoints */
                json_object_set_new(o, "seconds_setup_fold", json_real(r->seconds - r->sec_mi - r->sec_train));
            }
        }
        json_array_append_new(its, o);
    }
    json_t *j = json_pack("{s:s, s:i, s:i, s:I, s:f, s:o}", "out", f->o.out, "n_layers_before", f->L0, "n_layers",
                          f->L0 - f->it, "tokens", (json_int_t)f->tokens, "seconds", secs, "iterations", its);
    char *s = json_dumps(j, JSON_INDENT(1));
    printf("%s\n", s);
    free(s);
    json_decref(j);
}

/* ----------------------------------------------------------------- the loop */

/* Train the current window to the end (or a stop signal: returns 1). */
static int train_window(fuser *f) {
    int *batch = mf_malloc((size_t)f->o.batch * sizeof *batch);
    float **dS = mf_calloc((size_t)f->n_slots, sizeof *dS);
    for (int k = 0; k < f->n_slots; k++) dS[k] = mf_malloc((size_t)f->T * f->D * sizeof(float));
    mf_progress prog;
    char what[64];
    snprintf(what, sizeof what, "fuse block %d (%d/%d)", f->pick, f->it + 1, f->o.drop);
    mf_progress_start(&prog, what, (long)f->steps);
    iter_rec *r = &f->rec[f->it];
    int stop = 0;
    while (f->step < f->steps) {
        double t0 = mf_now();
        double loss = train_step(f, batch, dS);
        r->sec_train += mf_now() - t0;
        if (f->step == 1 || r->loss_first == 0) r->loss_first = loss;
        r->loss_last = loss;
        int sig = g_stop_signal, any = 0;
        MPI_Allreduce(&sig, &any, 1, MPI_INT, MPI_MAX, f->comm);
        if (any || (f->o.ckpt_every > 0 && f->step % f->o.ckpt_every == 0 && f->step < f->steps)) save_checkpoint(f, 1);
        if (any) {
            if (f->rank == 0) mf_log("signal %d: checkpoint written at block %d step %lld, exiting (resume with --resume)",
                                     any, f->pick, (long long)f->step);
            stop = 1;
            break;
        }
        if (f->rank == 0) mf_progress_update(&prog, (long)f->step, "steps");
    }
    for (int k = 0; k < f->n_slots; k++) free(dS[k]);
    free(dS); free(batch);
    return stop;
}

static int run(fuser *f, int resumed_mid, const char *ckpt_path) {
    while (f->it < f->o.drop) {
        f->iter_t0 = mf_now();
        iter_rec *r = &f->rec[f->it];
        if (resumed_mid) {
            resume_window(f, ckpt_path);
            resumed_mid = 0;
            if (f->rank == 0) mf_log("resumed block %d (iteration %d) at step %lld", f->pick, f->it + 1, (long long)f->step);
        } else {
            double *row = f->mi + (size_t)f->it * f->L0;
            if (f->o.blocks) {
                for (int l = 0; l < f->L0; l++) row[l] = NAN;
                f->pick = f->o.blocks[f->it];
            } else {
                double t0 = mf_now();
                int stopped = mf_macro_influence(&f->st, f->ids, f->o.mi_samples, f->T, f->removed, row, &g_stop_signal);
                r->sec_mi += mf_now() - t0;
                if (stopped) {
                    if (f->rank == 0)
                        mf_log("signal %d during Macro Influence of iteration %d: exiting; --resume redoes it from the last "
                               "checkpoint (%d blocks removed)", g_stop_signal, f->it + 1, f->it);
                    return 1;
                }
                f->pick = mf_mi_argmin(row, f->removed, f->L0);
            }
            start_window(f);
        }
        r->block = f->pick;
        r->first = f->win_orig[0];
        r->count = f->win_n;
        if (f->rank == 0)
            mf_log("fuse %d/%d: block %d (MI %.6f) into blocks %d..%d (%d in the window), %lld steps, %zu trainable",
                   f->it + 1, f->o.drop, f->pick, f->mi[(size_t)f->it * f->L0 + f->pick], f->win_orig[0],
                   f->win_orig[f->win_n - 1], f->win_n, (long long)f->steps, mf_fuse_trainable(&f->fw));
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
        save_checkpoint(f, 0);
        int sig = g_stop_signal, any = 0; /* a signal during the MI pass or the fold: stop at this checkpoint */
        MPI_Allreduce(&sig, &any, 1, MPI_INT, MPI_MAX, f->comm);
        if (any && f->it < f->o.drop) {
            if (f->rank == 0) mf_log("signal %d: checkpoint written after block %d, exiting (resume with --resume)", any, r->block);
            return 1;
        }
    }
    return 0;
}

/* --blocks "17,4,12": distinct block indices, as many as --drop-layers. */
static int *parse_blocks(const char *s, int drop, int L) {
    int *b = mf_calloc((size_t)drop, sizeof *b), n = 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        char *end;
        long v = strtol(tok, &end, 10);
        if (*end || v < 0 || v >= L) mf_fatal("fuse: --blocks entry '%s' is not a block index 0..%d", tok, L - 1);
        for (int i = 0; i < n; i++) if (b[i] == v) mf_fatal("fuse: --blocks names block %ld twice", v);
        if (n == drop) mf_fatal("fuse: --blocks names more than --drop-layers %d blocks", drop);
        b[n++] = (int)v;
    }
    if (n != drop) mf_fatal("fuse: --blocks names %d blocks, --drop-layers is %d", n, drop);
    return b;
}

/* ----------------------------------------------------------------- set-up */

static void setup(fuser *f) {
    fuse_opts *o = &f->o;
    f->comm = MPI_COMM_WORLD;
    MPI_Comm_rank(f->comm, &f->rank);
    MPI_Comm_size(f->comm, &f->size);
    size_t n;
    f->ids = mf_cli_tokenize_file(o->model, o->tokenizer, o->text, &n, f->comm);
    mf_cli_tokens_id(f->ids, n, f->text_id, sizeof f->text_id);
    if (n < (size_t)o->samples * o->ctx)
        mf_fatal("fuse: %s has %zu tokens, fewer than --samples %d x --ctx %d", o->text, n, o->samples, o->ctx);
    mf_stage_open(&f->st, o->model, f->comm, mf_backend_cpu(), o->ctx, o->ctx);
    mf_stage_log_layout(&f->st, "fuse");
    mf_model_make_layers_writable(f->st.model);
    f->L0 = f->st.model->cfg.n_layers;
    f->T = o->ctx;
    f->D = f->st.model->cfg.dim;
    if (o->drop < 1 || o->drop >= f->L0) mf_fatal("fuse: --drop-layers %d must be between 1 and %d", o->drop, f->L0 - 1);
    if (o->blocks_s) o->blocks = parse_blocks(o->blocks_s, o->drop, f->L0);
    f->removed = mf_calloc((size_t)f->L0, 1);
    f->touched = mf_calloc((size_t)f->L0, 1);
    f->order = mf_calloc((size_t)o->drop, sizeof *f->order);
    f->mi = mf_calloc((size_t)o->drop * f->L0, sizeof *f->mi);
    f->rec = mf_calloc((size_t)o->drop, sizeof *f->rec);
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
    if (o->loss == LOSS_KL_BATCH) {
        f->Sall = mf_malloc((size_t)o->batch * nx * sizeof(float));
        f->Tall = mf_malloc((size_t)o->batch * nx * sizeof(float));
        f->dSall = mf_malloc((size_t)o->batch * nx * sizeof(float));
    }
    if (f->rank == 0) {
        mkdir(o->ckpt_dir, 0755);
        f->logf = fopen(o->log, o->resume ? "a" : "w");
        if (!f->logf) mf_fatal("fuse: cannot write --log %s: %s", o->log, strerror(errno));
        mf_log("fuse: remove %d of %d blocks; window %d, rank %d, %d samples x %d tokens, %d epochs of %d steps (batch %d), "
               "loss %s, %d rank(s)", o->drop, f->L0, o->window, o->rank, o->samples, o->ctx, o->epochs,
               o->samples / o->batch, o->batch, o->loss_name, f->size);
    }
}

static void teardown(fuser *f) {
    if (f->logf) fclose(f->logf);
    for (int k = 0; k < f->n_own; k++) { free(f->X[k]); free(f->Tg[k]); }
    for (int k = 0; k < f->n_slots; k++) { free(f->xin[k]); free(f->tin[k]); }
    free(f->X); free(f->Tg); free(f->xin); free(f->tin); free(f->xp); free(f->tp);
    free(f->Sall); free(f->Tall); free(f->dSall);
    free(f->o.blocks);
    free(f->removed); free(f->touched); free(f->order); free(f->mi); free(f->rec); free(f->perm); free(f->ids);
    mf_stage_close(&f->st);
}

static int parse_loss(const char *s) {
    if (strcmp(s, "kl-batch") == 0) return LOSS_KL_BATCH;
    if (strcmp(s, "nmse") == 0) return LOSS_NMSE;
    if (strcmp(s, "cosine") == 0) return LOSS_COSINE;
    mf_fatal("fuse: --loss '%s' is not one of kl-batch, nmse, cosine", s);
}

int mf_cmd_fuse(int argc, char **argv) {
    fuser f;
    memset(&f, 0, sizeof f);
    fuse_opts *o = &f.o;
    *o = (fuse_opts){.window = 8, .rank = 128, .samples = 64, .mi_samples = -1, .epochs = 20, .ctx = 256, .batch = 8,
                     .keep = 2, .lr = 1e-2f, .lr_base = 1e-3f, .loss_name = "nmse", .seed = 0};
    const mf_opt opts[] = {
        {"model", MF_OPT_STR, &o->model, "model: HF directory, GGUF file or llama2.c .bin", 1},
        {"text", MF_OPT_STR, &o->text, "calibration / fine-tuning text (UTF-8), cut into windows of --ctx tokens", 1},
        {"out", MF_OPT_STR, &o->out, "output Hugging Face directory (must not exist unless --force)", 1},
        {"drop-layers", MF_OPT_INT, &o->drop, "blocks to remove, one per iteration", 1},
        {"blocks", MF_OPT_STR, &o->blocks_s, "remove these blocks in this order (comma list) instead of choosing by Macro Influence", 0},
        {"window", MF_OPT_INT, &o->window, "blocks in a fusion window, the removed one included: half before, the rest after (default 8)", 0},
        {"rank", MF_OPT_INT, &o->rank, "rank of the LoRA term B A and of the gate U V (default 128)", 0},
        {"samples", MF_OPT_INT, &o->samples, "training windows, the first of the text (default 64)", 0},
        {"mi-samples", MF_OPT_INT, &o->mi_samples, "windows for Macro Influence (default min(32, --samples))", 0},
        {"epochs", MF_OPT_INT, &o->epochs, "passes over the samples per removed block (default 20)", 0},
        {"ctx", MF_OPT_INT, &o->ctx, "tokens per window (default 256)", 0},
        {"batch", MF_OPT_INT, &o->batch, "windows per step; the kl-batch softmax runs over them (default 8)", 0},
        {"lr", MF_OPT_FLOAT, &o->lr, "learning rate of the gates U, V (default 1e-2; official 1e-3, tuned for 2560 steps per block)", 0},
        {"lr-base", MF_OPT_FLOAT, &o->lr_base, "learning rate of the LoRA A, B and the norm scales (default 1e-3; official 9.65e-6)", 0},
        {"loss", MF_OPT_STR, &o->loss_name, "nmse (default, measured best), kl-batch (the official code's softmax over the batch axis) or cosine", 0},
        {"seed", MF_OPT_U64, &o->seed, "seed of the adapter initialization and the data order (default 0)", 0},
        {"recompute", MF_OPT_FLAG, &o->recompute, "recompute activations in the backward (less memory, same result)", 0},
        {"checkpoint-every", MF_OPT_INT, &o->ckpt_every, "also checkpoint every K steps inside an iteration (default 0)", 0},
        {"checkpoint-dir", MF_OPT_STR, &o->ckpt_dir, "checkpoint directory (default OUT.ckpt); one after every block", 0},
        {"keep", MF_OPT_INT, &o->keep, "complete checkpoints to keep (default 2)", 0},
        {"resume", MF_OPT_FLAG, &o->resume, "continue from the newest complete checkpoint", 0},
        {"log", MF_OPT_STR, &o->log, "per-step JSON lines log (default OUT.fuse.jsonl)", 0},
        {"tokenizer", MF_OPT_STR, &o->tokenizer, "tokenizer.bin or GGUF file (default: from the model)", 0},
        {"force", MF_OPT_FLAG, &o->force, "replace --out if it exists", 0},
        {"json", MF_OPT_FLAG, &o->json, "print a JSON summary", 0},
    };
    const char *summary =
        "FuseGPT: remove blocks one at a time by Macro Influence, folding each into its neighbours with\n"
        "learnable low-rank updates (W + B A + (U V) * P) trained by local distillation of the window;\n"
        "writes an ordinary Llama with fewer layers. Restartable (checkpoint after every block, --resume;\n"
        "SIGTERM/SIGUSR1 checkpoint and exit).";
    if (mf_args_parse_or_die("fuse", summary, opts, sizeof opts / sizeof opts[0], argc, argv)) return 0;
    o->loss = parse_loss(o->loss_name);
    if (o->ctx < 2 || o->samples < 1 || o->batch < 1 || o->epochs < 1 || o->window < 2 || o->rank < 1 || o->lr <= 0 ||
        o->lr_base < 0)
        mf_fatal("fuse: need --ctx >= 2, --samples >= 1, --batch >= 1, --epochs >= 1, --window >= 2, --rank >= 1, --lr > 0, --lr-base >= 0");
    if (o->samples < o->batch) mf_fatal("fuse: --samples %d is smaller than --batch %d", o->samples, o->batch);
    if (o->mi_samples < 0) o->mi_samples = o->samples < 32 ? o->samples : 32;
    if (o->mi_samples < 1 || o->mi_samples > o->samples) mf_fatal("fuse: --mi-samples %d must be between 1 and --samples %d", o->mi_samples, o->samples);
    char ckpt_default[4200], log_default[4200];
    snprintf(ckpt_default, sizeof ckpt_default, "%s.ckpt", o->out);
    snprintf(log_default, sizeof log_default, "%s.fuse.jsonl", o->out);
    if (!o->ckpt_dir) o->ckpt_dir = ckpt_default;
    if (!o->log) o->log = log_default;
    struct stat sb;
    if (stat(o->out, &sb) == 0 && !o->force) mf_fatal("fuse: --out %s already exists (use --force to replace it)", o->out);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    setup(&f);
    char tok[4400], tok_abs[PATH_MAX];
    const char *tok_ref = NULL;
    if (mf_source_tokenizer_path(f.st.src, o->tokenizer, tok, sizeof tok) == 0 && realpath(tok, tok_abs)) tok_ref = tok_abs;
    int mid = 0;
    char ckpt[4400] = "";
    if (o->resume) {
        mf_err err;
        int rc = mf_ckpt_find_latest(o->ckpt_dir, ckpt, sizeof ckpt, &err);
        if (rc < 0) mf_fatal_err(&err);
        if (rc == 1) { if (f.rank == 0) mf_log("resume: no checkpoint in %s, starting fresh", o->ckpt_dir); }
        else {
            mid = resume_state(&f, ckpt);
            if (f.rank == 0) mf_log("resumed from %s: %d blocks removed%s", ckpt, f.it, mid ? ", inside an iteration" : "");
        }
    }
    double t0 = mf_now();
    int stopped = run(&f, mid, ckpt);
    double secs = mf_now() - t0;
    if (!stopped) {
        write_output(&f, tok_ref);
        if (f.rank == 0) {
            mf_log("fuse: removed %d blocks in %.1fs, wrote %s", f.it, secs, o->out);
            if (o->json) print_summary(&f, secs);
        }
    }
    teardown(&f);
    return 0;
}
