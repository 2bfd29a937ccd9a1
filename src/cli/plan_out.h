/* plan_out.h - printing `minifuse plan`'s result: a table of layouts and the
 * recommended (or asked) one in detail, as text or one JSON object. */
#ifndef MF_CLI_PLAN_OUT_H
#define MF_CLI_PLAN_OUT_H

#include "plan/plan.h"

typedef struct plan_print_ctx {
    const mf_plan_job *job;
    const mf_plan_hw *hw;
    const char *config, *teacher; /* paths, as given */
    int json;
} plan_print_ctx;

/* all[n]: the layouts computed; best: the index shown in detail (-1: none fits,
 * then the one closest to fitting is shown). Writes to stdout. */
void plan_print(const plan_print_ctx *c, const mf_plan *all, int n, int best);

#endif
