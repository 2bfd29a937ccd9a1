/* teacher_cache.h - the teacher's top-K logits for every training window,
 * computed once and kept in an HDF5 file, so that later epochs (and later runs
 * on the same text) skip the teacher forward.
 *
 * Layout: /ids int32 [W][T][K] and /logits float32 [W][T][K] (raw teacher
 * logits of the K most likely tokens of every position, largest first); root
 * attributes format "minifuse-teacher-topk", K, ctx, n_windows, teacher,
 * text, complete = 1 (last). Written collectively by all ranks with parallel
 * HDF5: the last stage of every data-parallel replica writes the windows its
 * replica computed (window w belongs to replica w mod D); read serially. */
#ifndef MF_TEACHER_CACHE_H
#define MF_TEACHER_CACHE_H

#include <hdf5.h>
#include <mpi.h>
#include <stdint.h>
#include "util/err.h"

typedef struct mf_tcache {
    hid_t file, ids, logits;
    int K, T;
    int64_t W;
} mf_tcache;

/* Top-K of a row z[V] into ids[K], vals[K], largest first (ties: lower id first). */
void mf_topk(const float *z, int V, int K, int32_t *ids, float *vals);

/* Collective over world: create path (via path.tmp) with room for W windows.
 * *file is the open file; ids/logits datasets are returned in c. */
int mf_tcache_create(const char *path, MPI_Comm world, int K, int T, int64_t W, const char *teacher, const char *text,
                     mf_tcache *c, mf_err *err);
/* Write window w's [T][K] ids and logits (independent I/O, any rank). */
int mf_tcache_put(mf_tcache *c, int64_t w, const int32_t *ids, const float *logits, mf_err *err);
/* Collective: mark complete, close, rename path.tmp -> path. */
int mf_tcache_finish(const char *path, MPI_Comm world, mf_tcache *c, int rc, mf_err *err);

/* Open a complete cache for reading, checking K, ctx and W (0 = any). 1 if the
 * file does not exist or is incomplete (to be rebuilt), 0 opened, -1 error. */
int mf_tcache_open(const char *path, int K, int T, int64_t W, mf_tcache *c, mf_err *err);
int mf_tcache_get(const mf_tcache *c, int64_t w, int32_t *ids, float *logits, mf_err *err);
void mf_tcache_close(mf_tcache *c);

#endif
