// Batch assembly for a forward pass of either model.
#include <stdlib.h>
#include <string.h>

#include "shared/status.h"
#include "worker/engine/engine_internal.h"

int engine_grow(void **buf, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap * 2 : 16;
    while (n < need)
        n *= 2;
    void *p = realloc(*buf, n * elem);
    if (!p)
        return SPECD_ERR_NOMEM;
    *buf = p;
    *cap = n;
    return 0;
}

void engine_batch_reset(struct eng_batch *b) {
    memset(&b->b, 0, sizeof b->b);
}

int32_t engine_batch_add(struct eng_batch *b, const kv_cache *kv, int32_t kv_seq,
                         const int32_t *tokens, int32_t n, int32_t n_out) {
    struct backend_batch *bb = &b->b;
    if (engine_grow((void **)&b->seqs, &b->seqs_cap, (size_t)bb->n_seqs + 1, sizeof *b->seqs) ||
        engine_grow((void **)&b->tokens, &b->tokens_cap, (size_t)(bb->n_tokens + n),
                    sizeof *b->tokens) ||
        engine_grow((void **)&b->out_rows, &b->out_cap, (size_t)(bb->n_out + n_out),
                    sizeof *b->out_rows))
        return SPECD_ERR_NOMEM;
    struct backend_seq *s = &b->seqs[bb->n_seqs++];
    s->n_tokens = n;
    s->pos0 = kv_seq_len(kv, kv_seq) - n;
    s->block_table = kv_seq_block_table(kv, kv_seq, &s->n_blocks);
    memcpy(b->tokens + bb->n_tokens, tokens, sizeof *tokens * (size_t)n);
    const int32_t first_row = n_out > 0 ? bb->n_out : -1;
    for (int32_t i = n - n_out; i < n; i++)
        b->out_rows[bb->n_out++] = bb->n_tokens + i;
    bb->n_tokens += n;
    bb->seqs = b->seqs;
    bb->tokens = b->tokens;
    bb->out_rows = b->out_rows;
    return first_row;
}

int engine_kv_copies(struct eng_model *m) {
    struct kv_copy pairs[64];
    int32_t n;
    while ((n = kv_take_copies(m->kv, pairs, 64)) > 0) {
        int32_t src[64], dst[64];
        for (int32_t i = 0; i < n; i++) {
            src[i] = pairs[i].src;
            dst[i] = pairs[i].dst;
        }
        int rc = backend_copy_blocks(m->be, src, dst, n);
        if (rc)
            return rc;
    }
    return 0;
}

int engine_batch_run(struct eng_model *m, struct eng_batch *b, int32_t n_vocab) {
    if (b->b.n_seqs == 0)
        return 0;
    if (engine_grow((void **)&b->logits, &b->logits_cap,
                    (size_t)(b->b.n_out > 0 ? b->b.n_out : 1) * (size_t)n_vocab, sizeof *b->logits))
        return SPECD_ERR_NOMEM;
    return backend_forward(m->be, &b->b, b->logits);
}
