// Version and error strings.
#include <cerrno>
#include <climits>
#include <cstring>

#include "util.h"
#include "../include/kio.h"

#define KIO_STR2(x) #x
#define KIO_STR(x) KIO_STR2(x)

KIO_EXPORT const char *kio_version(void) noexcept {
    return KIO_STR(KIO_VERSION_MAJOR) "." KIO_STR(KIO_VERSION_MINOR) "." KIO_STR(KIO_VERSION_PATCH);
}

KIO_EXPORT const char *kio_strerror(int err) noexcept {
    if (err == INT_MIN) return "Unknown error";  // -INT_MIN overflows
    if (err < 0) err = -err;
    switch (err) {
    case 0: return "Success";
    case EINVAL: return "Invalid argument";
    case ENOMEM: return "Out of memory";
    case ECANCELED: return "Operation canceled";
    case ETIMEDOUT: return "Operation timed out";
    case EBUSY: return "Resource busy";
    case EPERM: return "Operation not permitted from this thread or fiber";
    case EDEADLK: return "Operation would deadlock";
    case ENOTSUP: return "Not supported on this platform";
    case EAGAIN: return "Resource temporarily unavailable";
    case EBADF: return "Bad file descriptor";
    case EINTR: return "Interrupted";
    case EPIPE: return "Broken pipe";
    case ECONNRESET: return "Connection reset by peer";
    case ECONNREFUSED: return "Connection refused";
    default: break;
    }
    // Other codes (those passed through from failed system calls): the C
    // library's description where it has a thread-safe, static one (glibc
    // 2.32's strerrordesc_np; strerror is neither), else a fixed string.
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
    if (const char *d = strerrordesc_np(err)) return d;
#endif
    return "Unknown error";
}
