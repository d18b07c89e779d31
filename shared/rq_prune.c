// Removing consumers that are gone: without it, every worker restart (a new "<host>-<pid>") leaves
// one more consumer in the group forever. A consumer is removed only while it holds no pending
// job, checked and deleted inside one Lua script, so a job can never be dropped with it.
#include "shared/log.h"
#include "shared/rq_internal.h"
#include "shared/status.h"

// KEYS: 1 jobs stream. ARGV: 1 group, 2 min idle ms, 3 this consumer, 4 "self" or "others".
// "self": remove this consumer if it holds nothing. "others": remove every other consumer that
// holds nothing and has been idle at least ARGV[2] ms. Returns how many were removed.
const char rq_script_prune_src[] =
    "local ok, list = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])\n"
    "if not ok then return 0 end\n"
    "local removed = 0\n"
    "for _, c in ipairs(list) do\n"
    "  local f = {}\n"
    "  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end\n"
    "  local mine = f['name'] == ARGV[3]\n"
    "  local wanted = (ARGV[4] == 'self' and mine) or\n"
    "                 (ARGV[4] == 'others' and not mine and f['idle'] >= tonumber(ARGV[2]))\n"
    "  if wanted and f['pending'] == 0 then\n"
    "    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])\n"
    "    removed = removed + 1\n"
    "  end\n"
    "end\n"
    "return removed\n";

static int rq_prune(rq *q, long long idle_ms, const char *mode, int *removed) {
    if (removed)
        *removed = 0;
    struct rq_args a;
    rq_args_init(&a);
    rq_args_str(&a, "EVALSHA");
    rq_args_str(&a, ""); // the digest, filled by rq_eval()
    rq_args_str(&a, "1");
    rq_args_str(&a, q->key_jobs);
    rq_args_str(&a, q->group);
    rq_args_addf(&a, "%lld", idle_ms);
    rq_args_str(&a, q->consumer);
    rq_args_str(&a, mode);
    redisReply *r = NULL;
    int rc = rq_eval(q, RQ_SCRIPT_PRUNE, &a, &r);
    rq_args_free(&a);
    if (rc == SPECD_OK && r->type != REDIS_REPLY_INTEGER)
        rc = rq_set_error(q, SPECD_ERR_FORMAT, "consumer prune script: unexpected reply");
    if (rc == SPECD_OK) {
        if (removed)
            *removed = (int)r->integer;
        if (r->integer > 0)
            LOG_INFO("rq_consumers_removed count=%lld mode=%s", r->integer, mode);
    }
    freeReplyObject(r);
    return rc;
}

int rq_prune_consumers(rq *q, long long idle_ms, int *removed) {
    if (!q || idle_ms < 0)
        return SPECD_ERR_INVALID;
    int rc = rq_ensure_connected(q);
    return rc == SPECD_OK ? rq_prune(q, idle_ms, "others", removed) : rc;
}

int rq_retire(rq *q, int *removed) {
    if (!q)
        return SPECD_ERR_INVALID;
    int rc = rq_ensure_connected(q);
    return rc == SPECD_OK ? rq_prune(q, 0, "self", removed) : rc;
}
