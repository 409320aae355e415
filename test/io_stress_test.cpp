// I/O stress: races between readiness, cancellation, deadlines and
// kio_close; connection churn; the blocking pool under cancellation. Every
// test checks an exact total; a would-be hang is bounded by a deadline and
// reported. Counts scale with KIO_STRESS_SCALE (percent, default 100).
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "io_util.h"
#include "kio_test_util.h"

using kt::iv;
using kt::kMs;
using kt::kSec;
using kt::kUs;
using kt::scaled;
using kt::vi;
using namespace kio_io;

// Eight readers of one byte each on one socket, and a writer of eight bytes
// at a time: each round every reader gets a byte. A reader that lost the edge
// (it failed with EAGAIN just before the event, while another reader was
// already waiting) would wait for its deadline.
TEST(IoStress, OneByteReadersNeverMissAnEdge) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    const uint64_t rounds = scaled(40000);
    constexpr size_t kReaders = 8;
    // Register the socket with the poller of the worker that is not the
    // test thread's, so edges are dispatched there, concurrently with the
    // readers running on the test thread's worker.
    const long tid0 = kt::os_thread_id();
    std::atomic<int> registered{0};
    for (int i = 0; i < 10000 && !registered.load(); i++) {
        kio_task *t = kt::spawn([&] {
            for (int k = 0; k < 20000; k++) asm volatile("" ::: "memory");  // let a thief take it
            if (kt::os_thread_id() == tid0 || registered.load()) return intptr_t(0);
            registered = 1;
            return intptr_t(kio_poll(sv[0], POLLIN, kio_now() + 1 * kMs));
        });
        kio_task *u = kt::spawn([] { return intptr_t(0); });
        kt::await_ok(u);
        kt::await_ok(t);
    }
    if (!registered.load()) std::printf("note: could not register on the second worker\n");
    std::atomic<int> go{0};
    std::atomic<uint64_t> round_no{0};
    std::atomic<int> quit{0};
    // The writer: a plain thread, so the edge arrives at arbitrary moments.
    std::thread writer([&] {
        std::mt19937 g(1);
        uint64_t last = 0;
        while (!quit.load()) {
            uint64_t r = round_no.load();
            if (r == last || !go.load()) {
                std::this_thread::yield();
                continue;
            }
            last = r;
            for (unsigned spin = g() % 20000; spin > 0; spin--) asm volatile("" ::: "memory");
            (void)!send(sv[1], "abcdefgh", kReaders, MSG_NOSIGNAL);
        }
    });
    uint64_t lost = 0, errors = 0;
    for (uint64_t i = 1; i <= rounds && lost == 0 && errors < 5; i++) {
        auto reader = [&] {
            uint64_t prev = kio_deadline_set(kio_now() + 2 * kSec);
            char ch;
            ssize_t n = kio_read(sv[0], &ch, 1);
            kio_deadline_set(prev);
            return intptr_t(n);
        };
        std::array<kio_task *, kReaders> ts{};
        for (auto &t : ts) t = kt::spawn(reader);
        go = 1;
        round_no = i;
        std::array<intptr_t, kReaders> rs{};
        for (size_t k = 0; k < kReaders; k++) rs[k] = kt::await_ok(ts[k]);
        go = 0;
        int timed_out = 0, other = 0;
        for (intptr_t r : rs) {
            timed_out += r == -ETIMEDOUT;
            other += r != -ETIMEDOUT && r != 1;
        }
        if (timed_out) {
            lost++;
            ADD_FAILURE() << "round " << i << ": " << timed_out << " reader(s) missed the data, unread bytes: "
                          << drain(sv[0]);
        } else if (other) {
            errors++;
            ADD_FAILURE() << "round " << i << ": " << other << " reader(s) failed";
        }
        // Wait for the writer to be done with this round.
        char tmp[4];
        while (recv(sv[0], tmp, sizeof tmp, MSG_DONTWAIT | MSG_PEEK) > 0) {
            ADD_FAILURE() << "extra data";
            drain(sv[0]);
        }
    }
    quit = 1;
    writer.join();
    EXPECT_EQ(lost, 0u);
    kio_close(sv[0]);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

// Cancellation racing with data arrival: each byte is either read by the
// canceled reader or left for the next one; none is lost or duplicated.
TEST(IoStress, CancelVersusReadinessLosesNoData) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    const uint64_t rounds = scaled(20000);
    uint64_t got = 0, canceled = 0, bad = 0, left = 0;
    std::mt19937 g(5);
    for (uint64_t i = 0; i < rounds; i++) {
        kio_task *r = kt::spawn([&] {
            char ch;
            return intptr_t(kio_read(sv[0], &ch, 1));
        });
        bool writer_yields = g() % 2;
        kio_task *w = kt::spawn([&, writer_yields] {
            if (writer_yields) kio_yield();
            return intptr_t(kio_write(sv[1], "x", 1));
        });
        if (g() % 2) kio_yield();
        intptr_t rr = kt::cancel_ok(r);
        EXPECT_EQ(kt::await_ok(w), 1);
        if (rr == 1) got++;
        else if (rr == -ECANCELED) canceled++;
        else bad++;
        // What a canceled reader left behind is still there (taken now, so
        // the socket buffer never fills up).
        left += drain(sv[0]);
    }
    EXPECT_EQ(bad, 0u);
    EXPECT_EQ(got + left, rounds);
    EXPECT_EQ(left, canceled);
    kio_close(sv[0]);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

// kio_close racing with fibers parking on the descriptor (on another worker):
// every one returns -EBADF (or its data), none hangs.
TEST(IoStress, CloseVersusParkNeverHangs) {
#if defined(__SANITIZE_THREAD__)
    // The race exercised here (kio_close on one worker while a fiber on the
    // other is in read(2) on the same descriptor) is one ThreadSanitizer
    // reports by design.
    GTEST_SKIP() << "ThreadSanitizer flags the close(2)/read(2) race this test makes on purpose";
#endif
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    const uint64_t rounds = scaled(100000);
    uint64_t ebadf = 0, bad = 0;
    // Start the second worker first (it opens descriptors that could take a
    // just-closed number).
    std::vector<kio_task *> warm;
    for (int i = 0; i < 8; i++) warm.push_back(kt::spawn([] { return intptr_t(kio_sleep(1 * kMs)); }));
    for (kio_task *t : warm) kt::await_ok(t);
    for (uint64_t i = 0; i < rounds; i++) {
        int sv[2];
        ASSERT_TRUE(unix_pair(sv));
        std::array<kio_task *, 3> rs{};
        for (auto &r : rs) {
            r = kt::spawn([&] {
                char ch;
                uint64_t prev = kio_deadline_set(kio_now() + 2 * kSec);  // a hang becomes -ETIMEDOUT
                ssize_t n = kio_read(sv[0], &ch, 1);
                kio_deadline_set(prev);
                return intptr_t(n);
            });
        }
        for (unsigned k = 0; k < i % 3; k++) kio_yield();
        kio_close(sv[0]);
        for (auto &r : rs) {
            intptr_t v = kt::await_ok(r);
            if (v == -EBADF) {
                ebadf++;
            } else {
                if (bad++ < 5) ADD_FAILURE() << "round " << i << ": a reader got " << v << " instead of -EBADF";
            }
        }
        if (bad >= 5) break;
        kio_close(sv[1]);
    }
    EXPECT_EQ(bad, 0u);
    if (bad == 0) {
        EXPECT_EQ(ebadf, rounds * 3);
    }
    EXPECT_EQ(rt.destroy(), 0);
}

// A number closed with kio_close and handed out again at once, to a socket
// in blocking mode, on which several fibers on two workers start at the same
// time: each must find it switched to non-blocking mode. (The first one to
// look reopens the number's state; another that saw it reopened before the
// reset was complete used to skip the switch and block its worker in
// read(2).) Old calls end with -EBADF; a would-be blocked worker is freed by
// closing the peer, and the round then fails.
TEST(IoStress, ReusedNumberIsNonBlockingForEveryFiberThatStartsOnIt) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    constexpr int kReaders = 4;
    const uint64_t rounds = scaled(1500);
    uint64_t bad = 0;
    std::minstd_rand rng(7);
    for (uint64_t i = 0; i < rounds && bad < 5; i++) {
        int sv[2];
        ASSERT_TRUE(unix_pair(sv, /*blocking=*/true));  // most likely the number closed last round
        std::atomic<int> started{0};
        std::array<kio_task *, kReaders> rs{};
        for (auto &r : rs) {
            r = kt::spawn([&] {
                char ch;
                started++;
                return intptr_t(kio_read(sv[0], &ch, 1));
            });
        }
        while (started.load() < kReaders) kio_sleep(10 * kUs);
        kio_sleep(10 * kUs + rng() % (100 * kUs));
        // A reader blocked in read(2) holds its worker: the close below could
        // not reach it. Wake it through the peer if that happens.
        Later rescue(2 * kSec, [&] { shutdown(sv[1], SHUT_RDWR); });
        kio_close(sv[0]);
        for (auto &r : rs) {
            intptr_t v = kt::await_ok(r);
            if (v != -EBADF && bad++ < 5) ADD_FAILURE() << "round " << i << ": a reader got " << v << " instead of -EBADF";
        }
        rescue.cancel();
        close(sv[1]);
    }
    EXPECT_EQ(bad, 0u);
    EXPECT_EQ(rt.destroy(), 0);
}

// Deadlines expiring as data arrives: every byte is read exactly once.
TEST(IoStress, DeadlineVersusReadinessLosesNoData) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    int sv[2];
    ASSERT_TRUE(unix_pair(sv));
    const uint64_t rounds = scaled(10000);
    std::atomic<uint64_t> got{0};
    uint64_t timeouts = 0, bad = 0, left = 0;
    for (uint64_t i = 0; i < rounds; i++) {
        kio_task *r = kt::spawn([&] {
            uint64_t prev = kio_deadline_set(kio_now() + 200 * kUs);
            char ch;
            ssize_t n = kio_read(sv[0], &ch, 1);
            kio_deadline_set(prev);
            return intptr_t(n);
        });
        kio_task *w = kt::spawn([&, i] {
            kio_sleep((i % 5) * 50 * kUs);
            return intptr_t(kio_write(sv[1], "y", 1));
        });
        intptr_t rr = kt::await_ok(r);
        EXPECT_EQ(kt::await_ok(w), 1);
        if (rr == 1) got++;
        else if (rr == -ETIMEDOUT) timeouts++;
        else bad++;
        left += drain(sv[0]);  // what a timed-out reader left (the buffer never fills)
    }
    EXPECT_EQ(bad, 0u);
    EXPECT_EQ(got.load() + left, rounds);
    EXPECT_EQ(left, timeouts);
    kio_close(sv[0]);
    kio_close(sv[1]);
    EXPECT_EQ(rt.destroy(), 0);
}

// Echo connections opened and closed in waves on two workers.
TEST(IoStress, EchoConnectionChurn) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    int l = kio_listen_tcp("127.0.0.1", 0, 1024);
    ASSERT_GE(l, 0);
    int port = local_port(l);
    const int waves = int(scaled(100)), per_wave = 50;
    std::atomic<int> served{0};
    kio_task *server = kt::spawn([&] {
        for (int i = 0; i < waves * per_wave; i++) {
            int fd = kio_accept(l, nullptr, nullptr, 0);
            if (fd < 0) return intptr_t(fd);
            kio_task *h = kt::spawn([fd, &served] {
                char buf[2048];
                for (;;) {
                    ssize_t n = kio_read(fd, buf, sizeof buf);
                    if (n <= 0 || write_all(fd, buf, size_t(n)) != n) break;
                }
                kio_close(fd);
                served++;
                return intptr_t(0);
            });
            if (h) kio_detach(h);
        }
        return intptr_t(0);
    });
    int bad = 0;
    for (int w = 0; w < waves; w++) {
        std::vector<kio_task *> cs;
        for (int i = 0; i < per_wave; i++) {
            cs.push_back(kt::spawn([=] {
                int fd = kio_dial_tcp("127.0.0.1", port, kio_now() + 30 * kSec);
                if (fd < 0) return intptr_t(fd);
                std::vector<unsigned char> out(4096 + size_t(i) * 64), in(out.size());
                random_bytes(out, uint32_t(w * 1000 + i));
                ssize_t r = write_all(fd, out.data(), out.size());
                ssize_t n = r < 0 ? r : read_full(fd, in.data(), in.size());
                kio_close(fd);
                return intptr_t(n == ssize_t(in.size()) && in == out ? 0 : -1);
            }));
        }
        for (kio_task *c : cs) bad += kt::await_ok(c) != 0;
    }
    EXPECT_EQ(bad, 0);
    EXPECT_EQ(kt::await_ok(server), 0);
    EXPECT_TRUE(kt::wait_flag(served, waves * per_wave));
    kio_close(l);
    EXPECT_EQ(rt.destroy(), 0);
}

// Drained reads (a short TCP read parks the next one without a system call)
// against a writer that sends chunks of random sizes at random moments, from
// a plain thread or from a fiber on either worker, ending with a FIN. The
// reader uses random buffer sizes (full reads and short ones), checks every
// byte and must see EOF; a missed edge shows as -ETIMEDOUT.
TEST(IoStress, DrainedTcpReadsMissNoData) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    const size_t total = volume(4u << 20);
    for (int mode = 0; mode < 2; mode++) {  // 0: plain-thread writer, 1: fiber writer
        int c, s;
        ASSERT_TRUE(tcp_pair(&c, &s));
        std::vector<unsigned char> data(total);
        random_bytes(data, uint32_t(77 + mode));
        auto writer_body = [&](bool fiber) {
            std::mt19937 g(uint32_t(5 + mode));
            size_t off = 0;
            while (off < total) {
                size_t n = 1 + g() % 300;
                if (n > total - off) n = total - off;
                ssize_t k = fiber ? write_all(c, &data[off], n) : ssize_t(-1);
                if (!fiber) {
                    size_t done = 0;
                    while (done < n) {
                        ssize_t m = send(c, &data[off + done], n - done, MSG_NOSIGNAL);
                        if (m > 0) done += size_t(m);
                        else if (m < 0 && errno != EAGAIN && errno != EINTR) return false;
                        else std::this_thread::yield();
                    }
                    k = ssize_t(n);
                }
                if (k != ssize_t(n)) return false;
                off += n;
                unsigned pause = g() % 16;
                if (pause == 0) {
                    if (fiber) kio_yield();
                    else std::this_thread::yield();
                } else if (pause == 1) {
                    for (unsigned spin = g() % 20000; spin > 0; spin--) asm volatile("" ::: "memory");
                }
            }
            return shutdown(c, SHUT_WR) == 0;
        };
        kio_task *reader = kt::spawn([&] {
            std::mt19937 g(uint32_t(11 + mode));
            std::vector<unsigned char> buf(4096);
            size_t got = 0;
            for (;;) {
                size_t want = 1 + g() % (g() % 4 == 0 ? 4096 : 64);
                uint64_t prev = kio_deadline_set(kio_now() + 10 * kSec);
                ssize_t n = kio_read(s, buf.data(), want);
                kio_deadline_set(prev);
                if (n < 0) return intptr_t(n);
                if (n == 0) break;
                if (got + size_t(n) > total || std::memcmp(buf.data(), &data[got], size_t(n)) != 0)
                    return intptr_t(-100000);
                got += size_t(n);
            }
            return intptr_t(got == total ? 0 : -200000);
        });
        bool wrote = false;
        if (mode == 0) {
            std::thread th([&] { wrote = writer_body(false); });
            EXPECT_EQ(kt::await_ok(reader), 0) << "plain-thread writer";
            th.join();
        } else {
            kio_task *w = kt::spawn([&] { return intptr_t(writer_body(true)); });
            EXPECT_EQ(kt::await_ok(reader), 0) << "fiber writer";
            wrote = kt::await_ok(w) == 1;
        }
        EXPECT_TRUE(wrote);
        kio_close(c);
        kio_close(s);
    }
    EXPECT_EQ(rt.destroy(), 0);
}

// kio_blocking calls canceled at random moments: every fn runs exactly once.
TEST(IoStress, BlockingCancelChurn) {
    kt::Rt rt(2);
    ASSERT_EQ(rt.rc(), 0);
    static std::atomic<uint64_t> ran;
    ran = 0;
    struct F {
        static void *fn(void *arg) {
            if (vi(arg) % 4 == 0) usleep(200);
            ran++;
            return arg;
        }
    };
    const uint64_t n = scaled(20000);
    uint64_t ok = 0, canceled = 0, bad = 0;
    for (uint64_t i = 0; i < n; i += 4) {
        std::array<kio_task *, 4> ts{};
        for (size_t k = 0; k < 4; k++) {
            ts[k] = kt::spawn([i, k] {
                void *r = nullptr;
                int rc = kio_blocking(F::fn, iv(intptr_t(i + k)), &r);
                if (rc == 0 && vi(r) != intptr_t(i + k)) return intptr_t(-99);
                return intptr_t(rc);
            });
        }
        if (i % 8) kio_yield();
        for (size_t k = 0; k < 4; k++) {
            intptr_t r = (k % 2) ? kt::cancel_ok(ts[k]) : kt::await_ok(ts[k]);
            if (r == 0) ok++;
            else if (r == -ECANCELED) canceled++;
            else bad++;
        }
    }
    EXPECT_EQ(bad, 0u);
    // Every call that was not canceled ran its fn; canceled ones may or may
    // not have (canceled before the call started).
    uint64_t end = kio_now() + 10 * kSec;
    while (ran.load() < ok && kio_now() < end) kio_sleep(1 * kMs);
    EXPECT_GE(ran.load(), ok);
    EXPECT_LE(ran.load(), ok + canceled);
    EXPECT_EQ(rt.destroy(), 0);
    EXPECT_LE(ran.load(), ok + canceled);
}
