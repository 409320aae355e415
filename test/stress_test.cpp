// Stress: large counts, races between workers, repetition. Every test checks
// an exact total. Counts scale with KIO_STRESS_SCALE (percent, default 100).
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <cerrno>
#include <random>
#include <thread>
#include <vector>

#include "kio_test_util.h"

using kt::count_dir;
using kt::iv;
using kt::kHour;
using kt::kMs;
using kt::kSec;
using kt::kUs;
using kt::scaled;
using kt::vi;

namespace {

void *ret_arg(void *arg) { return arg; }

}  // namespace

TEST(Stress, MillionSpawnAwait) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    const uint64_t n = scaled(1000000);
    uint64_t sum = 0, failures = 0;
    for (uint64_t i = 0; i < n; i++) {
        kio_task *t;
        if (kio_spawn(nullptr, ret_arg, iv(intptr_t(i & 0xffff)), &t) != 0) {
            failures++;
            continue;
        }
        void *res = nullptr;
        if (kio_await(t, &res) != 0) failures++;
        sum += uint64_t(vi(res));
    }
    uint64_t expect = 0;
    for (uint64_t i = 0; i < n; i++) expect += i & 0xffff;
    EXPECT_EQ(failures, 0u);
    EXPECT_EQ(sum, expect);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Stress, SpawnTreeSumIsExact) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    // A binary tree of tasks: each node spawns two children and sums them.
    struct Node {
        static void *run(void *arg) {
            intptr_t depth = vi(arg);
            if (depth == 0) return iv(1);
            kio_task *a, *b;
            if (kio_spawn(nullptr, run, iv(depth - 1), &a) != 0) return iv(-1000000);
            if (kio_spawn(nullptr, run, iv(depth - 1), &b) != 0) return iv(-1000000);
            void *ra = nullptr, *rb = nullptr;
            if (kio_await(a, &ra) != 0 || kio_await(b, &rb) != 0) return iv(-1000000);
            return iv(vi(ra) + vi(rb));
        }
    };
    intptr_t depth = 17;
    while (depth > 4 && (uint64_t(1) << depth) > scaled(uint64_t(1) << 17)) depth--;
    kio_task *root;
    ASSERT_EQ(kio_spawn(nullptr, Node::run, iv(depth), &root), 0);
    EXPECT_EQ(kt::await_ok(root), intptr_t(1) << depth);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Stress, EightTasksMillionMutexIncrementsOnAllWorkers) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    kio_mutex m = KIO_MUTEX_INIT;
    const long iters = long(scaled(1000000));
    long counter = 0;
    std::atomic<long> errors{0};
    std::vector<kio_task *> ts;
    for (int i = 0; i < 8; i++)
        ts.push_back(kt::spawn([&] {
            for (long k = 0; k < iters; k++) {
                if (kio_mutex_lock(&m) != 0) {
                    errors++;
                    continue;
                }
                counter++;
                kio_mutex_unlock(&m);
            }
            return intptr_t(0);
        }));
    for (kio_task *t : ts) EXPECT_EQ(kt::await_ok(t), 0);
    EXPECT_EQ(errors.load(), 0);
    EXPECT_EQ(counter, 8 * iters);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Stress, CondPingPongBetweenTwoTasksOnDifferentWorkers) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    kio_mutex m = KIO_MUTEX_INIT;
    kio_cond ping = KIO_COND_INIT, pong = KIO_COND_INIT;
    const long rounds = long(scaled(100000));
    int turn = 0;
    long a_rounds = 0, b_rounds = 0;
    std::atomic<long> errors{0}, moved{0};
    std::atomic<int> a_started{0}, b_started{0};
    long a_thread = 0, b_thread = 0;
    kio_spawn_options o;
    kio_spawn_options_init(&o);
    o.pinned = 1;
    // A pins itself to its worker and occupies it (no kio calls) until B has
    // started: B therefore starts, and is pinned, on the other worker.
    kio_task *a = kt::spawn_ex(&o, [&] {
        a_thread = kt::os_thread_id();
        a_started = 1;
        while (!b_started.load()) {
        }
        kio_mutex_lock(&m);
        for (long i = 0; i < rounds; i++) {
            while (turn != 0)
                if (kio_cond_wait(&ping, &m) != 0) errors++;
            if (kt::os_thread_id() != a_thread) moved++;
            a_rounds++;
            turn = 1;
            kio_cond_signal(&pong);
        }
        kio_mutex_unlock(&m);
        return intptr_t(0);
    });
    ASSERT_TRUE(kt::wait_flag(a_started, 1));
    kio_task *b = kt::spawn_ex(&o, [&] {
        b_thread = kt::os_thread_id();
        b_started = 1;
        kio_mutex_lock(&m);
        for (long i = 0; i < rounds; i++) {
            while (turn != 1)
                if (kio_cond_wait(&pong, &m) != 0) errors++;
            if (kt::os_thread_id() != b_thread) moved++;
            b_rounds++;
            turn = 0;
            kio_cond_signal(&ping);
        }
        kio_mutex_unlock(&m);
        return intptr_t(0);
    });
    EXPECT_EQ(kt::await_ok(a), 0);
    EXPECT_EQ(kt::await_ok(b), 0);
    EXPECT_NE(a_thread, b_thread);
    EXPECT_EQ(errors.load(), 0);
    EXPECT_EQ(moved.load(), 0);
    EXPECT_EQ(a_rounds, rounds);
    EXPECT_EQ(b_rounds, rounds);
    EXPECT_EQ(rt.destroy(), 0);
}

namespace {
constexpr intptr_t kNormal = 1, kSawCancel = 2;
}

TEST(Stress, CancelVersusCompletionRaces) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    const uint64_t n = scaled(100000);
    constexpr uint64_t kBatch = 16;  // spawn a batch, then cancel it: others run meanwhile
    uint64_t normal = 0, saw_cancel = 0, other = 0, errors = 0, done = 0;
    kio_task *batch[kBatch];
    uint64_t kind[kBatch];
    for (uint64_t base = 0; base < n; base += kBatch) {
        uint64_t b = std::min<uint64_t>(kBatch, n - base);
        for (uint64_t j = 0; j < b; j++) {
            uint64_t i = base + j;
            kind[j] = i % 3;
            int r;
            switch (kind[j]) {
            case 0:  // returns at once: never sees the request
                r = kt::try_spawn(nullptr, [] { return kNormal; }, &batch[j]);
                break;
            case 1:  // one cancellation point
                r = kt::try_spawn(nullptr, [] { return kio_yield() == -ECANCELED ? kSawCancel : kNormal; },
                                  &batch[j]);
                break;
            default:  // a short park
                r = kt::try_spawn(
                    nullptr, [] { return kio_sleep(2 * kUs) == -ECANCELED ? kSawCancel : kNormal; }, &batch[j]);
                break;
            }
            if (r != 0) {
                errors++;
                batch[j] = nullptr;
            }
        }
        if ((base / kBatch) % 2) kio_yield();  // sometimes let some start first
        for (uint64_t j = 0; j < b; j++) {
            if (!batch[j]) continue;
            void *res = nullptr;
            if (kio_cancel(batch[j], &res) != 0) {
                errors++;
                continue;
            }
            done++;
            if (vi(res) == kNormal) normal++;
            else if (vi(res) == kSawCancel) saw_cancel++;
            else other++;
            if (kind[j] == 0 && vi(res) != kNormal) other++;
        }
    }
    EXPECT_EQ(errors, 0u);
    EXPECT_EQ(other, 0u);
    EXPECT_EQ(done, n);
    EXPECT_EQ(normal + saw_cancel, n);
    std::printf("[ info ] cancel races: %llu normal, %llu saw -ECANCELED\n", (unsigned long long)normal,
                (unsigned long long)saw_cancel);
    EXPECT_EQ(rt.destroy(), 0);
}

// Writes over the stack below the caller, where its last wait's Waiter was.
// The pattern has the Waiter's "waiting" state in its low bits, so a stale
// claim from a canceler would succeed on it and change it. True if intact.
__attribute__((noinline)) static bool scribble_survives() {
    volatile uint64_t area[64];
    for (auto &v : area) v = 0x0101010101010101ull;
    for (int spin = 0; spin < 200; spin++) asm volatile("" ::: "memory");
    for (auto &v : area)
        if (v != 0x0101010101010101ull) return false;
    return true;
}

// Lets t get going for `spins` rounds (yielding every `yield_every`), then
// cancels it: true with its result in *res, false if kio_cancel failed.
static bool cancel_after_spinning(kio_task *t, unsigned spins, unsigned yield_every, void **res) {
    for (; spins; spins--) {
        if (spins % yield_every == 0) kio_yield();
        asm volatile("" ::: "memory");
    }
    return kio_cancel(t, res) == 0;
}

// An awaiter that spawns a child and awaits it at once has its wait published
// by the child itself, at its first run: until the child finishes only a
// canceler can claim that wait, and the publication makes it claimable
// before its last look at it. Awaiters canceled at random moments: each
// returns, and each child's result is taken exactly once (by the await, or
// by the kio_cancel that follows a canceled one).
TEST(Stress, CancelRacingAnAwaitOfAFreshChildLosesNothing) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    static std::atomic<uint64_t> taken{0};
    taken = 0;
    const uint64_t rounds = scaled(50000);
    std::mt19937 rng(5);
    uint64_t canceled = 0, completed = 0, errors = 0, bad = 0;
    for (uint64_t i = 0; i < rounds; i++) {
        kio_task *a = nullptr;
        int rc = kt::try_spawn(
            nullptr,
            [i] {
                kio_task *c = nullptr;
                int r = kt::try_spawn(
                    nullptr,
                    [i] {
                        if (i % 3 == 0) kio_yield();
                        if (i % 3 == 1) kt::busy_for(200);
                        return intptr_t(i + 1);
                    },
                    &c);
                if (r) return intptr_t(-1000);
                void *res = nullptr;
                r = kio_await(c, &res);
                intptr_t outcome = 0;
                if (r == -ECANCELED) {
                    outcome = 1;
                    r = kio_cancel(c, &res);
                }
                if (r) return intptr_t(-2000 + r);
                taken.fetch_add(1);
                return vi(res) == intptr_t(i + 1) ? outcome : intptr_t(-3000);
            },
            &a);
        if (rc != 0) {
            errors++;
            continue;
        }
        void *res = nullptr;
        if (!cancel_after_spinning(a, rng() % 512, 64, &res)) {
            errors++;
            continue;
        }
        if (vi(res) == 0) completed++;
        else if (vi(res) == 1) canceled++;
        else bad++;
    }
    EXPECT_EQ(errors, 0u);
    EXPECT_EQ(bad, 0u);
    EXPECT_EQ(taken.load(), rounds - errors);
    EXPECT_EQ(canceled + completed, rounds);
    std::printf("awaits canceled %llu, completed %llu\n", (unsigned long long)canceled,
                (unsigned long long)completed);
    EXPECT_EQ(rt.destroy(), 0);
}

// A task that nobody waits for finishes without its lock (one compare-and-
// swap marks it finished and drops its fiber's reference); a party that
// registers under the lock meanwhile must either see it finished or be woken
// by that finish, and the task must be freed exactly once, by whoever drops
// the last reference. Tasks on two workers finishing after a random moment,
// met by each kind of party from the main fiber or a plain thread: a
// selector (then an await), a completion queue, a detach, an await.
TEST(Stress, LockFreeFinishMeetsEveryKindOfWaiterOnce) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    kio_cq *q = nullptr;
    ASSERT_EQ(kio_cq_create(&q), 0);
    static std::atomic<uint64_t> ran{0};
    ran = 0;
    const uint64_t rounds = scaled(40000);
    std::mt19937 rng(11);
    uint64_t errors = 0, watched = 0, detached = 0, selected = 0, awaited = 0;
    auto body = [](uint64_t i, unsigned spin) {
        for (unsigned k = 0; k < spin; k++) asm volatile("" ::: "memory");
        ran.fetch_add(1);
        return intptr_t(i * 3 + 1);
    };
    auto meet = [&](kio_task *t, uint64_t i, unsigned mode) {
        void *res = nullptr;
        switch (mode) {
        case 0: {
            size_t idx = 7;
            if (kio_select(&t, 1, &idx) != 0 || idx != 0) errors++;
            if (kio_await(t, &res) != 0 || vi(res) != intptr_t(i * 3 + 1)) errors++;
            selected++;
            break;
        }
        case 1:
            if (kio_cq_watch(q, t, i) != 0) errors++;
            watched++;
            break;
        case 2:
            if (kio_detach(t) != 0) errors++;
            detached++;
            break;
        default:
            if (kio_await(t, &res) != 0 || vi(res) != intptr_t(i * 3 + 1)) errors++;
            awaited++;
        }
    };
    for (uint64_t i = 0; i < rounds; i++) {
        unsigned spin = rng() % 2048, wait = rng() % 2048, mode = unsigned(i % 4);
        kio_task *t = nullptr;
        if (kt::try_spawn(nullptr, [i, spin, &body] { return body(i, spin); }, &t) != 0) {
            errors++;
            continue;
        }
        if (i % 8 < 4) kio_yield();  // let the other worker take it now and then
        for (unsigned k = 0; k < wait; k++) asm volatile("" ::: "memory");
        if (i % 16 == 15) {
            std::thread th([&] { meet(t, i, mode); });  // a plain thread blocks
            th.join();
        } else {
            meet(t, i, mode);
        }
    }
    // Every watched task posts once, with its own result.
    std::vector<bool> seen(rounds, false);
    uint64_t posted = 0, bad = 0;
    uint64_t give_up = kio_now() + 30 * kSec;
    while (posted < watched && kio_now() < give_up) {
        kio_cq_event ev[64];
        int n = kio_cq_poll(q, ev, 64);
        for (int k = 0; k < n; k++) {
            uint64_t i = ev[k].user_data;
            if (i >= rounds || seen[i] || vi(ev[k].result) != intptr_t(i * 3 + 1)) bad++;
            else seen[i] = true;
            posted++;
        }
        if (n == 0) kio_sleep(100 * kUs);
    }
    EXPECT_EQ(errors, 0u);
    EXPECT_EQ(bad, 0u);
    EXPECT_EQ(posted, watched);
    EXPECT_EQ(selected + watched + detached + awaited, rounds);
    EXPECT_EQ(rt.destroy(), 0);  // waits for the detached ones
    EXPECT_EQ(ran.load(), rounds);
    EXPECT_EQ(kio_cq_destroy(q), 0);
}

// A parked condition waiter is woken by a broadcast while a canceler reaches
// for the same wait: the waiter withdraws its wait without a lock, and must
// not return (and reuse the frame) while the canceler still holds it.
TEST(Stress, CancelRacingWakeupsNeverTouchesAFinishedWait) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    static kio_mutex m = KIO_MUTEX_INIT;
    static kio_cond c = KIO_COND_INIT;
    static std::atomic<bool> stop{false};
    stop = false;
    kio_task *signaler = kt::spawn([] {
        while (!stop.load()) {
            kio_mutex_lock(&m);
            kio_cond_broadcast(&c);
            kio_mutex_unlock(&m);
            kio_yield();
        }
        return intptr_t(0);
    });
    ASSERT_NE(signaler, nullptr);
    const uint64_t rounds = scaled(20000);
    std::mt19937 rng(99);
    uint64_t canceled = 0, bad = 0, errors = 0;
    for (uint64_t i = 0; i < rounds; i++) {
        kio_task *t = nullptr;
        int r = kt::try_spawn(nullptr, [] {
            intptr_t intact = 1;
            for (;;) {
                if (kio_mutex_lock(&m) != 0) break;  // canceled while locking
                int w = kio_cond_wait(&c, &m);
                kio_mutex_unlock(&m);
                if (!scribble_survives()) intact = 0;
                if (w == -ECANCELED) break;
            }
            return intact;
        }, &t);
        if (r != 0) {
            errors++;
            continue;
        }
        void *res = nullptr;
        if (!cancel_after_spinning(t, rng() % 64, 16, &res)) {
            errors++;
            continue;
        }
        canceled++;
        if (vi(res) != 1) bad++;
    }
    stop = true;
    EXPECT_EQ(kio_await(signaler, nullptr), 0);
    EXPECT_EQ(errors, 0u);
    EXPECT_EQ(bad, 0u) << "a canceler changed a wait that had already ended";
    EXPECT_EQ(canceled, rounds);
    EXPECT_EQ(rt.destroy(), 0);
}

// The request lands while the task parks: the parker reads the request
// after publishing its wait, the canceler reads the wait after publishing
// the request, and neither takes a lock for it. A lost request shows as a
// sleep that ran its full 2 s.
TEST(Stress, CancelRacingParkNeverLosesTheRequest) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    const uint64_t rounds = scaled(50000);
    std::mt19937 rng(7);
    uint64_t lost = 0, errors = 0, done = 0;
    for (uint64_t i = 0; i < rounds; i++) {
        kio_task *t = nullptr;
        if (kt::try_spawn(nullptr, [] { return intptr_t(kio_sleep(2 * kSec)); }, &t) != 0) {
            errors++;
            continue;
        }
        void *res = nullptr;
        if (!cancel_after_spinning(t, rng() % 256, 64, &res)) {
            errors++;
            continue;
        }
        done++;
        if (vi(res) != -ECANCELED) lost++;
    }
    EXPECT_EQ(errors, 0u);
    EXPECT_EQ(lost, 0u) << "cancellation requests lost while the task parked";
    EXPECT_EQ(done, rounds);
    EXPECT_EQ(rt.destroy(), 0);
}

// kio_cancel_request may race another caller's await of the same handle.
// Once the await consumes it, the task's slot is reused by the next spawn
// at once: the request must reach the task it named or nothing, never the
// new occupant (whose waits would fail with -ECANCELED, or be claimed after
// they ended).
TEST(Stress, CancelRequestRacingAnAwaitNeverReachesTheNextTask) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    static std::atomic<kio_task *> cur{nullptr};
    static std::atomic<bool> stop{false};
    static std::atomic<uint64_t> hit{0};
    stop = false;
    hit = 0;
    std::vector<std::thread> cancelers;
    for (int k = 0; k < 2; k++)
        cancelers.emplace_back([] {
            while (!stop.load())
                if (kio_task *h = cur.load()) kio_cancel_request(h);
        });
    const uint64_t rounds = scaled(20000);
    uint64_t errors = 0;
    for (uint64_t i = 0; i < rounds; i++) {
        kio_task *v = nullptr;
        if (kt::try_spawn(nullptr, [] { return intptr_t(0); }, &v) != 0) {
            errors++;
            continue;
        }
        cur = v;
        for (int spin = 0; spin < 50; spin++) asm volatile("" ::: "memory");
        if (kio_await(v, nullptr) != 0) errors++;
        cur = nullptr;
        kio_task *b[2] = {nullptr, nullptr};
        for (auto &t : b)
            if (kt::try_spawn(nullptr, [] {
                    for (int j = 0; j < 3; j++)
                        if (kio_sleep(20 * kUs) != 0 || kio_check_cancel() != 0) hit++;
                    return intptr_t(0);
                }, &t) != 0)
                errors++;
        for (auto *t : b)
            if (t && kio_await(t, nullptr) != 0) errors++;
    }
    stop = true;
    for (auto &t : cancelers) t.join();
    EXPECT_EQ(errors, 0u);
    EXPECT_EQ(hit.load(), 0u) << "a request for an awaited task reached a task spawned after it";
    EXPECT_EQ(rt.destroy(), 0);
}

// Plain threads await the handle the main fiber is awaiting too, while the
// main fiber's next spawns reuse the slot: each task's result is taken by
// exactly one caller, the others get -EBUSY or -EINVAL (a stale handle), and
// no caller takes the slot's next task through the old handle (the claim
// used to compare the handle's state without its generation: a caller that
// validated the handle before it was consumed could claim the new task, and
// TSan saw its wait race the spawn that was still filling the slot).
TEST(Stress, AwaitersRacingOnOneHandleTakeEachResultOnce) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    const uint64_t rounds = scaled(20000);
    static std::vector<kio_task *> *handles;  // by round
    static std::vector<std::atomic<uint32_t>> *taken;
    static std::atomic<int64_t> cur{-1};       // the round being awaited
    static std::atomic<bool> stop{false};
    static std::atomic<uint64_t> bad{0}, misdirected{0};
    std::vector<kio_task *> hs(rounds, nullptr);
    std::vector<std::atomic<uint32_t>> counts(rounds);
    handles = &hs;
    taken = &counts;
    cur = -1;
    stop = false;
    bad = 0;
    misdirected = 0;
    std::vector<std::thread> rivals;
    for (int k = 0; k < 2; k++)
        rivals.emplace_back([] {
            while (!stop.load()) {
                int64_t i = cur.load();
                if (i < 0) continue;
                kio_task *h = (*handles)[size_t(i)];
                kio_task_get_id(h);  // a stale handle's id: 0, never a race
                void *res = nullptr;
                int r = kio_await(h, &res);
                if (r == 0) {
                    (*taken)[uintptr_t(res)]++;
                    if (uintptr_t(res) != uint64_t(i)) misdirected++;
                } else if (r != -EBUSY && r != -EINVAL) {
                    bad++;
                }
            }
        });
    uint64_t errors = 0;
    for (uint64_t i = 0; i < rounds; i++) {
        kio_task *v = nullptr;
        if (kio_spawn(nullptr, [](void *a) { return a; }, reinterpret_cast<void *>(uintptr_t(i)), &v) != 0) {
            errors++;
            continue;
        }
        hs[i] = v;
        cur = int64_t(i);
        for (int spin = 0; spin < 50; spin++) asm volatile("" ::: "memory");
        void *res = nullptr;
        int r = kio_await(v, &res);
        if (r == 0) counts[uintptr_t(res)]++;
        else if (r != -EBUSY && r != -EINVAL) errors++;
    }
    stop = true;
    for (auto &t : rivals) t.join();
    EXPECT_EQ(errors, 0u);
    EXPECT_EQ(bad.load(), 0u);
    EXPECT_EQ(misdirected.load(), 0u) << "a stale handle reached the slot's next task";
    uint64_t wrong = 0;
    for (auto &c : counts) wrong += c.load() != 1;
    EXPECT_EQ(wrong, 0u) << "results taken other than once";
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Stress, CancelFromPlainThreadsVersusCompletion) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    kio_runtime *h = rt.get();
    const uint64_t per_thread = scaled(20000);
    std::atomic<uint64_t> normal{0}, saw_cancel{0}, other{0}, errors{0};
    std::vector<std::thread> th;
    for (int k = 0; k < 2; k++)
        th.emplace_back([&] {
            for (uint64_t i = 0; i < per_thread; i++) {
                kio_task *t = nullptr;
                if (kt::try_spawn(h, [] { return kio_yield() == -ECANCELED ? kSawCancel : kNormal; }, &t) != 0) {
                    errors++;
                    continue;
                }
                void *res = nullptr;
                if (kio_cancel(t, &res) != 0) {
                    errors++;
                    continue;
                }
                if (vi(res) == kNormal) normal++;
                else if (vi(res) == kSawCancel) saw_cancel++;
                else other++;
            }
        });
    for (auto &t : th) t.join();
    EXPECT_EQ(errors.load(), 0u);
    EXPECT_EQ(other.load(), 0u);
    EXPECT_EQ(normal.load() + saw_cancel.load(), 2 * per_thread);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Stress, SelectAmongHundredTasksFinishingInRandomOrder) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    const uint64_t rounds = scaled(50);
    std::mt19937 rng(777);
    uint64_t errors = 0;
    for (uint64_t round = 0; round < rounds; round++) {
        constexpr int kN = 100;
        std::vector<kio_task *> live;
        std::vector<intptr_t> ids;
        for (intptr_t i = 1; i <= kN; i++) {
            uint64_t delay = rng() % 3000;  // microseconds
            live.push_back(kt::spawn([i, delay] {
                if (delay % 4 == 0) {
                    for (uint64_t k = 0; k < delay % 16; k++) kio_yield();
                } else {
                    kio_sleep(delay * kUs);
                }
                return i;
            }));
            ids.push_back(i);
        }
        intptr_t sum = 0;
        int done = 0;
        while (!live.empty()) {
            size_t idx = SIZE_MAX;
            if (kio_select(live.data(), live.size(), &idx) != 0 || idx >= live.size()) {
                errors++;
                break;
            }
            void *res = nullptr;
            if (kio_await(live[idx], &res) != 0) {
                errors++;
                break;
            }
            if (vi(res) != ids[idx]) errors++;
            sum += vi(res);
            done++;
            live.erase(live.begin() + long(idx));
            ids.erase(ids.begin() + long(idx));
        }
        EXPECT_EQ(done, kN);
        EXPECT_EQ(sum, intptr_t(kN) * (kN + 1) / 2);
        if (done != kN) break;
    }
    EXPECT_EQ(errors, 0u);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Stress, PlainThreadsAndFibersContendOnOneMutex) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    kio_mutex m = KIO_MUTEX_INIT;
    const long iters = long(scaled(200000));
    long counter = 0;
    std::atomic<long> errors{0};
    std::atomic<int> threads_done{0};
    std::vector<std::thread> th;
    for (int i = 0; i < 4; i++)
        th.emplace_back([&] {
            for (long k = 0; k < iters; k++) {
                if (kio_mutex_lock(&m) != 0) {
                    errors++;
                    continue;
                }
                counter++;
                kio_mutex_unlock(&m);
            }
            threads_done++;
        });
    std::vector<kio_task *> ts;
    for (int i = 0; i < 8; i++)
        ts.push_back(kt::spawn([&, i] {
            for (long k = 0; k < iters; k++) {
                if (kio_mutex_lock(&m) != 0) {
                    errors++;
                    continue;
                }
                counter++;
                if (i % 2 && k % 128 == 0) kio_yield();  // hold it across a switch
                kio_mutex_unlock(&m);
            }
            return intptr_t(0);
        }));
    for (kio_task *t : ts) EXPECT_EQ(kt::await_ok(t), 0);
    ASSERT_TRUE(kt::wait_flag(threads_done, 4, 300 * kSec));
    for (auto &t : th) t.join();
    EXPECT_EQ(errors.load(), 0);
    EXPECT_EQ(counter, 12 * iters);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Stress, ManyDetachedTasksAllRun) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    const int n = int(scaled(200000));
    std::atomic<int> ran{0};
    int errors = 0;
    for (int i = 0; i < n; i++) {
        kio_task *t = nullptr;
        if (kt::try_spawn(nullptr, [&ran, i] {
                if (i % 5 == 0) kio_yield();
                ran.fetch_add(1);
                return intptr_t(0);
            }, &t) != 0 ||
            kio_detach(t) != 0)
            errors++;
        if (i % 1000 == 999) kio_yield();
    }
    ASSERT_TRUE(kt::wait_flag(ran, n, 60 * kSec));
    EXPECT_EQ(errors, 0);
    EXPECT_EQ(ran.load(), n);
    EXPECT_EQ(rt.destroy(), 0);
}

// Four workers (more than the cores a CI machine has, so workers get
// preempted mid-operation): 400 parents each spawn 4 children per round and
// await them, odd children yield once. Wakeups overflow a worker's ring of
// woken fibers into the injection queue while other workers steal from that
// ring; a task must never be linked into a list after a thief has taken, run
// and freed it (the free-task cache shares the link), and every child runs
// exactly once.
TEST(Stress, RunRingOverflowRacingThievesLosesNoTask) {
    kt::Rt rt(4);
    ASSERT_EQ(rt.rc(), 0);
    constexpr int kParents = 400, kChildren = 4;
    const uint64_t batches = scaled(100);
    // Scaled down (the sanitizer builds), a batch keeps all 400 parents and
    // at least 5 rounds, so that the rings still overflow.
    const int rounds = int(std::max<uint64_t>(5, scaled(50)));
    std::atomic<long> bad{0};
    for (uint64_t b = 0; b < batches; b++) {
        std::vector<kio_task *> parents;
        for (int p = 0; p < kParents; p++)
            parents.push_back(kt::spawn([&bad, rounds] {
                for (int r = 0; r < rounds; r++) {
                    std::atomic<int> ran[kChildren];
                    kio_task *c[kChildren];
                    for (int k = 0; k < kChildren; k++) {
                        ran[k] = 0;
                        bool yield = (k + r) & 1;
                        c[k] = kt::spawn([&ran, k, yield] {
                            ran[k]++;
                            if (yield) kio_yield();
                            return intptr_t(k);
                        });
                    }
                    for (int k = 0; k < kChildren; k++)
                        if (kt::await_ok(c[k]) != k || ran[k].load() != 1) bad++;
                }
                return intptr_t(1);
            }));
        for (kio_task *t : parents) EXPECT_EQ(kt::await_ok(t), 1);
    }
    EXPECT_EQ(bad.load(), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

// Pinned fibers wait in their worker's ordinary (stealable) rings; a thief
// that takes one must send it home, never run it. Pinned tasks yield, wake
// each other through a condition and sleep on both workers, while unpinned
// hogs keep holding a worker for 200 us without a kio call, so that the
// other worker steals from its rings (batches that contain pinned fibers) and
// its ring overflows into the injection queue. Every pinned task checks its
// OS thread after every call and must run every round: none is lost on its
// way home.
TEST(Stress, PinnedFibersTakenByThievesGoHome) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    constexpr int kPairs = 6;
    const long rounds = long(scaled(20000));
    std::atomic<int> stop{0};
    std::atomic<long> moved{0}, errors{0}, done_rounds{0};
    std::vector<kio_task *> hogs;
    for (int i = 0; i < 4; i++)
        hogs.push_back(kt::spawn([&stop] {
            while (!stop.load()) {
                uint64_t t0 = kio_now();
                while (kio_now() - t0 < 200 * kUs) {
                }
                kio_sleep(20 * kUs);
            }
            return intptr_t(0);
        }));
    struct Pair {
        kio_mutex m = KIO_MUTEX_INIT;
        kio_cond c = KIO_COND_INIT;
        int turn = 0;
    };
    std::vector<Pair> pairs(kPairs);
    kio_spawn_options o;
    kio_spawn_options_init(&o);
    o.pinned = 1;
    std::vector<kio_task *> pinned;
    for (int p = 0; p < kPairs; p++)
        for (int me = 0; me < 2; me++)
            pinned.push_back(kt::spawn_ex(&o, [&, p, me] {
                Pair &pr = pairs[size_t(p)];
                long self = kt::os_thread_id();
                auto check = [&] {
                    if (kt::os_thread_id() != self) moved++;
                };
                for (long r = 0; r < rounds; r++) {
                    if (kio_yield() != 0) errors++;
                    check();
                    if (r % 64 == 0) {
                        if (kio_sleep(1 * kUs) != 0) errors++;
                        check();
                    }
                    if (kio_mutex_lock(&pr.m) != 0) {
                        errors++;
                        continue;
                    }
                    check();
                    while (pr.turn != me) {
                        if (kio_cond_wait(&pr.c, &pr.m) != 0) errors++;
                        check();
                    }
                    pr.turn = !me;
                    kio_cond_signal(&pr.c);
                    kio_mutex_unlock(&pr.m);
                    done_rounds++;
                }
                return intptr_t(1);
            }));
    for (kio_task *t : pinned) EXPECT_EQ(kt::await_ok(t), 1);
    stop = 1;
    for (kio_task *t : hogs) EXPECT_EQ(kt::await_ok(t), 0);
    EXPECT_EQ(moved.load(), 0) << "a pinned fiber ran on another worker";
    EXPECT_EQ(errors.load(), 0);
    EXPECT_EQ(done_rounds.load(), 2 * kPairs * rounds);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Stress, CreateDestroy1000TimesWithBusyRuntimes) {
    {
        kt::Rt warm(4);
        ASSERT_EQ(warm.rc(), 0);
    }
    int fds0 = count_dir("/proc/self/fd");
    int threads0 = kt::settled_thread_count();
    const uint64_t n = scaled(1000);
    std::atomic<uint64_t> canceled{0};
    uint64_t expect_canceled = 0;
    for (uint64_t iter = 0; iter < n; iter++) {
        kio_options o;
        kio_options_init(&o);
        o.threads = 4;
        kio_runtime *rt = nullptr;
        ASSERT_EQ(kio_runtime_create(&o, &rt), 0) << "iteration " << iter;
        static kio_mutex m = KIO_MUTEX_INIT;
        static kio_cond c = KIO_COND_INIT;
        intptr_t sum = 0;
        kio_task *ts[6];
        for (intptr_t i = 0; i < 6; i++)
            ts[i] = kt::spawn([i] {
                kio_sleep(uint64_t(i) * 10 * kUs);
                return i;
            });
        for (int i = 0; i < 3; i++) {
            kio_task *d = kt::spawn([&canceled, i] {
                int r;
                if (i == 0) {
                    r = kio_sleep(kHour);
                } else if (i == 1) {
                    r = kio_mutex_lock(&m);  // -ECANCELED if canceled before it started
                    if (r == 0) {
                        r = kio_cond_wait(&c, &m);
                        kio_mutex_unlock(&m);
                    }
                } else {
                    while ((r = kio_yield()) == 0) {
                    }
                }
                if (r == -ECANCELED) canceled++;
                return intptr_t(0);
            });
            ASSERT_NE(d, nullptr);
            if (i != 2) {
                ASSERT_EQ(kio_detach(d), 0);
            }  // the yielder's handle stays unconsumed
            expect_canceled++;
        }
        for (kio_task *t : ts) sum += kt::await_ok(t);
        ASSERT_EQ(sum, 15) << "iteration " << iter;
        ASSERT_EQ(kio_runtime_destroy(rt), 0) << "iteration " << iter;
        ASSERT_EQ(kio_current(), nullptr);
    }
    EXPECT_EQ(canceled.load(), expect_canceled);
    EXPECT_EQ(count_dir("/proc/self/fd"), fds0);
    EXPECT_EQ(kt::threads_settled_at(threads0), threads0);
}

// A fiber that wakes another and then never yields: the woken task sits in
// its worker's queue, and kio does not wake another worker for a single task
// a running fiber readied (it would usually run it next itself). Another
// worker must still take it: a sleeping one wakes at its backstop.
TEST(Stress, TaskWokenByAFiberThatNeverYieldsStillRuns) {
    const uint64_t rounds = scaled(50);
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    // (No SCOPED_TRACE: this fiber may resume on another thread, and gtest's
    // trace stack is per thread.)
    for (uint64_t round = 0; round < rounds; round++) {
        kio_mutex m = KIO_MUTEX_INIT;
        kio_cond c = KIO_COND_INIT;
        std::atomic<int> waiting{0}, ran{0}, stop{0};
        kio_task *b = kt::spawn([&] {
            kio_mutex_lock(&m);
            waiting = 1;
            while (!ran.load()) {
                if (kio_cond_wait(&c, &m) != 0) break;
                ran = 1;
            }
            kio_mutex_unlock(&m);
            return intptr_t(1);
        });
        ASSERT_TRUE(kt::wait_flag(waiting, 1));
        uint64_t t0 = kio_now();
        kio_task *a = kt::spawn([&] {
            // Busy first, so the other worker goes to sleep while this one
            // runs a fiber (rounds vary the time, around the backstop).
            kt::busy_for((1 + round % 4) * kMs);
            kio_mutex_lock(&m);
            kio_cond_signal(&c);
            kio_mutex_unlock(&m);
            // Never yields until the woken task ran (or 5 s passed).
            uint64_t end = kio_now() + 5 * kSec;
            while (!ran.load(std::memory_order_acquire) && !stop.load() && kio_now() < end) {
            }
            return intptr_t(ran.load() ? 1 : 0);
        });
        // This fiber parks in kio_await: its worker is free for either task.
        EXPECT_EQ(kt::await_ok(b), 1) << "round " << round;
        uint64_t took = kt::since(t0);  // (a's busy time included)
        EXPECT_LT(took, kt::prompt(1 * kSec)) << "round " << round;
        stop = 1;
        EXPECT_EQ(kt::await_ok(a), 1) << "round " << round;
    }
    EXPECT_EQ(rt.destroy(), 0);
}

// A fiber woken on an empty run ring waits in its worker's head slot, which
// the owner takes with plain loads and stores and a thief takes only once the
// owner looks stuck in one fiber (runqueue.h). The waker keeps its worker
// busy for 0-40 us after the wakeup, around the 5 us after which an idle
// worker may take the slot, so owner and thief race for it: the woken fiber
// must run exactly once in every round (twice would resume one context twice;
// never would hang the await).
TEST(Stress, HeadSlotTakenByOwnerOrThiefRunsItsTaskOnce) {
    const uint64_t rounds = scaled(4000);
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<uint64_t> runs{0};
    for (uint64_t round = 0; round < rounds; round++) {
        kio_mutex m = KIO_MUTEX_INIT;
        kio_cond c = KIO_COND_INIT;
        std::atomic<int> waiting{0}, signaled{0};
        kio_task *b = kt::spawn([&] {
            kio_mutex_lock(&m);
            waiting = 1;
            while (!signaled.load()) {
                if (kio_cond_wait(&c, &m) != 0) break;
            }
            kio_mutex_unlock(&m);
            runs.fetch_add(1);
            return intptr_t(1);
        });
        ASSERT_TRUE(kt::wait_flag(waiting, 1));
        kio_task *a = kt::spawn([&] {
            kio_mutex_lock(&m);  // b is parked in kio_cond_wait once this succeeds
            signaled = 1;
            kio_cond_signal(&c);
            kio_mutex_unlock(&m);
            kt::busy_for((round % 41) * kUs);
            return intptr_t(1);
        });
        ASSERT_EQ(kt::await_ok(a), 1) << "round " << round;
        ASSERT_EQ(kt::await_ok(b), 1) << "round " << round;
        ASSERT_EQ(runs.load(), round + 1) << "round " << round;
    }
    EXPECT_EQ(rt.destroy(), 0);
}

// The same race for a lone child in the spawn deque: its parent keeps the
// worker busy for 0-40 us, then awaits it (the owner pops the deque's last
// task, racing the thieves for it) while an idle worker may take it too once
// the owner looks stuck.
TEST(Stress, LoneChildTakenByOwnerOrThiefRunsOnce) {
    const uint64_t rounds = scaled(20000);
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<uint64_t> runs{0};
    kio_task *parent = kt::spawn([&] {
        for (uint64_t round = 0; round < rounds; round++) {
            kio_task *child = kt::spawn([&] {
                runs.fetch_add(1);
                return intptr_t(1);
            });
            kt::busy_for((round % 41) * kUs);
            void *r = nullptr;
            if (kio_await(child, &r) != 0 || r != iv(1)) return intptr_t(-1);
            if (runs.load() != round + 1) return intptr_t(-2);
        }
        return intptr_t(0);
    });
    EXPECT_EQ(kt::await_ok(parent), 0);
    EXPECT_EQ(runs.load(), rounds);
    EXPECT_EQ(rt.destroy(), 0);
}

// A worker pops its spawn deque without a fence while every other worker
// sleeps (Deque::pop_alone); a sleeper that wakes announces itself before it
// steals. Here the parent outlasts the other worker's spin (so that it
// sleeps), spawns one to four children (the spawn wakes it) and awaits them
// newest first at once: its pops race the waking thief's steals, the last
// child included. Each child must run exactly once; half of them run long
// enough that stealing them stays worth it (a reluctant thief sleeps
// through spawns and would not race).
TEST(Stress, SpawnDequePoppedAloneWhileAThiefWakesRunsEachChildOnce) {
    const uint64_t rounds = scaled(20000);
    constexpr int kMaxChildren = 4;
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<uint64_t> runs{0};
    kio_task *parent = kt::spawn([&] {
        std::atomic<int> ran[kMaxChildren];
        for (uint64_t round = 0; round < rounds; round++) {
            int n = 1 + int(round % kMaxChildren);
            kio_task *child[kMaxChildren];
            for (int i = 0; i < n; i++) ran[i] = 0;
            kt::busy_for((60 + round % 7 * 10) * kUs);  // past the thief's spin
            for (int i = 0; i < n; i++) {
                child[i] = kt::spawn([&, i, round] {
                    ran[i].fetch_add(1);
                    runs.fetch_add(1);
                    if ((round + uint64_t(i)) % 2) kt::busy_for(20 * kUs);
                    return intptr_t(i + 1);
                });
            }
            for (int i = n - 1; i >= 0; i--) {
                void *r = nullptr;
                if (kio_await(child[i], &r) != 0 || r != iv(i + 1)) return intptr_t(-1);
            }
            for (int i = 0; i < n; i++)
                if (ran[i].load() != 1) return intptr_t(-2);
        }
        return intptr_t(0);
    });
    EXPECT_EQ(kt::await_ok(parent), 0);
    uint64_t expected = 0;
    for (uint64_t round = 0; round < rounds; round++) expected += 1 + round % kMaxChildren;
    EXPECT_EQ(runs.load(), expected);
    EXPECT_EQ(rt.destroy(), 0);
}

// Runtimes started and stopped in a row, each with up to a hundred tasks
// (detached, or left unconsumed for the stop): long sleepers (the stop
// cancels them), spawners (detached children, some spawned while the stop
// runs, with short sleeps between) and empty ones. Every task runs exactly
// once. A destroyed runtime's task slabs go to the next one, and the slots
// of tasks whose handles were never consumed (and the main fiber's) used to
// go with their reference still counted: a shutdown scan could pin such a
// free slot, a spawn filling it overwrote the pin, and the scan's release
// then freed the new task while it was still queued (it ran twice, or its
// slot was reused under it: crashes).
namespace cycles {
struct Job {
    std::atomic<int> runs{0};
    int kind = 0;  // 0 empty, 1 long sleep, 2 spawner
    int depth = 0;
    uint64_t seed = 0;
};
std::atomic<uint64_t> spawned{0}, twice{0};
std::vector<Job *> *all;
std::mutex all_lock;

uint64_t next(uint64_t &x) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

Job *new_job(uint64_t &rng, int depth) {
    Job *j = new Job;
    j->kind = int(next(rng) % 3);
    j->depth = depth;
    j->seed = next(rng) | 1;
    std::lock_guard<std::mutex> g(all_lock);
    all->push_back(j);
    return j;
}

void *run(void *p) {
    auto *j = static_cast<Job *>(p);
    if (j->runs.fetch_add(1) != 0) twice++;
    uint64_t rng = j->seed;
    if (j->kind == 1) kio_sleep(kSec);
    if (j->kind == 2 && j->depth < 3) {
        int n = 1 + int(next(rng) % 6);
        for (int i = 0; i < n; i++) {
            if (i) kio_sleep(next(rng) % 30 * kUs);
            kio_task *t = nullptr;
            if (kio_spawn(nullptr, run, new_job(rng, j->depth + 1), &t) != 0) continue;
            spawned++;
            kio_detach(t);
        }
    }
    return nullptr;
}
}  // namespace cycles

TEST(Stress, RuntimeCyclesRunEachTaskOnce) {
    const int rounds = int(std::max<uint64_t>(20, scaled(300)));
    std::vector<cycles::Job *> jobs;
    cycles::all = &jobs;
    cycles::spawned = 0;
    cycles::twice = 0;
    uint64_t rng = 0x9e3779b97f4a7c15u;
    for (int round = 0; round < rounds; round++) {
        kio_options o;
        kio_options_init(&o);
        o.threads = 2;
        kio_runtime *rt = nullptr;
        ASSERT_EQ(kio_runtime_start(&o, &rt), 0);
        int n = 1 + int(cycles::next(rng) % 100);
        for (int i = 0; i < n; i++) {
            kio_task *t = nullptr;
            ASSERT_EQ(kio_spawn(rt, cycles::run, cycles::new_job(rng, 0), &t), 0);
            cycles::spawned++;
            if (cycles::next(rng) % 4) {
                ASSERT_EQ(kio_detach(t), 0);
            }  // else left unconsumed for the stop
        }
        if (round % 2) std::this_thread::sleep_for(std::chrono::microseconds(cycles::next(rng) % 2000));
        ASSERT_EQ(kio_runtime_stop(rt), 0);
    }
    EXPECT_EQ(cycles::twice.load(), 0u);
    uint64_t ran = 0;
    for (cycles::Job *j : jobs) {
        EXPECT_EQ(j->runs.load(), 1);
        ran += uint64_t(j->runs.load());
        delete j;
    }
    EXPECT_EQ(ran, cycles::spawned.load());
    EXPECT_EQ(uint64_t(jobs.size()), cycles::spawned.load());
}

TEST(Stress, TaskThatNeverYieldsDoesNotStopOtherWorkers) {
    const uint64_t rounds = scaled(20);
    for (uint64_t round = 0; round < rounds; round++) {
        SCOPED_TRACE("round " + std::to_string(round));
        kt::Rt rt(2);
        ASSERT_EQ(rt.rc(), 0);
        std::atomic<int> flag{0}, spinning{0};
        kio_task *spinner = kt::spawn([&] {
            spinning = 1;
            while (!flag.load(std::memory_order_acquire)) {
            }
            return intptr_t(1);
        });
        ASSERT_TRUE(kt::wait_flag(spinning, 1));
        // Timers armed by tasks on whichever worker is free, plus spawn/await.
        std::vector<kio_task *> sleepers;
        for (int i = 0; i < 10; i++)
            sleepers.push_back(kt::spawn([i] {
                uint64_t d = uint64_t(1 + i) * kMs;
                uint64_t t0 = kio_now();
                int r = kio_sleep(d);
                return intptr_t(r == 0 && kt::since(t0) >= d);
            }));
        intptr_t sum = 0;
        for (int i = 0; i < 1000; i++) sum += kt::await_ok(kt::spawn([i] { return intptr_t(i); }));
        EXPECT_EQ(sum, 999 * 1000 / 2);
        uint64_t s0 = kio_now();
        EXPECT_EQ(kio_sleep(20 * kMs), 0);
        EXPECT_LT(kt::since(s0), kt::prompt(1 * kSec));
        intptr_t woke = 0;
        for (kio_task *t : sleepers) woke += kt::await_ok(t);
        EXPECT_EQ(woke, 10);
        flag.store(1, std::memory_order_release);
        EXPECT_EQ(kt::await_ok(spinner), 1);
        EXPECT_EQ(rt.destroy(), 0);
    }
}
