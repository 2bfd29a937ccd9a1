/* optimizer.cu - AdamW over a flat buffer and the sum of squares of the
 * gradient-norm clip (src/train/optim.c adam_tensor, params.c
 * mf_params_grad_sq), so that a training step can stay on the device. */
#include "cuda/common.cuh"

/* adam_tensor, element j (float, the same roundings as the CPU: explicit _rn
 * operations where nvcc would otherwise contract a product and a sum):
 *   g = grad scale ; p = p decay ; m = fmaf(w1, g - m, m) ; v = fmaf(c2 g, g, v b2)
 *   p = p + neg_step m / (sqrtf(v) / bc2_sqrt + eps) */
__global__ void adamw_kernel(float *p, const float *grad, float *m, float *v, size_t n, float scale, mf_adamw_coef k) {
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < n; j += (size_t)gridDim.x * blockDim.x) {
        float gj = __fmul_rn(grad[j], scale);
        float pj = __fmul_rn(p[j], k.decay);
        float mj = fmaf(k.w1, __fsub_rn(gj, m[j]), m[j]);
        float vj = fmaf(__fmul_rn(k.c2, gj), gj, __fmul_rn(v[j], k.b2));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vj), k.bc2_sqrt), k.eps);
        p[j] = __fadd_rn(pj, __fdiv_rn(__fmul_rn(k.neg_step, mj), denom));
        m[j] = mj;
        v[j] = vj;
    }
}

void mf_cuda_adamw(float *p, const float *grad, float *m, float *v, size_t n, float scale, const mf_adamw_coef *k) {
    if (!n) return;
    adamw_kernel<<<cu_blocks(n, MF_BLOCK), MF_BLOCK, 0, cu_stream()>>>(p, grad, m, v, n, scale, *k);
    CUDA_LAUNCHED("adamw");
}

/* part[block] = sum over the block's grid-stride elements of x^2 (double) */
__global__ void sumsq_kernel(double *part, const float *x, size_t n) {
    __shared__ double shd[32];
    double s = 0;
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < n; j += (size_t)gridDim.x * blockDim.x)
        s += (double)x[j] * x[j];
    s = block_sum(s, shd);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

double mf_cuda_sumsq(const float *x, size_t n) {
    if (!n) return 0.0;
    unsigned blocks = cu_blocks(n, MF_BLOCK);
    if (blocks > 1024) blocks = 1024; /* fixed for a given n: repeatable sums */
    double *part = (double *)mf_cuda_scratch(MF_CS_A, (size_t)blocks * sizeof *part);
    sumsq_kernel<<<blocks, MF_BLOCK, 0, cu_stream()>>>(part, x, n);
    CUDA_LAUNCHED("sumsq");
    return cu_sum_doubles("sumsq", part, blocks);
}
