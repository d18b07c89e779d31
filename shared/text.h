// Small text helpers: escapes in prompt files, reading prompt files, JSON string escaping.
#ifndef SPECD_SHARED_TEXT_H
#define SPECD_SHARED_TEXT_H

#include <stddef.h>
#include <stdio.h>

// Decodes "\n", "\t", "\r", "\\" (other backslash pairs are kept as they are) from in[0..len)
// into out (at least len + 1 bytes). Returns the decoded length; out is NUL-terminated.
size_t text_unescape(const char *in, size_t len, char *out);

// Reads a prompt file: one prompt per line, with the escapes above; empty lines are skipped.
// Returns the number of prompts and sets *out to a malloc'ed array of malloc'ed strings (free
// with text_free_lines), or -1 when the file cannot be read (errno set).
int text_read_prompts(const char *path, char ***out);
void text_free_lines(char **lines, int n);

// Writes s[0..len) as a JSON string literal (with quotes) to f. Invalid UTF-8 bytes are written
// as U+FFFD.
void text_json_string(FILE *f, const char *s, size_t len);

#endif
