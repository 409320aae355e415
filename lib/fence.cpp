#include "fence.h"

#include <mutex>
#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace kio {

std::atomic<bool> g_asymmetric_fences{false};

void heavy_fence() {
#if defined(__linux__) && !KIO_TSAN
    if (g_asymmetric_fences.load(std::memory_order_relaxed) &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
        return;
#endif
    full_fence();
}

void init_fences() {
#if defined(__linux__) && !KIO_TSAN
    static std::once_flag once;
    std::call_once(once, [] {
        if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
            g_asymmetric_fences.store(true, std::memory_order_relaxed);
    });
#endif
}

}  // namespace kio
