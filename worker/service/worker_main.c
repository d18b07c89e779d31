// specd-worker's main(): configuration, signals, run.
#include "worker/service/worker_main.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "shared/log.h"
#include "shared/status.h"
#include "worker/service/worker.h"
#include "worker/service/worker_config.h"

// The worker the signal handlers stop: the one piece of process state a signal handler needs.
static worker *volatile worker_for_signals;

static void on_stop_signal(int sig) {
    (void)sig;
    worker *w = worker_for_signals;
    if (w)
        worker_request_stop(w);
}

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int worker_main(int argc, char **argv) {
    struct worker_config cfg;
    worker_config_default(&cfg);
    char err[1024];
    int rc = worker_config_parse_args(&cfg, argc, argv, err, sizeof err);
    if (rc == WORKER_CONFIG_HELP) {
        struct worker_config defaults;
        worker_config_default(&defaults);
        worker_config_usage(&defaults, stdout);
        return WORKER_EXIT_OK;
    }
    if (rc != SPECD_OK) {
        fprintf(stderr, "specd-worker: %s\n(see specd-worker --help)\n", err);
        return WORKER_EXIT_USAGE;
    }
    enum log_level level = LOG_LEVEL_INFO;
    log_parse_level(cfg.log_level, &level);
    log_set_level(level);
    worker *w = NULL;
    rc = worker_new(&cfg, &w, err, sizeof err);
    if (rc != SPECD_OK) {
        LOG_ERROR("worker_start_failed status=%s reason=\"%s\"", specd_status_name(rc), err);
        return WORKER_EXIT_FAILURE;
    }
    worker_for_signals = w;
    install_signals();
    rc = worker_run(w);
    worker_for_signals = NULL;
    struct worker_stats st;
    worker_get_stats(w, &st);
    LOG_INFO("worker_exit id=%s jobs_started=%llu jobs_done=%llu jobs_dead=%llu "
             "jobs_malformed=%llu jobs_poisoned=%llu abandoned=%llu "
             "steps=%llu metrics_sent=%llu metrics_dropped=%llu settings_applied=%llu "
             "settings_malformed=%llu fallbacks=%llu",
             worker_get_id(w), (unsigned long long)st.jobs_started,
             (unsigned long long)st.jobs_done, (unsigned long long)st.jobs_dead,
             (unsigned long long)st.jobs_malformed, (unsigned long long)st.jobs_poisoned,
             (unsigned long long)st.jobs_abandoned, (unsigned long long)st.steps,
             (unsigned long long)st.metrics_sent, (unsigned long long)st.metrics_dropped,
             (unsigned long long)st.settings_applied, (unsigned long long)st.settings_malformed,
             (unsigned long long)st.settings_fallbacks);
    worker_free(w);
    return rc == SPECD_OK ? WORKER_EXIT_OK : WORKER_EXIT_FAILURE;
}
