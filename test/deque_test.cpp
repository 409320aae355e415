// The spawn deque's protocol, hammered directly (lib/runqueue.h): an owner
// thread pushes and pops while a thief thread wakes, announces itself in the
// awake count, steals and goes back to sleep, as workers do (worker.cpp).
// Every task must be taken exactly once. Through the public API the race is
// rare (thieves leave a lone fresh task alone unless its worker looks stuck);
// here it is the whole loop.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "fence.h"
#include "kio_test_util.h"
#include "runqueue.h"

namespace {

constexpr int kSlots = 4;  // tasks in flight per round

void delay(unsigned n) {
    for (unsigned i = 0; i < n; i++) __asm__ volatile("" ::: "memory");
}

struct Hammer {
    kio::Deque deque;
    std::atomic<int> awake{1};  // the owner
    std::unique_ptr<kio::Task[]> tasks{new kio::Task[kSlots]};
    std::atomic<int> taken[kSlots] = {};  // per slot, this round
    std::atomic<uint64_t> in_round{0};    // tasks of this round taken
    std::atomic<bool> done{false};
    std::atomic<uint64_t> stolen{0};

    int slot(kio::Task *t) const { return int(t - tasks.get()); }

    void take(kio::Task *t) {
        taken[slot(t)].fetch_add(1, std::memory_order_relaxed);
        in_round.fetch_add(1, std::memory_order_release);
    }

    // As a worker: sleeps (uncounted, no steals), wakes (counted, then a heavy
    // fence), steals for a while.
    void thief(bool announce) {
        unsigned r = 1;
        while (!done.load(std::memory_order_acquire)) {
            if (announce) {
                awake.fetch_add(1, std::memory_order_relaxed);
                kio::heavy_fence();
            }
            r = r * 1103515245u + 12345u;
            for (unsigned k = (r >> 16) % 64; k > 0; k--) {
                if (kio::Task *t = deque.steal()) {
                    take(t);
                    stolen.fetch_add(1, std::memory_order_relaxed);
                }
            }
            if (announce) awake.fetch_sub(1, std::memory_order_release);
            delay((r >> 8) % 2000);
        }
    }

    // The owner: pushes 1..kSlots tasks, pops until empty, waits for the
    // round to be taken, checks each task was taken once. False on a
    // duplicate or a lost task.
    bool owner(uint64_t n) {
        for (uint64_t round = 0; round < n; round++) {
            int k = 1 + int(round % kSlots);
            for (int i = 0; i < k; i++) taken[i].store(0, std::memory_order_relaxed);
            in_round.store(0, std::memory_order_release);
            for (int i = 0; i < k; i++) {
                if (!deque.push(&tasks[i])) return false;
            }
            delay(unsigned(round % 5) * 40);
            while (kio::Task *t = deque.pop()) take(t);
            for (unsigned spins = 0; in_round.load(std::memory_order_acquire) < uint64_t(k); spins++) {
                if (spins > 100000000) return false;  // lost: nobody took it
            }
            for (int i = 0; i < k; i++)
                if (taken[i].load(std::memory_order_relaxed) != 1) return false;
        }
        return true;
    }
};

// with_count: the deque reads the awake count, which the thief keeps.
void run(bool with_count) {
    kio::init_fences();
    auto h = std::make_unique<Hammer>();
    if (with_count) h->deque.set_awake_count(&h->awake);
    std::thread thief([&] { h->thief(with_count); });
    bool ok = h->owner(kt::scaled(3000000));
    h->done.store(true, std::memory_order_release);
    thief.join();
    EXPECT_TRUE(ok) << "a task was taken twice or never";
    EXPECT_GT(h->stolen.load(), 0u) << "the thief never stole: the race was not run";
}

// The owner pops without a fence whenever it reads the awake count as 1.
TEST(Deque, OwnerAloneAndWakingThiefTakeEachTaskOnce) { run(true); }

// Without the awake count: the ordinary Chase-Lev race.
TEST(Deque, OwnerAndThiefWithoutAwakeCountTakeEachTaskOnce) { run(false); }

}  // namespace
