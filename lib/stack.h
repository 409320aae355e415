// Fiber stacks: carved from large reservations, each with a guard page below
// it, and pooled.
//
// Why reservations: one mmap per stack plus an mprotect'ed guard costs two
// memory mappings each, and vm.max_map_count (65530 by default) then caps a
// process near 32k guarded fibers. kio reserves regions of many stacks at once
// and installs guards with MADV_GUARD_INSTALL (Linux 6.13+), which marks page
// table entries without splitting the mapping. On older kernels it falls back
// to mprotect, which splits mappings again, and counts guards it could not
// install instead of failing.
//
// Memory is never returned to the system before the pool is destroyed: stacks
// are reused, because first-touch page faults are expensive.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>

namespace kio {

struct Stack {
    void *base = nullptr;  // lowest usable address (the guard page is just below)
    size_t size = 0;       // usable bytes
    void *top() const { return static_cast<char *>(base) + size; }
};

class StackPool {
  public:
    // default_size is the usable size of ordinary stacks (page multiple).
    explicit StackPool(size_t default_size);
    ~StackPool();
    StackPool(const StackPool &) = delete;
    StackPool &operator=(const StackPool &) = delete;

    // Returns false if memory is exhausted. size is a page multiple.
    bool alloc(size_t size, Stack *out);
    void free(const Stack &s);
    // Batch hand-off between a worker cache and the shared pool (default size).
    size_t alloc_batch(Stack *out, size_t n);
    void free_batch(const Stack *s, size_t n);

    size_t default_size() const { return default_size_; }
    // Statistics.
    size_t reserved_bytes() const { return reserved_.load(std::memory_order_relaxed); }
    size_t committed_bytes() const { return committed_.load(std::memory_order_relaxed); }
    size_t stacks_created() const { return created_.load(std::memory_order_relaxed); }
    size_t guards_missing() const { return unguarded_.load(std::memory_order_relaxed); }
    static size_t page_size();

  private:
    struct Region {
        Region *next;
        char *base;
        size_t len;
        size_t used;
    };
    struct FreeStack {  // free stacks of other sizes: a list in their own top bytes
        FreeStack *next;
        size_t size;
    };
    bool carve(size_t size, Stack *out);       // with lock_ held
    void push_free_locked(const Stack &s);     // with lock_ held

    const size_t default_size_;
    mutable std::mutex lock_;
    Region *regions_ = nullptr;
    // Free default-size stacks: an array of bases, so taking a batch does not
    // touch one cold stack page per stack.
    void **free_default_ = nullptr;
    size_t nfree_default_ = 0, cap_free_default_ = 0;
    FreeStack *free_other_ = nullptr;
    std::atomic<size_t> reserved_{0}, committed_{0}, created_{0}, unguarded_{0};
};

}  // namespace kio
