/* score_ckpt.h - checkpoints of the scoring pass (`score --checkpoint-dir`).
 *
 * A long `score` run (many calibration windows, several Macro Influence
 * passes) can stop and continue, on the same or another number of ranks. A
 * checkpoint is a training checkpoint file (docs/checkpoint_schema.md: same
 * HDF5 conventions, lock, temporary name, keep-last, options fingerprint,
 * provenance and layout records) with no tensors and these float64 arrays
 * (/f64/NAME), every running sum exactly:
 *   score.layers.L.{mlp_s,mlp_q,att_s,att_q,norm_attn_s,norm_attn_q,norm_mlp_s,norm_mlp_q}
 *                       width statistics of layer L (written by its owner; --metrics width)
 *   score.layers.L.bi_cos   [1] Block Importance sum of layer L
 *   score.ppl_nll [L], score.mi_cos_sum [L], score.mi [iters][L],
 *   score.depth [3] = {base NLL, perplexity tokens, Macro Influence tokens}
 *                       the last rank's depth results
 * and the progress in the `state` attribute (JSON: pass, next window, the
 * removal order so far, samples and tokens counted, work counters). `step` is
 * the number of windows scored over all passes. Each rank reads the arrays of
 * the layers it owns under its own partition, so the scores of a resumed run
 * are the bits of an uninterrupted one, for any rank count. */
#ifndef MF_SCORE_CKPT_H
#define MF_SCORE_CKPT_H

#include <stdint.h>

#include "compress/importance.h"
#include "compress/macro_influence.h"
#include "train/run.h"

/* What a scoring run has accumulated (pointers into score.c's state). */
typedef struct mf_score_state {
    int L, mi_iters, last;      /* last: this rank holds the depth results */
    int want_width;
    mf_importance *imp;
    double *ppl_nll;            /* [L] (last rank) */
    double *base_nll;
    long *ppl_tokens;
    mf_mi_acc *mi_acc;
    double *mi;                 /* [max(mi_iters, 1)][L] (last rank) */
    int *mi_order;              /* [max(mi_iters, 1)] every rank */
    long *layer_fwd, *heads;    /* this rank's work counters */
    int passes, samples, mi_samples; /* windows of pass 0 and of each later pass */
    int pass, window;           /* where to continue: window `window` of pass `pass` */
    int64_t done, total;        /* windows scored over all passes (the checkpoint number), and in all */
} mf_score_state;

/* Collective: write checkpoint s->done. model: for the record. */
void mf_score_ckpt_save(const mf_run *run, mf_score_state *s, const char *model);
/* Collective: continue from the newest checkpoint every rank reads (0: none,
 * start afresh; 1: resumed, s filled). Another option that changes the scores
 * is fatal, naming it; an unreadable checkpoint is skipped with a message. */
int mf_score_ckpt_resume(const mf_run *run, mf_score_state *s);

#endif
