#include "tests/support/refs.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int32_t *int_array(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    int32_t *v = calloc((size_t)*n + 1, sizeof *v);
    for (int i = 0; v && i < *n; i++)
        v[i] = (int32_t)cJSON_GetArrayItem(arr, i)->valuedouble;
    return v;
}

static int parse_case(const char *line, struct ref_case *c) {
    cJSON *j = cJSON_Parse(line);
    if (!j)
        return -1;
    const cJSON *prompt = cJSON_GetObjectItem(j, "prompt");
    const cJSON *pt = cJSON_GetObjectItem(j, "prompt_tokens");
    const cJSON *t = cJSON_GetObjectItem(j, "tokens");
    const cJSON *top5 = cJSON_GetObjectItem(j, "top5_first");
    int rc = -1;
    if (cJSON_IsString(prompt) && cJSON_IsArray(pt) && cJSON_IsArray(t)) {
        memset(c, 0, sizeof *c);
        c->prompt = strdup(prompt->valuestring);
        c->prompt_tokens = int_array(pt, &c->n_prompt);
        c->tokens = int_array(t, &c->n_tokens);
        for (int i = 0; i < 5 && cJSON_IsArray(top5) && i < cJSON_GetArraySize(top5); i++) {
            const cJSON *e = cJSON_GetArrayItem(top5, i);
            c->top5_ids[i] = (int32_t)cJSON_GetArrayItem(e, 0)->valuedouble;
            c->top5_logits[i] = (float)cJSON_GetArrayItem(e, 1)->valuedouble;
        }
        rc = 0;
    }
    cJSON_Delete(j);
    return rc;
}

int refs_load(const char *path, struct ref_case **out) {
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    struct ref_case *cases = NULL;
    int n = 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        if (line[0] != '{')
            continue;
        struct ref_case *grown = realloc(cases, sizeof *cases * (size_t)(n + 1));
        if (!grown || parse_case(line, &grown[n]) != 0) {
            cases = grown ? grown : cases;
            refs_free(cases, n);
            free(line);
            fclose(f);
            return -1;
        }
        cases = grown;
        n++;
    }
    free(line);
    fclose(f);
    *out = cases;
    return n;
}

void refs_free(struct ref_case *cases, int n) {
    for (int i = 0; cases && i < n; i++) {
        free(cases[i].prompt);
        free(cases[i].prompt_tokens);
        free(cases[i].tokens);
    }
    free(cases);
}
