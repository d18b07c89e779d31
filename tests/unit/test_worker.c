// The worker service against a private redis-server and real ZeroMQ sockets on 127.0.0.1.
// Results are compared with the engine run directly (not through the worker); Redis state is
// read with plain hiredis commands; metrics and settings go through sockets the test binds, as
// the controller would. Most tests run the worker loop in a thread on the tiny stories260K
// model; the SIGTERM tests fork a child that runs worker_main() exactly as specd-worker does,
// on the trained target model (its jobs last long enough to be caught in flight).
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "shared/clock.h"
#include "shared/log.h"
#include "shared/rq.h"
#include "shared/status.h"
#include "shared/zmq_msg.h"
#include "tests/support/redis_server.h"
#include "tests/test.h"
#include "worker/engine/engine.h"
#include "worker/engine/tok.h"
#include "worker/service/worker.h"
#include "worker/service/worker_config.h"
#include "worker/service/worker_main.h"
#include "worker/service/worker_metrics.h"
#include "worker/service/worker_settings.h"

#define TINY "models/stories260K.gguf"
#define TARGET "models/target-q8_0.gguf"
#define MAX_MSGS 4096

static struct redis_server srv;
static int srv_rc = SPECD_ERR_STATE;
static char srv_err[512];
static redisContext *raw_ctx;

#define NEED(model_rel)                                                                            \
    do {                                                                                           \
        if (srv_rc == SPECD_SOFT_EMPTY)                                                            \
            TEST_SKIP("%s", srv_err);                                                              \
        REQUIRE(srv_rc == SPECD_OK && raw_ctx);                                                    \
        if (!test_shared_path(model_rel))                                                          \
            TEST_SKIP("../shared/%s not found", model_rel);                                        \
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

static long long pending(const char *prefix) {
    redisReply *r = raw("XPENDING %sjobs specd-workers", prefix);
    long long n = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
                          r->element[0]->type == REDIS_REPLY_INTEGER
                      ? r->element[0]->integer
                      : 0;
    freeReplyObject(r);
    return n;
}

// Field of a flat [name, value, ...] reply (HGETALL or a stream entry), or NULL.
static const char *field_of(const redisReply *kv, const char *name) {
    for (size_t i = 0; kv && kv->type == REDIS_REPLY_ARRAY && i + 1 < kv->elements; i += 2)
        if (strcmp(kv->element[i]->str, name) == 0)
            return kv->element[i + 1]->str;
    return NULL;
}

// Polls HGETALL <prefix>result:<id> until it has a status (NULL after timeout_ms).
static redisReply *wait_result(const char *prefix, const char *id, int timeout_ms) {
    for (double t0 = clock_now_ms(); clock_now_ms() - t0 < timeout_ms; sleep_ms(5)) {
        redisReply *r = raw("HGETALL %sresult:%s", prefix, id);
        if (field_of(r, "status"))
            return r;
        freeReplyObject(r);
    }
    return NULL;
}

// ---- the worker under test ------------------------------------------------------------------

static void base_config(struct worker_config *c, const char *prefix, const char *model) {
    worker_config_default(c);
    snprintf(c->model, sizeof c->model, "%s", test_shared_path(model));
    snprintf(c->redis_prefix, sizeof c->redis_prefix, "%s", prefix);
    snprintf(c->worker_id, sizeof c->worker_id, "w-%.*s", (int)strlen(prefix) - 1, prefix);
    c->redis_port = srv.port;
    c->threads = 1;
    c->max_inflight = 4;
    c->idle_block_ms = 20;
    c->result_ttl_s = 600;
    c->redis_backoff_min_ms = 20;
    c->redis_backoff_max_ms = 200;
    c->metrics_endpoint[0] = c->settings_endpoint[0] = '\0';
    if (strcmp(model, TINY) == 0) { // the tiny model drafts for itself: every draft is accepted
        snprintf(c->draft, sizeof c->draft, "%s", c->model);
        snprintf(c->proposer, sizeof c->proposer, "draft");
    }
}

struct running {
    worker *w;
    pthread_t thread;
    int rc;
};

static void *run_thread(void *arg) {
    struct running *r = arg;
    r->rc = worker_run(r->w);
    return NULL;
}

static int start_worker(struct running *r, const struct worker_config *c) {
    char err[512];
    memset(r, 0, sizeof *r);
    int rc = worker_new(c, &r->w, err, sizeof err);
    if (rc != SPECD_OK) {
        fprintf(stderr, "  worker_new: %s\n", err);
        return rc;
    }
    return pthread_create(&r->thread, NULL, run_thread, r) == 0 ? SPECD_OK : SPECD_ERR_STATE;
}

static int stop_worker(struct running *r, struct worker_stats *st) {
    worker_request_stop(r->w);
    pthread_join(r->thread, NULL);
    if (st)
        worker_get_stats(r->w, st);
    worker_free(r->w);
    return r->rc;
}

static rq *producer(const char *prefix, int port) {
    struct rq_params p = rq_default_params();
    p.port = port;
    p.prefix = prefix;
    p.consumer = "test-producer";
    char err[256];
    return rq_new(&p, err, sizeof err);
}

static struct job make_job(const char *id, const char *prompt, int max_tokens) {
    struct job j;
    job_init(&j, NULL);
    snprintf(j.id, sizeof j.id, "%s", id);
    j.prompt = prompt;
    j.prompt_len = strlen(prompt);
    j.max_tokens = max_tokens;
    j.temperature = 0;
    j.has_seed = 1;
    j.seed = 1;
    return j;
}

static int submit(rq *q, const struct job *j) {
    char entry[RQ_ID_MAX];
    return rq_submit(q, j, entry, sizeof entry);
}

// ---- the reference: the engine run directly -------------------------------------------------

struct ref_out {
    char text[4096];
    int n_prompt, n_tokens;
    char finish[16];
};

// Runs the jobs through one engine with the tiny model drafting for itself, depth 4, all added
// at once (as the worker gets them when they are queued before it starts).
static int reference(const struct job *jobs, int n, struct ref_out *out) {
    struct engine_params ep = engine_default_params();
    ep.target_path = ep.draft_path = test_shared_path(TINY);
    ep.proposer = ENGINE_PROPOSER_DRAFT;
    ep.n_threads = 1;
    engine *e;
    char err[256];
    if (engine_new(&ep, &e, err, sizeof err))
        return -1;
    uint64_t ids[8];
    for (int i = 0; i < n; i++) {
        int32_t toks[512];
        int nt = tok_encode(engine_tokenizer(e), jobs[i].prompt, jobs[i].prompt_len, true, false,
                            toks, 512);
        struct engine_request r = {.prompt = toks,
                                   .n_prompt = nt,
                                   .max_tokens = jobs[i].max_tokens,
                                   .sampling = sampler_default_params(),
                                   .stop = jobs[i].stop,
                                   .n_stop = jobs[i].n_stop};
        r.sampling.temperature = (float)jobs[i].temperature;
        r.sampling.top_k = jobs[i].top_k;
        r.sampling.top_p = (float)jobs[i].top_p;
        r.sampling.seed = jobs[i].seed;
        if (engine_add(e, &r, &ids[i], err, sizeof err))
            return engine_free(e), -1;
    }
    while (engine_step(e, NULL) == 0)
        ;
    for (int i = 0; i < n; i++) {
        struct engine_output o;
        engine_get_output(e, ids[i], &o);
        snprintf(out[i].text, sizeof out[i].text, "%.*s", (int)o.text_len, o.text);
        out[i].n_prompt = o.n_prompt;
        out[i].n_tokens = o.n_tokens;
        snprintf(out[i].finish, sizeof out[i].finish, "%s", engine_finish_name(o.finish));
    }
    engine_free(e);
    return 0;
}

// ---- configuration ---------------------------------------------------------------------------

TEST(config_yaml_then_flags) {
    char path[] = "/tmp/specd-worker-test-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    const char *yaml = "# worker config\n"
                       "model: /models/t.gguf\n"
                       "redis:\n"
                       "  host: redis.internal\n"
                       "  port: 6380\n"
                       "max_inflight: 7\n"
                       "spec: {enabled: false, depth: 2}\n"
                       "prefix_cache: no\n"
                       "draft: ~\n";
    REQUIRE(write(fd, yaml, strlen(yaml)) == (ssize_t)strlen(yaml));
    close(fd);
    struct worker_config c;
    worker_config_default(&c);
    char err[512];
    char *argv[] = {"specd-worker",   "--redis-port",       "7000", "-c", path,
                    "--spec-enabled", "--worker-id=node-1", "-t",   "3",  NULL};
    REQUIRE(worker_config_parse_args(&c, 9, argv, err, sizeof err) == SPECD_OK);
    CHECK_EQ_STR(c.model, "/models/t.gguf");
    CHECK_EQ_STR(c.redis_host, "redis.internal");
    CHECK_EQ_INT(c.redis_port, 7000); // the flag wins over the file, wherever it stands
    CHECK_EQ_INT(c.max_inflight, 7);
    CHECK_EQ_INT(c.spec_enabled, 1); // bare bool flag = true, over the file's false
    CHECK_EQ_INT(c.spec_depth, 2);
    CHECK_EQ_INT(c.prefix_cache, 0);
    CHECK_EQ_STR(c.draft, "");
    CHECK_EQ_STR(c.worker_id, "node-1");
    CHECK_EQ_INT(c.threads, 3);
    CHECK_EQ_INT(c.claim_idle_ms, 60000); // untouched default
    // Errors name the file, line and key.
    FILE *f = fopen(path, "w");
    fputs("model: m\nredis:\n  prot: 1\n", f);
    fclose(f);
    worker_config_default(&c);
    CHECK_EQ_INT(worker_config_load_yaml(&c, path, err, sizeof err), SPECD_ERR_FORMAT);
    CHECK(strstr(err, ":3:") && strstr(err, "redis_prot"));
    f = fopen(path, "w");
    fputs("max_inflight: lots\n", f);
    fclose(f);
    CHECK_EQ_INT(worker_config_load_yaml(&c, path, err, sizeof err), SPECD_ERR_FORMAT);
    CHECK(strstr(err, "max_inflight") != NULL);
    f = fopen(path, "w");
    fputs("model: [a, b]\n", f);
    fclose(f);
    CHECK_EQ_INT(worker_config_load_yaml(&c, path, err, sizeof err), SPECD_ERR_FORMAT);
    unlink(path);
    CHECK_EQ_INT(worker_config_load_yaml(&c, path, err, sizeof err), SPECD_ERR_IO);
    // Command-line errors and validation.
    char *bad1[] = {"specd-worker", "-m", "x", "--redis-port", "70000", NULL};
    CHECK_EQ_INT(worker_config_parse_args(&c, 5, bad1, err, sizeof err), SPECD_ERR_INVALID);
    CHECK(strstr(err, "redis_port") != NULL);
    char *bad2[] = {"specd-worker", "--redis-port", "7", NULL};
    worker_config_default(&c);
    CHECK_EQ_INT(worker_config_parse_args(&c, 3, bad2, err, sizeof err), SPECD_ERR_INVALID);
    CHECK(strstr(err, "model") != NULL);
    char *bad3[] = {"specd-worker", "-m", "x", "--spec-depth", "9", NULL}; // > max_depth 8
    worker_config_default(&c);
    CHECK_EQ_INT(worker_config_parse_args(&c, 5, bad3, err, sizeof err), SPECD_ERR_INVALID);
    char *bad4[] = {"specd-worker", "-m", "x", "--worker-id", "all", NULL};
    worker_config_default(&c);
    CHECK_EQ_INT(worker_config_parse_args(&c, 5, bad4, err, sizeof err), SPECD_ERR_INVALID);
    char *help[] = {"specd-worker", "--help", NULL};
    CHECK_EQ_INT(worker_config_parse_args(&c, 2, help, err, sizeof err), WORKER_CONFIG_HELP);
    // --help lists every key that the YAML dump holds, with its default.
    char *usage = NULL, *dump = NULL;
    size_t ulen = 0, dlen = 0;
    FILE *uf = open_memstream(&usage, &ulen), *df = open_memstream(&dump, &dlen);
    worker_config_default(&c);
    worker_config_usage(&c, uf);
    worker_config_dump(&c, df);
    fclose(uf);
    fclose(df);
    int keys = 0;
    for (char *line = strtok(dump, "\n"); line; line = strtok(NULL, "\n"), keys++) {
        char flag[80] = "--";
        size_t k = strcspn(line, ":");
        for (size_t i = 0; i < k && i < 70; i++)
            flag[2 + i] = line[i] == '_' ? '-' : line[i];
        flag[2 + (k < 70 ? k : 70)] = '\0';
        if (!strstr(usage, flag))
            TEST_FAIL_AT(__FILE__, __LINE__, "--help does not list %s", flag);
    }
    CHECK(keys >= 40);
    CHECK(strstr(usage, "--redis-port PORT") && strstr(usage, "(default 6379)"));
    free(usage);
    free(dump);
}

// ---- settings rules (no sockets, own clock) -------------------------------------------------

TEST(settings_rules_epochs_and_ttl) {
    struct worker_settings_params p = worker_settings_default_params();
    p.worker_id = "w1";
    p.safe_default.depth = 3;
    worker_settings *ws;
    char err[256];
    REQUIRE(worker_settings_new(&p, &ws, err, sizeof err) == SPECD_OK);
    CHECK_EQ_INT(worker_settings_current(ws)->epoch, 0);
    CHECK_EQ_INT(worker_settings_current(ws)->depth, 3);
    CHECK(!worker_settings_fallback(ws));
    CHECK_EQ_INT(worker_settings_expire(ws, 1e9), WORKER_SETTINGS_NONE); // default never expires
    struct spec_settings s = {
        .epoch = 5, .enabled = true, .depth = 2, .max_depth = 8, .ttl_ms = 100};
    CHECK_EQ_INT(worker_settings_offer(ws, &s, 1000), WORKER_SETTINGS_APPLIED);
    CHECK(worker_settings_take_change(ws));
    CHECK(!worker_settings_take_change(ws));
    s.epoch = 4, s.depth = 7;
    CHECK_EQ_INT(worker_settings_offer(ws, &s, 1050), WORKER_SETTINGS_STALE);
    s.epoch = 0;
    CHECK_EQ_INT(worker_settings_offer(ws, &s, 1050), WORKER_SETTINGS_STALE);
    CHECK_EQ_INT(worker_settings_current(ws)->depth, 2);
    // A stale message does not refresh the TTL: 1000 + 100 < 1101.
    CHECK_EQ_INT(worker_settings_expire(ws, 1100), WORKER_SETTINGS_NONE);
    s.epoch = 5, s.depth = 2;
    CHECK_EQ_INT(worker_settings_offer(ws, &s, 1090), WORKER_SETTINGS_REFRESHED);
    CHECK_EQ_INT(worker_settings_expire(ws, 1189), WORKER_SETTINGS_NONE);
    CHECK_EQ_INT(worker_settings_expire(ws, 1191), WORKER_SETTINGS_FALLBACK);
    CHECK(worker_settings_fallback(ws));
    CHECK(worker_settings_take_change(ws));
    CHECK_EQ_INT(worker_settings_current(ws)->epoch, 0);
    CHECK_EQ_INT(worker_settings_current(ws)->depth, 3);
    CHECK_EQ_INT(worker_settings_expire(ws, 5000), WORKER_SETTINGS_NONE);
    // After a fallback a restarted controller is followed, whatever its epoch.
    s.epoch = 1, s.depth = 1;
    CHECK_EQ_INT(worker_settings_offer(ws, &s, 6000), WORKER_SETTINGS_APPLIED);
    CHECK(!worker_settings_fallback(ws));
    CHECK_EQ_INT(worker_settings_current(ws)->depth, 1);
    struct worker_settings_stats st;
    worker_settings_get_stats(ws, &st);
    CHECK_EQ_INT(st.applied, 2);
    CHECK_EQ_INT(st.stale, 2);
    CHECK_EQ_INT(st.refreshed, 1);
    CHECK_EQ_INT(st.fallbacks, 1);
    worker_settings_free(ws);
    p.safe_default.epoch = 3; // a safe default must be epoch 0
    CHECK_EQ_INT(worker_settings_new(&p, &ws, err, sizeof err), SPECD_ERR_INVALID);
}

// ---- jobs in, results out -------------------------------------------------------------------

TEST(jobs_in_results_out_match_the_engine) {
    NEED(TINY);
    const char *prefix = "res:";
    rq *q = producer(prefix, srv.port);
    REQUIRE(q);
    struct job jobs[3] = {make_job("greedy", "Once upon a time", 40),
                          make_job("sampled", "Lily and Tom went to the", 48),
                          make_job("stopped", "Once upon a time", 60)};
    jobs[1].temperature = 0.8, jobs[1].top_k = 40, jobs[1].top_p = 0.95, jobs[1].seed = 7;
    const char *stops[] = {"Lily"};
    jobs[2].stop = stops, jobs[2].n_stop = 1;
    snprintf(jobs[2].class_label, sizeof jobs[2].class_label, "chat");
    jobs[2].priority = JOB_PRIORITY_HIGH;
    for (int i = 0; i < 3; i++) // queued before the worker starts: it reads all three at once
        REQUIRE(submit(q, &jobs[i]) == SPECD_OK);
    struct ref_out ref[3];
    REQUIRE(reference(jobs, 3, ref) == 0);
    struct worker_config c;
    base_config(&c, prefix, TINY);
    struct running r;
    REQUIRE(start_worker(&r, &c) == SPECD_OK);
    for (int i = 0; i < 3; i++) {
        redisReply *h = wait_result(prefix, jobs[i].id, 10000);
        CHECK(h != NULL);
        if (!h)
            continue;
        static const char *fields[] = {"status",
                                       "text",
                                       "finish_reason",
                                       "prompt_tokens",
                                       "completion_tokens",
                                       "drafted_tokens",
                                       "accepted_tokens",
                                       "queue_ms",
                                       "ttft_ms",
                                       "total_ms",
                                       "worker",
                                       "error"};
        for (int f = 0; f < 12; f++)
            if (!field_of(h, fields[f]))
                TEST_FAIL_AT(__FILE__, __LINE__, "result of %s lacks '%s'", jobs[i].id, fields[f]);
        CHECK_EQ_STR(field_of(h, "status"), "done");
        CHECK_EQ_STR(field_of(h, "text"), ref[i].text);
        CHECK_EQ_STR(field_of(h, "finish_reason"), ref[i].finish);
        CHECK_EQ_INT(atoi(field_of(h, "prompt_tokens")), ref[i].n_prompt);
        CHECK_EQ_INT(atoi(field_of(h, "completion_tokens")), ref[i].n_tokens);
        CHECK_EQ_STR(field_of(h, "worker"), "w-res");
        CHECK_EQ_STR(field_of(h, "error"), "");
        long drafted = atol(field_of(h, "drafted_tokens"));
        long accepted = atol(field_of(h, "accepted_tokens"));
        CHECK(drafted > 0 && accepted <= drafted);
        double qms = atof(field_of(h, "queue_ms")), ttft = atof(field_of(h, "ttft_ms")),
               total = atof(field_of(h, "total_ms"));
        CHECK(qms >= 0 && qms <= ttft && ttft <= total && total < 10000);
        freeReplyObject(h);
    }
    CHECK_EQ_STR(ref[2].finish, "stop");
    CHECK_EQ_INT(raw_int("XLEN %sdone", prefix), 3);
    CHECK_EQ_INT(pending(prefix), 0);
    CHECK_EQ_INT(raw_int("XLEN %sjobs", prefix), 0); // acked entries are deleted
    CHECK(raw_int("TTL %sresult:greedy", prefix) > 500);
    struct worker_stats st;
    CHECK_EQ_INT(stop_worker(&r, &st), SPECD_OK);
    CHECK_EQ_INT(st.jobs_started, 3);
    CHECK_EQ_INT(st.jobs_done, 3);
    CHECK(st.steps > 10);
    rq_free(q);
}

TEST(malformed_and_too_long_jobs_go_to_dead_letter) {
    NEED(TINY);
    const char *prefix = "dead:";
    struct worker_config c;
    base_config(&c, prefix, TINY);
    c.ctx = 32;
    struct running r;
    REQUIRE(start_worker(&r, &c) == SPECD_OK);
    freeReplyObject(raw("XADD %sjobs * id m1 prompt hi top_p 1.5", prefix));
    freeReplyObject(raw("XADD %sjobs * prompt no-id", prefix));
    freeReplyObject(raw("XADD %sjobs * id m3 prompt %s", prefix,
                        "Once upon a time there was a little girl named Lily. She loved to play "
                        "outside in the park with her friends and her dog every day."));
    freeReplyObject(raw("XADD %sjobs * id ok prompt %s max_tokens 8 temperature 0", prefix,
                        "Once upon a time"));
    redisReply *h = wait_result(prefix, "ok", 10000);
    CHECK(h && strcmp(field_of(h, "status"), "done") == 0);
    freeReplyObject(h);
    h = wait_result(prefix, "m3", 5000);
    CHECK(h && strcmp(field_of(h, "status"), "error") == 0 &&
          strstr(field_of(h, "error"), "context"));
    freeReplyObject(h);
    redisReply *d = raw("XRANGE %sjobs:dead - +", prefix);
    REQUIRE(d && d->type == REDIS_REPLY_ARRAY);
    CHECK_EQ_INT(d->elements, 3);
    int seen = 0;
    for (size_t i = 0; i < d->elements; i++) {
        const redisReply *kv = d->element[i]->element[1];
        const char *id = field_of(kv, "id"), *reason = field_of(kv, "reason");
        REQUIRE(id && reason);
        if (strcmp(id, "m1") == 0 && strstr(reason, "top_p"))
            seen |= 1;
        if (strcmp(id, "") == 0 && strstr(reason, "id"))
            seen |= 2;
        if (strcmp(id, "m3") == 0 && strstr(reason, "tokens do not fit the context of 32"))
            seen |= 4;
    }
    CHECK_EQ_INT(seen, 7);
    freeReplyObject(d);
    CHECK_EQ_INT(pending(prefix), 0);
    struct worker_stats st;
    CHECK_EQ_INT(stop_worker(&r, &st), SPECD_OK);
    CHECK_EQ_INT(st.jobs_dead, 1); // the other two were rejected by the queue's parser
    CHECK_EQ_INT(st.jobs_done, 1);
}

TEST(streaming_deltas_concatenate_to_the_result) {
    NEED(TINY);
    const char *prefix = "stream:";
    struct worker_config c;
    base_config(&c, prefix, TINY);
    struct running r;
    REQUIRE(start_worker(&r, &c) == SPECD_OK);
    rq *q = producer(prefix, srv.port);
    struct job j = make_job("s1", "Once upon a time", 60);
    j.stream = 1;
    REQUIRE(submit(q, &j) == SPECD_OK);
    redisReply *h = wait_result(prefix, "s1", 10000);
    REQUIRE(h);
    redisReply *s = raw("XRANGE %sstream:s1 - +", prefix);
    REQUIRE(s && s->type == REDIS_REPLY_ARRAY && s->elements >= 3);
    char text[4096] = "";
    size_t deltas = 0;
    for (size_t i = 0; i + 1 < s->elements; i++) {
        const char *delta = field_of(s->element[i]->element[1], "delta");
        CHECK(delta != NULL);
        if (delta && strlen(text) + strlen(delta) < sizeof text)
            strcat(text, delta), deltas++;
    }
    CHECK_EQ_STR(field_of(s->element[s->elements - 1]->element[1], "done"), "1");
    CHECK_EQ_STR(text, field_of(h, "text"));
    CHECK(deltas >= 5); // streamed as it was produced, not in one piece
    freeReplyObject(s);
    freeReplyObject(h);
    CHECK_EQ_INT(stop_worker(&r, NULL), SPECD_OK);
    rq_free(q);
}

// ---- metrics and settings over ZeroMQ ----------------------------------------------------------

struct controller {
    void *ctx, *sub, *pub; // the test plays the controller: it binds both
    struct zmsg_message *scratch;
    struct proto_metrics_msg *msgs; // [MAX_MSGS] received
    uint64_t *seqs;
    int n;
};

static bool controller_open(struct controller *k, struct worker_config *c) {
    memset(k, 0, sizeof *k);
    k->ctx = zmq_ctx_new();
    k->sub = zmq_socket(k->ctx, ZMQ_SUB);
    k->pub = zmq_socket(k->ctx, ZMQ_PUB);
    k->scratch = malloc(sizeof *k->scratch);
    k->msgs = calloc(MAX_MSGS, sizeof *k->msgs);
    k->seqs = calloc(MAX_MSGS, sizeof *k->seqs);
    char err[256];
    size_t len1 = sizeof c->metrics_endpoint, len2 = sizeof c->settings_endpoint;
    return zmsg_configure_subscriber(k->sub, 10000, err, sizeof err) == 0 &&
           zmsg_subscribe_metrics(k->sub, err, sizeof err) == 0 &&
           zmsg_configure_publisher(k->pub, 1000, false, err, sizeof err) == 0 &&
           zmq_bind(k->sub, "tcp://127.0.0.1:*") == 0 &&
           zmq_bind(k->pub, "tcp://127.0.0.1:*") == 0 &&
           zmq_getsockopt(k->sub, ZMQ_LAST_ENDPOINT, c->metrics_endpoint, &len1) == 0 &&
           zmq_getsockopt(k->pub, ZMQ_LAST_ENDPOINT, c->settings_endpoint, &len2) == 0;
}

static void controller_close(struct controller *k) {
    zmq_close(k->sub);
    zmq_close(k->pub);
    zmq_ctx_term(k->ctx);
    free(k->scratch);
    free(k->msgs);
    free(k->seqs);
}

static void controller_drain(struct controller *k) {
    struct proto_metrics_msg m;
    uint64_t seq;
    char err[256];
    while (zmsg_recv_metrics(k->sub, ZMQ_DONTWAIT, k->scratch, &m, &seq, err, sizeof err) !=
           SPECD_SOFT_EMPTY)
        if (k->n < MAX_MSGS)
            k->msgs[k->n] = m, k->seqs[k->n++] = seq;
}

static void publish(struct controller *k, const struct spec_settings *s, const char *to) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char err[256];
    CHECK_EQ_INT(zmsg_publish_settings(k->pub, to, s, &sb, err, sizeof err), SPECD_OK);
    msgpack_sbuffer_destroy(&sb);
}

// Runs one job through the worker and collects the metrics of its steps; returns the index of
// the first message received for it.
static int run_job(struct controller *k, rq *q, const char *prefix, const char *id, int tokens,
                   const char *cls) {
    controller_drain(k);
    const int first = k->n;
    struct job j = make_job(id, "Once upon a time", tokens);
    if (cls)
        snprintf(j.class_label, sizeof j.class_label, "%s", cls);
    if (submit(q, &j) != SPECD_OK)
        return first;
    redisReply *h = wait_result(prefix, id, 10000);
    freeReplyObject(h);
    sleep_ms(20); // the last messages are on their way
    controller_drain(k);
    return first;
}

static bool any_epoch(const struct controller *k, int from, uint64_t epoch) {
    for (int i = from; i < k->n; i++)
        if (k->msgs[i].settings_epoch == epoch)
            return true;
    return false;
}

// Publishes s until the worker's metrics show its epoch (the SUB may take a moment to join).
static bool publish_until_applied(struct controller *k, rq *q, const char *prefix,
                                  const struct spec_settings *s, const char *to) {
    for (int round = 0; round < 30; round++) {
        publish(k, s, to);
        sleep_ms(30);
        char id[32];
        snprintf(id, sizeof id, "probe-%llu-%d", (unsigned long long)s->epoch, round);
        if (any_epoch(k, run_job(k, q, prefix, id, 6, NULL), s->epoch))
            return true;
    }
    return false;
}

TEST(metrics_arrive_with_increasing_sequence_numbers) {
    NEED(TINY);
    const char *prefix = "met:";
    struct worker_config c;
    base_config(&c, prefix, TINY);
    struct controller k;
    REQUIRE(controller_open(&k, &c));
    struct running r;
    REQUIRE(start_worker(&r, &c) == SPECD_OK);
    rq *q = producer(prefix, srv.port);
    sleep_ms(150); // let the worker's PUB connect
    int first = run_job(&k, q, prefix, "m1", 40, NULL);
    run_job(&k, q, prefix, "m2", 40, NULL);
    fprintf(stderr, "  %d metrics messages\n", k.n - first);
    CHECK(k.n - first >= 10);
    bool saw_depth4 = false;
    for (int i = first; i < k.n; i++) {
        const struct proto_metrics_msg *m = &k.msgs[i];
        if (i > first && k.seqs[i] != k.seqs[i - 1] + 1)
            TEST_FAIL_AT(__FILE__, __LINE__, "seq %llu after %llu", (unsigned long long)k.seqs[i],
                         (unsigned long long)k.seqs[i - 1]);
        if (i > first && m->m.step <= k.msgs[i - 1].m.step)
            TEST_FAIL_AT(__FILE__, __LINE__, "step numbers do not increase");
        CHECK_EQ_STR(m->worker_id, "w-met");
        CHECK(m->model[0] != '\0');
        CHECK_EQ_INT(m->settings_epoch, 0);
        CHECK(!m->fallback);
        CHECK_EQ_INT(m->dropped, 0);
        CHECK(m->m.batch_size >= 1 && m->m.kv_blocks_total > 0);
        CHECK(m->m.depth <= 4);
        saw_depth4 |= m->m.depth == 4 && m->m.accepted == 4; // self-drafting accepts everything
        CHECK(m->timestamp_ms > 1600000000000ull);
    }
    CHECK(saw_depth4);
    struct worker_stats st;
    CHECK_EQ_INT(stop_worker(&r, &st), SPECD_OK);
    CHECK_EQ_INT(st.metrics_sent, st.steps);
    CHECK_EQ_INT(st.metrics_dropped, 0);
    rq_free(q);
    controller_close(&k);
}

// The publisher alone, over inproc with the smallest queues: a full queue never blocks, drops
// are counted, leave gaps in the sequence numbers and are reported in the next message.
TEST(metrics_queue_full_drops_are_counted_and_reported) {
    void *ctx = zmq_ctx_new();
    void *sub = zmq_socket(ctx, ZMQ_SUB);
    char err[256];
    REQUIRE(zmsg_configure_subscriber(sub, 1, err, sizeof err) == SPECD_OK);
    REQUIRE(zmsg_subscribe_metrics(sub, err, sizeof err) == SPECD_OK);
    REQUIRE(zmq_bind(sub, "inproc://worker-metrics-test") == 0);
    struct worker_metrics_params p = worker_metrics_default_params();
    p.zmq_ctx = ctx;
    p.endpoint = "inproc://worker-metrics-test";
    p.worker_id = "w1";
    p.model = "tiny\x01model";
    p.draft = "";
    p.queue_len = 1;
    worker_metrics *wm;
    REQUIRE(worker_metrics_new(&p, &wm, err, sizeof err) == SPECD_OK);
    struct spec_step_metrics m = {.batch_size = 1, .kv_blocks_total = 8};
    struct zmsg_message *scratch = malloc(sizeof *scratch);
    struct proto_metrics_msg got;
    uint64_t seq = 0;
    bool joined = false; // messages before the subscription reaches the PUB are discarded
    for (int i = 0; i < 2000 && !joined; i++) {
        worker_metrics_publish(wm, &m, 3, true, 2);
        sleep_ms(1);
        joined = zmsg_recv_metrics(sub, ZMQ_DONTWAIT, scratch, &got, &seq, err, sizeof err) == 0;
    }
    REQUIRE(joined);
    CHECK_EQ_STR(got.model, "tiny?model");
    CHECK(got.settings_epoch == 3 && got.fallback && got.queue_depth == 2);
    while (zmsg_recv_metrics(sub, ZMQ_DONTWAIT, scratch, &got, &seq, err, sizeof err) == 0)
        ;
    struct worker_metrics_stats before, after;
    worker_metrics_get_stats(wm, &before);
    int full = 0;
    double t0 = clock_now_ms();
    for (int i = 0; i < 50; i++)
        full += worker_metrics_publish(wm, &m, 3, true, 2) == SPECD_SOFT_FULL;
    CHECK(clock_now_ms() - t0 < 500); // never waited for the reader
    worker_metrics_get_stats(wm, &after);
    CHECK(full >= 40);
    CHECK_EQ_INT(after.dropped - before.dropped, full);
    CHECK_EQ_INT(after.next_seq - before.next_seq, 50);
    uint64_t received = 0, last = before.next_seq - 1;
    while (zmsg_recv_metrics(sub, ZMQ_DONTWAIT, scratch, &got, &seq, err, sizeof err) == 0) {
        received++;
        CHECK(seq > last);
        last = seq;
    }
    CHECK_EQ_INT(received, 50 - full);
    // Once the reader has caught up (libzmq reopens the pipe a little later), messages go
    // through again and the first one carries the drop count.
    int rc = SPECD_SOFT_FULL;
    for (int i = 0; i < 500 && rc != SPECD_OK; i++, sleep_ms(1))
        rc = worker_metrics_publish(wm, &m, 3, true, 2);
    REQUIRE(rc == SPECD_OK);
    worker_metrics_get_stats(wm, &after);
    bool got_it = false;
    for (int i = 0; i < 500 && !got_it; i++, sleep_ms(1))
        got_it = zmsg_recv_metrics(sub, ZMQ_DONTWAIT, scratch, &got, &seq, err, sizeof err) == 0;
    REQUIRE(got_it);
    CHECK_EQ_INT(seq, after.next_seq - 1);
    CHECK_EQ_INT(got.dropped, after.dropped); // reported in the next message
    free(scratch);
    worker_metrics_free(wm);
    zmq_close(sub);
    zmq_ctx_term(ctx);
}

TEST(settings_change_the_depth_and_stale_epochs_are_ignored) {
    NEED(TINY);
    const char *prefix = "set:";
    struct worker_config c;
    base_config(&c, prefix, TINY);
    struct controller k;
    REQUIRE(controller_open(&k, &c));
    struct running r;
    REQUIRE(start_worker(&r, &c) == SPECD_OK);
    rq *q = producer(prefix, srv.port);
    struct spec_settings s = {
        .epoch = 5, .enabled = true, .depth = 2, .max_depth = 8, .ttl_ms = 60000};
    CHECK(publish_until_applied(&k, q, prefix, &s, "w-set"));
    int from = run_job(&k, q, prefix, "d2", 40, NULL);
    bool saw2 = false;
    for (int i = from; i < k.n; i++) {
        CHECK_EQ_INT(k.msgs[i].settings_epoch, 5);
        CHECK(k.msgs[i].m.depth <= 2);
        saw2 |= k.msgs[i].m.depth == 2;
    }
    CHECK(saw2);
    // A stale epoch and malformed messages change nothing.
    struct spec_settings stale = s;
    stale.epoch = 4, stale.depth = 6;
    publish(&k, &stale, NULL);
    zmq_send(k.pub, "s.all", 5, ZMQ_SNDMORE);
    zmq_send(k.pub, "\xc1garbage", 8, 0);
    zmq_send(k.pub, "s.w-set", 7, 0); // one frame only
    sleep_ms(60);
    from = run_job(&k, q, prefix, "d2b", 40, NULL);
    CHECK(k.n > from);
    for (int i = from; i < k.n; i++)
        CHECK(k.msgs[i].settings_epoch == 5 && k.msgs[i].m.depth <= 2);
    // Disabled, with a per-class override that keeps speculating at depth 1.
    s.epoch = 6, s.enabled = false, s.depth = 0, s.n_classes = 1;
    snprintf(s.classes[0].name, sizeof s.classes[0].name, "batch");
    s.classes[0].enabled = true, s.classes[0].depth = 1;
    CHECK(publish_until_applied(&k, q, prefix, &s, NULL));
    from = run_job(&k, q, prefix, "off", 20, NULL);
    for (int i = from; i < k.n; i++)
        CHECK(k.msgs[i].m.drafted == 0 && k.msgs[i].m.depth == 0);
    from = run_job(&k, q, prefix, "cls", 20, "batch");
    bool saw1 = false;
    for (int i = from; i < k.n; i++) {
        CHECK(k.msgs[i].m.depth <= 1);
        for (uint32_t j = 0; j < k.msgs[i].m.n_classes; j++)
            saw1 |= strcmp(k.msgs[i].m.classes[j].name, "batch") == 0 &&
                    k.msgs[i].m.classes[j].depth == 1;
    }
    CHECK(saw1);
    struct worker_stats st;
    CHECK_EQ_INT(stop_worker(&r, &st), SPECD_OK);
    CHECK(st.settings_stale >= 1);
    CHECK(st.settings_malformed >= 2);
    CHECK_EQ_INT(st.settings_fallbacks, 0);
    rq_free(q);
    controller_close(&k);
}

TEST(settings_ttl_expiry_falls_back_to_the_safe_default) {
    NEED(TINY);
    const char *prefix = "ttl:";
    struct worker_config c;
    base_config(&c, prefix, TINY);
    struct controller k;
    REQUIRE(controller_open(&k, &c));
    struct running r;
    REQUIRE(start_worker(&r, &c) == SPECD_OK);
    rq *q = producer(prefix, srv.port);
    struct spec_settings s = {
        .epoch = 9, .enabled = true, .depth = 1, .max_depth = 8, .ttl_ms = 300};
    CHECK(publish_until_applied(&k, q, prefix, &s, NULL));
    publish(&k, &s, NULL); // a repeat refreshes the ttl
    int from = run_job(&k, q, prefix, "during", 20, NULL);
    CHECK(k.n > from);
    for (int i = from; i < k.n; i++)
        CHECK(k.msgs[i].settings_epoch == 9 && !k.msgs[i].fallback && k.msgs[i].m.depth <= 1);
    sleep_ms(450); // the controller goes quiet for longer than the ttl
    from = run_job(&k, q, prefix, "after", 30, NULL);
    bool saw_default_depth = false;
    CHECK(k.n > from);
    for (int i = from; i < k.n; i++) {
        CHECK(k.msgs[i].fallback);
        CHECK_EQ_INT(k.msgs[i].settings_epoch, 0);
        saw_default_depth |= k.msgs[i].m.depth == 4;
    }
    CHECK(saw_default_depth);
    // The controller comes back (same epoch): followed again, fallback cleared.
    CHECK(publish_until_applied(&k, q, prefix, &s, NULL));
    CHECK(!k.msgs[k.n - 1].fallback);
    struct worker_stats st;
    CHECK_EQ_INT(stop_worker(&r, &st), SPECD_OK);
    CHECK_EQ_INT(st.settings_fallbacks, 1);
    rq_free(q);
    controller_close(&k);
}

// ---- Redis outage ------------------------------------------------------------------------------

TEST(redis_restart_results_written_later) {
    NEED(TARGET);
    struct redis_server s2;
    char err[512];
    REQUIRE(redis_server_start(&s2, err, sizeof err) == SPECD_OK);
    const char *prefix = "down:";
    struct worker_config c;
    base_config(&c, prefix, TARGET);
    c.redis_port = s2.port;
    struct running r;
    REQUIRE(start_worker(&r, &c) == SPECD_OK);
    rq *q = producer(prefix, s2.port);
    struct job j = make_job("long", "The quick brown fox", 40);
    REQUIRE(submit(q, &j) == SPECD_OK);
    redisContext *rc2 = redisConnect("127.0.0.1", s2.port);
    for (int i = 0; i < 1000; i++) { // until the worker holds the job
        redisReply *p = redisCommand(rc2, "XPENDING %sjobs specd-workers", prefix);
        long long n = p && p->type == REDIS_REPLY_ARRAY ? p->element[0]->integer : 0;
        freeReplyObject(p);
        if (n > 0)
            break;
        sleep_ms(2);
    }
    redisFree(rc2);
    redis_server_kill(&s2);
    sleep_ms(1200); // the job (~150 ms) finishes while Redis is down
    REQUIRE(redis_server_restart(&s2, err, sizeof err) == SPECD_OK);
    rc2 = redisConnect("127.0.0.1", s2.port);
    redisReply *h = NULL;
    for (int i = 0; i < 500 && !field_of(h, "status"); i++) {
        freeReplyObject(h);
        sleep_ms(10);
        h = redisCommand(rc2, "HGETALL %sresult:long", prefix);
    }
    CHECK(field_of(h, "status") && strcmp(field_of(h, "status"), "done") == 0);
    CHECK(field_of(h, "completion_tokens") && atoi(field_of(h, "completion_tokens")) == 40);
    freeReplyObject(h);
    redisFree(rc2);
    struct worker_stats st;
    CHECK_EQ_INT(stop_worker(&r, &st), SPECD_OK);
    CHECK_EQ_INT(st.jobs_done, 1);
    CHECK(st.write_retries >= 1);
    rq_free(q);
    redis_server_stop(&s2);
}

// ---- SIGTERM: the real program in a child process ----------------------------------------------

static pid_t spawn_worker(const char *prefix, const char *id, const char *extra1,
                          const char *extra2) {
    char port[16];
    snprintf(port, sizeof port, "%d", srv.port);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    char *argv[] = {"specd-worker",
                    "-m",
                    (char *)test_shared_path(TARGET),
                    "-t",
                    "1",
                    "--redis-port",
                    port,
                    "--redis-prefix",
                    (char *)prefix,
                    "--worker-id",
                    (char *)id,
                    "--metrics-endpoint",
                    "",
                    "--settings-endpoint",
                    "",
                    "--idle-block-ms",
                    "20",
                    "--log-level",
                    "error",
                    (char *)extra1,
                    (char *)extra2,
                    NULL};
    int argc = extra1 ? (extra2 ? 21 : 20) : 19;
    _exit(worker_main(argc, argv)); // _exit: the parent's atexit handlers are not ours to run
}

// Waits for the child; returns its exit status, or -1 (after killing it) on timeout.
static int reap(pid_t pid, int timeout_ms) {
    for (double t0 = clock_now_ms(); clock_now_ms() - t0 < timeout_ms; sleep_ms(5)) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static bool wait_pending(const char *prefix, int timeout_ms) {
    for (double t0 = clock_now_ms(); clock_now_ms() - t0 < timeout_ms; sleep_ms(2))
        if (pending(prefix) > 0)
            return true;
    return false;
}

TEST(sigterm_finishes_held_jobs_and_exits_0) {
    NEED(TARGET);
    const char *prefix = "term:";
    rq *q = producer(prefix, srv.port);
    pid_t pid = spawn_worker(prefix, "w-term", "--max-inflight", "2");
    REQUIRE(pid > 0);
    char ids[4][16];
    for (int i = 0; i < 4; i++) {
        snprintf(ids[i], sizeof ids[i], "t%d", i);
        struct job j = make_job(ids[i], "The quick brown fox", 40);
        REQUIRE(submit(q, &j) == SPECD_OK);
    }
    CHECK(wait_pending(prefix, 10000));
    kill(pid, SIGTERM);
    CHECK_EQ_INT(reap(pid, 20000), 0);
    CHECK_EQ_INT(pending(prefix), 0); // nothing held was left behind
    redisReply *c = raw("XINFO CONSUMERS %sjobs specd-workers", prefix);
    CHECK(c && c->type == REDIS_REPLY_ARRAY && c->elements == 0); // it retired its consumer
    freeReplyObject(c);
    int results = 0;
    for (int i = 0; i < 4; i++) {
        redisReply *h = raw("HGETALL %sresult:%s", prefix, ids[i]);
        if (field_of(h, "status")) {
            results++;
            CHECK_EQ_STR(field_of(h, "status"), "done");
            CHECK_EQ_INT(atoi(field_of(h, "completion_tokens")), 40);
        }
        freeReplyObject(h);
    }
    CHECK(results >= 1);
    CHECK_EQ_INT(results + raw_int("XLEN %sjobs", prefix), 4); // the rest was never read
    rq_free(q);
}

TEST(sigterm_drain_timeout_leaves_jobs_pending_for_another_worker) {
    NEED(TARGET);
    const char *prefix = "drain:";
    rq *q = producer(prefix, srv.port);
    pid_t pid = spawn_worker(prefix, "w-drain", "--drain-timeout-ms", "100");
    REQUIRE(pid > 0);
    struct job j = make_job("slow", "The quick brown fox", 900);
    j.stream = 1;
    REQUIRE(submit(q, &j) == SPECD_OK);
    for (int i = 0; i < 5000 && raw_int("XLEN %sstream:slow", prefix) < 1; i++)
        sleep_ms(2); // until it produces text
    double t0 = clock_now_ms();
    kill(pid, SIGTERM);
    CHECK_EQ_INT(reap(pid, 10000), 0);
    CHECK(clock_now_ms() - t0 < 2000);
    CHECK_EQ_INT(pending(prefix), 1); // not acked
    redisReply *cs = raw("XINFO CONSUMERS %sjobs specd-workers", prefix);
    CHECK(cs && cs->type == REDIS_REPLY_ARRAY && cs->elements == 1); // kept: it holds the job
    freeReplyObject(cs);
    CHECK_EQ_INT(raw_int("EXISTS %sresult:slow", prefix), 0);
    // Another worker (the tiny model, so it is quick) reclaims it and finishes it.
    sleep_ms(120);
    struct worker_config c;
    base_config(&c, prefix, TINY);
    c.claim_idle_ms = 100;
    snprintf(c.worker_id, sizeof c.worker_id, "w-rescue");
    struct running r;
    REQUIRE(start_worker(&r, &c) == SPECD_OK);
    redisReply *h = wait_result(prefix, "slow", 10000);
    REQUIRE(h);
    CHECK_EQ_STR(field_of(h, "worker"), "w-rescue");
    CHECK_EQ_STR(field_of(h, "status"), "done");
    // The stream says to discard the first delivery's text, then carries the new one.
    redisReply *s = raw("XRANGE %sstream:slow - +", prefix);
    char text[8192] = "";
    bool reset = false;
    for (size_t i = 0; s && i < s->elements; i++) {
        const redisReply *kv = s->element[i]->element[1];
        if (field_of(kv, "reset"))
            reset = true, text[0] = '\0';
        else if (field_of(kv, "delta") && strlen(text) + strlen(field_of(kv, "delta")) < 8192)
            strcat(text, field_of(kv, "delta"));
    }
    CHECK(reset);
    CHECK_EQ_STR(text, field_of(h, "text"));
    freeReplyObject(s);
    freeReplyObject(h);
    CHECK_EQ_INT(pending(prefix), 0);
    CHECK_EQ_INT(stop_worker(&r, NULL), SPECD_OK);
    rq_free(q);
}

int main(int argc, char **argv) {
    TEST_MAIN_BEGIN(argc, argv);
    log_set_level(LOG_LEVEL_ERROR); // the tests provoke warnings on purpose
    srv_rc = redis_server_start(&srv, srv_err, sizeof srv_err);
    if (srv_rc == SPECD_OK)
        raw_ctx = redisConnect("127.0.0.1", srv.port);
    TEST_RUN(config_yaml_then_flags);
    TEST_RUN(settings_rules_epochs_and_ttl);
    TEST_RUN(jobs_in_results_out_match_the_engine);
    TEST_RUN(malformed_and_too_long_jobs_go_to_dead_letter);
    TEST_RUN(streaming_deltas_concatenate_to_the_result);
    TEST_RUN(metrics_arrive_with_increasing_sequence_numbers);
    TEST_RUN(metrics_queue_full_drops_are_counted_and_reported);
    TEST_RUN(settings_change_the_depth_and_stale_epochs_are_ignored);
    TEST_RUN(settings_ttl_expiry_falls_back_to_the_safe_default);
    TEST_RUN(redis_restart_results_written_later);
    TEST_RUN(sigterm_finishes_held_jobs_and_exits_0);
    TEST_RUN(sigterm_drain_timeout_leaves_jobs_pending_for_another_worker);
    if (raw_ctx)
        redisFree(raw_ctx);
    redis_server_stop(&srv);
    return TEST_MAIN_END();
}
