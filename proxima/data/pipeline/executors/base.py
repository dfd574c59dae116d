"""The seam where a handler is called: the :class:`Executor` protocol.

The engine never calls a handler itself. For each attempt it builds one
:class:`StageCall` and calls ``session.call(call)`` inside the attempt's
cancel scope. The call returns the value or an awaitable of it (an
``async def call`` is fine); the engine awaits an awaitable, and once more
if that gives a coroutine (an ``async def call`` that returned the
handler's), so an inline call costs no coroutine of its own. Another
awaitable a handler returns is the executor's to await (the thread
executor awaits it on the loop). The
attempt's deadline, a forced stop and the caller's cancellation all reach
the executor as an anyio cancellation of that ``await``: what the executor
does then (cancel a coroutine, abandon a thread, kill a process, cancel a
Dask future) is what "a timeout stops the work" means for it (R11.5).

An executor object is configuration and may be shared by many pipelines
and runs at once; everything it starts for one run lives in the
:class:`ExecutorSession` that ``executor.session()`` yields, opened when
``execute()`` starts and closed (shielded) when it ends (R11.8).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = ["ContextLike", "Executor", "ExecutorSession", "StageCall"]


class ContextLike(Protocol):
    """What an executor may use of the run's context (``PipelineContext``)."""

    pipeline_id: str
    data: dict[str, Any]

    @property
    def is_cancelled(self) -> bool: ...
    def get_stage_result(self, stage_id: str) -> Any: ...
    def record_metric(self, name: str, value: Any) -> None: ...
    def set(self, key: str, value: Any) -> None: ...


class StageCall(NamedTuple):
    """One attempt's handler call, as the engine hands it to an executor.

    Built once per attempt, on the hot path, so a named tuple: read-only,
    and the engine builds it with ``tuple.__new__`` (no ``__init__`` call)."""

    #: The stage's id, for error messages ("stage 'load': ...").
    stage_id: str
    #: The 1-based attempt number.
    attempt: int
    #: The stage's handler, called as ``handler(context, input)``.
    handler: Callable[[Any, Any], Any]
    #: The run's real context (a process executor sends a stand-in instead).
    context: Any
    #: The stage's input (R3.1-R3.3).
    input: Any
    #: Results of the stages that finished so far, by id (for a stand-in's
    #: ``get_stage_result``). The engine's own, live: it only grows, one
    #: entry per stage added when the stage ends, so an executor snapshots
    #: it as its length (``_remote.FinishedLog``) rather than by a copy.
    finished: Mapping[str, Any] = MappingProxyType({})


@runtime_checkable
class ExecutorSession(Protocol):
    """An executor's resources for one run."""

    def call(self, call: StageCall) -> Any:
        """Run ``call.handler(call.context, call.input)``: return its value or
        an awaitable of it.

        Cancellation of this ``await`` must end it promptly (within ~0.5 s),
        whatever the handler is doing, and then re-raise the cancellation.
        A dying worker raises an ``Exception`` that names the stage and how
        the worker died (R11.6): the attempt fails and may be retried.
        """
        ...

    def still_running(self) -> dict[str, str]:
        """Stage id -> what of it may still be running after its attempt
        ended (an abandoned thread, a Dask task on a worker); reported in
        ``result.metadata["still_running"]`` when ``execute()`` returns."""
        ...


@runtime_checkable
class Executor(Protocol):
    """Where a stage's handler runs (R11). See the module docstring."""

    def session(self) -> AbstractAsyncContextManager[ExecutorSession]:
        """Open this executor's resources for one run."""
        ...
