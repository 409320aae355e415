// Annotations that let AddressSanitizer, ThreadSanitizer and valgrind follow
// fiber switches. Each is compiled in only for its build (meson option or
// -fsanitize=...), so the ordinary build pays nothing.
#pragma once

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
#define KIO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KIO_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define KIO_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KIO_TSAN 1
#endif
#endif
#ifndef KIO_ASAN
#define KIO_ASAN 0
#endif
#ifndef KIO_TSAN
#define KIO_TSAN 0
#endif
#ifndef KIO_VALGRIND
#define KIO_VALGRIND 0
#endif

#if KIO_ASAN
extern "C" {
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                     size_t *size_old);
}
#endif
#if KIO_TSAN
extern "C" {
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
}
#endif
#if KIO_VALGRIND
#include <valgrind/valgrind.h>
#define KIO_VALGRIND_STACK_REGISTER(base, size) \
    VALGRIND_STACK_REGISTER((char *)(base), (char *)(base) + (size))
#else
#define KIO_VALGRIND_STACK_REGISTER(base, size) 0u
#endif

namespace kio {

// While alive, ThreadSanitizer ignores the reads of this thread. For reading
// the saved registers and stack of a suspended fiber (kio_dump,
// kio_backtrace), which races by design with that fiber resuming on another
// worker: the walk is documented as best effort.
struct SanIgnoreReads {
#if KIO_TSAN
    SanIgnoreReads() { AnnotateIgnoreReadsBegin(__FILE__, __LINE__); }
    ~SanIgnoreReads() { AnnotateIgnoreReadsEnd(__FILE__, __LINE__); }
#else
    SanIgnoreReads() = default;
#endif
    SanIgnoreReads(const SanIgnoreReads &) = delete;
    SanIgnoreReads &operator=(const SanIgnoreReads &) = delete;
};

// The same for ASan, on a function: a suspended fiber's saved block may be
// poisoned again (its frames' redzones) by the time the read happens.
#if KIO_ASAN
#define KIO_NO_ASAN __attribute__((no_sanitize("address")))
#else
#define KIO_NO_ASAN
#endif

// Per-context sanitizer state: one in every task and one per worker's idle
// context. Empty in ordinary builds.
struct FiberSan {
#if KIO_ASAN
    void *fake_stack = nullptr;        // ASan's fake frames of this context while it is suspended
    const void *stack_bottom = nullptr;
    size_t stack_size = 0;
#endif
#if KIO_TSAN
    void *tsan_fiber = nullptr;
    bool owned = false;  // created by kio (not a thread's own context)
#endif
};

inline void san_set_stack(FiberSan *s, const void *bottom, size_t size) {
#if KIO_ASAN
    s->stack_bottom = bottom;
    s->stack_size = size;
#endif
    (void)s, (void)bottom, (void)size;
}

// The context that runs now (a thread's own stack) becomes s.
inline void san_adopt_current(FiberSan *s) {
#if KIO_TSAN
    s->tsan_fiber = __tsan_get_current_fiber();
    s->owned = false;
#endif
    (void)s;
}

inline void san_create(FiberSan *s) {
#if KIO_TSAN
    s->tsan_fiber = __tsan_create_fiber(0);
    s->owned = true;
#endif
    (void)s;
}

// Called from another context once s can never run again. ThreadSanitizer
// fibers are not reused: one keeps the shadow call stack of the fiber that
// exited through it, and reuse would grow it without bound.
inline void san_destroy(FiberSan *s) {
#if KIO_TSAN
    if (s->owned) __tsan_destroy_fiber(s->tsan_fiber);
    s->tsan_fiber = nullptr;
    s->owned = false;
#endif
#if KIO_ASAN
    s->fake_stack = nullptr;
#endif
    (void)s;
}

// Right before the switch from `from` to `to`. dying: `from` never resumes.
inline void san_before_switch(FiberSan *from, FiberSan *to, bool dying) {
#if KIO_ASAN
    __sanitizer_start_switch_fiber(dying ? nullptr : &from->fake_stack, to->stack_bottom,
                                   to->stack_size);
#endif
#if KIO_TSAN
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
    (void)from, (void)to, (void)dying;
}

// First thing in the context `self` after it resumes (or starts). prev is the
// context that switched to it: ASan reports prev's stack bounds, which is how
// thread stacks (never allocated by kio) get known.
inline void san_after_switch(FiberSan *self, FiberSan *prev) {
#if KIO_ASAN
    const void *bottom;
    size_t size;
    __sanitizer_finish_switch_fiber(self->fake_stack, &bottom, &size);
    self->fake_stack = nullptr;
    if (prev && !prev->stack_bottom) {
        prev->stack_bottom = bottom;
        prev->stack_size = size;
    }
#endif
    (void)self, (void)prev;
}

}  // namespace kio
