/* A program for test/gdb/gdb_test.sh and the gdb walkthrough in
 * docs/debugging.md: a runtime whose fibers are parked in known functions,
 * stopped at kio_gdb_target_ready() for a debugger.
 *
 *   task 'alpha'  kio_sleep (one hour)         in wait_here_alpha
 *   task 'beta'   kio_mutex_lock (held by main) in wait_here_beta
 *   task 'gamma'  kio_cond_wait               in wait_here_gamma
 *   task 'delta'  kio_await of 'gamma'        in wait_here_delta
 *   task 'eps'    kio_read of an empty pipe   in wait_here_eps
 *   main          running, in kio_gdb_target_ready
 *
 * The ids of the tasks are in the globals alpha_id ... eps_id (for
 * `kio bt alpha_id`). Without a debugger, the program prints the ids, cleans
 * up and exits 0. With the argument "dump" it also writes kio_dump to
 * stdout at the stop point. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kio.h"

#define MS ((uint64_t)1000000u)
#define HOUR ((uint64_t)3600u * 1000u * MS)

static kio_mutex g_mutex = KIO_MUTEX_INIT;
static kio_mutex g_cond_mutex = KIO_MUTEX_INIT;
static kio_cond g_cond = KIO_COND_INIT;
static int g_pipe[2];
static int g_signaled;
static kio_task *g_gamma;

volatile uint64_t alpha_id, beta_id, gamma_id, delta_id, eps_id;
volatile int g_after; /* keeps the calls below from being tail calls */

__attribute__((noinline)) static void wait_here_alpha(void) {
    alpha_id = kio_task_id();
    kio_sleep(HOUR); /* canceled at exit */
    g_after++;
}

__attribute__((noinline)) static void wait_here_beta(void) {
    beta_id = kio_task_id();
    if (kio_mutex_lock(&g_mutex) == 0) kio_mutex_unlock(&g_mutex);
    g_after++;
}

__attribute__((noinline)) static void wait_here_gamma(void) {
    gamma_id = kio_task_id();
    kio_mutex_lock(&g_cond_mutex);
    while (!g_signaled)
        if (kio_cond_wait(&g_cond, &g_cond_mutex) != 0) break;
    kio_mutex_unlock(&g_cond_mutex);
    g_after++;
}

__attribute__((noinline)) static void wait_here_delta(void) {
    delta_id = kio_task_id();
    kio_await(g_gamma, NULL);
    g_after++;
}

__attribute__((noinline)) static void wait_here_eps(void) {
    char c;
    eps_id = kio_task_id();
    kio_read(g_pipe[0], &c, 1);
    g_after++;
}

static void *run_alpha(void *a) { (void)a; wait_here_alpha(); return NULL; }
static void *run_beta(void *a) { (void)a; wait_here_beta(); return NULL; }
static void *run_gamma(void *a) { (void)a; wait_here_gamma(); return NULL; }
static void *run_delta(void *a) { (void)a; wait_here_delta(); return NULL; }
static void *run_eps(void *a) { (void)a; wait_here_eps(); return NULL; }

/* The debugger stops here (break kio_gdb_target_ready). */
__attribute__((noinline)) void kio_gdb_target_ready(void) {
    __asm__ volatile("" ::: "memory");
}

static kio_task *spawn_named(kio_fn fn, const char *name) {
    kio_spawn_options so;
    kio_task *t = NULL;
    kio_spawn_options_init(&so);
    so.name = name;
    if (kio_spawn_ex(NULL, fn, NULL, &so, &t) != 0) {
        fprintf(stderr, "gdb_target: spawn %s failed\n", name);
        exit(2);
    }
    return t;
}

/* Suspended (not running on a worker) once kio_backtrace can walk it. */
static void wait_parked(kio_task *t, volatile uint64_t *id) {
    void *frames[8];
    int i;
    for (i = 0; i < 10000; i++) {
        if (*id && kio_backtrace(t, frames, 8) > 0) return;
        kio_sleep(MS);
    }
    fprintf(stderr, "gdb_target: a task did not park\n");
    exit(3);
}

int main(int argc, char **argv) {
    kio_options o;
    kio_runtime *rt;
    kio_task *alpha, *beta, *delta, *eps;
    kio_options_init(&o);
    o.threads = 2;
    if (pipe(g_pipe) != 0 || kio_runtime_create(&o, &rt) != 0) return 2;
    kio_mutex_lock(&g_mutex);
    alpha = spawn_named(run_alpha, "alpha");
    beta = spawn_named(run_beta, "beta");
    g_gamma = spawn_named(run_gamma, "gamma");
    delta = spawn_named(run_delta, "delta");
    eps = spawn_named(run_eps, "eps");
    wait_parked(alpha, &alpha_id);
    wait_parked(beta, &beta_id);
    wait_parked(g_gamma, &gamma_id);
    wait_parked(delta, &delta_id);
    wait_parked(eps, &eps_id);
    printf("alpha %llu beta %llu gamma %llu delta %llu eps %llu\n", (unsigned long long)alpha_id,
           (unsigned long long)beta_id, (unsigned long long)gamma_id,
           (unsigned long long)delta_id, (unsigned long long)eps_id);
    fflush(stdout);
    if (argc > 1 && strcmp(argv[1], "dump") == 0) kio_dump(NULL, 1);

    kio_gdb_target_ready();

    /* Clean up: release every wait. */
    kio_mutex_unlock(&g_mutex);
    kio_mutex_lock(&g_cond_mutex);
    g_signaled = 1;
    kio_cond_signal(&g_cond);
    kio_mutex_unlock(&g_cond_mutex);
    if (write(g_pipe[1], "x", 1) != 1) return 4;
    kio_cancel(alpha, NULL);
    kio_await(beta, NULL);
    kio_await(delta, NULL);
    kio_await(eps, NULL);
    if (kio_runtime_destroy(rt) != 0) return 5;
    return 0;
}
