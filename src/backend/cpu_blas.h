/* cpu_blas.h - make OpenBLAS run the kernels this CPU can run.
 *
 * OpenBLAS (a DYNAMIC_ARCH build such as Debian's) picks its kernels from the
 * CPU model at load time. On a CPU newer than the library (Debian 12's 0.3.21
 * on an Emerald Rapids, family 6 model 207) the choice can fall back to the
 * generic Prescott (SSE3) kernels: sgemm measured 16-21 GFLOP/s against 121
 * with OPENBLAS_CORETYPE=Cooperlake on one core. OpenBLAS reads
 * OPENBLAS_CORETYPE before main, so the fix is to set it and exec again. */
#ifndef MF_CPU_BLAS_H
#define MF_CPU_BLAS_H

/* The OPENBLAS_CORETYPE to use instead of the `detected` core name, or NULL
 * when the detected one is fine: a generic core (Prescott, Core2, Nehalem, ...)
 * on a CPU with AVX-512 (Cooperlake with BF16, else SkylakeX) or AVX2
 * (Haswell). Pure: the CPU features are arguments. */
const char *mf_blas_pick_core(const char *detected, int avx2, int avx512f, int avx512bf16);

/* First thing in main, before MPI_Init: when OPENBLAS_CORETYPE is unset,
 * MINIFUSE_BLAS_AUTO is not 0 and mf_blas_pick_core names a better core for
 * this CPU, set OPENBLAS_CORETYPE and exec this program again with the same
 * arguments (MINIFUSE_BLAS_DETECTED keeps what OpenBLAS had picked, and the
 * pid, so processes that inherit the variable are not fooled). Returns
 * only when nothing is to be done or the exec failed. */
void mf_blas_ensure_core(char **argv);

/* After MPI_Init, rank 0: say which kernels run, and why, when the choice
 * was corrected or is still generic on a CPU that has better ones. */
void mf_blas_log_core(int rank);

#endif
