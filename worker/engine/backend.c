#include "worker/engine/backend.h"

#include "shared/status.h"

struct backend_params backend_default_params(void) {
    struct backend_params p = {.n_blocks = 256, .block_size = 16, .n_threads = 0};
    return p;
}

int backend_validate_batch(const backend *be, const struct backend_batch *b, char *err,
                           size_t err_size) {
    const int32_t n_vocab = llama_model_hparams(be->model)->n_vocab;
    const int32_t bs = be->params.block_size, nb = be->params.n_blocks;
    if (b->n_seqs < 1 || b->n_tokens < 1 || !b->seqs || !b->tokens)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "empty batch");
    int64_t total = 0;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const struct backend_seq *q = &b->seqs[s];
        if (q->n_tokens < 1 || q->pos0 < 0)
            return specd_fail(err, err_size, SPECD_ERR_INVALID, "sequence %d: bad token count", s);
        const int64_t need = ((int64_t)q->pos0 + q->n_tokens + bs - 1) / bs;
        if (q->n_blocks < need || !q->block_table)
            return specd_fail(err, err_size, SPECD_ERR_INVALID,
                              "sequence %d: block table has %d blocks, needs %lld", s, q->n_blocks,
                              (long long)need);
        for (int64_t i = 0; i < need; i++)
            if (q->block_table[i] < 0 || q->block_table[i] >= nb)
                return specd_fail(err, err_size, SPECD_ERR_INVALID,
                                  "sequence %d: block id %d out of range", s, q->block_table[i]);
        total += q->n_tokens;
    }
    if (total != b->n_tokens)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "token counts do not add up");
    for (int32_t t = 0; t < b->n_tokens; t++)
        if (b->tokens[t] < 0 || b->tokens[t] >= n_vocab)
            return specd_fail(err, err_size, SPECD_ERR_INVALID, "token id %d out of range",
                              b->tokens[t]);
    for (int32_t r = 0; r < b->n_out; r++)
        if (b->out_rows[r] < 0 || b->out_rows[r] >= b->n_tokens ||
            (r > 0 && b->out_rows[r] <= b->out_rows[r - 1]))
            return specd_fail(err, err_size, SPECD_ERR_INVALID, "bad output row list");
    return 0;
}
