// Worker configuration: the key table, defaults, command line, validation and usage text.
// The YAML file reader is worker_config_yaml.c.
#include "worker/service/worker_config.h"

#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shared/log.h"
#include "shared/spec_metrics.h"
#include "shared/status.h"

enum key_type { KEY_STR, KEY_INT, KEY_BOOL };

struct config_key {
    const char *name; // YAML key; the flag is the same with '-' for '_'
    enum key_type type;
    size_t offset;
    size_t size; // KEY_STR: buffer size
    long lo, hi; // KEY_INT: allowed range
    const char *meta;
    const char *help;
};

#define STR(field, meta, help)                                                                     \
    {                                                                                              \
#field, KEY_STR, offsetof(struct worker_config, field),                                    \
            sizeof(((struct worker_config *)0)->field), 0, 0, meta, help                           \
    }
#define INT(field, lo, hi, meta, help)                                                             \
    { #field, KEY_INT, offsetof(struct worker_config, field), sizeof(int), lo, hi, meta, help }
#define BOOL(field, help)                                                                          \
    { #field, KEY_BOOL, offsetof(struct worker_config, field), 1, 0, 1, "", help }

static const struct config_key keys[] = {
    STR(worker_id, "ID", "worker id: topics, Redis consumer name (\"\": <hostname>-<pid>)"),
    STR(log_level, "LEVEL", "debug, info, warn, error or off"),
    STR(model, "FILE", "target model (GGUF); required"),
    STR(draft, "FILE", "draft model (GGUF) with the target's tokenizer"),
    STR(proposer, "NAME", "auto (draft when given, else none), draft, ngram or none"),
    INT(ngram_min, 1, 64, "N", "n-gram proposer: shortest suffix to match"),
    INT(ngram_max, 1, 64, "N", "n-gram proposer: longest suffix to match"),
    STR(backend, "NAME", "compute backend: cpu (cuda when built with CUDA=1)"),
    INT(threads, 0, 1024, "N", "CPU threads (0: all CPUs)"),
    INT(ctx, 0, 1 << 20, "N", "max tokens per sequence (0: the model's context)"),
    INT(block_size, 1, 4096, "N", "KV cache block size in tokens"),
    INT(kv_mib, 1, 1 << 20, "MIB", "KV cache memory of the target in MiB"),
    INT(kv_blocks, 0, 1 << 24, "N", "explicit number of KV blocks (0: from kv_mib)"),
    INT(max_seqs, 1, 65536, "N", "sequences per engine step"),
    INT(max_batch_tokens, 2, 1 << 20, "N", "target tokens per engine step, drafts included"),
    BOOL(prefix_cache, "reuse KV blocks of shared prompt prefixes"),
    INT(max_depth, 0, SPEC_MAX_DEPTH, "K", "largest draft depth the controller may set"),
    BOOL(spec_enabled, "safe default: speculate (until settings arrive, and when they expire)"),
    INT(spec_depth, 0, SPEC_MAX_DEPTH, "K", "safe default draft depth"),
    STR(redis_host, "HOST", "Redis host"),
    INT(redis_port, 1, 65535, "PORT", "Redis port"),
    STR(redis_prefix, "STR", "prefix of every Redis key"),
    STR(redis_jobs_stream, "NAME", "jobs stream (after the prefix)"),
    STR(redis_dead_stream, "NAME", "dead-letter stream"),
    STR(redis_done_stream, "NAME", "done-announcement stream"),
    STR(redis_group, "NAME", "consumer group"),
    INT(redis_connect_timeout_ms, 1, 600000, "MS", "Redis connect timeout"),
    INT(redis_command_timeout_ms, 1, 600000, "MS", "Redis command timeout"),
    INT(redis_backoff_min_ms, 1, 600000, "MS", "first reconnect delay"),
    INT(redis_backoff_max_ms, 1, 600000, "MS", "largest reconnect delay"),
    INT(max_inflight, 1, 65536, "N", "jobs held at once (read only when there is room)"),
    INT(result_ttl_s, 1, 1 << 30, "S", "results and delta streams expire after this"),
    INT(claim_idle_ms, 1, 1 << 30, "MS", "reclaim jobs pending this long at dead workers"),
    INT(max_deliveries, 1, 1000000, "N", "a job delivered more often goes to dead letter"),
    INT(idle_block_ms, 1, 60000, "MS", "how long an idle worker waits for jobs per poll"),
    INT(max_tokens_limit, 1, 1 << 20, "N", "jobs asking for more tokens are malformed"),
    INT(default_max_tokens, 1, 1 << 20, "N", "max_tokens of jobs that give none"),
    STR(metrics_endpoint, "EP", "controller's metrics SUB to connect to (\"\": none)"),
    STR(settings_endpoint, "EP", "controller's settings PUB to connect to (\"\": none)"),
    INT(metrics_queue, 1, 1 << 20, "N", "metrics messages queued at most (then dropped)"),
    INT(drain_timeout_ms, 0, 1 << 30, "MS", "SIGTERM: time to finish held jobs"),
};
#define N_KEYS (sizeof keys / sizeof keys[0])

void worker_config_default(struct worker_config *c) {
    memset(c, 0, sizeof *c);
    strcpy(c->log_level, "info");
    strcpy(c->proposer, "auto");
    c->ngram_min = 1;
    c->ngram_max = 4;
    strcpy(c->backend, "cpu");
    c->block_size = 16;
    c->kv_mib = 256;
    c->max_seqs = 64;
    c->max_batch_tokens = 512;
    c->prefix_cache = true;
    c->max_depth = 8;
    c->spec_enabled = true;
    c->spec_depth = 4;
    strcpy(c->redis_host, "127.0.0.1");
    c->redis_port = 6379;
    strcpy(c->redis_prefix, "specd:");
    strcpy(c->redis_jobs_stream, "jobs");
    strcpy(c->redis_dead_stream, "jobs:dead");
    strcpy(c->redis_done_stream, "done");
    strcpy(c->redis_group, "specd-workers");
    c->redis_connect_timeout_ms = 2000;
    c->redis_command_timeout_ms = 5000;
    c->redis_backoff_min_ms = 100;
    c->redis_backoff_max_ms = 5000;
    c->max_inflight = 32;
    c->result_ttl_s = 86400;
    c->claim_idle_ms = 60000;
    c->max_deliveries = 3;
    c->idle_block_ms = 200;
    c->max_tokens_limit = 4096;
    c->default_max_tokens = 256;
    strcpy(c->metrics_endpoint, "tcp://127.0.0.1:5556");
    strcpy(c->settings_endpoint, "tcp://127.0.0.1:5557");
    c->metrics_queue = 1000;
    c->drain_timeout_ms = 30000;
}

static const struct config_key *find_key(const char *name) {
    char norm[64];
    size_t n = strlen(name);
    if (n >= sizeof norm)
        return NULL;
    for (size_t i = 0; i <= n; i++)
        norm[i] = name[i] == '-' ? '_' : name[i];
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].name, norm) == 0)
            return &keys[i];
    return NULL;
}

static int parse_bool(const char *v, bool *out) {
    static const char *yes[] = {"1", "true", "yes", "on"}, *no[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0)
            return *out = true, 0;
        if (strcasecmp(v, no[i]) == 0)
            return *out = false, 0;
    }
    return -1;
}

int worker_config_set(struct worker_config *c, const char *key, const char *value, char *err,
                      size_t err_size) {
    const struct config_key *k = key ? find_key(key) : NULL;
    if (!k)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "unknown key '%s'", key ? key : "");
    if (!value)
        value = "";
    char *field = (char *)c + k->offset;
    if (k->type == KEY_STR) {
        if (strlen(value) >= k->size)
            return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s: longer than %zu bytes", k->name,
                              k->size - 1);
        memcpy(field, value, strlen(value) + 1);
    } else if (k->type == KEY_INT) {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end || v < k->lo || v > k->hi)
            return specd_fail(err, err_size, SPECD_ERR_FORMAT,
                              "%s: wants an integer in %ld..%ld, got '%s'", k->name, k->lo, k->hi,
                              value);
        *(int *)field = (int)v;
    } else {
        bool b;
        if (parse_bool(value, &b))
            return specd_fail(err, err_size, SPECD_ERR_FORMAT, "%s: wants true or false, got '%s'",
                              k->name, value);
        *(bool *)field = b;
    }
    return SPECD_OK;
}

int worker_config_validate(const struct worker_config *c, char *err, size_t err_size) {
    enum log_level lvl;
    if (log_parse_level(c->log_level, &lvl))
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "log_level: '%s' is not one of debug, info, warn, error, off",
                          c->log_level);
    if (c->worker_id[0] && !proto_worker_id_valid(c->worker_id))
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "worker_id: '%s' must be 1..%d chars of [A-Za-z0-9._-], not 'all'",
                          c->worker_id, PROTO_ID_CAP - 1);
    if (!c->model[0])
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "no model: give --model FILE (or model: in the config file)");
    static const char *proposers[] = {"auto", "draft", "ngram", "none"};
    int known = 0;
    for (int i = 0; i < 4; i++)
        known |= strcmp(c->proposer, proposers[i]) == 0;
    if (!known)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "proposer: '%s' is not one of auto, draft, ngram, none", c->proposer);
    if (strcmp(c->proposer, "draft") == 0 && !c->draft[0])
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "proposer draft needs --draft FILE");
    if (c->ngram_min > c->ngram_max)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "ngram_min %d exceeds ngram_max %d",
                          c->ngram_min, c->ngram_max);
    if (c->spec_depth > c->max_depth)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "spec_depth %d exceeds max_depth %d",
                          c->spec_depth, c->max_depth);
    if (c->redis_backoff_min_ms > c->redis_backoff_max_ms)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "redis_backoff_min_ms %d exceeds redis_backoff_max_ms %d",
                          c->redis_backoff_min_ms, c->redis_backoff_max_ms);
    if (c->default_max_tokens > c->max_tokens_limit)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "default_max_tokens %d exceeds max_tokens_limit %d",
                          c->default_max_tokens, c->max_tokens_limit);
    if (!c->redis_host[0] || !c->redis_group[0] || !c->redis_jobs_stream[0])
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "redis_host, redis_group and redis_jobs_stream must not be empty");
    return SPECD_OK;
}

// ---- command line ------------------------------------------------------------------------------

#define OPT_KEY_BASE 256 // getopt code of keys[i] is OPT_KEY_BASE + i

static void flag_name(const char *key, char *out, size_t cap) {
    size_t i = 0;
    for (; key[i] && i + 1 < cap; i++)
        out[i] = key[i] == '_' ? '-' : key[i];
    out[i] = '\0';
}

int worker_config_parse_args(struct worker_config *c, int argc, char **argv, char *err,
                             size_t err_size) {
    char flag_names[N_KEYS][64];
    struct option opts[N_KEYS + 3];
    for (size_t i = 0; i < N_KEYS; i++) {
        flag_name(keys[i].name, flag_names[i], sizeof flag_names[i]);
        opts[i] = (struct option){flag_names[i],
                                  keys[i].type == KEY_BOOL ? optional_argument : required_argument,
                                  NULL, OPT_KEY_BASE + (int)i};
    }
    opts[N_KEYS] = (struct option){"config", required_argument, NULL, 'c'};
    opts[N_KEYS + 1] = (struct option){"help", no_argument, NULL, 'h'};
    opts[N_KEYS + 2] = (struct option){NULL, 0, NULL, 0};
    const char *shorts = "+c:m:d:t:h";
    // Pass 1: the config file and --help.
    const char *config_path = NULL;
    int opt;
    opterr = 0;
    optind = 0;
    while ((opt = getopt_long(argc, argv, shorts, opts, NULL)) != -1) {
        if (opt == 'h')
            return WORKER_CONFIG_HELP;
        if (opt == 'c')
            config_path = optarg;
        else if (opt == '?' || opt == ':')
            return specd_fail(err, err_size, SPECD_ERR_INVALID,
                              "unknown option or missing value: '%s'", argv[optind - 1]);
    }
    if (optind < argc)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "unexpected argument '%s'",
                          argv[optind]);
    if (config_path) {
        int rc = worker_config_load_yaml(c, config_path, err, err_size);
        if (rc != SPECD_OK)
            return rc;
    }
    // Pass 2: every other flag over the file.
    optind = 0;
    while ((opt = getopt_long(argc, argv, shorts, opts, NULL)) != -1) {
        const char *key = NULL, *value = optarg;
        if (opt >= OPT_KEY_BASE && opt < OPT_KEY_BASE + (int)N_KEYS) {
            key = keys[opt - OPT_KEY_BASE].name;
            if (keys[opt - OPT_KEY_BASE].type == KEY_BOOL && !value)
                value = "true";
        } else if (opt == 'm') {
            key = "model";
        } else if (opt == 'd') {
            key = "draft";
        } else if (opt == 't') {
            key = "threads";
        }
        if (!key)
            continue;
        char why[256];
        if (worker_config_set(c, key, value, why, sizeof why) != SPECD_OK)
            return specd_fail(err, err_size, SPECD_ERR_INVALID, "--%s", why);
    }
    optind = 0;
    return worker_config_validate(c, err, err_size);
}

// ---- usage and dump
// ------------------------------------------------------------------------------

static void format_value(const struct worker_config *c, const struct config_key *k, char *out,
                         size_t cap) {
    const char *field = (const char *)c + k->offset;
    if (k->type == KEY_STR)
        snprintf(out, cap, "\"%s\"", field);
    else if (k->type == KEY_INT)
        snprintf(out, cap, "%d", *(const int *)field);
    else
        snprintf(out, cap, "%s", *(const bool *)field ? "true" : "false");
}

void worker_config_usage(const struct worker_config *defaults, FILE *to) {
    fprintf(to, "usage: specd-worker [-c FILE] [--KEY VALUE]...\n"
                "\n"
                "Serves generation jobs from Redis with the specd engine (speculative decoding),\n"
                "publishes per-step metrics to the controller and follows its settings.\n"
                "Every key can be set in the YAML file given with -c/--config (flat, or grouped\n"
                "by its first word: `redis: {port: 6380}`); flags override the file.\n"
                "\n"
                "  -c, --config FILE              YAML configuration file\n"
                "  -m, -d, -t                     short for --model, --draft, --threads\n"
                "  -h, --help                     show this help\n"
                "\n");
    for (size_t i = 0; i < N_KEYS; i++) {
        char flag[96], name[64], def[300];
        flag_name(keys[i].name, name, sizeof name);
        if (keys[i].type == KEY_BOOL)
            snprintf(flag, sizeof flag, "--%s[=BOOL]", name);
        else
            snprintf(flag, sizeof flag, "--%s %s", name, keys[i].meta);
        format_value(defaults, &keys[i], def, sizeof def);
        fprintf(to, "  %-30s %s (default %s)\n", flag, keys[i].help, def);
    }
    fprintf(to, "\nexit status: 0 after a clean stop (SIGTERM/SIGINT), 1 on a startup or fatal\n"
                "error, 2 on bad usage or a bad config file.\n");
}

void worker_config_dump(const struct worker_config *c, FILE *to) {
    for (size_t i = 0; i < N_KEYS; i++) {
        char v[1100];
        format_value(c, &keys[i], v, sizeof v);
        fprintf(to, "%s: %s\n", keys[i].name, v);
    }
}
