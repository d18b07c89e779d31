// The worker service: the loop between the Redis job queue (shared/rq.h) and the engine, with
// the metrics publisher and the settings subscriber around it. docs/worker.md describes what it
// does; docs/protocol.md the wire contracts.
//
//   worker *w;
//   if (worker_new(&config, &w, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
//   ... worker_request_stop(w) from a signal handler or another thread ...
//   int rc = worker_run(w);   // returns after a stop request, once drained
//   worker_free(w);
//
// One loop iteration: apply settings that arrived (or fall back when they expired); read as many
// new or reclaimed jobs as there are free slots (max_inflight - held); tokenize and add them to
// the engine (malformed ones go to dead letter); run one engine step and publish its metrics;
// stream new text of streaming jobs; write the results of finished jobs (result + done
// announcement + XACK in one script) and release them; refresh the idle time of held jobs.
// While Redis is unreachable the engine keeps running and finished results wait in their slots
// until a write succeeds.
#ifndef SPECD_WORKER_SERVICE_WORKER_H
#define SPECD_WORKER_SERVICE_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "worker/service/worker_config.h"

typedef struct worker worker;

struct worker_stats {
    uint64_t jobs_started;   // added to the engine
    uint64_t jobs_done;      // result written (status done or error), acked
    uint64_t jobs_duplicate; // rq_finish found a `done` result already (only acked)
    uint64_t jobs_dead;      // sent to dead letter by this worker (prompt too long, ...)
    uint64_t jobs_malformed; // entries that failed to parse, dead-lettered while reading
    uint64_t jobs_poisoned;  // jobs dead-lettered for exceeding max_deliveries
    uint64_t jobs_abandoned; // left pending at exit (drain timeout) for another worker
    uint64_t write_retries;  // result / delta / dead-letter writes retried after a failure
    uint64_t steps;          // engine steps
    uint64_t metrics_sent, metrics_dropped;
    uint64_t settings_applied, settings_stale, settings_malformed, settings_fallbacks;
};

// Loads the models, creates the Redis handle (connecting is retried in the background, so an
// unreachable Redis is not an error here) and the ZeroMQ sockets. The config must pass
// worker_config_validate(). Returns SPECD_OK and sets *out, or an error status (bad model, bad
// endpoint, out of memory) with the reason in err.
int worker_new(const struct worker_config *config, worker **out, char *err, size_t err_size);
void worker_free(worker *w); // NULL-safe

// Runs the loop until a stop request, then drains: no new jobs are read, held jobs run to the end
// and their results are written, for at most drain_timeout_ms; jobs still held then are left
// pending (not acked) so that another worker reclaims them. Returns SPECD_OK after a stop,
// SPECD_ERR_STATE when called twice.
int worker_run(worker *w);

// Asks worker_run() to stop: the first call starts the drain, a second ends it at once.
// Async-signal-safe; may be called from any thread.
void worker_request_stop(worker *w);

// The worker id in use (the Redis consumer name and the topic suffix).
const char *worker_get_id(const worker *w);

// Counters; read them from the thread that runs worker_run() or after it returned.
void worker_get_stats(const worker *w, struct worker_stats *out);

#endif
