/* distill_internal.h - the distillation trainer's state, shared by distill.c
 * (the schedule) and distill_aux.c (hidden-state map, teacher top-K cache). */
#ifndef MF_DISTILL_INTERNAL_H
#define MF_DISTILL_INTERNAL_H

#include <stdio.h>

#include "collective.h"
#include "stage.h"
#include "train/distill.h"
#include "train/optim.h"
#include "train/run.h"
#include "train/teacher_cache.h"
#include "train/train_model.h"

/* Intermediate-state distillation: student layer s[k] matches teacher layer t[k]. */
typedef struct hidden_map {
    int n;
    int *s, *t;          /* [n] */
    float **tbuf;        /* [n] teacher outputs held by this rank ([T][D], host) when it owns t[k] */
    float *tdev;         /* [T][D] a teacher output uploaded, on a device backend (else NULL) */
    float **grad;        /* [n_slots][cfg.n_layers of student] per micro-batch slot: gradient w.r.t.
                            student layer outputs (backend memory), or NULL (layer not owned or not mapped) */
    int n_slots;
    MPI_Request *req;    /* [n] sends of teacher outputs */
    int nmse;
} hidden_map;

typedef struct trainer {
    mf_distill_opts o;
    const int32_t *ids;          /* the training tokens (caller's) */
    const char *text_id;
    MPI_Comm world, pipe, dp;
    int wrank, wsize, replica, P, stage;
    mf_coll c_pipe, c_dp, c_world;
    mf_run run;
    mf_watchdog *wd;
    mf_stage teacher, student;   /* student.st unused: training state in ts */
    mf_train_state **ts;         /* [n_ts] one per window of the micro-batches in flight */
    float **dxs;                 /* [n_ts] gradient w.r.t. this stage's output, per window */
    int n_ts;
    int m, k;                    /* micro-batches per step and replica; windows per micro-batch */
    int mb_slots;                /* micro-batches in flight on this stage (n_ts = mb_slots * k) */
    int onef1b;                  /* 1: 1F1B schedule, 0: GPipe */
    mf_params ps;                /* gradients: one flat buffer, layer ranges = buckets */
    int shared_embed;            /* index in ps of the last stage's copy of a tied embedding, or -1 */
    mf_coll_req *bucket;         /* [layers owned] data-parallel sums in flight, in start order */
    int n_buckets;
    mf_adamw opt;
    mf_lr_sched sched;
    int64_t step, steps, data_pos, n_windows;
    mf_epochs order;             /* window order */
    float *x;                    /* [T][D] activations received from the previous stage */
    FILE *logf;
    hidden_map hm;
    mf_tcache tc;                /* last stage, --teacher-topk: the teacher's top-K logits per window */
    char teacher_sha[65], text_sha[65]; /* the cache's key */
    int32_t *tk_ids;             /* [T][K] */
    float *tk_logits;            /* [T][K] (host) */
    float *tk_dev;               /* [T][K] tk_logits uploaded, on a device backend (else NULL) */
} trainer;

/* distill_aux.c */
void mf_distill_hidden_init(trainer *t);
void mf_distill_hidden_capture(void *ctx, int layer, mf_act_point pt, const float *x, int T, int C);
void mf_distill_hidden_send(trainer *t);
double mf_distill_hidden_losses(trainer *t, int slot, double norm);
/* map[student_layers] <- the teacher layer of each student layer, from
 * STUDENT/config.json minifuse.dropped_layers (written by prune and fuse):
 * 1 when it fits both layer counts, else 0 (map unset). *n_dropped: how many are listed. */
int mf_distill_layer_map(const char *student, int teacher_layers, int student_layers, int *map, int *n_dropped);
void mf_distill_hidden_free(trainer *t);
void mf_distill_topk_open(trainer *t);

#endif
