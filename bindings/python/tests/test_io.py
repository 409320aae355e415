"""Socket helpers from Python threads, and their errors."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time

import pytest

import kio


def local_port(fd: int) -> int:
    s = socket.socket(fileno=os.dup(fd))
    try:
        return s.getsockname()[1]
    finally:
        s.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def test_listen_dial_read_write_between_threads() -> None:
    lfd = kio.listen_tcp("127.0.0.1", 0)
    port = local_port(lfd)
    assert port > 0
    received: list = []

    def server() -> None:
        fd = kio.accept(lfd)
        try:
            while True:
                data = kio.read(fd, 65536)
                if not data:
                    break
                received.append(data)
                kio.write_all(fd, data.upper())
        finally:
            kio.close(fd)

    th = threading.Thread(target=server)
    th.start()
    fd = kio.dial_tcp("127.0.0.1", port, timeout=5)
    try:
        payload = b"hello kio " * 1000
        kio.write_all(fd, payload)
        back = b""
        while len(back) < len(payload):
            back += kio.read(fd, 65536)
        assert back == payload.upper()
        assert kio.write(fd, bytearray(b"x")) == 1
        assert kio.read(fd, 1) == b"X"
        assert kio.poll(fd, kio.POLLOUT, timeout=1) & kio.POLLOUT
        with pytest.raises(kio.TimedOut):
            kio.poll(fd, kio.POLLIN, timeout=0.02)
    finally:
        kio.close(fd)
    th.join()
    kio.close(lfd)
    assert b"".join(received) == payload + b"x"


def test_dial_closed_port_is_econnrefused() -> None:
    with pytest.raises(kio.KioError) as ei:
        kio.dial_tcp("127.0.0.1", closed_port(), timeout=5)
    assert ei.value.errno == errno.ECONNREFUSED
    assert isinstance(ei.value, ConnectionRefusedError)
    assert isinstance(ei.value, kio.ConnectionRefused)


def test_bad_fd_is_ebadf() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    for call in (lambda: kio.read(r, 10), lambda: kio.write(w, b"x"), lambda: kio.close(r)):
        with pytest.raises(kio.KioError) as ei:
            call()
        assert ei.value.errno == errno.EBADF
    with pytest.raises(kio.KioError) as ei:
        kio.read(-1, 1)
    assert ei.value.errno == errno.EBADF


def test_listen_errors() -> None:
    lfd = kio.listen_tcp("127.0.0.1", 0)
    try:
        with pytest.raises(kio.KioError) as ei:
            # SO_REUSEADDR does not allow two listeners on one port.
            kio.listen_tcp("127.0.0.1", local_port(lfd))
        assert ei.value.errno == errno.EADDRINUSE
    finally:
        kio.close(lfd)


def test_shutdown_wakes_blocked_reader_thread() -> None:
    lfd = kio.listen_tcp("127.0.0.1", 0)
    fd = kio.dial_tcp("127.0.0.1", local_port(lfd), timeout=5)
    got: list = []

    def reader() -> None:
        got.append(kio.read(fd, 10))

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    kio.sleep(0.1)
    kio.shutdown(fd)  # kio.close alone would not wake a thread in poll(2)
    th.join(timeout=5)
    assert not th.is_alive() and got == [b""]
    kio.close(fd)
    kio.close(lfd)


def test_out_of_range_ints_are_refused() -> None:
    """ctypes keeps the low bits of an int too wide for a C parameter: kio.close
    (2**32 + fd) used to close fd. They raise OverflowError, as os.close and
    the socket module do."""
    r, w = os.pipe()
    try:
        with pytest.raises(OverflowError):
            kio.close(2**32 + r)
        os.fstat(r)  # still open
        os.write(w, b"hi")
        with pytest.raises(OverflowError):
            kio.read(2**32 + r, 2)
        with pytest.raises(OverflowError):
            kio.write(2**32 + w, b"x")
        with pytest.raises(OverflowError):
            kio.poll(r, 0x10001, timeout=0.01)  # events: a C short
        with pytest.raises(OverflowError):
            kio.accept(-(2**31) - 1)
        with pytest.raises(TypeError):
            kio.close(float(r))  # type: ignore[arg-type]
        assert kio.read(r, 2) == b"hi"
    finally:
        os.close(r)
        os.close(w)
    lfd = kio.listen_tcp("127.0.0.1", 0)
    try:
        port = local_port(lfd)
        for bad in (2**32 + port, 65536, -1):
            with pytest.raises(OverflowError):
                kio.dial_tcp("127.0.0.1", bad, timeout=2)
            with pytest.raises(OverflowError):
                kio.listen_tcp("127.0.0.1", bad)
        with pytest.raises(OverflowError):
            kio.listen_tcp("127.0.0.1", 0, backlog=2**40)
    finally:
        kio.close(lfd)
    with kio.Runtime(threads=1) as rt:
        with pytest.raises(OverflowError):
            rt.dump(2**32 + 2)


def test_poll_with_a_huge_timeout_waits() -> None:
    """A timeout beyond kio's 64-bit nanosecond clock waits for ever (the
    deadline wrapped to one in the past: TimedOut at once)."""
    r, w = os.pipe()
    try:
        threading.Timer(0.1, lambda: os.write(w, b"x")).start()
        assert kio.poll(r, kio.POLLIN, timeout=1.8446744e10) & kio.POLLIN
        lfd = kio.listen_tcp("127.0.0.1", 0)
        fd = kio.dial_tcp("127.0.0.1", local_port(lfd), timeout=1.8446744e10)
        kio.close(fd)
        kio.close(lfd)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("call", ["read", "poll", "accept"])
def test_ctrl_c_interrupts_socket_waits(call: str) -> None:
    from conftest import Interrupt, alarm

    lfd = kio.listen_tcp("127.0.0.1", 0)
    port = local_port(lfd)
    fd = kio.dial_tcp("127.0.0.1", port, timeout=5)
    peer = kio.accept(lfd)
    # For a wait that Ctrl-C cannot interrupt: what it waits for, later.
    rescue = threading.Timer(
        1.0, lambda: kio.write(peer, b"x") if call != "accept" else socket.create_connection(("127.0.0.1", port))
    )
    rescue.start()
    t0 = time.monotonic()
    try:
        with alarm(0.1):
            with pytest.raises(Interrupt):
                if call == "read":
                    kio.read(fd, 10)
                elif call == "poll":
                    kio.poll(fd, kio.POLLIN)
                else:
                    kio.accept(lfd)
                time.sleep(2)
    finally:
        rescue.cancel()
        for d in (fd, peer, lfd):
            kio.close(d)
    assert time.monotonic() - t0 < 0.8
