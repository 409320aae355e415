// Run queues. Each worker owns two lock-free queues that other workers may
// steal from, plus locked lists for work that arrives from outside:
//
//   Deque   freshly spawned children. The owner pushes and pops at the bottom
//           (newest first, which keeps spawn trees depth-first and small);
//           thieves take from the top (the oldest, usually the largest subtree).
//           Chase-Lev, growable.
//   Ring    woken and yielding fibers, FIFO. The owner pushes at the tail and
//           pops at the head; thieves take half from the head. Fixed capacity;
//           the overflow goes to the runtime's injection queue.
//   TaskQueue  a mutex-protected FIFO list with a lock-free emptiness check:
//           the runtime's injection queue and each worker's inbox (pinned tasks).
//
// Elements are atomics accessed relaxed; indices carry acquire/release so a
// thief sees the task's fields written before it was pushed.
//
// A runtime of one worker has no thieves: its queues are set `solo`, and the
// owner's pops skip the compare-and-swap (Ring) and the full fence (Deque)
// that only a race with a thief needs, a locked instruction per pick.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>

#include "task.h"

namespace kio {

class Ring {
  public:
    static constexpr uint32_t kCap = 256;

    // Owner only. False when full.
    bool push(Task *t) {
        uint32_t h = head_.load(std::memory_order_acquire);
        uint32_t tl = tail_.load(std::memory_order_relaxed);
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
    // Owner: one task from the head.
    Task *pop() {
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
    // Owner: the task at the head, if any, as a hint (a thief may take it
    // meanwhile; Task memory stays mapped, so reading it is harmless).
    Task *peek() const {
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
        return tl - h > kCap ? 0 : tl - h;
    }

  private:
    alignas(kCacheLine) std::atomic<uint32_t> head_{0};
    alignas(kCacheLine) std::atomic<uint32_t> tail_{0};
    bool solo_ = false;
    std::atomic<Task *> buf_[kCap] = {};
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
    // Owner only: the newest task.
    Task *pop() {
        int64_t b = bottom_.load(std::memory_order_relaxed) - 1;
        Array *a = array_.load(std::memory_order_relaxed);
        if (solo_) {
            if (top_.load(std::memory_order_relaxed) > b) return nullptr;
            bottom_.store(b, std::memory_order_relaxed);
            return a->at(b).load(std::memory_order_relaxed);
        }
        bottom_.store(b, std::memory_order_seq_cst);
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
