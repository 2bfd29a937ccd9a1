/* stage.h - one rank's part of a pipelined model: its layout, weights and state.
 *
 * mf_stage_forward() is called by every rank for every micro-batch in the
 * same order; the first rank embeds, the others receive activations, the last
 * rank produces logits. Tags keep micro-batches of different models apart. */
#ifndef MF_STAGE_H
#define MF_STAGE_H

#include "io/source.h"
#include "model/model.h"
#include "pipeline.h"

typedef struct mf_stage {
    mf_pipe pipe;
    mf_source *src;
    mf_model *model;
    mf_state *st;
} mf_stage;

/* Open `path` on every rank of comm, each loading only its layers. Errors abort all ranks. */
void mf_stage_open(mf_stage *s, const char *path, MPI_Comm comm, const mf_backend *be, int max_T, int max_ctx);
/* The same for a frozen model, holding its matrices as w says (--weights; mf_stage_open: float32). */
void mf_stage_open_w(mf_stage *s, const char *path, MPI_Comm comm, const mf_backend *be, int max_T, int max_ctx,
                     mf_weights w);
/* The same with the layer bounds given ([size of comm + 1], e.g. a joint teacher + student layout). */
void mf_stage_open_bounds(mf_stage *s, const char *path, MPI_Comm comm, const mf_backend *be, int max_T, int max_ctx,
                          const int *bounds);
/* Both: weights as w says, layer bounds given (NULL: balanced by FLOPs). */
void mf_stage_open_full(mf_stage *s, const char *path, MPI_Comm comm, const mf_backend *be, int max_T, int max_ctx,
                        mf_weights w, const int *bounds);
void mf_stage_close(mf_stage *s);

/* Forward T tokens (ids: host memory, needed on the first rank) at positions
 * pos0.. through this rank's stage. Returns 1 on the last rank, where
 * s->st->logits [T][V] then holds the result; 0 elsewhere. */
int mf_stage_forward(mf_stage *s, const int32_t *ids, int T, int pos0, int tag);
/* The same, skipping layers with skip[l] != 0 (NULL: none); head = 0 leaves the
 * last rank with the final hidden state (before the final norm) in s->st->x. */
int mf_stage_forward_ex(mf_stage *s, const int32_t *ids, int T, int pos0, int tag, const unsigned char *skip, int head);

/* The model without the blocks in skip and without block `drop`, started from
 * cache[drop - l0] (the input of block drop, held by its owner): ranks before
 * the owner do nothing, the others run their layers after `drop`. Returns 1 on
 * the last rank, where s->st->x holds the final hidden state (and
 * s->st->logits the logits when head). Positions start at 0. */
int mf_stage_forward_without(mf_stage *s, float *const *cache, const unsigned char *skip, int drop, int T, int head,
                             int tag);

/* n floats of the stage's backend memory as host memory: dev itself on a host
 * backend (no copy), else downloaded into *buf (grown as needed; free() it). */
const float *mf_stage_to_host(const mf_stage *s, const float *dev, size_t n, float **buf, size_t *cap);

/* Describe the layout in one log line per rank. */
void mf_stage_log_layout(const mf_stage *s, const char *what);

#endif
