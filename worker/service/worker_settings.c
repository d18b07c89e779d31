// Settings subscriber with TTL fallback; the rules are in worker_settings.h.
#include "worker/service/worker_settings.h"

#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "shared/log.h"
#include "shared/proto.h"
#include "shared/status.h"
#include "shared/zmq_msg.h"

#define SETTINGS_RCVHWM 1000

struct worker_settings {
    char worker_id[PROTO_ID_CAP];
    struct spec_settings safe;    // epoch 0
    struct spec_settings current; // in force
    bool controlled;              // current came from the controller (not the safe default)
    bool fallback;                // the safe default is in force because settings expired
    bool changed;                 // current changed since the last take_change()
    double last_valid_ms;         // when the settings in force were applied or refreshed
    void *sock;                   // SUB, or NULL
    struct zmsg_message *scratch; // receive buffer (~64 KiB)
    struct worker_settings_stats stats;
};

struct worker_settings_params worker_settings_default_params(void) {
    struct worker_settings_params p = {0};
    p.safe_default.enabled = true;
    p.safe_default.depth = 4;
    p.safe_default.max_depth = 8;
    p.safe_default.ttl_ms = 1;
    return p;
}

int worker_settings_new(const struct worker_settings_params *params, worker_settings **out,
                        char *err, size_t err_size) {
    *out = NULL;
    if (!params || !params->worker_id || !proto_worker_id_valid(params->worker_id))
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "settings: bad worker id");
    struct spec_settings safe = params->safe_default;
    if (safe.epoch != 0)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "settings: the safe default must have epoch 0");
    safe.ttl_ms = safe.ttl_ms ? safe.ttl_ms : 1; // not used: the default never expires
    char why[256];
    if (proto_settings_validate(&safe, why, sizeof why) != SPECD_OK)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "safe default: %s", why);
    worker_settings *ws = calloc(1, sizeof *ws);
    if (!ws)
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "settings: out of memory");
    snprintf(ws->worker_id, sizeof ws->worker_id, "%s", params->worker_id);
    ws->safe = ws->current = safe;
    if (params->endpoint && params->endpoint[0]) {
        ws->scratch = malloc(sizeof *ws->scratch);
        ws->sock = params->zmq_ctx ? zmq_socket(params->zmq_ctx, ZMQ_SUB) : NULL;
        int rc = !ws->scratch ? SPECD_ERR_NOMEM : !ws->sock ? SPECD_ERR_IO : SPECD_OK;
        if (rc != SPECD_OK)
            specd_fail(err, err_size, rc, "settings: cannot create the SUB socket");
        if (rc == SPECD_OK)
            rc = zmsg_configure_subscriber(ws->sock, SETTINGS_RCVHWM, err, err_size);
        if (rc == SPECD_OK)
            rc = zmsg_subscribe_settings(ws->sock, ws->worker_id, err, err_size);
        if (rc == SPECD_OK && zmq_connect(ws->sock, params->endpoint) != 0)
            rc = specd_fail(err, err_size, SPECD_ERR_IO, "settings: cannot connect to %s: %s",
                            params->endpoint, zmq_strerror(zmq_errno()));
        if (rc != SPECD_OK) {
            worker_settings_free(ws);
            return rc;
        }
    }
    *out = ws;
    return SPECD_OK;
}

void worker_settings_free(worker_settings *ws) {
    if (!ws)
        return;
    if (ws->sock)
        zmq_close(ws->sock);
    free(ws->scratch);
    free(ws);
}

static void log_settings(const char *event, const struct spec_settings *s, const char *extra) {
    LOG_INFO("%s epoch=%llu enabled=%d depth=%u min_depth=%u max_depth=%u ttl_ms=%u "
             "classes=%u%s",
             event, (unsigned long long)s->epoch, s->enabled, s->depth, s->min_depth, s->max_depth,
             s->ttl_ms, s->n_classes, extra);
}

enum worker_settings_event worker_settings_offer(worker_settings *ws, const struct spec_settings *s,
                                                 double now_ms) {
    if (s->epoch == 0 || (ws->controlled && s->epoch < ws->current.epoch)) {
        ws->stats.stale++;
        LOG_DEBUG("settings_stale epoch=%llu in_force=%llu", (unsigned long long)s->epoch,
                  (unsigned long long)ws->current.epoch);
        return WORKER_SETTINGS_STALE;
    }
    if (ws->controlled && s->epoch == ws->current.epoch) {
        ws->last_valid_ms = now_ms;
        ws->current.ttl_ms = s->ttl_ms; // a repeat may stretch or shorten the TTL
        ws->stats.refreshed++;
        return WORKER_SETTINGS_REFRESHED;
    }
    const bool was_fallback = ws->fallback;
    ws->current = *s;
    ws->controlled = true;
    ws->fallback = false;
    ws->changed = true;
    ws->last_valid_ms = now_ms;
    ws->stats.applied++;
    log_settings("settings_applied", s, was_fallback ? " after_fallback=1" : "");
    return WORKER_SETTINGS_APPLIED;
}

enum worker_settings_event worker_settings_expire(worker_settings *ws, double now_ms) {
    if (!ws->controlled || now_ms - ws->last_valid_ms <= (double)ws->current.ttl_ms)
        return WORKER_SETTINGS_NONE;
    LOG_WARN("settings_fallback epoch=%llu ttl_ms=%u silent_ms=%.0f: no valid settings from the "
             "controller; using the safe default (enabled=%d depth=%u)",
             (unsigned long long)ws->current.epoch, ws->current.ttl_ms, now_ms - ws->last_valid_ms,
             ws->safe.enabled, ws->safe.depth);
    ws->current = ws->safe;
    ws->controlled = false;
    ws->fallback = true;
    ws->changed = true;
    ws->stats.fallbacks++;
    return WORKER_SETTINGS_FALLBACK;
}

// Logs the first few malformed messages, then every 100th, so a flood cannot flood the log.
static void note_malformed(worker_settings *ws, int rc, const char *why) {
    ws->stats.malformed++;
    if (ws->stats.malformed <= 10 || ws->stats.malformed % 100 == 0)
        LOG_WARN("settings_malformed count=%llu status=%s reason=\"%s\"",
                 (unsigned long long)ws->stats.malformed, specd_status_name(rc), why);
}

bool worker_settings_poll(worker_settings *ws, double now_ms) {
    while (ws->sock) {
        struct spec_settings s;
        bool broadcast = false;
        char why[256] = "";
        int rc = zmsg_recv_settings(ws->sock, ZMQ_DONTWAIT, ws->worker_id, ws->scratch, &s,
                                    &broadcast, why, sizeof why);
        if (rc == SPECD_SOFT_EMPTY)
            break;
        if (rc == SPECD_ERR_IO) {
            LOG_ERROR("settings_socket_error reason=\"%s\"", why);
            break;
        }
        ws->stats.received++;
        if (rc != SPECD_OK) {
            note_malformed(ws, rc, why);
            continue;
        }
        worker_settings_offer(ws, &s, now_ms);
    }
    worker_settings_expire(ws, now_ms);
    return worker_settings_take_change(ws);
}

bool worker_settings_take_change(worker_settings *ws) {
    bool c = ws->changed;
    ws->changed = false;
    return c;
}

const struct spec_settings *worker_settings_current(const worker_settings *ws) {
    return &ws->current;
}

bool worker_settings_fallback(const worker_settings *ws) {
    return ws->fallback;
}

void worker_settings_get_stats(const worker_settings *ws, struct worker_settings_stats *out) {
    *out = ws->stats;
}
