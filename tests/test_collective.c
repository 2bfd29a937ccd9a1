/* test_collective.c - the collective layer (mpi/collective.h) on 1, 2 and 3
 * ranks: build/tests/tools/coll_check runs every collective (whole and
 * bucketed float sums with uneven pieces, broadcasts, the tied-embedding fold,
 * scalar sums and flags) on backend memory and compares with values computed
 * locally. In a CUDA build the same tool, with --backend cuda on two or more
 * GPUs, checks the NCCL implementation (docs/gpu.md). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define TOOL "build/tests/tools/coll_check"

static void run_check(int P, const char *backend) {
    cr_assert(access(TOOL, X_OK) == 0, "%s is missing: build it with `make %s`", TOOL, TOOL);
    char cmd[1024], *out, *err;
    snprintf(cmd, sizeof cmd, "mpirun --oversubscribe --bind-to none -np %d %s --backend %s", P, TOOL, backend);
    int rc = tu_run(cmd, &out, &err);
    cr_expect_eq(rc, 0, "%s: exit %d: %s%s", cmd, rc, out, err);
    cr_expect(strstr(out, "ok:") != NULL, "%s printed no ok: %s%s", cmd, out, err);
    free(out);
    free(err);
}

Test(collective, cpu_1_rank, .timeout = 120) { run_check(1, "cpu"); }
Test(collective, cpu_2_ranks, .timeout = 120) { run_check(2, "cpu"); }
Test(collective, cpu_3_ranks, .timeout = 120) { run_check(3, "cpu"); }
Test(collective, ref_2_ranks, .timeout = 120) { run_check(2, "ref"); }
