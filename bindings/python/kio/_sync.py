"""kio_mutex and kio_cond for Python threads (and C tasks sharing them)."""

from __future__ import annotations

import ctypes
import errno as _errno
import threading
from ctypes import c_void_p
from types import TracebackType
from typing import Callable, Optional, Type, TypeVar

from ._errors import error_for
from ._lib import c_uintptr, lib
from ._util import SLICE_NS, deadline_in, in_main_thread, with_deadline

__all__ = ["Mutex", "Condition"]

_T = TypeVar("_T")


class Mutex:
    """A kio_mutex: usable from any number of Python threads, and from C tasks
    given its address (``mutex.address``, or pass the Mutex itself as a spawn
    argument or a ctypes ``void *`` argument).

    A Python thread that must wait blocks (with the GIL released); a C fiber
    parks. FIFO with at most about 1 ms of overtaking, as kio_mutex_lock.
    Not reentrant: locking it again from its owner raises KioError EDEADLK.
    Only the thread that locked it may release it (kio ignores an unlock by
    anyone else). The 32-byte object lives in ctypes memory that never
    moves; keep the Mutex alive while C code uses it.

    In the main thread a wait comes back to Python every 100 ms, so that
    Ctrl-C (KeyboardInterrupt) interrupts it; the mutex is then not held.
    """

    __slots__ = ("_m", "_owner", "__weakref__")

    def __init__(self) -> None:
        self._m = (c_uintptr * 4)()
        lib.kio_mutex_init(self._m)
        self._owner: Optional[int] = None  # Python thread ident of the holder

    @property
    def address(self) -> int:
        """The address of the kio_mutex (for C code)."""
        return ctypes.addressof(self._m)

    @property
    def _as_parameter_(self) -> c_void_p:
        return c_void_p(ctypes.addressof(self._m))

    def acquire(self, blocking: bool = True, timeout: Optional[float] = None) -> bool:
        """Locks the mutex, like threading.Lock.acquire: returns True once
        locked, False if ``blocking`` is False and it is held, or if
        ``timeout`` seconds pass first (the wait uses a kio deadline on this
        thread, so the waiter leaves the queue cleanly). ``timeout`` None or
        -1 waits for ever; another negative value raises ValueError; one
        beyond kio's 64-bit nanosecond clock waits for ever.

        An exception raised while waiting (KeyboardInterrupt, or any raised
        by a signal handler) leaves the mutex unlocked by this call, even if
        kio had just handed it over."""
        if not blocking:
            if timeout is not None and timeout != -1:
                raise ValueError("can't specify a timeout for a non-blocking call")
            return self.try_acquire()
        end: Optional[int] = None
        if timeout is not None and timeout != -1:
            if timeout < 0:
                raise ValueError("timeout value must be positive")
            end = deadline_in(timeout)
        return self._lock(end)

    def _lock(self, end: Optional[int]) -> bool:
        me = threading.get_ident()
        if self._owner == me:  # kio would say so too; checked first (see below)
            raise error_for(-_errno.EDEADLK, "kio_mutex_lock")
        sliced = in_main_thread()
        r = 0
        try:
            # In slices, a free mutex is taken without setting up a deadline.
            if sliced and lib.kio_mutex_trylock(self._m) == 0:
                self._owner = me
                return True
            while True:
                if sliced:
                    step = int(lib.kio_now()) + SLICE_NS
                    r = with_deadline(step if end is None else min(step, end), lib.kio_mutex_lock, self._m)
                elif end is not None:
                    r = with_deadline(end, lib.kio_mutex_lock, self._m)
                else:
                    r = lib.kio_mutex_lock(self._m)
                if r == 0:
                    self._owner = me
                    break
                if r != -_errno.ETIMEDOUT or (end is not None and lib.kio_now() >= end):
                    break
        except BaseException:
            # Raised by a signal handler while waiting, or right after kio
            # made this thread the owner (before or after it was recorded):
            # leave the mutex unlocked. kio ignores an unlock by a thread
            # that does not hold the mutex, so this undoes exactly what this
            # call did (the thread did not hold it before: checked above).
            if self._owner == me:
                self._owner = None
            lib.kio_mutex_unlock(self._m)
            raise
        if r == 0:
            return True
        if r == -_errno.ETIMEDOUT:
            return False
        raise error_for(r, "kio_mutex_lock")

    def try_acquire(self) -> bool:
        """Locks the mutex if it is free right now (kio_mutex_trylock); never
        waits. Returns whether it locked it."""
        me = threading.get_ident()
        if self._owner == me:
            return False  # held by this thread (kio_mutex_trylock: EBUSY)
        r = 0
        try:
            r = lib.kio_mutex_trylock(self._m)
            if r == 0:
                self._owner = me
        except BaseException:  # as in acquire: never a locked mutex nobody owns
            if self._owner == me:
                self._owner = None
            lib.kio_mutex_unlock(self._m)
            raise
        if r == -_errno.EBUSY:
            return False
        if r < 0:
            raise error_for(r, "kio_mutex_trylock")
        return True

    def release(self) -> None:
        """Unlocks the mutex. Raises RuntimeError unless this thread holds it
        (kio itself would silently ignore such an unlock; threading.Lock, not
        owned by a thread, would allow it)."""
        if self._owner != threading.get_ident():
            raise RuntimeError("kio.Mutex.release: the calling thread does not hold the mutex")
        self._owner = None
        lib.kio_mutex_unlock(self._m)

    def owned(self) -> bool:
        """Whether the calling Python thread holds the mutex."""
        return self._owner == threading.get_ident()

    def locked(self) -> bool:
        """Whether the mutex is held, by anyone (a Python thread or C code),
        like threading.Lock.locked. A snapshot: when it is free this takes
        and drops it (kio_mutex_trylock, kio_mutex_unlock), so a concurrent
        try_acquire may fail at that instant."""
        if self._owner == threading.get_ident():
            return True
        try:
            r = lib.kio_mutex_trylock(self._m)
        except BaseException:
            lib.kio_mutex_unlock(self._m)  # ignored unless this thread just took it
            raise
        if r == 0:
            lib.kio_mutex_unlock(self._m)
            return False
        if r == -_errno.EBUSY:
            return True
        raise error_for(r, "kio_mutex_trylock")

    def __enter__(self) -> "Mutex":
        self._lock(None)
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<kio.Mutex at {self.address:#x}{' owned' if self.owned() else ''}>"


class Condition:
    """A kio_cond used with a :class:`Mutex` (a new one if none is given), with
    the interface of threading.Condition: use it as a context manager, then
    :meth:`wait`, :meth:`wait_for`, :meth:`notify`, :meth:`notify_all`.

    There are no spurious wakeups in kio, but re-check the predicate in a
    loop (or use :meth:`wait_for`), as with any condition variable.
    """

    __slots__ = ("_c", "_mutex", "__weakref__")

    def __init__(self, mutex: Optional[Mutex] = None) -> None:
        if mutex is None:
            mutex = Mutex()
        elif not isinstance(mutex, Mutex):
            raise TypeError("kio.Condition needs a kio.Mutex")
        self._mutex = mutex
        self._c = (c_uintptr * 3)()
        lib.kio_cond_init(self._c)

    @property
    def mutex(self) -> Mutex:
        return self._mutex

    @property
    def address(self) -> int:
        """The address of the kio_cond (for C code)."""
        return ctypes.addressof(self._c)

    @property
    def _as_parameter_(self) -> c_void_p:
        return c_void_p(ctypes.addressof(self._c))

    def acquire(self, blocking: bool = True, timeout: Optional[float] = None) -> bool:
        return self._mutex.acquire(blocking, timeout)

    def release(self) -> None:
        self._mutex.release()

    def __enter__(self) -> "Condition":
        self._mutex._lock(None)
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self._mutex.release()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Atomically releases the mutex (which this thread must hold) and waits
        for a notification, then locks it again. Returns False if ``timeout``
        seconds passed first (kio_cond_wait_until with a kio_now() deadline),
        else True. A negative or zero timeout does not wait; one beyond kio's
        64-bit nanosecond clock waits for ever.

        The mutex is held again when wait returns or raises, whatever
        happens, as with threading.Condition: an exception raised by a signal
        handler (KeyboardInterrupt) propagates with the mutex held. In the
        main thread the wait comes back to Python every 100 ms (it re-locks
        the mutex and waits again; a notification sent under the mutex is
        not lost), so that Ctrl-C interrupts it."""
        m = self._mutex
        me = threading.get_ident()
        if m._owner != me:
            raise RuntimeError("kio.Condition.wait: the calling thread does not hold the mutex")
        end = None if timeout is None else deadline_in(timeout)
        sliced = in_main_thread()
        r = 0
        try:
            while True:
                if sliced:
                    step = int(lib.kio_now()) + SLICE_NS
                    r = lib.kio_cond_wait_until(self._c, m._m, step if end is None else min(step, end))
                    if r != -_errno.ETIMEDOUT or (end is not None and lib.kio_now() >= end):
                        break
                elif end is None:
                    r = lib.kio_cond_wait(self._c, m._m)
                    break
                else:
                    r = lib.kio_cond_wait_until(self._c, m._m, end)
                    break
        finally:
            # kio re-locked the mutex before returning, whatever the outcome
            # (and if the exception came before the call, it was never let go).
            m._owner = me
        if r == -_errno.ETIMEDOUT:
            return False
        if r < 0:
            raise error_for(r, "kio_cond_wait")
        return True

    def wait_for(self, predicate: Callable[[], _T], timeout: Optional[float] = None) -> _T:
        """Waits until ``predicate()`` is true (checked with the mutex held) or
        ``timeout`` passes; returns the last value of the predicate."""
        end = None if timeout is None else deadline_in(timeout)
        result = predicate()
        while not result:
            if end is None:
                self.wait()
            else:
                left = end - lib.kio_now()
                if left <= 0:
                    break
                self.wait(left / 1e9)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wakes up to ``n`` waiters, longest-waiting first (kio_cond_signal).
        Unlike threading.Condition, it does not require the mutex (kio lets
        C code signal without it), but only a notification sent under the
        mutex is ordered with the waiter's predicate check."""
        for _ in range(n):
            lib.kio_cond_signal(self._c)

    def notify_all(self) -> None:
        """Wakes every waiter (kio_cond_broadcast); the mutex is not required
        (see :meth:`notify`)."""
        lib.kio_cond_broadcast(self._c)

    def __repr__(self) -> str:
        return f"<kio.Condition at {self.address:#x} mutex={self._mutex!r}>"
