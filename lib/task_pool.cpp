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
    // for a live task.
    for (Slab *s = slabs_; s; s = s->next)
        for (Task &t : s->tasks) t.magic.store(Task::kMagicFree, std::memory_order_release);
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

size_t TaskPool::take(Task **out, size_t n) {
    std::lock_guard<std::mutex> g(lock_);
    if (!free_) {
        Slab *s = new_slab();
        if (!s) return 0;
        s->next = slabs_;
        slabs_ = s;
        for (size_t i = kSlabTasks; i-- > 0;) {
            s->tasks[i].qnext = free_;
            free_ = &s->tasks[i];
        }
    }
    Task *head = free_, *tail = nullptr;
    size_t k = 0;
    for (Task *t = free_; t && k < n; t = t->qnext) {
        tail = t;
        k++;
    }
    free_ = tail->qnext;
    tail->qnext = nullptr;
    *out = head;
    return k;
}

void TaskPool::give(Task *head, Task *tail, size_t n) {
    (void)n;
    std::lock_guard<std::mutex> g(lock_);
    tail->qnext = free_;
    free_ = head;
}

}  // namespace kio
