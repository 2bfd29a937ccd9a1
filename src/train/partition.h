/* partition.h - the joint teacher + student pipeline layout of distillation.
 *
 * Stage s trains the student's layers [sb[s], sb[s+1]) and runs the teacher's
 * layers [tb[s], tb[s+1]): the teacher layers those student layers came from
 * (map[i] = the teacher layer of student layer i, from the student's
 * config.json minifuse.dropped_layers; without a map, teacher layers are
 * split in proportion), so a micro-batch's teacher hidden states and logits
 * are produced on the rank that consumes them. Student splits are chosen to
 * minimise the largest modelled stage compute (mf_joint_stage_cost), under a
 * per-stage memory budget, ties broken by the largest stage memory. */
#ifndef MF_PARTITION_H
#define MF_PARTITION_H

#include "model/config.h"
#include "util/err.h"

typedef struct mf_joint_model {
    const mf_config *teacher, *student;
    const int *map;      /* [student->n_layers] increasing teacher layer indices, or NULL: proportional */
    int ctx;             /* tokens per window */
    int windows;         /* windows per micro-batch */
    int micro_batches;   /* micro-batches per step and replica (m) */
    int onef1b;          /* 1: stage s of P holds min(m, P - s) micro-batches of activations; 0 (GPipe): m */
    int recompute;       /* 1: only layer inputs kept, the backward recomputes the layer (4 forwards, not 3) */
    int topk;            /* > 0: teacher logits from the top-K cache, no teacher forward */
} mf_joint_model;

/* One stage's modelled cost per optimizer step and replica. */
typedef struct mf_stage_cost {
    double flops;        /* teacher forward + student forward and backward (+ recompute), embeddings, heads, loss */
    double bytes;        /* peak memory: weights (teacher 4 B/param; student 16: weight, gradient, 2 AdamW moments),
                            student activations of the micro-batches in flight, teacher state, logits */
} mf_stage_cost;

/* Stage `stage` of P with student layers [s0, s1) and teacher layers [t0, t1).
 * Pure: depends only on its arguments. */
mf_stage_cost mf_joint_stage_cost(const mf_joint_model *jm, int stage, int P, int s0, int s1, int t0, int t1);

/* Teacher bounds tb[P+1] that go with student bounds sb[P+1]. */
void mf_joint_teacher_bounds(const mf_joint_model *jm, int P, const int *sb, int *tb);

/* Student bounds sb[P+1] and teacher bounds tb[P+1] for P stages, each with at
 * least one student layer; budget > 0: no stage above `budget` bytes (else -1,
 * err names the stage and its modelled memory). */
int mf_joint_partition(const mf_joint_model *jm, int P, double budget, int *sb, int *tb, mf_err *err);

#endif
