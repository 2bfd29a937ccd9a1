/* dequant.h - ggml tensor types: ids, block geometry and dequantization to f32.
 *
 * Bit-exact with llama.cpp's reference dequantize_row_* (ggml-quants.c) for
 * F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
 * A row of n values of type t occupies n / block_size(t) * type_size(t) bytes;
 * blocks are little-endian and may sit at any byte address. */
#ifndef MF_DEQUANT_H
#define MF_DEQUANT_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* ggml type ids (stable values from ggml.h). */
typedef enum mf_ggml_type {
    MF_GGML_F32 = 0,
    MF_GGML_F16 = 1,
    MF_GGML_Q4_0 = 2,
    MF_GGML_Q4_1 = 3,
    MF_GGML_Q5_0 = 6,
    MF_GGML_Q5_1 = 7,
    MF_GGML_Q8_0 = 8,
    MF_GGML_Q2_K = 10,
    MF_GGML_Q3_K = 11,
    MF_GGML_Q4_K = 12,
    MF_GGML_Q5_K = 13,
    MF_GGML_Q6_K = 14,
    MF_GGML_BF16 = 30,
} mf_ggml_type;

#define MF_QK_K 256 /* values per K-quant super-block */

/* "Q4_K" etc.; NULL if t is not one of the supported types above. */
const char *mf_ggml_type_name(uint32_t t);

/* Values per block (1 for F32/F16/BF16, 32, or 256); 0 if unsupported. */
int mf_ggml_block_size(uint32_t t);

/* Bytes per block; 0 if unsupported. */
size_t mf_ggml_type_size(uint32_t t);

/* Bytes taken by n values of type t. -1 (err set) if t is unsupported, n < 0,
 * n is not a multiple of the block size, or the size overflows size_t. */
int mf_ggml_row_bytes(uint32_t t, int64_t n, size_t *out, mf_err *err);

/* Dequantize n contiguous values (n a multiple of the block size):
 * src [n / block_size blocks] -> dst [n] f32. -1 with err set on bad t or n. */
int mf_dequantize(uint32_t t, const void *src, float *dst, int64_t n, mf_err *err);

/* Dequantize n_rows rows of n_per_row values each (rows packed back to back,
 * each row_bytes(t, n_per_row) long): src -> dst [n_rows, n_per_row].
 * Rows are split across OpenMP threads. */
int mf_dequantize_rows(uint32_t t, const void *src, float *dst, int64_t n_rows, int64_t n_per_row, mf_err *err);

#endif
