// Leveled logging with a switchable sink. Arguments are not evaluated when the level is off.
// Services log one line per event with key=value fields, e.g.
//   LOG_INFO("job_done id=%s tokens=%d", id, n);
#ifndef SPECD_SHARED_LOG_H
#define SPECD_SHARED_LOG_H

enum log_level {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO = 1,
    LOG_LEVEL_WARN = 2,
    LOG_LEVEL_ERROR = 3,
    LOG_LEVEL_OFF = 4
};

// A sink receives one formatted line (no trailing newline). The default sink writes
// "<iso-time> <level> <line>" to stderr.
typedef void (*log_sink_fn)(void *user, enum log_level level, const char *line);

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
// Parses "debug", "info", "warn", "error", "off". Returns 0, or -1 for an unknown name.
int log_parse_level(const char *name, enum log_level *out);
// NULL restores the default stderr sink.
void log_set_sink(log_sink_fn sink, void *user);
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_AT(level, ...)                                                                         \
    do {                                                                                           \
        if ((level) >= log_get_level())                                                            \
            log_write((level), __VA_ARGS__);                                                       \
    } while (0)
#define LOG_DEBUG(...) LOG_AT(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define LOG_INFO(...) LOG_AT(LOG_LEVEL_INFO, __VA_ARGS__)
#define LOG_WARN(...) LOG_AT(LOG_LEVEL_WARN, __VA_ARGS__)
#define LOG_ERROR(...) LOG_AT(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
