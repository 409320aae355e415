"""kio.asyncio.Completions: awaiting kio tasks from an event loop."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import random
import subprocess
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

import kio
import kio.asyncio


def test_await_10000_tasks(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    n = 10_000

    async def main() -> List[Optional[int]]:
        async with kio.asyncio.Completions() as cq:
            futures = []
            for i in range(n):
                if i % 10 == 0:
                    task = rt.spawn(helpers.sleep_then_inc, i % 50)  # parks, then i % 50 + 1
                else:
                    task = rt.spawn(helpers.square, i)
                futures.append(cq.wait(task))
            results = await asyncio.wait_for(asyncio.gather(*futures), timeout=120)
            assert cq.pending == 0
            return results

    results = asyncio.run(main())
    expected = [(i % 50 + 1) if i % 10 == 0 else (i * i or None) for i in range(n)]
    assert results == expected


def test_loop_stays_responsive(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    async def main() -> None:
        async with kio.asyncio.Completions() as cq:
            slow = cq.wait(rt.spawn(helpers.sleep_then_inc, 300))
            ticks = 0
            while not slow.done():
                await asyncio.sleep(0.01)
                ticks += 1
            assert await slow == 301
            assert ticks >= 3  # the loop ran while the task slept

    asyncio.run(main())


def test_canceled_task_result_and_already_finished(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    async def main() -> None:
        async with kio.asyncio.Completions() as cq:
            done = rt.spawn(helpers.square, 12)
            while not done.done():
                await asyncio.sleep(0.001)
            assert await cq.wait(done) == 144  # finished before the watch
            with pytest.raises(kio.KioError) as ei:
                cq.wait(done)  # consumed
            assert ei.value.errno == errno.EINVAL

    asyncio.run(main())


def test_close_with_pending_futures(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    async def main() -> None:
        cq = kio.asyncio.Completions()
        fut = cq.wait(rt.spawn(helpers.sleep_ms, 60_000))
        cq.close()
        with pytest.raises(kio.Canceled):
            await fut
        assert cq.closed
        with pytest.raises(RuntimeError):
            cq.wait(rt.spawn(helpers.square, 2))

    asyncio.run(main())
    # The runtime's stop (fixture) cancels the orphaned sleeper.


def test_runtime_stop_resolves_pending_waits(helpers: ctypes.CDLL) -> None:
    async def main() -> None:
        rt = kio.Runtime(threads=2)
        async with kio.asyncio.Completions() as cq:
            futs = [cq.wait(rt.spawn(helpers.sleep_ms, 60_000)) for _ in range(20)]
            await asyncio.sleep(0.05)
            await asyncio.get_running_loop().run_in_executor(None, rt.stop)
            results = await asyncio.wait_for(asyncio.gather(*futs), timeout=10)
            assert results == [-errno.ECANCELED] * 20

    asyncio.run(main())


def test_completions_needs_a_loop() -> None:
    with pytest.raises(RuntimeError, match="running event loop"):
        kio.asyncio.Completions()


# -- against the kio echo example --------------------------------------------


@pytest.fixture
def echo_port(echo_server_path: Path) -> Iterator[int]:
    proc = subprocess.Popen(
        [str(echo_server_path), "0", "2", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"echo_server did not start: {line!r} {err!r}")
        yield int(line.split()[-1])
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err


def test_asyncio_echo_client(echo_port: int) -> None:
    async def client(k: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", echo_port)
        rng = random.Random(k)
        total = 0
        for _ in range(20):
            msg = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5000)))
            writer.write(msg)
            await writer.drain()
            assert await reader.readexactly(len(msg)) == msg
            total += len(msg)
        writer.close()
        await writer.wait_closed()
        return total

    async def main() -> None:
        totals = await asyncio.wait_for(asyncio.gather(*(client(k) for k in range(50))), 60)
        assert all(t > 0 for t in totals)

    asyncio.run(main())


class EchoArgs(ctypes.Structure):
    _fields_ = [("port", ctypes.c_int), ("rounds", ctypes.c_int), ("seed", ctypes.c_int)]


def test_kio_tasks_and_threads_against_echo_server(
    echo_port: int, rt: kio.Runtime, helpers: ctypes.CDLL
) -> None:
    """C tasks doing socket I/O on fibers, awaited from asyncio, alongside
    Python threads using the kio socket helpers (run_in_executor)."""

    def thread_client(k: int) -> int:
        fd = kio.dial_tcp("127.0.0.1", echo_port, timeout=10)
        try:
            msg = bytes([k % 256]) * 10_000
            kio.write_all(fd, msg)
            back = b""
            while len(back) < len(msg):
                chunk = kio.read(fd, 65536)
                assert chunk
                back += chunk
            assert back == msg
            return len(back)
        finally:
            kio.close(fd)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with kio.asyncio.Completions() as cq:
            args = [EchoArgs(echo_port, 10, k) for k in range(100)]
            fibers = [cq.wait(rt.spawn(helpers.echo_roundtrip, a)) for a in args]
            threads = [loop.run_in_executor(None, thread_client, k) for k in range(8)]
            assert await asyncio.wait_for(asyncio.gather(*fibers), 60) == [10_000] * 100
            assert await asyncio.wait_for(asyncio.gather(*threads), 60) == [10_000] * 8

    t0 = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - t0 < 60
