/* The C API from plain C99: create, spawn/await with results, mutex and
 * condition, sleep, select, cancel, detach, errors, destroy.
 * Exits nonzero with a message at the first failure. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kio.h"

#define MS ((uint64_t)1000000u)
#define HOUR ((uint64_t)3600u * 1000u * MS)

static int failures = 0;

#define CHECK_EQ(actual, expected)                                                          \
    do {                                                                                    \
        long long a_ = (long long)(actual), e_ = (long long)(expected);                     \
        if (a_ != e_) {                                                                     \
            fprintf(stderr, "%s:%d: CHECK_EQ(%s, %s) failed: got %lld, expected %lld\n",    \
                    __FILE__, __LINE__, #actual, #expected, a_, e_);                        \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);        \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

static kio_mutex g_mutex = KIO_MUTEX_INIT;
static kio_cond g_cond = KIO_COND_INIT;
static int g_counter = 0;
static int g_ready = 0;
static int g_release = 0; /* guarded by g_mutex */

static void *square(void *arg) {
    intptr_t v = (intptr_t)arg;
    return (void *)(v * v);
}

static void *incrementer(void *arg) {
    int i, n = (int)(intptr_t)arg;
    for (i = 0; i < n; i++) {
        if (kio_mutex_lock(&g_mutex) != 0) return (void *)(intptr_t)-1;
        g_counter++;
        if (i % 100 == 0) kio_yield();
        kio_mutex_unlock(&g_mutex);
    }
    return (void *)(intptr_t)n;
}

static void *cond_waiter(void *arg) {
    int r = 0;
    (void)arg;
    kio_mutex_lock(&g_mutex);
    while (!g_ready && r == 0) r = kio_cond_wait(&g_cond, &g_mutex);
    kio_mutex_unlock(&g_mutex);
    return (void *)(intptr_t)(r == 0 ? 100 : r);
}

static void *sleeper(void *arg) {
    uint64_t ns = (uint64_t)(uintptr_t)arg;
    uint64_t t0 = kio_now();
    int r = kio_sleep(ns);
    if (r != 0) return (void *)(intptr_t)r;
    return (void *)(intptr_t)(kio_now() - t0 >= ns ? 1 : 0);
}

static int released(void) {
    int r;
    kio_mutex_lock(&g_mutex);
    r = g_release;
    kio_mutex_unlock(&g_mutex);
    return r;
}

static void set_release(int v) {
    kio_mutex_lock(&g_mutex);
    g_release = v;
    kio_mutex_unlock(&g_mutex);
}

static void *blocker(void *arg) {
    while (!released()) kio_sleep(MS / 4);
    return arg;
}

static void *sleep_forever(void *arg) {
    (void)arg;
    return (void *)(intptr_t)kio_sleep(HOUR);
}

static int g_detached_ran = 0;
static void *detached(void *arg) {
    (void)arg;
    kio_mutex_lock(&g_mutex);
    g_detached_ran = 1;
    kio_mutex_unlock(&g_mutex);
    return NULL;
}

static int g_dtor_calls = 0;
static void dtor(void *arg) {
    (void)arg;
    g_dtor_calls++;
}

static void *self_id(void *arg) {
    (void)arg;
    return (void *)(uintptr_t)kio_task_id();
}

int main(void) {
    kio_options opts;
    kio_runtime *rt = NULL, *rt2 = NULL;
    kio_task *t = NULL, *tasks[4], *set[2];
    void *res = NULL;
    size_t idx = 99;
    int i, r;
    uint64_t t0;
    kio_spawn_options sopts;

    /* Version and errors. */
    CHECK(kio_version() != NULL);
    CHECK(strcmp(kio_version(), "0.1.0") == 0);
    CHECK(kio_strerror(-EINVAL) != NULL);
    CHECK(strcmp(kio_strerror(-EINVAL), kio_strerror(EINVAL)) == 0);
    CHECK(strcmp(kio_strerror(-987654), "Unknown error") == 0);

    /* Create: errors first. */
    kio_options_init(&opts);
    CHECK_EQ(opts.size, sizeof(kio_options));
    CHECK_EQ(kio_runtime_create(&opts, NULL), -EINVAL);
    opts.backend = "nope";
    CHECK_EQ(kio_runtime_create(&opts, &rt), -EINVAL);
    opts.backend = NULL;
    opts.stack_size = 1024;
    CHECK_EQ(kio_runtime_create(&opts, &rt), -EINVAL);
    opts.stack_size = 0;
    opts.size = 0;
    CHECK_EQ(kio_runtime_create(&opts, &rt), -EINVAL);
    kio_options_init(&opts);
    opts.threads = 2;
    CHECK_EQ(kio_current(), NULL);
    CHECK_EQ(kio_task_id(), 0);
    CHECK_EQ(kio_runtime_create(&opts, &rt), 0);
    CHECK(rt != NULL);
    CHECK(kio_current() == rt);
    CHECK_EQ(kio_task_id(), 1);
    CHECK_EQ(kio_runtime_create(&opts, &rt2), -EBUSY);

    /* Spawn / await with results. */
    for (i = 0; i < 4; i++) CHECK_EQ(kio_spawn(NULL, square, (void *)(intptr_t)(i + 2), &tasks[i]), 0);
    for (i = 0; i < 4; i++) {
        CHECK_EQ(kio_await(tasks[i], &res), 0);
        CHECK_EQ((intptr_t)res, (intptr_t)(i + 2) * (i + 2));
    }
    CHECK_EQ(kio_await(tasks[0], &res), -EINVAL);
    CHECK_EQ(kio_spawn(NULL, NULL, NULL, &t), -EINVAL);
    CHECK_EQ(kio_spawn(NULL, square, NULL, NULL), -EINVAL);
    CHECK_EQ(kio_await(NULL, NULL), -EINVAL);
    CHECK_EQ(kio_spawn(rt, self_id, NULL, &t), 0);
    CHECK_EQ(kio_await(t, &res), 0);
    CHECK((uintptr_t)res > 1);

    /* Spawn options. */
    kio_spawn_options_init(&sopts);
    CHECK_EQ(sopts.size, sizeof(kio_spawn_options));
    sopts.name = "c-task";
    sopts.stack_size = 128 * 1024;
    sopts.arg_destructor = dtor;
    CHECK_EQ(kio_spawn_ex(NULL, square, (void *)(intptr_t)9, &sopts, &t), 0);
    CHECK_EQ(kio_await(t, &res), 0);
    CHECK_EQ((intptr_t)res, 81);
    CHECK_EQ(g_dtor_calls, 0);
    CHECK_EQ(kio_spawn_ex(NULL, NULL, (void *)(intptr_t)9, &sopts, &t), -EINVAL);
    CHECK_EQ(g_dtor_calls, 1);

    /* Mutex. */
    CHECK_EQ(kio_mutex_trylock(&g_mutex), 0);
    CHECK_EQ(kio_mutex_trylock(&g_mutex), -EBUSY);
    CHECK_EQ(kio_mutex_lock(&g_mutex), -EDEADLK);
    kio_mutex_unlock(&g_mutex);
    for (i = 0; i < 4; i++) CHECK_EQ(kio_spawn(NULL, incrementer, (void *)(intptr_t)5000, &tasks[i]), 0);
    for (i = 0; i < 4; i++) {
        CHECK_EQ(kio_await(tasks[i], &res), 0);
        CHECK_EQ((intptr_t)res, 5000);
    }
    CHECK_EQ(g_counter, 20000);

    /* Condition. */
    CHECK_EQ(kio_cond_wait(&g_cond, &g_mutex), -EPERM);
    for (i = 0; i < 3; i++) CHECK_EQ(kio_spawn(NULL, cond_waiter, NULL, &tasks[i]), 0);
    kio_sleep(10 * MS);
    kio_mutex_lock(&g_mutex);
    g_ready = 1;
    kio_cond_broadcast(&g_cond);
    kio_mutex_unlock(&g_mutex);
    for (i = 0; i < 3; i++) {
        CHECK_EQ(kio_await(tasks[i], &res), 0);
        CHECK_EQ((intptr_t)res, 100);
    }
    kio_mutex_lock(&g_mutex);
    t0 = kio_now();
    CHECK_EQ(kio_cond_wait_until(&g_cond, &g_mutex, t0 + 5 * MS), -ETIMEDOUT);
    CHECK(kio_now() - t0 >= 5 * MS);
    CHECK_EQ(kio_mutex_lock(&g_mutex), -EDEADLK);
    kio_mutex_unlock(&g_mutex);

    /* Sleep. */
    t0 = kio_now();
    CHECK_EQ(kio_sleep(5 * MS), 0);
    CHECK(kio_now() - t0 >= 5 * MS);
    CHECK_EQ(kio_sleep_until(1), 0);
    CHECK_EQ(kio_spawn(NULL, sleeper, (void *)(uintptr_t)(3 * MS), &t), 0);
    CHECK_EQ(kio_await(t, &res), 0);
    CHECK_EQ((intptr_t)res, 1);

    /* Select. */
    set_release(0);
    CHECK_EQ(kio_spawn(NULL, blocker, (void *)(intptr_t)7, &set[0]), 0);
    CHECK_EQ(kio_spawn(NULL, sleeper, (void *)(uintptr_t)(2 * MS), &set[1]), 0);
    CHECK_EQ(kio_select(set, 2, &idx), 0);
    CHECK_EQ(idx, 1);
    CHECK_EQ(kio_select(set, 0, &idx), -EINVAL);
    CHECK_EQ(kio_select(NULL, 2, &idx), -EINVAL);
    CHECK_EQ(kio_select(set, 2, NULL), -EINVAL);
    set_release(1);
    CHECK_EQ(kio_await(set[0], &res), 0);
    CHECK_EQ((intptr_t)res, 7);
    CHECK_EQ(kio_await(set[1], &res), 0);
    CHECK_EQ((intptr_t)res, 1);

    /* Cancel. */
    CHECK_EQ(kio_spawn(NULL, sleep_forever, NULL, &t), 0);
    kio_sleep(5 * MS);
    t0 = kio_now();
    CHECK_EQ(kio_cancel(t, &res), 0);
    CHECK((intptr_t)res == -ECANCELED);
    CHECK(kio_now() - t0 < 1000 * MS);
    CHECK_EQ(kio_cancel(t, &res), -EINVAL);
    CHECK_EQ(kio_check_cancel(), 0);
    CHECK_EQ(kio_cancel_shield(1), 0);
    CHECK_EQ(kio_cancel_shield(0), 1);

    /* Detach. */
    CHECK_EQ(kio_spawn(NULL, detached, NULL, &t), 0);
    CHECK_EQ(kio_detach(t), 0);
    CHECK_EQ(kio_detach(t), -EINVAL);
    for (i = 0; i < 1000; i++) {
        kio_mutex_lock(&g_mutex);
        r = g_detached_ran;
        kio_mutex_unlock(&g_mutex);
        if (r) break;
        kio_sleep(MS);
    }
    CHECK_EQ(r, 1);

    /* Yield. */
    CHECK_EQ(kio_yield(), 0);

    /* Destroy cancels what is left (a detached sleeper here). */
    CHECK_EQ(kio_spawn(NULL, sleep_forever, NULL, &t), 0);
    CHECK_EQ(kio_detach(t), 0);
    CHECK_EQ(kio_runtime_destroy(NULL), -EINVAL);
    t0 = kio_now();
    CHECK_EQ(kio_runtime_destroy(rt), 0);
    CHECK(kio_now() - t0 < 1000 * MS);
    CHECK(kio_current() == NULL);
    CHECK_EQ(kio_yield(), -EPERM);
    CHECK_EQ(kio_cancel_self(), -EPERM);

    if (failures) return 1;
    printf("c_api_test: all checks passed\n");
    return 0;
}
