// Tasks through the C API: spawn, await, cancel, detach, select, yield, and
// the cancellation controls.
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "outside_call.h"
#include "runtime.h"

namespace kio {

// ---------------------------------------------------------------------------
// Task slots: per-worker caches in front of the runtime's TaskPool.

namespace {

// w: the caller's worker, of rt, or nullptr.
Task *alloc_task(Runtime *rt, Worker *w) {
    if (w) {
        if (!w->task_cache) w->ntasks = rt->tasks.take(&w->task_cache, 64);
        Task *t = w->task_cache;
        if (!t) return nullptr;
        w->task_cache = t->qnext;
        w->ntasks--;
        t->qnext = nullptr;
        return t;
    }
    Task *t = nullptr;
    rt->tasks.take(&t, 1);
    return t;
}

// Fills in a new task from slot t, stores its handle in *out and queues it.
// w: the spawner's worker if it belongs to rt, else nullptr. stack: the
// task's own stack if not of the default size (else empty, given at its
// first run). Inlined: kio_spawn's constant arguments drop its branches.
__attribute__((always_inline)) inline void start_task(Runtime *rt, Worker *w, Task *t, kio_fn fn, void *arg,
                                                      Stack stack, bool pinned, const char *name, kio_task **out) {
    uint32_t gen = t->gen.load(std::memory_order_relaxed) + 1;
    t->gen.store(gen, std::memory_order_relaxed);
    uint64_t id = w ? w->task_ids.take(rt->next_id) : rt->next_id.fetch_add(1, std::memory_order_relaxed);
    __atomic_store_n(&t->id, id, __ATOMIC_RELAXED);
    __atomic_store_n(&t->rt, rt, __ATOMIC_RELAXED);
    t->mutex_owner = 0;
    t->cond_relock = nullptr;
    t->fn = fn;
    t->arg = arg;
    __atomic_store_n(&t->result, nullptr, __ATOMIC_RELAXED);  // see Task::result
    t->sp = nullptr;
    t->stack = stack;
    t->home = nullptr;
    t->pinned = pinned;
    t->qnext = nullptr;
    t->state.store(Task::kNew, std::memory_order_relaxed);
    // Release: try_ref (kio_cancel_request) that takes a reference on the
    // new task sees its new gen, so a stale handle fails its check.
    t->init_life(2, std::memory_order_release);
    t->cancel_requested.store(false, std::memory_order_relaxed);
    t->shielded.store(false, std::memory_order_relaxed);
    t->deadline = 0;
    t->stolen_at = 0;
    t->cq = nullptr;
    t->waiters = WaitList{};
    t->holder_wait.store(nullptr, std::memory_order_relaxed);
    t->cur_wait.store(nullptr, std::memory_order_relaxed);
    t->name[0] = 0;
    if (name) {
        std::strncpy(t->name, name, sizeof t->name - 1);
        t->name[sizeof t->name - 1] = 0;
    }
    t->san = FiberSan{};
    if (w) Worker::bump(w->nspawned);
    else rt->foreign_spawned.fetch_add(1, std::memory_order_release);
    t->magic.store(Task::kMagicLive, std::memory_order_release);
    // During shutdown children start canceled (destroy's scans also catch
    // any task this check misses).
    if (rt->shutting_down.load(std::memory_order_acquire))
        t->cancel_requested.store(true, std::memory_order_relaxed);
    *out = to_handle(t);
    submit_new(rt, w, t);
}

}  // namespace

void free_task(Task *t) {
    Runtime *rt = t->rt;
    t->magic.store(Task::kMagicFree, std::memory_order_release);
    Worker *w = current_worker_fast();
    if (w && w->rt == rt) {
        t->qnext = w->task_cache;
        w->task_cache = t;
        if (++w->ntasks >= Worker::kTaskCache) {
            // Give the older half back so other threads can use it.
            Task *keep_tail = w->task_cache;
            for (size_t i = 1; i < Worker::kTaskCache / 2; i++) keep_tail = keep_tail->qnext;
            Task *give = keep_tail->qnext, *give_tail = give;
            size_t n = 1;
            while (give_tail->qnext) {
                give_tail = give_tail->qnext;
                n++;
            }
            keep_tail->qnext = nullptr;
            w->ntasks -= n;
            rt->tasks.give(give, give_tail, n);
        }
        return;
    }
    t->qnext = nullptr;
    rt->tasks.give(t, t, 1);
}

namespace {

void consume_handle(Task *t, void **result) {
    if (result) *result = t->result;
    if (Task::refs_of(t->move_handle(Task::kClaimed, Task::kConsumed, 1)) == 1) free_task(t);
}

// kio_await of a task already finished: consumes the handle of generation
// gen and drops its reference in one compare-and-swap (no claim first).
// False if the handle is not kLive (claimed, or stale): the general path
// says which error.
bool consume_finished(Task *t, uint32_t gen, void **result) {
    // Read before the compare-and-swap, after which t may be freed; if that
    // fails, t may be a new task by now (see Task::result).
    void *r = __atomic_load_n(&t->result, __ATOMIC_RELAXED);
    uint64_t w;
    if (!take_live(t, gen, Task::kConsumed, 1, &w)) return false;
    if (result) *result = r;
    if (Task::refs_of(w) == 1) free_task(t);
    return true;
}

struct TaskWait {
    Task *task;
    WaitNode *node;
};

void publish_task_wait(Waiter *w, void *arg) {
    auto *a = static_cast<TaskWait *>(arg);
    Task *t = a->task;
    if (t == current_task()) {
        // Published by t itself, at its first run right after the holder
        // parked (an await of the child just spawned): t cannot finish
        // meanwhile, and nothing else writes holder_wait while the holder
        // waits; t's finish looks there first. Until t finishes, only a
        // canceler can claim w.
        a->node->linked.store(true, std::memory_order_relaxed);
        t->holder_wait.store(a->node, std::memory_order_relaxed);
        w->only_canceler_claims = true;
        return;
    }
    LockGuard<SpinLock> g(t->lock);
    if (!t->register_waiter()) {
        claim(w, a->node->value);
        return;
    }
    a->node->linked.store(true, std::memory_order_relaxed);
    t->holder_wait.store(a->node, std::memory_order_relaxed);
}

// The holder of t's handle waits until t finishes. 0, or -ECANCELED if
// cancelable and the caller is canceled.
int wait_finished(Task *t, bool cancelable) {
    if (t->state.load(std::memory_order_acquire) == Task::kFinished) return 0;
    Waiter w;
    WaitNode n;
    n.waiter = &w;
    TaskWait a{t, &n};
    int r = wait_on(&w, publish_task_wait, &a, 0, cancelable, KIO_PARK_AWAIT, t);
    if (n.linked.load(std::memory_order_acquire)) {  // canceled: t did not take it
        LockGuard<SpinLock> g(t->lock);
        if (n.linked.load(std::memory_order_relaxed)) {
            t->holder_wait.store(nullptr, std::memory_order_relaxed);
            n.linked.store(false, std::memory_order_relaxed);
        }
    }
    return r;
}

}  // namespace

void release_task(Task *t) {
    if (Task::refs_of(t->life.fetch_sub(Task::kRef, std::memory_order_acq_rel)) == 1) free_task(t);
}

namespace {

// A finishing task's claim of its holder's wait (under t->lock, which keeps
// the holder from leaving that wait). A fiber's wait without a deadline that
// only a canceler may still claim is claimed with a plain store: the
// finisher first withdraws it from the canceler (Task::withdraw_wait, as
// disarm in wait.cpp does), and falls back to the compare-and-swap when a
// cancellation is requested.
// (The holder's cur_wait names this wait or nothing: it cannot leave it
// while its node is linked.)
Claim claim_holder_wait(Waiter *hw) {
    Task *holder = hw->task;
    if (holder && hw->state.load(std::memory_order_acquire) == Waiter::kWaiting && !hw->timer.deadline) {
        if (!(hw->cancel_armed && holder->withdraw_wait())) {
            hw->state.store(Waiter::kClaimed, std::memory_order_release);  // result 0
            return Claim::kWake;
        }
    }
    return claim(hw, 0);
}

}  // namespace

// The task's fn returned (its result is stored). Marks it finished and wakes
// every party that waits for it. When no party waits (none registered under
// the lock: kWaitedBit, and no holder's wait published by the task itself),
// one compare-and-swap on `life` marks it finished and drops the fiber's
// reference at once, without the lock; the caller must then not touch t
// again unless it held the last reference. Publishers set kWaitedBit under
// the lock and see kFinishedBit in the same read-modify-write, so a party
// either sees the task finished or is found by this finish. With a holder's
// wait published by t itself (an await of the child just spawned) the finish
// takes the lock at once, without the compare-and-swap: publishers under the
// lock then see `state`, stored before it (Task::register_waiter).
FinishRef finish_task(Task *t) {
    t->state.store(Task::kFinished, std::memory_order_release);
    // The holder's wait published by t itself: set before t ran its fn, or
    // cleared by a holder that was canceled (under the lock, re-read there).
    if (!t->holder_wait.load(std::memory_order_relaxed)) {
        uint64_t w = t->life.load(std::memory_order_relaxed), nw;
        bool waited;
        do {
            waited = w & Task::kWaitedBit;
            nw = (w | Task::kFinishedBit) - (waited ? 0 : Task::kRef);
        } while (!t->life.compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_relaxed));
        if (!waited) return Task::refs_of(w) == 1 ? FinishRef::kDroppedLast : FinishRef::kDropped;
    }
    Waiter *wake;
    CompletionQueue *cq;
    {
        LockGuard<SpinLock> g(t->lock);
        wake = claim_all(t->waiters, true, 0);
        if (WaitNode *n = t->holder_wait.load(std::memory_order_relaxed)) {  // first: it was there before any selector
            t->holder_wait.store(nullptr, std::memory_order_relaxed);
            Waiter *hw = n->waiter;
            Claim c = claim_holder_wait(hw);
            n->linked.store(false, std::memory_order_release);  // last access to n, unless ours to wake
            if (c == Claim::kWake) {
                hw->wake_next = wake;
                wake = hw;
            }
        }
        cq = t->cq;
        t->cq = nullptr;
    }
    // A lone wakeup (the awaiter, typically) may go straight to the next
    // switch of this dying fiber rather than through the run queue.
    if (!(wake && !wake->wake_next && wake->task && hand_on_exit(wake->task))) wake_chain(wake);
    if (cq) {
        cq_post(cq, t->cq_data, t->result);
        cq_unref(cq);
    }
    return FinishRef::kKept;
}

// Cancellation meets a parked fiber's wait without a lock on the fiber's
// side. The fiber publishes its Waiter in cur_wait and later withdraws it,
// each time reading cancel_requested after a light_fence(); the canceler
// sets cancel_requested, runs heavy_fence() and only then reads cur_wait
// (under t->lock, which also serializes cancelers). So either the fiber sees
// the request or the canceler sees the Waiter (arm_cancel claims it itself in
// the first case), and a fiber that withdraws its Waiter while a request is
// pending waits out the canceler on t->lock before the Waiter's frame goes
// away (disarm in wait.cpp).
namespace {

// A reference to t unless it has none left (its slot is free or being
// reused). Task memory is never unmapped, so the attempt itself is safe.
bool try_ref(Task *t) {
    uint64_t w = t->life.load(std::memory_order_relaxed);
    while (Task::refs_of(w))
        if (t->life.compare_exchange_weak(w, w + Task::kRef, std::memory_order_acquire, std::memory_order_relaxed))
            return true;
    return false;
}

bool cancel_target(Task *t) {
    return t->magic.load(std::memory_order_seq_cst) == Task::kMagicLive &&
           t->state.load(std::memory_order_acquire) != Task::kFinished;
}

// The canceler's second half, after cancel_requested and a heavy_fence().
// The caller keeps t from being freed and reused (a reference, or a handle
// it has claimed): a claim on a new task's wait would go unnoticed by its
// disarm, which waits out cancelers only when its own request is set.
void claim_current_wait(Task *t) {
    Waiter *w = nullptr;
    {
        LockGuard<SpinLock> g(t->lock);
        Waiter *cw = t->cur_wait.load(std::memory_order_acquire);
        if (cw && t->cancel_requested.load(std::memory_order_relaxed) &&
            !t->shielded.load(std::memory_order_relaxed) && claim(cw, -ECANCELED) == Claim::kWake)
            w = cw;
    }
    if (w) wake_claimed(w);
}

}  // namespace

void request_cancel(Task *t) {
    t->cancel_requested.store(true, std::memory_order_seq_cst);
    heavy_fence();
    claim_current_wait(t);
}

// One heavy_fence() for the whole scan: destroy may cancel many tasks. Each
// target is pinned from its request to its claim, so the claim lands on the
// task that was asked (see claim_current_wait). A task spawned after the
// scan starts canceled, or is caught by destroy's next scan.
void cancel_all(Runtime *rt) {
    size_t slots = 0;
    rt->tasks.for_each([&slots](Task *) { slots++; });
    std::vector<Task *> pinned;
    try {
        pinned.reserve(slots + 1024);  // room for slabs added meanwhile
    } catch (...) {
    }
    // No allocation and no release under the pool's lock: dropping the last
    // reference returns a task to that pool.
    rt->tasks.for_each([&pinned](Task *t) {
        bool room = pinned.size() < pinned.capacity();
        if (room && !try_ref(t)) return;
        if (cancel_target(t)) t->cancel_requested.store(true, std::memory_order_seq_cst);
        // Without room to pin (out of memory) the request alone stands: the
        // task sees it at its next cancellation point.
        if (room) pinned.push_back(t);
    });
    heavy_fence();
    for (Task *t : pinned) {
        claim_current_wait(t);  // claims only if t's request is set
        release_task(t);
    }
}

}  // namespace kio

using namespace kio;

// ---------------------------------------------------------------------------
// C API

KIO_EXPORT void kio_spawn_options_init(kio_spawn_options *opts) noexcept {
    if (!opts) return;
    std::memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
}

KIO_EXPORT int kio_spawn_ex(kio_runtime *rth, kio_fn fn, void *arg, const kio_spawn_options *opts,
                            kio_task **out) noexcept {
    if (opts && opts->size < sizeof(kio_spawn_options)) return -EINVAL;
    auto fail = [&](int err) {
        if (opts && opts->arg_destructor) opts->arg_destructor(arg);
        return err;
    };
    if (!fn || !out) return fail(-EINVAL);
    // The caller's worker, read first (see OutsideCall below); a spawn never
    // switches, so it holds for the whole call.
    Worker *cw = current_worker_at_entry();
    Runtime *rt;
    if (rth) {
        if (!(rt = runtime_of(rth))) return fail(-EINVAL);
    } else {
        if (!cw) return fail(-EPERM);
        rt = cw->rt;
    }
    bool outside_rt = !(cw && cw->rt == rt);
    // Refused before registering once shutdown is under way: callers that
    // keep spawning from other threads would otherwise keep the count of
    // outside calls above zero, and destroy, which waits for a moment
    // without any, could wait for ever (32 such threads on 2 CPUs: > 90 s).
    if (outside_rt && rt->shutting_down.load(std::memory_order_relaxed)) return fail(-ECANCELED);
    // Registered right after rt was found live, and before the shutdown
    // check: destroy then either refuses this spawn or waits until its task
    // is counted, and runs it. (A call that starts while destroy is freeing
    // rt passes a stale handle; nothing can make that safe.)
    OutsideCall outside(rt, cw);
    size_t stack_size = 0;
    if (opts && opts->stack_size) {
        if (opts->stack_size < kMinStackSize || opts->stack_size > kMaxStackSize) return fail(-EINVAL);
        size_t ps = StackPool::page_size();
        stack_size = (opts->stack_size + ps - 1) / ps * ps;
        if (stack_size == rt->default_stack()) stack_size = 0;
    }
    Task *self = cw ? static_cast<Task *>(cw->current) : nullptr;
    bool inside = self && self->rt == rt;  // a task of rt (may spawn during shutdown)
    if (rt->shutting_down.load(std::memory_order_seq_cst) && !inside) return fail(-ECANCELED);
    // A stack of a non-default size is reserved now, so that running out of
    // memory is reported here rather than when the task first runs.
    Stack own;
    if (stack_size && !rt->stacks.alloc(stack_size, &own)) return fail(-ENOMEM);
    Worker *w = cw && cw->rt == rt ? cw : nullptr;
    Task *t = alloc_task(rt, w);
    if (!t) {
        if (stack_size) rt->stacks.free(own);
        return fail(-ENOMEM);
    }
    start_task(rt, w, t, fn, arg, stack_size ? own : Stack{}, opts && opts->pinned, opts ? opts->name : nullptr, out);
    return 0;
}

// The common spawn, a fiber's into its own runtime, without kio_spawn_ex's
// options, outside-call and shutdown checks.
KIO_EXPORT int kio_spawn(kio_runtime *rth, kio_fn fn, void *arg, kio_task **out) noexcept {
    Worker *w = current_worker_at_entry();
    if (KIO_LIKELY(w && w->current && fn && out)) {
        // A fiber of rt may spawn even while rt shuts down (its children
        // then start canceled: start_task).
        Runtime *rt = w->rt;
        if (KIO_LIKELY(!rth || static_cast<Runtime *>(rth) == rt)) {
            if (Task *t = alloc_task(rt, w)) {
                start_task(rt, w, t, fn, arg, Stack{}, false, nullptr, out);
                return 0;
            }
        }
    }
    return kio_spawn_ex(rth, fn, arg, nullptr, out);
}

KIO_EXPORT int kio_await(kio_task *h, void **result) noexcept {
    uint32_t gen;
    Task *t = from_handle(h, &gen);
    if (!t) return -EINVAL;
    OutsideCall outside(t);
    Task *self = current_task();
    // The caller's own handle: -EINVAL like any other once detached or
    // consumed (as kio_select and kio_cancel_request say), else -EDEADLK.
    if (t == self) return handle_open(t, gen) ? -EDEADLK : -EINVAL;
    // Cancellation before the task's state: a canceled caller gets
    // -ECANCELED whether the task is finished or awaited by another (-EBUSY).
    // A detached or consumed handle is -EINVAL all the same (take_handle
    // says so otherwise).
    if (self && self->cancel_pending()) return handle_open(t, gen) ? -ECANCELED : -EINVAL;
    if (t->state.load(std::memory_order_acquire) == Task::kFinished && consume_finished(t, gen, result)) return 0;
    if (int e = take_handle(t, gen, Task::kClaimed)) return e;
    int r = wait_finished(t, true);
    if (r) {
        t->move_handle(Task::kClaimed, Task::kLive, 0);
        return r;
    }
    consume_handle(t, result);
    return 0;
}

KIO_EXPORT int kio_cancel(kio_task *h, void **result) noexcept {
    uint32_t gen;
    Task *t = from_handle(h, &gen);
    if (!t) return -EINVAL;
    OutsideCall outside(t);
    if (t == current_task()) return handle_open(t, gen) ? -EDEADLK : -EINVAL;  // as kio_await
    if (int e = take_handle(t, gen, Task::kClaimed)) return e;
    request_cancel(t);
    wait_finished(t, false);
    consume_handle(t, result);
    return 0;
}

KIO_EXPORT int kio_cancel_request(kio_task *h) noexcept {
    uint32_t gen;
    Task *t = from_handle(h, &gen);
    if (!t) return -EINVAL;
    // Another caller may consume the handle meanwhile (an await or cancel in
    // progress is allowed), and the slot may then be reused by a new task:
    // hold a reference while requesting, and check that the handle is
    // still open. The wakeup and the last release touch t's runtime: an
    // outside call, entered before the reference (once the reference is
    // taken, it may be the task's last, and destroy must not miss it).
    OutsideCall outside(t);
    if (!try_ref(t)) return -EINVAL;
    int rc = -EINVAL;
    if (handle_open(t, gen)) {
        request_cancel(t);
        rc = 0;
    }
    release_task(t);
    return rc;
}

KIO_EXPORT int kio_detach(kio_task *h) noexcept {
    uint32_t gen;
    Task *t = from_handle(h, &gen);
    if (!t) return -EINVAL;
    // The last release returns t to its runtime's pool: an outside call,
    // entered before the handle is ours (its reference may be the task's
    // last once the task has retired).
    OutsideCall outside(t);
    if (int e = take_handle(t, gen, Task::kDetached)) return e;
    release_task(t);
    return 0;
}

namespace {

struct SelectWait {
    Task **tasks;
    WaitNode *nodes;
    size_t count;
};

void publish_select(Waiter *w, void *arg) {
    auto *a = static_cast<SelectWait *>(arg);
    for (size_t i = 0; i < a->count; i++) {
        Task *t = a->tasks[i];
        LockGuard<SpinLock> g(t->lock);
        if (!t->register_waiter()) {
            claim(w, int(i));
            break;  // decided: the rest need no registration
        }
        t->waiters.push_back(&a->nodes[i]);
    }
}

// The lowest index of a finished task. A task listed more than once gives
// its first index: the scan may have passed that one just before the task
// finished.
bool lowest_finished(Task **tasks, size_t count, size_t *index) {
    for (size_t i = 0; i < count; i++)
        if (tasks[i]->state.load(std::memory_order_acquire) == Task::kFinished) {
            size_t first = 0;
            while (tasks[first] != tasks[i]) first++;
            *index = first;
            return true;
        }
    return false;
}

}  // namespace

KIO_EXPORT int kio_select(kio_task *const *handles, size_t count, size_t *index) noexcept {
    if (!handles || !count || !index || count > (size_t(1) << 30)) return -EINVAL;
    constexpr size_t kInline = 16;
    Task *tasks_inline[kInline];
    WaitNode nodes_inline[kInline];
    Task **tasks = tasks_inline;
    WaitNode *nodes = nodes_inline;
    if (count > kInline) {
        tasks = static_cast<Task **>(std::malloc(count * sizeof(Task *)));
        nodes = static_cast<WaitNode *>(std::malloc(count * sizeof(WaitNode)));
        if (!tasks || !nodes) {
            std::free(tasks);
            std::free(nodes);
            return -ENOMEM;
        }
        for (size_t i = 0; i < count; i++) new (&nodes[i]) WaitNode;
    }
    int r = 0;
    Task *self = current_task();
    // Each task is held by a reference for the whole call: another caller
    // may consume a handle meanwhile (allowed), and without the reference its
    // slot could then hold a new task by the time the wait registers on it.
    // Held, a finished task stays finished. The references are dropped
    // inside the OutsideCall: dropping the last returns a task to its
    // runtime's pool, which destroy must not have freed yet.
    // Tasks of another runtime than the first one's count as outside calls
    // on theirs, one per task (select across runtimes is rare).
    OutsideCall outside;
    Worker *cw = current_worker_at_entry();
    Runtime *first_rt = nullptr;
    auto outside_other = [&](Runtime *trt) { return trt != first_rt && !(cw && cw->rt == trt); };
    size_t held = 0;
    for (size_t i = 0; i < count && !r; i++) {
        uint32_t gen;
        Task *t = from_handle(handles[i], &gen);
        if (!t || !try_ref(t)) {
            r = -EINVAL;
            break;
        }
        if (!held) {
            first_rt = t->rt;
            outside.enter(first_rt, cw);
        } else if (outside_other(t->rt)) {
            t->rt->outside_calls.fetch_add(1, std::memory_order_seq_cst);
        }
        tasks[i] = t;
        held = i + 1;
        if (!handle_open(t, gen))
            r = -EINVAL;
        else if (t == self)
            r = -EDEADLK;
    }
    if (!r && !lowest_finished(tasks, count, index)) {
        if (self && self->cancel_pending()) {
            r = -ECANCELED;
        } else {
            Waiter w;
            for (size_t i = 0; i < count; i++) {
                nodes[i].waiter = &w;
                nodes[i].value = int(i);
            }
            SelectWait a{tasks, nodes, count};
            r = wait_on(&w, publish_select, &a, 0, true, KIO_PARK_SELECT, tasks, int(count));
            for (size_t i = 0; i < count; i++) unlink_if_linked(tasks[i]->lock, tasks[i]->waiters, &nodes[i]);
            if (r >= 0) {
                // r is the index that woke us; a lower one may have finished too.
                if (!lowest_finished(tasks, count, index)) *index = size_t(r);
                r = 0;
            }
        }
    }
    for (size_t i = 0; i < held; i++) {
        Runtime *trt = tasks[i]->rt;  // read while held
        release_task(tasks[i]);
        if (i > 0 && outside_other(trt)) trt->outside_calls.fetch_sub(1, std::memory_order_acq_rel);
    }
    outside.leave();
    if (count > kInline) {
        std::free(tasks);
        std::free(nodes);
    }
    return r;
}

KIO_EXPORT int kio_yield(void) noexcept {
    Worker *w = current_worker_at_entry();
    Task *self = w ? static_cast<Task *>(w->current) : nullptr;
    if (!self) return -EPERM;
    yield_current(w);
    return self->cancel_pending() ? -ECANCELED : 0;
}

KIO_EXPORT uint64_t kio_task_get_id(kio_task *h) noexcept {
    uint32_t gen;
    Task *t = from_handle(h, &gen);
    if (!t || !handle_open(t, gen)) return 0;
    uint64_t id = __atomic_load_n(&t->id, __ATOMIC_RELAXED);
    // The handle may have been consumed, and the slot reused, meanwhile.
    return handle_open(t, gen) ? id : 0;
}

KIO_EXPORT uint64_t kio_task_id(void) noexcept {
    Task *t = current_task();
    return t ? t->id : 0;
}

KIO_EXPORT int kio_cancel_shield(int enable) noexcept {
    Task *t = current_task();
    if (!t) return -EPERM;
    return t->shielded.exchange(enable != 0, std::memory_order_seq_cst) ? 1 : 0;
}

KIO_EXPORT int kio_check_cancel(void) noexcept {
    Task *t = current_task();
    return t && t->cancel_pending() ? -ECANCELED : 0;
}

KIO_EXPORT int kio_cancel_self(void) noexcept {
    Task *t = current_task();
    if (!t) return -EPERM;
    t->cancel_requested.store(true, std::memory_order_seq_cst);
    return 0;
}
