#include "hf_collective.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>

#include "io/gguf.h"
#include "util/err.h"
#include "util/fsutil.h"
#include "util/log.h"

static void log_stale(const char *path) { mf_log("removed %s (left by a writer that is gone)", path); }

/* Rank 0 takes OUT.lock (one writer per output), removes what dead writers
 * left next to OUT, creates OUT.tmp.<host>.<pid>.<random> and tells everyone
 * its name. */
static void make_tmpdir(const char *out, MPI_Comm comm, int force, const char *who, char *tmpdir, size_t cap) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (rank == 0) {
        struct stat sb;
        if (stat(out, &sb) == 0 && !force) mf_fatal("%s: %s already exists (use --force to replace it)", who, out);
        char lock[4300];
        mf_err err;
        snprintf(lock, sizeof lock, "%s.lock", out);
        if (mf_lock_acquire(lock, out, &err) != 0) mf_fatal("%s: %s", who, err.msg);
        char *d = mf_strdup(out), *b = mf_strdup(out), prefix[4200];
        snprintf(prefix, sizeof prefix, "%s.", basename(b));
        mf_clean_stale_tmps(dirname(d), prefix, log_stale);
        free(d);
        free(b);
        char *t = mf_tmp_unique(out);
        snprintf(tmpdir, cap, "%s", t);
        free(t);
        if (mkdir(tmpdir, 0755) != 0) mf_fatal("%s: cannot create %s: %s", who, tmpdir, strerror(errno));
    }
    MPI_Bcast(tmpdir, (int)cap, MPI_CHAR, 0, comm);
}

/* Copy file src to dst (plain bytes). */
static int copy_file(const char *src, const char *dst, mf_err *err) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return mf_err_set(err, "%s: %s", src, strerror(errno));
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        int en = errno;
        close(in);
        return mf_err_set(err, "%s: %s", dst, strerror(en));
    }
    char buf[1 << 16];
    ssize_t n;
    int rc = 0;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)n) != n) { rc = mf_err_set(err, "%s: %s", dst, strerror(errno)); break; }
    if (n < 0 && rc == 0) rc = mf_err_set(err, "%s: %s", src, strerror(errno));
    close(in);
    if (close(out) != 0 && rc == 0) rc = mf_err_set(err, "%s: %s", dst, strerror(errno));
    return rc;
}

/* Rank 0: when extra_json names a tokenizer ("minifuse": {"tokenizer": path}),
 * put it inside the output - tokenizer.bin (a llama2.c file, copied) or
 * tokenizer.gguf (the tokenizer.* keys of a GGUF model, without its weights) -
 * and name it relative to the directory, so the output is self-contained and
 * readers need not follow paths out of it. Returns the new extra JSON
 * (malloc'ed), or NULL to keep extra_json. */
static char *bring_tokenizer(const char *tmpdir, const char *extra_json, const char *who) {
    if (!extra_json) return NULL;
    json_t *x = json_loads(extra_json, 0, NULL), *mf = json_object_get(x, "minifuse");
    json_t *tok = json_object_get(mf, "tokenizer");
    if (!json_is_string(tok) || !json_string_length(tok)) {
        json_decref(x);
        return NULL;
    }
    const char *src = json_string_value(tok);
    char magic[4] = {0}, dst[4400];
    FILE *f = fopen(src, "rb");
    if (!f) mf_fatal("%s: the tokenizer %s to put into the output: %s", who, src, strerror(errno));
    size_t nm = fread(magic, 1, 4, f);
    fclose(f);
    mf_err err;
    const char *name = nm == 4 && memcmp(magic, "GGUF", 4) == 0 ? "tokenizer.gguf" : "tokenizer.bin";
    snprintf(dst, sizeof dst, "%s/%s", tmpdir, name);
    if (name[10] == 'g') {
        mf_gguf *g = mf_gguf_open(src, &err);
        if (!g || mf_gguf_write_vocab(g, dst, &err) != 0) mf_fatal("%s: %s", who, err.msg);
        mf_gguf_close(g);
    } else if (copy_file(src, dst, &err) != 0) {
        mf_fatal("%s: cannot copy the tokenizer into the output: %s", who, err.msg);
    }
    json_object_set_new(mf, "tokenizer", json_string(name));
    char *s = json_dumps(x, JSON_COMPACT);
    json_decref(x);
    return s;
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
        char *extra = bring_tokenizer(tmpdir, extra_json, who);
        if (mf_hf_write_config(path, cfg, "float32", extra ? extra : extra_json, &err) != 0) mf_fatal_err(&err);
        free(extra);
        struct stat sb;
        if (force && stat(out, &sb) == 0) {
            /* the old output goes aside under a temporary name (cleaned up as stale if we die), then away:
             * removed with unlinkat/rmdir (nftw), never through a shell */
            char *old = mf_tmp_unique(out);
            if (rename(out, old) != 0) mf_fatal("%s: cannot move the old %s aside: %s", who, out, strerror(errno));
            if (rename(tmpdir, out) != 0) mf_fatal("%s: cannot rename %s to %s: %s", who, tmpdir, out, strerror(errno));
            if (mf_rmtree(old, &err) != 0) mf_fatal("%s: the new %s is in place, but the old one is not all gone: %s", who, out, err.msg);
            free(old);
        } else if (rename(tmpdir, out) != 0) mf_fatal("%s: cannot rename %s to %s: %s", who, tmpdir, out, strerror(errno));
        char lock[4300]; /* the output is in place: its lock (make_tmpdir) goes, file and all */
        snprintf(lock, sizeof lock, "%s.lock", out);
        mf_lock_drop(lock);
    }
    MPI_Barrier(comm);
}
