// A binary max-heap of merge candidates. SPM pops the highest score first, BPE the lowest rank;
// ties go to the leftmost pair, as llama.cpp's priority queues order them.
#include <stdlib.h>

#include "shared/status.h"
#include "worker/engine/tok_internal.h"

// True when a should be popped before b.
static bool before(const struct tok_heap *h, const struct tok_bigram *a,
                   const struct tok_bigram *b) {
    if (h->by_rank) {
        if (a->rank != b->rank)
            return a->rank < b->rank;
    } else if (a->score != b->score) {
        return a->score > b->score;
    }
    return a->left < b->left;
}

int tok_heap_push(struct tok_heap *h, struct tok_bigram b) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        struct tok_bigram *v = realloc(h->v, cap * sizeof *v);
        if (!v)
            return SPECD_ERR_NOMEM;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(h, &b, &h->v[parent]))
            break;
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = b;
    return 0;
}

struct tok_bigram tok_heap_pop(struct tok_heap *h) {
    struct tok_bigram top = h->v[0];
    struct tok_bigram last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->n)
            break;
        if (child + 1 < h->n && before(h, &h->v[child + 1], &h->v[child]))
            child++;
        if (!before(h, &h->v[child], &last))
            break;
        h->v[i] = h->v[child];
        i = child;
    }
    if (h->n > 0)
        h->v[i] = last;
    return top;
}
