// Blocking a plain OS thread on a 32-bit word: futex on Linux, a process-wide
// table of mutex/condition pairs elsewhere. Used by threads outside the runtime
// that wait on kio objects, and nowhere on a fiber.
#pragma once

#include <atomic>
#include <cstdint>

namespace kio {

// Blocks while *word == expected, until woken or deadline (kio_now() base,
// 0 = none) passes. Returns false on timeout. Spurious returns are possible:
// callers re-check their condition.
bool futex_wait(std::atomic<uint32_t> *word, uint32_t expected, uint64_t deadline);
// Wakes every thread blocked on word.
void futex_wake_all(std::atomic<uint32_t> *word);

}  // namespace kio
