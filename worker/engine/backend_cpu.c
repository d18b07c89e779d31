// The CPU reference backend: float32 accumulation, threads over matrix rows and attention heads.
// Its arithmetic follows llama.cpp's CPU backend where that decides greedy outputs: K/V are
// stored as fp16, block-quantized matmuls quantize activations to Q8_0 (ops.h), and attention
// is computed as ggml's CPU flash attention does it (fp16 query, online softmax, fp16 V
// accumulator). Every token's result depends only on its own inputs and cached K/V, never on
// the rest of the batch.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "shared/status.h"
#include "worker/engine/backend.h"
#include "worker/engine/ops.h"
#include "worker/engine/quant.h"

struct cpu_backend {
    struct backend base;
    const struct llama_hparams *hp;
    const struct llama_weights *w;
    tpool *pool;
    int32_t kv_dim;     // n_head_kv * head_dim
    size_t layer_elems; // floats per layer in k_cache / v_cache
    uint16_t *k_cache;  // [n_layer][n_blocks][block_size][kv_dim] fp16
    uint16_t *v_cache;  // [n_layer][n_blocks][block_size][kv_dim] fp16
    // Workspace, grown on demand to the largest batch seen.
    int32_t ws_tokens;
    float *x;        // [n_tokens][n_embd] residual stream
    float *xb;       // [n_tokens][n_embd] normed input
    float *q;        // [n_tokens][n_head*head_dim]
    float *k;        // [n_tokens][kv_dim]
    float *v;        // [n_tokens][kv_dim]
    float *att;      // [n_tokens][n_head*head_dim] attention output
    float *tmp;      // [n_tokens][max(n_embd, n_ff)]
    float *gate;     // [n_tokens][n_ff]
    float *up;       // [n_tokens][n_ff]
    int32_t *pos;    // [n_tokens] position of each token
    int32_t *seq_of; // [n_tokens] sequence of each token
    float *scratch;  // [n_threads][max(n_embd, n_ff, n_head*head_dim)] dequantized weight rows
    float *scores;   // [n_threads][2][head_dim] attention scratch
};

size_t backend_cpu_block_bytes(const llama_model *model, int32_t block_size) {
    const struct llama_hparams *hp = llama_model_hparams(model);
    return 2 * sizeof(uint16_t) * (size_t)hp->n_layer * (size_t)block_size *
           (size_t)(hp->n_head_kv * hp->head_dim);
}

static uint16_t *kv_slot(const struct cpu_backend *c, uint16_t *cache, int layer, int32_t block,
                         int32_t slot) {
    return cache + (size_t)layer * c->layer_elems +
           ((size_t)block * (size_t)c->base.params.block_size + (size_t)slot) * (size_t)c->kv_dim;
}

static int grow_workspace(struct cpu_backend *c, int32_t n_tokens) {
    const struct llama_hparams *hp = c->hp;
    if (n_tokens <= c->ws_tokens)
        return 0;
    const size_t n = (size_t)n_tokens, qd = (size_t)hp->n_head * (size_t)hp->head_dim;
    const size_t wide = (size_t)(hp->n_ff > hp->n_embd ? hp->n_ff : hp->n_embd);
    float **bufs[] = {&c->x, &c->xb, &c->q, &c->k, &c->v, &c->att, &c->tmp, &c->gate, &c->up};
    const size_t sizes[] = {hp->n_embd, hp->n_embd, qd,       c->kv_dim, c->kv_dim,
                            qd,         wide,       hp->n_ff, hp->n_ff};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        float *p = realloc(*bufs[i], n * sizes[i] * sizeof(float));
        if (!p)
            return SPECD_ERR_NOMEM;
        *bufs[i] = p;
    }
    int32_t *pos = realloc(c->pos, n * sizeof *pos);
    if (pos)
        c->pos = pos;
    int32_t *seq_of = realloc(c->seq_of, n * sizeof *seq_of);
    if (seq_of)
        c->seq_of = seq_of;
    if (!pos || !seq_of)
        return SPECD_ERR_NOMEM;
    c->ws_tokens = n_tokens;
    return 0;
}

// ---- attention -------------------------------------------------------------------------------

struct attn_job {
    struct cpu_backend *c;
    const struct backend_batch *b;
    int layer;
};

static float round_f16(float x) {
    return quant_f16_to_f32(quant_f32_to_f16(x));
}

// The three inner loops of fp16 attention. With AVX2/F16C they process 8 lanes at a time; the
// portable loops give the same values up to the summation order of dot_f16.
// q . k over n dims in the order ggml's CPU backend sums an fp16 dot product on AVX-512
// hardware (what produced the llama.cpp references): 4 accumulators of 16 lanes over steps of
// 64 elements with fused multiply-adds, folded 0+2, 1+3, 0+1, then halves, quarters and pairs;
// the tail (n % 64) is added in double. Any SIMD width gives the same lanes, hence the same sum.
#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
static float dot_f16(const float *q, const uint16_t *k, int n) {
    const int np = n & ~63;
    __m256 acc[4][2] = {{_mm256_setzero_ps(), _mm256_setzero_ps()},
                        {_mm256_setzero_ps(), _mm256_setzero_ps()},
                        {_mm256_setzero_ps(), _mm256_setzero_ps()},
                        {_mm256_setzero_ps(), _mm256_setzero_ps()}};
    for (int i = 0; i < np; i += 64)
        for (int j = 0; j < 4; j++)
            for (int h = 0; h < 2; h++) {
                const int o = i + 16 * j + 8 * h;
                const __m256 kv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + o)));
                acc[j][h] = _mm256_fmadd_ps(kv, _mm256_loadu_ps(q + o), acc[j][h]);
            }
    for (int h = 0; h < 2; h++) {
        acc[0][h] = _mm256_add_ps(acc[0][h], acc[2][h]);
        acc[1][h] = _mm256_add_ps(acc[1][h], acc[3][h]);
        acc[0][h] = _mm256_add_ps(acc[0][h], acc[1][h]);
    }
    const __m256 t3 = _mm256_add_ps(acc[0][1], acc[0][0]);
    const __m128 t6 = _mm_add_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
    const __m128 t8 = _mm_add_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
    double sum = _mm_cvtss_f32(_mm_add_ss(t8, _mm_shuffle_ps(t8, t8, _MM_SHUFFLE(0, 1, 0, 1))));
    for (int i = np; i < n; i++)
        sum += (double)(quant_f16_to_f32(k[i]) * q[i]);
    return (float)sum;
}

static __m256 round8_f16(__m256 x) {
    return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}

// acc = fp16(acc * scale)
static void scale_f16(float *acc, float scale, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(
            acc + i, round8_f16(_mm256_mul_ps(_mm256_loadu_ps(acc + i), _mm256_set1_ps(scale))));
    for (; i < n; i++)
        acc[i] = round_f16(acc[i] * scale);
}

// acc = fp16(v * w + acc)
static void mad_f16(float *acc, const uint16_t *v, float w, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 vv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i)));
        _mm256_storeu_ps(
            acc + i, round8_f16(_mm256_fmadd_ps(vv, _mm256_set1_ps(w), _mm256_loadu_ps(acc + i))));
    }
    for (; i < n; i++)
        acc[i] = round_f16(fmaf(quant_f16_to_f32(v[i]), w, acc[i]));
}
#else
static float dot_f16(const float *q, const uint16_t *k, int n) {
    const int np = n & ~63;
    float acc[4][16] = {{0}};
    for (int i = 0; i < np; i += 64)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 16; l++)
                acc[j][l] = fmaf(quant_f16_to_f32(k[i + 16 * j + l]), q[i + 16 * j + l], acc[j][l]);
    float t3[8], t6[4];
    for (int l = 0; l < 16; l++)
        acc[0][l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    for (int l = 0; l < 8; l++)
        t3[l] = acc[0][l + 8] + acc[0][l];
    for (int l = 0; l < 4; l++)
        t6[l] = t3[l + 4] + t3[l];
    double sum = (t6[0] + t6[2]) + (t6[1] + t6[3]);
    for (int i = np; i < n; i++)
        sum += (double)(quant_f16_to_f32(k[i]) * q[i]);
    return (float)sum;
}

static void scale_f16(float *acc, float scale, int n) {
    for (int i = 0; i < n; i++)
        acc[i] = round_f16(acc[i] * scale);
}

static void mad_f16(float *acc, const uint16_t *v, float w, int n) {
    for (int i = 0; i < n; i++)
        acc[i] = round_f16(fmaf(quant_f16_to_f32(v[i]), w, acc[i]));
}
#endif

// One (token, head) pair: softmax(q . K^T / sqrt(d)) V over positions [0, pos], as ggml's CPU
// flash attention computes it: q rounded to fp16, dot products in float32, online softmax, and
// the weighted V sum kept in an fp16 accumulator. qh and acc: [head_dim] scratch.
static void attend_one(struct attn_job *j, int t, int h, float *qh, float *acc) {
    struct cpu_backend *c = j->c;
    const struct llama_hparams *hp = c->hp;
    const int hd = hp->head_dim, bs = c->base.params.block_size;
    const int kvh = h / (hp->n_head / hp->n_head_kv);
    const struct backend_seq *s = &j->b->seqs[c->seq_of[t]];
    const int32_t n_pos = c->pos[t] + 1;
    const float *q = c->q + (size_t)t * hp->n_head * hd + (size_t)h * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int i = 0; i < hd; i++) {
        qh[i] = round_f16(q[i]);
        acc[i] = 0.0f;
    }
    float m = -INFINITY, sum = 0.0f;
    for (int32_t p = 0; p < n_pos; p++) {
        const int32_t block = s->block_table[p / bs];
        const uint16_t *k = kv_slot(c, c->k_cache, j->layer, block, p % bs) + (size_t)kvh * hd;
        const uint16_t *v = kv_slot(c, c->v_cache, j->layer, block, p % bs) + (size_t)kvh * hd;
        const float score = dot_f16(qh, k, hd) * scale;
        float ms = 1.0f, vs = 1.0f;
        if (score > m) {
            ms = expf(m - score);
            m = score;
            scale_f16(acc, ms, hd);
        } else {
            vs = expf(score - m);
        }
        mad_f16(acc, v, vs, hd);
        sum = fmaf(sum, ms, vs); // g++ contracts ggml's S = S * ms + vs into an FMA
    }
    float *out = c->att + (size_t)t * hp->n_head * hd + (size_t)h * hd;
    const float inv = 1.0f / sum;
    for (int i = 0; i < hd; i++)
        out[i] = acc[i] * inv;
}

static void attend_range(void *ctx, int begin, int end, int thread) {
    struct attn_job *j = ctx;
    const int n_head = j->c->hp->n_head;
    float *qh = j->c->scores + (size_t)thread * 2 * (size_t)j->c->hp->head_dim;
    for (int i = begin; i < end; i++)
        attend_one(j, i / n_head, i % n_head, qh, qh + j->c->hp->head_dim);
}

// ---- the layer stack -------------------------------------------------------------------------

static void store_kv(struct cpu_backend *c, const struct backend_batch *b, int layer) {
    const int bs = c->base.params.block_size;
    for (int32_t t = 0; t < b->n_tokens; t++) {
        const struct backend_seq *s = &b->seqs[c->seq_of[t]];
        const int32_t p = c->pos[t], block = s->block_table[p / bs];
        uint16_t *k = kv_slot(c, c->k_cache, layer, block, p % bs);
        uint16_t *v = kv_slot(c, c->v_cache, layer, block, p % bs);
        for (int32_t i = 0; i < c->kv_dim; i++) {
            k[i] = quant_f32_to_f16(c->k[(size_t)t * c->kv_dim + i]);
            v[i] = quant_f32_to_f16(c->v[(size_t)t * c->kv_dim + i]);
        }
    }
}

static int run_layer(struct cpu_backend *c, const struct backend_batch *b, int il) {
    const struct llama_hparams *hp = c->hp;
    const struct llama_layer *L = &c->w->layers[il];
    const int n = b->n_tokens, d = hp->n_embd, qd = hp->n_head * hp->head_dim;
    int rc = 0;
    for (int t = 0; t < n; t++)
        ops_rmsnorm(c->x + (size_t)t * d, L->attn_norm, c->xb + (size_t)t * d, d, hp->rms_eps);
    rc |= ops_matmul(c->pool, &L->wq, c->xb, n, c->q, c->scratch);
    rc |= ops_matmul(c->pool, &L->wk, c->xb, n, c->k, c->scratch);
    rc |= ops_matmul(c->pool, &L->wv, c->xb, n, c->v, c->scratch);
    for (int t = 0; t < n; t++) {
        ops_rope(c->q + (size_t)t * qd, hp->n_head, hp->head_dim, hp->n_rot, c->pos[t],
                 hp->rope_freq_base, hp->rope_freq_scale, hp->rope_mode);
        ops_rope(c->k + (size_t)t * c->kv_dim, hp->n_head_kv, hp->head_dim, hp->n_rot, c->pos[t],
                 hp->rope_freq_base, hp->rope_freq_scale, hp->rope_mode);
    }
    store_kv(c, b, il);
    struct attn_job job = {c, b, il};
    tpool_for(c->pool, n * hp->n_head, 1, attend_range, &job);
    rc |= ops_matmul(c->pool, &L->wo, c->att, n, c->tmp, c->scratch);
    for (size_t i = 0; i < (size_t)n * d; i++)
        c->x[i] += c->tmp[i];
    for (int t = 0; t < n; t++)
        ops_rmsnorm(c->x + (size_t)t * d, L->ffn_norm, c->xb + (size_t)t * d, d, hp->rms_eps);
    rc |= ops_matmul(c->pool, &L->w_gate, c->xb, n, c->gate, c->scratch);
    rc |= ops_matmul(c->pool, &L->w_up, c->xb, n, c->up, c->scratch);
    ops_silu_mul(c->gate, c->up, n * hp->n_ff);
    rc |= ops_matmul(c->pool, &L->w_down, c->gate, n, c->tmp, c->scratch);
    for (size_t i = 0; i < (size_t)n * d; i++)
        c->x[i] += c->tmp[i];
    return rc ? SPECD_ERR_NOMEM : 0;
}

static int cpu_forward(backend *be, const struct backend_batch *b, float *logits) {
    struct cpu_backend *c = (struct cpu_backend *)be;
    const struct llama_hparams *hp = c->hp;
    char why[160];
    int rc = backend_validate_batch(be, b, why, sizeof why);
    if (rc)
        return rc;
    if ((rc = grow_workspace(c, b->n_tokens)))
        return rc;
    for (int32_t s = 0, t = 0; s < b->n_seqs; s++)
        for (int32_t i = 0; i < b->seqs[s].n_tokens; i++, t++) {
            c->pos[t] = b->seqs[s].pos0 + i;
            c->seq_of[t] = s;
        }
    const int d = hp->n_embd;
    const struct model_weight *emb = &c->w->tok_embd;
    for (int32_t t = 0; t < b->n_tokens; t++)
        quant_dequantize_row(emb->type,
                             (const uint8_t *)emb->data + (size_t)b->tokens[t] * emb->row_bytes,
                             c->x + (size_t)t * d, d);
    for (int il = 0; il < hp->n_layer && !rc; il++)
        rc = run_layer(c, b, il);
    if (rc)
        return rc;
    for (int32_t r = 0; r < b->n_out; r++)
        ops_rmsnorm(c->x + (size_t)b->out_rows[r] * d, c->w->output_norm, c->xb + (size_t)r * d, d,
                    hp->rms_eps);
    return ops_matmul(c->pool, &c->w->output, c->xb, b->n_out, logits, c->scratch) ? SPECD_ERR_NOMEM
                                                                                   : 0;
}

static int cpu_copy_blocks(backend *be, const int32_t *src, const int32_t *dst, int n) {
    struct cpu_backend *c = (struct cpu_backend *)be;
    const size_t block = (size_t)c->base.params.block_size * (size_t)c->kv_dim;
    for (int i = 0; i < n; i++) {
        if (src[i] < 0 || src[i] >= c->base.params.n_blocks || dst[i] < 0 ||
            dst[i] >= c->base.params.n_blocks)
            return SPECD_ERR_INVALID;
        for (int il = 0; il < c->hp->n_layer; il++) {
            memcpy(kv_slot(c, c->k_cache, il, dst[i], 0), kv_slot(c, c->k_cache, il, src[i], 0),
                   block * sizeof(uint16_t));
            memcpy(kv_slot(c, c->v_cache, il, dst[i], 0), kv_slot(c, c->v_cache, il, src[i], 0),
                   block * sizeof(uint16_t));
        }
    }
    return 0;
}

static void cpu_free(backend *be) {
    struct cpu_backend *c = (struct cpu_backend *)be;
    if (!c)
        return;
    tpool_free(c->pool);
    free(c->k_cache);
    free(c->v_cache);
    float *bufs[] = {c->x,   c->xb,   c->q,  c->k,       c->v,     c->att,
                     c->tmp, c->gate, c->up, c->scratch, c->scores};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    free(c->pos);
    free(c->seq_of);
    free(c);
}

static const struct backend_ops cpu_ops = {"cpu", cpu_forward, cpu_copy_blocks, cpu_free};

int backend_cpu_new(const llama_model *model, const struct backend_params *params, backend **out,
                    char *err, size_t err_size) {
    *out = NULL;
    if (params->n_blocks < 1 || params->block_size < 1 || params->block_size > 4096)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "KV cache needs at least one block of 1..4096 slots");
    struct cpu_backend *c = calloc(1, sizeof *c);
    if (!c)
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory");
    c->base.ops = &cpu_ops;
    c->base.model = model;
    c->base.params = *params;
    c->hp = llama_model_hparams(model);
    c->w = llama_model_weights(model);
    c->kv_dim = c->hp->n_head_kv * c->hp->head_dim;
    c->layer_elems = (size_t)params->n_blocks * (size_t)params->block_size * (size_t)c->kv_dim;
    c->pool = tpool_new(params->n_threads);
    const size_t cache = (size_t)c->hp->n_layer * c->layer_elems;
    c->k_cache = c->pool ? calloc(cache, sizeof(uint16_t)) : NULL;
    c->v_cache = c->k_cache ? calloc(cache, sizeof(uint16_t)) : NULL;
    int32_t widest = c->hp->n_ff > c->hp->n_embd ? c->hp->n_ff : c->hp->n_embd;
    if (c->hp->n_head * c->hp->head_dim > widest)
        widest = c->hp->n_head * c->hp->head_dim;
    const size_t n_threads = c->pool ? (size_t)tpool_n_threads(c->pool) : 1;
    c->scratch = c->v_cache ? malloc(n_threads * (size_t)widest * sizeof(float)) : NULL;
    c->scores = malloc(n_threads * 2 * (size_t)c->hp->head_dim * sizeof(float));
    if (!c->scratch || !c->scores) {
        cpu_free(&c->base);
        return specd_fail(
            err, err_size, SPECD_ERR_NOMEM,
            "out of memory for a KV cache of %d blocks x %d slots (%zu MiB)", params->n_blocks,
            params->block_size,
            (size_t)params->n_blocks * backend_cpu_block_bytes(model, params->block_size) >> 20);
    }
    *out = &c->base;
    return 0;
}
