/* collective_host.h - the MPI implementation of collective.h under its own
 * names, in a CUDA build.
 *
 * With MF_CUDA (make CUDA=1), cuda/collective_nccl.c provides the public
 * mf_coll_* functions: it moves device memory (a backend with is_host == 0)
 * with NCCL and hands everything else to these, which are collective_mpi.c
 * compiled under the names below. Without MF_CUDA, collective_mpi.c provides
 * mf_coll_* itself and nothing declared here exists. Semantics: collective.h. */
#ifndef MF_COLLECTIVE_HOST_H
#define MF_COLLECTIVE_HOST_H

#include "collective.h"

void mf_coll_host_init(mf_coll *c, MPI_Comm comm, const mf_backend *be);
void mf_coll_host_buckets(mf_coll *c);
void mf_coll_host_free(mf_coll *c);
void mf_coll_host_sum(const mf_coll *c, float *buf, size_t n);
void mf_coll_host_sum_start(const mf_coll *c, float *buf, size_t n, mf_coll_req *req);
void mf_coll_host_req_init(mf_coll_req *req, int n);
void mf_coll_host_progress(mf_coll_req *req, int n);
void mf_coll_host_wait(mf_coll_req *req, int n);
double mf_coll_host_sum_f64(const mf_coll *c, double x);
void mf_coll_host_gather_f64(const mf_coll *c, double x, double *all);
int mf_coll_host_max_int(const mf_coll *c, int x);
int mf_coll_host_any(const mf_coll *c, int flag);
int mf_coll_host_all(const mf_coll *c, int flag);
void mf_coll_host_bcast(const mf_coll *c, void *buf, size_t bytes, int root);
void mf_coll_host_bcast_f32(const mf_coll *c, float *buf, size_t n, int root);
void mf_coll_host_tied_fold(const mf_coll *c, float *grad, size_t n);

#endif
