#include "worker/engine/tpool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct tpool {
    int n_threads;
    pthread_t *threads; // [n_threads - 1]
    pthread_mutex_t mu;
    pthread_cond_t work_cv;
    pthread_cond_t done_cv;
    // The loop in progress.
    tpool_fn fn;
    void *ctx;
    int n, chunk;
    unsigned generation; // bumped for each loop
    int pending;         // helper threads still running the current loop
    int stop;
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

static void *tpool_main(void *arg) {
    struct tpool_thread_arg a = *(struct tpool_thread_arg *)arg;
    free(arg);
    tpool *p = a.pool;
    unsigned seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen)
            pthread_cond_wait(&p->work_cv, &p->mu);
        if (p->stop)
            break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_share(p, a.index);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0)
            pthread_cond_signal(&p->done_cv);
    }
    pthread_mutex_unlock(&p->mu);
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
    p->stop = 1;
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
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->chunk = (n + shares - 1) / shares;
    p->pending = p->n_threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    run_share(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0)
        pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
