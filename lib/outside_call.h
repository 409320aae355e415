// OutsideCall: a call that may touch a runtime from outside it.
#pragma once

#include <atomic>

#include "runtime.h"
#include "task.h"
#include "worker.h"

namespace kio {

// A call from outside a runtime (a plain thread, another runtime) that may
// still touch it, or one of its tasks after that task finished: destroy waits
// for these before it frees anything. Registered with a seq_cst RMW, so that a
// caller that then sees shutting_down clear is seen by destroy's check of
// outside_calls (destroy stores shutting_down, then loads outside_calls: the
// Dekker pairing).
class OutsideCall {
  public:
    // w: the caller's worker, read at entry (before anything switches).
    OutsideCall(Runtime *rt, Worker *w) { enter(rt, w); }
    // t's handle may be stale (the caller claims it after): rt is read as
    // the spawn that reuses the slot writes it.
    explicit OutsideCall(Task *t)
        : OutsideCall(__atomic_load_n(&t->rt, __ATOMIC_RELAXED), current_worker_at_entry()) {}
    OutsideCall() = default;  // registers at enter()
    ~OutsideCall() { leave(); }
    void enter(Runtime *rt, Worker *w) {
        if (!w || w->rt != rt) {
            rt_ = rt;
            rt_->outside_calls.fetch_add(1, std::memory_order_seq_cst);
        }
    }
    void leave() {
        if (rt_) rt_->outside_calls.fetch_sub(1, std::memory_order_acq_rel);
        rt_ = nullptr;
    }
    OutsideCall(const OutsideCall &) = delete;
    OutsideCall &operator=(const OutsideCall &) = delete;

  private:
    Runtime *rt_ = nullptr;
};

}  // namespace kio
