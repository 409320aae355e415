// kio_mutex: fiber-aware, usable from plain threads, FIFO waiters with
// hand-off.
//
// Lock: one CAS when free. Otherwise, if the holder is running (on another
// worker), the locker spins a little: the holder will most likely let go
// within a few hundred nanoseconds. Then it parks at the back of the FIFO
// queue. It spins even when its worker has other fibers to run: a park and
// the wakeup that follows cost far more than the spin (8 tasks x 1M
// increments on 2 workers: 27 -> 20 ns per lock; 100 tasks holding the
// mutex 50 ns between 200 ns of other work: 59 -> 36 ms).
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

// Owner identities are never reused in the process, so a task that reuses
// the slot of a task that returned holding a mutex, or a thread that reuses
// the thread-local block of one that exited, is not taken for the owner.
// Tasks take theirs at their first lock, from per-worker blocks (no shared
// RMW per task); plain threads once per thread. They sit above kBits in
// `state` (57 bits: never exhausted).
static_assert(sizeof(uintptr_t) == 8, "owner identities need a 64-bit state word");
std::atomic<uint64_t> g_next_owner{1};
thread_local uintptr_t tls_thread_owner;  // read only by plain threads, which never switch

KIO_NOINLINE uintptr_t new_task_owner(Worker *w, Task *t) {
    t->mutex_owner = uintptr_t(w->mutex_owners.take(g_next_owner)) << M::kOwnerShift;
    return t->mutex_owner;
}

KIO_NOINLINE uintptr_t new_thread_owner() {
    tls_thread_owner = uintptr_t(g_next_owner.fetch_add(1, std::memory_order_relaxed)) << M::kOwnerShift;
    return tls_thread_owner;
}

// w: the caller's worker (or nullptr), self: its task (nullptr on a plain thread).
inline uintptr_t owner_id(Worker *w, Task *self) {
    if (self) return KIO_LIKELY(self->mutex_owner) ? self->mutex_owner : new_task_owner(w, self);
    return KIO_LIKELY(tls_thread_owner) ? tls_thread_owner : new_thread_owner();
}

// The `owner` hint: the Task, or 1 for a plain thread.
inline uintptr_t owner_hint(Task *t) { return t ? reinterpret_cast<uintptr_t>(t) : 1; }

inline bool held_by(uintptr_t s, uintptr_t id) { return (s & M::kLocked) && (s & ~M::kBits) == id; }

// The state once the queue lock is free: serve_waiters rewrites the owner
// bits under it, so only then do they name the holder.
uintptr_t settled_state(M *m) {
    uintptr_t s = m->state.load(std::memory_order_acquire);
    while (s & M::kQLock) {
        cpu_relax();
        s = m->state.load(std::memory_order_acquire);
    }
    return s;
}

// Was the holder switched out while holding the mutex? (Not: a waiter that
// was just handed the mutex and has not resumed yet, kPending.) Plain
// threads (odd hints) count as running. Task memory is never freed
// (task_pool.cpp); if the holder returned holding the mutex and its slot was
// reused, the answer is about the new task: a wrong hint, nothing worse.
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

// Barging acquisition for `me`: not while hand-off is due. The queue lock
// bit is held only for a few instructions, so a free mutex is not reported
// busy for it.
bool try_acquire(M *m, uintptr_t me) {
    uintptr_t s = m->state.load(std::memory_order_relaxed);
    for (;;) {
        if (s & (M::kLocked | M::kStarving)) return false;
        if (s & M::kQLock) {
            cpu_relax();
            s = m->state.load(std::memory_order_relaxed);
            continue;
        }
        if (m->state.compare_exchange_weak(s, s | M::kLocked | me, std::memory_order_acquire,
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

// The owner let go with waiters to serve (`state` still has kLocked and its
// identity, `owner` is 0): hand off to, or wake, the first waiter that can
// still be claimed.
void serve_waiters(M *m) {
    uintptr_t s = qlock(m);
    Waiter *wake = nullptr;
    bool handed = false, woke = false;
    while (WaitNode *n = m->waiters.head) {
        Waiter *w = n->waiter;
        uint64_t waited = now_ns() - w->since;
        bool handoff = (s & M::kStarving) || n->value || waited >= kStarveAfter;
        // The hint is set before the claim; the identity reaches `state`
        // with qunlock. A waiter claimed during its publication may run as
        // soon as the claim lands: its identity checks wait for the queue
        // lock (settled_state), so they see it.
        if (handoff) {
            s = (s & M::kBits) | w->owner_id;
            m->owner.store(owner_hint(w->task), std::memory_order_release);
        }
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
        s &= M::kBits & ~M::kLocked;
    } else {
        s |= M::kPending;
    }
    if (woke) s |= M::kWoken;
    qunlock(m, s);
    if (wake) wake_claimed(wake);
}

// Spins for the mutex while that looks worthwhile: the holder is running.
// While spinning with waiters queued, the spinner owns kWoken, so unlocks
// need not wake a waiter that would only compete with it. *woken: whether the
// caller owns kWoken (in and out).
bool spin_acquire(M *m, uintptr_t me, bool *woken) {
    for (int i = 0;; i++) {
        uintptr_t s = m->state.load(std::memory_order_relaxed);
        while (!(s & (M::kLocked | M::kQLock | M::kStarving))) {
            uintptr_t ns = (s | M::kLocked | me) & ~(*woken ? M::kWoken : 0);
            if (m->state.compare_exchange_weak(s, ns, std::memory_order_acquire,
                                               std::memory_order_relaxed)) {
                *woken = false;
                return true;
            }
        }
        if (i == kSpinTries || !owner_running(m)) return false;
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

// If the mutex is free with waiters queued, serves them now (held by nobody
// meanwhile: identity 0).
void serve_if_free(M *m) {
    if ((m->state.load(std::memory_order_relaxed) & M::kQueued) && try_acquire(m, 0)) serve_waiters(m);
}

// Gives kWoken up without parking (a canceled waiter leaving): an unlock
// that saw kWoken woke nobody.
void drop_woken(M *m) {
    clear_bits(m, M::kWoken);
    serve_if_free(m);
}

}  // namespace

namespace {

// The contended path of mutex_lock (s: the state its first try saw). Kept
// out of line so the uncontended lock stays a short function.
KIO_NOINLINE int mutex_lock_contended(M *m, Task *self, uintptr_t me, bool cancelable, uintptr_t s) {
    if ((s & M::kLocked) && held_by(settled_state(m), me)) return -EDEADLK;
    bool woken = false;
    uint64_t since = 0;
    bool front = false;
    for (;;) {
        if (spin_acquire(m, me, &woken)) {
            m->owner.store(owner_hint(self), std::memory_order_release);
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
            // Leaving, the wakeup we stood for must reach the next waiter:
            // kWoken, or an unlock that skipped the queue because we held
            // kWoken (given up when the park found the mutex free).
            if (woken) drop_woken(m);
            else if (r == kRetryFree) serve_if_free(m);
            return -ECANCELED;
        }
        front = true;
    }
}

}  // namespace

int mutex_lock(M *m, bool cancelable) {
    Worker *w = current_worker_at_entry();
    Task *self = w ? static_cast<Task *>(w->current) : nullptr;
    if (cancelable && self && self->cancel_pending()) return -ECANCELED;
    uintptr_t me = owner_id(w, self);
    uintptr_t s = 0;
    if (KIO_LIKELY(m->state.compare_exchange_strong(s, M::kLocked | me, std::memory_order_acquire,
                                                    std::memory_order_relaxed))) {
        m->owner.store(owner_hint(self), std::memory_order_release);
        return 0;
    }
    return mutex_lock_contended(m, self, me, cancelable, s);
}

bool mutex_trylock(M *m) {
    Worker *w = current_worker_at_entry();
    Task *self = w ? static_cast<Task *>(w->current) : nullptr;
    if (!try_acquire(m, owner_id(w, self))) return false;
    m->owner.store(owner_hint(self), std::memory_order_release);
    return true;
}

void mutex_unlock_as(M *m, uintptr_t id) {
    // Relaxed is enough to recognize our own identity: we wrote it, or a
    // hand-off did before it woke us (and then held the queue lock until
    // it was in place).
    uintptr_t s = m->state.load(std::memory_order_relaxed);
    for (;;) {
        if (s & M::kQLock) {
            cpu_relax();
            s = m->state.load(std::memory_order_relaxed);
            continue;
        }
        if (!held_by(s, id)) return;  // not the owner (or not locked): ignored
        m->owner.store(0, std::memory_order_relaxed);
        // Nobody to serve, or a woken waiter is about to try: just release.
        bool quiet = !(s & M::kQueued) ||
                     ((s & M::kWoken) && !(s & (M::kStarving | M::kHandoff)));
        if (!quiet) break;
        if (m->state.compare_exchange_weak(s, s & M::kBits & ~M::kLocked, std::memory_order_release,
                                           std::memory_order_relaxed))
            return;
    }
    serve_waiters(m);
}

bool mutex_pass_to(M *m, uintptr_t id, Task *to) {
    uintptr_t s = M::kLocked | id;
    if (!to->mutex_owner ||
        !m->state.compare_exchange_strong(s, M::kLocked | to->mutex_owner, std::memory_order_acq_rel,
                                          std::memory_order_relaxed))
        return false;
    m->owner.store(owner_hint(to), std::memory_order_release);
    return true;
}

uintptr_t caller_owner_id() {
    Worker *w = current_worker_at_entry();
    return owner_id(w, w ? static_cast<Task *>(w->current) : nullptr);
}

bool mutex_held_by(M *m, uintptr_t id) { return held_by(settled_state(m), id); }

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
    return mutex_trylock(impl(m)) ? 0 : -EBUSY;
}

KIO_EXPORT void kio_mutex_unlock(kio_mutex *m) noexcept {
    if (m) mutex_unlock_as(impl(m), caller_owner_id());
}
