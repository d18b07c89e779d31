#include "shared/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

// Process-wide logging configuration: the one piece of global state specd allows, because a
// process has one stderr. Guarded by a mutex so worker threads may log.
static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;
static enum log_level log_level_current = LOG_LEVEL_INFO;
static log_sink_fn log_sink_current = NULL;
static void *log_sink_user = NULL;

static const char *log_level_name(enum log_level level) {
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    return (unsigned)level <= LOG_LEVEL_OFF ? names[level] : "?";
}

void log_set_level(enum log_level level) {
    log_level_current = level;
}

enum log_level log_get_level(void) {
    return log_level_current;
}

int log_parse_level(const char *name, enum log_level *out) {
    for (int l = LOG_LEVEL_DEBUG; l <= LOG_LEVEL_OFF; l++) {
        if (strcasecmp(name, log_level_name((enum log_level)l)) == 0) {
            *out = (enum log_level)l;
            return 0;
        }
    }
    return -1;
}

void log_set_sink(log_sink_fn sink, void *user) {
    pthread_mutex_lock(&log_mutex);
    log_sink_current = sink;
    log_sink_user = user;
    pthread_mutex_unlock(&log_mutex);
}

void log_write(enum log_level level, const char *fmt, ...) {
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_mutex);
    if (log_sink_current) {
        log_sink_current(log_sink_user, level, line);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s\n", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                log_level_name(level), line);
    }
    pthread_mutex_unlock(&log_mutex);
}
