// Runtimes that run on a thread of their own: for callers that must stay
// plain threads (language bindings whose code must never run on a fiber, such
// as Python), kio_runtime_start creates the runtime on a new thread, whose
// main fiber then just waits until kio_runtime_stop asks it to destroy the
// runtime.
#include <pthread.h>

#include <atomic>
#include <cerrno>
#include <new>

#include "blocking.h"
#include "runtime.h"

namespace kio {

struct Background {
    kio_options opts;
    bool have_opts = false;
    pthread_t thread{};
    // Start-up hand-shake (plain pthread primitives: the caller is a plain thread).
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    bool started = false;
    int err = 0;
    kio_runtime *rt = nullptr;
    // Stop request, waited for by the main fiber.
    kio_mutex stop_mu = KIO_MUTEX_INIT;
    kio_cond stop_cv = KIO_COND_INIT;
    bool stop = false;
    int destroy_result = 0;
};

namespace {

void *background_main(void *arg) {
    auto *bg = static_cast<Background *>(arg);
    kio_runtime *rt = nullptr;
    int e = kio_runtime_create(bg->have_opts ? &bg->opts : nullptr, &rt);
    if (e == 0) static_cast<Runtime *>(rt)->background = bg;
    pthread_mutex_lock(&bg->mu);
    bg->err = e;
    bg->rt = rt;
    bg->started = true;
    pthread_cond_signal(&bg->cv);
    pthread_mutex_unlock(&bg->mu);
    if (e) return nullptr;
    // The main fiber parks until stop; its worker runs tasks meanwhile.
    kio_cancel_shield(1);
    kio_mutex_lock(&bg->stop_mu);
    while (!bg->stop) kio_cond_wait(&bg->stop_cv, &bg->stop_mu);
    kio_mutex_unlock(&bg->stop_mu);
    bg->destroy_result = kio_runtime_destroy(rt);
    return nullptr;
}

}  // namespace

}  // namespace kio

using namespace kio;

KIO_EXPORT int kio_runtime_start(const kio_options *opts, kio_runtime **out) noexcept {
    if (!out) return -EINVAL;
    if (opts && opts->size < sizeof(kio_options)) return -EINVAL;
    auto *bg = new (std::nothrow) Background;
    if (!bg) return -ENOMEM;
    if (opts) {
        bg->opts = *opts;
        bg->have_opts = true;
    }
    if (int e = pthread_create(&bg->thread, nullptr, background_main, bg)) {
        delete bg;
        return -e;
    }
    pthread_mutex_lock(&bg->mu);
    while (!bg->started) pthread_cond_wait(&bg->cv, &bg->mu);
    pthread_mutex_unlock(&bg->mu);
    if (bg->err) {
        int e = bg->err;
        pthread_join(bg->thread, nullptr);
        delete bg;
        return e;
    }
    *out = bg->rt;
    return 0;
}

KIO_EXPORT int kio_runtime_stop(kio_runtime *rth) noexcept {
    Runtime *rt = runtime_of(rth);
    if (!rt || !rt->background) return -EINVAL;
    Worker *w = current_worker();
    if (w && w->rt == rt) return -EPERM;  // a fiber of rt would wait for itself
    if (on_blocking_thread_of(rt)) return -EPERM;  // so would a job of rt's pool
    if (rt->stop_claimed.exchange(true, std::memory_order_acq_rel)) return -EINVAL;  // stopping already
    Background *bg = rt->background;  // ours now: only the claimant frees it
    // The lock must be taken even in a canceled task or under an expired
    // deadline scope (of another runtime's fiber): else the stop request
    // could race past the main fiber's check and be lost.
    int shield = kio_cancel_shield(1);  // -EPERM on a plain thread: nothing to restore
    uint64_t deadline = kio_deadline_set(0);
    kio_mutex_lock(&bg->stop_mu);
    bg->stop = true;
    kio_cond_signal(&bg->stop_cv);
    kio_mutex_unlock(&bg->stop_mu);
    kio_deadline_set(deadline);
    if (shield == 0) kio_cancel_shield(0);
    pthread_join(bg->thread, nullptr);
    int r = bg->destroy_result;
    delete bg;
    return r;
}
