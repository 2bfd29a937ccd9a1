/* checkpoint.h - restartable training checkpoints (parallel HDF5).
 *
 * One HDF5 file per checkpoint, DIR/ckpt-<step, 8+ digits>.h5 (layout:
 * docs/checkpoint_schema.md): every trainable tensor under its global Hugging
 * Face name with its AdamW moments (/params/NAME, /adam_m/NAME, /adam_v/NAME),
 * the RNG state of every data-parallel replica (/rng), and root attributes for
 * the step, tokens seen, data position, schedule, options, model provenance
 * and a completion marker ("complete" = 1, written last).
 *
 * Writing is collective over all ranks (pipeline stages x data-parallel
 * replicas): the ranks of replica 0 write the tensors they own, the others take
 * part in the collective HDF5 calls only. The file is written under a unique
 * temporary name (NAME.tmp.<host>.<pid>.<random>) and renamed when complete;
 * older complete checkpoints beyond keep_last are deleted. The first write
 * takes DIR/.minifuse.lock (held until the process ends: a second job writing
 * the same directory is refused, naming the holder) and removes temporaries
 * whose writer is dead. Files are HDF5's newest format with Fletcher-32 on
 * every dataset; a damaged file is an error naming it, never a crash. Reading is per rank (serial HDF5) and by name, so a checkpoint
 * written by one pipeline split can be read by another. */
#ifndef MF_CHECKPOINT_H
#define MF_CHECKPOINT_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>
#include "train/optim.h"
#include "train/params.h"
#include "util/err.h"

#define MF_CKPT_FORMAT "minifuse-train-checkpoint"
#define MF_CKPT_VERSION 1
/* The lock file in a checkpoint directory: one writer at a time. */
#define MF_CKPT_LOCK ".minifuse.lock"

/* A float64 array kept beside the tensors, /f64/NAME float64 [n]: state that
 * must come back bit for bit, such as score's running sums. Each rank passes
 * its own arrays (names unique over all ranks, n > 0) and writes them. */
typedef struct mf_ckpt_f64 {
    const char *name;
    int64_t n;
    double *data;
} mf_ckpt_f64;

typedef struct mf_train_meta {
    int64_t step;        /* optimizer updates done */
    int64_t tokens;      /* training tokens seen (all replicas) */
    int64_t data_pos;    /* position in the data stream, meaning up to the trainer */
    double lr;           /* learning rate of the last update */
    mf_lr_sched sched;   /* the schedule in use */
    /* write: this rank's replica's RNG; read: row `replica` of /rng when the
     * file has one (have_rng = 1), else zero (have_rng = 0) */
    mf_rng rng;
    int have_rng;
    int n_rng;           /* read: rows of /rng (replicas of the writing run) */
    mf_rng *rng_all;     /* read: all rows [n_rng] (malloc'ed) */
    /* strings: NULL writes ""; read gives malloc'ed strings ("" when absent) */
    char *options_json;  /* the run's options, JSON */
    char *state_json;    /* trainer-specific progress, JSON (fuse: iteration, removed blocks, MI) */
    char *student, *student_sha;
    char *teacher, *teacher_sha;
    char *provenance_json;  /* where the numbers came from: backend, BLAS core and threads, layout (JSON) */
    /* The writing run, also as plain attributes (write: rank 0's; read: "" / 0
     * when absent, in checkpoints of older versions): backend, OpenBLAS core and
     * threads per rank, the pp x dp layout, and the pipeline stage of each of the
     * model's layers (/layer_stage; read: malloc'ed, n_layers 0 when absent). */
    char *backend, *blas_core;
    int32_t blas_threads, pp, dp;
    int32_t n_layers;
    int32_t *layer_stage; /* [n_layers] */
    /* write: this rank's float64 arrays (mf_ckpt_read_f64 reads them) */
    const mf_ckpt_f64 *f64;
    int n_f64;
    char *software_version; /* read only (written: MF_VERSION) */
    char *created;          /* read only (written: UTC now, ISO 8601) */
} mf_train_meta;

/* Write DIR/ckpt-<meta->step>.h5 (collective over world). replica: this rank's
 * data-parallel index (0..R-1; 0 when there is no data parallelism). ps and opt
 * are this rank's tensors and their AdamW state (opt->n == ps->n; a tensor
 * with opt->m[i] == opt->v[i] == NULL is frozen: /params only); rank 0's
 * meta gives every scalar and string, every rank's meta its replica's rng.
 * keep_last > 0: afterwards delete all but the keep_last newest complete
 * checkpoints of DIR. On error every rank returns -1 with the same message
 * and no DIR/ckpt-<step>.h5 (nor .tmp) is left. path_out (may be NULL): the
 * file written. */
int mf_ckpt_write(const char *dir, MPI_Comm world, int replica, const mf_params *ps, const mf_adamw *opt,
                  const mf_train_meta *meta, int keep_last, char *path_out, size_t cap, mf_err *err);

/* The newest complete checkpoint of dir (largest step whose file opens and has
 * complete = 1; .tmp files, other names and broken files are skipped).
 * 0: found (path in path_out), 1: none, -1: error (dir unreadable). */
int mf_ckpt_find_latest(const char *dir, char *path_out, size_t cap, mf_err *err);

/* Every complete checkpoint of dir, newest first (paths malloc'ed, as the
 * array; *n may be 0). Files that do not open or are incomplete are logged
 * and left out. 0, or -1 (dir unreadable). */
int mf_ckpt_list_complete(const char *dir, char ***paths, int *n, mf_err *err);

/* Read into this rank's tensors (ps: data; opt: m, v and step, may be NULL)
 * and meta (may be NULL; free with mf_train_meta_free), by name. Every tensor
 * of ps must be in the file with its shape; tensors of other ranks are not
 * read. Independent per rank (no MPI). Errors name the file and dataset. */
int mf_ckpt_read(const char *path, int replica, mf_params *ps, mf_adamw *opt, mf_train_meta *meta, mf_err *err);

/* Read float64 arrays list[0..n-1] (each /f64/NAME with exactly list[i].n
 * entries) into list[i].data. Independent per rank; errors name file and dataset. */
int mf_ckpt_read_f64(const char *path, const mf_ckpt_f64 *list, int n, mf_err *err);

/* Free the strings, rng_all and layer_stage that mf_ckpt_read allocated. */
void mf_train_meta_free(mf_train_meta *m);

/* Resuming with other options would silently give a run that is neither the
 * checkpointed one nor a fresh one: compare the options JSON of this run
 * (current) with the checkpoint's (stored), key by key. Keys in free_keys
 * (NULL-terminated, may be NULL) may differ; keys absent from stored (older
 * checkpoints) are not compared. 0: they match; -1: err names the file and
 * the first option that differs, as --option-name (underscores become dashes),
 * with both values. */
int mf_ckpt_options_check(const char *path, const char *stored, const char *current, const char *const *free_keys,
                          mf_err *err);

/* "DIR/ckpt-00000042.h5" for step 42. */
void mf_ckpt_path(const char *dir, int64_t step, char *out, size_t cap);

#endif
