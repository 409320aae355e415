/* uv_echo: the libuv competitor of the echo benchmark. One loop, one thread:
 * uv_read_start on each connection, and the echo sent with uv_try_write
 * straight from the read buffer; only output that does not fit the socket
 * buffer is copied and queued with uv_write (the fastest correct idiom: a
 * queued uv_write does not copy its buffer). TCP_NODELAY on every connection.
 *
 *   uv_echo [port] [host]      port 0 (default) picks one; host default 127.0.0.1
 *
 * Prints "listening on <port>" on stdout once ready.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static uv_loop_t *loop;
static char rbuf[65536]; /* one loop thread: every read lands here */

typedef struct {
    uv_write_t req;
    char data[];
} write_req;

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)h, (void)suggested;
    *buf = uv_buf_init(rbuf, sizeof rbuf);
}

static void on_close(uv_handle_t *h) { free(h); }

static void on_written(uv_write_t *req, int status) {
    if (status < 0 && !uv_is_closing((uv_handle_t *)req->handle))
        uv_close((uv_handle_t *)req->handle, on_close);
    free(req);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    if (n < 0) {
        if (!uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, on_close);
        return;
    }
    if (n == 0) return; /* EAGAIN: nothing read */
    size_t off = 0;
    if (uv_stream_get_write_queue_size(s) == 0) { /* keep order behind queued output */
        uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
        int w = uv_try_write(s, &b, 1);
        if (w > 0) off = (size_t)w;
        else if (w != UV_EAGAIN && w != UV_ENOSYS) {
            uv_close((uv_handle_t *)s, on_close);
            return;
        }
    }
    if (off == (size_t)n) return;
    write_req *wr = malloc(sizeof *wr + (size_t)n - off);
    if (!wr) abort();
    memcpy(wr->data, buf->base + off, (size_t)n - off);
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)((size_t)n - off));
    if (uv_write(&wr->req, s, &b, 1, on_written) < 0) {
        free(wr);
        uv_close((uv_handle_t *)s, on_close);
    }
}

static void on_connection(uv_stream_t *server, int status) {
    if (status < 0) return;
    uv_tcp_t *c = malloc(sizeof *c);
    if (!c) abort();
    uv_tcp_init(loop, c);
    if (uv_accept(server, (uv_stream_t *)c) != 0) {
        uv_close((uv_handle_t *)c, on_close);
        return;
    }
    uv_tcp_nodelay(c, 1);
    uv_read_start((uv_stream_t *)c, on_alloc, on_read);
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    const char *host = argc > 2 ? argv[2] : "127.0.0.1";
    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    uv_tcp_t server;
    struct sockaddr_in addr;
    struct sockaddr_storage bound;
    int len = sizeof bound, r;
    uv_tcp_init(loop, &server);
    if ((r = uv_ip4_addr(host, port, &addr)) || (r = uv_tcp_bind(&server, (struct sockaddr *)&addr, 0)) ||
        (r = uv_listen((uv_stream_t *)&server, 4096, on_connection)) ||
        (r = uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &len))) {
        fprintf(stderr, "uv_echo: %s\n", uv_strerror(r));
        return 1;
    }
    printf("listening on %d\n", ntohs(((struct sockaddr_in *)&bound)->sin_port));
    fflush(stdout);
    return uv_run(loop, UV_RUN_DEFAULT);
}
