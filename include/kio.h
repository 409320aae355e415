/*
 * kio: a fiber runtime for C and every language that can call C.
 *
 * An M:N runtime: each worker thread owns its own completion queue (epoll on
 * Linux, kqueue on macOS/BSD); tasks run on fibers with their own stacks; ready
 * fibers are shared between workers by work stealing; blocking operations park
 * only the fiber, never the thread.
 *
 * Conventions (they hold for every function unless its comment says otherwise):
 *   - Functions return 0 (or a count) on success and a negative errno value on
 *     failure: -EINVAL for a NULL or invalid argument, -ENOMEM, -ECANCELED,
 *     -ETIMEDOUT, -EBUSY, -EPERM for a call from the wrong thread. No function
 *     aborts on bad input it can detect, and none sets errno for you to read.
 *   - "Fiber" means code running inside a kio task (including the runtime's
 *     main fiber, the code that called kio_runtime_create). "Plain thread"
 *     means any other thread.
 *   - A fiber may resume on a different worker thread after any call that can
 *     park it. Do not cache thread-local state (errno included) across such a
 *     call, and never hold an OS mutex across it. Use pinned tasks
 *     (kio_spawn_ex) for code that must stay on one thread.
 *   - Cancellation points return -ECANCELED once the calling task has been
 *     canceled (see kio_cancel), unless a shield is up (kio_cancel_shield).
 *
 * This header compiles as C99 and as C++. See docs/api.md for the reference.
 */
#ifndef KIO_H
#define KIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every function is noexcept for C++ callers: none throws. */
#if defined(__cplusplus) && __cplusplus >= 201103L
#define KIO_NOEXCEPT noexcept
#elif defined(__cplusplus)
#define KIO_NOEXCEPT throw()
#else
#define KIO_NOEXCEPT
#endif

#if defined(_WIN32)
#define KIO_API
#elif defined(__GNUC__) || defined(__clang__)
#define KIO_API __attribute__((visibility("default")))
#else
#define KIO_API
#endif

/* ---------------------------------------------------------------------------
 * Version and errors
 * ------------------------------------------------------------------------- */

#define KIO_VERSION_MAJOR 0
#define KIO_VERSION_MINOR 1
#define KIO_VERSION_PATCH 0

/* The library's version as "MAJOR.MINOR.PATCH" (the .so you run, which may be
 * newer than the header you built with). Thread-safe; never NULL. */
KIO_API const char *kio_version(void) KIO_NOEXCEPT;

/* A static description of an error code. Accepts -EXXX (as kio returns it) or
 * EXXX. Codes kio does not word itself get the C library's static description
 * where there is one (glibc 2.32+), else "Unknown error". Thread-safe; never
 * NULL. */
KIO_API const char *kio_strerror(int err) KIO_NOEXCEPT;

/* ---------------------------------------------------------------------------
 * Runtime
 * ------------------------------------------------------------------------- */

typedef struct kio_runtime kio_runtime;

typedef struct kio_options {
    size_t size;         /* sizeof(kio_options); set by kio_options_init */
    unsigned threads;    /* workers including the creating thread; 0 = CPU count */
    size_t stack_size;   /* default fiber stack in bytes; 0 = library default (64 KiB) */
    const char *backend; /* NULL or "auto", "epoll", "kqueue" (later "io_uring") */
    /* Debugging (see docs/debugging.md). */
    int dump_signal;       /* 0 = off; a signal (e.g. SIGQUIT) that makes kio_dump(rt, 2) */
    uint64_t stall_ns;     /* 0 = off; report a fiber running this long without a kio call */
    unsigned debug_flags;  /* KIO_DEBUG_* bits */
    /* more fields may follow in later versions */
} kio_options;

/* debug_flags: resume every fiber on another worker than it parked on, to
 * flush out code that caches thread-local state across a switch (also
 * enabled by the environment variable KIO_DEBUG_MIGRATE=1). Slow. */
#define KIO_DEBUG_MIGRATE 1u

/* Fills opts with defaults and sets opts->size. Does nothing if opts is NULL.
 * It writes exactly the fields of version 0.1 (this struct): later versions
 * append fields and keep this function's size, so programs built against
 * this header stay safe with newer libraries, which read only opts->size
 * bytes. */
KIO_API void kio_options_init(kio_options *opts) KIO_NOEXCEPT;

/* Creates a runtime and turns the calling thread into its worker 0: the code
 * after this call runs as the runtime's main fiber. Further workers start
 * lazily, when work is queued and no worker is idle, up to opts->threads.
 *
 * opts may be NULL (defaults). opts->size must be at least the size of the
 * kio_options of version 0.1 (this header's). stack_size is rounded up to a
 * whole number of pages; each stack also gets a guard page below it.
 *
 * Errors: -EINVAL (out NULL, bad opts->size, unknown backend, stack_size
 * under 16 KiB or over 1 GiB, threads over 1024), -ENOTSUP (a backend this
 * platform lacks), -EBUSY (the calling thread is already part of a runtime),
 * -ENOMEM, or the errno of a failed system call (epoll_create1, ...).
 * Thread safety: any plain thread. */
KIO_API int kio_runtime_create(const kio_options *opts, kio_runtime **out) KIO_NOEXCEPT;

/* Cancels every task still running (detached ones included), waits for all of
 * them to finish, joins the workers and frees everything. Task handles of the
 * runtime are invalid afterwards. Tasks that were never started still run,
 * with cancellation already requested. Must be called from the runtime's main
 * fiber (which may have migrated to another worker thread: destroy moves it
 * back), and returns on the thread that created the runtime, which is a plain
 * thread again. It waits for tasks that ignore cancellation (a task that never
 * reaches a kio call keeps it waiting).
 * The handle of a destroyed runtime stays safe to pass to kio calls, which
 * return -EINVAL, until a later kio_runtime_create reuses its memory.
 * Errors: -EINVAL (rt NULL or not a live runtime), -EPERM (not called from the
 * runtime's main fiber, e.g. from a task or another thread). */
KIO_API int kio_runtime_destroy(kio_runtime *rt) KIO_NOEXCEPT;

/* Creates a runtime whose worker 0 is a new thread owned by kio, for callers
 * that must remain plain threads (language bindings whose code must never run
 * on a fiber, such as Python). The calling thread is not part of the runtime:
 * it can spawn into it (with rt explicit) and await tasks, blocking itself.
 * Errors: those of kio_runtime_create, and the errno of pthread_create.
 * Thread safety: any plain thread. */
KIO_API int kio_runtime_start(const kio_options *opts, kio_runtime **out) KIO_NOEXCEPT;

/* Destroys a runtime made by kio_runtime_start, as kio_runtime_destroy does
 * (cancels every task, waits for all, joins the workers), and returns
 * kio_runtime_destroy's result. Neither a cancellation point nor bounded by
 * the caller's deadline. Errors: -EINVAL (rt NULL, not live, not made by
 * kio_runtime_start, or already being stopped), -EPERM (called from one of
 * rt's fibers, or from a kio_blocking job running for one: both would wait
 * for themselves). Thread safety: any thread but rt's own. */
KIO_API int kio_runtime_stop(kio_runtime *rt) KIO_NOEXCEPT;

/* The runtime of the calling fiber or worker thread, else NULL. Thread-safe. */
KIO_API kio_runtime *kio_current(void) KIO_NOEXCEPT;

/* ---------------------------------------------------------------------------
 * Tasks
 *
 * A task runs fn(arg) on a fiber. The handle returned by kio_spawn must be
 * consumed exactly once, by kio_await, kio_cancel or kio_detach (each consumes
 * it when it returns 0). Handles are validated: using a consumed handle gives
 * -EINVAL as long as its memory has not been reused by a newer task.
 * ------------------------------------------------------------------------- */

typedef struct kio_task kio_task;
typedef void *(*kio_fn)(void *arg);

typedef struct kio_spawn_options {
    size_t size;                        /* sizeof(kio_spawn_options); set by kio_spawn_options_init */
    const char *name;                   /* copied (first 31 bytes); NULL = unnamed */
    size_t stack_size;                  /* 0 = the runtime's default */
    int pinned;                         /* nonzero: never migrates off the worker it starts on */
    void (*arg_destructor)(void *arg);  /* called with arg if the task never runs */
    /* more fields may follow in later versions */
} kio_spawn_options;

/* Fills opts with defaults and sets opts->size (the same size rules as
 * kio_options_init). Does nothing if opts is NULL. */
KIO_API void kio_spawn_options_init(kio_spawn_options *opts) KIO_NOEXCEPT;

/* Starts fn(arg) as a new task of rt (NULL = kio_current()). The task is queued
 * and does not run before the caller parks or another worker picks it up. From
 * a fiber of rt, children go to the caller's worker and run newest-first; from
 * a plain thread (or another runtime) they go to rt's injection queue.
 * Errors: -EINVAL (fn or out NULL, rt not a live runtime), -EPERM (rt NULL and
 * the caller is not in a runtime), -ECANCELED (rt is being destroyed and the
 * caller is not one of its tasks), -ENOMEM.
 * Thread safety: any thread, including plain threads with an explicit rt. */
KIO_API int kio_spawn(kio_runtime *rt, kio_fn fn, void *arg, kio_task **out) KIO_NOEXCEPT;

/* kio_spawn with options (opts may be NULL). The task is named (for kio_dump
 * and debuggers), may have its own stack size (reserved at once, so that
 * -ENOMEM is reported here) and may be pinned. Unless opts->size is invalid
 * (then nothing in opts can be trusted and -EINVAL is returned at once), kio
 * owns arg from the moment of the call: if the call fails, the task never runs
 * and opts->arg_destructor (if set) has been called with arg.
 * Errors: those of kio_spawn, plus -EINVAL for a bad opts->size or a
 * stack_size under 16 KiB or over 1 GiB. */
KIO_API int kio_spawn_ex(kio_runtime *rt, kio_fn fn, void *arg, const kio_spawn_options *opts,
                         kio_task **out) KIO_NOEXCEPT;

/* Waits until the task finishes, stores its return value in *result (result
 * may be NULL) and consumes the handle. A cancellation point: if the calling
 * task is canceled, returns -ECANCELED and the handle stays valid (the awaited
 * task is not affected); this is checked after the handle (-EINVAL, -EDEADLK)
 * and before the task's state (finished, or -EBUSY).
 * Errors: -EINVAL (task NULL, consumed or detached), -EBUSY (another caller is
 * already awaiting or canceling this task), -EDEADLK (a task awaiting itself),
 * -ECANCELED, -ETIMEDOUT (the caller's deadline scope; the handle stays
 * valid). Thread safety: any thread; plain threads block. */
KIO_API int kio_await(kio_task *task, void **result) KIO_NOEXCEPT;

/* Requests cancellation of the task, waits for it to finish, stores its return
 * value in *result (may be NULL) and consumes the handle. Not a cancellation
 * point: it always waits. The request wakes the task if it is parked in a kio
 * wait; the task's later cancellation points return -ECANCELED; the task then
 * returns normally. A task canceled before it started still runs (with the
 * request already made), so every task produces a result.
 * Errors: -EINVAL, -EBUSY, -EDEADLK (a task canceling itself; use
 * kio_cancel_self). Thread safety: any thread; plain threads block. */
KIO_API int kio_cancel(kio_task *task, void **result) KIO_NOEXCEPT;

/* Requests cancellation of the task, as kio_cancel does, but neither waits
 * nor consumes the handle: await, cancel or detach it afterwards. For
 * "wait with a timeout, then abort". Errors: -EINVAL (a consumed or detached
 * handle). Thread safety: any thread. */
KIO_API int kio_cancel_request(kio_task *task) KIO_NOEXCEPT;

/* Consumes the handle without waiting: the task runs to completion on its own
 * and its result is dropped. Errors: -EINVAL, -EBUSY (being awaited or
 * canceled). Thread safety: any thread. */
KIO_API int kio_detach(kio_task *task) KIO_NOEXCEPT;

/* Waits until at least one of tasks[0..count) has finished and stores the
 * lowest index of a finished task in *index. Consumes nothing; a handle that
 * another caller awaits may be consumed by it meanwhile, and *index may then
 * name that (no longer valid) handle. A cancellation point (when no task has
 * finished yet). Errors: -EINVAL (tasks or index
 * NULL, count 0 or over 2^30, a NULL, consumed or detached handle), -EDEADLK
 * (the caller is among the tasks), -ECANCELED, -ETIMEDOUT (the caller's
 * deadline scope), -ENOMEM (count over 16 needs an allocation).
 * Thread safety: any thread; plain threads block. */
KIO_API int kio_select(kio_task *const *tasks, size_t count, size_t *index) KIO_NOEXCEPT;

/* Puts the calling fiber at the back of its worker's run queue and runs other
 * ready fibers first. A cancellation point (it yields, then returns -ECANCELED
 * if the task has been canceled), so it also serves as a cancellation check in
 * CPU-bound loops. Errors: -EPERM from a plain thread, -ECANCELED. */
KIO_API int kio_yield(void) KIO_NOEXCEPT;

/* The id of the task behind a live handle (not yet consumed), or 0 for NULL
 * or an invalid handle. Thread-safe. */
KIO_API uint64_t kio_task_get_id(kio_task *task) KIO_NOEXCEPT;

/* The id of the calling task, or 0 on a plain thread. Ids are unique within a
 * runtime (the main fiber is 1, spawned tasks get larger ids, not necessarily
 * in spawn order). */
KIO_API uint64_t kio_task_id(void) KIO_NOEXCEPT;

/* ---------------------------------------------------------------------------
 * Cancellation
 * ------------------------------------------------------------------------- */

/* Shields the calling task from cancellation (enable != 0) or lowers the shield
 * (enable == 0) and returns the previous setting (0 or 1). While shielded, a
 * cancellation request is recorded but neither wakes the task nor makes its
 * cancellation points fail; it takes effect at the first cancellation point
 * after the shield is lowered. Use it around cleanup that must not be cut
 * short, restoring the returned value afterwards (shields nest that way).
 * Errors: -EPERM from a plain thread. */
KIO_API int kio_cancel_shield(int enable) KIO_NOEXCEPT;

/* Returns -ECANCELED if the calling task has been canceled (and is not
 * shielded), else 0. Does not park. Returns 0 on plain threads. */
KIO_API int kio_check_cancel(void) KIO_NOEXCEPT;

/* Requests cancellation of the calling task itself: its next cancellation
 * point returns -ECANCELED. Errors: -EPERM from a plain thread. */
KIO_API int kio_cancel_self(void) KIO_NOEXCEPT;

/* ---------------------------------------------------------------------------
 * Time
 * ------------------------------------------------------------------------- */

/* CLOCK_MONOTONIC in nanoseconds, read fresh on every call. Thread-safe. */
KIO_API uint64_t kio_now(void) KIO_NOEXCEPT;

/* Parks the calling fiber for at least ns nanoseconds (a plain thread sleeps).
 * kio_sleep(0) yields. A cancellation point; from a plain thread it cannot be
 * canceled. Errors: -ECANCELED, -ETIMEDOUT (the caller's deadline scope ends
 * first), -ENOMEM (the timer could not be queued). */
KIO_API int kio_sleep(uint64_t ns) KIO_NOEXCEPT;

/* Parks until kio_now() >= deadline; returns 0 at once if that has passed
 * (after the cancellation check: a canceled task gets -ECANCELED even then).
 * A cancellation point. Errors: -ECANCELED, -ETIMEDOUT (the caller's deadline
 * scope ends first), -ENOMEM. */
KIO_API int kio_sleep_until(uint64_t deadline) KIO_NOEXCEPT;

/* ---------------------------------------------------------------------------
 * Mutex and condition
 *
 * Fiber-aware: a fiber that must wait parks (its worker runs other fibers); a
 * plain thread that must wait blocks. Both can share one mutex. A locker that
 * finds the mutex held by a running fiber spins briefly, then waits in a FIFO
 * queue. Unlock serves the queue in order: it hands ownership straight to the
 * first waiter (which then cannot be overtaken) when the holder kept the
 * mutex across a park or yield, or when that waiter has waited 1 ms or more;
 * otherwise it releases the mutex and wakes the first waiter, which competes
 * with fibers that are running and keeps its place at the front if it loses.
 * So a waiter is overtaken for at most about 1 ms, and short critical
 * sections do not turn into lock convoys (the policy of Go's sync.Mutex).
 * No destroy is needed: an all-zero object (static storage, KIO_MUTEX_INIT,
 * memset 0) is a valid unlocked mutex / empty condition. Neither may be moved
 * or copied while in use. They are not tied to one runtime.
 * ------------------------------------------------------------------------- */

typedef struct kio_mutex {
    uintptr_t opaque_[4];
} kio_mutex;
#define KIO_MUTEX_INIT {{0, 0, 0, 0}}

typedef struct kio_cond {
    uintptr_t opaque_[3];
} kio_cond;
#define KIO_COND_INIT {{0, 0, 0}}

/* Initializes m to the unlocked state (same as KIO_MUTEX_INIT). */
KIO_API void kio_mutex_init(kio_mutex *m) KIO_NOEXCEPT;

/* Locks m, parking the fiber (or blocking the plain thread) while another
 * owner holds it. A cancellation point: returns -ECANCELED without the lock if
 * the calling task is canceled (checked on entry and while parked).
 * Errors: -EINVAL (m NULL), -EDEADLK (the caller already holds m),
 * -ECANCELED, -ETIMEDOUT (the caller's deadline scope). Thread safety: any
 * thread. */
KIO_API int kio_mutex_lock(kio_mutex *m) KIO_NOEXCEPT;

/* Locks m if it is free right now (and no waiter is owed a hand-off). Returns
 * 0 or -EBUSY (held, by anyone including the caller); -EINVAL for NULL. Never
 * parks. */
KIO_API int kio_mutex_trylock(kio_mutex *m) KIO_NOEXCEPT;

/* Unlocks m and serves the first waiter, if any (hand-off or wakeup, see
 * above). Never parks. Ownership belongs to the task (or plain thread) that
 * locked m: an unlock by anyone else, or of an unlocked mutex, is detected
 * and ignored (m is left as it was). NULL is ignored. */
KIO_API void kio_mutex_unlock(kio_mutex *m) KIO_NOEXCEPT;

/* Initializes c to the empty state (same as KIO_COND_INIT). */
KIO_API void kio_cond_init(kio_cond *c) KIO_NOEXCEPT;

/* Atomically releases m (which the caller must hold) and waits for a signal,
 * then re-locks m before returning, whatever the outcome. A cancellation
 * point. Spurious wakeups do not happen, but callers should still re-check
 * their predicate in a loop, as with pthreads.
 * Errors: -EINVAL (c or m NULL), -EPERM (the caller does not hold m),
 * -ECANCELED, -ETIMEDOUT (the caller's deadline scope). Thread safety: any
 * thread. */
KIO_API int kio_cond_wait(kio_cond *c, kio_mutex *m) KIO_NOEXCEPT;

/* kio_cond_wait with an absolute deadline in the kio_now() time base.
 * Errors: also -ETIMEDOUT when the deadline passes first (m is re-locked),
 * and -ENOMEM if the timer could not be queued. */
KIO_API int kio_cond_wait_until(kio_cond *c, kio_mutex *m, uint64_t deadline) KIO_NOEXCEPT;

/* Wakes the longest-waiting waiter of c, if any. NULL is ignored. Signalers
 * need not hold the mutex, but only a signal sent under it is ordered with the
 * waiter's predicate check. Thread safety: any thread. */
KIO_API void kio_cond_signal(kio_cond *c) KIO_NOEXCEPT;

/* Wakes every waiter of c; each then re-locks the mutex, in no particular
 * order. NULL is ignored. Thread safety: any thread. */
KIO_API void kio_cond_broadcast(kio_cond *c) KIO_NOEXCEPT;


/* ---------------------------------------------------------------------------
 * Deadlines
 *
 * One mechanism bounds every blocking kio call: a deadline attached to the
 * calling task (or plain thread). While it is set, each call that parks
 * (I/O, kio_poll, kio_sleep, kio_mutex_lock, kio_cond_wait, kio_await,
 * kio_select, kio_blocking, kio_open, ...) returns -ETIMEDOUT once kio_now()
 * reaches it, leaving nothing registered behind. Calls that take their own
 * deadline use the earlier of the two. Exceptions: kio_pread, kio_pwrite and
 * kio_fsync are bounded only until a pool thread starts them (see Files);
 * kio_listen_tcp and kio_dial_tcp bound their name lookup on fibers only; on
 * a plain thread, kio_open, kio_pread, kio_pwrite, kio_fsync and kio_blocking
 * run on that thread and are not bounded.
 * ------------------------------------------------------------------------- */

/* Sets the calling task's deadline (kio_now() base; 0 = none) and returns the
 * previous one. Scopes nest by restoring the returned value:
 *     uint64_t saved = kio_deadline_set(kio_now() + 100 * 1000000);
 *     ... kio_read(...) ... kio_write(...) ...
 *     kio_deadline_set(saved);
 * A deadline set on a plain thread applies to that thread's kio calls. */
KIO_API uint64_t kio_deadline_set(uint64_t deadline) KIO_NOEXCEPT;

/* The calling task's (or plain thread's) deadline, 0 if none. */
KIO_API uint64_t kio_deadline_get(void) KIO_NOEXCEPT;

/* ---------------------------------------------------------------------------
 * Sockets and file descriptors
 *
 * Each call mirrors the POSIX call of the same name and returns its result
 * (a count, a descriptor, or 0) or a negative errno; it never sets errno.
 * On a fiber, when the descriptor is not ready, the fiber parks on its
 * worker's poller (epoll or kqueue) and the worker runs other fibers; fibers
 * waiting on the same descriptor and direction share one registration. The
 * descriptor is switched to non-blocking mode on first use. On a plain thread
 * the call blocks the thread and the descriptor keeps its mode (a deadline
 * bounds it on sockets, which are then called with MSG_DONTWAIT, and on
 * pipes, where a write then moves at most PIPE_BUF bytes, but not an accept
 * on a blocking socket: docs/api.md).
 *
 * All of them are cancellation points and honour the deadline (-ETIMEDOUT).
 * Errors besides the system call's own: -EBADF (invalid or closed with
 * kio_close, also when the close happens while parked), -ECANCELED,
 * -ETIMEDOUT, -EINVAL for a NULL buffer with a nonzero length (not the
 * kernel's -EFAULT; also a NULL vector or buffer in kio_readv, kio_writev,
 * kio_recvmsg and kio_sendmsg, and kio_pread and kio_pwrite). EINTR never reaches the
 * caller (the call is retried).
 * ------------------------------------------------------------------------- */

KIO_API ssize_t kio_read(int fd, void *buf, size_t len) KIO_NOEXCEPT;
KIO_API ssize_t kio_write(int fd, const void *buf, size_t len) KIO_NOEXCEPT;
KIO_API ssize_t kio_readv(int fd, const struct iovec *iov, int iovcnt) KIO_NOEXCEPT;
KIO_API ssize_t kio_writev(int fd, const struct iovec *iov, int iovcnt) KIO_NOEXCEPT;
KIO_API ssize_t kio_recv(int fd, void *buf, size_t len, int flags) KIO_NOEXCEPT;
KIO_API ssize_t kio_send(int fd, const void *buf, size_t len, int flags) KIO_NOEXCEPT;
KIO_API ssize_t kio_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
                             socklen_t *addrlen) KIO_NOEXCEPT;
KIO_API ssize_t kio_sendto(int fd, const void *buf, size_t len, int flags,
                           const struct sockaddr *addr, socklen_t addrlen) KIO_NOEXCEPT;
KIO_API ssize_t kio_recvmsg(int fd, struct msghdr *msg, int flags) KIO_NOEXCEPT;
KIO_API ssize_t kio_sendmsg(int fd, const struct msghdr *msg, int flags) KIO_NOEXCEPT;

/* Like accept4(2); the new descriptor is always non-blocking (ready for
 * kio), flags may add SOCK_CLOEXEC. (macOS has no accept4: flags must be 0,
 * and the descriptor is always close-on-exec.) */
KIO_API int kio_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags) KIO_NOEXCEPT;

/* Like connect(2), waiting for the connection to complete. Returns 0 or the
 * connection's error (-ECONNREFUSED, ...). */
KIO_API int kio_connect(int fd, const struct sockaddr *addr, socklen_t addrlen) KIO_NOEXCEPT;

/* Waits until fd is ready for `events` (POLLIN, POLLPRI, POLLOUT, as
 * poll(2)) or the deadline passes (kio_now() base, 0 = none; the task
 * deadline also applies). A cancellation point even when fd is ready.
 * Returns the ready events (> 0, POLLHUP/POLLERR included when they occur),
 * -ETIMEDOUT, -ECANCELED, -EBADF or -EINVAL. */
KIO_API int kio_poll(int fd, short events, uint64_t deadline) KIO_NOEXCEPT;

/* socket(2) with SOCK_NONBLOCK | SOCK_CLOEXEC: ready for the calls above. */
KIO_API int kio_socket(int domain, int type, int protocol) KIO_NOEXCEPT;

/* Wakes every fiber parked on fd with -EBADF, drops kio's registrations for
 * it, then closes it. Plain threads waiting for fd in a kio call are woken
 * too with -EBADF (through a doorbell polled beside fd), and so are those
 * blocked inside the system call on a socket (the socket is shut down first,
 * and kio_close waits, at most 1 s, until they have stopped waiting; not on
 * sockets without shutdown(2), such as netlink, nor on other descriptors,
 * such as a blocking pipe). Returns 0 or the error of close(2). Use it
 * instead of close(2) for descriptors used with kio: a descriptor closed
 * behind kio's back keeps stale state until a kio call creates a descriptor
 * with that number again. Not a cancellation point. */
KIO_API int kio_close(int fd) KIO_NOEXCEPT;

/* A listening TCP socket bound to host:port (host NULL or "" = any address;
 * a name or a numeric IPv4/IPv6 address), with SO_REUSEADDR. port 0 picks a
 * free port (see getsockname). A numeric address resolves at once; a name is
 * looked up on the blocking pool, a wait that cancellation and the deadline
 * end. Returns the descriptor or a negative errno (-EADDRINUSE, ..., -ENOENT
 * when the name does not resolve, -ECANCELED, -ETIMEDOUT). */
KIO_API int kio_listen_tcp(const char *host, int port, int backlog) KIO_NOEXCEPT;

/* A connected TCP socket to host:port, trying each resolved address until
 * one connects or the deadline passes (0 = none; the earlier of it and the
 * caller's deadline bounds the name lookup too, which for a name runs on the
 * blocking pool). Returns the descriptor or a negative errno. */
KIO_API int kio_dial_tcp(const char *host, int port, uint64_t deadline) KIO_NOEXCEPT;

/* ---------------------------------------------------------------------------
 * Files and blocking work
 *
 * Regular files are never "ready" for epoll or kqueue, so these run on a
 * bounded pool of threads while the fiber parks. Each is a cancellation point
 * on entry. kio_open (which can block without bound: a FIFO, a hung network
 * file system) is also abandoned by cancellation or the deadline: the fiber
 * returns -ECANCELED / -ETIMEDOUT at once, and a descriptor the open still
 * produces is closed. kio_pread, kio_pwrite and kio_fsync fail with
 * -ETIMEDOUT on entry if the deadline has passed; while queued behind a busy
 * pool, cancellation or the deadline withdraw them (-ECANCELED, -ETIMEDOUT;
 * they never run), and so does a kio_close of the descriptor (-EBADF; the
 * number may name another file by then). Once started they run to
 * completion and the fiber waits for them (the pool thread uses the caller's buffer, which must stay
 * valid); a cancellation that arrives meanwhile shows at the next
 * cancellation point. From a plain thread they run directly.
 * ------------------------------------------------------------------------- */

KIO_API int kio_open(const char *path, int flags, mode_t mode) KIO_NOEXCEPT;
KIO_API ssize_t kio_pread(int fd, void *buf, size_t len, off_t offset) KIO_NOEXCEPT;
KIO_API ssize_t kio_pwrite(int fd, const void *buf, size_t len, off_t offset) KIO_NOEXCEPT;
KIO_API int kio_fsync(int fd) KIO_NOEXCEPT;

/* Runs fn(arg), which may block its OS thread (a library call, DNS, ...), on
 * an elastic pool of plain threads and parks the calling fiber until it
 * returns; stores its return value in *result (may be NULL). A cancellation
 * point: on cancellation (or deadline) the fiber returns -ECANCELED
 * (-ETIMEDOUT) at once and fn still runs to completion, its result dropped.
 * From a plain thread, calls fn directly. Errors: -EINVAL (fn NULL),
 * -ECANCELED, -ETIMEDOUT, -ENOMEM / -EAGAIN (no thread could be started). */
KIO_API int kio_blocking(kio_fn fn, void *arg, void **result) KIO_NOEXCEPT;

/* ---------------------------------------------------------------------------
 * Completion queues: waiting for tasks from an event loop
 *
 * For code that must not block and must not run on a fiber stack (an asyncio
 * event loop, a GUI main loop): a queue that receives the results of tasks
 * and has a descriptor that becomes readable when results are pending.
 * ------------------------------------------------------------------------- */

typedef struct kio_cq kio_cq;

typedef struct kio_cq_event {
    uint64_t user_data; /* as given to kio_cq_watch */
    void *result;       /* the task's return value */
} kio_cq_event;

/* Creates a completion queue. Errors: -EINVAL, -ENOMEM, -EMFILE, ... */
KIO_API int kio_cq_create(kio_cq **out) KIO_NOEXCEPT;

/* A descriptor that is readable while events are pending (for select, poll,
 * epoll, asyncio's add_reader). Owned by the queue. */
KIO_API int kio_cq_fd(kio_cq *cq) KIO_NOEXCEPT;

/* Consumes the task handle (like kio_detach): when the task finishes, an
 * event with user_data and its result is posted to cq. Errors: -EINVAL,
 * -EBUSY (the task is being awaited or canceled). Thread safety: any thread. */
KIO_API int kio_cq_watch(kio_cq *cq, kio_task *task, uint64_t user_data) KIO_NOEXCEPT;

/* Moves up to max pending events into events[] without blocking and returns
 * their count (0 if none). Thread safety: any thread. */
KIO_API int kio_cq_poll(kio_cq *cq, kio_cq_event *events, size_t max) KIO_NOEXCEPT;

/* Destroys the queue. Tasks still watched by it post nowhere: their results
 * are dropped. Errors: -EINVAL. */
KIO_API int kio_cq_destroy(kio_cq *cq) KIO_NOEXCEPT;

/* ---------------------------------------------------------------------------
 * Introspection and debugging (docs/debugging.md)
 * ------------------------------------------------------------------------- */

/* What a parked task waits for (kio_stats parks[], kio_dump). */
enum {
    KIO_PARK_SLEEP,    /* kio_sleep, kio_sleep_until */
    KIO_PARK_MUTEX,    /* kio_mutex_lock */
    KIO_PARK_COND,     /* kio_cond_wait, kio_cond_wait_until */
    KIO_PARK_AWAIT,    /* kio_await, kio_cancel */
    KIO_PARK_SELECT,   /* kio_select */
    KIO_PARK_IO,       /* descriptor readiness (kio_read, kio_accept, kio_poll, ...) */
    KIO_PARK_BLOCKING, /* the blocking pool (kio_blocking, files, name resolution) */
    KIO_PARK_OTHER,    /* runtime internals (shutdown, migration) */
    KIO_PARK_KINDS
};

/* Counters of a runtime. A struct tag only (the function below has its
 * name): declare `struct kio_stats st;`. */
struct kio_stats {
    size_t size;               /* sizeof(struct kio_stats); set by kio_stats_init */
    unsigned workers;          /* worker threads started (including worker 0) */
    uint64_t tasks_live;       /* spawned, fiber not yet exited */
    uint64_t tasks_ready;      /* queued to run */
    uint64_t switches;         /* context switches so far */
    uint64_t steals;           /* tasks taken from other workers */
    uint64_t parks[KIO_PARK_KINDS]; /* parks so far, by kind */
    uint64_t stack_reserved;   /* bytes of address space reserved for stacks */
    uint64_t stack_committed;  /* bytes of stacks carved so far (in batches of 32) */
    /* more fields may follow in later versions */
};

/* Sets out->size and zeroes the rest (the same size rules as
 * kio_options_init). Does nothing if out is NULL. */
KIO_API void kio_stats_init(struct kio_stats *out) KIO_NOEXCEPT;

/* Fills *out (up to out->size bytes) with rt's counters (rt NULL =
 * kio_current()). The counters are read without stopping the runtime, so
 * they are each exact but not a consistent snapshot. Errors: -EINVAL.
 * Thread safety: any thread, also while another destroys rt (destroy waits
 * for a call in progress; one that starts once destroy frees rt returns
 * -EINVAL). */
KIO_API int kio_stats(kio_runtime *rt, struct kio_stats *out) KIO_NOEXCEPT;

/* Stores up to max return addresses of task's stack in frames (task NULL =
 * the calling fiber) and returns their count, innermost first. The task must
 * be suspended (parked or queued): -EBUSY while it runs on a worker; a task
 * that has not started yet has no frames (0). While the walk reads the
 * suspended stack, a worker that would resume the task waits for it (the walk
 * gathers only addresses). For diagnostics. Errors: -EINVAL, -EBUSY, -ENOTSUP (no unwinder on this
 * platform), -EPERM (task NULL on a plain thread). */
KIO_API int kio_backtrace(kio_task *task, void **frames, size_t max) KIO_NOEXCEPT;

/* Writes a report of rt (NULL = kio_current()) to fd: its workers, and every
 * live task with its id, name, state (running, ready, or parked on what: sleep
 * until when, mutex, condition, descriptor and direction, await of which task)
 * and symbolized backtrace. Returns 0 or a negative errno (-EINVAL, a write
 * error). Not async-signal-safe (it allocates to demangle names): from a
 * signal handler, use the dump_signal option instead, which runs it on a
 * monitor thread. Thread safety: any thread, also while another destroys rt,
 * as kio_stats. */
KIO_API int kio_dump(kio_runtime *rt, int fd) KIO_NOEXCEPT;

#ifdef __cplusplus
}
#endif

#endif /* KIO_H */
