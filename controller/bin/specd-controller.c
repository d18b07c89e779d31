// specd-controller: the adaptive speculation controller service (docs/controller.md).
//
//   specd-controller --config config/controller.example.yaml [--set key=value ...]
//
// SIGHUP reloads the config file (endpoints, HTTP listener and Redis address excepted);
// SIGTERM and SIGINT stop it with exit status 0. Exit status 1: the service failed (e.g. an
// endpoint could not be bound); 2: bad command line or configuration.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/ctlsvc.h"
#include "controller/ctlsvc_policy_json.h"
#include "shared/log.h"
#include "shared/status.h"

// The running service, for the signal handlers (set while the signals are blocked).
static ctlsvc *running_service;

static void on_signal(int sig) {
    if (sig == SIGHUP)
        ctlsvc_request_reload(running_service);
    else
        ctlsvc_request_stop(running_service);
}

static int reload_config(void *user, struct ctlsvc_config *out, char *err, size_t err_size) {
    return ctlsvc_config_build(user, out, err, err_size);
}

static void set_signals(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; // no SA_RESTART: the loop's poll returns EINTR at once
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static int check_config(const struct ctlsvc_config *cfg) {
    cJSON *p = ctlsvc_policy_to_cjson(&cfg->policy);
    char *text = p ? cJSON_Print(p) : NULL;
    printf("config ok: metrics=%s settings=%s http=%s:%d redis=%s:%d key=%s%s token=%s\n"
           "policy (a policy stored in Redis takes precedence at start):\n%s\n",
           cfg->metrics_endpoint, cfg->settings_endpoint, cfg->http_address, cfg->http_port,
           cfg->redis_host, cfg->redis_port, cfg->redis_prefix, cfg->policy_key,
           cfg->http_token[0] ? "set" : "none (PUT /v1/policy disabled)", text ? text : "?");
    free(text);
    cJSON_Delete(p);
    return 0;
}

int main(int argc, char **argv) {
    static struct ctlsvc_args args; // large; kept for SIGHUP
    char err[1024];
    if (ctlsvc_config_parse_args(argc, argv, &args, err, sizeof err) != SPECD_OK) {
        fprintf(stderr, "specd-controller: %s\n%s", err, ctlsvc_config_usage());
        return 2;
    }
    if (args.help) {
        fputs(ctlsvc_config_usage(), stdout);
        return 0;
    }
    struct ctlsvc_config cfg;
    if (ctlsvc_config_build(&args, &cfg, err, sizeof err) != SPECD_OK) {
        fprintf(stderr, "specd-controller: %s\n", err);
        return 2;
    }
    if (args.check_only)
        return check_config(&cfg);
    log_set_level(cfg.log_level);
    if (!cfg.http_token[0])
        LOG_WARN("http_token_missing effect=\"PUT /v1/policy is disabled\" fix=\"set http.token, "
                 "http.token_file or SPECD_CONTROLLER_TOKEN\"");

    sigset_t set, old;
    set_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, &old); // threads started by ctlsvc_new inherit the mask
    ctlsvc *svc = ctlsvc_new(&cfg, reload_config, &args, err, sizeof err);
    if (!svc) {
        LOG_ERROR("controller_start_failed error=\"%s\"", err);
        return 1;
    }
    running_service = svc;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    int rc = ctlsvc_run(svc);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    running_service = NULL;
    ctlsvc_free(svc);
    LOG_INFO("controller_exit status=%d", rc == SPECD_OK ? 0 : 1);
    return rc == SPECD_OK ? 0 : 1;
}
