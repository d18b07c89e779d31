#include "shared/text.h"

#include <stdlib.h>
#include <string.h>

size_t text_unescape(const char *in, size_t len, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '\\' && i + 1 < len) {
            const char c = in[i + 1];
            const char *map = strchr("n\nt\tr\r\\\\", c);
            if (map && (map - "n\nt\tr\r\\\\") % 2 == 0) {
                out[o++] = map[1];
                i++;
                continue;
            }
        }
        out[o++] = in[i];
    }
    out[o] = '\0';
    return o;
}

int text_read_prompts(const char *path, char ***out) {
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char **lines = NULL, *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int n = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        char **grown = realloc(lines, sizeof *lines * (size_t)(n + 1));
        char *text = malloc((size_t)len + 1);
        if (!grown || !text) {
            free(text);
            lines = grown ? grown : lines;
            text_free_lines(lines, n);
            free(line);
            fclose(f);
            return -1;
        }
        lines = grown;
        text_unescape(line, (size_t)len, text);
        lines[n++] = text;
    }
    free(line);
    fclose(f);
    *out = lines;
    return n;
}

void text_free_lines(char **lines, int n) {
    for (int i = 0; lines && i < n; i++)
        free(lines[i]);
    free(lines);
}

// Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid.
static size_t utf8_valid_len(const unsigned char *s, size_t left) {
    if (s[0] < 0x80)
        return 1;
    size_t n = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
    if (n == 0 || s[0] >= 0xf8 || n > left)
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((n == 3 && s[0] == 0xe0 && s[1] < 0xa0) || (n == 4 && s[0] == 0xf0 && s[1] < 0x90) ||
        (n == 4 && s[0] == 0xf4 && s[1] > 0x8f) || (n == 3 && s[0] == 0xed && s[1] > 0x9f))
        return 0;
    return n;
}

void text_json_string(FILE *f, const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    fputc('"', f);
    for (size_t i = 0; i < len;) {
        const unsigned char c = u[i];
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
        } else if (c == '\n') {
            fputs("\\n", f);
        } else if (c == '\t') {
            fputs("\\t", f);
        } else if (c == '\r') {
            fputs("\\r", f);
        } else if (c < 0x20) {
            fprintf(f, "\\u%04x", c);
        } else {
            size_t n = utf8_valid_len(u + i, len - i);
            if (n == 0) {
                fputs("\\ufffd", f);
                i++;
                continue;
            }
            fwrite(u + i, 1, n, f);
            i += n;
            continue;
        }
        i++;
    }
    fputc('"', f);
}
