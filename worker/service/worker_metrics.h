// The worker's metrics publisher: one message per engine step on a ZeroMQ PUB socket connected
// to the controller's SUB, as [ "m.<worker-id>", sequence number, msgpack map ]
// (shared/zmq_msg.h, docs/protocol.md).
//
// Publishing never blocks a step. The bounded queue is the socket's send queue (ZMQ_SNDHWM =
// queue_len messages, ZMQ_XPUB_NODROP so that a full queue is reported instead of discarded
// silently); libzmq's I/O thread drains it. A message that finds the queue full is dropped and
// counted; the cumulative count travels in the next message ("dropped"). Every message, sent or
// dropped, takes the next sequence number (from 0), so the controller sees gaps. Messages
// published while no controller is connected are discarded by ZeroMQ (the gap shows them too).
// One thread.
#ifndef SPECD_WORKER_SERVICE_WORKER_METRICS_H
#define SPECD_WORKER_SERVICE_WORKER_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/spec_metrics.h"

typedef struct worker_metrics worker_metrics;

struct worker_metrics_params {
    void *zmq_ctx;         // ZeroMQ context (needed when endpoint is set)
    const char *endpoint;  // controller's metrics SUB; NULL or "": publish nothing
    const char *worker_id; // required, a valid proto worker id
    const char *model;     // target name (non-printable bytes become '?', cut to 63 chars)
    const char *draft;     // draft / proposer name ("" for none)
    int queue_len;         // messages queued at most (default 1000)
};

struct worker_metrics_params worker_metrics_default_params(void);

struct worker_metrics_stats {
    uint64_t next_seq; // sequence number of the next message
    uint64_t sent;     // queued to the socket
    uint64_t dropped;  // queue full, or the message could not be encoded
};

// Returns SPECD_OK and sets *out; SPECD_ERR_INVALID (bad worker id), SPECD_ERR_IO (socket),
// SPECD_ERR_NOMEM.
int worker_metrics_new(const struct worker_metrics_params *params, worker_metrics **out, char *err,
                       size_t err_size);
void worker_metrics_free(worker_metrics *wm); // NULL-safe

// Publishes the metrics of one step. settings_epoch and fallback describe the settings in force
// during the step; queue_depth counts jobs that wait in the engine. Returns SPECD_OK (queued),
// SPECD_SOFT_EMPTY (no endpoint: nothing published, no sequence number taken), SPECD_SOFT_FULL
// (queue full: dropped), or SPECD_ERR_* (could not encode or send: dropped, reason logged).
int worker_metrics_publish(worker_metrics *wm, const struct spec_step_metrics *m,
                           uint64_t settings_epoch, bool fallback, uint32_t queue_depth);

void worker_metrics_get_stats(const worker_metrics *wm, struct worker_metrics_stats *out);

#endif
