// Tasks: a function, its fiber (stack + saved context, given at first run and
// taken back at exit) and its handle.
//
//   state      kNew --(first run)--> kRunning --(fn returned)--> kFinished
//   handle     kLive --(await/cancel begins)--> kClaimed --(returns 0)--> kConsumed
//              kClaimed --(awaiter canceled)--> kLive
//              kLive --(detach, kio_cq_watch)--> kDetached
//              (the word also holds the slot's generation: see take_handle)
//   refs       one for the handle (dropped when consumed or detached), one for
//              the fiber (dropped when it finishes, or after it switched away
//              for the last time when parties wait for it); the last drop
//              returns the Task to its pool.
//   (handle and refs share one atomic word, `life`, so that an await of a
//   finished task consumes the handle and drops its reference in one
//   compare-and-swap. Two more bits there, kFinishedBit and kWaitedBit, let
//   a task that nobody waits for finish and drop its fiber's reference in
//   one compare-and-swap: see finish_task in task.cpp.)
//
// Handles given to users are the Task address with the low bits of `gen` in
// the alignment bits, so a stale handle is detected (-EINVAL) unless the slot
// was reused exactly 64 generations later.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>

#include "../include/kio.h"
#include "fence.h"
#include "sanitizer.h"
#include "stack.h"
#include "util.h"
#include "wait.h"

namespace kio {

struct Runtime;
struct Worker;

struct alignas(64) Task {
    static constexpr uint32_t kMagicLive = 0x6b696f54;  // "kioT"
    static constexpr uint32_t kMagicFree = 0x64656164;
    enum : uint8_t { kNew, kRunning, kFinished };
    enum : uint32_t { kLive, kClaimed, kDetached, kConsumed };

    // Identity.
    std::atomic<uint32_t> magic{kMagicFree};
    std::atomic<uint32_t> gen{0};
    // id and rt are also read through a handle that may be stale (a second
    // awaiter, kio_task_get_id) while a spawn reuses the slot: those reads
    // and the spawn's writes go through relaxed atomics (plain moves), and
    // the reader checks the handle again before trusting what it read.
    uint64_t id = 0;
    Runtime *rt = nullptr;
    uintptr_t mutex_owner = 0;  // identity as a kio_mutex owner, taken on first lock (mutex.cpp)
    // While parked in a condition wait: the mutex it re-locks on waking,
    // until a fiber's publication passed that mutex to it (cond.cpp).
    void *cond_relock = nullptr;

    // Body.
    kio_fn fn = nullptr;
    void *arg = nullptr;
    // Also read through a handle that may be stale (an await of a finished
    // task reads it before its compare-and-swap consumes the handle): written
    // and read there with relaxed atomics, like id and rt.
    void *result = nullptr;

    // Execution. sp is the saved context while suspended (nullptr before the
    // first run); stack is empty for the main fiber (it runs on its thread's).
    Racy<void *> sp;
    Stack stack;
    Worker *home = nullptr;  // pinned tasks: the only worker that may run it
    Worker *ran_on = nullptr;  // KIO_DEBUG_MIGRATE: the worker it last ran on
    bool pinned = false;
    // A backtrace is reading the suspended fiber's stack: whoever resumes it
    // waits until the walk is done (walk_suspended in debug.cpp).
    std::atomic<bool> walked{false};
    // Suspended with its context saved and not resumed since: its stack may
    // be walked. Set by the arriving side of its switch before anything can
    // resume it; cleared by the resumer (set_current). Unlike on_cpu (a
    // hint, cleared after the switch message is handled, when the fiber may
    // already run elsewhere), never false while the fiber runs.
    std::atomic<bool> walkable{false};
    // A publication that left its Waiter claimable by a canceler before its
    // last look at it is under way (arm_cancel_last in scheduler.cpp): the
    // fiber, woken by that canceler, waits until this is false.
    std::atomic<bool> publishing{false};
    uint64_t stolen_at = 0;  // when a thief took it before its first run (steal() in scheduler.cpp)
    Task *qnext = nullptr;   // link in injection / inbox lists

    // Lifecycle.
    std::atomic<uint8_t> state{kNew};
    std::atomic<bool> on_cpu{false};  // running on a worker right now (a hint for spinners)
    // refs << 32 | handle_word(gen, handle state): see the top of this file.
    std::atomic<uint64_t> life{kLive};

    // Cancellation and waits. `lock` guards `waiters` (parties waiting for this
    // task to finish) and serializes cancelers; `cur_wait` (the wait this task
    // is parked in, for the canceler) is written lock-free by the task's side
    // (see request_cancel in task.cpp).
    std::atomic<bool> cancel_requested{false};
    std::atomic<bool> shielded{false};
    uint64_t deadline = 0;  // kio_deadline_set: bounds every cancelable wait (0 = none)
    // What the task is parked on, for kio_dump (written by the task itself
    // before it parks; read racily by the dump).
    std::atomic<int> wait_kind{-1};  // KIO_PARK_*, -1 when not parked
    Racy<const void *> wait_obj;
    Racy<int> wait_aux;
    Racy<uint64_t> wait_until;
    SpinLock lock;
    WaitList waiters;
    // The handle holder's wait (kio_await, kio_cancel: one at a time), apart
    // from `waiters` so that the task itself may fill it without the lock
    // (publish_task_wait). Under `lock` otherwise.
    std::atomic<WaitNode *> holder_wait{nullptr};
    std::atomic<Waiter *> cur_wait{nullptr};

    // kio_cq_watch: where to post the result when the task finishes.
    struct CompletionQueue *cq = nullptr;
    uint64_t cq_data = 0;

    char name[32] = {0};
    FiberSan san;

    // While the slot is free in its TaskPool: the first task of each free
    // batch (a qnext list) holds the next batch, its own last task and its
    // length, so that a batch moves in and out in O(1) (walking a list of
    // free slots is one cache miss per slot: they are cold by then).
    Task *next_free_batch = nullptr;
    Task *free_batch_tail = nullptr;
    size_t free_batch_len = 0;

    static constexpr uint32_t handle_word(uint32_t g, uint32_t state) { return g << 2 | state; }
    static constexpr uint64_t kRef = uint64_t(1) << 32;  // one reference in `life`
    // In `life` above the references: the task finished (set by finish_task
    // with the same compare-and-swap that decides whether its fiber's
    // reference goes at once), and a party registered under `lock` to wait
    // for it (a selector, an awaiter published by another context, a
    // completion queue), which makes the finish take the lock.
    static constexpr uint64_t kFinishedBit = uint64_t(1) << 63;
    static constexpr uint64_t kWaitedBit = uint64_t(1) << 62;
    static uint32_t handle_of(uint64_t life) { return uint32_t(life); }
    static uint32_t refs_of(uint64_t life) { return uint32_t(life >> 32) & 0x3fffffffu; }
    // Under `lock`, before registering a party that waits for this task:
    // false if it has finished (the party then takes the result at once).
    // A finish that does not set kFinishedBit (its holder is waiting: see
    // finish_task) stores `state` before it takes the lock.
    bool register_waiter() {
        return !(life.fetch_or(kWaitedBit, std::memory_order_acq_rel) & kFinishedBit) &&
               state.load(std::memory_order_acquire) != kFinished;
    }
    // A new task's (or the main fiber's) handle and references; nobody else
    // can reach it yet.
    void init_life(uint32_t refs, std::memory_order mo) {
        life.store(uint64_t(refs) << 32 | handle_word(gen.load(std::memory_order_relaxed), kLive), mo);
    }
    uint32_t handle_bits() const { return handle_of(life.load(std::memory_order_acquire)); }
    // Moves the handle from `from` to `to`, and drops `drop` references: the
    // caller holds the handle in state `from` (a claim), so the handle bits
    // are stable and the delta exact while the references change around it.
    // Returns the word before.
    uint64_t move_handle(uint32_t from, uint32_t to, uint32_t drop) {
        uint32_t g = gen.load(std::memory_order_relaxed);
        uint64_t delta = uint64_t(handle_word(g, to)) - uint64_t(handle_word(g, from)) - drop * kRef;
        return life.fetch_add(delta, std::memory_order_acq_rel);
    }

    bool cancel_pending() const {
        return cancel_requested.load(std::memory_order_acquire) &&
               !shielded.load(std::memory_order_relaxed);
    }
    // Takes the wait that cur_wait names back from cancelers. False: none
    // can claim it any more. True: one may be claiming it right now (it does
    // so only under `lock`). Pairs with request_cancel's heavy_fence.
    bool withdraw_wait() {
        cur_wait.store(nullptr, std::memory_order_relaxed);
        light_fence();  // the store before the read
        return cancel_requested.load(std::memory_order_relaxed);
    }
};

// What finish_task did with the fiber's reference (see runtime.h).
enum class FinishRef : uint8_t { kKept, kDropped, kDroppedLast };

constexpr uintptr_t kHandleGenMask = alignof(Task) - 1;

inline kio_task *to_handle(Task *t) {
    return reinterpret_cast<kio_task *>(reinterpret_cast<uintptr_t>(t) |
                                        (t->gen.load(std::memory_order_relaxed) & kHandleGenMask));
}

// Slab allocator for tasks. Memory stays mapped until the pool is destroyed, so
// a stale handle can always be read and rejected, and destroy can walk every
// task ever allocated. A free slot holds no reference (its `life` counts
// none), also in the slabs a destroyed runtime leaves to the next one:
// try_ref must fail on it, since the spawn that fills it stores its count.
class TaskPool {
  public:
    TaskPool() = default;
    ~TaskPool();
    TaskPool(const TaskPool &) = delete;
    TaskPool &operator=(const TaskPool &) = delete;

    // Moves up to n free tasks into out (a linked list through qnext);
    // allocates a slab when the free list is empty. Returns the count. Whole
    // batches cost one look at their first task; only a batch split at n is
    // walked (to n).
    size_t take(Task **out, size_t n);
    // Returns a list of n tasks (linked through qnext, from head to tail) to
    // the pool, as one batch.
    void give(Task *head, Task *tail, size_t n);
    // Calls f(task) for every task slot (live or free) under the pool lock.
    template <class F>
    void for_each(F f) {
        std::lock_guard<std::mutex> g(lock_);
        for (Slab *s = slabs_; s; s = s->next)
            for (size_t i = 0; i < kSlabTasks; i++) f(&s->tasks[i]);
    }

  private:
    static constexpr size_t kSlabTasks = 128;
    static constexpr size_t kSlabBatch = 64;  // a new slab's tasks go free in batches of this size
    struct Slab {
        Slab *next;
        Task tasks[kSlabTasks];
    };
    static Slab *new_slab();  // a spare one (see task_pool.cpp) or a new one
    bool add_slab_locked();
    void push_batch_locked(Task *head, Task *tail, size_t n);
    std::mutex lock_;
    Slab *slabs_ = nullptr;
    Task *free_ = nullptr;  // the first free batch
};

// Decodes and validates a user handle; nullptr if it is not a live task.
// *gen (if given) receives the generation the handle was matched against.
inline Task *from_handle(kio_task *h, uint32_t *gen = nullptr) {
    uintptr_t v = reinterpret_cast<uintptr_t>(h);
    auto *t = reinterpret_cast<Task *>(v & ~kHandleGenMask);
    if (!t) return nullptr;
    if (t->magic.load(std::memory_order_acquire) != Task::kMagicLive) return nullptr;
    uint32_t g = t->gen.load(std::memory_order_relaxed);
    if ((g & kHandleGenMask) != (v & kHandleGenMask)) return nullptr;
    if (gen) *gen = g;
    return t;
}

// Whether the handle of t's generation gen is still open (kLive or
// kClaimed): neither consumed, detached nor replaced by a new spawn.
inline bool handle_open(const Task *t, uint32_t gen) {
    uint32_t w = t->handle_bits();
    return w == Task::handle_word(gen, Task::kLive) || w == Task::handle_word(gen, Task::kClaimed);
}

// Moves the handle of t's generation gen (from from_handle) from kLive to
// `to` and drops `drop` references with it, in one compare-and-swap (retried
// only while the references move). The generation is part of the compared
// word, so a caller whose handle went stale after from_handle (consumed, the
// slot reused by a new spawn) cannot take the new task's handle. *seen: the
// word before (on failure, the one that did not match).
inline bool take_live(Task *t, uint32_t gen, uint32_t to, uint32_t drop, uint64_t *seen) {
    const uint32_t live = Task::handle_word(gen, Task::kLive);
    uint64_t w = t->life.load(std::memory_order_relaxed);
    while (Task::handle_of(w) == live) {
        uint64_t taken = ((w & ~uint64_t(UINT32_MAX)) - drop * Task::kRef) | Task::handle_word(gen, to);
        if (t->life.compare_exchange_weak(w, taken, std::memory_order_acq_rel, std::memory_order_relaxed)) break;
    }
    *seen = w;
    return Task::handle_of(w) == live;
}

// take_live to `to` (kClaimed, kDetached), keeping the references. 0,
// -EBUSY (claimed by another caller) or -EINVAL (stale, detached, consumed).
inline int take_handle(Task *t, uint32_t gen, uint32_t to) {
    uint64_t w;
    if (take_live(t, gen, to, 0, &w)) return 0;
    return Task::handle_of(w) == Task::handle_word(gen, Task::kClaimed) ? -EBUSY : -EINVAL;
}

}  // namespace kio
