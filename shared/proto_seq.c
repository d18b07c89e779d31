// proto_seq_tracker: per-worker sequence-number gap accounting on the controller side.
#include <stdlib.h>
#include <string.h>

#include "shared/proto.h"
#include "shared/status.h"

struct seq_entry {
    char worker_id[PROTO_ID_CAP];
    struct proto_seq_stats stats;
};

struct proto_seq_tracker {
    uint32_t max_workers;
    uint32_t n;
    struct seq_entry *entries; // [max_workers], [0..n) in use
};

struct proto_seq_tracker_params proto_seq_tracker_default_params(void) {
    return (struct proto_seq_tracker_params){.max_workers = 1024};
}

proto_seq_tracker *proto_seq_tracker_new(const struct proto_seq_tracker_params *params) {
    struct proto_seq_tracker_params p = params ? *params : proto_seq_tracker_default_params();
    if (p.max_workers == 0)
        return NULL;
    proto_seq_tracker *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->entries = calloc(p.max_workers, sizeof *t->entries);
    if (!t->entries) {
        free(t);
        return NULL;
    }
    t->max_workers = p.max_workers;
    return t;
}

void proto_seq_tracker_free(proto_seq_tracker *t) {
    if (!t)
        return;
    free(t->entries);
    free(t);
}

// A linear scan: a controller follows tens of workers, and a lookup costs far less than
// decoding the message it accompanies.
static struct seq_entry *find(const proto_seq_tracker *t, const char *worker_id) {
    for (uint32_t i = 0; i < t->n; i++)
        if (strcmp(t->entries[i].worker_id, worker_id) == 0)
            return &t->entries[i];
    return NULL;
}

int proto_seq_tracker_feed(proto_seq_tracker *t, const char *worker_id, uint64_t seq,
                           struct proto_seq_update *out) {
    struct proto_seq_update u = {0};
    if (out)
        *out = u;
    if (!t || !proto_worker_id_valid(worker_id))
        return SPECD_ERR_INVALID;
    struct seq_entry *e = find(t, worker_id);
    if (!e) {
        if (t->n == t->max_workers)
            return SPECD_SOFT_FULL;
        e = &t->entries[t->n++];
        memset(e, 0, sizeof *e);
        strcpy(e->worker_id, worker_id);
        u.first = true;
    } else if (seq > e->stats.last_seq) {
        u.lost = seq - e->stats.last_seq - 1;
    } else {
        // Backwards (or repeated): a new publisher counting from 0 again. Its messages
        // 0..seq-1 went missing.
        u.restart = true;
        u.lost = seq;
        e->stats.restarts++;
    }
    e->stats.received++;
    e->stats.lost += u.lost;
    e->stats.last_seq = seq;
    if (out)
        *out = u;
    return SPECD_OK;
}

int proto_seq_tracker_stats(const proto_seq_tracker *t, const char *worker_id,
                            struct proto_seq_stats *out) {
    const struct seq_entry *e = t && worker_id ? find(t, worker_id) : NULL;
    if (out)
        memset(out, 0, sizeof *out);
    if (!e)
        return SPECD_SOFT_EMPTY;
    if (out)
        *out = e->stats;
    return SPECD_OK;
}

int proto_seq_tracker_forget(proto_seq_tracker *t, const char *worker_id) {
    struct seq_entry *e = t && worker_id ? find(t, worker_id) : NULL;
    if (!e)
        return SPECD_SOFT_EMPTY;
    *e = t->entries[--t->n];
    return SPECD_OK;
}

uint32_t proto_seq_tracker_count(const proto_seq_tracker *t) {
    return t ? t->n : 0;
}
