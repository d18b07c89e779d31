// The controller service (controller/ctlsvc.h) with real sockets: ZeroMQ on 127.0.0.1 TCP ports
// chosen by the kernel, HTTP through a small independent client (tests/support/http_client.h),
// a private redis-server (tests/support/redis_server.h), and the specd-controller binary for
// signals. A fake worker drives a simulated engine (controller/ctl_sim.h) and publishes its
// metrics; the expected counters are summed by the test from what it sent, and /metrics is
// checked line by line against the text exposition grammar by an independent parser
// (tests/support/prom_text.h). The pure parts (policy JSON, config) are in
// test_controller_config.c.
#include "controller/ctl_sim.h"
#include "controller/ctlsvc.h"
#include "controller/ctlsvc_policy_json.h"
#include "shared/clock.h"
#include "shared/log.h"
#include "shared/rq.h"
#include "shared/status.h"
#include "shared/zmq_msg.h"

#include "tests/support/http_client.h"
#include "tests/support/prom_text.h"
#include "tests/support/redis_server.h"
#include "tests/test.h"

#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define TOKEN "t0ken-for-tests"
#define AUTH "Authorization: Bearer " TOKEN "\r\n"
#define HTTP_TIMEOUT_MS 5000

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

// ---- log capture -----------------------------------------------------------------------------

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_decisions_w1, log_decisions_static, log_malformed;

static void log_sink(void *user, enum log_level level, const char *line) {
    (void)user;
    pthread_mutex_lock(&log_lock);
    if (strncmp(line, "decision ", 9) == 0 && strstr(line, " worker=w1 ")) {
        log_decisions_w1++;
        if (strstr(line, " reason=static ") && strstr(line, " acceptance="))
            log_decisions_static++;
    }
    if (strncmp(line, "metrics_malformed ", 18) == 0)
        log_malformed++;
    pthread_mutex_unlock(&log_lock);
    if (level >= LOG_LEVEL_ERROR)
        fprintf(stderr, "  [log] %s\n", line);
}

// ---- service fixture -------------------------------------------------------------------------

struct runner {
    ctlsvc *svc;
    pthread_t thread;
    int rc;
};

static void *runner_main(void *arg) {
    struct runner *r = arg;
    r->rc = ctlsvc_run(r->svc);
    return NULL;
}

static struct ctlsvc_config test_config(int redis_port) {
    struct ctlsvc_config c = ctlsvc_config_default();
    snprintf(c.metrics_endpoint, sizeof c.metrics_endpoint, "tcp://127.0.0.1:*");
    snprintf(c.settings_endpoint, sizeof c.settings_endpoint, "tcp://127.0.0.1:*");
    snprintf(c.http_address, sizeof c.http_address, "127.0.0.1");
    c.http_port = 0;
    snprintf(c.http_token, sizeof c.http_token, TOKEN);
    c.redis_port = redis_port;
    snprintf(c.redis_prefix, sizeof c.redis_prefix, "ctltest:");
    c.republish_ms = 200;
    c.policy.interval_ms = 50;
    c.policy.half_life_ms = 500;
    c.policy.cost_half_life_ms = 5000;
    c.policy.hold_intervals = 1;
    c.policy.probe_interval_ms = 1000;
    c.policy.probe_duration_ms = 100;
    c.policy.worker_timeout_ms = 10000;
    c.policy.settings_ttl_ms = 60000;
    return c;
}

static bool runner_start(struct runner *r, const struct ctlsvc_config *cfg) {
    char err[512] = "";
    memset(r, 0, sizeof *r);
    r->svc = ctlsvc_new(cfg, NULL, NULL, err, sizeof err);
    if (!r->svc) {
        fprintf(stderr, "  ctlsvc_new: %s\n", err);
        return false;
    }
    if (pthread_create(&r->thread, NULL, runner_main, r) != 0) {
        ctlsvc_free(r->svc);
        r->svc = NULL;
        return false;
    }
    return true;
}

static void runner_stop(struct runner *r) {
    if (!r->svc)
        return;
    ctlsvc_request_stop(r->svc);
    pthread_join(r->thread, NULL);
    ctlsvc_free(r->svc);
    r->svc = NULL;
}

// A port nobody listens on (bound, read, closed).
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int http(int port, const char *method, const char *path, const char *headers,
                const char *body, struct http_response *r) {
    if (http_request(port, method, path, headers, body, body ? strlen(body) : 0, HTTP_TIMEOUT_MS,
                     r) != 0)
        return -1;
    return r->status;
}

// GET /metrics into a malloc'ed string (NULL on failure).
static char *get_metrics(int port) {
    struct http_response r;
    if (http(port, "GET", "/metrics", NULL, NULL, &r) != 200) {
        http_response_free(&r);
        return NULL;
    }
    char *text = r.body;
    r.body = NULL;
    http_response_free(&r);
    return text;
}

// Polls /metrics until `series` reaches at least `want` (or timeout). Returns the last value.
static double wait_metric(int port, const char *series, double want, int timeout_ms) {
    double v = NAN;
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        char *m = get_metrics(port);
        v = m ? prom_text_value(m, series) : NAN;
        free(m);
        if (v >= want)
            break;
        sleep_ms(20);
    }
    return v;
}

// ---- fake worker -----------------------------------------------------------------------------

struct fake_worker {
    const char *id;
    void *pub, *sub; // XPUB (sees the controller's subscription), SUB for settings
    ctl_sim *sim;
    msgpack_sbuffer sb;
    struct zmsg_message *msg;
    uint64_t seq, sent, drafted, accepted, emitted;
    uint64_t last_epoch;
    int n_settings;
    bool epochs_monotonic;
    struct spec_settings last;
};

static bool fake_open(struct fake_worker *f, void *ctx, const char *id, const ctlsvc *svc) {
    memset(f, 0, sizeof *f);
    f->id = id;
    f->epochs_monotonic = true;
    msgpack_sbuffer_init(&f->sb);
    struct ctl_sim_params sp = ctl_sim_default_params();
    f->sim = ctl_sim_new(&sp);
    f->msg = malloc(sizeof *f->msg);
    f->pub = zmq_socket(ctx, ZMQ_XPUB);
    f->sub = zmq_socket(ctx, ZMQ_SUB);
    char err[256];
    int timeout = 3000, linger = 0;
    if (!f->sim || !f->msg || !f->pub || !f->sub ||
        zmq_setsockopt(f->pub, ZMQ_RCVTIMEO, &timeout, sizeof timeout) != 0 ||
        zmq_setsockopt(f->pub, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmsg_configure_subscriber(f->sub, 1000, err, sizeof err) != SPECD_OK ||
        zmsg_subscribe_settings(f->sub, id, err, sizeof err) != SPECD_OK ||
        zmq_connect(f->pub, ctlsvc_metrics_endpoint(svc)) != 0 ||
        zmq_connect(f->sub, ctlsvc_settings_endpoint(svc)) != 0)
        return false;
    // The controller's "m." subscription arrives once the connection is up: from then on no
    // message is dropped by the PUB side, so the test can count exactly.
    unsigned char sub_msg[16];
    int n = zmq_recv(f->pub, sub_msg, sizeof sub_msg, 0);
    return n >= 1 && sub_msg[0] == 1;
}

static void fake_close(struct fake_worker *f) {
    if (f->pub)
        zmq_close(f->pub);
    if (f->sub)
        zmq_close(f->sub);
    ctl_sim_free(f->sim);
    free(f->msg);
    msgpack_sbuffer_destroy(&f->sb);
}

static bool fake_step(struct fake_worker *f) {
    struct proto_metrics_msg m;
    memset(&m, 0, sizeof m);
    ctl_sim_step(f->sim, &m.m);
    snprintf(m.worker_id, sizeof m.worker_id, "%s", f->id);
    snprintf(m.model, sizeof m.model, "tiny-target");
    snprintf(m.draft, sizeof m.draft, "tiny-draft");
    m.timestamp_ms = clock_wall_ms();
    m.settings_epoch = f->last_epoch;
    m.queue_depth = 3;
    m.m.kv_blocks_used = 10;
    m.m.kv_blocks_total = 100;
    char err[256];
    if (zmsg_publish_metrics(f->pub, &m, f->seq++, &f->sb, err, sizeof err) != SPECD_OK) {
        fprintf(stderr, "  fake_step: %s\n", err);
        return false;
    }
    f->sent++;
    f->drafted += m.m.drafted;
    f->accepted += m.m.accepted;
    f->emitted += m.m.emitted;
    return true;
}

static void fake_poll(struct fake_worker *f) {
    struct spec_settings s;
    char err[256];
    while (zmsg_recv_settings(f->sub, ZMQ_DONTWAIT, f->id, f->msg, &s, NULL, err, sizeof err) ==
           SPECD_OK) {
        if (s.epoch < f->last_epoch)
            f->epochs_monotonic = false;
        f->last_epoch = s.epoch;
        f->last = s;
        f->n_settings++;
        ctl_sim_apply_settings(f->sim, &s);
    }
}

// Steps (2 ms apart) until the worker runs depth `want` with settings to match, or timeout.
static bool fake_run_until_depth(struct fake_worker *f, uint32_t want, int timeout_ms) {
    for (int t = 0; t < timeout_ms; t += 2) {
        if (!fake_step(f))
            return false;
        fake_poll(f);
        if (f->n_settings > 0 && f->last.depth == want && ctl_sim_class_depth(f->sim, 0) == want)
            return true;
        sleep_ms(2);
    }
    return false;
}

// ---- live service tests ----------------------------------------------------------------------

static bool start_redis(struct redis_server *rs, char *err, size_t err_size, int *rc) {
    *rc = redis_server_start(rs, err, err_size);
    return *rc == SPECD_OK;
}

static void e2e_body(struct fake_worker *f, int port, uint64_t base) {
    // Goodput mode: the first tick after the first metrics publishes epoch base + 1.
    for (int i = 0; i < 1500 && f->n_settings == 0; i++) {
        REQUIRE(fake_step(f));
        fake_poll(f);
        sleep_ms(2);
    }
    REQUIRE(f->n_settings > 0);
    CHECK(f->last_epoch > base);
    uint64_t e1 = f->last_epoch;

    struct http_response h;
    uint32_t d1 = f->last.depth == 3 ? 2 : 3; // a pin that changes the settings
    char put[96];
    snprintf(put, sizeof put, "{\"mode\":\"static\",\"static_depth\":%u}", d1);
    CHECK_EQ_INT(http(port, "PUT", "/v1/policy", AUTH, put, &h), 200);
    CHECK(h.body && strstr(h.body, "\"persisted\":true"));
    http_response_free(&h);
    CHECK(fake_run_until_depth(f, d1, 3000));
    CHECK(f->last_epoch > e1);
    uint64_t e2 = f->last_epoch;
    CHECK_EQ_INT(http(port, "PUT", "/v1/policy", AUTH, "{\"static_depth\":5}", &h), 200);
    http_response_free(&h);
    CHECK(fake_run_until_depth(f, 5, 3000));
    CHECK(f->last_epoch > e2);
    CHECK(f->epochs_monotonic);
    for (int i = 0; i < 200; i++) {
        fake_step(f);
        fake_poll(f);
        sleep_ms(2);
    }
    f->seq += 7; // seven messages "lost" on the way
    for (int i = 0; i < 20; i++)
        fake_step(f);

    CHECK_NEAR(wait_metric(port, "specd_worker_steps_total{worker=\"w1\"}", (double)f->sent, 3000),
               (double)f->sent, 0);
    char *m = get_metrics(port);
    REQUIRE(m);
    int bad_line = prom_text_check(m);
    CHECK_EQ_INT(bad_line, 0);
    CHECK_NEAR(prom_text_value(m, "specd_worker_messages_lost_total{worker=\"w1\"}"), 7, 0);
    CHECK_NEAR(prom_text_value(m, "specd_controller_messages_lost_total"), 7, 0);
    CHECK_NEAR(prom_text_value(m, "specd_worker_messages_received_total{worker=\"w1\"}"),
               (double)f->sent, 0);
    CHECK_NEAR(prom_text_value(m, "specd_controller_messages_received_total"), (double)f->sent, 0);
    static const char *kinds[] = {"drafted", "accepted", "emitted"};
    const uint64_t sums[] = {f->drafted, f->accepted, f->emitted};
    for (int k = 0; k < 3; k++) {
        char s[160];
        snprintf(s, sizeof s, "specd_worker_tokens_total{worker=\"w1\",class=\"*\",kind=\"%s\"}",
                 kinds[k]);
        CHECK_NEAR(prom_text_value(m, s), (double)sums[k], 0);
        snprintf(s, sizeof s,
                 "specd_worker_tokens_total{worker=\"w1\",class=\"default\",kind=\"%s\"}",
                 kinds[k]);
        CHECK_NEAR(prom_text_value(m, s), (double)sums[k], 0);
    }
    CHECK_NEAR(prom_text_value(m, "specd_depth{worker=\"w1\",class=\"*\"}"), 5, 0);
    CHECK_NEAR(prom_text_value(m, "specd_depth{worker=\"w1\",class=\"default\"}"), 5, 0);
    CHECK_NEAR(prom_text_value(m, "specd_enabled{worker=\"w1\",class=\"*\"}"), 1, 0);
    double alpha = prom_text_value(m, "specd_acceptance_alpha{worker=\"w1\",class=\"default\"}");
    CHECK(alpha > 0.6 && alpha < 0.8); // the simulated worker accepts each position with 0.7
    double acc = prom_text_value(m, "specd_acceptance_ewma{worker=\"w1\",class=\"default\"}");
    CHECK(acc > 0.3 && acc < 0.75);
    CHECK_NEAR(prom_text_value(m, "specd_settings_epoch{worker=\"w1\"}"), (double)f->last_epoch, 0);
    CHECK_NEAR(prom_text_value(m, "specd_worker_queue_depth{worker=\"w1\"}"), 3, 0);
    CHECK_NEAR(prom_text_value(m, "specd_worker_kv_usage_ratio{worker=\"w1\"}"), 0.1, 1e-12);
    CHECK_NEAR(prom_text_value(m, "specd_worker_fallback{worker=\"w1\"}"), 0, 0);
    CHECK_NEAR(prom_text_value(m, "specd_controller_workers_tracked"), 1, 0);
    CHECK_NEAR(prom_text_value(m, "specd_controller_policy_updates_total{result=\"accepted\"}"), 2,
               0);
    CHECK(prom_text_value(m, "specd_controller_decisions_total{reason=\"static\"}") >= 1);
    CHECK(prom_text_value(m, "specd_controller_settings_published_total{kind=\"change\"}") >= 3);
    CHECK(prom_text_value(m, "specd_worker_step_seconds_total{worker=\"w1\",phase=\"step\"}") > 0);
    CHECK(
        strstr(m, "specd_worker_info{worker=\"w1\",model=\"tiny-target\",draft=\"tiny-draft\"} 1"));
    free(m);

    // With nothing changing, the settings keep coming (republish_ms = 200) with the same epoch.
    int before = f->n_settings;
    uint64_t epoch = f->last_epoch;
    for (int i = 0; i < 60; i++) {
        fake_poll(f);
        sleep_ms(10);
    }
    CHECK(f->n_settings >= before + 2);
    CHECK_EQ_INT(f->last_epoch, epoch);

    REQUIRE(http(port, "GET", "/v1/workers", NULL, NULL, &h) == 200);
    cJSON *j = cJSON_Parse(h.body);
    http_response_free(&h);
    REQUIRE(j);
    cJSON *w = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "workers"), 0);
    CHECK(w && cJSON_IsString(cJSON_GetObjectItem(w, "id")) &&
          strcmp(cJSON_GetObjectItem(w, "id")->valuestring, "w1") == 0);
    cJSON *s = w ? cJSON_GetObjectItem(w, "settings") : NULL;
    CHECK(s && cJSON_GetObjectItem(s, "depth")->valuedouble == 5);
    CHECK(s && cJSON_GetObjectItem(s, "epoch")->valuedouble == (double)f->last_epoch);
    cJSON *tracks = w ? cJSON_GetObjectItem(w, "tracks") : NULL;
    CHECK_EQ_INT(cJSON_GetArraySize(tracks), 2);
    cJSON *t1 = cJSON_GetArrayItem(tracks, 1);
    CHECK(t1 && strcmp(cJSON_GetObjectItem(t1, "class")->valuestring, "default") == 0);
    cJSON *msgs = w ? cJSON_GetObjectItem(w, "messages") : NULL;
    CHECK(msgs && cJSON_GetObjectItem(msgs, "lost")->valuedouble == 7);
    cJSON_Delete(j);

    CHECK_EQ_INT(http(port, "GET", "/healthz", NULL, NULL, &h), 200);
    CHECK(h.body && strstr(h.body, "\"status\":\"ok\"") && strstr(h.body, "\"workers\":1"));
    http_response_free(&h);
    pthread_mutex_lock(&log_lock);
    CHECK(log_decisions_w1 > 10); // every decision is logged, with its inputs
    CHECK(log_decisions_static > 0);
    pthread_mutex_unlock(&log_lock);
}

TEST(end_to_end_settings_follow_metrics) {
    struct redis_server rs;
    char err[512];
    int rc;
    if (!start_redis(&rs, err, sizeof err, &rc)) {
        if (rc == SPECD_SOFT_EMPTY)
            TEST_SKIP("%s", err);
        REQUIRE(rc == SPECD_OK);
    }
    struct ctlsvc_config cfg = test_config(rs.port);
    struct runner r;
    if (runner_start(&r, &cfg)) {
        void *ctx = zmq_ctx_new();
        struct fake_worker f;
        bool opened = fake_open(&f, ctx, "w1", r.svc);
        CHECK(opened);
        if (opened)
            e2e_body(&f, ctlsvc_http_port(r.svc), ctlsvc_epoch_base(r.svc));
        fake_close(&f);
        zmq_ctx_term(ctx);
        runner_stop(&r);
        CHECK_EQ_INT(r.rc, SPECD_OK);
    } else {
        CHECK(!"controller did not start");
    }
    redis_server_stop(&rs);
}

// Sends one multipart message; frames given as (pointer, length) pairs.
static bool send_parts(void *sock, int n, const void *const *data, const size_t *len) {
    for (int i = 0; i < n; i++)
        if (zmq_send(sock, data[i], len[i], i + 1 < n ? ZMQ_SNDMORE : 0) < 0)
            return false;
    return true;
}

static bool send3(void *sock, const char *topic, const void *seq, size_t seq_len, const void *body,
                  size_t body_len) {
    const void *d[3] = {topic, seq, body};
    const size_t l[3] = {strlen(topic), seq_len, body_len};
    return send_parts(sock, 3, d, l);
}

static double malformed_sum(const char *m) {
    static const char *reasons[] = {"frames",  "topic",           "msgpack",
                                    "version", "worker_mismatch", "metrics"};
    double sum = 0;
    for (int i = 0; i < 6; i++) {
        char s[128];
        snprintf(s, sizeof s, "specd_controller_malformed_messages_total{reason=\"%s\"}",
                 reasons[i]);
        sum += prom_text_value(m, s);
    }
    return sum;
}

static void malformed_body(void *pub, int port) {
    struct proto_metrics_msg msg;
    memset(&msg, 0, sizeof msg);
    snprintf(msg.worker_id, sizeof msg.worker_id, "w9");
    snprintf(msg.model, sizeof msg.model, "m");
    msg.m.batch_size = 1;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char err[256];
    REQUIRE(proto_metrics_encode(&msg, &sb, err, sizeof err) == SPECD_OK);
    unsigned char seq[8] = {0};
    const char one[] = "m.w9";
    const void *d1[1] = {one};
    const size_t l1[1] = {4};
    CHECK(send_parts(pub, 1, d1, l1));                     // frames: 1 frame
    CHECK(send3(pub, "m.w9", "abc", 3, sb.data, sb.size)); // frames: seq size
    const void *d4[4] = {one, seq, sb.data, sb.data};
    const size_t l4[4] = {4, 8, sb.size, sb.size};
    CHECK(send_parts(pub, 4, d4, l4));                            // frames: 4 frames
    CHECK(send3(pub, "m.bad id!", seq, 8, sb.data, sb.size));     // topic
    CHECK(send3(pub, "m.", seq, 8, sb.data, sb.size));            // topic
    CHECK(send3(pub, "m.w9", seq, 8, "\xc1garbage", 8));          // msgpack
    CHECK(send3(pub, "m.w9", seq, 8, sb.data, sb.size / 2));      // msgpack: truncated
    CHECK(send3(pub, "m.w9", seq, 8, "\x81\xa7version\x63", 10)); // version 99
    CHECK(send3(pub, "m.w8", seq, 8, sb.data, sb.size));          // worker mismatch
    uint64_t x = 12345;
    for (int i = 0; i < 50; i++) { // random bodies
        unsigned char body[64];
        for (size_t k = 0; k < sizeof body; k++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            body[k] = (unsigned char)(x >> 56);
        }
        CHECK(send3(pub, "m.w9", seq, 8, body, 1 + (size_t)(x % sizeof body)));
    }
    CHECK(send3(pub, "m.w9", seq, 8, sb.data, sb.size)); // finally a good one
    msgpack_sbuffer_destroy(&sb);

    CHECK_NEAR(wait_metric(port, "specd_controller_messages_received_total", 1, 3000), 1, 0);
    char *m = NULL;
    for (int t = 0; t < 3000; t += 20) {
        free(m);
        m = get_metrics(port);
        if (m && malformed_sum(m) >= 59)
            break;
        sleep_ms(20);
    }
    REQUIRE(m);
    CHECK_EQ_INT(prom_text_check(m), 0);
    CHECK_NEAR(malformed_sum(m), 59, 0);
    CHECK_NEAR(prom_text_value(m, "specd_controller_malformed_messages_total{reason=\"frames\"}"),
               3, 0);
    CHECK_NEAR(prom_text_value(m, "specd_controller_malformed_messages_total{reason=\"topic\"}"), 2,
               0);
    CHECK_NEAR(prom_text_value(m, "specd_controller_malformed_messages_total{reason=\"version\"}"),
               1, 0);
    CHECK_NEAR(
        prom_text_value(m, "specd_controller_malformed_messages_total{reason=\"worker_mismatch\"}"),
        1, 0);
    CHECK_NEAR(prom_text_value(m, "specd_controller_malformed_messages_total{reason=\"msgpack\"}"),
               52, 0);
    CHECK_NEAR(prom_text_value(m, "specd_controller_workers_tracked"), 1, 0);
    free(m);
    pthread_mutex_lock(&log_lock);
    CHECK(log_malformed >= 1 && log_malformed <= 18); // logged, but rate-limited
    pthread_mutex_unlock(&log_lock);
    struct http_response h;
    CHECK_EQ_INT(http(port, "GET", "/healthz", NULL, NULL, &h), 200);
    CHECK(h.body && strstr(h.body, "\"redis_connected\":false"));
    http_response_free(&h);
    // No token configured: policy updates are refused.
    CHECK_EQ_INT(http(port, "PUT", "/v1/policy", AUTH, "{\"max_depth\":4}", &h), 401);
    CHECK(h.body && strstr(h.body, "disabled"));
    http_response_free(&h);
}

TEST(malformed_messages_are_counted) {
    struct ctlsvc_config cfg = test_config(free_port()); // no Redis there: runs anyway
    cfg.http_token[0] = '\0';
    struct runner r;
    REQUIRE(runner_start(&r, &cfg));
    void *ctx = zmq_ctx_new();
    void *pub = zmq_socket(ctx, ZMQ_XPUB);
    int timeout = 3000, linger = 0;
    zmq_setsockopt(pub, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(pub, ZMQ_LINGER, &linger, sizeof linger);
    unsigned char sub_msg[16];
    bool ok = zmq_connect(pub, ctlsvc_metrics_endpoint(r.svc)) == 0 &&
              zmq_recv(pub, sub_msg, sizeof sub_msg, 0) >= 1;
    CHECK(ok);
    if (ok)
        malformed_body(pub, ctlsvc_http_port(r.svc));
    zmq_close(pub);
    zmq_ctx_term(ctx);
    runner_stop(&r);
    CHECK_EQ_INT(r.rc, SPECD_OK);
}

// A 400 answer naming `field`.
static void check_bad_put(int port, const char *body, const char *field) {
    struct http_response h;
    int status = http(port, "PUT", "/v1/policy", AUTH, body, &h);
    cJSON *j = status == 400 ? cJSON_Parse(h.body) : NULL;
    const cJSON *f = cJSON_GetObjectItem(j, "field"), *e = cJSON_GetObjectItem(j, "error");
    const char *leaf = strrchr(field, '.') ? strrchr(field, '.') + 1 : field;
    if (status != 400 || !cJSON_IsString(f) || strcmp(f->valuestring, field) != 0 ||
        !cJSON_IsString(e) || !e->valuestring[0] || !strstr(e->valuestring, leaf))
        TEST_FAIL_AT(__FILE__, __LINE__, "PUT %s: status %d body %s (want field %s)", body, status,
                     h.body ? h.body : "", field);
    cJSON_Delete(j);
    http_response_free(&h);
}

static void http_errors_body(int port, const struct ctlsvc_config *cfg) {
    struct http_response h;
    CHECK_EQ_INT(http(port, "GET", "/nope", NULL, NULL, &h), 404);
    CHECK(h.body && strstr(h.body, "\"error\""));
    http_response_free(&h);
    CHECK_EQ_INT(http(port, "DELETE", "/v1/policy", NULL, NULL, &h), 405);
    const char *allow = http_response_header(&h, "Allow");
    CHECK(allow && strstr(allow, "PUT"));
    http_response_free(&h);
    CHECK_EQ_INT(http(port, "POST", "/metrics", NULL, "{}", &h), 405);
    http_response_free(&h);
    CHECK_EQ_INT(http(port, "HEAD", "/healthz", NULL, NULL, &h), 200);
    CHECK_EQ_INT(h.body_len, 0);
    http_response_free(&h);

    CHECK_EQ_INT(http(port, "PUT", "/v1/policy", NULL, "{\"max_depth\":4}", &h), 401);
    CHECK(http_response_header(&h, "WWW-Authenticate") != NULL);
    http_response_free(&h);
    CHECK_EQ_INT(
        http(port, "PUT", "/v1/policy", "Authorization: Bearer nope\r\n", "{\"max_depth\":4}", &h),
        401);
    http_response_free(&h);
    CHECK_EQ_INT(http(port, "PUT", "/v1/policy", "Authorization: Basic " TOKEN "\r\n",
                      "{\"max_depth\":4}", &h),
                 401);
    http_response_free(&h);

    check_bad_put(port, "{\"max_depth\":", "");
    check_bad_put(port, "{\"low_threshold\":0.95}", "low_threshold");
    check_bad_put(port, "{\"max_depth\":\"x\"}", "max_depth");
    check_bad_put(port, "{\"nope\":1}", "nope");
    check_bad_put(port, "{\"overrides\":[{\"name\":\"c\",\"max_depth\":99}]}",
                  "overrides[0].max_depth");

    size_t big = 100 * 1024;
    char *body = malloc(big + 1);
    REQUIRE(body);
    memset(body, ' ', big);
    body[0] = '{';
    body[big - 1] = '}';
    body[big] = '\0';
    CHECK_EQ_INT(http(port, "PUT", "/v1/policy", AUTH, body, &h), 413);
    http_response_free(&h);
    free(body);

    // Nothing changed the policy.
    REQUIRE(http(port, "GET", "/v1/policy", NULL, NULL, &h) == 200);
    cJSON *got = cJSON_Parse(h.body);
    cJSON *want = ctlsvc_policy_to_cjson(&cfg->policy);
    CHECK(got && want && cJSON_Compare(got, want, 1));
    cJSON_Delete(got);
    cJSON_Delete(want);
    http_response_free(&h);

    char *m = get_metrics(port);
    REQUIRE(m);
    CHECK_EQ_INT(prom_text_check(m), 0);
    CHECK_NEAR(prom_text_value(m, "specd_controller_policy_updates_total{result=\"invalid\"}"), 5,
               0);
    CHECK_NEAR(prom_text_value(m, "specd_controller_policy_updates_total{result=\"unauthorized\"}"),
               3, 0);
    CHECK_NEAR(prom_text_value(m, "specd_controller_policy_updates_total{result=\"too_large\"}"), 1,
               0);
    CHECK_NEAR(prom_text_value(m, "specd_controller_policy_updates_total{result=\"accepted\"}"), 0,
               0);
    free(m);
}

TEST(http_errors) {
    struct ctlsvc_config cfg = test_config(free_port());
    struct runner r;
    REQUIRE(runner_start(&r, &cfg));
    http_errors_body(ctlsvc_http_port(r.svc), &cfg);
    runner_stop(&r);
}

// GET of the persisted policy straight from Redis (plain RESP over a socket), parsed; NULL when
// absent or unreachable.
static cJSON *stored_policy(int redis_port) {
    struct ctlsvc_config c = test_config(redis_port);
    struct rq_params p = rq_default_params();
    p.port = redis_port;
    p.prefix = c.redis_prefix;
    char err[256];
    rq *q = rq_new(&p, err, sizeof err);
    char *value = NULL;
    cJSON *j =
        q && rq_kv_get(q, c.policy_key, &value, NULL) == SPECD_OK ? cJSON_Parse(value) : NULL;
    free(value);
    rq_free(q);
    return j;
}

static double json_num(const cJSON *j, const char *name) {
    const cJSON *v = cJSON_GetObjectItem(j, name);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void persistence_body(struct redis_server *rs, const struct ctlsvc_config *cfg) {
    struct runner a, b;
    REQUIRE(runner_start(&a, cfg));
    struct http_response h;
    CHECK_EQ_INT(http(ctlsvc_http_port(a.svc), "PUT", "/v1/policy", AUTH,
                      "{\"max_depth\":6,\"target_acceptance\":0.8,"
                      "\"overrides\":[{\"name\":\"chat\",\"max_depth\":3}]}",
                      &h),
                 200);
    CHECK(h.body && strstr(h.body, "\"persisted\":true"));
    http_response_free(&h);
    cJSON *stored = stored_policy(rs->port);
    CHECK(stored && json_num(stored, "max_depth") == 6);
    cJSON_Delete(stored);
    runner_stop(&a);

    REQUIRE(runner_start(&b, cfg)); // a restarted controller keeps its tuning
    int port = ctlsvc_http_port(b.svc);
    REQUIRE(http(port, "GET", "/v1/policy", NULL, NULL, &h) == 200);
    cJSON *j = cJSON_Parse(h.body);
    http_response_free(&h);
    CHECK(j && json_num(j, "max_depth") == 6 && json_num(j, "target_acceptance") == 0.8);
    cJSON *o = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "overrides"), 0);
    CHECK(o && strcmp(cJSON_GetObjectItem(o, "name")->valuestring, "chat") == 0 &&
          json_num(o, "max_depth") == 3);
    cJSON_Delete(j);
    char *m = get_metrics(port);
    CHECK(m && strstr(m, "policy_source=\"redis\""));
    free(m);

    // Redis goes away: the change is in force at once, persisted when Redis is back (a restart
    // without persistence: the key must be written again).
    redis_server_kill(rs);
    CHECK_EQ_INT(http(port, "PUT", "/v1/policy", AUTH, "{\"max_depth\":7}", &h), 200);
    CHECK(h.body && strstr(h.body, "\"persisted\":false"));
    http_response_free(&h);
    m = get_metrics(port);
    CHECK(m && prom_text_value(m, "specd_controller_policy_persist_pending") == 1);
    CHECK(m && prom_text_value(m, "specd_controller_redis_connected") == 0);
    free(m);
    REQUIRE(http(port, "GET", "/v1/policy", NULL, NULL, &h) == 200);
    CHECK(h.body && strstr(h.body, "\"max_depth\":7"));
    http_response_free(&h);
    char err[512];
    REQUIRE(redis_server_restart(rs, err, sizeof err) == SPECD_OK);
    double pending = 1;
    for (int t = 0; t < 10000 && pending != 0; t += 50) {
        sleep_ms(50);
        m = get_metrics(port);
        pending = m ? prom_text_value(m, "specd_controller_policy_persist_pending") : 1;
        free(m);
    }
    CHECK_NEAR(pending, 0, 0);
    stored = stored_policy(rs->port);
    CHECK(stored && json_num(stored, "max_depth") == 7);
    cJSON_Delete(stored);
    runner_stop(&b);
}

TEST(policy_persists_across_restart_and_redis_outage) {
    struct redis_server rs;
    char err[512];
    int rc;
    if (!start_redis(&rs, err, sizeof err, &rc)) {
        if (rc == SPECD_SOFT_EMPTY)
            TEST_SKIP("%s", err);
        REQUIRE(rc == SPECD_OK);
    }
    struct ctlsvc_config cfg = test_config(rs.port);
    persistence_body(&rs, &cfg);
    redis_server_stop(&rs);
}

// ---- the binary --------------------------------------------------------------------------------

// build*/bin/specd-controller next to this test's build directory, else build/bin.
static const char *controller_binary(void) {
    static char path[1200];
    char exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0'; // .../build/tests
            slash = strrchr(exe, '/');
            if (slash) {
                *slash = '\0';
                snprintf(path, sizeof path, "%s/bin/specd-controller", exe);
                if (access(path, X_OK) == 0)
                    return path;
            }
        }
    }
    snprintf(path, sizeof path, "build/bin/specd-controller");
    return access(path, X_OK) == 0 ? path : NULL;
}

static bool write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

static bool write_yaml(const char *path, int http_port, int redis_port, const char *token,
                       int max_depth) {
    char y[1024];
    snprintf(y, sizeof y,
             "metrics_endpoint: tcp://127.0.0.1:%d\nsettings_endpoint: tcp://127.0.0.1:%d\n"
             "http:\n  address: 127.0.0.1\n  port: %d\n  token: %s\n"
             "redis:\n  port: %d\n  prefix: \"bintest:\"\nlog:\n  level: warn\n"
             "policy:\n  interval_ms: 100\n  max_depth: %d\n",
             free_port(), free_port(), http_port, token, redis_port, max_depth);
    return write_file(path, y);
}

static int put_with(int port, const char *token, const char *body) {
    char auth[128];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    struct http_response h;
    int status = http(port, "PUT", "/v1/policy", auth, body, &h);
    http_response_free(&h);
    return status;
}

static double policy_field(int port, const char *name) {
    struct http_response h;
    double v = NAN;
    if (http(port, "GET", "/v1/policy", NULL, NULL, &h) == 200) {
        cJSON *j = cJSON_Parse(h.body);
        v = json_num(j, name);
        cJSON_Delete(j);
    }
    http_response_free(&h);
    return v;
}

static void binary_body(pid_t pid, int port, const char *yaml, int redis_port) {
    struct http_response h;
    int status = 0;
    for (int t = 0; t < 5000 && status != 200; t += 50) {
        sleep_ms(50);
        status = http(port, "GET", "/healthz", NULL, NULL, &h);
        http_response_free(&h);
        REQUIRE(waitpid(pid, NULL, WNOHANG) == 0); // still running
    }
    REQUIRE(status == 200);
    CHECK_NEAR(policy_field(port, "max_depth"), 6, 0); // from the YAML file
    CHECK_NEAR(policy_field(port, "interval_ms"), 100, 0);
    CHECK_EQ_INT(put_with(port, "one", "{\"max_depth\":4}"), 200);
    CHECK_NEAR(policy_field(port, "max_depth"), 4, 0);

    // SIGHUP: new token, and the file's policy changed, so it applies.
    REQUIRE(write_yaml(yaml, port, redis_port, "two", 5));
    kill(pid, SIGHUP);
    status = 0;
    for (int t = 0; t < 3000 && status != 200; t += 50) {
        sleep_ms(50);
        status = put_with(port, "two", "{\"min_depth\":1}");
    }
    CHECK_EQ_INT(status, 200);
    CHECK_NEAR(policy_field(port, "max_depth"), 5, 0);
    CHECK_EQ_INT(put_with(port, "one", "{\"min_depth\":1}"), 401);

    // A broken file: the reload fails, the controller keeps running.
    REQUIRE(write_file(yaml, "http: [\n"));
    kill(pid, SIGHUP);
    double errors =
        wait_metric(port, "specd_controller_config_reloads_total{result=\"error\"}", 1, 3000);
    CHECK_NEAR(errors, 1, 0);
    CHECK_EQ_INT(http(port, "GET", "/healthz", NULL, NULL, &h), 200);
    http_response_free(&h);
}

TEST(binary_reloads_on_sighup_and_exits_on_sigterm) {
    const char *bin = controller_binary();
    if (!bin)
        TEST_SKIP("specd-controller is not built (make programs)");
    struct redis_server rs;
    char err[512];
    int rc;
    if (!start_redis(&rs, err, sizeof err, &rc)) {
        if (rc == SPECD_SOFT_EMPTY)
            TEST_SKIP("%s", err);
        REQUIRE(rc == SPECD_OK);
    }
    char yaml[] = "/tmp/specd-ctl-bin-XXXXXX", logpath[] = "/tmp/specd-ctl-log-XXXXXX";
    int yfd = mkstemp(yaml), lfd = mkstemp(logpath);
    REQUIRE(yfd >= 0 && lfd >= 0);
    close(yfd);
    int port = free_port();
    REQUIRE(write_yaml(yaml, port, rs.port, "one", 6));
    pid_t pid = fork();
    if (pid == 0) {
        dup2(lfd, 1);
        dup2(lfd, 2);
        execl(bin, bin, "--config", yaml, (char *)NULL);
        _exit(127);
    }
    close(lfd);
    REQUIRE(pid > 0);
    binary_body(pid, port, yaml, rs.port);
    kill(pid, SIGTERM);
    int wstatus = 0;
    pid_t done = 0;
    for (int t = 0; t < 5000 && done == 0; t += 20) {
        done = waitpid(pid, &wstatus, WNOHANG);
        if (done == 0)
            sleep_ms(20);
    }
    if (done == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &wstatus, 0);
    }
    CHECK(done == pid && WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    if (test_state_g.current_failed) { // show what the controller said
        FILE *f = fopen(logpath, "r");
        char line[512];
        while (f && fgets(line, sizeof line, f))
            fprintf(stderr, "  [controller] %s", line);
        if (f)
            fclose(f);
    }
    unlink(yaml);
    unlink(logpath);
    redis_server_stop(&rs);
}

int main(int argc, char **argv) {
    TEST_MAIN_BEGIN(argc, argv);
    log_set_level(LOG_LEVEL_INFO);
    log_set_sink(log_sink, NULL);
    TEST_RUN(end_to_end_settings_follow_metrics);
    TEST_RUN(malformed_messages_are_counted);
    TEST_RUN(http_errors);
    TEST_RUN(policy_persists_across_restart_and_redis_outage);
    TEST_RUN(binary_reloads_on_sighup_and_exits_on_sigterm);
    log_set_sink(NULL, NULL);
    return TEST_MAIN_END();
}
