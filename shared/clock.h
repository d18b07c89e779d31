// Monotonic and wall clocks in convenient units.
#ifndef SPECD_SHARED_CLOCK_H
#define SPECD_SHARED_CLOCK_H

#include <stdint.h>

// Monotonic time in nanoseconds (CLOCK_MONOTONIC).
uint64_t clock_now_ns(void);
// Monotonic time in milliseconds, as a double.
double clock_now_ms(void);
// Wall-clock time in milliseconds since the Unix epoch (CLOCK_REALTIME).
uint64_t clock_wall_ms(void);

#endif
