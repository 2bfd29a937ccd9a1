/* common.cuh - what every kernel file of the CUDA backend shares: the context,
 * error checks, launch sizes and deterministic block reductions (a fixed tree
 * for a given block size, so a result repeats bit for bit run to run). */
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "cuda/cuda_backend.h"
extern "C" {
#include "util/err.h"
}

#define MF_BLOCK 256 /* threads of the row and elementwise kernels */

static inline cudaStream_t cu_stream(void) { return mf_cuda_ctx_get()->stream; }

/* blocks of `threads` covering n items, at most 65535 * 1024 (grid-stride loops cover the rest) */
static inline unsigned cu_blocks(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > (size_t)65535 * 1024) b = (size_t)65535 * 1024;
    return (unsigned)b;
}

template <typename F> __device__ __forceinline__ F warp_sum(F v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum of one value per thread over the block (blockDim.x a multiple of 32, at
 * most 1024); every thread gets the result. `sh` holds 32 values of F. */
template <typename F> __device__ F block_sum(F v, F *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0) sh[w] = v;
    __syncthreads();
    F r = lane < nw ? sh[lane] : (F)0;
    return warp_sum(r);
}
__device__ __forceinline__ float block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    float r = lane < nw ? sh[lane] : -INFINITY;
    return warp_max(r);
}

/* The sum of x[n] (device doubles) as one double on the host, in a fixed order. */
double cu_sum_doubles(const char *op, const double *x, size_t n);
