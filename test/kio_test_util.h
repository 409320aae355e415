// Shared helpers for the kio runtime tests (C++ only, header-only).
//
//   kt::Rt           RAII runtime: created in the constructor, destroyed in the
//                    destructor if the test did not destroy it (so a failed
//                    ASSERT does not leave the thread inside a runtime and
//                    cascade into -EBUSY in every later test).
//   kt::spawn        spawns a lambda returning intptr_t as a task.
//   kt::await_ok     awaits a handle, checks the result code, returns the value.
//   kt::scaled(n)    n scaled by KIO_STRESS_SCALE (percent, default 100).
//   kt::count_dir    entries of a /proc directory (threads, fds), and
//                    thread counts that wait for joined threads to leave.
//   kt::busy_for(ns) keeps the caller busy without a kio call (a fiber that
//                    never yields).
//   kt::ScopedEnv    sets an environment variable for a scope (restores it).
//   watchdog         every test gets a deadline (KIO_TEST_WATCHDOG_SEC, default
//                    120 s): a hang prints the test's name and aborts, instead
//                    of a silent meson timeout.
#pragma once

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kio.h"

namespace kt {

constexpr uint64_t kUs = 1000ull;
constexpr uint64_t kMs = 1000ull * 1000ull;
constexpr uint64_t kSec = 1000ull * 1000ull * 1000ull;
constexpr uint64_t kHour = 3600ull * kSec;

inline void *iv(intptr_t v) { return reinterpret_cast<void *>(v); }
inline intptr_t vi(void *p) { return reinterpret_cast<intptr_t>(p); }

// Percent of the full iteration counts, from KIO_STRESS_SCALE (default 100).
inline uint64_t scale_percent() {
    const char *s = std::getenv("KIO_STRESS_SCALE");
    if (!s || !*s) return 100;
    char *end = nullptr;
    unsigned long long v = std::strtoull(s, &end, 10);
    if (end == s || v == 0) return 100;
    return v;
}

inline uint64_t scaled(uint64_t n) {
    uint64_t v = n * scale_percent() / 100;
    return v ? v : 1;
}

// Entries of a directory such as /proc/self/task or /proc/self/fd (not
// counting the DIR's own fd in the latter); -1 if it cannot be read.
inline int count_dir(const char *path) {
    DIR *d = opendir(path);
    if (!d) return -1;
    int n = 0;
    while (dirent *e = readdir(d))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - (std::strcmp(path, "/proc/self/fd") == 0 ? 1 : 0);
}

// The number of threads of this process once it settles at `want` (or after
// a second). A joined thread leaves /proc/self/task at once on hardware;
// under qemu-user its host thread may linger briefly after pthread_join.
inline int threads_settled_at(int want) {
    int n = count_dir("/proc/self/task");
    for (uint64_t end = kio_now() + 1 * kSec; n != want && kio_now() < end; n = count_dir("/proc/self/task"))
        usleep(1000);
    return n;
}

// The number of threads of this process once it has not changed for 100 ms
// (at most 2 s): a baseline that threads joined earlier, which may linger
// under qemu-user, do not inflate.
inline int settled_thread_count() {
    int n = count_dir("/proc/self/task");
    uint64_t end = kio_now() + 2 * kSec, stable = kio_now();
    while (kio_now() < end && kio_now() - stable < 100 * kMs) {
        usleep(1000);
        int m = count_dir("/proc/self/task");
        if (m != n) n = m, stable = kio_now();
    }
    return n;
}

// A runtime owned by the test body (which runs as its main fiber).
class Rt {
  public:
    explicit Rt(unsigned threads = 1, size_t stack_size = 0) {
        kio_options o;
        kio_options_init(&o);
        o.threads = threads;
        o.stack_size = stack_size;
        rc_ = kio_runtime_create(&o, &rt_);
        if (rc_ != 0) rt_ = nullptr;
    }
    ~Rt() {
        if (rt_) kio_runtime_destroy(rt_);
    }
    Rt(const Rt &) = delete;
    Rt &operator=(const Rt &) = delete;

    int rc() const { return rc_; }
    kio_runtime *get() const { return rt_; }
    int destroy() {
        int r = kio_runtime_destroy(rt_);
        if (r == 0) rt_ = nullptr;
        return r;
    }

  private:
    kio_runtime *rt_ = nullptr;
    int rc_ = -1;
};

// Tasks from lambdas: F() returns intptr_t (the task's result).
template <class F>
struct Box {
    F f;
    static void *run(void *arg) {
        auto *b = static_cast<Box *>(arg);
        intptr_t r = b->f();
        delete b;
        return iv(r);
    }
};

// Spawns f on rt (NULL: the caller's runtime). Returns the kio_spawn result.
template <class F>
int try_spawn(kio_runtime *rt, F f, kio_task **out) {
    auto *b = new Box<F>{std::move(f)};
    int r = kio_spawn(rt, &Box<F>::run, b, out);
    if (r != 0) delete b;
    return r;
}

// Spawns f or records a test failure (returns nullptr then).
template <class F>
kio_task *spawn(F f, kio_runtime *rt = nullptr) {
    kio_task *t = nullptr;
    int r = try_spawn(rt, std::move(f), &t);
    EXPECT_EQ(r, 0) << "kio_spawn failed";
    return r == 0 ? t : nullptr;
}

template <class F>
kio_task *spawn_ex(const kio_spawn_options *opts, F f, kio_runtime *rt = nullptr) {
    auto *b = new Box<F>{std::move(f)};
    kio_task *t = nullptr;
    int r = kio_spawn_ex(rt, &Box<F>::run, b, opts, &t);
    EXPECT_EQ(r, 0) << "kio_spawn_ex failed";
    if (r != 0) {
        delete b;
        return nullptr;
    }
    return t;
}

// Awaits t, expecting success; returns the task's result (or INTPTR_MIN).
inline intptr_t await_ok(kio_task *t) {
    void *res = iv(INTPTR_MIN);
    int r = kio_await(t, &res);
    EXPECT_EQ(r, 0) << "kio_await failed";
    return vi(res);
}

inline intptr_t cancel_ok(kio_task *t) {
    void *res = iv(INTPTR_MIN);
    int r = kio_cancel(t, &res);
    EXPECT_EQ(r, 0) << "kio_cancel failed";
    return vi(res);
}

// Fiber-friendly wait for a flag (polls with kio_sleep; fine from plain
// threads too). Gives up after `limit` and returns false.
inline bool wait_flag(const std::atomic<int> &flag, int value, uint64_t limit = 10 * kSec) {
    uint64_t end = kio_now() + limit;
    while (flag.load() != value) {
        if (kio_now() > end) return false;
        kio_sleep(100 * kUs);
    }
    return true;
}

// Waits (like wait_flag) until rt's counter of parks of `kind` reaches at
// least `count`: a test that needs fibers parked, not merely started, waits
// for this instead of sleeping a guessed while (too short on a loaded
// machine under a sanitizer).
inline bool wait_parks(kio_runtime *rt, int kind, uint64_t count, uint64_t limit = 10 * kSec) {
    uint64_t end = kio_now() + limit;
    for (;;) {
        struct kio_stats st;
        kio_stats_init(&st);
        if (kio_stats(rt, &st) == 0 && st.parks[kind] >= count) return true;
        if (kio_now() > end) return false;
        kio_sleep(100 * kUs);
    }
}

// The calling OS thread's id. A system call every time: unlike pthread_self()
// (declared const, so compilers fold repeated calls), it is never cached
// across a park that may move the fiber to another thread.
inline long os_thread_id() { return long(syscall(SYS_gettid)); }

// Upper bounds on "promptly" (a wakeup, a cancel, a destroy) are multiplied
// by KIO_TIME_SLACK (an integer; default 10 in sanitizer builds, else 1), so
// slow instrumented builds (sanitizers, valgrind) do not fail on timing alone.
// Lower bounds (slept at least ...) are never scaled.
inline uint64_t time_slack() {
    const char *s = std::getenv("KIO_TIME_SLACK");
    if (s && std::atoi(s) > 0) return uint64_t(std::atoi(s));
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return 10;
#else
    return 1;
#endif
}
inline uint64_t prompt(uint64_t ns) { return ns * time_slack(); }

// Tests whose setup must finish within a time window to mean anything (arm
// every timer before the first fires, say) try the window prompt(ns), then
// 4 and 16 times wider when the machine was too loaded for the narrower one.
// The checks stay exact; only the window grows.
inline std::vector<uint64_t> margins(uint64_t ns) {
    uint64_t m = prompt(ns);
    return {m, 4 * m, 16 * m};
}
inline bool last_margin(uint64_t margin, uint64_t ns) { return margin == margins(ns).back(); }

// Nanoseconds elapsed since t0 (kio_now base).
inline uint64_t since(uint64_t t0) { return kio_now() - t0; }

// Keeps the calling thread (and a fiber's worker) busy for ns without a
// single kio call that could switch: a fiber that never yields.
inline void busy_for(uint64_t ns) {
    for (uint64_t end = kio_now() + ns; kio_now() < end;) {
    }
}

// Sets an environment variable (KIO_DEBUG_MIGRATE, read when a runtime is
// made) until the end of the scope, then restores its old value or absence.
class ScopedEnv {
  public:
    ScopedEnv(const char *name, const char *value) : name_(name) {
        const char *old = getenv(name);
        had_ = old != nullptr;
        if (had_) old_ = old;
        setenv(name, value, 1);
    }
    ~ScopedEnv() {
        if (had_) setenv(name_, old_.c_str(), 1);
        else unsetenv(name_);
    }
    ScopedEnv(const ScopedEnv &) = delete;
    ScopedEnv &operator=(const ScopedEnv &) = delete;

  private:
    const char *name_;
    bool had_ = false;
    std::string old_;
};

// ---------------------------------------------------------------------------
// Watchdog: aborts with the test's name when a test hangs.

class Watchdog : public ::testing::EmptyTestEventListener {
  public:
    Watchdog() : s_(new State) {  // State is never freed: the thread outlives main
        const char *e = std::getenv("KIO_TEST_WATCHDOG_SEC");
        if (e && std::atoi(e) > 0) s_->limit = std::atoi(e);
        State *s = s_;
        std::thread([s] { loop(s); }).detach();
    }
    void OnTestStart(const ::testing::TestInfo &info) override {
        std::lock_guard<std::mutex> g(s_->mu);
        s_->name = std::string(info.test_suite_name()) + "." + info.name();
        s_->deadline = std::chrono::steady_clock::now() + std::chrono::seconds(s_->limit);
        s_->armed = true;
        s_->cv.notify_all();
    }
    void OnTestEnd(const ::testing::TestInfo &) override {
        std::lock_guard<std::mutex> g(s_->mu);
        s_->armed = false;
        s_->cv.notify_all();
    }

  private:
    struct State {
        std::mutex mu;
        std::condition_variable cv;
        std::string name;
        std::chrono::steady_clock::time_point deadline;
        bool armed = false;
        int limit = 120;
    };
    static void loop(State *s) {
        std::unique_lock<std::mutex> g(s->mu);
        for (;;) {
            if (!s->armed) {
                s->cv.wait(g);
                continue;
            }
            auto d = s->deadline;
            if (s->cv.wait_until(g, d) == std::cv_status::timeout && s->armed && s->deadline == d) {
                std::fprintf(stderr, "\n[watchdog] %s did not finish within %d s: hang, aborting\n",
                             s->name.c_str(), s->limit);
                std::fflush(stderr);
                std::abort();
            }
        }
    }
    State *s_;
};

namespace detail {
inline bool install_watchdog() {
    ::testing::UnitTest::GetInstance()->listeners().Append(new Watchdog);
    return true;
}
[[maybe_unused]] static const bool watchdog_installed = install_watchdog();
}  // namespace detail

}  // namespace kt
