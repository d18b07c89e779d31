// Topics, worker ids and sequence-number frames of the proto module.
#include <stdio.h>
#include <string.h>

#include "shared/proto.h"
#include "shared/status.h"

static bool id_char_ok(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

// Length of a valid id in s[0..max), or 0.
static size_t id_span(const char *s, size_t max) {
    size_t n = 0;
    while (n < max && s[n] != '\0') {
        if (!id_char_ok((unsigned char)s[n]))
            return 0;
        n++;
    }
    if (n == 0 || n >= PROTO_ID_CAP || (n == 3 && memcmp(s, "all", 3) == 0))
        return 0;
    return n;
}

bool proto_worker_id_valid(const char *id) {
    return id && id_span(id, PROTO_ID_CAP) > 0; // id_span stops at the NUL
}

static int topic_write(const char *prefix, const char *id, char *buf, size_t cap) {
    if (!buf)
        return SPECD_ERR_INVALID;
    int n = snprintf(buf, cap, "%s%s", prefix, id);
    if (n < 0 || (size_t)n >= cap) {
        if (cap > 0)
            buf[0] = '\0';
        return SPECD_ERR_INVALID;
    }
    return SPECD_OK;
}

int proto_topic_metrics(const char *worker_id, char *buf, size_t cap) {
    if (!proto_worker_id_valid(worker_id)) {
        if (buf && cap > 0)
            buf[0] = '\0';
        return SPECD_ERR_INVALID;
    }
    return topic_write("m.", worker_id, buf, cap);
}

int proto_topic_settings(const char *worker_id, char *buf, size_t cap) {
    if (!worker_id)
        return topic_write(PROTO_TOPIC_ALL, "", buf, cap);
    if (!proto_worker_id_valid(worker_id)) {
        if (buf && cap > 0)
            buf[0] = '\0';
        return SPECD_ERR_INVALID;
    }
    return topic_write("s.", worker_id, buf, cap);
}

int proto_topic_parse(const void *topic, size_t len, enum proto_topic_kind *kind,
                      char worker_id[PROTO_ID_CAP], char *err, size_t err_size) {
    const char *t = topic;
    if (!t || len < 3 || t[1] != '.' || (t[0] != 'm' && t[0] != 's'))
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "topic: expected \"m.<worker-id>\" or \"s.<worker-id>\" (%zu bytes)",
                          len);
    if (t[0] == 's' && len == 5 && memcmp(t, PROTO_TOPIC_ALL, 5) == 0) {
        *kind = PROTO_TOPIC_SETTINGS_ALL;
        worker_id[0] = '\0';
        return SPECD_OK;
    }
    size_t n = len - 2;
    if (n >= PROTO_ID_CAP || id_span(t + 2, n) != n)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "topic: bad worker id (1..%d chars of [A-Za-z0-9._-], not \"all\")",
                          PROTO_ID_CAP - 1);
    memcpy(worker_id, t + 2, n);
    worker_id[n] = '\0';
    *kind = t[0] == 'm' ? PROTO_TOPIC_METRICS : PROTO_TOPIC_SETTINGS_ONE;
    return SPECD_OK;
}

void proto_seq_encode(uint64_t seq, unsigned char out[PROTO_SEQ_BYTES]) {
    for (int i = PROTO_SEQ_BYTES - 1; i >= 0; i--) {
        out[i] = (unsigned char)(seq & 0xff);
        seq >>= 8;
    }
}

uint64_t proto_seq_decode(const unsigned char in[PROTO_SEQ_BYTES]) {
    uint64_t v = 0;
    for (int i = 0; i < PROTO_SEQ_BYTES; i++)
        v = (v << 8) | in[i];
    return v;
}
