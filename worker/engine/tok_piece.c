// Token -> text: the piece of each token (computed once at load), llama_token_to_piece and
// llama_detokenize.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/status.h"
#include "worker/engine/tok_internal.h"

static const char spm_space[] = "\xe2\x96\x81"; // U+2581, SentencePiece's space

static int hex_digit(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

// Byte of a byte token: the two hex digits after "<0x" (as far as they are digits).
static char byte_of(const char *text, size_t len) {
    int v = 0;
    for (size_t i = 3; i < 5 && i < len; i++) {
        int d = hex_digit(text[i]);
        if (d < 0)
            break;
        v = v * 16 + d;
    }
    return (char)v;
}

// SPM normal piece: "▁" becomes a space.
static int spm_unescape(const char *text, size_t len, struct tok_buf *b) {
    size_t i = 0;
    while (i < len) {
        if (i + 3 <= len && memcmp(text + i, spm_space, 3) == 0) {
            if (tok_buf_append(b, " ", 1))
                return SPECD_ERR_NOMEM;
            i += 3;
            continue;
        }
        if (tok_buf_append(b, text + i, 1))
            return SPECD_ERR_NOMEM;
        i++;
    }
    return 0;
}

// BPE normal piece: each byte-level character becomes its byte; a character that stands for no
// byte is written as llama.cpp writes it: "[UNK_BYTE_0x<utf8 hex><token text>]".
static int bpe_unescape(const char *text, size_t len, struct tok_buf *b) {
    uint32_t *cps;
    int64_t n = tok_utf8_decode_all(text, len, &cps);
    if (n < 0)
        return (int)n;
    int rc = 0;
    for (int64_t i = 0; i < n && !rc; i++) {
        int byte = tok_bpe_cp_to_byte(cps[i]);
        if (byte >= 0) {
            char c = (char)byte;
            rc = tok_buf_append(b, &c, 1);
            continue;
        }
        char utf8[4], hex[16];
        size_t k = tok_utf8_encode(cps[i], utf8);
        rc = tok_buf_append(b, "[UNK_BYTE_0x", 12);
        for (size_t j = 0; j < k && !rc; j++) {
            snprintf(hex, sizeof hex, "%02x", (unsigned char)utf8[j]);
            rc = tok_buf_append(b, hex, 2);
        }
        rc = rc ? rc : tok_buf_append(b, text, len);
        rc = rc ? rc : tok_buf_append(b, "]", 1);
    }
    free(cps);
    return rc;
}

static int piece_for(const tok *t, int32_t id, struct tok_buf *b) {
    const struct tok_entry *e = &t->tokens[id];
    const char *text = t->texts + e->text_off;
    if (e->attr & (TOK_ATTR_UNKNOWN | TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED))
        return tok_buf_append(b, text, e->text_len);
    if (e->attr & TOK_ATTR_NORMAL)
        return t->model == TOK_MODEL_SPM ? spm_unescape(text, e->text_len, b)
                                         : bpe_unescape(text, e->text_len, b);
    if (e->attr & TOK_ATTR_BYTE) {
        char c = byte_of(text, e->text_len);
        return tok_buf_append(b, &c, 1);
    }
    return 0; // unused and undefined tokens have no text
}

int tok_build_pieces(tok *t) {
    struct tok_buf b = {0};
    for (int32_t i = 0; i < t->n_tokens; i++) {
        size_t start = b.n;
        if (piece_for(t, i, &b) != 0 || b.n > UINT32_MAX) {
            free(b.p);
            return SPECD_ERR_NOMEM;
        }
        t->tokens[i].piece_off = (uint32_t)start;
        t->tokens[i].piece_len = (uint32_t)(b.n - start);
    }
    if (!b.p && tok_buf_append(&b, "", 0))
        return SPECD_ERR_NOMEM;
    t->pieces = b.p;
    return 0;
}

// The piece, empty for control and unknown tokens unless special.
static const char *piece_of(const tok *t, int32_t id, bool special, size_t *len) {
    const struct tok_entry *e = &t->tokens[id];
    if (!special && (e->attr & (TOK_ATTR_UNKNOWN | TOK_ATTR_CONTROL))) {
        *len = 0;
        return "";
    }
    *len = e->piece_len;
    return t->pieces + e->piece_off;
}

int tok_token_to_piece(const tok *t, int32_t token, bool special, char *out, size_t cap) {
    if (!t || token < 0 || token >= t->n_tokens || (!out && cap))
        return SPECD_ERR_INVALID;
    size_t len;
    const char *p = piece_of(t, token, special, &len);
    size_t w = len < cap ? len : cap;
    if (w)
        memcpy(out, p, w);
    return (int)len;
}

// llama.cpp's clean_up_tokenization_spaces, three passes: " ?" " !" " ." " ," lose the space;
// " ' " becomes "'"; " 's" " 'm" " 're" " 've" lose the space. Works in place.
static size_t clean_spaces(char *s, size_t n) {
    if (n == 0)
        return 0;
    size_t k = 1;
    for (size_t i = 1; i < n; i++) {
        char x = s[i];
        if (s[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ','))
            k--;
        s[k++] = x;
    }
    n = k;
    k = 1;
    size_t blanked = 0; // index of a space removed after a quote: no longer counts as a space
    for (size_t i = 1; i < n; i++) {
        char x = s[i];
        bool prev_space = s[i - 1] == ' ' && !(blanked && blanked == i - 1);
        if (x == '\'' && i + 1 < n && prev_space && s[i + 1] == ' ') {
            k--;
            blanked = ++i;
        }
        s[k++] = x;
    }
    n = k;
    k = 1;
    for (size_t i = 1; i < n; i++) {
        char x = s[i];
        if (s[i - 1] == ' ' && x == '\'' && i + 1 < n) {
            char x1 = s[i + 1];
            if (x1 == 's' || x1 == 'm')
                k--;
            else if (x1 != 't' && x1 != 'd' && i + 2 < n) {
                char x2 = s[i + 2];
                if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e'))
                    k--;
            }
        }
        s[k++] = x;
    }
    return k;
}

int64_t tok_decode(const tok *t, const int32_t *tokens, int n_tokens, bool remove_special,
                   bool unparse_special, char *out, size_t cap) {
    if (!t || n_tokens < 0 || (!tokens && n_tokens) || (!out && cap))
        return SPECD_ERR_INVALID;
    for (int i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= t->n_tokens)
            return SPECD_ERR_INVALID;
    bool remove_space = t->add_space_prefix;
    if (remove_special && t->add_bos && n_tokens > 0 && tokens[0] == t->bos) {
        remove_space = false;
        tokens++;
        n_tokens--;
    }
    if (remove_special && t->add_eos && n_tokens > 0 && tokens[n_tokens - 1] == t->eos)
        n_tokens--;

    struct tok_buf b = {0};
    for (int i = 0; i < n_tokens; i++) {
        size_t len;
        const char *p = piece_of(t, tokens[i], unparse_special, &len);
        if (remove_space && len > 0 && p[0] == ' ') {
            p++;
            len--;
        }
        remove_space = false;
        if (tok_buf_append(&b, p, len)) {
            free(b.p);
            return SPECD_ERR_NOMEM;
        }
    }
    size_t n = b.n;
    if (t->clean_spaces)
        n = clean_spaces(b.p, n);
    if (cap) {
        size_t w = n < cap ? n : cap;
        if (w)
            memcpy(out, b.p, w);
        if (n < cap)
            out[n] = '\0';
    }
    free(b.p);
    return (int64_t)n;
}
