"""The complete program of docs/python.md (the page includes this file).

Tasks are C functions: the program compiles three of them into a small
shared library, then runs them from Python threads, from asyncio, and
against a Python TCP client, and shows kio's errors as exceptions.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import shutil
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import kio
import kio.asyncio

TASKS_C = r"""
#include <kio.h>
#include <stdint.h>

/* n-th Fibonacci number, computed slowly: a CPU-bound task. */
void *fib(void *arg) {
    intptr_t n = (intptr_t)arg, a = 0, b = 1;
    for (intptr_t i = 0; i < n; i++) {
        intptr_t t = a + b;
        a = b;
        b = t;
    }
    return (void *)a;
}

/* Sleeps arg milliseconds; returns 0, or -ECANCELED if canceled. */
void *nap(void *arg) {
    return (void *)(intptr_t)kio_sleep((uint64_t)(uintptr_t)arg * 1000000);
}

/* Accepts one connection on the listening socket arg and echoes it until
 * end of file. Returns the byte count, or a negative errno. */
void *echo_once(void *arg) {
    int fd = kio_accept((int)(intptr_t)arg, NULL, NULL, 0);
    if (fd < 0) return (void *)(intptr_t)fd;
    char buf[4096];
    intptr_t total = 0;
    ssize_t n;
    while ((n = kio_read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < n;) {
            ssize_t w = kio_write(fd, buf + off, (size_t)(n - off));
            if (w < 0) {
                kio_close(fd);
                return (void *)(intptr_t)w;
            }
            off += w;
        }
        total += n;
    }
    kio_close(fd);
    return (void *)(n < 0 ? (intptr_t)n : total);
}
"""


def build_tasks(workdir: Path) -> ctypes.CDLL:
    """Compiles TASKS_C against kio.h and the libkio that kio loaded."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    include = Path(__file__).resolve().parents[3] / "include"  # or: pkg-config --cflags kio
    src, out = workdir / "tasks.c", workdir / "libtasks.so"
    src.write_text(TASKS_C)
    libkio = Path(kio.library_path).resolve()
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", f"-I{include}", str(src), "-o", str(out),
         str(libkio), f"-Wl,-rpath,{libkio.parent}"],
        check=True,
    )
    return ctypes.CDLL(str(out))


def test_doc_example(tmp_path: Path) -> None:
    tasks = build_tasks(tmp_path)

    with kio.Runtime(threads=2) as rt:
        # Spawn, then join: join blocks this thread only (the GIL is released).
        assert rt.spawn(tasks.fib, 50).join() == 12586269025

        # Python threads are plain threads for kio: each one joins its own task.
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda n: rt.spawn(tasks.fib, n).join(), range(1, 30)))
        assert results[-1] == 514229

        # Errors are exceptions: a join with a timeout raises kio.TimedOut
        # (a TimeoutError) and leaves the task alone; cancel() returns what
        # the task returned.
        sleeper = rt.spawn(tasks.nap, 60_000, name="sleeper")
        with pytest.raises(kio.TimedOut):
            sleeper.join(timeout=0.05)
        assert sleeper.cancel() == -errno.ECANCELED

        # I/O: a C task serves one connection; this thread is the client.
        lfd = kio.listen_tcp("127.0.0.1", 0)
        with socket.socket(fileno=os.dup(lfd)) as s:
            port = s.getsockname()[1]
        server = rt.spawn(tasks.echo_once, lfd)
        conn = kio.dial_tcp("127.0.0.1", port, timeout=5)
        kio.write_all(conn, b"ping " * 1000)
        echoed = b""
        while len(echoed) < 5000:
            echoed += kio.read(conn, 5000 - len(echoed))
        kio.close(conn)  # the server sees end of file
        assert echoed == b"ping " * 1000
        assert server.join(timeout=5) == 5000
        kio.close(lfd)
        with pytest.raises(kio.ConnectionRefused):  # nobody listens any more
            kio.dial_tcp("127.0.0.1", port, timeout=5)

        # asyncio: a completion queue delivers results to the event loop,
        # which never blocks.
        async def main() -> list:
            async with kio.asyncio.Completions() as cq:
                futures = [cq.wait(rt.spawn(tasks.fib, n)) for n in range(1, 91)]
                futures.append(cq.wait(rt.spawn(tasks.nap, 20)))
                return await asyncio.gather(*futures)

        results = asyncio.run(main())
        assert results[89] == 2880067194370816120  # fib(90)
        assert results[90] is None  # nap returned NULL (0)
    # Leaving the block stopped the runtime: every task has finished.
