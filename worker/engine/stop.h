// Stop strings over streamed output text.
//
// The engine feeds the decoded text of each emitted token (any split into pieces); the matcher
// says which bytes a streaming client may see now, holds back the bytes that could still be the
// start of a stop string (so a client never sees part of a stop string), and reports when a stop
// string completes. Matching is on bytes (UTF-8 is not interpreted).
//
// Which stop string wins: the one that completes first in the byte stream (the smallest end
// offset); among those ending at the same offset, the longest. The output is cut just before it.
// This makes the result independent of how the text is split into pieces (a generator streaming
// byte by byte would stop at that same point).
#ifndef SPECD_ENGINE_STOP_H
#define SPECD_ENGINE_STOP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct stop_matcher stop_matcher;

struct stop_result {
    bool stopped;     // a stop string completed; no more text will be accepted
    int which;        // index (in the list given to stop_new) of that stop string, else -1
    const char *emit; // bytes the client may see now: emit[0..n_emit), not NUL-terminated; points
                      // into the matcher and stays valid until the next call on it
    size_t n_emit;
    size_t n_held; // bytes fed but held back (0 once stopped or finished)
};

// Copies the stop strings; strings that are NULL or empty are ignored, n may be 0 (nothing ever
// stops, nothing is held back). Returns NULL when n < 0, strs is NULL with n > 0, or memory is
// short. Free with stop_free().
stop_matcher *stop_new(const char *const *strs, int n);
// Frees the matcher; NULL is allowed.
void stop_free(stop_matcher *m);

// Appends piece[0..len) to the output and fills *out (out->stopped tells whether a stop string
// completed inside this piece; the text after the stop string is dropped).
// Returns 0, SPECD_ERR_INVALID (NULL m/out, or NULL piece with len > 0), SPECD_ERR_NOMEM (nothing
// appended, the matcher unchanged) or SPECD_ERR_STATE (already stopped or finished).
int stop_feed(stop_matcher *m, const char *piece, size_t len, struct stop_result *out);

// End of generation without a stop string (end-of-sequence token, length limit): releases the
// held-back bytes in *out. Later feeds return SPECD_ERR_STATE.
// Returns 0, SPECD_ERR_INVALID or SPECD_ERR_STATE (already stopped or finished).
int stop_finish(stop_matcher *m, struct stop_result *out);

// The whole output so far, held-back bytes included, cut before the stop string once stopped.
// NUL-terminated (the output itself may contain NUL bytes: use *len). Owned by the matcher, valid
// until the next call on it. len may be NULL.
const char *stop_text(const stop_matcher *m, size_t *len);

// Forgets the output so that the matcher can serve a new request with the same stop strings.
void stop_reset(stop_matcher *m);

#endif
