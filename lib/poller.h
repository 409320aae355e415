// The completion queue each worker owns, behind one small interface with one
// implementation per backend (poller_epoll.cpp, poller_kqueue.cpp).
//
// A worker blocks only here when it has nothing to run. wake() is the doorbell
// other threads ring when they give it work: an eventfd registered in the epoll
// set on Linux, an EVFILT_USER event on kqueue systems. Rings while the worker
// is awake coalesce into one readiness that the next wait() drains.
#pragma once

#include <cstdint>

namespace kio {

struct PollEvent {
    void *token;      // what was registered for the readiness (never the doorbell)
    uint32_t events;  // kPollIn / kPollOut / kPollErr / kPollUnusual bits
};

// kPollUnusual: a condition that stays readable without further events (peer
// hung up, error, urgent data); it comes with kPollIn.
enum : uint32_t { kPollIn = 1, kPollOut = 2, kPollErr = 4, kPollUnusual = 8 };

enum class Backend { kEpoll, kKqueue };

class Poller {
  public:
    Poller() = default;
    ~Poller() { close(); }
    Poller(const Poller &) = delete;
    Poller &operator=(const Poller &) = delete;

    // Opens the backend. Returns 0 or a negative errno.
    int open(Backend b);
    void close();

    // Waits until readiness, a doorbell ring, or the deadline (kio_now() base;
    // 0 = do not block, UINT64_MAX = no deadline). Stores up to max events and
    // returns their count (doorbell rings are consumed, not reported).
    int wait(PollEvent *out, int max, uint64_t deadline);

    // Rings the doorbell. Any thread.
    void wake();

    // Collects readiness without blocking, for another thread than the owner
    // (an idle worker covering for an owner stuck in a fiber). Uses its own
    // event buffer and leaves the doorbell for the owner. Returns the count.
    int poll_foreign(PollEvent *out, int max);

    // Registers fd, edge-triggered for reading and writing (and errors), with
    // `token` reported in its events. Returns 0 or a negative errno.
    int add(int fd, void *token);
    // Drops fd's registration (ignores errors: the descriptor may be gone).
    void remove(int fd);

    // Backend-neutral name of the platform default.
    static Backend default_backend();
    static bool available(Backend b);

  private:
    int fd_ = -1;              // epoll or kqueue descriptor
#if defined(__linux__)
    int bell_fd_ = -1;         // eventfd (epoll only)
#endif
    void *buf_ = nullptr;      // kernel event buffer (kMaxBatch entries), kept off fiber stacks
    static constexpr int kMaxBatch = 64;
    static constexpr int kForeignBatch = 16;  // poll_foreign's buffer lives on the caller's stack

    // Turns n kernel events into PollEvents; the doorbell is drained (owner)
    // or left alone (foreign poll).
    int translate(void *kernel_events, int n, PollEvent *out, bool owner);
};

}  // namespace kio
