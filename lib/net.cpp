// TCP helpers: listen and dial by host name and port.
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "blocking.h"
#include "runtime.h"

using namespace kio;

namespace {

int gai_error(int e) {
    switch (e) {
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
        return -ENOENT;
    case EAI_AGAIN: return -EAGAIN;
    case EAI_MEMORY: return -ENOMEM;
    case EAI_SYSTEM: return -errno;
    default: return -EINVAL;
    }
}

struct Resolve {
    const char *host;
    char port[16];
    bool passive;
    addrinfo *res = nullptr;
    int err = 0;
    static void *run(void *p) {
        auto *r = static_cast<Resolve *>(p);
        addrinfo hints;
        std::memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = (r->passive ? AI_PASSIVE : 0) | AI_ADDRCONFIG;
        int e = getaddrinfo(r->host, r->port, &hints, &r->res);
        if (e == EAI_ADDRFAMILY || (e == EAI_NONAME && r->host)) {
            hints.ai_flags &= ~AI_ADDRCONFIG;  // loopback-only hosts
            e = getaddrinfo(r->host, r->port, &hints, &r->res);
        }
        r->err = e ? gai_error(e) : 0;
        return nullptr;
    }
};

// Resolves on the blocking pool (getaddrinfo blocks), uncancelably so that
// the result is always freed here.
int resolve(Resolve *r) {
    Task *self = current_task();
    if (!self) {
        Resolve::run(r);
        return r->err;
    }
    if (int w = run_blocking(self->rt, &Resolve::run, r, nullptr, false)) return w;
    return r->err;
}

}  // namespace

KIO_EXPORT int kio_listen_tcp(const char *host, int port, int backlog) noexcept {
    if (port < 0 || port > 65535) return -EINVAL;
    if (host && !*host) host = nullptr;
    Resolve r{host, {}, true};
    std::snprintf(r.port, sizeof r.port, "%d", port);
    if (int e = resolve(&r)) return e;
    int err = -EADDRNOTAVAIL;
    // Prefer IPv6 any-address sockets (dual stack) only when no host was
    // given; otherwise take the first address that binds.
    for (addrinfo *a = r.res; a; a = a->ai_next) {
        int fd = kio_socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) {
            err = fd;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, backlog > 0 ? backlog : 128) == 0) {
            freeaddrinfo(r.res);
            return fd;
        }
        err = -errno;
        kio_close(fd);
    }
    freeaddrinfo(r.res);
    return err;
}

KIO_EXPORT int kio_dial_tcp(const char *host, int port, uint64_t deadline) noexcept {
    if (!host || !*host || port <= 0 || port > 65535) return -EINVAL;
    uint64_t saved = kio_deadline_get();
    uint64_t eff = earliest(saved, deadline);
    Resolve r{host, {}, false};
    std::snprintf(r.port, sizeof r.port, "%d", port);
    if (int e = resolve(&r)) return e;
    kio_deadline_set(eff);
    int err = -ECONNREFUSED;
    int result = -1;
    for (addrinfo *a = r.res; a; a = a->ai_next) {
        int fd = kio_socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) {
            err = fd;
            continue;
        }
        int c = kio_connect(fd, a->ai_addr, a->ai_addrlen);
        if (c == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            result = fd;
            break;
        }
        kio_close(fd);
        err = c;
        if (c == -ECANCELED || c == -ETIMEDOUT) break;
    }
    kio_deadline_set(saved);
    freeaddrinfo(r.res);
    return result >= 0 ? result : err;
}
