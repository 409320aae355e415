// Time: kio_now, kio_sleep, kio_sleep_until, timers under load, and a fiber
// that never yields.
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kio_test_util.h"

using kt::iv;
using kt::kHour;
using kt::kMs;
using kt::kSec;
using kt::kUs;
using kt::vi;

namespace {
uint64_t mono_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}
}  // namespace

TEST(Now, IsMonotonicClockInNanoseconds) {
    uint64_t a = mono_ns();
    uint64_t n = kio_now();
    uint64_t b = mono_ns();
    EXPECT_LE(a, n);
    EXPECT_LE(n, b);
    uint64_t prev = kio_now();
    uint64_t decreases = 0;
    for (int i = 0; i < 200000; i++) {
        uint64_t v = kio_now();
        if (v < prev) decreases++;
        prev = v;
    }
    EXPECT_EQ(decreases, 0u);
    // It advances: ~2 ms of wall time is ~2e6 ns.
    uint64_t t0 = kio_now();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    EXPECT_GE(kio_now() - t0, 2 * kMs);
}

TEST(Now, MonotonicAcrossWorkers) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::vector<kio_task *> ts;
    for (int i = 0; i < 8; i++)
        ts.push_back(kt::spawn([] {
            intptr_t bad = 0;
            uint64_t prev = kio_now();
            for (int k = 0; k < 2000; k++) {
                if (k % 16 == 0) kio_yield();  // may resume on another worker
                uint64_t v = kio_now();
                if (v < prev) bad++;
                prev = v;
            }
            return bad;
        }));
    for (kio_task *t : ts) EXPECT_EQ(kt::await_ok(t), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Sleep, SleepsAtLeastTheDuration) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    for (uint64_t d : {1 * kMs, 10 * kMs, 25 * kMs}) {
        uint64_t t0 = kio_now();
        EXPECT_EQ(kio_sleep(d), 0);
        uint64_t took = kt::since(t0);
        EXPECT_GE(took, d);
        EXPECT_LT(took, kt::prompt(1 * kSec));
    }
    kio_task *t = kt::spawn([] {
        uint64_t t0 = kio_now();
        int r = kio_sleep(10 * kMs);
        uint64_t took = kt::since(t0);
        return intptr_t(r == 0 && took >= 10 * kMs && took < kt::prompt(1 * kSec));
    });
    EXPECT_EQ(kt::await_ok(t), 1);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Sleep, SleepUntilWaitsForDeadline) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    uint64_t deadline = kio_now() + 15 * kMs;
    EXPECT_EQ(kio_sleep_until(deadline), 0);
    EXPECT_GE(kio_now(), deadline);
    EXPECT_LT(kio_now() - deadline, kt::prompt(1 * kSec));
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Sleep, SleepUntilPastReturnsAtOnceWithoutParking) {
    kt::Rt rt(1);  // one worker: a spawned task runs only if main parks
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> ran{0};
    kio_task *t = kt::spawn([&] {
        ran = 1;
        return intptr_t(0);
    });
    uint64_t now = kio_now();
    EXPECT_EQ(kio_sleep_until(now - 1 * kMs), 0);
    EXPECT_EQ(kio_sleep_until(1), 0);
    EXPECT_EQ(kio_sleep_until(now), 0);
    EXPECT_EQ(ran.load(), 0);
    EXPECT_EQ(kt::await_ok(t), 0);
    EXPECT_EQ(ran.load(), 1);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Sleep, SleepZeroYields) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> ran{0};
    kio_task *t = kt::spawn([&] {
        ran = 1;
        return intptr_t(0);
    });
    EXPECT_EQ(ran.load(), 0);
    EXPECT_EQ(kio_sleep(0), 0);
    EXPECT_EQ(ran.load(), 1);
    EXPECT_EQ(kt::await_ok(t), 0);
    // Round robin with sleep(0) as the yield.
    std::string log;
    auto mk = [&](char c) {
        return kt::spawn([&log, c] {
            for (int i = 0; i < 3; i++) {
                log += c;
                kio_sleep(0);
            }
            return intptr_t(0);
        });
    };
    kio_task *a = mk('A'), *b = mk('B');
    EXPECT_EQ(kt::await_ok(a), 0);
    EXPECT_EQ(kt::await_ok(b), 0);
    EXPECT_EQ(log, "BABABA");
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Sleep, FromPlainThreadSleeps) {
    int rc = 9, rc0 = 9, rc_until = 9, rc_past = 9;
    uint64_t took = 0, took_until = 0;
    std::thread th([&] {
        uint64_t t0 = kio_now();
        rc = kio_sleep(10 * kMs);
        took = kt::since(t0);
        rc0 = kio_sleep(0);
        uint64_t d = kio_now() + 10 * kMs;
        rc_until = kio_sleep_until(d);
        took_until = kio_now() >= d ? 1 : 0;
        rc_past = kio_sleep_until(1);
    });
    th.join();
    EXPECT_EQ(rc, 0);
    EXPECT_GE(took, 10 * kMs);
    EXPECT_LT(took, kt::prompt(1 * kSec));
    EXPECT_EQ(rc0, 0);
    EXPECT_EQ(rc_until, 0);
    EXPECT_EQ(took_until, 1u);
    EXPECT_EQ(rc_past, 0);
    // Also from a plain thread while a runtime exists elsewhere.
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::thread th2([&] {
        uint64_t t0 = kio_now();
        rc = kio_sleep(10 * kMs);
        took = kt::since(t0);
    });
    th2.join();
    EXPECT_EQ(rc, 0);
    EXPECT_GE(took, 10 * kMs);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Sleep, ThousandTasksWithRandomDurationsAllWakeOnTime) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    constexpr int kN = 1000;
    std::mt19937 rng(12345);
    std::vector<kio_task *> ts;
    std::atomic<int> early{0}, failed{0};
    for (int i = 0; i < kN; i++) {
        uint64_t d = (1 + rng() % 20) * kMs;
        ts.push_back(kt::spawn([d, &early, &failed] {
            uint64_t t0 = kio_now();
            if (kio_sleep(d) != 0) failed++;
            if (kt::since(t0) < d) early++;
            return intptr_t(1);
        }));
    }
    uint64_t t0 = kio_now();
    intptr_t woke = 0;
    for (kio_task *t : ts) woke += kt::await_ok(t);
    EXPECT_EQ(woke, kN);
    EXPECT_EQ(early.load(), 0);
    EXPECT_EQ(failed.load(), 0);
    EXPECT_LT(kt::since(t0), kt::prompt(2 * kSec));
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Sleep, ThousandTasksWithTheSameDeadlineAllWake) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    constexpr int kN = 1000;
    uint64_t deadline = kio_now() + 30 * kMs;
    std::vector<kio_task *> ts;
    for (int i = 0; i < kN; i++)
        ts.push_back(kt::spawn([deadline] {
            int r = kio_sleep_until(deadline);
            return intptr_t(r == 0 && kio_now() >= deadline);
        }));
    intptr_t ok = 0;
    for (kio_task *t : ts) ok += kt::await_ok(t);
    EXPECT_EQ(ok, kN);
    EXPECT_LT(kio_now() - deadline, kt::prompt(1 * kSec));
    EXPECT_EQ(rt.destroy(), 0);
}

// The earliest timer fires first however the timers were armed: in deadline
// order (the timer FIFO), against it (the heap), or mixed. One worker, fewer
// wakers than its run ring holds, so wake order is firing order.
TEST(Sleep, TimersFireInDeadlineOrderWhateverTheArmingOrder) {
    constexpr int kN = 200;
    // rank[k]: the deadline rank of the k-th timer armed. Ranks 60..139 in
    // order, then the rest shuffled: later and earlier ones interleave.
    std::vector<int> rank, rest;
    for (int r = 60; r < 140; r++) rank.push_back(r);
    for (int r = 0; r < kN; r++)
        if (r < 60 || r >= 140) rest.push_back(r);
    std::shuffle(rest.begin(), rest.end(), std::mt19937(7));
    rank.insert(rank.end(), rest.begin(), rest.end());
    // All must be armed before the first fires; on a machine too loaded for
    // that, the run means nothing and is repeated with a wider margin.
    for (uint64_t margin : kt::margins(50 * kMs)) {
        SCOPED_TRACE("margin " + std::to_string(margin / kMs) + " ms");
        kt::Rt rt(1);
        ASSERT_EQ(rt.rc(), 0);
        uint64_t base = kio_now() + margin;
        std::atomic<int> armed{0};
        std::atomic<bool> late{false};
        std::mutex lock;
        std::vector<int> woke;
        std::vector<kio_task *> ts;
        for (int i = 0; i < kN; i++)
            ts.push_back(kt::spawn([&] {
                int r = rank[armed++];
                uint64_t d = base + uint64_t(r) * 300 * kUs;
                if (armed.load() == kN && kio_now() >= base) late = true;
                int rc = kio_sleep_until(d);
                bool on_time = kio_now() >= d;
                {
                    std::lock_guard<std::mutex> g(lock);
                    woke.push_back(r);
                }
                return intptr_t(rc == 0 && on_time);
            }));
        intptr_t ok = 0;
        for (kio_task *t : ts) ok += kt::await_ok(t);
        EXPECT_EQ(ok, kN);
        EXPECT_EQ(rt.destroy(), 0);
        if (late.load() && !kt::last_margin(margin, 50 * kMs)) continue;
        ASSERT_FALSE(late.load()) << "arming took too long for this test to mean anything";
        std::vector<int> expect(kN);
        for (int r = 0; r < kN; r++) expect[size_t(r)] = r;
        EXPECT_EQ(woke, expect);
        return;
    }
}

// Sleepers removed from the front, the back and the middle of the timer FIFO
// (here by cancellation), enough of them that it compacts and later removals
// find renumbered entries: each canceled one returns -ECANCELED, every other
// one still wakes, on time.
TEST(Sleep, CanceledSleepersLeaveTheOthersOnTime) {
    constexpr int kN = 1000;
    // All cancels must happen before the first deadline; on a machine too
    // loaded for that, the run means nothing and is repeated with a wider
    // margin.
    for (uint64_t margin : kt::margins(300 * kMs)) {
        SCOPED_TRACE("margin " + std::to_string(margin / kMs) + " ms");
        kt::Rt rt(1);
        ASSERT_EQ(rt.rc(), 0);
        uint64_t base = kio_now() + margin;
        std::atomic<int> armed{0};
        std::vector<int> k_of(kN, -1);  // spawn index -> arming order
        std::vector<kio_task *> ts;
        for (int i = 0; i < kN; i++)
            ts.push_back(kt::spawn([&, i] {
                int k = armed++;
                k_of[size_t(i)] = k;
                uint64_t d = base + uint64_t(k) * 50 * kUs;  // armed in deadline order
                int rc = kio_sleep_until(d);
                if (rc == -ECANCELED) return intptr_t(2);
                return intptr_t(rc == 0 && kio_now() >= d ? 1 : -1);
            }));
        while (armed.load() < kN) ASSERT_EQ(kio_yield(), 0);
        std::vector<int> task_of(kN);
        for (int i = 0; i < kN; i++) task_of[size_t(k_of[size_t(i)])] = i;
        std::vector<int> victims;  // arming orders: the front, the back, 600 others
        for (int k = 1; k < kN - 1; k++) victims.push_back(k);
        std::shuffle(victims.begin(), victims.end(), std::mt19937(11));
        victims.resize(600);
        victims.insert(victims.begin(), {0, kN - 1});
        std::vector<bool> canceled(kN, false);
        std::vector<intptr_t> got(kN, 0);
        for (int k : victims) {
            int i = task_of[size_t(k)];
            got[size_t(i)] = kt::cancel_ok(ts[size_t(i)]);
            canceled[size_t(i)] = true;
        }
        bool late = kio_now() >= base;
        for (int i = 0; i < kN; i++)
            if (!canceled[size_t(i)]) got[size_t(i)] = kt::await_ok(ts[size_t(i)]);
        EXPECT_EQ(rt.destroy(), 0);
        if (late && !kt::last_margin(margin, 300 * kMs)) continue;
        EXPECT_FALSE(late) << "the cancels took too long for this test to mean anything";
        for (int i = 0; i < kN; i++)
            EXPECT_EQ(got[size_t(i)], canceled[size_t(i)] ? 2 : 1) << "task " << i << ", arming order " << k_of[size_t(i)];
        return;
    }
}

// Deadlines in the last 2 ms before UINT64_MAX are as valid as any: the
// worker that covers another's timers adds a grace period to them, which
// must not wrap around into the past and keep an idle worker spinning.
TEST(Sleep, DeadlinesNearTheEndOfTimeLeaveIdleWorkersAsleep) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    // Two busy tasks: the second worker starts (workers start lazily).
    std::vector<kio_task *> busy;
    for (int i = 0; i < 2; i++)
        busy.push_back(kt::spawn([] {
            uint64_t end = kio_now() + 50 * kMs;
            while (kio_now() < end) {
            }
            return intptr_t(0);
        }));
    for (kio_task *t : busy) EXPECT_EQ(kt::await_ok(t), 0);
    std::vector<kio_task *> ts;
    for (int i = 0; i < 4; i++)
        ts.push_back(kt::spawn([i] { return intptr_t(kio_sleep_until(UINT64_MAX - 1 - uint64_t(i) * kUs)); }));
    // 2^32 ms ahead (about 50 days): a wait in whole milliseconds truncated
    // to an int wraps (epoll_wait, used where epoll_pwait2 is missing and in
    // TSan builds); the cap keeps it a long wait.
    ts.push_back(kt::spawn([] { return intptr_t(kio_sleep((uint64_t(1) << 32) * kMs)); }));
    ASSERT_EQ(kio_sleep(50 * kMs), 0);  // the sleepers parked
    auto cpu_ns = [] {
        rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        return (uint64_t(ru.ru_utime.tv_sec) + uint64_t(ru.ru_stime.tv_sec)) * kSec +
               (uint64_t(ru.ru_utime.tv_usec) + uint64_t(ru.ru_stime.tv_usec)) * kUs;
    };
    // The main fiber parks on a condition that a plain thread signals in
    // half a second: meanwhile both workers have nothing to do.
    kio_mutex m = KIO_MUTEX_INIT;
    kio_cond c = KIO_COND_INIT;
    bool go = false;
    uint64_t c0 = cpu_ns(), t0 = kio_now();
    std::thread signaler([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        kio_mutex_lock(&m);
        go = true;
        kio_cond_signal(&c);
        kio_mutex_unlock(&m);
    });
    ASSERT_EQ(kio_mutex_lock(&m), 0);
    while (!go) ASSERT_EQ(kio_cond_wait(&c, &m), 0);
    kio_mutex_unlock(&m);
    signaler.join();
    uint64_t wall = kt::since(t0), cpu = cpu_ns() - c0;
    // A spinning worker burns a whole core; idle ones next to nothing.
    EXPECT_LT(cpu, wall / 2) << "CPU " << cpu / kMs << " ms in " << wall / kMs << " ms";
    for (kio_task *t : ts) EXPECT_EQ(kt::cancel_ok(t), -ECANCELED);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Sleep, TimersFireOnASingleWorkerBusyYielding) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> stop{0};
    std::vector<kio_task *> busy;
    for (int i = 0; i < 3; i++)
        busy.push_back(kt::spawn([&] {
            while (!stop.load()) kio_yield();
            return intptr_t(0);
        }));
    uint64_t t0 = kio_now();
    EXPECT_EQ(kio_sleep(10 * kMs), 0);
    uint64_t took = kt::since(t0);
    EXPECT_GE(took, 10 * kMs);
    EXPECT_LT(took, kt::prompt(510 * kMs));
    stop = 1;
    for (kio_task *t : busy) EXPECT_EQ(kt::await_ok(t), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Sleep, ExtremeDeadlinesDoNotDisturbOtherTimers) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> parked{0};
    std::vector<kio_task *> far;
    for (uint64_t d : {UINT64_MAX, UINT64_MAX - 1, UINT64_MAX - 1 * kMs})
        far.push_back(kt::spawn([d, &parked] {
            parked++;
            return intptr_t(kio_sleep_until(d));
        }));
    ASSERT_TRUE(kt::wait_flag(parked, 3));
    for (int i = 0; i < 5; i++) {
        uint64_t t0 = kio_now();
        EXPECT_EQ(kio_sleep(10 * kMs), 0);
        uint64_t took = kt::since(t0);
        EXPECT_GE(took, 10 * kMs);
        EXPECT_LT(took, kt::prompt(1 * kSec));
    }
    for (kio_task *t : far) EXPECT_EQ(kt::cancel_ok(t), -ECANCELED);  // none woke early
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Sleep, TimersFireWhileEveryWorkerIsBusyYielding) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> stop{0}, busy_started{0};
    std::vector<kio_task *> busy;
    for (int i = 0; i < 6; i++)
        busy.push_back(kt::spawn([&] {
            busy_started++;
            intptr_t n = 0;
            while (!stop.load()) {
                kio_yield();
                n++;
            }
            return intptr_t(n > 0);
        }));
    std::vector<kio_task *> sleepers;
    for (int i = 0; i < 4; i++)
        sleepers.push_back(kt::spawn([i] {
            uint64_t d = uint64_t(5 + 5 * i) * kMs;
            uint64_t t0 = kio_now();
            int r = kio_sleep(d);
            uint64_t took = kt::since(t0);
            return intptr_t(r == 0 && took >= d && took < d + kt::prompt(500 * kMs));
        }));
    // The main fiber sleeps too, competing with the yielders.
    uint64_t t0 = kio_now();
    EXPECT_EQ(kio_sleep(20 * kMs), 0);
    uint64_t took = kt::since(t0);
    EXPECT_GE(took, 20 * kMs);
    EXPECT_LT(took, kt::prompt(520 * kMs));
    for (kio_task *t : sleepers) EXPECT_EQ(kt::await_ok(t), 1);
    EXPECT_TRUE(kt::wait_flag(busy_started, 6));  // (slow hosts: every yielder got going)
    stop = 1;
    for (kio_task *t : busy) EXPECT_EQ(kt::await_ok(t), 1);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Sleep, TaskThatNeverYieldsDoesNotStopOtherWorkers) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> flag{0}, spinning{0};
    kio_task *spinner = kt::spawn([&] {
        spinning = 1;
        uint64_t spins = 0;
        while (!flag.load(std::memory_order_acquire)) spins++;  // no kio calls at all
        return intptr_t(spins > 0 ? 1 : 2);
    });
    ASSERT_NE(spinner, nullptr);
    // Get the spinner going (it may start on either worker).
    ASSERT_TRUE(kt::wait_flag(spinning, 1));
    uint64_t t0 = kio_now();
    intptr_t sum = 0;
    for (int i = 0; i < 1000; i++) {
        kio_task *t = kt::spawn([i] { return intptr_t(i); });
        sum += kt::await_ok(t);
    }
    EXPECT_EQ(sum, 999 * 1000 / 2);
    uint64_t s0 = kio_now();
    EXPECT_EQ(kio_sleep(20 * kMs), 0);
    uint64_t slept = kt::since(s0);
    EXPECT_GE(slept, 20 * kMs);
    EXPECT_LT(slept, kt::prompt(1 * kSec));
    EXPECT_LT(kt::since(t0), kt::prompt(10 * kSec));
    flag.store(1, std::memory_order_release);
    EXPECT_EQ(kt::await_ok(spinner), 1);
    EXPECT_EQ(rt.destroy(), 0);
}

// The I/O counterpart: a descriptor registered with a worker whose fiber then
// never yields still wakes the fibers that wait on it (an idle worker
// collects the readiness), as its timers still fire.
TEST(Sleep, DescriptorOfAWorkerThatNeverYieldsStillWakesItsReader) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    std::atomic<int> hogging{0}, stop{0};
    kio_spawn_options o;
    kio_spawn_options_init(&o);
    o.pinned = 1;  // registers sv[0] with its worker's poller and stays there
    kio_task *hog = kt::spawn_ex(&o, [&] {
        int r = kio_poll(sv[0], POLLIN, kio_now() + 1 * kMs);
        hogging = r == -ETIMEDOUT ? 1 : 2;
        uint64_t t0 = kio_now();  // no kio call that could switch from here on
        while (!stop.load(std::memory_order_acquire) && kio_now() - t0 < 5 * kSec) {
        }
        return intptr_t(1);
    });
    ASSERT_NE(hog, nullptr);
    ASSERT_TRUE(kt::wait_flag(hogging, 1));
    std::atomic<uint64_t> woke{0};
    kio_task *reader = kt::spawn([&] {
        char c = 0;
        ssize_t r = kio_read(sv[0], &c, 1);
        woke = kio_now();
        return intptr_t(r == 1 && c == 'x' ? 1 : 2);
    });
    ASSERT_NE(reader, nullptr);
    EXPECT_EQ(kio_sleep(50 * kMs), 0);  // the reader parks; idle backstops lengthen
    uint64_t sent = kio_now();
    ASSERT_EQ(write(sv[1], "x", 1), 1);
    EXPECT_EQ(kt::await_ok(reader), 1);
    EXPECT_LT(woke.load() - sent, kt::prompt(1 * kSec));  // not when the hog gives up (5 s)
    stop.store(1, std::memory_order_release);
    EXPECT_EQ(kt::await_ok(hog), 1);
    EXPECT_EQ(kio_close(sv[0]), 0);
    close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

// Fibers and plain threads agree: a sleep whose end has passed returns 0,
// even when the thread's deadline passed too.
TEST(Sleep, PastSleepUnderAPastDeadlineIsZeroEverywhere) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    auto probe = [] {
        uint64_t now = kio_now();
        uint64_t saved = kio_deadline_set(now - 2);
        int r = kio_sleep_until(now - 1);
        int r2 = kio_sleep_until(now + 1000 * kt::kMs);  // deadline first
        kio_deadline_set(saved);
        return std::make_pair(r, r2);
    };
    auto fiber = probe();
    std::pair<int, int> plain;
    std::thread([&] { plain = probe(); }).join();
    EXPECT_EQ(fiber.first, 0);
    EXPECT_EQ(plain.first, 0);
    EXPECT_EQ(fiber.second, -ETIMEDOUT);
    EXPECT_EQ(plain.second, -ETIMEDOUT);
    EXPECT_EQ(rt.destroy(), 0);
}
