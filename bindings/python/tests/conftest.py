"""Fixtures for the kio Python binding tests.

KIO_LIBRARY selects the libkio under test (default: build/libkio.so of this
checkout). The C task functions of kio_test_helpers.c are compiled once per
session with cc into a temporary directory, linked against that libkio.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

HERE = Path(__file__).resolve().parent
BINDINGS = HERE.parent
ROOT = BINDINGS.parent.parent

os.environ.setdefault("KIO_LIBRARY", str(ROOT / "build" / "libkio.so"))
sys.path.insert(0, str(BINDINGS))

import kio  # noqa: E402


def library_dir() -> Path:
    return Path(os.environ["KIO_LIBRARY"]).resolve().parent


@pytest.fixture(scope="session")
def helpers(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """kio_test_helpers.c as a loaded library (its functions are C task
    functions to spawn)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler (cc) to build the test helper library")
    out = tmp_path_factory.mktemp("helpers") / "libkio_test_helpers.so"
    libdir = library_dir()
    # Link against the libkio under test, whatever its file name.
    lib_file = Path(os.environ["KIO_LIBRARY"]).resolve()
    cmd = [
        cc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-std=c11",
        "-D_GNU_SOURCE", f"-I{ROOT / 'include'}",
        str(HERE / "kio_test_helpers.c"), "-o", str(out),
        str(lib_file), f"-Wl,-rpath,{libdir}",
    ]
    subprocess.run(cmd, check=True)
    return ctypes.CDLL(str(out))


@pytest.fixture
def rt() -> Iterator[kio.Runtime]:
    with kio.Runtime(threads=4) as runtime:
        yield runtime


@pytest.fixture(scope="session")
def echo_server_path() -> Path:
    """build/examples/echo_server next to the libkio under test."""
    env = os.environ.get("KIO_ECHO_SERVER")
    path = Path(env) if env else library_dir() / "examples" / "echo_server"
    if not path.exists():
        pytest.skip(f"the kio echo example is not built ({path} does not exist)")
    return path


class Interrupt(BaseException):
    """Raised by the SIGALRM handler of :func:`alarm`: stands for
    KeyboardInterrupt (a BaseException, not an Exception) without risking
    pytest's own Ctrl-C handling."""


@contextlib.contextmanager
def alarm(seconds: float, interval: float = 0.0) -> Iterator[None]:
    """Raises :class:`Interrupt` in the main thread ``seconds`` from now (and
    then every ``interval`` seconds if given), from a Python signal handler,
    the way Ctrl-C raises KeyboardInterrupt. The handler is removed on exit."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        pytest.skip("needs setitimer and the main thread")

    on = [True]

    def handler(signum: int, frame: object) -> None:
        if on[0]:
            raise Interrupt()

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds, interval)
    try:
        yield
    finally:
        on[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
