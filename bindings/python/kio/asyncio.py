"""asyncio integration: await kio tasks from an event loop.

A :class:`Completions` owns a kio completion queue (kio_cq) whose descriptor
is registered with ``loop.add_reader``. :meth:`Completions.wait` hands a task
to the queue (kio_cq_watch, which consumes the handle) and returns a Future;
when the task finishes kio posts its result to the queue, the descriptor
becomes readable, and the loop resolves the Future. Nothing blocks the loop
and no Python code runs on a kio thread::

    async def main(rt):
        async with kio.asyncio.Completions() as cq:
            results = await asyncio.gather(*(cq.wait(rt.spawn(fn, i)) for i in range(100)))
"""

from __future__ import annotations

import asyncio
import errno as _errno
import warnings
from ctypes import byref, c_void_p
from types import TracebackType
from typing import Dict, Optional, Tuple, Type

from ._errors import Canceled, check
from ._lib import KioCqEvent, lib
from ._runtime import Runtime, Task, _to_result

__all__ = ["Completions"]

_Entry = Tuple["asyncio.Future[Optional[int]]", object, Runtime]


class Completions:
    """Task results delivered to an asyncio event loop (a kio completion queue).

    ``loop``: the event loop (default: the running loop). Use it from that
    loop's thread only. Close it with :meth:`close` (or ``async with`` /
    ``with``); Futures still pending then fail with :class:`kio.Canceled`
    and the results of their tasks are dropped (the tasks keep running).
    """

    def __init__(self, loop: Optional[asyncio.AbstractEventLoop] = None, *, batch: int = 256) -> None:
        self._cq: Optional[int] = None
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    "kio.asyncio.Completions() needs a running event loop; create it "
                    "in a coroutine or pass loop="
                ) from None
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self._loop = loop
        self._pending: Dict[int, _Entry] = {}
        self._next_key = 0
        self._batch = batch
        self._events = (KioCqEvent * batch)()
        out = c_void_p()
        check(lib.kio_cq_create(byref(out)), "kio_cq_create")
        self._cq = out.value
        self._fd = check(lib.kio_cq_fd(self._cq), "kio_cq_fd")
        try:
            loop.add_reader(self._fd, self._on_readable)
        except BaseException:
            lib.kio_cq_destroy(self._cq)
            self._cq = None
            raise

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def fileno(self) -> int:
        """The queue's descriptor (readable while results are pending)."""
        return self._fd

    @property
    def pending(self) -> int:
        """How many watched tasks have not delivered their result yet."""
        return len(self._pending)

    @property
    def closed(self) -> bool:
        return self._cq is None

    def _check_thread(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self._loop:
            raise RuntimeError(
                "kio.asyncio.Completions must be used from the thread of its event loop"
            )

    def wait(self, task: Task) -> "asyncio.Future[Optional[int]]":
        """Consumes ``task`` (as :meth:`Task.detach` does, via kio_cq_watch) and
        returns a Future of its result (None for NULL, else an int, as
        :meth:`Task.join`). Cancelling the Future does not cancel the task;
        its result is then dropped."""
        if not isinstance(task, Task):
            raise TypeError(f"Completions.wait: {task!r} is not a kio.Task")
        if self._cq is None:
            raise RuntimeError("kio.asyncio.Completions is closed")
        self._check_thread()
        self._next_key += 1
        key = self._next_key
        fut: "asyncio.Future[Optional[int]]" = self._loop.create_future()
        # The entry exists before the watch: the result is read by the loop's
        # reader callback, on this thread, so it cannot be missed.
        self._pending[key] = (fut, None, task.runtime)
        try:
            keep = task._watch(self._cq, key)
        except BaseException:
            del self._pending[key]
            raise
        self._pending[key] = (fut, keep, task.runtime)
        task._keep_arg = None  # kept by the entry from now on
        return fut

    def _on_readable(self) -> None:
        cq = self._cq
        if cq is None:
            return
        events = self._events
        while True:
            n = lib.kio_cq_poll(cq, events, self._batch)
            if n <= 0:
                return
            for i in range(n):
                ev = events[i]
                entry = self._pending.pop(ev.user_data, None)
                if entry is None:
                    continue
                fut = entry[0]
                if not fut.done():
                    fut.set_result(_to_result(ev.result))
            if n < self._batch:
                return

    def close(self) -> None:
        """Unregisters the descriptor and destroys the queue (kio_cq_destroy)."""
        cq = self._cq
        if cq is None:
            return
        self._on_readable()  # deliver what has arrived
        self._cq = None
        try:
            self._loop.remove_reader(self._fd)
        except Exception:  # noqa: BLE001 - the loop may be closed already
            pass
        pending, self._pending = self._pending, {}
        for fut, keep, rt in pending.values():
            rt._keep(keep)  # the task still runs and may use its argument
            if not fut.done():
                fut.set_exception(
                    Canceled(_errno.ECANCELED, "kio.asyncio.Completions was closed")
                )
        lib.kio_cq_destroy(cq)

    def __enter__(self) -> "Completions":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    async def __aenter__(self) -> "Completions":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_cq", None) is None:
            return
        try:
            warnings.warn(f"{self!r} was not closed", ResourceWarning, source=self)
            cq, self._cq = self._cq, None
            for _, keep, rt in self._pending.values():
                rt._keep(keep)
            lib.kio_cq_destroy(cq)
        except Exception:  # noqa: BLE001
            pass

    def __repr__(self) -> str:
        state = "closed" if self._cq is None else f"fd={self._fd} pending={len(self._pending)}"
        return f"<kio.asyncio.Completions {state}>"
