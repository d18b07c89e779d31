#include "controller/ctlsvc_config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "controller/ctlsvc_policy_json.h"
#include "shared/status.h"

#define YAML_MAX_DEPTH 16
#define CONFIG_FILE_MAX (1 << 20)

struct ctlsvc_config ctlsvc_config_default(void) {
    struct ctlsvc_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.metrics_endpoint, sizeof c.metrics_endpoint, "tcp://*:5556");
    snprintf(c.settings_endpoint, sizeof c.settings_endpoint, "tcp://*:5557");
    c.sub_rcvhwm = 10000;
    c.pub_sndhwm = 1000;
    c.republish_ms = 2000;
    snprintf(c.http_address, sizeof c.http_address, "0.0.0.0");
    c.http_port = 9100;
    c.http_max_body = 65536;
    snprintf(c.redis_host, sizeof c.redis_host, "127.0.0.1");
    c.redis_port = 6379;
    snprintf(c.redis_prefix, sizeof c.redis_prefix, "specd:");
    snprintf(c.policy_key, sizeof c.policy_key, "controller:policy");
    c.log_level = LOG_LEVEL_INFO;
    c.log_all_decisions = true;
    c.policy = ctl_policy_default();
    return c;
}

// ---- scalar keys -----------------------------------------------------------------------------

static int parse_long(const char *key, const char *value, long lo, long hi, long *out, char *err,
                      size_t err_size) {
    char *end = NULL;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (!value[0] || *end || errno || v < lo || v > hi)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "%s: \"%s\" is not an integer in [%ld, %ld]", key, value, lo, hi);
    *out = v;
    return SPECD_OK;
}

static int set_string(const char *key, char *dst, size_t cap, const char *value, bool allow_empty,
                      char *err, size_t err_size) {
    size_t n = strlen(value);
    if (n >= cap || (!allow_empty && n == 0))
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "%s: must be %s%zu characters", key,
                          allow_empty ? "at most " : "1 to ", cap - 1);
    memcpy(dst, value, n + 1);
    return SPECD_OK;
}

// Reads a token file: its first line, surrounding whitespace removed.
static int read_token_file(const char *path, char *dst, size_t cap, char *err, size_t err_size) {
    FILE *f = fopen(path, "r");
    if (!f)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "http.token_file: cannot open %s: %s",
                          path, strerror(errno));
    char line[CTLSVC_TOKEN_CAP + 2] = "";
    bool got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    size_t n = got ? strcspn(line, "\r\n") : 0;
    line[n] = '\0';
    char *start = line;
    while (*start == ' ' || *start == '\t')
        start++;
    for (n = strlen(start); n > 0 && (start[n - 1] == ' ' || start[n - 1] == '\t'); n--)
        start[n - 1] = '\0';
    if (n == 0 || n >= cap)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "http.token_file: %s must hold a token of 1 to %zu characters", path,
                          cap - 1);
    memcpy(dst, start, n + 1);
    return SPECD_OK;
}

int ctlsvc_config_set(struct ctlsvc_config *c, const char *key, const char *value, char *err,
                      size_t err_size) {
    if (!c || !key || !value)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "config: NULL key or value");
    struct ctlsvc_config t = *c;
    long v = 0;
    int rc = SPECD_OK;
    if (strcmp(key, "metrics_endpoint") == 0)
        rc = set_string(key, t.metrics_endpoint, sizeof t.metrics_endpoint, value, false, err,
                        err_size);
    else if (strcmp(key, "settings_endpoint") == 0)
        rc = set_string(key, t.settings_endpoint, sizeof t.settings_endpoint, value, false, err,
                        err_size);
    else if (strcmp(key, "sub_rcvhwm") == 0)
        rc = parse_long(key, value, 1, INT_MAX, &v, err, err_size), t.sub_rcvhwm = (int)v;
    else if (strcmp(key, "pub_sndhwm") == 0)
        rc = parse_long(key, value, 1, INT_MAX, &v, err, err_size), t.pub_sndhwm = (int)v;
    else if (strcmp(key, "republish_ms") == 0)
        rc = parse_long(key, value, 1, 3600000, &v, err, err_size), t.republish_ms = (uint32_t)v;
    else if (strcmp(key, "http.address") == 0)
        rc = set_string(key, t.http_address, sizeof t.http_address, value, false, err, err_size);
    else if (strcmp(key, "http.port") == 0)
        rc = parse_long(key, value, 0, 65535, &v, err, err_size), t.http_port = (int)v;
    else if (strcmp(key, "http.token") == 0)
        rc = set_string(key, t.http_token, sizeof t.http_token, value, true, err, err_size);
    else if (strcmp(key, "http.token_file") == 0)
        rc = read_token_file(value, t.http_token, sizeof t.http_token, err, err_size);
    else if (strcmp(key, "http.max_body_bytes") == 0)
        rc = parse_long(key, value, 256, 16 << 20, &v, err, err_size), t.http_max_body = (size_t)v;
    else if (strcmp(key, "redis.host") == 0)
        rc = set_string(key, t.redis_host, sizeof t.redis_host, value, false, err, err_size);
    else if (strcmp(key, "redis.port") == 0)
        rc = parse_long(key, value, 1, 65535, &v, err, err_size), t.redis_port = (int)v;
    else if (strcmp(key, "redis.prefix") == 0)
        rc = set_string(key, t.redis_prefix, sizeof t.redis_prefix, value, true, err, err_size);
    else if (strcmp(key, "redis.policy_key") == 0)
        rc = set_string(key, t.policy_key, sizeof t.policy_key, value, false, err, err_size);
    else if (strcmp(key, "log.level") == 0) {
        if (log_parse_level(value, &t.log_level) != 0)
            rc = specd_fail(err, err_size, SPECD_ERR_INVALID,
                            "log.level: \"%s\" is not debug, info, warn, error or off", value);
    } else if (strcmp(key, "log.decisions") == 0) {
        if (strcmp(value, "all") == 0 || strcmp(value, "changes") == 0)
            t.log_all_decisions = strcmp(value, "all") == 0;
        else
            rc = specd_fail(err, err_size, SPECD_ERR_INVALID,
                            "log.decisions: \"%s\" is not all or changes", value);
    } else
        rc = specd_fail(err, err_size, SPECD_ERR_INVALID, "unknown config key \"%s\"", key);
    if (rc == SPECD_OK)
        *c = t;
    return rc;
}

// ---- YAML ------------------------------------------------------------------------------------

static const char *scalar_text(const yaml_node_t *n) {
    return (const char *)n->data.scalar.value;
}

// A plain YAML scalar as JSON: true/false, null, a number, else a string. Quoted: a string.
static cJSON *yaml_scalar_to_json(const yaml_node_t *n) {
    const char *s = scalar_text(n);
    if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0)
            return cJSON_CreateBool(s[0] == 't');
        if (!s[0] || strcmp(s, "~") == 0 || strcmp(s, "null") == 0)
            return cJSON_CreateNull();
        char *end = NULL;
        double x = strtod(s, &end);
        if (end != s && *end == '\0' && isfinite(x))
            return cJSON_CreateNumber(x);
    }
    return cJSON_CreateString(s);
}

static cJSON *yaml_to_json(yaml_document_t *doc, const yaml_node_t *n, int depth) {
    if (!n || depth > YAML_MAX_DEPTH)
        return NULL;
    if (n->type == YAML_SCALAR_NODE)
        return yaml_scalar_to_json(n);
    cJSON *out = n->type == YAML_MAPPING_NODE ? cJSON_CreateObject() : cJSON_CreateArray();
    if (!out)
        return NULL;
    if (n->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++) {
            cJSON *v = yaml_to_json(doc, yaml_document_get_node(doc, *it), depth + 1);
            if (!v || !cJSON_AddItemToArray(out, v)) {
                cJSON_Delete(v);
                cJSON_Delete(out);
                return NULL;
            }
        }
        return out;
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = yaml_document_get_node(doc, p->key);
        cJSON *v = yaml_to_json(doc, yaml_document_get_node(doc, p->value), depth + 1);
        if (!k || k->type != YAML_SCALAR_NODE || !v ||
            !cJSON_AddItemToObject(out, scalar_text(k), v)) {
            cJSON_Delete(v);
            cJSON_Delete(out);
            return NULL;
        }
    }
    return out;
}

static int apply_policy_node(struct ctlsvc_config *c, yaml_document_t *doc, const yaml_node_t *n,
                             char *err, size_t err_size) {
    cJSON *json = yaml_to_json(doc, n, 0);
    if (!json)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                          "policy (line %zu): keys must be scalars, nesting at most %d deep",
                          n->start_mark.line + 1, YAML_MAX_DEPTH);
    char field[96], reason[256];
    int rc = ctlsvc_policy_from_cjson(json, &c->policy, field, sizeof field, reason, sizeof reason);
    cJSON_Delete(json);
    if (rc != SPECD_OK)
        return specd_fail(err, err_size, rc, "policy.%s (line %zu): %s", field,
                          n->start_mark.line + 1, reason);
    return SPECD_OK;
}

static int apply_mapping(struct ctlsvc_config *c, yaml_document_t *doc, const yaml_node_t *map,
                         const char *prefix, int depth, char *err, size_t err_size) {
    if (map->type != YAML_MAPPING_NODE || depth > 4)
        return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s (line %zu): expected a mapping",
                          prefix[0] ? prefix : "config", map->start_mark.line + 1);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = yaml_document_get_node(doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(doc, p->value);
        if (!k || !v || k->type != YAML_SCALAR_NODE)
            return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s: keys must be scalars",
                              prefix[0] ? prefix : "config");
        char key[160];
        snprintf(key, sizeof key, "%s%s", prefix, scalar_text(k));
        int rc;
        if (depth == 0 && strcmp(key, "policy") == 0) {
            rc = apply_policy_node(c, doc, v, err, err_size);
        } else if (v->type == YAML_MAPPING_NODE) {
            char sub[168];
            snprintf(sub, sizeof sub, "%s.", key);
            rc = apply_mapping(c, doc, v, sub, depth + 1, err, err_size);
        } else if (v->type == YAML_SCALAR_NODE) {
            char why[384];
            rc = ctlsvc_config_set(c, key, scalar_text(v), why, sizeof why);
            if (rc != SPECD_OK)
                specd_fail(err, err_size, rc, "%s (line %zu)", why, k->start_mark.line + 1);
        } else {
            rc = specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s (line %zu): expected a scalar",
                            key, v->start_mark.line + 1);
        }
        if (rc != SPECD_OK)
            return rc;
    }
    return SPECD_OK;
}

int ctlsvc_config_apply_yaml(struct ctlsvc_config *c, const char *text, size_t len, char *err,
                             size_t err_size) {
    if (!c || (!text && len))
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "config: NULL argument");
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "config: out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)(text ? text : ""), len);
    if (!yaml_parser_load(&parser, &doc)) {
        int rc =
            specd_fail(err, err_size, SPECD_ERR_FORMAT, "YAML error at line %zu: %s",
                       parser.problem_mark.line + 1, parser.problem ? parser.problem : "unknown");
        yaml_parser_delete(&parser);
        return rc;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    int rc = root ? apply_mapping(c, &doc, root, "", 0, err, err_size) : SPECD_OK; // empty: ok
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

int ctlsvc_config_load_file(struct ctlsvc_config *c, const char *path, char *err, size_t err_size) {
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f)
        return specd_fail(err, err_size, SPECD_ERR_IO, "cannot open config %s: %s",
                          path ? path : "(null)", strerror(errno));
    char *buf = malloc(CONFIG_FILE_MAX);
    size_t n = buf ? fread(buf, 1, CONFIG_FILE_MAX, f) : 0;
    bool too_big = buf && n == CONFIG_FILE_MAX;
    bool failed = ferror(f);
    fclose(f);
    int rc;
    if (!buf)
        rc = specd_fail(err, err_size, SPECD_ERR_NOMEM, "config: out of memory");
    else if (failed || too_big)
        rc = specd_fail(err, err_size, SPECD_ERR_IO, "cannot read config %s%s", path,
                        too_big ? ": larger than 1 MiB" : "");
    else {
        char why[448];
        rc = ctlsvc_config_apply_yaml(c, buf, n, why, sizeof why);
        if (rc != SPECD_OK)
            specd_fail(err, err_size, rc, "%s: %s", path, why);
    }
    free(buf);
    return rc;
}

int ctlsvc_config_validate(const struct ctlsvc_config *c, char *err, size_t err_size) {
    if (!c)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "config: NULL");
    if (!c->metrics_endpoint[0] || !c->settings_endpoint[0])
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "endpoints must not be empty");
    if (strcmp(c->metrics_endpoint, c->settings_endpoint) == 0 &&
        !strstr(c->metrics_endpoint, ":*")) // wildcard ports get different ports
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "metrics_endpoint and settings_endpoint must differ");
    if (c->http_port < 0 || c->http_port > 65535 || c->redis_port < 1 || c->redis_port > 65535)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "ports must be in [0, 65535]");
    if (c->republish_ms == 0 || c->sub_rcvhwm < 1 || c->pub_sndhwm < 1)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "republish_ms, sub_rcvhwm and pub_sndhwm must be > 0");
    char why[256];
    if (ctl_policy_validate(&c->policy, why, sizeof why) != SPECD_OK)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "policy: %s", why);
    return SPECD_OK;
}

// ---- command line ----------------------------------------------------------------------------

static const struct {
    const char *option, *key;
} option_keys[] = {
    {"--metrics-endpoint", "metrics_endpoint"},
    {"--settings-endpoint", "settings_endpoint"},
    {"--http-address", "http.address"},
    {"--http-port", "http.port"},
    {"--token", "http.token"},
    {"--token-file", "http.token_file"},
    {"--redis-host", "redis.host"},
    {"--redis-port", "redis.port"},
    {"--redis-prefix", "redis.prefix"},
    {"--republish-ms", "republish_ms"},
    {"--log-level", "log.level"},
};
#define N_OPTION_KEYS (sizeof option_keys / sizeof option_keys[0])

const char *ctlsvc_config_usage(void) {
    return "usage: specd-controller [--config FILE] [options]\n"
           "  --config FILE            YAML config (config/controller.example.yaml)\n"
           "  --set KEY=VALUE          any scalar config key, e.g. --set http.port=9100\n"
           "  --metrics-endpoint E     ZeroMQ SUB bind for worker metrics (tcp://*:5556)\n"
           "  --settings-endpoint E    ZeroMQ PUB bind for settings (tcp://*:5557)\n"
           "  --http-address A         HTTP listen address (0.0.0.0)\n"
           "  --http-port N            HTTP port (9100)\n"
           "  --token T | --token-file F   bearer token for PUT /v1/policy\n"
           "                           (also $SPECD_CONTROLLER_TOKEN)\n"
           "  --redis-host H --redis-port N --redis-prefix P   policy store (127.0.0.1:6379)\n"
           "  --republish-ms N         re-send every worker's settings this often (2000)\n"
           "  --log-level L            debug, info, warn, error, off (info)\n"
           "  --check-config           validate the configuration, print the policy, exit\n"
           "Signals: SIGHUP reloads the config file (endpoints and Redis excepted);\n"
           "SIGTERM/SIGINT stop the controller (exit 0). docs/controller.md has the details.\n";
}

static int add_override(struct ctlsvc_args *a, const char *key, const char *value, char *err,
                        size_t err_size) {
    if (a->n_overrides >= CTLSVC_MAX_OVERRIDE_ARGS)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "too many overrides (max %d)",
                          CTLSVC_MAX_OVERRIDE_ARGS);
    a->keys[a->n_overrides] = key;
    a->values[a->n_overrides] = value;
    a->n_overrides++;
    return SPECD_OK;
}

// "--name value" or "--name=value". Returns the value or NULL (missing).
static const char *option_value(int argc, char **argv, int *i, const char *name) {
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) == 0 && argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (strcmp(argv[*i], name) != 0)
        return NULL;
    return *i + 1 < argc ? argv[++*i] : NULL;
}

static bool option_matches(const char *arg, const char *name) {
    size_t n = strlen(name);
    return strncmp(arg, name, n) == 0 && (arg[n] == '\0' || arg[n] == '=');
}

static int parse_set(struct ctlsvc_args *a, const char *kv, char *err, size_t err_size) {
    const char *eq = strchr(kv, '=');
    size_t idx = a->n_overrides;
    if (!eq || eq == kv || (size_t)(eq - kv) >= sizeof a->storage[0] ||
        idx >= CTLSVC_MAX_OVERRIDE_ARGS)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "--set wants KEY=VALUE, got \"%s\"",
                          kv);
    snprintf(a->storage[idx], sizeof a->storage[idx], "%.*s", (int)(eq - kv), kv);
    return add_override(a, a->storage[idx], eq + 1, err, err_size);
}

int ctlsvc_config_parse_args(int argc, char **argv, struct ctlsvc_args *a, char *err,
                             size_t err_size) {
    if (!a || (argc > 0 && !argv))
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "args: NULL");
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int rc = SPECD_OK;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            a->help = true;
            continue;
        }
        if (strcmp(arg, "--check-config") == 0) {
            a->check_only = true;
            continue;
        }
        const char *name = NULL, *key = NULL;
        if (option_matches(arg, "--config") || option_matches(arg, "--set"))
            name = option_matches(arg, "--config") ? "--config" : "--set";
        for (size_t k = 0; !name && k < N_OPTION_KEYS; k++)
            if (option_matches(arg, option_keys[k].option))
                name = option_keys[k].option, key = option_keys[k].key;
        if (!name)
            return specd_fail(err, err_size, SPECD_ERR_INVALID,
                              "unknown option \"%s\" (try --help)", arg);
        const char *value = option_value(argc, argv, &i, name);
        if (!value)
            return specd_fail(err, err_size, SPECD_ERR_INVALID, "%s needs a value", name);
        if (strcmp(name, "--config") == 0)
            a->config_path = value;
        else if (strcmp(name, "--set") == 0)
            rc = parse_set(a, value, err, err_size);
        else
            rc = add_override(a, key, value, err, err_size);
        if (rc != SPECD_OK)
            return rc;
    }
    return SPECD_OK;
}

int ctlsvc_config_build(const struct ctlsvc_args *a, struct ctlsvc_config *out, char *err,
                        size_t err_size) {
    if (!a || !out)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "config: NULL argument");
    struct ctlsvc_config c = ctlsvc_config_default();
    int rc = SPECD_OK;
    if (a->config_path)
        rc = ctlsvc_config_load_file(&c, a->config_path, err, err_size);
    const char *env = getenv("SPECD_CONTROLLER_TOKEN");
    if (rc == SPECD_OK && env && env[0])
        rc = ctlsvc_config_set(&c, "http.token", env, err, err_size);
    for (size_t i = 0; rc == SPECD_OK && i < a->n_overrides; i++)
        rc = ctlsvc_config_set(&c, a->keys[i], a->values[i], err, err_size);
    if (rc == SPECD_OK)
        rc = ctlsvc_config_validate(&c, err, err_size);
    if (rc == SPECD_OK)
        *out = c;
    return rc;
}
