// The compute backend interface: one forward pass of a model over a batch of sequences, each
// with several new tokens, against a paged KV cache that the backend owns. The CPU backend is the
// reference; the CUDA backend implements the same table.
//
// KV cache: n_blocks physical blocks of block_size token slots each, per layer, for K and V.
// Which blocks a sequence uses is decided outside the backend (worker/engine/kv_cache.h) and
// passed in as a block table per sequence: token position t of a sequence lives in block
// table[t / block_size], slot t % block_size.
//
// A forward pass writes K/V of the new tokens into their slots, attends causally over positions
// [0, pos0 + i] of the same sequence, and returns logits only for the rows asked for — one call,
// no per-token round trips.
#ifndef SPECD_ENGINE_BACKEND_H
#define SPECD_ENGINE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "worker/engine/model.h"

typedef struct backend backend;

struct backend_seq {
    int32_t n_tokens;           // new tokens of this sequence in the batch (>= 1)
    int32_t pos0;               // position of the first new token (= tokens already cached)
    int32_t n_blocks;           // entries in block_table; must cover pos0 + n_tokens positions
    const int32_t *block_table; // [n_blocks] physical block ids
};

struct backend_batch {
    int32_t n_seqs;
    const struct backend_seq *seqs; // [n_seqs]
    int32_t n_tokens;               // sum of seqs[i].n_tokens
    const int32_t *tokens;          // [n_tokens]: sequence 0's new tokens, then sequence 1's, ...
    int32_t n_out;                  // rows of logits wanted
    const int32_t *out_rows;        // [n_out] indices into tokens, strictly increasing
};

struct backend_params {
    int32_t n_blocks;   // KV blocks to allocate
    int32_t block_size; // token slots per block
    int n_threads;      // CPU backend: threads (<= 0: all CPUs)
};

struct backend_params backend_default_params(void);

struct backend_ops {
    const char *name;
    // Runs the batch; writes n_out rows of n_vocab float logits to `logits` ([n_out][n_vocab]).
    // Returns 0, SPECD_ERR_INVALID for a malformed batch (token id out of range, block id out of
    // range, table too short), SPECD_ERR_BACKEND on a device failure. On failure the KV slots of
    // the batch's new tokens are unspecified; cached positions before them are untouched.
    int (*forward)(backend *be, const struct backend_batch *batch, float *logits);
    // Copies whole blocks src[i] -> dst[i] in every layer (copy-on-write of shared blocks).
    int (*copy_blocks)(backend *be, const int32_t *src, const int32_t *dst, int n);
    void (*free)(backend *be);
};

struct backend {
    const struct backend_ops *ops;
    const llama_model *model;
    struct backend_params params;
};

// Creates the CPU reference backend for `model` (which must outlive it). Returns 0 and sets *out,
// or SPECD_ERR_NOMEM / SPECD_ERR_INVALID with the reason in err.
int backend_cpu_new(const llama_model *model, const struct backend_params *params, backend **out,
                    char *err, size_t err_size);

// Bytes of KV cache one block takes for `model` with the CPU backend (float32 K and V).
size_t backend_cpu_block_bytes(const llama_model *model, int32_t block_size);

static inline int backend_forward(backend *be, const struct backend_batch *b, float *logits) {
    return be->ops->forward(be, b, logits);
}
static inline int backend_copy_blocks(backend *be, const int32_t *src, const int32_t *dst, int n) {
    return be->ops->copy_blocks(be, src, dst, n);
}
static inline void backend_free(backend *be) {
    if (be)
        be->ops->free(be);
}

// Checks a batch against the backend's limits and the model's vocabulary. Returns 0 or
// SPECD_ERR_INVALID with the reason in err. Backends call it first.
int backend_validate_batch(const backend *be, const struct backend_batch *b, char *err,
                           size_t err_size);

#endif
