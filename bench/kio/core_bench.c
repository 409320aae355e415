/* kio core runtime benchmarks (see bench/README.md).
 *
 *   kio_core_bench <workload> [-n N] [-r reps] [-t threads]
 *
 * workloads: yield spawn_await spawn_await_batch skynet mutex pingpong idle
 *            sleep all
 *
 * Plain C99 against include/kio.h. Each workload runs in the main fiber of a
 * runtime created for it (threads: 1 for yield, 2 for mutex, the library
 * default -- the CPU count -- for the rest, unless -t overrides it), verifies
 * its result and prints one line
 *
 *   RESULT workload=<w> system=kio value=<v> unit=<u> check=ok|FAIL
 *
 * with the median of `reps` timed runs after one untimed warm-up run, so that
 * pooled stacks are reused. The idle workload is the exception: it measures a
 * cold process once (a warm pool would hide the memory it is measuring); the
 * runner starts it several times and takes the median.
 *
 * Needs a 64-bit target: task results carry 64-bit sums through void *.
 */
#define _POSIX_C_SOURCE 200809L

#include "kio.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------ utils */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static long rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

static void *u2p(uint64_t v) { return (void *)(uintptr_t)v; }
static uint64_t p2u(void *p) { return (uint64_t)(uintptr_t)p; }

static void complain(const char *workload, const char *what, int rc) {
    fprintf(stderr, "%s: %s: %d (%s)\n", workload, what, rc, kio_strerror(rc));
}

static void report(const char *workload, double value, const char *unit, int ok) {
    printf("RESULT workload=%s system=kio value=%.*f unit=%s check=%s\n", workload,
           value >= 1000 ? 0 : 2, value, unit, ok ? "ok" : "FAIL");
    fflush(stdout);
}

typedef double (*run_fn)(uint64_t n, int *ok);

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One untimed warm-up run, then `reps` timed runs; reports the median. */
static int measure(const char *workload, const char *unit, int reps, run_fn fn, uint64_t n) {
    double *v = (double *)calloc((size_t)reps, sizeof *v);
    int ok = 1, run_ok = 1, r;
    if (!v) return 0;
    fn(n, &run_ok);
    ok = ok && run_ok;
    for (r = 0; r < reps; r++) {
        run_ok = 1;
        v[r] = fn(n, &run_ok);
        ok = ok && run_ok;
    }
    qsort(v, (size_t)reps, sizeof *v, cmp_double);
    report(workload, v[reps / 2], unit, ok);
    free(v);
    return ok;
}

/* ------------------------------------------------------------------ yield */

typedef struct {
    uint64_t n;
    uint64_t done;
    int err;
} yield_arg;

static void *yield_task(void *p) {
    yield_arg *a = (yield_arg *)p;
    uint64_t i;
    for (i = 0; i < a->n; i++) {
        int rc = kio_yield();
        if (rc != 0) {
            a->err = rc;
            break;
        }
        a->done++;
    }
    return p;
}

/* Two tasks on one worker, each yielding n times: ns per yield. */
static double run_yield(uint64_t n, int *ok) {
    yield_arg a, b;
    kio_task *ta = NULL, *tb = NULL;
    void *ra = NULL, *rb = NULL;
    uint64_t t0, t1;
    int rc;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.n = b.n = n;
    t0 = now_ns();
    if ((rc = kio_spawn(NULL, yield_task, &a, &ta)) != 0 ||
        (rc = kio_spawn(NULL, yield_task, &b, &tb)) != 0) {
        complain("yield", "kio_spawn", rc);
        if (ta) kio_await(ta, NULL);
        *ok = 0;
        return 0;
    }
    if ((rc = kio_await(ta, &ra)) != 0) complain("yield", "kio_await", rc), *ok = 0;
    if ((rc = kio_await(tb, &rb)) != 0) complain("yield", "kio_await", rc), *ok = 0;
    t1 = now_ns();
    if (ra != &a || rb != &b || a.done != n || b.done != n || a.err || b.err) {
        fprintf(stderr, "yield: done %llu/%llu err %d/%d\n", (unsigned long long)a.done,
                (unsigned long long)b.done, a.err, b.err);
        *ok = 0;
    }
    return (double)(t1 - t0) / (double)(2 * n);
}

/* ------------------------------------------------------------ spawn/await */

static void *return_arg(void *arg) { return arg; }

/* Spawn one empty task, await it, repeat: ns per task. */
static double run_spawn_await(uint64_t n, int *ok) {
    uint64_t i, bad = 0, t0, t1;
    int rc;
    t0 = now_ns();
    for (i = 0; i < n; i++) {
        kio_task *t;
        void *r = NULL;
        if ((rc = kio_spawn(NULL, return_arg, u2p(i + 1), &t)) != 0) {
            complain("spawn_await", "kio_spawn", rc);
            *ok = 0;
            break;
        }
        if ((rc = kio_await(t, &r)) != 0) {
            complain("spawn_await", "kio_await", rc);
            *ok = 0;
            break;
        }
        if (p2u(r) != i + 1) bad++;
    }
    t1 = now_ns();
    if (bad) *ok = 0;
    return (double)(t1 - t0) / (double)n;
}

#define BATCH 1000

/* Spawn 1000 empty tasks, await all 1000, repeat: ns per task. */
static double run_spawn_await_batch(uint64_t n, int *ok) {
    static kio_task *tasks[BATCH];
    uint64_t done = 0, bad = 0, t0, t1;
    int rc;
    t0 = now_ns();
    while (done < n) {
        uint64_t k = n - done < BATCH ? n - done : BATCH, j, spawned = 0;
        for (j = 0; j < k; j++) {
            if ((rc = kio_spawn(NULL, return_arg, u2p(done + j + 1), &tasks[j])) != 0) {
                complain("spawn_await_batch", "kio_spawn", rc);
                *ok = 0;
                break;
            }
            spawned++;
        }
        for (j = 0; j < spawned; j++) {
            void *r = NULL;
            if ((rc = kio_await(tasks[j], &r)) != 0) {
                complain("spawn_await_batch", "kio_await", rc);
                *ok = 0;
            } else if (p2u(r) != done + j + 1) {
                bad++;
            }
        }
        if (!*ok) break;
        done += k;
    }
    t1 = now_ns();
    if (bad) *ok = 0;
    return (double)(t1 - t0) / (double)n;
}

/* ----------------------------------------------------------------- skynet */

/* A node's argument packs (num << 8) | level, the subtree having 10^level
 * leaves; leaves return num. An error anywhere turns the sum into
 * SKYNET_POISON, which propagates to the root. */
#define SKYNET_POISON UINT64_C(0xdead00000000dead)

static void *skynet_task(void *arg) {
    uint64_t a = p2u(arg), num = a >> 8, sub = 1, sum = 0;
    unsigned level = (unsigned)(a & 0xff), i, spawned = 0;
    kio_task *kids[10];
    int rc, poisoned = 0;
    if (level == 0) return u2p(num);
    for (i = 1; i < level; i++) sub *= 10;
    for (i = 0; i < 10; i++) {
        uint64_t child = ((num + i * sub) << 8) | (uint64_t)(level - 1);
        if ((rc = kio_spawn(NULL, skynet_task, u2p(child), &kids[i])) != 0) {
            complain("skynet", "kio_spawn", rc);
            poisoned = 1;
            break;
        }
        spawned++;
    }
    for (i = 0; i < spawned; i++) {
        void *r = NULL;
        if ((rc = kio_await(kids[i], &r)) != 0) {
            complain("skynet", "kio_await", rc);
            poisoned = 1;
        } else if (p2u(r) == SKYNET_POISON) {
            poisoned = 1;
        } else {
            sum += p2u(r);
        }
    }
    return u2p(poisoned ? SKYNET_POISON : sum);
}

/* 10-ary tree with n (a power of 10) leaves: ms for the whole tree. */
static double run_skynet(uint64_t n, int *ok) {
    unsigned level = 0;
    uint64_t p = 1, t0, t1, sum;
    kio_task *root;
    void *r = NULL;
    int rc;
    while (p < n) p *= 10, level++;
    t0 = now_ns();
    if ((rc = kio_spawn(NULL, skynet_task, u2p(level), &root)) != 0) {
        complain("skynet", "kio_spawn", rc);
        *ok = 0;
        return 0;
    }
    if ((rc = kio_await(root, &r)) != 0) {
        complain("skynet", "kio_await", rc);
        *ok = 0;
    }
    t1 = now_ns();
    sum = p2u(r);
    if (sum != n * (n - 1) / 2) {
        fprintf(stderr, "skynet: sum %llu, expected %llu\n", (unsigned long long)sum,
                (unsigned long long)(n * (n - 1) / 2));
        *ok = 0;
    }
    return (double)(t1 - t0) / 1e6;
}

/* ------------------------------------------------------------------ mutex */

#define MUTEX_TASKS 8

typedef struct {
    kio_mutex *m;
    uint64_t *counter;
    uint64_t n;
    int err;
} mutex_arg;

static void *mutex_task(void *p) {
    mutex_arg *a = (mutex_arg *)p;
    uint64_t i;
    for (i = 0; i < a->n; i++) {
        int rc = kio_mutex_lock(a->m);
        if (rc != 0) {
            a->err = rc;
            break;
        }
        (*a->counter)++;
        kio_mutex_unlock(a->m);
    }
    return p;
}

/* 8 tasks x n increments of one counter under one kio_mutex: ns per
 * lock/unlock pair. */
static double run_mutex(uint64_t n, int *ok) {
    kio_mutex m = KIO_MUTEX_INIT;
    uint64_t counter = 0, t0, t1;
    mutex_arg args[MUTEX_TASKS];
    kio_task *tasks[MUTEX_TASKS];
    int i, spawned = 0, rc;
    t0 = now_ns();
    for (i = 0; i < MUTEX_TASKS; i++) {
        args[i].m = &m;
        args[i].counter = &counter;
        args[i].n = n;
        args[i].err = 0;
        if ((rc = kio_spawn(NULL, mutex_task, &args[i], &tasks[i])) != 0) {
            complain("mutex", "kio_spawn", rc);
            *ok = 0;
            break;
        }
        spawned++;
    }
    for (i = 0; i < spawned; i++) {
        void *r = NULL;
        if ((rc = kio_await(tasks[i], &r)) != 0) {
            complain("mutex", "kio_await", rc);
            *ok = 0;
        } else if (r != &args[i] || args[i].err) {
            if (args[i].err) complain("mutex", "kio_mutex_lock", args[i].err);
            *ok = 0;
        }
    }
    t1 = now_ns();
    if (counter != (uint64_t)MUTEX_TASKS * n) {
        fprintf(stderr, "mutex: counter %llu, expected %llu\n", (unsigned long long)counter,
                (unsigned long long)((uint64_t)MUTEX_TASKS * n));
        *ok = 0;
    }
    return (double)(t1 - t0) / (double)((uint64_t)MUTEX_TASKS * n);
}

/* --------------------------------------------------------------- pingpong */

/* Two tasks alternate through one mutex and two conditions: ping bumps value
 * and hands the turn to pong, pong checks and bumps value and hands it back.
 * One iteration is one round trip. */
typedef struct {
    kio_mutex m;
    kio_cond c_ping, c_pong;
    int turn;   /* 0: ping's turn, 1: pong's */
    int abort_; /* set on error so the other side does not wait forever */
    uint64_t n, value, pong_bad;
    int err;
} pingpong_state;

static void pp_fail(pingpong_state *s, int rc) {
    if (!s->err) s->err = rc;
    s->abort_ = 1;
    kio_cond_broadcast(&s->c_ping);
    kio_cond_broadcast(&s->c_pong);
}

static void *ping_task(void *p) {
    pingpong_state *s = (pingpong_state *)p;
    uint64_t i;
    int rc = kio_mutex_lock(&s->m);
    if (rc != 0) {
        s->err = rc;
        s->abort_ = 1; /* racy but only on a path that already failed */
        kio_cond_broadcast(&s->c_pong);
        return NULL;
    }
    for (i = 0; i < s->n && !s->abort_; i++) {
        s->value++;
        s->turn = 1;
        kio_cond_signal(&s->c_pong);
        while (s->turn != 0 && !s->abort_) {
            if ((rc = kio_cond_wait(&s->c_ping, &s->m)) != 0) {
                pp_fail(s, rc);
                break;
            }
        }
    }
    kio_mutex_unlock(&s->m);
    return p;
}

static void *pong_task(void *p) {
    pingpong_state *s = (pingpong_state *)p;
    uint64_t i;
    int rc = kio_mutex_lock(&s->m);
    if (rc != 0) {
        s->err = rc;
        s->abort_ = 1;
        kio_cond_broadcast(&s->c_ping);
        return NULL;
    }
    for (i = 0; i < s->n && !s->abort_; i++) {
        while (s->turn != 1 && !s->abort_) {
            if ((rc = kio_cond_wait(&s->c_pong, &s->m)) != 0) {
                pp_fail(s, rc);
                break;
            }
        }
        if (s->abort_) break;
        if (s->value != 2 * i + 1) s->pong_bad++;
        s->value++;
        s->turn = 0;
        kio_cond_signal(&s->c_ping);
    }
    kio_mutex_unlock(&s->m);
    return p;
}

static double run_pingpong(uint64_t n, int *ok) {
    pingpong_state s;
    kio_task *tping = NULL, *tpong = NULL;
    void *rping = NULL, *rpong = NULL;
    uint64_t t0, t1;
    int rc;
    memset(&s, 0, sizeof s);
    kio_mutex_init(&s.m);
    kio_cond_init(&s.c_ping);
    kio_cond_init(&s.c_pong);
    s.n = n;
    t0 = now_ns();
    if ((rc = kio_spawn(NULL, pong_task, &s, &tpong)) != 0 ||
        (rc = kio_spawn(NULL, ping_task, &s, &tping)) != 0) {
        complain("pingpong", "kio_spawn", rc);
        *ok = 0;
        if (tpong) kio_cancel(tpong, NULL);
        return 0;
    }
    if ((rc = kio_await(tping, &rping)) != 0) complain("pingpong", "kio_await", rc), *ok = 0;
    if ((rc = kio_await(tpong, &rpong)) != 0) complain("pingpong", "kio_await", rc), *ok = 0;
    t1 = now_ns();
    if (rping != &s || rpong != &s || s.err || s.pong_bad || s.value != 2 * n || s.turn != 0) {
        fprintf(stderr, "pingpong: value %llu (expected %llu), pong_bad %llu, err %d\n",
                (unsigned long long)s.value, (unsigned long long)(2 * n),
                (unsigned long long)s.pong_bad, s.err);
        *ok = 0;
    }
    return (double)(t1 - t0) / (double)n;
}

/* ------------------------------------------------------------------- idle */

typedef struct {
    kio_mutex m;
    kio_cond c;
    int release;
    uint64_t parked, finished, errors;
} gate_state;

static void *gate_task(void *p) {
    gate_state *g = (gate_state *)p;
    int rc = kio_mutex_lock(&g->m);
    if (rc != 0) {
        /* Without the lock nothing may be touched; the missing "parked"
         * count makes the main fiber time out and report FAIL. */
        complain("idle", "kio_mutex_lock", rc);
        return NULL;
    }
    g->parked++;
    while (!g->release) {
        if ((rc = kio_cond_wait(&g->c, &g->m)) != 0) {
            complain("idle", "kio_cond_wait", rc);
            g->errors++;
            break;
        }
    }
    g->finished++;
    kio_mutex_unlock(&g->m);
    return p;
}

/* Parks n tasks on one condition and releases them. With measure_rss, prints
 * the RSS growth per parked task. Returns 1 if every task ran to the end. */
static int idle_round(uint64_t n, kio_task **tasks, int measure_rss) {
    gate_state g;
    uint64_t i, spawned = 0, deadline;
    long before = 0, after = 0;
    int rc, ok = 1;
    memset(&g, 0, sizeof g);
    kio_mutex_init(&g.m);
    kio_cond_init(&g.c);
    if (measure_rss) before = rss_bytes();
    for (i = 0; i < n; i++) {
        if ((rc = kio_spawn(NULL, gate_task, &g, &tasks[i])) != 0) {
            complain("idle", "kio_spawn", rc);
            ok = 0;
            break;
        }
        spawned++;
    }
    /* Wait (up to 60 s) until every task has parked: each counts itself under
     * the mutex right before kio_cond_wait releases it, so once the count is
     * complete under the mutex, all of them are waiting. */
    deadline = now_ns() + UINT64_C(60000000000);
    for (;;) {
        uint64_t parked;
        if ((rc = kio_mutex_lock(&g.m)) != 0) {
            complain("idle", "kio_mutex_lock", rc);
            ok = 0;
            break;
        }
        parked = g.parked;
        kio_mutex_unlock(&g.m);
        if (parked == spawned) break;
        if (now_ns() > deadline) {
            fprintf(stderr, "idle: only %llu of %llu tasks parked\n", (unsigned long long)parked,
                    (unsigned long long)spawned);
            ok = 0;
            break;
        }
        kio_sleep(UINT64_C(1000000));
    }
    if (measure_rss) after = rss_bytes();
    if (kio_mutex_lock(&g.m) == 0) {
        g.release = 1;
        kio_cond_broadcast(&g.c);
        kio_mutex_unlock(&g.m);
    } else {
        ok = 0;
    }
    for (i = 0; i < spawned; i++) {
        void *r = NULL;
        if ((rc = kio_await(tasks[i], &r)) != 0) {
            complain("idle", "kio_await", rc);
            ok = 0;
        } else if (r != &g) {
            ok = 0;
        }
    }
    if (g.finished != n || g.errors) {
        fprintf(stderr, "idle: %llu of %llu finished, %llu errors\n",
                (unsigned long long)g.finished, (unsigned long long)n,
                (unsigned long long)g.errors);
        ok = 0;
    }
    if (measure_rss) {
        ok = ok && before > 0 && after > 0;
        report("idle", (double)(after - before) / (double)n, "bytes/task", ok);
    }
    return ok;
}

/* Cold measurement: only a small round first (64 tasks) so that the worker
 * threads and the runtime's fixed structures exist before the baseline. The
 * handle array is allocated and touched before the baseline too. */
static int run_idle(uint64_t n) {
    kio_task **tasks = (kio_task **)malloc((size_t)n * sizeof *tasks);
    int ok;
    if (!tasks) return report("idle", 0, "bytes/task", 0), 0;
    memset(tasks, 0, (size_t)n * sizeof *tasks);
    ok = idle_round(n < 64 ? n : 64, tasks, 0);
    ok = idle_round(n, tasks, 1) && ok;
    free(tasks);
    return ok;
}

/* ------------------------------------------------------------------ sleep */

#define SLEEP_NS UINT64_C(10000000)

static void *sleep_task(void *arg) {
    uint64_t s = now_ns();
    int rc = kio_sleep(SLEEP_NS);
    (void)arg;
    if (rc != 0) return u2p(1);
    if (now_ns() - s < SLEEP_NS) return u2p(2);
    return u2p(3);
}

/* n tasks each sleeping 10 ms: ms from the first spawn to the last await. */
static double run_sleep(uint64_t n, int *ok) {
    kio_task **tasks = (kio_task **)malloc((size_t)n * sizeof *tasks);
    uint64_t i, spawned = 0, good = 0, t0, t1;
    int rc, reported = 0;
    if (!tasks) {
        *ok = 0;
        return 0;
    }
    t0 = now_ns();
    for (i = 0; i < n; i++) {
        if ((rc = kio_spawn(NULL, sleep_task, NULL, &tasks[i])) != 0) {
            complain("sleep", "kio_spawn", rc);
            *ok = 0;
            break;
        }
        spawned++;
    }
    for (i = 0; i < spawned; i++) {
        void *r = NULL;
        if ((rc = kio_await(tasks[i], &r)) != 0) {
            complain("sleep", "kio_await", rc);
            *ok = 0;
        } else if (p2u(r) == 3) {
            good++;
        } else if (!reported) {
            fprintf(stderr, "sleep: a task %s\n",
                    p2u(r) == 1 ? "got an error from kio_sleep" : "woke up early");
            reported = 1;
        }
    }
    t1 = now_ns();
    if (good != n) *ok = 0;
    free(tasks);
    return (double)(t1 - t0) / 1e6;
}

/* ------------------------------------------------------------------- main */

typedef struct {
    const char *name;
    unsigned default_threads; /* 0 = library default (CPU count) */
    uint64_t default_n;
    run_fn fn;      /* NULL for idle */
    const char *unit;
} workload;

static const workload WORKLOADS[] = {
    {"yield", 1, 2000000, run_yield, "ns/op"},
    {"spawn_await", 0, 1000000, run_spawn_await, "ns/op"},
    {"spawn_await_batch", 0, 1000000, run_spawn_await_batch, "ns/op"},
    {"skynet", 0, 1000000, run_skynet, "ms"},
    {"mutex", 2, 1000000, run_mutex, "ns/op"},
    {"pingpong", 0, 1000000, run_pingpong, "ns/op"},
    {"idle", 0, 100000, NULL, "bytes/task"},
    {"sleep", 0, 100000, run_sleep, "ms"},
};
#define NWORKLOADS (sizeof WORKLOADS / sizeof WORKLOADS[0])

static int run_workload(const workload *w, uint64_t n, int reps, int threads) {
    kio_options o;
    kio_runtime *rt = NULL;
    int rc, ok;
    if (n == 0) n = w->default_n;
    if (w->fn == run_skynet) {
        uint64_t p = 1;
        while (p < n) p *= 10;
        if (p != n || sizeof(void *) < 8) {
            fprintf(stderr, "skynet: -n must be a power of 10 and the target 64-bit\n");
            report(w->name, 0, w->unit, 0);
            return 0;
        }
    }
    kio_options_init(&o);
    o.threads = threads >= 0 ? (unsigned)threads : w->default_threads;
    if ((rc = kio_runtime_create(&o, &rt)) != 0) {
        complain(w->name, "kio_runtime_create", rc);
        report(w->name, 0, w->unit, 0);
        return 0;
    }
    if (w->fn)
        ok = measure(w->name, w->unit, reps, w->fn, n);
    else
        ok = run_idle(n);
    if ((rc = kio_runtime_destroy(rt)) != 0) {
        complain(w->name, "kio_runtime_destroy", rc);
        ok = 0;
    }
    return ok;
}

static int usage(const char *argv0) {
    size_t i;
    fprintf(stderr, "usage: %s <workload|all> [-n N] [-r reps] [-t threads]\nworkloads:", argv0);
    for (i = 0; i < NWORKLOADS; i++) fprintf(stderr, " %s", WORKLOADS[i].name);
    fprintf(stderr, "\n");
    return 2;
}

int main(int argc, char **argv) {
    uint64_t n = 0;
    int reps = 3, threads = -1, i, ok = 1, found = 0;
    size_t k;
    if (argc < 2) return usage(argv[0]);
    for (i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc)
            n = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-t") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else
            return usage(argv[0]);
    }
    if (reps < 1) return usage(argv[0]);
    for (k = 0; k < NWORKLOADS; k++) {
        if (!strcmp(argv[1], "all") || !strcmp(argv[1], WORKLOADS[k].name)) {
            found = 1;
            ok = run_workload(&WORKLOADS[k], n, reps, threads) && ok;
        }
    }
    if (!found) return usage(argv[0]);
    return ok ? 0 : 1;
}
