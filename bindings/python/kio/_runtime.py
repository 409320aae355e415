"""Runtime, Task and select."""

from __future__ import annotations

import atexit
import ctypes
import errno as _errno
import select as select_module
import threading
import warnings
import weakref
from ctypes import byref, c_int, c_size_t, c_uint, c_uint64, c_void_p
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union, cast

from . import _lib
from ._errors import Canceled, KioError, TimedOut, check, error_for
from ._lib import KioCqEvent, KioOptions, KioSpawnOptions, KioStats, lib
from ._util import SLICE_NS, c_range, check_c_int, deadline_in, with_deadline

__all__ = ["Runtime", "Task", "Stats", "select", "FunctionPointer", "Argument"]

# How often a Python thread blocked in join()/select() comes back to Python:
# to notice that the runtime is stopping (see Runtime.stop) and to let
# KeyboardInterrupt through. A plain thread's kio wait is a futex wait, so a
# wakeup every POLL_NS costs next to nothing.
POLL_NS = SLICE_NS

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

# ---------------------------------------------------------------------------
# Exceptions raised by signal handlers
#
# CPython runs signal handlers (KeyboardInterrupt for Ctrl-C) in the main
# thread between bytecodes, typically right after a C call returns: the
# exception can arrive after kio did something (consumed a task handle,
# locked a mutex, registered a call) and before Python recorded it, and the
# C function's return value is then lost. So what a call did is read back
# from state that survives it (out-parameters, the handle's state in kio);
# each step that registers something is undone by an idempotent "settle" in
# a finally clause, which is run once more if an exception cuts it short;
# and a Task is marked with a token of the call that uses it, so that the
# settle knows whether its call got that far.


def _inside(rt: "Runtime") -> bool:
    """Whether the calling thread is inside a call on ``rt`` (Runtime.stop
    from there would wait for itself)."""
    return threading.get_ident() in rt._calls.values()


def _check_fits(where: str, what: str, value: int, ctype: type) -> None:
    """Raises ValueError unless ``value`` fits the C integer type ``ctype``."""
    lo, hi = c_range(ctype)
    if not lo <= value <= hi:
        raise ValueError(f"{where}: {what}={value} does not fit the C field ({lo}..{hi})")


def _cancel_into_queue(handle: int, cq: c_void_p) -> bool:
    """Requests the task's cancellation and hands its handle to a completion
    queue of its own (kio_cancel_request, kio_cq_watch: neither parks; the
    watch consumes the handle). The queue is stored in ``cq`` (an
    out-parameter, so it is known even if an exception cuts this short).
    Returns False if no queue could be made (the handle is then untouched
    and ``cq`` NULL).

    A thread that waits for the result on the queue holds nothing of the
    runtime, so Runtime.stop() need not wait for it: the stop cancels the
    task and whatever it waits for, and the result arrives in the queue. (A
    thread blocked in kio_cancel would hold the handle, and the stop must
    wait for it before destroying the runtime: forever, if the task waits
    for a task that only the stop would cancel.)"""
    if lib.kio_cq_create(byref(cq)) != 0:
        cq.value = None
        return False
    lib.kio_cancel_request(handle)
    if lib.kio_cq_watch(cq, handle, 0) != 0:  # cannot happen: our handle, unconsumed
        q = cq.value
        cq.value = None
        lib.kio_cq_destroy(q)
        return False
    return True


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
        # The calls in flight on the runtime (token -> thread ident): stop()
        # waits until none is left before it destroys the runtime.
        self._calls: Dict[object, int] = {}
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
        try:
            check(lib.kio_runtime_start(byref(opts), byref(out)), "kio_runtime_start")
            self._rt = out.value
            self._closed = False
        except BaseException:
            if out.value and self._closed:  # started, then a signal handler's exception
                lib.kio_runtime_stop(out.value)
            raise
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
        waits for tasks that ignore cancellation; Ctrl-C does not interrupt
        that wait (it is raised once the runtime has stopped).
        """
        if _inside(self):
            raise RuntimeError(
                "kio.Runtime.stop() called while this thread is inside a call on the "
                "runtime (from a signal handler or __del__?); it would wait for itself"
            )
        with self._lock:
            while self._closing and not self._closed:  # another thread is stopping it
                self._cv.wait(0.1)
            if self._closed:
                return
            # No Python thread may hold a task handle across the destroy.
            try:
                self._closing = True
                while self._calls:
                    # With a timeout: a call whose _leave an exception cut
                    # short after it left may not have notified.
                    self._cv.wait(0.05)
            except BaseException:  # KeyboardInterrupt: the runtime stays usable
                self._closing = False
                self._cv.notify_all()
                raise
        rt = self._rt
        r = 0
        try:
            r = lib.kio_runtime_stop(rt)
        finally:
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
    #
    # A call that uses the runtime (or a task handle of it) registers a token
    # of its own in _calls, in one statement, and removes it in a finally
    # clause with _leave, which does nothing for a token not registered (so
    # an exception at any point, even one that cuts _enter or _leave short,
    # leaves no stale entry behind).

    @property
    def _inflight(self) -> int:
        return len(self._calls)

    def _enter(self, token: object) -> None:
        me = threading.get_ident()
        with self._lock:
            if self._closing and not self._closed:
                raise Canceled(_errno.ECANCELED, "the kio runtime is stopping")
            if self._closed:
                raise KioError(_errno.EINVAL, "the kio runtime has been stopped")
            self._calls[token] = me

    def _try_enter(self, token: object) -> bool:
        me = threading.get_ident()
        with self._lock:
            if self._closing or self._closed:
                return False
            self._calls[token] = me
            return True

    def _leave(self, token: object) -> None:
        with self._lock:
            if token in self._calls:
                del self._calls[token]
                if self._closing and not self._calls:
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
        token = object()
        out = c_void_p()
        task: Optional[Task] = None
        try:
            self._enter(token)
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
            task = Task(self, handle, keep, name, task_id or None)
        except BaseException:
            if out.value and task is None:
                # kio made the task, then a signal handler raised: nobody
                # holds its handle, so detach it and keep its argument.
                lib.kio_detach(out.value)
                self._keep(keep)
            raise
        finally:
            try:
                self._leave(token)
            except BaseException:
                self._leave(token)
                raise
        return task

    # -- introspection ---------------------------------------------------------

    def stats(self) -> Stats:
        """The runtime's counters (kio_stats)."""
        if not _lib.has("kio_stats"):
            raise NotImplementedError("this libkio has no kio_stats")
        st = KioStats()
        lib.kio_stats_init(byref(st))
        token = object()
        try:
            self._enter(token)
            check(lib.kio_stats(self._rt, byref(st)), "kio_stats")
        finally:
            try:
                self._leave(token)
            except BaseException:
                self._leave(token)
                raise
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
        f = check_c_int("kio.Runtime.dump", "fd", fd, c_int)
        token = object()
        try:
            self._enter(token)
            check(lib.kio_dump(self._rt, f), "kio_dump")
        finally:
            try:
                self._leave(token)
            except BaseException:
                self._leave(token)
                raise


_HAS_TASK_ID = _lib.has("kio_task_get_id")

# Task._state
_LIVE, _BUSY, _CONSUMED = 0, 1, 2
# Task._mode: what the busy call does with the handle, set before each C call
# that may consume it, so that Task._settle knows what consumed it.
_M_NONE, _M_AWAIT, _M_QUEUE, _M_DETACH, _M_WATCH, _M_WAITQ = range(6)
# What Task._begin found.
_K_HANDLE, _K_QUEUE, _K_RESULT = range(3)
_NOTHING: Any = object()  # Task._result: no result held
_CQ_PENDING = 1  # KioCqEvent.user_data until kio_cq_poll fills it (watches use 0)


class Task:
    """A handle to a kio task (kio_task *), made by :meth:`Runtime.spawn`.

    It must be consumed once: by :meth:`join`, :meth:`cancel`, :meth:`detach`
    or :meth:`kio.asyncio.Completions.wait`. A Task garbage collected without
    that is detached, with a ResourceWarning. Its methods may be called from
    any Python thread; a second consumer gets KioError EINVAL (consumed) or
    EBUSY (another thread is joining or canceling it). :meth:`done` and
    :func:`select` may run beside a join in another thread.

    If Ctrl-C (or another exception raised by a signal handler) interrupts
    :meth:`join` or :meth:`cancel`, the Task follows what kio did: if the
    handle was not consumed, it can be joined again; if it was, the next
    join() or cancel() returns the result (waiting for it if the task was
    being canceled).
    """

    __slots__ = (
        "_runtime",
        "_handle",
        "_state",
        "_busy",
        "_mode",
        "_keep_arg",
        "_name",
        "_id",
        "_finished",
        "_result",
        "_claimer",
        "_queue",
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
        self._busy: Optional[object] = None  # the token of the call using the Task
        self._mode = _M_NONE
        self._keep_arg = keep
        self._name = name
        self._id = task_id
        self._finished = False  # its result was taken through this handle
        self._result: Any = _NOTHING  # a result not yet returned to a caller
        self._claimer: Optional[object] = None  # the call _result is kept for
        self._queue: Optional[int] = None  # a kio_cq where its result will arrive

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
        return self._state == _CONSUMED or (self._state == _BUSY and self._mode == _M_WAITQ)

    def __repr__(self) -> str:
        state = {_LIVE: "live", _BUSY: "busy", _CONSUMED: "consumed"}[self._state]
        extra = f" {self._name!r}" if self._name else ""
        tid = f" id={self._id}" if self._id is not None else ""
        return f"<kio.Task{extra}{tid} {state}>"

    # -- consumption protocol ---------------------------------------------------
    #
    # A call that uses the handle: token = object(); then, inside try, _begin
    # marks the Task busy with the token (and registers the call with the
    # runtime, in the same statement-level step); the finally clause calls
    # _settle, which asks kio whether the handle is still open and records
    # the outcome. A result is stored in the Task, kept for the call
    # (_claimer) that the call takes without any call in between; a call
    # that an exception stops leaves it to the next join() or cancel().

    def _handle_open(self) -> bool:
        """Whether kio still has the handle open (neither consumed nor
        detached): for when the return value of the call that may have
        consumed it was lost."""
        if self._id is not None:
            # A consumed handle gives 0, or the id of the task now in its slot.
            return bool(lib.kio_task_get_id(self._handle) == self._id)
        handles = (c_void_p * 1)(self._handle)
        index = c_size_t()
        return bool(with_deadline(1, lib.kio_select, handles, 1, byref(index)) != -_errno.EINVAL)

    def _begin(self, what: str, token: object) -> Tuple[int, Any]:
        """Makes the calling call (``token``) the Task's one user. Returns
        (_K_HANDLE, None): the handle is open and the call is registered
        with the runtime; (_K_QUEUE, None) (join and cancel only): the
        handle is in this Task's completion queue, to wait on; or
        (_K_RESULT, None) (join and cancel only): the result an interrupted
        join or cancel left, now kept for the call (_claimer)."""
        rt = self._runtime
        me = threading.get_ident()
        with rt._lock:
            if self._state == _BUSY:
                raise KioError(
                    _errno.EBUSY, f"{what}: another thread is waiting for this task"
                )
            if self._state == _CONSUMED:
                if what in ("join", "cancel"):
                    if self._result is not _NOTHING and self._claimer is None:
                        self._claimer = token  # the caller takes it (see _collect)
                        return _K_RESULT, None
                    if self._queue is not None:
                        self._mode = _M_WAITQ
                        self._busy = token
                        self._state = _BUSY
                        return _K_QUEUE, None
                raise KioError(
                    _errno.EINVAL,
                    f"{what}: the task handle was already consumed (joined, canceled, "
                    "detached or watched)",
                )
            if rt._closed or rt._closing:
                rt._enter(token)  # raises Canceled / KioError(EINVAL)
            rt._calls[token] = me
            self._mode = _M_NONE
            self._busy = token
            self._state = _BUSY
            return _K_HANDLE, None

    def _settle(self, token: object, res: c_void_p, cq: c_void_p) -> None:
        """Ends the handle step of the call ``token``: reads back from kio
        whether the handle is still open, records what consumed it (by
        self._mode), and leaves the runtime. If the handle went to this
        Task's queue (_M_QUEUE), the Task stays busy for the call, to wait
        there. Idempotent: a settle that an exception cut short is run
        again (then _abandon gives up what the call did not take)."""
        if self._busy is not token or self._mode == _M_WAITQ:
            return
        rt = self._runtime
        open_ = self._handle_open()
        mode = self._mode
        result = _to_result(res.value) if not open_ and mode == _M_AWAIT else None
        with rt._lock:
            if self._busy is not token or self._mode == _M_WAITQ:
                return
            to_queue = not open_ and mode == _M_QUEUE and cq.value is not None
            stray = None if to_queue else cq.value  # a queue made but not used
            if not open_:
                if mode == _M_AWAIT:  # kio_await or kio_cancel returned 0
                    self._result = result
                    self._claimer = token
                    self._finished = True
                    self._keep_arg = None
                elif to_queue:
                    self._queue = cq.value
                elif mode != _M_WATCH:  # detached (or closed by an unknown call)
                    if self._keep_arg is not None and not rt._closed:
                        rt._keepalive.append(self._keep_arg)
                    self._keep_arg = None
                # _M_WATCH: the caller hands the argument to its Completions
                # (if an exception stops it, __del__ keeps it in the runtime).
            if token in rt._calls:
                del rt._calls[token]
            if to_queue:
                self._mode = _M_WAITQ
            else:
                self._state = _LIVE if open_ else _CONSUMED
                self._mode = _M_NONE
                self._busy = None
            if stray:
                cq.value = None
                lib.kio_cq_destroy(stray)
            if rt._closing and not rt._calls:
                rt._cv.notify_all()

    def _abandon(self, token: object) -> None:
        """For the call ``token`` that an exception ends, after its settle:
        gives up the result kept for it, and a wait on the Task's queue; the
        next join() or cancel() takes either."""
        if self._claimer is token:
            self._claimer = None
        if self._busy is token:  # only while it was to wait on the queue
            with self._runtime._lock:
                if self._busy is token:
                    self._state = _CONSUMED
                    self._mode = _M_NONE
                    self._busy = None

    def _wait_queue(self, ev: KioCqEvent) -> None:
        """Waits until the task's result arrives in this Task's queue and moves
        it into ``ev`` (the Task is busy for the caller)."""
        cq = self._queue
        poller = select_module.poll()
        poller.register(lib.kio_cq_fd(cq), select_module.POLLIN)
        while lib.kio_cq_poll(cq, byref(ev), 1) == 0:
            poller.poll(POLL_NS // 1_000_000)  # ms; Ctrl-C lands between

    def _settle_twice(self, token: object, res: c_void_p, cq: c_void_p) -> None:
        """_settle, run once more if an exception (a signal handler's) cut it
        short; then the exception goes on."""
        try:
            self._settle(token, res, cq)
        except BaseException:
            self._settle(token, res, cq)
            raise

    def _settle_queue(self, token: object, ev: KioCqEvent, claim: bool) -> None:
        """Ends a wait on (or a look at) the Task's queue by the call
        ``token``: takes the result if kio_cq_poll put it in ``ev`` (kept for
        the call if ``claim``) and destroys the queue. Idempotent, as
        _settle."""
        if self._busy is not token:
            return
        got = ev.user_data != _CQ_PENDING
        result = _to_result(ev.result) if got else None
        rt = self._runtime
        with rt._lock:
            if self._busy is not token:
                return
            cq = self._queue
            if got:
                self._result = result
                self._claimer = token if claim else None
                self._finished = True
                self._keep_arg = None
                self._queue = None
            self._state = _CONSUMED
            self._mode = _M_NONE
            self._busy = None
            if got and cq is not None:
                lib.kio_cq_destroy(cq)

    def _use_handle(self, what: str, end: Optional[int], res: c_void_p, cq: c_void_p) -> int:
        """Joins (or cancels) the task through its open handle, setting
        self._mode before each C call that may consume the handle. Returns
        the last call's result: 0 once the handle is consumed."""
        rt = self._runtime
        h = self._handle
        pres = byref(res)
        if what != "cancel":
            while not rt._closing:
                step = int(lib.kio_now()) + POLL_NS
                self._mode = _M_AWAIT
                r = int(with_deadline(step if end is None else min(step, end), lib.kio_await, h, pres))
                if r == -_errno.ETIMEDOUT:
                    if end is not None and lib.kio_now() >= end:
                        return r
                    continue
                if r != 0:
                    self._mode = _M_NONE  # an error: kio did not consume the handle
                return r
        # cancel(), or a join() that the runtime's stop interrupts
        self._mode = _M_QUEUE
        if _cancel_into_queue(h, cq):
            return 0
        self._mode = _M_AWAIT  # no queue (out of descriptors): kio_cancel itself
        return int(lib.kio_cancel(h, pres))

    def _collect(self, what: str, end: Optional[int]) -> Optional[int]:
        """join() and cancel(): the task's result, however the handle is
        consumed (see the consumption protocol above)."""
        token = object()
        res = c_void_p()
        cq = c_void_p()
        ev = KioCqEvent(_CQ_PENDING, None)
        r = 0
        ok = False  # set after the last call of each step: False if an exception ended it
        try:
            kind, _ = self._begin(what, token)
            if kind == _K_HANDLE:
                r = self._use_handle(what, end, res, cq)
            ok = True
        finally:
            try:
                self._settle(token, res, cq)
            except BaseException:  # cut short: settle again, and raise
                self._settle(token, res, cq)
                self._abandon(token)
                raise
            if not ok:
                self._abandon(token)
        if self._busy is token:  # the handle went to the Task's queue: wait there
            ok = False
            try:
                self._wait_queue(ev)
                ok = True
            finally:
                try:
                    self._settle_queue(token, ev, True)
                except BaseException:
                    self._settle_queue(token, ev, True)
                    self._abandon(token)
                    raise
                if not ok:
                    self._abandon(token)
        # Taken without a call since the settle (nothing else runs meanwhile).
        if self._claimer is token:
            value: Optional[int] = self._result
            self._result = _NOTHING
            self._claimer = None
            return value
        if r == -_errno.ETIMEDOUT:
            raise TimedOut(_errno.ETIMEDOUT, f"{what}: the task did not finish in time")
        raise error_for(r if r < 0 else -_errno.EINVAL, "kio_await" if what == "join" else "kio_cancel")

    def join(self, timeout: Optional[float] = None) -> Optional[int]:
        """Waits until the task finishes and returns its ``void *`` result: None
        for NULL, else an int (the pointer's bits read as intptr_t, so a task
        returning ``(void *)(intptr_t)-ECANCELED`` gives -125).

        Blocks only the calling thread (kio_await from a plain thread). With a
        ``timeout`` in seconds, raises :class:`kio.TimedOut` when it passes
        first; the task is not affected and can be joined again (a timeout
        beyond kio's 64-bit nanosecond clock waits for ever). If the runtime
        is stopped meanwhile, the task is canceled and its result returned.
        """
        end = None if timeout is None else deadline_in(timeout)
        return self._collect("join", end)

    def cancel(self) -> Optional[int]:
        """Requests cancellation, waits for the task to finish and returns its
        result (see :meth:`join`). kio_cancel: the task's next kio call that is
        a cancellation point fails with -ECANCELED; a task that never makes one
        is waited for."""
        return self._collect("cancel", None)

    def detach(self) -> None:
        """Lets the task run to completion on its own; its result is dropped."""
        token = object()
        res = c_void_p()
        cq = c_void_p()
        r = 0
        try:
            self._begin("detach", token)
            self._mode = _M_DETACH
            r = lib.kio_detach(self._handle)
        finally:
            self._settle_twice(token, res, cq)
        check(r, "kio_detach")

    def done(self) -> bool:
        """Whether the task has finished; does not consume the handle, and may
        run while another thread joins the task (kio_select beside
        kio_await). True once the task was joined or canceled through this
        handle; False while another thread cancels it and has not got the
        result yet. Raises KioError EINVAL if the handle was detached or
        watched (the task can no longer be asked)."""
        rt = self._runtime
        token = object()
        me = threading.get_ident()
        ev = KioCqEvent(_CQ_PENDING, None)
        handles = (c_void_p * 1)(self._handle)
        index = c_size_t()
        peek = False
        r = -_errno.EINVAL
        try:
            with rt._lock:
                if self._finished or self._result is not _NOTHING:
                    return True
                if self._state == _BUSY:
                    if self._mode == _M_WAITQ:  # another thread waits for the result
                        return False
                elif self._state == _CONSUMED:
                    if self._queue is None:
                        raise KioError(
                            _errno.EINVAL,
                            "done: the task handle was detached or watched; the task can "
                            "no longer be asked",
                        )
                    peek = True  # an interrupted cancel left the result on its way here
                if peek:
                    self._mode = _M_WAITQ
                    self._busy = token
                    self._state = _BUSY
                else:
                    if rt._closed or rt._closing:
                        rt._enter(token)  # raises Canceled / KioError(EINVAL)
                    rt._calls[token] = me
            if peek:
                lib.kio_cq_poll(self._queue, byref(ev), 1)
            else:
                r = with_deadline(1, lib.kio_select, handles, 1, byref(index))
        finally:
            try:
                self._settle_queue(token, ev, False)  # (each does nothing unless
                rt._leave(token)  # the call got that far)
            except BaseException:
                self._settle_queue(token, ev, False)
                rt._leave(token)
                raise
        if peek:
            return self._finished
        if r == 0:
            return True
        if r == -_errno.ETIMEDOUT:
            return False
        if r == -_errno.EINVAL:  # consumed meanwhile, by another thread
            with rt._lock:
                if self._finished or self._result is not _NOTHING:
                    return True
                if self._state == _BUSY and self._mode == _M_AWAIT:
                    return True  # kio_await consumed it: finished
                if self._state == _BUSY and self._mode in (_M_QUEUE, _M_WAITQ):
                    return False  # being canceled
            raise KioError(
                _errno.EINVAL,
                "done: the task handle was detached or watched; the task can no longer be asked",
            )
        raise error_for(r, "kio_select")

    def _watch(self, cq: int, user_data: int) -> object:
        """kio_cq_watch: consumes the handle; returns the argument to keep alive
        until the completion arrives (the caller then sets _keep_arg to
        None)."""
        token = object()
        res = c_void_p()
        unused = c_void_p()
        r = 0
        try:
            self._begin("watch", token)
            self._mode = _M_WATCH
            r = lib.kio_cq_watch(cq, self._handle, user_data)
        finally:
            self._settle_twice(token, res, unused)
        check(r, "kio_cq_watch")
        # The caller stores it, then clears _keep_arg: until then the Task
        # keeps it (and, if an exception comes first, __del__ hands it to
        # the runtime).
        return self._keep_arg

    def __del__(self) -> None:
        try:
            rt = self._runtime
            if self._state == _BUSY:
                return
            if self._state == _CONSUMED:
                q = self._queue
                if q is not None:  # an interrupted cancel: the result is dropped
                    self._queue = None
                    lib.kio_cq_destroy(q)
                if self._keep_arg is not None and not self._finished:
                    rt._keep(self._keep_arg)  # the task may still run
                return
            detached = False
            token = object()
            try:
                if rt._try_enter(token):
                    detached = lib.kio_detach(self._handle) == 0
            finally:
                rt._leave(token)
            if detached:
                self._state = _CONSUMED
            # Detached, or the runtime is stopping (it cancels the task and
            # waits for it): either way the argument must outlive the task,
            # so the runtime keeps it until it has stopped.
            rt._keep(self._keep_arg)
            self._keep_arg = None
            if detached:
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

    Another thread may join one of the tasks meanwhile (it then counts as
    finished); if another thread detaches, cancels or watches one, select
    raises KioError EINVAL.
    """
    items: Sequence[Task] = list(tasks)
    if not items:
        raise ValueError("kio.select: no tasks")
    for t in items:
        if not isinstance(t, Task):
            raise TypeError(f"kio.select: {t!r} is not a kio.Task")
    end = None if timeout is None else deadline_in(timeout)
    runtimes: List[Runtime] = []
    for rt in (t._runtime for t in items):
        if not any(rt is r for r in runtimes):
            runtimes.append(rt)
    token = object()
    try:
        for rt in runtimes:
            rt._enter(token)
        for t in items:
            with t._runtime._lock:
                if t._state == _CONSUMED or (t._state == _BUSY and t._mode == _M_WAITQ):
                    raise KioError(_errno.EINVAL, "select: a task handle was already consumed")
        joined: List[int] = []  # indices of tasks another thread joined meanwhile
        index = c_size_t()
        while True:
            if any(rt._closing for rt in runtimes):
                raise Canceled(_errno.ECANCELED, "select: the kio runtime is stopping")
            lowest = min(joined) if joined else None
            cand = [i for i in range(len(items)) if i not in joined and (lowest is None or i < lowest)]
            if not cand:
                assert lowest is not None
                return lowest
            handles = (c_void_p * len(cand))(*[items[i]._handle for i in cand])
            if lowest is not None:
                deadline = 1  # no wait: has a lower one finished too?
            else:
                step = int(lib.kio_now()) + POLL_NS
                deadline = step if end is None else min(step, end)
            r = with_deadline(deadline, lib.kio_select, handles, len(cand), byref(index))
            if r == 0:
                return cand[int(index.value)]
            if r == -_errno.ETIMEDOUT:
                if lowest is not None:
                    return lowest
                if end is not None and lib.kio_now() >= end:
                    raise TimedOut(_errno.ETIMEDOUT, "select: no task finished in time")
                continue
            if r == -_errno.EINVAL:  # a handle was consumed meanwhile, by another thread
                found = False
                for i in cand:
                    t = items[i]
                    if t._handle_open():
                        continue
                    with t._runtime._lock:
                        fin = t._finished or (t._state == _BUSY and t._mode == _M_AWAIT)
                    if not fin:
                        raise KioError(
                            _errno.EINVAL,
                            "select: another thread detached, canceled or watched a task",
                        )
                    joined.append(i)
                    found = True
                if found:
                    continue
            check(r, "kio_select")
    finally:
        try:
            for rt in runtimes:
                rt._leave(token)
        except BaseException:
            for rt in runtimes:
                rt._leave(token)
            raise


@atexit.register
def _stop_live_runtimes() -> None:
    for rt in list(_live_runtimes):
        try:
            rt.stop()
        except Exception:  # noqa: BLE001
            pass
