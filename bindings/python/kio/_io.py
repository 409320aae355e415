"""Time and socket helpers for Python threads (each call blocks the thread)."""

from __future__ import annotations

import ctypes
import errno as _errno
import operator
import os
import socket as _socket
from typing import Any, Callable, Optional, Union

from ._errors import check
from ._lib import lib
from ._util import SLICE_NS, check_c_int, deadline_in, in_main_thread, with_deadline

__all__ = [
    "version",
    "now",
    "now_ns",
    "sleep",
    "listen_tcp",
    "dial_tcp",
    "accept",
    "read",
    "write",
    "write_all",
    "close",
    "shutdown",
    "poll",
    "POLLIN",
    "POLLOUT",
]

POLLIN = 0x001
POLLOUT = 0x004

Buffer = Union[bytes, bytearray, memoryview]


def version() -> str:
    """The version of the loaded libkio, "MAJOR.MINOR.PATCH" (kio_version)."""
    return str(lib.kio_version().decode("ascii", "replace"))


def now_ns() -> int:
    """kio_now(): CLOCK_MONOTONIC in nanoseconds (the base of kio deadlines)."""
    return int(lib.kio_now())


def now() -> float:
    """kio_now() in seconds, as a float (the same clock as time.monotonic())."""
    return float(lib.kio_now()) / 1e9


def _deadline(timeout: Optional[float]) -> int:
    """The deadline argument of kio_poll and kio_dial_tcp: 0 (none) for None;
    saturates at UINT64_MAX for timeouts beyond kio's clock (deadline_in)."""
    if timeout is None:
        return 0
    return deadline_in(timeout, minimum_ns=1)


def _fd(where: str, fd: object) -> int:
    return check_c_int(where, "fd", fd, ctypes.c_int)


def _port(where: str, port: object) -> int:
    p = operator.index(port)  # type: ignore[arg-type]
    if not 0 <= p <= 0xFFFF:  # as the socket module says it
        raise OverflowError(f"{where}: port must be 0-65535, not {p}")
    return p


def _interruptible(fn: Callable[..., Any], *args: Any) -> int:
    """``fn(*args)``, a kio call that waits for a descriptor. From the main
    thread (the only one where signal handlers run) it is made in slices of
    100 ms under a kio deadline, back in Python in between so that Ctrl-C
    (KeyboardInterrupt) gets through: a slice that times out has done nothing
    (kio's deadline leaves nothing behind), and the call is made again. From
    other threads, one call."""
    if not in_main_thread():
        return int(fn(*args))
    while True:
        step = int(lib.kio_now()) + SLICE_NS
        r = int(with_deadline(step, fn, *args))
        # An ETIMEDOUT before the slice's end is the call's own (a socket's).
        if r != -_errno.ETIMEDOUT or lib.kio_now() < step:
            return r


def sleep(seconds: float) -> None:
    """Sleeps the calling thread for at least ``seconds`` (kio_sleep_until on a
    plain thread). Comes back to Python every 100 ms, so Ctrl-C works. A
    length beyond kio's 64-bit nanosecond clock sleeps for ever."""
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    end = deadline_in(seconds)
    while True:
        t = lib.kio_now()
        if t >= end:
            return
        check(lib.kio_sleep_until(min(end, t + SLICE_NS)), "kio_sleep")


def listen_tcp(host: Optional[str], port: int, backlog: int = 128) -> int:
    """A listening TCP socket bound to host:port (host None or "" = any
    address; port 0 picks a free port) with SO_REUSEADDR (kio_listen_tcp).
    Returns the descriptor; close it with :func:`kio.close`. A port outside
    0-65535 or a backlog outside C int raises OverflowError."""
    p = _port("kio.listen_tcp", port)
    b = check_c_int("kio.listen_tcp", "backlog", backlog, ctypes.c_int)
    h = host.encode("idna") if host else None
    return check(lib.kio_listen_tcp(h, p, b), f"listen on {host}:{p}")


def dial_tcp(host: str, port: int, timeout: Optional[float] = None) -> int:
    """A TCP socket connected to host:port, trying each resolved address until
    one connects or ``timeout`` seconds pass (kio_dial_tcp). Returns the
    descriptor. Raises e.g. :class:`kio.ConnectionRefused` (a
    ConnectionRefusedError) or :class:`kio.TimedOut`; OverflowError for a
    port outside 0-65535."""
    p = _port("kio.dial_tcp", port)
    return check(
        lib.kio_dial_tcp(host.encode("idna"), p, _deadline(timeout)),
        f"connect to {host}:{p}",
    )


def accept(fd: int) -> int:
    """Waits for a connection on the listening socket ``fd`` and returns the new
    (non-blocking, close-on-exec) descriptor (kio_accept). Ctrl-C interrupts
    the wait in the main thread (not on a listening socket in blocking mode,
    which kio cannot bound)."""
    f = _fd("kio.accept", fd)
    flags = getattr(_socket, "SOCK_CLOEXEC", 0)
    return check(_interruptible(lib.kio_accept, f, None, None, flags), "kio_accept")


def read(fd: int, n: int) -> bytes:
    """Reads up to ``n`` bytes from ``fd`` (kio_read): b"" at end of file.
    Ctrl-C interrupts the wait in the main thread (on sockets, pipes and
    other descriptors poll(2) can wait for)."""
    f = _fd("kio.read", fd)
    if n < 0:
        raise ValueError("read: n must be >= 0")
    buf = ctypes.create_string_buffer(n)
    got = check(_interruptible(lib.kio_read, f, buf, n), "kio_read")
    return buf.raw[:got]


def _pointer(data: Buffer) -> "tuple[object, int]":
    if isinstance(data, bytes):
        return data, len(data)
    view = memoryview(data).cast("B")
    if view.readonly:
        b = bytes(view)
        return b, len(b)
    return (ctypes.c_char * view.nbytes).from_buffer(view), view.nbytes


def write(fd: int, data: Buffer) -> int:
    """Writes from ``data`` to ``fd`` (kio_write) and returns the count written,
    which may be less than len(data)."""
    f = _fd("kio.write", fd)
    ptr, n = _pointer(data)
    return check(lib.kio_write(f, ptr, n), "kio_write")


def write_all(fd: int, data: Buffer) -> None:
    """Writes all of ``data`` to ``fd``."""
    view = memoryview(data).cast("B")
    off = 0
    while off < len(view):
        off += write(fd, view[off:])


def poll(fd: int, events: int, timeout: Optional[float] = None) -> int:
    """Waits until ``fd`` is ready for ``events`` (POLLIN, POLLOUT; a mask of
    0-0xFFFF, else OverflowError) and returns the ready events (kio_poll);
    raises :class:`kio.TimedOut` after ``timeout`` seconds. Ctrl-C interrupts
    the wait in the main thread."""
    f = _fd("kio.poll", fd)
    ev = operator.index(events)
    if not 0 <= ev <= 0xFFFF:
        raise OverflowError(f"kio.poll: events={ev:#x} does not fit a C short (0-0xffff)")
    short = ev - 0x10000 if ev & 0x8000 else ev  # the same bits as a C short
    end = _deadline(timeout)
    if not in_main_thread():
        return check(lib.kio_poll(f, short, end), "kio_poll")
    while True:
        step = int(lib.kio_now()) + SLICE_NS
        last = bool(end) and end <= step
        r = lib.kio_poll(f, short, end if last else step)
        if r != -_errno.ETIMEDOUT or last:
            return check(r, "kio_poll")


def close(fd: int) -> None:
    """Closes ``fd`` after waking every kio fiber parked on it (kio_close).

    A *Python thread* blocked in :func:`read` or :func:`accept` on a socket
    ``fd`` is woken too (kio shuts the socket down first): it raises
    :class:`KioError` with ``EBADF`` or sees end of file."""
    check(lib.kio_close(_fd("kio.close", fd)), "kio_close")


def shutdown(fd: int, how: int = _socket.SHUT_RDWR) -> None:
    """shutdown(2) on the socket ``fd``: wakes threads blocked reading it (they
    see end of file) without closing the descriptor."""
    s = _socket.socket(fileno=os.dup(_fd("kio.shutdown", fd)))
    try:
        s.shutdown(how)
    finally:
        s.close()
