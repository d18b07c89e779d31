// Adaptive speculation depth: decisions and bookkeeping; the estimators are in ctl_estimate.c.
// ctl_algo.h describes the method.
#include "controller/ctl_algo.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/ctl_estimate.h"
#include "shared/status.h"

// ---- tracks and workers -------------------------------------------------------------------------

struct track {
    char name[SPEC_CLASS_NAME_LEN];
    struct ctl_accept_est est;      // half-life half_life_ms
    struct ctl_accept_est interval; // evidence since the last tick (no decay): shift detection
    uint64_t last_seen_ms, steps;
    enum ctl_mode mode;
    bool enabled; // decided state; a probe runs while !enabled
    bool probing;
    uint32_t depth;       // k while enabled
    uint32_t probe_depth; // k while probing
    uint64_t probe_start_ms, next_probe_ms;
    enum ctl_reason pending; // HOLD when nothing is pending
    uint32_t pending_count, pending_depth;
    enum ctl_reason last_reason;
    uint32_t explore_count; // explore moves made
    uint64_t explore_ms;    // time of the last one
};

struct worker {
    char id[CTL_WORKER_ID_LEN];
    uint64_t last_seen_ms, steps;
    struct ctl_cost_model cost;
    struct track all;
    uint32_t n_classes;
    struct track classes[SPEC_MAX_CLASSES];
    bool published;
    struct spec_settings settings;
};

struct ctl_algo {
    struct ctl_policy policy;
    struct worker **workers; // sorted by id
    size_t n_workers, cap_workers;
    struct ctl_counters counters;
};

static void track_effective(const struct track *t, bool *enabled, uint32_t *depth) {
    *enabled = t->enabled || t->probing;
    *depth = t->probing ? t->probe_depth : t->enabled ? t->depth : 0;
}

static void track_init(struct track *t, const char *name, uint32_t depth, uint64_t now_ms) {
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->enabled = depth > 0;
    t->depth = depth;
    t->next_probe_ms = now_ms; // adopted while off: probe on the first tick
    t->pending = CTL_REASON_HOLD;
    t->last_reason = CTL_REASON_HOLD;
}

// ---- decisions ----------------------------------------------------------------------------------

struct rules {
    enum ctl_mode mode;
    uint32_t lo, hi; // enabled depth range; hi = 0: always off
    uint32_t static_depth;
};

static struct rules rules_for(const struct ctl_policy *p, const char *class_name) {
    const struct ctl_class_override *o = class_name ? ctl_policy_find_override(p, class_name) : 0;
    struct rules r = {p->mode, p->min_depth, p->max_depth, p->static_depth};
    if (o)
        r = (struct rules){o->mode, o->min_depth, o->max_depth, o->static_depth};
    if (r.lo < 1)
        r.lo = 1;
    return r;
}

static uint32_t clamp_u32(uint32_t v, uint32_t lo, uint32_t hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

// Argmax of g over [lo, hi] (ties: smaller k); -1 when none is known.
static int best_enabled_depth(const double *g, uint32_t n, uint32_t lo, uint32_t hi) {
    int best = -1;
    for (uint32_t k = lo; k <= hi && k < n; k++)
        if (!isnan(g[k]) && (best < 0 || g[k] > g[best]))
            best = (int)k;
    return best;
}

// The depth goodput mode aims for: 0 (off) only when plain decoding beats every enabled depth
// by the margin (turning off costs probes to undo), else the best enabled depth; -1 unknown.
static int goodput_target(const double *g, uint32_t n, const struct rules *r, double margin) {
    if (n == 0 || isnan(g[0]))
        return -1;
    int best = best_enabled_depth(g, n, r->lo, r->hi);
    if (best < 0 || g[0] > g[best] * (1.0 + margin))
        return 0;
    return best;
}

struct proposal {
    enum ctl_reason kind; // HOLD, INSUFFICIENT_DATA, RAISE, LOWER, EXPLORE or DISABLE
    uint32_t depth;
};

#define EXPLORE_MAX_MOVES 4  // explore moves of a track before it decides with a flat verify cost
#define EXPLORE_WAIT_TICKS 5 // ticks an explored depth may take to gather its samples

// Until two depths have CTL_CELL_MIN_SAMPLES verify samples, walk between the current depth
// and the less-sampled neighbour, moving once the current depth has its samples (or after
// EXPLORE_WAIT_TICKS: a class below the worker's largest depth may never fill its own cell).
static struct proposal explore(const struct track *t, const struct ctl_policy *p,
                               const struct rules *r, const struct ctl_cost_model *c, double batch,
                               uint64_t now_ms) {
    bool sampled = ctl_cost_verify_samples(c, t->depth, batch) >= CTL_CELL_MIN_SAMPLES;
    if (!sampled && now_ms < t->explore_ms + (uint64_t)EXPLORE_WAIT_TICKS * p->interval_ms)
        return (struct proposal){CTL_REASON_INSUFFICIENT_DATA, 0};
    uint32_t down = t->depth - 1, up = t->depth + 1;
    bool can_down = t->depth > r->lo, can_up = t->depth < r->hi;
    uint32_t k = !can_down ? up
                 : !can_up ? down
                 : ctl_cost_verify_samples(c, up, batch) < ctl_cost_verify_samples(c, down, batch)
                     ? up
                     : down;
    return (struct proposal){CTL_REASON_EXPLORE, k};
}

static struct proposal propose_goodput(const struct track *t, const struct ctl_policy *p,
                                       const struct rules *r, const struct ctl_accept_view *v,
                                       const struct ctl_cost_model *c, const struct ctl_cost_fit *f,
                                       const struct ctl_decision *d, uint64_t now_ms) {
    struct proposal none = {CTL_REASON_INSUFFICIENT_DATA, 0};
    if (!v->valid || !f->draft.valid)
        return none;
    if (r->lo < r->hi && f->verify.x_spread < 0.5 * f->batch &&
        t->explore_count < EXPLORE_MAX_MOVES) // verify slope not known yet
        return explore(t, p, r, c, f->batch, now_ms);
    int best = goodput_target(d->goodput, d->n_goodput, r, p->hysteresis_margin);
    if (best < 0 || isnan(d->goodput[t->depth]))
        return none;
    uint32_t k = (uint32_t)best;
    if (k == t->depth || !(d->goodput[k] > d->goodput[t->depth] * (1.0 + p->hysteresis_margin)))
        return (struct proposal){CTL_REASON_HOLD, 0};
    enum ctl_reason kind = k == 0         ? CTL_REASON_DISABLE
                           : k > t->depth ? CTL_REASON_RAISE
                                          : CTL_REASON_LOWER;
    return (struct proposal){kind, k};
}

static struct proposal propose_threshold(const struct track *t, const struct ctl_policy *p,
                                         const struct rules *r, const struct ctl_accept_view *v) {
    if (!v->valid)
        return (struct proposal){CTL_REASON_INSUFFICIENT_DATA, 0};
    double rate = v->acceptance;
    if (rate < p->critical_threshold)
        return (struct proposal){CTL_REASON_DISABLE, 0};
    if (rate < p->low_threshold && t->depth > r->lo)
        return (struct proposal){CTL_REASON_LOWER, t->depth - 1};
    if (rate > p->target_acceptance && t->depth < r->hi)
        return (struct proposal){CTL_REASON_RAISE, t->depth + 1};
    return (struct proposal){CTL_REASON_HOLD, 0};
}

// Holds a proposal for hold_intervals consecutive ticks, then applies it. Returns the reason.
static enum ctl_reason hold_and_apply(struct track *t, const struct ctl_policy *p,
                                      struct proposal prop, uint64_t now_ms) {
    if (prop.kind == CTL_REASON_HOLD || prop.kind == CTL_REASON_INSUFFICIENT_DATA) {
        t->pending = CTL_REASON_HOLD;
        t->pending_count = t->pending_depth = 0;
        return prop.kind;
    }
    if (t->pending == prop.kind) {
        t->pending_count++;
    } else {
        t->pending = prop.kind;
        t->pending_count = 1;
    }
    t->pending_depth = prop.depth;
    if (t->pending_count < p->hold_intervals)
        return CTL_REASON_PENDING;
    if (prop.kind == CTL_REASON_DISABLE) {
        t->enabled = false;
        t->next_probe_ms = now_ms + p->probe_interval_ms;
    } else {
        t->depth = prop.depth;
    }
    if (prop.kind == CTL_REASON_EXPLORE) {
        t->explore_count++;
        t->explore_ms = now_ms;
    }
    t->pending = CTL_REASON_HOLD;
    t->pending_count = t->pending_depth = 0;
    return prop.kind;
}

#define PROBE_MAX_STRETCH 4 // a probe short of min_drafted evidence runs up to 4 durations

// Off: wait, probe, and decide at the end of each probe.
static enum ctl_reason decide_off(struct track *t, const struct ctl_policy *p,
                                  const struct rules *r, const struct ctl_accept_view *v,
                                  const struct ctl_cost_fit *f, const struct ctl_decision *d,
                                  uint64_t now_ms) {
    if (!t->probing) {
        if (r->hi == 0 || now_ms < t->next_probe_ms)
            return CTL_REASON_OFF;
        t->probing = true;
        t->probe_start_ms = now_ms;
        t->probe_depth = clamp_u32(p->probe_depth, r->lo, r->hi);
        memset(&t->est, 0, sizeof t->est); // judge the probe on fresh evidence only
        return CTL_REASON_PROBE;
    }
    uint64_t ran_ms = now_ms - t->probe_start_ms;
    if (ran_ms < p->probe_duration_ms ||
        (!v->valid && ran_ms < (uint64_t)PROBE_MAX_STRETCH * p->probe_duration_ms))
        return CTL_REASON_PROBE; // runs its duration, longer while evidence is short
    t->probing = false;
    uint32_t depth = 0;
    if (r->mode == CTL_MODE_THRESHOLD) {
        if (v->valid && v->acceptance > p->low_threshold)
            depth = t->probe_depth;
    } else if (v->valid && f->draft.valid) {
        int best = best_enabled_depth(d->goodput, d->n_goodput, r->lo, r->hi);
        if (best > 0 && !isnan(d->goodput[0]) &&
            d->goodput[best] > d->goodput[0] * (1.0 + p->hysteresis_margin))
            depth = (uint32_t)best;
    }
    if (depth == 0) {
        t->next_probe_ms = now_ms + p->probe_interval_ms;
        return CTL_REASON_PROBE_FAILED;
    }
    t->enabled = true;
    t->depth = depth;
    return CTL_REASON_REENABLE;
}

// Static pins and out-of-bounds states, applied at once. Returns COUNT when neither applies.
static enum ctl_reason decide_forced(struct track *t, const struct rules *r) {
    if (r->mode == CTL_MODE_STATIC) {
        t->enabled = r->static_depth > 0;
        t->depth = r->static_depth;
        t->probing = false;
        return CTL_REASON_STATIC;
    }
    if (t->probing && r->hi == 0) {
        t->probing = false;
        return CTL_REASON_BOUNDS;
    }
    if (t->enabled && (t->depth < r->lo || t->depth > r->hi)) {
        t->enabled = r->hi > 0;
        t->depth = r->hi > 0 ? clamp_u32(t->depth, r->lo, r->hi) : 0;
        return CTL_REASON_BOUNDS;
    }
    return CTL_REASON_COUNT;
}

static void decide_track(const ctl_algo *a, const struct worker *w, struct track *t, bool aggregate,
                         const struct ctl_cost_fit *f, uint64_t now_ms, struct ctl_decision *d) {
    const struct ctl_policy *p = &a->policy;
    struct rules r = rules_for(p, aggregate ? NULL : t->name);
    struct ctl_accept_view v;
    memset(d, 0, sizeof *d);
    d->shift = ctl_accept_detect_shift(&t->est, &t->interval);
    memset(&t->interval, 0, sizeof t->interval);
    ctl_accept_estimate(&t->est, p->half_life_ms, p->min_drafted, &v);
    d->now_ms = now_ms;
    snprintf(d->worker, sizeof d->worker, "%s", w->id);
    snprintf(d->class_name, sizeof d->class_name, "%s", aggregate ? CTL_CLASS_ALL : t->name);
    d->mode = r.mode;
    track_effective(t, &d->old_enabled, &d->old_depth);
    d->n_goodput = ctl_predict_goodput(f, &v, r.hi > t->depth ? r.hi : t->depth, d->goodput);
    if (t->mode != r.mode) {
        t->pending = CTL_REASON_HOLD;
        t->pending_count = t->pending_depth = 0;
        t->mode = r.mode;
    }

    enum ctl_reason reason = decide_forced(t, &r);
    if (reason != CTL_REASON_COUNT) {
        t->pending = CTL_REASON_HOLD;
        t->pending_count = t->pending_depth = 0;
    } else if (!t->enabled) {
        reason = decide_off(t, p, &r, &v, f, d, now_ms);
        if (t->probing && t->probe_start_ms == now_ms) { // a new probe reset the estimates
            ctl_accept_estimate(&t->est, p->half_life_ms, p->min_drafted, &v);
            d->n_goodput =
                ctl_predict_goodput(f, &v, r.hi > t->depth ? r.hi : t->depth, d->goodput);
        }
    } else {
        struct proposal prop = r.mode == CTL_MODE_THRESHOLD
                                   ? propose_threshold(t, p, &r, &v)
                                   : propose_goodput(t, p, &r, &v, &w->cost, f, d, now_ms);
        reason = hold_and_apply(t, p, prop, now_ms);
    }
    t->last_reason = reason;

    d->reason = reason;
    track_effective(t, &d->enabled, &d->depth);
    d->changed = d->enabled != d->old_enabled || d->depth != d->old_depth;
    d->probing = t->probing;
    d->pending = t->pending;
    d->pending_count = t->pending_count;
    d->pending_depth = t->pending_depth;
    d->acceptance = v.acceptance;
    d->alpha = v.alpha;
    d->evidence = v.evidence;
}

// ---- observation --------------------------------------------------------------------------------

static bool counts_valid(uint32_t drafted, uint32_t accepted, uint32_t depth,
                         const uint32_t *drafted_at, const uint32_t *accepted_at) {
    if (accepted > drafted || depth > SPEC_MAX_DEPTH)
        return false;
    for (int i = 0; i < SPEC_MAX_DEPTH; i++)
        if (accepted_at[i] > drafted_at[i])
            return false;
    return true;
}

static bool metrics_valid(const struct spec_step_metrics *m) {
    if (!counts_valid(m->drafted, m->accepted, m->depth, m->drafted_at, m->accepted_at) ||
        m->n_classes > SPEC_MAX_CLASSES)
        return false;
    const double times[] = {m->t_draft_ms, m->t_verify_ms, m->t_step_ms};
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++)
        if (!isfinite(times[i]) || times[i] < 0.0)
            return false;
    for (uint32_t c = 0; c < m->n_classes; c++) {
        const struct spec_class_metrics *k = &m->classes[c];
        if (!ctl_name_is_valid(k->name, sizeof k->name) ||
            !counts_valid(k->drafted, k->accepted, k->depth, k->drafted_at, k->accepted_at))
            return false;
        for (uint32_t j = 0; j < c; j++)
            if (strcmp(m->classes[j].name, k->name) == 0)
                return false;
    }
    return true;
}

static void track_observe(struct track *t, const struct ctl_step_counts *c, uint64_t now_ms,
                          const struct ctl_policy *p) {
    ctl_accept_add(&t->est, c, now_ms, p->half_life_ms);
    ctl_accept_add(&t->interval, c, now_ms, 0);
    if (now_ms > t->last_seen_ms)
        t->last_seen_ms = now_ms;
    t->steps++;
}

// Index of `id`, or -(insertion point) - 1.
static ptrdiff_t worker_find(const ctl_algo *a, const char *id) {
    size_t lo = 0, hi = a->n_workers;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(id, a->workers[mid]->id);
        if (c == 0)
            return (ptrdiff_t)mid;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -(ptrdiff_t)lo - 1;
}

static int worker_add(ctl_algo *a, const char *id, size_t at, struct worker **out) {
    if (a->n_workers >= a->policy.max_workers) {
        a->counters.workers_refused++;
        return SPECD_SOFT_FULL;
    }
    if (a->n_workers == a->cap_workers) {
        size_t cap = a->cap_workers ? 2 * a->cap_workers : 16;
        struct worker **ws = realloc(a->workers, cap * sizeof *ws);
        if (!ws)
            return SPECD_ERR_NOMEM;
        a->workers = ws;
        a->cap_workers = cap;
    }
    struct worker *w = calloc(1, sizeof *w);
    if (!w)
        return SPECD_ERR_NOMEM;
    snprintf(w->id, sizeof w->id, "%s", id);
    memmove(&a->workers[at + 1], &a->workers[at], (a->n_workers - at) * sizeof *a->workers);
    a->workers[at] = w;
    a->n_workers++;
    *out = w;
    return SPECD_OK;
}

static void worker_remove(ctl_algo *a, size_t at) {
    free(a->workers[at]);
    memmove(&a->workers[at], &a->workers[at + 1], (a->n_workers - at - 1) * sizeof *a->workers);
    a->n_workers--;
}

static struct track *class_track(ctl_algo *a, struct worker *w, const struct spec_class_metrics *k,
                                 uint64_t now_ms) {
    for (uint32_t i = 0; i < w->n_classes; i++)
        if (strcmp(w->classes[i].name, k->name) == 0)
            return &w->classes[i];
    if (w->n_classes >= SPEC_MAX_CLASSES) {
        a->counters.classes_dropped++;
        return NULL;
    }
    struct track *t = &w->classes[w->n_classes++];
    track_init(t, k->name, k->depth, now_ms);
    return t;
}

int ctl_algo_observe(ctl_algo *a, const char *worker_id, const struct spec_step_metrics *m,
                     uint64_t now_ms) {
    if (!a)
        return SPECD_ERR_INVALID;
    if (!worker_id || !m || !ctl_name_is_valid(worker_id, CTL_WORKER_ID_LEN)) {
        a->counters.observations_rejected++;
        return SPECD_ERR_INVALID;
    }
    if (!metrics_valid(m)) {
        a->counters.observations_rejected++;
        return SPECD_ERR_FORMAT;
    }
    ptrdiff_t found = worker_find(a, worker_id);
    struct worker *w;
    if (found >= 0) {
        w = a->workers[found];
    } else {
        int rc = worker_add(a, worker_id, (size_t)(-found - 1), &w);
        if (rc != SPECD_OK)
            return rc;
        track_init(&w->all, CTL_CLASS_ALL, m->depth, now_ms);
    }
    if (now_ms > w->last_seen_ms)
        w->last_seen_ms = now_ms;
    w->steps++;
    ctl_cost_add(&w->cost, m, now_ms);

    struct ctl_step_counts c;
    ctl_step_counts_init(&c, m->drafted, m->accepted, m->drafted_at, m->accepted_at);
    if (m->n_classes > 0) { // per-class trials are exact when depths differ between classes
        memset(c.trials_at, 0, sizeof c.trials_at);
        for (uint32_t i = 0; i < m->n_classes; i++)
            ctl_add_trials(c.trials_at, m->classes[i].drafted_at, m->classes[i].accepted_at);
    }
    track_observe(&w->all, &c, now_ms, &a->policy);
    for (uint32_t i = 0; i < m->n_classes; i++) {
        const struct spec_class_metrics *k = &m->classes[i];
        struct track *t = class_track(a, w, k, now_ms);
        if (!t)
            continue;
        ctl_step_counts_init(&c, k->drafted, k->accepted, k->drafted_at, k->accepted_at);
        track_observe(t, &c, now_ms, &a->policy);
    }
    a->counters.observations++;
    return SPECD_OK;
}

// ---- tick ---------------------------------------------------------------------------------------

struct emitter {
    ctl_algo *algo;
    struct ctl_decision *out;
    size_t cap, count;
};

static void emit(struct emitter *e, const struct ctl_decision *d) {
    e->algo->counters.decisions[d->reason]++;
    if (e->count < e->cap)
        e->out[e->count] = *d;
    e->count++;
}

static bool is_silent(uint64_t last_seen_ms, uint64_t now_ms, uint32_t timeout_ms) {
    return now_ms >= last_seen_ms && now_ms - last_seen_ms >= timeout_ms;
}

static void emit_forgotten(struct emitter *e, const char *worker_id, const struct track *t,
                           bool aggregate, uint64_t now_ms) {
    struct ctl_decision d;
    memset(&d, 0, sizeof d);
    d.now_ms = now_ms;
    snprintf(d.worker, sizeof d.worker, "%s", worker_id);
    snprintf(d.class_name, sizeof d.class_name, "%s", aggregate ? CTL_CLASS_ALL : t->name);
    d.mode = t->mode;
    d.reason = CTL_REASON_FORGOTTEN;
    track_effective(t, &d.old_enabled, &d.old_depth);
    d.changed = d.old_enabled;
    d.pending = CTL_REASON_HOLD;
    d.acceptance = d.alpha = NAN;
    emit(e, &d);
}

static void forget_classes(struct emitter *e, struct worker *w, uint64_t now_ms) {
    uint32_t kept = 0;
    for (uint32_t i = 0; i < w->n_classes; i++) {
        if (is_silent(w->classes[i].last_seen_ms, now_ms, e->algo->policy.worker_timeout_ms)) {
            emit_forgotten(e, w->id, &w->classes[i], false, now_ms);
            continue;
        }
        if (kept != i)
            w->classes[kept] = w->classes[i];
        kept++;
    }
    w->n_classes = kept;
}

static void build_settings(const struct ctl_policy *p, const struct worker *w,
                           struct spec_settings *s) {
    memset(s, 0, sizeof *s);
    track_effective(&w->all, &s->enabled, &s->depth);
    s->min_depth = p->min_depth;
    s->max_depth = p->max_depth;
    for (uint32_t i = 0; i < p->n_overrides; i++) {
        if (p->overrides[i].min_depth < s->min_depth)
            s->min_depth = p->overrides[i].min_depth;
        if (p->overrides[i].max_depth > s->max_depth)
            s->max_depth = p->overrides[i].max_depth;
    }
    s->ttl_ms = p->settings_ttl_ms;
    s->n_classes = w->n_classes;
    for (uint32_t i = 0; i < w->n_classes; i++) {
        struct spec_class_setting *c = &s->classes[i];
        snprintf(c->name, sizeof c->name, "%s", w->classes[i].name);
        track_effective(&w->classes[i], &c->enabled, &c->depth);
    }
}

static bool settings_equal(const struct spec_settings *x, const struct spec_settings *y) {
    if (x->enabled != y->enabled || x->depth != y->depth || x->min_depth != y->min_depth ||
        x->max_depth != y->max_depth || x->ttl_ms != y->ttl_ms || x->n_classes != y->n_classes)
        return false;
    for (uint32_t i = 0; i < x->n_classes; i++)
        if (strcmp(x->classes[i].name, y->classes[i].name) != 0 ||
            x->classes[i].enabled != y->classes[i].enabled ||
            x->classes[i].depth != y->classes[i].depth)
            return false;
    return true;
}

static void publish(ctl_algo *a, struct worker *w) {
    struct spec_settings s;
    build_settings(&a->policy, w, &s);
    if (w->published && settings_equal(&s, &w->settings))
        return;
    s.epoch = w->settings.epoch + 1;
    w->settings = s;
    w->published = true;
    a->counters.settings_changes++;
}

size_t ctl_algo_tick(ctl_algo *a, uint64_t now_ms, struct ctl_decision *out, size_t cap) {
    if (!a)
        return 0;
    struct emitter e = {a, out, out ? cap : 0, 0};
    struct ctl_decision d;
    a->counters.ticks++;
    for (size_t i = 0; i < a->n_workers;) {
        struct worker *w = a->workers[i];
        if (is_silent(w->last_seen_ms, now_ms, a->policy.worker_timeout_ms)) {
            emit_forgotten(&e, w->id, &w->all, true, now_ms);
            worker_remove(a, i);
            continue;
        }
        forget_classes(&e, w, now_ms);
        struct ctl_cost_fit f = ctl_cost_fit_get(&w->cost, a->policy.cost_half_life_ms);
        decide_track(a, w, &w->all, true, &f, now_ms, &d);
        emit(&e, &d);
        for (uint32_t c = 0; c < w->n_classes; c++) {
            decide_track(a, w, &w->classes[c], false, &f, now_ms, &d);
            emit(&e, &d);
        }
        publish(a, w);
        i++;
    }
    return e.count;
}

// ---- lifecycle and queries ----------------------------------------------------------------------

ctl_algo *ctl_algo_new(const struct ctl_policy *policy) {
    if (ctl_policy_validate(policy, NULL, 0) != SPECD_OK)
        return NULL;
    ctl_algo *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->policy = *policy;
    return a;
}

void ctl_algo_free(ctl_algo *a) {
    if (!a)
        return;
    for (size_t i = 0; i < a->n_workers; i++)
        free(a->workers[i]);
    free(a->workers);
    free(a);
}

int ctl_algo_set_policy(ctl_algo *a, const struct ctl_policy *policy, char *reason,
                        size_t reason_size) {
    if (!a)
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID, "algo is NULL");
    int rc = ctl_policy_validate(policy, reason, reason_size);
    if (rc == SPECD_OK)
        a->policy = *policy;
    return rc;
}

const struct ctl_policy *ctl_algo_policy(const ctl_algo *a) {
    return a ? &a->policy : NULL;
}

int ctl_algo_settings(const ctl_algo *a, const char *worker_id, struct spec_settings *out) {
    if (!a || !worker_id || !out)
        return SPECD_ERR_INVALID;
    memset(out, 0, sizeof *out);
    ptrdiff_t i = worker_find(a, worker_id);
    if (i < 0)
        return SPECD_SOFT_EMPTY;
    *out = a->workers[i]->settings;
    return SPECD_OK;
}

size_t ctl_algo_worker_count(const ctl_algo *a) {
    return a ? a->n_workers : 0;
}

static void track_info(const struct ctl_policy *p, const struct track *t, bool aggregate,
                       struct ctl_class_info *out) {
    struct ctl_accept_view v;
    ctl_accept_estimate(&t->est, p->half_life_ms, p->min_drafted, &v);
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", aggregate ? CTL_CLASS_ALL : t->name);
    out->mode = rules_for(p, aggregate ? NULL : t->name).mode;
    track_effective(t, &out->enabled, &out->depth);
    out->probing = t->probing;
    out->acceptance = v.acceptance;
    out->alpha = v.alpha;
    out->evidence = v.evidence;
    memcpy(out->survival, v.survival, sizeof out->survival);
    out->last_seen_ms = t->last_seen_ms;
    out->steps_observed = t->steps;
    out->last_reason = t->last_reason;
}

int ctl_algo_worker_info(const ctl_algo *a, size_t index, struct ctl_worker_info *out) {
    if (!a || !out || index >= a->n_workers)
        return SPECD_ERR_INVALID;
    const struct worker *w = a->workers[index];
    memset(out, 0, sizeof *out);
    snprintf(out->id, sizeof out->id, "%s", w->id);
    out->last_seen_ms = w->last_seen_ms;
    out->steps_observed = w->steps;
    struct ctl_cost_fit f = ctl_cost_fit_get(&w->cost, a->policy.cost_half_life_ms);
    out->cost = (struct ctl_cost_info){
        .verify_valid = f.verify.valid,
        .draft_valid = f.draft.valid,
        .verify_base_ms = f.verify.a,
        .verify_per_token_ms = f.verify.b,
        .draft_per_pass_ms = f.draft.a,
        .draft_per_seq_ms = f.draft.b,
        .overhead_ms = f.overhead,
        .batch_mean = f.batch,
        .prefill_mean = f.prefill,
        .verify_cells = f.verify.cells,
        .draft_cells = f.draft.cells,
    };
    out->settings = w->settings;
    track_info(&a->policy, &w->all, true, &out->all);
    out->n_classes = w->n_classes;
    for (uint32_t i = 0; i < w->n_classes; i++)
        track_info(&a->policy, &w->classes[i], false, &out->classes[i]);
    return SPECD_OK;
}

int ctl_algo_worker_info_by_id(const ctl_algo *a, const char *worker_id,
                               struct ctl_worker_info *out) {
    if (!a || !worker_id || !out)
        return SPECD_ERR_INVALID;
    ptrdiff_t i = worker_find(a, worker_id);
    if (i < 0)
        return SPECD_SOFT_EMPTY;
    return ctl_algo_worker_info(a, (size_t)i, out);
}

int ctl_algo_forget_worker(ctl_algo *a, const char *worker_id) {
    if (!a || !worker_id)
        return SPECD_ERR_INVALID;
    ptrdiff_t i = worker_find(a, worker_id);
    if (i < 0)
        return SPECD_SOFT_EMPTY;
    worker_remove(a, (size_t)i);
    return SPECD_OK;
}

void ctl_algo_counters(const ctl_algo *a, struct ctl_counters *out) {
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!a)
        return;
    *out = a->counters;
    out->workers_tracked = a->n_workers;
    out->classes_tracked = 0;
    for (size_t i = 0; i < a->n_workers; i++)
        out->classes_tracked += a->workers[i]->n_classes;
}

const char *ctl_reason_name(enum ctl_reason reason) {
    static const char *const names[CTL_REASON_COUNT] = {
        [CTL_REASON_HOLD] = "hold",
        [CTL_REASON_PENDING] = "pending",
        [CTL_REASON_INSUFFICIENT_DATA] = "insufficient_data",
        [CTL_REASON_RAISE] = "raise",
        [CTL_REASON_LOWER] = "lower",
        [CTL_REASON_EXPLORE] = "explore",
        [CTL_REASON_DISABLE] = "disable",
        [CTL_REASON_OFF] = "off",
        [CTL_REASON_PROBE] = "probe",
        [CTL_REASON_REENABLE] = "reenable",
        [CTL_REASON_PROBE_FAILED] = "probe_failed",
        [CTL_REASON_STATIC] = "static",
        [CTL_REASON_BOUNDS] = "bounds",
        [CTL_REASON_FORGOTTEN] = "forgotten",
    };
    if ((unsigned)reason >= CTL_REASON_COUNT)
        return "unknown";
    return names[reason];
}

// snprintf at the end of buf; *len counts what the whole line needs.
static void appendf(char *buf, size_t size, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void appendf(char *buf, size_t size, size_t *len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = *len < size ? vsnprintf(buf + *len, size - *len, fmt, ap) : vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n > 0)
        *len += (size_t)n;
}

int ctl_decision_format(const struct ctl_decision *d, char *buf, size_t size) {
    if (!d)
        return -1;
    if (!buf)
        size = 0;
    if (size > 0)
        buf[0] = '\0';
    size_t len = 0;
    appendf(buf, size, &len,
            "decision ts=%llu worker=%s class=%s mode=%s reason=%s changed=%d old_enabled=%d "
            "enabled=%d old_depth=%u depth=%u probing=%d shift=%d pending=%s pending_count=%u "
            "pending_depth=%u acceptance=%.4f alpha=%.4f evidence=%.1f goodput=",
            (unsigned long long)d->now_ms, d->worker, d->class_name, ctl_mode_name(d->mode),
            ctl_reason_name(d->reason), d->changed, d->old_enabled, d->enabled, d->old_depth,
            d->depth, d->probing, d->shift, ctl_reason_name(d->pending), d->pending_count,
            d->pending_depth, d->acceptance, d->alpha, d->evidence);
    uint32_t n = d->n_goodput <= SPEC_MAX_DEPTH + 1 ? d->n_goodput : SPEC_MAX_DEPTH + 1;
    if (n == 0)
        appendf(buf, size, &len, "none");
    for (uint32_t k = 0; k < n; k++)
        appendf(buf, size, &len, k ? ",%.1f" : "%.1f", d->goodput[k]);
    return (int)len;
}
