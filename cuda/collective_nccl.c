/* collective_nccl.c - collective.h in a CUDA build: NCCL for device memory,
 * the MPI implementation (collective_mpi.c as mf_coll_host_*, see
 * collective_host.h) for everything else.
 *
 * Compiled only with MF_CUDA (make CUDA=1). A collective whose backend keeps
 * its tensors on the device (the cuda backend) and has more than one rank gets
 * a dev_coll; its float buffers (gradient sums, float broadcasts, the
 * tied-embedding fold) go through NCCL:
 *   - the communicator of all ranks of c->comm is set up on the first float
 *     collective, which every rank of c->comm calls: rank 0 makes the id
 *     (ncclGetUniqueId), MPI_Bcast hands it to the others, ncclCommInitRank;
 *   - the tied-embedding fold has a communicator of its two ranks (the first
 *     and the last pipeline stage), set up the same way on its first call,
 *     the id going from first to last by MPI_Send (MF_TAG_NCCL_ID);
 *   - NCCL runs on a stream of its own (non-blocking, so the backend's kernels
 *     keep running beside a bucket's all-reduce), after the work the backend
 *     has queued: an event on c->stream when the backend gives its stream,
 *     else be->sync(). A sum is finished when that stream is (mf_coll_wait,
 *     or at once for the blocking calls), so what the backend queues after it
 *     reads the sum. While waiting, NCCL's asynchronous errors are polled so a
 *     dead peer ends the job (mf_fatal: MPI_Abort) instead of hanging it.
 * Host buffers (scalars, flags, bcast) stay on MPI: they are host memory on
 * every backend. The CPU device has to be chosen (cudaSetDevice) before the
 * first float collective; a communicator stays on that device.
 *
 * Determinism: NCCL's all-reduce leaves the same bits on every rank (each
 * piece is reduced once, then copied), but adds in the order of its ring or
 * tree, not in rank order as collective_mpi.c does; a run repeats bit for bit
 * at the same GPU count, NCCL version and NCCL_ALGO/NCCL_PROTO. */
#ifndef MF_CUDA
#error "collective_nccl.c is the collective layer of the CUDA build: compile it with -DMF_CUDA=1 (make CUDA=1)"
#endif

#include "collective.h"
#include "collective_host.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "tags.h"
#include "util/err.h"

#define PHASE_DEVICE 3 /* mf_coll_req.phase: an all-reduce queued on the dev_coll's stream */

typedef struct dev_coll {
    ncclComm_t all;       /* every rank of c->comm; NULL until the first float collective */
    ncclComm_t pair;      /* first and last rank of c->comm (tied fold, more than 2 ranks); NULL until used */
    cudaStream_t stream;  /* NCCL's stream; NULL until the first communicator */
    cudaEvent_t ready;    /* recorded on c->stream before a collective (when c->stream is set) */
    int device;           /* the CUDA device of the communicators */
    float *tmp;           /* tied fold: the peer's gradient [tmp_n], backend memory */
    size_t tmp_n;
} dev_coll;

/* ---------------------------------------------------------------- errors */

static void fail_cuda(const mf_coll *c, cudaError_t e, const char *call, const char *what) {
    mf_fatal("%s (%d ranks): %s: %s (%s)", what, c->size, call, cudaGetErrorString(e), cudaGetErrorName(e));
}

static void cuda_ok(const mf_coll *c, cudaError_t e, const char *call, const char *what) {
    if (e != cudaSuccess) fail_cuda(c, e, call, what);
}

static void nccl_ok(const mf_coll *c, ncclResult_t r, const char *call, const char *what) {
    if (r == ncclSuccess) return;
    const char *last = ncclGetLastError(NULL);
    mf_fatal("%s (%d ranks, CUDA device %d): %s: %s%s%s", what, c->size, c->dev ? ((dev_coll *)c->dev)->device : -1,
             call, ncclGetErrorString(r), last && *last ? ": " : "", last ? last : "");
}

/* ---------------------------------------------------------------- set-up */

static int on_device(const mf_coll *c) { return c->dev != NULL; }

/* NCCL's stream and event, on the current device (once per dev_coll). */
static void setup_stream(const mf_coll *c, dev_coll *d, const char *what) {
    if (d->stream) return;
    cuda_ok(c, cudaGetDevice(&d->device), "cudaGetDevice", what);
    cuda_ok(c, cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags", what);
    cuda_ok(c, cudaEventCreateWithFlags(&d->ready, cudaEventDisableTiming), "cudaEventCreateWithFlags", what);
}

/* The communicator of every rank of c->comm (collective over c->comm on its first call). */
static ncclComm_t comm_all(const mf_coll *c, dev_coll *d, const char *what) {
    if (d->all) return d->all;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (c->rank == 0) nccl_ok(c, ncclGetUniqueId(&id), "ncclGetUniqueId", what);
    MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, c->comm);
    setup_stream(c, d, what);
    nccl_ok(c, ncclCommInitRank(&d->all, c->size, id, c->rank), "ncclCommInitRank", what);
    return d->all;
}

/* The communicator of the first (NCCL rank 0) and the last rank (NCCL rank 1)
 * of c->comm; only those two call it. With two ranks that is comm_all. */
static ncclComm_t comm_pair(const mf_coll *c, dev_coll *d, const char *what) {
    if (c->size == 2) return comm_all(c, d, what);
    if (d->pair) return d->pair;
    int first = c->rank == 0, peer = first ? c->size - 1 : 0;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (first) {
        nccl_ok(c, ncclGetUniqueId(&id), "ncclGetUniqueId", what);
        MPI_Send(&id, (int)sizeof id, MPI_BYTE, peer, MF_TAG_NCCL_ID, c->comm);
    } else {
        MPI_Recv(&id, (int)sizeof id, MPI_BYTE, peer, MF_TAG_NCCL_ID, c->comm, MPI_STATUS_IGNORE);
    }
    setup_stream(c, d, what);
    nccl_ok(c, ncclCommInitRank(&d->pair, 2, id, first ? 0 : 1), "ncclCommInitRank", what);
    return d->pair;
}

/* ---------------------------------------------------------------- ordering */

/* NCCL's stream waits for the work the backend has queued (the buffers' producers). */
static void after_backend(const mf_coll *c, dev_coll *d, const char *what) {
    if (c->stream) {
        cuda_ok(c, cudaEventRecord(d->ready, (cudaStream_t)c->stream), "cudaEventRecord", what);
        cuda_ok(c, cudaStreamWaitEvent(d->stream, d->ready, 0), "cudaStreamWaitEvent", what);
    } else {
        c->be->sync();
    }
}

/* An asynchronous NCCL error of comm (a peer gone, a network failure) is fatal. */
static void poll_async(const mf_coll *c, ncclComm_t comm, const char *what) {
    if (!comm) return;
    ncclResult_t a = ncclSuccess;
    nccl_ok(c, ncclCommGetAsyncError(comm, &a), "ncclCommGetAsyncError", what);
    if (a != ncclSuccess && a != ncclInProgress) nccl_ok(c, a, "NCCL operation in flight", what);
}

/* 1 if everything queued on NCCL's stream is done, 0 if not yet. */
static int stream_done(const mf_coll *c, dev_coll *d, const char *what) {
    cudaError_t e = cudaStreamQuery(d->stream);
    if (e == cudaSuccess) return 1;
    if (e != cudaErrorNotReady) fail_cuda(c, e, "cudaStreamQuery", what);
    poll_async(c, d->all, what);
    poll_async(c, d->pair, what);
    return 0;
}

/* Wait until NCCL's stream is done, watching for asynchronous errors. */
static void stream_finish(const mf_coll *c, dev_coll *d, const char *what) {
    while (!stream_done(c, d, what)) sched_yield();
}

/* ---------------------------------------------------------------- set-up and teardown */

void mf_coll_init(mf_coll *c, MPI_Comm comm, const mf_backend *be) {
    mf_coll_host_init(c, comm, be);
    if (be && !be->is_host && c->size > 1 && strcmp(be->name, "cuda") == 0) c->dev = mf_calloc(1, sizeof(dev_coll));
}

void mf_coll_buckets(mf_coll *c) { mf_coll_host_buckets(c); }

/* Collective over the ranks that set up each communicator (every rank of
 * c->comm; the tied pair only on its two ranks). */
void mf_coll_free(mf_coll *c) {
    dev_coll *d = c->dev;
    if (d) {
        const char *what = "collective teardown";
        if (d->stream) stream_finish(c, d, what);
        if (d->pair) nccl_ok(c, ncclCommFinalize(d->pair), "ncclCommFinalize", what);
        if (d->all) nccl_ok(c, ncclCommFinalize(d->all), "ncclCommFinalize", what);
        if (d->pair) nccl_ok(c, ncclCommDestroy(d->pair), "ncclCommDestroy", what);
        if (d->all) nccl_ok(c, ncclCommDestroy(d->all), "ncclCommDestroy", what);
        if (d->tmp) {
            c->be->sync(); /* the last fold's add has read tmp */
            c->be->free(d->tmp);
        }
        if (d->stream) {
            cuda_ok(c, cudaEventDestroy(d->ready), "cudaEventDestroy", what);
            cuda_ok(c, cudaStreamDestroy(d->stream), "cudaStreamDestroy", what);
        }
        free(d);
        c->dev = NULL;
    }
    mf_coll_host_free(c);
}

/* ---------------------------------------------------------------- float sums */

void mf_coll_sum(const mf_coll *c, float *buf, size_t n) {
    if (!on_device(c)) {
        mf_coll_host_sum(c, buf, n);
        return;
    }
    const char *what = "gradient sum over the replicas";
    dev_coll *d = c->dev;
    ncclComm_t comm = comm_all(c, d, what);
    if (n == 0) return;
    after_backend(c, d, what);
    nccl_ok(c, ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, comm, d->stream), "ncclAllReduce", what);
    stream_finish(c, d, what);
}

void mf_coll_sum_start(const mf_coll *c, float *buf, size_t n, mf_coll_req *req) {
    if (!on_device(c)) {
        mf_coll_host_sum_start(c, buf, n, req);
        return;
    }
    const char *what = "gradient bucket sum over the replicas";
    mf_coll_host_req_init(req, 1);
    if (c->gather == MPI_COMM_NULL) mf_fatal("internal: bucket sums need mf_coll_buckets");
    dev_coll *d = c->dev;
    ncclComm_t comm = comm_all(c, d, what);
    if (n == 0) return;
    after_backend(c, d, what);
    nccl_ok(c, ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, comm, d->stream), "ncclAllReduce", what);
    req->c = c;
    req->buf = buf;
    req->phase = PHASE_DEVICE;
}

void mf_coll_req_init(mf_coll_req *req, int n) { mf_coll_host_req_init(req, n); }

/* The dev_coll of the first request queued on a device stream, NULL if none
 * is (then the array holds MPI requests or none started). */
static const mf_coll *device_reqs(const mf_coll_req *req, int n) {
    for (int i = 0; i < n; i++)
        if (req[i].phase == PHASE_DEVICE) return req[i].c;
    return NULL;
}

/* Mark every device request of req[n] finished (one stream, done in order). */
static void device_reqs_done(mf_coll_req *req, int n) {
    for (int i = 0; i < n; i++)
        if (req[i].phase == PHASE_DEVICE) {
            req[i].phase = 0;
            req[i].buf = NULL;
        }
}

void mf_coll_progress(mf_coll_req *req, int n) {
    const mf_coll *c = device_reqs(req, n);
    if (!c) {
        mf_coll_host_progress(req, n);
        return;
    }
    /* NCCL progresses on its own; look whether all is done and for errors */
    if (stream_done(c, c->dev, "gradient bucket sum over the replicas")) device_reqs_done(req, n);
}

void mf_coll_wait(mf_coll_req *req, int n) {
    const mf_coll *c = device_reqs(req, n);
    if (!c) {
        mf_coll_host_wait(req, n);
        return;
    }
    stream_finish(c, c->dev, "gradient bucket sum over the replicas");
    device_reqs_done(req, n);
}

/* ---------------------------------------------------------------- scalars, flags, broadcasts (host memory) */

double mf_coll_sum_f64(const mf_coll *c, double x) { return mf_coll_host_sum_f64(c, x); }
void mf_coll_gather_f64(const mf_coll *c, double x, double *all) { mf_coll_host_gather_f64(c, x, all); }
int mf_coll_max_int(const mf_coll *c, int x) { return mf_coll_host_max_int(c, x); }
int mf_coll_any(const mf_coll *c, int flag) { return mf_coll_host_any(c, flag); }
int mf_coll_all(const mf_coll *c, int flag) { return mf_coll_host_all(c, flag); }
void mf_coll_bcast(const mf_coll *c, void *buf, size_t bytes, int root) { mf_coll_host_bcast(c, buf, bytes, root); }

void mf_coll_bcast_f32(const mf_coll *c, float *buf, size_t n, int root) {
    if (!on_device(c)) {
        mf_coll_host_bcast_f32(c, buf, n, root);
        return;
    }
    const char *what = "broadcast of backend memory";
    dev_coll *d = c->dev;
    ncclComm_t comm = comm_all(c, d, what);
    if (n == 0) return;
    after_backend(c, d, what);
    nccl_ok(c, ncclBroadcast(buf, buf, n, ncclFloat, root, comm, d->stream), "ncclBroadcast", what);
    stream_finish(c, d, what);
}

/* First and last stage swap their copies (ncclSend/ncclRecv in one group), then
 * each adds the other's: grad + peer. IEEE addition commutes, so both end with
 * the same bits (first + last). */
void mf_coll_tied_fold(const mf_coll *c, float *grad, size_t n) {
    if (!on_device(c)) {
        mf_coll_host_tied_fold(c, grad, n);
        return;
    }
    int last = c->size - 1;
    if ((c->rank != 0 && c->rank != last) || n == 0) return;
    const char *what = "tied-embedding fold (first + last stage)";
    dev_coll *d = c->dev;
    ncclComm_t comm = comm_pair(c, d, what);
    int peer = c->rank == 0 ? 1 : 0; /* NCCL ranks of the pair */
    after_backend(c, d, what);       /* also: the previous fold's add has read tmp */
    if (d->tmp_n < n) {
        if (d->tmp) c->be->free(d->tmp);
        d->tmp = c->be->alloc(n * sizeof *d->tmp);
        d->tmp_n = n;
    }
    nccl_ok(c, ncclGroupStart(), "ncclGroupStart", what);
    nccl_ok(c, ncclSend(grad, n, ncclFloat, peer, comm, d->stream), "ncclSend", what);
    nccl_ok(c, ncclRecv(d->tmp, n, ncclFloat, peer, comm, d->stream), "ncclRecv", what);
    nccl_ok(c, ncclGroupEnd(), "ncclGroupEnd", what);
    stream_finish(c, d, what);
    c->be->add(grad, d->tmp, n); /* grad[n] += peer's copy, on the backend's stream */
}
