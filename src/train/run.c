/* run.c - the shared runtime of restartable runs (see run.h). */
#include "train/run.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "backend/cpu_blas.h"
#include "train/optim.h"
#include "util/err.h"
#include "util/fsutil.h"
#include "util/log.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) { g_stop = sig; }

void mf_run_catch_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

const volatile sig_atomic_t *mf_run_stop_flag(void) { return &g_stop; }

void mf_run_init(mf_run *r, const char *what, MPI_Comm world, const char *ckpt_dir, int ckpt_every, int keep) {
    memset(r, 0, sizeof *r);
    r->what = what;
    r->ckpt_dir = ckpt_dir;
    r->ckpt_every = ckpt_every;
    r->keep = keep;
    mf_coll_init(&r->world, world, NULL);
    mf_err err = {{0}};
    int rc = 0;
    if (r->world.rank == 0) {
        mkdir(ckpt_dir, 0755);
        size_t len = strlen(ckpt_dir) + sizeof MF_CKPT_LOCK + 2;
        char *lock = mf_malloc(len);
        snprintf(lock, len, "%s/%s", ckpt_dir, MF_CKPT_LOCK);
        rc = mf_lock_acquire(lock, ckpt_dir, &err); /* the checkpoint writer finds it held and goes on */
        free(lock);
    }
    mf_coll_bcast(&r->world, &rc, sizeof rc, 0);
    if (rc != 0) {
        mf_coll_bcast(&r->world, err.msg, sizeof err.msg, 0);
        mf_fatal("%s: %s", what, err.msg);
    }
}

void mf_run_free(mf_run *r) {
    free(r->layer_stage);
    r->layer_stage = NULL;
    r->n_layers = 0;
}

int mf_run_at_limit(const mf_run *r, int64_t step) { return r->max_steps > 0 && step >= r->max_steps; }

void mf_run_set_layers(mf_run *r, const int *bounds, int stages) {
    free(r->layer_stage);
    r->n_layers = bounds[stages];
    r->layer_stage = mf_malloc((size_t)(r->n_layers > 0 ? r->n_layers : 1) * sizeof *r->layer_stage);
    for (int s = 0; s < stages; s++)
        for (int l = bounds[s]; l < bounds[s + 1]; l++) r->layer_stage[l] = s;
}

int mf_run_stop_agreed(const mf_run *r) {
    return mf_coll_max_int(&r->world, (int)g_stop);
}

int mf_run_ckpt_due(const mf_run *r, int64_t step) { return r->ckpt_every > 0 && step % r->ckpt_every == 0; }

void mf_run_set_options(mf_run *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r->options, sizeof r->options, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof r->options) mf_fatal("%s: internal: the options fingerprint is too long", r->what);
}

int mf_run_candidates(const mf_run *r, char ***paths) {
    int n = 0, rc = 0;
    mf_err err = {{0}};
    *paths = NULL;
    if (r->world.rank == 0) rc = mf_ckpt_list_complete(r->ckpt_dir, paths, &n, &err);
    mf_coll_bcast(&r->world, &rc, sizeof rc, 0);
    if (rc != 0) {
        mf_coll_bcast(&r->world, err.msg, sizeof err.msg, 0);
        mf_fatal("%s", err.msg);
    }
    mf_coll_bcast(&r->world, &n, sizeof n, 0);
    if (r->world.rank != 0) *paths = mf_calloc((size_t)n + 1, sizeof **paths);
    for (int i = 0; i < n; i++) {
        int len = r->world.rank == 0 ? (int)strlen((*paths)[i]) + 1 : 0;
        mf_coll_bcast(&r->world, &len, sizeof len, 0);
        if (r->world.rank != 0) (*paths)[i] = mf_malloc((size_t)len);
        mf_coll_bcast(&r->world, (*paths)[i], (size_t)len, 0);
    }
    return n;
}

void mf_run_candidates_free(char **paths, int n) {
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
}

int mf_run_read_ok(const mf_run *r, const char *path, int rc, const mf_err *err) {
    int bad = mf_coll_max_int(&r->world, rc != 0 ? r->world.rank + 1 : 0); /* the highest failing rank, +1 */
    if (!bad) return 1;
    char msg[sizeof err->msg];
    snprintf(msg, sizeof msg, "%s", rc != 0 ? err->msg : "");
    mf_coll_bcast(&r->world, msg, sizeof msg, bad - 1);
    if (r->world.rank == 0)
        mf_log_always("%s: cannot resume from %s (rank %d: %s); trying the previous checkpoint", r->what, path, bad - 1, msg);
    return 0;
}

void mf_run_no_readable(const mf_run *r, int n) {
    mf_fatal("%s: none of the %d complete checkpoints in %s could be read (see the messages above); "
             "start afresh without --resume or restore a checkpoint", r->what, n, r->ckpt_dir);
}

void mf_run_set_provenance(mf_run *r, const char *backend, int pp, int dp) {
    snprintf(r->backend, sizeof r->backend, "%s", backend ? backend : "cpu");
    snprintf(r->blas_core, sizeof r->blas_core, "%s", mf_blas_core());
    r->blas_threads = mf_blas_threads();
    r->pp = pp;
    r->dp = dp;
    snprintf(r->provenance, sizeof r->provenance,
             "{\"backend\":\"%s\",\"blas_core\":\"%s\",\"blas_threads\":%d,\"ranks\":%d,\"pp\":%d,\"dp\":%d}",
             backend ? backend : "cpu", mf_blas_core(), mf_blas_threads(), r->world.size, pp, dp);
}

void mf_run_check_provenance(const mf_run *r, const char *path, const char *stored) {
    if (r->world.rank != 0) return;
    json_t *s = json_loads(stored ? stored : "", 0, NULL), *c = json_loads(r->provenance, 0, NULL);
    if (!json_is_object(s)) {
        mf_log_always("%s: %s records no BLAS core, threads or layout (an older checkpoint): the resumed run may differ from an "
               "uninterrupted one in the last bits", r->what, path);
    } else {
        static const char *const bits[] = {"backend", "blas_core", "blas_threads"};
        for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++) {
            json_t *a = json_object_get(s, bits[i]), *b = json_object_get(c, bits[i]);
            if (a && !json_equal(a, b)) {
                char *x = json_dumps(a, JSON_ENCODE_ANY), *y = json_dumps(b, JSON_ENCODE_ANY);
                mf_log_always("warning: %s: %s was written with %s %s, this run has %s: results will differ from an uninterrupted "
                       "run in the last bits", r->what, path, bits[i], x ? x : "?", y ? y : "?");
                free(x); free(y);
            }
        }
        json_t *pp = json_object_get(s, "pp"), *dp = json_object_get(s, "dp");
        if ((pp && !json_equal(pp, json_object_get(c, "pp"))) || (dp && !json_equal(dp, json_object_get(c, "dp"))))
            mf_log_always("%s: resuming a pp %lld x dp %lld checkpoint on pp %lld x dp %lld: same data in the same order, only "
                          "the order of floating-point sums may differ",
                   r->what, (long long)json_integer_value(pp), (long long)json_integer_value(dp),
                   (long long)json_integer_value(json_object_get(c, "pp")), (long long)json_integer_value(json_object_get(c, "dp")));
    }
    json_decref(s);
    json_decref(c);
}

void mf_run_check_options(const mf_run *r, const char *path, const char *stored, const char *const *free_keys) {
    mf_err err;
    if (mf_ckpt_options_check(path, stored, r->options, free_keys, &err) != 0) mf_fatal_err(&err);
}

void mf_run_save(const mf_run *r, int replica, const mf_params *ps, const mf_adamw *opt, mf_train_meta *meta,
                 char *path_out, size_t cap) {
    mf_err err;
    meta->options_json = (char *)r->options;
    meta->provenance_json = (char *)r->provenance;
    meta->backend = (char *)r->backend;
    meta->blas_core = (char *)r->blas_core;
    meta->blas_threads = r->blas_threads;
    meta->pp = r->pp;
    meta->dp = r->dp;
    meta->n_layers = r->n_layers;
    meta->layer_stage = r->layer_stage;
    if (mf_ckpt_write(r->ckpt_dir, r->world.comm, replica, ps, opt, meta, r->keep, path_out, cap, &err) != 0)
        mf_fatal_err(&err);
}

/* ---------------------------------------------------------------- data order */

void mf_epochs_init(mf_epochs *e, uint64_t seed, uint64_t stream, int64_t n) {
    e->base = seed * 0x9E3779B97F4A7C15ull + stream * 0x100000001ull;
    e->n = n;
    e->epoch = -1;
    e->perm = mf_malloc((size_t)(n > 0 ? n : 1) * sizeof *e->perm);
}

int64_t mf_epochs_at(mf_epochs *e, int64_t g) {
    int64_t epoch = g / e->n;
    if (e->epoch != epoch) {
        mf_rng_permutation(e->base + (uint64_t)epoch, e->perm, e->n);
        e->epoch = epoch;
    }
    return e->perm[g % e->n];
}

void mf_epochs_free(mf_epochs *e) {
    free(e->perm);
    e->perm = NULL;
    e->epoch = -1;
}

/* ---------------------------------------------------------------- watchdog */

#include <pthread.h>
#include <time.h>
#include <unistd.h>

struct mf_watchdog {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const char *what;
    int rank, armed, quit;
    double timeout, slowest, last; /* fixed deadline (0: auto), slowest step, time of the last kick */
    char phase[64];
};

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double deadline(const mf_watchdog *w) {
    if (w->timeout > 0) return w->timeout;
    if (w->slowest <= 0) return 3600;
    return 10 * w->slowest > 600 ? 10 * w->slowest : 600;
}

static void *watch(void *arg) {
    mf_watchdog *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->quit) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        if (w->quit || !w->armed) continue;
        double waited = mono_now() - w->last, limit = deadline(w);
        if (waited < limit) continue;
        char host[64] = "?";
        gethostname(host, sizeof host - 1);
        fprintf(stderr, "minifuse: error (rank %d on %s): %s: no progress for %.0f s in %s (deadline %.0f s): a rank is "
                "stopped or a collective hangs; the ranks that report this are waiting, the silent one is late. "
                "Aborting the job (--watchdog sets the deadline)\n", w->rank, host, w->what, waited, w->phase, limit);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 3);
        _exit(3);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

mf_watchdog *mf_watchdog_start(const char *what, int rank, double timeout) {
    if (timeout < 0) return NULL;
    mf_watchdog *w = mf_calloc(1, sizeof *w);
    w->what = what;
    w->rank = rank;
    w->timeout = timeout;
    w->last = mono_now();
    snprintf(w->phase, sizeof w->phase, "start-up");
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, watch, w) != 0) mf_fatal("%s: cannot start the watchdog thread", what);
    return w;
}

void mf_watchdog_kick(mf_watchdog *w, const char *phase) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->armed = 1;
    w->last = mono_now();
    snprintf(w->phase, sizeof w->phase, "%s", phase);
    pthread_mutex_unlock(&w->mu);
}

void mf_watchdog_step_time(mf_watchdog *w, double seconds) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    if (seconds > w->slowest) w->slowest = seconds;
    pthread_mutex_unlock(&w->mu);
}

void mf_watchdog_disarm(mf_watchdog *w) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->armed = 0;
    pthread_mutex_unlock(&w->mu);
}

void mf_watchdog_stop(mf_watchdog *w) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->quit = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
