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
    float **tbuf;        /* [n] teacher outputs held by this rank ([T][D]) when it owns t[k] */
    float **grad;        /* [cfg.n_layers of student] gradient w.r.t. student layer outputs, or NULL */
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
    mf_train_state **ts;         /* [n_ts] one per micro-batch in flight */
    float **dxs;                 /* [n_ts] gradient w.r.t. this stage's output, per micro-batch */
    int n_ts;
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
    float *tk_logits;            /* [T][K] */
} trainer;

/* distill_aux.c */
void mf_distill_hidden_init(trainer *t);
void mf_distill_hidden_capture(void *ctx, int layer, mf_act_point pt, const float *x, int T, int C);
void mf_distill_hidden_send(trainer *t);
double mf_distill_hidden_losses(trainer *t, double norm);
void mf_distill_hidden_free(trainer *t);
void mf_distill_topk_open(trainer *t);

#endif
