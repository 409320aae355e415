// Socket and descriptor operations: try the system call; if the descriptor
// is not ready, park on its readiness (fd.h) and try again. Plain threads
// block in poll(2) instead.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#if defined(__linux__)
#include <sys/eventfd.h>
#endif
#include <unistd.h>

#include <cerrno>
#include <climits>

#include "fd.h"
#include "runtime.h"

using namespace kio;

namespace {

// What a plain thread knows of fd when its call begins: the state and its
// close count. -EBADF if kio_close closed the number (and it is not open
// again) or is closing it right now.
struct ThreadFd {
    FdState *st;
    uint32_t closes;
};
int thread_enter(int fd, ThreadFd *t) {
    t->st = fd_state(fd);
    t->closes = t->st ? fd_closes(t->st) : 0;
    if (t->st && !fd_reopen_if_reused(t->st)) return -EBADF;
    return 0;
}

// kio_close ran since the call began: the descriptor the caller meant is
// gone, whatever now has its number.
bool closed_since(const ThreadFd &t) {
    return t.st && fd_closes(t.st) != t.closes;
}

// A plain thread waits for readiness in poll(2), bounded by its deadline.
// It counts itself in the descriptor's state, so that kio_close can wake it
// and waits for it to leave poll(2) before close(2) (else poll would look
// the number up again and wait on whatever now has it). Returns the revents
// (> 0) or a negative errno.
struct ThreadCount {
    FdState *st;
    explicit ThreadCount(FdState *s) : st(s) {
        if (st) st->thread_waiters.fetch_add(1, std::memory_order_seq_cst);
    }
    ~ThreadCount() {
        if (st) st->thread_waiters.fetch_sub(1, std::memory_order_release);
    }
    ThreadCount(const ThreadCount &) = delete;
    ThreadCount &operator=(const ThreadCount &) = delete;
};

// The calling plain thread's doorbell: an eventfd (a pipe without eventfd),
// made at its first wait and closed when it exits. poll_fd is -1 if it could
// not be made (no descriptors left): kio_close then wakes the thread only on
// a socket (by shutting it down).
struct Doorbell {
    int poll_fd = -1, ring_fd = -1;
    Doorbell() { open(); }
    // Makes the descriptors; called again at a later wait if it failed (the
    // process was out of descriptors), so the thread is not left without one.
    void open() {
#if defined(__linux__)
        poll_fd = ring_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
#else
        int p[2];
        if (::pipe(p) == 0) {
            for (int d : p) {
                fcntl(d, F_SETFD, FD_CLOEXEC);
                fcntl(d, F_SETFL, fcntl(d, F_GETFL) | O_NONBLOCK);
            }
            poll_fd = p[0];
            ring_fd = p[1];
        }
#endif
    }
    ~Doorbell() {
        if (ring_fd != poll_fd) ::close(ring_fd);
        if (poll_fd >= 0) ::close(poll_fd);
    }
    Doorbell(const Doorbell &) = delete;
    Doorbell &operator=(const Doorbell &) = delete;
    void drain() {
        uint64_t v;
        while (::read(poll_fd, &v, sizeof v) > 0) {
        }
    }
};

Doorbell &thread_doorbell() {
    thread_local Doorbell bell;
    return bell;
}

// The thread's doorbell, registered with st for the scope (see ThreadBell).
struct BellScope {
    FdState *st;
    Doorbell *bell = nullptr;
    ThreadBell node{-1, nullptr};
    explicit BellScope(FdState *s) : st(s) {
        Doorbell &b = thread_doorbell();
        if (st && b.poll_fd < 0) b.open();
        if (!st || b.poll_fd < 0) return;
        bell = &b;
        node.ring_fd = b.ring_fd;
        fd_add_bell(st, &node);
    }
    ~BellScope() {
        if (bell) fd_remove_bell(st, &node);
    }
    BellScope(const BellScope &) = delete;
    BellScope &operator=(const BellScope &) = delete;
};

int thread_wait(int fd, const ThreadFd &t, short events, uint64_t deadline) {
    ThreadCount count(t.st);
    // Registered before the first look at the close count: a kio_close from
    // then on rings it (fd_closing rings under the lock that registers it).
    BellScope bell(t.st);
    for (;;) {
        if (closed_since(t)) return -EBADF;
        // Readiness wins over an expired deadline, as in a fiber's wait.
        int timeout = -1;
        if (deadline) {
            uint64_t now = now_ns();
            timeout = now >= deadline ? 0 : int((deadline - now + 999999) / 1000000);
        }
        pollfd p[2] = {{fd, events, 0}, {bell.bell ? bell.bell->poll_fd : -1, POLLIN, 0}};
        int r = ::poll(p, bell.bell ? 2 : 1, timeout);
        int e = errno;
        if (closed_since(t)) return -EBADF;  // woken by kio_close
        if (r > 0 && p[1].revents) bell.bell->drain();  // a ring meant for an earlier wait
        if (r > 0 && p[0].revents) return (p[0].revents & POLLNVAL) ? -EBADF : p[0].revents;
        if (r < 0 && e != EINTR) return -e;
        if (deadline && now_ns() >= deadline) return -ETIMEDOUT;
    }
}

// The state of fd, ready for kio: reopened if the number was reused after a
// kio_close, and non-blocking. nullptr with *err set if unusable.
FdState *prepare(int fd, int *err) {
    FdState *st = fd_state(fd);
    if (!st) {
        // Beyond the table (or out of memory): a number that is not open
        // is still -EBADF.
        *err = (fd < 0 || fcntl(fd, F_GETFD) < 0) ? -EBADF : -ENOMEM;
        return nullptr;
    }
    if (KIO_UNLIKELY(!fd_reopen_if_reused(st))) {
        *err = -EBADF;
        return nullptr;
    }
    if (KIO_UNLIKELY(!st->nonblocking.load(std::memory_order_acquire))) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0) {
            *err = -errno;
            return nullptr;
        }
        if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
            *err = -errno;
            return nullptr;
        }
        st->nonblocking.store(true, std::memory_order_release);
    }
    return st;
}

// A fiber's fd_wait, then -EBADF if kio_close closed the descriptor since
// `closes` (fd_closes when the call began): a fiber that readiness woke may
// run only after a close, when the number can name another file already.
int wait_ready(FdState *st, Direction dir, uint64_t deadline, FdSeq seen, uint32_t closes, bool both = false) {
    if (int w = fd_wait(st, dir, deadline, seen, closes, both)) return w;
    return fd_closes(st) != closes ? -EBADF : 0;
}

// Writes to a socket whose peer is gone must fail with -EPIPE, not raise
// SIGPIPE in the whole process: sockets get send/sendmsg with MSG_NOSIGNAL.
bool is_socket(int fd) {
    FdState *st = fd_state(fd);
    if (!st) return false;
    int k = st->is_socket.load(std::memory_order_relaxed);
    if (KIO_UNLIKELY(k < 0)) {
        struct stat sb;
        // A number that is not open says nothing about the descriptor that
        // gets it next: cache only what fstat saw.
        if (fstat(fd, &sb) != 0) return false;
        k = S_ISSOCK(sb.st_mode);
        st->is_socket.store(k, std::memory_order_relaxed);
    }
    return k;
}

// `extra` for a plain thread's write to a pipe in blocking mode under a
// deadline (see io_loop): at most PIPE_BUF bytes, which fit once poll(2) says
// the pipe is writable, so the write does not sleep past the deadline (a
// short count instead). Not a MSG_ flag: only non-socket writes see it.
constexpr int kPipeBufWrite = 1 << 30;

bool is_pipe(int fd) {
    struct stat sb;
    return fstat(fd, &sb) == 0 && S_ISFIFO(sb.st_mode);
}

// The length a write of len bytes may use (see kPipeBufWrite).
size_t write_len(size_t len, int extra) { return (extra & kPipeBufWrite) && len > PIPE_BUF ? PIPE_BUF : len; }

// Runs op(extra) until it stops failing with EAGAIN/EINTR, parking on
// direction dir in between. op returns the system call's result (errno set on
// -1); extra is 0, or for a plain thread's call on a blocking descriptor
// under a deadline: MSG_DONTWAIT on a socket (another thread may take what
// poll(2) reported, and a blocking call would then outlast the deadline),
// which socket calls add to their flags, or kPipeBufWrite for a write to a
// pipe. read_len > 0: op is a plain read of that many bytes, which may skip
// the system call while the descriptor is drained (fd.h).
template <class Op>
long io_loop(int fd, Direction dir, Op op, size_t read_len = 0) {
    Task *self = current_task();
    if (!self) {
        // Plain thread: leave the descriptor's mode alone; block in poll(2)
        // if it happens to be non-blocking.
        uint64_t deadline = scope_deadline();
        short events = dir == kIn ? POLLIN : POLLOUT;
        ThreadFd t;
        if (int e = thread_enter(fd, &t)) return e;
        // Under a deadline, a descriptor in blocking mode is waited for
        // first (the call must not outlast the deadline); a non-blocking one
        // is tried first, so that a call that cannot succeed fails at once.
        bool wait_first = false;
        int extra = 0;
        if (deadline) {
            int fl = fcntl(fd, F_GETFL);
            if (fl < 0) return -errno;
            wait_first = !(fl & O_NONBLOCK);
            if (wait_first && is_socket(fd)) extra = MSG_DONTWAIT;
            else if (wait_first && dir == kOut && is_pipe(fd)) extra = kPipeBufWrite;
        }
        for (;;) {
            if (wait_first) {
                int w = thread_wait(fd, t, events, deadline);
                if (w < 0) return w;
            }
            wait_first = deadline != 0;
            long r;
            int e;
            {
                // Counted while in the call too: on a blocking descriptor it
                // may sleep in the kernel, and kio_close must wake it.
                ThreadCount count(t.st);
                r = op(extra);
                e = errno;
            }
            // An end of file or error after a kio_close is its shutdown.
            if (r <= 0 && closed_since(t)) return -EBADF;
            if (r >= 0) return r;
            if (e == EINTR) continue;
            if (e != EAGAIN && e != EWOULDBLOCK) return -e;
            if (!deadline) {
                int w = thread_wait(fd, t, events, deadline);
                if (w < 0) return w;
            }
        }
    }
    if (self->cancel_pending()) return -ECANCELED;
    int err = 0;
    FdState *st = prepare(fd, &err);
    if (!st) return err;
    uint32_t closes = fd_closes(st);
    for (;;) {
        FdSeq seen = fd_seq(st);
        if (read_len && fd_drained(st, seen.in)) {
            if (int w = wait_ready(st, kIn, 0, seen, closes)) return w;
            continue;
        }
        long r = op(0);
        if (r >= 0) {
            if (read_len) fd_note_read(st, seen.in, r, read_len);
            return r;
        }
        int e = errno;  // read before anything can switch fibers
        if (e == EINTR) continue;
        if (e != EAGAIN && e != EWOULDBLOCK) return -e;
        if (int w = wait_ready(st, dir, 0, seen, closes)) return w;
    }
}

}  // namespace

KIO_EXPORT ssize_t kio_read(int fd, void *buf, size_t len) noexcept {
    if (null_buf(buf, len)) return -EINVAL;
    return io_loop(fd, kIn, [&](int extra) { return extra ? ::recv(fd, buf, len, extra) : ::read(fd, buf, len); },
                   len);
}

KIO_EXPORT ssize_t kio_write(int fd, const void *buf, size_t len) noexcept {
    if (null_buf(buf, len)) return -EINVAL;
    return io_loop(fd, kOut, [&](int extra) {
        return is_socket(fd) ? ::send(fd, buf, len, MSG_NOSIGNAL | extra) : ::write(fd, buf, write_len(len, extra));
    });
}

// As readv(2)/writev(2): at most IOV_MAX entries. Checked here because
// sockets use sendmsg, whose msg_iovlen is unsigned.
// A bad vector, or one with a NULL buffer of nonzero length (-EINVAL, as
// for the single-buffer calls).
static bool bad_iov(const struct iovec *iov, int iovcnt) {
    if (iovcnt < 0 || iovcnt > IOV_MAX || (!iov && iovcnt > 0)) return true;
    for (int i = 0; i < iovcnt; i++)
        if (null_buf(iov[i].iov_base, iov[i].iov_len)) return true;
    return false;
}

// writev(2) of at most write_len of the vector's bytes: the leading entries
// that fit, the last one cut (at most 64 nonempty entries then; a short
// count). Empty entries are skipped, so that they cannot fill the 64 slots
// and make the call write nothing.
static long writev_capped(int fd, const struct iovec *iov, int iovcnt, int extra) {
    if (!(extra & kPipeBufWrite)) return ::writev(fd, iov, iovcnt);
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) total += iov[i].iov_len;
    size_t cap = write_len(total, extra);
    if (cap == total) return ::writev(fd, iov, iovcnt);
    struct iovec part[64];
    int n = 0;
    for (int i = 0; i < iovcnt && cap > 0 && n < 64; i++) {
        if (iov[i].iov_len == 0) continue;
        part[n] = iov[i];
        if (part[n].iov_len > cap) part[n].iov_len = cap;
        cap -= part[n].iov_len;
        n++;
    }
    return ::writev(fd, part, n);
}

KIO_EXPORT ssize_t kio_readv(int fd, const struct iovec *iov, int iovcnt) noexcept {
    if (bad_iov(iov, iovcnt)) return -EINVAL;
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++) len += iov[i].iov_len;
    return io_loop(fd, kIn, [&](int extra) -> long {
        if (!extra) return ::readv(fd, iov, iovcnt);
        msghdr m{};
        m.msg_iov = const_cast<iovec *>(iov);
        m.msg_iovlen = size_t(iovcnt);
        return ::recvmsg(fd, &m, extra);
    }, len);
}

KIO_EXPORT ssize_t kio_writev(int fd, const struct iovec *iov, int iovcnt) noexcept {
    if (bad_iov(iov, iovcnt)) return -EINVAL;
    return io_loop(fd, kOut, [&](int extra) -> long {
        if (!is_socket(fd)) return writev_capped(fd, iov, iovcnt, extra);
        msghdr m{};
        m.msg_iov = const_cast<iovec *>(iov);
        m.msg_iovlen = size_t(iovcnt);
        return ::sendmsg(fd, &m, MSG_NOSIGNAL | extra);
    });
}

// MSG_WAITALL on a stream socket: a receive that returns only once it has
// len bytes (or end of file, or an error), as recv(2) on a blocking socket
// does; a non-blocking one returns what is there. Not with MSG_PEEK (a peek
// does not consume, so a loop of them cannot wait for more) or MSG_DONTWAIT.
static bool wants_all(int fd, int flags, size_t len) {
    if (!(flags & MSG_WAITALL) || (flags & (MSG_PEEK | MSG_DONTWAIT)) || len == 0) return false;
    int type = 0;
    socklen_t tl = sizeof type;
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_STREAM;
}

// Receives into buf until len bytes came: recv_some(p, n) receives once
// (without MSG_WAITALL). An error, the deadline or cancellation after some
// bytes ends it with their count, as a signal does recv(2)'s; the next call
// reports the condition.
template <class RecvSome>
static ssize_t recv_all(void *buf, size_t len, RecvSome recv_some) {
    size_t got = 0;
    while (got < len) {
        ssize_t r = recv_some(static_cast<char *>(buf) + got, len - got);
        if (r < 0) return got ? ssize_t(got) : r;
        if (r == 0) break;  // end of file
        got += size_t(r);
    }
    return ssize_t(got);
}

KIO_EXPORT ssize_t kio_recv(int fd, void *buf, size_t len, int flags) noexcept {
    if (null_buf(buf, len)) return -EINVAL;
    if (wants_all(fd, flags, len))
        return recv_all(buf, len, [&](char *p, size_t n) { return kio_recv(fd, p, n, flags & ~MSG_WAITALL); });
    // Only a plain receive says the queue is empty when it comes back short.
    return io_loop(fd, kIn, [&](int extra) { return ::recv(fd, buf, len, flags | extra); }, flags ? 0 : len);
}

KIO_EXPORT ssize_t kio_send(int fd, const void *buf, size_t len, int flags) noexcept {
    if (null_buf(buf, len)) return -EINVAL;
    return io_loop(fd, kOut, [&](int extra) { return ::send(fd, buf, len, flags | MSG_NOSIGNAL | extra); });
}

KIO_EXPORT ssize_t kio_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
                                socklen_t *addrlen) noexcept {
    if (null_buf(buf, len)) return -EINVAL;
    if (wants_all(fd, flags, len)) {
        // The first receive reports the address, as recvfrom(2) would;
        // kio_recv waits for the rest.
        ssize_t r = kio_recvfrom(fd, buf, len, flags & ~MSG_WAITALL, addr, addrlen);
        if (r <= 0 || size_t(r) == len) return r;
        ssize_t more = kio_recv(fd, static_cast<char *>(buf) + r, len - size_t(r), flags);
        return more < 0 ? r : r + more;
    }
    return io_loop(fd, kIn, [&](int extra) { return ::recvfrom(fd, buf, len, flags | extra, addr, addrlen); });
}

KIO_EXPORT ssize_t kio_sendto(int fd, const void *buf, size_t len, int flags,
                              const struct sockaddr *addr, socklen_t addrlen) noexcept {
    if (null_buf(buf, len)) return -EINVAL;
    return io_loop(fd, kOut,
                   [&](int extra) { return ::sendto(fd, buf, len, flags | MSG_NOSIGNAL | extra, addr, addrlen); });
}

// A NULL message, or a NULL vector or buffer with bytes to move: the
// contract's -EINVAL, not the kernel's -EFAULT. (A vector longer than
// IOV_MAX is left to the kernel: -EMSGSIZE.)
static bool bad_msg(const struct msghdr *msg) {
    return !msg || (size_t(msg->msg_iovlen) <= size_t(IOV_MAX) && bad_iov(msg->msg_iov, int(msg->msg_iovlen)));
}

KIO_EXPORT ssize_t kio_recvmsg(int fd, struct msghdr *msg, int flags) noexcept {
    if (bad_msg(msg)) return -EINVAL;
    return io_loop(fd, kIn, [&](int extra) { return ::recvmsg(fd, msg, flags | extra); });
}

KIO_EXPORT ssize_t kio_sendmsg(int fd, const struct msghdr *msg, int flags) noexcept {
    if (bad_msg(msg)) return -EINVAL;
    return io_loop(fd, kOut, [&](int extra) { return ::sendmsg(fd, msg, flags | MSG_NOSIGNAL | extra); });
}

#if defined(SOCK_NONBLOCK)
KIO_EXPORT int kio_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags) noexcept {
    if (flags & ~(SOCK_CLOEXEC | SOCK_NONBLOCK)) return -EINVAL;
    long r = io_loop(fd, kIn, [&](int) { return long(::accept4(fd, addr, addrlen, flags | SOCK_NONBLOCK)); });
    if (r >= 0) fd_fresh(int(r), true, 1);
    return int(r);
}
#else
// macOS: no accept4 and no SOCK_* type flags. A new socket is made
// non-blocking and close-on-exec here (flags must be 0).
static int setup_socket(int fd) {
    int one = 1;
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        int e = -errno;
        ::close(fd);
        return e;
    }
#if defined(SO_NOSIGPIPE)
    setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
    (void)one;
    fd_fresh(fd, true, 1);
    return fd;
}

KIO_EXPORT int kio_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags) noexcept {
    if (flags) return -EINVAL;
    long r = io_loop(fd, kIn, [&](int) { return long(::accept(fd, addr, addrlen)); });
    return r < 0 ? int(r) : setup_socket(int(r));
}
#endif

KIO_EXPORT int kio_connect(int fd, const struct sockaddr *addr, socklen_t addrlen) noexcept {
    if (!addr) return -EINVAL;
    Task *self = current_task();
    if (!self) {
        ThreadFd t;
        if (int e = thread_enter(fd, &t)) return e;
        uint64_t deadline = scope_deadline();
        // Under a deadline, a blocking socket starts its connection in
        // non-blocking mode, restored right after: connect(2) would sleep
        // until the handshake ends (minutes, for a peer that drops SYNs),
        // past the deadline. Nothing else uses a socket that is connecting.
        int restore = -1;
        if (deadline) {
            int fl = fcntl(fd, F_GETFL);
            if (fl < 0) return -errno;
            if (!(fl & O_NONBLOCK)) {
                if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
                restore = fl;
            }
        }
        int r, e;
        {
            // Counted while in the call: on a blocking socket connect(2)
            // sleeps until the handshake ends, and kio_close must wake it.
            ThreadCount count(t.st);
            r = ::connect(fd, addr, addrlen);
            e = errno;
        }
        if (restore >= 0) (void)fcntl(fd, F_SETFL, restore);
        if (closed_since(t)) return -EBADF;
        if (r == 0) return 0;
        // EAGAIN in non-blocking mode is not "in progress" (see below).
        if (e != EINPROGRESS && e != EINTR) return -e;
        int w = thread_wait(fd, t, POLLOUT, deadline);
        if (w < 0) return w;
    } else {
        if (self->cancel_pending()) return -ECANCELED;
        int err = 0;
        FdState *st = prepare(fd, &err);
        if (!st) return err;
        uint32_t closes = fd_closes(st);
        FdSeq seen = fd_seq(st);
        if (::connect(fd, addr, addrlen) == 0) return 0;
        int e = errno;
        // EAGAIN is not "in progress": a Unix listener's backlog is full (or
        // no local port is free) and the socket stays unconnected.
        if (e != EINPROGRESS && e != EINTR) return -e;
        // In progress: wait until writable, then read the outcome. (A stale
        // readiness from before may wake us early: then poll(2) says not yet.)
        for (;;) {
            if (int w = wait_ready(st, kOut, 0, seen, closes)) return w;
            seen = fd_seq(st);
            pollfd p{fd, POLLOUT, 0};
            if (::poll(&p, 1, 0) > 0) break;
        }
    }
    int so = 0;
    socklen_t sl = sizeof so;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) < 0) return -errno;
    return -so;
}

KIO_EXPORT int kio_poll(int fd, short events, uint64_t deadline) noexcept {
    if (fd < 0) return -EBADF;
    if (!(events & (POLLIN | POLLOUT | POLLPRI))) return -EINVAL;
    Task *self = current_task();
    if (!self) {
        // Plain thread: thread_wait's poll(2) reports a ready descriptor at
        // once, even past the deadline.
        ThreadFd t;
        if (int e = thread_enter(fd, &t)) return e;
        return thread_wait(fd, t, events, earliest(deadline, scope_deadline()));
    }
    // A cancellation point even when the descriptor is ready, like every
    // other kio call that may park.
    if (self->cancel_pending()) return -ECANCELED;
    int err = 0;
    FdState *st = prepare(fd, &err);
    if (!st) return err;
    bool in = events & (POLLIN | POLLPRI), out = events & POLLOUT;
    uint32_t closes = fd_closes(st);
    for (;;) {
        FdSeq seen = fd_seq(st);
        pollfd p{fd, events, 0};
        int r = ::poll(&p, 1, 0);
        if (r > 0) return (p.revents & POLLNVAL) ? -EBADF : p.revents;
        if (r < 0 && errno != EINTR) return -errno;
        if (int w = wait_ready(st, in ? kIn : kOut, deadline, seen, closes, in && out)) return w;
    }
}

KIO_EXPORT int kio_socket(int domain, int type, int protocol) noexcept {
#if defined(SOCK_NONBLOCK)
    int fd = ::socket(domain, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
    if (fd < 0) return -errno;
    fd_fresh(fd, true, 1);
    return fd;
#else
    int fd = ::socket(domain, type, protocol);
    return fd < 0 ? -errno : setup_socket(fd);
#endif
}

// Plain threads in poll(2) were woken by their doorbells (fd_closing); those
// inside the system call on a blocking socket are woken by shutting it down
// (they then see the close count moved and return -EBADF). Waits (at most
// 1 s) until they have left their call: after close(2) the number may name a
// new descriptor at once, which a blocked read would then read from.
// ENOTCONN (an unconnected socket) still wakes them on Linux.
static void wake_threads(FdState *st, int fd) {
    if (::shutdown(fd, SHUT_RDWR) < 0 && errno != ENOTCONN) return;
    uint64_t give_up = now_ns() + 1000000000ull;
    while (st->thread_waiters.load(std::memory_order_acquire) > 0 && now_ns() < give_up) sched_yield();
}

KIO_EXPORT int kio_close(int fd) noexcept {
    if (fd < 0) return -EBADF;
    FdState *st = fd_state(fd);
    if (st) {
        wake_chain(fd_closing(st));
        if (st->thread_waiters.load(std::memory_order_seq_cst) > 0) wake_threads(st, fd);
    }
    // Linux closes the descriptor even when close(2) fails with EINTR.
    int r = ::close(fd) < 0 && errno != EINTR ? -errno : 0;
    if (st) fd_closed(st);
    return r;
}
