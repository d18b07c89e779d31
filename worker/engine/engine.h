// The inference engine: continuous batching over a paged KV cache with speculative decoding.
//
// Requests join with engine_add() and leave when finished; each engine_step() runs one scheduled
// batch: the proposer (draft model or n-gram lookup) drafts up to k tokens per decoding sequence,
// the target scores every sequence's new tokens in one forward pass, lossless acceptance keeps a
// prefix of the drafts plus one token from the target, and both KV caches roll back past the
// first rejection. Only verified tokens ever reach a request's output.
//
// Threading: an engine is used from one thread at a time.
#ifndef SPECD_ENGINE_ENGINE_H
#define SPECD_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/spec_metrics.h"
#include "worker/engine/sampler.h"

typedef struct engine engine;
typedef struct tok tok;

enum engine_proposer {
    ENGINE_PROPOSER_NONE = 0,  // plain decoding only
    ENGINE_PROPOSER_DRAFT = 1, // a draft model with the target's tokenizer
    ENGINE_PROPOSER_NGRAM = 2, // prompt / generated-text lookup, no model
};

struct engine_params {
    const char *target_path;        // target model GGUF (required)
    const char *draft_path;         // draft model GGUF (proposer DRAFT)
    enum engine_proposer proposer;  // default: DRAFT when draft_path is set, else NONE
    int32_t ngram_max;              // n-gram proposer: longest suffix to match (default 4)
    int32_t ngram_min;              // shortest suffix to match (default 1)
    const char *backend;            // "cpu" (default); "cuda" once built with CUDA=1
    int n_threads;                  // CPU threads (<= 0: all CPUs)
    int32_t block_size;             // KV block size in tokens (default 16)
    int64_t kv_budget_bytes;        // KV memory of the target; the draft gets its share on top
                                    // (default 256 MiB); kv_blocks overrides when > 0
    int32_t kv_blocks;              // explicit number of target KV blocks (0: from the budget)
    int32_t max_num_seqs;           // sequences per step (default 64)
    int32_t max_num_batched_tokens; // target tokens per step, drafts included (default 512)
    int32_t n_ctx;                  // max tokens per sequence (default: the model's context)
    int32_t max_depth;              // runtime maximum draft depth, <= SPEC_MAX_DEPTH (default 8)
    int32_t depth;                  // default draft depth k (default 4; 0 = no speculation)
    bool prefix_caching;            // reuse cached KV blocks of shared prompt prefixes (default on)
};

struct engine_params engine_default_params(void);

enum engine_priority { ENGINE_PRIORITY_NORMAL = 0, ENGINE_PRIORITY_HIGH = 1 };

struct engine_request {
    const int32_t *prompt; // prompt token ids (BOS included when wanted), copied
    int32_t n_prompt;
    int32_t max_tokens;             // tokens to generate at most (>= 1)
    struct sampler_params sampling; // temperature 0 = greedy; seed for the request's generator
    const char *const *stop;        // stop strings (copied); the text ends before the first match
    int32_t n_stop;
    bool ignore_eos;        // keep generating past end-of-generation tokens
    const char *class_name; // request class for per-class depth and metrics (NULL: default)
    enum engine_priority priority;
    void *user; // caller's pointer, returned in engine_output
};

enum engine_state {
    ENGINE_STATE_WAITING = 0,   // queued, no KV yet
    ENGINE_STATE_RUNNING = 1,   // prefilling or decoding
    ENGINE_STATE_PREEMPTED = 2, // evicted for lack of KV blocks; will be recomputed
    ENGINE_STATE_FINISHED = 3,
};

enum engine_finish {
    ENGINE_FINISH_NONE = 0,
    ENGINE_FINISH_LENGTH,  // max_tokens reached
    ENGINE_FINISH_EOS,     // the model produced an end-of-generation token
    ENGINE_FINISH_STOP,    // a stop string matched
    ENGINE_FINISH_CONTEXT, // the sequence filled the context window
    ENGINE_FINISH_ABORTED, // engine_abort()
    ENGINE_FINISH_ERROR,   // the backend failed
};

const char *engine_state_name(enum engine_state s);
const char *engine_finish_name(enum engine_finish f); // "length", "eos", "stop", ...

// A request's progress. Pointers stay valid until the next engine call.
struct engine_output {
    uint64_t id;
    void *user;
    enum engine_state state;
    enum engine_finish finish;
    int32_t n_prompt;
    const int32_t *tokens; // generated tokens so far (all verified), [n_tokens]
    int32_t n_tokens;
    const char *text;  // text of the generated tokens safe to show: complete UTF-8, and no
    size_t text_len;   // prefix of a stop string held back; final once finished
    uint32_t drafted;  // draft tokens proposed for this request
    uint32_t accepted; // of which accepted
    uint32_t steps;    // engine steps that advanced this request
    uint32_t preemptions;
    int32_t cached_prompt_tokens; // prompt tokens served from the prefix cache
    double queue_ms;              // from engine_add to first scheduling
    double ttft_ms;               // from engine_add to the first generated token
    double total_ms;              // from engine_add to finish (or now)
};

// Loads the models and allocates the KV caches. Returns 0 and sets *out, or an error status with
// the reason in err (bad model file, draft vocabulary differs from the target's, out of memory).
int engine_new(const struct engine_params *params, engine **out, char *err, size_t err_size);
void engine_free(engine *e); // accepts NULL

// The target's tokenizer (owned by the engine).
const tok *engine_tokenizer(const engine *e);
const char *engine_target_name(const engine *e);
const char *engine_draft_name(const engine *e); // "ngram", "none" or the draft model's name
int32_t engine_n_ctx(const engine *e);

// Queues a request. Returns 0 and sets *id; SPECD_ERR_INVALID with the reason for a bad request
// (empty prompt, prompt + 1 token longer than the context, bad sampling values).
int engine_add(engine *e, const struct engine_request *req, uint64_t *id, char *err,
               size_t err_size);

// Runs one step. Returns 0 after a step that did work, SPECD_SOFT_EMPTY when there is nothing to
// run, SPECD_ERR_BACKEND when the backend failed (the step's requests finish with ERROR).
// metrics may be NULL.
int engine_step(engine *e, struct spec_step_metrics *metrics);

// True while any request is waiting, running or preempted.
bool engine_has_work(const engine *e);
int32_t engine_n_unfinished(const engine *e);

// Returns 0 and fills *out; SPECD_ERR_INVALID for an unknown (or released) id.
int engine_get_output(const engine *e, uint64_t id, struct engine_output *out);
// Forgets a finished request (its output becomes unavailable). Returns SPECD_ERR_STATE when it is
// not finished, SPECD_ERR_INVALID for an unknown id.
int engine_release(engine *e, uint64_t id);
// Finishes a request with reason ABORTED and frees its KV blocks.
int engine_abort(engine *e, uint64_t id);
// Ids of finished, unreleased requests, up to cap; returns the count.
int engine_finished_ids(const engine *e, uint64_t *ids, int cap);

// Speculation control, applied from the next step on. Depths are clamped to
// [settings.min_depth, min(settings.max_depth, params.max_depth)].
void engine_apply_settings(engine *e, const struct spec_settings *s);
void engine_get_settings(const engine *e, struct spec_settings *out);
// Depth for one class (creating the override); depth 0 disables speculation for it.
int engine_set_class_depth(engine *e, const char *class_name, int32_t depth);

// Current KV usage of the target cache.
void engine_kv_usage(const engine *e, int32_t *used_blocks, int32_t *total_blocks);

#endif
