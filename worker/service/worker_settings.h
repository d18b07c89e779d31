// The worker's view of the controller's speculation settings: a ZeroMQ SUB socket on the topics
// "s.<worker-id>" and "s.all", and the rules that decide which settings are in force.
//
// Rules (docs/worker.md, "Settings"):
// - At start the safe default (from the config, epoch 0) is in force; fallback is false.
// - A valid message with a higher epoch than the one in force is applied. One with the same
//   epoch refreshes the TTL; a lower epoch is stale and ignored (it does not refresh the TTL).
//   Epoch 0 is reserved for the worker's own default and is ignored when received.
// - When no valid settings arrived for longer than the ttl_ms of those in force, the worker falls
//   back to the safe default (epoch 0) and sets the fallback flag, which its metrics carry.
//   After a fallback any valid epoch is applied again, so a restarted controller whose epochs
//   start over is followed.
// - Malformed messages are counted and logged, never applied.
//
// worker_settings_offer() and worker_settings_expire() are the pure rules (tests drive them with
// their own clock); worker_settings_poll() feeds them from the socket. One thread.
#ifndef SPECD_WORKER_SERVICE_WORKER_SETTINGS_H
#define SPECD_WORKER_SERVICE_WORKER_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/spec_metrics.h"

typedef struct worker_settings worker_settings;

struct worker_settings_params {
    void *zmq_ctx;         // ZeroMQ context (needed when endpoint is set)
    const char *endpoint;  // controller's settings PUB to connect to; NULL or "": no socket
    const char *worker_id; // required, a valid proto worker id
    struct spec_settings safe_default; // epoch must be 0
};

struct worker_settings_params worker_settings_default_params(void);

enum worker_settings_event {
    WORKER_SETTINGS_NONE = 0,      // nothing changed
    WORKER_SETTINGS_APPLIED = 1,   // new settings are in force
    WORKER_SETTINGS_REFRESHED = 2, // the epoch in force was repeated: TTL restarted
    WORKER_SETTINGS_STALE = 3,     // older epoch (or epoch 0): ignored
    WORKER_SETTINGS_FALLBACK = 4,  // TTL expired: the safe default is in force
};

struct worker_settings_stats {
    uint64_t received;  // messages read from the socket (valid or not)
    uint64_t applied;   // WORKER_SETTINGS_APPLIED
    uint64_t refreshed; // WORKER_SETTINGS_REFRESHED
    uint64_t stale;     // WORKER_SETTINGS_STALE
    uint64_t malformed; // bad frames, bad msgpack, invalid values, unknown versions
    uint64_t fallbacks; // WORKER_SETTINGS_FALLBACK
};

// Creates the state and, when params->endpoint is set, a SUB socket connected to it. Returns
// SPECD_OK and sets *out; SPECD_ERR_INVALID (bad worker id, safe default with an epoch or
// failing proto_settings_validate apart from its ttl), SPECD_ERR_IO (socket), SPECD_ERR_NOMEM.
int worker_settings_new(const struct worker_settings_params *params, worker_settings **out,
                        char *err, size_t err_size);
void worker_settings_free(worker_settings *ws); // NULL-safe; closes the socket

// Offers one decoded, valid settings message received at now_ms (any monotonic ms clock).
// Returns the event (APPLIED, REFRESHED or STALE).
enum worker_settings_event worker_settings_offer(worker_settings *ws, const struct spec_settings *s,
                                                 double now_ms);
// Applies the TTL rule at now_ms. Returns FALLBACK when it just fell back, else NONE.
enum worker_settings_event worker_settings_expire(worker_settings *ws, double now_ms);

// Reads every message waiting on the socket without blocking, offers the valid ones, then
// applies the TTL rule. Returns true when the settings in force changed since the last call of
// worker_settings_poll() or worker_settings_take_change() (apply them to the engine).
bool worker_settings_poll(worker_settings *ws, double now_ms);
// True (once) when offer/expire changed the settings in force since the last call.
bool worker_settings_take_change(worker_settings *ws);

// The settings in force (owned by ws, valid until the next call that changes them).
const struct spec_settings *worker_settings_current(const worker_settings *ws);
bool worker_settings_fallback(const worker_settings *ws);
void worker_settings_get_stats(const worker_settings *ws, struct worker_settings_stats *out);

#endif
