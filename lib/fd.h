// Readiness of file descriptors: one FdState per descriptor number, shared by
// every fiber that waits on it.
//
// The first fiber that must wait on a descriptor registers it, edge-triggered
// for both directions, with the poller of the worker it parks on; that single
// registration serves every later wait on the descriptor (kqueue and epoll
// keep one registration per descriptor and filter, so sharing it is the only
// way no wakeup is lost). An event wakes every waiter of its direction and
// bumps that direction's sequence number. A caller snapshots the sequence
// (fd_seq) before the system call that failed with EAGAIN and hands it to
// fd_wait, which parks only if no event came in between: an edge that
// arrived while the caller was between its system call and its park (and
// went to the waiters already queued, or to nobody) is never lost.
//
// FdStates are never freed: a late event may still name one. kio_close (or a
// kio call that creates a descriptor) resets the state of its number.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "poller.h"
#include "util.h"
#include "wait.h"

namespace kio {

struct Runtime;
struct Worker;

// A plain thread's doorbell, registered with the descriptor while the thread
// waits for it in poll(2) (io.cpp), which polls the doorbell too: kio_close
// rings it, because close(2) does not end a poll(2) on another thread.
struct ThreadBell {
    int ring_fd;  // write 8 bytes here to ring
    ThreadBell *next;
};

struct FdState {
    SpinLock lock;
    int fd = -1;
    std::atomic<bool> nonblocking{false};  // O_NONBLOCK applied (read without the lock)
    std::atomic<int> is_socket{-1};        // -1 unknown, 0 no, 1 yes: writes use MSG_NOSIGNAL
    std::atomic<bool> closed{false};       // closed with kio_close (until the number is reused)
    std::atomic<uint32_t> seq_in{0}, seq_out{0};  // events seen; bumped under lock
    // Drained reads (fd_drained): 1 if a short read proves the receive queue
    // empty (a TCP socket that has had no unusual event), 0 if not, -1 unknown.
    std::atomic<int> short_read_drains{-1};
    std::atomic<uint64_t> drained{0};  // kDrained | seq_in before the last short read, or 0
    int closing = 0;                // kio_close calls between marking (fd_closing) and fd_closed, after close(2)
    Worker *registered = nullptr;   // the worker whose poller holds the registration
    std::atomic<int> thread_waiters{0};  // plain threads blocked in poll(2) on it
    // kio_close calls so far (fd_closing bumps it): a plain thread that saw
    // another value when its call began knows its descriptor is gone, even
    // if the number is open again. seq_cst with thread_waiters: either the
    // closer sees the waiter or the waiter sees the bump.
    std::atomic<uint32_t> close_count{0};
    ThreadBell *bells = nullptr;  // under lock: plain threads in poll(2) on it
    WaitList readers, writers;
    // Fibers waiting on the blocking pool for an operation on this descriptor
    // (kio_pread, kio_pwrite, kio_fsync): woken by kio_close only, never by
    // readiness.
    WaitList closers;
};

enum Direction { kIn = 0, kOut = 1 };

// A NULL buffer with bytes to move is a bad argument (the contract's
// -EINVAL), not the kernel's -EFAULT. NULL with length 0 is left to POSIX.
inline bool null_buf(const void *buf, size_t len) { return !buf && len > 0; }

// The state of fd (created on first use); nullptr if fd is negative or too
// large for the table, or out of memory.
FdState *fd_state(int fd);
// Resets the state of a descriptor number the kernel just handed out.
void fd_fresh(int fd, bool nonblocking = false, int is_socket = -1);

// After a kio_close the state of a number stays closed (-EBADF) until the
// kernel hands the number out again. Returns false if st is still stale.
bool fd_reopen_if_reused(FdState *st);

// kio_close calls on st's number so far (see close_count).
inline uint32_t fd_closes(const FdState *st) { return st->close_count.load(std::memory_order_seq_cst); }

// Events seen so far in each direction: taken before a system call, given to
// fd_wait after it failed with EAGAIN.
struct FdSeq {
    uint32_t in, out;
};
inline FdSeq fd_seq(const FdState *st) {
    return {st->seq_in.load(std::memory_order_acquire), st->seq_out.load(std::memory_order_acquire)};
}

// Drained reads. A TCP read that returns less than asked for emptied the
// receive queue (tcp_recvmsg stops early only then, or at urgent data or a
// FIN, which come with an unusual event that turns this off for good), and
// any data that arrives later brings a new edge. So until the next event in,
// another read could only fail with EAGAIN: the caller parks at once and
// saves that system call (an echo or HTTP server's every request).
constexpr uint64_t kDrained = uint64_t(1) << 32;
inline bool fd_drained(const FdState *st, uint32_t seen_in) {
    return st->drained.load(std::memory_order_relaxed) == (kDrained | seen_in);
}
// Records a read that asked for len bytes, got r, and started with seq_in at
// seen_in.
void fd_note_read(FdState *st, uint32_t seen_in, long r, size_t len);

// Parks the calling fiber until fd is ready in direction dir (or both, when
// `both`) after `seen`, the deadline passes, the task is canceled, or the
// descriptor is closed with kio_close (also before the park: since
// `closes`, fd_closes when the caller's call began). Returns 0 (ready: retry
// the operation), -ETIMEDOUT, -ECANCELED, -EBADF, or the errno of a failed
// registration.
int fd_wait(FdState *st, Direction dir, uint64_t deadline, FdSeq seen, uint32_t closes, bool both = false);

// kio_close's steps around close(2): wake and mark closed (returns whom to
// wake; rings the doorbells of plain threads waiting in poll(2)), then say
// close(2) returned.
Waiter *fd_closing(FdState *st);
// A plain thread's doorbell joins or leaves st's (see ThreadBell).
void fd_add_bell(FdState *st, ThreadBell *b);
void fd_remove_bell(FdState *st, ThreadBell *b);
void fd_closed(FdState *st);

// Routes poller events to the waiters they concern (called by workers).
void fd_dispatch(Worker *w, const PollEvent *events, int n);

// Forgets registrations held by the workers of rt (its pollers are closing);
// other runtimes' fibers waiting on those descriptors retry.
void fd_forget_runtime(Runtime *rt);

}  // namespace kio
