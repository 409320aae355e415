// Time: the monotonic clock and sleeping. A sleeping fiber parks with a timer
// on its worker's heap (see timer.h); a plain thread sleeps in the kernel.
#include <sched.h>

#include <cerrno>
#include <ctime>

#include "runtime.h"

using namespace kio;

namespace {

void publish_nothing(Waiter *, void *) {}  // the deadline is the only source

void thread_sleep_until(uint64_t deadline) {
#if defined(TIMER_ABSTIME)
    timespec ts;
    ts.tv_sec = time_t(deadline / 1000000000u);
    ts.tv_nsec = long(deadline % 1000000000u);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
#else  // macOS: no clock_nanosleep; relative sleeps until the deadline
    for (uint64_t now = now_ns(); now < deadline; now = now_ns()) {
        uint64_t left = deadline - now;
        timespec ts{time_t(left / 1000000000u), long(left % 1000000000u)};
        nanosleep(&ts, nullptr);
    }
#endif
}

// kio_sleep_until with the clock already read (kio_sleep read it to compute
// the deadline; a second read costs ~30 ns in a VM, per sleep).
// Inlined into both callers: a fiber backtrace names the public call.
__attribute__((always_inline)) inline int sleep_until(uint64_t deadline, uint64_t now) {
    Task *self = current_task();
    if (!self) {
        // The same outcomes as on a fiber: an elapsed sleep is 0 first.
        if (deadline <= now) return 0;
        uint64_t scope = scope_deadline();
        uint64_t until = earliest(deadline, scope);
        if (until > now_ns()) thread_sleep_until(until);
        return scope && scope < deadline ? -ETIMEDOUT : 0;
    }
    if (self->cancel_pending()) return -ECANCELED;
    if (deadline <= now) return 0;
    uint64_t scope = self->deadline;
    if (scope && scope <= now) return -ETIMEDOUT;
    Waiter w;
    int r = wait_on(&w, publish_nothing, nullptr, deadline, true, KIO_PARK_SLEEP);
    // The timer claims -ETIMEDOUT: the sleep is over, unless the deadline
    // scope cut it short.
    if (r == -ETIMEDOUT) return scope && scope < deadline ? -ETIMEDOUT : 0;
    return r;
}

}  // namespace

KIO_EXPORT uint64_t kio_now(void) noexcept { return now_ns(); }

KIO_EXPORT int kio_sleep_until(uint64_t deadline) noexcept { return sleep_until(deadline, now_ns()); }

KIO_EXPORT uint64_t kio_deadline_set(uint64_t deadline) noexcept { return set_scope_deadline(deadline); }

KIO_EXPORT uint64_t kio_deadline_get(void) noexcept { return scope_deadline(); }

KIO_EXPORT int kio_sleep(uint64_t ns) noexcept {
    if (ns == 0) {
        if (!current_task()) {
            sched_yield();
            return 0;
        }
        return kio_yield();
    }
    uint64_t now = now_ns();
    uint64_t deadline = ns > UINT64_MAX - now ? UINT64_MAX : now + ns;
    return sleep_until(deadline, now);
}
