/* hf_write.h - write Hugging Face model directories: safetensors files,
 * config.json and model.safetensors.index.json.
 *
 * Every file is written to "<path>.tmp.<pid>", flushed with fsync and then
 * renamed over <path>, so a reader never sees a half-written file and an error
 * leaves nothing behind. Tensors are given as float32 in HF layout (Linear
 * weights [out][in], q/k rows in rotate-half RoPE order: what mf_source_get
 * returns) and stored as F32, or converted to BF16/F16 with round-to-nearest-even.
 *
 * Pipeline ranks can each write their own shard with mf_st_write (names from
 * mf_hf_shard_name) and one rank the index and config; mf_hf_write_dir does it
 * all for a single process. The files load in our reader (mf_source_open) and
 * in transformers' AutoModelForCausalLM. */
#ifndef MF_HF_WRITE_H
#define MF_HF_WRITE_H

#include <stddef.h>
#include <stdint.h>
#include "model/config.h"
#include "util/err.h"

/* One tensor to write: float32 data, row-major, shape outermost first. */
typedef struct mf_tensor_ref {
    const char *name;
    int ndim;          /* 1..4 */
    int64_t shape[4];  /* each > 0 */
    const float *data; /* [shape[0]]...[shape[ndim-1]] */
} mf_tensor_ref;

/* Bytes per element of a storage dtype "F32" (4), "BF16", "F16" (2); 0 if unknown. */
size_t mf_st_dtype_size(const char *dtype);
/* Bytes tensor t takes in the file when stored as dtype (0 for an invalid ref or dtype). */
uint64_t mf_st_tensor_bytes(const mf_tensor_ref *t, const char *dtype);

/* One safetensors file: header {"__metadata__":{"format":"pt"}, name: {dtype, shape,
 * data_offsets}, ...} with the tensors in the given order and their data packed
 * back to back in that order; the header is padded with spaces to a multiple of
 * 8 bytes so the data section is 8-byte aligned. Checks every ref first (name
 * non-empty and unique, 1..4 positive dims, data non-NULL). Atomic. */
int mf_st_write(const char *path, const mf_tensor_ref *t, int n, const char *dtype /* "F32","BF16","F16" */, mf_err *err);

/* config.json for a Llama/Mistral/Qwen2 model: architectures, model_type, sizes,
 * head_dim (always explicit), vocab_size, max_position_embeddings, rms_norm_eps,
 * rope_theta, rope_scaling (llama3 fields, else null), tie_word_embeddings,
 * attention_bias, mlp_bias false, hidden_act "silu", bos/eos ids, torch_dtype
 * ("float32", "bfloat16", "float16"), then the members of extra_json (a JSON
 * object; may be NULL) merged in at the top level, replacing same-named keys.
 * Floats are written as the shortest decimal that reads back as the same float.
 * The config is validated (mf_config_validate) first. Atomic. */
int mf_hf_write_config(const char *path, const mf_config *c, const char *torch_dtype, const char *extra_json, mf_err *err);

/* model.safetensors.index.json: {"metadata": {"total_size": bytes},
 * "weight_map": {names[i]: files[i]}} (files are plain names inside the directory). Atomic. */
int mf_hf_write_index(const char *path, const char *const *names, const char *const *files, int n, uint64_t total_size,
                      mf_err *err);

/* "model-%05d-of-%05d.safetensors" for shard i (1-based) of k. */
void mf_hf_shard_name(char *buf, size_t cap, int i, int k);

/* Split tensors (in order) into shards of at most max_shard_bytes of data each
 * (a tensor larger than that gets a shard of its own); shard_of[i] is the
 * 0-based shard of tensor i. Returns the number of shards (1 when max_shard_bytes
 * is 0 or everything fits), -1 on an invalid ref or dtype. */
int mf_hf_shard_plan(const mf_tensor_ref *t, int n, const char *dtype, size_t max_shard_bytes, int *shard_of, mf_err *err);

/* For writers that produce the files themselves (one shard per pipeline rank):
 * create dir if missing and remove what an earlier write left there that a
 * layout of n_shards files would not overwrite (model.safetensors when
 * n_shards > 1, else the index; model-*-of-*.safetensors shards of another count).
 * Call it once (one rank) before the shards are written. */
int mf_hf_prepare_dir(const char *dir, int n_shards, mf_err *err);

/* A whole model into dir (created if missing, parent must exist):
 * config.json + model.safetensors, or model-0000i-of-0000K.safetensors shards +
 * model.safetensors.index.json when the data exceeds max_shard_bytes (0 = never
 * shard). torch_dtype follows dtype. All files are first written to temporary
 * names and renamed only when every one of them is complete (config.json last);
 * on error none of them is left behind. A stale model.safetensors, index or
 * model-*-of-*.safetensors shard set from an earlier write that the new layout
 * does not use is removed, so readers cannot pick up old weights. */
int mf_hf_write_dir(const char *dir, const mf_config *c, const mf_tensor_ref *t, int n, const char *dtype,
                    size_t max_shard_bytes, const char *extra_json, mf_err *err);

#endif
