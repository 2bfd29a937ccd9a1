/* safetensors.h - read Hugging Face safetensors files (single or sharded).
 *
 * Format: u64 little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [d0, d1], "data_offsets": [begin, end]}, ..., "__metadata__": {...}}
 * then the data section; offsets are relative to its start. Files are mmapped;
 * tensors point into the map. */
#ifndef MF_SAFETENSORS_H
#define MF_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "util/dtype.h"
#include "util/err.h"
#include "util/mmapfile.h"


typedef struct mf_st_tensor {
    char *name;
    mf_dtype dtype;
    int ndim;
    int64_t shape[8];
    const void *data; /* into the file's map */
    size_t nbytes;
    const char *file; /* path of the file that holds it */
} mf_st_tensor;

typedef struct mf_safetensors {
    int n_files;
    mf_mmap *files;
    size_t n_tensors;
    mf_st_tensor *tensors;
} mf_safetensors;

/* Open one .safetensors file. */
mf_safetensors *mf_st_open_file(const char *path, mf_err *err);
/* Open a Hugging Face model directory: model.safetensors, or the shards listed
 * in model.safetensors.index.json. */
mf_safetensors *mf_st_open_dir(const char *dir, mf_err *err);
void mf_st_close(mf_safetensors *st);

const mf_st_tensor *mf_st_find(const mf_safetensors *st, const char *name);
const char *mf_dtype_name(mf_dtype dt);
size_t mf_dtype_size(mf_dtype dt);
/* Convert a floating-point tensor (F32/F16/BF16/F64) to float32. */
int mf_st_to_f32(const mf_st_tensor *t, float *dst, mf_err *err);

#endif
