#include "worker/engine/stop.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shared/check.h"
#include "shared/status.h"

struct stop_matcher {
    int n;          // stop strings kept (non-empty ones)
    char **strs;    // [n] copies
    size_t *lens;   // [n]
    int *which;     // [n] index in the caller's list
    size_t max_len; // longest stop string
    char *text;     // [cap] the output so far, NUL-terminated at len
    size_t len, cap;
    size_t emitted; // text[0..emitted) has been released to the client
    bool done;      // stopped or finished
};

stop_matcher *stop_new(const char *const *strs, int n) {
    if (n < 0 || (n > 0 && !strs))
        return NULL;
    stop_matcher *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    size_t count = n > 0 ? (size_t)n : 1;
    m->strs = calloc(count, sizeof *m->strs);
    m->lens = calloc(count, sizeof *m->lens);
    m->which = calloc(count, sizeof *m->which);
    m->cap = 64;
    m->text = malloc(m->cap);
    if (!m->strs || !m->lens || !m->which || !m->text) {
        stop_free(m);
        return NULL;
    }
    m->text[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (!strs[i] || !strs[i][0])
            continue;
        char *copy = strdup(strs[i]);
        if (!copy) {
            stop_free(m);
            return NULL;
        }
        m->strs[m->n] = copy;
        m->lens[m->n] = strlen(copy);
        m->which[m->n] = i;
        if (m->lens[m->n] > m->max_len)
            m->max_len = m->lens[m->n];
        m->n++;
    }
    return m;
}

void stop_free(stop_matcher *m) {
    if (!m)
        return;
    for (int i = 0; i < m->n; i++)
        free(m->strs[i]);
    free(m->strs);
    free(m->lens);
    free(m->which);
    free(m->text);
    free(m);
}

void stop_reset(stop_matcher *m) {
    if (!m)
        return;
    m->len = 0;
    m->emitted = 0;
    m->done = false;
    m->text[0] = '\0';
}

const char *stop_text(const stop_matcher *m, size_t *len) {
    if (len)
        *len = m ? m->len : 0;
    return m ? m->text : "";
}

static int reserve(stop_matcher *m, size_t extra) {
    if (extra > SIZE_MAX - 1 - m->len)
        return SPECD_ERR_NOMEM;
    size_t need = m->len + extra + 1;
    if (need <= m->cap)
        return SPECD_OK;
    size_t cap = m->cap;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *text = realloc(m->text, cap);
    if (!text)
        return SPECD_ERR_NOMEM;
    m->text = text;
    m->cap = cap;
    return SPECD_OK;
}

// The stop string (internal index) that completes at byte offset `end`, the longest when several
// do, or -1.
static int match_ending_at(const stop_matcher *m, size_t end) {
    int best = -1;
    for (int s = 0; s < m->n; s++) {
        size_t l = m->lens[s];
        if (l > end || m->text[end - 1] != m->strs[s][l - 1])
            continue;
        if (memcmp(m->text + end - l, m->strs[s], l) == 0 && (best < 0 || l > m->lens[best]))
            best = s;
    }
    return best;
}

// Length of the longest suffix of text[emitted..len) that is a proper prefix of a stop string.
static size_t held_suffix(const stop_matcher *m) {
    size_t h = m->len - m->emitted;
    if (m->max_len == 0)
        return 0;
    if (h > m->max_len - 1)
        h = m->max_len - 1;
    for (; h > 0; h--)
        for (int s = 0; s < m->n; s++)
            if (m->lens[s] > h && memcmp(m->text + m->len - h, m->strs[s], h) == 0)
                return h;
    return 0;
}

static void release(stop_matcher *m, size_t upto, struct stop_result *out) {
    out->emit = m->text + m->emitted;
    out->n_emit = upto - m->emitted;
    m->emitted = upto;
    out->n_held = m->len - upto;
}

int stop_feed(stop_matcher *m, const char *piece, size_t len, struct stop_result *out) {
    if (!m || !out || (!piece && len > 0))
        return SPECD_ERR_INVALID;
    if (m->done)
        return SPECD_ERR_STATE;
    if (reserve(m, len) != SPECD_OK)
        return SPECD_ERR_NOMEM;
    size_t old_len = m->len;
    if (len > 0)
        memcpy(m->text + m->len, piece, len);
    m->len += len;
    m->text[m->len] = '\0';
    out->stopped = false;
    out->which = -1;
    // A match ending at or before old_len would have been found by an earlier call.
    for (size_t end = old_len + 1; end <= m->len; end++) {
        int s = match_ending_at(m, end);
        if (s < 0)
            continue;
        m->len = end - m->lens[s];
        SPECD_CHECK(m->len >= m->emitted); // held-back bytes cover every possible match start
        m->text[m->len] = '\0';
        m->done = true;
        out->stopped = true;
        out->which = m->which[s];
        release(m, m->len, out);
        return SPECD_OK;
    }
    release(m, m->len - held_suffix(m), out);
    return SPECD_OK;
}

int stop_finish(stop_matcher *m, struct stop_result *out) {
    if (!m || !out)
        return SPECD_ERR_INVALID;
    if (m->done)
        return SPECD_ERR_STATE;
    m->done = true;
    out->stopped = false;
    out->which = -1;
    release(m, m->len, out);
    return SPECD_OK;
}
