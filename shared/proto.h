// Worker <-> controller wire protocol: msgpack bodies carried in ZeroMQ multipart messages.
// docs/protocol.md is the reference for the wire format; this header is the C side of it.
//
//   metrics  (worker PUB -> controller SUB): [ "m.<worker-id>", seq (8 bytes, big-endian), map ]
//   settings (controller PUB -> worker SUB): [ "s.<worker-id>" or "s.all", map ]
//
// Decoding is strict and never trusts its input: malformed msgpack, wrong types, missing
// required keys, out-of-range numbers and unknown versions give SPECD_ERR_FORMAT (or
// SPECD_ERR_UNSUPPORTED for a version this build does not speak) and a one-line message in `err`.
// Unknown keys are ignored so that newer peers may add optional keys without a version bump.
// Encoding validates the struct by the same rules, so a worker cannot publish what the
// controller would reject.
#ifndef SPECD_SHARED_PROTO_H
#define SPECD_SHARED_PROTO_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/spec_metrics.h"

#define PROTO_VERSION 1         // the "version" key of every message this build writes and reads
#define PROTO_ID_CAP 64         // worker ids: 1..63 chars of [A-Za-z0-9._-], not "all"
#define PROTO_NAME_CAP 64       // model / draft names: 0..63 printable ASCII chars
#define PROTO_TOPIC_CAP 72      // "m." / "s." + worker id + NUL, with room to spare
#define PROTO_SEQ_BYTES 8       // size of the sequence-number frame
#define PROTO_BODY_MAX 65536    // largest msgpack body accepted (real messages are < 4 KiB)
#define PROTO_TOPIC_ALL "s.all" // settings for every worker

// ---- messages --------------------------------------------------------------------------------

// One metrics message: who sent it and what one engine step measured.
struct proto_metrics_msg {
    char worker_id[PROTO_ID_CAP]; // NUL-terminated, must pass proto_worker_id_valid()
    char model[PROTO_NAME_CAP];   // target model name, non-empty
    char draft[PROTO_NAME_CAP];   // draft model / proposer name; "" when none
    uint64_t timestamp_ms;        // wall clock at the end of the step, ms since the Unix epoch
    uint64_t settings_epoch;      // epoch of the settings in force during the step (0 = default)
    bool fallback;                // the worker runs its own default because settings expired
    uint32_t queue_depth;         // jobs waiting for this worker (not yet in the batch)
    uint64_t dropped;             // metrics messages this publisher failed to send, cumulative
    struct spec_step_metrics m;
};

// Encodes `msg` as a msgpack map into `out`, replacing its contents (the caller owns `out`,
// initialised with msgpack_sbuffer_init). Returns 0, SPECD_ERR_INVALID when `msg` breaks a rule
// that the decoder checks (message in err), SPECD_ERR_NOMEM. On failure `out` holds garbage.
int proto_metrics_encode(const struct proto_metrics_msg *msg, msgpack_sbuffer *out, char *err,
                         size_t err_size);
// Decodes one metrics map. Returns 0, SPECD_ERR_FORMAT (malformed, wrong type, missing key, out
// of range), SPECD_ERR_UNSUPPORTED (other version), SPECD_ERR_NOMEM. `out` is fully written on
// success (absent optional keys read as zero) and unspecified on failure.
int proto_metrics_decode(const void *buf, size_t len, struct proto_metrics_msg *out, char *err,
                         size_t err_size);
// The rules both of the above apply. Returns 0 or SPECD_ERR_INVALID with a message.
int proto_metrics_validate(const struct proto_metrics_msg *msg, char *err, size_t err_size);

// Same contract for settings (controller -> worker).
int proto_settings_encode(const struct spec_settings *s, msgpack_sbuffer *out, char *err,
                          size_t err_size);
int proto_settings_decode(const void *buf, size_t len, struct spec_settings *out, char *err,
                          size_t err_size);
int proto_settings_validate(const struct spec_settings *s, char *err, size_t err_size);

// ---- topics and sequence numbers -------------------------------------------------------------

enum proto_topic_kind {
    PROTO_TOPIC_METRICS = 1,      // "m.<worker-id>"
    PROTO_TOPIC_SETTINGS_ONE = 2, // "s.<worker-id>"
    PROTO_TOPIC_SETTINGS_ALL = 3, // "s.all"
};

// 1..63 chars of [A-Za-z0-9._-], and not "all" (reserved for the broadcast topic).
bool proto_worker_id_valid(const char *id);
// Writes "m.<worker_id>" into buf. Returns 0, or SPECD_ERR_INVALID (bad id, cap too small).
int proto_topic_metrics(const char *worker_id, char *buf, size_t cap);
// Writes "s.<worker_id>", or "s.all" when worker_id is NULL. Returns 0 or SPECD_ERR_INVALID.
int proto_topic_settings(const char *worker_id, char *buf, size_t cap);
// Parses a topic frame (not NUL-terminated, exact match: no trailing bytes). On success sets
// *kind and copies the worker id into worker_id ("" for s.all). Returns 0 or SPECD_ERR_FORMAT.
int proto_topic_parse(const void *topic, size_t len, enum proto_topic_kind *kind,
                      char worker_id[PROTO_ID_CAP], char *err, size_t err_size);

void proto_seq_encode(uint64_t seq, unsigned char out[PROTO_SEQ_BYTES]);
uint64_t proto_seq_decode(const unsigned char in[PROTO_SEQ_BYTES]);

// ---- loss accounting on the receiving side ---------------------------------------------------

// Follows the sequence numbers of each worker and counts messages lost in between. A worker's
// first message starts its count (nothing before it is counted). A sequence number lower than
// expected means the publisher restarted (they start from 0): the restart is counted and the
// numbers below it, which the new publisher sent first and we did not see, count as lost.
typedef struct proto_seq_tracker proto_seq_tracker;

struct proto_seq_tracker_params {
    uint32_t max_workers; // workers followed at once; default 1024
};

struct proto_seq_update {
    uint64_t lost; // messages lost just before this one
    bool first;    // first message seen from this worker
    bool restart;  // the sequence went backwards: the worker's publisher restarted
};

struct proto_seq_stats {
    uint64_t received; // messages fed
    uint64_t lost;     // sum of proto_seq_update.lost
    uint64_t restarts;
    uint64_t last_seq;
};

struct proto_seq_tracker_params proto_seq_tracker_default_params(void);
// Returns NULL on allocation failure or max_workers == 0.
proto_seq_tracker *proto_seq_tracker_new(const struct proto_seq_tracker_params *params);
void proto_seq_tracker_free(proto_seq_tracker *t);
// Records `seq` from `worker_id`; `out` may be NULL. Returns 0, SPECD_SOFT_FULL when the worker
// is new and max_workers are already followed (nothing recorded), SPECD_ERR_INVALID for a bad id.
int proto_seq_tracker_feed(proto_seq_tracker *t, const char *worker_id, uint64_t seq,
                           struct proto_seq_update *out);
// Returns 0, or SPECD_SOFT_EMPTY when the worker is not followed (out zeroed).
int proto_seq_tracker_stats(const proto_seq_tracker *t, const char *worker_id,
                            struct proto_seq_stats *out);
// Stops following a worker (e.g. it left). Returns 0 or SPECD_SOFT_EMPTY when not followed.
int proto_seq_tracker_forget(proto_seq_tracker *t, const char *worker_id);
uint32_t proto_seq_tracker_count(const proto_seq_tracker *t);

#endif
