// Settings messages (controller -> worker): struct spec_settings <-> msgpack map.
#include <stddef.h>
#include <string.h>

#include "shared/proto.h"
#include "shared/proto_mp.h"
#include "shared/status.h"

#define SET_FIELD(name) offsetof(struct spec_settings, name)
#define CLASS_FIELD(name) offsetof(struct spec_class_setting, name)

static const struct proto_mp_field class_fields[] = {
    {"name", PROTO_MP_STR, true, CLASS_FIELD(name), SPEC_CLASS_NAME_LEN, 0, NULL},
    {"enabled", PROTO_MP_BOOL, true, CLASS_FIELD(enabled), 0, 0, NULL},
    {"depth", PROTO_MP_U32, true, CLASS_FIELD(depth), 0, SPEC_MAX_DEPTH, NULL},
};
#define N_CLASS_FIELDS (sizeof class_fields / sizeof class_fields[0])

static int parse_classes(const msgpack_object *v, void *dst, const char *path, char *err,
                         size_t err_size) {
    struct spec_settings *s = dst;
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
                                   &s->classes[i], sub, err, err_size);
        if (rc != SPECD_OK)
            return rc;
    }
    s->n_classes = v->via.array.size;
    return SPECD_OK;
}

static const struct proto_mp_field settings_fields[] = {
    {"version", PROTO_MP_SKIP, true, 0, 0, 0, NULL},
    {"epoch", PROTO_MP_U64, true, SET_FIELD(epoch), 0, 0, NULL},
    {"enabled", PROTO_MP_BOOL, true, SET_FIELD(enabled), 0, 0, NULL},
    {"depth", PROTO_MP_U32, true, SET_FIELD(depth), 0, SPEC_MAX_DEPTH, NULL},
    {"min_depth", PROTO_MP_U32, true, SET_FIELD(min_depth), 0, SPEC_MAX_DEPTH, NULL},
    {"max_depth", PROTO_MP_U32, true, SET_FIELD(max_depth), 0, SPEC_MAX_DEPTH, NULL},
    {"ttl_ms", PROTO_MP_U32, true, SET_FIELD(ttl_ms), 0, 0, NULL},
    {"classes", PROTO_MP_CUSTOM, false, 0, 0, 0, parse_classes},
};
#define N_SETTINGS_FIELDS (sizeof settings_fields / sizeof settings_fields[0])

// ---- validation ------------------------------------------------------------------------------

// A depth is allowed when it is <= max_depth and, for an enabled entry, >= min_depth.
static int check_depth(const char *what, bool enabled, uint32_t depth,
                       const struct spec_settings *s, char *err, size_t err_size) {
    if (depth > s->max_depth)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "%s.depth: %u exceeds max_depth %u",
                          what, depth, s->max_depth);
    if (enabled && depth < s->min_depth)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "%s.depth: %u is below min_depth %u",
                          what, depth, s->min_depth);
    return SPECD_OK;
}

static bool class_name_ok(const char *name) {
    const char *end = memchr(name, '\0', SPEC_CLASS_NAME_LEN);
    if (!end || end == name)
        return false;
    for (; name < end; name++)
        if (*name < '!' || *name > '~')
            return false;
    return true;
}

int proto_settings_validate(const struct spec_settings *s, char *err, size_t err_size) {
    if (!s)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "settings: NULL settings");
    if (s->max_depth > SPEC_MAX_DEPTH)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "settings.max_depth: %u is out of range (max %d)", s->max_depth,
                          SPEC_MAX_DEPTH);
    if (s->min_depth > s->max_depth)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "settings: min_depth %u exceeds max_depth %u", s->min_depth,
                          s->max_depth);
    int rc = check_depth("settings", s->enabled, s->depth, s, err, err_size);
    if (rc != SPECD_OK)
        return rc;
    if (s->ttl_ms == 0)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "settings.ttl_ms: must be at least 1 ms");
    if (s->n_classes > SPEC_MAX_CLASSES)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "settings.classes: %u classes is out of range (max %d)", s->n_classes,
                          SPEC_MAX_CLASSES);
    for (uint32_t i = 0; i < s->n_classes; i++) {
        const struct spec_class_setting *c = &s->classes[i];
        char what[48];
        snprintf(what, sizeof what, "settings.classes[%u]", i);
        if (!class_name_ok(c->name))
            return specd_fail(err, err_size, SPECD_ERR_INVALID,
                              "%s.name: must be 1..%d printable ASCII chars without spaces", what,
                              SPEC_CLASS_NAME_LEN - 1);
        if ((rc = check_depth(what, c->enabled, c->depth, s, err, err_size)) != SPECD_OK)
            return rc;
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(s->classes[j].name, c->name) == 0)
                return specd_fail(err, err_size, SPECD_ERR_INVALID,
                                  "settings.classes: duplicate class \"%s\"", c->name);
    }
    return SPECD_OK;
}

// ---- encode / decode -------------------------------------------------------------------------

// The keys in the order of settings_fields; the map size is N_SETTINGS_FIELDS.
static int pack_settings(msgpack_packer *pk, const struct spec_settings *s) {
    int bad = msgpack_pack_map(pk, N_SETTINGS_FIELDS);
    bad |= proto_mp_pack_kv_u64(pk, "version", PROTO_VERSION);
    bad |= proto_mp_pack_kv_u64(pk, "epoch", s->epoch);
    bad |= proto_mp_pack_kv_bool(pk, "enabled", s->enabled);
    bad |= proto_mp_pack_kv_u64(pk, "depth", s->depth);
    bad |= proto_mp_pack_kv_u64(pk, "min_depth", s->min_depth);
    bad |= proto_mp_pack_kv_u64(pk, "max_depth", s->max_depth);
    bad |= proto_mp_pack_kv_u64(pk, "ttl_ms", s->ttl_ms);
    bad |= proto_mp_pack_cstr(pk, "classes") || msgpack_pack_array(pk, s->n_classes);
    for (uint32_t i = 0; i < s->n_classes && !bad; i++) {
        const struct spec_class_setting *c = &s->classes[i];
        bad |= msgpack_pack_map(pk, N_CLASS_FIELDS);
        bad |= proto_mp_pack_kv_str(pk, "name", c->name);
        bad |= proto_mp_pack_kv_bool(pk, "enabled", c->enabled);
        bad |= proto_mp_pack_kv_u64(pk, "depth", c->depth);
    }
    return bad;
}

int proto_settings_encode(const struct spec_settings *s, msgpack_sbuffer *out, char *err,
                          size_t err_size) {
    if (!out)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "settings: NULL output buffer");
    int rc = proto_settings_validate(s, err, err_size);
    if (rc != SPECD_OK)
        return rc;
    msgpack_sbuffer_clear(out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    if (pack_settings(&pk, s))
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "settings: out of memory encoding");
    return SPECD_OK;
}

int proto_settings_decode(const void *buf, size_t len, struct spec_settings *out, char *err,
                          size_t err_size) {
    if (!out)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "settings: NULL output");
    memset(out, 0, sizeof *out);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int rc = proto_mp_unpack_map(buf, len, &up, "settings", err, err_size);
    if (rc == SPECD_OK)
        rc = proto_mp_check_version(&up.data, "settings", err, err_size);
    if (rc == SPECD_OK)
        rc = proto_mp_read_map(&up.data, settings_fields, N_SETTINGS_FIELDS, out, "settings", err,
                               err_size);
    msgpack_unpacked_destroy(&up);
    if (rc == SPECD_OK && proto_settings_validate(out, err, err_size) != SPECD_OK)
        rc = SPECD_ERR_FORMAT;
    return rc;
}
