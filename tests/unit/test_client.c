// The C client library and specd-submit against a real redis-server on a free port. The worker
// side is played by hand with plain hiredis commands (XREADGROUP, HSET result, XADD done, XADD
// deltas), as docs/protocol.md describes it, so the client is checked against the protocol and
// not against rq's own worker code. Redis state is read back with plain XRANGE/HGETALL.
#include "clients/c/specd_client.h"

#include "shared/clock.h"
#include "shared/log.h"
#include "shared/status.h"

#include "tests/support/redis_server.h"
#include "tests/test.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <libgen.h>
#include <netinet/in.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static struct redis_server srv;
static int srv_rc = SPECD_ERR_STATE;
static char srv_err[512];
static redisContext *raw_ctx;
static char cli_path[1024]; // specd-submit ("" when not built)

#define NEED_SERVER()                                                                              \
    do {                                                                                           \
        if (srv_rc == SPECD_SOFT_EMPTY)                                                            \
            TEST_SKIP("%s", srv_err);                                                              \
        REQUIRE(srv_rc == SPECD_OK && raw_ctx);                                                    \
    } while (0)

#define NEED_CLI()                                                                                 \
    do {                                                                                           \
        NEED_SERVER();                                                                             \
        if (!cli_path[0])                                                                          \
            TEST_SKIP("specd-submit is not built (make programs, or set SPECD_SUBMIT)");           \
    } while (0)

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static redisReply *raw(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(raw_ctx, fmt, ap);
    va_end(ap);
    return r;
}

static long long raw_int(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(raw_ctx, fmt, ap);
    va_end(ap);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -999;
    freeReplyObject(r);
    return v;
}

// The fields of entry `index` of <prefix>jobs as "name=value;name=value;..." (exact bytes, in
// order), via plain XRANGE.
static void entry_fields(const char *prefix, size_t index, char *out, size_t size) {
    out[0] = '\0';
    redisReply *r = raw("XRANGE %sjobs - +", prefix);
    if (r && r->type == REDIS_REPLY_ARRAY && index < r->elements) {
        const redisReply *kv = r->element[index]->element[1];
        size_t o = 0;
        for (size_t i = 0; i + 1 < kv->elements && o < size; i += 2)
            o += (size_t)snprintf(out + o, size - o, "%s%s=%s", i ? ";" : "", kv->element[i]->str,
                                  kv->element[i + 1]->str);
    }
    freeReplyObject(r);
}

static specd_client *open_client(const char *prefix) {
    specd_client *c = specd_client_new("127.0.0.1", srv.port, prefix);
    if (c && !specd_client_is_connected(c))
        fprintf(stderr, "  client: %s\n", specd_client_last_error(c));
    return c;
}

// A port with nothing listening on it.
static int closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

// ---- the hand-played worker --------------------------------------------------------------------

struct hand_worker {
    char prefix[32];
    int n_jobs;            // jobs to serve, then the thread ends
    const char *deltas[8]; // text pieces streamed for `stream 1` jobs (NULL-terminated)
    int reset_after;       // >0: for prompts "restart...", after this many deltas write
                           // `reset 1` and stream the text again from its beginning
    const char *status;    // "done" (default) or "error"
    const char *error;     // the `error` field
    int delay_ms;          // before writing each result
    int served;            // out
    char last_prompt[128]; // out
};

static const char *kv_get(const redisReply *kv, const char *name) {
    for (size_t i = 0; i + 1 < kv->elements; i += 2)
        if (strcmp(kv->element[i]->str, name) == 0)
            return kv->element[i + 1]->str;
    return "";
}

// Serves one job entry the way a worker does: deltas, result hash, done announcement, ack.
static void hand_serve(redisContext *c, struct hand_worker *w, const char *entry,
                       const redisReply *kv) {
    const char *id = kv_get(kv, "id"), *prompt = kv_get(kv, "prompt");
    snprintf(w->last_prompt, sizeof w->last_prompt, "%s", prompt);
    char text[512] = "";
    for (int i = 0; w->deltas[i]; i++)
        strncat(text, w->deltas[i], sizeof text - strlen(text) - 1);
    if (!w->deltas[0])
        snprintf(text, sizeof text, "echo:%s", prompt);
    int streaming = strcmp(kv_get(kv, "stream"), "1") == 0;
    int reset_at = strncmp(prompt, "restart", 7) == 0 ? w->reset_after : 0;
    for (int i = 0; streaming && w->deltas[i]; i++) {
        if (reset_at && i == reset_at) {
            freeReplyObject(redisCommand(c, "XADD %sstream:%s * reset 1", w->prefix, id));
            for (int j = 0; j < i; j++)
                freeReplyObject(
                    redisCommand(c, "XADD %sstream:%s * delta %s", w->prefix, id, w->deltas[j]));
        }
        freeReplyObject(
            redisCommand(c, "XADD %sstream:%s * delta %s", w->prefix, id, w->deltas[i]));
        sleep_ms(20);
    }
    sleep_ms(w->delay_ms);
    freeReplyObject(redisCommand(
        c,
        "HSET %sresult:%s status %s text %s finish_reason length prompt_tokens 7 "
        "completion_tokens 5 drafted_tokens 12 accepted_tokens 9 queue_ms 1.250 ttft_ms 20.500 "
        "total_ms 80.125 worker hand-1 error %s",
        w->prefix, id, w->status ? w->status : "done", text, w->error ? w->error : ""));
    if (streaming)
        freeReplyObject(redisCommand(c, "XADD %sstream:%s * done 1", w->prefix, id));
    freeReplyObject(redisCommand(c, "XADD %sdone * id %s", w->prefix, id));
    freeReplyObject(redisCommand(c, "XACK %sjobs specd-workers %s", w->prefix, entry));
}

static void *hand_worker_main(void *arg) {
    struct hand_worker *w = arg;
    redisContext *c = redisConnect("127.0.0.1", srv.port);
    if (!c || c->err)
        return NULL;
    freeReplyObject(redisCommand(c, "XGROUP CREATE %sjobs specd-workers 0 MKSTREAM", w->prefix));
    double give_up = clock_now_ms() + 8000;
    while (w->served < w->n_jobs && clock_now_ms() < give_up) {
        redisReply *r = redisCommand(
            c, "XREADGROUP GROUP specd-workers hand-1 COUNT 1 BLOCK 200 STREAMS %sjobs >",
            w->prefix);
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
            const redisReply *entries = r->element[0]->element[1];
            for (size_t i = 0; i < entries->elements; i++, w->served++)
                hand_serve(c, w, entries->element[i]->element[0]->str,
                           entries->element[i]->element[1]);
        }
        freeReplyObject(r);
    }
    redisFree(c);
    return NULL;
}

// ---- running specd-submit ----------------------------------------------------------------------

struct cli_out {
    int status; // exit status, or -1
    char out[8192], err[8192];
    double ms;
};

static void slurp(int fd, char *buf, size_t size) {
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, buf, size - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
}

// Runs specd-submit with the arguments (NULL-terminated), stdout and stderr captured.
static void run_cli(struct cli_out *o, ...) {
    const char *argv[48] = {cli_path};
    int n = 1;
    va_list ap;
    va_start(ap, o);
    for (const char *a; n < 47 && (a = va_arg(ap, const char *));)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    char out_path[] = "/tmp/specd-cli-out-XXXXXX", err_path[] = "/tmp/specd-cli-err-XXXXXX";
    int out_fd = mkstemp(out_path), err_fd = mkstemp(err_path);
    unlink(out_path);
    unlink(err_path);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    pid_t pid;
    double t0 = clock_now_ms();
    o->status = -1;
    if (posix_spawn(&pid, cli_path, &fa, NULL, (char *const *)argv, environ) == 0) {
        int st;
        waitpid(pid, &st, 0);
        o->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    }
    o->ms = clock_now_ms() - t0;
    posix_spawn_file_actions_destroy(&fa);
    slurp(out_fd, o->out, sizeof o->out);
    slurp(err_fd, o->err, sizeof o->err);
}

static const char *redis_arg(void) {
    static char buf[64];
    snprintf(buf, sizeof buf, "127.0.0.1:%d", srv.port);
    return buf;
}

// ---- pure parts ---------------------------------------------------------------------------------

TEST(test_job_ids) {
    uint64_t rng = 7, rng2 = 7;
    char ids[200][SPECD_JOB_ID_SIZE];
    for (int i = 0; i < 200; i++) {
        REQUIRE(specd_job_id_generate(1718000000123ull, &rng, ids[i], sizeof ids[i]) == SPECD_OK);
        CHECK(job_id_is_valid(ids[i], strlen(ids[i])));
        CHECK(strncmp(ids[i], "1718000000123-", 14) == 0);
        CHECK_EQ_INT(strlen(ids[i]), 14 + 16);
        for (int j = 0; j < i; j++)
            CHECK(strcmp(ids[i], ids[j]) != 0);
    }
    char again[SPECD_JOB_ID_SIZE];
    specd_job_id_generate(1718000000123ull, &rng2, again, sizeof again);
    CHECK_EQ_STR(again, ids[0]); // the generator state decides; nothing global
    char big[SPECD_JOB_ID_SIZE];
    specd_job_id_generate(UINT64_MAX, &rng2, big, sizeof big);
    CHECK(job_id_is_valid(big, strlen(big)));
    CHECK_EQ_INT(specd_job_id_generate(1, &rng, big, 39), SPECD_ERR_INVALID);
}

TEST(test_request_from_json) {
    const char *line = "{\"id\":\"j-1\",\"prompt\":\"say \\\"hi\\\"\\n\",\"max_tokens\":12,"
                       "\"temperature\":0.7,\"top_p\":0.95,\"top_k\":40,\"seed\":42,"
                       "\"stop\":[\"\\n\\n\",\"END\"],\"stream\":true,\"class\":\"code\","
                       "\"priority\":\"high\",\"v\":1}\n";
    struct specd_request r;
    char err[300];
    REQUIRE(specd_request_from_json(line, strlen(line), NULL, &r, err, sizeof err) == SPECD_OK);
    CHECK_EQ_STR(r.id, "j-1");
    CHECK_EQ_STR(r.prompt, "say \"hi\"\n");
    CHECK_EQ_INT(r.prompt_len, 9);
    CHECK_EQ_INT(r.max_tokens, 12);
    CHECK(r.temperature == 0.7 && r.top_p == 0.95);
    CHECK_EQ_INT(r.top_k, 40);
    CHECK(r.has_seed && r.seed == 42);
    REQUIRE(r.n_stop == 2);
    CHECK_EQ_STR(r.stop[0], "\n\n");
    CHECK_EQ_STR(r.stop[1], "END");
    CHECK(r.stream == 1 && r.priority == JOB_PRIORITY_HIGH);
    CHECK_EQ_STR(r.class_label, "code");
    CHECK_EQ_INT(specd_request_validate(&r, err, sizeof err), SPECD_OK);
    specd_request_clear(&r);
    CHECK(r.storage == NULL);

    // Keys absent from the line keep the base's values; present keys override them.
    struct specd_request base = specd_request_default();
    const char *base_stop[1] = {"###"};
    base.max_tokens = 9;
    base.temperature = 0;
    base.stop = base_stop;
    base.n_stop = 1;
    base.class_label = "chat";
    const char *l2 = "{\"prompt\":\"p\",\"max_tokens\":3,\"seed\":\"18446744073709551615\"}";
    REQUIRE(specd_request_from_json(l2, strlen(l2), &base, &r, err, sizeof err) == SPECD_OK);
    CHECK_EQ_INT(r.max_tokens, 3);
    CHECK(r.temperature == 0 && r.top_p == 1.0 && r.top_k == 0);
    CHECK(r.n_stop == 1 && strcmp(r.stop[0], "###") == 0);
    CHECK_EQ_STR(r.class_label, "chat");
    CHECK(r.has_seed && r.seed == UINT64_MAX);
    CHECK(r.id == NULL && r.stream == 0 && r.priority == JOB_PRIORITY_NORMAL);
    specd_request_clear(&r);
    const char *l3 = "{\"prompt\":\"p\",\"stop\":\"x\",\"stream\":1}";
    REQUIRE(specd_request_from_json(l3, strlen(l3), &base, &r, err, sizeof err) == SPECD_OK);
    CHECK(r.n_stop == 1 && strcmp(r.stop[0], "x") == 0 && r.stream == 1);
    specd_request_clear(&r);

    static const struct {
        const char *json, *why;
    } bad[] = {
        {"{\"prompt\":\"a\"", "not valid JSON"},
        {"{\"prompt\":\"a\"} x", "not valid JSON (at byte 16)"},
        {"[1,2]", "expected a JSON object"},
        {"{\"prompt\":\"a\",\"max_token\":3}", "unknown field 'max_token'"},
        {"{\"prompt\":\"a\",\"prompt\":\"b\"}", "duplicate field 'prompt'"},
        {"{\"prompt\":5}", "field 'prompt': expected a string"},
        {"{\"prompt\":\"a\",\"max_tokens\":2.5}", "field 'max_tokens': expected an integer"},
        {"{\"prompt\":\"a\",\"max_tokens\":\"3\"}", "field 'max_tokens': expected an integer"},
        {"{\"prompt\":\"a\",\"top_k\":1e12}", "field 'top_k': 1000000000000 is out of range"},
        {"{\"prompt\":\"a\",\"temperature\":\"hot\"}", "field 'temperature': expected a number"},
        {"{\"prompt\":\"a\",\"seed\":-1}", "field 'seed': -1 is out of range"},
        {"{\"prompt\":\"a\",\"seed\":1e19}", "field 'seed': numbers above 2^53"},
        {"{\"prompt\":\"a\",\"seed\":\"12x\"}", "field 'seed': '12x' is not a decimal integer"},
        {"{\"prompt\":\"a\",\"stop\":[\"a\",3]}", "field 'stop': element 1 is not a string"},
        {"{\"prompt\":\"a\",\"stream\":2}", "field 'stream': expected true, false, 0 or 1"},
        {"{\"prompt\":\"a\",\"priority\":\"urgent\"}", "field 'priority': 'urgent' is not"},
        {"{\"prompt\":\"a\",\"v\":2}", "field 'v': only version 1 is supported"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc =
            specd_request_from_json(bad[i].json, strlen(bad[i].json), &base, &r, err, sizeof err);
        CHECK_EQ_INT(rc, SPECD_ERR_FORMAT);
        CHECK(r.storage == NULL && r.max_tokens == 9); // left as the base
        if (!strstr(err, bad[i].why))
            TEST_FAIL_AT(__FILE__, __LINE__, "%s: got '%s', want '%s'", bad[i].json, err,
                         bad[i].why);
    }
}

TEST(test_request_validate) {
    char err[300];
    struct specd_request r = specd_request_default();
    r.prompt = "p";
    CHECK_EQ_INT(specd_request_validate(&r, err, sizeof err), SPECD_OK);
    r.top_p = 1.5;
    CHECK_EQ_INT(specd_request_validate(&r, err, sizeof err), SPECD_ERR_FORMAT);
    CHECK(strstr(err, "field 'top_p'") != NULL);
    r.top_p = 1;
    r.max_tokens = 0;
    CHECK_EQ_INT(specd_request_validate(&r, err, sizeof err), SPECD_ERR_FORMAT);
    CHECK(strstr(err, "field 'max_tokens'") != NULL);
    r.max_tokens = 5;
    const char *stops[17];
    for (int i = 0; i < 17; i++)
        stops[i] = "s";
    r.stop = stops;
    r.n_stop = 17;
    CHECK_EQ_INT(specd_request_validate(&r, err, sizeof err), SPECD_ERR_FORMAT);
    r.n_stop = 16;
    CHECK_EQ_INT(specd_request_validate(&r, err, sizeof err), SPECD_OK);
    r.class_label = "bad label";
    CHECK_EQ_INT(specd_request_validate(&r, err, sizeof err), SPECD_ERR_FORMAT);
    CHECK(strstr(err, "field 'class'") != NULL);
    r.class_label = NULL;
    r.id = "has space";
    CHECK_EQ_INT(specd_request_validate(&r, err, sizeof err), SPECD_ERR_FORMAT);
    CHECK(strstr(err, "field 'id'") != NULL);
    r.id = NULL;
    r.prompt = NULL;
    CHECK_EQ_INT(specd_request_validate(&r, err, sizeof err), SPECD_ERR_FORMAT);
    CHECK_EQ_STR(err, "missing field 'prompt'");
}

// ---- the library against Redis
// -------------------------------------------------------------------

TEST(test_submit_fields_land_exactly) {
    NEED_SERVER();
    specd_client *c = open_client("sub:");
    REQUIRE(c && specd_client_is_connected(c));
    struct specd_request r = specd_request_default();
    const char *stops[2] = {"\n\n", "say \"x\""};
    r.id = "job-all.fields:1";
    r.prompt = "def fib(n):";
    r.max_tokens = 48;
    r.temperature = 0.7;
    r.top_p = 0.9;
    r.top_k = 40;
    r.has_seed = 1;
    r.seed = 18446744073709551615ull;
    r.stop = stops;
    r.n_stop = 2;
    r.stream = 1;
    r.class_label = "code";
    r.priority = JOB_PRIORITY_HIGH;
    char id[SPECD_JOB_ID_SIZE];
    REQUIRE(specd_client_submit(c, &r, id, sizeof id) == SPECD_OK);
    CHECK_EQ_STR(id, "job-all.fields:1");
    char f[1024];
    entry_fields("sub:", 0, f, sizeof f);
    CHECK_EQ_STR(f, "v=1;id=job-all.fields:1;prompt=def fib(n):;max_tokens=48;temperature=0.7;"
                    "top_p=0.9;top_k=40;seed=18446744073709551615;stop=[\"\\n\\n\",\"say "
                    "\\\"x\\\"\"];stream=1;class=code;priority=high");

    // Defaults and a generated id.
    struct specd_request d = specd_request_default();
    d.prompt = "hi";
    REQUIRE(specd_client_submit(c, &d, id, sizeof id) == SPECD_OK);
    CHECK(job_id_is_valid(id, strlen(id)));
    char want[512];
    snprintf(want, sizeof want,
             "v=1;id=%s;prompt=hi;max_tokens=256;temperature=1;top_p=1;top_k=0;stream=0;"
             "priority=normal",
             id);
    entry_fields("sub:", 1, f, sizeof f);
    CHECK_EQ_STR(f, want);
    char id2[SPECD_JOB_ID_SIZE];
    REQUIRE(specd_client_submit(c, &d, id2, sizeof id2) == SPECD_OK);
    CHECK(strcmp(id, id2) != 0);

    // An invalid job adds nothing and says why.
    d.top_p = 0;
    CHECK_EQ_INT(specd_client_submit(c, &d, id, sizeof id), SPECD_ERR_FORMAT);
    CHECK(strstr(specd_client_last_error(c), "invalid job: field 'top_p'") != NULL);
    CHECK_EQ_STR(id, "");
    CHECK_EQ_INT(raw_int("XLEN sub:jobs"), 3);
    specd_client_free(c);
}

TEST(test_wait_returns_result_of_hand_worker) {
    NEED_SERVER();
    specd_client *c = open_client("wait:");
    REQUIRE(c);
    struct hand_worker w = {.prefix = "wait:", .n_jobs = 1, .delay_ms = 300};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, hand_worker_main, &w) == 0);
    struct specd_request r = specd_request_default();
    r.prompt = "ping";
    char id[SPECD_JOB_ID_SIZE];
    REQUIRE(specd_client_submit(c, &r, id, sizeof id) == SPECD_OK);
    struct rq_result res;
    double t0 = clock_now_ms();
    int rc = specd_client_wait(c, id, 5000, &res);
    double waited = clock_now_ms() - t0;
    pthread_join(th, NULL);
    REQUIRE(rc == SPECD_OK);
    CHECK(waited >= 250 && waited < 3000); // it blocked until the worker wrote the result
    CHECK(res.status == RQ_RESULT_DONE);
    CHECK_EQ_STR(res.text, "echo:ping");
    CHECK_EQ_INT(res.text_len, 9);
    CHECK_EQ_STR(res.finish_reason, "length");
    CHECK_EQ_INT(res.prompt_tokens, 7);
    CHECK_EQ_INT(res.completion_tokens, 5);
    CHECK_EQ_INT(res.drafted_tokens, 12);
    CHECK_EQ_INT(res.accepted_tokens, 9);
    CHECK(res.queue_ms == 1.25 && res.ttft_ms == 20.5 && res.total_ms == 80.125);
    CHECK_EQ_STR(res.worker, "hand-1");
    CHECK_EQ_STR(res.error, "");
    rq_result_clear(&res);
    // The result is still there for a plain look.
    REQUIRE(specd_client_result(c, id, &res) == SPECD_OK);
    CHECK_EQ_STR(res.text, "echo:ping");
    rq_result_clear(&res);
    specd_client_free(c);
}

TEST(test_wait_timeout_and_error_result) {
    NEED_SERVER();
    specd_client *c = open_client("tmo:");
    REQUIRE(c);
    struct rq_result res;
    double t0 = clock_now_ms();
    CHECK_EQ_INT(specd_client_wait(c, "nobody-works-on-this", 300, &res), SPECD_SOFT_EMPTY);
    double waited = clock_now_ms() - t0;
    CHECK(waited >= 290 && waited < 1500);
    CHECK(strstr(specd_client_last_error(c), "no result for job nobody-works-on-this") != NULL);
    CHECK_EQ_INT(specd_client_result(c, "nobody-works-on-this", &res), SPECD_SOFT_EMPTY);
    CHECK_EQ_INT(specd_client_wait(c, "bad id", 10, &res), SPECD_ERR_INVALID);

    // A job the worker rejected: status error with the reason.
    struct hand_worker w = {.prefix = "tmo:",
                            .n_jobs = 1,
                            .status = "error",
                            .error = "prompt longer than the context"};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, hand_worker_main, &w) == 0);
    struct specd_request r = specd_request_default();
    r.prompt = "long";
    char id[SPECD_JOB_ID_SIZE];
    REQUIRE(specd_client_submit(c, &r, id, sizeof id) == SPECD_OK);
    int rc = specd_client_wait(c, id, 5000, &res);
    pthread_join(th, NULL);
    REQUIRE(rc == SPECD_OK);
    CHECK(res.status == RQ_RESULT_ERROR);
    CHECK_EQ_STR(res.error, "prompt longer than the context");
    rq_result_clear(&res);
    specd_client_free(c);
}

// Follows a stream to its end; returns the text kept (after resets) and the chunk count.
static int follow(specd_client *c, const char *id, char *text, size_t size, int *resets) {
    struct specd_stream s;
    if (specd_stream_init(&s, id) != SPECD_OK)
        return -1;
    size_t len = 0;
    int chunks = 0;
    text[0] = '\0';
    while (!s.done) {
        struct rq_stream_chunk ch;
        int rc = specd_client_stream_next(c, &s, 3000, &ch);
        if (rc != SPECD_OK)
            return rc;
        if (ch.reset) {
            len = 0;
            (*resets)++;
        }
        if (len + ch.len < size) {
            memcpy(text + len, ch.text, ch.len);
            len += ch.len;
            text[len] = '\0';
        }
        chunks++;
        rq_stream_chunk_clear(&ch);
    }
    return chunks;
}

TEST(test_stream_deltas_followed_to_done) {
    NEED_SERVER();
    specd_client *c = open_client("str:");
    REQUIRE(c);
    struct hand_worker w = {.prefix = "str:",
                            .n_jobs = 2,
                            .reset_after = 2,
                            .deltas = {"Hel", "lo, ", "w\xc3", "\xb6rld", NULL}};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, hand_worker_main, &w) == 0);
    struct specd_request r = specd_request_default();
    r.prompt = "greet";
    r.stream = 1;
    char id[SPECD_JOB_ID_SIZE];
    REQUIRE(specd_client_submit(c, &r, id, sizeof id) == SPECD_OK);
    char text[256];
    int resets = 0;
    int chunks = follow(c, id, text, sizeof text, &resets);
    CHECK(chunks >= 2); // the deltas arrive over time, not in one piece
    CHECK_EQ_STR(text, "Hello, w\xc3\xb6rld");
    CHECK_EQ_INT(resets, 0);
    struct specd_stream s;
    specd_stream_init(&s, id);
    s.done = 1;
    struct rq_stream_chunk ch;
    CHECK_EQ_INT(specd_client_stream_next(c, &s, 0, &ch), SPECD_ERR_STATE);

    // A restarted job: `reset 1`, then the text again from its beginning.
    r.prompt = "restart";
    REQUIRE(specd_client_submit(c, &r, id, sizeof id) == SPECD_OK);
    chunks = follow(c, id, text, sizeof text, &resets);
    pthread_join(th, NULL);
    CHECK(chunks >= 1);
    CHECK_EQ_STR(text, "Hello, w\xc3\xb6rld");
    CHECK_EQ_INT(resets, 1);

    // Nothing streamed: SOFT_EMPTY after the timeout.
    specd_stream_init(&s, "silent-job");
    double t0 = clock_now_ms();
    CHECK_EQ_INT(specd_client_stream_next(c, &s, 250, &ch), SPECD_SOFT_EMPTY);
    double waited = clock_now_ms() - t0;
    CHECK(waited >= 240 && waited < 1500);
    CHECK_EQ_INT(specd_client_stream_next(c, &s, 0, &ch), SPECD_SOFT_EMPTY);
    CHECK_EQ_INT(specd_stream_init(&s, "bad id"), SPECD_ERR_INVALID);
    specd_client_free(c);
}

TEST(test_connection_refused_message) {
    int port = closed_port();
    REQUIRE(port > 0);
    specd_client *c = specd_client_new("127.0.0.1", port, NULL);
    REQUIRE(c);
    CHECK(!specd_client_is_connected(c));
    char want[160];
    snprintf(want, sizeof want,
             "cannot connect to Redis at 127.0.0.1:%d: Connection refused \xe2\x80\x94 is "
             "redis-server running?",
             port);
    CHECK_EQ_STR(specd_client_last_error(c), want);
    struct specd_request r = specd_request_default();
    r.prompt = "p";
    char id[SPECD_JOB_ID_SIZE];
    CHECK_EQ_INT(specd_client_submit(c, &r, id, sizeof id), RQ_SOFT_DISCONNECTED);
    CHECK_EQ_STR(specd_client_last_error(c), want); // also while waiting for the next attempt
    CHECK_EQ_INT(specd_client_connect(c), RQ_SOFT_DISCONNECTED);
    CHECK_EQ_STR(specd_client_last_error(c), want);
    specd_client_free(c);
    CHECK(specd_client_new("", 6379, NULL) == NULL);
    CHECK(specd_client_new("127.0.0.1", 0, NULL) == NULL);
    CHECK(specd_client_new("127.0.0.1", 65536, NULL) == NULL);
    specd_client_free(NULL);

    if (!cli_path[0])
        return;
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    struct cli_out o;
    run_cli(&o, "--redis", addr, "-p", "x", NULL);
    CHECK_EQ_INT(o.status, 1);
    char want_cli[256];
    snprintf(want_cli, sizeof want_cli, "specd-submit: %s use --redis HOST:PORT\n", want);
    CHECK_EQ_STR(o.err, want_cli);
    CHECK_EQ_STR(o.out, "");
}

// ---- specd-submit
// --------------------------------------------------------------------------------

TEST(test_cli_submit_from_args) {
    NEED_CLI();
    struct cli_out o;
    run_cli(&o, "--redis", redis_arg(), "--prefix", "cli1:", "-p", "hello world", "-n", "5",
            "--temperature", "0.25", "--top-p", "0.5", "--top-k", "3", "--seed", "99", "--stop",
            "a", "--stop", "b b", "--class", "c.1", "--priority", "high", "--id", "my-job", NULL);
    CHECK_EQ_INT(o.status, 0);
    CHECK_EQ_STR(o.out, "my-job\n");
    char f[1024];
    entry_fields("cli1:", 0, f, sizeof f);
    CHECK_EQ_STR(f, "v=1;id=my-job;prompt=hello world;max_tokens=5;temperature=0.25;top_p=0.5;"
                    "top_k=3;seed=99;stop=[\"a\",\"b b\"];stream=0;class=c.1;priority=high");
    run_cli(&o, "--redis", redis_arg(), "--prefix", "cli1:", "-p", "again", "--json", NULL);
    CHECK_EQ_INT(o.status, 0);
    cJSON *j = cJSON_Parse(o.out);
    const cJSON *id = cJSON_GetObjectItem(j, "id");
    CHECK(cJSON_IsString(id) && job_id_is_valid(id->valuestring, strlen(id->valuestring)));
    cJSON_Delete(j);
    CHECK_EQ_INT(raw_int("XLEN cli1:jobs"), 2);
}

TEST(test_cli_submit_from_jsonl_with_bad_lines) {
    NEED_CLI();
    char path[] = "/tmp/specd-jobs-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    const char *jobs = "{\"id\":\"a1\",\"prompt\":\"first\",\"stop\":[\"\\n\"]}\n"
                       "{\"id\":\"a2\",\"prompt\": oops}\n"
                       "\n"
                       "{\"id\":\"a3\",\"prompt\":\"third\",\"max_tokens\":3,\"stream\":true}\n"
                       "{\"id\":\"a4\",\"prompt\":\"fourth\",\"top_p\":1.5}\n"
                       "{\"prompt\":\"fifth\",\"priority\":\"high\"}";
    REQUIRE(write(fd, jobs, strlen(jobs)) == (ssize_t)strlen(jobs));
    close(fd);
    struct cli_out o;
    run_cli(&o, "--redis", redis_arg(), "--prefix", "cli2:", "-f", path, "-n", "7", "--temperature",
            "0", NULL);
    unlink(path);
    CHECK_EQ_INT(o.status, 1); // bad lines make the run fail, after the good ones went in
    char want_err[512];
    snprintf(want_err, sizeof want_err,
             "specd-submit: %s:2: not valid JSON (at byte 22)\n" // the o of oops
             "specd-submit: %s:5: invalid job: field 'top_p': '1.5' is outside (0, 1]\n",
             path, path);
    CHECK_EQ_STR(o.err, want_err);
    REQUIRE(strncmp(o.out, "a1\na3\n", 6) == 0);
    const char *gen = o.out + 6;
    CHECK(strlen(gen) == 31 && gen[30] == '\n'); // a generated id for line 6
    CHECK_EQ_INT(raw_int("XLEN cli2:jobs"), 3);
    char f[1024];
    entry_fields("cli2:", 0, f, sizeof f);
    CHECK_EQ_STR(f, "v=1;id=a1;prompt=first;max_tokens=7;temperature=0;top_p=1;top_k=0;"
                    "stop=[\"\\n\"];stream=0;priority=normal");
    entry_fields("cli2:", 1, f, sizeof f);
    CHECK_EQ_STR(f, "v=1;id=a3;prompt=third;max_tokens=3;temperature=0;top_p=1;top_k=0;"
                    "stream=1;priority=normal");
    entry_fields("cli2:", 2, f, sizeof f);
    char want[512];
    snprintf(want, sizeof want,
             "v=1;id=%.30s;prompt=fifth;max_tokens=7;temperature=0;top_p=1;top_k=0;stream=0;"
             "priority=high",
             gen);
    CHECK_EQ_STR(f, want);
}

TEST(test_cli_wait_prints_results) {
    NEED_CLI();
    struct hand_worker w = {.prefix = "cli3:", .n_jobs = 2, .delay_ms = 100};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, hand_worker_main, &w) == 0);
    struct cli_out o, j;
    run_cli(&o, "--redis", redis_arg(), "--prefix", "cli3:", "-p", "abc", "--wait", NULL);
    run_cli(&j, "--redis", redis_arg(), "--prefix", "cli3:", "-p", "x\"y", "--id", "jid-2",
            "--wait", "--json", NULL);
    pthread_join(th, NULL);
    CHECK_EQ_INT(o.status, 0);
    CHECK_EQ_STR(o.out, "echo:abc\n");
    CHECK_EQ_INT(j.status, 0);
    CHECK_EQ_STR(j.out, "{\"id\":\"jid-2\",\"status\":\"done\",\"text\":\"echo:x\\\"y\","
                        "\"finish_reason\":\"length\",\"prompt_tokens\":7,"
                        "\"completion_tokens\":5,\"drafted_tokens\":12,\"accepted_tokens\":9,"
                        "\"queue_ms\":1.250,\"ttft_ms\":20.500,\"total_ms\":80.125,"
                        "\"worker\":\"hand-1\",\"error\":\"\"}\n");
    cJSON *parsed = cJSON_Parse(j.out);
    CHECK(parsed != NULL);
    cJSON_Delete(parsed);
}

TEST(test_cli_stream_prints_deltas) {
    NEED_CLI();
    struct hand_worker w = {
        .prefix = "cli4:", .n_jobs = 2, .deltas = {"one ", "two ", "thr\xe2\x82", "\xac", NULL}};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, hand_worker_main, &w) == 0);
    struct cli_out o, j;
    run_cli(&o, "--redis", redis_arg(), "--prefix", "cli4:", "-p", "count", "--stream", NULL);
    run_cli(&j, "--redis", redis_arg(), "--prefix", "cli4:", "-p", "count", "--stream", "--json",
            "--id", "s-2", NULL);
    pthread_join(th, NULL);
    CHECK_EQ_INT(o.status, 0);
    CHECK_EQ_STR(o.out, "one two thr\xe2\x82\xac\n");
    CHECK_EQ_INT(j.status, 0);
    // JSON lines: deltas (a UTF-8 character split between deltas is held back until whole),
    // then the result.
    char text[128] = "";
    int n_delta = 0, n_result = 0;
    for (char *line = strtok(j.out, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *x = cJSON_Parse(line);
        CHECK(x != NULL);
        const cJSON *d = cJSON_GetObjectItem(x, "delta");
        if (cJSON_IsString(d)) {
            strncat(text, d->valuestring, sizeof text - strlen(text) - 1);
            CHECK(strstr(d->valuestring, "\xef\xbf\xbd") == NULL); // no U+FFFD
            n_delta++;
        } else if (cJSON_GetObjectItem(x, "status")) {
            n_result++;
            CHECK_EQ_STR(cJSON_GetObjectItem(x, "text")->valuestring, "one two thr\xe2\x82\xac");
        }
        cJSON_Delete(x);
    }
    CHECK(n_delta >= 2);
    CHECK_EQ_INT(n_result, 1);
    CHECK_EQ_STR(text, "one two thr\xe2\x82\xac");
}

TEST(test_cli_wait_timeout_and_failed_job) {
    NEED_CLI();
    struct cli_out o;
    run_cli(&o, "--redis", redis_arg(), "--prefix", "cli5:", "-p", "x", "--id", "t-1", "--wait",
            "--timeout", "0.3", NULL);
    CHECK_EQ_INT(o.status, 1);
    CHECK(o.ms < 3000);
    CHECK(strstr(o.err, "specd-submit: job t-1: no result within 0.3 s (is a worker running?") !=
          NULL);
    CHECK(strstr(o.err, "is a worker running?") != NULL);
    struct hand_worker w = {
        .prefix = "cli6:", .n_jobs = 1, .status = "error", .error = "bad_job_reason"};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, hand_worker_main, &w) == 0);
    run_cli(&o, "--redis", redis_arg(), "--prefix", "cli6:", "-p", "x", "--id", "e-1", "--wait",
            NULL);
    pthread_join(th, NULL);
    CHECK_EQ_INT(o.status, 1);
    CHECK_EQ_STR(o.err, "specd-submit: job e-1 failed: bad_job_reason\n");
}

TEST(test_cli_usage) {
    NEED_CLI();
    struct cli_out o;
    run_cli(&o, "--help", NULL);
    CHECK_EQ_INT(o.status, 0);
    CHECK(strncmp(o.out, "usage: specd-submit", 19) == 0);
    static const char *const cases[][6] = {
        {NULL},
        {"-p", "x", "-f", "y", NULL},
        {"-p", "x", "--top-p", "1.5", NULL},
        {"-p", "x", "--max-tokens", "many", NULL},
        {"-p", "x", "--timeout", "3", NULL},
        {"-f", "y", "--id", "i", NULL},
        {"-p", "x", "--priority", "urgent", NULL},
        {"-p", "x", "--redis", "host:99999", NULL},
        {"-p", "x", "--frobnicate", NULL},
        {"-p", "x", "extra", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *const *a = cases[i];
        run_cli(&o, a[0], a[1], a[2], a[3], a[4], NULL); // rows are NULL-padded
        CHECK_EQ_INT(o.status, 2);
        CHECK(strstr(o.err, "(see specd-submit --help)") != NULL);
    }
    run_cli(&o, "-p", "x", "--top-p", "1.5", NULL);
    CHECK_EQ_STR(o.err, "specd-submit: invalid job options: field 'top_p': '1.5' is outside "
                        "(0, 1]\n(see specd-submit --help)\n");
    run_cli(&o, "--redis", redis_arg(), "-f", "/nonexistent/jobs.jsonl", NULL);
    CHECK_EQ_INT(o.status, 1);
    CHECK_EQ_STR(o.err, "specd-submit: cannot open /nonexistent/jobs.jsonl: No such file or "
                        "directory\n");
}

// specd-submit next to this binary (<build>/bin), else build/bin from the repo root, else
// $SPECD_SUBMIT.
static void find_cli(void) {
    const char *env = getenv("SPECD_SUBMIT");
    char self[900];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (env && access(env, X_OK) == 0) {
        snprintf(cli_path, sizeof cli_path, "%s", env);
    } else if (n > 0) {
        self[n] = '\0';
        snprintf(cli_path, sizeof cli_path, "%s/../bin/specd-submit", dirname(self));
        if (access(cli_path, X_OK) != 0)
            snprintf(cli_path, sizeof cli_path, "build/bin/specd-submit");
    }
    if (access(cli_path, X_OK) != 0)
        cli_path[0] = '\0';
}

int main(int argc, char **argv) {
    TEST_MAIN_BEGIN(argc, argv);
    log_set_level(LOG_LEVEL_OFF); // the tests provoke connection warnings on purpose
    find_cli();
    srv_rc = redis_server_start(&srv, srv_err, sizeof srv_err);
    if (srv_rc == SPECD_OK)
        raw_ctx = redisConnect("127.0.0.1", srv.port);
    else
        fprintf(stderr, "redis: %s\n", srv_err);
    TEST_RUN(test_job_ids);
    TEST_RUN(test_request_from_json);
    TEST_RUN(test_request_validate);
    TEST_RUN(test_submit_fields_land_exactly);
    TEST_RUN(test_wait_returns_result_of_hand_worker);
    TEST_RUN(test_wait_timeout_and_error_result);
    TEST_RUN(test_stream_deltas_followed_to_done);
    TEST_RUN(test_connection_refused_message);
    TEST_RUN(test_cli_submit_from_args);
    TEST_RUN(test_cli_submit_from_jsonl_with_bad_lines);
    TEST_RUN(test_cli_wait_prints_results);
    TEST_RUN(test_cli_stream_prints_deltas);
    TEST_RUN(test_cli_wait_timeout_and_failed_job);
    TEST_RUN(test_cli_usage);
    if (raw_ctx)
        redisFree(raw_ctx);
    redis_server_stop(&srv);
    return TEST_MAIN_END();
}
