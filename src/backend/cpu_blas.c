/* cpu_blas.c - make OpenBLAS run the kernels this CPU can run (see cpu_blas.h). */
#include "backend/cpu_blas.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "util/log.h"

char *openblas_get_corename(void);

/* Cores OpenBLAS falls back to when it does not know the CPU model. */
static int generic_core(const char *name) {
    static const char *const generic[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom",
                                          "Katmai", "Coppermine", "Northwood", "Banias", "Unknown", NULL};
    for (int i = 0; generic[i]; i++)
        if (strcasecmp(name, generic[i]) == 0) return 1;
    return 0;
}

const char *mf_blas_pick_core(const char *detected, int avx2, int avx512f, int avx512bf16) {
    if (!detected || !generic_core(detected)) return NULL;
    if (avx512f) return avx512bf16 ? "Cooperlake" : "SkylakeX";
    if (avx2) return "Haswell";
    return NULL;
}

static const char *pick_for_this_cpu(void) {
    __builtin_cpu_init();
    return mf_blas_pick_core(openblas_get_corename(), __builtin_cpu_supports("avx2"), __builtin_cpu_supports("avx512f"),
                             __builtin_cpu_supports("avx512bf16"));
}

void mf_blas_ensure_core(char **argv) {
    const char *autom = getenv("MINIFUSE_BLAS_AUTO");
    if (getenv("OPENBLAS_CORETYPE") || (autom && strcmp(autom, "0") == 0)) return;
    const char *core = pick_for_this_cpu();
    if (!core) return;
    /* "core:pid": exec keeps the pid, so child processes that inherit the variable do not take it as theirs */
    char mark[128];
    snprintf(mark, sizeof mark, "%s:%ld", openblas_get_corename(), (long)getpid());
    setenv("MINIFUSE_BLAS_DETECTED", mark, 1);
    setenv("OPENBLAS_CORETYPE", core, 1);
    /* the real path, not /proc/self/exe: the process name (comm) stays the program's */
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        execv(self, argv);
    }
    /* exec failed: run on with the generic kernels; mf_blas_log_core warns (not "restarted") */
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv("MINIFUSE_BLAS_DETECTED");
}

void mf_blas_log_core(int rank) {
    if (rank != 0) return;
    const char *mark = getenv("MINIFUSE_BLAS_DETECTED"), *now = openblas_get_corename();
    char was[128] = "";
    const char *colon = mark ? strrchr(mark, ':') : NULL;
    if (colon && atol(colon + 1) == (long)getpid()) snprintf(was, sizeof was, "%.*s", (int)(colon - mark), mark);
    const char *better = *was ? NULL : pick_for_this_cpu();
    if (*was)
        mf_log("OpenBLAS picked its generic %s kernels for this CPU; restarted with OPENBLAS_CORETYPE=%s (now: %s). "
               "Set OPENBLAS_CORETYPE yourself, or MINIFUSE_BLAS_AUTO=0, to choose.", was, getenv("OPENBLAS_CORETYPE"), now);
    else if (better)
        mf_log("warning: OpenBLAS runs its generic %s kernels on a CPU with %s: sgemm is several times slower; "
               "set OPENBLAS_CORETYPE=%s", now, __builtin_cpu_supports("avx512f") ? "AVX-512" : "AVX2", better);
}
