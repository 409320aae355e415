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

// Runs fn(arg) on rt's pool and parks the calling fiber until it returns.
// cancelable: cancellation or the deadline scope may end the wait early (the
// job then finishes unobserved, so fn and arg must not depend on the caller's
// frame, and the pool thread calls abandoned(arg, result), if given, once fn
// returns). Returns 0 with *result set, or a negative errno. *queued (if
// given) says whether the job reached the pool: after a failure it then runs
// (or ran) unobserved and arg belongs to it.
int run_blocking(Runtime *rt, kio_fn fn, void *arg, void **result, bool cancelable,
                 void (*abandoned)(void *arg, void *result) = nullptr, bool *queued = nullptr);

}  // namespace kio
