// Lossless speculative acceptance for one sequence (Leviathan et al. 2023, "Fast Inference from
// Transformers via Speculative Decoding"; Chen et al. 2023, "Accelerating LLM Decoding with
// Speculative Sampling").
//
// A proposer (draft model or n-gram lookup) has drafted k tokens d[0..k-1]; the target model has
// scored the k+1 positions: p[i] is the target distribution of the token after the context plus
// d[0..i-1], p[k] that of the "bonus" token after all k drafts. With the rule below the tokens
// emitted have exactly the distribution of sampling the target alone, whatever the draft.
//
// Distributions are dense float rows of n_vocab probabilities summing to 1, made with the same
// sampler_params (sampler_probs) for draft and target: temperature, top-k and top-p belong to the
// target distribution that the output follows.
#ifndef SPECD_ENGINE_SPEC_ACCEPT_H
#define SPECD_ENGINE_SPEC_ACCEPT_H

#include <stdint.h>

#include "worker/engine/rng.h"

struct spec_accept_result {
    int n_accepted;     // a: draft tokens accepted, 0..k; d[0..a-1] are emitted
    int32_t next_token; // emitted after them: the correction (a < k) or the bonus token (a == k)
};

// Stochastic rule. For i = 0, 1, ...: draw u (rng_uniform) and accept d[i] iff
// u * q[i][d[i]] < p[i][d[i]] (probability min(1, p/q)). At the first rejection the next token is
// drawn from normalize(max(0, p[i] - q[i])); if all k are accepted it is drawn from p[k].
//
// draft:        [k] token ids in 0..n_vocab-1.
// draft_probs:  [k][n_vocab] q rows, or NULL for a deterministic proposer (n-gram): q[i] is then
//               one-hot on d[i], so d[i] is accepted with probability p[i][d[i]] and the
//               correction is drawn from p[i] with d[i] removed.
// target_probs: [k+1][n_vocab] p rows.
// Edge cases (documented choices):
//   - q[i][d[i]] <= 0 (or NaN): the given q cannot have produced d[i], so the proposal is treated
//     as deterministic at that position (q one-hot on d[i], as with NULL). This never accepts more
//     often than the target allows (probability p[i][d[i]]).
//   - p[i][d[i]] == 0: never accepted.
//   - the residual max(0, p - q) sums to 0 (p == q up to rounding, so a rejection should not have
//     happened): the next token is drawn from p[i].
// Random draws, always in this order: one uniform per examined draft position (positions
// 0..a, or 0..k-1 when all are accepted; drawn even when p >= q makes acceptance certain), then
// exactly one uniform for the correction or bonus token (via sampler_sample's inverse CDF). So a
// step takes a + 2 draws when it rejects at position a and k + 1 when it accepts all.
// Returns 0, or SPECD_ERR_INVALID (k < 0, n_vocab <= 0, NULL pointers, a draft id out of range, or
// a p row with no positive entry where one is sampled); *out and the generator are then in an
// unspecified state. Cost: O((a + 1) * n_vocab).
int spec_accept_sample(int k, const int32_t *draft, const float *draft_probs,
                       const float *target_probs, int n_vocab, struct rng_state *rng,
                       struct spec_accept_result *out);

// Greedy rule (temperature 0): accept d[i] while it equals sampler_argmax(target_logits[i]); the
// next token is the target argmax at the first mismatch, or at position k. Takes no random draws.
// target_logits: [k+1][n_vocab] logits (or any rows with the same argmax, such as probabilities).
// Returns 0 or SPECD_ERR_INVALID (k < 0, n_vocab <= 0, NULL pointers, a draft id out of range).
int spec_accept_greedy(int k, const int32_t *draft, const float *target_logits, int n_vocab,
                       struct spec_accept_result *out);

#endif
