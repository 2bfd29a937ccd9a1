/* h5util.c - HDF5 helpers shared by the rankings and checkpoint files. */
#include "io/h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/fsutil.h"

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

char *mf_h5_tmp_name(const char *path) { return mf_tmp_unique(path); }

char *mf_h5_tmp_name_comm(MPI_Comm comm, const char *path) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    char *mine = rank == 0 ? mf_tmp_unique(path) : NULL;
    char *all = mf_h5_bcast_str(comm, mine);
    free(mine);
    return all;
}

int mf_h5_create_file(MPI_Comm comm, const char *path, const char *tmp, hid_t *file, mf_err *e) {
    char why[256];
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
    /* newest format: superblock 3, version-2 object headers, checksummed metadata */
    H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    H5Pset_obj_track_times(fcpl, 0); /* the root group too: same inputs, same bytes */
    *file = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, fapl);
    H5Pclose(fcpl);
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

/* Elements per chunk: 1 MiB of float32. */
#define CHUNK_ELEMS ((hsize_t)1 << 18)

static hid_t make_ds(hid_t file, const char *path, const char *name, hid_t ftype, int nd, const hsize_t *dims,
                     int chunked, mf_err *e) {
    char why[256];
    hid_t sp = H5Screate_simple(nd, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (chunked) {
        /* from the innermost dimension out: whole rows while they fit */
        hsize_t ch[H5S_MAX_RANK], left = CHUNK_ELEMS;
        for (int i = nd - 1; i >= 0; i--) {
            hsize_t c = dims[i] < left ? dims[i] : left;
            if (c) { /* equal chunks: 4096 rows in chunks of 455 would leave a 10th chunk of 1 row */
                hsize_t n = (dims[i] + c - 1) / c;
                c = (dims[i] + n - 1) / n;
            }
            ch[i] = c ? c : 1;
            left = left / ch[i] ? left / ch[i] : 1;
        }
        H5Pset_chunk(dcpl, nd, ch);
        H5Pset_fletcher32(dcpl);
    }
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
    H5Pset_obj_track_times(dcpl, 0); /* no timestamps: same inputs, same bytes */
    hid_t d = sp < 0 ? -1 : H5Dcreate2(file, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (d < 0) mf_err_set(e, "%s: cannot create dataset '%s': %s", path, name, mf_h5_reason(why));
    H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    return d;
}

hid_t mf_h5_make_ds(hid_t file, const char *path, const char *name, hid_t ftype, int nd, const hsize_t *dims,
                    mf_err *e) {
    return make_ds(file, path, name, ftype, nd, dims, 1, e);
}

hid_t mf_h5_make_ds_plain(hid_t file, const char *path, const char *name, hid_t ftype, int nd, const hsize_t *dims,
                          mf_err *e) {
    return make_ds(file, path, name, ftype, nd, dims, 0, e);
}

static hid_t coll_dxpl(void) {
    hid_t dx = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dx, H5FD_MPIO_COLLECTIVE);
    return dx;
}

/* Collective write of the selection [start, start+count) of d (rank nd) from
 * buf, or of nothing when buf is NULL. */
static int write_sel(hid_t d, hid_t mtype, const void *buf, int nd, const hsize_t *start, const hsize_t *count,
                     hid_t dx) {
    hid_t fs = H5Dget_space(d);
    /* the memory space has the selection's shape: with another rank, HDF5 maps
     * memory to chunks element by element (many times slower) */
    hsize_t one = 1;
    hid_t ms = buf ? H5Screate_simple(nd, count, NULL) : H5Screate_simple(1, &one, NULL);
    int rc = fs < 0 || ms < 0 ? -1 : 0;
    static const char dummy[16];
    if (rc == 0 && buf) rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ? -1 : 0;
    if (rc == 0 && !buf) rc = H5Sselect_none(fs) < 0 || H5Sselect_none(ms) < 0 ? -1 : 0;
    if (rc == 0) rc = H5Dwrite(d, mtype, ms, fs, dx, buf ? buf : dummy) < 0 ? -1 : 0;
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    return rc;
}

int mf_h5_write_coll(hid_t d, hid_t mtype, const void *buf, char why[256]) {
    hid_t sp = d < 0 ? -1 : H5Dget_space(d);
    int nd = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    hsize_t dims[H5S_MAX_RANK], start[H5S_MAX_RANK] = {0};
    if (nd >= 1) H5Sget_simple_extent_dims(sp, dims, NULL);
    if (sp >= 0) H5Sclose(sp);
    if (nd < 1) {
        mf_h5_reason(why);
        return -1;
    }
    hid_t dx = coll_dxpl();
    int rc = write_sel(d, mtype, buf, nd, start, dims, dx);
    H5Pclose(dx);
    if (rc) mf_h5_reason(why);
    return rc;
}

/* Bytes per collective transfer: MPI-IO counts are int, and HDF5 1.10 does not split. */
#define XFER_BYTES ((size_t)256 << 20)

int mf_h5_write_rows(hid_t d, const float *buf, int ndim, const int64_t *shape, char why[256]) {
    hsize_t rows = (hsize_t)shape[0], cols = ndim == 2 ? (hsize_t)shape[1] : 1;
    if (rows * cols == 0) return 0;
    /* pieces of whole chunks: a filtered chunk is never written in part */
    hsize_t chunk[2] = {1, 1};
    hid_t dcpl = H5Dget_create_plist(d);
    if (dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED) H5Pget_chunk(dcpl, ndim, chunk);
    if (dcpl >= 0) H5Pclose(dcpl);
    hsize_t per = cols ? XFER_BYTES / sizeof(float) / cols : rows;
    per = per / chunk[0] * chunk[0];
    if (per == 0) per = chunk[0];
    hid_t dx = coll_dxpl();
    int rc = 0;
    for (hsize_t r = 0; r < rows && rc == 0; r += per) {
        hsize_t n = rows - r < per ? rows - r : per;
        hsize_t start[2] = {r, 0}, count[2] = {n, cols};
        rc = write_sel(d, H5T_NATIVE_FLOAT, buf ? buf + r * cols : NULL, ndim, start, count, dx);
    }
    H5Pclose(dx);
    if (rc) mf_h5_reason(why);
    return rc;
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

/* Fixed-length (stored in the checksummed object header, not the unchecked
 * global heap that variable-length strings use), NUL-terminated. */
int mf_h5_attr_str(hid_t loc, const char *name, const char *val, char why[256]) {
    if (!val) val = "";
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(val) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    H5Tset_cset(t, H5T_CSET_UTF8);
    int rc = mf_h5_attr_write(loc, name, t, t, val, why);
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

/* Bob Jenkins' lookup3 hashlittle(), as HDF5's H5_checksum_lookup3. */
#define L3_ROT(x, k) (((x) << (k)) ^ ((x) >> (32 - (k))))
#define L3_MIX(a, b, c)                                                                                               \
    do {                                                                                                              \
        a -= c; a ^= L3_ROT(c, 4); c += b;                                                                            \
        b -= a; b ^= L3_ROT(a, 6); a += c;                                                                            \
        c -= b; c ^= L3_ROT(b, 8); b += a;                                                                            \
        a -= c; a ^= L3_ROT(c, 16); c += b;                                                                           \
        b -= a; b ^= L3_ROT(a, 19); a += c;                                                                           \
        c -= b; c ^= L3_ROT(b, 4); b += a;                                                                            \
    } while (0)
#define L3_FINAL(a, b, c)                                                                                             \
    do {                                                                                                              \
        c ^= b; c -= L3_ROT(b, 14);                                                                                   \
        a ^= c; a -= L3_ROT(c, 11);                                                                                   \
        b ^= a; b -= L3_ROT(a, 25);                                                                                   \
        c ^= b; c -= L3_ROT(b, 16);                                                                                   \
        a ^= c; a -= L3_ROT(c, 4);                                                                                    \
        b ^= a; b -= L3_ROT(a, 14);                                                                                   \
        c ^= b; c -= L3_ROT(b, 24);                                                                                   \
    } while (0)

uint32_t mf_h5_lookup3(const void *key, size_t length, uint32_t initval) {
    const uint8_t *k = key;
    uint32_t a, b, c;
    a = b = c = 0xdeadbeef + (uint32_t)length + initval;
    while (length > 12) {
        a += k[0] | (uint32_t)k[1] << 8 | (uint32_t)k[2] << 16 | (uint32_t)k[3] << 24;
        b += k[4] | (uint32_t)k[5] << 8 | (uint32_t)k[6] << 16 | (uint32_t)k[7] << 24;
        c += k[8] | (uint32_t)k[9] << 8 | (uint32_t)k[10] << 16 | (uint32_t)k[11] << 24;
        L3_MIX(a, b, c);
        length -= 12;
        k += 12;
    }
    switch (length) {
    case 12: c += (uint32_t)k[11] << 24; /* fall through */
    case 11: c += (uint32_t)k[10] << 16; /* fall through */
    case 10: c += (uint32_t)k[9] << 8;   /* fall through */
    case 9: c += k[8];                   /* fall through */
    case 8: b += (uint32_t)k[7] << 24;   /* fall through */
    case 7: b += (uint32_t)k[6] << 16;   /* fall through */
    case 6: b += (uint32_t)k[5] << 8;    /* fall through */
    case 5: b += k[4];                   /* fall through */
    case 4: a += (uint32_t)k[3] << 24;   /* fall through */
    case 3: a += (uint32_t)k[2] << 16;   /* fall through */
    case 2: a += (uint32_t)k[1] << 8;    /* fall through */
    case 1: a += k[0]; break;
    case 0: return c;
    }
    L3_FINAL(a, b, c);
    return c;
}

static const uint8_t H5_SIG[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

int mf_h5_check_file(const char *path, mf_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mf_err_set(err, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int en = errno;
        close(fd);
        return mf_err_set(err, "%s: %s", path, strerror(en));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return mf_err_set(err, "%s: not a regular file", path);
    }
    uint64_t size = (uint64_t)st.st_size;
    enum { SB_LEN = 48 }; /* superblock 2/3 with 8-byte offsets */
    uint8_t sb[SB_LEN];
    ssize_t got = pread(fd, sb, SB_LEN, 0);
    int rc = 0;
    if (got < 8 || memcmp(sb, H5_SIG, 8) != 0) {
        /* HDF5 would also look after a user block, at 512, 1024, 2048, ... */
        uint64_t at = 0;
        for (uint64_t off = 512; off + 8 <= size && !at; off *= 2) {
            uint8_t s8[8];
            if (pread(fd, s8, 8, (off_t)off) == 8 && memcmp(s8, H5_SIG, 8) == 0) at = off;
        }
        if (at) rc = mf_err_set(err, "%s: HDF5 file with a %llu-byte user block: not a file minifuse writes", path,
                                (unsigned long long)at);
        else rc = mf_err_set(err, "%s: not an HDF5 file (no HDF5 signature)%s", path, size == 0 ? " (empty file)" : "");
    } else if (got < 9) {
        rc = mf_err_set(err, "%s: truncated HDF5 file (%llu bytes)", path, (unsigned long long)size);
    } else if (sb[8] != 2 && sb[8] != 3) {
        rc = mf_err_set(err, "%s: HDF5 superblock version %u: minifuse reads only files in HDF5's newest format "
                        "(superblock 2 or 3, checksummed metadata), as it writes them; an older minifuse or "
                        "another tool wrote this one", path, sb[8]);
    } else if (got < SB_LEN) {
        rc = mf_err_set(err, "%s: truncated HDF5 file (%llu bytes, shorter than its superblock)", path,
                        (unsigned long long)size);
    } else if (sb[9] != 8 || sb[10] != 8) {
        rc = mf_err_set(err, "%s: HDF5 superblock with %u-byte offsets and %u-byte lengths: not a file minifuse "
                        "writes", path, sb[9], sb[10]);
    } else {
        uint32_t want = (uint32_t)sb[44] | (uint32_t)sb[45] << 8 | (uint32_t)sb[46] << 16 | (uint32_t)sb[47] << 24;
        uint64_t base = le64(sb + 12), eof = le64(sb + 28);
        if (mf_h5_lookup3(sb, 44, 0) != want)
            rc = mf_err_set(err, "%s: HDF5 superblock checksum mismatch (damaged file)", path);
        else if (sb[11] != 0)
            rc = mf_err_set(err, "%s: HDF5 file was not closed cleanly (file-consistency flags 0x%02x: its writer "
                            "died or still has it open)", path, sb[11]);
        else if (base != 0)
            rc = mf_err_set(err, "%s: HDF5 base address %llu: not a file minifuse writes", path,
                            (unsigned long long)base);
        else if (eof > size)
            rc = mf_err_set(err, "%s: truncated HDF5 file: its superblock says %llu bytes, the file has %llu", path,
                            (unsigned long long)eof, (unsigned long long)size);
    }
    close(fd);
    return rc;
}

hid_t mf_h5_open_read(const char *path, mf_err *err) {
    char why[256];
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (mf_h5_check_file(path, err)) return -1;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_sec2(fapl);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (f < 0) return mf_err_set(err, "%s: cannot open as HDF5 (damaged file?): %s", path, mf_h5_reason(why));
    return f;
}

#if defined(__SANITIZE_ADDRESS__)
#define MF_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MF_ASAN 1
#endif
#endif

/* Defined by the fuzz harness (tests/fuzz/fuzz_common.h): the probe's child
 * must not report its own crash as the fuzzer's. */
extern void mf_h5_probe_child_hook(void) __attribute__((weak));

int mf_h5_probe(const char *path, int (*fn)(void *ctx, mf_err *e), void *ctx, mf_err *err) {
    const char *on = getenv("MINIFUSE_H5_PROBE");
    if (on && strcmp(on, "0") == 0) return 0;
    const char *ts = getenv("MINIFUSE_H5_PROBE_TIMEOUT");
    double limit = ts && atof(ts) > 0 ? atof(ts) : 300;
    int fds[2];
    if (pipe(fds) != 0) return 0;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return 0;
    }
    if (pid == 0) {
        close(fds[0]);
#ifndef MF_ASAN
        /* die quietly: the parent reports it (MPI's handlers would print a backtrace) */
        int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
        for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) signal(sigs[i], SIG_DFL);
#endif
        if (mf_h5_probe_child_hook) mf_h5_probe_child_hook();
        mf_err e = {{0}};
        int rc = fn(ctx, &e);
        if (rc) {
            size_t n = strnlen(e.msg, sizeof e.msg);
            if (write(fds[1], e.msg, n) < 0) { /* the exit code still says it failed */ }
        }
        _exit(rc ? 3 : 0);
    }
    close(fds[1]);
    char msg[sizeof err->msg] = "";
    size_t got = 0;
    int status = 0, done = 0;
    double t0 = 0;
    struct timespec ts0;
    clock_gettime(CLOCK_MONOTONIC, &ts0);
    t0 = (double)ts0.tv_sec + 1e-9 * (double)ts0.tv_nsec;
    for (;;) {
        struct pollfd pf = {.fd = fds[0], .events = POLLIN};
        int pr = poll(&pf, 1, 200);
        if (pr > 0) {
            ssize_t n = read(fds[0], msg + got, sizeof msg - 1 - got);
            if (n > 0) got += (size_t)n;
            else if (n == 0 || (n < 0 && errno != EINTR)) { /* writer closed: the child is ending */
                if (waitpid(pid, &status, 0) == pid) done = 1;
                break;
            }
        }
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) { done = 1; break; }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)now.tv_sec + 1e-9 * (double)now.tv_nsec - t0 > limit) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            close(fds[0]);
            return mf_err_set(err, "%s: libhdf5 did not finish reading its metadata in %.0f s: refused (forged or "
                              "damaged file? MINIFUSE_H5_PROBE_TIMEOUT sets the limit)", path, limit);
        }
    }
    /* drain what is left of the message */
    for (ssize_t n; got < sizeof msg - 1 && (n = read(fds[0], msg + got, sizeof msg - 1 - got)) > 0;) got += (size_t)n;
    msg[got] = 0;
    close(fds[0]);
    if (!done) return 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 3 && got) return mf_err_set(err, "%s", msg);
    if (WIFSIGNALED(status))
        return mf_err_set(err, "%s: libhdf5 crashed (signal %d) reading its metadata: the file is forged or damaged past "
                          "its checksums; refused", path, WTERMSIG(status));
    return mf_err_set(err, "%s: libhdf5 failed (exit %d) reading its metadata: the file is forged or damaged past its "
                      "checksums; refused", path, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

int mf_h5_path_exists(hid_t file, const char *name) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", name);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != 0) continue;
        char c = *p;
        *p = 0;
        H5L_info_t li;
        if (H5Lexists(file, buf, H5P_DEFAULT) <= 0 || H5Lget_info(file, buf, &li, H5P_DEFAULT) < 0 ||
            li.type != H5L_TYPE_HARD)
            return 0;
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
    if (H5Tis_variable_str(ft) != 0) {
        /* variable-length strings live in the global heap, which has no checksum */
        rc = -1;
        snprintf(why, sizeof why, "a variable-length string (minifuse writes fixed-length strings; a file from "
                 "another tool?)");
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

/* The dataset's storage is one minifuse can read safely (see mf_h5_open_ds). */
static int check_storage(const mf_h5r *c, const char *name, hid_t d, int nd, const hsize_t *dims) {
    hid_t dcpl = H5Dget_create_plist(d), t = H5Dget_type(d);
    size_t tsize = t >= 0 ? H5Tget_size(t) : 0;
    if (t >= 0) H5Tclose(t);
    if (dcpl < 0) return mf_err_set(c->e, "%s: dataset '%s': cannot read its storage properties", c->path, name);
    int rc = 0, fletcher = 0, deflate = 0;
    H5D_layout_t lay = H5Pget_layout(dcpl);
    if (lay != H5D_CONTIGUOUS && lay != H5D_CHUNKED && lay != H5D_COMPACT)
        rc = mf_err_set(c->e, "%s: dataset '%s' has %s storage: not a layout minifuse writes", c->path, name,
                        lay == H5D_VIRTUAL ? "virtual" : "unknown");
    else if (H5Pget_external_count(dcpl) != 0)
        rc = mf_err_set(c->e, "%s: dataset '%s' keeps its data in external files: refused", c->path, name);
    int nf = rc ? 0 : H5Pget_nfilters(dcpl);
    if (nf < 0 || nf > 8) rc = mf_err_set(c->e, "%s: dataset '%s': bad filter pipeline", c->path, name);
    for (int i = 0; i < nf && rc == 0; i++) {
        unsigned flags = 0;
        size_t ne = 0;
        char fname[64] = "";
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &ne, NULL, sizeof fname, fname, NULL);
        if (id == H5Z_FILTER_FLETCHER32) fletcher = 1;
        else if (id == H5Z_FILTER_DEFLATE) deflate = 1;
        else if (id != H5Z_FILTER_SHUFFLE)
            rc = mf_err_set(c->e, "%s: dataset '%s' uses HDF5 filter %d: only Fletcher-32, deflate and shuffle are "
                            "read", c->path, name, (int)id);
    }
    H5Pclose(dcpl);
    if (rc) return rc;
    if (!fletcher && !c->no_checksum)
        return mf_err_set(c->e, "%s: dataset '%s' has no Fletcher-32 checksum (minifuse writes one on every dataset; "
                          "rewrite the file with fletcher32=True)", c->path, name);
    /* bytes the shape needs, checked */
    uint64_t need = tsize;
    for (int i = 0; i < nd; i++)
        if (mf_mul_u64(need, dims[i], &need))
            return mf_err_set(c->e, "%s: dataset '%s': its shape overflows a byte count", c->path, name);
    if (need == 0) return 0;
    hsize_t have = H5Dget_storage_size(d);
    uint64_t cap = deflate ? (have > UINT64_MAX / 1100 ? UINT64_MAX : (uint64_t)have * 1100 + 65536) : have;
    if (need > cap)
        return mf_err_set(c->e, "%s: dataset '%s' needs %llu bytes but holds %llu in the file (damaged or forged "
                          "sizes)", c->path, name, (unsigned long long)need, (unsigned long long)have);
    return 0;
}

hid_t mf_h5_open_ds(const mf_h5r *c, const char *name, H5T_class_t cls, int nd, hsize_t *dims, int any0) {
    char why[256];
    if (!mf_h5_path_exists(c->file, name))
        return mf_err_set(c->e, "%s: missing dataset '%s'", c->path, name), -1;
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
    } else if (check_storage(c, name, d, nd, gd) == 0) {
        for (int i = 0; i < nd; i++) dims[i] = gd[i];
        return d;
    }
    H5Dclose(d);
    return -1;
}

const char *mf_h5_read_reason(char why[256]) {
    mf_h5_reason(why);
    if (strstr(why, "checksum") || strstr(why, "Fletcher") || strstr(why, "fletcher") || strstr(why, "filter"))
        snprintf(why, 256, "data checksum (Fletcher-32) mismatch: the file is damaged");
    return why;
}
