// Tokenizer construction from plain vocabulary arrays, lookups and accessors.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "shared/status.h"
#include "worker/engine/tok_internal.h"

// ---- small containers ----

int tok_ids_push(struct tok_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = realloc(ids->v, cap * sizeof *v);
        if (!v)
            return SPECD_ERR_NOMEM;
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return 0;
}

int tok_buf_append(struct tok_buf *b, const void *data, size_t len) {
    if (b->cap - b->n < len + 1) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->n < len + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return SPECD_ERR_NOMEM;
        b->p = p;
        b->cap = cap;
    }
    if (len)
        memcpy(b->p + b->n, data, len);
    b->n += len;
    b->p[b->n] = '\0';
    return 0;
}

// ---- hash tables ----

uint64_t tok_hash_bytes(const void *data, size_t len, uint64_t seed) {
    return XXH3_64bits_withSeed(data, len, seed);
}

static int table_init(struct tok_table *tab, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    tab->slots = malloc(cap * sizeof *tab->slots);
    if (!tab->slots)
        return SPECD_ERR_NOMEM;
    for (size_t i = 0; i < cap; i++)
        tab->slots[i] = TOK_NULL;
    tab->mask = (uint32_t)(cap - 1);
    return 0;
}

static const char *token_text(const tok *t, int32_t id) {
    return t->texts + t->tokens[id].text_off;
}

int32_t tok_lookup_text(const tok *t, const char *text, size_t len) {
    uint32_t i = (uint32_t)tok_hash_bytes(text, len, 0) & t->text_index.mask;
    for (;; i = (i + 1) & t->text_index.mask) {
        int32_t id = t->text_index.slots[i];
        if (id == TOK_NULL)
            return TOK_NULL;
        if (t->tokens[id].text_len == len && memcmp(token_text(t, id), text, len) == 0)
            return id;
    }
}

int32_t tok_lookup_merge(const tok *t, const char *text, size_t left_len, size_t len) {
    if (!t->merges)
        return -1;
    uint32_t i = (uint32_t)tok_hash_bytes(text, len, left_len) & t->merge_index.mask;
    for (;; i = (i + 1) & t->merge_index.mask) {
        int32_t rank = t->merge_index.slots[i];
        if (rank == TOK_NULL)
            return -1;
        const struct tok_merge *m = &t->merges[rank];
        if (m->len == len && m->left_len == left_len &&
            memcmp(t->merge_text + m->off, text, len) == 0)
            return rank;
    }
}

// ---- construction ----

struct tok_vocab tok_default_vocab(void) {
    struct tok_vocab v;
    memset(&v, 0, sizeof v);
    v.model = TOK_MODEL_SPM;
    v.bos_id = v.eos_id = v.unk_id = TOK_ID_MODEL_DEFAULT;
    v.pad_id = v.eot_id = v.eom_id = TOK_ID_MODEL_DEFAULT;
    v.add_bos = v.add_eos = v.add_space_prefix = -1;
    return v;
}

static size_t vocab_text_len(const struct tok_vocab *v, int32_t i) {
    return v->text_lens ? v->text_lens[i] : strlen(v->texts[i]);
}

// Copies the token texts (an empty text becomes "[EMPTY_<id>]", as llama.cpp names it) and
// indexes them. Duplicate texts are rejected: llama.cpp cannot load such a vocabulary either.
static int load_texts(tok *t, const struct tok_vocab *v, char *err, size_t err_size) {
    uint64_t total = 0;
    for (int32_t i = 0; i < v->n_tokens; i++) {
        if (!v->texts[i] && (!v->text_lens || v->text_lens[i] > 0))
            return specd_fail(err, err_size, SPECD_ERR_FORMAT, "token %d has no text", i);
        size_t len = v->texts[i] ? vocab_text_len(v, i) : 0;
        total += (len ? len : 24) + 1;
    }
    if (total > UINT32_MAX)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "token texts too large");
    t->texts = malloc(total);
    if (!t->texts || table_init(&t->text_index, (size_t)v->n_tokens) != 0)
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory for the vocabulary");
    uint32_t off = 0;
    for (int32_t i = 0; i < v->n_tokens; i++) {
        size_t len = v->texts[i] ? vocab_text_len(v, i) : 0;
        char *dst = t->texts + off;
        if (len == 0)
            len = (size_t)snprintf(dst, 24, "[EMPTY_%d]", i);
        else
            memcpy(dst, v->texts[i], len);
        dst[len] = '\0';
        t->tokens[i].text_off = off;
        t->tokens[i].text_len = (uint32_t)len;
        off += (uint32_t)len + 1;

        uint32_t h = (uint32_t)tok_hash_bytes(dst, len, 0) & t->text_index.mask;
        for (;; h = (h + 1) & t->text_index.mask) {
            int32_t other = t->text_index.slots[h];
            if (other == TOK_NULL) {
                t->text_index.slots[h] = i;
                break;
            }
            if (t->tokens[other].text_len == len && memcmp(token_text(t, other), dst, len) == 0)
                return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                                  "tokens %d and %d have the same text \"%.40s\"", other, i, dst);
        }
    }
    return 0;
}

static int load_types(tok *t, const struct tok_vocab *v, char *err, size_t err_size) {
    static const uint8_t attr_of_type[] = {
        [TOK_TYPE_UNDEFINED] = TOK_ATTR_UNDEFINED,
        [TOK_TYPE_NORMAL] = TOK_ATTR_NORMAL,
        [TOK_TYPE_UNKNOWN] = TOK_ATTR_UNKNOWN,
        [TOK_TYPE_CONTROL] = TOK_ATTR_CONTROL,
        [TOK_TYPE_USER_DEFINED] = TOK_ATTR_USER_DEFINED,
        [TOK_TYPE_UNUSED] = TOK_ATTR_UNUSED,
        [TOK_TYPE_BYTE] = TOK_ATTR_BYTE,
    };
    for (int32_t i = 0; i < v->n_tokens; i++) {
        int32_t type = v->types ? v->types[i] : TOK_TYPE_NORMAL;
        if (type < TOK_TYPE_UNDEFINED || type > TOK_TYPE_BYTE)
            return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                              "token %d has type %d (expected 0..6)", i, type);
        t->tokens[i].type = (uint8_t)type;
        t->tokens[i].attr = attr_of_type[type];
        t->tokens[i].score = v->scores ? v->scores[i] : 0.0f;
    }
    return 0;
}

// Resolves one special id: TOK_ID_MODEL_DEFAULT takes def (dropped when out of range, as
// llama.cpp does), TOK_NULL means none, anything else must be a valid id.
static int resolve_id(const tok *t, int32_t given, int32_t def, const char *what, int32_t *out,
                      char *err, size_t err_size) {
    if (given == TOK_ID_MODEL_DEFAULT)
        given = def >= 0 && def < t->n_tokens ? def : TOK_NULL;
    if (given != TOK_NULL && (given < 0 || given >= t->n_tokens))
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "%s token id %d is out of range (vocabulary of %d tokens)", what, given,
                          t->n_tokens);
    *out = given;
    return 0;
}

static int load_settings(tok *t, const struct tok_vocab *v, char *err, size_t err_size) {
    bool spm = t->model == TOK_MODEL_SPM;
    int rc = 0;
    rc = rc ? rc : resolve_id(t, v->bos_id, spm ? 1 : 11, "BOS", &t->bos, err, err_size);
    rc = rc ? rc : resolve_id(t, v->eos_id, spm ? 2 : 11, "EOS", &t->eos, err, err_size);
    rc = rc ? rc : resolve_id(t, v->unk_id, spm ? 0 : TOK_NULL, "unknown", &t->unk, err, err_size);
    rc = rc ? rc : resolve_id(t, v->pad_id, TOK_NULL, "padding", &t->pad, err, err_size);
    rc = rc ? rc : resolve_id(t, v->eot_id, TOK_NULL, "EOT", &t->eot, err, err_size);
    rc = rc ? rc : resolve_id(t, v->eom_id, TOK_NULL, "EOM", &t->eom, err, err_size);
    if (rc)
        return rc;
    t->add_bos = v->add_bos < 0 ? true : v->add_bos != 0;
    t->add_eos = v->add_eos < 0 ? false : v->add_eos != 0;
    t->add_space_prefix = v->add_space_prefix < 0 ? spm : v->add_space_prefix != 0;
    t->clean_spaces = !spm;
    t->ignore_merges = !spm;
    if (t->add_bos && t->bos == TOK_NULL)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "add_bos_token is set but no BOS token");
    if (t->add_eos && t->eos == TOK_NULL)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "add_eos_token is set but no EOS token");
    return 0;
}

// Texts llama.cpp treats as end-of-generation (and forces to control type).
static const char *const eog_texts[] = {
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\xef\xbd\x9c\x65nd\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
    "[e~[",
};

static int load_eog(tok *t) {
    t->eog = calloc((size_t)t->n_tokens, 1);
    if (!t->eog)
        return SPECD_ERR_NOMEM;
    for (size_t k = 0; k < sizeof eog_texts / sizeof eog_texts[0]; k++) {
        int32_t id = tok_lookup_text(t, eog_texts[k], strlen(eog_texts[k]));
        if (id != TOK_NULL) {
            t->eog[id] = 1;
            t->tokens[id].attr |= TOK_ATTR_CONTROL;
        }
    }
    int32_t ids[] = {t->eos, t->eot, t->eom};
    for (size_t k = 0; k < 3; k++)
        if (ids[k] != TOK_NULL)
            t->eog[ids[k]] = 1;
    return 0;
}

static int cmp_special(const void *a, const void *b, void *ctx) {
    const tok *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = t->tokens[x].text_len, ly = t->tokens[y].text_len;
    if (lx != ly)
        return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

static int load_special(tok *t) {
    const uint8_t mask = TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED | TOK_ATTR_UNKNOWN;
    t->special = malloc((size_t)t->n_tokens * sizeof *t->special);
    if (!t->special)
        return SPECD_ERR_NOMEM;
    for (int32_t i = 0; i < t->n_tokens; i++)
        if (t->tokens[i].attr & mask)
            t->special[t->n_special++] = i;
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, cmp_special, t);
    return 0;
}

static void load_byte_tokens(tok *t) {
    for (int b = 0; b < 256; b++) {
        char buf[8];
        int32_t id;
        if (t->model == TOK_MODEL_SPM) {
            snprintf(buf, sizeof buf, "<0x%02X>", b);
            id = tok_lookup_text(t, buf, 6);
            if (id == TOK_NULL) {
                buf[0] = (char)b;
                id = tok_lookup_text(t, buf, 1);
            }
        } else {
            size_t n = tok_utf8_encode(tok_bpe_byte_to_cp((uint8_t)b), buf);
            id = tok_lookup_text(t, buf, n);
        }
        t->byte_token[b] = id;
    }
}

int tok_build_pieces(tok *t);                                                        // tok_piece.c
int tok_build_merges(tok *t, const struct tok_vocab *v, char *err, size_t err_size); // tok_bpe.c

int tok_new_from_vocab(const struct tok_vocab *v, tok **out, char *err, size_t err_size) {
    if (!out)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "tok_new_from_vocab: out is NULL");
    *out = NULL;
    if (!v)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "tok_new_from_vocab: vocab is NULL");
    if (v->model != TOK_MODEL_SPM && v->model != TOK_MODEL_BPE)
        return specd_fail(err, err_size, SPECD_ERR_UNSUPPORTED, "unknown tokenizer model %d",
                          (int)v->model);
    if (v->model == TOK_MODEL_BPE && v->pre != TOK_PRE_LLAMA3)
        return specd_fail(err, err_size, SPECD_ERR_UNSUPPORTED,
                          "BPE pre-tokenizer %d is not supported (only llama-bpe)", (int)v->pre);
    if (v->n_tokens <= 0 || !v->texts)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "vocabulary has no tokens");
    if (v->model == TOK_MODEL_BPE && (v->n_merges <= 0 || !v->merges))
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "BPE vocabulary has no merges");

    tok *t = calloc(1, sizeof *t);
    if (!t)
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory");
    t->model = v->model;
    t->pre = v->model == TOK_MODEL_BPE ? v->pre : TOK_PRE_NONE;
    t->n_tokens = v->n_tokens;
    t->tokens = calloc((size_t)v->n_tokens, sizeof *t->tokens);
    int rc = t->tokens ? 0 : specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory");
    rc = rc ? rc : load_types(t, v, err, err_size);
    rc = rc ? rc : load_texts(t, v, err, err_size);
    rc = rc ? rc : load_settings(t, v, err, err_size);
    if (!rc && t->model == TOK_MODEL_BPE)
        rc = tok_build_merges(t, v, err, err_size);
    if (!rc && (load_eog(t) || load_special(t) || tok_build_pieces(t)))
        rc = specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory");
    if (rc) {
        tok_free(t);
        return rc;
    }
    load_byte_tokens(t);
    *out = t;
    return 0;
}

void tok_free(tok *t) {
    if (!t)
        return;
    free(t->tokens);
    free(t->texts);
    free(t->pieces);
    free(t->text_index.slots);
    free(t->merges);
    free(t->merge_text);
    free(t->merge_index.slots);
    free(t->special);
    free(t->eog);
    free(t);
}

// ---- accessors ----

static bool valid_id(const tok *t, int32_t id) {
    return t && id >= 0 && id < t->n_tokens;
}

int32_t tok_n_vocab(const tok *t) {
    return t->n_tokens;
}
enum tok_model tok_model(const tok *t) {
    return t->model;
}
int32_t tok_bos(const tok *t) {
    return t->bos;
}
int32_t tok_eos(const tok *t) {
    return t->eos;
}
int32_t tok_unk(const tok *t) {
    return t->unk;
}
int32_t tok_pad(const tok *t) {
    return t->pad;
}
bool tok_add_bos(const tok *t) {
    return t->add_bos;
}
bool tok_add_eos(const tok *t) {
    return t->add_eos;
}

bool tok_is_eog(const tok *t, int32_t token) {
    return valid_id(t, token) && t->eog[token];
}

const char *tok_token_text(const tok *t, int32_t token, size_t *len) {
    if (!valid_id(t, token))
        return NULL;
    if (len)
        *len = t->tokens[token].text_len;
    return token_text(t, token);
}

enum tok_token_type tok_token_type(const tok *t, int32_t token) {
    return valid_id(t, token) ? (enum tok_token_type)t->tokens[token].type : TOK_TYPE_UNDEFINED;
}

int32_t tok_text_to_token(const tok *t, const char *text, size_t len) {
    if (!t || (!text && len))
        return TOK_NULL;
    return tok_lookup_text(t, text ? text : "", len);
}
