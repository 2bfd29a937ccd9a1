/* h5util.c - HDF5 helpers shared by the rankings and checkpoint files. */
#include "io/h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data) {
    (void)n;
    char *buf = data;
    if (!buf[0] && e->desc && e->desc[0]) snprintf(buf, 256, "%s", e->desc);
    return 0;
}

const char *mf_h5_reason(char buf[256]) {
    buf[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, buf);
    if (!buf[0]) snprintf(buf, 256, "HDF5 error");
    return buf;
}

/* ---------------------------------------------------------------- MPI */

int mf_h5_agree(MPI_Comm comm, int rc, mf_err *e) {
    int rank, size, first;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int who = rc == 0 ? size : rank;
    MPI_Allreduce(&who, &first, 1, MPI_INT, MPI_MIN, comm);
    if (first == size) return 0;
    MPI_Bcast(e->msg, (int)sizeof e->msg, MPI_CHAR, first, comm);
    e->msg[sizeof e->msg - 1] = 0;
    return -1;
}

int mf_h5_bcast_rc(MPI_Comm comm, int rc, mf_err *e) {
    MPI_Bcast(&rc, 1, MPI_INT, 0, comm);
    if (rc != 0) MPI_Bcast(e->msg, (int)sizeof e->msg, MPI_CHAR, 0, comm);
    return rc;
}

char *mf_h5_bcast_str(MPI_Comm comm, const char *s) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    int len = rank == 0 ? (int)strlen(s ? s : "") : 0;
    MPI_Bcast(&len, 1, MPI_INT, 0, comm);
    char *out = mf_malloc((size_t)len + 1);
    if (rank == 0) memcpy(out, s ? s : "", (size_t)len);
    MPI_Bcast(out, len, MPI_CHAR, 0, comm);
    out[len] = 0;
    return out;
}

/* ---------------------------------------------------------------- writing */

void mf_h5_now_iso(char buf[32]) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

char *mf_h5_tmp_name(const char *path) {
    size_t cap = strlen(path) + 5;
    char *tmp = mf_malloc(cap);
    snprintf(tmp, cap, "%s.tmp", path);
    return tmp;
}

int mf_h5_create_file(MPI_Comm comm, const char *path, const char *tmp, hid_t *file, mf_err *e) {
    char why[256];
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
    *file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (*file < 0) mf_err_set(e, "%s: cannot create %s: %s", path, tmp, mf_h5_reason(why));
    H5Pclose(fapl);
    if (mf_h5_agree(comm, *file < 0 ? -1 : 0, e) == 0) return 0;
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (rank == 0) unlink(tmp);
    return -1;
}

int mf_h5_make_group(hid_t file, const char *path, const char *name, mf_err *e) {
    char why[256];
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    H5Pset_obj_track_times(gcpl, 0);
    hid_t g = H5Gcreate2(file, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    if (g < 0) return mf_err_set(e, "%s: cannot create group '%s': %s", path, name, mf_h5_reason(why));
    H5Gclose(g);
    return 0;
}

hid_t mf_h5_make_ds(hid_t file, const char *path, const char *name, hid_t ftype, int nd, const hsize_t *dims,
                    mf_err *e) {
    char why[256];
    hid_t sp = H5Screate_simple(nd, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
    H5Pset_obj_track_times(dcpl, 0); /* no timestamps: same inputs, same bytes */
    hid_t d = sp < 0 ? -1 : H5Dcreate2(file, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (d < 0) mf_err_set(e, "%s: cannot create dataset '%s': %s", path, name, mf_h5_reason(why));
    H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    return d;
}

int mf_h5_attr_write(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *val, char why[256]) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = sp < 0 ? -1 : H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, mtype, val) < 0 ? -1 : 0;
    if (rc) mf_h5_reason(why);
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

int mf_h5_attr_str(hid_t loc, const char *name, const char *val, char why[256]) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    int rc = mf_h5_attr_write(loc, name, t, t, &val, why);
    H5Tclose(t);
    return rc;
}

int mf_h5_attr_i32(hid_t loc, const char *name, int v, char why[256]) {
    return mf_h5_attr_write(loc, name, H5T_STD_I32LE, H5T_NATIVE_INT, &v, why);
}

int mf_h5_attr_i64(hid_t loc, const char *name, int64_t v, char why[256]) {
    return mf_h5_attr_write(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v, why);
}

int mf_h5_attr_f64(hid_t loc, const char *name, double v, char why[256]) {
    return mf_h5_attr_write(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v, why);
}

void mf_h5_close_id(hid_t *id) {
    if (*id < 0) return;
    H5Oclose(*id);
    *id = H5I_INVALID_HID;
}

int mf_h5_close_file(hid_t *file, const char *path, const char *tmp, mf_err *e) {
    if (*file < 0) return 0;
    char why[256];
    int rc = H5Fclose(*file) < 0 ? mf_err_set(e, "%s: cannot close %s: %s", path, tmp, mf_h5_reason(why)) : 0;
    *file = H5I_INVALID_HID;
    return rc;
}

/* The bytes of tmp on disk. */
static int sync_file(const char *path, const char *tmp, mf_err *e) {
    int fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) {
        int en = errno;
        if (fd >= 0) close(fd);
        return mf_err_set(e, "%s: cannot sync %s: %s", path, tmp, strerror(en));
    }
    close(fd);
    return 0;
}

/* The directory entry of path on disk (best effort). */
static void sync_dir(const char *path) {
    char *dir = mf_strdup(path), *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    int dfd = open(slash ? (dir[0] ? dir : "/") : ".", O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) fsync(dfd), close(dfd);
    free(dir);
}

int mf_h5_finish(int rc, const char *path, const char *tmp, int durable, mf_err *e) {
    if (rc == 0 && durable) rc = sync_file(path, tmp, e);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = mf_err_set(e, "%s: cannot rename %s to it: %s", path, tmp, strerror(errno));
    if (rc == 0 && durable) sync_dir(path);
    if (rc != 0) unlink(tmp);
    return rc;
}

/* ---------------------------------------------------------------- reading */

hid_t mf_h5_open_read(const char *path, mf_err *err) {
    char why[256];
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    struct stat st;
    if (stat(path, &st) != 0) return mf_err_set(err, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return mf_err_set(err, "%s: not a regular file", path);
    htri_t is = H5Fis_hdf5(path);
    if (is == 0) return mf_err_set(err, "%s: not an HDF5 file (no HDF5 signature)", path);
    hid_t f = is < 0 ? -1 : H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return mf_err_set(err, "%s: cannot open as HDF5 (corrupt or truncated?): %s", path, mf_h5_reason(why));
    return f;
}

int mf_h5_path_exists(hid_t file, const char *name) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", name);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != 0) continue;
        char c = *p;
        *p = 0;
        if (H5Lexists(file, buf, H5P_DEFAULT) <= 0) return 0;
        *p = c;
        if (!c) return 1;
    }
}

/* Open a one-element root attribute of class cls; 0 = absent (not an error
 * unless required). */
static hid_t open_attr(const mf_h5r *c, const char *name, H5T_class_t cls, int required, int *rc) {
    char why[256];
    *rc = 0;
    htri_t ex = H5Aexists(c->file, name);
    if (ex < 0)
        return *rc = mf_err_set(c->e, "%s: cannot look up attribute '%s': %s", c->path, name, mf_h5_reason(why)), 0;
    if (ex == 0) {
        if (required) *rc = mf_err_set(c->e, "%s: missing root attribute '%s'", c->path, name);
        return 0;
    }
    hid_t a = H5Aopen(c->file, name, H5P_DEFAULT);
    if (a < 0) return *rc = mf_err_set(c->e, "%s: cannot open attribute '%s': %s", c->path, name, mf_h5_reason(why)), 0;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    H5T_class_t got = t < 0 ? H5T_NO_CLASS : H5Tget_class(t);
    hssize_t np = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    if (got != cls || np != 1) {
        H5Aclose(a);
        return *rc = mf_err_set(c->e, "%s: attribute '%s' is not a single %s", c->path, name,
                                cls == H5T_STRING ? "string" : cls == H5T_INTEGER ? "integer" : "float"), 0;
    }
    return a;
}

int mf_h5_get_str(const mf_h5r *c, const char *name, int required, char **out) {
    char why[256] = "";
    int rc;
    *out = NULL;
    hid_t a = open_attr(c, name, H5T_STRING, required, &rc);
    if (a <= 0) return rc ? rc : (*out = mf_strdup(""), 0);
    hid_t ft = H5Aget_type(a), mt = H5Tcopy(ft);
    size_t n = H5Tget_size(ft);
    rc = 0;
    if (H5Tis_variable_str(ft) > 0) {
        char *p = NULL;
        if (H5Aread(a, mt, &p) < 0) rc = -1, mf_h5_reason(why);
        else *out = mf_strdup(p ? p : "");
        if (p) H5free_memory(p);
    } else if (n > 0 && n <= (1u << 24)) {
        *out = mf_calloc(n + 1, 1);
        if (H5Aread(a, mt, *out) < 0) rc = -1, mf_h5_reason(why);
    } else {
        rc = -1;
        snprintf(why, sizeof why, "a string of %zu bytes", n);
    }
    H5Tclose(mt); H5Tclose(ft); H5Aclose(a);
    if (rc) {
        free(*out);
        *out = NULL;
        return mf_err_set(c->e, "%s: cannot read attribute '%s': %s", c->path, name, why);
    }
    return 0;
}

static int get_num(const mf_h5r *c, const char *name, int required, H5T_class_t cls, hid_t mtype, void *out) {
    char why[256];
    int rc;
    hid_t a = open_attr(c, name, cls, required, &rc);
    if (a <= 0) return rc;
    rc = H5Aread(a, mtype, out) < 0 ? mf_err_set(c->e, "%s: cannot read attribute '%s': %s", c->path, name,
                                                 mf_h5_reason(why)) : 0;
    H5Aclose(a);
    return rc;
}

int mf_h5_get_i64(const mf_h5r *c, const char *name, int required, int64_t *out) {
    *out = 0;
    return get_num(c, name, required, H5T_INTEGER, H5T_NATIVE_INT64, out);
}

int mf_h5_get_f64(const mf_h5r *c, const char *name, int required, double *out) {
    *out = 0;
    return get_num(c, name, required, H5T_FLOAT, H5T_NATIVE_DOUBLE, out);
}

/* "[a, b]"; with any0, a 0 prints as "*" (any size). */
static void shape_str(char *buf, size_t n, int nd, const hsize_t *d, int any0) {
    size_t len = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < nd && len < n; i++) {
        if (any0 && d[i] == 0) len += (size_t)snprintf(buf + len, n - len, "%s*", i ? ", " : "");
        else len += (size_t)snprintf(buf + len, n - len, "%s%llu", i ? ", " : "", (unsigned long long)d[i]);
    }
    if (len < n) snprintf(buf + len, n - len, "]");
}

hid_t mf_h5_open_ds(const mf_h5r *c, const char *name, H5T_class_t cls, int nd, hsize_t *dims, int any0) {
    char why[256];
    hid_t d = H5Dopen2(c->file, name, H5P_DEFAULT);
    if (d < 0) return mf_err_set(c->e, "%s: cannot open dataset '%s': %s", c->path, name, mf_h5_reason(why)), -1;
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    H5T_class_t got = t < 0 ? H5T_NO_CLASS : H5Tget_class(t);
    int gnd = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    hsize_t gd[H5S_MAX_RANK] = {0};
    if (gnd >= 1 && gnd <= H5S_MAX_RANK) H5Sget_simple_extent_dims(sp, gd, NULL);
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    int ok = gnd == nd;
    for (int i = 0; ok && i < nd; i++) ok = (any0 && dims[i] == 0) || dims[i] == gd[i];
    if (got != cls) {
        mf_err_set(c->e, "%s: dataset '%s' is not of %s type", c->path, name, cls == H5T_FLOAT ? "float" : "integer");
    } else if (!ok) {
        char s1[96], s2[96];
        shape_str(s1, sizeof s1, gnd < 0 ? 0 : gnd > H5S_MAX_RANK ? H5S_MAX_RANK : gnd, gd, 0);
        shape_str(s2, sizeof s2, nd, dims, any0);
        mf_err_set(c->e, "%s: dataset '%s' has shape %s, expected %s", c->path, name, s1, s2);
    } else {
        for (int i = 0; i < nd; i++) dims[i] = gd[i];
        return d;
    }
    H5Dclose(d);
    return -1;
}
