"""kio_mutex and kio_cond for Python threads (and C tasks sharing them)."""

from __future__ import annotations

import ctypes
import errno as _errno
import threading
from ctypes import c_void_p
from types import TracebackType
from typing import Callable, Optional, Type, TypeVar

from ._errors import check, error_for
from ._lib import c_uintptr, lib

__all__ = ["Mutex", "Condition"]

_T = TypeVar("_T")


def _deadline_after(timeout: float) -> int:
    return int(lib.kio_now()) + max(0, int(timeout * 1e9))


class Mutex:
    """A kio_mutex: usable from any number of Python threads, and from C tasks
    given its address (``mutex.address``, or pass the Mutex itself as a spawn
    argument or a ctypes ``void *`` argument).

    A Python thread that must wait blocks (with the GIL released); a C fiber
    parks. FIFO with at most about 1 ms of overtaking, as kio_mutex_lock.
    Not reentrant: locking it again from its owner raises KioError EDEADLK.
    The 32-byte object lives in ctypes memory that never moves; keep the
    Mutex alive while C code uses it.
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
        thread, so the waiter leaves the queue cleanly)."""
        if not blocking:
            if timeout is not None and timeout != -1:
                raise ValueError("can't specify a timeout for a non-blocking call")
            return self.try_acquire()
        if timeout is None or timeout < 0:
            r = lib.kio_mutex_lock(self._m)
        else:
            saved = lib.kio_deadline_set(_deadline_after(timeout))
            try:
                r = lib.kio_mutex_lock(self._m)
            finally:
                lib.kio_deadline_set(saved)
            if r == -_errno.ETIMEDOUT:
                return False
        check(r, "kio_mutex_lock")
        self._owner = threading.get_ident()
        return True

    def try_acquire(self) -> bool:
        """Locks the mutex if it is free right now (kio_mutex_trylock); never
        waits. Returns whether it locked it."""
        r = lib.kio_mutex_trylock(self._m)
        if r == -_errno.EBUSY:
            return False
        check(r, "kio_mutex_trylock")
        self._owner = threading.get_ident()
        return True

    def release(self) -> None:
        """Unlocks the mutex. Raises RuntimeError unless this thread holds it
        (kio itself would silently ignore such an unlock)."""
        if self._owner != threading.get_ident():
            raise RuntimeError("kio.Mutex.release: the calling thread does not hold the mutex")
        self._owner = None
        lib.kio_mutex_unlock(self._m)

    def owned(self) -> bool:
        """Whether the calling Python thread holds the mutex."""
        return self._owner == threading.get_ident()

    def __enter__(self) -> "Mutex":
        self.acquire()
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
        self._mutex.acquire()
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
        else True."""
        m = self._mutex
        if not m.owned():
            raise RuntimeError("kio.Condition.wait: the calling thread does not hold the mutex")
        if timeout is None:
            r = lib.kio_cond_wait(self._c, m._m)
        else:
            r = lib.kio_cond_wait_until(self._c, m._m, _deadline_after(timeout))
        # The mutex is held again, whatever the outcome.
        m._owner = threading.get_ident()
        if r == -_errno.ETIMEDOUT:
            return False
        if r < 0:
            raise error_for(r, "kio_cond_wait")
        return True

    def wait_for(self, predicate: Callable[[], _T], timeout: Optional[float] = None) -> _T:
        """Waits until ``predicate()`` is true (checked with the mutex held) or
        ``timeout`` passes; returns the last value of the predicate."""
        end = None if timeout is None else _deadline_after(timeout)
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
        """Wakes up to ``n`` waiters, longest-waiting first (kio_cond_signal)."""
        for _ in range(n):
            lib.kio_cond_signal(self._c)

    def notify_all(self) -> None:
        """Wakes every waiter (kio_cond_broadcast)."""
        lib.kio_cond_broadcast(self._c)

    def __repr__(self) -> str:
        return f"<kio.Condition at {self.address:#x} mutex={self._mutex!r}>"
