// GGUF parser and validator: walks the whole file once with a bounds-checked cursor and rejects
// anything malformed before any accessor can see it. This is the security boundary for model
// files: no read ever goes past the buffer, whatever the bytes.
#include "worker/engine/gguf_internal.h"

#include "shared/check.h"
#include "shared/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_ALIGNMENT_KEY "general.alignment"
// Smallest possible encodings, used to reject counts that the remaining bytes cannot hold.
#define GGUF_MIN_KV_BYTES 13u // key length (8) + type (4) + a one-byte value
#define GGUF_MIN_TENSOR_BYTES                                                                      \
    32u // name length (8) + n_dims (4) + ne[0] (8) + type (4) + offset (8)

typedef unsigned long long ull; // for printf

// ---- the cursor ---------------------------------------------------------------------------------

struct parser {
    const uint8_t *base;
    size_t size;
    size_t pos;
    struct gguf_params params;
    char where[160]; // what is being parsed, for messages: "metadata key 3 ('general.name')"
    char *err;
    size_t err_size;
};

static void set_where(struct parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_where(struct parser *p, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->where, sizeof p->where, fmt, ap);
    va_end(ap);
}

// Copies at most 48 bytes of s into out as printable ASCII, for messages.
static const char *printable(struct gguf_str s, char out[64]) {
    size_t n = s.len < 48 ? (size_t)s.len : 48, j = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s.data[i];
        out[j++] = (c >= 0x20 && c < 0x7f) ? c : '?';
    }
    if (n < s.len) {
        memcpy(out + j, "...", 3);
        j += 3;
    }
    out[j] = '\0';
    return out;
}

static size_t remaining(const struct parser *p) {
    return p->size - p->pos;
}

static int truncated(struct parser *p, uint64_t need) {
    return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                      "file truncated in %s: need %llu bytes at offset %zu, only %zu left",
                      p->where, (ull)need, p->pos, remaining(p));
}

// Advances over n bytes and points *out at them; a truncation error when they are not there.
static int take(struct parser *p, uint64_t n, const uint8_t **out) {
    if (n > remaining(p))
        return truncated(p, n);
    *out = p->base + p->pos;
    p->pos += (size_t)n;
    return SPECD_OK;
}

static int read_u32(struct parser *p, uint32_t *v) {
    const uint8_t *b = NULL;
    int rc = take(p, 4, &b);
    if (rc == SPECD_OK)
        *v = gguf_load_u32(b);
    return rc;
}

static int read_u64(struct parser *p, uint64_t *v) {
    const uint8_t *b = NULL;
    int rc = take(p, 8, &b);
    if (rc == SPECD_OK)
        *v = gguf_load_u64(b);
    return rc;
}

// A length-prefixed string; `what` names it in messages ("key", "value", "tensor name").
static int read_str(struct parser *p, struct gguf_str *s, const char *what) {
    uint64_t len;
    const uint8_t *b = NULL;
    int rc = read_u64(p, &len);
    if (rc != SPECD_OK)
        return rc;
    if (len > p->params.max_str_len)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          "%s: %s string length %llu exceeds the maximum %llu", p->where, what,
                          (ull)len, (ull)p->params.max_str_len);
    if ((rc = take(p, len, &b)) != SPECD_OK)
        return rc;
    s->len = len;
    s->data = (const char *)b;
    return SPECD_OK;
}

// ---- header -------------------------------------------------------------------------------------

static int check_version(struct parser *p, uint32_t version) {
    if (version == 2 || version == 3)
        return SPECD_OK;
    uint32_t swapped = __builtin_bswap32(version);
    if (swapped >= 1 && swapped <= 3)
        return specd_fail(p->err, p->err_size, SPECD_ERR_UNSUPPORTED,
                          "big-endian GGUF (version %u byte-swapped) is not supported", swapped);
    return specd_fail(p->err, p->err_size, SPECD_ERR_UNSUPPORTED,
                      "GGUF version %u is not supported (only versions 2 and 3)", version);
}

static int parse_header(struct parser *p, gguf_file *f) {
    const uint8_t *magic = NULL;
    int rc;
    set_where(p, "header");
    if ((rc = take(p, 4, &magic)) != SPECD_OK)
        return rc;
    if (memcmp(magic, "GGUF", 4) != 0)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          "bad magic: not a GGUF file (starts with %02x %02x %02x %02x)", magic[0],
                          magic[1], magic[2], magic[3]);
    if ((rc = read_u32(p, &f->version)) != SPECD_OK || (rc = check_version(p, f->version)) != 0 ||
        (rc = read_u64(p, &f->n_tensors)) != SPECD_OK || (rc = read_u64(p, &f->n_kv)) != SPECD_OK)
        return rc;
    if (f->n_tensors > p->params.max_tensors)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          "header declares %llu tensors, more than the maximum %llu",
                          (ull)f->n_tensors, (ull)p->params.max_tensors);
    if (f->n_kv > p->params.max_kv)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          "header declares %llu metadata pairs, more than the maximum %llu",
                          (ull)f->n_kv, (ull)p->params.max_kv);
    if (f->n_kv > remaining(p) / GGUF_MIN_KV_BYTES)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          "header declares %llu metadata pairs but only %zu bytes follow "
                          "(file truncated or count corrupt)",
                          (ull)f->n_kv, remaining(p));
    return SPECD_OK;
}

// ---- metadata -----------------------------------------------------------------------------------

static int check_bools(struct parser *p, const uint8_t *b, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        if (b[i] > 1)
            return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                              "%s: bool value %u is neither 0 nor 1", p->where, b[i]);
    return SPECD_OK;
}

static int parse_string_elems(struct parser *p, uint64_t n) {
    if (n > remaining(p) / 8)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          "%s: array of %llu strings (8 or more bytes each) but only %zu bytes "
                          "left (file truncated or count corrupt)",
                          p->where, (ull)n, remaining(p));
    for (uint64_t i = 0; i < n; i++) {
        size_t start = p->pos;
        uint64_t len;
        if (remaining(p) >= 8 && (len = gguf_load_u64(p->base + p->pos)) <= p->params.max_str_len &&
            len <= remaining(p) - 8) {
            p->pos += 8 + (size_t)len;
            continue;
        }
        // Say which element, then let read_str report the problem.
        size_t w = strlen(p->where);
        snprintf(p->where + w, sizeof p->where - w, " element %llu", (ull)i);
        p->pos = start;
        struct gguf_str s;
        int rc = read_str(p, &s, "element");
        SPECD_CHECK(rc != SPECD_OK);
        return rc;
    }
    return SPECD_OK;
}

static int parse_array(struct parser *p, struct gguf_kv *kv) {
    uint32_t elem_type;
    uint64_t n;
    int rc;
    if ((rc = read_u32(p, &elem_type)) != SPECD_OK)
        return rc;
    if (elem_type == GGUF_TYPE_ARRAY)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          "%s: nested arrays are not supported", p->where);
    if (elem_type > GGUF_TYPE_FLOAT64)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          "%s: unknown array element type %u", p->where, elem_type);
    if ((rc = read_u64(p, &n)) != SPECD_OK)
        return rc;
    if (n > p->params.max_array_len)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          "%s: array of %llu elements exceeds the maximum length %llu", p->where,
                          (ull)n, (ull)p->params.max_array_len);
    kv->elem_type = (enum gguf_type)elem_type;
    kv->len = n;
    kv->value = p->base + p->pos;
    if (elem_type == GGUF_TYPE_STRING)
        return parse_string_elems(p, n);
    size_t elem_size = gguf_value_size(elem_type);
    if (n > remaining(p) / elem_size)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          "%s: array of %llu %s elements needs more than the %zu bytes left "
                          "(file truncated or count corrupt)",
                          p->where, (ull)n, gguf_value_type_name(elem_type), remaining(p));
    const uint8_t *b = NULL;
    SPECD_CHECK(take(p, n * elem_size, &b) == SPECD_OK);
    return elem_type == GGUF_TYPE_BOOL ? check_bools(p, b, n) : SPECD_OK;
}

static int parse_value(struct parser *p, struct gguf_kv *kv) {
    int rc;
    if (kv->type == GGUF_TYPE_ARRAY)
        return parse_array(p, kv);
    if (kv->type == GGUF_TYPE_STRING) {
        struct gguf_str s;
        if ((rc = read_str(p, &s, "value")) == SPECD_OK) {
            kv->value = (const uint8_t *)s.data;
            kv->len = s.len;
        }
        return rc;
    }
    if ((rc = take(p, gguf_value_size(kv->type), &kv->value)) != SPECD_OK)
        return rc;
    return kv->type == GGUF_TYPE_BOOL ? check_bools(p, kv->value, 1) : SPECD_OK;
}

static int parse_kv(struct parser *p, uint64_t i, struct gguf_kv *kv) {
    char name[64];
    uint32_t type;
    int rc;
    set_where(p, "metadata key %llu", (ull)i);
    if ((rc = read_str(p, &kv->key, "key")) != SPECD_OK)
        return rc;
    if (kv->key.len == 0)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          "metadata key %llu has an empty name", (ull)i);
    set_where(p, "metadata key %llu ('%s')", (ull)i, printable(kv->key, name));
    if ((rc = read_u32(p, &type)) != SPECD_OK)
        return rc;
    if (type > GGUF_TYPE_FLOAT64)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT, "%s: unknown value type %u",
                          p->where, type);
    kv->type = (enum gguf_type)type;
    return parse_value(p, kv);
}

static int parse_all_kv(struct parser *p, gguf_file *f) {
    int rc;
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof *f->kv);
    if (!f->kv || gguf_index_init(&f->kv_index, f->n_kv) != SPECD_OK)
        return specd_fail(p->err, p->err_size, SPECD_ERR_NOMEM, "out of memory for metadata");
    for (uint64_t i = 0; i < f->n_kv; i++) {
        if ((rc = parse_kv(p, i, &f->kv[i])) != SPECD_OK)
            return rc;
        gguf_index_set(&f->kv_index, i, f->kv[i].key);
    }
    uint64_t a, b;
    if (!gguf_index_sort(&f->kv_index, &a, &b)) {
        char name[64];
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          "duplicate key '%s' (metadata keys %llu and %llu)",
                          printable(f->kv[a].key, name), (ull)a, (ull)b);
    }
    return SPECD_OK;
}

static int read_alignment(struct parser *p, gguf_file *f) {
    int64_t i = gguf_index_find(&f->kv_index, GGUF_ALIGNMENT_KEY);
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (i < 0)
        return SPECD_OK;
    const struct gguf_kv *kv = &f->kv[i];
    if (kv->type != GGUF_TYPE_UINT32)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          GGUF_ALIGNMENT_KEY " has type %s, expected uint32",
                          gguf_value_type_name(kv->type));
    uint32_t a = gguf_load_u32(kv->value);
    if (a == 0 || (a & (a - 1)) != 0)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          GGUF_ALIGNMENT_KEY " %u is not a power of two", a);
    f->alignment = a;
    return SPECD_OK;
}

// ---- tensor infos -------------------------------------------------------------------------------

static bool dtype_supported(uint32_t t) {
    return ggml_dtype_block_bytes((enum ggml_dtype)t) != 0;
}

// Checks the type and shape of a parsed tensor info and computes its size.
static int check_tensor_shape(struct parser *p, struct gguf_tensor_info *t, uint32_t type) {
    if (!dtype_supported(type))
        return specd_fail(p->err, p->err_size, SPECD_ERR_UNSUPPORTED,
                          "%s: tensor type %u (%s) is not supported (supported: F32, F16, BF16, "
                          "Q8_0, Q4_0)",
                          p->where, type, ggml_dtype_name((enum ggml_dtype)type));
    t->type = (enum ggml_dtype)type;
    int64_t n_elems = 1;
    for (uint32_t d = 0; d < t->n_dims; d++)
        if (__builtin_mul_overflow(n_elems, t->ne[d], &n_elems))
            return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                              "%s: element count overflows 64 bits", p->where);
    size_t block_elems = ggml_dtype_block_elems(t->type);
    if (t->ne[0] % (int64_t)block_elems != 0)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          "%s: ne[0] = %lld is not a multiple of the %s block size %zu", p->where,
                          (long long)t->ne[0], ggml_dtype_name(t->type), block_elems);
    uint64_t blocks = (uint64_t)n_elems / block_elems;
    if (__builtin_mul_overflow(blocks, (uint64_t)ggml_dtype_block_bytes(t->type), &t->n_bytes))
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT, "%s: byte size overflows 64 bits",
                          p->where);
    return SPECD_OK;
}

static int parse_dims(struct parser *p, struct gguf_tensor_info *t) {
    int rc;
    if ((rc = read_u32(p, &t->n_dims)) != SPECD_OK)
        return rc;
    if (t->n_dims < 1 || t->n_dims > 4)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT, "%s: n_dims %u is outside 1..4",
                          p->where, t->n_dims);
    for (uint32_t d = 0; d < 4; d++) {
        uint64_t ne = 1;
        if (d < t->n_dims && (rc = read_u64(p, &ne)) != SPECD_OK)
            return rc;
        if ((int64_t)ne <= 0)
            return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                              "%s: dimension ne[%u] = %lld must be positive", p->where, d,
                              (long long)ne);
        t->ne[d] = (int64_t)ne;
    }
    return SPECD_OK;
}

static int parse_tensor_info(struct parser *p, uint64_t i, uint32_t alignment,
                             struct gguf_tensor_info *t) {
    char name[64];
    uint32_t type;
    int rc;
    set_where(p, "tensor info %llu", (ull)i);
    if ((rc = read_str(p, &t->name, "tensor name")) != SPECD_OK)
        return rc;
    if (t->name.len == 0)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT, "tensor %llu has an empty name",
                          (ull)i);
    set_where(p, "tensor %llu ('%s')", (ull)i, printable(t->name, name));
    if ((rc = parse_dims(p, t)) != SPECD_OK || (rc = read_u32(p, &type)) != SPECD_OK ||
        (rc = read_u64(p, &t->offset)) != SPECD_OK ||
        (rc = check_tensor_shape(p, t, type)) != SPECD_OK)
        return rc;
    if (t->offset % alignment != 0)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          "%s: data offset %llu is not aligned to %u", p->where, (ull)t->offset,
                          alignment);
    return SPECD_OK;
}

static int parse_all_tensor_infos(struct parser *p, gguf_file *f) {
    int rc;
    set_where(p, "tensor infos");
    if (f->n_tensors > remaining(p) / GGUF_MIN_TENSOR_BYTES)
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          "header declares %llu tensors but only %zu bytes follow the metadata "
                          "(file truncated or count corrupt)",
                          (ull)f->n_tensors, remaining(p));
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensors);
    if (!f->tensors || gguf_index_init(&f->tensor_index, f->n_tensors) != SPECD_OK)
        return specd_fail(p->err, p->err_size, SPECD_ERR_NOMEM, "out of memory for tensors");
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        if ((rc = parse_tensor_info(p, i, f->alignment, &f->tensors[i])) != SPECD_OK)
            return rc;
        gguf_index_set(&f->tensor_index, i, f->tensors[i].name);
    }
    uint64_t a, b;
    if (!gguf_index_sort(&f->tensor_index, &a, &b)) {
        char name[64];
        return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                          "duplicate tensor name '%s' (tensors %llu and %llu)",
                          printable(f->tensors[a].name, name), (ull)a, (ull)b);
    }
    return SPECD_OK;
}

// ---- tensor data --------------------------------------------------------------------------------

struct extent {
    uint64_t offset, n_bytes, tensor;
};

static int extent_cmp(const void *a, const void *b) {
    const struct extent *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int check_overlaps(struct parser *p, const gguf_file *f) {
    if (f->n_tensors < 2)
        return SPECD_OK;
    struct extent *e = malloc(f->n_tensors * sizeof *e);
    if (!e)
        return specd_fail(p->err, p->err_size, SPECD_ERR_NOMEM, "out of memory for tensors");
    for (uint64_t i = 0; i < f->n_tensors; i++)
        e[i] = (struct extent){f->tensors[i].offset, f->tensors[i].n_bytes, i};
    qsort(e, f->n_tensors, sizeof *e, extent_cmp);
    int rc = SPECD_OK;
    for (uint64_t i = 1; i < f->n_tensors && rc == SPECD_OK; i++) {
        if (e[i].offset >= e[i - 1].offset + e[i - 1].n_bytes)
            continue;
        char a[64], b[64];
        rc = specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                        "tensors %llu ('%s') and %llu ('%s') overlap in the data section",
                        (ull)e[i - 1].tensor, printable(f->tensors[e[i - 1].tensor].name, a),
                        (ull)e[i].tensor, printable(f->tensors[e[i].tensor].name, b));
    }
    free(e);
    return rc;
}

// Finds the data section and checks that every tensor lies inside it, without overlaps.
static int place_tensors(struct parser *p, gguf_file *f) {
    uint64_t end_of_infos = p->pos;
    f->data_start = (end_of_infos + f->alignment - 1) / f->alignment * f->alignment;
    uint64_t avail = f->data_start <= p->size ? p->size - f->data_start : 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        struct gguf_tensor_info *t = &f->tensors[i];
        char name[64];
        if (t->offset > avail || t->n_bytes > avail - t->offset)
            return specd_fail(p->err, p->err_size, SPECD_ERR_FORMAT,
                              "tensor %llu ('%s'): data at offset %llu (%llu bytes) is out of "
                              "bounds of the %llu-byte data section (file truncated?)",
                              (ull)i, printable(t->name, name), (ull)t->offset, (ull)t->n_bytes,
                              (ull)avail);
        t->data = p->base + f->data_start + t->offset;
    }
    return check_overlaps(p, f);
}

// ---- the whole file -----------------------------------------------------------------------------

static int parse_file(struct parser *p, gguf_file *f) {
    int rc;
    if ((rc = parse_header(p, f)) != SPECD_OK || (rc = parse_all_kv(p, f)) != SPECD_OK ||
        (rc = read_alignment(p, f)) != SPECD_OK || (rc = parse_all_tensor_infos(p, f)) != SPECD_OK)
        return rc;
    return place_tensors(p, f);
}

int gguf_parse(gguf_file *f, const struct gguf_params *params, char *err, size_t err_size) {
    struct parser p = {.base = f->base, .size = f->size, .err = err, .err_size = err_size};
    p.params = params ? *params : gguf_default_params();
    return parse_file(&p, f);
}
