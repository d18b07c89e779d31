#include "worker/engine/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "worker/engine/quant.h"

void ops_rmsnorm(const float *x, const float *w, float *out, int n, float eps) {
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += (double)x[i] * (double)x[i];
    const float scale = 1.0f / sqrtf((float)(sum / n) + eps);
    for (int i = 0; i < n; i++)
        out[i] = x[i] * scale * w[i];
}

void ops_rope(float *x, int n_heads, int head_dim, int n_rot, int32_t pos, float freq_base,
              float freq_scale, enum rope_mode mode) {
    const float theta_scale = powf(freq_base, -2.0f / (float)n_rot);
    const int half = n_rot / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        float theta = (float)pos * freq_scale;
        for (int i = 0; i < half; i++) {
            const float c = cosf(theta), s = sinf(theta);
            const int a = mode == ROPE_MODE_NEOX ? i : 2 * i;
            const int b = mode == ROPE_MODE_NEOX ? i + half : 2 * i + 1;
            const float x0 = v[a], x1 = v[b];
            v[a] = x0 * c - x1 * s;
            v[b] = x0 * s + x1 * c;
            theta *= theta_scale;
        }
    }
}

void ops_softmax(float *x, int n) {
    float max = -INFINITY;
    for (int i = 0; i < n; i++)
        max = x[i] > max ? x[i] : max;
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    const float inv = 1.0f / sum;
    for (int i = 0; i < n; i++)
        x[i] *= inv;
}

void ops_silu_mul(float *g, const float *u, int n) {
    for (int i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

// An activation row quantized like ggml's block_q8_0: per 32 values a scale d (rounded through
// fp16, as ggml stores it) and int8 values round(x / d).
struct q8_row_block {
    float d;
    int8_t q[QUANT_BLOCK];
};

// As ggml's quantize_row_q8_0 on x86: d = amax / 127, values x * (127 / amax) rounded to
// nearest, ties to even.
static void quantize_activation(const float *x, struct q8_row_block *out, int64_t n) {
    for (int64_t b = 0; b < n / QUANT_BLOCK; b++) {
        const float *v = x + b * QUANT_BLOCK;
#if defined(__AVX2__)
        const __m256 sign = _mm256_set1_ps(-0.0f);
        __m256 vv[4], m = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            vv[k] = _mm256_loadu_ps(v + 8 * k);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, vv[k]));
        }
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        out[b].d = quant_f16_to_f32(quant_f32_to_f16(amax / 127.0f));
        __m256i q32[4];
        for (int k = 0; k < 4; k++)
            q32[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(vv[k], _mm256_set1_ps(id)),
                                                        _MM_FROUND_TO_NEAREST_INT));
        // Pack 32 int32 to 32 int8, then undo the lane interleaving of the packs.
        __m256i q16a = _mm256_packs_epi32(q32[0], q32[1]),
                q16b = _mm256_packs_epi32(q32[2], q32[3]);
        __m256i q8 = _mm256_packs_epi16(q16a, q16b);
        q8 = _mm256_permutevar8x32_epi32(q8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)out[b].q, q8);
#else
        float amax = 0.0f;
        for (int j = 0; j < QUANT_BLOCK; j++)
            amax = fabsf(v[j]) > amax ? fabsf(v[j]) : amax;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        out[b].d = quant_f16_to_f32(quant_f32_to_f16(amax / 127.0f));
        for (int j = 0; j < QUANT_BLOCK; j++)
            out[b].q[j] = (int8_t)rintf(v[j] * id);
#endif
    }
}

// Exact int32 dot product of 32 int8 pairs.
static inline int32_t dot_i8_32(const int8_t *a, const int8_t *b) {
#if defined(__AVX2__)
    const __m256i va = _mm256_loadu_si256((const __m256i *)a);
    const __m256i vb = _mm256_loadu_si256((const __m256i *)b);
    // |a| * sign(b, a): unsigned x signed pairs summed to int16 (|products| <= 2 * 128 * 127:
    // no saturation), then to int32.
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(va, va), _mm256_sign_epi8(vb, va));
    const __m256i p32 = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(p32), _mm256_extracti128_si256(p32, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
#else
    int32_t sum = 0;
    for (int j = 0; j < QUANT_BLOCK; j++)
        sum += (int32_t)a[j] * (int32_t)b[j];
    return sum;
#endif
}

// Q8_0 weight row . quantized activation: per block an exact int32 dot, scaled by both scales.
static float dot_q8_0_q8(const uint8_t *w, const struct q8_row_block *x, int64_t n_blocks) {
    float sum = 0.0f;
    for (int64_t b = 0; b < n_blocks; b++, w += 34) {
        const int32_t sumi = dot_i8_32((const int8_t *)(w + 2), x[b].q);
        sum += (float)sumi * (quant_f16_to_f32((uint16_t)(w[0] | w[1] << 8)) * x[b].d);
    }
    return sum;
}

static float dot_q4_0_q8(const uint8_t *w, const struct q8_row_block *x, int64_t n_blocks) {
    float sum = 0.0f;
    for (int64_t b = 0; b < n_blocks; b++, w += 18) {
        int32_t sumi = 0;
        for (int j = 0; j < 16; j++)
            sumi += ((w[2 + j] & 15) - 8) * (int32_t)x[b].q[j] +
                    ((w[2 + j] >> 4) - 8) * (int32_t)x[b].q[j + 16];
        sum += (float)sumi * (quant_f16_to_f32((uint16_t)(w[0] | w[1] << 8)) * x[b].d);
    }
    return sum;
}

struct matmul_job {
    const struct model_weight *w;
    const float *x;
    const struct q8_row_block *xq; // [n_in][cols / 32] for quantized weights, else NULL
    int n_in;
    float *y;
    float *scratch;
};

#if defined(__AVX2__) && defined(__FMA__)
// 8 int32 lanes of the products of 32 int8 pairs (exact).
static inline __m256i dot_i8_lanes(__m256i w, __m256i x) {
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#endif

#if defined(__AVX2__) && defined(__FMA__)
// Q8_0 row . one quantized activation row, 8 float lanes accumulated block by block.
static float dot_q8_0_one(const uint8_t *w, const struct q8_row_block *x, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++, w += 34) {
        const __m256i wq = _mm256_loadu_si256((const __m256i *)(w + 2));
        const __m256i xq = _mm256_loadu_si256((const __m256i *)x[b].q);
        const float dw = quant_f16_to_f32((uint16_t)(w[0] | w[1] << 8));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_i8_lanes(wq, xq)), _mm256_set1_ps(dw * x[b].d),
                              acc);
    }
    return hsum8(acc);
}
#endif

static void matmul_rows_q8(const struct matmul_job *j, int begin, int end) {
    const struct model_weight *w = j->w;
    const int64_t nb = w->cols / QUANT_BLOCK;
    const uint8_t *base = w->data;
#if defined(__AVX2__) && defined(__FMA__)
    if (w->type == GGML_TYPE_Q8_0) { // the row stays in L1 while it meets every activation row
        for (int r = begin; r < end; r++)
            for (int i = 0; i < j->n_in; i++)
                j->y[(size_t)i * w->rows + r] =
                    dot_q8_0_one(base + (size_t)r * w->row_bytes, j->xq + i * nb, nb);
        return;
    }
#endif
    for (int r = begin; r < end; r++) {
        const uint8_t *wr = base + (size_t)r * w->row_bytes;
        for (int i = 0; i < j->n_in; i++)
            j->y[(size_t)i * w->rows + r] = w->type == GGML_TYPE_Q8_0
                                                ? dot_q8_0_q8(wr, j->xq + i * nb, nb)
                                                : dot_q4_0_q8(wr, j->xq + i * nb, nb);
    }
}

static void matmul_rows(void *ctx, int begin, int end, int thread) {
    const struct matmul_job *j = ctx;
    if (j->xq) {
        matmul_rows_q8(j, begin, end);
        return;
    }
    const struct model_weight *w = j->w;
    const int64_t cols = w->cols, rows = w->rows;
    const uint8_t *base = w->data;
    // Every output element is computed the same way whatever n_in is (dequantize the row, then
    // one float32 dot product), so a token's result does not depend on what else is in the
    // batch: speculative verification and plain decoding see bit-identical logits.
    float *row = j->scratch + (size_t)thread * (size_t)cols;
    for (int r = begin; r < end; r++) {
        const float *wr = row;
        if (w->type == GGML_TYPE_F32)
            wr = (const float *)(base + (size_t)r * w->row_bytes);
        else
            quant_dequantize_row(w->type, base + (size_t)r * w->row_bytes, row, cols);
        for (int i = 0; i < j->n_in; i++)
            j->y[(size_t)i * rows + r] = quant_dot_f32(wr, j->x + (size_t)i * cols, cols);
    }
}

int ops_matmul(tpool *pool, const struct model_weight *w, const float *x, int n_in, float *y,
               float *scratch) {
    struct matmul_job job = {w, x, NULL, n_in, y, scratch};
    struct q8_row_block *xq = NULL;
    if (n_in > 0 && (w->type == GGML_TYPE_Q8_0 || w->type == GGML_TYPE_Q4_0)) {
        const int64_t nb = w->cols / QUANT_BLOCK;
        xq = malloc(sizeof *xq * (size_t)(n_in * nb));
        if (!xq)
            return -2;
        for (int i = 0; i < n_in; i++)
            quantize_activation(x + (size_t)i * w->cols, xq + i * nb, w->cols);
        job.xq = xq;
    }
    tpool_for(pool, (int)w->rows, 16, matmul_rows, &job);
    free(xq);
    return 0;
}
