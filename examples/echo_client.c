/* echo_client: load generator and integrity checker for echo servers.
 *
 * Plain epoll (edge-triggered, non-blocking sockets), no kio: the client must
 * not share the runtime it measures, and it drives every server of the I/O
 * benchmark (kio, raw epoll, Go, libuv) the same way. Linux only.
 *
 *   echo_client -H host -p port [-c conns] [-d seconds] [-s size] [-n name]
 *               [-t threads] [-w warmup] [-V bytes]
 *
 * Load mode (default): each of `conns` connections (default 64) sends `size`
 * bytes (default 64), waits for the `size` bytes echoed back (checking them),
 * and repeats, for `seconds` (default 5) after `warmup` seconds (default 0.5)
 * that are not counted. Latency is measured per round trip (one timestamp per
 * completed response). A connection that completes no round trip at all is
 * an error. Prints a human summary on stderr and on stdout:
 *
 *   RESULT workload=echo system=<name> value=<req/s> unit=req/s p99_us=<x> check=ok|FAIL
 *
 * Verify mode (-V bytes): each connection sends `bytes` bytes of pseudo-random
 * data (a per-connection stream) in writes of random size (1..64 KiB), reads
 * concurrently and checks every echoed byte in order, then shuts down its
 * write side and expects EOF once all bytes came back. `seconds` (default 60)
 * is then a time limit. Prints
 *
 *   RESULT workload=echo_verify system=<name> value=<MiB/s> unit=MiB/s check=ok|FAIL
 *
 * Exit status: 0 ok, 1 a check failed (mismatch, early EOF, connection error,
 * time limit, no response), 2 usage or setup error.
 *
 * `threads` (default 1) splits the connections over that many epoll loops.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHUNK 65536

/* ---- options and shared state ------------------------------------------ */

static const char *opt_host = "127.0.0.1";
static int opt_port = 0, opt_conns = 64, opt_threads = 1;
static double opt_secs = -1, opt_warmup = 0.5;
static size_t opt_size = 64;
static uint64_t opt_verify = 0; /* bytes per connection; 0 = load mode */
static const char *opt_name = "unknown";
static struct sockaddr_storage srv_addr;
static socklen_t srv_len;
static uint64_t t_start, t_measure, t_end; /* ns, CLOCK_MONOTONIC */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- latency histogram: log-linear, < 1% relative error ----------------- */

#define HIST_SUB 128
#define HIST_BUCKETS (256 + 56 * HIST_SUB)

static int hist_bucket(uint64_t v) {
    if (v < 256) return (int)v;
    int e = 63 - __builtin_clzll(v); /* 8..63 */
    return 256 + (e - 8) * HIST_SUB + (int)((v >> (e - 7)) & (HIST_SUB - 1));
}

static double hist_value(int b) { /* middle of the bucket */
    if (b < 256) return b;
    int e = (b - 256) / HIST_SUB + 8, sub = (b - 256) % HIST_SUB;
    double lo = (double)((uint64_t)(HIST_SUB + sub) << (e - 7));
    return lo + (double)((uint64_t)1 << (e - 7)) / 2;
}

static double hist_pct(const uint64_t *h, uint64_t n, double p) {
    if (n == 0) return 0;
    uint64_t rank = (uint64_t)(p * (double)n), seen = 0;
    if (rank >= n) rank = n - 1;
    for (int b = 0; b < HIST_BUCKETS; b++)
        if ((seen += h[b]) > rank) return hist_value(b);
    return 0;
}

/* ---- the pseudo-random stream of a connection (position-addressable) ---- */

static uint64_t mix64(uint64_t x) { /* splitmix64 finalizer */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Bytes [off, off+len) of stream `seed`. */
static void stream_fill(uint8_t *buf, uint64_t seed, uint64_t off, size_t len) {
    while (len > 0) {
        uint64_t w = mix64(seed * 0x100000001b3ull + (off >> 3));
        size_t j = (size_t)(off & 7), n = 8 - j < len ? 8 - j : len;
        for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)(w >> (8 * (j + i)));
        buf += n, off += n, len -= n;
    }
}

/* ---- connections -------------------------------------------------------- */

enum { C_CONNECTING, C_ACTIVE, C_DONE };

typedef struct conn {
    int fd, idx, state;
    uint64_t seed;
    size_t wpos, rpos;  /* load mode: progress of the current round trip */
    uint64_t t0;        /* load mode: when the current request started */
    uint64_t trips;     /* load mode: round trips completed, warm-up included */
    uint64_t sent, rcvd, chunk_left, rng; /* verify mode */
    int shut;                             /* verify mode: write side shut down */
} conn;

typedef struct worker {
    pthread_t thread;
    conn *conns;
    int nconns, ep, live;
    uint64_t done, errors, bytes;
    uint64_t hist[HIST_BUCKETS];
    uint8_t req[MAX_CHUNK], rbuf[MAX_CHUNK], expect[MAX_CHUNK];
} worker;

static void fail(worker *w, conn *c, const char *what, int err) {
    fprintf(stderr, "echo_client: connection %d: %s%s%s\n", c->idx, what, err ? ": " : "",
            err ? strerror(err) : "");
    w->errors++;
    if (c->state != C_DONE) w->live--;
    c->state = C_DONE;
    close(c->fd);
}

/* Load mode: write the rest of the current request. Returns 0 or -1 (failed). */
static int load_write(worker *w, conn *c) {
    while (c->wpos < opt_size) {
        ssize_t n = write(c->fd, w->req + c->wpos, opt_size - c->wpos);
        if (n < 0) {
            if (errno == EAGAIN) return 0;
            if (errno == EINTR) continue;
            fail(w, c, "write", errno);
            return -1;
        }
        c->wpos += (size_t)n;
    }
    return 0;
}

static void load_start(worker *w, conn *c, uint64_t now) {
    c->wpos = c->rpos = 0;
    c->t0 = now;
    load_write(w, c);
}

static void load_read(worker *w, conn *c) {
    while (c->rpos < opt_size) {
        ssize_t n = read(c->fd, w->rbuf + c->rpos, opt_size - c->rpos);
        if (n < 0) {
            if (errno == EAGAIN) return;
            if (errno == EINTR) continue;
            fail(w, c, "read", errno);
            return;
        }
        if (n == 0) {
            fail(w, c, "unexpected EOF", 0);
            return;
        }
        c->rpos += (size_t)n;
    }
    uint64_t now = now_ns();
    if (memcmp(w->rbuf, w->req, opt_size) != 0) {
        fail(w, c, "echoed data differs from the request", 0);
        return;
    }
    c->trips++;
    if (c->t0 >= t_measure && now <= t_end) {
        w->done++;
        w->hist[hist_bucket(now - c->t0)]++;
    }
    if (now < t_end) load_start(w, c, now);
}

/* Verify mode: send the next bytes of the stream in random-sized writes. */
static void verify_write(worker *w, conn *c) {
    while (c->sent < opt_verify) {
        if (c->chunk_left == 0) {
            c->rng = mix64(c->rng);
            c->chunk_left = 1 + c->rng % MAX_CHUNK;
            if (c->chunk_left > opt_verify - c->sent) c->chunk_left = opt_verify - c->sent;
        }
        stream_fill(w->req, c->seed, c->sent, (size_t)c->chunk_left);
        ssize_t n = write(c->fd, w->req, (size_t)c->chunk_left);
        if (n < 0) {
            if (errno == EAGAIN) return;
            if (errno == EINTR) continue;
            fail(w, c, "write", errno);
            return;
        }
        c->sent += (uint64_t)n;
        c->chunk_left -= (uint64_t)n; /* a short write: the next one gives EAGAIN */
    }
    c->shut = 1;
    if (shutdown(c->fd, SHUT_WR) < 0) fail(w, c, "shutdown", errno);
}

static void verify_read(worker *w, conn *c) {
    for (;;) {
        ssize_t n = read(c->fd, w->rbuf, sizeof w->rbuf);
        if (n < 0) {
            if (errno == EAGAIN) return;
            if (errno == EINTR) continue;
            fail(w, c, "read", errno);
            return;
        }
        if (n == 0) {
            if (c->rcvd != opt_verify) {
                char msg[96];
                snprintf(msg, sizeof msg, "EOF after %llu of %llu bytes",
                         (unsigned long long)c->rcvd, (unsigned long long)opt_verify);
                fail(w, c, msg, 0);
                return;
            }
            close(c->fd);
            c->state = C_DONE;
            w->live--;
            return;
        }
        if (c->rcvd + (uint64_t)n > opt_verify) {
            fail(w, c, "more bytes echoed than sent", 0);
            return;
        }
        stream_fill(w->expect, c->seed, c->rcvd, (size_t)n);
        if (memcmp(w->rbuf, w->expect, (size_t)n) != 0) {
            size_t i = 0;
            while (w->rbuf[i] == w->expect[i]) i++;
            char msg[128];
            snprintf(msg, sizeof msg, "mismatch at offset %llu: got 0x%02x, expected 0x%02x",
                     (unsigned long long)(c->rcvd + i), w->rbuf[i], w->expect[i]);
            fail(w, c, msg, 0);
            return;
        }
        c->rcvd += (uint64_t)n;
        w->bytes += (uint64_t)n;
    }
}

static void on_event(worker *w, conn *c, uint32_t ev) {
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (ev & EPOLLERR)) {
            fail(w, c, "connect", err ? err : ECONNREFUSED);
            return;
        }
        c->state = C_ACTIVE;
        if (opt_verify == 0) {
            load_start(w, c, now_ns());
            return;
        }
    }
    if (opt_verify) {
        if (c->state == C_ACTIVE && !c->shut) verify_write(w, c);
        if (c->state == C_ACTIVE && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) verify_read(w, c);
    } else {
        if (c->state == C_ACTIVE && c->wpos < opt_size) load_write(w, c);
        if (c->state == C_ACTIVE && c->wpos == opt_size) load_read(w, c);
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    struct epoll_event evs[256];
    for (int i = 0; i < w->nconns; i++) {
        conn *c = &w->conns[i];
        c->fd = socket(srv_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        w->live++;
        if (c->fd < 0) {
            perror("echo_client: socket");
            exit(2);
        }
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c->fd, (struct sockaddr *)&srv_addr, srv_len) < 0 && errno != EINPROGRESS) {
            fail(w, c, "connect", errno);
            continue;
        }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET};
        ev.data.ptr = c;
        epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    for (;;) {
        uint64_t now = now_ns();
        if (w->live == 0 || now >= t_end) break;
        int n = epoll_wait(w->ep, evs, 256, (int)((t_end - now) / 1000000 + 1));
        if (n < 0 && errno != EINTR) {
            perror("echo_client: epoll_wait");
            exit(2);
        }
        for (int i = 0; i < n; i++) on_event(w, evs[i].data.ptr, evs[i].events);
    }
    for (int i = 0; i < w->nconns; i++) {
        conn *c = &w->conns[i];
        if (c->state == C_DONE) continue;
        if (!opt_verify && c->trips == 0) {
            fprintf(stderr, "echo_client: connection %d: no response in %.1f s\n", c->idx,
                    opt_warmup + opt_secs);
            w->errors++;
        }
        if (opt_verify) {
            fprintf(stderr, "echo_client: connection %d: time limit, %llu sent, %llu verified\n",
                    c->idx, (unsigned long long)c->sent, (unsigned long long)c->rcvd);
            w->errors++;
        }
        close(c->fd);
    }
    return NULL;
}

static void usage(void) {
    fprintf(stderr, "usage: echo_client -H host -p port [-c conns] [-d seconds] [-s size] "
                    "[-n name] [-t threads] [-w warmup] [-V bytes]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "H:p:c:d:s:n:t:w:V:h")) != -1) {
        switch (opt) {
        case 'H': opt_host = optarg; break;
        case 'p': opt_port = atoi(optarg); break;
        case 'c': opt_conns = atoi(optarg); break;
        case 'd': opt_secs = atof(optarg); break;
        case 's': opt_size = (size_t)strtoull(optarg, NULL, 0); break;
        case 'n': opt_name = optarg; break;
        case 't': opt_threads = atoi(optarg); break;
        case 'w': opt_warmup = atof(optarg); break;
        case 'V': opt_verify = strtoull(optarg, NULL, 0); break;
        default: usage();
        }
    }
    if (opt_port <= 0 || opt_port > 65535 || opt_conns <= 0 || opt_threads <= 0 ||
        opt_size == 0 || opt_size > MAX_CHUNK || opt_warmup < 0 || optind != argc)
        usage();
    if (opt_secs < 0) opt_secs = opt_verify ? 60 : 5;
    if (opt_verify) opt_warmup = 0;
    if (opt_threads > opt_conns) opt_threads = opt_conns;

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    char port[16];
    snprintf(port, sizeof port, "%d", opt_port);
    int rc = getaddrinfo(opt_host, port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "echo_client: %s: %s\n", opt_host, gai_strerror(rc));
        return 2;
    }
    memcpy(&srv_addr, ai->ai_addr, ai->ai_addrlen);
    srv_len = ai->ai_addrlen;
    freeaddrinfo(ai);

    worker *ws = calloc((size_t)opt_threads, sizeof *ws);
    conn *conns = calloc((size_t)opt_conns, sizeof *conns);
    if (!ws || !conns) return 2;
    for (int i = 0; i < opt_conns; i++) {
        conns[i].idx = i;
        conns[i].seed = mix64((uint64_t)i + 1);
        conns[i].rng = mix64(conns[i].seed);
    }
    t_start = now_ns();
    t_measure = t_start + (uint64_t)(opt_warmup * 1e9);
    t_end = t_measure + (uint64_t)(opt_secs * 1e9);
    for (int t = 0, first = 0; t < opt_threads; t++) {
        worker *w = &ws[t];
        int n = opt_conns / opt_threads + (t < opt_conns % opt_threads);
        w->conns = conns + first, w->nconns = n, first += n;
        for (size_t i = 0; i < opt_size; i++) w->req[i] = (uint8_t)('a' + (i + (size_t)t) % 26);
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        if (w->ep < 0 || pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            perror("echo_client: epoll_create1/pthread_create");
            return 2;
        }
    }
    uint64_t done = 0, errors = 0, bytes = 0;
    static uint64_t hist[HIST_BUCKETS];
    for (int t = 0; t < opt_threads; t++) {
        pthread_join(ws[t].thread, NULL);
        done += ws[t].done, errors += ws[t].errors, bytes += ws[t].bytes;
        for (int b = 0; b < HIST_BUCKETS; b++) hist[b] += ws[t].hist[b];
    }
    double elapsed = (double)(now_ns() - t_start) / 1e9;
    const char *check = errors ? "FAIL" : "ok";
    if (opt_verify) {
        double mib = (double)bytes / 1048576.0;
        fprintf(stderr, "echo_client: verify: %d connections x %llu bytes: %.0f MiB echoed and "
                        "checked in %.2f s, %llu errors\n", opt_conns,
                (unsigned long long)opt_verify, mib, elapsed, (unsigned long long)errors);
        printf("RESULT workload=echo_verify system=%s value=%.1f unit=MiB/s check=%s\n", opt_name,
               mib / elapsed, check);
    } else {
        if (done == 0) errors++, check = "FAIL";
        double rps = (double)done / opt_secs;
        double p50 = hist_pct(hist, done, 0.50) / 1e3, p99 = hist_pct(hist, done, 0.99) / 1e3;
        fprintf(stderr, "echo_client: %s: %d connections, %zu-byte messages, %.1f s: %.0f req/s, "
                        "p50 %.1f us, p99 %.1f us, p99.9 %.1f us, %llu errors\n", opt_name,
                opt_conns, opt_size, opt_secs, rps, p50, p99, hist_pct(hist, done, 0.999) / 1e3,
                (unsigned long long)errors);
        printf("RESULT workload=echo system=%s value=%.0f unit=req/s p99_us=%.1f check=%s\n",
               opt_name, rps, p99, check);
    }
    fflush(stdout);
    free(conns);
    free(ws);
    return errors ? 1 : 0;
}
