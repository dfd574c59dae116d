"""Where a stage's handler runs (R11): on the loop, in a thread, in a
process, or on a Dask cluster, behind one :class:`Executor` protocol.

Importing this package imports neither cloudpickle nor Dask: the process and
Dask executors load them when a run first uses them.
"""

from __future__ import annotations

from typing import Any

from ._checks import is_async_callable
from ._dask import DaskExecutor as DaskExecutor
from ._errors import NotPicklableError as NotPicklableError
from ._errors import RemoteTraceback as RemoteTraceback
from ._errors import WorkerLostError as WorkerLostError
from ._inline import InlineExecutor as InlineExecutor
from ._process import ProcessExecutor as ProcessExecutor
from ._standin import WorkerContext as WorkerContext
from ._standin import WorkerContextError as WorkerContextError
from ._thread import ThreadExecutor as ThreadExecutor
from .base import Executor as Executor
from .base import ExecutorSession as ExecutorSession
from .base import StageCall as StageCall

__all__ = [
    "DaskExecutor",
    "Executor",
    "ExecutorSession",
    "InlineExecutor",
    "NotPicklableError",
    "ProcessExecutor",
    "RemoteTraceback",
    "StageCall",
    "ThreadExecutor",
    "WorkerContext",
    "WorkerContextError",
    "WorkerLostError",
    "resolve",
]

#: The executors the strings name; shared, since an executor is only
#: configuration (each run opens its own session).
_NAMED: dict[str, Executor] = {
    "inline": InlineExecutor(),
    "thread": ThreadExecutor(),
    "process": ProcessExecutor(),
}


def resolve(spec: Any, handler: Any) -> Executor:
    """The executor ``spec`` names for ``handler`` (R11.1, R11.2).

    ``"auto"`` is ``"inline"`` for an ``async def`` handler (also a
    ``functools.partial`` of one, or an object whose ``__call__`` is
    ``async def``) and ``"thread"`` for any other callable; ``"inline"``,
    ``"thread"`` and ``"process"`` are shared default instances; an object
    with a ``session()`` method is returned as it is.
    """
    if isinstance(spec, str):
        if spec == "auto":
            return _NAMED["inline" if is_async_callable(handler) else "thread"]
        try:
            return _NAMED[spec]
        except KeyError:
            names = ", ".join(repr(n) for n in ("auto", *_NAMED))
            raise ValueError(
                f"executor must be one of {names} or an Executor, got {spec!r}"
            ) from None
    if callable(getattr(spec, "session", None)):
        executor: Executor = spec
        return executor
    raise TypeError(f"executor must be an executor name or an Executor, got {spec!r}")
