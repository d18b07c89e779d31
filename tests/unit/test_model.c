// The CPU backend against llama.cpp: greedy continuations of ../shared/refs, token for token, and
// the first position's top-5 logits. Also the model loader's rejections.
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "shared/status.h"
#include "tests/support/refs.h"
#include "tests/test.h"
#include "worker/engine/backend.h"
#include "worker/engine/gguf_write.h"
#include "worker/engine/model.h"

#define MATCH_TOKENS 32

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

// Greedy decoding straight through the backend: one sequence, blocks 0..n in order.
// chunk > 0 prefills the prompt in chunks of that many tokens.
// When ref is given, *gap receives, at the first position where the argmax differs from ref,
// how far the reference token's logit is below the top logit (0 when all agree).
static int greedy_ref(backend *be, const int32_t *prompt, int n_prompt, int n_gen, int chunk,
                      int32_t *out, float *first_logits, const int32_t *ref, float *gap) {
    const int n_vocab = llama_model_hparams(be->model)->n_vocab;
    int32_t table[512];
    for (int i = 0; i < 512; i++)
        table[i] = i;
    float *logits = malloc(sizeof(float) * n_vocab);
    int pos = 0, rc = 0;
    if (chunk <= 0)
        chunk = n_prompt;
    while (pos < n_prompt && !rc) {
        int n = n_prompt - pos < chunk ? n_prompt - pos : chunk;
        struct backend_seq s = {n, pos, 512, table};
        int32_t last = n - 1;
        struct backend_batch b = {1, &s, n, prompt + pos, 1, &last};
        rc = backend_forward(be, &b, logits);
        pos += n;
    }
    if (first_logits && !rc)
        memcpy(first_logits, logits, sizeof(float) * n_vocab);
    if (gap)
        *gap = 0;
    bool diverged = false;
    for (int i = 0; i < n_gen && !rc; i++) {
        out[i] = argmax(logits, n_vocab);
        if (ref && !diverged && out[i] != ref[i]) {
            diverged = true;
            *gap = logits[out[i]] - logits[ref[i]];
        }
        struct backend_seq s = {1, pos, 512, table};
        int32_t row = 0;
        struct backend_batch b = {1, &s, 1, &out[i], 1, &row};
        if (i + 1 < n_gen)
            rc = backend_forward(be, &b, logits);
        pos++;
    }
    free(logits);
    return rc;
}

static int greedy(backend *be, const int32_t *prompt, int n_prompt, int n_gen, int chunk,
                  int32_t *out, float *first_logits) {
    return greedy_ref(be, prompt, n_prompt, n_gen, chunk, out, first_logits, NULL, NULL);
}

// llama.cpp's CPU arithmetic is reproduced closely but not bit for bit, and llama.cpp itself does
// not reproduce the Q8_0 refs (tools/llama-ref/check.sh: 19/20 and 15/20 prompts, top-5 logits off
// by up to 0.135; see docs/numerics.md). So: where a greedy continuation leaves the refs within
// the first MATCH_TOKENS tokens, the two candidates must be a near-tie in our logits (the
// reference token within NEAR_TIE of the top). F32 models (stories260K) must agree exactly on the
// first MATCH_TOKENS tokens.
#define NEAR_TIE 0.25f

static void check_refs(const char *model_file, const char *refs_file, bool exact) {
    const char *mpath = test_shared_path(model_file);
    if (!mpath)
        TEST_SKIP("../shared/%s not found", model_file);
    char err[256];
    llama_model *m = NULL;
    REQUIRE(llama_model_load(mpath, &m, err, sizeof err) == 0);
    struct ref_case *cases = NULL;
    const char *rpath = test_shared_path(refs_file);
    REQUIRE(rpath);
    int n = refs_load(rpath, &cases);
    REQUIRE(n > 0);
    struct backend_params bp = backend_default_params();
    bp.n_blocks = 512;
    bp.block_size = 16;
    bp.n_threads = 2;
    backend *be = NULL;
    REQUIRE(backend_cpu_new(m, &bp, &be, err, sizeof err) == 0);
    const int n_vocab = llama_model_hparams(m)->n_vocab;
    float *first = malloc(sizeof(float) * n_vocab);
    int total_match = 0, total = 0, full = 0;
    double sq = 0, worst = 0;
    for (int c = 0; c < n; c++) {
        int32_t out[64];
        float gap;
        const int n_gen = cases[c].n_tokens < 64 ? cases[c].n_tokens : 64;
        REQUIRE(greedy_ref(be, cases[c].prompt_tokens, cases[c].n_prompt, n_gen, 0, out, first,
                           cases[c].tokens, &gap) == 0);
        int same = 0;
        while (same < n_gen && out[same] == cases[c].tokens[same])
            same++;
        total_match += same;
        total += n_gen;
        full += same >= MATCH_TOKENS || same == n_gen;
        if (same < n_gen)
            fprintf(stderr,
                    "  %s case %d: same for %d tokens, then %d vs ref %d (logit gap %.3f)\n",
                    refs_file, c, same, out[same], cases[c].tokens[same], gap);
        if (same < MATCH_TOKENS && same < n_gen && (exact || gap > NEAR_TIE))
            TEST_FAIL_AT(__FILE__, __LINE__, "%s case %d: diverges at token %d, gap %.3f",
                         refs_file, c, same, gap);
        for (int i = 0; i < 5; i++) {
            double d = fabs(first[cases[c].top5_ids[i]] - cases[c].top5_logits[i]);
            sq += d * d;
            worst = d > worst ? d : worst;
            CHECK_NEAR(first[cases[c].top5_ids[i]], cases[c].top5_logits[i], exact ? 0.01 : 0.15);
        }
    }
    fprintf(stderr,
            "  %s: %d of %d prompts agree on the first %d tokens; %d of %d tokens; first-position "
            "top-5 logits differ by %.4f rms, %.4f max\n",
            refs_file, full, n, MATCH_TOKENS, total_match, total, sqrt(sq / (5.0 * n)), worst);
    free(first);
    backend_free(be);
    refs_free(cases, n);
    llama_model_free(m);
}

TEST(stories260k_matches_llama_cpp) {
    check_refs("models/stories260K.gguf", "refs/stories260K.greedy.jsonl", true);
}
TEST(target_matches_llama_cpp) {
    check_refs("models/target-q8_0.gguf", "refs/target-q8_0.greedy.jsonl", false);
}
TEST(draft_matches_llama_cpp) {
    check_refs("models/draft-q8_0.gguf", "refs/draft-q8_0.greedy.jsonl", false);
}

// Chunked prefill and scattered block tables give bit-identical logits.
TEST(chunked_prefill_and_scattered_blocks_are_exact) {
    const char *mpath = test_shared_path("models/stories260K.gguf");
    if (!mpath)
        TEST_SKIP("stories260K.gguf not found");
    char err[256];
    llama_model *m = NULL;
    REQUIRE(llama_model_load(mpath, &m, err, sizeof err) == 0);
    struct backend_params bp = {.n_blocks = 512, .block_size = 4, .n_threads = 2};
    backend *be = NULL;
    REQUIRE(backend_cpu_new(m, &bp, &be, err, sizeof err) == 0);
    int32_t prompt[40];
    for (int i = 0; i < 40; i++)
        prompt[i] = 1 + (i * 37) % 500;
    int32_t a[20], b[20];
    REQUIRE(greedy(be, prompt, 40, 20, 0, a, NULL) == 0);
    REQUIRE(greedy(be, prompt, 40, 20, 7, b, NULL) == 0);
    for (int i = 0; i < 20; i++)
        CHECK_EQ_INT(a[i], b[i]);
    backend_free(be);
    llama_model_free(m);
}

// A tiny model written by the test, then broken one piece at a time.
static void write_tiny(gguf_writer *w, const char *arch, int skip_tensor, int bad_shape) {
    const int d = 32, ff = 64, vocab = 40, layers = 1;
    gguf_writer_add_str(w, "general.architecture", arch);
    gguf_writer_add_u32(w, "llama.embedding_length", d);
    gguf_writer_add_u32(w, "llama.block_count", layers);
    gguf_writer_add_u32(w, "llama.feed_forward_length", ff);
    gguf_writer_add_u32(w, "llama.attention.head_count", 4);
    gguf_writer_add_u32(w, "llama.attention.head_count_kv", 2);
    gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    static float zeros[64 * 64];
    struct {
        const char *name;
        int64_t ne0, ne1;
    } t[] = {{"token_embd.weight", d, vocab},    {"output_norm.weight", d, 1},
             {"blk.0.attn_norm.weight", d, 1},   {"blk.0.attn_q.weight", d, d},
             {"blk.0.attn_k.weight", d, d / 2},  {"blk.0.attn_v.weight", d, d / 2},
             {"blk.0.attn_output.weight", d, d}, {"blk.0.ffn_norm.weight", d, 1},
             {"blk.0.ffn_gate.weight", d, ff},   {"blk.0.ffn_up.weight", d, ff},
             {"blk.0.ffn_down.weight", ff, d}};
    for (int i = 0; i < (int)(sizeof t / sizeof t[0]); i++) {
        if (i == skip_tensor)
            continue;
        int64_t ne[2] = {t[i].ne0, t[i].ne1 + (i == bad_shape)};
        int nd = t[i].ne1 == 1 ? 1 : 2;
        gguf_writer_add_tensor(w, t[i].name, nd, ne, GGML_TYPE_F32, zeros,
                               sizeof(float) * (size_t)(ne[0] * ne[1]));
    }
}

static int load_tiny(const char *arch, int skip_tensor, int bad_shape, char *err, size_t n) {
    gguf_writer *w = gguf_writer_new();
    write_tiny(w, arch, skip_tensor, bad_shape);
    void *buf = NULL;
    size_t size = 0;
    gguf_writer_finish(w, &buf, &size);
    gguf_writer_free(w);
    gguf_file *f = NULL;
    int rc = gguf_open_memory(buf, size, NULL, &f, err, n);
    llama_model *m = NULL;
    if (!rc) {
        rc = llama_model_from_gguf(f, &m, err, n);
        if (rc)
            gguf_free(f);
    }
    llama_model_free(m);
    free(buf);
    return rc;
}

TEST(loader_rejects_bad_models_with_reason) {
    char err[256];
    CHECK_EQ_INT(load_tiny("llama", -1, -1, err, sizeof err), 0);
    CHECK_EQ_INT(load_tiny("gpt2", -1, -1, err, sizeof err), SPECD_ERR_UNSUPPORTED);
    CHECK(strstr(err, "architecture"));
    CHECK_EQ_INT(load_tiny("llama", 4, -1, err, sizeof err), SPECD_ERR_FORMAT);
    CHECK(strstr(err, "missing tensor blk.0.attn_k.weight"));
    CHECK_EQ_INT(load_tiny("llama", -1, 9, err, sizeof err), SPECD_ERR_FORMAT);
    CHECK(strstr(err, "blk.0.ffn_up.weight") && strstr(err, "shape"));
    llama_model *m = NULL;
    CHECK_EQ_INT(llama_model_load("/nonexistent/model.gguf", &m, err, sizeof err), SPECD_ERR_IO);
    CHECK(m == NULL);
}

int main(int argc, char **argv) {
    TEST_MAIN_BEGIN(argc, argv);
    TEST_RUN(stories260k_matches_llama_cpp);
    TEST_RUN(target_matches_llama_cpp);
    TEST_RUN(draft_matches_llama_cpp);
    TEST_RUN(chunked_prefill_and_scattered_blocks_are_exact);
    TEST_RUN(loader_rejects_bad_models_with_reason);
    return TEST_MAIN_END();
}
