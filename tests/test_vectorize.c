/* test_vectorize.c - the build vectorizes what its speed rests on. gcc 12 under its default
 * -ftrapping-math will not if-convert mf_expf's clamps (src/util/fastmath.h) and runs every exp of
 * the softmax, SiLU, log-sum-exp and the losses a lane at a time, ~6x slower, with no warning
 * (docs/performance.md, "The loss over the vocabulary"). This compiles tests/probe/expf_loop.c with
 * the flags the objects were built with ($(BUILD)/.cflags, written by the Makefile) and
 * -fopt-info-vec-optimized, and requires gcc to report its loop vectorized. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#ifdef MF_CUDA
#define CFLAGS_FILE "build-cuda/.cflags"
#else
#define CFLAGS_FILE "build/.cflags"
#endif

Test(build, expf_loop_vectorizes, .timeout = 120) {
    FILE *f = fopen(CFLAGS_FILE, "r");
    cr_assert(f, "%s: missing (the Makefile writes it when it builds the objects)", CFLAGS_FILE);
    char flags[4096] = {0};
    size_t n = fread(flags, 1, sizeof flags - 1, f);
    fclose(f);
    flags[n] = 0;
    flags[strcspn(flags, "\n")] = 0;
    char obj[] = "/tmp/minifuse-probe-XXXXXX";
    int fd = mkstemp(obj);
    cr_assert(fd >= 0);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "mpicc %s -fopt-info-vec-optimized -c tests/probe/expf_loop.c -o %s 2>&1", flags, obj);
    FILE *p = popen(cmd, "r");
    cr_assert(p, "cannot run: %s", cmd);
    char out[16384] = {0};
    size_t m = fread(out, 1, sizeof out - 1, p);
    out[m] = 0;
    int rc = pclose(p);
    remove(obj);
    char dep[sizeof obj + 2];
    snprintf(dep, sizeof dep, "%.*s.d", (int)strlen(obj), obj);
    remove(dep);
    cr_assert_eq(rc, 0, "the probe did not compile: %s\n%s", cmd, out);
    cr_expect(strstr(out, "expf_loop.c:10") && strstr(out, "loop vectorized"),
              "gcc did not vectorize mf_expf's loop with the build's flags (%s); its report:\n%s", flags, out);
}
