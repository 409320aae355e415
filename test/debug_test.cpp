// Debuggability and safety (docs/debugging.md): the stack-overflow report and
// the other faults, kio_dump (directly and through the dump signal),
// kio_backtrace, kio_stats, the stall watchdog and KIO_DEBUG_MIGRATE.
//
// Crashing scenarios run in a child process: this binary re-executes itself
// with --kio-child=SCENARIO (handled in main() below, before GoogleTest), and
// the test reads the child's exit status, stdout and stderr.
//
// Functions that tests look for in backtraces are extern "C" (plain names in
// reports) and exported (the binary links with -rdynamic, so dladdr finds
// them); KT_NO_TAIL() after their last call keeps them in the call chain.
#include <dlfcn.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdarg>
#include <cstring>
#include <map>
#include <regex>
#include <string>
#include <sstream>
#include <thread>
#include <vector>

#include "kio_test_util.h"

extern char **environ;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define KT_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define KT_SANITIZER 1
#endif
#endif
#ifndef KT_SANITIZER
#define KT_SANITIZER 0
#endif
#if KT_SANITIZER
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(__SANITIZE_THREAD__)
#define KT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KT_TSAN 1
#endif
#endif
#ifndef KT_TSAN
#define KT_TSAN 0
#endif

#define KT_NO_TAIL() __asm__ volatile("" ::: "memory")

using kt::iv;
using kt::kHour;
using kt::kMs;
using kt::kSec;
using kt::vi;

namespace {

// ---------------------------------------------------------------------------
// Helpers

std::string format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

std::string ptr_text(const void *p) { return format("%p", p); }

bool contains(const std::string &hay, const std::string &needle) {
    return hay.find(needle) != std::string::npos;
}

size_t count_of(const std::string &hay, const std::string &needle) {
    size_t n = 0;
    for (size_t pos = hay.find(needle); pos != std::string::npos; pos = hay.find(needle, pos + 1)) n++;
    return n;
}

std::vector<std::string> lines_of(const std::string &text) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start < text.size()) {
        size_t nl = text.find('\n', start);
        if (nl == std::string::npos) nl = text.size();
        out.push_back(text.substr(start, nl - start));
        start = nl + 1;
    }
    return out;
}

// An unlinked temporary file.
class TmpFile {
  public:
    TmpFile() {
        char path[] = "/tmp/kio_debug_test_XXXXXX";
        fd_ = mkstemp(path);
        if (fd_ >= 0) unlink(path);
    }
    ~TmpFile() {
        if (fd_ >= 0) close(fd_);
    }
    TmpFile(const TmpFile &) = delete;
    TmpFile &operator=(const TmpFile &) = delete;
    int fd() const { return fd_; }
    std::string text() const {
        std::string s;
        char buf[4096];
        off_t off = 0;
        for (;;) {
            ssize_t n = pread(fd_, buf, sizeof buf, off);
            if (n <= 0) break;
            s.append(buf, size_t(n));
            off += n;
        }
        return s;
    }

  private:
    int fd_ = -1;
};

// Sends fd 2 to a temporary file while alive (restore() ends it early).
// Sanitizer reports keep going to the real stderr meanwhile, so that one that
// ends the process is not lost in the file.
class StderrCapture {
  public:
    StderrCapture() {
        fflush(stderr);
        saved_ = dup(2);
#if KT_SANITIZER
        __sanitizer_set_report_fd(reinterpret_cast<void *>(intptr_t(saved_)));
#endif
        dup2(file_.fd(), 2);
    }
    ~StderrCapture() { restore(); }
    void restore() {
        if (saved_ < 0) return;
        fflush(stderr);
        dup2(saved_, 2);
#if KT_SANITIZER
        __sanitizer_set_report_fd(reinterpret_cast<void *>(intptr_t(2)));
#endif
        close(saved_);
        saved_ = -1;
    }
    std::string text() const { return file_.text(); }
    // Waits (kio_sleep: parks a fiber, sleeps a plain thread) until every
    // needle is in the captured text; false after `limit`.
    bool wait_for(const std::vector<std::string> &needles, uint64_t limit) const {
        uint64_t end = kio_now() + limit;
        for (;;) {
            std::string t = text();
            bool all = true;
            for (auto &n : needles) all = all && contains(t, n);
            if (all) return true;
            if (kio_now() > end) return false;
            kio_sleep(2 * kMs);
        }
    }

  private:
    TmpFile file_;
    int saved_ = -1;
};

// The result of running this binary with --kio-child=SCENARIO.
struct Child {
    int status = -1;
    bool timed_out = false;
    std::string out, err;
    bool killed_by(int sig) const { return WIFSIGNALED(status) && WTERMSIG(status) == sig; }
    bool exited_with(int code) const { return WIFEXITED(status) && WEXITSTATUS(status) == code; }
    bool failed() const { return !exited_with(0); }
    std::string describe() const {
        std::string s;
        if (timed_out) s += "(timed out) ";
        if (WIFEXITED(status)) s += format("exit status %d", WEXITSTATUS(status));
        else if (WIFSIGNALED(status)) s += format("killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
        return s + "\n--- stdout:\n" + out + "\n--- stderr:\n" + err;
    }
};

Child run_child(const std::string &scenario) {
    Child r;
    TmpFile out, err;
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        ADD_FAILURE() << "readlink /proc/self/exe";
        return r;
    }
    exe[n] = 0;
    std::string arg = "--kio-child=" + scenario;
    // KIO_TEST_EXE_WRAPPER (words, e.g. "qemu-aarch64 -L /usr/aarch64-linux-gnu"):
    // how to run this binary when the kernel cannot (cross builds under
    // qemu-user without binfmt_misc; the emulator itself is a host program).
    std::vector<std::string> words;
    if (const char *w = getenv("KIO_TEST_EXE_WRAPPER")) {
        std::istringstream in(w);
        for (std::string word; in >> word;) words.push_back(word);
    }
    std::vector<char *> argv;
    for (std::string &word : words) argv.push_back(&word[0]);
    argv.push_back(exe);
    argv.push_back(&arg[0]);
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out.fd(), 1);
    posix_spawn_file_actions_adddup2(&fa, err.fd(), 2);
    pid_t pid = -1;
    int e = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e != 0) {
        ADD_FAILURE() << "posix_spawn: " << strerror(e);
        return r;
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60 * kt::time_slack());
    for (;;) {
        pid_t w = waitpid(pid, &r.status, WNOHANG);
        if (w == pid) break;
        if (w < 0 && errno != EINTR) {
            ADD_FAILURE() << "waitpid: " << strerror(errno);
            break;
        }
        if (std::chrono::steady_clock::now() > deadline && !r.timed_out) {
            r.timed_out = true;
            kill(pid, SIGKILL);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    r.out = out.text();
    r.err = err.text();
    return r;
}

// A task function's id, recorded by the task itself.
struct Ids {
    std::atomic<uint64_t> v[32] = {};
};

// kio_dump parsed: for each task id, its state text and its frames.
struct DumpedTask {
    std::string name, state;
    std::vector<std::string> frames;
};
struct Dump {
    std::string text;
    std::vector<std::string> header;  // lines before the first task
    std::map<uint64_t, DumpedTask> tasks;
};

Dump parse_dump(const std::string &text) {
    Dump d;
    d.text = text;
    static const std::regex task_re("^task ([0-9]+) '([^']*)': (.*)$");
    DumpedTask *cur = nullptr;
    for (const std::string &line : lines_of(text)) {
        std::smatch m;
        if (std::regex_match(line, m, task_re)) {
            uint64_t id = std::strtoull(m[1].str().c_str(), nullptr, 10);
            cur = &d.tasks[id];
            cur->name = m[2];
            cur->state = m[3];
        } else if (cur && line.rfind("    #", 0) == 0) {
            cur->frames.push_back(line);
        } else if (!cur) {
            d.header.push_back(line);
        }
    }
    return d;
}

Dump dump_of(kio_runtime *rt) {
    TmpFile f;
    EXPECT_EQ(kio_dump(rt, f.fd()), 0);
    return parse_dump(f.text());
}

// Prints a dump when the test has failed by the end of the scope.
struct DumpOnFailure {
    std::string text;
    explicit DumpOnFailure(std::string t) : text(std::move(t)) {}
    ~DumpOnFailure() {
        if (::testing::Test::HasFailure()) printf("---- the dump:\n%s----\n", text.c_str());
    }
};

bool frames_name(const std::vector<std::string> &frames, const std::string &fn) {
    for (auto &f : frames)
        if (contains(f, " " + fn + "+") || contains(f, " " + fn + "(")) return true;
    return false;
}

std::string joined(const std::vector<std::string> &v) {
    std::string s;
    for (auto &x : v) s += x + "\n";
    return s;
}

// Symbol names of return addresses (dladdr; the address - 1 is looked up, so
// a call at the very end of a function is attributed to it).
std::vector<std::string> symbolize(void **frames, int n) {
    std::vector<std::string> out;
    for (int i = 0; i < n; i++) {
        Dl_info info;
        const char *name = "?";
        auto pc = reinterpret_cast<uintptr_t>(frames[i]);
        if (pc && dladdr(reinterpret_cast<void *>(pc - 1), &info) && info.dli_sname) name = info.dli_sname;
        out.push_back(name);
    }
    return out;
}

bool has_symbol(const std::vector<std::string> &syms, const char *name) {
    return std::find(syms.begin(), syms.end(), std::string(name)) != syms.end();
}

// Is the task suspended (kio_backtrace can walk it)?
bool suspended(kio_task *t) {
    void *frames[4];
    return kio_backtrace(t, frames, 4) > 0;
}

// Parks the calling fiber until every task has recorded its id and is
// suspended; false after 10 s (times the slack).
bool wait_all_parked(const std::vector<kio_task *> &tasks, const std::vector<std::atomic<uint64_t> *> &ids) {
    uint64_t end = kio_now() + kt::prompt(10 * kSec);
    for (;;) {
        bool all = true;
        for (auto *id : ids) all = all && id->load() != 0;
        for (kio_task *t : tasks) all = all && suspended(t);
        if (all) return true;
        if (kio_now() > end) return false;
        kio_sleep(kMs);
    }
}

kio_spawn_options named(const char *name, bool pinned = false) {
    kio_spawn_options o;
    kio_spawn_options_init(&o);
    o.name = name;
    o.pinned = pinned ? 1 : 0;
    return o;
}

std::atomic<int> g_recursion_limit{1 << 30};  // never reached: stacks are far smaller
int *volatile g_null = nullptr;               // the compiler cannot see it is NULL
sigjmp_buf g_jmp;

// A plain NULL store. UndefinedBehaviorSanitizer's null check is off here:
// with halt_on_error it would end the process before the fault this test is
// about (AddressSanitizer still reports the SEGV).
#if defined(__clang__)
__attribute__((noinline, no_sanitize("undefined")))
#else
__attribute__((noinline, no_sanitize_undefined))
#endif
void store_through_null() {
    *g_null = 1;
}

void busy_for(uint64_t ns) {
    auto end = std::chrono::steady_clock::now() + std::chrono::nanoseconds(ns);
    while (std::chrono::steady_clock::now() < end) {
    }
}

}  // namespace

// ---------------------------------------------------------------------------
// Functions that backtraces must name (see the top comment).

extern "C" {

__attribute__((noinline)) int kt_recurse_forever(int depth) {
    volatile char frame[512];
    for (size_t i = 0; i < sizeof frame; i += 64) frame[i] = char(depth);
    if (depth >= g_recursion_limit.load(std::memory_order_relaxed)) return 0;
    return kt_recurse_forever(depth + 1) + frame[depth % sizeof frame];
}

__attribute__((noinline)) void kt_dump_wait_sleep(std::atomic<uint64_t> *id) {
    id->store(kio_task_id());
    kio_sleep(kHour);
    KT_NO_TAIL();
}

__attribute__((noinline)) void kt_dump_wait_mutex(std::atomic<uint64_t> *id, kio_mutex *m) {
    id->store(kio_task_id());
    if (kio_mutex_lock(m) == 0) kio_mutex_unlock(m);
    KT_NO_TAIL();
}

__attribute__((noinline)) void kt_dump_wait_cond(std::atomic<uint64_t> *id, kio_cond *c, kio_mutex *m,
                                                 uint64_t deadline) {
    kio_mutex_lock(m);
    id->store(kio_task_id());
    if (deadline) kio_cond_wait_until(c, m, deadline);
    else kio_cond_wait(c, m);
    kio_mutex_unlock(m);
    KT_NO_TAIL();
}

__attribute__((noinline)) void kt_dump_wait_read(std::atomic<uint64_t> *id, int fd) {
    char c;
    id->store(kio_task_id());
    kio_read(fd, &c, 1);
    KT_NO_TAIL();
}

__attribute__((noinline)) void kt_dump_wait_write(std::atomic<uint64_t> *id, int fd) {
    char c = 'x';
    id->store(kio_task_id());
    kio_write(fd, &c, 1);
    KT_NO_TAIL();
}

__attribute__((noinline)) void kt_dump_wait_await(std::atomic<uint64_t> *id, kio_task *t) {
    id->store(kio_task_id());
    kio_await(t, nullptr);
    KT_NO_TAIL();
}

__attribute__((noinline)) void kt_dump_wait_select(std::atomic<uint64_t> *id, kio_task *const *ts, size_t n) {
    size_t index;
    id->store(kio_task_id());
    kio_select(ts, n, &index);
    KT_NO_TAIL();
}

// Blocks its (blocking pool) thread until a byte arrives on the descriptor.
__attribute__((noinline)) void *kt_blocking_fn(void *arg) {
    char c;
    ssize_t r = read(int(intptr_t(arg)), &c, 1);
    return iv(r);
}

__attribute__((noinline)) void kt_dump_wait_blocking(std::atomic<uint64_t> *id, int fd) {
    id->store(kio_task_id());
    kio_blocking(kt_blocking_fn, iv(fd), nullptr);
    KT_NO_TAIL();
}

__attribute__((noinline)) void kt_yield_loop(std::atomic<uint64_t> *id, std::atomic<int> *stop) {
    id->store(kio_task_id());
    while (!stop->load()) kio_yield();
    KT_NO_TAIL();
}

__attribute__((noinline)) void kt_spin_until(std::atomic<uint64_t> *id, std::atomic<int> *running,
                                             std::atomic<int> *stop) {
    id->store(kio_task_id());
    running->store(1);
    while (!stop->load()) {
    }
    KT_NO_TAIL();
}

__attribute__((noinline)) void kt_backtrace_self(void **frames, int *n) {
    *n = kio_backtrace(nullptr, frames, 64);
    KT_NO_TAIL();
}

__attribute__((noinline)) void kt_stall_busy_loop(uint64_t ns) {
    busy_for(ns);
    KT_NO_TAIL();
}

}  // extern "C"

// ---------------------------------------------------------------------------
// Child scenarios (this binary run with --kio-child=NAME). Each returns the
// process exit code, or crashes as the scenario intends.

namespace {

kio_runtime *child_runtime(unsigned threads, size_t stack = 0) {
    kio_options o;
    kio_options_init(&o);
    o.threads = threads;
    o.stack_size = stack;
    kio_runtime *rt = nullptr;
    if (kio_runtime_create(&o, &rt) != 0) std::_Exit(90);
    return rt;
}

void *overflow_task(void *) {
    printf("id=%" PRIu64 "\n", kio_task_id());
    fflush(stdout);
    return iv(kt_recurse_forever(0));
}

void *null_task(void *) {
    printf("id=%" PRIu64 "\n", kio_task_id());
    fflush(stdout);
    store_through_null();
    return nullptr;
}

kio_task *child_spawn(kio_fn fn, const char *name, size_t stack = 0) {
    kio_spawn_options so = named(name);
    so.stack_size = stack;
    kio_task *t = nullptr;
    if (kio_spawn_ex(nullptr, fn, nullptr, &so, &t) != 0) std::_Exit(91);
    return t;
}

void exit42_handler(int, siginfo_t *info, void *) {
    _exit(info->si_addr == static_cast<void *>(g_null) ? 42 : 43);
}

void longjmp_handler(int, siginfo_t *, void *) { siglongjmp(g_jmp, 1); }

void install(void (*h)(int, siginfo_t *, void *)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = h;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, nullptr);
}

int child_main(const std::string &s) {
    if (s == "overflow-default" || s == "overflow-own-stack" || s == "overflow-with-handler") {
        if (s == "overflow-with-handler") install(exit42_handler);
        child_runtime(1);
        kio_task *t = child_spawn(overflow_task, "deep-diver", s == "overflow-own-stack" ? 256 * 1024 : 0);
        kio_await(t, nullptr);
        return 0;  // not reached if the guard page works
    }
    if (s == "overflow-worker-1") {
        // The overflow happens on worker 1's thread (its own signal stack).
        child_runtime(2);
        static std::atomic<int> started{0};
        kio_task *t = child_spawn(
            [](void *) -> void * {
                printf("id=%" PRIu64 "\n", kio_task_id());
                fflush(stdout);
                started.store(1);
                return iv(kt_recurse_forever(0));
            },
            "far-diver");
        (void)t;
        // Never park: the task can only run on the other worker.
        while (true) {
        }
    }
    if (s == "null-in-fiber") {
        child_runtime(1);
        kio_await(child_spawn(null_task, "null-deref"), nullptr);
        return 0;
    }
    if (s == "null-plain-thread") {
        kio_runtime *rt = child_runtime(2);
        (void)rt;
        std::thread th([] { store_through_null(); });
        th.join();
        return 0;
    }
    if (s == "own-handler-exit") {
        install(exit42_handler);  // before the runtime: kio chains to it
        child_runtime(1);
        kio_await(child_spawn(null_task, "null-deref"), nullptr);
        return 0;
    }
    if (s == "own-handler-longjmp") {
        install(longjmp_handler);
        kio_runtime *rt = child_runtime(1);
        for (int round = 0; round < 2; round++) {  // the handler stays in place
            kio_task *t = child_spawn(
                [](void *) -> void * {
                    if (sigsetjmp(g_jmp, 1) == 0) {
                        store_through_null();
                        return iv(1);
                    }
                    return iv(7);  // back from the handler
                },
                "recovering");
            void *res = nullptr;
            if (kio_await(t, &res) != 0) return 92;
            printf("recovered %d\n", int(vi(res)));
        }
        fflush(stdout);
        return kio_runtime_destroy(rt) == 0 ? 0 : 93;
    }
    fprintf(stderr, "unknown child scenario %s\n", s.c_str());
    return 99;
}

// The id the child printed ("id=N"), or 0.
[[maybe_unused]] uint64_t child_task_id(const Child &c) {
    std::smatch m;
    static const std::regex re("id=([0-9]+)");
    if (!std::regex_search(c.out, m, re)) return 0;
    return std::strtoull(m[1].str().c_str(), nullptr, 10);
}

}  // namespace

// ---------------------------------------------------------------------------
// Stack overflow and other faults

namespace {

// An overflow child: kio's report (non-sanitizer builds) or the sanitizer's.
void expect_overflow_report(const Child &c, const char *name, size_t stack) {
#if KT_SANITIZER
    (void)name, (void)stack;
    // The sanitizer's SIGSEGV handler reports the fault (kio installs none).
    EXPECT_TRUE(c.failed()) << c.describe();
    EXPECT_TRUE(std::regex_search(c.err, std::regex("Sanitizer: (stack-overflow|SEGV)"))) << c.describe();
    EXPECT_FALSE(contains(c.err, "kio: stack overflow")) << c.describe();
#else
    EXPECT_TRUE(c.killed_by(SIGABRT)) << c.describe();
    uint64_t id = child_task_id(c);
    ASSERT_GT(id, 1u) << c.describe();
    std::string line = format("kio: stack overflow in task %" PRIu64 " '%s' (stack %zu bytes)\n", id, name, stack);
    EXPECT_TRUE(contains(c.err, line)) << "expected: " << line << c.describe();
    // Then the faulting fiber's backtrace, innermost first, naming the
    // recursing function; the recursion is folded into one line.
    std::string after = c.err.substr(std::min(c.err.size(), c.err.find(line) + line.size()));
    EXPECT_TRUE(std::regex_search(after, std::regex("^    #0 0x[0-9a-f]+ ")) ) << c.describe();
    EXPECT_TRUE(contains(after, " kt_recurse_forever+0x")) << c.describe();
    EXPECT_TRUE(std::regex_search(after, std::regex("\\.\\.\\. the frame above [0-9]+ more times"))) << c.describe();
    EXPECT_LT(lines_of(after).size(), 200u) << "the report should fold the recursion";
#endif
}

}  // namespace

TEST(DebugOverflow, ReportNamesTaskIdNameStackSizeAndRecursingFunction) {
    expect_overflow_report(run_child("overflow-default"), "deep-diver", 64 * 1024);
}

TEST(DebugOverflow, ReportGivesTheTasksOwnStackSize) {
    expect_overflow_report(run_child("overflow-own-stack"), "deep-diver", 256 * 1024);
}

TEST(DebugOverflow, ReportedOnAWorkerThreadOtherThanTheCreator) {
    expect_overflow_report(run_child("overflow-worker-1"), "far-diver", 64 * 1024);
}

TEST(DebugOverflow, ReportedEvenWithAProgramSegvHandler) {
    // An overflow is kio's to report; the program's handler gets other faults.
    Child c = run_child("overflow-with-handler");
#if KT_SANITIZER
    // No kio handler: the program's own handler sees the overflow.
    EXPECT_TRUE(c.exited_with(43) || c.exited_with(42) || c.failed()) << c.describe();
#else
    expect_overflow_report(c, "deep-diver", 64 * 1024);
#endif
}

TEST(DebugFaults, NullDereferenceInAFiberIsAnOrdinarySegv) {
    Child c = run_child("null-in-fiber");
    EXPECT_FALSE(contains(c.err, "kio: stack overflow")) << c.describe();
#if KT_SANITIZER
    EXPECT_TRUE(c.failed()) << c.describe();
    EXPECT_TRUE(contains(c.err, "Sanitizer: SEGV")) << c.describe();
#else
    EXPECT_TRUE(c.killed_by(SIGSEGV)) << c.describe();
#endif
}

TEST(DebugFaults, NullDereferenceOnAPlainThreadIsAnOrdinarySegv) {
    Child c = run_child("null-plain-thread");
    EXPECT_FALSE(contains(c.err, "kio: stack overflow")) << c.describe();
#if KT_SANITIZER
    EXPECT_TRUE(c.failed()) << c.describe();
    EXPECT_TRUE(contains(c.err, "Sanitizer: SEGV")) << c.describe();
#else
    EXPECT_TRUE(c.killed_by(SIGSEGV)) << c.describe();
#endif
}

TEST(DebugFaults, ProgramSegvHandlerStillGetsOtherFaults) {
    // Installed before the runtime; it _exits 42 when si_addr is the NULL the
    // fiber dereferenced (43 for any other address).
    Child c = run_child("own-handler-exit");
    EXPECT_TRUE(c.exited_with(42)) << c.describe();
    EXPECT_FALSE(contains(c.err, "kio: stack overflow")) << c.describe();
}

TEST(DebugFaults, ProgramSegvHandlerCanRecoverWithSiglongjmp) {
    Child c = run_child("own-handler-longjmp");
    EXPECT_TRUE(c.exited_with(0)) << c.describe();
    EXPECT_EQ(c.out, "recovered 7\nrecovered 7\n") << c.describe();
}

// ---------------------------------------------------------------------------
// kio_dump

namespace {

// A runtime (one worker: the dump is deterministic) with a task in each kind
// of wait, a ready task, a task that has not started and the running main
// fiber.
struct WaitZoo {
    kio_mutex m = KIO_MUTEX_INIT;       // held by 'holder', wanted by 'locker'
    kio_mutex cm = KIO_MUTEX_INIT;      // the condition's mutex
    kio_cond c = KIO_COND_INIT;
    int rpipe[2] = {-1, -1};            // 'reader' reads the empty end
    int wpipe[2] = {-1, -1};            // 'writer' writes to a full pipe
    int bpipe[2] = {-1, -1};            // the blocking call reads it
    std::atomic<int> stop{0};
    std::atomic<int> holder_has_lock{0};
    std::atomic<uint64_t> sleeper_id{0}, holder_id{0}, locker_id{0}, waiter_id{0}, waiter_dl_id{0},
        reader_id{0}, writer_id{0}, selecter_id{0}, blocker_id{0}, yielder_id{0};
    kio_task *sleeper = nullptr, *holder = nullptr, *locker = nullptr, *waiter = nullptr,
             *waiter_dl = nullptr, *reader = nullptr, *writer = nullptr, *selecter = nullptr,
             *blocker = nullptr, *yielder = nullptr, *fresh = nullptr;
    kio_task *select_set[2] = {nullptr, nullptr};

    bool start() {
        if (pipe(rpipe) || pipe(wpipe) || pipe(bpipe)) return false;
        // Fill the write pipe, so that a write parks.
        fcntl(wpipe[1], F_SETFL, fcntl(wpipe[1], F_GETFL) | O_NONBLOCK);
        char buf[4096] = {};
        while (write(wpipe[1], buf, sizeof buf) > 0) {
        }
        kio_spawn_options o;
        o = named("sleeper");
        sleeper = kt::spawn_ex(&o, [this] { kt_dump_wait_sleep(&sleeper_id); return intptr_t(0); });
        o = named("reader");
        reader = kt::spawn_ex(&o, [this] { kt_dump_wait_read(&reader_id, rpipe[0]); return intptr_t(0); });
        o = named("writer");
        writer = kt::spawn_ex(&o, [this] { kt_dump_wait_write(&writer_id, wpipe[1]); return intptr_t(0); });
        select_set[0] = sleeper;
        select_set[1] = reader;
        o = named("selecter");
        selecter = kt::spawn_ex(&o, [this] { kt_dump_wait_select(&selecter_id, select_set, 2); return intptr_t(0); });
        o = named("holder");
        holder = kt::spawn_ex(&o, [this] {
            kio_mutex_lock(&m);
            holder_has_lock = 1;
            kt_dump_wait_await(&holder_id, selecter);
            kio_mutex_unlock(&m);
            return intptr_t(0);
        });
        if (!kt::wait_flag(holder_has_lock, 1)) return false;
        o = named("locker");
        locker = kt::spawn_ex(&o, [this] { kt_dump_wait_mutex(&locker_id, &m); return intptr_t(0); });
        o = named("waiter");
        waiter = kt::spawn_ex(&o, [this] { kt_dump_wait_cond(&waiter_id, &c, &cm, 0); return intptr_t(0); });
        o = named("waiter-dl");
        waiter_dl = kt::spawn_ex(&o, [this] {
            kt_dump_wait_cond(&waiter_dl_id, &c, &cm, kio_now() + kHour);
            return intptr_t(0);
        });
        o = named("blocker");
        blocker = kt::spawn_ex(&o, [this] { kt_dump_wait_blocking(&blocker_id, bpipe[0]); return intptr_t(0); });
        o = named("yielder");
        yielder = kt::spawn_ex(&o, [this] { kt_yield_loop(&yielder_id, &stop); return intptr_t(0); });
        if (!wait_all_parked({sleeper, reader, writer, selecter, holder, locker, waiter, waiter_dl, blocker, yielder},
                             {&sleeper_id, &reader_id, &writer_id, &selecter_id, &holder_id, &locker_id,
                              &waiter_id, &waiter_dl_id, &blocker_id, &yielder_id}))
            return false;
        // Queued, not started: main does not park before the dump.
        o = named("fresh");
        fresh = kt::spawn_ex(&o, [] { return intptr_t(0); });
        return true;
    }

    void finish() {
        stop = 1;
        // The blocking call returns; await (not cancel) its task, so that fn
        // is done with the descriptor before it is closed.
        if (bpipe[1] >= 0) (void)!write(bpipe[1], "x", 1);
        if (blocker) kio_await(blocker, nullptr);
        for (kio_task *t : {sleeper, holder, locker, waiter, waiter_dl, reader, writer, selecter, fresh})
            if (t) kio_cancel(t, nullptr);
        if (yielder) kio_await(yielder, nullptr);
        for (int *p : {rpipe, wpipe, bpipe})
            for (int i = 0; i < 2; i++)
                if (p[i] >= 0) kio_close(p[i]);
    }
};

}  // namespace

TEST(DebugDump, EveryTaskWithIdNameStateAndBacktrace) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    WaitZoo z;
    ASSERT_TRUE(z.start());
    Dump d = dump_of(rt.get());
    // (No SCOPED_TRACE: gtest keeps it per thread, and fibers may move.)
    DumpOnFailure show(d.text);

    // Header: the runtime, then its worker.
    ASSERT_GE(d.header.size(), 2u);
    EXPECT_EQ(d.header[0], format("kio %s runtime %p: 1 of 1 workers started, 11 live tasks", kio_version(),
                                  static_cast<void *>(rt.get())));
    EXPECT_EQ(d.header[1], "worker 0: running task 1 'main', 2 ready");  // yielder + fresh

    ASSERT_EQ(d.tasks.size(), 12u);
    auto state = [&](uint64_t id) { return d.tasks.count(id) ? d.tasks[id].state : "(missing)"; };
    auto name = [&](uint64_t id) { return d.tasks.count(id) ? d.tasks[id].name : "(missing)"; };
    EXPECT_EQ(state(1), "running on worker 0");
    EXPECT_EQ(name(1), "main");
    EXPECT_TRUE(std::regex_match(state(z.sleeper_id), std::regex("parked: sleep until now\\+3[56][0-9]{2}\\.[0-9]{3} s")))
        << state(z.sleeper_id);
    EXPECT_EQ(state(z.holder_id), format("parked: await of task %" PRIu64, z.selecter_id.load()));
    EXPECT_EQ(state(z.locker_id), format("parked: mutex %s held by task %" PRIu64, ptr_text(&z.m).c_str(),
                                         z.holder_id.load()));
    EXPECT_EQ(state(z.waiter_id), "parked: condition " + ptr_text(&z.c));
    EXPECT_TRUE(std::regex_match(state(z.waiter_dl_id),
                                 std::regex("parked: condition " + ptr_text(&z.c) +
                                            " \\(deadline in 3[56][0-9]{2}\\.[0-9]{3} s\\)")))
        << state(z.waiter_dl_id);
    EXPECT_EQ(state(z.reader_id), format("parked: descriptor fd %d read", z.rpipe[0]));
    EXPECT_EQ(state(z.writer_id), format("parked: descriptor fd %d write", z.wpipe[1]));
    EXPECT_EQ(state(z.selecter_id), "parked: select among 2 tasks");
    EXPECT_EQ(state(z.blocker_id),
              "parked: blocking call fn " + ptr_text(reinterpret_cast<void *>(&kt_blocking_fn)));
    EXPECT_EQ(state(z.yielder_id), "ready");

    // Names, and the function each task parked in.
    const std::pair<const std::atomic<uint64_t> *, std::pair<const char *, const char *>> expect[] = {
        {&z.sleeper_id, {"sleeper", "kt_dump_wait_sleep"}},   {&z.holder_id, {"holder", "kt_dump_wait_await"}},
        {&z.locker_id, {"locker", "kt_dump_wait_mutex"}},     {&z.waiter_id, {"waiter", "kt_dump_wait_cond"}},
        {&z.waiter_dl_id, {"waiter-dl", "kt_dump_wait_cond"}}, {&z.reader_id, {"reader", "kt_dump_wait_read"}},
        {&z.writer_id, {"writer", "kt_dump_wait_write"}},     {&z.selecter_id, {"selecter", "kt_dump_wait_select"}},
        {&z.blocker_id, {"blocker", "kt_dump_wait_blocking"}}, {&z.yielder_id, {"yielder", "kt_yield_loop"}},
    };
    for (auto &e : expect) {
        uint64_t id = e.first->load();
        EXPECT_EQ(name(id), e.second.first);
        EXPECT_TRUE(frames_name(d.tasks[id].frames, e.second.second))
            << e.second.first << " should show " << e.second.second << ":\n" << joined(d.tasks[id].frames);
        // Innermost first; the walk ends at the fiber's root.
        ASSERT_FALSE(d.tasks[id].frames.empty());
        EXPECT_TRUE(contains(d.tasks[id].frames.front(), "    #0 0x")) << d.tasks[id].frames.front();
        EXPECT_TRUE(contains(d.tasks[id].frames.back(), "kio_ctx_entry")) << joined(d.tasks[id].frames);
    }
    // The not-started task; the running main fiber has no walkable stack.
    uint64_t fresh_id = 0;
    for (auto &kv : d.tasks)
        if (kv.second.name == "fresh") fresh_id = kv.first;
    EXPECT_EQ(state(fresh_id), "ready (not started)");
    EXPECT_TRUE(d.tasks[fresh_id].frames.empty());
    EXPECT_TRUE(d.tasks[1].frames.empty());
    z.finish();
}

TEST(DebugDump, RunningTaskOnAnotherWorker) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<uint64_t> id{0};
    std::atomic<int> running{0}, stop{0};
    kio_spawn_options o = named("spinner");
    kio_task *t = kt::spawn_ex(&o, [&] { kt_spin_until(&id, &running, &stop); return intptr_t(0); });
    // Main does not park: the spinner can only run on the other worker.
    uint64_t end = kio_now() + kt::prompt(10 * kSec);
    while (!running.load() && kio_now() < end) {
    }
    ASSERT_EQ(running.load(), 1);
    Dump d = dump_of(rt.get());
    DumpOnFailure show(d.text);
    std::smatch m;
    std::string main_state = d.tasks[1].state, spin_state = d.tasks[id].state;
    ASSERT_TRUE(std::regex_match(main_state, m, std::regex("running on worker ([01])")));
    int main_worker = std::stoi(m[1]);
    EXPECT_EQ(spin_state, format("running on worker %d", 1 - main_worker));
    EXPECT_EQ(d.tasks[id].name, "spinner");
    EXPECT_TRUE(contains(d.text, format("worker %d: running task %" PRIu64 " 'spinner', 0 ready\n",
                                        1 - main_worker, id.load())));
    EXPECT_TRUE(contains(d.text, format("worker %d: running task 1 'main'", main_worker)));
    // kio_backtrace refuses a task running on another worker.
    void *frames[8];
    EXPECT_EQ(kio_backtrace(t, frames, 8), -EBUSY);
    stop = 1;
    EXPECT_EQ(kt::await_ok(t), 0);
}

TEST(DebugDump, NamesAreCopiedAndTruncatedTo31Bytes) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    char name[64];
    std::string long_name = "a-very-long-task-name-0123456789-abcdefghij";  // 43 bytes
    std::strcpy(name, long_name.c_str());
    kio_spawn_options o = named(name);
    std::atomic<uint64_t> id{0};
    kio_task *t = kt::spawn_ex(&o, [&] { kt_dump_wait_sleep(&id); return intptr_t(0); });
    std::memset(name, 'X', sizeof name - 1);  // the runtime keeps its own copy
    kio_spawn_options anon;
    kio_spawn_options_init(&anon);
    std::atomic<uint64_t> anon_id{0};
    kio_task *u = kt::spawn_ex(&anon, [&] { kt_dump_wait_sleep(&anon_id); return intptr_t(0); });
    ASSERT_TRUE(wait_all_parked({t, u}, {&id, &anon_id}));
    Dump d = dump_of(rt.get());
    EXPECT_EQ(d.tasks[id].name, long_name.substr(0, 31)) << d.text;
    EXPECT_EQ(d.tasks[anon_id].name, "") << d.text;
    EXPECT_TRUE(contains(d.text, format("task %" PRIu64 " '': parked: sleep", anon_id.load()))) << d.text;
    kt::cancel_ok(t);
    kt::cancel_ok(u);
}

TEST(DebugDump, FromAPlainThreadAndErrors) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<uint64_t> id{0};
    kio_spawn_options o = named("napper");
    kio_task *t = kt::spawn_ex(&o, [&] { kt_dump_wait_sleep(&id); return intptr_t(0); });
    ASSERT_TRUE(wait_all_parked({t}, {&id}));
    std::string text;
    int r = -1;
    std::thread th([&] {
        TmpFile f;
        r = kio_dump(rt.get(), f.fd());
        text = f.text();
        EXPECT_EQ(kio_dump(nullptr, f.fd()), -EINVAL);  // a plain thread has no current runtime
    });
    th.join();
    EXPECT_EQ(r, 0);
    EXPECT_TRUE(contains(text, format("task %" PRIu64 " 'napper': parked: sleep until now+", id.load()))) << text;
    EXPECT_TRUE(contains(text, "kt_dump_wait_sleep+0x")) << text;
    // NULL: the caller's runtime.
    TmpFile f;
    EXPECT_EQ(kio_dump(nullptr, f.fd()), 0);
    EXPECT_TRUE(contains(f.text(), "'napper'"));
    EXPECT_EQ(kio_dump(rt.get(), -1), -EINVAL);
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    close(p[1]);
    EXPECT_LT(kio_dump(rt.get(), p[1]), 0);  // a closed descriptor: the write error
    signal(SIGPIPE, SIG_IGN);
    ASSERT_EQ(pipe(p + 0), 0);
    close(p[0]);
    EXPECT_LT(kio_dump(rt.get(), p[1]), 0);  // nobody reads: EPIPE
    close(p[1]);
    kt::cancel_ok(t);
}

// A name with control characters keeps the dump's one line per task.
TEST(DebugDump, ControlCharactersInANameAreShownAsQuestionMarks) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<uint64_t> id{0};
    kio_spawn_options o = named("two\nlines\t!");
    kio_task *t = kt::spawn_ex(&o, [&] { kt_dump_wait_sleep(&id); return intptr_t(0); });
    ASSERT_TRUE(wait_all_parked({t}, {&id}));
    TmpFile f;
    EXPECT_EQ(kio_dump(nullptr, f.fd()), 0);
    std::string text = f.text();
    EXPECT_TRUE(contains(text, "'two?lines?!': parked")) << text;
    kt::cancel_ok(t);
}

TEST(DebugDump, DumpSignalWritesTheDumpToStderr) {
    kio_options o;
    kio_options_init(&o);
    o.threads = 1;
    o.dump_signal = SIGUSR2;
    kio_runtime *rt = nullptr;
    ASSERT_EQ(kio_runtime_create(&o, &rt), 0);
    std::atomic<uint64_t> id{0};
    kio_spawn_options so = named("sig-sleeper");
    kio_task *t = kt::spawn_ex(&so, [&] { kt_dump_wait_sleep(&id); return intptr_t(0); });
    ASSERT_TRUE(wait_all_parked({t}, {&id}));
    std::string text;
    bool seen;
    {
        StderrCapture cap;
        kill(getpid(), SIGUSR2);  // to the process: any thread may take it
        seen = cap.wait_for({format("kio %s runtime %p: ", kio_version(), static_cast<void *>(rt)),
                             format("task %" PRIu64 " 'sig-sleeper': parked: sleep until now+", id.load()),
                             "kt_dump_wait_sleep+0x", "task 1 'main': "},
                            kt::prompt(10 * kSec));
        text = cap.text();
    }
    EXPECT_TRUE(seen) << text;
    kt::cancel_ok(t);
    EXPECT_EQ(kio_runtime_destroy(rt), 0);
}

TEST(DebugDump, DumpSignalValidation) {
    std::vector<int> bad = {-1, int(NSIG), SIGSEGV, SIGBUS, SIGKILL, SIGSTOP};
#if defined(SIGRTMIN)
    bad.push_back(SIGRTMIN + 3);  // the stall watchdog's
#endif
#if defined(__GLIBC__)
    bad.push_back(32);  // glibc's own (cancellation, setxid)
    bad.push_back(33);
#endif
    for (int sig : bad) {
        kio_options o;
        kio_options_init(&o);
        o.dump_signal = sig;
        kio_runtime *rt = nullptr;
        EXPECT_EQ(kio_runtime_create(&o, &rt), -EINVAL) << "signal " << sig;
    }
}

// The program's own disposition of the dump signal comes back when the last
// runtime using it is destroyed.
namespace {
void kt_user_handler(int) {}
}  // namespace

TEST(DebugDump, DumpSignalDispositionRestoredAfterDestroy) {
    struct sigaction mine, old, now;
    memset(&mine, 0, sizeof mine);
    mine.sa_handler = kt_user_handler;
    sigemptyset(&mine.sa_mask);
    ASSERT_EQ(sigaction(SIGUSR2, &mine, &old), 0);
    kio_options o;
    kio_options_init(&o);
    o.threads = 1;
    o.dump_signal = SIGUSR2;
    kio_runtime *a = nullptr, *b = nullptr;
    ASSERT_EQ(kio_runtime_create(&o, &a), 0);
    ASSERT_EQ(sigaction(SIGUSR2, nullptr, &now), 0);
    EXPECT_NE(now.sa_handler, kt_user_handler);  // kio's while a runtime uses it
    std::thread([&] {
        EXPECT_EQ(kio_runtime_create(&o, &b), 0);
        EXPECT_EQ(kio_runtime_destroy(b), 0);
    }).join();
    ASSERT_EQ(sigaction(SIGUSR2, nullptr, &now), 0);
    EXPECT_NE(now.sa_handler, kt_user_handler);  // a still uses it
    EXPECT_EQ(kio_runtime_destroy(a), 0);
    ASSERT_EQ(sigaction(SIGUSR2, nullptr, &now), 0);
    EXPECT_EQ(now.sa_handler, kt_user_handler);
    sigaction(SIGUSR2, &old, nullptr);
}

// ---------------------------------------------------------------------------
// kio_backtrace

TEST(DebugBacktrace, SuspendedTaskShowsWhereItParked) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    WaitZoo z;
    ASSERT_TRUE(z.start());
    const std::pair<kio_task *, const char *> cases[] = {
        {z.sleeper, "kt_dump_wait_sleep"}, {z.locker, "kt_dump_wait_mutex"},  {z.waiter, "kt_dump_wait_cond"},
        {z.reader, "kt_dump_wait_read"},   {z.writer, "kt_dump_wait_write"},  {z.holder, "kt_dump_wait_await"},
        {z.selecter, "kt_dump_wait_select"}, {z.blocker, "kt_dump_wait_blocking"}, {z.yielder, "kt_yield_loop"},
    };
    const char *api[] = {"kio_sleep", "kio_mutex_lock", "kio_cond_wait", "kio_read", "kio_write",
                         "kio_await", "kio_select", "kio_blocking", "kio_yield"};
    int i = 0;
    for (auto &c : cases) {
        void *frames[64];
        int n = kio_backtrace(c.first, frames, 64);
        ASSERT_GT(n, 0) << c.second;
        auto syms = symbolize(frames, n);
        std::string all;
        for (auto &s : syms) all += s + " ";
        EXPECT_TRUE(has_symbol(syms, c.second)) << c.second << ": " << all;
        // The public call it parked in (kio_sleep is kio_sleep_until inside).
        bool api_seen = false;
        for (auto &s : syms) api_seen = api_seen || s.rfind(api[i], 0) == 0;
        EXPECT_TRUE(api_seen) << api[i] << ": " << all;
        // max bounds the count; a smaller walk gives the innermost frames.
        void *few[2];
        EXPECT_EQ(kio_backtrace(c.first, few, 2), 2);
        EXPECT_EQ(few[0], frames[0]);
        EXPECT_EQ(few[1], frames[1]);
        EXPECT_EQ(kio_backtrace(c.first, nullptr, 0), 0);
        i++;
    }
    z.finish();
}

// A task started on the stack of one that just finished (a dying fiber hands
// its stack to the next fresh task of its worker) is walked like any other
// once it parks.
TEST(DebugBacktrace, TaskStartedOnAFinishedTasksStackShowsWhereItParked) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<uint64_t> id{0};
    kio_task *sleeper = kt::spawn([&id] {
        kt_dump_wait_sleep(&id);
        return intptr_t(0);
    });
    // Runs first (newest first), finishes with nobody waiting for it, and
    // hands its stack to the sleeper.
    kio_task *quick = kt::spawn([] { return intptr_t(1); });
    ASSERT_EQ(kio_detach(quick), 0);
    while (id.load() == 0) ASSERT_EQ(kio_sleep(kMs), 0);
    void *frames[64];
    int n = kio_backtrace(sleeper, frames, 64);
    ASSERT_GT(n, 0);
    auto syms = symbolize(frames, n);
    std::string all;
    for (auto &s : syms) all += s + " ";
    EXPECT_TRUE(has_symbol(syms, "kt_dump_wait_sleep")) << all;
    bool api_seen = false;
    for (auto &s : syms) api_seen = api_seen || s.rfind("kio_sleep", 0) == 0;
    EXPECT_TRUE(api_seen) << all;
    EXPECT_EQ(kt::cancel_ok(sleeper), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(DebugBacktrace, CurrentTaskAndMainFiber) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_spawn_options o = named("self");
    kio_task *t = kt::spawn_ex(&o, [] {
        void *frames[64];
        int n = 0;
        kt_backtrace_self(frames, &n);
        if (n <= 0) return intptr_t(-1);
        auto syms = symbolize(frames, n);
        // Innermost first: kt_backtrace_self itself is frame 0.
        return intptr_t(syms[0] == "kt_backtrace_self" ? n : -2);
    });
    EXPECT_GT(kt::await_ok(t), 1);
    // The main fiber (on its thread's stack).
    void *frames[64];
    int n = 0;
    kt_backtrace_self(frames, &n);
    ASSERT_GT(n, 1);
    EXPECT_EQ(symbolize(frames, n)[0], "kt_backtrace_self");
}

TEST(DebugBacktrace, Errors) {
    void *frames[8];
    // Plain thread, no runtime anywhere on it.
    EXPECT_EQ(kio_backtrace(nullptr, frames, 8), -EPERM);
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::thread th([&] { EXPECT_EQ(kio_backtrace(nullptr, frames, 8), -EPERM); });
    th.join();
    std::atomic<uint64_t> id{0};
    kio_spawn_options o = named("target");
    kio_task *t = kt::spawn_ex(&o, [&] { kt_dump_wait_sleep(&id); return intptr_t(0); });
    ASSERT_TRUE(wait_all_parked({t}, {&id}));
    EXPECT_EQ(kio_backtrace(t, nullptr, 8), -EINVAL);  // frames NULL with max > 0
    // A handle with the wrong generation bits is not a live task.
    auto *forged = reinterpret_cast<kio_task *>(reinterpret_cast<uintptr_t>(t) ^ 1);
    EXPECT_EQ(kio_backtrace(forged, frames, 8), -EINVAL);
    // A plain thread may walk a suspended task of any runtime.
    int from_thread = 0;
    std::thread th2([&] { from_thread = kio_backtrace(t, frames, 8); });
    th2.join();
    EXPECT_GT(from_thread, 0);
    kt::cancel_ok(t);
    // A consumed handle.
    EXPECT_EQ(kio_backtrace(t, frames, 8), -EINVAL);
}

// The header: "The task must be suspended (parked or queued): -EBUSY while it
// runs on a worker." A queued task that has not started yet has no frames.
TEST(DebugBacktrace, QueuedTaskThatHasNotStartedHasNoFrames) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_task *t = kt::spawn([] { return intptr_t(5); });
    void *frames[8];
    EXPECT_EQ(kio_backtrace(t, frames, 8), 0);
    EXPECT_EQ(kt::await_ok(t), 5);
}

// ---------------------------------------------------------------------------
// Stall watchdog

namespace {

kio_runtime *stall_runtime(unsigned threads, uint64_t stall_ns) {
    kio_options o;
    kio_options_init(&o);
    o.threads = threads;
    o.stall_ns = stall_ns;
    kio_runtime *rt = nullptr;
    EXPECT_EQ(kio_runtime_create(&o, &rt), 0);
    return rt;
}

// The stall reports in text for a task: their "has run for" times in ms.
std::vector<double> stall_reports(const std::string &text, uint64_t id, const char *name, unsigned worker) {
    std::vector<double> out;
    std::regex re(format("kio: stall: task %" PRIu64 " '%s' has run for ([0-9.]+) ms on worker %u without yielding\n",
                         id, name, worker));
    for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it)
        out.push_back(std::stod((*it)[1]));
    return out;
}

constexpr uint64_t kStall = 100 * kMs;

}  // namespace

TEST(DebugStall, ReportedOncePerEpisodeWithBacktrace) {
    kio_runtime *rt = stall_runtime(1, kStall);
    ASSERT_NE(rt, nullptr);
    std::atomic<uint64_t> hog_id{0}, by_id{0};
    std::atomic<int> stop{0};
    kio_spawn_options o = named("bystander");
    // Ready while the hog runs, so the hog's yield really switches.
    kio_task *by = kt::spawn_ex(&o, [&] { kt_yield_loop(&by_id, &stop); return intptr_t(0); });
    o = named("hog");
    kio_task *hog = kt::spawn_ex(&o, [&] {
        hog_id = kio_task_id();
        kt_stall_busy_loop(3 * kStall);
        kio_yield();  // ends the episode
        kt_stall_busy_loop(3 * kStall);
        return intptr_t(0);
    });
    std::string text;
    {
        StderrCapture cap;
        EXPECT_EQ(kt::await_ok(hog), 0);
        stop = 1;
        EXPECT_EQ(kt::await_ok(by), 0);
        kio_sleep(kStall);  // a late report would show up here
        text = cap.text();
    }
    auto reports = stall_reports(text, hog_id, "hog", 0);
    EXPECT_EQ(reports.size(), 2u) << text;
    for (double ms : reports) EXPECT_GE(ms, double(kStall / kMs)) << text;
    EXPECT_EQ(count_of(text, "kio: stall:"), 2u) << "only the hog stalled:\n" << text;
    EXPECT_EQ(count_of(text, " kt_stall_busy_loop+0x"), 2u) << "each report has the hog's backtrace:\n" << text;
    EXPECT_EQ(kio_runtime_destroy(rt), 0);
}

// kio_yield is a kio call: it ends an episode even when nothing else is
// ready (and the fiber just continues).
TEST(DebugStall, YieldWithNothingElseReadyEndsTheEpisode) {
    kio_runtime *rt = stall_runtime(1, kStall);
    ASSERT_NE(rt, nullptr);
    std::atomic<uint64_t> hog_id{0};
    kio_spawn_options o = named("lonely-hog");
    kio_task *hog = kt::spawn_ex(&o, [&] {
        hog_id = kio_task_id();
        kt_stall_busy_loop(3 * kStall);
        kio_yield();
        kt_stall_busy_loop(3 * kStall);
        return intptr_t(0);
    });
    std::string text;
    {
        StderrCapture cap;
        EXPECT_EQ(kt::await_ok(hog), 0);
        kio_sleep(kStall);
        text = cap.text();
    }
    EXPECT_EQ(stall_reports(text, hog_id, "lonely-hog", 0).size(), 2u) << text;
    EXPECT_EQ(kio_runtime_destroy(rt), 0);
}

TEST(DebugStall, MainFiberStallingRightAfterCreateIsReported) {
    kio_runtime *rt = stall_runtime(1, kStall);
    ASSERT_NE(rt, nullptr);
    std::string text;
    {
        StderrCapture cap;
        kt_stall_busy_loop(3 * kStall);  // before main ever switched
        kio_sleep(kStall);
        text = cap.text();
    }
    EXPECT_EQ(stall_reports(text, 1, "main", 0).size(), 1u) << text;
    EXPECT_EQ(kio_runtime_destroy(rt), 0);
}

TEST(DebugStall, NoReportForFibersThatPark) {
    kio_runtime *rt = stall_runtime(2, kStall);
    ASSERT_NE(rt, nullptr);
    std::string text;
    {
        StderrCapture cap;
        std::vector<kio_task *> ts;
        for (int i = 0; i < 4; i++)
            ts.push_back(kt::spawn([] {
                uint64_t end = kio_now() + 4 * kStall;
                while (kio_now() < end) {
                    busy_for(kStall / 10);
                    kio_sleep(50 * kt::kUs);
                }
                return intptr_t(0);
            }));
        for (kio_task *t : ts) EXPECT_EQ(kt::await_ok(t), 0);
        kio_sleep(kStall);
        text = cap.text();
    }
    EXPECT_EQ(count_of(text, "kio: stall:"), 0u) << text;
    EXPECT_EQ(kio_runtime_destroy(rt), 0);
}

// A CPU-bound loop that calls kio_yield (as the header recommends) is not
// stalled, even when nothing else is ready to run.
TEST(DebugStall, NoReportForALoneFiberThatYields) {
    kio_runtime *rt = stall_runtime(1, kStall);
    ASSERT_NE(rt, nullptr);
    std::string text;
    {
        StderrCapture cap;
        kio_task *t = kt::spawn([] {
            uint64_t end = kio_now() + 4 * kStall;
            while (kio_now() < end) {
                busy_for(kStall / 10);
                kio_yield();
            }
            return intptr_t(0);
        });
        EXPECT_EQ(kt::await_ok(t), 0);
        kio_sleep(kStall);
        text = cap.text();
    }
    EXPECT_EQ(count_of(text, "kio: stall:"), 0u) << text;
    EXPECT_EQ(kio_runtime_destroy(rt), 0);
}

// ---------------------------------------------------------------------------
// kio_stats

namespace {

struct kio_stats stats_of(kio_runtime *rt) {
    struct kio_stats s;
    kio_stats_init(&s);
    EXPECT_EQ(kio_stats(rt, &s), 0);
    return s;
}

}  // namespace

TEST(DebugStats, InitAndSizeHandling) {
    struct kio_stats s;
    memset(&s, 0xab, sizeof s);
    kio_stats_init(&s);
    EXPECT_EQ(s.size, sizeof s);
    EXPECT_EQ(s.workers, 0u);
    EXPECT_EQ(s.switches, 0u);
    EXPECT_EQ(s.stack_committed, 0u);
    kio_stats_init(nullptr);  // ignored

    EXPECT_EQ(kio_stats(nullptr, &s), -EINVAL);  // plain thread, no runtime
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    EXPECT_EQ(kio_stats(rt.get(), nullptr), -EINVAL);
    for (size_t size : {size_t(0), size_t(1), sizeof s - 1, offsetof(struct kio_stats, stack_committed)}) {
        kio_stats_init(&s);
        s.size = size;
        EXPECT_EQ(kio_stats(rt.get(), &s), -EINVAL) << "size " << size;
    }
    // A bigger struct (a newer header): this version fills its own fields
    // and leaves the rest alone.
    struct Bigger {
        struct kio_stats s;
        uint64_t extra[4];
    } big;
    memset(&big, 0x5a, sizeof big);
    big.s.size = sizeof big;
    EXPECT_EQ(kio_stats(rt.get(), &big.s), 0);
    EXPECT_EQ(big.s.size, sizeof big);
    EXPECT_EQ(big.s.workers, 1u);
    for (uint64_t e : big.extra) EXPECT_EQ(e, 0x5a5a5a5a5a5a5a5aull);
    // NULL: the caller's runtime; any thread may ask for a given runtime.
    kio_stats_init(&s);
    EXPECT_EQ(kio_stats(nullptr, &s), 0);
    EXPECT_EQ(s.workers, 1u);
    std::thread th([&] {
        struct kio_stats t;
        kio_stats_init(&t);
        EXPECT_EQ(kio_stats(rt.get(), &t), 0);
        EXPECT_EQ(t.workers, 1u);
        EXPECT_EQ(kio_stats(nullptr, &t), -EINVAL);
    });
    th.join();
}

TEST(DebugStats, CountersFollowKnownWork) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    struct kio_stats s0 = stats_of(rt.get());
    EXPECT_EQ(s0.workers, 1u);
    EXPECT_EQ(s0.tasks_live, 0u);
    EXPECT_EQ(s0.tasks_ready, 0u);

    // Spawned tasks are live and ready until they run.
    std::vector<kio_task *> ts;
    for (int i = 0; i < 3; i++) ts.push_back(kt::spawn([] { return intptr_t(1); }));
    struct kio_stats s1 = stats_of(rt.get());
    EXPECT_EQ(s1.tasks_live, 3u);
    EXPECT_EQ(s1.tasks_ready, 3u);
    for (kio_task *t : ts) EXPECT_EQ(kt::await_ok(t), 1);
    struct kio_stats s2 = stats_of(rt.get());
    EXPECT_EQ(s2.tasks_live, 0u);
    EXPECT_EQ(s2.tasks_ready, 0u);
    EXPECT_GE(s2.switches, s1.switches + 4);  // into each task, and back to main
    EXPECT_GT(s2.stack_committed, 0u);
    EXPECT_GE(s2.stack_reserved, s2.stack_committed);

    // Parks, by kind: each wait below parks the main fiber exactly once.
    auto parks_delta = [&](int kind, auto &&fn) {
        uint64_t before = stats_of(rt.get()).parks[kind];
        fn();
        return stats_of(rt.get()).parks[kind] - before;
    };
    EXPECT_EQ(parks_delta(KIO_PARK_SLEEP, [] { kio_sleep(kMs); }), 1u);
    EXPECT_EQ(parks_delta(KIO_PARK_AWAIT, [] {
                  kio_task *t = kt::spawn([] { return intptr_t(0); });
                  kt::await_ok(t);
              }),
              1u);
    EXPECT_EQ(parks_delta(KIO_PARK_SELECT, [] {
                  kio_task *t = kt::spawn([] { return intptr_t(0); });
                  size_t index = 9;
                  EXPECT_EQ(kio_select(&t, 1, &index), 0);
                  EXPECT_EQ(index, 0u);
                  kt::await_ok(t);
              }),
              1u);
    kio_mutex m = KIO_MUTEX_INIT;
    EXPECT_EQ(parks_delta(KIO_PARK_MUTEX, [&] {
                  kio_task *t = kt::spawn([&] {
                      kio_mutex_lock(&m);
                      kio_sleep(2 * kMs);  // parked while holding it
                      kio_mutex_unlock(&m);
                      return intptr_t(0);
                  });
                  kio_yield();  // the task takes the mutex and parks
                  EXPECT_EQ(kio_mutex_lock(&m), 0);
                  kio_mutex_unlock(&m);
                  kt::await_ok(t);
              }),
              1u);
    kio_cond c = KIO_COND_INIT;
    EXPECT_EQ(parks_delta(KIO_PARK_COND, [&] {
                  int flag = 0;
                  kio_mutex_lock(&m);
                  kio_task *t = kt::spawn([&] {
                      kio_mutex_lock(&m);
                      flag = 1;
                      kio_cond_signal(&c);
                      kio_mutex_unlock(&m);
                      return intptr_t(0);
                  });
                  while (!flag) kio_cond_wait(&c, &m);
                  kio_mutex_unlock(&m);
                  kt::await_ok(t);
              }),
              1u);
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    EXPECT_EQ(parks_delta(KIO_PARK_IO, [&] {
                  kio_task *t = kt::spawn([&] { return intptr_t(kio_write(p[1], "x", 1)); });
                  char ch;
                  EXPECT_EQ(kio_read(p[0], &ch, 1), 1);
                  EXPECT_EQ(kt::await_ok(t), 1);
              }),
              1u);
    kio_close(p[0]);
    kio_close(p[1]);
    EXPECT_EQ(parks_delta(KIO_PARK_BLOCKING, [] {
                  void *res = nullptr;
                  EXPECT_EQ(kio_blocking([](void *) -> void * { return iv(3); }, nullptr, &res), 0);
                  EXPECT_EQ(vi(res), 3);
              }),
              1u);
    // A yield that switches is a switch, not a park.
    kio_task *y = kt::spawn([] {
        for (int i = 0; i < 10; i++) kio_yield();
        return intptr_t(0);
    });
    struct kio_stats s3 = stats_of(rt.get());
    for (int i = 0; i < 10; i++) kio_yield();
    struct kio_stats s4 = stats_of(rt.get());
    EXPECT_GE(s4.switches, s3.switches + 20);
    for (int k = 0; k < KIO_PARK_KINDS; k++) EXPECT_EQ(s4.parks[k], s3.parks[k]) << "kind " << k;
    kt::await_ok(y);
}

TEST(DebugStats, WorkersStartedAndSteals) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> running{0}, stop{0};
    std::atomic<uint64_t> id{0};
    kio_task *t = kt::spawn([&] { kt_spin_until(&id, &running, &stop); return intptr_t(0); });
    uint64_t end = kio_now() + kt::prompt(10 * kSec);
    while (!running.load() && kio_now() < end) {
    }
    ASSERT_EQ(running.load(), 1);
    struct kio_stats s = stats_of(rt.get());
    EXPECT_EQ(s.workers, 2u);
    EXPECT_EQ(s.tasks_live, 1u);
    EXPECT_GE(s.steals, 1u);  // the spinner was taken from worker 0's queue
    stop = 1;
    EXPECT_EQ(kt::await_ok(t), 0);
}

// ---------------------------------------------------------------------------
// KIO_DEBUG_MIGRATE

namespace {

// On a 2-worker runtime: pins a peer task that keeps yielding to each worker
// (so that every yield of another task really switches), then counts the
// yields of a task that resumed on the thread they started on.
int yields_on_same_thread_with_peers(int yields) {
    std::atomic<int> started{0}, stop{0};
    std::vector<kio_task *> peers;
    for (int i = 0; i < 2; i++) {
        kio_spawn_options o = named(i ? "peer-1" : "peer-0", true);
        peers.push_back(kt::spawn_ex(&o, [&] {
            started++;
            // Spin until both run: then they run on two workers, and are
            // pinned there.
            uint64_t end = kio_now() + kt::prompt(10 * kSec);
            while (started.load() < 2 && kio_now() < end) {
            }
            while (!stop.load()) kio_yield();
            return intptr_t(0);
        }));
    }
    EXPECT_TRUE(kt::wait_flag(started, 2));
    kio_task *t = kt::spawn([yields] {
        int same = 0;
        for (int i = 0; i < yields; i++) {
            long before = kt::os_thread_id();
            kio_yield();
            if (kt::os_thread_id() == before) same++;
        }
        return intptr_t(same);
    });
    intptr_t same = kt::await_ok(t);
    stop = 1;
    for (kio_task *p : peers) kt::await_ok(p);
    return int(same);
}

kio_runtime *migrate_runtime(unsigned threads) {
    kio_options o;
    kio_options_init(&o);
    o.threads = threads;
    o.debug_flags = KIO_DEBUG_MIGRATE;
    kio_runtime *rt = nullptr;
    EXPECT_EQ(kio_runtime_create(&o, &rt), 0);
    return rt;
}

}  // namespace

// A lone task's kio_yield (nothing else ready on its worker) must move it too:
// the mode exists to flush out code that caches thread state across a call
// that can switch.
TEST(DebugMigrate, EveryYieldResumesOnAnotherThread) {
    kio_runtime *rt = migrate_runtime(2);
    ASSERT_NE(rt, nullptr);
    EXPECT_EQ(stats_of(rt).workers, 2u);  // all workers start at once
    kio_task *t = kt::spawn([] {
        int same = 0;
        for (int i = 0; i < 50; i++) {
            long before = kt::os_thread_id();
            kio_yield();
            if (kt::os_thread_id() == before) same++;
        }
        return intptr_t(same);
    });
    EXPECT_EQ(kt::await_ok(t), 0);
    EXPECT_EQ(kio_runtime_destroy(rt), 0);
}

// Each wakeup by another task moves the woken fiber away from the worker it
// parked on. The reader parks in kio_read once per round (the writer waits
// until the reader is suspended before it writes: kio_backtrace answers
// -EBUSY while a task runs) and is woken by the data. (A condition wait is
// not used here: it can park twice, on the condition and then on the mutex,
// and two moves between two workers land the fiber where it started.)
TEST(DebugMigrate, EveryWakeupResumesOnAnotherThread) {
    kio_runtime *rt = migrate_runtime(2);
    ASSERT_NE(rt, nullptr);
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    constexpr int kRounds = 40;
    std::atomic<int> round{0}, same{0}, resumes{0};
    kio_task *reader = kt::spawn([&] {
        for (int i = 0; i < kRounds; i++) {
            char b;
            long before = kt::os_thread_id();
            round = i + 1;  // about to park in round i
            if (kio_read(sv[0], &b, 1) != 1) return intptr_t(-1);
            resumes++;
            if (kt::os_thread_id() == before) same++;
        }
        return intptr_t(0);
    });
    kio_task *writer = kt::spawn([&] {
        void *frames[1];
        for (int i = 0; i < kRounds; i++) {
            uint64_t end = kio_now() + kt::prompt(10 * kSec);
            while ((round.load() != i + 1 || kio_backtrace(reader, frames, 1) == -EBUSY) && kio_now() < end)
                kio_yield();
            if (kio_write(sv[1], "x", 1) != 1) return intptr_t(-1);
        }
        return intptr_t(0);
    });
    EXPECT_EQ(kt::await_ok(writer), 0);
    EXPECT_EQ(kt::await_ok(reader), 0);
    EXPECT_EQ(resumes.load(), kRounds);
    EXPECT_EQ(same.load(), 0) << same.load() << " of " << resumes.load()
                              << " wakeups resumed on the thread the fiber parked on";
    kio_close(sv[0]);
    kio_close(sv[1]);
    EXPECT_EQ(kio_runtime_destroy(rt), 0);
}

TEST(DebugMigrate, SleepersResumeOnAnotherThread) {
    kio_runtime *rt = migrate_runtime(3);
    ASSERT_NE(rt, nullptr);
    kio_task *t = kt::spawn([] {
        int same = 0;
        for (int i = 0; i < 30; i++) {
            long before = kt::os_thread_id();
            kio_sleep(kMs);
            if (kt::os_thread_id() == before) same++;
        }
        return intptr_t(same);
    });
    EXPECT_EQ(kt::await_ok(t), 0);
    EXPECT_EQ(kio_runtime_destroy(rt), 0);
}

TEST(DebugMigrate, PinnedTasksStayHome) {
    kio_runtime *rt = migrate_runtime(2);
    ASSERT_NE(rt, nullptr);
    kio_spawn_options o = named("pinned", true);
    kio_task *t = kt::spawn_ex(&o, [] {
        long home = kt::os_thread_id();
        int moved = 0;
        for (int i = 0; i < 30; i++) {
            if (i % 2) kio_yield();
            else kio_sleep(100 * kt::kUs);
            if (kt::os_thread_id() != home) moved++;
        }
        return intptr_t(moved);
    });
    EXPECT_EQ(kt::await_ok(t), 0);
    EXPECT_EQ(kio_runtime_destroy(rt), 0);
}

TEST(DebugMigrate, YieldsThatSwitchResumeOnAnotherThread) {
    kio_runtime *rt = migrate_runtime(2);
    ASSERT_NE(rt, nullptr);
    EXPECT_EQ(yields_on_same_thread_with_peers(20), 0);
    EXPECT_EQ(kio_runtime_destroy(rt), 0);
}

TEST(DebugMigrate, EnvironmentVariableEnablesIt) {
    kt::ScopedEnv env("KIO_DEBUG_MIGRATE", "1");  // read when the runtime is made
    kio_options o;
    kio_options_init(&o);
    o.threads = 2;
    kio_runtime *rt = nullptr;
    ASSERT_EQ(kio_runtime_create(&o, &rt), 0);
    EXPECT_EQ(stats_of(rt).workers, 2u);  // all workers start at once
    EXPECT_EQ(yields_on_same_thread_with_peers(20), 0);
    EXPECT_EQ(kio_runtime_destroy(rt), 0);
}

TEST(DebugMigrate, OffByDefaultAndWithZero) {
    kt::ScopedEnv env("KIO_DEBUG_MIGRATE", "0");  // read when the runtime is made
    kio_options o;
    kio_options_init(&o);
    o.threads = 2;
    kio_runtime *rt = nullptr;
    ASSERT_EQ(kio_runtime_create(&o, &rt), 0);
    // Without migration, workers start lazily: only worker 0 so far.
    EXPECT_EQ(stats_of(rt).workers, 1u);
    EXPECT_EQ(kio_runtime_destroy(rt), 0);
}

// ---------------------------------------------------------------------------

// kio_dump from a plain thread while tasks keep moving between a contended
// mutex and sleeps: a task read as parked on the mutex may be in a sleep (no
// object) by the time its object is described. No crash, every dump 0.
TEST(DebugDump, DumpWhileTasksMoveBetweenMutexAndSleep) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    static kio_mutex m = KIO_MUTEX_INIT;
    static std::atomic<bool> stop;
    stop = false;
    std::vector<kio_task *> ts;
    for (int i = 0; i < 16; i++)
        ts.push_back(kt::spawn([] {
            while (!stop.load()) {
                if (kio_mutex_lock(&m) != 0) return intptr_t(1);
                kio_yield();
                kio_mutex_unlock(&m);
                kio_sleep(10 * 1000);
            }
            return intptr_t(0);
        }));
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    ASSERT_GE(devnull, 0);
    std::atomic<int> bad{0}, dumps{0};
    kio_runtime *r = rt.get();
    std::thread dumper([&] {
        while (!stop.load()) {
            if (kio_dump(r, devnull) != 0) bad++;
            dumps++;
        }
    });
    kio_sleep(1000 * 1000 * 1000);
    stop = true;
    dumper.join();
    for (kio_task *t : ts) EXPECT_EQ(kt::await_ok(t), 0);
    EXPECT_EQ(bad.load(), 0);
    EXPECT_GT(dumps.load(), 0);
    close(devnull);
    EXPECT_EQ(rt.destroy(), 0);
}

// kio_stats and kio_dump on another thread while the runtime is destroyed:
// each returns 0 or, once destroy is freeing the runtime, -EINVAL; destroy
// does not free what they are reading (the ASan build checks that).
TEST(DebugDump, StatsAndDumpRacingDestroy) {
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    ASSERT_GE(devnull, 0);
    for (int i = 0; i < 40; i++) {
        kio_options o;
        kio_options_init(&o);
        o.threads = 2;
        kio_runtime *rt = nullptr;
        ASSERT_EQ(kio_runtime_create(&o, &rt), 0);
        for (int k = 0; k < 8; k++) {
            kio_task *t;
            ASSERT_EQ(kio_spawn(rt, [](void *) -> void * {
                kio_sleep(uint64_t(3600) * 1000 * 1000 * 1000);
                return nullptr;
            }, nullptr, &t), 0);
            ASSERT_EQ(kio_detach(t), 0);
        }
        std::atomic<bool> stop{false}, started{false};
        std::atomic<int> bad{0};
        std::thread observer([&] {
            while (!stop.load()) {
                struct kio_stats s;
                memset(&s, 0, sizeof s);
                s.size = sizeof s;
                int a = kio_stats(rt, &s), b = kio_dump(rt, devnull);
                if ((a != 0 && a != -EINVAL) || (b != 0 && b != -EINVAL)) bad++;
                started = true;
            }
        });
        while (!started.load()) kio_yield();
        kio_sleep(uint64_t(i % 5) * 1000 * 1000);
        ASSERT_EQ(kio_runtime_destroy(rt), 0);
        stop = true;
        observer.join();
        EXPECT_EQ(bad.load(), 0) << "round " << i;
    }
    close(devnull);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (std::strncmp(argv[i], "--kio-child=", 12) == 0) return child_main(argv[i] + 12);
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
