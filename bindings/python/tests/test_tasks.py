"""Spawning C functions, join/cancel/detach/select, errors, stop."""

from __future__ import annotations

import ctypes
import errno
import gc
import threading
import time
import warnings

import pytest

import kio


def test_spawn_and_join(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    tasks = [rt.spawn(helpers.square, i) for i in range(200)]
    assert [t.join() for t in tasks] == [None] + [i * i for i in range(1, 200)]
    assert all(t.consumed for t in tasks)


def test_spawn_accepts_addresses_and_options(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    addr = ctypes.cast(helpers.square, ctypes.c_void_p).value
    assert addr
    assert rt.spawn(addr, 9).join() == 81
    assert rt.spawn(ctypes.c_void_p(addr), 5).join() == 25
    t = rt.spawn(helpers.square, 6, name="sq", stack_size=128 * 1024, pinned=True)
    assert t.name == "sq"
    assert t.join() == 36
    # Results read as intptr_t: negative values come back negative.
    assert rt.spawn(helpers.identity, -5).join() == -5
    assert rt.spawn(helpers.identity, None).join() is None


def test_arguments_by_reference(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    value = ctypes.c_long(41)
    # identity returns the address it was given: the object's address.
    assert rt.spawn(helpers.identity, value).join() == ctypes.addressof(value)
    buf = bytearray(b"abc")
    addr = rt.spawn(helpers.identity, buf).join()
    assert ctypes.string_at(addr, 3) == b"abc"
    p = ctypes.pointer(value)
    assert rt.spawn(helpers.identity, p).join() == ctypes.addressof(value)
    with pytest.raises(TypeError):
        rt.spawn(helpers.identity, object())


def test_python_callables_are_refused(rt: kio.Runtime) -> None:
    with pytest.raises(TypeError, match="Python code must never run"):
        rt.spawn(lambda arg: arg)  # type: ignore[arg-type]
    fn_type = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)
    callback = fn_type(lambda arg: arg)
    with pytest.raises(TypeError, match="CFUNCTYPE"):
        rt.spawn(callback)
    # The same callback cast to another type, or by address.
    with pytest.raises(TypeError, match="Python"):
        rt.spawn(ctypes.cast(callback, fn_type))
    with pytest.raises(TypeError, match="not inside any loaded library"):
        rt.spawn(ctypes.cast(callback, ctypes.c_void_p).value)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        rt.spawn("square")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        rt.spawn(0)


def test_join_twice_is_einval(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    t = rt.spawn(helpers.square, 3)
    assert t.join() == 9
    for op in (t.join, t.cancel, t.detach):
        with pytest.raises(kio.KioError) as ei:
            op()
        assert ei.value.errno == errno.EINVAL


def test_join_from_two_threads_is_ebusy(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    t = rt.spawn(helpers.sleep_then_inc, 500)
    results: list = []
    joiner = threading.Thread(target=lambda: results.append(t.join()))
    joiner.start()
    deadline = time.monotonic() + 10
    while not t._state and time.monotonic() < deadline:  # until the joiner is in join()
        time.sleep(0.001)
    with pytest.raises(kio.KioError) as ei:
        t.join()
    assert ei.value.errno == errno.EBUSY
    joiner.join()
    assert results == [501]


def test_cancel_sleeping_task_returns_ecanceled(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    t = rt.spawn(helpers.sleep_ms, 60_000)
    time.sleep(0.05)  # let it park in kio_sleep
    t0 = time.monotonic()
    assert t.cancel() == -errno.ECANCELED
    assert time.monotonic() - t0 < 5


def test_cancel_before_start_still_runs(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    # Canceled at once: the task still runs, its kio_sleep fails at entry.
    results = [rt.spawn(helpers.sleep_ms, 60_000).cancel() for _ in range(50)]
    assert results == [-errno.ECANCELED] * 50


def test_join_timeout(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    t = rt.spawn(helpers.sleep_then_inc, 200)
    with pytest.raises(kio.TimedOut) as ei:
        t.join(timeout=0.02)
    assert isinstance(ei.value, TimeoutError) and ei.value.errno == errno.ETIMEDOUT
    assert not t.consumed
    assert not t.done()
    assert t.join(timeout=10) == 201
    assert t.done()  # joined: finished (the handle is consumed)
    c = rt.spawn(helpers.sleep_ms, 60_000)
    c.cancel()
    assert c.done()


def test_spawn_stack_size_wider_than_size_t_is_refused(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    with pytest.raises(ValueError):
        rt.spawn(helpers.sleep_ms, 1, stack_size=2**64 + 32768)


def test_detach(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    t = rt.spawn(helpers.sleep_ms, 10, name="detached")
    t.detach()
    assert t.consumed
    with pytest.raises(kio.KioError):
        t.join()


def test_select(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    slow = rt.spawn(helpers.sleep_then_inc, 2000)
    fast = rt.spawn(helpers.sleep_then_inc, 20)
    assert kio.select([slow, fast]) == 1
    assert fast.done() and not slow.done()
    assert fast.join() == 21
    with pytest.raises(kio.TimedOut):
        kio.select([slow], timeout=0.01)
    # Consumed handles are refused.
    with pytest.raises(kio.KioError) as ei:
        kio.select([fast])
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(ValueError):
        kio.select([])
    assert slow.cancel() == -errno.ECANCELED
    # More than 16 tasks (kio allocates).
    many = [rt.spawn(helpers.sleep_then_inc, 5000) for _ in range(40)]
    many.append(rt.spawn(helpers.square, 7))
    assert kio.select(many) == 40
    assert many[-1].join() == 49
    assert [t.cancel() for t in many[:-1]] == [-errno.ECANCELED] * 40


def test_task_ids(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    t = rt.spawn(helpers.my_task_id)
    if t.id is None:
        t.join()
        pytest.skip("this libkio does not export kio_task_get_id")
    assert t.join() == t.id and t.id > 1
    ids = set()
    for _ in range(10):
        t = rt.spawn(helpers.square, 1)
        ids.add(t.id)
        t.join()
    assert len(ids) == 10


def test_unconsumed_task_is_detached_with_warning(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    before = rt.stats().tasks_live
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = rt.spawn(helpers.sleep_ms, 20)
        del t
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    # Detached, not leaked: it finishes and is freed.
    deadline = time.monotonic() + 5
    while rt.stats().tasks_live > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rt.stats().tasks_live == before


def test_many_threads_spawn_and_join(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    errors: list = []

    def worker(base: int) -> None:
        try:
            for i in range(500):
                v = base + i
                assert rt.spawn(helpers.square, v).join() == v * v
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k * 1000 + 1,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors


# -- stopping ---------------------------------------------------------------


def test_context_manager_stops_with_tasks_running(helpers: ctypes.CDLL) -> None:
    t0 = time.monotonic()
    with kio.Runtime(threads=2) as rt:
        pending = [rt.spawn(helpers.sleep_ms, 60_000) for _ in range(100)]
        for _ in range(100):
            rt.spawn(helpers.sleep_ms, 60_000).detach()
        time.sleep(0.05)
        assert rt.stats().tasks_live == 200
    assert time.monotonic() - t0 < 10
    assert rt.closed
    # Handles of a stopped runtime are invalid, and say so.
    with pytest.raises(kio.KioError) as ei:
        pending[0].join()
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(kio.KioError) as ei:
        rt.spawn(helpers.square, 1)
    assert ei.value.errno == errno.EINVAL
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ResourceWarning for these
        del pending
        gc.collect()


def test_stop_waits_for_shielded_tasks(helpers: ctypes.CDLL) -> None:
    with kio.Runtime(threads=2) as rt:
        rt.spawn(helpers.shielded_sleep_ms, 200).detach()
        time.sleep(0.05)
        t0 = time.monotonic()
    assert time.monotonic() - t0 >= 0.1


def test_stop_while_threads_join(helpers: ctypes.CDLL) -> None:
    rt = kio.Runtime(threads=2)
    tasks = [rt.spawn(helpers.sleep_ms, 60_000) for _ in range(4)]
    results: list = []
    lock = threading.Lock()

    def joiner(t: kio.Task) -> None:
        r = t.join()
        with lock:
            results.append(r)

    threads = [threading.Thread(target=joiner, args=(t,)) for t in tasks]
    for th in threads:
        th.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    rt.stop()
    for th in threads:
        th.join()
    assert time.monotonic() - t0 < 5
    # The joiners saw their tasks canceled by the stop.
    assert results == [-errno.ECANCELED] * 4


@pytest.mark.parametrize("how", ["cancel", "join"])
def test_stop_while_a_thread_waits_for_a_task_only_the_stop_ends(helpers: ctypes.CDLL, how: str) -> None:
    """A thread in cancel() (or in join(), which cancels once the stop
    begins) of a task whose shielded cleanup waits for a child that only the
    stop cancels: stop() cancels the child, and both calls return."""
    rt = kio.Runtime(threads=2)
    t = rt.spawn(helpers.shielded_wait_for_child)
    time.sleep(0.05)
    results: list = []
    th = threading.Thread(target=lambda: results.append(getattr(t, how)()), daemon=True)
    th.start()
    time.sleep(0.05)
    stopper = threading.Thread(target=rt.stop, daemon=True)
    stopper.start()
    stopper.join(timeout=10)
    assert not stopper.is_alive(), "Runtime.stop() hung"
    th.join(timeout=10)
    assert not th.is_alive(), f"{how}() did not return after the stop"
    # The child's sleep was canceled: the task returned the child's -ECANCELED.
    assert results == [-errno.ECANCELED]


def test_stop_while_thread_selects(helpers: ctypes.CDLL) -> None:
    rt = kio.Runtime(threads=2)
    tasks = [rt.spawn(helpers.sleep_ms, 60_000) for _ in range(3)]
    caught: list = []

    def selector() -> None:
        try:
            kio.select(tasks)
        except kio.Canceled as e:
            caught.append(e)

    th = threading.Thread(target=selector)
    th.start()
    time.sleep(0.1)
    rt.stop()
    th.join()
    assert len(caught) == 1 and caught[0].errno == errno.ECANCELED


def test_unstopped_runtime_warns_and_stops(helpers: ctypes.CDLL) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rt = kio.Runtime(threads=1)
        rt.spawn(helpers.sleep_ms, 60_000).detach()
        del rt
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)


def test_stop_races_with_busy_threads(helpers: ctypes.CDLL) -> None:
    """Threads spawn, join, cancel, detach and select while the runtime stops:
    every call either works or raises KioError; nothing crashes or hangs."""
    for round_ in range(5):
        rt = kio.Runtime(threads=4)
        stop = threading.Event()
        unexpected: list = []

        def busy(k: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    t = rt.spawn(helpers.sleep_then_inc if i % 3 else helpers.square, i % 7)
                    how = (i + k) % 4
                    if how == 0:
                        r = t.join()
                        assert r in (-errno.ECANCELED, (i % 7) + 1, (i % 7) ** 2 or None)
                    elif how == 1:
                        t.cancel()
                    elif how == 2:
                        t.detach()
                    else:
                        other = rt.spawn(helpers.square, 3)
                        kio.select([t, other])
                        t.join()
                        other.join()
                except kio.KioError as e:
                    if not rt.closed:
                        unexpected.append(e)
                        return
                    # Drop handles the stop invalidated (no warning: stopped).
                except BaseException as e:  # noqa: BLE001
                    unexpected.append(e)
                    return

        threads = [threading.Thread(target=busy, args=(k,)) for k in range(8)]
        for th in threads:
            th.start()
        time.sleep(0.05 + 0.02 * round_)
        rt.stop()
        stop.set()
        for th in threads:
            th.join(timeout=30)
            assert not th.is_alive()
        assert not unexpected, unexpected


class ReadLaterArgs(ctypes.Structure):
    _fields_ = [("ms", ctypes.c_int64), ("value", ctypes.c_int64)]


def test_argument_outlives_a_task_collected_during_stop(helpers: ctypes.CDLL) -> None:
    """A Task garbage collected while another thread is inside stop(): its
    argument must stay alive until the task has finished (the stop waits for
    it), not be freed while the task still runs."""
    import weakref

    seen = ctypes.c_int64.in_dll(helpers, "read_later_seen")
    rt = kio.Runtime(threads=2)
    arg = ReadLaterArgs(300, 0x1234)
    alive = weakref.ref(arg)
    t = rt.spawn(helpers.read_later, arg)
    del arg
    time.sleep(0.02)
    stopper = threading.Thread(target=rt.stop)
    stopper.start()
    deadline = time.monotonic() + 5
    while not rt.closed and time.monotonic() < deadline:
        time.sleep(0.001)
    assert rt.closed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del t
        gc.collect()
    assert alive() is not None, "the argument was freed while its task still runs"
    junk = [ReadLaterArgs(0, 0x6666) for _ in range(2000)]  # reuse freed memory
    stopper.join(10)
    assert not stopper.is_alive()
    assert seen.value == 0x1234
    del junk
    gc.collect()
    assert alive() is None  # released once the runtime stopped


def test_done_and_select_beside_join(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    """done() and select() do not consume the handle, and kio allows
    kio_select beside kio_await: neither may make a join in another thread
    fail (nor fail because of it)."""
    # done() and select() while another thread joins.
    t = rt.spawn(helpers.sleep_then_inc, 300)
    results: list = []
    joiner = threading.Thread(target=lambda: results.append(t.join()))
    joiner.start()
    deadline = time.monotonic() + 5
    while t._state != 1 and time.monotonic() < deadline:  # until the joiner is in join()
        time.sleep(0.001)
    assert t.done() is False
    with pytest.raises(kio.TimedOut):
        kio.select([t], timeout=0.01)
    assert kio.select([t], timeout=5) == 0  # finishes while the join consumes it
    joiner.join()
    assert results == [301]
    assert t.done()
    # join() while another thread selects.
    t = rt.spawn(helpers.sleep_then_inc, 200)
    picked: list = []
    selector = threading.Thread(target=lambda: picked.append(kio.select([t])))
    selector.start()
    time.sleep(0.05)
    assert t.join(timeout=5) == 201
    selector.join(5)
    assert picked == [0]
    # join() while another thread polls done() (the reviewer's reproducer).
    for i in range(1, 200):
        t = rt.spawn(helpers.square, i)
        stop = threading.Event()
        errors: list = []

        def poll_done(t: kio.Task = t) -> None:
            while not stop.is_set():
                try:
                    t.done()
                except kio.KioError as e:
                    errors.append(e)
                    return

        th = threading.Thread(target=poll_done)
        th.start()
        try:
            assert t.join() == i * i
        finally:
            stop.set()
            th.join()
        assert not errors


def test_huge_join_and_select_timeouts_wait(rt: kio.Runtime, helpers: ctypes.CDLL) -> None:
    """A timeout beyond kio's 64-bit nanosecond clock waits for ever (it used
    to overflow: OverflowError for inf)."""
    t = rt.spawn(helpers.sleep_then_inc, 50)
    assert kio.select([t], timeout=float("inf")) == 0
    assert t.join(timeout=1.8446744e10) == 51
    t = rt.spawn(helpers.sleep_then_inc, 50)
    assert t.join(timeout=float("inf")) == 51
    with pytest.raises(ValueError):
        rt.spawn(helpers.square, 2).join(timeout=float("nan"))
