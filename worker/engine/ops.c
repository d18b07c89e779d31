#include "worker/engine/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

static void quantize_activation(const float *x, struct q8_row_block *out, int64_t n) {
    for (int64_t b = 0; b < n / QUANT_BLOCK; b++) {
        const float *v = x + b * QUANT_BLOCK;
        float amax = 0.0f;
        for (int j = 0; j < QUANT_BLOCK; j++)
            amax = fmaxf(amax, fabsf(v[j]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        out[b].d = quant_f16_to_f32(quant_f32_to_f16(d));
        for (int j = 0; j < QUANT_BLOCK; j++)
            out[b].q[j] = (int8_t)roundf(v[j] * id);
    }
}

// Q8_0 weight row . quantized activation: per block an exact int32 dot, scaled by both scales.
static float dot_q8_0_q8(const uint8_t *w, const struct q8_row_block *x, int64_t n_blocks) {
    float sum = 0.0f;
    for (int64_t b = 0; b < n_blocks; b++, w += 34) {
        const int8_t *q = (const int8_t *)(w + 2);
        int32_t sumi = 0;
        for (int j = 0; j < QUANT_BLOCK; j++)
            sumi += (int32_t)q[j] * (int32_t)x[b].q[j];
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

static void matmul_rows_q8(const struct matmul_job *j, int begin, int end) {
    const struct model_weight *w = j->w;
    const int64_t nb = w->cols / QUANT_BLOCK;
    const uint8_t *base = w->data;
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
