#include "util/err.h"

#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mf_err_set(mf_err *err, const char *fmt, ...) {
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int mf_err_prefix(mf_err *err, const char *fmt, ...) {
    if (!err) return -1;
    char old[sizeof err->msg];
    memcpy(old, err->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n + 2 < sizeof err->msg) {
        err->msg[n] = ':';
        err->msg[n + 1] = ' ';
        size_t room = sizeof err->msg - (size_t)n - 2;
        strncpy(err->msg + n + 2, old, room - 1);
        err->msg[sizeof err->msg - 1] = 0;
    }
    return -1;
}

__attribute__((noreturn)) static void die_with(const char *msg) {
    int inited = 0, finalized = 0, size = 1, rank = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (inited && !finalized) {
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    }
    if (size > 1)
        fprintf(stderr, "minifuse: error (rank %d): %s\n", rank, msg);
    else
        fprintf(stderr, "minifuse: error: %s\n", msg);
    fflush(stderr);
    if (size > 1) MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

void mf_fatal(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    die_with(msg);
}

void mf_fatal_err(const mf_err *err) { die_with(err->msg); }

void *mf_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) mf_fatal("out of memory allocating %zu bytes", n);
    return p;
}

void *mf_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) mf_fatal("out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *mf_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) mf_fatal("out of memory reallocating %zu bytes", n);
    return q;
}

char *mf_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = mf_malloc(n);
    memcpy(p, s, n);
    return p;
}
