#include "controller/ctl_sim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "shared/status.h"

struct ctl_sim {
    struct ctl_sim_params params;
    uint64_t rng; // splitmix64 state
    double now_ms;
    uint64_t step;
    bool have_settings; // settings with epoch > 0 applied and not expired
    struct spec_settings settings;
    double applied_ms;
};

// ---- random numbers (splitmix64) ---------------------------------------------------------------

static uint64_t rng_next(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Uniform in [0, 1).
static double rng_uniform(uint64_t *state) {
    return (double)(rng_next(state) >> 11) * 0x1p-53;
}

// Standard normal (Box-Muller).
static double rng_normal(uint64_t *state) {
    double u1 = 1.0 - rng_uniform(state); // (0, 1]
    double u2 = rng_uniform(state);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

// ---- parameters --------------------------------------------------------------------------------

struct ctl_sim_params ctl_sim_default_params(void) {
    struct ctl_sim_params p;
    memset(&p, 0, sizeof p);
    p.seed = 1;
    p.n_classes = 1;
    strcpy(p.classes[0].name, "default");
    p.classes[0].n_seqs = 8;
    p.classes[0].n_phases = 1;
    p.classes[0].phases[0] = (struct ctl_sim_phase){0.0, 0.7};
    p.report_classes = true;
    p.verify_base_ms = 20.0;
    p.verify_per_token_ms = 0.05;
    p.draft_per_pass_ms = 0.5;
    p.draft_per_seq_ms = 0.02;
    p.noise = 0.05;
    p.default_enabled = true;
    p.default_depth = 4;
    return p;
}

static bool class_valid(const struct ctl_sim_class *c) {
    size_t len = strnlen(c->name, sizeof c->name);
    if (len == 0 || len == sizeof c->name || c->n_phases == 0 || c->n_phases > CTL_SIM_MAX_PHASES ||
        c->phases[0].start_ms != 0.0)
        return false;
    for (uint32_t i = 0; i < c->n_phases; i++) {
        if (!(c->phases[i].alpha >= 0.0 && c->phases[i].alpha <= 1.0))
            return false;
        if (i > 0 && !(c->phases[i].start_ms > c->phases[i - 1].start_ms))
            return false;
    }
    return true;
}

static bool params_valid(const struct ctl_sim_params *p) {
    if (p->n_classes == 0 || p->n_classes > SPEC_MAX_CLASSES || p->default_depth > SPEC_MAX_DEPTH)
        return false;
    const double costs[] = {p->verify_base_ms, p->verify_per_token_ms, p->draft_per_pass_ms,
                            p->draft_per_seq_ms, p->overhead_ms};
    for (size_t i = 0; i < sizeof costs / sizeof costs[0]; i++)
        if (!(costs[i] >= 0.0 && isfinite(costs[i])))
            return false;
    if (!(p->noise >= 0.0 && p->noise <= 1.0) || !(p->verify_base_ms > 0.0))
        return false;
    for (uint32_t c = 0; c < p->n_classes; c++)
        if (!class_valid(&p->classes[c]))
            return false;
    return true;
}

ctl_sim *ctl_sim_new(const struct ctl_sim_params *params) {
    if (!params || !params_valid(params))
        return NULL;
    ctl_sim *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->params = *params;
    s->rng = params->seed;
    return s;
}

void ctl_sim_free(ctl_sim *sim) {
    free(sim);
}

// ---- settings ----------------------------------------------------------------------------------

int ctl_sim_apply_settings(ctl_sim *sim, const struct spec_settings *s) {
    if (!sim || !s || s->depth > SPEC_MAX_DEPTH || s->n_classes > SPEC_MAX_CLASSES ||
        s->min_depth > s->max_depth || s->max_depth > SPEC_MAX_DEPTH)
        return SPECD_ERR_INVALID;
    for (uint32_t i = 0; i < s->n_classes; i++)
        if (s->classes[i].depth > SPEC_MAX_DEPTH)
            return SPECD_ERR_INVALID;
    if (sim->have_settings && s->epoch == sim->settings.epoch) { // keep-alive
        sim->applied_ms = sim->now_ms;
        return SPECD_SOFT_EMPTY;
    }
    if (s->epoch <= sim->settings.epoch)
        return SPECD_SOFT_EMPTY;
    sim->settings = *s;
    sim->have_settings = true;
    sim->applied_ms = sim->now_ms;
    return SPECD_OK;
}

static uint32_t clamp_depth(bool enabled, uint32_t depth, const struct spec_settings *s) {
    if (!enabled || depth == 0)
        return 0;
    return depth < s->min_depth ? s->min_depth : depth > s->max_depth ? s->max_depth : depth;
}

uint32_t ctl_sim_class_depth(const ctl_sim *sim, uint32_t class_index) {
    if (!sim || class_index >= sim->params.n_classes)
        return 0;
    const struct spec_settings *s = &sim->settings;
    bool expired = s->ttl_ms > 0 && sim->now_ms - sim->applied_ms > s->ttl_ms;
    if (!sim->have_settings || expired)
        return sim->params.default_enabled ? sim->params.default_depth : 0;
    const char *name = sim->params.classes[class_index].name;
    for (uint32_t i = 0; i < s->n_classes; i++)
        if (strncmp(s->classes[i].name, name, SPEC_CLASS_NAME_LEN) == 0)
            return clamp_depth(s->classes[i].enabled, s->classes[i].depth, s);
    return clamp_depth(s->enabled, s->depth, s);
}

double ctl_sim_alpha(const ctl_sim *sim, uint32_t class_index, double t_ms) {
    if (!sim || class_index >= sim->params.n_classes)
        return NAN;
    const struct ctl_sim_class *c = &sim->params.classes[class_index];
    double alpha = c->phases[0].alpha;
    for (uint32_t i = 1; i < c->n_phases && c->phases[i].start_ms <= t_ms; i++)
        alpha = c->phases[i].alpha;
    return alpha;
}

double ctl_sim_now_ms(const ctl_sim *sim) {
    return sim ? sim->now_ms : 0.0;
}

// ---- stepping ----------------------------------------------------------------------------------

// Drafts and verifies the sequences of one class at depth k; adds to the class entry `c`.
static void sim_class_step(ctl_sim *sim, uint32_t n_seqs, uint32_t k, double alpha,
                           struct spec_class_metrics *c) {
    c->n_seqs = n_seqs;
    c->n_speculating = k > 0 ? n_seqs : 0;
    c->depth = k;
    for (uint32_t s = 0; s < n_seqs; s++) {
        for (uint32_t i = 0; i < k; i++) {
            c->drafted_at[i]++;
            c->drafted++;
        }
        for (uint32_t i = 0; i < k && rng_uniform(&sim->rng) < alpha; i++) {
            c->accepted_at[i]++;
            c->accepted++;
        }
        c->emitted++; // the bonus or correction token
    }
    c->emitted += c->accepted;
}

static double noisy(ctl_sim *sim, double t) {
    if (sim->params.noise <= 0.0)
        return t;
    return t * fmax(0.05, 1.0 + sim->params.noise * rng_normal(&sim->rng));
}

void ctl_sim_step(ctl_sim *sim, struct spec_step_metrics *out) {
    const struct ctl_sim_params *p = &sim->params;
    memset(out, 0, sizeof *out);
    out->step = sim->step++;
    out->prefill_tokens = p->prefill_tokens;
    uint32_t per_pass[SPEC_MAX_DEPTH] = {0}; // [i] sequences drafting at position i
    for (uint32_t ci = 0; ci < p->n_classes; ci++) {
        struct spec_class_metrics c;
        memset(&c, 0, sizeof c);
        strcpy(c.name, p->classes[ci].name);
        uint32_t k = ctl_sim_class_depth(sim, ci);
        sim_class_step(sim, p->classes[ci].n_seqs, k, ctl_sim_alpha(sim, ci, sim->now_ms), &c);
        out->batch_size += c.n_seqs;
        out->n_speculating += c.n_speculating;
        out->depth = k > out->depth ? k : out->depth;
        out->drafted += c.drafted;
        out->accepted += c.accepted;
        out->emitted += c.emitted;
        for (int i = 0; i < SPEC_MAX_DEPTH; i++) {
            out->drafted_at[i] += c.drafted_at[i];
            out->accepted_at[i] += c.accepted_at[i];
            per_pass[i] += c.drafted_at[i];
        }
        if (p->report_classes)
            out->classes[out->n_classes++] = c;
    }
    double t_draft = 0.0;
    for (uint32_t i = 0; i < out->depth; i++)
        t_draft += p->draft_per_pass_ms + p->draft_per_seq_ms * per_pass[i];
    double tokens = (double)out->batch_size + out->drafted + out->prefill_tokens;
    out->t_draft_ms = noisy(sim, t_draft);
    out->t_verify_ms = noisy(sim, p->verify_base_ms + p->verify_per_token_ms * tokens);
    out->t_step_ms = out->t_draft_ms + out->t_verify_ms + noisy(sim, p->overhead_ms);
    sim->now_ms += out->t_step_ms;
}
