/* A TCP echo server and its clients in one kio program.
 *
 * The main fiber listens on a free loopback port and spawns an acceptor
 * task, which spawns one task per connection. Eight client tasks each dial
 * the server, send a message, read the echo back under a deadline, and
 * add to a total protected by a kio_mutex. Every call looks blocking but
 * parks only its fiber; two worker threads run all of them.
 *
 * Build: cc c_example.c $(pkg-config --cflags --libs kio)
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <kio.h>

#define MS ((uint64_t)1000000)
#define CLIENTS 8

static kio_mutex total_lock = KIO_MUTEX_INIT;
static long total_echoed; /* bytes that came back, under total_lock */

/* One connection: echo until end of file, an error or cancellation. */
static void *serve(void *arg) {
    int fd = (int)(intptr_t)arg;
    char buf[4096];
    ssize_t n;
    while ((n = kio_read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < n;) {
            ssize_t w = kio_write(fd, buf + off, (size_t)(n - off));
            if (w < 0) {
                n = w;
                goto done;
            }
            off += w;
        }
    }
done:
    kio_close(fd);
    return (void *)(intptr_t)n; /* 0, or a negative errno */
}

/* Accepts connections until canceled; each gets a detached task. */
static void *acceptor(void *arg) {
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int fd = kio_accept(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) return (void *)(intptr_t)fd; /* -ECANCELED when canceled */
        kio_task *t;
        if (kio_spawn(NULL, serve, (void *)(intptr_t)fd, &t) == 0)
            kio_detach(t);
        else
            kio_close(fd);
    }
}

struct client_args {
    int port;
    int id;
};

/* Dials the server, sends a message, reads it back. Returns 0 or an error. */
static void *client(void *arg) {
    const struct client_args *a = arg;
    char msg[64], back[64];
    int len = snprintf(msg, sizeof msg, "hello from client %d", a->id);

    int fd = kio_dial_tcp("127.0.0.1", a->port, kio_now() + 5000 * MS);
    if (fd < 0) return (void *)(intptr_t)fd;

    /* Every blocking call below fails with -ETIMEDOUT after 5 s. */
    uint64_t saved = kio_deadline_set(kio_now() + 5000 * MS);
    ssize_t r = kio_write(fd, msg, (size_t)len);
    ssize_t got = 0;
    while (r >= 0 && got < len) {
        r = kio_read(fd, back + got, (size_t)(len - got));
        if (r == 0) r = -ECONNRESET; /* the server closed early */
        if (r > 0) got += r;
    }
    kio_deadline_set(saved);
    kio_close(fd);
    if (r < 0) return (void *)(intptr_t)r;
    if (memcmp(msg, back, (size_t)len) != 0) return (void *)(intptr_t)-EIO;

    int err = kio_mutex_lock(&total_lock);
    if (err) return (void *)(intptr_t)err;
    total_echoed += len;
    kio_mutex_unlock(&total_lock);
    return NULL;
}

int main(void) {
    kio_options opts;
    kio_options_init(&opts);
    opts.threads = 2;
    kio_runtime *rt;
    int err = kio_runtime_create(&opts, &rt);
    if (err) {
        fprintf(stderr, "kio_runtime_create: %s\n", kio_strerror(err));
        return 1;
    }

    /* Port 0: the system picks a free port; getsockname tells which. */
    int lfd = kio_listen_tcp("127.0.0.1", 0, 64);
    if (lfd < 0) {
        fprintf(stderr, "kio_listen_tcp: %s\n", kio_strerror(lfd));
        return 1;
    }
    struct sockaddr_in sin;
    socklen_t slen = sizeof sin;
    getsockname(lfd, (struct sockaddr *)&sin, &slen);
    int port = ntohs(sin.sin_port);

    kio_task *acc;
    if (kio_spawn(NULL, acceptor, (void *)(intptr_t)lfd, &acc)) return 1;

    struct client_args args[CLIENTS];
    kio_task *clients[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        args[i].port = port;
        args[i].id = i;
        if (kio_spawn(NULL, client, &args[i], &clients[i])) return 1;
    }
    int failed = 0;
    for (int i = 0; i < CLIENTS; i++) {
        void *r;
        err = kio_await(clients[i], &r); /* consumes the handle */
        if (err == 0) err = (int)(intptr_t)r;
        if (err) {
            fprintf(stderr, "client %d: %s\n", i, kio_strerror(err));
            failed++;
        }
    }

    /* Stop accepting: kio_accept returns -ECANCELED in the acceptor. */
    void *r;
    kio_cancel(acc, &r);
    kio_close(lfd);

    kio_mutex_lock(&total_lock);
    printf("%d clients, %ld bytes echoed; acceptor: %s\n", CLIENTS - failed, total_echoed,
           kio_strerror((int)(intptr_t)r));
    kio_mutex_unlock(&total_lock);

    /* Cancels the connection tasks still running and waits for them. */
    kio_runtime_destroy(rt);
    return failed == 0 && (intptr_t)r == -ECANCELED ? 0 : 1;
}
