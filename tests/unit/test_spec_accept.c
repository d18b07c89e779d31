// Tests of worker/engine/spec_accept: lossless speculative acceptance.
//
// The key test simulates generation with a small vocabulary (6..10 tokens): a target "model" and
// a draft "model" are deterministic functions from the context (the tokens emitted so far plus
// the drafts) to a distribution, made from a hash of the context, so the target distribution at
// position 1 depends on the token at position 0. Each run drafts k tokens from the draft model,
// scores the k+1 positions with the target model, applies the acceptance rule and repeats until
// two tokens are emitted. The emitted (t0, t1) must follow p0(t0) * p1(t1 | t0) exactly, and t0
// must follow p0: checked by Pearson chi-square (cells with expected count < 5 pooled), with
// p-values from a regularized incomplete gamma function written here and checked against closed
// forms. Threshold: a rule passes when every p-value >= 1e-4. Seeds are fixed, so the outcome is
// deterministic. The same harness must reject four deliberately wrong rules (p-value < 1e-4),
// which shows the test has the power to catch a broken rule.
#include <stdint.h>

#include "shared/status.h"
#include "tests/support/stats.h"
#include "tests/test.h"
#include "worker/engine/rng.h"
#include "worker/engine/sampler.h"
#include "worker/engine/spec_accept.h"

#define MAX_V 10
#define MAX_K 4
#define MAX_CTX 16
#define P_THRESHOLD 1e-4

// ---- chi-square -------------------------------------------------------------------------------

TEST(chi2_reference_values) {
    for (double x = 0.1; x < 60.0; x *= 1.7) { // df 2: exp(-x/2); df 1: erfc(sqrt(x/2))
        CHECK_NEAR(stats_gamma_q(1.0, x / 2), exp(-x / 2), 1e-12 + 1e-9 * exp(-x / 2));
        CHECK_NEAR(stats_gamma_q(0.5, x / 2), erfc(sqrt(x / 2)), 1e-12 + 1e-9 * erfc(sqrt(x / 2)));
    }
    CHECK_NEAR(stats_gamma_q(5.0, 18.307038 / 2), 0.05, 1e-6); // chi2(10) upper 5% point
}

// ---- toy models -------------------------------------------------------------------------------

// A "model": context -> distribution over V tokens, from a hash of (salt, context). The draft
// model mixes the target with its own noise and zeroes some entries independently, so that p and
// q differ in shape and in support (p(x) > 0 = q(x) and q(x) > 0 = p(x) both occur).
struct toy {
    int V;
    uint64_t salt;
    double scale;     // logits uniform in [-scale, scale]
    double zero_frac; // chance that an entry is zeroed (one entry always survives)
};

static uint64_t ctx_hash(uint64_t salt, const int32_t *ctx, int len) {
    uint64_t h = salt;
    for (int i = 0; i < len; i++) {
        h ^= (uint64_t)ctx[i] + 0x100ULL * (uint64_t)(i + 1);
        h = rng_splitmix64(&h);
    }
    return h;
}

static void toy_raw(const struct toy *m, const int32_t *ctx, int len, double *w) {
    struct rng_state r;
    rng_seed(&r, ctx_hash(m->salt, ctx, len));
    int keep = (int)(rng_next_u64(&r) % (uint64_t)m->V);
    for (int x = 0; x < m->V; x++) {
        w[x] = exp(m->scale * (2.0 * rng_uniform(&r) - 1.0));
        if (x != keep && rng_uniform(&r) < m->zero_frac)
            w[x] = 0.0;
    }
}

static void normalize_to(const double *w, int V, float *out) {
    double z = 0.0;
    for (int x = 0; x < V; x++)
        z += w[x];
    for (int x = 0; x < V; x++)
        out[x] = (float)(w[x] / z);
}

static void target_dist(const struct toy *p, const int32_t *ctx, int len, float *out) {
    double w[MAX_V];
    toy_raw(p, ctx, len, w);
    normalize_to(w, p->V, out);
}

// Draft: alpha * target + (1 - alpha) * noise, then entries zeroed by a third hash.
static void draft_dist(const struct toy *p, const struct toy *noise, double alpha,
                       const int32_t *ctx, int len, float *out) {
    float pt[MAX_V];
    double w[MAX_V], mask[MAX_V];
    target_dist(p, ctx, len, pt);
    toy_raw(noise, ctx, len, w);
    double z = 0.0;
    for (int x = 0; x < p->V; x++)
        z += w[x];
    struct toy mask_model = *noise;
    mask_model.salt ^= 0xabcdefULL;
    toy_raw(&mask_model, ctx, len, mask);
    for (int x = 0; x < p->V; x++)
        w[x] = mask[x] > 0.0 ? alpha * pt[x] + (1.0 - alpha) * w[x] / z : 0.0;
    normalize_to(w, p->V, out);
}

// Exact probability (double) of the target distribution's row, renormalised from the float row.
static void target_exact(const struct toy *p, const int32_t *ctx, int len, double *out) {
    float row[MAX_V];
    target_dist(p, ctx, len, row);
    double z = 0.0;
    for (int x = 0; x < p->V; x++)
        z += row[x];
    for (int x = 0; x < p->V; x++)
        out[x] = row[x] / z;
}

// ---- acceptance rules under test --------------------------------------------------------------

// q: [k+1][V] draft rows (row k is the draft model at the bonus position; only wrong rule (b)
// looks at it), or NULL for a deterministic proposer.
typedef int (*accept_rule)(int k, const int32_t *d, const float *q, const float *p, int V,
                           struct rng_state *rng, struct spec_accept_result *out);

static int rule_real(int k, const int32_t *d, const float *q, const float *p, int V,
                     struct rng_state *rng, struct spec_accept_result *out) {
    return spec_accept_sample(k, d, q, p, V, rng, out);
}

enum wrong_kind {
    WRONG_RESAMPLE_P,    // (a) on rejection, sample from p instead of max(0, p - q)
    WRONG_BONUS_FROM_Q,  // (b) the bonus token from the draft model instead of the target
    WRONG_ACCEPT_P,      // (c) accept with probability p(d) instead of min(1, p/q)
    WRONG_RESIDUAL_SIGN, // (d) on rejection, sample from max(0, q - p)
    WRONG_ACCEPT_LESS,   // (e) subtle: accept with probability 0.95 * min(1, p/q)
    WRONG_Q0_ACCEPT,     // (f) q(d) = 0 read as an infinite ratio: accept whenever p(d) > 0
};

// The correct rule with one deliberate mistake.
static int rule_wrong(enum wrong_kind kind, int k, const int32_t *d, const float *q, const float *p,
                      int V, struct rng_state *rng, struct spec_accept_result *out) {
    for (int i = 0; i < k; i++) {
        const float *pi = p + i * V, *qi = q + i * V;
        double u = rng_uniform(rng);
        int accept = u * qi[d[i]] < pi[d[i]];
        if (kind == WRONG_ACCEPT_P)
            accept = u < pi[d[i]];
        else if (kind == WRONG_ACCEPT_LESS)
            accept = u * qi[d[i]] < 0.95 * pi[d[i]];
        else if (kind == WRONG_Q0_ACCEPT && !(qi[d[i]] > 0.0f))
            accept = pi[d[i]] > 0.0f;
        if (accept)
            continue;
        float res[MAX_V];
        for (int x = 0; x < V; x++) {
            float r = kind == WRONG_RESIDUAL_SIGN ? qi[x] - pi[x] : pi[x] - qi[x];
            res[x] = r > 0.0f ? r : 0.0f;
        }
        out->n_accepted = i;
        out->next_token = sampler_sample(kind == WRONG_RESAMPLE_P ? pi : res, V, rng);
        if (out->next_token < 0)
            out->next_token = sampler_sample(pi, V, rng);
        return 0;
    }
    out->n_accepted = k;
    out->next_token = sampler_sample((kind == WRONG_BONUS_FROM_Q ? q : p) + k * V, V, rng);
    return 0;
}

#define WRONG_RULE(name, kind)                                                                     \
    static int name(int k, const int32_t *d, const float *q, const float *p, int V,                \
                    struct rng_state *rng, struct spec_accept_result *out) {                       \
        return rule_wrong(kind, k, d, q, p, V, rng, out);                                          \
    }
WRONG_RULE(rule_resample_p, WRONG_RESAMPLE_P)
WRONG_RULE(rule_bonus_from_q, WRONG_BONUS_FROM_Q)
WRONG_RULE(rule_accept_p, WRONG_ACCEPT_P)
WRONG_RULE(rule_residual_sign, WRONG_RESIDUAL_SIGN)
WRONG_RULE(rule_accept_less, WRONG_ACCEPT_LESS)
WRONG_RULE(rule_q0_accept, WRONG_Q0_ACCEPT)

// ---- the generation simulation -----------------------------------------------------------------

enum proposer {
    PROPOSE_SAMPLED,  // d[i] ~ q[i], q passed to the rule
    PROPOSE_FIXED,    // d[i] = a fixed function of the context (n-gram-like), q = NULL
    PROPOSE_FIXED_Q0, // d[i] fixed as above, q passed but with q(d[i]) = 0
};

struct scenario {
    const char *name;
    int V, k;
    enum proposer proposer;
    double alpha;     // draft = alpha * target + noise
    double zero_frac; // sparsity of p and q
    uint64_t seed;
};

struct counts {
    long first[MAX_V];
    long joint[MAX_V * MAX_V];
    long accepted_first; // steps of the first call that accepted d[0]
    long drafted_first;
};

// One generation until two tokens are emitted; returns 0 or a negative status.
static int simulate_one(const struct scenario *sc, const struct toy *p, const struct toy *noise,
                        accept_rule rule, struct rng_state *rng, struct counts *c) {
    int32_t ctx[MAX_CTX];
    int len = 0, V = sc->V, k = sc->k, first_step = 1;
    float q[(MAX_K + 1) * MAX_V], pr[(MAX_K + 1) * MAX_V];
    while (len < 2) {
        int32_t *d = ctx + len; // drafts are written after the context
        for (int i = 0; i <= k; i++) {
            float *qi = q + i * V;
            draft_dist(p, noise, sc->alpha, ctx, len + i, qi);
            if (i == k)
                break;
            if (sc->proposer == PROPOSE_SAMPLED) {
                d[i] = sampler_sample(qi, V, rng);
            } else {
                d[i] = (int32_t)(ctx_hash(0x5eedULL, ctx, len + i) % (uint64_t)V);
                qi[d[i]] = 0.0f; // only PROPOSE_FIXED_Q0 passes q on
            }
        }
        for (int i = 0; i <= k; i++)
            target_dist(p, ctx, len + i, pr + i * V);
        struct spec_accept_result res;
        int rc = rule(k, d, sc->proposer == PROPOSE_FIXED ? NULL : q, pr, V, rng, &res);
        if (rc != 0)
            return rc;
        if (res.n_accepted < 0 || res.n_accepted > k || res.next_token < 0 || res.next_token >= V)
            return SPECD_ERR_STATE;
        if (first_step && k > 0) {
            c->drafted_first++;
            c->accepted_first += res.n_accepted > 0;
        }
        first_step = 0;
        len += res.n_accepted; // the accepted drafts are already in place
        ctx[len++] = res.next_token;
    }
    c->first[ctx[0]]++;
    c->joint[ctx[0] * V + ctx[1]]++;
    return 0;
}

struct verdict {
    double p_first, p_joint;
    long impossible;
    double accept_rate, accept_expected;
};

static int run_scenario(const struct scenario *sc, accept_rule rule, long runs, struct verdict *v) {
    struct toy p = {sc->V, sc->seed * 3 + 1, 1.5, sc->zero_frac};
    struct toy noise = {sc->V, sc->seed * 3 + 2, 2.0, sc->zero_frac};
    struct rng_state rng;
    rng_seed(&rng, sc->seed);
    static struct counts c;
    memset(&c, 0, sizeof c);
    for (long r = 0; r < runs; r++) {
        int rc = simulate_one(sc, &p, &noise, rule, &rng, &c);
        if (rc != 0)
            return rc;
    }
    // Expected: p0(t0) and p0(t0) * p1(t1 | t0).
    int V = sc->V;
    double p0[MAX_V] = {0}, joint[MAX_V * MAX_V] = {0};
    target_exact(&p, NULL, 0, p0);
    for (int a = 0; a < V; a++) {
        double p1[MAX_V];
        int32_t ctx0 = a;
        target_exact(&p, &ctx0, 1, p1);
        for (int b = 0; b < V; b++)
            joint[a * V + b] = p0[a] * p1[b];
    }
    long imp_first, imp_joint;
    v->p_first = stats_chi2_pvalue(c.first, p0, V, runs, &imp_first);
    v->p_joint = stats_chi2_pvalue(c.joint, joint, V * V, runs, &imp_joint);
    v->impossible = imp_first + imp_joint;
    // Acceptance of d[0] at the first step: sum_x min(p0, q0) for a sampled proposer; p0(d0)
    // for a fixed one (the first draft does not depend on the rng).
    float q0[MAX_V];
    draft_dist(&p, &noise, sc->alpha, NULL, 0, q0);
    double expected = 0.0;
    if (sc->proposer == PROPOSE_SAMPLED) {
        for (int x = 0; x < V; x++)
            expected += p0[x] < q0[x] ? p0[x] : q0[x];
    } else {
        expected = p0[ctx_hash(0x5eedULL, NULL, 0) % (uint64_t)V];
    }
    v->accept_rate = c.drafted_first ? (double)c.accepted_first / c.drafted_first : 0.0;
    v->accept_expected = expected;
    return 0;
}

static const struct scenario scenarios[] = {
    {"V6 k1 sampled", 6, 1, PROPOSE_SAMPLED, 0.5, 0.2, 101},
    {"V8 k2 sampled", 8, 2, PROPOSE_SAMPLED, 0.3, 0.25, 102},
    {"V10 k3 sampled", 10, 3, PROPOSE_SAMPLED, 0.7, 0.3, 103},
    {"V7 k4 sampled", 7, 4, PROPOSE_SAMPLED, 0.0, 0.2, 104},
    {"V9 k2 sampled dense", 9, 2, PROPOSE_SAMPLED, 0.6, 0.0, 105},
    {"V8 k0 (plain sampling)", 8, 0, PROPOSE_SAMPLED, 0.5, 0.2, 106},
    {"V8 k3 one-hot q (n-gram)", 8, 3, PROPOSE_FIXED, 0.5, 0.2, 107},
    {"V6 k2 q(d)=0 fallback", 6, 2, PROPOSE_FIXED_Q0, 0.5, 0.2, 108},
};
#define N_SCENARIOS ((int)(sizeof scenarios / sizeof scenarios[0]))
#define RUNS 60000

TEST(lossless_first_and_joint_distribution) {
    for (int s = 0; s < N_SCENARIOS; s++) {
        struct verdict v;
        REQUIRE(run_scenario(&scenarios[s], rule_real, RUNS, &v) == 0);
        fprintf(stderr, "  %-26s p-value first %.4f joint %.4f", scenarios[s].name, v.p_first,
                v.p_joint);
        if (scenarios[s].k > 0)
            fprintf(stderr, "; accept(d0) %.4f expected %.4f", v.accept_rate, v.accept_expected);
        fprintf(stderr, "\n");
        CHECK(v.p_first >= P_THRESHOLD);
        CHECK(v.p_joint >= P_THRESHOLD);
        CHECK_EQ_INT(v.impossible, 0);
        if (scenarios[s].k > 0) { // binomial: within 5 standard deviations
            double sd = sqrt(v.accept_expected * (1 - v.accept_expected) / RUNS);
            CHECK_NEAR(v.accept_rate, v.accept_expected, 5 * sd + 1e-9);
        }
    }
}

// Each wrong rule must be rejected on scenarios where it changes the output distribution.
// (e) shows the sensitivity to a small bias; (f) shows that the documented q(d) = 0 choice matters.
// (b) only changes the bonus token, which is among the first two tokens only when k == 1, so it is
// checked on the joint distribution of the k == 1 scenario; the others change the first token.
TEST(wrong_rules_are_rejected) {
    struct {
        const char *name;
        accept_rule rule;
        int scenario;
        int check_first;
    } cases[] = {
        {"(a) resample from p on rejection", rule_resample_p, 0, 1},
        {"(a) resample from p on rejection", rule_resample_p, 2, 1},
        {"(b) bonus token from q", rule_bonus_from_q, 0, 0},
        {"(c) accept with probability p(d)", rule_accept_p, 1, 1},
        {"(c) accept with probability p(d)", rule_accept_p, 3, 1},
        {"(d) residual max(0, q - p)", rule_residual_sign, 1, 1},
        {"(d) residual max(0, q - p)", rule_residual_sign, 4, 1},
        {"(e) accept 0.95 * min(1, p/q)", rule_accept_less, 1, 1},
        {"(e) accept 0.95 * min(1, p/q)", rule_accept_less, 4, 1},
        {"(f) q(d)=0: accept iff p(d) > 0", rule_q0_accept, 7, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct verdict v;
        REQUIRE(run_scenario(&scenarios[cases[i].scenario], cases[i].rule, RUNS, &v) == 0);
        fprintf(stderr, "  %-34s on %-16s p-value first %.3g joint %.3g\n", cases[i].name,
                scenarios[cases[i].scenario].name, v.p_first, v.p_joint);
        CHECK(v.p_joint < P_THRESHOLD);
        if (cases[i].check_first)
            CHECK(v.p_first < P_THRESHOLD);
    }
}

// ---- deterministic properties ------------------------------------------------------------------

TEST(identical_distributions_accept_everything) {
    struct rng_state r;
    rng_seed(&r, 3);
    const int V = 5, k = 3;
    float p[4 * 5];
    for (int rep = 0; rep < 500; rep++) {
        int32_t d[3];
        for (int i = 0; i < (k + 1) * V; i++)
            p[i] = (float)rng_uniform(&r) + 0.01f;
        for (int i = 0; i <= k; i++) {
            double z = 0.0;
            for (int x = 0; x < V; x++)
                z += p[i * V + x];
            for (int x = 0; x < V; x++)
                p[i * V + x] = (float)(p[i * V + x] / z);
        }
        for (int i = 0; i < k; i++)
            d[i] = sampler_sample(p + i * V, V, &r);
        struct spec_accept_result res;
        REQUIRE(spec_accept_sample(k, d, p, p, V, &r, &res) == 0);
        CHECK_EQ_INT(res.n_accepted, k);
    }
}

TEST(zero_target_probability_is_never_accepted) {
    struct rng_state r;
    rng_seed(&r, 4);
    const float p[2 * 4] = {0.5f, 0.0f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f};
    const float q[4] = {0.1f, 0.8f, 0.05f, 0.05f};
    const int32_t d[1] = {1};
    for (int rep = 0; rep < 1000; rep++) {
        struct spec_accept_result res;
        REQUIRE(spec_accept_sample(1, d, q, p, 4, &r, &res) == 0);
        CHECK_EQ_INT(res.n_accepted, 0);
        CHECK(res.next_token != 1);
        // residual max(0, p - q) = {0.4, 0, 0.2, 0.2}: token 0 is never impossible, 1 always is
        REQUIRE(spec_accept_sample(1, d, NULL, p, 4, &r, &res) == 0);
        CHECK(res.n_accepted == 0 && res.next_token != 1);
    }
}

TEST(rng_draw_order) {
    // a + 2 draws when rejecting at position a, k + 1 when accepting all.
    struct rng_state r;
    rng_seed(&r, 5);
    const int V = 6, k = 4;
    float p[5 * 6], q[4 * 6];
    int seen_all = 0, seen_reject = 0;
    for (int rep = 0; rep < 2000; rep++) {
        for (int i = 0; i < (k + 1) * V; i++)
            p[i] = (float)rng_uniform(&r) / V * 2; // rows need not be exact for this check
        for (int i = 0; i < k * V; i++)
            q[i] = p[i] * (0.8f + 0.4f * (float)rng_uniform(&r));
        int32_t d[4];
        for (int i = 0; i < k; i++)
            d[i] = (int32_t)(rng_next_u64(&r) % V);
        struct rng_state before = r, expect;
        struct spec_accept_result res;
        REQUIRE(spec_accept_sample(k, d, q, p, V, &r, &res) == 0);
        int draws = res.n_accepted == k ? k + 1 : res.n_accepted + 2;
        expect = before;
        for (int i = 0; i < draws; i++)
            rng_next_u64(&expect);
        CHECK(memcmp(&expect, &r, sizeof r) == 0);
        // Same inputs and generator state: same result.
        struct spec_accept_result again;
        struct rng_state replay = before;
        spec_accept_sample(k, d, q, p, V, &replay, &again);
        CHECK(again.n_accepted == res.n_accepted && again.next_token == res.next_token);
        seen_all += res.n_accepted == k;
        seen_reject += res.n_accepted < k;
    }
    CHECK(seen_all > 0 && seen_reject > 0);
}

TEST(invalid_inputs) {
    struct rng_state r;
    rng_seed(&r, 6);
    const float p[2 * 3] = {0.2f, 0.3f, 0.5f, 0.2f, 0.3f, 0.5f};
    const int32_t bad[1] = {3}, neg[1] = {-1}, good[1] = {1};
    struct spec_accept_result res;
    CHECK_EQ_INT(spec_accept_sample(1, bad, NULL, p, 3, &r, &res), SPECD_ERR_INVALID);
    CHECK_EQ_INT(spec_accept_sample(1, neg, NULL, p, 3, &r, &res), SPECD_ERR_INVALID);
    CHECK_EQ_INT(spec_accept_sample(-1, good, NULL, p, 3, &r, &res), SPECD_ERR_INVALID);
    CHECK_EQ_INT(spec_accept_sample(1, NULL, NULL, p, 3, &r, &res), SPECD_ERR_INVALID);
    CHECK_EQ_INT(spec_accept_sample(1, good, NULL, NULL, 3, &r, &res), SPECD_ERR_INVALID);
    CHECK_EQ_INT(spec_accept_sample(1, good, NULL, p, 0, &r, &res), SPECD_ERR_INVALID);
    CHECK_EQ_INT(spec_accept_greedy(1, bad, p, 3, &res), SPECD_ERR_INVALID);
    CHECK_EQ_INT(spec_accept_greedy(-1, good, p, 3, &res), SPECD_ERR_INVALID);
    const float zero[2 * 3] = {0, 0, 0, 0, 0, 0};
    CHECK_EQ_INT(spec_accept_sample(0, NULL, NULL, zero, 3, &r, &res), SPECD_ERR_INVALID);
    CHECK_EQ_INT(spec_accept_sample(0, NULL, NULL, p, 3, &r, &res), 0);
    CHECK_EQ_INT(res.n_accepted, 0);
}

// ---- greedy -----------------------------------------------------------------------------------

TEST(greedy_hand_cases) {
    // Target argmax per row: 2, 0, 1 (row 1 has a tie between 0 and 3: the lowest id wins).
    const float l[3 * 4] = {0, 1, 5, 2, 9, 1, 1, 9, 0, 3, -1, 2};
    struct spec_accept_result res;
    const int32_t all[2] = {2, 0}, second[2] = {2, 3}, none[2] = {1, 0};
    REQUIRE(spec_accept_greedy(2, all, l, 4, &res) == 0);
    CHECK(res.n_accepted == 2 && res.next_token == 1);
    REQUIRE(spec_accept_greedy(2, second, l, 4, &res) == 0);
    CHECK(res.n_accepted == 1 && res.next_token == 0);
    REQUIRE(spec_accept_greedy(2, none, l, 4, &res) == 0);
    CHECK(res.n_accepted == 0 && res.next_token == 2);
    REQUIRE(spec_accept_greedy(0, NULL, l, 4, &res) == 0);
    CHECK(res.n_accepted == 0 && res.next_token == 2);
}

// Greedy speculation must emit exactly the tokens of plain greedy decoding, whatever the drafts.
// The sampled rule on one-hot (temperature 0) target rows must agree with the greedy rule.
TEST(greedy_matches_plain_decoding) {
    const int V = 8, n_out = 8;
    struct toy p = {V, 555, 1.5, 0.2}, noise = {V, 556, 2.0, 0.2};
    sampler *smp = sampler_new(V);
    REQUIRE(smp);
    struct sampler_params greedy = sampler_default_params();
    struct rng_state r;
    rng_seed(&r, 8);
    int32_t plain[MAX_CTX];
    for (int i = 0; i < n_out; i++) {
        float row[MAX_V];
        target_dist(&p, plain, i, row);
        plain[i] = sampler_argmax(row, V);
    }
    int mismatches = 0, disagreements = 0;
    for (int rep = 0; rep < 300; rep++) {
        int k = 1 + rep % MAX_K, len = 0;
        int32_t ctx[MAX_CTX + MAX_K + 1];
        while (len < n_out) {
            float q[MAX_K * MAX_V], logits[(MAX_K + 1) * MAX_V], onehot[(MAX_K + 1) * MAX_V];
            int32_t *d = ctx + len;
            for (int i = 0; i < k; i++) {
                draft_dist(&p, &noise, 0.5, ctx, len + i, q + i * V);
                d[i] = sampler_sample(q + i * V, V, &r);
            }
            for (int i = 0; i <= k; i++) {
                target_dist(&p, ctx, len + i, logits + i * V);
                REQUIRE(sampler_probs(smp, &greedy, logits + i * V, V, onehot + i * V) == 0);
            }
            struct spec_accept_result g, s;
            REQUIRE(spec_accept_greedy(k, d, logits, V, &g) == 0);
            REQUIRE(spec_accept_sample(k, d, q, onehot, V, &r, &s) == 0);
            disagreements += g.n_accepted != s.n_accepted || g.next_token != s.next_token;
            len += g.n_accepted;
            ctx[len++] = g.next_token;
        }
        for (int i = 0; i < n_out; i++)
            mismatches += ctx[i] != plain[i];
    }
    CHECK_EQ_INT(mismatches, 0);
    CHECK_EQ_INT(disagreements, 0);
    sampler_free(smp);
}

int main(int argc, char **argv) {
    TEST_MAIN_BEGIN(argc, argv);
    TEST_RUN(chi2_reference_values);
    TEST_RUN(lossless_first_and_joint_distribution);
    TEST_RUN(wrong_rules_are_rejected);
    TEST_RUN(identical_distributions_accept_everything);
    TEST_RUN(zero_target_probability_is_never_accepted);
    TEST_RUN(rng_draw_order);
    TEST_RUN(invalid_inputs);
    TEST_RUN(greedy_hand_cases);
    TEST_RUN(greedy_matches_plain_decoding);
    return TEST_MAIN_END();
}
