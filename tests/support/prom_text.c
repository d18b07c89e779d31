// An independent checker for the Prometheus text exposition format (version 0.0.4), for tests.
#include "tests/support/prom_text.h"

#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool metric_name_ok(const char *s, size_t n) {
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
            return false;
    return true;
}

static bool value_ok(const char *v) {
    if (strcmp(v, "NaN") == 0 || strcmp(v, "+Inf") == 0 || strcmp(v, "-Inf") == 0)
        return true;
    char *end = NULL;
    strtod(v, &end);
    return end != v && *end == '\0';
}

// `{a="x",b="y\"z"}`: returns the length consumed, or 0 when malformed.
static size_t labels_len(const char *s) {
    size_t i = 1;
    if (s[0] != '{')
        return 0;
    if (s[1] == '}')
        return 2;
    for (;;) {
        size_t start = i;
        while (isalnum((unsigned char)s[i]) || s[i] == '_')
            i++;
        if (i == start || isdigit((unsigned char)s[start]) || s[i] != '=' || s[i + 1] != '"')
            return 0;
        for (i += 2; s[i] != '"'; i++) {
            if (!s[i] || s[i] == '\n')
                return 0;
            if (s[i] == '\\') {
                if (s[i + 1] != '\\' && s[i + 1] != '"' && s[i + 1] != 'n')
                    return 0;
                i++;
            }
        }
        i++;
        if (s[i] == '}')
            return i + 1;
        if (s[i] != ',')
            return 0;
        i++;
    }
}

// Every line is "# HELP name text", "# TYPE name counter|gauge|..." or "name{labels} value";
// samples follow their family's TYPE line and a family's samples are contiguous. Returns 0, or
// the 1-based number of the first bad line.
int prom_text_check(const char *text) {
    char family[128] = "", seen[8192] = " ";
    int lineno = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        if (!nl)
            return lineno + 1; // the format ends every line with \n
        char line[2048];
        size_t n = (size_t)(nl - p);
        lineno++;
        if (n >= sizeof line)
            return lineno;
        memcpy(line, p, n);
        line[n] = '\0';
        p = nl + 1;
        if (strncmp(line, "# HELP ", 7) == 0)
            continue;
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128], type[32];
            if (sscanf(line + 7, "%127s %31s", name, type) != 2 ||
                !metric_name_ok(name, strlen(name)) ||
                (strcmp(type, "counter") && strcmp(type, "gauge") && strcmp(type, "histogram") &&
                 strcmp(type, "summary") && strcmp(type, "untyped")))
                return lineno;
            char key[132];
            snprintf(key, sizeof key, " %s ", name);
            if (strstr(seen, key)) // a family twice
                return lineno;
            if (strlen(seen) + strlen(key) < sizeof seen)
                strcat(seen, key + 1);
            snprintf(family, sizeof family, "%s", name);
            continue;
        }
        if (line[0] == '#')
            return lineno;
        size_t name_len = strcspn(line, "{ ");
        if (!metric_name_ok(line, name_len) || name_len != strlen(family) ||
            strncmp(line, family, name_len) != 0)
            return lineno;
        size_t at = name_len;
        if (line[at] == '{') {
            size_t l = labels_len(line + at);
            if (!l)
                return lineno;
            at += l;
        }
        if (line[at] != ' ' || !value_ok(line + at + 1))
            return lineno;
    }
    return 0;
}

// Value of the sample `series` (name with labels exactly as rendered), NAN when absent.
double prom_text_value(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strncmp(p + n + 1, "NaN", 3) == 0 ? NAN : strtod(p + n + 1, NULL);
    return NAN;
}
