/* kio in one minute: tasks, await, a mutex, sleep and cancellation.
 *
 * Build: meson setup build && ninja -C build; run: build/examples/demo
 * Or against an installed kio: cc demo.c $(pkg-config --cflags --libs kio)
 */
#include <kio.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static kio_mutex lock = KIO_MUTEX_INIT;
static long total;

/* A worker task: "downloads" for a few milliseconds (kio_sleep parks only
 * this fiber; the thread runs other tasks meanwhile), then adds its share. */
static void *fetch(void *arg) {
    long id = (long)arg;
    kio_sleep((uint64_t)(1 + id % 5) * 1000000); /* 1-5 ms */
    kio_mutex_lock(&lock);
    total += id;
    kio_mutex_unlock(&lock);
    return (void *)(id * id);
}

/* A task that would sleep for an hour, unless canceled. */
static void *slowpoke(void *arg) {
    (void)arg;
    int r = kio_sleep(3600ull * 1000000000ull);
    return (void *)(long)r; /* -ECANCELED when canceled */
}

int main(void) {
    kio_runtime *rt;
    int err = kio_runtime_create(NULL, &rt); /* this thread becomes worker 0 */
    if (err) {
        fprintf(stderr, "kio_runtime_create: %s\n", kio_strerror(err));
        return 1;
    }
    printf("kio %s: the code of main() now runs as the main fiber\n", kio_version());

    /* 10,000 tasks, each sleeping 1-5 ms: all wait at the same time. */
    enum { N = 10000 };
    static kio_task *tasks[N];
    uint64_t t0 = kio_now();
    for (long i = 0; i < N; i++)
        if ((err = kio_spawn(NULL, fetch, (void *)i, &tasks[i]))) {
            fprintf(stderr, "kio_spawn: %s\n", kio_strerror(err));
            return 1;
        }
    long squares = 0;
    for (long i = 0; i < N; i++) {
        void *result;
        kio_await(tasks[i], &result);
        squares += (long)result;
    }
    double ms = (double)(kio_now() - t0) / 1e6;
    printf("%d tasks slept 1-5 ms each: all done in %.1f ms (not %d ms in a row)\n", N, ms,
           N * 3);
    printf("sum of ids = %ld (expected %ld), sum of squares = %ld\n", total,
           (long)N * (N - 1) / 2, squares);

    /* Cancellation is a request: the sleeper wakes with -ECANCELED and returns. */
    kio_task *slow;
    kio_spawn(NULL, slowpoke, NULL, &slow);
    kio_sleep(1000000);
    t0 = kio_now();
    void *r;
    kio_cancel(slow, &r);
    printf("canceled an hour-long sleep after 1 ms: it returned \"%s\" within %.3f ms\n",
           kio_strerror((int)(long)r), (double)(kio_now() - t0) / 1e6);

    kio_runtime_destroy(rt);
    puts("runtime destroyed: every task finished, every worker joined");
    return total == (long)N * (N - 1) / 2 ? 0 : 1;
}
