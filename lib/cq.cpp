// Completion queues: task results delivered to an event loop through a
// readable descriptor (an eventfd on Linux, a pipe elsewhere).
//
// The descriptor is readable exactly while events are queued: post signals
// it and poll drains it under the same lock, so a post can never be lost
// between a poll that empties the queue and the drain of the signal.
#include <fcntl.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/eventfd.h>
#endif

#include <cerrno>
#include <deque>
#include <mutex>
#include <new>

#include "outside_call.h"
#include "runtime.h"

struct kio_cq {};

namespace kio {

struct CompletionQueue : kio_cq {
    static constexpr uint32_t kMagic = 0x6b696f51;  // "kioQ"
    std::atomic<uint32_t> magic{kMagic};
    std::mutex mu;
    std::deque<kio_cq_event> events;
    bool closed = false;
    int rfd = -1, wfd = -1;           // the same eventfd twice on Linux
    std::atomic<int> refs{1};         // the creator, plus one per watched task

    void signal() {  // with mu held
        uint64_t one = 1;
        (void)!write(wfd, &one, wfd == rfd ? sizeof one : 1);
    }
    void drain() {  // with mu held
        char buf[64];
        while (read(rfd, buf, sizeof buf) > 0) {
        }
    }
};

void cq_unref(CompletionQueue *q) {
    if (q->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    // Through kio_close: fibers may have waited on rfd with kio_poll, and the
    // number's state must be reset before the kernel hands it out again.
    if (q->wfd >= 0 && q->wfd != q->rfd) kio_close(q->wfd);
    if (q->rfd >= 0) kio_close(q->rfd);
    q->magic.store(0, std::memory_order_relaxed);
    delete q;
}

void cq_post(CompletionQueue *q, uint64_t user_data, void *result) {
    std::lock_guard<std::mutex> g(q->mu);
    if (q->closed) return;
    bool was_empty = q->events.empty();
    try {
        q->events.push_back(kio_cq_event{user_data, result});
    } catch (...) {
        return;  // out of memory: the event is lost (documented)
    }
    if (was_empty) q->signal();
}

namespace {
CompletionQueue *cq_of(kio_cq *c) {
    auto *q = static_cast<CompletionQueue *>(c);
    if (!q || q->magic.load(std::memory_order_acquire) != CompletionQueue::kMagic) return nullptr;
    return q;
}
}  // namespace

}  // namespace kio

using namespace kio;

KIO_EXPORT int kio_cq_create(kio_cq **out) noexcept {
    if (!out) return -EINVAL;
    auto *q = new (std::nothrow) CompletionQueue;
    if (!q) return -ENOMEM;
#if defined(__linux__)
    q->rfd = q->wfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (q->rfd < 0) {
        int e = -errno;
        delete q;
        return e;
    }
#else
    int p[2];
    if (pipe(p) < 0) {
        int e = -errno;
        delete q;
        return e;
    }
    for (int fd : p) {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    q->rfd = p[0];
    q->wfd = p[1];
#endif
    *out = q;
    return 0;
}

KIO_EXPORT int kio_cq_fd(kio_cq *c) noexcept {
    CompletionQueue *q = cq_of(c);
    return q ? q->rfd : -EINVAL;
}

KIO_EXPORT int kio_cq_watch(kio_cq *c, kio_task *h, uint64_t user_data) noexcept {
    CompletionQueue *q = cq_of(c);
    uint32_t gen;
    Task *t = from_handle(h, &gen);
    if (!q || !t) return -EINVAL;
    // As kio_detach: the handle's reference may be the task's last, and its
    // release returns t to its runtime's pool.
    OutsideCall outside(t);
    if (int e = take_handle(t, gen, Task::kDetached)) return e;
    bool finished;
    {
        LockGuard<SpinLock> g(t->lock);
        finished = !t->register_waiter();
        if (!finished) {
            q->refs.fetch_add(1, std::memory_order_relaxed);
            t->cq = q;
            t->cq_data = user_data;
        }
    }
    if (finished) cq_post(q, user_data, t->result);
    release_task(t);  // the handle's reference, as kio_detach
    return 0;
}

KIO_EXPORT int kio_cq_poll(kio_cq *c, kio_cq_event *events, size_t max) noexcept {
    CompletionQueue *q = cq_of(c);
    if (!q || (!events && max)) return -EINVAL;
    std::lock_guard<std::mutex> g(q->mu);
    size_t n = 0;
    while (n < max && !q->events.empty()) {
        events[n++] = q->events.front();
        q->events.pop_front();
    }
    if (q->events.empty()) q->drain();
    return int(n);
}

KIO_EXPORT int kio_cq_destroy(kio_cq *c) noexcept {
    CompletionQueue *q = cq_of(c);
    if (!q) return -EINVAL;
    {
        std::lock_guard<std::mutex> g(q->mu);
        q->closed = true;
        q->events.clear();
    }
    q->magic.store(0, std::memory_order_release);
    cq_unref(q);
    return 0;
}
