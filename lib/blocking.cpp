#include "blocking.h"

#include <cerrno>
#include <new>

#include "fd.h"
#include "runtime.h"

namespace kio {

namespace {

// A job outlives the fiber that asked for it when that fiber stops waiting:
// two references (the fiber, the pool thread); the last one frees it. The
// waiter pointer and `done` are guarded by `lock`; the fiber clears the
// waiter when it leaves.
struct Job {
    Job *next = nullptr;
    kio_fn fn;
    void *arg;
    void *result = nullptr;
    SpinLock lock;
    Waiter *waiter = nullptr;
    bool done = false;  // fn returned (a waiter that comes late must not park)
    void (*abandoned)(void *arg, void *result) = nullptr;
    std::atomic<int> refs{2};
};

void drop(Job *j) {
    if (j->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete j;
}

}  // namespace

class BlockingPool;
// The pool whose job the calling thread runs (nullptr on other threads).
// Pool threads are plain threads, never fibers: no switch can move a reader.
thread_local BlockingPool *tls_pool = nullptr;

class BlockingPool {
  public:
    // Queues j, starting a thread if none is idle. False if no thread could
    // be started and none is running (the job is then not queued).
    bool submit(Job *j) {
        pthread_mutex_lock(&mu_);
        if (tail_) tail_->next = j;
        else head_ = j;
        tail_ = j;
        queued_++;
        bool ok = true;
        // Each idle thread takes one queued job: a job that finds every idle
        // thread already spoken for starts a thread (else a job that waits
        // for a later one could wait forever).
        if (queued_ <= idle_) {
            pthread_cond_signal(&cv_);
        } else if (threads_ < kBlockingMaxThreads) {
            pthread_t th;
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            if (pthread_create(&th, &attr, &BlockingPool::main, this) == 0) {
                threads_++;
            } else if (threads_ == 0) {
                ok = false;  // nobody would ever run it: take it back
                head_ = tail_ = nullptr;
                queued_ = 0;
            }
            pthread_attr_destroy(&attr);
        }
        pthread_mutex_unlock(&mu_);
        return ok;
    }

    // Takes j back if no thread has taken it yet (then it never runs and the
    // pool's reference is the caller's to drop).
    bool withdraw(Job *j) {
        pthread_mutex_lock(&mu_);
        Job **link = &head_, *prev = nullptr;
        while (*link && *link != j) {
            prev = *link;
            link = &(*link)->next;
        }
        bool found = *link == j;
        if (found) {
            *link = j->next;
            if (tail_ == j) tail_ = prev;
            queued_--;
        }
        pthread_mutex_unlock(&mu_);
        return found;
    }

    // Stops accepting idle time and waits until every thread has left.
    void shutdown() {
        pthread_mutex_lock(&mu_);
        stopping_ = true;
        pthread_cond_broadcast(&cv_);
        while (threads_ > 0) pthread_cond_wait(&done_, &mu_);
        pthread_mutex_unlock(&mu_);
    }

    BlockingPool() {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
#if !defined(__APPLE__)  // macOS has no pthread_condattr_setclock: realtime there
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
#endif
        pthread_cond_init(&cv_, &ca);
        pthread_cond_init(&done_, nullptr);
        pthread_condattr_destroy(&ca);
    }
    ~BlockingPool() {
        pthread_cond_destroy(&cv_);
        pthread_cond_destroy(&done_);
        pthread_mutex_destroy(&mu_);
    }

  private:
    static void *main(void *arg) {
        tls_pool = static_cast<BlockingPool *>(arg);
        static_cast<BlockingPool *>(arg)->loop();
        return nullptr;
    }

    void loop() {
        pthread_mutex_lock(&mu_);
        for (;;) {
            while (!head_ && !stopping_) {
                idle_++;
#if defined(__APPLE__)
                timespec now;  // the condition's clock: realtime (see the constructor)
                clock_gettime(CLOCK_REALTIME, &now);
                uint64_t until = uint64_t(now.tv_sec) * 1000000000u + uint64_t(now.tv_nsec) + kBlockingIdleExit;
#else
                uint64_t until = now_ns() + kBlockingIdleExit;
#endif
                timespec ts{time_t(until / 1000000000u), long(until % 1000000000u)};
                int r = pthread_cond_timedwait(&cv_, &mu_, &ts);
                idle_--;
                if (r == ETIMEDOUT && !head_) goto leave;
            }
            if (!head_) goto leave;  // stopping, queue drained
            Job *j = head_;
            head_ = j->next;
            if (!head_) tail_ = nullptr;
            queued_--;
            pthread_mutex_unlock(&mu_);
            run(j);
            pthread_mutex_lock(&mu_);
        }
    leave:
        threads_--;
        if (threads_ == 0) pthread_cond_broadcast(&done_);
        pthread_mutex_unlock(&mu_);
    }

    static void run(Job *j) {
        j->result = j->fn(j->arg);
        // Each job starts without a deadline scope: one that fn set (and did
        // not clear) must not bound the next jobs on this thread.
        set_scope_deadline(0);
        Waiter *wake = nullptr;
        bool observed = false;
        {
            LockGuard<SpinLock> g(j->lock);
            j->done = true;
            if (j->waiter) {
                Claim c = claim(j->waiter, 0);
                observed = c != Claim::kLost;
                if (c == Claim::kWake) wake = j->waiter;
            }
        }
        if (wake) wake_claimed(wake);
        // The fiber stopped waiting (canceled, deadline): the job owns arg.
        if (!observed && j->abandoned) j->abandoned(j->arg, j->result);
        drop(j);
    }

    pthread_mutex_t mu_ = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv_;
    pthread_cond_t done_;
    Job *head_ = nullptr, *tail_ = nullptr;
    unsigned threads_ = 0, idle_ = 0, queued_ = 0;
    bool stopping_ = false;
};

BlockingPool *blocking_pool(Runtime *rt) {
    BlockingPool *p = rt->blocking.load(std::memory_order_acquire);
    if (p) return p;
    auto *fresh = new (std::nothrow) BlockingPool;
    if (!fresh) return nullptr;
    if (rt->blocking.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return fresh;
    delete fresh;
    return p;
}

bool on_blocking_thread_of(Runtime *rt) {
    return tls_pool && tls_pool == rt->blocking.load(std::memory_order_acquire);
}

void blocking_pool_destroy(BlockingPool *pool) {
    if (!pool) return;
    pool->shutdown();
    delete pool;
}

namespace {

struct BlockingWait {
    BlockingPool *pool;
    Job *job;
    bool submitted;
    FdState *fd;      // run_blocking_on_fd: the descriptor kio_close may end the wait for
    uint32_t closes;  // its fd_closes when the call began
    WaitNode node;    // in fd->closers
};

void publish_blocking(Waiter *w, void *arg) {
    auto *a = static_cast<BlockingWait *>(arg);
    if (FdState *st = a->fd) {
        LockGuard<SpinLock> g(st->lock);
        if (fd_closes(st) != a->closes) {  // closed already: never submitted
            claim(w, -EBADF);
            return;
        }
        a->node.waiter = w;
        st->closers.push_back(&a->node);
    }
    {
        LockGuard<SpinLock> g(a->job->lock);
        a->job->waiter = w;
    }
    a->submitted = a->pool->submit(a->job);
    if (!a->submitted) claim(w, -EAGAIN);
}

// A job a pool thread has taken: waits, uncancelably, until fn returns.
void publish_taken(Waiter *w, void *arg) {
    auto *j = static_cast<Job *>(arg);
    LockGuard<SpinLock> g(j->lock);
    if (j->done) claim(w, 0);
    else j->waiter = w;
}

int wait_taken(Job *j) {
    Waiter w;
    return wait_on(&w, publish_taken, j, 0, false, KIO_PARK_BLOCKING, reinterpret_cast<const void *>(j->fn));
}

// A deadline already past: do not start work that would only be abandoned
// or withdrawn (and would win the race against the timer if quick).
bool deadline_passed() {
    Task *self = current_task();
    return self && self->deadline && self->deadline <= now_ns();
}

}  // namespace

namespace {

int run_job(Runtime *rt, kio_fn fn, void *arg, void **result, BlockingStop stop,
            void (*abandoned)(void *arg, void *result), bool *queued, FdState *fd, uint32_t closes) {
    if (queued) *queued = false;
    if (deadline_passed()) return -ETIMEDOUT;
    BlockingPool *pool = blocking_pool(rt);
    if (!pool) return -ENOMEM;
    Job *j = new (std::nothrow) Job;
    if (!j) return -ENOMEM;
    j->fn = fn;
    j->arg = arg;
    j->abandoned = abandoned;
    Waiter w;
    BlockingWait a{pool, j, false, fd, closes, {}};
    int r = wait_on(&w, publish_blocking, &a, 0, true, KIO_PARK_BLOCKING, reinterpret_cast<const void *>(fn));
    if (fd) unlink_if_linked(fd->lock, fd->closers, &a.node);
    {
        LockGuard<SpinLock> g(j->lock);
        j->waiter = nullptr;  // kAbandon: the job finishes unobserved
    }
    if (r != 0 && a.submitted && stop == BlockingStop::kBeforeStart) {
        // Canceled or timed out: withdraw the job if it has not started;
        // else a pool thread is using the caller's memory: wait for it.
        if (pool->withdraw(j)) {
            a.submitted = false;  // never ran: the pool's reference is ours
        } else {
            r = wait_taken(j);
        }
    }
    if (r == 0 && result) *result = j->result;
    if (queued) *queued = a.submitted;
    if (!a.submitted) drop(j);  // the pool never got (or gave back) its reference
    drop(j);
    return r;
}

}  // namespace

int run_blocking(Runtime *rt, kio_fn fn, void *arg, void **result, BlockingStop stop,
                 void (*abandoned)(void *arg, void *result), bool *queued) {
    return run_job(rt, fn, arg, result, stop, abandoned, queued, nullptr, 0);
}

int run_blocking_on_fd(Runtime *rt, kio_fn fn, void *arg, FdState *st, uint32_t closes) {
    return run_job(rt, fn, arg, nullptr, BlockingStop::kBeforeStart, nullptr, nullptr, st, closes);
}

}  // namespace kio
