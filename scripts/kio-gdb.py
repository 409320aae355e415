# kio-gdb.py: gdb commands for programs that use kio (docs/debugging.md).
#
# Load it into gdb (a live process stopped anywhere, or a core file):
#
#     (gdb) source scripts/kio-gdb.py
#     gdb -batch -x scripts/kio-gdb.py -ex 'kio tasks' ./prog core
#
# Commands:
#
#     kio tasks [RUNTIME]        every runtime of the process (or the one at
#                                the address RUNTIME): its workers and every
#                                live task with id, name and state (running
#                                on which worker / gdb thread, ready, or
#                                parked on what), like kio_dump().
#     kio bt TASK [BT-OPTIONS]   the backtrace of a task. TASK is a task id
#                                (a number), a task name, `all` (every task),
#                                or any gdb expression giving a task id, a
#                                kio_task * handle or a kio::Task *. A
#                                suspended task is unwound from the registers
#                                its context switch saved; a running one is
#                                shown with its worker thread's backtrace.
#                                BT-OPTIONS go to gdb's `backtrace` (e.g.
#                                `full`, `-frame-arguments all`, `5`).
#     kio runtimes               the runtimes found, with their worker threads.
#
# How it works. Runtimes are found through the thread-local kio::tls_worker
# of each thread (every worker thread, the creating thread included, has it
# set for the runtime's whole life), or, where gdb cannot read thread-local
# storage (qemu-user's gdb stub), through the list kio::g_debug_runtimes,
# matching each worker's os_tid to a thread. Tasks live in the slabs of the runtime's
# TaskPool (lib/task.h), plus the runtime's main fiber (Runtime::main). A
# suspended task's Task::sp points at the register block kio_ctx_switch saved
# on its stack (asm/switch_*.S). To unwind it, the script installs a gdb
# unwinder that, for the innermost frame of the selected thread only, says
# "the caller of this frame has the registers of the saved block"; gdb then
# unwinds the fiber's stack with its ordinary (DWARF) unwinders, and the
# script prints that backtrace without the thread's own frame #0. No register
# of the process is written, so it works on core files too.
#
# Requires: gdb with Python (tested with gdb 13), and libkio built with debug
# information (the default debugoptimized build has it). Tested on x86-64
# and on aarch64 (gdb-multiarch against qemu-user's gdb stub).

import re
import struct
import time

import gdb
import gdb.unwinder

TASK_MAGIC_LIVE = 0x6B696F54  # "kioT"
RUNTIME_MAGIC_LIVE = 0x6B696F52  # "kioR"
STATE_NEW, STATE_RUNNING, STATE_FINISHED = 0, 1, 2
PARK_NAMES = ["sleep", "mutex", "condition", "await", "select", "descriptor",
              "blocking call", "runtime"]
PARK_SLEEP, PARK_MUTEX, PARK_COND, PARK_AWAIT, PARK_SELECT, PARK_IO, PARK_BLOCKING = range(7)
DIR_OUT = 1


# ---------------------------------------------------------------------------
# Reading kio's data structures


def _u(value):
    """A gdb.Value (integer, pointer, bool, enum) as a Python int."""
    return int(value.cast(gdb.lookup_type("unsigned long"))) if value.type.code == gdb.TYPE_CODE_PTR \
        else int(value)


def atomic(value):
    """The value held by a std::atomic<T> (libstdc++ or libc++) or a kio::Racy<T>."""
    t = value.type.strip_typedefs()
    try:
        inner = t.template_argument(0)
        return value.address.cast(inner.pointer()).dereference()
    except (RuntimeError, gdb.error):
        pass
    for name in ("_M_i", "_M_base", "__a_", "__a_value"):
        try:
            return atomic(value[name]) if name in ("_M_base",) else value[name]
        except gdb.error:
            continue
    raise gdb.GdbError("kio: cannot read std::atomic of type %s" % t)


def cstring(value):
    try:
        return value.string(length=31).split("\0", 1)[0]
    except (gdb.error, UnicodeDecodeError):
        return "?"


def _type(name):
    try:
        return gdb.lookup_type(name)
    except gdb.error:
        raise gdb.GdbError(
            "kio: type %s not found: is libkio loaded, and built with debug information (-g)?" % name)


class Runtime:
    """A kio::Runtime and what the threads of the process say about it."""

    def __init__(self, ptr):
        self.ptr = ptr  # gdb.Value, kio::Runtime *
        self.rt = ptr.dereference()
        self.threads = {}  # worker index -> gdb.InferiorThread

    @property
    def addr(self):
        return _u(self.ptr)

    def nthreads(self):
        return int(self.rt["nthreads"])

    def nstarted(self):
        return int(atomic(self.rt["nstarted"]))

    def worker(self, i):
        return (self.rt["workers"] + i).dereference()

    def main_task(self):
        return self.rt["main"]

    def tasks(self):
        """Every live, unfinished task: the main fiber, then the pool's slabs."""
        yield self.main_task()
        slab = self.rt["tasks"]["slabs_"]
        seen = 0
        while _u(slab) != 0 and seen < 1000000:
            arr = slab.dereference()["tasks"]
            lo, hi = arr.type.strip_typedefs().range()
            for i in range(lo, hi + 1):
                t = arr[i]
                if int(atomic(t["magic"])) != TASK_MAGIC_LIVE:
                    continue
                if int(atomic(t["state"])) == STATE_FINISHED:
                    continue
                yield t.address
            slab = slab.dereference()["next"]
            seen += 1

    def worker_of_current(self, task_ptr):
        for i in range(self.nstarted()):
            if _u(atomic(self.worker(i)["current"])) == _u(task_ptr):
                return i
        return None


def find_runtimes():
    """The runtimes of the inferior, found through each thread's kio::tls_worker,
    or through kio::g_debug_runtimes when gdb cannot read thread-local storage."""
    return find_runtimes_by_tls() or find_runtimes_by_list()


def find_runtimes_by_list():
    """Walks kio::g_debug_runtimes (lib/debug.cpp) and matches each worker's
    os_tid to a thread's LWP (a remote target such as qemu-user's gdb stub
    gives no access to thread-local storage)."""
    try:
        rt_ptr = gdb.parse_and_eval("kio::g_debug_runtimes")
    except gdb.error:
        return []
    by_lwp = {}
    for th in gdb.selected_inferior().threads():
        if th.is_valid():
            by_lwp[th.ptid[1]] = th
    found = []
    while _u(rt_ptr) != 0 and len(found) < 1024:
        if int(atomic(rt_ptr.dereference()["magic"])) == RUNTIME_MAGIC_LIVE:
            rt = Runtime(rt_ptr)
            for i in range(rt.nstarted()):
                th = by_lwp.get(int(rt.worker(i)["os_tid"]))
                if th is not None:
                    rt.threads[i] = th
            found.append(rt)
        rt_ptr = rt_ptr.dereference()["debug_next"]
    return found


def find_runtimes_by_tls():
    inferior = gdb.selected_inferior()
    keep = gdb.selected_thread()
    found = {}
    order = []
    try:
        for th in sorted(inferior.threads(), key=lambda t: t.num):
            if not th.is_valid():
                continue
            th.switch()
            try:
                w = gdb.parse_and_eval("kio::tls_worker")
            except gdb.error:
                continue  # no libkio, no TLS support, or a thread without it
            if _u(w) == 0:
                continue
            rt_ptr = w.dereference()["rt"]
            if _u(rt_ptr) == 0 or int(atomic(rt_ptr.dereference()["magic"])) != RUNTIME_MAGIC_LIVE:
                continue
            key = _u(rt_ptr)
            if key not in found:
                found[key] = Runtime(rt_ptr)
                order.append(key)
            found[key].threads[int(w.dereference()["index"])] = th
    finally:
        if keep is not None and keep.is_valid():
            keep.switch()
    return [found[k] for k in order]


def runtime_at(expr):
    v = gdb.parse_and_eval(expr)
    ptr = gdb.Value(_u(v)).cast(_type("kio::Runtime").pointer())
    rt = Runtime(ptr)
    if int(atomic(rt.rt["magic"])) != RUNTIME_MAGIC_LIVE:
        raise gdb.GdbError("kio: %s is not a live kio runtime" % expr)
    return rt


# ---------------------------------------------------------------------------
# Task states (the words of kio_dump)


def _is_live_process():
    inf = gdb.selected_inferior()
    try:
        conn = inf.connection
        if conn is not None and conn.type == "core":
            return False
    except AttributeError:
        pass
    return inf.pid != 0


def _timing(t, kind):
    until = int(atomic(t["wait_until"]))
    if not until:
        return ""
    if _is_live_process():
        left = (until - time.clock_gettime_ns(time.CLOCK_MONOTONIC)) / 1e9
        return (" until now%+.3f s" % left) if kind == PARK_SLEEP else (" (deadline in %.3f s)" % left)
    # A core file: only the absolute time (kio_now() base) is known.
    return (" until kio_now()=%d" % until) if kind == PARK_SLEEP else (" (deadline kio_now()=%d)" % until)


def describe_wait(t, kind):
    name = PARK_NAMES[kind] if 0 <= kind < len(PARK_NAMES) else "runtime"
    text = "parked: " + name
    obj = atomic(t["wait_obj"])
    aux = int(atomic(t["wait_aux"]))
    try:
        if kind == PARK_MUTEX:
            m = obj.cast(_type("kio::MutexImpl").pointer()).dereference()
            owner = _u(atomic(m["owner"]))
            text += " 0x%x" % _u(obj)
            if owner and not owner & 1:
                holder = gdb.Value(owner).cast(_type("kio::Task").pointer()).dereference()
                text += " held by task %d" % int(holder["id"])
            elif owner:
                text += " held by a plain thread"
        elif kind == PARK_COND:
            text += " 0x%x" % _u(obj)
        elif kind == PARK_AWAIT:
            other = obj.cast(_type("kio::Task").pointer()).dereference()
            text += " of task %d" % int(other["id"])
        elif kind == PARK_SELECT:
            text += " among %d tasks" % aux
        elif kind == PARK_IO:
            fd = int(obj.cast(_type("kio::FdState").pointer()).dereference()["fd"])
            text += " fd %d %s" % (fd, "read/write" if aux == 2 else "write" if aux == DIR_OUT else "read")
        elif kind == PARK_BLOCKING:
            text += " fn 0x%x" % _u(obj)
            sym = gdb.execute("info symbol 0x%x" % _u(obj), to_string=True).strip()
            if sym and not sym.startswith("No symbol"):
                text += " (%s)" % sym.split(" in section")[0]
    except gdb.error as e:
        text += " (unreadable: %s)" % e
    return text + _timing(t, kind)


def describe(rt, tptr):
    t = tptr.dereference()
    state = int(atomic(t["state"]))
    if state == STATE_NEW:
        return "ready (not started)"
    if bool(atomic(t["on_cpu"])):
        i = rt.worker_of_current(tptr)
        if i is None:
            return "running"
        th = rt.threads.get(i)
        return "running on worker %d" % i + (" (gdb thread %d)" % th.num if th else "")
    kind = int(atomic(t["wait_kind"]))
    text = describe_wait(t, kind) if kind >= 0 else "ready"
    if bool(t["pinned"]) and _u(t["home"]):
        text += " (pinned to worker %d)" % int(t["home"].dereference()["index"])
    return text


def task_label(tptr):
    t = tptr.dereference()
    return "task %d '%s'" % (int(t["id"]), cstring(t["name"]))


# ---------------------------------------------------------------------------
# Unwinding a suspended fiber


def _arch_name():
    try:
        return gdb.selected_inferior().architecture().name()
    except AttributeError:  # gdb < 12
        return gdb.selected_frame().architecture().name()


def saved_registers(sp):
    """The registers a suspended context saved at sp: {name: int}, as
    asm/switch_*.S lays them out."""
    arch = _arch_name()
    mem = gdb.selected_inferior().read_memory(sp, 176 if "aarch64" in arch else 64)
    if "x86-64" in arch or "x86_64" in arch:
        # [sp] mxcsr/x87 cw, r15, r14, r13, r12, rbx, rbp, return address
        _, r15, r14, r13, r12, rbx, rbp, ret = struct.unpack("<8Q", bytes(mem))
        return {"rip": ret, "rsp": sp + 64, "rbp": rbp, "rbx": rbx, "r12": r12, "r13": r13,
                "r14": r14, "r15": r15}
    if "aarch64" in arch:
        # [sp] x19..x28, x29, x30, d8..d15, fpcr
        words = struct.unpack("<22Q", bytes(mem))
        regs = {"x%d" % (19 + i): words[i] for i in range(12)}
        regs["pc"] = words[11]
        regs["sp"] = sp + 176
        for i in range(8):
            regs["d%d" % (8 + i)] = words[12 + i]
        return regs
    raise gdb.GdbError("kio: unsupported architecture %s" % arch)


class FiberUnwinder(gdb.unwinder.Unwinder):
    """Inactive unless `kio bt` armed it: then the innermost frame of the
    selected thread gets the suspended fiber's registers as its caller's."""

    def __init__(self):
        super().__init__("kio-fiber")
        self.target = None  # (ptid, {reg: int}, fake frame-id sp, real sp of frame 0)

    def __call__(self, pending_frame):
        if self.target is None:
            return None
        ptid, regs, id_sp, real_sp = self.target
        th = gdb.selected_thread()
        if th is None or th.ptid != ptid:
            return None
        pc_name = "pc" if "pc" in regs else "rip"
        sp_name = "sp" if "sp" in regs else "rsp"
        if hasattr(pending_frame, "level"):
            innermost = pending_frame.level() == 0
        else:  # gdb < 12: recognize the innermost frame by its stack pointer
            innermost = int(pending_frame.read_register(sp_name)) == real_sp
        if not innermost:
            return None

        class FrameId:
            pass

        fid = FrameId()
        # The frame's sp is given below every address of the fiber's stack, so
        # that gdb's "unwinding goes outward" check holds for the fiber's frames
        # wherever its stack is.
        fid.sp = gdb.Value(id_sp).cast(pending_frame.read_register(sp_name).type)
        fid.pc = pending_frame.read_register(pc_name)
        info = pending_frame.create_unwind_info(fid)
        for name, val in regs.items():
            try:
                rtype = pending_frame.read_register(name).type
            except (ValueError, gdb.error):
                continue
            info.add_saved_register(name, gdb.Value(val).cast(rtype))
        return info


_UNWINDER = FiberUnwinder()
gdb.unwinder.register_unwinder(None, _UNWINDER, replace=True)


def fiber_backtrace(sp, bt_args):
    """gdb's backtrace of the context saved at sp, frames renumbered from #0."""
    regs = saved_registers(sp)
    if not any(v for k, v in regs.items() if k not in ("rsp", "sp")):
        return ("  (the saved registers read as zeros: this core file lacks the fiber's stack.\n"
                "   gdb's gcore cannot read stack regions that hold MADV_GUARD_INSTALL guard pages\n"
                "   (Linux 6.13+); use a core dumped by the kernel, or a live process.)")
    # A frame count N must count the thread's frame #0, which is dropped.
    bt_args = " ".join(str(int(a) + 1) if re.fullmatch(r"\d+", a) else a for a in bt_args.split())
    th = gdb.selected_thread()
    if th is None:
        raise gdb.GdbError("kio: no thread selected (is the program running, or a core loaded?)")
    gdb.invalidate_cached_frames()
    real_sp = int(gdb.newest_frame().read_register("sp" if "sp" in regs else "rsp"))
    _UNWINDER.target = (th.ptid, regs, sp - 4096, real_sp)
    gdb.invalidate_cached_frames()
    try:
        out = gdb.execute(("backtrace " + bt_args).strip(), to_string=True)
    finally:
        _UNWINDER.target = None
        gdb.invalidate_cached_frames()
    lines = []
    dropping = True
    for line in out.splitlines():
        m = re.match(r"#(\d+)(\s+)(.*)", line)
        if m:
            n = int(m.group(1))
            dropping = n == 0
            if not dropping:
                head = "#%d" % (n - 1)
                width = 1 + len(m.group(1)) + len(m.group(2))  # keep the column of the text
                line = head + " " * max(1, width - len(head)) + m.group(3)
        if not dropping:
            lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Commands


def _all_tasks(runtimes):
    for rt in runtimes:
        for tptr in rt.tasks():
            yield rt, tptr


def _resolve(runtimes, spec):
    """Tasks named by spec: an id, a name, `all`, or an expression."""
    if spec == "all":
        return list(_all_tasks(runtimes))
    if re.fullmatch(r"\d+", spec):
        want = int(spec)
        hits = [(rt, t) for rt, t in _all_tasks(runtimes) if int(t.dereference()["id"]) == want]
        if hits:
            return hits
        raise gdb.GdbError("kio: no live task with id %d" % want)
    hits = [(rt, t) for rt, t in _all_tasks(runtimes) if cstring(t.dereference()["name"]) == spec]
    if hits:
        return hits
    try:
        v = gdb.parse_and_eval(spec)
    except gdb.error:
        raise gdb.GdbError("kio: no task named '%s', and it is not an expression" % spec)
    if v.type.strip_typedefs().code == gdb.TYPE_CODE_PTR:
        # A kio_task * handle (generation in the alignment bits) or a kio::Task *.
        addr = _u(v) & ~(_type("kio::Task").alignof - 1)
        for rt, t in _all_tasks(runtimes):
            if _u(t) == addr:
                return [(rt, t)]
        raise gdb.GdbError("kio: %s is not a live task" % spec)
    return _resolve(runtimes, str(int(v)))


class KioPrefix(gdb.Command):
    """kio: inspect the tasks of kio runtimes (kio tasks, kio bt, kio runtimes)."""

    def __init__(self):
        super().__init__("kio", gdb.COMMAND_DATA, gdb.COMPLETE_COMMAND, True)


class KioRuntimes(gdb.Command):
    """kio runtimes: the kio runtimes of the process and their worker threads."""

    def __init__(self):
        super().__init__("kio runtimes", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        rts = find_runtimes()
        if not rts:
            print("kio: no runtime found (no thread has kio::tls_worker set, kio::g_debug_runtimes is empty)")
        for rt in rts:
            ths = ", ".join("worker %d = gdb thread %d" % (i, th.num) for i, th in sorted(rt.threads.items()))
            print("runtime 0x%x: %d of %d workers started (%s)" % (rt.addr, rt.nstarted(), rt.nthreads(), ths))


class KioTasks(gdb.Command):
    """kio tasks [RUNTIME]: the workers and live tasks of every kio runtime
(or of the runtime at address RUNTIME), with their states."""

    def __init__(self):
        super().__init__("kio tasks", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        arg = arg.strip()
        rts = [runtime_at(arg)] if arg else find_runtimes()
        if not rts:
            print("kio: no runtime found (no thread has kio::tls_worker set, kio::g_debug_runtimes is empty)")
            return
        for rt in rts:
            print("runtime 0x%x: %d of %d workers started" % (rt.addr, rt.nstarted(), rt.nthreads()))
            for i in range(rt.nstarted()):
                w = rt.worker(i)
                cur = atomic(w["current"])
                th = rt.threads.get(i)
                where = " (gdb thread %d)" % th.num if th else ""
                if _u(cur):
                    print("  worker %d%s: running %s" % (i, where, task_label(cur)))
                else:
                    print("  worker %d%s: idle" % (i, where))
            for tptr in rt.tasks():
                print("  %s: %s" % (task_label(tptr), describe(rt, tptr)))


class KioBt(gdb.Command):
    """kio bt TASK [BT-OPTIONS]: the backtrace of a kio task.
TASK: a task id, a task name, `all`, or an expression (a task id, a kio_task *
handle or a kio::Task *). BT-OPTIONS are passed to `backtrace` (full, a count...)."""

    def __init__(self):
        super().__init__("kio bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        args = gdb.string_to_argv(arg)
        if not args:
            raise gdb.GdbError("usage: kio bt TASK [BT-OPTIONS] (TASK: id, name, all, or expression)")
        spec, bt_args = args[0], " ".join(args[1:])
        runtimes = find_runtimes()
        if not runtimes:
            raise gdb.GdbError("kio: no runtime found (no thread has kio::tls_worker set, kio::g_debug_runtimes is empty)")
        keep_thread = gdb.selected_thread()
        keep_frame = gdb.selected_frame().level() if keep_thread is not None else 0
        try:
            for rt, tptr in _resolve(runtimes, spec):
                self._one(rt, tptr, bt_args)
        finally:
            if keep_thread is not None and keep_thread.is_valid():
                keep_thread.switch()
                try:
                    gdb.execute("frame %d" % keep_frame, to_string=True)
                except gdb.error:
                    pass

    @staticmethod
    def _one(rt, tptr, bt_args):
        t = tptr.dereference()
        print("%s: %s" % (task_label(tptr), describe(rt, tptr)))
        state = int(atomic(t["state"]))
        if state == STATE_NEW:
            print("  (not started: no stack yet)")
            return
        if bool(atomic(t["on_cpu"])) or _u(atomic(t["sp"])) == 0:
            i = rt.worker_of_current(tptr)
            th = rt.threads.get(i) if i is not None else None
            if th is None:
                print("  (running, and its worker thread is unknown)")
                return
            th.switch()
            print("  (running: the backtrace of gdb thread %d)" % th.num)
            print(gdb.execute(("backtrace " + bt_args).strip(), to_string=True).rstrip())
            return
        print(fiber_backtrace(_u(atomic(t["sp"])), bt_args))


KioPrefix()
KioRuntimes()
KioTasks()
KioBt()
