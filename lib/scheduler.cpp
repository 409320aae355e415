// The scheduler: where fibers go when they become runnable, how a worker picks
// the next one, and the switch-then-publish protocol every park goes through.
//
// Picking order on a worker (find_work; pick_next inlines its local part
// into the switch sites):
//   every kFairnessInterval picks: fire due timers, poll the poller if it has
//     not been polled for kPollInterval, then take the inbox, the injection
//     queue or the FIFO ring before anything else (so woken fibers, injected
//     work and I/O cannot be starved by a spawn tree or a yield loop);
//   otherwise: inbox (pinned), woken fibers (FIFO ring), spawn deque (newest
//     first), yielded fibers (FIFO ring), injection queue (a batch), due
//     timers, then steal: half of a victim's rings, or the oldest task of
//     its deque.
//
// Switch-then-publish: a fiber that parks never publishes itself. It picks the
// next context, switches, and the arriving context handles the SwitchMsg: puts
// the old fiber back in a run queue, publishes its Waiter, recycles its stack,
// or hands it to another worker. When a SwitchMsg is handled the old fiber's
// registers are saved, so whoever finds it may resume it at once.
#include <cerrno>

#include "context.h"
#include "fd.h"
#include "runtime.h"

namespace kio {

namespace {

constexpr uint32_t kFairnessInterval = 64;  // a power of two: the check on every pick is a mask
constexpr uint64_t kPollInterval = 100 * 1000;        // ns between polls of a busy worker
constexpr size_t kInjectBatch = 32;
// A thief leaves a victim's only queued task alone until the victim has not
// picked anything for this long: that task was most likely just made ready
// by the fiber running there (a spawned child about to be awaited, a woken
// partner in a ping-pong) and runs there soon, without a cross-thread trip.
constexpr uint64_t kSingleStealDelay = 5 * 1000;  // ns
constexpr uint64_t kMigratedStealDelay = 50 * 1000 * 1000;  // ns: KIO_DEBUG_MIGRATE arrivals
// Moving a task to another worker costs a few cache-line transfers (its
// Task, its queue slot, later its result), from ~100 ns to well over 1 us
// on virtual machines whose vCPUs share no cache. A thief whose stolen fresh
// tasks ran to their end in less than kStealWorthNs on average (tiny tasks:
// a flat batch of them, the leaves of a tree, whose results go back to their
// spawner) becomes reluctant: it takes from a spawn deque only once its
// owner has not picked anything for kReluctantDelay (the owner is stuck in a
// long fiber), or once per kReluctantProbe to measure again (the tasks may
// have grown). A task is judged by the time from its steal to its end, so one
// that parks (it starts a sleep or an I/O wait) counts as long: it lives on
// where it went. Woken and yielding fibers are taken as before.
// A reluctant worker that sleeps is not woken for spawns either (they would
// only wake it to leave them where they are): it wakes by itself within
// kReluctantProbe (runtime.h) while the spawner runs.
constexpr uint64_t kStealWorthNs = 2 * 1000;
constexpr uint64_t kReluctantDelay = 20 * 1000;
constexpr uint64_t kStolenBusyCap = 1000 * 1000;  // one long task counts as this much
constexpr int64_t kFreshStealBatch = 32;  // steal_more_fresh

uint32_t next_rand(Worker *w) {
    uint32_t x = w->rng;  // xorshift32
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return w->rng = x;
}

inline void handle(Worker *w, SwitchMsg *m);
void fiber_main(void *msg, void *arg);

}  // namespace

__thread Worker *tls_worker __attribute__((tls_model("initial-exec"))) = nullptr;

#if defined(__clang__)
#define KIO_OPAQUE __attribute__((noinline))
#else
#define KIO_OPAQUE __attribute__((noinline, noipa))
#endif

KIO_OPAQUE Worker *current_worker() { return tls_worker; }
KIO_OPAQUE void set_current_worker(Worker *w) { tls_worker = w; }

// ---------------------------------------------------------------------------
// Making work runnable

namespace {

// Ring full: moves half of it to the injection queue, where any worker can
// take it, then pushes t.
KIO_NOINLINE void push_ring_overflow(Worker *w, Ring &ring, Task *t) {
    Task *head, *tail;
    uint32_t n = ring.take_half(&head, &tail);
    if (n) w->rt->inject.push_list(head, tail, n);
    if (!ring.push(t)) w->rt->inject.push(t);
}

inline void push_ring(Worker *w, Ring &ring, Task *t) {
    if (KIO_UNLIKELY(!ring.push(t))) push_ring_overflow(w, ring, t);
}

void push_ready(Worker *w, Task *t) { push_ring(w, w->ready, t); }

// Sends t to worker `to`'s inbox (a pinned fiber going home, a migration).
KIO_NOINLINE void hand_to(Worker *w, Task *t, Worker *to) {
    to->inbox.push(t);
    if (to != w) wake_worker(to);
}

// KIO_DEBUG_MIGRATE: sends a fiber that becomes runnable to another worker
// than the one it is on, round robin. False with one worker. The target's
// `migrated` queue is stealable like its run queues: if the target is stuck
// in a fiber that never yields, an idle worker takes the fiber (possibly
// back) rather than leave it waiting.
bool migrate_elsewhere(Runtime *rt, Worker *w, Task *t) {
    unsigned n = rt->nstarted.load(std::memory_order_acquire);
    if (n < 2) return false;
    unsigned i = rt->migrate_next.fetch_add(1, std::memory_order_relaxed) % n;
    // Away from the worker t last ran on (which need not be the waker's).
    Worker *from = t->ran_on ? t->ran_on : w;
    Worker *to = &rt->workers[i];
    if (to == from) to = &rt->workers[(i + 1) % n];
    to->migrated.push(t);
    wake_worker(to);
    return true;
}

// Prefers a sleeper that is not reluctant to take fresh tasks (the new work
// may be one).
bool wake_one_sleeper(Runtime *rt) {
    unsigned n = rt->nstarted.load(std::memory_order_acquire);
    for (int pass = 0; pass < 2; pass++) {
        for (unsigned i = 0; i < n; i++) {
            Worker *v = &rt->workers[i];
            uint32_t s = Worker::kSleeping;
            if (pass == 0 && v->sleep_reluctant.load(std::memory_order_relaxed)) continue;
            if (v->sleep_state.load(std::memory_order_relaxed) == s &&
                v->sleep_state.compare_exchange_strong(s, Worker::kNotified, std::memory_order_acq_rel)) {
                v->poller.wake();
                return true;
            }
        }
    }
    return false;
}

// w (the caller's worker) just queued a task on itself: true if no other
// worker needs waking for it, because
// - w is the runtime's only worker;
// - the task is w's only queued one, and either w's idle context queued it
//   (it runs it next), or a fiber did (a condition signal in a ping-pong, a
//   child that finished and wakes its parent, a child spawned to be awaited):
//   that fiber most likely parks or ends soon and w runs the task next. Waking
//   another worker would cost both a cross-thread round trip, so it is
//   skipped when every sleeper wakes by itself within kBackstopNs (sleep() in
//   worker.cpp); with a sleeper that does not, this pairs with its
//   announcement like notify() does. (A worker not started yet counts as a
//   sleeper without a backstop.)
inline bool no_wakeup_needed(Worker *w) {
    Runtime *rt = w->rt;
    if (rt->nthreads == 1) return true;
    if (w->ready.size() + uint32_t(w->spawned.size()) + w->yielded.size() > 1) return false;
    if (!w->current) return true;
    if (rt->nstarted.load(std::memory_order_relaxed) < rt->nthreads) return false;
    light_fence();
    return rt->nsleeping_unbounded.load(std::memory_order_relaxed) == 0;
}

// A fresh task was queued on the caller's worker, which runs: true if no
// worker needs waking for it, because every idle one sleeps reluctant to take
// fresh tasks (and wakes within kReluctantProbe by itself), and all have
// started. (No spinner either: one would be left to find the task.)
inline bool only_reluctant_sleepers(Runtime *rt) {
    light_fence();  // the push before reading the idle counts; pairs with sleep()
    if (rt->nstarted.load(std::memory_order_relaxed) < rt->nthreads) return false;
    int sleeping = rt->nsleeping.load(std::memory_order_relaxed);
    return sleeping > 0 && rt->nspinning.load(std::memory_order_relaxed) == 0 &&
           rt->nsleeping_reluctant.load(std::memory_order_relaxed) == sleeping;
}

}  // namespace

void notify(Runtime *rt) {
    if (rt->nthreads == 1) {
        // The only worker: nothing to do if it is the caller, else ring it.
        if (current_worker_fast() != &rt->workers[0]) wake_worker(&rt->workers[0]);
        return;
    }
    light_fence();  // order the caller's queue push before reading the idle counts
    if (rt->nspinning.load(std::memory_order_relaxed) > 0) return;  // a spinner will find it
    if (rt->nsleeping.load(std::memory_order_relaxed) > 0 && wake_one_sleeper(rt)) return;
    if (rt->nstarted.load(std::memory_order_relaxed) < rt->nthreads) start_worker(rt);
}

void wake_worker(Worker *w) {
    light_fence();
    uint32_t s = Worker::kSleeping;
    if (w->sleep_state.load(std::memory_order_relaxed) == s &&
        w->sleep_state.compare_exchange_strong(s, Worker::kNotified, std::memory_order_acq_rel))
        w->poller.wake();
}

namespace {

// w: the caller's worker (nullptr on a plain thread).
inline void make_ready(Runtime *rt, Worker *w, Task *t) {
    if (t->home) {  // pinned: only its own worker may run it
        // On its own worker, the ready ring like any other fiber (FIFO with
        // them; a thief that takes it sends it back, see runnable). No other
        // worker is told: one that took it would only send it back.
        if (t->home == w) push_ready(w, t);
        else hand_to(w, t, t->home);
        return;
    }
    if (KIO_UNLIKELY(rt->debug_migrate) && migrate_elsewhere(rt, w, t)) return;
    if (w && w->rt == rt) {
        push_ready(w, t);
        if (no_wakeup_needed(w)) return;
    } else {
        rt->inject.push(t);
    }
    notify(rt);
}

// A wakeup from outside rt (a plain thread's signal or unlock, another
// runtime's fiber) still touches rt after queuing t (notify reads its
// workers, rings a doorbell), and t may run, finish and let destroy free rt
// meanwhile: it counts as an outside call, which destroy waits out. Counted
// before t is queued, so while t is still parked (rt cannot be gone yet).
KIO_NOINLINE void ready_from_outside(Runtime *rt, Worker *w, Task *t) {
    rt->outside_calls.fetch_add(1, std::memory_order_seq_cst);
    make_ready(rt, w, t);
    rt->outside_calls.fetch_sub(1, std::memory_order_release);
}

}  // namespace

void ready(Task *t) {
    Runtime *rt = t->rt;
    Worker *w = current_worker_fast();
    if (KIO_UNLIKELY(!w || w->rt != rt)) ready_from_outside(rt, w, t);
    else make_ready(rt, w, t);
}

void submit_new(Runtime *rt, Worker *w, Task *t) {
    if (!(w && w->spawned.push(t))) {
        rt->inject.push(t);
    } else if (no_wakeup_needed(w) || only_reluctant_sleepers(rt)) {
        return;
    }
    notify(rt);
}

// ---------------------------------------------------------------------------
// Picking the next fiber

namespace {

// Gives a task that never ran a stack and a first frame. False when out of
// memory for a default-size stack (the task then waits in the injection
// queue for a later try; a stack of another size was allocated at spawn, so
// that kio_spawn_ex could report -ENOMEM).
// A task that never ran takes stack s and counts as started.
void adopt_stack(Worker *w, Task *t, Stack s) {
    san_set_stack(&t->san, s.base, s.size);
    san_create(&t->san);
    t->stack = s;
    if (t->pinned) t->home = w;
    t->state.store(Task::kRunning, std::memory_order_release);
}

bool prepare_fiber(Worker *w, Task *t) {
    Runtime *rt = w->rt;
    Stack s = t->stack;  // tasks with their own stack size got it at spawn
    if (!s.base) {
        if (!w->nstacks) w->nstacks = rt->stacks.alloc_batch(w->stacks, Worker::kStackCache / 2);
        if (!w->nstacks) return false;
        s = w->stacks[--w->nstacks];
        // The next fresh fiber's first frame goes at the top of the next
        // cached stack, likely cold (with many live fibers, also out of the
        // TLB): start fetching it now.
        if (w->nstacks) __builtin_prefetch(static_cast<char *>(w->stacks[w->nstacks - 1].top()) - 64, 1);
    }
    t->sp = make_context(s.top(), fiber_main, t);
    adopt_stack(w, t, s);
    return true;
}

void release_stack(Worker *w, Stack s) {
    Runtime *rt = w->rt;
    if (s.size == rt->default_stack()) {
        if (w->nstacks == Worker::kStackCache) {
            constexpr size_t half = Worker::kStackCache / 2;
            rt->stacks.free_batch(w->stacks + half, half);
            w->nstacks = half;
        }
        w->stacks[w->nstacks++] = s;
    } else {
        rt->stacks.free(s);
    }
}

KIO_NOINLINE Task *prepare_or_defer(Worker *w, Task *t) {
    if (prepare_fiber(w, t)) return t;
    w->rt->inject.push(t);
    return nullptr;
}

// A pinned fiber taken from anywhere but its own worker's queues (stolen with
// a batch of a ring, moved to the injection queue by a ring's overflow) goes
// home instead of running here: nullptr, and the pick looks further.
inline Task *runnable(Worker *w, Task *t) {
    if (!t) return t;
    if (KIO_UNLIKELY(t->home != nullptr) && t->home != w) {
        hand_to(w, t, t->home);
        return nullptr;
    }
    if (t->sp) return t;
    return prepare_or_defer(w, t);
}

// Takes a batch from the injection queue: runs the first, queues the rest.
Task *take_injected(Worker *w) {
    Runtime *rt = w->rt;
    if (rt->inject.empty()) return nullptr;
    size_t n;
    Task *first = rt->inject.pop_list(kInjectBatch, &n);
    if (!first) return nullptr;
    for (Task *t = first->qnext; t;) {
        Task *next = t->qnext;
        t->qnext = nullptr;
        push_ready(w, t);
        t = next;
    }
    first->qnext = nullptr;
    return first;
}

void dispatch_events(Worker *w, int n) { fd_dispatch(w, w->events, n); }

void poll_now(Worker *w, uint64_t now) {
    w->last_poll = now;
    int n = w->poller.wait(w->events, int(sizeof w->events / sizeof w->events[0]), 0);
    if (n > 0) dispatch_events(w, n);
}

// May w take v's only queued task? Only once v has been busy with the same
// fiber (no new pick) for kSingleStealDelay.
bool may_steal_single(Worker *w, Worker *v, uint64_t delay) { return w->stuck_for(v, now_ns()) >= delay; }

// A task a thief took (at stolen_at) before its first run ended on w: how
// long it ran.
KIO_NOINLINE void learn_steal_granularity(Worker *w, uint64_t stolen_at) {
    uint64_t ran = now_ns() - stolen_at;
    if (ran > kStolenBusyCap) ran = kStolenBusyCap;
    w->stolen_busy_ns = (3 * w->stolen_busy_ns + ran) / 4;
}

// May w take a fresh task from v's spawn deque (v has more than one task
// queued)? Not while w is reluctant, unless v is stuck or a probe is due.
bool may_steal_fresh(Worker *w, Worker *v) {
    if (!reluctant_thief(w)) return true;
    uint64_t now = now_ns();
    if (w->stuck_for(v, now) < kReluctantDelay && now - w->reluctant_steal_at < kReluctantProbe) return false;
    w->reluctant_steal_at = now;
    w->restart_watch(v, now);  // the next one waits a whole delay again
    return true;
}

// After taking the oldest task of v's spawn deque: while that deque is long
// (a flat burst of spawns), more of its oldest tasks, up to half of what is
// left and kFreshStealBatch, into w's own deque. One scan of the victims, one
// look at the clock, per batch instead of per task: 100k sleepers spawned in
// a loop start ~30% faster on the thief's side (~40 vs ~44 ms in all).
void steal_more_fresh(Worker *w, Worker *v) {
    int64_t k = v->spawned.size() / 2;
    if (k > kFreshStealBatch) k = kFreshStealBatch;
    for (; k > 0; k--) {
        Task *t = v->spawned.steal();
        if (!t) return;
        if (!w->spawned.push(t)) {
            w->rt->inject.push(t);
            return;
        }
    }
}

Task *steal(Worker *w) {
    Runtime *rt = w->rt;
    unsigned n = rt->nstarted.load(std::memory_order_acquire);
    if (n <= 1) return nullptr;
    unsigned start = next_rand(w) % n;
    for (unsigned i = 0; i < n; i++) {
        Worker *v = &rt->workers[(start + i) % n];
        if (v == w) continue;
        Task *t = nullptr;
        bool fresh = false;
        uint32_t queued = v->ready.size() + uint32_t(v->spawned.size()) + v->yielded.size();
        if (queued > 1 || (queued == 1 && may_steal_single(w, v, kSingleStealDelay))) {
            t = v->ready.steal_into(w->ready);
            if (!t && v->spawned.size() > 0 && (queued == 1 || may_steal_fresh(w, v)))
                fresh = (t = v->spawned.steal()) != nullptr;
            if (!t) t = v->yielded.steal_into(w->yielded);
            // The rings' head slots: only from a worker stuck in one fiber
            // (each try costs a heavy fence, see runqueue.h).
            if (!t && (queued == 1 || may_steal_single(w, v, kSingleStealDelay))) {
                t = v->ready.steal_slot();
                if (!t) t = v->yielded.steal_slot();
            }
        }
        // KIO_DEBUG_MIGRATE sent these to v on purpose: taken only if v is
        // stuck in a fiber that does not yield.
        if (!t && KIO_UNLIKELY(!v->migrated.empty()) && may_steal_single(w, v, kMigratedStealDelay))
            t = v->migrated.pop();
        if (t) {
            Worker::bump(w->n_steals);
            if (fresh) {
                t->stolen_at = now_ns();
                steal_more_fresh(w, v);
            }
            return t;
        }
    }
    // Timers of workers that may be stuck in a fiber that does not yield
    // (skipped while their owner is busy firing them).
    uint64_t now = 0;
    bool fired = false;
    for (unsigned i = 0; i < n; i++) {
        Worker *v = &rt->workers[i];
        if (v == w || v->timers.next_deadline() == UINT64_MAX) continue;
        if (!now) now = now_ns();
        if (v->timers.next_deadline() <= now && !v->timers.busy()) fired |= v->timers.fire_expired(now) > 0;
    }
    return fired ? w->ready.pop() : nullptr;
}

// Every kFairnessInterval picks: timers, poller, then the queues that the
// ordinary order serves last. The spawn deque and the yield ring take turns
// going first: fibers that keep waking each other keep the woken ring busy
// for ever, and neither a fresh task nor a yielder may starve behind them
// (nor behind each other: a task that keeps spawning, one that keeps
// yielding). The inbox, which the ordinary order serves first, comes last:
// pinned fibers on two workers that keep waking each other keep both inboxes
// non-empty for ever (they go nowhere else), and would hold off everything
// else, the woken ring included.
Task *fairness_pick(Worker *w, uint32_t tick) {
    uint64_t now = now_ns();
    w->timers.fire_expired(now);
    if (now - w->last_poll >= kPollInterval) poll_now(w, now);
    if (Task *t = w->migrated.pop()) return t;
    if (Task *t = take_injected(w)) return t;
    auto spawned = [w] { return w->spawned.size() > 0 ? w->spawned.pop() : nullptr; };
    bool spawned_first = (tick / kFairnessInterval) % 2;
    if (Task *t = spawned_first ? spawned() : w->yielded.pop()) return t;
    if (Task *t = spawned_first ? w->yielded.pop() : spawned()) return t;
    if (Task *t = w->ready.pop()) return t;
    return w->inbox.pop();
}

}  // namespace

namespace {

// find_work's second half: work from elsewhere (injection queue, due timers,
// other workers). Out of line, so the common pick below stays small enough to
// inline into every switch site.
KIO_NOINLINE Task *find_remote_work(Worker *w) {
    Task *t;
    if ((t = runnable(w, take_injected(w)))) return t;
    if (w->timers.next_deadline() != UINT64_MAX && w->timers.fire_expired(now_ns()) &&
        (t = runnable(w, w->ready.pop())))
        return t;
    return runnable(w, steal(w));
}

__attribute__((always_inline)) inline Task *pick_next(Worker *w) {
    Task *t;
    uint32_t tick = w->tick.load(std::memory_order_relaxed) + 1;
    w->tick.store(tick, std::memory_order_relaxed);
    if (KIO_UNLIKELY(tick % kFairnessInterval == 0))
        if ((t = runnable(w, fairness_pick(w, tick)))) return t;
    // Migrated fibers before the inbox: a pinned fiber that keeps yielding
    // would otherwise hold them off (each migrated one leaves at its next
    // switch, so it cannot hold off the inbox in turn).
    if (KIO_UNLIKELY(!w->migrated.empty()) && (t = runnable(w, w->migrated.pop()))) return t;
    if (!w->inbox.empty() && (t = runnable(w, w->inbox.pop()))) return t;
    // Woken fibers first: each holds a stack, and running them promptly keeps
    // spawn trees from piling up parked parents. (The ring may also hold
    // tasks that never ran: injection batches, overflow.)
    if ((t = runnable(w, w->ready.pop()))) {
        // The next woken fiber's stack is likely cold (with many parked
        // fibers, out of the TLB too): start loading its saved context and
        // the frames it returns through, 512 bytes. (100k sleepers: ~15%
        // less wall time than the saved context's line alone.)
        if (Task *n = w->ready.peek()) {
            const char *sp = static_cast<const char *>(static_cast<void *>(n->sp));
            for (int i = 0; i < 8; i++) __builtin_prefetch(sp + 64 * i);
        }
        return t;
    }
    if (w->spawned.size() > 0 && (t = runnable(w, w->spawned.pop()))) return t;
    if ((t = runnable(w, w->yielded.pop()))) return t;
    return find_remote_work(w);
}

}  // namespace

Task *find_work(Worker *w) { return pick_next(w); }

bool reluctant_thief(const Worker *w) { return w->stolen_busy_ns < kStealWorthNs; }

// ---------------------------------------------------------------------------
// Switching

namespace {

// The stall watchdog's episode of w's running context ends (a switch, or a
// kio call that could have switched).
void stall_episode_ends(Worker *w) {
    w->switched_at.store(now_ns(), std::memory_order_relaxed);
    w->stall_epoch.store(w->stall_epoch.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

// Runs first on the arriving side of every switch (and at a fresh fiber's
// start): the worker's bookkeeping for its new running context, then the
// message. The bookkeeping is here, not on the leaving side: a call there
// (the stall watchdog's, rare as it is) made switch_to save and restore five
// registers around kio_ctx_switch on every switch, and the switch counter's
// update just before kio_ctx_switch cost as much again (yield between two
// fibers: 25 ns with them there, 19.5 here; 17 with the fast path below).
KIO_NOINLINE void after_switch_general(SwitchMsg *in);

void after_switch(SwitchMsg *in) {
    // The fiber that left is suspended and its context saved: its stack may
    // be walked until someone resumes it, which needs the message handled.
    if (Task *left = in->prev; left && in->kind != SwitchMsg::kRecycle)
        left->walkable.store(true, std::memory_order_relaxed);
#if !KIO_ASAN && !KIO_TSAN
    // The common yield (no watchdog, not pinned, room in the yield ring)
    // without a call but the last: handle()'s kReschedule, in short. No
    // register then lives across a call, so none is saved.
    Worker *w = in->worker;
    Task *t = in->prev;
    if (in->kind == SwitchMsg::kReschedule && w->plain && !t->home && w->yielded.push(t)) {
        Worker::bump(w->n_switches);
        t->on_cpu.store(false, std::memory_order_relaxed);
        if (w->rt->nthreads > 1) notify(w->rt);
        return;
    }
    // A fresh fiber started from the idle context or on a dying fiber's
    // stack (restart_with): nothing to handle.
    if (in->kind == SwitchMsg::kNothing && !t && w->plain) {
        Worker::bump(w->n_switches);
        return;
    }
#endif
    after_switch_general(in);
}

void after_switch_general(SwitchMsg *in) {
    Worker *w = in->worker;
    Task *cur = w->current;
    Worker::bump(w->n_switches);
    if (KIO_UNLIKELY(w->rt->stall_ns)) stall_episode_ends(w);
    if (KIO_UNLIKELY(w->rt->debug_migrate) && cur) cur->ran_on = w;
    FiberSan *self = cur ? &cur->san : &w->idle_san;
    // (A fiber that ended may be freed: its sanitizer state was copied.)
    FiberSan *prev = in->kind == SwitchMsg::kRecycle ? &w->dying.san : in->prev ? &in->prev->san : &w->idle_san;
    san_after_switch(self, prev);
    // The fiber that left counts as running until its switch message is
    // handled: a mutex holder parking on a condition releases the mutex
    // there, and lockers should spin through that, not park behind it.
    // (A hint only: the fiber may already run elsewhere when this lands.)
    Task *left = in->kind == SwitchMsg::kRecycle ? nullptr : in->prev;
    handle(w, in);
    if (left) left->on_cpu.store(false, std::memory_order_relaxed);
}

// next (nullptr: the idle context) becomes w's running context; after_switch
// does the rest of the bookkeeping, on the arriving side. A fiber counts as
// running (on_cpu, the mutex's hint for spinning) from here on, before the
// switch: a locker should spin on it, not park.
inline void set_current(Worker *w, Task *next) {
    w->current = next;
    if (next) {
        next->on_cpu.store(true, std::memory_order_relaxed);
        next->walkable.store(false, std::memory_order_relaxed);
        // The walk guard's Dekker pair: walkable, then walked here; walked,
        // heavy_fence(), then walkable in walk_suspended. A compiler barrier
        // only, also where heavy_fence() has no membarrier to pair with: a
        // full fence on every switch would cost more than the guard is
        // worth, and the race it leaves is a store buffer's drain long.
        std::atomic_signal_fence(std::memory_order_seq_cst);
        while (KIO_UNLIKELY(next->walked.load(std::memory_order_acquire))) cpu_relax();
    }
}

// What every switch of w to next (nullptr: the idle context) does before
// the assembly: the message names the context that leaves, and w names next
// as running. Returns the stack pointer to load.
__attribute__((always_inline)) inline void *begin_switch(Worker *w, Task *next) {
    SwitchMsg *msg = &w->msg;
    msg->prev = w->current;
    msg->worker = w;
    void *load = next ? static_cast<void *>(next->sp) : w->idle_sp;
    set_current(w, next);
    return load;
}

// Leaves the running context of w (w->current, or the idle context when it is
// nullptr) for next (nullptr: the idle context), with the message the caller
// put in w->msg. Returns when something resumes the leaving context, possibly
// on another worker.
//
// The message lives in the Worker, not on the leaving fiber's stack: the
// arriving context runs on the same thread and handles it at once, and a
// dying fiber's stack (and, under ASan, its fake frames) is gone by then.
// Always inlined: the compiler stopped inlining it into the yield path when
// set_current gained the walk guard's check, and the call cost a yield
// 16 -> 22 ns.
__attribute__((always_inline)) inline void switch_to(Worker *w, Task *next) {
    Task *prev = w->current;
    void **save = prev ? prev->sp.raw() : &w->idle_sp;
    void *load = begin_switch(w, next);
    san_before_switch(prev ? &prev->san : &w->idle_san, next ? &next->san : &w->idle_san, false);
    auto *in = static_cast<SwitchMsg *>(kio_ctx_switch(save, load, &w->msg));
    after_switch(in);
}

// (A deadline already past fires at the worker's next look at its timers,
// which comes before it sleeps: no clock read here.)
void arm_timer(Worker *w, Waiter *wt, uint64_t deadline) {
    wt->timer.deadline = deadline;
    if (!w->timers.insert(&wt->timer)) {
        claim(wt, -ENOMEM);
        return;
    }
    // If this is the worker's earliest timer, make sure a sleeping worker will
    // wake up for it should this one get stuck in a fiber that never yields.
    Runtime *rt = w->rt;
    if (w->timers.next_deadline() != deadline) return;
    light_fence();  // the insert before reading nsleeping; pairs with sleep()
    if (rt->nsleeping.load(std::memory_order_acquire) == 0) return;
    unsigned n = rt->nstarted.load(std::memory_order_acquire);
    for (unsigned i = 0; i < n; i++) {
        Worker *v = &rt->workers[i];
        if (v != w && v->sleep_state.load(std::memory_order_acquire) == Worker::kSleeping &&
            v->sleep_until.load(std::memory_order_acquire) > after_backup_grace(deadline)) {
            wake_worker(v);
            return;
        }
    }
}

// Lock-free against the canceler: see request_cancel in task.cpp. A claim
// here lands while wt is still publishing (publish_parked wakes the fiber).
void arm_cancel(Task *t, Waiter *wt) {
    wt->cancel_armed = true;
    t->cur_wait.store(wt, std::memory_order_release);
    light_fence();  // the store before the read; pairs with request_cancel's heavy_fence
    if (t->cancel_pending()) claim(wt, -ECANCELED);
}

// A publication where only a canceler can claim wt (the publish function
// said so, and no deadline): wt is made claimable first (kWaiting, with no
// compare-and-swap to end the publication), then cur_wait names it. If a
// cancellation is pending, a canceler may claim wt any moment from then on,
// and the fiber run and leave: so the claim here is made under t->lock, as
// the canceler's, and t->publishing holds the woken fiber (disarm in wait.cpp)
// until this publication is done with wt.
void arm_cancel_last(Task *t, Waiter *wt) {
    t->publishing.store(true, std::memory_order_relaxed);
    wt->cancel_armed = true;
    t->cur_wait.store(wt, std::memory_order_release);
    light_fence();  // the store before the read; pairs with request_cancel's heavy_fence
    bool wake = false;
    if (t->cancel_pending()) {
        LockGuard<SpinLock> g(t->lock);
        wake = claim(wt, -ECANCELED) == Claim::kWake;
    }
    t->publishing.store(false, std::memory_order_release);  // wt is not ours after this
    if (wake) ready(t);
}

// Runs on the context that follows a parking fiber: makes its Waiter
// reachable, then ends the publication. A claim made meanwhile is honored here.
KIO_NOINLINE void publish_parked(Worker *w, SwitchMsg *m) {
    Task *t = m->prev;
    Waiter *wt = m->waiter;
    uint64_t deadline = m->deadline;
    bool cancelable = m->cancelable;
    m->publish(wt, m->arg);
    if (wt->only_canceler_claims && !deadline) {
        wt->state.store(Waiter::kWaiting, std::memory_order_relaxed);
        if (cancelable) arm_cancel_last(t, wt);
        return;
    }
    if (deadline) arm_timer(w, wt, deadline);
    if (cancelable) arm_cancel(t, wt);
    uint64_t s = Waiter::kPublishing;
    if (!wt->state.compare_exchange_strong(s, Waiter::kWaiting, std::memory_order_acq_rel,
                                           std::memory_order_acquire))
        ready(t);  // claimed during publication: nobody else will wake it
}

// The fiber of t ended (w->dying says how): its stack goes back to the
// cache, and its reference, unless finish_task dropped it, goes too. t may
// be freed, even reused, when finish_task dropped a reference that was not
// the last: it is not touched then.
void recycle(Worker *w, Task *t) {
    Worker::Dying &d = w->dying;
    if (KIO_UNLIKELY(d.stolen_at)) learn_steal_granularity(w, d.stolen_at);
    san_destroy(&d.san);
    if (!d.stack_handed_on) release_stack(w, d.stack);
    switch (d.ref) {
    case FinishRef::kKept:
        t->sp = nullptr;
        t->stack = Stack{};
        release_task(t);  // the fiber's reference; t may be gone now
        break;
    case FinishRef::kDroppedLast:
        free_task(t);
        break;
    case FinishRef::kDropped:
        break;
    }
    Worker::bump(w->nretired);
}

// A yielder that must not go to this worker's yield ring as usual: pinned
// (it goes there all the same, but no other worker is told: one that took it
// would only send it back), or sent elsewhere by KIO_DEBUG_MIGRATE.
KIO_NOINLINE bool reschedule_elsewhere(Worker *w, Task *t) {
    if (t->home) {
        push_ring(w, w->yielded, t);
        return true;
    }
    return KIO_UNLIKELY(w->rt->debug_migrate) && migrate_elsewhere(w->rt, w, t);
}

// The common messages (a yield, nothing) inline; the others are calls, so
// that after_switch stays small on the yield path.
inline void handle(Worker *w, SwitchMsg *m) {
    Task *t = m->prev;
    switch (m->kind) {
    case SwitchMsg::kReschedule:
        if (KIO_UNLIKELY(t->home || w->rt->debug_migrate) && reschedule_elsewhere(w, t)) return;
        push_ring(w, w->yielded, t);
        // The next fiber may never yield: another worker must be able to
        // take the one that did. (With one worker, that is this one.)
        if (w->rt->nthreads > 1) notify(w->rt);
        return;
    case SwitchMsg::kNothing:
        return;
    case SwitchMsg::kPublish:
        publish_parked(w, m);
        return;
    case SwitchMsg::kRecycle:
        recycle(w, t);
        return;
    case SwitchMsg::kMigrate:
        hand_to(w, t, m->target);
        return;
    }
}

// Entered by a jump (kio_ctx_entry), and leaves by tail calls down to the
// fiber's last switch: see exit_fiber.
void fiber_main(void *msg, void *arg) {
    auto *t = static_cast<Task *>(arg);
    after_switch(static_cast<SwitchMsg *>(msg));
    __atomic_store_n(&t->result, t->fn(t->arg), __ATOMIC_RELAXED);  // see Task::result
    // What recycling needs of t, read before finish_task may let it go.
    Worker *w = current_worker_fast();  // fn may have moved this fiber: read after it
    Worker::Dying &d = w->dying;
    d.stack = t->stack;
    d.stolen_at = t->stolen_at;
    d.san = t->san;
    d.stack_handed_on = false;
    d.ref = finish_task(t);
    exit_fiber();  // a tail call (exit_fiber is not declared noreturn)
}

}  // namespace

void park_current(Waiter *wt, PublishFn publish, void *arg, uint64_t deadline, bool cancelable,
                  int kind) {
    Worker *w = current_worker_at_entry();
    Worker::bump(w->n_parks[kind]);
    Task *next = pick_next(w);
    SwitchMsg &m = w->msg;
    m.kind = SwitchMsg::kPublish;
    m.waiter = wt;
    m.publish = publish;
    m.arg = arg;
    m.deadline = deadline;
    m.cancelable = cancelable;
    switch_to(w, next);
}

namespace {

// In pick_next's order, nothing comes before the spawn deque at this pick: no
// fairness pick due, nothing migrated, in the inbox or woken.
inline bool spawn_deque_is_next(Worker *w, uint32_t tick) {
    return !KIO_UNLIKELY(tick % kFairnessInterval == 0) && w->inbox.empty() && w->migrated.empty() &&
           !w->ready.size();
}

// The common yield: nothing is queued ahead of the yielded ring (not even a
// spawned task), so the next fiber is the oldest yielder. Takes it without
// find_work's whole walk; nullptr when the full pick must decide.
inline Task *next_yielder(Worker *w) {
    uint32_t tick = w->tick.load(std::memory_order_relaxed) + 1;
    if (!spawn_deque_is_next(w, tick) || w->spawned.size() > 0) return nullptr;
    Task *t = runnable(w, w->yielded.pop());
    if (t) w->tick.store(tick, std::memory_order_relaxed);
    return t;
}

}  // namespace

namespace {

// yield_current when the next fiber is not simply the oldest yielder.
KIO_NOINLINE void yield_after_full_pick(Worker *w) {
    Task *next = pick_next(w);
    if (!next) {  // nothing else is runnable here
        if (KIO_UNLIKELY(w->rt->stall_ns)) stall_episode_ends(w);
        // KIO_DEBUG_MIGRATE: leave through the idle context all the same,
        // which sends the fiber to another worker.
        if (!KIO_UNLIKELY(w->rt->debug_migrate)) return;
    }
    w->msg.kind = SwitchMsg::kReschedule;
    switch_to(w, next);
}

}  // namespace

// w: the caller's worker, read at its entry (before anything could switch).
// The full pick is out of line, so that the common yield (to the oldest
// yielder) keeps few registers live across its switch.
int yield_current(Worker *w) {
    Task *next = KIO_LIKELY(w->plain) ? next_yielder(w) : nullptr;
    if (KIO_UNLIKELY(!next)) {
        yield_after_full_pick(w);
        return 0;
    }
    w->msg.kind = SwitchMsg::kReschedule;
    switch_to(w, next);
    return 0;
}

void migrate_current(Worker *to) {
    Worker *w = current_worker();
    if (w == to) return;
    Task *next = find_work(w);
    w->msg.kind = SwitchMsg::kMigrate;
    w->msg.target = to;
    switch_to(w, next);
}

namespace {

// A dying fiber whose next task is a fresh one from this worker's spawn deque
// hands it its own stack, still hot in the cache, and starts it there: no
// switch, no stack from the pool. The sanitizers track each fiber's stack
// through their switch annotations, so their builds take the ordinary path.
inline Task *next_fresh(Worker *w) {
#if KIO_ASAN || KIO_TSAN
    (void)w;
    return nullptr;
#else
    uint32_t tick = w->tick.load(std::memory_order_relaxed) + 1;
    if (!spawn_deque_is_next(w, tick) || w->spawned.size() <= 0) return nullptr;
    Task *t = w->spawned.pop();
    if (t) w->tick.store(tick, std::memory_order_relaxed);
    return t;
#endif
}

// Never returns (a tail call of kio_ctx_restart; see exit_fiber).
void restart_with(Worker *w, Task *self, Task *next) {
    Stack s = w->dying.stack;
    w->dying.stack_handed_on = true;
    // next->sp stays nullptr until next parks: to kio_backtrace and kio_dump
    // it is running (a saved block exists only for a suspended context).
    adopt_stack(w, next, s);
    // As switch_to does: the worker names its new fiber before the old one
    // is recycled, so w->current never names a freed task.
    set_current(w, next);
    recycle(w, self);  // no stack to release now; self may be gone after this
    SwitchMsg *msg = &w->msg;
    msg->kind = SwitchMsg::kNothing;
    msg->prev = nullptr;
    msg->worker = w;
    kio_ctx_restart(s.top(), fiber_main, next, msg);
}

}  // namespace

// Called by a fiber that is finishing (finish_task), for the one task its
// end woke: if t would be this worker's next pick anyway (a task made ready
// now would be, exactly when nothing comes before the spawn deque), the
// fiber's exit switches straight to it: the same order as through the ready
// ring, without its locked pop and without a look for idle workers to wake.
// False: ready(t) as usual (also when the fairness pick is due, or t is
// pinned to another worker or belongs to another runtime).
bool hand_on_exit(Task *t) {
    Worker *w = current_worker_fast();  // a fiber's: never null
    if (w->rt != t->rt || (t->home && t->home != w) || KIO_UNLIKELY(w->rt->debug_migrate)) return false;
    uint32_t tick = w->tick.load(std::memory_order_relaxed) + 1;
    if (!spawn_deque_is_next(w, tick)) return false;
    w->tick.store(tick, std::memory_order_relaxed);  // this is t's pick
    w->exit_next = t;
    return true;
}

namespace {

// The last switch of the running fiber, which ended: switch_to without saving
// its context, and without a call (a tail call of kio_ctx_resume).
__attribute__((always_inline)) inline void exit_switch(Worker *w, Task *next) {
    w->msg.kind = SwitchMsg::kRecycle;
    void *load = begin_switch(w, next);
    san_before_switch(&w->dying.san, next ? &next->san : &w->idle_san, true);
    kio_ctx_resume(load, &w->msg);
}

}  // namespace

// Never returns. Reached by a tail call from fiber_main, and leaves by tail
// calls (restart_with, kio_ctx_resume), not declared noreturn so that the
// compiler makes them jumps: a fiber's frames are entered by jumps from
// kio_ctx_entry, so the fiber leaves nothing on the return-stack predictor,
// and the context it resumes (often the awaiter that started it) finds its
// own return addresses there (asm/: kio_ctx_resume). spawn+await: ~78 -> ~74 ns.
void exit_fiber() {
    Worker *w = current_worker_fast();
    Task *self = w->current;
    if (Task *next = w->exit_next) {
        w->exit_next = nullptr;
        exit_switch(w, next);
        return;
    }
    Task *next = next_fresh(w);
    if (next) {
        if (!next->stack.base && w->dying.stack.size == w->rt->default_stack()) {
            restart_with(w, self, next);
            return;
        }
        next = runnable(w, next);  // a stack of its own size: the ordinary start
    }
    if (!next) next = pick_next(w);
    exit_switch(w, next);
}

void run_from_idle(Worker *w, Task *t) {
    w->msg.kind = SwitchMsg::kNothing;
    switch_to(w, t);
}

int poll_worker(Worker *w, uint64_t deadline) {
    int n = w->poller.wait(w->events, int(sizeof w->events / sizeof w->events[0]), deadline);
    w->last_poll = now_ns();
    if (n > 0) dispatch_events(w, n);
    return n;
}

// Worker 0's idle context starts here (other workers run idle_loop on their
// thread's own stack).
void idle_entry(void *msg, void *arg) {
    after_switch(static_cast<SwitchMsg *>(msg));
    idle_loop(static_cast<Worker *>(arg));
    // idle_loop returns only once the runtime is exiting, and worker 0's idle
    // context is suspended for good before that (the main fiber runs destroy
    // on worker 0's thread).
    __builtin_trap();
}

}  // namespace kio
