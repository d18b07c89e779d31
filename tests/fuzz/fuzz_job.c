// libFuzzer target for job field parsing (shared/job.c). The input is split at '\n' into
// fields, taken as name/value pairs (an odd last field gets an empty value). Checks:
//  - job_parse never crashes, leaks or reads out of bounds, with default and with tight limits;
//  - an accepted job satisfies every documented rule, and encoding it then parsing again gives
//    the same job;
//  - job_fields_to_json always produces JSON that an independent parser (cJSON) accepts, with
//    one member per field.
#include "shared/job.h"
#include "shared/status.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_MAX_FIELDS 64

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_job: check failed: %s (line %d)\n", #cond, __LINE__);            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_rules(const struct job_params *p, const struct job *j) {
    size_t id_len = strlen(j->id);
    FUZZ_CHECK(job_id_is_valid(j->id, id_len));
    FUZZ_CHECK(j->prompt_len >= 1 && j->prompt_len <= p->prompt_max_bytes);
    FUZZ_CHECK(j->prompt[j->prompt_len] == '\0');
    FUZZ_CHECK(j->max_tokens >= 1 && j->max_tokens <= p->max_tokens_limit);
    FUZZ_CHECK(j->temperature >= 0.0 && j->temperature <= 10.0);
    FUZZ_CHECK(j->top_p > 0.0 && j->top_p <= 1.0);
    FUZZ_CHECK(j->top_k >= 0);
    FUZZ_CHECK(j->n_stop >= 0 && j->n_stop <= p->stop_max);
    for (int i = 0; i < j->n_stop; i++) {
        size_t len = strlen(j->stop[i]);
        FUZZ_CHECK(len >= 1 && len <= p->stop_max_bytes);
    }
    FUZZ_CHECK(j->stream == 0 || j->stream == 1);
    FUZZ_CHECK(j->version == JOB_VERSION);
}

static void check_same(const struct job *a, const struct job *b) {
    FUZZ_CHECK(strcmp(a->id, b->id) == 0);
    FUZZ_CHECK(a->prompt_len == b->prompt_len && memcmp(a->prompt, b->prompt, a->prompt_len) == 0);
    FUZZ_CHECK(a->max_tokens == b->max_tokens);
    FUZZ_CHECK(a->temperature == b->temperature && a->top_p == b->top_p);
    FUZZ_CHECK(a->top_k == b->top_k);
    FUZZ_CHECK(a->has_seed == b->has_seed && (!a->has_seed || a->seed == b->seed));
    FUZZ_CHECK(a->n_stop == b->n_stop);
    for (int i = 0; i < a->n_stop; i++)
        FUZZ_CHECK(strcmp(a->stop[i], b->stop[i]) == 0);
    FUZZ_CHECK(a->stream == b->stream);
    FUZZ_CHECK(strcmp(a->class_label, b->class_label) == 0);
    FUZZ_CHECK(a->priority == b->priority);
}

static void parse_and_check(const struct job_params *p, const struct job_field *f, size_t n) {
    struct job j;
    char err[JOB_REASON_MAX];
    int rc = job_parse(p, f, n, &j, err, sizeof err);
    FUZZ_CHECK(rc == SPECD_OK || rc == SPECD_ERR_FORMAT || rc == SPECD_ERR_NOMEM);
    if (rc != SPECD_OK) {
        FUZZ_CHECK(j.storage == NULL && j.n_stop == 0);
        FUZZ_CHECK(strlen(err) > 0 && strlen(err) < sizeof err);
        return;
    }
    check_rules(p, &j);
    struct job_encoded enc;
    FUZZ_CHECK(job_encode(&j, &enc) == SPECD_OK);
    struct job again;
    rc = job_parse(p, enc.fields, enc.n_fields, &again, err, sizeof err);
    if (rc != SPECD_OK)
        fprintf(stderr, "fuzz_job: re-parse failed: %s\n", err);
    FUZZ_CHECK(rc == SPECD_OK);
    check_same(&j, &again);
    job_clear(&again);
    job_encoded_clear(&enc);
    job_clear(&j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    const char *piece[2 * FUZZ_MAX_FIELDS];
    size_t piece_len[2 * FUZZ_MAX_FIELDS], n_pieces = 0, start = 0;
    for (size_t i = 0; i <= size && n_pieces < 2 * FUZZ_MAX_FIELDS; i++) {
        if (i == size || s[i] == '\n') {
            piece[n_pieces] = s + start;
            piece_len[n_pieces++] = i - start;
            start = i + 1;
        }
    }
    struct job_field f[FUZZ_MAX_FIELDS];
    size_t n = 0;
    for (size_t i = 0; i < n_pieces; i += 2, n++) {
        f[n].name = piece[i];
        f[n].name_len = piece_len[i];
        f[n].value = i + 1 < n_pieces ? piece[i + 1] : "";
        f[n].value_len = i + 1 < n_pieces ? piece_len[i + 1] : 0;
    }

    struct job_params def = job_default_params();
    parse_and_check(&def, f, n);
    struct job_params tight = def;
    tight.max_tokens_limit = 8;
    tight.prompt_max_bytes = 16;
    tight.stop_max = 2;
    tight.stop_max_bytes = 4;
    tight.reject_unknown = 1;
    parse_and_check(&tight, f, n);

    char *json = job_fields_to_json(f, n);
    FUZZ_CHECK(json != NULL);
    cJSON *obj = cJSON_Parse(json);
    FUZZ_CHECK(obj != NULL && cJSON_IsObject(obj));
    FUZZ_CHECK((size_t)cJSON_GetArraySize(obj) == n);
    cJSON_Delete(obj);
    free(json);

    const char *v;
    size_t v_len;
    if (job_find_field(f, n, "id", &v, &v_len))
        (void)job_id_is_valid(v, v_len);
    return 0;
}
