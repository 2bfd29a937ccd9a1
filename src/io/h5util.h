/* h5util.h - helpers shared by the HDF5 files minifuse writes collectively
 * with parallel HDF5 and reads serially (rankings, training checkpoints).
 *
 * Holds: HDF5's error text; every-rank-agrees error handling (a phase that
 * may fail on some ranks ends in mf_h5_agree, so every rank returns -1 with
 * the lowest failing rank's message); scalar attributes; collective creation
 * of the file (written as PATH.tmp through MPI-IO), its groups and datasets;
 * publishing PATH.tmp as PATH; and checked reads of root attributes and
 * datasets. Messages start with the file's final path.
 *
 * Hardening (docs/promises.md): files are written in HDF5's newest format
 * (superblock 3, checksummed metadata), string attributes as fixed-length
 * strings (no global heap), datasets chunked with a Fletcher-32 checksum
 * (mf_h5_make_ds) and written collectively. Before H5Fopen the reader checks
 * the signature, superblock version, its checksum and the stored end of file
 * itself, and refuses anything else in one line naming the file; datasets must
 * be hard links with plain storage (no external or virtual data), known
 * filters, and as many bytes in the file as their shape needs before anything
 * is allocated for them. */
#ifndef MF_H5UTIL_H
#define MF_H5UTIL_H

#include <hdf5.h>
#include <mpi.h>
#include <stdint.h>
#include "util/err.h"

/* The most specific description on HDF5's error stack (innermost first) into
 * buf, "HDF5 error" if it holds none; returns buf. */
const char *mf_h5_reason(char buf[256]);

/* ---------------------------------------------------------------- MPI (collective over comm) */

/* Every rank learns whether every rank's rc was 0; if not, e on every rank
 * gets the message of the lowest failing rank and -1 is returned. */
int mf_h5_agree(MPI_Comm comm, int rc, mf_err *e);

/* Rank 0's rc (and, when non-zero, its message in e) on every rank. */
int mf_h5_bcast_rc(MPI_Comm comm, int rc, mf_err *e);

/* A new copy of rank 0's s (NULL counts as "") on every rank. */
char *mf_h5_bcast_str(MPI_Comm comm, const char *s);

/* ---------------------------------------------------------------- writing */

/* Now as ISO-8601 UTC, "2025-01-31T12:00:00Z". */
void mf_h5_now_iso(char buf[32]);

/* A unique temporary name for PATH ("PATH.tmp.<host>.<pid>.<random>", see
 * util/fsutil.h), newly allocated. */
char *mf_h5_tmp_name(const char *path);
/* Collective: rank 0's mf_h5_tmp_name(path) on every rank. */
char *mf_h5_tmp_name_comm(MPI_Comm comm, const char *path);

/* Collective: create (truncate) tmp through MPI-IO on comm into *file, in the
 * newest file format; agreed as by mf_h5_agree, and on failure rank 0 removes tmp. */
int mf_h5_create_file(MPI_Comm comm, const char *path, const char *tmp, hid_t *file, mf_err *e);

/* Collective: group name (absolute) without timestamps. */
int mf_h5_make_group(hid_t file, const char *path, const char *name, mf_err *e);

/* Collective: dataset name (absolute) of ftype and shape dims[nd] (each > 0),
 * chunked (about 1 MiB a chunk, whole rows where they fit) with a Fletcher-32
 * checksum, space allocated now, no fill, no timestamps. Write it with
 * mf_h5_write_coll / mf_h5_write_rows (collective). Returns it, or -1 with e set. */
hid_t mf_h5_make_ds(hid_t file, const char *path, const char *name, hid_t ftype, int nd, const hsize_t *dims,
                    mf_err *e);
/* The same, contiguous and without a filter: for data written by independent
 * I/O (the teacher cache, which keeps its own checksums). */
hid_t mf_h5_make_ds_plain(hid_t file, const char *path, const char *name, hid_t ftype, int nd, const hsize_t *dims,
                          mf_err *e);

/* Collective over the file's communicator: write the whole of dataset d from
 * buf (memory type mtype) on the rank that owns it; every other rank passes
 * buf = NULL and writes nothing. 0, or -1 with HDF5's reason in why. */
int mf_h5_write_coll(hid_t d, hid_t mtype, const void *buf, char why[256]);
/* Collective, for a float dataset of shape [shape[0]] or [shape[0]][shape[1]]
 * (the same on every rank): the owner (buf non-NULL) writes it in pieces of
 * whole chunks of rows (at most about 256 MiB each, MPI-IO counts are int),
 * the others take part with empty selections. */
int mf_h5_write_rows(hid_t d, const float *buf, int ndim, const int64_t *shape, char why[256]);

/* Scalar attribute name on loc: file type ftype, *val of memory type mtype.
 * On failure returns -1 with HDF5's reason in why. */
int mf_h5_attr_write(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *val, char why[256]);
int mf_h5_attr_str(hid_t loc, const char *name, const char *val, char why[256]); /* fixed-length UTF-8 */
int mf_h5_attr_i32(hid_t loc, const char *name, int v, char why[256]);
int mf_h5_attr_i64(hid_t loc, const char *name, int64_t v, char why[256]);
int mf_h5_attr_f64(hid_t loc, const char *name, double v, char why[256]);

/* Close an object id if open and mark it closed (-1). */
void mf_h5_close_id(hid_t *id);

/* Collective: close *file (tmp) if open and mark it closed. */
int mf_h5_close_file(hid_t *file, const char *path, const char *tmp, mf_err *e);

/* Rank 0, at the end of a write whose outcome so far is rc: if rc is 0, move
 * tmp to path (durable: fsync tmp before and its directory after); if rc or
 * that fails, remove tmp. Returns the outcome. */
int mf_h5_finish(int rc, const char *path, const char *tmp, int durable, mf_err *e);

/* ---------------------------------------------------------------- reading (serial) */

/* A file being read: messages go to e and name path. no_checksum: datasets
 * need not carry Fletcher-32 (the teacher cache checks its own). */
typedef struct mf_h5r {
    const char *path;
    hid_t file;
    mf_err *e;
    int no_checksum;
} mf_h5r;

/* HDF5's lookup3 hash (the checksum of its metadata). */
uint32_t mf_h5_lookup3(const void *key, size_t length, uint32_t initval);

/* Check the first bytes of path before HDF5 parses it: regular file, HDF5
 * signature at offset 0 (no user block), superblock version 2 or 3 with
 * 8-byte offsets and lengths, a matching superblock checksum, no
 * file-consistency flags (closed cleanly), and a stored end of file no larger
 * than the file. 0, or -1 with a one-line message naming path. */
int mf_h5_check_file(const char *path, mf_err *err);

/* Open path read-only (HDF5's own error printing off) after mf_h5_check_file;
 * -1 with err set when it is missing, not a regular file, not HDF5 as
 * minifuse writes it, or unreadable. */
hid_t mf_h5_open_read(const char *path, mf_err *err);

/* Run fn(ctx) - a read of path's metadata - in a forked child process first,
 * so that a file whose metadata crashes or hangs libhdf5 (forged past its
 * checksums) costs a clean error, not the job. Returns 0 if the child
 * finished (fn returned 0), -1 with fn's message when fn failed, -1 with
 * "libhdf5 crashed (signal N) reading it ..." when the child died, or "did not
 * finish in N s" (MINIFUSE_H5_PROBE_TIMEOUT, default 300) when it hung. The
 * child never touches MPI. MINIFUSE_H5_PROBE=0 turns the probe off (fn is not
 * run); so does a failed fork. */
int mf_h5_probe(const char *path, int (*fn)(void *ctx, mf_err *e), void *ctx, mf_err *err);

/* Does every component of the absolute path name exist in file, as a hard
 * link (soft and external links count as absent)? */
int mf_h5_path_exists(hid_t file, const char *name);

/* Root attribute name, a single string / integer / float, into *out. Absent:
 * an error if required, else *out is "" / 0. Strings are new (free them). */
int mf_h5_get_str(const mf_h5r *c, const char *name, int required, char **out);
int mf_h5_get_i64(const mf_h5r *c, const char *name, int required, int64_t *out);
int mf_h5_get_f64(const mf_h5r *c, const char *name, int required, double *out);

/* Open dataset name (absolute) and check its class and shape dims[nd]; with
 * any0 a 0 in dims matches any size. Also checks its storage: contiguous,
 * chunked or compact, no external files, only the Fletcher-32, deflate and
 * shuffle filters, Fletcher-32 present unless c->no_checksum, and at least as
 * many stored bytes as the shape needs (deflate: a thousandth of them), so a
 * reader may allocate the shape. On success dims gets the file's shape; on
 * failure -1 with c->e set. */
hid_t mf_h5_open_ds(const mf_h5r *c, const char *name, H5T_class_t cls, int nd, hsize_t *dims, int any0);

/* HDF5's reason for a failed dataset read (as mf_h5_reason), a Fletcher-32
 * mismatch spelled out as such. */
const char *mf_h5_read_reason(char why[256]);

#endif
