// Races forced by interposing libc calls: this binary defines
// pthread_mutex_unlock and read, which the library's calls resolve to, and
// stalls the calling thread at the moment a race needs (selected by a
// thread-local flag or a target descriptor, so the rest of the process is
// unaffected). Not built with ThreadSanitizer, which intercepts these
// functions itself.
//
// OutsideWake: a wakeup from a plain thread races kio_runtime_destroy, and
// the waker must be done with the runtime before destroy frees it. Fiber T
// (shielded from destroy's cancellation) waits on a condition while the main
// fiber destroys the runtime; plain thread P signals the condition. Inside
// the signal, P queues T on the runtime, then still touches it (looks for a
// worker to wake, rings its doorbell). P stalls for 100 ms right after the
// queue's lock is released, standing in for P being preempted there: T runs
// and finishes meanwhile, and destroy must still wait for P (it used to free
// the runtime under P, which then read freed memory and wrote to a closed
// descriptor).
//
// CloseWindow: a fiber's read fails with EAGAIN; before it parks, another
// thread kio_closes the descriptor and a new one takes its number. The
// fiber must get -EBADF, not wait on the new descriptor's events.
#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <thread>

#include "kio_test_util.h"

using kt::kMs;
using kt::kSec;

namespace {
thread_local bool t_stall_after_unlock = false;
std::atomic<int> stall_over{0};
}  // namespace

std::atomic<int> read_target{-1}, read_stalled{0}, read_release{0};

// A read of read_target that fails with EAGAIN stalls until released.
extern "C" ssize_t read(int fd, void *buf, size_t n) {
    using Fn = ssize_t (*)(int, void *, size_t);
    static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "read"));
    ssize_t r = real(fd, buf, n);
    int e = errno;
    if (r < 0 && e == EAGAIN && fd == read_target.load()) {
        read_target = -1;
        read_stalled = 1;
        while (!read_release.load()) {
        }
    }
    errno = e;
    return r;
}

extern "C" int pthread_mutex_unlock(pthread_mutex_t *mu) {
    using Fn = int (*)(pthread_mutex_t *);
    static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pthread_mutex_unlock"));
    int r = real(mu);
    if (t_stall_after_unlock) {
        t_stall_after_unlock = false;
        usleep(100 * 1000);
        stall_over = 1;
    }
    return r;
}

TEST(OutsideWake, DestroyWaitsForAPlainThreadStillInsideItsSignal) {
    kio_options o;
    kio_options_init(&o);
    o.threads = 1;
    kio_runtime *rt = nullptr;
    ASSERT_EQ(kio_runtime_create(&o, &rt), 0);
    static kio_mutex m = KIO_MUTEX_INIT;
    static kio_cond c = KIO_COND_INIT;
    static std::atomic<int> flag{0}, waiting{0};
    kio_task *t = kt::spawn([] {
        kio_cancel_shield(1);
        kio_mutex_lock(&m);
        waiting = 1;
        while (!flag.load()) kio_cond_wait(&c, &m);
        kio_mutex_unlock(&m);
        return intptr_t(0);
    });
    ASSERT_NE(t, nullptr);
    ASSERT_EQ(kio_detach(t), 0);
    while (!waiting.load()) kio_sleep(kMs);
    std::thread p([] {
        usleep(20 * 1000);  // destroy is waiting for T by now
        kio_mutex_lock(&m);
        flag = 1;
        kio_mutex_unlock(&m);
        t_stall_after_unlock = true;  // the next unlock is the run queue's, inside the signal
        kio_cond_signal(&c);
        t_stall_after_unlock = false;
    });
    EXPECT_EQ(kio_runtime_destroy(rt), 0);
    EXPECT_EQ(stall_over.load(), 1) << "destroy returned while a plain thread was still waking a task of the runtime";
    p.join();
}

TEST(CloseWindow, FiberBetweenItsFailedReadAndItsParkGetsEbadfWhenTheNumberIsReused) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    int reused = -1;
    std::thread closer([&] {
        while (!read_stalled.load()) {
        }
        kio_close(sv[0]);
        reused = kio_socket(AF_INET, SOCK_DGRAM, 0);  // never readable: would never wake a reader
        read_release = 1;
    });
    int fd = sv[0];
    kio_task *t = kt::spawn([fd] {
        kio_deadline_set(kio_now() + 5 * kSec);  // bounds the failure mode
        read_target = fd;
        char b[4];
        return intptr_t(kio_read(fd, b, sizeof b));
    });
    EXPECT_EQ(kt::await_ok(t), -EBADF);
    closer.join();
    EXPECT_EQ(reused, sv[0]) << "the new socket did not take the closed number (the test proves less)";
    if (reused >= 0) kio_close(reused);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}
