"""Cleanup after a stop (R5.4): each started stage's cleanup handler, newest
first, one at a time, shielded and bounded by ``cleanup_timeout_seconds``.

The cleanups run in a task of their own, inside a shielded scope, and the
run waits for that task: neither an anyio cancellation nor an asyncio
``Task.cancel()`` of the run's task can cut them short. A cleanup that
raises an ``Exception`` or times out is recorded; one that raises a
``BaseException`` (``KeyboardInterrupt``...) is recorded too, the others
still run, and the exception is handed back to be re-raised once the run's
result is recorded (R5.6). An ``async def`` cleanup runs on the event loop,
any other callable in a worker thread (R11.9).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.to_thread

from .._model.callables import is_async_callable
from .._model.events import EventKind
from .._model.text import describe
from .context import PipelineContext
from .emitter import Emitter
from .state import StageState

__all__ = ["Cleanup"]

_perf = time.perf_counter
_wall = time.time


def _boxed(handler: Any, ctx: PipelineContext) -> tuple[Any]:
    # In a tuple, so that trio does not refuse a coroutine coming back
    # from a worker thread: it is awaited on the loop instead.
    return (handler(ctx),)


class Cleanup:
    """The cleanup part of a run's end (see the module docstring)."""

    __slots__ = ("_ctx", "_emitter", "_limit", "errors", "fatal", "log")

    def __init__(self, ctx: PipelineContext, emitter: Emitter, limit: float | None) -> None:
        self._ctx = ctx
        self._emitter = emitter
        self._limit = limit
        #: Stage id -> what went wrong in its cleanup.
        self.errors: dict[str, str] = {}
        #: Stage id -> start time, duration and error of its cleanup.
        self.log: dict[str, dict[str, Any]] = {}
        #: The first ``BaseException`` a cleanup raised, to re-raise later.
        self.fatal: BaseException | None = None

    async def after_stop(self, started: Sequence[StageState]) -> BaseException | None:
        """Clean up after ``started`` (first-start order). Returns the
        caller's cancellation if it arrived meanwhile, to be re-raised."""
        try:
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._all, started)
        except anyio.get_cancelled_exc_class() as exc:
            return exc
        return None

    async def _all(self, started: Sequence[StageState]) -> None:
        with anyio.CancelScope(shield=True):
            for state in reversed(started):
                if state.stage.cleanup_handler is not None:
                    await self._one(state)

    async def _one(self, state: StageState) -> None:
        handler = state.stage.cleanup_handler
        assert handler is not None
        stage_id = state.stage.stage_id
        limit = self._limit
        began, wall = _perf(), _wall()
        with anyio.move_on_after(limit) as scope:
            try:
                if is_async_callable(handler):
                    await handler(self._ctx)
                else:
                    (outcome,) = await anyio.to_thread.run_sync(
                        _boxed, handler, self._ctx, abandon_on_cancel=True
                    )
                    if inspect.isawaitable(outcome):  # a lambda returning a coroutine
                        await outcome
            except anyio.get_cancelled_exc_class() as exc:
                # Inside the shield only our own deadline cancels; anything
                # else is a cancellation exception the handler raised itself.
                if not scope.cancel_called:
                    self.errors[stage_id] = describe(exc)
            except Exception as exc:
                self.errors[stage_id] = describe(exc)
            except BaseException as exc:  # KeyboardInterrupt and the like: R5.6
                self.errors[stage_id] = describe(exc)
                if self.fatal is None:
                    self.fatal = exc
        if scope.cancel_called and stage_id not in self.errors:
            self.errors[stage_id] = f"cleanup timed out after {limit:g}s"
        error = self.errors.get(stage_id)
        duration_ms = (_perf() - began) * 1000.0
        self.log[stage_id] = {"start_time": wall, "duration_ms": duration_ms, "error": error}
        self._emitter.emit(
            EventKind.CLEANUP_FINISHED, stage_id=stage_id, error=error, duration_ms=duration_ms
        )
