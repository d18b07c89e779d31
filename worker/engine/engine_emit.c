// Verified tokens into a request's output: detokenisation, stop strings, finish conditions.
#include <stdlib.h>
#include <string.h>

#include "shared/clock.h"
#include "shared/status.h"
#include "worker/engine/engine_internal.h"

static void append_text(struct eng_seq *s, const char *p, size_t n) {
    if (n == 0)
        return;
    if (engine_grow((void **)&s->text, &s->text_cap, s->text_len + n + 1, 1) != 0)
        return; // out of memory: the text is cut, the tokens stay exact
    memcpy(s->text + s->text_len, p, n);
    s->text_len += n;
    s->text[s->text_len] = '\0';
}

// Passes decoded bytes through the stop matcher. Returns true when a stop string completed.
static bool feed_text(struct eng_seq *s, const char *p, size_t n) {
    if (!s->stop) {
        append_text(s, p, n);
        return false;
    }
    struct stop_result r;
    if (stop_feed(s->stop, p, n, &r) != 0)
        return false;
    append_text(s, r.emit, r.n_emit);
    return r.stopped;
}

void engine_finish_seq(engine *e, struct eng_seq *s, enum engine_finish why) {
    char buf[64];
    int n;
    while ((n = tok_stream_flush(s->detok, buf, sizeof buf)) > 0)
        if (why != ENGINE_FINISH_STOP && feed_text(s, buf, (size_t)n))
            why = ENGINE_FINISH_STOP;
    struct stop_result r;
    if (s->stop && why != ENGINE_FINISH_STOP && stop_finish(s->stop, &r) == 0)
        append_text(s, r.emit, r.n_emit);
    engine_release_kv(e, s);
    s->state = ENGINE_STATE_FINISHED;
    s->finish = why;
    s->t_end_ms = clock_now_ms();
}

static int grow_tokens(struct eng_seq *s) {
    if (s->n_toks < s->cap_toks)
        return 0;
    int32_t cap = s->cap_toks * 2;
    int32_t *t = realloc(s->toks, sizeof *t * (size_t)cap);
    if (!t)
        return SPECD_ERR_NOMEM;
    s->toks = t;
    s->cap_toks = cap;
    return 0;
}

bool engine_emit_token(engine *e, struct eng_seq *s, int32_t token) {
    if (s->t_first_ms == 0)
        s->t_first_ms = clock_now_ms();
    if (!s->ignore_eos && tok_is_eog(e->tokenizer, token)) {
        engine_finish_seq(e, s, ENGINE_FINISH_EOS);
        return true;
    }
    if (grow_tokens(s)) {
        engine_finish_seq(e, s, ENGINE_FINISH_ERROR);
        return true;
    }
    s->toks[s->n_toks++] = token;
    char buf[256];
    int n = tok_stream_push(s->detok, token, buf, sizeof buf);
    if (n > 0 && feed_text(s, buf, (size_t)n)) {
        engine_finish_seq(e, s, ENGINE_FINISH_STOP);
        return true;
    }
    if (s->n_toks - s->n_prompt >= s->max_tokens) {
        engine_finish_seq(e, s, ENGINE_FINISH_LENGTH);
        return true;
    }
    if (s->n_toks >= e->n_ctx) {
        engine_finish_seq(e, s, ENGINE_FINISH_CONTEXT);
        return true;
    }
    return false;
}
