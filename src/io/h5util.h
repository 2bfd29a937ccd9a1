/* h5util.h - helpers shared by the HDF5 files minifuse writes collectively
 * with parallel HDF5 and reads serially (rankings, training checkpoints).
 *
 * Holds: HDF5's error text; every-rank-agrees error handling (a phase that
 * may fail on some ranks ends in mf_h5_agree, so every rank returns -1 with
 * the lowest failing rank's message); scalar attributes; collective creation
 * of the file (written as PATH.tmp through MPI-IO), its groups and datasets;
 * publishing PATH.tmp as PATH; and checked reads of root attributes and
 * datasets. Messages start with the file's final path. */
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

/* "PATH.tmp", newly allocated. */
char *mf_h5_tmp_name(const char *path);

/* Collective: create (truncate) tmp through MPI-IO on comm into *file; agreed
 * as by mf_h5_agree, and on failure rank 0 removes tmp. */
int mf_h5_create_file(MPI_Comm comm, const char *path, const char *tmp, hid_t *file, mf_err *e);

/* Collective: group name (absolute) without timestamps. */
int mf_h5_make_group(hid_t file, const char *path, const char *name, mf_err *e);

/* Collective: dataset name (absolute) of ftype and shape dims[nd], space
 * allocated now, no fill, no timestamps. Returns it, or -1 with e set. */
hid_t mf_h5_make_ds(hid_t file, const char *path, const char *name, hid_t ftype, int nd, const hsize_t *dims,
                    mf_err *e);

/* Scalar attribute name on loc: file type ftype, *val of memory type mtype.
 * On failure returns -1 with HDF5's reason in why. */
int mf_h5_attr_write(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *val, char why[256]);
int mf_h5_attr_str(hid_t loc, const char *name, const char *val, char why[256]); /* variable-length UTF-8 */
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

/* A file being read: messages go to e and name path. */
typedef struct mf_h5r {
    const char *path;
    hid_t file;
    mf_err *e;
} mf_h5r;

/* Open path read-only (HDF5's own error printing off); -1 with err set when it
 * is missing, not a regular file, not HDF5 or unreadable. */
hid_t mf_h5_open_read(const char *path, mf_err *err);

/* Does every component of the absolute path name exist in file? */
int mf_h5_path_exists(hid_t file, const char *name);

/* Root attribute name, a single string / integer / float, into *out. Absent:
 * an error if required, else *out is "" / 0. Strings are new (free them). */
int mf_h5_get_str(const mf_h5r *c, const char *name, int required, char **out);
int mf_h5_get_i64(const mf_h5r *c, const char *name, int required, int64_t *out);
int mf_h5_get_f64(const mf_h5r *c, const char *name, int required, double *out);

/* Open dataset name (absolute) and check its class and shape dims[nd]; with
 * any0 a 0 in dims matches any size. On success dims gets the file's shape;
 * on failure -1 with c->e set. */
hid_t mf_h5_open_ds(const mf_h5r *c, const char *name, H5T_class_t cls, int nd, hsize_t *dims, int any0);

#endif
