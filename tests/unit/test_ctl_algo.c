// Tests of the controller's speculation-depth algorithm (controller/ctl_algo.h), its policy
// (ctl_policy.h), estimators (ctl_estimate.h) and the simulated worker (ctl_sim.h).
//
// Convergence is judged against a brute-force optimum computed here from the simulator's known
// alpha and cost curves with the closed form E(k) = (1 - a^(k+1)) / (1 - a), independent of the
// estimators under test.
#include "controller/ctl_algo.h"
#include "controller/ctl_estimate.h"
#include "controller/ctl_policy.h"
#include "controller/ctl_sim.h"
#include "shared/status.h"
#include "tests/test.h"

#include <stdbool.h>
#include <stdint.h>

// ---- reference ---------------------------------------------------------------------------------

static double sim_batch(const struct ctl_sim_params *p) {
    double b = 0;
    for (uint32_t i = 0; i < p->n_classes; i++)
        b += p->classes[i].n_seqs;
    return b;
}

// True tokens per ms per sequence at depth k (0 = plain decoding), one depth for the batch.
static double true_goodput(const struct ctl_sim_params *p, double alpha, uint32_t k) {
    double b = sim_batch(p);
    double e = alpha >= 1.0 ? k + 1.0 : (1.0 - pow(alpha, k + 1.0)) / (1.0 - alpha);
    double t = p->verify_base_ms + p->verify_per_token_ms * (b * (k + 1) + p->prefill_tokens) +
               k * (p->draft_per_pass_ms + p->draft_per_seq_ms * b) + p->overhead_ms;
    return e / t;
}

// Brute-force argmax over {0} U [lo, hi].
static uint32_t true_best(const struct ctl_sim_params *p, double alpha, uint32_t lo, uint32_t hi) {
    uint32_t best = 0;
    for (uint32_t k = lo; k <= hi; k++)
        if (true_goodput(p, alpha, k) > true_goodput(p, alpha, best))
            best = k;
    return best;
}

// ---- driver: simulated worker <-> algorithm ----------------------------------------------------

#define MAX_RECORDS 64

struct driver {
    ctl_sim *sim;
    ctl_algo *algo;
    const char *id;
    uint32_t interval_ms;
    uint64_t next_tick_ms;
    uint32_t ticks;
    uint32_t changes;                         // changes of the worker default (aggregate track)
    uint32_t last_change_tick;                // tick of the latest such change
    uint32_t reasons[CTL_REASON_COUNT];       // aggregate track
    struct ctl_decision records[MAX_RECORDS]; // last tick
    size_t n_records;
    bool verbose;
};

static void driver_init(struct driver *d, ctl_sim *sim, ctl_algo *algo, const char *id) {
    memset(d, 0, sizeof *d);
    d->sim = sim;
    d->algo = algo;
    d->id = id;
    d->interval_ms = ctl_algo_policy(algo)->interval_ms;
    d->next_tick_ms = d->interval_ms;
    d->verbose = getenv("CTL_TEST_VERBOSE") != NULL;
}

static void driver_tick(struct driver *d, uint64_t now) {
    size_t n = ctl_algo_tick(d->algo, now, d->records, MAX_RECORDS);
    d->n_records = n < MAX_RECORDS ? n : MAX_RECORDS;
    d->ticks++;
    for (size_t i = 0; i < d->n_records; i++) {
        const struct ctl_decision *r = &d->records[i];
        if (d->verbose) {
            char line[1024];
            ctl_decision_format(r, line, sizeof line);
            fprintf(stderr, "    %s\n", line);
        }
        if (strcmp(r->class_name, CTL_CLASS_ALL) != 0 || strcmp(r->worker, d->id) != 0)
            continue;
        d->reasons[r->reason]++;
        if (r->changed) {
            d->changes++;
            d->last_change_tick = d->ticks;
        }
    }
    struct spec_settings s;
    if (ctl_algo_settings(d->algo, d->id, &s) == SPECD_OK)
        ctl_sim_apply_settings(d->sim, &s);
}

// Steps the simulator until its clock passes end_ms, observing every step and ticking every
// interval_ms of simulated time.
static void drive_until(struct driver *d, double end_ms) {
    struct spec_step_metrics m;
    while (ctl_sim_now_ms(d->sim) < end_ms) {
        ctl_sim_step(d->sim, &m);
        uint64_t now = (uint64_t)ctl_sim_now_ms(d->sim);
        CHECK_EQ_INT(ctl_algo_observe(d->algo, d->id, &m, now), SPECD_OK);
        while (now >= d->next_tick_ms) {
            driver_tick(d, d->next_tick_ms);
            d->next_tick_ms += d->interval_ms;
        }
    }
}

// The depth of the worker default as the simulator runs it (class 0 has no own setting when
// the metrics carry no classes).
static uint32_t sim_depth(const struct driver *d) {
    return ctl_sim_class_depth(d->sim, 0);
}

static struct ctl_sim_params sim_params(double alpha, double v0, double v1, double d0, double d1) {
    struct ctl_sim_params p = ctl_sim_default_params();
    p.classes[0].phases[0].alpha = alpha;
    p.verify_base_ms = v0;
    p.verify_per_token_ms = v1;
    p.draft_per_pass_ms = d0;
    p.draft_per_seq_ms = d1;
    p.report_classes = false; // the worker default alone decides
    return p;
}

// ---- goodput mode against the simulator --------------------------------------------------------

struct converge_case {
    double alpha, v0, v1, d0, d1;
    uint32_t expect_best; // what the brute force must give (checks the case itself)
};

// Within 20 intervals the depth settles (no change after) at a depth whose true goodput is
// within 2 % (the hysteresis margin) of the brute-force optimum and at most one step from it;
// where every other depth is more than 3 % worse (k* = 1 here) it must be exact. (The goodput
// curve is flat near the optimum: at k* = 6 both neighbours are within 0.7 %.) The predicted
// goodput per depth must match the true one within 5 %.
TEST(goodput_converges_to_brute_force_optimum) {
    const struct converge_case cases[] = {
        {0.6, 10, 0.5, 2.0, 0.05, 1},
        {0.7, 10, 0.1, 1.0, 0.02, 3},
        {0.8, 20, 0.1, 1.0, 0.02, 6},
        {0.5, 20, 0.1, 1.0, 0.02, 2},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const struct converge_case *cc = &cases[c];
        for (uint64_t seed = 1; seed <= 3; seed++) {
            struct ctl_sim_params sp = sim_params(cc->alpha, cc->v0, cc->v1, cc->d0, cc->d1);
            sp.seed = seed * 7919 + c;
            struct ctl_policy pol = ctl_policy_default();
            pol.hysteresis_margin = 0.02;
            uint32_t best = true_best(&sp, cc->alpha, 1, pol.max_depth);
            CHECK_EQ_INT(best, cc->expect_best);
            ctl_sim *sim = ctl_sim_new(&sp);
            ctl_algo *algo = ctl_algo_new(&pol);
            REQUIRE(sim && algo);
            struct driver d;
            driver_init(&d, sim, algo, "w0");
            drive_until(&d, 40000);
            uint32_t k = sim_depth(&d);
            double ratio = true_goodput(&sp, cc->alpha, k) / true_goodput(&sp, cc->alpha, best);
            fprintf(stderr,
                    "  alpha %.2f seed %llu: depth %u, best %u, goodput ratio %.4f, settled at "
                    "tick %u after %u changes\n",
                    cc->alpha, (unsigned long long)seed, k, best, ratio, d.last_change_tick,
                    d.changes);
            // Exact where every other depth is more than margin + 1 % worse.
            bool clear_best = true;
            for (uint32_t j = 0; j <= pol.max_depth; j++)
                if (j != best &&
                    true_goodput(&sp, cc->alpha, j) * 1.03 > true_goodput(&sp, cc->alpha, best))
                    clear_best = false;
            if (d.last_change_tick > 20 || ratio < 0.98 || abs((int)k - (int)best) > 1 ||
                (clear_best && k != best))
                TEST_FAIL_AT(__FILE__, __LINE__,
                             "alpha %.2f seed %llu: depth %u (best %u, goodput ratio %.4f), "
                             "last change at tick %u, %u changes",
                             cc->alpha, (unsigned long long)seed, k, best, ratio,
                             d.last_change_tick, d.changes);
            CHECK(d.reasons[CTL_REASON_EXPLORE] >= 1 && d.reasons[CTL_REASON_EXPLORE] <= 4);
            const struct ctl_decision *last = &d.records[0];
            REQUIRE(d.n_records == 1 && last->n_goodput == pol.max_depth + 1);
            for (uint32_t j = 0; j <= pol.max_depth; j++) {
                double truth = 1000.0 * sim_batch(&sp) * true_goodput(&sp, cc->alpha, j);
                if (!(fabs(last->goodput[j] / truth - 1.0) < 0.05))
                    TEST_FAIL_AT(__FILE__, __LINE__, "alpha %.2f k %u: predicted %.1f, true %.1f",
                                 cc->alpha, j, last->goodput[j], truth);
            }
            ctl_algo_free(algo);
            ctl_sim_free(sim);
        }
    }
}

// Domain shift 0.8 -> 0.5 at 30 s: near-optimal before, and again within 15 intervals after.
TEST(goodput_reconverges_after_domain_shift) {
    struct ctl_sim_params sp = sim_params(0.8, 20, 0.1, 1.0, 0.02);
    sp.classes[0].n_phases = 2;
    sp.classes[0].phases[1] = (struct ctl_sim_phase){30000.0, 0.5};
    struct ctl_policy pol = ctl_policy_default();
    pol.hysteresis_margin = 0.02;
    ctl_sim *sim = ctl_sim_new(&sp);
    ctl_algo *algo = ctl_algo_new(&pol);
    REQUIRE(sim && algo);
    struct driver d;
    driver_init(&d, sim, algo, "w0");
    drive_until(&d, 29900);
    uint32_t best_before = true_best(&sp, 0.8, 1, 8), best_after = true_best(&sp, 0.5, 1, 8);
    CHECK_EQ_INT(best_before, 6);
    CHECK_EQ_INT(best_after, 2);
    uint32_t k = sim_depth(&d);
    CHECK(true_goodput(&sp, 0.8, k) >= 0.98 * true_goodput(&sp, 0.8, best_before));
    drive_until(&d, 45000); // 15 intervals after the shift
    uint32_t tick_at_45s = d.ticks, changes_at_45s = d.changes;
    drive_until(&d, 70000);
    k = sim_depth(&d);
    CHECK(true_goodput(&sp, 0.5, k) >= 0.98 * true_goodput(&sp, 0.5, best_after));
    CHECK(abs((int)k - (int)best_after) <= 1);
    CHECK(d.last_change_tick <= tick_at_45s);
    CHECK_EQ_INT(d.changes, changes_at_45s);
    ctl_algo_free(algo);
    ctl_sim_free(sim);
}

// alpha 0.8 -> 0.05 at 20 s -> 0.8 at 50 s: off within 5 intervals of the collapse (probes
// while off fail), back on within probe_interval + probe_duration + 3 intervals (14 s) of the
// recovery, near the optimum again by 75 s.
TEST(goodput_disables_on_collapse_and_recovers_by_probing) {
    struct ctl_sim_params sp = sim_params(0.8, 20, 0.1, 1.0, 0.02);
    sp.classes[0].n_phases = 3;
    sp.classes[0].phases[1] = (struct ctl_sim_phase){20000.0, 0.05};
    sp.classes[0].phases[2] = (struct ctl_sim_phase){50000.0, 0.8};
    struct ctl_policy pol = ctl_policy_default();
    ctl_sim *sim = ctl_sim_new(&sp);
    ctl_algo *algo = ctl_algo_new(&pol);
    REQUIRE(sim && algo);
    struct driver d;
    driver_init(&d, sim, algo, "w0");
    drive_until(&d, 20000);
    CHECK(sim_depth(&d) >= 4);
    drive_until(&d, 25000);
    CHECK_EQ_INT(sim_depth(&d), 0);
    CHECK(d.reasons[CTL_REASON_DISABLE] == 1);
    // While collapsed: off except for probes, which fail.
    uint32_t probes_failed = d.reasons[CTL_REASON_PROBE_FAILED];
    bool on_while_collapsed = false;
    while (ctl_sim_now_ms(sim) < 50000) {
        drive_until(&d, ctl_sim_now_ms(sim) + 100);
        struct ctl_worker_info info;
        REQUIRE(ctl_algo_worker_info_by_id(algo, "w0", &info) == SPECD_OK);
        if (info.all.enabled && !info.all.probing)
            on_while_collapsed = true;
        if (info.all.probing)
            CHECK_EQ_INT(info.settings.depth, pol.probe_depth);
    }
    CHECK(!on_while_collapsed);
    CHECK(d.reasons[CTL_REASON_PROBE_FAILED] >= probes_failed + 2);
    CHECK_EQ_INT(d.reasons[CTL_REASON_REENABLE], 0);
    drive_until(&d, 64000);
    CHECK_EQ_INT(d.reasons[CTL_REASON_REENABLE], 1);
    CHECK(sim_depth(&d) >= 1);
    drive_until(&d, 75000);
    uint32_t k = sim_depth(&d), best = true_best(&sp, 0.8, 1, 8);
    CHECK(true_goodput(&sp, 0.8, k) >= 0.97 * true_goodput(&sp, 0.8, best));
    ctl_algo_free(algo);
    ctl_sim_free(sim);
}

// 200 s of steady alpha with 10 % timing noise where the two best depths are all but tied
// (true goodput within 0.01 % and 0.06 %): after settling (30 s) at most 2 changes, and at
// most 6 in all.
TEST(goodput_does_not_flap_under_noise) {
    const struct converge_case cases[] = {
        {0.8, 10, 0.2, 1.0, 0.02, 3},  // k = 3 and 4 tied
        {0.65, 10, 0.1, 1.0, 0.02, 2}, // k = 2 and 3 tied
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct converge_case *cc = &cases[i];
        struct ctl_sim_params sp = sim_params(cc->alpha, cc->v0, cc->v1, cc->d0, cc->d1);
        sp.noise = 0.10;
        sp.seed = 99 + i;
        struct ctl_policy pol = ctl_policy_default();
        CHECK_EQ_INT(true_best(&sp, cc->alpha, 1, pol.max_depth), cc->expect_best);
        ctl_sim *sim = ctl_sim_new(&sp);
        ctl_algo *algo = ctl_algo_new(&pol);
        REQUIRE(sim && algo);
        struct driver d;
        driver_init(&d, sim, algo, "w0");
        drive_until(&d, 30000);
        uint32_t settled = d.changes;
        drive_until(&d, 230000);
        if (d.changes - settled > 2 || d.changes > 6)
            TEST_FAIL_AT(__FILE__, __LINE__, "alpha %.2f: %u changes, %u after settling", cc->alpha,
                         d.changes, d.changes - settled);
        CHECK(d.ticks >= 229);
        uint32_t k = sim_depth(&d);
        CHECK(true_goodput(&sp, cc->alpha, k) >=
              0.98 * true_goodput(&sp, cc->alpha, cc->expect_best));
        ctl_algo_free(algo);
        ctl_sim_free(sim);
    }
}

// Worker starting with speculation off: the first tick probes.
TEST(goodput_probes_a_worker_that_starts_off) {
    struct ctl_sim_params sp = sim_params(0.8, 20, 0.1, 1.0, 0.02);
    sp.default_enabled = false;
    struct ctl_policy pol = ctl_policy_default();
    ctl_sim *sim = ctl_sim_new(&sp);
    ctl_algo *algo = ctl_algo_new(&pol);
    REQUIRE(sim && algo);
    struct driver d;
    driver_init(&d, sim, algo, "w0");
    drive_until(&d, 1100);
    CHECK_EQ_INT(d.records[0].reason, CTL_REASON_PROBE);
    CHECK_EQ_INT(sim_depth(&d), pol.probe_depth);
    drive_until(&d, 2100);
    CHECK_EQ_INT(d.reasons[CTL_REASON_REENABLE], 1);
    drive_until(&d, 20000);
    uint32_t k = sim_depth(&d), best = true_best(&sp, 0.8, 1, 8);
    CHECK(true_goodput(&sp, 0.8, k) >= 0.97 * true_goodput(&sp, 0.8, best));
    ctl_algo_free(algo);
    ctl_sim_free(sim);
}

// Two classes with different alpha get their own depths; the collapsed one is off.
TEST(goodput_decides_each_class) {
    struct ctl_sim_params sp = sim_params(0.9, 20, 0.1, 1.0, 0.02);
    sp.report_classes = true;
    sp.n_classes = 3;
    strcpy(sp.classes[0].name, "code");
    sp.classes[1] = sp.classes[0];
    strcpy(sp.classes[1].name, "chat");
    sp.classes[1].phases[0].alpha = 0.5;
    sp.classes[2] = sp.classes[0];
    strcpy(sp.classes[2].name, "junk");
    sp.classes[2].phases[0].alpha = 0.03;
    struct ctl_policy pol = ctl_policy_default();
    ctl_sim *sim = ctl_sim_new(&sp);
    ctl_algo *algo = ctl_algo_new(&pol);
    REQUIRE(sim && algo);
    struct driver d;
    driver_init(&d, sim, algo, "w0");
    drive_until(&d, 30000);
    struct ctl_worker_info info;
    REQUIRE(ctl_algo_worker_info_by_id(algo, "w0", &info) == SPECD_OK);
    REQUIRE(info.n_classes == 3);
    CHECK_EQ_STR(info.classes[0].name, "code");
    CHECK_EQ_STR(info.classes[2].name, "junk");
    uint32_t k_code = ctl_sim_class_depth(sim, 0), k_chat = ctl_sim_class_depth(sim, 1);
    CHECK(k_code > k_chat);
    CHECK(k_chat >= 1);
    CHECK(!info.classes[2].enabled || info.classes[2].probing);
    CHECK_NEAR(info.classes[0].alpha, 0.9, 0.03);
    CHECK_NEAR(info.classes[1].alpha, 0.5, 0.05);
    CHECK_EQ_INT(info.settings.n_classes, 3);
    CHECK_EQ_STR(info.settings.classes[1].name, "chat");
    CHECK_EQ_INT(info.settings.classes[1].depth, k_chat);
    ctl_algo_free(algo);
    ctl_sim_free(sim);
}

// A goodput class below a class pinned at a larger depth: the step depth (which keys the verify
// cost cells) is the pinned one's, so the goodput class's exploring gathers no samples of its
// own; it must still decide after a bounded number of explore moves.
TEST(goodput_class_below_a_pinned_class_still_decides) {
    struct ctl_sim_params sp = sim_params(0.8, 20, 0.1, 1.0, 0.02);
    sp.report_classes = true;
    sp.n_classes = 2;
    strcpy(sp.classes[0].name, "pinned");
    sp.classes[1] = sp.classes[0];
    strcpy(sp.classes[1].name, "chat");
    sp.classes[1].phases[0].alpha = 0.6;
    struct ctl_policy pol = ctl_policy_default();
    struct ctl_class_override *o = ctl_policy_add_override(&pol, "pinned");
    REQUIRE(o);
    o->mode = CTL_MODE_STATIC;
    o->static_depth = 7;
    ctl_sim *sim = ctl_sim_new(&sp);
    ctl_algo *algo = ctl_algo_new(&pol);
    REQUIRE(sim && algo);
    struct driver d;
    driver_init(&d, sim, algo, "w0");
    drive_until(&d, 40000);
    struct ctl_worker_info info;
    REQUIRE(ctl_algo_worker_info_by_id(algo, "w0", &info) == SPECD_OK);
    REQUIRE(info.n_classes == 2);
    CHECK_EQ_STR(info.classes[1].name, "chat");
    CHECK(info.classes[1].last_reason != CTL_REASON_INSUFFICIENT_DATA);
    CHECK_EQ_INT(ctl_sim_class_depth(sim, 0), 7);
    uint32_t k = ctl_sim_class_depth(sim, 1);
    CHECK(k >= 1 && k < 7);
    ctl_algo_free(algo);
    ctl_sim_free(sim);
}

// ---- hand-made metrics -------------------------------------------------------------------------

// One step: `batch` sequences at depth k with acceptance rate `rate` (accepted / drafted),
// accepted tokens filling positions from the front so that the per-position counts are
// consistent. A class entry named `class_name` (NULL: none) carries the same counts.
static struct spec_step_metrics make_step(uint32_t batch, uint32_t k, double rate,
                                          const char *class_name) {
    struct spec_step_metrics m;
    memset(&m, 0, sizeof m);
    m.batch_size = batch;
    m.depth = k;
    m.n_speculating = k ? batch : 0;
    m.drafted = batch * k;
    m.accepted = (uint32_t)lround(rate * m.drafted);
    uint32_t left = m.accepted;
    for (uint32_t i = 0; i < k; i++) {
        m.drafted_at[i] = batch;
        m.accepted_at[i] = left < batch ? left : batch;
        left -= m.accepted_at[i];
    }
    m.emitted = m.accepted + batch;
    m.t_verify_ms = 20.0 + 0.1 * (batch + m.drafted);
    m.t_draft_ms = k * (1.0 + 0.02 * batch);
    m.t_step_ms = m.t_verify_ms + m.t_draft_ms;
    if (class_name) {
        struct spec_class_metrics *c = &m.classes[m.n_classes++];
        snprintf(c->name, sizeof c->name, "%s", class_name);
        c->n_seqs = batch;
        c->n_speculating = m.n_speculating;
        c->depth = k;
        c->drafted = m.drafted;
        c->accepted = m.accepted;
        c->emitted = m.emitted;
        memcpy(c->drafted_at, m.drafted_at, sizeof c->drafted_at);
        memcpy(c->accepted_at, m.accepted_at, sizeof c->accepted_at);
    }
    return m;
}

// Observes `n` copies of m at even times in (t0, t1].
static void feed(ctl_algo *a, const char *id, const struct spec_step_metrics *m, uint64_t t0,
                 uint64_t t1, uint32_t n) {
    for (uint32_t i = 1; i <= n; i++)
        CHECK_EQ_INT(ctl_algo_observe(a, id, m, t0 + (t1 - t0) * i / n), SPECD_OK);
}

// Feeds one interval (t - 1000, t] of steps at the worker's current setting with acceptance
// `rate`, then ticks at t and returns the aggregate decision.
static struct ctl_decision interval(ctl_algo *a, const char *id, uint64_t t, double rate) {
    struct spec_settings s;
    ctl_algo_settings(a, id, &s);
    uint32_t k = s.epoch == 0 ? 4 : s.enabled ? s.depth : 0;
    struct spec_step_metrics m = make_step(8, k, rate, NULL);
    feed(a, id, &m, t - 1000, t, 20);
    struct ctl_decision d[4];
    size_t n = ctl_algo_tick(a, t, d, 4);
    CHECK_EQ_INT(n, 1);
    return d[0];
}

static struct ctl_policy threshold_policy(void) {
    struct ctl_policy p = ctl_policy_default();
    p.mode = CTL_MODE_THRESHOLD;
    p.hold_intervals = 1;
    p.half_life_ms = 100; // each interval's evidence dominates
    p.min_drafted = 16;
    p.max_depth = 6;
    p.probe_interval_ms = 5000;
    return p;
}

TEST(threshold_every_branch) {
    struct ctl_policy p = threshold_policy();
    ctl_algo *a = ctl_algo_new(&p);
    REQUIRE(a);
    struct spec_settings s;
    CHECK_EQ_INT(ctl_algo_settings(a, "w", &s), SPECD_SOFT_EMPTY);
    // adopted at the worker's k = 4; above target: raise
    struct ctl_decision d = interval(a, "w", 1000, 0.8);
    CHECK_EQ_INT(d.reason, CTL_REASON_RAISE);
    CHECK_EQ_INT(d.old_depth, 4);
    CHECK_EQ_INT(d.depth, 5);
    CHECK(d.changed);
    CHECK_NEAR(d.acceptance, 26.0 / 32.0, 1e-9); // lround(0.8 * 32) of 32
    CHECK_EQ_INT(ctl_algo_settings(a, "w", &s), SPECD_OK);
    CHECK_EQ_INT(s.epoch, 1);
    CHECK(s.enabled);
    CHECK_EQ_INT(s.depth, 5);
    CHECK_EQ_INT(s.max_depth, 6);
    CHECK_EQ_INT(s.ttl_ms, p.settings_ttl_ms);
    // in band: hold, epoch unchanged
    d = interval(a, "w", 2000, 0.6);
    CHECK_EQ_INT(d.reason, CTL_REASON_HOLD);
    CHECK(!d.changed);
    ctl_algo_settings(a, "w", &s);
    CHECK_EQ_INT(s.epoch, 1);
    // raise to the maximum, then hold there
    CHECK_EQ_INT(interval(a, "w", 3000, 0.9).reason, CTL_REASON_RAISE);
    d = interval(a, "w", 4000, 0.9);
    CHECK_EQ_INT(d.reason, CTL_REASON_HOLD);
    CHECK_EQ_INT(d.depth, 6);
    // below low: lower
    d = interval(a, "w", 5000, 0.4);
    CHECK_EQ_INT(d.reason, CTL_REASON_LOWER);
    CHECK_EQ_INT(d.depth, 5);
    ctl_algo_settings(a, "w", &s);
    CHECK_EQ_INT(s.epoch, 3);
    // below critical: disable
    d = interval(a, "w", 6000, 0.1);
    CHECK_EQ_INT(d.reason, CTL_REASON_DISABLE);
    CHECK(!d.enabled);
    ctl_algo_settings(a, "w", &s);
    CHECK(!s.enabled);
    CHECK_EQ_INT(s.depth, 0);
    // off until probe_interval_ms has passed
    for (uint64_t t = 7000; t < 11000; t += 1000)
        CHECK_EQ_INT(interval(a, "w", t, 0.0).reason, CTL_REASON_OFF);
    d = interval(a, "w", 11000, 0.0);
    CHECK_EQ_INT(d.reason, CTL_REASON_PROBE);
    CHECK(d.probing && d.enabled);
    CHECK_EQ_INT(d.depth, p.probe_depth);
    ctl_algo_settings(a, "w", &s);
    CHECK(s.enabled);
    CHECK_EQ_INT(s.depth, p.probe_depth);
    // a probe below low_threshold fails
    d = interval(a, "w", 12000, 0.3);
    CHECK_EQ_INT(d.reason, CTL_REASON_PROBE_FAILED);
    CHECK(!d.enabled && !d.probing);
    for (uint64_t t = 13000; t < 17000; t += 1000)
        CHECK_EQ_INT(interval(a, "w", t, 0.0).reason, CTL_REASON_OFF);
    CHECK_EQ_INT(interval(a, "w", 17000, 0.0).reason, CTL_REASON_PROBE);
    // a probe above low_threshold re-enables at the probe depth
    d = interval(a, "w", 18000, 0.6);
    CHECK_EQ_INT(d.reason, CTL_REASON_REENABLE);
    CHECK(d.enabled && !d.probing);
    CHECK_EQ_INT(d.depth, p.probe_depth);
    // lower to the minimum, then hold there
    CHECK_EQ_INT(interval(a, "w", 19000, 0.4).reason, CTL_REASON_LOWER);
    d = interval(a, "w", 20000, 0.4);
    CHECK_EQ_INT(d.reason, CTL_REASON_HOLD);
    CHECK_EQ_INT(d.depth, 1);
    // no evidence: insufficient data, no change
    struct ctl_decision rec;
    CHECK_EQ_INT(ctl_algo_observe(a, "w", &(struct spec_step_metrics){.batch_size = 1}, 21000),
                 SPECD_OK);
    CHECK_EQ_INT(ctl_algo_tick(a, 22000, &rec, 1), 1);
    CHECK_EQ_INT(rec.reason, CTL_REASON_INSUFFICIENT_DATA);
    CHECK_EQ_INT(rec.depth, 1);
    ctl_algo_free(a);
}

// A probe on a nearly idle worker runs past probe_duration_ms (up to 4 times) until it has
// min_drafted evidence, instead of failing for lack of it.
TEST(probe_runs_longer_while_evidence_is_short) {
    struct ctl_policy p = threshold_policy();
    p.half_life_ms = 5000;
    p.min_drafted = 64;
    ctl_algo *a = ctl_algo_new(&p);
    REQUIRE(a);
    CHECK_EQ_INT(interval(a, "w", 1000, 0.1).reason, CTL_REASON_DISABLE);
    for (uint64_t t = 2000; t < 6000; t += 1000)
        CHECK_EQ_INT(interval(a, "w", t, 0.0).reason, CTL_REASON_OFF);
    CHECK_EQ_INT(interval(a, "w", 6000, 0.0).reason, CTL_REASON_PROBE);
    struct spec_step_metrics m = make_step(1, 2, 0.75, NULL); // 2 drafts per step
    struct ctl_decision d;
    uint64_t t = 6000;
    do {
        feed(a, "w", &m, t, t + 1000, 15);
        t += 1000;
        REQUIRE(ctl_algo_tick(a, t, &d, 1) == 1);
        if (t <= 8000) { // 30 and ~56 weighted drafts < min_drafted
            CHECK_EQ_INT(d.reason, CTL_REASON_PROBE);
            CHECK(d.evidence < p.min_drafted);
        }
    } while (d.reason == CTL_REASON_PROBE && t < 20000);
    CHECK_EQ_INT(d.reason, CTL_REASON_REENABLE);
    CHECK(t <= 6000 + 4 * p.probe_duration_ms);
    CHECK(d.evidence >= p.min_drafted);
    ctl_algo_free(a);
}

TEST(threshold_holds_a_change_for_hold_intervals) {
    struct ctl_policy p = threshold_policy();
    p.hold_intervals = 3;
    ctl_algo *a = ctl_algo_new(&p);
    REQUIRE(a);
    struct ctl_decision d = interval(a, "w", 1000, 0.8);
    CHECK_EQ_INT(d.reason, CTL_REASON_PENDING);
    CHECK_EQ_INT(d.pending, CTL_REASON_RAISE);
    CHECK_EQ_INT(d.pending_count, 1);
    CHECK_EQ_INT(d.pending_depth, 5);
    CHECK_EQ_INT(interval(a, "w", 2000, 0.8).reason, CTL_REASON_PENDING);
    // an in-band interval resets the count
    CHECK_EQ_INT(interval(a, "w", 3000, 0.6).reason, CTL_REASON_HOLD);
    CHECK_EQ_INT(interval(a, "w", 4000, 0.8).pending_count, 1);
    CHECK_EQ_INT(interval(a, "w", 5000, 0.8).pending_count, 2);
    d = interval(a, "w", 6000, 0.8);
    CHECK_EQ_INT(d.reason, CTL_REASON_RAISE);
    CHECK_EQ_INT(d.depth, 5);
    // critical also waits: pending disable x2, then disable
    CHECK_EQ_INT(interval(a, "w", 7000, 0.05).pending, CTL_REASON_DISABLE);
    CHECK_EQ_INT(interval(a, "w", 8000, 0.05).reason, CTL_REASON_PENDING);
    CHECK_EQ_INT(interval(a, "w", 9000, 0.05).reason, CTL_REASON_DISABLE);
    ctl_algo_free(a);
}

TEST(static_mode_pins_depth) {
    struct ctl_policy p = ctl_policy_default();
    p.mode = CTL_MODE_STATIC;
    p.static_depth = 3;
    ctl_algo *a = ctl_algo_new(&p);
    REQUIRE(a);
    struct ctl_decision d = interval(a, "w", 1000, 0.9);
    CHECK_EQ_INT(d.reason, CTL_REASON_STATIC);
    CHECK_EQ_INT(d.mode, CTL_MODE_STATIC);
    CHECK_EQ_INT(d.depth, 3);
    CHECK(d.changed);
    for (uint64_t t = 2000; t <= 30000; t += 1000) {
        d = interval(a, "w", t, t < 10000 ? 0.05 : 0.95); // acceptance is ignored
        CHECK_EQ_INT(d.reason, CTL_REASON_STATIC);
        CHECK(d.enabled && !d.changed);
    }
    struct spec_settings s;
    ctl_algo_settings(a, "w", &s);
    CHECK_EQ_INT(s.epoch, 1);
    CHECK_EQ_INT(s.depth, 3);
    // static 0: off, and never probes
    p.static_depth = 0;
    char reason[128];
    REQUIRE(ctl_algo_set_policy(a, &p, reason, sizeof reason) == SPECD_OK);
    for (uint64_t t = 31000; t <= 60000; t += 1000) {
        d = interval(a, "w", t, 0.9);
        CHECK_EQ_INT(d.reason, CTL_REASON_STATIC);
        CHECK(!d.enabled && !d.probing);
    }
    ctl_algo_settings(a, "w", &s);
    CHECK_EQ_INT(s.epoch, 2);
    CHECK(!s.enabled);
    ctl_algo_free(a);
}

TEST(per_class_overrides) {
    struct ctl_policy p = threshold_policy();
    struct ctl_class_override *o = ctl_policy_add_override(&p, "batch");
    REQUIRE(o);
    o->mode = CTL_MODE_STATIC;
    o->static_depth = 0;
    o = ctl_policy_add_override(&p, "code");
    REQUIRE(o);
    CHECK_EQ_INT(o->mode, CTL_MODE_THRESHOLD); // initialised from the global policy
    CHECK_EQ_INT(o->max_depth, 6);
    o->min_depth = 3;
    o->max_depth = 10;
    o = ctl_policy_add_override(&p, "pinned");
    REQUIRE(o);
    o->mode = CTL_MODE_STATIC;
    o->max_depth = 8;
    o->static_depth = 7;
    CHECK(ctl_policy_add_override(&p, "code") == NULL); // duplicate
    CHECK(ctl_policy_find_override(&p, "code") == &p.overrides[1]);
    CHECK(ctl_policy_find_override(&p, "chat") == NULL);
    char reason[128];
    REQUIRE(ctl_policy_validate(&p, reason, sizeof reason) == SPECD_OK);
    ctl_algo *a = ctl_algo_new(&p);
    REQUIRE(a);
    const char *names[] = {"chat", "batch", "code", "pinned"};
    struct ctl_decision d[8];
    for (uint64_t t = 1000; t <= 8000; t += 1000) {
        for (int c = 0; c < 4; c++) {
            struct spec_step_metrics m = make_step(4, 4, 0.9, names[c]);
            feed(a, "w", &m, t - 1000, t, 10);
        }
        REQUIRE(ctl_algo_tick(a, t, d, 8) == 5);
    }
    CHECK_EQ_STR(d[0].class_name, CTL_CLASS_ALL);
    CHECK_EQ_STR(d[1].class_name, "chat");
    CHECK_EQ_INT(d[1].mode, CTL_MODE_THRESHOLD);
    CHECK_EQ_INT(d[1].depth, 6); // global max
    CHECK_EQ_STR(d[2].class_name, "batch");
    CHECK_EQ_INT(d[2].reason, CTL_REASON_STATIC);
    CHECK(!d[2].enabled);
    CHECK_EQ_INT(d[3].depth, 10); // its own max
    CHECK_EQ_INT(d[4].depth, 7);
    CHECK_EQ_INT(d[4].reason, CTL_REASON_STATIC);
    struct spec_settings s;
    REQUIRE(ctl_algo_settings(a, "w", &s) == SPECD_OK);
    CHECK_EQ_INT(s.n_classes, 4);
    CHECK_EQ_STR(s.classes[1].name, "batch");
    CHECK(!s.classes[1].enabled);
    CHECK_EQ_INT(s.classes[2].depth, 10);
    CHECK_EQ_INT(s.min_depth, 1);
    CHECK_EQ_INT(s.max_depth, 10); // union of the global and override bounds
    // a class override's min applies when lowering
    for (uint64_t t = 9000; t <= 20000; t += 1000) {
        struct spec_step_metrics m = make_step(4, 4, 0.4, "code");
        feed(a, "w", &m, t - 1000, t, 10);
        ctl_algo_tick(a, t, d, 8);
    }
    struct ctl_worker_info info;
    REQUIRE(ctl_algo_worker_info_by_id(a, "w", &info) == SPECD_OK);
    CHECK_EQ_STR(info.classes[2].name, "code");
    CHECK_EQ_INT(info.classes[2].depth, 3);
    CHECK_EQ_INT(info.classes[3].mode, CTL_MODE_STATIC);
    ctl_algo_free(a);
}

// ---- policy ------------------------------------------------------------------------------------

struct bad_policy {
    const char *expect; // substring of the reason
    void (*mutate)(struct ctl_policy *p);
};

static void bad_mode(struct ctl_policy *p) {
    p->mode = (enum ctl_mode)7;
}
static void bad_crit0(struct ctl_policy *p) {
    p->critical_threshold = 0.0;
}
static void bad_crit_low(struct ctl_policy *p) {
    p->critical_threshold = p->low_threshold;
}
static void bad_low_target(struct ctl_policy *p) {
    p->low_threshold = 0.75;
}
static void bad_target1(struct ctl_policy *p) {
    p->target_acceptance = 1.0;
}
static void bad_target_nan(struct ctl_policy *p) {
    p->target_acceptance = NAN;
}
static void bad_max(struct ctl_policy *p) {
    p->max_depth = SPEC_MAX_DEPTH + 1;
}
static void bad_min(struct ctl_policy *p) {
    p->min_depth = 9;
}
static void bad_static_max(struct ctl_policy *p) {
    p->static_depth = 9;
}
static void bad_static_min(struct ctl_policy *p) {
    p->min_depth = 3;
    p->static_depth = 2;
}
static void bad_interval(struct ctl_policy *p) {
    p->interval_ms = 0;
}
static void bad_half_life(struct ctl_policy *p) {
    p->half_life_ms = 0;
}
static void bad_cost_half_life(struct ctl_policy *p) {
    p->cost_half_life_ms = 0;
}
static void bad_min_drafted(struct ctl_policy *p) {
    p->min_drafted = 0.5;
}
static void bad_margin(struct ctl_policy *p) {
    p->hysteresis_margin = -0.01;
}
static void bad_margin1(struct ctl_policy *p) {
    p->hysteresis_margin = 1.0;
}
static void bad_hold(struct ctl_policy *p) {
    p->hold_intervals = 0;
}
static void bad_probe_depth0(struct ctl_policy *p) {
    p->probe_depth = 0;
}
static void bad_probe_depth17(struct ctl_policy *p) {
    p->probe_depth = SPEC_MAX_DEPTH + 1;
}
static void bad_probe_duration(struct ctl_policy *p) {
    p->probe_duration_ms = 500;
}
static void bad_probe_interval(struct ctl_policy *p) {
    p->probe_interval_ms = 1000;
}
static void bad_timeout(struct ctl_policy *p) {
    p->worker_timeout_ms = 1000;
}
static void bad_ttl(struct ctl_policy *p) {
    p->settings_ttl_ms = 500;
}
static void bad_max_workers(struct ctl_policy *p) {
    p->max_workers = 0;
}
static void bad_n_overrides(struct ctl_policy *p) {
    p->n_overrides = CTL_MAX_OVERRIDES + 1;
}
static void bad_override_name(struct ctl_policy *p) {
    p->n_overrides = 1;
    strcpy(p->overrides[0].name, "a b");
}
static void bad_override_dup(struct ctl_policy *p) {
    ctl_policy_add_override(p, "x");
    ctl_policy_add_override(p, "y");
    strcpy(p->overrides[1].name, "x");
}
static void bad_override_depth(struct ctl_policy *p) {
    ctl_policy_add_override(p, "x")->min_depth = 12;
}

TEST(policy_validation_rejects_each_bad_field) {
    const struct bad_policy cases[] = {
        {"mode must be", bad_mode},
        {"critical_threshold must be > 0", bad_crit0},
        {"critical_threshold must be < low_threshold", bad_crit_low},
        {"low_threshold must be < target_acceptance", bad_low_target},
        {"target_acceptance must be < 1", bad_target1},
        {"low_threshold must be < target_acceptance", bad_target_nan},
        {"max_depth must be <= 16", bad_max},
        {"min_depth must be <= max_depth", bad_min},
        {"static_depth must be <= max_depth", bad_static_max},
        {"static_depth must be 0 or >= min_depth", bad_static_min},
        {"interval_ms must be > 0", bad_interval},
        {"half_life_ms must be > 0", bad_half_life},
        {"cost_half_life_ms must be > 0", bad_cost_half_life},
        {"min_drafted must be >= 1", bad_min_drafted},
        {"hysteresis_margin must be in [0, 1)", bad_margin},
        {"hysteresis_margin must be in [0, 1)", bad_margin1},
        {"hold_intervals must be >= 1", bad_hold},
        {"probe_depth must be in [1, 16]", bad_probe_depth0},
        {"probe_depth must be in [1, 16]", bad_probe_depth17},
        {"probe_duration_ms must be >= interval_ms", bad_probe_duration},
        {"probe_interval_ms must be > probe_duration_ms", bad_probe_interval},
        {"worker_timeout_ms must be > interval_ms", bad_timeout},
        {"settings_ttl_ms must be 0 or > interval_ms", bad_ttl},
        {"max_workers must be >= 1", bad_max_workers},
        {"n_overrides must be <= 16", bad_n_overrides},
        {"overrides[0].name must be", bad_override_name},
        {"overrides[1].name duplicates class \"x\"", bad_override_dup},
        {"overrides[0] (x): min_depth must be <= max_depth", bad_override_depth},
    };
    char reason[160];
    struct ctl_policy good = ctl_policy_default();
    strcpy(reason, "stale");
    CHECK_EQ_INT(ctl_policy_validate(&good, reason, sizeof reason), SPECD_OK);
    CHECK_EQ_STR(reason, "");
    ctl_algo *a = ctl_algo_new(&good);
    REQUIRE(a);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ctl_policy p = ctl_policy_default();
        cases[i].mutate(&p);
        reason[0] = '\0';
        CHECK_EQ_INT(ctl_policy_validate(&p, reason, sizeof reason), SPECD_ERR_INVALID);
        if (!strstr(reason, cases[i].expect))
            TEST_FAIL_AT(__FILE__, __LINE__, "case %zu: reason \"%s\" lacks \"%s\"", i, reason,
                         cases[i].expect);
        CHECK(ctl_algo_new(&p) == NULL);
        CHECK_EQ_INT(ctl_algo_set_policy(a, &p, reason, sizeof reason), SPECD_ERR_INVALID);
        CHECK_EQ_INT(ctl_algo_policy(a)->max_depth, good.max_depth); // unchanged
        CHECK_EQ_INT(ctl_algo_policy(a)->mode, good.mode);
    }
    CHECK_EQ_INT(ctl_policy_validate(NULL, NULL, 0), SPECD_ERR_INVALID);
    // edge values that are valid
    struct ctl_policy p = ctl_policy_default();
    p.min_depth = 0;
    p.max_depth = 0;
    p.static_depth = 0;
    p.hysteresis_margin = 0.0;
    p.settings_ttl_ms = 0;
    CHECK_EQ_INT(ctl_policy_validate(&p, reason, sizeof reason), SPECD_OK);
    ctl_algo_free(a);
}

TEST(policy_names) {
    enum ctl_mode m;
    CHECK_EQ_INT(ctl_mode_parse("threshold", &m), SPECD_OK);
    CHECK_EQ_INT(m, CTL_MODE_THRESHOLD);
    CHECK_EQ_INT(ctl_mode_parse("static", &m), SPECD_OK);
    CHECK_EQ_INT(m, CTL_MODE_STATIC);
    CHECK_EQ_INT(ctl_mode_parse("goodput", &m), SPECD_OK);
    CHECK_EQ_INT(m, CTL_MODE_GOODPUT);
    CHECK_EQ_INT(ctl_mode_parse("Goodput", &m), SPECD_ERR_INVALID);
    CHECK_EQ_STR(ctl_mode_name((enum ctl_mode)9), "unknown");
    CHECK(ctl_name_is_valid("gpu-0.node:7", CTL_WORKER_ID_LEN));
    CHECK(!ctl_name_is_valid("", CTL_WORKER_ID_LEN));
    CHECK(!ctl_name_is_valid("a=b", CTL_WORKER_ID_LEN));
    CHECK(!ctl_name_is_valid("a\"b", CTL_WORKER_ID_LEN));
    CHECK(!ctl_name_is_valid("tab\there", CTL_WORKER_ID_LEN));
    CHECK(!ctl_name_is_valid("0123456789", 10)); // no room for the NUL
    CHECK(ctl_name_is_valid("012345678", 10));
    CHECK_EQ_STR(ctl_reason_name(CTL_REASON_PROBE_FAILED), "probe_failed");
    CHECK_EQ_STR(ctl_reason_name(CTL_REASON_COUNT), "unknown");
    for (int r = 0; r < CTL_REASON_COUNT; r++)
        CHECK(strcmp(ctl_reason_name((enum ctl_reason)r), "unknown") != 0);
}

// ---- tracking ----------------------------------------------------------------------------------

TEST(worker_timeout_forgets_workers_and_classes) {
    struct ctl_policy p = ctl_policy_default();
    p.worker_timeout_ms = 5000;
    ctl_algo *a = ctl_algo_new(&p);
    REQUIRE(a);
    struct spec_step_metrics ma = make_step(4, 2, 0.5, "a"), mb = make_step(4, 2, 0.5, "b");
    feed(a, "w1", &ma, 0, 1000, 10);
    feed(a, "w2", &ma, 0, 1000, 10);
    struct ctl_decision d[8];
    CHECK_EQ_INT(ctl_algo_tick(a, 1000, d, 8), 4);
    CHECK_EQ_INT(ctl_algo_worker_count(a), 2);
    // w2 keeps reporting, class "b" only
    for (uint64_t t = 2000; t <= 6000; t += 1000) {
        feed(a, "w2", &mb, t - 1000, t, 10);
        ctl_algo_tick(a, t, d, 8);
    }
    CHECK_EQ_INT(ctl_algo_worker_count(a), 1);
    struct ctl_counters c;
    ctl_algo_counters(a, &c);
    CHECK_EQ_INT(c.workers_tracked, 1);
    CHECK_EQ_INT(c.classes_tracked, 1);
    CHECK_EQ_INT(c.decisions[CTL_REASON_FORGOTTEN], 2); // w1 and w2's class "a"
    struct spec_settings s;
    CHECK_EQ_INT(ctl_algo_settings(a, "w1", &s), SPECD_SOFT_EMPTY);
    CHECK_EQ_INT(ctl_algo_settings(a, "w2", &s), SPECD_OK);
    CHECK_EQ_INT(s.n_classes, 1);
    CHECK_EQ_STR(s.classes[0].name, "b");
    struct ctl_worker_info info;
    CHECK_EQ_INT(ctl_algo_worker_info(a, 0, &info), SPECD_OK);
    CHECK_EQ_STR(info.id, "w2");
    CHECK_EQ_INT(info.n_classes, 1);
    CHECK_EQ_INT(ctl_algo_worker_info(a, 1, &info), SPECD_ERR_INVALID);
    // the worker comes back: tracked afresh
    feed(a, "w1", &ma, 6000, 7000, 10);
    CHECK_EQ_INT(ctl_algo_worker_count(a), 2);
    CHECK_EQ_INT(ctl_algo_worker_info(a, 0, &info), SPECD_OK);
    CHECK_EQ_STR(info.id, "w1"); // id order
    CHECK_EQ_INT(info.steps_observed, 10);
    CHECK_EQ_INT(ctl_algo_forget_worker(a, "w1"), SPECD_OK);
    CHECK_EQ_INT(ctl_algo_forget_worker(a, "w1"), SPECD_SOFT_EMPTY);
    CHECK_EQ_INT(ctl_algo_worker_count(a), 1);
    ctl_algo_free(a);
}

TEST(forgotten_record_says_what_was_dropped) {
    struct ctl_policy p = ctl_policy_default();
    p.worker_timeout_ms = 2000;
    ctl_algo *a = ctl_algo_new(&p);
    REQUIRE(a);
    struct spec_step_metrics m = make_step(4, 3, 0.5, NULL);
    feed(a, "gone", &m, 0, 1000, 5);
    struct ctl_decision d[2];
    ctl_algo_tick(a, 1000, d, 2);
    CHECK_EQ_INT(ctl_algo_tick(a, 3000, d, 2), 1);
    CHECK_EQ_INT(d[0].reason, CTL_REASON_FORGOTTEN);
    CHECK_EQ_STR(d[0].worker, "gone");
    CHECK_EQ_STR(d[0].class_name, CTL_CLASS_ALL);
    CHECK_EQ_INT(d[0].old_depth, 3);
    CHECK(d[0].changed && !d[0].enabled);
    CHECK_EQ_INT(ctl_algo_worker_count(a), 0);
    ctl_algo_free(a);
}

TEST(observe_rejects_bad_input) {
    struct ctl_policy p = ctl_policy_default();
    p.max_workers = 2;
    ctl_algo *a = ctl_algo_new(&p);
    REQUIRE(a);
    struct spec_step_metrics good = make_step(4, 2, 0.5, "c");
    CHECK_EQ_INT(ctl_algo_observe(a, "has space", &good, 1), SPECD_ERR_INVALID);
    CHECK_EQ_INT(ctl_algo_observe(a, "", &good, 1), SPECD_ERR_INVALID);
    char long_id[CTL_WORKER_ID_LEN + 1];
    memset(long_id, 'x', CTL_WORKER_ID_LEN);
    long_id[CTL_WORKER_ID_LEN] = '\0';
    CHECK_EQ_INT(ctl_algo_observe(a, long_id, &good, 1), SPECD_ERR_INVALID);
    CHECK_EQ_INT(ctl_algo_observe(a, "w", NULL, 1), SPECD_ERR_INVALID);
    CHECK_EQ_INT(ctl_algo_observe(NULL, "w", &good, 1), SPECD_ERR_INVALID);
    struct spec_step_metrics m = good;
    m.accepted = m.drafted + 1;
    CHECK_EQ_INT(ctl_algo_observe(a, "w", &m, 1), SPECD_ERR_FORMAT);
    m = good;
    m.accepted_at[1] = m.drafted_at[1] + 1;
    CHECK_EQ_INT(ctl_algo_observe(a, "w", &m, 1), SPECD_ERR_FORMAT);
    m = good;
    m.depth = SPEC_MAX_DEPTH + 1;
    CHECK_EQ_INT(ctl_algo_observe(a, "w", &m, 1), SPECD_ERR_FORMAT);
    m = good;
    m.t_verify_ms = NAN;
    CHECK_EQ_INT(ctl_algo_observe(a, "w", &m, 1), SPECD_ERR_FORMAT);
    m = good;
    m.t_draft_ms = -1.0;
    CHECK_EQ_INT(ctl_algo_observe(a, "w", &m, 1), SPECD_ERR_FORMAT);
    m = good;
    m.n_classes = SPEC_MAX_CLASSES + 1;
    CHECK_EQ_INT(ctl_algo_observe(a, "w", &m, 1), SPECD_ERR_FORMAT);
    m = good;
    strcpy(m.classes[0].name, "bad name");
    CHECK_EQ_INT(ctl_algo_observe(a, "w", &m, 1), SPECD_ERR_FORMAT);
    m = good;
    memset(m.classes[0].name, 'a', SPEC_CLASS_NAME_LEN); // not NUL-terminated
    CHECK_EQ_INT(ctl_algo_observe(a, "w", &m, 1), SPECD_ERR_FORMAT);
    m = good;
    m.classes[0].accepted = m.classes[0].drafted + 1;
    CHECK_EQ_INT(ctl_algo_observe(a, "w", &m, 1), SPECD_ERR_FORMAT);
    m = good;
    m.classes[1] = m.classes[0];
    m.n_classes = 2; // duplicate class name
    CHECK_EQ_INT(ctl_algo_observe(a, "w", &m, 1), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(ctl_algo_worker_count(a), 0);
    // max_workers
    CHECK_EQ_INT(ctl_algo_observe(a, "w1", &good, 1), SPECD_OK);
    CHECK_EQ_INT(ctl_algo_observe(a, "w2", &good, 1), SPECD_OK);
    CHECK_EQ_INT(ctl_algo_observe(a, "w3", &good, 1), SPECD_SOFT_FULL);
    CHECK_EQ_INT(ctl_algo_observe(a, "w1", &good, 2), SPECD_OK);
    // more classes over time than a settings message holds: the extra ones are dropped
    for (int i = 0; i < SPEC_MAX_CLASSES + 2; i++) {
        struct spec_step_metrics mc = good;
        snprintf(mc.classes[0].name, sizeof mc.classes[0].name, "class%d", i);
        CHECK_EQ_INT(ctl_algo_observe(a, "w2", &mc, 3), SPECD_OK);
    }
    struct ctl_counters c;
    ctl_algo_counters(a, &c);
    CHECK_EQ_INT(c.observations_rejected, 14);
    CHECK_EQ_INT(c.workers_refused, 1);
    CHECK_EQ_INT(c.observations, 3 + SPEC_MAX_CLASSES + 2);
    CHECK_EQ_INT(c.classes_dropped, 3); // class0 of w2 was "c": c + class0..class6 = 8
    CHECK_EQ_INT(c.classes_tracked, 1 + SPEC_MAX_CLASSES);
    ctl_algo_free(a);
}

TEST(tick_reports_count_beyond_cap_and_counts_reasons) {
    struct ctl_policy p = threshold_policy();
    ctl_algo *a = ctl_algo_new(&p);
    REQUIRE(a);
    struct spec_step_metrics m = make_step(4, 2, 0.6, NULL);
    feed(a, "b", &m, 0, 1000, 10);
    feed(a, "a", &m, 0, 1000, 10);
    struct ctl_decision d[1];
    CHECK_EQ_INT(ctl_algo_tick(a, 1000, d, 1), 2);
    CHECK_EQ_STR(d[0].worker, "a");
    CHECK_EQ_INT(ctl_algo_tick(a, 2000, NULL, 0), 2);
    struct ctl_counters c;
    ctl_algo_counters(a, &c);
    uint64_t total = 0;
    for (int r = 0; r < CTL_REASON_COUNT; r++)
        total += c.decisions[r];
    CHECK_EQ_INT(total, 4);
    CHECK_EQ_INT(c.ticks, 2);
    CHECK_EQ_INT(c.settings_changes, 2); // each worker's first settings
    ctl_algo_free(a);
}

TEST(policy_change_moves_depth_into_bounds) {
    struct ctl_policy p = threshold_policy();
    ctl_algo *a = ctl_algo_new(&p);
    REQUIRE(a);
    struct ctl_decision d = interval(a, "w", 1000, 0.6); // adopted at 4, in band
    CHECK_EQ_INT(d.depth, 4);
    p.max_depth = 2;
    p.static_depth = 2;
    char reason[128];
    REQUIRE(ctl_algo_set_policy(a, &p, reason, sizeof reason) == SPECD_OK);
    d = interval(a, "w", 2000, 0.6);
    CHECK_EQ_INT(d.reason, CTL_REASON_BOUNDS);
    CHECK_EQ_INT(d.depth, 2);
    struct spec_settings s;
    ctl_algo_settings(a, "w", &s);
    CHECK_EQ_INT(s.depth, 2);
    CHECK_EQ_INT(s.max_depth, 2);
    CHECK_EQ_INT(s.epoch, 2);
    p.min_depth = p.max_depth = p.static_depth = 0; // never speculate
    REQUIRE(ctl_algo_set_policy(a, &p, reason, sizeof reason) == SPECD_OK);
    d = interval(a, "w", 3000, 0.9);
    CHECK_EQ_INT(d.reason, CTL_REASON_BOUNDS);
    CHECK(!d.enabled);
    for (uint64_t t = 4000; t <= 20000; t += 1000) {
        d = interval(a, "w", t, 0.9);
        CHECK_EQ_INT(d.reason, CTL_REASON_OFF); // no probes either
    }
    ctl_algo_free(a);
}

TEST(decision_format_is_one_key_value_line) {
    struct ctl_decision d;
    memset(&d, 0, sizeof d);
    d.now_ms = 1234;
    strcpy(d.worker, "gpu-3");
    strcpy(d.class_name, "chat");
    d.mode = CTL_MODE_GOODPUT;
    d.reason = CTL_REASON_LOWER;
    d.changed = true;
    d.old_enabled = d.enabled = true;
    d.old_depth = 4;
    d.depth = 3;
    d.pending = CTL_REASON_HOLD;
    d.acceptance = 0.53125;
    d.alpha = NAN;
    d.evidence = 1520.25;
    d.n_goodput = 3;
    d.goodput[0] = 410.0;
    d.goodput[1] = 520.75;
    d.goodput[2] = NAN;
    const char *want =
        "decision ts=1234 worker=gpu-3 class=chat mode=goodput reason=lower changed=1 "
        "old_enabled=1 enabled=1 old_depth=4 depth=3 probing=0 shift=0 pending=hold "
        "pending_count=0 pending_depth=0 acceptance=0.5312 alpha=nan "
        "evidence=1520.2 goodput=410.0,520.8,nan";
    char buf[512];
    int n = ctl_decision_format(&d, buf, sizeof buf);
    CHECK_EQ_STR(buf, want);
    CHECK_EQ_INT(n, strlen(want));
    char small[16];
    CHECK_EQ_INT(ctl_decision_format(&d, small, sizeof small), strlen(want));
    CHECK_EQ_STR(small, "decision ts=123");
    CHECK_EQ_INT(ctl_decision_format(&d, NULL, 0), strlen(want));
    d.n_goodput = 0;
    ctl_decision_format(&d, buf, sizeof buf);
    CHECK(strstr(buf, " goodput=none") != NULL);
}

// ---- estimators --------------------------------------------------------------------------------

TEST(cost_fit_recovers_lines) {
    struct ctl_cost_cell cells[3];
    memset(cells, 0, sizeof cells);
    cells[0] = (struct ctl_cost_cell){64, 10.0, 8.0, 100};
    cells[1] = (struct ctl_cost_cell){64, 30.0, 18.0, 100};
    struct ctl_line l = ctl_fit_cells(cells, 3, 1000);
    CHECK(l.valid);
    CHECK_NEAR(l.a, 3.0, 1e-9); // y = 3 + 0.5 x
    CHECK_NEAR(l.b, 0.5, 1e-9);
    CHECK_EQ_INT(l.cells, 2);
    CHECK_NEAR(l.x_spread, 20.0, 1e-12);
    // a third, noisy but stale cell weighs 2^-10 of the others
    cells[2] = (struct ctl_cost_cell){64, 20.0, 100.0, 100 - 10000};
    l = ctl_fit_cells(cells, 3, 1000);
    CHECK_NEAR(l.b, 0.5, 0.01);
    // one x: slope 0, intercept the mean
    l = ctl_fit_cells(cells, 1, 1000);
    CHECK_NEAR(l.b, 0.0, 0.0);
    CHECK_NEAR(l.a, 8.0, 1e-12);
    CHECK_NEAR(l.x_spread, 0.0, 0.0);
    // decreasing data: slope clamped at 0
    cells[1].y = 2.0;
    l = ctl_fit_cells(cells, 2, 1000);
    CHECK_NEAR(l.b, 0.0, 0.0);
    CHECK_NEAR(l.a, 5.0, 1e-12);
    // a negative intercept refits through the origin: points (10, 1), (30, 9) -> b = 0.28
    cells[0].y = 1.0;
    cells[1].y = 9.0;
    l = ctl_fit_cells(cells, 2, 1000);
    CHECK_NEAR(l.a, 0.0, 0.0);
    CHECK_NEAR(l.b, (10.0 * 1 + 30.0 * 9) / (100.0 + 900.0), 1e-12);
    // no data
    CHECK(!ctl_fit_cells(cells, 0, 1000).valid);
}

TEST(cost_model_from_steps) {
    struct ctl_cost_model c;
    memset(&c, 0, sizeof c);
    // t_verify = 12 + 0.2 * tokens; t_draft = k * (0.7 + 0.05 * 8); overhead 1.5
    for (uint32_t k = 2; k <= 4; k += 2)
        for (int i = 0; i < 40; i++) {
            struct spec_step_metrics m;
            memset(&m, 0, sizeof m);
            m.batch_size = 8;
            m.depth = k;
            m.drafted = 8 * k;
            m.prefill_tokens = 16;
            m.t_verify_ms = 12.0 + 0.2 * (8 + 8 * k + 16);
            m.t_draft_ms = k * (0.7 + 0.05 * 8);
            m.t_step_ms = m.t_verify_ms + m.t_draft_ms + 1.5;
            ctl_cost_add(&c, &m, 1000 + i);
        }
    struct ctl_cost_fit f = ctl_cost_fit_get(&c, 60000);
    CHECK(f.verify.valid && f.draft.valid);
    CHECK_NEAR(f.verify.a, 12.0, 1e-9);
    CHECK_NEAR(f.verify.b, 0.2, 1e-9);
    CHECK_NEAR(f.draft.a + f.draft.b * 8, 0.7 + 0.05 * 8, 1e-9); // one batch size: the sum
    CHECK_NEAR(f.batch, 8.0, 1e-12);
    CHECK_NEAR(f.prefill, 16.0, 1e-12);
    CHECK_NEAR(f.overhead, 1.5, 1e-9);
    // goodput with a known survival curve: alpha 0.5 at every position
    struct ctl_accept_view v = {.valid = true, .acceptance = 0.5, .alpha = 0.5, .evidence = 100};
    double s = 1.0;
    for (int i = 0; i < SPEC_MAX_DEPTH; i++)
        v.survival[i] = s *= 0.5;
    double g[SPEC_MAX_DEPTH + 1];
    CHECK_EQ_INT(ctl_predict_goodput(&f, &v, 6, g), 7);
    for (uint32_t k = 0; k <= 6; k++) {
        double e = (1.0 - pow(0.5, k + 1.0)) / 0.5;
        double t = 12.0 + 0.2 * (8.0 * (k + 1) + 16) + k * 1.1 + 1.5;
        CHECK_NEAR(g[k], 1000.0 * 8 * e / t, 1e-6);
    }
}

static void add_counts(struct ctl_accept_est *e, const uint32_t *dat, const uint32_t *aat,
                       uint64_t now, uint32_t half_life) {
    uint32_t drafted = 0, accepted = 0;
    for (int i = 0; i < SPEC_MAX_DEPTH; i++) {
        drafted += dat[i];
        accepted += aat[i];
    }
    struct ctl_step_counts c;
    ctl_step_counts_init(&c, drafted, accepted, dat, aat);
    ctl_accept_add(e, &c, now, half_life);
}

TEST(acceptance_survival_curve) {
    struct ctl_accept_est e;
    memset(&e, 0, sizeof e);
    // 10000 sequences at k = 3, alpha 0.8 at every position
    uint32_t dat[SPEC_MAX_DEPTH] = {10000, 10000, 10000}, aat[SPEC_MAX_DEPTH] = {8000, 6400, 5120};
    add_counts(&e, dat, aat, 1000, 5000);
    struct ctl_accept_view v;
    ctl_accept_estimate(&e, 5000, 64, &v);
    CHECK(v.valid);
    CHECK_NEAR(v.acceptance, (8000.0 + 6400 + 5120) / 30000, 1e-12);
    CHECK_NEAR(v.alpha, 0.8, 1e-12); // (8000+6400+5120) / (10000+8000+6400)
    for (int i = 0; i < 8; i++)      // positions 3.. extrapolated with alpha
        CHECK_NEAR(v.survival[i], pow(0.8, i + 1), 1e-9);
    for (uint32_t k = 0; k <= 8; k++)
        CHECK_NEAR(ctl_expected_tokens(&v, k), (1 - pow(0.8, k + 1)) / 0.2, 1e-9);
    // position-dependent: 0.9 then 0.5 (large counts: shrinkage negligible)
    memset(&e, 0, sizeof e);
    uint32_t aat2[SPEC_MAX_DEPTH] = {9000, 4500, 2250};
    add_counts(&e, dat, aat2, 1000, 5000);
    ctl_accept_estimate(&e, 5000, 64, &v);
    CHECK_NEAR(v.survival[0], 0.9, 1e-3);
    CHECK_NEAR(v.survival[1], 0.45, 2e-3);
    CHECK_NEAR(v.survival[2], 0.225, 2e-3);
    // too little evidence
    ctl_accept_estimate(&e, 5000, 1e6, &v);
    CHECK(!v.valid);
    memset(&e, 0, sizeof e);
    ctl_accept_estimate(&e, 5000, 1, &v);
    CHECK(!v.valid && isnan(v.acceptance) && isnan(v.survival[0]));
}

TEST(acceptance_decay_and_stale_positions) {
    struct ctl_accept_est e;
    memset(&e, 0, sizeof e);
    // t = 0: k = 4 at alpha 0.9; then k = 2 at alpha 0.5 for 4 half-lives
    uint32_t dat[SPEC_MAX_DEPTH] = {1000, 1000, 1000, 1000};
    uint32_t aat[SPEC_MAX_DEPTH] = {900, 810, 729, 656};
    add_counts(&e, dat, aat, 1, 1000);
    uint32_t dat2[SPEC_MAX_DEPTH] = {1000, 1000}, aat2[SPEC_MAX_DEPTH] = {500, 250};
    add_counts(&e, dat2, aat2, 4001, 1000);
    // weights: old 1/16
    CHECK_NEAR(e.drafted, 4000.0 / 16 + 2000.0, 1e-9);
    struct ctl_accept_view v;
    ctl_accept_estimate(&e, 1000, 64, &v);
    double a = (900.0 / 16 + 500) / (1000.0 / 16 + 1000); // position 0, mixed
    CHECK_NEAR(v.survival[0], a, 0.01);
    // positions 2, 3 are stale (last drafted 4 s before position 0): they use alpha
    CHECK_NEAR(v.survival[2], v.survival[1] * v.alpha, 1e-12);
    CHECK_NEAR(v.survival[3], v.survival[2] * v.alpha, 1e-12);
    CHECK(v.alpha < 0.6);
}

TEST(acceptance_shift_detection) {
    struct ctl_accept_est slow, recent;
    memset(&slow, 0, sizeof slow);
    memset(&recent, 0, sizeof recent);
    uint32_t dat[SPEC_MAX_DEPTH] = {1000}, aat[SPEC_MAX_DEPTH] = {800};
    add_counts(&slow, dat, aat, 1000, 5000);
    uint32_t dat2[SPEC_MAX_DEPTH] = {200}, aat2[SPEC_MAX_DEPTH] = {150};
    add_counts(&recent, dat2, aat2, 2000, 0);
    CHECK(!ctl_accept_detect_shift(&slow, &recent)); // 0.75 vs 0.8: noise
    CHECK_NEAR(slow.drafted, 1000.0, 0.0);
    aat2[0] = 100; // 0.5 vs 0.8
    memset(&recent, 0, sizeof recent);
    add_counts(&recent, dat2, aat2, 2000, 0);
    CHECK(ctl_accept_detect_shift(&slow, &recent));
    CHECK_NEAR(slow.drafted, 200.0, 0.0);
    CHECK_NEAR(slow.accepted_at[0], 100.0, 0.0);
    // too few drafts: never a shift
    memset(&recent, 0, sizeof recent);
    uint32_t dat3[SPEC_MAX_DEPTH] = {20}, aat3[SPEC_MAX_DEPTH] = {20};
    add_counts(&recent, dat3, aat3, 3000, 0);
    CHECK(!ctl_accept_detect_shift(&slow, &recent));
}

// ---- simulator ---------------------------------------------------------------------------------

TEST(sim_samples_acceptance_and_costs) {
    struct ctl_sim_params p = ctl_sim_default_params();
    p.noise = 0.0;
    p.prefill_tokens = 10;
    p.overhead_ms = 2.0;
    ctl_sim *sim = ctl_sim_new(&p);
    REQUIRE(sim);
    struct spec_step_metrics m;
    double acc[SPEC_MAX_DEPTH] = {0}, dr[SPEC_MAX_DEPTH] = {0};
    double t_prev = 0;
    for (int s = 0; s < 5000; s++) {
        ctl_sim_step(sim, &m);
        CHECK_EQ_INT(m.step, s);
        CHECK_EQ_INT(m.batch_size, 8);
        CHECK_EQ_INT(m.depth, 4);
        CHECK_EQ_INT(m.drafted, 32);
        CHECK_EQ_INT(m.emitted, m.accepted + 8);
        CHECK_EQ_INT(m.n_classes, 1);
        CHECK_EQ_INT(m.classes[0].accepted, m.accepted);
        for (int i = 0; i < 4; i++) {
            acc[i] += m.accepted_at[i];
            dr[i] += m.drafted_at[i];
            if (i > 0 && m.accepted_at[i] > m.accepted_at[i - 1])
                TEST_FAIL_AT(__FILE__, __LINE__, "accepted_at not monotone");
        }
        CHECK_NEAR(m.t_verify_ms, 20.0 + 0.05 * (8 + 32 + 10), 1e-9);
        CHECK_NEAR(m.t_draft_ms, 4 * (0.5 + 0.02 * 8), 1e-9);
        CHECK_NEAR(m.t_step_ms, m.t_verify_ms + m.t_draft_ms + 2.0, 1e-9);
        CHECK_NEAR(ctl_sim_now_ms(sim) - t_prev, m.t_step_ms, 1e-6);
        t_prev = ctl_sim_now_ms(sim);
    }
    // 40000 sequences: survival at position i is 0.7^(i+1) within ~4 standard errors
    for (int i = 0; i < 4; i++)
        CHECK_NEAR(acc[i] / dr[i], pow(0.7, i + 1), 0.01);
    ctl_sim_free(sim);
}

TEST(sim_settings_epochs_ttl_and_classes) {
    struct ctl_sim_params p = ctl_sim_default_params();
    p.n_classes = 2;
    p.classes[1] = p.classes[0];
    strcpy(p.classes[1].name, "other");
    p.classes[1].n_phases = 2;
    p.classes[1].phases[1] = (struct ctl_sim_phase){500.0, 0.1};
    ctl_sim *sim = ctl_sim_new(&p);
    REQUIRE(sim);
    CHECK_NEAR(ctl_sim_alpha(sim, 1, 499.0), 0.7, 0.0);
    CHECK_NEAR(ctl_sim_alpha(sim, 1, 500.0), 0.1, 0.0);
    CHECK(isnan(ctl_sim_alpha(sim, 2, 0.0)));
    CHECK_EQ_INT(ctl_sim_class_depth(sim, 0), 4); // worker default
    struct spec_settings s;
    memset(&s, 0, sizeof s);
    s.epoch = 1;
    s.enabled = false;
    s.min_depth = 1;
    s.max_depth = 5;
    s.ttl_ms = 1000;
    s.n_classes = 1;
    strcpy(s.classes[0].name, "other");
    s.classes[0].enabled = true;
    s.classes[0].depth = 9; // clamped to max_depth
    CHECK_EQ_INT(ctl_sim_apply_settings(sim, &s), SPECD_OK);
    CHECK_EQ_INT(ctl_sim_class_depth(sim, 0), 0);
    CHECK_EQ_INT(ctl_sim_class_depth(sim, 1), 5);
    struct spec_step_metrics m;
    ctl_sim_step(sim, &m);
    CHECK_EQ_INT(m.depth, 5);
    CHECK_EQ_INT(m.classes[0].drafted, 0);
    CHECK_EQ_INT(m.classes[1].drafted, 40);
    CHECK_EQ_INT(m.n_speculating, 8);
    // the same epoch again only refreshes the TTL; an older one is ignored
    s.classes[0].depth = 2;
    CHECK_EQ_INT(ctl_sim_apply_settings(sim, &s), SPECD_SOFT_EMPTY);
    CHECK_EQ_INT(ctl_sim_class_depth(sim, 1), 5);
    s.epoch = 0;
    CHECK_EQ_INT(ctl_sim_apply_settings(sim, &s), SPECD_SOFT_EMPTY);
    s.epoch = 2;
    s.depth = SPEC_MAX_DEPTH + 1;
    CHECK_EQ_INT(ctl_sim_apply_settings(sim, &s), SPECD_ERR_INVALID);
    // TTL: no settings for > 1000 ms -> worker defaults
    while (ctl_sim_now_ms(sim) < 1200)
        ctl_sim_step(sim, &m);
    CHECK_EQ_INT(ctl_sim_class_depth(sim, 0), 4);
    CHECK_EQ_INT(ctl_sim_class_depth(sim, 1), 4);
    ctl_sim_free(sim);
    // invalid parameters
    p = ctl_sim_default_params();
    p.classes[0].phases[0].alpha = 1.5;
    CHECK(ctl_sim_new(&p) == NULL);
    p = ctl_sim_default_params();
    p.n_classes = 0;
    CHECK(ctl_sim_new(&p) == NULL);
    p = ctl_sim_default_params();
    p.verify_base_ms = 0.0;
    CHECK(ctl_sim_new(&p) == NULL);
    p = ctl_sim_default_params();
    p.classes[0].n_phases = 2;
    p.classes[0].phases[1] = (struct ctl_sim_phase){0.0, 0.5}; // not increasing
    CHECK(ctl_sim_new(&p) == NULL);
    ctl_sim_free(NULL);
}

TEST(sim_is_reproducible) {
    struct ctl_sim_params p = ctl_sim_default_params();
    ctl_sim *a = ctl_sim_new(&p), *b = ctl_sim_new(&p);
    p.seed = 2;
    ctl_sim *c = ctl_sim_new(&p);
    REQUIRE(a && b && c);
    bool differs = false;
    for (int i = 0; i < 100; i++) {
        struct spec_step_metrics ma, mb, mc;
        ctl_sim_step(a, &ma);
        ctl_sim_step(b, &mb);
        ctl_sim_step(c, &mc);
        CHECK(memcmp(&ma, &mb, sizeof ma) == 0);
        differs |= ma.accepted != mc.accepted || ma.t_verify_ms != mc.t_verify_ms;
    }
    CHECK(differs);
    ctl_sim_free(a);
    ctl_sim_free(b);
    ctl_sim_free(c);
}

TEST(null_safety) {
    ctl_algo_free(NULL);
    CHECK(ctl_algo_new(NULL) == NULL);
    CHECK_EQ_INT(ctl_algo_tick(NULL, 0, NULL, 0), 0);
    CHECK_EQ_INT(ctl_algo_worker_count(NULL), 0);
    struct ctl_counters c;
    ctl_algo_counters(NULL, &c);
    CHECK_EQ_INT(c.ticks, 0);
    struct spec_settings s;
    CHECK_EQ_INT(ctl_algo_settings(NULL, "w", &s), SPECD_ERR_INVALID);
    CHECK(ctl_policy_add_override(NULL, "x") == NULL);
    struct ctl_policy p = ctl_policy_default();
    CHECK(ctl_policy_add_override(&p, "") == NULL);
    for (int i = 0; i < CTL_MAX_OVERRIDES; i++) {
        char name[16];
        snprintf(name, sizeof name, "c%d", i);
        CHECK(ctl_policy_add_override(&p, name) != NULL);
    }
    CHECK(ctl_policy_add_override(&p, "full") == NULL);
    CHECK_EQ_INT(ctl_policy_validate(&p, NULL, 0), SPECD_OK);
}

int main(int argc, char **argv) {
    TEST_MAIN_BEGIN(argc, argv);
    TEST_RUN(goodput_converges_to_brute_force_optimum);
    TEST_RUN(goodput_reconverges_after_domain_shift);
    TEST_RUN(goodput_disables_on_collapse_and_recovers_by_probing);
    TEST_RUN(goodput_does_not_flap_under_noise);
    TEST_RUN(goodput_probes_a_worker_that_starts_off);
    TEST_RUN(goodput_decides_each_class);
    TEST_RUN(goodput_class_below_a_pinned_class_still_decides);
    TEST_RUN(threshold_every_branch);
    TEST_RUN(probe_runs_longer_while_evidence_is_short);
    TEST_RUN(threshold_holds_a_change_for_hold_intervals);
    TEST_RUN(static_mode_pins_depth);
    TEST_RUN(per_class_overrides);
    TEST_RUN(policy_validation_rejects_each_bad_field);
    TEST_RUN(policy_names);
    TEST_RUN(worker_timeout_forgets_workers_and_classes);
    TEST_RUN(forgotten_record_says_what_was_dropped);
    TEST_RUN(observe_rejects_bad_input);
    TEST_RUN(tick_reports_count_beyond_cap_and_counts_reasons);
    TEST_RUN(policy_change_moves_depth_into_bounds);
    TEST_RUN(decision_format_is_one_key_value_line);
    TEST_RUN(cost_fit_recovers_lines);
    TEST_RUN(cost_model_from_steps);
    TEST_RUN(acceptance_survival_curve);
    TEST_RUN(acceptance_decay_and_stale_positions);
    TEST_RUN(acceptance_shift_detection);
    TEST_RUN(sim_samples_acceptance_and_costs);
    TEST_RUN(sim_settings_epochs_ttl_and_classes);
    TEST_RUN(sim_is_reproducible);
    TEST_RUN(null_safety);
    return TEST_MAIN_END();
}
