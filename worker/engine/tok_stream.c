// Streaming detokenizer: pieces in, whole UTF-8 characters out.
#include <stdlib.h>
#include <string.h>

#include "shared/status.h"
#include "worker/engine/tok_internal.h"

static const char replacement[] = "\xef\xbf\xbd"; // U+FFFD

struct tok_stream {
    const tok *t;
    bool special;
    unsigned char partial[4]; // an incomplete character, at most 3 bytes
    size_t n_partial;
    struct tok_buf ready; // validated text not yet handed out
    size_t ready_pos;     // bytes of ready already handed out
};

tok_stream *tok_stream_new(const tok *t, bool special) {
    if (!t)
        return NULL;
    tok_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->t = t;
    s->special = special;
    return s;
}

void tok_stream_free(tok_stream *s) {
    if (!s)
        return;
    free(s->ready.p);
    free(s);
}

size_t tok_stream_pending(const tok_stream *s) {
    return s->n_partial + (s->ready.n - s->ready_pos);
}

// Moves whole characters from partial + bytes into ready; keeps an incomplete tail.
static int absorb(tok_stream *s, const char *bytes, size_t len) {
    // Compact what has been handed out already.
    if (s->ready_pos > 0) {
        memmove(s->ready.p, s->ready.p + s->ready_pos, s->ready.n - s->ready_pos);
        s->ready.n -= s->ready_pos;
        s->ready_pos = 0;
    }
    size_t i = 0;
    while (i < len || s->n_partial > 0) {
        // Work on up to 4 bytes: the held partial character followed by new bytes.
        unsigned char w[4];
        size_t nw = s->n_partial;
        memcpy(w, s->partial, nw);
        while (nw < 4 && i + (nw - s->n_partial) < len) {
            w[nw] = (unsigned char)bytes[i + (nw - s->n_partial)];
            nw++;
        }
        int r = tok_utf8_check(w, nw);
        if (r == 0) {
            // Incomplete: hold all of it (at most 3 bytes).
            memcpy(s->partial, w, nw);
            i += nw - s->n_partial;
            s->n_partial = nw;
            return 0;
        }
        size_t used = (size_t)(r > 0 ? r : -r);
        int rc =
            r > 0 ? tok_buf_append(&s->ready, w, used) : tok_buf_append(&s->ready, replacement, 3);
        if (rc)
            return rc;
        // Consume `used` bytes: first from partial, then from the new bytes.
        if (used >= s->n_partial) {
            i += used - s->n_partial;
            s->n_partial = 0;
        } else {
            memmove(s->partial, s->partial + used, s->n_partial - used);
            s->n_partial -= used;
        }
    }
    return 0;
}

// Hands out ready text up to cap bytes, cut at a character boundary.
static int hand_out(tok_stream *s, char *out, size_t cap) {
    size_t avail = s->ready.n - s->ready_pos, n = 0;
    if (avail == 0)
        return 0;
    const unsigned char *p = (const unsigned char *)s->ready.p + s->ready_pos;
    while (n < avail) {
        size_t k = tok_utf8_len(p[n]); // ready holds only well-formed characters
        if (n + k > cap)
            break;
        n += k;
    }
    if (n)
        memcpy(out, p, n);
    s->ready_pos += n;
    return (int)n;
}

int tok_stream_push(tok_stream *s, int32_t token, char *out, size_t cap) {
    if (!s || !out || cap < TOK_STREAM_MIN_CAP || token < 0 || token >= s->t->n_tokens)
        return SPECD_ERR_INVALID;
    size_t len = (size_t)tok_token_to_piece(s->t, token, s->special, NULL, 0);
    if (len > 0) {
        const struct tok_entry *e = &s->t->tokens[token];
        int rc = absorb(s, s->t->pieces + e->piece_off, len);
        if (rc)
            return rc;
    }
    return hand_out(s, out, cap);
}

int tok_stream_flush(tok_stream *s, char *out, size_t cap) {
    if (!s || !out || cap < TOK_STREAM_MIN_CAP)
        return SPECD_ERR_INVALID;
    if (s->n_partial > 0) {
        int rc = absorb(s, NULL, 0);
        // What is still held can never complete now.
        if (!rc && s->n_partial > 0) {
            rc = tok_buf_append(&s->ready, replacement, 3);
            s->n_partial = 0;
        }
        if (rc)
            return rc;
    }
    return hand_out(s, out, cap);
}
