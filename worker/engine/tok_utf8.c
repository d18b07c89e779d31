// UTF-8 helpers for the tokenizers: llama.cpp's lenient decoding (for encoding, where the ids
// must match llama.cpp) and strict validation (for the streaming decoder).
#include <stdlib.h>

#include "shared/status.h"
#include "worker/engine/tok_internal.h"

size_t tok_utf8_len(unsigned char lead) {
    // High nibble 0x0-0xB: one byte (ASCII or a stray continuation byte), 0xC-0xD: two,
    // 0xE: three, 0xF: four.
    unsigned hi = lead >> 4;
    if (hi < 0xC)
        return 1;
    if (hi < 0xE)
        return 2;
    return hi == 0xE ? 3 : 4;
}

static bool is_cont(unsigned char c) {
    return (c & 0xC0) == 0x80;
}

// One code point at s[*pos..n), lenient as llama.cpp: checks only the lead byte pattern and
// that the continuation bytes exist and look like continuation bytes. Returns U+FFFD and
// advances one byte otherwise.
static uint32_t decode_one(const unsigned char *s, size_t n, size_t *pos) {
    size_t i = *pos;
    unsigned char c = s[i];
    if (c < 0x80) {
        *pos = i + 1;
        return c;
    }
    size_t need;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
        need = 1;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        need = 2;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        need = 3;
        cp = c & 0x07;
    } else {
        *pos = i + 1; // continuation byte as lead, or 0xF8..0xFF
        return 0xFFFD;
    }
    if (i + need >= n) {
        *pos = i + 1;
        return 0xFFFD;
    }
    for (size_t k = 1; k <= need; k++) {
        if (!is_cont(s[i + k])) {
            *pos = i + 1;
            return 0xFFFD;
        }
        cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    *pos = i + need + 1;
    return cp;
}

int64_t tok_utf8_decode_all(const char *text, size_t len, uint32_t **out) {
    *out = NULL;
    uint32_t *cps = malloc((len ? len : 1) * sizeof *cps);
    if (!cps)
        return SPECD_ERR_NOMEM;
    const unsigned char *s = (const unsigned char *)text;
    size_t pos = 0, n = 0;
    while (pos < len)
        cps[n++] = decode_one(s, len, &pos);
    *out = cps;
    return (int64_t)n;
}

size_t tok_utf8_encode(uint32_t cp, char *buf) {
    unsigned char *b = (unsigned char *)buf;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        b[0] = (unsigned char)(0xC0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp > 0x10FFFF)
        cp = 0xFFFD;
    if (cp < 0x10000) {
        b[0] = (unsigned char)(0xE0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    b[0] = (unsigned char)(0xF0 | (cp >> 18));
    b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    b[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

int tok_utf8_check(const unsigned char *s, size_t n) {
    if (n == 0)
        return 0;
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    // Allowed range of the second byte and the total length, per Unicode Table 3-7.
    unsigned char lo = 0x80, hi = 0xBF;
    int len;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return -1; // C0, C1, F5..FF or a continuation byte
    }
    for (int k = 1; k < len; k++) {
        if ((size_t)k >= n)
            return 0; // a valid prefix so far
        unsigned char lo_k = k == 1 ? lo : 0x80, hi_k = k == 1 ? hi : 0xBF;
        if (s[k] < lo_k || s[k] > hi_k)
            return -k; // the first k bytes are the maximal ill-formed subpart
    }
    return len;
}
