// Boost competitors for the kio core benchmarks (see bench/README.md).
//
//   boost_bench <workload> [-n N] [-r reps] [-t threads]
//
// workloads: switch_context switch_fcontext yield spawn_await spawn_await_batch
//            skynet mutex pingpong idle sleep
//
// switch_context uses boost::context::fiber (resume loop); switch_fcontext the
// raw jump_fcontext/make_fcontext pair that fiber is built on. Everything else
// uses Boost.Fiber. Boost.Fiber runs on the calling thread with the default
// round_robin scheduler unless -t > 1, which switches every participating
// thread to algo::work_stealing (used for `mutex`, where the kio and Go
// versions run on 2 workers too; see scripts/bench.sh).
//
// Fiber stacks: 64 KiB like kio's default. Workloads that spawn many short
// fibers use pooled_fixedsize_stack (Boost's analogue of kio's stack pool); the
// idle workload uses fixedsize_stack so that its memory is charged to it.
//
// Every workload verifies its result; the output is one line
//   RESULT workload=... system=boost_... value=... unit=... check=ok|FAIL
// with the median of `reps` timed runs after one untimed warm-up run (idle:
// one cold run per process; the runner takes the median over processes).
#include <boost/context/detail/fcontext.hpp>
#include <boost/context/fiber.hpp>
#include <boost/context/fixedsize_stack.hpp>
#include <boost/context/pooled_fixedsize_stack.hpp>
#include <boost/fiber/all.hpp>

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ctx = boost::context;
namespace fibers = boost::fibers;

namespace {

constexpr size_t kStackSize = 64 * 1024;

uint64_t now_ns() {
    return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now().time_since_epoch())
                        .count());
}

long rss_bytes() {
    FILE *f = std::fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    while (std::fgets(line, sizeof line, f))
        if (std::strncmp(line, "VmRSS:", 6) == 0) {
            kb = std::strtol(line + 6, nullptr, 10);
            break;
        }
    std::fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

struct Opts {
    uint64_t n = 0;
    int reps = 3;
    unsigned threads = 1;
};

void report(const char *workload, const char *system, double value, const char *unit, bool ok) {
    std::printf("RESULT workload=%s system=%s value=%.*f unit=%s check=%s\n", workload, system,
                value >= 1000 ? 0 : 2, value, unit, ok ? "ok" : "FAIL");
    std::fflush(stdout);
}

// Runs one untimed warm-up and `reps` timed runs of fn (which returns the
// measured value and sets ok), reports the median.
void measure(const char *workload, const char *system, const char *unit, const Opts &o,
             const std::function<double(bool &)> &fn) {
    bool ok = true, run_ok = true;
    fn(run_ok);
    ok = ok && run_ok;
    std::vector<double> v;
    for (int r = 0; r < o.reps; r++) {
        run_ok = true;
        v.push_back(fn(run_ok));
        ok = ok && run_ok;
    }
    std::sort(v.begin(), v.end());
    report(workload, system, v[v.size() / 2], unit, ok);
}

// ---------------------------------------------------------------- switch ---

struct MmapStack {
    void *base;
    size_t size;
    explicit MmapStack(size_t sz) : size(sz) {
        base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                    -1, 0);
        if (base == MAP_FAILED) {
            std::perror("mmap");
            std::exit(2);
        }
    }
    ~MmapStack() { munmap(base, size); }
    void *top() const { return static_cast<char *>(base) + size; }
};

// Raw fcontext: the fiber answers k with k + 1, forever.
struct FctxState {
    uint64_t fiber_switches = 0;
    uint64_t fiber_errors = 0;
};
FctxState *g_fctx;

void fctx_entry(ctx::detail::transfer_t t) {
    uintptr_t expect = 0;
    for (;;) {
        uintptr_t k = reinterpret_cast<uintptr_t>(t.data);
        if (k != expect) g_fctx->fiber_errors++;
        expect = k + 2;
        g_fctx->fiber_switches++;
        t = ctx::detail::jump_fcontext(t.fctx, reinterpret_cast<void *>(k + 1));
    }
}

double run_fcontext(uint64_t n, bool &ok) {
    MmapStack stack(kStackSize);
    FctxState st;
    g_fctx = &st;
    ctx::detail::fcontext_t f = ctx::detail::make_fcontext(stack.top(), stack.size, fctx_entry);
    uint64_t errors = 0;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        uintptr_t k = uintptr_t(2 * i);
        ctx::detail::transfer_t t = ctx::detail::jump_fcontext(f, reinterpret_cast<void *>(k));
        f = t.fctx;
        if (reinterpret_cast<uintptr_t>(t.data) != k + 1) errors++;
    }
    uint64_t t1 = now_ns();
    ok = errors == 0 && st.fiber_errors == 0 && st.fiber_switches == n;
    // The fiber is abandoned mid-loop (like kio's): its stack is simply unmapped.
    return double(t1 - t0) / double(2 * n);
}

// boost::context::fiber with a resume loop. The fiber counts its resumptions;
// main checks the count after every round trip.
double run_context_fiber(uint64_t n, bool &ok) {
    uint64_t count = 0;
    bool stop = false;
    uint64_t errors = 0;
    {
        ctx::fiber f(std::allocator_arg, ctx::fixedsize_stack(kStackSize),
                     [&](ctx::fiber &&c) {
                         while (!stop) {
                             count++;
                             c = std::move(c).resume();
                         }
                         return std::move(c);
                     });
        uint64_t t0 = now_ns();
        for (uint64_t i = 0; i < n; i++) {
            f = std::move(f).resume();
            if (count != i + 1) errors++;
        }
        uint64_t t1 = now_ns();
        stop = true;
        f = std::move(f).resume();  // let the fiber return and unwind
        ok = errors == 0 && count == n && !f;
        return double(t1 - t0) / double(2 * n);
    }
}

// ------------------------------------------------------------ scheduling ---

// Runs body on a Boost.Fiber scheduler with `threads` threads (1: the default
// round_robin on this thread; more: work_stealing on this thread plus helpers
// that only run stolen fibers until body is done).
struct Scheduler {
    unsigned threads;
    std::vector<std::thread> helpers;
    fibers::mutex mtx;
    fibers::condition_variable_any cv;
    bool done = false;

    explicit Scheduler(unsigned t) : threads(t) {
        if (threads <= 1) return;
        static std::atomic<unsigned> registered{0};
        for (unsigned i = 1; i < threads; i++)
            helpers.emplace_back([this] {
                fibers::use_scheduling_algorithm<fibers::algo::work_stealing>(threads);
                registered++;
                while (registered.load() < threads) std::this_thread::yield();
                std::unique_lock<fibers::mutex> lk(mtx);
                cv.wait(lk, [this] { return done; });
            });
        fibers::use_scheduling_algorithm<fibers::algo::work_stealing>(threads);
        registered++;
        // work_stealing picks victims among all threads: wait until every
        // thread has registered its scheduler before any fiber exists.
        while (registered.load() < threads) std::this_thread::yield();
    }
    ~Scheduler() {
        if (threads <= 1) return;
        {
            std::unique_lock<fibers::mutex> lk(mtx);
            done = true;
        }
        cv.notify_all();
        for (auto &t : helpers) t.join();
    }
};

// ----------------------------------------------------------------- yield ---

double run_yield(uint64_t n, bool &ok) {
    uint64_t done_a = 0, done_b = 0;
    uint64_t t0 = now_ns();
    fibers::fiber a([&] {
        for (uint64_t i = 0; i < n; i++) {
            boost::this_fiber::yield();
            done_a++;
        }
    });
    fibers::fiber b([&] {
        for (uint64_t i = 0; i < n; i++) {
            boost::this_fiber::yield();
            done_b++;
        }
    });
    a.join();
    b.join();
    uint64_t t1 = now_ns();
    ok = done_a == n && done_b == n;
    return double(t1 - t0) / double(2 * n);
}

// ---------------------------------------------------------- spawn/await ---

ctx::pooled_fixedsize_stack &pool() {
    static ctx::pooled_fixedsize_stack p(kStackSize);
    return p;
}

double run_spawn_await(uint64_t n, bool &ok) {
    uint64_t bad = 0;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = 0;
        fibers::fiber f(std::allocator_arg, pool(), [&r, i] { r = i + 1; });
        f.join();
        if (r != i + 1) bad++;
    }
    uint64_t t1 = now_ns();
    ok = bad == 0;
    return double(t1 - t0) / double(n);
}

double run_spawn_await_batch(uint64_t n, bool &ok) {
    const uint64_t batch = 1000;
    std::vector<fibers::fiber> fs;
    std::vector<uint64_t> res(batch);
    fs.reserve(batch);
    uint64_t bad = 0, done = 0;
    uint64_t t0 = now_ns();
    while (done < n) {
        uint64_t k = std::min(batch, n - done);
        for (uint64_t j = 0; j < k; j++) {
            uint64_t i = done + j;
            uint64_t *slot = &res[j];
            fs.emplace_back(std::allocator_arg, pool(), [slot, i] { *slot = i + 1; });
        }
        for (uint64_t j = 0; j < k; j++) {
            fs[j].join();
            if (res[j] != done + j + 1) bad++;
        }
        fs.clear();
        done += k;
    }
    uint64_t t1 = now_ns();
    ok = bad == 0;
    return double(t1 - t0) / double(n);
}

// ---------------------------------------------------------------- skynet ---

// Each node starts its 10 children (launch::dispatch: the child runs at once,
// which keeps the tree depth-first as in Boost's own skynet example), then
// joins them and sums their results; leaves return their index.
uint64_t skynet(uint64_t num, uint64_t size) {
    if (size == 1) return num;
    uint64_t sub = size / 10;
    uint64_t res[10];
    fibers::fiber fs[10];
    for (int i = 0; i < 10; i++) {
        uint64_t *slot = &res[i];
        uint64_t child = num + uint64_t(i) * sub;
        fs[i] = fibers::fiber(fibers::launch::dispatch, std::allocator_arg, pool(),
                              [slot, child, sub] { *slot = skynet(child, sub); });
    }
    uint64_t sum = 0;
    for (int i = 0; i < 10; i++) {
        fs[i].join();
        sum += res[i];
    }
    return sum;
}

double run_skynet(uint64_t leaves, bool &ok) {
    uint64_t t0 = now_ns();
    uint64_t sum = skynet(0, leaves);
    uint64_t t1 = now_ns();
    ok = sum == leaves * (leaves - 1) / 2;
    if (!ok) std::fprintf(stderr, "skynet: sum %" PRIu64 "\n", sum);
    return double(t1 - t0) / 1e6;
}

// ----------------------------------------------------------------- mutex ---

double run_mutex(uint64_t n, bool &ok) {
    const int tasks = 8;
    fibers::mutex m;
    uint64_t counter = 0;
    std::vector<fibers::fiber> fs;
    uint64_t t0 = now_ns();
    for (int t = 0; t < tasks; t++)
        fs.emplace_back([&] {
            for (uint64_t i = 0; i < n; i++) {
                m.lock();
                counter++;
                m.unlock();
            }
        });
    for (auto &f : fs) f.join();
    uint64_t t1 = now_ns();
    ok = counter == uint64_t(tasks) * n;
    return double(t1 - t0) / double(tasks * n);
}

// -------------------------------------------------------------- pingpong ---

// Two fibers alternate through one mutex and two condition variables: ping
// sets turn = 1 and signals pong, pong sets turn = 0 and signals ping.
double run_pingpong(uint64_t n, bool &ok) {
    fibers::mutex m;
    fibers::condition_variable c_ping, c_pong;
    int turn = 0;
    uint64_t value = 0, pong_bad = 0;
    uint64_t t0 = now_ns();
    fibers::fiber pong([&] {
        std::unique_lock<fibers::mutex> lk(m);
        for (uint64_t i = 0; i < n; i++) {
            while (turn != 1) c_pong.wait(lk);
            if (value != 2 * i + 1) pong_bad++;
            value++;
            turn = 0;
            c_ping.notify_one();
        }
    });
    fibers::fiber ping([&] {
        std::unique_lock<fibers::mutex> lk(m);
        for (uint64_t i = 0; i < n; i++) {
            value++;
            turn = 1;
            c_pong.notify_one();
            while (turn != 0) c_ping.wait(lk);
        }
    });
    ping.join();
    pong.join();
    uint64_t t1 = now_ns();
    ok = value == 2 * n && pong_bad == 0;
    return double(t1 - t0) / double(n);
}

// ------------------------------------------------------------------ idle ---

// n fibers park on one condition variable; RSS growth per fiber is measured
// once all are parked, then they are released and joined.
void run_idle(uint64_t n) {
    fibers::mutex m;
    fibers::condition_variable cv;
    bool release = false;
    uint64_t parked = 0, finished = 0;
    std::vector<fibers::fiber> fs;
    fs.reserve(n);
    ctx::fixedsize_stack salloc(kStackSize);
    long before = rss_bytes();
    for (uint64_t i = 0; i < n; i++)
        fs.emplace_back(std::allocator_arg, salloc, [&] {
            std::unique_lock<fibers::mutex> lk(m);
            parked++;
            while (!release) cv.wait(lk);
            finished++;
        });
    while (true) {
        {
            std::unique_lock<fibers::mutex> lk(m);
            if (parked == n) break;
        }
        boost::this_fiber::yield();
    }
    long after = rss_bytes();
    {
        std::unique_lock<fibers::mutex> lk(m);
        release = true;
    }
    cv.notify_all();
    for (auto &f : fs) f.join();
    bool ok = before > 0 && after > 0 && finished == n;
    report("idle", "boost_fiber", double(after - before) / double(n), "bytes/task", ok);
}

// ----------------------------------------------------------------- sleep ---

double run_sleep(uint64_t n, bool &ok) {
    const auto d = std::chrono::milliseconds(10);
    std::vector<fibers::fiber> fs;
    fs.reserve(n);
    std::atomic<uint64_t> early{0}, finished{0};
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++)
        fs.emplace_back(std::allocator_arg, pool(), [&] {
            uint64_t s = now_ns();
            boost::this_fiber::sleep_for(d);
            if (now_ns() - s < 10000000u) early++;
            finished++;
        });
    for (auto &f : fs) f.join();
    uint64_t t1 = now_ns();
    ok = finished == n && early == 0;
    return double(t1 - t0) / 1e6;
}

int usage(const char *argv0) {
    std::fprintf(stderr,
                 "usage: %s <switch_context|switch_fcontext|yield|spawn_await|"
                 "spawn_await_batch|skynet|mutex|pingpong|idle|sleep> [-n N] [-r reps] "
                 "[-t threads]\n",
                 argv0);
    return 2;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 2) return usage(argv[0]);
    std::string w = argv[1];
    Opts o;
    for (int i = 2; i < argc; i++) {
        if (!std::strcmp(argv[i], "-n") && i + 1 < argc)
            o.n = std::strtoull(argv[++i], nullptr, 10);
        else if (!std::strcmp(argv[i], "-r") && i + 1 < argc)
            o.reps = std::atoi(argv[++i]);
        else if (!std::strcmp(argv[i], "-t") && i + 1 < argc)
            o.threads = unsigned(std::atoi(argv[++i]));
        else
            return usage(argv[0]);
    }
    if (o.reps < 1 || o.threads < 1) return usage(argv[0]);
    auto n_or = [&](uint64_t d) { return o.n ? o.n : d; };

    if (w == "switch_context") {
        uint64_t n = n_or(10000000);
        measure("switch", "boost_context", "ns/op", o, [&](bool &ok) { return run_context_fiber(n, ok); });
    } else if (w == "switch_fcontext") {
        uint64_t n = n_or(10000000);
        measure("switch", "boost_fcontext", "ns/op", o, [&](bool &ok) { return run_fcontext(n, ok); });
    } else if (w == "yield") {
        Scheduler s(o.threads);
        uint64_t n = n_or(2000000);
        measure("yield", "boost_fiber", "ns/op", o, [&](bool &ok) { return run_yield(n, ok); });
    } else if (w == "spawn_await") {
        Scheduler s(o.threads);
        uint64_t n = n_or(1000000);
        measure("spawn_await", "boost_fiber", "ns/op", o, [&](bool &ok) { return run_spawn_await(n, ok); });
    } else if (w == "spawn_await_batch") {
        Scheduler s(o.threads);
        uint64_t n = n_or(1000000);
        measure("spawn_await_batch", "boost_fiber", "ns/op", o,
                [&](bool &ok) { return run_spawn_await_batch(n, ok); });
    } else if (w == "skynet") {
        Scheduler s(o.threads);
        uint64_t n = n_or(1000000);
        uint64_t p = 1;
        while (p < n) p *= 10;
        if (p != n) {
            std::fprintf(stderr, "skynet: -n must be a power of 10\n");
            return 2;
        }
        measure("skynet", "boost_fiber", "ms", o, [&](bool &ok) { return run_skynet(n, ok); });
    } else if (w == "mutex") {
        Scheduler s(o.threads);
        uint64_t n = n_or(1000000);
        measure("mutex", "boost_fiber", "ns/op", o, [&](bool &ok) { return run_mutex(n, ok); });
    } else if (w == "pingpong") {
        Scheduler s(o.threads);
        uint64_t n = n_or(1000000);
        measure("pingpong", "boost_fiber", "ns/op", o, [&](bool &ok) { return run_pingpong(n, ok); });
    } else if (w == "idle") {
        Scheduler s(o.threads);
        run_idle(n_or(100000));
    } else if (w == "sleep") {
        Scheduler s(o.threads);
        uint64_t n = n_or(100000);
        measure("sleep", "boost_fiber", "ms", o, [&](bool &ok) { return run_sleep(n, ok); });
    } else {
        return usage(argv[0]);
    }
    return 0;
}
