// Workers: the OS threads that run fibers. Each owns run queues, timers,
// a poller, and caches of stacks and task slots.
//
// Fibers switch directly to one another; a worker's own "idle context" (its
// thread's stack, or an allocated stack for worker 0, whose thread stack is the
// main fiber's) runs only when there is nothing to run: it spins briefly, then
// sleeps in the poller until a doorbell, an I/O readiness or a timer.
//
//   sleep_state   kAwake --(about to block)--> kSleeping --(a producer claims
//                 the right to ring it)--> kNotified --(woke up)--> kAwake
//                 kSleeping --(woke up on its own)--> kAwake
//   Only the producer that moves kSleeping -> kNotified rings the doorbell, so
//   a sleeping worker is rung at most once per sleep.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstdint>

#include "poller.h"
#include "runqueue.h"
#include "sanitizer.h"
#include "stack.h"
#include "task.h"
#include "timer.h"

namespace kio {

struct Runtime;
struct Worker;

// What a context that switches away leaves for the one that arrives (which
// runs on the same worker and handles it before anything else): the
// switch-then-publish step. See scheduler.cpp.
struct SwitchMsg {
    enum Kind : uint8_t { kNothing, kReschedule, kPublish, kRecycle, kMigrate };
    Kind kind = kNothing;
    Task *prev = nullptr;      // the context that left (nullptr: the idle context)
    Worker *worker = nullptr;  // where the switch happened
    // kPublish
    Waiter *waiter = nullptr;
    PublishFn publish = nullptr;
    void *arg = nullptr;
    uint64_t deadline = 0;
    bool cancelable = false;
    // kMigrate
    Worker *target = nullptr;
};

struct alignas(kCacheLine) Worker {
    enum : uint32_t { kAwake, kSleeping, kNotified };
    // Stacks move between a worker's cache and the shared pool (a mutex) in
    // batches of half this. 16 made two workers contend on that mutex when
    // one spawns and the other ends tasks (100k sleepers: 52 -> 44 ms at 64).
    static constexpr size_t kStackCache = 64;
    static constexpr size_t kTaskCache = 256;

    Runtime *rt = nullptr;
    unsigned index = 0;
    // Neither the stall watchdog nor KIO_DEBUG_MIGRATE is on (the runtime's
    // flags, copied here: the yield path tests them without loading rt).
    bool plain = true;

    // Owner thread only.
    Racy<Task *> current;     // running fiber; nullptr while the idle context runs
                              // (other workers read it: sleep() in worker.cpp)
    SwitchMsg msg;            // the message of the switch in progress
    Task *exit_next = nullptr;  // woken by the dying fiber, runs next (hand_on_exit)
    // The fiber that ended, as it was before finish_task (which may have
    // dropped its reference: its Task may be freed and reused by then), for
    // its recycling (recycle in scheduler.cpp).
    struct Dying {
        Stack stack;
        uint64_t stolen_at = 0;
        FiberSan san;
        FinishRef ref = FinishRef::kKept;
        bool stack_handed_on = false;  // to the next task (restart_with)
    };
    Dying dying;
    void *idle_sp = nullptr;  // saved idle context
    FiberSan idle_san;
    Stack idle_stack;         // worker 0 only
    // The steal clocks (see steal() in scheduler.cpp): per other worker, its
    // pick count when this one started watching it, and since when.
    struct VictimWatch {
        Worker *victim = nullptr;
        uint32_t tick = 0;
        uint64_t since = 0;
    };
    static constexpr unsigned kWatchSlots = 64;  // more workers share slots (and restart clocks)
    VictimWatch watch[kWatchSlots];
    // Steal granularity (see steal() in scheduler.cpp): how long the fresh
    // tasks this worker stole ran, on average (EWMA), from their steal to
    // their end, and its last steal while that average was short.
    uint64_t stolen_busy_ns = UINT32_MAX;
    uint64_t reluctant_steal_at = 0;
    uint32_t rng = 1;
    uint64_t last_poll = 0;
    unsigned backstop_doublings = 0;  // of the next backstop sleep (sleep() in worker.cpp)
    // How long the next idle spin may last, between these (spin() in worker.cpp).
    static constexpr uint64_t kSpinMaxNs = 50 * 1000;
    static constexpr uint64_t kSpinMinNs = 5 * 1000;
    uint64_t spin_ns = kSpinMaxNs;
    Stack stacks[kStackCache];
    size_t nstacks = 0;
    Task *task_cache = nullptr;
    size_t ntasks = 0;
    NumberBlock task_ids;      // from Runtime::next_id
    NumberBlock mutex_owners;  // mutex owner identities (mutex.cpp)
    PollEvent events[64];

    // Shared with other threads.
    Ring ready;               // woken fibers, FIFO (run first: they hold stacks)
    Deque spawned;            // new children, newest first
    Ring yielded;             // fibers that yielded, FIFO (after new children)
    TaskQueue inbox;          // pinned fibers of this worker, migrations
    TaskQueue migrated;       // KIO_DEBUG_MIGRATE arrivals (stealable, so never stuck)
    TimerHeap timers;
    Poller poller;
    std::atomic<uint32_t> tick{0};   // picks so far; owner writes, thieves read
    std::atomic<uint32_t> sleep_state{kAwake};
    std::atomic<uint64_t> sleep_until{UINT64_MAX};
    std::atomic<bool> sleep_reluctant{false};  // sleeping reluctant to take fresh tasks
    pthread_t thread{};
    bool has_thread = false;
    // Written only by this worker (no read-modify-write), read by destroy
    // and kio_stats.
    std::atomic<int64_t> nspawned{0};  // tasks this worker's fibers spawned
    std::atomic<int64_t> nretired{0};  // tasks recycled on this worker
    std::atomic<int64_t> n_switches{0};
    std::atomic<int64_t> n_steals{0};
    std::atomic<int64_t> n_parks[KIO_PARK_KINDS] = {};
    std::atomic<int64_t> stall_epoch{0};     // stall watchdog: bumped with switched_at
    std::atomic<uint64_t> switched_at{0};  // stall watchdog: when `current` started running
    void *altstack = nullptr;              // signal stack of this worker's thread
    long os_tid = 0;  // its kernel thread id (Linux), for debuggers that cannot read TLS

    static void bump(std::atomic<int64_t> &c) {
        c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }

    // The steal clock of v: how long v has gone without picking anything,
    // as far as this worker has watched (0 when it starts watching v or sees
    // a new pick). One clock per victim, so that looking at one worker does
    // not restart the clock of another.
    uint64_t stuck_for(Worker *v, uint64_t now) {
        VictimWatch &s = watch[v->index % kWatchSlots];
        uint32_t vt = v->tick.load(std::memory_order_relaxed);
        if (s.victim != v || s.tick != vt) {
            s.victim = v;
            s.tick = vt;
            s.since = now;
        }
        return now - s.since;
    }
    // Restarts v's clock (a whole delay must pass again).
    void restart_watch(Worker *v, uint64_t now) { watch[v->index % kWatchSlots].since = now; }

    bool has_local_work() const {
        return stealable() || !inbox.empty();
    }
    bool stealable() const { return spawned.size() > 0 || stealable_but_fresh(); }
    bool stealable_but_fresh() const {
        return ready.size() > 0 || yielded.size() > 0 || !migrated.empty();
    }
};

// The worker the calling thread belongs to, or nullptr. Never inlined, so the
// thread pointer is re-read at every call: a fiber may resume on another
// thread after any switch, and compilers cache TLS addresses within a function.
Worker *current_worker();

// The same, inlined where that is safe. On x86-64 every TLS load goes
// through the %fs segment, so no stale thread pointer can be reused after a
// switch; elsewhere (aarch64 reads tpidr_el0, which compilers may keep in a
// register across calls) it stays a call.
// __thread, not thread_local: it has no dynamic initializer, and thread_local
// would make every use in other files check for one (a TLS wrapper call).
extern __thread Worker *tls_worker __attribute__((tls_model("initial-exec")));
#if defined(__x86_64__)
inline Worker *current_worker_fast() { return tls_worker; }
#else
inline Worker *current_worker_fast() { return current_worker(); }
#endif
// Only for the entry of a function, before anything in it can switch.
inline Worker *current_worker_at_entry() { return tls_worker; }
void set_current_worker(Worker *w);
// The calling fiber's task (nullptr on plain threads and idle contexts).
inline Task *current_task() {
    Worker *w = current_worker_fast();
    return w ? static_cast<Task *>(w->current) : nullptr;
}

}  // namespace kio
