// GGUF v3 writer: builds a whole file in memory, for tests and tools that make small models.
//
// Metadata is written in the order it is added, then the tensor infos, then the tensor data, each
// tensor at an offset aligned to the file's alignment (32 unless set) and padded to it, as
// llama.cpp writes files. Typical use:
//
//   gguf_writer *w = gguf_writer_new();
//   gguf_writer_add_str(w, "general.architecture", "llama");
//   gguf_writer_add_u32(w, "llama.block_count", 2);
//   gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", tokens, n_vocab);
//   int64_t ne[2] = {dim, n_vocab};
//   gguf_writer_add_tensor(w, "token_embd.weight", 2, ne, GGML_TYPE_F32, emb, sizeof emb);
//   gguf_writer_write_file(w, path);
//   gguf_writer_free(w);
//
// Every add function returns 0, SPECD_ERR_INVALID (NULL argument, key or tensor name already
// added, bad type, shape or size) or SPECD_ERR_NOMEM; after a failure the writer is unchanged.
// Keys and names are NUL-terminated and copied; so are data.
#ifndef SPECD_ENGINE_GGUF_WRITE_H
#define SPECD_ENGINE_GGUF_WRITE_H

#include "worker/engine/gguf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gguf_writer gguf_writer;

// NULL when out of memory.
gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w); // accepts NULL

// Scalars.
int gguf_writer_add_u8(gguf_writer *w, const char *key, uint8_t v);
int gguf_writer_add_i8(gguf_writer *w, const char *key, int8_t v);
int gguf_writer_add_u16(gguf_writer *w, const char *key, uint16_t v);
int gguf_writer_add_i16(gguf_writer *w, const char *key, int16_t v);
// Adding "general.alignment" here also sets the file's alignment (it must be a power of two).
int gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v);
int gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t v);
int gguf_writer_add_i64(gguf_writer *w, const char *key, int64_t v);
int gguf_writer_add_f32(gguf_writer *w, const char *key, float v);
int gguf_writer_add_f64(gguf_writer *w, const char *key, double v);
int gguf_writer_add_bool(gguf_writer *w, const char *key, bool v);
int gguf_writer_add_str(gguf_writer *w, const char *key, const char *s);
// A string of len bytes that may hold NULs.
int gguf_writer_add_str_n(gguf_writer *w, const char *key, const char *s, size_t len);

// Same as gguf_writer_add_u32(w, "general.alignment", alignment).
int gguf_writer_set_alignment(gguf_writer *w, uint32_t alignment);

// Arrays. gguf_writer_add_array takes n elements of a fixed-size type (not STRING or ARRAY) in
// host order, e.g. an int16_t[n] for GGUF_TYPE_INT16 or a bool[n] for GGUF_TYPE_BOOL.
int gguf_writer_add_array(gguf_writer *w, const char *key, enum gguf_type elem_type,
                          const void *elems, uint64_t n);
int gguf_writer_add_f32_array(gguf_writer *w, const char *key, const float *v, uint64_t n);
int gguf_writer_add_i32_array(gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
int gguf_writer_add_u32_array(gguf_writer *w, const char *key, const uint32_t *v, uint64_t n);
int gguf_writer_add_str_array(gguf_writer *w, const char *key, const char *const *strs, uint64_t n);

// A tensor of n_dims (1..4) dimensions ne[0..n_dims) (ne[0] fastest), whose n_bytes of data are
// copied. For the types gguf.h supports, n_bytes must match the shape; any other type number is
// written as given (for tests of the reader's rejections) and needs n_bytes > 0.
int gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t n_dims, const int64_t *ne,
                           enum ggml_dtype type, const void *data, size_t n_bytes);

// The whole file in a malloc'ed buffer (the caller frees it). Returns 0 or SPECD_ERR_NOMEM
// (then *buf is NULL). The writer stays usable.
int gguf_writer_finish(const gguf_writer *w, void **buf, size_t *size);
// Writes the file to path. Returns 0, SPECD_ERR_NOMEM or SPECD_ERR_IO (a partial file may be
// left behind).
int gguf_writer_write_file(const gguf_writer *w, const char *path);

#endif
