/* cpu_blas.c - make OpenBLAS run the kernels this CPU can run (see cpu_blas.h). */
#include "backend/cpu_blas.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "util/log.h"

char *openblas_get_corename(void);
char *openblas_get_config(void);
int openblas_get_num_threads(void);

/* Cores OpenBLAS falls back to when it does not know the CPU model. */
static int generic_core(const char *name) {
    static const char *const generic[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom",
                                          "Katmai", "Coppermine", "Northwood", "Banias", "Unknown", NULL};
    for (int i = 0; generic[i]; i++)
        if (strcasecmp(name, generic[i]) == 0) return 1;
    return 0;
}

const char *mf_blas_pick_core(const char *detected, const mf_cpu_features *f, int knows_zen) {
    if (!detected || !generic_core(detected)) return NULL;
    int avx2 = f->avx2 && f->fma && f->os_ymm; /* what the Haswell and Zen kernels run on */
    if (f->intel && avx2 && f->avx512f && f->avx512vl && f->avx512bw && f->avx512dq && f->os_zmm)
        return f->avx512bf16 ? "Cooperlake" : "SkylakeX";
    if (f->amd && avx2) return knows_zen ? "Zen" : "Haswell";
    if (avx2) return "Haswell";
    return NULL;
}

int mf_blas_config_knows_zen(const char *config) {
    int a = 0, b = 0, c = 0;
    if (!config || sscanf(config, "OpenBLAS %d.%d.%d", &a, &b, &c) < 2) return 0;
    return a > 0 || b > 2 || (b == 2 && c >= 20);
}

void mf_cpu_features_detect(mf_cpu_features *f) {
    memset(f, 0, sizeof *f);
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    unsigned max_leaf = a;
    char vendor[13];
    memcpy(vendor, &b, 4);
    memcpy(vendor + 4, &d, 4);
    memcpy(vendor + 8, &c, 4);
    vendor[12] = 0;
    f->intel = strcmp(vendor, "GenuineIntel") == 0;
    f->amd = strcmp(vendor, "AuthenticAMD") == 0 || strcmp(vendor, "HygonGenuine") == 0;
    if (max_leaf < 1) return;
    __cpuid(1, a, b, c, d);
    f->fma = (c >> 12) & 1;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (osxsave && avx) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        f->os_ymm = (lo & 0x6) == 0x6;
        f->os_zmm = f->os_ymm && (lo & 0xe0) == 0xe0;
    }
    if (max_leaf < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    unsigned sub = a;
    f->avx2 = (b >> 5) & 1;
    f->avx512f = (b >> 16) & 1;
    f->avx512dq = (b >> 17) & 1;
    f->avx512bw = (b >> 30) & 1;
    f->avx512vl = (b >> 31) & 1;
    if (sub >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        f->avx512bf16 = (a >> 5) & 1;
    }
#endif
}

static const char *detected_core(void) {
    const char *pretend = getenv("MINIFUSE_BLAS_TEST_DETECTED"); /* tests only (cpu_blas.h) */
    return pretend && *pretend ? pretend : openblas_get_corename();
}

static const char *pick_for_this_cpu(const char *detected) {
    mf_cpu_features f;
    mf_cpu_features_detect(&f);
    return mf_blas_pick_core(detected, &f, mf_blas_config_knows_zen(openblas_get_config()));
}

void mf_blas_ensure_core(char **argv) {
    const char *autom = getenv("MINIFUSE_BLAS_AUTO");
    if (getenv("OPENBLAS_CORETYPE") || (autom && strcmp(autom, "0") == 0)) return;
    const char *was = detected_core();
    const char *core = pick_for_this_cpu(was);
    if (!core) return;
    /* "core:pid": exec keeps the pid, so child processes that inherit the variable do not take it as theirs */
    char mark[128];
    snprintf(mark, sizeof mark, "%s:%ld", was, (long)getpid());
    setenv("MINIFUSE_BLAS_DETECTED", mark, 1);
    setenv("OPENBLAS_CORETYPE", core, 1);
    unsetenv("MINIFUSE_BLAS_TEST_DETECTED"); /* after the restart OpenBLAS's choice is real */
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

/* What OpenBLAS had picked before this process restarted itself, or "" when it did not. */
static void restarted_from(char *was, size_t n) {
    const char *mark = getenv("MINIFUSE_BLAS_DETECTED");
    const char *colon = mark ? strrchr(mark, ':') : NULL;
    was[0] = 0;
    if (colon && atol(colon + 1) == (long)getpid()) snprintf(was, n, "%.*s", (int)(colon - mark), mark);
}

const char *mf_blas_core(void) { return openblas_get_corename(); }
const char *mf_blas_config(void) { return openblas_get_config(); }
int mf_blas_threads(void) { return openblas_get_num_threads(); }

const char *mf_blas_core_source(void) {
    char was[128];
    restarted_from(was, sizeof was);
    if (*was) return "auto";
    return getenv("OPENBLAS_CORETYPE") ? "env" : "openblas";
}

int mf_blas_core_auto(void) { return strcmp(mf_blas_core_source(), "auto") == 0; }

static const char *source_words(const char *src) {
    return strcmp(src, "auto") == 0  ? "set by minifuse"
           : strcmp(src, "env") == 0 ? "OPENBLAS_CORETYPE from the environment"
                                     : "OpenBLAS's own choice";
}

void mf_blas_log_core(int rank) {
    if (rank != 0) return;
    const char *now = openblas_get_corename();
    char was[128];
    restarted_from(was, sizeof was);
    const char *better = *was ? NULL : pick_for_this_cpu(now);
    if (*was)
        mf_log_always("OpenBLAS picked its generic %s kernels for this CPU; restarted with OPENBLAS_CORETYPE=%s (now: %s). "
                      "Set OPENBLAS_CORETYPE yourself, or MINIFUSE_BLAS_AUTO=0, to choose.", was, getenv("OPENBLAS_CORETYPE"), now);
    else if (better)
        mf_log_always("warning: OpenBLAS runs its generic %s kernels on a CPU that runs %s: sgemm is several times slower; "
                      "set OPENBLAS_CORETYPE=%s", now, better, better);
}

#define REC_LEN 64
static int ranks_agree = -1;

/* "core|source|threads" of this process. */
static void record(char *rec) {
    memset(rec, 0, REC_LEN);
    snprintf(rec, REC_LEN, "%.31s|%s|%d", openblas_get_corename(), mf_blas_core_source(), openblas_get_num_threads());
}

/* "Zen (OpenBLAS's own choice), 1 thread" from a record. */
static void describe(const char *rec, char *out, size_t n) {
    char core[REC_LEN], src[REC_LEN];
    int th = 0;
    if (sscanf(rec, "%63[^|]|%63[^|]|%d", core, src, &th) != 3) { snprintf(out, n, "%s", rec); return; }
    snprintf(out, n, "%s (%s), %d thread%s", core, source_words(src), th, th == 1 ? "" : "s");
}

int mf_blas_check_ranks(MPI_Comm comm) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    char mine[REC_LEN];
    record(mine);
    char *all = rank == 0 ? calloc((size_t)size, REC_LEN) : NULL;
    MPI_Gather(mine, REC_LEN, MPI_CHAR, all, REC_LEN, MPI_CHAR, 0, comm);
    int agree = 1;
    if (rank == 0) {
        size_t core0 = strcspn(all, "|");
        int same = 1;
        for (int r = 1; r < size; r++) {
            const char *c = all + (size_t)r * REC_LEN;
            if (strcspn(c, "|") != core0 || strncmp(c, all, core0) != 0) agree = 0;
            if (strcmp(c, all) != 0) same = 0;
        }
        char d[160];
        if (same) {
            describe(all, d, sizeof d);
            if (size == 1) mf_log_always("OpenBLAS core %s", d);
            else mf_log_always("OpenBLAS core %s, on all %d ranks", d, size);
        } else { /* "r0,r2 Zen (OpenBLAS's own choice), 1 thread; r1 Haswell (...)": one group per distinct record */
            char msg[900] = "";
            size_t o = 0;
            char *done = calloc((size_t)size, 1);
            for (int r = 0; r < size && o < sizeof msg - 64; r++) {
                if (done[r]) continue;
                const char *c = all + (size_t)r * REC_LEN;
                o += (size_t)snprintf(msg + o, sizeof msg - o, "%s", o ? "; " : "");
                int first = 1;
                for (int q = r; q < size && o < sizeof msg - 64; q++)
                    if (!done[q] && strcmp(all + (size_t)q * REC_LEN, c) == 0) {
                        done[q] = 1;
                        o += (size_t)snprintf(msg + o, sizeof msg - o, "%sr%d", first ? "" : ",", q);
                        first = 0;
                    }
                describe(c, d, sizeof d);
                o += (size_t)snprintf(msg + o, sizeof msg - o, " %s", d);
            }
            free(done);
            if (agree) mf_log_always("OpenBLAS core: %s", msg);
            else
                mf_log_always("warning: the ranks run different OpenBLAS kernels: %s. Results can differ in the last bits from "
                              "a run where every rank runs the same; set OPENBLAS_CORETYPE for every rank "
                              "(mpirun -x OPENBLAS_CORETYPE=...)", msg);
        }
        free(all);
    }
    MPI_Bcast(&agree, 1, MPI_INT, 0, comm);
    ranks_agree = agree;
    return agree;
}

int mf_blas_ranks_agree(void) { return ranks_agree; }

void mf_blas_json(json_t *obj) {
    json_object_set_new(obj, "blas_core", json_string(openblas_get_corename()));
    json_object_set_new(obj, "blas_core_source", json_string(mf_blas_core_source()));
    json_object_set_new(obj, "blas_threads", json_integer(openblas_get_num_threads()));
    if (ranks_agree >= 0) json_object_set_new(obj, "blas_ranks_agree", json_boolean(ranks_agree));
}
