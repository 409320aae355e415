// Run queues. Each worker owns two lock-free queues that other workers may
// steal from, plus locked lists for work that arrives from outside:
//
//   Deque   freshly spawned children. The owner pushes and pops at the bottom
//           (newest first, which keeps spawn trees depth-first and small);
//           thieves take from the top (the oldest, usually the largest subtree).
//           Chase-Lev, growable.
//   Ring    woken and yielding fibers, FIFO. The owner pushes at the tail and
//           pops at the head; thieves take half from the head. Fixed capacity;
//           the overflow goes to the runtime's injection queue. A task that
//           arrives on an empty ring waits in a head slot instead, which the
//           owner takes without a locked instruction (see below).
//   TaskQueue  a mutex-protected FIFO list with a lock-free emptiness check:
//           the runtime's injection queue and each worker's inbox (pinned tasks).
//
// Elements are atomics accessed relaxed; indices carry acquire/release so a
// thief sees the task's fields written before it was pushed.
//
// A runtime of one worker has no thieves: its queues are set `solo`, and the
// owner's pops skip the compare-and-swap (Ring) and the full fence (Deque)
// that only a race with a thief needs, a locked instruction per pick. With
// more workers the Deque does the same while every other worker sleeps: it
// reads the runtime's count of awake workers after its store (see
// Deque::pop_alone; a worker that wakes counts itself, then runs a heavy
// fence, before it steals).
//
// The Ring's head slot. Fibers that wake each other on one worker (a mutex
// and condition ping-pong, a request handed between two fibers) keep the ring
// at zero or one task, and a compare-and-swap per pick against thieves that
// never come is most of what the pick costs. So a task pushed on an empty
// ring goes to the slot, which the owner takes with plain loads and stores,
// and a thief only from a worker stuck in one fiber (scheduler.cpp: the same
// rule as for a worker's single queued task), with a heavy fence:
//
//   owner (pop)                          thief (steal_slot)
//   s0 = thief_seq_                      thief_seq_: even -> odd (CAS)
//   t = slot_; slot_ = nullptr           heavy_fence()
//   light_fence()                        t = slot_; CAS slot_ t -> nullptr
//   s1 = thief_seq_                      stolen_ = t, stolen_in_ = its number
//                                        thief_seq_: -> next even
//
// The fences make the owner either see the attempt's number (s1 != s0) or
// have its store seen by the thief (which then finds the slot empty). An
// attempt under way at s0 shows as an odd s0. So if s0 is even and s1 == s0,
// no thief can have taken t; otherwise the owner waits for the attempt to
// end and reads whether one that overlapped took t (an attempt under way at
// s0 may have taken an earlier task). The slot is older than everything in
// the ring, so FIFO order holds.

#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>

#include <sched.h>

#include "fence.h"
#include "task.h"
#include "util.h"

namespace kio {

class Ring {
  public:
    static constexpr uint32_t kCap = 256;

    // Owner only. False when full.
    bool push(Task *t) {
        uint32_t h = head_.load(std::memory_order_acquire);
        uint32_t tl = tail_.load(std::memory_order_relaxed);
        if (h == tl && !slot_.load(std::memory_order_relaxed)) {
            slot_.store(t, std::memory_order_release);
            return true;
        }
        if (tl - h >= kCap) return false;
        buf_[tl % kCap].store(t, std::memory_order_relaxed);
        tail_.store(tl + 1, std::memory_order_release);
        return true;
    }
    // Owner only: takes half the ring (oldest first) as a list through qnext,
    // for moving to the injection queue. Returns the count (0 if a thief raced).
    // Claims the entries before touching their tasks: a thief that took them
    // first may already have run and freed them, and qnext is then the link
    // of a free-task list.
    uint32_t take_half(Task **head, Task **tail) {
        uint32_t h = head_.load(std::memory_order_acquire);
        uint32_t tl = tail_.load(std::memory_order_relaxed);
        uint32_t n = (tl - h) / 2;
        if (n == 0) return 0;
        if (!head_.compare_exchange_strong(h, h + n, std::memory_order_acq_rel)) return 0;
        // [h, h + n) is ours now; only the owner (this thread) writes slots.
        Task *first = nullptr, *last = nullptr;
        for (uint32_t i = 0; i < n; i++) {
            Task *t = buf_[(h + i) % kCap].load(std::memory_order_relaxed);
            t->qnext = nullptr;
            if (last) last->qnext = t;
            else first = t;
            last = t;
        }
        *head = first;
        *tail = last;
        return n;
    }
    // No other worker will ever take from this ring (set before first use).
    void set_solo() { solo_ = true; }
    // Owner: one task from the head (the slot first: it is the oldest).
    __attribute__((always_inline)) Task *pop() {
        if (solo_) {
            Task *t = slot_.load(std::memory_order_relaxed);
            if (!t) return pop_ring();
            slot_.store(nullptr, std::memory_order_relaxed);
            return t;
        }
        uint64_t s0 = thief_seq_.load(std::memory_order_acquire);  // before the slot is read
        if (Task *t = slot_.load(std::memory_order_relaxed)) {
            slot_.store(nullptr, std::memory_order_relaxed);
            light_fence();  // the store before reading thief_seq_ again; pairs with steal_slot
            uint64_t s1 = thief_seq_.load(std::memory_order_relaxed);
            if (KIO_UNLIKELY((s0 & 1) || s1 != s0) && stolen_since(s0, t)) return pop_ring();
            return t;
        }
        return pop_ring();
    }
    // Thief, only from a worker stuck in one fiber (a heavy fence per call):
    // the slot's task, or nullptr when empty, taken, or another thief is at it.
    Task *steal_slot() {
        if (!slot_.load(std::memory_order_relaxed)) return nullptr;
        uint64_t s = thief_seq_.load(std::memory_order_relaxed);
        if ((s & 1) || !thief_seq_.compare_exchange_strong(s, s + 1, std::memory_order_acq_rel)) return nullptr;
        heavy_fence();  // the odd number before reading the slot; pairs with pop
        Task *t = slot_.load(std::memory_order_acquire);
        if (t && slot_.compare_exchange_strong(t, nullptr, std::memory_order_acq_rel)) {
            stolen_.store(t, std::memory_order_relaxed);
            stolen_in_.store(s + 1, std::memory_order_relaxed);
        } else {
            t = nullptr;
        }
        thief_seq_.store(s + 2, std::memory_order_release);
        return t;
    }
    // Owner: the task at the head, if any, as a hint (a thief may take it
    // meanwhile; Task memory stays mapped, so reading it is harmless).
    Task *peek() const {
        if (Task *t = slot_.load(std::memory_order_relaxed)) return t;
        uint32_t h = head_.load(std::memory_order_relaxed);
        if (h == tail_.load(std::memory_order_relaxed)) return nullptr;
        return buf_[h % kCap].load(std::memory_order_relaxed);
    }
    // Thief: moves half of this ring into dst (owned by the caller, which
    // must be empty enough) and returns one of the stolen tasks to run now.
    Task *steal_into(Ring &dst) {
        uint32_t dt = dst.tail_.load(std::memory_order_relaxed);
        uint32_t h = head_.load(std::memory_order_acquire);
        for (;;) {
            uint32_t tl = tail_.load(std::memory_order_acquire);
            uint32_t n = tl - h;
            if (n == 0 || n > kCap) return nullptr;  // empty, or indices read mid-update
            n -= n / 2;
            uint32_t room = kCap - (dt - dst.head_.load(std::memory_order_acquire));
            if (n > room + 1) n = room + 1;
            for (uint32_t i = 0; i + 1 < n; i++)
                dst.buf_[(dt + i) % kCap].store(buf_[(h + i) % kCap].load(std::memory_order_relaxed),
                                                std::memory_order_relaxed);
            Task *run = buf_[(h + n - 1) % kCap].load(std::memory_order_relaxed);
            if (head_.compare_exchange_weak(h, h + n, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
                if (n > 1) dst.tail_.store(dt + n - 1, std::memory_order_release);
                return run;
            }
        }
    }
    uint32_t size() const {
        uint32_t h = head_.load(std::memory_order_acquire);
        uint32_t tl = tail_.load(std::memory_order_acquire);
        uint32_t in_slot = slot_.load(std::memory_order_relaxed) ? 1 : 0;
        return (tl - h > kCap ? 0 : tl - h) + in_slot;
    }

  private:
    Task *pop_ring() {
        uint32_t h = head_.load(std::memory_order_acquire);
        if (solo_) {
            if (h == tail_.load(std::memory_order_relaxed)) return nullptr;
            Task *t = buf_[h % kCap].load(std::memory_order_relaxed);
            head_.store(h + 1, std::memory_order_release);
            return t;
        }
        for (;;) {
            uint32_t tl = tail_.load(std::memory_order_acquire);
            if (h == tl) return nullptr;
            Task *t = buf_[h % kCap].load(std::memory_order_relaxed);
            if (head_.compare_exchange_weak(h, h + 1, std::memory_order_acq_rel,
                                            std::memory_order_acquire))
                return t;
        }
    }
    // Owner, having taken the slot's task t while thief attempts may have
    // overlapped (s0: thief_seq_ before): waits until no attempt is under
    // way; true if one numbered s0 or later took t. (An attempt under way at
    // s0 may have taken an earlier task; none can take anything after t
    // meanwhile: the slot stays empty until the owner returns.)
    KIO_NOINLINE bool stolen_since(uint64_t s0, Task *t) {
        for (unsigned spins = 0; thief_seq_.load(std::memory_order_acquire) & 1; spins++) {
            if (spins < 1000) cpu_relax();
            else sched_yield();  // the thief's thread may have been preempted
        }
        return stolen_in_.load(std::memory_order_relaxed) >= s0 &&
               stolen_.load(std::memory_order_relaxed) == t;
    }

    alignas(kCacheLine) std::atomic<uint32_t> head_{0};
    alignas(kCacheLine) std::atomic<uint32_t> tail_{0};
    std::atomic<Task *> slot_{nullptr};  // the head slot: older than all of buf_
    bool solo_ = false;
    std::atomic<Task *> buf_[kCap] = {};
    // Thieves at the slot (rare): odd while an attempt is under way (the
    // attempt's number); the last attempt that took a task, and that task.
    alignas(kCacheLine) std::atomic<uint64_t> thief_seq_{0};
    std::atomic<uint64_t> stolen_in_{0};
    std::atomic<Task *> stolen_{nullptr};
};

class Deque {
  public:
    Deque() { array_.store(Array::make(64), std::memory_order_relaxed); }
    ~Deque() {
        Array *a = array_.load(std::memory_order_relaxed);
        while (a) {
            Array *prev = a->retired;
            std::free(a);
            a = prev;
        }
    }
    Deque(const Deque &) = delete;
    Deque &operator=(const Deque &) = delete;

    // Owner only. False only if growing failed (out of memory).
    bool push(Task *t) {
        int64_t b = bottom_.load(std::memory_order_relaxed);
        Array *a = array_.load(std::memory_order_relaxed);
        // top_ only grows, so the cached copy can only overstate how full the
        // array is. Re-reading top_ on every push would fetch the line a thief
        // just wrote, a cross-core miss per spawn while it steals.
        if (b - top_seen_ >= int64_t(a->cap)) {
            int64_t tp = top_seen_ = top_.load(std::memory_order_acquire);
            if (b - tp >= int64_t(a->cap)) {
                a = grow(a, tp, b);
                if (!a) return false;
            }
        }
        a->at(b).store(t, std::memory_order_relaxed);
        bottom_.store(b + 1, std::memory_order_release);
        return true;
    }
    // No other worker will ever steal from this deque (set before first use).
    void set_solo() { solo_ = true; }
    // awake counts the workers that may steal right now, the owner included
    // (Runtime::nawake; set before first use).
    void set_awake_count(const std::atomic<int> *awake) { awake_ = awake; }
    // Owner only: the newest task. Inlined (every spawn's child is popped),
    // but for the race with thieves.
    __attribute__((always_inline)) Task *pop() {
        int64_t b = bottom_.load(std::memory_order_relaxed) - 1;
        Array *a = array_.load(std::memory_order_relaxed);
        if (solo_) {
            if (top_.load(std::memory_order_relaxed) > b) return nullptr;
            bottom_.store(b, std::memory_order_relaxed);
            return a->at(b).load(std::memory_order_relaxed);
        }
        bottom_.store(b, std::memory_order_relaxed);
        light_fence();  // the store before reading awake_; pairs with the waking thief's heavy_fence
        if (awake_ && awake_->load(std::memory_order_acquire) <= 1) return pop_alone(a, b);
        return pop_fenced(a, b);
    }
    // Any thread: the oldest task, or nullptr when empty or lost a race.
    Task *steal() {
        int64_t tp = top_.load(std::memory_order_seq_cst);
        int64_t b = bottom_.load(std::memory_order_seq_cst);
        if (tp >= b) return nullptr;
        Array *a = array_.load(std::memory_order_acquire);
        Task *t = a->at(tp).load(std::memory_order_relaxed);
        if (!top_.compare_exchange_strong(tp, tp + 1, std::memory_order_seq_cst,
                                          std::memory_order_relaxed))
            return nullptr;
        return t;
    }
    int64_t size() const {
        int64_t b = bottom_.load(std::memory_order_acquire);
        int64_t tp = top_.load(std::memory_order_acquire);
        return b > tp ? b - tp : 0;
    }

  private:
    struct Array {
        size_t cap;  // power of two
        Array *retired;  // older, smaller arrays: thieves may still read them
        std::atomic<Task *> slots[1];
        std::atomic<Task *> &at(int64_t i) { return slots[size_t(i) & (cap - 1)]; }
        static Array *make(size_t cap) {
            void *m = std::calloc(1, sizeof(Array) + (cap - 1) * sizeof(std::atomic<Task *>));
            if (!m) return nullptr;
            Array *a = static_cast<Array *>(m);
            a->cap = cap;
            return a;
        }
    };

    // pop() while the owner is the only worker awake. Any thief that wakes
    // now announces itself (awake_ up), then runs heavy_fence(), which drains
    // this thread's store of bottom_ unless the fence hits before our read of
    // awake_, which then sees it and takes the fenced path. So it finds
    // bottom_ at b, cannot take a[b], and no compare-and-swap is needed even
    // for the last element. Thieves that went to sleep lowered awake_ after
    // their last steal (release): top_ is current.
    Task *pop_alone(Array *a, int64_t b) {
        if (top_.load(std::memory_order_relaxed) > b) {
            bottom_.store(b + 1, std::memory_order_relaxed);
            return nullptr;
        }
        return a->at(b).load(std::memory_order_relaxed);
    }

    // pop() with thieves awake, bottom_ already lowered to b.
    KIO_NOINLINE Task *pop_fenced(Array *a, int64_t b) {
        full_fence();  // the store before reading top_
        int64_t tp = top_.load(std::memory_order_seq_cst);
        if (tp > b) {
            bottom_.store(b + 1, std::memory_order_relaxed);
            return nullptr;
        }
        Task *t = a->at(b).load(std::memory_order_relaxed);
        if (tp == b) {
            // Last element: race the thieves for it.
            if (!top_.compare_exchange_strong(tp, tp + 1, std::memory_order_seq_cst,
                                              std::memory_order_relaxed))
                t = nullptr;
            bottom_.store(b + 1, std::memory_order_relaxed);
        }
        return t;
    }

    Array *grow(Array *a, int64_t tp, int64_t b) {
        Array *n = Array::make(a->cap * 2);
        if (!n) return nullptr;
        for (int64_t i = tp; i < b; i++) n->at(i).store(a->at(i).load(std::memory_order_relaxed),
                                                       std::memory_order_relaxed);
        n->retired = a;
        array_.store(n, std::memory_order_release);
        return n;
    }

    alignas(kCacheLine) std::atomic<int64_t> top_{0};
    alignas(kCacheLine) std::atomic<int64_t> bottom_{0};
    std::atomic<Array *> array_{nullptr};
    int64_t top_seen_ = 0;  // owner only: a value top_ had (see push)
    bool solo_ = false;
    const std::atomic<int> *awake_ = nullptr;
};

class TaskQueue {
  public:
    void push(Task *t) { push_list(t, t, 1); }
    void push_list(Task *head, Task *tail, size_t n) {
        tail->qnext = nullptr;
        std::lock_guard<std::mutex> g(lock_);
        if (tail_) tail_->qnext = head;
        else head_ = head;
        tail_ = tail;
        size_.store(size_.load(std::memory_order_relaxed) + n, std::memory_order_release);
    }
    // Up to max tasks as a list through qnext (count in *n).
    Task *pop_list(size_t max, size_t *n) {
        *n = 0;
        if (empty()) return nullptr;
        std::lock_guard<std::mutex> g(lock_);
        Task *first = head_, *last = nullptr;
        size_t k = 0;
        for (Task *t = head_; t && k < max; t = t->qnext) {
            last = t;
            k++;
        }
        if (!k) return nullptr;
        head_ = last->qnext;
        if (!head_) tail_ = nullptr;
        last->qnext = nullptr;
        size_.store(size_.load(std::memory_order_relaxed) - k, std::memory_order_release);
        *n = k;
        return first;
    }
    Task *pop() {
        size_t n;
        return pop_list(1, &n);
    }
    bool empty() const { return size_.load(std::memory_order_acquire) == 0; }
    size_t size() const { return size_.load(std::memory_order_acquire); }

  private:
    std::mutex lock_;
    Task *head_ = nullptr, *tail_ = nullptr;
    std::atomic<size_t> size_{0};
};

}  // namespace kio
