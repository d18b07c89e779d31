// JSON views of the controller state: GET /v1/workers and GET /healthz. Unknown numbers (NaN)
// are null.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "controller/ctlsvc_internal.h"
#include "shared/status.h"

#define STALL_MIN_MS 5000 // /healthz: the loop counts as stalled after max(5 intervals, this)

// Adds a number, or null when it is not finite. Returns false when out of memory.
static bool add_num(cJSON *o, const char *name, double v) {
    return isfinite(v) ? cJSON_AddNumberToObject(o, name, v) != NULL
                       : cJSON_AddNullToObject(o, name) != NULL;
}

static bool add_bool(cJSON *o, const char *name, bool v) {
    return cJSON_AddBoolToObject(o, name, v) != NULL;
}

static cJSON *number_array(const double *v, size_t n) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++) {
        cJSON *x = isfinite(v[i]) ? cJSON_CreateNumber(v[i]) : cJSON_CreateNull();
        if (!x || !cJSON_AddItemToArray(a, x)) {
            cJSON_Delete(x);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

static const struct ctl_decision *latest_decision(const ctlsvc *svc, const char *worker,
                                                  const char *cls) {
    for (size_t i = 0; i < svc->n_decisions; i++)
        if (strcmp(svc->decisions[i].worker, worker) == 0 &&
            strcmp(svc->decisions[i].class_name, cls) == 0)
            return &svc->decisions[i];
    return NULL;
}

static cJSON *track_json(const ctlsvc *svc, const char *worker, const struct ctl_class_info *c) {
    cJSON *t = cJSON_CreateObject();
    const struct ctl_decision *d = latest_decision(svc, worker, c->name);
    bool ok = t && cJSON_AddStringToObject(t, "class", c->name) &&
              cJSON_AddStringToObject(t, "mode", ctl_mode_name(c->mode)) &&
              add_bool(t, "enabled", c->enabled) && add_bool(t, "probing", c->probing) &&
              add_num(t, "depth", c->depth) && add_num(t, "acceptance", c->acceptance) &&
              add_num(t, "alpha", c->alpha) && add_num(t, "evidence", c->evidence) &&
              add_num(t, "steps_observed", (double)c->steps_observed) &&
              cJSON_AddStringToObject(t, "last_reason", ctl_reason_name(c->last_reason));
    cJSON *surv = ok ? number_array(c->survival, SPEC_MAX_DEPTH) : NULL;
    ok = surv && cJSON_AddItemToObject(t, "survival", surv);
    if (!ok)
        cJSON_Delete(surv);
    cJSON *gp =
        ok && d ? number_array(d->goodput, d->n_goodput <= SPEC_MAX_DEPTH + 1 ? d->n_goodput
                                                                              : SPEC_MAX_DEPTH + 1)
                : NULL;
    if (ok && d) {
        ok = gp && cJSON_AddItemToObject(t, "goodput_estimate", gp);
        if (!ok)
            cJSON_Delete(gp);
    }
    if (!ok) {
        cJSON_Delete(t);
        return NULL;
    }
    return t;
}

static cJSON *settings_json(const ctlsvc *svc, const struct spec_settings *s) {
    cJSON *o = cJSON_CreateObject();
    cJSON *classes = o ? cJSON_AddArrayToObject(o, "classes") : NULL;
    bool ok = classes &&
              add_num(o, "epoch", s->epoch ? (double)(s->epoch + svc->epoch_base) : 0.0) &&
              add_bool(o, "enabled", s->enabled) && add_num(o, "depth", s->depth) &&
              add_num(o, "min_depth", s->min_depth) && add_num(o, "max_depth", s->max_depth) &&
              add_num(o, "ttl_ms", s->ttl_ms);
    for (uint32_t i = 0; ok && i < s->n_classes && i < SPEC_MAX_CLASSES; i++) {
        cJSON *c = cJSON_CreateObject();
        ok = c && cJSON_AddStringToObject(c, "name", s->classes[i].name) &&
             add_bool(c, "enabled", s->classes[i].enabled) &&
             add_num(c, "depth", s->classes[i].depth) && cJSON_AddItemToArray(classes, c);
        if (!ok)
            cJSON_Delete(c);
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *cost_json(const struct ctl_cost_info *c) {
    cJSON *o = cJSON_CreateObject();
    bool ok = o && add_bool(o, "verify_valid", c->verify_valid) &&
              add_bool(o, "draft_valid", c->draft_valid) &&
              add_num(o, "verify_base_ms", c->verify_base_ms) &&
              add_num(o, "verify_per_token_ms", c->verify_per_token_ms) &&
              add_num(o, "draft_per_pass_ms", c->draft_per_pass_ms) &&
              add_num(o, "draft_per_seq_ms", c->draft_per_seq_ms) &&
              add_num(o, "overhead_ms", c->overhead_ms) &&
              add_num(o, "batch_mean", c->batch_mean) &&
              add_num(o, "prefill_mean", c->prefill_mean);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

// The service's own statistics of the worker (absent when it has none).
static bool add_stats(const ctlsvc *svc, cJSON *o, const char *id, uint64_t now) {
    const struct ctlsvc_worker *w = ctlsvc_worker_find(svc, id);
    if (!w)
        return true;
    struct proto_seq_stats st;
    if (proto_seq_tracker_stats(svc->seq, id, &st) != SPECD_OK)
        memset(&st, 0, sizeof st);
    cJSON *msgs = cJSON_AddObjectToObject(o, "messages");
    return cJSON_AddStringToObject(o, "model", w->model) &&
           cJSON_AddStringToObject(o, "draft", w->draft) &&
           add_num(o, "last_seen_ms_ago", (double)(now - w->last_seen_ms)) &&
           add_num(o, "steps", (double)w->steps) && add_bool(o, "fallback", w->fallback) &&
           add_num(o, "batch_size", w->batch_size) && add_num(o, "queue_depth", w->queue_depth) &&
           add_num(o, "kv_blocks_used", w->kv_used) && add_num(o, "kv_blocks_total", w->kv_total) &&
           add_num(o, "settings_epoch_in_force", (double)w->epoch_in_force) &&
           add_num(o, "last_step_ms", w->last_step_ms) && msgs &&
           add_num(msgs, "received", (double)st.received) &&
           add_num(msgs, "lost", (double)st.lost) &&
           add_num(msgs, "restarts", (double)st.restarts) &&
           add_num(msgs, "publisher_dropped", (double)w->dropped);
}

static cJSON *worker_json(const ctlsvc *svc, const struct ctl_worker_info *wi, uint64_t now) {
    cJSON *o = cJSON_CreateObject();
    bool ok = o && cJSON_AddStringToObject(o, "id", wi->id) && add_stats(svc, o, wi->id, now);
    cJSON *s = ok ? settings_json(svc, &wi->settings) : NULL;
    ok = s && cJSON_AddItemToObject(o, "settings", s);
    cJSON *c = ok ? cost_json(&wi->cost) : NULL;
    ok = c && cJSON_AddItemToObject(o, "cost", c);
    cJSON *tracks = ok ? cJSON_AddArrayToObject(o, "tracks") : NULL;
    ok = tracks != NULL;
    for (uint32_t i = 0; ok && i <= wi->n_classes && i <= SPEC_MAX_CLASSES; i++) {
        cJSON *t = track_json(svc, wi->id, i == 0 ? &wi->all : &wi->classes[i - 1]);
        ok = t && cJSON_AddItemToArray(tracks, t);
        if (!ok)
            cJSON_Delete(t);
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *ctlsvc_view_workers(const ctlsvc *svc, uint64_t now_ms) {
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = root ? cJSON_AddArrayToObject(root, "workers") : NULL;
    struct ctl_worker_info *wi = malloc(sizeof *wi);
    bool ok = arr && wi;
    size_t n = ctl_algo_worker_count(svc->algo);
    for (size_t i = 0; ok && i < n; i++) {
        if (ctl_algo_worker_info(svc->algo, i, wi) != SPECD_OK)
            continue;
        cJSON *w = worker_json(svc, wi, now_ms);
        ok = w && cJSON_AddItemToArray(arr, w);
        if (!ok)
            cJSON_Delete(w);
    }
    free(wi);
    if (!ok || !add_num(root, "count", (double)n)) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

cJSON *ctlsvc_view_health(const ctlsvc *svc, uint64_t now_ms, bool *healthy) {
    uint64_t interval = ctl_algo_policy(svc->algo)->interval_ms;
    uint64_t stall = 5 * interval > STALL_MIN_MS ? 5 * interval : STALL_MIN_MS;
    uint64_t since = svc->last_tick_ms ? svc->last_tick_ms : svc->start_mono_ms;
    *healthy = now_ms - since <= stall;
    cJSON *o = cJSON_CreateObject();
    bool ok = o && cJSON_AddStringToObject(o, "status", *healthy ? "ok" : "stalled") &&
              add_num(o, "workers", (double)ctl_algo_worker_count(svc->algo)) &&
              add_num(o, "last_tick_ms_ago", svc->last_tick_ms ? (double)(now_ms - since) : NAN) &&
              add_num(o, "uptime_s", (double)(now_ms - svc->start_mono_ms) / 1000.0) &&
              add_bool(o, "redis_connected", svc->redis_connected) &&
              add_bool(o, "policy_loaded", svc->policy_loaded) &&
              add_bool(o, "policy_persist_pending", svc->persisted_version < svc->policy_version) &&
              cJSON_AddStringToObject(o, "policy_source", svc->policy_source) &&
              cJSON_AddStringToObject(o, "mode", ctl_mode_name(ctl_algo_policy(svc->algo)->mode));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}
