// rq: the Redis job queue (hiredis). Producers add jobs to a stream; workers read them through a
// consumer group, write results, stream text deltas, and send malformed or poisonous jobs to a
// dead-letter stream. The wire contract is docs/protocol.md, "Redis job queues".
//
// Worker loop, in outline (one rq handle per thread; handles are not thread-safe):
//
//   struct rq_params p = rq_default_params();
//   p.consumer = "worker-7";                      // stable per worker process
//   rq *q = rq_new(&p, err, sizeof err);
//   for (;;) {
//       struct rq_delivery d[MAX];
//       size_t n;
//       // Claims jobs stale at dead consumers, then reads new ones; blocks only when idle.
//       rc = rq_fetch(q, room, busy ? 0 : -1, d, &n);
//       ... for each new job: rq_stream_begin() if d[i].job.stream, then start it ...
//       ... every claim_idle_ms / 3 or so: rq_touch() the entry ids still in flight ...
//       ... per piece of text of a streamed job: rq_stream_delta() ...
//       ... per finished job: rq_finish(); on RQ_SOFT_DISCONNECTED keep the delivery and the
//           result and call rq_finish() again later (it is idempotent) ...
//       ... a job that cannot run (prompt longer than the context): rq_dead_letter() ...
//       ... then rq_delivery_clear() ...
//   }
//
// SIGPIPE: rq blocks it for the calling thread during its socket I/O, so a Redis that dies
// mid-write gives RQ_SOFT_DISCONNECTED rather than killing the process.
//
// Return codes: SPECD_OK; SPECD_SOFT_EMPTY (nothing there yet); RQ_SOFT_DISCONNECTED (Redis is
// unreachable: nothing was lost, retry later — the handle reconnects by itself with exponential
// backoff); RQ_SOFT_DUPLICATE (a result for that job id was already written); SPECD_ERR_INVALID
// (bad argument); SPECD_ERR_FORMAT (bad job or unexpected reply); SPECD_ERR_NOMEM; SPECD_ERR_IO
// (Redis answered with an error). After any non-OK return, rq_last_error() says why in one line.
#ifndef SPECD_SHARED_RQ_H
#define SPECD_SHARED_RQ_H

#include "shared/job.h"

#include <stddef.h>
#include <stdint.h>

// Soft status codes specific to rq (positive: expected conditions the caller handles).
#define RQ_SOFT_DISCONNECTED 10 // no connection to Redis now; nothing was changed by the call
#define RQ_SOFT_DUPLICATE 11    // rq_finish(): the job already had a `done` result; only acked

#define RQ_ID_MAX 48 // buffer size for a stream entry id ("<ms>-<seq>", NUL-terminated)

typedef struct rq rq;

struct rq_params {
    const char *host;        // "127.0.0.1"
    int port;                // 6379
    const char *prefix;      // "specd:" — prepended to every key
    const char *jobs_stream; // "jobs"       -> specd:jobs
    const char *dead_stream; // "jobs:dead"  -> specd:jobs:dead
    const char *done_stream; // "done"       -> specd:done
    const char *group;       // "specd-workers"
    const char *consumer;    // consumer name; NULL: "<hostname>-<pid>"
    int result_ttl_s;        // EXPIRE on result hashes and delta streams (86400)
    int claim_idle_ms;       // a pending job idle this long is reclaimed (60000)
    int max_deliveries;      // a job delivered more often goes to dead letter (3)
    int block_ms;            // default XREADGROUP BLOCK for rq_fetch() (1000)
    int connect_timeout_ms;  // (2000)
    int command_timeout_ms;  // socket timeout, added to any BLOCK time (5000)
    int backoff_min_ms;      // first reconnect delay (100)
    int backoff_max_ms;      // reconnect delay cap (5000)
    uint64_t seed;           // seeds the backoff jitter (0)
    long long done_maxlen;   // XADD MAXLEN ~ for the done and dead streams (100000)
    int delete_acked;        // 1: XDEL job entries once acked, so the jobs stream stays small
    long long prune_idle_ms; // rq_fetch() removes consumers idle this long that hold no job
                             // (3600000; 0: never), see rq_prune_consumers()
    struct job_params job;   // job validation limits (job_default_params())
};

struct rq_params rq_default_params(void);

// Copies the parameters and tries to connect once. Returns NULL only for invalid parameters or
// out of memory (with a message in err). A handle whose first connect failed is still returned:
// rq_is_connected() says so and rq_last_error() says why; calls reconnect by themselves.
rq *rq_new(const struct rq_params *params, char *err, size_t err_size);
void rq_free(rq *q); // NULL-safe

// One line about the last failure of a call on this handle ("" if none). Valid until the next call.
const char *rq_last_error(const rq *q);
int rq_is_connected(const rq *q);
const char *rq_consumer_name(const rq *q);
// Connects now (dropping any connection), ignoring the backoff schedule.
// Returns SPECD_OK or RQ_SOFT_DISCONNECTED (and schedules the next automatic attempt).
int rq_reconnect(rq *q);
// Milliseconds until the next automatic reconnect attempt (0 when connected or due now).
int rq_reconnect_delay_ms(const rq *q);

// ---- worker side -------------------------------------------------------------------------------

// A job handed to this consumer. Owns its job; release with rq_delivery_clear().
struct rq_delivery {
    char entry_id[RQ_ID_MAX]; // id of the entry in the jobs stream
    long long delivery_count; // 1 on first delivery, more when reclaimed from a dead consumer
    uint64_t enqueued_ms;     // wall-clock ms when the producer added it (from entry_id)
    uint64_t received_ms;     // wall-clock ms when this consumer got it
    struct job job;
};
void rq_delivery_clear(struct rq_delivery *d); // NULL-safe

// Reads up to `room` new jobs: XREADGROUP COUNT room [BLOCK block_ms] ... '>'. block_ms 0 does
// not block; block_ms < 0 takes params.block_ms. Creates the group (and stream) if missing.
// Malformed jobs are sent to dead letter with the reason and skipped, so *n_out can be less than
// the number of entries read. Returns SPECD_OK with *n_out >= 1, SPECD_SOFT_EMPTY (*n_out 0),
// RQ_SOFT_DISCONNECTED (after waiting up to block_ms for the reconnect), SPECD_ERR_*.
// Deliveries already placed in `out` are valid even when a later step failed (*n_out counts them).
int rq_read(rq *q, size_t room, int block_ms, struct rq_delivery *out, size_t *n_out);

// Takes over up to `room` jobs that other consumers left pending for params.claim_idle_ms
// (XAUTOCLAIM). Jobs now delivered more than params.max_deliveries times go to dead letter.
// Same returns as rq_read() (never blocks).
int rq_claim(rq *q, size_t room, struct rq_delivery *out, size_t *n_out);

// rq_claim() when due (at most every claim_idle_ms / 4), then rq_read() for the room left.
// Also rq_prune_consumers(prune_idle_ms) at most every prune_idle_ms / 4 (errors only logged).
int rq_fetch(rq *q, size_t room, int block_ms, struct rq_delivery *out, size_t *n_out);

// Resets the idle time of jobs this worker still works on, so that no other consumer reclaims
// them (XCLAIM ... JUSTID). Call well within claim_idle_ms for long jobs. Returns SPECD_OK,
// RQ_SOFT_DISCONNECTED or SPECD_ERR_*.
int rq_touch(rq *q, const char *const *entry_ids, size_t n);

// Per-job result, written by the worker and read back by producers.
enum rq_result_status { RQ_RESULT_DONE = 0, RQ_RESULT_ERROR = 1 };
struct rq_result {
    enum rq_result_status status;
    const char *text; // text_len bytes (NULL: "")
    size_t text_len;
    const char *finish_reason; // "stop", "length", ... (NULL: "")
    long long prompt_tokens, completion_tokens, drafted_tokens, accepted_tokens;
    double queue_ms, ttft_ms, total_ms;
    const char *worker; // NULL: the consumer name
    const char *error;  // NULL: ""
    void *storage;      // set by rq_get_result(); freed by rq_result_clear()
};
void rq_result_clear(struct rq_result *r); // frees what rq_get_result() filled; NULL-safe

// Atomically (one Lua script): writes the result hash with its TTL, announces the job id on the
// done stream, closes the delta stream when the job streams, and XACKs (and XDELs) the entry.
// If the hash already says `done` only the ack happens and RQ_SOFT_DUPLICATE is returned; an
// `error` result is overwritten. Returns SPECD_OK, RQ_SOFT_DUPLICATE, RQ_SOFT_DISCONNECTED
// (nothing written: call again later), SPECD_ERR_*.
int rq_finish(rq *q, const struct rq_delivery *d, const struct rq_result *r);

// What this handle did on its own while reading jobs (for logs and metrics).
struct rq_counters {
    uint64_t malformed;   // entries that failed job_parse and went to dead letter
    uint64_t poisoned;    // jobs dead-lettered for exceeding max_deliveries
    uint64_t dead_letter; // every dead-letter entry written (the two above and rq_dead_letter)
};
void rq_get_counters(const rq *q, struct rq_counters *out);

// Consumers that are gone. Each worker process is a consumer ("<host>-<pid>" by default), so
// restarts add consumers to the group that nobody removes. Both calls check and delete in one
// Lua script and never remove a consumer that still holds a pending job (its jobs are reclaimed by
// XAUTOCLAIM first). *removed (may be NULL) receives how many were removed.
// rq_prune_consumers(): every other consumer of the group that holds nothing and has been idle at
// least idle_ms. rq_retire(): this consumer, if it holds nothing (call it on a clean shutdown).
// Return SPECD_OK, RQ_SOFT_DISCONNECTED, SPECD_ERR_IO (Redis error), SPECD_ERR_INVALID.
int rq_prune_consumers(rq *q, long long idle_ms, int *removed);
int rq_retire(rq *q, int *removed);

// Sends the job to dead letter: XADD dead * id <id> entry <entry id> reason <reason> fields
// <json of the job's fields>, plus an `error` result (so a waiting producer learns the reason)
// unless a `done` result exists, then XACK. Returns SPECD_OK, RQ_SOFT_DISCONNECTED, SPECD_ERR_*.
int rq_dead_letter(rq *q, const struct rq_delivery *d, const char *reason);

// Streaming: entries of specd:stream:<job-id> are `delta <text>`, `reset 1` (discard the text
// so far: a new delivery restarts the job) and finally `done 1` (written by rq_finish()).
// rq_stream_begin() writes `reset 1` when d->delivery_count > 1 and nothing otherwise.
int rq_stream_begin(rq *q, const struct rq_delivery *d);
int rq_stream_delta(rq *q, const char *job_id, const char *text, size_t len);

// ---- producer side -----------------------------------------------------------------------------

// Validates the job as a worker would (same params.job) and adds it: XADD jobs * v 1 id ...
// Writes the entry id to entry_id_out (RQ_ID_MAX bytes; may be NULL). Returns SPECD_OK,
// SPECD_ERR_FORMAT (invalid job; the reason is in rq_last_error()), RQ_SOFT_DISCONNECTED (not
// added), SPECD_ERR_*.
int rq_submit(rq *q, const struct job *job, char *entry_id_out, size_t entry_id_size);

// Reads the result hash of a job. Returns SPECD_OK (release with rq_result_clear()),
// SPECD_SOFT_EMPTY when there is none yet, RQ_SOFT_DISCONNECTED, SPECD_ERR_*.
int rq_get_result(rq *q, const char *job_id, struct rq_result *out);

// Waits up to timeout_ms for the result: blocks on the done stream from its last entry taken
// before looking at the hash, so no announcement is missed; re-checks the hash at least every
// second. Reconnects while waiting. Returns SPECD_OK, SPECD_SOFT_EMPTY on timeout,
// RQ_SOFT_DISCONNECTED (timed out while Redis was unreachable), SPECD_ERR_*.
int rq_wait_result(rq *q, const char *job_id, int timeout_ms, struct rq_result *out);

// New text of a streamed job after `last_id` (in/out; start with "0"). Blocks up to block_ms
// (0: no blocking) when there is nothing new.
struct rq_stream_chunk {
    char *text; // malloc'ed deltas since last_id, concatenated (NUL-terminated)
    size_t len;
    int reset; // 1: discard text received before this chunk
    int done;  // 1: the job finished; nothing more will come
};
void rq_stream_chunk_clear(struct rq_stream_chunk *c); // NULL-safe
// Returns SPECD_OK, SPECD_SOFT_EMPTY (nothing new), RQ_SOFT_DISCONNECTED, SPECD_ERR_*.
int rq_read_stream(rq *q, const char *job_id, char *last_id, size_t last_id_size, int block_ms,
                   struct rq_stream_chunk *out);

// ---- small key-value helpers (controller policy) -----------------------------------------------

// SET/GET <prefix><key>. rq_kv_get returns a malloc'ed NUL-terminated copy in *value (caller
// frees) and its length; SPECD_SOFT_EMPTY when the key does not exist.
int rq_kv_set(rq *q, const char *key, const char *value, size_t len);
int rq_kv_get(rq *q, const char *key, char **value, size_t *len);

#endif
