// One engine step: schedule, propose, verify in one target pass, accept, roll back, emit.
#include <string.h>

#include "shared/clock.h"
#include "shared/status.h"
#include "worker/engine/engine_internal.h"

// Appends the drafts to the target KV (their blocks were reserved by the scheduler) and builds
// the target batch: each sequence's uncomputed committed tokens followed by its drafts, with
// logits for the last committed token and every draft when the sequence reaches its end.
static int build_target_batch(engine *e) {
    kv_cache *kv = e->target.kv;
    for (int32_t i = 0; i < e->n_sched; i++) {
        struct eng_seq *s = e->sched[i];
        if (s->n_drafts > 0)
            SPECD_CHECK(kv_seq_append(kv, s->kv, s->drafts, s->n_drafts) == 0);
    }
    int rc = engine_kv_copies(&e->target);
    if (rc)
        return rc;
    engine_batch_reset(&e->batch);
    int32_t tokens[SPEC_MAX_DEPTH + 1];
    for (int32_t i = 0; i < e->n_sched; i++) {
        struct eng_seq *s = e->sched[i];
        const int32_t n = s->plan_new + s->n_drafts;
        const int32_t start = kv_seq_len(kv, s->kv) - n; // first new position
        const bool reaches_end = start + s->plan_new == s->n_toks;
        const int32_t *src = s->toks + start;
        if (s->n_drafts > 0) { // decoding: the last committed token, then the drafts
            tokens[0] = s->toks[s->n_toks - 1];
            memcpy(tokens + 1, s->drafts, sizeof *tokens * (size_t)s->n_drafts);
            src = tokens;
        }
        rc = s->out_row =
            engine_batch_add(&e->batch, kv, s->kv, src, n, reaches_end ? 1 + s->n_drafts : 0);
        if (rc < -1)
            return rc;
    }
    return 0;
}

static void count_class(struct spec_step_metrics *m, const engine *e, const struct eng_seq *s,
                        int32_t accepted, int32_t emitted) {
    struct spec_class_metrics *c = &m->classes[s->cls];
    if ((uint32_t)s->cls >= m->n_classes) {
        for (uint32_t i = m->n_classes; i <= (uint32_t)s->cls; i++)
            memcpy(m->classes[i].name, e->classes[i].name, SPEC_CLASS_NAME_LEN);
        m->n_classes = (uint32_t)s->cls + 1;
    }
    c->n_seqs++;
    c->emitted += (uint32_t)emitted;
    if (s->n_drafts == 0)
        return;
    c->n_speculating++;
    c->depth = (uint32_t)s->n_drafts > c->depth ? (uint32_t)s->n_drafts : c->depth;
    c->drafted += (uint32_t)s->n_drafts;
    c->accepted += (uint32_t)accepted;
    for (int32_t j = 0; j < s->n_drafts; j++) {
        c->drafted_at[j]++;
        c->accepted_at[j] += j < accepted;
    }
}

// Lossless acceptance of s's drafts against the target rows; fills *res.
static int accept(engine *e, struct eng_seq *s, const float *rows, struct spec_accept_result *res) {
    const int32_t k = s->n_drafts, v = e->n_vocab;
    if (s->sp.temperature <= 0.0f)
        return spec_accept_greedy(k, s->drafts, rows, v, res);
    for (int32_t j = 0; j <= k; j++) {
        int rc = sampler_probs(e->smp, &s->sp, rows + (size_t)j * v, v, e->pbuf + (size_t)j * v);
        if (rc)
            return rc;
    }
    return spec_accept_sample(k, s->drafts, s->q, e->pbuf, v, &s->rng, res);
}

// Applies the target's verdict to one sequence. Returns tokens emitted.
static int32_t settle(engine *e, struct eng_seq *s, struct spec_step_metrics *m) {
    s->steps++;
    if (s->out_row < 0) { // a prompt chunk that does not reach the end yet
        count_class(m, e, s, 0, 0);
        return 0;
    }
    struct spec_accept_result res;
    const float *rows = e->batch.logits + (size_t)s->out_row * (size_t)e->n_vocab;
    if (accept(e, s, rows, &res) != 0) {
        engine_finish_seq(e, s, ENGINE_FINISH_ERROR);
        return 0;
    }
    const int32_t n_before = s->n_toks, a = res.n_accepted;
    s->drafted += (uint32_t)s->n_drafts;
    s->accepted += (uint32_t)a;
    // Keep the KV of the committed tokens and the accepted drafts; the next token is fed next.
    kv_seq_truncate(e->target.kv, s->kv, n_before + a);
    if (s->draft_kv >= 0 && kv_seq_len(e->draft.kv, s->draft_kv) > n_before + a)
        kv_seq_truncate(e->draft.kv, s->draft_kv, n_before + a);
    int32_t emitted = 0;
    bool done = false;
    for (int32_t j = 0; j < a && !done; j++, emitted++)
        done = engine_emit_token(e, s, s->drafts[j]);
    if (!done) {
        engine_emit_token(e, s, res.next_token);
        emitted++;
    }
    count_class(m, e, s, a, emitted);
    return emitted;
}

static void sum_metrics(struct spec_step_metrics *m) {
    for (uint32_t c = 0; c < m->n_classes; c++) {
        const struct spec_class_metrics *k = &m->classes[c];
        m->n_speculating += k->n_speculating;
        m->depth = k->depth > m->depth ? k->depth : m->depth;
        m->drafted += k->drafted;
        m->accepted += k->accepted;
        m->emitted += k->emitted;
        for (int j = 0; j < SPEC_MAX_DEPTH; j++) {
            m->drafted_at[j] += k->drafted_at[j];
            m->accepted_at[j] += k->accepted_at[j];
        }
    }
}

static void fail_step(engine *e) {
    for (int32_t i = 0; i < e->n_sched; i++)
        if (e->sched[i]->state != ENGINE_STATE_FINISHED)
            engine_finish_seq(e, e->sched[i], ENGINE_FINISH_ERROR);
}

int engine_step(engine *e, struct spec_step_metrics *metrics) {
    struct spec_step_metrics local;
    struct spec_step_metrics *m = metrics ? metrics : &local;
    memset(m, 0, sizeof *m);
    const double t0 = clock_now_ms();
    e->step_preemptions = 0;
    int rc = engine_schedule(e);
    if (rc <= 0)
        return rc < 0 ? rc : SPECD_SOFT_EMPTY;
    double t_draft = 0;
    rc = engine_propose(e, &t_draft);
    const double t1 = clock_now_ms();
    if (!rc)
        rc = build_target_batch(e);
    if (!rc)
        rc = engine_batch_run(&e->target, &e->batch, e->n_vocab);
    if (rc) {
        fail_step(e);
        kv_commit(e->target.kv);
        return SPECD_ERR_BACKEND;
    }
    m->step = e->step_no++;
    m->batch_size = (uint32_t)e->n_sched;
    for (int32_t i = 0; i < e->n_sched; i++) {
        struct eng_seq *s = e->sched[i];
        if (!s->plan_decode)
            m->prefill_tokens += (uint32_t)s->plan_new;
        settle(e, s, m);
    }
    kv_commit(e->target.kv);
    if (e->draft.kv)
        kv_commit(e->draft.kv);
    sum_metrics(m);
    const double t2 = clock_now_ms();
    m->t_draft_ms = t_draft;
    m->t_verify_ms = t2 - t1;
    m->t_step_ms = t2 - t0;
    engine_kv_usage(e, (int32_t *)&m->kv_blocks_used, (int32_t *)&m->kv_blocks_total);
    m->preemptions = e->step_preemptions;
    return 0;
}
