// Regular files and arbitrary blocking calls, on the blocking pool.
//
// kio_pread, kio_pwrite and kio_fsync end by cancellation or the deadline
// only until a pool thread takes them (a queued job is withdrawn and never
// runs): once started they run to completion (the fiber waits for them),
// because the pool thread uses the caller's buffer; on a regular file that
// takes bounded time. kio_open can block without bound (a FIFO without a writer, a hung
// network file system), so cancellation or the deadline abandon it: it works
// on a copy of the path and closes the descriptor if nobody takes it.
// kio_blocking can be abandoned likewise; its function finishes unobserved.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

#include "blocking.h"
#include "fd.h"
#include "runtime.h"

using namespace kio;

namespace {

// A system call on descriptor fd to run on the pool: returns -1 with errno
// on failure.
template <class Op>
struct Call {
    Op op;
    FdState *st;      // fd's state, or nullptr (beyond the table)
    uint32_t closes;  // fd_closes(st) when the call began
    long r = 0;
    int e = 0;
    static void *run(void *p) {
        auto *c = static_cast<Call *>(p);
        // A kio_close came while the job was queued: the number may name
        // another file by now, which the operation must not touch.
        if (c->st && fd_closes(c->st) != c->closes) {
            c->r = -1;
            c->e = EBADF;
            return nullptr;
        }
        do {
            c->r = c->op();
        } while (c->r < 0 && errno == EINTR);
        c->e = c->r < 0 ? errno : 0;
        return nullptr;
    }
};

// Runs op (a system call on fd) on the blocking pool, or right here on a
// plain thread. A kio_close of fd withdraws a job that has not started and
// wakes its fiber with -EBADF; one that has started finishes (its system
// call holds the file).
template <class Op>
long offload(int fd, Op op) {
    FdState *st = fd_state(fd);
    if (st && !fd_reopen_if_reused(st)) return -EBADF;
    Call<Op> c{op, st, st ? fd_closes(st) : 0};
    Task *self = current_task();
    if (!self) {
        Call<Op>::run(&c);
    } else {
        if (self->cancel_pending()) return -ECANCELED;
        if (int w = run_blocking_on_fd(self->rt, &Call<Op>::run, &c, st, c.closes)) return w;
    }
    return c.r < 0 ? -c.e : c.r;
}

}  // namespace

namespace {

// An open(2) that its fiber may abandon: owns everything it uses.
struct OpenCall {
    int flags;
    mode_t mode;
    int r = -1, e = 0;
    char path[1];  // allocated to fit

    static OpenCall *make(const char *path, int flags, mode_t mode) {
        size_t n = strlen(path);
        void *mem = malloc(sizeof(OpenCall) + n);
        if (!mem) return nullptr;
        auto *c = new (mem) OpenCall;
        c->flags = flags;
        c->mode = mode;
        memcpy(c->path, path, n + 1);
        return c;
    }
    void run() {
        do {
            r = ::open(path, flags | O_CLOEXEC, mode);
        } while (r < 0 && errno == EINTR);
        e = r < 0 ? errno : 0;
    }
    static void *run(void *p) {
        static_cast<OpenCall *>(p)->run();
        return nullptr;
    }
    static void abandoned(void *p, void *) {
        auto *c = static_cast<OpenCall *>(p);
        if (c->r >= 0) ::close(c->r);
        free(c);
    }
};

}  // namespace

KIO_EXPORT int kio_open(const char *path, int flags, mode_t mode) noexcept {
    if (!path) return -EINVAL;
    OpenCall *c = OpenCall::make(path, flags, mode);
    if (!c) return -ENOMEM;
    Task *self = current_task();
    int rc = 0;
    if (!self) {
        c->run();
    } else if (self->cancel_pending()) {
        rc = -ECANCELED;
    } else {
        bool queued = false;
        rc = run_blocking(self->rt, &OpenCall::run, c, nullptr, BlockingStop::kAbandon, &OpenCall::abandoned, &queued);
        if (rc && queued) return rc;  // c belongs to the job now
    }
    int fd = rc ? rc : c->r < 0 ? -c->e : c->r;
    free(c);
    if (fd >= 0) fd_fresh(fd);
    return fd;
}

KIO_EXPORT ssize_t kio_pread(int fd, void *buf, size_t len, off_t offset) noexcept {
    if (null_buf(buf, len)) return -EINVAL;
    if (fd < 0) return -EBADF;
    return offload(fd, [&] { return long(::pread(fd, buf, len, offset)); });
}

KIO_EXPORT ssize_t kio_pwrite(int fd, const void *buf, size_t len, off_t offset) noexcept {
    if (null_buf(buf, len)) return -EINVAL;
    if (fd < 0) return -EBADF;
    return offload(fd, [&] { return long(::pwrite(fd, buf, len, offset)); });
}

KIO_EXPORT int kio_fsync(int fd) noexcept {
    if (fd < 0) return -EBADF;
    return int(offload(fd, [&] { return long(::fsync(fd)); }));
}

KIO_EXPORT int kio_blocking(kio_fn fn, void *arg, void **result) noexcept {
    if (!fn) return -EINVAL;
    Task *self = current_task();
    if (!self) {
        void *r = fn(arg);
        if (result) *result = r;
        return 0;
    }
    if (self->cancel_pending()) return -ECANCELED;
    return run_blocking(self->rt, fn, arg, result, BlockingStop::kAbandon);
}
