// ZeroMQ framing of the proto messages, shared by the worker's publisher and the controller.
// docs/protocol.md describes the sockets, topics and frames.
//
// Sockets are the caller's (void * from zmq_socket); these functions only configure them and
// move whole multipart messages. A message is never half sent or half received: on return the
// socket is at a message boundary (except after SPECD_ERR_STATE from a send, see there).
#ifndef SPECD_SHARED_ZMQ_MSG_H
#define SPECD_SHARED_ZMQ_MSG_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/proto.h"

#define ZMSG_FRAMES_METRICS 3  // topic, sequence number, body
#define ZMSG_FRAMES_SETTINGS 2 // topic, body

// One received message. About 64 KiB: allocate it once on the heap and reuse it.
struct zmsg_message {
    char topic[PROTO_TOPIC_CAP];        // frame 0, NUL-terminated copy
    size_t topic_len;                   // bytes in frame 0
    unsigned n_frames;                  // frames the message had
    uint64_t seq;                       // frame 1 of a metrics message, else 0
    size_t body_len;                    // bytes in the last frame
    unsigned char body[PROTO_BODY_MAX]; // the last frame
};

// Socket options; call before bind/connect. Both set ZMQ_LINGER 0.
// Publisher: ZMQ_SNDHWM = sndhwm messages (> 0). nodrop sets ZMQ_XPUB_NODROP so that a full
// queue makes a send fail with EAGAIN (returned as SPECD_SOFT_FULL, so the worker counts the
// drop) instead of discarding silently. Use it on the worker's metrics PUB (one subscriber);
// not on the controller's settings PUB, where one stuck worker would block every other.
// Subscriber: ZMQ_RCVHWM = rcvhwm, ZMQ_MAXMSGSIZE = PROTO_BODY_MAX (a peer sending a larger
// frame is disconnected). Return 0 or SPECD_ERR_IO.
int zmsg_configure_publisher(void *sock, int sndhwm, bool nodrop, char *err, size_t err_size);
int zmsg_configure_subscriber(void *sock, int rcvhwm, char *err, size_t err_size);
// Controller SUB: subscribes to "m.". Worker SUB: subscribes to "s.<worker_id>" and "s.all".
// Return 0, SPECD_ERR_INVALID (bad worker id), SPECD_ERR_IO.
int zmsg_subscribe_metrics(void *sock, char *err, size_t err_size);
int zmsg_subscribe_settings(void *sock, const char *worker_id, char *err, size_t err_size);

// Sends [topic, seq as 8 big-endian bytes, body] without blocking. Returns 0 when queued,
// SPECD_SOFT_FULL when the socket would block (nothing sent: count a drop), SPECD_ERR_INVALID
// (empty topic or body, body > PROTO_BODY_MAX), SPECD_ERR_IO (socket error, nothing sent),
// SPECD_ERR_STATE when a later frame failed after the first went out (libzmq queues the frames
// of one message together, so this should not happen): the socket is mid-message, close it.
int zmsg_send_metrics(void *sock, const char *topic, uint64_t seq, const void *body,
                      size_t body_len, char *err, size_t err_size);
// Sends [topic, body]; same returns.
int zmsg_send_settings(void *sock, const char *topic, const void *body, size_t body_len, char *err,
                       size_t err_size);

// Receives one whole multipart message expecting want_frames frames (ZMSG_FRAMES_*). flags: 0
// blocks, ZMQ_DONTWAIT does not. Returns 0; SPECD_SOFT_EMPTY when nothing is waiting (with
// ZMQ_DONTWAIT) or the wait was interrupted (EINTR); SPECD_ERR_FORMAT when the message had the
// wrong number of frames, an empty or over-long topic (>= PROTO_TOPIC_CAP), a sequence frame
// that is not 8 bytes, or an empty or over-large body: it was consumed and dropped, `err` says
// why, the next call reads the next message; SPECD_ERR_IO for a socket error (e.g. ETERM).
int zmsg_recv(void *sock, int flags, unsigned want_frames, struct zmsg_message *out, char *err,
              size_t err_size);

// ---- whole messages --------------------------------------------------------------------------

// Worker: encodes msg (into `scratch`, an initialised sbuffer the caller reuses) and sends it
// on topic "m.<msg->worker_id>" with sequence number seq. Returns as proto_metrics_encode and
// zmsg_send_metrics.
int zmsg_publish_metrics(void *sock, const struct proto_metrics_msg *msg, uint64_t seq,
                         msgpack_sbuffer *scratch, char *err, size_t err_size);
// Controller: receives and decodes one metrics message; the topic must be "m.<id>" with the
// same id as the body's worker_id. Returns as zmsg_recv and proto_metrics_decode
// (SPECD_ERR_FORMAT / SPECD_ERR_UNSUPPORTED: message dropped, read the next one).
int zmsg_recv_metrics(void *sock, int flags, struct zmsg_message *scratch,
                      struct proto_metrics_msg *out, uint64_t *seq, char *err, size_t err_size);
// Controller: encodes and sends settings to one worker, or to all when worker_id is NULL.
int zmsg_publish_settings(void *sock, const char *worker_id, const struct spec_settings *s,
                          msgpack_sbuffer *scratch, char *err, size_t err_size);
// Worker: receives the next settings message addressed to worker_id ("s.<worker_id>") or to
// everyone ("s.all", *broadcast set; broadcast may be NULL). ZeroMQ filters topics by prefix,
// so "s.w1" also delivers "s.w10": such messages are skipped here. Returns as zmsg_recv and
// proto_settings_decode.
int zmsg_recv_settings(void *sock, int flags, const char *worker_id, struct zmsg_message *scratch,
                       struct spec_settings *out, bool *broadcast, char *err, size_t err_size);

#endif
