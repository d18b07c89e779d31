// The worker service: lifecycle and the main loop (see worker.h). Per-job work is in
// worker_jobs.c.
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#include <zmq.h>

#include "shared/clock.h"
#include "shared/log.h"
#include "shared/status.h"
#include "worker/service/worker_internal.h"

#define IDLE_PAUSE_MS 5 // sleep of an iteration that neither stepped nor waited on Redis

// "<hostname>-<pid>" made into a valid proto worker id.
static void default_worker_id(char out[PROTO_ID_CAP]) {
    char host[256] = "worker";
    if (gethostname(host, sizeof host) != 0)
        strcpy(host, "worker");
    host[sizeof host - 1] = '\0';
    char pid[24];
    snprintf(pid, sizeof pid, "-%ld", (long)getpid());
    size_t room = PROTO_ID_CAP - 1 - strlen(pid), n = 0;
    for (; host[n] && n < room; n++) {
        char c = host[n];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-';
        out[n] = ok ? c : '-';
    }
    snprintf(out + n, PROTO_ID_CAP - n, "%s", pid);
}

static void engine_params_from(const struct worker_config *c, struct engine_params *p) {
    *p = engine_default_params();
    p->target_path = c->model;
    p->draft_path = c->draft[0] ? c->draft : NULL;
    if (strcmp(c->proposer, "draft") == 0 || (strcmp(c->proposer, "auto") == 0 && c->draft[0]))
        p->proposer = ENGINE_PROPOSER_DRAFT;
    else if (strcmp(c->proposer, "ngram") == 0)
        p->proposer = ENGINE_PROPOSER_NGRAM;
    else
        p->proposer = ENGINE_PROPOSER_NONE;
    p->ngram_min = c->ngram_min;
    p->ngram_max = c->ngram_max;
    p->backend = c->backend;
    p->n_threads = c->threads;
    p->block_size = c->block_size;
    p->kv_budget_bytes = (int64_t)c->kv_mib << 20;
    p->kv_blocks = c->kv_blocks;
    p->max_num_seqs = c->max_seqs;
    p->max_num_batched_tokens = c->max_batch_tokens;
    p->n_ctx = c->ctx;
    p->max_depth = c->max_depth;
    p->depth = c->spec_enabled ? c->spec_depth : 0;
    p->prefix_caching = c->prefix_cache;
}

static void rq_params_from(const worker *w, struct rq_params *p) {
    const struct worker_config *c = &w->cfg;
    *p = rq_default_params();
    p->host = c->redis_host;
    p->port = c->redis_port;
    p->prefix = c->redis_prefix;
    p->jobs_stream = c->redis_jobs_stream;
    p->dead_stream = c->redis_dead_stream;
    p->done_stream = c->redis_done_stream;
    p->group = c->redis_group;
    p->consumer = w->id;
    p->result_ttl_s = c->result_ttl_s;
    p->claim_idle_ms = c->claim_idle_ms;
    p->max_deliveries = c->max_deliveries;
    p->block_ms = c->idle_block_ms;
    p->connect_timeout_ms = c->redis_connect_timeout_ms;
    p->command_timeout_ms = c->redis_command_timeout_ms;
    p->backoff_min_ms = c->redis_backoff_min_ms;
    p->backoff_max_ms = c->redis_backoff_max_ms;
    p->seed = XXH64(w->id, strlen(w->id), 0);
    p->job.max_tokens_limit = c->max_tokens_limit;
    p->job.default_max_tokens = c->default_max_tokens;
}

// The speculation settings the worker runs when the controller is silent (epoch 0).
static struct spec_settings safe_default(const struct worker_config *c, bool has_proposer) {
    struct spec_settings s = {0};
    s.enabled = c->spec_enabled && has_proposer && c->spec_depth > 0;
    s.depth = (uint32_t)c->spec_depth;
    s.max_depth = (uint32_t)c->max_depth;
    s.ttl_ms = 1; // never expires (epoch 0)
    return s;
}

static int make_sockets(worker *w, const struct engine_params *ep, char *err, size_t err_size) {
    w->zmq_ctx = zmq_ctx_new();
    if (!w->zmq_ctx)
        return specd_fail(err, err_size, SPECD_ERR_IO, "cannot create a ZeroMQ context");
    struct worker_metrics_params mp = worker_metrics_default_params();
    mp.zmq_ctx = w->zmq_ctx;
    mp.endpoint = w->cfg.metrics_endpoint;
    mp.worker_id = w->id;
    mp.model = engine_target_name(w->e);
    mp.draft = ep->proposer == ENGINE_PROPOSER_NONE ? "" : engine_draft_name(w->e);
    mp.queue_len = w->cfg.metrics_queue;
    int rc = worker_metrics_new(&mp, &w->metrics, err, err_size);
    if (rc != SPECD_OK)
        return rc;
    struct worker_settings_params sp = worker_settings_default_params();
    sp.zmq_ctx = w->zmq_ctx;
    sp.endpoint = w->cfg.settings_endpoint;
    sp.worker_id = w->id;
    sp.safe_default = safe_default(&w->cfg, ep->proposer != ENGINE_PROPOSER_NONE);
    return worker_settings_new(&sp, &w->settings, err, err_size);
}

int worker_new(const struct worker_config *config, worker **out, char *err, size_t err_size) {
    *out = NULL;
    int rc = worker_config_validate(config, err, err_size);
    if (rc != SPECD_OK)
        return rc;
    worker *w = calloc(1, sizeof *w);
    if (!w)
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory");
    w->cfg = *config;
    if (config->worker_id[0])
        snprintf(w->id, sizeof w->id, "%s", config->worker_id);
    else
        default_worker_id(w->id);
    atomic_init(&w->stop_requests, 0);
    const size_t n = (size_t)config->max_inflight;
    w->jobs = calloc(n, sizeof *w->jobs);
    w->fetched = calloc(n, sizeof *w->fetched);
    w->touch_ids = calloc(n, sizeof *w->touch_ids);
    if (!w->jobs || !w->fetched || !w->touch_ids) {
        worker_free(w);
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory");
    }
    struct engine_params ep;
    engine_params_from(&w->cfg, &ep);
    char why[512];
    rc = engine_new(&ep, &w->e, why, sizeof why);
    if (rc != SPECD_OK) {
        worker_free(w);
        return specd_fail(err, err_size, rc, "cannot load the models: %s", why);
    }
    rc = make_sockets(w, &ep, err, err_size);
    if (rc != SPECD_OK) {
        worker_free(w);
        return rc;
    }
    engine_apply_settings(w->e, worker_settings_current(w->settings));
    struct rq_params rp;
    rq_params_from(w, &rp);
    w->q = rq_new(&rp, why, sizeof why);
    if (!w->q) {
        worker_free(w);
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "redis: %s", why);
    }
    w->redis_up = rq_is_connected(w->q);
    if (!w->redis_up)
        LOG_WARN("redis_down host=%s port=%d reason=\"%s\": retrying in the background",
                 w->cfg.redis_host, w->cfg.redis_port, rq_last_error(w->q));
    *out = w;
    return SPECD_OK;
}

void worker_free(worker *w) {
    if (!w)
        return;
    if (w->jobs && w->e)
        worker_abandon_all(w);
    rq_free(w->q);
    worker_metrics_free(w->metrics);
    worker_settings_free(w->settings);
    if (w->zmq_ctx)
        zmq_ctx_term(w->zmq_ctx);
    engine_free(w->e);
    free(w->jobs);
    free(w->fetched);
    free(w->touch_ids);
    free(w->tokens);
    free(w);
}

void worker_request_stop(worker *w) {
    atomic_fetch_add(&w->stop_requests, 1);
}

const char *worker_get_id(const worker *w) {
    return w->id;
}

void worker_get_stats(const worker *w, struct worker_stats *out) {
    *out = w->stats;
    struct worker_metrics_stats ms;
    worker_metrics_get_stats(w->metrics, &ms);
    out->metrics_sent = ms.sent;
    out->metrics_dropped = ms.dropped;
    struct worker_settings_stats ss;
    worker_settings_get_stats(w->settings, &ss);
    out->settings_applied = ss.applied;
    out->settings_stale = ss.stale;
    out->settings_malformed = ss.malformed;
    out->settings_fallbacks = ss.fallbacks;
    struct rq_counters rc;
    rq_get_counters(w->q, &rc);
    out->jobs_malformed = rc.malformed;
    out->jobs_poisoned = rc.poisoned;
}

// ---- the loop
// ------------------------------------------------------------------------------------

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); // a signal ends it early, which is what we want
}

static void note_redis_state(worker *w) {
    bool up = rq_is_connected(w->q);
    if (up == w->redis_up)
        return;
    w->redis_up = up;
    if (up)
        LOG_INFO("redis_up host=%s port=%d held=%d", w->cfg.redis_host, w->cfg.redis_port,
                 w->n_held);
    else
        LOG_WARN("redis_down host=%s port=%d held=%d reason=\"%s\": generating on, results wait",
                 w->cfg.redis_host, w->cfg.redis_port, w->n_held, rq_last_error(w->q));
}

// Runs one engine step when there is work and publishes its metrics. Returns true after a step.
static bool step_engine(worker *w) {
    if (!engine_has_work(w->e))
        return false;
    struct spec_step_metrics m;
    int rc = engine_step(w->e, &m);
    if (rc < 0)
        LOG_ERROR("engine_step_failed status=%s: the step's jobs finish with an error",
                  specd_status_name(rc));
    const uint32_t waiting = worker_progress(w);
    if (rc != SPECD_OK)
        return false;
    w->stats.steps++;
    const struct spec_settings *s = worker_settings_current(w->settings);
    worker_metrics_publish(w->metrics, &m, s->epoch, worker_settings_fallback(w->settings),
                           waiting);
    return true;
}

int worker_run(worker *w) {
    if (w->running)
        return SPECD_ERR_STATE;
    w->running = true;
    LOG_INFO("worker_start id=%s model=%s draft=%s max_inflight=%d redis=%s:%d metrics=%s "
             "settings=%s",
             w->id, engine_target_name(w->e), engine_draft_name(w->e), w->cfg.max_inflight,
             w->cfg.redis_host, w->cfg.redis_port,
             w->cfg.metrics_endpoint[0] ? w->cfg.metrics_endpoint : "none",
             w->cfg.settings_endpoint[0] ? w->cfg.settings_endpoint : "none");
    bool draining = false;
    double drain_deadline = 0;
    for (;;) {
        const double now = clock_now_ms();
        const int stops = atomic_load(&w->stop_requests);
        if (stops > 0 && !draining) {
            draining = true;
            drain_deadline = now + w->cfg.drain_timeout_ms;
            LOG_INFO("drain_start held=%d timeout_ms=%d", w->n_held, w->cfg.drain_timeout_ms);
        }
        if (draining && (w->n_held == 0 || stops > 1 || now >= drain_deadline))
            break;
        if (worker_settings_poll(w->settings, now))
            engine_apply_settings(w->e, worker_settings_current(w->settings));
        bool waited = false;
        if (!draining) {
            // Block on Redis only when there is nothing else to do.
            const bool idle = !engine_has_work(w->e) && w->n_held == 0;
            waited = worker_intake(w, idle ? w->cfg.idle_block_ms : 0) && idle;
        }
        bool stepped = step_engine(w);
        if (!stepped)
            worker_progress(w); // results and dead letters still to write
        worker_touch(w, clock_now_ms());
        note_redis_state(w);
        if (!stepped && !waited)
            sleep_ms(IDLE_PAUSE_MS);
    }
    const int left = worker_abandon_all(w);
    LOG_INFO("drain_done id=%s abandoned=%d jobs_done=%llu", w->id, left,
             (unsigned long long)w->stats.jobs_done);
    // Leave the consumer group tidy. A consumer still holding abandoned jobs stays until other
    // workers have reclaimed them and pruned it (rq_prune_consumers via rq_fetch).
    int removed = 0;
    if (rq_retire(w->q, &removed) != SPECD_OK)
        LOG_WARN("consumer_retire_failed error=\"%s\"", rq_last_error(w->q));
    else if (removed)
        LOG_INFO("consumer_retired id=%s", w->id);
    return SPECD_OK;
}
