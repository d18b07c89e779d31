#include "controller/ctl_policy.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "shared/status.h"

struct ctl_policy ctl_policy_default(void) {
    struct ctl_policy p;
    memset(&p, 0, sizeof p);
    p.mode = CTL_MODE_GOODPUT;
    p.target_acceptance = 0.7;
    p.low_threshold = 0.5;
    p.critical_threshold = 0.2;
    p.min_depth = 1;
    p.max_depth = 8;
    p.static_depth = 4;
    p.interval_ms = 1000;
    p.half_life_ms = 5000;
    p.cost_half_life_ms = 60000;
    p.min_drafted = 64.0;
    p.hysteresis_margin = 0.03;
    p.hold_intervals = 2;
    p.probe_interval_ms = 10000;
    p.probe_duration_ms = 1000;
    p.probe_depth = 2;
    p.worker_timeout_ms = 30000;
    p.settings_ttl_ms = 10000;
    p.max_workers = 4096;
    return p;
}

bool ctl_name_is_valid(const char *name, size_t max_len) {
    if (!name || max_len == 0)
        return false;
    size_t n = strnlen(name, max_len);
    if (n == 0 || n >= max_len)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= ' ' || c >= 0x7f || c == '=' || c == '"' || c == '\\')
            return false;
    }
    return true;
}

static bool mode_is_valid(enum ctl_mode m) {
    return m == CTL_MODE_GOODPUT || m == CTL_MODE_THRESHOLD || m == CTL_MODE_STATIC;
}

// Depth fields shared by the global policy and the overrides. `what` prefixes the messages.
static int validate_depths(const char *what, enum ctl_mode mode, uint32_t min_depth,
                           uint32_t max_depth, uint32_t static_depth, char *reason,
                           size_t reason_size) {
    if (!mode_is_valid(mode))
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID,
                          "%smode must be goodput, threshold or static", what);
    if (max_depth > SPEC_MAX_DEPTH)
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID, "%smax_depth must be <= %d", what,
                          SPEC_MAX_DEPTH);
    if (min_depth > max_depth)
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID,
                          "%smin_depth must be <= max_depth", what);
    if (static_depth > max_depth)
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID,
                          "%sstatic_depth must be <= max_depth", what);
    if (static_depth != 0 && static_depth < min_depth)
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID,
                          "%sstatic_depth must be 0 or >= min_depth", what);
    return SPECD_OK;
}

static int validate_thresholds(const struct ctl_policy *p, char *reason, size_t reason_size) {
    if (!(p->critical_threshold > 0.0))
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID, "critical_threshold must be > 0");
    if (!(p->critical_threshold < p->low_threshold))
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID,
                          "critical_threshold must be < low_threshold");
    if (!(p->low_threshold < p->target_acceptance))
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID,
                          "low_threshold must be < target_acceptance");
    if (!(p->target_acceptance < 1.0))
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID, "target_acceptance must be < 1");
    return SPECD_OK;
}

static int validate_timing(const struct ctl_policy *p, char *reason, size_t reason_size) {
    if (p->interval_ms == 0)
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID, "interval_ms must be > 0");
    if (p->half_life_ms == 0)
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID, "half_life_ms must be > 0");
    if (p->cost_half_life_ms == 0)
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID, "cost_half_life_ms must be > 0");
    if (!(p->min_drafted >= 1.0) || !isfinite(p->min_drafted))
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID, "min_drafted must be >= 1");
    if (!(p->hysteresis_margin >= 0.0 && p->hysteresis_margin < 1.0))
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID,
                          "hysteresis_margin must be in [0, 1)");
    if (p->hold_intervals == 0)
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID, "hold_intervals must be >= 1");
    if (p->probe_depth == 0 || p->probe_depth > SPEC_MAX_DEPTH)
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID, "probe_depth must be in [1, %d]",
                          SPEC_MAX_DEPTH);
    if (p->probe_duration_ms < p->interval_ms)
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID,
                          "probe_duration_ms must be >= interval_ms (probes end on a tick)");
    if (p->probe_interval_ms <= p->probe_duration_ms)
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID,
                          "probe_interval_ms must be > probe_duration_ms");
    if (p->worker_timeout_ms <= p->interval_ms)
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID,
                          "worker_timeout_ms must be > interval_ms");
    if (p->settings_ttl_ms != 0 && p->settings_ttl_ms <= p->interval_ms)
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID,
                          "settings_ttl_ms must be 0 or > interval_ms");
    if (p->max_workers == 0)
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID, "max_workers must be >= 1");
    return SPECD_OK;
}

static int validate_overrides(const struct ctl_policy *p, char *reason, size_t reason_size) {
    if (p->n_overrides > CTL_MAX_OVERRIDES)
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID, "n_overrides must be <= %d",
                          CTL_MAX_OVERRIDES);
    for (uint32_t i = 0; i < p->n_overrides; i++) {
        const struct ctl_class_override *o = &p->overrides[i];
        if (!ctl_name_is_valid(o->name, sizeof o->name))
            return specd_fail(reason, reason_size, SPECD_ERR_INVALID,
                              "overrides[%u].name must be 1-%zu printable characters without "
                              "space, '=', '\"' or backslash",
                              i, sizeof o->name - 1);
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(p->overrides[j].name, o->name) == 0)
                return specd_fail(reason, reason_size, SPECD_ERR_INVALID,
                                  "overrides[%u].name duplicates class \"%s\"", i, o->name);
        char what[48];
        snprintf(what, sizeof what, "overrides[%u] (%s): ", i, o->name);
        int rc = validate_depths(what, o->mode, o->min_depth, o->max_depth, o->static_depth, reason,
                                 reason_size);
        if (rc != SPECD_OK)
            return rc;
    }
    return SPECD_OK;
}

int ctl_policy_validate(const struct ctl_policy *p, char *reason, size_t reason_size) {
    if (!p)
        return specd_fail(reason, reason_size, SPECD_ERR_INVALID, "policy is NULL");
    int rc = validate_depths("", p->mode, p->min_depth, p->max_depth, p->static_depth, reason,
                             reason_size);
    if (rc == SPECD_OK)
        rc = validate_thresholds(p, reason, reason_size);
    if (rc == SPECD_OK)
        rc = validate_timing(p, reason, reason_size);
    if (rc == SPECD_OK)
        rc = validate_overrides(p, reason, reason_size);
    if (rc == SPECD_OK && reason && reason_size > 0)
        reason[0] = '\0';
    return rc;
}

struct ctl_class_override *ctl_policy_add_override(struct ctl_policy *p, const char *name) {
    if (!p || p->n_overrides >= CTL_MAX_OVERRIDES ||
        !ctl_name_is_valid(name, SPEC_CLASS_NAME_LEN) || ctl_policy_find_override(p, name))
        return NULL;
    struct ctl_class_override *o = &p->overrides[p->n_overrides++];
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "%s", name);
    o->mode = p->mode;
    o->min_depth = p->min_depth;
    o->max_depth = p->max_depth;
    o->static_depth = p->static_depth;
    return o;
}

const struct ctl_class_override *ctl_policy_find_override(const struct ctl_policy *p,
                                                          const char *class_name) {
    if (!p || !class_name)
        return NULL;
    uint32_t n = p->n_overrides < CTL_MAX_OVERRIDES ? p->n_overrides : CTL_MAX_OVERRIDES;
    for (uint32_t i = 0; i < n; i++)
        if (strncmp(p->overrides[i].name, class_name, SPEC_CLASS_NAME_LEN) == 0)
            return &p->overrides[i];
    return NULL;
}

const char *ctl_mode_name(enum ctl_mode mode) {
    switch (mode) {
    case CTL_MODE_GOODPUT:
        return "goodput";
    case CTL_MODE_THRESHOLD:
        return "threshold";
    case CTL_MODE_STATIC:
        return "static";
    }
    return "unknown";
}

int ctl_mode_parse(const char *name, enum ctl_mode *out) {
    static const enum ctl_mode modes[] = {CTL_MODE_GOODPUT, CTL_MODE_THRESHOLD, CTL_MODE_STATIC};
    if (!name || !out)
        return SPECD_ERR_INVALID;
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (strcmp(name, ctl_mode_name(modes[i])) == 0) {
            *out = modes[i];
            return SPECD_OK;
        }
    return SPECD_ERR_INVALID;
}
