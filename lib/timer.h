// Per-worker timers: a FIFO of deadlines that arrived in order, beside a
// binary min-heap for the rest.
//
// Most timers arrive in deadline order (many fibers sleeping the same
// duration, I/O deadlines of one timeout): a node whose deadline is no
// earlier than the FIFO's last one is appended there, and firing takes it
// from the front, both O(1) and sequential in memory. Only a node that would
// break the order goes to the heap. The earliest timer is the earlier of the
// two fronts.
//
// A fiber that waits with a deadline puts its node in the timers of the worker it
// parks on. The owner fires expired nodes when it looks for work (every tick
// of the fairness interval, and before sleeping); other workers fire them too
// when they steal or wake up, so a sleeper whose worker is stuck in a fiber
// that never yields still wakes up. `next` mirrors the earliest deadline for
// lock-free peeking (UINT64_MAX when empty).
//
// The heap array holds (deadline, slot) pairs and a slot table maps slots to
// nodes and back, so sifting touches only these two contiguous arrays: the
// nodes themselves live on many different fiber stacks, and touching them
// during every sift would cost a cache miss per level. A node removed from
// the middle of the FIFO leaves a hole (node == nullptr) that firing skips;
// holes are compacted away once they are the majority, so a stream of
// deadlines that are armed and soon removed (I/O that completes in time)
// cannot grow the FIFO without bound.
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
    struct RunEntry {
        uint64_t deadline;  // nondecreasing from run_head_ to run_tail_
        TimerNode *node;    // nullptr: a hole (removed); never at run_head_
    };
    // TimerNode::index of a node in the FIFO: this bit plus its position
    // (run_head_/run_tail_ count modulo 2^32; capacities are powers of two
    // up to 2^30, so the low 31 bits of a position locate its entry).
    static constexpr uint32_t kInRun = 0x80000000u;
    bool run_append(TimerNode *n);
    void run_remove(uint32_t index);
    void run_skip_holes();
    void run_compact();
    RunEntry &run_at(uint32_t pos) { return run_[pos & (run_cap_ - 1)]; }
    uint64_t run_front() const { return run_head_ != run_tail_ ? run_[run_head_ & (run_cap_ - 1)].deadline : UINT64_MAX; }
    uint64_t heap_front() const { return size_ ? heap_[0].deadline : UINT64_MAX; }
    bool grow();
    void sift_up(uint32_t i);
    void sift_down(uint32_t i);
    void remove_at(uint32_t i);  // frees the entry's slot; lock held
    void place(uint32_t i, Entry e) {
        heap_[i] = e;
        slots_[e.slot].pos = i;
    }
    void update_next() {
        uint64_t h = heap_front(), r = run_front();
        next.store(h < r ? h : r, std::memory_order_release);
    }

    Entry *heap_ = nullptr;
    Slot *slots_ = nullptr;
    uint32_t size_ = 0, cap_ = 0;
    uint32_t free_slot_ = UINT32_MAX;

    RunEntry *run_ = nullptr;
    uint32_t run_head_ = 0, run_tail_ = 0;  // positions; run_tail_ - run_head_ entries
    uint32_t run_cap_ = 0;                  // 0 or a power of two
    uint32_t run_holes_ = 0;                // entries with node == nullptr
};

// The Waiter a TimerNode is embedded in.
inline Waiter *waiter_of(TimerNode *n) {
    return reinterpret_cast<Waiter *>(reinterpret_cast<char *>(n) - offsetof(Waiter, timer));
}

}  // namespace kio
