// Waiting: the one mechanism behind every kio wait (await, select, mutex,
// condition, sleep, and later I/O).
//
// A Waiter stands for one party that waits: a parked fiber (task != nullptr)
// or a blocked plain thread. It can be reachable from several sources at once
// (a condition's queue, a worker's timers, the canceler through Task::cur_wait);
// whichever source claims it first decides the outcome, by one CAS on `state`.
//
//   state (low 2 bits)    meaning                     who moves it
//   kPublishing           being made reachable        initial; the parker -> kWaiting
//   kWaiting              reachable, not yet claimed  a claimer -> kClaimed
//   kClaimed              claimed; claimer wakes it   final
//   kClaimedEarly         claimed while publishing;   final; the parker wakes it
//                         the parker wakes it
//   The claimer's result (an int) rides in the upper 32 bits of the same word,
//   so it is published with the claim itself.
//
// Switch-then-publish: a fiber never makes its Waiter reachable itself. It
// switches away first and the context that runs next performs the publication
// (see park() in scheduler.cpp), so nobody can resume a fiber whose registers
// are not saved yet. While publication is in progress a claimer only marks the
// waiter (kClaimedEarly); the publisher wakes it when it is done, so every
// source is armed before the fiber can run again.
//
// Lifetime: a Waiter lives on the waiting party's stack. Claimers touch it only
// under the lock of the source they found it in, and the waiting party, once
// resumed, detaches itself from every source under that source's lock before
// its frame goes away (disarm()).
#pragma once

#include <atomic>
#include <cstdint>

#include "util.h"

namespace kio {

struct Task;
struct TimerHeap;

struct TimerNode {
    uint64_t deadline = 0;
    uint32_t index = 0;                        // where the heap keeps this node, valid while heap != nullptr
    std::atomic<TimerHeap *> heap{nullptr};    // the heap holding this node, or nullptr
};

struct Waiter {
    static constexpr uint64_t kPublishing = 0, kWaiting = 1, kClaimed = 2, kClaimedEarly = 3;

    Task *task = nullptr;                  // parked fiber, or nullptr for a plain thread
    uintptr_t owner_id = 0;                // who this party is, for mutex hand-off
    std::atomic<uint64_t> state{kPublishing};
    std::atomic<uint32_t> futex{0};        // plain threads: becomes 1 when claimed
    bool cancel_armed = false;             // registered in task->cur_wait
    // Set by a publish function when no party but a canceler can claim the
    // waiter until the fiber runs again (see publish_parked in scheduler.cpp).
    bool only_canceler_claims = false;
    TimerNode timer;                       // armed when the wait has a deadline
    Waiter *wake_next = nullptr;           // chain of claimed waiters (claim_all)
    uint64_t since = 0;                    // when the party started waiting (mutex fairness)

    int result() const { return int(int64_t(state.load(std::memory_order_acquire)) >> 32); }
};

enum class Claim { kLost, kWake, kPublisherWakes };

// Tries to decide the waiter's outcome. On kWake the caller must call
// wake_claimed(w) (after releasing its lock is fine); on kPublisherWakes the
// parker will do it; on kLost someone else decided first.
inline Claim claim(Waiter *w, int result) {
    uint64_t s = w->state.load(std::memory_order_acquire);
    for (;;) {
        uint64_t st = s & 3;
        if (st == Waiter::kClaimed || st == Waiter::kClaimedEarly) return Claim::kLost;
        uint64_t next = (uint64_t(uint32_t(result)) << 32) |
                        (st == Waiter::kWaiting ? Waiter::kClaimed : Waiter::kClaimedEarly);
        if (w->state.compare_exchange_weak(s, next, std::memory_order_acq_rel,
                                           std::memory_order_acquire))
            return st == Waiter::kWaiting ? Claim::kWake : Claim::kPublisherWakes;
    }
}

// Resumes the party of a waiter claimed with Claim::kWake. Does not touch w
// after the party may run.
void wake_claimed(Waiter *w);

// claim + wake_claimed when needed. Returns true if this call decided the outcome.
inline bool claim_and_wake(Waiter *w, int result) {
    Claim c = claim(w, result);
    if (c == Claim::kWake) wake_claimed(w);
    return c != Claim::kLost;
}

// A link of a waiter into an intrusive FIFO list (condition queue, mutex queue,
// a task's completion waiters). `value` is what a claim through this link
// reports (select uses it for the index).
struct WaitNode {
    WaitNode *prev = nullptr, *next = nullptr;
    Waiter *waiter = nullptr;
    int value = 0;
    std::atomic<bool> linked{false};
};

// Doubly linked FIFO. Not synchronized: the owner's lock guards it. Layout is
// two pointers, so it can overlay the opaque storage of kio_mutex / kio_cond.
struct WaitList {
    WaitNode *head = nullptr, *tail = nullptr;

    bool empty() const { return head == nullptr; }
    void push_back(WaitNode *n) {
        n->next = nullptr;
        n->prev = tail;
        if (tail) tail->next = n;
        else head = n;
        tail = n;
        n->linked.store(true, std::memory_order_relaxed);
    }
    void push_front(WaitNode *n) {
        n->prev = nullptr;
        n->next = head;
        if (head) head->prev = n;
        else tail = n;
        head = n;
        n->linked.store(true, std::memory_order_relaxed);
    }
    // Unlinks n. The store to n->linked is the last access to n: once the
    // waiting party sees it false it may free n.
    void remove(WaitNode *n) {
        if (n->prev) n->prev->next = n->next;
        else head = n->next;
        if (n->next) n->next->prev = n->prev;
        else tail = n->prev;
        n->linked.store(false, std::memory_order_release);
    }
};

// Pops nodes from the front until one claim with `result` succeeds. Nodes
// whose waiter someone else claimed are dropped: they must not swallow a
// wakeup. Returns the waiter the caller must wake (after unlocking), or
// nullptr. Caller holds the lock.
//
// After a claim, a waiter that was still publishing may resume as soon as its
// publisher finishes: its only safe accesses are those made under the lock
// its own cleanup takes. So the functions here never touch a claimed waiter
// afterwards unless they are the ones to wake it.
Waiter *pop_and_claim(WaitList &list, int result);

// Empties the list, claiming every waiter (with the node's value if
// use_node_value, else result). Returns the claimed waiters the caller must
// wake, chained through wake_next. Caller holds the lock.
Waiter *claim_all(WaitList &list, bool use_node_value, int result);

// Wakes a chain returned by claim_all.
inline void wake_chain(Waiter *w) {
    while (w) {
        Waiter *next = w->wake_next;
        wake_claimed(w);
        w = next;
    }
}

// Removes n from list under lock if it is still linked.
template <class L>
void unlink_if_linked(L &lock, WaitList &list, WaitNode *n) {
    if (!n->linked.load(std::memory_order_acquire)) return;
    LockGuard<L> g(lock);
    if (n->linked.load(std::memory_order_relaxed)) list.remove(n);
}

// Waits with w: `publish(w, arg)` makes w reachable (enqueue it, and whatever
// else must happen atomically with parking, such as releasing a mutex). For a
// fiber it runs on the next context after the switch; on a plain thread it runs
// inline and then the thread blocks. deadline (kio_now() base, 0 = none)
// claims with -ETIMEDOUT; cancelable lets kio_cancel claim with -ECANCELED.
// Returns the claimer's result after detaching w from the timer and canceler
// (source-specific links are the caller's to remove).
// Cancelable waits also end at the caller's deadline scope (kio_deadline_set).
// kind (KIO_PARK_*), obj and aux describe the wait for kio_dump and kio_stats.
using PublishFn = void (*)(Waiter *w, void *arg);
int wait_on(Waiter *w, PublishFn publish, void *arg, uint64_t deadline, bool cancelable,
            int kind, const void *obj = nullptr, int aux = 0);

// The calling task's (or plain thread's) deadline scope; 0 = none.
uint64_t scope_deadline();
uint64_t set_scope_deadline(uint64_t deadline);  // returns the previous one
// The earlier of two deadlines, 0 meaning none.
inline uint64_t earliest(uint64_t a, uint64_t b) { return !a ? b : !b ? a : a < b ? a : b; }

}  // namespace kio
