"""One run of a plan: the scheduler and the stop sequence.

Written against anyio only. The shape of a run:

* stages whose dependencies are all COMPLETED go onto a ready heap keyed by
  insertion position, so whenever a slot frees up the earliest-added ready
  stage takes it (R2.2);
* a slot is handed out by spawning one task for one attempt; the task gives
  the slot back when the attempt ends and, for a retry, waits out the delay
  without a slot and re-queues the stage (R2.3);
* a finished stage decrements its dependents' waiting counts (R2.4: each
  edge is touched once);
* a stop (R5.2) blocks new attempts, cancels retry delays at once, gives
  running attempts the grace period, then cancels the task group's scope;
  cleanup then runs in reverse start order, shielded and bounded (R5.4).

The task that calls :meth:`Run.execute` supervises: it waits for the run to
finish, for a stop (to time the grace period), or for the pipeline deadline.
Nothing polls.
"""

from __future__ import annotations

import enum
import heapq
import inspect
import math
import sys
import time
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from .._graph import Plan
from .._model.config import PipelineConfig, RetryConfig
from .._model.enums import CancellationReason, PipelineStatus, StageStatus
from .._model.errors import (
    DependencyFailedException,
    PipelineCancelledException,
    StageTimeoutException,
)
from .._model.events import EventKind, Listener
from .._model.results import PipelineResult, StageResult
from .context import PipelineContext, current_stage_metrics
from .emitter import Emitter

__all__ = ["Run"]

_perf = time.perf_counter
_wall = time.time
_isawaitable = inspect.isawaitable

_PENDING = StageStatus.PENDING
_QUEUED = StageStatus.QUEUED
_RUNNING = StageStatus.RUNNING
_RETRYING = StageStatus.RETRYING
_COMPLETED = StageStatus.COMPLETED
_FAILED = StageStatus.FAILED
_TIMED_OUT = StageStatus.TIMED_OUT
_CANCELLED = StageStatus.CANCELLED
_SKIPPED = StageStatus.SKIPPED
_TERMINAL = frozenset({_COMPLETED, _FAILED, _TIMED_OUT, _CANCELLED, _SKIPPED})


class _Origin(enum.Enum):
    """Who stopped the run; decides the final status (R6.3)."""

    USER = "user"  # cancel(), ctx.cancel(), a stage raising PipelineCancelledException
    EXTERNAL = "external"  # the caller's cancellation, or KeyboardInterrupt in a stage
    TIMEOUT = "timeout"  # the pipeline's own deadline
    FAILURE = "failure"  # a critical stage failed and continue_on_error is off


_STATUS_AFTER_STOP = {
    _Origin.USER: PipelineStatus.CANCELLED,
    _Origin.EXTERNAL: PipelineStatus.CANCELLED,
    _Origin.TIMEOUT: PipelineStatus.FAILED,
    _Origin.FAILURE: PipelineStatus.FAILED,
}


class _StageRun:
    """Live state of one stage during one run."""

    __slots__ = (
        "attempt_log",
        "attempts",
        "end_wall",
        "final",
        "input",
        "metrics",
        "position",
        "queue_wait",
        "ready_at",
        "retry",
        "retry_delay",
        "scope",
        "stage",
        "start_wall",
        "status",
        "timeout",
        "waiting",
    )

    def __init__(self, position: int, plan: Plan, config: PipelineConfig) -> None:
        stage = plan.stages[position]
        self.position = position
        self.stage = stage
        self.status = _PENDING
        self.waiting = len(plan.dependencies[position])
        self.input: Any = None
        self.attempts = 0
        self.start_wall: float | None = None
        self.end_wall: float | None = None
        self.ready_at = 0.0
        self.queue_wait = 0.0
        self.retry_delay = 0.0
        self.attempt_log: list[dict[str, Any]] = []
        self.metrics: dict[str, Any] = {}
        self.scope: anyio.CancelScope | None = None
        self.final: StageResult | None = None
        self.retry: RetryConfig = stage.retry_config or config.retry
        timeout = stage.timeout_seconds
        self.timeout = timeout if timeout is not None else config.timeout.stage_timeout_seconds


class Run:
    """One execution of a :class:`Plan`; create one per ``execute()``."""

    def __init__(
        self,
        plan: Plan,
        config: PipelineConfig,
        ctx: PipelineContext,
        initial_input: Any,
        listeners: list[Listener] | None = None,
    ) -> None:
        self._plan = plan
        self._config = config
        self._ctx = ctx
        self._initial_input = initial_input
        self._metrics_on = config.collect_metrics
        self._limit = config.concurrency_limit
        self._runs = [_StageRun(i, plan, config) for i in range(len(plan))]
        self._ready: list[int] = []
        self._running = 0  # attempts holding a slot
        self._alive = 0  # tasks: attempts plus retry delays
        self._delaying: set[_StageRun] = set()
        self._started: list[_StageRun] = []  # first-start order, for cleanup
        self._stopping = False
        self._origin: _Origin | None = None
        self._fatal: BaseException | None = None
        self._forced = False  # the run's task group was cancelled: no grace left
        self._finished = False
        self._tg: anyio.abc.TaskGroup | None = None
        self._wakeup: anyio.Event | None = None
        self._done: anyio.Event | None = None
        self._cancel_exc: PipelineCancelledException | None = None
        self._cancel_text = ""
        self._cleanup_errors: dict[str, str] = {}
        self._cleanup_log: dict[str, dict[str, Any]] = {}
        self.emitter = Emitter(ctx.pipeline_id, config.name, [] if listeners is None else listeners)
        self.result: PipelineResult | None = None

    # -- live state (R2.5, R10.1) -------------------------------------------
    @property
    def status(self) -> PipelineStatus:
        if self._ctx.is_paused and not self._stopping:
            return PipelineStatus.PAUSED
        return PipelineStatus.RUNNING

    def stage_statuses(self) -> dict[str, StageStatus]:
        return {run.stage.stage_id: run.status for run in self._runs}

    # -- RunControl: signals from the context ---------------------------------
    def on_cancel(self, reason: CancellationReason) -> None:
        self._stop(_Origin.USER, reason)

    def on_pause(self) -> None:
        self.emitter.emit(EventKind.RUN_PAUSED, status=PipelineStatus.PAUSED)

    def on_resume(self) -> None:
        self.emitter.emit(EventKind.RUN_RESUMED, status=PipelineStatus.RUNNING)
        self._fill_slots()

    # -- the supervising task ---------------------------------------------------
    async def execute(self) -> PipelineResult:
        """Run to the end. Raises only the caller's cancellation or a
        ``BaseException`` that escaped a stage, both after cleanup."""
        ctx = self._ctx
        timeouts = self._config.timeout
        start_wall = _wall()
        pipeline_timeout = timeouts.pipeline_timeout_seconds
        deadline = math.inf if pipeline_timeout is None else anyio.current_time() + pipeline_timeout
        self._wakeup = anyio.Event()
        self._done = anyio.Event()
        ctx._attach(self)
        self.emitter.emit(EventKind.RUN_STARTED, status=PipelineStatus.RUNNING)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._queue_roots()
                await self._supervise(deadline, timeouts.grace_period_seconds)
        except anyio.get_cancelled_exc_class():
            self._stop(_Origin.EXTERNAL, CancellationReason.EXTERNAL)
            await self._finish_run(start_wall)
            raise
        except BaseException as exc:
            # KeyboardInterrupt delivered to this task (trio's Ctrl-C) comes
            # out of the task group wrapped in a group: unwrap it (R1.4).
            self._die(_first_real_error(exc))
        finally:
            ctx._attach(None)
        if self._fatal is not None:
            await self._finish_run(start_wall)
            raise self._fatal
        return await self._finish_run(start_wall)

    async def _supervise(self, deadline: float, grace: float | None) -> None:
        assert self._wakeup is not None
        assert self._done is not None
        if not self._finished:
            with anyio.move_on_at(deadline):
                await self._wakeup.wait()
            if not self._stopping and not self._finished:
                self._stop(_Origin.TIMEOUT, CancellationReason.TIMEOUT)
        if not self._finished:
            # A stop is under way: running attempts get the grace period.
            with anyio.move_on_after(grace):
                await self._done.wait()
            if not self._finished:
                assert self._tg is not None
                self._forced = True
                self._tg.cancel_scope.cancel()

    # -- scheduling ---------------------------------------------------------------
    def _queue_roots(self) -> None:
        now = _perf()
        verbose = self.emitter.verbose
        for run in self._runs:
            if run.waiting == 0:
                run.input = self._initial_input
                run.status = _QUEUED
                run.ready_at = now
                self._ready.append(run.position)  # ascending: already a heap
                if verbose:
                    self._emit_queued(run)
        self._fill_slots()
        self._check_finished()

    def _fill_slots(self) -> None:
        if self._stopping or self._ctx._paused:
            return
        ready = self._ready
        assert self._tg is not None
        while ready and self._running < self._limit:
            run = self._runs[heapq.heappop(ready)]
            self._running += 1
            self._alive += 1
            self._tg.start_soon(self._attempt, run)

    def _check_finished(self) -> None:
        if self._alive == 0 and (self._stopping or not self._ready) and not self._finished:
            self._finished = True
            assert self._wakeup is not None
            assert self._done is not None
            self._wakeup.set()
            self._done.set()

    def _release_dependents(self, run: _StageRun) -> None:
        plan = self._plan
        runs = self._runs
        now = _perf()
        for position in plan.dependents[run.position]:
            dependent = runs[position]
            dependent.waiting -= 1
            if dependent.waiting == 0:
                deps = plan.dependencies[position]
                if len(deps) == 1:
                    dependent.input = run.final.result  # type: ignore[union-attr]
                else:
                    dependent.input = {
                        runs[d].stage.stage_id: runs[d].final.result  # type: ignore[union-attr]
                        for d in deps
                    }
                dependent.status = _QUEUED
                dependent.ready_at = now
                heapq.heappush(self._ready, position)
                if self.emitter.verbose:
                    self._emit_queued(dependent)

    def _emit_queued(self, run: _StageRun) -> None:
        self.emitter.emit(
            EventKind.STAGE_QUEUED,
            stage_id=run.stage.stage_id,
            attempt=run.attempts + 1,
            status=_QUEUED,
        )

    # -- one attempt ----------------------------------------------------------------
    async def _attempt(self, run: _StageRun) -> None:
        # A stop or a pause may have come since the slot was handed out:
        # both are checked right before the handler call (R5.2, R9.1).
        if self._stopping:
            self._running -= 1
            self._end_stage(run, _CANCELLED, self._cancelled_exc())
            self._task_done()
            return
        if self._ctx._paused:
            self._running -= 1
            heapq.heappush(self._ready, run.position)  # still QUEUED; resume refills
            self._task_done()
            return
        try:
            # The caller's cancellation may have landed since the slot was
            # handed out, before this run heard of it (R5.6).
            await anyio.lowlevel.checkpoint_if_cancelled()
        except anyio.get_cancelled_exc_class():
            self._running -= 1
            self._end_stage(run, _CANCELLED, self._cancelled_exc())
            self._alive -= 1
            raise
        ctx = self._ctx
        run.attempts += 1
        run.status = _RUNNING
        started = _perf()
        wall = _wall()
        run.queue_wait += started - run.ready_at
        if run.start_wall is None:
            run.start_wall = wall
            self._started.append(run)
        if self.emitter.verbose:
            self.emitter.emit(
                EventKind.STAGE_STARTED,
                stage_id=run.stage.stage_id,
                attempt=run.attempts,
                status=_RUNNING,
            )
        current_stage_metrics.set(run.metrics)
        timeout = run.timeout
        value: Any = None
        error: Exception | None = None
        timed_out = False
        try:
            if timeout is None:
                value = run.stage.handler(ctx, run.input)
                if _isawaitable(value):
                    value = await value
            else:
                with anyio.move_on_after(timeout) as scope:
                    value = run.stage.handler(ctx, run.input)
                    if _isawaitable(value):
                        value = await value
                # A blocking sync handler cannot be interrupted, but one that
                # overran its deadline has still timed out.
                timed_out = scope.cancel_called or anyio.current_time() >= scope.deadline
        except anyio.get_cancelled_exc_class() as exc:
            if self._forced or anyio.current_effective_deadline() == -math.inf:
                # The run's scope or the caller's: a forced stop (R5.2) or an
                # external cancel (R5.6). Record it and let it propagate.
                self._running -= 1
                self._log_attempt(run, started, wall, "cancelled", None)
                self._end_stage(run, _CANCELLED, self._cancelled_exc())
                self._alive -= 1
                raise
            # Nothing cancelled us: the handler raised a stray cancellation
            # exception of its own (asyncio), a BaseException like any other.
            self._fatal_in_stage(run, started, wall, exc)
            return
        except Exception as exc:
            error = exc
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: R5.6
            self._fatal_in_stage(run, started, wall, exc)
            return
        self._running -= 1

        if self._forced and error is None and not timed_out:
            # Returned after the grace period ran out (it swallowed or
            # outlasted the cancellation): too late to count (R5.2).
            self._log_attempt(run, started, wall, "cancelled", None)
            self._end_stage(run, _CANCELLED, self._cancelled_exc())
            self._task_done()
            return
        if timed_out:
            self._log_attempt(run, started, wall, "timed_out", None)
            assert timeout is not None
            failure: BaseException = StageTimeoutException(run.stage.stage_id, timeout)
        elif error is None:
            self._log_attempt(run, started, wall, "completed", None)
            self._end_stage(run, _COMPLETED, None, value)
            self._release_dependents(run)
            self._fill_slots()
            self._task_done()
            return
        elif isinstance(error, PipelineCancelledException):
            # A stage stopping the run on its own is a user stop (R5.1, R5.3).
            self._log_attempt(run, started, wall, "cancelled", error)
            self._end_stage(run, _CANCELLED, error)
            self._stop(_Origin.USER, error.reason)
            self._task_done()
            return
        else:
            self._log_attempt(run, started, wall, "failed", error)
            failure = error

        attempt = run.attempts
        if not self._stopping and run.retry.should_retry(
            None if timed_out else failure, attempt=attempt
        ):
            delay = run.retry.get_delay(attempt - 1)
            run.status = _RETRYING
            self.emitter.emit(
                EventKind.STAGE_RETRYING,
                stage_id=run.stage.stage_id,
                attempt=attempt,
                status=_RETRYING,
                delay=delay,
                error=_describe(failure),
                exception=failure,
            )
            await self._retry_later(run, delay)
        else:
            self._stage_failed(run, _TIMED_OUT if timed_out else _FAILED, failure)
        self._fill_slots()
        self._task_done()

    def _fatal_in_stage(
        self, run: _StageRun, started: float, wall: float, exc: BaseException
    ) -> None:
        """R5.6: the stage ends FAILED with ``exc``, its dependents SKIPPED
        (R5.3), and everything else is cancelled at once."""
        self._running -= 1
        self._log_attempt(run, started, wall, "failed", exc)
        self._end_stage(run, _FAILED, exc)
        self._skip_dependents(run)
        self._alive -= 1
        self._die(exc)

    async def _retry_later(self, run: _StageRun, delay: float) -> None:
        """Wait out a retry delay without a slot, then re-queue (R2.3, R4.6)."""
        if delay > 0:
            self._fill_slots()  # the slot is free during the delay
            self._delaying.add(run)
            began = _perf()
            try:
                with anyio.CancelScope() as scope:  # cancelled by a stop
                    run.scope = scope
                    await anyio.sleep(delay)
            except anyio.get_cancelled_exc_class():
                # The caller's cancellation or a forced stop: not our scope's.
                self._delaying.discard(run)
                run.retry_delay += _perf() - began
                self._end_stage(run, _CANCELLED, self._cancelled_exc())
                self._alive -= 1
                raise
            self._delaying.discard(run)
            run.scope = None
            run.retry_delay += _perf() - began
            if self._stopping:
                self._end_stage(run, _CANCELLED, self._cancelled_exc())
                return
        run.status = _QUEUED
        run.ready_at = _perf()
        heapq.heappush(self._ready, run.position)
        if self.emitter.verbose:
            self._emit_queued(run)

    def _task_done(self) -> None:
        self._alive -= 1
        if self._alive == 0:
            self._check_finished()

    # -- endings ------------------------------------------------------------------------
    def _end_stage(
        self,
        run: _StageRun,
        status: StageStatus,
        exc: BaseException | None,
        value: Any = None,
    ) -> None:
        """Give ``run`` its one terminal :class:`StageResult` (R7.1)."""
        run.status = status
        run.end_wall = _wall()
        stage = run.stage
        metrics = run.metrics
        if self._metrics_on:
            metrics["queue_wait_ms"] = run.queue_wait * 1000.0
            metrics["retry_delay_ms"] = run.retry_delay * 1000.0
            metrics["attempts"] = run.attempt_log
        if exc is None:
            error = None
        elif exc is self._cancel_exc:
            error = self._cancel_text
        else:
            error = _describe(exc)
        result = StageResult(
            stage.stage_id,
            stage.name,
            status,
            value,
            error,
            exc,
            run.start_wall,
            run.end_wall,
            run.attempts,
            metrics,
            stage.critical,
        )
        run.final = result
        self._ctx._results[stage.stage_id] = result
        if self.emitter.verbose or self.emitter.wants(status):
            self.emitter.emit(
                EventKind.STAGE_FINISHED,
                stage_id=stage.stage_id,
                attempt=run.attempts,
                status=status,
                error=result.error,
                exception=exc,
                duration_ms=result.duration_ms,
                stage_result=result,
            )

    def _stage_failed(self, run: _StageRun, status: StageStatus, exc: BaseException) -> None:
        """R6: skip everything downstream; stop the run if the stage is critical."""
        self._end_stage(run, status, exc)
        self._skip_dependents(run)
        if run.stage.critical and not self._config.continue_on_error:
            self._stop(_Origin.FAILURE, CancellationReason.ERROR)

    def _skip_dependents(self, run: _StageRun) -> None:
        """Every stage downstream of ``run`` that has not started ends SKIPPED,
        blaming ``run`` (R6.2, R5.3); each stage is visited at most once."""
        root = run.stage.stage_id
        plan = self._plan
        runs = self._runs
        todo = list(plan.dependents[run.position])
        while todo:
            dependent = runs[todo.pop()]
            if dependent.status is _PENDING:
                self._end_stage(
                    dependent,
                    _SKIPPED,
                    DependencyFailedException(dependent.stage.stage_id, root),
                )
                todo.extend(plan.dependents[dependent.position])

    def _stop(self, origin: _Origin, reason: CancellationReason) -> None:
        """Begin the stop sequence (R5.2). The first stop wins, except that the
        caller's cancellation takes over a stop already under way (R5.6)."""
        first = not self._stopping
        if not first and (origin is not _Origin.EXTERNAL or self._origin is _Origin.EXTERNAL):
            return
        if self._finished and origin is not _Origin.EXTERNAL:
            return
        self._stopping = True
        self._origin = origin
        self._ctx._cancel(reason)  # first reason wins there; calls back into on_cancel
        self.emitter.emit(EventKind.STOP_REQUESTED, status=PipelineStatus.RUNNING, reason=reason)
        if first:
            for run in self._delaying:
                if run.scope is not None:
                    run.scope.cancel()
            assert self._wakeup is not None
            self._wakeup.set()
            self._check_finished()

    def _die(self, exc: BaseException) -> None:
        """A stage raised KeyboardInterrupt or the like: cancel everything now."""
        if self._fatal is None:
            self._fatal = exc
        self._stop(_Origin.EXTERNAL, CancellationReason.EXTERNAL)
        if self._tg is not None:
            self._forced = True
            self._tg.cancel_scope.cancel()

    def _cancelled_exc(self) -> PipelineCancelledException:
        """The record for stages a stop cancelled: one per run, since it only
        says why (stopping 1 000 stages should not build 1 000 of them)."""
        reason = self._ctx.cancellation_reason or CancellationReason.EXTERNAL
        exc = self._cancel_exc
        if exc is None or exc.reason is not reason:
            exc = self._cancel_exc = PipelineCancelledException(reason)
            self._cancel_text = _describe(exc)
        return exc

    def _log_attempt(
        self,
        run: _StageRun,
        started: float,
        wall: float,
        outcome: str,
        exc: BaseException | None,
    ) -> None:
        if self._metrics_on:
            run.attempt_log.append(
                {
                    "attempt": run.attempts,
                    "start_time": wall,
                    "duration_ms": (_perf() - started) * 1000.0,
                    "queue_wait_ms": (started - run.ready_at) * 1000.0,
                    "outcome": outcome,
                    "error": None if exc is None else _describe(exc),
                }
            )

    async def _finish_run(self, start_wall: float) -> PipelineResult:
        """Cleanup after a stop (R5.4), then the result (R6.3, R7.1).

        Raises the caller's cancellation if one arrived during cleanup, after
        the cleanup finished and the result is recorded.
        """
        interrupted: BaseException | None = None
        if self._origin is not None and self._config.cleanup_on_cancel:
            interrupted = await self._cleanup_shielded()
        if interrupted is not None:
            self._origin = _Origin.EXTERNAL
        origin = self._origin
        for run in self._runs:
            if run.status not in _TERMINAL:
                self._end_stage(run, _CANCELLED, self._cancelled_exc())
        result = PipelineResult(
            self._ctx.pipeline_id,
            self._config.name,
            self._final_status(),
            {run.stage.stage_id: run.final for run in self._runs},  # type: ignore[misc]
            start_wall,
            _wall(),
            None,
            {},
            {stage.stage_id: stage.dependencies for stage in self._plan.stages},
        )
        if origin is not None:
            result.cancellation_reason = (
                CancellationReason.EXTERNAL
                if origin is _Origin.EXTERNAL
                else self._ctx.cancellation_reason
            )
            if origin is _Origin.TIMEOUT:
                result.metadata["pipeline_timeout_seconds"] = (
                    self._config.timeout.pipeline_timeout_seconds
                )
        if self._cleanup_log:
            result.metadata["cleanup"] = self._cleanup_log
        if self._cleanup_errors:
            result.metadata["cleanup_errors"] = self._cleanup_errors
        if self._ctx.metrics:
            result.metadata["metrics"] = dict(self._ctx.metrics)
        self.result = result
        self.emitter.emit(
            EventKind.RUN_FINISHED,
            status=result.status,
            reason=result.cancellation_reason,
            duration_ms=result.duration_ms,
            pipeline_result=result,
        )
        if interrupted is not None:
            raise interrupted
        return result

    def _final_status(self) -> PipelineStatus:
        if self._origin is not None:
            return _STATUS_AFTER_STOP[self._origin]
        any_completed = False
        short_of_optional = False
        for run in self._runs:
            if run.status is _COMPLETED:
                any_completed = True
            elif run.stage.critical:
                return PipelineStatus.FAILED
            else:
                short_of_optional = True
        if not short_of_optional:
            return PipelineStatus.COMPLETED
        return PipelineStatus.PARTIALLY_COMPLETED if any_completed else PipelineStatus.FAILED

    async def _cleanup_shielded(self) -> BaseException | None:
        """Run the cleanups in a task of their own, shielded, and wait for
        them. Neither an anyio cancellation nor an asyncio ``Task.cancel()``
        of this task can cut them short (the latter would reach into a
        shielded scope of this very task); such a cancellation is returned
        to be re-raised once the cleanups are done."""
        try:
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._cleanup)
        except anyio.get_cancelled_exc_class() as exc:
            return exc
        return None

    async def _cleanup(self) -> None:
        """Each started stage's cleanup, newest first, one at a time, bounded."""
        with anyio.CancelScope(shield=True):
            for run in reversed(self._started):
                if run.stage.cleanup_handler is not None:
                    await self._clean_up(run)

    async def _clean_up(self, run: _StageRun) -> None:
        handler = run.stage.cleanup_handler
        assert handler is not None
        limit = self._config.timeout.cleanup_timeout_seconds
        stage_id = run.stage.stage_id
        started, wall = _perf(), _wall()
        with anyio.move_on_after(limit) as scope:
            try:
                outcome = handler(self._ctx)
                if _isawaitable(outcome):
                    await outcome
            except Exception as exc:
                self._cleanup_errors[stage_id] = _describe(exc)
        if scope.cancel_called and stage_id not in self._cleanup_errors:
            self._cleanup_errors[stage_id] = f"cleanup timed out after {limit:g}s"
        error = self._cleanup_errors.get(stage_id)
        duration_ms = (_perf() - started) * 1000.0
        self._cleanup_log[stage_id] = {
            "start_time": wall,
            "duration_ms": duration_ms,
            "error": error,
        }
        self.emitter.emit(
            EventKind.CLEANUP_FINISHED, stage_id=stage_id, error=error, duration_ms=duration_ms
        )


def _first_real_error(exc: BaseException) -> BaseException:
    """The first exception in ``exc`` (a group, maybe nested) that is not a
    cancellation."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_real_error(inner)
            if not isinstance(found, anyio.get_cancelled_exc_class()):
                return found
    return exc


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
