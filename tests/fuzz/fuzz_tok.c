// libFuzzer target for the tokenizers. The first byte picks what the rest is:
//   0: text for a small SPM vocabulary (encode with every flag, decode, stream the ids)
//   1: text for a small byte-level BPE vocabulary (same)
//   2: a GGUF file: tok_new_from_gguf, then encode and decode a fixed text with the result
//   3: token ids (little-endian int32) to decode and stream with the SPM vocabulary
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/check.h"
#include "worker/engine/gguf.h"
#include "worker/engine/tok.h"

static tok *make_spm(void) {
    static char bytes[256][8];
    const char *texts[270];
    int32_t types[270];
    float scores[270];
    int n = 0;
    const char *head[] = {"<unk>", "<s>", "</s>"};
    const int32_t head_types[] = {TOK_TYPE_UNKNOWN, TOK_TYPE_CONTROL, TOK_TYPE_CONTROL};
    for (int i = 0; i < 3; i++, n++) {
        texts[n] = head[i];
        types[n] = head_types[i];
        scores[n] = 0;
    }
    for (int b = 0; b < 256; b++, n++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        texts[n] = bytes[b];
        types[n] = TOK_TYPE_BYTE;
        scores[n] = 0;
    }
    const char *words[] = {"\xe2\x96\x81", "a", "b", "ab", "\xe2\x96\x81\x61", "ba", "[U]"};
    for (int i = 0; i < 7; i++, n++) {
        texts[n] = words[i];
        types[n] = i == 6 ? TOK_TYPE_USER_DEFINED : TOK_TYPE_NORMAL;
        scores[n] = -(float)i;
    }
    struct tok_vocab v = tok_default_vocab();
    v.n_tokens = n;
    v.texts = texts;
    v.types = types;
    v.scores = scores;
    tok *t = NULL;
    SPECD_CHECK(tok_new_from_vocab(&v, &t, NULL, 0) == 0);
    return t;
}

static tok *make_bpe(void) {
    static char chars[256][4];
    const char *texts[260];
    int n = 0, extra = 0;
    for (int b = 0; b < 256; b++, n++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        unsigned cp = printable ? (unsigned)b : 256u + (unsigned)extra++;
        if (cp < 0x80) {
            chars[b][0] = (char)cp;
        } else {
            chars[b][0] = (char)(0xC0 | (cp >> 6));
            chars[b][1] = (char)(0x80 | (cp & 0x3F));
        }
        texts[n] = chars[b];
    }
    texts[n++] = "ab";
    texts[n++] = "\xc4\xa0"
                 "ab";
    texts[n++] = "<|eot_id|>";
    int32_t types[260];
    for (int i = 0; i < n; i++)
        types[i] = i == n - 1 ? TOK_TYPE_CONTROL : TOK_TYPE_NORMAL;
    const char *merges[] = {"a b", "\xc4\xa0 ab"};
    struct tok_vocab v = tok_default_vocab();
    v.model = TOK_MODEL_BPE;
    v.pre = TOK_PRE_LLAMA3;
    v.n_tokens = n;
    v.texts = texts;
    v.types = types;
    v.n_merges = 2;
    v.merges = merges;
    v.bos_id = v.eos_id = n - 1;
    tok *t = NULL;
    SPECD_CHECK(tok_new_from_vocab(&v, &t, NULL, 0) == 0);
    return t;
}

static void exercise(const tok *t, const char *text, size_t len) {
    for (int flags = 0; flags < 4; flags++) {
        int n = tok_encode(t, text, len, flags & 1, flags & 2, NULL, 0);
        SPECD_CHECK(n >= 0);
        int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
        SPECD_CHECK(ids && tok_encode(t, text, len, flags & 1, flags & 2, ids, n) == n);
        for (int i = 0; i < n; i++)
            SPECD_CHECK(ids[i] >= 0 && ids[i] < tok_n_vocab(t));
        int64_t m = tok_decode(t, ids, n, flags & 1, flags & 2, NULL, 0);
        SPECD_CHECK(m >= 0);
        char *out = malloc((size_t)m + 1);
        SPECD_CHECK(out && tok_decode(t, ids, n, flags & 1, flags & 2, out, (size_t)m + 1) == m);
        free(out);
        tok_stream *s = tok_stream_new(t, flags & 2);
        SPECD_CHECK(s);
        char buf[8];
        for (int i = 0; i < n; i++)
            SPECD_CHECK(tok_stream_push(s, ids[i], buf, sizeof buf) >= 0);
        while (tok_stream_flush(s, buf, sizeof buf) > 0) {
        }
        SPECD_CHECK(tok_stream_pending(s) == 0);
        tok_stream_free(s);
        free(ids);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    const char *rest = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0:
    case 1: {
        tok *t = data[0] % 4 == 0 ? make_spm() : make_bpe();
        exercise(t, rest, n);
        tok_free(t);
        break;
    }
    case 2: {
        gguf_file *f = NULL;
        tok *t = NULL;
        if (gguf_open_memory(rest, n, NULL, &f, NULL, 0) == 0 &&
            tok_new_from_gguf(f, &t, NULL, 0) == 0) {
            gguf_free(f);
            f = NULL;
            exercise(t, "Hello <s> world", 15);
        }
        tok_free(t);
        gguf_free(f);
        break;
    }
    default: {
        tok *t = make_spm();
        int32_t ids[256];
        size_t k = n / 4 < 256 ? n / 4 : 256;
        for (size_t i = 0; i < k; i++) {
            uint32_t u;
            memcpy(&u, rest + 4 * i, 4);
            ids[i] = (int32_t)(u % (uint32_t)tok_n_vocab(t));
        }
        int64_t m = tok_decode(t, ids, (int)k, true, true, NULL, 0);
        SPECD_CHECK(m >= 0);
        tok_stream *s = tok_stream_new(t, false);
        char buf[4];
        for (size_t i = 0; i < k; i++)
            SPECD_CHECK(tok_stream_push(s, ids[i], buf, sizeof buf) >= 0);
        while (tok_stream_flush(s, buf, sizeof buf) > 0) {
        }
        tok_stream_free(s);
        tok_free(t);
        break;
    }
    }
    return 0;
}
