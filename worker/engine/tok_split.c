// The llama-bpe pre-tokenizer: splits text into words by the regex
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+
// written out by hand, alternative by alternative, with Unicode 15.1 classes as llama.cpp has
// them (a regex engine would bring its own Unicode version). The tests compare it with PCRE2.
#include "shared/status.h"
#include "worker/engine/tok_internal.h"

static uint32_t ascii_lower(uint32_t c) {
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static bool is_newline(uint32_t c) {
    return c == '\r' || c == '\n';
}

// Length of the word starting at cps[pos] (pos < n); always >= 1.
static size_t word_len(const uint32_t *cps, size_t n, size_t pos) {
    uint32_t c = cps[pos];
    int cls = tok_cp_class(c);

    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if (c == '\'' && pos + 1 < n) {
        uint32_t c1 = ascii_lower(cps[pos + 1]);
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd')
            return 2;
        if (pos + 2 < n) {
            uint32_t c2 = ascii_lower(cps[pos + 2]);
            if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
                return 3;
        }
    }

    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (!is_newline(c) && cls != TOK_CP_NUMBER) {
        size_t end = cls == TOK_CP_LETTER ? pos : pos + 1;
        if (end < n && tok_cp_class(cps[end]) == TOK_CP_LETTER) {
            while (end < n && tok_cp_class(cps[end]) == TOK_CP_LETTER)
                end++;
            return end - pos;
        }
    }

    // \p{N}{1,3}
    if (cls == TOK_CP_NUMBER) {
        size_t end = pos + 1;
        while (end < n && end - pos < 3 && tok_cp_class(cps[end]) == TOK_CP_NUMBER)
            end++;
        return end - pos;
    }

    // " ?[^\s\p{L}\p{N}]+[\r\n]*"
    size_t j = pos + (c == ' ');
    if (j < n && !tok_cp_is_space(cps[j]) && tok_cp_class(cps[j]) == TOK_CP_OTHER) {
        size_t end = j;
        while (end < n && !tok_cp_is_space(cps[end]) && tok_cp_class(cps[end]) == TOK_CP_OTHER)
            end++;
        while (end < n && is_newline(cps[end]))
            end++;
        return end - pos;
    }

    // \s*[\r\n]+ : up to the last newline of the whitespace run.
    size_t end = pos, after_newline = 0;
    while (end < n && tok_cp_is_space(cps[end])) {
        if (is_newline(cps[end]))
            after_newline = end + 1;
        end++;
    }
    if (after_newline)
        return after_newline - pos;
    // \s+(?!\S) : a run followed by a non-space leaves its last space to the next word.
    if (end - pos > 1 && end < n)
        return end - pos - 1;
    // \s+
    if (end > pos)
        return end - pos;
    return 1; // unreachable with the classes above; keeps the loop going regardless
}

int tok_split_llama3(const uint32_t *cps, size_t n, struct tok_ids *lens) {
    size_t pos = 0;
    while (pos < n) {
        size_t len = word_len(cps, n, pos);
        if (tok_ids_push(lens, (int32_t)len) != 0)
            return SPECD_ERR_NOMEM;
        pos += len;
    }
    return 0;
}
