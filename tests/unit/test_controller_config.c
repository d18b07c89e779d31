// The controller service's pure parts: the policy JSON of PUT /v1/policy
// (controller/ctlsvc_policy_json.h), the YAML config and command line
// (controller/ctlsvc_config.h), and the test-side Prometheus text checker. Expected values are
// written out by hand.
#include "controller/ctl_policy.h"
#include "controller/ctlsvc_config.h"
#include "controller/ctlsvc_policy_json.h"
#include "shared/status.h"

#include "tests/support/prom_text.h"
#include "tests/test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <unistd.h>

TEST(prom_checker_can_fail) {
    CHECK_EQ_INT(prom_text_check("# TYPE a gauge\na 1\n"), 0);
    CHECK_EQ_INT(prom_text_check("# TYPE a gauge\na{x=\"1\",y=\"q\\\"\"} NaN\n"), 0);
    CHECK(prom_text_check("# TYPE a gauge\na{x=\"1} 1\n") != 0);
    CHECK(prom_text_check("# TYPE a gauge\nb 1\n") != 0);   // sample outside its family
    CHECK(prom_text_check("# TYPE a gauge\na one\n") != 0); // bad value
    CHECK(prom_text_check("# TYPE a gauge\na 1\n# TYPE a gauge\na 2\n") != 0);
    CHECK(prom_text_check("# TYPE a gauge\na 1") != 0); // no final newline
    CHECK_NEAR(prom_text_value("x{a=\"b\"} 2.5\ny 3\n", "y"), 3.0, 0);
}

TEST(policy_json_patch_and_overrides) {
    struct ctl_policy p = ctl_policy_default();
    const char *doc = "{\"mode\":\"threshold\",\"target_acceptance\":0.8,\"max_depth\":6,"
                      "\"interval_ms\":250,\"hysteresis_margin\":0.1,"
                      "\"overrides\":[{\"name\":\"chat\",\"max_depth\":3},"
                      "{\"name\":\"code\",\"mode\":\"static\",\"static_depth\":2}]}";
    char field[96] = "x", reason[256] = "x";
    int rc =
        ctlsvc_policy_from_json(doc, strlen(doc), &p, field, sizeof field, reason, sizeof reason);
    if (rc != SPECD_OK)
        fprintf(stderr, "  %s: %s\n", field, reason);
    REQUIRE(rc == SPECD_OK);
    CHECK_EQ_STR(field, "");
    CHECK_EQ_INT(p.mode, CTL_MODE_THRESHOLD);
    CHECK_NEAR(p.target_acceptance, 0.8, 0);
    CHECK_NEAR(p.low_threshold, 0.5, 0); // untouched default
    CHECK_EQ_INT(p.max_depth, 6);
    CHECK_EQ_INT(p.min_depth, 1);
    CHECK_EQ_INT(p.interval_ms, 250);
    CHECK_NEAR(p.hysteresis_margin, 0.1, 0);
    REQUIRE(p.n_overrides == 2);
    CHECK_EQ_STR(p.overrides[0].name, "chat");
    CHECK_EQ_INT(p.overrides[0].mode, CTL_MODE_THRESHOLD); // from the patched global mode
    CHECK_EQ_INT(p.overrides[0].min_depth, 1);
    CHECK_EQ_INT(p.overrides[0].max_depth, 3);
    CHECK_EQ_STR(p.overrides[1].name, "code");
    CHECK_EQ_INT(p.overrides[1].mode, CTL_MODE_STATIC);
    CHECK_EQ_INT(p.overrides[1].static_depth, 2);
    CHECK_EQ_INT(p.overrides[1].max_depth, 6);
    // Overrides absent from a later patch stay; an empty array clears them.
    const char *keep = "{\"min_depth\":2}";
    REQUIRE(ctlsvc_policy_from_json(keep, strlen(keep), &p, NULL, 0, NULL, 0) == SPECD_OK);
    CHECK_EQ_INT(p.n_overrides, 2);
    CHECK_EQ_INT(p.min_depth, 2);
    // Left-out depths are fitted into new bounds: static_depth 4 follows max_depth 3.
    const char *narrow = "{\"max_depth\":3}";
    REQUIRE(ctlsvc_policy_from_json(narrow, strlen(narrow), &p, NULL, 0, NULL, 0) == SPECD_OK);
    CHECK_EQ_INT(p.static_depth, 3);
    CHECK_EQ_INT(p.min_depth, 2);
    const char *lower = "{\"max_depth\":1}"; // min_depth 2 follows too
    REQUIRE(ctlsvc_policy_from_json(lower, strlen(lower), &p, NULL, 0, NULL, 0) == SPECD_OK);
    CHECK_EQ_INT(p.min_depth, 1);
    CHECK_EQ_INT(p.static_depth, 1);
    const char *explicit_bad = "{\"max_depth\":2,\"static_depth\":3}";
    CHECK_EQ_INT(ctlsvc_policy_from_json(explicit_bad, strlen(explicit_bad), &p, NULL, 0, NULL, 0),
                 SPECD_ERR_INVALID);
    const char *clear = " {\"overrides\":[]}\n";
    REQUIRE(ctlsvc_policy_from_json(clear, strlen(clear), &p, NULL, 0, NULL, 0) == SPECD_OK);
    CHECK_EQ_INT(p.n_overrides, 0);
}

TEST(policy_json_roundtrip) {
    struct ctl_policy p = ctl_policy_default();
    p.mode = CTL_MODE_STATIC;
    p.static_depth = 3;
    p.min_drafted = 12.5;
    p.critical_threshold = 0.125;
    p.settings_ttl_ms = 0;
    struct ctl_class_override *o = ctl_policy_add_override(&p, "batch-jobs");
    REQUIRE(o);
    o->mode = CTL_MODE_GOODPUT;
    o->max_depth = 5;
    char *json = ctlsvc_policy_to_json(&p);
    REQUIRE(json);
    // Independent reading of the printed JSON.
    cJSON *j = cJSON_Parse(json);
    REQUIRE(j);
    CHECK_EQ_STR(cJSON_GetObjectItem(j, "mode")->valuestring, "static");
    CHECK_NEAR(cJSON_GetObjectItem(j, "static_depth")->valuedouble, 3, 0);
    CHECK_NEAR(cJSON_GetObjectItem(j, "min_drafted")->valuedouble, 12.5, 0);
    CHECK_NEAR(cJSON_GetObjectItem(j, "critical_threshold")->valuedouble, 0.125, 0);
    CHECK_NEAR(cJSON_GetObjectItem(j, "settings_ttl_ms")->valuedouble, 0, 0);
    cJSON *ov = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "overrides"), 0);
    REQUIRE(ov);
    CHECK_EQ_STR(cJSON_GetObjectItem(ov, "name")->valuestring, "batch-jobs");
    CHECK_EQ_STR(cJSON_GetObjectItem(ov, "mode")->valuestring, "goodput");
    CHECK_NEAR(cJSON_GetObjectItem(ov, "max_depth")->valuedouble, 5, 0);
    CHECK_EQ_INT(cJSON_GetArraySize(j), 20); // 19 fields + overrides
    cJSON_Delete(j);
    // Parsing it over a different policy gives back the same policy.
    struct ctl_policy q = ctl_policy_default();
    q.max_depth = 12;
    q.interval_ms = 77;
    REQUIRE(ctlsvc_policy_from_json(json, strlen(json), &q, NULL, 0, NULL, 0) == SPECD_OK);
    char *again = ctlsvc_policy_to_json(&q);
    REQUIRE(again);
    CHECK_EQ_STR(again, json);
    free(again);
    free(json);
}

TEST(policy_json_rejects_with_field) {
    static const struct {
        const char *doc, *field;
        int rc;
    } cases[] = {
        {"{\"low_threshold\":0.9}", "low_threshold", SPECD_ERR_INVALID},
        {"{\"max_depth\":17}", "max_depth", SPECD_ERR_INVALID},
        {"{\"max_depth\":2.5}", "max_depth", SPECD_ERR_INVALID},
        {"{\"max_depth\":-1}", "max_depth", SPECD_ERR_INVALID},
        {"{\"max_depth\":4294967296}", "max_depth", SPECD_ERR_INVALID},
        {"{\"max_depth\":\"4\"}", "max_depth", SPECD_ERR_FORMAT},
        {"{\"mode\":\"turbo\"}", "mode", SPECD_ERR_INVALID},
        {"{\"mode\":3}", "mode", SPECD_ERR_FORMAT},
        {"{\"bogus\":1}", "bogus", SPECD_ERR_FORMAT},
        {"{\"interval_ms\":100,\"interval_ms\":200}", "interval_ms", SPECD_ERR_FORMAT},
        {"{\"interval_ms\":0}", "interval_ms", SPECD_ERR_INVALID},
        {"{\"probe_duration_ms\":20000}", "probe_interval_ms", SPECD_ERR_INVALID},
        {"{\"hysteresis_margin\":1}", "hysteresis_margin", SPECD_ERR_INVALID},
        {"[1,2]", "", SPECD_ERR_FORMAT},
        {"{\"max_depth\":4", "", SPECD_ERR_FORMAT},
        {"{} x", "", SPECD_ERR_FORMAT},
        {"", "", SPECD_ERR_FORMAT},
        {"{\"overrides\":{}}", "overrides", SPECD_ERR_FORMAT},
        {"{\"overrides\":[{\"max_depth\":3}]}", "overrides[0].name", SPECD_ERR_FORMAT},
        {"{\"overrides\":[{\"name\":\"a b\"}]}", "overrides[0].name", SPECD_ERR_INVALID},
        {"{\"overrides\":[{\"name\":\"a\"},{\"name\":\"a\"}]}", "overrides[1].name",
         SPECD_ERR_INVALID},
        {"{\"overrides\":[{\"name\":\"a\",\"depth\":3}]}", "overrides[0].depth", SPECD_ERR_FORMAT},
        {"{\"overrides\":[{\"name\":\"a\",\"min_depth\":5,\"max_depth\":3}]}",
         "overrides[0].min_depth", SPECD_ERR_INVALID},
    };
    struct ctl_policy def = ctl_policy_default();
    char *def_json = ctlsvc_policy_to_json(&def);
    REQUIRE(def_json);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ctl_policy p = ctl_policy_default();
        char field[96] = "?", reason[256] = "";
        int rc = ctlsvc_policy_from_json(cases[i].doc, strlen(cases[i].doc), &p, field,
                                         sizeof field, reason, sizeof reason);
        if (rc != cases[i].rc || strcmp(field, cases[i].field) != 0 || !reason[0])
            TEST_FAIL_AT(__FILE__, __LINE__, "case %zu %s: rc %d field \"%s\" reason \"%s\"", i,
                         cases[i].doc, rc, field, reason);
        const char *leaf = strrchr(cases[i].field, '.');
        leaf = leaf ? leaf + 1 : cases[i].field;
        if (!strstr(reason, leaf))
            TEST_FAIL_AT(__FILE__, __LINE__, "case %zu: reason \"%s\" does not name %s", i, reason,
                         cases[i].field);
        char *after = ctlsvc_policy_to_json(&p);
        CHECK(after && strcmp(after, def_json) == 0); // unchanged on failure
        free(after);
    }
    free(def_json);
}

TEST(config_yaml) {
    const char *y = "metrics_endpoint: tcp://127.0.0.1:7000\n"
                    "settings_endpoint: \"tcp://127.0.0.1:7001\"\n"
                    "republish_ms: 500\n"
                    "http:\n  address: 127.0.0.1\n  port: 9200\n  token: s3cret\n"
                    "redis:\n  host: redis.local\n  port: 6380\n  prefix: \"x:\"\n"
                    "log:\n  level: debug\n  decisions: changes\n"
                    "policy:\n  mode: threshold\n  target_acceptance: 0.8\n  max_depth: 6\n"
                    "  overrides:\n    - name: chat\n      max_depth: 3\n"
                    "    - {name: code, mode: static, static_depth: 2}\n";
    struct ctlsvc_config c = ctlsvc_config_default();
    char err[512] = "";
    int rc = ctlsvc_config_apply_yaml(&c, y, strlen(y), err, sizeof err);
    if (rc != SPECD_OK)
        fprintf(stderr, "  %s\n", err);
    REQUIRE(rc == SPECD_OK);
    CHECK_EQ_STR(c.metrics_endpoint, "tcp://127.0.0.1:7000");
    CHECK_EQ_STR(c.settings_endpoint, "tcp://127.0.0.1:7001");
    CHECK_EQ_INT(c.republish_ms, 500);
    CHECK_EQ_STR(c.http_address, "127.0.0.1");
    CHECK_EQ_INT(c.http_port, 9200);
    CHECK_EQ_STR(c.http_token, "s3cret");
    CHECK_EQ_STR(c.redis_host, "redis.local");
    CHECK_EQ_INT(c.redis_port, 6380);
    CHECK_EQ_STR(c.redis_prefix, "x:");
    CHECK_EQ_INT(c.log_level, LOG_LEVEL_DEBUG);
    CHECK(!c.log_all_decisions);
    CHECK_EQ_INT(c.policy.mode, CTL_MODE_THRESHOLD);
    CHECK_NEAR(c.policy.target_acceptance, 0.8, 0);
    CHECK_EQ_INT(c.policy.max_depth, 6);
    REQUIRE(c.policy.n_overrides == 2);
    CHECK_EQ_INT(c.policy.overrides[0].max_depth, 3);
    CHECK_EQ_INT(c.policy.overrides[1].mode, CTL_MODE_STATIC);
    CHECK_EQ_INT(c.policy.overrides[1].static_depth, 2);
    CHECK_EQ_INT(ctlsvc_config_validate(&c, err, sizeof err), SPECD_OK);

    static const struct {
        const char *yaml, *needle;
        int rc;
    } bad[] = {
        {"http:\n  prot: 1\n", "http.prot", SPECD_ERR_INVALID},
        {"http:\n  port: 70000\n", "http.port", SPECD_ERR_INVALID},
        {"republish_ms: soon\n", "republish_ms", SPECD_ERR_INVALID},
        {"a: [1,\n", "line", SPECD_ERR_FORMAT},
        {"policy:\n  low_threshold: 0.99\n", "policy.low_threshold", SPECD_ERR_INVALID},
        {"policy:\n  max_depth: \"6\"\n", "policy.max_depth", SPECD_ERR_FORMAT},
        {"- 1\n- 2\n", "expected a mapping", SPECD_ERR_FORMAT},
        {"http: [1]\n", "http", SPECD_ERR_FORMAT},
        {"log:\n  level: loud\n", "log.level", SPECD_ERR_INVALID},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct ctlsvc_config d = ctlsvc_config_default();
        err[0] = '\0';
        int rc = ctlsvc_config_apply_yaml(&d, bad[i].yaml, strlen(bad[i].yaml), err, sizeof err);
        if (rc != bad[i].rc || !strstr(err, bad[i].needle))
            TEST_FAIL_AT(__FILE__, __LINE__, "bad[%zu]: rc %d err \"%s\"", i, rc, err);
    }
    // The shipped example stays loadable and valid.
    struct ctlsvc_config x = ctlsvc_config_default();
    CHECK_EQ_INT(ctlsvc_config_load_file(&x, "config/controller.example.yaml", err, sizeof err),
                 SPECD_OK);
    CHECK_EQ_INT(ctlsvc_config_validate(&x, err, sizeof err), SPECD_OK);
    CHECK(x.policy.n_overrides == 1 && strcmp(x.policy.overrides[0].name, "chat") == 0);
    struct ctlsvc_config e = ctlsvc_config_default();
    CHECK_EQ_INT(ctlsvc_config_apply_yaml(&e, "", 0, err, sizeof err), SPECD_OK); // empty file
    snprintf(e.settings_endpoint, sizeof e.settings_endpoint, "%s", e.metrics_endpoint);
    CHECK_EQ_INT(ctlsvc_config_validate(&e, err, sizeof err), SPECD_ERR_INVALID);
}

TEST(config_args_and_precedence) {
    char path[] = "/tmp/specd-ctl-config-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    const char *y = "http:\n  port: 9300\n  token: file-token\nrepublish_ms: 300\n";
    REQUIRE(write(fd, y, strlen(y)) == (ssize_t)strlen(y));
    close(fd);
    char *argv[] = {"specd-controller", "--config",         path, "--http-port", "9400", "--set",
                    "redis.port=6390",  "--log-level=warn", NULL};
    struct ctlsvc_args a;
    char err[512] = "";
    REQUIRE(ctlsvc_config_parse_args(8, argv, &a, err, sizeof err) == SPECD_OK);
    struct ctlsvc_config c;
    unsetenv("SPECD_CONTROLLER_TOKEN");
    REQUIRE(ctlsvc_config_build(&a, &c, err, sizeof err) == SPECD_OK);
    CHECK_EQ_INT(c.http_port, 9400); // command line over file
    CHECK_EQ_INT(c.republish_ms, 300);
    CHECK_EQ_INT(c.redis_port, 6390);
    CHECK_EQ_INT(c.log_level, LOG_LEVEL_WARN);
    CHECK_EQ_STR(c.http_token, "file-token");
    setenv("SPECD_CONTROLLER_TOKEN", "env-token", 1);
    REQUIRE(ctlsvc_config_build(&a, &c, err, sizeof err) == SPECD_OK);
    CHECK_EQ_STR(c.http_token, "env-token"); // environment over file
    char *argv2[] = {"specd-controller", "--config", path, "--token", "cli-token", NULL};
    REQUIRE(ctlsvc_config_parse_args(5, argv2, &a, err, sizeof err) == SPECD_OK);
    REQUIRE(ctlsvc_config_build(&a, &c, err, sizeof err) == SPECD_OK);
    CHECK_EQ_STR(c.http_token, "cli-token"); // command line over environment
    unsetenv("SPECD_CONTROLLER_TOKEN");
    char *bad1[] = {"x", "--bogus", NULL};
    CHECK_EQ_INT(ctlsvc_config_parse_args(2, bad1, &a, err, sizeof err), SPECD_ERR_INVALID);
    char *bad2[] = {"x", "--set", "noequals", NULL};
    CHECK_EQ_INT(ctlsvc_config_parse_args(3, bad2, &a, err, sizeof err), SPECD_ERR_INVALID);
    char *bad3[] = {"x", "--set", "nokey=1", NULL};
    REQUIRE(ctlsvc_config_parse_args(3, bad3, &a, err, sizeof err) == SPECD_OK);
    CHECK_EQ_INT(ctlsvc_config_build(&a, &c, err, sizeof err), SPECD_ERR_INVALID);
    CHECK(strstr(err, "nokey") != NULL);
    char *bad4[] = {"x", "--http-port", NULL};
    CHECK_EQ_INT(ctlsvc_config_parse_args(2, bad4, &a, err, sizeof err), SPECD_ERR_INVALID);
    unlink(path);
}

int main(int argc, char **argv) {
    TEST_MAIN_BEGIN(argc, argv);
    TEST_RUN(prom_checker_can_fail);
    TEST_RUN(policy_json_patch_and_overrides);
    TEST_RUN(policy_json_roundtrip);
    TEST_RUN(policy_json_rejects_with_field);
    TEST_RUN(config_yaml);
    TEST_RUN(config_args_and_precedence);
    return TEST_MAIN_END();
}
