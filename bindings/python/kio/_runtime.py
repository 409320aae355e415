"""Runtime, Task and select."""

from __future__ import annotations

import atexit
import ctypes
import errno as _errno
import select as select_module
import threading
import warnings
import weakref
from ctypes import byref, c_int, c_size_t, c_uint, c_uint64, c_void_p, sizeof
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union, cast

from . import _lib
from ._errors import Canceled, KioError, TimedOut, check
from ._lib import KioCqEvent, KioOptions, KioSpawnOptions, KioStats, lib

__all__ = ["Runtime", "Task", "Stats", "select", "FunctionPointer", "Argument"]

# How often a Python thread blocked in join()/select() comes back to Python:
# to notice that the runtime is stopping (see Runtime.stop) and to let
# KeyboardInterrupt through. A plain thread's kio wait is a futex wait, so a
# wakeup every POLL_NS costs next to nothing.
POLL_NS = 100_000_000

_PTR_BITS = ctypes.sizeof(c_void_p) * 8
_PTR_MASK = (1 << _PTR_BITS) - 1

_PYTHON_ON_FIBER = (
    "kio runs the spawned function on a fiber stack, and Python code must never "
    "run there: a fiber may resume on another OS thread after any kio call, "
    "which corrupts the interpreter's per-thread state. Spawn a C function "
    "instead (a function of a loaded C library, e.g. ctypes.CDLL('libfoo.so').fn, "
    "or its address as an int)"
)

# The base class of ctypes function pointers (typeshed calls it _FuncPointer).
_CFuncPtr: type = getattr(ctypes, "_CFuncPtr")
if TYPE_CHECKING:
    from ctypes import _FuncPointer as _FunctionPointerType
else:
    _FunctionPointerType = _CFuncPtr

# What spawn() accepts as the function: a ctypes function pointer taken from a
# loaded library, a c_void_p, or an address.
FunctionPointer = Union[_FunctionPointerType, c_void_p, int]
# What spawn() accepts as the void* argument.
Argument = Any


def _to_result(value: Optional[int]) -> Optional[int]:
    """A task's void* result: None for NULL, else the pointer's bits as a
    signed intptr_t (so (void *)(intptr_t)-ECANCELED gives -125; user-space
    addresses are positive either way)."""
    if not value:
        return None
    value &= _PTR_MASK
    return value - (1 << _PTR_BITS) if value >> (_PTR_BITS - 1) else value


# Every ctypes data type derives from one of these (ctypes does not export
# their common base, _CData).
_CDATA = (
    ctypes._SimpleCData,
    ctypes._Pointer,
    _CFuncPtr,
    ctypes.Structure,
    ctypes.Union,
    ctypes.Array,
)


def _wraps_python(obj: object, depth: int = 0) -> bool:
    """Whether a ctypes object keeps a CThunkObject alive, i.e. is (or was cast
    from) a callback created from a Python callable."""
    if type(obj).__name__ == "CThunkObject":
        return True
    if depth > 8:
        return False
    objects: object = obj if isinstance(obj, dict) else None
    if objects is None and isinstance(obj, _CDATA):
        objects = getattr(obj, "_objects", None)
    if isinstance(objects, dict):
        return any(_wraps_python(v, depth + 1) for v in objects.values())
    return False


def _function_address(fn: object) -> int:
    if isinstance(fn, _CFuncPtr):
        if _wraps_python(fn):
            raise TypeError(
                "kio.Runtime.spawn: this ctypes function pointer calls a Python "
                "function (a CFUNCTYPE callback). " + _PYTHON_ON_FIBER
            )
        addr = ctypes.cast(cast(Any, fn), c_void_p).value
    elif isinstance(fn, c_void_p):
        addr = fn.value
    elif isinstance(fn, int) and not isinstance(fn, bool):
        addr = fn
    elif callable(fn):
        raise TypeError(
            f"kio.Runtime.spawn: got the Python callable {fn!r}. " + _PYTHON_ON_FIBER
        )
    else:
        raise TypeError(
            "kio.Runtime.spawn: fn must be a C function pointer (a ctypes function "
            f"of a loaded library, a c_void_p or an int address), not {type(fn).__name__}"
        )
    if not addr:
        raise ValueError("kio.Runtime.spawn: fn is a NULL function pointer")
    if addr < 0 or addr > _PTR_MASK:
        raise ValueError(f"kio.Runtime.spawn: {addr:#x} is not a valid address")
    if _lib.dladdr_available() and _lib.code_owner(addr) is None:
        raise TypeError(
            f"kio.Runtime.spawn: the address {addr:#x} is not inside any loaded "
            "library or executable, so it is not a C function kio can run (a ctypes "
            "callback wrapping a Python function lives in such anonymous memory). "
            + _PYTHON_ON_FIBER
        )
    return addr


def _arg_address(arg: object) -> Tuple[int, object]:
    """(address, object to keep alive while the task may use it)."""
    if arg is None:
        return 0, None
    if isinstance(arg, int):
        value = int(arg)
        if value < -(1 << (_PTR_BITS - 1)) or value > _PTR_MASK:
            raise OverflowError(f"kio: {value} does not fit in a void *")
        return value & _PTR_MASK, None
    if isinstance(arg, c_void_p):
        return arg.value or 0, None
    param = getattr(arg, "_as_parameter_", None)
    if param is not None and not isinstance(arg, _CDATA):
        addr, _ = _arg_address(param)
        return addr, arg
    if isinstance(arg, ctypes._Pointer):
        return ctypes.cast(arg, c_void_p).value or 0, arg
    if isinstance(arg, _CFuncPtr):
        if _wraps_python(arg):
            raise TypeError(
                "kio: arg is a ctypes callback that calls Python; the task would "
                "call it on a fiber. " + _PYTHON_ON_FIBER
            )
        return ctypes.cast(cast(Any, arg), c_void_p).value or 0, arg
    if isinstance(arg, _CDATA):
        return ctypes.addressof(cast(Any, arg)), arg  # by reference, like ctypes.byref
    if isinstance(arg, bytes):
        buf = ctypes.c_char_p(arg)
        return ctypes.cast(buf, c_void_p).value or 0, arg
    try:
        view = memoryview(arg)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            "kio: arg must be None, an int, a ctypes object (passed by address), "
            f"a writable buffer or bytes, not {type(arg).__name__}"
        ) from None
    if view.readonly:
        data = bytes(view)
        return ctypes.cast(ctypes.c_char_p(data), c_void_p).value or 0, data
    carr = (ctypes.c_char * view.nbytes).from_buffer(arg)  # type: ignore[arg-type]
    return ctypes.addressof(carr), carr


@dataclass(frozen=True)
class Stats:
    """A runtime's counters (kio_stats)."""

    workers: int
    tasks_live: int
    tasks_ready: int
    switches: int
    steals: int
    parks: Tuple[int, ...]
    stack_reserved: int
    stack_committed: int


_live_runtimes: "weakref.WeakSet[Runtime]" = weakref.WeakSet()

# Runtimes each thread is inside a call of (see Runtime.stop).
_tls = threading.local()


def _inside(rt: "Runtime") -> int:
    counts: Optional[Dict[int, int]] = getattr(_tls, "counts", None)
    return counts.get(id(rt), 0) if counts else 0


def _count(rt: "Runtime", delta: int) -> None:
    counts = getattr(_tls, "counts", None)
    if counts is None:
        counts = _tls.counts = {}
    n = counts.get(id(rt), 0) + delta
    if n:
        counts[id(rt)] = n
    else:
        counts.pop(id(rt), None)


def _check_fits(where: str, what: str, value: int, ctype: type) -> None:
    """Raises ValueError unless ``value`` fits the C integer type ``ctype``."""
    bits = 8 * sizeof(ctype)
    signed = ctype(-1).value < 0
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= value <= hi:
        raise ValueError(f"{where}: {what}={value} does not fit the C field ({lo}..{hi})")


def _cancel_into_queue(handle: int) -> Optional[int]:
    """Requests the task's cancellation and hands its handle to a completion
    queue of its own (kio_cancel_request, kio_cq_watch: neither parks; the
    watch consumes the handle). Returns the queue, or None if none could be
    made (the handle is then untouched).

    A thread that waits for the result on the queue holds nothing of the
    runtime, so Runtime.stop() need not wait for it: the stop cancels the
    task and whatever it waits for, and the result arrives in the queue. (A
    thread blocked in kio_cancel would hold the handle, and the stop must
    wait for it before destroying the runtime: forever, if the task waits
    for a task that only the stop would cancel.)"""
    cq = c_void_p()
    if lib.kio_cq_create(byref(cq)) != 0:
        return None
    lib.kio_cancel_request(handle)
    if lib.kio_cq_watch(cq, handle, 0) != 0:  # cannot happen: our handle, unconsumed
        lib.kio_cq_destroy(cq)
        return None
    return cq.value


def _wait_queue(cq: int) -> Optional[int]:
    """Waits for the one result posted to ``cq`` (see _cancel_into_queue),
    destroys the queue and returns the result (the ``void *``'s value)."""
    ev = KioCqEvent()
    poller = select_module.poll()
    poller.register(lib.kio_cq_fd(cq), select_module.POLLIN)
    try:
        while lib.kio_cq_poll(cq, byref(ev), 1) == 0:
            poller.poll(POLL_NS // 1_000_000)  # ms; Ctrl-C lands between
        return ev.result
    finally:
        lib.kio_cq_destroy(cq)


class Runtime:
    """A kio runtime whose workers are threads owned by kio.

    The runtime is created with ``kio_runtime_start``: worker 0 is a new
    background thread, so every Python thread stays a *plain thread* for kio
    and Python code never runs on a fiber. kio's blocking calls made from
    Python (joining a task, locking a :class:`Mutex`, socket helpers) block
    only the calling Python thread, with the GIL released.

    Use it as a context manager; leaving the block calls :meth:`stop`, which
    cancels every task still running, waits for them and joins the workers::

        with kio.Runtime(threads=4) as rt:
            task = rt.spawn(mylib.work, 42)
            print(task.join())

    ``threads``: worker threads (0 = one per CPU); ``stack_size``: default
    fiber stack in bytes (0 = 64 KiB); ``backend``: None, "auto", "epoll" or
    "kqueue". The keyword-only options map to kio_options' debugging fields.
    """

    def __init__(
        self,
        threads: int = 0,
        stack_size: int = 0,
        backend: Optional[str] = None,
        *,
        dump_signal: int = 0,
        stall_ns: int = 0,
        debug_flags: int = 0,
    ) -> None:
        self._rt: Optional[int] = None
        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)
        self._inflight = 0
        self._closing = False
        self._closed = True
        self._keepalive: List[object] = []
        if not (_lib.has("kio_runtime_start") and _lib.has("kio_runtime_stop")):
            raise RuntimeError(
                f"kio: {_lib.library_path} lacks kio_runtime_start/kio_runtime_stop, "
                "which the Python bindings need (Python must never run on a kio "
                "fiber, so the runtime needs a thread of its own); use a newer libkio"
            )
        opts = KioOptions()
        lib.kio_options_init(byref(opts))
        if threads < 0 or stack_size < 0:
            raise ValueError("kio.Runtime: threads and stack_size must be >= 0")
        # ctypes would silently cut a value to the field's width.
        _check_fits("kio.Runtime", "threads", threads, c_uint)
        _check_fits("kio.Runtime", "stack_size", stack_size, c_size_t)
        _check_fits("kio.Runtime", "dump_signal", dump_signal, c_int)
        _check_fits("kio.Runtime", "stall_ns", stall_ns, c_uint64)
        _check_fits("kio.Runtime", "debug_flags", debug_flags, c_uint)
        opts.threads = threads
        opts.stack_size = stack_size
        self._backend = backend.encode() if backend is not None else None
        opts.backend = self._backend
        opts.dump_signal = dump_signal
        opts.stall_ns = stall_ns
        opts.debug_flags = debug_flags
        out = c_void_p()
        check(lib.kio_runtime_start(byref(opts), byref(out)), "kio_runtime_start")
        self._rt = out.value
        self._closed = False
        _live_runtimes.add(self)

    # -- lifetime ------------------------------------------------------------

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def closed(self) -> bool:
        """True once stop() has begun."""
        return self._closing or self._closed

    def stop(self) -> None:
        """Cancels every task still running (detached ones included), waits for
        all of them to finish and joins the workers (kio_runtime_stop).

        Python threads blocked in :meth:`Task.join` on a task of this runtime
        cancel that task and return its result; :func:`select` calls raise
        :class:`kio.Canceled`. Afterwards every Task of the runtime is invalid
        (its methods raise KioError EINVAL). Calling stop() again does nothing;
        a concurrent call waits for the first. Like kio_runtime_destroy, it
        waits for tasks that ignore cancellation.
        """
        if _inside(self):
            raise RuntimeError(
                "kio.Runtime.stop() called while this thread is inside a call on the "
                "runtime (from a signal handler or __del__?); it would wait for itself"
            )
        with self._lock:
            while self._closing and not self._closed:  # another thread is stopping it
                self._cv.wait()
            if self._closed:
                return
            self._closing = True
            # No Python thread may hold a task handle across the destroy.
            try:
                while self._inflight:
                    self._cv.wait()
            except BaseException:  # KeyboardInterrupt: the runtime stays usable
                self._closing = False
                self._cv.notify_all()
                raise
        rt = self._rt
        r = lib.kio_runtime_stop(rt)
        with self._lock:
            self._closed = True
            self._rt = None
            self._keepalive.clear()
            self._cv.notify_all()
        _live_runtimes.discard(self)
        check(r, "kio_runtime_stop")

    close = stop

    def __del__(self) -> None:
        if getattr(self, "_closed", True) or getattr(self, "_closing", True):
            return
        try:
            warnings.warn(
                f"kio.Runtime {self!r} was not stopped; stopping it now",
                ResourceWarning,
                source=self,
            )
            self.stop()
        except Exception:  # noqa: BLE001 - interpreter shutdown, etc.
            pass

    def __repr__(self) -> str:
        state = "stopped" if self._closed else "stopping" if self._closing else "running"
        return f"<kio.Runtime {state} at {self._rt or 0:#x}>"

    # -- in-flight accounting ---------------------------------------------------

    def _enter(self) -> None:
        with self._lock:
            if self._closing and not self._closed:
                raise Canceled(_errno.ECANCELED, "the kio runtime is stopping")
            if self._closed:
                raise KioError(_errno.EINVAL, "the kio runtime has been stopped")
            self._inflight += 1
            _count(self, 1)

    def _try_enter(self) -> bool:
        with self._lock:
            if self._closing or self._closed:
                return False
            self._inflight += 1
            _count(self, 1)
            return True

    def _leave(self) -> None:
        with self._lock:
            self._inflight -= 1
            _count(self, -1)
            if self._closing and not self._inflight:
                self._cv.notify_all()

    def _keep(self, obj: object) -> None:
        """Keeps an argument alive until the runtime stops (detached tasks)."""
        if obj is not None:
            with self._lock:
                if not self._closed:
                    self._keepalive.append(obj)

    @property
    def handle(self) -> int:
        """The kio_runtime * as an int (for passing to C code)."""
        if self._rt is None:
            raise KioError(_errno.EINVAL, "the kio runtime has been stopped")
        return self._rt

    @property
    def _as_parameter_(self) -> c_void_p:
        return c_void_p(self.handle)

    # -- tasks ----------------------------------------------------------------

    def spawn(
        self,
        fn: FunctionPointer,
        arg: Argument = None,
        *,
        name: Optional[str] = None,
        stack_size: int = 0,
        pinned: bool = False,
    ) -> "Task":
        """Starts the C function ``fn(arg)`` (``void *(*)(void *)``) as a task.

        ``fn`` is a C function pointer: a function of a library loaded with
        ctypes (``ctypes.CDLL("libfoo.so").work``), a ``c_void_p`` or an int
        address. Python callables, including ctypes callbacks (CFUNCTYPE
        objects made from Python functions), are refused with TypeError:
        Python code must never run on a fiber stack.

        ``arg`` becomes the ``void *`` argument: None (NULL), an int (the
        pointer's value), a ctypes object (its address, like ``byref``), a
        ctypes pointer or ``c_void_p`` (its value), an object with
        ``_as_parameter_`` (e.g. :class:`kio.Mutex`), or a buffer (its data;
        bytes are read-only for C). Objects are kept alive until the task has
        been joined or canceled (for a detached task: until the runtime stops).

        ``name`` (up to 31 bytes) shows in kio_dump and debuggers;
        ``stack_size`` overrides the runtime's default; ``pinned`` keeps the
        task on the worker it starts on.
        """
        addr = _function_address(fn)
        arg_addr, keep = _arg_address(arg)
        if stack_size < 0:
            raise ValueError("kio.Runtime.spawn: stack_size must be >= 0")
        _check_fits("kio.Runtime.spawn", "stack_size", stack_size, c_size_t)
        self._enter()
        try:
            out = c_void_p()
            if name is None and not stack_size and not pinned:
                r = lib.kio_spawn(self._rt, addr, arg_addr, byref(out))
            else:
                opts = KioSpawnOptions()
                lib.kio_spawn_options_init(byref(opts))
                opts.name = name.encode("utf-8") if name is not None else None
                opts.stack_size = stack_size
                opts.pinned = 1 if pinned else 0
                r = lib.kio_spawn_ex(self._rt, addr, arg_addr, byref(opts), byref(out))
            check(r, "kio_spawn")
            handle = out.value
            assert handle is not None
            task_id = lib.kio_task_get_id(handle) if _HAS_TASK_ID else None
            return Task(self, handle, keep, name, task_id or None)
        finally:
            self._leave()

    # -- introspection ---------------------------------------------------------

    def stats(self) -> Stats:
        """The runtime's counters (kio_stats)."""
        if not _lib.has("kio_stats"):
            raise NotImplementedError("this libkio has no kio_stats")
        st = KioStats()
        lib.kio_stats_init(byref(st))
        self._enter()
        try:
            check(lib.kio_stats(self._rt, byref(st)), "kio_stats")
        finally:
            self._leave()
        return Stats(
            workers=st.workers,
            tasks_live=st.tasks_live,
            tasks_ready=st.tasks_ready,
            switches=st.switches,
            steals=st.steals,
            parks=tuple(st.parks),
            stack_reserved=st.stack_reserved,
            stack_committed=st.stack_committed,
        )

    def dump(self, fd: int = 2) -> None:
        """Writes kio_dump's report of every worker and task to ``fd``."""
        self._enter()
        try:
            check(lib.kio_dump(self._rt, fd), "kio_dump")
        finally:
            self._leave()


_HAS_TASK_ID = _lib.has("kio_task_get_id")

_LIVE, _BUSY, _CONSUMED = 0, 1, 2


class Task:
    """A handle to a kio task (kio_task *), made by :meth:`Runtime.spawn`.

    It must be consumed once: by :meth:`join`, :meth:`cancel`, :meth:`detach`
    or :meth:`kio.asyncio.Completions.wait`. A Task garbage collected without
    that is detached, with a ResourceWarning. Its methods may be called from
    any Python thread; a second consumer gets KioError EINVAL (consumed) or
    EBUSY (another thread is joining or canceling it).
    """

    __slots__ = (
        "_runtime",
        "_handle",
        "_state",
        "_selecting",
        "_keep_arg",
        "_name",
        "_id",
        "_finished",
        "__weakref__",
    )

    def __init__(
        self,
        runtime: Runtime,
        handle: int,
        keep: object,
        name: Optional[str],
        task_id: Optional[int],
    ) -> None:
        self._runtime = runtime
        self._handle = handle
        self._state = _LIVE
        self._selecting = 0
        self._keep_arg = keep
        self._name = name
        self._id = task_id
        self._finished = False  # joined or canceled through this handle

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    @property
    def name(self) -> Optional[str]:
        return self._name

    @property
    def id(self) -> Optional[int]:
        """kio's id of the task (as in kio_dump), or None if this libkio cannot
        report it (kio_task_get_id is missing)."""
        return self._id

    @property
    def consumed(self) -> bool:
        """True once joined, canceled, detached or handed to a Completions."""
        return self._state == _CONSUMED

    def __repr__(self) -> str:
        state = {_LIVE: "live", _BUSY: "busy", _CONSUMED: "consumed"}[self._state]
        extra = f" {self._name!r}" if self._name else ""
        tid = f" id={self._id}" if self._id is not None else ""
        return f"<kio.Task{extra}{tid} {state}>"

    # -- consumption protocol ---------------------------------------------------

    def _begin(self, what: str) -> int:
        rt = self._runtime
        with rt._lock:
            if self._state == _CONSUMED:
                raise KioError(
                    _errno.EINVAL,
                    f"{what}: the task handle was already consumed (joined, canceled, "
                    "detached or watched)",
                )
            if rt._closed or rt._closing:
                rt._enter()  # raises Canceled / KioError(EINVAL)
            if self._state == _BUSY or self._selecting:
                raise KioError(
                    _errno.EBUSY, f"{what}: another thread is waiting for this task"
                )
            rt._enter()
            self._state = _BUSY
            return self._handle

    def _end(self, consumed: bool) -> None:
        rt = self._runtime
        with rt._lock:
            self._state = _CONSUMED if consumed else _LIVE
            rt._leave()

    def join(self, timeout: Optional[float] = None) -> Optional[int]:
        """Waits until the task finishes and returns its ``void *`` result: None
        for NULL, else an int (the pointer's bits read as intptr_t, so a task
        returning ``(void *)(intptr_t)-ECANCELED`` gives -125).

        Blocks only the calling thread (kio_await from a plain thread). With a
        ``timeout`` in seconds, raises :class:`kio.TimedOut` when it passes
        first; the task is not affected and can be joined again. If the
        runtime is stopped meanwhile, the task is canceled and its result
        returned.
        """
        h = self._begin("join")
        consumed = False
        rt = self._runtime
        cq = None
        try:
            res = c_void_p()
            end = None
            if timeout is not None:
                end = lib.kio_now() + max(0, int(timeout * 1e9))
            while True:
                if rt._closing:
                    cq = _cancel_into_queue(h)
                    if cq is not None:
                        consumed = True
                        break
                    r = lib.kio_cancel(h, byref(res))
                    break
                step = lib.kio_now() + POLL_NS
                deadline = step if end is None else min(step, end)
                saved = lib.kio_deadline_set(deadline)
                try:
                    r = lib.kio_await(h, byref(res))
                finally:
                    lib.kio_deadline_set(saved)
                if r != -_errno.ETIMEDOUT:
                    break
                if end is not None and lib.kio_now() >= end:
                    raise TimedOut(_errno.ETIMEDOUT, "join: the task did not finish in time")
            if cq is None:
                check(r, "kio_await")
                consumed = True
                return self._took(res.value)
        finally:
            self._end(consumed)
        return self._result_from_queue(cq)

    def cancel(self) -> Optional[int]:
        """Requests cancellation, waits for the task to finish and returns its
        result (see :meth:`join`). kio_cancel: the task's next kio call that is
        a cancellation point fails with -ECANCELED; a task that never makes one
        is waited for."""
        h = self._begin("cancel")
        consumed = False
        try:
            cq = _cancel_into_queue(h)
            if cq is None:  # no queue (out of descriptors): kio_cancel itself
                res = c_void_p()
                check(lib.kio_cancel(h, byref(res)), "kio_cancel")
                consumed = True
                return self._took(res.value)
            consumed = True
        finally:
            self._end(consumed)
        return self._result_from_queue(cq)

    def _result_from_queue(self, cq: int) -> Optional[int]:
        """The result of a task handed to ``cq`` by _cancel_into_queue (its
        argument is kept alive until then)."""
        try:
            result = _wait_queue(cq)
        except BaseException:  # Ctrl-C: the task may still run; keep its argument
            self._runtime._keep(self._keep_arg)
            self._keep_arg = None
            raise
        return self._took(result)

    def _took(self, result: Optional[int]) -> Optional[int]:
        """The finished task's result, taken through this handle: its argument
        need not be kept any longer."""
        self._finished = True
        self._keep_arg = None
        return _to_result(result)

    def detach(self) -> None:
        """Lets the task run to completion on its own; its result is dropped."""
        h = self._begin("detach")
        consumed = False
        try:
            check(lib.kio_detach(h), "kio_detach")
            consumed = True
            self._runtime._keep(self._keep_arg)
            self._keep_arg = None
        finally:
            self._end(consumed)

    def done(self) -> bool:
        """Whether the task has finished (does not consume the handle). True
        once the task was joined or canceled through this handle; raises
        KioError EINVAL if the handle was detached or watched (the task can no
        longer be asked), EBUSY while another thread joins or selects it."""
        if self._state == _CONSUMED and self._finished:
            return True
        try:
            select([self], timeout=0)
        except TimedOut:
            return False
        return True

    def _watch(self, cq: int, user_data: int) -> object:
        """kio_cq_watch: consumes the handle; returns the argument to keep alive
        until the completion arrives."""
        h = self._begin("watch")
        consumed = False
        try:
            check(lib.kio_cq_watch(cq, h, user_data), "kio_cq_watch")
            consumed = True
            keep = self._keep_arg
            self._keep_arg = None
            return keep
        finally:
            self._end(consumed)

    def __del__(self) -> None:
        try:
            if self._state != _LIVE:
                return
            rt = self._runtime
            if not rt._try_enter():
                return  # stopping or stopped: the runtime cleans up
            try:
                if lib.kio_detach(self._handle) != 0:
                    return
                self._state = _CONSUMED
                rt._keep(self._keep_arg)
            finally:
                rt._leave()
            warnings.warn(
                f"{self!r} was garbage collected without join(), cancel() or "
                "detach(); it has been detached",
                ResourceWarning,
                source=self,
            )
        except Exception:  # noqa: BLE001 - interpreter shutdown, etc.
            pass


def select(tasks: Iterable[Task], timeout: Optional[float] = None) -> int:
    """Waits until at least one of ``tasks`` has finished and returns the lowest
    index of a finished one (kio_select). Consumes nothing: join the task
    afterwards. With ``timeout`` (seconds), raises :class:`kio.TimedOut` when
    it passes first. Raises :class:`kio.Canceled` if a runtime of the tasks
    is stopped meanwhile.
    """
    items: Sequence[Task] = list(tasks)
    if not items:
        raise ValueError("kio.select: no tasks")
    for t in items:
        if not isinstance(t, Task):
            raise TypeError(f"kio.select: {t!r} is not a kio.Task")
    runtimes: List[Runtime] = []
    for rt in (t._runtime for t in items):
        if not any(rt is r for r in runtimes):
            runtimes.append(rt)
    marked: List[Task] = []
    entered: List[Runtime] = []
    try:
        for rt in runtimes:
            rt._enter()
            entered.append(rt)
        for t in items:
            with t._runtime._lock:
                if t._state == _CONSUMED:
                    raise KioError(_errno.EINVAL, "select: a task handle was already consumed")
                if t._state == _BUSY:
                    raise KioError(_errno.EBUSY, "select: a task is being joined or canceled")
                t._selecting += 1
            marked.append(t)
        handles = (c_void_p * len(items))(*[t._handle for t in items])
        index = c_size_t()
        end = None if timeout is None else lib.kio_now() + max(0, int(timeout * 1e9))
        while True:
            if any(rt._closing for rt in runtimes):
                raise Canceled(_errno.ECANCELED, "select: the kio runtime is stopping")
            step = lib.kio_now() + POLL_NS
            deadline = step if end is None else min(step, end)
            saved = lib.kio_deadline_set(deadline)
            try:
                r = lib.kio_select(handles, len(items), byref(index))
            finally:
                lib.kio_deadline_set(saved)
            if r != -_errno.ETIMEDOUT:
                break
            if end is not None and lib.kio_now() >= end:
                raise TimedOut(_errno.ETIMEDOUT, "select: no task finished in time")
        check(r, "kio_select")
        return int(index.value)
    finally:
        for t in marked:
            with t._runtime._lock:
                t._selecting -= 1
        for rt in entered:
            rt._leave()


@atexit.register
def _stop_live_runtimes() -> None:
    for rt in list(_live_runtimes):
        try:
            rt.stop()
        except Exception:  # noqa: BLE001
            pass
