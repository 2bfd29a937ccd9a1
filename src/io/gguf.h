/* gguf.h - read-only GGUF v2/v3 reader (little-endian), memory-mapped.
 *
 * mf_gguf_open maps the file and validates all of it against the file size
 * before returning: header, every metadata key/value (nested arrays too),
 * every tensor info (dims, type, sizes), and that each tensor's data is
 * aligned and lies inside the file. Tensor data pointers point into the
 * mapping and stay valid until mf_gguf_close. Metadata strings and arrays are
 * copied (aligned, NUL-terminated) and owned by the mf_gguf.
 *
 * Shapes follow ggml: ne[0] is the contiguous dimension, so a PyTorch
 * Linear weight [out, in] appears as ne = {in, out, 1, 1}. */
#ifndef MF_GGUF_H
#define MF_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* GGUF metadata value types. */
enum mf_gguf_vtype {
    MF_GGUF_UINT8 = 0,
    MF_GGUF_INT8 = 1,
    MF_GGUF_UINT16 = 2,
    MF_GGUF_INT16 = 3,
    MF_GGUF_UINT32 = 4,
    MF_GGUF_INT32 = 5,
    MF_GGUF_FLOAT32 = 6,
    MF_GGUF_BOOL = 7,
    MF_GGUF_STRING = 8,
    MF_GGUF_ARRAY = 9,
    MF_GGUF_UINT64 = 10,
    MF_GGUF_INT64 = 11,
    MF_GGUF_FLOAT64 = 12,
};

#define MF_GGUF_DEFAULT_ALIGNMENT 32

typedef struct mf_gguf_tensor {
    const char *name;
    int n_dims;       /* 0..4 */
    int64_t ne[4];    /* unused dims are 1 */
    uint32_t type;    /* mf_ggml_type */
    uint64_t offset;  /* relative to the data section */
    const void *data; /* into the mapping */
    size_t nbytes;
} mf_gguf_tensor;

typedef struct mf_gguf mf_gguf; /* opaque */

/* NULL with err set ("<path>: <problem>") if the file is unreadable or invalid. */
mf_gguf *mf_gguf_open(const char *path, mf_err *err);
void mf_gguf_close(mf_gguf *g);

const char *mf_gguf_path(const mf_gguf *g);
uint32_t mf_gguf_version(const mf_gguf *g);
uint32_t mf_gguf_alignment(const mf_gguf *g);
size_t mf_gguf_data_offset(const mf_gguf *g); /* file offset of the data section */
size_t mf_gguf_file_size(const mf_gguf *g);

/* ---- tensors ---- */
size_t mf_gguf_n_tensors(const mf_gguf *g);
const mf_gguf_tensor *mf_gguf_tensor_at(const mf_gguf *g, size_t i);           /* NULL if i out of range */
const mf_gguf_tensor *mf_gguf_find_tensor(const mf_gguf *g, const char *name); /* NULL if absent */

/* ---- metadata ---- */
size_t mf_gguf_n_kv(const mf_gguf *g);
const char *mf_gguf_kv_key(const mf_gguf *g, size_t i); /* file order; NULL if out of range */
int mf_gguf_has_key(const mf_gguf *g, const char *key);

/* Type of a key: returns its mf_gguf_vtype, or -1 if absent. For arrays,
 * *elem_type (if non-NULL) gets the element type and *n (if non-NULL) the
 * element count; for scalars *elem_type = the type and *n = 1. */
int mf_gguf_kv_type(const mf_gguf *g, const char *key, uint32_t *elem_type, size_t *n);

/* The serialized value of key i as it appears in the file (after the uint32
 * value type, e.g. for copying a key verbatim into another GGUF). */
int mf_gguf_kv_raw(const mf_gguf *g, size_t i, uint32_t *type, const void **bytes, size_t *nbytes);

/* Getters return 0 on success, -1 with err set if the key is missing or has
 * an incompatible type (the message names the key and the file). Integer
 * getters accept any integer type whose value fits. */
int mf_gguf_get_u32(const mf_gguf *g, const char *key, uint32_t *out, mf_err *err);
int mf_gguf_get_i32(const mf_gguf *g, const char *key, int32_t *out, mf_err *err);
int mf_gguf_get_u64(const mf_gguf *g, const char *key, uint64_t *out, mf_err *err);
int mf_gguf_get_i64(const mf_gguf *g, const char *key, int64_t *out, mf_err *err);
int mf_gguf_get_f32(const mf_gguf *g, const char *key, float *out, mf_err *err);  /* F32 or F64 */
int mf_gguf_get_f64(const mf_gguf *g, const char *key, double *out, mf_err *err); /* F32 or F64 */
int mf_gguf_get_bool(const mf_gguf *g, const char *key, int *out, mf_err *err);
/* NUL-terminated copy owned by g (the value may itself contain NUL bytes: *len gives its length). */
int mf_gguf_get_str(const mf_gguf *g, const char *key, const char **out, mf_err *err);
int mf_gguf_get_str_len(const mf_gguf *g, const char *key, const char **out, size_t *len, mf_err *err);
/* Array of n NUL-terminated strings owned by g; strings may contain any bytes. */
int mf_gguf_get_str_array(const mf_gguf *g, const char *key, const char *const **out, size_t *n, mf_err *err);
/* Same, with each string's length in bytes (lens[i], excluding the NUL). */
int mf_gguf_get_str_array_lens(const mf_gguf *g, const char *key, const char *const **out, const size_t **lens,
                               size_t *n, mf_err *err);
int mf_gguf_get_f32_array(const mf_gguf *g, const char *key, const float **out, size_t *n, mf_err *err);
/* INT32 arrays, or UINT32 arrays whose values all fit in int32. */
int mf_gguf_get_i32_array(const mf_gguf *g, const char *key, const int32_t **out, size_t *n, mf_err *err);

/* Write dst: a vocabulary-only GGUF v3 file (no tensors) holding the
 * general.architecture key and every tokenizer.* key of g, copied verbatim -
 * what mf_gguf_file_tokenizer reads. A model directory can carry its
 * tokenizer this way without the weights of the model it came from. */
int mf_gguf_write_vocab(const mf_gguf *g, const char *dst, mf_err *err);

#endif
