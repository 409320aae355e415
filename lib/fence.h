// Asymmetric barriers for Dekker-style handshakes between a frequent side and
// a rare side.
//
// kio has two: producers (queue work, then check whether a worker sleeps)
// against sleepers (announce sleep, then check for work), and timer arming
// against sleepers (scheduler.cpp, worker.cpp). Each side needs a full barrier
// between its store and its load. The frequent side runs on every spawn
// and wakeup, so where the kernel allows (Linux membarrier, as folly and
// liburcu do) it needs only a compiler barrier, light_fence(), and the rare
// side's heavy_fence() forces a barrier on every running thread of the
// process. Elsewhere, and under ThreadSanitizer (which models neither fences
// nor membarrier), both are full barriers (a sequentially consistent
// read-modify-write under TSan).
#pragma once

#include <atomic>

#include "sanitizer.h"

namespace kio {

extern std::atomic<bool> g_asymmetric_fences;  // membarrier registered (init_fences)

inline void full_fence() {
#if KIO_TSAN
    static std::atomic<int> dummy{0};
    dummy.fetch_add(0, std::memory_order_seq_cst);
#else
    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

// The frequent side: after its store, before its load.
inline void light_fence() {
    if (g_asymmetric_fences.load(std::memory_order_relaxed)) std::atomic_signal_fence(std::memory_order_seq_cst);
    else full_fence();
}

void heavy_fence();  // the rare side: after its store, before its load
void init_fences();  // once per process, before the first runtime runs

}  // namespace kio
