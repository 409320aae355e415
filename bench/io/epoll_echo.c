/* epoll_echo: the raw baseline of the echo benchmark. One thread, one
 * level-triggered epoll set, non-blocking sockets: per request exactly one
 * epoll_wait share, one read and one write, which is the least any
 * readiness-based server can do. Output that does not fit the socket buffer
 * is kept per connection and flushed on EPOLLOUT (reading pauses meanwhile).
 *
 *   epoll_echo [port] [host]      port 0 (default) picks one; host default 127.0.0.1
 *
 * Prints "listening on <port>" on stdout once ready. Linux only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct pending { /* unsent output of a connection */
    char *data;
    size_t off, len;
} pending;

static pending *pend; /* indexed by fd */
static size_t npend;
static int ep;

static void drop(int fd) {
    if ((size_t)fd < npend) {
        free(pend[fd].data);
        memset(&pend[fd], 0, sizeof pend[fd]);
    }
    close(fd); /* also removes it from the epoll set */
}

/* Writes buf; keeps what does not fit and switches fd to EPOLLOUT. */
static void send_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n > 0) {
            buf += n, len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN) {
            drop(fd);
            return;
        }
        if ((size_t)fd >= npend) {
            size_t nn = (size_t)fd * 2 + 64;
            pend = realloc(pend, nn * sizeof *pend);
            if (!pend) abort();
            memset(pend + npend, 0, (nn - npend) * sizeof *pend);
            npend = nn;
        }
        pending *p = &pend[fd];
        p->data = malloc(len);
        if (!p->data) abort();
        memcpy(p->data, buf, len);
        p->off = 0, p->len = len;
        struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fd};
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        return;
    }
}

static void flush(int fd) {
    pending *p = &pend[fd];
    while (p->off < p->len) {
        ssize_t n = write(fd, p->data + p->off, p->len - p->off);
        if (n > 0) {
            p->off += (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            return;
        } else if (!(n < 0 && errno == EINTR)) {
            drop(fd);
            return;
        }
    }
    free(p->data);
    memset(p, 0, sizeof *p);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    const char *host = argc > 2 ? argv[2] : "127.0.0.1";
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    socklen_t slen = sizeof sa;
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "epoll_echo: bad IPv4 address %s\n", host);
        return 2;
    }
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &slen) < 0) {
        perror("epoll_echo: bind/listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    printf("listening on %d\n", ntohs(sa.sin_port));
    fflush(stdout);

    static char buf[65536];
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                flush(fd);
                continue;
            }
            ssize_t r = read(fd, buf, sizeof buf);
            if (r > 0)
                send_all(fd, buf, (size_t)r);
            else if (r == 0 || (errno != EAGAIN && errno != EINTR))
                drop(fd);
        }
    }
}
