// specd-submit: push generation jobs into the specd Redis queue; optionally wait for their
// results or print their text as it is generated. The wire contract is docs/protocol.md.
//
// Exit status: 0 success, 1 failure (Redis unreachable, a job rejected, failed or timed out, a
// bad line in the jobs file), 2 bad usage.
#include "clients/c/specd_client.h"

#include "shared/clock.h"
#include "shared/log.h"
#include "shared/status.h"
#include "shared/text.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "specd-submit"
#define DEFAULT_TIMEOUT_S 300.0
#define STOP_MAX 64 // collected here; the job rules allow 16 and say so

struct submit_opts {
    char host[256];
    int port;
    const char *prefix;
    const char *prompt, *file, *id;
    struct specd_request base; // options that apply to every job
    const char *stops[STOP_MAX];
    int wait, stream, json;
    double timeout_s; // < 0: not given
};

static void usage(FILE *to) {
    fprintf(
        to,
        "usage: " PROG " [--redis HOST:PORT] [--prefix P] (-p PROMPT | -f JOBS.jsonl)\n"
        "                    [job options] [--wait [--timeout S]] [--stream] [--json]\n"
        "\n"
        "Adds generation jobs to the specd job queue in Redis and prints their ids, one per\n"
        "line. With --wait it waits for the results and prints their text; with --stream it\n"
        "prints the text as the worker produces it.\n"
        "\n"
        "connection:\n"
        "      --redis HOST:PORT   Redis server (default 127.0.0.1:6379)\n"
        "      --prefix P          key prefix of the queue (default specd:)\n"
        "jobs:\n"
        "  -p, --prompt TEXT       one job with this prompt\n"
        "  -f, --file JOBS.jsonl   one job per line: a JSON object with the job fields, e.g.\n"
        "                          {\"prompt\": \"def f(\", \"max_tokens\": 32, \"stop\": "
        "[\"\\n\\n\"]}\n"
        "                          (- reads standard input; options below fill the fields a\n"
        "                          line does not set; bad lines are reported and skipped)\n"
        "job options:\n"
        "  -n, --max-tokens N      tokens to generate (default 256)\n"
        "      --temperature T     0 is greedy (default 1.0)\n"
        "      --top-p P           nucleus sampling threshold in (0, 1] (default 1.0)\n"
        "      --top-k K           keep the K most likely tokens; 0 is off (default 0)\n"
        "      --seed S            seed of the job's random generator (0..2^64-1)\n"
        "      --stop STR          stop before STR (repeatable, up to 16)\n"
        "      --class C           request class label (per-class speculation settings)\n"
        "      --priority P        high or normal (default normal)\n"
        "      --id ID             job id (default: generated from the time and a random\n"
        "                          number; only with -p)\n"
        "output:\n"
        "      --wait              wait for each result and print its text\n"
        "      --timeout S         give up waiting S seconds after starting (default 300)\n"
        "      --stream            print text as it is generated (implies waiting)\n"
        "      --json              print JSON lines: {\"id\": ...} per job, or with --wait the\n"
        "                          whole result (status, text, finish_reason, token counts,\n"
        "                          timings, worker, error)\n"
        "  -h, --help              show this help\n"
        "\n"
        "exit status: 0 ok, 1 a failure (see the message), 2 bad usage\n"
        "\n"
        "examples:\n"
        "  " PROG " -p 'def fib(n):' -n 48 --temperature 0 --wait\n"
        "  " PROG " --redis 10.0.0.5:6379 -f jobs.jsonl --wait --json > results.jsonl\n");
}

static int bad_usage(const char *fmt, const char *arg) {
    fprintf(stderr, PROG ": ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(see " PROG " --help)\n");
    return 2;
}

static int parse_long(const char *s, long long lo, long long hi, long long *out) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno == ERANGE || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double *out) {
    char *end = NULL;
    double v = strtod(s, &end);
    if (!*s || *end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

// "HOST:PORT", "HOST", ":PORT" or "[IPV6]:PORT".
static int parse_redis(const char *s, struct submit_opts *o) {
    const char *host = s, *colon;
    size_t host_len;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close)
            return -1;
        host = s + 1;
        host_len = (size_t)(close - host);
        colon = close[1] == ':' ? close + 1 : NULL;
        if (!colon && close[1])
            return -1;
    } else {
        colon = strrchr(s, ':');
        host_len = colon ? (size_t)(colon - s) : strlen(s);
    }
    if (host_len >= sizeof o->host)
        return -1;
    if (host_len > 0) {
        memcpy(o->host, host, host_len);
        o->host[host_len] = '\0';
    }
    long long port = 6379;
    if (colon && parse_long(colon + 1, 1, 65535, &port))
        return -1;
    o->port = (int)port;
    return 0;
}

enum {
    OPT_REDIS = 1,
    OPT_PREFIX,
    OPT_TEMP,
    OPT_TOP_P,
    OPT_TOP_K,
    OPT_SEED,
    OPT_STOP,
    OPT_CLASS,
    OPT_PRIORITY,
    OPT_ID,
    OPT_WAIT,
    OPT_TIMEOUT,
    OPT_STREAM,
    OPT_JSON
};

static int parse_option(int c, const char *arg, struct submit_opts *o) {
    struct specd_request *r = &o->base;
    long long v;
    switch (c) {
    case OPT_REDIS:
        if (parse_redis(arg, o))
            return bad_usage("--redis: '%s' is not HOST:PORT (port 1..65535)", arg);
        break;
    case OPT_PREFIX:
        o->prefix = arg;
        break;
    case 'p':
        o->prompt = arg;
        break;
    case 'f':
        o->file = arg;
        break;
    case 'n':
        if (parse_long(arg, INT32_MIN, INT32_MAX, &v))
            return bad_usage("--max-tokens: '%s' is not an integer", arg);
        r->max_tokens = (int)v;
        break;
    case OPT_TEMP:
        if (parse_double(arg, &r->temperature))
            return bad_usage("--temperature: '%s' is not a number", arg);
        break;
    case OPT_TOP_P:
        if (parse_double(arg, &r->top_p))
            return bad_usage("--top-p: '%s' is not a number", arg);
        break;
    case OPT_TOP_K:
        if (parse_long(arg, INT32_MIN, INT32_MAX, &v))
            return bad_usage("--top-k: '%s' is not an integer", arg);
        r->top_k = (int)v;
        break;
    case OPT_SEED: {
        char *end = NULL;
        errno = 0;
        unsigned long long s = strtoull(arg, &end, 10);
        if (arg[0] < '0' || arg[0] > '9' || *end || errno == ERANGE)
            return bad_usage("--seed: '%s' is not an integer in 0..18446744073709551615", arg);
        r->seed = s;
        r->has_seed = 1;
        break;
    }
    case OPT_STOP:
        if (r->n_stop == STOP_MAX)
            return bad_usage("too many --stop strings (%s)", "the limit is 16");
        o->stops[r->n_stop++] = arg;
        break;
    case OPT_CLASS:
        r->class_label = arg;
        break;
    case OPT_PRIORITY:
        if (strcmp(arg, "high") != 0 && strcmp(arg, "normal") != 0)
            return bad_usage("--priority: '%s' is not 'high' or 'normal'", arg);
        r->priority = arg[0] == 'h' ? JOB_PRIORITY_HIGH : JOB_PRIORITY_NORMAL;
        break;
    case OPT_ID:
        o->id = arg;
        break;
    case OPT_WAIT:
        o->wait = 1;
        break;
    case OPT_TIMEOUT:
        if (parse_double(arg, &o->timeout_s) || o->timeout_s < 0 || o->timeout_s > 2e6)
            return bad_usage("--timeout: '%s' is not a number of seconds", arg);
        break;
    case OPT_STREAM:
        o->stream = 1;
        break;
    case OPT_JSON:
        o->json = 1;
        break;
    case 'h':
        usage(stdout);
        return 0;
    default:
        return bad_usage("%s", "unknown option or missing argument");
    }
    return -1;
}

// Returns -1 to go on, else the exit status.
static int parse_args(int argc, char **argv, struct submit_opts *o) {
    static const struct option long_opts[] = {{"redis", required_argument, 0, OPT_REDIS},
                                              {"prefix", required_argument, 0, OPT_PREFIX},
                                              {"prompt", required_argument, 0, 'p'},
                                              {"file", required_argument, 0, 'f'},
                                              {"max-tokens", required_argument, 0, 'n'},
                                              {"temperature", required_argument, 0, OPT_TEMP},
                                              {"top-p", required_argument, 0, OPT_TOP_P},
                                              {"top-k", required_argument, 0, OPT_TOP_K},
                                              {"seed", required_argument, 0, OPT_SEED},
                                              {"stop", required_argument, 0, OPT_STOP},
                                              {"class", required_argument, 0, OPT_CLASS},
                                              {"priority", required_argument, 0, OPT_PRIORITY},
                                              {"id", required_argument, 0, OPT_ID},
                                              {"wait", no_argument, 0, OPT_WAIT},
                                              {"timeout", required_argument, 0, OPT_TIMEOUT},
                                              {"stream", no_argument, 0, OPT_STREAM},
                                              {"json", no_argument, 0, OPT_JSON},
                                              {"help", no_argument, 0, 'h'},
                                              {0, 0, 0, 0}};
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":p:f:n:h", long_opts, NULL)) != -1) {
        if (c == '?' || c == ':') {
            const char *what = c == ':' ? "option '%s' needs a value" : "unknown option '%s'";
            return bad_usage(what, argv[optind - 1]);
        }
        int rc = parse_option(c, optarg, o);
        if (rc >= 0)
            return rc;
    }
    if (optind < argc)
        return bad_usage("unexpected argument '%s' (quote the prompt and pass it with -p)",
                         argv[optind]);
    if (!o->prompt == !o->file)
        return bad_usage("%s", "give exactly one of -p PROMPT and -f JOBS.jsonl");
    if (o->id && o->file)
        return bad_usage("%s", "--id goes with -p only (give ids in the file's \"id\" fields)");
    if (o->timeout_s >= 0 && !o->wait && !o->stream)
        return bad_usage("%s", "--timeout goes with --wait or --stream");
    o->base.stop = o->stops;
    o->base.stream = o->stream;
    o->base.id = o->id;
    o->base.prompt = o->prompt ? o->prompt : "x"; // -f: a stand-in, to check the options alone
    char why[JOB_REASON_MAX + 64];
    if (specd_request_validate(&o->base, why, sizeof why) != SPECD_OK)
        return bad_usage("invalid job options: %s", why);
    if (o->file)
        o->base.prompt = NULL;
    return -1;
}

// ---- submitting
// ----------------------------------------------------------------------------------

struct run {
    struct submit_opts *o;
    specd_client *c;
    char (*ids)[SPECD_JOB_ID_SIZE]; // [n_ids] submitted jobs, in input order
    size_t n_ids, cap_ids;
    int failed; // something failed: exit 1 at the end
};

static int remember_id(struct run *r, const char *id) {
    if (r->n_ids == r->cap_ids) {
        size_t cap = r->cap_ids ? 2 * r->cap_ids : 16;
        void *ids = realloc(r->ids, cap * sizeof *r->ids);
        if (!ids)
            return -1;
        r->ids = ids;
        r->cap_ids = cap;
    }
    memcpy(r->ids[r->n_ids++], id, strlen(id) + 1);
    return 0;
}

// Submits one job; `line` is its line in the jobs file (0 for -p). Returns 0, or -1 when Redis
// is gone (the caller stops).
static int submit_one(struct run *r, const struct specd_request *req, long line) {
    char id[SPECD_JOB_ID_SIZE];
    int rc = specd_client_submit(r->c, req, id, sizeof id);
    const char *file = r->o->file && strcmp(r->o->file, "-") == 0 ? "<stdin>" : r->o->file;
    if (rc != SPECD_OK) {
        r->failed = 1;
        if (line)
            fprintf(stderr, PROG ": %s:%ld: %s\n", file, line, specd_client_last_error(r->c));
        else
            fprintf(stderr, PROG ": %s\n", specd_client_last_error(r->c));
        return rc == RQ_SOFT_DISCONNECTED ? -1 : 0;
    }
    if (remember_id(r, id)) {
        fprintf(stderr, PROG ": out of memory\n");
        return -1;
    }
    if (r->o->wait || r->o->stream)
        return 0;
    if (r->o->json && line)
        printf("{\"id\":\"%s\",\"line\":%ld}\n", id, line);
    else if (r->o->json)
        printf("{\"id\":\"%s\"}\n", id);
    else
        printf("%s\n", id);
    fflush(stdout);
    return 0;
}

static int is_blank(const char *s) {
    return s[strspn(s, " \t\r\n")] == '\0';
}

static void submit_file(struct run *r, FILE *f) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    const char *file = strcmp(r->o->file, "-") == 0 ? "<stdin>" : r->o->file;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (is_blank(line))
            continue;
        struct specd_request req;
        char why[JOB_REASON_MAX + 64];
        if (specd_request_from_json(line, (size_t)len, &r->o->base, &req, why, sizeof why)) {
            fprintf(stderr, PROG ": %s:%ld: %s\n", file, lineno, why);
            r->failed = 1;
            continue;
        }
        int stop = submit_one(r, &req, lineno);
        specd_request_clear(&req);
        if (stop) {
            fprintf(stderr, PROG ": %s: stopped at line %ld; later lines were not submitted\n",
                    file, lineno);
            break;
        }
    }
    if (ferror(f)) {
        fprintf(stderr, PROG ": reading %s: %s\n", file, strerror(errno));
        r->failed = 1;
    }
    free(line);
}

// ---- results -----------------------------------------------------------------------------------

static void print_result_json(const char *id, const struct rq_result *res) {
    printf("{\"id\":\"%s\",\"status\":\"%s\",\"text\":", id,
           res->status == RQ_RESULT_DONE ? "done" : "error");
    text_json_string(stdout, res->text, res->text_len);
    printf(",\"finish_reason\":");
    text_json_string(stdout, res->finish_reason, strlen(res->finish_reason));
    printf(",\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"drafted_tokens\":%lld,"
           "\"accepted_tokens\":%lld,\"queue_ms\":%.3f,\"ttft_ms\":%.3f,\"total_ms\":%.3f,"
           "\"worker\":",
           res->prompt_tokens, res->completion_tokens, res->drafted_tokens, res->accepted_tokens,
           res->queue_ms, res->ttft_ms, res->total_ms);
    text_json_string(stdout, res->worker, strlen(res->worker));
    printf(",\"error\":");
    text_json_string(stdout, res->error, strlen(res->error));
    printf("}\n");
}

// Milliseconds left before the deadline, at least 0.
static int ms_left(double deadline) {
    double left = deadline - clock_now_ms();
    return left > 0 ? (int)(left + 0.5) : 0;
}

static int report_wait_failure(struct run *r, const char *id, int rc, const char *what) {
    if (rc == SPECD_SOFT_EMPTY)
        fprintf(stderr, PROG ": job %s: %s within %g s (is a worker running? see --timeout)\n", id,
                what, r->o->timeout_s >= 0 ? r->o->timeout_s : DEFAULT_TIMEOUT_S);
    else
        fprintf(stderr, PROG ": job %s: %s\n", id, specd_client_last_error(r->c));
    return 1;
}

// Bytes at the end of s[0..len) that begin a UTF-8 sequence not yet complete (0..3).
static size_t utf8_incomplete_tail(const char *s, size_t len) {
    for (size_t back = 1; back <= 3 && back <= len; back++) {
        unsigned char c = (unsigned char)s[len - back];
        if ((c & 0xc0) == 0x80)
            continue; // continuation byte: look further back
        size_t need = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 1;
        return need > back ? back : 0;
    }
    return 0;
}

// Prints the deltas of one streaming job until it is done. Returns 0, or 1 on failure.
static int follow_stream(struct run *r, const char *id, double deadline) {
    struct specd_stream s;
    specd_stream_init(&s, id);
    char pending[4]; // JSON mode: start of a UTF-8 sequence split between chunks
    size_t n_pending = 0;
    while (!s.done) {
        struct rq_stream_chunk ch;
        int rc = specd_client_stream_next(r->c, &s, ms_left(deadline), &ch);
        if (rc != SPECD_OK)
            return report_wait_failure(r, id, rc, "no text");
        if (ch.reset) {
            n_pending = 0;
            if (r->o->json)
                printf("{\"id\":\"%s\",\"reset\":true}\n", id);
            else
                fprintf(stderr,
                        "\n" PROG ": job %s was restarted by another worker; its text "
                        "starts again\n",
                        id);
        }
        if (r->o->json && (ch.len || n_pending)) {
            char buf[4096 + 4];
            const char *text = ch.text;
            size_t len = ch.len;
            char *joined = n_pending + len <= sizeof buf ? buf : malloc(n_pending + len);
            if (joined) {
                memcpy(joined, pending, n_pending);
                memcpy(joined + n_pending, ch.text, ch.len);
                text = joined;
                len += n_pending;
            }
            size_t keep = ch.done ? 0 : utf8_incomplete_tail(text, len);
            n_pending = keep;
            memcpy(pending, text + len - keep, keep);
            if (len > keep) {
                printf("{\"id\":\"%s\",\"delta\":", id);
                text_json_string(stdout, text, len - keep);
                printf("}\n");
            }
            if (joined && joined != buf)
                free(joined);
        } else if (!r->o->json) {
            fwrite(ch.text, 1, ch.len, stdout);
        }
        fflush(stdout);
        rq_stream_chunk_clear(&ch);
    }
    return 0;
}

// Waits for (or follows) one job and prints its result. Returns 0 or 1.
static int finish_one(struct run *r, const char *id, double deadline) {
    if (r->o->stream && follow_stream(r, id, deadline))
        return 1;
    struct rq_result res;
    int rc = specd_client_wait(r->c, id, ms_left(deadline), &res);
    if (rc != SPECD_OK)
        return report_wait_failure(r, id, rc, "no result");
    if (r->o->json)
        print_result_json(id, &res);
    else if (r->o->stream)
        printf("\n");
    else
        printf("%.*s\n", (int)res.text_len, res.text);
    fflush(stdout);
    int failed = res.status != RQ_RESULT_DONE;
    if (failed)
        fprintf(stderr, PROG ": job %s failed: %s\n", id, res.error[0] ? res.error : "(no reason)");
    rq_result_clear(&res);
    return failed;
}

static void finish_all(struct run *r, double deadline) {
    for (size_t i = 0; i < r->n_ids; i++) {
        if (!r->o->json && r->n_ids > 1) {
            printf("%s==> %s <==\n", i ? "\n" : "", r->ids[i]);
            fflush(stdout);
        }
        if (finish_one(r, r->ids[i], deadline))
            r->failed = 1;
    }
}

int main(int argc, char **argv) {
    struct submit_opts o = {.port = 6379, .prefix = "specd:", .timeout_s = -1};
    snprintf(o.host, sizeof o.host, "127.0.0.1");
    o.base = specd_request_default();
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0)
        return rc;
    log_set_level(LOG_LEVEL_ERROR); // failures are reported here, with what to do
    FILE *f = NULL;
    if (o.file) {
        f = strcmp(o.file, "-") == 0 ? stdin : fopen(o.file, "r");
        if (!f) {
            fprintf(stderr, PROG ": cannot open %s: %s\n", o.file, strerror(errno));
            return 1;
        }
    }
    struct run r = {.o = &o};
    r.c = specd_client_new(o.host, o.port, o.prefix);
    if (!r.c || !specd_client_is_connected(r.c)) {
        fprintf(stderr, PROG ": %s use --redis HOST:PORT\n",
                r.c ? specd_client_last_error(r.c) : "out of memory;");
        if (f && f != stdin)
            fclose(f);
        specd_client_free(r.c);
        return 1;
    }
    const double deadline =
        clock_now_ms() + 1000.0 * (o.timeout_s >= 0 ? o.timeout_s : DEFAULT_TIMEOUT_S);
    if (f)
        submit_file(&r, f);
    else
        submit_one(&r, &o.base, 0);
    if (f && f != stdin)
        fclose(f);
    if (o.wait || o.stream)
        finish_all(&r, deadline);
    free(r.ids);
    specd_client_free(r.c);
    return r.failed ? 1 : 0;
}
