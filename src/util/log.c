#include "util/log.h"

#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void rank_info(int *rank, int *size) {
    int inited = 0, fin = 0;
    *rank = 0;
    *size = 1;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    if (inited && !fin) {
        MPI_Comm_rank(MPI_COMM_WORLD, rank);
        MPI_Comm_size(MPI_COMM_WORLD, size);
    }
}

static void vlog(const char *fmt, va_list ap) {
    int rank, size;
    rank_info(&rank, &size);
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fprintf(stderr, "[minifuse r%d/%d] %s\n", rank, size, msg);
    fflush(stderr);
}

void mf_log(const char *fmt, ...) {
    if (getenv("MINIFUSE_QUIET")) return;
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}

void mf_log_always(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}

double mf_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void mf_progress_start(mf_progress *p, const char *what, long total) {
    p->what = what;
    p->total = total;
    p->t0 = mf_now();
    p->last_print = p->t0;
}

void mf_progress_update(mf_progress *p, long done, const char *unit) {
    double now = mf_now();
    if (done < p->total && now - p->last_print < 2.0) return;
    p->last_print = now;
    double el = now - p->t0, rate = el > 0 ? done / el : 0;
    double eta = rate > 0 ? (p->total - done) / rate : 0;
    mf_log("%s: %ld/%ld %s (%.0f%%), %.1f %s/s, elapsed %.0fs, ETA %.0fs", p->what, done, p->total, unit,
           p->total ? 100.0 * done / p->total : 100.0, rate, unit, el, eta);
}
