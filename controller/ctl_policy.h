// Controller policy: how the adaptive speculation-depth algorithm (controller/ctl_algo.h) picks
// the draft depth k of each worker and request class.
//
// Modes:
//   goodput    (default) pick the k in [min_depth, max_depth] that maximises predicted emitted
//              tokens per second; off when no k beats plain decoding; probes while off.
//   threshold  raise k by one while the weighted acceptance rate (accepted / drafted) is above
//              target_acceptance, lower it below low_threshold, disable below
//              critical_threshold; while off, probe and re-enable when a probe measures an
//              acceptance rate above low_threshold.
//   static     pin static_depth (0 = speculation off); no probing.
//
// Depth bounds: an enabled class runs k in [max(min_depth, 1), max_depth]; "off" (plain
// decoding, k = 0) is always allowed in goodput and threshold modes, and max_depth = 0 means
// always off.
#ifndef SPECD_CONTROLLER_CTL_POLICY_H
#define SPECD_CONTROLLER_CTL_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/spec_metrics.h"

#define CTL_MAX_OVERRIDES 16

enum ctl_mode { CTL_MODE_GOODPUT = 0, CTL_MODE_THRESHOLD = 1, CTL_MODE_STATIC = 2 };

// Per-class override: the class (by name, as the worker reports it) is decided with these
// values instead of the global ones. Every field applies; ctl_policy_add_override() fills them
// from the global policy so that a caller changes only what it means to.
struct ctl_class_override {
    char name[SPEC_CLASS_NAME_LEN];
    enum ctl_mode mode;
    uint32_t min_depth;
    uint32_t max_depth;
    uint32_t static_depth;
};

struct ctl_policy {
    enum ctl_mode mode;

    // threshold mode; acceptance rate = accepted / drafted, exponentially weighted.
    // Must satisfy 0 < critical_threshold < low_threshold < target_acceptance < 1.
    double target_acceptance;  // raise k by one above this
    double low_threshold;      // lower k by one below this; re-enable above it after a probe
    double critical_threshold; // disable below this

    uint32_t min_depth; // 0 <= min_depth <= max_depth <= SPEC_MAX_DEPTH
    uint32_t max_depth;
    uint32_t static_depth; // static mode; 0 = off, else in [max(min_depth,1), max_depth]

    uint32_t interval_ms;       // period at which the service calls ctl_algo_tick (> 0)
    uint32_t half_life_ms;      // acceptance estimates: weight of an observation halves
                                // every half_life_ms (> 0)
    uint32_t cost_half_life_ms; // cost model: recency weighting of (depth, batch) cells (> 0)
    double min_drafted;         // evidence (weighted drafted tokens) needed before a class's
                                // acceptance estimate is used (>= 1)

    double hysteresis_margin; // goodput: a new k must be predicted better than the current
                              // one by this fraction, [0, 1)
    uint32_t hold_intervals;  // a change must be proposed on this many consecutive ticks
                              // (>= 1; bounds corrections and static pins apply at once)

    uint32_t probe_interval_ms; // while off: time from the end of one probe to the next
    uint32_t probe_duration_ms; // a probe lasts until the first tick this long after its start
                                // (>= interval_ms, < probe_interval_ms), up to 4 times longer
                                // while it has less than min_drafted evidence
    uint32_t probe_depth;       // k used while probing, in [1, SPEC_MAX_DEPTH] (clamped to the
                                // class's bounds when applied)

    uint32_t worker_timeout_ms; // forget a worker (and a class) silent for this long
                                // (> interval_ms)
    uint32_t settings_ttl_ms;   // published in spec_settings.ttl_ms; 0 = none, else > interval_ms
    uint32_t max_workers;       // observations from further workers are refused (>= 1)

    uint32_t n_overrides;
    struct ctl_class_override overrides[CTL_MAX_OVERRIDES]; // unique, non-empty names
};

// The defaults: goodput mode, k in [1, 8], 1 s interval, 5 s acceptance half-life, 3 % margin
// held 2 ticks, 1 s probes at k = 2 every 10 s, workers forgotten after 30 s.
struct ctl_policy ctl_policy_default(void);

// Checks every field. Returns SPECD_OK, or SPECD_ERR_INVALID with a one-line reason naming the
// field in `reason` (when not NULL), e.g. "low_threshold must be < target_acceptance".
int ctl_policy_validate(const struct ctl_policy *policy, char *reason, size_t reason_size);

// Appends an override for class `name`, initialised from the global mode and depths. Returns it,
// or NULL when the table is full, the name is empty/too long or already overridden.
struct ctl_class_override *ctl_policy_add_override(struct ctl_policy *policy, const char *name);

// The override for `class_name`, or NULL.
const struct ctl_class_override *ctl_policy_find_override(const struct ctl_policy *policy,
                                                          const char *class_name);

// True when `name` can be a class or worker name: 1 to max_len - 1 bytes of printable ASCII
// other than space, '=', '"' and backslash (so that key=value log lines stay parseable).
bool ctl_name_is_valid(const char *name, size_t max_len);

// "goodput", "threshold", "static"; "unknown" for anything else. Never NULL.
const char *ctl_mode_name(enum ctl_mode mode);
// Parses a mode name. Returns SPECD_OK or SPECD_ERR_INVALID.
int ctl_mode_parse(const char *name, enum ctl_mode *out);

#endif
