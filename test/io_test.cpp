// Fiber I/O through the public API: sockets and descriptors (every call,
// EOF, reset, errors, deadlines, cancellation, kio_close while parked, shared
// descriptors, plain threads, many connections), TCP listen/dial, files,
// kio_blocking and completion queues.
//
// Socket tests run on runtimes with 1 and 2 workers (parameter /T1, /T2).
// Note: gtest's SCOPED_TRACE is per OS thread, and the main fiber may resume
// on another worker after any park: no SCOPED_TRACE across parks on runtimes
// with more than one worker.
// Upper time bounds are generous and scaled by KIO_TIME_SLACK (kt::prompt);
// lower bounds (a deadline is never early) are exact. The stress cases are in
// io_stress_test.cpp.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kio_test_util.h"
#include "io_util.h"

using kt::iv;
using kt::kMs;
using kt::kSec;
using kt::kUs;
using kt::scaled;
using kt::vi;
using namespace kio_io;

// ===========================================================================
// Sockets: the success path of every operation

class SocketIo : public ::testing::TestWithParam<unsigned> {};
INSTANTIATE_TEST_SUITE_P(Threads, SocketIo, ::testing::Values(1u, 2u), threads_name);

TEST_P(SocketIo, ReadWriteRoundTripWithParkedReader) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    std::atomic<int> started{0};
    kio_task *r = kt::spawn([&] {
        char buf[16] = {0};
        started = 1;
        ssize_t n = kio_read(sv[1], buf, sizeof buf);
        if (n != 5 || std::memcmp(buf, "hello", 5) != 0) return intptr_t(n < 0 ? n : -1000 - n);
        return intptr_t(n);
    });
    ASSERT_TRUE(kt::wait_flag(started, 1));
    kio_sleep(20 * kMs);  // the reader is parked now
    EXPECT_EQ(kio_write(sv[0], "hello", 5), 5);
    EXPECT_EQ(kt::await_ok(r), 5);
    // The other direction, data already there: no park.
    EXPECT_EQ(kio_write(sv[1], "world!", 6), 6);
    char buf[16] = {0};
    EXPECT_EQ(kio_read(sv[0], buf, sizeof buf), 6);
    EXPECT_STREQ(buf, "world!");
    EXPECT_EQ(kio_read(sv[0], buf, 0), 0);  // zero-length read does not park
    EXPECT_EQ(kio_close(sv[0]), 0);
    EXPECT_EQ(kio_close(sv[1]), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST_P(SocketIo, LargeWriteParksUntilPeerReadsAndAllBytesArriveInOrder) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    std::vector<unsigned char> out(volume(8u << 20)), in(out.size());
    random_bytes(out, 7);
    kio_task *w = kt::spawn([&] { return intptr_t(write_all(sv[0], out.data(), out.size())); });
    kio_task *r = kt::spawn([&] { return intptr_t(read_full(sv[1], in.data(), in.size())); });
    EXPECT_EQ(kt::await_ok(w), intptr_t(out.size()));
    EXPECT_EQ(kt::await_ok(r), intptr_t(in.size()));
    EXPECT_TRUE(out == in);
    kio_close(sv[0]);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST_P(SocketIo, ReadvWritevScatterAndGather) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    kio_task *r = kt::spawn([&] {
        char a[3], b[4], c[8];
        std::memset(c, 0, sizeof c);
        iovec iov[3] = {{a, sizeof a}, {b, sizeof b}, {c, sizeof c}};
        ssize_t n = kio_readv(sv[1], iov, 3);
        if (n != 12) return intptr_t(n < 0 ? n : -1000 - n);
        std::string s(a, 3);
        s.append(b, 4);
        s.append(c, 5);
        return intptr_t(s == "abcdefghijkl" ? 12 : -1);
    });
    kio_sleep(10 * kMs);
    char p1[] = "abcde", p2[] = "fghijkl";
    iovec iov[2] = {{p1, 5}, {p2, 7}};
    EXPECT_EQ(kio_writev(sv[0], iov, 2), 12);
    EXPECT_EQ(kt::await_ok(r), 12);
    // iovcnt 0 is a valid zero-length write; a negative count is an error
    // (the kernel's -EINVAL; sanitizer interceptors may report another code).
    EXPECT_EQ(kio_writev(sv[0], iov, 0), 0);
    EXPECT_LT(kio_writev(sv[0], iov, -1), 0);
    kio_close(sv[0]);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST_P(SocketIo, RecvSendWithFlags) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int c, s;
    ASSERT_TRUE(tcp_pair(&c, &s));
    kio_task *r = kt::spawn([&] {
        char buf[16] = {0};
        ssize_t n = kio_recv(s, buf, 4, MSG_PEEK);  // parks, then peeks
        if (n <= 0) return intptr_t(n - 1000);
        char all[16] = {0};
        ssize_t m = kio_recv(s, all, 9, MSG_WAITALL);
        if (m != 9 || std::memcmp(all, "peekaboo!", 9) != 0) return intptr_t(-2000 - m);
        return intptr_t(std::memcmp(buf, "peek", size_t(n)) == 0 ? 1 : -3);
    });
    kio_sleep(10 * kMs);
    EXPECT_EQ(kio_send(c, "peekaboo!", 9, 0), 9);
    EXPECT_EQ(kt::await_ok(r), 1);
    kio_close(c);
    kio_close(s);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST_P(SocketIo, UdpSendtoRecvfromReportsTheSender) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int a = kio_socket(AF_INET, SOCK_DGRAM, 0), b = kio_socket(AF_INET, SOCK_DGRAM, 0);
    ASSERT_GE(a, 0);
    ASSERT_GE(b, 0);
    sockaddr_in any = loop4(0);
    ASSERT_EQ(bind(a, reinterpret_cast<sockaddr *>(&any), sizeof any), 0);
    ASSERT_EQ(bind(b, reinterpret_cast<sockaddr *>(&any), sizeof any), 0);
    int pa = local_port(a), pb = local_port(b);
    kio_task *r = kt::spawn([&] {
        char buf[64] = {0};
        sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = kio_recvfrom(b, buf, sizeof buf, 0, reinterpret_cast<sockaddr *>(&from), &fl);
        if (n != 7 || std::memcmp(buf, "dgram-1", 7) != 0) return intptr_t(n < 0 ? n : -1000 - n);
        if (fl != sizeof from || from.sin_family != AF_INET || ntohs(from.sin_port) != pa) return intptr_t(-2);
        // Reply to the address we got.
        ssize_t m = kio_sendto(b, "reply", 5, 0, reinterpret_cast<sockaddr *>(&from), fl);
        return intptr_t(m);
    });
    kio_sleep(10 * kMs);
    sockaddr_in to = loop4(pb);
    EXPECT_EQ(kio_sendto(a, "dgram-1", 7, 0, reinterpret_cast<sockaddr *>(&to), sizeof to), 7);
    EXPECT_EQ(kt::await_ok(r), 5);
    char buf[16] = {0};
    EXPECT_EQ(kio_recvfrom(a, buf, sizeof buf, 0, nullptr, nullptr), 5);
    EXPECT_STREQ(buf, "reply");
    kio_close(a);
    kio_close(b);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST_P(SocketIo, SendmsgRecvmsgPassADescriptorWithScmRights) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int sv[2], p[2];
    ASSERT_TRUE(unix_pair(sv));
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    kio_task *r = kt::spawn([&] {
        char data[8] = {0};
        iovec iov{data, sizeof data};
        alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
        msghdr msg;
        std::memset(&msg, 0, sizeof msg);
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl;
        msg.msg_controllen = sizeof ctl;
        ssize_t n = kio_recvmsg(sv[1], &msg, MSG_CMSG_CLOEXEC);
        if (n != 3 || std::memcmp(data, "fd!", 3) != 0) return intptr_t(n < 0 ? n : -1000 - n);
        cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) return intptr_t(-2);
        int got;
        std::memcpy(&got, CMSG_DATA(cm), sizeof got);
        // The received descriptor is the pipe's write end: use it with kio.
        ssize_t w = kio_write(got, "via-passed-fd", 13);
        kio_close(got);
        return intptr_t(w);
    });
    kio_sleep(10 * kMs);
    char data[] = "fd!";
    iovec iov{data, 3};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
    std::memset(ctl, 0, sizeof ctl);
    msghdr msg;
    std::memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl;
    msg.msg_controllen = sizeof ctl;
    cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cm), &p[1], sizeof(int));
    EXPECT_EQ(kio_sendmsg(sv[0], &msg, 0), 3);
    kio_close(p[1]);  // the receiver's copy keeps the pipe open
    EXPECT_EQ(kt::await_ok(r), 13);
    char buf[32] = {0};
    EXPECT_EQ(kio_read(p[0], buf, sizeof buf), 13);
    EXPECT_STREQ(buf, "via-passed-fd");
    EXPECT_EQ(kio_read(p[0], buf, sizeof buf), 0);  // every write end is closed
    kio_close(p[0]);
    kio_close(sv[0]);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST_P(SocketIo, AcceptParksUntilAClientConnectsAndHonoursCloexec) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int l = kio_listen_tcp("127.0.0.1", 0, 16);
    ASSERT_GE(l, 0);
    int port = local_port(l);
    ASSERT_GT(port, 0);
    for (int flags : {int(SOCK_CLOEXEC), 0}) {
        const char *what = flags ? "SOCK_CLOEXEC" : "no flags";
        std::atomic<int> peer_port{-1};
        kio_task *acc = kt::spawn([&, flags] {
            sockaddr_in from;
            socklen_t fl = sizeof from;
            int fd = kio_accept(l, reinterpret_cast<sockaddr *>(&from), &fl, flags);
            if (fd >= 0) peer_port = ntohs(from.sin_port);
            return intptr_t(fd);
        });
        kio_sleep(20 * kMs);  // parked in accept
        int c = kio_socket(AF_INET, SOCK_STREAM, 0);
        ASSERT_GE(c, 0);
        sockaddr_in to = loop4(port);
        EXPECT_EQ(kio_connect(c, reinterpret_cast<sockaddr *>(&to), sizeof to), 0);
        int s = int(kt::await_ok(acc));
        ASSERT_GE(s, 0);
        EXPECT_EQ(peer_port.load(), local_port(c)) << what;
        EXPECT_TRUE(is_nonblocking(s)) << what;
        EXPECT_EQ(is_cloexec(s), flags != 0) << what;
        EXPECT_EQ(kio_write(c, "x", 1), 1);
        char ch = 0;
        EXPECT_EQ(kio_read(s, &ch, 1), 1);
        EXPECT_EQ(ch, 'x');
        kio_close(c);
        kio_close(s);
    }
    // Accept with addr/addrlen NULL, when a connection is already queued.
    int c = kio_socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in to = loop4(port);
    EXPECT_EQ(kio_connect(c, reinterpret_cast<sockaddr *>(&to), sizeof to), 0);
    int s = kio_accept(l, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    EXPECT_GE(s, 0);
    kio_close(s);
    kio_close(c);
    kio_close(l);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST_P(SocketIo, ConnectSucceedsAndIsRefusedByAClosedPort) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int l = kio_listen_tcp("127.0.0.1", 0, 16);
    ASSERT_GE(l, 0);
    sockaddr_in to = loop4(local_port(l));
    kio_task *t = kt::spawn([&] {
        int c = kio_socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0) return intptr_t(c);
        int r = kio_connect(c, reinterpret_cast<sockaddr *>(&to), sizeof to);
        kio_close(c);
        return intptr_t(r);
    });
    EXPECT_EQ(kt::await_ok(t), 0);
    int holder = -1;
    int port = refusing_port(&holder);
    ASSERT_GT(port, 0);
    sockaddr_in closed = loop4(port);
    kio_task *t2 = kt::spawn([&] {
        int c = kio_socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0) return intptr_t(c);
        int r = kio_connect(c, reinterpret_cast<sockaddr *>(&closed), sizeof closed);
        kio_close(c);
        return intptr_t(r);
    });
    EXPECT_EQ(kt::await_ok(t2), -ECONNREFUSED);
    close(holder);
    kio_close(l);
    EXPECT_EQ(rt.destroy(), 0);
}

// connect(2) on a Unix socket fails with EAGAIN when the listener's backlog
// is full: the socket stays unconnected, so kio_connect must say so (on a
// fiber it used to wait for writability and report success).
TEST_P(SocketIo, ConnectToAFullUnixBacklogIsEagain) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ASSERT_GE(l, 0);
    sockaddr_un a;
    std::memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "kio-eagain-%d-%u", int(getpid()), GetParam());
    socklen_t alen = socklen_t(offsetof(sockaddr_un, sun_path) + 1 + std::strlen(a.sun_path + 1));
    ASSERT_EQ(bind(l, reinterpret_cast<sockaddr *>(&a), alen), 0);
    ASSERT_EQ(listen(l, 0), 0);
    auto connect_until_refused = [&](std::vector<int> &socks) {
        for (int i = 0; i < 8; i++) {
            int c = kio_socket(AF_UNIX, SOCK_STREAM, 0);
            if (c < 0) return c;
            socks.push_back(c);
            int r = kio_connect(c, reinterpret_cast<sockaddr *>(&a), alen);
            if (r != 0) return r;
            sockaddr_un peer;
            socklen_t pl = sizeof peer;
            if (getpeername(c, reinterpret_cast<sockaddr *>(&peer), &pl) != 0) return -1000 - errno;
        }
        return 0;
    };
    std::vector<int> socks;
    EXPECT_EQ(connect_until_refused(socks), -EAGAIN) << "on a fiber";
    for (int c : socks) kio_close(c);
    socks.clear();
    // Drain the backlog, then the same from a plain thread.
    for (;;) {
        int c = accept4(l, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) break;
        close(c);
    }
    std::thread([&] { EXPECT_EQ(connect_until_refused(socks), -EAGAIN) << "on a plain thread"; }).join();
    for (int c : socks) kio_close(c);
    close(l);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST_P(SocketIo, PollReportsReadableWritableAndBoth) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    int r = kio_poll(sv[0], POLLOUT, 0);
    EXPECT_GT(r, 0);
    EXPECT_TRUE(r & POLLOUT);
    EXPECT_FALSE(r & POLLIN);
    r = kio_poll(sv[0], POLLIN | POLLOUT, 0);
    EXPECT_EQ(r & (POLLIN | POLLOUT), POLLOUT);
    ASSERT_EQ(kio_write(sv[1], "x", 1), 1);
    r = kio_poll(sv[0], POLLIN, 0);
    EXPECT_EQ(r & (POLLIN | POLLOUT), POLLIN);
    r = kio_poll(sv[0], POLLIN | POLLOUT, 0);
    EXPECT_EQ(r & (POLLIN | POLLOUT), POLLIN | POLLOUT);
    // Parked until readable.
    char ch;
    ASSERT_EQ(kio_read(sv[0], &ch, 1), 1);
    kio_task *t = kt::spawn([&] { return intptr_t(kio_poll(sv[0], POLLIN, 0)); });
    kio_sleep(20 * kMs);
    ASSERT_EQ(kio_write(sv[1], "y", 1), 1);
    r = int(kt::await_ok(t));
    EXPECT_GT(r, 0);
    EXPECT_TRUE(r & POLLIN);
    // POLLHUP (with POLLIN) when the peer goes away.
    kio_close(sv[1]);
    r = kio_poll(sv[0], POLLIN, 0);
    EXPECT_GT(r, 0);
    EXPECT_TRUE(r & (POLLHUP | POLLIN));
    kio_close(sv[0]);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST_P(SocketIo, PollForBothParksUntilEitherDirectionIsReady) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    ASSERT_GT(fill_send_buffer(sv[0]), 0u);  // sv[0]: neither readable nor writable
    ASSERT_EQ(kio_poll(sv[0], POLLIN | POLLOUT, kio_now() + 20 * kMs), -ETIMEDOUT);

    // Readable first.
    kio_task *t = kt::spawn([&] { return intptr_t(kio_poll(sv[0], POLLIN | POLLOUT, 0)); });
    kio_sleep(20 * kMs);
    uint64_t t0 = kio_now();
    ASSERT_EQ(kio_write(sv[1], "z", 1), 1);
    int r = int(kt::await_ok(t));
    EXPECT_LT(kt::since(t0), kt::prompt(1 * kSec));
    EXPECT_GT(r, 0);
    EXPECT_TRUE(r & POLLIN);
    char ch;
    ASSERT_EQ(kio_read(sv[0], &ch, 1), 1);

    // Then writable: the peer drains what sv[0] sent.
    t = kt::spawn([&] { return intptr_t(kio_poll(sv[0], POLLIN | POLLOUT, 0)); });
    kio_sleep(20 * kMs);
    t0 = kio_now();
    EXPECT_GT(drain(sv[1]), 0u);
    r = int(kt::await_ok(t));
    EXPECT_LT(kt::since(t0), kt::prompt(1 * kSec));
    EXPECT_GT(r, 0);
    EXPECT_TRUE(r & POLLOUT);
    EXPECT_FALSE(r & POLLIN);
    kio_close(sv[0]);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST_P(SocketIo, ReadReturnsZeroAfterPeerShutdownOrClose) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    // Unix stream: parked reader, peer shuts down its write side.
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    kio_task *t = kt::spawn([&] {
        char b[8];
        return intptr_t(kio_read(sv[0], b, sizeof b));
    });
    kio_sleep(20 * kMs);
    ASSERT_EQ(shutdown(sv[1], SHUT_WR), 0);
    EXPECT_EQ(kt::await_ok(t), 0);
    char b[8];
    EXPECT_EQ(kio_read(sv[0], b, sizeof b), 0);  // stays at EOF
    EXPECT_EQ(kio_send(sv[1], "ok", 2, 0), -EPIPE);  // after SHUT_WR
    kio_close(sv[0]);
    kio_close(sv[1]);

    // TCP: parked reader, peer closes with kio_close.
    int c, s;
    ASSERT_TRUE(tcp_pair(&c, &s));
    t = kt::spawn([&] {
        char buf[8];
        ssize_t n = kio_recv(c, buf, sizeof buf, 0);
        if (n != 3) return intptr_t(-1000 + n);
        return intptr_t(kio_read(c, buf, sizeof buf));  // then EOF
    });
    kio_sleep(20 * kMs);
    ASSERT_EQ(kio_write(s, "bye", 3), 3);
    ASSERT_EQ(kio_close(s), 0);
    EXPECT_EQ(kt::await_ok(t), 0);
    kio_close(c);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST_P(SocketIo, PeerResetGivesEconnresetOrEpipe) {
    IgnoreSigpipe ignore;  // kio_write is write(2): a reset peer may raise SIGPIPE
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    linger lg{1, 0};
    // A parked reader is woken by the reset.
    {
        int c, s;
        ASSERT_TRUE(tcp_pair(&c, &s));
        kio_task *t = kt::spawn([&] {
            char buf[8];
            return intptr_t(kio_read(c, buf, sizeof buf));
        });
        kio_sleep(20 * kMs);
        ASSERT_EQ(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
        uint64_t t0 = kio_now();
        ASSERT_EQ(kio_close(s), 0);  // RST
        EXPECT_EQ(kt::await_ok(t), -ECONNRESET);
        EXPECT_LT(kt::since(t0), kt::prompt(1 * kSec));
        kio_close(c);
    }
    // Writes after the reset fail (no hang, no crash).
    {
        int c, s;
        ASSERT_TRUE(tcp_pair(&c, &s));
        ASSERT_EQ(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
        ASSERT_EQ(kio_close(s), 0);
        kio_sleep(10 * kMs);
        static char buf[4096];
        ssize_t r = 0;
        for (int i = 0; i < 100 && r >= 0; i++) r = kio_write(c, buf, sizeof buf);
        EXPECT_TRUE(r == -ECONNRESET || r == -EPIPE) << r;
        r = kio_send(c, buf, sizeof buf, 0);
        EXPECT_TRUE(r == -ECONNRESET || r == -EPIPE) << r;
        kio_close(c);
    }
    // A writer parked on a full buffer is woken by the reset.
    {
        int c, s;
        ASSERT_TRUE(tcp_pair(&c, &s));
        ASSERT_GT(fill_send_buffer(c), 0u);
        kio_task *t = kt::spawn([&] {
            static char buf[65536];
            ssize_t r = 0;
            while (r >= 0) r = kio_send(c, buf, sizeof buf, 0);
            return intptr_t(r);
        });
        kio_sleep(30 * kMs);
        ASSERT_EQ(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
        uint64_t t0 = kio_now();
        ASSERT_EQ(kio_close(s), 0);
        intptr_t r = kt::await_ok(t);
        EXPECT_TRUE(r == -ECONNRESET || r == -EPIPE) << r;
        EXPECT_LT(kt::since(t0), kt::prompt(1 * kSec));
        kio_close(c);
    }
    EXPECT_EQ(rt.destroy(), 0);
}

// Two readers and two writers on one socket: all data accounted for exactly
// (a byte histogram), nobody hangs.
TEST_P(SocketIo, TwoReadersAndTwoWritersShareOneSocket) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    const size_t per_writer = volume(2u << 20);
    std::array<std::array<uint64_t, 256>, 2> expect{}, got{};
    std::array<uint64_t, 2> wrote{}, read_bytes{};
    std::array<kio_task *, 2> writers{}, readers{};
    for (int i = 0; i < 2; i++) {
        writers[size_t(i)] = kt::spawn([&, i] {
            std::mt19937 g(uint32_t(100 + i));
            std::vector<unsigned char> buf(9000);
            size_t left = per_writer;
            while (left > 0) {
                size_t n = std::min(left, size_t(1 + g() % buf.size()));
                for (size_t k = 0; k < n; k++) {
                    buf[k] = static_cast<unsigned char>(g());
                    expect[size_t(i)][buf[k]]++;
                }
                ssize_t w = write_all(sv[0], buf.data(), n);
                if (w != ssize_t(n)) return intptr_t(w < 0 ? w : -1);
                wrote[size_t(i)] += n;
                left -= n;
            }
            return intptr_t(0);
        });
        readers[size_t(i)] = kt::spawn([&, i] {
            std::vector<unsigned char> buf(3000 + 1000 * size_t(i));
            for (;;) {
                ssize_t n = kio_read(sv[1], buf.data(), buf.size());
                if (n < 0) return intptr_t(n);
                if (n == 0) return intptr_t(0);
                read_bytes[size_t(i)] += uint64_t(n);
                for (ssize_t k = 0; k < n; k++) got[size_t(i)][buf[size_t(k)]]++;
            }
        });
    }
    EXPECT_EQ(kt::await_ok(writers[0]), 0);
    EXPECT_EQ(kt::await_ok(writers[1]), 0);
    ASSERT_EQ(shutdown(sv[0], SHUT_WR), 0);  // readers see EOF once drained
    EXPECT_EQ(kt::await_ok(readers[0]), 0);
    EXPECT_EQ(kt::await_ok(readers[1]), 0);
    EXPECT_EQ(wrote[0] + wrote[1], 2 * per_writer);
    EXPECT_EQ(read_bytes[0] + read_bytes[1], 2 * per_writer);
    for (size_t v = 0; v < 256; v++) ASSERT_EQ(got[0][v] + got[1][v], expect[0][v] + expect[1][v]) << "byte " << v;
    kio_close(sv[0]);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST_P(SocketIo, CloseWakesFibersParkedInReadWriteAndPollWithEbadf) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    int fd = sv[0];
    ASSERT_GT(fill_send_buffer(fd), 0u);
    std::atomic<int> parked{0};
    kio_task *r = kt::spawn([&] {
        char b[16];
        parked++;
        return intptr_t(kio_read(fd, b, sizeof b));
    });
    kio_task *w = kt::spawn([&] {
        static char b[4096];
        parked++;
        return intptr_t(kio_write(fd, b, sizeof b));
    });
    kio_task *p = kt::spawn([&] {
        parked++;
        return intptr_t(kio_poll(fd, POLLIN, 0));
    });
    ASSERT_TRUE(kt::wait_flag(parked, 3));
    kio_sleep(30 * kMs);  // all three are parked
    uint64_t t0 = kio_now();
    EXPECT_EQ(kio_close(fd), 0);
    EXPECT_EQ(kt::await_ok(r), -EBADF);
    EXPECT_EQ(kt::await_ok(w), -EBADF);
    EXPECT_EQ(kt::await_ok(p), -EBADF);
    EXPECT_LT(kt::since(t0), kt::prompt(1 * kSec));
    // A second close of the same number fails.
    EXPECT_EQ(kio_close(fd), -EBADF);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

// A socketpair made outside kio in blocking mode: kio switches it to
// non-blocking on first use, so a fiber parks instead of blocking its worker.
TEST_P(SocketIo, ForeignBlockingSocketpairIsSwitchedToNonblocking) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv, /*blocking=*/true));
    ASSERT_FALSE(is_nonblocking(sv[0]));
    // Safety net: if the read blocked the worker, a plain thread unblocks it.
    Later rescue(1500 * kMs, [&] { (void)!write(sv[1], "late", 4); });
    std::atomic<int> started{0};
    kio_task *t = kt::spawn([&] {
        char b[8] = {0};
        started = 1;
        ssize_t n = kio_read(sv[0], b, sizeof b);
        return intptr_t(n == 4 && std::memcmp(b, "ping", 4) == 0 ? 4 : (n < 0 ? n : -1000 - n));
    });
    ASSERT_TRUE(kt::wait_flag(started, 1));
    uint64_t t0 = kio_now();
    kio_sleep(20 * kMs);
    EXPECT_EQ(kio_write(sv[1], "ping", 4), 4);
    EXPECT_EQ(kt::await_ok(t), 4);
    EXPECT_LT(kt::since(t0), kt::prompt(1 * kSec));
    rescue.cancel();
    EXPECT_TRUE(is_nonblocking(sv[0]));
    EXPECT_TRUE(is_nonblocking(sv[1]));
    // A write larger than the buffer parks and completes.
    std::vector<unsigned char> big(2u << 20), in(big.size());
    random_bytes(big, 3);
    kio_task *wt = kt::spawn([&] { return intptr_t(write_all(sv[1], big.data(), big.size())); });
    EXPECT_EQ(read_full(sv[0], in.data(), in.size()), ssize_t(in.size()));
    EXPECT_EQ(kt::await_ok(wt), intptr_t(big.size()));
    EXPECT_TRUE(in == big);
    kio_close(sv[0]);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

// 200 concurrent echo connections: each client writes N random bytes and
// verifies the echo.
TEST_P(SocketIo, TwoHundredConcurrentEchoConnections) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    constexpr int kConns = 200;
    const size_t kBytes = volume(64 * 1024);
    int l = kio_listen_tcp("127.0.0.1", 0, 1024);
    ASSERT_GE(l, 0);
    int port = local_port(l);
    std::atomic<int> handler_errors{0};
    kio_task *server = kt::spawn([&] {
        std::vector<kio_task *> handlers;
        for (int i = 0; i < kConns; i++) {
            int fd = kio_accept(l, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) return intptr_t(fd);
            handlers.push_back(kt::spawn([&handler_errors, fd] {
                std::vector<char> buf(4096);
                for (;;) {
                    ssize_t n = kio_read(fd, buf.data(), buf.size());
                    if (n == 0) break;
                    if (n < 0 || write_all(fd, buf.data(), size_t(n)) != n) {
                        handler_errors++;
                        break;
                    }
                }
                kio_close(fd);
                return intptr_t(0);
            }));
        }
        for (kio_task *h : handlers)
            if (h) kio_await(h, nullptr);
        return intptr_t(0);
    });
    std::vector<kio_task *> clients;
    for (int i = 0; i < kConns; i++) {
        clients.push_back(kt::spawn([=] {
            int fd;
            if (i % 2) {
                fd = kio_dial_tcp("127.0.0.1", port, kio_now() + 30 * kSec);
                if (fd < 0) return intptr_t(-1000000 + fd);
            } else {
                fd = kio_socket(AF_INET, SOCK_STREAM, 0);
                sockaddr_in to = loop4(port);
                int c = kio_connect(fd, reinterpret_cast<sockaddr *>(&to), sizeof to);
                if (c < 0) {
                    kio_close(fd);
                    return intptr_t(-2000000 + c);
                }
            }
            auto out = std::make_shared<std::vector<unsigned char>>(kBytes);
            random_bytes(*out, uint32_t(i));
            kio_task *w = kt::spawn([fd, out] {
                ssize_t r = write_all(fd, out->data(), out->size());
                shutdown(fd, SHUT_WR);
                return intptr_t(r);
            });
            std::vector<unsigned char> in(kBytes);
            ssize_t n = read_full(fd, in.data(), in.size());
            char extra;
            ssize_t eof = kio_read(fd, &extra, 1);
            void *wr = nullptr;
            kio_await(w, &wr);
            kio_close(fd);
            if (vi(wr) != intptr_t(kBytes)) return intptr_t(-3000000 + vi(wr));
            if (n != ssize_t(kBytes)) return intptr_t(-4000000 + n);
            if (eof != 0) return intptr_t(-5000000 + eof);
            return intptr_t(in == *out ? 0 : -6);
        }));
    }
    int bad = 0;
    for (kio_task *c : clients) {
        intptr_t r = kt::await_ok(c);
        if (r != 0 && bad++ < 5) ADD_FAILURE() << "client failed: " << r;
    }
    EXPECT_EQ(bad, 0);
    EXPECT_EQ(kt::await_ok(server), 0);
    EXPECT_EQ(handler_errors.load(), 0);
    kio_close(l);
    EXPECT_EQ(rt.destroy(), 0);
}

// ===========================================================================
// Errors

namespace {

struct OpRc {
    const char *name;
    long rc;
};

// Every descriptor operation on fd (from the calling fiber or thread).
std::vector<OpRc> every_op(int fd) {
    char buf[8] = {0};
    iovec iov{buf, sizeof buf};
    msghdr msg;
    std::memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    sockaddr_in to = loop4(9);
    sockaddr_in from;
    socklen_t fl = sizeof from;
    std::vector<OpRc> v;
    v.push_back({"read", long(kio_read(fd, buf, sizeof buf))});
    v.push_back({"write", long(kio_write(fd, buf, sizeof buf))});
    v.push_back({"readv", long(kio_readv(fd, &iov, 1))});
    v.push_back({"writev", long(kio_writev(fd, &iov, 1))});
    v.push_back({"recv", long(kio_recv(fd, buf, sizeof buf, 0))});
    v.push_back({"send", long(kio_send(fd, buf, sizeof buf, 0))});
    v.push_back({"recvfrom", long(kio_recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr *>(&from), &fl))});
    v.push_back({"sendto", long(kio_sendto(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr *>(&to), sizeof to))});
    v.push_back({"recvmsg", long(kio_recvmsg(fd, &msg, 0))});
    v.push_back({"sendmsg", long(kio_sendmsg(fd, &msg, 0))});
    v.push_back({"accept", long(kio_accept(fd, nullptr, nullptr, 0))});
    v.push_back({"connect", long(kio_connect(fd, reinterpret_cast<sockaddr *>(&to), sizeof to))});
    v.push_back({"poll", long(kio_poll(fd, POLLIN, 0))});
    v.push_back({"pread", long(kio_pread(fd, buf, sizeof buf, 0))});
    v.push_back({"pwrite", long(kio_pwrite(fd, buf, sizeof buf, 0))});
    v.push_back({"fsync", long(kio_fsync(fd))});
    return v;
}

void expect_all_ebadf(const std::vector<OpRc> &v, const char *what) {
    for (const OpRc &o : v) EXPECT_EQ(o.rc, -EBADF) << "kio_" << o.name << " on " << what;
}

}  // namespace

TEST(SocketErrors, NegativeFdIsEbadfForEveryOperation) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    expect_all_ebadf(every_op(-1), "fd -1 (fiber)");
    expect_all_ebadf(every_op(-12345), "fd -12345 (fiber)");
    EXPECT_EQ(kio_close(-1), -EBADF);
    std::vector<OpRc> v;
    std::thread([&] { v = every_op(-1); }).join();
    expect_all_ebadf(v, "fd -1 (plain thread)");
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(SocketErrors, NeverOpenedLargeFdIsEbadfForEveryOperation) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    for (int fd : {100000, 1 << 22, 5000000, INT_MAX}) {
        std::string what = "never-opened fd " + std::to_string(fd);
        expect_all_ebadf(every_op(fd), (what + " (fiber)").c_str());
        std::vector<OpRc> v;
        std::thread([&] { v = every_op(fd); }).join();
        expect_all_ebadf(v, (what + " (plain thread)").c_str());
        EXPECT_EQ(kio_close(fd), -EBADF) << what;
    }
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(SocketErrors, FdClosedWithKioCloseIsEbadfForEveryOperation) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    // A kio socket that was used (registered with the poller), then closed.
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    ASSERT_EQ(kio_poll(sv[0], POLLIN, kio_now() + 5 * kMs), -ETIMEDOUT);
    ASSERT_EQ(kio_close(sv[0]), 0);
    expect_all_ebadf(every_op(sv[0]), "a kio_close'd socket (fiber)");
    std::vector<OpRc> v;
    std::thread([&] { v = every_op(sv[0]); }).join();
    expect_all_ebadf(v, "a kio_close'd socket (plain thread)");
    EXPECT_EQ(kio_close(sv[0]), -EBADF);
    kio_close(sv[1]);
    // A fresh kio_socket closed without any use.
    int s = kio_socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(s, 0);
    ASSERT_EQ(kio_close(s), 0);
    expect_all_ebadf(every_op(s), "a kio_close'd unused socket");
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(SocketErrors, InvalidArgumentsAreEinval) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    EXPECT_EQ(kio_recvmsg(sv[0], nullptr, 0), -EINVAL);
    EXPECT_EQ(kio_sendmsg(sv[0], nullptr, 0), -EINVAL);
    {  // a NULL vector, or a NULL buffer with a length, as kio_readv/kio_writev
        msghdr m{};
        m.msg_iovlen = 1;
        EXPECT_EQ(kio_recvmsg(sv[0], &m, 0), -EINVAL);
        EXPECT_EQ(kio_sendmsg(sv[0], &m, 0), -EINVAL);
        iovec v{nullptr, 5};
        m.msg_iov = &v;
        EXPECT_EQ(kio_recvmsg(sv[0], &m, 0), -EINVAL);
        EXPECT_EQ(kio_sendmsg(sv[0], &m, 0), -EINVAL);
    }
    EXPECT_EQ(kio_poll(sv[0], 0, 0), -EINVAL);
    EXPECT_EQ(kio_poll(sv[0], 0, kio_now() + kSec), -EINVAL);
    EXPECT_EQ(kio_connect(sv[0], nullptr, 0), -EINVAL);
    int l = kio_listen_tcp("127.0.0.1", 0, 4);
    ASSERT_GE(l, 0);
    EXPECT_EQ(kio_accept(l, nullptr, nullptr, 1), -EINVAL);
    EXPECT_EQ(kio_accept(l, nullptr, nullptr, MSG_PEEK), -EINVAL);
    EXPECT_EQ(kio_accept(l, nullptr, nullptr, ~0), -EINVAL);
    // A NULL buffer with a nonzero length is -EINVAL, not the kernel's -EFAULT.
    auto null_buffers = [&] {
        sockaddr_in to = loop4(9);
        EXPECT_EQ(kio_read(sv[0], nullptr, 10), -EINVAL);
        EXPECT_EQ(kio_write(sv[0], nullptr, 10), -EINVAL);
        EXPECT_EQ(kio_recv(sv[0], nullptr, 10, 0), -EINVAL);
        EXPECT_EQ(kio_send(sv[0], nullptr, 10, 0), -EINVAL);
        EXPECT_EQ(kio_recvfrom(sv[0], nullptr, 10, 0, nullptr, nullptr), -EINVAL);
        EXPECT_EQ(kio_sendto(sv[0], nullptr, 10, 0, reinterpret_cast<sockaddr *>(&to), sizeof to), -EINVAL);
        EXPECT_EQ(kio_write(sv[0], nullptr, 0), 0);  // no bytes: as write(2)
        char one[1];
        iovec holes[2] = {{one, 1}, {nullptr, 4}};  // also inside a vector
        EXPECT_EQ(kio_readv(sv[0], holes, 2), -EINVAL);
        EXPECT_EQ(kio_writev(sv[0], holes, 2), -EINVAL);
    };
    null_buffers();
    // The same from a plain thread.
    std::thread([&] {
        null_buffers();
        EXPECT_EQ(kio_recvmsg(sv[0], nullptr, 0), -EINVAL);
        EXPECT_EQ(kio_sendmsg(sv[0], nullptr, 0), -EINVAL);
        EXPECT_EQ(kio_poll(sv[0], 0, 0), -EINVAL);
        EXPECT_EQ(kio_accept(l, nullptr, nullptr, 1), -EINVAL);
    }).join();
    // A system call's own error passes through (not a socket: ENOTSOCK).
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    char b[4];
    EXPECT_EQ(kio_recv(p[0], b, sizeof b, 0), -ENOTSOCK);
    EXPECT_EQ(kio_accept(p[0], nullptr, nullptr, 0), -ENOTSOCK);
    kio_close(p[0]);
    kio_close(p[1]);
    kio_close(l);
    kio_close(sv[0]);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

// A kio_write on a number that is not open fails with -EBADF, and must not
// remember "not a socket" for the number: a socket that gets it next would
// then be written with write(2) and raise SIGPIPE instead of -EPIPE.
TEST(SocketErrors, FailedWriteOnAFreeNumberDoesNotMakeItsNextSocketRaiseSigpipe) {
    int probe = kio_open("/dev/null", O_RDONLY, 0);  // a number with fresh state
    ASSERT_GE(probe, 0);
    ASSERT_EQ(close(probe), 0);  // not through kio: nothing marks it closed
    std::thread([&] {
        // Block SIGPIPE on this thread: one raised by write(2) stays pending.
        sigset_t pipe_set, old;
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
        EXPECT_EQ(kio_write(probe, "x", 1), -EBADF);
        int sv[2];
        ASSERT_TRUE(unix_pair(sv));
        int mine = sv[0] == probe ? sv[0] : sv[1] == probe ? sv[1] : -1;
        if (mine < 0) {
            ADD_FAILURE() << "the kernel did not reuse number " << probe;
            close(sv[0]);
            close(sv[1]);
        } else {
            close(mine == sv[0] ? sv[1] : sv[0]);
            EXPECT_EQ(kio_write(mine, "x", 1), -EPIPE);
            timespec zero{0, 0};
            EXPECT_NE(sigtimedwait(&pipe_set, nullptr, &zero), SIGPIPE) << "kio_write raised SIGPIPE";
            close(mine);
        }
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }).join();
}

// ===========================================================================
// Deadlines

// ---------------------------------------------------------------------------
// Drained reads: after a short TCP read, kio parks the next read without a
// system call until an event comes in (fd.h). These cases must not hang: each
// read is bounded by a deadline scope, so a missed edge fails with -ETIMEDOUT.

namespace {

// kio_read under a deadline scope of `ns` from now.
ssize_t read_within(int fd, void *buf, size_t len, uint64_t ns) {
    uint64_t prev = kio_deadline_set(kio_now() + ns);
    ssize_t n = kio_read(fd, buf, len);
    kio_deadline_set(prev);
    return n;
}

// Parks a fiber on fd once (a read that times out), so that fd's events go
// through a poller from then on.
void register_by_parking(int fd) {
    kio_task *p = kt::spawn([fd] {
        char b;
        return intptr_t(read_within(fd, &b, 1, 20 * kMs));
    });
    EXPECT_EQ(kt::await_ok(p), -ETIMEDOUT);
}

// Waits (raw poll) until fd has `n` bytes queued, or 2 s.
bool queued_at_least(int fd, size_t n) {
    char buf[256];
    for (int i = 0; i < 2000; i++) {
        ssize_t k = recv(fd, buf, sizeof buf < n ? sizeof buf : n, MSG_PEEK | MSG_DONTWAIT);
        if (k >= ssize_t(n)) return true;
        usleep(1000);
    }
    return false;
}

}  // namespace

// Data that arrives after a short read is read by the next call.
TEST_P(SocketIo, DrainedReadSeesLaterData) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int c, s;
    ASSERT_TRUE(tcp_pair(&c, &s));
    ASSERT_EQ(send(c, "ab", 2, 0), 2);
    kio_task *t = kt::spawn([&] {
        char buf[4096];
        ssize_t n = read_within(s, buf, sizeof buf, 5 * kSec);
        if (n != 2) return intptr_t(-1000 + n);
        // Short: the next read parks at once, and the later data wakes it.
        n = read_within(s, buf, sizeof buf, 5 * kSec);
        if (n != 2 || std::memcmp(buf, "cd", 2) != 0) return intptr_t(-2000 + n);
        return intptr_t(1);
    });
    Later late(30 * kMs, [&] { (void)!send(c, "cd", 2, 0); });
    EXPECT_EQ(kt::await_ok(t), 1);
    kio_close(c);
    kio_close(s);
    EXPECT_EQ(rt.destroy(), 0);
}

// A read that fills its buffer says nothing about the queue: the next read
// returns the rest at once.
TEST_P(SocketIo, FullReadDoesNotPark) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int c, s;
    ASSERT_TRUE(tcp_pair(&c, &s));
    ASSERT_EQ(send(c, "0123456789abcdefghij", 20, 0), 20);
    ASSERT_TRUE(queued_at_least(s, 20));
    kio_task *t = kt::spawn([&] {
        char buf[10];
        ssize_t n = read_within(s, buf, sizeof buf, 5 * kSec);
        if (n != 10 || std::memcmp(buf, "0123456789", 10) != 0) return intptr_t(-1000 + n);
        n = read_within(s, buf, sizeof buf, 5 * kSec);
        if (n != 10 || std::memcmp(buf, "abcdefghij", 10) != 0) return intptr_t(-2000 + n);
        return intptr_t(1);
    });
    EXPECT_EQ(kt::await_ok(t), 1);
    kio_close(c);
    kio_close(s);
    EXPECT_EQ(rt.destroy(), 0);
}

// Data and the peer's FIN already queued when the first read comes back
// short: the next read sees EOF (no further edge will come), whether or not
// the socket was registered with a poller before the data arrived.
TEST_P(SocketIo, ShortReadBeforeEofStillSeesEof) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    for (int registered = 0; registered < 2; registered++) {
        int c, s;
        ASSERT_TRUE(tcp_pair(&c, &s));
        if (registered) register_by_parking(s);  // before the data and the FIN arrive
        ASSERT_EQ(send(c, "xyz", 3, 0), 3);
        ASSERT_EQ(shutdown(c, SHUT_WR), 0);
        ASSERT_TRUE(queued_at_least(s, 3));
        kio_sleep(20 * kMs);  // the FIN too, and the event, if registered
        kio_task *t = kt::spawn([&] {
            char buf[4096];
            ssize_t n = read_within(s, buf, sizeof buf, 5 * kSec);
            if (n != 3) return intptr_t(-1000 + n);
            return intptr_t(read_within(s, buf, sizeof buf, 5 * kSec));
        });
        EXPECT_EQ(kt::await_ok(t), 0) << "registered " << registered;
        kio_close(c);
        kio_close(s);
    }
    EXPECT_EQ(rt.destroy(), 0);
}

// Urgent (out-of-band) data stops a TCP read early with bytes still queued;
// every in-band byte must still arrive (the event that reported them came
// before the short read, so only the unusual-event rule can save the rest).
TEST_P(SocketIo, UrgentDataDoesNotStrandInBandBytes) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    for (int registered = 0; registered < 2; registered++) {
        int c, s;
        ASSERT_TRUE(tcp_pair(&c, &s));
        if (registered) register_by_parking(s);
        ASSERT_EQ(send(c, "ab", 2, 0), 2);
        ASSERT_EQ(send(c, "!", 1, MSG_OOB), 1);
        ASSERT_EQ(send(c, "cd", 2, 0), 2);
        ASSERT_TRUE(queued_at_least(s, 2));
        kio_sleep(20 * kMs);
        kio_task *t = kt::spawn([&] {
            char got[8];
            size_t have = 0;
            while (have < 4) {
                char buf[4096];
                ssize_t n = read_within(s, buf, sizeof buf, 2 * kSec);
                if (n <= 0) return intptr_t(-1000 + n - 100 * intptr_t(have));
                for (ssize_t i = 0; i < n && have < sizeof got; i++) got[have++] = buf[i];
            }
            return intptr_t(have == 4 && std::memcmp(got, "abcd", 4) == 0 ? 1 : -3);
        });
        EXPECT_EQ(kt::await_ok(t), 1) << "registered " << registered;
        kio_close(c);
        kio_close(s);
    }
    EXPECT_EQ(rt.destroy(), 0);
}

// A descriptor number reused after kio_close starts fresh: data already
// queued on the new socket is read at once, even though the old socket's
// last read was short. (The new socket's first wait registers it, and the
// registration reports data already queued, so a stale drained mark would
// cost a poller round trip, not a hang.)
TEST_P(SocketIo, ReusedNumberForgetsDrainedState) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int c, s;
    ASSERT_TRUE(tcp_pair(&c, &s));
    ASSERT_EQ(send(c, "q", 1, 0), 1);
    kio_task *t = kt::spawn([&] {
        char buf[64];
        return intptr_t(read_within(s, buf, sizeof buf, 5 * kSec));
    });
    ASSERT_EQ(kt::await_ok(t), 1);  // short: s is drained
    int old = s;
    ASSERT_EQ(kio_close(s), 0);
    kio_close(c);
    // The lowest free numbers go to the new pair: one of them is `old`.
    int c2, s2;
    ASSERT_TRUE(tcp_pair(&c2, &s2));
    int reader = s2 == old ? s2 : c2, writer = s2 == old ? c2 : s2;
    if (reader != old) std::printf("note: number %d was not reused (%d, %d)\n", old, c2, s2);
    ASSERT_EQ(send(writer, "fresh", 5, 0), 5);
    ASSERT_TRUE(queued_at_least(reader, 5));
    t = kt::spawn([&] {
        char buf[64];
        ssize_t n = read_within(reader, buf, sizeof buf, 2 * kSec);
        return intptr_t(n == 5 && std::memcmp(buf, "fresh", 5) == 0 ? 1 : n);
    });
    EXPECT_EQ(kt::await_ok(t), 1);
    kio_close(c2);
    kio_close(s2);
    EXPECT_EQ(rt.destroy(), 0);
}

class SocketDeadline : public ::testing::TestWithParam<unsigned> {};
INSTANTIATE_TEST_SUITE_P(Threads, SocketDeadline, ::testing::Values(1u, 2u), threads_name);

namespace {

// Runs op under a deadline scope of `ms` in a new task; checks -ETIMEDOUT,
// the timing bounds and that the scope is restored; returns nothing.
template <class Op>
void expect_times_out(const char *what, uint64_t ms, Op op) {
    kio_task *t = kt::spawn([&] {
        uint64_t t0 = kio_now();
        uint64_t d = t0 + ms * kMs;
        uint64_t prev = kio_deadline_set(d);
        long r = op();
        uint64_t end = kio_now();
        uint64_t mine = kio_deadline_set(prev);
        EXPECT_EQ(prev, 0u) << what;
        EXPECT_EQ(mine, d) << what;
        EXPECT_EQ(kio_deadline_get(), 0u) << what;
        EXPECT_GE(end, d) << what << ": returned " << (d - end) / kUs << " us before the deadline";
        EXPECT_LT(end - t0, (d - t0) + kt::prompt(1 * kSec)) << what << ": returned " << (end - d) / kMs << " ms after the deadline";
        return intptr_t(r);
    });
    EXPECT_EQ(kt::await_ok(t), -ETIMEDOUT) << what;
}

// The same on a new plain thread: op under a deadline scope of `ms` there
// gives -ETIMEDOUT within the bounds.
template <class Op>
void expect_times_out_on_plain_thread(const char *what, uint64_t ms, Op op) {
    std::atomic<long> r{1};
    std::atomic<uint64_t> t0{0}, end{0}, d{0};
    std::thread([&] {
        t0 = kio_now();
        d = t0 + ms * kMs;
        kio_deadline_set(d);
        r = op();
        end = kio_now();
        kio_deadline_set(0);
    }).join();
    EXPECT_EQ(r.load(), -ETIMEDOUT) << what;
    expect_deadline_bounds(t0, d, end);
}

}  // namespace

TEST_P(SocketDeadline, ReadAndRecvTimeOutThenTheSocketWorks) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    char b[8];
    expect_times_out("read", 100, [&] { return long(kio_read(sv[0], b, sizeof b)); });
    expect_times_out("recv", 50, [&] { return long(kio_recv(sv[0], b, sizeof b, 0)); });
    iovec iov{b, sizeof b};
    expect_times_out("readv", 50, [&] { return long(kio_readv(sv[0], &iov, 1)); });
    msghdr msg;
    std::memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    expect_times_out("recvmsg", 50, [&] { return long(kio_recvmsg(sv[0], &msg, 0)); });
    // Nothing left behind: a parked reader gets the next data, and data
    // written while nobody waits is read at once.
    kio_task *t = kt::spawn([&] {
        char buf[8] = {0};
        ssize_t n = kio_read(sv[0], buf, sizeof buf);
        return intptr_t(n == 3 && std::memcmp(buf, "abc", 3) == 0 ? 3 : -1);
    });
    kio_sleep(10 * kMs);
    EXPECT_EQ(kio_write(sv[1], "abc", 3), 3);
    EXPECT_EQ(kt::await_ok(t), 3);
    EXPECT_EQ(kio_write(sv[1], "d", 1), 1);
    EXPECT_EQ(kio_read(sv[0], b, sizeof b), 1);
    kio_close(sv[0]);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST_P(SocketDeadline, WriteOnAFullBufferTimesOutThenTheSocketWorks) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    size_t filled = fill_send_buffer(sv[0]);
    ASSERT_GT(filled, 0u);
    static char junk[4096];
    expect_times_out("write", 100, [&] { return long(kio_write(sv[0], junk, sizeof junk)); });
    expect_times_out("send", 50, [&] { return long(kio_send(sv[0], junk, sizeof junk, 0)); });
    iovec iov{junk, sizeof junk};
    expect_times_out("writev", 50, [&] { return long(kio_writev(sv[0], &iov, 1)); });
    // A parked writer completes once the peer drains.
    kio_task *t = kt::spawn([&] { return intptr_t(kio_write(sv[0], junk, sizeof junk)); });
    kio_sleep(10 * kMs);
    size_t got = drain(sv[1]);  // may include some of the parked writer's bytes
    EXPECT_EQ(kt::await_ok(t), intptr_t(sizeof junk));
    got += drain(sv[1]);
    EXPECT_EQ(got, filled + sizeof junk);  // the timed-out writes wrote nothing
    kio_close(sv[0]);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST_P(SocketDeadline, AcceptConnectPollAndUdpTimeOut) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int l = kio_listen_tcp("127.0.0.1", 0, 4);
    ASSERT_GE(l, 0);
    expect_times_out("accept", 100, [&] { return long(kio_accept(l, nullptr, nullptr, 0)); });
    // The listener still accepts afterwards.
    int c = kio_socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in to = loop4(local_port(l));
    EXPECT_EQ(kio_connect(c, reinterpret_cast<sockaddr *>(&to), sizeof to), 0);
    int s = kio_accept(l, nullptr, nullptr, 0);
    EXPECT_GE(s, 0);
    kio_close(s);
    kio_close(c);

    StuckListener stuck;
    ASSERT_TRUE(stuck.open()) << "could not fill a listener's accept queue";
    int c2 = kio_socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sto = loop4(stuck.port);
    expect_times_out("connect", 150, [&] { return long(kio_connect(c2, reinterpret_cast<sockaddr *>(&sto), sizeof sto)); });
    kio_close(c2);

    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    expect_times_out("poll POLLIN (task deadline)", 80, [&] { return long(kio_poll(sv[0], POLLIN, 0)); });
    // kio_poll's own deadline, and the earlier of the two.
    kio_task *t = kt::spawn([&] {
        uint64_t t0 = kio_now(), d = t0 + 60 * kMs;
        int r = kio_poll(sv[0], POLLIN, d);
        expect_deadline_bounds(t0, d, kio_now());
        if (r != -ETIMEDOUT) return intptr_t(r);
        t0 = kio_now();
        d = t0 + 50 * kMs;
        uint64_t prev = kio_deadline_set(d);
        r = kio_poll(sv[0], POLLIN, t0 + 10 * kSec);  // the task deadline is earlier
        expect_deadline_bounds(t0, d, kio_now());
        kio_deadline_set(prev);
        if (r != -ETIMEDOUT) return intptr_t(r);
        t0 = kio_now();
        d = t0 + 40 * kMs;
        prev = kio_deadline_set(t0 + 10 * kSec);
        r = kio_poll(sv[0], POLLIN, d);  // the poll's own deadline is earlier
        expect_deadline_bounds(t0, d, kio_now());
        kio_deadline_set(prev);
        return intptr_t(r);
    });
    EXPECT_EQ(kt::await_ok(t), -ETIMEDOUT);
    // A deadline in the past: fails at once when not ready.
    EXPECT_EQ(kio_poll(sv[0], POLLIN, 1), -ETIMEDOUT);
    ASSERT_EQ(kio_write(sv[1], "q", 1), 1);
    EXPECT_TRUE(kio_poll(sv[0], POLLIN, 0) & POLLIN);
    kio_close(sv[0]);
    kio_close(sv[1]);

    int u = kio_socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in any = loop4(0);
    ASSERT_EQ(bind(u, reinterpret_cast<sockaddr *>(&any), sizeof any), 0);
    char b[8];
    expect_times_out("recvfrom", 60, [&] { return long(kio_recvfrom(u, b, sizeof b, 0, nullptr, nullptr)); });
    kio_close(u);
    kio_close(l);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST_P(SocketDeadline, ExpiredScopeFailsACallThatWouldParkAtOnce) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    kio_task *t = kt::spawn([&] {
        uint64_t prev = kio_deadline_set(kio_now() - 1);  // already passed
        char b[4];
        uint64_t t0 = kio_now();
        ssize_t r1 = kio_read(sv[0], b, sizeof b);  // would park
        uint64_t took = kt::since(t0);
        kio_deadline_set(prev);
        EXPECT_LT(took, kt::prompt(500 * kMs));
        return intptr_t(r1);
    });
    EXPECT_EQ(kt::await_ok(t), -ETIMEDOUT);
    kio_close(sv[0]);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

// ===========================================================================
// Cancellation while parked

class SocketCancel : public ::testing::TestWithParam<unsigned> {};
INSTANTIATE_TEST_SUITE_P(Threads, SocketCancel, ::testing::Values(1u, 2u), threads_name);

namespace {

// Spawns op, lets it park, cancels it: expects -ECANCELED within 1 s.
template <class Op>
void expect_cancel_wakes(const char *what, Op op) {
    std::atomic<int> started{0};
    kio_task *t = kt::spawn([&] {
        started = 1;
        return intptr_t(op());
    });
    ASSERT_TRUE(kt::wait_flag(started, 1)) << what;
    kio_sleep(30 * kMs);  // parked now
    uint64_t t0 = kio_now();
    void *res = nullptr;
    ASSERT_EQ(kio_cancel(t, &res), 0) << what;
    EXPECT_LT(kt::since(t0), kt::prompt(1 * kSec)) << what;
    EXPECT_EQ(vi(res), -ECANCELED) << what;
}

}  // namespace

TEST_P(SocketCancel, CancelWakesReadAcceptConnectPollAndWrite) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    char b[8];
    expect_cancel_wakes("read", [&] { return long(kio_read(sv[0], b, sizeof b)); });
    expect_cancel_wakes("recvmsg", [&] {
        iovec iov{b, sizeof b};
        msghdr m;
        std::memset(&m, 0, sizeof m);
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        return long(kio_recvmsg(sv[0], &m, 0));
    });
    expect_cancel_wakes("poll", [&] { return long(kio_poll(sv[0], POLLIN, 0)); });
    expect_cancel_wakes("poll with deadline", [&] { return long(kio_poll(sv[0], POLLIN, kio_now() + 60 * kSec)); });
    int l = kio_listen_tcp("127.0.0.1", 0, 4);
    ASSERT_GE(l, 0);
    expect_cancel_wakes("accept", [&] { return long(kio_accept(l, nullptr, nullptr, 0)); });
    StuckListener stuck;
    ASSERT_TRUE(stuck.open());
    sockaddr_in sto = loop4(stuck.port);
    int c = kio_socket(AF_INET, SOCK_STREAM, 0);
    expect_cancel_wakes("connect", [&] { return long(kio_connect(c, reinterpret_cast<sockaddr *>(&sto), sizeof sto)); });
    kio_close(c);
    int w[2];
    ASSERT_TRUE(unix_pair(w));
    ASSERT_GT(fill_send_buffer(w[0]), 0u);
    static char junk[4096];
    expect_cancel_wakes("write", [&] { return long(kio_write(w[0], junk, sizeof junk)); });

    // Nothing left behind: the same descriptors work normally afterwards.
    kio_task *t = kt::spawn([&] { return intptr_t(kio_read(sv[0], b, sizeof b)); });
    kio_sleep(10 * kMs);
    EXPECT_EQ(kio_write(sv[1], "ok", 2), 2);
    EXPECT_EQ(kt::await_ok(t), 2);
    int cc = kio_socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in to = loop4(local_port(l));
    kio_task *acc = kt::spawn([&] { return intptr_t(kio_accept(l, nullptr, nullptr, 0)); });
    EXPECT_EQ(kio_connect(cc, reinterpret_cast<sockaddr *>(&to), sizeof to), 0);
    int s = int(kt::await_ok(acc));
    EXPECT_GE(s, 0);
    kio_close(s);
    kio_close(cc);
    kio_close(l);
    kio_close(w[0]);
    kio_close(w[1]);
    kio_close(sv[0]);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST_P(SocketCancel, CanceledTaskFailsEveryCallAtOnceWithoutConsumingData) {
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    ASSERT_EQ(kio_write(sv[1], "data", 4), 4);
    // Data is ready, so none of these would park: they are cancellation
    // points all the same.
    std::atomic<long> r_read{1}, r_recv{1}, r_poll{1}, r_accept{1}, r_connect{1};
    int l = kio_listen_tcp("127.0.0.1", 0, 4);
    ASSERT_GE(l, 0);
    sockaddr_in to = loop4(local_port(l));
    int pending = kio_dial_tcp("127.0.0.1", local_port(l), 0);  // queued for accept
    ASSERT_GE(pending, 0);
    kio_task *t = kt::spawn([&] {
        kio_cancel_self();
        char b[8];
        r_read = long(kio_read(sv[0], b, sizeof b));
        r_recv = long(kio_recv(sv[0], b, sizeof b, 0));
        r_poll = kio_poll(sv[0], POLLIN, 0);
        r_accept = kio_accept(l, nullptr, nullptr, 0);
        int c = kio_socket(AF_INET, SOCK_STREAM, 0);
        r_connect = kio_connect(c, reinterpret_cast<sockaddr *>(&to), sizeof to);
        kio_close(c);
        return intptr_t(0);
    });
    EXPECT_EQ(kt::await_ok(t), 0);
    EXPECT_EQ(r_read.load(), -ECANCELED);
    EXPECT_EQ(r_recv.load(), -ECANCELED);
    EXPECT_EQ(r_poll.load(), -ECANCELED) << "kio_poll in a canceled task returned the ready events";
    EXPECT_EQ(r_accept.load(), -ECANCELED);
    EXPECT_EQ(r_connect.load(), -ECANCELED);
    kio_close(pending);
    kio_close(l);
    char b[8];
    EXPECT_EQ(kio_read(sv[0], b, sizeof b), 4);
    kio_close(sv[0]);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

// ===========================================================================
// Plain threads: the calls block the thread and work.

TEST(SocketPlainThread, BlockingSocketpairWorksWithoutAndWithARuntime) {
    for (int with_rt = 0; with_rt < 2; with_rt++) {
        const char *what = with_rt ? "with a runtime" : "without a runtime";
        std::unique_ptr<kt::Rt> rt;
        if (with_rt) {
            rt.reset(new kt::Rt(2));
            ASSERT_EQ(rt->rc(), 0);
        }
        int sv[2];
        ASSERT_TRUE(unix_pair(sv, /*blocking=*/true));
        std::atomic<long> got{1};
        std::atomic<uint64_t> took{0};
        std::thread reader([&] {
            char b[16] = {0};
            uint64_t t0 = kio_now();
            long n = long(kio_read(sv[0], b, sizeof b));
            took = kt::since(t0);
            got = (n == 5 && std::memcmp(b, "plain", 5) == 0) ? 5 : (n < 0 ? n : -1000 - n);
        });
        std::thread writer([&] {
            usleep(50 * 1000);
            kio_write(sv[1], "plain", 5);
        });
        reader.join();
        writer.join();
        EXPECT_EQ(got.load(), 5) << what;
        EXPECT_GE(took.load(), 40 * kMs) << what;  // it blocked until the write
        // Every other call from a plain thread.
        std::thread([&] {
            char b[8] = "abc";
            iovec iov{b, 3};
            EXPECT_EQ(kio_writev(sv[0], &iov, 1), 3);
            EXPECT_EQ(kio_readv(sv[1], &iov, 1), 3);
            EXPECT_EQ(kio_send(sv[0], "ab", 2, 0), 2);
            EXPECT_EQ(kio_recv(sv[1], b, sizeof b, 0), 2);
            EXPECT_TRUE(kio_poll(sv[0], POLLOUT, 0) & POLLOUT);
            EXPECT_EQ(kio_poll(sv[0], POLLIN, kio_now() + 20 * kMs), -ETIMEDOUT);
        }).join();
        kio_close(sv[0]);
        kio_close(sv[1]);
        if (rt) {
            EXPECT_EQ(rt->destroy(), 0);
        }
    }
}

TEST(SocketPlainThread, ListenAcceptConnectAndPollFromPlainThreads) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> port{0};
    std::atomic<long> server_rc{1};
    std::thread server([&] {
        int l = kio_listen_tcp("127.0.0.1", 0, 4);
        if (l < 0) {
            server_rc = l;
            port = -1;
            return;
        }
        port = local_port(l);
        int s = kio_accept(l, nullptr, nullptr, SOCK_CLOEXEC);  // blocks this thread
        if (s < 0) {
            server_rc = s;
            kio_close(l);
            return;
        }
        int pr = kio_poll(s, POLLIN, 0);
        char b[8] = {0};
        long n = long(kio_read(s, b, sizeof b));
        server_rc = (pr > 0 && (pr & POLLIN) && n == 4 && std::memcmp(b, "tcp!", 4) == 0) ? 0 : -1;
        kio_close(s);
        kio_close(l);
    });
    std::thread client([&] {
        while (port.load() == 0) usleep(1000);
        if (port.load() < 0) return;
        int c = kio_dial_tcp("127.0.0.1", port.load(), 0);
        EXPECT_GE(c, 0);
        if (c < 0) return;
        usleep(30 * 1000);
        EXPECT_EQ(kio_write(c, "tcp!", 4), 4);
        kio_close(c);
    });
    server.join();
    client.join();
    EXPECT_EQ(server_rc.load(), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

// A descriptor number freed by kio_close and handed out again by the kernel
// (here to a socketpair made outside kio) is a new descriptor: the calls
// work on it from fibers and from plain threads alike.
TEST(SocketPlainThread, NumberReusedAfterKioCloseWorksEverywhere) {
    int old[2];
    ASSERT_TRUE(unix_pair(old));
    ASSERT_EQ(kio_close(old[0]), 0);
    ASSERT_EQ(kio_close(old[1]), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    ASSERT_TRUE((sv[0] == old[0] || sv[0] == old[1]) && (sv[1] == old[0] || sv[1] == old[1]))
        << "the kernel did not reuse the numbers";
    // Plain thread (no runtime anywhere).
    std::atomic<long> r{1};
    std::thread([&] {
        char b[8];
        uint64_t prev = kio_deadline_set(kio_now() + 50 * kMs);
        r = long(kio_read(sv[0], b, sizeof b));  // nothing to read: waits for the deadline
        kio_deadline_set(prev);
    }).join();
    EXPECT_EQ(r.load(), -ETIMEDOUT);
    std::thread reader([&] {
        char b[8] = {0};
        long n = long(kio_read(sv[0], b, sizeof b));
        r = (n == 3 && std::memcmp(b, "new", 3) == 0) ? 3 : (n < 0 ? n : -1000 - n);
    });
    usleep(20 * 1000);
    EXPECT_EQ(kio_write(sv[1], "new", 3), 3);
    reader.join();
    EXPECT_EQ(r.load(), 3);
    std::thread([&] { EXPECT_TRUE(kio_poll(sv[1], POLLOUT, 0) & POLLOUT); }).join();
    // And from a fiber.
    {
        kt::Rt rt(1);
        ASSERT_EQ(rt.rc(), 0);
        EXPECT_EQ(kio_write(sv[1], "fib", 3), 3);
        char b[8];
        EXPECT_EQ(kio_read(sv[0], b, sizeof b), 3);
        EXPECT_EQ(rt.destroy(), 0);
    }
    kio_close(sv[0]);
    kio_close(sv[1]);
}

// "Plain threads blocked on a socket in a kio call are woken too (the socket
// is shut down first)": a read on a stream socket, an accept, a UDP receive.
TEST(SocketPlainThread, CloseWakesPlainThreadsBlockedOnASocket) {
    kt::Rt rt(1);  // a runtime exists; the threads are not part of it
    ASSERT_EQ(rt.rc(), 0);
    struct Case {
        const char *what;
        int fd, peer;
    };
    std::vector<Case> cases;
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    cases.push_back({"read on a unix stream socket", sv[0], sv[1]});
    int l = kio_listen_tcp("127.0.0.1", 0, 4);
    ASSERT_GE(l, 0);
    cases.push_back({"accept on a TCP listener", l, -1});
    int u = kio_socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in any = loop4(0);
    ASSERT_EQ(bind(u, reinterpret_cast<sockaddr *>(&any), sizeof any), 0);
    cases.push_back({"recvfrom on a UDP socket", u, -1});
    for (const Case &k : cases) {
        std::atomic<long> r{1};
        std::atomic<int> started{0};
        std::atomic<uint64_t> woke{0};
        int fd = k.fd;
        std::thread th([&, fd, k] {
            char b[8];
            started = 1;
            if (k.peer >= 0) r = long(kio_read(fd, b, sizeof b));
            else if (fd == l) r = kio_accept(fd, nullptr, nullptr, 0);
            else r = long(kio_recvfrom(fd, b, sizeof b, 0, nullptr, nullptr));
            woke = kio_now();
        });
        while (!started.load()) usleep(1000);
        usleep(50 * 1000);  // blocked in the call now
        // Safety net if the close does not wake it: make the call return.
        Later rescue(1500 * kMs, [&] {
            if (k.peer >= 0) (void)!send(k.peer, "x", 1, MSG_NOSIGNAL);
            else shutdown(fd, SHUT_RDWR);
        });
        uint64_t t0 = kio_now();
        EXPECT_EQ(kio_close(fd), 0) << k.what;
        th.join();
        rescue.cancel();
        if (woke.load() < t0) {
            ADD_FAILURE() << k.what << ": the call returned " << r.load() << " before kio_close";
        } else {
            EXPECT_LT(woke.load() - t0, kt::prompt(1 * kSec)) << k.what << ": the thread was not woken by kio_close";
        }
        EXPECT_LE(r.load(), 0) << k.what;
    }
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

namespace {

// Waits (at most 1 s) until OS thread tid sleeps in the kernel.
bool thread_sleeps(long tid) {
    std::string path = "/proc/self/task/" + std::to_string(tid) + "/stat";
    for (int i = 0; i < 10000; i++) {
        char buf[512] = {0};
        int f = open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (f < 0) return false;
        ssize_t n = read(f, buf, sizeof buf - 1);
        close(f);
        const char *paren = n > 0 ? std::strrchr(buf, ')') : nullptr;
        if (paren && paren[1] == ' ' && paren[2] == 'S') return true;
        usleep(100);
    }
    return false;
}

}  // namespace

// A plain thread in kio_read (no deadline) when another thread kio_closes
// the socket and pipe(2) takes the number at once: the reader must return
// -EBADF (or end of file), never wait on or read from the new pipe. kio_close
// waits for the woken thread to leave poll(2) before close(2), and a thread
// that starts waiting after the close sees the close count moved.
TEST(SocketPlainThread, CloseThenImmediateReuseOfTheNumberNeverReachesAWaiter) {
    int bad = 0;
    for (int i = 0; i < 100 && bad < 3; i++) {
        int sv[2];
        ASSERT_TRUE(unix_pair(sv));
        int num = sv[0];
        std::atomic<long> r{1}, tid{0};
        char got[8] = {0};
        std::thread th([&] {
            tid = kt::os_thread_id();
            r = long(kio_read(num, got, sizeof got - 1));
        });
        // Only a call that began before the close counts: wait until the
        // thread sleeps in the kernel (poll(2)).
        while (!tid.load()) std::this_thread::yield();
        ASSERT_TRUE(thread_sleeps(tid.load())) << "round " << i;
        if (i & 1) usleep(500);
        ASSERT_EQ(kio_close(num), 0);
        int p[2];
        ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
        if (p[0] == num) {
            ASSERT_EQ(write(p[1], "STOLEN", 6), 6);
        }
        // Safety net: a reader stuck on the pipe gets data (read end) or
        // sees the read end go away (write end).
        std::atomic<int> rescued{0};
        Later rescue(1 * kSec, [&] {
            rescued = 1;
            (void)!write(p[1], "STOLEN", 6);
            if (p[1] == num) close(p[0]);
        });
        th.join();
        rescue.cancel();
        long res = r.load();
        if (rescued.load() || (res != -EBADF && res != 0)) {
            bad++;
            ADD_FAILURE() << "round " << i << ": kio_read returned " << res << " (\"" << got << "\")"
                          << (rescued.load() ? ", only after the rescue" : "") << "; the number is now the pipe's "
                          << (p[0] == num ? "read end" : p[1] == num ? "write end" : "neither end");
        }
        if (!(rescued.load() && p[1] == num)) close(p[0]);
        close(p[1]);
        kio_close(sv[1]);
    }
}

// kio_close of a listener wakes a plain thread in kio_accept with -EBADF
// (it used to retry accept4 on the shut-down socket and get -EINVAL).
TEST(SocketPlainThread, CloseWakesAPlainThreadInAcceptWithEbadf) {
    for (int i = 0; i < 100; i++) {
        int l = kio_listen_tcp("127.0.0.1", 0, 4);
        ASSERT_GE(l, 0);
        std::atomic<int> r{1}, started{0};
        std::thread th([&] {
            started = 1;
            r = kio_accept(l, nullptr, nullptr, 0);
        });
        while (!started.load()) std::this_thread::yield();
        usleep(i & 1 ? 1000 : 100);
        Later rescue(1 * kSec, [&] { shutdown(l, SHUT_RDWR); });
        ASSERT_EQ(kio_close(l), 0);
        th.join();
        rescue.cancel();
        EXPECT_EQ(r.load(), -EBADF) << "round " << i;
    }
}

// Without plain threads waiting, kio_close only closes the descriptor (wakes
// the fibers parked on it): the connection stays usable through a duplicate.
// A plain thread inside the system call itself (a socket in blocking mode,
// which kio leaves alone on plain threads) is woken by kio_close too.
TEST(SocketPlainThread, CloseWakesAPlainThreadInsideABlockingRead) {
    int sv[2];
    ASSERT_TRUE(unix_pair(sv, /*blocking=*/true));
    std::atomic<long> r{1};
    std::atomic<int> started{0};
    std::thread th([&] {
        char b[8];
        started = 1;
        r = long(kio_read(sv[0], b, sizeof b));
    });
    while (!started.load()) usleep(1000);
    usleep(50 * 1000);  // in read(2) now
    // Safety net if the close does not wake it.
    Later rescue(1500 * kMs, [&] { (void)!write(sv[1], "late", 4); });
    uint64_t t0 = kio_now();
    EXPECT_EQ(kio_close(sv[0]), 0);
    th.join();
    rescue.cancel();
    EXPECT_EQ(r.load(), -EBADF);
    EXPECT_LT(kt::since(t0), 1000 * kMs);
    close(sv[1]);
}

// A plain thread inside a blocking connect(2) (a listener whose accept queue
// is full drops the handshake: it would retry for minutes) is woken by
// kio_close with -EBADF.
TEST(SocketPlainThread, CloseWakesAPlainThreadInsideABlockingConnect) {
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(l, 0);
    sockaddr_in a = loop4(0);
    ASSERT_EQ(bind(l, reinterpret_cast<sockaddr *>(&a), sizeof a), 0);
    ASSERT_EQ(listen(l, 0), 0);
    a = loop4(local_port(l));
    std::vector<int> fill;
    for (int i = 0; i < 4; i++) {  // never accepted: the queue stays full
        int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        ASSERT_GE(c, 0);
        (void)connect(c, reinterpret_cast<sockaddr *>(&a), sizeof a);
        fill.push_back(c);
        usleep(20 * 1000);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);  // blocking
    ASSERT_GE(fd, 0);
    std::atomic<int> r{1}, done{0};
    std::thread th([&] {
        r = kio_connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a);
        done = 1;
    });
    usleep(300 * 1000);
    ASSERT_EQ(done.load(), 0) << "connect returned " << r.load() << " before the close: the setup proves nothing";
    int keep = dup(fd);
    uint64_t t0 = kio_now();
    EXPECT_EQ(kio_close(fd), 0);
    // Safety net if the close does not wake it: a shutdown does (through a
    // duplicate, which outlives the close).
    Later rescue(3000 * kMs, [&] { (void)shutdown(keep, SHUT_RDWR); });
    th.join();
    rescue.cancel();
    EXPECT_EQ(r.load(), -EBADF);
    EXPECT_LT(kt::since(t0), 1000 * kMs);
    close(keep);
    for (int c : fill) close(c);
    close(l);
}

// A pipe cannot be shut down: kio_close wakes a plain thread waiting on it in
// poll(2) through the thread's doorbell, polled beside the descriptor.
TEST(SocketPlainThread, CloseWakesPlainThreadsPollingAPipe) {
    enum Kind { kRead, kPoll, kWriteFull, kBlockingReadUnderDeadline };
    const char *names[] = {"read on a pipe", "kio_poll on a pipe", "write to a full pipe",
                           "read on a blocking pipe under a deadline"};
    for (Kind k : {kRead, kPoll, kWriteFull, kBlockingReadUnderDeadline}) {
        int p[2];
        ASSERT_EQ(pipe2(p, k == kBlockingReadUnderDeadline ? O_CLOEXEC : O_CLOEXEC | O_NONBLOCK), 0);
        if (k == kWriteFull) {
            char junk[4096] = {0};
            while (write(p[1], junk, sizeof junk) > 0) {
            }
        }
        int fd = k == kWriteFull ? p[1] : p[0];
        int other = k == kWriteFull ? p[0] : p[1];
        std::atomic<long> r{1};
        std::atomic<int> started{0};
        std::atomic<uint64_t> woke{0};
        std::thread th([&] {
            char b[8] = {0};
            started = 1;
            if (k == kBlockingReadUnderDeadline) kio_deadline_set(kio_now() + 10 * kSec);
            if (k == kRead || k == kBlockingReadUnderDeadline) r = long(kio_read(fd, b, sizeof b));
            else if (k == kPoll) r = kio_poll(fd, POLLIN, 0);
            else r = long(kio_write(fd, b, sizeof b));
            kio_deadline_set(0);
            woke = kio_now();
        });
        while (!started.load()) usleep(1000);
        usleep(50 * 1000);  // in poll(2) now
        // Safety net if the close does not wake it: activity on the pipe
        // makes poll(2) look again, and see the number closed.
        Later rescue(1500 * kMs, [&] {
            char b[4096];
            if (k == kWriteFull) (void)!read(other, b, sizeof b);
            else (void)!write(other, "x", 1);
        });
        uint64_t t0 = kio_now();
        EXPECT_EQ(kio_close(fd), 0) << names[k];
        th.join();
        rescue.cancel();
        if (woke.load() < t0) {
            ADD_FAILURE() << names[k] << ": the call returned " << r.load() << " before kio_close";
        } else {
            EXPECT_LT(woke.load() - t0, kt::prompt(1 * kSec)) << names[k] << ": the thread was not woken by kio_close";
        }
        EXPECT_EQ(r.load(), -EBADF) << names[k];
        close(other);
    }
}

// Under a deadline, a plain thread's call that cannot succeed fails at once
// instead of waiting out the deadline for readiness.
TEST(SocketPlainThread, DeadlineDoesNotDelayCallsThatFailAtOnce) {
    std::thread([] {
        uint64_t t0 = kio_now();
        kio_deadline_set(t0 + 2 * kSec);
        char b[4];
        EXPECT_EQ(kio_read(-1, b, sizeof b), -EBADF);
        int s = kio_socket(AF_INET, SOCK_STREAM, 0);  // non-blocking, not listening
        ASSERT_GE(s, 0);
        EXPECT_EQ(kio_accept(s, nullptr, nullptr, 0), -EINVAL);
        kio_deadline_set(0);
        EXPECT_LT(kt::since(t0), 1000 * kMs);
        kio_close(s);
    }).join();
}

// A descriptor registered with a worker that then runs a fiber which never
// yields: the other worker, asleep since before that fiber started (so
// without the backstop that covers a busy worker), still delivers the
// readiness (the I/O cover: it looks at busy workers' pollers at least every
// 100 ms once the runtime has registered a descriptor). The hog gives up
// after 3 s; before the cover the read waited for it.
TEST(IdleCover, ReadinessOnAWorkerStuckInAFiberReachesItsWaiter) {
    // The scenario needs fibers to stay where they run: without the
    // KIO_DEBUG_MIGRATE of the migrate test setup, which moves every woken
    // fiber to another worker.
    kt::ScopedEnv no_migrate("KIO_DEBUG_MIGRATE", "0");  // read when the runtime is made
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    {  // both workers started
        std::vector<kio_task *> ts;
        for (int i = 0; i < 4; i++)
            ts.push_back(kt::spawn([] {
                uint64_t end = kio_now() + 20 * kMs;
                while (kio_now() < end) kio_yield();
                return intptr_t(0);
            }));
        for (kio_task *t : ts) EXPECT_EQ(kt::await_ok(t), 0);
    }
    int placed = 0;
    for (int attempt = 0; attempt < 20 && placed < 2; attempt++) {
        int p[2];
        ASSERT_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
        std::atomic<pthread_t> reader_thread{}, hog_thread{};
        std::atomic<int> reader_ready{0}, hog_parked{0}, got{0};
        std::atomic<uint64_t> got_at{0};
        kio_mutex m = KIO_MUTEX_INIT;
        kio_cond c = KIO_COND_INIT;
        bool go = false;
        kio_task *reader = kt::spawn([&] {
            char b;
            reader_thread = pthread_self();
            reader_ready = 1;
            ssize_t r = kio_read(p[0], &b, 1);  // parks here, registering p[0]
            got_at = kio_now();
            got = 1;
            return intptr_t(r);
        });
        ASSERT_TRUE(kt::wait_flag(reader_ready, 1));
        kio_spawn_options so;
        kio_spawn_options_init(&so);
        so.pinned = 1;
        kio_task *hog = kt::spawn_ex(&so, [&] {
            hog_thread = pthread_self();
            kio_mutex_lock(&m);
            hog_parked = 1;
            while (!go) kio_cond_wait(&c, &m);
            kio_mutex_unlock(&m);
            if (!pthread_equal(hog_thread.load(), reader_thread.load())) return intptr_t(0);
            uint64_t end = kio_now() + 3000 * kMs;  // never yields until the read is done
            while (!got.load() && kio_now() < end) {
            }
            return intptr_t(1);
        });
        ASSERT_TRUE(kt::wait_flag(hog_parked, 1));
        uint64_t written = 0;
        std::thread th([&] {
            usleep(100 * 1000);  // every worker asleep by now
            kio_mutex_lock(&m);
            go = true;
            kio_cond_signal(&c);
            kio_mutex_unlock(&m);
            usleep(20 * 1000);  // the hog runs by now (if on the reader's worker)
            written = kio_now();
            (void)!write(p[1], "x", 1);
        });
        intptr_t on_same = kt::await_ok(hog);
        EXPECT_EQ(kt::await_ok(reader), 1);
        th.join();
        if (on_same) {
            placed++;
            EXPECT_LT(got_at.load() - written, kt::prompt(1000 * kMs)) << "attempt " << attempt;
        }
        kio_close(p[0]);  // (close(2) would leave kio's registration state to the next pipe)
        kio_close(p[1]);
    }
    EXPECT_GT(placed, 0) << "the hog never landed on the reader's worker";
    EXPECT_EQ(rt.destroy(), 0);
}

// Fibers of two runtimes wait on one pipe; the registration is held by the
// worker of the first to wait. Stopping that runtime must not strand the
// other's fiber: it retries and registers on its own worker.
TEST(FdShared, FiberOfAnotherRuntimeStillWakesAfterTheRegisteringRuntimeStops) {
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    kio_runtime *a = nullptr, *b = nullptr;
    ASSERT_EQ(kio_runtime_start(nullptr, &a), 0);
    ASSERT_EQ(kio_runtime_start(nullptr, &b), 0);
    std::atomic<int> started{0};
    int rfd = p[0];
    kio_task *ta = kt::spawn([&started, rfd] {
        char c;
        started++;
        return intptr_t(kio_read(rfd, &c, 1));
    }, a);
    while (started.load() < 1) usleep(1000);
    usleep(50 * 1000);  // a's fiber is parked: a's worker holds the registration
    kio_task *tb = kt::spawn([&started, rfd] {
        kio_deadline_set(kio_now() + 5 * kSec);  // bounds the failure mode
        char c;
        started++;
        return intptr_t(kio_read(rfd, &c, 1));
    }, b);
    while (started.load() < 2) usleep(1000);
    usleep(50 * 1000);
    EXPECT_EQ(kt::cancel_ok(ta), -ECANCELED);
    EXPECT_EQ(kio_runtime_stop(a), 0);
    ASSERT_EQ(write(p[1], "x", 1), 1);
    EXPECT_EQ(kt::await_ok(tb), 1);
    EXPECT_EQ(kio_runtime_stop(b), 0);
    kio_close(p[0]);
    kio_close(p[1]);
}

// A fiber that readiness woke, but that has not run yet when another fiber
// closes its descriptor and the number is handed out again, gets -EBADF: it
// must not read from the new socket. One worker, so the order is set: the
// reader is queued among the woken fibers by a fairness poll, while the
// closer waits in the yield ring, which that pick serves first.
TEST(SocketClose, FiberWokenButNotYetRunWhenItsDescriptorIsClosedGetsEbadf) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    int s[2], n[2] = {-1, -1};
    ASSERT_TRUE(unix_pair(s));
    std::atomic<int> got{0}, closed{0};
    kio_task *reader = kt::spawn([&] {
        char b = 0;
        ssize_t r = kio_read(s[0], &b, 1);
        got = b;
        return intptr_t(r);
    });
    kio_yield();  // the reader parks in kio_read
    ASSERT_EQ(write(s[1], "O", 1), 1);
    auto ready_tasks = [] {
        struct kio_stats st;
        kio_stats_init(&st);
        kio_stats(nullptr, &st);
        return st.tasks_ready;
    };
    // Both this fiber and a helper keep yielding; whichever finds the reader
    // woken and not yet run (the other one and the reader queued) closes.
    auto close_when_woken = [&] {
        uint64_t give_up = kio_now() + 5 * kSec;
        while (!closed.load() && kio_now() < give_up) {
            uint64_t spin = kio_now() + 150 * kUs;
            while (kio_now() < spin) {
            }
            kio_yield();
            if (closed.load()) break;
            if (ready_tasks() >= 2 && !got.load()) {
                closed = 1;
                EXPECT_EQ(kio_close(s[0]), 0);
                EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, n), 0);
                EXPECT_EQ(write(n[1], "X", 1), 1);
            }
        }
    };
    kio_task *helper = kt::spawn([&] {
        close_when_woken();
        return intptr_t(0);
    });
    close_when_woken();
    kt::await_ok(helper);
    intptr_t r = kt::await_ok(reader);
    EXPECT_EQ(closed.load(), 1) << "the reader was never seen woken and not yet run";
    if (closed.load()) {
        EXPECT_NE(got.load(), 'X') << "the reader read from the socket that reused its number";
        // Either the close came first (-EBADF) or, the read having run, 'O'.
        EXPECT_TRUE(r == -EBADF || (r == 1 && got.load() == 'O')) << r;
    }
    EXPECT_EQ(rt.destroy(), 0);
    close(s[1]);
    if (n[0] >= 0) {
        close(n[0]);
        close(n[1]);
    }
}

TEST(SocketClose, CloseWithoutPlainThreadWaitersLeavesADuplicateUsable) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    int c, s;
    ASSERT_TRUE(tcp_pair(&c, &s));
    int d = dup(s);
    ASSERT_GE(d, 0);
    kio_task *fiber = kt::spawn([&] {
        char b[8];
        return intptr_t(kio_read(s, b, sizeof b));
    });
    kio_sleep(30 * kMs);  // parked on s
    EXPECT_EQ(kio_close(s), 0);
    EXPECT_EQ(kt::await_ok(fiber), -EBADF);
    EXPECT_EQ(kio_send(d, "alive", 5, 0), 5);
    char buf[8] = {0};
    EXPECT_EQ(kio_read(c, buf, sizeof buf), 5);
    EXPECT_STREQ(buf, "alive");
    EXPECT_EQ(kio_send(c, "back", 4, 0), 4);
    std::memset(buf, 0, sizeof buf);
    EXPECT_EQ(kio_read(d, buf, sizeof buf), 4);
    EXPECT_STREQ(buf, "back");
    kio_close(d);
    kio_close(c);
    EXPECT_EQ(rt.destroy(), 0);
}

// The deadline scope applies on plain threads too. With a non-blocking socket
// the thread waits in poll(2) bounded by it.
TEST(SocketPlainThread, DeadlineScopeOnPlainThreadWithNonblockingSocket) {
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    std::thread([&] {
        EXPECT_EQ(kio_deadline_get(), 0u);
        char b[8];
        uint64_t t0 = kio_now(), d = t0 + 100 * kMs;
        EXPECT_EQ(kio_deadline_set(d), 0u);
        EXPECT_EQ(kio_deadline_get(), d);
        EXPECT_EQ(kio_read(sv[0], b, sizeof b), -ETIMEDOUT);
        expect_deadline_bounds(t0, d, kio_now());
        t0 = kio_now();
        d = t0 + 50 * kMs;
        kio_deadline_set(d);
        EXPECT_EQ(kio_poll(sv[0], POLLIN, 0), -ETIMEDOUT);
        expect_deadline_bounds(t0, d, kio_now());
        EXPECT_EQ(kio_deadline_set(0), d);
        // Scope gone: data is read normally.
        EXPECT_EQ(kio_write(sv[1], "k", 1), 1);
        EXPECT_EQ(kio_read(sv[0], b, sizeof b), 1);
    }).join();
    kio_close(sv[0]);
    kio_close(sv[1]);
}

// The same with a descriptor in blocking mode: "each call that parks returns
// -ETIMEDOUT once kio_now() reaches it" also holds on a plain thread.
TEST(SocketPlainThread, DeadlineScopeOnPlainThreadWithBlockingDescriptor) {
    int sv[2];
    ASSERT_TRUE(unix_pair(sv, /*blocking=*/true));
    // Safety net: unblock the read if the deadline is not honoured.
    Later rescue(1500 * kMs, [&] { (void)!write(sv[1], "late", 4); });
    expect_times_out_on_plain_thread("read", 100, [&] {
        char b[8];
        return long(kio_read(sv[0], b, sizeof b));
    });
    rescue.cancel();
    kio_close(sv[0]);
    kio_close(sv[1]);
}

// A connect on a blocking socket is bounded by a plain thread's deadline too:
// connect(2) itself would sleep until the handshake ends, which never comes
// from a listener whose accept queue is full. The socket is left in blocking
// mode, as it was.
TEST(SocketPlainThread, DeadlineBoundsAConnectOnABlockingSocket) {
    StuckListener stuck;
    ASSERT_TRUE(stuck.open()) << "could not fill a listener's accept queue";
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);  // blocking
    ASSERT_GE(fd, 0);
    int keep = dup(fd);
    ASSERT_GE(keep, 0);
    // Safety net if the deadline is not honoured: a shutdown (through the
    // duplicate) ends the connect.
    Later rescue(3000 * kMs, [&] { (void)shutdown(keep, SHUT_RDWR); });
    sockaddr_in to = loop4(stuck.port);
    expect_times_out_on_plain_thread("connect", 150, [&] {
        return long(kio_connect(fd, reinterpret_cast<sockaddr *>(&to), sizeof to));
    });
    rescue.cancel();
    int fl = fcntl(fd, F_GETFL);
    ASSERT_GE(fl, 0);
    EXPECT_FALSE(fl & O_NONBLOCK) << "the socket's mode was not restored";
    close(keep);
    EXPECT_EQ(kio_close(fd), 0);
}

// A blocking pipe that nobody reads: poll(2) says writable while any room is
// left, and a write larger than that room would sleep in write(2) past the
// deadline. Under a deadline a plain thread's write there moves at most
// PIPE_BUF bytes per call (a short count), so a loop that writes everything
// fills the pipe, then gets -ETIMEDOUT at the deadline.
TEST(SocketPlainThread, DeadlineBoundsLargeWritesToABlockingPipe) {
    for (bool vectored : {false, true}) {
        const char *what = vectored ? "kio_writev" : "kio_write";
        int p[2];
        ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);  // blocking
        int keep = dup(p[0]);
        ASSERT_GE(keep, 0);
        // Safety net if the deadline is not honoured: drain the pipe until
        // the writer stops.
        std::atomic<bool> stop{false};
        Later rescue(3000 * kMs, [&] {
            fcntl(keep, F_SETFL, O_NONBLOCK);
            char b[65536];
            while (!stop.load()) {
                (void)!read(keep, b, sizeof b);
                usleep(1000);
            }
        });
        std::atomic<long> total{0};
        expect_times_out_on_plain_thread(what, 150, [&] {
            static char big[1 << 20];
            for (;;) {
                long r;
                if (vectored) {
                    iovec v[2] = {{big, sizeof big / 2}, {big + sizeof big / 2, sizeof big / 2}};
                    r = long(kio_writev(p[1], v, 2));
                } else {
                    r = long(kio_write(p[1], big, sizeof big));
                }
                if (r <= 0) return r;
                EXPECT_LE(r, long(PIPE_BUF)) << what;
                total += r;
            }
        });
        stop = true;
        rescue.cancel();
        // Every byte reported written is in the pipe.
        fcntl(p[0], F_SETFL, O_NONBLOCK);
        long got = 0;
        char b[65536];
        for (ssize_t n; (n = read(p[0], b, sizeof b)) > 0;) got += n;
        EXPECT_GT(total.load(), 0) << what;
        EXPECT_EQ(got, total.load()) << what;
        close(keep);
        close(p[0]);
        close(p[1]);
    }
}

// The capped write skips empty entries: 64 of them before the data must not
// use up the capped vector and make the call write nothing (a loop that
// writes everything would then spin).
TEST(SocketPlainThread, CappedWritevSkipsEmptyEntries) {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);  // blocking
    static char data[10000];
    std::vector<iovec> v(65, iovec{data, 0});
    v.back().iov_len = sizeof data;
    uint64_t prev = kio_deadline_set(kio_now() + 10000 * kMs);
    ssize_t r = kio_writev(p[1], v.data(), int(v.size()));
    kio_deadline_set(prev);
    EXPECT_GT(r, 0);
    EXPECT_LE(r, ssize_t(PIPE_BUF));
    close(p[0]);
    close(p[1]);
}

// Urgent (out-of-band) TCP data is a read-direction event: a fiber waiting
// in kio_poll for POLLPRI is woken by it.
// MSG_WAITALL on a stream socket fills the buffer, as recv(2) on a blocking
// socket does, though every socket a fiber uses is non-blocking: the data
// arrives 2 bytes at a time. End of file, or the deadline, after some data
// gives that count. On a datagram socket it returns one datagram.
TEST(SocketRecv, WaitallFillsTheBufferOnAStreamSocket) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    for (int variant = 0; variant < 2; variant++) {
        int sv[2];
        ASSERT_TRUE(unix_pair(sv));
        kio_task *w = kt::spawn([&] {
            for (int i = 0; i < 4; i++) {
                kio_sleep(10 * kMs);
                if (kio_send(sv[1], "abcdefgh" + 2 * i, 2, 0) != 2) return intptr_t(-1);
            }
            kio_sleep(10 * kMs);
            if (kio_send(sv[1], "xyz", 3, 0) != 3) return intptr_t(-1);
            shutdown(sv[1], SHUT_WR);
            return intptr_t(0);
        });
        char b[16] = {0};
        ssize_t r = variant ? kio_recvfrom(sv[0], b, 8, MSG_WAITALL, nullptr, nullptr)
                            : kio_recv(sv[0], b, 8, MSG_WAITALL);
        EXPECT_EQ(r, 8) << "variant " << variant;
        EXPECT_EQ(std::string(b, 8), "abcdefgh");
        EXPECT_EQ(kio_recv(sv[0], b, 8, MSG_WAITALL), 3) << "end of file after 3 bytes";
        EXPECT_EQ(kt::await_ok(w), 0);
        kio_close(sv[0]);
        kio_close(sv[1]);
    }
    {  // the deadline after some data: the count
        int sv[2];
        ASSERT_TRUE(unix_pair(sv));
        ASSERT_EQ(kio_send(sv[1], "ab", 2, 0), 2);
        char b[8];
        uint64_t prev = kio_deadline_set(kio_now() + 50 * kMs);
        EXPECT_EQ(kio_recv(sv[0], b, 8, MSG_WAITALL), 2);
        EXPECT_EQ(kio_recv(sv[0], b, 8, MSG_WAITALL), -ETIMEDOUT);
        kio_deadline_set(prev);
        kio_close(sv[0]);
        kio_close(sv[1]);
    }
    {  // a datagram socket: one datagram
        int sv[2];
        ASSERT_TRUE(unix_pair(sv, false, SOCK_DGRAM));
        ASSERT_EQ(kio_send(sv[1], "abc", 3, 0), 3);
        char b[8];
        EXPECT_EQ(kio_recv(sv[0], b, 8, MSG_WAITALL), 3);
        kio_close(sv[0]);
        kio_close(sv[1]);
    }
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(SocketPoll, UrgentDataWakesAFiberWaitingForPollpri) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    int c, s;
    ASSERT_TRUE(tcp_pair(&c, &s));
    std::atomic<int> started{0};
    kio_task *t = kt::spawn([&] {
        started = 1;
        return intptr_t(kio_poll(s, POLLPRI, kio_now() + 2 * kSec));
    });
    ASSERT_TRUE(kt::wait_flag(started, 1));
    kio_sleep(30 * kMs);  // parked now
    uint64_t t0 = kio_now();
    ASSERT_EQ(send(c, "!", 1, MSG_OOB), 1);
    intptr_t r = kt::await_ok(t);
    EXPECT_GT(r, 0);
    EXPECT_TRUE(r & POLLPRI) << r;
    EXPECT_LT(kt::since(t0), kt::prompt(1 * kSec));
    kio_close(c);
    kio_close(s);
    EXPECT_EQ(rt.destroy(), 0);
}

namespace {

// An open regular file, already unlinked (in TMPDIR or /tmp), or -1.
int unlinked_temp_file() {
    const char *base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/kio_io_test.XXXXXX";
    std::vector<char> path(tmpl.begin(), tmpl.end());
    path.push_back('\0');
    int fd = mkstemp(path.data());
    if (fd >= 0) unlink(path.data());
    return fd;
}

}  // namespace

// A regular file is always readable and writable, never "urgent": epoll
// refuses it (EPERM). kio_poll for POLLPRI then waits like poll(2), until
// the deadline, kio_close or cancellation, on fibers and plain threads.
TEST(SocketPoll, PollpriOnARegularFileWaitsLikePoll2) {
    int f = unlinked_temp_file();
    ASSERT_GE(f, 0);
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    EXPECT_EQ(kio_poll(f, POLLIN | POLLOUT, 0), POLLIN | POLLOUT);
    uint64_t t0 = kio_now(), d = t0 + 50 * kMs;
    EXPECT_EQ(kio_poll(f, POLLPRI, d), -ETIMEDOUT);
    expect_deadline_bounds(t0, d, kio_now());
    std::thread([&] {
        uint64_t t1 = kio_now(), d1 = t1 + 50 * kMs;
        EXPECT_EQ(kio_poll(f, POLLPRI, d1), -ETIMEDOUT) << "plain thread";
        expect_deadline_bounds(t1, d1, kio_now());
    }).join();
    std::atomic<int> started{0};
    auto waiter = [&] {
        started.fetch_add(1);
        return intptr_t(kio_poll(f, POLLPRI, kio_now() + 2 * kSec));
    };
    kio_task *canceled = kt::spawn(waiter);
    ASSERT_TRUE(kt::wait_flag(started, 1));
    kio_sleep(20 * kMs);
    EXPECT_EQ(kt::cancel_ok(canceled), -ECANCELED);
    kio_task *closed = kt::spawn(waiter);
    ASSERT_TRUE(kt::wait_flag(started, 2));
    kio_sleep(20 * kMs);
    t0 = kio_now();
    EXPECT_EQ(kio_close(f), 0);
    EXPECT_EQ(kt::await_ok(closed), -EBADF);
    EXPECT_LT(kt::since(t0), kt::prompt(1 * kSec));
    EXPECT_EQ(rt.destroy(), 0);
}

// ===========================================================================
// TCP helpers

TEST(Tcp, ListenOnPortZeroThenGetsockname) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    int l = kio_listen_tcp("127.0.0.1", 0, 8);
    ASSERT_GE(l, 0);
    int fam = 0;
    int port = local_port(l, &fam);
    EXPECT_EQ(fam, AF_INET);
    EXPECT_GT(port, 0);
    EXPECT_TRUE(is_nonblocking(l));
    int on = 0;
    socklen_t ol = sizeof on;
    EXPECT_EQ(getsockopt(l, SOL_SOCKET, SO_REUSEADDR, &on, &ol), 0);
    EXPECT_NE(on, 0);
    int c = kio_dial_tcp("127.0.0.1", port, 0);
    EXPECT_GE(c, 0);
    int s = kio_accept(l, nullptr, nullptr, 0);
    EXPECT_GE(s, 0);
    EXPECT_EQ(kio_write(c, "1", 1), 1);
    char ch;
    EXPECT_EQ(kio_read(s, &ch, 1), 1);
    kio_close(s);
    kio_close(c);
    // A second listener on the same port (while the first listens) fails.
    int l2 = kio_listen_tcp("127.0.0.1", port, 8);
    EXPECT_EQ(l2, -EADDRINUSE);
    if (l2 >= 0) kio_close(l2);
    kio_close(l);
    EXPECT_EQ(rt.destroy(), 0);
}

namespace {

// Connects to a listener by its own family's loopback and round-trips a byte.
void expect_loopback_round_trip(int l) {
    int fam = 0;
    int port = local_port(l, &fam);
    ASSERT_GT(port, 0);
    int c = kio_socket(fam, SOCK_STREAM, 0);
    ASSERT_GE(c, 0);
    int r;
    if (fam == AF_INET6) {
        sockaddr_in6 a = loop6(port);
        r = kio_connect(c, reinterpret_cast<sockaddr *>(&a), sizeof a);
    } else {
        sockaddr_in a = loop4(port);
        r = kio_connect(c, reinterpret_cast<sockaddr *>(&a), sizeof a);
    }
    EXPECT_EQ(r, 0);
    int s = kio_accept(l, nullptr, nullptr, 0);
    EXPECT_GE(s, 0);
    EXPECT_EQ(kio_write(c, "z", 1), 1);
    char ch = 0;
    EXPECT_EQ(kio_read(s, &ch, 1), 1);
    EXPECT_EQ(ch, 'z');
    kio_close(s);
    kio_close(c);
}

bool ipv6_loopback_works() {
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in6 a = loop6(0);
    bool ok = bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0;
    close(fd);
    return ok;
}

}  // namespace

TEST(Tcp, ListenOnNamesAndAddresses) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::vector<const char *> hosts = {"localhost", "127.0.0.1", nullptr, ""};
    if (ipv6_loopback_works()) hosts.push_back("::1");
    for (const char *h : hosts) {
        SCOPED_TRACE(h ? (std::string("host \"") + h + "\"") : std::string("host NULL"));
        int l = kio_listen_tcp(h, 0, 8);
        ASSERT_GE(l, 0) << kio_strerror(l);
        int fam = 0;
        local_port(l, &fam);
        if (h && std::strcmp(h, "::1") == 0) {
            EXPECT_EQ(fam, AF_INET6);
        }
        if (h && std::strcmp(h, "127.0.0.1") == 0) {
            EXPECT_EQ(fam, AF_INET);
        }
        expect_loopback_round_trip(l);
        kio_close(l);
    }
    if (!ipv6_loopback_works()) std::printf("note: IPv6 loopback unavailable, \"::1\" not tested\n");
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Tcp, ListenBadHostOrPortFailsCleanly) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    for (const char *h : {"no-such-host.invalid", "999.1.2.3", "not a host name!", "::gg"}) {
        int l = kio_listen_tcp(h, 0, 8);
        EXPECT_LT(l, 0) << h;
        if (l >= 0) kio_close(l);
    }
    EXPECT_EQ(kio_listen_tcp("127.0.0.1", -1, 8), -EINVAL);
    EXPECT_EQ(kio_listen_tcp("127.0.0.1", 65536, 8), -EINVAL);
    EXPECT_EQ(kio_listen_tcp(nullptr, 1 << 20, 8), -EINVAL);
    EXPECT_EQ(kio_listen_tcp("127.0.0.1", INT_MIN, 8), -EINVAL);
    // From a plain thread too.
    std::thread([] {
        int l = kio_listen_tcp("no-such-host.invalid", 0, 8);
        EXPECT_LT(l, 0);
        EXPECT_EQ(kio_listen_tcp("127.0.0.1", 70000, 8), -EINVAL);
    }).join();
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Tcp, DialSucceedsIsRefusedAndRejectsBadArguments) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    int l = kio_listen_tcp("127.0.0.1", 0, 8);
    ASSERT_GE(l, 0);
    int port = local_port(l);
    for (const char *h : {"127.0.0.1", "localhost"}) {
        kio_task *t = kt::spawn([&, h] { return intptr_t(kio_dial_tcp(h, port, kio_now() + 10 * kSec)); });
        int c = int(kt::await_ok(t));
        if (std::strcmp(h, "localhost") == 0 && c < 0) {
            // "localhost" may resolve to ::1 only; the listener is IPv4.
            std::printf("note: dial localhost: %s\n", kio_strerror(c));
            continue;
        }
        ASSERT_GE(c, 0) << h << ": " << kio_strerror(c);
        EXPECT_TRUE(is_nonblocking(c)) << h;
        int s = kio_accept(l, nullptr, nullptr, 0);
        EXPECT_GE(s, 0);
        EXPECT_EQ(kio_write(c, "d", 1), 1);
        char ch;
        EXPECT_EQ(kio_read(s, &ch, 1), 1);
        kio_close(s);
        kio_close(c);
    }
    int holder = -1;
    int closed = refusing_port(&holder);
    ASSERT_GT(closed, 0);
    EXPECT_EQ(kio_dial_tcp("127.0.0.1", closed, 0), -ECONNREFUSED);
    EXPECT_EQ(kio_dial_tcp("localhost", closed, kio_now() + 5 * kSec), -ECONNREFUSED);
    close(holder);
    EXPECT_EQ(kio_dial_tcp(nullptr, port, 0), -EINVAL);
    EXPECT_EQ(kio_dial_tcp("", port, 0), -EINVAL);
    EXPECT_EQ(kio_dial_tcp("127.0.0.1", 0, 0), -EINVAL);
    EXPECT_EQ(kio_dial_tcp("127.0.0.1", -5, 0), -EINVAL);
    EXPECT_EQ(kio_dial_tcp("127.0.0.1", 65536, 0), -EINVAL);
    EXPECT_LT(kio_dial_tcp("no-such-host.invalid", 80, kio_now() + 5 * kSec), 0);
    kio_close(l);
    EXPECT_EQ(rt.destroy(), 0);
}

// A host name is looked up on the blocking pool: that wait is a
// cancellation point and honours the deadline like every other.
TEST(Tcp, NameLookupIsACancellationPointAndHonoursTheDeadline) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    int l = kio_listen_tcp("127.0.0.1", 0, 8);
    ASSERT_GE(l, 0);
    int port = local_port(l);
    kio_task *t = kt::spawn([port] {
        // Works by name.
        int fd = kio_dial_tcp("localhost", port, kio_now() + 5 * kSec);
        if (fd < 0) return intptr_t(1000 + fd);
        kio_close(fd);
        uint64_t saved = kio_deadline_set(kio_now() - 1);  // already expired
        int a = kio_dial_tcp("localhost", port, 0);
        int b = kio_listen_tcp("localhost", 0, 8);
        kio_deadline_set(saved);
        if (a >= 0) kio_close(a);
        if (b >= 0) kio_close(b);
        if (a != -ETIMEDOUT) return intptr_t(2000 + a);
        if (b != -ETIMEDOUT) return intptr_t(3000 + b);
        kio_cancel_self();
        a = kio_dial_tcp("localhost", port, 0);
        b = kio_listen_tcp("localhost", 0, 8);
        if (a >= 0) kio_close(a);
        if (b >= 0) kio_close(b);
        if (a != -ECANCELED) return intptr_t(4000 + a);
        if (b != -ECANCELED) return intptr_t(5000 + b);
        return intptr_t(0);
    });
    EXPECT_EQ(kt::await_ok(t), 0);
    kio_close(l);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Tcp, DialHonoursItsDeadlineAndTheTaskDeadline) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    StuckListener stuck;
    ASSERT_TRUE(stuck.open());
    int port = stuck.port;
    kio_task *t = kt::spawn([&] {
        uint64_t t0 = kio_now(), d = t0 + 150 * kMs;
        int r = kio_dial_tcp("127.0.0.1", port, d);
        expect_deadline_bounds(t0, d, kio_now());
        EXPECT_EQ(kio_deadline_get(), 0u);  // the call's deadline does not leak into the scope
        if (r != -ETIMEDOUT) {
            if (r >= 0) kio_close(r);
            return intptr_t(r);
        }
        t0 = kio_now();
        d = t0 + 100 * kMs;
        uint64_t prev = kio_deadline_set(d);
        r = kio_dial_tcp("127.0.0.1", port, 0);
        uint64_t end = kio_now();
        EXPECT_EQ(kio_deadline_get(), d);  // restored
        kio_deadline_set(prev);
        expect_deadline_bounds(t0, d, end);
        if (r >= 0) kio_close(r);
        return intptr_t(r);
    });
    EXPECT_EQ(kt::await_ok(t), -ETIMEDOUT);
    // Cancellation while dialing.
    std::atomic<int> started{0};
    kio_task *t2 = kt::spawn([&] {
        started = 1;
        return intptr_t(kio_dial_tcp("127.0.0.1", port, 0));
    });
    ASSERT_TRUE(kt::wait_flag(started, 1));
    kio_sleep(50 * kMs);
    uint64_t t0 = kio_now();
    EXPECT_EQ(kt::cancel_ok(t2), -ECANCELED);
    EXPECT_LT(kt::since(t0), kt::prompt(1 * kSec));
    EXPECT_EQ(rt.destroy(), 0);
}

// ===========================================================================
// Files

namespace {

class TempDir {
  public:
    TempDir() {
        const char *base = std::getenv("TMPDIR");
        std::string tmpl = std::string(base && *base ? base : "/tmp") + "/kio_io_test.XXXXXX";
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        if (mkdtemp(buf.data())) path_ = buf.data();
    }
    ~TempDir() {
        if (path_.empty()) return;
        for (const std::string &f : files_) unlink(f.c_str());
        rmdir(path_.c_str());
    }
    bool ok() const { return !path_.empty(); }
    std::string file(const std::string &name) {
        std::string p = path_ + "/" + name;
        files_.insert(p);
        return p;
    }
    const std::string &path() const { return path_; }

  private:
    std::string path_;
    std::set<std::string> files_;
};

// The deterministic content of byte range [off, off + len) of a test file:
// 64-bit word k (at offset 8k) is a hash of k. off and len are multiples of 8.
void pattern(unsigned char *buf, size_t len, uint64_t off) {
    for (size_t i = 0; i < len; i += 8) {
        uint64_t x = (off + i) / 8 * 0x9E3779B97F4A7C15ull;
        x ^= x >> 29;
        std::memcpy(buf + i, &x, 8);
    }
}

}  // namespace

TEST(File, OpenCreateWriteReadAndFsync) {
    TempDir dir;
    ASSERT_TRUE(dir.ok());
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::string p = dir.file("a.txt");
    int fd = kio_open(p.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0600);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(kio_pwrite(fd, "hello, file", 11, 0), 11);
    EXPECT_EQ(kio_fsync(fd), 0);
    char buf[32] = {0};
    EXPECT_EQ(kio_pread(fd, buf, sizeof buf, 0), 11);
    EXPECT_STREQ(buf, "hello, file");
    // kio_read / kio_write on a regular file use the file position.
    EXPECT_EQ(kio_write(fd, "XY", 2), 2);
    std::memset(buf, 0, sizeof buf);
    EXPECT_EQ(kio_pread(fd, buf, sizeof buf, 0), 11);
    EXPECT_STREQ(buf, "XYllo, file");
    EXPECT_EQ(kio_read(fd, buf, 3), 3);
    EXPECT_EQ(std::string(buf, 3), "llo");
    struct stat st;
    ASSERT_EQ(stat(p.c_str(), &st), 0);
    EXPECT_EQ(st.st_size, 11);
    EXPECT_EQ(kio_close(fd), 0);
    // Reopen read-only.
    fd = kio_open(p.c_str(), O_RDONLY, 0);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(kio_pread(fd, buf, 5, 7), 4);
    EXPECT_EQ(std::string(buf, 4), "file");
    EXPECT_EQ(kio_fsync(fd), 0);
    EXPECT_EQ(kio_pwrite(fd, "no", 2, 0), -EBADF);  // not open for writing
    EXPECT_EQ(kio_close(fd), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(File, PwritePreadAtOffsets) {
    TempDir dir;
    ASSERT_TRUE(dir.ok());
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::string p = dir.file("offsets.bin");
    int fd = kio_open(p.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    const off_t kFar = off_t(3) << 20;
    EXPECT_EQ(kio_pwrite(fd, "END", 3, kFar), 3);
    EXPECT_EQ(kio_pwrite(fd, "BEGIN", 5, 0), 5);
    EXPECT_EQ(kio_pwrite(fd, "mid", 3, 4096 + 17), 3);
    char buf[16];
    EXPECT_EQ(kio_pread(fd, buf, 5, 0), 5);
    EXPECT_EQ(std::string(buf, 5), "BEGIN");
    EXPECT_EQ(kio_pread(fd, buf, 3, 4096 + 17), 3);
    EXPECT_EQ(std::string(buf, 3), "mid");
    std::memset(buf, 'x', sizeof buf);
    EXPECT_EQ(kio_pread(fd, buf, 8, 1000), 8);  // a hole reads as zeros
    for (int i = 0; i < 8; i++) EXPECT_EQ(buf[i], 0);
    EXPECT_EQ(kio_pread(fd, buf, sizeof buf, kFar), 3);  // short read at the end
    EXPECT_EQ(std::string(buf, 3), "END");
    EXPECT_EQ(kio_pread(fd, buf, sizeof buf, kFar + 3), 0);  // at EOF
    EXPECT_EQ(kio_pread(fd, buf, sizeof buf, kFar + 1000), 0);  // past EOF
    EXPECT_EQ(kio_pread(fd, buf, sizeof buf, -1), -EINVAL);
    EXPECT_EQ(kio_pwrite(fd, buf, 1, -1), -EINVAL);
    struct stat st;
    ASSERT_EQ(fstat(fd, &st), 0);
    EXPECT_EQ(st.st_size, kFar + 3);
    EXPECT_EQ(kio_close(fd), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(File, ErrorsAreNegativeErrno) {
    TempDir dir;
    ASSERT_TRUE(dir.ok());
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    EXPECT_EQ(kio_open(nullptr, O_RDONLY, 0), -EINVAL);
    EXPECT_EQ(kio_open((dir.path() + "/missing").c_str(), O_RDONLY, 0), -ENOENT);
    EXPECT_EQ(kio_open((dir.path() + "/no/such/dir/f").c_str(), O_CREAT | O_RDWR, 0600), -ENOENT);
    std::string p = dir.file("exists");
    int fd = kio_open(p.c_str(), O_CREAT | O_RDWR, 0600);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(kio_open(p.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600), -EEXIST);
    char buf[4] = {0};
    EXPECT_EQ(kio_pread(-1, buf, 1, 0), -EBADF);
    EXPECT_EQ(kio_pwrite(-1, buf, 1, 0), -EBADF);
    EXPECT_EQ(kio_fsync(-1), -EBADF);
    EXPECT_EQ(kio_pread(100000, buf, 1, 0), -EBADF);
    EXPECT_EQ(kio_pread(fd, nullptr, 1, 0), -EINVAL);
    EXPECT_EQ(kio_pwrite(fd, nullptr, 1, 0), -EINVAL);
    std::thread([&] {
        EXPECT_EQ(kio_pread(fd, nullptr, 1, 0), -EINVAL);
        EXPECT_EQ(kio_pwrite(fd, nullptr, 1, 0), -EINVAL);
    }).join();
    EXPECT_EQ(kio_close(fd), 0);
    EXPECT_EQ(kio_pread(fd, buf, 1, 0), -EBADF);
    EXPECT_EQ(kio_pwrite(fd, buf, 1, 0), -EBADF);
    EXPECT_EQ(kio_fsync(fd), -EBADF);
    int d = kio_open(dir.path().c_str(), O_RDONLY | O_DIRECTORY, 0);
    ASSERT_GE(d, 0);
    EXPECT_EQ(kio_pread(d, buf, 1, 0), -EISDIR);
    kio_close(d);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(File, CopyOfAHundredMiBFileIsExact) {
    TempDir dir;
    ASSERT_TRUE(dir.ok());
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    const size_t kChunk = 1u << 20;
    const size_t kChunks = volume(100);
    std::string src = dir.file("src.bin"), dst = dir.file("dst.bin");
    kio_task *t = kt::spawn([&] {
        std::vector<unsigned char> buf(kChunk), want(kChunk);
        int a = kio_open(src.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0600);
        if (a < 0) return intptr_t(-1);
        for (size_t i = 0; i < kChunks; i++) {
            pattern(buf.data(), kChunk, i * kChunk);
            if (kio_pwrite(a, buf.data(), kChunk, off_t(i * kChunk)) != ssize_t(kChunk)) return intptr_t(-2);
        }
        int b = kio_open(dst.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0600);
        if (b < 0) return intptr_t(-3);
        // Copy back to front, so offsets matter.
        for (size_t k = kChunks; k-- > 0;) {
            ssize_t n = kio_pread(a, buf.data(), kChunk, off_t(k * kChunk));
            if (n != ssize_t(kChunk)) return intptr_t(-4);
            if (kio_pwrite(b, buf.data(), kChunk, off_t(k * kChunk)) != ssize_t(kChunk)) return intptr_t(-5);
        }
        if (kio_pread(b, buf.data(), kChunk, off_t(kChunks * kChunk)) != 0) return intptr_t(-6);
        for (size_t i = 0; i < kChunks; i++) {
            if (kio_pread(b, buf.data(), kChunk, off_t(i * kChunk)) != ssize_t(kChunk)) return intptr_t(-7);
            pattern(want.data(), kChunk, i * kChunk);
            if (buf != want) return intptr_t(-1000 - intptr_t(i));
        }
        kio_close(a);
        kio_close(b);
        return intptr_t(0);
    });
    EXPECT_EQ(kt::await_ok(t), 0);
    struct stat st;
    ASSERT_EQ(stat(dst.c_str(), &st), 0);
    EXPECT_EQ(uint64_t(st.st_size), kChunks * kChunk);
    EXPECT_EQ(rt.destroy(), 0);
}

class FileConcurrency : public ::testing::TestWithParam<unsigned> {};
INSTANTIATE_TEST_SUITE_P(Threads, FileConcurrency, ::testing::Values(1u, 2u), threads_name);

// Many fibers doing file I/O at once (on the blocking pool) all complete,
// and a ticking fiber keeps running meanwhile.
TEST_P(FileConcurrency, ManyFibersDoingFileIoCompleteWhileOthersRun) {
    TempDir dir;
    ASSERT_TRUE(dir.ok());
    kt::Rt rt(GetParam());
    ASSERT_EQ(rt.rc(), 0);
    constexpr int kFibers = 32;
    const size_t kPer = std::max(volume(2u << 20) / (64 * 1024), size_t(1)) * (64 * 1024), kBlock = 64 * 1024;
    std::string p = dir.file("shared.bin");
    int fd = kio_open(p.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0600);
    ASSERT_GE(fd, 0);
    std::atomic<int> stop{0};
    std::atomic<uint64_t> ticks{0};
    kio_task *ticker = kt::spawn([&] {
        while (!stop.load()) {
            kio_sleep(1 * kMs);
            ticks++;
        }
        return intptr_t(0);
    });
    std::vector<kio_task *> ts;
    for (int i = 0; i < kFibers; i++) {
        ts.push_back(kt::spawn([&, i] {
            std::vector<unsigned char> buf(kBlock), want(kBlock);
            uint64_t base = uint64_t(i) * kPer;
            for (size_t o = 0; o < kPer; o += kBlock) {
                pattern(buf.data(), kBlock, base + o);
                if (kio_pwrite(fd, buf.data(), kBlock, off_t(base + o)) != ssize_t(kBlock)) return intptr_t(-1);
            }
            for (size_t o = 0; o < kPer; o += kBlock) {
                if (kio_pread(fd, buf.data(), kBlock, off_t(base + o)) != ssize_t(kBlock)) return intptr_t(-2);
                pattern(want.data(), kBlock, base + o);
                if (buf != want) return intptr_t(-3);
            }
            return intptr_t(0);
        }));
    }
    int bad = 0;
    for (kio_task *t : ts) bad += kt::await_ok(t) != 0;
    EXPECT_EQ(bad, 0);
    EXPECT_EQ(kio_fsync(fd), 0);
    uint64_t seen = ticks.load();
    stop = 1;
    EXPECT_EQ(kt::await_ok(ticker), 0);
    EXPECT_GT(seen, 0u) << "the ticker never ran while file I/O was in progress";
    kio_close(fd);
    EXPECT_EQ(rt.destroy(), 0);
}

// Deterministic: a kio_open that blocks (a FIFO without a writer) runs on the
// pool while the only worker keeps running a ticking fiber.
TEST(File, WorkerRunsOtherFibersWhileAFileOpBlocks) {
    TempDir dir;
    ASSERT_TRUE(dir.ok());
    std::string fifo = dir.file("fifo");
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> opened{0};
    std::atomic<uint64_t> ticks{0};
    kio_task *opener = kt::spawn([&] {
        int fd = kio_open(fifo.c_str(), O_RDONLY, 0);  // blocks until a writer opens
        opened = 1;
        return intptr_t(fd);
    });
    kio_task *ticker = kt::spawn([&] {
        while (!opened.load() && ticks.load() < 100000) {
            kio_sleep(1 * kMs);
            ticks++;
        }
        return intptr_t(0);
    });
    // Let the ticker advance 20 times while the open is still blocked.
    uint64_t end = kio_now() + 10 * kSec;
    while (ticks.load() < 20 && kio_now() < end) kio_sleep(1 * kMs);
    EXPECT_GE(ticks.load(), 20u);
    EXPECT_EQ(opened.load(), 0);
    int w = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);  // a reader waits: succeeds
    EXPECT_GE(w, 0);
    int r = int(kt::await_ok(opener));
    EXPECT_GE(r, 0);
    EXPECT_EQ(kt::await_ok(ticker), 0);
    if (w >= 0) {
        EXPECT_EQ(write(w, "f", 1), 1);
        char ch;
        EXPECT_EQ(kio_read(r, &ch, 1), 1);
        close(w);
    }
    if (r >= 0) kio_close(r);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(File, FileCallsFromAPlainThread) {
    TempDir dir;
    ASSERT_TRUE(dir.ok());
    std::string p = dir.file("plain.bin");
    kt::Rt rt(1);  // a runtime exists; the thread is not part of it
    ASSERT_EQ(rt.rc(), 0);
    std::thread([&] {
        int fd = kio_open(p.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0600);
        ASSERT_GE(fd, 0);
        EXPECT_EQ(kio_pwrite(fd, "plain thread", 12, 100), 12);
        EXPECT_EQ(kio_fsync(fd), 0);
        char buf[16] = {0};
        EXPECT_EQ(kio_pread(fd, buf, 12, 100), 12);
        EXPECT_STREQ(buf, "plain thread");
        EXPECT_EQ(kio_open(nullptr, O_RDONLY, 0), -EINVAL);
        EXPECT_EQ(kio_close(fd), 0);
        EXPECT_EQ(kio_pread(fd, buf, 1, 0), -EBADF);
    }).join();
    EXPECT_EQ(rt.destroy(), 0);
}

// "Cancellation detaches the waiter (-ECANCELED) and lets the operation
// finish in the background" (Files and blocking work), and every call that
// parks honours the deadline scope.
TEST(File, CancelOrDeadlineDuringABlockedFileOpReturnsPromptly) {
    TempDir dir;
    ASSERT_TRUE(dir.ok());
    std::string fifo = dir.file("fifo");
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    // Unblocks the pool thread (opens the FIFO's write end) once the test
    // is done waiting, or after 1.5 s if kio_open never returns on its own.
    auto unblock = [&] {
        int w = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (w >= 0) close(w);
    };
    {
        std::atomic<int> started{0};
        kio_task *t = kt::spawn([&] {
            started = 1;
            return intptr_t(kio_open(fifo.c_str(), O_RDONLY, 0));
        });
        ASSERT_TRUE(kt::wait_flag(started, 1));
        kio_sleep(50 * kMs);
        Later rescue(1500 * kMs, unblock);
        uint64_t t0 = kio_now();
        intptr_t r = kt::cancel_ok(t);
        uint64_t took = kt::since(t0);
        rescue.cancel();
        EXPECT_EQ(r, -ECANCELED) << "kio_open returned " << r << " after " << took / kMs << " ms";
        EXPECT_LT(took, 1 * kSec);
        if (r >= 0) kio_close(int(r));
        else unblock();  // the background open finishes; its descriptor is leaked
    }
    {
        kio_task *t = kt::spawn([&] {
            uint64_t t0 = kio_now(), d = t0 + 100 * kMs;
            uint64_t prev = kio_deadline_set(d);
            Later rescue(1500 * kMs, unblock);
            int r = kio_open(fifo.c_str(), O_RDONLY, 0);
            uint64_t end = kio_now();
            rescue.cancel();
            kio_deadline_set(prev);
            EXPECT_LT(end - t0, 1 * kSec) << "kio_open returned " << r;
            if (r >= 0) kio_close(r);
            else unblock();
            return intptr_t(r);
        });
        EXPECT_EQ(kt::await_ok(t), -ETIMEDOUT);
    }
    EXPECT_EQ(rt.destroy(), 0);
}

// ===========================================================================
// kio_blocking

namespace {

void *plus_one(void *arg) { return iv(vi(arg) + 1); }
void *tid_of_caller(void *) { return iv(kt::os_thread_id()); }
void *sleep_ms(void *arg) {
    usleep(useconds_t(vi(arg) * 1000));
    return arg;
}

// State shared with fns that may outlive the fiber that started them.
struct Gate {
    std::atomic<int> started{0}, release{0}, done{0};
};

void *wait_gate(void *arg) {
    auto *g = static_cast<Gate *>(arg);
    g->started = 1;
    for (int i = 0; i < 10000 && !g->release.load(); i++) usleep(1000);  // at most 10 s
    g->done = 1;
    return iv(77);
}

}  // namespace

TEST(Blocking, ReturnsTheResultOfFn) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    void *res = nullptr;
    EXPECT_EQ(kio_blocking(plus_one, iv(41), &res), 0);
    EXPECT_EQ(vi(res), 42);
    EXPECT_EQ(kio_blocking(plus_one, iv(1), nullptr), 0);
    kio_task *t = kt::spawn([] {
        void *r = nullptr;
        int rc = kio_blocking(plus_one, iv(99), &r);
        return rc ? intptr_t(rc) : vi(r);
    });
    EXPECT_EQ(kt::await_ok(t), 100);
    EXPECT_EQ(kio_blocking(nullptr, nullptr, &res), -EINVAL);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Blocking, RunsOnAnotherOsThread) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    std::vector<kio_task *> ts;
    for (int i = 0; i < 8; i++) {
        ts.push_back(kt::spawn([] {
            long before = kt::os_thread_id();
            void *r = nullptr;
            int rc = kio_blocking(tid_of_caller, nullptr, &r);
            long after = kt::os_thread_id();
            if (rc) return intptr_t(rc);
            return intptr_t(vi(r) != before && vi(r) != after && vi(r) > 0 ? 1 : -1);
        }));
    }
    for (kio_task *t : ts) EXPECT_EQ(kt::await_ok(t), 1);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Blocking, WorkerKeepsRunningOtherFibersWhileFnBlocks) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::atomic<int> stop{0};
    std::atomic<uint64_t> ticks{0};
    kio_task *ticker = kt::spawn([&] {
        while (!stop.load()) {
            kio_sleep(1 * kMs);
            ticks++;
        }
        return intptr_t(0);
    });
    kio_yield();
    uint64_t t0 = kio_now();
    void *res = nullptr;
    EXPECT_EQ(kio_blocking(sleep_ms, iv(200), &res), 0);
    uint64_t took = kt::since(t0);
    uint64_t seen = ticks.load();
    stop = 1;
    EXPECT_EQ(kt::await_ok(ticker), 0);
    EXPECT_EQ(vi(res), 200);
    EXPECT_GE(took, 200 * kMs);
    EXPECT_GE(seen, 20u) << "the ticker barely ran during a 200 ms blocking call";
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Blocking, CancelReturnsPromptlyWhileFnRunsToCompletion) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    static Gate gate;  // outlives the fiber: the fn keeps using it
    gate.started = 0;
    gate.release = 0;
    gate.done = 0;
    std::atomic<int> result_untouched{0};
    kio_task *t = kt::spawn([&] {
        void *r = iv(-5);
        int rc = kio_blocking(wait_gate, &gate, &r);
        result_untouched = vi(r) == -5;
        return intptr_t(rc);
    });
    ASSERT_TRUE(kt::wait_flag(gate.started, 1));
    uint64_t t0 = kio_now();
    EXPECT_EQ(kt::cancel_ok(t), -ECANCELED);
    EXPECT_LT(kt::since(t0), kt::prompt(1 * kSec));
    EXPECT_EQ(gate.done.load(), 0) << "cancel waited for fn";
    EXPECT_EQ(result_untouched.load(), 1);
    gate.release = 1;
    EXPECT_TRUE(kt::wait_flag(gate.done, 1));
    // The pool is still usable.
    void *res = nullptr;
    EXPECT_EQ(kio_blocking(plus_one, iv(1), &res), 0);
    EXPECT_EQ(vi(res), 2);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Blocking, DeadlineScopeReturnsEtimedoutWhileFnRunsToCompletion) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    static Gate gate;
    gate.started = 0;
    gate.release = 0;
    gate.done = 0;
    uint64_t t0 = kio_now(), d = t0 + 100 * kMs;
    uint64_t prev = kio_deadline_set(d);
    void *r = iv(-5);
    int rc = kio_blocking(wait_gate, &gate, &r);
    uint64_t end = kio_now();
    kio_deadline_set(prev);
    EXPECT_EQ(rc, -ETIMEDOUT);
    expect_deadline_bounds(t0, d, end);
    EXPECT_EQ(vi(r), -5);
    EXPECT_EQ(gate.done.load(), 0);
    gate.release = 1;
    EXPECT_TRUE(kt::wait_flag(gate.done, 1));
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Blocking, FromAPlainThreadCallsFnDirectly) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    std::thread([] {
        void *r = nullptr;
        EXPECT_EQ(kio_blocking(tid_of_caller, nullptr, &r), 0);
        EXPECT_EQ(vi(r), kt::os_thread_id());
        EXPECT_EQ(kio_blocking(plus_one, iv(6), &r), 0);
        EXPECT_EQ(vi(r), 7);
        EXPECT_EQ(kio_blocking(nullptr, nullptr, &r), -EINVAL);
    }).join();
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Blocking, HundredConcurrentCallsUseAnElasticPool) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    constexpr int kN = 100;
    uint64_t t0 = kio_now();
    std::vector<kio_task *> ts;
    for (int i = 0; i < kN; i++) {
        ts.push_back(kt::spawn([] {
            void *r = nullptr;
            int rc = kio_blocking(sleep_ms, iv(50), &r);
            return rc ? intptr_t(rc) : vi(r);
        }));
    }
    for (kio_task *t : ts) EXPECT_EQ(kt::await_ok(t), 50);
    uint64_t took = kt::since(t0);
    EXPECT_GE(took, 50 * kMs);
    // Serially this would take 5 s.
    EXPECT_LT(took, std::min<uint64_t>(kt::prompt(2 * kSec), 4 * kSec)) << took / kMs << " ms";
    EXPECT_EQ(rt.destroy(), 0);
}

// A kio_blocking call that waits for another one must not wait forever: the
// pool must start a thread for the second call while the first one blocks
// ("a job starts a thread when no thread is idle").
TEST(Blocking, CallsThatWaitForEachOtherDoNotDeadlock) {
    static std::atomic<int> flag;
    struct Fns {
        static void *waiter(void *) {
            for (int i = 0; i < 1500 && !flag.load(); i++) usleep(1000);  // at most 1.5 s
            return iv(flag.load());
        }
        static void *setter(void *) {
            flag = 1;
            return nullptr;
        }
    };
    // Each round on a fresh runtime (a fresh pool), until the first failure.
    for (int round = 0; round < 10 && !HasFailure(); round++) {
        kt::Rt rt(1);
        ASSERT_EQ(rt.rc(), 0);
        // One idle pool thread.
        ASSERT_EQ(kio_blocking(plus_one, nullptr, nullptr), 0);
        kio_sleep(20 * kMs);
        flag = 0;
        uint64_t t0 = kio_now();
        // The setter is spawned first: children run newest first, so the
        // waiter's job is queued first.
        kio_task *s = kt::spawn([] { return intptr_t(kio_blocking(Fns::setter, nullptr, nullptr)); });
        kio_task *w = kt::spawn([] {
            void *r = nullptr;
            int rc = kio_blocking(Fns::waiter, nullptr, &r);
            return rc ? intptr_t(rc) : vi(r);
        });
        EXPECT_EQ(kt::await_ok(w), 1) << "round " << round << ": the waiter never saw the setter run";
        EXPECT_EQ(kt::await_ok(s), 0);
        EXPECT_LT(kt::since(t0), kt::prompt(1 * kSec)) << "round " << round;
        EXPECT_EQ(rt.destroy(), 0);
    }
}

// A pool thread that wakes the main fiber of a two-worker runtime (whose
// second worker has not started yet) may start that worker lazily while the
// main fiber, already running again, destroys the runtime: destroy must still
// join every worker it started (no thread may outlive the runtime).
TEST(Blocking, DestroyRightAfterAPoolThreadWokeTheMainFiber) {
    const int rounds = int(scaled(300));
    for (int i = 0; i < rounds && !HasFailure(); i++) {
        kt::Rt rt(2);
        ASSERT_EQ(rt.rc(), 0);
        void *r = nullptr;
        ASSERT_EQ(kio_blocking(plus_one, iv(i), &r), 0);
        ASSERT_EQ(vi(r), i + 1);
        ASSERT_EQ(rt.destroy(), 0);
    }
}

namespace {

// Pool jobs that hold their thread until released (at most 10 s).
struct Hogs {
    std::atomic<int> started{0}, release{0};
    std::vector<kio_task *> tasks;

    // Occupies all 64 threads of the caller's runtime's pool; false if they
    // did not all start.
    bool occupy_pool();
    // Lets them go and awaits their tasks.
    void free_pool() {
        release = 1;
        for (kio_task *t : tasks) EXPECT_EQ(kt::await_ok(t), 0);
        tasks.clear();
    }
};

void *hog(void *arg) {
    auto *h = static_cast<Hogs *>(arg);
    h->started.fetch_add(1);
    for (int i = 0; i < 10000 && !h->release.load(); i++) usleep(1000);
    return nullptr;
}

bool Hogs::occupy_pool() {
    for (int i = 0; i < 64; i++) tasks.push_back(kt::spawn([this] { return intptr_t(kio_blocking(hog, this, nullptr)); }));
    return kt::wait_flag(started, 64);
}

}  // namespace

// kio_pread, kio_pwrite and kio_fsync queued behind a pool whose 64 threads
// are all busy have not started: cancellation and the deadline withdraw them
// (they never run), and a deadline already past fails them on entry.
TEST(Blocking, FileCallsQueuedBehindABusyPoolEndByCancelOrDeadline) {
    int fd = unlinked_temp_file();
    ASSERT_GE(fd, 0);
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    Hogs h;
    ASSERT_TRUE(h.occupy_pool());
    std::atomic<int> started{0};
    kio_task *reader = kt::spawn([&] {
        char b[4];
        started = 1;
        return intptr_t(kio_pread(fd, b, sizeof b, 0));
    });
    ASSERT_TRUE(kt::wait_flag(started, 1));
    kio_sleep(20 * kMs);  // queued now
    uint64_t t0 = kio_now();
    EXPECT_EQ(kt::cancel_ok(reader), -ECANCELED);
    EXPECT_LT(kt::since(t0), kt::prompt(500 * kMs));
    uint64_t prev = kio_deadline_set(kio_now() + 30 * kMs);
    t0 = kio_now();
    EXPECT_EQ(kio_pwrite(fd, "abcd", 4, 0), -ETIMEDOUT);
    EXPECT_LT(kt::since(t0), kt::prompt(500 * kMs));
    kio_deadline_set(kio_now() + 30 * kMs);
    EXPECT_EQ(kio_fsync(fd), -ETIMEDOUT);
    kio_deadline_set(kio_now() - 1);
    EXPECT_EQ(kio_pwrite(fd, "abcd", 4, 0), -ETIMEDOUT) << "a deadline already past";
    kio_deadline_set(prev);
    h.free_pool();
    kio_sleep(20 * kMs);
    struct stat sb;
    ASSERT_EQ(fstat(fd, &sb), 0);
    EXPECT_EQ(sb.st_size, 0) << "a withdrawn kio_pwrite ran anyway";
    // The pool is free again: the calls run.
    EXPECT_EQ(kio_pwrite(fd, "abcd", 4, 0), 4);
    char b[4];
    EXPECT_EQ(kio_pread(fd, b, sizeof b, 0), 4);
    EXPECT_EQ(kio_fsync(fd), 0);
    kio_close(fd);
    EXPECT_EQ(rt.destroy(), 0);
}

// kio_close of a descriptor whose kio_pwrite/kio_pread/kio_fsync waits in
// the pool's queue wakes the fiber with -EBADF at once, and the job never
// runs: the number may name another file by then (here it does).
TEST(Blocking, CloseWithdrawsFileCallsQueuedBehindABusyPool) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    Hogs h;
    ASSERT_TRUE(h.occupy_pool());
    for (int op = 0; op < 3; op++) {
        int fd = unlinked_temp_file();
        ASSERT_GE(fd, 0);
        std::atomic<int> started{0};
        kio_task *t = kt::spawn([&] {
            char b[4];
            started = 1;
            switch (op) {
            case 0: return intptr_t(kio_pwrite(fd, "XXXX", 4, 0));
            case 1: return intptr_t(kio_pread(fd, b, sizeof b, 0));
            default: return intptr_t(kio_fsync(fd));
            }
        });
        ASSERT_TRUE(kt::wait_flag(started, 1));
        kio_sleep(20 * kMs);  // queued now
        uint64_t t0 = kio_now();
        ASSERT_EQ(kio_close(fd), 0);
        int other = unlinked_temp_file();  // most likely the same number
        ASSERT_GE(other, 0);
        EXPECT_EQ(kt::await_ok(t), -EBADF) << "op " << op;
        EXPECT_LT(kt::since(t0), kt::prompt(500 * kMs)) << "op " << op;
        struct stat sb;
        ASSERT_EQ(fstat(other, &sb), 0);
        EXPECT_EQ(sb.st_size, 0) << "op " << op;
        close(other);
    }
    h.free_pool();
    EXPECT_EQ(rt.destroy(), 0);
}

namespace {

void *set_deadline_and_return(void *) {
    kio_deadline_set(1);
    return nullptr;
}

void *get_deadline(void *) { return reinterpret_cast<void *>(uintptr_t(kio_deadline_get())); }

}  // namespace

// A deadline that a kio_blocking function sets and leaves does not bound the
// later jobs of its pool thread.
TEST(Blocking, ADeadlineSetInAJobDoesNotOutliveIt) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    for (int i = 0; i < 20; i++) {  // one idle pool thread takes them all
        ASSERT_EQ(kio_blocking(set_deadline_and_return, nullptr, nullptr), 0);
        void *d = iv(7);
        ASSERT_EQ(kio_blocking(get_deadline, nullptr, &d), 0);
        EXPECT_EQ(d, nullptr) << "job " << i;
    }
    EXPECT_EQ(rt.destroy(), 0);
}

// ===========================================================================
// Completion queues

namespace {

void *ret_arg(void *arg) { return arg; }

bool fd_readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

}  // namespace

TEST(Cq, CreateFdDestroyAndNullArguments) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_cq *cq = nullptr;
    ASSERT_EQ(kio_cq_create(&cq), 0);
    ASSERT_NE(cq, nullptr);
    int fd = kio_cq_fd(cq);
    EXPECT_GE(fd, 0);
    EXPECT_GE(fcntl(fd, F_GETFD), 0);
    EXPECT_EQ(kio_cq_fd(cq), fd);  // stable
    EXPECT_FALSE(fd_readable(fd));
    kio_cq_event ev[4];
    EXPECT_EQ(kio_cq_poll(cq, ev, 4), 0);
    EXPECT_EQ(kio_cq_poll(cq, nullptr, 0), 0);
    EXPECT_EQ(kio_cq_poll(cq, nullptr, 4), -EINVAL);

    EXPECT_EQ(kio_cq_create(nullptr), -EINVAL);
    EXPECT_EQ(kio_cq_fd(nullptr), -EINVAL);
    EXPECT_EQ(kio_cq_poll(nullptr, ev, 4), -EINVAL);
    EXPECT_EQ(kio_cq_destroy(nullptr), -EINVAL);
    kio_task *t;
    ASSERT_EQ(kio_spawn(nullptr, ret_arg, iv(5), &t), 0);
    EXPECT_EQ(kio_cq_watch(nullptr, t, 1), -EINVAL);
    EXPECT_EQ(kio_cq_watch(cq, nullptr, 1), -EINVAL);
    EXPECT_EQ(kt::await_ok(t), 5);  // the failed watch did not consume it
    EXPECT_EQ(kio_cq_destroy(cq), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Cq, ThousandWatchedTasksGiveExactlyOneEventEachToAnEventLoopThread) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    constexpr int kN = 1000;
    kio_cq *cq = nullptr;
    ASSERT_EQ(kio_cq_create(&cq), 0);
    int fd = kio_cq_fd(cq);
    ASSERT_GE(fd, 0);
    std::vector<int> seen(kN, 0);
    std::atomic<int> done{0}, bad_events{0}, empty_wakeups{0}, timeouts{0};
    // The event loop: a plain thread that waits with poll(2) and drains.
    std::thread loop([&] {
        int got = 0;
        while (got < kN) {
            pollfd p{fd, POLLIN, 0};
            int r = poll(&p, 1, 10000);
            if (r == 0) {
                timeouts++;
                break;
            }
            if (r < 0) continue;
            kio_cq_event ev[64];
            int n = kio_cq_poll(cq, ev, 64);
            if (n <= 0) {
                empty_wakeups++;
                continue;
            }
            for (int i = 0; i < n; i++) {
                uint64_t id = ev[i].user_data - 1000000;
                if (id >= uint64_t(kN) || vi(ev[i].result) != intptr_t(id) * 7 + 1) {
                    bad_events++;
                    continue;
                }
                seen[size_t(id)]++;
                got++;
            }
        }
        done = 1;
    });
    for (int i = 0; i < kN; i++) {
        kio_task *t = kt::spawn([i] {
            if (i % 3 == 0) kio_sleep(uint64_t(i % 17) * kMs);
            else if (i % 3 == 1) kio_yield();
            return intptr_t(i) * 7 + 1;
        });
        if (!t) continue;
        EXPECT_EQ(kio_cq_watch(cq, t, 1000000 + uint64_t(i)), 0);
        if (i % 100 == 0) kio_yield();  // some finish before they are watched
    }
    EXPECT_TRUE(kt::wait_flag(done, 1, 60 * kSec));
    loop.join();
    EXPECT_EQ(timeouts.load(), 0);
    EXPECT_EQ(bad_events.load(), 0);
    EXPECT_EQ(empty_wakeups.load(), 0) << "the descriptor was readable with no event pending";
    int missing = 0, dup = 0;
    for (int v : seen) {
        missing += v == 0;
        dup += v > 1;
    }
    EXPECT_EQ(missing, 0);
    EXPECT_EQ(dup, 0);
    // Everything drained: not readable, nothing more.
    EXPECT_FALSE(fd_readable(fd));
    kio_cq_event ev[4];
    EXPECT_EQ(kio_cq_poll(cq, ev, 4), 0);
    EXPECT_EQ(kio_cq_destroy(cq), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Cq, DescriptorIsReadableExactlyWhileEventsArePending) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_cq *cq = nullptr;
    ASSERT_EQ(kio_cq_create(&cq), 0);
    int fd = kio_cq_fd(cq);
    EXPECT_FALSE(fd_readable(fd));
    // A task that already finished posts at once.
    kio_task *t;
    ASSERT_EQ(kio_spawn(nullptr, ret_arg, iv(11), &t), 0);
    kio_yield();  // one worker: it runs to completion
    ASSERT_EQ(kio_cq_watch(cq, t, 1), 0);
    EXPECT_TRUE(fd_readable(fd));
    kio_cq_event ev[8];
    ASSERT_EQ(kio_cq_poll(cq, ev, 8), 1);
    EXPECT_EQ(ev[0].user_data, 1u);
    EXPECT_EQ(vi(ev[0].result), 11);
    EXPECT_FALSE(fd_readable(fd));
    // Three events, taken one at a time: readable until the last one.
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(kio_spawn(nullptr, ret_arg, iv(20 + i), &t), 0);
        ASSERT_EQ(kio_cq_watch(cq, t, uint64_t(20 + i)), 0);
    }
    EXPECT_FALSE(fd_readable(fd));  // not run yet
    kio_sleep(5 * kMs);
    std::set<uint64_t> got;
    for (int i = 0; i < 3; i++) {
        EXPECT_TRUE(fd_readable(fd)) << i;
        ASSERT_EQ(kio_cq_poll(cq, ev, 1), 1);
        EXPECT_EQ(vi(ev[0].result), intptr_t(ev[0].user_data));
        got.insert(ev[0].user_data);
    }
    EXPECT_EQ(got, (std::set<uint64_t>{20, 21, 22}));
    EXPECT_FALSE(fd_readable(fd));
    EXPECT_EQ(kio_cq_poll(cq, ev, 8), 0);
    EXPECT_EQ(kio_cq_destroy(cq), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Cq, WatchConsumesTheHandleAndIsBusyWhileAwaited) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    kio_cq *cq = nullptr;
    ASSERT_EQ(kio_cq_create(&cq), 0);
    std::atomic<int> release{0};
    kio_task *t = kt::spawn([&] {
        while (!release.load()) kio_sleep(200 * kUs);
        return intptr_t(3);
    });
    ASSERT_EQ(kio_cq_watch(cq, t, 9), 0);
    EXPECT_EQ(kio_await(t, nullptr), -EINVAL);
    EXPECT_EQ(kio_cancel(t, nullptr), -EINVAL);
    EXPECT_EQ(kio_detach(t), -EINVAL);
    EXPECT_EQ(kio_cq_watch(cq, t, 10), -EINVAL);
    release = 1;
    kio_cq_event ev[2];
    int n = 0;
    uint64_t end = kio_now() + 10 * kSec;
    while (n == 0 && kio_now() < end) {
        n = kio_cq_poll(cq, ev, 2);
        if (n == 0) kio_sleep(1 * kMs);
    }
    ASSERT_EQ(n, 1);
    EXPECT_EQ(ev[0].user_data, 9u);
    EXPECT_EQ(vi(ev[0].result), 3);

    // -EBUSY while another task awaits it; the awaiter still gets the result.
    std::atomic<int> release2{0}, waiting{0};
    kio_task *target = kt::spawn([&] {
        while (!release2.load()) kio_sleep(200 * kUs);
        return intptr_t(21);
    });
    kio_task *awaiter = kt::spawn([&] {
        waiting = 1;
        void *r = nullptr;
        int rc = kio_await(target, &r);
        return rc ? intptr_t(rc) : vi(r);
    });
    ASSERT_TRUE(kt::wait_flag(waiting, 1));
    kio_sleep(20 * kMs);
    EXPECT_EQ(kio_cq_watch(cq, target, 1), -EBUSY);
    release2 = 1;
    EXPECT_EQ(kt::await_ok(awaiter), 21);
    EXPECT_EQ(kio_cq_poll(cq, ev, 2), 0);  // nothing was posted for it
    // Watching from a plain thread works too.
    kio_task *t3 = kt::spawn([] { return intptr_t(33); });
    std::thread([&] { EXPECT_EQ(kio_cq_watch(cq, t3, 33), 0); }).join();
    n = 0;
    end = kio_now() + 10 * kSec;
    while (n == 0 && kio_now() < end) {
        n = kio_cq_poll(cq, ev, 2);
        if (n == 0) kio_sleep(1 * kMs);
    }
    ASSERT_EQ(n, 1);
    EXPECT_EQ(ev[0].user_data, 33u);
    EXPECT_EQ(vi(ev[0].result), 33);
    EXPECT_EQ(kio_cq_destroy(cq), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

TEST(Cq, DestroyWithWatchedTasksStillRunningDropsTheirResults) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    constexpr int kN = 50;
    std::atomic<int> finished{0};
    kio_cq *cq = nullptr;
    ASSERT_EQ(kio_cq_create(&cq), 0);
    for (int i = 0; i < kN; i++) {
        kio_task *t = kt::spawn([&finished, i] {
            kio_sleep(uint64_t(5 + i % 30) * kMs);
            finished++;
            return intptr_t(i);
        });
        ASSERT_EQ(kio_cq_watch(cq, t, uint64_t(i)), 0);
    }
    // A second queue with results already pending when it is destroyed.
    kio_cq *cq2 = nullptr;
    ASSERT_EQ(kio_cq_create(&cq2), 0);
    for (int i = 0; i < 5; i++) {
        kio_task *t = kt::spawn([i] { return intptr_t(i); });
        ASSERT_EQ(kio_cq_watch(cq2, t, uint64_t(i)), 0);
    }
    kio_sleep(10 * kMs);
    EXPECT_EQ(kio_cq_destroy(cq), 0);
    EXPECT_EQ(kio_cq_destroy(cq2), 0);
    EXPECT_TRUE(kt::wait_flag(finished, kN));
    kio_sleep(20 * kMs);  // the last ones post (nowhere) after incrementing
    // A new queue works normally afterwards.
    kio_cq *cq3 = nullptr;
    ASSERT_EQ(kio_cq_create(&cq3), 0);
    kio_task *t = kt::spawn([] { return intptr_t(8); });
    ASSERT_EQ(kio_cq_watch(cq3, t, 8), 0);
    kio_cq_event ev;
    int n = 0;
    for (int i = 0; i < 10000 && n == 0; i++) {
        n = kio_cq_poll(cq3, &ev, 1);
        if (n == 0) kio_sleep(1 * kMs);
    }
    EXPECT_EQ(n, 1);
    EXPECT_EQ(kio_cq_destroy(cq3), 0);
    EXPECT_EQ(rt.destroy(), 0);
}

// A fiber may wait on the queue's descriptor with kio_poll (it is "for
// select, poll, epoll"). After kio_cq_destroy closes it, the number is free
// for the next descriptor, which must work with kio like any other.
TEST(Cq, DescriptorNumberReusedAfterDestroyWorksWithKio) {
    kt::Rt rt(1);
    ASSERT_EQ(rt.rc(), 0);
    kio_cq *cq = nullptr;
    ASSERT_EQ(kio_cq_create(&cq), 0);
    int cfd = kio_cq_fd(cq);
    EXPECT_EQ(kio_poll(cfd, POLLIN, kio_now() + 10 * kMs), -ETIMEDOUT);  // a fiber waited on it
    kio_task *t = kt::spawn([] { return intptr_t(1); });
    ASSERT_EQ(kio_cq_watch(cq, t, 1), 0);
    EXPECT_TRUE(kio_poll(cfd, POLLIN, kio_now() + 5 * kSec) & POLLIN);
    EXPECT_EQ(kio_cq_destroy(cq), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv, /*blocking=*/true));  // made outside kio, like the test above
    int fd = sv[0] == cfd ? sv[0] : sv[1] == cfd ? sv[1] : -1;
    if (fd < 0) {
        kio_close(sv[0]);
        kio_close(sv[1]);
        kio_close(cfd);
        GTEST_SKIP() << "the descriptor number was not reused";
    }
    int peer = fd == sv[0] ? sv[1] : sv[0];
    Later rescue(1500 * kMs, [&] { (void)!write(peer, "late", 4); });
    char b[8];
    uint64_t t0 = kio_now();
    uint64_t prev = kio_deadline_set(t0 + 100 * kMs);
    ssize_t r = kio_read(fd, b, sizeof b);
    kio_deadline_set(prev);
    uint64_t took = kt::since(t0);
    rescue.cancel();
    EXPECT_EQ(r, -ETIMEDOUT) << "read took " << took / kMs << " ms";
    EXPECT_TRUE(is_nonblocking(fd));
    // And a parked read is woken by data (bounded: a deadline if it parks
    // without a registration, a rescue write if it blocks the worker).
    drain(fd);
    Later rescue2(1500 * kMs, [&] { (void)!write(peer, "late", 4); });
    kio_task *rd = kt::spawn([&] {
        char buf[8];
        uint64_t saved = kio_deadline_set(kio_now() + 1 * kSec);
        ssize_t n = kio_read(fd, buf, sizeof buf);
        kio_deadline_set(saved);
        return intptr_t(n);
    });
    kio_sleep(10 * kMs);
    t0 = kio_now();
    EXPECT_EQ(kio_write(peer, "now", 3), 3);
    EXPECT_EQ(kt::await_ok(rd), 3);
    EXPECT_LT(kt::since(t0), kt::prompt(1 * kSec));
    rescue2.cancel();
    kio_close(sv[0]);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}
