// A tiny blocking HTTP/1.1 client for tests (libcurl is not available): one request per
// connection ("Connection: close"), the whole response read into memory. Understands
// Content-Length and chunked bodies. IPv4 loopback only.
//
//   struct http_response r;
//   if (http_request(port, "GET", "/healthz", NULL, NULL, 0, 2000, &r) == 0) {
//       ... r.status, r.body (NUL-terminated), http_response_header(&r, "Content-Type") ...
//       http_response_free(&r);
//   }
#ifndef SPECD_TESTS_SUPPORT_HTTP_CLIENT_H
#define SPECD_TESTS_SUPPORT_HTTP_CLIENT_H

#include <stddef.h>

struct http_response {
    int status;    // e.g. 200; 0 when no status line was read
    char *headers; // raw header block (status line excluded), NUL-terminated
    char *body;    // NUL-terminated (the body may also contain NULs: see body_len)
    size_t body_len;
};

// Sends `method path` to 127.0.0.1:port with optional extra header lines ("Name: value\r\n"
// each; may be NULL) and body. A server that answers and closes before the body is fully sent
// is fine: the response is still read. timeout_ms bounds connect, each send and each read.
// Returns 0 with *out filled (free with http_response_free), or -1 (connection failed, timeout,
// no parseable response) with *out zeroed.
int http_request(int port, const char *method, const char *path, const char *extra_headers,
                 const char *body, size_t body_len, int timeout_ms, struct http_response *out);

// The value of header `name` (case-insensitive) copied into a static buffer, or NULL.
const char *http_response_header(const struct http_response *r, const char *name);

void http_response_free(struct http_response *r); // NULL-safe

#endif
