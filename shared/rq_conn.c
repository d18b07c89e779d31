// rq: parameters, the connection with its reconnect backoff, command plumbing, Lua scripts and
// the key-value helpers.
#include "shared/clock.h"
#include "shared/log.h"
#include "shared/rq_internal.h"
#include "shared/status.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

struct rq_params rq_default_params(void) {
    struct rq_params p = {
        .host = "127.0.0.1",
        .port = 6379,
        .prefix = "specd:",
        .jobs_stream = "jobs",
        .dead_stream = "jobs:dead",
        .done_stream = "done",
        .group = "specd-workers",
        .consumer = NULL,
        .result_ttl_s = 86400,
        .claim_idle_ms = 60000,
        .max_deliveries = 3,
        .block_ms = 1000,
        .connect_timeout_ms = 2000,
        .command_timeout_ms = 5000,
        .backoff_min_ms = 100,
        .backoff_max_ms = 5000,
        .seed = 0,
        .done_maxlen = 100000,
        .delete_acked = 1,
        .prune_idle_ms = 3600000,
        .job = job_default_params(),
    };
    return p;
}

int rq_set_error(rq *q, int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q->err, sizeof q->err, fmt, ap);
    va_end(ap);
    return status;
}

// ---- argument lists ----------------------------------------------------------------------------

void rq_args_init(struct rq_args *a) {
    memset(a, 0, sizeof *a);
}

void rq_args_free(struct rq_args *a) {
    if (!a)
        return;
    for (int i = 0; i < a->n_owned; i++)
        free(a->owned[i]);
    free(a->owned);
    free(a->argv);
    free(a->len);
    rq_args_init(a);
}

void rq_args_add(struct rq_args *a, const char *s, size_t len) {
    if (a->oom)
        return;
    if (a->n == a->cap) {
        int cap = a->cap ? 2 * a->cap : 16;
        const char **argv = realloc(a->argv, (size_t)cap * sizeof *argv);
        if (argv)
            a->argv = argv;
        size_t *lens = realloc(a->len, (size_t)cap * sizeof *lens);
        if (lens)
            a->len = lens;
        if (!argv || !lens) {
            a->oom = 1;
            return;
        }
        a->cap = cap;
    }
    a->argv[a->n] = s;
    a->len[a->n] = len;
    a->n++;
}

void rq_args_str(struct rq_args *a, const char *s) {
    rq_args_add(a, s, strlen(s));
}

void rq_args_addf(struct rq_args *a, const char *fmt, ...) {
    if (a->oom)
        return;
    if (a->n_owned == a->cap_owned) {
        int cap = a->cap_owned ? 2 * a->cap_owned : 8;
        char **owned = realloc(a->owned, (size_t)cap * sizeof *owned);
        if (!owned) {
            a->oom = 1;
            return;
        }
        a->owned = owned;
        a->cap_owned = cap;
    }
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        a->oom = 1;
        return;
    }
    a->owned[a->n_owned++] = s;
    rq_args_add(a, s, (size_t)n);
}

int rq_key(const rq *q, const char *middle, const char *job_id, char *buf, size_t size) {
    int n = snprintf(buf, size, "%s%s%s", q->prefix, middle, job_id ? job_id : "");
    return n < 0 || (size_t)n >= size ? SPECD_ERR_INVALID : SPECD_OK;
}

// ---- handle ------------------------------------------------------------------------------------

static char *rq_strdup_join(const char *a, const char *b) {
    char *s = NULL;
    return asprintf(&s, "%s%s", a, b) < 0 ? NULL : s;
}

static int rq_check_params(const struct rq_params *p, char *err, size_t err_size) {
    const char *bad = NULL;
    if (!p->host || !*p->host)
        bad = "host is empty";
    else if (p->port < 1 || p->port > 65535)
        bad = "port must be in 1..65535";
    else if (!p->prefix || !p->jobs_stream || !*p->jobs_stream || !p->dead_stream ||
             !*p->dead_stream || !p->done_stream || !*p->done_stream)
        bad = "prefix and stream names must be set";
    else if (!p->group || !*p->group || (p->consumer && !*p->consumer))
        bad = "group and consumer names must not be empty";
    else if (p->result_ttl_s < 1 || p->claim_idle_ms < 1 || p->max_deliveries < 1)
        bad = "result_ttl_s, claim_idle_ms and max_deliveries must be >= 1";
    else if (p->block_ms < 0 || p->connect_timeout_ms < 1 || p->command_timeout_ms < 1)
        bad = "block_ms must be >= 0 and the timeouts >= 1";
    else if (p->backoff_min_ms < 1 || p->backoff_max_ms < p->backoff_min_ms)
        bad = "need 1 <= backoff_min_ms <= backoff_max_ms";
    else if (p->prune_idle_ms < 0)
        bad = "prune_idle_ms must be >= 0 (0: never prune)";
    else if (p->done_maxlen < 1)
        bad = "done_maxlen must be >= 1";
    if (bad)
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "rq_new: %s", bad);
    return SPECD_OK;
}

rq *rq_new(const struct rq_params *params, char *err, size_t err_size) {
    struct rq_params def = rq_default_params();
    if (!params)
        params = &def;
    if (rq_check_params(params, err, err_size) != SPECD_OK)
        return NULL;
    rq *q = calloc(1, sizeof *q);
    if (!q) {
        specd_fail(err, err_size, SPECD_ERR_NOMEM, "rq_new: out of memory");
        return NULL;
    }
    q->p = *params;
    char consumer[300];
    if (params->consumer) {
        snprintf(consumer, sizeof consumer, "%s", params->consumer);
    } else {
        char host[256] = "host";
        gethostname(host, sizeof host - 1);
        snprintf(consumer, sizeof consumer, "%s-%ld", host, (long)getpid());
    }
    q->host = strdup(params->host);
    q->prefix = strdup(params->prefix);
    q->group = strdup(params->group);
    q->consumer = strdup(consumer);
    q->key_jobs = rq_strdup_join(params->prefix, params->jobs_stream);
    q->key_dead = rq_strdup_join(params->prefix, params->dead_stream);
    q->key_done = rq_strdup_join(params->prefix, params->done_stream);
    if (!q->host || !q->prefix || !q->group || !q->consumer || !q->key_jobs || !q->key_dead ||
        !q->key_done) {
        rq_free(q);
        specd_fail(err, err_size, SPECD_ERR_NOMEM, "rq_new: out of memory");
        return NULL;
    }
    q->p.host = q->host;
    q->p.prefix = q->prefix;
    q->p.group = q->group;
    q->p.consumer = q->consumer;
    q->p.jobs_stream = q->p.dead_stream = q->p.done_stream = NULL; // use the key_* names
    q->rng = params->seed ^ 0x9e3779b97f4a7c15ull;
    strcpy(q->claim_cursor, "0-0");
    q->retry_at_ms = clock_now_ms();
    rq_ensure_connected(q); // a failure is kept in q->err; calls retry by themselves
    return q;
}

void rq_free(rq *q) {
    if (!q)
        return;
    if (q->ctx)
        redisFree(q->ctx);
    free(q->host);
    free(q->prefix);
    free(q->group);
    free(q->consumer);
    free(q->key_jobs);
    free(q->key_dead);
    free(q->key_done);
    free(q);
}

const char *rq_last_error(const rq *q) {
    return q ? q->err : "rq handle is NULL";
}

int rq_is_connected(const rq *q) {
    return q && q->ctx != NULL;
}

const char *rq_consumer_name(const rq *q) {
    return q ? q->consumer : "";
}

// ---- connection and backoff --------------------------------------------------------------------

static uint64_t rq_next_random(rq *q) {
    uint64_t z = (q->rng += 0x9e3779b97f4a7c15ull); // splitmix64
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static struct timeval rq_timeval(int ms) {
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

// Delay before connect attempt number `attempt` (0-based): base = min * 2^attempt capped at max,
// then a jitter drawn uniformly from [max(min, base/2), base].
static int rq_backoff_ms(rq *q) {
    long long base = q->p.backoff_min_ms;
    for (int i = 0; i < q->backoff_attempt && base < q->p.backoff_max_ms; i++)
        base *= 2;
    if (base > q->p.backoff_max_ms)
        base = q->p.backoff_max_ms;
    long long lo = base / 2 < q->p.backoff_min_ms ? q->p.backoff_min_ms : base / 2;
    return (int)(lo + (long long)(rq_next_random(q) % (uint64_t)(base - lo + 1)));
}

static int rq_connect_now(rq *q) {
    if (q->ctx) {
        redisFree(q->ctx);
        q->ctx = NULL;
    }
    q->group_ready = 0;
    redisContext *c =
        redisConnectWithTimeout(q->host, q->p.port, rq_timeval(q->p.connect_timeout_ms));
    if (!c || c->err || redisSetTimeout(c, rq_timeval(q->p.command_timeout_ms)) != REDIS_OK) {
        int delay = rq_backoff_ms(q);
        q->backoff_attempt++;
        q->retry_at_ms = clock_now_ms() + delay;
        snprintf(q->conn_err, sizeof q->conn_err, "%s", c ? c->errstr : "out of memory");
        rq_set_error(q, RQ_SOFT_DISCONNECTED,
                     "cannot connect to Redis at %s:%d: %s (is redis-server running there? next "
                     "attempt in %d ms)",
                     q->host, q->p.port, q->conn_err, delay);
        if (q->backoff_attempt == 1)
            LOG_WARN("rq_connect_failed host=%s port=%d error=\"%s\"", q->host, q->p.port,
                     c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return RQ_SOFT_DISCONNECTED;
    }
    redisEnableKeepAlive(c);
    if (q->backoff_attempt > 0)
        LOG_INFO("rq_connected host=%s port=%d attempts=%d", q->host, q->p.port,
                 q->backoff_attempt + 1);
    q->ctx = c;
    q->backoff_attempt = 0;
    return SPECD_OK;
}

int rq_ensure_connected(rq *q) {
    if (q->ctx)
        return SPECD_OK;
    double now = clock_now_ms();
    if (now < q->retry_at_ms)
        return rq_set_error(q, RQ_SOFT_DISCONNECTED,
                            "not connected to Redis at %s:%d (%s); next attempt in %.0f ms",
                            q->host, q->p.port, q->conn_err, q->retry_at_ms - now);
    return rq_connect_now(q);
}

int rq_reconnect(rq *q) {
    if (!q)
        return SPECD_ERR_INVALID;
    return rq_connect_now(q);
}

int rq_reconnect_delay_ms(const rq *q) {
    if (!q || q->ctx)
        return 0;
    double d = q->retry_at_ms - clock_now_ms();
    return d > 0 ? (int)(d + 0.999) : 0;
}

int rq_wait_reconnect(rq *q, int max_wait_ms) {
    if (q->ctx)
        return SPECD_OK;
    double wait = q->retry_at_ms - clock_now_ms();
    if (wait > max_wait_ms) {
        if (max_wait_ms > 0)
            usleep((useconds_t)max_wait_ms * 1000);
        return rq_ensure_connected(q);
    }
    if (wait > 0)
        usleep((useconds_t)(wait * 1000));
    return rq_ensure_connected(q);
}

// The connection failed mid-command: drop it; the next call reconnects at once, then backs off.
static int rq_drop(rq *q, const char *command) {
    rq_set_error(q, RQ_SOFT_DISCONNECTED, "lost the connection to Redis at %s:%d during %s: %s",
                 q->host, q->p.port, command, q->ctx->errstr[0] ? q->ctx->errstr : "I/O error");
    snprintf(q->conn_err, sizeof q->conn_err, "%s", q->ctx->errstr);
    LOG_WARN("rq_disconnected host=%s port=%d command=%s error=\"%s\"", q->host, q->p.port, command,
             q->ctx->errstr);
    redisFree(q->ctx);
    q->ctx = NULL;
    q->group_ready = 0;
    q->retry_at_ms = clock_now_ms();
    return RQ_SOFT_DISCONNECTED;
}

// hiredis writes with write(): writing to a connection the server has closed raises SIGPIPE,
// which kills a process that did not ignore it. Block SIGPIPE for this thread around our I/O
// and swallow one that we caused, so that a Redis crash is an error code, not a dead worker.
struct rq_sigpipe {
    sigset_t old;
    int was_pending;
};

static void rq_sigpipe_block(struct rq_sigpipe *s) {
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    s->was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &s->old);
}

static void rq_sigpipe_restore(struct rq_sigpipe *s) {
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    if (!s->was_pending && sigismember(&pending, SIGPIPE)) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &s->old, NULL);
}

static int rq_pipeline_io(rq *q, struct rq_args *cmds, int n, int block_ms, redisReply **replies) {
    char name[32];
    snprintf(name, sizeof name, "%.*s", (int)(cmds[0].len[0] < 31 ? cmds[0].len[0] : 31),
             cmds[0].argv[0]);
    if (block_ms > 0)
        redisSetTimeout(q->ctx, rq_timeval(q->p.command_timeout_ms + block_ms));
    for (int i = 0; i < n; i++)
        if (redisAppendCommandArgv(q->ctx, cmds[i].n, cmds[i].argv, cmds[i].len) != REDIS_OK)
            return rq_drop(q, name);
    for (int i = 0; i < n; i++) {
        void *r = NULL;
        if (redisGetReply(q->ctx, &r) != REDIS_OK || !r) {
            for (int j = 0; j < i; j++) {
                freeReplyObject(replies[j]);
                replies[j] = NULL;
            }
            return rq_drop(q, name);
        }
        replies[i] = r;
    }
    if (block_ms > 0)
        redisSetTimeout(q->ctx, rq_timeval(q->p.command_timeout_ms));
    return SPECD_OK;
}

int rq_pipeline(rq *q, struct rq_args *cmds, int n, int block_ms, redisReply **replies) {
    for (int i = 0; i < n; i++) {
        replies[i] = NULL;
        if (cmds[i].oom || cmds[i].n == 0)
            return rq_set_error(q, SPECD_ERR_NOMEM, "out of memory building a Redis command");
    }
    int rc = rq_ensure_connected(q);
    if (rc != SPECD_OK)
        return rc;
    struct rq_sigpipe sp;
    rq_sigpipe_block(&sp);
    rc = rq_pipeline_io(q, cmds, n, block_ms, replies);
    rq_sigpipe_restore(&sp);
    return rc;
}

int rq_command(rq *q, struct rq_args *cmd, int block_ms, int keep_errors, redisReply **reply) {
    int rc = rq_pipeline(q, cmd, 1, block_ms, reply);
    if (rc != SPECD_OK || keep_errors || (*reply)->type != REDIS_REPLY_ERROR)
        return rc;
    rq_set_error(q, SPECD_ERR_IO, "Redis error for %.*s: %s",
                 (int)(cmd->len[0] < 32 ? cmd->len[0] : 32), cmd->argv[0], (*reply)->str);
    freeReplyObject(*reply);
    *reply = NULL;
    return SPECD_ERR_IO;
}

// ---- Lua scripts -------------------------------------------------------------------------------

static int rq_load_script(rq *q, enum rq_script script) {
    static const char *const sources[RQ_SCRIPT_COUNT] = {rq_script_finish_src, rq_script_dead_src,
                                                         rq_script_prune_src};
    const char *src = sources[script];
    struct rq_args a;
    rq_args_init(&a);
    rq_args_str(&a, "SCRIPT");
    rq_args_str(&a, "LOAD");
    rq_args_str(&a, src);
    redisReply *r = NULL;
    int rc = rq_command(q, &a, 0, 0, &r);
    rq_args_free(&a);
    if (rc != SPECD_OK)
        return rc;
    if (r->type != REDIS_REPLY_STRING || r->len != 40)
        rc = rq_set_error(q, SPECD_ERR_FORMAT, "SCRIPT LOAD: unexpected reply");
    else
        memcpy(q->sha[script], r->str, 41);
    freeReplyObject(r);
    return rc;
}

int rq_eval(rq *q, enum rq_script script, struct rq_args *a, redisReply **reply) {
    *reply = NULL;
    if (a->oom || a->n < 3)
        return rq_set_error(q, SPECD_ERR_NOMEM, "out of memory building a Redis command");
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!q->sha[script][0]) {
            int rc = rq_load_script(q, script);
            if (rc != SPECD_OK)
                return rc;
        }
        a->argv[0] = "EVALSHA";
        a->len[0] = 7;
        a->argv[1] = q->sha[script];
        a->len[1] = 40;
        int rc = rq_command(q, a, 0, 1, reply);
        if (rc != SPECD_OK)
            return rc;
        if ((*reply)->type != REDIS_REPLY_ERROR)
            return SPECD_OK;
        int noscript = strncmp((*reply)->str, "NOSCRIPT", 8) == 0;
        if (!noscript)
            rq_set_error(q, SPECD_ERR_IO, "Redis script error: %s", (*reply)->str);
        freeReplyObject(*reply);
        *reply = NULL;
        if (!noscript)
            return SPECD_ERR_IO;
        q->sha[script][0] = '\0'; // the server lost its script cache (restart): load again
    }
    return rq_set_error(q, SPECD_ERR_IO, "Redis keeps answering NOSCRIPT");
}

// ---- key-value helpers -------------------------------------------------------------------------

int rq_kv_set(rq *q, const char *key, const char *value, size_t len) {
    if (!q || !key || (!value && len))
        return SPECD_ERR_INVALID;
    struct rq_args a;
    rq_args_init(&a);
    rq_args_str(&a, "SET");
    rq_args_addf(&a, "%s%s", q->prefix, key);
    rq_args_add(&a, value ? value : "", len);
    redisReply *r = NULL;
    int rc = rq_command(q, &a, 0, 0, &r);
    rq_args_free(&a);
    freeReplyObject(r);
    return rc;
}

int rq_kv_get(rq *q, const char *key, char **value, size_t *len) {
    if (!q || !key || !value)
        return SPECD_ERR_INVALID;
    *value = NULL;
    if (len)
        *len = 0;
    struct rq_args a;
    rq_args_init(&a);
    rq_args_str(&a, "GET");
    rq_args_addf(&a, "%s%s", q->prefix, key);
    redisReply *r = NULL;
    int rc = rq_command(q, &a, 0, 0, &r);
    rq_args_free(&a);
    if (rc != SPECD_OK)
        return rc;
    if (r->type == REDIS_REPLY_NIL) {
        rc = rq_set_error(q, SPECD_SOFT_EMPTY, "key %s%s does not exist", q->prefix, key);
    } else if (r->type != REDIS_REPLY_STRING) {
        rc = rq_set_error(q, SPECD_ERR_FORMAT, "GET %s%s: not a string", q->prefix, key);
    } else if (!(*value = malloc(r->len + 1))) {
        rc = rq_set_error(q, SPECD_ERR_NOMEM, "out of memory");
    } else {
        memcpy(*value, r->str, r->len);
        (*value)[r->len] = '\0';
        if (len)
            *len = r->len;
    }
    freeReplyObject(r);
    return rc;
}
