#include "controller/ctlsvc_policy_json.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/status.h"

enum pj_kind { PJ_MODE, PJ_U32, PJ_DOUBLE };

struct pj_field {
    const char *name;
    enum pj_kind kind;
    size_t offset;
};

#define PF(name, kind)                                                                             \
    { #name, kind, offsetof(struct ctl_policy, name) }
static const struct pj_field policy_fields[] = {
    PF(mode, PJ_MODE),
    PF(target_acceptance, PJ_DOUBLE),
    PF(low_threshold, PJ_DOUBLE),
    PF(critical_threshold, PJ_DOUBLE),
    PF(min_depth, PJ_U32),
    PF(max_depth, PJ_U32),
    PF(static_depth, PJ_U32),
    PF(interval_ms, PJ_U32),
    PF(half_life_ms, PJ_U32),
    PF(cost_half_life_ms, PJ_U32),
    PF(min_drafted, PJ_DOUBLE),
    PF(hysteresis_margin, PJ_DOUBLE),
    PF(hold_intervals, PJ_U32),
    PF(probe_interval_ms, PJ_U32),
    PF(probe_duration_ms, PJ_U32),
    PF(probe_depth, PJ_U32),
    PF(worker_timeout_ms, PJ_U32),
    PF(settings_ttl_ms, PJ_U32),
    PF(max_workers, PJ_U32),
};
#undef PF
#define N_POLICY_FIELDS (sizeof policy_fields / sizeof policy_fields[0])

#define OF(name, kind)                                                                             \
    { #name, kind, offsetof(struct ctl_class_override, name) }
static const struct pj_field override_fields[] = {
    OF(mode, PJ_MODE),
    OF(min_depth, PJ_U32),
    OF(max_depth, PJ_U32),
    OF(static_depth, PJ_U32),
};
#undef OF
#define N_OVERRIDE_FIELDS (sizeof override_fields / sizeof override_fields[0])

// Error reporting: both outputs optional.
struct pj_err {
    char *field;
    size_t field_size;
    char *reason;
    size_t reason_size;
};

static int pj_fail(const struct pj_err *e, int status, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int pj_fail(const struct pj_err *e, int status, const char *field, const char *fmt, ...) {
    if (e->field && e->field_size > 0)
        snprintf(e->field, e->field_size, "%s", field);
    if (e->reason && e->reason_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->reason, e->reason_size, fmt, ap);
        va_end(ap);
    }
    return status;
}

static const struct pj_field *find_field(const struct pj_field *table, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    return NULL;
}

// Reads one member into base + f->offset. `path` is the member's full name for messages.
static int read_member(const struct pj_field *f, const cJSON *v, void *base, const char *path,
                       const struct pj_err *e) {
    char *dst = (char *)base + f->offset;
    if (f->kind == PJ_MODE) {
        enum ctl_mode m;
        if (!cJSON_IsString(v) || ctl_mode_parse(v->valuestring, &m) != SPECD_OK)
            return pj_fail(e, cJSON_IsString(v) ? SPECD_ERR_INVALID : SPECD_ERR_FORMAT, path,
                           "%s must be \"goodput\", \"threshold\" or \"static\"", path);
        memcpy(dst, &m, sizeof m);
        return SPECD_OK;
    }
    if (!cJSON_IsNumber(v))
        return pj_fail(e, SPECD_ERR_FORMAT, path, "%s must be a number", path);
    double x = v->valuedouble;
    if (!isfinite(x))
        return pj_fail(e, SPECD_ERR_INVALID, path, "%s must be finite", path);
    if (f->kind == PJ_DOUBLE) {
        memcpy(dst, &x, sizeof x);
        return SPECD_OK;
    }
    if (x != floor(x) || x < 0.0 || x > (double)UINT32_MAX)
        return pj_fail(e, SPECD_ERR_INVALID, path, "%s must be an integer in [0, %u]", path,
                       UINT32_MAX);
    uint32_t u = (uint32_t)x;
    memcpy(dst, &u, sizeof u);
    return SPECD_OK;
}

// Checks that no member name repeats (cJSON keeps duplicates; the later one would be ignored).
static int check_duplicates(const cJSON *obj, const char *prefix, const struct pj_err *e) {
    for (const cJSON *a = obj->child; a; a = a->next)
        for (const cJSON *b = obj->child; b != a; b = b->next)
            if (strcmp(a->string, b->string) == 0) {
                char path[96];
                snprintf(path, sizeof path, "%s%.60s", prefix, a->string);
                return pj_fail(e, SPECD_ERR_FORMAT, path, "%s is given twice", path);
            }
    return SPECD_OK;
}

// Depths the document left out are fitted into the bounds it set, so that a patch such as
// {"max_depth": 3} does not fail on an untouched static_depth of 4: min_depth is lowered to
// max_depth, a non-zero static_depth is clamped into [max(min_depth, 1), max_depth].
static void fit_depths(const cJSON *obj, uint32_t *min_depth, uint32_t max_depth,
                       uint32_t *static_depth) {
    if (!cJSON_GetObjectItemCaseSensitive(obj, "min_depth") && *min_depth > max_depth)
        *min_depth = max_depth;
    if (!cJSON_GetObjectItemCaseSensitive(obj, "static_depth") && *static_depth != 0) {
        uint32_t lo = *min_depth > 1 ? *min_depth : 1;
        if (*static_depth > max_depth)
            *static_depth = max_depth;
        if (*static_depth < lo && lo <= max_depth)
            *static_depth = lo;
    }
}

static int read_override(const cJSON *o, unsigned index, struct ctl_policy *p,
                         const struct pj_err *e) {
    char prefix[32], path[96];
    snprintf(prefix, sizeof prefix, "overrides[%u].", index);
    snprintf(path, sizeof path, "overrides[%u]", index);
    if (!cJSON_IsObject(o))
        return pj_fail(e, SPECD_ERR_FORMAT, path, "%s must be an object", path);
    int rc = check_duplicates(o, prefix, e);
    if (rc != SPECD_OK)
        return rc;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    snprintf(path, sizeof path, "%sname", prefix);
    if (!cJSON_IsString(name))
        return pj_fail(e, SPECD_ERR_FORMAT, path, "%s must be a string (the class name)", path);
    if (!ctl_name_is_valid(name->valuestring, SPEC_CLASS_NAME_LEN))
        return pj_fail(e, SPECD_ERR_INVALID, path,
                       "%s must be 1-%d printable characters without space, '=', '\"' or "
                       "backslash",
                       path, SPEC_CLASS_NAME_LEN - 1);
    if (ctl_policy_find_override(p, name->valuestring))
        return pj_fail(e, SPECD_ERR_INVALID, path, "%s duplicates class \"%s\"", path,
                       name->valuestring);
    struct ctl_class_override *dst = ctl_policy_add_override(p, name->valuestring);
    if (!dst)
        return pj_fail(e, SPECD_ERR_INVALID, "overrides", "overrides must have at most %d entries",
                       CTL_MAX_OVERRIDES);
    for (const cJSON *m = o->child; m; m = m->next) {
        if (strcmp(m->string, "name") == 0)
            continue;
        snprintf(path, sizeof path, "%s%.60s", prefix, m->string);
        const struct pj_field *f = find_field(override_fields, N_OVERRIDE_FIELDS, m->string);
        if (!f)
            return pj_fail(e, SPECD_ERR_FORMAT, path, "%s is not a known field", path);
        rc = read_member(f, m, dst, path, e);
        if (rc != SPECD_OK)
            return rc;
    }
    fit_depths(o, &dst->min_depth, dst->max_depth, &dst->static_depth);
    return SPECD_OK;
}

static int read_overrides(const cJSON *arr, struct ctl_policy *p, const struct pj_err *e) {
    if (!cJSON_IsArray(arr))
        return pj_fail(e, SPECD_ERR_FORMAT, "overrides", "overrides must be an array");
    if (cJSON_GetArraySize(arr) > CTL_MAX_OVERRIDES)
        return pj_fail(e, SPECD_ERR_INVALID, "overrides", "overrides must have at most %d entries",
                       CTL_MAX_OVERRIDES);
    p->n_overrides = 0;
    memset(p->overrides, 0, sizeof p->overrides);
    unsigned i = 0;
    for (const cJSON *o = arr->child; o; o = o->next, i++) {
        int rc = read_override(o, i, p, e);
        if (rc != SPECD_OK)
            return rc;
    }
    return SPECD_OK;
}

// ctl_policy_validate() reasons start with the field name ("low_threshold must be ...") or, for
// an override, "overrides[i] (name): field must ..." / "overrides[i].name must ...".
static void field_from_reason(const char *reason, char *field, size_t size) {
    if (!field || size == 0)
        return;
    size_t n = strcspn(reason, " ");
    const char *colon = strstr(reason, "): ");
    if (strncmp(reason, "overrides[", 10) == 0 && reason[n - 1] == ']' && colon) {
        const char *sub = colon + 3;
        snprintf(field, size, "%.*s.%.*s", (int)n, reason, (int)strcspn(sub, " "), sub);
    } else {
        snprintf(field, size, "%.*s", (int)n, reason);
    }
}

int ctlsvc_policy_from_cjson(const cJSON *json, struct ctl_policy *policy, char *field,
                             size_t field_size, char *reason, size_t reason_size) {
    const struct pj_err e = {field, field_size, reason, reason_size};
    if (!policy)
        return pj_fail(&e, SPECD_ERR_INVALID, "", "no policy");
    if (!cJSON_IsObject(json))
        return pj_fail(&e, SPECD_ERR_FORMAT, "", "the policy must be a JSON object");
    int rc = check_duplicates(json, "", &e);
    if (rc != SPECD_OK)
        return rc;
    struct ctl_policy p = *policy;
    const cJSON *overrides = NULL;
    for (const cJSON *m = json->child; m; m = m->next) {
        if (strcmp(m->string, "overrides") == 0) {
            overrides = m;
            continue;
        }
        const struct pj_field *f = find_field(policy_fields, N_POLICY_FIELDS, m->string);
        char path[72];
        snprintf(path, sizeof path, "%.64s", m->string);
        if (!f)
            return pj_fail(&e, SPECD_ERR_FORMAT, path, "%s is not a known field", path);
        rc = read_member(f, m, &p, path, &e);
        if (rc != SPECD_OK)
            return rc;
    }
    fit_depths(json, &p.min_depth, p.max_depth, &p.static_depth);
    if (overrides && (rc = read_overrides(overrides, &p, &e)) != SPECD_OK)
        return rc;
    char why[256];
    if (ctl_policy_validate(&p, why, sizeof why) != SPECD_OK) {
        char name[96];
        field_from_reason(why, name, sizeof name);
        return pj_fail(&e, SPECD_ERR_INVALID, name, "%s", why);
    }
    *policy = p;
    if (field && field_size > 0)
        field[0] = '\0';
    if (reason && reason_size > 0)
        reason[0] = '\0';
    return SPECD_OK;
}

int ctlsvc_policy_from_json(const char *text, size_t len, struct ctl_policy *policy, char *field,
                            size_t field_size, char *reason, size_t reason_size) {
    const struct pj_err e = {field, field_size, reason, reason_size};
    if (!text)
        return pj_fail(&e, SPECD_ERR_INVALID, "", "no policy text");
    const char *end = NULL;
    cJSON *json = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!json) {
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        return pj_fail(&e, SPECD_ERR_FORMAT, "", "the body is not valid JSON (near byte %zu)", at);
    }
    for (const char *c = end; c && c < text + len; c++)
        if (*c != ' ' && *c != '\t' && *c != '\r' && *c != '\n' && *c != '\0') {
            cJSON_Delete(json);
            return pj_fail(&e, SPECD_ERR_FORMAT, "", "trailing bytes after the JSON object");
        }
    int rc = ctlsvc_policy_from_cjson(json, policy, field, field_size, reason, reason_size);
    cJSON_Delete(json);
    return rc;
}

static bool add_member(cJSON *obj, const struct pj_field *f, const void *base) {
    const char *src = (const char *)base + f->offset;
    if (f->kind == PJ_MODE) {
        enum ctl_mode m;
        memcpy(&m, src, sizeof m);
        return cJSON_AddStringToObject(obj, f->name, ctl_mode_name(m)) != NULL;
    }
    double x;
    if (f->kind == PJ_DOUBLE) {
        memcpy(&x, src, sizeof x);
    } else {
        uint32_t u;
        memcpy(&u, src, sizeof u);
        x = (double)u;
    }
    return cJSON_AddNumberToObject(obj, f->name, x) != NULL;
}

cJSON *ctlsvc_policy_to_cjson(const struct ctl_policy *policy) {
    if (!policy)
        return NULL;
    cJSON *obj = cJSON_CreateObject();
    bool ok = obj != NULL;
    for (size_t i = 0; ok && i < N_POLICY_FIELDS; i++)
        ok = add_member(obj, &policy_fields[i], policy);
    cJSON *arr = ok ? cJSON_AddArrayToObject(obj, "overrides") : NULL;
    ok = arr != NULL;
    uint32_t n = policy->n_overrides < CTL_MAX_OVERRIDES ? policy->n_overrides : CTL_MAX_OVERRIDES;
    for (uint32_t i = 0; ok && i < n; i++) {
        const struct ctl_class_override *o = &policy->overrides[i];
        cJSON *item = cJSON_CreateObject();
        ok = item && cJSON_AddItemToArray(arr, item) &&
             cJSON_AddStringToObject(item, "name", o->name) != NULL;
        for (size_t j = 0; ok && j < N_OVERRIDE_FIELDS; j++)
            ok = add_member(item, &override_fields[j], o);
    }
    if (!ok) {
        cJSON_Delete(obj);
        return NULL;
    }
    return obj;
}

char *ctlsvc_policy_to_json(const struct ctl_policy *policy) {
    cJSON *obj = ctlsvc_policy_to_cjson(policy);
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    return text;
}
