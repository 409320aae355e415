"""kio.Mutex and kio.Condition across Python threads (and C tasks)."""

from __future__ import annotations

import ctypes
import errno
import threading
import time

import pytest

import kio


def test_many_threads_exact_total() -> None:
    m = kio.Mutex()
    counter = [0]
    nthreads, n = 16, 10_000
    barrier = threading.Barrier(nthreads)

    def worker() -> None:
        barrier.wait()
        for _ in range(n):
            with m:
                v = counter[0]
                counter[0] = v + 1

    threads = [threading.Thread(target=worker) for _ in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter[0] == nthreads * n


def test_mutual_exclusion_is_real() -> None:
    # The GIL alone would not catch a broken mutex: sleep inside the critical
    # section (releasing the GIL) and check that nobody else is inside.
    m = kio.Mutex()
    inside = [0]
    violations = [0]

    def worker() -> None:
        for _ in range(50):
            with m:
                inside[0] += 1
                if inside[0] != 1:
                    violations[0] += 1
                time.sleep(0.0005)
                inside[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert violations[0] == 0


def test_try_acquire_release_and_errors() -> None:
    m = kio.Mutex()
    assert m.try_acquire()
    assert m.owned()
    # Held (by us): try_acquire fails, lock is EDEADLK.
    assert not m.try_acquire()
    with pytest.raises(kio.KioError) as ei:
        m.acquire()
    assert ei.value.errno == errno.EDEADLK
    other: list = []
    th = threading.Thread(target=lambda: other.append((m.try_acquire(), m.acquire(timeout=0.05))))
    th.start()
    th.join()
    assert other == [(False, False)]
    m.release()
    assert not m.owned()
    with pytest.raises(RuntimeError):
        m.release()
    with pytest.raises(ValueError):
        m.acquire(False, 1.0)
    assert m.acquire(blocking=False)
    m.release()


def test_release_from_other_thread_is_refused() -> None:
    m = kio.Mutex()
    m.acquire()
    errs: list = []

    def bad() -> None:
        try:
            m.release()
        except RuntimeError as e:
            errs.append(e)

    th = threading.Thread(target=bad)
    th.start()
    th.join()
    assert len(errs) == 1
    m.release()


def test_acquire_timeout_then_success() -> None:
    m = kio.Mutex()
    m.acquire()
    got: list = []

    def waiter() -> None:
        t0 = time.monotonic()
        got.append(m.acquire(timeout=0.05))
        got.append(time.monotonic() - t0)
        got.append(m.acquire(timeout=5))
        m.release()

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.2)
    m.release()
    th.join()
    assert got[0] is False and got[1] >= 0.05 and got[2] is True


def test_condition_ping_pong_between_threads() -> None:
    cond = kio.Condition()
    state = {"turn": 0, "count": 0}
    rounds = 2000

    def player(me: int) -> None:
        for _ in range(rounds):
            with cond:
                while state["turn"] != me:
                    cond.wait()
                state["count"] += 1
                state["turn"] = 1 - me
                cond.notify()

    threads = [threading.Thread(target=player, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    assert state["count"] == 2 * rounds


def test_condition_wait_timeout_and_wait_for() -> None:
    cond = kio.Condition(kio.Mutex())
    with cond:
        t0 = time.monotonic()
        assert cond.wait(timeout=0.05) is False
        assert time.monotonic() - t0 >= 0.05
        assert cond.mutex.owned()  # re-locked after the timeout
        assert cond.wait_for(lambda: False, timeout=0.02) is False
    with pytest.raises(RuntimeError):
        cond.wait(0.01)  # not holding the mutex
    flag = [False]

    def setter() -> None:
        time.sleep(0.05)
        with cond:
            flag[0] = True
            cond.notify_all()

    th = threading.Thread(target=setter)
    th.start()
    with cond:
        assert cond.wait_for(lambda: flag[0], timeout=10) is True
    th.join()


def test_notify_all_wakes_every_waiter() -> None:
    cond = kio.Condition()
    ready = [0]
    go = [False]
    woke = [0]

    def waiter() -> None:
        with cond:
            ready[0] += 1
            while not go[0]:
                cond.wait()
            woke[0] += 1

    threads = [threading.Thread(target=waiter) for _ in range(10)]
    for t in threads:
        t.start()
    while True:
        with cond:
            if ready[0] == 10:
                go[0] = True
                cond.notify_all()
                break
        time.sleep(0.001)
    for t in threads:
        t.join()
    assert woke[0] == 10


class IncrArgs(ctypes.Structure):
    _fields_ = [("mutex", ctypes.c_void_p), ("counter", ctypes.POINTER(ctypes.c_long)), ("n", ctypes.c_long)]


class PongArgs(ctypes.Structure):
    _fields_ = [
        ("mutex", ctypes.c_void_p),
        ("cond", ctypes.c_void_p),
        ("turn", ctypes.POINTER(ctypes.c_long)),
        ("rounds", ctypes.c_long),
    ]


def test_mutex_shared_by_c_tasks_and_python_threads(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    m = kio.Mutex()
    counter = ctypes.c_long(0)
    args = IncrArgs(m.address, ctypes.pointer(counter), 5000)
    tasks = [rt.spawn(helpers.locked_increments, args) for _ in range(8)]

    def py() -> None:
        for _ in range(5000):
            with m:
                counter.value += 1

    threads = [threading.Thread(target=py) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [t.join() for t in tasks] == [5000] * 8
    assert counter.value == 12 * 5000


def test_condition_ping_pong_with_c_task(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    cond = kio.Condition()
    turn = ctypes.c_long(0)
    rounds = 2000
    args = PongArgs(cond.mutex.address, cond.address, ctypes.pointer(turn), rounds)
    task = rt.spawn(helpers.cond_pong, args)
    for _ in range(rounds):
        with cond:
            while turn.value != 0:
                cond.wait()
            turn.value = 1
            cond.notify_all()
    assert task.join(timeout=30) == rounds


def test_huge_timeouts_wait_for_ever() -> None:
    """Timeouts beyond kio's 64-bit nanosecond clock (sys.maxsize seconds,
    1.8e10 s, inf) wait for ever: the deadline saturates instead of wrapping
    to one that has passed."""
    import sys

    m = kio.Mutex()
    for timeout in (sys.maxsize, 1.8446744e10, float("inf")):
        holding = threading.Event()

        def holder() -> None:
            with m:
                holding.set()
                time.sleep(0.1)

        th = threading.Thread(target=holder)
        th.start()
        holding.wait()
        t0 = time.monotonic()
        assert m.acquire(timeout=timeout) is True
        assert time.monotonic() - t0 >= 0.05
        m.release()
        th.join()
    cond = kio.Condition()
    for timeout in (sys.maxsize, 1.8446744e10):
        with cond:
            notifier = threading.Timer(0.1, lambda: (cond.acquire(), cond.notify(), cond.release()))
            notifier.start()
            assert cond.wait(timeout=timeout) is True
        notifier.join()


def test_threading_parity() -> None:
    m = kio.Mutex()
    # A negative timeout other than -1 is refused, as threading.Lock does.
    with pytest.raises(ValueError):
        m.acquire(timeout=-5)
    assert m.acquire(timeout=-1)
    # locked(): held by anyone.
    assert m.locked()
    held_elsewhere: list = []
    th = threading.Thread(target=lambda: held_elsewhere.append(m.locked()))
    th.start()
    th.join()
    assert held_elsewhere == [True]
    m.release()
    assert not m.locked()
    assert m.acquire(timeout=0)  # locked() left it free
    m.release()
