// Readiness of file descriptors: one FdState per descriptor number, shared by
// every fiber that waits on it.
//
// The first fiber that must wait on a descriptor registers it, edge-triggered
// for both directions, with the poller of the worker it parks on; that single
// registration serves every later wait on the descriptor (kqueue and epoll
// keep one registration per descriptor and filter, so sharing it is the only
// way no wakeup is lost). An event wakes every waiter of its direction; with
// no waiter it is remembered (ready_in / ready_out) for the next one, since an
// edge-triggered event will not repeat.
//
// FdStates are never freed: a late event may still name one. kio_close (or a
// kio call that creates a descriptor) resets the state of its number.
#pragma once

#include <atomic>
#include <cstdint>

#include "poller.h"
#include "util.h"
#include "wait.h"

namespace kio {

struct Runtime;
struct Worker;

struct FdState {
    SpinLock lock;
    int fd = -1;
    std::atomic<bool> nonblocking{false};  // O_NONBLOCK applied (read without the lock)
    std::atomic<int> is_socket{-1};        // -1 unknown, 0 no, 1 yes: writes use MSG_NOSIGNAL
    std::atomic<bool> closed{false};       // closed with kio_close (until the number is reused)
    bool ready_in = false, ready_out = false;
    Worker *registered = nullptr;   // the worker whose poller holds the registration
    std::atomic<int> thread_waiters{0};  // plain threads blocked in poll(2) on it
    WaitList readers, writers;
};

enum Direction { kIn = 0, kOut = 1 };

// The state of fd (created on first use); nullptr if fd is negative or too
// large for the table, or out of memory.
FdState *fd_state(int fd);
// Resets the state of a descriptor number the kernel just handed out.
void fd_fresh(int fd, bool nonblocking = false, int is_socket = -1);

// Parks the calling fiber until fd is ready in direction dir (or both, when
// `both`), the deadline passes, the task is canceled, or the descriptor is
// closed with kio_close. Returns 0 (ready: retry the operation), -ETIMEDOUT,
// -ECANCELED, -EBADF, or the errno of a failed registration.
int fd_wait(FdState *st, Direction dir, uint64_t deadline, bool both = false);

// Routes poller events to the waiters they concern (called by workers).
void fd_dispatch(Worker *w, const PollEvent *events, int n);

// Wakes every waiter with -EBADF and drops the registration. Lock held.
Waiter *fd_close_locked(FdState *st);

// Forgets registrations held by the workers of rt (its pollers are closing).
void fd_forget_runtime(Runtime *rt);

}  // namespace kio
