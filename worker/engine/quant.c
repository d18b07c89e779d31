#include "worker/engine/quant.h"

#include <math.h>
#include <string.h>

#include "shared/check.h"

// 8 float lanes; GCC/Clang lower this to whatever SIMD the target has.
typedef float v8f __attribute__((vector_size(32)));

float quant_f16_to_f32_portable(uint16_t h) {
    const uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13); // inf / nan
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else { // subnormal: renormalise
        int e = -1;
        do {
            e++;
            mant <<= 1;
        } while (!(mant & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((mant & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t quant_f32_to_f16_portable(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    const uint32_t abs = x & 0x7fffffffu;
    if (abs >= 0x7f800000u) // inf or nan
        return sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 : 0);
    if (abs >= 0x477ff000u) // rounds to >= 65520: overflow to inf
        return sign | 0x7c00;
    if (abs < 0x38800000u) {                    // subnormal half (or zero)
        const float a = fabsf(f) * 16777216.0f; // 2^24: units of the smallest subnormal
        return sign | (uint16_t)lrintf(a);
    }
    uint32_t mant = abs & 0x7fffff, exp = (abs >> 23) - 112;
    uint32_t h = (exp << 10) | (mant >> 13);
    const uint32_t rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1)))
        h++;
    return sign | (uint16_t)h;
}

float quant_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t quant_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

bool quant_type_supported(enum ggml_dtype t) {
    return t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16 || t == GGML_TYPE_Q8_0 ||
           t == GGML_TYPE_Q4_0;
}

size_t quant_row_bytes(enum ggml_dtype t, int64_t n) {
    return ggml_dtype_block_bytes(t) * (size_t)(n / (int64_t)ggml_dtype_block_elems(t));
}

static uint16_t load_u16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

void quant_dequantize_row(enum ggml_dtype t, const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    switch (t) {
    case GGML_TYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    case GGML_TYPE_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = quant_f16_to_f32(load_u16(p + 2 * i));
        return;
    case GGML_TYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = quant_bf16_to_f32(load_u16(p + 2 * i));
        return;
    case GGML_TYPE_Q8_0:
        for (int64_t b = 0; b < n / QUANT_BLOCK; b++, p += 34) {
            const float d = quant_f16_to_f32(load_u16(p));
            const int8_t *q = (const int8_t *)(p + 2);
            for (int j = 0; j < QUANT_BLOCK; j++)
                dst[b * QUANT_BLOCK + j] = d * (float)q[j];
        }
        return;
    case GGML_TYPE_Q4_0:
        for (int64_t b = 0; b < n / QUANT_BLOCK; b++, p += 18) {
            const float d = quant_f16_to_f32(load_u16(p));
            for (int j = 0; j < 16; j++) {
                dst[b * QUANT_BLOCK + j] = d * (float)((p[2 + j] & 15) - 8);
                dst[b * QUANT_BLOCK + j + 16] = d * (float)((p[2 + j] >> 4) - 8);
            }
        }
        return;
    }
    SPECD_CHECK(!"unsupported tensor type");
}

static void quantize_q8_0(const float *src, uint8_t *dst, int64_t n) {
    for (int64_t b = 0; b < n / QUANT_BLOCK; b++, dst += 34) {
        float amax = 0.0f;
        for (int j = 0; j < QUANT_BLOCK; j++)
            amax = fmaxf(amax, fabsf(src[b * QUANT_BLOCK + j]));
        const float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        const uint16_t dh = quant_f32_to_f16(d);
        dst[0] = (uint8_t)dh;
        dst[1] = (uint8_t)(dh >> 8);
        for (int j = 0; j < QUANT_BLOCK; j++)
            dst[2 + j] = (uint8_t)(int8_t)lrintf(src[b * QUANT_BLOCK + j] * id);
    }
}

static void quantize_q4_0(const float *src, uint8_t *dst, int64_t n) {
    for (int64_t b = 0; b < n / QUANT_BLOCK; b++, dst += 18) {
        const float *x = src + b * QUANT_BLOCK;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QUANT_BLOCK; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        const float d = max / -8.0f, id = d ? 1.0f / d : 0.0f;
        const uint16_t dh = quant_f32_to_f16(d);
        dst[0] = (uint8_t)dh;
        dst[1] = (uint8_t)(dh >> 8);
        for (int j = 0; j < 16; j++) {
            int lo = (int)(x[j] * id + 8.5f), hi = (int)(x[j + 16] * id + 8.5f);
            lo = lo > 15 ? 15 : lo;
            hi = hi > 15 ? 15 : hi;
            dst[2 + j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

void quant_quantize_row(enum ggml_dtype t, const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    switch (t) {
    case GGML_TYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    case GGML_TYPE_F16:
        for (int64_t i = 0; i < n; i++) {
            const uint16_t h = quant_f32_to_f16(src[i]);
            p[2 * i] = (uint8_t)h;
            p[2 * i + 1] = (uint8_t)(h >> 8);
        }
        return;
    case GGML_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            const uint16_t h = quant_f32_to_bf16(src[i]);
            p[2 * i] = (uint8_t)h;
            p[2 * i + 1] = (uint8_t)(h >> 8);
        }
        return;
    case GGML_TYPE_Q8_0:
        quantize_q8_0(src, p, n);
        return;
    case GGML_TYPE_Q4_0:
        quantize_q4_0(src, p, n);
        return;
    }
    SPECD_CHECK(!"unsupported tensor type");
}

float quant_dot_f32(const float *a, const float *b, int64_t n) {
    v8f acc = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f va, vb;
        memcpy(&va, a + i, sizeof va);
        memcpy(&vb, b + i, sizeof vb);
        acc += va * vb;
    }
    float sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++)
        sum += a[i] * b[i];
    return sum;
}

// Q8_0 row . x: per block, the int8 values times x summed in float, times the block scale.
static float dot_q8_0(const uint8_t *p, const float *x, int64_t n) {
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUANT_BLOCK; b++, p += 34, x += QUANT_BLOCK) {
        const int8_t *q = (const int8_t *)(p + 2);
        v8f acc = {0};
        for (int j = 0; j < QUANT_BLOCK; j += 8) {
            v8f vq = {q[j], q[j + 1], q[j + 2], q[j + 3], q[j + 4], q[j + 5], q[j + 6], q[j + 7]};
            v8f vx;
            memcpy(&vx, x + j, sizeof vx);
            acc += vq * vx;
        }
        const float block =
            ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        sum += quant_f16_to_f32(load_u16(p)) * block;
    }
    return sum;
}

float quant_dot_row(enum ggml_dtype t, const void *row, const float *x, int64_t n) {
    if (t == GGML_TYPE_F32)
        return quant_dot_f32(row, x, n);
    if (t == GGML_TYPE_Q8_0)
        return dot_q8_0(row, x, n);
    float buf[256];
    float sum = 0.0f;
    const size_t chunk_bytes = quant_row_bytes(t, 256);
    const uint8_t *p = row;
    for (int64_t i = 0; i < n; i += 256, p += chunk_bytes) {
        const int64_t m = n - i < 256 ? n - i : 256;
        quant_dequantize_row(t, p, buf, m);
        sum += quant_dot_f32(buf, x + i, m);
    }
    return sum;
}
