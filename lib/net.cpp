// TCP helpers: listen and dial by host name and port.
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <new>
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

// One getaddrinfo call. Owns copies of what it uses, so that a fiber that
// stops waiting (canceled, deadline) can leave it to finish on the pool.
struct Resolve {
    bool passive;
    char port[16];
    addrinfo *res = nullptr;
    int err = 0;
    char host[1];  // allocated to fit; empty: no host

    static Resolve *make(const char *host, int port, bool passive) {
        size_t n = host ? std::strlen(host) : 0;
        void *mem = std::malloc(sizeof(Resolve) + n);
        if (!mem) return nullptr;
        auto *r = new (mem) Resolve;
        r->passive = passive;
        std::snprintf(r->port, sizeof r->port, "%d", port);
        std::memcpy(r->host, host ? host : "", n + 1);
        return r;
    }
    const char *node() const { return host[0] ? host : nullptr; }
    int lookup(int extra_flags) {
        addrinfo hints;
        std::memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = (passive ? AI_PASSIVE : 0) | AI_ADDRCONFIG | AI_NUMERICSERV | extra_flags;
        int e = getaddrinfo(node(), port, &hints, &res);
        if (e == EAI_ADDRFAMILY || (e == EAI_NONAME && node() && !(extra_flags & AI_NUMERICHOST))) {
            hints.ai_flags &= ~AI_ADDRCONFIG;  // loopback-only hosts
            e = getaddrinfo(node(), port, &hints, &res);
        }
        return e;
    }
    static void *run(void *p) {
        auto *r = static_cast<Resolve *>(p);
        int e = r->lookup(0);
        r->err = e ? gai_error(e) : 0;
        return nullptr;
    }
    static void abandoned(void *p, void *) { destroy(static_cast<Resolve *>(p)); }
    static void destroy(Resolve *r) {
        if (r->res) freeaddrinfo(r->res);
        std::free(r);
    }
};

// Resolves host:port into *out (free with freeaddrinfo). Numeric addresses
// and the any-address resolve at once; names go to the blocking pool
// (getaddrinfo may block on DNS), and cancellation or the deadline scope
// abandon the lookup there.
int resolve(const char *host, int port, bool passive, addrinfo **out) {
    Resolve *r = Resolve::make(host, port, passive);
    if (!r) return -ENOMEM;
    int e = r->lookup(AI_NUMERICHOST);
    if (e == 0 || e != EAI_NONAME || !r->node()) {
        r->err = e ? gai_error(e) : 0;
    } else if (Task *self = current_task()) {
        if (self->cancel_pending()) {
            Resolve::destroy(r);
            return -ECANCELED;
        }
        bool queued = false;
        int w = run_blocking(self->rt, &Resolve::run, r, nullptr, BlockingStop::kAbandon, &Resolve::abandoned, &queued);
        if (w) {
            if (!queued) Resolve::destroy(r);  // else the job frees it
            return w;
        }
    } else {
        Resolve::run(r);
    }
    int err = r->err;
    *out = r->res;
    r->res = nullptr;
    Resolve::destroy(r);
    return err;
}

}  // namespace

KIO_EXPORT int kio_listen_tcp(const char *host, int port, int backlog) noexcept {
    if (port < 0 || port > 65535) return -EINVAL;
    if (host && !*host) host = nullptr;
    addrinfo *res = nullptr;
    if (int e = resolve(host, port, true, &res)) return e;
    int err = -EADDRNOTAVAIL;
    // Prefer IPv6 any-address sockets (dual stack) only when no host was
    // given; otherwise take the first address that binds.
    for (addrinfo *a = res; a; a = a->ai_next) {
        int fd = kio_socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) {
            err = fd;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, backlog > 0 ? backlog : 128) == 0) {
            freeaddrinfo(res);
            return fd;
        }
        err = -errno;
        kio_close(fd);
    }
    freeaddrinfo(res);
    return err;
}

KIO_EXPORT int kio_dial_tcp(const char *host, int port, uint64_t deadline) noexcept {
    if (!host || !*host || port <= 0 || port > 65535) return -EINVAL;
    uint64_t saved = kio_deadline_get();
    uint64_t eff = earliest(saved, deadline);
    kio_deadline_set(eff);
    addrinfo *res = nullptr;
    if (int e = resolve(host, port, false, &res)) {
        kio_deadline_set(saved);
        return e;
    }
    int err = -ECONNREFUSED;
    int result = -1;
    for (addrinfo *a = res; a; a = a->ai_next) {
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
    freeaddrinfo(res);
    return result >= 0 ? result : err;
}
