// Reads ../shared/refs/<model>.greedy.jsonl: llama.cpp's prompt ids and greedy continuations.
#ifndef SPECD_TESTS_REFS_H
#define SPECD_TESTS_REFS_H

#include <stdint.h>

struct ref_case {
    char *prompt;           // UTF-8 prompt text
    int32_t *prompt_tokens; // llama.cpp's ids, BOS included
    int n_prompt;
    int32_t *tokens; // llama.cpp's greedy continuation
    int n_tokens;
    int32_t top5_ids[5]; // the five largest logits at the first generated position
    float top5_logits[5];
};

// Loads every case of a refs file. Returns the count (>= 0) and sets *out (free with
// refs_free), or -1 when the file cannot be read or parsed.
int refs_load(const char *path, struct ref_case **out);
void refs_free(struct ref_case *cases, int n);

#endif
