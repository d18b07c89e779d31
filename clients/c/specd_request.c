// specd_client requests: defaults, conversion to a job, validation, and reading one from JSON
// (the lines of a specd-submit jobs file).
#include "clients/c/specd_client.h"

#include "shared/status.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct specd_request specd_request_default(void) {
    struct job j;
    job_init(&j, NULL);
    struct specd_request r = {
        .max_tokens = j.max_tokens,
        .temperature = j.temperature,
        .top_p = j.top_p,
        .top_k = j.top_k,
        .priority = JOB_PRIORITY_NORMAL,
    };
    return r;
}

struct request_storage {
    cJSON *root;       // the parsed object; request strings point into it
    const char **stop; // [n_stop]
};

void specd_request_clear(struct specd_request *r) {
    if (!r)
        return;
    struct request_storage *st = r->storage;
    if (st) {
        cJSON_Delete(st->root);
        free(st->stop);
        free(st);
    }
    r->storage = NULL;
}

int specd_request_to_job(const struct specd_request *req, const char *id, struct job *job,
                         char *err, size_t err_size) {
    if (!req || !job)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "NULL request");
    job_init(job, NULL);
    if (!id)
        id = req->id ? req->id : "";
    size_t id_len = strlen(id);
    if (!job_id_is_valid(id, id_len))
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "field 'id': '%.40s%s' is not 1..%d bytes of A-Z a-z 0-9 . _ : -", id,
                          id_len > 40 ? "..." : "", JOB_ID_MAX);
    memcpy(job->id, id, id_len + 1);
    if (!req->prompt)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "missing field 'prompt'");
    job->prompt = req->prompt;
    job->prompt_len = req->prompt_len ? req->prompt_len : strlen(req->prompt);
    job->max_tokens = req->max_tokens;
    job->temperature = req->temperature;
    job->top_p = req->top_p;
    job->top_k = req->top_k;
    job->has_seed = req->has_seed != 0;
    job->seed = req->seed;
    if (req->n_stop < 0 || (req->n_stop > 0 && !req->stop))
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "field 'stop': bad stop list");
    for (int i = 0; i < req->n_stop; i++)
        if (!req->stop[i])
            return specd_fail(err, err_size, SPECD_ERR_FORMAT, "field 'stop': NULL string");
    job->stop = req->stop;
    job->n_stop = req->n_stop;
    job->stream = req->stream != 0;
    const char *cls = req->class_label ? req->class_label : "";
    if (strlen(cls) > JOB_CLASS_MAX)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "field 'class': %zu bytes, longer than %d", strlen(cls), JOB_CLASS_MAX);
    memcpy(job->class_label, cls, strlen(cls) + 1);
    job->priority = req->priority == JOB_PRIORITY_HIGH ? JOB_PRIORITY_HIGH : JOB_PRIORITY_NORMAL;
    return SPECD_OK;
}

int specd_request_validate(const struct specd_request *req, char *err, size_t err_size) {
    if (!req)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "NULL request");
    struct job job;
    int rc = specd_request_to_job(req, req->id && req->id[0] ? req->id : "x", &job, err, err_size);
    if (rc != SPECD_OK)
        return rc;
    // Encode, then parse as a worker with default limits would.
    struct job_encoded enc;
    rc = job_encode(&job, &enc);
    if (rc != SPECD_OK)
        return specd_fail(err, err_size, rc, "cannot encode the job");
    struct job parsed;
    struct job_params jp = job_default_params();
    rc = job_parse(&jp, enc.fields, enc.n_fields, &parsed, err, err_size);
    job_clear(&parsed);
    job_encoded_clear(&enc);
    return rc;
}

// ---- JSON --------------------------------------------------------------------------------------

enum {
    K_V,
    K_ID,
    K_PROMPT,
    K_MAX_TOKENS,
    K_TEMPERATURE,
    K_TOP_P,
    K_TOP_K,
    K_SEED,
    K_STOP,
    K_STREAM,
    K_CLASS,
    K_PRIORITY,
    K_COUNT
};
static const char *const key_names[K_COUNT] = {"v",           "id",     "prompt", "max_tokens",
                                               "temperature", "top_p",  "top_k",  "seed",
                                               "stop",        "stream", "class",  "priority"};

static int key_index(const char *name) {
    for (int k = 0; k < K_COUNT; k++)
        if (strcmp(name, key_names[k]) == 0)
            return k;
    return -1;
}

// An integral JSON number in [lo, hi].
static int json_integer(const cJSON *v, const char *name, double lo, double hi, long long *out,
                        char *err, size_t err_size) {
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || floor(v->valuedouble) != v->valuedouble)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "field '%s': expected an integer", name);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "field '%s': %.17g is out of range",
                          name, v->valuedouble);
    *out = (long long)v->valuedouble;
    return SPECD_OK;
}

static int json_seed(const cJSON *v, uint64_t *out, char *err, size_t err_size) {
    if (cJSON_IsString(v)) {
        const char *s = v->valuestring;
        char *end = NULL;
        errno = 0;
        unsigned long long x = strtoull(s, &end, 10);
        if (!*s || *s < '0' || *s > '9' || *end || errno == ERANGE)
            return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                              "field 'seed': '%.40s' is not a decimal integer in 0..2^64-1", s);
        *out = x;
        return SPECD_OK;
    }
    long long x;
    if (cJSON_IsNumber(v) && v->valuedouble > 9007199254740992.0)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "field 'seed': numbers above 2^53 lose precision in JSON; give the "
                          "seed as a string, e.g. \"seed\": \"18446744073709551615\"");
    int rc = json_integer(v, "seed", 0, 9007199254740992.0, &x, err, err_size);
    *out = (uint64_t)x;
    return rc;
}

static int json_stop(const cJSON *v, struct specd_request *out, struct request_storage *st,
                     char *err, size_t err_size) {
    if (cJSON_IsString(v)) {
        st->stop = malloc(sizeof *st->stop);
        if (!st->stop)
            return specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory");
        st->stop[0] = v->valuestring;
        out->stop = st->stop;
        out->n_stop = 1;
        return SPECD_OK;
    }
    if (!cJSON_IsArray(v))
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "field 'stop': expected an array of strings");
    int n = cJSON_GetArraySize(v);
    st->stop = malloc(sizeof *st->stop * (size_t)(n > 0 ? n : 1));
    if (!st->stop)
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory");
    int i = 0;
    for (const cJSON *s = v->child; s; s = s->next, i++) {
        if (!cJSON_IsString(s))
            return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                              "field 'stop': element %d is not a string", i);
        st->stop[i] = s->valuestring;
    }
    out->stop = st->stop;
    out->n_stop = n;
    return SPECD_OK;
}

static int json_string(const cJSON *v, const char *name, const char **out, char *err,
                       size_t err_size) {
    if (!cJSON_IsString(v))
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "field '%s': expected a string", name);
    *out = v->valuestring;
    return SPECD_OK;
}

// One key of the object into `out`.
static int json_field(int key, const cJSON *v, struct specd_request *out,
                      struct request_storage *st, char *err, size_t err_size) {
    long long x = 0;
    int rc = SPECD_OK;
    const char *s = NULL;
    switch (key) {
    case K_V:
        if (!(cJSON_IsNumber(v) && v->valuedouble == 1) &&
            !(cJSON_IsString(v) && strcmp(v->valuestring, "1") == 0))
            rc = specd_fail(err, err_size, SPECD_ERR_FORMAT,
                            "field 'v': only version 1 is supported");
        break;
    case K_ID:
        rc = json_string(v, "id", &out->id, err, err_size);
        break;
    case K_PROMPT:
        rc = json_string(v, "prompt", &out->prompt, err, err_size);
        out->prompt_len = rc == SPECD_OK ? strlen(out->prompt) : 0;
        break;
    case K_MAX_TOKENS:
    case K_TOP_K:
        rc = json_integer(v, key_names[key], INT_MIN, INT_MAX, &x, err, err_size);
        *(key == K_TOP_K ? &out->top_k : &out->max_tokens) = (int)x;
        break;
    case K_TEMPERATURE:
    case K_TOP_P:
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
            rc = specd_fail(err, err_size, SPECD_ERR_FORMAT, "field '%s': expected a number",
                            key_names[key]);
        else
            *(key == K_TOP_P ? &out->top_p : &out->temperature) = v->valuedouble;
        break;
    case K_SEED:
        rc = json_seed(v, &out->seed, err, err_size);
        out->has_seed = rc == SPECD_OK;
        break;
    case K_STOP:
        rc = json_stop(v, out, st, err, err_size);
        break;
    case K_STREAM:
        if (cJSON_IsBool(v))
            out->stream = cJSON_IsTrue(v);
        else if (cJSON_IsNumber(v) && (v->valuedouble == 0 || v->valuedouble == 1))
            out->stream = v->valuedouble == 1;
        else
            rc = specd_fail(err, err_size, SPECD_ERR_FORMAT,
                            "field 'stream': expected true, false, 0 or 1");
        break;
    case K_CLASS:
        rc = json_string(v, "class", &out->class_label, err, err_size);
        break;
    case K_PRIORITY:
        rc = json_string(v, "priority", &s, err, err_size);
        if (rc == SPECD_OK && strcmp(s, "high") == 0)
            out->priority = JOB_PRIORITY_HIGH;
        else if (rc == SPECD_OK && strcmp(s, "normal") == 0)
            out->priority = JOB_PRIORITY_NORMAL;
        else if (rc == SPECD_OK)
            rc = specd_fail(err, err_size, SPECD_ERR_FORMAT,
                            "field 'priority': '%.20s' is not 'high' or 'normal'", s);
        break;
    }
    return rc;
}

static int json_fields(const cJSON *root, struct specd_request *out, struct request_storage *st,
                       char *err, size_t err_size) {
    int seen[K_COUNT] = {0};
    for (const cJSON *v = root->child; v; v = v->next) {
        int key = key_index(v->string);
        if (key < 0)
            return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                              "unknown field '%.40s' (known: id, prompt, max_tokens, "
                              "temperature, top_p, top_k, seed, stop, stream, class, priority)",
                              v->string);
        if (seen[key]++)
            return specd_fail(err, err_size, SPECD_ERR_FORMAT, "duplicate field '%s'",
                              key_names[key]);
        int rc = json_field(key, v, out, st, err, err_size);
        if (rc != SPECD_OK)
            return rc;
    }
    return SPECD_OK;
}

int specd_request_from_json(const char *json, size_t len, const struct specd_request *base,
                            struct specd_request *out, char *err, size_t err_size) {
    if (!json || !out)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "NULL argument");
    *out = base ? *base : specd_request_default();
    out->storage = NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (root && end) // only white space may follow the object
        while (end < json + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
            end++;
    if (!root || (end && end < json + len)) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        cJSON_Delete(root);
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "not valid JSON (at byte %zu)", at + 1);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "expected a JSON object {...}");
    }
    struct request_storage *st = calloc(1, sizeof *st);
    if (!st) {
        cJSON_Delete(root);
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "out of memory");
    }
    st->root = root;
    out->storage = st;
    int rc = json_fields(root, out, st, err, err_size);
    if (rc != SPECD_OK) {
        specd_request_clear(out);
        *out = base ? *base : specd_request_default();
        out->storage = NULL;
    }
    return rc;
}
