/* pipeline.h - pipeline-parallel layout over MPI ranks.
 *
 * Rank r owns the contiguous layers [bounds[r], bounds[r+1]); rank 0 also
 * owns the embedding, the last rank the final norm and LM head. Bounds are
 * chosen to balance forward FLOPs (the head counts as its share of compute).
 * Activations [T][D] travel rank r -> r+1 by point-to-point messages; a
 * send copies into a free buffer of a pool (two at first, grown when every one
 * is still in flight), so a send never waits for its receiver and any schedule
 * whose receives are matched (GPipe, 1F1B) cannot deadlock on sends. */
#ifndef MF_PIPELINE_H
#define MF_PIPELINE_H

#include <mpi.h>
#include "backend/backend.h"
#include "model/config.h"
#include "util/err.h"

typedef struct mf_pipe {
    MPI_Comm comm;
    const mf_backend *be;  /* whose memory the activations are (set by the stage; NULL: host) */
    float *stage_in;       /* device backends: host staging of a received message */
    size_t stage_cap;
    int rank, size;
    int *bounds;          /* [size+1] */
    int l0, l1;           /* this rank's layers */
    int first, last;
    double wait_s;        /* seconds spent waiting in receives and flushes (its idle time) since the caller zeroed it */
    /* pools of non-blocking sends: [0] to rank+1 (activations), [1] to rank-1 (gradients) */
    struct mf_pipe_sendq {
        float **buf;       /* [n] each of cap floats */
        MPI_Request *req;  /* [n] */
        size_t cap;
        int n;
    } q[2];
} mf_pipe;

/* Balanced partition of n_layers layers over `size` ranks for sequences of ctx tokens. */
int mf_pipe_partition(const mf_config *c, int size, int ctx, int *bounds, mf_err *err);
int mf_pipe_init(mf_pipe *p, MPI_Comm comm, const mf_config *c, int ctx, mf_err *err);
/* The same with given bounds[size+1] (0 = bounds[0] <= ... <= bounds[size] = n_layers). */
int mf_pipe_init_bounds(mf_pipe *p, MPI_Comm comm, const int *bounds, int n_layers, mf_err *err);
void mf_pipe_free(mf_pipe *p);

/* Rank that owns layer l under p's partition, -1 if none. */
int mf_pipe_owner(const mf_pipe *p, int l);

/* Send x[n] to the next rank (returns at once; the data is copied). x and the
 * receive buffers are memory of p->be (downloaded into / uploaded from host
 * buffers for a device backend). */
void mf_pipe_send_next(mf_pipe *p, const float *x, size_t n, int tag);
/* Receive x[n] from the previous rank. */
void mf_pipe_recv_prev(mf_pipe *p, float *x, size_t n, int tag);
/* Backward direction (gradients of activations), rank r -> r-1; returns at once (copied). */
void mf_pipe_send_prev(mf_pipe *p, const float *dx, size_t n, int tag);
void mf_pipe_recv_next(mf_pipe *p, float *dx, size_t n, int tag);
/* Wait for all outstanding sends (counted in wait_s). */
void mf_pipe_flush(mf_pipe *p);

#endif
