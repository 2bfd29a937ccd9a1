/* half.h - IEEE binary16 and bfloat16 <-> float32, round-to-nearest-even. */
#ifndef MF_HALF_H
#define MF_HALF_H

#include <stdint.h>

float mf_fp16_to_f32(uint16_t h);
uint16_t mf_f32_to_fp16(float f);
float mf_bf16_to_f32(uint16_t h);
uint16_t mf_f32_to_bf16(float f);

#endif
