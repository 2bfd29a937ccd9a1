/* norm_rope.cu - RMSNorm and rotate-half RoPE, forward and backward
 * (cpu.c: cpu_rmsnorm, cpu_rope; cpu_backward.c: mf_rmsnorm_bwd, rope_rotate). */
#include "cuda/common.cuh"

/* ----------------------------------------------------------------- RMSNorm */

/* cpu_rmsnorm, one block per row t of x[T][C]:
 *   r = 1 / sqrtf(sum_i x^2 / C + eps) (float sum) ; y[t][i] = x * r * w[i] ; rinv[t] = r (device, may be NULL) */
__global__ void rmsnorm_kernel(float *y, float *rinv, const float *x, const float *w, int C, float eps) {
    __shared__ float sh[32];
    int t = blockIdx.x;
    const float *xt = x + (size_t)t * C;
    float *yt = y + (size_t)t * C;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) ss += xt[i] * xt[i];
    ss = block_sum(ss, sh);
    float s = 1.0f / sqrtf(ss / C + eps);
    if (rinv && threadIdx.x == 0) rinv[t] = s;
    for (int i = threadIdx.x; i < C; i += blockDim.x) yt[i] = xt[i] * s * w[i];
}

void mf_cuda_rmsnorm(float *y, float *rinv, const float *x, const float *w, int T, int C, float eps) {
    if (T <= 0 || C <= 0) return;
    rmsnorm_kernel<<<T, MF_BLOCK, 0, cu_stream()>>>(y, rinv, x, w, C, eps);
    CUDA_LAUNCHED("rmsnorm");
}

/* mf_rmsnorm_bwd dx, one block per row t: g = dy w ; c = (float)(sum_i g x / C, double) r^2 ;
 * dx[t][i] (acc ? += : =) r (g - x c) */
__global__ void rmsnorm_bwd_dx_kernel(float *dx, const float *dy, const float *x, const float *w, const float *rinv,
                                      int C, int acc) {
    __shared__ double sh[32];
    int t = blockIdx.x;
    const float *xt = x + (size_t)t * C, *gt = dy + (size_t)t * C;
    float *dt = dx + (size_t)t * C;
    float r = rinv[t];
    double gx = 0.0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) gx += (double)gt[i] * w[i] * xt[i];
    gx = block_sum(gx, sh);
    float c = (float)(gx / C) * r * r;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float v = r * __fsub_rn(__fmul_rn(gt[i], w[i]), __fmul_rn(xt[i], c));
        dt[i] = acc ? dt[i] + v : v;
    }
}

/* mf_rmsnorm_bwd dw, part 1: part[k][i] = sum over rows t of chunk k (RMS_ROWS rows) of dy x r, in double */
#define RMS_ROWS 256
__global__ void rmsnorm_bwd_dw_part_kernel(double *part, const float *dy, const float *x, const float *rinv, int T,
                                           int C) {
    int i = blockIdx.x * blockDim.x + threadIdx.x, k = blockIdx.y;
    if (i >= C) return;
    int t0 = k * RMS_ROWS, t1 = min(T, t0 + RMS_ROWS);
    double s = 0.0;
    for (int t = t0; t < t1; t++) s += (double)dy[(size_t)t * C + i] * x[(size_t)t * C + i] * rinv[t];
    part[(size_t)k * C + i] = s;
}
/* part 2: dw[i] += sum_k part[k][i], chunks in row order */
__global__ void rmsnorm_bwd_dw_sum_kernel(float *dw, const double *part, int nk, int C) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= C) return;
    double s = 0.0;
    for (int k = 0; k < nk; k++) s += part[(size_t)k * C + i];
    dw[i] += (float)s;
}

void mf_cuda_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rinv,
                         int T, int C, int acc) {
    if (T <= 0 || C <= 0) return;
    if (dx) {
        rmsnorm_bwd_dx_kernel<<<T, MF_BLOCK, 0, cu_stream()>>>(dx, dy, x, w, rinv, C, acc);
        CUDA_LAUNCHED("rmsnorm_bwd dx");
    }
    if (dw) {
        int nk = (T + RMS_ROWS - 1) / RMS_ROWS;
        double *part = (double *)mf_cuda_scratch(MF_CS_A, (size_t)nk * C * sizeof(double));
        dim3 grid((unsigned)((C + MF_BLOCK - 1) / MF_BLOCK), (unsigned)nk);
        rmsnorm_bwd_dw_part_kernel<<<grid, MF_BLOCK, 0, cu_stream()>>>(part, dy, x, rinv, T, C);
        CUDA_LAUNCHED("rmsnorm_bwd dw");
        rmsnorm_bwd_dw_sum_kernel<<<(C + MF_BLOCK - 1) / MF_BLOCK, MF_BLOCK, 0, cu_stream()>>>(dw, part, nk, C);
        CUDA_LAUNCHED("rmsnorm_bwd dw");
    }
}

/* -------------------------------------------------------------------- RoPE */

/* inv_freq is host memory (the model's table): it travels by value in the launch */
#define ROPE_MAX_HALF 256
struct rope_freq {
    float f[ROPE_MAX_HALF];
};

/* rope_rotate: x[T][n_heads][hd], the pair (i, i + hd/2) of every head rotated by
 * sign * ang, ang = (float)(pos0 + t) * inv_freq[i] (float, as the CPU), one thread per pair */
__global__ void rope_kernel(float *x, int T, int n_heads, int hd, int pos0, rope_freq fr, float sign) {
    int half = hd / 2;
    size_t n = (size_t)T * n_heads * half;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(e % half);
        size_t th = e / half; /* t * n_heads + h */
        int t = (int)(th / n_heads);
        float ang = (float)(pos0 + t) * fr.f[i];
        float c = cosf(ang), s = sign * sinf(ang);
        float *v = x + th * hd;
        float a = v[i], b = v[i + half];
        v[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        v[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
    }
}

static void rope(const char *op, float *x, int T, int n_heads, int hd, int pos0, const float *inv_freq, float sign) {
    int half = hd / 2;
    if (half > ROPE_MAX_HALF) mf_fatal("cuda backend: %s: head_dim %d above %d", op, hd, 2 * ROPE_MAX_HALF);
    size_t n = (size_t)T * n_heads * half;
    if (!n) return;
    rope_freq fr;
    for (int i = 0; i < half; i++) fr.f[i] = inv_freq[i];
    rope_kernel<<<cu_blocks(n, MF_BLOCK), MF_BLOCK, 0, cu_stream()>>>(x, T, n_heads, hd, pos0, fr, sign);
    CUDA_LAUNCHED(op);
}

void mf_cuda_rope(float *x, int T, int n_heads, int hd, int pos0, const float *inv_freq) {
    rope("rope", x, T, n_heads, hd, pos0, inv_freq, 1.0f);
}
void mf_cuda_rope_bwd(float *dx, int T, int n_heads, int hd, int pos0, const float *inv_freq) {
    rope("rope_bwd", dx, T, n_heads, hd, pos0, inv_freq, -1.0f);
}
