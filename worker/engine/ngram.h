// N-gram (prompt lookup) proposer: drafts tokens by finding the most recent earlier occurrence of
// the sequence's last n tokens (n from max_n down to min_n) in its own prompt and generated text
// and proposing the tokens that followed it. No model; the draft distribution is one-hot.
#ifndef SPECD_ENGINE_NGRAM_H
#define SPECD_ENGINE_NGRAM_H

#include <stdint.h>

// Writes up to k proposed tokens to out and returns how many (0 when no suffix of length
// min_n..max_n occurs earlier in tokens[0..n)).
int ngram_propose(const int32_t *tokens, int32_t n, int32_t min_n, int32_t max_n, int32_t k,
                  int32_t *out);

#endif
