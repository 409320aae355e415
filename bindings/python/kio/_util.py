"""Shared helpers: timeouts as kio deadlines, C integer range checks, and
calls under a temporary deadline of the calling thread."""

from __future__ import annotations

import math
import operator
import threading
from ctypes import sizeof
from typing import Any, Callable

from ._lib import lib

__all__ = [
    "UINT64_MAX",
    "SLICE_NS",
    "deadline_in",
    "with_deadline",
    "in_main_thread",
    "c_range",
    "check_c_int",
]

UINT64_MAX = (1 << 64) - 1

# How often a wait of the main thread comes back to Python, where a signal
# handler (KeyboardInterrupt) can run, and join()/select() notice a stop.
SLICE_NS = 100_000_000


def deadline_in(timeout: float, minimum_ns: int = 0) -> int:
    """The kio deadline (kio_now() base) ``timeout`` seconds from now, at
    least ``minimum_ns`` from now. A negative timeout is a deadline that has
    passed; one too far away for kio's 64-bit nanosecond clock (more than
    about 584 years, float("inf") included) saturates at UINT64_MAX, a
    deadline that never comes. NaN raises ValueError."""
    try:
        seconds = float(timeout)
    except OverflowError:  # an int beyond float's range
        if timeout > 0:
            return UINT64_MAX
        seconds = 0.0
    if math.isnan(seconds):
        raise ValueError("timeout must not be NaN")
    now = int(lib.kio_now())
    if seconds >= UINT64_MAX / 1e9:  # also inf: saturate before any int()
        return UINT64_MAX
    ns = max(minimum_ns, int(seconds * 1e9))
    return min(now + ns, UINT64_MAX)


def with_deadline(deadline: int, fn: Callable[..., Any], *args: Any) -> Any:
    """Calls the kio function ``fn(*args)`` with the calling thread's kio
    deadline set to ``deadline``, and restores the previous deadline whatever
    happens (an exception raised by a signal handler included)."""
    saved = lib.kio_deadline_get()
    try:
        lib.kio_deadline_set(deadline)
        return fn(*args)
    finally:
        lib.kio_deadline_set(saved)


def in_main_thread() -> bool:
    """Whether the caller is the main thread, the only one where CPython runs
    signal handlers (so the only one a KeyboardInterrupt can reach)."""
    return threading.current_thread() is threading.main_thread()


def c_range(ctype: type) -> "tuple[int, int]":
    bits = 8 * sizeof(ctype)
    signed = ctype(-1).value < 0
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def check_c_int(where: str, what: str, value: object, ctype: type) -> int:
    """``value`` as an int if it is an integer (operator.index: no floats,
    no strings) that fits the C type ``ctype``; else TypeError, or
    OverflowError as os.close() and the socket module raise (ctypes would
    silently keep the low bits)."""
    v = operator.index(value)  # type: ignore[arg-type]
    lo, hi = c_range(ctype)
    if not lo <= v <= hi:
        raise OverflowError(
            f"{where}: {what}={v} does not fit a C {ctype.__name__[2:]} ({lo}..{hi})"
        )
    return v
