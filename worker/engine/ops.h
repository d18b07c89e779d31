// CPU math of the llama forward pass, float32 with float32 accumulation (norm sums in double,
// as llama.cpp does). Each op has a double-precision reference check in tests/unit/test_ops.c.
#ifndef SPECD_ENGINE_OPS_H
#define SPECD_ENGINE_OPS_H

#include <stdint.h>

#include "worker/engine/model.h"
#include "worker/engine/tpool.h"

// out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]; out may alias x.
void ops_rmsnorm(const float *x, const float *w, float *out, int n, float eps);

// Rotates the first n_rot dims of each of n_heads vectors of head_dim floats, in place, for
// position pos: angle of pair i = pos * freq_scale * freq_base^(-2i/n_rot).
void ops_rope(float *x, int n_heads, int head_dim, int n_rot, int32_t pos, float freq_base,
              float freq_scale, enum rope_mode mode);

// In-place softmax over n floats (max-subtracted).
void ops_softmax(float *x, int n);

// g[i] = silu(g[i]) * u[i].
void ops_silu_mul(float *g, const float *u, int n);

// y[r][j] = sum_c x[r][c] * w[j][c] for r < n_in rows of x ([n_in][w->cols]) into y
// ([n_in][w->rows]). Parallel over rows of w. scratch: [tpool threads][w->cols] floats.
// Float weights (F32, F16, BF16): float32 products and accumulation. Block-quantized weights
// (Q8_0, Q4_0): each activation row is quantized to Q8_0 blocks first and every block's dot
// product is exact in int32, then scaled — the arithmetic of llama.cpp's CPU backend, which is
// what makes greedy outputs agree token for token on quantized models.
// Each output element depends only on its own row of x: results are batch-invariant.
// Returns 0, or SPECD_ERR_NOMEM (y unspecified).
int ops_matmul(tpool *pool, const struct model_weight *w, const float *x, int n_in, float *y,
               float *scratch);

#endif
