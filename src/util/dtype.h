/* dtype.h - element types of stored tensors (safetensors names) and of weights
 * held in memory: trainable tensors are always MF_DT_F32; frozen ones (a
 * teacher, eval, score, the frozen base of a fusion window) may be held in 16
 * bits, MF_DT_BF16 or MF_DT_F16 (--weights). One enum for both, so a raw
 * tensor's type is the type a backend op is told. */
#ifndef MF_DTYPE_H
#define MF_DTYPE_H

typedef enum { MF_DT_F32, MF_DT_F16, MF_DT_BF16, MF_DT_F64, MF_DT_I64, MF_DT_I32, MF_DT_I16, MF_DT_I8, MF_DT_U8, MF_DT_BOOL } mf_dtype;

#endif
