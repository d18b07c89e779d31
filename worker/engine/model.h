// Llama-family model: hyperparameters and weights read from a GGUF file (architecture "llama",
// computed as llama.cpp computes it). Weights stay in the file mapping; only norm vectors are
// converted to float32 at load.
#ifndef SPECD_ENGINE_MODEL_H
#define SPECD_ENGINE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker/engine/gguf.h"

typedef struct llama_model llama_model;

enum rope_mode {
    ROPE_MODE_NORMAL = 0, // rotate adjacent pairs (x[2i], x[2i+1]) — llama.cpp LLAMA_ROPE_TYPE_NORM
    ROPE_MODE_NEOX = 2,   // rotate halves (x[i], x[i + n_rot/2]) — LLAMA_ROPE_TYPE_NEOX
};

struct llama_hparams {
    int32_t n_vocab;
    int32_t n_ctx_train;   // llama.context_length
    int32_t n_embd;        // llama.embedding_length
    int32_t n_layer;       // llama.block_count
    int32_t n_head;        // llama.attention.head_count
    int32_t n_head_kv;     // llama.attention.head_count_kv (defaults to n_head)
    int32_t head_dim;      // n_embd / n_head (or llama.attention.key_length)
    int32_t n_ff;          // llama.feed_forward_length
    int32_t n_rot;         // llama.rope.dimension_count (defaults to head_dim)
    float rms_eps;         // llama.attention.layer_norm_rms_epsilon
    float rope_freq_base;  // llama.rope.freq_base (default 10000)
    float rope_freq_scale; // 1 / llama.rope.scaling.factor for linear scaling (default 1)
    enum rope_mode rope_mode;
    bool tied_output; // no output.weight: the output projection is token_embd.weight
};

// A 2-D weight matrix stored row-major: `rows` rows of `cols` elements, in the file's type.
struct model_weight {
    enum ggml_dtype type;
    int64_t rows;
    int64_t cols;
    size_t row_bytes;
    const void *data;
};

struct llama_layer {
    const float *attn_norm;     // [n_embd] (float32 copy owned by the model)
    struct model_weight wq;     // [n_head*head_dim][n_embd]
    struct model_weight wk;     // [n_head_kv*head_dim][n_embd]
    struct model_weight wv;     // [n_head_kv*head_dim][n_embd]
    struct model_weight wo;     // [n_embd][n_head*head_dim]
    const float *ffn_norm;      // [n_embd]
    struct model_weight w_gate; // [n_ff][n_embd]
    struct model_weight w_up;   // [n_ff][n_embd]
    struct model_weight w_down; // [n_embd][n_ff]
};

struct llama_weights {
    struct model_weight tok_embd; // [n_vocab][n_embd]
    const float *output_norm;     // [n_embd]
    struct model_weight output;   // [n_vocab][n_embd] (tok_embd when tied)
    struct llama_layer *layers;   // [n_layer]
};

// Loads and validates a model. Returns 0 and sets *out, or SPECD_ERR_IO / SPECD_ERR_FORMAT /
// SPECD_ERR_UNSUPPORTED / SPECD_ERR_NOMEM with the reason in err (missing or mis-shaped tensor,
// unsupported architecture or tensor type, inconsistent hyperparameters); *out stays NULL.
int llama_model_load(const char *path, llama_model **out, char *err, size_t err_size);
// Same over an already opened GGUF; the model takes ownership of `f` on success only.
int llama_model_from_gguf(gguf_file *f, llama_model **out, char *err, size_t err_size);
void llama_model_free(llama_model *m); // accepts NULL

const struct llama_hparams *llama_model_hparams(const llama_model *m);
const struct llama_weights *llama_model_weights(const llama_model *m);
const gguf_file *llama_model_gguf(const llama_model *m);
// "general.name" or the file's base name; never NULL.
const char *llama_model_name(const llama_model *m);
// Bytes of weights read by one forward pass over one token (all matrices + norms).
size_t llama_model_weight_bytes(const llama_model *m);

#endif
