"""Time and socket helpers for Python threads (each call blocks the thread)."""

from __future__ import annotations

import ctypes
import os
import socket as _socket
from typing import Optional, Union

from ._errors import check
from ._lib import lib

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

_SLEEP_SLICE_NS = 100_000_000  # come back to Python (KeyboardInterrupt) this often

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
    if timeout is None:
        return 0
    return int(lib.kio_now()) + max(1, int(timeout * 1e9))


def sleep(seconds: float) -> None:
    """Sleeps the calling thread for at least ``seconds`` (kio_sleep_until on a
    plain thread). Comes back to Python every 100 ms, so Ctrl-C works."""
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    end = lib.kio_now() + int(seconds * 1e9)
    while True:
        t = lib.kio_now()
        if t >= end:
            return
        check(lib.kio_sleep_until(min(end, t + _SLEEP_SLICE_NS)), "kio_sleep")


def listen_tcp(host: Optional[str], port: int, backlog: int = 128) -> int:
    """A listening TCP socket bound to host:port (host None or "" = any
    address; port 0 picks a free port) with SO_REUSEADDR (kio_listen_tcp).
    Returns the descriptor; close it with :func:`kio.close`."""
    h = host.encode("idna") if host else None
    return check(lib.kio_listen_tcp(h, int(port), int(backlog)), f"listen on {host}:{port}")


def dial_tcp(host: str, port: int, timeout: Optional[float] = None) -> int:
    """A TCP socket connected to host:port, trying each resolved address until
    one connects or ``timeout`` seconds pass (kio_dial_tcp). Returns the
    descriptor. Raises e.g. :class:`kio.ConnectionRefused` (a
    ConnectionRefusedError) or :class:`kio.TimedOut`."""
    return check(
        lib.kio_dial_tcp(host.encode("idna"), int(port), _deadline(timeout)),
        f"connect to {host}:{port}",
    )


def accept(fd: int) -> int:
    """Waits for a connection on the listening socket ``fd`` and returns the new
    (non-blocking, close-on-exec) descriptor (kio_accept)."""
    flags = getattr(_socket, "SOCK_CLOEXEC", 0)
    return check(lib.kio_accept(int(fd), None, None, flags), "kio_accept")


def read(fd: int, n: int) -> bytes:
    """Reads up to ``n`` bytes from ``fd`` (kio_read): b"" at end of file."""
    if n < 0:
        raise ValueError("read: n must be >= 0")
    buf = ctypes.create_string_buffer(n)
    got = check(lib.kio_read(int(fd), buf, n), "kio_read")
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
    ptr, n = _pointer(data)
    return check(lib.kio_write(int(fd), ptr, n), "kio_write")


def write_all(fd: int, data: Buffer) -> None:
    """Writes all of ``data`` to ``fd``."""
    view = memoryview(data).cast("B")
    off = 0
    while off < len(view):
        off += write(fd, view[off:])


def poll(fd: int, events: int, timeout: Optional[float] = None) -> int:
    """Waits until ``fd`` is ready for ``events`` (POLLIN, POLLOUT) and returns
    the ready events (kio_poll); raises :class:`kio.TimedOut` after
    ``timeout`` seconds."""
    return check(lib.kio_poll(int(fd), events, _deadline(timeout)), "kio_poll")


def close(fd: int) -> None:
    """Closes ``fd`` after waking every kio fiber parked on it (kio_close).

    A *Python thread* blocked in :func:`read` or :func:`accept` on a socket
    ``fd`` is woken too (kio shuts the socket down first): it raises
    :class:`KioError` with ``EBADF`` or sees end of file."""
    check(lib.kio_close(int(fd)), "kio_close")


def shutdown(fd: int, how: int = _socket.SHUT_RDWR) -> None:
    """shutdown(2) on the socket ``fd``: wakes threads blocked reading it (they
    see end of file) without closing the descriptor."""
    s = _socket.socket(fileno=os.dup(int(fd)))
    try:
        s.shutdown(how)
    finally:
        s.close()
