// Acceptance and cost estimators; ctl_estimate.h and ctl_algo.h describe the method.
#include "controller/ctl_estimate.h"

#include <math.h>
#include <string.h>

#define CELL_WINDOW 64.0      // a cost cell / running mean averages about its last 64 samples
#define CELL_MIN_WEIGHT 1e-3  // floor of a stale cost cell's recency factor
#define SHRINK_TRIALS 8.0     // pseudo-trials pulling a position's acceptance to the pooled one
#define MAX_ACCEPT 0.999      // cap on an estimated per-position acceptance
#define SHIFT_MIN_DRAFTS 16.0 // evidence at position 0 before shifts are looked for
#define SHIFT_MIN_DIFF 0.05   // smallest change of first-position acceptance called a shift
#define SHIFT_Z 5.0           // ... in standard errors

// ---- acceptance ---------------------------------------------------------------------------------

void ctl_accept_add(struct ctl_accept_est *e, const struct ctl_step_counts *c, uint64_t now_ms,
                    uint32_t half_life_ms) {
    if (now_ms > e->last_ms) {
        double f = half_life_ms ? exp2(-(double)(now_ms - e->last_ms) / half_life_ms) : 1.0;
        e->drafted *= f;
        e->accepted *= f;
        for (int i = 0; i < SPEC_MAX_DEPTH; i++) {
            e->drafted_at[i] *= f;
            e->accepted_at[i] *= f;
            e->trials_at[i] *= f;
        }
        e->last_ms = now_ms;
    }
    e->drafted += c->drafted;
    e->accepted += c->accepted;
    for (int i = 0; i < SPEC_MAX_DEPTH; i++) {
        if (c->drafted_at[i] > 0)
            e->drafted_ms[i] = now_ms;
        e->drafted_at[i] += c->drafted_at[i];
        e->accepted_at[i] += c->accepted_at[i];
        e->trials_at[i] += c->trials_at[i];
    }
}

void ctl_accept_estimate(const struct ctl_accept_est *e, uint32_t half_life_ms, double min_drafted,
                         struct ctl_accept_view *v) {
    v->evidence = e->drafted;
    v->valid = false;
    v->acceptance = v->alpha = NAN;
    for (int i = 0; i < SPEC_MAX_DEPTH; i++)
        v->survival[i] = NAN;
    if (!(e->drafted > 0.0))
        return;
    v->acceptance = e->accepted / e->drafted;
    bool fresh[SPEC_MAX_DEPTH];
    double sum_accepted = 0.0, sum_trials = 0.0;
    for (int i = 0; i < SPEC_MAX_DEPTH; i++) {
        fresh[i] = e->drafted_at[i] > 0.0 && e->drafted_ms[i] + half_life_ms >= e->drafted_ms[0];
        if (fresh[i]) {
            sum_accepted += e->accepted_at[i];
            sum_trials += e->trials_at[i];
        }
    }
    // Without per-position counters, treat the acceptance rate as the per-position one.
    double alpha = sum_trials > 0.0 ? sum_accepted / sum_trials : v->acceptance;
    v->alpha = fmin(alpha, MAX_ACCEPT);
    double s = 1.0;
    for (int i = 0; i < SPEC_MAX_DEPTH; i++) {
        double c = v->alpha;
        if (fresh[i] && sum_trials > 0.0)
            c = (e->accepted_at[i] + SHRINK_TRIALS * v->alpha) / (e->trials_at[i] + SHRINK_TRIALS);
        s *= fmin(c, MAX_ACCEPT);
        v->survival[i] = s;
    }
    v->valid = e->drafted >= min_drafted;
}

bool ctl_accept_detect_shift(struct ctl_accept_est *slow, const struct ctl_accept_est *recent) {
    double n_slow = slow->drafted_at[0], n_recent = recent->drafted_at[0];
    if (n_slow < SHIFT_MIN_DRAFTS || n_recent < SHIFT_MIN_DRAFTS)
        return false;
    double p_slow = slow->accepted_at[0] / n_slow, p_recent = recent->accepted_at[0] / n_recent;
    double p = (slow->accepted_at[0] + recent->accepted_at[0]) / (n_slow + n_recent);
    double se = sqrt(fmax(p * (1.0 - p), 0.01) * (1.0 / n_slow + 1.0 / n_recent));
    double diff = fabs(p_recent - p_slow);
    if (diff <= SHIFT_MIN_DIFF || diff <= SHIFT_Z * se)
        return false;
    *slow = *recent;
    return true;
}

// E(k): expected tokens emitted per sequence at depth k.
double ctl_expected_tokens(const struct ctl_accept_view *v, uint32_t k) {
    double e = 1.0;
    for (uint32_t i = 0; i < k; i++)
        e += v->survival[i];
    return e;
}

// ---- cost model ---------------------------------------------------------------------------------

static uint32_t batch_bucket(double n) {
    uint32_t b = 0;
    while (n >= 2.0 && b + 1 < CTL_BATCH_BUCKETS) {
        n /= 2.0;
        b++;
    }
    return b;
}

static void running_add(struct ctl_running_mean *m, double v) {
    m->n += 1.0;
    m->mean += (v - m->mean) / fmin(m->n, CELL_WINDOW);
}

static void cell_add(struct ctl_cost_cell *c, double x, double y, uint64_t now_ms) {
    c->n += 1.0;
    double w = 1.0 / fmin(c->n, CELL_WINDOW);
    c->x += w * (x - c->x);
    c->y += w * (y - c->y);
    c->last_ms = now_ms;
}

void ctl_cost_add(struct ctl_cost_model *c, const struct spec_step_metrics *m, uint64_t now_ms) {
    if (m->batch_size == 0)
        return;
    running_add(&c->batch, m->batch_size);
    running_add(&c->prefill, m->prefill_tokens);
    running_add(&c->overhead, fmax(0.0, m->t_step_ms - m->t_draft_ms - m->t_verify_ms));
    double tokens = (double)m->batch_size + m->drafted + m->prefill_tokens;
    // Cells by drafted tokens per sequence: the depth when one depth serves the whole batch.
    long per_seq = lround((double)m->drafted / m->batch_size);
    uint32_t key = per_seq > SPEC_MAX_DEPTH ? SPEC_MAX_DEPTH : (uint32_t)per_seq;
    cell_add(&c->verify[key * CTL_BATCH_BUCKETS + batch_bucket(m->batch_size)], tokens,
             m->t_verify_ms, now_ms);
    if (m->depth > 0 && m->drafted > 0) {
        double per_pass = (double)m->drafted / m->depth;
        cell_add(&c->draft[batch_bucket(per_pass)], per_pass, m->t_draft_ms / m->depth, now_ms);
    }
}

static double cell_weight(const struct ctl_cost_cell *c, uint64_t newest_ms,
                          uint32_t half_life_ms) {
    double age = (double)(newest_ms - c->last_ms);
    return fmin(c->n, CELL_WINDOW) * fmax(exp2(-age / half_life_ms), CELL_MIN_WEIGHT);
}

// Weighted least squares of y = a + b x over the cells, with a, b >= 0; a single x gives b = 0.
struct ctl_line ctl_fit_cells(const struct ctl_cost_cell *cells, size_t n, uint32_t half_life_ms) {
    struct ctl_line l = {0};
    uint64_t newest = 0;
    for (size_t i = 0; i < n; i++)
        if (cells[i].n > 0 && cells[i].last_ms > newest)
            newest = cells[i].last_ms;
    double sw = 0, sx = 0, sy = 0, x_min = INFINITY, x_max = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (cells[i].n <= 0)
            continue;
        double w = cell_weight(&cells[i], newest, half_life_ms);
        sw += w;
        sx += w * cells[i].x;
        sy += w * cells[i].y;
        l.cells++;
        if (cells[i].n >= CTL_CELL_MIN_SAMPLES) {
            x_min = fmin(x_min, cells[i].x);
            x_max = fmax(x_max, cells[i].x);
        }
    }
    if (l.cells == 0)
        return l;
    l.x_spread = x_max > x_min ? x_max - x_min : 0.0;
    double mx = sx / sw, my = sy / sw, sxx = 0, sxy = 0, sxx0 = 0, sxy0 = 0;
    for (size_t i = 0; i < n; i++) {
        if (cells[i].n <= 0)
            continue;
        double w = cell_weight(&cells[i], newest, half_life_ms);
        double dx = cells[i].x - mx;
        sxx += w * dx * dx;
        sxy += w * dx * (cells[i].y - my);
        sxx0 += w * cells[i].x * cells[i].x;
        sxy0 += w * cells[i].x * cells[i].y;
    }
    l.valid = true;
    l.b = sxx > 1e-9 * sw * (mx * mx + 1.0) ? fmax(sxy / sxx, 0.0) : 0.0;
    l.a = my - l.b * mx;
    if (l.a < 0.0) { // refit through the origin
        l.a = 0.0;
        l.b = sxx0 > 0.0 ? fmax(sxy0 / sxx0, 0.0) : 0.0;
    }
    return l;
}

double ctl_cost_verify_samples(const struct ctl_cost_model *c, uint32_t depth, double batch) {
    if (depth > SPEC_MAX_DEPTH)
        return 0.0;
    return c->verify[depth * CTL_BATCH_BUCKETS + batch_bucket(batch)].n;
}

struct ctl_cost_fit ctl_cost_fit_get(const struct ctl_cost_model *c, uint32_t half_life_ms) {
    struct ctl_cost_fit f;
    f.verify = ctl_fit_cells(c->verify, sizeof c->verify / sizeof c->verify[0], half_life_ms);
    f.draft = ctl_fit_cells(c->draft, CTL_BATCH_BUCKETS, half_life_ms);
    f.batch = c->batch.mean;
    f.prefill = c->prefill.mean;
    f.overhead = c->overhead.mean;
    if (!(f.batch > 0.0))
        f.verify.valid = f.draft.valid = false;
    return f;
}

// Fills g[0..hi] with predicted tokens/s (NAN where unknown). Returns the entries filled: hi + 1,
// or 0 without a verify model.
uint32_t ctl_predict_goodput(const struct ctl_cost_fit *f, const struct ctl_accept_view *v,
                             uint32_t hi, double *g) {
    if (!f->verify.valid)
        return 0;
    double b = f->batch;
    for (uint32_t k = 0; k <= hi; k++) {
        g[k] = NAN;
        if (k > 0 && (!f->draft.valid || !(v->evidence > 0.0)))
            continue;
        double t = f->verify.a + f->verify.b * (b * (k + 1) + f->prefill) + f->overhead;
        if (k > 0)
            t += k * (f->draft.a + f->draft.b * b);
        if (t > 0.0)
            g[k] = 1000.0 * b * (k > 0 ? ctl_expected_tokens(v, k) : 1.0) / t;
    }
    return hi + 1;
}

// ---- step counts --------------------------------------------------------------------------------

// Adds sequences that reached each position: all drafters at 0, then those whose previous token
// was accepted (exact when every sequence of the class used the same depth).
void ctl_add_trials(double *trials_at, const uint32_t *drafted_at, const uint32_t *accepted_at) {
    trials_at[0] += drafted_at[0];
    for (int i = 1; i < SPEC_MAX_DEPTH; i++)
        trials_at[i] += accepted_at[i - 1] < drafted_at[i] ? accepted_at[i - 1] : drafted_at[i];
}

void ctl_step_counts_init(struct ctl_step_counts *c, uint32_t drafted, uint32_t accepted,
                          const uint32_t *drafted_at, const uint32_t *accepted_at) {
    memset(c, 0, sizeof *c);
    c->drafted = drafted;
    c->accepted = accepted;
    c->drafted_at = drafted_at;
    c->accepted_at = accepted_at;
    ctl_add_trials(c->trials_at, drafted_at, accepted_at);
}
