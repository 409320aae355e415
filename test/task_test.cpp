// Tasks: spawn, await, cancel, detach, select, yield, ids, spawn options, and
// cancellation semantics.
#include <alloca.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kio_test_util.h"

using kt::iv;
using kt::kHour;
using kt::kMs;
using kt::kSec;
using kt::kUs;
using kt::vi;

namespace {

void *ret_arg_plus_one(void *arg) { return iv(vi(arg) + 1); }
void *ret_null(void *) { return nullptr; }

// Blocks (politely, as a cancellation-free loop of sleeps) until flag != 0.
intptr_t block_until(std::atomic<int> &flag, intptr_t result) {
    while (!flag.load()) kio_sleep(200 * kUs);
    return result;
}

// A task that awaits target and returns its result (or the await's error);
// returns once that task is parked in kio_await.
kio_task *spawn_parked_awaiter(kio_task *target) {
    struct kio_stats before;
    kio_stats_init(&before);
    EXPECT_EQ(kio_stats(nullptr, &before), 0);
    kio_task *awaiter = kt::spawn([target] {
        void *res = nullptr;
        int r = kio_await(target, &res);
        return r ? intptr_t(r) : vi(res);
    });
    EXPECT_TRUE(kt::wait_parks(nullptr, KIO_PARK_AWAIT, before.parks[KIO_PARK_AWAIT] + 1));
    return awaiter;
}

}  // namespace

// ---------------------------------------------------------------------------
// Spawn and await

TEST(Task, SpawnAwaitPassesArgAndResult) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    kio_task *ts[10];
    for (intptr_t i = 0; i < 10; i++) ASSERT_EQ(kio_spawn(nullptr, ret_arg_plus_one, iv(i * 100), &ts[i]), 0);
    for (intptr_t i = 0; i < 10; i++) {
        void *res = iv(-1);
        ASSERT_EQ(kio_await(ts[i], &res), 0);
        EXPECT_EQ(vi(res), i * 100 + 1);
    }
    // Explicit runtime works the same.
    kio_task *t;
    ASSERT_EQ(kio_spawn(rt.get(), ret_arg_plus_one, iv(41), &t), 0);
    EXPECT_EQ(kt::await_ok(t), 42);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Task, AwaitWithNullResultPointer) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_task *t;
    ASSERT_EQ(kio_spawn(nullptr, ret_arg_plus_one, iv(1), &t), 0);
    EXPECT_EQ(kio_await(t, nullptr), 0);
    ASSERT_EQ(kio_spawn(nullptr, ret_null, nullptr, &t), 0);
    void *res = iv(123);
    EXPECT_EQ(kio_await(t, &res), 0);
    EXPECT_EQ(res, nullptr);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Task, SpawnNullFnOrOutIsEinval) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_task *t = nullptr;
    EXPECT_EQ(kio_spawn(nullptr, nullptr, nullptr, &t), -EINVAL);
    EXPECT_EQ(kio_spawn(rt.get(), nullptr, nullptr, &t), -EINVAL);
    EXPECT_EQ(kio_spawn(nullptr, ret_null, nullptr, nullptr), -EINVAL);
    EXPECT_EQ(kio_spawn(rt.get(), ret_null, nullptr, nullptr), -EINVAL);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Task, SpawnWithNullRuntimeFromPlainThreadIsEperm) {
    std::atomic<int> r{1};
    std::thread th([&] {
        kio_task *t = nullptr;
        r = kio_spawn(nullptr, ret_null, nullptr, &t);
    });
    th.join();
    EXPECT_EQ(r.load(), -EPERM);
    // Also while a runtime exists elsewhere.
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::thread th2([&] {
        kio_task *t = nullptr;
        r = kio_spawn(nullptr, ret_null, nullptr, &t);
    });
    th2.join();
    EXPECT_EQ(r.load(), -EPERM);
    EXPECT_EQ(rt.destroy(), 0);
}

// Task slots go back to the runtime's pool one at a time from plain threads
// and in batches from workers, and come out again in batches: while plain
// threads churn through spawn and await, fibers keep 2,000 tasks alive at
// once, and every one must have a slot of its own (a slot handed out twice
// would mix up two tasks' handles and results).
TEST(Task, SlotsRecycledByPlainThreadsAndWorkersStayDistinct) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    kio_runtime *r = rt.get();
    std::atomic<bool> stop{false};
    std::atomic<int> plain_bad{0}, plain_done{0};
    std::vector<std::thread> churn;
    for (int i = 0; i < 2; i++)
        churn.emplace_back([&, i] {
            for (intptr_t k = 0; !stop.load(); k++) {
                kio_task *t = nullptr;
                void *res = nullptr;
                if (kio_spawn(r, ret_arg_plus_one, iv(i * 1000000 + k), &t) != 0 || kio_await(t, &res) != 0 ||
                    vi(res) != i * 1000000 + k + 1)
                    plain_bad++;
                plain_done++;
            }
        });
    constexpr int kLive = 2000;
    // Enough rounds, and enough single-slot returns from the plain threads
    // mixed in (sanitizer builds churn about 300 per second).
    uint64_t give_up = kio_now() + 15 * kSec;
    for (int round = 0; (round < 10 || plain_done.load() < 2000) && kio_now() < give_up && !HasFailure();
         round++) {
        std::vector<kio_task *> ts(kLive);
        std::atomic<int> go{0};
        for (int i = 0; i < kLive; i++)
            ts[i] = kt::spawn([&go, i] {
                while (!go.load()) kio_sleep(100 * kUs);
                return intptr_t(i) * 7 + 3;
            });
        std::set<kio_task *> distinct(ts.begin(), ts.end());
        EXPECT_EQ(distinct.size(), size_t(kLive)) << "round " << round;
        kio_sleep(kMs);  // they run and park, on both workers
        go = 1;
        for (int i = 0; i < kLive; i++) EXPECT_EQ(kt::await_ok(ts[i]), intptr_t(i) * 7 + 3) << "round " << round;
    }
    stop = true;
    for (auto &th : churn) th.join();
    EXPECT_EQ(plain_bad.load(), 0);
    EXPECT_GE(plain_done.load(), 1000);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Task, SpawnedTaskDoesNotRunBeforeCallerParks) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> ran{0};
    kio_task *t = kt::spawn([&] {
        ran = 1;
        return intptr_t(0);
    });
    EXPECT_EQ(ran.load(), 0);
    EXPECT_EQ(kio_yield(), 0);
    EXPECT_EQ(ran.load(), 1);
    EXPECT_EQ(kt::await_ok(t), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

// ---------------------------------------------------------------------------
// Handle misuse

TEST(TaskHandle, AwaitTwiceIsEinval) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_task *t;
    ASSERT_EQ(kio_spawn(nullptr, ret_arg_plus_one, iv(1), &t), 0);
    EXPECT_EQ(kt::await_ok(t), 2);
    void *res = iv(77);
    EXPECT_EQ(kio_await(t, &res), -EINVAL);
    EXPECT_EQ(vi(res), 77);  // untouched
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(TaskHandle, AwaitAfterDetachIsEinval) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> release{0};
    // Detached while still running, and detached after finishing.
    kio_task *running = kt::spawn([&] { return block_until(release, 1); });
    ASSERT_EQ(kio_detach(running), 0);
    EXPECT_EQ(kio_await(running, nullptr), -EINVAL);
    EXPECT_EQ(kio_cancel(running, nullptr), -EINVAL);
    EXPECT_EQ(kio_detach(running), -EINVAL);

    kio_task *done;
    ASSERT_EQ(kio_spawn(nullptr, ret_null, nullptr, &done), 0);
    kio_yield();  // threads=1: it runs to completion
    ASSERT_EQ(kio_detach(done), 0);
    EXPECT_EQ(kio_await(done, nullptr), -EINVAL);
    release = 1;
    EXPECT_EQ(rt.destroy(), 0);
}

// A detached (or watched) handle is -EINVAL for a canceled caller too: the
// handle is looked at before the caller's cancellation (it used to give
// -ECANCELED), and kio_task_get_id answers 0 for it (it used to give the
// id until the task finished).
TEST(TaskHandle, DetachedHandleIsEinvalForACanceledCallerAndHasNoId) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> release{0};
    kio_task *running = kt::spawn([&] { return block_until(release, 1); });
    kio_task *watched = kt::spawn([&] { return block_until(release, 2); });
    EXPECT_NE(kio_task_get_id(running), 0u);
    kio_cq *cq = nullptr;
    ASSERT_EQ(kio_cq_create(&cq), 0);
    ASSERT_EQ(kio_detach(running), 0);
    ASSERT_EQ(kio_cq_watch(cq, watched, 7), 0);
    EXPECT_EQ(kio_task_get_id(running), 0u);
    EXPECT_EQ(kio_task_get_id(watched), 0u);
    kio_task *canceled = kt::spawn([&] {
        kio_cancel_self();
        int a = kio_await(running, nullptr), b = kio_await(watched, nullptr);
        return intptr_t(a == -EINVAL && b == -EINVAL ? 0 : a * 1000 + b);
    });
    EXPECT_EQ(kt::await_ok(canceled), 0);
    release = 1;
    kio_cq_event ev;
    while (kio_cq_poll(cq, &ev, 1) == 0) kio_sleep(100 * kUs);
    EXPECT_EQ(ev.user_data, 7u);
    EXPECT_EQ(kio_cq_destroy(cq), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(TaskHandle, CancelOrDetachAfterAwaitIsEinval) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_task *t;
    ASSERT_EQ(kio_spawn(nullptr, ret_arg_plus_one, iv(5), &t), 0);
    EXPECT_EQ(kt::await_ok(t), 6);
    EXPECT_EQ(kio_cancel(t, nullptr), -EINVAL);
    EXPECT_EQ(kio_detach(t), -EINVAL);
    // And after a cancel.
    ASSERT_EQ(kio_spawn(nullptr, ret_arg_plus_one, iv(8), &t), 0);
    EXPECT_EQ(kt::cancel_ok(t), 9);
    EXPECT_EQ(kio_await(t, nullptr), -EINVAL);
    EXPECT_EQ(kio_cancel(t, nullptr), -EINVAL);
    EXPECT_EQ(rt.destroy(), 0);
}

// A task's own handle, once detached, is -EINVAL for every call, the same as
// any detached handle (kio_select and kio_cancel_request already said so;
// kio_await and kio_cancel said -EDEADLK).
TEST(TaskHandle, OwnDetachedHandleIsEinvalForEveryCall) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<kio_task *> self{nullptr};
    std::atomic<int> rcs[4] = {{1}, {1}, {1}, {1}};
    std::atomic<bool> done{false};
    kio_task *t = kt::spawn([&] {
        while (!self.load()) kio_yield();
        kio_task *h = self.load();
        rcs[0] = kio_await(h, nullptr);
        rcs[1] = kio_cancel(h, nullptr);
        size_t idx;
        rcs[2] = kio_select(&h, 1, &idx);
        rcs[3] = kio_cancel_request(h);
        done = true;
        return intptr_t(0);
    });
    ASSERT_EQ(kio_detach(t), 0);
    self = t;
    while (!done.load()) kio_sleep(1000 * 1000);
    for (int i = 0; i < 4; i++) EXPECT_EQ(rcs[i].load(), -EINVAL) << "call " << i;
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(TaskHandle, NullHandleIsEinval) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    EXPECT_EQ(kio_await(nullptr, nullptr), -EINVAL);
    EXPECT_EQ(kio_cancel(nullptr, nullptr), -EINVAL);
    EXPECT_EQ(kio_detach(nullptr), -EINVAL);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(TaskHandle, AwaitOrCancelOfSelfIsEdeadlk) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<kio_task *> self{nullptr};
    std::atomic<int> await_rc{1}, cancel_rc{1};
    kio_task *t = kt::spawn([&] {
        while (!self.load()) kio_yield();
        await_rc = kio_await(self.load(), nullptr);
        cancel_rc = kio_cancel(self.load(), nullptr);
        return intptr_t(3);
    });
    self = t;
    EXPECT_EQ(kt::await_ok(t), 3);  // the handle is still valid after -EDEADLK
    EXPECT_EQ(await_rc.load(), -EDEADLK);
    EXPECT_EQ(cancel_rc.load(), -EDEADLK);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(TaskHandle, SecondAwaiterCancelerOrDetacherIsEbusy) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> release{0};
    kio_task *target = kt::spawn([&] { return block_until(release, 21); });
    kio_task *awaiter = spawn_parked_awaiter(target);
    EXPECT_EQ(kio_await(target, nullptr), -EBUSY);
    EXPECT_EQ(kio_cancel(target, nullptr), -EBUSY);
    EXPECT_EQ(kio_detach(target), -EBUSY);
    release = 1;
    EXPECT_EQ(kt::await_ok(awaiter), 21);
    EXPECT_EQ(rt.destroy(), 0);
}

// ---------------------------------------------------------------------------
// Scheduling order (one worker: deterministic)

TEST(TaskOrder, ChildrenRunNewestFirst) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::string order;
    auto mk = [&](char c) {
        return kt::spawn([&order, c] {
            order += c;
            return intptr_t(c);
        });
    };
    kio_task *a = mk('A'), *b = mk('B'), *c = mk('C');
    EXPECT_EQ(kt::await_ok(a), 'A');
    EXPECT_EQ(kt::await_ok(b), 'B');
    EXPECT_EQ(kt::await_ok(c), 'C');
    EXPECT_EQ(order, "CBA");
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(TaskOrder, YieldsAreFifoRoundRobin) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::string log;
    auto mk = [&](char c) {
        return kt::spawn([&log, c] {
            for (int i = 0; i < 5; i++) {
                log += c;
                if (kio_yield() != 0) return intptr_t(-1);
            }
            return intptr_t(0);
        });
    };
    kio_task *a = mk('A'), *b = mk('B'), *c = mk('C');
    EXPECT_EQ(kt::await_ok(a), 0);
    EXPECT_EQ(kt::await_ok(b), 0);
    EXPECT_EQ(kt::await_ok(c), 0);
    EXPECT_EQ(log, "CBACBACBACBACBA");
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(TaskOrder, YieldWithNothingElseReadyReturnsZero) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    for (int i = 0; i < 100; i++) ASSERT_EQ(kio_yield(), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(TaskOrder, YieldFromPlainThreadIsEperm) {
    std::atomic<int> r{1};
    std::thread th([&] { r = kio_yield(); });
    th.join();
    EXPECT_EQ(r.load(), -EPERM);
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::thread th2([&] { r = kio_yield(); });
    th2.join();
    EXPECT_EQ(r.load(), -EPERM);
    EXPECT_EQ(rt.destroy(), 0);
}

// ---------------------------------------------------------------------------
// Ids

TEST(TaskId, MainIsOneAndTasksCountUpFromTwo) {
    for (int round = 0; round < 2; round++) {  // in each runtime
        SCOPED_TRACE("runtime #" + std::to_string(round));
        kt::Rt rt(1);
        ASSERT_EQ(rt.rc(), 0);
        EXPECT_EQ(kio_task_id(), 1u);
        std::vector<kio_task *> ts;
        for (int i = 0; i < 10; i++) ts.push_back(kt::spawn([] { return intptr_t(kio_task_id()); }));
        for (int i = 0; i < 10; i++) EXPECT_EQ(kt::await_ok(ts[i]), 2 + i);
        EXPECT_EQ(kio_task_id(), 1u);
        EXPECT_EQ(rt.destroy(), 0);
    }
}

TEST(TaskId, UniqueAcrossWorkersAndStableAcrossParks) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    constexpr int kN = 200;
    std::vector<kio_task *> ts;
    for (int i = 0; i < kN; i++)
        ts.push_back(kt::spawn([] {
            uint64_t id = kio_task_id();
            kio_sleep(50 * kUs);
            kio_yield();
            return kio_task_id() == id ? intptr_t(id) : intptr_t(-1);
        }));
    std::set<intptr_t> ids;
    for (kio_task *t : ts) ids.insert(kt::await_ok(t));
    EXPECT_EQ(ids.size(), size_t(kN));
    EXPECT_EQ(*ids.begin(), 2);
    EXPECT_EQ(*ids.rbegin(), kN + 1);
    EXPECT_EQ(kio_task_id(), 1u);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(TaskId, ZeroOnPlainThread) {
    uint64_t id = 99;
    std::thread th([&] { id = kio_task_id(); });
    th.join();
    EXPECT_EQ(id, 0u);
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::thread th2([&] { id = kio_task_id(); });
    th2.join();
    EXPECT_EQ(id, 0u);
    EXPECT_EQ(rt.destroy(), 0);
}

// ---------------------------------------------------------------------------
// kio_spawn_ex

namespace {
std::atomic<int> g_dtor_calls{0};
std::atomic<void *> g_dtor_arg{nullptr};
void counting_dtor(void *arg) {
    g_dtor_calls++;
    g_dtor_arg = arg;
}
int g_dtor_token;
}  // namespace

TEST(SpawnEx, OptionsInitFillsDefaults) {
    kio_spawn_options o;
    std::memset(&o, 0xcd, sizeof o);
    kio_spawn_options_init(&o);
    EXPECT_EQ(o.size, sizeof(kio_spawn_options));
    EXPECT_EQ(o.name, nullptr);
    EXPECT_EQ(o.stack_size, 0u);
    EXPECT_EQ(o.pinned, 0);
    EXPECT_EQ(o.arg_destructor, nullptr);
    kio_spawn_options_init(nullptr);  // no crash
}

TEST(SpawnEx, NullOptionsBehavesLikeSpawn) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_task *t;
    ASSERT_EQ(kio_spawn_ex(nullptr, ret_arg_plus_one, iv(9), nullptr, &t), 0);
    EXPECT_EQ(kt::await_ok(t), 10);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(SpawnEx, NameIsCopiedAndMayBeLongOrNull) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    char *name = new char[128];
    std::memset(name, 'n', 127);
    name[127] = 0;
    kio_spawn_options o;
    kio_spawn_options_init(&o);
    o.name = name;
    kio_task *t1;
    ASSERT_EQ(kio_spawn_ex(nullptr, ret_arg_plus_one, iv(1), &o, &t1), 0);
    std::memset(name, 'x', 127);
    delete[] name;  // the runtime copied what it needs
    o.name = "short";
    kio_task *t2;
    ASSERT_EQ(kio_spawn_ex(nullptr, ret_arg_plus_one, iv(2), &o, &t2), 0);
    o.name = nullptr;
    kio_task *t3;
    ASSERT_EQ(kio_spawn_ex(nullptr, ret_arg_plus_one, iv(3), &o, &t3), 0);
    EXPECT_EQ(kt::await_ok(t1), 2);
    EXPECT_EQ(kt::await_ok(t2), 3);
    EXPECT_EQ(kt::await_ok(t3), 4);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(SpawnEx, BadOptionsSizeIsEinval) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    g_dtor_calls = 0;
    kio_spawn_options o;
    kio_spawn_options_init(&o);
    o.arg_destructor = counting_dtor;
    for (size_t sz : {size_t(0), offsetof(kio_spawn_options, arg_destructor), sizeof o - 1}) {
        SCOPED_TRACE("size=" + std::to_string(sz));
        o.size = sz;
        kio_task *t = nullptr;
        EXPECT_EQ(kio_spawn_ex(nullptr, ret_null, &g_dtor_token, &o, &t), -EINVAL);
    }
    // opts was not valid, so its destructor field is not trusted.
    EXPECT_EQ(g_dtor_calls.load(), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(SpawnEx, StackSizeUnder16KiBIsEinval) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_spawn_options o;
    kio_spawn_options_init(&o);
    for (size_t sz : {size_t(1), size_t(8192), size_t(16 * 1024 - 1)}) {
        SCOPED_TRACE("stack_size=" + std::to_string(sz));
        o.stack_size = sz;
        kio_task *t = nullptr;
        EXPECT_EQ(kio_spawn_ex(nullptr, ret_null, nullptr, &o, &t), -EINVAL);
    }
    o.stack_size = 16 * 1024;
    kio_task *t;
    ASSERT_EQ(kio_spawn_ex(nullptr, ret_arg_plus_one, iv(4), &o, &t), 0);
    EXPECT_EQ(kt::await_ok(t), 5);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(SpawnEx, OneMiBStackHoldsHalfMiBOfLocals) {
    kt::Rt rt(2);  // default 64 KiB stacks
    ASSERT_EQ(rt.rc(), 0);
    kio_spawn_options o;
    kio_spawn_options_init(&o);
    o.stack_size = 1024 * 1024;
    std::vector<kio_task *> ts;
    for (int k = 0; k < 4; k++)  // several, so the stack is reused / carved more than once
        ts.push_back(kt::spawn_ex(&o, [k] {
            volatile char big[512 * 1024];
            for (size_t i = 0; i < sizeof big; i += 256) big[i] = char(k);
            kio_yield();  // park with the big frame live
            intptr_t n = 0;
            for (size_t i = 0; i < sizeof big; i += 256) n += big[i] == char(k);
            return n;
        }));
    for (kio_task *t : ts) EXPECT_EQ(kt::await_ok(t), intptr_t(512 * 1024 / 256));
    EXPECT_EQ(rt.destroy(), 0);
}

// On one worker, a finishing task starts the next fresh one from the spawn
// queue right away, on its own stack when both use the default size. Here
// default-size and 512 KiB tasks mix, each filling most of its stack; odd
// ones finish at once, even ones park first. Run newest first, the finishing
// ones hand over default -> large (9 -> 8), default -> default (7 -> 6,
// 1 -> 0), large -> default (5 -> 4) and large -> large (3 -> 2): each next
// task must get a stack of its own size, and parked frames must survive.
TEST(SpawnEx, BackToBackTasksOfMixedStackSizesEachGetTheirOwnSize) {
    kt::Rt rt(1);  // default 64 KiB stacks
    ASSERT_EQ(rt.rc(), 0);
    kio_spawn_options big;
    kio_spawn_options_init(&big);
    big.stack_size = 512 * 1024;
    auto fill = [](size_t bytes, int k) {
        // A frame of `bytes` locals, parked once while live.
        return [bytes, k] {
            char *p = static_cast<char *>(alloca(bytes));
            volatile char *v = p;
            for (size_t i = 0; i < bytes; i += 256) v[i] = char(k);
            if (k % 2 == 0) kio_yield();
            intptr_t n = 0;
            for (size_t i = 0; i < bytes; i += 256) n += v[i] == char(k);
            return n == intptr_t(bytes / 256) ? intptr_t(k) : intptr_t(-1);
        };
    };
    const bool large[] = {false, false, true, true, false, true, false, false, true, false};
    static_assert(sizeof large == 10, "one per task");
    std::vector<kio_task *> ts;
    for (int k = 0; k < 10; k++) {
        if (large[k]) ts.push_back(kt::spawn_ex(&big, fill(400 * 1024, k)));
        else ts.push_back(kt::spawn(fill(40 * 1024, k)));
    }
    for (int k = 0; k < 10; k++) EXPECT_EQ(kt::await_ok(ts[size_t(k)]), k);
    EXPECT_EQ(rt.destroy(), 0);
}

// Fresh tasks started one after another as each finishes (one worker, none
// parks until it is done) keep their own identity: task id, cancellation
// state, result.
TEST(Spawn, TasksStartedAsTheirPredecessorsFinishKeepTheirOwnIdentity) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    constexpr int kN = 50;
    constexpr int kCanceled = 10;
    std::vector<uint64_t> id_seen(kN);
    std::vector<int> cancel_seen(kN, 1);
    std::vector<kio_task *> ts;
    std::vector<uint64_t> ids;
    for (int k = 0; k < kN; k++) {
        ts.push_back(kt::spawn([&, k] {
            id_seen[size_t(k)] = kio_task_id();
            cancel_seen[size_t(k)] = kio_check_cancel();
            return intptr_t(k * 3);
        }));
        ids.push_back(kio_task_get_id(ts.back()));
    }
    // Runs the queue (newest first) down to ts[kCanceled], canceled before it
    // starts.
    EXPECT_EQ(kt::cancel_ok(ts[kCanceled]), kCanceled * 3);
    for (int k = 0; k < kN; k++) {
        if (k == kCanceled) continue;
        EXPECT_EQ(kt::await_ok(ts[size_t(k)]), k * 3);
    }
    for (int k = 0; k < kN; k++) {
        EXPECT_EQ(id_seen[size_t(k)], ids[size_t(k)]) << "task " << k;
        EXPECT_EQ(cancel_seen[size_t(k)], k == kCanceled ? -ECANCELED : 0) << "task " << k;
    }
    EXPECT_EQ(rt.destroy(), 0);
}

// Two fibers that keep waking each other always leave one of them in the
// woken ring, which the ordinary pick serves first: the fairness tick must
// still start a freshly spawned task (and run a yielder) within a bounded
// delay, not never.
TEST(Spawn, FreshTaskRunsWhileTwoFibersKeepWakingEachOther) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_mutex m = KIO_MUTEX_INIT;
    kio_cond cv[2] = {KIO_COND_INIT, KIO_COND_INIT};
    int turn = 0;
    bool stop = false;
    std::vector<kio_task *> pair;
    for (int me = 0; me < 2; me++)
        pair.push_back(kt::spawn([&, me] {
            intptr_t rounds = 0;
            kio_mutex_lock(&m);
            while (!stop) {
                while (turn != me && !stop) kio_cond_wait(&cv[me], &m);
                turn = !me;
                rounds++;
                kio_cond_signal(&cv[!me]);
            }
            kio_mutex_unlock(&m);
            return rounds;
        }));
    ASSERT_EQ(kio_sleep(5 * kMs), 0);  // the pair is bouncing
    std::atomic<int> yields{0};
    kio_task *yielder = kt::spawn([&] {
        while (yields.load() < 100) {
            yields++;
            kio_yield();
        }
        return intptr_t(0);
    });
    kio_task *fresh = kt::spawn([] { return intptr_t(42); });
    uint64_t saved = kio_deadline_set(kio_now() + kt::prompt(5 * kSec));
    void *r = nullptr;
    EXPECT_EQ(kio_await(fresh, &r), 0);
    EXPECT_EQ(kt::vi(r), 42);
    EXPECT_EQ(kio_await(yielder, &r), 0);
    kio_deadline_set(saved);
    kio_mutex_lock(&m);
    stop = true;
    kio_cond_broadcast(&cv[0]);
    kio_cond_broadcast(&cv[1]);
    kio_mutex_unlock(&m);
    for (kio_task *t : pair) EXPECT_GT(kt::await_ok(t), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(SpawnEx, PinnedTaskStaysOnItsWorkerThread) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> stop{0};
    // Background load on both workers so that stealing has a reason to happen.
    std::vector<kio_task *> load;
    for (int i = 0; i < 4; i++)
        load.push_back(kt::spawn([&] {
            while (!stop.load()) {
                kio_yield();
                kio_sleep(20 * kUs);
            }
            return intptr_t(0);
        }));
    kio_spawn_options o;
    kio_spawn_options_init(&o);
    o.pinned = 1;
    std::vector<kio_task *> pinned;
    for (int k = 0; k < 4; k++)
        pinned.push_back(kt::spawn_ex(&o, [] {
            long self = kt::os_thread_id();
            intptr_t moved = 0;
            for (int i = 0; i < 1000; i++) {
                if (i % 2) kio_yield();
                else kio_sleep(10 * kUs);
                if (kt::os_thread_id() != self) moved++;
            }
            return moved;
        }));
    for (kio_task *t : pinned) EXPECT_EQ(kt::await_ok(t), 0);
    stop = 1;
    for (kio_task *t : load) EXPECT_EQ(kt::await_ok(t), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(SpawnEx, ArgDestructorCalledOnceWhenSpawnFails) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_spawn_options o;
    kio_spawn_options_init(&o);
    o.arg_destructor = counting_dtor;
    kio_task *t = nullptr;

    g_dtor_calls = 0;
    g_dtor_arg = nullptr;
    EXPECT_EQ(kio_spawn_ex(nullptr, nullptr, &g_dtor_token, &o, &t), -EINVAL);
    EXPECT_EQ(g_dtor_calls.load(), 1);
    EXPECT_EQ(g_dtor_arg.load(), &g_dtor_token);

    g_dtor_calls = 0;
    g_dtor_arg = nullptr;
    EXPECT_EQ(kio_spawn_ex(nullptr, ret_null, &g_dtor_token, &o, nullptr), -EINVAL);
    EXPECT_EQ(g_dtor_calls.load(), 1);
    EXPECT_EQ(g_dtor_arg.load(), &g_dtor_token);

    g_dtor_calls = 0;
    g_dtor_arg = nullptr;
    std::atomic<int> r{1};
    std::thread th([&] {
        kio_task *tt = nullptr;
        r = kio_spawn_ex(nullptr, ret_null, &g_dtor_token, &o, &tt);
    });
    th.join();
    EXPECT_EQ(r.load(), -EPERM);
    EXPECT_EQ(g_dtor_calls.load(), 1);
    EXPECT_EQ(g_dtor_arg.load(), &g_dtor_token);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(SpawnEx, ArgDestructorNotCalledWhenTaskRuns) {
    g_dtor_calls = 0;
    kio_spawn_options o;
    kio_spawn_options_init(&o);
    o.arg_destructor = counting_dtor;
    {
        kt::Rt rt(1);
        ASSERT_EQ(rt.rc(), 0);
        kio_task *t;
        ASSERT_EQ(kio_spawn_ex(nullptr, ret_arg_plus_one, iv(10), &o, &t), 0);
        EXPECT_EQ(kt::await_ok(t), 11);
        // Canceled before it started: it still runs, so no destructor.
        ASSERT_EQ(kio_spawn_ex(nullptr, ret_arg_plus_one, iv(20), &o, &t), 0);
        EXPECT_EQ(kt::cancel_ok(t), 21);
        // Detached, and never started before destroy.
        ASSERT_EQ(kio_spawn_ex(nullptr, ret_arg_plus_one, iv(30), &o, &t), 0);
        ASSERT_EQ(kio_detach(t), 0);
        ASSERT_EQ(kio_spawn_ex(nullptr, ret_arg_plus_one, iv(40), &o, &t), 0);
        EXPECT_EQ(rt.destroy(), 0);
    }
    EXPECT_EQ(g_dtor_calls.load(), 0);
}

// ---------------------------------------------------------------------------
// Cancellation: waking parked tasks

namespace {

// Spawns a task whose body sets `parking` right before a blocking call and
// returns that call's result; cancels it once it is parked and checks that
// the cancel came back promptly with -ECANCELED as the task's result.
void expect_cancel_wakes(const std::function<intptr_t(std::atomic<int> &)> &body) {
    std::atomic<int> parking{0};
    kio_task *t = kt::spawn([&] { return body(parking); });
    ASSERT_NE(t, nullptr);
    ASSERT_TRUE(kt::wait_flag(parking, 1));
    kio_sleep(20 * kMs);  // let it park
    uint64_t t0 = kio_now();
    EXPECT_EQ(kt::cancel_ok(t), -ECANCELED);
    EXPECT_LT(kt::since(t0), kt::prompt(1 * kSec));
}

}  // namespace

TEST(Cancel, WakesTaskParkedInSleep) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    expect_cancel_wakes([](std::atomic<int> &parking) {
        parking = 1;
        return intptr_t(kio_sleep(kHour));
    });
    expect_cancel_wakes([](std::atomic<int> &parking) {
        parking = 1;
        return intptr_t(kio_sleep_until(kio_now() + kHour));
    });
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Cancel, WakesTaskParkedInMutexLock) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    kio_mutex m = KIO_MUTEX_INIT;
    ASSERT_EQ(kio_mutex_lock(&m), 0);
    expect_cancel_wakes([&m](std::atomic<int> &parking) {
        parking = 1;
        int r = kio_mutex_lock(&m);
        if (r == 0) kio_mutex_unlock(&m);
        return intptr_t(r);
    });
    // The canceled locker did not get the mutex: main still owns it.
    EXPECT_EQ(kio_mutex_lock(&m), -EDEADLK);
    kio_mutex_unlock(&m);
    EXPECT_EQ(kio_mutex_trylock(&m), 0);
    kio_mutex_unlock(&m);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Cancel, WakesTaskParkedInCondWait) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    kio_mutex m = KIO_MUTEX_INIT;
    kio_cond c = KIO_COND_INIT;
    expect_cancel_wakes([&](std::atomic<int> &parking) {
        kio_mutex_lock(&m);
        parking = 1;
        int r = kio_cond_wait(&c, &m);
        kio_mutex_unlock(&m);
        return intptr_t(r);
    });
    expect_cancel_wakes([&](std::atomic<int> &parking) {
        kio_mutex_lock(&m);
        parking = 1;
        int r = kio_cond_wait_until(&c, &m, kio_now() + kHour);
        kio_mutex_unlock(&m);
        return intptr_t(r);
    });
    EXPECT_EQ(kio_mutex_trylock(&m), 0);
    kio_mutex_unlock(&m);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Cancel, WakesTaskParkedInAwait) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> release{0};
    kio_task *blocked = kt::spawn([&] { return block_until(release, 55); });
    expect_cancel_wakes([&](std::atomic<int> &parking) {
        parking = 1;
        return intptr_t(kio_await(blocked, nullptr));
    });
    release = 1;
    EXPECT_EQ(kt::await_ok(blocked), 55);  // the handle stayed valid
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Cancel, WakesTaskParkedInSelect) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> release{0};
    kio_task *b1 = kt::spawn([&] { return block_until(release, 1); });
    kio_task *b2 = kt::spawn([&] { return block_until(release, 2); });
    expect_cancel_wakes([&](std::atomic<int> &parking) {
        kio_task *set[2] = {b1, b2};
        size_t idx = 99;
        parking = 1;
        int r = kio_select(set, 2, &idx);
        return intptr_t(r);
    });
    release = 1;
    EXPECT_EQ(kt::await_ok(b1), 1);
    EXPECT_EQ(kt::await_ok(b2), 2);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Cancel, WakesTaskSleepingWithExtremeDeadlines) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    expect_cancel_wakes([](std::atomic<int> &parking) {
        parking = 1;
        return intptr_t(kio_sleep(UINT64_MAX));
    });
    expect_cancel_wakes([](std::atomic<int> &parking) {
        parking = 1;
        return intptr_t(kio_sleep_until(UINT64_MAX));
    });
    expect_cancel_wakes([](std::atomic<int> &parking) {
        parking = 1;
        return intptr_t(kio_sleep_until(UINT64_MAX - 1));
    });
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Cancel, ReturnsTheTasksOwnReturnValue) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> parking{0};
    kio_task *t = kt::spawn([&] {
        parking = 1;
        int r = kio_sleep(kHour);
        return r == -ECANCELED ? intptr_t(4242) : intptr_t(-1);
    });
    ASSERT_TRUE(kt::wait_flag(parking, 1));
    void *res = nullptr;
    EXPECT_EQ(kio_cancel(t, &res), 0);
    EXPECT_EQ(vi(res), 4242);
    // A task that finished before the cancel: its normal value.
    kio_task *t2;
    ASSERT_EQ(kio_spawn(nullptr, ret_arg_plus_one, iv(700), &t2), 0);
    kio_sleep(10 * kMs);
    EXPECT_EQ(kt::cancel_ok(t2), 701);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Cancel, LaterCancellationPointsReturnEcanceled) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    enum { kSleep, kSleepUntil, kSleep0, kLock, kLockedAfter, kYield, kCheck, kAwait, kSelect,
           kCondWait, kCondHeld, kCondWaitUntil, kOtherResult, kCount };
    int rc[kCount];
    for (int &r : rc) r = 12345;
    std::atomic<int> parking{0};
    kio_mutex m = KIO_MUTEX_INIT;
    kio_mutex cm = KIO_MUTEX_INIT;
    kio_cond c = KIO_COND_INIT;
    kio_task *t = kt::spawn([&] {
        parking = 1;
        if (kio_sleep(kHour) != -ECANCELED) return intptr_t(-1);
        rc[kSleep] = kio_sleep(1 * kMs);
        rc[kSleepUntil] = kio_sleep_until(kio_now() + 1 * kMs);
        rc[kSleep0] = kio_sleep(0);
        rc[kLock] = kio_mutex_lock(&m);
        rc[kLockedAfter] = kio_mutex_trylock(&m);  // 0: the failed lock did not take it
        if (rc[kLockedAfter] == 0) kio_mutex_unlock(&m);
        rc[kYield] = kio_yield();
        rc[kCheck] = kio_check_cancel();
        kio_task *other = nullptr;
        kt::try_spawn(nullptr, [] {
            kio_cancel_shield(1);
            kio_sleep(2 * kMs);
            return intptr_t(77);
        }, &other);
        rc[kAwait] = kio_await(other, nullptr);
        size_t idx = 99;
        rc[kSelect] = kio_select(&other, 1, &idx);
        kio_mutex_trylock(&cm);
        rc[kCondWait] = kio_cond_wait(&c, &cm);
        rc[kCondHeld] = kio_mutex_trylock(&cm);  // -EBUSY: still held (by us)
        rc[kCondWaitUntil] = kio_cond_wait_until(&c, &cm, kio_now() + kHour);
        kio_mutex_unlock(&cm);
        kio_cancel_shield(1);
        void *res = nullptr;
        rc[kOtherResult] = kio_await(other, &res) == 0 ? int(vi(res)) : -1;
        return intptr_t(1);
    });
    ASSERT_TRUE(kt::wait_flag(parking, 1));
    kio_sleep(10 * kMs);
    EXPECT_EQ(kt::cancel_ok(t), 1);
    EXPECT_EQ(rc[kSleep], -ECANCELED);
    EXPECT_EQ(rc[kSleepUntil], -ECANCELED);
    EXPECT_EQ(rc[kSleep0], -ECANCELED);
    EXPECT_EQ(rc[kLock], -ECANCELED);
    EXPECT_EQ(rc[kLockedAfter], 0);
    EXPECT_EQ(rc[kYield], -ECANCELED);
    EXPECT_EQ(rc[kCheck], -ECANCELED);
    EXPECT_EQ(rc[kAwait], -ECANCELED);
    EXPECT_EQ(rc[kSelect], -ECANCELED);
    EXPECT_EQ(rc[kCondWait], -ECANCELED);
    EXPECT_EQ(rc[kCondHeld], -EBUSY);
    EXPECT_EQ(rc[kCondWaitUntil], -ECANCELED);
    EXPECT_EQ(rc[kOtherResult], 77);
    EXPECT_EQ(kio_mutex_trylock(&cm), 0);
    kio_mutex_unlock(&cm);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Cancel, BeforeStartTheTaskStillRunsWithRequestMade) {
    kt::Rt rt(1);  // nothing runs before main parks
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> ran{0};
    kio_task *t = kt::spawn([&] {
        ran = 1;
        intptr_t v = 0;
        if (kio_check_cancel() == -ECANCELED) v |= 1;
        if (kio_sleep(kHour) == -ECANCELED) v |= 2;
        if (kio_yield() == -ECANCELED) v |= 4;
        return v;
    });
    EXPECT_EQ(ran.load(), 0);
    uint64_t t0 = kio_now();
    EXPECT_EQ(kt::cancel_ok(t), 7);
    EXPECT_LT(kt::since(t0), kt::prompt(1 * kSec));
    EXPECT_EQ(ran.load(), 1);
    EXPECT_EQ(rt.destroy(), 0);
}

// ---------------------------------------------------------------------------
// Shield, check, self

TEST(CancelShield, SleepCompletesNormallyThenNextPointFails) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> parking{0};
    int prev_on = 9, prev_off = 9, sleep_rc = 9, check_shielded = 9, check_after = 9, yield_after = 9;
    uint64_t slept = 0;
    kio_task *t = kt::spawn([&] {
        prev_on = kio_cancel_shield(1);
        parking = 1;
        uint64_t t0 = kio_now();
        sleep_rc = kio_sleep(50 * kMs);
        slept = kt::since(t0);
        check_shielded = kio_check_cancel();
        prev_off = kio_cancel_shield(prev_on);
        check_after = kio_check_cancel();
        yield_after = kio_yield();
        return intptr_t(8);
    });
    ASSERT_TRUE(kt::wait_flag(parking, 1));
    kio_sleep(5 * kMs);
    EXPECT_EQ(kt::cancel_ok(t), 8);
    EXPECT_EQ(prev_on, 0);
    EXPECT_EQ(sleep_rc, 0);
    EXPECT_GE(slept, 50 * kMs);
    EXPECT_EQ(check_shielded, 0);
    EXPECT_EQ(prev_off, 1);
    EXPECT_EQ(check_after, -ECANCELED);
    EXPECT_EQ(yield_after, -ECANCELED);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(CancelShield, ReturnsPreviousSettingSoShieldsNest) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    EXPECT_EQ(kio_cancel_shield(1), 0);
    EXPECT_EQ(kio_cancel_shield(1), 1);  // inner
    EXPECT_EQ(kio_cancel_shield(1), 1);  // inner restores 1
    EXPECT_EQ(kio_cancel_shield(0), 1);  // outer restores 0
    EXPECT_EQ(kio_cancel_shield(0), 0);
    EXPECT_EQ(kio_cancel_shield(7), 0);  // any nonzero enables
    EXPECT_EQ(kio_cancel_shield(0), 1);
    kio_task *t = kt::spawn([] {
        intptr_t v = kio_cancel_shield(1);        // 0
        v = v * 10 + kio_cancel_shield(0);        // 1
        v = v * 10 + kio_cancel_shield(0);        // 0
        return v;
    });
    EXPECT_EQ(kt::await_ok(t), 10);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(CancelShield, FromPlainThreadIsEperm) {
    int shield = 1, self = 1, check = 1;
    std::thread th([&] {
        shield = kio_cancel_shield(1);
        self = kio_cancel_self();
        check = kio_check_cancel();
    });
    th.join();
    EXPECT_EQ(shield, -EPERM);
    EXPECT_EQ(self, -EPERM);
    EXPECT_EQ(check, 0);
}

TEST(CancelCheck, ZeroUntilCanceledThenEcanceled) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    EXPECT_EQ(kio_check_cancel(), 0);  // main fiber
    std::atomic<int> go{0};
    int before = 9, after = 9;
    kio_task *t = kt::spawn([&] {
        before = kio_check_cancel();
        go = 1;
        // Busy-wait without a cancellation point until the request lands.
        uint64_t end = kio_now() + 5 * kSec;
        while (kio_check_cancel() == 0 && kio_now() < end) {
        }
        after = kio_check_cancel();
        return intptr_t(0);
    });
    ASSERT_TRUE(kt::wait_flag(go, 1));
    EXPECT_EQ(kt::cancel_ok(t), 0);
    EXPECT_EQ(before, 0);
    EXPECT_EQ(after, -ECANCELED);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(CancelSelf, WhileShieldedTakesEffectWhenLowered) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_task *t = kt::spawn([] {
        intptr_t v = 0;
        kio_cancel_shield(1);
        if (kio_cancel_self() == 0) v |= 1;
        if (kio_check_cancel() == 0) v |= 2;
        if (kio_sleep(1 * kMs) == 0) v |= 4;
        if (kio_yield() == 0) v |= 8;
        kio_cancel_shield(0);
        if (kio_check_cancel() == -ECANCELED) v |= 16;
        if (kio_sleep(1 * kMs) == -ECANCELED) v |= 32;
        return v;
    });
    EXPECT_EQ(kt::await_ok(t), 63);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(CancelSelf, NextCancellationPointFails) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_task *t = kt::spawn([] {
        intptr_t v = 0;
        if (kio_check_cancel() == 0) v |= 1;
        if (kio_cancel_self() == 0) v |= 2;
        if (kio_check_cancel() == -ECANCELED) v |= 4;
        if (kio_yield() == -ECANCELED) v |= 8;
        if (kio_sleep(kHour) == -ECANCELED) v |= 16;
        return v;
    });
    EXPECT_EQ(kt::await_ok(t), 31);  // await itself succeeds
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Cancel, AwaitIsACancellationPointAndHandleStaysValid) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> release{0}, parking{0};
    kio_task *target = kt::spawn([&] { return block_until(release, 31); });
    kio_task *w = kt::spawn([&] {
        parking = 1;
        void *res = iv(-5);
        int r = kio_await(target, &res);
        return r ? intptr_t(r) : vi(res);
    });
    ASSERT_TRUE(kt::wait_flag(parking, 1));
    kio_sleep(20 * kMs);
    uint64_t t0 = kio_now();
    EXPECT_EQ(kt::cancel_ok(w), -ECANCELED);
    EXPECT_LT(kt::since(t0), kt::prompt(1 * kSec));
    // Another task may now await the target.
    kio_task *x = kt::spawn([&] {
        void *res = iv(-5);
        int r = kio_await(target, &res);
        return r ? intptr_t(r) : vi(res);
    });
    kio_sleep(5 * kMs);
    release = 1;
    EXPECT_EQ(kt::await_ok(x), 31);
    EXPECT_EQ(kio_await(target, nullptr), -EINVAL);  // consumed by x
    EXPECT_EQ(rt.destroy(), 0);
}

// A canceled caller gets -ECANCELED from kio_await before the task's state is
// looked at: even when another caller already awaits the task (it used to get
// -EBUSY).
TEST(Cancel, AwaitByCanceledCallerOfAwaitedTaskIsEcanceledNotEbusy) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> release{0};
    kio_task *target = kt::spawn([&] { return block_until(release, 41); });
    kio_task *awaiter = spawn_parked_awaiter(target);
    kio_task *canceled = kt::spawn([&] {
        kio_cancel_self();
        return intptr_t(kio_await(target, nullptr));
    });
    EXPECT_EQ(kt::await_ok(canceled), -ECANCELED);
    release = 1;
    EXPECT_EQ(kt::await_ok(awaiter), 41);
    EXPECT_EQ(rt.destroy(), 0);
}

// ---------------------------------------------------------------------------
// Select

TEST(Select, ReturnsLowestFinishedIndexAndConsumesNothing) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> release{0};
    kio_task *ts[4];
    ts[0] = kt::spawn([&] { return block_until(release, 10); });
    ts[1] = kt::spawn([] { return intptr_t(11); });
    ts[2] = kt::spawn([] { return intptr_t(12); });
    ts[3] = kt::spawn([&] { return block_until(release, 13); });
    size_t idx = 99;
    // Wait until 1 and 2 have both finished.
    ASSERT_EQ(kio_select(&ts[1], 1, &idx), 0);
    EXPECT_EQ(idx, 0u);
    ASSERT_EQ(kio_select(&ts[2], 1, &idx), 0);
    EXPECT_EQ(idx, 0u);
    idx = 99;
    ASSERT_EQ(kio_select(ts, 4, &idx), 0);
    EXPECT_EQ(idx, 1u);
    idx = 99;
    ASSERT_EQ(kio_select(ts, 4, &idx), 0);  // nothing was consumed
    EXPECT_EQ(idx, 1u);
    idx = 99;
    kio_task *rev[4] = {ts[3], ts[2], ts[1], ts[0]};
    ASSERT_EQ(kio_select(rev, 4, &idx), 0);
    EXPECT_EQ(idx, 1u);  // ts[2]
    release = 1;
    EXPECT_EQ(kt::await_ok(ts[0]), 10);
    EXPECT_EQ(kt::await_ok(ts[1]), 11);
    EXPECT_EQ(kt::await_ok(ts[2]), 12);
    EXPECT_EQ(kt::await_ok(ts[3]), 13);
    EXPECT_EQ(rt.destroy(), 0);
}

// The same handle at index 0 and at the end of a long array (the rest: one
// blocked task, repeated), finishing on another worker while the call scans
// the array: the index is 0 whichever copy the scan saw finished first. (A
// scan that read index 0 before the task finished and the last copy after
// gave the last index.)
TEST(Select, DuplicateHandleGivesItsLowestIndex) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> release{0};
    kio_task *blocked = kt::spawn([&] { return block_until(release, 1); });
    constexpr size_t kN = 2000;
    std::vector<kio_task *> set(kN, blocked);
    const int rounds = int(kt::scaled(2000));
    int wrong = 0, last = -1;
    for (int i = 0; i < rounds && !wrong; i++) {
        std::atomic<int> started{0}, go{0};
        kio_task *t = kt::spawn([&] {
            started.store(1, std::memory_order_release);
            while (!go.load(std::memory_order_acquire)) {
            }
            kt::busy_for(uint64_t(i % 100) * 500);  // across the handle checks and the scan
            return intptr_t(5);
        });
        // t and this fiber end up on different workers (t does not yield
        // while it waits for go: the other worker takes one of them).
        while (!started.load(std::memory_order_acquire)) kio_yield();
        set[0] = set[kN - 1] = t;
        size_t idx = 12345;
        go.store(1, std::memory_order_release);
        int r = kio_select(set.data(), kN, &idx);
        if (r != 0 || idx != 0) {
            wrong++;
            last = r ? r : int(idx);
        }
        EXPECT_EQ(kt::await_ok(t), 5);
    }
    EXPECT_EQ(wrong, 0) << "last: " << last;
    release = 1;
    EXPECT_EQ(kt::await_ok(blocked), 1);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Select, InvalidArgumentsAreEinval) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_task *t;
    ASSERT_EQ(kio_spawn(nullptr, ret_arg_plus_one, iv(1), &t), 0);
    size_t idx = 99;
    kio_task *set[2] = {t, nullptr};
    EXPECT_EQ(kio_select(set, 0, &idx), -EINVAL);
    EXPECT_EQ(kio_select(nullptr, 1, &idx), -EINVAL);
    EXPECT_EQ(kio_select(set, 1, nullptr), -EINVAL);
    EXPECT_EQ(kio_select(set, 2, &idx), -EINVAL);  // a NULL handle
    EXPECT_EQ(idx, 99u);
    EXPECT_EQ(kt::await_ok(t), 2);
    EXPECT_EQ(kio_select(set, 1, &idx), -EINVAL);  // consumed
    kio_task *d;
    ASSERT_EQ(kio_spawn(nullptr, ret_null, nullptr, &d), 0);
    ASSERT_EQ(kio_detach(d), 0);
    EXPECT_EQ(kio_select(&d, 1, &idx), -EINVAL);  // detached
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Select, ParksUntilATaskFinishes) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> release{0};
    uint64_t t0 = kio_now();
    kio_task *ts[2];
    ts[0] = kt::spawn([&] { return block_until(release, 1); });
    ts[1] = kt::spawn([] {
        kio_sleep(10 * kMs);
        return intptr_t(2);
    });
    size_t idx = 99;
    ASSERT_EQ(kio_select(ts, 2, &idx), 0);
    uint64_t took = kt::since(t0);
    EXPECT_EQ(idx, 1u);
    EXPECT_GE(took, 10 * kMs);
    EXPECT_LT(took, kt::prompt(1 * kSec));
    release = 1;
    EXPECT_EQ(kt::await_ok(ts[0]), 1);
    EXPECT_EQ(kt::await_ok(ts[1]), 2);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Select, MoreThanSixteenTasks) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    constexpr int kN = 40;
    std::atomic<int> release{0};
    kio_task *ts[kN];
    for (int i = 0; i < kN; i++) {
        if (i == 37)
            ts[i] = kt::spawn([] {
                kio_sleep(5 * kMs);
                return intptr_t(37);
            });
        else
            ts[i] = kt::spawn([&, i] { return block_until(release, i); });
    }
    size_t idx = 99;
    ASSERT_EQ(kio_select(ts, kN, &idx), 0);
    EXPECT_EQ(idx, 37u);
    release = 1;
    for (int i = 0; i < kN; i++) EXPECT_EQ(kt::await_ok(ts[i]), i);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Select, ManySelectorsAndOneAwaiterOnOneTask) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> release{0};
    kio_task *target = kt::spawn([&] { return block_until(release, 64); });
    struct kio_stats before;
    kio_stats_init(&before);
    ASSERT_EQ(kio_stats(rt.get(), &before), 0);
    constexpr int kN = 10;
    std::vector<kio_task *> sel;
    for (int i = 0; i < kN; i++)
        sel.push_back(kt::spawn([&] {
            kio_task *set[2] = {target, target};  // the same task twice
            size_t idx = 99;
            int r = kio_select(set, 2, &idx);
            return r ? intptr_t(r) : intptr_t(idx + 100);
        }));
    kio_task *awaiter = kt::spawn([&] {
        void *res = nullptr;
        int r = kio_await(target, &res);
        return r ? intptr_t(r) : vi(res);
    });
    // All of them parked on the target (a selector that had not yet taken
    // its reference would find the handle consumed by the awaiter: -EINVAL).
    EXPECT_TRUE(kt::wait_parks(rt.get(), KIO_PARK_SELECT, before.parks[KIO_PARK_SELECT] + kN));
    EXPECT_TRUE(kt::wait_parks(rt.get(), KIO_PARK_AWAIT, before.parks[KIO_PARK_AWAIT] + 1));
    release = 1;
    for (kio_task *t : sel) EXPECT_EQ(kt::await_ok(t), 100);  // index 0: the lowest
    EXPECT_EQ(kt::await_ok(awaiter), 64);
    EXPECT_EQ(rt.destroy(), 0);
}

// A handle in the set is consumed by its awaiter before the selector runs
// again, and its slot taken by a new task: the index that woke the call is
// still stored (it used to return 0 with *index unwritten).
TEST(Select, HandleConsumedByItsAwaiterMeanwhileStillGivesAnIndex) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_task *victim = kt::spawn([] {
        kio_sleep(5 * kMs);
        return intptr_t(7);
    });
    kio_task *reuser = nullptr;
    kio_task *awaiter = kt::spawn([&] {
        void *res = nullptr;
        int r = kio_await(victim, &res);
        reuser = kt::spawn([] {  // most likely in the victim's slot
            kio_sleep(20 * kMs);
            return intptr_t(0);
        });
        return r ? intptr_t(r) : vi(res);
    });
    kio_yield();  // the awaiter parks first, so it is woken first
    kio_task *selector = kt::spawn([&] {
        size_t idx = 12345;
        int r = kio_select(&victim, 1, &idx);
        return r ? intptr_t(r) : intptr_t(idx);
    });
    EXPECT_EQ(kt::await_ok(selector), 0);
    EXPECT_EQ(kt::await_ok(awaiter), 7);
    EXPECT_EQ(kt::await_ok(reuser), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

// The same race on two workers, in the window between the call's check of
// its handles and its registration on them: the awaiter consumes the handle
// and a new task takes the slot meanwhile. The call must still return at
// once with the consumed task's index, not wait for the new task (it used to
// register on the new one). A long array of one running task widens the
// window.
TEST(Select, SlotReusedBeforeTheCallRegistersIsNotWaitedOn) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> stop{0};
    kio_task *running = kt::spawn([&] {
        while (!stop.load()) kio_sleep(kMs);
        return intptr_t(0);
    });
    constexpr size_t kPad = 4000;
    std::vector<kio_task *> set(kPad + 1, running);
    int stuck = 0;
    uint64_t end = kio_now() + 3 * kSec;
    for (int i = 0; i < int(kt::scaled(20000)) && !stuck && kio_now() < end; i++) {
        std::atomic<int> release{0};
        kio_task *quick = kt::spawn([i] {  // finishes after a varying delay
            for (volatile int k = 0; k < (i * 37) % 256; k++) {
            }
            return intptr_t(7);
        });
        set[kPad] = quick;
        kio_task *selector = kt::spawn([&] {
            size_t idx = 12345;
            int r = kio_select(set.data(), set.size(), &idx);
            return r ? intptr_t(r) : intptr_t(idx);
        });
        kio_task *reuser = nullptr;
        kio_task *awaiter = kt::spawn([&] {
            void *res = nullptr;
            int r = kio_await(quick, &res);
            reuser = kt::spawn([&] {  // most likely in quick's slot
                while (!release.load()) kio_sleep(kMs);
                return intptr_t(0);
            });
            return r ? intptr_t(r) : vi(res);
        });
        uint64_t saved = kio_deadline_set(kio_now() + 2 * kSec);
        void *res = nullptr;
        int r = kio_await(selector, &res);
        kio_deadline_set(saved);
        if (r == -ETIMEDOUT) {
            stuck = i + 1;
            release.store(1);
            r = kio_await(selector, &res);
        }
        EXPECT_EQ(r, 0);
        // -EINVAL: the handle was consumed before the call looked at it.
        if (vi(res) != -EINVAL) {
            EXPECT_EQ(vi(res), intptr_t(kPad)) << "iteration " << i;
        }
        EXPECT_EQ(kt::await_ok(awaiter), 7);
        release.store(1);
        EXPECT_EQ(kt::await_ok(reuser), 0);
    }
    EXPECT_EQ(stuck, 0) << "kio_select waited on the task that reused a consumed handle's slot";
    stop.store(1);
    EXPECT_EQ(kt::await_ok(running), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Select, FromPlainThreadBlocks) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> release{0}, done{0};
    kio_task *ts[2];
    ts[0] = kt::spawn([&] { return block_until(release, 1); });
    ts[1] = kt::spawn([] {
        kio_sleep(10 * kMs);
        return intptr_t(2);
    });
    int rc = 9;
    size_t idx = 99;
    std::thread th([&] {
        rc = kio_select(ts, 2, &idx);
        done = 1;
    });
    ASSERT_TRUE(kt::wait_flag(done, 1));
    th.join();
    EXPECT_EQ(rc, 0);
    EXPECT_EQ(idx, 1u);
    release = 1;
    EXPECT_EQ(kt::await_ok(ts[0]), 1);
    EXPECT_EQ(kt::await_ok(ts[1]), 2);
    EXPECT_EQ(rt.destroy(), 0);
}

// One select over tasks of two runtimes: a task of the other runtime wakes
// it, and that runtime stops cleanly once the select is over.
TEST(Select, TasksOfTwoRuntimes) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    kio_runtime *other = nullptr;
    ASSERT_EQ(kio_runtime_start(nullptr, &other), 0);
    std::atomic<int> release{0};
    kio_task *ts[2];
    ts[0] = kt::spawn([&] { return block_until(release, 1); });
    ts[1] = kt::spawn(
        [] {
            kio_sleep(10 * kMs);
            return intptr_t(2);
        },
        other);
    ASSERT_NE(ts[1], nullptr);
    size_t idx = 99;
    EXPECT_EQ(kio_select(ts, 2, &idx), 0);
    EXPECT_EQ(idx, 1u);
    EXPECT_EQ(kt::await_ok(ts[1]), 2);
    EXPECT_EQ(kio_runtime_stop(other), 0);
    release = 1;
    EXPECT_EQ(kt::await_ok(ts[0]), 1);
    EXPECT_EQ(rt.destroy(), 0);
}

// ---------------------------------------------------------------------------
// Plain threads driving tasks

TEST(PlainThread, SpawnsAwaitsCancelsAndDetachesTasks) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    kio_runtime *h = rt.get();
    std::atomic<int> done{0}, detached_ran{0};
    int spawn_rc[3] = {9, 9, 9}, await_rc = 9, cancel_rc = 9, detach_rc = 9;
    intptr_t await_val = 0, cancel_val = 0;
    std::thread th([&] {
        kio_task *a = nullptr, *b = nullptr, *c = nullptr;
        spawn_rc[0] = kt::try_spawn(h, [] {
            kio_sleep(1 * kMs);
            return intptr_t(kio_current() != nullptr ? 5 : -5);
        }, &a);
        spawn_rc[1] = kt::try_spawn(h, [] { return intptr_t(kio_sleep(kHour)); }, &b);
        spawn_rc[2] = kt::try_spawn(h, [&] {
            detached_ran = 1;
            return intptr_t(0);
        }, &c);
        void *res = nullptr;
        await_rc = kio_await(a, &res);
        await_val = vi(res);
        kio_sleep(10 * kMs);  // plain-thread sleep; b parks meanwhile
        res = nullptr;
        cancel_rc = kio_cancel(b, &res);
        cancel_val = vi(res);
        detach_rc = kio_detach(c);
        done = 1;
    });
    ASSERT_TRUE(kt::wait_flag(done, 1));
    th.join();
    EXPECT_EQ(spawn_rc[0], 0);
    EXPECT_EQ(spawn_rc[1], 0);
    EXPECT_EQ(spawn_rc[2], 0);
    EXPECT_EQ(await_rc, 0);
    EXPECT_EQ(await_val, 5);
    EXPECT_EQ(cancel_rc, 0);
    EXPECT_EQ(cancel_val, -ECANCELED);
    EXPECT_EQ(detach_rc, 0);
    ASSERT_TRUE(kt::wait_flag(detached_ran, 1));
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(PlainThread, InjectedTaskRunsWhileTheOnlyWorkerKeepsYielding) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_runtime *h = rt.get();
    std::atomic<int> flag{0};
    kio_task *yielder = kt::spawn([&] {
        intptr_t n = 0;
        while (!flag.load() && n < 100000000) {
            kio_yield();
            n++;
        }
        return intptr_t(flag.load());
    });
    kio_yield();  // the yielder is running now
    int rc = 9;
    std::thread th([&] {
        kio_task *t = nullptr;
        rc = kt::try_spawn(h, [&] {
            flag = 1;
            return intptr_t(0);
        }, &t);
        if (rc == 0) rc = kio_detach(t);
    });
    th.join();
    EXPECT_EQ(rc, 0);
    EXPECT_EQ(kt::await_ok(yielder), 1);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(PlainThread, TaskSpawnsIntoAnotherRuntimeAndAwaits) {
    // Runtime B lives on its own thread; tasks of A spawn into B and await.
    std::atomic<kio_runtime *> rtb{nullptr};
    std::atomic<int> stop_b{0}, b_rc{9};
    std::thread tb([&] {
        kio_runtime *r = nullptr;
        b_rc = kio_runtime_create(nullptr, &r);
        if (b_rc != 0) return;
        rtb = r;
        while (!stop_b.load()) kio_sleep(1 * kMs);
        b_rc = kio_runtime_destroy(r);
    });
    while (!rtb.load() && b_rc.load() == 9) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_NE(rtb.load(), nullptr);
    {
        kt::Rt rt(2);
        ASSERT_EQ(rt.rc(), 0);
        kio_runtime *b = rtb.load();
        std::vector<kio_task *> ts;
        for (int k = 0; k < 4; k++)
            ts.push_back(kt::spawn([b, k] {
                intptr_t sum = 0;
                for (int i = 0; i < 8; i++) {
                    kio_task *c = nullptr;
                    if (kt::try_spawn(b, [b, i] { return intptr_t(kio_current() == b ? i : -1000); }, &c) != 0)
                        return intptr_t(-1);
                    void *res = nullptr;
                    if (kio_await(c, &res) != 0) return intptr_t(-2);
                    sum += vi(res);
                }
                return sum + k * 1000;
            }));
        for (int k = 0; k < 4; k++) EXPECT_EQ(kt::await_ok(ts[k]), 28 + k * 1000);
        EXPECT_EQ(rt.destroy(), 0);
    }
    stop_b = 1;
    tb.join();
    EXPECT_EQ(b_rc.load(), 0);
}

TEST(PlainThread, AwaitsTaskSpawnedByFiber) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    kio_task *t = kt::spawn([] {
        kio_sleep(10 * kMs);
        return intptr_t(8);
    });
    std::atomic<int> done{0};
    int rc = 9;
    intptr_t val = 0;
    std::thread th([&] {
        void *res = nullptr;
        rc = kio_await(t, &res);
        val = vi(res);
        done = 1;
    });
    ASSERT_TRUE(kt::wait_flag(done, 1));
    th.join();
    EXPECT_EQ(rc, 0);
    EXPECT_EQ(val, 8);
    EXPECT_EQ(rt.destroy(), 0);
}

// `rounds` times: spawn n tasks that return their index, await them all and
// check the sum. Enough of them make an idle worker a reluctant thief.
static void tiny_task_bursts(int rounds, int n) {
    for (int round = 0; round < rounds; round++) {
        std::vector<kio_task *> ts;
        for (int i = 0; i < n; i++) ts.push_back(kt::spawn([i] { return intptr_t(i); }));
        intptr_t sum = 0;
        for (kio_task *t : ts) sum += kt::await_ok(t);
        EXPECT_EQ(sum, intptr_t(n - 1) * n / 2);
    }
}

// Bursts of tiny tasks teach an idle worker that stealing them does not pay
// (each would cost more in cache traffic than it runs), yet tasks queued
// behind a fiber that keeps its worker busy are still taken: here three
// spinners each wait, without any kio call, until two of them run at once,
// which needs the second worker to take one from the first's spawn deque.
// The reluctant worker is not woken for spawns; it sleeps at most 1 ms
// (kReluctantProbe) while the other runs, so that happens promptly.
TEST(Steal, QueuedTasksBehindABusyFiberAreTakenAfterBurstsOfTinyOnes) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    for (int round = 0; round < 3; round++) {
        tiny_task_bursts(50, 200);
        std::atomic<int> started{0};
        std::atomic<uint64_t> two_at_once{0};
        auto spinner = [&] {
            if (++started == 2) two_at_once = kio_now();
            uint64_t t0 = kio_now();
            while (started.load() < 2 && kio_now() - t0 < kt::prompt(5 * kSec)) {
            }
            return intptr_t(started.load() >= 2);
        };
        uint64_t t0 = kio_now();
        std::vector<kio_task *> ts;
        for (int i = 0; i < 3; i++) ts.push_back(kt::spawn(spinner));
        for (kio_task *t : ts) EXPECT_EQ(kt::await_ok(t), 1);
        ASSERT_NE(two_at_once.load(), 0u);
        EXPECT_LT(two_at_once.load() - t0, kt::prompt(500 * kMs)) << "round " << round;
    }
    EXPECT_EQ(rt.destroy(), 0);
}

// A pinned task that awaits children on its worker is woken there, and the
// wakeup may skip the run queue (the child's exit switches straight to it);
// when the fairness pick is due at that exit, the task must go to its
// worker's inbox, never to the stealable ring. A pinned parent keeps an
// idle worker looking for work (a child spins 30 us) and compares OS threads
// across each await, over enough rounds to meet many fairness picks.
TEST(Steal, PinnedAwaiterNeverRunsOnAnotherWorker) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    kio_spawn_options o;
    kio_spawn_options_init(&o);
    o.pinned = 1;
    std::atomic<int> moved{0};
    kio_task *parent = kt::spawn_ex(&o, [&] {
        long me = kt::os_thread_id();
        tiny_task_bursts(5, 1000);  // the idle worker turns reluctant
        if (kt::os_thread_id() != me) moved++;
        for (int r = 0; r < 3000; r++) {
            kio_task *spinner = kt::spawn([] {
                uint64_t t0 = kio_now();
                while (kio_now() - t0 < 30 * kUs) {
                }
                return intptr_t(1);
            });
            kio_task *tiny = kt::spawn([] { return intptr_t(2); });
            EXPECT_EQ(kt::await_ok(tiny), 2);
            if (kt::os_thread_id() != me) moved++;
            EXPECT_EQ(kt::await_ok(spinner), 1);
            if (kt::os_thread_id() != me) moved++;
        }
        return intptr_t(0);
    });
    EXPECT_EQ(kt::await_ok(parent), 0);
    EXPECT_EQ(moved.load(), 0) << "a pinned task ran on another worker";
    EXPECT_EQ(rt.destroy(), 0);
}

// ---------------------------------------------------------------------------
// Pinned tasks and fairness

namespace {

std::atomic<int> g_pinned_stop{0};
kio_mutex g_pinned_m = KIO_MUTEX_INIT;
kio_cond g_pinned_c = KIO_COND_INIT;
int g_pinned_turn = 0;  // guarded by g_pinned_m

// Two pinned tasks on a one-worker runtime keep the worker busy with each
// other (body: yielding, or a condition ping-pong) while the main fiber
// sleeps 1 ms and a plain thread injects a task: both must still run within
// a bounded delay. A watchdog stops the pinned pair after 3 s so that a
// starved worker fails the test instead of hanging it.
void expect_pinned_pair_does_not_starve(void *(*body)(void *)) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_spawn_options o;
    kio_spawn_options_init(&o);
    o.pinned = 1;
    kio_task *pair[2];
    for (intptr_t i = 0; i < 2; i++) ASSERT_EQ(kio_spawn_ex(nullptr, body, iv(i), &o, &pair[i]), 0);
    std::atomic<int> injected_ran{0}, done{0};
    std::thread outside([&] {
        kio_task *t = nullptr;
        if (kt::try_spawn(rt.get(), [&] {
                injected_ran = 1;
                return intptr_t(0);
            }, &t) == 0)
            kio_detach(t);
        uint64_t end = kio_now() + 3 * kSec;
        while (!done.load() && kio_now() < end) kio_sleep(1 * kMs);
        g_pinned_stop = 1;  // the watchdog
    });
    uint64_t t0 = kio_now();
    EXPECT_EQ(kio_sleep(1 * kMs), 0);
    uint64_t slept = kt::since(t0);
    EXPECT_TRUE(kt::wait_flag(injected_ran, 1, 2 * kSec)) << "injected work starved";
    done = 1;
    EXPECT_LT(slept, kt::prompt(500 * kMs)) << "the main fiber's 1 ms sleep was starved";
    g_pinned_stop = 1;
    outside.join();
    kio_mutex_lock(&g_pinned_m);
    kio_cond_broadcast(&g_pinned_c);
    kio_mutex_unlock(&g_pinned_m);
    for (kio_task *t : pair) EXPECT_EQ(kt::await_ok(t), 0);
    EXPECT_EQ(rt.destroy(), 0);
    g_pinned_stop = 0;
}

}  // namespace

TEST(Fairness, PinnedYieldersDoNotStarveTheirWorker) {
    expect_pinned_pair_does_not_starve([](void *) -> void * {
        while (!g_pinned_stop.load()) kio_yield();
        return nullptr;
    });
}

// On their own worker, pinned fibers queue with the others: two pinned
// yielders and an unpinned one on a one-worker runtime take turns, FIFO, and
// the main fiber's sleep ends on time. (Pinned fibers used to go through the
// worker's inbox, which every pick but the fairness tick serves first, and
// the tick served the unpinned yielder before woken fibers: the main fiber
// never woke up. A watchdog thread stops the yielders after 3 s so that
// this fails instead of hanging.)
TEST(Fairness, PinnedYieldersTakeTurnsWithOtherYielders) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> stop{0};
    std::thread watchdog([&] {
        uint64_t end = kio_now() + 3 * kSec;
        while (!stop.load() && kio_now() < end) kio_sleep(1 * kMs);
        stop = 1;
    });
    std::atomic<long> counts[3] = {{0}, {0}, {0}};
    auto yielder = [&](int i) {
        return [&, i] {
            while (!stop.load()) {
                EXPECT_EQ(kio_yield(), 0);
                counts[i]++;
            }
            return intptr_t(0);
        };
    };
    kio_spawn_options o;
    kio_spawn_options_init(&o);
    o.pinned = 1;
    kio_task *ts[3] = {kt::spawn_ex(&o, yielder(0)), kt::spawn_ex(&o, yielder(1)), kt::spawn(yielder(2))};
    uint64_t t0 = kio_now();
    EXPECT_EQ(kio_sleep(20 * kMs), 0);
    uint64_t slept = kt::since(t0);
    stop = 1;
    watchdog.join();
    for (kio_task *t : ts) EXPECT_EQ(kt::await_ok(t), 0);
    EXPECT_LT(slept, kt::prompt(1 * kSec)) << "the main fiber's 20 ms sleep was starved";
    long pinned_min = std::min(counts[0].load(), counts[1].load());
    long pinned_max = std::max(counts[0].load(), counts[1].load());
    EXPECT_GT(pinned_min, 100);
    EXPECT_GE(counts[2].load(), pinned_min / 2) << "pinned " << counts[0] << " and " << counts[1];
    EXPECT_LE(counts[2].load(), pinned_max * 2) << "pinned " << counts[0] << " and " << counts[1];
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Fairness, PinnedPingPongDoesNotStarveItsWorker) {
    expect_pinned_pair_does_not_starve([](void *arg) -> void * {
        int me = int(vi(arg));
        kio_mutex_lock(&g_pinned_m);
        while (!g_pinned_stop.load()) {
            while (g_pinned_turn != me && !g_pinned_stop.load()) kio_cond_wait(&g_pinned_c, &g_pinned_m);
            g_pinned_turn = !me;
            kio_cond_signal(&g_pinned_c);
        }
        kio_cond_broadcast(&g_pinned_c);
        kio_mutex_unlock(&g_pinned_m);
        return nullptr;
    });
}
