// rq: the worker's side of the jobs stream — consumer group, reading, reclaiming, touching and
// dead-lettering jobs.
#include "shared/clock.h"
#include "shared/log.h"
#include "shared/rq_internal.h"
#include "shared/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// KEYS: 1 jobs stream, 2 dead stream, 3 done stream, [4 result hash, [5 delta stream]]
// ARGV: 1 group, 2 entry id, 3 job id or "", 4 reason, 5 fields json, 6 ttl s, 7 maxlen,
//       8 xdel 0/1, 9 worker
// Writes an error result (and announces it) only when given a result key that holds no `done`.
const char rq_script_dead_src[] =
    "local result = 0\n"
    "if #KEYS >= 4 and redis.call('HGET', KEYS[4], 'status') ~= 'done' then result = 1 end\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'id', ARGV[3], 'entry', ARGV[2],\n"
    "           'reason', ARGV[4], 'fields', ARGV[5])\n"
    "if result == 1 then\n"
    "  redis.call('DEL', KEYS[4])\n"
    "  redis.call('HSET', KEYS[4], 'status', 'error', 'text', '', 'finish_reason', '',\n"
    "             'prompt_tokens', '0', 'completion_tokens', '0', 'drafted_tokens', '0',\n"
    "             'accepted_tokens', '0', 'queue_ms', '0', 'ttft_ms', '0', 'total_ms', '0',\n"
    "             'worker', ARGV[9], 'error', ARGV[4])\n"
    "  redis.call('EXPIRE', KEYS[4], ARGV[6])\n"
    "  if #KEYS >= 5 then\n"
    "    redis.call('XADD', KEYS[5], '*', 'done', '1')\n"
    "    redis.call('EXPIRE', KEYS[5], ARGV[6])\n"
    "  end\n"
    "  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'id', ARGV[3])\n"
    "end\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "if ARGV[8] == '1' then redis.call('XDEL', KEYS[1], ARGV[2]) end\n"
    "return result\n";

void rq_delivery_clear(struct rq_delivery *d) {
    if (!d)
        return;
    job_clear(&d->job);
    memset(d, 0, sizeof *d);
    job_init(&d->job, NULL);
}

int rq_ensure_group(rq *q) {
    if (q->ctx && q->group_ready)
        return SPECD_OK;
    struct rq_args a;
    rq_args_init(&a);
    rq_args_str(&a, "XGROUP");
    rq_args_str(&a, "CREATE");
    rq_args_str(&a, q->key_jobs);
    rq_args_str(&a, q->group);
    rq_args_str(&a, "0"); // jobs added before the group existed are read too
    rq_args_str(&a, "MKSTREAM");
    redisReply *r = NULL;
    int rc = rq_command(q, &a, 0, 1, &r);
    rq_args_free(&a);
    if (rc != SPECD_OK)
        return rc;
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0)
        rc =
            rq_set_error(q, SPECD_ERR_IO, "XGROUP CREATE %s %s: %s", q->key_jobs, q->group, r->str);
    else
        q->group_ready = 1;
    freeReplyObject(r);
    return rc;
}

// A command on the group: recreates the group once when Redis says NOGROUP (for example after a
// restart of a Redis without persistence). Error replies become SPECD_ERR_IO.
static int rq_group_command(rq *q, struct rq_args *a, int block_ms, redisReply **reply) {
    for (int attempt = 0;; attempt++) {
        int rc = rq_ensure_group(q);
        if (rc == SPECD_OK)
            rc = rq_command(q, a, block_ms, 1, reply);
        if (rc != SPECD_OK)
            return rc;
        if ((*reply)->type != REDIS_REPLY_ERROR)
            return SPECD_OK;
        int nogroup = strncmp((*reply)->str, "NOGROUP", 7) == 0;
        rc = rq_set_error(q, SPECD_ERR_IO, "Redis error for %.*s: %s", (int)a->len[0], a->argv[0],
                          (*reply)->str);
        freeReplyObject(*reply);
        *reply = NULL;
        if (!nogroup || attempt == 1)
            return rc;
        q->group_ready = 0;
    }
}

// ---- dead letter -------------------------------------------------------------------------------

static int rq_dead_letter_fields(rq *q, const char *entry_id, const struct job_field *fields,
                                 size_t n_fields, const char *reason) {
    const char *id = "", *stream = NULL;
    size_t id_len = 0, stream_len = 0;
    if (!job_find_field(fields, n_fields, "id", &id, &id_len) || !job_id_is_valid(id, id_len))
        id = "", id_len = 0;
    int close_stream = id_len > 0 &&
                       job_find_field(fields, n_fields, "stream", &stream, &stream_len) &&
                       stream_len == 1 && stream[0] == '1';
    char *json = job_fields_to_json(fields, n_fields);
    if (!json)
        return rq_set_error(q, SPECD_ERR_NOMEM, "out of memory");
    struct rq_args a;
    rq_args_init(&a);
    rq_args_str(&a, "EVALSHA");
    rq_args_str(&a, "");
    rq_args_str(&a, id_len == 0 ? "3" : close_stream ? "5" : "4");
    rq_args_str(&a, q->key_jobs);
    rq_args_str(&a, q->key_dead);
    rq_args_str(&a, q->key_done);
    if (id_len > 0)
        rq_args_addf(&a, "%sresult:%.*s", q->prefix, (int)id_len, id);
    if (close_stream)
        rq_args_addf(&a, "%sstream:%.*s", q->prefix, (int)id_len, id);
    rq_args_str(&a, q->group);
    rq_args_str(&a, entry_id);
    rq_args_add(&a, id, id_len);
    rq_args_str(&a, reason);
    rq_args_str(&a, json);
    rq_args_addf(&a, "%d", q->p.result_ttl_s);
    rq_args_addf(&a, "%lld", q->p.done_maxlen);
    rq_args_str(&a, q->p.delete_acked ? "1" : "0");
    rq_args_str(&a, q->consumer);
    redisReply *r = NULL;
    int rc = rq_eval(q, RQ_SCRIPT_DEAD, &a, &r);
    rq_args_free(&a);
    free(json);
    freeReplyObject(r);
    if (rc == SPECD_OK) {
        q->counters.dead_letter++;
        LOG_WARN("rq_dead_letter id=%.*s entry=%s reason=\"%s\"", (int)id_len, id, entry_id,
                 reason);
    }
    return rc;
}

int rq_dead_letter(rq *q, const struct rq_delivery *d, const char *reason) {
    if (!q || !d || !reason)
        return SPECD_ERR_INVALID;
    struct job_encoded enc;
    if (job_encode(&d->job, &enc) != SPECD_OK)
        return rq_set_error(q, SPECD_ERR_NOMEM, "out of memory encoding job %s", d->job.id);
    int rc = rq_dead_letter_fields(q, d->entry_id, enc.fields, enc.n_fields, reason);
    job_encoded_clear(&enc);
    return rc;
}

// ---- entries -> deliveries ---------------------------------------------------------------------

int rq_reply_is_entry(const redisReply *e) {
    if (!e || e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING || e->element[0]->len >= RQ_ID_MAX)
        return 0;
    const redisReply *kv = e->element[1];
    if (kv->type == REDIS_REPLY_NIL)
        return 1;
    if (kv->type != REDIS_REPLY_ARRAY || kv->elements % 2 != 0)
        return 0;
    for (size_t i = 0; i < kv->elements; i++)
        if (kv->element[i]->type != REDIS_REPLY_STRING)
            return 0;
    return 1;
}

// The fields of a valid entry as job fields (malloc'ed array; caller frees), or NULL when out
// of memory.
static struct job_field *rq_entry_fields(const redisReply *e, size_t *n) {
    const redisReply *kv = e->element[1];
    *n = kv->type == REDIS_REPLY_ARRAY ? kv->elements / 2 : 0;
    struct job_field *f = calloc(*n ? *n : 1, sizeof *f);
    for (size_t i = 0; f && i < *n; i++)
        f[i] = (struct job_field){kv->element[2 * i]->str, kv->element[2 * i]->len,
                                  kv->element[2 * i + 1]->str, kv->element[2 * i + 1]->len};
    return f;
}

// Turns one stream entry [id, [name, value, ...]] into a delivery. Returns SPECD_OK, or
// SPECD_SOFT_EMPTY when the entry was malformed and went to dead letter, or an error.
static int rq_take_entry(rq *q, const redisReply *e, long long count, struct rq_delivery *d) {
    const redisReply *id = e->element[0];
    size_t n = 0;
    struct job_field *f = rq_entry_fields(e, &n);
    if (!f)
        return rq_set_error(q, SPECD_ERR_NOMEM, "out of memory");
    memset(d, 0, sizeof *d);
    char reason[JOB_REASON_MAX];
    int rc = job_parse(&q->p.job, f, n, &d->job, reason, sizeof reason);
    if (rc == SPECD_ERR_FORMAT) {
        rc = rq_dead_letter_fields(q, id->str, f, n, reason);
        free(f);
        q->counters.malformed += rc == SPECD_OK;
        return rc == SPECD_OK ? SPECD_SOFT_EMPTY : rc;
    }
    free(f);
    if (rc != SPECD_OK)
        return rq_set_error(q, rc, "entry %s: %s", id->str, reason);
    snprintf(d->entry_id, sizeof d->entry_id, "%s", id->str);
    d->delivery_count = count;
    d->enqueued_ms = strtoull(id->str, NULL, 10);
    d->received_ms = clock_wall_ms();
    return SPECD_OK;
}

// The number of deliveries of one pending entry (XPENDING key group id id 1), or -1.
static long long rq_delivery_count(rq *q, const char *entry_id, int *rc) {
    struct rq_args a;
    rq_args_init(&a);
    rq_args_str(&a, "XPENDING");
    rq_args_str(&a, q->key_jobs);
    rq_args_str(&a, q->group);
    rq_args_str(&a, entry_id);
    rq_args_str(&a, entry_id);
    rq_args_str(&a, "1");
    redisReply *r = NULL;
    *rc = rq_group_command(q, &a, 0, &r);
    rq_args_free(&a);
    long long count = -1;
    if (*rc == SPECD_OK && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 4 &&
        r->element[0]->element[3]->type == REDIS_REPLY_INTEGER)
        count = r->element[0]->element[3]->integer;
    freeReplyObject(r);
    return count;
}

// ---- reading -----------------------------------------------------------------------------------

int rq_read(rq *q, size_t room, int block_ms, struct rq_delivery *out, size_t *n_out) {
    if (!q || !n_out || (room && !out))
        return SPECD_ERR_INVALID;
    *n_out = 0;
    if (room == 0)
        return SPECD_SOFT_EMPTY;
    if (block_ms < 0)
        block_ms = q->p.block_ms;
    if (!q->ctx && block_ms > 0) {
        double t0 = clock_now_ms();
        int rc = rq_wait_reconnect(q, block_ms);
        if (rc != SPECD_OK)
            return rc;
        block_ms -= (int)(clock_now_ms() - t0);
        if (block_ms < 1)
            block_ms = 1;
    }
    struct rq_args a;
    rq_args_init(&a);
    rq_args_str(&a, "XREADGROUP");
    rq_args_str(&a, "GROUP");
    rq_args_str(&a, q->group);
    rq_args_str(&a, q->consumer);
    rq_args_str(&a, "COUNT");
    rq_args_addf(&a, "%zu", room);
    if (block_ms > 0) {
        rq_args_str(&a, "BLOCK");
        rq_args_addf(&a, "%d", block_ms);
    }
    rq_args_str(&a, "STREAMS");
    rq_args_str(&a, q->key_jobs);
    rq_args_str(&a, ">");
    redisReply *r = NULL;
    int rc = rq_group_command(q, &a, block_ms, &r);
    rq_args_free(&a);
    if (rc != SPECD_OK)
        return rc;
    if (r->type == REDIS_REPLY_NIL) {
        freeReplyObject(r);
        return SPECD_SOFT_EMPTY;
    }
    const redisReply *entries = NULL;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2 &&
        r->element[0]->element[1]->type == REDIS_REPLY_ARRAY)
        entries = r->element[0]->element[1];
    if (!entries) {
        freeReplyObject(r);
        return rq_set_error(q, SPECD_ERR_FORMAT, "XREADGROUP: unexpected reply shape");
    }
    for (size_t i = 0; i < entries->elements && *n_out < room; i++) {
        const redisReply *e = entries->element[i];
        if (!rq_reply_is_entry(e)) {
            rc = rq_set_error(q, SPECD_ERR_FORMAT, "XREADGROUP: unexpected entry shape");
            break;
        }
        rc = rq_take_entry(q, e, 1, &out[*n_out]);
        if (rc == SPECD_OK)
            (*n_out)++;
        else if (rc != SPECD_SOFT_EMPTY)
            break; // the rest stays pending and will be reclaimed
        rc = SPECD_OK;
    }
    freeReplyObject(r);
    if (*n_out > 0)
        return SPECD_OK;
    return rc == SPECD_OK ? SPECD_SOFT_EMPTY : rc;
}

// Handles one entry claimed from a dead consumer.
static int rq_take_claimed(rq *q, const redisReply *e, struct rq_delivery *d) {
    const char *id = e->element[0]->str;
    if (e->element[1]->type == REDIS_REPLY_NIL) // deleted from the stream while pending
        return SPECD_SOFT_EMPTY;
    int rc = SPECD_OK;
    long long count = rq_delivery_count(q, id, &rc);
    if (rc != SPECD_OK)
        return rc;
    if (count < 0) // acked by its old owner in the meantime
        return SPECD_SOFT_EMPTY;
    if (count > q->p.max_deliveries) {
        char reason[200];
        snprintf(reason, sizeof reason,
                 "delivered %lld times, more than max_deliveries %d (workers keep dying on it)",
                 count, q->p.max_deliveries);
        size_t n = 0;
        struct job_field *f = rq_entry_fields(e, &n);
        if (!f)
            return rq_set_error(q, SPECD_ERR_NOMEM, "out of memory");
        rc = rq_dead_letter_fields(q, id, f, n, reason);
        free(f);
        q->counters.poisoned += rc == SPECD_OK;
        return rc == SPECD_OK ? SPECD_SOFT_EMPTY : rc;
    }
    return rq_take_entry(q, e, count, d);
}

int rq_claim(rq *q, size_t room, struct rq_delivery *out, size_t *n_out) {
    if (!q || !n_out || (room && !out))
        return SPECD_ERR_INVALID;
    *n_out = 0;
    if (room == 0)
        return SPECD_SOFT_EMPTY;
    struct rq_args a;
    rq_args_init(&a);
    rq_args_str(&a, "XAUTOCLAIM");
    rq_args_str(&a, q->key_jobs);
    rq_args_str(&a, q->group);
    rq_args_str(&a, q->consumer);
    rq_args_addf(&a, "%d", q->p.claim_idle_ms);
    rq_args_str(&a, q->claim_cursor);
    rq_args_str(&a, "COUNT");
    rq_args_addf(&a, "%zu", room);
    redisReply *r = NULL;
    int rc = rq_group_command(q, &a, 0, &r);
    rq_args_free(&a);
    if (rc != SPECD_OK)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= RQ_ID_MAX ||
        r->element[1]->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return rq_set_error(q, SPECD_ERR_FORMAT, "XAUTOCLAIM: unexpected reply shape");
    }
    memcpy(q->claim_cursor, r->element[0]->str, r->element[0]->len + 1);
    const redisReply *entries = r->element[1];
    for (size_t i = 0; i < entries->elements && *n_out < room; i++) {
        const redisReply *e = entries->element[i];
        if (e->type == REDIS_REPLY_NIL)
            continue; // Redis 6.2: an entry deleted while pending
        if (!rq_reply_is_entry(e)) {
            rc = rq_set_error(q, SPECD_ERR_FORMAT, "XAUTOCLAIM: unexpected entry shape");
            break;
        }
        rc = rq_take_claimed(q, e, &out[*n_out]);
        if (rc == SPECD_OK) {
            LOG_INFO("rq_reclaimed id=%s entry=%s deliveries=%lld", out[*n_out].job.id,
                     out[*n_out].entry_id, out[*n_out].delivery_count);
            (*n_out)++;
        } else if (rc != SPECD_SOFT_EMPTY) {
            break;
        }
        rc = SPECD_OK;
    }
    freeReplyObject(r);
    if (*n_out > 0)
        return SPECD_OK;
    return rc == SPECD_OK ? SPECD_SOFT_EMPTY : rc;
}

int rq_fetch(rq *q, size_t room, int block_ms, struct rq_delivery *out, size_t *n_out) {
    if (!q || !n_out || (room && !out))
        return SPECD_ERR_INVALID;
    *n_out = 0;
    size_t n = 0;
    int rc = SPECD_SOFT_EMPTY;
    double now = clock_now_ms();
    if (room > 0 && now >= q->next_claim_ms && q->ctx) {
        rc = rq_claim(q, room, out, &n);
        int period = q->p.claim_idle_ms / 4 > 0 ? q->p.claim_idle_ms / 4 : 1;
        // A full batch may mean more are waiting: look again on the next call.
        q->next_claim_ms = n == room ? now : now + period;
        if (rc != SPECD_OK && rc != SPECD_SOFT_EMPTY && rc != RQ_SOFT_DISCONNECTED)
            return *n_out = n, rc;
    }
    if (q->p.prune_idle_ms > 0 && now >= q->next_prune_ms && q->ctx) {
        q->next_prune_ms = now + (q->p.prune_idle_ms / 4 > 1000 ? q->p.prune_idle_ms / 4 : 1000);
        if (rq_prune_consumers(q, q->p.prune_idle_ms, NULL) != SPECD_OK)
            LOG_WARN("rq_prune_failed error=\"%s\"", rq_last_error(q));
    }
    if (n < room) {
        size_t m = 0;
        rc = rq_read(q, room - n, n > 0 ? 0 : block_ms, out + n, &m);
        n += m;
    }
    *n_out = n;
    return n > 0 ? SPECD_OK : rc;
}

int rq_touch(rq *q, const char *const *entry_ids, size_t n) {
    if (!q || (n && !entry_ids))
        return SPECD_ERR_INVALID;
    if (n == 0)
        return SPECD_OK;
    struct rq_args a;
    rq_args_init(&a);
    rq_args_str(&a, "XCLAIM");
    rq_args_str(&a, q->key_jobs);
    rq_args_str(&a, q->group);
    rq_args_str(&a, q->consumer);
    rq_args_str(&a, "0");
    for (size_t i = 0; i < n; i++)
        rq_args_str(&a, entry_ids[i]);
    rq_args_str(&a, "JUSTID");
    redisReply *r = NULL;
    int rc = rq_group_command(q, &a, 0, &r);
    rq_args_free(&a);
    freeReplyObject(r);
    return rc;
}

void rq_get_counters(const rq *q, struct rq_counters *out) {
    *out = q->counters;
}
