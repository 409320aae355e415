/* echo_server: a TCP echo server on kio, one task per connection.
 *
 *   echo_server [port] [threads] [host]
 *
 * port     TCP port, default 7000; 0 picks a free one. Once the socket listens,
 *          "listening on <port>" is printed on stdout (and flushed).
 * threads  kio worker threads, default 0 = one per CPU.
 * host     address to bind, default any (e.g. 127.0.0.1 for loopback only).
 *
 * The main fiber accepts connections (kio_accept parks it until one arrives)
 * and spawns a detached task for each; the task copies what it reads back to
 * the peer with kio_read/kio_write until EOF or an error, then kio_closes the
 * socket. Every call looks blocking, but parks only its fiber: the worker
 * threads run the other connections meanwhile.
 *
 * SIGINT/SIGTERM stop it cleanly, with no signal handler: the signals are
 * blocked in every thread, and a plain thread waits for them with sigwait,
 * then kio_closes the listening socket (kio calls work from any thread), which
 * wakes the accept loop with -EBADF; kio_runtime_destroy then cancels the
 * connection tasks (their parked kio_read returns -ECANCELED) and waits.
 *
 * Build: meson setup build && ninja -C build (build/examples/echo_server), or
 * against an installed kio: cc echo_server.c $(pkg-config --cflags --libs kio)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <kio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static sigset_t stop_signals; /* SIGINT, SIGTERM: blocked in every thread */
static int stopping;          /* set (atomically) by whoever closes the listener */

/* A plain thread: waits for a stop signal, then closes the listening socket
 * (arg). Main wakes it with SIGTERM if it stops first. */
static void *signal_thread(void *arg) {
    int sig;
    if (sigwait(&stop_signals, &sig) == 0 && !__atomic_exchange_n(&stopping, 1, __ATOMIC_SEQ_CST)) {
        fprintf(stderr, "echo_server: stopping\n");
        kio_close((int)(intptr_t)arg);
    }
    return NULL;
}

/* One connection: echo until EOF, an error or cancellation. */
static void *serve(void *arg) {
    int fd = (int)(intptr_t)arg, one = 1;
    char buf[16384];
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (;;) {
        ssize_t n = kio_read(fd, buf, sizeof buf);
        if (n <= 0) break; /* 0: EOF; < 0: -ECONNRESET, -ECANCELED, ... */
        for (ssize_t off = 0; off < n;) {
            ssize_t w = kio_write(fd, buf + off, (size_t)(n - off));
            if (w < 0) goto done;
            off += w;
        }
    }
done:
    kio_close(fd);
    return NULL;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 7000;
    unsigned threads = argc > 2 ? (unsigned)atoi(argv[2]) : 0;
    const char *host = argc > 3 ? argv[3] : NULL;
    if (port < 0 || port > 65535) {
        fprintf(stderr, "usage: echo_server [port] [threads] [host]\n");
        return 2;
    }
    /* A peer that closes early must give kio_write -EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    /* Before any thread starts, so that every thread inherits the mask. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    kio_options opts;
    kio_options_init(&opts);
    opts.threads = threads;
    kio_runtime *rt;
    int err = kio_runtime_create(&opts, &rt);
    if (err) {
        fprintf(stderr, "echo_server: kio_runtime_create: %s\n", kio_strerror(err));
        return 1;
    }
    int lfd = kio_listen_tcp(host, port, 4096);
    if (lfd < 0) {
        fprintf(stderr, "echo_server: listen on port %d: %s\n", port, kio_strerror(lfd));
        kio_runtime_destroy(rt);
        return 1;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(lfd, (struct sockaddr *)&ss, &len);
    port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);

    pthread_t sig_thread;
    int have_sig_thread = pthread_create(&sig_thread, NULL, signal_thread, (void *)(intptr_t)lfd) == 0;
    printf("listening on %d\n", port);
    fflush(stdout);

    for (;;) {
        int fd = kio_accept(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd == -EBADF || fd == -ECANCELED ||
            (fd < 0 && __atomic_load_n(&stopping, __ATOMIC_SEQ_CST)))
            break; /* lfd closed by signal_watcher */
        if (fd < 0) {
            fprintf(stderr, "echo_server: accept: %s\n", kio_strerror(fd));
            if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM)
                kio_sleep(10 * 1000000); /* out of descriptors or memory: back off */
            continue;
        }
        kio_task *t;
        if ((err = kio_spawn(NULL, serve, (void *)(intptr_t)fd, &t)) != 0) {
            fprintf(stderr, "echo_server: kio_spawn: %s\n", kio_strerror(err));
            kio_close(fd);
            continue;
        }
        kio_detach(t);
    }
    if (!__atomic_exchange_n(&stopping, 1, __ATOMIC_SEQ_CST)) {
        kio_close(lfd);
        if (have_sig_thread) pthread_kill(sig_thread, SIGTERM); /* ends its sigwait */
    }
    if (have_sig_thread) pthread_join(sig_thread, NULL);
    return kio_runtime_destroy(rt) == 0 ? 0 : 1;
}
