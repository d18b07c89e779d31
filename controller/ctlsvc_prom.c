// GET /metrics: the Prometheus text exposition format (version 0.0.4). Every family has HELP and
// TYPE lines followed by all of its samples; label values are escaped (\\, \", \n). Per-worker
// series disappear when the controller forgets a worker. docs/controller.md lists them all.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/ctlsvc_internal.h"
#include "shared/status.h"

// ---- text buffer -----------------------------------------------------------------------------

void ctlsvc_buf_printf(struct ctlsvc_buf *b, const char *fmt, ...) {
    if (b->failed)
        return;
    for (;;) {
        size_t room = b->cap - b->len;
        va_list ap;
        va_start(ap, fmt);
        int n = room ? vsnprintf(b->data + b->len, room, fmt, ap) : -1;
        va_end(ap);
        if (n >= 0 && (size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 16384;
        while (n >= 0 && cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
}

void ctlsvc_buf_free(struct ctlsvc_buf *b) {
    if (!b)
        return;
    free(b->data);
    memset(b, 0, sizeof *b);
}

// ---- exposition helpers ----------------------------------------------------------------------

static void family(struct ctlsvc_buf *b, const char *name, const char *type, const char *help) {
    ctlsvc_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

// Label value escaping of the text format.
static const char *esc(const char *in, char *out, size_t cap) {
    size_t n = 0;
    for (; *in && n + 3 < cap; in++) {
        if (*in == '\\' || *in == '"' || *in == '\n') {
            out[n++] = '\\';
            out[n++] = *in == '\n' ? 'n' : *in;
        } else {
            out[n++] = *in;
        }
    }
    out[n] = '\0';
    return out;
}

static void put_value(struct ctlsvc_buf *b, double v) {
    if (isnan(v))
        ctlsvc_buf_printf(b, " NaN\n");
    else if (isinf(v))
        ctlsvc_buf_printf(b, v > 0 ? " +Inf\n" : " -Inf\n");
    else
        ctlsvc_buf_printf(b, " %.10g\n", v);
}

// name{labels} value; labels already escaped ("" for none).
static void sample(struct ctlsvc_buf *b, const char *name, const char *labels, double v) {
    if (labels[0])
        ctlsvc_buf_printf(b, "%s{%s}", name, labels);
    else
        ctlsvc_buf_printf(b, "%s", name);
    put_value(b, v);
}

static void sample_u64(struct ctlsvc_buf *b, const char *name, const char *labels, uint64_t v) {
    if (labels[0])
        ctlsvc_buf_printf(b, "%s{%s} %llu\n", name, labels, (unsigned long long)v);
    else
        ctlsvc_buf_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

static void one(struct ctlsvc_buf *b, const char *name, const char *type, const char *help,
                double v) {
    family(b, name, type, help);
    sample(b, name, "", v);
}

// ---- controller-wide families ----------------------------------------------------------------

static void render_controller(const ctlsvc *svc, uint64_t now, struct ctlsvc_buf *b) {
    const struct ctl_policy *p = ctl_algo_policy(svc->algo);
    struct ctl_counters ac;
    ctl_algo_counters(svc->algo, &ac);
    const struct ctlsvc_counters *c = &svc->c;
    char l[128];
    family(b, "specd_controller_info", "gauge", "Controller build and policy mode (always 1).");
    snprintf(l, sizeof l, "protocol=\"%d\",mode=\"%s\",policy_source=\"%s\"", PROTO_VERSION,
             ctl_mode_name(p->mode), svc->policy_source);
    sample(b, "specd_controller_info", l, 1);
    one(b, "specd_controller_start_time_seconds", "gauge", "Start time, seconds since the epoch.",
        (double)svc->start_wall_ms / 1000.0);
    one(b, "specd_controller_last_tick_age_seconds", "gauge",
        "Seconds since the algorithm last ran (-1 before the first tick).",
        svc->last_tick_ms ? (double)(now - svc->last_tick_ms) / 1000.0 : -1.0);
    one(b, "specd_controller_ticks_total", "counter", "Algorithm decision rounds.",
        (double)ac.ticks);
    one(b, "specd_controller_workers_tracked", "gauge", "Workers the algorithm tracks.",
        (double)ac.workers_tracked);
    one(b, "specd_controller_classes_tracked", "gauge",
        "Request classes tracked over all workers (aggregate tracks excluded).",
        (double)ac.classes_tracked);
    one(b, "specd_controller_observations_total", "counter", "Engine steps fed to the algorithm.",
        (double)ac.observations);
    one(b, "specd_controller_workers_refused_total", "counter",
        "Metrics refused because policy max_workers workers are tracked.",
        (double)ac.workers_refused);
    one(b, "specd_controller_classes_dropped_total", "counter",
        "Class entries ignored because a worker's class table was full.",
        (double)ac.classes_dropped);
    one(b, "specd_controller_settings_changes_total", "counter",
        "Settings epoch increments over all workers.", (double)ac.settings_changes);
    family(b, "specd_controller_decisions_total", "counter", "Algorithm decisions by reason.");
    for (int r = 0; r < CTL_REASON_COUNT; r++) {
        snprintf(l, sizeof l, "reason=\"%s\"", ctl_reason_name((enum ctl_reason)r));
        sample_u64(b, "specd_controller_decisions_total", l, ac.decisions[r]);
    }
    one(b, "specd_controller_messages_received_total", "counter",
        "Well-formed metrics messages received.", (double)c->received);
    one(b, "specd_controller_messages_lost_total", "counter",
        "Metrics messages lost (sequence gaps), all workers.", (double)c->lost);
    one(b, "specd_controller_publisher_restarts_total", "counter",
        "Worker publishers that restarted (sequence went backwards).", (double)c->restarts);
    family(b, "specd_controller_malformed_messages_total", "counter",
           "Metrics messages dropped as malformed, by reason.");
    for (int r = 0; r < CTLSVC_BAD_COUNT; r++) {
        snprintf(l, sizeof l, "reason=\"%s\"", ctlsvc_bad_name((enum ctlsvc_bad)r));
        sample_u64(b, "specd_controller_malformed_messages_total", l, c->malformed[r]);
    }
    one(b, "specd_controller_receive_errors_total", "counter", "Metrics socket errors.",
        (double)c->recv_errors);
    family(b, "specd_controller_settings_published_total", "counter",
           "Settings messages sent: on a change (new epoch) or periodic republish.");
    sample_u64(b, "specd_controller_settings_published_total", "kind=\"change\"",
               c->published_change);
    sample_u64(b, "specd_controller_settings_published_total", "kind=\"republish\"",
               c->published_republish);
    one(b, "specd_controller_settings_publish_errors_total", "counter",
        "Settings messages that could not be sent.", (double)c->publish_errors);
    family(b, "specd_controller_policy_updates_total", "counter",
           "PUT /v1/policy requests by result.");
    for (int r = 0; r < CTLSVC_PUT_COUNT; r++) {
        snprintf(l, sizeof l, "result=\"%s\"", ctlsvc_put_name((enum ctlsvc_put)r));
        sample_u64(b, "specd_controller_policy_updates_total", l, c->policy_updates[r]);
    }
    one(b, "specd_controller_policy_version", "gauge",
        "Local policy changes (PUT, SIGHUP) since start.", (double)svc->policy_version);
    one(b, "specd_controller_policy_persist_pending", "gauge",
        "1 while an accepted policy change has not reached Redis.",
        svc->persisted_version < svc->policy_version ? 1 : 0);
    one(b, "specd_controller_policy_loaded", "gauge",
        "1 once the stored policy was read from Redis (or found absent).",
        svc->policy_loaded ? 1 : 0);
    one(b, "specd_controller_policy_persist_errors_total", "counter",
        "Failed attempts to write the policy to Redis.", (double)c->persist_errors);
    one(b, "specd_controller_redis_connected", "gauge",
        "1 when the last Redis operation of the policy store succeeded.",
        svc->redis_connected ? 1 : 0);
    family(b, "specd_controller_config_reloads_total", "counter", "SIGHUP reloads by result.");
    sample_u64(b, "specd_controller_config_reloads_total", "result=\"ok\"", c->reloads_ok);
    sample_u64(b, "specd_controller_config_reloads_total", "result=\"error\"", c->reloads_failed);
    one(b, "specd_controller_log_lines_suppressed_total", "counter",
        "Log lines dropped by rate limiting.", (double)c->log_suppressed);
    one(b, "specd_policy_target_acceptance", "gauge", "Policy target_acceptance.",
        p->target_acceptance);
    one(b, "specd_policy_low_threshold", "gauge", "Policy low_threshold.", p->low_threshold);
    one(b, "specd_policy_critical_threshold", "gauge", "Policy critical_threshold.",
        p->critical_threshold);
    one(b, "specd_policy_min_depth", "gauge", "Policy min_depth.", p->min_depth);
    one(b, "specd_policy_max_depth", "gauge", "Policy max_depth.", p->max_depth);
    one(b, "specd_policy_interval_seconds", "gauge", "Policy interval_ms in seconds.",
        p->interval_ms / 1000.0);
}

// ---- per track (worker x class) --------------------------------------------------------------

struct track {
    const struct ctl_worker_info *w;
    const struct ctl_class_info *c;
    const struct ctl_decision *d; // latest decision, or NULL
    char labels[192];
};

static const struct ctl_decision *find_decision(const ctlsvc *svc, const char *worker,
                                                const char *cls, size_t *hint) {
    for (size_t k = 0; k < svc->n_decisions; k++) {
        size_t i = (*hint + k) % svc->n_decisions;
        const struct ctl_decision *d = &svc->decisions[i];
        if (strcmp(d->worker, worker) == 0 && strcmp(d->class_name, cls) == 0) {
            *hint = i + 1;
            return d->reason == CTL_REASON_FORGOTTEN ? NULL : d;
        }
    }
    return NULL;
}

static double goodput_at(const struct ctl_decision *d, uint32_t k) {
    return d && k < d->n_goodput && k <= SPEC_MAX_DEPTH ? d->goodput[k] : NAN;
}

static void render_tracks(const struct track *t, size_t n, struct ctlsvc_buf *b) {
    static const struct {
        const char *name, *help;
    } fams[] = {
        {"specd_acceptance_ewma", "Weighted acceptance rate accepted/drafted (NaN: unknown)."},
        {"specd_acceptance_alpha", "Pooled per-position acceptance estimate (NaN: unknown)."},
        {"specd_acceptance_evidence_tokens", "Weighted drafted tokens behind the estimates."},
        {"specd_depth", "Effective draft depth k (0 when speculation is off)."},
        {"specd_enabled", "1 when speculation is on (probes included)."},
        {"specd_probing", "1 while a probe runs on a disabled track."},
        {"specd_goodput_estimate_tokens_per_second",
         "Predicted emitted tokens/s at the current depth (NaN: no cost model yet)."},
        {"specd_goodput_plain_estimate_tokens_per_second",
         "Predicted emitted tokens/s without speculation (NaN: no cost model yet)."},
    };
    for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
        family(b, fams[f].name, "gauge", fams[f].help);
        for (size_t i = 0; i < n; i++) {
            const struct ctl_class_info *c = t[i].c;
            double v = f == 0   ? c->acceptance
                       : f == 1 ? c->alpha
                       : f == 2 ? c->evidence
                       : f == 3 ? (double)c->depth
                       : f == 4 ? (double)c->enabled
                       : f == 5 ? (double)c->probing
                       : f == 6 ? goodput_at(t[i].d, c->depth)
                                : goodput_at(t[i].d, 0);
            sample(b, fams[f].name, t[i].labels, v);
        }
    }
}

// ---- per worker ------------------------------------------------------------------------------

static void render_worker_costs(const struct ctl_worker_info *wi, size_t n, struct ctlsvc_buf *b) {
    family(b, "specd_cost_model_ms", "gauge",
           "Fitted cost model terms in ms: t_verify = verify_base + verify_per_token * tokens, "
           "t_draft = k * (draft_per_pass + draft_per_seq * n).");
    static const char *terms[] = {"verify_base", "verify_per_token", "draft_per_pass",
                                  "draft_per_seq", "overhead"};
    for (size_t i = 0; i < n; i++) {
        const struct ctl_cost_info *c = &wi[i].cost;
        double v[] = {c->verify_base_ms, c->verify_per_token_ms, c->draft_per_pass_ms,
                      c->draft_per_seq_ms, c->overhead_ms};
        bool valid[] = {c->verify_valid, c->verify_valid, c->draft_valid, c->draft_valid,
                        c->verify_valid};
        for (size_t k = 0; k < 5; k++) {
            if (!valid[k])
                continue;
            char l[160];
            snprintf(l, sizeof l, "worker=\"%s\",term=\"%s\"", wi[i].id, terms[k]);
            sample(b, "specd_cost_model_ms", l, v[k]);
        }
    }
}

// Gauges and counters taken from the service's statistics, one sample per worker.
static void render_worker_stats(const ctlsvc *svc, uint64_t now, struct ctlsvc_buf *b) {
    enum { G, C };
    static const struct {
        const char *name, *help;
        int type;
    } fams[] = {
        {"specd_worker_last_seen_age_seconds", "Seconds since the worker's last metrics.", G},
        {"specd_worker_steps_total", "Engine steps reported.", C},
        {"specd_worker_preemptions_total", "Sequences preempted.", C},
        {"specd_worker_batch_size", "Sequences in the latest step.", G},
        {"specd_worker_step_depth", "Largest draft depth used in the latest step.", G},
        {"specd_worker_queue_depth", "Jobs waiting for the worker (latest step).", G},
        {"specd_worker_kv_blocks_used", "Target KV cache blocks in use.", G},
        {"specd_worker_kv_blocks_total", "Target KV cache blocks.", G},
        {"specd_worker_kv_usage_ratio", "KV blocks used / total.", G},
        {"specd_worker_fallback", "1 when the worker runs its safe default (settings expired).", G},
        {"specd_worker_settings_epoch_in_force", "Settings epoch the worker reports in force.", G},
        {"specd_worker_publisher_dropped_total",
         "Metrics messages the worker's publisher dropped (reported by the worker).", C},
        {"specd_worker_settings_published_total", "Settings messages sent to the worker.", C},
    };
    for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
        family(b, fams[f].name, fams[f].type == G ? "gauge" : "counter", fams[f].help);
        for (size_t i = 0; i < svc->n_workers; i++) {
            const struct ctlsvc_worker *w = svc->workers[i];
            double v[] = {(double)(now - w->last_seen_ms) / 1000.0,
                          (double)w->steps,
                          (double)w->preemptions,
                          w->batch_size,
                          w->depth,
                          w->queue_depth,
                          w->kv_used,
                          w->kv_total,
                          w->kv_total ? (double)w->kv_used / w->kv_total : 0.0,
                          w->fallback,
                          (double)w->epoch_in_force,
                          (double)w->dropped,
                          (double)w->publishes};
            char l[96];
            snprintf(l, sizeof l, "worker=\"%s\"", w->id);
            sample(b, fams[f].name, l, v[f]);
        }
    }
}

static void render_worker_detail(const ctlsvc *svc, struct ctlsvc_buf *b) {
    char l[512], m1[160], m2[160];
    family(b, "specd_worker_info", "gauge", "Worker models (always 1).");
    for (size_t i = 0; i < svc->n_workers; i++) {
        const struct ctlsvc_worker *w = svc->workers[i];
        snprintf(l, sizeof l, "worker=\"%s\",model=\"%s\",draft=\"%s\"", w->id,
                 esc(w->model, m1, sizeof m1), esc(w->draft, m2, sizeof m2));
        sample(b, "specd_worker_info", l, 1);
    }
    family(b, "specd_worker_tokens_total", "counter",
           "Draft tokens proposed (drafted), accepted, and tokens emitted, per class "
           "(class=\"*\": all classes).");
    static const char *kinds[] = {"drafted", "accepted", "emitted"};
    for (size_t i = 0; i < svc->n_workers; i++) {
        const struct ctlsvc_worker *w = svc->workers[i];
        uint64_t all[] = {w->drafted, w->accepted, w->emitted};
        for (int k = 0; k < 3; k++) {
            snprintf(l, sizeof l, "worker=\"%s\",class=\"*\",kind=\"%s\"", w->id, kinds[k]);
            sample_u64(b, "specd_worker_tokens_total", l, all[k]);
        }
        for (uint32_t c = 0; c < w->n_classes; c++) {
            const struct ctlsvc_class_stats *cs = &w->classes[c];
            uint64_t v[] = {cs->drafted, cs->accepted, cs->emitted};
            for (int k = 0; k < 3; k++) {
                snprintf(l, sizeof l, "worker=\"%s\",class=\"%s\",kind=\"%s\"", w->id,
                         esc(cs->name, m1, sizeof m1), kinds[k]);
                sample_u64(b, "specd_worker_tokens_total", l, v[k]);
            }
        }
    }
    static const char *phases[] = {"step", "draft", "verify"};
    for (int pass = 0; pass < 2; pass++) {
        const char *name =
            pass ? "specd_worker_last_step_seconds" : "specd_worker_step_seconds_total";
        family(b, name, pass ? "gauge" : "counter",
               pass ? "Latest step's time by phase (step = whole step)."
                    : "Time in engine steps by phase (step = whole step), summed.");
        for (size_t i = 0; i < svc->n_workers; i++) {
            const struct ctlsvc_worker *w = svc->workers[i];
            double sum[] = {w->step_ms_sum, w->draft_ms_sum, w->verify_ms_sum};
            double last[] = {w->last_step_ms, w->last_draft_ms, w->last_verify_ms};
            for (int k = 0; k < 3; k++) {
                snprintf(l, sizeof l, "worker=\"%s\",phase=\"%s\"", w->id, phases[k]);
                sample(b, name, l, (pass ? last[k] : sum[k]) / 1000.0);
            }
        }
    }
}

static void render_worker_messages(const ctlsvc *svc, struct ctlsvc_buf *b) {
    static const struct {
        const char *name, *help;
    } fams[] = {
        {"specd_worker_messages_received_total", "Metrics messages received from the worker."},
        {"specd_worker_messages_lost_total", "Metrics messages lost (sequence gaps)."},
        {"specd_worker_publisher_restarts_total", "Times the worker's sequence restarted."},
    };
    for (size_t f = 0; f < 3; f++) {
        family(b, fams[f].name, "counter", fams[f].help);
        for (size_t i = 0; i < svc->n_workers; i++) {
            struct proto_seq_stats st;
            if (proto_seq_tracker_stats(svc->seq, svc->workers[i]->id, &st) != SPECD_OK)
                continue;
            uint64_t v[] = {st.received, st.lost, st.restarts};
            char l[96];
            snprintf(l, sizeof l, "worker=\"%s\"", svc->workers[i]->id);
            sample_u64(b, fams[f].name, l, v[f]);
        }
    }
}

void ctlsvc_render_metrics(const ctlsvc *svc, uint64_t now_ms, struct ctlsvc_buf *out) {
    render_controller(svc, now_ms, out);
    size_t nw = ctl_algo_worker_count(svc->algo);
    struct ctl_worker_info *wi = nw ? calloc(nw, sizeof *wi) : NULL;
    struct track *t = nw ? calloc(nw * (SPEC_MAX_CLASSES + 1), sizeof *t) : NULL;
    if (nw && (!wi || !t)) {
        out->failed = true;
        nw = 0;
    }
    size_t nt = 0, hint = 0;
    for (size_t i = 0; i < nw; i++) {
        if (ctl_algo_worker_info(svc->algo, i, &wi[i]) != SPECD_OK)
            memset(&wi[i], 0, sizeof wi[i]);
        for (uint32_t c = 0; c <= wi[i].n_classes && c <= SPEC_MAX_CLASSES; c++) {
            struct track *tr = &t[nt++];
            tr->w = &wi[i];
            tr->c = c == 0 ? &wi[i].all : &wi[i].classes[c - 1];
            tr->d = find_decision(svc, wi[i].id, tr->c->name, &hint);
            char cls[96];
            snprintf(tr->labels, sizeof tr->labels, "worker=\"%s\",class=\"%s\"", wi[i].id,
                     esc(tr->c->name, cls, sizeof cls));
        }
    }
    render_tracks(t, nt, out);
    family(out, "specd_settings_epoch", "gauge",
           "Settings epoch the controller publishes to the worker (0: none yet).");
    for (size_t i = 0; i < nw; i++) {
        char l[96];
        snprintf(l, sizeof l, "worker=\"%s\"", wi[i].id);
        uint64_t e = wi[i].settings.epoch ? wi[i].settings.epoch + svc->epoch_base : 0;
        sample_u64(out, "specd_settings_epoch", l, e);
    }
    render_worker_costs(wi, nw, out);
    render_worker_stats(svc, now_ms, out);
    render_worker_detail(svc, out);
    render_worker_messages(svc, out);
    free(wi);
    free(t);
}
