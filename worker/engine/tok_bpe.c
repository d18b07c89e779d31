// Byte-level BPE encoding (llama.cpp's llm_tokenizer_bpe_session with the llama-bpe
// pre-tokenizer): split the text into words, write each word's bytes as GPT-2 byte characters,
// take a word that is a token as it is, else merge the adjacent pair of lowest merge rank until
// no listed merge applies.
#include <stdlib.h>
#include <string.h>

#include "shared/status.h"
#include "worker/engine/tok_internal.h"

// GPT-2's printable bytes stand for themselves; the other 68 (0x00-0x20, 0x7F-0xA0, 0xAD) take
// the code points 256, 257, ... in byte order.
static bool byte_is_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
}

uint32_t tok_bpe_byte_to_cp(uint8_t b) {
    if (byte_is_printable(b))
        return b;
    if (b <= 0x20)
        return 256u + b;
    if (b <= 0xA0)
        return 256u + 33 + (b - 0x7Fu);
    return 256u + 67; // 0xAD
}

int tok_bpe_cp_to_byte(uint32_t cp) {
    if (cp < 256)
        return byte_is_printable(cp) ? (int)cp : -1;
    if (cp < 256 + 33)
        return (int)(cp - 256);
    if (cp < 256 + 67)
        return (int)(cp - 256 - 33 + 0x7F);
    return cp == 256 + 67 ? 0xAD : -1;
}

// Parses "left right" merges (split at the first space after the first byte, as llama.cpp
// does) into a table keyed by the concatenation and the split point. A merge without a space
// keeps its rank but can never apply; a repeated pair keeps its first (best) rank.
int tok_build_merges(tok *t, const struct tok_vocab *v, char *err, size_t err_size) {
    uint64_t total = 0;
    for (int32_t i = 0; i < v->n_merges; i++) {
        if (!v->merges[i] && v->merge_lens && v->merge_lens[i])
            return specd_fail(err, err_size, SPECD_ERR_FORMAT, "merge %d has no text", i);
        total += v->merges[i] ? (v->merge_lens ? v->merge_lens[i] : strlen(v->merges[i])) : 0;
    }
    if (total > UINT32_MAX)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "merges too large");
    t->n_merges = v->n_merges;
    t->merges = calloc((size_t)v->n_merges, sizeof *t->merges);
    t->merge_text = malloc(total + 1);
    size_t cap = 16;
    while (cap < 2 * (size_t)v->n_merges)
        cap *= 2;
    t->merge_index.slots = malloc(cap * sizeof *t->merge_index.slots);
    if (!t->merges || !t->merge_text || !t->merge_index.slots)
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory for the merges");
    t->merge_index.mask = (uint32_t)(cap - 1);
    memset(t->merge_index.slots, 0xFF, cap * sizeof *t->merge_index.slots); // TOK_NULL

    uint32_t off = 0;
    for (int32_t i = 0; i < v->n_merges; i++) {
        const char *m = v->merges[i] ? v->merges[i] : "";
        size_t len = v->merge_lens ? v->merge_lens[i] : strlen(m);
        const char *space = len > 1 ? memchr(m + 1, ' ', len - 1) : NULL;
        if (!space)
            continue;
        size_t left = (size_t)(space - m);
        char *dst = t->merge_text + off;
        memcpy(dst, m, left);
        memcpy(dst + left, space + 1, len - left - 1);
        size_t n = len - 1;
        t->merges[i] =
            (struct tok_merge){.off = off, .len = (uint32_t)n, .left_len = (uint32_t)left};
        off += (uint32_t)n;
        if (tok_lookup_merge(t, dst, left, n) >= 0)
            continue;
        uint32_t h = (uint32_t)tok_hash_bytes(dst, n, left) & t->merge_index.mask;
        while (t->merge_index.slots[h] != TOK_NULL)
            h = (h + 1) & t->merge_index.mask;
        t->merge_index.slots[h] = i;
    }
    return 0;
}

struct bpe_state {
    const tok *t;
    struct tok_buf word;    // the current word in byte characters
    struct tok_symbol *sym; // [sym_cap]
    size_t sym_cap;
    struct tok_heap heap;
};

static int try_pair(struct bpe_state *s, int32_t left, int32_t right) {
    if (left < 0 || right < 0)
        return 0;
    const struct tok_symbol *l = &s->sym[left], *r = &s->sym[right];
    int32_t rank = tok_lookup_merge(s->t, s->word.p + l->off, l->n, l->n + r->n);
    if (rank < 0)
        return 0;
    struct tok_bigram b = {.left = left, .right = right, .rank = rank, .size = l->n + r->n};
    return tok_heap_push(&s->heap, b);
}

static int merge_word(struct bpe_state *s, int32_t n_sym) {
    s->heap.n = 0;
    for (int32_t i = 1; i < n_sym; i++)
        if (try_pair(s, i - 1, i))
            return SPECD_ERR_NOMEM;
    while (s->heap.n > 0) {
        struct tok_bigram b = tok_heap_pop(&s->heap);
        struct tok_symbol *l = &s->sym[b.left], *r = &s->sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
            continue; // stale: a side has merged since
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            s->sym[r->next].prev = b.left;
        if (try_pair(s, l->prev, b.left) || try_pair(s, b.left, l->next))
            return SPECD_ERR_NOMEM;
    }
    return 0;
}

// Emits the symbols of the merged word; a symbol that is no token becomes the tokens of its
// single bytes, where those exist (llama.cpp drops the rest).
static int emit_word(struct bpe_state *s, int32_t n_sym, struct tok_ids *out) {
    for (int32_t i = 0; i < n_sym; i++) {
        const struct tok_symbol *sym = &s->sym[i];
        if (sym->n == 0)
            continue;
        const char *p = s->word.p + sym->off;
        int32_t id = tok_lookup_text(s->t, p, sym->n);
        if (id != TOK_NULL) {
            if (tok_ids_push(out, id))
                return SPECD_ERR_NOMEM;
            continue;
        }
        for (uint32_t j = 0; j < sym->n; j++) {
            id = tok_lookup_text(s->t, p + j, 1);
            if (id != TOK_NULL && tok_ids_push(out, id))
                return SPECD_ERR_NOMEM;
        }
    }
    return 0;
}

static int encode_word(struct bpe_state *s, const uint32_t *cps, size_t n_cps,
                       struct tok_ids *out) {
    s->word.n = 0;
    for (size_t i = 0; i < n_cps; i++) {
        char utf8[4];
        size_t k = tok_utf8_encode(cps[i], utf8);
        for (size_t j = 0; j < k; j++) {
            char ch[4];
            size_t m = tok_utf8_encode(tok_bpe_byte_to_cp((uint8_t)utf8[j]), ch);
            if (tok_buf_append(&s->word, ch, m))
                return SPECD_ERR_NOMEM;
        }
    }
    const char *w = s->word.p;
    size_t len = s->word.n;
    if (s->t->ignore_merges) {
        int32_t id = tok_lookup_text(s->t, w, len);
        if (id != TOK_NULL)
            return tok_ids_push(out, id);
    }
    if (len > s->sym_cap) {
        struct tok_symbol *sym = realloc(s->sym, len * sizeof *sym);
        if (!sym)
            return SPECD_ERR_NOMEM;
        s->sym = sym;
        s->sym_cap = len;
    }
    int32_t n_sym = 0;
    for (size_t off = 0; off < len;) {
        size_t n = tok_utf8_len((unsigned char)w[off]);
        if (n > len - off)
            n = len - off;
        s->sym[n_sym] = (struct tok_symbol){
            .prev = n_sym - 1, .next = n_sym + 1, .off = (uint32_t)off, .n = (uint32_t)n};
        n_sym++;
        off += n;
    }
    s->sym[n_sym - 1].next = -1;
    int rc = merge_word(s, n_sym);
    return rc ? rc : emit_word(s, n_sym, out);
}

int tok_bpe_encode(const tok *t, const char *text, size_t len, struct tok_ids *out) {
    uint32_t *cps;
    int64_t n_cps = tok_utf8_decode_all(text, len, &cps);
    if (n_cps < 0)
        return (int)n_cps;
    struct tok_ids lens = {0};
    struct bpe_state s = {.t = t, .heap = {.by_rank = true}};
    int rc = tok_split_llama3(cps, (size_t)n_cps, &lens);
    size_t start = 0;
    for (size_t i = 0; i < lens.n && !rc; i++) {
        rc = encode_word(&s, cps + start, (size_t)lens.v[i], out);
        start += (size_t)lens.v[i];
    }
    free(cps);
    free(lens.v);
    free(s.word.p);
    free(s.sym);
    free(s.heap.v);
    return rc;
}
