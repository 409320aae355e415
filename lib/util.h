// Small shared helpers: branch hints, cache-line size, the pause instruction,
// the monotonic clock and a test-and-test-and-set spinlock.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <ctime>

#define KIO_LIKELY(x) __builtin_expect(!!(x), 1)
#define KIO_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define KIO_NOINLINE __attribute__((noinline))
#define KIO_EXPORT extern "C" __attribute__((visibility("default")))

namespace kio {

constexpr size_t kCacheLine = 64;

inline void cpu_relax() {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield" ::: "memory");
#endif
}

// CLOCK_MONOTONIC in nanoseconds (vDSO on Linux: no system call).
inline uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

// A field its owner writes and other threads read only for diagnostics
// (kio_dump, the stall watchdog): relaxed atomic accesses, which cost what
// plain ones do, so that such reads are not data races. `raw()` is for the
// context switch, which saves the stack pointer through a plain pointer.
template <class T>
class Racy {
  public:
    Racy() = default;
    Racy(T v) : v_(v) {}
    operator T() const { return v_.load(std::memory_order_relaxed); }
    Racy &operator=(T v) {
        v_.store(v, std::memory_order_relaxed);
        return *this;
    }
    T *raw() { return reinterpret_cast<T *>(&v_); }

  private:
    static_assert(sizeof(std::atomic<T>) == sizeof(T), "Racy<T> must be layout-compatible with T");
    std::atomic<T> v_{};
};

// Numbers handed out by a shared counter, taken a block at a time so that
// the owner (a worker) does one shared RMW per kBlock numbers, not per number.
// Unique, not dense or ordered across owners.
class NumberBlock {
  public:
    static constexpr uint64_t kBlock = 4096;
    uint64_t take(std::atomic<uint64_t> &source) {
        if (next_ == end_) {
            next_ = source.fetch_add(kBlock, std::memory_order_relaxed);
            end_ = next_ + kBlock;
        }
        return next_++;
    }

  private:
    uint64_t next_ = 0, end_ = 0;
};

// A spinlock for short critical sections that never park (queue links, heap
// edits). Test-and-test-and-set keeps waiters off the line while it is held.
class SpinLock {
  public:
    void lock() {
        while (locked_.exchange(true, std::memory_order_acquire)) {
            while (locked_.load(std::memory_order_relaxed)) cpu_relax();
        }
    }
    bool try_lock() { return !locked_.exchange(true, std::memory_order_acquire); }
    void unlock() { locked_.store(false, std::memory_order_release); }
    bool is_locked() const { return locked_.load(std::memory_order_relaxed); }

  private:
    std::atomic<bool> locked_{false};
};

template <class L>
class LockGuard {
  public:
    explicit LockGuard(L &l) : l_(l) { l_.lock(); }
    ~LockGuard() { l_.unlock(); }
    LockGuard(const LockGuard &) = delete;
    LockGuard &operator=(const LockGuard &) = delete;

  private:
    L &l_;
};

}  // namespace kio
