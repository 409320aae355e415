// Introspection and debugging: counters, backtraces of suspended fibers, the
// runtime dump, the stack-overflow report, the dump signal and the stall
// watchdog.
//
// Backtraces use libunwind. A suspended fiber's registers are in the block
// kio_ctx_switch saved on its stack (asm/switch_*.S): they are copied into a
// ucontext, and libunwind walks from the switch's return address up to the
// fiber's root (kio_ctx_entry, whose return address is marked undefined).
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

#include "context.h"
#include "fd.h"
#include "runtime.h"
#include "sync.h"

#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__))
#define KIO_HAVE_UNWIND 1
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#include <ucontext.h>

#include <cxxabi.h>
#else
#define KIO_HAVE_UNWIND 0
#endif

namespace kio {

namespace {

// ---------------------------------------------------------------------------
// Formatting without malloc (also used from signal handlers).

struct Out {
    int fd;
    char buf[512];
    size_t n = 0;
    bool failed = false;
    explicit Out(int f) : fd(f) {}
    ~Out() { flush(); }
    void flush() {
        size_t off = 0;
        while (off < n) {
            ssize_t w = write(fd, buf + off, n - off);
            if (w < 0) {
                if (errno == EINTR) continue;
                failed = true;
                break;
            }
            off += size_t(w);
        }
        n = 0;
    }
    void put(const char *s, size_t len) {
        while (len) {
            if (n == sizeof buf) flush();
            size_t k = sizeof buf - n < len ? sizeof buf - n : len;
            memcpy(buf + n, s, k);
            n += k;
            s += k;
            len -= k;
        }
    }
    void str(const char *s) { put(s, strlen(s)); }
    __attribute__((format(printf, 2, 3))) void f(const char *fmt, ...) {
        char tmp[256];
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
        va_end(ap);
        if (k > 0) put(tmp, size_t(k) < sizeof tmp ? size_t(k) : sizeof tmp - 1);
    }
};

// ---------------------------------------------------------------------------
// Unwinding

#if KIO_HAVE_UNWIND
// A ucontext holding the registers of a fiber suspended in kio_ctx_switch.
KIO_NO_ASAN void context_of_suspended(const Task *t, unw_context_t *uc) {
    [[maybe_unused]] SanIgnoreReads racy;  // t may resume meanwhile
    memset(uc, 0, sizeof *uc);
    auto *sp = static_cast<const uint64_t *>(static_cast<void *>(t->sp));
#if defined(__x86_64__)
    // [sp] fpu, r15, r14, r13, r12, rbx, rbp, return address
    greg_t *g = uc->uc_mcontext.gregs;
    g[REG_R15] = greg_t(sp[1]);
    g[REG_R14] = greg_t(sp[2]);
    g[REG_R13] = greg_t(sp[3]);
    g[REG_R12] = greg_t(sp[4]);
    g[REG_RBX] = greg_t(sp[5]);
    g[REG_RBP] = greg_t(sp[6]);
    g[REG_RIP] = greg_t(sp[7]);
    g[REG_RSP] = greg_t(reinterpret_cast<uint64_t>(sp + 8));
#elif defined(__aarch64__)
    // [sp] x19..x28, x29, x30, d8..d15, fpcr: the block is 176 bytes
    for (int i = 0; i < 12; i++) uc->uc_mcontext.regs[19 + i] = sp[i];
    uc->uc_mcontext.pc = sp[11];  // x30: where kio_ctx_switch returns
    uc->uc_mcontext.sp = reinterpret_cast<uint64_t>(sp) + 176;
#endif
}

// Walks from cursor; calls f(ip, cursor) per frame. Returns the frame count;
// *at_end (if given) tells whether the walk reached the end of the chain (a
// root whose return address is undefined) rather than an error or max.
template <class F>
size_t walk(unw_cursor_t *c, size_t max, F f, bool *at_end = nullptr) {
    size_t n = 0;
    bool end = false;
    while (n < max) {
        unw_word_t ip = 0;
        if (unw_get_reg(c, UNW_REG_IP, &ip) < 0 || ip == 0) break;
        f(ip, c, n);
        n++;
        int r = unw_step(c);
        if (r <= 0) {
            end = r == 0;
            break;
        }
    }
    if (at_end) *at_end = end;
    return n;
}

// The return addresses of a suspended fiber, innermost first, into frames
// (at most max); 0 if it is running or not started. While the walk reads
// its stack, whoever would resume it waits (set_current in scheduler.cpp):
// a fiber that ran on under the walk would change the frames it follows,
// and a walk through garbage can fault (it did under qemu-user). Only the
// addresses are gathered here; naming them (slow) comes after.
size_t walk_suspended(Task *t, void **frames, size_t max) {
    bool free_ = false;
    while (!t->walked.compare_exchange_weak(free_, true, std::memory_order_acquire)) {  // one walker at a time
        free_ = false;
        cpu_relax();
    }
    heavy_fence();  // walked before walkable; pairs with set_current's barrier
    size_t n = 0;
    if (t->walkable.load(std::memory_order_relaxed) && t->sp) {
        unw_context_t uc;
        context_of_suspended(t, &uc);
        unw_cursor_t c;
        if (unw_init_local(&c, &uc) == 0)
            n = walk(&c, max, [&](unw_word_t ip, unw_cursor_t *, size_t i) { frames[i] = reinterpret_cast<void *>(ip); });
    }
    t->walked.store(false, std::memory_order_release);
    return n;
}

// Prints frames; a run of identical return addresses (deep recursion) is
// shown once. `demangle` is not async-signal-safe: off in signal handlers.
class FramePrinter {
  public:
    FramePrinter(Out &o, bool demangle) : o_(o), demangle_(demangle) {}
    ~FramePrinter() { flush_repeats(); }
    // adjust: added to the offset (when c looked up another address than ip)
    void frame(unw_word_t ip, unw_cursor_t *c, size_t i, unw_word_t adjust = 0) {
        if (ip == last_ && i > 0) {
            repeats_++;
            return;
        }
        flush_repeats();
        last_ = ip;
        char name[256];
        unw_word_t off = 0;
        if (unw_get_proc_name(c, name, sizeof name, &off) != 0) {
            off = 0;
            o_.f("    #%zu 0x%016" PRIxPTR " ??\n", i, uintptr_t(ip));
            return;
        }
        const char *shown = name;
        char *dm = nullptr;
        if (demangle_) {
            int st = 0;
            dm = abi::__cxa_demangle(name, nullptr, nullptr, &st);
            if (st == 0 && dm) shown = dm;
        }
        o_.f("    #%zu 0x%016" PRIxPTR " %s+0x%" PRIxPTR "\n", i, uintptr_t(ip), shown, uintptr_t(off + adjust));
        std::free(dm);
    }

  private:
    void flush_repeats() {
        if (repeats_) o_.f("    ... the frame above %zu more times\n", repeats_);
        repeats_ = 0;
    }
    Out &o_;
    bool demangle_;
    unw_word_t last_ = 0;
    size_t repeats_ = 0;
};

// Prints the backtrace of a signal context (overflow and stall reports).
void print_signal_backtrace(Out &o, void *ucontext) {
    unw_cursor_t c;
    if (unw_init_local2(&c, static_cast<unw_context_t *>(ucontext), UNW_INIT_SIGNAL_FRAME) < 0) {
        o.str("    (no backtrace)\n");
        return;
    }
    FramePrinter p(o, false);
    walk(&c, 100000, [&](unw_word_t ip, unw_cursor_t *cur, size_t i) { p.frame(ip, cur, i); });
}
#endif

// Prints return addresses captured earlier (by a signal handler), looking
// each one up from a context that holds just that address. A return address
// is looked up one byte back, inside the call that pushed it.
void print_frames(Out &o, void *const *frames, size_t n) {
#if KIO_HAVE_UNWIND
    FramePrinter p(o, true);
    for (size_t i = 0; i < n; i++) {
        unw_word_t ip = reinterpret_cast<unw_word_t>(frames[i]);
        unw_context_t uc;
        unw_getcontext(&uc);
#if defined(__x86_64__)
        uc.uc_mcontext.gregs[REG_RIP] = greg_t(i ? ip - 1 : ip);
#elif defined(__aarch64__)
        uc.uc_mcontext.pc = i ? ip - 1 : ip;
#endif
        unw_cursor_t c;
        if (unw_init_local(&c, &uc) < 0) break;
        p.frame(ip, &c, i, i ? 1 : 0);
    }
#else
    (void)o;
    (void)frames;
    (void)n;
#endif
}

// Is t running on a worker right now? (Then its stack cannot be walked.)
[[maybe_unused]] bool running(const Task *t) { return t->on_cpu.load(std::memory_order_acquire) || !t->sp; }

const char *park_name(int kind) {
    switch (kind) {
    case KIO_PARK_SLEEP: return "sleep";
    case KIO_PARK_MUTEX: return "mutex";
    case KIO_PARK_COND: return "condition";
    case KIO_PARK_AWAIT: return "await";
    case KIO_PARK_SELECT: return "select";
    case KIO_PARK_IO: return "descriptor";
    case KIO_PARK_BLOCKING: return "blocking call";
    default: return "runtime";
    }
}

void print_wait(Out &o, const Task *t, int kind) {
    o.f("parked: %s", park_name(kind));
    const void *obj = t->wait_obj;
    // The task may have woken and parked again meanwhile, on an object of
    // another kind or on none (a sleep): describe the object only if the
    // kind read before it still holds (Task and FdState memory is never
    // unmapped, so a read that races a later change is harmless).
    bool derefs = kind == KIO_PARK_MUTEX || kind == KIO_PARK_AWAIT || kind == KIO_PARK_IO;
    if ((derefs && !obj) || t->wait_kind.load(std::memory_order_acquire) != kind) kind = -1;
    switch (kind) {
    case KIO_PARK_MUTEX: {
        auto *m = static_cast<const MutexImpl *>(obj);
        uintptr_t owner = m->owner.load(std::memory_order_relaxed);
        o.f(" %p", obj);
        if (owner && !(owner & 1)) o.f(" held by task %" PRIu64, reinterpret_cast<const Task *>(owner)->id);
        else if (owner) o.str(" held by a plain thread");
        break;
    }
    case KIO_PARK_COND: o.f(" %p", obj); break;
    case KIO_PARK_AWAIT: o.f(" of task %" PRIu64, static_cast<const Task *>(obj)->id); break;
    case KIO_PARK_SELECT: o.f(" among %d tasks", int(t->wait_aux)); break;
    case KIO_PARK_IO:
        o.f(" fd %d %s", static_cast<const FdState *>(obj)->fd,
            t->wait_aux == 2 ? "read/write" : t->wait_aux == kOut ? "write" : "read");
        break;
    case KIO_PARK_BLOCKING: o.f(" fn %p", obj); break;
    default: break;
    }
    if (t->wait_until) {
        int64_t left = int64_t(t->wait_until - now_ns());
        if (kind == KIO_PARK_SLEEP) o.f(" until now%+.3f s", double(left) / 1e9);
        else o.f(" (deadline in %.3f s)", double(left) / 1e9);
    }
}

// A task's name as the dump shows it: control characters (a newline would
// break the one-line-per-task format) become '?'. The name may change under
// the read (a reused slot): the copy is terminated whatever it holds.
struct ShownName {
    char s[sizeof(Task::name)];
    explicit ShownName(const Task *t) {
        for (size_t i = 0; i < sizeof s; i++) {
            char c = t->name[i];
            s[i] = (c > 0 && c < 0x20) || c == 0x7f ? '?' : c;
        }
        s[sizeof s - 1] = 0;
    }
};

void dump_task(Out &o, Task *t, Runtime *rt) {
    o.f("task %" PRIu64 " '%s': ", t->id, ShownName(t).s);
    int kind = t->wait_kind.load(std::memory_order_acquire);
    bool on = t->on_cpu.load(std::memory_order_acquire);
    if (t->state.load(std::memory_order_acquire) == Task::kNew) {
        o.str("ready (not started)\n");
        return;
    }
    if (on) {
        for (unsigned i = 0; i < rt->nstarted.load(std::memory_order_acquire); i++)
            if (rt->workers[i].current == t) {
                o.f("running on worker %u\n", i);
                return;
            }
        o.str("running\n");
        return;
    }
    if (kind >= 0) print_wait(o, t, kind);
    else o.str("ready");
    if (t->pinned && t->home) o.f(" (pinned to worker %u)", t->home->index);
    o.str("\n");
#if KIO_HAVE_UNWIND
    void *frames[64];
    print_frames(o, frames, walk_suspended(t, frames, 64));
#endif
}

// ---------------------------------------------------------------------------
// Signals: stack overflow, dump requests, stall reports.

struct sigaction g_prev_segv, g_prev_bus;
std::atomic<Runtime *> g_signal_runtimes[16];  // runtimes with a dump signal
std::atomic<bool> g_handlers{false};
int g_stall_signal = 0;
// Dump signals: how many runtimes use each, and the disposition to restore.
constexpr int kMaxSignal = 65;
std::mutex g_dump_lock;
int g_dump_users[kMaxSignal];
struct sigaction g_dump_prev[kMaxSignal];

bool sanitizer_build() { return KIO_ASAN || KIO_TSAN; }

void chain(const struct sigaction &prev, int sig, siginfo_t *info, void *uc) {
    if (prev.sa_flags & SA_SIGINFO) {
        if (prev.sa_sigaction) prev.sa_sigaction(sig, info, uc);
        return;
    }
    if (prev.sa_handler == SIG_IGN) return;
    if (prev.sa_handler != SIG_DFL) {
        prev.sa_handler(sig);
        return;
    }
    // Default action: restore it and return, so the fault happens again and
    // the process dies the ordinary way (core dump included).
    signal(sig, SIG_DFL);
}

void on_fault(int sig, siginfo_t *info, void *uc) {
    Worker *w = tls_worker;
    Task *t = w ? static_cast<Task *>(w->current) : nullptr;
    if (t && t->stack.base) {
        auto *addr = static_cast<char *>(info->si_addr);
        auto *base = static_cast<char *>(t->stack.base);
        size_t ps = StackPool::page_size();
        if (addr >= base - ps && addr < base) {
            Out o(2);
            o.f("kio: stack overflow in task %" PRIu64 " '%s' (stack %zu bytes)\n", t->id, t->name,
                t->stack.size);
#if KIO_HAVE_UNWIND
            print_signal_backtrace(o, uc);
#endif
            o.flush();
            signal(SIGABRT, SIG_DFL);
            abort();
        }
    }
    chain(sig == SIGSEGV ? g_prev_segv : g_prev_bus, sig, info, uc);
}

}  // namespace

// The monitor: a thread per runtime that serves the dump signal and runs the
// stall watchdog. Signal handlers only write a byte to its pipe.
class Monitor {
  public:
    explicit Monitor(Runtime *rt) : rt_(rt) {
        for (int64_t &r : reported_) r = -1;
    }

    int start() {
        if (pipe(pipe_) < 0) return -errno;
        for (int fd : pipe_) {
            fcntl(fd, F_SETFD, FD_CLOEXEC);
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        }
        int e = pthread_create(&thread_, nullptr, &Monitor::main, this);
        if (e) return -e;
        started_ = true;
        return 0;
    }
    void stop() {
        stopping_.store(true, std::memory_order_release);
        poke('q');
        if (started_) pthread_join(thread_, nullptr);
        for (int fd : pipe_)
            if (fd >= 0) close(fd);
    }
    void poke(char c) {  // async-signal-safe
        if (pipe_[1] >= 0) (void)!write(pipe_[1], &c, 1);
    }

    // Called by a stalled worker's thread in the stall signal's handler:
    // records who stalled and the raw return addresses (async-signal-safe:
    // no allocation, no symbol lookup), for the monitor to print.
    void capture(Worker *w, Task *t, void *uc) {
        StallCapture &slot = caps_[w->index % 64];
        if (slot.full.load(std::memory_order_acquire)) return;  // the last one is not printed yet
        // The episode may have ended while the signal was on its way.
        uint64_t ran = now_ns() - w->switched_at.load(std::memory_order_relaxed);
        if (int64_t(ran) < int64_t(rt_->stall_ns)) return;
        StallSample &c = slot.sample;
        c.id = t->id;
        memcpy(c.name, t->name, sizeof c.name);
        c.ran_ns = ran;
        c.worker = w->index;
        c.n = 0;
        c.complete = false;
#if KIO_HAVE_UNWIND
        unw_cursor_t cur;
        bool at_end = false;
        if (unw_init_local2(&cur, static_cast<unw_context_t *>(uc), UNW_INIT_SIGNAL_FRAME) == 0)
            c.n = walk(&cur, sizeof c.frames / sizeof c.frames[0],
                       [&](unw_word_t ip, unw_cursor_t *, size_t i) { c.frames[i] = reinterpret_cast<void *>(ip); },
                       &at_end);
        c.complete = at_end && plausible(t, c.frames, c.n);
#else
        (void)uc;
        c.complete = true;  // nothing better will come
#endif
        slot.full.store(true, std::memory_order_release);
        poke('s');
    }

  private:
    // A sample of a stalled fiber, taken by its worker in the signal handler.
    struct StallSample {
        uint64_t id = 0;
        char name[sizeof(Task::name)] = {0};
        uint64_t ran_ns = 0;
        unsigned worker = 0;
        size_t n = 0;
        bool complete = false;  // the walk reached the fiber's root
        void *frames[128];
    };
    // Where a worker's signal handler leaves its sample for the monitor.
    struct StallCapture {
        std::atomic<bool> full{false};  // the sample is the monitor's until cleared
        StallSample sample;
    };

    // A signal can land where the unwinder cannot see far (inside a runtime
    // built without unwind tables, a sanitizer's for one): a walk that did
    // not reach the root is retried on the same episode this many times in
    // all, a little later each time, before the best one is printed.
    static constexpr int kSampleTries = 4;

    // Whether a walk looks whole: no frame in the zero page, and a fiber on
    // a stack of its own ends at that fiber's root, kio_ctx_entry (whose
    // call to the entry function is a few bytes in).
    static bool plausible(const Task *t, void *const *frames, size_t n) {
        if (n == 0) return false;
        for (size_t i = 0; i < n; i++)
            if (reinterpret_cast<uintptr_t>(frames[i]) < 4096) return false;
        if (!t->stack.base) return true;
        uintptr_t root = reinterpret_cast<uintptr_t>(&kio_ctx_entry);
        return reinterpret_cast<uintptr_t>(frames[n - 1]) - root < 64;
    }

    static void *main(void *arg) {
        static_cast<Monitor *>(arg)->loop();
        return nullptr;
    }

    void loop() {
        while (!stopping_.load(std::memory_order_acquire)) {
            int timeout_ms = -1;
            if (rt_->stall_ns) {
                uint64_t half = rt_->stall_ns / 2;
                timeout_ms = int(half / 1000000);
                if (timeout_ms < 1) timeout_ms = 1;
            }
            pollfd p{pipe_[0], POLLIN, 0};
            int r = ::poll(&p, 1, timeout_ms);
            if (r > 0) {
                char buf[32];
                ssize_t n = read(pipe_[0], buf, sizeof buf);
                for (ssize_t i = 0; i < n; i++) {
                    if (buf[i] == 'd') kio_dump(rt_, 2);
                    if (buf[i] == 's') print_stalls();
                }
            }
            if (rt_->stall_ns) check_stalls();
        }
    }

    pthread_t thread_of(unsigned i) const { return i == 0 ? rt_->creator : rt_->workers[i].thread; }

    // A worker whose current fiber has not switched for stall_ns: ask its
    // thread (by signal) to print where it is, once per episode.
    void check_stalls() {
        uint64_t now = now_ns();
        unsigned n = rt_->nstarted.load(std::memory_order_acquire);
        for (unsigned i = 0; i < n && i < kMaxThreads; i++) {
            Worker *w = &rt_->workers[i];
            int64_t sw = w->stall_epoch.load(std::memory_order_acquire);
            uint64_t since = w->switched_at.load(std::memory_order_relaxed);
            Task *t = w->current;
            // A held sample whose episode ended before its retry landed.
            if (holding_[i % 64] && sw != reported_[i % 64]) print_held(i % 64);
            // (since > now: the worker switched after `now` was read.)
            if (!t || !since || since > now || now - since < rt_->stall_ns) continue;
            if (reported_[i % 64] == sw) continue;  // this episode was reported
            reported_[i % 64] = sw;
            tries_[i % 64] = 1;
            pthread_kill(thread_of(i), g_stall_signal);
        }
    }

    // An incomplete sample of worker i's current episode: keep it, and ask
    // for another while tries remain and the episode goes on.
    bool resample(StallCapture &slot) {
        const StallSample &c = slot.sample;
        unsigned i = c.worker % 64;
        if (c.complete || tries_[i] >= kSampleTries) return false;
        if (rt_->workers[c.worker].stall_epoch.load(std::memory_order_acquire) != reported_[i]) return false;
        held_[i] = c;
        holding_[i] = true;
        // The slot belongs to the signal handler again from here: use the copy.
        slot.full.store(false, std::memory_order_release);
        tries_[i]++;
        pthread_kill(thread_of(held_[i].worker), g_stall_signal);
        return true;
    }

    void print_held(unsigned i) {
        print(held_[i]);
        holding_[i] = false;
    }

    void print(const StallSample &c) {
        Out o(2);
        o.f("kio: stall: task %" PRIu64 " '%s' has run for %.1f ms on worker %u without yielding\n", c.id,
            c.name, double(c.ran_ns) / 1e6, c.worker);
        print_frames(o, c.frames, c.n);
        o.flush();
    }

    void print_stalls() {
        for (StallCapture &slot : caps_) {
            if (!slot.full.load(std::memory_order_acquire)) continue;
            if (resample(slot)) continue;
            // The first whole sample wins; after the last try, the longest.
            const StallSample &c = slot.sample;
            unsigned i = c.worker % 64;
            print(holding_[i] && !c.complete && held_[i].n > c.n ? held_[i] : c);
            holding_[i] = false;
            slot.full.store(false, std::memory_order_release);
        }
    }

    Runtime *rt_;
    StallCapture caps_[64];
    StallSample held_[64];   // monitor only: an incomplete sample awaiting its retry...
    bool holding_[64] = {};  // ...if this is set
    int tries_[64] = {};     // samples asked for in the episode reported_ names
    int pipe_[2] = {-1, -1};
    pthread_t thread_{};
    bool started_ = false;
    std::atomic<bool> stopping_{false};
    int64_t reported_[64];  // the stall_epoch reported last, per worker (-1: none)
};

namespace {

void on_dump_signal(int sig) {
    int saved = errno;
    for (auto &slot : g_signal_runtimes) {
        Runtime *rt = slot.load(std::memory_order_acquire);
        if (rt && rt->dump_signal == sig && rt->monitor) rt->monitor->poke('d');
    }
    errno = saved;
}

void on_stall_signal(int, siginfo_t *, void *uc) {
    int saved = errno;
    Worker *w = tls_worker;
    Task *t = w ? static_cast<Task *>(w->current) : nullptr;
    if (t && w->rt->monitor) w->rt->monitor->capture(w, t, uc);
    errno = saved;
}

void install_fault_handlers() {
    bool expected = false;
    if (!g_handlers.compare_exchange_strong(expected, true)) return;
    if (sanitizer_build()) return;  // the sanitizers report faults themselves
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_prev_segv);
    sigaction(SIGBUS, &sa, &g_prev_bus);
}

}  // namespace

// Gives the calling thread (a worker's) an alternate signal stack so that a
// stack overflow can be reported, and records its kernel thread id in its
// Worker for debuggers (os_tid). Returns the stack to free at exit.
void *debug_thread_start() {
#if defined(__linux__)
    if (Worker *w = current_worker()) w->os_tid = long(syscall(SYS_gettid));
#endif
    install_fault_handlers();
    constexpr size_t kAlt = 64 * 1024;
    void *mem = mmap(nullptr, kAlt, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return nullptr;
    stack_t ss;
    ss.ss_sp = mem;
    ss.ss_size = kAlt;
    ss.ss_flags = 0;
    stack_t old;
    if (sigaltstack(nullptr, &old) == 0 && !(old.ss_flags & SS_DISABLE)) {
        munmap(mem, kAlt);  // the thread already has one (its owner's): keep it
        return nullptr;
    }
    if (sigaltstack(&ss, nullptr) != 0) {
        munmap(mem, kAlt);
        return nullptr;
    }
    return mem;
}

void debug_thread_stop(void *altstack) {
    if (!altstack) return;
    stack_t ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, nullptr);
    munmap(altstack, 64 * 1024);
}

// Every live runtime, for debuggers (scripts/kio-gdb.py) that cannot read a
// thread's kio::tls_worker (a remote target such as qemu-user's gdb stub);
// they match Worker::os_tid to their threads instead.
__attribute__((used)) Runtime *g_debug_runtimes = nullptr;

namespace {

std::mutex g_debug_runtimes_lock;

void debug_list_add(Runtime *rt) {
    std::lock_guard<std::mutex> g(g_debug_runtimes_lock);
    rt->debug_next = g_debug_runtimes;
    g_debug_runtimes = rt;
}

void debug_list_remove(Runtime *rt) {
    std::lock_guard<std::mutex> g(g_debug_runtimes_lock);
    for (Runtime **p = &g_debug_runtimes; *p; p = &(*p)->debug_next) {
        if (*p == rt) {
            *p = rt->debug_next;
            return;
        }
    }
}

}  // namespace

int stall_signal_number() {
#if defined(SIGRTMIN)
    return SIGRTMIN + 3;
#else
    return SIGURG;  // macOS has no real-time signals; ignored by default
#endif
}

int debug_runtime_start(Runtime *rt) {
    debug_list_add(rt);
    if (!rt->dump_signal && !rt->stall_ns) return 0;
    rt->monitor = new (std::nothrow) Monitor(rt);
    if (!rt->monitor) return -ENOMEM;
    if (int e = rt->monitor->start()) {
        delete rt->monitor;
        rt->monitor = nullptr;
        return e;
    }
    if (rt->stall_ns && !g_stall_signal) {
        g_stall_signal = stall_signal_number();
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_stall_signal;
        sa.sa_flags = SA_SIGINFO | SA_RESTART;
        sigemptyset(&sa.sa_mask);
        sigaction(g_stall_signal, &sa, nullptr);
    }
    if (rt->dump_signal) {
        for (auto &slot : g_signal_runtimes) {
            Runtime *expected = nullptr;
            if (slot.compare_exchange_strong(expected, rt)) break;
        }
        std::lock_guard<std::mutex> g(g_dump_lock);
        if (rt->dump_signal < kMaxSignal && g_dump_users[rt->dump_signal]++ == 0) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = on_dump_signal;
            sa.sa_flags = SA_RESTART;
            sigemptyset(&sa.sa_mask);
            sigaction(rt->dump_signal, &sa, &g_dump_prev[rt->dump_signal]);
        }
    }
    return 0;
}

void debug_runtime_stop(Runtime *rt) {
    debug_list_remove(rt);
    for (auto &slot : g_signal_runtimes) {
        Runtime *expected = rt;
        slot.compare_exchange_strong(expected, nullptr);
    }
    if (rt->dump_signal && rt->monitor) {
        // The last runtime using the signal gives the program its previous
        // disposition back (SIGQUIT quits again).
        std::lock_guard<std::mutex> g(g_dump_lock);
        if (rt->dump_signal < kMaxSignal && --g_dump_users[rt->dump_signal] == 0)
            sigaction(rt->dump_signal, &g_dump_prev[rt->dump_signal], nullptr);
    }
    if (rt->monitor) {
        rt->monitor->stop();
        delete rt->monitor;
        rt->monitor = nullptr;
    }
}

}  // namespace kio

using namespace kio;

KIO_EXPORT void kio_stats_init(struct kio_stats *out) noexcept {
    if (!out) return;
    memset(out, 0, sizeof *out);
    out->size = sizeof *out;
}

namespace {

// A kio_stats or kio_dump call that reads rt: destroy does not free the
// workers and tasks while one is registered, and one that registers once
// destroy has begun freeing backs off (ok() false).
class Observer {
  public:
    explicit Observer(Runtime *rt) : rt_(rt) {
        if (!rt_) return;
        rt_->observers.fetch_add(1, std::memory_order_seq_cst);
        ok_ = !rt_->freeing.load(std::memory_order_seq_cst);
    }
    ~Observer() {
        if (rt_) rt_->observers.fetch_sub(1, std::memory_order_release);
    }
    bool ok() const { return ok_; }
    Observer(const Observer &) = delete;
    Observer &operator=(const Observer &) = delete;

  private:
    Runtime *rt_;
    bool ok_ = false;
};

}  // namespace

KIO_EXPORT int kio_stats(kio_runtime *rth, struct kio_stats *out) noexcept {
    if (!out || out->size < offsetof(struct kio_stats, stack_committed) + sizeof(uint64_t))
        return -EINVAL;
    Runtime *rt = rth ? runtime_of(rth) : nullptr;
    if (!rth) {
        Worker *w = current_worker();
        rt = w ? w->rt : nullptr;
    }
    Observer observe(rt);
    if (!observe.ok()) return -EINVAL;
    struct kio_stats s;
    memset(&s, 0, sizeof s);
    s.size = out->size;
    unsigned n = rt->nstarted.load(std::memory_order_acquire);
    s.workers = n;
    int64_t live = rt->live_tasks();
    s.tasks_live = uint64_t(live > 0 ? live : 0);
    uint64_t ready = rt->inject.size();
    for (unsigned i = 0; i < n; i++) {
        Worker *w = &rt->workers[i];
        ready += w->ready.size() + uint64_t(w->spawned.size()) + w->yielded.size() + w->inbox.size() + w->migrated.size();
        s.switches += uint64_t(w->n_switches.load(std::memory_order_relaxed));
        s.steals += uint64_t(w->n_steals.load(std::memory_order_relaxed));
        for (int k = 0; k < KIO_PARK_KINDS; k++)
            s.parks[k] += uint64_t(w->n_parks[k].load(std::memory_order_relaxed));
    }
    s.tasks_ready = ready;
    s.stack_reserved = rt->stacks.reserved_bytes();
    s.stack_committed = rt->stacks.committed_bytes();
    memcpy(out, &s, out->size < sizeof s ? out->size : sizeof s);
    return 0;
}

KIO_EXPORT int kio_backtrace(kio_task *h, void **frames, size_t max) noexcept {
    if (!frames && max) return -EINVAL;
#if KIO_HAVE_UNWIND
    unw_context_t uc;
    unw_cursor_t c;
    if (!h) {
        if (!current_task()) return -EPERM;
        unw_getcontext(&uc);
        if (unw_init_local(&c, &uc) < 0) return -ENOTSUP;
        unw_step(&c);  // skip kio_backtrace itself
    } else {
        Task *t = from_handle(h);
        if (!t) return -EINVAL;
        if (t == current_task()) return kio_backtrace(nullptr, frames, max);
        if (t->state.load(std::memory_order_acquire) == Task::kNew) return 0;  // no stack yet
        if (running(t)) return -EBUSY;
        size_t n = walk_suspended(t, frames, max);
        return n || !max || !running(t) ? int(n) : -EBUSY;
    }
    size_t n = walk(&c, max, [&](unw_word_t ip, unw_cursor_t *, size_t i) {
        frames[i] = reinterpret_cast<void *>(ip);
    });
    return int(n);
#else
    (void)h;
    return -ENOTSUP;
#endif
}

KIO_EXPORT int kio_dump(kio_runtime *rth, int fd) noexcept {
    Runtime *rt = rth ? runtime_of(rth) : nullptr;
    if (!rth) {
        Worker *w = current_worker();
        rt = w ? w->rt : nullptr;
    }
    if (fd < 0) return -EINVAL;
    Observer observe(rt);
    if (!observe.ok()) return -EINVAL;
    Out o(fd);
    unsigned n = rt->nstarted.load(std::memory_order_acquire);
    int64_t live = rt->live_tasks();
    o.f("kio %s runtime %p: %u of %u workers started, %" PRId64 " live tasks\n", kio_version(),
        static_cast<void *>(rt), n, rt->nthreads, live > 0 ? live : 0);
    for (unsigned i = 0; i < n; i++) {
        Worker *w = &rt->workers[i];
        Task *cur = w->current;
        o.f("worker %u: ", i);
        if (cur) o.f("running task %" PRIu64 " '%s'", cur->id, ShownName(cur).s);
        else o.str(w->sleep_state.load(std::memory_order_relaxed) == Worker::kAwake ? "idle" : "sleeping");
        o.f(", %u ready\n", w->ready.size() + uint32_t(w->spawned.size()) + w->yielded.size() +
                               uint32_t(w->inbox.size() + w->migrated.size()));
    }
    dump_task(o, rt->main, rt);
    rt->tasks.for_each([&](Task *t) {
        if (t->magic.load(std::memory_order_acquire) != Task::kMagicLive) return;
        if (t->state.load(std::memory_order_acquire) == Task::kFinished) return;
        dump_task(o, t, rt);
    });
    o.flush();
    return o.failed ? -EIO : 0;
}
