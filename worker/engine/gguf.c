// GGUF reader: opening (mmap), the name index and every accessor. The parser that validates the
// file before any of this runs is in gguf_validate.c. See gguf.h for the contract.
#include "worker/engine/gguf_internal.h"

#include "shared/check.h"
#include "shared/status.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

// ---- name index ---------------------------------------------------------------------------------

static int name_cmp(const char *a, uint64_t a_len, const char *b, uint64_t b_len) {
    int c = memcmp(a, b, a_len < b_len ? (size_t)a_len : (size_t)b_len);
    if (c != 0)
        return c;
    return a_len < b_len ? -1 : a_len > b_len;
}

static int entry_cmp(const void *pa, const void *pb) {
    const struct name_entry *a = pa, *b = pb;
    int c = name_cmp(a->name, a->len, b->name, b->len);
    if (c != 0)
        return c;
    return a->item < b->item ? -1 : a->item > b->item;
}

int gguf_index_init(struct name_index *ix, uint64_t n) {
    ix->entries = malloc((n ? n : 1) * sizeof *ix->entries);
    ix->n = n;
    return ix->entries ? SPECD_OK : SPECD_ERR_NOMEM;
}

void gguf_index_set(struct name_index *ix, uint64_t i, struct gguf_str name) {
    SPECD_CHECK(i < ix->n);
    ix->entries[i] = (struct name_entry){name.len ? name.data : "", name.len, i};
}

bool gguf_index_sort(struct name_index *ix, uint64_t *dup_a, uint64_t *dup_b) {
    struct name_entry *e = ix->entries;
    if (ix->n > 1)
        qsort(e, ix->n, sizeof *e, entry_cmp);
    for (uint64_t i = 1; i < ix->n; i++) {
        if (name_cmp(e[i - 1].name, e[i - 1].len, e[i].name, e[i].len) == 0) {
            *dup_a = e[i - 1].item;
            *dup_b = e[i].item;
            return false;
        }
    }
    return true;
}

int64_t gguf_index_find(const struct name_index *ix, const char *name) {
    if (!ix->entries || !name)
        return -1;
    uint64_t len = strlen(name), lo = 0, hi = ix->n;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(ix->entries[mid].name, ix->entries[mid].len, name, len);
        if (c == 0)
            return (int64_t)ix->entries[mid].item;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

// ---- the file -----------------------------------------------------------------------------------

struct gguf_params gguf_default_params(void) {
    struct gguf_params p = {
        .max_tensors = 65536,
        .max_kv = 65536,
        .max_array_len = 1u << 24,
        .max_str_len = 1u << 20,
    };
    return p;
}

void gguf_free(gguf_file *f) {
    if (!f)
        return;
    free(f->kv);
    free(f->tensors);
    free(f->kv_index.entries);
    free(f->tensor_index.entries);
    if (f->map)
        munmap(f->map, f->size);
    free(f);
}

// ---- type tables --------------------------------------------------------------------------------

// Bytes of a fixed-size metadata value; 0 for STRING, ARRAY and unknown types.
size_t gguf_value_size(uint32_t t) {
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

const char *gguf_value_type_name(uint32_t t) {
    static const char *const names[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                        "int32",  "float32", "bool",   "string", "array",
                                        "uint64", "int64",   "float64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

size_t ggml_dtype_block_bytes(enum ggml_dtype t) {
    switch (t) {
    case GGML_TYPE_F32:
        return 4;
    case GGML_TYPE_F16:
    case GGML_TYPE_BF16:
        return 2;
    case GGML_TYPE_Q8_0:
        return 34; // f16 scale + 32 int8
    case GGML_TYPE_Q4_0:
        return 18; // f16 scale + 16 bytes of nibbles
    default:
        return 0;
    }
}

size_t ggml_dtype_block_elems(enum ggml_dtype t) {
    switch (t) {
    case GGML_TYPE_F32:
    case GGML_TYPE_F16:
    case GGML_TYPE_BF16:
        return 1;
    case GGML_TYPE_Q8_0:
    case GGML_TYPE_Q4_0:
        return 32;
    default:
        return 0;
    }
}

// Names every ggml type number (so that messages can say "Q4_K"), supported or not.
const char *ggml_dtype_name(enum ggml_dtype t) {
    static const char *const names[] = {
        "F32",   "F16",        "Q4_0",       "Q4_1",       "Q4_2",     "Q4_3",     "Q5_0",
        "Q5_1",  "Q8_0",       "Q8_1",       "Q2_K",       "Q3_K",     "Q4_K",     "Q5_K",
        "Q6_K",  "Q8_K",       "IQ2_XXS",    "IQ2_XS",     "IQ3_XXS",  "IQ1_S",    "IQ4_NL",
        "IQ3_S", "IQ2_S",      "IQ4_XS",     "I8",         "I16",      "I32",      "I64",
        "F64",   "IQ1_M",      "BF16",       "Q4_0_4_4",   "Q4_0_4_8", "Q4_0_8_8", "TQ1_0",
        "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4"};
    unsigned u = (unsigned)t;
    return u < sizeof names / sizeof names[0] ? names[u] : "unknown";
}

bool gguf_str_eq(struct gguf_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.data, c, n) == 0);
}

// ---- opening ------------------------------------------------------------------------------------

int gguf_open_memory(const void *data, size_t size, const struct gguf_params *params,
                     gguf_file **out, char *err, size_t err_size) {
    static const uint8_t empty[1];
    if (!out || (!data && size > 0))
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "gguf_open_memory: NULL argument");
    *out = NULL;
    gguf_file *f = calloc(1, sizeof *f);
    if (!f)
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory");
    f->base = size ? data : empty;
    f->size = size;
    int rc = gguf_parse(f, params, err, err_size);
    if (rc != SPECD_OK) {
        gguf_free(f);
        return rc;
    }
    *out = f;
    return SPECD_OK;
}

int gguf_open(const char *path, const struct gguf_params *params, gguf_file **out, char *err,
              size_t err_size) {
    if (!path || !out)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "gguf_open: NULL argument");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return specd_fail(err, err_size, SPECD_ERR_IO, "%s: cannot open: %s", path,
                          strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int rc = specd_fail(err, err_size, SPECD_ERR_IO, "%s: not a readable regular file", path);
        close(fd);
        return rc;
    }
    size_t size = (size_t)st.st_size;
    void *map = NULL;
    if (size > 0 && (map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED) {
        int rc =
            specd_fail(err, err_size, SPECD_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        close(fd);
        return rc;
    }
    close(fd);
    char msg[512] = "";
    int rc = gguf_open_memory(map, size, params, out, msg, sizeof msg);
    if (rc != SPECD_OK) {
        if (map)
            munmap(map, size);
        return specd_fail(err, err_size, rc, "%s: %s", path, msg);
    }
    (*out)->map = map;
    return SPECD_OK;
}

// ---- accessors ----------------------------------------------------------------------------------

uint32_t gguf_version(const gguf_file *f) {
    return f->version;
}

uint32_t gguf_alignment(const gguf_file *f) {
    return f->alignment;
}

uint64_t gguf_n_kv(const gguf_file *f) {
    return f->n_kv;
}

struct gguf_str gguf_kv_key(const gguf_file *f, uint64_t i) {
    SPECD_CHECK(i < f->n_kv);
    return f->kv[i].key;
}

enum gguf_type gguf_kv_type(const gguf_file *f, uint64_t i) {
    SPECD_CHECK(i < f->n_kv);
    return f->kv[i].type;
}

int64_t gguf_find_key(const gguf_file *f, const char *key) {
    return gguf_index_find(&f->kv_index, key);
}

uint64_t gguf_n_tensors(const gguf_file *f) {
    return f->n_tensors;
}

const struct gguf_tensor_info *gguf_tensor(const gguf_file *f, uint64_t i) {
    SPECD_CHECK(i < f->n_tensors);
    return &f->tensors[i];
}

const struct gguf_tensor_info *gguf_find_tensor(const gguf_file *f, const char *name) {
    int64_t i = gguf_index_find(&f->tensor_index, name);
    return i >= 0 ? &f->tensors[i] : NULL;
}
// ---- typed getters ------------------------------------------------------------------------------

// A metadata integer of any width and signedness.
struct int_value {
    bool is_signed;
    int64_t s;  // when is_signed
    uint64_t u; // otherwise
};

static bool load_int(enum gguf_type t, const uint8_t *b, struct int_value *v) {
    *v = (struct int_value){0};
    switch (t) {
    case GGUF_TYPE_UINT8:
        v->u = b[0];
        return true;
    case GGUF_TYPE_UINT16:
        v->u = (uint64_t)b[0] | (uint64_t)b[1] << 8;
        return true;
    case GGUF_TYPE_UINT32:
        v->u = gguf_load_u32(b);
        return true;
    case GGUF_TYPE_UINT64:
        v->u = gguf_load_u64(b);
        return true;
    default:
        break;
    }
    v->is_signed = true;
    switch (t) {
    case GGUF_TYPE_INT8:
        v->s = (int8_t)b[0];
        return true;
    case GGUF_TYPE_INT16:
        v->s = (int16_t)(uint16_t)(b[0] | b[1] << 8);
        return true;
    case GGUF_TYPE_INT32:
        v->s = (int32_t)gguf_load_u32(b);
        return true;
    case GGUF_TYPE_INT64:
        v->s = (int64_t)gguf_load_u64(b);
        return true;
    default:
        return false;
    }
}

// True when the integer lies in [lo, hi] (lo <= 0).
static bool int_in_range(const struct int_value *v, int64_t lo, uint64_t hi) {
    if (v->is_signed)
        return v->s >= lo && (v->s < 0 || (uint64_t)v->s <= hi);
    return v->u <= hi;
}

static float load_f32(const uint8_t *b) {
    uint32_t bits = gguf_load_u32(b);
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

static double load_f64(const uint8_t *b) {
    uint64_t bits = gguf_load_u64(b);
    double x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

static const struct gguf_kv *find_kv(const gguf_file *f, const char *key) {
    int64_t i = gguf_index_find(&f->kv_index, key);
    return i >= 0 ? &f->kv[i] : NULL;
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out) {
    const struct gguf_kv *kv = find_kv(f, key);
    struct int_value v;
    if (!kv)
        return 1;
    if (!load_int(kv->type, kv->value, &v) || !int_in_range(&v, 0, UINT32_MAX))
        return SPECD_ERR_FORMAT;
    *out = (uint32_t)(v.is_signed ? (uint64_t)v.s : v.u);
    return SPECD_OK;
}

int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out) {
    const struct gguf_kv *kv = find_kv(f, key);
    struct int_value v;
    if (!kv)
        return 1;
    if (!load_int(kv->type, kv->value, &v) || !int_in_range(&v, INT64_MIN, INT64_MAX))
        return SPECD_ERR_FORMAT;
    *out = v.is_signed ? v.s : (int64_t)v.u;
    return SPECD_OK;
}

int gguf_get_f32(const gguf_file *f, const char *key, float *out) {
    const struct gguf_kv *kv = find_kv(f, key);
    if (!kv)
        return 1;
    if (kv->type == GGUF_TYPE_FLOAT32)
        *out = load_f32(kv->value);
    else if (kv->type == GGUF_TYPE_FLOAT64)
        *out = (float)load_f64(kv->value);
    else
        return SPECD_ERR_FORMAT;
    return SPECD_OK;
}

int gguf_get_bool(const gguf_file *f, const char *key, bool *out) {
    const struct gguf_kv *kv = find_kv(f, key);
    if (!kv)
        return 1;
    if (kv->type != GGUF_TYPE_BOOL)
        return SPECD_ERR_FORMAT;
    *out = kv->value[0] != 0;
    return SPECD_OK;
}

int gguf_get_str(const gguf_file *f, const char *key, struct gguf_str *out) {
    const struct gguf_kv *kv = find_kv(f, key);
    if (!kv)
        return 1;
    if (kv->type != GGUF_TYPE_STRING)
        return SPECD_ERR_FORMAT;
    out->len = kv->len;
    out->data = (const char *)kv->value;
    return SPECD_OK;
}

// ---- array getters ------------------------------------------------------------------------------

// The array under key with fixed-size elements: 0, 1 when absent, SPECD_ERR_FORMAT otherwise.
static int find_numeric_array(const gguf_file *f, const char *key, const struct gguf_kv **out) {
    const struct gguf_kv *kv = find_kv(f, key);
    if (!kv)
        return 1;
    if (kv->type != GGUF_TYPE_ARRAY || kv->elem_type == GGUF_TYPE_STRING)
        return SPECD_ERR_FORMAT;
    *out = kv;
    return SPECD_OK;
}

int gguf_get_array(const gguf_file *f, const char *key, enum gguf_type *elem_type, uint64_t *n,
                   const void **data) {
    const struct gguf_kv *kv;
    int rc = find_numeric_array(f, key, &kv);
    if (rc != SPECD_OK)
        return rc;
    *elem_type = kv->elem_type;
    *n = kv->len;
    *data = kv->value;
    return SPECD_OK;
}

int gguf_get_str_array(const gguf_file *f, const char *key, uint64_t *n, struct gguf_str **out) {
    const struct gguf_kv *kv = find_kv(f, key);
    if (!kv)
        return 1;
    if (kv->type != GGUF_TYPE_ARRAY || kv->elem_type != GGUF_TYPE_STRING)
        return SPECD_ERR_FORMAT;
    struct gguf_str *s = malloc((kv->len ? kv->len : 1) * sizeof *s);
    if (!s)
        return SPECD_ERR_NOMEM;
    const uint8_t *b = kv->value; // validated at open: n length-prefixed strings
    for (uint64_t i = 0; i < kv->len; i++) {
        s[i].len = gguf_load_u64(b);
        s[i].data = (const char *)b + 8;
        b += 8 + s[i].len;
    }
    *n = kv->len;
    *out = s;
    return SPECD_OK;
}

static double elem_as_double(enum gguf_type t, const uint8_t *b) {
    struct int_value v;
    if (t == GGUF_TYPE_FLOAT32)
        return load_f32(b);
    if (t == GGUF_TYPE_FLOAT64)
        return load_f64(b);
    if (t == GGUF_TYPE_BOOL)
        return b[0];
    SPECD_CHECK(load_int(t, b, &v));
    return v.is_signed ? (double)v.s : (double)v.u;
}

static bool elem_as_i32(enum gguf_type t, const uint8_t *b, int32_t *out) {
    struct int_value v;
    if (load_int(t, b, &v)) {
        if (!int_in_range(&v, INT32_MIN, INT32_MAX))
            return false;
        *out = (int32_t)(v.is_signed ? v.s : (int64_t)v.u);
        return true;
    }
    double d = elem_as_double(t, b); // bool or float: must be an integer in range
    if (!(d >= INT32_MIN && d <= INT32_MAX) || (double)(int32_t)d != d)
        return false;
    *out = (int32_t)d;
    return true;
}

int gguf_get_f32_array(const gguf_file *f, const char *key, uint64_t *n, float **out) {
    const struct gguf_kv *kv;
    int rc = find_numeric_array(f, key, &kv);
    if (rc != SPECD_OK)
        return rc;
    float *a = malloc((kv->len ? kv->len : 1) * sizeof *a);
    if (!a)
        return SPECD_ERR_NOMEM;
    size_t size = gguf_value_size(kv->elem_type);
    for (uint64_t i = 0; i < kv->len; i++)
        a[i] = (float)elem_as_double(kv->elem_type, kv->value + i * size);
    *n = kv->len;
    *out = a;
    return SPECD_OK;
}

int gguf_get_i32_array(const gguf_file *f, const char *key, uint64_t *n, int32_t **out) {
    const struct gguf_kv *kv;
    int rc = find_numeric_array(f, key, &kv);
    if (rc != SPECD_OK)
        return rc;
    int32_t *a = malloc((kv->len ? kv->len : 1) * sizeof *a);
    if (!a)
        return SPECD_ERR_NOMEM;
    size_t size = gguf_value_size(kv->elem_type);
    for (uint64_t i = 0; i < kv->len; i++) {
        if (!elem_as_i32(kv->elem_type, kv->value + i * size, &a[i])) {
            free(a);
            return SPECD_ERR_FORMAT;
        }
    }
    *n = kv->len;
    *out = a;
    return SPECD_OK;
}
