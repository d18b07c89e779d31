// The controller service's lifecycle and main loop: receive metrics (SUB), tick the algorithm,
// publish settings (PUB), apply SIGHUP reloads.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "controller/ctlsvc_internal.h"
#include "controller/ctlsvc_policy_json.h"
#include "shared/clock.h"
#include "shared/log.h"
#include "shared/status.h"

#define POLL_MAX_MS 100        // the loop notices stop/reload requests at least this often
#define DRAIN_BATCH 1000       // messages handled per lock hold
#define BAD_LOG_PERIOD_MS 1000 // at most one log line per second per kind of bad message
#define SEQ_MAX_WORKERS 4096

uint64_t ctlsvc_now_ms(void) {
    return clock_now_ns() / 1000000u;
}

bool ctlsvc_ratelimit_allow(struct ctlsvc_ratelimit *r, uint64_t now_ms, uint64_t period_ms,
                            uint64_t *suppressed_total) {
    if (r->last_ms == 0 || now_ms - r->last_ms >= period_ms) {
        r->last_ms = now_ms ? now_ms : 1;
        return true;
    }
    r->suppressed++;
    if (suppressed_total)
        (*suppressed_total)++;
    return false;
}

const char *ctlsvc_bad_name(enum ctlsvc_bad reason) {
    static const char *names[CTLSVC_BAD_COUNT] = {"frames",  "topic",           "msgpack",
                                                  "version", "worker_mismatch", "metrics"};
    return (unsigned)reason < CTLSVC_BAD_COUNT ? names[reason] : "unknown";
}

const char *ctlsvc_put_name(enum ctlsvc_put result) {
    static const char *names[CTLSVC_PUT_COUNT] = {"accepted", "invalid", "unauthorized",
                                                  "too_large"};
    return (unsigned)result < CTLSVC_PUT_COUNT ? names[result] : "unknown";
}

// Untrusted text for a key="value" log field: printable ASCII, '"' and '\' replaced.
static void log_safe(const char *in, char *out, size_t cap) {
    size_t n = 0;
    for (; in && *in && n + 1 < cap; in++) {
        unsigned char ch = (unsigned char)*in;
        out[n++] = ch < 0x20 || ch > 0x7e ? '?' : ch == '"' ? '\'' : ch == '\\' ? '/' : (char)ch;
    }
    out[n] = '\0';
}

// ---- receiving -------------------------------------------------------------------------------

// [L]
static void count_bad(ctlsvc *svc, enum ctlsvc_bad why, const char *detail, uint64_t now) {
    svc->c.malformed[why]++;
    struct ctlsvc_ratelimit *r = &svc->bad_log[why];
    if (!ctlsvc_ratelimit_allow(r, now, BAD_LOG_PERIOD_MS, &svc->c.log_suppressed))
        return;
    char safe[320];
    log_safe(detail, safe, sizeof safe);
    LOG_WARN("metrics_malformed reason=%s suppressed=%llu error=\"%s\"", ctlsvc_bad_name(why),
             (unsigned long long)r->suppressed, safe);
    r->suppressed = 0;
}

// [L] Feeds one well-formed message to the sequence tracker, the algorithm and the statistics.
static void accept_message(ctlsvc *svc, const struct proto_metrics_msg *m, uint64_t seq,
                           uint64_t now) {
    svc->c.received++;
    struct proto_seq_update up;
    if (proto_seq_tracker_feed(svc->seq, m->worker_id, seq, &up) == SPECD_OK) {
        svc->c.lost += up.lost;
        if (up.restart) {
            svc->c.restarts++;
            LOG_INFO("metrics_publisher_restarted worker=%s seq=%llu lost=%llu", m->worker_id,
                     (unsigned long long)seq, (unsigned long long)up.lost);
        }
    }
    char err[256];
    int rc = ctl_algo_observe(svc->algo, m->worker_id, &m->m, now);
    if (rc == SPECD_OK) {
        struct ctlsvc_worker *w = ctlsvc_worker_get(svc, m->worker_id);
        if (w)
            ctlsvc_worker_record(w, m, now);
        else
            LOG_ERROR("worker_stats_nomem worker=%s", m->worker_id);
    } else if (rc == SPECD_SOFT_FULL) {
        if (ctlsvc_ratelimit_allow(&svc->io_log, now, 10000, &svc->c.log_suppressed))
            LOG_WARN("worker_refused worker=%s reason=\"max_workers (%u) reached\"", m->worker_id,
                     ctl_algo_policy(svc->algo)->max_workers);
    } else {
        snprintf(err, sizeof err, "worker %s: step %llu metrics are inconsistent (%s)",
                 m->worker_id, (unsigned long long)m->m.step, specd_status_name(rc));
        count_bad(svc, CTLSVC_BAD_METRICS, err, now);
    }
}

// [L] Handles one message from the SUB socket. Returns SPECD_SOFT_EMPTY when none is waiting,
// SPECD_ERR_IO on a socket error, else SPECD_OK (the message was used or counted as bad).
static int receive_one(ctlsvc *svc, struct proto_metrics_msg *m, uint64_t now) {
    char err[256];
    int rc = zmsg_recv(svc->sub, ZMQ_DONTWAIT, ZMSG_FRAMES_METRICS, svc->msg, err, sizeof err);
    if (rc == SPECD_SOFT_EMPTY)
        return rc;
    if (rc == SPECD_ERR_IO || rc == SPECD_ERR_INVALID) {
        svc->c.recv_errors++;
        if (ctlsvc_ratelimit_allow(&svc->io_log, now, 10000, &svc->c.log_suppressed))
            LOG_ERROR("metrics_recv_failed error=\"%s\"", err);
        return SPECD_ERR_IO;
    }
    if (rc != SPECD_OK) {
        count_bad(svc, CTLSVC_BAD_FRAMES, err, now);
        return SPECD_OK;
    }
    enum proto_topic_kind kind = 0;
    char id[PROTO_ID_CAP];
    if (proto_topic_parse(svc->msg->topic, svc->msg->topic_len, &kind, id, err, sizeof err) !=
            SPECD_OK ||
        kind != PROTO_TOPIC_METRICS) {
        if (kind != 0)
            snprintf(err, sizeof err, "topic is not m.<worker-id>");
        count_bad(svc, CTLSVC_BAD_TOPIC, err, now);
        return SPECD_OK;
    }
    rc = proto_metrics_decode(svc->msg->body, svc->msg->body_len, m, err, sizeof err);
    if (rc == SPECD_ERR_NOMEM) {
        LOG_ERROR("metrics_decode_nomem worker=%s", id);
        return SPECD_OK;
    }
    if (rc != SPECD_OK) {
        count_bad(svc, rc == SPECD_ERR_UNSUPPORTED ? CTLSVC_BAD_VERSION : CTLSVC_BAD_MSGPACK, err,
                  now);
        return SPECD_OK;
    }
    if (strcmp(id, m->worker_id) != 0) {
        snprintf(err, sizeof err, "topic worker %s differs from body worker_id %s", id,
                 m->worker_id);
        count_bad(svc, CTLSVC_BAD_WORKER, err, now);
        return SPECD_OK;
    }
    accept_message(svc, m, svc->msg->seq, now);
    return SPECD_OK;
}

// ---- ticking and publishing ------------------------------------------------------------------

// [L]
static void log_decisions(const ctlsvc *svc) {
    char line[1536];
    for (size_t i = 0; i < svc->n_decisions; i++) {
        const struct ctl_decision *d = &svc->decisions[i];
        enum log_level level =
            svc->cfg.log_all_decisions || d->changed ? LOG_LEVEL_INFO : LOG_LEVEL_DEBUG;
        if (level < log_get_level())
            continue;
        ctl_decision_format(d, line, sizeof line);
        log_write(level, "%s", line);
    }
}

// [L] Publishes each worker's settings when their epoch changed, or all when `republish`;
// drops the statistics of workers the algorithm forgot.
static void publish_settings(ctlsvc *svc, uint64_t now, bool republish) {
    char err[256];
    for (size_t i = 0; i < svc->n_workers;) {
        struct ctlsvc_worker *w = svc->workers[i];
        struct spec_settings s;
        int rc = ctl_algo_settings(svc->algo, w->id, &s);
        if (rc == SPECD_SOFT_EMPTY) {
            LOG_INFO("worker_forgotten worker=%s steps=%llu", w->id, (unsigned long long)w->steps);
            proto_seq_tracker_forget(svc->seq, w->id);
            ctlsvc_worker_remove(svc, w->id); // w is freed
            continue;
        }
        i++;
        bool changed = s.epoch != w->published_epoch;
        if (rc != SPECD_OK || s.epoch == 0 || (!changed && !republish))
            continue;
        uint64_t algo_epoch = s.epoch;
        s.epoch += svc->epoch_base;
        rc = zmsg_publish_settings(svc->pub, w->id, &s, &svc->scratch, err, sizeof err);
        if (rc != SPECD_OK) {
            svc->c.publish_errors++;
            if (ctlsvc_ratelimit_allow(&svc->io_log, now, 10000, &svc->c.log_suppressed))
                LOG_ERROR("settings_publish_failed worker=%s error=\"%s\"", w->id, err);
            continue;
        }
        w->published_epoch = algo_epoch;
        w->publishes++;
        if (!changed) {
            svc->c.published_republish++;
            continue;
        }
        svc->c.published_change++;
        LOG_INFO("settings_published worker=%s epoch=%llu enabled=%d depth=%u min_depth=%u "
                 "max_depth=%u ttl_ms=%u classes=%u",
                 w->id, (unsigned long long)s.epoch, s.enabled, s.depth, s.min_depth, s.max_depth,
                 s.ttl_ms, s.n_classes);
    }
}

// [L]
static void tick(ctlsvc *svc, uint64_t now) {
    size_t need = (ctl_algo_worker_count(svc->algo) + 1) * (SPEC_MAX_CLASSES + 1);
    if (need > svc->cap_decisions) {
        struct ctl_decision *grown = realloc(svc->decisions, need * sizeof *grown);
        if (grown) {
            svc->decisions = grown;
            svc->cap_decisions = need;
        }
    }
    size_t n = ctl_algo_tick(svc->algo, now, svc->decisions, svc->cap_decisions);
    svc->n_decisions = n < svc->cap_decisions ? n : svc->cap_decisions;
    svc->last_tick_ms = now;
    log_decisions(svc);
    bool republish = now >= svc->next_republish_ms;
    if (republish)
        svc->next_republish_ms = now + svc->cfg.republish_ms;
    publish_settings(svc, now, republish);
}

// ---- reload ----------------------------------------------------------------------------------

// [L] Keeps the settings a reload cannot change, warning about each that differs.
static void keep_fixed(const struct ctlsvc_config *old, struct ctlsvc_config *nc) {
#define KEEP_STR(field, key)                                                                       \
    if (strcmp(old->field, nc->field) != 0) {                                                      \
        LOG_WARN("config_reload_ignored key=" key " reason=\"needs a restart\"");                  \
        memcpy(nc->field, old->field, sizeof nc->field);                                           \
    }
#define KEEP_INT(field, key)                                                                       \
    if (old->field != nc->field) {                                                                 \
        LOG_WARN("config_reload_ignored key=" key " reason=\"needs a restart\"");                  \
        nc->field = old->field;                                                                    \
    }
    KEEP_STR(metrics_endpoint, "metrics_endpoint");
    KEEP_STR(settings_endpoint, "settings_endpoint");
    KEEP_STR(http_address, "http.address");
    KEEP_STR(redis_host, "redis.host");
    KEEP_STR(redis_prefix, "redis.prefix");
    KEEP_STR(policy_key, "redis.policy_key");
    KEEP_INT(http_port, "http.port");
    KEEP_INT(redis_port, "redis.port");
    KEEP_INT(sub_rcvhwm, "sub_rcvhwm");
    KEEP_INT(pub_sndhwm, "pub_sndhwm");
#undef KEEP_STR
#undef KEEP_INT
}

static bool policies_differ(const struct ctl_policy *a, const struct ctl_policy *b) {
    char *ja = ctlsvc_policy_to_json(a), *jb = ctlsvc_policy_to_json(b);
    bool differ = !ja || !jb || strcmp(ja, jb) != 0;
    free(ja);
    free(jb);
    return differ;
}

static void reload_config(ctlsvc *svc) {
    if (!svc->reload) {
        LOG_WARN("config_reload_unsupported reason=\"no reload callback\"");
        return;
    }
    struct ctlsvc_config nc;
    char err[512] = "";
    int rc = svc->reload(svc->reload_user, &nc, err, sizeof err);
    pthread_mutex_lock(&svc->lock);
    if (rc != SPECD_OK) {
        svc->c.reloads_failed++;
        char safe[512];
        log_safe(err, safe, sizeof safe);
        LOG_ERROR("config_reload_failed error=\"%s\" action=\"keeping the running configuration\"",
                  safe);
        pthread_mutex_unlock(&svc->lock);
        return;
    }
    keep_fixed(&svc->cfg, &nc);
    bool policy_changed = policies_differ(&svc->cfg.policy, &nc.policy);
    svc->cfg = nc;
    log_set_level(nc.log_level);
    if (policy_changed && ctl_algo_set_policy(svc->algo, &nc.policy, err, sizeof err) == SPECD_OK) {
        uint64_t v = ctlsvc_policy_changed(svc, "reload");
        LOG_INFO("policy_updated source=reload version=%llu mode=%s", (unsigned long long)v,
                 ctl_mode_name(nc.policy.mode));
    }
    svc->c.reloads_ok++;
    LOG_INFO("config_reloaded policy_changed=%d", policy_changed);
    pthread_mutex_unlock(&svc->lock);
}

// ---- lifecycle -------------------------------------------------------------------------------

static int open_socket(ctlsvc *svc, bool metrics, char *err, size_t err_size) {
    const struct ctlsvc_config *cfg = &svc->cfg;
    void *s = zmq_socket(svc->zctx, metrics ? ZMQ_SUB : ZMQ_PUB);
    const char *endpoint = metrics ? cfg->metrics_endpoint : cfg->settings_endpoint;
    char *bound = metrics ? svc->metrics_ep : svc->settings_ep;
    if (metrics)
        svc->sub = s;
    else
        svc->pub = s;
    if (!s)
        return specd_fail(err, err_size, SPECD_ERR_IO, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    int rc = metrics ? zmsg_configure_subscriber(s, cfg->sub_rcvhwm, err, err_size)
                     : zmsg_configure_publisher(s, cfg->pub_sndhwm, false, err, err_size);
    if (rc == SPECD_OK && metrics)
        rc = zmsg_subscribe_metrics(s, err, err_size);
    if (rc != SPECD_OK)
        return rc;
    if (zmq_bind(s, endpoint) != 0)
        return specd_fail(err, err_size, SPECD_ERR_IO,
                          "cannot bind the %s endpoint %s: %s (is another controller running?)",
                          metrics ? "metrics" : "settings", endpoint, zmq_strerror(zmq_errno()));
    size_t len = CTLSVC_ENDPOINT_CAP;
    if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, bound, &len) != 0)
        snprintf(bound, CTLSVC_ENDPOINT_CAP, "%s", endpoint);
    return SPECD_OK;
}

static int init_sync(ctlsvc *svc) {
    pthread_condattr_t attr;
    if (pthread_mutex_init(&svc->lock, NULL) != 0 || pthread_condattr_init(&attr) != 0)
        return SPECD_ERR_NOMEM;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc =
        pthread_cond_init(&svc->store_wake, &attr) || pthread_cond_init(&svc->store_done, &attr);
    pthread_condattr_destroy(&attr);
    return rc ? SPECD_ERR_NOMEM : SPECD_OK;
}

ctlsvc *ctlsvc_new(const struct ctlsvc_config *cfg, ctlsvc_reload_fn reload, void *reload_user,
                   char *err, size_t err_size) {
    if (ctlsvc_config_validate(cfg, err, err_size) != SPECD_OK)
        return NULL;
    ctlsvc *svc = calloc(1, sizeof *svc);
    if (!svc || init_sync(svc) != SPECD_OK) {
        free(svc);
        specd_fail(err, err_size, SPECD_ERR_NOMEM, "controller: out of memory");
        return NULL;
    }
    svc->cfg = *cfg;
    svc->reload = reload;
    svc->reload_user = reload_user;
    svc->start_wall_ms = svc->epoch_base = clock_wall_ms();
    svc->start_mono_ms = ctlsvc_now_ms();
    snprintf(svc->policy_source, sizeof svc->policy_source, "config");
    msgpack_sbuffer_init(&svc->scratch);
    struct proto_seq_tracker_params sp = {.max_workers = SEQ_MAX_WORKERS};
    svc->algo = ctl_algo_new(&cfg->policy);
    svc->seq = proto_seq_tracker_new(&sp);
    svc->msg = malloc(sizeof *svc->msg);
    svc->zctx = zmq_ctx_new();
    int rc = svc->algo && svc->seq && svc->msg && svc->zctx
                 ? SPECD_OK
                 : specd_fail(err, err_size, SPECD_ERR_NOMEM, "controller: out of memory");
    if (rc == SPECD_OK)
        rc = open_socket(svc, true, err, err_size);
    if (rc == SPECD_OK)
        rc = open_socket(svc, false, err, err_size);
    if (rc == SPECD_OK)
        rc = ctlsvc_store_init(svc, err, err_size);
    if (rc == SPECD_OK)
        rc = ctlsvc_http_start(svc, err, err_size);
    if (rc == SPECD_OK)
        rc = ctlsvc_store_start(svc, err, err_size);
    if (rc != SPECD_OK) {
        ctlsvc_free(svc);
        return NULL;
    }
    uint64_t now = ctlsvc_now_ms();
    svc->next_republish_ms = now + svc->cfg.republish_ms;
    pthread_mutex_lock(&svc->lock);
    const struct ctl_policy *p = ctl_algo_policy(svc->algo);
    LOG_INFO("controller_started metrics=%s settings=%s http_port=%d redis=%s:%d "
             "redis_connected=%d policy_source=%s mode=%s interval_ms=%u epoch_base=%llu",
             svc->metrics_ep, svc->settings_ep, svc->http_port, svc->cfg.redis_host,
             svc->cfg.redis_port, svc->redis_connected, svc->policy_source, ctl_mode_name(p->mode),
             p->interval_ms, (unsigned long long)svc->epoch_base);
    svc->next_tick_ms = now + p->interval_ms;
    pthread_mutex_unlock(&svc->lock);
    return svc;
}

void ctlsvc_free(ctlsvc *svc) {
    if (!svc)
        return;
    ctlsvc_http_stop(svc);
    ctlsvc_store_stop(svc);
    if (svc->sub)
        zmq_close(svc->sub);
    if (svc->pub)
        zmq_close(svc->pub);
    if (svc->zctx)
        zmq_ctx_term(svc->zctx);
    ctl_algo_free(svc->algo);
    proto_seq_tracker_free(svc->seq);
    ctlsvc_workers_free(svc);
    free(svc->decisions);
    free(svc->msg);
    msgpack_sbuffer_destroy(&svc->scratch);
    pthread_cond_destroy(&svc->store_wake);
    pthread_cond_destroy(&svc->store_done);
    pthread_mutex_destroy(&svc->lock);
    free(svc);
}

int ctlsvc_run(ctlsvc *svc) {
    if (!svc)
        return SPECD_ERR_INVALID;
    struct proto_metrics_msg *m = malloc(sizeof *m);
    if (!m)
        return SPECD_ERR_NOMEM;
    int status = SPECD_OK;
    while (!atomic_load(&svc->stop_requested)) {
        if (atomic_exchange(&svc->reload_requested, 0))
            reload_config(svc);
        uint64_t now = ctlsvc_now_ms();
        long timeout = svc->next_tick_ms > now ? (long)(svc->next_tick_ms - now) : 0;
        zmq_pollitem_t item = {svc->sub, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&item, 1, timeout < POLL_MAX_MS ? timeout : POLL_MAX_MS);
        if (n < 0 && zmq_errno() != EINTR) {
            LOG_ERROR("metrics_poll_failed error=\"%s\"", zmq_strerror(zmq_errno()));
            status = SPECD_ERR_IO;
            break;
        }
        now = ctlsvc_now_ms();
        pthread_mutex_lock(&svc->lock);
        for (int i = 0; n > 0 && i < DRAIN_BATCH; i++)
            if (receive_one(svc, m, now) != SPECD_OK)
                break;
        if (now >= svc->next_tick_ms) {
            tick(svc, now);
            svc->next_tick_ms = now + ctl_algo_policy(svc->algo)->interval_ms;
        } else if (svc->last_tick_ms > 0) { // the interval may have shrunk (PUT, reload)
            uint64_t due = svc->last_tick_ms + ctl_algo_policy(svc->algo)->interval_ms;
            if (due < svc->next_tick_ms)
                svc->next_tick_ms = due;
        }
        pthread_mutex_unlock(&svc->lock);
    }
    free(m);
    LOG_INFO("controller_stopping status=%s", specd_status_name(status));
    return status;
}

void ctlsvc_request_stop(ctlsvc *svc) {
    if (svc)
        atomic_store(&svc->stop_requested, 1);
}

void ctlsvc_request_reload(ctlsvc *svc) {
    if (svc)
        atomic_store(&svc->reload_requested, 1);
}

int ctlsvc_http_port(const ctlsvc *svc) {
    return svc ? svc->http_port : 0;
}

const char *ctlsvc_metrics_endpoint(const ctlsvc *svc) {
    return svc ? svc->metrics_ep : "";
}

const char *ctlsvc_settings_endpoint(const ctlsvc *svc) {
    return svc ? svc->settings_ep : "";
}

uint64_t ctlsvc_epoch_base(const ctlsvc *svc) {
    return svc ? svc->epoch_base : 0;
}
