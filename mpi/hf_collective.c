#include "hf_collective.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/err.h"

/* Rank 0 creates OUT.tmp.<pid> and tells everyone its name. */
static void make_tmpdir(const char *out, MPI_Comm comm, int force, const char *who, char *tmpdir, size_t cap) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (rank == 0) {
        struct stat sb;
        if (stat(out, &sb) == 0 && !force) mf_fatal("%s: %s already exists (use --force to replace it)", who, out);
        snprintf(tmpdir, cap, "%s.tmp.%d", out, (int)getpid());
        if (mkdir(tmpdir, 0755) != 0) mf_fatal("%s: cannot create %s: %s", who, tmpdir, strerror(errno));
    }
    MPI_Bcast(tmpdir, (int)cap, MPI_CHAR, 0, comm);
}

/* Rank 0: the index naming, for every tensor of every rank, the shard that holds it.
 * Each rank contributes "name\0file\0" pairs; rank 0 gathers them in rank order. */
static void write_index(const char *tmpdir, MPI_Comm comm, const mf_tensor_ref *t, int n, const int *shard_of,
                        int first_shard, int shards) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    uint64_t bytes = 0, total = 0;
    size_t blen = 0;
    char fname[64];
    for (int i = 0; i < n; i++) { bytes += mf_st_tensor_bytes(&t[i], "F32"); blen += strlen(t[i].name) + 1 + sizeof fname; }
    MPI_Reduce(&bytes, &total, 1, MPI_UINT64_T, MPI_SUM, 0, comm);
    char *pairs = mf_malloc(blen + 1), *q = pairs;
    for (int i = 0; i < n; i++) {
        mf_hf_shard_name(fname, sizeof fname, first_shard + shard_of[i] + 1, shards);
        q += sprintf(q, "%s", t[i].name) + 1;
        q += sprintf(q, "%s", fname) + 1;
    }
    int bl = (int)(q - pairs), np = n, *lens = mf_malloc((size_t)size * sizeof *lens), *displs = mf_malloc((size_t)size * sizeof *displs);
    int nt = 0;
    MPI_Reduce(&np, &nt, 1, MPI_INT, MPI_SUM, 0, comm);
    MPI_Gather(&bl, 1, MPI_INT, lens, 1, MPI_INT, 0, comm);
    char *all = NULL;
    int tot = 0;
    if (rank == 0) {
        for (int r = 0; r < size; r++) { displs[r] = tot; tot += lens[r]; }
        all = mf_malloc((size_t)tot + 1);
    }
    MPI_Gatherv(pairs, bl, MPI_CHAR, all, lens, displs, MPI_CHAR, 0, comm);
    if (rank == 0) {
        const char **nm = mf_malloc((size_t)(nt ? nt : 1) * sizeof *nm), **fl = mf_malloc((size_t)(nt ? nt : 1) * sizeof *fl);
        const char *cur = all;
        for (int k = 0; k < nt; k++) {
            nm[k] = cur; cur += strlen(cur) + 1;
            fl[k] = cur; cur += strlen(cur) + 1;
        }
        char path[4400];
        mf_err err;
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", tmpdir);
        if (mf_hf_write_index(path, nm, fl, nt, total, &err) != 0) mf_fatal_err(&err);
        free(nm); free(fl);
    }
    free(all); free(pairs); free(lens); free(displs);
}

/* This rank's tensors into its shard files (shards first_shard+1 .. of `shards`). */
static int write_shards(const char *tmpdir, const mf_tensor_ref *t, int n, const int *shard_of, int k, int first_shard,
                        int shards, mf_err *err) {
    char file[256], path[4600];
    mf_tensor_ref *part = mf_malloc((size_t)(n ? n : 1) * sizeof *part);
    int rc = 0;
    for (int s = 0; s < k && rc == 0; s++) {
        int m = 0;
        for (int i = 0; i < n; i++) if (shard_of[i] == s) part[m++] = t[i];
        if (shards == 1) snprintf(file, sizeof file, "model.safetensors");
        else mf_hf_shard_name(file, sizeof file, first_shard + s + 1, shards);
        snprintf(path, sizeof path, "%s/%s", tmpdir, file);
        rc = mf_st_write(path, part, m, "F32", err);
    }
    free(part);
    return rc;
}

void mf_hf_write_collective(const char *out, MPI_Comm comm, const mf_config *cfg, const mf_tensor_ref *t, int n,
                            const char *extra_json, int force, const char *who) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    char tmpdir[4200];
    make_tmpdir(out, comm, force, who, tmpdir, sizeof tmpdir);
    /* each rank cuts its tensors into shards of at most MF_MAX_SHARD_BYTES; numbered in rank order */
    mf_err err;
    int *shard_of = mf_malloc((size_t)(n ? n : 1) * sizeof *shard_of);
    int k = n > 0 ? mf_hf_shard_plan(t, n, "F32", MF_MAX_SHARD_BYTES, shard_of, &err) : 0;
    if (k < 0) mf_fatal_err(&err);
    int first = 0, shards = 0;
    MPI_Exscan(&k, &first, 1, MPI_INT, MPI_SUM, comm);
    if (rank == 0) first = 0;
    MPI_Allreduce(&k, &shards, 1, MPI_INT, MPI_SUM, comm);
    int rc = write_shards(tmpdir, t, n, shard_of, k, first, shards, &err), all;
    MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MIN, comm);
    if (rc != 0) mf_fatal_err(&err);
    if (all != 0) mf_fatal("%s: another rank failed writing its shard of %s", who, out);
    if (shards > 1) write_index(tmpdir, comm, t, n, shard_of, first, shards);
    free(shard_of);
    char path[4600];
    if (rank == 0) {
        snprintf(path, sizeof path, "%s/config.json", tmpdir);
        if (mf_hf_write_config(path, cfg, "float32", extra_json, &err) != 0) mf_fatal_err(&err);
        struct stat sb;
        if (force && stat(out, &sb) == 0) {
            char old[4300];
            snprintf(old, sizeof old, "%s.old.%d", out, (int)getpid());
            if (rename(out, old) != 0) mf_fatal("%s: cannot move the old %s aside: %s", who, out, strerror(errno));
            char cmd[8800];
            snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", old);
            if (rename(tmpdir, out) != 0) mf_fatal("%s: cannot rename %s to %s: %s", who, tmpdir, out, strerror(errno));
            if (system(cmd) != 0) mf_fatal("%s: cannot remove %s", who, old);
        } else if (rename(tmpdir, out) != 0) mf_fatal("%s: cannot rename %s to %s: %s", who, tmpdir, out, strerror(errno));
    }
    MPI_Barrier(comm);
}
