// specd_client: the handle, job ids, submitting, waiting for results, following text deltas.
// Requests (defaults, JSON, validation) are in specd_request.c.
#include "clients/c/specd_client.h"

#include "shared/clock.h"
#include "shared/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

struct specd_client {
    rq *q;
    char host[256];
    int port;
    uint64_t id_rng; // job id generator state
    char err[768];   // specd_client_last_error()
};

__attribute__((format(printf, 3, 4))) static int client_fail(specd_client *c, int status,
                                                             const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return status;
}

// Copies the reason for a failed connect out of an rq message, or the whole message when it has
// no recognisable reason. rq words it as "cannot connect to Redis at H:P: <reason> (is ..." or
// "not connected to Redis at H:P (<reason>); next attempt in ...".
static void connect_reason(const char *msg, const char *hostport, char *out, size_t size) {
    const char *at = strstr(msg, hostport);
    const char *start = NULL, *end = NULL;
    if (at && strncmp(msg, "cannot connect", 14) == 0 && at[strlen(hostport)] == ':') {
        start = at + strlen(hostport) + 1;
        start += *start == ' ';
        end = strstr(start, " (is redis-server");
    } else if (at && strncmp(msg, "not connected", 13) == 0 &&
               strncmp(at + strlen(hostport), " (", 2) == 0) {
        start = at + strlen(hostport) + 2;
        end = strstr(start, "); next attempt");
    }
    if (!start || !end) {
        snprintf(out, size, "%s", msg);
        return;
    }
    snprintf(out, size, "%.*s", (int)(end - start), start);
}

// Records the failure of an rq call: disconnects get one clear message that says what to do.
static int client_fail_rq(specd_client *c, int rc) {
    const char *msg = rq_last_error(c->q);
    if (rc != RQ_SOFT_DISCONNECTED || strncmp(msg, "lost the connection", 19) == 0)
        return client_fail(c, rc, "%s", msg);
    char hostport[300], reason[512];
    snprintf(hostport, sizeof hostport, "%s:%d", c->host, c->port);
    connect_reason(msg, hostport, reason, sizeof reason);
    return client_fail(c, rc,
                       "cannot connect to Redis at %s: %s \xe2\x80\x94 is redis-server running?",
                       hostport, reason);
}

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// A seed that differs between processes and between clients of one process.
static uint64_t os_seed(const void *salt) {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) == (ssize_t)sizeof s)
        return s;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    return s ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)salt;
}

specd_client *specd_client_new(const char *host, int port, const char *prefix) {
    if (!host || !*host || strlen(host) >= 256 || port < 1 || port > 65535)
        return NULL;
    specd_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    snprintf(c->host, sizeof c->host, "%s", host);
    c->port = port;
    c->id_rng = os_seed(c);
    struct rq_params p = rq_default_params();
    p.host = host;
    p.port = port;
    if (prefix)
        p.prefix = prefix;
    char err[256];
    c->q = rq_new(&p, err, sizeof err);
    if (!c->q) {
        free(c);
        return NULL;
    }
    if (!rq_is_connected(c->q))
        client_fail_rq(c, RQ_SOFT_DISCONNECTED);
    return c;
}

void specd_client_free(specd_client *c) {
    if (!c)
        return;
    rq_free(c->q);
    free(c);
}

const char *specd_client_last_error(const specd_client *c) {
    return c ? c->err : "specd_client handle is NULL";
}

int specd_client_is_connected(const specd_client *c) {
    return c && rq_is_connected(c->q);
}

int specd_client_connect(specd_client *c) {
    if (!c)
        return SPECD_ERR_INVALID;
    int rc = rq_reconnect(c->q);
    if (rc != SPECD_OK)
        return client_fail_rq(c, rc);
    c->err[0] = '\0';
    return SPECD_OK;
}

void specd_client_seed_ids(specd_client *c, uint64_t seed) {
    if (c)
        c->id_rng = seed;
}

int specd_job_id_generate(uint64_t wall_ms, uint64_t *rng_state, char *out, size_t size) {
    if (!rng_state || !out || size < 40)
        return SPECD_ERR_INVALID;
    // 20 digits at most for the time, '-', 16 hex digits, NUL: 38 bytes.
    snprintf(out, size, "%llu-%016llx", (unsigned long long)wall_ms,
             (unsigned long long)splitmix64(rng_state));
    return SPECD_OK;
}

int specd_client_submit(specd_client *c, const struct specd_request *req, char *id_out,
                        size_t id_size) {
    if (!c || !req || (id_out && id_size == 0))
        return c ? client_fail(c, SPECD_ERR_INVALID, "submit: NULL request") : SPECD_ERR_INVALID;
    if (id_out)
        id_out[0] = '\0';
    char id[SPECD_JOB_ID_SIZE];
    if (req->id && req->id[0])
        snprintf(id, sizeof id, "%s", req->id); // a longer id fails validation below
    else
        specd_job_id_generate(clock_wall_ms(), &c->id_rng, id, sizeof id);
    struct job job;
    char why[JOB_REASON_MAX + 64];
    int rc = specd_request_to_job(req, req->id && req->id[0] ? req->id : id, &job, why, sizeof why);
    if (rc != SPECD_OK)
        return client_fail(c, rc, "invalid job: %s", why);
    rc = rq_submit(c->q, &job, NULL, 0);
    if (rc != SPECD_OK)
        return client_fail_rq(c, rc);
    if (id_out && strlen(id) >= id_size)
        return client_fail(c, SPECD_ERR_INVALID, "job %s submitted, but id_out is too small", id);
    if (id_out)
        memcpy(id_out, id, strlen(id) + 1);
    c->err[0] = '\0';
    return SPECD_OK;
}

int specd_client_result(specd_client *c, const char *job_id, struct rq_result *out) {
    if (!c || !job_id || !out)
        return SPECD_ERR_INVALID;
    int rc = rq_get_result(c->q, job_id, out);
    if (rc != SPECD_OK)
        return client_fail_rq(c, rc);
    c->err[0] = '\0';
    return SPECD_OK;
}

int specd_client_wait(specd_client *c, const char *job_id, int timeout_ms, struct rq_result *out) {
    if (!c || !job_id || !out || timeout_ms < 0)
        return SPECD_ERR_INVALID;
    int rc = rq_wait_result(c->q, job_id, timeout_ms, out);
    if (rc != SPECD_OK)
        return client_fail_rq(c, rc);
    c->err[0] = '\0';
    return SPECD_OK;
}

int specd_stream_init(struct specd_stream *s, const char *job_id) {
    if (!s)
        return SPECD_ERR_INVALID;
    memset(s, 0, sizeof *s);
    if (!job_id || !job_id_is_valid(job_id, strlen(job_id)))
        return SPECD_ERR_INVALID;
    memcpy(s->job_id, job_id, strlen(job_id) + 1);
    strcpy(s->last_id, "0");
    return SPECD_OK;
}

static void sleep_ms(double ms) {
    if (ms <= 0)
        return;
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - 1000.0 * (time_t)(ms / 1000)) * 1e6)};
    nanosleep(&ts, NULL);
}

int specd_client_stream_next(specd_client *c, struct specd_stream *s, int timeout_ms,
                             struct rq_stream_chunk *out) {
    if (out)
        memset(out, 0, sizeof *out);
    if (!c || !s || !out || timeout_ms < 0)
        return SPECD_ERR_INVALID;
    if (s->done)
        return client_fail(c, SPECD_ERR_STATE, "the stream of job %s has already finished",
                           s->job_id);
    const double deadline = clock_now_ms() + timeout_ms;
    for (;;) {
        double left = deadline - clock_now_ms();
        int block = left > 0 ? (int)(left + 0.999) : 0;
        int rc = rq_read_stream(c->q, s->job_id, s->last_id, sizeof s->last_id, block, out);
        if (rc == SPECD_OK) {
            s->done = out->done;
            c->err[0] = '\0';
            return SPECD_OK;
        }
        left = deadline - clock_now_ms();
        if (rc == SPECD_SOFT_EMPTY && left <= 0)
            return client_fail(c, rc, "no new text for job %s within %d ms", s->job_id, timeout_ms);
        if (rc == RQ_SOFT_DISCONNECTED && left <= 0)
            return client_fail_rq(c, rc);
        if (rc == RQ_SOFT_DISCONNECTED) {
            int delay = rq_reconnect_delay_ms(c->q);
            sleep_ms(delay < left ? delay : left);
        } else if (rc != SPECD_SOFT_EMPTY) {
            return client_fail_rq(c, rc);
        }
    }
}
