#include "tests/support/tiny_model.h"

#include <stdio.h>
#include <stdlib.h>

#include "worker/engine/gguf_write.h"
#include "worker/engine/quant.h"

struct tiny_model_params tiny_model_default_params(void) {
    struct tiny_model_params p = {.n_vocab = 8,
                                  .n_embd = 32,
                                  .n_layer = 2,
                                  .n_head = 4,
                                  .n_head_kv = 2,
                                  .n_ff = 64,
                                  .n_ctx = 256,
                                  .scale = 0.5f,
                                  .type = GGML_TYPE_F32,
                                  .seed = 1};
    return p;
}

static float next_uniform(uint64_t *s) { // splitmix64 -> [-1, 1)
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) / 4503599627370496.0 - 1.0);
}

static int add_matrix(gguf_writer *w, const char *name, int64_t cols, int64_t rows,
                      const struct tiny_model_params *p, uint64_t *rng) {
    float *v = malloc(sizeof(float) * (size_t)(cols * rows));
    const size_t rb = quant_row_bytes(p->type, cols);
    uint8_t *q = malloc(rb * (size_t)rows);
    if (!v || !q) {
        free(v);
        free(q);
        return -1;
    }
    for (int64_t i = 0; i < cols * rows; i++)
        v[i] = next_uniform(rng) * p->scale;
    for (int64_t r = 0; r < rows; r++)
        quant_quantize_row(p->type, v + r * cols, q + r * rb, cols);
    const int64_t ne[2] = {cols, rows};
    int rc = gguf_writer_add_tensor(w, name, 2, ne, p->type, q, rb * (size_t)rows);
    free(v);
    free(q);
    return rc;
}

static int add_norm(gguf_writer *w, const char *name, int64_t n) {
    float v[1024];
    for (int64_t i = 0; i < n; i++)
        v[i] = 1.0f;
    const int64_t ne[1] = {n};
    return gguf_writer_add_tensor(w, name, 1, ne, GGML_TYPE_F32, v, sizeof(float) * (size_t)n);
}

static void add_vocab(gguf_writer *w, int n) {
    char texts[64][8];
    const char *ptrs[64];
    float scores[64];
    int32_t types[64];
    for (int i = 0; i < n; i++) {
        if (i == 0)
            snprintf(texts[i], sizeof texts[i], "<unk>");
        else if (i == 1)
            snprintf(texts[i], sizeof texts[i], "<s>");
        else if (i == 2)
            snprintf(texts[i], sizeof texts[i], "</s>");
        else
            snprintf(texts[i], sizeof texts[i], "%c", 'a' + (i - 3) % 26 + (i - 3 >= 26 ? -32 : 0));
        ptrs[i] = texts[i];
        scores[i] = (float)-i;
        types[i] = i == 0 ? 2 : i < 3 ? 3 : 1;
    }
    gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", ptrs, (uint64_t)n);
    gguf_writer_add_f32_array(w, "tokenizer.ggml.scores", scores, (uint64_t)n);
    gguf_writer_add_i32_array(w, "tokenizer.ggml.token_type", types, (uint64_t)n);
    gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", 0);
}

int tiny_model_write(const char *path, const struct tiny_model_params *p) {
    gguf_writer *w = gguf_writer_new();
    if (!w)
        return -1;
    uint64_t rng = p->seed;
    const int d = p->n_embd, hd = d / p->n_head, kv = hd * p->n_head_kv;
    gguf_writer_add_str(w, "general.architecture", "llama");
    gguf_writer_add_str(w, "general.name", "tiny");
    gguf_writer_add_u32(w, "llama.context_length", (uint32_t)p->n_ctx);
    gguf_writer_add_u32(w, "llama.embedding_length", (uint32_t)d);
    gguf_writer_add_u32(w, "llama.block_count", (uint32_t)p->n_layer);
    gguf_writer_add_u32(w, "llama.feed_forward_length", (uint32_t)p->n_ff);
    gguf_writer_add_u32(w, "llama.attention.head_count", (uint32_t)p->n_head);
    gguf_writer_add_u32(w, "llama.attention.head_count_kv", (uint32_t)p->n_head_kv);
    gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    add_vocab(w, p->n_vocab);
    int rc = add_matrix(w, "token_embd.weight", d, p->n_vocab, p, &rng);
    rc |= add_norm(w, "output_norm.weight", d);
    for (int l = 0; l < p->n_layer && !rc; l++) {
        char n[64];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d." s, l), n)
        rc |= add_norm(w, NAME("attn_norm.weight"), d);
        rc |= add_matrix(w, NAME("attn_q.weight"), d, d, p, &rng);
        rc |= add_matrix(w, NAME("attn_k.weight"), d, kv, p, &rng);
        rc |= add_matrix(w, NAME("attn_v.weight"), d, kv, p, &rng);
        rc |= add_matrix(w, NAME("attn_output.weight"), d, d, p, &rng);
        rc |= add_norm(w, NAME("ffn_norm.weight"), d);
        rc |= add_matrix(w, NAME("ffn_gate.weight"), d, p->n_ff, p, &rng);
        rc |= add_matrix(w, NAME("ffn_up.weight"), d, p->n_ff, p, &rng);
        rc |= add_matrix(w, NAME("ffn_down.weight"), p->n_ff, d, p, &rng);
#undef NAME
    }
    if (!rc)
        rc = gguf_writer_write_file(w, path);
    gguf_writer_free(w);
    return rc ? -1 : 0;
}
