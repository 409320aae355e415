// Machine contexts: the assembly switcher in asm/ and the first frame of a fiber.
//
// A suspended context is just a stack pointer: everything the ABI obliges a
// callee to keep is saved on the stack itself (see the layout comments in
// asm/switch_*.S). Switching passes one pointer, the "message", from the
// context that leaves to the one that arrives; the scheduler uses it to let the
// arriving side finish what the leaving side started (switch-then-publish).
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {
// Saves the current context into *save_sp, resumes the one at load_sp and
// returns (in the resumed context) the msg passed by whoever resumed it.
void *kio_ctx_switch(void **save_sp, void *load_sp, void *msg);
// The first code of every fiber; see make_context.
void kio_ctx_entry(void);
// Abandons the calling context and starts entry(msg, arg) on a fresh frame at
// stack_top: what switching to make_context(stack_top, entry, arg) would do,
// for a caller whose own stack that is (its frames are never resumed).
// Never returns. Not declared [[noreturn]], nor is kio_ctx_resume: compilers
// never reach a noreturn function by a tail call, and a call would push the
// return-stack predictor (see kio_ctx_resume in asm/).
void kio_ctx_restart(void *stack_top, void (*entry)(void *msg, void *arg), void *arg, void *msg);
// Abandons the calling context (never resumed) for the one saved at load_sp,
// which receives msg: kio_ctx_switch without the save. Never returns.
void kio_ctx_resume(void *load_sp, void *msg);
}

namespace kio {

// Entry of a fiber: receives the message of the switch that started it and the
// argument given to make_context. Must never return.
using ContextEntry = void (*)(void *msg, void *arg);

// Builds the first saved block on a fresh stack so that switching to the
// returned stack pointer calls entry(msg, arg) with a 16-byte aligned stack.
// stack_top is the highest address of the stack (exclusive).
inline void *make_context(void *stack_top, ContextEntry entry, void *arg) {
    auto top = reinterpret_cast<uintptr_t>(stack_top) & ~uintptr_t(15);
#if defined(__x86_64__)
    // After kio_ctx_switch pops the block and returns into kio_ctx_entry, rsp
    // must be 16-aligned so that its call gives entry() the ABI alignment.
    auto *sp = reinterpret_cast<uint64_t *>(top - 64);
    uint32_t mxcsr;
    uint16_t fpucw;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    __asm__ volatile("fnstcw %0" : "=m"(fpucw));
    sp[0] = uint64_t(mxcsr) | (uint64_t(fpucw) << 32);
    sp[1] = 0;                                              // r15
    sp[2] = 0;                                              // r14
    sp[3] = reinterpret_cast<uint64_t>(entry);              // r13
    sp[4] = reinterpret_cast<uint64_t>(arg);                // r12
    sp[5] = 0;                                              // rbx
    sp[6] = 0;                                              // rbp
    sp[7] = reinterpret_cast<uint64_t>(&kio_ctx_entry);     // return address
    return sp;
#elif defined(__aarch64__)
    auto *sp = reinterpret_cast<uint64_t *>(top - 176);
    for (int i = 0; i < 22; i++) sp[i] = 0;
    uint64_t fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    sp[0] = reinterpret_cast<uint64_t>(arg);                // x19
    sp[1] = reinterpret_cast<uint64_t>(entry);              // x20
    sp[11] = reinterpret_cast<uint64_t>(&kio_ctx_entry);    // x30
    sp[20] = fpcr;
    return sp;
#else
#error "kio: unsupported architecture"
#endif
}

// Number of bytes the saved block occupies (a suspended fiber's sp points at
// it; the caller's frame starts right above).
#if defined(__x86_64__)
constexpr size_t kSavedBlockSize = 64;
#elif defined(__aarch64__)
constexpr size_t kSavedBlockSize = 176;
#endif

}  // namespace kio
