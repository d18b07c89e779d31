#include "shared/status.h"

#include <stdarg.h>
#include <stdio.h>

const char *specd_status_name(int status) {
    switch (status) {
    case SPECD_OK:
        return "SPECD_OK";
    case SPECD_SOFT_FULL:
        return "SPECD_SOFT_FULL";
    case SPECD_SOFT_EMPTY:
        return "SPECD_SOFT_EMPTY";
    case SPECD_ERR_INVALID:
        return "SPECD_ERR_INVALID";
    case SPECD_ERR_NOMEM:
        return "SPECD_ERR_NOMEM";
    case SPECD_ERR_IO:
        return "SPECD_ERR_IO";
    case SPECD_ERR_FORMAT:
        return "SPECD_ERR_FORMAT";
    case SPECD_ERR_UNSUPPORTED:
        return "SPECD_ERR_UNSUPPORTED";
    case SPECD_ERR_BACKEND:
        return "SPECD_ERR_BACKEND";
    case SPECD_ERR_STATE:
        return "SPECD_ERR_STATE";
    default:
        return "SPECD_UNKNOWN_STATUS";
    }
}

int specd_fail(char *err, size_t err_size, int status, const char *fmt, ...) {
    if (err && err_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_size, fmt, ap);
        va_end(ap);
    }
    return status;
}
