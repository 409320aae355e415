#include "task.h"

#include <new>

namespace kio {

namespace {

// Slabs of destroyed runtimes, kept for the next runtime instead of freed: a
// fiber of another runtime spinning on a kio_mutex may still read the Task
// that held it (owner_switched_out in mutex.cpp), so Task memory must stay
// valid for the life of the process. Reachable from here, so not a leak.
std::mutex g_spare_lock;
void *g_spare = nullptr;  // a list of TaskPool::Slab through their `next`

}  // namespace

TaskPool::~TaskPool() {
    if (!slabs_) return;
    // Every task has finished, but those whose handles were never consumed
    // still say live: a handle of a destroyed runtime must be stale, and the
    // next runtime's scans (cancel_all) must not take a slot it is filling in
    // for a live task. And the main fiber's Task still holds its own
    // reference: every slot goes spare with none, as a free slot must (a
    // scan's try_ref pins only slots with references; one that pinned a free
    // slot would have its pin overwritten by the spawn that fills the slot,
    // and its release would then free that task while it is queued).
    for (Slab *s = slabs_; s; s = s->next)
        for (Task &t : s->tasks) {
            t.magic.store(Task::kMagicFree, std::memory_order_release);
            t.life.store(Task::handle_of(t.life.load(std::memory_order_relaxed)), std::memory_order_release);
        }
    Slab *last = slabs_;
    while (last->next) last = last->next;
    std::lock_guard<std::mutex> g(g_spare_lock);
    last->next = static_cast<Slab *>(g_spare);
    g_spare = slabs_;
}

TaskPool::Slab *TaskPool::new_slab() {
    {
        std::lock_guard<std::mutex> g(g_spare_lock);
        if (g_spare) {
            Slab *s = static_cast<Slab *>(g_spare);
            g_spare = s->next;
            return s;  // its tasks are all free: a runtime is destroyed only when they are
        }
    }
    void *mem = ::operator new(sizeof(Slab), std::align_val_t(alignof(Slab)), std::nothrow);
    return mem ? new (mem) Slab : nullptr;
}

void TaskPool::push_batch_locked(Task *head, Task *tail, size_t n) {
    tail->qnext = nullptr;
    head->next_free_batch = free_;
    head->free_batch_tail = tail;
    head->free_batch_len = n;
    free_ = head;
}

bool TaskPool::add_slab_locked() {
    Slab *s = new_slab();
    if (!s) return false;
    s->next = slabs_;
    slabs_ = s;
    for (size_t i = 0; i < kSlabTasks; i += kSlabBatch) {
        size_t end = i + kSlabBatch < kSlabTasks ? i + kSlabBatch : kSlabTasks;
        for (size_t j = i; j + 1 < end; j++) s->tasks[j].qnext = &s->tasks[j + 1];
        push_batch_locked(&s->tasks[i], &s->tasks[end - 1], end - i);
    }
    return true;
}

size_t TaskPool::take(Task **out, size_t n) {
    std::lock_guard<std::mutex> g(lock_);
    Task *head = nullptr, **link = &head;
    size_t k = 0;
    while (k < n) {
        if (!free_ && (k || !add_slab_locked())) break;  // a new slab only when empty-handed
        Task *b = free_, *last = b->free_batch_tail;
        size_t len = b->free_batch_len;
        if (k + len <= n) {
            free_ = b->next_free_batch;
        } else {  // split: the first n - k go, the rest stays a batch
            len = n - k;
            last = b;
            for (size_t i = 1; i < len; i++) last = last->qnext;
            Task *rest = last->qnext;
            rest->next_free_batch = b->next_free_batch;
            rest->free_batch_tail = b->free_batch_tail;
            rest->free_batch_len = b->free_batch_len - len;
            free_ = rest;
            last->qnext = nullptr;
        }
        *link = b;
        link = &last->qnext;
        k += len;
    }
    *out = head;
    return k;
}

void TaskPool::give(Task *head, Task *tail, size_t n) {
    std::lock_guard<std::mutex> g(lock_);
    push_batch_locked(head, tail, n);
}

}  // namespace kio
