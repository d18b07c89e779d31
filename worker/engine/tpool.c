#include "worker/engine/tpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TPOOL_RELAX() _mm_pause()
#else
#define TPOOL_RELAX() sched_yield()
#endif

// Threads spin this many rounds waiting for work (or for helpers to finish) before they sleep
// on a condition variable: a decode step runs ~60 short loops, and a sleep/wake round trip per
// loop would cost more than the loop itself.
#define TPOOL_SPIN_ROUNDS 2000

struct tpool {
    int n_threads;
    pthread_t *threads; // [n_threads - 1]
    pthread_mutex_t mu;
    pthread_cond_t work_cv;
    pthread_cond_t done_cv;
    // The loop in progress; written by the caller before `generation` is bumped (release).
    tpool_fn fn;
    void *ctx;
    int n, chunk;
    atomic_uint generation; // bumped for each loop
    atomic_int pending;     // helper threads still running the current loop
    atomic_int stop;
};

struct tpool_thread_arg {
    tpool *pool;
    int index;
};

static void run_share(tpool *p, int index) {
    const int begin = index * p->chunk;
    int end = begin + p->chunk;
    if (end > p->n)
        end = p->n;
    if (begin < end)
        p->fn(p->ctx, begin, end, index);
}

// Waits until the generation differs from `seen` (or stop); returns the new generation.
static unsigned wait_for_work(tpool *p, unsigned seen) {
    unsigned g;
    for (int spins = 0; spins < TPOOL_SPIN_ROUNDS; spins++) {
        g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g != seen || atomic_load_explicit(&p->stop, memory_order_relaxed))
            return g;
        TPOOL_RELAX();
    }
    pthread_mutex_lock(&p->mu);
    while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen &&
           !atomic_load(&p->stop))
        pthread_cond_wait(&p->work_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *tpool_main(void *arg) {
    struct tpool_thread_arg a = *(struct tpool_thread_arg *)arg;
    free(arg);
    tpool *p = a.pool;
    unsigned seen = 0;
    for (;;) {
        seen = wait_for_work(p, seen);
        if (atomic_load(&p->stop))
            break;
        run_share(p, a.index);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

tpool *tpool_new(int n_threads) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    tpool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, 0);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        struct tpool_thread_arg *a = malloc(sizeof *a);
        if (a) {
            a->pool = p;
            a->index = i;
        }
        if (!a || pthread_create(&p->threads[i - 1], NULL, tpool_main, a) != 0) {
            free(a);
            p->n_threads = i; // threads 1..i-1 exist
            tpool_free(p);
            return NULL;
        }
    }
    return p;
}

void tpool_free(tpool *p) {
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++)
        pthread_join(p->threads[i - 1], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p->threads);
    free(p);
}

int tpool_n_threads(const tpool *p) {
    return p->n_threads;
}

void tpool_for(tpool *p, int n, int min_chunk, tpool_fn fn, void *ctx) {
    if (n <= 0)
        return;
    if (min_chunk < 1)
        min_chunk = 1;
    int shares = (n + min_chunk - 1) / min_chunk;
    if (shares > p->n_threads)
        shares = p->n_threads;
    if (shares <= 1) {
        fn(ctx, 0, n, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->chunk = (n + shares - 1) / shares;
    atomic_store_explicit(&p->pending, p->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_mutex_lock(&p->mu); // wakes helpers that went to sleep
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    run_share(p, 0);
    for (int spins = 0; spins < TPOOL_SPIN_ROUNDS; spins++) {
        if (atomic_load_explicit(&p->pending, memory_order_acquire) == 0)
            return;
        TPOOL_RELAX();
    }
    pthread_mutex_lock(&p->mu);
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0)
        pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
