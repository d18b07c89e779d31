// Per-op checks of the CPU math against straightforward double-precision code.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "tests/test.h"
#include "worker/engine/ops.h"
#include "worker/engine/quant.h"

static uint64_t rng_state = 88172645463325252ull;
static double urand(void) { // xorshift64, deterministic
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static float frand(float scale) {
    return (float)((urand() * 2.0 - 1.0) * scale);
}

TEST(rmsnorm_matches_double) {
    for (int n = 1; n <= 515; n += 37) {
        float *x = malloc(n * sizeof(float)), *w = malloc(n * sizeof(float)),
              *y = malloc(n * sizeof(float));
        for (int i = 0; i < n; i++) {
            x[i] = frand(3.0f);
            w[i] = frand(2.0f);
        }
        ops_rmsnorm(x, w, y, n, 1e-5f);
        double ss = 0;
        for (int i = 0; i < n; i++)
            ss += (double)x[i] * x[i];
        const double scale = 1.0 / sqrt(ss / n + 1e-5);
        for (int i = 0; i < n; i++)
            CHECK_NEAR(y[i], x[i] * scale * w[i], 1e-5 * (1 + fabs(x[i] * scale * w[i])));
        free(x);
        free(w);
        free(y);
    }
}

static void rope_reference(double *v, int head_dim, int n_rot, int pos, double base, double fscale,
                           enum rope_mode mode) {
    for (int i = 0; i < n_rot / 2; i++) {
        const double theta = pos * fscale * pow(base, -2.0 * i / n_rot);
        const int a = mode == ROPE_MODE_NEOX ? i : 2 * i;
        const int b = mode == ROPE_MODE_NEOX ? i + n_rot / 2 : 2 * i + 1;
        const double x0 = v[a], x1 = v[b];
        v[a] = x0 * cos(theta) - x1 * sin(theta);
        v[b] = x0 * sin(theta) + x1 * cos(theta);
    }
    (void)head_dim;
}

TEST(rope_both_modes_match_double) {
    const int head_dim = 64, n_heads = 3;
    enum rope_mode modes[] = {ROPE_MODE_NORMAL, ROPE_MODE_NEOX};
    int rots[] = {64, 32};
    int positions[] = {0, 1, 7, 100, 1023};
    for (int m = 0; m < 2; m++)
        for (int r = 0; r < 2; r++)
            for (int p = 0; p < 5; p++) {
                float x[3 * 64];
                double ref[3 * 64];
                for (int i = 0; i < n_heads * head_dim; i++)
                    ref[i] = x[i] = frand(1.0f);
                ops_rope(x, n_heads, head_dim, rots[r], positions[p], 10000.0f, 0.5f, modes[m]);
                for (int h = 0; h < n_heads; h++)
                    rope_reference(ref + h * head_dim, head_dim, rots[r], positions[p], 10000.0,
                                   0.5, modes[m]);
                // Float angles at position ~1000 carry ~1e-4 absolute error.
                for (int i = 0; i < n_heads * head_dim; i++)
                    CHECK_NEAR(x[i], ref[i], 2e-4 + 1e-6 * positions[p]);
            }
}

TEST(softmax_and_silu_match_double) {
    float x[300], g[300], u[300];
    double ref[300];
    for (int i = 0; i < 300; i++) {
        x[i] = frand(20.0f);
        g[i] = frand(6.0f);
        u[i] = frand(2.0f);
    }
    double max = -1e30, sum = 0;
    for (int i = 0; i < 300; i++)
        max = x[i] > max ? x[i] : max;
    for (int i = 0; i < 300; i++)
        sum += ref[i] = exp(x[i] - max);
    ops_softmax(x, 300);
    for (int i = 0; i < 300; i++)
        CHECK_NEAR(x[i], ref[i] / sum, 1e-6);
    float g0[300];
    memcpy(g0, g, sizeof g);
    ops_silu_mul(g, u, 300);
    for (int i = 0; i < 300; i++)
        CHECK_NEAR(g[i], g0[i] / (1.0 + exp(-(double)g0[i])) * u[i], 1e-5);
}

TEST(f16_bf16_conversions) {
    // Every half value converts back to itself (nan keeps being nan).
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = quant_f16_to_f32((uint16_t)h);
        if (isnan(f))
            CHECK(isnan(quant_f16_to_f32(quant_f32_to_f16(f))));
        else if (quant_f32_to_f16(f) != h)
            CHECK_EQ_INT(quant_f32_to_f16(f), h);
    }
    // The inline (F16C when built for it) and portable conversions agree on every half and on
    // rounding of floats between halves.
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = quant_f16_to_f32((uint16_t)h), g = quant_f16_to_f32_portable((uint16_t)h);
        CHECK((isnan(f) && isnan(g)) || memcmp(&f, &g, sizeof f) == 0);
    }
    for (int i = 0; i < 200000; i++) {
        const float f = frand(70000.0f) * (float)(urand() < 0.5 ? 1e-4 : 1.0);
        if (quant_f32_to_f16(f) != quant_f32_to_f16_portable(f))
            CHECK_EQ_INT(quant_f32_to_f16(f), quant_f32_to_f16_portable(f));
    }
    CHECK_EQ_INT(quant_f32_to_f16(1.0f), 0x3c00);
    CHECK_EQ_INT(quant_f32_to_f16(65504.0f), 0x7bff);
    CHECK_EQ_INT(quant_f32_to_f16(1e6f), 0x7c00);
    CHECK_EQ_INT(quant_f32_to_f16(5.9604645e-8f), 0x0001);
    CHECK(quant_f16_to_f32(0x0001) == 5.9604645e-8f);
    CHECK(quant_bf16_to_f32(quant_f32_to_bf16(1.5f)) == 1.5f);
    CHECK_EQ_INT(quant_f32_to_bf16(1.00390625f), 0x3f80); // ties to even
}

// Quantize random rows, then check dequantization against a hand-written decode of the bytes and
// the matmul against double precision over the dequantized weights.
static void check_matmul_type(enum ggml_dtype type, double tol) {
    const int rows = 37, cols = 96, n_in = 5;
    const size_t rb = quant_row_bytes(type, cols);
    uint8_t *wdata = malloc(rb * rows);
    float *src = malloc(sizeof(float) * rows * cols), *deq = malloc(sizeof(float) * rows * cols);
    float *x = malloc(sizeof(float) * n_in * cols), *y = malloc(sizeof(float) * n_in * rows);
    for (int i = 0; i < rows * cols; i++)
        src[i] = frand(1.0f);
    for (int i = 0; i < n_in * cols; i++)
        x[i] = frand(2.0f);
    for (int r = 0; r < rows; r++) {
        quant_quantize_row(type, src + r * cols, wdata + r * rb, cols);
        quant_dequantize_row(type, wdata + r * rb, deq + r * cols, cols);
    }
    for (int i = 0; i < rows * cols; i++)
        CHECK_NEAR(deq[i], src[i], tol);
    if (type == GGML_TYPE_Q8_0) { // independent decode of the first block
        const float d = quant_f16_to_f32((uint16_t)(wdata[0] | wdata[1] << 8));
        for (int j = 0; j < 32; j++)
            CHECK(deq[j] == d * (float)(int8_t)wdata[2 + j]);
    }
    if (type == GGML_TYPE_Q4_0) {
        const float d = quant_f16_to_f32((uint16_t)(wdata[0] | wdata[1] << 8));
        for (int j = 0; j < 16; j++) {
            CHECK(deq[j] == d * (float)((wdata[2 + j] & 15) - 8));
            CHECK(deq[j + 16] == d * (float)((wdata[2 + j] >> 4) - 8));
        }
    }
    // Quantized weights multiply activations quantized to Q8_0 (scale through fp16, values
    // rounded to nearest even), as llama.cpp does: the reference does the same in double.
    const int quantized = type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0;
    double *xr = malloc(sizeof(double) * n_in * cols);
    for (int i = 0; i < n_in * cols; i += 32) {
        double amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmax(amax, fabs(x[i + j]));
        const float d = (float)amax / 127.0f, id = amax ? 127.0f / (float)amax : 0.0f;
        const double dh = quant_f16_to_f32(quant_f32_to_f16(d));
        for (int j = 0; j < 32; j++) // ties to even, as ggml rounds on x86
            xr[i + j] = quantized ? dh * nearbyint(x[i + j] * id) : x[i + j];
    }
    struct model_weight w = {type, rows, cols, rb, wdata};
    tpool *pool = tpool_new(2);
    float *scratch = malloc(sizeof(float) * 2 * cols);
    ops_matmul(pool, &w, x, n_in, y, scratch);
    for (int i = 0; i < n_in; i++)
        for (int r = 0; r < rows; r++) {
            double ref = 0;
            for (int c = 0; c < cols; c++)
                ref += (double)deq[r * cols + c] * xr[i * cols + c];
            CHECK_NEAR(y[i * rows + r], ref, 1e-4);
        }
    // Batch invariance: one row at a time gives bit-identical results.
    for (int i = 0; i < n_in; i++) {
        float single[37];
        ops_matmul(pool, &w, x + i * cols, 1, single, scratch);
        for (int r = 0; r < rows; r++)
            CHECK(single[r] == y[i * rows + r]);
    }
    tpool_free(pool);
    free(xr);
    free(scratch);
    free(wdata);
    free(src);
    free(deq);
    free(x);
    free(y);
}

TEST(matmul_f32) {
    check_matmul_type(GGML_TYPE_F32, 0);
}
TEST(matmul_f16) {
    check_matmul_type(GGML_TYPE_F16, 1e-3);
}
TEST(matmul_bf16) {
    check_matmul_type(GGML_TYPE_BF16, 1e-2);
}
TEST(matmul_q8_0) {
    check_matmul_type(GGML_TYPE_Q8_0, 1.0 / 127 + 1e-6);
}
TEST(matmul_q4_0) {
    check_matmul_type(GGML_TYPE_Q4_0, 1.0 / 7 + 1e-6);
}

static void count_range(void *ctx, int begin, int end, int thread) {
    int *hits = ctx;
    (void)thread;
    for (int i = begin; i < end; i++)
        __atomic_add_fetch(&hits[i], 1, __ATOMIC_RELAXED);
}

TEST(tpool_covers_each_item_once) {
    tpool *pool = tpool_new(3);
    REQUIRE(pool);
    for (int n = 0; n < 200; n += 7)
        for (int chunk = 1; chunk < 50; chunk += 13) {
            int hits[200] = {0};
            tpool_for(pool, n, chunk, count_range, hits);
            for (int i = 0; i < 200; i++)
                CHECK_EQ_INT(hits[i], i < n ? 1 : 0);
        }
    tpool_free(pool);
}

int main(int argc, char **argv) {
    TEST_MAIN_BEGIN(argc, argv);
    TEST_RUN(rmsnorm_matches_double);
    TEST_RUN(rope_both_modes_match_double);
    TEST_RUN(softmax_and_silu_match_double);
    TEST_RUN(f16_bf16_conversions);
    TEST_RUN(matmul_f32);
    TEST_RUN(matmul_f16);
    TEST_RUN(matmul_bf16);
    TEST_RUN(matmul_q8_0);
    TEST_RUN(matmul_q4_0);
    TEST_RUN(tpool_covers_each_item_once);
    return TEST_MAIN_END();
}
