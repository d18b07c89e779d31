// libFuzzer target for the controller's policy parsers: the JSON of PUT /v1/policy
// (controller/ctlsvc_policy_json.c) and the YAML config (controller/ctlsvc_config.c), both fed
// from untrusted or hand-written bytes. Checks:
//  - neither parser crashes, leaks or reads out of bounds;
//  - an accepted policy passes ctl_policy_validate(); printing it and parsing the print over a
//    different valid policy gives the same policy (the printed form is complete);
//  - a rejected document leaves the policy untouched and says why (non-empty reason);
//  - an accepted YAML config passes ctlsvc_config_validate() unless only cross-field checks
//    fail, and its policy is valid.
#include "controller/ctl_policy.h"
#include "controller/ctlsvc_config.h"
#include "controller/ctlsvc_policy_json.h"
#include "shared/status.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_policy: check failed: %s (line %d)\n", #cond, __LINE__);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void fuzz_json(const char *text, size_t len) {
    struct ctl_policy p = ctl_policy_default();
    char *before = ctlsvc_policy_to_json(&p);
    FUZZ_CHECK(before);
    char field[96], reason[256];
    memset(field, 'x', sizeof field);
    memset(reason, 'x', sizeof reason);
    int rc = ctlsvc_policy_from_json(text, len, &p, field, sizeof field, reason, sizeof reason);
    FUZZ_CHECK(memchr(field, '\0', sizeof field) && memchr(reason, '\0', sizeof reason));
    char *after = ctlsvc_policy_to_json(&p);
    FUZZ_CHECK(after);
    if (rc != SPECD_OK) {
        FUZZ_CHECK(rc == SPECD_ERR_FORMAT || rc == SPECD_ERR_INVALID || rc == SPECD_ERR_NOMEM);
        FUZZ_CHECK(reason[0] != '\0');
        FUZZ_CHECK(strcmp(before, after) == 0);
    } else {
        FUZZ_CHECK(ctl_policy_validate(&p, NULL, 0) == SPECD_OK);
        struct ctl_policy q = ctl_policy_default();
        q.mode = CTL_MODE_STATIC;
        q.max_depth = 12;
        q.static_depth = 7;
        q.interval_ms = 123;
        FUZZ_CHECK(ctl_policy_add_override(&q, "zz-other") != NULL);
        FUZZ_CHECK(ctlsvc_policy_from_json(after, strlen(after), &q, NULL, 0, NULL, 0) == SPECD_OK);
        char *again = ctlsvc_policy_to_json(&q);
        FUZZ_CHECK(again && strcmp(again, after) == 0);
        free(again);
    }
    free(before);
    free(after);
}

static void fuzz_yaml(const char *text, size_t len) {
    struct ctlsvc_config c = ctlsvc_config_default();
    char err[512];
    memset(err, 'x', sizeof err);
    int rc = ctlsvc_config_apply_yaml(&c, text, len, err, sizeof err);
    if (rc != SPECD_OK) {
        FUZZ_CHECK(memchr(err, '\0', sizeof err) && err[0] != '\0');
        return;
    }
    FUZZ_CHECK(ctl_policy_validate(&c.policy, NULL, 0) == SPECD_OK);
    FUZZ_CHECK(c.http_port >= 0 && c.http_port <= 65535 && c.republish_ms > 0);
    FUZZ_CHECK(memchr(c.http_token, '\0', sizeof c.http_token) != NULL);
    ctlsvc_config_validate(&c, err, sizeof err); // may fail (e.g. equal endpoints), not crash
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // Exact-length input without a terminator, as an HTTP body arrives.
    char *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    fuzz_json(copy, size);
    // The YAML path takes the same bytes, so that the corpus serves both (except token_file,
    // which would open whatever path the input names, /dev/stdin included).
    if (!memmem(copy, size, "token_file", 10))
        fuzz_yaml(copy, size);
    free(copy);
    return 0;
}
