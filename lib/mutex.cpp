// kio_mutex: fiber-aware, usable from plain threads, FIFO waiters with
// hand-off.
//
// Lock: one CAS when free. Otherwise, if the holder is running (on another
// worker) and this worker has nothing else to run, the locker spins a little:
// the holder will most likely let go within a few hundred nanoseconds. Then
// it parks at the back of the FIFO queue.
//
// Unlock serves the queue front first, in one of two ways:
//   hand-off  ownership passes straight to the first waiter, which cannot be
//             overtaken. Used when that waiter queued behind a holder that
//             was not running (it kept the mutex across a park or yield: a
//             long critical section, where fairness costs nothing), when it
//             has waited kStarveAfter, and for every waiter once a woken
//             waiter lost races for that long (starvation mode, which also
//             stops newcomers from barging).
//   wake      the mutex is released and the first waiter woken to try again;
//             a fiber that is running may take the mutex first, and the
//             waiter then goes back to the front of the queue. Used for
//             waiters that gave up spinning on a running holder: handing a
//             mutex to a fiber that sits in a run queue would make every
//             running locker park behind it (a convoy), at the cost of a
//             context switch per lock.
// Until a woken waiter has tried (kWoken), further unlocks wake nobody.
// This is the eventual fairness of Go's sync.Mutex, with hand-off whenever
// the holder itself was switched out.
#include <cerrno>

#include "runtime.h"
#include "sync.h"

namespace kio {

namespace {

using M = MutexImpl;
constexpr int kSpinTries = 4;                   // looks at the mutex while spinning
constexpr int kSpinPauses = 30;                 // pauses between two looks
constexpr uint64_t kStarveAfter = 1000 * 1000;  // ns of waiting before hand-off is forced

// Claim results besides 0 (ownership handed over) and -ECANCELED.
constexpr int kRetry = 1;      // woken by unlock to compete; owns kWoken
constexpr int kRetryFree = 2;  // found the mutex free while parking; try again

// Plain threads are identified by the (odd) address of a thread-local byte.
thread_local char tls_thread_token[2];

inline uintptr_t owner_id_of(Task *self) {
    return self ? reinterpret_cast<uintptr_t>(self)
                : reinterpret_cast<uintptr_t>(&tls_thread_token[0]) | 1;
}

// Was the holder switched out while holding the mutex? (Not: a waiter that
// was just handed the mutex and has not resumed yet, kPending.) Plain
// threads (odd ids) count as running. Reads the holder's Task while it holds
// the mutex, so the slot is live.
bool owner_switched_out(M *m) {
    if (m->state.load(std::memory_order_relaxed) & M::kPending) return false;
    // Acquire pairs with the owner's release store: the Task it names is
    // fully visible (a hint, but one that must not read stale memory).
    uintptr_t o = m->owner.load(std::memory_order_acquire);
    if (!o || (o & 1)) return false;
    return !reinterpret_cast<Task *>(o)->on_cpu.load(std::memory_order_relaxed);
}

// Worth spinning on: the holder runs (it will let go soon).
bool owner_running(M *m) {
    return !(m->state.load(std::memory_order_relaxed) & M::kPending) && !owner_switched_out(m);
}

// Barging acquisition: not while hand-off is due. The queue lock bit is held
// only for a few instructions, so a free mutex is not reported busy for it.
bool try_acquire(M *m) {
    uintptr_t s = m->state.load(std::memory_order_relaxed);
    for (;;) {
        if (s & (M::kLocked | M::kStarving)) return false;
        if (s & M::kQLock) {
            cpu_relax();
            s = m->state.load(std::memory_order_relaxed);
            continue;
        }
        if (m->state.compare_exchange_weak(s, s | M::kLocked, std::memory_order_acquire,
                                           std::memory_order_relaxed))
            return true;
    }
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

// Releases the queue lock, storing `s` with the queue bits recomputed:
// kQueued, kHandoff (the front waiter asked for hand-off), and kStarving
// dropped once nobody waits.
void qunlock(M *m, uintptr_t s) {
    s &= ~(M::kQLock | M::kQueued | M::kHandoff);
    if (WaitNode *head = m->waiters.head) {
        s |= M::kQueued;
        if (head->value) s |= M::kHandoff;
    } else {
        s &= ~M::kStarving;
    }
    m->state.store(s, std::memory_order_release);
}

struct MutexWait {
    M *m;
    WaitNode *node;  // node->value: hand-off wanted
    bool front;      // a woken waiter that lost the race keeps its place
    bool starving;   // ...and has waited long enough to force hand-off
    bool woken;      // the parker owns kWoken and gives it up by parking
};

void publish_mutex_wait(Waiter *w, void *arg) {
    auto *a = static_cast<MutexWait *>(arg);
    M *m = a->m;
    uintptr_t s = qlock(m);
    if (a->woken) s &= ~M::kWoken;
    if (!(s & M::kLocked)) {
        // Released meanwhile: let the parker try again rather than take the
        // mutex for it, so it is not owned by a fiber that sits in a queue.
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

// The owner let go with waiters to serve (`state` still has kLocked, `owner`
// is 0): hand off to, or wake, the first waiter that can still be claimed.
void serve_waiters(M *m) {
    uintptr_t s = qlock(m);
    Waiter *wake = nullptr;
    bool handed = false, woke = false;
    while (WaitNode *n = m->waiters.head) {
        Waiter *w = n->waiter;
        uint64_t waited = now_ns() - w->since;
        bool handoff = (s & M::kStarving) || n->value || waited >= kStarveAfter;
        // Ownership is set before the claim: a waiter claimed during its
        // publication may run (and unlock) as soon as the claim lands.
        if (handoff) m->owner.store(w->owner_id, std::memory_order_release);
        // Leave starvation mode once a waiter is served promptly again.
        bool prompt = (s & M::kStarving) && waited < kStarveAfter;
        Claim c = claim(w, handoff ? 0 : kRetry);
        m->waiters.remove(n);
        if (c == Claim::kLost) continue;  // canceled meanwhile
        handed = handoff;
        woke = !handoff;
        if (prompt) s &= ~M::kStarving;
        if (c == Claim::kWake) wake = w;
        break;
    }
    if (!handed) {
        m->owner.store(0, std::memory_order_relaxed);
        s &= ~M::kLocked;
    } else {
        s |= M::kPending;
    }
    if (woke) s |= M::kWoken;
    qunlock(m, s);
    if (wake) wake_claimed(wake);
}

// Spins for the mutex while that looks worthwhile: the worker has nothing
// else to run and the holder is running. While spinning with waiters queued,
// the spinner owns kWoken, so unlocks need not wake a waiter that would only
// compete with it. *woken: whether the caller owns kWoken (in and out).
bool spin_acquire(M *m, bool *woken) {
    for (int i = 0;; i++) {
        uintptr_t s = m->state.load(std::memory_order_relaxed);
        while (!(s & (M::kLocked | M::kQLock | M::kStarving))) {
            uintptr_t ns = (s | M::kLocked) & ~(*woken ? M::kWoken : 0);
            if (m->state.compare_exchange_weak(s, ns, std::memory_order_acquire,
                                               std::memory_order_relaxed)) {
                *woken = false;
                return true;
            }
        }
        if (i == kSpinTries || !owner_running(m)) return false;
        if (i == 0 && !*woken) {  // a woken waiter spins anyway: its turn has come
            Worker *w = current_worker();
            if (w && w->has_local_work()) return false;
        }
        if (!*woken && (s & M::kQueued) && !(s & (M::kWoken | M::kQLock)) &&
            m->state.compare_exchange_weak(s, s | M::kWoken, std::memory_order_relaxed))
            *woken = true;
        for (int j = 0; j < kSpinPauses; j++) cpu_relax();
    }
}

// Clears state bits outside the queue lock; returns the state before.
uintptr_t clear_bits(M *m, uintptr_t bits) {
    uintptr_t s = m->state.load(std::memory_order_relaxed);
    for (;;) {
        if (s & M::kQLock) {
            cpu_relax();
            s = m->state.load(std::memory_order_relaxed);
            continue;
        }
        if (m->state.compare_exchange_weak(s, s & ~bits, std::memory_order_relaxed)) return s;
    }
}

// Gives kWoken up without parking (a canceled waiter leaving).
void drop_woken(M *m) {
    uintptr_t s = clear_bits(m, M::kWoken);
    // An unlock that saw kWoken woke nobody: if the mutex is free with
    // waiters queued, serve them now.
    if ((s & M::kQueued) && try_acquire(m)) serve_waiters(m);
}

}  // namespace

namespace {

// The contended path of mutex_lock (s: the state its first try saw). Kept
// out of line so the uncontended lock stays a short function.
KIO_NOINLINE int mutex_lock_contended(M *m, Task *self, uintptr_t me, bool cancelable, uintptr_t s) {
    if ((s & M::kLocked) && m->owner.load(std::memory_order_relaxed) == me) return -EDEADLK;
    bool woken = false;
    uint64_t since = 0;
    bool front = false;
    for (;;) {
        if (spin_acquire(m, &woken)) {
            m->owner.store(me, std::memory_order_release);
            return 0;
        }
        if (!since) since = now_ns();
        Waiter wt;
        wt.owner_id = me;
        wt.since = since;
        WaitNode n;
        n.waiter = &wt;
        n.value = owner_switched_out(m);  // queued behind a long critical section: hand off
        MutexWait a{m, &n, front, front && now_ns() - since >= kStarveAfter, woken};
        int r = wait_on(&wt, publish_mutex_wait, &a, 0, cancelable, KIO_PARK_MUTEX, m);
        unlink_waiter(m, &n);
        if (r == 0) {  // handed over (owner already set): now running
            clear_bits(m, M::kPending);
            return 0;
        }
        if (r != kRetry && r != kRetryFree) return r;  // -ECANCELED
        woken = r == kRetry;  // woken by unlock: kWoken was set for us
        if (cancelable && self && self->cancel_pending()) {
            if (woken) drop_woken(m);
            return -ECANCELED;
        }
        front = true;
    }
}

}  // namespace

int mutex_lock(M *m, bool cancelable) {
    Worker *w = current_worker_at_entry();
    Task *self = w ? static_cast<Task *>(w->current) : nullptr;
    uintptr_t me = owner_id_of(self);
    if (cancelable && self && self->cancel_pending()) return -ECANCELED;
    uintptr_t s = 0;
    if (KIO_LIKELY(m->state.compare_exchange_strong(s, M::kLocked, std::memory_order_acquire,
                                                    std::memory_order_relaxed))) {
        m->owner.store(me, std::memory_order_release);
        return 0;
    }
    return mutex_lock_contended(m, self, me, cancelable, s);
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
        // Nobody to serve, or a woken waiter is about to try: just release.
        bool quiet = !(s & M::kQueued) ||
                     ((s & M::kWoken) && !(s & (M::kStarving | M::kHandoff)));
        if (!quiet) break;
        if (m->state.compare_exchange_weak(s, s & ~M::kLocked, std::memory_order_release,
                                           std::memory_order_relaxed))
            return;
    }
    serve_waiters(m);
}

uintptr_t caller_owner_id() {
    Worker *w = current_worker_at_entry();
    return owner_id_of(w ? static_cast<Task *>(w->current) : nullptr);
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
    impl(m)->owner.store(caller_owner_id(), std::memory_order_release);
    return 0;
}

KIO_EXPORT void kio_mutex_unlock(kio_mutex *m) noexcept {
    if (m) mutex_unlock_as(impl(m), caller_owner_id());
}
