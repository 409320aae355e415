// Internal views of the public kio_mutex / kio_cond storage.
#pragma once

#include <atomic>
#include <cstdint>

#include "../include/kio.h"
#include "util.h"
#include "wait.h"

namespace kio {

// kio_mutex: state bits, the owner's identity, and a FIFO of waiters guarded
// by a lock bit in `state` (policy in mutex.cpp).
//
//   kLocked    held by `owner` (during a hand-off: by the waiter it goes to)
//   kQueued    the waiter list is non-empty
//   kQLock     the waiter list is being edited; while it is set only the
//              holder changes `state` (every other update is a CAS that
//              expects the bit clear)
//   kWoken     a waiter was woken to compete (or a spinner stands in for
//              one) and has not tried yet: unlock need not wake another
//   kStarving  a waiter has waited too long: unlock hands off, newcomers
//              queue instead of barging
//   kHandoff   the front waiter queued behind a switched-out holder: unlock
//              hands off to it
//   kPending   handed off to a waiter that has not resumed yet (it is not
//              running, but not because it holds the mutex across a switch)
struct MutexImpl {
    static constexpr uintptr_t kLocked = 1, kQueued = 2, kQLock = 4, kWoken = 8, kStarving = 16,
                               kHandoff = 32, kPending = 64;
    std::atomic<uintptr_t> state;
    std::atomic<uintptr_t> owner;
    WaitList waiters;
};
static_assert(sizeof(MutexImpl) == sizeof(kio_mutex), "kio_mutex layout");

struct CondImpl {
    SpinLock lock;
    WaitList waiters;
};
static_assert(sizeof(CondImpl) == sizeof(kio_cond), "kio_cond layout");

inline MutexImpl *impl(kio_mutex *m) { return reinterpret_cast<MutexImpl *>(m); }
inline CondImpl *impl(kio_cond *c) { return reinterpret_cast<CondImpl *>(c); }

// Locks m; cancelable decides whether a cancellation request interrupts.
int mutex_lock(MutexImpl *m, bool cancelable);
// Unlocks m on behalf of the party `id` (ignored if id does not own it).
void mutex_unlock_as(MutexImpl *m, uintptr_t id);
// The caller's identity as a mutex owner: its task, or a per-thread token.
uintptr_t caller_owner_id();
inline bool mutex_held_by(MutexImpl *m, uintptr_t id) {
    return (m->state.load(std::memory_order_acquire) & MutexImpl::kLocked) &&
           m->owner.load(std::memory_order_relaxed) == id;
}

}  // namespace kio
