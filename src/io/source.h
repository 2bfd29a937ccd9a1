/* source.h - a model file opened for reading, whatever its format.
 *
 * Formats: Hugging Face directory (config.json + safetensors, single or
 * sharded), GGUF v3 (llama/mistral/qwen2 architectures), llama2.c .bin.
 * Tensors are asked for by their Hugging Face name (model.layers.3.mlp.up_proj.weight)
 * and come back as float32 in HF layout: Linear weights [out][in], q/k rows in
 * rotate-half RoPE order. F32 data is returned straight from the memory map
 * when it is aligned and needs no reordering, so a rank touches only the
 * pages of the layers it owns. */
#ifndef MF_SOURCE_H
#define MF_SOURCE_H

#include <stddef.h>
#include <stdint.h>
#include "model/config.h"
#include "tokenizer/tokenizer.h"
#include "util/dtype.h"
#include "util/err.h"

typedef enum { MF_FMT_HF, MF_FMT_GGUF, MF_FMT_LLAMA2C } mf_format;

/* Raw view of a stored tensor, before conversion. */
typedef enum { MF_RAW_ST, MF_RAW_GGML } mf_raw_kind;
typedef struct mf_raw_tensor {
    const void *data;
    size_t nbytes;
    int ndim;
    int64_t shape[4];  /* HF order: outermost first */
    mf_raw_kind kind;
    int dtype;         /* mf_dtype for MF_RAW_ST */
    uint32_t ggml_type; /* for MF_RAW_GGML */
    int rope_heads;    /* > 0: rows are in interleaved (GGUF/llama2.c) RoPE order for this many heads */
} mf_raw_tensor;

typedef struct mf_source mf_source;
struct mf_source {
    mf_format format;
    char *path;
    mf_config cfg;
    void *impl;
    /* 0 and *raw filled if the tensor exists, -1 otherwise (no error set). */
    int (*lookup)(const mf_source *s, const char *name, mf_raw_tensor *raw);
    char *tokenizer_ref; /* HF config.json "minifuse": {"tokenizer": path} of a pruned model, resolved inside
                            the model directory, or NULL */
    void (*close)(mf_source *s);
    char *tokenizer_refused; /* such a path that leads out of the model directory (not followed), or NULL */
    int mapped;          /* 1: tensor data lies in read-only file maps (every mf_source_open format), so the
                            pages of a tensor that was converted can be dropped from memory (mf_mmap_drop) */
};

mf_source *mf_source_open(const char *path, mf_err *err);
void mf_source_close(mf_source *s);
const char *mf_format_name(mf_format f);

int mf_source_has(const mf_source *s, const char *name);
/* Tensor `name` as float32 with the given shape (checked). *owned tells whether
 * the caller must free() it (0: it points into the memory map). */
float *mf_source_get(const mf_source *s, const char *name, int ndim, const int64_t *shape, int *owned, mf_err *err);

/* GGUF stores q/k rows in interleaved RoPE order; this puts the rows of a
 * [n_heads*hd][cols] matrix of esize-byte elements in HF's rotate-half order,
 * in place (used by mf_source_get and mf_source_get_half). */
void mf_unpermute_rope_rows(void *w, size_t esize, int n_heads, int64_t rows, int64_t cols);

/* The stored type of tensor `name` as the weights would see it: MF_DT_BF16 or
 * MF_DT_F16 for a 16-bit float tensor, MF_DT_F32 for float32, a quantized
 * GGML type or a missing tensor (other types: theirs). Reads only the header. */
mf_dtype mf_source_dtype(const mf_source *s, const char *name);
/* Tensor `name` as 16-bit weights of type dt (MF_DT_BF16 or MF_DT_F16) with
 * the given shape (checked). A tensor stored in that very type (safetensors,
 * GGUF) comes straight from the memory map (*owned = 0), or as a reordered
 * copy for GGUF q/k rows; any other type is converted through float32 one
 * tensor at a time, rounding to nearest even (*owned = 1: free() it). */
uint16_t *mf_source_get_half(const mf_source *s, const char *name, int ndim, const int64_t *shape, mf_dtype dt,
                             int *owned, mf_err *err);

/* The tokenizer: from tok_path when given (llama2.c tokenizer.bin or a GGUF
 * file), else the one inside the model (GGUF) or next to it (tokenizer.bin,
 * tok*.bin in a HF directory or beside a llama2.c checkpoint), else the one a
 * pruned model's config.json names ("minifuse": {"tokenizer": path}), which
 * is resolved relative to the model directory and must stay inside it (a
 * path that leaves it - absolute, "..", a symlink out - is refused with an
 * error naming it; give such a tokenizer with tok_path, --tokenizer). */
mf_tokenizer *mf_source_load_tokenizer(const mf_source *s, const char *tok_path, mf_err *err);
/* The path that mf_source_load_tokenizer would read; -1 if none. */
int mf_source_tokenizer_path(const mf_source *s, const char *tok_path, char *out, size_t cap);

/* HF config.json only: the model shape, tie_word_embeddings (1, 0, -1 when
 * absent) and the raw "minifuse": {"tokenizer"} string (malloc'ed, or NULL). */
int mf_hf_parse_config(const char *path, mf_config *c, int *tie_flag, char **tok_ref, mf_err *err);
/* The tokenizer path ref (from config.json of model directory dir) resolved
 * relative to dir: 0 and the real path in out when it stays inside dir, -1
 * otherwise (missing, or it leads out of dir). */
int mf_hf_resolve_inside(const char *dir, const char *ref, char *out, size_t cap);

/* Format openers (one file each). */
int mf_hf_open(mf_source *s, const char *dir, mf_err *err);
int mf_gguf_model_open(mf_source *s, const char *path, mf_err *err);
int mf_llama2c_open(mf_source *s, const char *path, mf_err *err);
/* Tokenizer from a GGUF file's metadata. */
mf_tokenizer *mf_gguf_file_tokenizer(const char *path, mf_err *err);

#endif
