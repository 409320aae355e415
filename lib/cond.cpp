// kio_cond: FIFO condition variable over kio_mutex, for fibers and threads.
//
// A waiter is enqueued on the condition before the mutex is released, both in
// one publication step, so a signal sent under the mutex cannot fall between
// them. Whatever ends the wait (signal, deadline, cancellation), the mutex is
// re-locked before returning, uninterruptibly, as pthreads does.
#include <cerrno>

#include "runtime.h"
#include "sync.h"

namespace kio {

namespace {

struct CondWait {
    CondImpl *c;
    MutexImpl *m;
    WaitNode *node;
    uintptr_t owner;
};

void publish_cond_wait(Waiter *w, void *arg) {
    (void)w;
    auto *a = static_cast<CondWait *>(arg);
    {
        LockGuard<SpinLock> g(a->c->lock);
        a->c->waiters.push_back(a->node);
    }
    // The fiber this worker resumes now may be a condition waiter on its way
    // to re-lock m (two fibers taking turns): pass m straight to it, one CAS
    // instead of an unlock here and a lock there.
    Worker *wk = current_worker_fast();
    Task *next = wk ? static_cast<Task *>(wk->current) : nullptr;
    if (next && next->cond_relock == a->m && mutex_pass_to(a->m, a->owner, next)) {
        next->cond_relock = nullptr;
        return;
    }
    mutex_unlock_as(a->m, a->owner);
}

int cond_wait(CondImpl *c, MutexImpl *m, uint64_t deadline, bool has_deadline) {
    uintptr_t me = caller_owner_id();
    if (!mutex_held_by(m, me)) return -EPERM;
    Task *self = current_task();
    if (self && self->cancel_pending()) return -ECANCELED;
    if (has_deadline && (deadline == 0 || now_ns() >= deadline)) return -ETIMEDOUT;
    Waiter w;
    w.owner_id = me;
    WaitNode n;
    n.waiter = &w;
    CondWait a{c, m, &n, me};
    if (self) self->cond_relock = m;
    int r = wait_on(&w, publish_cond_wait, &a, has_deadline ? deadline : 0, true, KIO_PARK_COND, c);
    unlink_if_linked(c->lock, c->waiters, &n);
    if (!self || self->cond_relock) {  // not passed to us by publish_cond_wait
        if (self) self->cond_relock = nullptr;
        mutex_lock(m, false);
    }
    return r;
}

}  // namespace

}  // namespace kio

using namespace kio;

KIO_EXPORT void kio_cond_init(kio_cond *c) noexcept {
    if (c) *c = kio_cond KIO_COND_INIT;
}

KIO_EXPORT int kio_cond_wait(kio_cond *c, kio_mutex *m) noexcept {
    if (!c || !m) return -EINVAL;
    return cond_wait(impl(c), impl(m), 0, false);
}

KIO_EXPORT int kio_cond_wait_until(kio_cond *c, kio_mutex *m, uint64_t deadline) noexcept {
    if (!c || !m) return -EINVAL;
    return cond_wait(impl(c), impl(m), deadline, true);
}

KIO_EXPORT void kio_cond_signal(kio_cond *c) noexcept {
    if (!c) return;
    CondImpl *ci = impl(c);
    Waiter *w;
    {
        LockGuard<SpinLock> g(ci->lock);
        w = pop_and_claim(ci->waiters, 0);
    }
    if (w) wake_claimed(w);
}

KIO_EXPORT void kio_cond_broadcast(kio_cond *c) noexcept {
    if (!c) return;
    CondImpl *ci = impl(c);
    Waiter *chain;
    {
        LockGuard<SpinLock> g(ci->lock);
        chain = claim_all(ci->waiters, false, 0);
    }
    wake_chain(chain);
}
