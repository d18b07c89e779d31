// Proposers: the draft model (k sequential forward passes, each batched over every speculating
// sequence) and n-gram lookup.
#include <stdlib.h>

#include "shared/clock.h"
#include "shared/status.h"
#include "worker/engine/engine_internal.h"
#include "worker/engine/ngram.h"

static void propose_ngram(engine *e) {
    for (int32_t i = 0; i < e->n_sched; i++) {
        struct eng_seq *s = e->sched[i];
        s->q = NULL; // one-hot
        if (s->plan_k > 0)
            s->n_drafts = ngram_propose(s->toks, s->n_toks, e->params.ngram_min,
                                        e->params.ngram_max, s->plan_k, s->drafts);
    }
}

// Brings the sequence's draft KV up to all committed tokens but the last, reserving room for
// its drafts. Returns the number of catch-up tokens to feed (>= 1), or 0 when the draft cache is
// full (the sequence then does not speculate this step).
static int32_t draft_catch_up(engine *e, struct eng_seq *s, int32_t *reserved) {
    kv_cache *kv = e->draft.kv;
    if (s->draft_kv < 0) {
        int32_t cached;
        if (kv_seq_new_with_prefix(kv, s->toks, s->n_toks, &s->draft_kv, &cached) != 0)
            return 0;
    }
    const int32_t len = kv_seq_len(kv, s->draft_kv), catch_up = s->n_toks - len;
    SPECD_CHECK(catch_up >= 1);
    if (kv_append_blocks_needed(kv, s->draft_kv, catch_up + s->plan_k - 1) >
        kv_blocks_available(kv) - *reserved)
        return 0;
    SPECD_CHECK(kv_seq_append(kv, s->draft_kv, s->toks + len, catch_up) == 0);
    *reserved += kv_append_blocks_needed(kv, s->draft_kv, s->plan_k - 1);
    return catch_up;
}

// Chooses draft token j of s from its logits row: argmax when greedy, else a sample from the
// request's distribution q (kept for acceptance).
static int choose_draft(engine *e, struct eng_seq *s, int32_t j, const float *row) {
    if (s->sp.temperature <= 0.0f) {
        s->drafts[j] = sampler_argmax(row, e->n_vocab);
        return 0;
    }
    float *q = s->q + (size_t)j * (size_t)e->n_vocab;
    int rc = sampler_probs(e->smp, &s->sp, row, e->n_vocab, q);
    if (rc)
        return rc;
    rc = sampler_sample(q, e->n_vocab, &s->rng);
    if (rc < 0)
        return rc;
    s->drafts[j] = rc;
    return 0;
}

// Gives sampling sequences their q rows in e->qbuf.
static int assign_q(engine *e, struct eng_seq **spec, int32_t n_spec) {
    size_t rows = 0;
    for (int32_t i = 0; i < n_spec; i++)
        if (spec[i]->sp.temperature > 0.0f)
            rows += (size_t)spec[i]->plan_k;
    if (engine_grow((void **)&e->qbuf, &e->qbuf_cap, rows * (size_t)e->n_vocab + 1,
                    sizeof *e->qbuf))
        return SPECD_ERR_NOMEM;
    float *q = e->qbuf;
    for (int32_t i = 0; i < n_spec; i++) {
        spec[i]->q = NULL;
        if (spec[i]->sp.temperature > 0.0f) {
            spec[i]->q = q;
            q += (size_t)spec[i]->plan_k * (size_t)e->n_vocab;
        }
    }
    return 0;
}

// One draft forward pass: iteration j feeds the catch-up tokens (j == 0) or draft j-1, and
// chooses draft j for every sequence still drafting.
static int draft_iteration(engine *e, struct eng_seq **spec, const int32_t *catch_up,
                           int32_t n_spec, int32_t j) {
    kv_cache *kv = e->draft.kv;
    for (int32_t i = 0; i < n_spec; i++)
        if (j > 0 && spec[i]->plan_k > j)
            SPECD_CHECK(kv_seq_append(kv, spec[i]->draft_kv, &spec[i]->drafts[j - 1], 1) == 0);
    int rc = engine_kv_copies(&e->draft);
    if (rc)
        return rc;
    engine_batch_reset(&e->batch);
    int32_t *rows = malloc(sizeof *rows * (size_t)n_spec);
    if (!rows)
        return SPECD_ERR_NOMEM;
    for (int32_t i = 0; i < n_spec && rc >= 0; i++) {
        struct eng_seq *s = spec[i];
        rows[i] = -1;
        if (s->plan_k <= j)
            continue;
        const int32_t n = j == 0 ? catch_up[i] : 1;
        const int32_t *toks = j == 0 ? s->toks + s->n_toks - n : &s->drafts[j - 1];
        rc = rows[i] = engine_batch_add(&e->batch, kv, s->draft_kv, toks, n, 1);
    }
    if (rc >= 0)
        rc = engine_batch_run(&e->draft, &e->batch, e->n_vocab);
    for (int32_t i = 0; i < n_spec && rc >= 0; i++) {
        if (rows[i] < 0)
            continue;
        rc = choose_draft(e, spec[i], j, e->batch.logits + (size_t)rows[i] * (size_t)e->n_vocab);
        spec[i]->n_drafts = j + 1;
    }
    free(rows);
    return rc < 0 ? rc : 0;
}

static int propose_draft(engine *e) {
    struct eng_seq **spec = malloc(sizeof *spec * (size_t)(e->n_sched + 1));
    int32_t *catch_up = malloc(sizeof *catch_up * (size_t)(e->n_sched + 1));
    int32_t n_spec = 0, max_k = 0, reserved = 0;
    int rc = spec && catch_up ? 0 : SPECD_ERR_NOMEM;
    for (int32_t i = 0; !rc && i < e->n_sched; i++) {
        struct eng_seq *s = e->sched[i];
        if (s->plan_k <= 0)
            continue;
        catch_up[n_spec] = draft_catch_up(e, s, &reserved);
        if (catch_up[n_spec] == 0) {
            s->plan_k = 0;
            continue;
        }
        spec[n_spec++] = s;
        max_k = s->plan_k > max_k ? s->plan_k : max_k;
    }
    if (!rc && n_spec > 0)
        rc = assign_q(e, spec, n_spec);
    for (int32_t j = 0; !rc && j < max_k; j++)
        rc = draft_iteration(e, spec, catch_up, n_spec, j);
    free(spec);
    free(catch_up);
    return rc;
}

int engine_propose(engine *e, double *t_draft_ms) {
    const double t0 = clock_now_ms();
    int rc = 0;
    if (e->params.proposer == ENGINE_PROPOSER_NGRAM)
        propose_ngram(e);
    else if (e->params.proposer == ENGINE_PROPOSER_DRAFT)
        rc = propose_draft(e);
    *t_draft_ms = clock_now_ms() - t0;
    return rc;
}
