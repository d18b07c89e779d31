// GGUF v2/v3 reader: metadata, tensor infos and tensor data, validated before use.
//
// The file is mapped read-only; every string, array and tensor returned points into that mapping
// and stays valid until gguf_free(). Nothing returned is NUL-terminated unless it says so.
// A file that fails validation is rejected as a whole with a message naming the problem
// (bad magic, truncated file, unknown tensor type, tensor out of bounds, absurd counts, ...);
// no accessor ever reads outside the mapping, whatever the bytes.
#ifndef SPECD_ENGINE_GGUF_H
#define SPECD_ENGINE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gguf_file gguf_file;

// Metadata value types, numbered as in the GGUF specification.
enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
};

// Tensor element types, numbered as ggml numbers them. Only these are accepted.
enum ggml_dtype {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_BF16 = 30,
};

// A string inside the file (not NUL-terminated).
struct gguf_str {
    uint64_t len;
    const char *data;
};

struct gguf_tensor_info {
    struct gguf_str name;
    uint32_t n_dims; // 1..4
    int64_t ne[4];   // elements per dimension, ne[0] fastest; unused dimensions are 1
    enum ggml_dtype type;
    uint64_t offset;  // from the start of the data section, aligned
    uint64_t n_bytes; // size of the data
    const void *data; // into the mapping, aligned to the file's alignment
};

struct gguf_params {
    uint64_t max_tensors;   // reject files declaring more tensors (default 65536)
    uint64_t max_kv;        // reject files declaring more metadata pairs (default 65536)
    uint64_t max_array_len; // reject metadata arrays longer than this (default 1<<24)
    uint64_t max_str_len;   // reject strings longer than this (default 1<<20)
};

struct gguf_params gguf_default_params(void);

// Opens and validates `path`. On success returns 0 and sets *out (free with gguf_free).
// On failure returns SPECD_ERR_IO (cannot open/map), SPECD_ERR_FORMAT (malformed) or
// SPECD_ERR_UNSUPPORTED (e.g. version 1, unsupported tensor type), writes the reason to err,
// and leaves *out NULL. params may be NULL for defaults.
int gguf_open(const char *path, const struct gguf_params *params, gguf_file **out, char *err,
              size_t err_size);

// Same, over a caller-owned buffer that must outlive the returned handle (used by the fuzzer
// and the tests). Nothing is copied.
int gguf_open_memory(const void *data, size_t size, const struct gguf_params *params,
                     gguf_file **out, char *err, size_t err_size);

void gguf_free(gguf_file *f); // accepts NULL

uint32_t gguf_version(const gguf_file *f);
uint32_t gguf_alignment(const gguf_file *f);

// ---- metadata ----
uint64_t gguf_n_kv(const gguf_file *f);
struct gguf_str gguf_kv_key(const gguf_file *f, uint64_t i);
enum gguf_type gguf_kv_type(const gguf_file *f, uint64_t i);
// Index of key `key` (NUL-terminated), or -1 when absent.
int64_t gguf_find_key(const gguf_file *f, const char *key);

// Typed getters. Return 0 and set *out; 1 when the key is absent (*out untouched);
// SPECD_ERR_FORMAT when present with a type that cannot represent the value exactly
// (integer getters accept any integer type whose value fits; float getters accept
// FLOAT32/FLOAT64).
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
int gguf_get_f32(const gguf_file *f, const char *key, float *out);
int gguf_get_bool(const gguf_file *f, const char *key, bool *out);
int gguf_get_str(const gguf_file *f, const char *key, struct gguf_str *out);

// Arrays. gguf_get_array gives the element type, count and a pointer to the raw little-endian
// elements (possibly unaligned: read them with memcpy) for arrays of fixed-size elements.
// Returns 0, 1 when absent, SPECD_ERR_FORMAT when the key is not an array or holds strings.
int gguf_get_array(const gguf_file *f, const char *key, enum gguf_type *elem_type, uint64_t *n,
                   const void **data);
// Arrays of strings: *out is a malloc'ed array of n entries pointing into the mapping; the
// caller frees it with free(). Returns 0, 1 when absent, SPECD_ERR_FORMAT when not a string
// array, SPECD_ERR_NOMEM.
int gguf_get_str_array(const gguf_file *f, const char *key, uint64_t *n, struct gguf_str **out);
// Converts any numeric array (ints, floats, bool) to float32 / int32 into a malloc'ed array.
// Returns 0, 1 when absent, SPECD_ERR_FORMAT on a non-numeric array (or int out of range),
// SPECD_ERR_NOMEM.
int gguf_get_f32_array(const gguf_file *f, const char *key, uint64_t *n, float **out);
int gguf_get_i32_array(const gguf_file *f, const char *key, uint64_t *n, int32_t **out);

// ---- tensors ----
uint64_t gguf_n_tensors(const gguf_file *f);
const struct gguf_tensor_info *gguf_tensor(const gguf_file *f, uint64_t i);
// NULL when absent.
const struct gguf_tensor_info *gguf_find_tensor(const gguf_file *f, const char *name);

// Bytes per block and elements per block of a tensor type; 0 for unknown types.
size_t ggml_dtype_block_bytes(enum ggml_dtype t);
size_t ggml_dtype_block_elems(enum ggml_dtype t);
const char *ggml_dtype_name(enum ggml_dtype t);

// True when s equals the NUL-terminated c.
bool gguf_str_eq(struct gguf_str s, const char *c);

#endif
