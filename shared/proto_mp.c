#include "shared/proto_mp.h"

#include <math.h>
#include <string.h>

#include "shared/proto.h"
#include "shared/status.h"

// ---- precheck --------------------------------------------------------------------------------

static uint64_t read_be(const unsigned char *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

// What follows a type byte: `header` more bytes holding a length (0 when the length is in the
// byte itself or fixed), then `fixed` payload bytes, or a container of `elements` objects.
struct mp_head {
    size_t header;   // bytes of the length field
    uint64_t fixed;  // payload bytes known from the type byte
    bool has_length; // the length field counts payload bytes (str, bin, ext)
    int container;   // 0, 1 = array (n objects), 2 = map (2n objects)
    uint64_t n;      // elements from the type byte (fix types)
    bool bad;
};

static struct mp_head mp_classify(unsigned char b) {
    struct mp_head h = {0};
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return h; // fixint, nil, bool
    if (b >= 0x80 && b <= 0x8f)
        return (struct mp_head){.container = 2, .n = b & 0x0f};
    if (b >= 0x90 && b <= 0x9f)
        return (struct mp_head){.container = 1, .n = b & 0x0f};
    if (b >= 0xa0 && b <= 0xbf)
        return (struct mp_head){.fixed = b & 0x1f};
    switch (b) {
    case 0xc4:
    case 0xd9:
        return (struct mp_head){.header = 1, .has_length = true};
    case 0xc5:
    case 0xda:
        return (struct mp_head){.header = 2, .has_length = true};
    case 0xc6:
    case 0xdb:
        return (struct mp_head){.header = 4, .has_length = true};
    case 0xc7:
        return (struct mp_head){.header = 1, .has_length = true, .fixed = 1};
    case 0xc8:
        return (struct mp_head){.header = 2, .has_length = true, .fixed = 1};
    case 0xc9:
        return (struct mp_head){.header = 4, .has_length = true, .fixed = 1};
    case 0xca:
        return (struct mp_head){.fixed = 4};
    case 0xcb:
        return (struct mp_head){.fixed = 8};
    case 0xcc:
    case 0xd0:
        return (struct mp_head){.fixed = 1};
    case 0xcd:
    case 0xd1:
        return (struct mp_head){.fixed = 2};
    case 0xce:
    case 0xd2:
        return (struct mp_head){.fixed = 4};
    case 0xcf:
    case 0xd3:
        return (struct mp_head){.fixed = 8};
    case 0xd4:
        return (struct mp_head){.fixed = 2};
    case 0xd5:
        return (struct mp_head){.fixed = 3};
    case 0xd6:
        return (struct mp_head){.fixed = 5};
    case 0xd7:
        return (struct mp_head){.fixed = 9};
    case 0xd8:
        return (struct mp_head){.fixed = 17};
    case 0xdc:
        return (struct mp_head){.header = 2, .container = 1};
    case 0xdd:
        return (struct mp_head){.header = 4, .container = 1};
    case 0xde:
        return (struct mp_head){.header = 2, .container = 2};
    case 0xdf:
        return (struct mp_head){.header = 4, .container = 2};
    default:
        return (struct mp_head){.bad = true}; // 0xc1, never used
    }
}

int proto_mp_precheck(const unsigned char *buf, size_t len, int max_depth, char *err,
                      size_t err_size) {
    uint64_t left[PROTO_MP_MAX_DEPTH + 1]; // objects still to read at each level
    if (max_depth > PROTO_MP_MAX_DEPTH)
        max_depth = PROTO_MP_MAX_DEPTH;
    int depth = 0;
    left[0] = 1;
    size_t pos = 0;
    for (;;) {
        while (depth >= 0 && left[depth] == 0)
            depth--;
        if (depth < 0)
            break;
        left[depth]--;
        if (pos >= len)
            return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                              "malformed msgpack: truncated at byte %zu", pos);
        size_t at = pos;
        struct mp_head h = mp_classify(buf[pos++]);
        if (h.bad)
            return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                              "malformed msgpack: invalid type byte 0x%02x at byte %zu", buf[at],
                              at);
        if (h.header > len - pos)
            return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                              "malformed msgpack: truncated length at byte %zu", at);
        uint64_t n = h.header ? read_be(buf + pos, h.header) : h.n;
        pos += h.header;
        if (h.container) {
            uint64_t objects = n * (uint64_t)h.container; // n < 2^32: no overflow
            if (objects > len - pos)
                return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                                  "malformed msgpack: %s at byte %zu declares %llu entries but "
                                  "only %zu bytes follow",
                                  h.container == 1 ? "array" : "map", at, (unsigned long long)n,
                                  len - pos);
            if (objects == 0)
                continue;
            if (depth + 1 > max_depth)
                return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                                  "malformed msgpack: nested deeper than %d at byte %zu", max_depth,
                                  at);
            left[++depth] = objects;
            continue;
        }
        uint64_t payload = h.fixed + (h.has_length ? n : 0);
        if (payload > len - pos)
            return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                              "malformed msgpack: value at byte %zu runs past the end", at);
        pos += (size_t)payload;
    }
    if (pos != len)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "malformed msgpack: %zu trailing bytes after the message", len - pos);
    return SPECD_OK;
}

int proto_mp_unpack_map(const void *buf, size_t len, msgpack_unpacked *up, const char *what,
                        char *err, size_t err_size) {
    if (!buf || len == 0)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s: empty message", what);
    if (len > PROTO_BODY_MAX)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s: message of %zu bytes exceeds %d",
                          what, len, PROTO_BODY_MAX);
    char why[160];
    if (proto_mp_precheck(buf, len, PROTO_MP_MAX_DEPTH, why, sizeof why) != SPECD_OK)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s: %s", what, why);
    size_t off = 0;
    msgpack_unpack_return r = msgpack_unpack_next(up, buf, len, &off);
    if (r == MSGPACK_UNPACK_NOMEM_ERROR)
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "%s: out of memory unpacking", what);
    if (r != MSGPACK_UNPACK_SUCCESS || off != len)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s: malformed msgpack (code %d)", what,
                          (int)r);
    if (up->data.type != MSGPACK_OBJECT_MAP)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s: expected a map, got %s", what,
                          proto_mp_type_name(up->data.type));
    return SPECD_OK;
}

// ---- reading maps ----------------------------------------------------------------------------

const char *proto_mp_type_name(msgpack_object_type type) {
    switch (type) {
    case MSGPACK_OBJECT_NIL:
        return "nil";
    case MSGPACK_OBJECT_BOOLEAN:
        return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return "positive integer";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return "negative integer";
    case MSGPACK_OBJECT_FLOAT32:
        return "float32";
    case MSGPACK_OBJECT_FLOAT64:
        return "float64";
    case MSGPACK_OBJECT_STR:
        return "str";
    case MSGPACK_OBJECT_ARRAY:
        return "array";
    case MSGPACK_OBJECT_MAP:
        return "map";
    case MSGPACK_OBJECT_BIN:
        return "bin";
    case MSGPACK_OBJECT_EXT:
        return "ext";
    default:
        return "unknown type";
    }
}

static bool key_is(const msgpack_object *key, const char *name) {
    size_t n = strlen(name);
    return key->via.str.size == n && memcmp(key->via.str.ptr, name, n) == 0;
}

int proto_mp_check_version(const msgpack_object *map, const char *what, char *err,
                           size_t err_size) {
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key, *v = &map->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR || !key_is(k, "version"))
            continue;
        if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                              "%s.version: expected an unsigned integer, got %s", what,
                              proto_mp_type_name(v->type));
        if (v->via.u64 != PROTO_VERSION)
            return specd_fail(err, err_size, SPECD_ERR_UNSUPPORTED,
                              "%s: unsupported version %llu (this build speaks version %d)", what,
                              (unsigned long long)v->via.u64, PROTO_VERSION);
        return SPECD_OK;
    }
    return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s: missing required key \"version\"",
                      what);
}

static int read_uint(const msgpack_object *v, uint64_t max, uint64_t *out, const char *path,
                     const char *key, char *err, size_t err_size) {
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s.%s: %lld is negative", path, key,
                          (long long)v->via.i64);
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "%s.%s: expected an unsigned integer, got %s", path, key,
                          proto_mp_type_name(v->type));
    if (v->via.u64 > max)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s.%s: %llu is out of range (max %llu)",
                          path, key, (unsigned long long)v->via.u64, (unsigned long long)max);
    *out = v->via.u64;
    return SPECD_OK;
}

static int read_f64(const msgpack_object *v, double *out, const char *path, const char *key,
                    char *err, size_t err_size) {
    double d;
    if (v->type == MSGPACK_OBJECT_FLOAT32 || v->type == MSGPACK_OBJECT_FLOAT64)
        d = v->via.f64;
    else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        d = (double)v->via.u64;
    else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        d = (double)v->via.i64;
    else
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s.%s: expected a number, got %s", path,
                          key, proto_mp_type_name(v->type));
    if (!isfinite(d) || d < 0)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "%s.%s: %g is out of range (finite, >= 0)", path, key, d);
    *out = d;
    return SPECD_OK;
}

static int read_str(const msgpack_object *v, char *out, size_t cap, const char *path,
                    const char *key, char *err, size_t err_size) {
    if (v->type != MSGPACK_OBJECT_STR)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s.%s: expected a str, got %s", path,
                          key, proto_mp_type_name(v->type));
    size_t n = v->via.str.size;
    if (n >= cap)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "%s.%s: string of %zu bytes is too long (max %zu)", path, key, n,
                          cap - 1);
    if (n > 0 && memchr(v->via.str.ptr, '\0', n))
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s.%s: string holds a NUL byte", path,
                          key);
    if (n > 0)
        memcpy(out, v->via.str.ptr, n);
    out[n] = '\0';
    return SPECD_OK;
}

static int read_u32_array(const msgpack_object *v, uint32_t *out, size_t cap, const char *path,
                          const char *key, char *err, size_t err_size) {
    if (v->type != MSGPACK_OBJECT_ARRAY)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s.%s: expected an array, got %s", path,
                          key, proto_mp_type_name(v->type));
    if (v->via.array.size > cap)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "%s.%s: %u entries is out of range (max %zu)", path, key,
                          v->via.array.size, cap);
    for (uint32_t i = 0; i < v->via.array.size; i++) {
        char item[48];
        snprintf(item, sizeof item, "%s[%u]", key, i);
        uint64_t x;
        int rc = read_uint(&v->via.array.ptr[i], UINT32_MAX, &x, path, item, err, err_size);
        if (rc != SPECD_OK)
            return rc;
        out[i] = (uint32_t)x;
    }
    return SPECD_OK;
}

static int read_field(const struct proto_mp_field *f, const msgpack_object *v, void *dst,
                      const char *path, char *err, size_t err_size) {
    char *at = (char *)dst + f->offset;
    uint64_t x;
    int rc = SPECD_OK;
    switch (f->type) {
    case PROTO_MP_SKIP:
        return SPECD_OK;
    case PROTO_MP_BOOL:
        if (v->type != MSGPACK_OBJECT_BOOLEAN)
            return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s.%s: expected a bool, got %s",
                              path, f->key, proto_mp_type_name(v->type));
        *(bool *)at = v->via.boolean;
        return SPECD_OK;
    case PROTO_MP_U32:
        rc = read_uint(v, f->max ? f->max : UINT32_MAX, &x, path, f->key, err, err_size);
        if (rc == SPECD_OK)
            *(uint32_t *)at = (uint32_t)x;
        return rc;
    case PROTO_MP_U64:
        rc = read_uint(v, f->max ? f->max : UINT64_MAX, &x, path, f->key, err, err_size);
        if (rc == SPECD_OK)
            *(uint64_t *)at = x;
        return rc;
    case PROTO_MP_F64:
        return read_f64(v, (double *)at, path, f->key, err, err_size);
    case PROTO_MP_STR:
        return read_str(v, at, f->cap, path, f->key, err, err_size);
    case PROTO_MP_U32_ARRAY:
        return read_u32_array(v, (uint32_t *)at, f->cap, path, f->key, err, err_size);
    case PROTO_MP_CUSTOM:
        return f->parse(v, dst, path, err, err_size);
    }
    return specd_fail(err, err_size, SPECD_ERR_INVALID, "%s.%s: bad field table", path, f->key);
}

int proto_mp_read_map(const msgpack_object *map, const struct proto_mp_field *fields,
                      size_t n_fields, void *dst, const char *path, char *err, size_t err_size) {
    if (map->type != MSGPACK_OBJECT_MAP)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s: expected a map, got %s", path,
                          proto_mp_type_name(map->type));
    if (n_fields > PROTO_MP_MAX_FIELDS)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "%s: field table too large", path);
    uint64_t seen = 0;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                              "%s: map key #%u is a %s, keys must be strings", path, i,
                              proto_mp_type_name(k->type));
        for (size_t f = 0; f < n_fields; f++) {
            if (!key_is(k, fields[f].key))
                continue;
            if (seen & (1ull << f))
                return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s: duplicate key \"%s\"", path,
                                  fields[f].key);
            seen |= 1ull << f;
            int rc = read_field(&fields[f], &map->via.map.ptr[i].val, dst, path, err, err_size);
            if (rc != SPECD_OK)
                return rc;
            break;
        }
    }
    for (size_t f = 0; f < n_fields; f++)
        if (fields[f].required && !(seen & (1ull << f)))
            return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s: missing required key \"%s\"",
                              path, fields[f].key);
    return SPECD_OK;
}

// ---- packing ---------------------------------------------------------------------------------

int proto_mp_pack_cstr(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    int rc = msgpack_pack_str(pk, n);
    return rc ? rc : msgpack_pack_str_body(pk, s, n);
}

int proto_mp_pack_u32_trimmed(msgpack_packer *pk, const uint32_t *values, size_t n) {
    while (n > 0 && values[n - 1] == 0)
        n--;
    int rc = msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = msgpack_pack_uint32(pk, values[i]);
    return rc;
}

int proto_mp_pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t value) {
    return proto_mp_pack_cstr(pk, key) || msgpack_pack_uint64(pk, value);
}

int proto_mp_pack_kv_bool(msgpack_packer *pk, const char *key, bool value) {
    return proto_mp_pack_cstr(pk, key) || (value ? msgpack_pack_true(pk) : msgpack_pack_false(pk));
}

int proto_mp_pack_kv_f64(msgpack_packer *pk, const char *key, double value) {
    return proto_mp_pack_cstr(pk, key) || msgpack_pack_double(pk, value);
}

int proto_mp_pack_kv_str(msgpack_packer *pk, const char *key, const char *value) {
    return proto_mp_pack_cstr(pk, key) || proto_mp_pack_cstr(pk, value);
}

int proto_mp_pack_kv_u32s(msgpack_packer *pk, const char *key, const uint32_t *values, size_t n) {
    return proto_mp_pack_cstr(pk, key) || proto_mp_pack_u32_trimmed(pk, values, n);
}
