// A simulated speculative-decoding worker for testing and demonstrating the controller
// algorithm (controller/ctl_algo.h). It has a known acceptance alpha(t) per class (piecewise
// constant: domain shift, collapse, recovery), known cost curves and seeded noise; it applies
// spec_settings as a worker would and produces spec_step_metrics one engine step at a time,
// advancing its own clock by each step's duration.
//
// Per step: every sequence of a class drafts k tokens (its class setting, else the default; 0
// when off); token i is accepted with probability alpha if tokens 0..i-1 were, and the first
// rejection ends the sequence's drafts (so accepted_at[i] counts sequences with 0..i accepted).
//   t_verify = verify_base_ms + verify_per_token_ms * (batch + drafted + prefill_tokens)
//   t_draft  = sum over draft passes p < max k of (draft_per_pass_ms + draft_per_seq_ms * n_p),
//              n_p = sequences drafting at position p
//   t_step   = t_draft + t_verify + overhead_ms
// each time multiplied by max(0.05, 1 + noise * N(0,1)). With one depth k for a batch of B
// sequences and no noise: t_step = verify_base + verify_per_token*(B*(k+1) + prefill)
// + k*(draft_per_pass + draft_per_seq*B) + overhead.
#ifndef SPECD_CONTROLLER_CTL_SIM_H
#define SPECD_CONTROLLER_CTL_SIM_H

#include <stdbool.h>
#include <stdint.h>

#include "shared/spec_metrics.h"

#define CTL_SIM_MAX_PHASES 8

typedef struct ctl_sim ctl_sim;

struct ctl_sim_phase {
    double start_ms; // simulated time the phase starts
    double alpha;    // per-position acceptance probability, [0, 1]
};

struct ctl_sim_class {
    char name[SPEC_CLASS_NAME_LEN];
    uint32_t n_seqs;   // sequences of this class in every step
    uint32_t n_phases; // 1..CTL_SIM_MAX_PHASES, start_ms increasing, phases[0].start_ms = 0
    struct ctl_sim_phase phases[CTL_SIM_MAX_PHASES];
};

struct ctl_sim_params {
    uint64_t seed;
    uint32_t n_classes; // 1..SPEC_MAX_CLASSES
    struct ctl_sim_class classes[SPEC_MAX_CLASSES];
    bool report_classes;     // fill per-class metrics (false: n_classes = 0 in the metrics)
    uint32_t prefill_tokens; // prompt tokens in every step
    double verify_base_ms;   // > 0 (every step advances the clock)
    double verify_per_token_ms;
    double draft_per_pass_ms;
    double draft_per_seq_ms;
    double overhead_ms;
    double noise;         // relative standard deviation of each time, [0, 1]
    bool default_enabled; // the worker's own settings (before any epoch > 0, after a TTL)
    uint32_t default_depth;
};

// One class "default" of 8 sequences with alpha 0.7; verify 20 ms + 0.05 ms/token; draft
// 0.5 ms/pass + 0.02 ms/sequence; noise 5 %; default depth 4, enabled; seed 1.
struct ctl_sim_params ctl_sim_default_params(void);

// Returns NULL for invalid parameters or when out of memory.
ctl_sim *ctl_sim_new(const struct ctl_sim_params *params);
// Accepts NULL.
void ctl_sim_free(ctl_sim *sim);

// Applies settings as the engine would: only when s->epoch is above the applied epoch (the same
// epoch again only refreshes the TTL); enabled depths are clamped to [min_depth, max_depth];
// after s->ttl_ms (> 0) without settings the worker falls back to its defaults. Returns
// SPECD_OK when applied, SPECD_SOFT_EMPTY when the epoch is not newer (nothing changed),
// SPECD_ERR_INVALID for NULL, inconsistent bounds or depths above SPEC_MAX_DEPTH.
int ctl_sim_apply_settings(ctl_sim *sim, const struct spec_settings *s);

// Runs one engine step and writes its metrics; the clock advances by t_step_ms.
void ctl_sim_step(ctl_sim *sim, struct spec_step_metrics *out);

// Simulated time in ms (0 at creation).
double ctl_sim_now_ms(const ctl_sim *sim);
// The true alpha of class `class_index` at simulated time t_ms (NAN for a bad index).
double ctl_sim_alpha(const ctl_sim *sim, uint32_t class_index, double t_ms);
// The depth class `class_index` runs now (0 = off), settings, defaults and TTL considered.
uint32_t ctl_sim_class_depth(const ctl_sim *sim, uint32_t class_index);

#endif
