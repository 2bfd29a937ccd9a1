/* cpu_blas.h - make OpenBLAS run the kernels this CPU can run, and say which.
 *
 * OpenBLAS (a DYNAMIC_ARCH build such as Debian's) picks its kernels from the
 * CPU model at load time. On a CPU newer than the library (Debian 12's 0.3.21
 * on an Emerald Rapids, family 6 model 207) the choice can fall back to the
 * generic Prescott (SSE3) kernels, several times slower (docs/performance.md,
 * "OpenBLAS kernel choice"). OpenBLAS reads OPENBLAS_CORETYPE before main, so
 * the fix is to set it and exec again.
 *
 * The kernels also change the last bits of every product, so the core is part
 * of a result's provenance: mf_blas_core() names it, every rank logs it (even
 * under MINIFUSE_QUIET), mf_blas_check_ranks() warns when ranks disagree, and
 * eval/score --json record it. */
#ifndef MF_CPU_BLAS_H
#define MF_CPU_BLAS_H

#include <mpi.h>

/* What mf_blas_pick_core needs to know about the CPU (x86 CPUID + XGETBV). */
typedef struct mf_cpu_features {
    int intel;                /* vendor GenuineIntel */
    int amd;                  /* vendor AuthenticAMD or HygonGenuine (OpenBLAS treats Hygon as Zen) */
    int avx2, fma;            /* CPUID.7.0:EBX[5], CPUID.1:ECX[12] */
    int avx512f, avx512dq, avx512bw, avx512vl; /* CPUID.7.0:EBX bits 16, 17, 30, 31 */
    int avx512bf16;           /* CPUID.7.1:EAX[5] */
    int os_ymm;               /* OSXSAVE and XCR0 bits 1-2: the OS saves SSE and AVX (YMM) state */
    int os_zmm;               /* XCR0 bits 5-7 too: opmask, ZMM0-15 upper halves, ZMM16-31 */
} mf_cpu_features;

/* This CPU's features (all zero off x86). */
void mf_cpu_features_detect(mf_cpu_features *f);

/* The OPENBLAS_CORETYPE to use instead of the `detected` core name, or NULL
 * when the detected one is fine or nothing better can run. Only a generic core
 * (Prescott, Core2, Nehalem, ...) is replaced:
 *   Intel with AVX-512 F+VL+BW+DQ, AVX2, FMA and OS ZMM+YMM state: Cooperlake
 *     with AVX512_BF16, else SkylakeX (what OpenBLAS's own check asks, plus
 *     BW/DQ, which its SkylakeX kernels are compiled for);
 *   AMD/Hygon with AVX2, FMA and OS YMM state: Zen when this OpenBLAS knows
 *     it (`knows_zen`), else Haswell;
 *   any other CPU with AVX2, FMA and OS YMM state: Haswell.
 * AVX-512 without the OS saving ZMM state, or on a non-Intel CPU, never picks
 * SkylakeX/Cooperlake. Pure: the CPU features are arguments. */
const char *mf_blas_pick_core(const char *detected, const mf_cpu_features *f, int knows_zen);

/* Whether an OpenBLAS with this openblas_get_config() string has the "Zen"
 * core (DYNAMIC_ARCH builds since 0.2.20). */
int mf_blas_config_knows_zen(const char *config);

/* First thing in main, before MPI_Init: when OPENBLAS_CORETYPE is unset,
 * MINIFUSE_BLAS_AUTO is not 0 and mf_blas_pick_core names a better core for
 * this CPU, set OPENBLAS_CORETYPE and exec this program again with the same
 * arguments (MINIFUSE_BLAS_DETECTED keeps what OpenBLAS had picked, and the
 * pid, so processes that inherit the variable are not fooled). Returns
 * only when nothing is to be done or the exec failed.
 * Tests only: MINIFUSE_BLAS_TEST_DETECTED=NAME stands for the core OpenBLAS
 * detected, so the restart can be exercised on a CPU OpenBLAS knows. */
void mf_blas_ensure_core(char **argv);

/* The OpenBLAS core this process runs (openblas_get_corename()). */
const char *mf_blas_core(void);
/* Who chose it: "openblas" (the library's own choice), "auto" (minifuse
 * restarted itself with OPENBLAS_CORETYPE) or "env" (OPENBLAS_CORETYPE was
 * set before minifuse started: the user, the job script, or a parent). */
const char *mf_blas_core_source(void);
/* 1 when minifuse set the core itself (source "auto"). */
int mf_blas_core_auto(void);
/* OpenBLAS threads (openblas_get_num_threads()). */
int mf_blas_threads(void);
/* "OpenBLAS 0.3.21 ..." (openblas_get_config()). */
const char *mf_blas_config(void);

/* After MPI_Init, rank 0: the restart notice, or the warning when OpenBLAS
 * runs generic kernels on a CPU that has better ones (even under MINIFUSE_QUIET). */
void mf_blas_log_core(int rank);

/* Collective over comm: every rank sends its core, its source and its thread
 * count to rank 0, which logs them in one line even under MINIFUSE_QUIET
 * ("OpenBLAS core Zen (OpenBLAS's own choice), 1 thread, on all 2 ranks"), or,
 * when the cores differ, a warning naming the ranks of each. Returns 1 on
 * every rank when all ranks run the same core, else 0; mf_blas_ranks_agree()
 * returns it afterwards. */
int mf_blas_check_ranks(MPI_Comm comm);
/* 1 when the last mf_blas_check_ranks found one core, 0 when not, -1 before. */
int mf_blas_ranks_agree(void);

/* Adds "blas_core", "blas_core_source", "blas_threads" and (after
 * mf_blas_check_ranks) "blas_ranks_agree" to a jansson object. */
struct json_t;
void mf_blas_json(struct json_t *obj);

#endif
