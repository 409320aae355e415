#include "task.h"

#include <new>

namespace kio {

TaskPool::~TaskPool() {
    for (Slab *s = slabs_; s;) {
        Slab *next = s->next;
        s->~Slab();
        ::operator delete(s, std::align_val_t(alignof(Slab)));
        s = next;
    }
}

size_t TaskPool::take(Task **out, size_t n) {
    std::lock_guard<std::mutex> g(lock_);
    if (!free_) {
        void *mem = ::operator new(sizeof(Slab), std::align_val_t(alignof(Slab)), std::nothrow);
        if (!mem) return 0;
        Slab *s = new (mem) Slab;
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
