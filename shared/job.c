#include "shared/job.h"

#include "shared/status.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Known fields, in the order job_parse() validates them (so that the reason for a job with
// several faults does not depend on field order).
enum job_key {
    KEY_V,
    KEY_ID,
    KEY_PROMPT,
    KEY_MAX_TOKENS,
    KEY_TEMPERATURE,
    KEY_TOP_P,
    KEY_TOP_K,
    KEY_SEED,
    KEY_STOP,
    KEY_STREAM,
    KEY_CLASS,
    KEY_PRIORITY,
    KEY_COUNT
};
static const char *const job_key_names[KEY_COUNT] = {
    "v",     "id",   "prompt", "max_tokens", "temperature", "top_p",
    "top_k", "seed", "stop",   "stream",     "class",       "priority",
};

struct job_params job_default_params(void) {
    struct job_params p = {
        .max_tokens_limit = 4096,
        .prompt_max_bytes = 1u << 20,
        .stop_max = 16,
        .stop_max_bytes = 256,
        .reject_unknown = 0,
        .default_max_tokens = 256,
        .default_temperature = 1.0,
        .default_top_p = 1.0,
        .default_top_k = 0,
    };
    return p;
}

void job_init(struct job *job, const struct job_params *params) {
    struct job_params def = job_default_params();
    if (!params)
        params = &def;
    memset(job, 0, sizeof *job);
    job->version = JOB_VERSION;
    job->prompt = "";
    job->max_tokens = params->default_max_tokens < params->max_tokens_limit
                          ? params->default_max_tokens
                          : params->max_tokens_limit;
    job->temperature = params->default_temperature;
    job->top_p = params->default_top_p;
    job->top_k = params->default_top_k;
    job->priority = JOB_PRIORITY_NORMAL;
}

void job_clear(struct job *job) {
    if (!job)
        return;
    free(job->storage);
    job_init(job, NULL);
}

// ---- helpers for messages ----------------------------------------------------------------------

// A short printable rendering of untrusted bytes for error messages: at most 32 bytes shown,
// non-printable bytes as \xNN, "..." when cut.
static const char *job_excerpt(const char *s, size_t len, char *buf, size_t size) {
    size_t o = 0, shown = len < 32 ? len : 32;
    for (size_t i = 0; i < shown && o + 5 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
    }
    if (shown < len && o + 4 < size) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

__attribute__((format(printf, 4, 0))) static int job_bad(char *err, size_t err_size,
                                                         const char *field, const char *fmt,
                                                         const char *v, size_t v_len) {
    char ex[140], msg[JOB_REASON_MAX];
    snprintf(msg, sizeof msg, fmt, job_excerpt(v, v_len, ex, sizeof ex));
    return specd_fail(err, err_size, SPECD_ERR_FORMAT, "field '%s': %s", field, msg);
}

// ---- strict number parsing ---------------------------------------------------------------------

// Copies a candidate number into buf after checking its grammar. Returns 0 on success, -1 for
// bad syntax, -2 when it does not fit in buf.
static int job_number_text(const char *s, size_t len, int allow_sign, int allow_frac, char *buf,
                           size_t size) {
    size_t i = 0, digits = 0;
    if (allow_sign && i < len && s[i] == '-')
        i++;
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++, digits++;
    if (allow_frac && i < len && s[i] == '.') {
        i++;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++, digits++;
    }
    if (digits == 0)
        return -1;
    if (allow_frac && i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '-' || s[i] == '+'))
            i++;
        size_t exp_digits = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++, exp_digits++;
        if (exp_digits == 0)
            return -1;
    }
    if (i != len)
        return -1;
    if (len >= size)
        return -2; // well-formed but too many digits to be in range
    memcpy(buf, s, len);
    buf[len] = '\0';
    return 0;
}

// Decimal integer, optional '-'. Returns 0, or -1 for bad syntax, -2 when out of range.
static int job_parse_ll(const char *s, size_t len, long long *out) {
    char buf[32];
    int rc = job_number_text(s, len, 1, 0, buf, sizeof buf);
    if (rc != 0)
        return rc;
    errno = 0;
    *out = strtoll(buf, NULL, 10);
    return errno == ERANGE ? -2 : 0;
}

static int job_parse_u64(const char *s, size_t len, uint64_t *out) {
    char buf[32];
    int rc = job_number_text(s, len, 0, 0, buf, sizeof buf);
    if (rc != 0)
        return rc;
    errno = 0;
    unsigned long long v = strtoull(buf, NULL, 10);
    if (errno == ERANGE)
        return -2;
    *out = (uint64_t)v;
    return 0;
}

// Decimal number: [-]digits[.digits][e[+-]digits]; no inf, nan, hex or spaces.
static int job_parse_double(const char *s, size_t len, double *out) {
    char buf[128];
    int rc = job_number_text(s, len, 1, 1, buf, sizeof buf);
    if (rc != 0)
        return rc;
    *out = strtod(buf, NULL);
    return isfinite(*out) ? 0 : -2;
}

// ---- single fields -----------------------------------------------------------------------------

static int job_label_check(const char *field, const char *s, size_t len, size_t max, char *err,
                           size_t err_size) {
    if (len == 0)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "field '%s': empty", field);
    if (len > max)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "field '%s': %zu bytes, longer than %zu",
                          field, len, max);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok)
            return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                              "field '%s': byte 0x%02x at offset %zu is not allowed (use "
                              "A-Z a-z 0-9 . _ : -)",
                              field, c, i);
    }
    return SPECD_OK;
}

int job_id_is_valid(const char *id, size_t len) {
    return id && job_label_check("id", id, len, JOB_ID_MAX, NULL, 0) == SPECD_OK;
}

static int job_int_field(const char *field, const char *v, size_t len, long long lo, long long hi,
                         long long *out, char *err, size_t err_size) {
    int rc = job_parse_ll(v, len, out);
    if (rc == -1)
        return job_bad(err, err_size, field, "'%s' is not an integer", v, len);
    if (rc == -2 || *out < lo || *out > hi) {
        char ex[140];
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "field '%s': '%s' is outside %lld..%lld",
                          field, job_excerpt(v, len, ex, sizeof ex), lo, hi);
    }
    return SPECD_OK;
}

static int job_double_field(const char *field, const char *v, size_t len, double *out, char *err,
                            size_t err_size) {
    int rc = job_parse_double(v, len, out);
    if (rc == -1)
        return job_bad(err, err_size, field, "'%s' is not a decimal number", v, len);
    if (rc == -2)
        return job_bad(err, err_size, field, "'%s' is out of range", v, len);
    return SPECD_OK;
}

// 1 when the JSON text holds a \u0000 escape (cJSON would silently cut the string there).
static int job_json_has_nul_escape(const char *s, size_t len) {
    for (size_t i = 0; i + 1 < len; i++) {
        if (s[i] != '\\')
            continue;
        if (s[i + 1] == 'u' && i + 6 <= len && memcmp(s + i + 2, "0000", 4) == 0)
            return 1;
        i++; // skip the escaped character: in the JSON text \\u0000 there is no escape u
    }
    return 0;
}

// Parses the stop field into a cJSON array of non-empty strings (caller deletes it).
static int job_stop_field(const struct job_params *p, const char *v, size_t len, cJSON **out,
                          size_t *total_bytes, char *err, size_t err_size) {
    *out = NULL;
    if (memchr(v, '\0', len))
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "field 'stop': contains a NUL byte");
    if (job_json_has_nul_escape(v, len))
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "field 'stop': a stop string contains \\u0000");
    char *text = malloc(len + 1);
    if (!text)
        return SPECD_ERR_NOMEM;
    memcpy(text, v, len);
    text[len] = '\0';
    const char *end = NULL;
    cJSON *arr = cJSON_ParseWithOpts(text, &end, 1);
    free(text);
    if (!arr || !cJSON_IsArray(arr)) {
        cJSON_Delete(arr);
        return job_bad(err, err_size, "stop", "'%s' is not a JSON array of strings", v, len);
    }
    int n = cJSON_GetArraySize(arr);
    int rc = SPECD_OK;
    if (n > p->stop_max)
        rc = specd_fail(err, err_size, SPECD_ERR_FORMAT,
                        "field 'stop': %d stop strings, more than the limit of %d", n, p->stop_max);
    *total_bytes = 0;
    for (int i = 0; rc == SPECD_OK && i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(arr, i);
        size_t e_len = cJSON_IsString(e) ? strlen(e->valuestring) : 0;
        if (!cJSON_IsString(e))
            rc = specd_fail(err, err_size, SPECD_ERR_FORMAT,
                            "field 'stop': element %d is not a string", i);
        else if (e_len == 0)
            rc =
                specd_fail(err, err_size, SPECD_ERR_FORMAT, "field 'stop': element %d is empty", i);
        else if (e_len > p->stop_max_bytes)
            rc = specd_fail(err, err_size, SPECD_ERR_FORMAT,
                            "field 'stop': element %d is %zu bytes, more than the limit of %zu", i,
                            e_len, p->stop_max_bytes);
        *total_bytes += e_len + 1;
    }
    if (rc != SPECD_OK) {
        cJSON_Delete(arr);
        return rc;
    }
    *out = arr;
    return SPECD_OK;
}

// ---- job_parse ---------------------------------------------------------------------------------

static int job_key_of(const struct job_field *f) {
    for (int k = 0; k < KEY_COUNT; k++)
        if (f->name_len == strlen(job_key_names[k]) &&
            memcmp(f->name, job_key_names[k], f->name_len) == 0)
            return k;
    return -1;
}

// Finds each known field (index into fields, or -1), rejecting duplicates and, when asked,
// unknown names.
static int job_index_fields(const struct job_params *p, const struct job_field *fields, size_t n,
                            long at[KEY_COUNT], char *err, size_t err_size) {
    for (int k = 0; k < KEY_COUNT; k++)
        at[k] = -1;
    for (size_t i = 0; i < n; i++) {
        if (!fields[i].name || (!fields[i].value && fields[i].value_len))
            return specd_fail(err, err_size, SPECD_ERR_INVALID, "field %zu has a NULL pointer", i);
        int k = job_key_of(&fields[i]);
        if (k < 0) {
            char ex[140];
            if (p->reject_unknown)
                return specd_fail(err, err_size, SPECD_ERR_FORMAT, "unknown field '%s'",
                                  job_excerpt(fields[i].name, fields[i].name_len, ex, sizeof ex));
            continue;
        }
        if (at[k] >= 0)
            return specd_fail(err, err_size, SPECD_ERR_FORMAT, "duplicate field '%s'",
                              job_key_names[k]);
        at[k] = (long)i;
    }
    return SPECD_OK;
}

// Validates the scalar fields into `out`. Strings (prompt, stop) are handled by the caller.
static int job_parse_scalars(const struct job_params *p, const struct job_field *fields,
                             const long at[KEY_COUNT], struct job *out, char *err,
                             size_t err_size) {
#define FV(k) fields[at[k]].value, fields[at[k]].value_len
    long long ll;
    if (at[KEY_V] >= 0 && !(fields[at[KEY_V]].value_len == 1 && fields[at[KEY_V]].value[0] == '1'))
        return job_bad(err, err_size, "v", "unsupported version '%s' (this reader knows 1)",
                       FV(KEY_V));
    if (at[KEY_ID] < 0)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "missing field 'id'");
    int rc = job_label_check("id", FV(KEY_ID), JOB_ID_MAX, err, err_size);
    if (rc != SPECD_OK)
        return rc;
    memcpy(out->id, fields[at[KEY_ID]].value, fields[at[KEY_ID]].value_len);
    out->id[fields[at[KEY_ID]].value_len] = '\0';
    if (at[KEY_PROMPT] < 0)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "missing field 'prompt'");
    size_t plen = fields[at[KEY_PROMPT]].value_len;
    if (plen == 0)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "field 'prompt': empty");
    if (plen > p->prompt_max_bytes)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "field 'prompt': %zu bytes, more than the limit of %zu", plen,
                          p->prompt_max_bytes);
    if (at[KEY_MAX_TOKENS] >= 0) {
        rc = job_int_field("max_tokens", FV(KEY_MAX_TOKENS), 1, p->max_tokens_limit, &ll, err,
                           err_size);
        if (rc != SPECD_OK)
            return rc;
        out->max_tokens = (int)ll;
    }
    if (at[KEY_TEMPERATURE] >= 0) {
        rc = job_double_field("temperature", FV(KEY_TEMPERATURE), &out->temperature, err, err_size);
        if (rc == SPECD_OK && !(out->temperature >= 0.0 && out->temperature <= 10.0))
            rc = job_bad(err, err_size, "temperature", "'%s' is outside [0, 10]",
                         FV(KEY_TEMPERATURE));
        if (rc != SPECD_OK)
            return rc;
        out->temperature += 0.0; // -0 -> +0
    }
    if (at[KEY_TOP_P] >= 0) {
        rc = job_double_field("top_p", FV(KEY_TOP_P), &out->top_p, err, err_size);
        if (rc == SPECD_OK && !(out->top_p > 0.0 && out->top_p <= 1.0))
            rc = job_bad(err, err_size, "top_p", "'%s' is outside (0, 1]", FV(KEY_TOP_P));
        if (rc != SPECD_OK)
            return rc;
    }
    if (at[KEY_TOP_K] >= 0) {
        rc = job_int_field("top_k", FV(KEY_TOP_K), 0, INT_MAX, &ll, err, err_size);
        if (rc != SPECD_OK)
            return rc;
        out->top_k = (int)ll;
    }
    if (at[KEY_SEED] >= 0) {
        rc = job_parse_u64(FV(KEY_SEED), &out->seed);
        if (rc != 0)
            return job_bad(err, err_size, "seed", "'%s' is not an integer in 0..2^64-1",
                           FV(KEY_SEED));
        out->has_seed = 1;
    }
    if (at[KEY_STREAM] >= 0) {
        const struct job_field *f = &fields[at[KEY_STREAM]];
        if (f->value_len != 1 || (f->value[0] != '0' && f->value[0] != '1'))
            return job_bad(err, err_size, "stream", "'%s' is not 0 or 1", FV(KEY_STREAM));
        out->stream = f->value[0] == '1';
    }
    if (at[KEY_CLASS] >= 0) {
        rc = job_label_check("class", FV(KEY_CLASS), JOB_CLASS_MAX, err, err_size);
        if (rc != SPECD_OK)
            return rc;
        memcpy(out->class_label, fields[at[KEY_CLASS]].value, fields[at[KEY_CLASS]].value_len);
        out->class_label[fields[at[KEY_CLASS]].value_len] = '\0';
    }
    if (at[KEY_PRIORITY] >= 0) {
        const struct job_field *f = &fields[at[KEY_PRIORITY]];
        if (f->value_len == 4 && memcmp(f->value, "high", 4) == 0)
            out->priority = JOB_PRIORITY_HIGH;
        else if (f->value_len == 6 && memcmp(f->value, "normal", 6) == 0)
            out->priority = JOB_PRIORITY_NORMAL;
        else
            return job_bad(err, err_size, "priority", "'%s' is not high or normal",
                           FV(KEY_PRIORITY));
    }
    return SPECD_OK;
#undef FV
}

// One allocation holds the stop pointer array, the prompt copy and the stop strings.
static int job_build_storage(struct job *out, const struct job_field *prompt, const cJSON *stop,
                             size_t stop_bytes) {
    int n_stop = stop ? cJSON_GetArraySize(stop) : 0;
    size_t ptr_bytes = (size_t)n_stop * sizeof(char *);
    char *mem = malloc(ptr_bytes + prompt->value_len + 1 + stop_bytes);
    if (!mem)
        return SPECD_ERR_NOMEM;
    const char **ptrs = (const char **)(void *)mem;
    char *p = mem + ptr_bytes;
    memcpy(p, prompt->value, prompt->value_len);
    p[prompt->value_len] = '\0';
    out->prompt = p;
    out->prompt_len = prompt->value_len;
    p += prompt->value_len + 1;
    for (int i = 0; i < n_stop; i++) {
        const char *s = cJSON_GetArrayItem(stop, i)->valuestring;
        size_t len = strlen(s);
        memcpy(p, s, len + 1);
        ptrs[i] = p;
        p += len + 1;
    }
    out->stop = n_stop ? ptrs : NULL;
    out->n_stop = n_stop;
    out->storage = mem;
    return SPECD_OK;
}

int job_parse(const struct job_params *params, const struct job_field *fields, size_t n_fields,
              struct job *out, char *err, size_t err_size) {
    struct job_params def = job_default_params();
    if (!params)
        params = &def;
    if (!out || (!fields && n_fields))
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "job_parse: NULL argument");
    job_init(out, params);
    long at[KEY_COUNT];
    int rc = job_index_fields(params, fields, n_fields, at, err, err_size);
    if (rc == SPECD_OK)
        rc = job_parse_scalars(params, fields, at, out, err, err_size);
    cJSON *stop = NULL;
    size_t stop_bytes = 0;
    if (rc == SPECD_OK && at[KEY_STOP] >= 0)
        rc = job_stop_field(params, fields[at[KEY_STOP]].value, fields[at[KEY_STOP]].value_len,
                            &stop, &stop_bytes, err, err_size);
    if (rc == SPECD_OK)
        rc = job_build_storage(out, &fields[at[KEY_PROMPT]], stop, stop_bytes);
    cJSON_Delete(stop);
    if (rc == SPECD_ERR_NOMEM)
        specd_fail(err, err_size, rc, "out of memory parsing job");
    if (rc != SPECD_OK)
        job_init(out, params);
    return rc;
}

int job_find_field(const struct job_field *fields, size_t n_fields, const char *name,
                   const char **value, size_t *value_len) {
    size_t name_len = strlen(name);
    int found = 0;
    for (size_t i = 0; fields && i < n_fields; i++) {
        if (fields[i].name_len == name_len && memcmp(fields[i].name, name, name_len) == 0) {
            if (found++)
                return 0;
            *value = fields[i].value;
            *value_len = fields[i].value_len;
        }
    }
    return found == 1;
}

// ---- encoding ----------------------------------------------------------------------------------

// Shortest %g form that reads back to the same double.
static void job_format_double(double v, char *buf, size_t size) {
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static void job_push(struct job_encoded *enc, const char *name, const char *value, size_t len) {
    struct job_field *f = &enc->fields[enc->n_fields++];
    f->name = name;
    f->name_len = strlen(name);
    f->value = value;
    f->value_len = len;
}

int job_encode(const struct job *job, struct job_encoded *out) {
    if (!out)
        return SPECD_ERR_INVALID;
    memset(out, 0, sizeof *out);
    if (!job || job->n_stop < 0 || (job->n_stop > 0 && !job->stop))
        return SPECD_ERR_INVALID;
    char(*num)[32] = out->numbers;
    job_push(out, "v", "1", 1);
    job_push(out, "id", job->id, strnlen(job->id, sizeof job->id));
    job_push(out, "prompt", job->prompt ? job->prompt : "", job->prompt ? job->prompt_len : 0);
    snprintf(num[0], sizeof num[0], "%d", job->max_tokens);
    job_push(out, "max_tokens", num[0], strlen(num[0]));
    job_format_double(job->temperature, num[1], sizeof num[1]);
    job_push(out, "temperature", num[1], strlen(num[1]));
    job_format_double(job->top_p, num[2], sizeof num[2]);
    job_push(out, "top_p", num[2], strlen(num[2]));
    snprintf(num[3], sizeof num[3], "%d", job->top_k);
    job_push(out, "top_k", num[3], strlen(num[3]));
    if (job->has_seed) {
        snprintf(num[4], sizeof num[4], "%llu", (unsigned long long)job->seed);
        job_push(out, "seed", num[4], strlen(num[4]));
    }
    if (job->n_stop > 0) {
        cJSON *arr = cJSON_CreateStringArray((const char *const *)job->stop, job->n_stop);
        out->stop_json = arr ? cJSON_PrintUnformatted(arr) : NULL;
        cJSON_Delete(arr);
        if (!out->stop_json)
            return SPECD_ERR_NOMEM;
        job_push(out, "stop", out->stop_json, strlen(out->stop_json));
    }
    job_push(out, "stream", job->stream ? "1" : "0", 1);
    if (job->class_label[0])
        job_push(out, "class", job->class_label,
                 strnlen(job->class_label, sizeof job->class_label));
    if (job->priority == JOB_PRIORITY_HIGH)
        job_push(out, "priority", "high", 4);
    else
        job_push(out, "priority", "normal", 6);
    return SPECD_OK;
}

void job_encoded_clear(struct job_encoded *enc) {
    if (!enc)
        return;
    cJSON_free(enc->stop_json);
    memset(enc, 0, sizeof *enc);
}

// ---- JSON rendering of raw fields --------------------------------------------------------------

// Length of the valid UTF-8 sequence starting at s[0] (1..4), or 0 when it is not valid
// (overlong forms, surrogates and code points above U+10FFFF are invalid).
static size_t job_utf8_len(const unsigned char *s, size_t avail) {
    unsigned c = s[0];
    size_t n;
    unsigned cp, min;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0)
        n = 2, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
        n = 3, cp = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0)
        n = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (n > avail)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

static char *job_json_string(char *o, const char *s, size_t len) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    *o++ = '"';
    for (size_t i = 0; i < len;) {
        unsigned c = u[i];
        size_t n = job_utf8_len(u + i, len - i);
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c == '\n' || c == '\t' || c == '\r') {
            *o++ = '\\';
            *o++ = c == '\n' ? 'n' : c == '\t' ? 't' : 'r';
        } else if (c < 0x20 || n == 0) {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
            n = 1;
        } else {
            memcpy(o, u + i, n);
            o += n;
            i += n;
            continue;
        }
        i += n ? n : 1;
    }
    *o++ = '"';
    return o;
}

char *job_fields_to_json(const struct job_field *fields, size_t n_fields) {
    size_t cap = 3;
    for (size_t i = 0; i < n_fields; i++)
        cap += 6 * (fields[i].name_len + fields[i].value_len) + 6;
    char *out = malloc(cap), *o = out;
    if (!out)
        return NULL;
    *o++ = '{';
    for (size_t i = 0; i < n_fields; i++) {
        if (i)
            *o++ = ',';
        o = job_json_string(o, fields[i].name, fields[i].name_len);
        *o++ = ':';
        o = job_json_string(o, fields[i].value, fields[i].value_len);
    }
    *o++ = '}';
    *o = '\0';
    return out;
}
