/* backend_cuda.c - the CUDA backend's table: device choice (one rank per GPU),
 * the stream and cuBLAS handles, memory, scratch buffers. The ops are in the
 * .cu files (cuda_backend.h lists them by family). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_backend.h"
#include "util/err.h"
#include "util/log.h"

static mf_cuda_ctx CTX;
static int CTX_READY;
static struct {
    void *p;
    size_t bytes;
} SCRATCH[MF_CS_N];

void mf_cuda_fail(const char *op, const char *call, const char *what, const char *file, int line) {
    mf_fatal("cuda backend: %s: %s failed: %s (%s:%d)", op, call, what, file, line);
}

int mf_cuda_device_count(char *why, size_t n) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        if (why && n) snprintf(why, n, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
        (void)cudaGetLastError(); /* reset the runtime's last error: later checks start clean */
        return 0;
    }
    if (count <= 0 && why && n) snprintf(why, n, "cudaGetDeviceCount: 0 devices");
    return count > 0 ? count : 0;
}

/* The node-local rank: Open MPI, Slurm, MPICH/PMI (0 when none is set). */
static int local_rank(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "PMI_LOCAL_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    return 0;
}

/* MINIFUSE_CUDA_MATH: how float32 products run (fp32 when unset; anything else is fatal, naming it). */
static void choose_math(void) {
    const char *v = getenv("MINIFUSE_CUDA_MATH");
    CTX.math = CUBLAS_COMPUTE_32F;
    CTX.math_name = "fp32";
    if (!v || !*v || strcmp(v, "fp32") == 0) return;
    if (strcmp(v, "tf32") == 0) { CTX.math = CUBLAS_COMPUTE_32F_FAST_TF32; CTX.math_name = "tf32"; return; }
    if (strcmp(v, "bf16") == 0) { CTX.math = CUBLAS_COMPUTE_32F_FAST_16BF; CTX.math_name = "bf16"; return; }
    mf_fatal("MINIFUSE_CUDA_MATH='%s' is not fp32, tf32 or bf16", v);
}

mf_cuda_ctx *mf_cuda_ctx_get(void) {
    if (!CTX_READY) mf_fatal("cuda backend: used before mf_backend_cuda() chose a device");
    return &CTX;
}

cudaStream_t mf_cuda_stream(void) { return mf_cuda_ctx_get()->stream; }

static void ctx_init(void) {
    char why[256];
    int count = mf_cuda_device_count(why, sizeof why);
    if (count <= 0) mf_fatal("--backend cuda: no CUDA device (%s)", why);
    int lr = local_rank();
    CTX.device = lr % count;
    CUDA_CHECK("init", cudaSetDevice(CTX.device));
    struct cudaDeviceProp prop;
    CUDA_CHECK("init", cudaGetDeviceProperties(&prop, CTX.device));
    if (prop.major < 8)
        mf_fatal("--backend cuda: device %d (%s) has compute capability %d.%d; this build needs 8.0 or newer",
                 CTX.device, prop.name, prop.major, prop.minor);
    CUDA_CHECK("init", cudaStreamCreateWithFlags(&CTX.stream, cudaStreamNonBlocking));
    CUBLAS_CHECK("init", cublasCreate(&CTX.blas));
    CUBLAS_CHECK("init", cublasSetStream(CTX.blas, CTX.stream));
    /* the handle's own math stays FP32 (no TF32); MINIFUSE_CUDA_MATH picks the compute type of each float32 product */
    CUBLAS_CHECK("init", cublasSetMathMode(CTX.blas, CUBLAS_DEFAULT_MATH));
    choose_math();
    CTX.blas_ws_bytes = (size_t)32 << 20;
    CUDA_CHECK("init", cudaMalloc(&CTX.blas_ws, CTX.blas_ws_bytes));
    CUBLAS_CHECK("init", cublasSetWorkspace(CTX.blas, CTX.blas_ws, CTX.blas_ws_bytes));
    CTX_READY = 1;
    mf_log_always("cuda: local rank %d uses device %d of %d: %s (sm_%d%d, %.1f GiB), float32 products in %s", lr, CTX.device,
                  count, prop.name, prop.major, prop.minor, (double)prop.totalGlobalMem / (1 << 30), CTX.math_name);
}

void *mf_cuda_scratch(int slot, size_t bytes) {
    if (slot < 0 || slot >= MF_CS_N) mf_fatal("cuda backend: scratch slot %d out of range", slot);
    if (bytes == 0) bytes = 256;
    if (SCRATCH[slot].bytes < bytes) {
        /* work queued earlier may still read the old buffer */
        CUDA_CHECK("scratch", cudaStreamSynchronize(CTX.stream));
        if (SCRATCH[slot].p) CUDA_CHECK("scratch", cudaFree(SCRATCH[slot].p));
        size_t want = bytes + bytes / 4;
        cudaError_t e = cudaMalloc(&SCRATCH[slot].p, want);
        if (e != cudaSuccess) mf_fatal("cuda backend: out of device memory for %zu bytes of scratch: %s", want,
                                       cudaGetErrorString(e));
        SCRATCH[slot].bytes = want;
    }
    return SCRATCH[slot].p;
}

void mf_cuda_to_host(const char *op, void *host_dst, const void *dev_src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(op, cudaMemcpyAsync(host_dst, dev_src, bytes, cudaMemcpyDeviceToHost, CTX.stream));
    CUDA_CHECK(op, cudaStreamSynchronize(CTX.stream));
}

void mf_cuda_to_dev(const char *op, void *dev_dst, const void *host_src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(op, cudaMemcpyAsync(dev_dst, host_src, bytes, cudaMemcpyHostToDevice, CTX.stream));
    /* the caller may reuse host_src at once */
    CUDA_CHECK(op, cudaStreamSynchronize(CTX.stream));
}

/* ------------------------------------------------------------------ memory */

static void *cu_alloc(size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 256);
    if (e != cudaSuccess)
        mf_fatal("cuda backend: out of device memory allocating %zu bytes on device %d: %s", bytes, CTX.device,
                 cudaGetErrorString(e));
    return p;
}
static void cu_free(void *p) {
    if (!p) return;
    CUDA_CHECK("free", cudaStreamSynchronize(CTX.stream)); /* queued work may still use p */
    CUDA_CHECK("free", cudaFree(p));
}
static void cu_upload(void *dst, const void *src, size_t bytes) { mf_cuda_to_dev("upload", dst, src, bytes); }
static void cu_download(void *dst, const void *src, size_t bytes) { mf_cuda_to_host("download", dst, src, bytes); }
static void cu_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK("copy", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, CTX.stream));
}
static void cu_zero(void *p, size_t bytes) {
    if (bytes) CUDA_CHECK("zero", cudaMemsetAsync(p, 0, bytes, CTX.stream));
}
static void cu_sync(void) { CUDA_CHECK("sync", cudaStreamSynchronize(CTX.stream)); }

static const mf_backend CUDA_BE = {
    .name = "cuda",
    .is_host = 0,
    .alloc = cu_alloc,
    .free = cu_free,
    .upload = cu_upload,
    .download = cu_download,
    .copy = cu_copy,
    .zero = cu_zero,
    .sync = cu_sync,
    .linear = mf_cuda_linear,
    .rmsnorm = mf_cuda_rmsnorm,
    .rope = mf_cuda_rope,
    .attention = mf_cuda_attention,
    .swiglu = mf_cuda_swiglu,
    .add = mf_cuda_add,
    .embed = mf_cuda_embed,
    .linear_h = mf_cuda_linear_h,
    .embed_h = mf_cuda_embed_h,
    .logsumexp = mf_cuda_logsumexp,
    .nll = mf_cuda_nll,
    .kl_rows = mf_cuda_kl_rows,
    .linear_bwd = mf_cuda_linear_bwd,
    .rmsnorm_bwd = mf_cuda_rmsnorm_bwd,
    .rope_bwd = mf_cuda_rope_bwd,
    .attention_bwd = mf_cuda_attention_bwd,
    .swiglu_bwd = mf_cuda_swiglu_bwd,
    .embed_bwd = mf_cuda_embed_bwd,
    .loss_ce = mf_cuda_loss_ce,
    .loss_kl = mf_cuda_loss_kl,
    .loss_kl_topk = mf_cuda_loss_kl_topk,
    .loss_cosine = mf_cuda_loss_cosine,
    .loss_nmse = mf_cuda_loss_nmse,
    .fuse_weight = mf_cuda_fuse_weight,
    .fuse_weight_bwd = mf_cuda_fuse_weight_bwd,
    .loss_kl_batch = mf_cuda_loss_kl_batch,
    .adamw = mf_cuda_adamw,
    .sumsq = mf_cuda_sumsq,
};

const mf_backend *mf_backend_cuda(void) {
    if (!CTX_READY) ctx_init();
    return &CUDA_BE;
}
