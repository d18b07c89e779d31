// Estimators of the controller algorithm (controller/ctl_algo.h describes the method): the
// per-track acceptance estimate with its per-position survival curve, and the per-worker cost
// model of draft and verify passes. Plain structs embedded in the algorithm's state; pure
// functions of what was added and of the time passed in.
#ifndef SPECD_CONTROLLER_CTL_ESTIMATE_H
#define SPECD_CONTROLLER_CTL_ESTIMATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/spec_metrics.h"

#define CTL_BATCH_BUCKETS 12    // log2 buckets of sizes: 1, 2-3, 4-7, ..., >= 2048
#define CTL_CELL_MIN_SAMPLES 24 // samples before a cost cell counts towards ctl_line.x_spread

// ---- acceptance --------------------------------------------------------------------------------

// Exponentially weighted sums; zero-initialise.
struct ctl_accept_est {
    uint64_t last_ms; // time the sums were last decayed to
    double drafted, accepted;
    double drafted_at[SPEC_MAX_DEPTH];   // [i]
    double accepted_at[SPEC_MAX_DEPTH];  // [i]
    double trials_at[SPEC_MAX_DEPTH];    // [i] sequences that reached position i
    uint64_t drafted_ms[SPEC_MAX_DEPTH]; // [i] last time position i was drafted
};

struct ctl_accept_view {
    bool valid;                      // evidence >= min_drafted
    double acceptance;               // accepted / drafted; NAN without data
    double alpha;                    // pooled conditional acceptance per position; NAN without data
    double evidence;                 // weighted drafted tokens
    double survival[SPEC_MAX_DEPTH]; // [i] P(draft tokens 0..i all accepted); NAN without data
};

// The counts of one step for one track.
struct ctl_step_counts {
    uint32_t drafted, accepted;
    const uint32_t *drafted_at;  // [SPEC_MAX_DEPTH]
    const uint32_t *accepted_at; // [SPEC_MAX_DEPTH]
    double trials_at[SPEC_MAX_DEPTH];
};

// Adds the sequences that reached each position to trials_at: every drafter at position 0, then
// min(accepted_at[i-1], drafted_at[i]) (exact when the sequences used one depth).
void ctl_add_trials(double *trials_at, const uint32_t *drafted_at, const uint32_t *accepted_at);
// Fills c from one class's (or one step's) counters, trials_at computed by ctl_add_trials.
void ctl_step_counts_init(struct ctl_step_counts *c, uint32_t drafted, uint32_t accepted,
                          const uint32_t *drafted_at, const uint32_t *accepted_at);
// Decays the sums to now_ms (weights halve every half_life_ms; 0: no decay) and adds the counts.
void ctl_accept_add(struct ctl_accept_est *e, const struct ctl_step_counts *c, uint64_t now_ms,
                    uint32_t half_life_ms);
// Current estimates. Positions drafted within half_life_ms of position 0 use their own
// acceptance (shrunk towards alpha); later ones (beyond the depth in use) use alpha.
void ctl_accept_estimate(const struct ctl_accept_est *e, uint32_t half_life_ms, double min_drafted,
                         struct ctl_accept_view *v);
// Compares the first-position acceptance of `recent` (e.g. the evidence since the last tick)
// with that of `slow`; when both have >= 32 weighted drafts there and they differ by more than
// 0.05 and 5 standard errors, copies recent into slow and returns true.
bool ctl_accept_detect_shift(struct ctl_accept_est *slow, const struct ctl_accept_est *recent);
// Expected tokens emitted per sequence at depth k: 1 + survival[0] + ... + survival[k-1].
double ctl_expected_tokens(const struct ctl_accept_view *v, uint32_t k);

// ---- cost --------------------------------------------------------------------------------------

struct ctl_cost_cell {
    double n;    // samples
    double x, y; // running means (about the last 64 samples)
    uint64_t last_ms;
};

struct ctl_running_mean {
    double n, mean;
};

// Zero-initialise.
struct ctl_cost_model {
    // [round(drafted / batch_size)][batch bucket]: the depth when the batch shares one
    struct ctl_cost_cell verify[(SPEC_MAX_DEPTH + 1) * CTL_BATCH_BUCKETS];
    struct ctl_cost_cell draft[CTL_BATCH_BUCKETS]; // [sequences-per-pass bucket]
    struct ctl_running_mean batch, prefill, overhead;
};

struct ctl_line {
    bool valid;
    double a, b;     // y = a + b x, a >= 0, b >= 0
    uint32_t cells;  // cells with data
    double x_spread; // max - min x over cells with >= CTL_CELL_MIN_SAMPLES samples: the slope
                     // is trusted when this is a sizeable part of the x step between depths
};

struct ctl_cost_fit {
    struct ctl_line verify;          // t_verify_ms vs tokens = batch + drafted + prefill
    struct ctl_line draft;           // t_draft_ms / k vs sequences per draft pass
    double batch, prefill, overhead; // running means per step
};

// Adds one step (ignored when batch_size is 0).
void ctl_cost_add(struct ctl_cost_model *c, const struct spec_step_metrics *m, uint64_t now_ms);
// Weighted least squares over `n` cells: weight = min(samples, 64) * 2^(-staleness/half_life)
// floored at 1e-3, staleness relative to the newest cell. Slope 0 when all x are equal; a
// negative slope is clamped to 0, a negative intercept refits through the origin.
struct ctl_line ctl_fit_cells(const struct ctl_cost_cell *cells, size_t n, uint32_t half_life_ms);
// Samples in the verify cell of (depth, batch size): steps with about `depth` drafted tokens
// per sequence; 0 for depth > SPEC_MAX_DEPTH.
double ctl_cost_verify_samples(const struct ctl_cost_model *c, uint32_t depth, double batch);
struct ctl_cost_fit ctl_cost_fit_get(const struct ctl_cost_model *c, uint32_t half_life_ms);
// Fills g[0..hi] (hi <= SPEC_MAX_DEPTH) with predicted tokens/s per depth (NAN where unknown):
// g[k] = 1000 * B * E(k) / (a + b*(B*(k+1) + P) + k*(c + d*B) + overhead). Returns hi + 1, or
// 0 without a verify model.
uint32_t ctl_predict_goodput(const struct ctl_cost_fit *f, const struct ctl_accept_view *v,
                             uint32_t hi, double *g);

#endif
