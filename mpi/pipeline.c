#include "pipeline.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

/* cost[i] of layer i, plus the head's cost which lands on the last stage. */
static double stage_cost(const double *prefix, int a, int b, int is_last, double head) {
    return prefix[b] - prefix[a] + (is_last ? head : 0.0);
}

int mf_pipe_partition(const mf_config *c, int size, int ctx, int *bounds, mf_err *err) {
    int L = c->n_layers;
    if (size < 1 || size > L)
        return mf_err_set(err, "cannot split %d layers over %d pipeline ranks (need 1 <= ranks <= layers)", L, size);
    double *prefix = mf_malloc((size_t)(L + 1) * sizeof *prefix);
    prefix[0] = 0;
    for (int i = 0; i < L; i++) prefix[i + 1] = prefix[i] + mf_config_layer_flops(c, ctx / 2);
    double head = mf_config_head_flops(c);
    /* best[s][j]: minimal max-stage cost putting layers [0,j) on stages [0,s) */
    double *best = mf_malloc((size_t)(size + 1) * (L + 1) * sizeof *best);
    int *arg = mf_malloc((size_t)(size + 1) * (L + 1) * sizeof *arg);
    for (int i = 0; i < (size + 1) * (L + 1); i++) best[i] = DBL_MAX;
    best[0] = 0;
    for (int s = 1; s <= size; s++)
        for (int j = s; j <= L - (size - s); j++)
            for (int i = s - 1; i < j; i++) {
                double prev = best[(s - 1) * (L + 1) + i];
                if (prev == DBL_MAX) continue;
                double cst = stage_cost(prefix, i, j, s == size, head);
                double v = prev > cst ? prev : cst;
                if (v < best[s * (L + 1) + j]) { best[s * (L + 1) + j] = v; arg[s * (L + 1) + j] = i; }
            }
    bounds[size] = L;
    for (int s = size; s >= 1; s--) bounds[s - 1] = arg[s * (L + 1) + bounds[s]];
    free(prefix);
    free(best);
    free(arg);
    return 0;
}

/* The layout part of mf_pipe_init, bounds already set. */
static void init_rank(mf_pipe *p) {
    p->l0 = p->bounds[p->rank];
    p->l1 = p->bounds[p->rank + 1];
    p->first = p->rank == 0;
    p->last = p->rank == p->size - 1;
}

int mf_pipe_init(mf_pipe *p, MPI_Comm comm, const mf_config *c, int ctx, mf_err *err) {
    memset(p, 0, sizeof *p);
    p->comm = comm;
    MPI_Comm_rank(comm, &p->rank);
    MPI_Comm_size(comm, &p->size);
    p->bounds = mf_malloc((size_t)(p->size + 1) * sizeof *p->bounds);
    if (mf_pipe_partition(c, p->size, ctx, p->bounds, err) != 0) return -1;
    init_rank(p);
    return 0;
}

int mf_pipe_init_bounds(mf_pipe *p, MPI_Comm comm, const int *bounds, int n_layers, mf_err *err) {
    memset(p, 0, sizeof *p);
    p->comm = comm;
    MPI_Comm_rank(comm, &p->rank);
    MPI_Comm_size(comm, &p->size);
    if (bounds[0] != 0 || bounds[p->size] != n_layers)
        return mf_err_set(err, "pipeline bounds must run from layer 0 to %d, got %d to %d", n_layers, bounds[0], bounds[p->size]);
    for (int r = 0; r < p->size; r++)
        if (bounds[r + 1] < bounds[r]) return mf_err_set(err, "pipeline bounds decrease at rank %d (%d > %d)", r, bounds[r], bounds[r + 1]);
    p->bounds = mf_malloc((size_t)(p->size + 1) * sizeof *p->bounds);
    memcpy(p->bounds, bounds, (size_t)(p->size + 1) * sizeof *bounds);
    init_rank(p);
    return 0;
}

void mf_pipe_free(mf_pipe *p) {
    mf_pipe_flush(p);
    for (int d = 0; d < 2; d++) {
        for (int i = 0; i < p->q[d].n; i++) free(p->q[d].buf[i]);
        free(p->q[d].buf);
        free(p->q[d].req);
    }
    free(p->bounds);
    free(p->stage_in);
    memset(p, 0, sizeof *p);
}

/* A buffer of q that no send uses any more (its index); the pool grows by one
 * when all are in flight, so the caller never waits for a receiver. */
static int free_buffer(struct mf_pipe_sendq *q, size_t n) {
    if (n > q->cap) { /* larger messages: every buffer is reallocated once its send is done */
        MPI_Waitall(q->n, q->req, MPI_STATUSES_IGNORE);
        for (int i = 0; i < q->n; i++) { free(q->buf[i]); q->buf[i] = mf_malloc(n * sizeof(float)); }
        q->cap = n;
    }
    for (int i = 0; i < q->n; i++) {
        int done;
        MPI_Test(&q->req[i], &done, MPI_STATUS_IGNORE);
        if (done) return i;
    }
    int i = q->n++;
    q->buf = realloc(q->buf, (size_t)q->n * sizeof *q->buf);
    q->req = realloc(q->req, (size_t)q->n * sizeof *q->req);
    if (!q->buf || !q->req) mf_fatal("pipeline: out of memory for %d send buffers", q->n);
    q->buf[i] = mf_malloc((q->cap > n ? q->cap : n) * sizeof(float));
    q->req[i] = MPI_REQUEST_NULL;
    return i;
}

/* Copy x into a free buffer of queue q and start sending it to `to`. */
static void isend(mf_pipe *p, struct mf_pipe_sendq *q, const float *x, size_t n, int to, int tag) {
    int b = free_buffer(q, n);
    if (p->be) p->be->download(q->buf[b], x, n * sizeof(float));
    else memcpy(q->buf[b], x, n * sizeof(float));
    MPI_Isend(q->buf[b], (int)n, MPI_FLOAT, to, tag, p->comm, &q->req[b]);
}

void mf_pipe_send_next(mf_pipe *p, const float *x, size_t n, int tag) { isend(p, &p->q[0], x, n, p->rank + 1, tag); }

/* Receive n floats from rank `from` into x (memory of p->be). */
static void recv(mf_pipe *p, float *x, size_t n, int from, int tag) {
    double t0 = MPI_Wtime();
    if (!p->be || p->be->is_host) {
        MPI_Recv(x, (int)n, MPI_FLOAT, from, tag, p->comm, MPI_STATUS_IGNORE);
        p->wait_s += MPI_Wtime() - t0;
        return;
    }
    if (n > p->stage_cap) {
        free(p->stage_in);
        p->stage_in = mf_malloc(n * sizeof(float));
        p->stage_cap = n;
    }
    MPI_Recv(p->stage_in, (int)n, MPI_FLOAT, from, tag, p->comm, MPI_STATUS_IGNORE);
    p->wait_s += MPI_Wtime() - t0;
    p->be->upload(x, p->stage_in, n * sizeof(float));
}

void mf_pipe_recv_prev(mf_pipe *p, float *x, size_t n, int tag) { recv(p, x, n, p->rank - 1, tag); }

void mf_pipe_send_prev(mf_pipe *p, const float *dx, size_t n, int tag) { isend(p, &p->q[1], dx, n, p->rank - 1, tag); }

void mf_pipe_recv_next(mf_pipe *p, float *dx, size_t n, int tag) { recv(p, dx, n, p->rank + 1, tag); }

void mf_pipe_flush(mf_pipe *p) {
    double t0 = MPI_Wtime();
    for (int d = 0; d < 2; d++) MPI_Waitall(p->q[d].n, p->q[d].req, MPI_STATUSES_IGNORE);
    p->wait_s += MPI_Wtime() - t0;
}

int mf_pipe_owner(const mf_pipe *p, int l) {
    for (int r = 0; r < p->size; r++)
        if (l >= p->bounds[r] && l < p->bounds[r + 1]) return r;
    return -1;
}
