#include "worker/engine/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/status.h"
#include "worker/engine/quant.h"

struct llama_model {
    gguf_file *file;
    struct llama_hparams hp;
    struct llama_weights w;
    float *norms; // all norm vectors, float32: [(2*n_layer+1)][n_embd]
    char name[128];
};

// ---- hyperparameters -------------------------------------------------------------------------

struct hp_reader {
    const gguf_file *f;
    char *err;
    size_t err_size;
    int status;
};

// Reads "llama.<suffix>" as a positive int32. Missing keys keep *out when !required.
static void hp_int(struct hp_reader *r, const char *suffix, int32_t *out, bool required) {
    if (r->status)
        return;
    char key[128];
    snprintf(key, sizeof key, "llama.%s", suffix);
    int64_t v;
    int rc = gguf_get_i64(r->f, key, &v);
    if (rc == 1 && !required)
        return;
    if (rc == 1)
        r->status = specd_fail(r->err, r->err_size, SPECD_ERR_FORMAT, "missing metadata %s", key);
    else if (rc < 0)
        r->status =
            specd_fail(r->err, r->err_size, SPECD_ERR_FORMAT, "metadata %s is not an integer", key);
    else if (v <= 0 || v > (1 << 24))
        r->status = specd_fail(r->err, r->err_size, SPECD_ERR_FORMAT,
                               "metadata %s = %lld is out of range", key, (long long)v);
    else
        *out = (int32_t)v;
}

static void hp_float(struct hp_reader *r, const char *suffix, float *out) {
    if (r->status)
        return;
    char key[128];
    snprintf(key, sizeof key, "llama.%s", suffix);
    int rc = gguf_get_f32(r->f, key, out);
    if (rc < 0)
        r->status =
            specd_fail(r->err, r->err_size, SPECD_ERR_FORMAT, "metadata %s is not a float", key);
}

static int read_hparams(const gguf_file *f, struct llama_hparams *hp, char *err, size_t err_size) {
    struct gguf_str arch;
    if (gguf_get_str(f, "general.architecture", &arch) != 0)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "missing metadata general.architecture (not a model file?)");
    if (!gguf_str_eq(arch, "llama"))
        return specd_fail(err, err_size, SPECD_ERR_UNSUPPORTED,
                          "unsupported architecture '%.*s' (specd runs 'llama')",
                          (int)(arch.len > 64 ? 64 : arch.len), arch.data);
    memset(hp, 0, sizeof *hp);
    struct hp_reader r = {f, err, err_size, 0};
    hp->n_ctx_train = 2048;
    hp_int(&r, "context_length", &hp->n_ctx_train, false);
    hp_int(&r, "embedding_length", &hp->n_embd, true);
    hp_int(&r, "block_count", &hp->n_layer, true);
    hp_int(&r, "feed_forward_length", &hp->n_ff, true);
    hp_int(&r, "attention.head_count", &hp->n_head, true);
    hp->n_head_kv = hp->n_head;
    hp_int(&r, "attention.head_count_kv", &hp->n_head_kv, false);
    if (!r.status && hp->n_embd % hp->n_head != 0)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "embedding_length %d is not a multiple of head_count %d", hp->n_embd,
                          hp->n_head);
    hp->head_dim = r.status ? 0 : hp->n_embd / hp->n_head;
    hp_int(&r, "attention.key_length", &hp->head_dim, false);
    hp->n_rot = hp->head_dim;
    hp_int(&r, "rope.dimension_count", &hp->n_rot, false);
    hp->rms_eps = 1e-5f;
    hp_float(&r, "attention.layer_norm_rms_epsilon", &hp->rms_eps);
    hp->rope_freq_base = 10000.0f;
    hp_float(&r, "rope.freq_base", &hp->rope_freq_base);
    float scale = 1.0f;
    hp_float(&r, "rope.scaling.factor", &scale);
    if (r.status)
        return r.status;
    hp->rope_freq_scale = scale > 0.0f ? 1.0f / scale : 1.0f;
    hp->rope_mode = ROPE_MODE_NORMAL;
    struct gguf_str rope_type;
    if (gguf_get_str(f, "llama.rope.type", &rope_type) == 0 && gguf_str_eq(rope_type, "neox"))
        hp->rope_mode = ROPE_MODE_NEOX;
    if (hp->n_head % hp->n_head_kv != 0)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "head_count %d is not a multiple of head_count_kv %d", hp->n_head,
                          hp->n_head_kv);
    if (hp->n_rot > hp->head_dim || hp->n_rot % 2 != 0)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "rope.dimension_count %d must be even and <= head dim %d", hp->n_rot,
                          hp->head_dim);
    if (!(hp->rms_eps > 0.0f && hp->rms_eps < 1.0f) || !(hp->rope_freq_base > 1.0f))
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "absurd rms epsilon %g or rope base %g",
                          hp->rms_eps, hp->rope_freq_base);
    return 0;
}

// ---- tensors ---------------------------------------------------------------------------------

static int bind_matrix(const gguf_file *f, const char *name, int64_t cols, int64_t rows,
                       struct model_weight *w, char *err, size_t err_size) {
    const struct gguf_tensor_info *t = gguf_find_tensor(f, name);
    if (!t)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "missing tensor %s", name);
    if (t->n_dims != 2 || t->ne[0] != cols || t->ne[1] != rows)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "tensor %s has shape [%lld, %lld] (%u dims), expected [%lld, %lld]", name,
                          (long long)t->ne[0], (long long)t->ne[1], t->n_dims, (long long)cols,
                          (long long)rows);
    if (!quant_type_supported(t->type))
        return specd_fail(err, err_size, SPECD_ERR_UNSUPPORTED,
                          "tensor %s has type %s, which specd cannot compute with", name,
                          ggml_dtype_name(t->type));
    w->type = t->type;
    w->rows = rows;
    w->cols = cols;
    w->row_bytes = quant_row_bytes(t->type, cols);
    w->data = t->data;
    return 0;
}

// Converts a 1-D norm vector of length n to float32 into dst.
static int bind_norm(const gguf_file *f, const char *name, int64_t n, float *dst, char *err,
                     size_t err_size) {
    const struct gguf_tensor_info *t = gguf_find_tensor(f, name);
    if (!t)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "missing tensor %s", name);
    if (t->n_dims != 1 || t->ne[0] != n)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "tensor %s has %u dims and %lld elements, expected a vector of %lld",
                          name, t->n_dims, (long long)t->ne[0], (long long)n);
    if (!quant_type_supported(t->type))
        return specd_fail(err, err_size, SPECD_ERR_UNSUPPORTED, "tensor %s has type %s", name,
                          ggml_dtype_name(t->type));
    quant_dequantize_row(t->type, t->data, dst, n);
    return 0;
}

static int bind_layer(llama_model *m, int il, char *err, size_t err_size) {
    const struct llama_hparams *hp = &m->hp;
    struct llama_layer *L = &m->w.layers[il];
    const int64_t d = hp->n_embd, q = (int64_t)hp->n_head * hp->head_dim,
                  kv = (int64_t)hp->n_head_kv * hp->head_dim, ff = hp->n_ff;
    float *attn_norm = m->norms + (size_t)(2 * il) * d, *ffn_norm = attn_norm + d;
    char name[96];
    int rc;
#define LAYER_TENSOR(suffix) (snprintf(name, sizeof name, "blk.%d." suffix, il), name)
    if ((rc = bind_norm(m->file, LAYER_TENSOR("attn_norm.weight"), d, attn_norm, err, err_size)) ||
        (rc = bind_matrix(m->file, LAYER_TENSOR("attn_q.weight"), d, q, &L->wq, err, err_size)) ||
        (rc = bind_matrix(m->file, LAYER_TENSOR("attn_k.weight"), d, kv, &L->wk, err, err_size)) ||
        (rc = bind_matrix(m->file, LAYER_TENSOR("attn_v.weight"), d, kv, &L->wv, err, err_size)) ||
        (rc = bind_matrix(m->file, LAYER_TENSOR("attn_output.weight"), q, d, &L->wo, err,
                          err_size)) ||
        (rc = bind_norm(m->file, LAYER_TENSOR("ffn_norm.weight"), d, ffn_norm, err, err_size)) ||
        (rc = bind_matrix(m->file, LAYER_TENSOR("ffn_gate.weight"), d, ff, &L->w_gate, err,
                          err_size)) ||
        (rc =
             bind_matrix(m->file, LAYER_TENSOR("ffn_up.weight"), d, ff, &L->w_up, err, err_size)) ||
        (rc = bind_matrix(m->file, LAYER_TENSOR("ffn_down.weight"), ff, d, &L->w_down, err,
                          err_size)))
        return rc;
#undef LAYER_TENSOR
    L->attn_norm = attn_norm;
    L->ffn_norm = ffn_norm;
    return 0;
}

static int bind_weights(llama_model *m, char *err, size_t err_size) {
    struct llama_hparams *hp = &m->hp;
    const struct gguf_tensor_info *emb = gguf_find_tensor(m->file, "token_embd.weight");
    if (!emb)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "missing tensor token_embd.weight");
    if (emb->n_dims != 2 || emb->ne[1] < 1 || emb->ne[1] > (1 << 22))
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "tensor token_embd.weight must be 2-D with a sane vocabulary size");
    hp->n_vocab = (int32_t)emb->ne[1];
    m->norms = calloc((size_t)(2 * hp->n_layer + 1) * (size_t)hp->n_embd, sizeof(float));
    m->w.layers = calloc((size_t)hp->n_layer, sizeof *m->w.layers);
    if (!m->norms || !m->w.layers)
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory loading model");
    int rc = bind_matrix(m->file, "token_embd.weight", hp->n_embd, hp->n_vocab, &m->w.tok_embd, err,
                         err_size);
    for (int il = 0; !rc && il < hp->n_layer; il++)
        rc = bind_layer(m, il, err, err_size);
    if (rc)
        return rc;
    float *out_norm = m->norms + (size_t)(2 * hp->n_layer) * (size_t)hp->n_embd;
    if ((rc = bind_norm(m->file, "output_norm.weight", hp->n_embd, out_norm, err, err_size)))
        return rc;
    m->w.output_norm = out_norm;
    hp->tied_output = gguf_find_tensor(m->file, "output.weight") == NULL;
    if (hp->tied_output) {
        m->w.output = m->w.tok_embd;
        return 0;
    }
    return bind_matrix(m->file, "output.weight", hp->n_embd, hp->n_vocab, &m->w.output, err,
                       err_size);
}

int llama_model_from_gguf(gguf_file *f, llama_model **out, char *err, size_t err_size) {
    *out = NULL;
    llama_model *m = calloc(1, sizeof *m);
    if (!m)
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory");
    m->file = f;
    int rc = read_hparams(f, &m->hp, err, err_size);
    if (!rc)
        rc = bind_weights(m, err, err_size);
    if (rc) {
        m->file = NULL; // ownership stays with the caller on failure
        llama_model_free(m);
        return rc;
    }
    struct gguf_str name;
    if (gguf_get_str(f, "general.name", &name) == 0 && name.len > 0)
        snprintf(m->name, sizeof m->name, "%.*s", (int)(name.len > 120 ? 120 : name.len),
                 name.data);
    else
        snprintf(m->name, sizeof m->name, "llama");
    *out = m;
    return 0;
}

int llama_model_load(const char *path, llama_model **out, char *err, size_t err_size) {
    *out = NULL;
    gguf_file *f = NULL;
    char why[512];
    int rc = gguf_open(path, NULL, &f, err, err_size); // its message names the file
    if (rc)
        return rc;
    rc = llama_model_from_gguf(f, out, why, sizeof why);
    if (rc) {
        gguf_free(f);
        return specd_fail(err, err_size, rc, "%s: %s", path, why);
    }
    const char *base = strrchr(path, '/');
    struct gguf_str name;
    if (gguf_get_str(f, "general.name", &name) != 0 || name.len == 0)
        snprintf((*out)->name, sizeof(*out)->name, "%s", base ? base + 1 : path);
    return 0;
}

void llama_model_free(llama_model *m) {
    if (!m)
        return;
    gguf_free(m->file);
    free(m->norms);
    free(m->w.layers);
    free(m);
}

const struct llama_hparams *llama_model_hparams(const llama_model *m) {
    return &m->hp;
}

const struct llama_weights *llama_model_weights(const llama_model *m) {
    return &m->w;
}

const gguf_file *llama_model_gguf(const llama_model *m) {
    return m->file;
}

const char *llama_model_name(const llama_model *m) {
    return m->name;
}

static size_t weight_bytes(const struct model_weight *w) {
    return w->row_bytes * (size_t)w->rows;
}

size_t llama_model_weight_bytes(const llama_model *m) {
    size_t total = weight_bytes(&m->w.output) + sizeof(float) * (size_t)m->hp.n_embd;
    for (int il = 0; il < m->hp.n_layer; il++) {
        const struct llama_layer *L = &m->w.layers[il];
        total += weight_bytes(&L->wq) + weight_bytes(&L->wk) + weight_bytes(&L->wv) +
                 weight_bytes(&L->wo) + weight_bytes(&L->w_gate) + weight_bytes(&L->w_up) +
                 weight_bytes(&L->w_down) + 2 * sizeof(float) * (size_t)m->hp.n_embd;
    }
    return total;
}
