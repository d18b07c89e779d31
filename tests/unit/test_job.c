// Job field parsing and validation (pure; no Redis). Expected values are written by hand.
#include "shared/job.h"
#include "shared/status.h"

#include "tests/test.h"

#include <cjson/cJSON.h>
#include <stdint.h>

// Parses NULL-terminated name/value C strings with `params` (NULL: defaults).
static int parse_kv(const struct job_params *params, struct job *job, char *err, size_t err_size,
                    const char *const *kv) {
    struct job_field f[32];
    size_t n = 0;
    for (; kv[2 * n]; n++) {
        f[n].name = kv[2 * n];
        f[n].name_len = strlen(kv[2 * n]);
        f[n].value = kv[2 * n + 1];
        f[n].value_len = strlen(kv[2 * n + 1]);
    }
    return job_parse(params, f, n, job, err, err_size);
}

#define PARSE(job, err, ...)                                                                       \
    parse_kv(NULL, job, err, sizeof err, (const char *const[]){__VA_ARGS__, NULL})

// Expects the job to be malformed with a reason that contains `needle`.
static void expect_bad_at(const char *file, int line, const struct job_params *params,
                          const char *needle, const char *const *kv) {
    struct job job;
    char err[JOB_REASON_MAX] = "";
    int rc = parse_kv(params, &job, err, sizeof err, kv);
    if (rc != SPECD_ERR_FORMAT)
        TEST_FAIL_AT(file, line, "expected SPECD_ERR_FORMAT (reason with '%s'), got %s", needle,
                     specd_status_name(rc));
    else if (!strstr(err, needle))
        TEST_FAIL_AT(file, line, "reason \"%s\" lacks \"%s\"", err, needle);
    if (job.storage || job.n_stop || job.id[0])
        TEST_FAIL_AT(file, line, "a failed parse left data in the job");
    job_clear(&job);
}
#define EXPECT_BAD(needle, ...)                                                                    \
    expect_bad_at(__FILE__, __LINE__, NULL, needle, (const char *const[]){__VA_ARGS__, NULL})
#define EXPECT_BAD_P(params, needle, ...)                                                          \
    expect_bad_at(__FILE__, __LINE__, params, needle, (const char *const[]){__VA_ARGS__, NULL})

static int parses_ok(const char *const *kv) {
    struct job job;
    char err[JOB_REASON_MAX] = "";
    int rc = parse_kv(NULL, &job, err, sizeof err, kv);
    if (rc != SPECD_OK)
        fprintf(stderr, "  unexpected reason: %s\n", err);
    job_clear(&job);
    return rc == SPECD_OK;
}
#define OK(...) CHECK(parses_ok((const char *const[]){__VA_ARGS__, NULL}))

TEST(test_minimal_job_takes_defaults) {
    struct job job;
    char err[JOB_REASON_MAX];
    REQUIRE(PARSE(&job, err, "id", "job-1", "prompt", "Hello") == SPECD_OK);
    CHECK_EQ_STR(job.id, "job-1");
    CHECK_EQ_INT(job.prompt_len, 5);
    CHECK_EQ_STR(job.prompt, "Hello");
    CHECK_EQ_INT(job.version, 1);
    CHECK_EQ_INT(job.max_tokens, 256);
    CHECK(job.temperature == 1.0);
    CHECK(job.top_p == 1.0);
    CHECK_EQ_INT(job.top_k, 0);
    CHECK_EQ_INT(job.has_seed, 0);
    CHECK_EQ_INT(job.n_stop, 0);
    CHECK_EQ_INT(job.stream, 0);
    CHECK_EQ_STR(job.class_label, "");
    CHECK_EQ_INT(job.priority, JOB_PRIORITY_NORMAL);
    job_clear(&job);
    CHECK(job.storage == NULL);
    job_clear(NULL);
}

TEST(test_every_field) {
    struct job job;
    char err[JOB_REASON_MAX] = "";
    int rc =
        PARSE(&job, err, "priority", "high", "v", "1", "prompt", "Once upon", "id", "A.b_c:d-9",
              "max_tokens", "77", "temperature", "0.7", "top_p", "0.95", "top_k", "40", "seed",
              "18446744073709551615", "stop", "[\"\\n\\n\", \"</s>\", \"caf\\u00e9\"]", "stream",
              "1", "class", "chat.fast", "unknown_future_field", "whatever");
    REQUIRE(rc == SPECD_OK);
    CHECK_EQ_STR(job.id, "A.b_c:d-9");
    CHECK_EQ_STR(job.prompt, "Once upon");
    CHECK_EQ_INT(job.max_tokens, 77);
    CHECK(job.temperature == 0.7);
    CHECK(job.top_p == 0.95);
    CHECK_EQ_INT(job.top_k, 40);
    CHECK_EQ_INT(job.has_seed, 1);
    CHECK(job.seed == UINT64_MAX);
    REQUIRE(job.n_stop == 3);
    CHECK_EQ_STR(job.stop[0], "\n\n");
    CHECK_EQ_STR(job.stop[1], "</s>");
    CHECK_EQ_STR(job.stop[2], "caf\xc3\xa9");
    CHECK_EQ_INT(job.stream, 1);
    CHECK_EQ_STR(job.class_label, "chat.fast");
    CHECK_EQ_INT(job.priority, JOB_PRIORITY_HIGH);
    job_clear(&job);
}

TEST(test_prompt_bytes_are_kept_exactly) {
    const char prompt[] = {'a', '\0', 'b', '\n', (char)0xff};
    struct job_field f[2] = {{"id", 2, "x", 1}, {"prompt", 6, prompt, sizeof prompt}};
    struct job job;
    char err[JOB_REASON_MAX];
    REQUIRE(job_parse(NULL, f, 2, &job, err, sizeof err) == SPECD_OK);
    CHECK_EQ_INT(job.prompt_len, 5);
    CHECK(memcmp(job.prompt, prompt, 5) == 0);
    CHECK(job.prompt[5] == '\0');
    job_clear(&job);
}

TEST(test_version) {
    OK("v", "1", "id", "a", "prompt", "p");
    EXPECT_BAD("unsupported version '2'", "v", "2", "id", "a", "prompt", "p");
    EXPECT_BAD("field 'v'", "v", "", "id", "a", "prompt", "p");
    EXPECT_BAD("field 'v'", "v", "1.0", "id", "a", "prompt", "p");
}

TEST(test_missing_and_duplicate_fields) {
    EXPECT_BAD("missing field 'id'", "prompt", "p");
    EXPECT_BAD("missing field 'prompt'", "id", "a");
    EXPECT_BAD("missing field 'id'", "ID", "a", "prompt", "p"); // names are case-sensitive
    EXPECT_BAD("duplicate field 'id'", "id", "a", "prompt", "p", "id", "a");
    EXPECT_BAD("duplicate field 'temperature'", "temperature", "1", "id", "a", "prompt", "p",
               "temperature", "1");
    // Validation order is fixed: a missing id is reported before a bad temperature after it.
    EXPECT_BAD("missing field 'id'", "temperature", "99", "prompt", "p");
    struct job job;
    char err[8];
    // A small reason buffer is truncated, never overrun.
    CHECK(PARSE(&job, err, "prompt", "p") == SPECD_ERR_FORMAT);
    CHECK(strlen(err) == 7);
}

TEST(test_unknown_fields) {
    OK("id", "a", "prompt", "p", "colour", "blue");
    struct job_params p = job_default_params();
    p.reject_unknown = 1;
    EXPECT_BAD_P(&p, "unknown field 'colour'", "id", "a", "prompt", "p", "colour", "blue");
}

TEST(test_id_rules) {
    char id128[129], id129[130];
    memset(id128, 'z', 128);
    id128[128] = '\0';
    memset(id129, 'z', 129);
    id129[129] = '\0';
    OK("id", id128, "prompt", "p");
    OK("id", "azAZ09._:-", "prompt", "p");
    EXPECT_BAD("longer than 128", "id", id129, "prompt", "p");
    EXPECT_BAD("field 'id': empty", "id", "", "prompt", "p");
    EXPECT_BAD("byte 0x20 at offset 3", "id", "abc def", "prompt", "p");
    EXPECT_BAD("byte 0x2f at offset 1", "id", "a/b", "prompt", "p");
    EXPECT_BAD("byte 0xc3 at offset 0", "id", "\xc3\xa9", "prompt", "p");
    struct job_field f[2] = {{"id", 2, "a\0b", 3}, {"prompt", 6, "p", 1}};
    struct job job;
    char err[JOB_REASON_MAX];
    CHECK(job_parse(NULL, f, 2, &job, err, sizeof err) == SPECD_ERR_FORMAT);
    CHECK(strstr(err, "byte 0x00 at offset 1") != NULL);
    CHECK_EQ_INT(job_id_is_valid("job-1", 5), 1);
    CHECK_EQ_INT(job_id_is_valid("job 1", 5), 0);
    CHECK_EQ_INT(job_id_is_valid("", 0), 0);
    CHECK_EQ_INT(job_id_is_valid(id129, 129), 0);
}

TEST(test_prompt_rules) {
    EXPECT_BAD("field 'prompt': empty", "id", "a", "prompt", "");
    struct job_params p = job_default_params();
    p.prompt_max_bytes = 4;
    EXPECT_BAD_P(&p, "5 bytes, more than the limit of 4", "id", "a", "prompt", "12345");
    struct job job;
    char err[JOB_REASON_MAX];
    CHECK(parse_kv(&p, &job, err, sizeof err,
                   (const char *const[]){"id", "a", "prompt", "1234", NULL}) == SPECD_OK);
    job_clear(&job);
}

TEST(test_max_tokens) {
    OK("id", "a", "prompt", "p", "max_tokens", "1");
    OK("id", "a", "prompt", "p", "max_tokens", "4096");
    EXPECT_BAD("'0' is outside 1..4096", "id", "a", "prompt", "p", "max_tokens", "0");
    EXPECT_BAD("'4097' is outside 1..4096", "id", "a", "prompt", "p", "max_tokens", "4097");
    EXPECT_BAD("'-5' is outside", "id", "a", "prompt", "p", "max_tokens", "-5");
    EXPECT_BAD("is outside", "id", "a", "prompt", "p", "max_tokens", "99999999999999999999");
    const char *bad[] = {"abc", "1.0", " 5", "5 ", "+5", "", "0x10", "1e3", "-"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT_BAD("is not an integer", "id", "a", "prompt", "p", "max_tokens", bad[i]);
    struct job_params p = job_default_params();
    p.max_tokens_limit = 10;
    EXPECT_BAD_P(&p, "'11' is outside 1..10", "id", "a", "prompt", "p", "max_tokens", "11");
}

TEST(test_temperature) {
    const char *good[] = {"0", "10", "10.0", "1e1", ".5", "5.", "-0", "0.000001", "1E-3"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        OK("id", "a", "prompt", "p", "temperature", good[i]);
    struct job job;
    char err[JOB_REASON_MAX];
    REQUIRE(PARSE(&job, err, "id", "a", "prompt", "p", "temperature", "-0") == SPECD_OK);
    CHECK(job.temperature == 0.0 && !signbit(job.temperature));
    job_clear(&job);
    EXPECT_BAD("'10.0001' is outside [0, 10]", "id", "a", "prompt", "p", "temperature", "10.0001");
    EXPECT_BAD("'-0.1' is outside [0, 10]", "id", "a", "prompt", "p", "temperature", "-0.1");
    EXPECT_BAD("'1e400' is out of range", "id", "a", "prompt", "p", "temperature", "1e400");
    const char *bad[] = {"nan", "inf", "-inf", "0x1p0", "",     " 1", "1 ",
                         "1,5", "1e",  ".",    "e5",    "1..2", "1e+"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT_BAD("is not a decimal number", "id", "a", "prompt", "p", "temperature", bad[i]);
}

TEST(test_top_p_top_k_seed) {
    OK("id", "a", "prompt", "p", "top_p", "1");
    OK("id", "a", "prompt", "p", "top_p", "0.000001");
    EXPECT_BAD("'0' is outside (0, 1]", "id", "a", "prompt", "p", "top_p", "0");
    EXPECT_BAD("'1.0000001' is outside (0, 1]", "id", "a", "prompt", "p", "top_p", "1.0000001");
    EXPECT_BAD("'-0.5' is outside (0, 1]", "id", "a", "prompt", "p", "top_p", "-0.5");
    EXPECT_BAD("is not a decimal number", "id", "a", "prompt", "p", "top_p", "half");

    OK("id", "a", "prompt", "p", "top_k", "0");
    OK("id", "a", "prompt", "p", "top_k", "2147483647");
    EXPECT_BAD("'-1' is outside 0..2147483647", "id", "a", "prompt", "p", "top_k", "-1");
    EXPECT_BAD("'2147483648' is outside", "id", "a", "prompt", "p", "top_k", "2147483648");
    EXPECT_BAD("is not an integer", "id", "a", "prompt", "p", "top_k", "1.5");

    struct job job;
    char err[JOB_REASON_MAX];
    REQUIRE(PARSE(&job, err, "id", "a", "prompt", "p", "seed", "0") == SPECD_OK);
    CHECK(job.has_seed == 1 && job.seed == 0);
    job_clear(&job);
    EXPECT_BAD("'18446744073709551616' is not an integer in 0..2^64-1", "id", "a", "prompt", "p",
               "seed", "18446744073709551616");
    EXPECT_BAD("field 'seed'", "id", "a", "prompt", "p", "seed", "-1");
    EXPECT_BAD("field 'seed'", "id", "a", "prompt", "p", "seed", "12x");
}

TEST(test_stop) {
    struct job job;
    char err[JOB_REASON_MAX];
    REQUIRE(PARSE(&job, err, "id", "a", "prompt", "p", "stop", " [ ] ") == SPECD_OK);
    CHECK_EQ_INT(job.n_stop, 0);
    job_clear(&job);
    // JSON text ["\\u0000"] is the six characters \u0000, not a NUL.
    REQUIRE(PARSE(&job, err, "id", "a", "prompt", "p", "stop", "[\"\\\\u0000\"]") == SPECD_OK);
    REQUIRE(job.n_stop == 1);
    CHECK_EQ_STR(job.stop[0], "\\u0000");
    job_clear(&job);
    EXPECT_BAD("is not a JSON array of strings", "id", "a", "prompt", "p", "stop", "\"a\"");
    EXPECT_BAD("is not a JSON array of strings", "id", "a", "prompt", "p", "stop", "[\"a\"] x");
    EXPECT_BAD("is not a JSON array of strings", "id", "a", "prompt", "p", "stop", "[\"a\"");
    EXPECT_BAD("is not a JSON array of strings", "id", "a", "prompt", "p", "stop", "");
    EXPECT_BAD("is not a JSON array of strings", "id", "a", "prompt", "p", "stop", "{}");
    EXPECT_BAD("element 1 is not a string", "id", "a", "prompt", "p", "stop", "[\"a\", 1]");
    EXPECT_BAD("element 0 is not a string", "id", "a", "prompt", "p", "stop", "[[\"a\"]]");
    EXPECT_BAD("element 0 is empty", "id", "a", "prompt", "p", "stop", "[\"\"]");
    EXPECT_BAD("contains \\u0000", "id", "a", "prompt", "p", "stop", "[\"a\\u0000b\"]");
    struct job_field f[3] = {{"id", 2, "a", 1}, {"prompt", 6, "p", 1}, {"stop", 4, "[\"\0\"]", 5}};
    CHECK(job_parse(NULL, f, 3, &job, err, sizeof err) == SPECD_ERR_FORMAT);
    CHECK(strstr(err, "contains a NUL byte") != NULL);

    struct job_params p = job_default_params();
    p.stop_max = 2;
    p.stop_max_bytes = 3;
    EXPECT_BAD_P(&p, "3 stop strings, more than the limit of 2", "id", "a", "prompt", "p", "stop",
                 "[\"a\",\"b\",\"c\"]");
    EXPECT_BAD_P(&p, "element 1 is 4 bytes, more than the limit of 3", "id", "a", "prompt", "p",
                 "stop", "[\"abc\",\"abcd\"]");
    CHECK(parse_kv(&p, &job, err, sizeof err,
                   (const char *const[]){"id", "a", "prompt", "p", "stop", "[\"abc\",\"x\"]",
                                         NULL}) == SPECD_OK);
    CHECK_EQ_INT(job.n_stop, 2);
    job_clear(&job);
}

TEST(test_stream_class_priority) {
    OK("id", "a", "prompt", "p", "stream", "0");
    EXPECT_BAD("'2' is not 0 or 1", "id", "a", "prompt", "p", "stream", "2");
    EXPECT_BAD("'true' is not 0 or 1", "id", "a", "prompt", "p", "stream", "true");
    EXPECT_BAD("field 'stream'", "id", "a", "prompt", "p", "stream", "");

    char c64[65], c65[66];
    memset(c64, 'c', 64);
    c64[64] = '\0';
    memset(c65, 'c', 65);
    c65[65] = '\0';
    OK("id", "a", "prompt", "p", "class", c64);
    EXPECT_BAD("field 'class': 65 bytes, longer than 64", "id", "a", "prompt", "p", "class", c65);
    EXPECT_BAD("field 'class': empty", "id", "a", "prompt", "p", "class", "");
    EXPECT_BAD("field 'class': byte 0x20", "id", "a", "prompt", "p", "class", "a b");

    OK("id", "a", "prompt", "p", "priority", "normal");
    EXPECT_BAD("'urgent' is not high or normal", "id", "a", "prompt", "p", "priority", "urgent");
    EXPECT_BAD("'HIGH' is not high or normal", "id", "a", "prompt", "p", "priority", "HIGH");
    EXPECT_BAD("'low' is not high or normal", "id", "a", "prompt", "p", "priority", "low");
}

TEST(test_reason_excerpt_is_printable_and_short) {
    char big[200];
    memset(big, '7', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    EXPECT_BAD("'77777777777777777777777777777777...' is outside", "id", "a", "prompt", "p",
               "max_tokens", big);
    EXPECT_BAD("'\\x01\\x27x' is not a decimal number", "id", "a", "prompt", "p", "top_p",
               "\x01'x");
}

TEST(test_find_field) {
    struct job_field f[3] = {{"id", 2, "a", 1}, {"stream", 6, "1", 1}, {"id", 2, "b", 1}};
    const char *v = NULL;
    size_t len = 0;
    CHECK_EQ_INT(job_find_field(f, 3, "stream", &v, &len), 1);
    CHECK(len == 1 && v[0] == '1');
    CHECK_EQ_INT(job_find_field(f, 3, "id", &v, &len), 0); // twice: ambiguous
    CHECK_EQ_INT(job_find_field(f, 3, "prompt", &v, &len), 0);
}

TEST(test_encode_round_trip) {
    static const char *const stops[] = {"\n", "end\"quote", "caf\xc3\xa9"};
    struct job in;
    job_init(&in, NULL);
    strcpy(in.id, "rt-1");
    in.prompt = "The prompt";
    in.prompt_len = 10;
    in.max_tokens = 12;
    in.temperature = 0.7;
    in.top_p = 0.1 + 0.2; // 0.30000000000000004 needs 17 digits
    in.top_k = 5;
    in.has_seed = 1;
    in.seed = 1234567890123ull;
    in.stop = stops;
    in.n_stop = 3;
    in.stream = 1;
    strcpy(in.class_label, "batch");
    in.priority = JOB_PRIORITY_HIGH;
    struct job_encoded enc;
    REQUIRE(job_encode(&in, &enc) == SPECD_OK);
    CHECK_EQ_INT(enc.n_fields, 12);
    CHECK(enc.fields[0].name_len == 1 && memcmp(enc.fields[0].value, "1", 1) == 0);
    CHECK(enc.fields[4].value_len == 3 && memcmp(enc.fields[4].value, "0.7", 3) == 0);
    CHECK(enc.fields[5].value_len == 19 &&
          memcmp(enc.fields[5].value, "0.30000000000000004", 19) == 0);
    struct job out;
    char err[JOB_REASON_MAX] = "";
    REQUIRE(job_parse(NULL, enc.fields, enc.n_fields, &out, err, sizeof err) == SPECD_OK);
    CHECK_EQ_STR(out.id, "rt-1");
    CHECK_EQ_STR(out.prompt, "The prompt");
    CHECK_EQ_INT(out.max_tokens, 12);
    CHECK(out.temperature == 0.7);
    CHECK(out.top_p == 0.1 + 0.2);
    CHECK_EQ_INT(out.top_k, 5);
    CHECK(out.has_seed && out.seed == 1234567890123ull);
    REQUIRE(out.n_stop == 3);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_STR(out.stop[i], stops[i]);
    CHECK_EQ_INT(out.stream, 1);
    CHECK_EQ_STR(out.class_label, "batch");
    CHECK_EQ_INT(out.priority, JOB_PRIORITY_HIGH);
    job_clear(&out);
    job_encoded_clear(&enc);
    job_encoded_clear(NULL);
}

TEST(test_fields_to_json) {
    struct job_field f[3] = {
        {"id", 2, "a\"b\\c", 5},
        {"prompt", 6, "x\n\x01\0\xc3\xa9\xff\xc3", 8},
        {"id", 2, "", 0},
    };
    char *json = job_fields_to_json(f, 3);
    REQUIRE(json != NULL);
    CHECK_EQ_STR(json, "{\"id\":\"a\\\"b\\\\c\",\"prompt\":\"x\\n\\u0001\\u0000\xc3\xa9\\u00ff"
                       "\\u00c3\",\"id\":\"\"}");
    // An independent parser accepts it and reads the same values.
    cJSON *obj = cJSON_Parse(json);
    REQUIRE(obj != NULL);
    CHECK_EQ_STR(cJSON_GetObjectItemCaseSensitive(obj, "id")->valuestring, "a\"b\\c");
    cJSON_Delete(obj);
    free(json);
    char *empty = job_fields_to_json(NULL, 0);
    CHECK_EQ_STR(empty, "{}");
    free(empty);
}

int main(int argc, char **argv) {
    TEST_MAIN_BEGIN(argc, argv);
    TEST_RUN(test_minimal_job_takes_defaults);
    TEST_RUN(test_every_field);
    TEST_RUN(test_prompt_bytes_are_kept_exactly);
    TEST_RUN(test_version);
    TEST_RUN(test_missing_and_duplicate_fields);
    TEST_RUN(test_unknown_fields);
    TEST_RUN(test_id_rules);
    TEST_RUN(test_prompt_rules);
    TEST_RUN(test_max_tokens);
    TEST_RUN(test_temperature);
    TEST_RUN(test_top_p_top_k_seed);
    TEST_RUN(test_stop);
    TEST_RUN(test_stream_class_priority);
    TEST_RUN(test_reason_excerpt_is_printable_and_short);
    TEST_RUN(test_find_field);
    TEST_RUN(test_encode_round_trip);
    TEST_RUN(test_fields_to_json);
    return TEST_MAIN_END();
}
