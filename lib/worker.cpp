// A worker's idle context: what a worker thread does when no fiber is ready.
// Look for work, spin briefly (a cross-thread wakeup costs far more than a few
// microseconds of polling), then sleep in the poller until a doorbell, I/O
// readiness or the earliest timer.
#include <cerrno>

#include "fd.h"
#include "runtime.h"

namespace kio {

namespace {

constexpr uint64_t kSpinPollNs = 20 * 1000;   // how often a spinner polls its poller
constexpr int kSpinDelayMin = 200;            // iterations of the delay loop between looks
constexpr int kSpinDelayMax = 6400;           // (~70 ns and ~2 us)

// Work this worker could run: its own queues, the injection queue, and what
// it could steal (not other workers' inboxes: only their owner runs those;
// nor their fresh tasks if `reluctant`, which it would leave there).
// Seen after announcing sleep, it cancels the sleep. Pairs with notify():
// either the producer sees us sleeping, or we see its work.
bool work_visible(Worker *w, bool reluctant = false) {
    Runtime *rt = w->rt;
    if (!rt->inject.empty() || w->has_local_work()) return true;
    unsigned n = rt->nstarted.load(std::memory_order_acquire);
    for (unsigned i = 0; i < n; i++) {
        Worker *v = &rt->workers[i];
        if (v != w && (reluctant ? v->stealable_but_fresh() : v->stealable())) return true;
    }
    return false;
}

// When to wake up: this worker's earliest timer, or another worker's plus a
// grace period (covering for a worker stuck in a fiber that never yields).
uint64_t sleep_deadline(Worker *w) {
    Runtime *rt = w->rt;
    uint64_t d = w->timers.next_deadline();
    unsigned n = rt->nstarted.load(std::memory_order_acquire);
    for (unsigned i = 0; i < n; i++) {
        Worker *v = &rt->workers[i];
        uint64_t vd = v->timers.next_deadline();
        if (v != w && after_backup_grace(vd) < d) d = after_backup_grace(vd);
    }
    return d;
}

void fire_all_due(Worker *w) {
    Runtime *rt = w->rt;
    uint64_t now = now_ns();
    unsigned n = rt->nstarted.load(std::memory_order_acquire);
    for (unsigned i = 0; i < n; i++) {
        Worker *v = &rt->workers[i];
        uint64_t vd = v->timers.next_deadline();
        if (vd == UINT64_MAX) continue;
        if (v == w ? vd <= now : after_backup_grace(vd) <= now) v->timers.fire_expired(now);
    }
}

// w may steal again: counted among the awake workers before its first look
// at another's spawn deque (Runtime::nawake, Deque::pop_alone).
void awaken(Worker *w) {
    w->rt->nawake.fetch_add(1, std::memory_order_relaxed);
    heavy_fence();  // the count before our steals; pairs with the pop's light_fence
}

// Looks for work for up to w->spin_ns. Every worker may spin (a spinner
// saves the producers their doorbell: notify() skips it while anyone spins).
// A runtime of one worker does not spin: nothing but its own poller (I/O,
// the doorbell of outside threads) can hand it work, and sleeping in the
// poller sees that at once, where a spinner would see I/O only at its next
// nonblocking poll, and burn a CPU (that a client on the same machine, say,
// could use) meanwhile.
//
// The spin adapts (limits in worker.h). One that finds work another worker
// made (a woken or stolen fiber, a timer) sets the next one to kSpinMaxNs:
// such work turns up within a few microseconds (100k sleepers, a contended
// mutex: 4-7 us on average). One that finds nothing, or only its own I/O
// (which sleeping in the poller would have seen at once), halves it, down to
// kSpinMinNs. An echo server on 2 workers with its client on the same 2 CPUs
// spent half a CPU in spins that found nothing, 59 us each.
Task *spin(Worker *w) {
    Runtime *rt = w->rt;
    if (rt->nthreads < 2) return nullptr;
    int limit = int(rt->nstarted.load(std::memory_order_relaxed));
    if (limit < 1) limit = 1;
    if (rt->nspinning.load(std::memory_order_relaxed) >= limit) return nullptr;
    rt->nspinning.fetch_add(1, std::memory_order_seq_cst);
    uint64_t start = now_ns();
    Task *t = nullptr;
    bool io = false;  // its own poller brought work
    int delay = kSpinDelayMin;
    for (unsigned round = 1;; round++) {
        // A plain delay loop, not PAUSE: in a VM, a PAUSE loop triggers
        // pause-loop exits that deschedule the spinning vCPU.
        for (int i = 0; i < delay; i++) __asm__ volatile("" ::: "memory");
        // Each look reads the cache lines of other workers' queues, which
        // their owners keep writing: looking less often the longer nothing
        // turns up keeps the spinner from slowing them down.
        if (delay < kSpinDelayMax) delay *= 2;
        if ((t = find_work(w))) break;
        if (round % 8) continue;  // read the clock every 8 rounds
        uint64_t now = now_ns();
        if (now - start >= w->spin_ns) break;
        if (now - w->last_poll >= kSpinPollNs && poll_worker(w, 0) > 0) io = true;
    }
    if (t && !io) w->spin_ns = Worker::kSpinMaxNs;
    else if (w->spin_ns / 2 >= Worker::kSpinMinNs) w->spin_ns /= 2;
    // The last spinner to find work wakes a sleeper if more work is waiting,
    // since producers skip the doorbell while someone spins.
    if (rt->nspinning.fetch_sub(1, std::memory_order_seq_cst) == 1 && t && work_visible(w))
        notify(rt);
    return t;
}

// Another worker that runs a fiber, or nullptr.
Worker *running_other(Worker *w) {
    Runtime *rt = w->rt;
    unsigned n = rt->nstarted.load(std::memory_order_acquire);
    for (unsigned i = 0; i < n; i++) {
        Worker *v = &rt->workers[i];
        if (v != w && static_cast<Task *>(v->current)) return v;
    }
    return nullptr;
}

// At a backstop: readiness registered with a worker that runs a fiber is
// collected here too. Only the owner's own polls would see it otherwise, and
// a fiber that never yields would hold it up indefinitely (the I/O
// counterpart of covering for its timers). The owner's doorbell is left alone.
void poll_for_busy_workers(Worker *w) {
    Runtime *rt = w->rt;
    unsigned n = rt->nstarted.load(std::memory_order_acquire);
    for (unsigned i = 0; i < n; i++) {
        Worker *v = &rt->workers[i];
        if (v == w || !static_cast<Task *>(v->current)) continue;
        int k = v->poller.poll_foreign(w->events, int(sizeof w->events / sizeof w->events[0]));
        if (k > 0) fd_dispatch(w, w->events, k);
    }
}

// Sleeps in the poller until work, I/O, a timer, or (while another worker
// runs a fiber, which may ready a task without waking anyone) the backstop,
// or (once the runtime has registered a descriptor) the I/O cover. Says
// which ended it.
enum Woke { kWokeForWork, kWokeAtBackstop, kWokeAtCover };
Woke sleep(Worker *w) {
    Runtime *rt = w->rt;
    uint64_t deadline = sleep_deadline(w);
    uint64_t backstop = 0;
    bool reluctant = false;  // spawns do not wake it (only_reluctant_sleepers)
    if (Worker *v = running_other(w)) {
        uint64_t now = now_ns();
        backstop = now + (kBackstopNs << w->backstop_doublings);
        reluctant = reluctant_thief(w);
        if (reluctant && backstop > now + kReluctantProbe) backstop = now + kReluctantProbe;
        if (backstop < deadline) deadline = backstop;
        // Start (or keep) the steal clock of v: if v has not
        // picked anything by the backstop, its queued task is taken at once.
        w->stuck_for(v, now);
        if (reluctant) {
            w->sleep_reluctant.store(true, std::memory_order_relaxed);
            rt->nsleeping_reluctant.fetch_add(1, std::memory_order_seq_cst);
        }
    } else {
        rt->nsleeping_unbounded.fetch_add(1, std::memory_order_seq_cst);
    }
    w->sleep_until.store(deadline, std::memory_order_seq_cst);
    w->sleep_state.store(Worker::kSleeping, std::memory_order_seq_cst);
    rt->nsleeping.fetch_add(1, std::memory_order_seq_cst);
    heavy_fence();  // see light_fence(): producers' queue pushes are visible now
    // Again, now that we are announced: a timer armed on another worker
    // before it could see us sleeping is visible now (arm_timer pairs with
    // this), and we must wake up for it in case that worker gets stuck.
    uint64_t again = sleep_deadline(w);
    if (again < deadline) {
        deadline = again;
        w->sleep_until.store(deadline, std::memory_order_seq_cst);
    }
    // The I/O cover: readiness registered with a worker that starts a fiber
    // which never yields after this one fell asleep would wait for that
    // fiber (a worker asleep with a backstop covers it, one asleep without
    // did not): once the runtime has registered a descriptor, sleep at most
    // kIoCoverNs and then look at busy workers' pollers. Still counted
    // as a sleeper without a backstop: new work wakes it as before. (After
    // the announcement, so that a first registration that did not see this
    // sleeper is seen here; first_registration in fd.cpp.)
    uint64_t io_cover = 0;
    if (!backstop && rt->io_registered.load(std::memory_order_seq_cst)) {
        io_cover = now_ns() + kIoCoverNs;
        if (io_cover < deadline) {
            deadline = io_cover;
            w->sleep_until.store(deadline, std::memory_order_seq_cst);
        }
    }
    if (!work_visible(w, reluctant) && !rt->exiting.load(std::memory_order_seq_cst)) {
        // Uncounted while asleep (a runtime of one worker has no thieves and
        // does not count: its deque is solo).
        if (rt->nthreads > 1) rt->nawake.fetch_sub(1, std::memory_order_release);  // after our last steal
        poll_worker(w, deadline);
        if (rt->nthreads > 1) awaken(w);
    }
    rt->nsleeping.fetch_sub(1, std::memory_order_seq_cst);
    if (!backstop) rt->nsleeping_unbounded.fetch_sub(1, std::memory_order_seq_cst);
    if (reluctant) {
        rt->nsleeping_reluctant.fetch_sub(1, std::memory_order_seq_cst);
        w->sleep_reluctant.store(false, std::memory_order_relaxed);
    }
    w->sleep_state.store(Worker::kAwake, std::memory_order_seq_cst);
    w->sleep_until.store(UINT64_MAX, std::memory_order_relaxed);
    fire_all_due(w);
    uint64_t cover = backstop ? backstop : io_cover;  // at most one is set
    if (!cover || now_ns() < cover) return kWokeForWork;
    poll_for_busy_workers(w);
    return backstop ? kWokeAtBackstop : kWokeAtCover;
}

void *worker_main(void *arg) {
    auto *w = static_cast<Worker *>(arg);
    awaken(w);
    set_current_worker(w);
    san_adopt_current(&w->idle_san);
    w->altstack = debug_thread_start();
    idle_loop(w);
    debug_thread_stop(w->altstack);
    set_current_worker(nullptr);
    return nullptr;
}

}  // namespace

void idle_loop(Worker *w) {
    Runtime *rt = w->rt;
    // Woke at the backstop or the I/O cover: no spinning (find_work took
    // what was stuck).
    Woke woke = kWokeForWork;
    for (;;) {
        Task *t = find_work(w);
        if (!t && woke == kWokeForWork) t = spin(w);
        if (t) {
            run_from_idle(w, t);
            woke = kWokeForWork;
            w->backstop_doublings = 0;
            continue;
        }
        // A backstop that found nothing: the next one is twice as long.
        if (woke == kWokeAtBackstop && (kBackstopNs << w->backstop_doublings) < kBackstopMaxNs)
            w->backstop_doublings++;
        if (rt->exiting.load(std::memory_order_acquire)) return;
        woke = sleep(w);
    }
}

int start_worker(Runtime *rt) {
    std::unique_lock<std::mutex> lk(rt->start_lock, std::try_to_lock);
    if (!lk.owns_lock()) return 0;  // someone else is starting one
    unsigned n = rt->nstarted.load(std::memory_order_relaxed);
    if (n >= rt->nthreads || rt->exiting.load(std::memory_order_relaxed)) return 0;
    Worker *w = &rt->workers[n];
    int e = pthread_create(&w->thread, nullptr, worker_main, w);
    if (e) return -e;
    w->has_thread = true;
    rt->nstarted.store(n + 1, std::memory_order_release);
    return 0;
}

}  // namespace kio
