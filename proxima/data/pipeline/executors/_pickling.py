"""Pickling for the executors that send work away (process, Dask).

The standard library's C pickler first: it is several times faster than
cloudpickle for plain data and importable functions, and its output for them
is what cloudpickle's would be (a reference by module and name). cloudpickle
whenever that fails or would not do, so that lambdas, closures and anything
of ``__main__`` cross by value (the worker never re-runs the caller's main
module). Each part of a call is pickled on its own, so an error names the
part that failed, before anything is sent. cloudpickle is imported on first
use: importing the library never loads it.
"""

from __future__ import annotations

import pickle
import sys
import traceback
from typing import Any

from ._errors import NotPicklableError, RemoteTraceback

__all__ = [
    "PackedError",
    "dumps",
    "loads",
    "pack_exception",
    "unpack_exception",
]

#: An exception as it crosses back: (pickled exception or None, "Type: text",
#: the formatted traceback).
PackedError = tuple[bytes | None, str, str]


#: A reference to ``__main__`` in a pickle: the module name is written out
#: (at its first use) wherever a global of it is referred to.
_MAIN = b"__main__"


def dumps(obj: Any, what: str) -> bytes:
    """``obj`` pickled; a failure raises :class:`NotPicklableError` saying
    ``what`` could not be pickled and why."""
    plain = _plain(obj)
    if plain is not None:
        return plain
    import cloudpickle  # type: ignore[import-untyped]

    try:
        blob: bytes = cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        return blob
    except Exception as exc:
        raise NotPicklableError(f"{what} cannot be pickled: {_describe(exc)}") from exc


def _plain(obj: Any) -> bytes | None:
    """``obj`` pickled by the C pickler, or ``None`` where cloudpickle must
    do it: plain pickle failed (a lambda, a closure, a local class), the
    pickle refers to ``__main__`` (which the worker's is not: cloudpickle
    sends those by value), or modules were registered with cloudpickle to be
    sent by value (which plain pickle would send by reference). A false
    alarm (a string "__main__" in the data) only costs the slower pickler."""
    cloud = sys.modules.get("cloudpickle")  # not imported: nothing registered
    if cloud is not None and cloud.list_registry_pickle_by_value():
        return None
    try:
        blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None
    return None if _MAIN in blob else blob


def loads(blob: bytes) -> Any:
    """The inverse of :func:`dumps` (cloudpickle's output is plain pickle)."""
    return pickle.loads(blob)


def pack_exception(exc: BaseException) -> PackedError:
    """``exc`` ready to cross back, with its traceback as text (the
    traceback itself cannot be pickled)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        blob = dumps(exc, "the exception")
        pickle.loads(blob)  # one that pickles but cannot be rebuilt is no use
    except Exception:
        return None, _describe(exc), text
    return blob, _describe(exc), text


def unpack_exception(packed: PackedError, where: str) -> BaseException:
    """The exception raised in the worker, with its traceback as the
    ``__cause__``; one that could not cross becomes a ``RuntimeError``
    carrying its type and message."""
    blob, summary, text = packed
    exc: BaseException | None = None
    if blob is not None:
        try:
            exc = pickle.loads(blob)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = RuntimeError(f"{where} raised {summary} (it could not be pickled back)")
    exc.__cause__ = RemoteTraceback(text)
    return exc


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
