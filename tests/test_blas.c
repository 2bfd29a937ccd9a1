/* test_blas.c - OpenBLAS kernel choice (backend/cpu_blas.h): the pick on every
 * kind of CPU (the features OpenBLAS itself requires, the vendor), the
 * program's own check run with OPENBLAS_CORETYPE unset (the test binary sets it
 * for its children otherwise), the restart, the warning when it is told to run
 * generic kernels, the core in --json and on every rank, and --help. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_blas.h"
#include "testutil.h"

#define STORIES "llm_assets/models/stories260K/stories260K.bin"
#define TINY "llm_assets/text/tinystories_train_first2MiB.txt"

Test(blas, pick_core) {
    /* feature sets: I = Intel, A = AMD, O = other vendor */
    const mf_cpu_features emr = {.intel = 1, .avx2 = 1, .fma = 1, .avx512f = 1, .avx512dq = 1, .avx512bw = 1, .avx512vl = 1,
                                 .avx512bf16 = 1, .os_ymm = 1, .os_zmm = 1};
    mf_cpu_features skx = emr, knl = emr, no_zmm = emr, no_vl = emr, no_bw = emr, no_dq = emr, amd512 = emr, hsw = emr, no_fma = emr,
                    no_ymm = emr, zen = emr, other = emr, sse = {0};
    skx.avx512bf16 = 0;
    knl.avx512vl = knl.avx512bw = knl.avx512dq = 0;     /* Knights Landing: AVX-512F without VL/BW/DQ */
    no_zmm.os_zmm = 0;                                  /* the OS does not save ZMM state (XCR0 bits 5-7) */
    no_vl.avx512vl = 0;
    no_bw.avx512bw = 0;
    no_dq.avx512dq = 0;
    amd512.intel = 0; amd512.amd = 1;                   /* Zen 4: AVX-512, but not Intel */
    hsw.avx512f = hsw.avx512vl = hsw.avx512bw = hsw.avx512dq = hsw.avx512bf16 = 0;
    hsw.os_zmm = 0;
    no_fma = hsw; no_fma.fma = 0;
    no_ymm = hsw; no_ymm.os_ymm = 0;                   /* AVX2 in CPUID, but the OS does not save YMM state */
    zen = hsw; zen.intel = 0; zen.amd = 1;
    other = hsw; other.intel = 0;                       /* e.g. a VIA/Zhaoxin or an unnamed hypervisor vendor */
    struct { const char *detected; const mf_cpu_features *f; int knows_zen; const char *want; } cases[] = {
        {"Prescott", &emr, 1, "Cooperlake"},  /* Emerald Rapids under OpenBLAS 0.3.21 */
        {"Prescott", &skx, 1, "SkylakeX"},
        {"Prescott", &knl, 1, "Haswell"},     /* AVX-512F alone is not enough */
        {"Prescott", &no_zmm, 1, "Haswell"},
        {"Prescott", &no_vl, 1, "Haswell"},
        {"Prescott", &no_bw, 1, "Haswell"},
        {"Prescott", &no_dq, 1, "Haswell"},
        {"Prescott", &amd512, 1, "Zen"},      /* AMD: never SkylakeX/Cooperlake */
        {"Prescott", &amd512, 0, "Haswell"},  /* an OpenBLAS without the Zen core */
        {"Prescott", &hsw, 1, "Haswell"},
        {"Prescott", &zen, 1, "Zen"},
        {"Prescott", &zen, 0, "Haswell"},
        {"Prescott", &other, 1, "Haswell"},
        {"Prescott", &no_fma, 1, NULL},       /* the Haswell kernels use FMA */
        {"Prescott", &no_ymm, 1, NULL},
        {"Prescott", &sse, 1, NULL},          /* a real SSE3-only CPU: nothing better */
        {"Nehalem", &hsw, 1, "Haswell"},
        {"core2", &hsw, 1, "Haswell"},        /* names compare without case */
        {"Cooperlake", &emr, 1, NULL},        /* a proper choice is kept */
        {"Haswell", &emr, 1, NULL},           /* not generic: the library's choice stands */
        {"Zen", &zen, 1, NULL},
        {NULL, &emr, 1, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = mf_blas_pick_core(cases[i].detected, cases[i].f, cases[i].knows_zen);
        cr_expect((got == NULL && cases[i].want == NULL) || (got && cases[i].want && strcmp(got, cases[i].want) == 0),
                  "case %zu (%s): got %s, want %s", i, cases[i].detected ? cases[i].detected : "(null)", got ? got : "NULL",
                  cases[i].want ? cases[i].want : "NULL");
    }
}

Test(blas, knows_zen_by_version) {
    cr_expect(mf_blas_config_knows_zen("OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY USE_OPENMP Zen MAX_THREADS=64"));
    cr_expect(mf_blas_config_knows_zen("OpenBLAS 0.2.20 DYNAMIC_ARCH"));
    cr_expect(!mf_blas_config_knows_zen("OpenBLAS 0.2.19 DYNAMIC_ARCH"));
    cr_expect(mf_blas_config_knows_zen("OpenBLAS 1.0 DYNAMIC_ARCH"));
    cr_expect(!mf_blas_config_knows_zen("something else"));
    cr_expect(!mf_blas_config_knows_zen(NULL));
}

/* Run `env <envs> mpirun -np 1 bin/minifuse eval --json` with OPENBLAS_CORETYPE and the test
 * binary's mark removed unless envs sets them; *json the parsed output, *err stderr (free both). */
static void eval_env(const char *envs, json_t **json, char **err) {
    char cmd[8192], *out;
    snprintf(cmd, sizeof cmd, "env -u OPENBLAS_CORETYPE -u MINIFUSE_BLAS_DETECTED -u MINIFUSE_BLAS_AUTO OMPI_ALLOW_RUN_AS_ROOT=1 "
             "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MINIFUSE_QUIET=1 %s mpirun -np 1 %s eval "
             "--model %s --text %s --max-windows 1 --ctx 64 --json",
             envs, tu_bin(), tu_shared(STORIES), tu_shared(TINY));
    cr_assert_eq(tu_run(cmd, &out, err), 0, "%s\n%s", cmd, *err);
    *json = json_loads(out, 0, NULL);
    cr_assert(*json, "not JSON: %s", out);
    free(out);
}

static const char *jstr(json_t *j, const char *k) {
    const char *s = json_string_value(json_object_get(j, k));
    cr_assert(s, "--json lacks \"%s\": %s", k, json_dumps(j, 0));
    return s;
}

/* The program's own check, with OPENBLAS_CORETYPE unset: it decides as the test binary did
 * when it started, logs the core even under MINIFUSE_QUIET and records it in --json. */
Test(blas, own_check_runs_with_variable_unset, .timeout = 120) {
    json_t *j;
    char *err;
    eval_env("", &j, &err);
    const char *core = jstr(j, "blas_core"), *src = jstr(j, "blas_core_source");
    char line[256];
    snprintf(line, sizeof line, "OpenBLAS core %s (", core);
    cr_expect(strstr(err, line), "MINIFUSE_QUIET must not hide the core line '%s': %s", line, err);
    cr_expect_eq(json_integer_value(json_object_get(j, "blas_threads")), 1);
    cr_expect(json_is_true(json_object_get(j, "blas_ranks_agree")), "%s", json_dumps(j, 0));
    /* the test binary ran the same check when it started (testutil.c) */
    const char *mine = mf_blas_core_source();
    if (strcmp(mine, "env") != 0) {
        cr_expect_str_eq(core, mf_blas_core(), "bin/minifuse runs %s, the test binary %s", core, mf_blas_core());
        cr_expect_str_eq(src, mine);
    } else cr_log_info("OPENBLAS_CORETYPE was set for the test run: the program's choice is not compared");
    cr_expect(strcmp(src, "env") != 0, "OPENBLAS_CORETYPE was unset: the source cannot be 'env'");
    json_decref(j);
    free(err);
}

/* score --json records the core too. */
Test(blas, score_json_records_core, .timeout = 120) {
    char cmd[8192], *out, *err;
    snprintf(cmd, sizeof cmd, "%s score --model %s --text %s --out %s/r.h5 --samples 2 --ctx 64 --metrics bi --json", tu_mpirun(2),
             tu_shared(STORIES), tu_shared(TINY), tu_tmpdir());
    cr_assert_eq(tu_run(cmd, &out, &err), 0, "%s", err);
    json_t *j = json_loads(out, 0, NULL);
    cr_assert(j, "not JSON: %s", out);
    cr_expect_str_eq(jstr(j, "blas_core"), mf_blas_core());
    cr_expect(json_is_true(json_object_get(j, "blas_ranks_agree")), "%s", out);
    cr_expect_eq(json_integer_value(json_object_get(j, "blas_threads")), 1);
    json_decref(j);
    free(out); free(err);
}

/* The restart itself, on any CPU: pretend OpenBLAS picked its generic Prescott kernels. */
Test(blas, restart_when_openblas_picks_generic, .timeout = 120) {
    mf_cpu_features f;
    mf_cpu_features_detect(&f);
    const char *want = mf_blas_pick_core("Prescott", &f, mf_blas_config_knows_zen(mf_blas_config()));
    json_t *j;
    char *err;
    eval_env("MINIFUSE_BLAS_TEST_DETECTED=Prescott", &j, &err);
    if (want) {
        char line[256];
        snprintf(line, sizeof line, "OpenBLAS picked its generic Prescott kernels for this CPU; restarted with OPENBLAS_CORETYPE=%s", want);
        cr_expect(strstr(err, line), "no restart logged ('%s'): %s", line, err);
        cr_expect_str_eq(jstr(j, "blas_core"), want);
        cr_expect_str_eq(jstr(j, "blas_core_source"), "auto");
    } else {
        cr_expect(!strstr(err, "restarted"), "nothing better on this CPU: no restart: %s", err);
        cr_expect_str_eq(jstr(j, "blas_core_source"), "openblas");
    }
    json_decref(j);
    free(err);
    /* MINIFUSE_BLAS_AUTO=0: no restart */
    eval_env("MINIFUSE_BLAS_TEST_DETECTED=Prescott MINIFUSE_BLAS_AUTO=0", &j, &err);
    cr_expect(!strstr(err, "restarted"), "MINIFUSE_BLAS_AUTO=0 must keep OpenBLAS's choice: %s", err);
    cr_expect_str_eq(jstr(j, "blas_core_source"), "openblas");
    json_decref(j);
    free(err);
}

/* A user's OPENBLAS_CORETYPE is respected; a generic one on a CPU with AVX2 is warned about. */
Test(blas, user_choice_kept_and_generic_warned, .timeout = 60) {
    json_t *j;
    char *err;
    eval_env("OPENBLAS_CORETYPE=Prescott", &j, &err);
    mf_cpu_features f;
    mf_cpu_features_detect(&f);
    const char *better = mf_blas_pick_core("Prescott", &f, mf_blas_config_knows_zen(mf_blas_config()));
    cr_expect(!strstr(err, "restarted with OPENBLAS_CORETYPE"), "the user's OPENBLAS_CORETYPE must be kept: %s", err);
    cr_expect_str_eq(jstr(j, "blas_core"), "Prescott");
    cr_expect_str_eq(jstr(j, "blas_core_source"), "env");
    if (better) cr_expect(strstr(err, "warning: OpenBLAS runs its generic Prescott kernels"), "no warning: %s", err);
    else cr_expect(!strstr(err, "warning: OpenBLAS"), "no better kernels here, no warning: %s", err);
    json_decref(j);
    free(err);
}

/* Every rank's core is compared: two ranks on different kernels draw a warning naming them. */
Test(blas, ranks_compare_cores, .timeout = 120) {
    mf_cpu_features f;
    mf_cpu_features_detect(&f);
    if (!(f.avx2 && f.fma && f.os_ymm)) cr_skip_test("this CPU has no AVX2: OpenBLAS would not run Haswell kernels on one rank");
    char cmd[16384], *out, *err;
    const char *env = "env -u MINIFUSE_BLAS_DETECTED OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 "
                      "OPENBLAS_NUM_THREADS=1 MINIFUSE_QUIET=1";
    char args[4096];
    snprintf(args, sizeof args, "eval --model %s --text %s --max-windows 1 --ctx 64 --json", tu_shared(STORIES), tu_shared(TINY));
    snprintf(cmd, sizeof cmd, "%s mpirun --oversubscribe -np 1 env OPENBLAS_CORETYPE=Haswell %s %s : -np 1 env OPENBLAS_CORETYPE=Prescott %s %s",
             env, tu_bin(), args, tu_bin(), args);
    cr_assert_eq(tu_run(cmd, &out, &err), 0, "%s", err);
    cr_expect(strstr(err, "warning: the ranks run different OpenBLAS kernels: r0 Haswell (OPENBLAS_CORETYPE from the environment), "
                          "1 thread; r1 Prescott (OPENBLAS_CORETYPE from the environment), 1 thread"), "no warning naming the ranks: %s", err);
    json_t *j = json_loads(out, 0, NULL);
    cr_assert(j, "not JSON: %s", out);
    cr_expect(json_is_false(json_object_get(j, "blas_ranks_agree")), "%s", out);
    json_decref(j);
    free(out); free(err);
    /* the same core on both ranks: no warning */
    snprintf(cmd, sizeof cmd, "%s OPENBLAS_CORETYPE=Haswell mpirun --oversubscribe -np 2 %s %s", env, tu_bin(), args);
    cr_assert_eq(tu_run(cmd, &out, &err), 0, "%s", err);
    cr_expect(!strstr(err, "different OpenBLAS kernels"), "%s", err);
    cr_expect(strstr(err, "OpenBLAS core Haswell (OPENBLAS_CORETYPE from the environment), 1 thread, on all 2 ranks"), "%s", err);
    j = json_loads(out, 0, NULL);
    cr_assert(j, "not JSON: %s", out);
    cr_expect(json_is_true(json_object_get(j, "blas_ranks_agree")), "%s", out);
    json_decref(j);
    free(out); free(err);
}

/* Every command's --help (and the program's) documents MINIFUSE_BLAS_AUTO=0. */
Test(blas, help_documents_blas_auto, .timeout = 120) {
    const char *cmds[] = {"", "eval", "logits", "generate", "score", "prune", "fuse", "distill", "plan"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char cmd[4096], *out;
        snprintf(cmd, sizeof cmd, "%s %s --help", tu_mpirun(1), cmds[i]);
        cr_expect_eq(tu_run(cmd, &out, NULL), 0, "%s", cmd);
        cr_expect(strstr(out, "MINIFUSE_BLAS_AUTO=0") && strstr(out, "OPENBLAS_CORETYPE"), "'%s --help' lacks the BLAS variables: %s",
                  cmds[i], out);
        free(out);
    }
}
