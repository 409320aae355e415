#include "fd.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <new>

#include "runtime.h"

namespace kio {

namespace {

// The runtime's first registration: workers asleep without a timeout wake
// once, to sleep again with the I/O cover (sleep() in worker.cpp). The
// exchange and their announcement pair like notify() and sleep().
KIO_NOINLINE void first_registration(Runtime *rt) {
    if (rt->io_registered.exchange(true, std::memory_order_seq_cst)) return;
    unsigned n = rt->nstarted.load(std::memory_order_acquire);
    for (unsigned i = 0; i < n; i++) wake_worker(&rt->workers[i]);
}

// Two-level table: 1024 chunks of 4096 states, chunks allocated on demand and
// never freed (so lookups need no lock and states never move).
constexpr int kChunkBits = 12;
constexpr int kChunkSize = 1 << kChunkBits;
constexpr int kChunks = 1024;
std::atomic<FdState *> g_chunks[kChunks];

struct FdWait {
    FdState *st;
    Direction dir;
    bool both;
    FdSeq seen;
    uint32_t closes;  // fd_closes when the caller's call began
    WaitNode *nodes;  // [dir] (and [1 - dir] when both)
};

WaitList &list_of(FdState *st, Direction d) { return d == kIn ? st->readers : st->writers; }
std::atomic<uint32_t> &seq_of(FdState *st, Direction d) { return d == kIn ? st->seq_in : st->seq_out; }

void publish_fd_wait(Waiter *w, void *arg) {
    auto *a = static_cast<FdWait *>(arg);
    FdState *st = a->st;
    LockGuard<SpinLock> g(st->lock);
    // Closed, or closed and the number reused already (the new descriptor's
    // events are not the caller's).
    if (st->closed.load(std::memory_order_relaxed) || st->close_count.load(std::memory_order_relaxed) != a->closes) {
        claim(w, -EBADF);
        return;
    }
    Direction dirs[2] = {a->dir, Direction(1 - a->dir)};
    int ndirs = a->both ? 2 : 1;
    for (int i = 0; i < ndirs; i++) {
        uint32_t seen = dirs[i] == kIn ? a->seen.in : a->seen.out;
        if (seq_of(st, dirs[i]).load(std::memory_order_relaxed) != seen) {
            claim(w, 0);  // an edge came after the caller's system call: retry
            return;
        }
    }
    if (!st->registered) {
        // This runs on the worker the fiber parked on: register there.
        Worker *wk = current_worker();
        int e = wk->poller.add(st->fd, st);
        if (e == -EPERM) {
            // A descriptor the poller cannot watch (epoll: a regular file) is
            // always as ready as poll(2) just said: wait unregistered, for
            // kio_close, cancellation or the deadline, as poll(2) would.
        } else if (e) {
            claim(w, e);
            return;
        } else {
            st->registered = wk;
            if (!wk->rt->io_registered.load(std::memory_order_relaxed)) first_registration(wk->rt);
        }
    }
    for (int i = 0; i < ndirs; i++) list_of(st, dirs[i]).push_back(&a->nodes[i]);
}

}  // namespace

FdState *fd_state(int fd) {
    if (fd < 0 || fd >= kChunkSize * kChunks) return nullptr;
    std::atomic<FdState *> &slot = g_chunks[fd >> kChunkBits];
    FdState *chunk = slot.load(std::memory_order_acquire);
    if (!chunk) {
        FdState *fresh = new (std::nothrow) FdState[kChunkSize];
        if (!fresh) return nullptr;
        for (int i = 0; i < kChunkSize; i++) fresh[i].fd = (fd & ~(kChunkSize - 1)) + i;
        if (slot.compare_exchange_strong(chunk, fresh, std::memory_order_acq_rel)) chunk = fresh;
        else delete[] fresh;  // another thread won
    }
    return &chunk[fd & (kChunkSize - 1)];
}

// The number names a new descriptor. Any registration belonged to a file
// that is closed now: the kernel removed it from the poller when the last
// reference went away. Lock held.
void reset_locked(FdState *st, bool nonblocking, int is_socket) {
    st->is_socket.store(is_socket, std::memory_order_relaxed);
    st->nonblocking.store(nonblocking, std::memory_order_release);
    st->registered = nullptr;
    st->short_read_drains.store(-1, std::memory_order_relaxed);
    st->drained.store(0, std::memory_order_relaxed);
    // Last: fd_reopen_if_reused's lock-free path trusts the fields above once
    // it sees this (a stale nonblocking = true would let a fiber block its
    // worker in a system call on the new, blocking descriptor).
    st->closed.store(false, std::memory_order_release);
}

// Whether a short read of st's descriptor means its queue is empty: TCP only
// (a Unix socket stops at a change of credentials, a pipe at a packet).
int short_read_drains(FdState *st) {
    int yes = 0;
#if defined(__linux__) && defined(SO_PROTOCOL)
    int proto = 0;
    socklen_t len = sizeof proto;
    yes = getsockopt(st->fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 && proto == IPPROTO_TCP;
#endif
    int unknown = -1;
    if (st->short_read_drains.compare_exchange_strong(unknown, yes, std::memory_order_relaxed)) return yes;
    return unknown;  // decided meanwhile (an unusual event says no)
}

void fd_fresh(int fd, bool nonblocking, int is_socket) {
    FdState *st = fd_state(fd);
    if (!st) return;
    LockGuard<SpinLock> g(st->lock);
    reset_locked(st, nonblocking, is_socket);
}

void fd_note_read(FdState *st, uint32_t seen_in, long r, size_t len) {
    if (r <= 0 || size_t(r) >= len) return;
    int d = st->short_read_drains.load(std::memory_order_relaxed);
    if (d < 0) d = short_read_drains(st);
    if (d > 0) st->drained.store(kDrained | seen_in, std::memory_order_relaxed);
}

bool fd_reopen_if_reused(FdState *st) {
    if (KIO_LIKELY(!st->closed.load(std::memory_order_acquire))) return true;
    LockGuard<SpinLock> g(st->lock);
    if (!st->closed.load(std::memory_order_relaxed)) return true;  // another caller did it
    // While a kio_close is between marking and close(2), the number still
    // names the closed descriptor.
    if (st->closing > 0 || fcntl(st->fd, F_GETFD) < 0) return false;
    reset_locked(st, false, -1);
    return true;
}

int fd_wait(FdState *st, Direction dir, uint64_t deadline, FdSeq seen, uint32_t closes, bool both) {
    Waiter w;
    WaitNode nodes[2];
    nodes[0].waiter = nodes[1].waiter = &w;
    FdWait a{st, dir, both, seen, closes, nodes};
    int r = wait_on(&w, publish_fd_wait, &a, deadline, true, KIO_PARK_IO, st, both ? 2 : dir);
    unlink_if_linked(st->lock, list_of(st, dir), &nodes[0]);
    if (both) unlink_if_linked(st->lock, list_of(st, Direction(1 - dir)), &nodes[1]);
    return r;
}

void fd_dispatch(Worker *w, const PollEvent *events, int n) {
    (void)w;
    for (int i = 0; i < n; i++) {
        auto *st = static_cast<FdState *>(events[i].token);
        Waiter *wake_in = nullptr, *wake_out = nullptr;
        {
            LockGuard<SpinLock> g(st->lock);
            uint32_t e = events[i].events;
            // Before the bump: whoever sees the new sequence sees this too.
            if (e & kPollUnusual) st->short_read_drains.store(0, std::memory_order_relaxed);
            if (e & (kPollIn | kPollErr)) {
                st->seq_in.fetch_add(1, std::memory_order_release);
                wake_in = claim_all(st->readers, false, 0);
            }
            if (e & (kPollOut | kPollErr)) {
                st->seq_out.fetch_add(1, std::memory_order_release);
                wake_out = claim_all(st->writers, false, 0);
            }
        }
        wake_chain(wake_in);
        wake_chain(wake_out);
    }
}

Waiter *fd_closing(FdState *st) {
    LockGuard<SpinLock> g(st->lock);
    st->closed.store(true, std::memory_order_release);
    st->close_count.fetch_add(1, std::memory_order_seq_cst);
    st->closing++;
    if (Worker *wk = st->registered) {
        wk->poller.remove(st->fd);
        st->registered = nullptr;
    }
    static const uint64_t one = 1;
    for (ThreadBell *tb = st->bells; tb; tb = tb->next) (void)!::write(tb->ring_fd, &one, sizeof one);
    Waiter *head = nullptr, **tail = &head;
    for (WaitList *list : {&st->readers, &st->writers, &st->closers}) {
        *tail = claim_all(*list, false, -EBADF);
        while (*tail) tail = &(*tail)->wake_next;
    }
    return head;
}

void fd_closed(FdState *st) {
    LockGuard<SpinLock> g(st->lock);
    st->closing--;
}

void fd_add_bell(FdState *st, ThreadBell *b) {
    LockGuard<SpinLock> g(st->lock);
    b->next = st->bells;
    st->bells = b;
}

void fd_remove_bell(FdState *st, ThreadBell *b) {
    LockGuard<SpinLock> g(st->lock);
    for (ThreadBell **p = &st->bells; *p; p = &(*p)->next) {
        if (*p == b) {
            *p = b->next;
            return;
        }
    }
}

void fd_forget_runtime(Runtime *rt) {
    for (int c = 0; c < kChunks; c++) {
        FdState *chunk = g_chunks[c].load(std::memory_order_acquire);
        if (!chunk) continue;
        for (int i = 0; i < kChunkSize; i++) {
            FdState *st = &chunk[i];
            Waiter *in = nullptr, *out = nullptr;
            {
                LockGuard<SpinLock> g(st->lock);
                if (!st->registered || st->registered->rt != rt) continue;
                st->registered->poller.remove(st->fd);
                st->registered = nullptr;
                // Fibers of other runtimes waiting on it (rt's own are gone)
                // retry, and the next wait registers on a live worker.
                in = claim_all(st->readers, false, 0);
                out = claim_all(st->writers, false, 0);
            }
            wake_chain(in);
            wake_chain(out);
        }
    }
}

}  // namespace kio
