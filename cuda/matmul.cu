/* matmul.cu - every matrix product of the CUDA backend: linear (forward and
 * backward), the 16-bit-weight linear_h, and FuseGPT's fused weight and its
 * backward. cuBLAS, FP32 accumulation; FP32 products run as plain SGEMM by
 * default (MINIFUSE_CUDA_MATH=fp32: the op thresholds are the fp32 ones), or
 * through cublasGemmEx with CUBLAS_COMPUTE_32F_FAST_TF32 (tf32) or
 * CUBLAS_COMPUTE_32F_FAST_16BF (bf16: the float32 operands, FP32 master
 * weights included, rounded to bf16 on the tensor cores, sums in FP32: the
 * training speed mode, docs/gpu.md), BF16/F16 ones on the
 * tensor cores through cublasGemmEx with CUBLAS_COMPUTE_32F (x is rounded to
 * the weights' type in a scratch buffer first: cuBLAS has no mixed f32 x bf16
 * product).
 *
 * rm_gemm is cblas_sgemm(CblasRowMajor, ...) on cuBLAS (column-major): a
 * row-major C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T, so the
 * operands swap and each call below is written exactly as the CPU's
 * (cpu.c, cpu_backward.c, cpu_fuse.c). */
#include "cuda/common.cuh"

/* row-major C[M][N] = alpha op(A)[M][K] op(B)[K][N] + beta C (cblas_sgemm's RowMajor arguments) */
static void rm_gemm(const char *op, bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* an empty sum: C = beta C (cuBLAS refuses lda = 0); every caller has ldc = N */
        if (beta == 0.0f) CUDA_CHECK(op, cudaMemsetAsync(C, 0, (size_t)M * ldc * sizeof *C, cu_stream()));
        else if (beta != 1.0f) mf_fatal("cuda backend: %s: K = 0 with beta %g", op, (double)beta);
        return;
    }
    const mf_cuda_ctx *cx = mf_cuda_ctx_get();
    cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (cx->math == CUBLAS_COMPUTE_32F)
        CUBLAS_CHECK(op, cublasSgemm(cx->blas, opb, opa, N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc));
    else
        CUBLAS_CHECK(op, cublasGemmEx(cx->blas, opb, opa, N, M, K, &alpha, B, CUDA_R_32F, ldb, A, CUDA_R_32F, lda, &beta, C,
                                      CUDA_R_32F, ldc, cx->math, CUBLAS_GEMM_DEFAULT));
}

/* y[t][o] = b[o] (copy: bias first, then y += x W^T) or y[t][o] += b[o] (after an accumulating product) */
__global__ void bias_rows_kernel(float *y, const float *b, int T, int n_out, int add) {
    size_t n = (size_t)T * n_out;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = b[i % n_out];
        y[i] = add ? y[i] + v : v;
    }
}

static void bias_rows(const char *op, float *y, const float *b, int T, int n_out, int add) {
    size_t n = (size_t)T * n_out;
    if (!n) return;
    bias_rows_kernel<<<cu_blocks(n, MF_BLOCK), MF_BLOCK, 0, cu_stream()>>>(y, b, T, n_out, add);
    CUDA_LAUNCHED(op);
}

/* cpu_linear: y[T][n_out] (acc ? += : =) x[T][n_in] w[n_out][n_in]^T (+ b[n_out]); with acc the bias is added after */
void mf_cuda_linear(float *y, const float *x, const float *w, const float *b, int T, int n_in, int n_out, int acc) {
    float beta = 0.0f;
    if (acc) beta = 1.0f;
    else if (b) {
        bias_rows("linear", y, b, T, n_out, 0);
        beta = 1.0f;
    }
    rm_gemm("linear", false, true, T, n_out, n_in, 1.0f, x, n_in, w, n_in, beta, y, n_out);
    if (acc && b) bias_rows("linear", y, b, T, n_out, 1);
}

/* bias_grad: db[o] += sum_t dy[t][o], in double, in token order (one thread per o: coalesced over o) */
__global__ void bias_grad_kernel(float *db, const float *dy, int T, int n_out) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= n_out) return;
    double s = 0.0;
    for (int t = 0; t < T; t++) s += dy[(size_t)t * n_out + o];
    db[o] += (float)s;
}

/* mf_linear_bwd: dx[T][in] (acc ? += : =) dy[T][out] W[out][in]; dW[out][in] += dy^T x; db[out] += sum_t dy */
void mf_cuda_linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W, int T,
                        int n_in, int n_out, int acc) {
    if (dx) rm_gemm("linear_bwd dx", false, false, T, n_in, n_out, 1.0f, dy, n_out, W, n_in, acc ? 1.0f : 0.0f, dx, n_in);
    if (dW) rm_gemm("linear_bwd dW", true, false, n_out, n_in, T, 1.0f, dy, n_out, x, n_in, 1.0f, dW, n_in);
    if (db && n_out > 0) {
        bias_grad_kernel<<<cu_blocks((size_t)n_out, MF_BLOCK), MF_BLOCK, 0, cu_stream()>>>(db, dy, T, n_out);
        CUDA_LAUNCHED("linear_bwd db");
    }
}

/* ------------------------------------------------------- 16-bit weights */

/* xh[n] = x[n] rounded to the weights' type (round to nearest even) */
__global__ void to_half_kernel(uint16_t *xh, const float *x, size_t n, int bf16) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        xh[i] = bf16 ? __bfloat16_as_ushort(__float2bfloat16_rn(x[i])) : __half_as_ushort(__float2half_rn(x[i]));
}

/* linear_h: y[T][n_out] (acc ? += : =) x[T][n_in] w[n_out][n_in]^T (+ b), w 16-bit (dt), x rounded to dt,
 * products and sums in FP32 on the tensor cores (cublasGemmEx, CUBLAS_COMPUTE_32F), y float32. */
void mf_cuda_linear_h(float *y, const float *x, const uint16_t *w, mf_dtype dt, const float *b, int T, int n_in,
                      int n_out, int acc) {
    if (dt != MF_DT_BF16 && dt != MF_DT_F16) mf_fatal("cuda backend: linear_h: weight type %d is not bf16 or f16", (int)dt);
    if (T <= 0 || n_out <= 0) return;
    if (n_in <= 0) { /* an empty product: the bias alone (or y unchanged when accumulating) */
        if (acc && b) bias_rows("linear_h", y, b, T, n_out, 1);
        else if (!acc && b) bias_rows("linear_h", y, b, T, n_out, 0);
        else if (!acc) CUDA_CHECK("linear_h", cudaMemsetAsync(y, 0, (size_t)T * n_out * sizeof *y, cu_stream()));
        return;
    }
    int bf16 = dt == MF_DT_BF16;
    cudaDataType_t ty = bf16 ? CUDA_R_16BF : CUDA_R_16F;
    size_t nx = (size_t)T * n_in;
    uint16_t *xh = (uint16_t *)mf_cuda_scratch(MF_CS_A, nx * sizeof *xh);
    if (nx) {
        to_half_kernel<<<cu_blocks(nx, MF_BLOCK), MF_BLOCK, 0, cu_stream()>>>(xh, x, nx, bf16);
        CUDA_LAUNCHED("linear_h");
    }
    float beta = 0.0f, alpha = 1.0f;
    if (acc) beta = 1.0f;
    else if (b) {
        bias_rows("linear_h", y, b, T, n_out, 0);
        beta = 1.0f;
    }
    /* row-major y[T][out] = xh[T][in] w[out][in]^T is column-major y'[out][T] = w'^T xh' with w' = w as
     * [in][out] (lda in) and xh' = xh as [in][T] (ldb in): rm_gemm's mapping, typed */
    CUBLAS_CHECK("linear_h", cublasGemmEx(mf_cuda_ctx_get()->blas, CUBLAS_OP_T, CUBLAS_OP_N, n_out, T, n_in, &alpha, w,
                                          ty, n_in, xh, ty, n_in, &beta, y, CUDA_R_32F, n_out, CUBLAS_COMPUTE_32F,
                                          CUBLAS_GEMM_DEFAULT));
    if (acc && b) bias_rows("linear_h", y, b, T, n_out, 1);
}

/* ------------------------------------------------------------- FuseGPT */

/* W_eff[i] += scratch[i] * P[i] (one product, one sum: rounded as the CPU's loop, no fma) */
__global__ void add_mul_kernel(float *y, const float *a, const float *p, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __fadd_rn(y[i], __fmul_rn(a[i], p[i]));
}
/* scratch[i] = G[i] * P[i] */
__global__ void mul_kernel(float *y, const float *a, const float *p, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = a[i] * p[i];
}

/* mf_fuse_weight: W_eff[out][in] = W + B[out][r] A[r][in] + (U[out][r] V[r][in]) * P; scratch [out][in] */
void mf_cuda_fuse_weight(float *W_eff, const float *W, const float *P, const float *A, const float *B, const float *U,
                         const float *V, int out, int in, int r, float *scratch) {
    size_t n = (size_t)out * in;
    if (!n) return;
    CUDA_CHECK("fuse_weight", cudaMemcpyAsync(W_eff, W, n * sizeof *W_eff, cudaMemcpyDeviceToDevice, cu_stream()));
    rm_gemm("fuse_weight", false, false, out, in, r, 1.0f, B, r, A, in, 1.0f, W_eff, in);
    if (!P) return;
    if (!scratch) mf_fatal("cuda backend: fuse_weight: P given without a scratch buffer [%d][%d]", out, in);
    rm_gemm("fuse_weight", false, false, out, in, r, 1.0f, U, r, V, in, 0.0f, scratch, in);
    add_mul_kernel<<<cu_blocks(n, MF_BLOCK), MF_BLOCK, 0, cu_stream()>>>(W_eff, scratch, P, n);
    CUDA_LAUNCHED("fuse_weight");
}

/* mf_fuse_weight_bwd: dB = G A^T, dA = B^T G, dU = (G*P) V^T, dV = U^T (G*P), written (dU, dV untouched without P) */
void mf_cuda_fuse_weight_bwd(float *dA, float *dB, float *dU, float *dV, const float *G, const float *P,
                             const float *A, const float *B, const float *U, const float *V, int out, int in, int r,
                             float *scratch) {
    rm_gemm("fuse_weight_bwd dB", false, true, out, r, in, 1.0f, G, in, A, in, 0.0f, dB, r);
    rm_gemm("fuse_weight_bwd dA", true, false, r, in, out, 1.0f, B, r, G, in, 0.0f, dA, in);
    if (!P) return;
    size_t n = (size_t)out * in;
    if (!n) return;
    if (!scratch) mf_fatal("cuda backend: fuse_weight_bwd: P given without a scratch buffer [%d][%d]", out, in);
    mul_kernel<<<cu_blocks(n, MF_BLOCK), MF_BLOCK, 0, cu_stream()>>>(scratch, G, P, n);
    CUDA_LAUNCHED("fuse_weight_bwd");
    rm_gemm("fuse_weight_bwd dU", false, true, out, r, in, 1.0f, scratch, in, V, in, 0.0f, dU, r);
    rm_gemm("fuse_weight_bwd dV", true, false, r, in, out, 1.0f, U, r, scratch, in, 0.0f, dV, in);
}
