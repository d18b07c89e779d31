// GGUF v3 writer. Metadata pairs are serialised as they are added; tensors are kept until
// gguf_writer_finish lays out the infos and the aligned data section.
#include "worker/engine/gguf_write.h"

#include "shared/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GGUF_WRITER_DEFAULT_ALIGNMENT 32u

struct byte_buf {
    uint8_t *data; // [cap]
    size_t len, cap;
};

struct writer_tensor {
    char *name;
    uint32_t n_dims;
    int64_t ne[4];
    uint32_t type;
    uint8_t *data; // [n_bytes]
    size_t n_bytes;
};

struct gguf_writer {
    struct byte_buf kv; // the serialised metadata pairs
    char **keys;        // [n_kv], for duplicate checks
    uint64_t n_kv, keys_cap;
    struct writer_tensor *tensors; // [n_tensors]
    uint64_t n_tensors, tensors_cap;
    uint32_t alignment;
};

// ---- bytes ------------------------------------------------------------------------------------

static int buf_reserve(struct byte_buf *b, size_t extra) {
    if (extra <= b->cap - b->len)
        return SPECD_OK;
    if (extra > SIZE_MAX / 2 - b->len)
        return SPECD_ERR_NOMEM;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return SPECD_ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    return SPECD_OK;
}

static int buf_put(struct byte_buf *b, const void *src, size_t n) {
    if (buf_reserve(b, n) != SPECD_OK)
        return SPECD_ERR_NOMEM;
    if (n)
        memcpy(b->data + b->len, src, n);
    b->len += n;
    return SPECD_OK;
}

// Little-endian integers of `bytes` bytes.
static int buf_put_le(struct byte_buf *b, uint64_t v, size_t bytes) {
    uint8_t le[8];
    for (size_t i = 0; i < bytes; i++)
        le[i] = (uint8_t)(v >> (8 * i));
    return buf_put(b, le, bytes);
}

static int buf_put_str(struct byte_buf *b, const char *s, size_t len) {
    int rc = buf_put_le(b, len, 8);
    return rc == SPECD_OK ? buf_put(b, s, len) : rc;
}

static int buf_pad(struct byte_buf *b, uint32_t alignment) {
    static const uint8_t zeros[64];
    while (b->len % alignment != 0) {
        size_t n = alignment - b->len % alignment;
        if (buf_put(b, zeros, n < sizeof zeros ? n : sizeof zeros) != SPECD_OK)
            return SPECD_ERR_NOMEM;
    }
    return SPECD_OK;
}

// ---- the writer -------------------------------------------------------------------------------

gguf_writer *gguf_writer_new(void) {
    gguf_writer *w = calloc(1, sizeof *w);
    if (w)
        w->alignment = GGUF_WRITER_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w)
        return;
    for (uint64_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->keys);
    free(w->tensors);
    free(w->kv.data);
    free(w);
}

// Grows an array of elem_size-byte items so that one more fits.
static int grow(void **items, uint64_t n, uint64_t *cap, size_t elem_size) {
    if (n < *cap)
        return SPECD_OK;
    uint64_t new_cap = *cap ? *cap * 2 : 16;
    void *p = realloc(*items, new_cap * elem_size);
    if (!p)
        return SPECD_ERR_NOMEM;
    *items = p;
    *cap = new_cap;
    return SPECD_OK;
}

static bool has_key(const gguf_writer *w, const char *key) {
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0)
            return true;
    return false;
}

// Appends one pair: key, type, then `value` (already encoded). All or nothing.
static int add_kv(gguf_writer *w, const char *key, enum gguf_type type, const struct byte_buf *v) {
    if (!w || !key || !*key || has_key(w, key))
        return SPECD_ERR_INVALID;
    char *copy = strdup(key);
    size_t mark = w->kv.len;
    if (!copy || grow((void **)&w->keys, w->n_kv, &w->keys_cap, sizeof *w->keys) != SPECD_OK ||
        buf_put_str(&w->kv, key, strlen(key)) != SPECD_OK ||
        buf_put_le(&w->kv, (uint64_t)type, 4) != SPECD_OK ||
        buf_put(&w->kv, v->data, v->len) != SPECD_OK) {
        free(copy);
        w->kv.len = mark;
        return SPECD_ERR_NOMEM;
    }
    w->keys[w->n_kv++] = copy;
    return SPECD_OK;
}

static size_t scalar_bytes(enum gguf_type t) {
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL:
        return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16:
        return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32:
        return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

// Encodes one host-order scalar of type t into v.
static int put_scalar(struct byte_buf *v, enum gguf_type t, const void *src) {
    size_t n = scalar_bytes(t);
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t bits;
    if (t == GGUF_TYPE_BOOL) {
        bool x;
        memcpy(&x, src, sizeof x);
        bits = x ? 1 : 0;
    } else if (n == 1) {
        memcpy(&u8, src, 1);
        bits = u8;
    } else if (n == 2) {
        memcpy(&u16, src, 2);
        bits = u16;
    } else if (n == 4) {
        memcpy(&u32, src, 4);
        bits = u32;
    } else {
        memcpy(&bits, src, 8);
    }
    return buf_put_le(v, bits, n);
}

static int add_scalar(gguf_writer *w, const char *key, enum gguf_type t, const void *src) {
    uint8_t bytes[8];
    struct byte_buf v = {bytes, 0, sizeof bytes};
    put_scalar(&v, t, src);
    return add_kv(w, key, t, &v);
}

int gguf_writer_add_u8(gguf_writer *w, const char *key, uint8_t v) {
    return add_scalar(w, key, GGUF_TYPE_UINT8, &v);
}

int gguf_writer_add_i8(gguf_writer *w, const char *key, int8_t v) {
    return add_scalar(w, key, GGUF_TYPE_INT8, &v);
}

int gguf_writer_add_u16(gguf_writer *w, const char *key, uint16_t v) {
    return add_scalar(w, key, GGUF_TYPE_UINT16, &v);
}

int gguf_writer_add_i16(gguf_writer *w, const char *key, int16_t v) {
    return add_scalar(w, key, GGUF_TYPE_INT16, &v);
}

int gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v) {
    bool is_alignment = key && strcmp(key, "general.alignment") == 0;
    if (is_alignment && (v == 0 || (v & (v - 1)) != 0))
        return SPECD_ERR_INVALID;
    int rc = add_scalar(w, key, GGUF_TYPE_UINT32, &v);
    if (rc == SPECD_OK && is_alignment)
        w->alignment = v;
    return rc;
}

int gguf_writer_set_alignment(gguf_writer *w, uint32_t alignment) {
    return gguf_writer_add_u32(w, "general.alignment", alignment);
}

int gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v) {
    return add_scalar(w, key, GGUF_TYPE_INT32, &v);
}

int gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t v) {
    return add_scalar(w, key, GGUF_TYPE_UINT64, &v);
}

int gguf_writer_add_i64(gguf_writer *w, const char *key, int64_t v) {
    return add_scalar(w, key, GGUF_TYPE_INT64, &v);
}

int gguf_writer_add_f32(gguf_writer *w, const char *key, float v) {
    return add_scalar(w, key, GGUF_TYPE_FLOAT32, &v);
}

int gguf_writer_add_f64(gguf_writer *w, const char *key, double v) {
    return add_scalar(w, key, GGUF_TYPE_FLOAT64, &v);
}

int gguf_writer_add_bool(gguf_writer *w, const char *key, bool v) {
    return add_scalar(w, key, GGUF_TYPE_BOOL, &v);
}

int gguf_writer_add_str_n(gguf_writer *w, const char *key, const char *s, size_t len) {
    if (!s && len > 0)
        return SPECD_ERR_INVALID;
    struct byte_buf v = {0};
    int rc = buf_put_str(&v, s, len);
    if (rc == SPECD_OK)
        rc = add_kv(w, key, GGUF_TYPE_STRING, &v);
    free(v.data);
    return rc;
}

int gguf_writer_add_str(gguf_writer *w, const char *key, const char *s) {
    return s ? gguf_writer_add_str_n(w, key, s, strlen(s)) : SPECD_ERR_INVALID;
}

// ---- arrays -----------------------------------------------------------------------------------

static int put_array_header(struct byte_buf *v, enum gguf_type elem_type, uint64_t n) {
    int rc = buf_put_le(v, (uint64_t)elem_type, 4);
    return rc == SPECD_OK ? buf_put_le(v, n, 8) : rc;
}

int gguf_writer_add_array(gguf_writer *w, const char *key, enum gguf_type elem_type,
                          const void *elems, uint64_t n) {
    size_t size = scalar_bytes(elem_type);
    if (size == 0 || (!elems && n > 0))
        return SPECD_ERR_INVALID;
    size_t host_size = elem_type == GGUF_TYPE_BOOL ? sizeof(bool) : size;
    struct byte_buf v = {0};
    int rc = n > (SIZE_MAX - 16) / size ? SPECD_ERR_NOMEM : buf_reserve(&v, 12 + n * size);
    if (rc == SPECD_OK)
        rc = put_array_header(&v, elem_type, n);
    for (uint64_t i = 0; i < n && rc == SPECD_OK; i++)
        rc = put_scalar(&v, elem_type, (const uint8_t *)elems + i * host_size);
    if (rc == SPECD_OK)
        rc = add_kv(w, key, GGUF_TYPE_ARRAY, &v);
    free(v.data);
    return rc;
}

int gguf_writer_add_f32_array(gguf_writer *w, const char *key, const float *v, uint64_t n) {
    return gguf_writer_add_array(w, key, GGUF_TYPE_FLOAT32, v, n);
}

int gguf_writer_add_i32_array(gguf_writer *w, const char *key, const int32_t *v, uint64_t n) {
    return gguf_writer_add_array(w, key, GGUF_TYPE_INT32, v, n);
}

int gguf_writer_add_u32_array(gguf_writer *w, const char *key, const uint32_t *v, uint64_t n) {
    return gguf_writer_add_array(w, key, GGUF_TYPE_UINT32, v, n);
}

int gguf_writer_add_str_array(gguf_writer *w, const char *key, const char *const *strs,
                              uint64_t n) {
    if (!strs && n > 0)
        return SPECD_ERR_INVALID;
    for (uint64_t i = 0; i < n; i++)
        if (!strs[i])
            return SPECD_ERR_INVALID;
    struct byte_buf v = {0};
    int rc = put_array_header(&v, GGUF_TYPE_STRING, n);
    for (uint64_t i = 0; i < n && rc == SPECD_OK; i++)
        rc = buf_put_str(&v, strs[i], strlen(strs[i]));
    if (rc == SPECD_OK)
        rc = add_kv(w, key, GGUF_TYPE_ARRAY, &v);
    free(v.data);
    return rc;
}

// ---- tensors ----------------------------------------------------------------------------------

// Checks the shape and, for supported types, that n_bytes matches it.
static bool tensor_shape_ok(uint32_t n_dims, const int64_t *ne, enum ggml_dtype type,
                            size_t n_bytes) {
    if (n_dims < 1 || n_dims > 4 || !ne || n_bytes == 0)
        return false;
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < n_dims; d++)
        if (ne[d] <= 0 || __builtin_mul_overflow(n_elems, (uint64_t)ne[d], &n_elems))
            return false;
    size_t block_bytes = ggml_dtype_block_bytes(type), block_elems = ggml_dtype_block_elems(type);
    if (block_bytes == 0)
        return true; // a type the reader rejects: written as given
    return ne[0] % (int64_t)block_elems == 0 && n_elems / block_elems <= SIZE_MAX / block_bytes &&
           n_elems / block_elems * block_bytes == n_bytes;
}

static bool has_tensor(const gguf_writer *w, const char *name) {
    for (uint64_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return true;
    return false;
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t n_dims, const int64_t *ne,
                           enum ggml_dtype type, const void *data, size_t n_bytes) {
    if (!w || !name || !*name || !data || has_tensor(w, name) ||
        !tensor_shape_ok(n_dims, ne, type, n_bytes))
        return SPECD_ERR_INVALID;
    struct writer_tensor t = {.n_dims = n_dims, .type = (uint32_t)type, .n_bytes = n_bytes};
    for (uint32_t d = 0; d < 4; d++)
        t.ne[d] = d < n_dims ? ne[d] : 1;
    t.name = strdup(name);
    t.data = malloc(n_bytes);
    if (!t.name || !t.data ||
        grow((void **)&w->tensors, w->n_tensors, &w->tensors_cap, sizeof *w->tensors) != 0) {
        free(t.name);
        free(t.data);
        return SPECD_ERR_NOMEM;
    }
    memcpy(t.data, data, n_bytes);
    w->tensors[w->n_tensors++] = t;
    return SPECD_OK;
}

// ---- output -----------------------------------------------------------------------------------

static size_t align_up(size_t n, uint32_t alignment) {
    return (n + alignment - 1) / alignment * alignment;
}

static int put_tensor_infos(const gguf_writer *w, struct byte_buf *b) {
    uint64_t offset = 0;
    int rc = SPECD_OK;
    for (uint64_t i = 0; i < w->n_tensors && rc == SPECD_OK; i++) {
        const struct writer_tensor *t = &w->tensors[i];
        rc = buf_put_str(b, t->name, strlen(t->name));
        if (rc == SPECD_OK)
            rc = buf_put_le(b, t->n_dims, 4);
        for (uint32_t d = 0; d < t->n_dims && rc == SPECD_OK; d++)
            rc = buf_put_le(b, (uint64_t)t->ne[d], 8);
        if (rc == SPECD_OK)
            rc = buf_put_le(b, t->type, 4);
        if (rc == SPECD_OK)
            rc = buf_put_le(b, offset, 8);
        offset += align_up(t->n_bytes, w->alignment);
    }
    return rc;
}

static int put_file(const gguf_writer *w, struct byte_buf *b) {
    int rc = buf_put(b, "GGUF", 4);
    if (rc == SPECD_OK)
        rc = buf_put_le(b, 3, 4);
    if (rc == SPECD_OK)
        rc = buf_put_le(b, w->n_tensors, 8);
    if (rc == SPECD_OK)
        rc = buf_put_le(b, w->n_kv, 8);
    if (rc == SPECD_OK)
        rc = buf_put(b, w->kv.data, w->kv.len);
    if (rc == SPECD_OK)
        rc = put_tensor_infos(w, b);
    if (rc == SPECD_OK)
        rc = buf_pad(b, w->alignment);
    for (uint64_t i = 0; i < w->n_tensors && rc == SPECD_OK; i++) {
        rc = buf_put(b, w->tensors[i].data, w->tensors[i].n_bytes);
        if (rc == SPECD_OK)
            rc = buf_pad(b, w->alignment);
    }
    return rc;
}

int gguf_writer_finish(const gguf_writer *w, void **buf, size_t *size) {
    if (!w || !buf || !size)
        return SPECD_ERR_INVALID;
    struct byte_buf b = {0};
    int rc = put_file(w, &b);
    if (rc != SPECD_OK) {
        free(b.data);
        *buf = NULL;
        return rc;
    }
    *buf = b.data ? (void *)b.data : malloc(1);
    *size = b.len;
    return *buf ? SPECD_OK : SPECD_ERR_NOMEM;
}

int gguf_writer_write_file(const gguf_writer *w, const char *path) {
    void *buf;
    size_t size;
    if (!path)
        return SPECD_ERR_INVALID;
    int rc = gguf_writer_finish(w, &buf, &size);
    if (rc != SPECD_OK)
        return rc;
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        free(buf);
        return SPECD_ERR_IO;
    }
    bool ok = fwrite(buf, 1, size, fp) == size;
    ok = fclose(fp) == 0 && ok;
    free(buf);
    return ok ? SPECD_OK : SPECD_ERR_IO;
}
