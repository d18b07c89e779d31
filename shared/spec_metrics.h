// Plain structs that cross module and process boundaries: the engine's per-step speculation
// metrics (worker -> controller) and the speculation settings (controller -> worker).
// The wire encoding lives in shared/proto_*.{h,c}; docs/protocol.md describes it.
#ifndef SPECD_SHARED_SPEC_METRICS_H
#define SPECD_SHARED_SPEC_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#define SPEC_MAX_DEPTH 16  // hard upper bound on draft depth k anywhere in specd
#define SPEC_MAX_CLASSES 8 // request classes tracked per step / per settings message
#define SPEC_CLASS_NAME_LEN 32

// Speculation counters of one request class within one engine step.
struct spec_class_metrics {
    char name[SPEC_CLASS_NAME_LEN];      // NUL-terminated; "default" for unlabelled requests
    uint32_t n_seqs;                     // sequences of this class in the step
    uint32_t n_speculating;              // of which drafted at least one token
    uint32_t depth;                      // largest k used by this class in the step
    uint32_t drafted;                    // draft tokens proposed
    uint32_t accepted;                   // draft tokens accepted
    uint32_t emitted;                    // tokens emitted (accepted + one bonus/correction per seq)
    uint32_t drafted_at[SPEC_MAX_DEPTH]; // [i] sequences that drafted a token at position i
    uint32_t accepted_at[SPEC_MAX_DEPTH]; // [i] sequences whose draft tokens 0..i were all
                                          // accepted (acceptance stops at the first rejection)
};

// One engine step.
struct spec_step_metrics {
    uint64_t step;           // engine step number, from 0
    uint32_t batch_size;     // sequences in the step (decoding + prefilling)
    uint32_t n_speculating;  // sequences that drafted at least one token
    uint32_t depth;          // largest k in use this step
    uint32_t drafted;        // sum over classes
    uint32_t accepted;       // sum over classes
    uint32_t emitted;        // sum over classes
    uint32_t prefill_tokens; // prompt tokens processed in this step
    uint32_t drafted_at[SPEC_MAX_DEPTH];
    uint32_t accepted_at[SPEC_MAX_DEPTH];
    double t_draft_ms;       // time in the proposer (draft forward passes or n-gram lookup)
    double t_verify_ms;      // time in the target forward pass and acceptance
    double t_step_ms;        // whole step, scheduling included
    uint32_t kv_blocks_used; // target KV cache
    uint32_t kv_blocks_total;
    uint32_t preemptions; // sequences preempted in this step
    uint32_t n_classes;   // entries used in classes[]
    struct spec_class_metrics classes[SPEC_MAX_CLASSES];
};

// Per-class override inside a settings message.
struct spec_class_setting {
    char name[SPEC_CLASS_NAME_LEN];
    bool enabled;
    uint32_t depth;
};

// Speculation settings pushed by the controller; applied by the engine between steps.
struct spec_settings {
    uint64_t epoch;     // increases whenever a decision changes; 0 = the worker's own default
    bool enabled;       // false: plain decoding for every class without an override
    uint32_t depth;     // default k
    uint32_t min_depth; // bounds the worker must respect
    uint32_t max_depth;
    uint32_t ttl_ms; // the worker falls back to its safe default when no settings arrive
                     // for longer than this; a repeat of the epoch in force refreshes it
    uint32_t n_classes;
    struct spec_class_setting classes[SPEC_MAX_CLASSES];
};

#endif
