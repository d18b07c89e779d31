// Token sampling: temperature, top-k and top-p turned into an explicit target distribution, and
// draws from a distribution with a caller-owned generator (worker/engine/rng.h).
//
// The transforms are applied in this order (the order of the specd brief; HF transformers and
// vLLM use the same one):
//   1. top-k: keep the k largest logits (ties broken towards the lower token id);
//   2. softmax of logit / temperature over the kept tokens;
//   3. top-p: keep the smallest set of most probable tokens whose cumulative probability is
//      >= top_p (at least one token), again ties towards the lower token id;
//   4. renormalise; every other token gets probability 0.
// Note: llama.cpp's default chain applies temperature LAST (top-k, top-p on softmax(logits), then
// temperature), so with temperature != 1 and top_p < 1 the kept set can differ from llama.cpp's.
// Temperature <= 0 means greedy: a one-hot distribution on the argmax.
//
// The same transforms must be used for the draft distributions q and the target distributions p
// given to spec_accept_sample() (worker/engine/spec_accept.h).
#ifndef SPECD_ENGINE_SAMPLER_H
#define SPECD_ENGINE_SAMPLER_H

#include <stdint.h>

#include "worker/engine/rng.h"

struct sampler_params {
    float temperature; // <= 0: greedy (argmax)
    int top_k;         // <= 0 or >= n: disabled
    float top_p;       // >= 1: disabled; <= 0 keeps only the most probable token
    uint64_t seed;     // the caller seeds its rng_state with it (rng_seed) once per request
};

// Greedy defaults: temperature 0, top_k 0 (off), top_p 1 (off), seed 0.
struct sampler_params sampler_default_params(void);

// Scratch memory for sampler_probs(): an index array and a weight array of n_vocab entries each
// (8 bytes per vocabulary entry), plus a probability buffer for sampler_sample_logits() (4 more).
// Holds no state between calls other than these buffers; not thread-safe (one per thread).
typedef struct sampler sampler;

// Returns a new sampler for vocabularies of up to n_vocab tokens, or NULL when n_vocab <= 0 or
// memory is short. Free with sampler_free().
sampler *sampler_new(int n_vocab);
// Frees the sampler; NULL is allowed.
void sampler_free(sampler *s);

// Index of the largest of n values; the lowest index wins ties; NaN values never win (an
// all-NaN array gives 0). Returns -1 when n <= 0 or logits is NULL.
int sampler_argmax(const float *logits, int n);

// Writes the target distribution described at the top of this file into probs_out[0..n-1]
// (kept tokens renormalised to sum to 1, all others exactly 0).
// logits: [n]; n must be 1..n_vocab of the sampler. Logits may be -INFINITY (masked tokens);
// NaN or +INFINITY logits, all logits -INFINITY, an infinite or NaN temperature or a NaN top_p
// are errors.
// Cost: O(n) expected (quickselect for top-k and a mass-weighted quickselect for top-p; only a
// handful of tokens are ever fully sorted).
// Returns SPECD_OK, or SPECD_ERR_INVALID (probs_out then unspecified).
int sampler_probs(sampler *s, const struct sampler_params *params, const float *logits, int n,
                  float *probs_out);

// Draws one token from non-negative weights[0..n-1] by inverse CDF: with W the sum of the weights
// (double precision, ascending index order), takes u = rng_uniform() * W and returns the first i
// whose running sum exceeds u. The weights need not sum to 1. Takes exactly one rng draw.
// Tokens of weight 0 are never returned.
// Returns the token (>= 0), or SPECD_ERR_INVALID when n <= 0, a weight is negative or NaN, or the
// sum is 0 or not finite; the generator is not advanced on error.
int sampler_sample(const float *weights, int n, struct rng_state *rng);

// sampler_probs() then sampler_sample(), using the sampler's own probability buffer; greedy
// (temperature <= 0) returns sampler_argmax() without validating the logits and takes no rng draw.
// Returns the token (>= 0) or SPECD_ERR_INVALID.
int sampler_sample_logits(sampler *s, const struct sampler_params *params, const float *logits,
                          int n, struct rng_state *rng);

#endif
