// Non-blocking metrics publisher; see worker_metrics.h.
#include "worker/service/worker_metrics.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "shared/clock.h"
#include "shared/log.h"
#include "shared/proto.h"
#include "shared/status.h"
#include "shared/zmq_msg.h"

struct worker_metrics {
    void *sock; // PUB, or NULL when disabled
    struct proto_metrics_msg msg;
    msgpack_sbuffer scratch;
    struct worker_metrics_stats stats;
};

struct worker_metrics_params worker_metrics_default_params(void) {
    return (struct worker_metrics_params){.queue_len = 1000};
}

// Copies a name as printable ASCII of at most PROTO_NAME_CAP - 1 chars.
static void copy_name(char *dst, const char *src) {
    size_t i = 0;
    for (; src && src[i] && i + 1 < PROTO_NAME_CAP; i++)
        dst[i] = src[i] >= ' ' && src[i] <= '~' ? src[i] : '?';
    dst[i] = '\0';
}

int worker_metrics_new(const struct worker_metrics_params *params, worker_metrics **out, char *err,
                       size_t err_size) {
    *out = NULL;
    if (!params || !params->worker_id || !proto_worker_id_valid(params->worker_id))
        return specd_fail(err, err_size, SPECD_ERR_INVALID, "metrics: bad worker id");
    worker_metrics *wm = calloc(1, sizeof *wm);
    if (!wm)
        return specd_fail(err, err_size, SPECD_ERR_NOMEM, "metrics: out of memory");
    msgpack_sbuffer_init(&wm->scratch);
    snprintf(wm->msg.worker_id, sizeof wm->msg.worker_id, "%s", params->worker_id);
    copy_name(wm->msg.model, params->model);
    if (!wm->msg.model[0])
        strcpy(wm->msg.model, "unknown");
    copy_name(wm->msg.draft, params->draft);
    if (params->endpoint && params->endpoint[0]) {
        int rc = SPECD_OK;
        wm->sock = params->zmq_ctx ? zmq_socket(params->zmq_ctx, ZMQ_PUB) : NULL;
        if (!wm->sock)
            rc = specd_fail(err, err_size, SPECD_ERR_IO, "metrics: cannot create the PUB socket");
        if (rc == SPECD_OK)
            rc = zmsg_configure_publisher(
                wm->sock, params->queue_len > 0 ? params->queue_len : 1000, true, err, err_size);
        if (rc == SPECD_OK && zmq_connect(wm->sock, params->endpoint) != 0)
            rc = specd_fail(err, err_size, SPECD_ERR_IO, "metrics: cannot connect to %s: %s",
                            params->endpoint, zmq_strerror(zmq_errno()));
        if (rc != SPECD_OK) {
            worker_metrics_free(wm);
            return rc;
        }
    }
    *out = wm;
    return SPECD_OK;
}

void worker_metrics_free(worker_metrics *wm) {
    if (!wm)
        return;
    if (wm->sock)
        zmq_close(wm->sock);
    msgpack_sbuffer_destroy(&wm->scratch);
    free(wm);
}

int worker_metrics_publish(worker_metrics *wm, const struct spec_step_metrics *m,
                           uint64_t settings_epoch, bool fallback, uint32_t queue_depth) {
    if (!wm->sock)
        return SPECD_SOFT_EMPTY;
    struct proto_metrics_msg *msg = &wm->msg;
    msg->timestamp_ms = clock_wall_ms();
    msg->settings_epoch = settings_epoch;
    msg->fallback = fallback;
    msg->queue_depth = queue_depth;
    msg->dropped = wm->stats.dropped;
    msg->m = *m;
    const uint64_t seq = wm->stats.next_seq++;
    char why[256] = "";
    int rc = zmsg_publish_metrics(wm->sock, msg, seq, &wm->scratch, why, sizeof why);
    if (rc == SPECD_OK) {
        wm->stats.sent++;
        return SPECD_OK;
    }
    wm->stats.dropped++;
    if (rc == SPECD_SOFT_FULL) {
        if (wm->stats.dropped == 1 || wm->stats.dropped % 1000 == 0)
            LOG_WARN("metrics_dropped count=%llu reason=\"queue full\"",
                     (unsigned long long)wm->stats.dropped);
    } else {
        LOG_ERROR("metrics_publish_failed seq=%llu status=%s reason=\"%s\"",
                  (unsigned long long)seq, specd_status_name(rc), why);
    }
    return rc;
}

void worker_metrics_get_stats(const worker_metrics *wm, struct worker_metrics_stats *out) {
    *out = wm->stats;
}
