/* coll_check.c - every collective of mpi/collective.h on P MPI ranks, against
 * values computed locally, for tests/test_collective.c (which cannot run under
 * mpirun itself) and for a multi-GPU check of the NCCL layer.
 *   mpirun -np P build/tests/tools/coll_check [--backend NAME]   (default cpu)
 * Buffers live in the backend's memory (uploaded, downloaded), so with a device
 * backend in a CUDA build the float collectives go through NCCL
 * (cuda/collective_nccl.c), else through MPI (collective_mpi.c). Rank r's
 * element i is r + 1 + i / 8 (sums exact in float, whatever the order).
 * Prints "ok" from rank 0, or one line per mismatch; exit 0 / 1. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "collective.h"

static int bad = 0;

static void check(const char *what, int rank, size_t i, double got, double want) {
    if (got == want) return;
    if (bad++ < 5) fprintf(stderr, "coll_check: rank %d: %s[%zu] = %.9g, want %.9g\n", rank, what, i, got, want);
}

/* n floats of backend memory holding rank r's values */
static float *make(const mf_backend *be, int r, size_t n) {
    float *h = malloc(n * sizeof *h), *d = be->alloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) h[i] = (float)(r + 1) + (float)(i % 64) / 8.0f;
    be->upload(d, h, n * sizeof *h);
    free(h);
    return d;
}

static float *fetch(const mf_backend *be, const float *d, size_t n) {
    float *h = malloc(n * sizeof *h);
    be->sync();
    be->download(h, d, n * sizeof *h);
    return h;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    const char *name = "cpu";
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--backend") == 0) name = argv[i + 1];
    const mf_backend *be = mf_backend_get(name);
    int rank, P;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    if (!be) {
        if (rank == 0) fprintf(stderr, "coll_check: no backend '%s' in this build (%s)\n", name, mf_backend_names());
        MPI_Finalize();
        return 2;
    }
    mf_coll c;
    mf_coll_init(&c, MPI_COMM_WORLD, be);
    mf_coll_buckets(&c);
    /* sum of all ranks' element i: sum_r (r + 1) + P * (i % 64) / 8 */
#define WANT_SUM(i) ((double)P * (P + 1) / 2 + (double)P * (double)((i) % 64) / 8.0)
    const size_t n = 1000003; /* odd: uneven pieces */
    float *g = make(be, rank, n);
    mf_coll_sum(&c, g, n);
    float *h = fetch(be, g, n);
    for (size_t i = 0; i < n; i++) check("sum", rank, i, h[i], WANT_SUM(i));
    free(h);

    /* three buckets in flight (one empty), progressed, then waited for */
    size_t bn[3] = {4097, 0, 123457};
    float *b[3];
    mf_coll_req req[3];
    mf_coll_req_init(req, 3);
    for (int k = 0; k < 3; k++) {
        b[k] = make(be, rank, bn[k] ? bn[k] : 1);
        mf_coll_sum_start(&c, b[k], bn[k], &req[k]);
        mf_coll_progress(req, k + 1);
    }
    mf_coll_wait(req, 3);
    for (int k = 0; k < 3; k++) {
        h = fetch(be, b[k], bn[k] ? bn[k] : 1);
        for (size_t i = 0; i < bn[k]; i++) check("bucket", rank, i, h[i], WANT_SUM(i));
        free(h);
        be->free(b[k]);
    }

    /* broadcast from the last rank */
    float *x = make(be, rank, 777);
    mf_coll_bcast_f32(&c, x, 777, P - 1);
    h = fetch(be, x, 777);
    for (size_t i = 0; i < 777; i++) check("bcast_f32", rank, i, h[i], (double)P + (double)(i % 64) / 8.0);
    free(h);

    /* tied fold: first and last end with first + last; the others keep theirs */
    float *t = make(be, rank, 5003);
    mf_coll_tied_fold(&c, t, 5003);
    h = fetch(be, t, 5003);
    for (size_t i = 0; i < 5003; i++) {
        double mine = (double)(rank + 1) + (double)(i % 64) / 8.0;
        double want = P == 1 || (rank != 0 && rank != P - 1) ? mine : 1.0 + P + 2.0 * (double)(i % 64) / 8.0;
        check("tied_fold", rank, i, h[i], want);
    }
    free(h);

    /* host scalars and flags */
    check("sum_f64", rank, 0, mf_coll_sum_f64(&c, rank + 0.5), (double)P * P / 2);
    check("max_int", rank, 0, mf_coll_max_int(&c, 3 * rank), 3 * (P - 1));
    check("any", rank, 0, mf_coll_any(&c, rank == P - 1), 1);
    check("all", rank, 0, mf_coll_all(&c, 1), 1);
    check("all(one rank 0)", rank, 0, mf_coll_all(&c, rank != P - 1), 0);
    int v = rank == 0 ? 42 : -1;
    mf_coll_bcast(&c, &v, sizeof v, 0);
    check("bcast", rank, 0, v, 42);

    be->free(g); be->free(x); be->free(t);
    mf_coll_free(&c);
    int any_bad = 0, mine = bad != 0;
    MPI_Allreduce(&mine, &any_bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0 && !any_bad) printf("ok: %d ranks, backend %s\n", P, be->name);
    MPI_Finalize();
    return any_bad;
}
