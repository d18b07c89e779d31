// Worker configuration: defaults, a YAML file (--config) and command-line overrides.
//
// Every setting has one key. In YAML it is written flat (`redis_port: 6380`) or grouped under its
// first word (`redis: {port: 6380}`); on the command line it is `--redis-port 6380` (bools:
// `--prefix-cache`, `--prefix-cache=false`). Precedence: defaults < YAML file < flags, whatever
// the order of the flags. `specd-worker --help` lists every key with its default, and
// docs/worker.md describes them.
//
//   struct worker_config c;
//   worker_config_default(&c);
//   int rc = worker_config_parse_args(&c, argc, argv, err, sizeof err);  // loads --config too
//   if (rc == WORKER_CONFIG_HELP) { worker_config_usage(&c, stdout); return 0; }
//   if (rc != SPECD_OK) { fprintf(stderr, "%s\n", err); return 2; }
#ifndef SPECD_WORKER_SERVICE_WORKER_CONFIG_H
#define SPECD_WORKER_SERVICE_WORKER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "shared/proto.h"

#define WORKER_CONFIG_PATH_MAX 1024
#define WORKER_CONFIG_NAME_MAX 128
#define WORKER_CONFIG_HELP 3 // worker_config_parse_args(): --help was given

struct worker_config {
    // identity and logging
    char worker_id[PROTO_ID_CAP]; // "" : "<hostname>-<pid>"
    char log_level[16];           // debug, info, warn, error, off
    // engine
    char model[WORKER_CONFIG_PATH_MAX]; // target GGUF (required)
    char draft[WORKER_CONFIG_PATH_MAX]; // draft GGUF ("" none)
    char proposer[16];                  // auto (draft if given, else none), draft, ngram, none
    int ngram_min, ngram_max;           // n-gram proposer suffix lengths
    char backend[16];                   // cpu (cuda once built with CUDA=1)
    int threads;                        // CPU threads, 0: all
    int ctx;                            // max tokens per sequence, 0: the model's context
    int block_size;                     // KV block size in tokens
    int kv_mib;                         // target KV cache memory in MiB
    int kv_blocks;                      // explicit number of KV blocks (0: from kv_mib)
    int max_seqs;                       // sequences per engine step
    int max_batch_tokens;               // target tokens per engine step
    bool prefix_cache;                  // reuse KV blocks of shared prompt prefixes
    int max_depth;                      // largest draft depth the controller may set
    // safe default speculation (used until the controller speaks and when its settings expire)
    bool spec_enabled;
    int spec_depth;
    // Redis
    char redis_host[256];
    int redis_port;
    char redis_prefix[WORKER_CONFIG_NAME_MAX];
    char redis_jobs_stream[WORKER_CONFIG_NAME_MAX];
    char redis_dead_stream[WORKER_CONFIG_NAME_MAX];
    char redis_done_stream[WORKER_CONFIG_NAME_MAX];
    char redis_group[WORKER_CONFIG_NAME_MAX];
    int redis_connect_timeout_ms;
    int redis_command_timeout_ms;
    int redis_backoff_min_ms;
    int redis_backoff_max_ms;
    // jobs
    int max_inflight;       // jobs held at once (read from Redis only when there is room)
    int result_ttl_s;       // result hashes and delta streams expire after this
    int claim_idle_ms;      // jobs pending this long at another consumer are reclaimed
    int max_deliveries;     // a job delivered more often goes to dead letter
    int idle_block_ms;      // how long an idle worker blocks waiting for jobs
    int max_tokens_limit;   // jobs asking for more are malformed
    int default_max_tokens; // for jobs without max_tokens
    // ZeroMQ (the controller binds; the worker connects)
    char metrics_endpoint[256];  // controller's metrics SUB; "" : publish nothing
    char settings_endpoint[256]; // controller's settings PUB; "" : safe default only
    int metrics_queue;           // bounded queue of unsent metrics messages (drops counted)
    // shutdown
    int drain_timeout_ms; // after SIGTERM, unfinished jobs are left pending after this long
};

// Fills *c with the defaults (documented in --help and docs/worker.md).
void worker_config_default(struct worker_config *c);

// Sets one key from its text value (the YAML and command-line forms both end here). `key` may
// use '-' or '_'. Returns SPECD_OK, SPECD_ERR_INVALID for an unknown key, SPECD_ERR_FORMAT for a
// bad value; err names the key and the rule. *c is unchanged on failure.
int worker_config_set(struct worker_config *c, const char *key, const char *value, char *err,
                      size_t err_size);

// Loads a YAML file: a mapping of keys to scalars, or of group names to such mappings. Returns
// SPECD_OK; SPECD_ERR_IO (cannot open), SPECD_ERR_FORMAT (YAML syntax, unknown key, bad value:
// err says "FILE:LINE: ..."). Keys set before the failure stay set.
int worker_config_load_yaml(struct worker_config *c, const char *path, char *err, size_t err_size);

// Parses the command line: first loads the file of -c/--config (if any), then applies every
// other flag over it, then validates. Returns SPECD_OK, WORKER_CONFIG_HELP (-h/--help),
// SPECD_ERR_INVALID (bad usage, bad value, failed validation) or the errors of _load_yaml, with a
// one-line reason in err. Does not print. Uses getopt_long (resets optind).
int worker_config_parse_args(struct worker_config *c, int argc, char **argv, char *err,
                             size_t err_size);

// Checks cross-key rules (model given, depths within bounds, valid worker id ...). Returns
// SPECD_OK or SPECD_ERR_INVALID with the reason.
int worker_config_validate(const struct worker_config *c, char *err, size_t err_size);

// Prints the usage text: every flag with its YAML key, meaning and the value in *defaults.
void worker_config_usage(const struct worker_config *defaults, FILE *to);

// Prints the configuration as YAML (one `key: value` line per key) — loadable again.
void worker_config_dump(const struct worker_config *c, FILE *to);

#endif
