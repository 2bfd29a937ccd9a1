/* dtype.h - element types of tensors in files and in memory.
 *
 * The file readers (safetensors, GGUF, llama2.c) tag every tensor with one; the
 * backend ops for frozen weights (backend.h: linear_h, embed_h) take
 * MF_DT_BF16 or MF_DT_F16. Trainable tensors are always MF_DT_F32. */
#ifndef MF_DTYPE_H
#define MF_DTYPE_H

typedef enum { MF_DT_F32, MF_DT_F16, MF_DT_BF16, MF_DT_F64, MF_DT_I64, MF_DT_I32, MF_DT_I16, MF_DT_I8, MF_DT_U8, MF_DT_BOOL } mf_dtype;

#endif
