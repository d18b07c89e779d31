// Tests of shared/zmq_msg.h with real ZeroMQ sockets over inproc:// and tcp://127.0.0.1 (a free
// port from the kernel): many messages both ways, loss accounting, drops under a full queue,
// prefix-filter collisions and malformed multipart messages.
#include <errno.h>
#include <time.h>
#include <zmq.h>

#include "shared/proto.h"
#include "shared/status.h"
#include "shared/zmq_msg.h"
#include "tests/test.h"

#define RECV_TIMEOUT_MS 5000 // a blocking receive that waits this long fails the test

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

// The message worker `w` publishes as number `seq`: every field derived from (w, seq).
static void make_metrics(struct proto_metrics_msg *msg, int w, uint64_t seq) {
    memset(msg, 0, sizeof *msg);
    snprintf(msg->worker_id, sizeof msg->worker_id, "w%d", w);
    snprintf(msg->model, sizeof msg->model, "target-%d", w);
    snprintf(msg->draft, sizeof msg->draft, "draft-%llu", (unsigned long long)(seq % 7));
    msg->timestamp_ms = 1700000000000ull + seq;
    msg->settings_epoch = seq / 10;
    msg->fallback = seq % 3 == 0;
    msg->queue_depth = (uint32_t)(seq % 17);
    msg->dropped = seq / 100;
    struct spec_step_metrics *m = &msg->m;
    m->step = seq * 3 + (uint64_t)w;
    m->batch_size = 1 + (uint32_t)(seq % 64);
    m->n_speculating = m->batch_size / 2;
    m->depth = (uint32_t)(seq % (SPEC_MAX_DEPTH + 1));
    for (uint32_t k = 0; k < m->depth; k++) {
        m->drafted_at[k] = m->n_speculating;
        m->accepted_at[k] = m->n_speculating >> (k + 1);
        m->drafted += m->drafted_at[k];
        m->accepted += m->accepted_at[k];
    }
    m->emitted = m->accepted + m->n_speculating;
    m->t_draft_ms = (double)(seq % 5) * 0.5;
    m->t_verify_ms = (double)(seq % 11) * 0.25;
    m->t_step_ms = m->t_draft_ms + m->t_verify_ms + 0.125;
    m->kv_blocks_total = 1024;
    m->kv_blocks_used = (uint32_t)(seq % 1025);
    m->n_classes = (uint32_t)(seq % 3);
    for (uint32_t i = 0; i < m->n_classes; i++) {
        snprintf(m->classes[i].name, sizeof m->classes[i].name, "c%u", i);
        m->classes[i].n_seqs = 2;
        m->classes[i].depth = i;
    }
}

static bool metrics_same(const struct proto_metrics_msg *a, const struct proto_metrics_msg *b) {
    // Both are fully written from zeroed memory, so padding compares equal too.
    return memcmp(a, b, sizeof *a) == 0;
}

// ---- socket fixtures -------------------------------------------------------------------------

struct link {
    void *ctx, *pub, *sub;
    char endpoint[256];
};

// Binds `binder` to a fresh inproc name or to a free TCP port on 127.0.0.1, and connects
// `connecter` to it.
static int link_connect(void *binder, void *connecter, bool tcp, char *endpoint, size_t cap) {
    static int inproc_counter; // test-only: unique inproc names within this process
    if (tcp)
        snprintf(endpoint, cap, "tcp://127.0.0.1:*");
    else
        snprintf(endpoint, cap, "inproc://zmsg-test-%d", ++inproc_counter);
    if (zmq_bind(binder, endpoint) != 0)
        return -1;
    size_t len = cap;
    if (zmq_getsockopt(binder, ZMQ_LAST_ENDPOINT, endpoint, &len) != 0)
        return -1;
    return zmq_connect(connecter, endpoint);
}

// Metrics direction: the controller's SUB binds, the worker's PUB connects.
static bool link_open(struct link *l, bool tcp, int hwm, bool nodrop, bool metrics) {
    memset(l, 0, sizeof *l);
    char err[256] = "";
    l->ctx = zmq_ctx_new();
    l->sub = zmq_socket(l->ctx, ZMQ_SUB);
    l->pub = zmq_socket(l->ctx, ZMQ_PUB);
    int timeout = RECV_TIMEOUT_MS;
    bool ok = l->ctx && l->sub && l->pub &&
              zmsg_configure_subscriber(l->sub, hwm, err, sizeof err) == SPECD_OK &&
              zmsg_configure_publisher(l->pub, hwm, nodrop, err, sizeof err) == SPECD_OK &&
              zmq_setsockopt(l->sub, ZMQ_RCVTIMEO, &timeout, sizeof timeout) == 0 &&
              (metrics ? zmsg_subscribe_metrics(l->sub, err, sizeof err)
                       : zmsg_subscribe_settings(l->sub, "w1", err, sizeof err)) == SPECD_OK;
    if (ok)
        ok = metrics ? link_connect(l->sub, l->pub, tcp, l->endpoint, sizeof l->endpoint) == 0
                     : link_connect(l->pub, l->sub, tcp, l->endpoint, sizeof l->endpoint) == 0;
    if (!ok)
        fprintf(stderr, "  link_open: %s / %s\n", err, zmq_strerror(zmq_errno()));
    return ok;
}

static void link_close(struct link *l) {
    if (l->pub)
        zmq_close(l->pub);
    if (l->sub)
        zmq_close(l->sub);
    if (l->ctx)
        zmq_ctx_term(l->ctx);
}

static bool readable(void *sock, int timeout_ms) {
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    return zmq_poll(&item, 1, timeout_ms) > 0;
}

// Discards whatever arrives until the socket has been quiet for 50 ms.
static void drain(void *sock) {
    while (readable(sock, 50)) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        zmq_msg_recv(&part, sock, ZMQ_DONTWAIT);
        zmq_msg_close(&part);
    }
}

// PUB/SUB drops what is published before the subscription reaches the publisher ("slow
// joiner"): publish probes until one arrives, then drain the rest.
static bool link_warm_up(struct link *l, bool metrics) {
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    bool ok = false;
    for (int i = 0; i < 500 && !ok; i++) {
        if (metrics) {
            struct proto_metrics_msg probe;
            make_metrics(&probe, 999, 0);
            zmsg_publish_metrics(l->pub, &probe, 0, &b, NULL, 0);
        } else {
            struct spec_settings s = {.max_depth = 4, .ttl_ms = 1};
            zmsg_publish_settings(l->pub, NULL, &s, &b, NULL, 0);
        }
        ok = readable(l->sub, 10);
    }
    drain(l->sub);
    msgpack_sbuffer_destroy(&b);
    return ok;
}

// ---- tests -----------------------------------------------------------------------------------

enum { N_WORKERS = 3, N_PER_WORKER = 1000 };

// Three workers publish N_PER_WORKER messages each (interleaved), leaving out a few sequence
// numbers; the controller side must get every other message intact and count the gaps.
static void round_trip(bool tcp) {
    struct link l;
    REQUIRE(link_open(&l, tcp, 100000, false, true));
    REQUIRE(link_warm_up(&l, true));
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    char err[256] = "";
    int sent = 0;
    for (uint64_t seq = 0; seq < N_PER_WORKER; seq++) {
        for (int w = 0; w < N_WORKERS; w++) {
            if ((w == 0 && seq >= 100 && seq < 103) || (w == 1 && seq == 500))
                continue; // "lost" on the way
            struct proto_metrics_msg msg;
            make_metrics(&msg, w, seq);
            int rc = zmsg_publish_metrics(l.pub, &msg, seq, &b, err, sizeof err);
            if (rc != SPECD_OK)
                TEST_FAIL_AT(__FILE__, __LINE__, "publish: %s", err);
            sent += rc == SPECD_OK;
        }
    }
    proto_seq_tracker *tracker = proto_seq_tracker_new(NULL);
    struct zmsg_message *scratch = malloc(sizeof *scratch);
    REQUIRE(tracker && scratch);
    int received = 0, wrong = 0;
    while (received < sent) {
        struct proto_metrics_msg got, want;
        uint64_t seq = 0;
        int rc = zmsg_recv_metrics(l.sub, 0, scratch, &got, &seq, err, sizeof err);
        if (rc != SPECD_OK) {
            TEST_FAIL_AT(__FILE__, __LINE__, "recv after %d of %d: %s", received, sent, err);
            break;
        }
        received++;
        int w = got.worker_id[1] - '0';
        make_metrics(&want, w, seq);
        wrong += !metrics_same(&got, &want);
        CHECK_EQ_INT(scratch->n_frames, 3);
        CHECK_EQ_INT(proto_seq_tracker_feed(tracker, got.worker_id, seq, NULL), SPECD_OK);
    }
    CHECK_EQ_INT(received, N_WORKERS * N_PER_WORKER - 4);
    CHECK_EQ_INT(wrong, 0);
    struct proto_seq_stats st[N_WORKERS];
    const uint64_t want_lost[N_WORKERS] = {3, 1, 0};
    for (int w = 0; w < N_WORKERS; w++) {
        char id[16];
        snprintf(id, sizeof id, "w%d", w);
        CHECK_EQ_INT(proto_seq_tracker_stats(tracker, id, &st[w]), SPECD_OK);
        CHECK(st[w].lost == want_lost[w]);
        CHECK(st[w].received == N_PER_WORKER - want_lost[w]);
        CHECK(st[w].restarts == 0);
    }
    CHECK_EQ_INT(zmsg_recv(l.sub, ZMQ_DONTWAIT, 3, scratch, err, sizeof err), SPECD_SOFT_EMPTY);
    free(scratch);
    proto_seq_tracker_free(tracker);
    msgpack_sbuffer_destroy(&b);
    link_close(&l);
}

TEST(metrics_round_trip_inproc) {
    round_trip(false);
}

TEST(metrics_round_trip_tcp) {
    round_trip(true);
}

// With ZMQ_XPUB_NODROP a full queue refuses the send (SPECD_SOFT_FULL). The worker counts the
// drop and still spends the sequence number, so the controller's gap count matches.
TEST(full_queue_reports_drops) {
    struct link l;
    REQUIRE(link_open(&l, false, 8, true, true));
    REQUIRE(link_warm_up(&l, true));
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    char err[256] = "";
    struct proto_metrics_msg msg;
    uint64_t seq = 0, drops = 0;
    int other = 0;
    for (; seq < 200; seq++) { // nobody reads meanwhile
        make_metrics(&msg, 1, seq);
        msg.dropped = drops;
        int rc = zmsg_publish_metrics(l.pub, &msg, seq, &b, err, sizeof err);
        drops += rc == SPECD_SOFT_FULL;
        other += rc != SPECD_OK && rc != SPECD_SOFT_FULL;
    }
    CHECK_EQ_INT(other, 0);
    CHECK(drops > 0 && drops < 200);
    CHECK(strstr(err, "would block"));

    proto_seq_tracker *tracker = proto_seq_tracker_new(NULL);
    struct zmsg_message *scratch = malloc(sizeof *scratch);
    REQUIRE(tracker && scratch);
    struct proto_metrics_msg got;
    uint64_t got_seq;
    int received = 0;
    while (zmsg_recv_metrics(l.sub, ZMQ_DONTWAIT, scratch, &got, &got_seq, err, sizeof err) ==
           SPECD_OK) {
        proto_seq_tracker_feed(tracker, got.worker_id, got_seq, NULL);
        received++;
    }
    CHECK(received > 0);
    CHECK_EQ_INT(received + drops, 200);
    // The queue has room again: the next message goes out and closes the gap.
    int rc = SPECD_SOFT_FULL;
    make_metrics(&msg, 1, seq);
    msg.dropped = drops;
    for (int i = 0; i < 100 && rc == SPECD_SOFT_FULL; i++) {
        rc = zmsg_publish_metrics(l.pub, &msg, seq, &b, err, sizeof err);
        if (rc == SPECD_SOFT_FULL)
            sleep_ms(10);
    }
    CHECK_EQ_INT(rc, SPECD_OK);
    REQUIRE(zmsg_recv_metrics(l.sub, 0, scratch, &got, &got_seq, err, sizeof err) == SPECD_OK);
    CHECK(got_seq == seq);
    CHECK(got.dropped == drops);
    struct proto_seq_update u;
    proto_seq_tracker_feed(tracker, got.worker_id, got_seq, &u);
    struct proto_seq_stats st;
    proto_seq_tracker_stats(tracker, "w1", &st);
    CHECK(st.lost == drops); // every dropped message is one gap, no more
    free(scratch);
    proto_seq_tracker_free(tracker);
    msgpack_sbuffer_destroy(&b);
    link_close(&l);
}

// Settings: the controller's PUB binds, the worker's SUB connects. "s.w1" is a prefix of
// "s.w10", so ZeroMQ delivers w10's settings to w1 too; zmsg_recv_settings skips them.
TEST(settings_reach_the_right_worker_tcp) {
    struct link l;
    REQUIRE(link_open(&l, true, 1000, false, false));
    REQUIRE(link_warm_up(&l, false));
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    char err[256] = "";
    struct spec_settings s = {.enabled = true,
                              .depth = 3,
                              .min_depth = 1,
                              .max_depth = 8,
                              .ttl_ms = 2000,
                              .n_classes = 1};
    strcpy(s.classes[0].name, "batch");
    const char *targets[4] = {"w10", "w2", NULL, "w1"};
    for (int i = 0; i < 4; i++) {
        s.epoch = (uint64_t)i + 1;
        CHECK_EQ_INT(zmsg_publish_settings(l.pub, targets[i], &s, &b, err, sizeof err), SPECD_OK);
    }
    struct zmsg_message *scratch = malloc(sizeof *scratch);
    REQUIRE(scratch);
    struct spec_settings got;
    bool broadcast = false;
    REQUIRE(zmsg_recv_settings(l.sub, 0, "w1", scratch, &got, &broadcast, err, sizeof err) ==
            SPECD_OK);
    CHECK(got.epoch == 3 && broadcast);
    REQUIRE(zmsg_recv_settings(l.sub, 0, "w1", scratch, &got, &broadcast, err, sizeof err) ==
            SPECD_OK);
    CHECK(got.epoch == 4 && !broadcast);
    CHECK_EQ_INT(got.depth, 3);
    CHECK_EQ_INT(got.ttl_ms, 2000);
    CHECK_EQ_STR(got.classes[0].name, "batch");
    CHECK_EQ_INT(
        zmsg_recv_settings(l.sub, ZMQ_DONTWAIT, "w1", scratch, &got, NULL, err, sizeof err),
        SPECD_SOFT_EMPTY);
    CHECK_EQ_INT(
        zmsg_recv_settings(l.sub, ZMQ_DONTWAIT, "all", scratch, &got, NULL, err, sizeof err),
        SPECD_ERR_INVALID);
    free(scratch);
    msgpack_sbuffer_destroy(&b);
    link_close(&l);
}

static void send_raw(void *sock, int n, const void *const *data, const size_t *len) {
    for (int i = 0; i < n; i++)
        zmq_send(sock, data[i], len[i], i + 1 < n ? ZMQ_SNDMORE : 0);
}

// Each bad message is dropped whole with a reason; the next good one is read intact.
TEST(malformed_multipart_messages) {
    struct link l;
    REQUIRE(link_open(&l, false, 1000, false, true));
    REQUIRE(link_warm_up(&l, true));
    msgpack_sbuffer good, other;
    msgpack_sbuffer_init(&good);
    msgpack_sbuffer_init(&other);
    struct proto_metrics_msg msg;
    make_metrics(&msg, 1, 42);
    REQUIRE(proto_metrics_encode(&msg, &good, NULL, 0) == SPECD_OK);
    make_metrics(&msg, 2, 42);
    REQUIRE(proto_metrics_encode(&msg, &other, NULL, 0) == SPECD_OK);
    unsigned char seq[8] = {0, 0, 0, 0, 0, 0, 0, 42};
    static char big[PROTO_BODY_MAX + 1];
    char long_topic[100] = "m.";
    memset(long_topic + 2, 'x', 90);
    struct {
        int n;
        const void *data[4];
        size_t len[4];
        const char *want;
    } cases[] = {
        {1, {"m.w1"}, {4}, "expected 3 frames, got 1"},
        {2, {"m.w1", good.data}, {4, good.size}, "expected 3 frames, got 2"},
        {4, {"m.w1", seq, good.data, "x"}, {4, 8, good.size, 1}, "expected 3 frames, got 4"},
        {3, {"m.w1", seq, good.data}, {4, 7, good.size}, "sequence frame is not 8 bytes"},
        {3, {"m.w1", seq, ""}, {4, 8, 0}, "body frame is empty or too large"},
        {3, {"m.w1", seq, big}, {4, 8, sizeof big}, "body frame is empty or too large"},
        {3, {long_topic, seq, good.data}, {92, 8, good.size}, "topic frame is empty or too long"},
        {3, {"m.w 1", seq, good.data}, {5, 8, good.size}, "topic: bad worker id"},
        {3, {"m.w1", seq, "\xc1"}, {4, 8, 1}, "metrics: malformed msgpack: invalid type byte"},
        {3, {"m.w1", seq, other.data}, {4, 8, other.size}, "differs from body worker_id \"w2\""},
        {3, {"m.w1", seq, good.data}, {4, 8, good.size}, NULL},
    };
    const int n_cases = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n_cases; i++)
        send_raw(l.pub, cases[i].n, cases[i].data, cases[i].len);
    struct zmsg_message *scratch = malloc(sizeof *scratch);
    REQUIRE(scratch);
    for (int i = 0; i < n_cases; i++) {
        struct proto_metrics_msg got;
        uint64_t got_seq = 0;
        char err[256] = "";
        int rc = zmsg_recv_metrics(l.sub, 0, scratch, &got, &got_seq, err, sizeof err);
        if (!cases[i].want) {
            CHECK_EQ_INT(rc, SPECD_OK);
            CHECK(got_seq == 42);
            make_metrics(&msg, 1, 42);
            CHECK(metrics_same(&got, &msg));
        } else if (rc != SPECD_ERR_FORMAT || !strstr(err, cases[i].want)) {
            TEST_FAIL_AT(__FILE__, __LINE__, "case %d: rc %s err \"%s\", want \"%s\"", i,
                         specd_status_name(rc), err, cases[i].want);
        }
    }
    char err[256];
    CHECK_EQ_INT(zmsg_recv(l.sub, ZMQ_DONTWAIT, 3, scratch, err, sizeof err), SPECD_SOFT_EMPTY);
    free(scratch);
    msgpack_sbuffer_destroy(&good);
    msgpack_sbuffer_destroy(&other);
    link_close(&l);
}

// Over TCP, ZMQ_MAXMSGSIZE makes the subscriber drop a peer that sends an over-large frame.
TEST(oversized_frame_over_tcp_is_refused) {
    struct link l;
    REQUIRE(link_open(&l, true, 1000, false, true));
    REQUIRE(link_warm_up(&l, true));
    static char big[PROTO_BODY_MAX + 1];
    unsigned char seq[8] = {0};
    const void *data[3] = {"m.w1", seq, big};
    size_t len[3] = {4, 8, PROTO_BODY_MAX}; // the largest accepted body goes through
    struct zmsg_message *scratch = malloc(sizeof *scratch);
    REQUIRE(scratch);
    char err[256] = "";
    send_raw(l.pub, 3, data, len);
    CHECK_EQ_INT(zmsg_recv(l.sub, 0, 3, scratch, err, sizeof err), SPECD_OK);
    CHECK_EQ_INT(scratch->body_len, PROTO_BODY_MAX);
    len[2] = sizeof big; // one byte more does not
    send_raw(l.pub, 3, data, len);
    CHECK(!readable(l.sub, 300));
    free(scratch);
    link_close(&l);
}

TEST(bad_arguments) {
    void *ctx = zmq_ctx_new();
    void *pub = zmq_socket(ctx, ZMQ_PUB);
    void *sub = zmq_socket(ctx, ZMQ_SUB);
    REQUIRE(ctx && pub && sub);
    char err[256];
    static char big[PROTO_BODY_MAX + 1];
    CHECK_EQ_INT(zmsg_send_metrics(pub, "", 0, "x", 1, err, sizeof err), SPECD_ERR_INVALID);
    CHECK_EQ_INT(zmsg_send_metrics(pub, "m.w1", 0, NULL, 1, err, sizeof err), SPECD_ERR_INVALID);
    CHECK_EQ_INT(zmsg_send_metrics(pub, "m.w1", 0, "x", 0, err, sizeof err), SPECD_ERR_INVALID);
    CHECK_EQ_INT(zmsg_send_metrics(pub, "m.w1", 0, big, sizeof big, err, sizeof err),
                 SPECD_ERR_INVALID);
    CHECK_EQ_INT(zmsg_send_settings(NULL, "s.all", "x", 1, err, sizeof err), SPECD_ERR_INVALID);
    // No subscriber: a PUB discards, which is not an error.
    CHECK_EQ_INT(zmsg_send_metrics(pub, "m.w1", 0, "x", 1, err, sizeof err), SPECD_OK);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    struct proto_metrics_msg msg;
    make_metrics(&msg, 1, 1);
    msg.m.depth = SPEC_MAX_DEPTH + 1;
    CHECK_EQ_INT(zmsg_publish_metrics(pub, &msg, 1, &b, err, sizeof err), SPECD_ERR_INVALID);
    struct spec_settings s = {.max_depth = 4, .ttl_ms = 1};
    CHECK_EQ_INT(zmsg_publish_settings(pub, "bad id", &s, &b, err, sizeof err), SPECD_ERR_INVALID);
    CHECK_EQ_INT(zmsg_subscribe_settings(sub, "all", err, sizeof err), SPECD_ERR_INVALID);
    CHECK_EQ_INT(zmsg_configure_publisher(pub, 0, false, err, sizeof err), SPECD_ERR_INVALID);
    CHECK_EQ_INT(zmsg_configure_subscriber(NULL, 10, err, sizeof err), SPECD_ERR_INVALID);
    struct zmsg_message *scratch = malloc(sizeof *scratch);
    REQUIRE(scratch);
    CHECK_EQ_INT(zmsg_recv(sub, ZMQ_DONTWAIT, 3, scratch, err, sizeof err), SPECD_SOFT_EMPTY);
    CHECK_EQ_INT(zmsg_recv(sub, ZMQ_DONTWAIT, 4, scratch, err, sizeof err), SPECD_ERR_INVALID);
    // A terminated context is a hard error, not "nothing waiting".
    zmq_ctx_shutdown(ctx);
    CHECK_EQ_INT(zmsg_recv(sub, 0, 3, scratch, err, sizeof err), SPECD_ERR_IO);
    free(scratch);
    msgpack_sbuffer_destroy(&b);
    zmq_close(pub);
    zmq_close(sub);
    zmq_ctx_term(ctx);
}

int main(int argc, char **argv) {
    TEST_MAIN_BEGIN(argc, argv);
    TEST_RUN(metrics_round_trip_inproc);
    TEST_RUN(metrics_round_trip_tcp);
    TEST_RUN(full_queue_reports_drops);
    TEST_RUN(settings_reach_the_right_worker_tcp);
    TEST_RUN(malformed_multipart_messages);
    TEST_RUN(oversized_frame_over_tcp_is_refused);
    TEST_RUN(bad_arguments);
    return TEST_MAIN_END();
}
