// A wakeup from a plain thread races kio_runtime_destroy: the waker must be
// done with the runtime before destroy frees it.
//
// Fiber T (shielded from destroy's cancellation) waits on a condition while
// the main fiber destroys the runtime; plain thread P signals the condition.
// Inside the signal, P queues T on the runtime, then still touches it (looks
// for a worker to wake, rings its doorbell). This binary interposes
// pthread_mutex_unlock to stall P for 100 ms right after the queue's lock is
// released, standing in for P being preempted there: T runs and finishes
// meanwhile, and destroy must still wait for P (it used to free the runtime
// under P, which then read freed memory and wrote to a closed descriptor).
// Its own binary: the interposition is process-wide (limited to P by a
// thread-local flag), and it is not built with ThreadSanitizer, which
// intercepts pthread_mutex_unlock itself.
#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "kio_test_util.h"

using kt::kMs;

namespace {
thread_local bool t_stall_after_unlock = false;
std::atomic<int> stall_over{0};
}  // namespace

extern "C" int pthread_mutex_unlock(pthread_mutex_t *mu) {
    using Fn = int (*)(pthread_mutex_t *);
    static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pthread_mutex_unlock"));
    int r = real(mu);
    if (t_stall_after_unlock) {
        t_stall_after_unlock = false;
        usleep(100 * 1000);
        stall_over = 1;
    }
    return r;
}

TEST(OutsideWake, DestroyWaitsForAPlainThreadStillInsideItsSignal) {
    kio_options o;
    kio_options_init(&o);
    o.threads = 1;
    kio_runtime *rt = nullptr;
    ASSERT_EQ(kio_runtime_create(&o, &rt), 0);
    static kio_mutex m = KIO_MUTEX_INIT;
    static kio_cond c = KIO_COND_INIT;
    static std::atomic<int> flag{0}, waiting{0};
    kio_task *t = kt::spawn([] {
        kio_cancel_shield(1);
        kio_mutex_lock(&m);
        waiting = 1;
        while (!flag.load()) kio_cond_wait(&c, &m);
        kio_mutex_unlock(&m);
        return intptr_t(0);
    });
    ASSERT_NE(t, nullptr);
    ASSERT_EQ(kio_detach(t), 0);
    while (!waiting.load()) kio_sleep(kMs);
    std::thread p([] {
        usleep(20 * 1000);  // destroy is waiting for T by now
        kio_mutex_lock(&m);
        flag = 1;
        kio_mutex_unlock(&m);
        t_stall_after_unlock = true;  // the next unlock is the run queue's, inside the signal
        kio_cond_signal(&c);
        t_stall_after_unlock = false;
    });
    EXPECT_EQ(kio_runtime_destroy(rt), 0);
    EXPECT_EQ(stall_over.load(), 1) << "destroy returned while a plain thread was still waking a task of the runtime";
    p.join();
}
