/* test_blas.c - OpenBLAS kernel choice (backend/cpu_blas.h): the pick on every
 * kind of CPU, and the program's warning when it is told to run generic kernels. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_blas.h"
#include "testutil.h"

Test(blas, pick_core) {
    struct { const char *detected; int avx2, avx512f, bf16; const char *want; } cases[] = {
        {"Prescott", 1, 1, 1, "Cooperlake"},  /* Emerald Rapids under OpenBLAS 0.3.21 */
        {"Prescott", 1, 1, 0, "SkylakeX"},
        {"Prescott", 1, 0, 0, "Haswell"},
        {"Prescott", 0, 0, 0, NULL},          /* a real SSE3-only CPU: nothing better */
        {"Nehalem", 1, 0, 0, "Haswell"},
        {"core2", 1, 0, 0, "Haswell"},        /* names compare without case */
        {"Cooperlake", 1, 1, 1, NULL},        /* a proper choice is kept */
        {"Haswell", 1, 1, 1, NULL},           /* not generic: the library's choice stands */
        {"Zen", 1, 0, 0, NULL},
        {NULL, 1, 1, 1, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = mf_blas_pick_core(cases[i].detected, cases[i].avx2, cases[i].avx512f, cases[i].bf16);
        cr_expect((got == NULL && cases[i].want == NULL) || (got && cases[i].want && strcmp(got, cases[i].want) == 0),
                  "%s (avx2 %d, avx512f %d, bf16 %d): got %s, want %s", cases[i].detected ? cases[i].detected : "(null)",
                  cases[i].avx2, cases[i].avx512f, cases[i].bf16, got ? got : "NULL", cases[i].want ? cases[i].want : "NULL");
    }
}

/* A user's OPENBLAS_CORETYPE is respected; a generic one on a CPU with AVX2 is warned about. */
Test(blas, user_choice_kept_and_generic_warned, .timeout = 60) {
    char cmd[8192], *err;
    /* not tu_mpirun: it sets MINIFUSE_QUIET, and the warning is a log line */
    snprintf(cmd, sizeof cmd, "env -u MINIFUSE_QUIET OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 "
             "OPENBLAS_CORETYPE=Prescott mpirun -np 1 bin/minifuse eval --model %s --text %s --max-windows 1",
             tu_shared("llm_assets/models/stories260K/stories260K.bin"), tu_shared("llm_assets/text/tinystories_train_first2MiB.txt"));
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "%s", err);
    __builtin_cpu_init();
    int better = __builtin_cpu_supports("avx2");
    cr_expect(!strstr(err, "restarted with OPENBLAS_CORETYPE"), "the user's OPENBLAS_CORETYPE must be kept: %s", err);
    if (better) cr_expect(strstr(err, "warning: OpenBLAS runs its generic Prescott kernels"), "no warning: %s", err);
    else cr_expect(!strstr(err, "warning: OpenBLAS"), "no better kernels here, no warning: %s", err);
    free(err);
}
