#include "timer.h"

#include <cerrno>
#include <cstdlib>

namespace kio {

TimerHeap::~TimerHeap() {
    std::free(heap_);
    std::free(slots_);
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
    remove_at(slots_[n->index].pos);
    n->heap.store(nullptr, std::memory_order_relaxed);
    update_next();
}

size_t TimerHeap::fire_expired(uint64_t now) {
    if (next_deadline() > now) return 0;
    // Claim under the lock (the waiting party removes its node under the same
    // lock, so a node is never touched after its owner may have left), wake
    // outside it.
    constexpr size_t kBatch = 64;
    Waiter *wake[kBatch];
    size_t fired = 0;
    for (bool more = true; more;) {
        size_t nw = 0;
        {
            LockGuard<SpinLock> g(lock);
            // Two passes: each node sits on a fiber stack that has not been
            // touched since the fiber parked (a cache and TLB miss apiece, the
            // main cost of firing many timers). Prefetching the whole batch
            // first lets those misses overlap instead of queueing one by one.
            TimerNode *due[kBatch];
            size_t nd = 0;
            while (size_ && heap_[0].deadline <= now && nd < kBatch) {
                TimerNode *n = slots_[heap_[0].slot].node;
                __builtin_prefetch(waiter_of(n), 1);
                __builtin_prefetch(n, 1);
                due[nd++] = n;
                remove_at(0);
            }
            update_next();
            for (size_t i = 0; i < nd; i++) {
                TimerNode *n = due[i];
                Waiter *w = waiter_of(n);
                Claim c = claim(w, -ETIMEDOUT);
                n->heap.store(nullptr, std::memory_order_release);
                if (c == Claim::kWake) wake[nw++] = w;
            }
            fired += nd;
            more = nd == kBatch;
        }
        for (size_t i = 0; i < nw; i++) wake_claimed(wake[i]);
    }
    return fired;
}

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
