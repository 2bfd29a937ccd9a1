/* plan.h - the planner's model (`minifuse plan`): for a student (and teacher)
 * config and a cluster, the stage layout, each rank's memory term by term, the
 * step time (compute, bubble, pipeline and data-parallel communication, the
 * optimizer), the checkpoint's size and write time, and the token throughput.
 *
 * Pure functions of their arguments: no I/O, no MPI, no global state. Every
 * memory term follows what minifuse allocates (plan.c names the line of code
 * each term comes from); the time model is FLOPs / (peak x efficiency) plus
 * bytes / bandwidth, with the efficiency a calibration (docs/planner.md). */
#ifndef MF_PLAN_H
#define MF_PLAN_H

#include <stddef.h>
#include "model/config.h"
#include "util/err.h"

typedef enum { MF_PLAN_CPU, MF_PLAN_CUDA } mf_plan_backend;
/* 1F1B: stage s (0-based) of P holds min(P - s, m) micro-batches' activations at
 * the peak; GPipe (minifuse's distill before issue 15): every micro-batch of the
 * step (m) on every stage when P > 1, one when P = 1. */
typedef enum { MF_PLAN_1F1B, MF_PLAN_GPIPE } mf_plan_schedule;
/* joint: a stage runs the teacher layers matching its student layers (teacher
 * boundary = student boundary x Lt / Ls, rounded), balanced together;
 * separate: teacher and student each split alone by mpi/pipeline.c's partition
 * (forward FLOPs, the head on the last stage), as distill did before issue 15. */
typedef enum { MF_PLAN_JOINT, MF_PLAN_SEPARATE } mf_plan_partition;
typedef enum { MF_PLAN_DISTILL, MF_PLAN_EVAL } mf_plan_task;

/* One rank's hardware and the links between ranks. Bandwidths in bytes/s. */
typedef struct mf_plan_hw {
    mf_plan_backend backend;
    int nodes, ranks_per_node; /* ranks = nodes x ranks_per_node, numbered node-major (as mpirun/srun place them) */
    double mem;                /* bytes one rank may use: GPU memory, or host memory / ranks per node */
    const char *mem_what;      /* "GPU memory", "host memory" (for messages) */
    double peak;               /* FLOP/s of one rank's float32 GEMMs (the student, f32 frozen weights) */
    double peak_half;          /* FLOP/s of its GEMMs on half-precision weights (a bf16/f16 teacher) */
    double eff;                /* fraction of `peak` the whole step reaches on its FLOPs (a calibration) */
    double mem_bw;             /* memory bandwidth of one rank (the AdamW step is memory-bound) */
    double intra_bw, inter_bw; /* point-to-point / ring bandwidth per rank: within a node, across nodes */
    double latency;            /* seconds per message */
    double fs_bw;              /* aggregate file-system write bandwidth (checkpoints) */
    double reserve;            /* bytes per rank held outside minifuse's buffers: CUDA context + cuBLAS
                                * workspace + NCCL buffers, or (cpu) the process baseline: libraries, MPI,
                                * OpenBLAS buffers */
} mf_plan_hw;

typedef struct mf_plan_job {
    mf_plan_task task;
    mf_config student;         /* the model trained (eval: the model evaluated) */
    mf_config teacher;         /* distill only */
    int seq;                   /* tokens per window (--ctx) */
    int micro_batch;           /* windows per micro-batch (minifuse runs 1) */
    int micro_batches;         /* m: micro-batches per replica per optimizer step (eval: windows per rank pipeline) */
    int pp, dp;                /* the layout */
    int recompute;             /* --recompute: keep only layer inputs, recompute in the backward */
    int topk;                  /* distill --teacher-topk K: the teacher's logits come from the cache, no teacher
                                * forward in the step (the teacher is still loaded: it builds the cache) */
    int shared_scratch;        /* what-if: one backward scratch (and logits) per stage instead of one per
                                * window in flight, as model_train.c allocates it today */
    mf_plan_schedule schedule;
    mf_plan_partition partition;
    const int *teacher_map;    /* [student layers]: the teacher layer each student layer came from (a depth-pruned
                                * student's config.json "minifuse": {"dropped_layers"}), or NULL: proportional */
    double teacher_wbytes;     /* bytes per frozen weight held: 2 (bf16/f16) or 4 (f32); the files' own
                                * pages count nowhere: used in place they are these weights, else dropped
                                * as each tensor is converted, copied or uploaded (mf_mmap_drop) */
} mf_plan_job;

/* Memory terms of one rank, in bytes. */
enum {
    MF_PM_TEACHER_W,  /* frozen teacher weights */
    MF_PM_STUDENT_W,  /* student weights (float32, owned copies) */
    MF_PM_GRADS,      /* the flat gradient buffer */
    MF_PM_ADAM,       /* AdamW m and v */
    MF_PM_ACTS,       /* saved activations of the micro-batches in flight */
    MF_PM_MB_BUFS,    /* per micro-batch buffers: stage output, backward scratch, dL/dx */
    MF_PM_LOGITS,     /* logits and their gradients, the teacher's logits (last stage) */
    MF_PM_INFER,      /* the inference states (mf_state) of teacher and student: window buffers + KV cache */
    MF_PM_PIPE,       /* pipeline send/receive buffers */
    MF_PM_DP,         /* data-parallel gradient-sum scratch */
    MF_PM_RESERVE,    /* runtime (see mf_plan_hw.reserve) */
    MF_PM_N
};
extern const char *const mf_plan_mem_names[MF_PM_N];

typedef struct mf_plan_stage {
    int s0, s1;             /* student (eval: model) layers [s0, s1) */
    int t0, t1;             /* teacher layers [t0, t1) */
    int first, last;
    int in_flight;          /* micro-batches whose training state is held at the peak */
    double params;          /* trainable student parameters on this rank (a tied head's copy included) */
    double layer_params;    /* of which in layers (the data-parallel buckets) */
    double mem[MF_PM_N], mem_total;
    double flops_mb;        /* FLOPs of one micro-batch here: student fwd+bwd (+recompute), teacher fwd, heads */
    double t_compute_mb;    /* flops_mb / (peak x eff) (+ the last stage's loss) = t_fwd_mb + t_bwd_mb */
    double t_fwd_mb;        /* the forward pass: teacher, student, and on the last stage loss + head backward */
    double t_bwd_mb;        /* the student layers' backward (overlaps the bucket sums) */
    double t_p2p_mb;        /* activations sent per micro-batch: bytes / link bandwidth + latency */
    double t_p2p_fwd, t_p2p_bwd; /* its forward (to the next stage) and backward (to the previous) parts */
    double t_dp;            /* data-parallel sum of this stage's gradients, exposed part */
    double t_optim;         /* zero_grad, norm, AdamW, finiteness check: bytes / mem_bw */
} mf_plan_stage;

typedef struct mf_plan {
    mf_plan_job job;
    int P, dp, ranks, m;
    mf_plan_stage *st;      /* [P] */
    double student_params, teacher_params;
    double flops_per_token; /* training (or eval) FLOPs per token, all stages */
    double t_mb;            /* per micro-batch: the slowest stage's (1F1B), or the slowest forward + the
                             * slowest backward (GPipe) */
    double t_pipeline;      /* (m + P - 1) x t_mb */
    double bubble;          /* (P - 1) / (m + P - 1) */
    double t_dp, t_optim;   /* the slowest stage's exposed gradient sum and optimizer step */
    double t_step;          /* t_pipeline + t_dp + t_optim (eval: the whole pass) */
    double tokens_per_step, tokens_per_s;
    double ckpt_bytes, t_ckpt;
    int worst;              /* the stage with the largest memory total */
    int fits;               /* every stage's total <= hw.mem */
    char why[256];          /* when it does not fit: "stage 3 of 8: 91.2 GiB > 80.0 GiB GPU memory: activations 41.0 GiB" */
} mf_plan;

/* Computes the plan of job's layout (job->pp x job->dp ranks must equal the
 * cluster's). 0, or -1 with err naming the option at fault (a layout that
 * cannot exist: more stages than layers, ...). A layout that does not fit is
 * not an error: out->fits = 0 and out->why names the overflow. */
int mf_plan_compute(const mf_plan_job *job, const mf_plan_hw *hw, mf_plan *out, mf_err *err);
void mf_plan_free(mf_plan *p);

/* Every layout of the cluster's ranks (pp x dp, pp dividing the ranks; with
 * recompute tried both ways when recompute_auto), into *out[*n] (mf_plan_free each,
 * then free the array). batch > 0: global windows per step fixed, m = batch /
 * (dp x micro_batch), layouts it does not divide are left out. Returns the index
 * of the fastest that fits, or -1 (none fits, or none exists: *n = 0). */
int mf_plan_search(const mf_plan_job *job, const mf_plan_hw *hw, int recompute_auto, int batch, mf_plan **out, int *n);

/* Pieces, exposed for the tests. */
double mf_plan_student_params(const mf_config *c);          /* trainable parameters (a tied embedding once) */
int mf_plan_ckpt_tensors(const mf_config *c);               /* tensors in a distill checkpoint's /params */
double mf_plan_ckpt_bytes(const mf_config *c);              /* a distill checkpoint's file size */
double mf_plan_layer_act_bytes(const mf_config *c, double T, int recompute); /* saved per layer per micro-batch */
double mf_plan_state_bytes(const mf_config *c, int layers, int last, double T, int ctx); /* one mf_state */
double mf_plan_layer_fwd_flops(const mf_config *c, int seq); /* per token, one layer, causal attention averaged */

/* Whether a file of file_bytes a parameter is the weights held at held_bytes a parameter (within
 * 1 %: --teacher-file-gb counts the headers): the CLI's default held precision (a bf16/f16 file
 * is held in it, in place; any other is converted to float32). */
int mf_plan_used_in_place(double file_bytes, double held_bytes);

#endif
