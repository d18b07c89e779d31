// The controller's policy store: the policy in force, as JSON, under <prefix><policy_key> in
// Redis (rq_kv_set/rq_kv_get). Read once at start (a stored policy replaces the configured
// one); written after every accepted change. A store thread does all Redis I/O so that neither
// the ZeroMQ loop nor the HTTP thread waits for Redis; while Redis is unreachable it retries
// (at least every second, following rq's reconnect backoff), and every few seconds it checks
// that the key still exists (a Redis restarted without persistence lost it: written again).
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "controller/ctlsvc_internal.h"
#include "controller/ctlsvc_policy_json.h"
#include "shared/log.h"
#include "shared/status.h"

#define STORE_RETRY_MS 1000
#define STORE_CHECK_MS 5000

// Outcome of one Redis attempt.
enum store_result { STORE_OK, STORE_ABSENT, STORE_FAILED };

static void deadline_after(struct timespec *ts, uint64_t ms) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

// [L] Applies a stored policy unless a local change came first.
static void apply_stored(ctlsvc *svc, const char *json, size_t len) {
    if (svc->policy_version > 0) {
        LOG_INFO("policy_store_ignored reason=\"a newer local change is in force\" version=%llu",
                 (unsigned long long)svc->policy_version);
        return;
    }
    struct ctl_policy p = *ctl_algo_policy(svc->algo);
    char field[96], reason[256];
    if (ctlsvc_policy_from_json(json, len, &p, field, sizeof field, reason, sizeof reason) !=
        SPECD_OK) {
        LOG_ERROR("policy_store_invalid key=%s%s field=%s reason=\"%s\" action=\"keeping the "
                  "configured policy; PUT /v1/policy to replace the stored one\"",
                  svc->cfg.redis_prefix, svc->cfg.policy_key, field, reason);
        return;
    }
    ctl_algo_set_policy(svc->algo, &p, reason, sizeof reason);
    snprintf(svc->policy_source, sizeof svc->policy_source, "redis");
    LOG_INFO("policy_loaded source=redis key=%s%s mode=%s", svc->cfg.redis_prefix,
             svc->cfg.policy_key, ctl_mode_name(p.mode));
}

// Reads the key. With apply, a found policy is applied (the first load).
static enum store_result store_read(ctlsvc *svc, bool apply) {
    char *value = NULL;
    size_t len = 0;
    int rc = rq_kv_get(svc->rq, svc->store_key, &value, &len);
    pthread_mutex_lock(&svc->lock);
    enum store_result out = rc == SPECD_OK           ? STORE_OK
                            : rc == SPECD_SOFT_EMPTY ? STORE_ABSENT
                                                     : STORE_FAILED;
    if (out == STORE_OK && apply)
        apply_stored(svc, value, len);
    if (out == STORE_ABSENT && apply)
        LOG_INFO("policy_store_empty key=%s%s source=%s", svc->cfg.redis_prefix,
                 svc->cfg.policy_key, svc->policy_source);
    if (out != STORE_FAILED && apply)
        svc->policy_loaded = true;
    // The key vanished (Redis restarted without persistence) while a policy of ours or of the
    // store is in force: write it again.
    if (out == STORE_ABSENT && !apply && svc->persisted_version == svc->policy_version &&
        (svc->policy_version > 0 || strcmp(svc->policy_source, "redis") == 0)) {
        LOG_WARN("policy_store_lost key=%s%s action=rewrite", svc->cfg.redis_prefix,
                 svc->cfg.policy_key);
        if (svc->policy_version == 0)
            svc->policy_version = 1;
        svc->persisted_version = 0;
    }
    pthread_mutex_unlock(&svc->lock);
    free(value);
    return out;
}

static enum store_result store_write(ctlsvc *svc) {
    pthread_mutex_lock(&svc->lock);
    uint64_t version = svc->policy_version;
    char *json = ctlsvc_policy_to_json(ctl_algo_policy(svc->algo));
    pthread_mutex_unlock(&svc->lock);
    int rc = json ? rq_kv_set(svc->rq, svc->store_key, json, strlen(json)) : SPECD_ERR_NOMEM;
    free(json);
    pthread_mutex_lock(&svc->lock);
    if (rc == SPECD_OK && version > svc->persisted_version) {
        svc->persisted_version = version;
        LOG_INFO("policy_persisted key=%s%s version=%llu", svc->cfg.redis_prefix,
                 svc->cfg.policy_key, (unsigned long long)version);
    }
    if (rc != SPECD_OK)
        svc->c.persist_errors++;
    pthread_mutex_unlock(&svc->lock);
    return rc == SPECD_OK ? STORE_OK : STORE_FAILED;
}

static void log_failure(ctlsvc *svc, const char *what, uint64_t now_ms) {
    pthread_mutex_lock(&svc->lock);
    bool allow = ctlsvc_ratelimit_allow(&svc->io_log, now_ms, 10000, &svc->c.log_suppressed);
    pthread_mutex_unlock(&svc->lock);
    if (allow) // rq_last_error is the store thread's (or ctlsvc_new's) alone
        LOG_WARN("policy_store_unavailable op=%s error=\"%s\" action=\"running on the policy in "
                 "force; retrying\"",
                 what, rq_last_error(svc->rq));
}

int ctlsvc_store_init(ctlsvc *svc, char *err, size_t err_size) {
    struct rq_params p = rq_default_params();
    p.host = svc->cfg.redis_host;
    p.port = svc->cfg.redis_port;
    p.prefix = svc->cfg.redis_prefix;
    p.consumer = "specd-controller";
    p.connect_timeout_ms = 1000;
    p.command_timeout_ms = 2000;
    p.seed = svc->start_wall_ms;
    snprintf(svc->store_key, sizeof svc->store_key, "%s", svc->cfg.policy_key);
    char why[256] = "";
    svc->rq = rq_new(&p, why, sizeof why);
    if (!svc->rq)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "redis: %s", why);
    if (store_read(svc, true) == STORE_FAILED)
        log_failure(svc, "load", ctlsvc_now_ms());
    svc->redis_connected = rq_is_connected(svc->rq);
    return SPECD_OK;
}

static void *store_main(void *arg) {
    ctlsvc *svc = arg;
    uint64_t retry_at = 0, check_at = ctlsvc_now_ms() + STORE_CHECK_MS;
    pthread_mutex_lock(&svc->lock);
    while (!svc->store_stop) {
        uint64_t now = ctlsvc_now_ms();
        bool load = !svc->policy_loaded;
        bool write = svc->persisted_version < svc->policy_version;
        bool check = now >= check_at;
        struct timespec until;
        if ((!load && !write && !check) || now < retry_at) {
            uint64_t wake = load || write ? retry_at : check_at;
            deadline_after(&until, wake > now ? wake - now : 1);
            pthread_cond_timedwait(&svc->store_wake, &svc->lock, &until);
            continue;
        }
        pthread_mutex_unlock(&svc->lock);
        enum store_result r = load    ? store_read(svc, true)
                              : write ? store_write(svc)
                                      : store_read(svc, false);
        if (r == STORE_FAILED)
            log_failure(svc, load ? "load" : write ? "persist" : "check", now);
        int delay = rq_reconnect_delay_ms(svc->rq);
        bool connected = rq_is_connected(svc->rq);
        pthread_mutex_lock(&svc->lock);
        if (!svc->redis_connected && connected && r != STORE_FAILED)
            LOG_INFO("policy_store_connected host=%s port=%d", svc->cfg.redis_host,
                     svc->cfg.redis_port);
        svc->redis_connected = connected && r != STORE_FAILED;
        retry_at = r == STORE_FAILED
                       ? now + (delay > STORE_RETRY_MS ? (uint64_t)delay : STORE_RETRY_MS)
                       : 0;
        if (!load && !write)
            check_at = now + STORE_CHECK_MS;
        pthread_cond_broadcast(&svc->store_done);
    }
    pthread_mutex_unlock(&svc->lock);
    return NULL;
}

int ctlsvc_store_start(ctlsvc *svc, char *err, size_t err_size) {
    int rc = pthread_create(&svc->store_thread, NULL, store_main, svc);
    if (rc != 0)
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "cannot start the store thread: %s",
                          strerror(rc));
    svc->store_started = true;
    return SPECD_OK;
}

void ctlsvc_store_stop(ctlsvc *svc) {
    if (svc->store_started) {
        pthread_mutex_lock(&svc->lock);
        svc->store_stop = true;
        pthread_cond_broadcast(&svc->store_wake);
        pthread_cond_broadcast(&svc->store_done);
        pthread_mutex_unlock(&svc->lock);
        pthread_join(svc->store_thread, NULL);
        svc->store_started = false;
    }
    rq_free(svc->rq);
    svc->rq = NULL;
}

uint64_t ctlsvc_policy_changed(ctlsvc *svc, const char *source) {
    svc->policy_version++;
    snprintf(svc->policy_source, sizeof svc->policy_source, "%s", source);
    pthread_cond_broadcast(&svc->store_wake);
    return svc->policy_version;
}

bool ctlsvc_store_wait(ctlsvc *svc, uint64_t version, int timeout_ms) {
    struct timespec until;
    deadline_after(&until, (uint64_t)(timeout_ms > 0 ? timeout_ms : 0));
    while (svc->persisted_version < version && !svc->store_stop)
        if (pthread_cond_timedwait(&svc->store_done, &svc->lock, &until) == ETIMEDOUT)
            break;
    return svc->persisted_version >= version;
}
