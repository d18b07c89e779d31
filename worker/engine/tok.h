// Tokenizers for llama.cpp-compatible GGUF vocabularies: SentencePiece-style ("llama": score-driven
// merges over UTF-8 characters, "▁" for spaces, <0xNN> byte fallback) and byte-level BPE ("gpt2"
// with the "llama-bpe" pre-tokenizer: ranked merges over GPT-2 byte characters). Encoding,
// token_to_piece and detokenizing reproduce llama.cpp's llama_tokenize, llama_token_to_piece and
// llama_detokenize, including special-token matching, BOS/EOS and the dummy-prefix space.
//
// A tok is immutable after creation: any number of threads may encode and decode with one tok at
// once. Token ids are int32_t; TOK_NULL means "no such token".
#ifndef SPECD_ENGINE_TOK_H
#define SPECD_ENGINE_TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker/engine/gguf.h"

typedef struct tok tok;
typedef struct tok_stream tok_stream;

#define TOK_NULL (-1)
// In struct tok_vocab: "use what llama.cpp uses for this tokenizer model".
#define TOK_ID_MODEL_DEFAULT (-2)

enum tok_model {
    TOK_MODEL_SPM = 1, // tokenizer.ggml.model = "llama"
    TOK_MODEL_BPE = 2, // tokenizer.ggml.model = "gpt2"
};

// BPE pre-tokenizers (tokenizer.ggml.pre). Only llama-bpe (and its aliases llama3, llama-v3,
// falcon3, pixtral, ...) is supported; SPM ignores this.
enum tok_pre {
    TOK_PRE_NONE = 0,
    TOK_PRE_LLAMA3 = 1,
};

// tokenizer.ggml.token_type values.
enum tok_token_type {
    TOK_TYPE_UNDEFINED = 0,
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

// A vocabulary as plain arrays (what a GGUF file holds). Nothing is kept: tok_new_from_vocab
// copies what it needs.
struct tok_vocab {
    enum tok_model model;
    enum tok_pre pre;               // BPE only
    int32_t n_tokens;               // > 0
    const char *const *texts;       // [n_tokens] piece texts (UTF-8, "▁" for space in SPM)
    const uint32_t *text_lens;      // [n_tokens] byte lengths; NULL: texts are NUL-terminated
    const float *scores;            // [n_tokens]; NULL: all 0 (SPM merges by score)
    const int32_t *types;           // [n_tokens] enum tok_token_type; NULL: all NORMAL
    int32_t n_merges;               // BPE: > 0
    const char *const *merges;      // [n_merges] "left right", rank = index (BPE only)
    const uint32_t *merge_lens;     // [n_merges]; NULL: NUL-terminated
    int32_t bos_id, eos_id, unk_id; // TOK_NULL, TOK_ID_MODEL_DEFAULT or an id < n_tokens
    int32_t pad_id, eot_id, eom_id; // same
    int add_bos, add_eos;           // -1: model default (SPM and llama-bpe: BOS yes, EOS no)
    int add_space_prefix;           // -1: model default (SPM yes, BPE no)
};

// All ids TOK_ID_MODEL_DEFAULT, all flags -1, model SPM, everything else 0/NULL.
struct tok_vocab tok_default_vocab(void);

// Builds a tokenizer from arrays. Returns 0 and sets *out (free with tok_free), or
// SPECD_ERR_FORMAT (inconsistent vocabulary: no tokens, bad token type, duplicate token text,
// special id out of range, BPE without merges, add_bos without a BOS token, ...),
// SPECD_ERR_UNSUPPORTED (unknown model or pre-tokenizer), SPECD_ERR_INVALID (NULL arguments) or
// SPECD_ERR_NOMEM, with the reason in err; *out is NULL on failure.
int tok_new_from_vocab(const struct tok_vocab *vocab, tok **out, char *err, size_t err_size);

// Reads the tokenizer.ggml.* metadata of an open GGUF file (model, pre, tokens, scores,
// token_type, merges, bos/eos/unknown/padding/eot/eom ids, add_bos_token, add_eos_token,
// add_space_prefix) and builds the tokenizer. Ids stored as -1 / 0xFFFFFFFF mean "none".
// Returns as tok_new_from_vocab; a missing or mistyped key is SPECD_ERR_FORMAT naming the key.
// The tok does not refer to f afterwards.
int tok_new_from_gguf(const gguf_file *f, tok **out, char *err, size_t err_size);

void tok_free(tok *t); // accepts NULL

// Encodes len bytes of text (any bytes; need not be NUL-terminated or valid UTF-8).
// add_special: add BOS / EOS as the vocabulary asks (llama.cpp's add_special).
// parse_special: control and unknown-type token texts in the text (e.g. "<s>",
// "<|eot_id|>") become those tokens; user-defined tokens are always matched.
// Returns the number of tokens of the whole encoding, n >= 0. The ids are written to out when
// n <= cap; when n > cap only the first cap are written and the caller should retry with a
// buffer of n. Returns SPECD_ERR_INVALID (NULL text with len > 0, cap < 0, NULL out with
// cap > 0, len too large) or SPECD_ERR_NOMEM.
int tok_encode(const tok *t, const char *text, size_t len, bool add_special, bool parse_special,
               int32_t *out, int cap);

// The text of one token, as llama_token_to_piece with lstrip 0: spaces for "▁" (SPM), bytes for
// byte tokens and byte-level characters; control and unknown tokens give "" unless special.
// Writes min(n, cap) bytes (no NUL) and returns the piece length n, or SPECD_ERR_INVALID for an
// id out of range.
int tok_token_to_piece(const tok *t, int32_t token, bool special, char *out, size_t cap);

// Detokenizes as llama_detokenize: the pieces of the tokens concatenated, the first piece's
// leading dummy-prefix space removed (SPM), and for BPE llama.cpp's clean-up of " ." " ," " 's"
// and the like. remove_special drops a leading BOS and trailing EOS where the vocabulary adds
// them; unparse_special renders control tokens as their text.
// Returns the full text length n >= 0; writes min(n, cap) bytes and a terminating NUL when
// n < cap. SPECD_ERR_INVALID for an id out of range or bad arguments, SPECD_ERR_NOMEM.
int64_t tok_decode(const tok *t, const int32_t *tokens, int n_tokens, bool remove_special,
                   bool unparse_special, char *out, size_t cap);

int32_t tok_n_vocab(const tok *t);
enum tok_model tok_model(const tok *t);
int32_t tok_bos(const tok *t); // TOK_NULL when the vocabulary has none
int32_t tok_eos(const tok *t);
int32_t tok_unk(const tok *t);
int32_t tok_pad(const tok *t);
bool tok_add_bos(const tok *t); // whether add_special adds a BOS
bool tok_add_eos(const tok *t);
// True for tokens that end generation: EOS, EOT, EOM and tokens whose text llama.cpp treats
// as end-of-generation ("</s>", "<|eot_id|>", "<|end_of_text|>", "<|im_end|>", ...).
bool tok_is_eog(const tok *t, int32_t token);
// The stored text of a token (NUL-terminated; *len set when len is not NULL), or NULL for an
// id out of range. Valid until tok_free.
const char *tok_token_text(const tok *t, int32_t token, size_t *len);
// The token's type, or TOK_TYPE_UNDEFINED for an id out of range.
enum tok_token_type tok_token_type(const tok *t, int32_t token);
// The id of a token text, or TOK_NULL.
int32_t tok_text_to_token(const tok *t, const char *text, size_t len);

// ---- streaming decoder ----
// Turns generated tokens into text as they come, never emitting part of a UTF-8 character:
// bytes of a character split across tokens (byte-fallback tokens) are held until complete.
// Ill-formed bytes become U+FFFD (one per maximal ill-formed subsequence) as soon as they can
// no longer start a valid character; an incomplete character still held at flush becomes U+FFFD.
// Pieces are concatenated as they are (no dummy-prefix stripping, no clean-up); special:
// render control tokens as their text.

#define TOK_STREAM_MIN_CAP 4

// NULL when out of memory. The tok must outlive the stream.
tok_stream *tok_stream_new(const tok *t, bool special);
void tok_stream_free(tok_stream *s); // accepts NULL
// Adds a token and writes complete characters to out, at most cap bytes (no NUL); text that
// does not fit stays in the stream for the next push or flush. Returns the bytes written, or
// SPECD_ERR_INVALID (id out of range: nothing changes; cap < TOK_STREAM_MIN_CAP), or
// SPECD_ERR_NOMEM.
int tok_stream_push(tok_stream *s, int32_t token, char *out, size_t cap);
// Writes what is held, an incomplete character as U+FFFD, at most cap bytes; call again until
// it returns 0 to drain it all. The stream is then empty and can be reused.
// Returns the bytes written or SPECD_ERR_INVALID (cap < TOK_STREAM_MIN_CAP).
int tok_stream_flush(tok_stream *s, char *out, size_t cap);
// Bytes held in the stream (pending output plus an incomplete character).
size_t tok_stream_pending(const tok_stream *s);

#endif
