#include "train/teacher_cache.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/h5util.h"

#define FORMAT "minifuse-teacher-topk"

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

int mf_tcache_create(const char *path, MPI_Comm world, int K, int T, int64_t W, const char *teacher, const char *text,
                     mf_tcache *c, mf_err *err) {
    memset(c, 0, sizeof *c);
    c->ids = c->logits = c->file = H5I_INVALID_HID;
    c->K = K; c->T = T; c->W = W;
    char *tmp = mf_h5_tmp_name(path);
    int rc = mf_h5_create_file(world, path, tmp, &c->file, err);
    hsize_t dims[3] = {(hsize_t)W, (hsize_t)T, (hsize_t)K};
    if (rc == 0) c->ids = mf_h5_make_ds(c->file, path, "/ids", H5T_STD_I32LE, 3, dims, err);
    if (rc == 0 && c->ids >= 0) c->logits = mf_h5_make_ds(c->file, path, "/logits", H5T_IEEE_F32LE, 3, dims, err);
    if (rc == 0 && (c->ids < 0 || c->logits < 0)) rc = -1;
    char why[256];
    if (rc == 0 && (mf_h5_attr_str(c->file, "format", FORMAT, why) || mf_h5_attr_i32(c->file, "K", K, why) ||
                    mf_h5_attr_i32(c->file, "ctx", T, why) || mf_h5_attr_i64(c->file, "n_windows", W, why) ||
                    mf_h5_attr_str(c->file, "teacher", teacher, why) || mf_h5_attr_str(c->file, "text", text, why)))
        rc = mf_err_set(err, "%s: cannot write attributes: %s", path, why);
    free(tmp);
    return mf_h5_agree(world, rc, err);
}

static int slab(hid_t ds, int64_t w, int T, int K, hid_t mtype, void *buf, int write, const char *what, mf_err *err) {
    hsize_t start[3] = {(hsize_t)w, 0, 0}, count[3] = {1, (hsize_t)T, (hsize_t)K};
    hid_t fs = H5Dget_space(ds), ms = H5Screate_simple(3, count, NULL);
    int rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ? -1 : 0;
    if (rc == 0) rc = (write ? H5Dwrite(ds, mtype, ms, fs, H5P_DEFAULT, buf) : H5Dread(ds, mtype, ms, fs, H5P_DEFAULT, buf)) < 0 ? -1 : 0;
    H5Sclose(ms);
    H5Sclose(fs);
    char why[256];
    if (rc) mf_err_set(err, "teacher cache: cannot %s window %lld of %s: %s", write ? "write" : "read", (long long)w, what, mf_h5_reason(why));
    return rc;
}

int mf_tcache_put(mf_tcache *c, int64_t w, const int32_t *ids, const float *logits, mf_err *err) {
    if (slab(c->ids, w, c->T, c->K, H5T_NATIVE_INT32, (void *)ids, 1, "/ids", err)) return -1;
    return slab(c->logits, w, c->T, c->K, H5T_NATIVE_FLOAT, (void *)logits, 1, "/logits", err);
}

int mf_tcache_finish(const char *path, MPI_Comm world, mf_tcache *c, int rc, mf_err *err) {
    char *tmp = mf_h5_tmp_name(path), why[256];
    rc = mf_h5_agree(world, rc, err);
    if (rc == 0 && mf_h5_attr_i32(c->file, "complete", 1, why)) rc = mf_err_set(err, "%s: cannot mark complete: %s", path, why);
    rc = mf_h5_agree(world, rc, err);
    mf_h5_close_id(&c->ids);
    mf_h5_close_id(&c->logits);
    int crc = mf_h5_close_file(&c->file, path, tmp, err);
    if (rc == 0) rc = crc;
    int rank;
    MPI_Comm_rank(world, &rank);
    if (rank == 0) rc = mf_h5_finish(rc, path, tmp, 1, err);
    rc = mf_h5_bcast_rc(world, rc, err);
    free(tmp);
    return rc;
}

int mf_tcache_open(const char *path, int K, int T, int64_t W, mf_tcache *c, mf_err *err) {
    memset(c, 0, sizeof *c);
    c->ids = c->logits = c->file = H5I_INVALID_HID;
    struct stat st;
    if (stat(path, &st) != 0) return 1;
    c->file = mf_h5_open_read(path, err);
    if (c->file < 0) return -1;
    mf_h5r r = {path, c->file, err};
    char *fmt = NULL;
    int64_t complete = 0, k = 0, t = 0, w = 0;
    int rc = mf_h5_get_str(&r, "format", 1, &fmt) || mf_h5_get_i64(&r, "complete", 0, &complete) ||
             mf_h5_get_i64(&r, "K", 1, &k) || mf_h5_get_i64(&r, "ctx", 1, &t) || mf_h5_get_i64(&r, "n_windows", 1, &w) ? -1 : 0;
    if (rc == 0 && strcmp(fmt, FORMAT) != 0) rc = mf_err_set(err, "%s: not a teacher cache (format '%s')", path, fmt);
    free(fmt);
    if (rc == 0 && !complete) { mf_tcache_close(c); return 1; }
    if (rc == 0 && (k != K || t != T || (W && w != W)))
        rc = mf_err_set(err, "%s: cache has K %lld, ctx %lld, %lld windows; this run needs K %d, ctx %d, %lld windows", path,
                        (long long)k, (long long)t, (long long)w, K, T, (long long)W);
    hsize_t dims[3] = {(hsize_t)w, (hsize_t)t, (hsize_t)k};
    if (rc == 0 && (c->ids = mf_h5_open_ds(&r, "/ids", H5T_INTEGER, 3, dims, 0)) < 0) rc = -1;
    if (rc == 0 && (c->logits = mf_h5_open_ds(&r, "/logits", H5T_FLOAT, 3, dims, 0)) < 0) rc = -1;
    if (rc) { mf_tcache_close(c); return -1; }
    c->K = K; c->T = T; c->W = w;
    return 0;
}

int mf_tcache_get(const mf_tcache *c, int64_t w, int32_t *ids, float *logits, mf_err *err) {
    if (slab(c->ids, w, c->T, c->K, H5T_NATIVE_INT32, ids, 0, "/ids", err)) return -1;
    return slab(c->logits, w, c->T, c->K, H5T_NATIVE_FLOAT, logits, 0, "/logits", err);
}

void mf_tcache_close(mf_tcache *c) {
    mf_h5_close_id(&c->ids);
    mf_h5_close_id(&c->logits);
    if (c->file >= 0) H5Fclose(c->file);
    c->file = H5I_INVALID_HID;
}
