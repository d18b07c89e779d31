// Tests of worker/engine/rng, sampler and stop.
//
// References: published xoshiro256** and splitmix64 output vectors; a straightforward
// double-precision implementation of top-k / temperature / top-p written here (full sort); Pearson
// chi-square tests with p-values from a regularized incomplete gamma function written here (itself
// checked against closed forms and a table value). Every test uses fixed seeds, so the outcome is
// deterministic; the significance threshold for "the sampler follows probs" is p-value >= 1e-4.
#include <stdint.h>
#include <time.h>

#include "shared/status.h"
#include "tests/support/stats.h"
#include "tests/test.h"
#include "worker/engine/rng.h"
#include "worker/engine/sampler.h"
#include "worker/engine/stop.h"

// ---- chi-square -------------------------------------------------------------------------------

static double chi2_sf(double stat, int df) {
    return stats_gamma_q(0.5 * df, 0.5 * stat);
}

TEST(chi2_reference_values) {
    // df = 2: survival exp(-x/2); df = 1: erfc(sqrt(x/2)); table: chi2(10) upper 5% = 18.307038.
    for (double x = 0.1; x < 60.0; x *= 1.7) {
        CHECK_NEAR(chi2_sf(x, 2), exp(-x / 2), 1e-12 + 1e-9 * exp(-x / 2));
        CHECK_NEAR(chi2_sf(x, 1), erfc(sqrt(x / 2)), 1e-12 + 1e-9 * erfc(sqrt(x / 2)));
    }
    CHECK_NEAR(chi2_sf(18.307038, 10), 0.05, 1e-6);
    CHECK_NEAR(chi2_sf(3.841459, 1), 0.05, 1e-6);
    CHECK_NEAR(chi2_sf(124.342113, 100), 0.05, 1e-5); // table: chi2(100) upper 5%
}

// ---- rng --------------------------------------------------------------------------------------

TEST(rng_published_vectors) {
    // xoshiro256** from state {1, 2, 3, 4} (reference implementation outputs).
    static const uint64_t want[10] = {11520ULL,
                                      0ULL,
                                      1509978240ULL,
                                      1215971899390074240ULL,
                                      1216172134540287360ULL,
                                      607988272756665600ULL,
                                      16172922978634559625ULL,
                                      8476171486693032832ULL,
                                      10595114339597558777ULL,
                                      2904607092377533576ULL};
    struct rng_state r = {{1, 2, 3, 4}};
    for (int i = 0; i < 10; i++)
        CHECK(rng_next_u64(&r) == want[i]);
    // splitmix64 from 0, and rng_seed(0) is four splitmix64 outputs.
    static const uint64_t sm[4] = {0xE220A8397B1DCDAFULL, 0x6E789E6AA1B965F4ULL,
                                   0x06C45D188009454FULL, 0xF88BB8A8724C81ECULL};
    uint64_t x = 0;
    for (int i = 0; i < 4; i++)
        CHECK(rng_splitmix64(&x) == sm[i]);
    rng_seed(&r, 0);
    for (int i = 0; i < 4; i++)
        CHECK(r.s[i] == sm[i]);
}

TEST(rng_uniform_range_and_determinism) {
    struct rng_state a, b, c;
    rng_seed(&a, 42);
    rng_seed(&b, 42);
    rng_seed(&c, 43);
    int differ = 0;
    long bins[16] = {0};
    double mean = 0.0;
    const long n = 400000;
    for (long i = 0; i < n; i++) {
        double u = rng_uniform(&a), v = rng_uniform(&b), w = rng_uniform(&c);
        CHECK(u == v);
        differ += u != w;
        if (!(u >= 0.0 && u < 1.0))
            TEST_FAIL_AT(__FILE__, __LINE__, "uniform out of [0,1): %.17g", u);
        double scaled = u * 0x1.0p53;
        if (scaled != floor(scaled))
            TEST_FAIL_AT(__FILE__, __LINE__, "uniform %.17g is not a multiple of 2^-53", u);
        bins[(int)(u * 16)]++;
        mean += u;
    }
    CHECK(differ > n - 10);
    CHECK_NEAR(mean / n, 0.5, 5 * sqrt(1.0 / 12 / n));
    double prob[16];
    for (int i = 0; i < 16; i++)
        prob[i] = 1.0 / 16;
    long impossible;
    double pv = stats_chi2_pvalue(bins, prob, 16, n, &impossible);
    fprintf(stderr, "  uniform 16 bins: p-value %.4f\n", pv);
    CHECK(pv >= 1e-4);
}

// ---- argmax -----------------------------------------------------------------------------------

TEST(argmax_ties_and_specials) {
    const float a[] = {1, 3, 3, 2};
    CHECK_EQ_INT(sampler_argmax(a, 4), 1);
    const float b[] = {5, 5, 5};
    CHECK_EQ_INT(sampler_argmax(b, 3), 0);
    const float c[] = {-INFINITY, -INFINITY, -1e30f, -INFINITY};
    CHECK_EQ_INT(sampler_argmax(c, 4), 2);
    const float d[] = {NAN, 1, NAN, 4, 4};
    CHECK_EQ_INT(sampler_argmax(d, 5), 3);
    const float e[] = {-2, -1, INFINITY, INFINITY};
    CHECK_EQ_INT(sampler_argmax(e, 4), 2);
    CHECK_EQ_INT(sampler_argmax(a, 1), 0);
    CHECK_EQ_INT(sampler_argmax(a, 0), -1);
    CHECK_EQ_INT(sampler_argmax(NULL, 3), -1);
}

// ---- sampler_probs against a double-precision reference ----------------------------------------

struct ranked {
    double logit;
    int id;
};

static int ranked_cmp(const void *pa, const void *pb) {
    const struct ranked *a = pa, *b = pb;
    if (a->logit != b->logit)
        return a->logit > b->logit ? -1 : 1;
    return a->id - b->id;
}

// Reference: full sort by (logit desc, id asc); top-k; softmax(logit / T) in double; top-p keeps
// the smallest prefix with cumulative probability >= top_p. `force_keep` > 0 overrides the top-p
// count (to evaluate the neighbours of an ambiguous boundary). Writes out[n]; returns the kept
// count; *ambiguous is set when a cumulative sum next to the boundary is within 1e-5 of top_p.
static int ref_probs(const float *logits, int n, float temp, int top_k, float top_p, int force_keep,
                     double *out, int *ambiguous) {
    struct ranked *r = malloc(sizeof *r * (size_t)n);
    for (int i = 0; i < n; i++)
        r[i] = (struct ranked){logits[i], i};
    qsort(r, (size_t)n, sizeof *r, ranked_cmp);
    int kk = (top_k > 0 && top_k < n) ? top_k : n;
    double *w = calloc((size_t)n, sizeof *w), z = 0.0;
    for (int j = 0; j < kk; j++) {
        w[j] = exp((r[j].logit - r[0].logit) / temp);
        z += w[j];
    }
    int keep = kk;
    *ambiguous = 0;
    if (top_p < 1.0f) {
        keep = 1;
        double cum = w[0] / z;
        while (cum < (double)top_p && keep < kk)
            cum += w[keep++] / z;
        double before = cum - w[keep - 1] / z;
        if (fabs(cum - top_p) < 1e-5 || (keep > 1 && fabs(before - top_p) < 1e-5))
            *ambiguous = 1;
    }
    if (force_keep > 0)
        keep = force_keep;
    double zk = 0.0;
    for (int j = 0; j < keep; j++)
        zk += w[j];
    for (int i = 0; i < n; i++)
        out[i] = 0.0;
    for (int j = 0; j < keep; j++)
        out[r[j].id] = w[j] / zk;
    free(r);
    free(w);
    return keep;
}

static int probs_match(const float *got, const double *want, int n) {
    for (int i = 0; i < n; i++) {
        if ((got[i] == 0.0f) != (want[i] == 0.0))
            return 0;
        if (fabs(got[i] - want[i]) > 1e-6 + 2e-5 * want[i])
            return 0;
    }
    return 1;
}

// sampler_probs(), returning the number of tokens with probability > 0 on success (and checking
// that success is reported as SPECD_OK), or the error.
static int probs_kept(sampler *s, const struct sampler_params *sp, const float *logits, int n,
                      float *probs) {
    int rc = sampler_probs(s, sp, logits, n, probs);
    if (rc != SPECD_OK)
        return rc < 0 ? rc : -1000;
    int kept = 0;
    for (int i = 0; i < n; i++)
        kept += probs[i] > 0.0f;
    return kept;
}

// Compares sampler_probs with the reference; returns 1 when they agree (allowing the neighbour
// count at an ambiguous top-p boundary) and counts ambiguous cases.
static int check_against_ref(sampler *s, const struct sampler_params *sp, const float *logits,
                             int n, int *n_ambiguous) {
    float *got = malloc(sizeof *got * (size_t)n);
    double *want = malloc(sizeof *want * (size_t)n);
    int amb, kept = probs_kept(s, sp, logits, n, got);
    int keep = ref_probs(logits, n, sp->temperature, sp->top_k, sp->top_p, 0, want, &amb);
    int nonzero = 0;
    for (int i = 0; i < n; i++)
        nonzero += want[i] > 0.0;
    int ok = kept == nonzero && probs_match(got, want, n);
    if (!ok && amb) {
        for (int alt = keep - 1; alt <= keep + 1 && !ok; alt += 2) {
            if (alt < 1 || alt > n)
                continue;
            ref_probs(logits, n, sp->temperature, sp->top_k, sp->top_p, alt, want, &amb);
            ok = probs_match(got, want, n);
        }
        *n_ambiguous += ok;
    }
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += got[i];
    ok = ok && fabs(sum - 1.0) < 1e-5;
    if (!ok)
        fprintf(stderr, "  mismatch: n=%d T=%g top_k=%d top_p=%.9g kept %d (reference %d)\n", n,
                sp->temperature, sp->top_k, sp->top_p, kept, keep);
    free(got);
    free(want);
    return ok;
}

// Logit patterns that exercise selection: random, heavy ties, sorted, reversed, masked tokens.
static void make_logits(struct rng_state *r, int pattern, int n, float *l) {
    float scale = 0.5f + 4.0f * (float)rng_uniform(r);
    for (int i = 0; i < n; i++) {
        float u = (float)rng_uniform(r) - 0.5f;
        switch (pattern) {
        case 0:
            l[i] = scale * u;
            break;
        case 1:
            l[i] = floorf(6.0f * u);
            break; // few distinct values
        case 2:
            l[i] = scale * (float)i / (float)n;
            break; // ascending
        case 3:
            l[i] = -scale * (float)i / (float)n;
            break; // descending
        default:
            l[i] = u < -0.2f ? -INFINITY : scale * u;
            break;
        }
    }
    if (pattern == 4)
        l[rng_next_u64(r) % (uint64_t)n] = 1.0f; // at least one finite logit
}

TEST(probs_match_reference) {
    static const int sizes[] = {1, 2, 3, 5, 17, 64, 257, 1000, 4099};
    sampler *s = sampler_new(5000);
    REQUIRE(s);
    float *l = malloc(sizeof *l * 5000);
    struct rng_state r;
    rng_seed(&r, 1234);
    int cases = 0, failures = 0, ambiguous = 0;
    for (int rep = 0; rep < 300; rep++) {
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            int n = sizes[si];
            make_logits(&r, rep % 5, n, l);
            struct sampler_params sp = sampler_default_params();
            sp.temperature = 0.3f + 1.7f * (float)rng_uniform(&r);
            int kc = (int)(rng_next_u64(&r) % 5);
            sp.top_k = kc == 0   ? 0
                       : kc == 1 ? 1
                       : kc == 2 ? n + 3
                                 : 1 + (int)(rng_next_u64(&r) % n);
            int pc = (int)(rng_next_u64(&r) % 4);
            sp.top_p = pc == 0 ? 1.0f : 0.1f + 0.9f * (float)rng_uniform(&r);
            failures += !check_against_ref(s, &sp, l, n, &ambiguous);
            cases++;
        }
    }
    fprintf(stderr, "  %d cases, %d ambiguous top-p boundaries accepted\n", cases, ambiguous);
    CHECK_EQ_INT(failures, 0);
    CHECK(ambiguous < cases / 100);
    free(l);
    sampler_free(s);
}

TEST(probs_hand_computed) {
    sampler *s = sampler_new(8);
    REQUIRE(s);
    const float l[4] = {logf(1), logf(2), logf(3), logf(4)};
    float p[4];
    struct sampler_params sp = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f};
    CHECK_EQ_INT(probs_kept(s, &sp, l, 4, p), 4);
    for (int i = 0; i < 4; i++)
        CHECK_NEAR(p[i], (i + 1) / 10.0, 1e-6);
    sp.top_p = 0.5f; // sorted .4 .3 .2 .1: .4 < .5 <= .7 -> keep {3, 2}
    CHECK_EQ_INT(probs_kept(s, &sp, l, 4, p), 2);
    CHECK(p[0] == 0.0f && p[1] == 0.0f);
    CHECK_NEAR(p[3], 4.0 / 7, 1e-6);
    CHECK_NEAR(p[2], 3.0 / 7, 1e-6);
    sp.top_p = 0.4f; // .4 >= .4 exactly in real numbers: the float boundary may go either way
    int kept = probs_kept(s, &sp, l, 4, p);
    CHECK(kept == 1 || kept == 2);
    sp.top_p = 1.0f;
    sp.top_k = 3;
    CHECK_EQ_INT(probs_kept(s, &sp, l, 4, p), 3);
    CHECK(p[0] == 0.0f);
    CHECK_NEAR(p[1], 2.0 / 9, 1e-6);
    CHECK_NEAR(p[3], 4.0 / 9, 1e-6);
    sp.top_k = 0;
    sp.temperature = 0.5f; // squares: 1 4 9 16 over 30
    probs_kept(s, &sp, l, 4, p);
    CHECK_NEAR(p[0], 1.0 / 30, 1e-6);
    CHECK_NEAR(p[3], 16.0 / 30, 1e-6);
    sp.temperature = 2.0f; // square roots
    probs_kept(s, &sp, l, 4, p);
    double zs = 1 + sqrt(2) + sqrt(3) + 2;
    CHECK_NEAR(p[1], sqrt(2) / zs, 1e-6);
    // Exact top-p boundary: equal logits have weight exactly 1, and "cumulative >= top_p" keeps
    // the prefix that reaches top_p exactly (ids in ascending order among the tie).
    float eq[64], pe[64];
    for (int i = 0; i < 64; i++)
        eq[i] = 1.5f;
    struct sampler_params half = {1.0f, 0, 0.5f, 0};
    CHECK_EQ_INT(probs_kept(s, &half, eq, 4, pe), 2);
    CHECK(pe[0] == 0.5f && pe[1] == 0.5f && pe[2] == 0.0f && pe[3] == 0.0f);
    half.top_p = 0.75f;
    CHECK_EQ_INT(probs_kept(s, &half, eq, 4, pe), 3);
    sampler *big = sampler_new(64);
    REQUIRE(big);
    half.top_p = 0.5f; // 40 tokens: the partition path (more than 16 candidates)
    CHECK_EQ_INT(probs_kept(big, &half, eq, 40, pe), 20);
    for (int i = 0; i < 40; i++)
        CHECK(pe[i] == (i < 20 ? 0.05f : 0.0f));
    half.top_p = 17.0f / 64.0f; // exact in float: 17 of 64 tokens
    CHECK_EQ_INT(probs_kept(big, &half, eq, 64, pe), 17);
    sampler_free(big);
    // Greedy, top-k 1 and top-p 0 are one-hot on the argmax (lowest id among ties).
    const float t[5] = {0, 7, 2, 7, -INFINITY};
    struct sampler_params g[3] = {{0.0f, 0, 1.0f, 0}, {1.5f, 1, 1.0f, 0}, {0.8f, 0, 0.0f, 0}};
    for (int c = 0; c < 3; c++) {
        float q[5];
        CHECK_EQ_INT(probs_kept(s, &g[c], t, 5, q), 1);
        for (int i = 0; i < 5; i++)
            CHECK(q[i] == (i == 1 ? 1.0f : 0.0f));
    }
    // top_k 2 among the tie keeps both 7s equally.
    struct sampler_params k2 = {1.0f, 2, 1.0f, 0};
    float q[5];
    CHECK_EQ_INT(probs_kept(s, &k2, t, 5, q), 2);
    CHECK_NEAR(q[1], 0.5, 1e-7);
    CHECK_NEAR(q[3], 0.5, 1e-7);
    sampler_free(s);
}

TEST(probs_invalid_inputs) {
    sampler *s = sampler_new(4);
    REQUIRE(s);
    float p[5];
    struct sampler_params sp = {1.0f, 0, 1.0f, 0};
    const float ok[4] = {0, 1, 2, 3};
    const float nan_l[4] = {0, NAN, 2, 3};
    const float inf_l[4] = {0, INFINITY, 2, 3};
    const float masked[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    CHECK_EQ_INT(sampler_probs(s, &sp, nan_l, 4, p), SPECD_ERR_INVALID);
    CHECK_EQ_INT(sampler_probs(s, &sp, inf_l, 4, p), SPECD_ERR_INVALID);
    CHECK_EQ_INT(sampler_probs(s, &sp, masked, 4, p), SPECD_ERR_INVALID);
    CHECK_EQ_INT(sampler_probs(s, &sp, ok, 5, p), SPECD_ERR_INVALID); // n > n_vocab
    CHECK_EQ_INT(sampler_probs(s, &sp, ok, 0, p), SPECD_ERR_INVALID);
    CHECK_EQ_INT(sampler_probs(NULL, &sp, ok, 4, p), SPECD_ERR_INVALID);
    sp.temperature = NAN;
    CHECK_EQ_INT(sampler_probs(s, &sp, ok, 4, p), SPECD_ERR_INVALID);
    sp.temperature = INFINITY;
    CHECK_EQ_INT(sampler_probs(s, &sp, ok, 4, p), SPECD_ERR_INVALID);
    CHECK(sampler_new(0) == NULL);
    sampler_free(NULL);
    sampler_free(s);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

TEST(probs_large_vocab) {
    const int n = 128256; // Llama 3 vocabulary
    sampler *s = sampler_new(n);
    float *l = malloc(sizeof *l * (size_t)n), *p = malloc(sizeof *p * (size_t)n);
    REQUIRE(s && l && p);
    struct rng_state r;
    rng_seed(&r, 99);
    for (int i = 0; i < n; i++) // a peaked distribution, like a language model's
        l[i] = (float)(3.0 * (rng_uniform(&r) + rng_uniform(&r) + rng_uniform(&r)));
    struct sampler_params cfg[4] = {
        {0.8f, 40, 0.95f, 0}, {1.0f, 0, 0.9f, 0}, {0.7f, 0, 1.0f, 0}, {1.2f, 5000, 0.5f, 0}};
    int ambiguous = 0;
    for (int c = 0; c < 4; c++) {
        CHECK(check_against_ref(s, &cfg[c], l, n, &ambiguous));
        const int reps = 10;
        double t0 = now_ms();
        for (int i = 0; i < reps; i++)
            sampler_probs(s, &cfg[c], l, n, p);
        double ms = (now_ms() - t0) / reps;
        fprintf(stderr, "  n=%d T=%.1f top_k=%d top_p=%.2f: %.3f ms per call\n", n,
                cfg[c].temperature, cfg[c].top_k, cfg[c].top_p, ms);
        CHECK(ms < 100.0); // catches quadratic behaviour, not a benchmark
    }
    free(l);
    free(p);
    sampler_free(s);
}

// ---- sampling ---------------------------------------------------------------------------------

TEST(sample_frequencies_match_probs) {
    const int n = 12;
    const long draws = 200000;
    sampler *s = sampler_new(n);
    REQUIRE(s);
    float l[12], p[12];
    struct rng_state r;
    rng_seed(&r, 7);
    make_logits(&r, 0, n, l);
    struct sampler_params sp = {0.9f, 9, 0.97f, 0};
    REQUIRE(probs_kept(s, &sp, l, n, p) >= 2);
    long obs[12] = {0}, obs_w[12] = {0};
    float scaled[12];
    double prob[12], wrong[12];
    for (int i = 0; i < n; i++) {
        prob[i] = p[i];
        scaled[i] = 3.7f * p[i]; // unnormalised weights are accepted
    }
    for (long i = 0; i < draws; i++) {
        int t = sampler_sample(p, n, &r);
        REQUIRE(t >= 0 && t < n);
        obs[t]++;
        obs_w[sampler_sample(scaled, n, &r)]++;
    }
    long impossible, impossible_w;
    double pv = stats_chi2_pvalue(obs, prob, n, draws, &impossible);
    double pv_w = stats_chi2_pvalue(obs_w, prob, n, draws, &impossible_w);
    fprintf(stderr, "  chi-square p-values: %.4f (probs), %.4f (scaled weights)\n", pv, pv_w);
    CHECK(pv >= 1e-4);
    CHECK(pv_w >= 1e-4);
    CHECK_EQ_INT(impossible, 0);
    CHECK_EQ_INT(impossible_w, 0);
    // Power: the same counts against a distribution with 1% of the mass moved between the two
    // most probable tokens must be rejected.
    int a = sampler_argmax(p, n), b = -1;
    for (int i = 0; i < n; i++)
        if (i != a && (b < 0 || p[i] > p[b]))
            b = i;
    for (int i = 0; i < n; i++)
        wrong[i] = prob[i];
    wrong[a] -= 0.01;
    wrong[b] += 0.01;
    double pv_wrong = stats_chi2_pvalue(obs, wrong, n, draws, &impossible);
    fprintf(stderr, "  against a 1%%-shifted distribution: p-value %.3g\n", pv_wrong);
    CHECK(pv_wrong < 1e-4);
    sampler_free(s);
}

TEST(sample_edge_cases) {
    struct rng_state r, r0;
    rng_seed(&r, 5);
    const float one[4] = {0, 0, 2.5f, 0};
    for (int i = 0; i < 100; i++)
        CHECK_EQ_INT(sampler_sample(one, 4, &r), 2);
    const float zero[3] = {0, 0, 0};
    const float neg[3] = {0.5f, -0.1f, 0.6f};
    const float nan_w[3] = {0.5f, NAN, 0.6f};
    r0 = r;
    CHECK_EQ_INT(sampler_sample(zero, 3, &r), SPECD_ERR_INVALID);
    CHECK_EQ_INT(sampler_sample(neg, 3, &r), SPECD_ERR_INVALID);
    CHECK_EQ_INT(sampler_sample(nan_w, 3, &r), SPECD_ERR_INVALID);
    CHECK_EQ_INT(sampler_sample(one, 0, &r), SPECD_ERR_INVALID);
    CHECK(memcmp(&r, &r0, sizeof r) == 0); // not advanced on error
    // Exactly one draw per sample.
    sampler_sample(one, 4, &r);
    rng_next_u64(&r0);
    CHECK(memcmp(&r, &r0, sizeof r) == 0);
}

TEST(sample_deterministic_per_seed) {
    const int n = 300;
    sampler *s = sampler_new(n);
    REQUIRE(s);
    float l[300];
    struct rng_state r;
    rng_seed(&r, 11);
    make_logits(&r, 0, n, l);
    struct sampler_params sp = {1.0f, 50, 0.9f, 2024};
    int seq[3][200], same_other = 0;
    for (int run = 0; run < 3; run++) {
        rng_seed(&r, run < 2 ? sp.seed : sp.seed + 1);
        for (int i = 0; i < 200; i++) {
            l[i % n] += 0.01f * (float)(i % 7); // the logits change from step to step
            seq[run][i] = sampler_sample_logits(s, &sp, l, n, &r);
        }
        for (int i = 0; i < 200; i++)
            l[i % n] -= 0.01f * (float)(i % 7);
    }
    for (int i = 0; i < 200; i++) {
        CHECK_EQ_INT(seq[0][i], seq[1][i]);
        same_other += seq[0][i] == seq[2][i];
    }
    CHECK(same_other < 150);
    // Greedy ignores the generator.
    struct sampler_params g = sampler_default_params();
    struct rng_state before = r;
    CHECK_EQ_INT(sampler_sample_logits(s, &g, l, n, &r), sampler_argmax(l, n));
    CHECK(memcmp(&r, &before, sizeof r) == 0);
    sampler_free(s);
}

// ---- stop strings -----------------------------------------------------------------------------

// Feeds pieces and collects everything emitted; returns whether it stopped.
struct stop_run {
    char emitted[512];
    size_t n_emitted;
    int stopped, which;
};

static int feed(stop_matcher *m, struct stop_run *run, const char *piece, size_t *held) {
    struct stop_result res;
    int rc = stop_feed(m, piece, strlen(piece), &res);
    if (rc != 0)
        return rc;
    memcpy(run->emitted + run->n_emitted, res.emit, res.n_emit);
    run->n_emitted += res.n_emit;
    run->emitted[run->n_emitted] = '\0';
    run->stopped = res.stopped;
    run->which = res.which;
    if (held)
        *held = res.n_held;
    return 0;
}

TEST(stop_basic_and_spanning) {
    const char *stops[] = {"</s>"};
    stop_matcher *m = stop_new(stops, 1);
    REQUIRE(m);
    struct stop_run run = {0};
    size_t held;
    feed(m, &run, "Hel", &held);
    CHECK_EQ_STR(run.emitted, "Hel");
    CHECK_EQ_INT(held, 0);
    feed(m, &run, "lo<", &held);
    CHECK_EQ_STR(run.emitted, "Hello");
    CHECK_EQ_INT(held, 1);
    feed(m, &run, "/", &held);
    CHECK_EQ_STR(run.emitted, "Hello");
    CHECK_EQ_INT(held, 2);
    feed(m, &run, "s>tail", &held);
    CHECK(run.stopped);
    CHECK_EQ_INT(run.which, 0);
    CHECK_EQ_STR(run.emitted, "Hello");
    CHECK_EQ_STR(stop_text(m, NULL), "Hello");
    struct stop_result res;
    CHECK_EQ_INT(stop_feed(m, "x", 1, &res), SPECD_ERR_STATE);
    CHECK_EQ_INT(stop_finish(m, &res), SPECD_ERR_STATE);

    // A false start is released once it cannot be a stop string any more.
    stop_reset(m);
    memset(&run, 0, sizeof run);
    feed(m, &run, "a</", &held);
    CHECK_EQ_STR(run.emitted, "a");
    feed(m, &run, "b", &held);
    CHECK_EQ_STR(run.emitted, "a</b");
    CHECK_EQ_INT(held, 0);
    feed(m, &run, "<", &held);
    CHECK_EQ_INT(stop_finish(m, &res), 0);
    CHECK_EQ_INT(res.n_emit, 1);
    CHECK(res.emit[0] == '<' && !res.stopped);
    CHECK_EQ_STR(stop_text(m, NULL), "a</b<");
    stop_free(m);
}

TEST(stop_overlapping_prefixes) {
    const char *stops[] = {"aab"};
    stop_matcher *m = stop_new(stops, 1);
    REQUIRE(m);
    struct stop_run run = {0};
    size_t held;
    const char *pieces[] = {"a", "a", "a", "b"};
    const size_t want_held[] = {1, 2, 2};
    for (int i = 0; i < 3; i++) {
        feed(m, &run, pieces[i], &held);
        CHECK_EQ_INT(held, want_held[i]);
        CHECK(!run.stopped);
    }
    CHECK_EQ_STR(run.emitted, "a");
    feed(m, &run, pieces[3], &held);
    CHECK(run.stopped);
    CHECK_EQ_STR(run.emitted, "a");
    CHECK_EQ_STR(stop_text(m, NULL), "a");
    stop_free(m);
}

TEST(stop_multiple_strings) {
    // The first stop string to complete wins, whatever the piece boundaries.
    const char *stops[] = {"abcd", NULL, "bc", ""};
    stop_matcher *m = stop_new(stops, 4);
    REQUIRE(m);
    struct stop_run run = {0};
    feed(m, &run, "xabcd", NULL);
    CHECK(run.stopped);
    CHECK_EQ_INT(run.which, 2);
    CHECK_EQ_STR(run.emitted, "xa");
    stop_free(m);
    // Same end: the longest wins.
    const char *stops2[] = {"cd", "bcd", "zz"};
    m = stop_new(stops2, 3);
    REQUIRE(m);
    memset(&run, 0, sizeof run);
    feed(m, &run, "ab", NULL);
    feed(m, &run, "cdzz", NULL);
    CHECK(run.stopped);
    CHECK_EQ_INT(run.which, 1);
    CHECK_EQ_STR(run.emitted, "a");
    stop_free(m);
    // No stop strings: nothing held, never stops.
    m = stop_new(NULL, 0);
    REQUIRE(m);
    memset(&run, 0, sizeof run);
    size_t held;
    feed(m, &run, "anything", &held);
    CHECK_EQ_INT(held, 0);
    CHECK_EQ_STR(run.emitted, "anything");
    stop_free(m);
    stop_free(NULL);
    CHECK(stop_new(NULL, 2) == NULL);
    CHECK(stop_new(stops, -1) == NULL);
}

// Brute-force reference over the whole text: the cut of the first completing stop string (smallest
// end, then longest) or -1, and the bytes that must be held at the end of `text[0..len)`.
static long ref_stop_cut(const char *text, size_t len, const char **stops, int n, int *which) {
    for (size_t end = 1; end <= len; end++) {
        long best = -1;
        for (int s = 0; s < n; s++) {
            size_t l = strlen(stops[s]);
            if (l <= end && memcmp(text + end - l, stops[s], l) == 0 &&
                (best < 0 || (long)(end - l) < best)) {
                best = (long)(end - l);
                *which = s;
            }
        }
        if (best >= 0)
            return best;
    }
    return -1;
}

static size_t ref_hold(const char *text, size_t len, const char **stops, int n) {
    for (size_t start = 0; start < len; start++)
        for (int s = 0; s < n; s++)
            if (strlen(stops[s]) > len - start && memcmp(text + start, stops[s], len - start) == 0)
                return len - start;
    return 0;
}

TEST(stop_random_against_reference) {
    struct rng_state r;
    rng_seed(&r, 77);
    int stops_seen = 0;
    for (int rep = 0; rep < 3000; rep++) {
        char sbuf[3][6];
        const char *stops[3];
        int n = 1 + (int)(rng_next_u64(&r) % 3);
        for (int s = 0; s < n; s++) {
            int l = 1 + (int)(rng_next_u64(&r) % 4);
            for (int i = 0; i < l; i++)
                sbuf[s][i] = (char)('a' + rng_next_u64(&r) % 3);
            sbuf[s][l] = '\0';
            stops[s] = sbuf[s];
        }
        char text[64];
        size_t len = 1 + rng_next_u64(&r) % 40;
        for (size_t i = 0; i < len; i++)
            text[i] = (char)('a' + rng_next_u64(&r) % 4); // 'd' never in a stop string
        int which = -1;
        long cut = ref_stop_cut(text, len, stops, n, &which);
        stop_matcher *m = stop_new(stops, n);
        REQUIRE(m);
        char out[64];
        size_t n_out = 0, pos = 0;
        struct stop_result res = {0};
        int ok = 1;
        while (pos < len && !res.stopped) {
            size_t piece = 1 + rng_next_u64(&r) % 5;
            if (piece > len - pos)
                piece = len - pos;
            REQUIRE(stop_feed(m, text + pos, piece, &res) == 0);
            pos += piece;
            memcpy(out + n_out, res.emit, res.n_emit);
            n_out += res.n_emit;
            if (!res.stopped && res.n_held != ref_hold(text, pos, stops, n))
                ok = 0;
            if (cut >= 0 && n_out > (size_t)cut) // a client saw part of a stop string
                ok = 0;
        }
        if (!res.stopped) {
            REQUIRE(stop_finish(m, &res) == 0);
            memcpy(out + n_out, res.emit, res.n_emit);
            n_out += res.n_emit;
        }
        size_t want_len = cut >= 0 ? (size_t)cut : len;
        size_t text_len;
        const char *final_text = stop_text(m, &text_len);
        ok = ok && res.stopped == (cut >= 0) && n_out == want_len &&
             memcmp(out, text, want_len) == 0 && text_len == want_len &&
             memcmp(final_text, text, want_len) == 0 && (cut < 0 || res.which == which);
        if (!ok) {
            TEST_FAIL_AT(__FILE__, __LINE__, "case %d: text %.*s, first stop %s, cut %ld", rep,
                         (int)len, text, stops[0], cut);
            stop_free(m);
            return;
        }
        stops_seen += cut >= 0;
        stop_free(m);
    }
    fprintf(stderr, "  3000 random cases, %d stopped\n", stops_seen);
    CHECK(stops_seen > 500 && stops_seen < 2900);
}

int main(int argc, char **argv) {
    TEST_MAIN_BEGIN(argc, argv);
    TEST_RUN(chi2_reference_values);
    TEST_RUN(rng_published_vectors);
    TEST_RUN(rng_uniform_range_and_determinism);
    TEST_RUN(argmax_ties_and_specials);
    TEST_RUN(probs_match_reference);
    TEST_RUN(probs_hand_computed);
    TEST_RUN(probs_invalid_inputs);
    TEST_RUN(probs_large_vocab);
    TEST_RUN(sample_frequencies_match_probs);
    TEST_RUN(sample_edge_cases);
    TEST_RUN(sample_deterministic_per_seed);
    TEST_RUN(stop_basic_and_spanning);
    TEST_RUN(stop_overlapping_prefixes);
    TEST_RUN(stop_multiple_strings);
    TEST_RUN(stop_random_against_reference);
    return TEST_MAIN_END();
}
