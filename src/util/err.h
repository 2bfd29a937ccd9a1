/* err.h - one-line error messages that name the file, tensor or option at fault.
 *
 * Library code never exits: it fills an mf_err and returns -1 (or NULL).
 * Commands turn an mf_err into one line on stderr and a non-zero exit; under
 * MPI, mf_fatal() aborts every rank so that no rank is left waiting. */
#ifndef MF_ERR_H
#define MF_ERR_H

#include <stddef.h>

typedef struct mf_err {
    char msg[1024];
} mf_err;

/* Format the message into err (if err is non-NULL); always returns -1. */
int mf_err_set(mf_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefix an existing message: "prefix: old message". Returns -1. */
int mf_err_prefix(mf_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print "minifuse: error: <msg>" on stderr and end the job: MPI_Abort on all
 * ranks when MPI is running with more than one rank, exit(1) otherwise. */
void mf_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* mf_fatal with the message held in err. */
void mf_fatal_err(const mf_err *err) __attribute__((noreturn));

/* Allocation that fails through mf_fatal (out of memory is not recoverable). */
void *mf_malloc(size_t n);
void *mf_calloc(size_t n, size_t size);
void *mf_realloc(void *p, size_t n);
char *mf_strdup(const char *s);

#endif
