// epoll backend (Linux): one epoll set per worker plus an eventfd doorbell.
#if defined(__linux__)

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <ctime>

#include "poller.h"
#include "sanitizer.h"
#include "util.h"

namespace kio {

namespace {
// The doorbell's epoll data: distinct from every registered token (those are
// pointers to objects, never this address).
char g_bell_token;
}  // namespace

Backend Poller::default_backend() { return Backend::kEpoll; }
bool Poller::available(Backend b) { return b == Backend::kEpoll; }

int Poller::open(Backend b) {
    if (b != Backend::kEpoll) return -ENOTSUP;
    buf_ = std::malloc(sizeof(epoll_event) * kMaxBatch);
    if (!buf_) return -ENOMEM;
    fd_ = epoll_create1(EPOLL_CLOEXEC);
    if (fd_ < 0) {
        int e = -errno;
        close();
        return e;
    }
    bell_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (bell_fd_ < 0) {
        int e = -errno;
        close();
        return e;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = &g_bell_token;
    if (epoll_ctl(fd_, EPOLL_CTL_ADD, bell_fd_, &ev) != 0) {
        int e = -errno;
        close();
        return e;
    }
    return 0;
}

void Poller::close() {
    if (bell_fd_ >= 0) ::close(bell_fd_);
    if (fd_ >= 0) ::close(fd_);
    bell_fd_ = fd_ = -1;
    std::free(buf_);
    buf_ = nullptr;
}

int Poller::wait(PollEvent *out, int max, uint64_t deadline) {
    auto *evs = static_cast<epoll_event *>(buf_);
    if (max > kMaxBatch) max = kMaxBatch;
    timespec ts, *tsp = nullptr;
    uint64_t left_ns = 0;
    if (deadline != UINT64_MAX) {
        uint64_t now = deadline ? now_ns() : 0;
        left_ns = deadline > now ? deadline - now : 0;
        ts.tv_sec = time_t(left_ns / 1000000000u);
        ts.tv_nsec = long(left_ns % 1000000000u);
        tsp = &ts;
    }
    // epoll_pwait2 takes nanoseconds (Linux 5.11); epoll_wait rounds to ms.
    // ThreadSanitizer does not intercept epoll_pwait2: it would neither see
    // the epoll_ctl -> wait ordering nor deliver a signal to a thread blocked
    // in it (it defers signals to its interceptors), so TSan builds use
    // epoll_wait.
    static std::atomic<bool> have_pwait2{!KIO_TSAN};
    int n = -1;
    if (have_pwait2.load(std::memory_order_relaxed)) {
        n = epoll_pwait2(fd_, evs, max, tsp, nullptr);
        if (n < 0 && errno == ENOSYS) have_pwait2.store(false, std::memory_order_relaxed);
    }
    if (!have_pwait2.load(std::memory_order_relaxed)) {
        // Rounded up, and capped: a deadline 2^31 ms or more ahead truncated
        // to an int wraps, to a negative wait (none at all: the timer would
        // not fire on an idle worker) or a short one (spurious wakeups).
        int ms = -1;
        if (tsp) ms = int(std::min<uint64_t>(left_ns / 1000000 + (left_ns % 1000000 != 0), INT_MAX));
        n = epoll_wait(fd_, evs, max, ms);
    }
    if (n < 0) return 0;  // EINTR: the caller re-checks its queues and waits again
    return translate(evs, n, out, true);
}

int Poller::poll_foreign(PollEvent *out, int max) {
    epoll_event evs[kForeignBatch];  // not buf_: the owner may be polling right now
    if (max > kForeignBatch) max = kForeignBatch;
    int n = epoll_wait(fd_, evs, max, 0);
    return n > 0 ? translate(evs, n, out, false) : 0;
}

int Poller::translate(void *kernel_events, int n, PollEvent *out, bool owner) {
    auto *evs = static_cast<epoll_event *>(kernel_events);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (evs[i].data.ptr == &g_bell_token) {
            // Level-triggered: left unread, it stays for the owner's next wait.
            uint64_t v;
            if (owner) (void)!read(bell_fd_, &v, sizeof v);
            continue;
        }
        uint32_t e = 0;
        if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLPRI)) e |= kPollIn;
        if (evs[i].events & EPOLLOUT) e |= kPollOut;
        if (evs[i].events & (EPOLLERR | EPOLLHUP)) e |= kPollErr | kPollIn | kPollOut;
        if (evs[i].events & (EPOLLRDHUP | EPOLLPRI | EPOLLERR | EPOLLHUP)) e |= kPollUnusual;
        out[k++] = PollEvent{evs[i].data.ptr, e};
    }
    return k;
}

int Poller::add(int fd, void *token) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = token;
    if (epoll_ctl(fd_, EPOLL_CTL_ADD, fd, &ev) == 0) return 0;
    if (errno == EEXIST && epoll_ctl(fd_, EPOLL_CTL_MOD, fd, &ev) == 0) return 0;
    return errno == EPERM ? -EPERM : -errno;  // EPERM: a regular file (never "ready")
}

void Poller::remove(int fd) { (void)epoll_ctl(fd_, EPOLL_CTL_DEL, fd, nullptr); }

void Poller::wake() {
    uint64_t one = 1;
    (void)!write(bell_fd_, &one, sizeof one);
}

}  // namespace kio

#endif
