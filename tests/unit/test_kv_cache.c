// Tests of the paged KV cache block manager (worker/engine/kv_cache.h): each operation by hand,
// then a randomized property test against a plain model (one token list per sequence) with a
// simulated K/V storage that performs the reported copies and refuses writes to shared blocks.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shared/status.h"
#include "tests/test.h"
#include "worker/engine/kv_cache.h"
#include "worker/engine/kv_cache_internal.h"

static struct kv_params params_of(int32_t block_size, int32_t n_blocks, int32_t max_seqs) {
    struct kv_params p = kv_default_params();
    p.block_size = block_size;
    p.n_blocks = n_blocks;
    p.max_seqs = max_seqs;
    return p;
}

static int invariants_ok(const kv_cache *kv) {
    char err[256] = "";
    int rc = kv_check_invariants(kv, err, sizeof err);
    if (rc != SPECD_OK)
        fprintf(stderr, "  invariant: %s\n", err);
    return rc == SPECD_OK;
}

static int32_t table_entry(const kv_cache *kv, int32_t seq, int32_t i) {
    int32_t n = 0;
    const int32_t *t = kv_seq_block_table(kv, seq, &n);
    return t && i >= 0 && i < n ? t[i] : -1;
}

// Tokens of the sequence as the manager stores them equal want[0..n).
static int seq_tokens_are(const kv_cache *kv, int32_t seq, const int32_t *want, int32_t n) {
    int32_t got[256];
    if (kv_seq_len(kv, seq) != n || n > 256 || kv_seq_tokens(kv, seq, 0, n, got) != SPECD_OK)
        return 0;
    return memcmp(got, want, (size_t)n * sizeof *got) == 0;
}

static struct kv_stats stats_of(const kv_cache *kv) {
    struct kv_stats st;
    kv_stats(kv, &st);
    return st;
}

// ---- parameters --------------------------------------------------------------------------------

TEST(test_params) {
    struct kv_params p = kv_default_params();
    CHECK_EQ_INT(p.block_size, 16);
    CHECK(p.prefix_caching);
    char err[128] = "";
    CHECK_EQ_INT(kv_params_check(&p, err, sizeof err), SPECD_ERR_INVALID); // n_blocks unset
    CHECK(strstr(err, "n_blocks") != NULL);
    CHECK(kv_new(&p) == NULL);
    p.n_blocks = 10;
    p.block_size = 0;
    CHECK(kv_new(&p) == NULL);
    p.block_size = 16;
    p.max_seqs = 0;
    CHECK(kv_new(&p) == NULL);
    CHECK(kv_new(NULL) == NULL);
    p.max_seqs = 4;
    kv_cache *kv = kv_new(&p);
    REQUIRE(kv != NULL);
    CHECK_EQ_INT(kv_block_size(kv), 16);
    struct kv_stats st = stats_of(kv);
    CHECK_EQ_INT(st.n_blocks, 10);
    CHECK_EQ_INT(st.n_free, 10);
    CHECK_EQ_INT(st.n_used + st.n_cached + st.n_seqs, 0);
    CHECK(invariants_ok(kv));
    kv_free(kv);
    kv_free(NULL);
}

TEST(test_blocks_for_budget) {
    CHECK_EQ_INT(kv_blocks_for_budget(1000, 100), 10);
    CHECK_EQ_INT(kv_blocks_for_budget(999, 100), 9);
    CHECK_EQ_INT(kv_blocks_for_budget(99, 100), 0);
    CHECK_EQ_INT(kv_blocks_for_budget(1000, 0), 0);
    // 8 GiB over 2 layers * 2 (K,V) * 16 tokens * 8 heads * 64 dims * 2 bytes = 65536 B/block.
    CHECK_EQ_INT(kv_blocks_for_budget(8ull << 30, 2ull * 2 * 16 * 8 * 64 * 2), 131072);
    CHECK_EQ_INT(kv_blocks_for_budget(UINT64_MAX, 1), INT32_MAX / 2);
}

// ---- append / truncate / free ------------------------------------------------------------------

TEST(test_append_and_slots) {
    struct kv_params p = params_of(4, 8, 4);
    kv_cache *kv = kv_new(&p);
    REQUIRE(kv);
    int32_t s = -1, toks[10] = {10, 11, 12, 13, 14, 15, 16, 17, 18, 19};
    REQUIRE(kv_seq_new(kv, &s) == SPECD_OK);
    CHECK_EQ_INT(kv_seq_len(kv, s), 0);
    CHECK_EQ_INT(kv_append_blocks_needed(kv, s, 10), 3);
    CHECK_EQ_INT(kv_seq_append(kv, s, toks, 3), SPECD_OK);
    CHECK_EQ_INT(kv_append_blocks_needed(kv, s, 1), 0); // fits the partial block
    CHECK_EQ_INT(kv_append_blocks_needed(kv, s, 2), 1);
    CHECK_EQ_INT(kv_seq_append(kv, s, toks + 3, 7), SPECD_OK);
    CHECK_EQ_INT(kv_seq_len(kv, s), 10);
    int32_t n = 0;
    const int32_t *t = kv_seq_block_table(kv, s, &n);
    REQUIRE(t && n == 3);
    CHECK(t[0] != t[1] && t[1] != t[2] && t[0] != t[2]);
    for (int32_t pos = 0; pos < 10; pos++) {
        int32_t b = -1, slot = -1;
        CHECK_EQ_INT(kv_seq_slot(kv, s, pos, &b, &slot), SPECD_OK);
        CHECK_EQ_INT(b, t[pos / 4]);
        CHECK_EQ_INT(slot, pos % 4);
    }
    CHECK_EQ_INT(kv_seq_slot(kv, s, 10, NULL, NULL), SPECD_ERR_INVALID);
    CHECK_EQ_INT(kv_seq_slot(kv, s, -1, NULL, NULL), SPECD_ERR_INVALID);
    CHECK(seq_tokens_are(kv, s, toks, 10));
    struct kv_stats st = stats_of(kv);
    CHECK_EQ_INT(st.n_used, 3);
    CHECK_EQ_INT(st.n_free, 5);
    CHECK_EQ_INT(st.n_seqs, 1);
    CHECK_EQ_INT(kv_seq_append(kv, s, toks, 0), SPECD_OK);
    CHECK_EQ_INT(kv_seq_append(kv, s, NULL, 1), SPECD_ERR_INVALID);
    CHECK_EQ_INT(kv_seq_append(kv, s, toks, -1), SPECD_ERR_INVALID);
    CHECK(invariants_ok(kv));
    CHECK_EQ_INT(kv_seq_free(kv, s), SPECD_OK);
    CHECK_EQ_INT(kv_seq_free(kv, s), SPECD_ERR_INVALID);
    CHECK_EQ_INT(kv_seq_len(kv, s), -1);
    CHECK(kv_seq_block_table(kv, s, &n) == NULL && n == 0);
    CHECK_EQ_INT(kv_seq_append(kv, s, toks, 1), SPECD_ERR_INVALID);
    CHECK_EQ_INT(kv_seq_append(kv, 99, toks, 1), SPECD_ERR_INVALID);
    CHECK_EQ_INT(stats_of(kv).n_free + stats_of(kv).n_cached, 8);
    CHECK(invariants_ok(kv));
    kv_free(kv);
}

TEST(test_soft_full_changes_nothing) {
    struct kv_params p = params_of(4, 3, 4);
    kv_cache *kv = kv_new(&p);
    REQUIRE(kv);
    int32_t a, b, toks[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    REQUIRE(kv_seq_new(kv, &a) == SPECD_OK && kv_seq_new(kv, &b) == SPECD_OK);
    CHECK_EQ_INT(kv_seq_append(kv, a, toks, 10), SPECD_OK); // 3 blocks: pool exhausted
    CHECK_EQ_INT(kv_blocks_available(kv), 0);
    CHECK(kv_can_append(kv, a, 2));
    CHECK(!kv_can_append(kv, a, 3));
    CHECK(!kv_can_append(kv, b, 1));
    int32_t n0;
    const int32_t *t = kv_seq_block_table(kv, a, &n0);
    int32_t before[3];
    memcpy(before, t, sizeof before);
    CHECK_EQ_INT(kv_seq_append(kv, a, toks, 3), SPECD_SOFT_FULL);
    CHECK_EQ_INT(kv_seq_append(kv, b, toks, 1), SPECD_SOFT_FULL);
    int32_t n1;
    t = kv_seq_block_table(kv, a, &n1);
    CHECK_EQ_INT(n1, n0);
    CHECK(memcmp(t, before, sizeof before) == 0);
    CHECK_EQ_INT(kv_seq_len(kv, a), 10);
    CHECK_EQ_INT(kv_seq_len(kv, b), 0);
    CHECK(seq_tokens_are(kv, a, toks, 10));
    CHECK_EQ_INT(kv_seq_append(kv, a, toks + 10, 2), SPECD_OK);
    CHECK(seq_tokens_are(kv, a, toks, 12));
    // Preempt: free a, then b fits.
    CHECK_EQ_INT(kv_seq_free(kv, a), SPECD_OK);
    CHECK_EQ_INT(kv_seq_append(kv, b, toks, 12), SPECD_OK);
    CHECK(invariants_ok(kv));
    kv_free(kv);
}

TEST(test_truncate_releases_blocks) {
    struct kv_params p = params_of(4, 8, 4);
    kv_cache *kv = kv_new(&p);
    REQUIRE(kv);
    int32_t s, toks[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    REQUIRE(kv_seq_new(kv, &s) == SPECD_OK);
    REQUIRE(kv_seq_append(kv, s, toks, 10) == SPECD_OK);
    CHECK_EQ_INT(kv_seq_truncate(kv, s, 11), SPECD_ERR_INVALID);
    CHECK_EQ_INT(kv_seq_truncate(kv, s, -1), SPECD_ERR_INVALID);
    CHECK_EQ_INT(kv_seq_truncate(kv, s, 10), SPECD_OK);
    CHECK_EQ_INT(stats_of(kv).n_used, 3);
    CHECK_EQ_INT(kv_seq_truncate(kv, s, 8), SPECD_OK); // exactly two blocks
    CHECK_EQ_INT(stats_of(kv).n_used, 2);
    CHECK_EQ_INT(kv_seq_truncate(kv, s, 5), SPECD_OK);
    CHECK_EQ_INT(stats_of(kv).n_used, 2);
    int32_t n;
    kv_seq_block_table(kv, s, &n);
    CHECK_EQ_INT(n, 2);
    int32_t other[3] = {50, 51, 52};
    CHECK_EQ_INT(kv_seq_append(kv, s, other, 3), SPECD_OK); // rewrites slots 5..7 in place
    int32_t want[8] = {1, 2, 3, 4, 5, 50, 51, 52};
    CHECK(seq_tokens_are(kv, s, want, 8));
    CHECK_EQ_INT(kv_pending_copies(kv), 0);
    CHECK_EQ_INT(kv_seq_truncate(kv, s, 0), SPECD_OK);
    CHECK_EQ_INT(stats_of(kv).n_used, 0);
    CHECK_EQ_INT(kv_seq_len(kv, s), 0);
    CHECK(invariants_ok(kv));
    kv_free(kv);
}

// ---- fork and copy-on-write --------------------------------------------------------------------

TEST(test_fork_cow_partial_block) {
    struct kv_params p = params_of(4, 8, 4);
    kv_cache *kv = kv_new(&p);
    REQUIRE(kv);
    int32_t par, child, toks[6] = {1, 2, 3, 4, 5, 6};
    REQUIRE(kv_seq_new(kv, &par) == SPECD_OK);
    REQUIRE(kv_seq_append(kv, par, toks, 6) == SPECD_OK);
    CHECK_EQ_INT(kv_seq_fork(kv, par, &child), SPECD_ERR_STATE); // K/V not computed yet
    kv_commit(kv);
    REQUIRE(kv_seq_fork(kv, par, &child) == SPECD_OK);
    CHECK(child != par);
    int32_t b0 = table_entry(kv, par, 0), b1 = table_entry(kv, par, 1);
    CHECK_EQ_INT(table_entry(kv, child, 0), b0);
    CHECK_EQ_INT(table_entry(kv, child, 1), b1);
    CHECK_EQ_INT(kv_block_refcount(kv, b0), 2);
    CHECK_EQ_INT(kv_block_refcount(kv, b1), 2);
    CHECK_EQ_INT(kv_seq_len(kv, child), 6);
    CHECK(invariants_ok(kv));

    // The child's first append into the shared partial block copies it.
    CHECK_EQ_INT(kv_append_blocks_needed(kv, child, 1), 1);
    int32_t c7 = 70;
    REQUIRE(kv_seq_append(kv, child, &c7, 1) == SPECD_OK);
    int32_t nb1 = table_entry(kv, child, 1);
    CHECK(nb1 != b1 && nb1 >= 0);
    CHECK_EQ_INT(table_entry(kv, child, 0), b0);
    CHECK_EQ_INT(kv_block_refcount(kv, b1), 1);
    CHECK_EQ_INT(kv_block_refcount(kv, nb1), 1);
    CHECK_EQ_INT(kv_block_refcount(kv, b0), 2);
    struct kv_copy cp[4];
    CHECK_EQ_INT(kv_pending_copies(kv), 1);
    REQUIRE(kv_take_copies(kv, cp, 4) == 1);
    CHECK_EQ_INT(cp[0].src, b1);
    CHECK_EQ_INT(cp[0].dst, nb1);
    CHECK_EQ_INT(kv_take_copies(kv, cp, 4), 0);

    // The parent now owns b1 alone and writes in place.
    int32_t p7 = 80;
    CHECK_EQ_INT(kv_append_blocks_needed(kv, par, 1), 0);
    REQUIRE(kv_seq_append(kv, par, &p7, 1) == SPECD_OK);
    CHECK_EQ_INT(table_entry(kv, par, 1), b1);
    CHECK_EQ_INT(kv_pending_copies(kv), 0);
    int32_t want_p[7] = {1, 2, 3, 4, 5, 6, 80}, want_c[7] = {1, 2, 3, 4, 5, 6, 70};
    CHECK(seq_tokens_are(kv, par, want_p, 7));
    CHECK(seq_tokens_are(kv, child, want_c, 7));
    CHECK_EQ_INT(stats_of(kv).cow_copies, 1);
    CHECK(invariants_ok(kv));

    CHECK_EQ_INT(kv_seq_free(kv, par), SPECD_OK);
    CHECK_EQ_INT(kv_block_refcount(kv, b0), 1);
    CHECK_EQ_INT(kv_seq_free(kv, child), SPECD_OK);
    CHECK_EQ_INT(stats_of(kv).n_used, 0);
    CHECK(invariants_ok(kv));
    kv_free(kv);
}

TEST(test_fork_full_last_block_needs_no_copy) {
    struct kv_params p = params_of(4, 8, 4);
    kv_cache *kv = kv_new(&p);
    REQUIRE(kv);
    int32_t par, child, toks[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    REQUIRE(kv_seq_new(kv, &par) == SPECD_OK);
    REQUIRE(kv_seq_append(kv, par, toks, 8) == SPECD_OK);
    kv_commit(kv);
    REQUIRE(kv_seq_fork(kv, par, &child) == SPECD_OK);
    CHECK_EQ_INT(kv_append_blocks_needed(kv, child, 1), 1);
    REQUIRE(kv_seq_append(kv, child, toks + 8, 1) == SPECD_OK);
    CHECK_EQ_INT(kv_pending_copies(kv), 0);
    CHECK_EQ_INT(table_entry(kv, child, 1), table_entry(kv, par, 1));
    CHECK_EQ_INT(kv_block_refcount(kv, table_entry(kv, par, 1)), 2);
    CHECK(seq_tokens_are(kv, child, toks, 9));
    CHECK(invariants_ok(kv));
    kv_free(kv);
}

// Rolling a fork back into a block it shares, then appending, must copy rather than write.
TEST(test_truncate_into_shared_block_then_append_copies) {
    struct kv_params p = params_of(4, 8, 4);
    kv_cache *kv = kv_new(&p);
    REQUIRE(kv);
    int32_t par, child, toks[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    REQUIRE(kv_seq_new(kv, &par) == SPECD_OK);
    REQUIRE(kv_seq_append(kv, par, toks, 8) == SPECD_OK);
    kv_commit(kv);
    REQUIRE(kv_seq_fork(kv, par, &child) == SPECD_OK);
    int32_t b1 = table_entry(kv, par, 1);
    REQUIRE(kv_seq_truncate(kv, child, 6) == SPECD_OK);
    CHECK_EQ_INT(kv_block_refcount(kv, b1), 2);
    int32_t x[3] = {60, 61, 62};
    CHECK_EQ_INT(kv_append_blocks_needed(kv, child, 3), 2); // copy + one new block
    REQUIRE(kv_seq_append(kv, child, x, 3) == SPECD_OK);
    CHECK(table_entry(kv, child, 1) != b1);
    struct kv_copy cp[2];
    REQUIRE(kv_take_copies(kv, cp, 2) == 1);
    CHECK_EQ_INT(cp[0].src, b1);
    CHECK_EQ_INT(cp[0].dst, table_entry(kv, child, 1));
    int32_t want_c[9] = {1, 2, 3, 4, 5, 6, 60, 61, 62};
    CHECK(seq_tokens_are(kv, child, want_c, 9));
    CHECK(seq_tokens_are(kv, par, toks, 8)); // untouched
    CHECK(invariants_ok(kv));
    kv_free(kv);
}

// A chain of copies (B -> C, then C -> D) comes out in two batches, in order; copies that only
// share a source come out together.
TEST(test_take_copies_batches) {
    struct kv_params p = params_of(4, 16, 8);
    kv_cache *kv = kv_new(&p);
    REQUIRE(kv);
    int32_t par, c1, c2, c3, toks[2] = {1, 2}, x = 9;
    REQUIRE(kv_seq_new(kv, &par) == SPECD_OK);
    REQUIRE(kv_seq_append(kv, par, toks, 2) == SPECD_OK);
    kv_commit(kv);
    int32_t b = table_entry(kv, par, 0);
    REQUIRE(kv_seq_fork(kv, par, &c1) == SPECD_OK);
    REQUIRE(kv_seq_fork(kv, par, &c3) == SPECD_OK);
    REQUIRE(kv_seq_append(kv, c1, &x, 1) == SPECD_OK); // b -> c
    int32_t c = table_entry(kv, c1, 0);
    kv_commit(kv);
    REQUIRE(kv_seq_fork(kv, c1, &c2) == SPECD_OK);
    REQUIRE(kv_seq_append(kv, c2, &x, 1) == SPECD_OK); // c -> d
    int32_t d = table_entry(kv, c2, 0);
    REQUIRE(kv_seq_append(kv, c3, &x, 1) == SPECD_OK); // b -> e
    int32_t e = table_entry(kv, c3, 0);
    CHECK_EQ_INT(kv_pending_copies(kv), 3);
    struct kv_copy cp[8];
    REQUIRE(kv_take_copies(kv, cp, 8) == 1);
    CHECK(cp[0].src == b && cp[0].dst == c);
    REQUIRE(kv_take_copies(kv, cp, 8) == 2);
    CHECK(cp[0].src == c && cp[0].dst == d);
    CHECK(cp[1].src == b && cp[1].dst == e);
    CHECK_EQ_INT(kv_take_copies(kv, cp, 8), 0);
    CHECK(invariants_ok(kv));
    kv_free(kv);
}

// ---- prefix cache ------------------------------------------------------------------------------

TEST(test_prefix_hit) {
    struct kv_params p = params_of(4, 16, 8);
    kv_cache *kv = kv_new(&p);
    REQUIRE(kv);
    int32_t a, s, cached = -1, need = -1;
    int32_t prompt[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    REQUIRE(kv_seq_new(kv, &a) == SPECD_OK);
    REQUIRE(kv_seq_append(kv, a, prompt, 10) == SPECD_OK);
    // Not computed yet: nothing to reuse.
    CHECK_EQ_INT(kv_prefix_match(kv, prompt, 10, &cached, &need), SPECD_OK);
    CHECK_EQ_INT(cached, 0);
    CHECK_EQ_INT(need, 3);
    kv_commit(kv);
    CHECK_EQ_INT(kv_prefix_match(kv, prompt, 10, &cached, &need), SPECD_OK);
    CHECK_EQ_INT(cached, 8);
    CHECK_EQ_INT(need, 1); // both hits are in use by a, not evictable
    // The block with the last prompt token is never reused: 8 tokens -> one block.
    CHECK_EQ_INT(kv_prefix_match(kv, prompt, 8, &cached, NULL), SPECD_OK);
    CHECK_EQ_INT(cached, 4);
    CHECK_EQ_INT(kv_prefix_match(kv, prompt, 9, &cached, NULL), SPECD_OK);
    CHECK_EQ_INT(cached, 8);
    CHECK_EQ_INT(kv_prefix_match(kv, prompt, 1, &cached, NULL), SPECD_OK);
    CHECK_EQ_INT(cached, 0);
    CHECK_EQ_INT(kv_prefix_match(kv, prompt, 0, &cached, &need), SPECD_OK);
    CHECK(cached == 0 && need == 0);
    int32_t other[9] = {1, 2, 3, 4, 5, 6, 7, 99, 9}; // second block differs
    CHECK_EQ_INT(kv_prefix_match(kv, other, 9, &cached, NULL), SPECD_OK);
    CHECK_EQ_INT(cached, 4);
    other[0] = 0; // first block differs: the second block's chain hash differs too
    other[7] = 8;
    CHECK_EQ_INT(kv_prefix_match(kv, other, 9, &cached, NULL), SPECD_OK);
    CHECK_EQ_INT(cached, 0);
    // Same tokens at another position are not the same prefix.
    int32_t shifted[9] = {5, 6, 7, 8, 1, 2, 3, 4, 0};
    CHECK_EQ_INT(kv_prefix_match(kv, shifted, 9, &cached, NULL), SPECD_OK);
    CHECK_EQ_INT(cached, 0);

    REQUIRE(kv_seq_new_with_prefix(kv, prompt, 10, &s, &cached) == SPECD_OK);
    CHECK_EQ_INT(cached, 8);
    CHECK_EQ_INT(kv_seq_len(kv, s), 8);
    CHECK_EQ_INT(table_entry(kv, s, 0), table_entry(kv, a, 0));
    CHECK_EQ_INT(table_entry(kv, s, 1), table_entry(kv, a, 1));
    CHECK_EQ_INT(kv_block_refcount(kv, table_entry(kv, a, 0)), 2);
    CHECK_EQ_INT(kv_append_blocks_needed(kv, s, 2), 1);
    REQUIRE(kv_seq_append(kv, s, prompt + 8, 2) == SPECD_OK);
    CHECK(table_entry(kv, s, 2) != table_entry(kv, a, 2));
    CHECK_EQ_INT(kv_pending_copies(kv), 0);
    CHECK(seq_tokens_are(kv, s, prompt, 10));
    struct kv_stats st = stats_of(kv);
    CHECK_EQ_INT(st.prefix_query_tokens, 10);
    CHECK_EQ_INT(st.prefix_hit_tokens, 8);
    CHECK(invariants_ok(kv));
    kv_free(kv);
}

// Blocks nobody references stay cached; a hit takes them back; without free blocks the least
// recently released cached block is evicted first, the tail of a sequence before its head.
TEST(test_cached_blocks_and_lru_eviction) {
    struct kv_params p = params_of(2, 4, 8);
    kv_cache *kv = kv_new(&p);
    REQUIRE(kv);
    int32_t a, b, c, s, cached;
    int32_t pa[5] = {1, 2, 3, 4, 0}, pb[5] = {5, 6, 7, 8, 0}, x[2] = {9, 9};
    REQUIRE(kv_seq_new(kv, &a) == SPECD_OK && kv_seq_append(kv, a, pa, 4) == SPECD_OK);
    kv_commit(kv);
    REQUIRE(kv_seq_free(kv, a) == SPECD_OK);
    REQUIRE(kv_seq_new(kv, &b) == SPECD_OK && kv_seq_append(kv, b, pb, 4) == SPECD_OK);
    kv_commit(kv);
    REQUIRE(kv_seq_free(kv, b) == SPECD_OK);
    struct kv_stats st = stats_of(kv);
    CHECK_EQ_INT(st.n_cached, 4);
    CHECK_EQ_INT(st.n_free, 0);
    CHECK_EQ_INT(kv_blocks_available(kv), 4);
    CHECK(invariants_ok(kv));

    // One allocation evicts a's second block [3,4] only.
    REQUIRE(kv_seq_new(kv, &c) == SPECD_OK);
    REQUIRE(kv_seq_append(kv, c, x, 2) == SPECD_OK);
    CHECK_EQ_INT(stats_of(kv).evictions, 1);
    kv_prefix_match(kv, pa, 5, &cached, NULL);
    CHECK_EQ_INT(cached, 2);
    kv_prefix_match(kv, pb, 5, &cached, NULL);
    CHECK_EQ_INT(cached, 4);

    // A hit on b's blocks takes them out of the evictable set...
    int32_t need = -1;
    kv_prefix_match(kv, pb, 5, &cached, &need);
    CHECK_EQ_INT(need, 3); // one new block + two evictable hits
    REQUIRE(kv_seq_new_with_prefix(kv, pb, 5, &s, &cached) == SPECD_OK);
    CHECK_EQ_INT(cached, 4);
    st = stats_of(kv);
    CHECK_EQ_INT(st.n_cached, 1);
    CHECK_EQ_INT(st.n_used, 3);
    CHECK(invariants_ok(kv));
    // ...so the next allocation evicts a's first block, the last one cached.
    REQUIRE(kv_seq_append(kv, s, pb + 4, 1) == SPECD_OK);
    CHECK_EQ_INT(stats_of(kv).evictions, 2);
    kv_prefix_match(kv, pa, 5, &cached, NULL);
    CHECK_EQ_INT(cached, 0);
    CHECK(seq_tokens_are(kv, s, pb, 5));
    CHECK_EQ_INT(kv_blocks_available(kv), 0);
    CHECK_EQ_INT(kv_seq_append(kv, c, x, 1), SPECD_SOFT_FULL);
    CHECK(invariants_ok(kv));
    kv_free(kv);
}

// A sequence that rolls back into a block it owns alone and that is in the index writes in
// place; the block leaves the index first so that no later hit sees the new tokens.
TEST(test_truncate_into_own_cached_block) {
    struct kv_params p = params_of(4, 8, 4);
    kv_cache *kv = kv_new(&p);
    REQUIRE(kv);
    int32_t a, s, cached, toks[9] = {1, 2, 3, 4, 5, 6, 7, 8, 0};
    REQUIRE(kv_seq_new(kv, &a) == SPECD_OK && kv_seq_append(kv, a, toks, 8) == SPECD_OK);
    kv_commit(kv);
    kv_prefix_match(kv, toks, 9, &cached, NULL);
    CHECK_EQ_INT(cached, 8);
    int32_t b1 = table_entry(kv, a, 1);
    REQUIRE(kv_seq_truncate(kv, a, 6) == SPECD_OK);
    kv_prefix_match(kv, toks, 9, &cached, NULL); // still whole, computed and indexed
    CHECK_EQ_INT(cached, 8);
    int32_t y = 77;
    REQUIRE(kv_seq_append(kv, a, &y, 1) == SPECD_OK);
    CHECK_EQ_INT(table_entry(kv, a, 1), b1);
    CHECK_EQ_INT(kv_pending_copies(kv), 0);
    kv_prefix_match(kv, toks, 9, &cached, NULL);
    CHECK_EQ_INT(cached, 4);
    CHECK(invariants_ok(kv));

    // Same again, but another sequence reuses the block before the append: now it must copy.
    REQUIRE(kv_seq_truncate(kv, a, 4) == SPECD_OK);
    int32_t z[4] = {5, 6, 7, 8};
    REQUIRE(kv_seq_append(kv, a, z, 4) == SPECD_OK);
    b1 = table_entry(kv, a, 1);
    kv_commit(kv);
    REQUIRE(kv_seq_truncate(kv, a, 6) == SPECD_OK);
    REQUIRE(kv_seq_new_with_prefix(kv, toks, 9, &s, &cached) == SPECD_OK);
    CHECK_EQ_INT(cached, 8);
    CHECK_EQ_INT(kv_block_refcount(kv, b1), 2);
    REQUIRE(kv_seq_append(kv, a, &y, 1) == SPECD_OK);
    CHECK(table_entry(kv, a, 1) != b1);
    CHECK_EQ_INT(kv_pending_copies(kv), 1);
    CHECK(seq_tokens_are(kv, s, toks, 8));
    int32_t want_a[7] = {1, 2, 3, 4, 5, 6, 77};
    CHECK(seq_tokens_are(kv, a, want_a, 7));
    CHECK(invariants_ok(kv));
    kv_free(kv);
}

// Two sequences computing the same prompt in one step: only one copy enters the index; the
// other is freed, not cached, when released.
TEST(test_duplicate_blocks_register_once) {
    struct kv_params p = params_of(4, 8, 4);
    kv_cache *kv = kv_new(&p);
    REQUIRE(kv);
    int32_t a, b, toks[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    REQUIRE(kv_seq_new(kv, &a) == SPECD_OK && kv_seq_append(kv, a, toks, 8) == SPECD_OK);
    REQUIRE(kv_seq_new(kv, &b) == SPECD_OK && kv_seq_append(kv, b, toks, 8) == SPECD_OK);
    kv_commit(kv);
    CHECK(invariants_ok(kv));
    kv_seq_free(kv, a);
    kv_seq_free(kv, b);
    struct kv_stats st = stats_of(kv);
    CHECK_EQ_INT(st.n_cached, 2);
    CHECK_EQ_INT(st.n_free, 6);
    CHECK(invariants_ok(kv));
    kv_free(kv);
}

TEST(test_prefix_caching_off) {
    struct kv_params p = params_of(4, 4, 4);
    p.prefix_caching = false;
    kv_cache *kv = kv_new(&p);
    REQUIRE(kv);
    int32_t a, s, cached = -1, toks[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    REQUIRE(kv_seq_new(kv, &a) == SPECD_OK && kv_seq_append(kv, a, toks, 9) == SPECD_OK);
    kv_commit(kv);
    REQUIRE(kv_seq_new_with_prefix(kv, toks, 9, &s, &cached) == SPECD_OK);
    CHECK_EQ_INT(cached, 0);
    kv_seq_free(kv, a);
    CHECK_EQ_INT(stats_of(kv).n_cached, 0);
    CHECK_EQ_INT(stats_of(kv).n_free, 4);
    CHECK(invariants_ok(kv));
    kv_free(kv);
}

// A block whose tokens do not match (what a 64-bit hash collision would look like) is a miss,
// and the checker notices tokens that changed under a hash.
TEST(test_collision_is_a_miss) {
    struct kv_params p = params_of(4, 8, 4);
    kv_cache *kv = kv_new(&p);
    REQUIRE(kv);
    int32_t a, cached, toks[9] = {1, 2, 3, 4, 5, 6, 7, 8, 0};
    REQUIRE(kv_seq_new(kv, &a) == SPECD_OK && kv_seq_append(kv, a, toks, 8) == SPECD_OK);
    kv_commit(kv);
    kv_prefix_match(kv, toks, 9, &cached, NULL);
    CHECK_EQ_INT(cached, 8);
    CHECK(invariants_ok(kv));
    // White box: a block reached under the right hash but recorded after another prefix.
    int32_t b1 = table_entry(kv, a, 1);
    uint64_t parent = kv->blocks[b1].parent_hash;
    kv->blocks[b1].parent_hash ^= 1;
    kv_prefix_match(kv, toks, 9, &cached, NULL);
    CHECK_EQ_INT(cached, 4);
    kv->blocks[b1].parent_hash = parent;
    // White box: the right hash and prefix but other tokens.
    kv->tokens[b1 * 4 + 2] = 42;
    kv_prefix_match(kv, toks, 9, &cached, NULL);
    CHECK_EQ_INT(cached, 4);
    char err[256] = "";
    CHECK_EQ_INT(kv_check_invariants(kv, err, sizeof err), SPECD_ERR_STATE);
    CHECK(strstr(err, "tokens changed") != NULL);
    kv_free(kv);
}

TEST(test_checker_catches_refcount_leak) {
    struct kv_params p = params_of(4, 8, 4);
    kv_cache *kv = kv_new(&p);
    REQUIRE(kv);
    int32_t a, toks[4] = {1, 2, 3, 4};
    REQUIRE(kv_seq_new(kv, &a) == SPECD_OK && kv_seq_append(kv, a, toks, 4) == SPECD_OK);
    CHECK(invariants_ok(kv));
    kv->blocks[table_entry(kv, a, 0)].refcount++; // white box: a leaked reference
    char err[256] = "";
    CHECK_EQ_INT(kv_check_invariants(kv, err, sizeof err), SPECD_ERR_STATE);
    CHECK(strstr(err, "refcount") != NULL);
    kv->blocks[table_entry(kv, a, 0)].refcount--;
    CHECK(invariants_ok(kv));
    kv_free(kv);
}

TEST(test_max_seqs) {
    struct kv_params p = params_of(4, 8, 2);
    kv_cache *kv = kv_new(&p);
    REQUIRE(kv);
    int32_t a, b, c, n, toks[1] = {1};
    REQUIRE(kv_seq_new(kv, &a) == SPECD_OK && kv_seq_new(kv, &b) == SPECD_OK);
    CHECK(a != b);
    CHECK_EQ_INT(kv_seq_new(kv, &c), SPECD_SOFT_FULL);
    CHECK_EQ_INT(kv_seq_new_with_prefix(kv, toks, 1, &c, &n), SPECD_SOFT_FULL);
    CHECK_EQ_INT(kv_seq_fork(kv, a, &c), SPECD_SOFT_FULL);
    CHECK_EQ_INT(kv_seq_fork(kv, 7, &c), SPECD_ERR_INVALID);
    kv_seq_free(kv, a);
    CHECK_EQ_INT(kv_seq_fork(kv, b, &c), SPECD_OK);
    CHECK_EQ_INT(stats_of(kv).n_seqs, 2);
    CHECK(invariants_ok(kv));
    kv_free(kv);
}

// ---- property test -----------------------------------------------------------------------------

static uint64_t rnd_next(uint64_t *x) { // splitmix64
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static int32_t rnd(uint64_t *x, int32_t n) { // uniform in [0, n)
    return (int32_t)(rnd_next(x) % (uint64_t)n);
}

enum { SIM_MAX_SEQS = 12, SIM_MAX_LEN = 160, SIM_DOCS = 5, SIM_DOC_LEN = 96 };

struct sim_seq {
    int live;
    int32_t len;
    int32_t tokens[SIM_MAX_LEN]; // the reference: the sequence's tokens, plainly
    int32_t n_computed;          // positions already written to the simulated storage
    int dirty;                   // appended to since the last step
};

struct sim {
    kv_cache *kv;
    int32_t bs, nb, max_seqs;
    int deferred;     // steps happen every few operations instead of after each
    int32_t vocab;    // token ids in [0, vocab)
    int32_t *storage; // [nb][bs] simulated K/V: the token id written to each slot, -1 if none
    int32_t *view;    // [nb][bs] scratch for sim_verify
    struct sim_seq seqs[SIM_MAX_SEQS];
    int32_t docs[SIM_DOCS][SIM_DOC_LEN]; // prompts share prefixes of these
    int64_t soft_fulls, steps;
    int trace;
    uint64_t rng;
    int failed;
};

#define SIM_REQUIRE(sim, cond, ...)                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            TEST_FAIL_AT(__FILE__, __LINE__, "%s", #cond);                                         \
            fprintf(stderr, "  ");                                                                 \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            (sim)->failed = 1;                                                                     \
            return;                                                                                \
        }                                                                                          \
    } while (0)

// References to block b from the sequences' tables, counted here rather than asked.
static int32_t sim_refs(const struct sim *sm, int32_t b) {
    int32_t n = 0;
    for (int32_t i = 0; i < sm->max_seqs; i++) {
        int32_t nt = 0;
        const int32_t *t = kv_seq_block_table(sm->kv, i, &nt);
        for (int32_t j = 0; j < nt; j++)
            n += t[j] == b;
    }
    return n;
}

// One engine step: run the queued copies batch by batch (each batch as if in parallel: all
// reads, then all writes), then the forward pass writes each sequence's uncomputed tokens, then
// commit. A write into a block another table references fails the test.
static void sim_step(struct sim *sm) {
    struct kv_copy cp[3];
    int32_t n, tmp[3][64];
    while ((n = kv_take_copies(sm->kv, cp, 3)) > 0) {
        for (int32_t i = 0; i < n; i++)
            for (int32_t j = 0; j < n; j++)
                SIM_REQUIRE(sm, i == j || (cp[i].dst != cp[j].dst && cp[i].dst != cp[j].src),
                            "copy batch conflict");
        for (int32_t i = 0; i < n; i++)
            memcpy(tmp[i], &sm->storage[cp[i].src * sm->bs], (size_t)sm->bs * sizeof(int32_t));
        for (int32_t i = 0; i < n; i++)
            memcpy(&sm->storage[cp[i].dst * sm->bs], tmp[i], (size_t)sm->bs * sizeof(int32_t));
    }
    for (int32_t i = 0; i < sm->max_seqs; i++) {
        struct sim_seq *q = &sm->seqs[i];
        if (!q->live)
            continue;
        for (int32_t pos = q->n_computed; pos < q->len; pos++) {
            int32_t b = -1, slot = -1;
            SIM_REQUIRE(sm, kv_seq_slot(sm->kv, i, pos, &b, &slot) == SPECD_OK, "seq %d pos %d", i,
                        pos);
            SIM_REQUIRE(sm, sim_refs(sm, b) == 1 && kv_block_refcount(sm->kv, b) == 1,
                        "write to shared block %d (seq %d pos %d)", b, i, pos);
            sm->storage[b * sm->bs + slot] = q->tokens[pos];
        }
        q->n_computed = q->len;
        q->dirty = 0;
    }
    kv_commit(sm->kv);
    sm->steps++;
}

// Every sequence reads back its reference tokens through its block table, from the simulated
// storage (computed positions) and from the manager's own token store (all positions).
static void sim_verify(struct sim *sm) {
    char err[256] = "";
    SIM_REQUIRE(sm, kv_check_invariants(sm->kv, err, sizeof err) == SPECD_OK, "%s", err);
    // Between steps some copies may still be queued: look at the storage as it will be once
    // they have run (white box: peeks at the queue without taking it).
    int32_t *view = sm->view;
    memcpy(view, sm->storage, (size_t)sm->nb * (size_t)sm->bs * sizeof *view);
    for (int32_t i = 0; i < sm->kv->n_copies; i++)
        memcpy(&view[sm->kv->copies[i].dst * sm->bs], &view[sm->kv->copies[i].src * sm->bs],
               (size_t)sm->bs * sizeof *view);
    int32_t live = 0, got[SIM_MAX_LEN];
    for (int32_t i = 0; i < sm->max_seqs; i++) {
        const struct sim_seq *q = &sm->seqs[i];
        SIM_REQUIRE(sm, kv_seq_len(sm->kv, i) == (q->live ? q->len : -1), "seq %d length", i);
        if (!q->live)
            continue;
        live++;
        int32_t nt = 0;
        const int32_t *t = kv_seq_block_table(sm->kv, i, &nt);
        SIM_REQUIRE(sm, nt == (q->len + sm->bs - 1) / sm->bs, "seq %d table size", i);
        for (int32_t pos = 0; pos < q->n_computed; pos++)
            SIM_REQUIRE(sm, view[t[pos / sm->bs] * sm->bs + pos % sm->bs] == q->tokens[pos],
                        "seq %d pos %d: storage holds %d, expected %d", i, pos,
                        view[t[pos / sm->bs] * sm->bs + pos % sm->bs], q->tokens[pos]);
        SIM_REQUIRE(sm, kv_seq_tokens(sm->kv, i, 0, q->len, got) == SPECD_OK, "seq %d", i);
        SIM_REQUIRE(sm, memcmp(got, q->tokens, (size_t)q->len * sizeof *got) == 0,
                    "seq %d token store differs", i);
    }
    struct kv_stats st;
    kv_stats(sm->kv, &st);
    SIM_REQUIRE(sm, st.n_seqs == live, "live sequences %d vs %d", st.n_seqs, live);
}

static int32_t sim_pick_live(struct sim *sm) {
    int32_t ids[SIM_MAX_SEQS], n = 0;
    for (int32_t i = 0; i < sm->max_seqs; i++)
        if (sm->seqs[i].live)
            ids[n++] = i;
    return n ? ids[rnd(&sm->rng, n)] : -1;
}

static int32_t sim_token(struct sim *sm) {
    return rnd(&sm->rng, sm->vocab);
}

// Appends n tokens (continuing a document or random) to a live sequence; checks SOFT_FULL
// against a block count made here and that a refused append changes nothing.
static void sim_append(struct sim *sm, int32_t id, int32_t n) {
    struct sim_seq *q = &sm->seqs[id];
    if (q->len + n > SIM_MAX_LEN)
        n = SIM_MAX_LEN - q->len;
    int32_t toks[SIM_MAX_LEN], d = rnd(&sm->rng, SIM_DOCS);
    for (int32_t i = 0; i < n; i++)
        toks[i] =
            q->len + i < SIM_DOC_LEN && rnd(&sm->rng, 4) ? sm->docs[d][q->len + i] : sim_token(sm);
    int32_t bs = sm->bs, nt = 0;
    const int32_t *t = kv_seq_block_table(sm->kv, id, &nt);
    int cow = n > 0 && q->len % bs != 0 && sim_refs(sm, t[nt - 1]) > 1;
    int32_t need = n == 0 ? 0 : (q->len + n + bs - 1) / bs - nt + cow;
    struct kv_stats st;
    kv_stats(sm->kv, &st);
    SIM_REQUIRE(sm, kv_append_blocks_needed(sm->kv, id, n) == need, "need %d", need);
    int32_t before[SIM_MAX_LEN];
    if (nt > 0)
        memcpy(before, t, (size_t)nt * sizeof *t);
    int32_t pending = kv_pending_copies(sm->kv);
    int rc = kv_seq_append(sm->kv, id, toks, n);
    if (need > st.n_free + st.n_cached) {
        SIM_REQUIRE(sm, rc == SPECD_SOFT_FULL, "rc %d, expected SOFT_FULL", rc);
        int32_t nt2 = 0;
        const int32_t *t2 = kv_seq_block_table(sm->kv, id, &nt2);
        struct kv_stats st2;
        kv_stats(sm->kv, &st2);
        SIM_REQUIRE(sm,
                    nt2 == nt && (nt == 0 || memcmp(t2, before, (size_t)nt * sizeof *t) == 0) &&
                        memcmp(&st, &st2, sizeof st) == 0 && kv_pending_copies(sm->kv) == pending,
                    "SOFT_FULL changed the cache");
        sm->soft_fulls++;
        return;
    }
    SIM_REQUIRE(sm, rc == SPECD_OK, "append rc %d", rc);
    SIM_REQUIRE(sm, kv_pending_copies(sm->kv) == pending + cow, "copies queued");
    memcpy(q->tokens + q->len, toks, (size_t)n * sizeof *toks);
    q->len += n;
    q->dirty |= n > 0;
}

// A new sequence whose prompt shares a prefix with a document or a live sequence.
static void sim_new_with_prompt(struct sim *sm) {
    int32_t prompt[SIM_MAX_LEN], n = 1 + rnd(&sm->rng, 6 * sm->bs + 4), src = sim_pick_live(sm);
    if (n > SIM_DOC_LEN)
        n = SIM_DOC_LEN;
    if (src >= 0 && rnd(&sm->rng, 3) == 0 && sm->seqs[src].len > 0) {
        n = 1 + rnd(&sm->rng, sm->seqs[src].len);
        memcpy(prompt, sm->seqs[src].tokens, (size_t)n * sizeof *prompt);
    } else {
        memcpy(prompt, sm->docs[rnd(&sm->rng, SIM_DOCS)], (size_t)n * sizeof *prompt);
    }
    for (int32_t i = rnd(&sm->rng, n + 1); i < n && rnd(&sm->rng, 3) == 0; i++)
        prompt[i] = sim_token(sm); // diverge somewhere
    int32_t want_cached = -1, need = -1, id = -1, cached = -1;
    SIM_REQUIRE(sm, kv_prefix_match(sm->kv, prompt, n, &want_cached, &need) == SPECD_OK, "match");
    int32_t available = kv_blocks_available(sm->kv);
    int rc = kv_seq_new_with_prefix(sm->kv, prompt, n, &id, &cached);
    if (rc == SPECD_SOFT_FULL) {
        for (int32_t i = 0; i < sm->max_seqs; i++)
            SIM_REQUIRE(sm, sm->seqs[i].live, "SOFT_FULL with seq %d free", i);
        return;
    }
    SIM_REQUIRE(sm, rc == SPECD_OK && id >= 0 && id < sm->max_seqs && !sm->seqs[id].live,
                "new_with_prefix rc %d id %d", rc, id);
    SIM_REQUIRE(sm, cached == want_cached && cached % sm->bs == 0 && cached <= n - 1,
                "cached %d (match said %d) of %d", cached, want_cached, n);
    struct sim_seq *q = &sm->seqs[id];
    memset(q, 0, sizeof *q);
    q->live = 1;
    q->len = q->n_computed = cached; // the hit blocks must already hold these tokens
    memcpy(q->tokens, prompt, (size_t)cached * sizeof *prompt);
    rc = kv_seq_append(sm->kv, id, prompt + cached, n - cached);
    if (need <= available)
        SIM_REQUIRE(sm, rc == SPECD_OK, "prompt append failed though %d <= %d", need, available);
    if (rc == SPECD_OK) {
        memcpy(q->tokens + cached, prompt + cached, (size_t)(n - cached) * sizeof *prompt);
        q->len = n;
        q->dirty = n > cached;
    } else {
        SIM_REQUIRE(sm, rc == SPECD_SOFT_FULL, "prompt append rc %d", rc);
        sm->soft_fulls++;
        if (rnd(&sm->rng, 2)) { // give up on it, or keep the cached part
            kv_seq_free(sm->kv, id);
            q->live = 0;
        }
    }
}

static void sim_op(struct sim *sm) {
    int32_t id = sim_pick_live(sm), r = rnd(&sm->rng, 100);
    if (sm->trace)
        fprintf(stderr, "op r=%d id=%d len=%d dirty=%d\n", r, id, id >= 0 ? sm->seqs[id].len : -1,
                id >= 0 ? sm->seqs[id].dirty : 0);
    if (id < 0 || r < 15) {
        sim_new_with_prompt(sm);
    } else if (r < 45) {
        int32_t n = rnd(&sm->rng, 4) ? 1 + rnd(&sm->rng, sm->bs + 2) : rnd(&sm->rng, 3 * sm->bs);
        sim_append(sm, id, n);
    } else if (r < 65) {
        struct sim_seq *q = &sm->seqs[id];
        int32_t len = rnd(&sm->rng, 4) ? q->len - rnd(&sm->rng, sm->bs + 3) : rnd(&sm->rng, 9);
        len = len < 0 ? 0 : len > q->len ? q->len : len;
        SIM_REQUIRE(sm, kv_seq_truncate(sm->kv, id, len) == SPECD_OK, "truncate");
        q->len = len;
        if (q->n_computed > len)
            q->n_computed = len;
    } else if (r < 80) {
        int32_t child = -1;
        int rc = kv_seq_fork(sm->kv, id, &child);
        if (sm->seqs[id].dirty) {
            SIM_REQUIRE(sm, rc == SPECD_ERR_STATE, "fork of an uncomputed seq: rc %d", rc);
        } else if (rc == SPECD_OK) {
            SIM_REQUIRE(sm, child >= 0 && child < sm->max_seqs && !sm->seqs[child].live, "child %d",
                        child);
            sm->seqs[child] = sm->seqs[id];
        } else {
            SIM_REQUIRE(sm, rc == SPECD_SOFT_FULL, "fork rc %d", rc);
        }
    } else if (r < 92) {
        SIM_REQUIRE(sm, kv_seq_free(sm->kv, id) == SPECD_OK, "free");
        sm->seqs[id].live = 0;
    } else {
        sim_step(sm);
    }
    if (!sm->failed && (!sm->deferred || rnd(&sm->rng, 4) == 0))
        sim_step(sm);
}

// Runs n_ops random operations from `seed`; returns how many ran.
static int32_t sim_run(uint64_t seed, int32_t n_ops, struct kv_stats *out) {
    static const int32_t sizes[] = {1, 2, 3, 4, 5, 8, 16};
    struct sim sm;
    int32_t op = 0;
    memset(&sm, 0, sizeof sm);
    sm.rng = seed * 0x100000001B3ull + 7;
    sm.bs = sizes[rnd(&sm.rng, 7)];
    sm.nb = 4 + rnd(&sm.rng, 40);
    sm.max_seqs = 2 + rnd(&sm.rng, SIM_MAX_SEQS - 1);
    sm.deferred = (int)(seed & 1);
    sm.trace = getenv("KV_TRACE") && (uint64_t)atoi(getenv("KV_TRACE")) == seed;
    sm.vocab = rnd(&sm.rng, 2) ? 3 : 1000; // tiny vocabularies make equal blocks common
    struct kv_params p = params_of(sm.bs, sm.nb, sm.max_seqs);
    p.prefix_caching = seed % 8 != 5;
    p.hash_seed = seed;
    sm.kv = kv_new(&p);
    sm.storage = malloc((size_t)sm.nb * (size_t)sm.bs * sizeof *sm.storage);
    sm.view = malloc((size_t)sm.nb * (size_t)sm.bs * sizeof *sm.view);
    if (!sm.kv || !sm.storage || !sm.view) {
        TEST_FAIL_AT(__FILE__, __LINE__, "setup");
        goto done;
    }
    for (int32_t i = 0; i < sm.nb * sm.bs; i++)
        sm.storage[i] = -1;
    for (int32_t d = 0; d < SIM_DOCS; d++)
        for (int32_t i = 0; i < SIM_DOC_LEN; i++)
            sm.docs[d][i] = d > 0 && i < 2 * sm.bs ? sm.docs[0][i] : sim_token(&sm);
    for (; op < n_ops && !sm.failed; op++) {
        sim_op(&sm);
        if (!sm.failed)
            sim_verify(&sm);
    }
    // Free everything: no block may stay referenced.
    for (int32_t i = 0; i < sm.max_seqs && !sm.failed; i++)
        if (sm.seqs[i].live) {
            CHECK_EQ_INT(kv_seq_free(sm.kv, i), SPECD_OK);
            sm.seqs[i].live = 0;
        }
    if (!sm.failed) {
        sim_step(&sm);
        sim_verify(&sm);
    }
    kv_stats(sm.kv, out);
    CHECK_EQ_INT(out->n_used, 0);
    CHECK_EQ_INT(out->n_free + out->n_cached, sm.nb);
    CHECK_EQ_INT(kv_pending_copies(sm.kv), 0);
    if (sm.failed)
        fprintf(stderr, "  seed %llu: block_size %d, n_blocks %d, max_seqs %d, deferred %d\n",
                (unsigned long long)seed, sm.bs, sm.nb, sm.max_seqs, sm.deferred);
done:
    kv_free(sm.kv);
    free(sm.storage);
    free(sm.view);
    return op;
}

TEST(test_property_against_plain_model) {
    int64_t hits = 0, evictions = 0, cows = 0;
    int64_t ops = 0;
    for (uint64_t seed = 0; seed < 200 && !test_state_g.current_failed; seed++) {
        struct kv_stats st;
        ops += sim_run(seed, 4000, &st);
        hits += st.prefix_hit_tokens;
        evictions += st.evictions;
        cows += st.cow_copies;
    }
    fprintf(stderr, "  %lld operations; prefix hit tokens %lld, evictions %lld, copies %lld\n",
            (long long)ops, (long long)hits, (long long)evictions, (long long)cows);
    // The run must have exercised what it claims to test.
    CHECK(hits > 50000);
    CHECK(evictions > 5000);
    CHECK(cows > 5000);
}

int main(int argc, char **argv) {
    TEST_MAIN_BEGIN(argc, argv);
    TEST_RUN(test_params);
    TEST_RUN(test_blocks_for_budget);
    TEST_RUN(test_append_and_slots);
    TEST_RUN(test_soft_full_changes_nothing);
    TEST_RUN(test_truncate_releases_blocks);
    TEST_RUN(test_fork_cow_partial_block);
    TEST_RUN(test_fork_full_last_block_needs_no_copy);
    TEST_RUN(test_truncate_into_shared_block_then_append_copies);
    TEST_RUN(test_take_copies_batches);
    TEST_RUN(test_prefix_hit);
    TEST_RUN(test_cached_blocks_and_lru_eviction);
    TEST_RUN(test_truncate_into_own_cached_block);
    TEST_RUN(test_duplicate_blocks_register_once);
    TEST_RUN(test_prefix_caching_off);
    TEST_RUN(test_collision_is_a_miss);
    TEST_RUN(test_checker_catches_refcount_leak);
    TEST_RUN(test_max_seqs);
    TEST_RUN(test_property_against_plain_model);
    return TEST_MAIN_END();
}
