// Regular files and arbitrary blocking calls, on the blocking pool.
//
// File operations are cancellation points on entry only: once started they
// run to completion (the fiber waits for them), because the pool thread
// writes into the caller's buffer. kio_blocking can be abandoned by
// cancellation or the deadline; its function then finishes unobserved.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "blocking.h"
#include "fd.h"
#include "runtime.h"

using namespace kio;

namespace {

// A system call to run on the pool: returns -1 with errno on failure.
template <class Op>
struct Call {
    Op op;
    long r = 0;
    int e = 0;
    static void *run(void *p) {
        auto *c = static_cast<Call *>(p);
        do {
            c->r = c->op();
        } while (c->r < 0 && errno == EINTR);
        c->e = c->r < 0 ? errno : 0;
        return nullptr;
    }
};

template <class Op>
long offload(Op op) {
    Call<Op> c{op};
    Task *self = current_task();
    if (!self) {
        Call<Op>::run(&c);
    } else {
        if (self->cancel_pending()) return -ECANCELED;
        if (int w = run_blocking(self->rt, &Call<Op>::run, &c, nullptr, false)) return w;
    }
    return c.r < 0 ? -c.e : c.r;
}

}  // namespace

KIO_EXPORT int kio_open(const char *path, int flags, mode_t mode) noexcept {
    if (!path) return -EINVAL;
    long fd = offload([&] { return long(::open(path, flags | O_CLOEXEC, mode)); });
    if (fd >= 0) fd_fresh(int(fd));
    return int(fd);
}

KIO_EXPORT ssize_t kio_pread(int fd, void *buf, size_t len, off_t offset) noexcept {
    if (fd < 0) return -EBADF;
    return offload([&] { return long(::pread(fd, buf, len, offset)); });
}

KIO_EXPORT ssize_t kio_pwrite(int fd, const void *buf, size_t len, off_t offset) noexcept {
    if (fd < 0) return -EBADF;
    return offload([&] { return long(::pwrite(fd, buf, len, offset)); });
}

KIO_EXPORT int kio_fsync(int fd) noexcept {
    if (fd < 0) return -EBADF;
    return int(offload([&] { return long(::fsync(fd)); }));
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
    return run_blocking(self->rt, fn, arg, result, true);
}
