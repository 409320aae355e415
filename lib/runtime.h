// The runtime: workers, the injection queue, the pools, and the bookkeeping
// for lazy worker start and shutdown.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <mutex>

#include "fence.h"
#include "poller.h"
#include "runqueue.h"
#include "stack.h"
#include "task.h"
#include "worker.h"

struct kio_runtime {};  // the public handle is a Runtime (below), never dereferenced

namespace kio {

constexpr size_t kDefaultStackSize = 64 * 1024;
constexpr size_t kMinStackSize = 16 * 1024;
constexpr size_t kMaxStackSize = size_t(1) << 30;
constexpr size_t kIdleStackSize = 256 * 1024;
constexpr unsigned kMaxThreads = 1024;

struct Runtime : kio_runtime {
    static constexpr uint32_t kMagicLive = 0x6b696f52;  // "kioR"

    std::atomic<uint32_t> magic{kMagicLive};
    unsigned nthreads = 1;
    Backend backend = Backend::kEpoll;
    Worker *workers = nullptr;                   // nthreads entries
    std::atomic<unsigned> nstarted{1};           // workers with a running thread (0 included)
    std::mutex start_lock;                       // serializes lazy worker start
    std::atomic<int> nspinning{0};               // workers looking for work without sleeping
    std::atomic<int> nsleeping{0};               // workers blocked (or about to) in their poller
    std::atomic<int> nsleeping_unbounded{0};     // those of them without a backstop timeout
    std::atomic<int> nsleeping_reluctant{0};     // those of them reluctant to take fresh tasks
    // A descriptor was registered with a worker's poller: from then on an
    // idle worker looks at busy workers' pollers at least every kIoCoverNs
    // (the I/O cover in sleep(), worker.cpp).
    std::atomic<bool> io_registered{false};

    TaskQueue inject;                            // work from plain threads, ring overflow
    StackPool stacks;
    TaskPool tasks;
    std::atomic<uint64_t> next_id{2};            // 1 is the main fiber; workers take blocks
    std::atomic<int64_t> foreign_spawned{0};     // tasks spawned by plain threads

    std::atomic<bool> shutting_down{false};
    std::atomic<bool> exiting{false};
    std::atomic<int> outside_calls{0};  // plain threads inside kio_spawn, or kio_await/cancel/select on our tasks
    // kio_stats and kio_dump, from any thread, read the workers until the
    // very end: destroy sets `freeing`, then waits for `observers` to drop
    // to zero before it frees them (see Observer in debug.cpp).
    std::atomic<int> observers{0};
    std::atomic<bool> freeing{false};
    std::atomic<class BlockingPool *> blocking{nullptr};  // created on first use

    // Debugging options (kio_options).
    bool debug_migrate = false;
    std::atomic<unsigned> migrate_next{0};
    uint64_t stall_ns = 0;
    int dump_signal = 0;
    class Monitor *monitor = nullptr;  // thread for the stall watchdog and dump signal
    struct Background *background = nullptr;  // set for runtimes made by kio_runtime_start
    // The one kio_runtime_stop that may proceed. In the Runtime, whose memory
    // outlives it, not in the Background that the winner frees: a second
    // caller racing the first must be able to lose without touching freed memory.
    std::atomic<bool> stop_claimed{false};
    Runtime *debug_next = nullptr;     // the list of live runtimes for debuggers (debug.cpp)

    // The main fiber (on the thread's stack). Its Task comes from the task
    // slabs, which outlive the runtime: a mutex it still held at destroy
    // names it (task_pool.cpp).
    Task *main = nullptr;
    pthread_t creator{};

    // Workers that may steal right now: started and not asleep in their
    // poller (worker 0 from the start). A worker raises it, then runs
    // heavy_fence(), before its first steal after starting or waking, and
    // lowers it after its last steal before sleeping: while it reads 1, a
    // worker pops its spawn deque without a fence (Deque::pop_alone). Its own
    // line: every such pop reads it.
    alignas(kCacheLine) std::atomic<int> nawake{1};
    char nawake_line_[kCacheLine - sizeof(std::atomic<int>)] = {};

    explicit Runtime(size_t stack_size) : stacks(stack_size) {}
    size_t default_stack() const { return stacks.default_size(); }

    // Tasks spawned and not yet recycled. Exact when it returns 0 (see
    // runtime.cpp); only destroy asks.
    int64_t live_tasks() const;
};

inline Runtime *runtime_of(kio_runtime *rt) {
    auto *r = static_cast<Runtime *>(rt);
    if (!r || r->magic.load(std::memory_order_acquire) != Runtime::kMagicLive) return nullptr;
    return r;
}

// A worker covers another's timers only this late, so an owner that is merely
// busy (not stuck) fires its own.
constexpr uint64_t kBackupGrace = 2 * 1000 * 1000;
// deadline + kBackupGrace without wrapping: a deadline near UINT64_MAX
// (any absolute uint64_t is valid) must not come out as one long past.
inline uint64_t after_backup_grace(uint64_t deadline) {
    return deadline > UINT64_MAX - kBackupGrace ? UINT64_MAX : deadline + kBackupGrace;
}
// How long an idle worker sleeps at most while another worker runs a fiber:
// that fiber may have readied a task without waking anyone (ready()), and
// may not switch for a long time. Doubles after each backstop that found
// nothing to take, up to the maximum (a fiber that runs for long without
// kio calls, such as a host language's main loop, then costs an idle worker
// a few wakeups per second, not hundreds).
constexpr uint64_t kBackstopNs = 2 * 1000 * 1000;
constexpr uint64_t kBackstopMaxNs = 32 * 1000 * 1000;
// The I/O cover (sleep() in worker.cpp): how long a worker that sleeps
// without a backstop goes without looking at busy workers' pollers, once
// the runtime has registered a descriptor. Each look costs the idle worker
// a wakeup and a heavy fence: at 100 ms an idle runtime of two workers
// spends about 0.1% of a CPU (0.01% without the cover, 0.3% at 32 ms).
constexpr uint64_t kIoCoverNs = 100 * 1000 * 1000;
// A thief reluctant to take fresh tasks (steal() in scheduler.cpp) steals
// one anyway this often, to measure them again; it sleeps at most this long
// while another worker runs a fiber, since spawns do not wake it.
constexpr uint64_t kReluctantProbe = 1000 * 1000;

// Scheduler entry points (scheduler.cpp).
void ready(Task *t);                      // a parked fiber may run again (FIFO)
// A spawned task: newest first on w, the spawner's worker if it belongs to
// rt, else (w nullptr) through the injection queue.
void submit_new(Runtime *rt, Worker *w, Task *t);
void notify(Runtime *rt);                 // new work exists: make sure some worker will look
void wake_worker(Worker *w);              // ring w if it sleeps
Task *find_work(Worker *w);               // next fiber to run on w, or nullptr
bool reluctant_thief(const Worker *w);    // w's fresh steals ran too briefly to be worth it
void exit_fiber();  // the calling task's fn returned; never returns (a tail call: scheduler.cpp)
int yield_current(Worker *w);             // reschedule the calling fiber (on w) at the back
void migrate_current(Worker *to);         // continue the calling fiber on `to`
void park_current(Waiter *w, PublishFn publish, void *arg, uint64_t deadline, bool cancelable,
                  int kind);
void run_from_idle(Worker *w, Task *t);   // idle context: run t until it switches back
int poll_worker(Worker *w, uint64_t deadline);   // block in w's poller, dispatch events (count)
void idle_entry(void *msg, void *arg);    // worker 0's idle context starts here
void idle_loop(Worker *w);                // a worker's idle context (worker.cpp)
int start_worker(Runtime *rt);            // lazily start one more worker (worker.cpp)

// Task lifecycle helpers (task.cpp).
// fn returned: publish the result, wake waiters. kDropped/kDroppedLast: the
// fiber's reference went with it (the caller must not touch t again, unless
// it held the last one: then t is the caller's to free).
FinishRef finish_task(Task *t);
bool hand_on_exit(Task *t);               // the dying caller switches to woken t next (see scheduler.cpp)
void release_task(Task *t);               // drops one reference
void free_task(Task *t);  // the last reference went: back to the worker's cache or the pool
void request_cancel(Task *t);
void cancel_all(Runtime *rt);

// Debugging (debug.cpp).
void *debug_thread_start();            // alternate signal stack for a worker thread
void debug_thread_stop(void *altstack);
int debug_runtime_start(Runtime *rt);  // monitor thread (dump signal, stall watchdog)
int stall_signal_number();              // the signal the stall watchdog sends workers
void debug_runtime_stop(Runtime *rt);

// Completion queues (cq.cpp).
void cq_post(CompletionQueue *q, uint64_t user_data, void *result);
void cq_unref(CompletionQueue *q);

}  // namespace kio
