#include "worker/engine/kv_cache.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "shared/check.h"
#include "shared/status.h"
#include "worker/engine/kv_cache_internal.h"

struct kv_params kv_default_params(void) {
    struct kv_params p = {
        .block_size = 16,
        .n_blocks = 0,
        .max_seqs = 256,
        .prefix_caching = true,
        .hash_seed = 0,
    };
    return p;
}

int kv_params_check(const struct kv_params *p, char *err, size_t err_size) {
    if (!p)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "kv: params is NULL");
    if (p->block_size < 1 || p->block_size > KV_MAX_BLOCK_SIZE)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "kv: block_size %d not in 1..%d",
                          p->block_size, KV_MAX_BLOCK_SIZE);
    if (p->n_blocks < 1 || p->n_blocks > KV_MAX_BLOCKS)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "kv: n_blocks %d not in 1..%d",
                          p->n_blocks, KV_MAX_BLOCKS);
    if (p->max_seqs < 1 || p->max_seqs > KV_MAX_SEQS)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "kv: max_seqs %d not in 1..%d",
                          p->max_seqs, KV_MAX_SEQS);
    if ((uint64_t)p->n_blocks * (uint64_t)p->block_size > (uint64_t)SIZE_MAX / sizeof(int32_t))
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "kv: n_blocks * block_size too large for this machine");
    return SPECD_OK;
}

int32_t kv_blocks_for_budget(uint64_t bytes, uint64_t bytes_per_block) {
    if (bytes_per_block == 0)
        return 0;
    uint64_t n = bytes / bytes_per_block;
    return n > (uint64_t)KV_MAX_BLOCKS ? KV_MAX_BLOCKS : (int32_t)n;
}

kv_cache *kv_new(const struct kv_params *params) {
    if (kv_params_check(params, NULL, 0) != SPECD_OK)
        return NULL;
    kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv)
        return NULL;
    kv->params = *params;
    int32_t nb = params->n_blocks, ns = params->max_seqs;
    kv->blocks = calloc((size_t)nb, sizeof *kv->blocks);
    kv->tokens = calloc((size_t)nb * (size_t)params->block_size, sizeof *kv->tokens);
    kv->free_stack = malloc((size_t)nb * sizeof *kv->free_stack);
    kv->pending_reg = malloc((size_t)nb * sizeof *kv->pending_reg);
    kv->copy_mark = calloc((size_t)nb, sizeof *kv->copy_mark);
    kv->seqs = calloc((size_t)ns, sizeof *kv->seqs);
    kv->free_seq_ids = malloc((size_t)ns * sizeof *kv->free_seq_ids);
    if (!kv->blocks || !kv->tokens || !kv->free_stack || !kv->pending_reg || !kv->copy_mark ||
        !kv->seqs || !kv->free_seq_ids || kv_index_init(&kv->index, nb) != SPECD_OK) {
        kv_free(kv);
        return NULL;
    }
    // Stacks pop from the end: push in reverse so that block 0 and sequence 0 come out first.
    for (int32_t i = 0; i < nb; i++) {
        kv->blocks[i].lru_prev = kv->blocks[i].lru_next = -1;
        kv->free_stack[i] = nb - 1 - i;
    }
    kv->n_free = nb;
    for (int32_t i = 0; i < ns; i++)
        kv->free_seq_ids[i] = ns - 1 - i;
    kv->n_free_seq_ids = ns;
    kv->lru_head = kv->lru_tail = -1;
    kv->epoch = 1;
    return kv;
}

void kv_free(kv_cache *kv) {
    if (!kv)
        return;
    if (kv->seqs)
        for (int32_t i = 0; i < kv->params.max_seqs; i++)
            free(kv->seqs[i].blocks);
    free(kv->seqs);
    free(kv->free_seq_ids);
    free(kv->blocks);
    free(kv->tokens);
    free(kv->free_stack);
    free(kv->pending_reg);
    free(kv->copy_mark);
    free(kv->copies);
    kv_index_destroy(&kv->index);
    free(kv);
}

int32_t kv_block_size(const kv_cache *kv) {
    return kv->params.block_size;
}

// ---- block pool --------------------------------------------------------------------------------

static void kv_lru_remove(kv_cache *kv, int32_t b) {
    struct kv_block *blk = &kv->blocks[b];
    if (blk->lru_prev >= 0)
        kv->blocks[blk->lru_prev].lru_next = blk->lru_next;
    else
        kv->lru_head = blk->lru_next;
    if (blk->lru_next >= 0)
        kv->blocks[blk->lru_next].lru_prev = blk->lru_prev;
    else
        kv->lru_tail = blk->lru_prev;
    blk->lru_prev = blk->lru_next = -1;
    kv->n_cached--;
}

static void kv_lru_push_tail(kv_cache *kv, int32_t b) {
    struct kv_block *blk = &kv->blocks[b];
    blk->lru_prev = kv->lru_tail;
    blk->lru_next = -1;
    if (kv->lru_tail >= 0)
        kv->blocks[kv->lru_tail].lru_next = b;
    else
        kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_cached++;
}

static void kv_unregister(kv_cache *kv, int32_t b) {
    struct kv_block *blk = &kv->blocks[b];
    SPECD_CHECK(blk->registered);
    kv_index_remove(&kv->index, blk->hash);
    blk->registered = 0;
}

// Takes a block for writing: a free one, else the least recently released cached one. The caller
// has checked kv_blocks_available().
static int32_t kv_alloc_block(kv_cache *kv) {
    int32_t b;
    if (kv->n_free > 0) {
        b = kv->free_stack[--kv->n_free];
    } else {
        b = kv->lru_head;
        SPECD_CHECK(b >= 0);
        kv_lru_remove(kv, b);
        kv_unregister(kv, b);
        kv->evictions++;
    }
    struct kv_block *blk = &kv->blocks[b];
    SPECD_CHECK(blk->refcount == 0 && !blk->registered);
    blk->refcount = 1;
    blk->hash_valid = 0;
    kv->n_used++;
    return b;
}

// Adds a table reference to a block that may be cached (a prefix hit) or in use.
void kv_retain_block(kv_cache *kv, int32_t b) {
    struct kv_block *blk = &kv->blocks[b];
    if (blk->refcount == 0) {
        SPECD_CHECK(blk->registered);
        kv_lru_remove(kv, b);
        kv->n_used++;
    }
    blk->refcount++;
}

static void kv_release_block(kv_cache *kv, int32_t b) {
    struct kv_block *blk = &kv->blocks[b];
    SPECD_CHECK(blk->refcount > 0);
    if (--blk->refcount > 0)
        return;
    kv->n_used--;
    if (blk->registered) {
        kv_lru_push_tail(kv, b);
    } else {
        blk->hash_valid = 0;
        kv->free_stack[kv->n_free++] = b;
    }
}

int32_t kv_blocks_available(const kv_cache *kv) {
    return kv->n_free + kv->n_cached;
}

int32_t kv_block_refcount(const kv_cache *kv, int32_t block) {
    if (block < 0 || block >= kv->params.n_blocks)
        return -1;
    return kv->blocks[block].refcount;
}

// ---- sequences ---------------------------------------------------------------------------------

struct kv_seq *kv_live_seq(const kv_cache *kv, int32_t seq) {
    if (seq < 0 || seq >= kv->params.max_seqs || !kv->seqs[seq].live)
        return NULL;
    return &kv->seqs[seq];
}

static int32_t kv_blocks_for_len(const kv_cache *kv, int64_t len) {
    return (int32_t)((len + kv->params.block_size - 1) / kv->params.block_size);
}

// Grows a table to hold at least n entries. Returns 0 or SPECD_ERR_NOMEM (table unchanged).
int kv_reserve_table(struct kv_seq *s, int32_t n) {
    if (n <= s->cap)
        return SPECD_OK;
    int64_t cap = s->cap > 0 ? s->cap : 4;
    while (cap < n)
        cap *= 2;
    int32_t *p = realloc(s->blocks, (size_t)cap * sizeof *p);
    if (!p)
        return SPECD_ERR_NOMEM;
    s->blocks = p;
    s->cap = (int32_t)(cap > INT32_MAX ? INT32_MAX : cap);
    return SPECD_OK;
}

struct kv_seq *kv_take_seq_id(kv_cache *kv, int32_t *id) {
    SPECD_CHECK(kv->n_free_seq_ids > 0);
    *id = kv->free_seq_ids[--kv->n_free_seq_ids];
    struct kv_seq *s = &kv->seqs[*id];
    SPECD_CHECK(!s->live);
    s->live = 1;
    s->len = 0;
    s->n_blocks = 0;
    s->append_epoch = 0;
    return s;
}

int kv_seq_new(kv_cache *kv, int32_t *seq) {
    if (!kv || !seq)
        return SPECD_ERR_INVALID;
    if (kv->n_free_seq_ids == 0)
        return SPECD_SOFT_FULL;
    kv_take_seq_id(kv, seq);
    return SPECD_OK;
}

int kv_seq_free(kv_cache *kv, int32_t seq) {
    struct kv_seq *s = kv ? kv_live_seq(kv, seq) : NULL;
    if (!s)
        return SPECD_ERR_INVALID;
    // Release the tail first: it then sits nearer the LRU head and is evicted before the prefix
    // blocks it depends on.
    for (int32_t i = s->n_blocks - 1; i >= 0; i--)
        kv_release_block(kv, s->blocks[i]);
    s->n_blocks = 0;
    s->len = 0;
    s->live = 0;
    kv->free_seq_ids[kv->n_free_seq_ids++] = seq;
    return SPECD_OK;
}

int32_t kv_seq_len(const kv_cache *kv, int32_t seq) {
    const struct kv_seq *s = kv ? kv_live_seq(kv, seq) : NULL;
    return s ? s->len : -1;
}

const int32_t *kv_seq_block_table(const kv_cache *kv, int32_t seq, int32_t *n_blocks) {
    static const int32_t empty_table[1] = {-1};
    const struct kv_seq *s = kv ? kv_live_seq(kv, seq) : NULL;
    if (n_blocks)
        *n_blocks = s ? s->n_blocks : 0;
    if (!s)
        return NULL;
    return s->blocks ? s->blocks : empty_table;
}

int kv_seq_slot(const kv_cache *kv, int32_t seq, int32_t pos, int32_t *block, int32_t *slot) {
    const struct kv_seq *s = kv ? kv_live_seq(kv, seq) : NULL;
    if (!s || pos < 0 || pos >= s->len)
        return SPECD_ERR_INVALID;
    if (block)
        *block = s->blocks[pos / kv->params.block_size];
    if (slot)
        *slot = pos % kv->params.block_size;
    return SPECD_OK;
}

int kv_seq_tokens(const kv_cache *kv, int32_t seq, int32_t start, int32_t n, int32_t *out) {
    const struct kv_seq *s = kv ? kv_live_seq(kv, seq) : NULL;
    if (!s || start < 0 || n < 0 || (int64_t)start + n > s->len || (n > 0 && !out))
        return SPECD_ERR_INVALID;
    int32_t bs = kv->params.block_size;
    for (int32_t i = 0; i < n; i++) {
        int32_t p = start + i;
        out[i] = kv->tokens[(size_t)s->blocks[p / bs] * (size_t)bs + (size_t)(p % bs)];
    }
    return SPECD_OK;
}

int kv_seq_truncate(kv_cache *kv, int32_t seq, int32_t len) {
    struct kv_seq *s = kv ? kv_live_seq(kv, seq) : NULL;
    if (!s || len < 0 || len > s->len)
        return SPECD_ERR_INVALID;
    int32_t keep = kv_blocks_for_len(kv, len);
    for (int32_t i = s->n_blocks - 1; i >= keep; i--)
        kv_release_block(kv, s->blocks[i]);
    s->n_blocks = keep;
    s->len = len;
    if (len % kv->params.block_size != 0) {
        // The last block is now partial for this sequence. A private block outside the index
        // loses its hash: its tail slots may never be computed, so it must not be registered at
        // the next commit. A shared or registered block keeps it (its content stays whole).
        struct kv_block *blk = &kv->blocks[s->blocks[keep - 1]];
        if (blk->refcount == 1 && !blk->registered)
            blk->hash_valid = 0;
    }
    return SPECD_OK;
}

int kv_seq_fork(kv_cache *kv, int32_t parent, int32_t *child) {
    struct kv_seq *p = kv ? kv_live_seq(kv, parent) : NULL;
    if (!p || !child)
        return SPECD_ERR_INVALID;
    if (p->append_epoch == kv->epoch)
        return SPECD_ERR_STATE;
    if (kv->n_free_seq_ids == 0)
        return SPECD_SOFT_FULL;
    // Reserve the child's table before taking its id so that failure changes nothing.
    int32_t id = kv->free_seq_ids[kv->n_free_seq_ids - 1];
    if (kv_reserve_table(&kv->seqs[id], p->n_blocks) != SPECD_OK)
        return SPECD_ERR_NOMEM;
    struct kv_seq *c = kv_take_seq_id(kv, child);
    p = &kv->seqs[parent];
    for (int32_t i = 0; i < p->n_blocks; i++) {
        c->blocks[i] = p->blocks[i];
        kv_retain_block(kv, p->blocks[i]);
    }
    c->n_blocks = p->n_blocks;
    c->len = p->len;
    return SPECD_OK;
}

// ---- appending ---------------------------------------------------------------------------------

// Whether appending to s must first copy its last block: the block is partially filled for s and
// another table references it.
static bool kv_needs_cow(const kv_cache *kv, const struct kv_seq *s) {
    return s->len % kv->params.block_size != 0 &&
           kv->blocks[s->blocks[s->n_blocks - 1]].refcount > 1;
}

int32_t kv_append_blocks_needed(const kv_cache *kv, int32_t seq, int32_t n) {
    const struct kv_seq *s = kv ? kv_live_seq(kv, seq) : NULL;
    if (!s || n < 0)
        return -1;
    if (n == 0)
        return 0;
    int64_t grow = (int64_t)kv_blocks_for_len(kv, (int64_t)s->len + n) - s->n_blocks;
    grow += kv_needs_cow(kv, s) ? 1 : 0;
    return grow > INT32_MAX ? INT32_MAX : (int32_t)grow;
}

bool kv_can_append(const kv_cache *kv, int32_t seq, int32_t n) {
    int32_t need = kv_append_blocks_needed(kv, seq, n);
    return need >= 0 && need <= kv_blocks_available(kv);
}

static int kv_reserve_copies(kv_cache *kv, int32_t n) {
    if (n <= kv->cap_copies)
        return SPECD_OK;
    int32_t cap = kv->cap_copies > 0 ? kv->cap_copies * 2 : 16;
    struct kv_copy *p = realloc(kv->copies, (size_t)cap * sizeof *p);
    if (!p)
        return SPECD_ERR_NOMEM;
    kv->copies = p;
    kv->cap_copies = cap;
    return SPECD_OK;
}

// Makes the last (partial) block of s writable: copy-on-write when shared; when private but in
// the prefix index or hashed as full, its content is about to change, so it leaves the index.
static void kv_prepare_last_block(kv_cache *kv, struct kv_seq *s) {
    int32_t last = s->n_blocks - 1, src = s->blocks[last];
    if (kv->blocks[src].refcount > 1) {
        int32_t dst = kv_alloc_block(kv), bs = kv->params.block_size;
        memcpy(&kv->tokens[(size_t)dst * (size_t)bs], &kv->tokens[(size_t)src * (size_t)bs],
               (size_t)(s->len % bs) * sizeof *kv->tokens);
        kv->copies[kv->n_copies++] = (struct kv_copy){.src = src, .dst = dst};
        kv->cow_copies++;
        kv_release_block(kv, src);
        s->blocks[last] = dst;
        return;
    }
    struct kv_block *blk = &kv->blocks[src];
    if (blk->registered)
        kv_unregister(kv, src);
    blk->hash_valid = 0;
}

// Block `i` of s has just been filled: hash it and queue it for registration at the next commit.
static void kv_block_filled(kv_cache *kv, struct kv_seq *s, int32_t i) {
    if (!kv->params.prefix_caching)
        return;
    int32_t b = s->blocks[i], bs = kv->params.block_size;
    uint64_t parent = kv->params.hash_seed;
    if (i > 0) {
        const struct kv_block *prev = &kv->blocks[s->blocks[i - 1]];
        SPECD_CHECK(prev->hash_valid);
        parent = prev->hash;
    }
    struct kv_block *blk = &kv->blocks[b];
    blk->parent_hash = parent;
    blk->hash = kv_hash_block(parent, &kv->tokens[(size_t)b * (size_t)bs], bs);
    blk->hash_valid = 1;
    if (!blk->pending) {
        blk->pending = 1;
        kv->pending_reg[kv->n_pending_reg++] = b;
    }
}

int kv_seq_append(kv_cache *kv, int32_t seq, const int32_t *tokens, int32_t n) {
    struct kv_seq *s = kv ? kv_live_seq(kv, seq) : NULL;
    if (!s || n < 0 || (n > 0 && !tokens) || (int64_t)s->len + n > INT32_MAX)
        return SPECD_ERR_INVALID;
    if (n == 0)
        return SPECD_OK;
    if (kv_append_blocks_needed(kv, seq, n) > kv_blocks_available(kv))
        return SPECD_SOFT_FULL;
    bool cow = kv_needs_cow(kv, s);
    if (kv_reserve_table(s, kv_blocks_for_len(kv, (int64_t)s->len + n)) != SPECD_OK ||
        (cow && kv_reserve_copies(kv, kv->n_copies + 1) != SPECD_OK))
        return SPECD_ERR_NOMEM;

    int32_t bs = kv->params.block_size, pos = s->len;
    if (pos % bs != 0)
        kv_prepare_last_block(kv, s);
    for (int32_t i = 0; i < n;) {
        if (pos % bs == 0)
            s->blocks[s->n_blocks++] = kv_alloc_block(kv);
        int32_t b = s->blocks[pos / bs], slot = pos % bs;
        SPECD_CHECK(kv->blocks[b].refcount == 1 && !kv->blocks[b].registered);
        int32_t k = bs - slot < n - i ? bs - slot : n - i;
        memcpy(&kv->tokens[(size_t)b * (size_t)bs + (size_t)slot], tokens + i,
               (size_t)k * sizeof *tokens);
        pos += k;
        i += k;
        if (pos % bs == 0)
            kv_block_filled(kv, s, pos / bs - 1);
    }
    s->len = pos;
    s->append_epoch = kv->epoch;
    return SPECD_OK;
}

// ---- steps -------------------------------------------------------------------------------------

void kv_commit(kv_cache *kv) {
    if (!kv)
        return;
    for (int32_t i = 0; i < kv->n_pending_reg; i++) {
        int32_t b = kv->pending_reg[i];
        struct kv_block *blk = &kv->blocks[b];
        blk->pending = 0;
        // Skip blocks released since (never computed), rewritten since (hash dropped) or whose
        // content another block already holds in the index.
        if (blk->refcount == 0 || !blk->hash_valid || blk->registered ||
            kv_index_find(&kv->index, blk->hash) >= 0)
            continue;
        kv_index_insert(&kv->index, blk->hash, b);
        blk->registered = 1;
    }
    kv->n_pending_reg = 0;
    kv->epoch++;
}

int32_t kv_pending_copies(const kv_cache *kv) {
    return kv->n_copies;
}

enum { KV_MARK_READ = 1, KV_MARK_WRITTEN = 2 };

int32_t kv_take_copies(kv_cache *kv, struct kv_copy *pairs, int32_t cap) {
    if (!kv || !pairs || cap <= 0)
        return 0;
    int32_t n = 0;
    // Longest prefix in which no block is written twice or both read and written.
    while (n < kv->n_copies && n < cap) {
        struct kv_copy c = kv->copies[n];
        if (kv->copy_mark[c.dst] != 0 || kv->copy_mark[c.src] == KV_MARK_WRITTEN)
            break;
        kv->copy_mark[c.src] = KV_MARK_READ;
        kv->copy_mark[c.dst] = KV_MARK_WRITTEN;
        pairs[n++] = c;
    }
    for (int32_t i = 0; i < n; i++)
        kv->copy_mark[pairs[i].src] = kv->copy_mark[pairs[i].dst] = 0;
    if (n == 0)
        return 0;
    kv->n_copies -= n;
    memmove(kv->copies, kv->copies + n, (size_t)kv->n_copies * sizeof *kv->copies);
    return n;
}

void kv_stats(const kv_cache *kv, struct kv_stats *st) {
    memset(st, 0, sizeof *st);
    if (!kv)
        return;
    st->n_blocks = kv->params.n_blocks;
    st->n_used = kv->n_used;
    st->n_cached = kv->n_cached;
    st->n_free = kv->n_free;
    st->n_seqs = kv->params.max_seqs - kv->n_free_seq_ids;
    st->prefix_query_tokens = kv->prefix_query_tokens;
    st->prefix_hit_tokens = kv->prefix_hit_tokens;
    st->evictions = kv->evictions;
    st->cow_copies = kv->cow_copies;
}
