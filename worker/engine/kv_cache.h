// Paged KV cache block manager: which physical block holds which tokens of which sequence.
//
// The K/V tensors themselves live in the compute backend (worker/engine/backend.h); this module
// hands out block ids. Token position t of a sequence lives in block table[t / block_size], slot
// t % block_size, where table = kv_seq_block_table(). A sequence's table always has exactly
// ceil(len / block_size) entries.
//
// Blocks are reference counted; sequences share blocks after kv_seq_fork() and after a prefix
// cache hit. A block that more than one table references is never written: appending into a
// shared partially filled block first moves the sequence to a fresh block (copy-on-write) and
// queues a (src, dst) copy that the backend must perform (kv_take_copies). A block registered in
// the prefix index is never written either; if its only owner truncated into it and appends
// again, it is dropped from the index first.
//
// Prefix cache: each full block is keyed by a chained 64-bit hash (XXH3 of its tokens, seeded
// with the previous block's hash) and its tokens are kept here, so a hit is verified token by
// token. Full blocks enter the index at kv_commit(), i.e. once their K/V has been computed. Blocks
// no table references that are in the index stay cached; they are evicted least recently released
// first when no free block is left.
//
// Contract with the engine, per step:
//   1. kv_seq_new_with_prefix / kv_seq_append (and truncate, fork, free) for the step's work;
//      kv_seq_append returns SPECD_SOFT_FULL without changing anything when blocks run out.
//   2. Perform every copy from kv_take_copies, in order, before the forward pass writes K/V.
//   3. Forward pass over each sequence's uncomputed tokens, using the block tables.
//   4. kv_commit() after the forward pass succeeded: everything appended so far is computed.
// A sequence appended to since the last kv_commit() cannot be forked (SPECD_ERR_STATE): its
// copy-on-write source would not hold the K/V yet.
//
// Not thread-safe: one owner (the engine loop) calls it. No global state; instances are
// independent. Hashing links libxxhash.
#ifndef SPECD_ENGINE_KV_CACHE_H
#define SPECD_ENGINE_KV_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kv_cache kv_cache;

struct kv_params {
    int32_t block_size;  // token slots per block (default 16), 1..65536
    int32_t n_blocks;    // physical blocks in the pool (default 0: must be set), >= 1
    int32_t max_seqs;    // sequences alive at once (default 256), 1..1048576
    bool prefix_caching; // register full blocks and reuse them (default true)
    uint64_t hash_seed;  // seed of the first block's hash (default 0)
};

// A whole-block copy the backend must perform: dst := src, in every layer, for K and V.
struct kv_copy {
    int32_t src;
    int32_t dst;
};

struct kv_stats {
    int32_t n_blocks;            // total
    int32_t n_used;              // referenced by at least one sequence
    int32_t n_cached;            // referenced by none but kept for prefix reuse (evictable)
    int32_t n_free;              // n_used + n_cached + n_free == n_blocks
    int32_t n_seqs;              // live sequences
    int64_t prefix_query_tokens; // prompt tokens looked up by kv_seq_new_with_prefix
    int64_t prefix_hit_tokens;   // of those, tokens served from cached blocks
    int64_t evictions;           // cached blocks taken back for reuse
    int64_t cow_copies;          // copy-on-write copies queued
};

struct kv_params kv_default_params(void);

// Creates a manager with every block free. Returns NULL when params are out of range (see
// kv_params_check for the reason) or memory runs out.
kv_cache *kv_new(const struct kv_params *params);
void kv_free(kv_cache *kv); // accepts NULL

// Returns 0 when params are usable, else SPECD_ERR_INVALID with the reason in err.
int kv_params_check(const struct kv_params *params, char *err, size_t err_size);

// Number of blocks that fit in `bytes` (floor), capped at INT32_MAX / 2. 0 if bytes_per_block
// is 0.
int32_t kv_blocks_for_budget(uint64_t bytes, uint64_t bytes_per_block);

int32_t kv_block_size(const kv_cache *kv);

// ---- sequences ---------------------------------------------------------------------------------
// Sequence ids are 0..max_seqs-1; an id is reused after kv_seq_free.

// Creates an empty sequence. Returns 0 and sets *seq, or SPECD_SOFT_FULL when max_seqs are live.
int kv_seq_new(kv_cache *kv, int32_t *seq);

// Creates a sequence that already holds the longest cached prefix of prompt[0..n): whole blocks
// only, and never the block holding the last prompt token (at most (n-1)/block_size blocks), so
// at least one token is left to compute. *n_cached (a multiple of block_size) is the new
// length; the caller appends prompt[*n_cached..n) next. Allocates no free block (it may take
// cached blocks out of the evictable set). Returns 0, SPECD_SOFT_FULL when max_seqs are live,
// SPECD_ERR_INVALID, SPECD_ERR_NOMEM; nothing changes on failure.
int kv_seq_new_with_prefix(kv_cache *kv, const int32_t *prompt, int32_t n, int32_t *seq,
                           int32_t *n_cached);

// Read-only: what kv_seq_new_with_prefix(prompt, n) followed by appending the rest of the prompt
// would do now. *n_cached: tokens that would come from the cache. *n_blocks_needed: blocks that
// would be taken from kv_blocks_available() (new blocks plus cached hits that are evictable).
// Either pointer may be NULL. Returns 0 or SPECD_ERR_INVALID.
int kv_prefix_match(const kv_cache *kv, const int32_t *prompt, int32_t n, int32_t *n_cached,
                    int32_t *n_blocks_needed);

// Appends n tokens (their ids feed the prefix hashes). Token position p of the sequence then
// lives at table[p / block_size], slot p % block_size; the backend writes positions
// [old len, old len + n). May queue one copy-on-write copy. Returns 0; SPECD_SOFT_FULL when
// fewer than kv_append_blocks_needed() blocks are available (nothing changes: preempt and
// retry); SPECD_ERR_INVALID (dead sequence, n < 0, length overflow); SPECD_ERR_NOMEM (nothing
// changes).
int kv_seq_append(kv_cache *kv, int32_t seq, const int32_t *tokens, int32_t n);

// Blocks an append of n tokens would take from kv_blocks_available() (including one for a
// copy-on-write). -1 for a dead sequence or n < 0.
int32_t kv_append_blocks_needed(const kv_cache *kv, int32_t seq, int32_t n);
bool kv_can_append(const kv_cache *kv, int32_t seq, int32_t n);

// Free plus evictable cached blocks.
int32_t kv_blocks_available(const kv_cache *kv);

// Shortens the sequence to `len` tokens (rolls back rejected draft tokens) and releases blocks
// it no longer needs. Returns 0, or SPECD_ERR_INVALID (dead sequence, len < 0 or > length;
// nothing changes).
int kv_seq_truncate(kv_cache *kv, int32_t seq, int32_t len);

// New sequence sharing every block of `parent` (same length). Returns 0 and sets *child;
// SPECD_SOFT_FULL when max_seqs are live; SPECD_ERR_STATE when parent was appended to since the
// last kv_commit(); SPECD_ERR_INVALID; SPECD_ERR_NOMEM. Nothing changes on failure.
int kv_seq_fork(kv_cache *kv, int32_t parent, int32_t *child);

// Releases the sequence's blocks (cached ones become evictable) and its id. Returns 0 or
// SPECD_ERR_INVALID for a dead sequence.
int kv_seq_free(kv_cache *kv, int32_t seq);

// Length in tokens, or -1 for a dead sequence.
int32_t kv_seq_len(const kv_cache *kv, int32_t seq);

// The sequence's block table ([*n_blocks] physical ids), valid until the next call that changes
// the manager. NULL (and *n_blocks = 0) for a dead sequence.
const int32_t *kv_seq_block_table(const kv_cache *kv, int32_t seq, int32_t *n_blocks);

// Where position pos of the sequence lives. Returns 0, or SPECD_ERR_INVALID when pos is not in
// [0, len).
int kv_seq_slot(const kv_cache *kv, int32_t seq, int32_t pos, int32_t *block, int32_t *slot);

// Copies the token ids at positions [start, start + n) into out. Returns 0 or SPECD_ERR_INVALID.
int kv_seq_tokens(const kv_cache *kv, int32_t seq, int32_t start, int32_t n, int32_t *out);

// ---- steps -------------------------------------------------------------------------------------

// Moves up to cap queued copies, oldest first, into pairs; returns how many. One call's batch
// never writes a block that another copy of the same batch reads or writes, so it may run in
// parallel; batches must run in the order returned. Call until it returns 0.
int32_t kv_take_copies(kv_cache *kv, struct kv_copy *pairs, int32_t cap);
int32_t kv_pending_copies(const kv_cache *kv);

// Declares that the K/V of every token appended so far has been computed: full blocks filled
// since the last commit enter the prefix index and their sequences may be forked.
void kv_commit(kv_cache *kv);

// ---- introspection -----------------------------------------------------------------------------

void kv_stats(const kv_cache *kv, struct kv_stats *stats);

// Sequences referencing the block (0 for free and cached blocks), or -1 for a bad id.
int32_t kv_block_refcount(const kv_cache *kv, int32_t block);

// Full consistency check (for tests, O(n_blocks + total table entries)): refcounts equal table
// references, every block exactly one of free/cached/used, free list and LRU list well formed,
// prefix index equals the set of registered blocks and their hashes match their tokens, tables
// sized to lengths. Returns 0, SPECD_ERR_STATE with the first violation in err, or
// SPECD_ERR_NOMEM.
int kv_check_invariants(const kv_cache *kv, char *err, size_t err_size);

#endif
