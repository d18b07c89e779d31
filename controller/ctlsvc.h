// The controller service: the sockets, the HTTP interface and the Redis policy store around the
// pure algorithm (controller/ctl_algo.h). build/bin/specd-controller is a thin main() around it;
// tests run it in a thread. docs/controller.md is the operator's guide, docs/protocol.md the
// wire contract.
//
// Threads: the caller's thread runs ctlsvc_run() (ZeroMQ receive, algorithm ticks, settings
// publishing); libmicrohttpd runs the HTTP server in its own thread; a store thread talks to
// Redis (loads the persisted policy, persists accepted changes, retries while Redis is down).
// One mutex guards the algorithm and every counter, so HTTP handlers see a consistent state.
//
// Settings epochs on the wire are `epoch_base + n`, n the algorithm's per-worker epoch (1, 2,
// ...) and epoch_base the wall-clock ms at ctlsvc_new(): epochs keep increasing across
// controller restarts, so a worker accepts a restarted controller's settings at once.
#ifndef SPECD_CONTROLLER_CTLSVC_H
#define SPECD_CONTROLLER_CTLSVC_H

#include <stddef.h>
#include <stdint.h>

#include "controller/ctlsvc_config.h"

typedef struct ctlsvc ctlsvc;

// Rebuilds the configuration for SIGHUP (e.g. ctlsvc_config_build with the saved arguments).
// Returns SPECD_OK with *out filled, or an error with a message (the old config stays).
typedef int (*ctlsvc_reload_fn)(void *user, struct ctlsvc_config *out, char *err, size_t err_size);

// Binds the metrics SUB and settings PUB sockets, starts the HTTP server, loads the persisted
// policy from Redis (a stored policy replaces cfg->policy; Redis being down is logged and
// retried in the background) and starts the store thread. Returns NULL with a message in err
// when the configuration is invalid, a socket cannot be bound or out of memory.
ctlsvc *ctlsvc_new(const struct ctlsvc_config *cfg, ctlsvc_reload_fn reload, void *reload_user,
                   char *err, size_t err_size);
// Stops the threads, closes the sockets, frees everything. Accepts NULL. Call after
// ctlsvc_run() has returned.
void ctlsvc_free(ctlsvc *svc);

// Runs the loop until ctlsvc_request_stop(). Returns SPECD_OK, or SPECD_ERR_IO when the metrics
// socket failed for good.
int ctlsvc_run(ctlsvc *svc);
// Async-signal-safe: ask ctlsvc_run() to return / to reload the configuration (through the
// reload callback; endpoints, the HTTP listener and the Redis address are kept).
void ctlsvc_request_stop(ctlsvc *svc);
void ctlsvc_request_reload(ctlsvc *svc);

// Where the service listens (after wildcard ports are resolved): the HTTP port, and the ZeroMQ
// endpoints as ZMQ_LAST_ENDPOINT reports them (e.g. "tcp://127.0.0.1:41234"). Valid until free.
int ctlsvc_http_port(const ctlsvc *svc);
const char *ctlsvc_metrics_endpoint(const ctlsvc *svc);
const char *ctlsvc_settings_endpoint(const ctlsvc *svc);

// The wire epoch offset described above.
uint64_t ctlsvc_epoch_base(const ctlsvc *svc);

#endif
