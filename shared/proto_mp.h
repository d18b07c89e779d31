// Internal to the proto module (shared/proto_*.c): bounded msgpack unpacking and a table-driven
// reader that copies the keys of a msgpack map into a C struct with type and range checks.
#ifndef SPECD_SHARED_PROTO_MP_H
#define SPECD_SHARED_PROTO_MP_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_MP_MAX_DEPTH 16 // nesting accepted in a body (msgpack-c itself stops at 32)
#define PROTO_MP_MAX_FIELDS 64

// Checks, without allocating, that buf[0..len) holds exactly one msgpack object, nested at most
// max_depth (<= PROTO_MP_MAX_DEPTH) deep, whose declared lengths fit in the bytes present. This
// bounds what msgpack-c allocates afterwards (it reserves an array's slots from the declared
// count before reading them). Returns 0 or SPECD_ERR_FORMAT.
int proto_mp_precheck(const unsigned char *buf, size_t len, int max_depth, char *err,
                      size_t err_size);

// Prechecks and unpacks one body whose root must be a map; `what` ("metrics", "settings")
// starts error messages. `up` must have been initialised with msgpack_unpacked_init; the caller
// destroys it whatever this returns. Returns 0, SPECD_ERR_FORMAT, SPECD_ERR_NOMEM.
int proto_mp_unpack_map(const void *buf, size_t len, msgpack_unpacked *up, const char *what,
                        char *err, size_t err_size);

// Finds the "version" key of a map. Returns 0 when it equals PROTO_VERSION, SPECD_ERR_FORMAT
// when missing or not an unsigned integer, SPECD_ERR_UNSUPPORTED for another version.
int proto_mp_check_version(const msgpack_object *map, const char *what, char *err, size_t err_size);

enum proto_mp_type {
    PROTO_MP_SKIP,      // known key checked elsewhere (e.g. "version"); only duplicates checked
    PROTO_MP_BOOL,      // bool
    PROTO_MP_U32,       // uint32_t, value <= max (max 0: UINT32_MAX)
    PROTO_MP_U64,       // uint64_t, value <= max (max 0: UINT64_MAX)
    PROTO_MP_F64,       // double, finite and >= 0; msgpack float or integer
    PROTO_MP_STR,       // char[cap], at most cap-1 bytes, no NUL bytes
    PROTO_MP_U32_ARRAY, // uint32_t[cap]: at most cap entries, the rest left as they are
    PROTO_MP_CUSTOM,    // parse(value, dst, path, ...) does the work
};

struct proto_mp_field {
    const char *key;
    enum proto_mp_type type;
    bool required;
    size_t offset; // of the destination inside the struct passed as dst
    size_t cap;    // STR: buffer size; U32_ARRAY: entries
    uint64_t max;  // U32 / U64
    int (*parse)(const msgpack_object *value, void *dst, const char *path, char *err,
                 size_t err_size);
};

// Reads every known key of `map` into dst. Unknown keys are skipped; keys must be strings; a
// known key may appear once. `path` names the map in messages ("metrics.classes[2]"). Returns 0
// or SPECD_ERR_FORMAT; dst may be partly written on failure.
int proto_mp_read_map(const msgpack_object *map, const struct proto_mp_field *fields,
                      size_t n_fields, void *dst, const char *path, char *err, size_t err_size);

// "map", "str", "positive integer" ... for messages.
const char *proto_mp_type_name(msgpack_object_type type);

// Packs a string; returns msgpack's nonzero on allocation failure.
int proto_mp_pack_cstr(msgpack_packer *pk, const char *s);
// Packs u32 values[0..n) trimmed of trailing zeros (the decoder fills absent entries with 0).
int proto_mp_pack_u32_trimmed(msgpack_packer *pk, const uint32_t *values, size_t n);
// Pack one key and its value; nonzero on allocation failure.
int proto_mp_pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t value);
int proto_mp_pack_kv_bool(msgpack_packer *pk, const char *key, bool value);
int proto_mp_pack_kv_f64(msgpack_packer *pk, const char *key, double value);
int proto_mp_pack_kv_str(msgpack_packer *pk, const char *key, const char *value);
int proto_mp_pack_kv_u32s(msgpack_packer *pk, const char *key, const uint32_t *values, size_t n);

#endif
