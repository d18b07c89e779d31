// tok_new_from_gguf: reads the tokenizer.ggml.* metadata into a struct tok_vocab.
#include <stdlib.h>
#include <string.h>

#include "shared/status.h"
#include "worker/engine/tok_internal.h"

// Pre-tokenizer names llama.cpp maps to its LLAMA3 regex.
static const char *const llama3_names[] = {"llama3",   "llama-v3",  "llama-bpe",
                                           "falcon3",  "falcon-h1", "pixtral",
                                           "midm-2.0", "lfm2",      "jina-v5-nano"};

struct gguf_arrays {
    struct gguf_str *tokens, *merges;
    float *scores;
    int32_t *types;
    const char **texts, **merge_texts;
    uint32_t *lens, *merge_lens;
};

static void arrays_free(struct gguf_arrays *a) {
    free(a->tokens);
    free(a->merges);
    free(a->scores);
    free(a->types);
    free(a->texts);
    free(a->lens);
    free(a->merge_texts);
    free(a->merge_lens);
}

static int fail_key(char *err, size_t err_size, int rc, const char *key, const char *what) {
    if (rc == SPECD_ERR_NOMEM)
        return specd_fail(err, err_size, rc, "out of memory reading %s", key);
    return specd_fail(err, err_size, rc < 0 ? rc : SPECD_ERR_FORMAT, "%s: %s", key, what);
}

static int read_model(const gguf_file *f, struct tok_vocab *v, char *err, size_t err_size) {
    struct gguf_str s;
    int rc = gguf_get_str(f, "tokenizer.ggml.model", &s);
    if (rc)
        return fail_key(err, err_size, rc, "tokenizer.ggml.model",
                        rc == 1 ? "missing" : "not a string");
    if (gguf_str_eq(s, "llama")) {
        v->model = TOK_MODEL_SPM;
        return 0;
    }
    if (!gguf_str_eq(s, "gpt2"))
        return specd_fail(err, err_size, SPECD_ERR_UNSUPPORTED,
                          "tokenizer model \"%.*s\" is not supported (only llama and gpt2)",
                          (int)(s.len > 64 ? 64 : s.len), s.data);
    v->model = TOK_MODEL_BPE;
    rc = gguf_get_str(f, "tokenizer.ggml.pre", &s);
    if (rc < 0)
        return fail_key(err, err_size, rc, "tokenizer.ggml.pre", "not a string");
    for (size_t i = 0; rc == 0 && i < sizeof llama3_names / sizeof llama3_names[0]; i++)
        if (gguf_str_eq(s, llama3_names[i]))
            v->pre = TOK_PRE_LLAMA3;
    if (v->pre != TOK_PRE_LLAMA3)
        return specd_fail(err, err_size, SPECD_ERR_UNSUPPORTED,
                          "BPE pre-tokenizer \"%.*s\" is not supported (only llama-bpe)",
                          rc ? 0 : (int)(s.len > 64 ? 64 : s.len), rc ? "" : s.data);
    return 0;
}

// Splits gguf strings into the pointer and length arrays struct tok_vocab takes.
static int split_strs(const struct gguf_str *s, uint64_t n, const char ***texts, uint32_t **lens) {
    *texts = malloc((n ? n : 1) * sizeof **texts);
    *lens = malloc((n ? n : 1) * sizeof **lens);
    if (!*texts || !*lens)
        return SPECD_ERR_NOMEM;
    for (uint64_t i = 0; i < n; i++) {
        if (s[i].len > UINT32_MAX)
            return SPECD_ERR_FORMAT;
        (*texts)[i] = s[i].data;
        (*lens)[i] = (uint32_t)s[i].len;
    }
    return 0;
}

static int read_arrays(const gguf_file *f, struct tok_vocab *v, struct gguf_arrays *a, char *err,
                       size_t err_size) {
    uint64_t n = 0, m = 0;
    int rc = gguf_get_str_array(f, "tokenizer.ggml.tokens", &n, &a->tokens);
    if (rc)
        return fail_key(err, err_size, rc, "tokenizer.ggml.tokens",
                        rc == 1 ? "missing" : "not a string array");
    if (n == 0 || n > INT32_MAX)
        return fail_key(err, err_size, SPECD_ERR_FORMAT, "tokenizer.ggml.tokens", "bad length");
    v->n_tokens = (int32_t)n;
    if (split_strs(a->tokens, n, &a->texts, &a->lens))
        return fail_key(err, err_size, SPECD_ERR_NOMEM, "tokenizer.ggml.tokens", "");
    v->texts = a->texts;
    v->text_lens = a->lens;

    rc = gguf_get_i32_array(f, "tokenizer.ggml.token_type", &m, &a->types);
    if (rc)
        return fail_key(err, err_size, rc, "tokenizer.ggml.token_type",
                        rc == 1 ? "missing" : "not an integer array");
    if (m != n)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "tokenizer.ggml.token_type has %llu entries for %llu tokens",
                          (unsigned long long)m, (unsigned long long)n);
    v->types = a->types;

    rc = gguf_get_f32_array(f, "tokenizer.ggml.scores", &m, &a->scores);
    if (rc < 0 || (rc == 1 && v->model == TOK_MODEL_SPM))
        return fail_key(err, err_size, rc, "tokenizer.ggml.scores",
                        rc == 1 ? "missing (needed by SentencePiece)" : "not a numeric array");
    if (rc == 0 && m != n)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "tokenizer.ggml.scores has %llu entries for %llu tokens",
                          (unsigned long long)m, (unsigned long long)n);
    v->scores = a->scores;

    if (v->model != TOK_MODEL_BPE)
        return 0;
    rc = gguf_get_str_array(f, "tokenizer.ggml.merges", &m, &a->merges);
    if (rc)
        return fail_key(err, err_size, rc, "tokenizer.ggml.merges",
                        rc == 1 ? "missing" : "not a string array");
    if (m == 0 || m > INT32_MAX)
        return fail_key(err, err_size, SPECD_ERR_FORMAT, "tokenizer.ggml.merges", "bad length");
    v->n_merges = (int32_t)m;
    rc = split_strs(a->merges, m, &a->merge_texts, &a->merge_lens);
    if (rc)
        return fail_key(err, err_size, rc, "tokenizer.ggml.merges", "string too long");
    v->merges = a->merge_texts;
    v->merge_lens = a->merge_lens;
    return 0;
}

// An id key: absent leaves the model default; -1 or 0xFFFFFFFF mean none.
static int read_id(const gguf_file *f, const char *key, int32_t *out, char *err, size_t err_size) {
    int64_t v;
    int rc = gguf_get_i64(f, key, &v);
    if (rc == 1)
        return 0;
    if (rc)
        return fail_key(err, err_size, rc, key, "not an integer");
    if (v == -1 || v == 0xFFFFFFFFll)
        *out = TOK_NULL;
    else if (v < 0 || v > INT32_MAX)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s: bad token id %lld", key,
                          (long long)v);
    else
        *out = (int32_t)v;
    return 0;
}

static int read_flag(const gguf_file *f, const char *key, int *out, char *err, size_t err_size) {
    bool b;
    int rc = gguf_get_bool(f, key, &b);
    if (rc == 1)
        return 0;
    if (rc)
        return fail_key(err, err_size, rc, key, "not a bool");
    *out = b;
    return 0;
}

static int read_settings(const gguf_file *f, struct tok_vocab *v, char *err, size_t err_size) {
    int rc = read_id(f, "tokenizer.ggml.bos_token_id", &v->bos_id, err, err_size);
    rc = rc ? rc : read_id(f, "tokenizer.ggml.eos_token_id", &v->eos_id, err, err_size);
    rc = rc ? rc : read_id(f, "tokenizer.ggml.unknown_token_id", &v->unk_id, err, err_size);
    rc = rc ? rc : read_id(f, "tokenizer.ggml.padding_token_id", &v->pad_id, err, err_size);
    rc = rc ? rc : read_id(f, "tokenizer.ggml.eot_token_id", &v->eot_id, err, err_size);
    rc = rc ? rc : read_id(f, "tokenizer.ggml.eom_token_id", &v->eom_id, err, err_size);
    rc = rc ? rc : read_flag(f, "tokenizer.ggml.add_bos_token", &v->add_bos, err, err_size);
    rc = rc ? rc : read_flag(f, "tokenizer.ggml.add_eos_token", &v->add_eos, err, err_size);
    rc = rc ? rc
            : read_flag(f, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix, err, err_size);
    return rc;
}

int tok_new_from_gguf(const gguf_file *f, tok **out, char *err, size_t err_size) {
    if (!out)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "tok_new_from_gguf: out is NULL");
    *out = NULL;
    if (!f)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "tok_new_from_gguf: file is NULL");
    struct tok_vocab v = tok_default_vocab();
    struct gguf_arrays a;
    memset(&a, 0, sizeof a);
    int rc = read_model(f, &v, err, err_size);
    rc = rc ? rc : read_arrays(f, &v, &a, err, err_size);
    rc = rc ? rc : read_settings(f, &v, err, err_size);
    rc = rc ? rc : tok_new_from_vocab(&v, out, err, err_size);
    arrays_free(&a);
    return rc;
}
