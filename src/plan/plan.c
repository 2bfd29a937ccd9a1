/* plan.c - the planner's model (see plan.h). Each memory term names the code
 * whose allocation it counts; sizes are float32 (4 bytes) unless said. */
#include "plan/plan.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline.h"

const char *const mf_plan_mem_names[MF_PM_N] = {
    "teacher weights", "student weights", "gradients", "AdamW moments", "activations", "micro-batch buffers",
    "logits/loss", "inference states + KV", "pipeline buffers", "gradient-sum scratch", "runtime reserve",
};

#define F4 4.0 /* bytes of a float32 */
/* The loss over the vocabulary on the last stage (softmaxes, the KL or cross-entropy and its gradient:
 * exp, max and sums, no GEMM), per logit: on a CPU MF_LOSS_GEMM_FLOPS_PER_LOGIT (model/config.h,
 * measured by bench/loss_cost.sh) at the GEMM rate, as src/train/partition.c weighs it; on a GPU
 * bound by memory, reading the student's and the teacher's logits and writing the gradient once
 * (cuda/losses.cu: a row's further passes hit L2), 12 bytes at the memory bandwidth: a lower bound,
 * not a measurement. */
#define LOSS_BYTES_PER_LOGIT 12.0
static double loss_time(const mf_plan_hw *hw, double logits) {
    return hw->backend == MF_PLAN_CPU ? logits * MF_LOSS_GEMM_FLOPS_PER_LOGIT / (hw->peak * hw->eff)
                                      : logits * LOSS_BYTES_PER_LOGIT / hw->mem_bw;
}

/* HDF5 overhead of a checkpoint (src/train/checkpoint.c: one chunked dataset
 * with Fletcher-32 per tensor in /params, /adam_m, /adam_v, plus /rng and the
 * root attributes): bytes per dataset and fixed, fitted to the SmolLM2
 * checkpoints of bench/plan_check.sh (docs/planner.md). */
#define H5_PER_DATASET 480.0
#define H5_FIXED 14000.0

/* ------------------------------------------------------------ shapes, counts */

static double qdim(const mf_config *c) { return (double)c->n_heads * c->head_dim; }
static double kvdim(const mf_config *c) { return (double)c->n_kv_heads * c->head_dim; }
static double emb_params(const mf_config *c) { return (double)c->vocab_size * c->dim; }

double mf_plan_student_params(const mf_config *c) { return (double)mf_config_total_params(c); }

int mf_plan_ckpt_tensors(const mf_config *c) {
    /* src/train/params.c walk(): embedding, 9 tensors a layer (12 with q/k/v biases), final norm, untied head */
    return 1 + c->n_layers * (c->qkv_bias ? 12 : 9) + 1 + (c->tied_embeddings ? 0 : 1);
}

double mf_plan_ckpt_bytes(const mf_config *c) {
    /* docs/checkpoint_schema.md: /params, /adam_m, /adam_v float32 for every trainable tensor once (the
     * last stage's tied copy is left out: distill.c ckpt_view), /rng uint64 [R][4] (inside the fixed part) */
    double datasets = 3.0 * mf_plan_ckpt_tensors(c) + 1;
    return 3.0 * F4 * mf_plan_student_params(c) + datasets * H5_PER_DATASET + H5_FIXED;
}

double mf_plan_layer_act_bytes(const mf_config *c, double T, int recompute) {
    double D = c->dim, F = c->ffn_dim, Q = qdim(c), KV = kvdim(c);
    if (recompute) return F4 * T * D; /* model_train.c mf_train_state_new: only acts[i].x_in [T][D] */
    /* x_in [T][D] + acts_alloc: rms1, rms2 [T]; xn1, x_mid, xn2 [T][D]; q, att [T][Q]; k, v [T][KV]; gate, up [T][F] */
    return F4 * T * (4 * D + 2 * Q + 2 * KV + 2 * F + 2);
}

double mf_plan_state_bytes(const mf_config *c, int layers, int last, double T, int ctx) {
    /* src/model/model.c mf_state_new: x, xn [T][D]; q, att [T][Q]; gate, up [T][F];
     * kcache, vcache [layers][ctx][KV]; logits [T][V] on the last stage */
    double D = c->dim, F = c->ffn_dim, Q = qdim(c), KV = kvdim(c);
    double b = F4 * (T * (2 * D + 2 * Q + 2 * F) + 2.0 * layers * (double)ctx * KV);
    if (last) b += F4 * T * c->vocab_size;
    return b;
}

double mf_plan_layer_fwd_flops(const mf_config *c, int seq) {
    /* 2 FLOPs per weight and token (mf_config_layer_flops), and QK^T + PV over the mean
     * (seq + 1) / 2 keys of a causal window */
    return 2.0 * (double)mf_config_layer_params(c) + 4.0 * qdim(c) * (seq + 1) / 2.0;
}

static double head_flops(const mf_config *c) { return 2.0 * emb_params(c); }

/* --------------------------------------------------------------- one stage */

typedef struct ctxt {
    const mf_plan_job *j;
    const mf_plan_hw *hw;
    int P, dp;
    double T;   /* tokens per micro-batch */
} ctxt;

static int node_of(const ctxt *x, int rank) { return rank / x->hw->ranks_per_node; }

/* Bandwidth between stages a and b of every replica (ranks replica*P + stage, distill.c split_ranks):
 * the slowest pair decides. */
static double link_bw(const ctxt *x, int a, int b) {
    for (int r = 0; r < x->dp; r++)
        if (node_of(x, r * x->P + a) != node_of(x, r * x->P + b)) return x->hw->inter_bw;
    return x->hw->intra_bw;
}

/* Does the data-parallel group of stage s (ranks r*P + s) span nodes? */
static int dp_spans_nodes(const ctxt *x, int s) {
    for (int r = 1; r < x->dp; r++)
        if (node_of(x, r * x->P + s) != node_of(x, s)) return 1;
    return 0;
}

static int in_flight(const ctxt *x, int s) {
    const mf_plan_job *j = x->j;
    int m = j->micro_batches;
    if (j->task == MF_PLAN_EVAL) return 0;
    if (j->schedule == MF_PLAN_GPIPE) return x->P == 1 ? 1 : m; /* distill.c setup(): n_ts */
    int k = x->P - s;                                            /* 1F1B: warm-up depth of stage s */
    return k < m ? k : m;
}

/* Trainable parameters of a stage (src/train/params.c walk()): the embedding on the first stage and,
 * tied, its copy on the last; the layers; the final norm and an untied head on the last. */
static double stage_params(const mf_config *c, int layers, int first, int last, double *in_layers) {
    double p = (double)layers * mf_config_layer_params(c);
    *in_layers = p;
    if (first || (last && c->tied_embeddings)) p += emb_params(c);
    if (last) p += c->dim + (c->tied_embeddings ? 0 : emb_params(c));
    return p;
}

/* Frozen weights a stage loads (src/model/model.c mf_model_load): the embedding on the first stage
 * (and the last when tied), the layers, the final norm and head on the last. */
static double frozen_params(const mf_config *c, int layers, int first, int last) {
    double in;
    return stage_params(c, layers, first, last, &in);
}

/* A file whose bytes per parameter are those held (within its headers' 1 %) is used in place: its
 * mapped pages are the weights, not a second copy (--teacher-file-gb measures the headers too). */
int mf_plan_used_in_place(double file_bytes, double held_bytes) {
    return fabs(file_bytes - held_bytes) <= 0.01 * held_bytes;
}

static void stage_memory(const ctxt *x, mf_plan_stage *st) {
    const mf_plan_job *j = x->j;
    const mf_plan_hw *hw = x->hw;
    const mf_config *c = &j->student, *tc = &j->teacher;
    double T = x->T, D = c->dim, F = c->ffn_dim, Q = qdim(c), KV = kvdim(c), V = c->vocab_size;
    int nl = st->s1 - st->s0, tl = st->t1 - st->t0, host = hw->backend == MF_PLAN_CPU, k = st->in_flight;
    double *mem = st->mem;
    memset(mem, 0, sizeof st->mem);
    if (j->task == MF_PLAN_EVAL) { /* src/cli/eval.c: mf_stage_open(model, ctx, ctx) */
        double w = frozen_params(c, nl, st->first, st->last);
        mem[MF_PM_TEACHER_W] = w * j->teacher_wbytes;
        double W = j->seq;                                                   /* a window at a time */
        mem[MF_PM_INFER] = mf_plan_state_bytes(c, nl, 0, W, j->seq);
        if (st->last) mem[MF_PM_LOGITS] = F4 * W * V;                       /* mf_state.logits */
        if (!st->last) mem[MF_PM_PIPE] = 2 * F4 * W * D;                     /* mpi/pipeline.c isend: 2 buffers */
        /* no file pages beside the weights: a file used in place is the weights themselves, a
         * converted one's pages are dropped tensor by tensor as they are read (io/source.c
         * mf_mmap_drop), and so are an uploaded tensor's on a device (model.c keep) */
        mem[MF_PM_RESERVE] = hw->reserve;
    } else {
        st->params = stage_params(c, nl, st->first, st->last, &st->layer_params);
        mem[MF_PM_STUDENT_W] = F4 * st->params; /* params.c own(): float32 copies of every trainable tensor */
        mem[MF_PM_GRADS] = F4 * st->params;     /* params.c mf_params_from_model: grad_flat */
        mem[MF_PM_ADAM] = 2 * F4 * st->params;  /* optim.c mf_adamw_init: m, v per tensor */
        double tw = frozen_params(tc, tl, st->first, st->last);
        mem[MF_PM_TEACHER_W] = tw * j->teacher_wbytes; /* model.c fetch(): converted (f32) or held half */
        /* model_train.c mf_train_state_new, one state per micro-batch in flight (distill.c setup) */
        mem[MF_PM_ACTS] = k * nl * mf_plan_layer_act_bytes(c, T, j->recompute);
        /* x_out [T][D]; backward scratch dx, g, dxn [T][D], dq, datt [T][Q], dk, dv [T][KV], h, dh, dgate,
         * dup [T][F]; ids int32 [T]; distill.c dxs[j] [T][D]; last stage: rms_f [T], xn_f [T][D];
         * --recompute: the work set (acts_alloc) and scratch_out [T][D] */
        double keep = F4 * T * 2 * D + 4 * T; /* x_out, dxs, ids: what a micro-batch needs between its passes */
        double scratch = F4 * T * (3 * D + 2 * Q + 2 * KV + 4 * F);
        if (st->last) scratch += F4 * T * (D + 1);
        if (j->recompute) scratch += F4 * T * (4 * D + 2 * Q + 2 * KV + 2 * F + 2);
        int ks = j->shared_scratch ? 1 : k; /* --scratch shared: a what-if, one set per stage */
        mem[MF_PM_MB_BUFS] = k * keep + ks * scratch;
        if (st->last) /* train state logits + dlogits per micro-batch; distill.c train() teacher_logits; the
                       * teacher's and the student's mf_state.logits (one window each) */
            mem[MF_PM_LOGITS] = F4 * V * (2.0 * ks * T + 3.0 * j->seq) +
                                (j->topk > 0 ? 8.0 * j->seq * j->topk : 0); /* distill_aux.c tk_ids, tk_logits */
        /* stage.c mf_stage_open opens both models with an mf_state (the student's is unused by training) */
        /* one window at a time (W = seq tokens) through these and the pipeline's buffers */
        double W = j->seq;
        mem[MF_PM_INFER] = mf_plan_state_bytes(tc, tl, 0, W, j->seq) + mf_plan_state_bytes(c, nl, 0, W, j->seq);
        /* pipeline.c isend: 2 buffers per direction and model; distill.c t->x [T][D] receive buffer */
        double pipe = F4 * W * D;
        if (!st->last) pipe += 2 * F4 * W * (D + (j->topk > 0 ? 0 : tc->dim)); /* isend allocates on first use */
        if (!st->first) pipe += 2 * F4 * W * D;
        mem[MF_PM_PIPE] = pipe;
        /* collective_mpi.c sum_begin: q->tmp (n / dp x dp floats) per bucket in flight; every layer's
         * bucket may be in flight at once, then the embedding's / head's sum alone. Device backends
         * (NCCL) sum in place: their buffers are in the reserve. */
        if (x->dp > 1 && host) {
            double other = st->params - st->layer_params;
            mem[MF_PM_DP] = F4 * (st->layer_params > other ? st->layer_params : other);
        }
        /* no file pages beside the weights: the teacher's are its weights when used in place, else
         * dropped as each tensor is converted (io/source.c mf_mmap_drop); the student's are dropped
         * as params.c own() copies each tensor */
        mem[MF_PM_RESERVE] = hw->reserve;
    }
    st->mem_total = 0;
    for (int i = 0; i < MF_PM_N; i++) st->mem_total += mem[i];
}

static void stage_time(const ctxt *x, mf_plan_stage *st, int s) {
    const mf_plan_job *j = x->j;
    const mf_plan_hw *hw = x->hw;
    const mf_config *c = &j->student, *tc = &j->teacher;
    double T = x->T, rate = hw->peak * hw->eff;
    /* frozen weights held in half precision run on the half-precision GEMM path (its own peak) */
    double frozen_rate = (j->teacher_wbytes < 4 && hw->peak_half > 0 ? hw->peak_half : hw->peak) * hw->eff;
    int nl = st->s1 - st->s0, tl = st->t1 - st->t0;
    double layers = T * nl * mf_plan_layer_fwd_flops(c, j->seq), head = st->last ? T * head_flops(c) : 0;
    double fwd, bwd = 0, tfl = 0; /* tfl: the teacher's (frozen) FLOPs, inside fwd */
    if (j->task == MF_PLAN_EVAL) {
        fwd = tfl = layers + head;
    } else {
        /* distill.c forward_window: the teacher's layers (and head, loss on the last stage), the student's
         * forward, and on the last stage the loss and the head's backward (loss_and_head); backward_window:
         * the layers' backward, 2 x their forward (+ a second forward with --recompute) */
        int teacher = j->topk <= 0; /* --teacher-topk: no teacher forward (distill.c forward_window) */
        tfl = teacher ? T * tl * mf_plan_layer_fwd_flops(tc, j->seq) + (st->last ? T * head_flops(tc) : 0) : 0;
        fwd = tfl + layers + 3 * head;
        bwd = layers * (2 + (j->recompute ? 1 : 0));
    }
    st->flops_mb = fwd + bwd; /* GEMM and attention FLOPs; the loss is timed apart (loss_time) */
    st->t_fwd_mb = tfl / frozen_rate + (fwd - tfl) / rate +
                   (j->task == MF_PLAN_DISTILL && st->last ? loss_time(hw, T * c->vocab_size) : 0);
    st->t_bwd_mb = bwd / rate;
    st->t_compute_mb = st->t_fwd_mb + st->t_bwd_mb;
    /* activations sent per micro-batch (stage.c / distill.c: student and teacher forward to the next
     * stage, the student's dL/dx to the previous) */
    st->t_p2p_fwd = st->t_p2p_bwd = 0;
    if (!st->last) {
        int teacher = j->task == MF_PLAN_DISTILL && j->topk <= 0;
        double bytes = F4 * T * c->dim + (teacher ? F4 * T * tc->dim : 0);
        st->t_p2p_fwd = bytes / link_bw(x, s, s + 1) + (teacher ? 2 : 1) * hw->latency;
    }
    if (!st->first && j->task == MF_PLAN_DISTILL) st->t_p2p_bwd = F4 * T * c->dim / link_bw(x, s, s - 1) + hw->latency;
    st->t_p2p_mb = st->t_p2p_fwd + st->t_p2p_bwd;
}

/* The data-parallel sum and the optimizer step after the pipeline (distill.c reduce_grads, grad_norm,
 * mf_adamw_step, check_weights). */
static void stage_reduce(const ctxt *x, mf_plan_stage *st, int s) {
    const mf_plan_hw *hw = x->hw;
    const mf_config *c = &x->j->student;
    st->t_dp = st->t_optim = 0;
    if (x->j->task == MF_PLAN_EVAL) return;
    int d = x->dp;
    if (d > 1) { /* ring traffic: 2 (d-1)/d of the buffer through each rank */
        double bw = dp_spans_nodes(x, s) ? hw->inter_bw : hw->intra_bw, ring = 2.0 * (d - 1) / d;
        double t_layers = ring * F4 * st->layer_params / bw + 2.0 * (d - 1) * hw->latency * (st->s1 - st->s0);
        double t_rest = ring * F4 * (st->params - st->layer_params) / bw + 4.0 * (d - 1) * hw->latency;
        /* the layers' buckets start during the last micro-batch's backward; on a host backend the same
         * core adds the pieces and progresses MPI, so nothing is hidden */
        if (hw->backend != MF_PLAN_CPU) t_layers = t_layers > st->t_bwd_mb ? t_layers - st->t_bwd_mb : 0;
        st->t_dp = t_layers + t_rest;
    }
    if (c->tied_embeddings && x->P > 1 && (st->first || st->last)) /* collective mf_coll_tied_fold */
        st->t_dp += F4 * emb_params(c) / link_bw(x, 0, x->P - 1) + hw->latency;
    /* bytes per parameter: zero_grad 4, grad norm 4, AdamW 16 read + 12 written, finiteness check 4 */
    st->t_optim = 40.0 * st->params / hw->mem_bw;
}

/* The teacher layer where a stage starting at student layer i starts, in the joint partition (as
 * src/train/partition.c, issue 15's 1F1B): the layer student layer i came from, else i x Lt / Ls. */
static int teacher_bound(const mf_plan_job *j, int i) {
    int Ls = j->student.n_layers, Lt = j->teacher.n_layers;
    if (i <= 0) return 0;
    if (i >= Ls) return Lt;
    return j->teacher_map ? j->teacher_map[i] : (int)((long long)i * Lt / Ls);
}

static void stage_fill(const ctxt *x, mf_plan_stage *st, int s, int s0, int s1, int t0, int t1) {
    memset(st, 0, sizeof *st);
    st->s0 = s0; st->s1 = s1; st->t0 = t0; st->t1 = t1;
    st->first = s == 0;
    st->last = s == x->P - 1;
    st->in_flight = in_flight(x, s);
    stage_memory(x, st);
    stage_time(x, st, s);
    stage_reduce(x, st, s);
}

/* Joint partition: contiguous student splits, the teacher following (teacher_bound), minimizing the
 * slowest stage's time per micro-batch among splits whose every stage fits in memory (or, when none
 * does, among all splits). An exact dynamic program over (stage, boundary). */
static int partition_joint(const ctxt *x, int *b, int use_mem) {
    int P = x->P, L = x->j->student.n_layers;
    double *best = malloc(sizeof *best * (size_t)(P + 1) * (L + 1));
    int *arg = malloc(sizeof *arg * (size_t)(P + 1) * (L + 1));
    if (!best || !arg) { free(best); free(arg); return -1; }
    for (int i = 0; i < (P + 1) * (L + 1); i++) best[i] = DBL_MAX;
    best[0] = 0;
    mf_plan_stage st;
    for (int s = 1; s <= P; s++)
        for (int jj = s; jj <= L - (P - s); jj++) {
            if (s == P && jj != L) continue;
            for (int i = s - 1; i < jj; i++) {
                double prev = best[(s - 1) * (L + 1) + i];
                if (prev == DBL_MAX) continue;
                stage_fill(x, &st, s - 1, i, jj, teacher_bound(x->j, i), teacher_bound(x->j, jj));
                if (use_mem && st.mem_total > x->hw->mem) continue;
                double cost = st.t_compute_mb + st.t_p2p_mb, v = prev > cost ? prev : cost;
                if (v < best[s * (L + 1) + jj]) { best[s * (L + 1) + jj] = v; arg[s * (L + 1) + jj] = i; }
            }
        }
    int ok = best[P * (L + 1) + L] < DBL_MAX;
    if (ok) {
        b[P] = L;
        for (int s = P; s >= 1; s--) b[s - 1] = arg[s * (L + 1) + b[s]];
    }
    free(best);
    free(arg);
    return ok ? 0 : -1;
}

/* ------------------------------------------------------------------ a plan */

static void why_not(mf_plan *p, const mf_plan_hw *hw) {
    const mf_plan_stage *st = &p->st[p->worst];
    int big = 0;
    for (int i = 1; i < MF_PM_N; i++)
        if (st->mem[i] > st->mem[big]) big = i;
    double G = 1024.0 * 1024 * 1024;
    snprintf(p->why, sizeof p->why, "stage %d of %d: %.1f GiB > %.1f GiB %s: %s %.1f GiB", p->worst + 1, p->P,
             st->mem_total / G, hw->mem / G, hw->mem_what ? hw->mem_what : "memory", mf_plan_mem_names[big], st->mem[big] / G);
}

int mf_plan_compute(const mf_plan_job *job, const mf_plan_hw *hw, mf_plan *out, mf_err *err) {
    memset(out, 0, sizeof *out);
    const mf_plan_job *j = job;
    int ranks = hw->nodes * hw->ranks_per_node, P = j->pp, L = j->student.n_layers;
    if (hw->nodes < 1 || hw->ranks_per_node < 1) return mf_err_set(err, "plan: --nodes and --gpus-per-node must be at least 1");
    if (P < 1 || j->dp < 1 || P * j->dp != ranks)
        return mf_err_set(err, "plan: --pp %d x --dp %d must equal the %d ranks (--nodes %d x --gpus-per-node %d)", P, j->dp,
                          ranks, hw->nodes, hw->ranks_per_node);
    if (P > L) return mf_err_set(err, "plan: --pp %d exceeds the student's %d layers", P, L);
    if (j->task == MF_PLAN_DISTILL && j->partition == MF_PLAN_SEPARATE && P > j->teacher.n_layers)
        return mf_err_set(err, "plan: --pp %d exceeds the teacher's %d layers", P, j->teacher.n_layers);
    if (j->task == MF_PLAN_EVAL && j->dp != 1) return mf_err_set(err, "plan: eval has no data parallelism (--dp %d)", j->dp);
    if (j->seq < 2 || j->micro_batch < 1 || j->micro_batches < 1)
        return mf_err_set(err, "plan: --seq >= 2, --micro-batch >= 1 and --micro-batches >= 1 required");
    if (j->task == MF_PLAN_DISTILL && j->teacher.vocab_size != j->student.vocab_size)
        return mf_err_set(err, "plan: the student's vocabulary (%d) differs from the teacher's (%d)", j->student.vocab_size,
                          j->teacher.vocab_size);
    if (!(hw->peak > 0 && hw->peak_half >= 0 && hw->eff > 0 && hw->mem > 0 && hw->mem_bw > 0 && hw->intra_bw > 0 && hw->inter_bw > 0 && hw->fs_bw > 0))
        return mf_err_set(err, "plan: peak, efficiency, memory and bandwidths must be positive");
    out->job = *j;
    out->P = P;
    out->dp = j->dp;
    out->ranks = ranks;
    out->m = j->micro_batches;
    out->st = calloc((size_t)P, sizeof *out->st);
    int *sb = malloc(sizeof *sb * (size_t)(P + 1)), *tb = malloc(sizeof *tb * (size_t)(P + 1));
    if (!out->st || !sb || !tb) { free(sb); free(tb); mf_plan_free(out); return mf_err_set(err, "plan: out of memory"); }
    ctxt x = {j, hw, P, j->dp, (double)j->seq * j->micro_batch};
    if (j->task == MF_PLAN_EVAL || j->partition == MF_PLAN_SEPARATE) { /* mpi/pipeline.c, as minifuse runs it */
        if (mf_pipe_partition(&j->student, P, j->seq, sb, err) != 0 ||
            (j->task == MF_PLAN_DISTILL && mf_pipe_partition(&j->teacher, P, j->seq, tb, err) != 0)) {
            free(sb); free(tb); mf_plan_free(out);
            return -1;
        }
    } else {
        if (partition_joint(&x, sb, 1) != 0 && partition_joint(&x, sb, 0) != 0) {
            free(sb); free(tb); mf_plan_free(out);
            return mf_err_set(err, "plan: no partition of %d layers over %d stages", L, P);
        }
        for (int s = 0; s <= P; s++) tb[s] = teacher_bound(j, sb[s]);
    }
    for (int s = 0; s < P; s++) {
        int t0 = j->task == MF_PLAN_DISTILL ? tb[s] : 0, t1 = j->task == MF_PLAN_DISTILL ? tb[s + 1] : 0;
        stage_fill(&x, &out->st[s], s, sb[s], sb[s + 1], t0, t1);
    }
    free(sb);
    free(tb);
    double flops = 0, t_f = 0, t_b = 0;
    for (int s = 0; s < P; s++) {
        mf_plan_stage *st = &out->st[s];
        flops += st->flops_mb;
        double t = st->t_compute_mb + st->t_p2p_mb, tf = st->t_fwd_mb + st->t_p2p_fwd, tb = st->t_bwd_mb + st->t_p2p_bwd;
        if (t > out->t_mb) out->t_mb = t;
        if (tf > t_f) t_f = tf;
        if (tb > t_b) t_b = tb;
        if (st->t_dp + st->t_optim > out->t_dp + out->t_optim) { out->t_dp = st->t_dp; out->t_optim = st->t_optim; }
        if (st->mem_total > out->st[out->worst].mem_total) out->worst = s;
    }
    out->flops_per_token = flops / x.T;
    out->student_params = mf_plan_student_params(&j->student);
    out->teacher_params = j->task == MF_PLAN_DISTILL ? (double)mf_config_total_params(&j->teacher) : 0;
    int m = out->m;
    /* 1F1B: every stage alternates forwards and backwards, the slowest stage sets the pace; GPipe: all
     * forwards stream through, then all backwards, each phase paced by its own slowest stage */
    if (j->schedule == MF_PLAN_GPIPE && j->task == MF_PLAN_DISTILL) out->t_mb = t_f + t_b;
    out->t_pipeline = (m + P - 1) * out->t_mb;
    out->bubble = (double)(P - 1) / (m + P - 1);
    out->t_step = out->t_pipeline + out->t_dp + out->t_optim;
    out->tokens_per_step = (double)out->dp * m * x.T;
    out->tokens_per_s = out->tokens_per_step / out->t_step;
    if (j->task == MF_PLAN_DISTILL) {
        out->ckpt_bytes = mf_plan_ckpt_bytes(&j->student);
        out->t_ckpt = out->ckpt_bytes / hw->fs_bw;
    }
    out->fits = out->st[out->worst].mem_total <= hw->mem;
    if (!out->fits) why_not(out, hw);
    return 0;
}

void mf_plan_free(mf_plan *p) {
    if (!p) return;
    free(p->st);
    p->st = NULL;
}

int mf_plan_search(const mf_plan_job *job, const mf_plan_hw *hw, int recompute_auto, int batch, mf_plan **out, int *n) {
    int ranks = hw->nodes * hw->ranks_per_node, cap = 0, best = -1;
    *out = NULL;
    *n = 0;
    for (int P = 1; P <= ranks; P++) {
        if (ranks % P) continue;
        mf_plan_job j = *job;
        j.pp = P;
        j.dp = ranks / P;
        if (j.task == MF_PLAN_EVAL && j.dp != 1) continue;
        if (batch > 0) {
            if (batch % (j.dp * j.micro_batch)) continue;
            j.micro_batches = batch / (j.dp * j.micro_batch);
        }
        for (int rc = 0; rc < 2; rc++) {
            if (recompute_auto) j.recompute = rc;
            else if (rc) break;
            if (j.task == MF_PLAN_EVAL && rc) break;
            mf_plan p;
            mf_err err;
            if (mf_plan_compute(&j, hw, &p, &err) != 0) continue;
            if (*n == cap) {
                cap = cap ? 2 * cap : 16;
                mf_plan *grown = realloc(*out, sizeof **out * (size_t)cap);
                if (!grown) { mf_plan_free(&p); return best; }
                *out = grown;
            }
            (*out)[*n] = p;
            if (p.fits && (best < 0 || p.tokens_per_s > (*out)[best].tokens_per_s)) best = *n;
            (*n)++;
        }
    }
    return best;
}
