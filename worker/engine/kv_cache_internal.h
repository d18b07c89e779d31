// Internal to the KV block manager (kv_cache.c, kv_prefix.c, kv_check.c): the object's layout,
// the prefix index and helpers the files share. Not for use elsewhere.
#ifndef SPECD_ENGINE_KV_CACHE_INTERNAL_H
#define SPECD_ENGINE_KV_CACHE_INTERNAL_H

#include <stdint.h>

#include "worker/engine/kv_cache.h"

enum {
    KV_MAX_BLOCK_SIZE = 65536,
    KV_MAX_BLOCKS = INT32_MAX / 2,
    KV_MAX_SEQS = 1 << 20,
};

// One physical block. State: used (refcount > 0), cached (refcount 0, registered, in the LRU
// list) or free (refcount 0, not registered, on the free stack).
struct kv_block {
    int32_t refcount; // block tables referencing it
    int32_t lru_prev; // cached blocks: neighbours in the LRU list (-1 at the ends)
    int32_t lru_next;
    uint8_t registered;   // in the prefix index under `hash`; never written while registered
    uint8_t hash_valid;   // all slots filled and `hash` describes them
    uint8_t pending;      // in pending_reg (filled since the last commit)
    uint64_t hash;        // kv_hash_block(parent_hash, tokens of the block)
    uint64_t parent_hash; // hash of the previous block of the prefix (or the seed)
};

struct kv_seq {
    uint8_t live;
    int32_t len;           // tokens
    int32_t n_blocks;      // == ceil(len / block_size)
    int32_t cap;           // capacity of blocks
    int32_t *blocks;       // [cap] physical block ids, first n_blocks used
    uint64_t append_epoch; // kv->epoch at the last append (uncommitted while equal)
};

// Open-addressing map from a block's chain hash to its block id.
struct kv_index {
    uint64_t *keys; // [mask + 1]
    int32_t *vals;  // [mask + 1] block id, -1 for an empty slot
    uint32_t mask;  // capacity - 1 (a power of two >= 2 * max_entries)
    int32_t count;
};

struct kv_cache {
    struct kv_params params;
    struct kv_block *blocks; // [n_blocks]
    int32_t *tokens;         // [n_blocks][block_size] token id in each slot
    int32_t *free_stack;     // [n_blocks], first n_free used
    int32_t n_free;
    int32_t n_used;
    int32_t lru_head; // least recently released cached block (evicted first), -1 if none
    int32_t lru_tail;
    int32_t n_cached;
    struct kv_index index;
    int32_t *pending_reg; // [n_blocks] blocks filled since the last commit, first n_pending_reg
    int32_t n_pending_reg;
    struct kv_seq *seqs;   // [max_seqs]
    int32_t *free_seq_ids; // [max_seqs], first n_free_seq_ids used
    int32_t n_free_seq_ids;
    struct kv_copy *copies; // [cap_copies] queued copy-on-write copies, oldest first
    int32_t n_copies;
    int32_t cap_copies;
    uint8_t *copy_mark; // [n_blocks] scratch for kv_take_copies, all 0 between calls
    uint64_t epoch;     // incremented by kv_commit
    int64_t prefix_query_tokens;
    int64_t prefix_hit_tokens;
    int64_t evictions;
    int64_t cow_copies;
};

// Hash of a full block: XXH3-64 of its token ids seeded with the previous block's hash (or the
// cache's seed for the first block): equal hashes mean equal prefixes, up to collisions, which
// the lookup rules out for the block's own tokens by comparing them.
uint64_t kv_hash_block(uint64_t parent_hash, const int32_t *tokens, int32_t n);

int kv_index_init(struct kv_index *ix, int32_t max_entries); // 0 or SPECD_ERR_NOMEM
void kv_index_destroy(struct kv_index *ix);
int32_t kv_index_find(const struct kv_index *ix, uint64_t key);       // block id or -1
void kv_index_insert(struct kv_index *ix, uint64_t key, int32_t val); // key must be absent
void kv_index_remove(struct kv_index *ix, uint64_t key);              // key must be present

// Shared helpers from kv_cache.c.
struct kv_seq *kv_live_seq(const kv_cache *kv, int32_t seq); // NULL unless live
struct kv_seq *kv_take_seq_id(kv_cache *kv, int32_t *id);    // n_free_seq_ids > 0
int kv_reserve_table(struct kv_seq *s, int32_t n);           // 0 or SPECD_ERR_NOMEM
void kv_retain_block(kv_cache *kv, int32_t b);               // +1 reference, un-caches

#endif
