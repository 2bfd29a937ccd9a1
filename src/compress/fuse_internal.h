/* fuse_internal.h - the fusion run's state, shared by fuse_run.c (the loop,
 * the window, the training step) and fuse_ckpt.c (checkpoints and resume). */
#ifndef MF_FUSE_INTERNAL_H
#define MF_FUSE_INTERNAL_H

#include <stdio.h>

#include "collective.h"
#include "compress/fuse.h"
#include "compress/fuse_run.h"
#include "stage.h"
#include "train/optim.h"
#include "train/run.h"

typedef struct fuser {
    mf_fuse_opts o;
    MPI_Comm comm;
    int rank, size;
    mf_coll coll;
    mf_run run;
    mf_watchdog *wd;
    mf_stage st;
    int L0, T, D;
    const int32_t *ids;
    const char *text_id;
    unsigned char *removed, *touched; /* [L0] */
    int it;                    /* blocks removed so far */
    int *order;                /* [drop] removal order (original indices) */
    double *mi;                /* [drop][L0] MI of each iteration */
    mf_fuse_iter *rec;         /* [drop] */
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
    float *Sall, *Tall, *dSall;/* [batch][T][D] (kl-batch), backend memory */
    float *tdev;               /* [T][D] a teacher output uploaded (device backends; else NULL) */
    mf_adamw opt_g, opt_b;
    mf_lr_sched sched_g, sched_b;
    int64_t step, steps;       /* within the iteration */
    int64_t gstep;             /* optimizer steps + folds over the run: checkpoint numbering */
    int64_t tokens;            /* training tokens over the run */
    mf_epochs order_s;         /* sample order of the current iteration */
    FILE *logf;
} fuser;

/* fuse_run.c */
void mf_fuser_start_window(fuser *f);
/* fuse_ckpt.c */
void mf_fuser_save(fuser *f, int training);
/* Read the progress and the changed blocks of checkpoint path: 1 when it is
 * mid-iteration (then call mf_fuser_resume_window), 0 after a fold, -1 when it
 * cannot be read (err set; f is reset by the next attempt), -2 when it failed
 * after some weights were read (the model must be loaded again). A checkpoint
 * of another run is fatal. */
int mf_fuser_resume_state(fuser *f, const char *path, mf_err *err);
/* Mid-iteration: build the window of the checkpoint's block and read its
 * adapters and moments. 0, or -1 with err (damaged or unreadable: the window
 * is built, the caller frees it and tries the previous checkpoint). */
int mf_fuser_resume_window(fuser *f, const char *path, mf_err *err);

#endif
