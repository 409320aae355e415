#include "stack.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <new>

#include "sanitizer.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

namespace kio {

namespace {
constexpr size_t kRegionMin = size_t(4) << 20;   // first region: 4 MiB
constexpr size_t kRegionMax = size_t(256) << 20;  // regions grow up to 256 MiB

// True if a read of the page at p fails, checked without touching it: the
// kernel copies from it into a pipe and reports EFAULT.
bool unreadable(const void *p) {
    int fds[2];
    if (pipe(fds) != 0) return true;  // cannot check: trust the caller
    bool fault = write(fds[1], p, 1) < 0 && errno == EFAULT;
    close(fds[0]);
    close(fds[1]);
    return fault;
}

// Whether madvise(MADV_GUARD_INSTALL) (Linux 6.13) really guards: a guard
// region costs no mapping of its own, unlike mprotect, which splits the
// reservation once per stack. An emulator may accept the advice and ignore
// it (qemu-user returns 0 for advice it does not know), which would leave
// every stack unguarded, so the first success is verified once.
enum : int { kGuardUnknown, kGuardWorks, kGuardIgnored };
std::atomic<int> g_madvise_guard{kGuardUnknown};

bool install_guard(char *page, size_t ps) {
    if (g_madvise_guard.load(std::memory_order_relaxed) != kGuardIgnored &&
        madvise(page, ps, MADV_GUARD_INSTALL) == 0) {
        if (g_madvise_guard.load(std::memory_order_relaxed) == kGuardWorks) return true;
        if (unreadable(page)) {
            g_madvise_guard.store(kGuardWorks, std::memory_order_relaxed);
            return true;
        }
        g_madvise_guard.store(kGuardIgnored, std::memory_order_relaxed);
    }
    return mprotect(page, ps, PROT_NONE) == 0;
}
}  // namespace

size_t StackPool::page_size() {
    static const size_t ps = size_t(sysconf(_SC_PAGESIZE));
    return ps;
}

StackPool::StackPool(size_t default_size) : default_size_(default_size) {}

StackPool::~StackPool() {
    std::free(free_default_);
    for (Region *r = regions_; r;) {
        Region *next = r->next;
        munmap(r->base, r->len);
        delete r;
        r = next;
    }
}

// Carves size usable bytes plus a guard page from the newest region, reserving
// a new region when it is full. The tail end of a full region is abandoned
// (at most one stack's worth).
bool StackPool::carve(size_t size, Stack *out) {
    const size_t ps = page_size();
    const size_t need = size + ps;
    Region *r = regions_;
    if (!r || r->len - r->used < need) {
        size_t len = r ? r->len * 2 : kRegionMin;
        if (len > kRegionMax) len = kRegionMax;
        if (len < need) len = need;
        void *mem = mmap(nullptr, len, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (mem == MAP_FAILED) return false;
        Region *nr = new (std::nothrow) Region{regions_, static_cast<char *>(mem), len, 0};
        if (!nr) {
            munmap(mem, len);
            return false;
        }
        regions_ = r = nr;
        reserved_.fetch_add(len, std::memory_order_relaxed);
    }
    char *guard = r->base + r->used;
    r->used += need;
    if (!install_guard(guard, ps)) unguarded_.fetch_add(1, std::memory_order_relaxed);
    out->base = guard + ps;
    out->size = size;
    (void)KIO_VALGRIND_STACK_REGISTER(out->base, out->size);
    created_.fetch_add(1, std::memory_order_relaxed);
    committed_.fetch_add(size, std::memory_order_relaxed);
    return true;
}

bool StackPool::alloc(size_t size, Stack *out) {
    if (size == default_size_) return alloc_batch(out, 1) == 1;
    std::lock_guard<std::mutex> g(lock_);
    FreeStack **list = &free_other_;
    for (FreeStack **p = list; *p; p = &(*p)->next) {
        if ((*p)->size == size) {
            FreeStack *f = *p;
            *p = f->next;
            out->size = size;
            out->base = reinterpret_cast<char *>(f + 1) - size;
            return true;
        }
    }
    return carve(size, out);
}

// A free stack of another size stores its list link in its own top bytes: no
// bookkeeping allocation, and the page is already touched. Default-size
// stacks go to an array (if it cannot grow, the stack is kept as if of
// another size: still reusable).
void StackPool::push_free_locked(const Stack &s) {
    if (s.size == default_size_) {
        if (nfree_default_ == cap_free_default_) {
            size_t ncap = cap_free_default_ ? cap_free_default_ * 2 : 256;
            auto **p = static_cast<void **>(std::realloc(free_default_, ncap * sizeof(void *)));
            if (p) {
                free_default_ = p;
                cap_free_default_ = ncap;
            }
        }
        if (nfree_default_ < cap_free_default_) {
            free_default_[nfree_default_++] = s.base;
            return;
        }
    }
    auto *f = reinterpret_cast<FreeStack *>(static_cast<char *>(s.top()) - sizeof(FreeStack));
    f->size = s.size;
    f->next = free_other_;
    free_other_ = f;
}

void StackPool::free(const Stack &s) {
    std::lock_guard<std::mutex> g(lock_);
    push_free_locked(s);
}

size_t StackPool::alloc_batch(Stack *out, size_t n) {
    std::lock_guard<std::mutex> g(lock_);
    size_t i = 0;
    for (; i < n && nfree_default_; i++) {
        out[i].size = default_size_;
        out[i].base = free_default_[--nfree_default_];
    }
    for (; i < n; i++)
        if (!carve(default_size_, &out[i])) break;
    return i;
}

void StackPool::free_batch(const Stack *s, size_t n) {
    std::lock_guard<std::mutex> g(lock_);
    for (size_t i = 0; i < n; i++) push_free_locked(s[i]);
}

}  // namespace kio
