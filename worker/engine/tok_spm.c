// SentencePiece-style encoding (llama.cpp's llm_tokenizer_spm_session): start from UTF-8
// characters and repeatedly merge the adjacent pair whose concatenation is the highest-scoring
// token; pieces that are no token at the end fall back to byte tokens.
#include <stdlib.h>

#include "shared/status.h"
#include "worker/engine/tok_internal.h"

struct spm_state {
    const tok *t;
    const char *text;
    struct tok_symbol *sym;
    struct tok_heap heap;
};

// Queues the pair (left, right) when their concatenation is a token.
static int try_pair(struct spm_state *s, int32_t left, int32_t right) {
    if (left < 0 || right < 0)
        return 0;
    uint32_t size = s->sym[left].n + s->sym[right].n;
    int32_t id = tok_lookup_text(s->t, s->text + s->sym[left].off, size);
    if (id == TOK_NULL)
        return 0;
    struct tok_bigram b = {
        .left = left, .right = right, .score = s->t->tokens[id].score, .size = size};
    return tok_heap_push(&s->heap, b);
}

static int merge_all(struct spm_state *s, int32_t n_sym) {
    for (int32_t i = 1; i < n_sym; i++)
        if (try_pair(s, i - 1, i))
            return SPECD_ERR_NOMEM;
    while (s->heap.n > 0) {
        struct tok_bigram b = tok_heap_pop(&s->heap);
        struct tok_symbol *l = &s->sym[b.left], *r = &s->sym[b.right];
        // Stale when either side has merged since the pair was queued.
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
            continue;
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

static int emit(struct spm_state *s, const struct tok_symbol *sym, struct tok_ids *out) {
    const tok *t = s->t;
    int32_t id = tok_lookup_text(t, s->text + sym->off, sym->n);
    if (id != TOK_NULL)
        return tok_ids_push(out, id);
    for (uint32_t j = 0; j < sym->n; j++) {
        int32_t b = t->byte_token[(unsigned char)s->text[sym->off + j]];
        // llama.cpp fails when a vocabulary lacks the byte token; use <unk> instead.
        if (b == TOK_NULL)
            b = t->unk;
        if (b != TOK_NULL && tok_ids_push(out, b))
            return SPECD_ERR_NOMEM;
    }
    return 0;
}

int tok_spm_encode(const tok *t, const char *text, size_t len, struct tok_ids *out) {
    if (len == 0)
        return 0;
    struct spm_state s = {.t = t, .text = text};
    s.sym = malloc(len * sizeof *s.sym);
    if (!s.sym)
        return SPECD_ERR_NOMEM;
    int32_t n_sym = 0;
    for (size_t off = 0; off < len;) {
        size_t n = tok_utf8_len((unsigned char)text[off]);
        if (n > len - off)
            n = len - off;
        s.sym[n_sym] = (struct tok_symbol){
            .prev = n_sym - 1, .next = n_sym + 1, .off = (uint32_t)off, .n = (uint32_t)n};
        n_sym++;
        off += n;
    }
    s.sym[n_sym - 1].next = -1;
    int rc = merge_all(&s, n_sym);
    for (int32_t i = 0; i != -1 && !rc; i = s.sym[i].next)
        rc = emit(&s, &s.sym[i], out);
    free(s.sym);
    free(s.heap.v);
    return rc;
}
