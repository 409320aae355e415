#include "parker.h"

#include <cerrno>
#include <ctime>

#include "util.h"

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#else
#include <pthread.h>
#endif

namespace kio {

#if defined(__linux__)

bool futex_wait(std::atomic<uint32_t> *word, uint32_t expected, uint64_t deadline) {
    timespec ts, *tsp = nullptr;
    if (deadline) {
        // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline.
        ts.tv_sec = time_t(deadline / 1000000000u);
        ts.tv_nsec = long(deadline % 1000000000u);
        tsp = &ts;
    }
    long r = syscall(SYS_futex, reinterpret_cast<uint32_t *>(word),
                     FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expected, tsp, nullptr,
                     FUTEX_BITSET_MATCH_ANY);
    return !(r == -1 && errno == ETIMEDOUT);
}

void futex_wake_all(std::atomic<uint32_t> *word) {
    syscall(SYS_futex, reinterpret_cast<uint32_t *>(word), FUTEX_WAKE | FUTEX_PRIVATE_FLAG,
            0x7fffffff, nullptr, nullptr, 0);
}

#else

// Portable fallback: words hash onto a fixed table of mutex/condition pairs.
namespace {
struct Bucket {
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
};
Bucket g_buckets[64];
Bucket &bucket_of(const void *p) { return g_buckets[(reinterpret_cast<uintptr_t>(p) >> 4) % 64]; }
}  // namespace

bool futex_wait(std::atomic<uint32_t> *word, uint32_t expected, uint64_t deadline) {
    Bucket &b = bucket_of(word);
    bool ok = true;
    pthread_mutex_lock(&b.mu);
    if (word->load(std::memory_order_acquire) == expected) {
        if (!deadline) {
            pthread_cond_wait(&b.cv, &b.mu);
        } else {
            // pthread_cond_timedwait uses CLOCK_REALTIME: convert the remaining time.
            uint64_t now = now_ns();
            uint64_t left = deadline > now ? deadline - now : 0;
            timespec rt;
            clock_gettime(CLOCK_REALTIME, &rt);
            uint64_t abs = uint64_t(rt.tv_sec) * 1000000000u + uint64_t(rt.tv_nsec) + left;
            rt.tv_sec = time_t(abs / 1000000000u);
            rt.tv_nsec = long(abs % 1000000000u);
            ok = pthread_cond_timedwait(&b.cv, &b.mu, &rt) != ETIMEDOUT;
        }
    }
    pthread_mutex_unlock(&b.mu);
    return ok;
}

void futex_wake_all(std::atomic<uint32_t> *word) {
    Bucket &b = bucket_of(word);
    pthread_mutex_lock(&b.mu);
    pthread_cond_broadcast(&b.cv);
    pthread_mutex_unlock(&b.mu);
}

#endif

}  // namespace kio
