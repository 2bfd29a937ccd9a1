/* log.h - rank-tagged log lines and a progress line with ETA, on stderr. */
#ifndef MF_LOG_H
#define MF_LOG_H

/* "[minifuse r1/3] message" ; quiet when MINIFUSE_QUIET is set. */
void mf_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same line even under MINIFUSE_QUIET: warnings, and what a result's
 * provenance needs (the OpenBLAS core). */
void mf_log_always(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

typedef struct mf_progress {
    const char *what;
    long total;
    double t0, last_print;
} mf_progress;

double mf_now(void); /* monotonic seconds */
void mf_progress_start(mf_progress *p, const char *what, long total);
/* Prints at most every 2 s (and at the end): "what: done/total (x%), r/s, ETA". */
void mf_progress_update(mf_progress *p, long done, const char *unit);

#endif
