// Prefix cache of the KV block manager: the chained block hash, the hash -> block index, and
// matching a prompt against cached blocks.
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "shared/check.h"
#include "shared/status.h"
#include "worker/engine/kv_cache_internal.h"

uint64_t kv_hash_block(uint64_t parent_hash, const int32_t *tokens, int32_t n) {
    return XXH3_64bits_withSeed(tokens, (size_t)n * sizeof *tokens, parent_hash);
}

// ---- index -------------------------------------------------------------------------------------

// Keys are hashes already; the multiply keeps the home slot well spread whatever the seed.
static uint32_t kv_index_home(const struct kv_index *ix, uint64_t key) {
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & ix->mask;
}

int kv_index_init(struct kv_index *ix, int32_t max_entries) {
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)max_entries)
        cap *= 2;
    ix->keys = malloc(cap * sizeof *ix->keys);
    ix->vals = malloc(cap * sizeof *ix->vals);
    if (!ix->keys || !ix->vals) {
        kv_index_destroy(ix);
        return SPECD_ERR_NOMEM;
    }
    for (uint64_t i = 0; i < cap; i++)
        ix->vals[i] = -1;
    ix->mask = (uint32_t)(cap - 1);
    ix->count = 0;
    return SPECD_OK;
}

void kv_index_destroy(struct kv_index *ix) {
    free(ix->keys);
    free(ix->vals);
    ix->keys = NULL;
    ix->vals = NULL;
    ix->count = 0;
}

// Slot holding key, or the empty slot where it would go.
static uint32_t kv_index_probe(const struct kv_index *ix, uint64_t key) {
    uint32_t i = kv_index_home(ix, key);
    while (ix->vals[i] >= 0 && ix->keys[i] != key)
        i = (i + 1) & ix->mask;
    return i;
}

int32_t kv_index_find(const struct kv_index *ix, uint64_t key) {
    return ix->vals[kv_index_probe(ix, key)];
}

void kv_index_insert(struct kv_index *ix, uint64_t key, int32_t val) {
    SPECD_CHECK(val >= 0);
    SPECD_CHECK((uint32_t)ix->count < (ix->mask + 1) / 2);
    uint32_t i = kv_index_probe(ix, key);
    SPECD_CHECK(ix->vals[i] < 0);
    ix->keys[i] = key;
    ix->vals[i] = val;
    ix->count++;
}

// Linear probing with backward-shift deletion: no tombstones, so probe chains stay short.
void kv_index_remove(struct kv_index *ix, uint64_t key) {
    uint32_t i = kv_index_probe(ix, key);
    SPECD_CHECK(ix->vals[i] >= 0);
    for (uint32_t j = (i + 1) & ix->mask; ix->vals[j] >= 0; j = (j + 1) & ix->mask) {
        // Entry j may move into the hole at i when i lies cyclically in [home(j), j).
        uint32_t home = kv_index_home(ix, ix->keys[j]);
        if (((j - home) & ix->mask) >= ((j - i) & ix->mask)) {
            ix->keys[i] = ix->keys[j];
            ix->vals[i] = ix->vals[j];
            i = j;
        }
    }
    ix->vals[i] = -1;
    ix->count--;
}

// ---- matching ----------------------------------------------------------------------------------

// Finds the cached blocks holding the longest whole-block prefix of prompt[0..n), leaving the
// block of the last token out. Writes their ids to out (may be NULL) and returns how many;
// *n_evictable counts those with no reference now.
static int32_t kv_match_blocks(const kv_cache *kv, const int32_t *prompt, int32_t n, int32_t *out,
                               int32_t *n_evictable) {
    int32_t bs = kv->params.block_size, max = n > 0 ? (n - 1) / bs : 0, k = 0;
    *n_evictable = 0;
    if (!kv->params.prefix_caching)
        return 0;
    uint64_t parent = kv->params.hash_seed;
    for (; k < max; k++) {
        const int32_t *want = prompt + (size_t)k * (size_t)bs;
        uint64_t h = kv_hash_block(parent, want, bs);
        int32_t b = kv_index_find(&kv->index, h);
        // A hit must hold exactly these tokens after exactly this prefix (parent hash): a hash
        // collision is a miss, not wrong K/V.
        if (b < 0 || kv->blocks[b].parent_hash != parent ||
            memcmp(&kv->tokens[(size_t)b * (size_t)bs], want, (size_t)bs * sizeof *want) != 0)
            break;
        if (out)
            out[k] = b;
        if (kv->blocks[b].refcount == 0)
            (*n_evictable)++;
        parent = h;
    }
    return k;
}

int kv_prefix_match(const kv_cache *kv, const int32_t *prompt, int32_t n, int32_t *n_cached,
                    int32_t *n_blocks_needed) {
    if (!kv || n < 0 || (n > 0 && !prompt))
        return SPECD_ERR_INVALID;
    int32_t bs = kv->params.block_size, n_evictable;
    int32_t k = kv_match_blocks(kv, prompt, n, NULL, &n_evictable);
    int32_t cached = k * bs;
    if (n_cached)
        *n_cached = cached;
    if (n_blocks_needed)
        *n_blocks_needed = (int32_t)(((int64_t)n - cached + bs - 1) / bs) + n_evictable;
    return SPECD_OK;
}

int kv_seq_new_with_prefix(kv_cache *kv, const int32_t *prompt, int32_t n, int32_t *seq,
                           int32_t *n_cached) {
    if (!kv || n < 0 || (n > 0 && !prompt) || !seq)
        return SPECD_ERR_INVALID;
    if (kv->n_free_seq_ids == 0)
        return SPECD_SOFT_FULL;
    int32_t bs = kv->params.block_size, n_evictable;
    int32_t k = kv_match_blocks(kv, prompt, n, NULL, &n_evictable);
    // Reserve the table of the id about to be taken so that failure changes nothing.
    int32_t id = kv->free_seq_ids[kv->n_free_seq_ids - 1];
    if (kv_reserve_table(&kv->seqs[id], k) != SPECD_OK)
        return SPECD_ERR_NOMEM;
    struct kv_seq *s = kv_take_seq_id(kv, seq);
    SPECD_CHECK(kv_match_blocks(kv, prompt, n, s->blocks, &n_evictable) == k);
    for (int32_t i = 0; i < k; i++)
        kv_retain_block(kv, s->blocks[i]);
    s->n_blocks = k;
    s->len = k * bs;
    kv->prefix_query_tokens += n;
    kv->prefix_hit_tokens += s->len;
    if (n_cached)
        *n_cached = s->len;
    return SPECD_OK;
}
