// switch: the raw cost of kio's assembly context switch (asm/switch_*.S via
// lib/context.h), two contexts on one thread switching back and forth.
//
// The main context and one fiber ping-pong N round trips; each round trip is
// two switches, and the result is reported in ns per (one-way) switch. Every
// switch carries a message that the other side checks, so a broken switch
// shows up as check=FAIL instead of a pretty number.
//
// Build (standalone):  g++ -O2 -I lib bench/kio/switch_bench.cpp asm/switch_x86_64_sysv.S
// (aarch64: asm/switch_aarch64_aapcs.S). Meson builds it as kio_switch_bench.
// Usage: kio_switch_bench [-n round_trips] [-r reps]
#include "../../lib/context.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

namespace {

uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

struct Bench {
    void *main_sp = nullptr;
    void *fiber_sp = nullptr;
    uint64_t fiber_switches = 0;  // switches the fiber made back to main
    uint64_t fiber_errors = 0;    // messages the fiber did not expect
    double fpu_check = 0;         // touched on the fiber to exercise FP state
};

// The fiber: receives k from main, answers k + 1, forever. It never returns
// (make_context's contract); main simply stops resuming it.
[[noreturn]] void fiber_entry(void *msg, void *arg) {
    auto *b = static_cast<Bench *>(arg);
    uintptr_t expect = 0;
    for (;;) {
        uintptr_t k = reinterpret_cast<uintptr_t>(msg);
        if (k != expect) b->fiber_errors++;
        expect = k + 2;
        b->fiber_switches++;
        msg = kio_ctx_switch(&b->fiber_sp, b->main_sp, reinterpret_cast<void *>(k + 1));
    }
}

struct Stack {
    void *base = nullptr;
    size_t size = 0;
    Stack(size_t sz) : size(sz + size_t(sysconf(_SC_PAGESIZE))) {
        base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                    -1, 0);
        if (base == MAP_FAILED) {
            perror("mmap");
            std::exit(2);
        }
        mprotect(base, size_t(sysconf(_SC_PAGESIZE)), PROT_NONE);  // guard page
    }
    ~Stack() { munmap(base, size); }
    void *top() const { return static_cast<char *>(base) + size; }
};

// One timed run of n round trips on a fresh fiber; returns ns per switch, or
// a negative value when the check failed.
double run_once(uint64_t n, bool *ok) {
    Stack stack(64 * 1024);
    Bench b;
    b.fiber_sp = kio::make_context(stack.top(), fiber_entry, &b);

    uint64_t errors = 0;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        uintptr_t k = uintptr_t(2 * i);
        void *r = kio_ctx_switch(&b.main_sp, b.fiber_sp, reinterpret_cast<void *>(k));
        if (reinterpret_cast<uintptr_t>(r) != k + 1) errors++;
    }
    uint64_t t1 = now_ns();

    *ok = errors == 0 && b.fiber_errors == 0 && b.fiber_switches == n;
    if (!*ok)
        std::fprintf(stderr, "switch: errors=%llu fiber_errors=%llu fiber_switches=%llu n=%llu\n",
                     (unsigned long long)errors, (unsigned long long)b.fiber_errors,
                     (unsigned long long)b.fiber_switches, (unsigned long long)n);
    return double(t1 - t0) / double(2 * n);
}

// Checks that the floating-point control state (the rounding mode: MXCSR on
// x86_64, FPCR on aarch64) is per-context: a mode set on the fiber must not
// leak into main and vice versa.
struct FpBench {
    void *main_sp = nullptr;
    void *fiber_sp = nullptr;
    uint64_t fiber_seen = 0;
};

#if defined(__x86_64__)
constexpr uint64_t kRoundMask = 0x6000;  // MXCSR RC bits
constexpr uint64_t kRoundZero = 0x6000;
uint64_t get_fpctl() {
    uint32_t v;
    __asm__ volatile("stmxcsr %0" : "=m"(v));
    return v;
}
void set_fpctl(uint64_t v) {
    uint32_t w = uint32_t(v);
    __asm__ volatile("ldmxcsr %0" : : "m"(w));
}
#elif defined(__aarch64__)
constexpr uint64_t kRoundMask = 0xC00000;  // FPCR RMode bits
constexpr uint64_t kRoundZero = 0xC00000;
uint64_t get_fpctl() {
    uint64_t v;
    __asm__ volatile("mrs %0, fpcr" : "=r"(v));
    return v;
}
void set_fpctl(uint64_t v) { __asm__ volatile("msr fpcr, %0" : : "r"(v)); }
#else
#error "switch_bench: unsupported architecture"
#endif

[[noreturn]] void fp_entry(void *, void *arg) {
    auto *b = static_cast<FpBench *>(arg);
    set_fpctl((get_fpctl() & ~kRoundMask) | kRoundZero);  // round toward zero
    kio_ctx_switch(&b->fiber_sp, b->main_sp, nullptr);
    b->fiber_seen = get_fpctl() & kRoundMask;            // still toward zero?
    for (;;) kio_ctx_switch(&b->fiber_sp, b->main_sp, nullptr);
}

bool fp_state_check() {
    Stack stack(64 * 1024);
    FpBench b;
    uint64_t before = get_fpctl();
    b.fiber_sp = kio::make_context(stack.top(), fp_entry, &b);
    kio_ctx_switch(&b.main_sp, b.fiber_sp, nullptr);
    bool ok = (get_fpctl() & kRoundMask) == (before & kRoundMask);  // main kept its mode
    kio_ctx_switch(&b.main_sp, b.fiber_sp, nullptr);
    ok = ok && b.fiber_seen == kRoundZero;
    set_fpctl(before);
    return ok;
}

// Checks the ABI stack alignment make_context promises to entry (x86_64:
// rsp % 16 == 8 on entry; aarch64: sp % 16 == 0): a 16-byte aligned local
// ends up misaligned if the promise is broken.
struct AlignBench {
    void *main_sp = nullptr;
    void *fiber_sp = nullptr;
    uintptr_t local_addr = 0;
};
[[noreturn]] __attribute__((noinline)) void align_entry(void *, void *arg) {
    auto *b = static_cast<AlignBench *>(arg);
    alignas(16) volatile char probe[16];
    probe[0] = 1;
    b->local_addr = reinterpret_cast<uintptr_t>(&probe[0]);
    for (;;) kio_ctx_switch(&b->fiber_sp, b->main_sp, nullptr);
}
bool align_check() {
    // Try several misaligned stack tops: make_context must round down.
    for (uintptr_t off = 0; off < 16; off += 8) {
        Stack stack(64 * 1024);
        AlignBench b;
        b.fiber_sp = kio::make_context(static_cast<char *>(stack.top()) - off, align_entry, &b);
        kio_ctx_switch(&b.main_sp, b.fiber_sp, nullptr);
        if (b.local_addr % 16 != 0) return false;
    }
    return true;
}

}  // namespace

int main(int argc, char **argv) {
    uint64_t n = 10000000;  // round trips per run (20M switches)
    int reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!std::strcmp(argv[i], "-n") && i + 1 < argc)
            n = std::strtoull(argv[++i], nullptr, 10);
        else if (!std::strcmp(argv[i], "-r") && i + 1 < argc)
            reps = std::atoi(argv[++i]);
        else {
            std::fprintf(stderr, "usage: %s [-n round_trips] [-r reps]\n", argv[0]);
            return 2;
        }
    }
    if (n == 0 || reps < 1) return 2;

    bool ok = fp_state_check();
    if (!ok) std::fprintf(stderr, "switch: FP rounding mode not kept per context\n");
    if (!align_check()) {
        std::fprintf(stderr, "switch: fiber entry stack not 16-byte aligned\n");
        ok = false;
    }

    bool run_ok = true;
    run_once(n / 10 + 1, &run_ok);  // warm-up (page faults, branch predictors)
    ok = ok && run_ok;
    std::vector<double> v;
    for (int r = 0; r < reps; r++) {
        v.push_back(run_once(n, &run_ok));
        ok = ok && run_ok;
    }
    std::sort(v.begin(), v.end());
    std::printf("RESULT workload=switch system=kio value=%.2f unit=ns/op check=%s\n",
                v[v.size() / 2], ok ? "ok" : "FAIL");
    return ok ? 0 : 1;
}
