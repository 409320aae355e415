#include "wait.h"

#include <cerrno>

#include "parker.h"
#include "runtime.h"

namespace kio {

void wake_claimed(Waiter *w) {
    if (Task *t = w->task) {
        ready(t);
        return;
    }
    w->futex.store(1, std::memory_order_release);
    futex_wake_all(&w->futex);
}

Waiter *pop_and_claim(WaitList &list, int result) {
    while (WaitNode *n = list.head) {
        Waiter *w = n->waiter;
        Claim c = claim(w, result);
        list.remove(n);  // last access to n
        if (c == Claim::kLost) continue;
        return c == Claim::kWake ? w : nullptr;
    }
    return nullptr;
}

Waiter *claim_all(WaitList &list, bool use_node_value, int result) {
    Waiter *head = nullptr, **tail = &head;  // FIFO: wake in queue order
    while (WaitNode *n = list.head) {
        Waiter *w = n->waiter;
        Claim c = claim(w, use_node_value ? n->value : result);
        list.remove(n);
        if (c == Claim::kWake) {
            w->wake_next = nullptr;  // safe: w cannot leave before we wake it
            *tail = w;
            tail = &w->wake_next;
        }
    }
    return head;
}

namespace {

// Detaches w from the timer heap and the canceler once the party runs again.
void disarm(Waiter *w) {
    if (TimerHeap *h = w->timer.heap.load(std::memory_order_acquire)) h->remove(&w->timer);
    if (w->cancel_armed) {
        Task *t = w->task;
        // A canceler that read cur_wait before it was cleared may still hold
        // w: it does so only under t->lock, so wait it out there; and the
        // publication it woke us in the middle of, if any (arm_cancel_last
        // in scheduler.cpp).
        if (t->withdraw_wait()) {
            { LockGuard<SpinLock> wait_out(t->lock); }
            while (t->publishing.load(std::memory_order_acquire)) cpu_relax();
        }
    }
}

int wait_thread(Waiter *w, PublishFn publish, void *arg, uint64_t deadline) {
    w->task = nullptr;
    publish(w, arg);
    uint64_t s = Waiter::kPublishing;
    if (!w->state.compare_exchange_strong(s, Waiter::kWaiting, std::memory_order_acq_rel,
                                          std::memory_order_acquire))
        return w->result();  // claimed while publishing
    while (w->futex.load(std::memory_order_acquire) == 0) {
        if (deadline && now_ns() >= deadline) {
            if (claim(w, -ETIMEDOUT) != Claim::kLost) break;
            deadline = 0;  // someone claimed first: wait for their wake
            continue;
        }
        futex_wait(&w->futex, 0, deadline);
    }
    return w->result();
}

}  // namespace

namespace {

thread_local uint64_t tls_deadline;  // plain threads' deadline scope

// Where the caller's deadline scope lives: in its task, or in its thread.
uint64_t &deadline_slot(Task *self) { return self ? self->deadline : tls_deadline; }

}  // namespace

uint64_t scope_deadline() { return deadline_slot(current_task()); }

uint64_t set_scope_deadline(uint64_t deadline) {
    uint64_t &slot = deadline_slot(current_task());
    uint64_t prev = slot;
    slot = deadline;
    return prev;
}

int wait_on(Waiter *w, PublishFn publish, void *arg, uint64_t deadline, bool cancelable, int kind,
            const void *obj, int aux) {
    Task *self = current_task();
    if (cancelable) deadline = earliest(deadline, deadline_slot(self));
    if (!self) return wait_thread(w, publish, arg, deadline);
    w->task = self;
    self->wait_obj = obj;
    self->wait_aux = aux;
    self->wait_until = deadline;
    self->wait_kind.store(kind, std::memory_order_release);
    park_current(w, publish, arg, deadline, cancelable, kind);
    self->wait_kind.store(-1, std::memory_order_relaxed);
    disarm(w);
    return w->result();
}

}  // namespace kio
