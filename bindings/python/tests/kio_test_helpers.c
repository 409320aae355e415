/* C task functions for the Python binding tests, compiled by conftest.py into
 * a temporary directory (cc -shared -fPIC ... -lkio). Every function has the
 * kio_fn signature void *fn(void *arg) and runs on a kio fiber. */
#include <errno.h>
#include <kio.h>
#include <stdint.h>
#include <string.h>

/* x * x, for an integer passed as the pointer's value. */
void *square(void *x) {
    intptr_t v = (intptr_t)x;
    return (void *)(v * v);
}

/* Returns its argument unchanged. */
void *identity(void *x) { return x; }

/* Sleeps arg milliseconds with kio_sleep; returns kio_sleep's result
 * (0, or -ECANCELED when canceled). */
void *sleep_ms(void *ms) {
    return (void *)(intptr_t)kio_sleep((uint64_t)(uintptr_t)ms * 1000000u);
}

/* Sleeps arg milliseconds, then returns arg + 1 (so that a result proves
 * the sleep completed). Canceled: returns -ECANCELED. */
void *sleep_then_inc(void *ms) {
    int r = kio_sleep((uint64_t)(uintptr_t)ms * 1000000u);
    return r ? (void *)(intptr_t)r : (void *)((uintptr_t)ms + 1);
}

/* Returns the id of the calling task (kio_task_id). */
void *my_task_id(void *unused) {
    (void)unused;
    return (void *)(uintptr_t)kio_task_id();
}

/* Shared-counter increments under a kio_mutex, from C fibers, racing with
 * Python threads that use the same kio.Mutex. */
struct incr_args {
    kio_mutex *mutex;
    long *counter;
    long n;
};

void *locked_increments(void *p) {
    struct incr_args *a = p;
    for (long i = 0; i < a->n; i++) {
        int r = kio_mutex_lock(a->mutex);
        if (r) return (void *)(intptr_t)r;
        long v = *a->counter;
        if ((i & 63) == 0) kio_yield(); /* park while holding it now and then */
        *a->counter = v + 1;
        kio_mutex_unlock(a->mutex);
    }
    return (void *)(intptr_t)a->n;
}

/* Ping-pong partner for a Python thread: waits on the condition until the
 * turn (*turn) is 1, sets it to 0 and signals, `rounds` times. */
struct pong_args {
    kio_mutex *mutex;
    kio_cond *cond;
    long *turn;
    long rounds;
};

void *cond_pong(void *p) {
    struct pong_args *a = p;
    for (long i = 0; i < a->rounds; i++) {
        kio_mutex_lock(a->mutex);
        while (*a->turn != 1) {
            int r = kio_cond_wait(a->cond, a->mutex);
            if (r) {
                kio_mutex_unlock(a->mutex);
                return (void *)(intptr_t)r;
            }
        }
        *a->turn = 0;
        kio_cond_broadcast(a->cond);
        kio_mutex_unlock(a->mutex);
    }
    return (void *)(intptr_t)a->rounds;
}

/* Connects to 127.0.0.1:port, sends a message of 1000 bytes `rounds` times
 * through an echo server and checks every byte that comes back. Returns the
 * number of bytes echoed, or a negative errno (-EIO for a wrong byte). */
struct echo_args {
    int port;
    int rounds;
    int seed;
};

void *echo_roundtrip(void *p) {
    struct echo_args *a = p;
    int fd = kio_dial_tcp("127.0.0.1", a->port, kio_now() + 10ull * 1000000000u);
    if (fd < 0) return (void *)(intptr_t)fd;
    char out[1000], in[1000];
    intptr_t total = 0;
    for (int r = 0; r < a->rounds; r++) {
        for (size_t i = 0; i < sizeof out; i++) out[i] = (char)(a->seed * 31 + r * 7 + (int)i);
        for (size_t off = 0; off < sizeof out;) {
            ssize_t n = kio_write(fd, out + off, sizeof out - off);
            if (n < 0) {
                kio_close(fd);
                return (void *)(intptr_t)n;
            }
            off += (size_t)n;
        }
        for (size_t off = 0; off < sizeof in;) {
            ssize_t n = kio_read(fd, in + off, sizeof in - off);
            if (n <= 0) {
                kio_close(fd);
                return (void *)(intptr_t)(n ? n : -EPIPE);
            }
            off += (size_t)n;
        }
        if (memcmp(in, out, sizeof in) != 0) {
            kio_close(fd);
            return (void *)(intptr_t)-EIO;
        }
        total += (intptr_t)sizeof in;
    }
    kio_close(fd);
    return (void *)total;
}

/* Ignores cancellation for arg milliseconds (a shielded sleep), then
 * returns 7: shows that stop waits for tasks to finish. */
void *shielded_sleep_ms(void *ms) {
    int old = kio_cancel_shield(1);
    kio_sleep((uint64_t)(uintptr_t)ms * 1000000u);
    kio_cancel_shield(old);
    return (void *)7;
}

static void *sleep_an_hour(void *unused) {
    (void)unused;
    return (void *)(intptr_t)kio_sleep(3600ull * 1000000000u);
}

/* Spawns a child that ends only when canceled, then waits for it shielded
 * (cleanup that cancellation must not cut short); returns the child's
 * result. Only a runtime stop ends it. */
void *shielded_wait_for_child(void *unused) {
    kio_task *child;
    void *r = NULL;
    (void)unused;
    if (kio_spawn(NULL, sleep_an_hour, NULL, &child) != 0) return (void *)(intptr_t)-1;
    int old = kio_cancel_shield(1);
    kio_await(child, &r);
    kio_cancel_shield(old);
    return r;
}

/* Reads the argument only late: sleeps p->ms milliseconds shielded from
 * cancellation (so a runtime stop waits for it), then copies p->value to
 * read_later_seen and returns it. Shows whether the argument outlives the
 * task when its Task is garbage collected during the stop. */
struct read_later_args {
    int64_t ms;
    int64_t value;
};
volatile int64_t read_later_seen = -1;
void *read_later(void *p) {
    struct read_later_args *a = p;
    int old = kio_cancel_shield(1);
    kio_sleep((uint64_t)a->ms * 1000000u);
    kio_cancel_shield(old);
    read_later_seen = a->value;
    return (void *)(intptr_t)read_later_seen;
}
