// Tests of the GGUF reader (worker/engine/gguf.h) and writer (worker/engine/gguf_write.h).
//
// The reader is checked against files assembled byte by byte here from the GGUF specification
// (an encoder independent of the writer), against the real models in ../shared/models (values
// from their MANIFEST and from an independent Python dump), and against every malformed case it
// must reject. The writer is checked byte for byte against the hand-assembled encoding.
//
// Set SPECD_GGUF_CORPUS_DIR=dir to have the test `write_seed_corpus` write the fuzzer's seeds.
#include "tests/test.h"

#include "shared/status.h"
#include "worker/engine/gguf.h"
#include "worker/engine/gguf_write.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

// ---- a hand encoder, following the specification ---------------------------------------------

struct bytes {
    uint8_t *p;
    size_t len, cap;
};

static void b_raw(struct bytes *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void b_le(struct bytes *b, uint64_t v, int n) {
    for (int i = 0; i < n; i++) {
        uint8_t x = (uint8_t)(v >> (8 * i));
        b_raw(b, &x, 1);
    }
}

static void b_u32(struct bytes *b, uint32_t v) {
    b_le(b, v, 4);
}

static void b_u64(struct bytes *b, uint64_t v) {
    b_le(b, v, 8);
}

static void b_str(struct bytes *b, const char *s) {
    b_u64(b, strlen(s));
    b_raw(b, s, strlen(s));
}

static void b_zeros(struct bytes *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        b_le(b, 0, 1);
}

static void b_pad(struct bytes *b, size_t alignment) {
    b_zeros(b, (alignment - b->len % alignment) % alignment);
}

static void b_header(struct bytes *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    b_raw(b, "GGUF", 4);
    b_u32(b, version);
    b_u64(b, n_tensors);
    b_u64(b, n_kv);
}

static void b_kv_u32(struct bytes *b, const char *key, uint32_t v) {
    b_str(b, key);
    b_u32(b, GGUF_TYPE_UINT32);
    b_u32(b, v);
}

static void b_kv_str(struct bytes *b, const char *key, const char *s) {
    b_str(b, key);
    b_u32(b, GGUF_TYPE_STRING);
    b_str(b, s);
}

static void b_tensor(struct bytes *b, const char *name, uint32_t n_dims, const int64_t *ne,
                     uint32_t type, uint64_t offset) {
    b_str(b, name);
    b_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        b_u64(b, (uint64_t)ne[d]);
    b_u32(b, type);
    b_u64(b, offset);
}

// A file with one metadata pair and one tensor whose data section holds data_bytes zeros.
static void b_one_tensor(struct bytes *b, uint32_t n_dims, const int64_t *ne, uint32_t type,
                         uint64_t offset, size_t data_bytes) {
    b_header(b, 3, 1, 1);
    b_kv_str(b, "general.architecture", "llama");
    b_tensor(b, "blk.0.w", n_dims, ne, type, offset);
    b_pad(b, 32);
    b_zeros(b, data_bytes);
}

// ---- helpers ------------------------------------------------------------------------------------

#define EXPECT_FAIL(data, size, params, code, substr)                                              \
    expect_fail_at(__FILE__, __LINE__, data, size, params, code, substr)
#define EXPECT_FAIL_B(b, code, substr) EXPECT_FAIL((b)->p, (b)->len, NULL, code, substr)

static void expect_fail_at(const char *file, int line, const void *data, size_t size,
                           const struct gguf_params *params, int code, const char *substr) {
    char err[512] = "";
    gguf_file *sentinel = (gguf_file *)&err, *f = sentinel;
    int rc = gguf_open_memory(data, size, params, &f, err, sizeof err);
    if (rc != code)
        TEST_FAIL_AT(file, line, "expected %s, got %s: %s", specd_status_name(code),
                     specd_status_name(rc), err);
    if (rc == SPECD_OK)
        gguf_free(f);
    else if (f != NULL)
        TEST_FAIL_AT(file, line, "*out not NULL after a failure");
    if (!strstr(err, substr))
        TEST_FAIL_AT(file, line, "message \"%s\" lacks \"%s\"", err, substr);
    else if (rc != SPECD_OK)
        fprintf(stderr, "  rejected as expected: %s\n", err);
}

static gguf_file *open_ok(const void *data, size_t size) {
    char err[512] = "";
    gguf_file *f = NULL;
    int rc = gguf_open_memory(data, size, NULL, &f, err, sizeof err);
    if (rc != SPECD_OK)
        fprintf(stderr, "  gguf_open_memory: %s: %s\n", specd_status_name(rc), err);
    return f;
}

static bool str_is(struct gguf_str s, const char *c) {
    return s.len == strlen(c) && memcmp(s.data, c, s.len) == 0;
}

static uint32_t rng_next(uint64_t *state) { // xorshift64*
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 2685821657736338717ull) >> 32);
}

// Calls every accessor on every key and tensor; returns a checksum so nothing is optimised out.
static uint64_t touch_everything(const gguf_file *f) {
    uint64_t sum = gguf_version(f) + gguf_alignment(f);
    for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
        struct gguf_str k = gguf_kv_key(f, i);
        char key[256];
        size_t n = k.len < sizeof key - 1 ? (size_t)k.len : sizeof key - 1;
        memcpy(key, k.data, n);
        key[n] = '\0';
        sum += (uint64_t)gguf_kv_type(f, i) + (uint64_t)gguf_find_key(f, key);
        uint32_t u32;
        int64_t i64;
        float f32;
        bool bo;
        struct gguf_str s;
        enum gguf_type et;
        uint64_t len;
        const void *raw;
        struct gguf_str *strs;
        float *fa;
        int32_t *ia;
        if (gguf_get_u32(f, key, &u32) == 0)
            sum += u32;
        if (gguf_get_i64(f, key, &i64) == 0)
            sum += (uint64_t)i64;
        if (gguf_get_f32(f, key, &f32) == 0)
            sum += f32 == f32;
        if (gguf_get_bool(f, key, &bo) == 0)
            sum += bo;
        if (gguf_get_str(f, key, &s) == 0 && s.len)
            sum += (uint8_t)s.data[0] + (uint8_t)s.data[s.len - 1];
        if (gguf_get_array(f, key, &et, &len, &raw) == 0 && len)
            sum += *(const uint8_t *)raw;
        if (gguf_get_str_array(f, key, &len, &strs) == 0) {
            for (uint64_t j = 0; j < len; j++)
                sum += strs[j].len ? (uint8_t)strs[j].data[strs[j].len - 1] : 0;
            free(strs);
        }
        if (gguf_get_f32_array(f, key, &len, &fa) == 0) {
            sum += len ? fa[len - 1] == fa[len - 1] : 0;
            free(fa);
        }
        if (gguf_get_i32_array(f, key, &len, &ia) == 0) {
            sum += len ? (uint64_t)ia[len - 1] : 0;
            free(ia);
        }
    }
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const struct gguf_tensor_info *t = gguf_tensor(f, i);
        const uint8_t *d = t->data;
        sum += d[0] + d[t->n_bytes - 1] + t->n_dims + (uint64_t)t->ne[3];
    }
    return sum;
}

// ---- the sample model made with the writer ------------------------------------------------------

struct sample_tensor {
    const char *name;
    uint32_t n_dims;
    int64_t ne[4];
    enum ggml_dtype type;
    size_t n_bytes; // computed by hand from the block sizes in the GGUF/ggml documentation
};

static const struct sample_tensor sample_tensors[] = {
    {"token_embd.weight", 2, {8, 5, 1, 1}, GGML_TYPE_F32, 8 * 5 * 4},
    {"blk.0.attn_norm.weight", 1, {7, 1, 1, 1}, GGML_TYPE_F16, 7 * 2},
    {"blk.0.attn_q.weight", 3, {3, 2, 5, 1}, GGML_TYPE_BF16, 3 * 2 * 5 * 2},
    {"blk.0.ffn_up.weight", 2, {64, 3, 1, 1}, GGML_TYPE_Q8_0, 2 * 3 * 34},
    {"output.weight", 4, {32, 2, 1, 3}, GGML_TYPE_Q4_0, 1 * 2 * 1 * 3 * 18},
};
#define N_SAMPLE_TENSORS (sizeof sample_tensors / sizeof sample_tensors[0])

static uint8_t sample_byte(size_t tensor, size_t i) {
    return (uint8_t)(i * 7 + tensor * 31 + 3);
}

// Adds the sample tensors (data from sample_byte) to w.
static void add_sample_tensors(gguf_writer *w) {
    for (size_t t = 0; t < N_SAMPLE_TENSORS; t++) {
        const struct sample_tensor *s = &sample_tensors[t];
        uint8_t data[512];
        for (size_t i = 0; i < s->n_bytes; i++)
            data[i] = sample_byte(t, i);
        CHECK_EQ_INT(
            gguf_writer_add_tensor(w, s->name, s->n_dims, s->ne, s->type, data, s->n_bytes),
            SPECD_OK);
    }
}

// A writer holding a small llama-like model with metadata of every type.
static gguf_writer *make_sample(uint32_t alignment) {
    static const char *const tokens[] = {"<unk>", "<s>", "</s>", "", "hello"};
    static const float scores[] = {0.0f, -1.5f, 2.25f, 1e-3f, -7.0f};
    static const int32_t types[] = {2, 3, 3, 1, -4};
    gguf_writer *w = gguf_writer_new();
    if (!w)
        abort();
    CHECK_EQ_INT(gguf_writer_add_str(w, "general.architecture", "llama"), 0);
    if (alignment)
        CHECK_EQ_INT(gguf_writer_set_alignment(w, alignment), 0);
    CHECK_EQ_INT(gguf_writer_add_u32(w, "llama.block_count", 2), 0);
    CHECK_EQ_INT(gguf_writer_add_u32(w, "llama.embedding_length", 8), 0);
    CHECK_EQ_INT(gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f), 0);
    CHECK_EQ_INT(gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", true), 0);
    CHECK_EQ_INT(gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", tokens, 5), 0);
    CHECK_EQ_INT(gguf_writer_add_f32_array(w, "tokenizer.ggml.scores", scores, 5), 0);
    CHECK_EQ_INT(gguf_writer_add_i32_array(w, "tokenizer.ggml.token_type", types, 5), 0);
    add_sample_tensors(w);
    return w;
}

static void *finish(const gguf_writer *w, size_t *size) {
    void *buf = NULL;
    CHECK_EQ_INT(gguf_writer_finish(w, &buf, size), SPECD_OK);
    return buf;
}

// ---- writer and reader round trips --------------------------------------------------------------

TEST(roundtrip_scalars) {
    gguf_writer *w = gguf_writer_new();
    REQUIRE(w);
    CHECK_EQ_INT(gguf_writer_add_u8(w, "u8", 255), 0);
    CHECK_EQ_INT(gguf_writer_add_i8(w, "i8", -128), 0);
    CHECK_EQ_INT(gguf_writer_add_u16(w, "u16", 65535), 0);
    CHECK_EQ_INT(gguf_writer_add_i16(w, "i16", -32768), 0);
    CHECK_EQ_INT(gguf_writer_add_u32(w, "u32", 4000000000u), 0);
    CHECK_EQ_INT(gguf_writer_add_i32(w, "i32", INT32_MIN), 0);
    CHECK_EQ_INT(gguf_writer_add_u64(w, "u64", UINT64_MAX), 0);
    CHECK_EQ_INT(gguf_writer_add_i64(w, "i64", INT64_MIN), 0);
    CHECK_EQ_INT(gguf_writer_add_u64(w, "u64_small", 12345), 0);
    CHECK_EQ_INT(gguf_writer_add_i64(w, "i64_small", 77), 0);
    CHECK_EQ_INT(gguf_writer_add_f32(w, "f32", -1.5f), 0);
    CHECK_EQ_INT(gguf_writer_add_f64(w, "f64", 0.1), 0);
    CHECK_EQ_INT(gguf_writer_add_bool(w, "yes", true), 0);
    CHECK_EQ_INT(gguf_writer_add_bool(w, "no", false), 0);
    CHECK_EQ_INT(gguf_writer_add_str(w, "s", "hello"), 0);
    CHECK_EQ_INT(gguf_writer_add_str(w, "empty", ""), 0);
    CHECK_EQ_INT(gguf_writer_add_str_n(w, "nul", "a\0b", 3), 0);
    size_t size;
    void *buf = finish(w, &size);
    gguf_file *f = open_ok(buf, size);
    REQUIRE(f);
    CHECK_EQ_INT(gguf_version(f), 3);
    CHECK_EQ_INT(gguf_alignment(f), 32);
    CHECK_EQ_INT(gguf_n_kv(f), 17);
    CHECK_EQ_INT(gguf_n_tensors(f), 0);
    CHECK(str_is(gguf_kv_key(f, 0), "u8"));
    CHECK(str_is(gguf_kv_key(f, 16), "nul"));
    CHECK_EQ_INT(gguf_kv_type(f, gguf_find_key(f, "i16")), GGUF_TYPE_INT16);
    CHECK_EQ_INT(gguf_kv_type(f, gguf_find_key(f, "f64")), GGUF_TYPE_FLOAT64);
    CHECK_EQ_INT(gguf_find_key(f, "s"), 14);
    CHECK_EQ_INT(gguf_find_key(f, "absent"), -1);
    CHECK_EQ_INT(gguf_find_key(f, "u"), -1);

    uint32_t u32 = 0;
    int64_t i64 = 0;
    CHECK_EQ_INT(gguf_get_u32(f, "u8", &u32), 0);
    CHECK_EQ_INT(u32, 255);
    CHECK_EQ_INT(gguf_get_u32(f, "u16", &u32), 0);
    CHECK_EQ_INT(u32, 65535);
    CHECK_EQ_INT(gguf_get_u32(f, "u32", &u32), 0);
    CHECK_EQ_INT(u32, 4000000000u);
    CHECK_EQ_INT(gguf_get_u32(f, "u64_small", &u32), 0);
    CHECK_EQ_INT(u32, 12345);
    CHECK_EQ_INT(gguf_get_u32(f, "i64_small", &u32), 0);
    CHECK_EQ_INT(u32, 77);
    CHECK_EQ_INT(gguf_get_u32(f, "i8", &u32), SPECD_ERR_FORMAT);  // negative
    CHECK_EQ_INT(gguf_get_u32(f, "u64", &u32), SPECD_ERR_FORMAT); // too large
    CHECK_EQ_INT(gguf_get_u32(f, "f32", &u32), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(gguf_get_u32(f, "yes", &u32), SPECD_ERR_FORMAT);
    u32 = 99;
    CHECK_EQ_INT(gguf_get_u32(f, "absent", &u32), 1);
    CHECK_EQ_INT(u32, 99);
    CHECK_EQ_INT(gguf_get_i64(f, "i8", &i64), 0);
    CHECK_EQ_INT(i64, -128);
    CHECK_EQ_INT(gguf_get_i64(f, "i16", &i64), 0);
    CHECK_EQ_INT(i64, -32768);
    CHECK_EQ_INT(gguf_get_i64(f, "i32", &i64), 0);
    CHECK_EQ_INT(i64, INT32_MIN);
    CHECK_EQ_INT(gguf_get_i64(f, "i64", &i64), 0);
    CHECK(i64 == INT64_MIN);
    CHECK_EQ_INT(gguf_get_i64(f, "u32", &i64), 0);
    CHECK_EQ_INT(i64, 4000000000ll);
    CHECK_EQ_INT(gguf_get_i64(f, "u64", &i64), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(gguf_get_i64(f, "s", &i64), SPECD_ERR_FORMAT);

    float x = 0;
    CHECK_EQ_INT(gguf_get_f32(f, "f32", &x), 0);
    CHECK(x == -1.5f);
    CHECK_EQ_INT(gguf_get_f32(f, "f64", &x), 0);
    CHECK(x == 0.1f);
    CHECK_EQ_INT(gguf_get_f32(f, "u32", &x), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(gguf_get_f32(f, "absent", &x), 1);

    bool b = false;
    CHECK_EQ_INT(gguf_get_bool(f, "yes", &b), 0);
    CHECK(b);
    CHECK_EQ_INT(gguf_get_bool(f, "no", &b), 0);
    CHECK(!b);
    CHECK_EQ_INT(gguf_get_bool(f, "u8", &b), SPECD_ERR_FORMAT);

    struct gguf_str s;
    CHECK_EQ_INT(gguf_get_str(f, "s", &s), 0);
    CHECK(str_is(s, "hello"));
    CHECK_EQ_INT(gguf_get_str(f, "empty", &s), 0);
    CHECK_EQ_INT(s.len, 0);
    CHECK_EQ_INT(gguf_get_str(f, "nul", &s), 0);
    CHECK(s.len == 3 && memcmp(s.data, "a\0b", 3) == 0);
    CHECK_EQ_INT(gguf_get_str(f, "u8", &s), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(gguf_get_str(f, "absent", &s), 1);
    gguf_free(f);
    free(buf);
    gguf_writer_free(w);
}

TEST(roundtrip_arrays) {
    const uint8_t u8[] = {0, 1, 255};
    const int8_t i8[] = {-128, 0, 127};
    const uint16_t u16[] = {65535, 2};
    const int16_t i16[] = {-32768, 32767};
    const uint32_t u32[] = {4294967295u, 7};
    const int32_t i32[] = {INT32_MIN, -1, INT32_MAX};
    const uint64_t u64[] = {UINT64_MAX};
    const int64_t i64[] = {-5, 1ll << 40};
    const float f32[] = {1.0f, -2.0f, 3.0f};
    const double f64[] = {0.5, -1e300};
    const bool bools[] = {true, false, true};
    const char *const strs[] = {"", "a", "\xe2\x96\x81the"};
    gguf_writer *w = gguf_writer_new();
    REQUIRE(w);
    CHECK_EQ_INT(gguf_writer_add_array(w, "u8", GGUF_TYPE_UINT8, u8, 3), 0);
    CHECK_EQ_INT(gguf_writer_add_array(w, "i8", GGUF_TYPE_INT8, i8, 3), 0);
    CHECK_EQ_INT(gguf_writer_add_array(w, "u16", GGUF_TYPE_UINT16, u16, 2), 0);
    CHECK_EQ_INT(gguf_writer_add_array(w, "i16", GGUF_TYPE_INT16, i16, 2), 0);
    CHECK_EQ_INT(gguf_writer_add_u32_array(w, "u32", u32, 2), 0);
    CHECK_EQ_INT(gguf_writer_add_i32_array(w, "i32", i32, 3), 0);
    CHECK_EQ_INT(gguf_writer_add_array(w, "u64", GGUF_TYPE_UINT64, u64, 1), 0);
    CHECK_EQ_INT(gguf_writer_add_array(w, "i64", GGUF_TYPE_INT64, i64, 2), 0);
    CHECK_EQ_INT(gguf_writer_add_f32_array(w, "f32", f32, 3), 0);
    CHECK_EQ_INT(gguf_writer_add_array(w, "f64", GGUF_TYPE_FLOAT64, f64, 2), 0);
    CHECK_EQ_INT(gguf_writer_add_array(w, "bool", GGUF_TYPE_BOOL, bools, 3), 0);
    CHECK_EQ_INT(gguf_writer_add_str_array(w, "strs", strs, 3), 0);
    CHECK_EQ_INT(gguf_writer_add_f32_array(w, "none", NULL, 0), 0);
    CHECK_EQ_INT(gguf_writer_add_str_array(w, "no_strs", NULL, 0), 0);
    CHECK_EQ_INT(gguf_writer_add_u32(w, "scalar", 1), 0);
    size_t size;
    void *buf = finish(w, &size);
    gguf_file *f = open_ok(buf, size);
    REQUIRE(f);

    enum gguf_type et;
    uint64_t n = 0;
    const void *raw;
    CHECK_EQ_INT(gguf_get_array(f, "i16", &et, &n, &raw), 0);
    CHECK_EQ_INT(et, GGUF_TYPE_INT16);
    CHECK_EQ_INT(n, 2);
    CHECK(memcmp(raw, "\x00\x80\xff\x7f", 4) == 0); // little-endian -32768, 32767
    CHECK_EQ_INT(gguf_get_array(f, "u64", &et, &n, &raw), 0);
    CHECK(memcmp(raw, "\xff\xff\xff\xff\xff\xff\xff\xff", 8) == 0);
    CHECK_EQ_INT(gguf_get_array(f, "bool", &et, &n, &raw), 0);
    CHECK(et == GGUF_TYPE_BOOL && n == 3 && memcmp(raw, "\x01\x00\x01", 3) == 0);
    CHECK_EQ_INT(gguf_get_array(f, "strs", &et, &n, &raw), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(gguf_get_array(f, "scalar", &et, &n, &raw), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(gguf_get_array(f, "absent", &et, &n, &raw), 1);

    struct gguf_str *s = NULL;
    CHECK_EQ_INT(gguf_get_str_array(f, "strs", &n, &s), 0);
    REQUIRE(s && n == 3);
    CHECK(str_is(s[0], "") && str_is(s[1], "a") && str_is(s[2], "\xe2\x96\x81the"));
    free(s);
    CHECK_EQ_INT(gguf_get_str_array(f, "no_strs", &n, &s), 0);
    CHECK_EQ_INT(n, 0);
    free(s);
    CHECK_EQ_INT(gguf_get_str_array(f, "f32", &n, &s), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(gguf_get_str_array(f, "absent", &n, &s), 1);

    float *fa = NULL;
    CHECK_EQ_INT(gguf_get_f32_array(f, "f32", &n, &fa), 0);
    CHECK(n == 3 && fa[0] == 1.0f && fa[1] == -2.0f && fa[2] == 3.0f);
    free(fa);
    CHECK_EQ_INT(gguf_get_f32_array(f, "i16", &n, &fa), 0);
    CHECK(n == 2 && fa[0] == -32768.0f && fa[1] == 32767.0f);
    free(fa);
    CHECK_EQ_INT(gguf_get_f32_array(f, "f64", &n, &fa), 0);
    CHECK(n == 2 && fa[0] == 0.5f && fa[1] == -INFINITY);
    free(fa);
    CHECK_EQ_INT(gguf_get_f32_array(f, "bool", &n, &fa), 0);
    CHECK(n == 3 && fa[0] == 1.0f && fa[1] == 0.0f);
    free(fa);
    CHECK_EQ_INT(gguf_get_f32_array(f, "none", &n, &fa), 0);
    CHECK_EQ_INT(n, 0);
    free(fa);
    CHECK_EQ_INT(gguf_get_f32_array(f, "strs", &n, &fa), SPECD_ERR_FORMAT);

    int32_t *ia = NULL;
    CHECK_EQ_INT(gguf_get_i32_array(f, "i32", &n, &ia), 0);
    CHECK(n == 3 && ia[0] == INT32_MIN && ia[1] == -1 && ia[2] == INT32_MAX);
    free(ia);
    CHECK_EQ_INT(gguf_get_i32_array(f, "u8", &n, &ia), 0);
    CHECK(n == 3 && ia[2] == 255);
    free(ia);
    CHECK_EQ_INT(gguf_get_i32_array(f, "i8", &n, &ia), 0);
    CHECK(n == 3 && ia[0] == -128);
    free(ia);
    CHECK_EQ_INT(gguf_get_i32_array(f, "f32", &n, &ia), 0); // integral floats convert
    CHECK(n == 3 && ia[1] == -2);
    free(ia);
    CHECK_EQ_INT(gguf_get_i32_array(f, "u32", &n, &ia), SPECD_ERR_FORMAT); // 4294967295
    CHECK_EQ_INT(gguf_get_i32_array(f, "i64", &n, &ia), SPECD_ERR_FORMAT); // 1 << 40
    CHECK_EQ_INT(gguf_get_i32_array(f, "f64", &n, &ia), SPECD_ERR_FORMAT); // 0.5
    CHECK_EQ_INT(gguf_get_i32_array(f, "u64", &n, &ia), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(gguf_get_i32_array(f, "absent", &n, &ia), 1);
    gguf_free(f);
    free(buf);
    gguf_writer_free(w);
}

// Checks the sample tensors; data must be aligned relative to `base` (the file's first byte).
static void check_sample_tensors(const gguf_file *f, uintptr_t base, uint32_t align) {
    CHECK_EQ_INT(gguf_n_tensors(f), N_SAMPLE_TENSORS);
    for (size_t t = 0; t < N_SAMPLE_TENSORS; t++) {
        const struct sample_tensor *s = &sample_tensors[t];
        const struct gguf_tensor_info *info = gguf_find_tensor(f, s->name);
        REQUIRE(info);
        CHECK(info == gguf_tensor(f, t));
        CHECK(str_is(info->name, s->name));
        CHECK_EQ_INT(info->n_dims, s->n_dims);
        for (int d = 0; d < 4; d++)
            CHECK_EQ_INT(info->ne[d], s->ne[d]);
        CHECK_EQ_INT(info->type, s->type);
        CHECK_EQ_INT(info->n_bytes, s->n_bytes);
        CHECK_EQ_INT(info->offset % align, 0);
        CHECK_EQ_INT(((uintptr_t)info->data - base) % align, 0);
        const uint8_t *d = info->data;
        bool same = true;
        for (size_t i = 0; i < s->n_bytes; i++)
            same = same && d[i] == sample_byte(t, i);
        CHECK(same);
    }
    CHECK(gguf_find_tensor(f, "absent.weight") == NULL);
    CHECK(gguf_find_tensor(f, "output") == NULL);
}

TEST(roundtrip_tensors_every_alignment) {
    const uint32_t alignments[] = {0, 1, 8, 32, 64, 256}; // 0: the default, 32
    for (size_t a = 0; a < sizeof alignments / sizeof alignments[0]; a++) {
        gguf_writer *w = make_sample(alignments[a]);
        size_t size;
        uint8_t *buf = finish(w, &size);
        gguf_file *f = open_ok(buf, size);
        REQUIRE(f);
        uint32_t align = alignments[a] ? alignments[a] : 32;
        CHECK_EQ_INT(gguf_alignment(f), align);
        check_sample_tensors(f, (uintptr_t)buf, align);
        uint32_t v = 0;
        CHECK_EQ_INT(gguf_get_u32(f, "llama.embedding_length", &v), 0);
        CHECK_EQ_INT(v, 8);
        uint64_t n;
        int32_t *types;
        CHECK_EQ_INT(gguf_get_i32_array(f, "tokenizer.ggml.token_type", &n, &types), 0);
        CHECK(n == 5 && types[4] == -4);
        free(types);
        gguf_free(f);
        free(buf);
        gguf_writer_free(w);
    }
}

TEST(version_2_is_accepted) {
    struct bytes b = {0};
    b_header(&b, 2, 0, 1);
    b_kv_u32(&b, "x", 5);
    gguf_file *f = open_ok(b.p, b.len);
    REQUIRE(f);
    CHECK_EQ_INT(gguf_version(f), 2);
    uint32_t v = 0;
    CHECK_EQ_INT(gguf_get_u32(f, "x", &v), 0);
    CHECK_EQ_INT(v, 5);
    gguf_free(f);
    free(b.p);
}

// The writer's bytes must equal the specification's encoding assembled by hand.
TEST(writer_bytes_match_the_spec) {
    const int64_t ne_a[2] = {4, 2}, ne_b[1] = {32};
    float a[8];
    uint8_t q[34];
    for (int i = 0; i < 8; i++)
        a[i] = (float)i - 2.5f;
    for (int i = 0; i < 34; i++)
        q[i] = (uint8_t)(200 + i);
    gguf_writer *w = gguf_writer_new();
    REQUIRE(w);
    CHECK_EQ_INT(gguf_writer_add_str(w, "general.architecture", "llama"), 0);
    CHECK_EQ_INT(gguf_writer_set_alignment(w, 64), 0);
    CHECK_EQ_INT(gguf_writer_add_i16(w, "k.i16", -2), 0);
    CHECK_EQ_INT(gguf_writer_add_tensor(w, "a", 2, ne_a, GGML_TYPE_F32, a, sizeof a), 0);
    CHECK_EQ_INT(gguf_writer_add_tensor(w, "b", 1, ne_b, GGML_TYPE_Q8_0, q, sizeof q), 0);
    size_t size;
    uint8_t *buf = finish(w, &size);

    struct bytes e = {0};
    b_header(&e, 3, 2, 3);
    b_kv_str(&e, "general.architecture", "llama");
    b_kv_u32(&e, "general.alignment", 64);
    b_str(&e, "k.i16");
    b_u32(&e, GGUF_TYPE_INT16);
    b_le(&e, 0xfffe, 2);
    b_tensor(&e, "a", 2, ne_a, GGML_TYPE_F32, 0);
    b_tensor(&e, "b", 1, ne_b, GGML_TYPE_Q8_0, 64); // a's 32 bytes padded to 64
    b_pad(&e, 64);
    b_raw(&e, a, sizeof a); // the host is little-endian, as GGUF
    b_pad(&e, 64);
    b_raw(&e, q, sizeof q);
    b_pad(&e, 64);
    CHECK_EQ_INT(size, e.len);
    CHECK(size == e.len && memcmp(buf, e.p, size) == 0);
    free(e.p);
    free(buf);
    gguf_writer_free(w);
}

TEST(writer_rejects_bad_input) {
    gguf_writer *w = make_sample(0);
    size_t size0, size1;
    uint8_t *before = finish(w, &size0);
    const int64_t ne[4] = {32, 2, 1, 1}, zero[1] = {0}, odd[1] = {33};
    uint8_t data[256] = {0};
    CHECK_EQ_INT(gguf_writer_add_u32(w, "llama.block_count", 3), SPECD_ERR_INVALID); // duplicate
    CHECK_EQ_INT(gguf_writer_add_str(w, "general.architecture", "x"), SPECD_ERR_INVALID);
    CHECK_EQ_INT(gguf_writer_add_u32(w, "", 1), SPECD_ERR_INVALID);
    CHECK_EQ_INT(gguf_writer_add_u32(w, NULL, 1), SPECD_ERR_INVALID);
    CHECK_EQ_INT(gguf_writer_add_str(w, "k", NULL), SPECD_ERR_INVALID);
    CHECK_EQ_INT(gguf_writer_set_alignment(w, 48), SPECD_ERR_INVALID);
    CHECK_EQ_INT(gguf_writer_set_alignment(w, 0), SPECD_ERR_INVALID);
    CHECK_EQ_INT(gguf_writer_add_array(w, "k", GGUF_TYPE_STRING, data, 1), SPECD_ERR_INVALID);
    CHECK_EQ_INT(gguf_writer_add_array(w, "k", GGUF_TYPE_ARRAY, data, 1), SPECD_ERR_INVALID);
    CHECK_EQ_INT(gguf_writer_add_tensor(w, "output.weight", 2, ne, GGML_TYPE_F32, data, 256),
                 SPECD_ERR_INVALID); // duplicate name
    CHECK_EQ_INT(gguf_writer_add_tensor(w, "t", 2, ne, GGML_TYPE_F32, data, 255),
                 SPECD_ERR_INVALID); // size does not match the shape
    CHECK_EQ_INT(gguf_writer_add_tensor(w, "t", 0, ne, GGML_TYPE_F32, data, 4), SPECD_ERR_INVALID);
    CHECK_EQ_INT(gguf_writer_add_tensor(w, "t", 5, ne, GGML_TYPE_F32, data, 256),
                 SPECD_ERR_INVALID);
    CHECK_EQ_INT(gguf_writer_add_tensor(w, "t", 1, zero, GGML_TYPE_F32, data, 4),
                 SPECD_ERR_INVALID);
    CHECK_EQ_INT(gguf_writer_add_tensor(w, "t", 1, odd, GGML_TYPE_Q8_0, data, 34),
                 SPECD_ERR_INVALID);
    CHECK_EQ_INT(gguf_writer_add_tensor(w, "t", 1, ne, GGML_TYPE_F32, NULL, 128),
                 SPECD_ERR_INVALID);
    uint8_t *after = finish(w, &size1);
    CHECK(size0 == size1 && memcmp(before, after, size0) == 0); // failures changed nothing
    free(before);
    free(after);
    gguf_writer_free(w);
    gguf_writer_free(NULL);
}

TEST(open_file_and_io_errors) {
    char path[] = "/tmp/test_gguf_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    close(fd);
    gguf_writer *w = make_sample(64);
    CHECK_EQ_INT(gguf_writer_write_file(w, path), 0);
    char err[512] = "";
    gguf_file *f = NULL;
    CHECK_EQ_INT(gguf_open(path, NULL, &f, err, sizeof err), SPECD_OK);
    REQUIRE(f);
    struct gguf_str arch;
    CHECK_EQ_INT(gguf_get_str(f, "general.architecture", &arch), 0);
    CHECK(str_is(arch, "llama"));
    check_sample_tensors(f, 0, 64); // mapped at a page boundary
    gguf_free(f);

    REQUIRE(truncate(path, 0) == 0); // an empty file is a truncated one
    f = (gguf_file *)err;
    CHECK_EQ_INT(gguf_open(path, NULL, &f, err, sizeof err), SPECD_ERR_FORMAT);
    CHECK(f == NULL);
    CHECK(strstr(err, "truncated in header") && strstr(err, path));
    CHECK_EQ_INT(gguf_writer_write_file(w, path), 0);
    REQUIRE(truncate(path, 1000) == 0); // in the tensor data
    CHECK_EQ_INT(gguf_open(path, NULL, &f, err, sizeof err), SPECD_ERR_FORMAT);
    CHECK(strstr(err, "out of bounds") != NULL);
    gguf_writer_free(w);
    unlink(path);
    CHECK_EQ_INT(gguf_open(path, NULL, &f, err, sizeof err), SPECD_ERR_IO);
    CHECK(strstr(err, "cannot open") && strstr(err, path));
    CHECK_EQ_INT(gguf_open("/tmp", NULL, &f, err, sizeof err), SPECD_ERR_IO);
    CHECK(strstr(err, "regular file") != NULL);
    CHECK_EQ_INT(gguf_writer_write_file(w = make_sample(0), "/nonexistent/dir/x.gguf"),
                 SPECD_ERR_IO);
    gguf_writer_free(w);
}

// ---- the real files ---------------------------------------------------------------------------

static gguf_file *open_shared(const char *rel) {
    const char *path = test_shared_path(rel);
    if (!path)
        return NULL;
    char err[512] = "";
    gguf_file *f = NULL;
    int rc = gguf_open(path, NULL, &f, err, sizeof err);
    CHECK_EQ_INT(rc, SPECD_OK);
    if (rc != SPECD_OK)
        fprintf(stderr, "  %s\n", err);
    return f;
}

static void check_u32(const gguf_file *f, const char *key, uint32_t want) {
    uint32_t v = 0;
    CHECK_EQ_INT(gguf_get_u32(f, key, &v), 0);
    if (v != want)
        fprintf(stderr, "  %s = %u, expected %u\n", key, v, want);
    CHECK_EQ_INT(v, want);
}

TEST(real_stories260k) {
    if (!test_shared_path("models/stories260K.gguf"))
        TEST_SKIP("../shared/models/stories260K.gguf not found");
    gguf_file *f = open_shared("models/stories260K.gguf");
    REQUIRE(f);
    struct gguf_str s;
    CHECK_EQ_INT(gguf_get_str(f, "general.architecture", &s), 0);
    CHECK(str_is(s, "llama"));
    check_u32(f, "llama.embedding_length", 64);
    check_u32(f, "llama.block_count", 5);
    check_u32(f, "llama.attention.head_count", 8);
    check_u32(f, "llama.attention.head_count_kv", 4);
    check_u32(f, "llama.feed_forward_length", 172);
    check_u32(f, "tokenizer.ggml.padding_token_id", 4294967295u);
    float eps = 0;
    CHECK_EQ_INT(gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &eps), 0);
    CHECK_NEAR(eps, 1e-5, 1e-9);
    uint64_t n = 0;
    struct gguf_str *tokens = NULL;
    CHECK_EQ_INT(gguf_get_str_array(f, "tokenizer.ggml.tokens", &n, &tokens), 0);
    CHECK_EQ_INT(n, 512);
    if (tokens)
        CHECK(str_is(tokens[0], "<unk>") && str_is(tokens[1], "<s>") && str_is(tokens[2], "</s>"));
    free(tokens);
    CHECK_EQ_INT(gguf_n_tensors(f), 5 * 9 + 3); // 9 per layer + embedding, norm, output
    const struct gguf_tensor_info *t = gguf_find_tensor(f, "token_embd.weight");
    REQUIRE(t);
    CHECK_EQ_INT(t->type, GGML_TYPE_F32);
    CHECK(t->n_dims == 2 && t->ne[0] == 64 && t->ne[1] == 512);
    CHECK_EQ_INT(t->n_bytes, 64 * 512 * 4);
    float first[2];
    memcpy(first, t->data, sizeof first); // values from an independent Python reader
    CHECK_NEAR(first[0], -0.29474878, 1e-7);
    CHECK_NEAR(first[1], 0.56189561, 1e-7);
    t = gguf_find_tensor(f, "blk.4.ffn_norm.weight");
    CHECK(t && t->n_dims == 1 && t->ne[0] == 64 && t->offset == 1170944);
    touch_everything(f);
    gguf_free(f);
}

TEST(real_target_q8_0) {
    if (!test_shared_path("models/target-q8_0.gguf"))
        TEST_SKIP("../shared/models/target-q8_0.gguf not found");
    gguf_file *f = open_shared("models/target-q8_0.gguf");
    REQUIRE(f);
    struct gguf_str s;
    CHECK_EQ_INT(gguf_get_str(f, "general.architecture", &s), 0);
    CHECK(str_is(s, "llama"));
    check_u32(f, "llama.embedding_length", 384);
    check_u32(f, "llama.block_count", 8);
    check_u32(f, "llama.attention.head_count", 6);
    check_u32(f, "llama.attention.head_count_kv", 2);
    check_u32(f, "llama.feed_forward_length", 1024);
    check_u32(f, "llama.context_length", 1024);
    bool add_bos = false;
    CHECK_EQ_INT(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &add_bos), 0);
    CHECK(add_bos);
    uint64_t n = 0;
    float *scores = NULL;
    CHECK_EQ_INT(gguf_get_f32_array(f, "tokenizer.ggml.scores", &n, &scores), 0);
    CHECK_EQ_INT(n, 8192);
    free(scores);
    CHECK_EQ_INT(gguf_n_tensors(f), 8 * 9 + 2); // tied output: no output.weight
    CHECK(gguf_find_tensor(f, "output.weight") == NULL);
    const struct gguf_tensor_info *t = gguf_find_tensor(f, "token_embd.weight");
    REQUIRE(t);
    CHECK_EQ_INT(t->type, GGML_TYPE_Q8_0);
    CHECK(t->n_dims == 2 && t->ne[0] == 384 && t->ne[1] == 8192);
    CHECK_EQ_INT(t->n_bytes, 384 / 32 * 8192 * 34);
    CHECK_EQ_INT(t->offset, 1536);
    t = gguf_find_tensor(f, "output_norm.weight");
    REQUIRE(t);
    float first[2];
    memcpy(first, t->data, sizeof first);
    CHECK(first[0] == 1.71875f && first[1] == 1.6669921875f);
    touch_everything(f);
    gguf_free(f);
}

TEST(real_vocab_only_files) {
    const char *files[] = {"models/ggml-vocab-llama-bpe.gguf", "models/ggml-vocab-llama-spm.gguf"};
    const uint64_t n_tokens[] = {128256, 32000};
    int found = 0;
    for (int i = 0; i < 2; i++) {
        if (!test_shared_path(files[i]))
            continue;
        found++;
        gguf_file *f = open_shared(files[i]); // no tensors, no padding after the infos
        REQUIRE(f);
        uint64_t n = 0;
        struct gguf_str *tokens = NULL;
        CHECK_EQ_INT(gguf_get_str_array(f, "tokenizer.ggml.tokens", &n, &tokens), 0);
        CHECK_EQ_INT(n, n_tokens[i]);
        free(tokens);
        CHECK_EQ_INT(gguf_n_tensors(f), 0);
        gguf_free(f);
    }
    if (!found)
        TEST_SKIP("vocab GGUFs not found in ../shared/models");
}

// ---- malformed files: each must be rejected with the right code and a message naming it --------

TEST(rejects_bad_magic) {
    struct bytes b = {0};
    b_header(&b, 3, 0, 0);
    b.p[3] = 'X';
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "bad magic");
    free(b.p);
}

TEST(rejects_unsupported_versions) {
    const uint32_t versions[] = {0, 1, 4, 0x7fffffff};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        struct bytes b = {0};
        char want[64];
        b_header(&b, versions[i], 0, 0);
        snprintf(want, sizeof want, "version %u is not supported", versions[i]);
        EXPECT_FAIL_B(&b, SPECD_ERR_UNSUPPORTED, want);
        free(b.p);
    }
    struct bytes b = {0};
    b_header(&b, 0x03000000, 0, 0); // version 3 written big-endian
    EXPECT_FAIL_B(&b, SPECD_ERR_UNSUPPORTED, "big-endian");
    free(b.p);
}

TEST(rejects_truncated_header) {
    struct bytes b = {0};
    b_header(&b, 3, 0, 0); // 24 bytes: a valid empty file
    EXPECT_FAIL(NULL, 0, NULL, SPECD_ERR_FORMAT, "truncated in header");
    for (size_t len = 1; len < b.len; len++) {
        uint8_t *copy = malloc(len); // exactly len bytes, so that ASan sees any over-read
        memcpy(copy, b.p, len);
        EXPECT_FAIL(copy, len, NULL, SPECD_ERR_FORMAT, "truncated in header");
        free(copy);
    }
    gguf_file *f = open_ok(b.p, b.len);
    CHECK(f && gguf_n_kv(f) == 0 && gguf_n_tensors(f) == 0);
    gguf_free(f);
    free(b.p);
}

TEST(truncation_names_the_key) {
    struct bytes b = {0};
    size_t start = 0, end = 0;
    b_header(&b, 3, 0, 20);
    for (int i = 0; i < 20; i++) {
        char key[64];
        snprintf(key, sizeof key, "metadata.key.%02d", i);
        if (i == 12)
            start = b.len;
        b_kv_u32(&b, key, (uint32_t)i);
        if (i == 12)
            end = b.len;
    }
    for (size_t len = start; len < end; len++) {
        EXPECT_FAIL(b.p, len, NULL, SPECD_ERR_FORMAT, "truncated in metadata key 12");
        if (len >= start + 8 + 15) // the key itself is readable: the message names it
            EXPECT_FAIL(b.p, len, NULL, SPECD_ERR_FORMAT, "'metadata.key.12'");
    }
    free(b.p);
}

TEST(truncation_names_the_tensor) {
    const char *names[2] = {"blk.0.attn_q.weight.with.a.long.name", "blk.0.attn_k.weight.too"};
    const int64_t ne[2] = {4, 4};
    struct bytes b = {0};
    b_header(&b, 3, 2, 0);
    b_tensor(&b, names[0], 2, ne, GGML_TYPE_F32, 0);
    size_t start = b.len;
    b_tensor(&b, names[1], 2, ne, GGML_TYPE_F32, 64);
    size_t end = b.len;
    for (size_t len = start; len < end; len++) {
        EXPECT_FAIL(b.p, len, NULL, SPECD_ERR_FORMAT, "truncated in tensor");
        if (len >= start + 8 + strlen(names[1]))
            EXPECT_FAIL(b.p, len, NULL, SPECD_ERR_FORMAT, "tensor 1 ('blk.0.attn_k.weight.too')");
    }
    free(b.p);
}

TEST(rejects_absurd_counts) {
    struct gguf_params small = gguf_default_params(), huge = gguf_default_params();
    small.max_kv = 4;
    small.max_tensors = 2;
    huge.max_kv = huge.max_tensors = huge.max_array_len = huge.max_str_len = UINT64_MAX;
    struct bytes b = {0};
    b_header(&b, 3, 0, 5);
    for (int i = 0; i < 5; i++)
        b_kv_u32(&b, i % 2 ? "odd" : "even", 0);
    EXPECT_FAIL(b.p, b.len, &small, SPECD_ERR_FORMAT, "5 metadata pairs, more than the maximum 4");
    b.len = 0;
    b_header(&b, 3, 3, 0);
    EXPECT_FAIL(b.p, b.len, &small, SPECD_ERR_FORMAT, "3 tensors, more than the maximum 2");
    b.len = 0;
    b_header(&b, 3, 0, 1000);
    b_kv_u32(&b, "a", 1);
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "1000 metadata pairs but only 17 bytes follow");
    b.len = 0;
    b_header(&b, 3, 0, UINT64_MAX);
    EXPECT_FAIL(b.p, b.len, &huge, SPECD_ERR_FORMAT, "metadata pairs but only");
    b.len = 0;
    b_header(&b, 3, UINT64_MAX, 1);
    b_kv_u32(&b, "a", 1);
    EXPECT_FAIL(b.p, b.len, &huge, SPECD_ERR_FORMAT, "tensors but only 0 bytes");
    free(b.p);
}

// A file with one array of n elements of elem_type, followed by `payload` bytes of zeros.
static void b_array_file(struct bytes *b, uint32_t elem_type, uint64_t n, size_t payload) {
    b->len = 0;
    b_header(b, 3, 0, 1);
    b_str(b, "arr");
    b_u32(b, GGUF_TYPE_ARRAY);
    b_u32(b, elem_type);
    b_u64(b, n);
    b_zeros(b, payload);
}

TEST(rejects_absurd_arrays) {
    struct gguf_params p = gguf_default_params(), huge = gguf_default_params();
    p.max_array_len = 10;
    huge.max_array_len = UINT64_MAX;
    struct bytes b = {0};
    b_array_file(&b, GGUF_TYPE_UINT8, 11, 11);
    EXPECT_FAIL(b.p, b.len, &p, SPECD_ERR_FORMAT, "array of 11 elements exceeds the maximum");
    b_array_file(&b, GGUF_TYPE_UINT8, 10, 10);
    gguf_file *f = NULL;
    CHECK_EQ_INT(gguf_open_memory(b.p, b.len, &p, &f, NULL, 0), SPECD_OK); // at the limit
    gguf_free(f);
    b_array_file(&b, GGUF_TYPE_UINT32, 1ull << 40, 64);
    EXPECT_FAIL(b.p, b.len, &huge, SPECD_ERR_FORMAT, "1099511627776 uint32 elements needs more");
    b_array_file(&b, GGUF_TYPE_FLOAT64, UINT64_MAX, 64);
    EXPECT_FAIL(b.p, b.len, &huge, SPECD_ERR_FORMAT, "'arr'): array of");
    b_array_file(&b, GGUF_TYPE_UINT16, 5, 9); // one byte short
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "needs more than the 9 bytes left");
    b_array_file(&b, GGUF_TYPE_STRING, 1u << 20, 64);
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "array of 1048576 strings (8 or more bytes each)");
    b_array_file(&b, GGUF_TYPE_STRING, UINT64_MAX, 64);
    EXPECT_FAIL(b.p, b.len, &huge, SPECD_ERR_FORMAT, "strings (8 or more bytes each)");
    free(b.p);
}

TEST(rejects_long_strings) {
    struct gguf_params p = gguf_default_params(), huge = gguf_default_params();
    p.max_str_len = 8;
    huge.max_str_len = UINT64_MAX;
    struct bytes b = {0};
    b_header(&b, 3, 0, 1);
    b_kv_u32(&b, "longer.than.eight", 1);
    EXPECT_FAIL(b.p, b.len, &p, SPECD_ERR_FORMAT, "key string length 17 exceeds the maximum 8");
    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_kv_str(&b, "k", "a value longer than eight");
    EXPECT_FAIL(b.p, b.len, &p, SPECD_ERR_FORMAT, "metadata key 0 ('k'): value string length 25");
    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "toks");
    b_u32(&b, GGUF_TYPE_ARRAY);
    b_u32(&b, GGUF_TYPE_STRING);
    b_u64(&b, 3);
    b_str(&b, "ok");
    b_str(&b, "much too long");
    b_str(&b, "ok");
    EXPECT_FAIL(b.p, b.len, &p, SPECD_ERR_FORMAT, "'toks') element 1: element string length 13");
    b.len -= 9; // the last element cut: truncated inside the array
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "truncated in metadata key 0 ('toks') element 2");
    b.len = 0;
    const int64_t ne[1] = {8};
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "a.tensor.name", 1, ne, GGML_TYPE_F32, 0);
    EXPECT_FAIL(b.p, b.len, &p, SPECD_ERR_FORMAT, "tensor info 0: tensor name string length 13");
    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_u64(&b, UINT64_MAX); // a key "length" far past the end
    b_zeros(&b, 16);
    EXPECT_FAIL(b.p, b.len, &huge, SPECD_ERR_FORMAT, "truncated in metadata key 0");
    free(b.p);
}

TEST(rejects_bad_value_types) {
    const uint32_t bad[] = {13, 0xffffffffu};
    struct bytes b = {0};
    for (int i = 0; i < 2; i++) {
        char want[64];
        b.len = 0;
        b_header(&b, 3, 0, 1);
        b_str(&b, "k");
        b_u32(&b, bad[i]);
        b_zeros(&b, 16);
        snprintf(want, sizeof want, "'k'): unknown value type %u", bad[i]);
        EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, want);
    }
    b_array_file(&b, 13, 1, 16);
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "unknown array element type 13");
    b_array_file(&b, GGUF_TYPE_ARRAY, 1, 16);
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "'arr'): nested arrays are not supported");
    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "flag");
    b_u32(&b, GGUF_TYPE_BOOL);
    b_le(&b, 2, 1);
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "'flag'): bool value 2 is neither 0 nor 1");
    b_array_file(&b, GGUF_TYPE_BOOL, 3, 0);
    b_le(&b, 0x0300010000ull, 3); // 0, 1, 3
    b.p[b.len - 1] = 3;
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "bool value 3");
    free(b.p);
}

TEST(rejects_duplicates_and_empty_names) {
    const int64_t ne[1] = {8};
    struct bytes b = {0};
    b_header(&b, 3, 0, 3);
    b_kv_u32(&b, "a", 1);
    b_kv_u32(&b, "b", 2);
    b_kv_str(&b, "a", "again");
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "duplicate key 'a' (metadata keys 0 and 2)");
    b.len = 0;
    b_header(&b, 3, 3, 0);
    b_tensor(&b, "w", 1, ne, GGML_TYPE_F32, 0);
    b_tensor(&b, "v", 1, ne, GGML_TYPE_F32, 32);
    b_tensor(&b, "w", 1, ne, GGML_TYPE_F32, 64);
    b_pad(&b, 32);
    b_zeros(&b, 96);
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "duplicate tensor name 'w' (tensors 0 and 2)");
    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_kv_u32(&b, "", 1);
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "metadata key 0 has an empty name");
    b.len = 0;
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "", 1, ne, GGML_TYPE_F32, 0);
    b_pad(&b, 32);
    b_zeros(&b, 32);
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "tensor 0 has an empty name");
    free(b.p);
}

TEST(rejects_bad_shapes) {
    struct {
        uint32_t n_dims;
        int64_t ne[5];
        uint32_t type;
        const char *want;
    } cases[] = {
        {0, {8}, GGML_TYPE_F32, "'blk.0.w'): n_dims 0 is outside 1..4"},
        {5, {1, 1, 1, 1, 1}, GGML_TYPE_F32, "n_dims 5 is outside 1..4"},
        {2, {8, 0}, GGML_TYPE_F32, "'blk.0.w'): dimension ne[1] = 0 must be positive"},
        {3, {8, 2, -3}, GGML_TYPE_F32, "ne[2] = -3 must be positive"},
        {2, {1ll << 32, 1ll << 32}, GGML_TYPE_F32, "'blk.0.w'): element count overflows"},
        {4, {1 << 16, 1 << 16, 1 << 16, 1 << 16}, GGML_TYPE_F16, "element count overflows"},
        {1, {1ll << 62}, GGML_TYPE_F32, "'blk.0.w'): byte size overflows"},
        {1, {33}, GGML_TYPE_Q8_0, "'blk.0.w'): ne[0] = 33 is not a multiple of the Q8_0 block"},
        {2, {16, 2}, GGML_TYPE_Q4_0, "ne[0] = 16 is not a multiple of the Q4_0 block size 32"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct bytes b = {0};
        b_one_tensor(&b, cases[i].n_dims, cases[i].ne, cases[i].type, 0, 64);
        EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, cases[i].want);
        free(b.p);
    }
}

TEST(rejects_unsupported_tensor_types) {
    const uint32_t types[] = {2 + 1, 12, 39, 1000, 0xffffffffu};
    const char *names[] = {"Q4_1", "Q4_K", "MXFP4", "unknown", "unknown"};
    const int64_t ne[1] = {32};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        struct bytes b = {0};
        char want[96];
        b_one_tensor(&b, 1, ne, types[i], 0, 256);
        snprintf(want, sizeof want, "tensor 0 ('blk.0.w'): tensor type %u (%s) is not supported",
                 types[i], names[i]);
        EXPECT_FAIL_B(&b, SPECD_ERR_UNSUPPORTED, want);
        free(b.p);
    }
}

TEST(accepts_every_supported_type_at_its_exact_size) {
    const uint32_t types[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0,
                              GGML_TYPE_Q4_0};
    const size_t bytes_for_64[] = {256, 128, 128, 68, 36}; // 64 elements of each type
    const int64_t ne[2] = {32, 2};
    for (size_t i = 0; i < 5; i++) {
        struct bytes b = {0};
        b_one_tensor(&b, 2, ne, types[i], 0, bytes_for_64[i]);
        gguf_file *f = open_ok(b.p, b.len);
        CHECK(f != NULL);
        if (f)
            CHECK_EQ_INT(gguf_tensor(f, 0)->n_bytes, bytes_for_64[i]);
        gguf_free(f);
        b.len--; // one byte short
        EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "'blk.0.w'): data at offset 0");
        free(b.p);
    }
}

TEST(rejects_bad_placement) {
    const int64_t ne[1] = {8}; // F32: 32 bytes
    struct bytes b = {0};
    b_one_tensor(&b, 1, ne, GGML_TYPE_F32, 4, 64);
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "'blk.0.w'): data offset 4 is not aligned to 32");
    b.len = 0;
    b_one_tensor(&b, 1, ne, GGML_TYPE_F32, 32, 63);
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "data at offset 32 (32 bytes) is out of bounds");
    b.len = 0;
    b_one_tensor(&b, 1, ne, GGML_TYPE_F32, UINT64_MAX - 31, 64); // offset + size wraps around
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "is out of bounds of the 64-byte data section");
    b.len = 0;
    b_header(&b, 3, 1, 1);
    b_kv_u32(&b, "general.alignment", 64);
    b_tensor(&b, "t", 1, ne, GGML_TYPE_F32, 32);
    b_pad(&b, 64);
    b_zeros(&b, 128);
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "'t'): data offset 32 is not aligned to 64");
    free(b.p);
}

// Two 64-byte F32 tensors at the given offsets in a 192-byte data section.
static void b_two_tensors(struct bytes *b, uint64_t off_a, uint64_t off_b) {
    const int64_t ne[1] = {16};
    b->len = 0;
    b_header(b, 3, 2, 0);
    b_tensor(b, "a", 1, ne, GGML_TYPE_F32, off_a);
    b_tensor(b, "b", 1, ne, GGML_TYPE_F32, off_b);
    b_pad(b, 32);
    b_zeros(b, 192);
}

TEST(rejects_overlapping_tensors) {
    struct bytes b = {0};
    b_two_tensors(&b, 0, 32);
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "tensors 0 ('a') and 1 ('b') overlap");
    b_two_tensors(&b, 96, 64);
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "tensors 1 ('b') and 0 ('a') overlap");
    b_two_tensors(&b, 0, 0);
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "overlap");
    b_two_tensors(&b, 128, 64); // adjacent, out of order: fine
    gguf_file *f = open_ok(b.p, b.len);
    CHECK(f != NULL);
    gguf_free(f);
    free(b.p);
}

TEST(rejects_bad_alignment) {
    const uint32_t bad[] = {0, 3, 48, 0x80000001u};
    struct bytes b = {0};
    for (int i = 0; i < 4; i++) {
        char want[64];
        b.len = 0;
        b_header(&b, 3, 0, 1);
        b_kv_u32(&b, "general.alignment", bad[i]);
        snprintf(want, sizeof want, "general.alignment %u is not a power of two", bad[i]);
        EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, want);
    }
    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_kv_str(&b, "general.alignment", "32");
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "general.alignment has type string, expected uint32");
    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "general.alignment");
    b_u32(&b, GGUF_TYPE_UINT64);
    b_u64(&b, 32);
    EXPECT_FAIL_B(&b, SPECD_ERR_FORMAT, "general.alignment has type uint64, expected uint32");
    free(b.p);
}

// ---- robustness: damaged copies of a valid file -------------------------------------------------

// Opens an exact-size heap copy (so that ASan catches any over-read); on success checks every
// accessor. Returns the status.
static int open_damaged(const uint8_t *data, size_t size) {
    uint8_t *copy = size ? malloc(size) : NULL;
    if (size)
        memcpy(copy, data, size);
    char err[512] = "";
    gguf_file *f = NULL;
    int rc = gguf_open_memory(copy, size, NULL, &f, err, sizeof err);
    if (rc == SPECD_OK)
        touch_everything(f);
    else if (err[0] == '\0')
        TEST_FAIL_AT(__FILE__, __LINE__, "%s with an empty message", specd_status_name(rc));
    if (rc != SPECD_OK && rc != SPECD_ERR_FORMAT && rc != SPECD_ERR_UNSUPPORTED)
        TEST_FAIL_AT(__FILE__, __LINE__, "unexpected status %s: %s", specd_status_name(rc), err);
    gguf_free(f);
    free(copy);
    return rc;
}

TEST(every_truncation_is_rejected) {
    gguf_writer *w = make_sample(0);
    size_t size;
    uint8_t *buf = finish(w, &size);
    gguf_file *f = open_ok(buf, size);
    REQUIRE(f);
    size_t data_end = 0; // the end of the last tensor's data; only padding follows
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const struct gguf_tensor_info *t = gguf_tensor(f, i);
        size_t end = (size_t)((const uint8_t *)t->data - buf) + t->n_bytes;
        data_end = end > data_end ? end : data_end;
    }
    gguf_free(f);
    CHECK(data_end > size - 32 && data_end < size);
    for (size_t len = 0; len <= size; len++) {
        int rc = open_damaged(buf, len);
        if (len < data_end && rc != SPECD_ERR_FORMAT)
            TEST_FAIL_AT(__FILE__, __LINE__, "truncated to %zu of %zu: %s", len, size,
                         specd_status_name(rc));
        if (len >= data_end)
            CHECK_EQ_INT(rc, SPECD_OK);
    }
    free(buf);
    gguf_writer_free(w);
}

TEST(flipped_bytes_never_crash) {
    gguf_writer *w = make_sample(0);
    size_t size;
    uint8_t *buf = finish(w, &size);
    const uint8_t flips[] = {0x01, 0x80, 0xff, 0x3f};
    int accepted = 0, rejected = 0;
    for (size_t pos = 0; pos < size; pos++) {
        for (size_t k = 0; k < sizeof flips; k++) {
            buf[pos] ^= flips[k];
            open_damaged(buf, size) == SPECD_OK ? accepted++ : rejected++;
            buf[pos] ^= flips[k];
        }
    }
    fprintf(stderr, "  %zu bytes x %zu flips: %d accepted, %d rejected\n", size, sizeof flips,
            accepted, rejected);
    CHECK(rejected > 0 && accepted > 0);
    free(buf);
    gguf_writer_free(w);
}

TEST(random_damage_never_crashes) {
    const uint64_t interesting[] = {
        0,    1,    2,      4,          5,          9,          31,         32,        33,
        0x7f, 0xff, 0xffff, 0x7fffffff, 0xffffffff, 1ull << 32, 1ull << 62, INT64_MAX, UINT64_MAX};
    gguf_writer *w = make_sample(64);
    size_t size;
    uint8_t *orig = finish(w, &size);
    uint8_t *buf = malloc(size);
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    int accepted = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(buf, orig, size);
        size_t len = size;
        for (int m = 0, n = 1 + rng_next(&rng) % 4; m < n; m++) {
            size_t pos = rng_next(&rng) % size;
            switch (rng_next(&rng) % 4) {
            case 0:
                buf[pos] = (uint8_t)rng_next(&rng);
                break;
            case 1: {
                uint64_t v =
                    interesting[rng_next(&rng) % (sizeof interesting / sizeof *interesting)];
                size_t width = rng_next(&rng) % 2 ? 8 : 4;
                for (size_t i = 0; i < width && pos + i < size; i++)
                    buf[pos + i] = (uint8_t)(v >> (8 * i));
                break;
            }
            case 2:
                buf[pos] ^= (uint8_t)(1u << (rng_next(&rng) % 8));
                break;
            default:
                len = pos < len ? pos : len;
                break;
            }
        }
        accepted += open_damaged(buf, len) == SPECD_OK;
    }
    fprintf(stderr, "  20000 damaged copies: %d accepted\n", accepted);
    free(buf);
    free(orig);
    gguf_writer_free(w);
}

// Writes the fuzzer's seed files when SPECD_GGUF_CORPUS_DIR is set.
TEST(write_seed_corpus) {
    const char *dir = getenv("SPECD_GGUF_CORPUS_DIR");
    if (!dir)
        TEST_SKIP("set SPECD_GGUF_CORPUS_DIR to write the fuzz seeds");
    char path[1024];
    gguf_writer *w = make_sample(0);
    snprintf(path, sizeof path, "%s/sample_model.gguf", dir);
    CHECK_EQ_INT(gguf_writer_write_file(w, path), 0);
    gguf_writer_free(w);
    w = make_sample(64);
    snprintf(path, sizeof path, "%s/sample_model_align64.gguf", dir);
    CHECK_EQ_INT(gguf_writer_write_file(w, path), 0);
    gguf_writer_free(w);
    const uint16_t u16[] = {1, 65535};
    const double f64[] = {0.5, -2};
    const bool bools[] = {true, false};
    w = gguf_writer_new();
    CHECK_EQ_INT(gguf_writer_add_u8(w, "u8", 1), 0);
    CHECK_EQ_INT(gguf_writer_add_i8(w, "i8", -1), 0);
    CHECK_EQ_INT(gguf_writer_add_i16(w, "i16", -2), 0);
    CHECK_EQ_INT(gguf_writer_add_u64(w, "u64", 3), 0);
    CHECK_EQ_INT(gguf_writer_add_i64(w, "i64", -4), 0);
    CHECK_EQ_INT(gguf_writer_add_f64(w, "f64", 0.25), 0);
    CHECK_EQ_INT(gguf_writer_add_array(w, "a.u16", GGUF_TYPE_UINT16, u16, 2), 0);
    CHECK_EQ_INT(gguf_writer_add_array(w, "a.f64", GGUF_TYPE_FLOAT64, f64, 2), 0);
    CHECK_EQ_INT(gguf_writer_add_array(w, "a.bool", GGUF_TYPE_BOOL, bools, 2), 0);
    snprintf(path, sizeof path, "%s/metadata_only.gguf", dir);
    CHECK_EQ_INT(gguf_writer_write_file(w, path), 0);
    gguf_writer_free(w);
}

static void run_malformed_tests(void) {
    TEST_RUN(rejects_bad_magic);
    TEST_RUN(rejects_unsupported_versions);
    TEST_RUN(rejects_truncated_header);
    TEST_RUN(truncation_names_the_key);
    TEST_RUN(truncation_names_the_tensor);
    TEST_RUN(rejects_absurd_counts);
    TEST_RUN(rejects_absurd_arrays);
    TEST_RUN(rejects_long_strings);
    TEST_RUN(rejects_bad_value_types);
    TEST_RUN(rejects_duplicates_and_empty_names);
    TEST_RUN(rejects_bad_shapes);
    TEST_RUN(rejects_unsupported_tensor_types);
    TEST_RUN(accepts_every_supported_type_at_its_exact_size);
    TEST_RUN(rejects_bad_placement);
    TEST_RUN(rejects_overlapping_tensors);
    TEST_RUN(rejects_bad_alignment);
    TEST_RUN(every_truncation_is_rejected);
    TEST_RUN(flipped_bytes_never_crash);
    TEST_RUN(random_damage_never_crashes);
    TEST_RUN(write_seed_corpus);
}

int main(int argc, char **argv) {
    TEST_MAIN_BEGIN(argc, argv);
    TEST_RUN(roundtrip_scalars);
    TEST_RUN(roundtrip_arrays);
    TEST_RUN(roundtrip_tensors_every_alignment);
    TEST_RUN(version_2_is_accepted);
    TEST_RUN(writer_bytes_match_the_spec);
    TEST_RUN(writer_rejects_bad_input);
    TEST_RUN(open_file_and_io_errors);
    TEST_RUN(real_stories260k);
    TEST_RUN(real_target_q8_0);
    TEST_RUN(real_vocab_only_files);
    run_malformed_tests();
    return TEST_MAIN_END();
}
