// kio_mutex: fiber-aware, usable from plain threads, FIFO hand-off.
//
// Fast paths are one CAS. A contended locker spins briefly (the holder is
// probably running on another worker), then waits: its Waiter joins the FIFO
// and unlock passes ownership straight to the first waiter that can still be
// claimed, so nobody can overtake a parked waiter.
#include <cerrno>

#include "runtime.h"
#include "sync.h"

namespace kio {

namespace {

constexpr int kSpinTries = 64;

bool try_acquire(MutexImpl *m) {
    uintptr_t s = m->state.load(std::memory_order_relaxed);
    while (!(s & (MutexImpl::kLocked | MutexImpl::kQLock)))
        if (m->state.compare_exchange_weak(s, s | MutexImpl::kLocked, std::memory_order_acquire,
                                           std::memory_order_relaxed))
            return true;
    return false;
}

// Takes the queue lock bit; returns the state with the bit set.
uintptr_t qlock(MutexImpl *m) {
    uintptr_t s = m->state.load(std::memory_order_relaxed);
    for (;;) {
        if (s & MutexImpl::kQLock) {
            cpu_relax();
            s = m->state.load(std::memory_order_relaxed);
            continue;
        }
        if (m->state.compare_exchange_weak(s, s | MutexImpl::kQLock, std::memory_order_acquire,
                                           std::memory_order_relaxed))
            return s | MutexImpl::kQLock;
    }
}

// Releases the queue lock, storing `s` (kQLock cleared, kQueued recomputed).
void qunlock(MutexImpl *m, uintptr_t s) {
    s &= ~(MutexImpl::kQLock | MutexImpl::kQueued);
    if (!m->waiters.empty()) s |= MutexImpl::kQueued;
    m->state.store(s, std::memory_order_release);
}

struct MutexWait {
    MutexImpl *m;
    WaitNode *node;
};

void publish_mutex_wait(Waiter *w, void *arg) {
    auto *a = static_cast<MutexWait *>(arg);
    MutexImpl *m = a->m;
    uintptr_t s = qlock(m);
    if (!(s & MutexImpl::kLocked)) {  // released meanwhile: take it
        m->owner.store(w->owner_id, std::memory_order_relaxed);
        qunlock(m, s | MutexImpl::kLocked);
        claim(w, 0);
        return;
    }
    m->waiters.push_back(a->node);
    qunlock(m, s);
}

void unlink_waiter(MutexImpl *m, WaitNode *n) {
    if (!n->linked.load(std::memory_order_acquire)) return;
    uintptr_t s = qlock(m);
    if (n->linked.load(std::memory_order_relaxed)) m->waiters.remove(n);
    qunlock(m, s);
}

}  // namespace

int mutex_lock(MutexImpl *m, bool cancelable) {
    uintptr_t me = self_owner_id();
    if (mutex_held_by(m, me)) return -EDEADLK;
    if (cancelable) {
        Task *self = current_task();
        if (self && self->cancel_pending()) return -ECANCELED;
    }
    for (int i = 0;; i++) {
        if (try_acquire(m)) {
            m->owner.store(me, std::memory_order_relaxed);
            return 0;
        }
        if (i == kSpinTries) break;
        cpu_relax();
    }
    Waiter w;
    w.owner_id = me;
    WaitNode n;
    n.waiter = &w;
    MutexWait a{m, &n};
    int r = wait_on(&w, publish_mutex_wait, &a, 0, cancelable);
    unlink_waiter(m, &n);
    return r;  // 0: ownership was handed to us (owner already set)
}

void mutex_unlock_as(MutexImpl *m, uintptr_t id) {
    if (!mutex_held_by(m, id)) return;  // not the owner: ignored, as documented
    m->owner.store(0, std::memory_order_relaxed);
    uintptr_t s = MutexImpl::kLocked;
    if (m->state.compare_exchange_strong(s, 0, std::memory_order_release, std::memory_order_relaxed))
        return;
    s = qlock(m);
    Waiter *wake = nullptr;
    bool handed = false;
    while (WaitNode *n = m->waiters.head) {
        Waiter *w = n->waiter;
        // Ownership is set before the claim: a waiter claimed during its
        // publication may run (and unlock) as soon as the claim lands.
        m->owner.store(w->owner_id, std::memory_order_relaxed);
        Claim c = claim(w, 0);
        m->waiters.remove(n);
        if (c == Claim::kLost) continue;
        handed = true;
        if (c == Claim::kWake) wake = w;
        break;
    }
    if (!handed) {
        m->owner.store(0, std::memory_order_relaxed);
        s &= ~MutexImpl::kLocked;
    }
    qunlock(m, s);
    if (wake) wake_claimed(wake);
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
    impl(m)->owner.store(self_owner_id(), std::memory_order_relaxed);
    return 0;
}

KIO_EXPORT void kio_mutex_unlock(kio_mutex *m) noexcept {
    if (m) mutex_unlock_as(impl(m), self_owner_id());
}
