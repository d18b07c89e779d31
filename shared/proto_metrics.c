// Metrics messages (worker -> controller): struct proto_metrics_msg <-> msgpack map.
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "shared/proto.h"
#include "shared/proto_mp.h"
#include "shared/status.h"

#define MSG_FIELD(name) offsetof(struct proto_metrics_msg, name)
#define STEP_FIELD(name) offsetof(struct proto_metrics_msg, m.name)
#define CLASS_FIELD(name) offsetof(struct spec_class_metrics, name)

static const struct proto_mp_field class_fields[] = {
    {"name", PROTO_MP_STR, true, CLASS_FIELD(name), SPEC_CLASS_NAME_LEN, 0, NULL},
    {"n_seqs", PROTO_MP_U32, true, CLASS_FIELD(n_seqs), 0, 0, NULL},
    {"n_speculating", PROTO_MP_U32, true, CLASS_FIELD(n_speculating), 0, 0, NULL},
    {"depth", PROTO_MP_U32, true, CLASS_FIELD(depth), 0, SPEC_MAX_DEPTH, NULL},
    {"drafted", PROTO_MP_U32, true, CLASS_FIELD(drafted), 0, 0, NULL},
    {"accepted", PROTO_MP_U32, true, CLASS_FIELD(accepted), 0, 0, NULL},
    {"emitted", PROTO_MP_U32, true, CLASS_FIELD(emitted), 0, 0, NULL},
    {"drafted_at", PROTO_MP_U32_ARRAY, true, CLASS_FIELD(drafted_at), SPEC_MAX_DEPTH, 0, NULL},
    {"accepted_at", PROTO_MP_U32_ARRAY, true, CLASS_FIELD(accepted_at), SPEC_MAX_DEPTH, 0, NULL},
};
#define N_CLASS_FIELDS (sizeof class_fields / sizeof class_fields[0])

static int parse_classes(const msgpack_object *v, void *dst, const char *path, char *err,
                         size_t err_size) {
    struct proto_metrics_msg *msg = dst;
    if (v->type != MSGPACK_OBJECT_ARRAY)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s.classes: expected an array, got %s",
                          path, proto_mp_type_name(v->type));
    if (v->via.array.size > SPEC_MAX_CLASSES)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "%s.classes: %u classes is out of range (max %d)", path,
                          v->via.array.size, SPEC_MAX_CLASSES);
    for (uint32_t i = 0; i < v->via.array.size; i++) {
        char sub[64];
        snprintf(sub, sizeof sub, "%s.classes[%u]", path, i);
        int rc = proto_mp_read_map(&v->via.array.ptr[i], class_fields, N_CLASS_FIELDS,
                                   &msg->m.classes[i], sub, err, err_size);
        if (rc != SPECD_OK)
            return rc;
    }
    msg->m.n_classes = v->via.array.size;
    return SPECD_OK;
}

static const struct proto_mp_field metrics_fields[] = {
    {"version", PROTO_MP_SKIP, true, 0, 0, 0, NULL},
    {"worker_id", PROTO_MP_STR, true, MSG_FIELD(worker_id), PROTO_ID_CAP, 0, NULL},
    {"model", PROTO_MP_STR, true, MSG_FIELD(model), PROTO_NAME_CAP, 0, NULL},
    {"draft", PROTO_MP_STR, true, MSG_FIELD(draft), PROTO_NAME_CAP, 0, NULL},
    {"timestamp_ms", PROTO_MP_U64, true, MSG_FIELD(timestamp_ms), 0, 0, NULL},
    {"settings_epoch", PROTO_MP_U64, true, MSG_FIELD(settings_epoch), 0, 0, NULL},
    {"fallback", PROTO_MP_BOOL, true, MSG_FIELD(fallback), 0, 0, NULL},
    {"queue_depth", PROTO_MP_U32, true, MSG_FIELD(queue_depth), 0, 0, NULL},
    {"dropped", PROTO_MP_U64, true, MSG_FIELD(dropped), 0, 0, NULL},
    {"step", PROTO_MP_U64, true, STEP_FIELD(step), 0, 0, NULL},
    {"batch_size", PROTO_MP_U32, true, STEP_FIELD(batch_size), 0, 0, NULL},
    {"n_speculating", PROTO_MP_U32, true, STEP_FIELD(n_speculating), 0, 0, NULL},
    {"depth", PROTO_MP_U32, true, STEP_FIELD(depth), 0, SPEC_MAX_DEPTH, NULL},
    {"drafted", PROTO_MP_U32, true, STEP_FIELD(drafted), 0, 0, NULL},
    {"accepted", PROTO_MP_U32, true, STEP_FIELD(accepted), 0, 0, NULL},
    {"emitted", PROTO_MP_U32, true, STEP_FIELD(emitted), 0, 0, NULL},
    {"prefill_tokens", PROTO_MP_U32, false, STEP_FIELD(prefill_tokens), 0, 0, NULL},
    {"drafted_at", PROTO_MP_U32_ARRAY, true, STEP_FIELD(drafted_at), SPEC_MAX_DEPTH, 0, NULL},
    {"accepted_at", PROTO_MP_U32_ARRAY, true, STEP_FIELD(accepted_at), SPEC_MAX_DEPTH, 0, NULL},
    {"t_draft_ms", PROTO_MP_F64, true, STEP_FIELD(t_draft_ms), 0, 0, NULL},
    {"t_verify_ms", PROTO_MP_F64, true, STEP_FIELD(t_verify_ms), 0, 0, NULL},
    {"t_step_ms", PROTO_MP_F64, true, STEP_FIELD(t_step_ms), 0, 0, NULL},
    {"kv_blocks_used", PROTO_MP_U32, true, STEP_FIELD(kv_blocks_used), 0, 0, NULL},
    {"kv_blocks_total", PROTO_MP_U32, true, STEP_FIELD(kv_blocks_total), 0, 0, NULL},
    {"preemptions", PROTO_MP_U32, false, STEP_FIELD(preemptions), 0, 0, NULL},
    {"classes", PROTO_MP_CUSTOM, false, 0, 0, 0, parse_classes},
};
#define N_METRICS_FIELDS (sizeof metrics_fields / sizeof metrics_fields[0])

// ---- validation ------------------------------------------------------------------------------

// NUL-terminated within cap, min_len.. chars, each in [lo, hi].
static bool text_ok(const char *s, size_t cap, size_t min_len, char lo, char hi) {
    const char *end = memchr(s, '\0', cap);
    if (!end || (size_t)(end - s) < min_len)
        return false;
    for (; s < end; s++)
        if (*s < lo || *s > hi)
            return false;
    return true;
}

static int check_counts(const char *what, uint32_t depth, uint32_t n_spec, uint32_t n_seqs,
                        uint32_t drafted, uint32_t accepted, const uint32_t *drafted_at,
                        const uint32_t *accepted_at, char *err, size_t err_size) {
    if (depth > SPEC_MAX_DEPTH)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "%s.depth: %u is out of range (max %d)",
                          what, depth, SPEC_MAX_DEPTH);
    if (n_spec > n_seqs)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "%s: n_speculating %u exceeds the %u sequences", what, n_spec, n_seqs);
    if (accepted > drafted)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "%s: accepted %u exceeds drafted %u",
                          what, accepted, drafted);
    for (int k = 0; k < SPEC_MAX_DEPTH; k++)
        if (accepted_at[k] > drafted_at[k])
            return specd_fail(err, err_size, SPECD_ERR_INVALID,
                              "%s: accepted_at[%d] %u exceeds drafted_at[%d] %u", what, k,
                              accepted_at[k], k, drafted_at[k]);
    return SPECD_OK;
}

static int check_class(const struct spec_class_metrics *c, const char *what, char *err,
                       size_t err_size) {
    if (!text_ok(c->name, SPEC_CLASS_NAME_LEN, 1, '!', '~'))
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "%s.name: must be 1..%d printable ASCII chars without spaces", what,
                          SPEC_CLASS_NAME_LEN - 1);
    return check_counts(what, c->depth, c->n_speculating, c->n_seqs, c->drafted, c->accepted,
                        c->drafted_at, c->accepted_at, err, err_size);
}

int proto_metrics_validate(const struct proto_metrics_msg *msg, char *err, size_t err_size) {
    if (!msg)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "metrics: NULL message");
    if (!memchr(msg->worker_id, '\0', PROTO_ID_CAP) || !proto_worker_id_valid(msg->worker_id))
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "metrics.worker_id: must be 1..%d chars of [A-Za-z0-9._-], not \"all\"",
                          PROTO_ID_CAP - 1);
    if (!text_ok(msg->model, PROTO_NAME_CAP, 1, ' ', '~'))
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "metrics.model: must be 1..%d printable ASCII chars", PROTO_NAME_CAP - 1);
    if (!text_ok(msg->draft, PROTO_NAME_CAP, 0, ' ', '~'))
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "metrics.draft: must be 0..%d printable ASCII chars", PROTO_NAME_CAP - 1);
    const struct spec_step_metrics *m = &msg->m;
    int rc = check_counts("metrics", m->depth, m->n_speculating, m->batch_size, m->drafted,
                          m->accepted, m->drafted_at, m->accepted_at, err, err_size);
    if (rc != SPECD_OK)
        return rc;
    const double times[3] = {m->t_draft_ms, m->t_verify_ms, m->t_step_ms};
    for (int i = 0; i < 3; i++)
        if (!isfinite(times[i]) || times[i] < 0)
            return specd_fail(err, err_size, SPECD_ERR_INVALID,
                              "metrics: step times must be finite and >= 0 (got %g)", times[i]);
    if (m->kv_blocks_used > m->kv_blocks_total)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "metrics: kv_blocks_used %u exceeds kv_blocks_total %u",
                          m->kv_blocks_used, m->kv_blocks_total);
    if (m->n_classes > SPEC_MAX_CLASSES)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "metrics.classes: %u classes is out of range (max %d)", m->n_classes,
                          SPEC_MAX_CLASSES);
    for (uint32_t i = 0; i < m->n_classes; i++) {
        char what[48];
        snprintf(what, sizeof what, "metrics.classes[%u]", i);
        if ((rc = check_class(&m->classes[i], what, err, err_size)) != SPECD_OK)
            return rc;
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(m->classes[j].name, m->classes[i].name) == 0)
                return specd_fail(err, err_size, SPECD_ERR_INVALID,
                                  "metrics.classes: duplicate class \"%s\"", m->classes[i].name);
    }
    return SPECD_OK;
}

// ---- encode / decode -------------------------------------------------------------------------

static int pack_class(msgpack_packer *pk, const struct spec_class_metrics *c) {
    int bad = msgpack_pack_map(pk, N_CLASS_FIELDS);
    bad |= proto_mp_pack_kv_str(pk, "name", c->name);
    bad |= proto_mp_pack_kv_u64(pk, "n_seqs", c->n_seqs);
    bad |= proto_mp_pack_kv_u64(pk, "n_speculating", c->n_speculating);
    bad |= proto_mp_pack_kv_u64(pk, "depth", c->depth);
    bad |= proto_mp_pack_kv_u64(pk, "drafted", c->drafted);
    bad |= proto_mp_pack_kv_u64(pk, "accepted", c->accepted);
    bad |= proto_mp_pack_kv_u64(pk, "emitted", c->emitted);
    bad |= proto_mp_pack_kv_u32s(pk, "drafted_at", c->drafted_at, SPEC_MAX_DEPTH);
    bad |= proto_mp_pack_kv_u32s(pk, "accepted_at", c->accepted_at, SPEC_MAX_DEPTH);
    return bad;
}

// The keys in the order of metrics_fields; the map size is N_METRICS_FIELDS.
static int pack_metrics(msgpack_packer *pk, const struct proto_metrics_msg *msg) {
    const struct spec_step_metrics *m = &msg->m;
    int bad = msgpack_pack_map(pk, N_METRICS_FIELDS);
    bad |= proto_mp_pack_kv_u64(pk, "version", PROTO_VERSION);
    bad |= proto_mp_pack_kv_str(pk, "worker_id", msg->worker_id);
    bad |= proto_mp_pack_kv_str(pk, "model", msg->model);
    bad |= proto_mp_pack_kv_str(pk, "draft", msg->draft);
    bad |= proto_mp_pack_kv_u64(pk, "timestamp_ms", msg->timestamp_ms);
    bad |= proto_mp_pack_kv_u64(pk, "settings_epoch", msg->settings_epoch);
    bad |= proto_mp_pack_kv_bool(pk, "fallback", msg->fallback);
    bad |= proto_mp_pack_kv_u64(pk, "queue_depth", msg->queue_depth);
    bad |= proto_mp_pack_kv_u64(pk, "dropped", msg->dropped);
    bad |= proto_mp_pack_kv_u64(pk, "step", m->step);
    bad |= proto_mp_pack_kv_u64(pk, "batch_size", m->batch_size);
    bad |= proto_mp_pack_kv_u64(pk, "n_speculating", m->n_speculating);
    bad |= proto_mp_pack_kv_u64(pk, "depth", m->depth);
    bad |= proto_mp_pack_kv_u64(pk, "drafted", m->drafted);
    bad |= proto_mp_pack_kv_u64(pk, "accepted", m->accepted);
    bad |= proto_mp_pack_kv_u64(pk, "emitted", m->emitted);
    bad |= proto_mp_pack_kv_u64(pk, "prefill_tokens", m->prefill_tokens);
    bad |= proto_mp_pack_kv_u32s(pk, "drafted_at", m->drafted_at, SPEC_MAX_DEPTH);
    bad |= proto_mp_pack_kv_u32s(pk, "accepted_at", m->accepted_at, SPEC_MAX_DEPTH);
    bad |= proto_mp_pack_kv_f64(pk, "t_draft_ms", m->t_draft_ms);
    bad |= proto_mp_pack_kv_f64(pk, "t_verify_ms", m->t_verify_ms);
    bad |= proto_mp_pack_kv_f64(pk, "t_step_ms", m->t_step_ms);
    bad |= proto_mp_pack_kv_u64(pk, "kv_blocks_used", m->kv_blocks_used);
    bad |= proto_mp_pack_kv_u64(pk, "kv_blocks_total", m->kv_blocks_total);
    bad |= proto_mp_pack_kv_u64(pk, "preemptions", m->preemptions);
    bad |= proto_mp_pack_cstr(pk, "classes") || msgpack_pack_array(pk, m->n_classes);
    for (uint32_t i = 0; i < m->n_classes && !bad; i++)
        bad = pack_class(pk, &m->classes[i]);
    return bad;
}

int proto_metrics_encode(const struct proto_metrics_msg *msg, msgpack_sbuffer *out, char *err,
                         size_t err_size) {
    if (!out)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "metrics: NULL output buffer");
    int rc = proto_metrics_validate(msg, err, err_size);
    if (rc != SPECD_OK)
        return rc;
    msgpack_sbuffer_clear(out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    if (pack_metrics(&pk, msg))
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "metrics: out of memory encoding");
    return SPECD_OK;
}

int proto_metrics_decode(const void *buf, size_t len, struct proto_metrics_msg *out, char *err,
                         size_t err_size) {
    if (!out)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "metrics: NULL output");
    memset(out, 0, sizeof *out);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int rc = proto_mp_unpack_map(buf, len, &up, "metrics", err, err_size);
    if (rc == SPECD_OK)
        rc = proto_mp_check_version(&up.data, "metrics", err, err_size);
    if (rc == SPECD_OK)
        rc = proto_mp_read_map(&up.data, metrics_fields, N_METRICS_FIELDS, out, "metrics", err,
                               err_size);
    msgpack_unpacked_destroy(&up);
    if (rc == SPECD_OK && proto_metrics_validate(out, err, err_size) != SPECD_OK)
        rc = SPECD_ERR_FORMAT;
    return rc;
}
