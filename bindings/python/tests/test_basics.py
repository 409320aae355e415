"""Library loading, version, time, errors."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kio


def test_version_and_library() -> None:
    v = kio.version()
    assert v.count(".") == 2 and v.split(".")[0] == "0"
    assert Path(kio.library_path).resolve() == Path(os.environ["KIO_LIBRARY"]).resolve()


def test_now_is_monotonic_clock() -> None:
    a = kio.now_ns()
    b = time.monotonic_ns()
    c = kio.now_ns()
    assert a <= b <= c  # both CLOCK_MONOTONIC
    assert abs(kio.now() - time.monotonic()) < 0.1


def test_sleep() -> None:
    t0 = time.monotonic()
    kio.sleep(0.05)
    assert time.monotonic() - t0 >= 0.05
    kio.sleep(0)
    with pytest.raises(ValueError):
        kio.sleep(-1)


def test_strerror() -> None:
    assert kio.strerror(-errno.EINVAL) == kio.strerror(errno.EINVAL)
    assert kio.strerror(-errno.ECANCELED)


def test_error_classes() -> None:
    assert issubclass(kio.KioError, OSError)
    assert issubclass(kio.TimedOut, kio.KioError) and issubclass(kio.TimedOut, TimeoutError)
    assert issubclass(kio.Canceled, kio.KioError)
    assert issubclass(kio.ConnectionRefused, ConnectionRefusedError)
    e = kio._errors.error_for(-errno.ETIMEDOUT, "ctx")
    assert isinstance(e, kio.TimedOut) and e.errno == errno.ETIMEDOUT
    assert e.strerror == "ctx: " + kio.strerror(errno.ETIMEDOUT)


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, **env)
    return subprocess.run(
        [sys.executable, "-c", code],
        env=full,
        capture_output=True,
        text=True,
        cwd=str(Path(__file__).resolve().parent.parent),
    )


def test_bad_kio_library_gives_clear_import_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "libkio.so"
    p = _run("import kio", KIO_LIBRARY=str(missing))
    assert p.returncode != 0
    assert "ImportError" in p.stderr and "KIO_LIBRARY" in p.stderr and str(missing) in p.stderr


def test_not_libkio_gives_clear_import_error() -> None:
    import ctypes.util

    libm = ctypes.util.find_library("m")
    if not libm:
        pytest.skip("no libm to load")
    p = _run("import kio", KIO_LIBRARY=libm)
    assert p.returncode != 0
    assert "ImportError" in p.stderr and "does not export kio_" in p.stderr


def test_runtime_options_errors() -> None:
    with pytest.raises(kio.KioError) as ei:
        kio.Runtime(threads=1, backend="no-such-backend")
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(kio.KioError) as ei:
        kio.Runtime(threads=1, stack_size=1024)  # under 16 KiB
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(ValueError):
        kio.Runtime(threads=-1)
    # Values wider than the C fields are refused, not cut to their width.
    for kwargs in ({"threads": 2**32 + 1}, {"stack_size": 2**64 + 32768}, {"dump_signal": 2**31},
                   {"debug_flags": 2**32}, {"stall_ns": 2**64}):
        with pytest.raises(ValueError):
            kio.Runtime(**kwargs)


def test_runtime_stats_and_dump(tmp_path: Path) -> None:
    with kio.Runtime(threads=2, backend="auto") as rt:
        st = rt.stats()
        assert st.workers >= 1 and st.tasks_live == 0 and len(st.parks) == 8
        with open(tmp_path / "dump.txt", "w+") as f:
            rt.dump(f.fileno())
            f.seek(0)
            assert f.read()  # a report of the workers
    assert rt.closed
    with pytest.raises(kio.KioError) as ei:
        rt.stats()
    assert ei.value.errno == errno.EINVAL
    rt.stop()  # idempotent


def test_found_without_kio_library_via_loader_path() -> None:
    libdir = str(Path(os.environ["KIO_LIBRARY"]).resolve().parent)
    env = {k: v for k, v in os.environ.items() if k != "KIO_LIBRARY"}
    env["LD_LIBRARY_PATH"] = libdir
    p = subprocess.run(
        [sys.executable, "-c", "import kio; print(kio.library_path); print(kio.version())"],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    assert p.returncode == 0, p.stderr
    assert "kio" in p.stdout.splitlines()[0]
    assert p.stdout.splitlines()[1] == kio.version()
