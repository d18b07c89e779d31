// tok_encode: special-token partitioning, BOS/EOS, and the per-model encoders on the text in
// between (llama.cpp's llama_vocab::impl::tokenize and tokenizer_st_partition).
#include <stdlib.h>
#include <string.h>

#include "shared/status.h"
#include "worker/engine/tok_internal.h"

#define TOK_MAX_TEXT ((size_t)1 << 30)

// A piece of the input: raw text still to encode (token == TOK_NULL) or a matched special token.
struct fragment {
    int32_t token;
    size_t off, len;
};

struct fragments {
    struct fragment *v;
    size_t n, cap;
};

static int frag_push(struct fragments *f, int32_t token, size_t off, size_t len) {
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        struct fragment *v = realloc(f->v, cap * sizeof *v);
        if (!v)
            return SPECD_ERR_NOMEM;
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n++] = (struct fragment){token, off, len};
    return 0;
}

// Splits every raw fragment of *cur at each occurrence of special token id, into *next.
static int split_at(const tok *t, const char *text, int32_t id, const struct fragments *cur,
                    struct fragments *next) {
    size_t tlen;
    const char *ttext = tok_token_text(t, id, &tlen);
    next->n = 0;
    for (size_t i = 0; i < cur->n; i++) {
        struct fragment f = cur->v[i];
        if (f.token != TOK_NULL) {
            if (frag_push(next, f.token, 0, 0))
                return SPECD_ERR_NOMEM;
            continue;
        }
        size_t pos = f.off, end = f.off + f.len;
        for (;;) {
            const char *hit = memmem(text + pos, end - pos, ttext, tlen);
            size_t at = hit ? (size_t)(hit - text) : end;
            if (at > pos && frag_push(next, TOK_NULL, pos, at - pos))
                return SPECD_ERR_NOMEM;
            if (!hit)
                break;
            if (frag_push(next, id, 0, 0))
                return SPECD_ERR_NOMEM;
            pos = at + tlen;
        }
    }
    return 0;
}

// Special tokens are tried longest first; control and unknown ones only when parse_special.
static int partition(const tok *t, const char *text, size_t len, bool parse_special,
                     struct fragments *out) {
    struct fragments other = {0};
    int rc = len ? frag_push(out, TOK_NULL, 0, len) : 0;
    for (int32_t k = 0; k < t->n_special && !rc; k++) {
        int32_t id = t->special[k];
        if (!parse_special && (t->tokens[id].attr & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN)))
            continue;
        bool any_raw = false;
        for (size_t i = 0; i < out->n && !any_raw; i++)
            any_raw = out->v[i].token == TOK_NULL;
        if (!any_raw)
            break;
        rc = split_at(t, text, id, out, &other);
        struct fragments tmp = *out;
        *out = other;
        other = tmp;
    }
    free(other.v);
    return rc;
}

static int encode_spm_fragment(const tok *t, const char *text, size_t len, bool prefix_space,
                               struct tok_ids *out) {
    // Spaces become "▁"; a dummy space goes first when asked.
    struct tok_buf b = {0};
    int rc = 0;
    if (prefix_space)
        rc = tok_buf_append(&b, "\xe2\x96\x81", 3);
    for (size_t i = 0; i < len && !rc; i++)
        rc = text[i] == ' ' ? tok_buf_append(&b, "\xe2\x96\x81", 3)
                            : tok_buf_append(&b, text + i, 1);
    rc = rc ? rc : tok_spm_encode(t, b.p, b.n, out);
    free(b.p);
    return rc;
}

static int encode_fragments(const tok *t, const char *text, const struct fragments *frags,
                            bool add_special, struct tok_ids *out) {
    int rc = 0;
    if (add_special && t->add_bos)
        rc = tok_ids_push(out, t->bos);
    bool prev_special = true; // SPM: a dummy space before text at the start or after a token
    for (size_t i = 0; i < frags->n && !rc; i++) {
        const struct fragment *f = &frags->v[i];
        if (f->token != TOK_NULL) {
            rc = tok_ids_push(out, f->token);
            prev_special = true;
        } else if (t->model == TOK_MODEL_SPM) {
            rc = encode_spm_fragment(t, text + f->off, f->len, t->add_space_prefix && prev_special,
                                     out);
            prev_special = false;
        } else {
            rc = tok_bpe_encode(t, text + f->off, f->len, out);
        }
    }
    if (!rc && add_special && t->add_eos)
        rc = tok_ids_push(out, t->eos);
    return rc;
}

int tok_encode(const tok *t, const char *text, size_t len, bool add_special, bool parse_special,
               int32_t *out, int cap) {
    if (!t || (!text && len) || cap < 0 || (!out && cap > 0) || len > TOK_MAX_TEXT)
        return SPECD_ERR_INVALID;
    struct fragments frags = {0};
    struct tok_ids ids = {0};
    int rc = partition(t, text, len, parse_special, &frags);
    rc = rc ? rc : encode_fragments(t, text, &frags, add_special, &ids);
    free(frags.v);
    if (rc) {
        free(ids.v);
        return rc;
    }
    if (ids.n > (size_t)INT32_MAX) {
        free(ids.v);
        return SPECD_ERR_INVALID;
    }
    size_t w = ids.n < (size_t)cap ? ids.n : (size_t)cap;
    if (w)
        memcpy(out, ids.v, w * sizeof *out);
    free(ids.v);
    return (int)ids.n;
}
