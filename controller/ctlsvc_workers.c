// Per-worker statistics of the controller service: a table sorted by worker id (binary search;
// entries are added only for workers the algorithm accepted, so it is bounded by max_workers).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/ctlsvc_internal.h"

// Index of the first entry with id >= `id`.
static size_t lower_bound(const ctlsvc *svc, const char *id) {
    size_t lo = 0, hi = svc->n_workers;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(svc->workers[mid]->id, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

struct ctlsvc_worker *ctlsvc_worker_find(const ctlsvc *svc, const char *id) {
    size_t i = lower_bound(svc, id);
    return i < svc->n_workers && strcmp(svc->workers[i]->id, id) == 0 ? svc->workers[i] : NULL;
}

struct ctlsvc_worker *ctlsvc_worker_get(ctlsvc *svc, const char *id) {
    size_t i = lower_bound(svc, id);
    if (i < svc->n_workers && strcmp(svc->workers[i]->id, id) == 0)
        return svc->workers[i];
    if (svc->n_workers == svc->cap_workers) {
        size_t cap = svc->cap_workers ? 2 * svc->cap_workers : 16;
        struct ctlsvc_worker **grown = realloc(svc->workers, cap * sizeof *grown);
        if (!grown)
            return NULL;
        svc->workers = grown;
        svc->cap_workers = cap;
    }
    struct ctlsvc_worker *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    snprintf(w->id, sizeof w->id, "%s", id);
    memmove(&svc->workers[i + 1], &svc->workers[i], (svc->n_workers - i) * sizeof *svc->workers);
    svc->workers[i] = w;
    svc->n_workers++;
    return w;
}

void ctlsvc_worker_remove(ctlsvc *svc, const char *id) {
    size_t i = lower_bound(svc, id);
    if (i >= svc->n_workers || strcmp(svc->workers[i]->id, id) != 0)
        return;
    free(svc->workers[i]);
    memmove(&svc->workers[i], &svc->workers[i + 1],
            (svc->n_workers - i - 1) * sizeof *svc->workers);
    svc->n_workers--;
}

void ctlsvc_workers_free(ctlsvc *svc) {
    for (size_t i = 0; i < svc->n_workers; i++)
        free(svc->workers[i]);
    free(svc->workers);
    svc->workers = NULL;
    svc->n_workers = svc->cap_workers = 0;
}

static struct ctlsvc_class_stats *class_stats(struct ctlsvc_worker *w, const char *name) {
    for (uint32_t i = 0; i < w->n_classes; i++)
        if (strcmp(w->classes[i].name, name) == 0)
            return &w->classes[i];
    if (w->n_classes == CTLSVC_CLASS_STATS)
        return NULL;
    struct ctlsvc_class_stats *c = &w->classes[w->n_classes++];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    return c;
}

void ctlsvc_worker_record(struct ctlsvc_worker *w, const struct proto_metrics_msg *msg,
                          uint64_t now_ms) {
    const struct spec_step_metrics *m = &msg->m;
    snprintf(w->model, sizeof w->model, "%s", msg->model);
    snprintf(w->draft, sizeof w->draft, "%s", msg->draft);
    w->last_seen_ms = now_ms;
    w->steps++;
    w->preemptions += m->preemptions;
    w->drafted += m->drafted;
    w->accepted += m->accepted;
    w->emitted += m->emitted;
    w->step_ms_sum += m->t_step_ms;
    w->draft_ms_sum += m->t_draft_ms;
    w->verify_ms_sum += m->t_verify_ms;
    for (uint32_t i = 0; i < m->n_classes && i < SPEC_MAX_CLASSES; i++) {
        struct ctlsvc_class_stats *c = class_stats(w, m->classes[i].name);
        if (!c)
            continue;
        c->drafted += m->classes[i].drafted;
        c->accepted += m->classes[i].accepted;
        c->emitted += m->classes[i].emitted;
    }
    w->batch_size = m->batch_size;
    w->depth = m->depth;
    w->kv_used = m->kv_blocks_used;
    w->kv_total = m->kv_blocks_total;
    w->queue_depth = msg->queue_depth;
    w->fallback = msg->fallback;
    w->epoch_in_force = msg->settings_epoch;
    w->dropped = msg->dropped;
    w->last_step_ms = m->t_step_ms;
    w->last_draft_ms = m->t_draft_ms;
    w->last_verify_ms = m->t_verify_ms;
}
