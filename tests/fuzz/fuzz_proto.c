// libFuzzer target for the wire protocol decoders (shared/proto.h). The first input byte picks
// the parser, the rest is the untrusted frame:
//   0: metrics body   1: settings body   2: topic frame + sequence frame   3: raw precheck
// Whatever decodes must pass the validator, encode again and decode to the same struct.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shared/proto.h"
#include "shared/proto_mp.h"
#include "shared/status.h"

#define FUZZ_REQUIRE(cond)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_proto: property failed: %s\n", #cond);                           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_status(int rc) {
    FUZZ_REQUIRE(rc == SPECD_OK || rc == SPECD_ERR_FORMAT || rc == SPECD_ERR_UNSUPPORTED);
}

static void fuzz_metrics(const uint8_t *data, size_t size) {
    struct proto_metrics_msg a, b;
    char err[256];
    int rc = proto_metrics_decode(data, size, &a, err, sizeof err);
    check_status(rc);
    if (rc != SPECD_OK)
        return;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    FUZZ_REQUIRE(proto_metrics_validate(&a, err, sizeof err) == SPECD_OK);
    FUZZ_REQUIRE(proto_metrics_encode(&a, &buf, err, sizeof err) == SPECD_OK);
    FUZZ_REQUIRE(proto_metrics_decode(buf.data, buf.size, &b, err, sizeof err) == SPECD_OK);
    FUZZ_REQUIRE(memcmp(&a, &b, sizeof a) == 0);
    msgpack_sbuffer_destroy(&buf);
}

static void fuzz_settings(const uint8_t *data, size_t size) {
    struct spec_settings a, b;
    char err[256];
    int rc = proto_settings_decode(data, size, &a, err, sizeof err);
    check_status(rc);
    if (rc != SPECD_OK)
        return;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    FUZZ_REQUIRE(proto_settings_validate(&a, err, sizeof err) == SPECD_OK);
    FUZZ_REQUIRE(proto_settings_encode(&a, &buf, err, sizeof err) == SPECD_OK);
    FUZZ_REQUIRE(proto_settings_decode(buf.data, buf.size, &b, err, sizeof err) == SPECD_OK);
    FUZZ_REQUIRE(memcmp(&a, &b, sizeof a) == 0);
    msgpack_sbuffer_destroy(&buf);
}

static void fuzz_topic(const uint8_t *data, size_t size) {
    enum proto_topic_kind kind;
    char id[PROTO_ID_CAP], topic[PROTO_TOPIC_CAP];
    int rc = proto_topic_parse(data, size, &kind, id, NULL, 0);
    FUZZ_REQUIRE(rc == SPECD_OK || rc == SPECD_ERR_FORMAT);
    if (rc == SPECD_OK) { // building the topic again gives the same bytes
        if (kind == PROTO_TOPIC_METRICS)
            FUZZ_REQUIRE(proto_topic_metrics(id, topic, sizeof topic) == SPECD_OK);
        else
            FUZZ_REQUIRE(proto_topic_settings(kind == PROTO_TOPIC_SETTINGS_ALL ? NULL : id, topic,
                                              sizeof topic) == SPECD_OK);
        FUZZ_REQUIRE(strlen(topic) == size && memcmp(topic, data, size) == 0);
    }
    if (size >= PROTO_SEQ_BYTES) {
        unsigned char back[PROTO_SEQ_BYTES];
        proto_seq_encode(proto_seq_decode(data), back);
        FUZZ_REQUIRE(memcmp(back, data, PROTO_SEQ_BYTES) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    uint8_t which = data[0] % 4;
    data++;
    size--;
    switch (which) {
    case 0:
        fuzz_metrics(data, size);
        break;
    case 1:
        fuzz_settings(data, size);
        break;
    case 2:
        fuzz_topic(data, size);
        break;
    default: {
        int rc = proto_mp_precheck(data, size, PROTO_MP_MAX_DEPTH, NULL, 0);
        FUZZ_REQUIRE(rc == SPECD_OK || rc == SPECD_ERR_FORMAT);
        if (rc == SPECD_OK && size > 0) { // precheck agrees with msgpack-c
            msgpack_unpacked up;
            msgpack_unpacked_init(&up);
            size_t off = 0;
            msgpack_unpack_return r = msgpack_unpack_next(&up, (const char *)data, size, &off);
            FUZZ_REQUIRE(r == MSGPACK_UNPACK_SUCCESS && off == size);
            msgpack_unpacked_destroy(&up);
        }
    }
    }
    return 0;
}
