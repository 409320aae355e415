// Internal views of the public kio_mutex / kio_cond storage.
#pragma once

#include <atomic>
#include <cstdint>

#include "../include/kio.h"
#include "util.h"
#include "wait.h"

namespace kio {

struct Task;

// kio_mutex: state bits with the owner's identity, a hint naming the owner,
// and a FIFO of waiters guarded by a lock bit in `state` (policy in
// mutex.cpp).
//
//   state      the owner's identity in the bits above kBits while kLocked
//              (0 otherwise), and the bits below
//   owner      the owning Task, for spinners and kio_dump (1: a plain
//              thread; 0: being released). Only a hint: a Task slot is
//              reused by later tasks, so it never decides who owns m.
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
    static constexpr unsigned kOwnerShift = 7;
    static constexpr uintptr_t kBits = (uintptr_t(1) << kOwnerShift) - 1;
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
// Locks m if it is free and no waiter is owed a hand-off.
bool mutex_trylock(MutexImpl *m);
// Unlocks m on behalf of the party `id` (ignored if id does not own it).
void mutex_unlock_as(MutexImpl *m, uintptr_t id);
// Passes m, held by `id` with nobody queued, to task `to` (which locked a
// mutex before, so it has an identity): true if done (one CAS).
bool mutex_pass_to(MutexImpl *m, uintptr_t id, Task *to);
// The caller's identity as a mutex owner (a multiple of 1 << kOwnerShift,
// never 0, never reused in the process).
uintptr_t caller_owner_id();
bool mutex_held_by(MutexImpl *m, uintptr_t id);

}  // namespace kio
