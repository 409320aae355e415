// Creating and destroying runtimes.
//
// Create turns the calling thread into worker 0: its code continues as the
// main fiber (on the thread's own stack), and worker 0's idle context gets an
// allocated stack. Other workers start lazily (start_worker).
//
// Destroy, from the main fiber: mark shutting_down, cancel every live task,
// wait until none is left, move the main fiber back to worker 0's thread, stop
// and join the other workers, free everything.
#include <unistd.h>

#include <sched.h>

#include <csignal>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

#include "blocking.h"
#include "context.h"
#include "fd.h"
#include "runtime.h"

using namespace kio;

namespace {

// Runtime memory is recycled for later runtimes, never handed back to the
// allocator: a handle used after kio_runtime_destroy (a second destroy, a
// plain thread whose kio_spawn races the destroy) then reads a dead magic
// number, not freed memory. Only the Runtime object itself is kept; its
// workers, pollers, stacks and pools are freed by its destructor.
struct RuntimeSlot {
    alignas(Runtime) unsigned char mem[sizeof(Runtime)];
    RuntimeSlot *next_free;
};
std::mutex g_slots_lock;
RuntimeSlot *g_free_slots = nullptr;

Runtime *new_runtime(size_t stack_size) {
    RuntimeSlot *s;
    {
        std::lock_guard<std::mutex> g(g_slots_lock);
        if ((s = g_free_slots)) g_free_slots = s->next_free;
    }
    if (!s) s = new (std::nothrow) RuntimeSlot;
    if (!s) return nullptr;
    return new (s->mem) Runtime(stack_size);
}

void delete_runtime(Runtime *rt) {
    auto *magic = reinterpret_cast<uint32_t *>(&rt->magic);
    rt->~Runtime();
    // After the destructor: a store before it could be dropped as dead.
    __atomic_store_n(magic, 0u, __ATOMIC_RELEASE);
    auto *s = reinterpret_cast<RuntimeSlot *>(reinterpret_cast<unsigned char *>(rt) -
                                              offsetof(RuntimeSlot, mem));
    std::lock_guard<std::mutex> g(g_slots_lock);
    s->next_free = g_free_slots;
    g_free_slots = s;
}

int parse_backend(const char *name, Backend *out) {
    if (!name || !std::strcmp(name, "auto")) {
        *out = Poller::default_backend();
        return 0;
    }
    Backend b;
    if (!std::strcmp(name, "epoll")) b = Backend::kEpoll;
    else if (!std::strcmp(name, "kqueue")) b = Backend::kKqueue;
    else if (!std::strcmp(name, "io_uring")) return -ENOTSUP;
    else return -EINVAL;
    if (!Poller::available(b)) return -ENOTSUP;
    *out = b;
    return 0;
}

// Nothing is left that could touch the runtime. outside_calls is read first:
// a plain thread's spawn counts its task before it ends its outside call, so
// a 0 seen here makes that task visible to live_tasks(); a spawn that
// registers later sees shutting_down and is refused.
// outside_calls is read again after: an outside wakeup (ready_from_outside)
// counts itself before its task can run, so once that task is seen retired,
// the second read sees the wakeup's call until it is over.
bool all_done(Runtime *rt) {
    return rt->outside_calls.load(std::memory_order_seq_cst) == 0 && rt->live_tasks() == 0 &&
           rt->outside_calls.load(std::memory_order_seq_cst) == 0;
}

// Waits until every task has been recycled, canceling again each round (a
// task spawned by a task that was being canceled starts canceled, but one
// spawned just before shutdown began may have escaped the previous scan).
// Polling keeps the hot paths free of a shared counter; it runs once per
// runtime, with a backoff from 20 us to 1 ms.
void wait_for_all_tasks(Runtime *rt) {
    uint64_t pause = 20 * 1000;
    while (!all_done(rt)) {
        cancel_all(rt);
        if (all_done(rt)) break;
        Waiter w;
        wait_on(&w, [](Waiter *, void *) {}, nullptr, now_ns() + pause, false, KIO_PARK_OTHER);
        if (pause < 1000 * 1000) pause *= 2;
    }
}

void free_runtime(Runtime *rt) {
    blocking_pool_destroy(rt->blocking.load(std::memory_order_acquire));
    fd_forget_runtime(rt);
    for (unsigned i = 0; i < rt->nthreads; i++) {
        Worker *w = &rt->workers[i];
        if (w->nstacks) rt->stacks.free_batch(w->stacks, w->nstacks);
        w->nstacks = 0;
        san_destroy(&w->idle_san);
    }
    delete[] rt->workers;
    delete_runtime(rt);
}

// A fresh Task for the main fiber from the slabs. The slot may have held a
// task of an earlier runtime: start from a default Task, but keep counting
// its generation so that old handles to the slot stay stale. It stays out
// of the pool's free list and is never marked live (destroy's scans and
// kio_dump handle it apart); the slabs go to the next runtime whole.
Task *new_main_task(Runtime *rt) {
    Task *t = nullptr;
    if (!rt->tasks.take(&t, 1)) return nullptr;
    uint32_t gen = t->gen.load(std::memory_order_relaxed);
    t = new (t) Task;
    t->gen.store(gen + 1, std::memory_order_relaxed);
    t->init_life(1, std::memory_order_relaxed);  // the main fiber's own reference
    return t;
}

}  // namespace

// Reading every `retired` before any `spawned` makes a zero exact: a task alive
// when the retired counters were read is counted in spawned but not retired,
// and once none is alive nothing can spawn again (plain threads are refused
// during shutdown).
int64_t Runtime::live_tasks() const {
    int64_t retired = 0, spawned = 0;
    unsigned n = nstarted.load(std::memory_order_acquire);
    for (unsigned i = 0; i < n; i++) retired += workers[i].nretired.load(std::memory_order_acquire);
    for (unsigned i = 0; i < n; i++) spawned += workers[i].nspawned.load(std::memory_order_acquire);
    spawned += foreign_spawned.load(std::memory_order_acquire);
    return spawned - retired;
}

KIO_EXPORT void kio_options_init(kio_options *opts) noexcept {
    if (!opts) return;
    std::memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
}

KIO_EXPORT int kio_runtime_create(const kio_options *opts, kio_runtime **out) noexcept {
    if (!out) return -EINVAL;
    kio_options o;
    kio_options_init(&o);
    if (opts) {
        // A larger struct (a newer header) is fine: its extra fields are
        // beyond what this version knows.
        if (opts->size < sizeof(kio_options)) return -EINVAL;
        std::memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
        o.size = sizeof o;
    }
    if (const char *e = getenv("KIO_DEBUG_MIGRATE"); e && *e && *e != '0') o.debug_flags |= KIO_DEBUG_MIGRATE;
    if (o.dump_signal < 0 || o.dump_signal >= NSIG || o.dump_signal == SIGSEGV || o.dump_signal == SIGBUS ||
        o.dump_signal == SIGKILL || o.dump_signal == SIGSTOP || o.dump_signal == stall_signal_number())
        return -EINVAL;
    // A signal the C library keeps for itself (glibc's 32 and 33) cannot be
    // handled: sigaction refuses even to report its disposition.
    struct sigaction cur;
    if (o.dump_signal && sigaction(o.dump_signal, nullptr, &cur) != 0) return -EINVAL;
    if (current_worker()) return -EBUSY;
    init_fences();
    Backend backend;
    if (int e = parse_backend(o.backend, &backend)) return e;
    unsigned threads = o.threads;
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? unsigned(n) : 1;
        if (threads > kMaxThreads) threads = kMaxThreads;
    }
    if (threads > kMaxThreads) return -EINVAL;
    size_t stack = o.stack_size ? o.stack_size : kDefaultStackSize;
    if (stack < kMinStackSize || stack > kMaxStackSize) return -EINVAL;
    size_t ps = StackPool::page_size();
    stack = (stack + ps - 1) / ps * ps;

    Runtime *rt = new_runtime(stack);
    if (!rt) return -ENOMEM;
    rt->nthreads = threads;
    rt->backend = backend;
    rt->debug_migrate = (o.debug_flags & KIO_DEBUG_MIGRATE) != 0;
    rt->stall_ns = o.stall_ns;
    rt->dump_signal = o.dump_signal;
    rt->workers = new (std::nothrow) Worker[threads];
    if (!rt->workers) {
        delete_runtime(rt);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < threads; i++) {
        Worker *w = &rt->workers[i];
        w->rt = rt;
        w->index = i;
        w->rng = 0x9e3779b9u * (i + 1);
        w->plain = !rt->stall_ns && !rt->debug_migrate;
        if (threads == 1) {  // nobody to steal from it
            w->ready.set_solo();
            w->yielded.set_solo();
            w->spawned.set_solo();
        } else {
            w->spawned.set_awake_count(&rt->nawake);
        }
        if (int e = w->poller.open(backend)) {
            free_runtime(rt);
            return e;
        }
    }
    if (!(rt->main = new_main_task(rt))) {
        free_runtime(rt);
        return -ENOMEM;
    }
    // Worker 0: the idle context on its own stack; the main fiber on ours.
    Worker *w0 = &rt->workers[0];
    if (!rt->stacks.alloc(kIdleStackSize, &w0->idle_stack)) {
        free_runtime(rt);
        return -ENOMEM;
    }
    w0->idle_sp = make_context(w0->idle_stack.top(), idle_entry, w0);
    san_set_stack(&w0->idle_san, w0->idle_stack.base, w0->idle_stack.size);
    san_create(&w0->idle_san);

    Task &m = *rt->main;
    m.id = 1;
    m.rt = rt;
    m.state.store(Task::kRunning, std::memory_order_relaxed);
    m.on_cpu.store(true, std::memory_order_relaxed);
    std::strcpy(m.name, "main");
    san_adopt_current(&m.san);
    rt->creator = pthread_self();

    w0->current = &m;
    w0->switched_at.store(now_ns(), std::memory_order_relaxed);
    set_current_worker(w0);
    w0->altstack = debug_thread_start();
    if (int e = debug_runtime_start(rt)) {
        debug_thread_stop(w0->altstack);
        set_current_worker(nullptr);
        free_runtime(rt);
        return e;
    }
    if (rt->debug_migrate)  // migration needs somewhere to go from the start
        while (rt->nstarted.load(std::memory_order_relaxed) < rt->nthreads && start_worker(rt) == 0) {
        }
    *out = rt;
    return 0;
}

KIO_EXPORT int kio_runtime_destroy(kio_runtime *rth) noexcept {
    Runtime *rt = runtime_of(rth);
    if (!rt) return -EINVAL;
    if (current_task() != rt->main) return -EPERM;

    rt->shutting_down.store(true, std::memory_order_seq_cst);
    cancel_all(rt);
    wait_for_all_tasks(rt);
    // Back to the creating thread, then stop the other workers.
    migrate_current(&rt->workers[0]);
    rt->exiting.store(true, std::memory_order_seq_cst);
    // A worker being started concurrently (a pool thread's wakeup) has
    // finished starting once we hold start_lock, and none starts after it
    // (start_worker checks exiting under the lock): has_thread is final.
    { std::lock_guard<std::mutex> g(rt->start_lock); }
    for (unsigned i = 1; i < rt->nthreads; i++) {
        Worker *w = &rt->workers[i];
        if (!w->has_thread) continue;
        w->poller.wake();
        pthread_join(w->thread, nullptr);
    }
    debug_runtime_stop(rt);
    debug_thread_stop(rt->workers[0].altstack);
    set_current_worker(nullptr);
    // Observers (kio_stats, kio_dump on other threads) that registered
    // before `freeing` read the workers: wait them out. The seq_cst store
    // and loads pair with Observer's registration (a Dekker pair).
    rt->freeing.store(true, std::memory_order_seq_cst);
    while (rt->observers.load(std::memory_order_seq_cst) > 0) sched_yield();
    free_runtime(rt);
    return 0;
}

KIO_EXPORT kio_runtime *kio_current(void) noexcept {
    Worker *w = current_worker();
    return w ? w->rt : nullptr;
}
