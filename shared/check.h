// Always-on invariant checks. A failed check is a bug in specd, not a user error: it prints the
// file, line and expression and aborts. Expected failures (bad files, bad jobs) return status
// codes.
#ifndef SPECD_SHARED_CHECK_H
#define SPECD_SHARED_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define SPECD_CHECK(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
