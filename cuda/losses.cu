/* losses.cu - logsumexp and the training losses with their gradients, all on
 * the device (cpu.c cpu_logsumexp, cpu_backward.c mf_loss_*, cpu_fuse.c
 * mf_loss_kl_batch). One block per row: the row max and the sum of exp (float
 * exp, double sums), then the per-element gradient. Per-row losses go to a
 * double scratch buffer and are summed on the device in a fixed order; only
 * the scalar comes back (lse: its T values). Targets and top-K ids are host
 * memory and are copied into scratch first. */
#include "cuda/common.cuh"

#define HID_EPS 1e-12

/* row_stats: m = max_i z[i] inv_tau (float), s = sum_i exp(z[i] inv_tau - m) (float exp, double sum); all threads */
__device__ void row_stats(const float *z, int V, float inv_tau, float *m_out, double *s_out, float *shf,
                          double *shd) {
    float m = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, z[i] * inv_tau);
    m = block_max(m, shf);
    float part = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) part += expf(z[i] * inv_tau - m);
    *s_out = block_sum((double)part, shd);
    *m_out = m;
}

/* cpu_logsumexp: lse[t] = m + log s */
__global__ void logsumexp_kernel(double *lse, const float *logits, int V) {
    __shared__ float shf[32];
    __shared__ double shd[32];
    int t = blockIdx.x;
    float m;
    double s;
    row_stats(logits + (size_t)t * V, V, 1.0f, &m, &s, shf, shd);
    if (threadIdx.x == 0) lse[t] = (double)m + log(s);
}

void mf_cuda_logsumexp(const float *logits, int T, int V, double *lse) {
    if (T <= 0) return;
    double *d = (double *)mf_cuda_scratch(MF_CS_B, (size_t)T * sizeof(double));
    logsumexp_kernel<<<T, MF_BLOCK, 0, cu_stream()>>>(d, logits, V);
    CUDA_LAUNCHED("logsumexp");
    mf_cuda_to_host("logsumexp", lse, d, (size_t)T * sizeof(double));
}

/* ------------------------------------------------------- cross-entropy */

/* mf_loss_ce, row t: rl = lse - z[y] and dlogits = exp(z - m) / (s norm) - onehot / norm for 0 <= y < V;
 * rows with another target: rl = 0, gradient 0 */
__global__ void loss_ce_kernel(double *rl, float *dlogits, const float *logits, const int32_t *targets, int V,
                               double norm) {
    __shared__ float shf[32];
    __shared__ double shd[32];
    int t = blockIdx.x, y = targets[t];
    const float *z = logits + (size_t)t * V;
    float *d = dlogits ? dlogits + (size_t)t * V : NULL;
    if (y < 0 || y >= V) { /* uniform over the block */
        if (d)
            for (int i = threadIdx.x; i < V; i += blockDim.x) d[i] = 0.0f;
        if (threadIdx.x == 0) rl[t] = 0.0;
        return;
    }
    float m;
    double s;
    row_stats(z, V, 1.0f, &m, &s, shf, shd);
    if (threadIdx.x == 0) rl[t] = (double)m + log(s) - z[y];
    if (!d) return;
    float c = (float)(1.0 / (s * norm)), inv_norm = (float)(1.0 / norm);
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float g = __fmul_rn(expf(z[i] - m), c);
        d[i] = i == y ? __fsub_rn(g, inv_norm) : g;
    }
}

/* the row losses rl[T] (device) summed, over norm */
static double finish(const char *op, const double *rl, int T, double norm) {
    return cu_sum_doubles(op, rl, (size_t)T) / norm;
}

/* loss_ce_kernel over T rows (T > 0): the targets copied to the device, the row losses (device
 * doubles, scratch) returned; dlogits NULL: no gradient */
static double *ce_rows(const char *op, const float *logits, const int32_t *targets, int T, int V, double norm,
                       float *dlogits) {
    int32_t *y = (int32_t *)mf_cuda_scratch(MF_CS_IDS, (size_t)T * sizeof *y);
    mf_cuda_to_dev(op, y, targets, (size_t)T * sizeof *y);
    double *rl = (double *)mf_cuda_scratch(MF_CS_B, (size_t)T * sizeof *rl);
    loss_ce_kernel<<<T, MF_BLOCK, 0, cu_stream()>>>(rl, dlogits, logits, y, V, norm);
    CUDA_LAUNCHED(op);
    return rl;
}

/* cpu.c cpu_nll: the cross-entropy rows without the gradient; T doubles come back */
void mf_cuda_nll(const float *logits, const int32_t *targets, int T, int V, double *nll) {
    if (T <= 0) return;
    mf_cuda_to_host("nll", nll, ce_rows("nll", logits, targets, T, V, 1.0, NULL), (size_t)T * sizeof *nll);
}

double mf_cuda_loss_ce(const float *logits, const int32_t *targets, int T, int V, double norm, float *dlogits) {
    int cnt = 0;
    for (int t = 0; t < T; t++) cnt += targets[t] >= 0 && targets[t] < V;
    if (norm <= 0) norm = cnt > 0 ? cnt : 1;
    if (T <= 0) return 0.0;
    return finish("loss_ce", ce_rows("loss_ce", logits, targets, T, V, norm, dlogits), T, norm);
}

/* ------------------------------------------------------------------- KL */

/* mf_loss_kl, row t: p = softmax(z / tau); rl = tau^2 sum_i p_t (log p_t - log p_s); dzs = tau (p_s - p_t) / norm */
__global__ void loss_kl_kernel(double *rl, float *dzs, const float *zs, const float *zt, int V, float tau,
                               float gscale) {
    __shared__ float shf[32];
    __shared__ double shd[32];
    int t = blockIdx.x;
    const float *a = zs + (size_t)t * V, *b = zt + (size_t)t * V;
    float it = 1.0f / tau, ms, mt;
    double ss, st;
    row_stats(a, V, it, &ms, &ss, shf, shd);
    row_stats(b, V, it, &mt, &st, shf, shd);
    double dl = ((double)mt + log(st)) - ((double)ms + log(ss)), ist = 1.0 / st, iss = 1.0 / ss, kl = 0.0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        double pt = expf(b[i] * it - mt) * ist;
        kl += pt * (((double)b[i] - a[i]) * it - dl);
        if (dzs) dzs[(size_t)t * V + i] = (float)((expf(a[i] * it - ms) * iss - pt) * gscale);
    }
    kl = block_sum(kl, shd);
    if (threadIdx.x == 0) rl[t] = (double)tau * tau * kl;
}

double mf_cuda_loss_kl(const float *zs, const float *zt, int T, int V, float tau, double norm, float *dzs) {
    if (norm <= 0) norm = T > 0 ? T : 1;
    if (T <= 0) return 0.0;
    double *rl = (double *)mf_cuda_scratch(MF_CS_B, (size_t)T * sizeof *rl);
    loss_kl_kernel<<<T, MF_BLOCK, 0, cu_stream()>>>(rl, dzs, zs, zt, V, tau, (float)(tau / norm));
    CUDA_LAUNCHED("loss_kl");
    return finish("loss_kl", rl, T, norm);
}

/* (v, i) <- the better of (v, i) and (ov, oi): the larger value, the smaller index on ties;
 * index V is "none". A strict total order, so both lanes of a shuffle agree. */
__device__ __forceinline__ void arg_better(float &v, int &i, float ov, int oi, int V) {
    if (oi != V && (i == V || ov > v || (ov == v && oi < i))) { v = ov; i = oi; }
}

/* the first index of a maximum of z[V] (util/vec.h mf_argmax); every thread gets it. shi holds 32 ints. */
__device__ int block_argmax(const float *z, int V, float *shf, int *shi) {
    float v = -INFINITY;
    int i = V;
    for (int k = threadIdx.x; k < V; k += blockDim.x) arg_better(v, i, z[k], k, V);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) arg_better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o), V);
    __syncthreads(); /* shf/shi may still be read by a previous call */
    if (lane == 0) { shf[w] = v; shi[w] = i; }
    __syncthreads();
    v = lane < nw ? shf[lane] : -INFINITY;
    i = lane < nw ? shi[lane] : V;
    for (int o = 16; o > 0; o >>= 1) arg_better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o), V);
    return i;
}

/* cpu.c cpu_kl_rows, row t: kl = KL(p || q) = E_p[d] + log E_p[exp(-d)], d = zp - zq taken relative
 * to its value at argmax zp, p's weights exp(zp - max) unnormalized (float exp) and both expectations
 * divided by their sum (double); same = argmax zp == argmax zq */
__global__ void kl_rows_kernel(double *kl, int32_t *same, const float *zp, const float *zq, int V) {
    __shared__ float shf[32];
    __shared__ double shd[32];
    __shared__ int shi[32];
    int t = blockIdx.x;
    const float *p = zp + (size_t)t * V, *q = zq + (size_t)t * V;
    int ip = block_argmax(p, V, shf, shi), iq = block_argmax(q, V, shf, shi);
    float m = p[ip];
    double c = (double)p[ip] - q[ip], s = 0, s1 = 0, s2 = 0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        double w = expf(p[i] - m), d = ((double)p[i] - q[i]) - c;
        s += w;
        s1 += w * d;
        s2 += w * expm1(-d);
    }
    s = block_sum(s, shd);
    s1 = block_sum(s1, shd);
    s2 = block_sum(s2, shd);
    if (threadIdx.x == 0) {
        kl[t] = s1 / s + log1p(s2 / s);
        same[t] = ip == iq;
    }
}

void mf_cuda_kl_rows(const float *zp, const float *zq, int T, int V, double *kl, int32_t *same) {
    if (T <= 0) return;
    double *k = (double *)mf_cuda_scratch(MF_CS_B, (size_t)T * (sizeof *k + sizeof *same));
    int32_t *s = (int32_t *)(k + T);
    kl_rows_kernel<<<T, MF_BLOCK, 0, cu_stream()>>>(k, s, zp, zq, V);
    CUDA_LAUNCHED("kl_rows");
    mf_cuda_to_host("kl_rows", kl, k, (size_t)T * sizeof *k);
    mf_cuda_to_host("kl_rows", same, s, (size_t)T * sizeof *s);
}

/* mf_loss_kl_topk, row t: q = softmax(zs / tau) over V, p = softmax(zt_k / tau) over the K (sorted, largest
 * first); rl = tau^2 sum_k p_k (log p_k - log q_id_k); dzs = tau (q - p) / norm (p zero outside the top K) */
__global__ void loss_kl_topk_kernel(double *rl, float *dzs, const float *zs, const int32_t *ids, const float *zt_k,
                                    int V, int K, float tau, float g) {
    __shared__ float shf[32];
    __shared__ double shd[32];
    int t = blockIdx.x;
    const float *a = zs + (size_t)t * V, *b = zt_k + (size_t)t * K;
    const int32_t *id = ids + (size_t)t * K;
    float it = 1.0f / tau, ms;
    double ss;
    row_stats(a, V, it, &ms, &ss, shf, shd);
    double lse_s = ms + log(ss), mt = b[0] * it, st = 0;
    for (int k = threadIdx.x; k < K; k += blockDim.x) st += exp(b[k] * it - mt);
    st = block_sum(st, shd);
    double lse_t = mt + log(st), kl = 0;
    float *d = dzs ? dzs + (size_t)t * V : NULL;
    if (d)
        for (int i = threadIdx.x; i < V; i += blockDim.x) d[i] = (float)(exp(a[i] * it - lse_s) * g);
    __syncthreads(); /* every d[i] written before the top-K entries are lowered (by other threads) */
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        double lp = b[k] * it - lse_t, p = exp(lp), lq = a[id[k]] * it - lse_s;
        kl += p * (lp - lq);
        if (d) d[id[k]] -= (float)(p * g); /* the K ids of a row are distinct */
    }
    kl = block_sum(kl, shd);
    if (threadIdx.x == 0) rl[t] = (double)tau * tau * kl;
}

double mf_cuda_loss_kl_topk(const float *zs, const int32_t *ids, const float *zt_k, int T, int V, int K, float tau,
                            double norm, float *dzs) {
    if (norm <= 0) norm = T > 0 ? T : 1;
    if (T <= 0) return 0.0;
    if (K <= 0) mf_fatal("cuda backend: loss_kl_topk: K = %d", K);
    size_t nk = (size_t)T * K;
    int32_t *did = (int32_t *)mf_cuda_scratch(MF_CS_IDS, nk * sizeof *did);
    mf_cuda_to_dev("loss_kl_topk", did, ids, nk * sizeof *did);
    double *rl = (double *)mf_cuda_scratch(MF_CS_B, (size_t)T * sizeof *rl);
    loss_kl_topk_kernel<<<T, MF_BLOCK, 0, cu_stream()>>>(rl, dzs, zs, did, zt_k, V, K, tau, (float)(tau / norm));
    CUDA_LAUNCHED("loss_kl_topk");
    return finish("loss_kl_topk", rl, T, norm);
}

/* ------------------------------------------------------ hidden states */

/* mf_loss_cosine, row t: rl = 1 - a.b / (|a||b|) (squared norms floored at 1e-12);
 * da = -(b / (|a||b|) - cos a / |a|^2) / norm */
__global__ void loss_cosine_kernel(double *rl, float *da, const float *a, const float *b, int C, double norm) {
    __shared__ double shd[32];
    int t = blockIdx.x;
    const float *x = a + (size_t)t * C, *y = b + (size_t)t * C;
    double xx = 0, yy = 0, xy = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        xx += (double)x[i] * x[i];
        yy += (double)y[i] * y[i];
        xy += (double)x[i] * y[i];
    }
    xx = block_sum(xx, shd);
    yy = block_sum(yy, shd);
    xy = block_sum(xy, shd);
    double na = sqrt(xx > HID_EPS ? xx : HID_EPS), nb = sqrt(yy > HID_EPS ? yy : HID_EPS);
    double cs = xy / (na * nb);
    if (threadIdx.x == 0) rl[t] = 1.0 - cs;
    if (da)
        for (int i = threadIdx.x; i < C; i += blockDim.x)
            da[(size_t)t * C + i] = (float)(-(y[i] / (na * nb) - cs * x[i] / (na * na)) / norm);
}

/* mf_loss_nmse, row t: rl = |a - b|^2 / max(|b|^2, 1e-12); da = 2 (a - b) / |b|^2 / norm */
__global__ void loss_nmse_kernel(double *rl, float *da, const float *a, const float *b, int C, double norm) {
    __shared__ double shd[32];
    int t = blockIdx.x;
    const float *x = a + (size_t)t * C, *y = b + (size_t)t * C;
    double dd = 0, yy = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        double e = (double)x[i] - y[i];
        dd += e * e;
        yy += (double)y[i] * y[i];
    }
    dd = block_sum(dd, shd);
    yy = block_sum(yy, shd);
    if (yy < HID_EPS) yy = HID_EPS;
    if (threadIdx.x == 0) rl[t] = dd / yy;
    if (da)
        for (int i = threadIdx.x; i < C; i += blockDim.x)
            da[(size_t)t * C + i] = (float)(2.0 * ((double)x[i] - y[i]) / yy / norm);
}

double mf_cuda_loss_cosine(const float *a, const float *b, int T, int C, double norm, float *da) {
    if (norm <= 0) norm = T > 0 ? T : 1;
    if (T <= 0) return 0.0;
    double *rl = (double *)mf_cuda_scratch(MF_CS_B, (size_t)T * sizeof *rl);
    loss_cosine_kernel<<<T, MF_BLOCK, 0, cu_stream()>>>(rl, da, a, b, C, norm);
    CUDA_LAUNCHED("loss_cosine");
    return finish("loss_cosine", rl, T, norm);
}

double mf_cuda_loss_nmse(const float *a, const float *b, int T, int C, double norm, float *da) {
    if (norm <= 0) norm = T > 0 ? T : 1;
    if (T <= 0) return 0.0;
    double *rl = (double *)mf_cuda_scratch(MF_CS_B, (size_t)T * sizeof *rl);
    loss_nmse_kernel<<<T, MF_BLOCK, 0, cu_stream()>>>(rl, da, a, b, C, norm);
    CUDA_LAUNCHED("loss_nmse");
    return finish("loss_nmse", rl, T, norm);
}

/* ------------------------------------------------------- FuseGPT batch KL */

/* mf_loss_kl_batch: at every position i of n, softmax over the B rows of S[B][n] and Tt[B][n] (double);
 * part[block] = sum over the block's positions of sum_b t_b (log t_b - log s_b); dS = (s_b - t_b) / norm */
__global__ void loss_kl_batch_kernel(double *part, float *dS, const float *S, const float *Tt, int B, size_t n,
                                     double norm) {
    __shared__ double shd[32];
    double acc = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        double ms = -INFINITY, mt = -INFINITY, ss = 0, st = 0;
        for (int b = 0; b < B; b++) {
            ms = fmax(ms, (double)S[(size_t)b * n + i]);
            mt = fmax(mt, (double)Tt[(size_t)b * n + i]);
        }
        for (int b = 0; b < B; b++) {
            ss += exp(S[(size_t)b * n + i] - ms);
            st += exp(Tt[(size_t)b * n + i] - mt);
        }
        double lzs = ms + log(ss), lzt = mt + log(st);
        for (int b = 0; b < B; b++) {
            double ls = S[(size_t)b * n + i] - lzs, lt = Tt[(size_t)b * n + i] - lzt;
            double pt = exp(lt);
            acc += pt * (lt - ls);
            if (dS) dS[(size_t)b * n + i] = (float)((exp(ls) - pt) / norm);
        }
    }
    acc = block_sum(acc, shd);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

double mf_cuda_loss_kl_batch(const float *S, const float *Tt, int B, size_t n, double norm, float *dS) {
    if (norm <= 0) norm = B > 0 ? B : 1;
    if (B <= 0 || n == 0) return 0.0;
    unsigned blocks = cu_blocks(n, MF_BLOCK);
    if (blocks > 4096) blocks = 4096; /* fixed for a given n: the same order of sums every run */
    double *part = (double *)mf_cuda_scratch(MF_CS_A, (size_t)blocks * sizeof *part);
    loss_kl_batch_kernel<<<blocks, MF_BLOCK, 0, cu_stream()>>>(part, dS, S, Tt, B, n, norm);
    CUDA_LAUNCHED("loss_kl_batch");
    return cu_sum_doubles("loss_kl_batch", part, blocks) / norm;
}

/* ------------------------------------------------ a fixed-order double sum */

__global__ void sum_doubles_kernel(double *out, const double *x, size_t n) {
    __shared__ double shd[32];
    double s = 0;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
    s = block_sum(s, shd);
    if (threadIdx.x == 0) *out = s;
}

double cu_sum_doubles(const char *op, const double *x, size_t n) {
    if (!n) return 0.0;
    double *d = (double *)mf_cuda_scratch(MF_CS_C, sizeof(double)), r;
    sum_doubles_kernel<<<1, 1024, 0, cu_stream()>>>(d, x, n);
    CUDA_LAUNCHED(op);
    mf_cuda_to_host(op, &r, d, sizeof r);
    return r;
}
