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

/* Rank 0: the index naming, for every tensor of every rank, the shard that holds it. */
static void write_index(const char *tmpdir, MPI_Comm comm, const mf_tensor_ref *t, int n, const int *counts, int shards) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    uint64_t bytes = 0, total = 0;
    size_t blen = 0;
    for (int i = 0; i < n; i++) { bytes += mf_st_tensor_bytes(&t[i], "F32"); blen += strlen(t[i].name) + 1; }
    MPI_Reduce(&bytes, &total, 1, MPI_UINT64_T, MPI_SUM, 0, comm);
    char *names = mf_malloc(blen + 1), *q = names;
    for (int i = 0; i < n; i++) { size_t l = strlen(t[i].name) + 1; memcpy(q, t[i].name, l); q += l; }
    int bl = (int)blen, *lens = mf_malloc((size_t)size * sizeof *lens), *displs = mf_malloc((size_t)size * sizeof *displs);
    MPI_Gather(&bl, 1, MPI_INT, lens, 1, MPI_INT, 0, comm);
    char *all = NULL;
    int tot = 0;
    if (rank == 0) {
        for (int r = 0; r < size; r++) { displs[r] = tot; tot += lens[r]; }
        all = mf_malloc((size_t)tot + 1);
    }
    MPI_Gatherv(names, bl, MPI_CHAR, all, lens, displs, MPI_CHAR, 0, comm);
    if (rank == 0) {
        int nt = 0;
        for (int r = 0; r < size; r++) nt += counts[r];
        const char **nm = mf_malloc((size_t)nt * sizeof *nm), **fl = mf_malloc((size_t)nt * sizeof *fl);
        char (*fnames)[64] = mf_malloc((size_t)shards * sizeof *fnames);
        const char *cur = all;
        for (int r = 0, k = 0, s = 0; r < size; r++) {
            if (counts[r] == 0) continue;
            mf_hf_shard_name(fnames[s], sizeof fnames[s], s + 1, shards);
            for (int i = 0; i < counts[r]; i++, k++) { nm[k] = cur; fl[k] = fnames[s]; cur += strlen(cur) + 1; }
            s++;
        }
        char path[4400];
        mf_err err;
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", tmpdir);
        if (mf_hf_write_index(path, nm, fl, nt, total, &err) != 0) mf_fatal_err(&err);
        free(nm); free(fl); free(fnames);
    }
    free(all); free(names); free(lens); free(displs);
}

void mf_hf_write_collective(const char *out, MPI_Comm comm, const mf_config *cfg, const mf_tensor_ref *t, int n,
                            const char *extra_json, int force, const char *who) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    char tmpdir[4200];
    make_tmpdir(out, comm, force, who, tmpdir, sizeof tmpdir);
    int *counts = mf_malloc((size_t)size * sizeof *counts);
    MPI_Allgather(&n, 1, MPI_INT, counts, 1, MPI_INT, comm);
    int shards = 0, mine = -1;
    for (int r = 0; r < size; r++) if (counts[r] > 0) { if (r == rank) mine = shards; shards++; }
    char file[256], path[4600];
    mf_err err;
    if (shards == 1) snprintf(file, sizeof file, "model.safetensors");
    else mf_hf_shard_name(file, sizeof file, mine + 1, shards);
    snprintf(path, sizeof path, "%s/%s", tmpdir, file);
    int rc = n > 0 ? mf_st_write(path, t, n, "F32", &err) : 0, all;
    MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MIN, comm);
    if (rc != 0) mf_fatal_err(&err);
    if (all != 0) mf_fatal("%s: another rank failed writing its shard of %s", who, out);
    if (shards > 1) write_index(tmpdir, comm, t, n, counts, shards);
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
    free(counts);
}
