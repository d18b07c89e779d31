// The engine end to end on real and tiny models: plain decoding against llama.cpp, speculation
// that never changes greedy output (draft model and n-gram, depths 1..8, requests joining
// mid-way, chunked prefill, preemption), sampling that keeps the target distribution, and
// finish conditions.
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "shared/status.h"
#include "shared/text.h"
#include "tests/support/refs.h"
#include "tests/support/stats.h"
#include "tests/support/tiny_model.h"
#include "tests/test.h"
#include "worker/engine/backend.h"
#include "worker/engine/engine.h"
#include "worker/engine/tok.h"

#define MAX_GEN 64

// SPECD_TEST_QUICK=1 (set by `make asan`) shrinks the sweeps: fewer prompts and depths.
static int quick(void) {
    const char *q = getenv("SPECD_TEST_QUICK");
    return q && *q && *q != '0';
}

struct prompt_set {
    int32_t **tokens;
    int32_t *n;
    int count;
};

static void prompt_set_free(struct prompt_set *ps) {
    for (int i = 0; i < ps->count; i++)
        free(ps->tokens[i]);
    free(ps->tokens);
    free(ps->n);
}

// Tokenizes every prompt of the given ../shared prompt files (at most `per_file` each,
// truncated to max_len tokens) with the engine's tokenizer.
static int load_prompts(const engine *e, const char *const *files, int n_files, int per_file,
                        int max_len, struct prompt_set *ps) {
    memset(ps, 0, sizeof *ps);
    for (int f = 0; f < n_files; f++) {
        const char *path = test_shared_path(files[f]);
        char **lines = NULL;
        int n = path ? text_read_prompts(path, &lines) : -1;
        if (n < 0)
            return -1;
        for (int i = 0; i < n && i < per_file; i++) {
            ps->tokens = realloc(ps->tokens, sizeof *ps->tokens * (ps->count + 1));
            ps->n = realloc(ps->n, sizeof *ps->n * (ps->count + 1));
            int32_t *t = malloc(sizeof *t * 4096);
            int m =
                tok_encode(engine_tokenizer(e), lines[i], strlen(lines[i]), true, false, t, 4096);
            ps->tokens[ps->count] = t;
            ps->n[ps->count++] = m < max_len ? m : max_len;
        }
        text_free_lines(lines, n);
    }
    return ps->count;
}

struct run_cfg {
    int max_tokens;
    struct sampler_params sp;
    int join_every;     // add one request every this many steps (0: all at once)
    int priority_every; // every n-th request is high priority (0: none)
};

// Runs every prompt through the engine; out[i] receives the generated tokens.
static int run_all(engine *e, const struct prompt_set *ps, const struct run_cfg *cfg,
                   int32_t (*out)[MAX_GEN], int *n_out, uint32_t *preemptions, double *acc_rate) {
    uint64_t *ids = calloc(ps->count, sizeof *ids);
    int added = 0, steps = 0;
    uint64_t drafted = 0, accepted = 0;
    *preemptions = 0;
    while (added < ps->count || engine_has_work(e)) {
        while (added < ps->count && (cfg->join_every == 0 || steps % cfg->join_every == 0)) {
            struct engine_request r = {.prompt = ps->tokens[added],
                                       .n_prompt = ps->n[added],
                                       .max_tokens = cfg->max_tokens,
                                       .sampling = cfg->sp,
                                       .ignore_eos = true};
            r.sampling.seed = cfg->sp.seed + (uint64_t)added;
            if (cfg->priority_every && added % cfg->priority_every == 0)
                r.priority = ENGINE_PRIORITY_HIGH;
            char err[256];
            if (engine_add(e, &r, &ids[added], err, sizeof err) != 0) {
                fprintf(stderr, "engine_add: %s\n", err);
                free(ids);
                return -1;
            }
            added++;
            if (cfg->join_every)
                break;
        }
        struct spec_step_metrics m;
        int rc = engine_step(e, &m);
        if (rc < 0) {
            free(ids);
            return rc;
        }
        *preemptions += m.preemptions;
        steps++;
    }
    for (int i = 0; i < ps->count; i++) {
        struct engine_output o;
        engine_get_output(e, ids[i], &o);
        n_out[i] = o.n_tokens;
        memcpy(out[i], o.tokens, sizeof(int32_t) * (size_t)o.n_tokens);
        drafted += o.drafted;
        accepted += o.accepted;
        engine_release(e, ids[i]);
    }
    if (acc_rate)
        *acc_rate = drafted ? (double)accepted / (double)drafted : 0;
    free(ids);
    return 0;
}

static engine *make_engine(const char *target, const char *draft, enum engine_proposer prop,
                           int depth, void (*tweak)(struct engine_params *)) {
    struct engine_params p = engine_default_params();
    p.target_path = target;
    p.draft_path = draft;
    p.proposer = prop;
    p.depth = depth;
    p.n_threads = 2;
    p.kv_budget_bytes = 64ll << 20;
    if (tweak)
        tweak(&p);
    engine *e = NULL;
    char err[256];
    if (engine_new(&p, &e, err, sizeof err) != 0)
        fprintf(stderr, "engine_new: %s\n", err);
    return e;
}

// ---- llama.cpp agreement through the engine --------------------------------------------------

TEST(engine_plain_greedy_matches_llama_cpp) {
    const char *model = test_shared_path("models/stories260K.gguf");
    const char *refs_path = test_shared_path("refs/stories260K.greedy.jsonl");
    if (!model || !refs_path)
        TEST_SKIP("stories260K model or refs not found in ../shared");
    engine *e = make_engine(model, NULL, ENGINE_PROPOSER_NONE, 0, NULL);
    REQUIRE(e);
    struct ref_case *cases = NULL;
    int n = refs_load(refs_path, &cases);
    REQUIRE(n > 0);
    struct prompt_set ps = {calloc(n, sizeof(int32_t *)), calloc(n, sizeof(int32_t)), n};
    for (int i = 0; i < n; i++) {
        ps.tokens[i] = malloc(sizeof(int32_t) * cases[i].n_prompt);
        memcpy(ps.tokens[i], cases[i].prompt_tokens, sizeof(int32_t) * cases[i].n_prompt);
        ps.n[i] = cases[i].n_prompt;
        // Our tokenizer reproduces llama.cpp's prompt ids.
        int32_t mine[512];
        int m = tok_encode(engine_tokenizer(e), cases[i].prompt, strlen(cases[i].prompt), true,
                           false, mine, 512);
        CHECK_EQ_INT(m, cases[i].n_prompt);
        CHECK(m == cases[i].n_prompt && !memcmp(mine, cases[i].prompt_tokens, sizeof(int32_t) * m));
    }
    static int32_t out[64][MAX_GEN];
    int n_out[64];
    uint32_t pre;
    struct run_cfg cfg = {.max_tokens = 32, .sp = sampler_default_params()};
    REQUIRE(run_all(e, &ps, &cfg, out, n_out, &pre, NULL) == 0);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 32; j++)
            if (out[i][j] != cases[i].tokens[j]) {
                TEST_FAIL_AT(__FILE__, __LINE__, "case %d token %d: %d vs llama.cpp %d", i, j,
                             out[i][j], cases[i].tokens[j]);
                break;
            }
    prompt_set_free(&ps);
    refs_free(cases, n);
    engine_free(e);
}

// ---- lossless greedy speculation --------------------------------------------------------------

static const char *all_prompt_files[] = {"models/prompts-prose.txt", "models/prompts-code.txt",
                                         "models/prompts-tech.txt", "models/prompts-ood-german.txt",
                                         "models/prompts-ood-c.txt"};

static int32_t ref_out[256][MAX_GEN];
static int ref_n[256];
static int32_t spec_out[256][MAX_GEN];
static int spec_n[256];

static int compare_outputs(const struct prompt_set *ps, const char *what) {
    int bad = 0;
    for (int i = 0; i < ps->count; i++)
        if (ref_n[i] != spec_n[i] || memcmp(ref_out[i], spec_out[i], sizeof(int32_t) * ref_n[i])) {
            if (bad++ < 3)
                TEST_FAIL_AT(__FILE__, __LINE__, "%s: prompt %d differs from plain decoding", what,
                             i);
        }
    return bad;
}

static void small_batches(struct engine_params *p) {
    p->max_num_batched_tokens = 40; // long prompts are prefilled in chunks
    p->max_num_seqs = 24;
}

TEST(spec_greedy_equals_plain_decoding_all_prompts) {
    const char *target = test_shared_path("models/target-q8_0.gguf");
    const char *draft_rel = "models/draft-q8_0.gguf";
    if (!target || !test_shared_path(draft_rel))
        TEST_SKIP("target/draft pair not found in ../shared/models");
    char draft[4096];
    snprintf(draft, sizeof draft, "%s", test_shared_path(draft_rel));
    char tpath[4096];
    snprintf(tpath, sizeof tpath, "%s", target);
    engine *plain = make_engine(tpath, NULL, ENGINE_PROPOSER_NONE, 0, NULL);
    REQUIRE(plain);
    struct prompt_set ps;
    REQUIRE(load_prompts(plain, all_prompt_files, 5, quick() ? 3 : 1000, 48, &ps) > 0);
    struct run_cfg cfg = {.max_tokens = 16, .sp = sampler_default_params()};
    uint32_t pre;
    REQUIRE(run_all(plain, &ps, &cfg, ref_out, ref_n, &pre, NULL) == 0);
    engine_free(plain);
    for (int depth = 1; depth <= 8; depth += quick() ? 3 : 1) {
        for (int prop = 0; prop < 2; prop++) {
            engine *e = make_engine(tpath, prop == 0 ? draft : NULL,
                                    prop == 0 ? ENGINE_PROPOSER_DRAFT : ENGINE_PROPOSER_NGRAM,
                                    depth, small_batches);
            REQUIRE(e);
            double acc = 0;
            REQUIRE(run_all(e, &ps, &cfg, spec_out, spec_n, &pre, &acc) == 0);
            char what[64];
            snprintf(what, sizeof what, "%s depth %d", prop == 0 ? "draft" : "ngram", depth);
            compare_outputs(&ps, what);
            fprintf(stderr, "  %s: %d prompts equal to plain decoding, acceptance %.2f\n", what,
                    ps.count, acc);
            if (prop == 0)
                CHECK(acc > 0.3); // the draft really is speculating
            engine_free(e);
        }
    }
    prompt_set_free(&ps);
}

static void tiny_pool(struct engine_params *p) {
    p->kv_blocks = 14; // 14 blocks x 16 tokens for 12 sequences of up to ~80 tokens
    p->max_num_batched_tokens = 24;
    p->max_num_seqs = 12;
}

TEST(spec_lossless_with_joins_chunks_and_preemption) {
    const char *t = test_shared_path("models/target-q8_0.gguf");
    if (!t || !test_shared_path("models/draft-q8_0.gguf"))
        TEST_SKIP("target/draft pair not found in ../shared/models");
    char target[4096], draft[4096];
    snprintf(target, sizeof target, "%s", t);
    snprintf(draft, sizeof draft, "%s", test_shared_path("models/draft-q8_0.gguf"));
    engine *plain = make_engine(target, NULL, ENGINE_PROPOSER_NONE, 0, NULL);
    REQUIRE(plain);
    struct prompt_set ps;
    const char *files[] = {"models/prompts-code.txt"};
    REQUIRE(load_prompts(plain, files, 1, 12, 60, &ps) > 0);
    struct run_cfg cfg = {.max_tokens = 40, .sp = sampler_default_params()};
    uint32_t pre = 0;
    REQUIRE(run_all(plain, &ps, &cfg, ref_out, ref_n, &pre, NULL) == 0);
    engine_free(plain);
    engine *e = make_engine(target, draft, ENGINE_PROPOSER_DRAFT, 4, tiny_pool);
    REQUIRE(e);
    cfg.join_every = 3;
    cfg.priority_every = 4;
    REQUIRE(run_all(e, &ps, &cfg, spec_out, spec_n, &pre, NULL) == 0);
    compare_outputs(&ps, "draft depth 4, tiny pool");
    fprintf(stderr, "  preemptions: %u\n", pre);
    CHECK(pre > 0);
    engine_free(e);
    prompt_set_free(&ps);
}

// ---- sampling ----------------------------------------------------------------------------------

TEST(sampling_same_seed_same_output) {
    const char *model = test_shared_path("models/stories260K.gguf");
    if (!model)
        TEST_SKIP("stories260K.gguf not found");
    engine *e = make_engine(model, NULL, ENGINE_PROPOSER_NGRAM, 3, NULL);
    REQUIRE(e);
    int32_t prompt[] = {1, 403, 407, 261, 378};
    struct prompt_set ps = {calloc(3, sizeof(int32_t *)), calloc(3, sizeof(int32_t)), 3};
    for (int i = 0; i < 3; i++) {
        ps.tokens[i] = malloc(sizeof prompt);
        memcpy(ps.tokens[i], prompt, sizeof prompt);
        ps.n[i] = 5;
    }
    struct run_cfg cfg = {.max_tokens = 40,
                          .sp = {.temperature = 0.9f, .top_k = 40, .top_p = 0.95f, .seed = 7}};
    static int32_t a[3][MAX_GEN], b[3][MAX_GEN];
    int na[3], nb[3];
    uint32_t pre;
    REQUIRE(run_all(e, &ps, &cfg, a, na, &pre, NULL) == 0);
    REQUIRE(run_all(e, &ps, &cfg, b, nb, &pre, NULL) == 0);
    for (int i = 0; i < 3; i++)
        CHECK(na[i] == nb[i] && !memcmp(a[i], b[i], sizeof(int32_t) * na[i]));
    // Requests i differ in seed (seed + i): their outputs differ.
    CHECK(memcmp(a[0], a[1], sizeof(int32_t) * 40) != 0);
    prompt_set_free(&ps);
    engine_free(e);
}

// Exact distribution of the first three generated tokens of the tiny target, computed with the
// backend directly: p(t1) p(t2 | t1) p(t3 | t1 t2).
static int exact_three_token_dist(const char *path, const int32_t *prompt, int n_prompt,
                                  const struct sampler_params *sp, double *joint, int v) {
    llama_model *m = NULL;
    char err[256];
    if (llama_model_load(path, &m, err, sizeof err))
        return -1;
    struct backend_params bp = {.n_blocks = 8, .block_size = 16, .n_threads = 1};
    backend *be = NULL;
    backend_cpu_new(m, &bp, &be, err, sizeof err);
    sampler *smp = sampler_new(v);
    int32_t table[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    float logits[64], p1[64], p2[64], p3[64];
    struct backend_seq s = {n_prompt, 0, 8, table};
    int32_t last = n_prompt - 1, row = 0;
    struct backend_batch b = {1, &s, n_prompt, prompt, 1, &last};
    int rc = backend_forward(be, &b, logits);
    sampler_probs(smp, sp, logits, v, p1);
    for (int t1 = 0; t1 < v && !rc; t1++) {
        struct backend_seq s1 = {1, n_prompt, 8, table};
        int32_t tok1 = t1;
        struct backend_batch b1 = {1, &s1, 1, &tok1, 1, &row};
        rc = backend_forward(be, &b1, logits);
        sampler_probs(smp, sp, logits, v, p2);
        for (int t2 = 0; t2 < v && !rc; t2++) {
            struct backend_seq s2 = {1, n_prompt + 1, 8, table};
            int32_t tok2 = t2;
            struct backend_batch b2 = {1, &s2, 1, &tok2, 1, &row};
            rc = backend_forward(be, &b2, logits);
            sampler_probs(smp, sp, logits, v, p3);
            for (int t3 = 0; t3 < v; t3++)
                joint[(t1 * v + t2) * v + t3] = (double)p1[t1] * p2[t2] * p3[t3];
        }
    }
    sampler_free(smp);
    backend_free(be);
    llama_model_free(m);
    return rc;
}

// Runs n_runs requests of max_tokens 4 (the first token comes from the prompt pass, the next
// ones from one speculative step of depth 2) and counts the first three tokens.
static double sample_three_tokens(engine *e, const int32_t *prompt, int n_prompt,
                                  const struct sampler_params *sp, int n_runs, long *counts,
                                  int v) {
    struct prompt_set ps = {calloc(64, sizeof(int32_t *)), calloc(64, sizeof(int32_t)), 64};
    for (int i = 0; i < 64; i++) {
        ps.tokens[i] = malloc(sizeof(int32_t) * n_prompt);
        memcpy(ps.tokens[i], prompt, sizeof(int32_t) * n_prompt);
        ps.n[i] = n_prompt;
    }
    static int32_t out[64][MAX_GEN];
    int n_out[64];
    uint32_t pre;
    double acc = 0, acc_sum = 0;
    struct run_cfg cfg = {.max_tokens = 4, .sp = *sp};
    for (int r = 0; r < n_runs; r += 64) {
        cfg.sp.seed = 1000003ull * (uint64_t)r + 17;
        run_all(e, &ps, &cfg, out, n_out, &pre, &acc);
        acc_sum += acc;
        for (int i = 0; i < 64; i++)
            if (n_out[i] >= 3)
                counts[(out[i][0] * v + out[i][1]) * v + out[i][2]]++;
    }
    prompt_set_free(&ps);
    return acc_sum / (n_runs / 64);
}

// Speculative sampling with a (deliberately different) draft model, and with n-gram drafts,
// leaves the distribution of emitted tokens equal to the target's: chi-square over the joint law
// of the first three tokens (the second and third come out of acceptance, rejection and bonus
// draws), at significance 1e-4.
TEST(spec_sampling_keeps_target_distribution) {
    enum { V = 6 };
    const int RUNS = quick() ? 6400 : 25600;
    char tpath[] = "/tmp/specd-tiny-target-XXXXXX", dpath[] = "/tmp/specd-tiny-draft-XXXXXX";
    close(mkstemp(tpath));
    close(mkstemp(dpath));
    struct tiny_model_params tp = tiny_model_default_params();
    tp.n_vocab = V;
    tp.scale = 0.6f;
    tp.seed = 11;
    REQUIRE(tiny_model_write(tpath, &tp) == 0);
    tp.seed = 12; // a different model: q differs from p
    tp.n_layer = 1;
    REQUIRE(tiny_model_write(dpath, &tp) == 0);
    const int32_t prompt[] = {1, 5, 3, 4, 4};
    struct sampler_params sps[2] = {{.temperature = 1.0f, .top_k = 0, .top_p = 1.0f},
                                    {.temperature = 0.7f, .top_k = 5, .top_p = 0.9f}};
    for (int c = 0; c < 2; c++) {
        double joint[V * V * V];
        REQUIRE(exact_three_token_dist(tpath, prompt, 5, &sps[c], joint, V) == 0);
        for (int prop = 0; prop < 3; prop++) {
            engine *e = make_engine(tpath, prop == 1 ? dpath : NULL, (enum engine_proposer)prop,
                                    prop ? 3 : 0, NULL);
            REQUIRE(e);
            long counts[V * V * V], impossible = 0;
            memset(counts, 0, sizeof counts);
            double acc = sample_three_tokens(e, prompt, 5, &sps[c], RUNS, counts, V);
            double pv = stats_chi2_pvalue(counts, joint, V * V * V, RUNS, &impossible);
            fprintf(stderr,
                    "  sampling %d proposer %d: acceptance %.2f, chi-square p-value %.4g, "
                    "impossible %ld\n",
                    c, prop, acc, pv, impossible);
            CHECK(pv > 1e-4); // tests/unit/test_spec_accept.c shows this test rejects wrong rules
            CHECK_EQ_INT(impossible, 0);
            if (prop > 0)
                CHECK(acc > 0.05); // drafts were really proposed and judged
            engine_free(e);
        }
    }
    unlink(tpath);
    unlink(dpath);
}

// ---- finish conditions and control -----------------------------------------------------------

TEST(stop_strings_eos_and_length) {
    const char *model = test_shared_path("models/stories260K.gguf");
    if (!model)
        TEST_SKIP("stories260K.gguf not found");
    engine *e = make_engine(model, NULL, ENGINE_PROPOSER_NGRAM, 4, NULL);
    REQUIRE(e);
    int32_t prompt[] = {1, 403, 407, 261, 378}; // "Once upon a time"
    const char *stops[] = {"Lily"};
    struct engine_request r = {.prompt = prompt,
                               .n_prompt = 5,
                               .max_tokens = 60,
                               .sampling = sampler_default_params(),
                               .stop = stops,
                               .n_stop = 1};
    uint64_t id1, id2;
    char err[128];
    REQUIRE(engine_add(e, &r, &id1, err, sizeof err) == 0);
    r.n_stop = 0;
    r.max_tokens = 7;
    REQUIRE(engine_add(e, &r, &id2, err, sizeof err) == 0);
    while (engine_step(e, NULL) == 0)
        ;
    struct engine_output o;
    REQUIRE(engine_get_output(e, id1, &o) == 0);
    CHECK_EQ_INT(o.finish, ENGINE_FINISH_STOP);
    CHECK_EQ_STR(o.text, ", there was a little girl named ");
    REQUIRE(engine_get_output(e, id2, &o) == 0);
    CHECK_EQ_INT(o.finish, ENGINE_FINISH_LENGTH);
    CHECK_EQ_INT(o.n_tokens, 7);
    CHECK_EQ_STR(o.text, ", there was a little gir"); // "girl" is three tokens
    // Bad requests are refused with a reason.
    r.n_prompt = 0;
    CHECK_EQ_INT(engine_add(e, &r, &id2, err, sizeof err), SPECD_ERR_INVALID);
    r.n_prompt = 5;
    r.sampling.top_p = 0;
    CHECK_EQ_INT(engine_add(e, &r, &id2, err, sizeof err), SPECD_ERR_INVALID);
    engine_free(e);
}

TEST(class_override_disables_speculation_for_that_class) {
    const char *model = test_shared_path("models/stories260K.gguf");
    if (!model)
        TEST_SKIP("stories260K.gguf not found");
    engine *e = make_engine(model, NULL, ENGINE_PROPOSER_NGRAM, 4, NULL);
    REQUIRE(e);
    REQUIRE(engine_set_class_depth(e, "batch", 0) == 0);
    int32_t prompt[] = {1, 403, 407, 261, 378};
    struct engine_request r = {.prompt = prompt,
                               .n_prompt = 5,
                               .max_tokens = 40,
                               .sampling = sampler_default_params(),
                               .class_name = "batch"};
    uint64_t a, b;
    char err[128];
    REQUIRE(engine_add(e, &r, &a, err, sizeof err) == 0);
    r.class_name = "chat";
    REQUIRE(engine_add(e, &r, &b, err, sizeof err) == 0);
    int classes_seen = 0;
    struct spec_step_metrics m;
    while (engine_step(e, &m) == 0)
        classes_seen = (int)m.n_classes > classes_seen ? (int)m.n_classes : classes_seen;
    struct engine_output oa, ob;
    engine_get_output(e, a, &oa);
    engine_get_output(e, b, &ob);
    CHECK_EQ_INT(oa.drafted, 0);
    CHECK(ob.drafted > 0);
    CHECK(oa.n_tokens == ob.n_tokens && !memcmp(oa.tokens, ob.tokens, 4 * oa.n_tokens));
    CHECK(classes_seen >= 3); // default, batch, chat
    engine_free(e);
}

TEST(prefix_cache_reuses_shared_prompt) {
    const char *model = test_shared_path("models/stories260K.gguf");
    if (!model)
        TEST_SKIP("stories260K.gguf not found");
    engine *e = make_engine(model, NULL, ENGINE_PROPOSER_NONE, 0, NULL);
    REQUIRE(e);
    int32_t prompt[70];
    for (int i = 0; i < 70; i++)
        prompt[i] = i == 0 ? 1 : 260 + (i * 7) % 200;
    struct engine_request r = {
        .prompt = prompt, .n_prompt = 70, .max_tokens = 10, .sampling = sampler_default_params()};
    uint64_t a, b;
    char err[128];
    REQUIRE(engine_add(e, &r, &a, err, sizeof err) == 0);
    while (engine_step(e, NULL) == 0)
        ;
    REQUIRE(engine_add(e, &r, &b, err, sizeof err) == 0);
    while (engine_step(e, NULL) == 0)
        ;
    struct engine_output oa, ob;
    engine_get_output(e, a, &oa);
    engine_get_output(e, b, &ob);
    CHECK_EQ_INT(oa.cached_prompt_tokens, 0);
    CHECK_EQ_INT(ob.cached_prompt_tokens, 64);
    CHECK(oa.n_tokens == ob.n_tokens && !memcmp(oa.tokens, ob.tokens, 4 * oa.n_tokens));
    engine_free(e);
}

static void three_blocks(struct engine_params *p) {
    p->kv_blocks = 3; // 48 token slots in all
}

// A sequence that outgrows the whole cache finishes (reason "context") instead of being
// preempted forever; a prompt larger than the cache fails at once.
TEST(cache_smaller_than_request_never_hangs) {
    const char *model = test_shared_path("models/stories260K.gguf");
    if (!model)
        TEST_SKIP("stories260K.gguf not found");
    engine *e = make_engine(model, NULL, ENGINE_PROPOSER_NONE, 0, three_blocks);
    REQUIRE(e);
    int32_t prompt[60];
    for (int i = 0; i < 60; i++)
        prompt[i] = i == 0 ? 1 : 300 + i;
    struct engine_request r = {.prompt = prompt,
                               .n_prompt = 40,
                               .max_tokens = 100,
                               .sampling = sampler_default_params(),
                               .ignore_eos = true};
    uint64_t a, b;
    char err[128];
    REQUIRE(engine_add(e, &r, &a, err, sizeof err) == 0);
    r.n_prompt = 60;
    REQUIRE(engine_add(e, &r, &b, err, sizeof err) == 0);
    int steps = 0;
    while (engine_step(e, NULL) == 0 && steps < 500)
        steps++;
    CHECK(steps < 500);
    CHECK(!engine_has_work(e));
    struct engine_output o;
    REQUIRE(engine_get_output(e, a, &o) == 0);
    CHECK_EQ_INT(o.finish, ENGINE_FINISH_CONTEXT);
    CHECK_EQ_INT(o.n_tokens, 9); // 48 slots hold 40 + 8; the 9th token needs no slot yet
    REQUIRE(engine_get_output(e, b, &o) == 0);
    CHECK_EQ_INT(o.finish, ENGINE_FINISH_ERROR);
    engine_free(e);
}

int main(int argc, char **argv) {
    TEST_MAIN_BEGIN(argc, argv);
    TEST_RUN(engine_plain_greedy_matches_llama_cpp);
    TEST_RUN(stop_strings_eos_and_length);
    TEST_RUN(class_override_disables_speculation_for_that_class);
    TEST_RUN(prefix_cache_reuses_shared_prompt);
    TEST_RUN(cache_smaller_than_request_never_hangs);
    TEST_RUN(sampling_same_seed_same_output);
    TEST_RUN(spec_sampling_keeps_target_distribution);
    TEST_RUN(spec_lossless_with_joins_chunks_and_preemption);
    TEST_RUN(spec_greedy_equals_plain_decoding_all_prompts);
    return TEST_MAIN_END();
}
