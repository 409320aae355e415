"""Exceptions raised by signal handlers (Ctrl-C's KeyboardInterrupt) while a
Python thread waits in kio: the wait is interrupted, or what kio did is
recorded; never a mutex locked by nobody, a Task reset to live after kio
consumed its handle, or an in-flight count that makes stop() hang.

The signal is SIGALRM with a handler that raises conftest.Interrupt (a
BaseException, like KeyboardInterrupt), in the main thread."""

from __future__ import annotations

import ctypes
import errno
import signal
import threading
import time
from typing import Callable, Dict, List

import pytest

import kio
from conftest import Interrupt, alarm


def other_thread_acquires(m: kio.Mutex, timeout: float = 1.0) -> bool:
    """Whether another thread can lock ``m`` within ``timeout`` (then unlocks)."""
    got: List[bool] = []

    def run() -> None:
        ok = m.acquire(timeout=timeout)
        got.append(ok)
        if ok:
            m.release()

    th = threading.Thread(target=run)
    th.start()
    th.join(timeout + 5)
    return got == [True]


def hold(m: kio.Mutex, seconds: float) -> threading.Thread:
    """A thread that holds ``m`` for ``seconds`` (returns once it holds it)."""
    holding = threading.Event()

    def run() -> None:
        with m:
            holding.set()
            time.sleep(seconds)

    th = threading.Thread(target=run)
    th.start()
    holding.wait()
    return th


def test_mutex_acquire_interrupted_leaves_it_unlocked() -> None:
    m = kio.Mutex()
    th = hold(m, 0.3)
    t0 = time.monotonic()
    with alarm(0.1):
        with pytest.raises(Interrupt):
            with m:
                pytest.fail("the mutex was acquired")
    elapsed = time.monotonic() - t0
    th.join()
    assert elapsed < 0.25, "Ctrl-C did not interrupt Mutex.acquire"
    assert not m.owned()
    assert other_thread_acquires(m), "the mutex stayed locked by nobody"
    assert not m.locked()


def test_mutex_handed_over_as_the_signal_arrives() -> None:
    """The holder lets go just after the signal: kio hands the mutex over,
    and the exception comes right after kio_mutex_lock returned. Whatever
    the timing, the mutex ends up either owned by this thread or free."""
    for _ in range(3):
        m = kio.Mutex()
        th = hold(m, 0.06)
        try:
            with alarm(0.05):
                m.acquire()
                time.sleep(1)  # the signal lands here if the lock came first
        except Interrupt:
            pass
        th.join()
        if m.owned():
            m.release()
        assert other_thread_acquires(m), "the mutex stayed locked by nobody"


def test_condition_wait_interrupted_holds_the_mutex_again() -> None:
    c = kio.Condition()

    def notify() -> None:
        with c:
            c.notify()

    rescue = threading.Timer(0.6, notify)  # for a wait that Ctrl-C cannot interrupt
    rescue.start()
    t0 = time.monotonic()
    try:
        with alarm(0.1):
            with pytest.raises(Interrupt):  # not RuntimeError from c.__exit__
                with c:
                    c.wait()
                    pytest.fail("the wait was not interrupted")
    finally:
        rescue.cancel()
    assert time.monotonic() - t0 < 0.5, "Ctrl-C did not interrupt Condition.wait"
    assert not c.mutex.owned()
    assert other_thread_acquires(c.mutex)


def test_condition_wait_keeps_the_mutex_when_interrupted() -> None:
    """Inside the with block, after the interrupted wait, the mutex is held
    (as threading.Condition.wait re-acquires its lock whatever happens)."""
    c = kio.Condition()
    with c:
        with alarm(0.05):
            with pytest.raises(Interrupt):
                c.wait(timeout=5)
        assert c.mutex.owned()
        assert c.mutex.locked()
    assert other_thread_acquires(c.mutex)


def test_join_interrupted_after_kio_consumed_the_handle(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    """The task finishes 30 ms after the signal, inside one of join()'s
    100 ms waits: kio_await returns the result and consumes the handle, then
    the exception comes. The Task must follow kio: consumed, and the next
    join() returns the result (it must not pass the consumed handle to
    kio again)."""
    t = rt.spawn(helpers.sleep_then_inc, 150)
    results: List[object] = []
    try:
        with alarm(0.12):
            results.append(t.join())
            time.sleep(1)  # (the signal lands here if the task was early)
    except Interrupt:
        pass
    if not results:
        assert t.consumed
        results.append(t.join(timeout=5))
    assert results == [151]
    assert t.done()
    with pytest.raises(kio.KioError) as ei:
        t.join()
    assert ei.value.errno == errno.EINVAL


def test_cancel_interrupted_then_join_gets_the_result(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    t = rt.spawn(helpers.shielded_sleep_ms, 300)
    time.sleep(0.02)
    with alarm(0.05):
        with pytest.raises(Interrupt):
            t.cancel()
    assert t.consumed  # cancel() handed the handle to a queue of its own
    assert not t.done()
    assert t.join(timeout=5) == 7
    assert t.done()


def test_signal_storm_during_join_cancel_and_mutex(helpers: ctypes.CDLL) -> None:
    """An exception every 0.2 ms, at whatever point of join(), cancel() or
    Mutex.acquire() it lands (one per attempt): every retry works, no
    consumed handle reaches kio again, and stop() does not hang."""
    armed = [False]

    def tick(signum: int, frame: object) -> None:
        if armed[0]:
            armed[0] = False
            raise Interrupt()

    old = signal.signal(signal.SIGALRM, tick)
    counts: Dict[str, int] = {"ok": 0, "interrupted": 0}
    errors: List[BaseException] = []
    rt = kio.Runtime(threads=2)
    m = kio.Mutex()
    signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
    try:
        end = time.monotonic() + 1.0
        i = 0
        while time.monotonic() < end and not errors:
            i += 1
            t = rt.spawn(helpers.sleep_then_inc, 1)
            ops: List[Callable[[], object]] = [t.join, t.cancel]
            op = ops[i % 2]
            while True:
                try:
                    armed[0] = True
                    r = op()
                    armed[0] = False
                    if r not in (2, -errno.ECANCELED):
                        errors.append(AssertionError(f"result {r!r}"))
                    counts["ok"] += 1
                    break
                except Interrupt:
                    counts["interrupted"] += 1
                    op = ops[(i + counts["interrupted"]) % 2]
                except kio.KioError as e:  # e.g. a consumed handle passed to kio
                    armed[0] = False
                    errors.append(e)
                    break
            try:
                armed[0] = True
                with m:
                    armed[0] = False
            except Interrupt:
                pass
            if m.owned():
                m.release()
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
    assert not errors, errors
    assert counts["interrupted"] > 0 and counts["ok"] > 0, counts
    assert not m.locked()
    stopper = threading.Thread(target=rt.stop, daemon=True)
    stopper.start()
    stopper.join(10)
    assert not stopper.is_alive(), "Runtime.stop() hung: an in-flight call leaked"
