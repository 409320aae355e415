#include "timer.h"

#include <cerrno>
#include <cstdlib>

namespace kio {

TimerHeap::~TimerHeap() { std::free(nodes); }

bool TimerHeap::insert(TimerNode *n) {
    LockGuard<SpinLock> g(lock);
    if (size == cap) {
        uint32_t ncap = cap ? cap * 2 : 64;
        auto **p = static_cast<TimerNode **>(std::realloc(nodes, ncap * sizeof(TimerNode *)));
        if (!p) return false;
        nodes = p;
        cap = ncap;
    }
    place(size, n);
    size++;
    n->heap.store(this, std::memory_order_relaxed);
    sift_up(size - 1);
    update_next();
    return true;
}

void TimerHeap::remove(TimerNode *n) {
    if (n->heap.load(std::memory_order_acquire) != this) return;
    LockGuard<SpinLock> g(lock);
    if (n->heap.load(std::memory_order_relaxed) != this) return;
    remove_at(n->index);
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
    for (;;) {
        size_t nw = 0;
        {
            LockGuard<SpinLock> g(lock);
            while (size && nodes[0]->deadline <= now && nw < kBatch) {
                TimerNode *n = nodes[0];
                remove_at(0);
                Waiter *w = waiter_of(n);
                Claim c = claim(w, -ETIMEDOUT);
                n->heap.store(nullptr, std::memory_order_release);
                if (c == Claim::kWake) wake[nw++] = w;
                fired++;
            }
            update_next();
        }
        for (size_t i = 0; i < nw; i++) wake_claimed(wake[i]);
        if (nw < kBatch) return fired;
    }
}

void TimerHeap::remove_at(uint32_t i) {
    size--;
    if (i == size) return;
    place(i, nodes[size]);
    if (i > 0 && nodes[i]->deadline < nodes[(i - 1) / 2]->deadline) sift_up(i);
    else sift_down(i);
}

void TimerHeap::sift_up(uint32_t i) {
    TimerNode *n = nodes[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (nodes[p]->deadline <= n->deadline) break;
        place(i, nodes[p]);
        i = p;
    }
    place(i, n);
}

void TimerHeap::sift_down(uint32_t i) {
    TimerNode *n = nodes[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= size) break;
        if (c + 1 < size && nodes[c + 1]->deadline < nodes[c]->deadline) c++;
        if (n->deadline <= nodes[c]->deadline) break;
        place(i, nodes[c]);
        i = c;
    }
    place(i, n);
}

}  // namespace kio
