// Internals of the worker service shared by worker_loop.c (lifecycle and the loop) and
// worker_jobs.c (what happens to one job). Not part of the public API.
#ifndef SPECD_WORKER_SERVICE_WORKER_INTERNAL_H
#define SPECD_WORKER_SERVICE_WORKER_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "shared/proto.h"
#include "shared/rq.h"
#include "worker/engine/engine.h"
#include "worker/service/worker.h"
#include "worker/service/worker_config.h"
#include "worker/service/worker_metrics.h"
#include "worker/service/worker_settings.h"

// A job slot. FREE -> RUNNING (in the engine) -> FINISHED (result captured, engine request
// released, waiting to be written) -> FREE; or FREE -> DEAD (to be dead-lettered) -> FREE.
enum wjob_phase { WJOB_FREE = 0, WJOB_RUNNING, WJOB_FINISHED, WJOB_DEAD };

#define WJOB_MAX_FAILURES 5 // writes failing with a Redis error (not a lost connection)

struct wjob {
    enum wjob_phase phase;
    struct rq_delivery d;    // owns the job
    uint64_t engine_id;      // RUNNING
    uint64_t wall_added_ms;  // wall clock when the job entered the engine
    bool reset_pending;      // streaming: the `reset 1` entry is still to be written
    size_t streamed;         // streaming: bytes of text already written as deltas
    int failures;            // writes that failed with a Redis error
    struct rq_result result; // FINISHED; result.text points to text
    char *text;              // FINISHED: owned copy of the final text
    char finish_reason[16];
    char reason[512]; // FINISHED with an error, or DEAD: the message
};

struct worker {
    struct worker_config cfg;
    char id[PROTO_ID_CAP];
    engine *e;
    rq *q;
    void *zmq_ctx;
    worker_metrics *metrics;
    worker_settings *settings;
    struct wjob *jobs;           // [cfg.max_inflight]
    int n_held;                  // slots not FREE
    struct rq_delivery *fetched; // [cfg.max_inflight] scratch for rq_fetch
    const char **touch_ids;      // [cfg.max_inflight] scratch for rq_touch
    int32_t *tokens;             // tokenizer scratch, [tokens_cap]
    int tokens_cap;
    atomic_int stop_requests;
    bool running;
    bool redis_up; // last state logged
    double next_touch_ms;
    struct worker_stats stats;
};

// worker_jobs.c
// Reads up to the free room of new or reclaimed jobs (blocking up to block_ms when there is
// nothing) and starts them. Returns true when Redis was asked (the call may have blocked).
bool worker_intake(worker *w, int block_ms);
// Streams new text, captures finished jobs and writes results and dead letters that are due.
// Returns the number of held jobs still waiting in the engine (the metrics' queue depth).
uint32_t worker_progress(worker *w);
// Refreshes the idle time of held jobs every claim_idle_ms / 3.
void worker_touch(worker *w, double now_ms);
// Drops every held job without acking it (left pending for another worker). Returns the count.
int worker_abandon_all(worker *w);

#endif
