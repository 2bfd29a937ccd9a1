#include "train/teacher_cache.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/h5util.h"
#include "io/source.h"
#include "util/fsutil.h"
#include "util/log.h"
#include "util/sha256.h"

void mf_topk(const float *z, int V, int K, int32_t *ids, float *vals) {
    int n = 0; /* kept sorted, largest first */
    for (int i = 0; i < V; i++) {
        float v = z[i];
        if (n == K && !(v > vals[K - 1])) continue;
        int j = n < K ? n++ : K - 1;
        while (j > 0 && v > vals[j - 1]) { vals[j] = vals[j - 1]; ids[j] = ids[j - 1]; j--; }
        vals[j] = v;
        ids[j] = i;
    }
}

static void reset(mf_tcache *c) {
    memset(c, 0, sizeof *c);
    c->ids = c->logits = c->file = c->sums = H5I_INVALID_HID;
}

/* Size and newest mtime (ns) of a file, or of the regular files of a
 * directory whose names do not start with '.' (what mf_sha256_path hashes). */
static int stat_key(const char *path, int64_t *size, int64_t *mtime) {
    struct stat st;
    *size = *mtime = 0;
    if (stat(path, &st) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) {
        *size = (int64_t)st.st_size;
        *mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        return 0;
    }
    DIR *d = opendir(path);
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        size_t len = strlen(path) + strlen(e->d_name) + 2;
        char *f = mf_malloc(len);
        snprintf(f, len, "%s/%s", path, e->d_name);
        if (stat(f, &st) == 0 && S_ISREG(st.st_mode)) {
            *size += (int64_t)st.st_size;
            int64_t m = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
            if (m > *mtime) *mtime = m;
        }
        free(f);
    }
    closedir(d);
    return 0;
}

static int world_rank0(void) {
    int inited = 0, fin = 0, rank = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    if (inited && !fin) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank == 0;
}

int mf_tcache_key(MPI_Comm world, const char *teacher, const char *text, char teacher_sha[65], char text_sha[65],
                  mf_err *err) {
    int rank;
    MPI_Comm_rank(world, &rank);
    int rc = 0;
    teacher_sha[0] = text_sha[0] = 0;
    if (rank == 0) {
        rc = mf_sha256_path(teacher, teacher_sha, err);
        if (rc == 0) rc = mf_sha256_path(text, text_sha, err);
    }
    rc = mf_h5_bcast_rc(world, rc, err);
    MPI_Bcast(teacher_sha, 65, MPI_CHAR, 0, world);
    MPI_Bcast(text_sha, 65, MPI_CHAR, 0, world);
    return rc;
}

/* ---------------------------------------------------------------- writing */

int mf_tcache_create_v(const char *path, MPI_Comm world, int K, int T, int64_t W, int V, const char *teacher,
                       const char *teacher_sha, const char *text, const char *text_sha, mf_tcache *c, mf_err *err) {
    reset(c);
    c->K = K; c->T = T; c->W = W; c->V = V;
    c->path = mf_strdup(path);
    c->tmp = mf_h5_tmp_name_comm(world, path);
    int rank;
    MPI_Comm_rank(world, &rank);
    if (K < 1 || T < 1 || W < 1 || V < 1 || K > V)
        return mf_err_set(err, "%s: teacher cache: bad shape (K %d, ctx %d, %lld windows, vocabulary %d)", path, K, T,
                          (long long)W, V);
    if (rank == 0) { /* temporaries of dead writers next to it */
        char *dir = mf_strdup(path), *slash = strrchr(dir, '/'), *base = slash ? slash + 1 : dir;
        size_t len = strlen(base) + 6;
        char *prefix = mf_malloc(len);
        snprintf(prefix, len, "%s.tmp.", base);
        if (slash) *slash = 0;
        mf_clean_stale_tmps(slash ? (dir[0] ? dir : "/") : ".", prefix, NULL);
        free(prefix);
        free(dir);
    }
    int rc = mf_h5_create_file(world, path, c->tmp, &c->file, err);
    hsize_t dims[3] = {(hsize_t)W, (hsize_t)T, (hsize_t)K}, sd[2] = {(hsize_t)W, 2};
    /* contiguous, unfiltered: windows are written by independent I/O; /window_sum checks them */
    if (rc == 0) c->ids = mf_h5_make_ds_plain(c->file, path, "/ids", H5T_STD_I32LE, 3, dims, err);
    if (rc == 0 && c->ids >= 0) c->logits = mf_h5_make_ds_plain(c->file, path, "/logits", H5T_IEEE_F32LE, 3, dims, err);
    if (rc == 0 && c->logits >= 0) c->sums = mf_h5_make_ds_plain(c->file, path, "/window_sum", H5T_STD_U32LE, 2, sd, err);
    if (rc == 0 && (c->ids < 0 || c->logits < 0 || c->sums < 0)) rc = -1;
    int64_t tsz = 0, tmt = 0, xsz = 0, xmt = 0;
    stat_key(teacher, &tsz, &tmt);
    stat_key(text, &xsz, &xmt);
    char why[256];
    if (rc == 0 && (mf_h5_attr_str(c->file, "format", MF_TCACHE_FORMAT, why) ||
                    mf_h5_attr_i32(c->file, "format_version", MF_TCACHE_VERSION, why) ||
                    mf_h5_attr_i32(c->file, "K", K, why) || mf_h5_attr_i32(c->file, "ctx", T, why) ||
                    mf_h5_attr_i64(c->file, "n_windows", W, why) || mf_h5_attr_i32(c->file, "vocab_size", V, why) ||
                    mf_h5_attr_str(c->file, "teacher", teacher, why) ||
                    mf_h5_attr_str(c->file, "teacher_sha256", teacher_sha, why) ||
                    mf_h5_attr_i64(c->file, "teacher_size", tsz, why) ||
                    mf_h5_attr_i64(c->file, "teacher_mtime_ns", tmt, why) ||
                    mf_h5_attr_str(c->file, "text", text, why) || mf_h5_attr_str(c->file, "text_sha256", text_sha, why) ||
                    mf_h5_attr_i64(c->file, "text_size", xsz, why) || mf_h5_attr_i64(c->file, "text_mtime_ns", xmt, why)))
        rc = mf_err_set(err, "%s: cannot write attributes: %s", path, why);
    return mf_h5_agree(world, rc, err);
}

int mf_tcache_create(const char *path, MPI_Comm world, int K, int T, int64_t W, const char *teacher, const char *text,
                     mf_tcache *c, mf_err *err) {
    char tsha[65], xsha[65];
    reset(c);
    if (mf_tcache_key(world, teacher, text, tsha, xsha, err)) return -1;
    int rank, V = 0, rc = 0;
    MPI_Comm_rank(world, &rank);
    if (rank == 0) {
        mf_source *s = mf_source_open(teacher, err);
        if (!s) rc = -1;
        else V = s->cfg.vocab_size;
        mf_source_close(s);
    }
    rc = mf_h5_bcast_rc(world, rc, err);
    MPI_Bcast(&V, 1, MPI_INT, 0, world);
    if (rc) return -1;
    return mf_tcache_create_v(path, world, K, T, W, V, teacher, tsha, text, xsha, c, err);
}

static int slab(const mf_tcache *c, hid_t ds, int64_t w, int n2, hid_t mtype, void *buf, int write, const char *what,
                mf_err *err) {
    hsize_t start[3] = {(hsize_t)w, 0, 0}, count[3] = {1, (hsize_t)c->T, (hsize_t)c->K};
    int nd = 3;
    if (n2) nd = 2, count[1] = (hsize_t)n2;
    hid_t fs = H5Dget_space(ds), ms = H5Screate_simple(nd, count, NULL);
    int rc = fs < 0 || ms < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ? -1 : 0;
    if (rc == 0) rc = (write ? H5Dwrite(ds, mtype, ms, fs, H5P_DEFAULT, buf) : H5Dread(ds, mtype, ms, fs, H5P_DEFAULT, buf)) < 0 ? -1 : 0;
    char why[256];
    if (rc) mf_h5_read_reason(why); /* before H5Sclose clears the error stack */
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (rc) mf_err_set(err, "%s: teacher cache: cannot %s window %lld of %s: %s", c->path ? c->path : "?",
                       write ? "write" : "read", (long long)w, what, why);
    return rc;
}

int mf_tcache_put(mf_tcache *c, int64_t w, const int32_t *ids, const float *logits, mf_err *err) {
    size_t n = (size_t)c->T * (size_t)c->K;
    uint32_t sums[2] = {mf_h5_lookup3(ids, n * sizeof *ids, 0), mf_h5_lookup3(logits, n * sizeof *logits, 0)};
    if (w < 0 || w >= c->W) return mf_err_set(err, "%s: teacher cache: window %lld of %lld", c->path, (long long)w, (long long)c->W);
    if (slab(c, c->ids, w, 0, H5T_NATIVE_INT32, (void *)ids, 1, "/ids", err)) return -1;
    if (slab(c, c->logits, w, 0, H5T_NATIVE_FLOAT, (void *)logits, 1, "/logits", err)) return -1;
    return slab(c, c->sums, w, 2, H5T_NATIVE_UINT32, sums, 1, "/window_sum", err);
}

int mf_tcache_finish(const char *path, MPI_Comm world, mf_tcache *c, int rc, mf_err *err) {
    char why[256];
    char *tmp = c->tmp ? c->tmp : mf_h5_tmp_name_comm(world, path);
    c->tmp = NULL;
    rc = mf_h5_agree(world, rc, err);
    if (rc == 0 && mf_h5_attr_i32(c->file, "complete", 1, why)) rc = mf_err_set(err, "%s: cannot mark complete: %s", path, why);
    rc = mf_h5_agree(world, rc, err);
    mf_h5_close_id(&c->ids);
    mf_h5_close_id(&c->logits);
    mf_h5_close_id(&c->sums);
    int crc = mf_h5_close_file(&c->file, path, tmp, err);
    if (rc == 0) rc = crc;
    int rank;
    MPI_Comm_rank(world, &rank);
    if (rank == 0) rc = mf_h5_finish(rc, path, tmp, 1, err);
    rc = mf_h5_bcast_rc(world, rc, err);
    free(tmp);
    free(c->path);
    c->path = NULL;
    return rc;
}

/* ---------------------------------------------------------------- reading */

/* The file at the cache's stored path is the one it was built from: same size
 * and mtime, or else the same SHA-256. 0 yes; 1 no (why says how). */
static int same_input(const mf_h5r *r, const char *what, char why[512]) {
    char key[64], *p = NULL, *sha = NULL;
    int64_t size = 0, mtime = 0, s2, m2;
    snprintf(key, sizeof key, "%s", what);
    int rc = mf_h5_get_str(r, key, 1, &p);
    snprintf(key, sizeof key, "%s_sha256", what);
    if (rc == 0) rc = mf_h5_get_str(r, key, 1, &sha);
    snprintf(key, sizeof key, "%s_size", what);
    if (rc == 0) rc = mf_h5_get_i64(r, key, 1, &size);
    snprintf(key, sizeof key, "%s_mtime_ns", what);
    if (rc == 0) rc = mf_h5_get_i64(r, key, 1, &mtime);
    int out = 0;
    if (rc) {
        snprintf(why, 512, "%.500s", r->e->msg);
        out = 1;
    } else if (stat_key(p, &s2, &m2) != 0) {
        snprintf(why, 512, "its %s %.300s is gone", what, p);
        out = 1;
    } else if (s2 != size || m2 != mtime) {
        char hex[65];
        mf_err e2;
        if (mf_sha256_path(p, hex, &e2) != 0 || strcmp(hex, sha) != 0) {
            snprintf(why, 512, "its %s %.300s changed since (SHA-256 %.16s..., the cache's %.16s...)", what, p,
                     mf_sha256_path(p, hex, &e2) == 0 ? hex : "?", sha);
            out = 1;
        }
    }
    free(p);
    free(sha);
    return out;
}

/* Open and check; 1 with why set when the cache is to be rebuilt. No logging
 * (it also runs in the probe's child process). */
static int open_core(const char *path, int K, int T, int64_t W, int V, const char *tsha, const char *xsha, mf_tcache *c,
                     mf_err *err, char why[512]) {
    reset(c);
    why[0] = 0;
    c->file = mf_h5_open_read(path, err);
    if (c->file < 0) return mf_err_prefix(err, "teacher cache (delete it to rebuild)");
    mf_err e = {{0}};
    mf_h5r r = {path, c->file, &e, 1};
    char *fmt = NULL, *fsha = NULL, *fxsha = NULL;
    int64_t complete = 0, ver = 0, k = 0, t = 0, w = 0, v = 0;
    int rc = mf_h5_get_str(&r, "format", 1, &fmt);
    if (rc == 0 && strcmp(fmt, MF_TCACHE_FORMAT) != 0)
        rc = mf_err_set(&e, "%s: not a teacher cache (format '%.64s')", path, fmt);
    free(fmt);
    if (rc) {
        mf_tcache_close(c);
        return mf_err_set(err, "%s", e.msg);
    }
    if (mf_h5_get_i64(&r, "complete", 0, &complete)) snprintf(why, 512, "%.500s", e.msg);
    else if (complete != 1) snprintf(why, 512, "it is incomplete");
    else if (mf_h5_get_i64(&r, "format_version", 0, &ver) || ver != MF_TCACHE_VERSION)
        snprintf(why, 512, "it has format_version %lld (this build writes %d)", (long long)ver, MF_TCACHE_VERSION);
    else if (mf_h5_get_i64(&r, "K", 1, &k) || mf_h5_get_i64(&r, "ctx", 1, &t) || mf_h5_get_i64(&r, "n_windows", 1, &w) ||
             mf_h5_get_i64(&r, "vocab_size", 1, &v) || mf_h5_get_str(&r, "teacher_sha256", 1, &fsha) ||
             mf_h5_get_str(&r, "text_sha256", 1, &fxsha))
        snprintf(why, 512, "%.500s", e.msg);
    else if (k != K || t != T || (W && w != W) || (V && v != V))
        snprintf(why, 512, "it has K %lld, ctx %lld, %lld windows, vocabulary %lld; this run needs K %d, ctx %d, "
                 "%lld windows, vocabulary %d", (long long)k, (long long)t, (long long)w, (long long)v, K, T,
                 (long long)W, V);
    else if (v < 1 || v > (1 << 24) || k < 1 || k > v || t < 1 || t > (1 << 24) || w < 1 || w > ((int64_t)1 << 40))
        snprintf(why, 512, "its sizes are out of range (K %lld, ctx %lld, %lld windows, vocabulary %lld)",
                 (long long)k, (long long)t, (long long)w, (long long)v);
    else if (tsha && strcmp(tsha, fsha) != 0)
        snprintf(why, 512, "it was built from another teacher (SHA-256 %.16s..., this run's %.16s...)", fsha, tsha);
    else if (xsha && strcmp(xsha, fxsha) != 0)
        snprintf(why, 512, "it was built on another text (SHA-256 %.16s..., this run's %.16s...)", fxsha, xsha);
    else if (!tsha && same_input(&r, "teacher", why) == 0 && !xsha)
        same_input(&r, "text", why);
    free(fsha);
    free(fxsha);
    if (why[0]) {
        mf_tcache_close(c);
        return 1;
    }
    hsize_t dims[3] = {(hsize_t)w, (hsize_t)t, (hsize_t)k}, sd[2] = {(hsize_t)w, 2};
    if ((c->ids = mf_h5_open_ds(&r, "/ids", H5T_INTEGER, 3, dims, 0)) < 0 ||
        (c->logits = mf_h5_open_ds(&r, "/logits", H5T_FLOAT, 3, dims, 0)) < 0 ||
        (c->sums = mf_h5_open_ds(&r, "/window_sum", H5T_INTEGER, 2, sd, 0)) < 0) {
        mf_tcache_close(c);
        mf_err_set(err, "%s", e.msg);
        return mf_err_prefix(err, "teacher cache (delete it to rebuild)");
    }
    c->K = (int)k; c->T = (int)t; c->W = w; c->V = (int)v;
    c->path = mf_strdup(path);
    return 0;
}

typedef struct probe_ctx {
    const char *path, *tsha, *xsha;
    int K, T, V;
    int64_t W;
} probe_ctx;

static int probe_open(void *ctx, mf_err *e) {
    probe_ctx *p = ctx;
    mf_tcache c;
    char why[512];
    int rc = open_core(p->path, p->K, p->T, p->W, p->V, p->tsha, p->xsha, &c, e, why);
    if (rc == 0) mf_tcache_close(&c);
    return rc < 0 ? -1 : 0;
}

static int open_impl(const char *path, int K, int T, int64_t W, int V, const char *tsha, const char *xsha, mf_tcache *c,
                     mf_err *err) {
    reset(c);
    struct stat st;
    if (stat(path, &st) != 0) return 1;
    probe_ctx p = {path, tsha, xsha, K, T, V, W};
    if (mf_h5_check_file(path, err)) return mf_err_prefix(err, "teacher cache (delete it to rebuild)");
    if (mf_h5_probe(path, probe_open, &p, err)) {
        if (!strstr(err->msg, "teacher cache")) mf_err_prefix(err, "teacher cache (delete it to rebuild)");
        return -1;
    }
    char why[512];
    int rc = open_core(path, K, T, W, V, tsha, xsha, c, err, why);
    if (rc == 1 && world_rank0()) mf_log("teacher cache %s: %s: rebuilding it", path, why);
    return rc;
}

int mf_tcache_open_v(const char *path, int K, int T, int64_t W, int V, const char *teacher_sha, const char *text_sha,
                     mf_tcache *c, mf_err *err) {
    if (V < 1 || !teacher_sha || !text_sha)
        return mf_err_set(err, "%s: teacher cache: no vocabulary size or input digests given", path);
    return open_impl(path, K, T, W, V, teacher_sha, text_sha, c, err);
}

int mf_tcache_open(const char *path, int K, int T, int64_t W, mf_tcache *c, mf_err *err) {
    return open_impl(path, K, T, W, 0, NULL, NULL, c, err);
}

int mf_tcache_get(const mf_tcache *c, int64_t w, int32_t *ids, float *logits, mf_err *err) {
    if (w < 0 || w >= c->W)
        return mf_err_set(err, "%s: teacher cache: window %lld asked of %lld", c->path, (long long)w, (long long)c->W);
    uint32_t sums[2];
    if (slab(c, c->ids, w, 0, H5T_NATIVE_INT32, ids, 0, "/ids", err) ||
        slab(c, c->logits, w, 0, H5T_NATIVE_FLOAT, logits, 0, "/logits", err) ||
        slab(c, c->sums, w, 2, H5T_NATIVE_UINT32, sums, 0, "/window_sum", err))
        return -1;
    size_t n = (size_t)c->T * (size_t)c->K;
    if (mf_h5_lookup3(ids, n * sizeof *ids, 0) != sums[0] || mf_h5_lookup3(logits, n * sizeof *logits, 0) != sums[1])
        return mf_err_set(err, "%s: teacher cache window %lld fails its checksum (damaged file; delete it to rebuild)",
                          c->path, (long long)w);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->V)
            return mf_err_set(err, "%s: teacher cache window %lld position %zu: token id %d outside the vocabulary "
                              "[0, %d) (delete the cache to rebuild)", c->path, (long long)w, i / (size_t)c->K,
                              ids[i], c->V);
    return 0;
}

void mf_tcache_close(mf_tcache *c) {
    mf_h5_close_id(&c->ids);
    mf_h5_close_id(&c->logits);
    mf_h5_close_id(&c->sums);
    if (c->file >= 0) H5Fclose(c->file);
    c->file = H5I_INVALID_HID;
    free(c->path);
    c->path = NULL;
    free(c->tmp);
    c->tmp = NULL;
}
