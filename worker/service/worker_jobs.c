// What happens to one job in the worker: intake (tokenize, validate, add to the engine),
// streaming deltas, capturing the result, writing it (or a dead letter) with retries.
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "shared/check.h"
#include "shared/clock.h"
#include "shared/log.h"
#include "shared/status.h"
#include "worker/engine/tok.h"
#include "worker/service/worker_internal.h"

// ---- intake ------------------------------------------------------------------------------------

static struct wjob *free_slot(worker *w) {
    for (int i = 0; i < w->cfg.max_inflight; i++)
        if (w->jobs[i].phase == WJOB_FREE)
            return &w->jobs[i];
    return NULL;
}

static bool is_held(const worker *w, const char *entry_id) {
    for (int i = 0; i < w->cfg.max_inflight; i++)
        if (w->jobs[i].phase != WJOB_FREE && strcmp(w->jobs[i].d.entry_id, entry_id) == 0)
            return true;
    return false;
}

// Tokenizes the prompt (BOS added as the vocabulary asks) into w->tokens. Returns the count or
// a negative status.
static int tokenize(worker *w, const struct job *job) {
    const tok *t = engine_tokenizer(w->e);
    for (;;) {
        int n = tok_encode(t, job->prompt, job->prompt_len, true, false, w->tokens, w->tokens_cap);
        if (n < 0 || n <= w->tokens_cap)
            return n;
        int32_t *grown = realloc(w->tokens, sizeof *grown * (size_t)n);
        if (!grown)
            return SPECD_ERR_NOMEM;
        w->tokens = grown;
        w->tokens_cap = n;
    }
}

// Adds the job of slot j to the engine. Returns SPECD_OK, or an error with the reason (the
// caller dead-letters it for SPECD_ERR_INVALID).
static int add_to_engine(worker *w, struct wjob *j, char *why, size_t why_size) {
    const struct job *job = &j->d.job;
    int n = tokenize(w, job);
    if (n < 0)
        return specd_fail(why, why_size, n == SPECD_ERR_NOMEM ? n : SPECD_ERR_INVALID,
                          "prompt: cannot tokenize (%s)", specd_status_name(n));
    const int32_t n_ctx = engine_n_ctx(w->e);
    if (n + 1 > n_ctx)
        return specd_fail(why, why_size, SPECD_ERR_INVALID,
                          "prompt: %d tokens do not fit the context of %d tokens (prompt + 1 "
                          "generated token at least)",
                          n, n_ctx);
    struct engine_request req = {
        .prompt = w->tokens,
        .n_prompt = n,
        .max_tokens = job->max_tokens,
        .sampling = sampler_default_params(),
        .stop = job->stop,
        .n_stop = job->n_stop,
        .class_name = job->class_label[0] ? job->class_label : NULL,
        .priority =
            job->priority == JOB_PRIORITY_HIGH ? ENGINE_PRIORITY_HIGH : ENGINE_PRIORITY_NORMAL,
        .user = j,
    };
    req.sampling.temperature = (float)job->temperature;
    req.sampling.top_p = (float)job->top_p;
    req.sampling.top_k = job->top_k;
    // No seed: one derived from the job id, so a reclaimed job generates the same text.
    req.sampling.seed = job->has_seed ? job->seed : XXH64(job->id, strlen(job->id), 0);
    char engine_why[256];
    int rc = engine_add(w->e, &req, &j->engine_id, engine_why, sizeof engine_why);
    if (rc != SPECD_OK)
        return specd_fail(why, why_size, rc, "%s", engine_why);
    j->wall_added_ms = clock_wall_ms();
    return SPECD_OK;
}

static void start_job(worker *w, struct rq_delivery *d) {
    if (is_held(w, d->entry_id)) { // our own job came back through a reclaim: keep the first
        rq_delivery_clear(d);
        return;
    }
    struct wjob *j = free_slot(w);
    SPECD_CHECK(j != NULL); // rq_fetch() never returns more than the room asked for
    memset(j, 0, sizeof *j);
    j->d = *d;
    memset(d, 0, sizeof *d);
    w->n_held++;
    char why[512];
    int rc = add_to_engine(w, j, why, sizeof why);
    if (rc == SPECD_OK) {
        j->phase = WJOB_RUNNING;
        j->reset_pending = j->d.job.stream && j->d.delivery_count > 1;
        w->stats.jobs_started++;
        LOG_INFO("job_start id=%s entry=%s deliveries=%lld max_tokens=%d stream=%d class=%s",
                 j->d.job.id, j->d.entry_id, j->d.delivery_count, j->d.job.max_tokens,
                 j->d.job.stream, j->d.job.class_label[0] ? j->d.job.class_label : "default");
    } else if (rc == SPECD_ERR_INVALID) {
        j->phase = WJOB_DEAD;
        snprintf(j->reason, sizeof j->reason, "%s", why);
    } else { // out of memory: leave it pending; it is reclaimed later
        LOG_ERROR("job_not_started id=%s entry=%s reason=\"%s\"", j->d.job.id, j->d.entry_id, why);
        rq_delivery_clear(&j->d);
        j->phase = WJOB_FREE;
        w->n_held--;
    }
}

bool worker_intake(worker *w, int block_ms) {
    const int room = w->cfg.max_inflight - w->n_held;
    if (room <= 0)
        return false;
    size_t n = 0;
    int rc = rq_fetch(w->q, (size_t)room, block_ms, w->fetched, &n);
    for (size_t i = 0; i < n; i++)
        start_job(w, &w->fetched[i]);
    if (rc < 0)
        LOG_ERROR("redis_read_failed status=%s reason=\"%s\"", specd_status_name(rc),
                  rq_last_error(w->q));
    return true;
}

// ---- progress and results ----------------------------------------------------------------------

static void free_job(worker *w, struct wjob *j) {
    rq_delivery_clear(&j->d);
    free(j->text);
    memset(j, 0, sizeof *j);
    w->n_held--;
}

// Notes a failed write. Returns true when the job should be given up (left pending).
static bool write_failed(worker *w, struct wjob *j, const char *what, int rc) {
    w->stats.write_retries++;
    if (rc == RQ_SOFT_DISCONNECTED)
        return false;
    j->failures++;
    LOG_ERROR("redis_write_failed what=%s id=%s status=%s attempt=%d reason=\"%s\"", what,
              j->d.job.id, specd_status_name(rc), j->failures, rq_last_error(w->q));
    return j->failures >= WJOB_MAX_FAILURES;
}

// Writes the text of a streaming job beyond what was written. Returns true when all of
// text[0..len) has been written (or streaming was given up after repeated Redis errors).
static bool push_deltas(worker *w, struct wjob *j, const char *text, size_t len) {
    if (!j->d.job.stream)
        return true;
    if (j->reset_pending) {
        int rc = rq_stream_begin(w->q, &j->d);
        if (rc != SPECD_OK && !write_failed(w, j, "stream_reset", rc))
            return false;
        j->reset_pending = false;
    }
    if (len > j->streamed) {
        int rc = rq_stream_delta(w->q, j->d.job.id, text + j->streamed, len - j->streamed);
        if (rc != SPECD_OK && !write_failed(w, j, "stream_delta", rc))
            return false;
        j->streamed = len;
    }
    return true;
}

static void capture_result(worker *w, struct wjob *j, const struct engine_output *out) {
    j->text = malloc(out->text_len + 1);
    SPECD_CHECK(j->text != NULL);
    memcpy(j->text, out->text, out->text_len);
    j->text[out->text_len] = '\0';
    snprintf(j->finish_reason, sizeof j->finish_reason, "%s", engine_finish_name(out->finish));
    const bool failed = out->finish == ENGINE_FINISH_ERROR;
    if (failed)
        snprintf(j->reason, sizeof j->reason, "the compute backend failed during the job");
    // Times count from the job's entry into the jobs stream (the producer's view).
    const double waited =
        j->wall_added_ms > j->d.enqueued_ms ? (double)(j->wall_added_ms - j->d.enqueued_ms) : 0.0;
    j->result = (struct rq_result){
        .status = failed ? RQ_RESULT_ERROR : RQ_RESULT_DONE,
        .text = j->text,
        .text_len = out->text_len,
        .finish_reason = j->finish_reason,
        .prompt_tokens = out->n_prompt,
        .completion_tokens = out->n_tokens,
        .drafted_tokens = out->drafted,
        .accepted_tokens = out->accepted,
        .queue_ms = waited + out->queue_ms,
        .ttft_ms = waited + out->ttft_ms,
        .total_ms = waited + out->total_ms,
        .worker = w->id,
        .error = j->reason,
    };
    j->phase = WJOB_FINISHED;
    engine_release(w->e, j->engine_id);
}

static void write_result(worker *w, struct wjob *j) {
    if (!push_deltas(w, j, j->text, j->result.text_len))
        return;
    int rc = rq_finish(w->q, &j->d, &j->result);
    if (rc == SPECD_OK || rc == RQ_SOFT_DUPLICATE) {
        w->stats.jobs_done++;
        w->stats.jobs_duplicate += rc == RQ_SOFT_DUPLICATE;
        LOG_INFO("job_done id=%s status=%s finish=%s prompt_tokens=%lld tokens=%lld drafted=%lld "
                 "accepted=%lld ttft_ms=%.1f total_ms=%.1f%s",
                 j->d.job.id, j->result.status == RQ_RESULT_DONE ? "done" : "error",
                 j->finish_reason, j->result.prompt_tokens, j->result.completion_tokens,
                 j->result.drafted_tokens, j->result.accepted_tokens, j->result.ttft_ms,
                 j->result.total_ms, rc == RQ_SOFT_DUPLICATE ? " duplicate=1" : "");
        free_job(w, j);
    } else if (write_failed(w, j, "result", rc)) {
        LOG_ERROR("job_given_up id=%s entry=%s: left pending for another worker", j->d.job.id,
                  j->d.entry_id);
        free_job(w, j);
    }
}

static void write_dead_letter(worker *w, struct wjob *j) {
    int rc = rq_dead_letter(w->q, &j->d, j->reason);
    if (rc == SPECD_OK) {
        w->stats.jobs_dead++;
        LOG_WARN("job_dead id=%s entry=%s reason=\"%s\"", j->d.job.id, j->d.entry_id, j->reason);
        free_job(w, j);
    } else if (write_failed(w, j, "dead_letter", rc)) {
        free_job(w, j);
    }
}

uint32_t worker_progress(worker *w) {
    uint32_t waiting = 0;
    for (int i = 0; i < w->cfg.max_inflight; i++) {
        struct wjob *j = &w->jobs[i];
        if (j->phase == WJOB_RUNNING) {
            struct engine_output out;
            SPECD_CHECK(engine_get_output(w->e, j->engine_id, &out) == SPECD_OK);
            if (out.state == ENGINE_STATE_FINISHED)
                capture_result(w, j, &out);
            else if (out.state == ENGINE_STATE_WAITING || out.state == ENGINE_STATE_PREEMPTED)
                waiting++;
            else
                push_deltas(w, j, out.text, out.text_len);
        }
        if (j->phase == WJOB_FINISHED)
            write_result(w, j);
        else if (j->phase == WJOB_DEAD)
            write_dead_letter(w, j);
    }
    return waiting;
}

void worker_touch(worker *w, double now_ms) {
    if (now_ms < w->next_touch_ms)
        return;
    const int period = w->cfg.claim_idle_ms / 3 > 0 ? w->cfg.claim_idle_ms / 3 : 1;
    w->next_touch_ms = now_ms + period;
    const char **ids = w->touch_ids;
    size_t n = 0;
    for (int i = 0; i < w->cfg.max_inflight; i++)
        if (w->jobs[i].phase != WJOB_FREE)
            ids[n++] = w->jobs[i].d.entry_id;
    if (n == 0 || !rq_is_connected(w->q))
        return;
    int rc = rq_touch(w->q, ids, n);
    if (rc < 0)
        LOG_WARN("redis_touch_failed jobs=%zu status=%s reason=\"%s\"", n, specd_status_name(rc),
                 rq_last_error(w->q));
}

int worker_abandon_all(worker *w) {
    int n = 0;
    for (int i = 0; i < w->cfg.max_inflight; i++) {
        struct wjob *j = &w->jobs[i];
        if (j->phase == WJOB_FREE)
            continue;
        if (j->phase == WJOB_RUNNING) {
            engine_abort(w->e, j->engine_id);
            engine_release(w->e, j->engine_id);
        }
        LOG_WARN("job_abandoned id=%s entry=%s phase=%d: left pending for another worker",
                 j->d.job.id, j->d.entry_id, (int)j->phase);
        free_job(w, j);
        n++;
    }
    w->stats.jobs_abandoned += (uint64_t)n;
    return n;
}
