/* elementwise.cu - SwiGLU (forward, backward), add, and the embedding
 * (float and 16-bit tables, backward) (cpu.c, cpu_backward.c). Token ids are
 * host memory: they are copied into a scratch buffer first. */
#include <stdlib.h>

#include "cuda/common.cuh"

#define GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* cpu_swiglu: h = g / (1 + exp(-g)) * u */
__global__ void swiglu_kernel(float *h, const float *g, const float *u, size_t n) {
    GRID_STRIDE(i, n) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* mf_swiglu_bwd: s = sigmoid(g); dg = dh u s (1 + g (1 - s)); du = dh g s (written) */
__global__ void swiglu_bwd_kernel(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n) {
    GRID_STRIDE(i, n) {
        float sg = 1.0f / (1.0f + expf(-g[i]));
        float silu = g[i] * sg;
        float d = dh[i];
        dg[i] = d * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
        du[i] = d * silu;
    }
}

/* cpu_add: y += x */
__global__ void add_kernel(float *y, const float *x, size_t n) { GRID_STRIDE(i, n) y[i] += x[i]; }

void mf_cuda_swiglu(float *h, const float *g, const float *u, size_t n) {
    if (!n) return;
    swiglu_kernel<<<cu_blocks(n, MF_BLOCK), MF_BLOCK, 0, cu_stream()>>>(h, g, u, n);
    CUDA_LAUNCHED("swiglu");
}
void mf_cuda_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n) {
    if (!n) return;
    swiglu_bwd_kernel<<<cu_blocks(n, MF_BLOCK), MF_BLOCK, 0, cu_stream()>>>(dg, du, dh, g, u, n);
    CUDA_LAUNCHED("swiglu_bwd");
}
void mf_cuda_add(float *y, const float *x, size_t n) {
    if (!n) return;
    add_kernel<<<cu_blocks(n, MF_BLOCK), MF_BLOCK, 0, cu_stream()>>>(y, x, n);
    CUDA_LAUNCHED("add");
}

/* --------------------------------------------------------------- embedding */

/* host ids[n] in the ids scratch buffer */
static int32_t *ids_to_dev(const char *op, const int32_t *ids, size_t n) {
    int32_t *d = (int32_t *)mf_cuda_scratch(MF_CS_IDS, n * sizeof *d);
    mf_cuda_to_dev(op, d, ids, n * sizeof *d);
    return d;
}

/* cpu_embed: x[t][c] = table[ids[t]][c]; dt 0: float table, else a 16-bit one (bf16 1, f16 2) */
__global__ void embed_kernel(float *x, const void *table, int kind, const int32_t *ids, int T, int C) {
    size_t n = (size_t)T * C;
    GRID_STRIDE(i, n) {
        int t = (int)(i / C), c = (int)(i % C);
        size_t src = (size_t)ids[t] * C + c;
        if (kind == 0) x[i] = ((const float *)table)[src];
        else {
            uint16_t b = ((const uint16_t *)table)[src];
            x[i] = kind == 1 ? __bfloat162float(__ushort_as_bfloat16(b)) : __half2float(__ushort_as_half(b));
        }
    }
}

void mf_cuda_embed(float *x, const float *table, const int32_t *ids, int T, int C) {
    if (T <= 0 || C <= 0) return;
    int32_t *d = ids_to_dev("embed", ids, (size_t)T);
    embed_kernel<<<cu_blocks((size_t)T * C, MF_BLOCK), MF_BLOCK, 0, cu_stream()>>>(x, table, 0, d, T, C);
    CUDA_LAUNCHED("embed");
}

void mf_cuda_embed_h(float *x, const uint16_t *table, mf_dtype dt, const int32_t *ids, int T, int C) {
    if (dt != MF_DT_BF16 && dt != MF_DT_F16) mf_fatal("cuda backend: embed_h: table type %d is not bf16 or f16", (int)dt);
    if (T <= 0 || C <= 0) return;
    int32_t *d = ids_to_dev("embed_h", ids, (size_t)T);
    embed_kernel<<<cu_blocks((size_t)T * C, MF_BLOCK), MF_BLOCK, 0, cu_stream()>>>(x, table, dt == MF_DT_BF16 ? 1 : 2,
                                                                                    d, T, C);
    CUDA_LAUNCHED("embed_h");
}

/* mf_embed_bwd: dE[V][C] row id += the rows dx[t] of the tokens with that id, summed from zero in token
 * order; ids outside [0, V) ignored. The host groups the tokens by id (ids are host memory) exactly as
 * the CPU does; ord_t/ord_id[n] list the tokens id by id, start[ng + 1] where each id's run begins. One
 * block per id, threads over C: distinct ids write distinct rows (no atomics). */
__global__ void embed_bwd_kernel(float *dE, const float *dx, const int32_t *ord_t, const int32_t *ord_id,
                                 const int32_t *start, int C) {
    int gi = blockIdx.x;
    int a = start[gi], b = start[gi + 1];
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float row = dx[(size_t)ord_t[a] * C + c];
        for (int i = a + 1; i < b; i++) row += dx[(size_t)ord_t[i] * C + c];
        dE[(size_t)ord_id[a] * C + c] += row;
    }
}

typedef struct {
    int32_t id, t;
} id_pos;
static int cmp_id_pos(const void *a, const void *b) {
    const id_pos *x = (const id_pos *)a, *y = (const id_pos *)b;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return (x->t > y->t) - (x->t < y->t);
}

void mf_cuda_embed_bwd(float *dE, const float *dx, const int32_t *ids, int T, int C, int V) {
    if (T <= 0 || C <= 0) return;
    id_pos *ord = (id_pos *)mf_malloc((size_t)T * sizeof *ord);
    int n = 0;
    for (int t = 0; t < T; t++)
        if (ids[t] >= 0 && ids[t] < V) ord[n++] = (id_pos){ids[t], t};
    if (n == 0) {
        free(ord);
        return;
    }
    qsort(ord, (size_t)n, sizeof *ord, cmp_id_pos);
    /* one host array [n tokens | n ids | ng + 1 starts], one copy */
    int32_t *h = (int32_t *)mf_malloc((size_t)(3 * n + 1) * sizeof *h);
    int ng = 0;
    for (int i = 0; i < n; i++) {
        h[i] = ord[i].t;
        h[n + i] = ord[i].id;
        if (i == 0 || ord[i].id != ord[i - 1].id) h[2 * n + ng++] = i;
    }
    h[2 * n + ng] = n;
    size_t len = (size_t)(2 * n + ng + 1);
    int32_t *d = ids_to_dev("embed_bwd", h, len);
    free(h);
    free(ord);
    embed_bwd_kernel<<<(unsigned)ng, MF_BLOCK, 0, cu_stream()>>>(dE, dx, d, d + n, d + 2 * n, C);
    CUDA_LAUNCHED("embed_bwd");
}
