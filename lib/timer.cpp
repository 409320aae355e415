#include "timer.h"

#include <cerrno>
#include <cstdlib>

namespace kio {

TimerHeap::~TimerHeap() {
    std::free(heap_);
    std::free(slots_);
    std::free(run_);
}

// Heap and slot table grow together: at most cap_ nodes are ever in the heap.
bool TimerHeap::grow() {
    uint32_t ncap = cap_ ? cap_ * 2 : 64;
    auto *h = static_cast<Entry *>(std::realloc(heap_, ncap * sizeof(Entry)));
    if (!h) return false;
    heap_ = h;
    auto *s = static_cast<Slot *>(std::realloc(slots_, ncap * sizeof(Slot)));
    if (!s) return false;
    slots_ = s;
    for (uint32_t i = ncap; i-- > cap_;) {
        slots_[i].node = nullptr;
        slots_[i].pos = free_slot_;
        free_slot_ = i;
    }
    cap_ = ncap;
    return true;
}

bool TimerHeap::insert(TimerNode *n) {
    LockGuard<SpinLock> g(lock);
    if (run_head_ == run_tail_ || n->deadline >= run_at(run_tail_ - 1).deadline) {
        if (!run_append(n)) return false;
        n->heap.store(this, std::memory_order_relaxed);
        if (run_tail_ - run_head_ == 1) update_next();
        return true;
    }
    if (free_slot_ == UINT32_MAX && !grow()) return false;
    uint32_t slot = free_slot_;
    free_slot_ = slots_[slot].pos;
    slots_[slot].node = n;
    n->index = slot;
    place(size_, Entry{n->deadline, slot});
    size_++;
    n->heap.store(this, std::memory_order_relaxed);
    sift_up(size_ - 1);
    update_next();
    return true;
}

void TimerHeap::remove(TimerNode *n) {
    if (n->heap.load(std::memory_order_acquire) != this) return;
    LockGuard<SpinLock> g(lock);
    if (n->heap.load(std::memory_order_relaxed) != this) return;
    if (n->index & kInRun) run_remove(n->index);
    else remove_at(slots_[n->index].pos);
    n->heap.store(nullptr, std::memory_order_relaxed);
    update_next();
}

size_t TimerHeap::fire_expired(uint64_t now) {
    if (next_deadline() > now) return 0;
    // Claim under the lock (the waiting party removes its node under the same
    // lock, so a node is never touched after its owner may have left), wake
    // outside it. Nodes sit on cold fiber stacks, one page each: the FIFO's
    // nodes are prefetched a few entries ahead, so their cache and TLB misses
    // overlap (100k sleepers: ~5% less wall time; the heap's order is not
    // known ahead, so its nodes are not).
    constexpr size_t kBatch = 64;
    constexpr uint32_t kAhead = 4;
    Waiter *wake[kBatch];
    size_t fired = 0;
    for (bool more = true; more;) {
        size_t nw = 0, nd = 0;
        {
            LockGuard<SpinLock> g(lock);
            while (nd < kBatch) {
                TimerNode *n;
                if (run_front() <= heap_front()) {
                    if (run_front() > now) break;
                    if (run_tail_ - run_head_ > kAhead) __builtin_prefetch(run_at(run_head_ + kAhead).node, 1);
                    n = run_at(run_head_).node;
                    run_head_++;
                    run_skip_holes();
                } else {
                    if (heap_front() > now) break;
                    n = slots_[heap_[0].slot].node;
                    remove_at(0);
                }
                nd++;
                Waiter *w = waiter_of(n);
                Claim c = claim(w, -ETIMEDOUT);
                n->heap.store(nullptr, std::memory_order_release);
                if (c == Claim::kWake) wake[nw++] = w;
            }
            update_next();
            fired += nd;
            more = nd == kBatch;
        }
        for (size_t i = 0; i < nw; i++) wake_claimed(wake[i]);
    }
    return fired;
}

// --- the FIFO

bool TimerHeap::run_append(TimerNode *n) {
    if (run_tail_ - run_head_ == run_cap_) {
        uint32_t ncap = run_cap_ ? run_cap_ * 2 : 64;
        if (ncap > (1u << 30)) return false;
        auto *r = static_cast<RunEntry *>(std::malloc(size_t(ncap) * sizeof(RunEntry)));
        if (!r) return false;
        for (uint32_t p = run_head_; p != run_tail_; p++) r[p & (ncap - 1)] = run_at(p);
        std::free(run_);
        run_ = r;
        run_cap_ = ncap;
    }
    uint32_t pos = run_tail_++;
    run_at(pos) = RunEntry{n->deadline, n};
    n->index = kInRun | (pos & ~kInRun);
    return true;
}

// The entry of a node at index (kInRun | low 31 bits of its position).
void TimerHeap::run_remove(uint32_t index) {
    uint32_t low = index & ~kInRun;
    // The full position: the one in [run_head_, run_tail_) with these low bits.
    uint32_t pos = run_head_ + ((low - run_head_) & ~kInRun);
    run_at(pos).node = nullptr;
    if (pos == run_head_) {
        run_head_++;
        run_skip_holes();
    } else if (pos == run_tail_ - 1) {
        run_tail_--;
        while (run_tail_ != run_head_ && !run_at(run_tail_ - 1).node) {
            run_tail_--;
            run_holes_--;
        }
    } else if (++run_holes_ > 64 && run_holes_ > (run_tail_ - run_head_) / 2) {
        run_compact();
    }
}

// Keeps the front entry a live one.
void TimerHeap::run_skip_holes() {
    while (run_head_ != run_tail_ && !run_at(run_head_).node) {
        run_head_++;
        run_holes_--;
    }
}

// Squeezes the holes out, keeping the order; renumbers the moved nodes.
void TimerHeap::run_compact() {
    uint32_t to = run_head_;
    for (uint32_t p = run_head_; p != run_tail_; p++) {
        RunEntry e = run_at(p);
        if (!e.node) continue;
        e.node->index = kInRun | (to & ~kInRun);
        run_at(to++) = e;
    }
    run_tail_ = to;
    run_holes_ = 0;
}

// --- the heap

void TimerHeap::remove_at(uint32_t i) {
    uint32_t slot = heap_[i].slot;
    slots_[slot].node = nullptr;
    slots_[slot].pos = free_slot_;
    free_slot_ = slot;
    size_--;
    if (i == size_) return;
    place(i, heap_[size_]);
    if (i > 0 && heap_[i].deadline < heap_[(i - 1) / 2].deadline) sift_up(i);
    else sift_down(i);
}

void TimerHeap::sift_up(uint32_t i) {
    Entry e = heap_[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (heap_[p].deadline <= e.deadline) break;
        place(i, heap_[p]);
        i = p;
    }
    place(i, e);
}

void TimerHeap::sift_down(uint32_t i) {
    Entry e = heap_[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= size_) break;
        if (c + 1 < size_ && heap_[c + 1].deadline < heap_[c].deadline) c++;
        if (e.deadline <= heap_[c].deadline) break;
        place(i, heap_[c]);
        i = c;
    }
    place(i, e);
}

}  // namespace kio
