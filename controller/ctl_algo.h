// The controller's adaptive speculation-depth algorithm: a pure module (no sockets, no clocks;
// time is passed in) from per-step worker metrics and a policy (controller/ctl_policy.h) to
// speculation settings and logged decisions. Not thread-safe: the service serialises calls.
//
// Tracking. Every worker (by id) and every request class within it (by name, at most
// SPEC_MAX_CLASSES per worker; further classes are counted and ignored) gets its own state on
// its first metrics, and is forgotten after worker_timeout_ms of silence. Besides its classes,
// each worker has an aggregate track named CTL_CLASS_ALL ("*") estimated from the step-level
// counters: its decision is the worker's default setting (spec_settings.enabled/depth) and
// applies to classes the controller has not seen yet; each tracked class gets its own entry in
// spec_settings.classes[].
//
// Estimators.
//  - Acceptance, per track: exponentially weighted sums (weights halve every half_life_ms of
//    observation time) of drafted, accepted, and per position i of drafted_at[i], accepted_at[i]
//    and trials_at[i] = sequences that reached position i (drafted_at[0]; for i > 0
//    min(accepted_at[i-1], drafted_at[i]) per class). accepted_at[i] is read as "tokens 0..i all
//    accepted" (acceptance stops at the first rejection). The acceptance rate is
//    accepted / drafted (threshold mode, logs). The conditional acceptance of position i is
//    accepted_at[i] / trials_at[i], shrunk towards the pooled alpha = sum accepted_at / sum
//    trials_at; positions not drafted within half_life_ms of position 0 (beyond the current
//    depth) use alpha. Their running product is the survival curve S_i, and the expected
//    tokens emitted per sequence at depth k are E(k) = 1 + S_0 + ... + S_{k-1}. Shifts: when
//    the first-position acceptance of the evidence since the previous tick differs from the
//    weighted one by more than 0.05 and 5 standard errors, the sums restart from that evidence
//    (domain shift, collapse: noticed within an interval or two).
//  - Cost, per worker (controller/ctl_estimate.h): running means in cells, for the verify pass
//    per (drafted tokens per sequence, log2 batch) and for the draft pass per log2 sequences
//    per pass, fitted by weighted least squares (weight = samples, halved every
//    cost_half_life_ms of staleness relative to the newest cell, floored at 1e-3 so that old
//    cells still give the slope):
//        t_verify = a + b * tokens,    tokens = batch_size + drafted + prefill_tokens
//        t_draft  = k * (c + d * n),   n = drafted / k  (sequences per draft pass)
//    Prediction at depth k uses the mean batch B and prefill P:
//        t(k) = a + b*(B*(k+1) + P) + k*(c + d*B) + overhead,  overhead = mean of
//        t_step - t_draft - t_verify;  G(k) = 1000 * B * E(k) / t(k) tokens/s, G(0) plain.
//    A verify slope is only trusted once two cells with CTL_CELL_MIN_SAMPLES samples lie half a
//    depth step of tokens apart. Until then goodput mode explores: it moves to the less-sampled
//    neighbouring depth once the current one has its samples (at most 4 moves per track; a fit
//    with a single x has slope 0). Costs are per worker: a class is decided as if the whole
//    batch used its k.
//
// Decisions (ctl_algo_tick). Goodput mode: the target is the argmax of G over [max(min,1), max],
// or off when G(0) beats that by hysteresis_margin; it is proposed when it beats the current
// k's prediction by the margin, and applied once proposed on hold_intervals consecutive ticks.
// Threshold mode: see ctl_policy.h, same holding. Off (both modes): every probe_interval_ms a
// probe sets probe_depth for probe_duration_ms with fresh acceptance estimates; at its end,
// re-enable (goodput: at the best k if it beats plain decoding by the margin; threshold: at
// probe_depth if the acceptance rate is above low_threshold) or stay off. Static mode and
// out-of-bounds depths apply at once.
#ifndef SPECD_CONTROLLER_CTL_ALGO_H
#define SPECD_CONTROLLER_CTL_ALGO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "controller/ctl_policy.h"
#include "shared/spec_metrics.h"

#define CTL_WORKER_ID_LEN 64
#define CTL_CLASS_ALL "*" // class name of a worker's aggregate track in records and info

typedef struct ctl_algo ctl_algo;

enum ctl_reason {
    CTL_REASON_HOLD = 0,          // no change: current k is best (within the margin) / in band
    CTL_REASON_PENDING,           // a change is proposed, not yet held for hold_intervals
    CTL_REASON_INSUFFICIENT_DATA, // too little evidence (acceptance, cost samples): no change
    CTL_REASON_RAISE,             // depth increased
    CTL_REASON_LOWER,             // depth decreased
    CTL_REASON_EXPLORE,           // goodput: moved to a neighbouring depth to learn how the
                                  // verify cost grows with k (only one depth observed so far)
    CTL_REASON_DISABLE,           // speculation turned off
    CTL_REASON_OFF,               // off, waiting for the next probe
    CTL_REASON_PROBE,             // a probe is running (settings: enabled at the probe depth)
    CTL_REASON_REENABLE,          // a probe showed that speculation pays again: enabled
    CTL_REASON_PROBE_FAILED,      // a probe ended without evidence for speculation: stays off
    CTL_REASON_STATIC,            // static mode pin
    CTL_REASON_BOUNDS,            // moved into the policy's depth bounds at once
    CTL_REASON_FORGOTTEN,         // silent for worker_timeout_ms: state dropped
    CTL_REASON_COUNT
};

// One decision about one track, with its inputs, for the service to log.
struct ctl_decision {
    uint64_t now_ms;
    char worker[CTL_WORKER_ID_LEN];
    char class_name[SPEC_CLASS_NAME_LEN]; // CTL_CLASS_ALL for the worker default
    enum ctl_mode mode;
    enum ctl_reason reason;
    bool changed;              // the track's effective setting changed on this tick
    bool old_enabled, enabled; // effective (a probe counts as enabled)
    uint32_t old_depth, depth; // effective k (0 when off)
    bool probing;
    bool shift;                         // acceptance shift detected: estimates restarted from the
                                        // last interval's evidence
    enum ctl_reason pending;            // RAISE/LOWER/EXPLORE/DISABLE held, else HOLD
    uint32_t pending_count;             // consecutive ticks it has been proposed
    uint32_t pending_depth;             // the k it would set (0 = off)
    double acceptance;                  // weighted accepted / drafted; NAN when unknown
    double alpha;                       // pooled per-position acceptance; NAN when unknown
    double evidence;                    // weighted drafted tokens behind the estimates
    uint32_t n_goodput;                 // entries of goodput[] filled (0: no cost model)
    double goodput[SPEC_MAX_DEPTH + 1]; // [k] predicted tokens/s at depth k, k = 0 plain
};

struct ctl_cost_info {
    bool verify_valid, draft_valid;
    double verify_base_ms; // t_verify = verify_base_ms + verify_per_token_ms * tokens
    double verify_per_token_ms;
    double draft_per_pass_ms; // t_draft = k * (draft_per_pass_ms + draft_per_seq_ms * n)
    double draft_per_seq_ms;
    double overhead_ms;    // mean of t_step - t_draft - t_verify
    double batch_mean;     // weighted mean batch_size
    double prefill_mean;   // weighted mean prefill_tokens per step
    uint32_t verify_cells; // cells with data
    uint32_t draft_cells;
};

struct ctl_class_info {
    char name[SPEC_CLASS_NAME_LEN]; // CTL_CLASS_ALL for the aggregate
    enum ctl_mode mode;
    bool enabled, probing;    // effective
    uint32_t depth;           // effective k (0 when off)
    double acceptance, alpha; // NAN when unknown
    double evidence;
    double survival[SPEC_MAX_DEPTH]; // [i] estimated P(draft tokens 0..i accepted); NAN unknown
    uint64_t last_seen_ms, steps_observed;
    enum ctl_reason last_reason;
};

struct ctl_worker_info {
    char id[CTL_WORKER_ID_LEN];
    uint64_t last_seen_ms, steps_observed;
    struct ctl_cost_info cost;
    struct spec_settings settings; // as ctl_algo_settings returns them
    struct ctl_class_info all;     // aggregate track (the worker default)
    uint32_t n_classes;
    struct ctl_class_info classes[SPEC_MAX_CLASSES];
};

// Counters for Prometheus (monotonic unless noted).
struct ctl_counters {
    uint64_t decisions[CTL_REASON_COUNT]; // by reason
    uint64_t workers_tracked;             // gauge
    uint64_t classes_tracked;             // gauge, aggregate tracks excluded
    uint64_t observations;                // accepted ctl_algo_observe calls
    uint64_t observations_rejected;       // malformed metrics or bad worker id
    uint64_t workers_refused;             // observations refused: max_workers reached
    uint64_t classes_dropped;             // class entries ignored: class table full
    uint64_t settings_changes;            // epoch increments
    uint64_t ticks;
};

// Creates the algorithm with a copy of `policy`. Returns NULL when the policy is invalid (check
// ctl_policy_validate first for the reason) or memory runs out.
ctl_algo *ctl_algo_new(const struct ctl_policy *policy);
// Frees everything. Accepts NULL.
void ctl_algo_free(ctl_algo *algo);

// Replaces the policy; state is kept and the next tick applies the new policy (depths outside
// new bounds move at once). Returns SPECD_OK, or SPECD_ERR_INVALID with the reason (policy
// unchanged).
int ctl_algo_set_policy(ctl_algo *algo, const struct ctl_policy *policy, char *reason,
                        size_t reason_size);
// The current policy (owned by algo, valid until the next set_policy/free).
const struct ctl_policy *ctl_algo_policy(const ctl_algo *algo);

// Records one engine step of worker `worker_id` observed at now_ms. Returns SPECD_OK;
// SPECD_SOFT_FULL when the worker is new and max_workers are tracked (ignored);
// SPECD_ERR_INVALID for NULL arguments or an id that fails ctl_name_is_valid (length
// CTL_WORKER_ID_LEN); SPECD_ERR_FORMAT for inconsistent metrics (counts beyond bounds, accepted
// > drafted, negative or non-finite times, bad class names): ignored; SPECD_ERR_NOMEM. Nothing
// changes on failure.
int ctl_algo_observe(ctl_algo *algo, const char *worker_id, const struct spec_step_metrics *m,
                     uint64_t now_ms);

// Runs one decision round at now_ms: forgets silent workers/classes, decides every track and
// rebuilds each worker's settings. Writes up to `cap` records to `out` (may be NULL when cap is
// 0): per worker the aggregate track then its classes, workers in id order. Returns the number
// of decisions made (more than cap: the rest were applied but not written).
size_t ctl_algo_tick(ctl_algo *algo, uint64_t now_ms, struct ctl_decision *out, size_t cap);

// The settings to publish to `worker_id`. epoch is 0 before the worker's first tick and
// increases by one whenever the settings change. min/max_depth are the union of the global and
// override bounds. Returns SPECD_OK, SPECD_SOFT_EMPTY for an unknown worker (out zeroed), or
// SPECD_ERR_INVALID.
int ctl_algo_settings(const ctl_algo *algo, const char *worker_id, struct spec_settings *out);

// Workers, in id order, for GET /v1/workers.
size_t ctl_algo_worker_count(const ctl_algo *algo);
// Returns SPECD_OK, or SPECD_ERR_INVALID when index >= count.
int ctl_algo_worker_info(const ctl_algo *algo, size_t index, struct ctl_worker_info *out);
// Returns SPECD_OK, SPECD_SOFT_EMPTY for an unknown worker, or SPECD_ERR_INVALID.
int ctl_algo_worker_info_by_id(const ctl_algo *algo, const char *worker_id,
                               struct ctl_worker_info *out);
// Drops a worker at once (it deregistered). Returns SPECD_OK or SPECD_SOFT_EMPTY if unknown.
int ctl_algo_forget_worker(ctl_algo *algo, const char *worker_id);

void ctl_algo_counters(const ctl_algo *algo, struct ctl_counters *out);

// "hold", "pending", "insufficient_data", "raise", "lower", "explore", "disable", "off", "probe",
// "reenable", "probe_failed", "static", "bounds", "forgotten"; "unknown" otherwise.
const char *ctl_reason_name(enum ctl_reason reason);

// One key=value line (no newline), e.g.
//   decision worker=w1 class=* mode=goodput reason=lower changed=1 old_enabled=1 enabled=1
//   old_depth=4 depth=3 probing=0 shift=0 pending=hold pending_count=0 pending_depth=0
//   acceptance=0.5310 alpha=0.6012 evidence=1520.3 goodput=410.2,520.7,...
// Unknown values print as "nan". Returns the length it needed (as snprintf; the line is cut to
// fit and NUL-terminated when size > 0).
int ctl_decision_format(const struct ctl_decision *d, char *buf, size_t size);

#endif
