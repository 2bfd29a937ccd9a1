/* run.h - what every restartable run shares (distill, fuse, and the passes to come).
 *
 *   signals      SIGTERM, SIGUSR1 and SIGINT set one flag (volatile sig_atomic_t);
 *                the run polls it at safe points and all ranks agree before
 *                acting (mf_run_stop_agreed), so they stop at the same step.
 *   data order   epochs are permutations of the samples drawn from (seed,
 *                stream, epoch) alone: resuming needs no RNG state.
 *   checkpoints  cadence (--checkpoint-every), keep-last (--keep), the options
 *                fingerprint stored in every checkpoint and compared on
 *                --resume, and the choice of the checkpoint to resume (rank 0
 *                decides, every rank gets the same path).
 * Collectives go through mpi/collective.h. */
#ifndef MF_RUN_H
#define MF_RUN_H

#include <signal.h>
#include <stdint.h>
#include "collective.h"
#include "train/checkpoint.h"

typedef struct mf_run {
    const char *what;          /* "distill", "fuse": log and error prefix */
    const char *ckpt_dir;
    int ckpt_every, keep;
    mf_coll world;             /* every rank of the run */
    char options[1024];        /* JSON of the options that decide the result (mf_run_set_options) */
    char provenance[512];      /* JSON (mf_run_set_provenance) */
    char backend[32], blas_core[64];
    int blas_threads, pp, dp;  /* mf_run_set_provenance */
    int n_layers;              /* mf_run_set_layers */
    int32_t *layer_stage;      /* [n_layers] pipeline stage of each layer */
    int64_t max_steps;         /* > 0: stop with a checkpoint after this step (mf_run_at_limit) */
} mf_run;

/* Collective over world: rank 0 creates the checkpoint directory and takes its
 * lock (DIR/.minifuse.lock, held until the process ends) at start-up, so a
 * second job on the same directory is refused before it computes anything;
 * fatal on every rank, naming the holder. */
void mf_run_init(mf_run *r, const char *what, MPI_Comm world, const char *ckpt_dir, int ckpt_every, int keep);

/* Install the handlers for SIGTERM, SIGUSR1 and SIGINT (process-wide). */
void mf_run_catch_signals(void);
/* The flag the handlers set (the signal number; 0: none), for loops that poll it. */
const volatile sig_atomic_t *mf_run_stop_flag(void);
/* Collective: the largest signal number any rank received, 0 if none. */
int mf_run_stop_agreed(const mf_run *r);

/* Is a checkpoint due after `step` optimizer steps? */
int mf_run_ckpt_due(const mf_run *r, int64_t step);
/* --max-steps: has the run reached r->max_steps (> 0) at `step` (the
 * checkpoint numbering)? Then it checkpoints and exits as on a signal. */
int mf_run_at_limit(const mf_run *r, int64_t step);

/* printf-style options fingerprint (a JSON object). */
void mf_run_set_options(mf_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Collective: the complete checkpoints of the directory, newest first, as rank
 * 0 lists them (every rank gets the same list; free with mf_run_candidates_free).
 * A resume tries them in order: the first that every rank reads is used. */
int mf_run_candidates(const mf_run *r, char ***paths);
void mf_run_candidates_free(char **paths, int n);
/* Collective: did every rank read `path` (its rc == 0)? If not, rank 0 logs
 * the first failing rank's reason and that the previous checkpoint comes next. */
int mf_run_read_ok(const mf_run *r, const char *path, int rc, const mf_err *err);
/* After every candidate failed (n > 0): fatal, naming the directory. */
void mf_run_no_readable(const mf_run *r, int n) __attribute__((noreturn));
/* The checkpoint's options (stored) against this run's; keys in free_keys
 * (NULL-terminated, may be NULL) may differ. A difference is fatal, naming the option. */
void mf_run_check_options(const mf_run *r, const char *path, const char *stored, const char *const *free_keys);
/* The run's provenance, stored in every checkpoint: backend, OpenBLAS core
 * and threads per rank, ranks, and the layout ("pp 2 x dp 1"). */
void mf_run_set_provenance(mf_run *r, const char *backend, int pp, int dp);
/* The layer -> pipeline stage map stored in every checkpoint (/layer_stage):
 * stage s owns layers [bounds[s], bounds[s+1]) of n_layers = bounds[stages]. */
void mf_run_set_layers(mf_run *r, const int *bounds, int stages);
/* Rank 0 warns when a checkpoint was written with another BLAS core, thread
 * count or backend (the last bits of a resumed run then differ from an
 * uninterrupted one), naming both values, and logs a layout change (results
 * agree within reduction noise); both are printed even under MINIFUSE_QUIET. */
void mf_run_check_provenance(const mf_run *r, const char *path, const char *stored);
/* Collective: write a checkpoint of meta->step with this run's options,
 * provenance and layout (meta's options_json, provenance_json, backend,
 * blas_core, blas_threads, pp, dp and layer map are set here). */
void mf_run_save(const mf_run *r, int replica, const mf_params *ps, const mf_adamw *opt, mf_train_meta *meta,
                 char *path_out, size_t cap);
void mf_run_free(mf_run *r);

/* ---------------------------------------------------------------- watchdog */

/* A thread per rank that ends the job when the run makes no progress: one
 * stopped rank (SIGSTOP, a stuck node, a hung filesystem) otherwise leaves the
 * others spinning in MPI forever. Every rank that is still running logs how
 * long it has waited and in which phase (the rank that stays silent is the one
 * that stopped), then the job is aborted (MPI_Abort), so Slurm can requeue it.
 * Deadline: `timeout` seconds when > 0; 0 = automatic: 10 x the slowest step so
 * far, at least 600 s, and 3600 s until the first step is done. Disarmed
 * between runs of work that report no progress (loading, writing). */
typedef struct mf_watchdog mf_watchdog;
/* --watchdog's help line (distill, fuse) */
#define MF_WATCHDOG_HELP \
    "abort the job after S seconds without progress (default 0: 10 x the slowest step, at least 600 s; -1 off)"
/* timeout < 0: no watchdog (returns NULL; the other calls accept NULL). */
mf_watchdog *mf_watchdog_start(const char *what, int rank, double timeout);
/* Progress: `phase` ("step 12", "macro influence") has begun; restarts the clock. */
void mf_watchdog_kick(mf_watchdog *w, const char *phase);
/* A step took `seconds` (feeds the automatic deadline). */
void mf_watchdog_step_time(mf_watchdog *w, double seconds);
void mf_watchdog_disarm(mf_watchdog *w);
void mf_watchdog_stop(mf_watchdog *w);

/* ---------------------------------------------------------------- data order */

typedef struct mf_epochs {
    uint64_t base;             /* seed * golden + stream * (2^32 + 1) */
    int64_t n;                 /* samples per epoch */
    int64_t epoch;             /* the epoch perm holds, -1: none */
    int64_t *perm;             /* [n] */
} mf_epochs;

void mf_epochs_init(mf_epochs *e, uint64_t seed, uint64_t stream, int64_t n);
/* Sample at global position g (epoch g / n). */
int64_t mf_epochs_at(mf_epochs *e, int64_t g);
void mf_epochs_free(mf_epochs *e);

#endif
