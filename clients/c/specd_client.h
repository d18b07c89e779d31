// specd_client: a small C client for specd. Submits generation jobs to the Redis job queue,
// waits for their results and follows streamed text. Thin over shared/rq.h; the wire contract is
// docs/protocol.md ("Redis job queues"); docs/clients.md shows the client in use.
//
//   specd_client *c = specd_client_new("127.0.0.1", 6379, "specd:");
//   if (!specd_client_is_connected(c)) die(specd_client_last_error(c));
//   struct specd_request req = specd_request_default();
//   req.prompt = "def fib(n):";
//   req.max_tokens = 48;
//   char id[SPECD_JOB_ID_SIZE];
//   if (specd_client_submit(c, &req, id, sizeof id) != SPECD_OK) die(specd_client_last_error(c));
//   struct rq_result res;
//   if (specd_client_wait(c, id, 60000, &res) == SPECD_OK) {
//       fwrite(res.text, 1, res.text_len, stdout);   // res.status: RQ_RESULT_DONE or _ERROR
//       rq_result_clear(&res);
//   }
//   specd_client_free(c);
//
// Streaming: submit with req.stream = 1, then
//   struct specd_stream s;
//   specd_stream_init(&s, id);
//   while (!s.done && specd_client_stream_next(c, &s, 30000, &chunk) == SPECD_OK) {
//       ... chunk.reset: discard text shown so far; then chunk.text[0..chunk.len) ...
//       rq_stream_chunk_clear(&chunk);
//   }
//
// Return codes (shared/status.h and rq.h): SPECD_OK; SPECD_SOFT_EMPTY (no result or no new text
// within the timeout); RQ_SOFT_DISCONNECTED (Redis unreachable: nothing was changed, the handle
// reconnects by itself on later calls); SPECD_ERR_INVALID (bad argument); SPECD_ERR_FORMAT
// (invalid job, malformed JSON); SPECD_ERR_STATE (stream already finished); SPECD_ERR_NOMEM;
// SPECD_ERR_IO (Redis answered with an error). After a non-OK return specd_client_last_error()
// says why in one line. A handle is not thread-safe: use one per thread.
#ifndef SPECD_CLIENTS_C_SPECD_CLIENT_H
#define SPECD_CLIENTS_C_SPECD_CLIENT_H

#include "shared/job.h"
#include "shared/rq.h"

#include <stddef.h>
#include <stdint.h>

#define SPECD_JOB_ID_SIZE (JOB_ID_MAX + 1) // buffer size that holds any job id

typedef struct specd_client specd_client;

// Creates a client for the Redis at host:port with key prefix `prefix` (NULL: "specd:") and
// tries to connect once. Returns NULL only for invalid arguments (NULL or empty host, port
// outside 1..65535) or when out of memory. A client whose connect failed is still returned:
// specd_client_is_connected() is 0 and specd_client_last_error() says why, e.g.
// "cannot connect to Redis at 127.0.0.1:6379: Connection refused — is redis-server running?".
// Job ids are generated from the wall clock and a generator seeded from the OS.
specd_client *specd_client_new(const char *host, int port, const char *prefix);
void specd_client_free(specd_client *c); // NULL-safe

// One line about the last failure on this handle ("" if none). Valid until the next call.
const char *specd_client_last_error(const specd_client *c);
int specd_client_is_connected(const specd_client *c);
// Connects now (dropping any connection). Returns SPECD_OK or RQ_SOFT_DISCONNECTED.
int specd_client_connect(specd_client *c);
// Reseeds the job id generator (for reproducible ids in tests).
void specd_client_seed_ids(specd_client *c, uint64_t seed);

// Writes a fresh job id "<wall_ms>-<16 hex digits>" (e.g. "1718000000123-9f86d081884c7d65")
// drawn from *rng_state (advanced), valid per job_id_is_valid(). `size` must be at least 40.
// Returns SPECD_OK or SPECD_ERR_INVALID.
int specd_job_id_generate(uint64_t wall_ms, uint64_t *rng_state, char *out, size_t size);

// What to generate. Plain struct: fill it after specd_request_default(). Strings are borrowed.
struct specd_request {
    const char *id;          // NULL or "": a fresh id is generated at submit
    const char *prompt;      // required: prompt_len bytes (any bytes)
    size_t prompt_len;       // 0: strlen(prompt)
    int max_tokens;          // 256
    double temperature;      // 1.0; 0 is greedy
    double top_p;            // 1.0
    int top_k;               // 0 (off)
    int has_seed;            // 1: `seed` is sent
    uint64_t seed;           //
    const char *const *stop; // [n_stop] stop strings
    int n_stop;              // 0
    int stream;              // 1: the worker streams text deltas
    const char *class_label; // NULL or "": no class
    enum job_priority priority;
    void *storage; // owned by specd_request_from_json(); NULL for hand-filled requests
};

// The defaults of job_default_params(), no prompt, no id.
struct specd_request specd_request_default(void);

// Fills `out` from one JSON object whose keys are the job fields of docs/protocol.md: "id",
// "prompt" (strings), "max_tokens", "top_k" (integers), "temperature", "top_p" (numbers),
// "seed" (integer up to 2^53, or a decimal string for larger seeds), "stop" (array of strings,
// or one string), "stream" (true/false or 0/1), "class", "priority" ("high"/"normal"), "v" (1).
// Keys absent from the object keep the value of `base` (NULL: specd_request_default()); out's
// pointers to base's strings stay borrowed, so keep base alive while using out. Unknown keys are
// errors (a typo must not silently fall back to a default). Only types and syntax are checked
// here; ranges at submit (specd_request_validate()). Returns SPECD_OK (release with
// specd_request_clear()), SPECD_ERR_FORMAT with the reason in err (out then holds no storage),
// SPECD_ERR_NOMEM, SPECD_ERR_INVALID for NULL arguments.
int specd_request_from_json(const char *json, size_t len, const struct specd_request *base,
                            struct specd_request *out, char *err, size_t err_size);
void specd_request_clear(struct specd_request *r); // frees storage; NULL-safe

// Checks the request against the default job limits, as a worker with default limits would
// (an id is not required). Returns SPECD_OK or SPECD_ERR_FORMAT with the reason in err, e.g.
// "field 'top_p': '1.5' is outside (0, 1]".
int specd_request_validate(const struct specd_request *req, char *err, size_t err_size);

// The job that `req` stands for, with `id` (NULL: req->id) as its id, for callers that use rq
// directly. `job` borrows the request's strings and needs no job_clear(). Checks what a job can
// hold (id and class length and charset, prompt present); ranges are checked by
// specd_request_validate(). Returns SPECD_OK, SPECD_ERR_FORMAT with the reason in err, or
// SPECD_ERR_INVALID for NULL arguments.
int specd_request_to_job(const struct specd_request *req, const char *id, struct job *job,
                         char *err, size_t err_size);

// Validates and adds the job (XADD <prefix>jobs * v 1 id ...). Writes the job id (generated
// when req->id is NULL or "") to id_out (id_size >= SPECD_JOB_ID_SIZE recommended; may be NULL).
// Returns SPECD_OK, SPECD_ERR_FORMAT (invalid job: nothing added), RQ_SOFT_DISCONNECTED (not
// added), SPECD_ERR_INVALID, SPECD_ERR_*.
int specd_client_submit(specd_client *c, const struct specd_request *req, char *id_out,
                        size_t id_size);

// The result of a job if there is one now (no waiting). Returns SPECD_OK (release `out` with
// rq_result_clear()), SPECD_SOFT_EMPTY (none yet), RQ_SOFT_DISCONNECTED, SPECD_ERR_*.
int specd_client_result(specd_client *c, const char *job_id, struct rq_result *out);

// Waits up to timeout_ms for the result of a job (race-free: see rq_wait_result()). Returns
// SPECD_OK (release `out` with rq_result_clear()), SPECD_SOFT_EMPTY on timeout,
// RQ_SOFT_DISCONNECTED (timed out while Redis was unreachable), SPECD_ERR_*. A job that a worker
// rejected has a result with status RQ_RESULT_ERROR and the reason in `error`.
int specd_client_wait(specd_client *c, const char *job_id, int timeout_ms, struct rq_result *out);

// Position in the text deltas of one streaming job.
struct specd_stream {
    char job_id[SPECD_JOB_ID_SIZE];
    char last_id[RQ_ID_MAX]; // last stream entry read ("0": none)
    int done;                // 1 once the `done 1` entry was read: nothing more will come
};
// Starts at the beginning of the job's deltas. Returns SPECD_OK or SPECD_ERR_INVALID (bad id).
int specd_stream_init(struct specd_stream *s, const char *job_id);

// Waits up to timeout_ms (0: no waiting) for new text after the position in `s` and advances it.
// `out` gets the deltas read, concatenated; out->reset 1 means: discard the text received before
// this chunk (the job was restarted by another worker); out->done 1 (also set in s->done) means
// the job finished. Returns SPECD_OK (release with rq_stream_chunk_clear()), SPECD_SOFT_EMPTY
// (nothing new in time), RQ_SOFT_DISCONNECTED (Redis unreachable until the timeout),
// SPECD_ERR_STATE (s->done was already set), SPECD_ERR_*. Reconnects while waiting.
int specd_client_stream_next(specd_client *c, struct specd_stream *s, int timeout_ms,
                             struct rq_stream_chunk *out);

#endif
