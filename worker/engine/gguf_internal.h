// Internals of the GGUF reader shared by gguf.c (opening, index, lookups) and gguf_validate.c
// (the parser). Not a public API: include gguf.h instead.
#ifndef SPECD_ENGINE_GGUF_INTERNAL_H
#define SPECD_ENGINE_GGUF_INTERNAL_H

#include "worker/engine/gguf.h"

// Name -> item index: the names sorted, for binary search. Sorting (not hashing) keeps the worst
// case at n log n whatever names a file holds.
struct name_entry {
    const char *name;
    uint64_t len;
    uint64_t item;
};

struct name_index {
    struct name_entry *entries; // [n], sorted by name once gguf_index_sort ran
    uint64_t n;
};

struct gguf_kv {
    struct gguf_str key;
    enum gguf_type type;
    const uint8_t *value;     // scalar: its bytes; STRING: the characters; ARRAY: first element
    uint64_t len;             // STRING: bytes; ARRAY: elements
    enum gguf_type elem_type; // ARRAY only
};

struct gguf_file {
    const uint8_t *base; // the whole file, [size]
    size_t size;
    void *map; // non-NULL when gguf_open mapped the file; unmapped by gguf_free
    uint32_t version;
    uint32_t alignment;
    uint64_t n_kv;
    uint64_t n_tensors;
    uint64_t data_start;              // offset of the data section in the file
    struct gguf_kv *kv;               // [n_kv]
    struct gguf_tensor_info *tensors; // [n_tensors]
    struct name_index kv_index;
    struct name_index tensor_index;
};

// Room for n names. Returns 0 or SPECD_ERR_NOMEM.
int gguf_index_init(struct name_index *ix, uint64_t n);
// Sets the name of item i (< n).
void gguf_index_set(struct name_index *ix, uint64_t i, struct gguf_str name);
// Sorts the names. Returns true when they are distinct, else false with *dup_a < *dup_b two items
// that share a name.
bool gguf_index_sort(struct name_index *ix, uint64_t *dup_a, uint64_t *dup_b);
// The item stored under the NUL-terminated name, or -1 (the index must be sorted).
int64_t gguf_index_find(const struct name_index *ix, const char *name);

// Bytes of a fixed-size metadata value; 0 for STRING, ARRAY and unknown types.
size_t gguf_value_size(uint32_t type);
// "uint8", ..., "float64"; "unknown" for others.
const char *gguf_value_type_name(uint32_t type);

// Parses and validates f->base[0, f->size) into f (header, metadata, tensor infos, data
// placement). Returns 0, SPECD_ERR_FORMAT, SPECD_ERR_UNSUPPORTED or SPECD_ERR_NOMEM with a
// message in err; f is then partly filled and only fit for gguf_free.
int gguf_parse(gguf_file *f, const struct gguf_params *params, char *err, size_t err_size);

static inline uint32_t gguf_load_u32(const uint8_t *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static inline uint64_t gguf_load_u64(const uint8_t *b) {
    return (uint64_t)gguf_load_u32(b) | (uint64_t)gguf_load_u32(b + 4) << 32;
}

#endif
