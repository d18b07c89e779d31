// Internals shared by the tok_*.c files. Not part of the public API.
#ifndef SPECD_ENGINE_TOK_INTERNAL_H
#define SPECD_ENGINE_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker/engine/tok.h"

// Token attributes, as llama.cpp's llama_token_attr bits.
enum {
    TOK_ATTR_UNDEFINED = 0,
    TOK_ATTR_UNKNOWN = 1 << 0,
    TOK_ATTR_UNUSED = 1 << 1,
    TOK_ATTR_NORMAL = 1 << 2,
    TOK_ATTR_CONTROL = 1 << 3,
    TOK_ATTR_USER_DEFINED = 1 << 4,
    TOK_ATTR_BYTE = 1 << 5,
};

struct tok_entry {
    uint32_t text_off; // into tok.texts, NUL-terminated
    uint32_t text_len;
    uint32_t piece_off; // into tok.pieces: token_to_piece(special = true)
    uint32_t piece_len;
    float score;
    uint8_t type; // enum tok_token_type
    uint8_t attr; // TOK_ATTR_*
};

// Open-addressing hash table of int32 values (TOK_NULL = empty slot); the caller compares keys.
struct tok_table {
    int32_t *slots; // [mask + 1]
    uint32_t mask;
};

struct tok_merge {
    uint32_t off;      // into tok.merge_text: left and right concatenated
    uint32_t len;      // of the concatenation
    uint32_t left_len; // bytes of the left part
};

struct tok {
    enum tok_model model;
    enum tok_pre pre;
    int32_t n_tokens;
    struct tok_entry *tokens;    // [n_tokens]
    char *texts;                 // token texts, each NUL-terminated
    char *pieces;                // decoded pieces
    struct tok_table text_index; // token text -> id

    int32_t n_merges;
    struct tok_merge *merges; // [n_merges], rank = index
    char *merge_text;
    struct tok_table merge_index; // (left, right) -> rank

    int32_t byte_token[256]; // token for a raw byte (SPM <0xNN>, BPE byte character); TOK_NULL
    int32_t *special;        // [n_special] control/user-defined/unknown ids, longest text first
    int32_t n_special;
    uint8_t *eog; // [n_tokens] 1 for end-of-generation tokens

    int32_t bos, eos, unk, pad, eot, eom;
    bool add_bos, add_eos, add_space_prefix, clean_spaces, ignore_merges;
};

// A growable array of token ids.
struct tok_ids {
    int32_t *v;
    size_t n, cap;
};
int tok_ids_push(struct tok_ids *ids, int32_t id); // 0 or SPECD_ERR_NOMEM

// A growable byte buffer.
struct tok_buf {
    char *p;
    size_t n, cap;
};
int tok_buf_append(struct tok_buf *b, const void *data, size_t len); // 0 or SPECD_ERR_NOMEM

// ---- hashing and lookup (tok.c) ----
uint64_t tok_hash_bytes(const void *data, size_t len, uint64_t seed);
int32_t tok_lookup_text(const tok *t, const char *text, size_t len); // id or TOK_NULL
// Rank of merging left+right (contiguous in memory: the pair is text[0..len) split after
// left_len bytes), or -1.
int32_t tok_lookup_merge(const tok *t, const char *text, size_t left_len, size_t len);

// ---- UTF-8 (tok_utf8.c) ----
// Length of the sequence a lead byte announces, as llama.cpp's unicode_len_utf8 (1..4; stray
// continuation bytes count 1).
size_t tok_utf8_len(unsigned char lead);
// Decodes text to code points as llama.cpp's unicode_cpts_from_utf8: a malformed lead or
// missing continuation gives U+FFFD for one byte; overlong forms and surrogates are accepted.
// *out is malloc'ed; returns the count or SPECD_ERR_NOMEM.
int64_t tok_utf8_decode_all(const char *text, size_t len, uint32_t **out);
// Encodes a code point (> 0x10FFFF as U+FFFD) to buf[4]; returns 1..4.
size_t tok_utf8_encode(uint32_t cp, char *buf);
// Length of the well-formed UTF-8 character (Unicode Table 3-7) at s[0..n), or 0 when s holds
// only an incomplete prefix of one, or -k when the first k bytes are a maximal ill-formed
// subsequence (k >= 1).
int tok_utf8_check(const unsigned char *s, size_t n);

// ---- Unicode classes (tok_unicode.c) ----
enum { TOK_CP_OTHER = 0, TOK_CP_LETTER = 1, TOK_CP_NUMBER = 2 };
int tok_cp_class(uint32_t cp);     // Unicode 15.1 general category L / N / other
bool tok_cp_is_space(uint32_t cp); // the White_Space property

// ---- pre-tokenizer (tok_split.c) ----
// Splits code points with llama-bpe's regex
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+
// Appends each word's length in code points to *lens. Returns 0 or SPECD_ERR_NOMEM.
int tok_split_llama3(const uint32_t *cps, size_t n, struct tok_ids *lens);

// ---- models ----
int tok_spm_encode(const tok *t, const char *text, size_t len, struct tok_ids *out);
int tok_bpe_encode(const tok *t, const char *text, size_t len, struct tok_ids *out);
// GPT-2 byte-level characters: the code point standing for byte b, and the byte for a code
// point (or -1).
uint32_t tok_bpe_byte_to_cp(uint8_t b);
int tok_bpe_cp_to_byte(uint32_t cp);

// A binary heap of merge candidates shared by both models (tok_heap.c).
struct tok_bigram {
    int32_t left, right;
    float score;   // SPM: higher first
    int32_t rank;  // BPE: lower first
    uint32_t size; // bytes of left + right when queued
};
struct tok_heap {
    struct tok_bigram *v;
    size_t n, cap;
    bool by_rank; // BPE ordering when true
};
int tok_heap_push(struct tok_heap *h, struct tok_bigram b); // 0 or SPECD_ERR_NOMEM
struct tok_bigram tok_heap_pop(struct tok_heap *h);         // h->n > 0

// Symbols being merged: contiguous byte ranges of one text, linked in order.
struct tok_symbol {
    int32_t prev, next;
    uint32_t off, n;
};

#endif
