/* attention.cu - causal GQA attention, forward and backward, tiled in the
 * manner of FlashAttention: keys and values stream through shared memory in
 * tiles of 32, each query row keeps a running max m, sum l and output o
 * (online softmax), so no T x T matrix is ever stored. The backward recomputes
 * the forward's output and per-row logsumexp (into scratch), then
 * D = rowsum(dout * out), then dq (one warp per query row, over the key tiles)
 * and dk, dv (one warp per key, over the heads of its group and the query
 * tiles): no atomics, so results repeat bit for bit.
 *
 * Layouts (cpu.c cpu_attention, cpu_backward.c mf_attention_bwd):
 *   q, out, dq, dout [T][H*hd] ; k, v, dk, dv [n_ctx][KV*hd] ; head h reads kv group h / (H/KV)
 *   the query at t (position pos0 + t) sees keys 0 .. pos0 + t ; scale 1/sqrt(hd)
 *   lse, D [H][T] (device scratch)
 * Work split: a warp owns a query row (forward, dq) or a key (dk, dv); its lane
 * j owns key (query) j of the current tile for the scores and dims
 * lane, lane + 32, ... of hd for the accumulators (hd <= 256: 8 per lane).
 * Products and sums in FP32 (CUDA cores, expf): the exact-fp32 path, not yet
 * the tensor-core one. */
#include "cuda/common.cuh"

#define ATT_WARPS 8 /* rows (keys) per block */
#define ATT_BK 32   /* keys (queries) per tile = lanes */
#define ATT_MAX_HD 256
#define ATT_DPL (ATT_MAX_HD / 32) /* accumulator dims per lane */

/* forward: out[t][h] = sum_j softmax_j(scale q_t.k_j) v_j over j <= pos0 + t; lse[h][t] = m + log l (if lse) */
__global__ void attn_fwd_kernel(float *out, float *lse, const float *q, const float *kc, const float *vc, int T, int pos0,
                                int H, int KV, int hd) {
    extern __shared__ float smem[];
    const int ld = hd + 1; /* odd stride: lane j reading row j hits 32 different banks */
    float *Ks = smem, *Vs = Ks + ATT_BK * ld, *Qs = Vs + ATT_BK * ld; /* Qs [ATT_WARPS][hd] */
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int h = blockIdx.y, g = h / (H / KV);
    int ldq = H * hd, ldkv = KV * hd;
    int t = blockIdx.x * ATT_WARPS + w;
    bool active = t < T; /* uniform over the warp */
    int qpos = pos0 + t;
    float scale = 1.0f / sqrtf((float)hd);
    for (int d = lane; d < hd; d += 32) Qs[w * hd + d] = active ? q[(size_t)t * ldq + (size_t)h * hd + d] : 0.0f;
    int t_last = min(T - 1, (int)blockIdx.x * ATT_WARPS + ATT_WARPS - 1);
    int kend = pos0 + t_last + 1; /* keys any row of the block sees */
    float o[ATT_DPL];
#pragma unroll
    for (int u = 0; u < ATT_DPL; u++) o[u] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int k0 = 0; k0 < kend; k0 += ATT_BK) {
        __syncthreads(); /* the previous tile is no longer read (and Qs is written, first time) */
        for (int e = threadIdx.x; e < ATT_BK * hd; e += blockDim.x) {
            int j = e / hd, d = e - j * hd, key = k0 + j;
            bool in = key < kend;
            Ks[j * ld + d] = in ? kc[(size_t)key * ldkv + (size_t)g * hd + d] : 0.0f;
            Vs[j * ld + d] = in ? vc[(size_t)key * ldkv + (size_t)g * hd + d] : 0.0f;
        }
        __syncthreads();
        if (!active) continue;
        int key = k0 + lane;
        bool vis = key <= qpos;
        float s = -INFINITY;
        if (vis) {
            float dot = 0.0f;
            for (int d = 0; d < hd; d++) dot += Qs[w * hd + d] * Ks[lane * ld + d];
            s = dot * scale;
        }
        float m_new = fmaxf(m, warp_max(s)); /* finite: key 0 is in the first tile and visible to all */
        float p = vis ? expf(s - m_new) : 0.0f;
        float alpha = expf(m - m_new); /* 0 on the first tile (m = -inf) */
        l = l * alpha + warp_sum(p);
        m = m_new;
#pragma unroll
        for (int u = 0; u < ATT_DPL; u++) o[u] *= alpha;
        for (int j = 0; j < ATT_BK; j++) {
            float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
            for (int u = 0; u < ATT_DPL; u++) {
                int d = lane + 32 * u;
                if (d < hd) o[u] += pj * Vs[j * ld + d];
            }
        }
    }
    if (!active) return;
    float il = 1.0f / l;
#pragma unroll
    for (int u = 0; u < ATT_DPL; u++) {
        int d = lane + 32 * u;
        if (d < hd) out[(size_t)t * ldq + (size_t)h * hd + d] = o[u] * il;
    }
    if (lse && lane == 0) lse[(size_t)h * T + t] = m + logf(l);
}

static size_t fwd_smem(int hd) { return (size_t)(2 * ATT_BK * (hd + 1) + ATT_WARPS * hd) * sizeof(float); }
static size_t dq_smem(int hd) { return (size_t)(2 * ATT_BK * (hd + 1) + 2 * ATT_WARPS * hd) * sizeof(float); }
static size_t dkv_smem(int hd) {
    return (size_t)(2 * ATT_BK * (hd + 1) + 2 * ATT_WARPS * hd + 2 * ATT_BK) * sizeof(float);
}

/* allow more than 48 KiB of dynamic shared memory where hd needs it */
static void smem_allow(const char *op, const void *kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        CUDA_CHECK(op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

static void check_shape(const char *op, int T, int H, int KV, int hd) {
    if (hd <= 0 || hd > ATT_MAX_HD) mf_fatal("cuda backend: %s: head_dim %d outside 1..%d", op, hd, ATT_MAX_HD);
    if (KV <= 0 || H % KV != 0) mf_fatal("cuda backend: %s: %d heads are not a multiple of %d kv heads", op, H, KV);
    if (H > 65535) mf_fatal("cuda backend: %s: %d heads above 65535", op, H);
    (void)T;
}

static void attn_fwd(const char *op, float *out, float *lse, const float *q, const float *kc, const float *vc, int T,
                     int pos0, int H, int KV, int hd) {
    size_t sm = fwd_smem(hd);
    smem_allow(op, (const void *)attn_fwd_kernel, sm);
    dim3 grid((unsigned)((T + ATT_WARPS - 1) / ATT_WARPS), (unsigned)H);
    attn_fwd_kernel<<<grid, ATT_WARPS * 32, sm, cu_stream()>>>(out, lse, q, kc, vc, T, pos0, H, KV, hd);
    CUDA_LAUNCHED(op);
}

void mf_cuda_attention(float *out, const float *q, const float *kc, const float *vc, int T, int pos0, int n_heads,
                       int n_kv, int hd) {
    if (T <= 0) return;
    check_shape("attention", T, n_heads, n_kv, hd);
    attn_fwd("attention", out, NULL, q, kc, vc, T, pos0, n_heads, n_kv, hd);
}

/* ---------------------------------------------------------------- backward */

/* D[h][t] = sum_d dout[t][h][d] out[t][h][d] (= sum_j P_j dP_j of the CPU), one warp per (t, h) */
__global__ void attn_rowdot_kernel(float *D, const float *dout, const float *o, int T, int H, int hd) {
    int lane = threadIdx.x & 31;
    size_t wid = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5;
    if (wid >= (size_t)T * H) return; /* whole warps leave together */
    int t = (int)(wid / H), h = (int)(wid % H);
    const float *a = dout + (size_t)t * H * hd + (size_t)h * hd, *b = o + (size_t)t * H * hd + (size_t)h * hd;
    float s = 0.0f;
    for (int d = lane; d < hd; d += 32) s += a[d] * b[d];
    s = warp_sum(s);
    if (lane == 0) D[(size_t)h * T + t] = s;
}

/* dq[t][h] = sum_{j <= t} dS_tj k_j, dS_tj = P_tj (dout_t.v_j - D_t) scale, P_tj = exp(scale q_t.k_j - lse_t);
 * one warp per query row, key tiles in shared memory (written, not accumulated) */
__global__ void attn_dq_kernel(float *dq, const float *dout, const float *q, const float *k, const float *v,
                               const float *lse, const float *D, int T, int H, int KV, int hd) {
    extern __shared__ float smem[];
    const int ld = hd + 1;
    float *Ks = smem, *Vs = Ks + ATT_BK * ld, *Qs = Vs + ATT_BK * ld, *Os = Qs + ATT_WARPS * hd;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int h = blockIdx.y, g = h / (H / KV);
    int ldq = H * hd, ldkv = KV * hd;
    int t = blockIdx.x * ATT_WARPS + w;
    bool active = t < T;
    float scale = 1.0f / sqrtf((float)hd);
    for (int d = lane; d < hd; d += 32) {
        Qs[w * hd + d] = active ? q[(size_t)t * ldq + (size_t)h * hd + d] : 0.0f;
        Os[w * hd + d] = active ? dout[(size_t)t * ldq + (size_t)h * hd + d] : 0.0f;
    }
    float lse_t = active ? lse[(size_t)h * T + t] : 0.0f, D_t = active ? D[(size_t)h * T + t] : 0.0f;
    int kend = min(T - 1, (int)blockIdx.x * ATT_WARPS + ATT_WARPS - 1) + 1;
    float acc[ATT_DPL];
#pragma unroll
    for (int u = 0; u < ATT_DPL; u++) acc[u] = 0.0f;
    for (int k0 = 0; k0 < kend; k0 += ATT_BK) {
        __syncthreads();
        for (int e = threadIdx.x; e < ATT_BK * hd; e += blockDim.x) {
            int j = e / hd, d = e - j * hd, key = k0 + j;
            bool in = key < kend;
            Ks[j * ld + d] = in ? k[(size_t)key * ldkv + (size_t)g * hd + d] : 0.0f;
            Vs[j * ld + d] = in ? v[(size_t)key * ldkv + (size_t)g * hd + d] : 0.0f;
        }
        __syncthreads();
        if (!active) continue;
        int key = k0 + lane;
        float ds = 0.0f;
        if (key <= t) {
            float qk = 0.0f, dp = 0.0f;
            for (int d = 0; d < hd; d++) {
                qk += Qs[w * hd + d] * Ks[lane * ld + d];
                dp += Os[w * hd + d] * Vs[lane * ld + d];
            }
            float p = expf(qk * scale - lse_t);
            ds = p * (dp - D_t) * scale;
        }
        for (int j = 0; j < ATT_BK; j++) {
            float dsj = __shfl_sync(0xffffffffu, ds, j);
#pragma unroll
            for (int u = 0; u < ATT_DPL; u++) {
                int d = lane + 32 * u;
                if (d < hd) acc[u] += dsj * Ks[j * ld + d];
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int u = 0; u < ATT_DPL; u++) {
        int d = lane + 32 * u;
        if (d < hd) dq[(size_t)t * ldq + (size_t)h * hd + d] = acc[u];
    }
}

/* dk[j][g] = sum_{h in g} sum_{t >= j} dS_tj q_t ; dv[j][g] = sum_{h in g} sum_{t >= j} P_tj dout_t;
 * one warp per key j, its lanes over the queries of a tile (written, not accumulated) */
__global__ void attn_dkv_kernel(float *dk, float *dv, const float *dout, const float *q, const float *k, const float *v,
                                const float *lse, const float *D, int T, int H, int KV, int hd) {
    extern __shared__ float smem[];
    const int ld = hd + 1;
    float *Qs = smem, *Os = Qs + ATT_BK * ld, *Kw = Os + ATT_BK * ld, *Vw = Kw + ATT_WARPS * hd;
    float *Ls = Vw + ATT_WARPS * hd, *Ds = Ls + ATT_BK;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int g = blockIdx.y, group = H / KV;
    int ldq = H * hd, ldkv = KV * hd;
    int j = blockIdx.x * ATT_WARPS + w;
    bool active = j < T;
    float scale = 1.0f / sqrtf((float)hd);
    for (int d = lane; d < hd; d += 32) {
        Kw[w * hd + d] = active ? k[(size_t)j * ldkv + (size_t)g * hd + d] : 0.0f;
        Vw[w * hd + d] = active ? v[(size_t)j * ldkv + (size_t)g * hd + d] : 0.0f;
    }
    float ak[ATT_DPL], av[ATT_DPL];
#pragma unroll
    for (int u = 0; u < ATT_DPL; u++) ak[u] = av[u] = 0.0f;
    int i_first = blockIdx.x * ATT_WARPS; /* the block's smallest key: queries before it see none of its keys */
    for (int h = g * group; h < (g + 1) * group; h++) {
        for (int i0 = i_first; i0 < T; i0 += ATT_BK) {
            __syncthreads();
            for (int e = threadIdx.x; e < ATT_BK * hd; e += blockDim.x) {
                int i = e / hd, d = e - i * hd, tq = i0 + i;
                bool in = tq < T;
                Qs[i * ld + d] = in ? q[(size_t)tq * ldq + (size_t)h * hd + d] : 0.0f;
                Os[i * ld + d] = in ? dout[(size_t)tq * ldq + (size_t)h * hd + d] : 0.0f;
            }
            for (int i = threadIdx.x; i < ATT_BK; i += blockDim.x) {
                bool in = i0 + i < T;
                Ls[i] = in ? lse[(size_t)h * T + i0 + i] : 0.0f;
                Ds[i] = in ? D[(size_t)h * T + i0 + i] : 0.0f;
            }
            __syncthreads();
            if (!active) continue;
            int tq = i0 + lane;
            float p = 0.0f, ds = 0.0f;
            if (tq < T && j <= tq) {
                float qk = 0.0f, dp = 0.0f;
                for (int d = 0; d < hd; d++) {
                    qk += Qs[lane * ld + d] * Kw[w * hd + d];
                    dp += Os[lane * ld + d] * Vw[w * hd + d];
                }
                p = expf(qk * scale - Ls[lane]);
                ds = p * (dp - Ds[lane]) * scale;
            }
            for (int i = 0; i < ATT_BK; i++) {
                float pi = __shfl_sync(0xffffffffu, p, i), dsi = __shfl_sync(0xffffffffu, ds, i);
#pragma unroll
                for (int u = 0; u < ATT_DPL; u++) {
                    int d = lane + 32 * u;
                    if (d < hd) {
                        av[u] += pi * Os[i * ld + d];
                        ak[u] += dsi * Qs[i * ld + d];
                    }
                }
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int u = 0; u < ATT_DPL; u++) {
        int d = lane + 32 * u;
        if (d < hd) {
            dk[(size_t)j * ldkv + (size_t)g * hd + d] = ak[u];
            dv[(size_t)j * ldkv + (size_t)g * hd + d] = av[u];
        }
    }
}

/* mf_attention_bwd (pos0 = 0): dq, dk, dv written */
void mf_cuda_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                           const float *v, int T, int n_heads, int n_kv, int hd) {
    if (T <= 0) return;
    const char *op = "attention_bwd";
    check_shape(op, T, n_heads, n_kv, hd);
    int H = n_heads, KV = n_kv;
    float *lse = (float *)mf_cuda_scratch(MF_CS_A, (size_t)H * T * sizeof(float));
    float *o = (float *)mf_cuda_scratch(MF_CS_B, (size_t)T * H * hd * sizeof(float));
    float *D = (float *)mf_cuda_scratch(MF_CS_C, (size_t)H * T * sizeof(float));
    attn_fwd(op, o, lse, q, k, v, T, 0, H, KV, hd);
    size_t threads = (size_t)T * H * 32;
    attn_rowdot_kernel<<<cu_blocks(threads, MF_BLOCK), MF_BLOCK, 0, cu_stream()>>>(D, dout, o, T, H, hd);
    CUDA_LAUNCHED(op);
    unsigned tiles = (unsigned)((T + ATT_WARPS - 1) / ATT_WARPS);
    size_t sm = dq_smem(hd);
    smem_allow(op, (const void *)attn_dq_kernel, sm);
    attn_dq_kernel<<<dim3(tiles, (unsigned)H), ATT_WARPS * 32, sm, cu_stream()>>>(dq, dout, q, k, v, lse, D, T, H, KV,
                                                                                   hd);
    CUDA_LAUNCHED(op);
    sm = dkv_smem(hd);
    smem_allow(op, (const void *)attn_dkv_kernel, sm);
    attn_dkv_kernel<<<dim3(tiles, (unsigned)KV), ATT_WARPS * 32, sm, cu_stream()>>>(dk, dv, dout, q, k, v, lse, D, T,
                                                                                    H, KV, hd);
    CUDA_LAUNCHED(op);
}
