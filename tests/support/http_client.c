#include "tests/support/http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_MAX_RESPONSE (64u << 20)

static int connect_loopback(int port, int timeout_ms) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

// Sends everything it can; stops quietly when the server closed its side.
static void send_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        data += n;
        len -= (size_t)n;
    }
}

// Reads until EOF, error or timeout. Returns a malloc'ed NUL-terminated buffer.
static char *read_all(int fd, size_t *len_out) {
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (len + 1 >= cap) {
            if (cap >= HTTP_MAX_RESPONSE)
                break;
            char *grown = realloc(buf, cap * 2);
            if (!grown)
                break;
            buf = grown;
            cap *= 2;
        }
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; // EOF, reset after the response, or timeout: keep what arrived
        len += (size_t)n;
    }
    if (buf)
        buf[len] = '\0';
    *len_out = len;
    return buf;
}

// Decodes a chunked body in place. Returns its length.
static size_t dechunk(char *body, size_t len) {
    size_t in = 0, out = 0;
    while (in < len) {
        char *end = NULL;
        unsigned long n = strtoul(body + in, &end, 16);
        char *eol = strstr(body + in, "\r\n");
        if (!eol || end == body + in)
            break;
        in = (size_t)(eol - body) + 2;
        if (n == 0 || in + n > len)
            break;
        memmove(body + out, body + in, n);
        out += n;
        in += n + 2; // chunk data, CRLF
    }
    body[out] = '\0';
    return out;
}

static int parse_response(char *raw, size_t len, struct http_response *out) {
    char *sep = strstr(raw, "\r\n\r\n");
    if (strncmp(raw, "HTTP/1.", 7) != 0 || !sep)
        return -1;
    out->status = atoi(raw + 9);
    char *line_end = strstr(raw, "\r\n");
    size_t hlen = (size_t)(sep - line_end);
    out->headers = malloc(hlen + 1);
    if (!out->headers)
        return -1;
    memcpy(out->headers, line_end, hlen);
    out->headers[hlen] = '\0';
    size_t body_off = (size_t)(sep - raw) + 4, body_len = len - body_off;
    out->body = malloc(body_len + 1);
    if (!out->body)
        return -1;
    memcpy(out->body, raw + body_off, body_len);
    out->body[body_len] = '\0';
    out->body_len = body_len;
    const char *te = http_response_header(out, "Transfer-Encoding");
    const char *cl = http_response_header(out, "Content-Length");
    if (te && strcasecmp(te, "chunked") == 0)
        out->body_len = dechunk(out->body, body_len);
    else if (cl && strtoul(cl, NULL, 10) < body_len)
        out->body[out->body_len = strtoul(cl, NULL, 10)] = '\0';
    return 0;
}

int http_request(int port, const char *method, const char *path, const char *extra_headers,
                 const char *body, size_t body_len, int timeout_ms, struct http_response *out) {
    memset(out, 0, sizeof *out);
    int fd = connect_loopback(port, timeout_ms);
    if (fd < 0)
        return -1;
    char head[4096], body_headers[128] = "";
    if (body)
        snprintf(body_headers, sizeof body_headers,
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n", body_len);
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s%s\r\n",
                     method, path, port, body_headers, extra_headers ? extra_headers : "");
    if (n < 0 || (size_t)n >= sizeof head) {
        close(fd);
        return -1;
    }
    send_all(fd, head, (size_t)n);
    if (body)
        send_all(fd, body, body_len);
    size_t len = 0;
    char *raw = read_all(fd, &len);
    close(fd);
    int rc = raw ? parse_response(raw, len, out) : -1;
    free(raw);
    if (rc != 0)
        http_response_free(out);
    return rc;
}

const char *http_response_header(const struct http_response *r, const char *name) {
    static _Thread_local char value[1024];
    size_t nlen = strlen(name);
    for (const char *p = r && r->headers ? r->headers : ""; (p = strstr(p, "\r\n")) != NULL;) {
        p += 2;
        if (strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t vlen = strcspn(v, "\r\n");
            snprintf(value, sizeof value, "%.*s", (int)vlen, v);
            return value;
        }
    }
    return NULL;
}

void http_response_free(struct http_response *r) {
    if (!r)
        return;
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}
