// Internals of the controller service (controller/ctlsvc.h), shared by its files:
//   ctlsvc_loop.c     lifecycle, ZeroMQ receive, ticks, settings publishing
//   ctlsvc_workers.c  per-worker statistics the service keeps besides the algorithm's state
//   ctlsvc_store.c    the Redis policy store thread
//   ctlsvc_http.c     libmicrohttpd routes
//   ctlsvc_prom.c     GET /metrics (Prometheus text exposition) and a text buffer
//   ctlsvc_view.c     JSON views: GET /v1/workers, /healthz
// Fields marked [L] are guarded by ctlsvc.lock; [M] belong to the thread running ctlsvc_run();
// [C] are constant after ctlsvc_new().
#ifndef SPECD_CONTROLLER_CTLSVC_INTERNAL_H
#define SPECD_CONTROLLER_CTLSVC_INTERNAL_H

#include <cjson/cJSON.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "controller/ctl_algo.h"
#include "controller/ctlsvc.h"
#include "shared/proto.h"
#include "shared/rq.h"
#include "shared/zmq_msg.h"

// Why a metrics message was dropped (label `reason` of specd_controller_malformed_messages_total).
enum ctlsvc_bad {
    CTLSVC_BAD_FRAMES = 0, // wrong frame count, empty/over-long topic, sequence frame not 8
                           // bytes, empty or over-large body
    CTLSVC_BAD_TOPIC,      // topic is not "m.<worker-id>"
    CTLSVC_BAD_MSGPACK,    // body is not a valid metrics map (msgpack, types, keys, ranges)
    CTLSVC_BAD_VERSION,    // a version this controller does not speak
    CTLSVC_BAD_WORKER,     // topic worker id differs from the body's worker_id
    CTLSVC_BAD_METRICS,    // well-formed but inconsistent counts, rejected by the algorithm
    CTLSVC_BAD_COUNT
};
const char *ctlsvc_bad_name(enum ctlsvc_bad reason);

// Outcome of PUT /v1/policy (label `result` of specd_controller_policy_updates_total).
enum ctlsvc_put {
    CTLSVC_PUT_ACCEPTED = 0,
    CTLSVC_PUT_INVALID,
    CTLSVC_PUT_UNAUTHORIZED,
    CTLSVC_PUT_TOO_LARGE,
    CTLSVC_PUT_COUNT
};
const char *ctlsvc_put_name(enum ctlsvc_put result);

#define CTLSVC_CLASS_STATS 16 // classes with their own token counters per worker

struct ctlsvc_class_stats {
    char name[SPEC_CLASS_NAME_LEN];
    uint64_t drafted, accepted, emitted;
};

// What the service remembers of a worker's metrics (the algorithm keeps the estimates).
struct ctlsvc_worker {
    char id[PROTO_ID_CAP];
    char model[PROTO_NAME_CAP], draft[PROTO_NAME_CAP];
    uint64_t last_seen_ms; // monotonic
    uint64_t steps, preemptions, drafted, accepted, emitted;
    double step_ms_sum, draft_ms_sum, verify_ms_sum;
    uint32_t n_classes; // entries of classes[]; further classes count in the totals only
    struct ctlsvc_class_stats classes[CTLSVC_CLASS_STATS];
    // From the latest message.
    uint32_t batch_size, depth, kv_used, kv_total, queue_depth;
    bool fallback;
    uint64_t epoch_in_force; // settings epoch the worker reports
    uint64_t dropped;        // the worker's publisher drops (cumulative, reported)
    double last_step_ms, last_draft_ms, last_verify_ms;
    // Publishing.
    uint64_t published_epoch; // algorithm epoch last sent (0: none yet)
    uint64_t publishes;
};

struct ctlsvc_counters {
    uint64_t received; // well-formed metrics messages
    uint64_t malformed[CTLSVC_BAD_COUNT];
    uint64_t recv_errors;    // socket errors
    uint64_t lost, restarts; // sequence gaps and publisher restarts, all workers ever seen
    uint64_t published_change, published_republish, publish_errors;
    uint64_t policy_updates[CTLSVC_PUT_COUNT];
    uint64_t reloads_ok, reloads_failed;
    uint64_t log_suppressed;
    uint64_t persist_errors;
};

// At most one log line per period per kind; the rest are counted and reported with the next.
struct ctlsvc_ratelimit {
    uint64_t last_ms;
    uint64_t suppressed;
};

struct ctlsvc {
    // [C]
    char metrics_ep[CTLSVC_ENDPOINT_CAP], settings_ep[CTLSVC_ENDPOINT_CAP];
    int http_port;
    uint64_t epoch_base, start_wall_ms, start_mono_ms;
    ctlsvc_reload_fn reload;
    void *reload_user;
    atomic_int stop_requested, reload_requested;
    // [M]
    void *zctx, *sub, *pub;
    struct zmsg_message *msg;
    msgpack_sbuffer scratch;
    uint64_t next_tick_ms, next_republish_ms;
    // HTTP
    struct MHD_Daemon *httpd;
    // Store thread (the only user of rq after ctlsvc_new).
    rq *rq;
    char store_key[128]; // [C] cfg.policy_key at start (rq adds the prefix)
    pthread_t store_thread;
    bool store_started;
    pthread_cond_t store_wake; // [L] signalled when there is work or on stop
    pthread_cond_t store_done; // [L] broadcast after every store attempt
    bool store_stop;           // [L]

    pthread_mutex_t lock;
    struct ctlsvc_config cfg;       // [L]
    ctl_algo *algo;                 // [L]
    proto_seq_tracker *seq;         // [L]
    struct ctlsvc_worker **workers; // [L] sorted by id
    size_t n_workers, cap_workers;
    struct ctl_decision *decisions; // [L] the latest tick's decisions
    size_t n_decisions, cap_decisions;
    struct ctlsvc_counters c;                          // [L]
    struct ctlsvc_ratelimit bad_log[CTLSVC_BAD_COUNT]; // [L]
    struct ctlsvc_ratelimit io_log;                    // [L]
    uint64_t last_tick_ms;                             // [L] monotonic, 0 before the first
    // Policy persistence [L].
    uint64_t policy_version;    // local changes since start (PUT, SIGHUP)
    uint64_t persisted_version; // newest version Redis holds
    bool policy_loaded;         // the stored policy was read (or found absent) once
    bool redis_connected;
    char policy_source[16]; // "config", "redis", "api", "reload"
};

uint64_t ctlsvc_now_ms(void); // monotonic ms

// True when a line may be logged now; otherwise counts it as suppressed.
bool ctlsvc_ratelimit_allow(struct ctlsvc_ratelimit *r, uint64_t now_ms, uint64_t period_ms,
                            uint64_t *suppressed_total);

// ---- ctlsvc_workers.c [L] --------------------------------------------------------------------
struct ctlsvc_worker *ctlsvc_worker_find(const ctlsvc *svc, const char *id);
// Finds or adds; NULL when out of memory.
struct ctlsvc_worker *ctlsvc_worker_get(ctlsvc *svc, const char *id);
void ctlsvc_worker_remove(ctlsvc *svc, const char *id);
// Adds one step's metrics to the worker's statistics.
void ctlsvc_worker_record(struct ctlsvc_worker *w, const struct proto_metrics_msg *msg,
                          uint64_t now_ms);
void ctlsvc_workers_free(ctlsvc *svc);

// ---- ctlsvc_store.c --------------------------------------------------------------------------
// Creates the rq handle and reads the stored policy once (before any thread starts).
int ctlsvc_store_init(ctlsvc *svc, char *err, size_t err_size);
int ctlsvc_store_start(ctlsvc *svc, char *err, size_t err_size);
void ctlsvc_store_stop(ctlsvc *svc); // joins the thread, frees rq
// [L] A new policy is in force (already given to the algorithm): count it and wake the store.
// Returns the new policy version.
uint64_t ctlsvc_policy_changed(ctlsvc *svc, const char *source);
// [L] Waits (releasing the lock) until Redis holds `version` or timeout_ms passes. Returns true
// when it does.
bool ctlsvc_store_wait(ctlsvc *svc, uint64_t version, int timeout_ms);

// ---- ctlsvc_http.c ---------------------------------------------------------------------------
int ctlsvc_http_start(ctlsvc *svc, char *err, size_t err_size);
void ctlsvc_http_stop(ctlsvc *svc);

// ---- ctlsvc_prom.c ---------------------------------------------------------------------------
// A growable NUL-terminated text buffer; after an allocation failure `failed` is set and
// further appends are ignored.
struct ctlsvc_buf {
    char *data;
    size_t len, cap;
    bool failed;
};
void ctlsvc_buf_printf(struct ctlsvc_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ctlsvc_buf_free(struct ctlsvc_buf *b);
// [L] Renders every metric (Prometheus text format 0.0.4) into out.
void ctlsvc_render_metrics(const ctlsvc *svc, uint64_t now_ms, struct ctlsvc_buf *out);

// ---- ctlsvc_view.c [L] -----------------------------------------------------------------------
// {"workers": [...]} for GET /v1/workers; NULL when out of memory.
cJSON *ctlsvc_view_workers(const ctlsvc *svc, uint64_t now_ms);
// {"status": ...} for GET /healthz; *healthy false when the loop has stalled.
cJSON *ctlsvc_view_health(const ctlsvc *svc, uint64_t now_ms, bool *healthy);

#endif
