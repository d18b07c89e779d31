// Writes small random llama GGUF models for tests: an SPM vocabulary of n_vocab pieces
// ("<unk>", "<s>", "</s>", then single letters), random weights of a chosen type.
#ifndef SPECD_TESTS_TINY_MODEL_H
#define SPECD_TESTS_TINY_MODEL_H

#include <stdint.h>

#include "worker/engine/gguf.h"

struct tiny_model_params {
    int n_vocab; // 4..64
    int n_embd;  // multiple of 32
    int n_layer;
    int n_head;
    int n_head_kv;
    int n_ff; // multiple of 32
    int n_ctx;
    float scale;          // weight magnitude: larger gives peakier distributions
    enum ggml_dtype type; // of the 2-D weights
    uint64_t seed;
};

struct tiny_model_params tiny_model_default_params(void);

// Writes the model to path. Returns 0, or -1 on failure.
int tiny_model_write(const char *path, const struct tiny_model_params *p);

#endif
