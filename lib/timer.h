// Per-worker timers: a binary min-heap ordered by deadline.
//
// A fiber that waits with a deadline puts its node in the heap of the worker it
// parks on. The owner fires expired nodes when it looks for work (every tick
// of the fairness interval, and before sleeping); other workers fire them too
// when they steal or wake up, so a sleeper whose worker is stuck in a fiber
// that never yields still wakes up. `next` mirrors the earliest deadline for
// lock-free peeking (UINT64_MAX when empty).
//
// The heap array holds (deadline, slot) pairs and a slot table maps slots to
// nodes and back, so sifting touches only these two contiguous arrays: the
// nodes themselves live on many different fiber stacks, and touching them
// during every sift would cost a cache miss per level.
#pragma once

#include <atomic>
#include <cstdint>

#include "util.h"
#include "wait.h"

namespace kio {

struct TimerHeap {
    SpinLock lock;
    std::atomic<uint64_t> next{UINT64_MAX};

    TimerHeap() = default;
    ~TimerHeap();
    TimerHeap(const TimerHeap &) = delete;
    TimerHeap &operator=(const TimerHeap &) = delete;

    // Inserts n (n->deadline set). False if out of memory.
    bool insert(TimerNode *n);
    // Removes n if it is still in this heap (the waiting party's cleanup).
    void remove(TimerNode *n);
    // Claims every node whose deadline is <= now with -ETIMEDOUT and wakes the
    // winners. Returns the number of nodes fired.
    size_t fire_expired(uint64_t now);
    uint64_t next_deadline() const { return next.load(std::memory_order_acquire); }
    // Someone is firing (or editing) right now: helpers need not queue up.
    bool busy() const { return lock.is_locked(); }

  private:
    struct Entry {
        uint64_t deadline;
        uint32_t slot;
    };
    struct Slot {
        TimerNode *node;  // nullptr: free (then `pos` links the free list)
        uint32_t pos;     // index of the node's entry in heap_
    };
    bool grow();
    void sift_up(uint32_t i);
    void sift_down(uint32_t i);
    void remove_at(uint32_t i);  // frees the entry's slot; lock held
    void place(uint32_t i, Entry e) {
        heap_[i] = e;
        slots_[e.slot].pos = i;
    }
    void update_next() { next.store(size_ ? heap_[0].deadline : UINT64_MAX, std::memory_order_release); }

    Entry *heap_ = nullptr;
    Slot *slots_ = nullptr;
    uint32_t size_ = 0, cap_ = 0;
    uint32_t free_slot_ = UINT32_MAX;
};

// The Waiter a TimerNode is embedded in.
inline Waiter *waiter_of(TimerNode *n) {
    return reinterpret_cast<Waiter *>(reinterpret_cast<char *>(n) - offsetof(Waiter, timer));
}

}  // namespace kio
