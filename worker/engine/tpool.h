// A fixed pool of worker threads that runs parallel-for loops. The calling thread takes part,
// so a pool of n threads starts n-1 extra threads. Not reentrant: one loop at a time per pool.
#ifndef SPECD_ENGINE_TPOOL_H
#define SPECD_ENGINE_TPOOL_H

typedef struct tpool tpool;

// fn(ctx, begin, end, thread_index) handles items [begin, end).
typedef void (*tpool_fn)(void *ctx, int begin, int end, int thread_index);

// n_threads <= 0 means the number of online CPUs. Returns NULL when out of memory or when
// threads cannot be started.
tpool *tpool_new(int n_threads);
void tpool_free(tpool *p); // accepts NULL
int tpool_n_threads(const tpool *p);

// Splits [0, n) into contiguous chunks of at least min_chunk items, one chunk per thread at most,
// and runs them; returns when all are done.
void tpool_for(tpool *p, int n, int min_chunk, tpool_fn fn, void *ctx);

#endif
