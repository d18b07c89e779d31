#include "worker/engine/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "shared/status.h"

struct sampler {
    int n_vocab;
    int32_t *idx; // [n_vocab] candidate token ids, permuted by the selections
    float *w;     // [n_vocab] unnormalised weight by token id (only candidates are written)
    float *probs; // [n_vocab] output buffer of sampler_sample_logits()
};

struct sampler_params sampler_default_params(void) {
    struct sampler_params p = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .seed = 0};
    return p;
}

sampler *sampler_new(int n_vocab) {
    if (n_vocab <= 0)
        return NULL;
    sampler *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->n_vocab = n_vocab;
    s->idx = malloc((size_t)n_vocab * sizeof *s->idx);
    s->w = malloc((size_t)n_vocab * sizeof *s->w);
    s->probs = malloc((size_t)n_vocab * sizeof *s->probs);
    if (!s->idx || !s->w || !s->probs) {
        sampler_free(s);
        return NULL;
    }
    return s;
}

void sampler_free(sampler *s) {
    if (!s)
        return;
    free(s->idx);
    free(s->w);
    free(s->probs);
    free(s);
}

int sampler_argmax(const float *logits, int n) {
    if (!logits || n <= 0)
        return -1;
    int best = 0;
    float best_v = logits[0];
    for (int i = 1; i < n; i++) {
        float v = logits[i];
        if (v > best_v || (best_v != best_v && v == v)) {
            best_v = v;
            best = i;
        }
    }
    return best;
}

// ---- selection over candidate indices ------------------------------------------------------
// The order is strict and total: a token ranks above another when its logit is larger, or the
// logits are equal and its id is lower. Probability is monotone in the logit, so "most probable
// first" is this order.

static inline bool ranks_above(const float *logits, int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
}

static inline void swap_idx(int32_t *idx, int i, int j) {
    int32_t t = idx[i];
    idx[i] = idx[j];
    idx[j] = t;
}

// Partitions idx[lo..hi) (hi - lo >= 2) around a median-of-three pivot. Returns the pivot's final
// position p: idx[lo..p) rank above it, idx[p+1..hi) below it.
static int partition(int32_t *idx, int lo, int hi, const float *logits) {
    int mid = lo + (hi - lo) / 2, last = hi - 1;
    // Order idx[lo], idx[mid], idx[last] and use the middle one as the pivot.
    if (ranks_above(logits, idx[mid], idx[lo]))
        swap_idx(idx, mid, lo);
    if (ranks_above(logits, idx[last], idx[lo]))
        swap_idx(idx, last, lo);
    if (ranks_above(logits, idx[last], idx[mid]))
        swap_idx(idx, last, mid);
    swap_idx(idx, mid, last);
    int32_t pivot = idx[last];
    int store = lo;
    for (int i = lo; i < last; i++)
        if (ranks_above(logits, idx[i], pivot))
            swap_idx(idx, i, store++);
    swap_idx(idx, store, last);
    return store;
}

// Rearranges idx[0..n) so that idx[0..k) hold the k top-ranked tokens (in no particular order);
// 0 < k < n.
static void select_top_k(int32_t *idx, int n, int k, const float *logits) {
    int lo = 0, hi = n;
    while (lo < k) {
        int p = partition(idx, lo, hi, logits);
        if (p < k)
            lo = p + 1;
        else if (p > k)
            hi = p;
        else
            break;
    }
}

static void insertion_sort(int32_t *idx, int lo, int hi, const float *logits) {
    for (int i = lo + 1; i < hi; i++) {
        int32_t v = idx[i];
        int j = i;
        while (j > lo && ranks_above(logits, v, idx[j - 1])) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = v;
    }
}

// Top-p selection over idx[0..m) with weights w[token]: rearranges idx so that idx[0..c) hold the
// c top-ranked tokens and returns the smallest c >= 1 whose weight sum is >= target (m when
// rounding leaves the whole sum short of target). Expected O(m): like quickselect, but the side
// to continue on is chosen by the weight mass above the pivot.
static int select_top_mass(int32_t *idx, int m, double target, const float *logits,
                           const float *w) {
    if (target <= 0.0) {
        if (m > 1)
            select_top_k(idx, m, 1, logits);
        return 1;
    }
    int lo = 0, hi = m;
    double acc = 0.0; // weight of idx[0..lo), all ranked above idx[lo..m); acc < target
    while (hi - lo > 16) {
        int p = partition(idx, lo, hi, logits);
        double upper = acc;
        for (int i = lo; i < p; i++)
            upper += w[idx[i]];
        if (upper >= target) {
            hi = p; // the answer is within idx[lo..p)
        } else if (upper + w[idx[p]] >= target) {
            return p + 1;
        } else {
            acc = upper + w[idx[p]];
            lo = p + 1;
        }
    }
    insertion_sort(idx, lo, hi, logits);
    for (int i = lo; i < hi; i++) {
        acc += w[idx[i]];
        if (acc >= target)
            return i + 1;
    }
    return hi;
}

// ---- distributions -------------------------------------------------------------------------

static void write_one_hot(float *probs, int n, int token) {
    memset(probs, 0, (size_t)n * sizeof *probs);
    probs[token] = 1.0f;
}

int sampler_probs(sampler *s, const struct sampler_params *params, const float *logits, int n,
                  float *probs_out) {
    if (!s || !params || !logits || !probs_out || n <= 0 || n > s->n_vocab)
        return SPECD_ERR_INVALID;
    float temp = params->temperature, top_p = params->top_p;
    if (isnan(temp) || isinf(temp) || isnan(top_p))
        return SPECD_ERR_INVALID;
    float max = -INFINITY;
    for (int i = 0; i < n; i++) {
        float l = logits[i];
        if (isnan(l) || l == INFINITY)
            return SPECD_ERR_INVALID;
        if (l > max)
            max = l;
    }
    if (max == -INFINITY)
        return SPECD_ERR_INVALID;
    if (temp <= 0.0f) {
        write_one_hot(probs_out, n, sampler_argmax(logits, n));
        return SPECD_OK;
    }

    int32_t *idx = s->idx;
    float *w = s->w;
    for (int i = 0; i < n; i++)
        idx[i] = i;
    int m = n; // candidates: idx[0..m)
    if (params->top_k > 0 && params->top_k < n) {
        select_top_k(idx, n, params->top_k, logits);
        m = params->top_k; // the overall maximum is among them
    }
    double sum = 0.0;
    for (int j = 0; j < m; j++) {
        int32_t t = idx[j];
        w[t] = expf((logits[t] - max) / temp);
        sum += w[t];
    }
    if (top_p < 1.0f)
        m = select_top_mass(idx, m, (double)top_p * sum, logits, w);

    double kept = 0.0;
    for (int j = 0; j < m; j++)
        kept += w[idx[j]];
    memset(probs_out, 0, (size_t)n * sizeof *probs_out);
    double inv = 1.0 / kept; // kept >= w[top token] = 1
    for (int j = 0; j < m; j++)
        probs_out[idx[j]] = (float)(w[idx[j]] * inv);
    return SPECD_OK;
}

int sampler_sample(const float *weights, int n, struct rng_state *rng) {
    if (!weights || n <= 0 || !rng)
        return SPECD_ERR_INVALID;
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        if (!(weights[i] >= 0.0f))
            return SPECD_ERR_INVALID;
        total += weights[i];
    }
    if (!(total > 0.0) || !isfinite(total))
        return SPECD_ERR_INVALID;
    double u = rng_uniform(rng) * total;
    double acc = 0.0;
    int last = -1;
    for (int i = 0; i < n; i++) {
        if (weights[i] > 0.0f) {
            acc += weights[i];
            last = i;
            if (u < acc)
                return i;
        }
    }
    return last; // u rounded up to the total: the last token of positive weight
}

int sampler_sample_logits(sampler *s, const struct sampler_params *params, const float *logits,
                          int n, struct rng_state *rng) {
    if (!s || !params || !logits || !rng || n <= 0 || n > s->n_vocab)
        return SPECD_ERR_INVALID;
    if (params->temperature <= 0.0f)
        return sampler_argmax(logits, n);
    int rc = sampler_probs(s, params, logits, n, s->probs);
    if (rc < 0)
        return rc;
    return sampler_sample(s->probs, n, rng);
}
