// Private parts of rq shared by shared/rq_*.c. Not for use outside rq.
#ifndef SPECD_SHARED_RQ_INTERNAL_H
#define SPECD_SHARED_RQ_INTERNAL_H

#include "shared/rq.h"

#include <hiredis/hiredis.h>

enum rq_script { RQ_SCRIPT_FINISH = 0, RQ_SCRIPT_DEAD = 1, RQ_SCRIPT_PRUNE = 2, RQ_SCRIPT_COUNT };

struct rq {
    struct rq_params p; // string fields point to the owned copies below
    char *host, *prefix, *group, *consumer;
    char *key_jobs, *key_dead, *key_done; // full key names
    redisContext *ctx;                    // NULL while disconnected
    int group_ready;                      // the consumer group is known to exist on this connection
    char sha[RQ_SCRIPT_COUNT][41];        // SCRIPT LOAD digests ("" until loaded)
    uint64_t rng;                         // backoff jitter state
    int backoff_attempt;                  // failed connects since the last success
    double retry_at_ms;                   // monotonic time of the next automatic connect attempt
    double next_claim_ms;                 // monotonic time of the next rq_claim() from rq_fetch()
    double next_prune_ms;                 // monotonic time of the next consumer prune
    char claim_cursor[RQ_ID_MAX];         // XAUTOCLAIM cursor
    char conn_err[256];                   // why the last connect failed
    char err[512];                        // rq_last_error()
    struct rq_counters counters;          // rq_get_counters()
};

// A growable command argument list for redisCommandArgv. Strings added with rq_args_add()
// must outlive the call; rq_args_addf() and rq_args_add_copy() keep their own copy.
struct rq_args {
    int n, cap;
    const char **argv;
    size_t *len;
    char **owned;
    int n_owned, cap_owned;
    int oom; // an allocation failed: the command is not sent
};
void rq_args_init(struct rq_args *a);
void rq_args_free(struct rq_args *a);
void rq_args_add(struct rq_args *a, const char *s, size_t len);
void rq_args_str(struct rq_args *a, const char *s);
void rq_args_addf(struct rq_args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Sets q->err and returns status.
int rq_set_error(rq *q, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// Connects if needed and allowed by the backoff schedule. SPECD_OK or RQ_SOFT_DISCONNECTED.
int rq_ensure_connected(rq *q);
// Sleeps until the next reconnect attempt is due (at most max_wait_ms) and tries it.
int rq_wait_reconnect(rq *q, int max_wait_ms);

// Sends n commands in one round trip and reads n replies (the caller frees each with
// freeReplyObject). block_ms widens the socket timeout for a blocking command. Error replies are
// returned as replies (type REDIS_REPLY_ERROR). Returns SPECD_OK, RQ_SOFT_DISCONNECTED (the
// connection is dropped and no reply is returned), SPECD_ERR_NOMEM.
int rq_pipeline(rq *q, struct rq_args *cmds, int n, int block_ms, redisReply **replies);
// One command; like rq_pipeline() but an error reply becomes SPECD_ERR_IO (reply freed,
// message in q->err) unless keep_errors is set.
int rq_command(rq *q, struct rq_args *cmd, int block_ms, int keep_errors, redisReply **reply);
// Runs a Lua script by EVALSHA, loading it on first use or after NOSCRIPT. `a` must start with
// two placeholders ("EVALSHA", "") that this function fills. Error replies become SPECD_ERR_IO.
int rq_eval(rq *q, enum rq_script script, struct rq_args *a, redisReply **reply);

// "<prefix><middle><job_id>" into buf; SPECD_ERR_INVALID when it does not fit.
int rq_key(const rq *q, const char *middle, const char *job_id, char *buf, size_t size);

// Lua sources.
extern const char rq_script_finish_src[];
extern const char rq_script_dead_src[];
extern const char rq_script_prune_src[];

// Consumer helpers.
int rq_ensure_group(rq *q);
// 1 when e is a stream entry [id, [name, value, ...]] whose names and values are strings
// (a field list of NIL is allowed: an entry deleted while pending).
int rq_reply_is_entry(const redisReply *e);

#endif
