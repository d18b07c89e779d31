// rq against a real redis-server started on a free port (no mocks). Redis state is checked with
// plain hiredis commands, independently of rq's own reading code.
#include "shared/clock.h"
#include "shared/log.h"
#include "shared/rq.h"
#include "shared/status.h"

#include "tests/support/redis_server.h"
#include "tests/test.h"

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct redis_server srv; // shared by the tests; each test uses its own key prefix
static int srv_rc = SPECD_ERR_STATE;
static char srv_err[512];
static redisContext *raw_ctx;

#define NEED_SERVER()                                                                              \
    do {                                                                                           \
        if (srv_rc == SPECD_SOFT_EMPTY)                                                            \
            TEST_SKIP("%s", srv_err);                                                              \
        REQUIRE(srv_rc == SPECD_OK && raw_ctx);                                                    \
    } while (0)

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

// A plain hiredis command on the shared server (the caller frees the reply).
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

// Field `name` of a flat [name, value, ...] reply array, or NULL.
static const char *field_of(const redisReply *kv, const char *name) {
    for (size_t i = 0; kv && kv->type == REDIS_REPLY_ARRAY && i + 1 < kv->elements; i += 2)
        if (strcmp(kv->element[i]->str, name) == 0)
            return kv->element[i + 1]->str;
    return NULL;
}

// Pending entries of the group (XPENDING summary count).
static long long pending(const char *prefix) {
    redisReply *r = raw("XPENDING %sjobs specd-workers", prefix);
    long long n =
        r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 ? r->element[0]->integer : -1;
    freeReplyObject(r);
    return n;
}

static struct rq_params params_for(int port, const char *prefix, const char *consumer) {
    struct rq_params p = rq_default_params();
    p.port = port;
    p.prefix = prefix;
    p.consumer = consumer;
    p.block_ms = 100;
    p.claim_idle_ms = 100;
    p.connect_timeout_ms = 500;
    p.command_timeout_ms = 2000;
    p.result_ttl_s = 600;
    p.backoff_min_ms = 20;
    p.backoff_max_ms = 200;
    p.seed = 42;
    return p;
}

static rq *open_rq(const char *prefix, const char *consumer) {
    struct rq_params p = params_for(srv.port, prefix, consumer);
    char err[256];
    rq *q = rq_new(&p, err, sizeof err);
    if (!q)
        fprintf(stderr, "  rq_new: %s\n", err);
    return q;
}

static struct job make_job(const char *id, const char *prompt) {
    struct job j;
    job_init(&j, NULL);
    snprintf(j.id, sizeof j.id, "%s", id);
    j.prompt = prompt;
    j.prompt_len = strlen(prompt);
    return j;
}

static int submit(rq *q, const char *id, const char *prompt, int stream, char *entry) {
    struct job j = make_job(id, prompt);
    j.stream = stream;
    char tmp[RQ_ID_MAX];
    return rq_submit(q, &j, entry ? entry : tmp, RQ_ID_MAX);
}

static struct rq_result make_result(const char *text) {
    struct rq_result r = {0};
    r.status = RQ_RESULT_DONE;
    r.text = text;
    r.text_len = strlen(text);
    r.finish_reason = "stop";
    r.prompt_tokens = 11;
    r.completion_tokens = 22;
    r.drafted_tokens = 33;
    r.accepted_tokens = 25;
    r.queue_ms = 1.5;
    r.ttft_ms = 12.25;
    r.total_ms = 99.125;
    return r;
}

// ---- test support: the private server ----------------------------------------------------------

TEST(test_redis_server_support) {
    struct redis_server s;
    char err[512];
    int rc = redis_server_start(&s, err, sizeof err);
    if (rc == SPECD_SOFT_EMPTY)
        TEST_SKIP("%s", err);
    REQUIRE(rc == SPECD_OK);
    CHECK(redis_server_alive(s.pid));
    CHECK(access(s.dir, F_OK) == 0);
    pid_t first = s.pid;
    int port = s.port;
    redis_server_kill(&s);
    CHECK(!redis_server_alive(first));
    CHECK_EQ_INT(s.pid, 0);
    REQUIRE(redis_server_restart(&s, err, sizeof err) == SPECD_OK);
    CHECK_EQ_INT(s.port, port);
    redisContext *c = redisConnect("127.0.0.1", port);
    REQUIRE(c && !c->err);
    redisReply *r = redisCommand(c, "CONFIG GET appendonly");
    CHECK(r && r->elements == 2 && strcmp(r->element[1]->str, "no") == 0);
    freeReplyObject(r);
    r = redisCommand(c, "CONFIG GET save");
    CHECK(r && r->elements == 2 && strcmp(r->element[1]->str, "") == 0);
    freeReplyObject(r);
    redisFree(c);
    pid_t second = s.pid;
    char dir[sizeof s.dir];
    snprintf(dir, sizeof dir, "%s", s.dir);
    redis_server_stop(&s);
    CHECK(!redis_server_alive(second));
    CHECK(access(dir, F_OK) != 0);
    redis_server_stop(&s); // twice is harmless
    redis_server_stop(NULL);
}

// A test process that crashes must not leave its server behind.
TEST(test_redis_server_dies_with_a_crashed_test) {
    if (srv_rc == SPECD_SOFT_EMPTY)
        TEST_SKIP("%s", srv_err);
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        struct redis_server s;
        char err[512];
        if (redis_server_start(&s, err, sizeof err) != SPECD_OK)
            _exit(2);
        if (write(fds[1], &s, sizeof s) != (ssize_t)sizeof s)
            _exit(3);
        kill(getpid(), SIGKILL); // as a test runner's timeout would; no atexit handlers run
        _exit(4);
    }
    close(fds[1]);
    struct redis_server s;
    ssize_t n = read(fds[0], &s, sizeof s);
    close(fds[0]);
    int status = 0;
    waitpid(child, &status, 0);
    REQUIRE(n == (ssize_t)sizeof s);
    CHECK(WIFSIGNALED(status));
    int alive = 1;
    for (int i = 0; i < 200 && alive; i++) {
        alive = redis_server_alive(s.pid);
        if (alive)
            sleep_ms(10);
    }
    CHECK(!alive);
    if (alive)
        kill(s.pid, SIGKILL);
    // The crashed child could not remove its dir; the next start sweeps it.
    CHECK(access(s.dir, F_OK) == 0);
    struct redis_server next;
    char err[512];
    REQUIRE(redis_server_start(&next, err, sizeof err) == SPECD_OK);
    CHECK(access(s.dir, F_OK) != 0);
    redis_server_stop(&next);
}

// ---- the happy path ----------------------------------------------------------------------------

TEST(test_submit_consume_finish) {
    NEED_SERVER();
    rq *producer = open_rq("t1:", "producer");
    rq *worker = open_rq("t1:", "w1");
    REQUIRE(producer && worker);
    CHECK(rq_is_connected(worker));
    struct job j = make_job("job-1", "Tell me a story");
    j.max_tokens = 64;
    j.temperature = 0.25;
    j.top_k = 7;
    j.has_seed = 1;
    j.seed = 99;
    static const char *const stops[] = {"\n\n"};
    j.stop = stops;
    j.n_stop = 1;
    snprintf(j.class_label, sizeof j.class_label, "chat");
    char entry[RQ_ID_MAX];
    uint64_t before = clock_wall_ms();
    REQUIRE(rq_submit(producer, &j, entry, sizeof entry) == SPECD_OK);

    // The entry as Redis holds it: v 1 first, then the fields.
    redisReply *r = raw("XRANGE t1:jobs - +");
    REQUIRE(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1);
    CHECK_EQ_STR(r->element[0]->element[0]->str, entry);
    const redisReply *kv = r->element[0]->element[1];
    CHECK_EQ_STR(kv->element[0]->str, "v");
    CHECK_EQ_STR(kv->element[1]->str, "1");
    CHECK_EQ_STR(field_of(kv, "id"), "job-1");
    CHECK_EQ_STR(field_of(kv, "temperature"), "0.25");
    CHECK_EQ_STR(field_of(kv, "stop"), "[\"\\n\\n\"]");
    CHECK_EQ_STR(field_of(kv, "class"), "chat");
    freeReplyObject(r);

    struct rq_delivery d[4];
    size_t n = 0;
    REQUIRE(rq_read(worker, 4, 0, d, &n) == SPECD_OK);
    REQUIRE(n == 1);
    CHECK_EQ_STR(d[0].entry_id, entry);
    CHECK_EQ_INT(d[0].delivery_count, 1);
    CHECK(d[0].enqueued_ms + 5 >= before && d[0].enqueued_ms <= d[0].received_ms + 5);
    CHECK_EQ_STR(d[0].job.id, "job-1");
    CHECK_EQ_STR(d[0].job.prompt, "Tell me a story");
    CHECK_EQ_INT(d[0].job.max_tokens, 64);
    CHECK(d[0].job.temperature == 0.25);
    CHECK_EQ_INT(d[0].job.top_k, 7);
    CHECK(d[0].job.has_seed && d[0].job.seed == 99);
    REQUIRE(d[0].job.n_stop == 1);
    CHECK_EQ_STR(d[0].job.stop[0], "\n\n");
    CHECK_EQ_INT(pending("t1:"), 1);

    struct rq_result res = make_result("Once upon a time");
    REQUIRE(rq_finish(worker, &d[0], &res) == SPECD_OK);

    r = raw("HGETALL t1:result:job-1");
    REQUIRE(r && r->type == REDIS_REPLY_ARRAY);
    CHECK_EQ_STR(field_of(r, "status"), "done");
    CHECK_EQ_STR(field_of(r, "text"), "Once upon a time");
    CHECK_EQ_STR(field_of(r, "finish_reason"), "stop");
    CHECK_EQ_STR(field_of(r, "prompt_tokens"), "11");
    CHECK_EQ_STR(field_of(r, "completion_tokens"), "22");
    CHECK_EQ_STR(field_of(r, "drafted_tokens"), "33");
    CHECK_EQ_STR(field_of(r, "accepted_tokens"), "25");
    CHECK_EQ_STR(field_of(r, "ttft_ms"), "12.250");
    CHECK_EQ_STR(field_of(r, "worker"), "w1");
    CHECK_EQ_STR(field_of(r, "error"), "");
    freeReplyObject(r);
    long long ttl = raw_int("TTL t1:result:job-1");
    CHECK(ttl > 590 && ttl <= 600);
    r = raw("XRANGE t1:done - +");
    REQUIRE(r && r->elements == 1);
    CHECK_EQ_STR(field_of(r->element[0]->element[1], "id"), "job-1");
    freeReplyObject(r);
    CHECK_EQ_INT(pending("t1:"), 0);                    // acked
    CHECK_EQ_INT(raw_int("XLEN t1:jobs"), 0);           // and deleted
    CHECK_EQ_INT(raw_int("EXISTS t1:stream:job-1"), 0); // not a streaming job

    struct rq_result got;
    REQUIRE(rq_get_result(producer, "job-1", &got) == SPECD_OK);
    CHECK_EQ_INT(got.status, RQ_RESULT_DONE);
    CHECK_EQ_STR(got.text, "Once upon a time");
    CHECK_EQ_INT(got.text_len, 16);
    CHECK_EQ_INT(got.completion_tokens, 22);
    CHECK_NEAR(got.total_ms, 99.125, 1e-9);
    CHECK_EQ_STR(got.worker, "w1");
    rq_result_clear(&got);
    CHECK(rq_get_result(producer, "job-none", &got) == SPECD_SOFT_EMPTY);
    CHECK(rq_read(worker, 4, 0, d + 1, &n) == SPECD_SOFT_EMPTY && n == 0);
    rq_delivery_clear(&d[0]);
    rq_free(producer);
    rq_free(worker);
    rq_free(NULL);
}

TEST(test_result_text_is_binary_safe) {
    NEED_SERVER();
    rq *q = open_rq("t13:", "w");
    REQUIRE(q);
    REQUIRE(submit(q, "bin", "p", 0, NULL) == SPECD_OK);
    struct rq_delivery d;
    size_t n;
    REQUIRE(rq_read(q, 1, 0, &d, &n) == SPECD_OK);
    static const char text[] = {'a', '\0', 'b', (char)0xff};
    struct rq_result res = make_result("");
    res.text = text;
    res.text_len = sizeof text;
    REQUIRE(rq_finish(q, &d, &res) == SPECD_OK);
    struct rq_result got;
    REQUIRE(rq_get_result(q, "bin", &got) == SPECD_OK);
    CHECK_EQ_INT(got.text_len, 4);
    CHECK(memcmp(got.text, text, 4) == 0);
    rq_result_clear(&got);
    rq_delivery_clear(&d);
    rq_free(q);
}

TEST(test_finish_is_idempotent) {
    NEED_SERVER();
    rq *q = open_rq("t2:", "w");
    REQUIRE(q);
    REQUIRE(submit(q, "dup", "p", 0, NULL) == SPECD_OK);
    struct rq_delivery d;
    size_t n;
    REQUIRE(rq_read(q, 1, 0, &d, &n) == SPECD_OK);
    // An error result may be superseded by a later success ...
    struct rq_result err_res = make_result("");
    err_res.status = RQ_RESULT_ERROR;
    err_res.error = "out of KV blocks";
    CHECK(rq_finish(q, &d, &err_res) == SPECD_OK);
    redisReply *r = raw("HGET t2:result:dup status");
    CHECK(r && r->str && strcmp(r->str, "error") == 0);
    freeReplyObject(r);
    struct rq_result first = make_result("first");
    CHECK(rq_finish(q, &d, &first) == SPECD_OK);
    CHECK_EQ_INT(raw_int("XLEN t2:done"), 2);
    // ... but a done result is final: a second write is acked only, not announced again.
    struct rq_result second = make_result("second");
    CHECK_EQ_INT(rq_finish(q, &d, &second), RQ_SOFT_DUPLICATE);
    CHECK_EQ_INT(rq_finish(q, &d, &err_res), RQ_SOFT_DUPLICATE);
    CHECK_EQ_INT(raw_int("XLEN t2:done"), 2);
    r = raw("HGETALL t2:result:dup");
    CHECK_EQ_STR(field_of(r, "text"), "first");
    CHECK_EQ_STR(field_of(r, "error"), "");
    freeReplyObject(r);
    CHECK_EQ_INT(pending("t2:"), 0);
    rq_delivery_clear(&d);
    rq_free(q);
}

TEST(test_group_created_if_missing) {
    NEED_SERVER();
    rq *producer = open_rq("t3:", "p");
    REQUIRE(producer);
    // A job added before any worker ran (no group yet) is still delivered.
    REQUIRE(submit(producer, "early", "p", 0, NULL) == SPECD_OK);
    redisReply *r = raw("XINFO GROUPS t3:jobs");
    CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 0);
    freeReplyObject(r);
    rq *w1 = open_rq("t3:", "w1");
    rq *w2 = open_rq("t3:", "w2"); // the group exists by then: BUSYGROUP is fine
    REQUIRE(w1 && w2);
    struct rq_delivery d;
    size_t n = 0;
    CHECK(rq_read(w1, 1, 0, &d, &n) == SPECD_OK && n == 1);
    CHECK_EQ_STR(d.job.id, "early");
    rq_delivery_clear(&d);
    CHECK(rq_read(w2, 1, 0, &d, &n) == SPECD_SOFT_EMPTY && n == 0);
    r = raw("XINFO GROUPS t3:jobs");
    REQUIRE(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1);
    CHECK_EQ_STR(field_of(r->element[0], "name"), "specd-workers");
    freeReplyObject(r);
    rq_free(producer);
    rq_free(w1);
    rq_free(w2);
}

TEST(test_read_respects_count) {
    NEED_SERVER();
    rq *q = open_rq("t4:", "w");
    REQUIRE(q);
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "c%d", i);
        REQUIRE(submit(q, id, "p", 0, NULL) == SPECD_OK);
    }
    struct rq_delivery d[8];
    size_t n = 99;
    REQUIRE(rq_read(q, 2, 0, d, &n) == SPECD_OK);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(pending("t4:"), 2);
    CHECK_EQ_STR(d[0].job.id, "c0");
    CHECK_EQ_STR(d[1].job.id, "c1");
    CHECK(rq_read(q, 0, 0, d + 2, &n) == SPECD_SOFT_EMPTY && n == 0); // no room: no read
    CHECK_EQ_INT(pending("t4:"), 2);
    REQUIRE(rq_read(q, 8, 0, d + 2, &n) == SPECD_OK);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_STR(d[4].job.id, "c4");
    CHECK_EQ_INT(pending("t4:"), 5);
    double t0 = clock_now_ms();
    CHECK(rq_read(q, 8, 150, d + 5, &n) == SPECD_SOFT_EMPTY && n == 0);
    double waited = clock_now_ms() - t0;
    CHECK(waited >= 140 && waited < 1000);
    for (int i = 0; i < 5; i++)
        rq_delivery_clear(&d[i]);
    rq_free(q);
}

// ---- reclaiming and dead letters ---------------------------------------------------------------

TEST(test_reclaim_from_dead_consumer) {
    NEED_SERVER();
    rq *a = open_rq("t5:", "worker-a");
    rq *b = open_rq("t5:", "worker-b");
    REQUIRE(a && b);
    char entry[RQ_ID_MAX];
    REQUIRE(submit(a, "orphan", "p", 0, entry) == SPECD_OK);
    struct rq_delivery d;
    size_t n;
    REQUIRE(rq_read(a, 1, 0, &d, &n) == SPECD_OK);
    rq_delivery_clear(&d);
    rq_free(a); // worker-a dies with the job in flight

    CHECK(rq_claim(b, 4, &d, &n) == SPECD_SOFT_EMPTY); // not idle for 100 ms yet
    sleep_ms(150);
    REQUIRE(rq_claim(b, 4, &d, &n) == SPECD_OK);
    REQUIRE(n == 1);
    CHECK_EQ_STR(d.entry_id, entry);
    CHECK_EQ_STR(d.job.id, "orphan");
    CHECK_EQ_INT(d.delivery_count, 2);
    redisReply *r = raw("XPENDING t5:jobs specd-workers - + 10");
    REQUIRE(r && r->elements == 1);
    CHECK_EQ_STR(r->element[0]->element[1]->str, "worker-b");
    freeReplyObject(r);
    struct rq_result res = make_result("rescued");
    REQUIRE(rq_finish(b, &d, &res) == SPECD_OK);
    r = raw("HGET t5:result:orphan worker");
    CHECK(r && r->str && strcmp(r->str, "worker-b") == 0);
    freeReplyObject(r);
    CHECK_EQ_INT(pending("t5:"), 0);
    rq_delivery_clear(&d);
    rq_free(b);
}

TEST(test_touch_keeps_a_long_job) {
    NEED_SERVER();
    rq *a = open_rq("t6:", "slow");
    rq *b = open_rq("t6:", "thief");
    REQUIRE(a && b);
    REQUIRE(submit(a, "long", "p", 0, NULL) == SPECD_OK);
    struct rq_delivery d, stolen;
    size_t n;
    REQUIRE(rq_read(a, 1, 0, &d, &n) == SPECD_OK);
    for (int i = 0; i < 3; i++) { // 180 ms in all, never 100 ms idle
        sleep_ms(60);
        const char *ids[1] = {d.entry_id};
        CHECK(rq_touch(a, ids, 1) == SPECD_OK);
    }
    CHECK(rq_claim(b, 1, &stolen, &n) == SPECD_SOFT_EMPTY);
    redisReply *r = raw("XPENDING t6:jobs specd-workers - + 10");
    REQUIRE(r && r->elements == 1);
    CHECK_EQ_STR(r->element[0]->element[1]->str, "slow");
    CHECK_EQ_INT(r->element[0]->element[3]->integer, 1); // touching is not a delivery
    freeReplyObject(r);
    sleep_ms(150);
    CHECK(rq_claim(b, 1, &stolen, &n) == SPECD_OK && n == 1);
    rq_delivery_clear(&stolen);
    rq_delivery_clear(&d);
    rq_free(a);
    rq_free(b);
}

TEST(test_fetch_claims_then_reads) {
    NEED_SERVER();
    rq *a = open_rq("t7:", "a");
    rq *b = open_rq("t7:", "b");
    REQUIRE(a && b);
    REQUIRE(submit(a, "old", "p", 0, NULL) == SPECD_OK);
    struct rq_delivery d[4];
    size_t n;
    REQUIRE(rq_read(a, 1, 0, d, &n) == SPECD_OK);
    rq_delivery_clear(&d[0]);
    REQUIRE(submit(a, "new", "p", 0, NULL) == SPECD_OK);
    sleep_ms(150);
    REQUIRE(rq_fetch(b, 4, 0, d, &n) == SPECD_OK);
    REQUIRE(n == 2);
    CHECK_EQ_STR(d[0].job.id, "old");
    CHECK_EQ_INT(d[0].delivery_count, 2);
    CHECK_EQ_STR(d[1].job.id, "new");
    CHECK_EQ_INT(d[1].delivery_count, 1);
    rq_delivery_clear(&d[0]);
    rq_delivery_clear(&d[1]);
    rq_free(a);
    rq_free(b);
}

static void check_dead_entry(const redisReply *e, const char *id, const char *entry,
                             const char *reason_part, const char *prompt) {
    const redisReply *kv = e->element[1];
    CHECK_EQ_STR(field_of(kv, "id"), id);
    if (entry)
        CHECK_EQ_STR(field_of(kv, "entry"), entry);
    const char *reason = field_of(kv, "reason");
    CHECK(reason && strstr(reason, reason_part));
    if (reason && !strstr(reason, reason_part))
        fprintf(stderr, "  reason was: %s\n", reason);
    cJSON *fields = cJSON_Parse(field_of(kv, "fields"));
    CHECK(fields != NULL);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(fields, "prompt");
    CHECK(cJSON_IsString(p) && strcmp(p->valuestring, prompt) == 0);
    cJSON_Delete(fields);
}

TEST(test_max_deliveries_goes_to_dead_letter) {
    NEED_SERVER();
    struct rq_params p = params_for(srv.port, "t8:", NULL);
    p.max_deliveries = 2;
    p.claim_idle_ms = 40;
    char err[256];
    const char *names[3] = {"crash-1", "crash-2", "survivor"};
    rq *w[3];
    for (int i = 0; i < 3; i++) {
        p.consumer = names[i];
        w[i] = rq_new(&p, err, sizeof err);
        REQUIRE(w[i]);
    }
    char entry[RQ_ID_MAX];
    REQUIRE(submit(w[0], "poison", "evil prompt", 1, entry) == SPECD_OK);
    struct rq_delivery d;
    size_t n;
    REQUIRE(rq_read(w[0], 1, 0, &d, &n) == SPECD_OK); // delivery 1; the worker "crashes"
    rq_delivery_clear(&d);
    sleep_ms(60);
    REQUIRE(rq_claim(w[1], 1, &d, &n) == SPECD_OK); // delivery 2; crashes too
    CHECK_EQ_INT(d.delivery_count, 2);
    rq_delivery_clear(&d);
    sleep_ms(60);
    CHECK(rq_claim(w[2], 1, &d, &n) == SPECD_SOFT_EMPTY); // delivery 3 > 2: dead letter
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(pending("t8:"), 0);
    struct rq_counters counters;
    rq_get_counters(w[2], &counters);
    CHECK_EQ_INT(counters.poisoned, 1);
    CHECK_EQ_INT(counters.malformed, 0);
    redisReply *r = raw("XRANGE t8:jobs:dead - +");
    REQUIRE(r && r->elements == 1);
    check_dead_entry(r->element[0], "poison", entry, "delivered 3 times", "evil prompt");
    freeReplyObject(r);
    // The producer learns why, and a stream follower sees the end.
    r = raw("HGETALL t8:result:poison");
    CHECK_EQ_STR(field_of(r, "status"), "error");
    CHECK(field_of(r, "error") && strstr(field_of(r, "error"), "max_deliveries 2"));
    freeReplyObject(r);
    CHECK_EQ_INT(raw_int("XLEN t8:done"), 1);
    r = raw("XRANGE t8:stream:poison - +");
    CHECK(r && r->elements == 1 && field_of(r->element[0]->element[1], "done"));
    freeReplyObject(r);
    for (int i = 0; i < 3; i++)
        rq_free(w[i]);
}

TEST(test_malformed_jobs_dead_letter_and_consumer_carries_on) {
    NEED_SERVER();
    rq *q = open_rq("t9:", "w");
    REQUIRE(q);
    redisReply *r = raw("XADD t9:jobs * id bad-temp prompt hi temperature 11");
    REQUIRE(r && r->type == REDIS_REPLY_STRING);
    char bad_entry[RQ_ID_MAX];
    snprintf(bad_entry, sizeof bad_entry, "%s", r->str);
    freeReplyObject(r);
    freeReplyObject(raw("XADD t9:jobs * prompt no-id-here"));
    freeReplyObject(raw("XADD t9:jobs * id %b prompt x", "a\0b", (size_t)3));
    REQUIRE(submit(q, "good", "fine", 0, NULL) == SPECD_OK);
    freeReplyObject(raw("XADD t9:jobs * id late-bad prompt hi stream 1 priority urgent"));

    struct rq_delivery d[8];
    size_t n = 0;
    REQUIRE(rq_read(q, 8, 0, d, &n) == SPECD_OK);
    REQUIRE(n == 1);
    CHECK_EQ_STR(d[0].job.id, "good");
    CHECK_EQ_INT(pending("t9:"), 1); // only the good job is still in flight

    r = raw("XRANGE t9:jobs:dead - +");
    REQUIRE(r && r->elements == 4);
    check_dead_entry(r->element[0], "bad-temp", bad_entry,
                     "field 'temperature': '11' is outside [0, 10]", "hi");
    check_dead_entry(r->element[1], "", NULL, "missing field 'id'", "no-id-here");
    check_dead_entry(r->element[2], "", NULL, "field 'id': byte 0x00 at offset 1", "x");
    check_dead_entry(r->element[3], "late-bad", NULL, "'urgent' is not high or normal", "hi");
    cJSON *f = cJSON_Parse(field_of(r->element[2]->element[1], "fields"));
    CHECK(f && strcmp(cJSON_GetObjectItemCaseSensitive(f, "id")->valuestring, "a") == 0);
    cJSON_Delete(f);
    freeReplyObject(r);
    // Jobs with a usable id get an error result; the streaming one gets its stream closed.
    r = raw("HGETALL t9:result:bad-temp");
    CHECK_EQ_STR(field_of(r, "status"), "error");
    CHECK(field_of(r, "error") && strstr(field_of(r, "error"), "temperature"));
    freeReplyObject(r);
    CHECK_EQ_INT(raw_int("EXISTS t9:stream:bad-temp"), 0);
    CHECK_EQ_INT(raw_int("XLEN t9:stream:late-bad"), 1);
    CHECK_EQ_INT(raw_int("XLEN t9:done"), 2);
    CHECK_EQ_INT(raw_int("XLEN t9:jobs"), 1); // the dead ones are acked and deleted

    struct rq_result res = make_result("ok");
    CHECK(rq_finish(q, &d[0], &res) == SPECD_OK);
    rq_delivery_clear(&d[0]);
    struct rq_counters counters;
    rq_get_counters(q, &counters);
    CHECK_EQ_INT(counters.malformed, 4);
    CHECK_EQ_INT(counters.poisoned, 0);
    CHECK_EQ_INT(counters.dead_letter, 4);
    rq_free(q);
}

TEST(test_worker_dead_letter) {
    NEED_SERVER();
    rq *q = open_rq("t10:", "w");
    REQUIRE(q);
    char entry[RQ_ID_MAX];
    REQUIRE(submit(q, "too-long", "a very long prompt", 0, entry) == SPECD_OK);
    struct rq_delivery d;
    size_t n;
    REQUIRE(rq_read(q, 1, 0, &d, &n) == SPECD_OK);
    REQUIRE(rq_dead_letter(q, &d, "prompt is 9000 tokens, the context holds 4096") == SPECD_OK);
    redisReply *r = raw("XRANGE t10:jobs:dead - +");
    REQUIRE(r && r->elements == 1);
    check_dead_entry(r->element[0], "too-long", entry, "context holds 4096", "a very long prompt");
    freeReplyObject(r);
    CHECK_EQ_INT(pending("t10:"), 0);
    struct rq_result got;
    REQUIRE(rq_wait_result(q, "too-long", 100, &got) == SPECD_OK);
    CHECK_EQ_INT(got.status, RQ_RESULT_ERROR);
    CHECK_EQ_STR(got.error, "prompt is 9000 tokens, the context holds 4096");
    rq_result_clear(&got);
    rq_delivery_clear(&d);
    rq_free(q);
}

// ---- streaming, TTL, waiting, kv ---------------------------------------------------------------

TEST(test_streaming_deltas) {
    NEED_SERVER();
    rq *producer = open_rq("t11:", "p");
    rq *worker = open_rq("t11:", "w");
    REQUIRE(producer && worker);
    REQUIRE(submit(producer, "s1", "p", 1, NULL) == SPECD_OK);
    struct rq_delivery d;
    size_t n;
    REQUIRE(rq_read(worker, 1, 0, &d, &n) == SPECD_OK);
    REQUIRE(d.job.stream == 1);
    CHECK(rq_stream_begin(worker, &d) == SPECD_OK);
    CHECK_EQ_INT(raw_int("EXISTS t11:stream:s1"), 0); // first delivery: nothing to reset
    char last[RQ_ID_MAX] = "0";
    struct rq_stream_chunk c;
    CHECK(rq_read_stream(producer, "s1", last, sizeof last, 0, &c) == SPECD_SOFT_EMPTY);
    CHECK(rq_stream_delta(worker, "s1", "Hel", 3) == SPECD_OK);
    CHECK(rq_stream_delta(worker, "s1", "lo", 2) == SPECD_OK);
    REQUIRE(rq_read_stream(producer, "s1", last, sizeof last, 0, &c) == SPECD_OK);
    CHECK_EQ_STR(c.text, "Hello");
    CHECK(c.done == 0 && c.reset == 0);
    rq_stream_chunk_clear(&c);
    long long ttl = raw_int("TTL t11:stream:s1");
    CHECK(ttl > 590 && ttl <= 600);

    // A redelivered job restarts its text.
    d.delivery_count = 2;
    CHECK(rq_stream_begin(worker, &d) == SPECD_OK);
    CHECK(rq_stream_delta(worker, "s1", "Hi", 2) == SPECD_OK);
    REQUIRE(rq_read_stream(producer, "s1", last, sizeof last, 0, &c) == SPECD_OK);
    CHECK_EQ_STR(c.text, "Hi");
    CHECK(c.reset == 1 && c.done == 0);
    rq_stream_chunk_clear(&c);

    // Blocking follow: nothing new for 100 ms.
    double t0 = clock_now_ms();
    CHECK(rq_read_stream(producer, "s1", last, sizeof last, 100, &c) == SPECD_SOFT_EMPTY);
    CHECK(clock_now_ms() - t0 >= 90);
    CHECK(rq_stream_delta(worker, "s1", "!", 1) == SPECD_OK);
    struct rq_result res = make_result("Hi!");
    REQUIRE(rq_finish(worker, &d, &res) == SPECD_OK);
    REQUIRE(rq_read_stream(producer, "s1", last, sizeof last, 100, &c) == SPECD_OK);
    CHECK_EQ_STR(c.text, "!");
    CHECK_EQ_INT(c.done, 1);
    rq_stream_chunk_clear(&c);
    redisReply *r = raw("XRANGE t11:stream:s1 - +");
    REQUIRE(r && r->elements == 6); // delta delta reset delta delta done
    CHECK_EQ_STR(field_of(r->element[5]->element[1], "done"), "1");
    freeReplyObject(r);
    rq_delivery_clear(&d);
    rq_free(producer);
    rq_free(worker);
}

TEST(test_result_ttl_expires) {
    NEED_SERVER();
    struct rq_params p = params_for(srv.port, "t12:", "w");
    p.result_ttl_s = 1;
    char err[256];
    rq *q = rq_new(&p, err, sizeof err);
    REQUIRE(q);
    REQUIRE(submit(q, "brief", "p", 0, NULL) == SPECD_OK);
    struct rq_delivery d;
    size_t n;
    REQUIRE(rq_read(q, 1, 0, &d, &n) == SPECD_OK);
    struct rq_result res = make_result("x");
    REQUIRE(rq_finish(q, &d, &res) == SPECD_OK);
    long long pttl = raw_int("PTTL t12:result:brief");
    CHECK(pttl > 0 && pttl <= 1000);
    sleep_ms(1100);
    CHECK_EQ_INT(raw_int("EXISTS t12:result:brief"), 0);
    rq_delivery_clear(&d);
    rq_free(q);
}

struct finisher_args {
    int port;
    int delay_ms;
    int rc;
};

// Plays a worker in another thread: reads the job after a delay and finishes it.
static void *finisher(void *arg) {
    struct finisher_args *fa = arg;
    struct rq_params p = params_for(fa->port, "t14:", "bg");
    char err[256];
    rq *q = rq_new(&p, err, sizeof err);
    fa->rc = SPECD_ERR_STATE;
    if (!q)
        return NULL;
    sleep_ms(fa->delay_ms);
    struct rq_delivery d;
    size_t n;
    fa->rc = rq_read(q, 1, 1000, &d, &n);
    if (fa->rc == SPECD_OK) {
        struct rq_result res = make_result("late answer");
        fa->rc = rq_finish(q, &d, &res);
        rq_delivery_clear(&d);
    }
    rq_free(q);
    return NULL;
}

TEST(test_wait_result) {
    NEED_SERVER();
    rq *q = open_rq("t14:", "p");
    REQUIRE(q);
    struct rq_result got;
    double t0 = clock_now_ms();
    CHECK(rq_wait_result(q, "never", 200, &got) == SPECD_SOFT_EMPTY);
    double waited = clock_now_ms() - t0;
    CHECK(waited >= 190 && waited < 1000);
    CHECK(strstr(rq_last_error(q), "no result for job never") != NULL);

    REQUIRE(submit(q, "w1", "p", 0, NULL) == SPECD_OK);
    struct finisher_args fa = {srv.port, 150, 0};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, finisher, &fa) == 0);
    t0 = clock_now_ms();
    int rc = rq_wait_result(q, "w1", 5000, &got);
    waited = clock_now_ms() - t0;
    pthread_join(th, NULL);
    CHECK_EQ_INT(fa.rc, SPECD_OK);
    REQUIRE(rc == SPECD_OK);
    CHECK_EQ_STR(got.text, "late answer");
    CHECK(waited >= 100 && waited < 900); // woken by the done stream, not by the 1 s re-check
    rq_result_clear(&got);
    // Already there: returns at once.
    t0 = clock_now_ms();
    CHECK(rq_wait_result(q, "w1", 5000, &got) == SPECD_OK);
    CHECK(clock_now_ms() - t0 < 100);
    rq_result_clear(&got);
    rq_free(q);
}

TEST(test_kv_and_submit_validation) {
    NEED_SERVER();
    rq *q = open_rq("t15:", "c");
    REQUIRE(q);
    const char policy[] = "{\"draft_len\":4}";
    REQUIRE(rq_kv_set(q, "policy", policy, strlen(policy)) == SPECD_OK);
    redisReply *r = raw("GET t15:policy");
    CHECK(r && r->str && strcmp(r->str, policy) == 0);
    freeReplyObject(r);
    char *v = NULL;
    size_t len = 0;
    REQUIRE(rq_kv_get(q, "policy", &v, &len) == SPECD_OK);
    CHECK_EQ_STR(v, policy);
    CHECK_EQ_INT(len, strlen(policy));
    free(v);
    CHECK(rq_kv_set(q, "bin", "a\0b", 3) == SPECD_OK);
    REQUIRE(rq_kv_get(q, "bin", &v, &len) == SPECD_OK);
    CHECK(len == 3 && memcmp(v, "a\0b", 3) == 0);
    free(v);
    CHECK(rq_kv_get(q, "absent", &v, &len) == SPECD_SOFT_EMPTY && v == NULL);

    struct job j = make_job("has space", "p");
    char entry[RQ_ID_MAX] = "x";
    CHECK_EQ_INT(rq_submit(q, &j, entry, sizeof entry), SPECD_ERR_FORMAT);
    CHECK(strstr(rq_last_error(q), "field 'id': byte 0x20 at offset 3") != NULL);
    CHECK_EQ_STR(entry, "");
    j = make_job("ok", "p");
    j.top_p = 0;
    CHECK_EQ_INT(rq_submit(q, &j, entry, sizeof entry), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(raw_int("EXISTS t15:jobs"), 0);
    rq_free(q);
}

TEST(test_bad_params) {
    struct rq_params p = rq_default_params();
    char err[256] = "";
    p.port = 0;
    CHECK(rq_new(&p, err, sizeof err) == NULL);
    CHECK(strstr(err, "port") != NULL);
    p = rq_default_params();
    p.max_deliveries = 0;
    CHECK(rq_new(&p, err, sizeof err) == NULL);
    p = rq_default_params();
    p.backoff_max_ms = 50;
    CHECK(rq_new(&p, err, sizeof err) == NULL);
}

// ---- losing Redis ------------------------------------------------------------------------------

// Backoff delays while Redis is down: attempt k waits within [max(100, b/2), b] with
// b = min(5000, 100 * 2^k); the jitter comes from the seed only.
TEST(test_reconnect_backoff_schedule) {
    int port = 0;
    { // a port where nothing listens
        struct redis_server s;
        char err[512];
        int rc = redis_server_start(&s, err, sizeof err);
        if (rc == SPECD_SOFT_EMPTY)
            TEST_SKIP("%s", err);
        REQUIRE(rc == SPECD_OK);
        port = s.port;
        redis_server_stop(&s);
    }
    struct rq_params p = params_for(port, "t16:", "w");
    p.backoff_min_ms = 100;
    p.backoff_max_ms = 5000;
    p.seed = 7;
    char err[256];
    rq *a = rq_new(&p, err, sizeof err);
    rq *b = rq_new(&p, err, sizeof err);
    p.seed = 8;
    rq *c = rq_new(&p, err, sizeof err);
    REQUIRE(a && b && c);
    CHECK(!rq_is_connected(a));
    CHECK(strstr(rq_last_error(a), "cannot connect to Redis") != NULL);
    int differs = 0;
    for (int k = 1; k < 9; k++) { // rq_new made attempt 0
        int base = 100 << k;
        if (base > 5000)
            base = 5000;
        int lo = base / 2 < 100 ? 100 : base / 2;
        CHECK_EQ_INT(rq_reconnect(a), RQ_SOFT_DISCONNECTED);
        rq_reconnect(b);
        rq_reconnect(c);
        int da = rq_reconnect_delay_ms(a), db = rq_reconnect_delay_ms(b);
        int dc = rq_reconnect_delay_ms(c);
        CHECK(da <= base && da >= lo - 60); // minus the time spent since the attempt
        CHECK(abs(da - db) <= 60);          // same seed, same jitter
        differs += abs(da - dc) > 60;
    }
    CHECK(differs > 0);
    // Calls made before the next attempt is due fail fast without touching the network.
    double t0 = clock_now_ms();
    struct rq_delivery d;
    size_t n;
    CHECK_EQ_INT(rq_read(a, 1, 0, &d, &n), RQ_SOFT_DISCONNECTED);
    CHECK_EQ_INT(submit(a, "x", "p", 0, NULL), RQ_SOFT_DISCONNECTED);
    CHECK(clock_now_ms() - t0 < 50);
    rq_free(a);
    rq_free(b);
    rq_free(c);
}

TEST(test_redis_restart_reconnects) {
    struct redis_server s;
    char err[512];
    int rc = redis_server_start(&s, err, sizeof err);
    if (rc == SPECD_SOFT_EMPTY)
        TEST_SKIP("%s", err);
    REQUIRE(rc == SPECD_OK);
    struct rq_params p = params_for(s.port, "t17:", "w");
    rq *worker = rq_new(&p, err, sizeof err);
    p.consumer = "p";
    rq *producer = rq_new(&p, err, sizeof err);
    REQUIRE(worker && producer);
    REQUIRE(submit(producer, "before", "p", 0, NULL) == SPECD_OK);
    struct rq_delivery d;
    size_t n;
    REQUIRE(rq_read(worker, 1, 0, &d, &n) == SPECD_OK);

    redis_server_kill(&s); // Redis dies with the job in flight
    // A large write to the dead connection raises SIGPIPE inside hiredis; rq must absorb it
    // (the process does not ignore SIGPIPE here) and report a soft disconnect.
    size_t big_len = 16u << 20;
    char *big = calloc(1, big_len);
    REQUIRE(big);
    CHECK_EQ_INT(rq_kv_set(producer, "big", big, big_len), RQ_SOFT_DISCONNECTED);
    free(big);
    struct rq_result res = make_result("kept");
    CHECK_EQ_INT(rq_finish(worker, &d, &res), RQ_SOFT_DISCONNECTED);
    CHECK(!rq_is_connected(worker));
    CHECK_EQ_INT(rq_finish(worker, &d, &res), RQ_SOFT_DISCONNECTED); // still down
    struct rq_delivery d2;
    double t0 = clock_now_ms();
    CHECK_EQ_INT(rq_read(worker, 1, 100, &d2, &n), RQ_SOFT_DISCONNECTED); // waits, no spin
    CHECK(clock_now_ms() - t0 >= 15);

    REQUIRE(redis_server_restart(&s, err, sizeof err) == SPECD_OK);
    // The worker keeps its in-flight job and retries the result until Redis is back.
    rc = RQ_SOFT_DISCONNECTED;
    for (int i = 0; i < 100 && rc == RQ_SOFT_DISCONNECTED; i++) {
        rc = rq_finish(worker, &d, &res);
        if (rc == RQ_SOFT_DISCONNECTED)
            sleep_ms(rq_reconnect_delay_ms(worker) + 1);
    }
    CHECK_EQ_INT(rc, SPECD_OK);
    CHECK(rq_is_connected(worker));
    struct rq_result got;
    // The producer's connection died too: its next call reconnects by itself.
    CHECK(rq_wait_result(producer, "before", 2000, &got) == SPECD_OK);
    CHECK_EQ_STR(got.text, "kept");
    rq_result_clear(&got);
    rq_delivery_clear(&d);

    // The restarted Redis lost the group; reading recreates it and carries on.
    REQUIRE(submit(producer, "after", "p", 0, NULL) == SPECD_OK);
    REQUIRE(rq_read(worker, 1, 100, &d, &n) == SPECD_OK);
    CHECK_EQ_STR(d.job.id, "after");
    CHECK(rq_finish(worker, &d, &res) == SPECD_OK);
    rq_delivery_clear(&d);
    rq_free(worker);
    rq_free(producer);
    redis_server_stop(&s);
}

// Number of consumers in the group and whether `name` is one of them.
static int consumers(const char *prefix, const char *name, int *found) {
    redisReply *r = raw("XINFO CONSUMERS %sjobs specd-workers", prefix);
    int n = r && r->type == REDIS_REPLY_ARRAY ? (int)r->elements : -1;
    *found = 0;
    for (int i = 0; i < n; i++) {
        const char *cname = field_of(r->element[i], "name");
        *found |= cname && strcmp(cname, name) == 0;
    }
    freeReplyObject(r);
    return n;
}

TEST(test_prune_removes_only_consumers_that_hold_nothing) {
    NEED_SERVER();
    rq *a = open_rq("t20:", "alive");
    rq *b = open_rq("t20:", "busy-dead");
    rq *c = open_rq("t20:", "idle-dead");
    REQUIRE(a && b && c);
    REQUIRE(submit(a, "held", "p", 0, NULL) == SPECD_OK);
    struct rq_delivery d;
    size_t n;
    REQUIRE(rq_read(b, 1, 0, &d, &n) == SPECD_OK); // busy-dead holds the job
    rq_delivery_clear(&d);
    CHECK(rq_read(c, 1, 0, &d, &n) == SPECD_SOFT_EMPTY);
    freeReplyObject(raw("XGROUP CREATECONSUMER t20:jobs specd-workers idle-dead")); // holds nothing
    rq_free(b);
    rq_free(c);
    int found = 0;
    CHECK_EQ_INT(consumers("t20:", "idle-dead", &found), 2); // "alive" has not read yet
    CHECK(found);

    int removed = -1;
    REQUIRE(rq_prune_consumers(a, 60000, &removed) == SPECD_OK); // nobody idle for a minute
    CHECK_EQ_INT(removed, 0);
    sleep_ms(50);
    REQUIRE(rq_prune_consumers(a, 20, &removed) == SPECD_OK);
    CHECK_EQ_INT(removed, 1); // idle-dead; not busy-dead (holds a job), not alive (itself)
    CHECK_EQ_INT(consumers("t20:", "idle-dead", &found), 1);
    CHECK(!found);
    CHECK_EQ_INT(pending("t20:"), 1); // the job is still pending and can be reclaimed

    sleep_ms(150); // claim_idle_ms is 100
    REQUIRE(rq_claim(a, 1, &d, &n) == SPECD_OK);
    REQUIRE(rq_prune_consumers(a, 20, &removed) == SPECD_OK);
    CHECK_EQ_INT(removed, 1); // busy-dead, now that its job moved to alive
    REQUIRE(rq_retire(a, &removed) == SPECD_OK);
    CHECK_EQ_INT(removed, 0); // alive holds the job: it stays
    struct rq_result res = make_result("ok");
    REQUIRE(rq_finish(a, &d, &res) == SPECD_OK);
    rq_delivery_clear(&d);
    REQUIRE(rq_retire(a, &removed) == SPECD_OK);
    CHECK_EQ_INT(removed, 1);
    CHECK_EQ_INT(consumers("t20:", "alive", &found), 0);
    rq_free(a);
}

TEST(test_fetch_prunes_gone_consumers) {
    NEED_SERVER();
    rq *gone = open_rq("t21:", "gone");
    REQUIRE(gone);
    struct rq_delivery d[2];
    size_t n;
    CHECK(rq_read(gone, 1, 0, d, &n) == SPECD_SOFT_EMPTY); // creates the group
    freeReplyObject(raw("XGROUP CREATECONSUMER t21:jobs specd-workers gone"));
    rq_free(gone);
    sleep_ms(60);
    struct rq_params p = params_for(srv.port, "t21:", "live");
    p.prune_idle_ms = 50;
    char err[256];
    rq *live = rq_new(&p, err, sizeof err);
    REQUIRE(live);
    int found = 0;
    CHECK_EQ_INT(consumers("t21:", "gone", &found), 1);
    CHECK(rq_fetch(live, 2, 0, d, &n) == SPECD_SOFT_EMPTY);
    CHECK(consumers("t21:", "gone", &found) >= 0); // "live" appears only once it reads a job
    CHECK(!found);
    rq_free(live);
}

int main(int argc, char **argv) {
    TEST_MAIN_BEGIN(argc, argv);
    log_set_level(LOG_LEVEL_ERROR); // the tests provoke warnings on purpose
    srv_rc = redis_server_start(&srv, srv_err, sizeof srv_err);
    if (srv_rc == SPECD_OK)
        raw_ctx = redisConnect("127.0.0.1", srv.port);
    else
        fprintf(stderr, "redis: %s\n", srv_err);
    TEST_RUN(test_redis_server_support);
    TEST_RUN(test_redis_server_dies_with_a_crashed_test);
    TEST_RUN(test_submit_consume_finish);
    TEST_RUN(test_result_text_is_binary_safe);
    TEST_RUN(test_finish_is_idempotent);
    TEST_RUN(test_group_created_if_missing);
    TEST_RUN(test_read_respects_count);
    TEST_RUN(test_reclaim_from_dead_consumer);
    TEST_RUN(test_touch_keeps_a_long_job);
    TEST_RUN(test_fetch_claims_then_reads);
    TEST_RUN(test_max_deliveries_goes_to_dead_letter);
    TEST_RUN(test_malformed_jobs_dead_letter_and_consumer_carries_on);
    TEST_RUN(test_worker_dead_letter);
    TEST_RUN(test_streaming_deltas);
    TEST_RUN(test_result_ttl_expires);
    TEST_RUN(test_wait_result);
    TEST_RUN(test_kv_and_submit_validation);
    TEST_RUN(test_bad_params);
    TEST_RUN(test_reconnect_backoff_schedule);
    TEST_RUN(test_redis_restart_reconnects);
    TEST_RUN(test_prune_removes_only_consumers_that_hold_nothing);
    TEST_RUN(test_fetch_prunes_gone_consumers);
    if (raw_ctx)
        redisFree(raw_ctx);
    redis_server_stop(&srv);
    return TEST_MAIN_END();
}
