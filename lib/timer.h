// Per-worker timers: a binary min-heap of TimerNodes ordered by deadline.
//
// A fiber that waits with a deadline puts its node in the heap of the worker it
// parks on. The owner fires expired nodes when it looks for work (every tick
// of the fairness interval, and before sleeping); other workers fire them too
// when they steal or wake up, so a sleeper whose worker is stuck in a fiber
// that never yields still wakes up. `next` mirrors the earliest deadline for
// lock-free peeking (UINT64_MAX when empty).
#pragma once

#include <atomic>
#include <cstdint>

#include "util.h"
#include "wait.h"

namespace kio {

struct TimerHeap {
    SpinLock lock;
    TimerNode **nodes = nullptr;  // heap array
    uint32_t size = 0, cap = 0;
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

  private:
    void sift_up(uint32_t i);
    void sift_down(uint32_t i);
    void remove_at(uint32_t i);  // with lock held
    void place(uint32_t i, TimerNode *n) {
        nodes[i] = n;
        n->index = i;
    }
    void update_next() { next.store(size ? nodes[0]->deadline : UINT64_MAX, std::memory_order_release); }
};

// The Waiter a TimerNode is embedded in.
inline Waiter *waiter_of(TimerNode *n) {
    return reinterpret_cast<Waiter *>(reinterpret_cast<char *>(n) - offsetof(Waiter, timer));
}

}  // namespace kio
