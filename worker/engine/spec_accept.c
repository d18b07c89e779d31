#include "worker/engine/spec_accept.h"

#include <stddef.h>

#include "shared/status.h"
#include "worker/engine/sampler.h"

static int check_drafts(int k, const int32_t *draft, int n_vocab) {
    if (k < 0 || n_vocab <= 0 || (k > 0 && !draft))
        return SPECD_ERR_INVALID;
    for (int i = 0; i < k; i++)
        if (draft[i] < 0 || draft[i] >= n_vocab)
            return SPECD_ERR_INVALID;
    return SPECD_OK;
}

// Draws from normalize(max(0, p - q)), q being the row `q` or, when q is NULL, one-hot on
// `token`. Falls back to p when the residual has no mass. Takes exactly one uniform.
// Returns the token or SPECD_ERR_INVALID.
static int sample_residual(const float *p, const float *q, int32_t token, int n,
                           struct rng_state *rng) {
    double total = 0.0;
    for (int x = 0; x < n; x++) {
        float r = q ? p[x] - q[x] : (x == token ? p[x] - 1.0f : p[x]);
        if (r > 0.0f)
            total += r;
    }
    if (!(total > 0.0))
        return sampler_sample(p, n, rng);
    double u = rng_uniform(rng) * total, acc = 0.0;
    int last = -1;
    for (int x = 0; x < n; x++) {
        float r = q ? p[x] - q[x] : (x == token ? p[x] - 1.0f : p[x]);
        if (r > 0.0f) {
            acc += r;
            last = x;
            if (u < acc)
                return x;
        }
    }
    return last; // u rounded up to the total
}

int spec_accept_sample(int k, const int32_t *draft, const float *draft_probs,
                       const float *target_probs, int n_vocab, struct rng_state *rng,
                       struct spec_accept_result *out) {
    if (!target_probs || !rng || !out || check_drafts(k, draft, n_vocab) != SPECD_OK)
        return SPECD_ERR_INVALID;
    size_t row = (size_t)n_vocab;
    for (int i = 0; i < k; i++) {
        const float *p = target_probs + (size_t)i * row;
        const float *q = draft_probs ? draft_probs + (size_t)i * row : NULL;
        int32_t d = draft[i];
        float qd = q ? q[d] : 1.0f;
        if (!(qd > 0.0f)) { // this q cannot have proposed d: treat the proposal as deterministic
            q = NULL;
            qd = 1.0f;
        }
        double u = rng_uniform(rng);
        if (u * qd < p[d])
            continue;
        int t = sample_residual(p, q, d, n_vocab, rng);
        if (t < 0)
            return t;
        out->n_accepted = i;
        out->next_token = t;
        return SPECD_OK;
    }
    int t = sampler_sample(target_probs + (size_t)k * row, n_vocab, rng);
    if (t < 0)
        return t;
    out->n_accepted = k;
    out->next_token = t;
    return SPECD_OK;
}

int spec_accept_greedy(int k, const int32_t *draft, const float *target_logits, int n_vocab,
                       struct spec_accept_result *out) {
    if (!target_logits || !out || check_drafts(k, draft, n_vocab) != SPECD_OK)
        return SPECD_ERR_INVALID;
    int i = 0;
    int best = sampler_argmax(target_logits, n_vocab);
    while (i < k && draft[i] == best) {
        i++;
        best = sampler_argmax(target_logits + (size_t)i * n_vocab, n_vocab);
    }
    out->n_accepted = i;
    out->next_token = best;
    return SPECD_OK;
}
