#include "worker/engine/ngram.h"

#include <string.h>

int ngram_propose(const int32_t *tokens, int32_t n, int32_t min_n, int32_t max_n, int32_t k,
                  int32_t *out) {
    if (min_n < 1)
        min_n = 1;
    for (int32_t len = max_n; len >= min_n; len--) {
        if (len >= n)
            continue;
        const int32_t *suffix = tokens + n - len;
        // Most recent earlier match: the match must end before the suffix starts being itself.
        for (int32_t start = n - len - 1; start >= 0; start--) {
            if (memcmp(tokens + start, suffix, (size_t)len * sizeof *tokens) != 0)
                continue;
            int32_t m = 0;
            for (int32_t p = start + len; p < n && m < k; p++)
                out[m++] = tokens[p];
            if (m > 0)
                return m;
        }
    }
    return 0;
}
