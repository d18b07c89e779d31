// Continuous-batching scheduler: which sequences run in the next step, how many tokens each
// feeds the target (prompt chunk, or the last token plus k drafts), and KV block reservation
// with preemption of the lowest-priority sequence when blocks run out.
#include <stdlib.h>

#include "shared/clock.h"
#include "shared/status.h"
#include "worker/engine/engine_internal.h"

// Higher priority first, then earlier arrival.
static int seq_order(const void *pa, const void *pb) {
    const struct eng_seq *a = *(struct eng_seq *const *)pa, *b = *(struct eng_seq *const *)pb;
    if (a->priority != b->priority)
        return a->priority > b->priority ? -1 : 1;
    return a->arrival < b->arrival ? -1 : a->arrival > b->arrival;
}

int32_t engine_seq_depth(const engine *e, const struct eng_seq *s) {
    if (e->params.proposer == ENGINE_PROPOSER_NONE)
        return 0;
    const struct eng_class *c = &e->classes[s->cls];
    const bool enabled = c->has_override ? c->enabled : e->settings.enabled;
    int32_t d = c->has_override ? c->depth : (int32_t)e->settings.depth;
    if (!enabled || d <= 0)
        return 0;
    if (d < (int32_t)e->settings.min_depth)
        d = (int32_t)e->settings.min_depth;
    if (d > (int32_t)e->settings.max_depth)
        d = (int32_t)e->settings.max_depth;
    return d > e->params.max_depth ? e->params.max_depth : d;
}

void engine_release_kv(engine *e, struct eng_seq *s) {
    if (s->kv >= 0)
        kv_seq_free(e->target.kv, s->kv);
    if (s->draft_kv >= 0)
        kv_seq_free(e->draft.kv, s->draft_kv);
    s->kv = s->draft_kv = -1;
}

void engine_preempt(engine *e, struct eng_seq *s) {
    engine_release_kv(e, s);
    s->state = ENGINE_STATE_PREEMPTED;
    s->preemptions++;
    e->step_preemptions++;
}

// Draft depth for a decoding sequence this step, within the token budget, the request's
// remaining tokens and the context.
static int32_t plan_depth(const engine *e, const struct eng_seq *s, int32_t budget) {
    int32_t k = engine_seq_depth(e, s);
    const int32_t remaining = s->max_tokens - (s->n_toks - s->n_prompt) - 1;
    const int32_t ctx_room = e->n_ctx - s->n_toks - 1;
    if (k > budget - 1)
        k = budget - 1;
    if (k > remaining)
        k = remaining;
    if (k > ctx_room)
        k = ctx_room;
    return k > 0 ? k : 0;
}

struct sched_pass {
    struct eng_seq **running; // [n_running] priority order
    int32_t n_running;
    int32_t tail;     // running[tail..] not yet scheduled: preemption victims come from the end
    int32_t budget;   // target tokens left in the step
    int32_t reserved; // target blocks reserved for the drafts of scheduled sequences
};

static void add_to_step(engine *e, struct sched_pass *ps, struct eng_seq *s, int32_t chunk,
                        int32_t k, bool decode) {
    s->plan_new = chunk;
    s->plan_decode = decode;
    s->plan_k = k;
    s->n_drafts = 0;
    s->out_row = -1;
    ps->budget -= chunk + k;
    ps->reserved += kv_append_blocks_needed(e->target.kv, s->kv, k);
    e->sched[e->n_sched++] = s;
}

// Schedules running sequence s, preempting others (lowest priority first) to make room.
// Returns false when s itself had to be preempted.
static bool schedule_running(engine *e, struct sched_pass *ps, int32_t cur) {
    struct eng_seq *s = ps->running[cur];
    kv_cache *kv = e->target.kv;
    const int32_t len = kv_seq_len(kv, s->kv);
    int32_t chunk = s->n_toks - len;
    if (chunk > ps->budget)
        chunk = ps->budget;
    int32_t k = chunk == 1 && len + 1 == s->n_toks ? plan_depth(e, s, ps->budget) : 0;
    for (;;) {
        const int32_t need = kv_append_blocks_needed(kv, s->kv, chunk + k);
        if (need <= kv_blocks_available(kv) - ps->reserved)
            break;
        if (k > 0) { // first give up speculation, then others' blocks
            k = 0;
            continue;
        }
        struct eng_seq *victim = NULL;
        while (ps->tail > cur + 1 && !victim) { // only sequences not scheduled yet
            struct eng_seq *v = ps->running[--ps->tail];
            if (v->state == ENGINE_STATE_RUNNING)
                victim = v;
        }
        if (!victim && cur == 0) { // alone and still no room: the cache is too small for it
            engine_finish_seq(e, s, ENGINE_FINISH_CONTEXT);
            return false;
        }
        if (!victim) {
            engine_preempt(e, s);
            return false;
        }
        engine_preempt(e, victim);
    }
    SPECD_CHECK(kv_seq_append(kv, s->kv, s->toks + len, chunk) == 0);
    add_to_step(e, ps, s, chunk, k, len + 1 == s->n_toks);
    return true;
}

// Admits a waiting or preempted sequence with its first prompt chunk. Returns false when it does
// not fit (the caller stops admitting: FIFO within priority).
static bool admit(engine *e, struct sched_pass *ps, struct eng_seq *s) {
    kv_cache *kv = e->target.kv;
    int32_t seq, cached = 0;
    if (kv_seq_new_with_prefix(kv, s->toks, s->n_toks, &seq, &cached) != 0)
        return false;
    int32_t chunk = s->n_toks - cached;
    if (chunk > ps->budget)
        chunk = ps->budget;
    if (kv_append_blocks_needed(kv, seq, chunk) > kv_blocks_available(kv) - ps->reserved) {
        kv_seq_free(kv, seq);
        return false;
    }
    SPECD_CHECK(kv_seq_append(kv, seq, s->toks + cached, chunk) == 0);
    s->kv = seq;
    if (s->preemptions == 0)
        s->cached_prompt_tokens = cached;
    s->state = ENGINE_STATE_RUNNING;
    if (s->t_sched_ms == 0)
        s->t_sched_ms = clock_now_ms();
    add_to_step(e, ps, s, chunk, 0, false);
    return true;
}

// Nothing runs, so every block is free or evictable: a request that cannot be admitted now never
// will be (its tokens need more blocks than the whole cache). Fail it rather than wait forever.
static void fail_unfittable(engine *e, struct eng_seq *s) {
    engine_finish_seq(e, s, ENGINE_FINISH_ERROR);
}

static int grow_sched(engine *e) {
    return engine_grow((void **)&e->sched, &e->sched_cap, (size_t)e->n_seqs + 1, sizeof *e->sched);
}

int engine_schedule(engine *e) {
    e->n_sched = 0;
    struct eng_seq **order = malloc(sizeof *order * ((size_t)e->n_seqs + 1));
    if (!order || grow_sched(e)) {
        free(order);
        return SPECD_ERR_NOMEM;
    }
    int32_t n_running = 0, n_waiting = 0;
    for (int32_t i = 0; i < e->n_seqs; i++)
        if (e->seqs[i]->state == ENGINE_STATE_RUNNING)
            order[n_running++] = e->seqs[i];
    qsort(order, (size_t)n_running, sizeof *order, seq_order);
    struct sched_pass ps = {order, n_running, n_running, e->params.max_num_batched_tokens, 0};
    for (int32_t i = 0; i < n_running && i < ps.tail; i++) {
        if (e->n_sched == e->params.max_num_seqs || ps.budget <= 0)
            break;
        if (order[i]->state == ENGINE_STATE_RUNNING)
            schedule_running(e, &ps, i);
    }
    // Waiting and preempted sequences, in priority order, while they fit.
    for (int32_t i = 0; i < e->n_seqs; i++)
        if (e->seqs[i]->state == ENGINE_STATE_WAITING ||
            e->seqs[i]->state == ENGINE_STATE_PREEMPTED)
            order[n_waiting++] = e->seqs[i];
    qsort(order, (size_t)n_waiting, sizeof *order, seq_order);
    for (int32_t i = 0; i < n_waiting; i++) {
        if (e->n_sched == e->params.max_num_seqs || ps.budget <= 0)
            break;
        if (!admit(e, &ps, order[i])) {
            if (e->n_sched == 0)
                fail_unfittable(e, order[i]);
            break;
        }
    }
    free(order);
    return e->n_sched;
}
