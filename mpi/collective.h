/* collective.h - the collectives of training, behind one interface.
 *
 * Everything a training schedule communicates besides pipeline activations
 * goes through here: the data-parallel sum of a flat gradient buffer (whole or
 * by buckets, started while the backward pass goes on), the tied-embedding
 * fold between the first and the last pipeline stage, the global gradient norm,
 * scalar sums (the loss), broadcasts of replicated state, and any/all flags
 * (stop requests). The MPI implementation is collective_mpi.c; a device
 * implementation (NCCL) provides the same functions for buffers of its backend
 * and queues them on the backend's stream: callers pass backend memory and
 * never call MPI (or NCCL) for training themselves.
 *
 * Determinism: every sum adds the ranks' values in rank order,
 * ((g0 + g1) + g2) + ..., whatever the message size, the bucketing or the MPI
 * library's tuning (MPI_Allreduce picks its algorithm, and so its order of
 * addition, by message size and rank count). The float sums are a hand-made
 * reduce-scatter (rank k adds up piece k of every rank's buffer) followed by an
 * all-gather: the traffic of a ring all-reduce, 2 (P-1)/P of the buffer per
 * rank. The norm and the scalar sums add per-rank values in rank order too.
 *
 * Backend memory MPI cannot read (is_host == 0: devsim, or a device without
 * its own implementation here) is staged: downloaded to a host copy, summed,
 * broadcast or folded there by the same code, and uploaded back; the results
 * are the same bits as on host memory. */
#ifndef MF_COLLECTIVE_H
#define MF_COLLECTIVE_H

#include <mpi.h>
#include <stddef.h>
#include "backend/backend.h"

typedef struct mf_coll {
    MPI_Comm comm;            /* not owned */
    MPI_Comm gather;          /* bucket sums' second phase (mf_coll_buckets), else MPI_COMM_NULL */
    int rank, size;
    const mf_backend *be;     /* whose memory the float buffers are */
    void *stream;             /* device implementations: the stream the backend queues on, which a collective
                               * waits for (NULL: be->sync() before it) */
    void *dev;                /* the device implementation's state (collective_nccl.c), else NULL */
} mf_coll;

/* A bucket sum in flight: exchange of pieces, local sum, all-gather. */
typedef struct mf_coll_req {
    MPI_Request r;
    int phase;                /* 0 idle, 1 exchanging pieces, 2 gathering sums, 3 queued on a device stream */
    float *buf, *tmp;         /* the caller's buffer (or its host copy, below); [P][my piece] received pieces */
    float *staged;            /* a staged sum: the caller's backend buffer, buf its host copy (else NULL) */
    int *cnt, *dsp, *rdsp;    /* [P] piece sizes, offsets in buf, offsets in tmp */
    const mf_coll *c;
} mf_coll_req;

void mf_coll_init(mf_coll *c, MPI_Comm comm, const mf_backend *be);
/* Collective: make c ready for bucket sums in flight during other work (a
 * second communicator for their all-gather phase, so that every rank starts
 * the same operations in the same order). mf_coll_free releases it. */
void mf_coll_buckets(mf_coll *c);
void mf_coll_free(mf_coll *c);

/* buf[n] = sum over the ranks of buf[n] (in place). */
void mf_coll_sum(const mf_coll *c, float *buf, size_t n);
/* The same, started now and finished by mf_coll_wait; buf must not be touched meanwhile. */
void mf_coll_sum_start(const mf_coll *c, float *buf, size_t n, mf_coll_req *req);
/* Mark n requests as not started (before any start, progress or wait). */
void mf_coll_req_init(mf_coll_req *req, int n);
/* Let started sums progress (call between pieces of other work). */
void mf_coll_progress(mf_coll_req *req, int n);
void mf_coll_wait(mf_coll_req *req, int n);

/* Sum of one double per rank, added in rank order (the same bits on every rank). */
double mf_coll_sum_f64(const mf_coll *c, double x);
/* all[size] = every rank's x, in rank order, on every rank. */
void mf_coll_gather_f64(const mf_coll *c, double x, double *all);
/* The largest of one int per rank. */
int mf_coll_max_int(const mf_coll *c, int x);
/* 1 on every rank if flag != 0 on any rank / on all ranks. */
int mf_coll_any(const mf_coll *c, int flag);
int mf_coll_all(const mf_coll *c, int flag);
/* bytes of buf from rank root to every rank (host memory). */
void mf_coll_bcast(const mf_coll *c, void *buf, size_t bytes, int root);
/* n floats of backend memory from rank root to every rank. */
void mf_coll_bcast_f32(const mf_coll *c, float *buf, size_t n, int root);

/* Tied embeddings split over a pipeline: the first stage (rank 0 of c) and the
 * last (rank size-1) each hold a gradient of the same table; both end with
 * first + last, added in that order on both. Other ranks return at once; a
 * one-stage pipeline has nothing to fold. */
void mf_coll_tied_fold(const mf_coll *c, float *grad, size_t n);

#endif
