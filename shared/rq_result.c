// rq: results (the atomic finish script), text-delta streams, and reading results back.
#include "shared/rq_internal.h"
#include "shared/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// KEYS: 1 jobs stream, 2 result hash, 3 done stream, [4 delta stream when the job streams]
// ARGV: 1 group, 2 entry id, 3 job id, 4 ttl s, 5 done maxlen, 6 xdel 0/1, 7.. result fields
// Returns 1 when the result was written and announced, 0 when a `done` result already existed
// (then only the ack happens). The first command is the only one that can fail on bad data, so a
// failure leaves nothing half-written.
const char rq_script_finish_src[] =
    "local wrote = 0\n"
    "if redis.call('HGET', KEYS[2], 'status') ~= 'done' then\n"
    "  redis.call('DEL', KEYS[2])\n"
    "  redis.call('HSET', KEYS[2], unpack(ARGV, 7))\n"
    "  redis.call('EXPIRE', KEYS[2], ARGV[4])\n"
    "  if #KEYS >= 4 then\n"
    "    redis.call('XADD', KEYS[4], '*', 'done', '1')\n"
    "    redis.call('EXPIRE', KEYS[4], ARGV[4])\n"
    "  end\n"
    "  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'id', ARGV[3])\n"
    "  wrote = 1\n"
    "end\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "if ARGV[6] == '1' then redis.call('XDEL', KEYS[1], ARGV[2]) end\n"
    "return wrote\n";

static void rq_add_field(struct rq_args *a, const char *name, const char *value) {
    rq_args_str(a, name);
    rq_args_str(a, value ? value : "");
}

int rq_finish(rq *q, const struct rq_delivery *d, const struct rq_result *res) {
    if (!q || !d || !res || !d->job.id[0] || !d->entry_id[0] || (!res->text && res->text_len))
        return SPECD_ERR_INVALID;
    struct rq_args a;
    rq_args_init(&a);
    rq_args_str(&a, "EVALSHA");
    rq_args_str(&a, "");
    rq_args_str(&a, d->job.stream ? "4" : "3");
    rq_args_str(&a, q->key_jobs);
    rq_args_addf(&a, "%sresult:%s", q->prefix, d->job.id);
    rq_args_str(&a, q->key_done);
    if (d->job.stream)
        rq_args_addf(&a, "%sstream:%s", q->prefix, d->job.id);
    rq_args_str(&a, q->group);
    rq_args_str(&a, d->entry_id);
    rq_args_str(&a, d->job.id);
    rq_args_addf(&a, "%d", q->p.result_ttl_s);
    rq_args_addf(&a, "%lld", q->p.done_maxlen);
    rq_args_str(&a, q->p.delete_acked ? "1" : "0");
    rq_add_field(&a, "status", res->status == RQ_RESULT_DONE ? "done" : "error");
    rq_args_str(&a, "text");
    rq_args_add(&a, res->text ? res->text : "", res->text_len);
    rq_add_field(&a, "finish_reason", res->finish_reason);
    rq_args_str(&a, "prompt_tokens");
    rq_args_addf(&a, "%lld", res->prompt_tokens);
    rq_args_str(&a, "completion_tokens");
    rq_args_addf(&a, "%lld", res->completion_tokens);
    rq_args_str(&a, "drafted_tokens");
    rq_args_addf(&a, "%lld", res->drafted_tokens);
    rq_args_str(&a, "accepted_tokens");
    rq_args_addf(&a, "%lld", res->accepted_tokens);
    rq_args_str(&a, "queue_ms");
    rq_args_addf(&a, "%.3f", res->queue_ms);
    rq_args_str(&a, "ttft_ms");
    rq_args_addf(&a, "%.3f", res->ttft_ms);
    rq_args_str(&a, "total_ms");
    rq_args_addf(&a, "%.3f", res->total_ms);
    rq_add_field(&a, "worker", res->worker ? res->worker : q->consumer);
    rq_add_field(&a, "error", res->error);
    redisReply *r = NULL;
    int rc = rq_eval(q, RQ_SCRIPT_FINISH, &a, &r);
    rq_args_free(&a);
    if (rc == SPECD_OK && (r->type != REDIS_REPLY_INTEGER))
        rc = rq_set_error(q, SPECD_ERR_FORMAT, "finish script: unexpected reply");
    else if (rc == SPECD_OK && r->integer == 0)
        rc = rq_set_error(q, RQ_SOFT_DUPLICATE, "job %s already has a done result; acked only",
                          d->job.id);
    freeReplyObject(r);
    return rc;
}

// ---- text-delta streams ------------------------------------------------------------------------

// XADD <prefix>stream:<id> * <name> <value>, then EXPIRE, in one round trip.
static int rq_stream_add(rq *q, const char *job_id, const char *name, const char *value,
                         size_t len) {
    if (!job_id_is_valid(job_id, strlen(job_id)))
        return rq_set_error(q, SPECD_ERR_INVALID, "invalid job id for a stream");
    char key[JOB_ID_MAX + 512];
    if (rq_key(q, "stream:", job_id, key, sizeof key) != SPECD_OK)
        return rq_set_error(q, SPECD_ERR_INVALID, "key prefix too long");
    struct rq_args cmd[2];
    rq_args_init(&cmd[0]);
    rq_args_init(&cmd[1]);
    rq_args_str(&cmd[0], "XADD");
    rq_args_str(&cmd[0], key);
    rq_args_str(&cmd[0], "*");
    rq_args_str(&cmd[0], name);
    rq_args_add(&cmd[0], value, len);
    rq_args_str(&cmd[1], "EXPIRE");
    rq_args_str(&cmd[1], key);
    rq_args_addf(&cmd[1], "%d", q->p.result_ttl_s);
    redisReply *r[2] = {NULL, NULL};
    int rc = rq_pipeline(q, cmd, 2, 0, r);
    for (int i = 0; i < 2 && rc == SPECD_OK; i++)
        if (r[i]->type == REDIS_REPLY_ERROR)
            rc = rq_set_error(q, SPECD_ERR_IO, "stream %s: %s", key, r[i]->str);
    for (int i = 0; i < 2; i++) {
        freeReplyObject(r[i]);
        rq_args_free(&cmd[i]);
    }
    return rc;
}

int rq_stream_begin(rq *q, const struct rq_delivery *d) {
    if (!q || !d)
        return SPECD_ERR_INVALID;
    if (d->delivery_count <= 1 || !d->job.stream)
        return SPECD_OK;
    return rq_stream_add(q, d->job.id, "reset", "1", 1);
}

int rq_stream_delta(rq *q, const char *job_id, const char *text, size_t len) {
    if (!q || !job_id || (!text && len))
        return SPECD_ERR_INVALID;
    return rq_stream_add(q, job_id, "delta", text ? text : "", len);
}

// ---- reading results ---------------------------------------------------------------------------

void rq_result_clear(struct rq_result *r) {
    if (!r)
        return;
    free(r->storage);
    memset(r, 0, sizeof *r);
}

static const redisReply *rq_hash_get(const redisReply *h, const char *name) {
    for (size_t i = 0; i + 1 < h->elements; i += 2)
        if (h->element[i]->type == REDIS_REPLY_STRING && strcmp(h->element[i]->str, name) == 0 &&
            h->element[i + 1]->type == REDIS_REPLY_STRING)
            return h->element[i + 1];
    return NULL;
}

static long long rq_hash_ll(const redisReply *h, const char *name) {
    const redisReply *v = rq_hash_get(h, name);
    return v ? strtoll(v->str, NULL, 10) : 0;
}

static double rq_hash_double(const redisReply *h, const char *name) {
    const redisReply *v = rq_hash_get(h, name);
    return v ? strtod(v->str, NULL) : 0.0;
}

// Copies the string fields of the hash into one allocation owned by out->storage.
static int rq_result_strings(const redisReply *h, struct rq_result *out) {
    static const char *const names[4] = {"text", "finish_reason", "worker", "error"};
    const redisReply *v[4];
    size_t total = 0;
    for (int i = 0; i < 4; i++) {
        v[i] = rq_hash_get(h, names[i]);
        total += (v[i] ? v[i]->len : 0) + 1;
    }
    char *mem = malloc(total), *p = mem;
    if (!mem)
        return SPECD_ERR_NOMEM;
    const char **dst[4] = {&out->text, &out->finish_reason, &out->worker, &out->error};
    for (int i = 0; i < 4; i++) {
        size_t len = v[i] ? v[i]->len : 0;
        if (len)
            memcpy(p, v[i]->str, len);
        p[len] = '\0';
        *dst[i] = p;
        if (i == 0)
            out->text_len = len;
        p += len + 1;
    }
    out->storage = mem;
    return SPECD_OK;
}

int rq_get_result(rq *q, const char *job_id, struct rq_result *out) {
    if (!q || !job_id || !out)
        return SPECD_ERR_INVALID;
    memset(out, 0, sizeof *out);
    if (!job_id_is_valid(job_id, strlen(job_id)))
        return rq_set_error(q, SPECD_ERR_INVALID, "invalid job id");
    struct rq_args a;
    rq_args_init(&a);
    rq_args_str(&a, "HGETALL");
    rq_args_addf(&a, "%sresult:%s", q->prefix, job_id);
    redisReply *r = NULL;
    int rc = rq_command(q, &a, 0, 0, &r);
    rq_args_free(&a);
    if (rc != SPECD_OK)
        return rc;
    const redisReply *status = NULL;
    if (r->type != REDIS_REPLY_ARRAY) {
        rc = rq_set_error(q, SPECD_ERR_FORMAT, "HGETALL result:%s: not a hash", job_id);
    } else if (r->elements == 0) {
        rc = rq_set_error(q, SPECD_SOFT_EMPTY, "no result for job %s yet", job_id);
    } else if (!(status = rq_hash_get(r, "status")) ||
               (strcmp(status->str, "done") != 0 && strcmp(status->str, "error") != 0)) {
        rc = rq_set_error(q, SPECD_ERR_FORMAT, "result of job %s has no valid status", job_id);
    } else if (rq_result_strings(r, out) != SPECD_OK) {
        rc = rq_set_error(q, SPECD_ERR_NOMEM, "out of memory");
    } else {
        out->status = strcmp(status->str, "done") == 0 ? RQ_RESULT_DONE : RQ_RESULT_ERROR;
        out->prompt_tokens = rq_hash_ll(r, "prompt_tokens");
        out->completion_tokens = rq_hash_ll(r, "completion_tokens");
        out->drafted_tokens = rq_hash_ll(r, "drafted_tokens");
        out->accepted_tokens = rq_hash_ll(r, "accepted_tokens");
        out->queue_ms = rq_hash_double(r, "queue_ms");
        out->ttft_ms = rq_hash_double(r, "ttft_ms");
        out->total_ms = rq_hash_double(r, "total_ms");
    }
    freeReplyObject(r);
    return rc;
}
