"""kio's negative errno returns as Python exceptions."""

from __future__ import annotations

import errno as _errno
from typing import Dict, NoReturn, Optional, Type

from ._lib import lib

__all__ = [
    "KioError",
    "Canceled",
    "TimedOut",
    "ConnectionRefused",
    "ConnectionReset",
    "ConnectionAborted",
    "BrokenPipe",
    "strerror",
    "error_for",
    "check",
]


def strerror(err: int) -> str:
    """kio_strerror: the description of an error code (``-EXXX`` or ``EXXX``)."""
    raw = lib.kio_strerror(int(err))
    return str(raw.decode("utf-8", "replace")) if raw else "Unknown error"


class KioError(OSError):
    """An error returned by kio (a negative errno value).

    ``errno`` is the positive errno value; ``strerror`` says what failed,
    then kio_strerror's text (e.g. "kio_read: Connection reset by peer",
    "connect to example.com:80: Connection refused"), or is the binding's
    own message for errors it detects itself (e.g. "join: the task did not
    finish in time").
    Codes with a matching built-in ``OSError`` subclass raise a subclass of
    both (e.g. :class:`TimedOut` is a :class:`TimeoutError`, ECONNREFUSED a
    :class:`ConnectionRefusedError`), so ``except TimeoutError`` works too.
    """


class Canceled(KioError):
    """ECANCELED: the operation (or the task) was canceled."""


class TimedOut(KioError, TimeoutError):
    """ETIMEDOUT: a deadline or timeout passed first."""


class ConnectionRefused(KioError, ConnectionRefusedError):
    """ECONNREFUSED."""


class ConnectionReset(KioError, ConnectionResetError):
    """ECONNRESET."""


class ConnectionAborted(KioError, ConnectionAbortedError):
    """ECONNABORTED."""


class BrokenPipe(KioError, BrokenPipeError):
    """EPIPE (and ESHUTDOWN)."""


_BY_ERRNO: Dict[int, Type[KioError]] = {
    _errno.ECANCELED: Canceled,
    _errno.ETIMEDOUT: TimedOut,
    _errno.ECONNREFUSED: ConnectionRefused,
    _errno.ECONNRESET: ConnectionReset,
    _errno.ECONNABORTED: ConnectionAborted,
    _errno.EPIPE: BrokenPipe,
    _errno.ESHUTDOWN: BrokenPipe,
}


def error_for(err: int, message: Optional[str] = None) -> KioError:
    """The exception for a kio error code (negative or positive errno)."""
    code = abs(int(err))
    cls = _BY_ERRNO.get(code, KioError)
    text = strerror(code)
    if message:
        text = f"{message}: {text}"
    return cls(code, text)


def check(result: int, message: Optional[str] = None) -> int:
    """Returns ``result`` if it is not negative, else raises its KioError."""
    if result < 0:
        raise error_for(result, message)
    return result


def fail(err: int, message: Optional[str] = None) -> NoReturn:
    raise error_for(err, message)
