// Configuration of the controller service (build/bin/specd-controller): defaults, a YAML file
// (libyaml), the SPECD_CONTROLLER_TOKEN environment variable and command-line overrides, in
// that order. config/controller.example.yaml shows every key; docs/controller.md explains them.
//
// Keys are dotted paths into the YAML mapping ("http.port", "redis.host", "republish_ms"); every
// scalar key can also be set with `--set key=value`. The `policy:` mapping is the initial
// controller policy, in the same shape as the JSON of PUT /v1/policy
// (controller/ctlsvc_policy_json.h); a policy persisted in Redis takes precedence at start.
#ifndef SPECD_CONTROLLER_CTLSVC_CONFIG_H
#define SPECD_CONTROLLER_CTLSVC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "controller/ctl_policy.h"
#include "shared/log.h"

#define CTLSVC_ENDPOINT_CAP 256
#define CTLSVC_TOKEN_CAP 256
#define CTLSVC_MAX_OVERRIDE_ARGS 64

struct ctlsvc_config {
    char metrics_endpoint[CTLSVC_ENDPOINT_CAP];  // SUB bind, "tcp://*:5556"
    char settings_endpoint[CTLSVC_ENDPOINT_CAP]; // PUB bind, "tcp://*:5557"
    int sub_rcvhwm;                              // metrics messages queued (10000)
    int pub_sndhwm;                              // settings messages queued per worker (1000)
    uint32_t republish_ms; // every worker's settings are sent again this often (2000)

    char http_address[64];             // "0.0.0.0"; "127.0.0.1" keeps it local; IPv6 allowed
    int http_port;                     // 9100; 0 = any free port (tests)
    char http_token[CTLSVC_TOKEN_CAP]; // bearer token for PUT /v1/policy; "" disables PUT
    size_t http_max_body;              // larger PUT bodies get 413 (65536)

    char redis_host[256];  // "127.0.0.1"
    int redis_port;        // 6379
    char redis_prefix[64]; // "specd:"
    char policy_key[128];  // "controller:policy" -> key specd:controller:policy

    enum log_level log_level; // info
    bool log_all_decisions;   // true: every decision at info; false: only changes (the rest at
                              // debug)
    struct ctl_policy policy; // from `policy:` over ctl_policy_default()
};

// Built-in defaults (the values in the comments above, policy = ctl_policy_default()).
struct ctlsvc_config ctlsvc_config_default(void);

// Sets one scalar key from its text ("http.port", "9100"). Returns SPECD_OK, or
// SPECD_ERR_INVALID for an unknown key or a bad value (message in err; cfg unchanged).
int ctlsvc_config_set(struct ctlsvc_config *cfg, const char *key, const char *value, char *err,
                      size_t err_size);

// Applies a YAML document (a mapping) over *cfg. Returns SPECD_OK; SPECD_ERR_FORMAT for YAML
// syntax errors or a wrong shape; SPECD_ERR_INVALID for unknown keys, bad values or an invalid
// policy; SPECD_ERR_NOMEM. err names the key and, for syntax errors, the line. On failure *cfg
// may be partly updated: parse into a copy.
int ctlsvc_config_apply_yaml(struct ctlsvc_config *cfg, const char *text, size_t len, char *err,
                             size_t err_size);
// Reads the file and applies it. Returns as above, or SPECD_ERR_IO when it cannot be read.
int ctlsvc_config_load_file(struct ctlsvc_config *cfg, const char *path, char *err,
                            size_t err_size);

// Cross-field checks (non-empty endpoints, ports in range, republish_ms > 0, the policy valid).
// Returns SPECD_OK or SPECD_ERR_INVALID with a message.
int ctlsvc_config_validate(const struct ctlsvc_config *cfg, char *err, size_t err_size);

// The command line of specd-controller, kept so that SIGHUP can rebuild the configuration.
struct ctlsvc_args {
    const char *config_path; // --config FILE, or NULL
    bool check_only;         // --check-config: validate, print the policy, exit
    bool help;
    size_t n_overrides;
    const char *keys[CTLSVC_MAX_OVERRIDE_ARGS]; // borrowed from argv (or static strings)
    const char *values[CTLSVC_MAX_OVERRIDE_ARGS];
    char storage[CTLSVC_MAX_OVERRIDE_ARGS][128]; // keys split out of --set key=value
};

// Parses argv (see ctlsvc_config_usage). Returns SPECD_OK or SPECD_ERR_INVALID with a message.
int ctlsvc_config_parse_args(int argc, char **argv, struct ctlsvc_args *out, char *err,
                             size_t err_size);
// Builds the configuration: defaults, then the file (if any), then $SPECD_CONTROLLER_TOKEN,
// then the overrides; validated. Returns SPECD_OK or an error as the functions above.
int ctlsvc_config_build(const struct ctlsvc_args *args, struct ctlsvc_config *out, char *err,
                        size_t err_size);
// The --help text.
const char *ctlsvc_config_usage(void);

#endif
