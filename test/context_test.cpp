// Tests for the machine-context switcher: asm/switch_*.S + lib/context.h.
//
// Depends only on lib/context.h and the one asm/switch_<arch>.S file of the
// target (plus libunwind for one test, see KIO_TEST_LIBUNWIND). Runs on
// x86_64 (System V) and aarch64 (AAPCS64), natively or under qemu-user.
//
// Build (x86_64, native):
//   g++ -std=c++17 -O2 -Ilib test/context_test.cpp asm/switch_x86_64_sysv.S
//       -DKIO_TEST_LIBUNWIND=1 -lgtest -lgtest_main -lpthread -lgcc_s -lunwind
// (-lgcc_s before -lunwind keeps libgcc as the provider of _Unwind_*: libunwind
// also exports them and would otherwise take over C++ exception handling.)
// See scripts/cross_aarch64_context.sh for the aarch64 cross build.
//
// Register-level checks use small functions written in assembly at file scope
// (not inline asm inside C++ functions), so that they behave identically at
// -O0 and -O2: the compiler cannot put anything between "load the registers"
// and "switch", and cannot keep anything in the registers we overwrite.

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <unwind.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "context.h"

#ifndef KIO_TEST_LIBUNWIND
#define KIO_TEST_LIBUNWIND 0
#endif
#if KIO_TEST_LIBUNWIND
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#endif

#if defined(__APPLE__)
#define KT_SYM(name) "_" #name
#else
#define KT_SYM(name) #name
#endif
#if defined(__ELF__)
#define KT_TYPE(name) ".type " KT_SYM(name) ", %function\n"
#define KT_SIZE(name) ".size " KT_SYM(name) ", .-" KT_SYM(name) "\n"
#else
#define KT_TYPE(name)
#define KT_SIZE(name)
#endif
#define KT_BEGIN(name) \
    ".text\n.globl " KT_SYM(name) "\n" KT_TYPE(name) ".p2align 4\n" KT_SYM(name) ":\n"

// ---------------------------------------------------------------------------
// Assembly helpers
// ---------------------------------------------------------------------------

#if defined(__x86_64__)
// rbx rbp r12 r13 r14 r15
constexpr int kGprCount = 6;
constexpr int kFprCount = 0;
#elif defined(__aarch64__)
// x19..x29, then the bit patterns of d8..d15
constexpr int kGprCount = 11;
constexpr int kFprCount = 8;
#endif
constexpr int kRegCount = kGprCount + kFprCount;

extern "C" {
// Saves the caller's callee-saved registers, loads every callee-saved register
// the switcher must preserve from in[] (rbx rbp r12-r15 on x86_64; x19-x29 and
// d8-d15 on aarch64), calls kio_ctx_switch(save_sp, load_sp, msg), and once
// resumed stores the same registers into out[] before restoring the caller's
// registers and returning kio_ctx_switch's result.
void *kio_test_regs_switch(void **save_sp, void *load_sp, void *msg, const uint64_t *in,
                           uint64_t *out);
// Fiber entry that records its stack pointer at its very first instruction in
// kio_test_entry_sp, then tail-jumps to kio_test_probe_entry_body(msg, arg).
void kio_test_probe_entry(void *msg, void *arg);
void kio_test_probe_entry_body(void *msg, void *arg);
uintptr_t kio_test_entry_sp = 0;
}

#if defined(__x86_64__)
asm(KT_BEGIN(kio_test_regs_switch)
    "    pushq %rbp\n"
    "    pushq %rbx\n"
    "    pushq %r12\n"
    "    pushq %r13\n"
    "    pushq %r14\n"
    "    pushq %r15\n"
    "    pushq %r8\n"  // out; 7 pushes + return address keep rsp 16-aligned at the call
    "    movq 0(%rcx), %rbx\n"
    "    movq 8(%rcx), %rbp\n"
    "    movq 16(%rcx), %r12\n"
    "    movq 24(%rcx), %r13\n"
    "    movq 32(%rcx), %r14\n"
    "    movq 40(%rcx), %r15\n"
    "    call " KT_SYM(kio_ctx_switch) "\n"
    "    movq (%rsp), %rcx\n"
    "    movq %rbx, 0(%rcx)\n"
    "    movq %rbp, 8(%rcx)\n"
    "    movq %r12, 16(%rcx)\n"
    "    movq %r13, 24(%rcx)\n"
    "    movq %r14, 32(%rcx)\n"
    "    movq %r15, 40(%rcx)\n"
    "    addq $8, %rsp\n"
    "    popq %r15\n"
    "    popq %r14\n"
    "    popq %r13\n"
    "    popq %r12\n"
    "    popq %rbx\n"
    "    popq %rbp\n"
    "    ret\n" KT_SIZE(kio_test_regs_switch)
    KT_BEGIN(kio_test_probe_entry)
    "    movq %rsp, " KT_SYM(kio_test_entry_sp) "(%rip)\n"
    "    jmp " KT_SYM(kio_test_probe_entry_body) "\n" KT_SIZE(kio_test_probe_entry));
#elif defined(__aarch64__)
#if defined(__APPLE__)
#define KT_ADRP(reg, name) "    adrp " reg ", " KT_SYM(name) "@PAGE\n"
#define KT_LO12(name) KT_SYM(name) "@PAGEOFF"
#else
#define KT_ADRP(reg, name) "    adrp " reg ", " KT_SYM(name) "\n"
#define KT_LO12(name) ":lo12:" KT_SYM(name)
#endif
asm(KT_BEGIN(kio_test_regs_switch)
    "    sub sp, sp, #176\n"
    "    stp x19, x20, [sp, #0]\n"
    "    stp x21, x22, [sp, #16]\n"
    "    stp x23, x24, [sp, #32]\n"
    "    stp x25, x26, [sp, #48]\n"
    "    stp x27, x28, [sp, #64]\n"
    "    stp x29, x30, [sp, #80]\n"
    "    stp d8, d9, [sp, #96]\n"
    "    stp d10, d11, [sp, #112]\n"
    "    stp d12, d13, [sp, #128]\n"
    "    stp d14, d15, [sp, #144]\n"
    "    str x4, [sp, #160]\n"  // out
    "    ldp x19, x20, [x3, #0]\n"
    "    ldp x21, x22, [x3, #16]\n"
    "    ldp x23, x24, [x3, #32]\n"
    "    ldp x25, x26, [x3, #48]\n"
    "    ldp x27, x28, [x3, #64]\n"
    "    ldr x29, [x3, #80]\n"
    "    ldp d8, d9, [x3, #88]\n"
    "    ldp d10, d11, [x3, #104]\n"
    "    ldp d12, d13, [x3, #120]\n"
    "    ldp d14, d15, [x3, #136]\n"
    "    bl " KT_SYM(kio_ctx_switch) "\n"
    "    ldr x9, [sp, #160]\n"
    "    stp x19, x20, [x9, #0]\n"
    "    stp x21, x22, [x9, #16]\n"
    "    stp x23, x24, [x9, #32]\n"
    "    stp x25, x26, [x9, #48]\n"
    "    stp x27, x28, [x9, #64]\n"
    "    str x29, [x9, #80]\n"
    "    stp d8, d9, [x9, #88]\n"
    "    stp d10, d11, [x9, #104]\n"
    "    stp d12, d13, [x9, #120]\n"
    "    stp d14, d15, [x9, #136]\n"
    "    ldp x19, x20, [sp, #0]\n"
    "    ldp x21, x22, [sp, #16]\n"
    "    ldp x23, x24, [sp, #32]\n"
    "    ldp x25, x26, [sp, #48]\n"
    "    ldp x27, x28, [sp, #64]\n"
    "    ldp x29, x30, [sp, #80]\n"
    "    ldp d8, d9, [sp, #96]\n"
    "    ldp d10, d11, [sp, #112]\n"
    "    ldp d12, d13, [sp, #128]\n"
    "    ldp d14, d15, [sp, #144]\n"
    "    add sp, sp, #176\n"
    "    ret\n" KT_SIZE(kio_test_regs_switch)
    KT_BEGIN(kio_test_probe_entry)
    "    mov x9, sp\n"
    KT_ADRP("x10", kio_test_entry_sp)
    "    str x9, [x10, " KT_LO12(kio_test_entry_sp) "]\n"
    "    b " KT_SYM(kio_test_probe_entry_body) "\n" KT_SIZE(kio_test_probe_entry));
#else
#error "context_test: unsupported architecture"
#endif

namespace {

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

// A fiber stack from mmap with a PROT_NONE guard page at its low end, so an
// overflow faults instead of corrupting the heap.
class Stack {
public:
    explicit Stack(size_t size = 256 * 1024) {
        page_ = size_t(sysconf(_SC_PAGESIZE));
        size_ = (size + page_ - 1) / page_ * page_ + page_;
        void *p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) std::abort();
        base_ = static_cast<char *>(p);
        if (mprotect(base_, page_, PROT_NONE) != 0) std::abort();
    }
    ~Stack() { munmap(base_, size_); }
    Stack(const Stack &) = delete;
    Stack &operator=(const Stack &) = delete;

    void *top() const { return base_ + size_; }
    bool contains(const void *p) const {
        auto *c = static_cast<const char *>(p);
        return c >= base_ + page_ && c < base_ + size_;
    }

private:
    char *base_ = nullptr;
    size_t size_ = 0;
    size_t page_ = 0;
};

// A fiber's entry must never return: after its work it leaves for good.
[[noreturn]] void leave_forever(void *to_sp, void *msg = nullptr) {
    void *dead = nullptr;
    kio_ctx_switch(&dead, to_sp, msg);
    std::fprintf(stderr, "context_test: a finished fiber was resumed\n");
    std::abort();
}

// Keeps the compiler from turning a call into a tail call or inlining away a
// frame that the unwinding tests count.
#define KT_NO_TAIL() __asm__ volatile("" ::: "memory")

void *tag(uintptr_t v) { return reinterpret_cast<void *>(v); }

// ---------------------------------------------------------------------------
// make_context
// ---------------------------------------------------------------------------

void never_runs(void *, void *) { std::abort(); }

TEST(Context, MakeContextPlacesSavedBlockBelowAlignedTop) {
    Stack s;
    char *top = static_cast<char *>(s.top());
    EXPECT_EQ(static_cast<char *>(kio::make_context(top, never_runs, nullptr)),
              top - kio::kSavedBlockSize);
    // An unaligned top is rounded down to 16 bytes first.
    EXPECT_EQ(static_cast<char *>(kio::make_context(top - 7, never_runs, nullptr)),
              top - 16 - kio::kSavedBlockSize);
}

// ---------------------------------------------------------------------------
// Round trip: messages both ways
// ---------------------------------------------------------------------------

struct RoundTrip {
    void *main_sp = nullptr;
    void *fiber_sp = nullptr;
    void *first_msg = nullptr;
    void *arg_seen = nullptr;
    std::vector<uintptr_t> received;  // what the fiber got, in order
};

void round_trip_entry(void *msg, void *arg) {
    auto *rt = static_cast<RoundTrip *>(arg);
    rt->first_msg = msg;
    rt->arg_seen = arg;
    // Reply with msg + 1000 to every message; stop on 0.
    uintptr_t m = reinterpret_cast<uintptr_t>(msg);
    while (m != 0) {
        rt->received.push_back(m);
        m = reinterpret_cast<uintptr_t>(kio_ctx_switch(&rt->fiber_sp, rt->main_sp, tag(m + 1000)));
    }
    leave_forever(rt->main_sp, tag(0xdead));
}

TEST(Context, RoundTripPassesMessagesBothWays) {
    Stack s;
    RoundTrip rt;
    rt.fiber_sp = kio::make_context(s.top(), round_trip_entry, &rt);
    void *reply = kio_ctx_switch(&rt.main_sp, rt.fiber_sp, tag(1));
    EXPECT_EQ(rt.first_msg, tag(1));
    EXPECT_EQ(rt.arg_seen, &rt);
    EXPECT_EQ(reply, tag(1001));
    for (uintptr_t i = 2; i <= 5; i++) {
        reply = kio_ctx_switch(&rt.main_sp, rt.fiber_sp, tag(i));
        EXPECT_EQ(reply, tag(i + 1000));
    }
    reply = kio_ctx_switch(&rt.main_sp, rt.fiber_sp, tag(0));
    EXPECT_EQ(reply, tag(0xdead));
    EXPECT_EQ(rt.received, (std::vector<uintptr_t>{1, 2, 3, 4, 5}));
}

// ---------------------------------------------------------------------------
// Three contexts: fiber to fiber and back
// ---------------------------------------------------------------------------

struct Three {
    void *main_sp = nullptr;
    void *a_sp = nullptr;
    void *b_sp = nullptr;
    std::vector<std::string> log;
};

void three_a(void *msg, void *arg) {
    auto *t = static_cast<Three *>(arg);
    t->log.push_back("A got " + std::to_string(reinterpret_cast<uintptr_t>(msg)));
    void *r = kio_ctx_switch(&t->a_sp, t->b_sp, tag(12));  // A -> B (starts B)
    t->log.push_back("A got " + std::to_string(reinterpret_cast<uintptr_t>(r)));
    r = kio_ctx_switch(&t->a_sp, t->main_sp, tag(10));  // A -> main
    t->log.push_back("A got " + std::to_string(reinterpret_cast<uintptr_t>(r)));
    leave_forever(t->main_sp, tag(10));
}

void three_b(void *msg, void *arg) {
    auto *t = static_cast<Three *>(arg);
    t->log.push_back("B got " + std::to_string(reinterpret_cast<uintptr_t>(msg)));
    void *r = kio_ctx_switch(&t->b_sp, t->a_sp, tag(21));  // B -> A
    t->log.push_back("B got " + std::to_string(reinterpret_cast<uintptr_t>(r)));
    r = kio_ctx_switch(&t->b_sp, t->main_sp, tag(20));  // B -> main
    t->log.push_back("B got " + std::to_string(reinterpret_cast<uintptr_t>(r)));
    leave_forever(t->main_sp, tag(20));
}

TEST(Context, FiberSwitchesToAnotherFiberAndBack) {
    Stack sa, sb;
    Three t;
    t.a_sp = kio::make_context(sa.top(), three_a, &t);
    t.b_sp = kio::make_context(sb.top(), three_b, &t);
    auto got = [&](void *r) {
        t.log.push_back("main got " + std::to_string(reinterpret_cast<uintptr_t>(r)));
    };
    got(kio_ctx_switch(&t.main_sp, t.a_sp, tag(1)));   // main -> A -> B -> A -> main
    got(kio_ctx_switch(&t.main_sp, t.b_sp, tag(2)));   // main -> B (resumes) -> main
    got(kio_ctx_switch(&t.main_sp, t.a_sp, tag(3)));   // finish A
    got(kio_ctx_switch(&t.main_sp, t.b_sp, tag(4)));   // finish B
    EXPECT_EQ(t.log, (std::vector<std::string>{
                         "A got 1", "B got 12", "A got 21", "main got 10", "B got 2",
                         "main got 20", "A got 3", "main got 10", "B got 4", "main got 20"}));
}

// ---------------------------------------------------------------------------
// Callee-saved registers
// ---------------------------------------------------------------------------

struct RegValues {
    uint64_t v[kRegCount > 0 ? kRegCount : 1];
};

RegValues make_values(uint64_t seed) {
    RegValues r{};
    for (int i = 0; i < kRegCount; i++)
        r.v[i] = (seed * 0x9E3779B97F4A7C15ull) ^ (uint64_t(i + 1) * 0x0101010101010101ull) ^
                 (uint64_t(i) << 56);
    return r;
}

struct RegScenario {
    void *main_sp = nullptr;
    void *fiber_sp = nullptr;
    RegValues in_main1 = make_values(1), in_fiber = make_values(2), in_main2 = make_values(3);
    RegValues out_main1{}, out_fiber{}, out_main2{};
};

void reg_fiber(void *, void *arg) {
    auto *sc = static_cast<RegScenario *>(arg);
    // Loads its own values, goes back to main; main then loads yet other values
    // and resumes us: ours must be intact.
    kio_test_regs_switch(&sc->fiber_sp, sc->main_sp, nullptr, sc->in_fiber.v, sc->out_fiber.v);
    leave_forever(sc->main_sp);
}

RegScenario run_register_scenario() {
    Stack s;
    RegScenario sc;
    sc.fiber_sp = kio::make_context(s.top(), reg_fiber, &sc);
    // main(values 1) -> fiber loads values 2 -> main: must see values 1.
    kio_test_regs_switch(&sc.main_sp, sc.fiber_sp, nullptr, sc.in_main1.v, sc.out_main1.v);
    // main(values 3) -> fiber: must see values 2 -> main (plain C++): must see 3.
    kio_test_regs_switch(&sc.main_sp, sc.fiber_sp, nullptr, sc.in_main2.v, sc.out_main2.v);
    return sc;
}

TEST(Context, CalleeSavedGeneralRegistersSurviveSwitch) {
    RegScenario sc = run_register_scenario();
    for (int i = 0; i < kGprCount; i++) {
        SCOPED_TRACE("general register #" + std::to_string(i));
        EXPECT_EQ(sc.out_main1.v[i], sc.in_main1.v[i]);
        EXPECT_EQ(sc.out_fiber.v[i], sc.in_fiber.v[i]);
        EXPECT_EQ(sc.out_main2.v[i], sc.in_main2.v[i]);
    }
}

TEST(Context, CalleeSavedFloatingPointRegistersSurviveSwitch) {
    if (kFprCount == 0)
        GTEST_SKIP() << "the System V x86_64 ABI has no callee-saved vector registers";
    RegScenario sc = run_register_scenario();
    for (int i = kGprCount; i < kRegCount; i++) {
        SCOPED_TRACE("d" + std::to_string(8 + i - kGprCount));
        EXPECT_EQ(sc.out_main1.v[i], sc.in_main1.v[i]);
        EXPECT_EQ(sc.out_fiber.v[i], sc.in_fiber.v[i]);
        EXPECT_EQ(sc.out_main2.v[i], sc.in_main2.v[i]);
    }
}

// ---------------------------------------------------------------------------
// Floating-point control state (rounding mode etc.) is per context
// ---------------------------------------------------------------------------

// The control state the switcher saves: MXCSR control bits + x87 control word
// on x86_64, FPCR on aarch64. Status/exception flags are not compared.
struct FpControl {
#if defined(__x86_64__)
    uint32_t mxcsr;
    uint16_t x87cw;
    bool operator==(const FpControl &o) const { return mxcsr == o.mxcsr && x87cw == o.x87cw; }
#else
    uint64_t fpcr;
    bool operator==(const FpControl &o) const { return fpcr == o.fpcr; }
#endif
};

std::ostream &operator<<(std::ostream &os, const FpControl &c) {
    char buf[64];
#if defined(__x86_64__)
    std::snprintf(buf, sizeof buf, "{mxcsr=%#x x87cw=%#x}", unsigned(c.mxcsr), unsigned(c.x87cw));
#else
    std::snprintf(buf, sizeof buf, "{fpcr=%#llx}", (unsigned long long)c.fpcr);
#endif
    return os << buf;
}

FpControl get_fp_control() {
    FpControl c{};
#if defined(__x86_64__)
    uint32_t m;
    uint16_t cw;
    __asm__ volatile("stmxcsr %0" : "=m"(m));
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    c.mxcsr = m & 0xFFC0u;  // drop the sticky exception flags (bits 0-5)
    c.x87cw = cw;
#else
    uint64_t v;
    __asm__ volatile("mrs %0, fpcr" : "=r"(v));
    c.fpcr = v;
#endif
    return c;
}

void set_fp_control(const FpControl &c) {
#if defined(__x86_64__)
    uint32_t m;
    __asm__ volatile("stmxcsr %0" : "=m"(m));
    m = (m & 0x3Fu) | c.mxcsr;
    uint16_t cw = c.x87cw;
    __asm__ volatile("ldmxcsr %0" : : "m"(m));
    __asm__ volatile("fldcw %0" : : "m"(cw));
#else
    uint64_t v = c.fpcr;
    __asm__ volatile("msr fpcr, %0" : : "r"(v));
#endif
}

// Rounding modes, encoded per unit.
enum class Round { Nearest, Down, Up, Zero };

// A control state with the given rounding modes (x87 and SSE can differ on
// x86_64, which lets the test tell the two saved words apart) and, on the SSE
// side / FPCR, flush-to-zero set or not.
FpControl fp_control(Round sse, Round x87, bool ftz) {
    FpControl c = get_fp_control();
#if defined(__x86_64__)
    static const uint32_t rc[] = {0, 1, 2, 3};  // same encoding in MXCSR and the x87 CW
    c.mxcsr = (c.mxcsr & ~((3u << 13) | (1u << 15))) | (rc[int(sse)] << 13) | (ftz ? 1u << 15 : 0);
    c.x87cw = uint16_t((c.x87cw & ~(3u << 10)) | (rc[int(x87)] << 10));
#else
    (void)x87;
    static const uint64_t rmode[] = {0, 2, 1, 3};  // RN, RM(-inf)=2, RP(+inf)=1, RZ
    c.fpcr = (c.fpcr & ~((3ull << 22) | (1ull << 24))) | (rmode[int(sse)] << 22) |
             (ftz ? 1ull << 24 : 0);
#endif
    return c;
}

// 1/3 rounded under the current (SSE / FPCR) rounding mode: the nearest and
// downward results differ from the upward one in the last bit.
uint64_t one_third_bits() {
    volatile double one = 1.0, three = 3.0;
    double q = one / three;
    uint64_t bits;
    std::memcpy(&bits, &q, sizeof bits);
    return bits;
}

// Restores the thread's FP control state when a test ends, pass or fail.
struct FpControlGuard {
    FpControl saved = get_fp_control();
    ~FpControlGuard() { set_fp_control(saved); }
};

struct FpScenario {
    void *main_sp = nullptr;
    void *fiber_sp = nullptr;
    FpControl fiber_at_entry{}, fiber_own{}, fiber_after_main_changed{};
    uint64_t fiber_third_bits = 0;
};

void fp_fiber(void *, void *arg) {
    auto *sc = static_cast<FpScenario *>(arg);
    sc->fiber_at_entry = get_fp_control();
    sc->fiber_own = fp_control(Round::Zero, Round::Up, false);
    set_fp_control(sc->fiber_own);
    kio_ctx_switch(&sc->fiber_sp, sc->main_sp, nullptr);
    // Main changed its own mode meanwhile; ours must be what we set.
    sc->fiber_after_main_changed = get_fp_control();
    set_fp_control(fp_control(Round::Up, Round::Down, false));
    sc->fiber_third_bits = one_third_bits();
    leave_forever(sc->main_sp);
}

TEST(Context, FpControlStateIsPerContext) {
    FpControlGuard guard;
    Stack s;
    FpScenario sc;
    const FpControl main_mode1 = fp_control(Round::Up, Round::Down, true);
    set_fp_control(main_mode1);
    sc.fiber_sp = kio::make_context(s.top(), fp_fiber, &sc);
    kio_ctx_switch(&sc.main_sp, sc.fiber_sp, nullptr);
    // The fiber switched to round-toward-zero: not our business.
    EXPECT_EQ(get_fp_control(), main_mode1);

    const FpControl main_mode2 = fp_control(Round::Down, Round::Zero, false);
    set_fp_control(main_mode2);
    const uint64_t main_third_down = one_third_bits();
    kio_ctx_switch(&sc.main_sp, sc.fiber_sp, nullptr);
    EXPECT_EQ(sc.fiber_after_main_changed, sc.fiber_own);
    EXPECT_EQ(get_fp_control(), main_mode2);
    // The modes are really in force, not just stored: 1/3 rounded up (fiber)
    // is one ulp above 1/3 rounded down (main).
    EXPECT_EQ(one_third_bits(), main_third_down);
    EXPECT_EQ(sc.fiber_third_bits, main_third_down + 1);
}

TEST(Context, NewContextInheritsCreatorsFpControlState) {
    FpControlGuard guard;
    Stack s;
    FpScenario sc;
    const FpControl creator_mode = fp_control(Round::Zero, Round::Up, true);
    set_fp_control(creator_mode);
    sc.fiber_sp = kio::make_context(s.top(), fp_fiber, &sc);
    kio_ctx_switch(&sc.main_sp, sc.fiber_sp, nullptr);
    EXPECT_EQ(sc.fiber_at_entry, creator_mode);
    kio_ctx_switch(&sc.main_sp, sc.fiber_sp, nullptr);  // let it finish
}

// ---------------------------------------------------------------------------
// Stack alignment at fiber entry
// ---------------------------------------------------------------------------

// The ABI's stack pointer at a function's first instruction, modulo 16: the
// call that entered it pushed an 8-byte return address on x86_64; aarch64
// keeps sp itself 16-aligned and the return address in lr.
#if defined(__x86_64__)
constexpr uintptr_t kEntrySpMod16 = 8;
#else
constexpr uintptr_t kEntrySpMod16 = 0;
#endif

struct AlignResult {
    void *main_sp = nullptr;
    uintptr_t frame_address = 0;
    uintptr_t aligned_local_mod16 = 99;
    bool movaps_ran = false;
    void *msg = nullptr;
};

// Returns the address of an alignas(16) local modulo 16.
__attribute__((noinline)) uintptr_t aligned_local_mod16() {
    alignas(16) volatile unsigned char buf[32];
    buf[0] = 1;
#if defined(__x86_64__)
    // movaps faults on a misaligned address: the compiler trusts the ABI's
    // 16-byte stack alignment and does not realign for alignas(16).
    __asm__ volatile("xorps %%xmm0, %%xmm0\n\tmovaps %%xmm0, %0" : "=m"(buf) : : "xmm0");
#endif
    KT_NO_TAIL();
    return reinterpret_cast<uintptr_t>(&buf[0]) % 16;
}

}  // namespace

extern "C" void kio_test_probe_entry_body(void *msg, void *arg) {
    auto *r = static_cast<AlignResult *>(arg);
    r->msg = msg;
    r->frame_address = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
    // On a misaligned stack movaps would crash the whole test binary: report
    // the misalignment (checked by the test) instead.
    if (kio_test_entry_sp % 16 == kEntrySpMod16) {
        r->aligned_local_mod16 = aligned_local_mod16();
        r->movaps_ran = true;
    }
    leave_forever(r->main_sp);
}

namespace {

TEST(Context, StackIsAbiAlignedAtFiberEntry) {
    // Try every alignment of the top the caller might pass.
    for (int skew = 0; skew < 16; skew++) {
        SCOPED_TRACE("stack top skew " + std::to_string(skew));
        Stack s;
        AlignResult r;
        kio_test_entry_sp = 1;
        void *sp = kio::make_context(static_cast<char *>(s.top()) - skew, kio_test_probe_entry, &r);
        kio_ctx_switch(&r.main_sp, sp, nullptr);
        // Sampled by kio_test_probe_entry's first instruction.
        EXPECT_EQ(kio_test_entry_sp % 16, kEntrySpMod16)
            << "stack pointer at the entry's first instruction";
        // (sp == top is legal on aarch64, where nothing was pushed yet.)
        EXPECT_TRUE(s.contains(reinterpret_cast<void *>(kio_test_entry_sp - 1)));
        EXPECT_LE(kio_test_entry_sp, reinterpret_cast<uintptr_t>(s.top()) - skew);
        EXPECT_EQ(r.frame_address % 16, 0u) << "__builtin_frame_address(0) in the entry";
        EXPECT_EQ(r.aligned_local_mod16, 0u) << "alignas(16) local";
        EXPECT_TRUE(r.movaps_ran);
    }
}

// kio_ctx_restart: a fiber abandons its frames and starts an entry afresh at
// the top of its own stack (how a dying task hands its stack to the next).
struct Restart {
    Stack *stack;
    int skew;
    AlignResult *probe;
};

void restart_from_fiber(void *, void *arg) {
    auto *r = static_cast<Restart *>(arg);
    char deep[512];  // some frames in use below the top when restarting
    __asm__ volatile("" : : "r"(deep) : "memory");
    kio_ctx_restart(static_cast<char *>(r->stack->top()) - r->skew, kio_test_probe_entry, r->probe,
                    tag(77));
}

TEST(Context, RestartStartsTheEntryAbiAlignedAtTheTopWithMsgAndArg) {
    for (int skew = 0; skew < 16; skew++) {
        SCOPED_TRACE("stack top skew " + std::to_string(skew));
        Stack s;
        AlignResult probe;
        Restart r{&s, skew, &probe};
        kio_test_entry_sp = 1;
        void *sp = kio::make_context(s.top(), restart_from_fiber, &r);
        kio_ctx_switch(&probe.main_sp, sp, nullptr);
        EXPECT_EQ(probe.msg, tag(77));
        EXPECT_EQ(kio_test_entry_sp % 16, kEntrySpMod16)
            << "stack pointer at the entry's first instruction";
        EXPECT_TRUE(s.contains(reinterpret_cast<void *>(kio_test_entry_sp - 1)));
        EXPECT_LE(kio_test_entry_sp, reinterpret_cast<uintptr_t>(s.top()) - skew);
        // Started at the top, not below the abandoned frames.
        EXPECT_GE(kio_test_entry_sp + 64, reinterpret_cast<uintptr_t>(s.top()) - skew);
        EXPECT_EQ(probe.frame_address % 16, 0u) << "__builtin_frame_address(0) in the entry";
        EXPECT_EQ(probe.aligned_local_mod16, 0u) << "alignas(16) local";
        EXPECT_TRUE(probe.movaps_ran);
    }
}

// ---------------------------------------------------------------------------
// Deep recursion on a fiber stack
// ---------------------------------------------------------------------------

struct Deep {
    void *main_sp = nullptr;
    const Stack *stack = nullptr;
    int depth = 0;
    uint64_t sum = 0;
    uintptr_t lowest = ~uintptr_t(0);
    bool lowest_on_fiber_stack = false;
};

Deep *g_deep = nullptr;

__attribute__((noinline)) uint64_t recurse(int n) {
    volatile uint64_t pad[8];  // read after the call: no tail call, no loop
    pad[n & 7] = uint64_t(n);
    if (n == 0) {
        g_deep->lowest = reinterpret_cast<uintptr_t>(&pad[0]);
        g_deep->lowest_on_fiber_stack = g_deep->stack->contains(const_cast<uint64_t *>(&pad[0]));
        return 0;
    }
    uint64_t r = recurse(n - 1);
    return r + pad[n & 7];
}

void deep_entry(void *, void *arg) {
    auto *d = static_cast<Deep *>(arg);
    d->sum = recurse(d->depth);
    leave_forever(d->main_sp);
}

TEST(Context, DeepRecursionOnFiberStack) {
    Stack s(32u << 20);  // 32 MiB, touched only as deep as the recursion goes
    Deep d;
    d.stack = &s;
    d.depth = 100000;
    g_deep = &d;
    void *sp = kio::make_context(s.top(), deep_entry, &d);
    kio_ctx_switch(&d.main_sp, sp, nullptr);
    g_deep = nullptr;
    EXPECT_EQ(d.sum, uint64_t(d.depth) * (d.depth + 1) / 2);
    EXPECT_TRUE(d.lowest_on_fiber_stack);
    // It really went deep: several MiB below the top.
    EXPECT_GT(reinterpret_cast<uintptr_t>(s.top()) - d.lowest, uintptr_t(4u << 20));
}

// ---------------------------------------------------------------------------
// Many switches between two fibers
// ---------------------------------------------------------------------------

struct PingPong {
    void *main_sp = nullptr;
    void *a_sp = nullptr;
    void *b_sp = nullptr;
    uint64_t switches_total = 0;  // switches A<->B to perform
    uint64_t counter = 0;         // switches A<->B performed
    uint64_t bad_messages = 0;
};

// Each side sends the counter value as the message; the receiver checks it.
void ping_pong_loop(PingPong *p, void **my_sp, void **other_sp) {
    while (p->counter < p->switches_total) {
        uint64_t sent = ++p->counter;
        void *r = kio_ctx_switch(my_sp, *other_sp, tag(sent));
        if (r != tag(p->counter)) p->bad_messages++;
    }
    leave_forever(p->main_sp, tag(0));
}

void ping(void *msg, void *arg) {
    auto *p = static_cast<PingPong *>(arg);
    if (msg != tag(0)) p->bad_messages++;
    ping_pong_loop(p, &p->a_sp, &p->b_sp);
}

void pong(void *msg, void *arg) {
    auto *p = static_cast<PingPong *>(arg);
    if (msg != tag(p->counter)) p->bad_messages++;
    ping_pong_loop(p, &p->b_sp, &p->a_sp);
}

TEST(Context, HundredThousandSwitchesBetweenTwoFibers) {
    Stack sa, sb;
    PingPong p;
    p.switches_total = 100000;
    p.a_sp = kio::make_context(sa.top(), ping, &p);
    p.b_sp = kio::make_context(sb.top(), pong, &p);
    kio_ctx_switch(&p.main_sp, p.a_sp, tag(0));
    EXPECT_EQ(p.counter, 100000u);
    EXPECT_EQ(p.bad_messages, 0u);
}

// ---------------------------------------------------------------------------
// Unwinding from inside a fiber stops at the fiber's root
// ---------------------------------------------------------------------------

struct Frame {
    uintptr_t ip;
    uintptr_t start;  // start of the enclosing function per the unwind info
    std::string name;
};

struct UnwindResult {
    void *main_sp = nullptr;
    std::vector<Frame> frames;
    int last_step = 1234;  // unw_step's last result / _Unwind_Backtrace's
    bool done = false;
};

std::string describe(const std::vector<Frame> &frames) {
    std::string s;
    char buf[128];
    for (const Frame &f : frames) {
        std::snprintf(buf, sizeof buf, "  ip=%#llx start=%#llx %s\n", (unsigned long long)f.ip,
                      (unsigned long long)f.start, f.name.c_str());
        s += buf;
    }
    return s;
}

bool has_function(const std::vector<Frame> &frames, const void *fn) {
    for (const Frame &f : frames)
        if (f.start == reinterpret_cast<uintptr_t>(fn)) return true;
    return false;
}

constexpr size_t kMaxFrames = 64;

__attribute__((noinline)) void decoy_function() { KT_NO_TAIL(); }

// The words right above a fiber's top are whatever the allocator left there
// (mmap: often zeros, which unwinders also take as "end of stack"). Fill them
// with a plausible return address inside a real function instead, so that an
// unwinder that does not stop at kio_ctx_entry shows extra frames rather than
// stopping by luck.
void *poisoned_top(const Stack &s) {
    auto *top = static_cast<uintptr_t *>(s.top()) - 8;
    for (int i = 0; i < 8; i++) top[i] = reinterpret_cast<uintptr_t>(&decoy_function) + 1;
    return top;
}

#if KIO_TEST_LIBUNWIND
__attribute__((noinline)) void walk_with_libunwind(UnwindResult *r) {
    unw_context_t uc;
    unw_cursor_t cur;
    if (unw_getcontext(&uc) != 0 || unw_init_local(&cur, &uc) != 0) {
        r->last_step = -9999;
        return;
    }
    for (;;) {
        Frame f{};
        unw_word_t ip = 0;
        unw_get_reg(&cur, UNW_REG_IP, &ip);
        f.ip = ip;
        unw_proc_info_t pi;
        if (unw_get_proc_info(&cur, &pi) == 0) f.start = pi.start_ip;
        char name[128];
        unw_word_t off;
        if (unw_get_proc_name(&cur, name, sizeof name, &off) == 0) f.name = name;
        r->frames.push_back(f);
        r->last_step = unw_step(&cur);
        if (r->last_step <= 0 || r->frames.size() >= kMaxFrames) break;
    }
    KT_NO_TAIL();
}

__attribute__((noinline)) void libunwind_level2(UnwindResult *r) {
    walk_with_libunwind(r);
    KT_NO_TAIL();
}

extern "C" __attribute__((noinline)) void kio_test_libunwind_entry(void *, void *arg) {
    auto *r = static_cast<UnwindResult *>(arg);
    libunwind_level2(r);
    r->done = true;
    leave_forever(r->main_sp);
}
#endif

TEST(Context, LibunwindWalkFromFiberStopsAtFiberEntry) {
#if !KIO_TEST_LIBUNWIND
    GTEST_SKIP() << "built without libunwind (define KIO_TEST_LIBUNWIND=1, link -lunwind)";
#else
    Stack s;
    UnwindResult r;
    void *sp = kio::make_context(poisoned_top(s), kio_test_libunwind_entry, &r);
    kio_ctx_switch(&r.main_sp, sp, nullptr);
    ASSERT_TRUE(r.done);
    EXPECT_EQ(r.last_step, 0) << "unw_step must end the walk cleanly\n" << describe(r.frames);
    EXPECT_LT(r.frames.size(), 10u) << describe(r.frames);
    EXPECT_TRUE(has_function(r.frames, reinterpret_cast<const void *>(&kio_test_libunwind_entry)))
        << describe(r.frames);
    ASSERT_FALSE(r.frames.empty());
    EXPECT_EQ(r.frames.back().start, reinterpret_cast<uintptr_t>(&kio_ctx_entry))
        << "the last frame is the trampoline\n" << describe(r.frames);
#endif
}

_Unwind_Reason_Code backtrace_cb(struct _Unwind_Context *ctx, void *arg) {
    auto *r = static_cast<UnwindResult *>(arg);
    Frame f{};
    f.ip = _Unwind_GetIP(ctx);
    f.start = _Unwind_GetRegionStart(ctx);
    r->frames.push_back(f);
    return r->frames.size() >= kMaxFrames ? _URC_NORMAL_STOP : _URC_NO_REASON;
}

__attribute__((noinline)) void walk_with_unwind_backtrace(UnwindResult *r) {
    r->last_step = _Unwind_Backtrace(backtrace_cb, r);
    KT_NO_TAIL();
}

__attribute__((noinline)) void backtrace_level2(UnwindResult *r) {
    walk_with_unwind_backtrace(r);
    KT_NO_TAIL();
}

}  // namespace

extern "C" __attribute__((noinline)) void kio_test_backtrace_entry(void *, void *arg) {
    auto *r = static_cast<UnwindResult *>(arg);
    backtrace_level2(r);
    r->done = true;
    leave_forever(r->main_sp);
}

namespace {

TEST(Context, UnwindBacktraceFromFiberStopsAtFiberEntry) {
    Stack s;
    UnwindResult r;
    void *sp = kio::make_context(poisoned_top(s), kio_test_backtrace_entry, &r);
    kio_ctx_switch(&r.main_sp, sp, nullptr);
    ASSERT_TRUE(r.done);
    EXPECT_EQ(r.last_step, int(_URC_END_OF_STACK)) << describe(r.frames);
    EXPECT_LT(r.frames.size(), 10u) << describe(r.frames);
    EXPECT_TRUE(has_function(r.frames, reinterpret_cast<const void *>(&kio_test_backtrace_entry)))
        << describe(r.frames);
    ASSERT_FALSE(r.frames.empty());
    EXPECT_EQ(r.frames.back().start, reinterpret_cast<uintptr_t>(&kio_ctx_entry))
        << "the last frame is the trampoline\n" << describe(r.frames);
}

// ---------------------------------------------------------------------------
// Cost of a round trip (informational; the bound only catches pathologies)
// ---------------------------------------------------------------------------

struct Bench {
    void *main_sp = nullptr;
    void *fiber_sp = nullptr;
};

void bench_entry(void *msg, void *arg) {
    auto *b = static_cast<Bench *>(arg);
    while (msg != nullptr) msg = kio_ctx_switch(&b->fiber_sp, b->main_sp, msg);
    leave_forever(b->main_sp);
}

TEST(Context, RoundTripCostIsReported) {
    Stack s;
    Bench b;
    b.fiber_sp = kio::make_context(s.top(), bench_entry, &b);
    const int kIters = 1000000;
    double best_ns = 1e300;
    for (int rep = 0; rep < 5; rep++) {
        auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < kIters; i++) kio_ctx_switch(&b.main_sp, b.fiber_sp, &b);
        auto t1 = std::chrono::steady_clock::now();
        double ns = std::chrono::duration<double, std::nano>(t1 - t0).count() / kIters;
        if (ns < best_ns) best_ns = ns;
    }
    kio_ctx_switch(&b.main_sp, b.fiber_sp, nullptr);
    std::printf("[ context  ] round trip (2 switches): %.1f ns, best of 5 x %d\n", best_ns, kIters);
    RecordProperty("round_trip_ns", std::to_string(best_ns));
    EXPECT_LT(best_ns, 20000.0);
}

}  // namespace
