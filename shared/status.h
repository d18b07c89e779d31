// Status codes shared by every specd library.
//
// Library functions return 0 on success, a positive value for a soft condition the caller is
// expected to handle (for example "no free KV blocks"), and a negative value for an error.
// Functions that can fail for a reason the user must see also take `char *err, size_t err_size`
// and write a one-line message there (never NULL-terminated past err_size).
#ifndef SPECD_SHARED_STATUS_H
#define SPECD_SHARED_STATUS_H

#include <stddef.h>

enum specd_status {
    SPECD_OK = 0,
    SPECD_SOFT_FULL = 1,        // a bounded resource is exhausted (KV blocks, queue slots)
    SPECD_SOFT_EMPTY = 2,       // nothing to do / nothing available yet
    SPECD_ERR_INVALID = -1,     // bad argument or bad usage
    SPECD_ERR_NOMEM = -2,       // allocation failed
    SPECD_ERR_IO = -3,          // file or socket I/O failed
    SPECD_ERR_FORMAT = -4,      // malformed input (file, job, message)
    SPECD_ERR_UNSUPPORTED = -5, // well-formed but not supported (architecture, tensor type)
    SPECD_ERR_BACKEND = -6,     // the compute backend failed
    SPECD_ERR_STATE = -7,       // the object is not in a state that allows the call
};

// Name of a status code, e.g. "SPECD_ERR_FORMAT". Never NULL.
const char *specd_status_name(int status);

// snprintf into err/err_size when err is not NULL. Returns `status` so that callers can write
// `return specd_fail(err, err_size, SPECD_ERR_FORMAT, "bad magic %x", m);`.
int specd_fail(char *err, size_t err_size, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
