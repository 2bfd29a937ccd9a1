/* collective_mpi.c - collective.h on MPI (backend memory staged through host copies).
 * Large buffers go in pieces of at most CHUNK elements (MPI counts are int).
 * In a CUDA build (MF_CUDA) these are mf_coll_host_* (collective_host.h):
 * cuda/collective_nccl.c owns the public names and hands host memory here. */
#include "collective.h"
#ifdef MF_CUDA
#include "collective_host.h"
#define mf_coll_init mf_coll_host_init
#define mf_coll_buckets mf_coll_host_buckets
#define mf_coll_free mf_coll_host_free
#define mf_coll_sum mf_coll_host_sum
#define mf_coll_sum_start mf_coll_host_sum_start
#define mf_coll_req_init mf_coll_host_req_init
#define mf_coll_progress mf_coll_host_progress
#define mf_coll_wait mf_coll_host_wait
#define mf_coll_sum_f64 mf_coll_host_sum_f64
#define mf_coll_gather_f64 mf_coll_host_gather_f64
#define mf_coll_max_int mf_coll_host_max_int
#define mf_coll_any mf_coll_host_any
#define mf_coll_all mf_coll_host_all
#define mf_coll_bcast mf_coll_host_bcast
#define mf_coll_bcast_f32 mf_coll_host_bcast_f32
#define mf_coll_tied_fold mf_coll_host_tied_fold
#endif

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "tags.h"
#include "util/err.h"

#define CHUNK ((size_t)1 << 30) /* elements per MPI call */

/* ---------------------------------------------------------------- staging */

/* Does c's float memory need a host copy for MPI (a backend with is_host == 0)? */
static int staged(const mf_coll *c) { return c->be && !c->be->is_host; }

/* A host copy of n floats of backend memory (download). */
static float *stage_in(const mf_coll *c, const float *buf, size_t n) {
    float *h = mf_malloc((n ? n : 1) * sizeof *h);
    if (n) c->be->download(h, buf, n * sizeof *h);
    return h;
}

/* Back to backend memory (upload) and free the host copy. */
static void stage_out(const mf_coll *c, float *buf, float *h, size_t n) {
    if (n) c->be->upload(buf, h, n * sizeof *h);
    free(h);
}

void mf_coll_init(mf_coll *c, MPI_Comm comm, const mf_backend *be) {
    c->comm = comm;
    c->gather = MPI_COMM_NULL;
    c->be = be;
    c->stream = NULL;
    c->dev = NULL;
    MPI_Comm_rank(comm, &c->rank);
    MPI_Comm_size(comm, &c->size);
}

void mf_coll_buckets(mf_coll *c) {
    if (c->gather == MPI_COMM_NULL) MPI_Comm_dup(c->comm, &c->gather);
}

void mf_coll_free(mf_coll *c) {
    if (c->gather != MPI_COMM_NULL) MPI_Comm_free(&c->gather);
}

/* ---------------------------------------------------------------- float sums */

/* Phase 1 of a sum of buf[n]: piece k of every rank goes to rank k. */
static void sum_begin(const mf_coll *c, float *buf, size_t n, mf_coll_req *q) {
    int P = c->size;
    q->c = c;
    q->buf = buf;
    q->cnt = mf_malloc((size_t)P * sizeof *q->cnt);
    q->dsp = mf_malloc((size_t)P * sizeof *q->dsp);
    q->rdsp = mf_malloc((size_t)P * sizeof *q->rdsp);
    int *rcnt = mf_malloc((size_t)P * sizeof *rcnt);
    for (int k = 0; k < P; k++) {
        q->dsp[k] = (int)(n * (size_t)k / (size_t)P);
        q->cnt[k] = (int)(n * (size_t)(k + 1) / (size_t)P) - q->dsp[k];
    }
    int mine = q->cnt[c->rank];
    for (int k = 0; k < P; k++) { rcnt[k] = mine; q->rdsp[k] = k * mine; }
    q->tmp = mf_malloc(((size_t)mine * P + 1) * sizeof *q->tmp);
    MPI_Ialltoallv(buf, q->cnt, q->dsp, MPI_FLOAT, q->tmp, rcnt, q->rdsp, MPI_FLOAT, c->comm, &q->r);
    free(rcnt);
    q->phase = 1;
}

/* Phase 2: add the P copies of this rank's piece in rank order, then gather every piece. */
static void sum_middle(mf_coll_req *q) {
    const mf_coll *c = q->c;
    int P = c->size, mine = q->cnt[c->rank];
    float *out = q->buf + q->dsp[c->rank];
    for (int i = 0; i < mine; i++) {
        float s = q->tmp[i];
        for (int k = 1; k < P; k++) s += q->tmp[(size_t)k * mine + i];
        out[i] = s;
    }
    MPI_Comm g = c->gather != MPI_COMM_NULL ? c->gather : c->comm;
    MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, q->buf, q->cnt, q->dsp, MPI_FLOAT, g, &q->r);
    q->phase = 2;
}

static void sum_end(mf_coll_req *q) {
    if (q->staged) {
        int P = q->c->size;
        stage_out(q->c, q->staged, q->buf, (size_t)q->dsp[P - 1] + (size_t)q->cnt[P - 1]);
        q->staged = NULL;
        q->buf = NULL;
    }
    free(q->tmp); free(q->cnt); free(q->dsp); free(q->rdsp);
    q->tmp = NULL;
    q->cnt = q->dsp = q->rdsp = NULL;
    q->phase = 0;
    q->r = MPI_REQUEST_NULL;
}

void mf_coll_req_init(mf_coll_req *req, int n) {
    memset(req, 0, (size_t)n * sizeof *req);
    for (int i = 0; i < n; i++) req[i].r = MPI_REQUEST_NULL;
}

void mf_coll_wait(mf_coll_req *req, int n) {
    for (int i = 0; i < n; i++) {
        if (req[i].phase == 1) {
            MPI_Wait(&req[i].r, MPI_STATUS_IGNORE);
            sum_middle(&req[i]);
        }
        if (req[i].phase == 2) {
            MPI_Wait(&req[i].r, MPI_STATUS_IGNORE);
            sum_end(&req[i]);
        }
    }
}

/* In start order: a sum's all-gather starts only after those of every earlier
 * sum, so each rank starts the phase-2 operations in the same order. */
void mf_coll_progress(mf_coll_req *req, int n) {
    for (int i = 0; i < n; i++) {
        int done;
        if (req[i].phase == 2) {
            MPI_Test(&req[i].r, &done, MPI_STATUS_IGNORE);
            if (done) sum_end(&req[i]);
        } else if (req[i].phase == 1) {
            MPI_Test(&req[i].r, &done, MPI_STATUS_IGNORE);
            if (!done) return;
            sum_middle(&req[i]);
        }
    }
}

void mf_coll_sum(const mf_coll *c, float *buf, size_t n) {
    if (c->size == 1) return;
    float *h = staged(c) ? stage_in(c, buf, n) : buf;
    for (size_t off = 0; off < n; off += CHUNK) {
        mf_coll_req q;
        mf_coll_req_init(&q, 1);
        sum_begin(c, h + off, n - off < CHUNK ? n - off : CHUNK, &q);
        mf_coll_wait(&q, 1);
    }
    if (h != buf) stage_out(c, buf, h, n);
}

void mf_coll_sum_start(const mf_coll *c, float *buf, size_t n, mf_coll_req *req) {
    mf_coll_req_init(req, 1);
    if (c->size == 1 || n == 0) return;
    if (c->gather == MPI_COMM_NULL) mf_fatal("internal: bucket sums need mf_coll_buckets");
    if (n > CHUNK) mf_fatal("internal: a gradient bucket of %zu floats (at most %zu)", n, CHUNK);
    if (!staged(c)) {
        sum_begin(c, buf, n, req);
        return;
    }
    sum_begin(c, stage_in(c, buf, n), n, req); /* uploaded back and freed by sum_end */
    req->staged = buf;
}

/* ---------------------------------------------------------------- scalars, flags, broadcasts */

double mf_coll_sum_f64(const mf_coll *c, double x) {
    if (c->size == 1) return x;
    double *all = mf_malloc((size_t)c->size * sizeof *all), sum = 0;
    MPI_Allgather(&x, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE, c->comm);
    for (int r = 0; r < c->size; r++) sum += all[r];
    free(all);
    return sum;
}

void mf_coll_gather_f64(const mf_coll *c, double x, double *all) {
    if (c->size == 1) { all[0] = x; return; }
    MPI_Allgather(&x, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE, c->comm);
}

int mf_coll_max_int(const mf_coll *c, int x) {
    int m = x;
    if (c->size > 1) MPI_Allreduce(&x, &m, 1, MPI_INT, MPI_MAX, c->comm);
    return m;
}

int mf_coll_any(const mf_coll *c, int flag) { return mf_coll_max_int(c, flag != 0); }

int mf_coll_all(const mf_coll *c, int flag) { return -mf_coll_max_int(c, -(flag != 0)); }

void mf_coll_bcast(const mf_coll *c, void *buf, size_t bytes, int root) {
    if (c->size == 1) return;
    for (size_t off = 0; off < bytes; off += CHUNK)
        MPI_Bcast((char *)buf + off, (int)(bytes - off < CHUNK ? bytes - off : CHUNK), MPI_BYTE, root, c->comm);
}

void mf_coll_bcast_f32(const mf_coll *c, float *buf, size_t n, int root) {
    if (c->size == 1) return;
    float *h = buf;
    if (staged(c)) h = c->rank == root ? stage_in(c, buf, n) : mf_malloc((n ? n : 1) * sizeof *h);
    for (size_t off = 0; off < n; off += CHUNK)
        MPI_Bcast(h + off, (int)(n - off < CHUNK ? n - off : CHUNK), MPI_FLOAT, root, c->comm);
    if (h == buf) return;
    if (c->rank == root) free(h);
    else stage_out(c, buf, h, n);
}

void mf_coll_tied_fold(const mf_coll *c, float *grad, size_t n) {
    int last = c->size - 1;
    if (c->size == 1 || (c->rank != 0 && c->rank != last)) return;
    float *dev = NULL;
    if (staged(c)) {
        dev = grad;
        grad = stage_in(c, dev, n);
    }
    int first = c->rank == 0, peer = first ? last : 0;
    float *tmp = mf_malloc((n ? n : 1) * sizeof *tmp);
    for (size_t off = 0; off < n; off += CHUNK) {
        int k = (int)(n - off < CHUNK ? n - off : CHUNK);
        MPI_Sendrecv(grad + off, k, MPI_FLOAT, peer, MF_TAG_TIED_EMBED, tmp + off, k, MPI_FLOAT, peer, MF_TAG_TIED_EMBED,
                     c->comm, MPI_STATUS_IGNORE);
    }
    /* the same order of addition on both ranks: first-stage gradient + last-stage gradient */
    for (size_t i = 0; i < n; i++) grad[i] = first ? grad[i] + tmp[i] : tmp[i] + grad[i];
    free(tmp);
    if (dev) stage_out(c, dev, grad, n);
}
