// Helpers shared by the I/O tests (io_test.cpp, io_stress_test.cpp):
// socket pairs and loopback addresses, buffer filling and draining, full
// reads and writes, a listener whose accept queue is full, a delayed action
// on a plain thread, timing checks and data volumes. Header-only, C++ only.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kio_test_util.h"

namespace kio_io {

using kt::kMs;
using kt::kSec;
using kt::kUs;
using kt::scaled;

// ---------------------------------------------------------------------------
// Helpers (raw system calls where the test needs a known starting point).

// An AF_UNIX stream pair; non-blocking and close-on-exec unless `blocking`.
inline bool unix_pair(int sv[2], bool blocking = false, int type = SOCK_STREAM) {
    int t = type | (blocking ? 0 : SOCK_NONBLOCK | SOCK_CLOEXEC);
    return socketpair(AF_UNIX, t, 0, sv) == 0;
}

inline sockaddr_in loop4(int port) {
    sockaddr_in a;
    std::memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

inline sockaddr_in6 loop6(int port) {
    sockaddr_in6 a;
    std::memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(uint16_t(port));
    a.sin6_addr = in6addr_loopback;
    return a;
}

// Local port and family of a bound socket (-1 on error).
inline int local_port(int fd, int *family = nullptr) {
    sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len) != 0) return -1;
    if (family) *family = ss.ss_family;
    if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in *>(&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6 *>(&ss)->sin6_port);
    return -1;
}

// A TCP socket bound to 127.0.0.1 but not listening: connections to its port
// are refused (and nobody else can take the port while it is open).
inline int refusing_port(int *fd_out) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_in a = loop4(0);
    if (bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) {
        close(fd);
        return -1;
    }
    *fd_out = fd;
    return local_port(fd);
}

// A connected TCP pair over loopback, both ends non-blocking (raw calls).
inline bool tcp_pair(int *client, int *server) {
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0) return false;
    sockaddr_in a = loop4(0);
    if (bind(l, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 || listen(l, 4) != 0) {
        close(l);
        return false;
    }
    a = loop4(local_port(l));
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) {
        if (c >= 0) close(c);
        close(l);
        return false;
    }
    int s = accept4(l, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    close(l);
    if (s < 0) {
        close(c);
        return false;
    }
    fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK);
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *client = c;
    *server = s;
    return true;
}

// Fills fd's send path (raw non-blocking sends) until it would block.
inline size_t fill_send_buffer(int fd) {
    static char junk[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = send(fd, junk, sizeof junk, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            total += size_t(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        // A last try with a small chunk, so the buffer is really full.
        if (send(fd, junk, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1) {
            total++;
            continue;
        }
        return total;
    }
}

// Reads everything currently readable (raw, non-blocking).
inline size_t drain(int fd) {
    char buf[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            total += size_t(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        return total;
    }
}

inline bool is_nonblocking(int fd) {
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_NONBLOCK);
}

inline bool is_cloexec(int fd) {
    int fl = fcntl(fd, F_GETFD);
    return fl >= 0 && (fl & FD_CLOEXEC);
}

// kio_write until all of buf is written; returns len or the first error.
inline ssize_t write_all(int fd, const void *buf, size_t len) {
    const char *p = static_cast<const char *>(buf);
    size_t done = 0;
    while (done < len) {
        ssize_t n = kio_write(fd, p + done, len - done);
        if (n <= 0) return n < 0 ? n : -EIO;
        done += size_t(n);
    }
    return ssize_t(len);
}

// kio_read until len bytes arrived; returns len, the bytes before EOF, or an error.
inline ssize_t read_full(int fd, void *buf, size_t len) {
    char *p = static_cast<char *>(buf);
    size_t done = 0;
    while (done < len) {
        ssize_t n = kio_read(fd, p + done, len - done);
        if (n < 0) return n;
        if (n == 0) break;
        done += size_t(n);
    }
    return ssize_t(done);
}

// A TCP listener whose accept queue is full: new connections to it stay in
// progress (their SYNs are dropped) until it accepts.
struct StuckListener {
    int lfd = -1;
    int port = -1;
    std::vector<int> clients;

    bool open() {
        lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (lfd < 0) return false;
        sockaddr_in a = loop4(0);
        if (bind(lfd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 || listen(lfd, 0) != 0) return false;
        port = local_port(lfd);
        a = loop4(port);
        for (int i = 0; i < 16; i++) {
            int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (c < 0) return false;
            clients.push_back(c);
            if (connect(c, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0) continue;
            if (errno != EINPROGRESS) return false;
            pollfd p{c, POLLOUT, 0};
            if (poll(&p, 1, 200) == 0) return true;  // this one is stuck: the queue is full
        }
        return false;
    }
    ~StuckListener() {
        for (int c : clients) close(c);
        if (lfd >= 0) close(lfd);
    }
};

// Restores the SIGPIPE disposition on scope exit (tests that write into a
// reset connection with kio_write, which is write(2) and may raise SIGPIPE).
struct IgnoreSigpipe {
    struct sigaction old;
    IgnoreSigpipe() {
        struct sigaction sa;
        std::memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, &old);
    }
    ~IgnoreSigpipe() { sigaction(SIGPIPE, &old, nullptr); }
};

// A plain thread that does `fn` after `delay` unless canceled first (a safety
// net that turns a would-be hang into a test failure).
class Later {
  public:
    template <class F>
    Later(uint64_t delay, F fn) {
        th_ = std::thread([this, delay, fn] {
            std::unique_lock<std::mutex> g(mu_);
            if (!cv_.wait_for(g, std::chrono::nanoseconds(delay), [this] { return stop_; })) fn();
        });
    }
    void cancel() {
        {
            std::lock_guard<std::mutex> g(mu_);
            stop_ = true;
        }
        cv_.notify_all();
        if (th_.joinable()) th_.join();
    }
    ~Later() { cancel(); }

  private:
    std::mutex mu_;
    std::condition_variable cv_;
    bool stop_ = false;
    std::thread th_;
};

// Checks that a call bounded by a deadline `d` set at `t0` returned at or
// after d and not much later.
inline void expect_deadline_bounds(uint64_t t0, uint64_t d, uint64_t end) {
    EXPECT_GE(end, d) << "returned " << (d - end) / kUs << " us before the deadline";
    EXPECT_LT(end - t0, (d - t0) + kt::prompt(1 * kSec)) << "returned " << (end - d) / kMs << " ms after the deadline";
}

inline std::string threads_name(const ::testing::TestParamInfo<unsigned> &i) { return "T" + std::to_string(i.param); }

// Data volumes: n scaled by KIO_STRESS_SCALE, and a quarter of that in
// sanitizer builds (which run every byte through instrumented code).
inline size_t volume(size_t n) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    n /= 4;
#endif
    return size_t(scaled(n));
}

// Fills buf with bytes from a seeded generator.
inline void random_bytes(std::vector<unsigned char> &buf, uint32_t seed) {
    std::mt19937 g(seed);
    for (auto &b : buf) b = static_cast<unsigned char>(g());
}

}  // namespace kio_io
