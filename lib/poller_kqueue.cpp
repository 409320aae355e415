// kqueue backend (macOS, BSD): one kqueue per worker plus an EVFILT_USER
// doorbell (ident 0, EV_CLEAR so one wait consumes any number of rings).
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__) || \
    defined(__DragonFly__)

#include <sys/event.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <ctime>

#include "poller.h"
#include "util.h"

namespace kio {

namespace {
constexpr uintptr_t kBellIdent = 0;
}

Backend Poller::default_backend() { return Backend::kKqueue; }
bool Poller::available(Backend b) { return b == Backend::kKqueue; }

int Poller::open(Backend b) {
    if (b != Backend::kKqueue) return -ENOTSUP;
    buf_ = std::malloc(sizeof(struct kevent) * kMaxBatch);
    if (!buf_) return -ENOMEM;
    fd_ = kqueue();
    if (fd_ < 0) {
        int e = -errno;
        close();
        return e;
    }
    struct kevent ev;
    EV_SET(&ev, kBellIdent, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, nullptr);
    if (kevent(fd_, &ev, 1, nullptr, 0, nullptr) != 0) {
        int e = -errno;
        close();
        return e;
    }
    return 0;
}

void Poller::close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    std::free(buf_);
    buf_ = nullptr;
}

int Poller::wait(PollEvent *out, int max, uint64_t deadline) {
    auto *evs = static_cast<struct kevent *>(buf_);
    if (max > kMaxBatch) max = kMaxBatch;
    timespec ts, *tsp = nullptr;
    if (deadline != UINT64_MAX) {
        uint64_t now = deadline ? now_ns() : 0;
        uint64_t left = deadline > now ? deadline - now : 0;
        ts.tv_sec = time_t(left / 1000000000u);
        ts.tv_nsec = long(left % 1000000000u);
        tsp = &ts;
    }
    int n = kevent(fd_, nullptr, 0, evs, max, tsp);
    if (n < 0) return 0;  // EINTR: the caller re-checks its queues and waits again
    return translate(evs, n, out, true);
}

int Poller::poll_foreign(PollEvent *out, int max) {
    struct kevent evs[kForeignBatch];  // not buf_: the owner may be polling right now
    if (max > kForeignBatch) max = kForeignBatch;
    timespec zero{0, 0};
    int n = kevent(fd_, nullptr, 0, evs, max, &zero);
    return n > 0 ? translate(evs, n, out, false) : 0;
}

int Poller::translate(void *kernel_events, int n, PollEvent *out, bool owner) {
    auto *evs = static_cast<struct kevent *>(kernel_events);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (evs[i].filter == EVFILT_USER) {
            // EV_CLEAR: taking the ring consumed it; ring again for the owner.
            if (!owner) wake();
            continue;
        }
        uint32_t e = 0;
        if (evs[i].filter == EVFILT_READ) e |= kPollIn;
        if (evs[i].filter == EVFILT_WRITE) e |= kPollOut;
        if (evs[i].flags & (EV_EOF | EV_ERROR)) e |= kPollErr | kPollUnusual;
        out[k++] = PollEvent{evs[i].udata, e};
    }
    return k;
}

int Poller::add(int fd, void *token) {
    struct kevent ev[2];
    EV_SET(&ev[0], uintptr_t(fd), EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, token);
    EV_SET(&ev[1], uintptr_t(fd), EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, 0, token);
    if (kevent(fd_, ev, 2, nullptr, 0, nullptr) != 0) return -errno;
    return 0;
}

void Poller::remove(int fd) {
    struct kevent ev[2];
    EV_SET(&ev[0], uintptr_t(fd), EVFILT_READ, EV_DELETE, 0, 0, nullptr);
    EV_SET(&ev[1], uintptr_t(fd), EVFILT_WRITE, EV_DELETE, 0, 0, nullptr);
    (void)kevent(fd_, ev, 2, nullptr, 0, nullptr);
}

void Poller::wake() {
    struct kevent ev;
    EV_SET(&ev, kBellIdent, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr);
    (void)kevent(fd_, &ev, 1, nullptr, 0, nullptr);
}

}  // namespace kio

#endif
