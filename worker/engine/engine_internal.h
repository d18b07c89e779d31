// Internal state of the engine, shared by engine*.c only.
#ifndef SPECD_ENGINE_ENGINE_INTERNAL_H
#define SPECD_ENGINE_ENGINE_INTERNAL_H

#include "shared/check.h"
#include "worker/engine/backend.h"
#include "worker/engine/engine.h"
#include "worker/engine/kv_cache.h"
#include "worker/engine/model.h"
#include "worker/engine/rng.h"
#include "worker/engine/sampler.h"
#include "worker/engine/spec_accept.h"
#include "worker/engine/stop.h"
#include "worker/engine/tok.h"

#define ENGINE_DEFAULT_CLASS 0 // classes[0] is "default"

struct eng_class {
    char name[SPEC_CLASS_NAME_LEN];
    bool has_override; // depth/enabled below replace the global settings for this class
    bool enabled;
    int32_t depth;
};

// One request, from engine_add to engine_release.
struct eng_seq {
    uint64_t id;
    void *user;
    enum engine_state state;
    enum engine_finish finish;
    enum engine_priority priority;
    uint64_t arrival; // admission order among requests (FIFO within a priority)
    int cls;          // index into engine.classes

    int32_t *toks; // [cap_toks] committed tokens: prompt, then generated (all verified)
    int32_t n_toks;
    int32_t cap_toks;
    int32_t n_prompt;
    int32_t max_tokens;
    bool ignore_eos;
    struct sampler_params sp;
    struct rng_state rng;

    tok_stream *detok;  // generated tokens -> UTF-8
    stop_matcher *stop; // holds back a possible stop-string prefix; NULL without stop strings
    char *text;         // [text_cap] text safe to show
    size_t text_len;
    size_t text_cap;

    int32_t kv;       // target KV sequence, -1 when none
    int32_t draft_kv; // draft KV sequence, -1 when none

    // Statistics.
    uint32_t drafted, accepted, steps, preemptions;
    int32_t cached_prompt_tokens;
    double t_add_ms, t_sched_ms, t_first_ms, t_end_ms; // t_sched/t_first/t_end: 0 until set

    // This step's plan.
    int32_t plan_new; // committed tokens fed to the target (positions [kv len, kv len + plan_new))
    bool plan_decode; // only the last committed token is uncomputed (not a prompt chunk)
    int32_t plan_k;   // draft tokens wanted (0: no speculation)
    int32_t n_drafts; // draft tokens proposed (<= plan_k)
    int32_t drafts[SPEC_MAX_DEPTH];
    float *q;        // [plan_k][n_vocab] draft distributions (sampling with a draft model only)
    int32_t out_row; // first logits row of this sequence in the target pass, -1 if none
};

// A forward pass being assembled: arrays grown on demand, reused across steps.
struct eng_batch {
    struct backend_seq *seqs;
    size_t seqs_cap;
    int32_t *tokens;
    size_t tokens_cap;
    int32_t *out_rows;
    size_t out_cap;
    float *logits; // [n_out][n_vocab]
    size_t logits_cap;
    struct backend_batch b;
};

// A model with its backend and block manager.
struct eng_model {
    llama_model *model;
    backend *be;
    kv_cache *kv;
};

struct engine {
    struct engine_params params;
    struct eng_model target;
    struct eng_model draft; // model NULL unless the proposer is DRAFT
    tok *tokenizer;
    int32_t n_vocab;
    int32_t n_ctx;
    char draft_name[128];

    struct eng_seq **seqs; // [n_seqs] every unreleased request, in admission order
    int32_t n_seqs;
    int32_t cap_seqs;
    uint64_t next_id;
    uint64_t next_arrival;
    uint64_t step_no;

    struct spec_settings settings;
    struct eng_class classes[SPEC_MAX_CLASSES];
    int n_classes;

    // Per-step scratch, grown on demand.
    struct eng_seq **sched; // [n_sched] scheduled sequences, priority order
    int32_t n_sched;
    size_t sched_cap;
    struct eng_batch batch;
    float *qbuf; // draft distributions of all speculating sequences
    size_t qbuf_cap;
    float *pbuf; // [SPEC_MAX_DEPTH + 1][n_vocab] target distributions of one sequence
    sampler *smp;
    uint32_t step_preemptions;
};

// engine_sched.c: picks the step's sequences and reserves their KV. Returns the number
// scheduled (e->sched), or a negative status.
int engine_schedule(engine *e);
// Frees a sequence's KV and returns it to the waiting queue.
void engine_preempt(engine *e, struct eng_seq *s);
// Depth k the settings give a sequence (0: no speculation), before budget limits.
int32_t engine_seq_depth(const engine *e, const struct eng_seq *s);

// engine_draft.c: fills plan drafts for the scheduled decoding sequences. Returns 0 or a status.
int engine_propose(engine *e, double *t_draft_ms);

// engine_emit.c: appends a verified token; finishes the request when a stop condition holds.
// Returns true when the request finished.
bool engine_emit_token(engine *e, struct eng_seq *s, int32_t token);
void engine_finish_seq(engine *e, struct eng_seq *s, enum engine_finish why);
void engine_release_kv(engine *e, struct eng_seq *s);

// engine_batch.c: growing arrays and batch assembly for either model.
// Grows *buf to hold `need` elements of `elem` bytes. Returns 0 or SPECD_ERR_NOMEM.
int engine_grow(void **buf, size_t *cap, size_t need, size_t elem);
void engine_batch_reset(struct eng_batch *b);
// Adds a sequence whose KV holds `len` computed positions followed by the n tokens to compute
// (already appended to kv); the last n_out of them get logits rows. Returns the first logits row
// of the sequence (or -1 when n_out == 0), or SPECD_ERR_NOMEM.
int32_t engine_batch_add(struct eng_batch *b, const kv_cache *kv, int32_t kv_seq,
                         const int32_t *tokens, int32_t n, int32_t n_out);
// Performs m's pending copy-on-write block copies. Call after the step's appends to m->kv and
// before engine_batch_add. Returns 0 or a status.
int engine_kv_copies(struct eng_model *m);
// Runs the batch on m's backend into b->logits. Returns 0 or a status.
int engine_batch_run(struct eng_model *m, struct eng_batch *b, int32_t n_vocab);

#endif
