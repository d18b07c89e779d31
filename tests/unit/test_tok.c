// Tokenizer tests: llama.cpp's own test vectors, llama.cpp's prompt ids for the project models,
// hand-worked small vocabularies, the pre-tokenizer against PCRE2, round trips, streaming
// decode, special tokens, BOS/EOS, malformed vocabularies and the specd-tokenize program.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shared/status.h"
#include "tests/test.h"
#include "worker/engine/gguf.h"
#include "worker/engine/gguf_write.h"
#include "worker/engine/tok.h"
#include "worker/engine/tok_internal.h"

// ---- helpers ----

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = (size_t)n;
    }
    return buf;
}

// Loads models/<name> through gguf_open; NULL (with the test skipped by the caller) if absent.
static tok *load_model(const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "models/%s", name);
    const char *path = test_shared_path(rel);
    if (!path)
        return NULL;
    char err[256] = "";
    gguf_file *f = NULL;
    tok *t = NULL;
    int rc = gguf_open(path, NULL, &f, err, sizeof err);
    if (rc == 0)
        rc = tok_new_from_gguf(f, &t, err, sizeof err);
    gguf_free(f);
    if (rc)
        fprintf(stderr, "  loading %s failed: %s (%s)\n", name, err, specd_status_name(rc));
    return t;
}

// Encodes into a malloc'ed array; *n the count (negative on error).
static int32_t *encode(const tok *t, const char *text, size_t len, bool add_special,
                       bool parse_special, int *n) {
    *n = tok_encode(t, text, len, add_special, parse_special, NULL, 0);
    if (*n < 0)
        return NULL;
    int32_t *ids = malloc(((size_t)*n + 1) * sizeof *ids);
    int m = tok_encode(t, text, len, add_special, parse_special, ids, *n);
    if (m != *n)
        *n = SPECD_ERR_STATE;
    return ids;
}

static char *decode(const tok *t, const int32_t *ids, int n, bool remove_special,
                    bool unparse_special) {
    int64_t len = tok_decode(t, ids, n, remove_special, unparse_special, NULL, 0);
    if (len < 0)
        return NULL;
    char *s = malloc((size_t)len + 1);
    if (tok_decode(t, ids, n, remove_special, unparse_special, s, (size_t)len + 1) != len) {
        free(s);
        return NULL;
    }
    return s;
}

static bool ids_equal(const int32_t *a, int na, const int32_t *b, int nb) {
    return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof *a) == 0);
}

static void print_ids(const char *what, const int32_t *ids, int n) {
    fprintf(stderr, "    %s:", what);
    for (int i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

#define CHECK_IDS(t, text, add, parse, ...)                                                        \
    do {                                                                                           \
        const int32_t want_[] = {__VA_ARGS__};                                                     \
        int n_;                                                                                    \
        int32_t *got_ = encode(t, text, strlen(text), add, parse, &n_);                            \
        if (!ids_equal(got_, n_, want_, (int)(sizeof want_ / sizeof want_[0]))) {                  \
            TEST_FAIL_AT(__FILE__, __LINE__, "encoding \"%s\" differs", text);                     \
            print_ids("want", want_, (int)(sizeof want_ / sizeof want_[0]));                       \
            print_ids("got ", got_, n_);                                                           \
        }                                                                                          \
        free(got_);                                                                                \
    } while (0)

// ---- llama.cpp's test vectors ----

// Texts of a .inp file: split at "\n__ggml_vocab_test__\n" as test-tokenizer-0 does (a final
// empty remainder is no text).
static int split_inp(char *raw, size_t len, char **texts, size_t *lens, int max) {
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t pos = 0;
    int n = 0;
    while (pos < len && n < max) {
        char *hit = memmem(raw + pos, len - pos, sep, sizeof sep - 1);
        size_t end = hit ? (size_t)(hit - raw) : len;
        texts[n] = raw + pos;
        lens[n++] = end - pos;
        if (!hit)
            break;
        pos = end + sizeof sep - 1;
    }
    return n;
}

// Parses one .out line of ids.
static int parse_ids(char *line, int32_t *ids, int max) {
    int n = 0;
    for (char *tokn = strtok(line, " \r"); tokn && n < max; tokn = strtok(NULL, " \r"))
        ids[n++] = (int32_t)strtol(tokn, NULL, 10);
    return n;
}

static void run_vectors(const char *model) {
    char rel[256];
    snprintf(rel, sizeof rel, "models/%s.inp", model);
    const char *inp_path = test_shared_path(rel);
    if (!inp_path)
        TEST_SKIP("../shared/models/%s.inp not found", model);
    size_t inp_len, out_len = 0;
    char *inp = read_file(inp_path, &inp_len); // test_shared_path reuses its buffer
    snprintf(rel, sizeof rel, "models/%s.out", model);
    const char *out_path = test_shared_path(rel);
    char *outs = out_path ? read_file(out_path, &out_len) : NULL;
    tok *t = load_model(model);
    REQUIRE(inp && outs && t);

    char *texts[128];
    size_t lens[128];
    int n_texts = split_inp(inp, inp_len, texts, lens, 128);
    char *lines[128];
    int n_lines = 0;
    for (char *p = outs; n_lines < 128 && p < outs + out_len;) {
        char *nl = strchr(p, '\n');
        lines[n_lines++] = p;
        if (!nl)
            break;
        *nl = '\0';
        p = nl + 1;
    }
    CHECK_EQ_INT(n_texts, 46);
    CHECK_EQ_INT(n_lines, n_texts);
    int bad = 0;
    for (int i = 0; i < n_texts && i < n_lines; i++) {
        int32_t want[512];
        int n_want = parse_ids(lines[i], want, 512), n_got;
        int32_t *got = encode(t, texts[i], lens[i], false, false, &n_got);
        if (!ids_equal(got, n_got, want, n_want)) {
            bad++;
            TEST_FAIL_AT(__FILE__, __LINE__, "%s text %d \"%.*s\" differs", model, i, (int)lens[i],
                         texts[i]);
            print_ids("want", want, n_want);
            print_ids("got ", got, n_got);
        }
        free(got);
    }
    fprintf(stderr, "  %s: %d of %d texts match\n", model, n_texts - bad, n_texts);
    tok_free(t);
    free(inp);
    free(outs);
}

TEST(spm_vectors) {
    run_vectors("ggml-vocab-llama-spm.gguf");
}

TEST(bpe_vectors) {
    run_vectors("ggml-vocab-llama-bpe.gguf");
}

// ---- llama.cpp's prompt ids for the project models (BOS included) ----

static void run_refs(const char *model, const char *refs) {
    char rel[256];
    snprintf(rel, sizeof rel, "refs/%s", refs);
    const char *path = test_shared_path(rel);
    if (!path)
        TEST_SKIP("../shared/refs/%s not found", refs);
    size_t len;
    char *all = read_file(path, &len); // before load_model: test_shared_path reuses its buffer
    tok *t = load_model(model);
    REQUIRE(t && all);
    int n_prompts = 0;
    for (char *line = strtok(all, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        REQUIRE(j);
        const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(j, "prompt");
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(j, "prompt_tokens");
        REQUIRE(cJSON_IsString(prompt) && cJSON_IsArray(ids));
        int n_want = cJSON_GetArraySize(ids), n_got;
        int32_t *want = malloc(((size_t)n_want + 1) * sizeof *want);
        for (int i = 0; i < n_want; i++)
            want[i] = (int32_t)cJSON_GetArrayItem(ids, i)->valuedouble;
        const char *text = prompt->valuestring;
        int32_t *got = encode(t, text, strlen(text), true, true, &n_got);
        if (!ids_equal(got, n_got, want, n_want)) {
            TEST_FAIL_AT(__FILE__, __LINE__, "%s prompt \"%s\" differs", model, text);
            print_ids("want", want, n_want);
            print_ids("got ", got, n_got);
        }
        free(got);
        free(want);
        cJSON_Delete(j);
        n_prompts++;
    }
    CHECK(n_prompts >= 10);
    fprintf(stderr, "  %s: %d prompts checked\n", model, n_prompts);
    free(all);
    tok_free(t);
}

TEST(refs_target_prompts) {
    run_refs("target-q8_0.gguf", "target-q8_0.greedy.jsonl");
}

TEST(refs_draft_prompts) {
    run_refs("draft-q8_0.gguf", "draft-q8_0.greedy.jsonl");
}

TEST(refs_stories_prompts) {
    run_refs("stories260K.gguf", "stories260K.greedy.jsonl");
}

// ---- more llama.cpp ids: invalid UTF-8, special tokens, new Unicode letters, odd spaces ----

// Ids llama.cpp (llama_tokenize, built from the llama.cpp source vendored in llama-cpp-python
// 0.3.36) gives for these texts, plain (no BOS, no special parsing) and with both on.
static const struct {
    const char *text;
    size_t len;
    const char *spm_plain, *spm_special, *bpe_plain, *bpe_special;
} golden[] = {
    {"<s>Hello</s> world<unk>", 23, "529 29879 29958 10994 829 29879 29958 3186 29966 2960 29958",
     "1 1 15043 2 29871 3186 0", "45147 80597 524 82 29 1917 27 3200 29",
     "128000 45147 80597 524 82 29 1917 27 3200 29"},
    {"<|begin_of_text|>Hi<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nx", 72,
     "529 29989 463 29918 974 29918 726 29989 29958 18567 29966 29989 29872 327 29918 333 29989 "
     "5299 29989 2962 29918 6672 29918 333 29989 29958 1792 29966 29989 355 29918 6672 29918 333 "
     "29989 29958 13 13 29916",
     "1 529 29989 463 29918 974 29918 726 29989 29958 18567 29966 29989 29872 327 29918 333 29989 "
     "5299 29989 2962 29918 6672 29918 333 29989 29958 1792 29966 29989 355 29918 6672 29918 333 "
     "29989 29958 13 13 29916",
     "27 91 7413 3659 4424 91 29 13347 27 91 68 354 851 91 1822 91 2527 8932 851 91 29 882 27 91 "
     "408 8932 851 91 1363 87",
     "128000 128000 13347 128009 128006 882 128007 271 87"},
    {"a\xff"
     "b\xc3(\xe2\x82 \xed\xa0\x80 \xc0\x80z\xf8",
     16, "263 258 101 198 43 229 133 229 153 132 240 163 131 29871 195 131 29920 251",
     "1 263 258 101 198 43 229 133 229 153 132 240 163 131 29871 195 131 29920 251",
     "64 5809 65 5809 7 10178 10997 64319 220 188 89 5809",
     "128000 64 5809 65 5809 7 10178 10997 64319 220 188 89 5809"},
    {"\xf0\x9f\xa6\x99\xf0\x9f\xa6 \xe0\x80\x80", 11,
     "29871 243 162 169 156 243 162 169 229 153 132 227 131 131",
     "1 29871 243 162 169 156 243 162 169 229 153 132 227 131 131", "9468 99 247 58432 220 188",
     "128000 9468 99 247 58432 220 188"},
    {"Kawi \xf0\x91\xbc\x84\xf0\x91\xbc\x85 ext-I \xf0\xae\xaf\xb0 v16 \xe1\xb2\x89", 32,
     "476 1450 29875 29871 243 148 191 135 243 148 191 136 1294 29899 29902 29871 243 177 178 179 "
     "325 29896 29953 29871 228 181 140",
     "1 476 1450 29875 29871 243 148 191 135 243 148 191 136 1294 29899 29902 29871 243 177 178 "
     "179 325 29896 29953 29871 228 181 140",
     "42 41978 109697 239 120 226 172 239 120 227 1327 22197 109697 106 107 108 348 845 87189 110 "
     "231",
     "128000 42 41978 109697 239 120 226 172 239 120 227 1327 22197 109697 106 107 108 348 845 "
     "87189 110 231"},
    {"x\xc2\x85y\xe2\x80\xa8z \xe3\x80\x80 \xc2\xa0 w  \t\n \r\n  q", 27,
     "921 197 136 29891 31353 29920 29871 30358 20246 281 259 12 13 6756 13 29871 3855",
     "1 921 197 136 29891 31353 29920 29871 30358 20246 281 259 12 13 6756 13 29871 3855",
     "87 116360 88 378 101 89 100267 17529 289 99351 2591 220 2874",
     "128000 87 116360 88 378 101 89 100267 17529 289 99351 2591 220 2874"},
    {"DON'T I'M you'RE we'Ve it'LL he'D 'x ''s", 40,
     "360 1164 29915 29911 306 29915 29924 366 29915 1525 591 29915 29963 29872 372 29915 2208 540 "
     "29915 29928 525 29916 6629 29879",
     "1 360 1164 29915 29911 306 29915 29924 366 29915 1525 591 29915 29963 29872 372 29915 2208 "
     "540 29915 29928 525 29916 6629 29879",
     "85741 17773 358 28703 499 95253 584 6 43712 433 6 4178 568 28805 364 87 3436 82",
     "128000 85741 17773 358 28703 499 95253 584 6 43712 433 6 4178 568 28805 364 87 3436 82"},
    {"1234567 \xd9\xa1\xd9\xa2\xd9\xa3\xd9\xa4 \xe2\x85\xab\xc2\xbd 3.14159", 30,
     "29871 29896 29906 29941 29946 29945 29953 29955 29871 220 164 220 165 220 166 220 167 29871 "
     "229 136 174 30226 29871 29941 29889 29896 29946 29896 29945 29929",
     "1 29871 29896 29906 29941 29946 29945 29953 29955 29871 220 164 220 165 220 166 220 167 "
     "29871 229 136 174 30226 29871 29941 29889 29896 29946 29896 29945 29929",
     "4513 10961 22 220 109610 110546 117413 124079 220 71567 104 27154 220 18 13 9335 2946",
     "128000 4513 10961 22 220 109610 110546 117413 124079 220 71567 104 27154 220 18 13 9335 "
     "2946"},
    {"   leading and trailing   ", 26, "1678 8236 322 25053 1678", "1 1678 8236 322 25053 1678",
     "256 6522 323 28848 262", "128000 256 6522 323 28848 262"},
    {"\xe2\x96\x81"
     "already\xe2\x96\x81"
     "escaped",
     20, "29871 2307 19824", "1 29871 2307 19824", "10634 223 46584 10634 223 66926",
     "128000 10634 223 46584 10634 223 66926"},
    {"tab\tsep\tvalues\n\n\n\nend", 21, "4434 12 19570 12 5975 13 13 13 13 355",
     "1 4434 12 19570 12 5975 13 13 13 13 355", "6323 197 29136 47039 1038 408",
     "128000 6323 197 29136 47039 1038 408"},
    {"\xef\xbd\x88\xef\xbd\x85\xef\xbd\x8c\xef\xbd\x8c\xef\xbd\x8f "
     "\xce\xa9\xce\xbc\xce\xad\xce\xb3\xce\xb1 \xd0\x96",
     29,
     "29871 242 192 139 242 192 136 242 192 143 242 192 143 242 192 146 29871 30357 30167 30273 "
     "30197 30110 7007",
     "1 29871 242 192 139 242 192 136 242 192 143 242 192 143 242 192 146 29871 30357 30167 30273 "
     "30197 30110 7007",
     "15755 230 15755 227 103375 103375 15755 237 117336 100945 113993 102866",
     "128000 15755 230 15755 227 103375 103375 15755 237 117336 100945 113993 102866"},
};

TEST(llama_cpp_golden_cases) {
    tok *spm = load_model("ggml-vocab-llama-spm.gguf");
    tok *bpe = load_model("ggml-vocab-llama-bpe.gguf");
    if (!spm || !bpe) {
        tok_free(spm);
        tok_free(bpe);
        TEST_SKIP("vocabulary files not available");
    }
    for (size_t i = 0; i < sizeof golden / sizeof golden[0]; i++) {
        const char *want_s[4] = {golden[i].spm_plain, golden[i].spm_special, golden[i].bpe_plain,
                                 golden[i].bpe_special};
        for (int k = 0; k < 4; k++) {
            char line[2048];
            int32_t want[512];
            snprintf(line, sizeof line, "%s", want_s[k]);
            int n_want = parse_ids(line, want, 512), n_got;
            bool special = k & 1;
            int32_t *got =
                encode(k < 2 ? spm : bpe, golden[i].text, golden[i].len, special, special, &n_got);
            if (!ids_equal(got, n_got, want, n_want)) {
                TEST_FAIL_AT(__FILE__, __LINE__, "case %zu (%s, %s) differs", i,
                             k < 2 ? "SPM" : "BPE", special ? "special" : "plain");
                print_ids("want", want, n_want);
                print_ids("got ", got, n_got);
            }
            free(got);
        }
    }
    tok_free(spm);
    tok_free(bpe);
}

// ---- hand-worked small vocabularies ----

// A vocabulary under construction: texts, types and scores side by side.
struct synth {
    const char *texts[600];
    int32_t types[600];
    float scores[600];
    int n;
};
static char synth_byte_texts[256][8];

static int synth_add(struct synth *s, const char *text, int type, float score) {
    s->texts[s->n] = text;
    s->types[s->n] = type;
    s->scores[s->n] = score;
    return s->n++;
}

// SPM: <unk> 0, <s> 1, </s> 2, <0x00>..<0xFF> 3..258, then the pieces below.
enum {
    SP_SPACE = 259,
    SP_A,
    SP_B,
    SP_C,
    SP_SPACE_A,
    SP_AB,
    SP_SPACE_AB,
    SP_BC,
    SP_USER,
    SP_LONG,
    SP_X,
    SP_Y,
    SP_XY,
    SP_YX
};
static int sp_byte(int b) {
    return 3 + b;
}

static tok *synth_spm(int add_space_prefix, int add_eos) {
    static struct synth s;
    s.n = 0;
    synth_add(&s, "<unk>", TOK_TYPE_UNKNOWN, 0);
    synth_add(&s, "<s>", TOK_TYPE_CONTROL, 0);
    synth_add(&s, "</s>", TOK_TYPE_CONTROL, 0);
    for (int b = 0; b < 256; b++) {
        snprintf(synth_byte_texts[b], sizeof synth_byte_texts[b], "<0x%02X>", b);
        synth_add(&s, synth_byte_texts[b], TOK_TYPE_BYTE, 0);
    }
    synth_add(&s, "\xe2\x96\x81", TOK_TYPE_NORMAL, -5);
    synth_add(&s, "a", TOK_TYPE_NORMAL, -5);
    synth_add(&s, "b", TOK_TYPE_NORMAL, -5);
    synth_add(&s, "c", TOK_TYPE_NORMAL, -5);
    synth_add(&s,
              "\xe2\x96\x81"
              "a",
              TOK_TYPE_NORMAL, -1);
    synth_add(&s, "ab", TOK_TYPE_NORMAL, -0.1f);
    synth_add(&s,
              "\xe2\x96\x81"
              "ab",
              TOK_TYPE_NORMAL, -3);
    synth_add(&s, "bc", TOK_TYPE_NORMAL, -0.5f);
    synth_add(&s, "[X]", TOK_TYPE_USER_DEFINED, 0);
    synth_add(&s, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", TOK_TYPE_NORMAL, -9); // "éééé"
    synth_add(&s, "x", TOK_TYPE_NORMAL, -5);
    synth_add(&s, "y", TOK_TYPE_NORMAL, -5);
    synth_add(&s, "xy", TOK_TYPE_NORMAL, -1);
    synth_add(&s, "yx", TOK_TYPE_NORMAL, -1);
    struct tok_vocab v = tok_default_vocab();
    v.model = TOK_MODEL_SPM;
    v.n_tokens = s.n;
    v.texts = s.texts;
    v.types = s.types;
    v.scores = s.scores;
    v.add_space_prefix = add_space_prefix;
    v.add_eos = add_eos;
    tok *t = NULL;
    char err[256];
    int rc = tok_new_from_vocab(&v, &t, err, sizeof err);
    if (rc)
        fprintf(stderr, "  synthetic SPM vocabulary rejected: %s\n", err);
    return t;
}

TEST(spm_hand_worked) {
    tok *t = synth_spm(-1, -1);
    REQUIRE(t);
    // "▁abc": ab (-0.1) merges first, making bc and ▁a stale; then ▁+ab = ▁ab (-3).
    CHECK_IDS(t, "abc", false, false, SP_SPACE_AB, SP_C);
    CHECK_IDS(t, "abc", true, false, 1, SP_SPACE_AB, SP_C);
    // "▁cab": only ab merges; "▁c" and "cab" are no tokens.
    CHECK_IDS(t, "cab", false, false, SP_SPACE, SP_C, SP_AB);
    // Characters without a token fall back to their UTF-8 bytes.
    CHECK_IDS(t, "\xc3\xa9", false, false, SP_SPACE, sp_byte(0xC3), sp_byte(0xA9));
    // Invalid UTF-8 goes through as bytes too; 0xFF announces a 4-byte character, so (as in
    // llama.cpp) the 'a' after it shares its symbol and comes out as a byte as well.
    CHECK_IDS(t,
              "\xff"
              "a",
              false, false, SP_SPACE, sp_byte(0xFF), sp_byte('a'));
    CHECK_IDS(t,
              "\x80"
              "a",
              false, false, SP_SPACE, sp_byte(0x80), SP_A);
    // User-defined tokens always match; text after a matched token gets the dummy space again.
    CHECK_IDS(t, "a[X]b", false, false, SP_SPACE_A, SP_USER, SP_SPACE, SP_B);
    // Control tokens only with parse_special.
    CHECK_IDS(t, "<s>a", false, true, 1, SP_SPACE_A);
    CHECK_IDS(t, "<s>a", false, false, SP_SPACE, sp_byte('<'), sp_byte('s'), sp_byte('>'), SP_A);
    CHECK_IDS(t, "", false, false);
    CHECK_IDS(t, "", true, false, 1);
    tok_free(t);

    // Equal scores: the leftmost pair merges first ("xy" before "yx").
    t = synth_spm(0, -1);
    REQUIRE(t);
    CHECK_IDS(t, "xyx", false, false, SP_XY, SP_X);
    CHECK_IDS(t, "yxy", false, false, SP_YX, SP_Y);
    CHECK_IDS(t, "abc", false, false, SP_AB, SP_C); // no dummy prefix now
    tok_free(t);

    t = synth_spm(-1, 1);
    REQUIRE(t);
    CHECK_IDS(t, "abc", true, false, 1, SP_SPACE_AB, SP_C, 2);
    tok_free(t);
}

TEST(spm_hand_worked_decode) {
    tok *t = synth_spm(-1, 1);
    REQUIRE(t);
    const int32_t ids[] = {1, SP_SPACE_AB, SP_C, 2};
    char *s = decode(t, ids + 1, 2, false, false);
    CHECK_EQ_STR(s, "abc"); // the first piece's dummy space is dropped
    free(s);
    s = decode(t, ids, 4, true, false);
    CHECK_EQ_STR(s, " abc"); // as llama.cpp: a removed BOS keeps the space
    free(s);
    s = decode(t, ids, 4, false, false);
    CHECK_EQ_STR(s, " abc");
    free(s);
    s = decode(t, ids, 4, false, true);
    CHECK_EQ_STR(s, "<s> abc</s>");
    free(s);
    const int32_t bytes[] = {sp_byte(0xC3), sp_byte(0xA9), SP_USER, 0};
    s = decode(t, bytes, 4, false, false);
    CHECK_EQ_STR(s, "\xc3\xa9[X]"); // <unk> is a control-like token: no text
    free(s);

    char buf[8] = "zzzzzzz";
    CHECK_EQ_INT(tok_token_to_piece(t, SP_SPACE_AB, false, buf, sizeof buf), 3);
    CHECK(memcmp(buf, " ab", 3) == 0);
    CHECK_EQ_INT(tok_token_to_piece(t, sp_byte(0x0A), false, buf, sizeof buf), 1);
    CHECK_EQ_INT(buf[0], '\n');
    CHECK_EQ_INT(tok_token_to_piece(t, 1, false, buf, sizeof buf), 0);
    CHECK_EQ_INT(tok_token_to_piece(t, 1, true, buf, sizeof buf), 3);
    CHECK_EQ_INT(tok_token_to_piece(t, SP_LONG, false, buf, 2), 8); // length even when cut
    CHECK_EQ_INT(tok_token_to_piece(t, 99999, false, buf, sizeof buf), SPECD_ERR_INVALID);
    // decode reports the full length when the buffer is short, and writes what fits.
    memset(buf, 'z', sizeof buf);
    CHECK_EQ_INT(tok_decode(t, ids + 1, 2, false, false, buf, 2), 3);
    CHECK(buf[0] == 'a' && buf[1] == 'b' && buf[2] == 'z');
    const int32_t bad[] = {5, -1};
    CHECK_EQ_INT(tok_decode(t, bad, 2, false, false, buf, sizeof buf), SPECD_ERR_INVALID);
    tok_free(t);
}

// BPE: the 256 byte characters are ids 0..255 (id = byte), then the pieces below.
enum { BP_LL = 256, BP_HE, BP_HELL, BP_SPACE_WORLD, BP_EOT };

static tok *synth_bpe(void) {
    static struct synth s;
    static char chars[256][4];
    s.n = 0;
    for (int b = 0; b < 256; b++) {
        // GPT-2 byte characters, written out independently of the library.
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        static int next_extra = 0;
        if (b == 0)
            next_extra = 0;
        uint32_t cp = printable ? (uint32_t)b : 256u + (uint32_t)next_extra++;
        if (cp < 0x80) {
            chars[b][0] = (char)cp;
            chars[b][1] = 0;
        } else {
            chars[b][0] = (char)(0xC0 | (cp >> 6));
            chars[b][1] = (char)(0x80 | (cp & 0x3F));
            chars[b][2] = 0;
        }
        synth_add(&s, chars[b], TOK_TYPE_NORMAL, 0);
    }
    synth_add(&s, "ll", TOK_TYPE_NORMAL, 0);
    synth_add(&s, "he", TOK_TYPE_NORMAL, 0);
    synth_add(&s, "hell", TOK_TYPE_NORMAL, 0);
    synth_add(&s, "\xc4\xa0world", TOK_TYPE_NORMAL, 0); // "Ġworld", reachable by no merge
    synth_add(&s, "<|eot_id|>", TOK_TYPE_CONTROL, 0);
    static const char *merges[] = {"l l", "h e", "he ll"};
    struct tok_vocab v = tok_default_vocab();
    v.model = TOK_MODEL_BPE;
    v.pre = TOK_PRE_LLAMA3;
    v.n_tokens = s.n;
    v.texts = s.texts;
    v.types = s.types;
    v.n_merges = 3;
    v.merges = merges;
    v.bos_id = BP_EOT;
    v.eos_id = BP_EOT;
    tok *t = NULL;
    char err[256];
    if (tok_new_from_vocab(&v, &t, err, sizeof err))
        fprintf(stderr, "  synthetic BPE vocabulary rejected: %s\n", err);
    return t;
}

TEST(bpe_hand_worked) {
    tok *t = synth_bpe();
    REQUIRE(t);
    // "hello": ll (rank 0), he (1), he+ll (2) -> hell, o. " world" is a token as a whole.
    CHECK_IDS(t, "hello world", false, false, BP_HELL, 'o', BP_SPACE_WORLD);
    // "\n\n" is one word of two Ċ with no merge.
    CHECK_IDS(t, "hello\n\n", false, false, BP_HELL, 'o', '\n', '\n');
    CHECK_IDS(t, " hello", false, false, ' ', BP_HELL, 'o');
    // Invalid UTF-8 becomes U+FFFD (EF BF BD) first, as llama.cpp does.
    CHECK_IDS(t, "\xff", false, false, 0xEF, 0xBF, 0xBD);
    CHECK_IDS(t, "<|eot_id|>hello", false, true, BP_EOT, BP_HELL, 'o');
    CHECK_IDS(t, "hello", true, false, BP_EOT, BP_HELL, 'o');
    CHECK(tok_is_eog(t, BP_EOT));
    CHECK(!tok_is_eog(t, BP_HELL));

    const int32_t ids[] = {BP_HELL, 'o', BP_SPACE_WORLD, BP_EOT};
    char *s = decode(t, ids, 4, false, false);
    CHECK_EQ_STR(s, "hello world");
    free(s);
    s = decode(t, ids, 4, false, true);
    CHECK_EQ_STR(s, "hello world<|eot_id|>");
    free(s);
    // llama.cpp's clean-up of spaces before punctuation and contractions.
    int n;
    const char *text = "Hello , world ! It 's a ' b ' c . x ' ' y don 't ?";
    int32_t *enc = encode(t, text, strlen(text), false, false, &n);
    s = decode(t, enc, n, false, false);
    CHECK_EQ_STR(s, "Hello, world! It's a'b'c. x'' y don 't?");
    free(s);
    free(enc);
    tok_free(t);
}

// ---- streaming decode ----

// Pushes ids one by one (cap bytes per call), then flushes; returns the text.
static char *stream_all(const tok *t, const int32_t *ids, int n, size_t cap, bool *all_valid) {
    tok_stream *s = tok_stream_new(t, false);
    if (!s)
        return NULL;
    struct tok_buf out = {0};
    char buf[256];
    *all_valid = true;
    for (int i = 0; i <= n; i++) {
        int k = i < n ? tok_stream_push(s, ids[i], buf, cap) : tok_stream_flush(s, buf, cap);
        while (k > 0) {
            // Every chunk handed out must be whole, well-formed characters.
            for (int p = 0; p < k;) {
                int r = tok_utf8_check((const unsigned char *)buf + p, (size_t)(k - p));
                if (r <= 0) {
                    *all_valid = false;
                    break;
                }
                p += r;
            }
            tok_buf_append(&out, buf, (size_t)k);
            k = i < n ? 0 : tok_stream_flush(s, buf, cap);
        }
    }
    tok_stream_free(s);
    if (!out.p)
        tok_buf_append(&out, "", 0);
    return out.p;
}

TEST(stream_split_characters) {
    tok *t = synth_spm(-1, -1);
    REQUIRE(t);
    tok_stream *s = tok_stream_new(t, false);
    REQUIRE(s);
    char buf[64];
    // é split over two byte tokens: nothing, then the whole character.
    CHECK_EQ_INT(tok_stream_push(s, sp_byte(0xC3), buf, sizeof buf), 0);
    CHECK_EQ_INT(tok_stream_pending(s), 1);
    CHECK_EQ_INT(tok_stream_push(s, sp_byte(0xA9), buf, sizeof buf), 2);
    CHECK(memcmp(buf, "\xc3\xa9", 2) == 0);
    // A 4-byte character over four tokens.
    const int emoji[] = {0xF0, 0x9F, 0xA6, 0x99};
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(tok_stream_push(s, sp_byte(emoji[i]), buf, sizeof buf), 0);
    CHECK_EQ_INT(tok_stream_push(s, sp_byte(emoji[3]), buf, sizeof buf), 4);
    CHECK(memcmp(buf, "\xf0\x9f\xa6\x99", 4) == 0);
    // 0xFF can never start a character: U+FFFD at once.
    CHECK_EQ_INT(tok_stream_push(s, sp_byte(0xFF), buf, sizeof buf), 3);
    CHECK(memcmp(buf, "\xef\xbf\xbd", 3) == 0);
    // E2 82 then 'a': the truncated sequence is one U+FFFD, then 'a' (with its space).
    CHECK_EQ_INT(tok_stream_push(s, sp_byte(0xE2), buf, sizeof buf), 0);
    CHECK_EQ_INT(tok_stream_push(s, sp_byte(0x82), buf, sizeof buf), 0);
    CHECK_EQ_INT(tok_stream_push(s, SP_SPACE_A, buf, sizeof buf), 5);
    CHECK(memcmp(buf, "\xef\xbf\xbd a", 5) == 0);
    // A surrogate's encoding ED A0 80: three maximal ill-formed parts, three U+FFFD.
    CHECK_EQ_INT(tok_stream_push(s, sp_byte(0xED), buf, sizeof buf), 0);
    CHECK_EQ_INT(tok_stream_push(s, sp_byte(0xA0), buf, sizeof buf), 6);
    CHECK_EQ_INT(tok_stream_push(s, sp_byte(0x80), buf, sizeof buf), 3);
    // Control tokens give no text; an incomplete character is U+FFFD at flush.
    CHECK_EQ_INT(tok_stream_push(s, 1, buf, sizeof buf), 0);
    CHECK_EQ_INT(tok_stream_push(s, sp_byte(0xF0), buf, sizeof buf), 0);
    CHECK_EQ_INT(tok_stream_push(s, sp_byte(0x9F), buf, sizeof buf), 0);
    CHECK_EQ_INT(tok_stream_flush(s, buf, sizeof buf), 3);
    CHECK(memcmp(buf, "\xef\xbf\xbd", 3) == 0);
    CHECK_EQ_INT(tok_stream_flush(s, buf, sizeof buf), 0);
    CHECK_EQ_INT(tok_stream_pending(s), 0);
    // Small buffers: the rest stays in the stream, cut between characters.
    CHECK_EQ_INT(tok_stream_push(s, SP_LONG, buf, 5), 4);
    CHECK(memcmp(buf, "\xc3\xa9\xc3\xa9", 4) == 0);
    CHECK_EQ_INT(tok_stream_pending(s), 4);
    CHECK_EQ_INT(tok_stream_flush(s, buf, 4), 4);
    CHECK_EQ_INT(tok_stream_flush(s, buf, 4), 0);
    CHECK_EQ_INT(tok_stream_push(s, SP_A, buf, 3), SPECD_ERR_INVALID);
    CHECK_EQ_INT(tok_stream_push(s, 100000, buf, sizeof buf), SPECD_ERR_INVALID);
    tok_stream_free(s);

    // Special rendering on request.
    s = tok_stream_new(t, true);
    REQUIRE(s);
    CHECK_EQ_INT(tok_stream_push(s, 1, buf, sizeof buf), 3);
    CHECK(memcmp(buf, "<s>", 3) == 0);
    tok_stream_free(s);
    tok_stream_free(NULL);
    tok_free(t);
}

TEST(stream_real_vocab) {
    tok *t = load_model("ggml-vocab-llama-spm.gguf");
    if (!t)
        TEST_SKIP("ggml-vocab-llama-spm.gguf not available");
    // Rare characters fall back to bytes in this vocabulary (🦙 is four byte tokens).
    const char *text = "Hello \xf0\x9f\xa6\x99 and \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e "
                       "\xc3\xbcn\xc3\xaf"
                       "c\xc3\xb6"
                       "d\xc3\xa9 \xe1\xbb\xad\xe1\xbb\x87 end";
    int n;
    int32_t *ids = encode(t, text, strlen(text), false, false, &n);
    REQUIRE(n > 0);
    int n_bytes = 0;
    for (int i = 0; i < n; i++)
        n_bytes += tok_token_type(t, ids[i]) == TOK_TYPE_BYTE;
    CHECK(n_bytes >= 4);
    for (size_t cap = 4; cap <= 64; cap += 60) {
        bool valid;
        char *got = stream_all(t, ids, n, cap, &valid);
        char want[256];
        snprintf(want, sizeof want, " %s", text); // the stream keeps the dummy space
        CHECK_EQ_STR(got, want);
        CHECK(valid);
        free(got);
    }
    free(ids);
    tok_free(t);
}

// ---- real vocabularies: special tokens, BOS/EOS, pieces, round trips ----

TEST(special_tokens_real) {
    tok *spm = load_model("ggml-vocab-llama-spm.gguf");
    tok *bpe = load_model("ggml-vocab-llama-bpe.gguf");
    if (!spm || !bpe) {
        tok_free(spm);
        tok_free(bpe);
        TEST_SKIP("vocabulary files not available");
    }
    // Ids from llama.cpp's vectors: "Hello world" = 15043 3186 (SPM), 9906 1917 (BPE).
    CHECK_IDS(spm, "<s>Hello</s>", false, true, 1, 15043, 2);
    CHECK_IDS(spm, "<s>Hello", true, true, 1, 1, 15043); // llama.cpp doubles the BOS too
    CHECK_IDS(spm, "Hello world", true, false, 1, 15043, 3186);
    CHECK_IDS(bpe, "<|begin_of_text|>Hello<|eot_id|>", false, true, 128000, 9906, 128009);
    CHECK_IDS(bpe, "Hello world", true, false, 128000, 9906, 1917);
    CHECK_IDS(bpe, "Hello world", false, false, 9906, 1917);

    // Without parse_special the marker is plain text.
    const char *text = "<|begin_of_text|>Hello<|eot_id|>";
    int n;
    int32_t *ids = encode(bpe, text, strlen(text), false, false, &n);
    REQUIRE(n > 3);
    for (int i = 0; i < n; i++)
        CHECK(ids[i] < 128000);
    bool valid;
    char *back = stream_all(bpe, ids, n, 64, &valid);
    CHECK_EQ_STR(back, text);
    free(back);
    free(ids);

    CHECK_EQ_INT(tok_bos(spm), 1);
    CHECK_EQ_INT(tok_eos(spm), 2);
    CHECK_EQ_INT(tok_unk(spm), 0);
    CHECK_EQ_INT(tok_n_vocab(spm), 32000);
    CHECK(tok_add_bos(spm) && !tok_add_eos(spm));
    CHECK_EQ_INT(tok_bos(bpe), 128000);
    CHECK_EQ_INT(tok_eos(bpe), 128001);
    CHECK_EQ_INT(tok_n_vocab(bpe), 128256);
    CHECK(tok_add_bos(bpe) && !tok_add_eos(bpe));
    CHECK(tok_model(spm) == TOK_MODEL_SPM && tok_model(bpe) == TOK_MODEL_BPE);
    CHECK(tok_is_eog(spm, 2) && !tok_is_eog(spm, 1) && !tok_is_eog(spm, 15043));
    CHECK(tok_is_eog(bpe, 128001) && tok_is_eog(bpe, 128009)); // <|end_of_text|>, <|eot_id|>
    CHECK(!tok_is_eog(bpe, 128008)); // a reserved token in this (Llama 3.0) vocabulary
    CHECK(!tok_is_eog(bpe, 128000) && !tok_is_eog(bpe, 9906) && !tok_is_eog(bpe, -1));

    size_t len;
    CHECK_EQ_STR(tok_token_text(spm, 15043, &len), "\xe2\x96\x81Hello");
    CHECK_EQ_INT(len, 8);
    CHECK_EQ_STR(tok_token_text(bpe, 22691, NULL), "\xc4\xa0Hello");
    CHECK(tok_token_text(bpe, 128256, NULL) == NULL);
    CHECK_EQ_INT(tok_text_to_token(bpe, "\xc4\xa0Hello", 7), 22691);
    char buf[32];
    CHECK_EQ_INT(tok_token_to_piece(bpe, 22691, false, buf, sizeof buf), 6);
    CHECK(memcmp(buf, " Hello", 6) == 0);
    CHECK_EQ_INT(tok_token_to_piece(bpe, 198, false, buf, sizeof buf), 1); // "Ċ"
    CHECK_EQ_INT(buf[0], '\n');
    CHECK_EQ_INT(tok_token_to_piece(bpe, 128000, false, buf, sizeof buf), 0);
    CHECK_EQ_INT(tok_token_to_piece(bpe, 128000, true, buf, sizeof buf), 17);
    CHECK_EQ_INT(tok_token_to_piece(spm, 13, false, buf, sizeof buf), 1); // <0x0A>
    CHECK_EQ_INT(buf[0], '\n');
    tok_free(spm);
    tok_free(bpe);
}

// Round trips over every vector text: SPM decode(encode(x)) == x (the dummy space removed),
// BPE pieces concatenated == x, and decode == x where llama.cpp's space clean-up does not apply.
static void run_round_trips(const char *model) {
    char rel[256];
    snprintf(rel, sizeof rel, "models/%s.inp", model);
    const char *path = test_shared_path(rel);
    size_t len;
    char *inp = path ? read_file(path, &len) : NULL;
    tok *t = inp ? load_model(model) : NULL;
    if (!t) {
        free(inp);
        TEST_SKIP("%s not available", model);
    }
    char *texts[128];
    size_t lens[128];
    int n_texts = split_inp(inp, len, texts, lens, 128);
    for (int i = 0; i < n_texts; i++) {
        char *text = strndup(texts[i], lens[i]);
        int n;
        int32_t *ids = encode(t, text, lens[i], false, false, &n);
        char *back = decode(t, ids, n, false, false);
        bool valid;
        char *streamed = stream_all(t, ids, n, 16, &valid);
        CHECK(valid);
        bool cleaned = strstr(text, " ?") || strstr(text, " !") || strstr(text, " .") ||
                       strstr(text, " ,") || strstr(text, " '");
        if (tok_model(t) == TOK_MODEL_SPM) {
            if (!back || strcmp(back, text) != 0)
                TEST_FAIL_AT(__FILE__, __LINE__, "text %d: \"%s\" came back as \"%s\"", i, text,
                             back ? back : "(null)");
            CHECK(streamed && (lens[i] == 0 ? streamed[0] == 0
                                            : streamed[0] == ' ' && !strcmp(streamed + 1, text)));
            // With a BOS removed again llama.cpp keeps the dummy space.
            free(ids);
            ids = encode(t, text, lens[i], true, false, &n);
            free(back);
            back = decode(t, ids, n, true, false);
            CHECK(back && (lens[i] == 0 ? !back[0] : back[0] == ' ' && !strcmp(back + 1, text)));
        } else {
            if (!streamed || strcmp(streamed, text) != 0)
                TEST_FAIL_AT(__FILE__, __LINE__, "text %d: \"%s\" streamed as \"%s\"", i, text,
                             streamed ? streamed : "(null)");
            if (!cleaned && (!back || strcmp(back, text) != 0))
                TEST_FAIL_AT(__FILE__, __LINE__, "text %d: \"%s\" came back as \"%s\"", i, text,
                             back ? back : "(null)");
        }
        free(streamed);
        free(back);
        free(ids);
        free(text);
    }
    free(inp);
    tok_free(t);
}

TEST(round_trip_spm) {
    run_round_trips("ggml-vocab-llama-spm.gguf");
}

TEST(round_trip_bpe) {
    run_round_trips("ggml-vocab-llama-bpe.gguf");
}

TEST(round_trip_target_prompts) {
    // The held-out prompt files of the trained pair: decode(encode(p)) == p for all of them.
    tok *t = load_model("target-q8_0.gguf");
    if (!t)
        TEST_SKIP("target-q8_0.gguf not available");
    const char *files[] = {"prompts-prose.txt", "prompts-code.txt", "prompts-tech.txt",
                           "prompts-ood-german.txt", "prompts-ood-c.txt"};
    int checked = 0;
    for (size_t f = 0; f < 5; f++) {
        char rel[64];
        snprintf(rel, sizeof rel, "models/%s", files[f]);
        const char *path = test_shared_path(rel);
        size_t len;
        char *all = path ? read_file(path, &len) : NULL;
        if (!all)
            continue;
        for (char *line = strtok(all, "\n"); line; line = strtok(NULL, "\n")) {
            int n;
            int32_t *ids = encode(t, line, strlen(line), true, true, &n);
            char *back = decode(t, ids, n, true, false);
            CHECK(back && back[0] == ' ' && !strcmp(back + 1, line));
            checked++;
            free(ids);
            free(back);
        }
        free(all);
    }
    CHECK(checked > 100);
    tok_free(t);
}

// ---- malformed vocabularies ----

static int try_vocab(const struct tok_vocab *v, const char *want_in_err) {
    tok *t = (tok *)1;
    char err[256] = "";
    int rc = tok_new_from_vocab(v, &t, err, sizeof err);
    if (rc == 0)
        tok_free(t);
    else if (t != NULL)
        rc = 999; // *out must be NULL after a failure
    if (rc && want_in_err && !strstr(err, want_in_err)) {
        fprintf(stderr, "  error \"%s\" does not mention \"%s\"\n", err, want_in_err);
        rc = 998;
    }
    return rc;
}

TEST(malformed_vocab) {
    const char *texts[] = {"<unk>", "<s>", "</s>", "a", "b"};
    int32_t types[] = {2, 3, 3, 1, 1};
    float scores[] = {0, 0, 0, -1, -2};
    struct tok_vocab good = tok_default_vocab();
    good.n_tokens = 5;
    good.texts = texts;
    good.types = types;
    good.scores = scores;
    CHECK_EQ_INT(try_vocab(&good, NULL), 0);

    struct tok_vocab v = good;
    v.n_tokens = 0;
    CHECK_EQ_INT(try_vocab(&v, "no tokens"), SPECD_ERR_FORMAT);
    int32_t bad_types[] = {2, 3, 3, 9, 1};
    v = good;
    v.types = bad_types;
    CHECK_EQ_INT(try_vocab(&v, "type 9"), SPECD_ERR_FORMAT);
    const char *dup[] = {"<unk>", "<s>", "</s>", "a", "a"};
    v = good;
    v.texts = dup;
    CHECK_EQ_INT(try_vocab(&v, "same text"), SPECD_ERR_FORMAT);
    v = good;
    v.bos_id = 5;
    CHECK_EQ_INT(try_vocab(&v, "BOS token id 5"), SPECD_ERR_FORMAT);
    v = good;
    v.eos_id = -7;
    CHECK_EQ_INT(try_vocab(&v, "EOS"), SPECD_ERR_FORMAT);
    v = good;
    v.bos_id = TOK_NULL;
    CHECK_EQ_INT(try_vocab(&v, "no BOS"), SPECD_ERR_FORMAT); // add_bos defaults on
    v.add_bos = 0;
    CHECK_EQ_INT(try_vocab(&v, NULL), 0);
    v = good;
    v.model = TOK_MODEL_BPE;
    v.pre = TOK_PRE_LLAMA3;
    CHECK_EQ_INT(try_vocab(&v, "no merges"), SPECD_ERR_FORMAT);
    v.pre = TOK_PRE_NONE;
    CHECK_EQ_INT(try_vocab(&v, "pre-tokenizer"), SPECD_ERR_UNSUPPORTED);
    v = good;
    v.model = (enum tok_model)7;
    CHECK_EQ_INT(try_vocab(&v, "model"), SPECD_ERR_UNSUPPORTED);
    const char *holes[] = {"<unk>", NULL, "</s>", "a", "b"};
    v = good;
    v.texts = holes;
    CHECK_EQ_INT(try_vocab(&v, "no text"), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(try_vocab(NULL, NULL), SPECD_ERR_INVALID);
    CHECK_EQ_INT(tok_new_from_vocab(&good, NULL, NULL, 0), SPECD_ERR_INVALID);
    tok_free(NULL);
}

enum gguf_variant {
    GV_GOOD,
    GV_NO_MODEL,
    GV_MODEL_T5,
    GV_NO_TOKENS,
    GV_TOKENS_NOT_STRINGS,
    GV_TYPES_SHORT,
    GV_NO_SCORES,
    GV_BAD_BOS,
    GV_BOS_NONE,
    GV_ADD_BOS_STRING,
    GV_BPE_QWEN,
    GV_BPE_NO_MERGES,
};

// A small SPM (or BPE) tokenizer GGUF with one thing wrong. Returns a malloc'ed file image.
static void *make_gguf(enum gguf_variant var, size_t *size) {
    const char *tokens[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81\x61", "a"};
    int32_t types[] = {2, 3, 3, 1, 1};
    float scores[] = {0, 0, 0, -1, -2};
    bool bpe = var == GV_BPE_QWEN || var == GV_BPE_NO_MERGES;
    gguf_writer *w = gguf_writer_new();
    if (var != GV_NO_MODEL)
        gguf_writer_add_str(w, "tokenizer.ggml.model",
                            var == GV_MODEL_T5 ? "t5"
                            : bpe              ? "gpt2"
                                               : "llama");
    if (bpe)
        gguf_writer_add_str(w, "tokenizer.ggml.pre", var == GV_BPE_QWEN ? "qwen2" : "llama-bpe");
    if (var == GV_TOKENS_NOT_STRINGS)
        gguf_writer_add_i32_array(w, "tokenizer.ggml.tokens", types, 5);
    else if (var != GV_NO_TOKENS)
        gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", tokens, 5);
    gguf_writer_add_i32_array(w, "tokenizer.ggml.token_type", types, var == GV_TYPES_SHORT ? 4 : 5);
    if (var != GV_NO_SCORES)
        gguf_writer_add_f32_array(w, "tokenizer.ggml.scores", scores, 5);
    gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id",
                        var == GV_BAD_BOS    ? 999
                        : var == GV_BOS_NONE ? 0xFFFFFFFFu
                                             : 1);
    gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_writer_add_u32(w, "tokenizer.ggml.padding_token_id", 0xFFFFFFFFu);
    if (var == GV_ADD_BOS_STRING)
        gguf_writer_add_str(w, "tokenizer.ggml.add_bos_token", "yes");
    else
        gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", var != GV_BOS_NONE);
    void *buf = NULL;
    gguf_writer_finish(w, &buf, size);
    gguf_writer_free(w);
    return buf;
}

static int try_gguf(enum gguf_variant var, const char *want_in_err, tok **keep) {
    size_t size;
    void *buf = make_gguf(var, &size);
    if (!buf)
        return 997;
    gguf_file *f = NULL;
    char err[256] = "";
    int rc = gguf_open_memory(buf, size, NULL, &f, err, sizeof err);
    tok *t = NULL;
    if (rc == 0)
        rc = tok_new_from_gguf(f, &t, err, sizeof err);
    if (rc && want_in_err && !strstr(err, want_in_err)) {
        fprintf(stderr, "  error \"%s\" does not mention \"%s\"\n", err, want_in_err);
        rc = 998;
    }
    gguf_free(f); // the tok must not need the file any more
    free(buf);
    if (keep)
        *keep = t;
    else
        tok_free(t);
    return rc;
}

TEST(malformed_gguf) {
    tok *t = NULL;
    CHECK_EQ_INT(try_gguf(GV_GOOD, NULL, &t), 0);
    if (t) {
        CHECK_IDS(t, "a a", true, false, 1, 3, 3);
        CHECK_EQ_INT(tok_pad(t), TOK_NULL);
        tok_free(t);
    }
    CHECK_EQ_INT(try_gguf(GV_NO_MODEL, "tokenizer.ggml.model", NULL), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(try_gguf(GV_MODEL_T5, "t5", NULL), SPECD_ERR_UNSUPPORTED);
    CHECK_EQ_INT(try_gguf(GV_NO_TOKENS, "tokenizer.ggml.tokens", NULL), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(try_gguf(GV_TOKENS_NOT_STRINGS, "tokenizer.ggml.tokens", NULL), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(try_gguf(GV_TYPES_SHORT, "token_type", NULL), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(try_gguf(GV_NO_SCORES, "scores", NULL), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(try_gguf(GV_BAD_BOS, "999", NULL), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(try_gguf(GV_BOS_NONE, NULL, &t), 0);
    if (t) {
        CHECK_EQ_INT(tok_bos(t), TOK_NULL);
        CHECK_IDS(t, "a", true, false, 3);
        tok_free(t);
    }
    CHECK_EQ_INT(try_gguf(GV_ADD_BOS_STRING, "add_bos_token", NULL), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(try_gguf(GV_BPE_QWEN, "qwen2", NULL), SPECD_ERR_UNSUPPORTED);
    CHECK_EQ_INT(try_gguf(GV_BPE_NO_MERGES, "merges", NULL), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(tok_new_from_gguf(NULL, &t, NULL, 0), SPECD_ERR_INVALID);
    CHECK(t == NULL);
}

// ---- the pre-tokenizer against PCRE2 ----

// Characters whose classes are the same in every Unicode version since 6: ASCII, Latin-1
// letters, CJK, digits of other scripts (Nd, Nl, No), marks, symbols, several spaces.
static const char *const alphabet[] = {
    "a",
    "Z",
    "s",
    "S",
    "t",
    "r",
    "E",
    "v",
    "m",
    "l",
    "L",
    "d",
    "D",
    "0",
    "7",
    "9",
    "'",
    "'",
    " ",
    " ",
    " ",
    "\t",
    "\n",
    "\r",
    "\v",
    "\f",
    "!",
    ".",
    ",",
    "(",
    "-",
    "_",
    "$",
    "\xc3\xa9",
    "\xc3\x9f",
    "\xc3\x84",
    "\xe6\x97\xa5",
    "\xe6\x9c\xac",
    "\xd9\xa3",
    "\xc2\xbd",
    "\xe2\x85\xab",
    "\xf0\x9f\xa6\x99",
    "\xc2\xa0",
    "\xe3\x80\x80",
    "\xe2\x80\xa8",
    "\xcc\x81",
    "\xe2\x82\xac",
    "\xc7\x85",
    "\xca\xb0",
    "\xd0\x96",
    "\xe2\x80\x83",
    "\xc2\x85",
    "\x01",
};

static uint64_t lcg_next(uint64_t *state) {
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return *state >> 33;
}

TEST(split_matches_pcre2) {
    const char *pattern =
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
        "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    int code;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &code, &erroff, NULL);
    REQUIRE(re);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    uint64_t rng = 12345;
    size_t n_alpha = sizeof alphabet / sizeof alphabet[0];
    int bad = 0;
    for (int iter = 0; iter < 3000 && bad < 5; iter++) {
        char text[256];
        size_t len = 0, n_chars = 1 + lcg_next(&rng) % 24;
        for (size_t i = 0; i < n_chars; i++) {
            const char *c = alphabet[lcg_next(&rng) % n_alpha];
            memcpy(text + len, c, strlen(c));
            len += strlen(c);
        }
        uint32_t *cps;
        int64_t n_cps = tok_utf8_decode_all(text, len, &cps);
        struct tok_ids got = {0};
        REQUIRE(tok_split_llama3(cps, (size_t)n_cps, &got) == 0);
        // PCRE2's words, in code points.
        struct tok_ids want = {0};
        size_t off = 0;
        while (off < len) {
            int rc = pcre2_match(re, (PCRE2_SPTR)text, len, off, 0, md, NULL);
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            if (rc < 0 || ov[0] != off || ov[1] == off)
                break;
            int32_t n = 0;
            for (size_t b = ov[0]; b < ov[1]; b++)
                n += ((unsigned char)text[b] & 0xC0) != 0x80;
            tok_ids_push(&want, n);
            off = ov[1];
        }
        if (off != len || !ids_equal(got.v, (int)got.n, want.v, (int)want.n)) {
            bad++;
            TEST_FAIL_AT(__FILE__, __LINE__, "split of \"%.*s\" differs from PCRE2", (int)len,
                         text);
            print_ids("pcre2", want.v, (int)want.n);
            print_ids("ours ", got.v, (int)got.n);
        }
        free(cps);
        free(got.v);
        free(want.v);
    }
    pcre2_match_data_free(md);
    pcre2_code_free(re);
}

TEST(unicode_classes) {
    // Spot checks against the Unicode 15.1 character database.
    CHECK_EQ_INT(tok_cp_class('a'), TOK_CP_LETTER);
    CHECK_EQ_INT(tok_cp_class('5'), TOK_CP_NUMBER);
    CHECK_EQ_INT(tok_cp_class('_'), TOK_CP_OTHER);
    CHECK_EQ_INT(tok_cp_class(0xAA), TOK_CP_LETTER);   // ª, Lo
    CHECK_EQ_INT(tok_cp_class(0xB2), TOK_CP_NUMBER);   // ², No
    CHECK_EQ_INT(tok_cp_class(0xD7), TOK_CP_OTHER);    // ×, Sm
    CHECK_EQ_INT(tok_cp_class(0x4E00), TOK_CP_LETTER); // CJK
    CHECK_EQ_INT(tok_cp_class(0x2F800), TOK_CP_LETTER);
    CHECK_EQ_INT(tok_cp_class(0x11F04), TOK_CP_LETTER); // Kawi, new in Unicode 15.0
    CHECK_EQ_INT(tok_cp_class(0x2EBF0), TOK_CP_LETTER); // CJK ext. I, new in 15.1
    CHECK_EQ_INT(tok_cp_class(0x1C89), TOK_CP_OTHER);   // assigned only in Unicode 16
    CHECK_EQ_INT(tok_cp_class(0x10FFFF), TOK_CP_OTHER);
    CHECK_EQ_INT(tok_cp_class(0x110000), TOK_CP_OTHER);
    CHECK(tok_cp_is_space(0x85) && tok_cp_is_space(0x3000) && tok_cp_is_space(0x200A));
    CHECK(!tok_cp_is_space(0x200B) && !tok_cp_is_space(0x1C) && !tok_cp_is_space(0x180E));
}

// ---- speed ----

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

TEST(encode_4k_prompt_speed) {
    tok *bpe = load_model("ggml-vocab-llama-bpe.gguf");
    tok *spm = load_model("ggml-vocab-llama-spm.gguf");
    if (!bpe || !spm) {
        tok_free(bpe);
        tok_free(spm);
        TEST_SKIP("vocabulary files not available");
    }
    const char *para = "The quick brown fox jumps over the lazy dog; it's 1234567 times "
                       "faster (\xc3\xa4hnlich schnell) than expected!\n\tdef f(x): return x**2\n";
    char text[4200] = "";
    while (strlen(text) + strlen(para) < 4096)
        strcat(text, para);
    tok *models[] = {bpe, spm};
    for (int m = 0; m < 2; m++) {
        int n = 0;
        double t0 = now_ms();
        for (int rep = 0; rep < 5; rep++)
            n = tok_encode(models[m], text, strlen(text), true, true, NULL, 0);
        double ms = (now_ms() - t0) / 5;
        fprintf(stderr, "  %s: %zu bytes -> %d tokens in %.2f ms\n", m ? "SPM" : "BPE",
                strlen(text), n, ms);
        CHECK(n > 500);
        CHECK(ms < 200); // milliseconds, even under sanitizers
    }
    tok_free(bpe);
    tok_free(spm);
}

// ---- specd-tokenize ----

static int run_cmd(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(cli_tokenize) {
    // The program sits in ../bin beside this test's folder.
    char bin[4096];
    const char *self = test_state_g.argv[0];
    const char *slash = strrchr(self, '/');
    snprintf(bin, sizeof bin, "%.*s/../bin/specd-tokenize", slash ? (int)(slash - self) : 1,
             slash ? self : ".");
    if (access(bin, X_OK) != 0)
        TEST_SKIP("%s not built", bin);
    const char *path = test_shared_path("models/stories260K.gguf");
    if (!path)
        TEST_SKIP("stories260K.gguf not available");
    char model[4096], cmd[9000], out[4096];
    snprintf(model, sizeof model, "%s", path);
    // Ids from llama.cpp (refs/stories260K.greedy.jsonl).
    snprintf(cmd, sizeof cmd, "%s -m %s 'Once upon a time'", bin, model);
    CHECK_EQ_INT(run_cmd(cmd, out, sizeof out), 0);
    CHECK_EQ_STR(out, "1 403 407 261 378\n");
    snprintf(cmd, sizeof cmd, "%s -m %s --no-bos 'Once upon a time'", bin, model);
    CHECK_EQ_INT(run_cmd(cmd, out, sizeof out), 0);
    CHECK_EQ_STR(out, "403 407 261 378\n");
    snprintf(cmd, sizeof cmd, "%s -m %s --decode 403 407 261 378", bin, model);
    CHECK_EQ_INT(run_cmd(cmd, out, sizeof out), 0);
    CHECK_EQ_STR(out, "Once upon a time\n");
    snprintf(cmd, sizeof cmd, "%s -m %s --decode 1 99999 2>/dev/null", bin, model);
    CHECK_EQ_INT(run_cmd(cmd, out, sizeof out), 1);
    snprintf(cmd, sizeof cmd, "%s --help", bin);
    CHECK_EQ_INT(run_cmd(cmd, out, sizeof out), 0);
    CHECK(strstr(out, "usage:") != NULL);
    snprintf(cmd, sizeof cmd, "%s 2>&1", bin);
    CHECK_EQ_INT(run_cmd(cmd, out, sizeof out), 2);
    CHECK(strstr(out, "usage:") != NULL);
    snprintf(cmd, sizeof cmd, "%s -m %s --bogus x 2>/dev/null", bin, model);
    CHECK_EQ_INT(run_cmd(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "%s -m /nonexistent/x.gguf hi 2>&1", bin);
    CHECK_EQ_INT(run_cmd(cmd, out, sizeof out), 1);
    CHECK(strstr(out, "/nonexistent/x.gguf") != NULL);
}

int main(int argc, char **argv) {
    TEST_MAIN_BEGIN(argc, argv);
    TEST_RUN(spm_vectors);
    TEST_RUN(bpe_vectors);
    TEST_RUN(refs_target_prompts);
    TEST_RUN(refs_draft_prompts);
    TEST_RUN(refs_stories_prompts);
    TEST_RUN(llama_cpp_golden_cases);
    TEST_RUN(spm_hand_worked);
    TEST_RUN(spm_hand_worked_decode);
    TEST_RUN(bpe_hand_worked);
    TEST_RUN(stream_split_characters);
    TEST_RUN(stream_real_vocab);
    TEST_RUN(special_tokens_real);
    TEST_RUN(round_trip_spm);
    TEST_RUN(round_trip_bpe);
    TEST_RUN(round_trip_target_prompts);
    TEST_RUN(malformed_vocab);
    TEST_RUN(malformed_gguf);
    TEST_RUN(split_matches_pcre2);
    TEST_RUN(unicode_classes);
    TEST_RUN(encode_4k_prompt_speed);
    TEST_RUN(cli_tokenize);
    return TEST_MAIN_END();
}
