// The blocking pool: plain threads that run work which may block its OS
// thread (kio_blocking, regular-file operations, name resolution) while the
// fiber that asked parks.
//
// One pool per runtime, elastic: a job starts a thread when no thread is idle
// and fewer than kMaxThreads run; a thread idle for kIdleExit leaves. Jobs
// queue FIFO beyond that. Destroying the runtime waits for running jobs.
#pragma once

#include <pthread.h>

#include <cstdint>

#include "../include/kio.h"
#include "util.h"
#include "wait.h"

namespace kio {

constexpr unsigned kBlockingMaxThreads = 64;
constexpr uint64_t kBlockingIdleExit = 10ull * 1000 * 1000 * 1000;  // ns

struct Runtime;
class BlockingPool;

// Creates rt's pool on first use.
BlockingPool *blocking_pool(Runtime *rt);
void blocking_pool_destroy(BlockingPool *pool);  // waits for running jobs
// Whether the caller is one of rt's pool threads (running a job of rt's):
// it must not wait for rt's destroy, which waits for it.
bool on_blocking_thread_of(Runtime *rt);

// How cancellation or the deadline scope may end a wait on the pool.
enum class BlockingStop {
    // At once: the job finishes unobserved, so fn and arg must not depend on
    // the caller's frame; the pool thread calls abandoned(arg, result), if
    // given, once fn returns.
    kAbandon,
    // Only while the job is queued: it is withdrawn and never runs. Once a
    // pool thread has it, the caller waits (uncancelably) for fn to return,
    // so fn may use the caller's frame (a buffer).
    kBeforeStart,
};

// Runs fn(arg) on rt's pool and parks the calling fiber until it returns or
// `stop` lets cancellation or the deadline end the wait (a deadline already
// past fails at once). Returns 0 with *result set, or a negative errno.
// *queued (if given) says whether the job reached the pool: after a failure
// with kAbandon it then runs (or ran) unobserved and arg belongs to it.
int run_blocking(Runtime *rt, kio_fn fn, void *arg, void **result, BlockingStop stop,
                 void (*abandoned)(void *arg, void *result) = nullptr, bool *queued = nullptr);

// run_blocking for an operation on a descriptor (stop is kBeforeStart): a
// kio_close of it ends the wait like cancellation, with -EBADF, and so does
// one that came since `closes` (fd_closes when the caller's call began).
int run_blocking_on_fd(Runtime *rt, kio_fn fn, void *arg, struct FdState *st, uint32_t closes);

}  // namespace kio
