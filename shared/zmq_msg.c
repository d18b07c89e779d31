#include "shared/zmq_msg.h"

#include <errno.h>
#include <string.h>
#include <zmq.h>

#include "shared/status.h"

// ---- socket setup ----------------------------------------------------------------------------

static int set_int(void *sock, int option, int value, const char *name, char *err,
                   size_t err_size) {
    if (zmq_setsockopt(sock, option, &value, sizeof value) != 0)
        return specd_fail(err, err_size, SPECD_ERR_IO, "zmq_setsockopt(%s): %s", name,
                          zmq_strerror(zmq_errno()));
    return SPECD_OK;
}

int zmsg_configure_publisher(void *sock, int sndhwm, bool nodrop, char *err, size_t err_size) {
    if (!sock || sndhwm <= 0)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "zmsg: bad publisher arguments");
    int rc = set_int(sock, ZMQ_SNDHWM, sndhwm, "ZMQ_SNDHWM", err, err_size);
    if (rc == SPECD_OK)
        rc = set_int(sock, ZMQ_LINGER, 0, "ZMQ_LINGER", err, err_size);
    if (rc == SPECD_OK && nodrop)
        rc = set_int(sock, ZMQ_XPUB_NODROP, 1, "ZMQ_XPUB_NODROP", err, err_size);
    return rc;
}

int zmsg_configure_subscriber(void *sock, int rcvhwm, char *err, size_t err_size) {
    if (!sock || rcvhwm <= 0)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "zmsg: bad subscriber arguments");
    int rc = set_int(sock, ZMQ_RCVHWM, rcvhwm, "ZMQ_RCVHWM", err, err_size);
    if (rc == SPECD_OK)
        rc = set_int(sock, ZMQ_LINGER, 0, "ZMQ_LINGER", err, err_size);
    int64_t max = PROTO_BODY_MAX;
    if (rc == SPECD_OK && zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max, sizeof max) != 0)
        rc = specd_fail(err, err_size, SPECD_ERR_IO, "zmq_setsockopt(ZMQ_MAXMSGSIZE): %s",
                        zmq_strerror(zmq_errno()));
    return rc;
}

static int subscribe(void *sock, const char *prefix, char *err, size_t err_size) {
    if (zmq_setsockopt(sock, ZMQ_SUBSCRIBE, prefix, strlen(prefix)) != 0)
        return specd_fail(err, err_size, SPECD_ERR_IO, "zmq_setsockopt(ZMQ_SUBSCRIBE, %s): %s",
                          prefix, zmq_strerror(zmq_errno()));
    return SPECD_OK;
}

int zmsg_subscribe_metrics(void *sock, char *err, size_t err_size) {
    return subscribe(sock, "m.", err, err_size);
}

int zmsg_subscribe_settings(void *sock, const char *worker_id, char *err, size_t err_size) {
    char topic[PROTO_TOPIC_CAP];
    if (!worker_id || proto_topic_settings(worker_id, topic, sizeof topic) != SPECD_OK)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "zmsg: bad worker id");
    int rc = subscribe(sock, topic, err, err_size);
    return rc == SPECD_OK ? subscribe(sock, PROTO_TOPIC_ALL, err, err_size) : rc;
}

// ---- sending ---------------------------------------------------------------------------------

static int send_frames(void *sock, const void *const *data, const size_t *len, int n, char *err,
                       size_t err_size) {
    for (int i = 0; i < n; i++) {
        int flags = ZMQ_DONTWAIT | (i + 1 < n ? ZMQ_SNDMORE : 0);
        if (zmq_send(sock, data[i], len[i], flags) >= 0)
            continue;
        int e = zmq_errno();
        if (i > 0)
            return specd_fail(err, err_size, SPECD_ERR_STATE,
                              "zmq_send: frame %d of %d failed (%s); socket is mid-message, "
                              "close it",
                              i + 1, n, zmq_strerror(e));
        if (e == EAGAIN || e == EINTR)
            return specd_fail(err, err_size, SPECD_SOFT_FULL, "zmq_send: would block (dropped)");
        return specd_fail(err, err_size, SPECD_ERR_IO, "zmq_send: %s", zmq_strerror(e));
    }
    return SPECD_OK;
}

static int check_send_args(void *sock, const char *topic, const void *body, size_t body_len,
                           char *err, size_t err_size) {
    if (!sock || !topic || !topic[0] || strlen(topic) >= PROTO_TOPIC_CAP)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "zmsg: bad socket or topic");
    if (!body || body_len == 0 || body_len > PROTO_BODY_MAX)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "zmsg: body of %zu bytes (want 1..%d)",
                          body_len, PROTO_BODY_MAX);
    return SPECD_OK;
}

int zmsg_send_metrics(void *sock, const char *topic, uint64_t seq, const void *body,
                      size_t body_len, char *err, size_t err_size) {
    int rc = check_send_args(sock, topic, body, body_len, err, err_size);
    if (rc != SPECD_OK)
        return rc;
    unsigned char seq_bytes[PROTO_SEQ_BYTES];
    proto_seq_encode(seq, seq_bytes);
    const void *data[3] = {topic, seq_bytes, body};
    const size_t len[3] = {strlen(topic), PROTO_SEQ_BYTES, body_len};
    return send_frames(sock, data, len, 3, err, err_size);
}

int zmsg_send_settings(void *sock, const char *topic, const void *body, size_t body_len, char *err,
                       size_t err_size) {
    int rc = check_send_args(sock, topic, body, body_len, err, err_size);
    if (rc != SPECD_OK)
        return rc;
    const void *data[2] = {topic, body};
    const size_t len[2] = {strlen(topic), body_len};
    return send_frames(sock, data, len, 2, err, err_size);
}

// ---- receiving -------------------------------------------------------------------------------

// Checks frame `index` (0-based) of a message expected to have `want` frames and copies it into
// out. Returns NULL, or why the frame is unacceptable.
static const char *take_frame(unsigned index, unsigned want, const void *data, size_t size,
                              struct zmsg_message *out) {
    if (index >= want)
        return NULL; // counted, reported as a frame-count error
    if (index == 0) {
        if (size == 0 || size >= PROTO_TOPIC_CAP)
            return "topic frame is empty or too long";
        memcpy(out->topic, data, size);
        out->topic[size] = '\0';
        out->topic_len = size;
    } else if (index + 1 < want) {
        if (size != PROTO_SEQ_BYTES)
            return "sequence frame is not 8 bytes";
        out->seq = proto_seq_decode(data);
    } else {
        if (size == 0 || size > PROTO_BODY_MAX)
            return "body frame is empty or too large";
        memcpy(out->body, data, size);
        out->body_len = size;
    }
    return NULL;
}

int zmsg_recv(void *sock, int flags, unsigned want_frames, struct zmsg_message *out, char *err,
              size_t err_size) {
    if (!sock || !out || want_frames < 2 || want_frames > 3)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "zmsg_recv: bad arguments");
    out->topic[0] = '\0';
    out->topic_len = out->body_len = 0;
    out->seq = 0;
    const char *problem = NULL;
    unsigned n = 0;
    for (int more = 1; more;) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        // Later frames of a message arrive together with the first: never wait for them.
        if (zmq_msg_recv(&part, sock, n == 0 ? flags : ZMQ_DONTWAIT) < 0) {
            int e = zmq_errno();
            zmq_msg_close(&part);
            if (n == 0 && (e == EAGAIN || e == EINTR))
                return specd_fail(err, err_size, SPECD_SOFT_EMPTY, "zmsg_recv: nothing waiting");
            return specd_fail(err, err_size, SPECD_ERR_IO, "zmq_msg_recv: %s", zmq_strerror(e));
        }
        const char *why = take_frame(n, want_frames, zmq_msg_data(&part), zmq_msg_size(&part), out);
        if (!problem)
            problem = why;
        more = zmq_msg_more(&part);
        zmq_msg_close(&part);
        n++;
    }
    out->n_frames = n;
    if (n != want_frames)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "zmsg_recv: expected %u frames, got %u (message dropped)", want_frames,
                          n);
    if (problem)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "zmsg_recv: %s (message dropped)",
                          problem);
    return SPECD_OK;
}

// ---- whole messages --------------------------------------------------------------------------

int zmsg_publish_metrics(void *sock, const struct proto_metrics_msg *msg, uint64_t seq,
                         msgpack_sbuffer *scratch, char *err, size_t err_size) {
    int rc = proto_metrics_encode(msg, scratch, err, err_size);
    if (rc != SPECD_OK)
        return rc;
    char topic[PROTO_TOPIC_CAP];
    if (proto_topic_metrics(msg->worker_id, topic, sizeof topic) != SPECD_OK)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "zmsg: bad worker id");
    return zmsg_send_metrics(sock, topic, seq, scratch->data, scratch->size, err, err_size);
}

int zmsg_recv_metrics(void *sock, int flags, struct zmsg_message *scratch,
                      struct proto_metrics_msg *out, uint64_t *seq, char *err, size_t err_size) {
    int rc = zmsg_recv(sock, flags, ZMSG_FRAMES_METRICS, scratch, err, err_size);
    if (rc != SPECD_OK)
        return rc;
    enum proto_topic_kind kind;
    char id[PROTO_ID_CAP];
    rc = proto_topic_parse(scratch->topic, scratch->topic_len, &kind, id, err, err_size);
    if (rc != SPECD_OK)
        return rc;
    if (kind != PROTO_TOPIC_METRICS)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "zmsg: topic \"%s\" is not metrics",
                          scratch->topic);
    rc = proto_metrics_decode(scratch->body, scratch->body_len, out, err, err_size);
    if (rc != SPECD_OK)
        return rc;
    if (strcmp(id, out->worker_id) != 0)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "zmsg: topic worker \"%s\" differs from body worker_id \"%s\"", id,
                          out->worker_id);
    if (seq)
        *seq = scratch->seq;
    return SPECD_OK;
}

int zmsg_publish_settings(void *sock, const char *worker_id, const struct spec_settings *s,
                          msgpack_sbuffer *scratch, char *err, size_t err_size) {
    char topic[PROTO_TOPIC_CAP];
    if (proto_topic_settings(worker_id, topic, sizeof topic) != SPECD_OK)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "zmsg: bad worker id");
    int rc = proto_settings_encode(s, scratch, err, err_size);
    if (rc != SPECD_OK)
        return rc;
    return zmsg_send_settings(sock, topic, scratch->data, scratch->size, err, err_size);
}

int zmsg_recv_settings(void *sock, int flags, const char *worker_id, struct zmsg_message *scratch,
                       struct spec_settings *out, bool *broadcast, char *err, size_t err_size) {
    if (!proto_worker_id_valid(worker_id))
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "zmsg: bad worker id");
    for (;;) {
        int rc = zmsg_recv(sock, flags, ZMSG_FRAMES_SETTINGS, scratch, err, err_size);
        if (rc != SPECD_OK)
            return rc;
        enum proto_topic_kind kind;
        char id[PROTO_ID_CAP];
        rc = proto_topic_parse(scratch->topic, scratch->topic_len, &kind, id, err, err_size);
        if (rc != SPECD_OK)
            return rc;
        if (kind == PROTO_TOPIC_METRICS)
            return specd_fail(err, err_size, SPECD_ERR_FORMAT, "zmsg: topic \"%s\" is not settings",
                              scratch->topic);
        if (kind == PROTO_TOPIC_SETTINGS_ONE && strcmp(id, worker_id) != 0)
            continue; // another worker's, let through by the prefix filter
        if (broadcast)
            *broadcast = kind == PROTO_TOPIC_SETTINGS_ALL;
        return proto_settings_decode(scratch->body, scratch->body_len, out, err, err_size);
    }
}
