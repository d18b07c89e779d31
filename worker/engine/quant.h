// Tensor element formats: conversion to float32 and dot products against float32 vectors.
// Q8_0: blocks of 32 values = fp16 scale d + 32 int8 q; value = d * q.
// Q4_0: blocks of 32 values = fp16 scale d + 16 bytes; value j (j < 16) = d * ((b[j] & 15) - 8),
//       value j + 16 = d * ((b[j] >> 4) - 8).
#ifndef SPECD_ENGINE_QUANT_H
#define SPECD_ENGINE_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker/engine/gguf.h"

#define QUANT_BLOCK 32

// Portable conversions (bit manipulation); the inline versions below use the F16C instructions
// when the build targets them and give identical results.
float quant_f16_to_f32_portable(uint16_t h);
uint16_t quant_f32_to_f16_portable(float f); // round to nearest even

#if defined(__F16C__)
#include <immintrin.h>
static inline float quant_f16_to_f32(uint16_t h) {
    return _cvtsh_ss(h);
}
static inline uint16_t quant_f32_to_f16(float f) {
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}
#else
static inline float quant_f16_to_f32(uint16_t h) {
    return quant_f16_to_f32_portable(h);
}
static inline uint16_t quant_f32_to_f16(float f) {
    return quant_f32_to_f16_portable(f);
}
#endif
float quant_bf16_to_f32(uint16_t h);
uint16_t quant_f32_to_bf16(float f); // round to nearest even

// True for the types specd computes with: F32, F16, BF16, Q8_0, Q4_0.
bool quant_type_supported(enum ggml_dtype t);
// Bytes of one row of n elements (n must be a multiple of the type's block size).
size_t quant_row_bytes(enum ggml_dtype t, int64_t n);
// Converts n elements of a row to float32.
void quant_dequantize_row(enum ggml_dtype t, const void *src, float *dst, int64_t n);
// Quantizes n floats (n a multiple of 32 for Q8_0/Q4_0) into dst; used by tests and tools.
void quant_quantize_row(enum ggml_dtype t, const float *src, void *dst, int64_t n);
// Float32 dot product of a row in format t with x[n], accumulated in float32.
float quant_dot_row(enum ggml_dtype t, const void *row, const float *x, int64_t n);
// Float32 dot product of two float vectors.
float quant_dot_f32(const float *a, const float *b, int64_t n);

#endif
