// Races forced by interposing libc calls: this binary defines
// pthread_mutex_unlock, read, write and poll, which the library's calls resolve to, and
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
// PlainDeadline: a plain thread under a deadline on a blocking socket waits
// in poll(2), then calls; another thread may take what poll reported first
// (here poll's interposer takes it), and the call must not then block past
// the deadline.
//
// CqWatch: a plain thread's kio_cq_watch of a finished task (whose fiber has
// retired) posts the event, then drops the handle's reference, the task's
// last, which returns the slot to the runtime's pool. It stalls 100 ms in
// the post's write(2) while the main fiber destroys the runtime: destroy
// must wait for it (it used to free the runtime, and the late release put
// the slot in the next runtime's pool twice).
//
// CloseWindow: a fiber's read fails with EAGAIN; before it parks, another
// thread kio_closes the descriptor and a new one takes its number. The
// fiber must get -EBADF, not wait on the new descriptor's events.
#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

#include <netinet/in.h>
#include <poll.h>
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

std::atomic<int> poll_target{-1};

// Once poll reports poll_target readable, takes the datagram itself (a
// plain thread polls the descriptor first, then its doorbell).
extern "C" int poll(struct pollfd *fds, nfds_t n, int timeout) {
    using Fn = int (*)(struct pollfd *, nfds_t, int);
    static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "poll"));
    int r = real(fds, n, timeout);
    int e = errno;
    if (r > 0 && n >= 1 && fds[0].fd == poll_target.load() && (fds[0].revents & POLLIN)) {
        poll_target = -1;
        char b[16];
        (void)!recv(fds[0].fd, b, sizeof b, MSG_DONTWAIT);
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

// A runtime of one worker, destroyed by the test itself (kt::Rt would
// destroy it at scope exit; these tests check what destroy waits for).
kio_runtime *one_worker_runtime() {
    kio_options o;
    kio_options_init(&o);
    o.threads = 1;
    kio_runtime *rt = nullptr;
    return kio_runtime_create(&o, &rt) == 0 ? rt : nullptr;
}

std::atomic<int> write_target{-1}, write_stalled{0}, write_stall_over{0};

// A write to write_target stalls 100 ms first.
extern "C" ssize_t write(int fd, const void *buf, size_t n) {
    using Fn = ssize_t (*)(int, const void *, size_t);
    static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "write"));
    if (fd >= 0 && fd == write_target.load()) {
        write_target = -1;
        write_stalled = 1;
        usleep(100 * 1000);
        write_stall_over = 1;
    }
    return real(fd, buf, n);
}

TEST(CqWatch, DestroyWaitsForAPlainThreadStillInsideItsWatch) {
    kio_runtime *rt = one_worker_runtime();
    ASSERT_NE(rt, nullptr);
    kio_cq *cq = nullptr;
    ASSERT_EQ(kio_cq_create(&cq), 0);
    kio_task *t = kt::spawn([] { return intptr_t(5); });
    ASSERT_NE(t, nullptr);
    kio_sleep(10 * kMs);  // t finishes and its fiber retires
    std::atomic<int> watched{0};
    int fd = kio_cq_fd(cq);
    ASSERT_GE(fd, 0);
    std::thread p([&] {
        write_target = fd;  // only kio_cq_watch's post writes to the queue's descriptor here
        watched = kio_cq_watch(cq, t, 9) == 0 ? 1 : -1;
    });
    while (!write_stalled.load()) kio_sleep(kMs);
    EXPECT_EQ(kio_runtime_destroy(rt), 0);
    EXPECT_EQ(write_stall_over.load(), 1) << "destroy returned while a plain thread was still inside kio_cq_watch";
    p.join();
    EXPECT_EQ(watched.load(), 1);
    kio_cq_event ev{};
    EXPECT_EQ(kio_cq_poll(cq, &ev, 1), 1);
    EXPECT_EQ(ev.user_data, 9u);
    EXPECT_EQ(kt::vi(ev.result), 5);
    EXPECT_EQ(kio_cq_destroy(cq), 0);
}

TEST(OutsideWake, DestroyWaitsForAPlainThreadStillInsideItsSignal) {
    kio_runtime *rt = one_worker_runtime();
    ASSERT_NE(rt, nullptr);
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

TEST(PlainDeadline, DataTakenBetweenPollAndTheCallDoesNotOutlastTheDeadline) {
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);  // blocking
    ASSERT_GE(u, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    ASSERT_EQ(bind(u, reinterpret_cast<sockaddr *>(&a), sizeof a), 0);
    ASSERT_EQ(getsockname(u, reinterpret_cast<sockaddr *>(&a), &al), 0);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(s, 0);
    ASSERT_EQ(sendto(s, "x", 1, 0, reinterpret_cast<sockaddr *>(&a), sizeof a), 1);
    long r = 1;
    uint64_t took = 0;
    std::atomic<int> done{0};
    std::thread th([&] {
        poll_target = u;
        uint64_t t0 = kio_now();
        kio_deadline_set(t0 + 100 * kMs);
        char b[16];
        r = kio_recvfrom(u, b, sizeof b, 0, nullptr, nullptr);
        took = kio_now() - t0;
        kio_deadline_set(0);
        done = 1;
    });
    // Safety net if the call blocks: a second datagram ends it.
    for (uint64_t end = kio_now() + 3 * kSec; !done.load() && kio_now() < end;) usleep(1000);
    if (!done.load()) (void)sendto(s, "y", 1, 0, reinterpret_cast<sockaddr *>(&a), sizeof a);
    th.join();
    EXPECT_EQ(r, -ETIMEDOUT);
    EXPECT_LT(took, 1000 * kMs);
    close(s);
    close(u);
}
