/* http_server: a minimal HTTP/1.1 server on kio, one task per connection.
 *
 *   http_server [port] [threads] [host]
 *
 * port 8080 by default (0 picks a free one; "listening on <port>" is printed
 * on stdout); threads 0 = one per CPU (default); host default any address.
 *
 * GET / (or HEAD /) answers "Hello, World!" (text/plain, Content-Length 13);
 * other paths get 404, other methods 501. Connections are kept alive (HTTP/1.1
 * default; HTTP/1.0 with "Connection: keep-alive") until "Connection: close"
 * or EOF. Pipelined requests are answered in order, the responses to all
 * requests of one read in one write. A Content-Length body is skipped;
 * Transfer-Encoding (501), malformed requests (400) and heads over 8 KiB (431)
 * close the connection. No URL decoding, no timeouts: a demo, not nginx.
 *
 * As in echo_server.c, the main fiber accepts; a detached task per connection
 * reads with kio_read (parking its fiber, not the thread), writes with kio_write.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <kio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define IN_SIZE 8192
#define OUT_SIZE 16384

typedef struct conn {
    int fd;
    size_t in_len, out_len, skip; /* skip: body bytes still to discard */
    time_t date_sec;              /* the second `date` was formatted for */
    char date[40];
    char in[IN_SIZE], out[OUT_SIZE];
} conn;

static void put(conn *c, const char *s, size_t n) {
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
}
#define PUT(c, lit) put(c, lit, sizeof(lit) - 1)

static int flush(conn *c) { /* 0 or a negative errno */
    ssize_t n = 0;
    for (size_t off = 0; off < c->out_len && n >= 0; off += n > 0 ? (size_t)n : 0)
        n = kio_write(c->fd, c->out + off, c->out_len - off);
    c->out_len = 0;
    return n < 0 ? (int)n : 0;
}

/* Appends a whole response (status: 200, 400, 404, 431 or 501); returns keep. */
static int respond(conn *c, int status, int head_only, int keep, int http10) {
    static const char *const line[] = {"200 OK", "400 Bad Request", "404 Not Found",
        "431 Request Header Fields Too Large", "501 Not Implemented"};
    const char *body = status == 200 ? "Hello, World!" : "", *msg = line[0];
    for (int i = 1; i < 5; i++) msg = atoi(line[i]) == status ? line[i] : msg;
    time_t now = time(NULL);
    if (now != c->date_sec) { /* Date, formatted once a second per connection */
        struct tm tm;
        c->date_sec = now;
        strftime(c->date, sizeof c->date, "%a, %d %b %Y %H:%M:%S GMT", gmtime_r(&now, &tm));
    }
    PUT(c, "HTTP/1.1 ");
    put(c, msg, strlen(msg));
    PUT(c, "\r\nServer: kio\r\nDate: ");
    put(c, c->date, strlen(c->date));
    PUT(c, "\r\nContent-Type: text/plain\r\nContent-Length: ");
    put(c, *body ? "13" : "0", *body ? 2 : 1);
    if (!keep) PUT(c, "\r\nConnection: close");
    else if (http10) PUT(c, "\r\nConnection: keep-alive");
    PUT(c, "\r\n\r\n");
    if (!head_only) put(c, body, strlen(body));
    return keep;
}

/* Does the comma-separated header value [v, end) contain token tok? */
static int has_token(const char *v, const char *end, const char *tok) {
    size_t n = strlen(tok);
    for (; v + n <= end; v++)
        if (strncasecmp(v, tok, n) == 0 && strchr(" \t,:", v[-1]) &&
            (v + n == end || strchr(" \t,\r", v[n])))
            return 1;
    return 0;
}

/* Handles the request whose head is [p, p + n) (n includes the final CRLF
 * CRLF). Returns 1 to keep the connection, 0 to close it after flushing. */
static int handle(conn *c, const char *p, size_t n) {
    const char *end = p + n - 2, *eol = memchr(p, '\n', n);
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p)), *sp2 = NULL;
    if (sp1) sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (!sp1 || !sp2 || eol - sp2 < 9 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0)
        return respond(c, 400, 0, 0, 0);
    int http10 = sp2[8] == '0', keep = !http10, chunked = 0;
    size_t clen = 0;
    for (const char *h = eol + 1; h < end;) { /* header lines */
        /* end[-1] is '\n' (the head ends with CRLF CRLF), so e is found */
        const char *e = memchr(h, '\n', (size_t)(end - h));
        const char *colon = memchr(h, ':', (size_t)(e - h));
        if (colon) {
            size_t name = (size_t)(colon - h);
            if (name == 10 && strncasecmp(h, "connection", 10) == 0) {
                if (has_token(colon + 1, e, "close")) keep = 0;
                else if (has_token(colon + 1, e, "keep-alive")) keep = 1;
            } else if (name == 14 && strncasecmp(h, "content-length", 14) == 0) {
                clen = strtoul(colon + 1, NULL, 10);
            } else if (name == 17 && strncasecmp(h, "transfer-encoding", 17) == 0) {
                chunked = 1;
            }
        }
        h = e + 1;
    }
    if (chunked) return respond(c, 501, 0, 0, http10);
    c->skip = clen;
    size_t mlen = (size_t)(sp1 - p), plen = (size_t)(sp2 - sp1 - 1);
    const char *q = memchr(sp1 + 1, '?', plen);
    if (q) plen = (size_t)(q - sp1 - 1);
    int get = mlen == 3 && memcmp(p, "GET", 3) == 0, head = mlen == 4 && memcmp(p, "HEAD", 4) == 0;
    return respond(c, !get && !head ? 501 : plen == 1 && sp1[1] == '/' ? 200 : 404, head, keep,
                   http10);
}

static void *serve(void *arg) {
    conn *c = calloc(1, sizeof *c);
    int keep = 1, one = 1, fd = (int)(intptr_t)arg;
    if (!c) goto out;
    c->fd = fd;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    while (keep) {
        ssize_t n = kio_read(fd, c->in + c->in_len, IN_SIZE - c->in_len);
        if (n <= 0) break; /* EOF, error or cancellation */
        c->in_len += (size_t)n;
        size_t pos = 0;
        while (keep) {
            if (c->skip) { /* a request body */
                size_t k = c->skip < c->in_len - pos ? c->skip : c->in_len - pos;
                c->skip -= k, pos += k;
                if (c->skip) break;
            }
            char *hend = memmem(c->in + pos, c->in_len - pos, "\r\n\r\n", 4);
            if (!hend) break;
            keep = handle(c, c->in + pos, (size_t)(hend + 4 - (c->in + pos)));
            pos = (size_t)(hend + 4 - c->in);
            if (c->out_len > OUT_SIZE - 512 && flush(c) < 0) goto out;
        }
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
        if (keep && c->in_len == IN_SIZE) keep = respond(c, 431, 0, 0, 0); /* head too big */
        if (flush(c) < 0) break;
    }
out:
    kio_close(fd);
    free(c);
    return NULL;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8080, err;
    kio_options opts;
    kio_options_init(&opts);
    opts.threads = argc > 2 ? (unsigned)atoi(argv[2]) : 0;
    signal(SIGPIPE, SIG_IGN); /* a closed peer gives kio_write -EPIPE instead */
    kio_runtime *rt;
    if ((err = kio_runtime_create(&opts, &rt)) != 0) {
        fprintf(stderr, "http_server: kio_runtime_create: %s\n", kio_strerror(err));
        return 1;
    }
    int lfd = kio_listen_tcp(argc > 3 ? argv[3] : NULL, port, 4096);
    struct sockaddr_in6 sa; /* sin6_port and sin_port are at the same offset */
    socklen_t len = sizeof sa;
    if (lfd < 0 || getsockname(lfd, (struct sockaddr *)&sa, &len) < 0) {
        fprintf(stderr, "http_server: listen on port %d: %s\n", port, kio_strerror(lfd));
        return 1;
    }
    printf("listening on %d\n", ntohs(sa.sin6_port));
    fflush(stdout);
    for (;;) {
        kio_task *t;
        int fd = kio_accept(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            fprintf(stderr, "http_server: accept: %s\n", kio_strerror(fd));
            if (fd == -EBADF || fd == -ECANCELED) break;
            if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM)
                kio_sleep(10 * 1000000); /* out of descriptors or memory: back off */
        } else if ((err = kio_spawn(NULL, serve, (void *)(intptr_t)fd, &t)) != 0) {
            fprintf(stderr, "http_server: kio_spawn: %s\n", kio_strerror(err));
            kio_close(fd);
        } else {
            kio_detach(t);
        }
    }
    return kio_runtime_destroy(rt) == 0 ? 0 : 1;
}
