"""``"thread"``: the handler is called in a worker thread (R11.2, R11.5).

A thread cannot be killed. At the deadline, or when a stop's grace period
runs out, the attempt ends at once and its thread is *abandoned*: it runs
on, its result is discarded, and the session reports it in
:meth:`still_running` until it really ends. Cooperative code calls
``ctx.check_cancelled()`` between units of work and so ends within the grace
period (R11.3). The thread runs in a copy of the attempt's contextvars, so
``ctx.record_metric`` lands in the stage's metrics.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import attrs

from ._checks import max_workers_field
from .base import ExecutorSession, StageCall

__all__ = ["ThreadExecutor"]

#: anyio's own default: enough for blocking I/O, bounded.
DEFAULT_MAX_WORKERS = 40


@attrs.frozen
class ThreadExecutor:
    """Run handlers in worker threads; a deadline abandons the thread."""

    #: At most this many handlers run in threads at once, per run (``None``:
    #: 40). An abandoned thread gives its place back when its attempt ends,
    #: not when the thread does.
    max_workers: int | None = max_workers_field()

    def session(self) -> AbstractAsyncContextManager[ExecutorSession]:
        """A thread limiter for one run."""
        return _open(self.max_workers or DEFAULT_MAX_WORKERS)


@asynccontextmanager
async def _open(max_workers: int) -> AsyncIterator[ExecutorSession]:
    yield _ThreadSession(anyio.CapacityLimiter(max_workers))


class _Job:
    """One handler call in a thread; knows whether it has started and ended,
    so an abandoned one is reported until it ends, and one abandoned before
    its thread got to it never calls the handler at all."""

    __slots__ = ("_call", "_lock", "_on_end", "done", "dropped", "started", "value")

    def __init__(self, call: StageCall) -> None:
        self._call = call
        self._lock = threading.Lock()
        self._on_end: Any = None
        self.started = False
        self.dropped = False
        self.done = False
        self.value: Any = None

    def run(self) -> Any:
        with self._lock:
            if self.dropped:  # its attempt ended before this thread began
                self.done = True
                return None
            self.started = True
        call = self._call
        try:
            value = call.handler(call.context, call.input)
            if inspect.iscoroutine(value):
                value = _Coroutine(value)  # trio refuses a thread that returns one
            self.value = value
            return value
        finally:
            with self._lock:
                self.done = True
                on_end = self._on_end
            if on_end is not None:
                on_end(self)

    def abandon(self, on_end: Any) -> bool:
        """Call ``on_end(job)`` when the thread ends; False if it has already,
        or never started (then it never will: the handler is not called)."""
        with self._lock:
            if not self.started:
                self.dropped = True
                return False
            if not self.done:
                self._on_end = on_end
                return True
        _discard(self)
        return False


class _Coroutine:
    """A coroutine a thread's handler returned, for the loop to await."""

    __slots__ = ("coroutine",)

    def __init__(self, coroutine: Any) -> None:
        self.coroutine = coroutine


def _discard(job: _Job) -> None:
    """An abandoned job's coroutine will never be awaited: close it."""
    value, job.value = job.value, None
    if isinstance(value, _Coroutine):
        value.coroutine.close()


class _ThreadSession:
    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self._limiter = limiter
        self._lock = threading.Lock()
        self._abandoned: dict[_Job, str] = {}

    async def call(self, call: StageCall) -> Any:
        job = _Job(call)
        try:
            value = await anyio.to_thread.run_sync(
                job.run, abandon_on_cancel=True, limiter=self._limiter
            )
        except anyio.get_cancelled_exc_class():
            with self._lock:
                if job.abandon(self._ended):
                    self._abandoned[job] = call.stage_id
            raise
        job.value = None
        # An awaitable the handler returned is awaited here, on the loop (R11.2).
        if isinstance(value, _Coroutine):
            return await value.coroutine
        if inspect.isawaitable(value):
            return await value
        return value

    def _ended(self, job: _Job) -> None:
        """Runs in the abandoned thread, as it ends."""
        _discard(job)
        with self._lock:
            self._abandoned.pop(job, None)

    def still_running(self) -> dict[str, str]:
        """Stage id -> how many of its abandoned threads have not ended yet."""
        with self._lock:
            counts: dict[str, int] = {}
            for stage_id in self._abandoned.values():
                counts[stage_id] = counts.get(stage_id, 0) + 1
        return {
            stage_id: (
                f"{n} worker thread{'s' if n > 1 else ''} still running after the attempt "
                "ended (a thread cannot be killed; its result is discarded)"
            )
            for stage_id, n in counts.items()
        }
