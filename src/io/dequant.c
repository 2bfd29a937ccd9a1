/* dequant.c - ggml block formats -> f32, mirroring ggml-quants.c dequantize_row_*.
 *
 * Every block function reads its fields bytewise (blocks may be unaligned)
 * and evaluates the same float expressions, in the same order, as the
 * reference, so results are bit-identical (the build uses ISO C, so no FMA
 * contraction). Block layouts (ggml-common.h, QK_K = 256):
 *   Q4_0 18 B: half d; u8 qs[16]           Q4_1 20 B: half d, m; u8 qs[16]
 *   Q5_0 22 B: half d; u8 qh[4]; qs[16]     Q5_1 24 B: half d, m; u8 qh[4]; qs[16]
 *   Q8_0 34 B: half d; i8 qs[32]
 *   Q2_K 84 B: u8 scales[16]; qs[64]; half d, dmin
 *   Q3_K 110 B: u8 hmask[32]; qs[64]; scales[12]; half d
 *   Q4_K 144 B: half d, dmin; u8 scales[12]; qs[128]
 *   Q5_K 176 B: half d, dmin; u8 scales[12]; qh[32]; qs[128]
 *   Q6_K 210 B: u8 ql[128]; qh[64]; i8 scales[16]; half d */
#include "io/dequant.h"

#include <string.h>

#include "util/half.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

/* mf_err_set/prefix, as an expression the compiler knows is -1. */
#define FAIL(...) (mf_err_set(__VA_ARGS__), -1)

typedef struct type_info {
    uint32_t id;
    const char *name;
    int block;   /* values per block */
    size_t size; /* bytes per block */
} type_info;

static const type_info TYPES[] = {
    {MF_GGML_F32, "F32", 1, 4},       {MF_GGML_F16, "F16", 1, 2},       {MF_GGML_Q4_0, "Q4_0", 32, 18},
    {MF_GGML_Q4_1, "Q4_1", 32, 20},   {MF_GGML_Q5_0, "Q5_0", 32, 22},   {MF_GGML_Q5_1, "Q5_1", 32, 24},
    {MF_GGML_Q8_0, "Q8_0", 32, 34},   {MF_GGML_Q2_K, "Q2_K", 256, 84},  {MF_GGML_Q3_K, "Q3_K", 256, 110},
    {MF_GGML_Q4_K, "Q4_K", 256, 144}, {MF_GGML_Q5_K, "Q5_K", 256, 176}, {MF_GGML_Q6_K, "Q6_K", 256, 210},
    {MF_GGML_BF16, "BF16", 1, 2},
};

static const type_info *find_type(uint32_t t) {
    for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++)
        if (TYPES[i].id == t) return &TYPES[i];
    return NULL;
}

const char *mf_ggml_type_name(uint32_t t) {
    const type_info *ti = find_type(t);
    return ti ? ti->name : NULL;
}

int mf_ggml_block_size(uint32_t t) {
    const type_info *ti = find_type(t);
    return ti ? ti->block : 0;
}

size_t mf_ggml_type_size(uint32_t t) {
    const type_info *ti = find_type(t);
    return ti ? ti->size : 0;
}

int mf_ggml_row_bytes(uint32_t t, int64_t n, size_t *out, mf_err *err) {
    const type_info *ti = find_type(t);
    if (!ti) return FAIL(err, "unsupported ggml type %u", t);
    if (n < 0) return FAIL(err, "%s: negative element count %lld", ti->name, (long long)n);
    if (n % ti->block)
        return FAIL(err, "%s: %lld values is not a multiple of the block size %d", ti->name, (long long)n, ti->block);
    uint64_t nb = (uint64_t)(n / ti->block);
    if (nb > SIZE_MAX / ti->size)
        return FAIL(err, "%s: %lld values overflow the addressable size", ti->name, (long long)n);
    *out = (size_t)nb * ti->size;
    return 0;
}

/* ---- little-endian field reads ---- */

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline float h2f(const uint8_t *p) { return mf_fp16_to_f32(rd16(p)); }

/* ---- 32-value blocks ---- */

/* x [nb blocks of 18 B] -> y [nb*32] */
static void deq_q4_0(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 18, y += 32) {
        const float d = h2f(x);
        const uint8_t *qs = x + 2;
        for (int j = 0; j < 16; j++) {
            const int x0 = (qs[j] & 0x0F) - 8;
            const int x1 = (qs[j] >> 4) - 8;
            y[j] = x0 * d;
            y[j + 16] = x1 * d;
        }
    }
}

static void deq_q4_1(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 20, y += 32) {
        const float d = h2f(x), m = h2f(x + 2);
        const uint8_t *qs = x + 4;
        for (int j = 0; j < 16; j++) {
            const int x0 = qs[j] & 0x0F;
            const int x1 = qs[j] >> 4;
            y[j] = x0 * d + m;
            y[j + 16] = x1 * d + m;
        }
    }
}

static void deq_q5_0(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 22, y += 32) {
        const float d = h2f(x);
        const uint32_t qh = rd32(x + 2);
        const uint8_t *qs = x + 6;
        for (int j = 0; j < 16; j++) {
            const uint8_t xh0 = ((qh >> (j + 0)) << 4) & 0x10;
            const uint8_t xh1 = ((qh >> (j + 12))) & 0x10;
            const int x0 = ((qs[j] & 0x0F) | xh0) - 16;
            const int x1 = ((qs[j] >> 4) | xh1) - 16;
            y[j] = x0 * d;
            y[j + 16] = x1 * d;
        }
    }
}

static void deq_q5_1(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 24, y += 32) {
        const float d = h2f(x), m = h2f(x + 2);
        const uint32_t qh = rd32(x + 4);
        const uint8_t *qs = x + 8;
        for (int j = 0; j < 16; j++) {
            const uint8_t xh0 = ((qh >> (j + 0)) << 4) & 0x10;
            const uint8_t xh1 = ((qh >> (j + 12))) & 0x10;
            const int x0 = (qs[j] & 0x0F) | xh0;
            const int x1 = (qs[j] >> 4) | xh1;
            y[j] = x0 * d + m;
            y[j + 16] = x1 * d + m;
        }
    }
}

static void deq_q8_0(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 34, y += 32) {
        const float d = h2f(x);
        const int8_t *qs = (const int8_t *)(x + 2);
        for (int j = 0; j < 32; j++) y[j] = qs[j] * d;
    }
}

/* ---- 256-value K-quant super-blocks ---- */

static void deq_q2_k(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 84) {
        const uint8_t *scales = x, *q = x + 16;
        const float d = h2f(x + 80), min = h2f(x + 82);
        int is = 0;
        for (int n = 0; n < MF_QK_K; n += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; half++) {
                    const uint8_t sc = scales[is++];
                    const float dl = d * (sc & 0xF), ml = min * (sc >> 4);
                    const uint8_t *qq = q + 16 * half;
                    for (int l = 0; l < 16; l++) *y++ = dl * ((int8_t)((qq[l] >> shift) & 3)) - ml;
                }
            }
        }
    }
}

/* The 16 6-bit Q3_K scales, minus 32: low 4 bits in bytes 0..7 (two per
 * byte), high 2 bits in bytes 8..11. */
static void q3_k_scales(const uint8_t *b, int s[16]) {
    for (int i = 0; i < 16; i++) {
        const int lo = i < 8 ? (b[i] & 0xF) : (b[i - 8] >> 4);
        const int hi = (b[8 + i % 4] >> (2 * (i / 4))) & 3;
        s[i] = (int8_t)(lo | (hi << 4)) - 32;
    }
}

static void deq_q3_k(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 110) {
        const uint8_t *hm = x, *q = x + 32;
        const float d_all = h2f(x + 108);
        int sc[16];
        q3_k_scales(x + 96, sc);
        int is = 0;
        uint8_t m = 1;
        for (int n = 0; n < MF_QK_K; n += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int half = 0; half < 2; half++) {
                    const float dl = d_all * sc[is++];
                    const uint8_t *qq = q + 16 * half, *hh = hm + 16 * half;
                    for (int l = 0; l < 16; l++) *y++ = dl * ((int8_t)((qq[l] >> shift) & 3) - ((hh[l] & m) ? 0 : 4));
                }
            }
        }
    }
}

/* get_scale_min_k4: 6-bit scale and min j (0..7) from the 12-byte packing. */
static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
    }
}

static void deq_q4_k(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 144) {
        const float d = h2f(x), min = h2f(x + 2);
        const uint8_t *scales = x + 4, *q = x + 16;
        for (int j = 0, is = 0; j < MF_QK_K; j += 64, q += 32, is += 2) {
            uint8_t sc, m;
            scale_min_k4(is + 0, scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            scale_min_k4(is + 1, scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

static void deq_q5_k(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 176) {
        const float d = h2f(x), min = h2f(x + 2);
        const uint8_t *scales = x + 4, *qh = x + 16, *ql = x + 48;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < MF_QK_K; j += 64, ql += 32, is += 2, u1 <<= 2, u2 <<= 2) {
            uint8_t sc, m;
            scale_min_k4(is + 0, scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            scale_min_k4(is + 1, scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

static void deq_q6_k(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 210) {
        const float d = h2f(x + 208);
        const uint8_t *ql = x, *qh = x + 128;
        const int8_t *sc = (const int8_t *)(x + 192);
        for (int n = 0; n < MF_QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int8_t q1 = (int8_t)((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int8_t q3 = (int8_t)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

/* ---- plain float formats ---- */

static void deq_f32(const uint8_t *x, float *y, int64_t n) { memcpy(y, x, (size_t)n * 4); }

static void deq_f16(const uint8_t *x, float *y, int64_t n) {
    int64_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(x + 2 * i));
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(h));
    }
#endif
    for (; i < n; i++) y[i] = mf_fp16_to_f32(rd16(x + 2 * i));
}

static void deq_bf16(const uint8_t *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)rd16(x + 2 * i) << 16;
        memcpy(y + i, &u, 4);
    }
}

typedef void (*deq_fn)(const uint8_t *x, float *y, int64_t nblocks);

static deq_fn find_fn(uint32_t t) {
    switch (t) {
    case MF_GGML_F32: return deq_f32;
    case MF_GGML_F16: return deq_f16;
    case MF_GGML_BF16: return deq_bf16;
    case MF_GGML_Q4_0: return deq_q4_0;
    case MF_GGML_Q4_1: return deq_q4_1;
    case MF_GGML_Q5_0: return deq_q5_0;
    case MF_GGML_Q5_1: return deq_q5_1;
    case MF_GGML_Q8_0: return deq_q8_0;
    case MF_GGML_Q2_K: return deq_q2_k;
    case MF_GGML_Q3_K: return deq_q3_k;
    case MF_GGML_Q4_K: return deq_q4_k;
    case MF_GGML_Q5_K: return deq_q5_k;
    case MF_GGML_Q6_K: return deq_q6_k;
    default: return NULL;
    }
}

int mf_dequantize(uint32_t t, const void *src, float *dst, int64_t n, mf_err *err) {
    size_t nbytes;
    if (mf_ggml_row_bytes(t, n, &nbytes, err)) return -1;
    find_fn(t)((const uint8_t *)src, dst, n / mf_ggml_block_size(t));
    return 0;
}

int mf_dequantize_rows(uint32_t t, const void *src, float *dst, int64_t n_rows, int64_t n_per_row, mf_err *err) {
    size_t row_bytes;
    if (mf_ggml_row_bytes(t, n_per_row, &row_bytes, err)) return -1;
    if (n_rows < 0) return FAIL(err, "%s: negative row count %lld", mf_ggml_type_name(t), (long long)n_rows);
    if (n_per_row && (uint64_t)n_rows > (uint64_t)INT64_MAX / (uint64_t)n_per_row)
        return FAIL(err, "%s: %lld x %lld values overflow", mf_ggml_type_name(t), (long long)n_rows,
                    (long long)n_per_row);
    if (row_bytes && (uint64_t)n_rows > SIZE_MAX / row_bytes)
        return FAIL(err, "%s: %lld rows of %zu bytes overflow", mf_ggml_type_name(t), (long long)n_rows, row_bytes);
    const deq_fn fn = find_fn(t);
    const int64_t nb = n_per_row / mf_ggml_block_size(t);
    const uint8_t *s = src;
#pragma omp parallel for schedule(static) if (n_rows * n_per_row >= (1 << 18))
    for (int64_t r = 0; r < n_rows; r++) fn(s + (size_t)r * row_bytes, dst + r * n_per_row, nb);
    return 0;
}
