"""kio: Python bindings (ctypes) for the kio fiber runtime.

Python code never runs on a kio fiber: a :class:`Runtime` is started with
``kio_runtime_start``, which gives kio a worker thread of its own, so every
Python thread is a *plain thread* for kio. Tasks are C functions (from a
library loaded with ctypes); Python threads spawn, join and cancel them,
share :class:`Mutex` and :class:`Condition` objects with them and with each
other, and use kio's socket calls, all of which block only the calling
thread (with the GIL released). :mod:`kio.asyncio` awaits tasks from an
asyncio event loop without blocking it.

The C library is found through the environment variable ``KIO_LIBRARY`` (a
path), else ``ctypes.util.find_library("kio")``, else the SONAME
``libkio.so.0``; ImportError says what was tried.
"""

from __future__ import annotations

from ._errors import (
    BrokenPipe,
    Canceled,
    ConnectionAborted,
    ConnectionRefused,
    ConnectionReset,
    KioError,
    TimedOut,
    strerror,
)
from ._io import (
    POLLIN,
    POLLOUT,
    accept,
    close,
    dial_tcp,
    listen_tcp,
    now,
    now_ns,
    poll,
    read,
    shutdown,
    sleep,
    version,
    write,
    write_all,
)
from ._lib import library_path
from ._runtime import Runtime, Stats, Task, select
from ._sync import Condition, Mutex

__version__ = "0.1.0"

__all__ = [
    "Runtime",
    "Task",
    "Stats",
    "select",
    "Mutex",
    "Condition",
    "KioError",
    "Canceled",
    "TimedOut",
    "ConnectionRefused",
    "ConnectionReset",
    "ConnectionAborted",
    "BrokenPipe",
    "strerror",
    "version",
    "now",
    "now_ns",
    "sleep",
    "listen_tcp",
    "dial_tcp",
    "accept",
    "read",
    "write",
    "write_all",
    "poll",
    "close",
    "shutdown",
    "POLLIN",
    "POLLOUT",
    "library_path",
]
