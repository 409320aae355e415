"""Loading libkio and declaring the C API for ctypes.

The library is found, in order, at:

1. the path in the environment variable ``KIO_LIBRARY``;
2. ``ctypes.util.find_library("kio")`` (the linker cache, ``LD_LIBRARY_PATH``);
3. the SONAME ``libkio.so.0`` (``libkio.0.dylib`` on macOS) on the default
   search path of the dynamic loader.

Every function is declared on a :class:`ctypes.CDLL`, so each call releases
the GIL: a Python thread blocked in kio (``kio_await``, ``kio_mutex_lock``,
``kio_read``...) lets the other Python threads run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from ctypes import (
    POINTER,
    Structure,
    c_char_p,
    c_int,
    c_short,
    c_size_t,
    c_ssize_t,
    c_uint,
    c_uint64,
    c_void_p,
)
from typing import List, Optional

__all__ = [
    "lib",
    "library_path",
    "has",
    "KioOptions",
    "KioSpawnOptions",
    "KioCqEvent",
    "KioStats",
    "KIO_PARK_KINDS",
    "c_uintptr",
]

ENV_VAR = "KIO_LIBRARY"

c_uintptr = ctypes.c_size_t  # uintptr_t: same size as size_t on every supported ABI


class KioOptions(Structure):
    """``kio_options`` of version 0.1 (include/kio.h)."""

    _fields_ = [
        ("size", c_size_t),
        ("threads", c_uint),
        ("stack_size", c_size_t),
        ("backend", c_char_p),
        ("dump_signal", c_int),
        ("stall_ns", c_uint64),
        ("debug_flags", c_uint),
    ]


class KioSpawnOptions(Structure):
    """``kio_spawn_options`` of version 0.1."""

    _fields_ = [
        ("size", c_size_t),
        ("name", c_char_p),
        ("stack_size", c_size_t),
        ("pinned", c_int),
        ("arg_destructor", c_void_p),
    ]


class KioCqEvent(Structure):
    """``kio_cq_event``."""

    _fields_ = [("user_data", c_uint64), ("result", c_void_p)]


KIO_PARK_KINDS = 8


class KioStats(Structure):
    """``struct kio_stats`` of version 0.1."""

    _fields_ = [
        ("size", c_size_t),
        ("workers", c_uint),
        ("tasks_live", c_uint64),
        ("tasks_ready", c_uint64),
        ("switches", c_uint64),
        ("steals", c_uint64),
        ("parks", c_uint64 * KIO_PARK_KINDS),
        ("stack_reserved", c_uint64),
        ("stack_committed", c_uint64),
    ]


def _candidates() -> List[str]:
    names: List[str] = []
    found = ctypes.util.find_library("kio")
    if found:
        names.append(found)
    if sys.platform == "darwin":
        names += ["libkio.0.dylib", "libkio.dylib"]
    else:
        names.append("libkio.so.0")
    return names


def _load() -> "tuple[ctypes.CDLL, str]":
    path = os.environ.get(ENV_VAR)
    if path:
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            raise ImportError(
                f"kio: cannot load the kio C library from {ENV_VAR}={path!r}: {e}"
            ) from e
    errors = []
    for name in _candidates():
        try:
            return ctypes.CDLL(name), name
        except OSError as e:
            errors.append(f"{name}: {e}")
    raise ImportError(
        "kio: cannot find the kio C library (libkio). Install kio so that the "
        "dynamic loader finds libkio.so.0, or set the environment variable "
        f"{ENV_VAR} to the path of libkio.so (e.g. build/libkio.so). Tried: "
        + ("; ".join(errors) if errors else "nothing found")
    )


lib, library_path = _load()


def _declare(name: str, restype: object, *argtypes: object, required: bool = True) -> bool:
    try:
        fn = getattr(lib, name)
    except AttributeError:
        if required:
            raise ImportError(
                f"kio: {library_path} does not export {name}: it is not libkio, or too old"
            ) from None
        return False
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return True


_P = c_void_p  # opaque pointers (kio_runtime *, kio_task *, kio_cq *, kio_mutex *, ...)

_declare("kio_version", c_char_p)
_declare("kio_strerror", c_char_p, c_int)
_declare("kio_options_init", None, POINTER(KioOptions))
_declare("kio_runtime_create", c_int, POINTER(KioOptions), POINTER(c_void_p))
_declare("kio_runtime_destroy", c_int, _P)
_declare("kio_current", c_void_p)
_declare("kio_spawn_options_init", None, POINTER(KioSpawnOptions))
_declare("kio_spawn", c_int, _P, _P, _P, POINTER(c_void_p))
_declare("kio_spawn_ex", c_int, _P, _P, _P, POINTER(KioSpawnOptions), POINTER(c_void_p))
_declare("kio_await", c_int, _P, POINTER(c_void_p))
_declare("kio_cancel", c_int, _P, POINTER(c_void_p))
_declare("kio_cancel_request", c_int, _P)
_declare("kio_detach", c_int, _P)
_declare("kio_select", c_int, POINTER(c_void_p), c_size_t, POINTER(c_size_t))
_declare("kio_task_id", c_uint64)
_declare("kio_now", c_uint64)
_declare("kio_sleep", c_int, c_uint64)
_declare("kio_sleep_until", c_int, c_uint64)
_declare("kio_deadline_set", c_uint64, c_uint64)
_declare("kio_deadline_get", c_uint64)
_declare("kio_mutex_init", None, _P)
_declare("kio_mutex_lock", c_int, _P)
_declare("kio_mutex_trylock", c_int, _P)
_declare("kio_mutex_unlock", None, _P)
_declare("kio_cond_init", None, _P)
_declare("kio_cond_wait", c_int, _P, _P)
_declare("kio_cond_wait_until", c_int, _P, _P, c_uint64)
_declare("kio_cond_signal", None, _P)
_declare("kio_cond_broadcast", None, _P)
_declare("kio_read", c_ssize_t, c_int, _P, c_size_t)
_declare("kio_write", c_ssize_t, c_int, _P, c_size_t)
_declare("kio_accept", c_int, c_int, _P, _P, c_int)
_declare("kio_poll", c_int, c_int, c_short, c_uint64)
_declare("kio_close", c_int, c_int)
_declare("kio_listen_tcp", c_int, c_char_p, c_int, c_int)
_declare("kio_dial_tcp", c_int, c_char_p, c_int, c_uint64)
_declare("kio_cq_create", c_int, POINTER(c_void_p))
_declare("kio_cq_fd", c_int, _P)
_declare("kio_cq_watch", c_int, _P, _P, c_uint64)
_declare("kio_cq_poll", c_int, _P, POINTER(KioCqEvent), c_size_t)
_declare("kio_cq_destroy", c_int, _P)
_declare("kio_stats_init", None, POINTER(KioStats), required=False)
_declare("kio_stats", c_int, _P, POINTER(KioStats), required=False)
_declare("kio_dump", c_int, _P, c_int, required=False)
# Added for bindings: a runtime on a thread of its own (kio >= 0.1 with
# lib/background.cpp). Without them the module still imports (Mutex, sockets,
# sleep work from plain threads) and Runtime() raises a clear error.
_declare("kio_runtime_start", c_int, POINTER(KioOptions), POINTER(c_void_p), required=False)
_declare("kio_runtime_stop", c_int, _P, required=False)
# The id of the task behind a handle (kio.h). Optional so that a libkio built
# before it was added still loads: Task.id is then None, and the binding asks
# kio_select instead whether a handle is still open (see Task._handle_open).
_declare("kio_task_get_id", c_uint64, _P, required=False)


def has(name: str) -> bool:
    """Whether the loaded libkio exports the function ``name``."""
    try:
        getattr(lib, name)
    except AttributeError:
        return False
    return True


def _check_version() -> None:
    raw = lib.kio_version()
    version = raw.decode("ascii", "replace") if raw else ""
    major = version.split(".", 1)[0]
    if major != "0":
        raise ImportError(
            f"kio: {library_path} is kio {version}; these bindings need kio 0.x"
        )


_check_version()


# ---------------------------------------------------------------------------
# dladdr: is an address inside a loaded shared object (or the executable)?

class _DlInfo(Structure):
    _fields_ = [
        ("dli_fname", c_char_p),
        ("dli_fbase", c_void_p),
        ("dli_sname", c_char_p),
        ("dli_saddr", c_void_p),
    ]


def _load_dladdr() -> Optional[object]:
    for name in (None, ctypes.util.find_library("dl"), ctypes.util.find_library("c")):
        try:
            handle = ctypes.CDLL(name)
            fn = handle.dladdr
        except (OSError, AttributeError, TypeError):
            continue
        fn.restype = c_int
        fn.argtypes = [c_void_p, POINTER(_DlInfo)]
        return fn
    return None


_dladdr = _load_dladdr()


def code_owner(address: int) -> Optional[str]:
    """The file of the loaded object (library or executable) whose mapping
    holds ``address``, "" if dladdr cannot tell the name, None if no loaded
    object holds it (or dladdr is unavailable: then None too)."""
    if _dladdr is None:
        return None
    info = _DlInfo()
    if not _dladdr(c_void_p(address), ctypes.byref(info)):  # type: ignore[operator]
        return None
    return info.dli_fname.decode("utf-8", "replace") if info.dli_fname else ""


def dladdr_available() -> bool:
    return _dladdr is not None
