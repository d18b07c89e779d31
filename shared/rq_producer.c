// rq: the producer's side — submitting jobs, waiting for results, following text deltas.
#include "shared/clock.h"
#include "shared/rq_internal.h"
#include "shared/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rq_submit(rq *q, const struct job *job, char *entry_id_out, size_t entry_id_size) {
    if (!q || !job || (entry_id_out && entry_id_size == 0))
        return SPECD_ERR_INVALID;
    if (entry_id_out)
        entry_id_out[0] = '\0';
    struct job_encoded enc;
    if (job_encode(job, &enc) != SPECD_OK)
        return rq_set_error(q, SPECD_ERR_INVALID, "job cannot be encoded (bad stop list?)");
    // Validate exactly as a worker with the same limits will.
    struct job check;
    char reason[JOB_REASON_MAX];
    int rc = job_parse(&q->p.job, enc.fields, enc.n_fields, &check, reason, sizeof reason);
    job_clear(&check);
    if (rc != SPECD_OK) {
        job_encoded_clear(&enc);
        return rq_set_error(q, rc, "invalid job: %s", reason);
    }
    struct rq_args a;
    rq_args_init(&a);
    rq_args_str(&a, "XADD");
    rq_args_str(&a, q->key_jobs);
    rq_args_str(&a, "*");
    for (size_t i = 0; i < enc.n_fields; i++) {
        rq_args_add(&a, enc.fields[i].name, enc.fields[i].name_len);
        rq_args_add(&a, enc.fields[i].value, enc.fields[i].value_len);
    }
    redisReply *r = NULL;
    rc = rq_command(q, &a, 0, 0, &r);
    rq_args_free(&a);
    job_encoded_clear(&enc);
    if (rc != SPECD_OK)
        return rc;
    if (r->type != REDIS_REPLY_STRING)
        rc = rq_set_error(q, SPECD_ERR_FORMAT, "XADD: unexpected reply");
    else if (entry_id_out)
        snprintf(entry_id_out, entry_id_size, "%s", r->str);
    freeReplyObject(r);
    return rc;
}

// ---- waiting for a result ----------------------------------------------------------------------

// The id of the last entry of the done stream ("0-0" when empty or absent).
static int rq_done_tail(rq *q, char last[RQ_ID_MAX]) {
    struct rq_args a;
    rq_args_init(&a);
    rq_args_str(&a, "XREVRANGE");
    rq_args_str(&a, q->key_done);
    rq_args_str(&a, "+");
    rq_args_str(&a, "-");
    rq_args_str(&a, "COUNT");
    rq_args_str(&a, "1");
    redisReply *r = NULL;
    int rc = rq_command(q, &a, 0, 0, &r);
    rq_args_free(&a);
    if (rc != SPECD_OK)
        return rc;
    strcpy(last, "0-0");
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2 &&
        r->element[0]->element[0]->type == REDIS_REPLY_STRING &&
        r->element[0]->element[0]->len < RQ_ID_MAX)
        memcpy(last, r->element[0]->element[0]->str, r->element[0]->element[0]->len + 1);
    else if (r->type != REDIS_REPLY_ARRAY)
        rc = rq_set_error(q, SPECD_ERR_FORMAT, "XREVRANGE: unexpected reply");
    freeReplyObject(r);
    return rc;
}

// Blocks up to block_ms for done announcements after `last` (advanced past those read).
// Returns SPECD_OK when job_id was announced, SPECD_SOFT_EMPTY when not (yet).
static int rq_done_wait(rq *q, char last[RQ_ID_MAX], const char *job_id, int block_ms) {
    struct rq_args a;
    rq_args_init(&a);
    rq_args_str(&a, "XREAD");
    rq_args_str(&a, "COUNT");
    rq_args_str(&a, "256");
    rq_args_str(&a, "BLOCK");
    rq_args_addf(&a, "%d", block_ms);
    rq_args_str(&a, "STREAMS");
    rq_args_str(&a, q->key_done);
    rq_args_str(&a, last);
    redisReply *r = NULL;
    int rc = rq_command(q, &a, block_ms, 0, &r);
    rq_args_free(&a);
    if (rc != SPECD_OK)
        return rc;
    rc = SPECD_SOFT_EMPTY;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2) {
        const redisReply *entries = r->element[0]->element[1];
        for (size_t i = 0; entries->type == REDIS_REPLY_ARRAY && i < entries->elements; i++) {
            const redisReply *e = entries->element[i];
            if (!rq_reply_is_entry(e))
                continue;
            memcpy(last, e->element[0]->str, e->element[0]->len + 1);
            const redisReply *kv = e->element[1];
            for (size_t j = 0; kv->type == REDIS_REPLY_ARRAY && j + 1 < kv->elements; j += 2)
                if (strcmp(kv->element[j]->str, "id") == 0 &&
                    strcmp(kv->element[j + 1]->str, job_id) == 0)
                    rc = SPECD_OK;
        }
    }
    freeReplyObject(r);
    return rc;
}

int rq_wait_result(rq *q, const char *job_id, int timeout_ms, struct rq_result *out) {
    if (!q || !job_id || !out || timeout_ms < 0)
        return SPECD_ERR_INVALID;
    memset(out, 0, sizeof *out);
    if (!job_id_is_valid(job_id, strlen(job_id)))
        return rq_set_error(q, SPECD_ERR_INVALID, "invalid job id");
    double deadline = clock_now_ms() + timeout_ms;
    char last[RQ_ID_MAX] = ""; // "" until taken on the current connection
    for (;;) {
        double left = deadline - clock_now_ms();
        if (!q->ctx) {
            int rc = rq_wait_reconnect(q, left > 0 ? (int)left : 0);
            if (rc != SPECD_OK && clock_now_ms() >= deadline)
                return rc;
            if (rc != SPECD_OK)
                continue;
        }
        // Take the tail of the done stream BEFORE looking at the hash: an announcement made
        // after the look is then after `last`, so the XREAD below cannot miss it.
        int rc = last[0] ? SPECD_OK : rq_done_tail(q, last);
        if (rc == SPECD_OK)
            rc = rq_get_result(q, job_id, out);
        if (rc == SPECD_OK || (rc != SPECD_SOFT_EMPTY && rc != RQ_SOFT_DISCONNECTED))
            return rc;
        if (rc == RQ_SOFT_DISCONNECTED) {
            last[0] = '\0';
            continue;
        }
        left = deadline - clock_now_ms();
        if (left <= 0)
            return rq_set_error(q, SPECD_SOFT_EMPTY, "no result for job %s after %d ms", job_id,
                                timeout_ms);
        // Re-check the hash at least every second in case the done stream was trimmed.
        int block = left > 1000 ? 1000 : (int)left;
        rc = rq_done_wait(q, last, job_id, block < 1 ? 1 : block);
        if (rc == RQ_SOFT_DISCONNECTED)
            last[0] = '\0';
        else if (rc != SPECD_OK && rc != SPECD_SOFT_EMPTY)
            return rc;
    }
}

// ---- following text deltas ---------------------------------------------------------------------

void rq_stream_chunk_clear(struct rq_stream_chunk *c) {
    if (!c)
        return;
    free(c->text);
    memset(c, 0, sizeof *c);
}

// Appends the entries of an XREAD reply to `out`, advancing last_id.
static int rq_chunk_append(const redisReply *entries, struct rq_stream_chunk *out, char *last_id,
                           size_t last_id_size) {
    size_t total = out->len;
    for (size_t i = 0; i < entries->elements; i++) {
        if (!rq_reply_is_entry(entries->element[i]))
            return SPECD_ERR_FORMAT;
        const redisReply *kv = entries->element[i]->element[1];
        for (size_t j = 0; kv->type == REDIS_REPLY_ARRAY && j + 1 < kv->elements; j += 2)
            if (strcmp(kv->element[j]->str, "delta") == 0)
                total += kv->element[j + 1]->len;
    }
    char *text = realloc(out->text, total + 1);
    if (!text)
        return SPECD_ERR_NOMEM;
    out->text = text;
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i], *kv = e->element[1];
        for (size_t j = 0; kv->type == REDIS_REPLY_ARRAY && j + 1 < kv->elements; j += 2) {
            const char *name = kv->element[j]->str;
            const redisReply *v = kv->element[j + 1];
            if (strcmp(name, "delta") == 0) {
                memcpy(out->text + out->len, v->str, v->len);
                out->len += v->len;
            } else if (strcmp(name, "reset") == 0) {
                out->len = 0;
                out->reset = 1;
            } else if (strcmp(name, "done") == 0) {
                out->done = 1;
            }
        }
        snprintf(last_id, last_id_size, "%s", e->element[0]->str);
    }
    out->text[out->len] = '\0';
    return SPECD_OK;
}

int rq_read_stream(rq *q, const char *job_id, char *last_id, size_t last_id_size, int block_ms,
                   struct rq_stream_chunk *out) {
    if (!q || !job_id || !last_id || last_id_size < RQ_ID_MAX || !out || block_ms < 0)
        return SPECD_ERR_INVALID;
    memset(out, 0, sizeof *out);
    if (!job_id_is_valid(job_id, strlen(job_id)))
        return rq_set_error(q, SPECD_ERR_INVALID, "invalid job id");
    struct rq_args a;
    rq_args_init(&a);
    rq_args_str(&a, "XREAD");
    rq_args_str(&a, "COUNT");
    rq_args_str(&a, "4096");
    if (block_ms > 0) {
        rq_args_str(&a, "BLOCK");
        rq_args_addf(&a, "%d", block_ms);
    }
    rq_args_str(&a, "STREAMS");
    rq_args_addf(&a, "%sstream:%s", q->prefix, job_id);
    rq_args_str(&a, last_id[0] ? last_id : "0");
    redisReply *r = NULL;
    int rc = rq_command(q, &a, block_ms, 0, &r);
    rq_args_free(&a);
    if (rc != SPECD_OK)
        return rc;
    if (r->type == REDIS_REPLY_NIL) {
        rc = SPECD_SOFT_EMPTY;
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 ||
               r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements != 2 ||
               r->element[0]->element[1]->type != REDIS_REPLY_ARRAY) {
        rc = rq_set_error(q, SPECD_ERR_FORMAT, "XREAD: unexpected reply shape");
    } else {
        rc = rq_chunk_append(r->element[0]->element[1], out, last_id, last_id_size);
        if (rc == SPECD_OK && out->len == 0 && !out->reset && !out->done)
            rc = SPECD_SOFT_EMPTY; // only entries this reader ignores
        if (rc == SPECD_ERR_NOMEM)
            rq_set_error(q, rc, "out of memory");
        else if (rc == SPECD_ERR_FORMAT)
            rq_set_error(q, rc, "XREAD: unexpected entry shape");
    }
    freeReplyObject(r);
    if (rc != SPECD_OK)
        rq_stream_chunk_clear(out);
    return rc;
}
