// Tests of the wire protocol codec (shared/proto.h): round trips of every field, hand-computed
// byte vectors, non-canonical encodings another msgpack library may produce, each malformed case
// with its message, random and mutated bytes, topics, sequence frames and the loss tracker.
// The ZeroMQ side is in test_zmq_msg.c.
#include <float.h>
#include <stdint.h>

#include "shared/check.h"
#include "shared/proto.h"
#include "shared/status.h"
#include "tests/test.h"

// ---- reference messages ----------------------------------------------------------------------

// Every field set, none zero where the type allows, values past 32 bits where the type is 64-bit.
static void full_metrics(struct proto_metrics_msg *msg) {
    memset(msg, 0, sizeof *msg);
    strcpy(msg->worker_id, "gpu-node7.worker_3");
    strcpy(msg->model, "qwen2.5-0.5b-instruct Q8_0");
    strcpy(msg->draft, "ngram(3)");
    msg->timestamp_ms = 1732350000123ull;
    msg->settings_epoch = 0x1122334455667788ull;
    msg->fallback = true;
    msg->queue_depth = 4000000000u;
    msg->dropped = 5000000000ull;
    struct spec_step_metrics *m = &msg->m;
    m->step = 123456789012ull;
    m->batch_size = 48;
    m->n_speculating = 40;
    m->depth = SPEC_MAX_DEPTH;
    m->drafted = 500;
    m->accepted = 321;
    m->emitted = 361;
    m->prefill_tokens = 2048;
    for (int k = 0; k < SPEC_MAX_DEPTH; k++) {
        m->drafted_at[k] = 40 - k;
        m->accepted_at[k] = 30 - k;
    }
    m->t_draft_ms = 1.25;
    m->t_verify_ms = 7.0625;
    m->t_step_ms = 9.3;
    m->kv_blocks_used = 777;
    m->kv_blocks_total = 4096;
    m->preemptions = 2;
    m->n_classes = SPEC_MAX_CLASSES;
    for (int i = 0; i < SPEC_MAX_CLASSES; i++) {
        struct spec_class_metrics *c = &m->classes[i];
        snprintf(c->name, sizeof c->name, "class-%d", i);
        c->n_seqs = 6 + i;
        c->n_speculating = 5 + i;
        c->depth = (uint32_t)(2 * i);
        c->drafted = 10 + i;
        c->accepted = 5 + i;
        c->emitted = 11 + i;
        for (uint32_t k = 0; k < c->depth; k++) {
            c->drafted_at[k] = 5;
            c->accepted_at[k] = 5 - k % 3;
        }
    }
}

static void full_settings(struct spec_settings *s) {
    memset(s, 0, sizeof *s);
    s->epoch = 0xfedcba9876543210ull;
    s->enabled = true;
    s->depth = 6;
    s->min_depth = 2;
    s->max_depth = SPEC_MAX_DEPTH;
    s->ttl_ms = 4000000000u;
    s->n_classes = SPEC_MAX_CLASSES;
    for (int i = 0; i < SPEC_MAX_CLASSES; i++) {
        snprintf(s->classes[i].name, sizeof s->classes[i].name, "cls_%d", i);
        s->classes[i].enabled = i % 2 == 0;
        s->classes[i].depth = i % 2 == 0 ? (uint32_t)(2 + i) : 0;
    }
}

static void check_u32s_equal(const uint32_t *a, const uint32_t *b, const char *what) {
    for (int k = 0; k < SPEC_MAX_DEPTH; k++)
        if (a[k] != b[k])
            TEST_FAIL_AT(__FILE__, __LINE__, "%s[%d]: %u != %u", what, k, a[k], b[k]);
}

static void check_metrics_equal(const struct proto_metrics_msg *a,
                                const struct proto_metrics_msg *b) {
    CHECK_EQ_STR(a->worker_id, b->worker_id);
    CHECK_EQ_STR(a->model, b->model);
    CHECK_EQ_STR(a->draft, b->draft);
    CHECK(a->timestamp_ms == b->timestamp_ms);
    CHECK(a->settings_epoch == b->settings_epoch);
    CHECK_EQ_INT(a->fallback, b->fallback);
    CHECK(a->queue_depth == b->queue_depth);
    CHECK(a->dropped == b->dropped);
    const struct spec_step_metrics *x = &a->m, *y = &b->m;
    CHECK(x->step == y->step);
    CHECK_EQ_INT(x->batch_size, y->batch_size);
    CHECK_EQ_INT(x->n_speculating, y->n_speculating);
    CHECK_EQ_INT(x->depth, y->depth);
    CHECK_EQ_INT(x->drafted, y->drafted);
    CHECK_EQ_INT(x->accepted, y->accepted);
    CHECK_EQ_INT(x->emitted, y->emitted);
    CHECK_EQ_INT(x->prefill_tokens, y->prefill_tokens);
    check_u32s_equal(x->drafted_at, y->drafted_at, "drafted_at");
    check_u32s_equal(x->accepted_at, y->accepted_at, "accepted_at");
    CHECK(x->t_draft_ms == y->t_draft_ms);
    CHECK(x->t_verify_ms == y->t_verify_ms);
    CHECK(x->t_step_ms == y->t_step_ms);
    CHECK_EQ_INT(x->kv_blocks_used, y->kv_blocks_used);
    CHECK_EQ_INT(x->kv_blocks_total, y->kv_blocks_total);
    CHECK_EQ_INT(x->preemptions, y->preemptions);
    CHECK_EQ_INT(x->n_classes, y->n_classes);
    for (uint32_t i = 0; i < x->n_classes && i < SPEC_MAX_CLASSES; i++) {
        const struct spec_class_metrics *c = &x->classes[i], *d = &y->classes[i];
        CHECK_EQ_STR(c->name, d->name);
        CHECK_EQ_INT(c->n_seqs, d->n_seqs);
        CHECK_EQ_INT(c->n_speculating, d->n_speculating);
        CHECK_EQ_INT(c->depth, d->depth);
        CHECK_EQ_INT(c->drafted, d->drafted);
        CHECK_EQ_INT(c->accepted, d->accepted);
        CHECK_EQ_INT(c->emitted, d->emitted);
        check_u32s_equal(c->drafted_at, d->drafted_at, "class drafted_at");
        check_u32s_equal(c->accepted_at, d->accepted_at, "class accepted_at");
    }
}

static void check_settings_equal(const struct spec_settings *a, const struct spec_settings *b) {
    CHECK(a->epoch == b->epoch);
    CHECK_EQ_INT(a->enabled, b->enabled);
    CHECK_EQ_INT(a->depth, b->depth);
    CHECK_EQ_INT(a->min_depth, b->min_depth);
    CHECK_EQ_INT(a->max_depth, b->max_depth);
    CHECK(a->ttl_ms == b->ttl_ms);
    CHECK_EQ_INT(a->n_classes, b->n_classes);
    for (uint32_t i = 0; i < a->n_classes && i < SPEC_MAX_CLASSES; i++) {
        CHECK_EQ_STR(a->classes[i].name, b->classes[i].name);
        CHECK_EQ_INT(a->classes[i].enabled, b->classes[i].enabled);
        CHECK_EQ_INT(a->classes[i].depth, b->classes[i].depth);
    }
}

// ---- editing encoded messages ----------------------------------------------------------------

// A message unpacked into msgpack objects that a test edits and packs again.
struct tree {
    msgpack_unpacked up;
};

static msgpack_object *tree_load(struct tree *t, const char *data, size_t size) {
    msgpack_unpacked_init(&t->up);
    size_t off = 0;
    SPECD_CHECK(msgpack_unpack_next(&t->up, data, size, &off) == MSGPACK_UNPACK_SUCCESS);
    return &t->up.data;
}

static void tree_free(struct tree *t) {
    msgpack_unpacked_destroy(&t->up);
}

static msgpack_object o_uint(uint64_t v) {
    msgpack_object o = {.type = MSGPACK_OBJECT_POSITIVE_INTEGER};
    o.via.u64 = v;
    return o;
}
static msgpack_object o_neg(int64_t v) {
    msgpack_object o = {.type = MSGPACK_OBJECT_NEGATIVE_INTEGER};
    o.via.i64 = v;
    return o;
}
static msgpack_object o_f64(double v) {
    msgpack_object o = {.type = MSGPACK_OBJECT_FLOAT64};
    o.via.f64 = v;
    return o;
}
static msgpack_object o_bool(bool v) {
    msgpack_object o = {.type = MSGPACK_OBJECT_BOOLEAN};
    o.via.boolean = v;
    return o;
}
static msgpack_object o_nil(void) {
    return (msgpack_object){.type = MSGPACK_OBJECT_NIL};
}
static msgpack_object o_strn(const char *s, size_t n) {
    msgpack_object o = {.type = MSGPACK_OBJECT_STR};
    o.via.str.ptr = s;
    o.via.str.size = (uint32_t)n;
    return o;
}
static msgpack_object o_str(const char *s) {
    return o_strn(s, strlen(s));
}
// An array of n copies of `item`, allocated in the tree's zone.
static msgpack_object o_array(struct tree *t, uint32_t n, msgpack_object item) {
    msgpack_object o = {.type = MSGPACK_OBJECT_ARRAY};
    o.via.array.size = n;
    o.via.array.ptr = msgpack_zone_malloc(t->up.zone, (n ? n : 1) * sizeof(msgpack_object));
    for (uint32_t i = 0; i < n; i++)
        o.via.array.ptr[i] = item;
    return o;
}

// Resolves "a.2.b" (map keys and array indexes) to an object, or NULL.
static msgpack_object *tree_at(msgpack_object *o, const char *path) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *tok = strtok(buf, "."); tok && o; tok = strtok(NULL, ".")) {
        msgpack_object *next = NULL;
        if (o->type == MSGPACK_OBJECT_ARRAY) {
            unsigned long i = strtoul(tok, NULL, 10);
            next = i < o->via.array.size ? &o->via.array.ptr[i] : NULL;
        } else if (o->type == MSGPACK_OBJECT_MAP) {
            for (uint32_t i = 0; i < o->via.map.size && !next; i++) {
                msgpack_object *k = &o->via.map.ptr[i].key;
                if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(tok) &&
                    memcmp(k->via.str.ptr, tok, k->via.str.size) == 0)
                    next = &o->via.map.ptr[i].val;
            }
        }
        o = next;
    }
    return o;
}

static void tree_set(msgpack_object *root, const char *path, msgpack_object value) {
    msgpack_object *o = tree_at(root, path);
    if (!o) {
        fprintf(stderr, "test bug: no %s\n", path);
        abort();
    }
    *o = value;
}

// Removes key `key` from the map at `path` ("" for the root).
static void tree_drop(msgpack_object *root, const char *path, const char *key) {
    msgpack_object *map = path[0] ? tree_at(root, path) : root;
    for (uint32_t i = 0; map && i < map->via.map.size; i++) {
        msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->via.str.size == strlen(key) && memcmp(k->via.str.ptr, key, k->via.str.size) == 0) {
            memmove(&map->via.map.ptr[i], &map->via.map.ptr[i + 1],
                    (map->via.map.size - i - 1) * sizeof(msgpack_object_kv));
            map->via.map.size--;
            return;
        }
    }
    fprintf(stderr, "test bug: no key %s in %s\n", key, path);
    abort();
}

// Appends key -> value to the map at `path` ("" for the root).
static void tree_add(struct tree *t, msgpack_object *root, const char *path, msgpack_object key,
                     msgpack_object value) {
    msgpack_object *map = path[0] ? tree_at(root, path) : root;
    uint32_t n = map->via.map.size;
    msgpack_object_kv *kv = msgpack_zone_malloc(t->up.zone, (n + 1) * sizeof *kv);
    memcpy(kv, map->via.map.ptr, n * sizeof *kv);
    kv[n].key = key;
    kv[n].val = value;
    map->via.map.ptr = kv;
    map->via.map.size = n + 1;
}

static void tree_pack(const msgpack_object *root, msgpack_sbuffer *out) {
    msgpack_sbuffer_clear(out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    SPECD_CHECK(msgpack_pack_object(&pk, *root) == 0);
}

// ---- expectations ----------------------------------------------------------------------------

enum kind { METRICS, SETTINGS };

static int decode_any(enum kind kind, const void *buf, size_t len, char *err, size_t err_size) {
    if (kind == METRICS) {
        struct proto_metrics_msg out;
        return proto_metrics_decode(buf, len, &out, err, err_size);
    }
    struct spec_settings out;
    return proto_settings_decode(buf, len, &out, err, err_size);
}

static void expect_bytes(enum kind kind, const void *buf, size_t len, int want_rc,
                         const char *want_msg, int line) {
    char err[256] = "";
    int rc = decode_any(kind, buf, len, err, sizeof err);
    if (rc != want_rc)
        TEST_FAIL_AT(__FILE__, line, "rc %s, want %s (err: %s)", specd_status_name(rc),
                     specd_status_name(want_rc), err);
    else if (want_msg && !strstr(err, want_msg))
        TEST_FAIL_AT(__FILE__, line, "error \"%s\" lacks \"%s\"", err, want_msg);
}

static void expect_tree(enum kind kind, const msgpack_object *root, int want_rc,
                        const char *want_msg, int line) {
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    tree_pack(root, &b);
    expect_bytes(kind, b.data, b.size, want_rc, want_msg, line);
    msgpack_sbuffer_destroy(&b);
}

// Encodes the reference message of `kind`, unpacks it into t and returns the root map.
static msgpack_object *fresh(enum kind kind, struct tree *t, msgpack_sbuffer *b) {
    msgpack_sbuffer_init(b);
    if (kind == METRICS) {
        struct proto_metrics_msg msg;
        full_metrics(&msg);
        SPECD_CHECK(proto_metrics_encode(&msg, b, NULL, 0) == SPECD_OK);
    } else {
        struct spec_settings s;
        full_settings(&s);
        SPECD_CHECK(proto_settings_encode(&s, b, NULL, 0) == SPECD_OK);
    }
    return tree_load(t, b->data, b->size);
}

// CASE(kind, statement editing `root` (and `t`), expected status, expected message substring)
#define CASE(kind, edit, want_rc, want_msg)                                                        \
    do {                                                                                           \
        struct tree t;                                                                             \
        msgpack_sbuffer b;                                                                         \
        msgpack_object *root = fresh(kind, &t, &b);                                                \
        edit;                                                                                      \
        expect_tree(kind, root, want_rc, want_msg, __LINE__);                                      \
        tree_free(&t);                                                                             \
        msgpack_sbuffer_destroy(&b);                                                               \
    } while (0)

// ---- round trips -----------------------------------------------------------------------------

TEST(metrics_round_trip_every_field) {
    struct proto_metrics_msg in, out;
    full_metrics(&in);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    char err[256] = "";
    REQUIRE(proto_metrics_encode(&in, &b, err, sizeof err) == SPECD_OK);
    CHECK(b.size < 4096); // docs/protocol.md promises bodies well under PROTO_BODY_MAX
    int rc = proto_metrics_decode(b.data, b.size, &out, err, sizeof err);
    if (rc != SPECD_OK)
        fprintf(stderr, "  decode: %s\n", err);
    REQUIRE(rc == SPECD_OK);
    check_metrics_equal(&in, &out);

    // Encoding again into the same buffer replaces its contents.
    in.m.n_classes = 0;
    in.fallback = false;
    in.draft[0] = '\0';
    REQUIRE(proto_metrics_encode(&in, &b, err, sizeof err) == SPECD_OK);
    REQUIRE(proto_metrics_decode(b.data, b.size, &out, err, sizeof err) == SPECD_OK);
    check_metrics_equal(&in, &out);
    msgpack_sbuffer_destroy(&b);
}

TEST(metrics_round_trip_limits) {
    struct proto_metrics_msg in, out;
    full_metrics(&in);
    memset(in.worker_id, 'w', PROTO_ID_CAP - 1);
    in.worker_id[PROTO_ID_CAP - 1] = '\0';
    memset(in.model, '~', PROTO_NAME_CAP - 1);
    in.model[PROTO_NAME_CAP - 1] = '\0';
    memset(in.m.classes[3].name, '!', SPEC_CLASS_NAME_LEN - 1);
    in.m.classes[3].name[SPEC_CLASS_NAME_LEN - 1] = '\0';
    in.timestamp_ms = UINT64_MAX;
    in.m.step = UINT64_MAX;
    in.m.drafted = in.m.accepted = in.m.emitted = UINT32_MAX;
    in.m.t_step_ms = DBL_MAX;
    in.m.t_draft_ms = 0.0;
    in.m.t_verify_ms = 4.9e-324; // smallest subnormal
    in.m.kv_blocks_used = in.m.kv_blocks_total = 0;
    in.m.drafted_at[SPEC_MAX_DEPTH - 1] = UINT32_MAX;
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    char err[256] = "";
    REQUIRE(proto_metrics_encode(&in, &b, err, sizeof err) == SPECD_OK);
    REQUIRE(proto_metrics_decode(b.data, b.size, &out, err, sizeof err) == SPECD_OK);
    check_metrics_equal(&in, &out);
    msgpack_sbuffer_destroy(&b);
}

TEST(settings_round_trip_every_field) {
    struct spec_settings in, out;
    full_settings(&in);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    char err[256] = "";
    REQUIRE(proto_settings_encode(&in, &b, err, sizeof err) == SPECD_OK);
    REQUIRE(proto_settings_decode(b.data, b.size, &out, err, sizeof err) == SPECD_OK);
    check_settings_equal(&in, &out);
    in.n_classes = 0;
    in.enabled = false;
    in.depth = 0; // allowed below min_depth when disabled
    REQUIRE(proto_settings_encode(&in, &b, err, sizeof err) == SPECD_OK);
    REQUIRE(proto_settings_decode(b.data, b.size, &out, err, sizeof err) == SPECD_OK);
    check_settings_equal(&in, &out);
    msgpack_sbuffer_destroy(&b);
}

// Byte vector written out by hand from the msgpack spec (fixmap, fixstr, uint16 0xcd ...).
TEST(settings_encoding_matches_hand_computed_bytes) {
    static const unsigned char want[] = {
        0x88,                                                // map, 8 pairs
        0xa7, 'v',  'e',  'r',  's', 'i',  'o',  'n',  0x01, // "version": 1
        0xa5, 'e',  'p',  'o',  'c', 'h',  0x07,             // "epoch": 7
        0xa7, 'e',  'n',  'a',  'b', 'l',  'e',  'd',  0xc3, // "enabled": true
        0xa5, 'd',  'e',  'p',  't', 'h',  0x04,             // "depth": 4
        0xa9, 'm',  'i',  'n',  '_', 'd',  'e',  'p',  't',  'h', 0x01, 0xa9, 'm',  'a',
        'x',  '_',  'd',  'e',  'p', 't',  'h',  0x08, 0xa6, 't', 't',  'l',  '_',  'm',
        's',  0xcd, 0x13, 0x88,                              // "ttl_ms": 5000
        0xa7, 'c',  'l',  'a',  's', 's',  'e',  's',  0x91, // "classes": [ one map
        0x83, 0xa4, 'n',  'a',  'm', 'e',  0xa4, 'c',  'h',  'a', 't',  0xa7, 'e',  'n',
        'a',  'b',  'l',  'e',  'd', 0xc2, 0xa5, 'd',  'e',  'p', 't',  'h',  0x00,
    };
    struct spec_settings s = {.epoch = 7,
                              .enabled = true,
                              .depth = 4,
                              .min_depth = 1,
                              .max_depth = 8,
                              .ttl_ms = 5000,
                              .n_classes = 1};
    strcpy(s.classes[0].name, "chat");
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    REQUIRE(proto_settings_encode(&s, &b, NULL, 0) == SPECD_OK);
    CHECK_EQ_INT(b.size, sizeof want);
    CHECK(b.size == sizeof want && memcmp(b.data, want, sizeof want) == 0);
    struct spec_settings out;
    REQUIRE(proto_settings_decode(want, sizeof want, &out, NULL, 0) == SPECD_OK);
    check_settings_equal(&s, &out);
    msgpack_sbuffer_destroy(&b);
}

static void pack_key(msgpack_packer *pk, const char *k) {
    msgpack_pack_str(pk, strlen(k));
    msgpack_pack_str_body(pk, k, strlen(k));
}

// What another encoder may write: keys in another order, fixed-width and signed integer
// encodings, float32 and integer times, short per-position arrays, optional keys left out and
// unknown keys of every type (forward compatibility).
TEST(metrics_decode_accepts_other_encoders) {
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 27);
    pack_key(&pk, "future_map"); // unknown, nested
    msgpack_pack_map(&pk, 1);
    pack_key(&pk, "x");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_nil(&pk);
    msgpack_pack_ext(&pk, 3, 5);
    msgpack_pack_ext_body(&pk, "abc", 3);
    pack_key(&pk, "t_step_ms"), msgpack_pack_float(&pk, 2.5f);
    pack_key(&pk, "t_verify_ms"), msgpack_pack_fix_uint8(&pk, 3);
    pack_key(&pk, "t_draft_ms"), msgpack_pack_fix_int32(&pk, 0);
    pack_key(&pk, "accepted_at"), msgpack_pack_array(&pk, 2);
    msgpack_pack_fix_uint64(&pk, 4), msgpack_pack_fix_int16(&pk, 1);
    pack_key(&pk, "drafted_at"), msgpack_pack_array(&pk, 3);
    msgpack_pack_int8(&pk, 5), msgpack_pack_fix_uint32(&pk, 2), msgpack_pack_uint8(&pk, 1);
    pack_key(&pk, "kv_blocks_total"), msgpack_pack_fix_uint64(&pk, 100);
    pack_key(&pk, "kv_blocks_used"), msgpack_pack_fix_int64(&pk, 99);
    pack_key(&pk, "emitted"), msgpack_pack_uint32(&pk, 9);
    pack_key(&pk, "accepted"), msgpack_pack_uint32(&pk, 5);
    pack_key(&pk, "drafted"), msgpack_pack_uint32(&pk, 8);
    pack_key(&pk, "depth"), msgpack_pack_fix_uint16(&pk, 3);
    pack_key(&pk, "n_speculating"), msgpack_pack_uint32(&pk, 5);
    pack_key(&pk, "batch_size"), msgpack_pack_uint32(&pk, 7);
    pack_key(&pk, "step"), msgpack_pack_fix_uint64(&pk, 1ull << 40);
    pack_key(&pk, "future_bin"), msgpack_pack_bin(&pk, 2), msgpack_pack_bin_body(&pk, "\0\1", 2);
    pack_key(&pk, "dropped"), msgpack_pack_int64(&pk, 0);
    pack_key(&pk, "queue_depth"), msgpack_pack_fix_int8(&pk, 12);
    pack_key(&pk, "fallback"), msgpack_pack_false(&pk);
    pack_key(&pk, "settings_epoch"), msgpack_pack_fix_uint32(&pk, 44);
    pack_key(&pk, "timestamp_ms"), msgpack_pack_uint64(&pk, 1700000000000ull);
    pack_key(&pk, "draft"), pack_key(&pk, "");
    pack_key(&pk, "model"), pack_key(&pk, "m");
    pack_key(&pk, "worker_id"), pack_key(&pk, "w1");
    pack_key(&pk, "future_float"), msgpack_pack_double(&pk, -1.0);
    pack_key(&pk, "version"), msgpack_pack_fix_uint64(&pk, 1);
    pack_key(&pk, "future_nil"), msgpack_pack_nil(&pk);

    struct proto_metrics_msg out;
    char err[256] = "";
    int rc = proto_metrics_decode(b.data, b.size, &out, err, sizeof err);
    if (rc != SPECD_OK)
        fprintf(stderr, "  decode: %s\n", err);
    REQUIRE(rc == SPECD_OK);
    CHECK_EQ_STR(out.worker_id, "w1");
    CHECK_EQ_STR(out.model, "m");
    CHECK_EQ_STR(out.draft, "");
    CHECK(out.timestamp_ms == 1700000000000ull);
    CHECK(out.settings_epoch == 44);
    CHECK(!out.fallback);
    CHECK_EQ_INT(out.queue_depth, 12);
    CHECK(out.dropped == 0);
    CHECK(out.m.step == 1ull << 40);
    CHECK_EQ_INT(out.m.batch_size, 7);
    CHECK_EQ_INT(out.m.n_speculating, 5);
    CHECK_EQ_INT(out.m.depth, 3);
    CHECK_EQ_INT(out.m.drafted, 8);
    CHECK_EQ_INT(out.m.accepted, 5);
    CHECK_EQ_INT(out.m.emitted, 9);
    CHECK_EQ_INT(out.m.prefill_tokens, 0); // optional, absent
    CHECK_EQ_INT(out.m.preemptions, 0);    // optional, absent
    CHECK_EQ_INT(out.m.n_classes, 0);      // optional, absent
    const uint32_t drafted_at[SPEC_MAX_DEPTH] = {5, 2, 1};
    const uint32_t accepted_at[SPEC_MAX_DEPTH] = {4, 1};
    check_u32s_equal(out.m.drafted_at, drafted_at, "drafted_at");
    check_u32s_equal(out.m.accepted_at, accepted_at, "accepted_at");
    CHECK(out.m.t_draft_ms == 0.0);
    CHECK(out.m.t_verify_ms == 3.0);
    CHECK(out.m.t_step_ms == 2.5);
    CHECK_EQ_INT(out.m.kv_blocks_used, 99);
    CHECK_EQ_INT(out.m.kv_blocks_total, 100);
    msgpack_sbuffer_destroy(&b);
}

// ---- malformed messages ----------------------------------------------------------------------

static char long_id[80], long_name[80], nul_name[8] = {'a', 'b', '\0', 'c'};

TEST(metrics_rejects_wrong_types) {
    CASE(METRICS, tree_set(root, "depth", o_str("4")), SPECD_ERR_FORMAT,
         "metrics.depth: expected an unsigned integer, got str");
    CASE(METRICS, tree_set(root, "step", o_f64(1.0)), SPECD_ERR_FORMAT,
         "metrics.step: expected an unsigned integer, got float64");
    CASE(METRICS, tree_set(root, "fallback", o_uint(1)), SPECD_ERR_FORMAT,
         "metrics.fallback: expected a bool, got positive integer");
    CASE(METRICS, tree_set(root, "model", o_uint(1)), SPECD_ERR_FORMAT,
         "metrics.model: expected a str");
    CASE(METRICS, tree_set(root, "t_draft_ms", o_str("1.0")), SPECD_ERR_FORMAT,
         "metrics.t_draft_ms: expected a number, got str");
    CASE(METRICS, tree_set(root, "drafted_at", o_uint(3)), SPECD_ERR_FORMAT,
         "metrics.drafted_at: expected an array");
    CASE(METRICS, tree_set(root, "accepted_at.2", o_nil()), SPECD_ERR_FORMAT,
         "metrics.accepted_at[2]: expected an unsigned integer, got nil");
    CASE(METRICS, tree_set(root, "classes", o_nil()), SPECD_ERR_FORMAT,
         "metrics.classes: expected an array, got nil");
    CASE(METRICS, tree_set(root, "classes.4", o_uint(1)), SPECD_ERR_FORMAT,
         "metrics.classes[4]: expected a map");
    CASE(METRICS, tree_set(root, "classes.1.emitted", o_bool(true)), SPECD_ERR_FORMAT,
         "metrics.classes[1].emitted: expected an unsigned integer, got bool");
    CASE(METRICS, tree_add(&t, root, "", o_uint(5), o_uint(1)), SPECD_ERR_FORMAT,
         "keys must be strings");
    CASE(METRICS, *root = o_array(&t, 2, o_uint(1)), SPECD_ERR_FORMAT,
         "metrics: expected a map, got array");
}

TEST(metrics_rejects_missing_and_duplicate_keys) {
    CASE(METRICS, tree_drop(root, "", "settings_epoch"), SPECD_ERR_FORMAT,
         "metrics: missing required key \"settings_epoch\"");
    CASE(METRICS, tree_drop(root, "", "worker_id"), SPECD_ERR_FORMAT,
         "missing required key \"worker_id\"");
    CASE(METRICS, tree_drop(root, "", "t_verify_ms"), SPECD_ERR_FORMAT,
         "missing required key \"t_verify_ms\"");
    CASE(METRICS, tree_drop(root, "classes.2", "accepted_at"), SPECD_ERR_FORMAT,
         "metrics.classes[2]: missing required key \"accepted_at\"");
    CASE(METRICS, tree_add(&t, root, "", o_str("depth"), o_uint(3)), SPECD_ERR_FORMAT,
         "metrics: duplicate key \"depth\"");
    // Optional keys may go; unknown keys are skipped.
    CASE(METRICS, tree_drop(root, "", "prefill_tokens"), SPECD_OK, NULL);
    CASE(METRICS, tree_drop(root, "", "classes"), SPECD_OK, NULL);
    CASE(METRICS, tree_add(&t, root, "", o_str("new_key"), o_array(&t, 3, o_nil())), SPECD_OK,
         NULL);
    CASE(METRICS, tree_add(&t, root, "classes.0", o_str("x"), o_f64(1)), SPECD_OK, NULL);
}

TEST(metrics_rejects_out_of_range) {
    CASE(METRICS, tree_set(root, "depth", o_uint(SPEC_MAX_DEPTH + 1)), SPECD_ERR_FORMAT,
         "metrics.depth: 17 is out of range (max 16)");
    CASE(METRICS, tree_set(root, "classes.5.depth", o_uint(1000)), SPECD_ERR_FORMAT,
         "metrics.classes[5].depth: 1000 is out of range (max 16)");
    CASE(METRICS, tree_set(root, "batch_size", o_uint(1ull << 32)), SPECD_ERR_FORMAT,
         "metrics.batch_size: 4294967296 is out of range (max 4294967295)");
    CASE(METRICS, tree_set(root, "queue_depth", o_neg(-1)), SPECD_ERR_FORMAT,
         "metrics.queue_depth: -1 is negative");
    CASE(METRICS, tree_set(root, "t_step_ms", o_f64(-0.5)), SPECD_ERR_FORMAT,
         "metrics.t_step_ms: -0.5 is out of range");
    CASE(METRICS, tree_set(root, "t_step_ms", o_f64(NAN)), SPECD_ERR_FORMAT, "out of range");
    CASE(METRICS, tree_set(root, "t_draft_ms", o_f64(INFINITY)), SPECD_ERR_FORMAT, "out of range");
    CASE(METRICS, tree_set(root, "t_draft_ms", o_neg(-3)), SPECD_ERR_FORMAT, "out of range");
    CASE(METRICS, tree_set(root, "drafted_at", o_array(&t, SPEC_MAX_DEPTH + 1, o_uint(1))),
         SPECD_ERR_FORMAT, "metrics.drafted_at: 17 entries is out of range (max 16)");
    CASE(METRICS, tree_set(root, "accepted_at.0", o_uint(1ull << 33)), SPECD_ERR_FORMAT,
         "metrics.accepted_at[0]: 8589934592 is out of range");
    struct tree probe;
    msgpack_sbuffer pb;
    msgpack_object cls = *tree_at(fresh(METRICS, &probe, &pb), "classes.0");
    CASE(METRICS, tree_set(root, "classes", o_array(&t, SPEC_MAX_CLASSES + 1, cls)),
         SPECD_ERR_FORMAT, "metrics.classes: 9 classes is out of range (max 8)");
    tree_free(&probe);
    msgpack_sbuffer_destroy(&pb);
}

TEST(metrics_rejects_bad_strings) {
    memset(long_id, 'a', sizeof long_id - 1);
    memset(long_name, 'n', sizeof long_name - 1);
    CASE(METRICS, tree_set(root, "worker_id", o_strn(long_id, 64)), SPECD_ERR_FORMAT,
         "metrics.worker_id: string of 64 bytes is too long (max 63)");
    CASE(METRICS, tree_set(root, "model", o_strn(long_name, 64)), SPECD_ERR_FORMAT,
         "metrics.model: string of 64 bytes is too long (max 63)");
    CASE(METRICS, tree_set(root, "classes.1.name", o_strn(long_name, 32)), SPECD_ERR_FORMAT,
         "metrics.classes[1].name: string of 32 bytes is too long (max 31)");
    CASE(METRICS, tree_set(root, "draft", o_strn(nul_name, 4)), SPECD_ERR_FORMAT,
         "metrics.draft: string holds a NUL byte");
    CASE(METRICS, tree_set(root, "worker_id", o_str("w 1")), SPECD_ERR_FORMAT,
         "metrics.worker_id: must be 1..63 chars of [A-Za-z0-9._-]");
    CASE(METRICS, tree_set(root, "worker_id", o_str("all")), SPECD_ERR_FORMAT, "metrics.worker_id");
    CASE(METRICS, tree_set(root, "worker_id", o_str("")), SPECD_ERR_FORMAT, "metrics.worker_id");
    CASE(METRICS, tree_set(root, "model", o_str("")), SPECD_ERR_FORMAT,
         "metrics.model: must be 1..63 printable ASCII chars");
    CASE(METRICS, tree_set(root, "draft", o_str("tab\there")), SPECD_ERR_FORMAT, "metrics.draft");
    CASE(METRICS, tree_set(root, "model", o_str("caf\xc3\xa9")), SPECD_ERR_FORMAT, "metrics.model");
    CASE(METRICS, tree_set(root, "classes.2.name", o_str("a b")), SPECD_ERR_FORMAT,
         "metrics.classes[2].name: must be 1..31 printable ASCII chars without spaces");
    CASE(METRICS, tree_set(root, "classes.2.name", o_str("")), SPECD_ERR_FORMAT,
         "metrics.classes[2].name");
    CASE(METRICS, tree_set(root, "classes.6.name", o_str("class-1")), SPECD_ERR_FORMAT,
         "metrics.classes: duplicate class \"class-1\"");
}

TEST(metrics_rejects_inconsistent_counts) {
    CASE(METRICS, tree_set(root, "accepted", o_uint(501)), SPECD_ERR_FORMAT,
         "metrics: accepted 501 exceeds drafted 500");
    CASE(METRICS, tree_set(root, "n_speculating", o_uint(49)), SPECD_ERR_FORMAT,
         "metrics: n_speculating 49 exceeds the 48 sequences");
    CASE(METRICS, tree_set(root, "accepted_at.3", o_uint(38)), SPECD_ERR_FORMAT,
         "metrics: accepted_at[3] 38 exceeds drafted_at[3] 37");
    CASE(METRICS, tree_set(root, "kv_blocks_used", o_uint(4097)), SPECD_ERR_FORMAT,
         "metrics: kv_blocks_used 4097 exceeds kv_blocks_total 4096");
    CASE(METRICS, tree_set(root, "classes.3.accepted", o_uint(100)), SPECD_ERR_FORMAT,
         "metrics.classes[3]: accepted 100 exceeds drafted 13");
}

TEST(version_checks) {
    CASE(METRICS, tree_set(root, "version", o_uint(2)), SPECD_ERR_UNSUPPORTED,
         "metrics: unsupported version 2 (this build speaks version 1)");
    CASE(METRICS, tree_set(root, "version", o_uint(0)), SPECD_ERR_UNSUPPORTED,
         "unsupported version 0");
    CASE(METRICS, tree_set(root, "version", o_str("1")), SPECD_ERR_FORMAT,
         "metrics.version: expected an unsigned integer, got str");
    CASE(METRICS, tree_drop(root, "", "version"), SPECD_ERR_FORMAT,
         "metrics: missing required key \"version\"");
    CASE(METRICS, tree_add(&t, root, "", o_str("version"), o_uint(1)), SPECD_ERR_FORMAT,
         "duplicate key \"version\"");
    // A future version is reported as such even when its keys changed.
    CASE(METRICS, (tree_set(root, "version", o_uint(7)), tree_drop(root, "", "step")),
         SPECD_ERR_UNSUPPORTED, "unsupported version 7");
    CASE(SETTINGS, tree_set(root, "version", o_uint(2)), SPECD_ERR_UNSUPPORTED,
         "settings: unsupported version 2");
    CASE(SETTINGS, tree_drop(root, "", "version"), SPECD_ERR_FORMAT,
         "settings: missing required key \"version\"");
}

TEST(settings_rejects_malformed) {
    CASE(SETTINGS, tree_set(root, "enabled", o_uint(1)), SPECD_ERR_FORMAT,
         "settings.enabled: expected a bool");
    CASE(SETTINGS, tree_set(root, "epoch", o_neg(-2)), SPECD_ERR_FORMAT,
         "settings.epoch: -2 is negative");
    CASE(SETTINGS, tree_drop(root, "", "ttl_ms"), SPECD_ERR_FORMAT,
         "settings: missing required key \"ttl_ms\"");
    CASE(SETTINGS, tree_set(root, "ttl_ms", o_uint(0)), SPECD_ERR_FORMAT,
         "settings.ttl_ms: must be at least 1 ms");
    CASE(SETTINGS, tree_set(root, "ttl_ms", o_uint(1ull << 32)), SPECD_ERR_FORMAT,
         "settings.ttl_ms: 4294967296 is out of range");
    CASE(SETTINGS, tree_set(root, "depth", o_uint(17)), SPECD_ERR_FORMAT,
         "settings.depth: 17 is out of range (max 16)");
    CASE(SETTINGS, tree_set(root, "max_depth", o_uint(17)), SPECD_ERR_FORMAT,
         "settings.max_depth: 17 is out of range (max 16)");
    CASE(SETTINGS, tree_set(root, "max_depth", o_uint(5)), SPECD_ERR_FORMAT,
         "settings.depth: 6 exceeds max_depth 5");
    CASE(SETTINGS, tree_set(root, "min_depth", o_uint(7)), SPECD_ERR_FORMAT,
         "settings.depth: 6 is below min_depth 7");
    CASE(SETTINGS, (tree_set(root, "min_depth", o_uint(9)), tree_set(root, "max_depth", o_uint(8))),
         SPECD_ERR_FORMAT, "settings: min_depth 9 exceeds max_depth 8");
    CASE(SETTINGS, (tree_set(root, "enabled", o_bool(false)), tree_set(root, "depth", o_uint(0))),
         SPECD_OK, NULL);
    CASE(SETTINGS, tree_set(root, "classes.0.depth", o_uint(17)), SPECD_ERR_FORMAT,
         "settings.classes[0].depth: 17 is out of range (max 16)");
    CASE(SETTINGS, tree_set(root, "classes.0.depth", o_uint(1)), SPECD_ERR_FORMAT,
         "settings.classes[0].depth: 1 is below min_depth 2");
    CASE(SETTINGS,
         (tree_set(root, "max_depth", o_uint(8)), tree_set(root, "classes.0.depth", o_uint(9))),
         SPECD_ERR_FORMAT, "settings.classes[0].depth: 9 exceeds max_depth 8");
    CASE(SETTINGS, tree_drop(root, "classes.3", "enabled"), SPECD_ERR_FORMAT,
         "settings.classes[3]: missing required key \"enabled\"");
    CASE(SETTINGS, tree_set(root, "classes.7.name", o_str("cls_0")), SPECD_ERR_FORMAT,
         "settings.classes: duplicate class \"cls_0\"");
    CASE(SETTINGS, tree_set(root, "classes.7.name", o_strn(long_name, 40)), SPECD_ERR_FORMAT,
         "settings.classes[7].name: string of 40 bytes is too long (max 31)");
    CASE(SETTINGS, tree_set(root, "classes", o_array(&t, 9, *tree_at(root, "classes.0"))),
         SPECD_ERR_FORMAT, "settings.classes: 9 classes is out of range (max 8)");
    CASE(SETTINGS, tree_drop(root, "", "classes"), SPECD_OK, NULL);
}

// Byte-level damage, written out by hand.
TEST(malformed_msgpack_bytes) {
    for (int kind = METRICS; kind <= SETTINGS; kind++) {
        expect_bytes(kind, NULL, 0, SPECD_ERR_FORMAT, "empty message", __LINE__);
        expect_bytes(kind, "", 0, SPECD_ERR_FORMAT, "empty message", __LINE__);
        expect_bytes(kind, "\xc1", 1, SPECD_ERR_FORMAT, "invalid type byte 0xc1", __LINE__);
        // Containers that declare 2^32-1 entries in 5 bytes: refused before msgpack-c
        // reserves 4 billion slots.
        expect_bytes(kind, "\xdd\xff\xff\xff\xff", 5, SPECD_ERR_FORMAT,
                     "array at byte 0 declares 4294967295 entries but only 0 bytes follow",
                     __LINE__);
        expect_bytes(kind, "\xdf\xff\xff\xff\xff", 5, SPECD_ERR_FORMAT, "declares 4294967295",
                     __LINE__);
        expect_bytes(kind, "\x81\xa1k\xdd\x00\x01\x00\x00\x01", 9, SPECD_ERR_FORMAT,
                     "declares 65536 entries", __LINE__);
        expect_bytes(kind, "\xdb\xff\xff\xff\xff", 5, SPECD_ERR_FORMAT, "runs past the end",
                     __LINE__);
        expect_bytes(kind, "\xdc\x00", 2, SPECD_ERR_FORMAT, "truncated length", __LINE__);
        expect_bytes(kind, "\x81\xa1", 2, SPECD_ERR_FORMAT, "declares 1 entries", __LINE__);
        expect_bytes(kind, "\x81\xa5kk", 4, SPECD_ERR_FORMAT, "runs past the end", __LINE__);
        expect_bytes(kind, "\x82\xa1k\x01", 4, SPECD_ERR_FORMAT, "declares", __LINE__);
        expect_bytes(kind, "\x80\xc0", 2, SPECD_ERR_FORMAT, "1 trailing bytes", __LINE__);
        expect_bytes(kind, "\x80", 1, SPECD_ERR_FORMAT, "missing required key \"version\"",
                     __LINE__);
        expect_bytes(kind, "\x92\x01\x02", 3, SPECD_ERR_FORMAT, "expected a map, got array",
                     __LINE__);
        expect_bytes(kind, "\x07", 1, SPECD_ERR_FORMAT, "expected a map, got positive integer",
                     __LINE__);
    }
    // Deep nesting under an unknown key: {"x": [[[[...]]]]}
    unsigned char deep[300];
    size_t n = 0;
    deep[n++] = 0x81, deep[n++] = 0xa1, deep[n++] = 'x';
    while (n < sizeof deep - 1)
        deep[n++] = 0x91;
    deep[n++] = 0xc0;
    expect_bytes(METRICS, deep, n, SPECD_ERR_FORMAT, "nested deeper than 16", __LINE__);
    static unsigned char big[PROTO_BODY_MAX + 1];
    expect_bytes(SETTINGS, big, sizeof big, SPECD_ERR_FORMAT, "exceeds 65536", __LINE__);
}

// Every prefix of a valid message is rejected, none crashes.
TEST(truncated_messages_rejected) {
    struct proto_metrics_msg msg;
    full_metrics(&msg);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    REQUIRE(proto_metrics_encode(&msg, &b, NULL, 0) == SPECD_OK);
    int bad = 0;
    for (size_t len = 0; len < b.size; len++)
        bad += decode_any(METRICS, b.data, len, NULL, 0) != SPECD_ERR_FORMAT;
    CHECK_EQ_INT(bad, 0);
    struct spec_settings s;
    full_settings(&s);
    REQUIRE(proto_settings_encode(&s, &b, NULL, 0) == SPECD_OK);
    for (size_t len = 0; len < b.size; len++)
        bad += decode_any(SETTINGS, b.data, len, NULL, 0) != SPECD_ERR_FORMAT;
    CHECK_EQ_INT(bad, 0);
    msgpack_sbuffer_destroy(&b);
}

TEST(encoders_refuse_invalid_structs) {
    struct proto_metrics_msg msg;
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    char err[256];
    full_metrics(&msg);
    msg.m.depth = SPEC_MAX_DEPTH + 1;
    CHECK_EQ_INT(proto_metrics_encode(&msg, &b, err, sizeof err), SPECD_ERR_INVALID);
    CHECK(strstr(err, "metrics.depth: 17 is out of range"));
    full_metrics(&msg);
    msg.m.n_classes = SPEC_MAX_CLASSES + 1;
    CHECK_EQ_INT(proto_metrics_encode(&msg, &b, err, sizeof err), SPECD_ERR_INVALID);
    full_metrics(&msg);
    memset(msg.worker_id, 'x', sizeof msg.worker_id); // not NUL-terminated
    CHECK_EQ_INT(proto_metrics_encode(&msg, &b, err, sizeof err), SPECD_ERR_INVALID);
    full_metrics(&msg);
    memset(msg.m.classes[0].name, 'x', sizeof msg.m.classes[0].name);
    CHECK_EQ_INT(proto_metrics_encode(&msg, &b, err, sizeof err), SPECD_ERR_INVALID);
    full_metrics(&msg);
    msg.m.t_verify_ms = NAN;
    CHECK_EQ_INT(proto_metrics_encode(&msg, &b, err, sizeof err), SPECD_ERR_INVALID);
    CHECK_EQ_INT(proto_metrics_encode(NULL, &b, err, sizeof err), SPECD_ERR_INVALID);
    full_metrics(&msg);
    CHECK_EQ_INT(proto_metrics_encode(&msg, NULL, err, sizeof err), SPECD_ERR_INVALID);

    struct spec_settings s;
    full_settings(&s);
    s.ttl_ms = 0;
    CHECK_EQ_INT(proto_settings_encode(&s, &b, err, sizeof err), SPECD_ERR_INVALID);
    full_settings(&s);
    s.max_depth = SPEC_MAX_DEPTH + 1;
    CHECK_EQ_INT(proto_settings_encode(&s, &b, err, sizeof err), SPECD_ERR_INVALID);
    full_settings(&s);
    s.classes[1].depth = 1;
    s.classes[1].enabled = true; // below min_depth 2
    CHECK_EQ_INT(proto_settings_encode(&s, &b, err, sizeof err), SPECD_ERR_INVALID);
    CHECK(strstr(err, "settings.classes[1].depth: 1 is below min_depth 2"));
    CHECK_EQ_INT(proto_settings_encode(NULL, &b, err, sizeof err), SPECD_ERR_INVALID);
    msgpack_sbuffer_destroy(&b);
}

// ---- random and mutated bytes ----------------------------------------------------------------

static uint64_t xorshift(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static bool status_expected(int rc) {
    return rc == SPECD_OK || rc == SPECD_ERR_FORMAT || rc == SPECD_ERR_UNSUPPORTED;
}

TEST(random_bytes_never_crash) {
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    unsigned char buf[512];
    int unexpected = 0, ok = 0;
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = xorshift(&rng) % sizeof buf;
        for (size_t i = 0; i < len; i++)
            buf[i] = (unsigned char)xorshift(&rng);
        if (len > 0 && iter % 2) // often a map, to get past the first check
            buf[0] = (unsigned char)(0x80 | (buf[0] & 0x0f));
        char err[256];
        int rc = decode_any(iter % 4 < 2 ? METRICS : SETTINGS, buf, len, err, sizeof err);
        unexpected += !status_expected(rc);
        ok += rc == SPECD_OK;
    }
    CHECK_EQ_INT(unexpected, 0);
    CHECK_EQ_INT(ok, 0); // random bytes do not make a valid message
}

// Flips bytes of valid messages. Whatever decodes must satisfy the validator, encode again and
// decode to the same struct.
TEST(mutated_messages_decode_consistently) {
    uint64_t rng = 12345;
    struct proto_metrics_msg msg, a, b2;
    struct spec_settings s, sa, sb;
    full_metrics(&msg);
    full_settings(&s);
    msgpack_sbuffer orig_m, orig_s, re;
    msgpack_sbuffer_init(&orig_m);
    msgpack_sbuffer_init(&orig_s);
    msgpack_sbuffer_init(&re);
    REQUIRE(proto_metrics_encode(&msg, &orig_m, NULL, 0) == SPECD_OK);
    REQUIRE(proto_settings_encode(&s, &orig_s, NULL, 0) == SPECD_OK);
    static unsigned char buf[8192];
    int unexpected = 0, decoded = 0, inconsistent = 0;
    for (int iter = 0; iter < 20000; iter++) {
        bool is_m = iter % 2 == 0;
        const msgpack_sbuffer *o = is_m ? &orig_m : &orig_s;
        memcpy(buf, o->data, o->size);
        int flips = 1 + (int)(xorshift(&rng) % 4);
        for (int f = 0; f < flips; f++)
            buf[xorshift(&rng) % o->size] = (unsigned char)xorshift(&rng);
        int rc = is_m ? proto_metrics_decode(buf, o->size, &a, NULL, 0)
                      : proto_settings_decode(buf, o->size, &sa, NULL, 0);
        unexpected += !status_expected(rc);
        if (rc != SPECD_OK)
            continue;
        decoded++;
        if (is_m) {
            inconsistent += proto_metrics_validate(&a, NULL, 0) != SPECD_OK ||
                            proto_metrics_encode(&a, &re, NULL, 0) != SPECD_OK ||
                            proto_metrics_decode(re.data, re.size, &b2, NULL, 0) != SPECD_OK ||
                            memcmp(&a, &b2, sizeof a) != 0;
        } else {
            inconsistent += proto_settings_validate(&sa, NULL, 0) != SPECD_OK ||
                            proto_settings_encode(&sa, &re, NULL, 0) != SPECD_OK ||
                            proto_settings_decode(re.data, re.size, &sb, NULL, 0) != SPECD_OK ||
                            memcmp(&sa, &sb, sizeof sa) != 0;
        }
    }
    CHECK_EQ_INT(unexpected, 0);
    CHECK_EQ_INT(inconsistent, 0);
    CHECK(decoded > 100); // flips inside values still decode: the property was exercised
    msgpack_sbuffer_destroy(&orig_m);
    msgpack_sbuffer_destroy(&orig_s);
    msgpack_sbuffer_destroy(&re);
}

// ---- topics and sequence numbers -------------------------------------------------------------

TEST(worker_ids) {
    CHECK(proto_worker_id_valid("w1"));
    CHECK(proto_worker_id_valid("gpu-node7.worker_3"));
    CHECK(proto_worker_id_valid("a"));
    CHECK(proto_worker_id_valid("ALL"));
    CHECK(proto_worker_id_valid("all2"));
    char id[PROTO_ID_CAP + 1];
    memset(id, 'z', sizeof id);
    id[63] = '\0';
    CHECK(proto_worker_id_valid(id));
    id[63] = 'z';
    id[64] = '\0';
    CHECK(!proto_worker_id_valid(id));
    CHECK(!proto_worker_id_valid(NULL));
    CHECK(!proto_worker_id_valid(""));
    CHECK(!proto_worker_id_valid("all"));
    CHECK(!proto_worker_id_valid("w 1"));
    CHECK(!proto_worker_id_valid("w/1"));
    CHECK(!proto_worker_id_valid("w:1"));
    CHECK(!proto_worker_id_valid("w\n"));
    CHECK(!proto_worker_id_valid("caf\xc3\xa9"));
}

TEST(topics_build_and_parse) {
    char buf[PROTO_TOPIC_CAP];
    CHECK_EQ_INT(proto_topic_metrics("w-1", buf, sizeof buf), SPECD_OK);
    CHECK_EQ_STR(buf, "m.w-1");
    CHECK_EQ_INT(proto_topic_settings("w-1", buf, sizeof buf), SPECD_OK);
    CHECK_EQ_STR(buf, "s.w-1");
    CHECK_EQ_INT(proto_topic_settings(NULL, buf, sizeof buf), SPECD_OK);
    CHECK_EQ_STR(buf, "s.all");
    CHECK_EQ_INT(proto_topic_metrics("all", buf, sizeof buf), SPECD_ERR_INVALID);
    CHECK_EQ_INT(proto_topic_metrics("a b", buf, sizeof buf), SPECD_ERR_INVALID);
    CHECK_EQ_INT(proto_topic_settings("", buf, sizeof buf), SPECD_ERR_INVALID);
    CHECK_EQ_INT(proto_topic_metrics("w-1", buf, 5), SPECD_ERR_INVALID); // needs 6
    CHECK_EQ_STR(buf, "");
    CHECK_EQ_INT(proto_topic_metrics("w-1", buf, 6), SPECD_OK);

    enum proto_topic_kind kind = 0;
    char id[PROTO_ID_CAP];
    char err[128];
    CHECK_EQ_INT(proto_topic_parse("m.w1", 4, &kind, id, err, sizeof err), SPECD_OK);
    CHECK_EQ_INT(kind, PROTO_TOPIC_METRICS);
    CHECK_EQ_STR(id, "w1");
    CHECK_EQ_INT(proto_topic_parse("s.w1", 4, &kind, id, err, sizeof err), SPECD_OK);
    CHECK_EQ_INT(kind, PROTO_TOPIC_SETTINGS_ONE);
    CHECK_EQ_STR(id, "w1");
    CHECK_EQ_INT(proto_topic_parse("s.all", 5, &kind, id, err, sizeof err), SPECD_OK);
    CHECK_EQ_INT(kind, PROTO_TOPIC_SETTINGS_ALL);
    CHECK_EQ_STR(id, "");
    CHECK_EQ_INT(proto_topic_parse("s.allx", 6, &kind, id, err, sizeof err), SPECD_OK);
    CHECK_EQ_STR(id, "allx");
    // Length is exact: "m.w1" parsed with its NUL is not "m.w1".
    CHECK_EQ_INT(proto_topic_parse("m.w1", 5, &kind, id, err, sizeof err), SPECD_ERR_FORMAT);
    CHECK(strstr(err, "topic: bad worker id"));
    CHECK_EQ_INT(proto_topic_parse("m.all", 5, &kind, id, err, sizeof err), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(proto_topic_parse("m.", 2, &kind, id, err, sizeof err), SPECD_ERR_FORMAT);
    CHECK(strstr(err, "topic: expected"));
    CHECK_EQ_INT(proto_topic_parse("x.w1", 4, &kind, id, err, sizeof err), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(proto_topic_parse("mmw1", 4, &kind, id, err, sizeof err), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(proto_topic_parse(NULL, 0, &kind, id, err, sizeof err), SPECD_ERR_FORMAT);
    char longt[80] = "m.";
    memset(longt + 2, 'a', 64);
    CHECK_EQ_INT(proto_topic_parse(longt, 66, &kind, id, err, sizeof err), SPECD_ERR_FORMAT);
    CHECK_EQ_INT(proto_topic_parse(longt, 65, &kind, id, err, sizeof err), SPECD_OK);
    CHECK_EQ_INT(strlen(id), 63);
}

TEST(sequence_frames_are_big_endian) {
    unsigned char b[PROTO_SEQ_BYTES];
    proto_seq_encode(0x0102030405060708ull, b);
    const unsigned char want[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK(memcmp(b, want, 8) == 0);
    CHECK(proto_seq_decode(want) == 0x0102030405060708ull);
    const unsigned char one[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    CHECK(proto_seq_decode(one) == 1);
    proto_seq_encode(UINT64_MAX, b);
    CHECK(proto_seq_decode(b) == UINT64_MAX);
    proto_seq_encode(0, b);
    CHECK(proto_seq_decode(b) == 0);
}

// ---- loss tracker ----------------------------------------------------------------------------

static struct proto_seq_update feed(proto_seq_tracker *t, const char *id, uint64_t seq) {
    struct proto_seq_update u;
    int rc = proto_seq_tracker_feed(t, id, seq, &u);
    if (rc != SPECD_OK)
        TEST_FAIL_AT(__FILE__, __LINE__, "feed %s %llu: %s", id, (unsigned long long)seq,
                     specd_status_name(rc));
    return u;
}

TEST(seq_tracker_counts_gaps_and_restarts) {
    proto_seq_tracker *t = proto_seq_tracker_new(NULL);
    REQUIRE(t);
    struct proto_seq_update u = feed(t, "w1", 1000); // joined late: nothing counted
    CHECK(u.first && !u.restart && u.lost == 0);
    CHECK(feed(t, "w1", 1001).lost == 0);
    u = feed(t, "w1", 1005); // 1002..1004 missing
    CHECK(!u.first && !u.restart && u.lost == 3);
    u = feed(t, "w2", 0); // another worker, independent
    CHECK(u.first && u.lost == 0);
    u = feed(t, "w1", 0); // w1 restarted
    CHECK(u.restart && u.lost == 0);
    CHECK(feed(t, "w1", 1).lost == 0);
    u = feed(t, "w1", 3); // 2 missing
    CHECK(u.lost == 1 && !u.restart);
    u = feed(t, "w1", 2); // restarted again, its 0 and 1 were lost
    CHECK(u.restart && u.lost == 2);
    CHECK(feed(t, "w2", 10).lost == 9);
    struct proto_seq_stats st;
    CHECK_EQ_INT(proto_seq_tracker_stats(t, "w1", &st), SPECD_OK);
    CHECK(st.received == 7 && st.lost == 6 && st.restarts == 2 && st.last_seq == 2);
    CHECK_EQ_INT(proto_seq_tracker_stats(t, "w2", &st), SPECD_OK);
    CHECK(st.received == 2 && st.lost == 9 && st.restarts == 0 && st.last_seq == 10);
    CHECK_EQ_INT(proto_seq_tracker_stats(t, "w3", &st), SPECD_SOFT_EMPTY);
    CHECK(st.received == 0);
    CHECK_EQ_INT(proto_seq_tracker_count(t), 2);
    proto_seq_tracker_free(t);
}

TEST(seq_tracker_limits) {
    struct proto_seq_tracker_params p = proto_seq_tracker_default_params();
    CHECK_EQ_INT(p.max_workers, 1024);
    p.max_workers = 0;
    CHECK(proto_seq_tracker_new(&p) == NULL);
    p.max_workers = 2;
    proto_seq_tracker *t = proto_seq_tracker_new(&p);
    REQUIRE(t);
    struct proto_seq_update u;
    CHECK_EQ_INT(proto_seq_tracker_feed(t, "a", 0, &u), SPECD_OK);
    CHECK_EQ_INT(proto_seq_tracker_feed(t, "b", 0, NULL), SPECD_OK);
    CHECK_EQ_INT(proto_seq_tracker_feed(t, "c", 0, &u), SPECD_SOFT_FULL);
    CHECK_EQ_INT(proto_seq_tracker_feed(t, "a", 5, &u), SPECD_OK);
    CHECK(u.lost == 4);
    CHECK_EQ_INT(proto_seq_tracker_forget(t, "a"), SPECD_OK);
    CHECK_EQ_INT(proto_seq_tracker_forget(t, "a"), SPECD_SOFT_EMPTY);
    CHECK_EQ_INT(proto_seq_tracker_feed(t, "c", 7, &u), SPECD_OK);
    CHECK(u.first && u.lost == 0);
    struct proto_seq_stats st;
    CHECK_EQ_INT(proto_seq_tracker_stats(t, "b", &st), SPECD_OK); // survived the swap-remove
    CHECK(st.received == 1);
    CHECK_EQ_INT(proto_seq_tracker_feed(t, "all", 0, &u), SPECD_ERR_INVALID);
    CHECK_EQ_INT(proto_seq_tracker_feed(t, NULL, 0, &u), SPECD_ERR_INVALID);
    CHECK_EQ_INT(proto_seq_tracker_feed(NULL, "a", 0, &u), SPECD_ERR_INVALID);
    proto_seq_tracker_free(t);
    proto_seq_tracker_free(NULL);
}

int main(int argc, char **argv) {
    TEST_MAIN_BEGIN(argc, argv);
    TEST_RUN(metrics_round_trip_every_field);
    TEST_RUN(metrics_round_trip_limits);
    TEST_RUN(settings_round_trip_every_field);
    TEST_RUN(settings_encoding_matches_hand_computed_bytes);
    TEST_RUN(metrics_decode_accepts_other_encoders);
    TEST_RUN(metrics_rejects_wrong_types);
    TEST_RUN(metrics_rejects_missing_and_duplicate_keys);
    TEST_RUN(metrics_rejects_out_of_range);
    TEST_RUN(metrics_rejects_bad_strings);
    TEST_RUN(metrics_rejects_inconsistent_counts);
    TEST_RUN(version_checks);
    TEST_RUN(settings_rejects_malformed);
    TEST_RUN(malformed_msgpack_bytes);
    TEST_RUN(truncated_messages_rejected);
    TEST_RUN(encoders_refuse_invalid_structs);
    TEST_RUN(random_bytes_never_crash);
    TEST_RUN(mutated_messages_decode_consistently);
    TEST_RUN(worker_ids);
    TEST_RUN(topics_build_and_parse);
    TEST_RUN(sequence_frames_are_big_endian);
    TEST_RUN(seq_tracker_counts_gaps_and_restarts);
    TEST_RUN(seq_tracker_limits);
    return TEST_MAIN_END();
}
