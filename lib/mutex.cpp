// kio_mutex: fiber-aware, usable from plain threads, FIFO waiters.
//
// Fast paths are one CAS. A contended locker spins briefly (the holder is
// probably running on another worker), then waits in a FIFO queue. Unlock
// serves the queue in order:
//   - normally it releases the mutex and wakes the first waiter, which tries
//     again (a running fiber may have taken the mutex meanwhile; the waiter
//     then goes back to the front of the queue). Until that waiter has tried
//     (kWoken), further unlocks wake nobody;
//   - once a waiter has waited kHandoffAfter, the mutex is starving: unlock
//     hands ownership straight to the first waiter and newcomers queue behind
//     instead of barging, until the queue drains.
// Strict hand-off on every unlock would turn any contention into a convoy:
// each unlock would give the mutex to a fiber that is not running, and every
// other locker would park behind it. FIFO wakeups with hand-off after a
// bounded wait keep waiters in order and bound how long one can be overtaken,
// while a running fiber keeps the mutex hot (the eventual fairness of Go's
// sync.Mutex and of parking_lot).
#include <cerrno>

#include "runtime.h"
#include "sync.h"

namespace kio {

namespace {

using M = MutexImpl;
// Spinning: a few tries, each after a pause long enough to let a holder on
// another worker finish a short critical section (as Go's sync.Mutex).
constexpr int kSpinTries = 4;
constexpr int kSpinPauses = 30;
constexpr uint64_t kHandoffAfter = 1000 * 1000;  // ns
// Claim results besides 0 (ownership handed over) and -ECANCELED:
constexpr int kRetry = 1;      // woken by unlock to compete; owns kWoken
constexpr int kRetryFree = 2;  // found the mutex free while parking; try again

thread_local char tls_thread_token;

// Identity of the caller, read once on entry (before any switch).
inline uintptr_t owner_id_of(Task *self) {
    return self ? reinterpret_cast<uintptr_t>(self) : reinterpret_cast<uintptr_t>(&tls_thread_token);
}

// Barging acquisition: only while nobody is starving.
bool try_acquire(M *m) {
    uintptr_t s = m->state.load(std::memory_order_relaxed);
    while (!(s & (M::kLocked | M::kQLock | M::kStarving)))
        if (m->state.compare_exchange_weak(s, s | M::kLocked, std::memory_order_acquire,
                                           std::memory_order_relaxed))
            return true;
    return false;
}

// Takes the queue lock bit; returns the state with the bit set.
uintptr_t qlock(M *m) {
    uintptr_t s = m->state.load(std::memory_order_relaxed);
    for (;;) {
        if (s & M::kQLock) {
            cpu_relax();
            s = m->state.load(std::memory_order_relaxed);
            continue;
        }
        if (m->state.compare_exchange_weak(s, s | M::kQLock, std::memory_order_acquire,
                                           std::memory_order_relaxed))
            return s | M::kQLock;
    }
}

// Releases the queue lock, storing `s` with kQueued recomputed (and kStarving
// dropped once nobody waits).
void qunlock(M *m, uintptr_t s) {
    s &= ~(M::kQLock | M::kQueued);
    if (m->waiters.empty()) s &= ~M::kStarving;
    else s |= M::kQueued;
    m->state.store(s, std::memory_order_release);
}

struct MutexWait {
    M *m;
    WaitNode *node;
    bool front;     // a woken waiter that lost the race keeps its place
    bool starving;  // ...and has waited long enough to demand a hand-off
    bool woken;     // the parker owns kWoken and gives it up by parking
};

void publish_mutex_wait(Waiter *w, void *arg) {
    auto *a = static_cast<MutexWait *>(arg);
    M *m = a->m;
    uintptr_t s = qlock(m);
    if (a->woken) s &= ~M::kWoken;
    if (!(s & M::kLocked)) {
        // Released meanwhile: let the parker retry rather than take the
        // mutex for it. A mutex owned by a fiber that sits in a run queue
        // makes every running locker park behind it (a convoy).
        qunlock(m, s);
        claim(w, kRetryFree);
        return;
    }
    if (a->front) m->waiters.push_front(a->node);
    else m->waiters.push_back(a->node);
    if (a->starving) s |= M::kStarving;
    qunlock(m, s);
}

void unlink_waiter(M *m, WaitNode *n) {
    if (!n->linked.load(std::memory_order_acquire)) return;
    uintptr_t s = qlock(m);
    if (n->linked.load(std::memory_order_relaxed)) m->waiters.remove(n);
    qunlock(m, s);
}

// The owner let go and waiters may need a wakeup (`state` still has kLocked,
// `owner` is 0). Starving: hand ownership to the first claimable waiter.
// Otherwise: release, and wake the first waiter to compete (kWoken).
void release_to_waiters(M *m) {
    uintptr_t s = qlock(m);
    bool handoff = s & M::kStarving;
    Waiter *wake = nullptr;
    bool delivered = false;
    while (WaitNode *n = m->waiters.head) {
        Waiter *w = n->waiter;
        // Ownership is set before the claim: a waiter claimed during its
        // publication may run (and unlock) as soon as the claim lands.
        if (handoff) m->owner.store(w->owner_id, std::memory_order_relaxed);
        // Leave starvation once a waiter is served promptly again.
        bool recent = handoff && now_ns() - w->since < kHandoffAfter;
        Claim c = claim(w, handoff ? 0 : kRetry);
        m->waiters.remove(n);
        if (c == Claim::kLost) continue;
        delivered = true;
        if (recent) s &= ~M::kStarving;
        if (c == Claim::kWake) wake = w;
        break;
    }
    if (!(delivered && handoff)) {
        m->owner.store(0, std::memory_order_relaxed);
        s &= ~M::kLocked;
    }
    if (delivered && !handoff) s |= M::kWoken;
    qunlock(m, s);
    if (wake) wake_claimed(wake);
}

// Spins for the mutex. While spinning, the spinner owns kWoken (taking it if
// waiters are queued and nobody has it), so unlocks stay on their fast path
// instead of waking a parked waiter that would only compete with us. Reads
// are spaced out: a spinner that polls the line constantly slows the holder
// it waits for. *woken: whether the caller owns kWoken (in and out).
bool spin_acquire(M *m, bool *woken) {
    for (int i = 0; i < kSpinTries; i++) {
        uintptr_t s = m->state.load(std::memory_order_relaxed);
        while (!(s & (M::kLocked | M::kQLock | M::kStarving))) {
            uintptr_t ns = (s | M::kLocked) & ~(*woken ? M::kWoken : 0);
            if (m->state.compare_exchange_weak(s, ns, std::memory_order_acquire,
                                               std::memory_order_relaxed)) {
                *woken = false;
                return true;
            }
        }
        // Spin only if this worker has nothing else to run: otherwise
        // parking lets its other fibers run and leaves the holder
        // uncontended (a plain thread spins: it has nothing else to do).
        if (i == 0) {
            Worker *w = current_worker();
            if (w && w->has_local_work()) return false;
        }
        if (!*woken && (s & M::kQueued) && !(s & (M::kWoken | M::kQLock)) &&
            m->state.compare_exchange_weak(s, s | M::kWoken, std::memory_order_relaxed))
            *woken = true;
        for (int j = 0; j < kSpinPauses; j++) cpu_relax();
    }
    return false;
}

// Gives kWoken up without parking (a canceled waiter leaving).
void drop_woken(M *m) {
    uintptr_t s = m->state.load(std::memory_order_relaxed);
    for (;;) {
        if (s & M::kQLock) {
            cpu_relax();
            s = m->state.load(std::memory_order_relaxed);
            continue;
        }
        if (m->state.compare_exchange_weak(s, s & ~M::kWoken, std::memory_order_relaxed)) break;
    }
    // An unlock that saw kWoken woke nobody: if the mutex is free with
    // waiters queued, serve them now.
    if ((s & M::kQueued) && try_acquire(m)) release_to_waiters(m);
}

}  // namespace

int mutex_lock(M *m, bool cancelable) {
    Worker *w = current_worker_at_entry();
    Task *self = w ? w->current : nullptr;
    uintptr_t me = owner_id_of(self);
    if (cancelable && self && self->cancel_pending()) return -ECANCELED;
    uintptr_t s = 0;
    if (KIO_LIKELY(m->state.compare_exchange_strong(s, M::kLocked, std::memory_order_acquire,
                                                    std::memory_order_relaxed))) {
        m->owner.store(me, std::memory_order_relaxed);
        return 0;
    }
    if ((s & M::kLocked) && m->owner.load(std::memory_order_relaxed) == me) return -EDEADLK;
    bool woken = false;
    if (spin_acquire(m, &woken)) {
        m->owner.store(me, std::memory_order_relaxed);
        return 0;
    }
    uint64_t since = now_ns();
    bool front = false;
    for (;;) {
        Waiter wt;
        wt.owner_id = me;
        wt.since = since;
        WaitNode n;
        n.waiter = &wt;
        MutexWait a{m, &n, front, front && now_ns() - since >= kHandoffAfter, woken};
        int r = wait_on(&wt, publish_mutex_wait, &a, 0, cancelable);
        unlink_waiter(m, &n);
        if (r != kRetry && r != kRetryFree) return r;  // 0: handed over (owner set), or -ECANCELED
        woken = r == kRetry;  // woken by unlock: kWoken was set for us
        if (spin_acquire(m, &woken)) {
            m->owner.store(me, std::memory_order_relaxed);
            return 0;
        }
        if (cancelable && self->cancel_pending()) {
            if (woken) drop_woken(m);
            return -ECANCELED;
        }
        front = true;
    }
}

void mutex_unlock_as(M *m, uintptr_t id) {
    uintptr_t s = m->state.load(std::memory_order_relaxed);
    if (!(s & M::kLocked) || m->owner.load(std::memory_order_relaxed) != id) return;  // ignored
    m->owner.store(0, std::memory_order_relaxed);
    for (;;) {
        if (s & M::kQLock) {
            cpu_relax();
            s = m->state.load(std::memory_order_relaxed);
            continue;
        }
        // Nobody to wake, or a woken waiter is about to try: just release.
        bool quiet = !(s & M::kQueued) || ((s & M::kWoken) && !(s & M::kStarving));
        if (!quiet) break;
        if (m->state.compare_exchange_weak(s, s & ~M::kLocked, std::memory_order_release,
                                           std::memory_order_relaxed))
            return;
    }
    release_to_waiters(m);
}

uintptr_t caller_owner_id() {
    Worker *w = current_worker_at_entry();
    return owner_id_of(w ? w->current : nullptr);
}

}  // namespace kio

using namespace kio;

KIO_EXPORT void kio_mutex_init(kio_mutex *m) noexcept {
    if (m) *m = kio_mutex KIO_MUTEX_INIT;
}

KIO_EXPORT int kio_mutex_lock(kio_mutex *m) noexcept {
    if (!m) return -EINVAL;
    return mutex_lock(impl(m), true);
}

KIO_EXPORT int kio_mutex_trylock(kio_mutex *m) noexcept {
    if (!m) return -EINVAL;
    if (!try_acquire(impl(m))) return -EBUSY;
    impl(m)->owner.store(caller_owner_id(), std::memory_order_relaxed);
    return 0;
}

KIO_EXPORT void kio_mutex_unlock(kio_mutex *m) noexcept {
    if (m) mutex_unlock_as(impl(m), caller_owner_id());
}
