// The controller's HTTP interface (libmicrohttpd, a thread per connection):
//   GET /metrics      Prometheus text exposition
//   GET /healthz      liveness (503 when the loop has stalled)
//   GET /v1/policy    the policy in force (JSON, same shape PUT takes)
//   PUT /v1/policy    patch the policy; needs "Authorization: Bearer <http.token>"
//   GET /v1/workers   per worker and class state
// HEAD works wherever GET does. Unknown paths: 404; other methods: 405 with an Allow header.
// Errors are JSON: {"error": "<reason>", "field": "<member>"} (field only for policy errors).
#include <arpa/inet.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/ctlsvc_internal.h"
#include "controller/ctlsvc_policy_json.h"
#include "shared/log.h"
#include "shared/status.h"

#define PERSIST_WAIT_MS 1500 // PUT waits this long for Redis before answering persisted=false
#define HTTP_TOO_LARGE 413u  // (MHD renamed its constant between versions)

enum route { ROUTE_NONE, ROUTE_METRICS, ROUTE_HEALTH, ROUTE_POLICY, ROUTE_WORKERS };

static const struct {
    const char *path;
    enum route route;
    const char *allow;
} routes[] = {
    {"/metrics", ROUTE_METRICS, "GET, HEAD"},
    {"/healthz", ROUTE_HEALTH, "GET, HEAD"},
    {"/v1/policy", ROUTE_POLICY, "GET, HEAD, PUT"},
    {"/v1/workers", ROUTE_WORKERS, "GET, HEAD"},
};

// A PUT body being received.
struct http_upload {
    char *data;
    size_t len, cap;
    bool too_large;
};

// ---- responses -------------------------------------------------------------------------------

// Sends `body` (malloc'ed; ownership passes to MHD, freed on failure too).
static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status,
                               const char *content_type, char *body, size_t len,
                               const char *allow) {
    struct MHD_Response *r =
        body ? MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE) : NULL;
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"specd\"");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

// Sends a cJSON value (consumed) with a trailing newline.
static enum MHD_Result respond_json(struct MHD_Connection *conn, unsigned status, cJSON *json,
                                    const char *allow) {
    char *text = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!text)
        return MHD_NO;
    size_t n = strlen(text);
    char *body = realloc(text, n + 2);
    if (!body) {
        free(text);
        return MHD_NO;
    }
    body[n] = '\n';
    body[n + 1] = '\0';
    return respond(conn, status, "application/json", body, n + 1, allow);
}

static enum MHD_Result respond_error(struct MHD_Connection *conn, unsigned status,
                                     const char *field, const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static enum MHD_Result respond_error(struct MHD_Connection *conn, unsigned status,
                                     const char *field, const char *allow, const char *fmt, ...) {
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    cJSON *j = cJSON_CreateObject();
    if (j) {
        cJSON_AddStringToObject(j, "error", reason);
        if (field)
            cJSON_AddStringToObject(j, "field", field);
    }
    return respond_json(conn, status, j, allow);
}

// ---- handlers --------------------------------------------------------------------------------

static enum MHD_Result get_metrics(ctlsvc *svc, struct MHD_Connection *conn) {
    struct ctlsvc_buf b = {0};
    pthread_mutex_lock(&svc->lock);
    ctlsvc_render_metrics(svc, ctlsvc_now_ms(), &b);
    pthread_mutex_unlock(&svc->lock);
    if (b.failed || !b.data) {
        ctlsvc_buf_free(&b);
        return respond_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, NULL, "out of memory");
    }
    return respond(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len,
                   NULL);
}

static enum MHD_Result get_view(ctlsvc *svc, struct MHD_Connection *conn, enum route route) {
    bool healthy = true;
    pthread_mutex_lock(&svc->lock);
    uint64_t now = ctlsvc_now_ms();
    cJSON *j = route == ROUTE_WORKERS  ? ctlsvc_view_workers(svc, now)
               : route == ROUTE_HEALTH ? ctlsvc_view_health(svc, now, &healthy)
                                       : ctlsvc_policy_to_cjson(ctl_algo_policy(svc->algo));
    pthread_mutex_unlock(&svc->lock);
    if (!j)
        return respond_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, NULL, "out of memory");
    return respond_json(conn, healthy ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, j, NULL);
}

// Constant-time comparison of the presented token with the configured one.
static bool token_matches(const char *given, const char *want) {
    size_t n = strlen(given), m = strlen(want);
    unsigned diff = (unsigned)(n != m);
    for (size_t i = 0; i < m; i++)
        diff |= (unsigned char)want[i] ^ (unsigned char)(i < n ? given[i] : 0);
    return diff == 0 && m > 0;
}

// Checks the bearer token. Returns 0 when authorised, else the HTTP status to answer.
static unsigned check_auth(ctlsvc *svc, struct MHD_Connection *conn, const char **why) {
    char token[CTLSVC_TOKEN_CAP];
    pthread_mutex_lock(&svc->lock);
    memcpy(token, svc->cfg.http_token, sizeof token);
    pthread_mutex_unlock(&svc->lock);
    const char *h =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    bool configured = token[0] != '\0';
    bool ok = configured && h && strncmp(h, "Bearer ", 7) == 0 && token_matches(h + 7, token);
    memset(token, 0, sizeof token);
    if (ok)
        return 0;
    *why = !configured ? "policy updates are disabled: no http.token is configured"
           : !h        ? "missing Authorization: Bearer <token> header"
                       : "wrong bearer token";
    return MHD_HTTP_UNAUTHORIZED;
}

static enum MHD_Result put_policy(ctlsvc *svc, struct MHD_Connection *conn, const char *body,
                                  size_t len) {
    char field[96], reason[256];
    pthread_mutex_lock(&svc->lock);
    struct ctl_policy p = *ctl_algo_policy(svc->algo);
    int rc = ctlsvc_policy_from_json(body, len, &p, field, sizeof field, reason, sizeof reason);
    if (rc == SPECD_OK)
        rc = ctl_algo_set_policy(svc->algo, &p, reason, sizeof reason);
    if (rc != SPECD_OK) {
        svc->c.policy_updates[CTLSVC_PUT_INVALID]++;
        pthread_mutex_unlock(&svc->lock);
        LOG_WARN("policy_rejected field=%s reason=\"%s\"", field[0] ? field : "-", reason);
        return respond_error(conn, MHD_HTTP_BAD_REQUEST, field, NULL, "%s", reason);
    }
    svc->c.policy_updates[CTLSVC_PUT_ACCEPTED]++;
    uint64_t version = ctlsvc_policy_changed(svc, "api");
    char *json = ctlsvc_policy_to_json(&p);
    LOG_INFO("policy_updated source=api version=%llu policy=%s", (unsigned long long)version,
             json ? json : "?");
    free(json);
    bool persisted = ctlsvc_store_wait(svc, version, PERSIST_WAIT_MS);
    pthread_mutex_unlock(&svc->lock);
    if (!persisted)
        LOG_WARN("policy_not_persisted version=%llu action=\"in force now; the store thread "
                 "retries\"",
                 (unsigned long long)version);
    cJSON *j = cJSON_CreateObject();
    cJSON *pj = ctlsvc_policy_to_cjson(&p);
    if (!j || !pj || !cJSON_AddStringToObject(j, "status", "ok") ||
        !cJSON_AddBoolToObject(j, "persisted", persisted) ||
        !cJSON_AddNumberToObject(j, "version", (double)version) ||
        !cJSON_AddItemToObject(j, "policy", pj)) {
        cJSON_Delete(j);
        cJSON_Delete(pj);
        return MHD_NO;
    }
    return respond_json(conn, MHD_HTTP_OK, j, NULL);
}

// ---- dispatch --------------------------------------------------------------------------------

static void count_put(ctlsvc *svc, enum ctlsvc_put result) {
    pthread_mutex_lock(&svc->lock);
    svc->c.policy_updates[result]++;
    pthread_mutex_unlock(&svc->lock);
}

// The first call for a request (headers received, body not yet).
static enum MHD_Result on_headers(ctlsvc *svc, struct MHD_Connection *conn, const char *url,
                                  const char *method, void **req_cls) {
    size_t i = 0, n = sizeof routes / sizeof routes[0];
    while (i < n && strcmp(routes[i].path, url) != 0)
        i++;
    if (i == n)
        return respond_error(conn, MHD_HTTP_NOT_FOUND, NULL, NULL,
                             "no such path; try /metrics, /healthz, /v1/policy, /v1/workers");
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool put = strcmp(method, "PUT") == 0 && routes[i].route == ROUTE_POLICY;
    if (!get && !put)
        return respond_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, NULL, routes[i].allow,
                             "method %s is not allowed on %s", method, url);
    if (get)
        return routes[i].route == ROUTE_METRICS ? get_metrics(svc, conn)
                                                : get_view(svc, conn, routes[i].route);
    const char *why = NULL;
    unsigned status = check_auth(svc, conn, &why);
    if (status) {
        count_put(svc, CTLSVC_PUT_UNAUTHORIZED);
        LOG_WARN("policy_unauthorized reason=\"%s\"", why);
        return respond_error(conn, status, NULL, NULL, "%s", why);
    }
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    pthread_mutex_lock(&svc->lock);
    size_t max = svc->cfg.http_max_body;
    pthread_mutex_unlock(&svc->lock);
    if (cl && strtoull(cl, NULL, 10) > max) {
        count_put(svc, CTLSVC_PUT_TOO_LARGE);
        return respond_error(conn, HTTP_TOO_LARGE, NULL, NULL, "body larger than %zu bytes", max);
    }
    struct http_upload *u = calloc(1, sizeof *u);
    if (!u)
        return MHD_NO;
    *req_cls = u;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls) {
    (void)version;
    ctlsvc *svc = cls;
    struct http_upload *u = *req_cls;
    if (!u)
        return on_headers(svc, conn, url, method, req_cls);
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        pthread_mutex_lock(&svc->lock);
        size_t max = svc->cfg.http_max_body;
        pthread_mutex_unlock(&svc->lock);
        if (u->too_large || u->len + n > max) {
            u->too_large = true; // keep reading (and dropping) so that the client gets the 413
            return MHD_YES;
        }
        if (u->len + n + 1 > u->cap) {
            size_t cap = u->cap ? u->cap : 1024;
            while (cap < u->len + n + 1)
                cap *= 2;
            char *grown = realloc(u->data, cap);
            if (!grown)
                return MHD_NO;
            u->data = grown;
            u->cap = cap;
        }
        memcpy(u->data + u->len, upload_data, n);
        u->len += n;
        u->data[u->len] = '\0';
        return MHD_YES;
    }
    if (u->too_large) {
        count_put(svc, CTLSVC_PUT_TOO_LARGE);
        return respond_error(conn, HTTP_TOO_LARGE, NULL, NULL, "body too large");
    }
    return put_policy(svc, conn, u->data ? u->data : "", u->len);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls, (void)conn, (void)toe;
    struct http_upload *u = *req_cls;
    if (u) {
        free(u->data);
        free(u);
        *req_cls = NULL;
    }
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\r\n")] = '\0';
    LOG_WARN("http_server message=\"%s\"", line);
}

int ctlsvc_http_start(ctlsvc *svc, char *err, size_t err_size) {
    struct sockaddr_in v4 = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)svc->cfg.http_port)};
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6,
                              .sin6_port = htons((uint16_t)svc->cfg.http_port)};
    bool ipv6 = strchr(svc->cfg.http_address, ':') != NULL;
    if ((ipv6 ? inet_pton(AF_INET6, svc->cfg.http_address, &v6.sin6_addr)
              : inet_pton(AF_INET, svc->cfg.http_address, &v4.sin_addr)) != 1)
        return specd_fail(err, err_size, SPECD_ERR_INVALID,
                          "http.address \"%s\" is not a numeric IPv4 or IPv6 address",
                          svc->cfg.http_address);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_ERROR_LOG | (ipv6 ? MHD_USE_IPv6 : 0);
    svc->httpd = MHD_start_daemon(
        flags, (uint16_t)svc->cfg.http_port, NULL, NULL, on_request, svc,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, svc, // first, so that it sees every message
        MHD_OPTION_SOCK_ADDR, ipv6 ? (struct sockaddr *)&v6 : (struct sockaddr *)&v4,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, svc, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!svc->httpd)
        return specd_fail(err, err_size, SPECD_ERR_IO,
                          "cannot listen for HTTP on %s port %d (in use? try http.port)",
                          svc->cfg.http_address, svc->cfg.http_port);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(svc->httpd, MHD_DAEMON_INFO_BIND_PORT);
    svc->http_port = info && info->port ? info->port : svc->cfg.http_port;
    return SPECD_OK;
}

void ctlsvc_http_stop(ctlsvc *svc) {
    if (svc->httpd)
        MHD_stop_daemon(svc->httpd);
    svc->httpd = NULL;
}
