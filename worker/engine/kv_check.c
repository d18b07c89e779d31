// kv_check_invariants: the KV block manager's full consistency check, for tests.
#include <stdlib.h>

#include "shared/status.h"
#include "worker/engine/kv_cache_internal.h"

enum { KV_STATE_USED = 1, KV_STATE_FREE = 2, KV_STATE_CACHED = 3 };

struct kv_checker {
    const kv_cache *kv;
    int32_t *refs;  // [n_blocks] references counted from the tables
    uint8_t *state; // [n_blocks] KV_STATE_* found by walking the lists
    char *err;
    size_t err_size;
};

#define KV_FAIL(c, ...) specd_fail((c)->err, (c)->err_size, SPECD_ERR_STATE, __VA_ARGS__)

static int kv_check_seqs(struct kv_checker *c) {
    const kv_cache *kv = c->kv;
    int32_t bs = kv->params.block_size, n_live = 0;
    for (int32_t i = 0; i < kv->params.max_seqs; i++) {
        const struct kv_seq *s = &kv->seqs[i];
        if (!s->live)
            continue;
        n_live++;
        if (s->len < 0 || s->n_blocks != (int32_t)(((int64_t)s->len + bs - 1) / bs) ||
            s->n_blocks > s->cap)
            return KV_FAIL(c, "seq %d: len %d with %d blocks (cap %d)", i, s->len, s->n_blocks,
                           s->cap);
        for (int32_t j = 0; j < s->n_blocks; j++) {
            int32_t b = s->blocks[j];
            if (b < 0 || b >= kv->params.n_blocks)
                return KV_FAIL(c, "seq %d: table[%d] = %d out of range", i, j, b);
            c->refs[b]++;
            const struct kv_block *blk = &kv->blocks[b];
            bool full = (int64_t)(j + 1) * bs <= s->len;
            if (!kv->params.prefix_caching || !full)
                continue;
            uint64_t parent = j == 0 ? kv->params.hash_seed : kv->blocks[s->blocks[j - 1]].hash;
            if (!blk->hash_valid || blk->parent_hash != parent)
                return KV_FAIL(c, "seq %d: full block %d (table[%d]) unhashed or off the chain", i,
                               b, j);
        }
    }
    if (n_live != kv->params.max_seqs - kv->n_free_seq_ids)
        return KV_FAIL(c, "%d live sequences but %d free ids of %d", n_live, kv->n_free_seq_ids,
                       kv->params.max_seqs);
    for (int32_t i = 0; i < kv->n_free_seq_ids; i++) {
        int32_t id = kv->free_seq_ids[i];
        if (id < 0 || id >= kv->params.max_seqs || kv->seqs[id].live)
            return KV_FAIL(c, "free sequence id %d is live or out of range", id);
    }
    return SPECD_OK;
}

static int kv_check_lists(struct kv_checker *c) {
    const kv_cache *kv = c->kv;
    int32_t nb = kv->params.n_blocks;
    if (kv->n_free < 0 || kv->n_free > nb)
        return KV_FAIL(c, "n_free %d out of range", kv->n_free);
    for (int32_t i = 0; i < kv->n_free; i++) {
        int32_t b = kv->free_stack[i];
        if (b < 0 || b >= nb || c->state[b])
            return KV_FAIL(c, "free list entry %d: block %d out of range or listed twice", i, b);
        if (kv->blocks[b].refcount != 0 || kv->blocks[b].registered)
            return KV_FAIL(c, "free block %d has refcount %d, registered %d", b,
                           kv->blocks[b].refcount, kv->blocks[b].registered);
        c->state[b] = KV_STATE_FREE;
    }
    int32_t n = 0, prev = -1;
    for (int32_t b = kv->lru_head; b >= 0; prev = b, b = kv->blocks[b].lru_next) {
        if (b >= nb || c->state[b] || n >= nb)
            return KV_FAIL(c, "LRU list: block %d out of range, listed twice or cycle", b);
        const struct kv_block *blk = &kv->blocks[b];
        if (blk->lru_prev != prev)
            return KV_FAIL(c, "LRU list: block %d prev %d, expected %d", b, blk->lru_prev, prev);
        if (blk->refcount != 0 || !blk->registered)
            return KV_FAIL(c, "cached block %d has refcount %d, registered %d", b, blk->refcount,
                           blk->registered);
        c->state[b] = KV_STATE_CACHED;
        n++;
    }
    if (prev != kv->lru_tail || n != kv->n_cached)
        return KV_FAIL(c, "LRU list: %d blocks ending at %d, expected %d ending at %d", n, prev,
                       kv->n_cached, kv->lru_tail);
    int32_t n_used = 0;
    for (int32_t b = 0; b < nb; b++) {
        const struct kv_block *blk = &kv->blocks[b];
        if (blk->refcount != c->refs[b])
            return KV_FAIL(c, "block %d: refcount %d but %d table references", b, blk->refcount,
                           c->refs[b]);
        if (blk->refcount > 0) {
            if (c->state[b])
                return KV_FAIL(c, "block %d is used and %s", b,
                               c->state[b] == KV_STATE_FREE ? "free" : "cached");
            n_used++;
        } else if (!c->state[b]) {
            return KV_FAIL(c, "block %d is unreferenced but neither free nor cached (leak)", b);
        }
        if (c->state[b] != KV_STATE_CACHED && (blk->lru_prev >= 0 || blk->lru_next >= 0))
            return KV_FAIL(c, "block %d not cached but has LRU links", b);
    }
    if (n_used != kv->n_used || kv->n_used + kv->n_cached + kv->n_free != nb)
        return KV_FAIL(c, "counts: used %d (found %d) + cached %d + free %d != %d", kv->n_used,
                       n_used, kv->n_cached, kv->n_free, nb);
    return SPECD_OK;
}

static int kv_check_index(struct kv_checker *c) {
    const kv_cache *kv = c->kv;
    int32_t bs = kv->params.block_size, n_registered = 0, n_pending = 0;
    for (int32_t b = 0; b < kv->params.n_blocks; b++) {
        const struct kv_block *blk = &kv->blocks[b];
        n_pending += blk->pending;
        if (blk->hash_valid &&
            blk->hash != kv_hash_block(blk->parent_hash, &kv->tokens[(size_t)b * (size_t)bs], bs))
            return KV_FAIL(c, "block %d: tokens changed under its hash", b);
        if (!blk->registered)
            continue;
        n_registered++;
        if (!kv->params.prefix_caching || !blk->hash_valid)
            return KV_FAIL(c, "block %d registered without a valid hash", b);
        if (kv_index_find(&kv->index, blk->hash) != b)
            return KV_FAIL(c, "block %d registered but the index maps its hash to %d", b,
                           kv_index_find(&kv->index, blk->hash));
    }
    if (n_registered != kv->index.count)
        return KV_FAIL(c, "%d registered blocks but %d index entries", n_registered,
                       kv->index.count);
    if (n_pending != kv->n_pending_reg)
        return KV_FAIL(c, "%d blocks flagged pending but %d listed", n_pending, kv->n_pending_reg);
    for (int32_t i = 0; i < kv->n_pending_reg; i++) {
        int32_t b = kv->pending_reg[i];
        if (b < 0 || b >= kv->params.n_blocks || !kv->blocks[b].pending)
            return KV_FAIL(c, "pending list entry %d: block %d not flagged", i, b);
    }
    for (int32_t i = 0; i < kv->n_copies; i++) {
        struct kv_copy cp = kv->copies[i];
        if (cp.src < 0 || cp.src >= kv->params.n_blocks || cp.dst < 0 ||
            cp.dst >= kv->params.n_blocks || cp.src == cp.dst)
            return KV_FAIL(c, "queued copy %d: %d -> %d invalid", i, cp.src, cp.dst);
    }
    for (int32_t b = 0; b < kv->params.n_blocks; b++)
        if (kv->copy_mark[b])
            return KV_FAIL(c, "copy scratch mark left on block %d", b);
    return SPECD_OK;
}

int kv_check_invariants(const kv_cache *kv, char *err, size_t err_size) {
    if (!kv)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "kv: NULL cache");
    struct kv_checker c = {.kv = kv, .err = err, .err_size = err_size};
    c.refs = calloc((size_t)kv->params.n_blocks, sizeof *c.refs);
    c.state = calloc((size_t)kv->params.n_blocks, sizeof *c.state);
    int rc = SPECD_ERR_NOMEM;
    if (c.refs && c.state) {
        rc = kv_check_seqs(&c);
        if (rc == SPECD_OK)
            rc = kv_check_lists(&c);
        if (rc == SPECD_OK)
            rc = kv_check_index(&c);
    } else {
        specd_fail(err, err_size, rc, "kv: out of memory checking invariants");
    }
    free(c.refs);
    free(c.state);
    return rc;
}
