"""One run of a plan: supervision, scheduling and the stop sequence.

The parts, each with one job: :class:`~.slots.Slots` hands out attempt
slots (R2.2, R12), :func:`~.attempt.attempt` makes one handler call and
returns an :class:`~.attempt.Outcome`, :meth:`Run._apply` applies it (the
one place that decides retry, failure, stop, dependents), the
:class:`~.stop.StopState` knows who stopped the run, the
:class:`~.ledger.Ledger` writes every terminal record and the result, and
:class:`~.cleanup.Cleanup` runs the cleanups after a stop (R5.4).

The task that calls :meth:`Run.execute` supervises: it waits for the run to
finish, for a stop (to time the grace period), for the pipeline deadline or
for signals from other threads. Nothing polls. Every attempt and every
retry delay is its own task, spawned in a copy of the context captured when
``execute()`` began, so no stage sees another's context variables.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import sys
import time
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from .._graph import Plan
from .._model.config import PipelineConfig
from .._model.enums import CancellationReason, PipelineStatus, StageStatus
from .._model.errors import DependencyFailedException
from .._model.events import EventKind, Listener
from .._model.results import PipelineResult
from .._model.text import describe
from ..store.base import Store
from .attempt import Outcome, OutcomeKind, attempt
from .cleanup import Cleanup
from .context import PipelineContext
from .durable import Durable
from .emitter import Emitter
from .ledger import Ledger
from .sessions import open_sessions, still_running
from .slots import Slots
from .state import StageState
from .stop import Origin, StopState

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["Run"]

_perf = time.perf_counter
_wall = time.time
_QUEUED = StageStatus.QUEUED


class Run:
    """One execution of a :class:`Plan`; create one per ``execute()``."""

    def __init__(
        self,
        plan: Plan,
        config: PipelineConfig,
        ctx: PipelineContext,
        initial_input: Any,
        listeners: list[Listener] | None = None,
        *,
        store: Store | None = None,
        resume: str | None = None,
    ) -> None:
        self.plan = plan
        self.config = config
        self.ctx = ctx
        self._initial_input = initial_input
        self.states = [StageState(i, plan, config) for i in range(len(plan))]
        self.stop = StopState()
        self.emitter = Emitter(ctx.pipeline_id, config.name, [] if listeners is None else listeners)
        self.emitter.on_fatal = self._die
        self.ledger = Ledger(self.states, ctx, self.emitter, metrics=config.collect_metrics)
        self.slots = Slots(self.states, config.concurrency_limit, config.tag_limits)
        self.cleanup = Cleanup(ctx, self.emitter, config.timeout.cleanup_timeout_seconds)
        #: Stages in the order of their first attempt, for cleanup (R5.4).
        self.started: list[StageState] = []
        self._delaying: set[StageState] = set()
        self._alive = 0  # tasks: attempts plus retry delays
        self._root = contextvars.copy_context()
        self._tg: anyio.abc.TaskGroup | None = None
        self._wakeup: anyio.Event | None = None
        self._start_wall = 0.0
        self._durable = None if store is None else Durable(store, resume)
        if self._durable is not None:
            self.ledger.on_end = self._durable.ended
        self._restoring: list[StageState] = []
        self.result: PipelineResult | None = None

    # -- live state (R2.5, R10.1) -----------------------------------------------------------------
    @property
    def status(self) -> PipelineStatus:
        if self.ctx.is_paused and not self.stop.stopping:
            return PipelineStatus.PAUSED
        return PipelineStatus.RUNNING

    def stage_statuses(self) -> dict[str, StageStatus]:
        return {state.stage.stage_id: state.status for state in self.states}

    # -- RunControl: signals from the context, on the loop's thread -------------------------------
    def on_cancel(self, reason: CancellationReason) -> None:
        self._stop(Origin.USER, reason)

    def on_pause(self) -> None:
        self.emitter.emit(EventKind.RUN_PAUSED, status=PipelineStatus.PAUSED)

    def on_resume(self) -> None:
        self.emitter.emit(EventKind.RUN_RESUMED, status=PipelineStatus.RUNNING)
        self._fill()

    def wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    # -- the supervising task ---------------------------------------------------------------------
    async def execute(self) -> PipelineResult:
        """Run to the end. Raises only the caller's cancellation or a
        ``BaseException`` that escaped a stage, both after cleanup."""
        self._start_wall = _wall()
        async with contextlib.AsyncExitStack() as resources:
            sessions = await open_sessions(self.states, self.config, resources)
            if self._durable is not None:
                await self._durable.open(
                    self.plan,
                    self.states,
                    name=self.config.name,
                    started_at=self._start_wall,
                    initial_input=self._initial_input,
                )
            return await self._supervised(sessions)

    async def _supervised(self, sessions: list[Any]) -> PipelineResult:
        ctx = self.ctx
        timeouts = self.config.timeout
        limit = timeouts.pipeline_timeout_seconds
        deadline = math.inf if limit is None else anyio.current_time() + limit
        self._wakeup = anyio.Event()
        try:
            self.emitter.emit(EventKind.RUN_STARTED, status=PipelineStatus.RUNNING)
            ctx._attach(self)
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._queue_roots()
                await self._supervise(deadline, timeouts.grace_period_seconds)
        except anyio.get_cancelled_exc_class():
            self._stop(Origin.EXTERNAL, CancellationReason.EXTERNAL)
            await self._finish(sessions)
            raise
        except BaseException as exc:
            # KeyboardInterrupt delivered to this task (trio's Ctrl-C) comes
            # out of the task group wrapped in a group: unwrap it (R1.4).
            self._die(_first_real_error(exc))
        finally:
            ctx._detach()
        return await self._finish(sessions)

    async def _supervise(self, deadline: float, grace: float | None) -> None:
        stop = self.stop
        grace_end: float | None = None
        while not stop.finished:
            wakeup = self._wakeup
            assert wakeup is not None
            with anyio.move_on_at(deadline if grace_end is None else grace_end):
                await wakeup.wait()
            self._wakeup = anyio.Event()
            self.ctx._drain()  # signals from other threads (R5.1)
            if stop.finished:
                return
            now = anyio.current_time()
            if not stop.stopping:
                if now >= deadline:
                    self._stop(Origin.TIMEOUT, CancellationReason.TIMEOUT)
                else:
                    self._fill()
            if stop.stopping and not stop.finished:
                if grace_end is None:
                    # A stop is under way: running attempts get the grace period.
                    grace_end = math.inf if grace is None else now + grace
                elif now >= grace_end:
                    stop.forced = True
                    assert self._tg is not None
                    self._tg.cancel_scope.cancel()
                    return

    # -- scheduling -------------------------------------------------------------------------------
    def _queue_roots(self) -> None:
        now = _perf()
        roots = [state for state in self.states if state.waiting == 0]
        for state in roots:
            state.input = self._initial_input
            self._make_ready(state, now)
        if self._restoring:
            self._restore_ready()
        self._fill()
        self._check_finished()

    def _make_ready(self, state: StageState, now: float) -> None:
        if self._durable is not None and state.stage.stage_id in self._durable.restored:
            self._restoring.append(state)  # no slot, no attempt: its stored value stands in
            return
        state.status = _QUEUED
        state.ready_at = now
        self.slots.push(state)
        if self.emitter.verbose:
            self._emit_queued(state)

    def _restore_ready(self) -> None:
        """Complete the ready stages a store restores (R13.3), and those they
        make ready in turn: a loop, not recursion, for long chains."""
        restoring = self._restoring
        assert self._durable is not None
        while restoring:
            state = restoring.pop()
            stored = self._durable.restored[state.stage.stage_id]
            self.ledger.end(
                state,
                StageStatus.COMPLETED,
                None,
                stored.value,
                restored_from=stored.from_run_id,
            )
            self._release_dependents(state)

    def _fill(self) -> None:
        """Hand free slots to ready stages, one task per attempt."""
        ctx = self.ctx
        if self.stop.stopping or ctx._paused or ctx._cancel_reason is not None:
            return
        take = self.slots.take
        spawn = self._tg.start_soon  # type: ignore[union-attr]
        run_in_root = self._root.run
        while (state := take()) is not None:
            self._alive += 1
            run_in_root(spawn, self._attempt_task, state)

    def _check_finished(self) -> None:
        stop = self.stop
        if self._alive == 0 and (stop.stopping or not self.slots) and not stop.finished:
            stop.finished = True
            self.wake()

    def _release_dependents(self, state: StageState) -> None:
        plan = self.plan
        states = self.states
        now = _perf()
        for position in plan.dependents[state.position]:
            dependent = states[position]
            dependent.waiting -= 1
            if dependent.waiting == 0:
                deps = plan.dependencies[position]
                if len(deps) == 1:
                    dependent.input = state.final.result  # type: ignore[union-attr]
                else:
                    dependent.input = {
                        states[d].stage.stage_id: states[d].final.result  # type: ignore[union-attr]
                        for d in deps
                    }
                self._make_ready(dependent, now)

    def _emit_queued(self, state: StageState) -> None:
        self.emitter.emit(
            EventKind.STAGE_QUEUED,
            stage_id=state.stage.stage_id,
            attempt=state.attempts + 1,
            status=_QUEUED,
        )

    # -- tasks ------------------------------------------------------------------------------------
    async def _attempt_task(self, state: StageState) -> None:
        """One attempt; its slot and its task count are given back here only."""
        try:
            await self._apply(state, await attempt(self, state))
        except anyio.get_cancelled_exc_class():
            self.ledger.cancelled(state)
            raise
        finally:
            self.slots.give_back(state)
            self._task_done()

    async def _retry_task(self, state: StageState, delay: float) -> None:
        """Wait out a retry delay without a slot, then re-queue (R2.3, R4.6)."""
        began = _perf()
        try:
            try:
                with anyio.CancelScope() as scope:  # cancelled by a stop
                    state.scope = scope
                    if not self.stop.stopping:  # a stop may have come before this task ran
                        await anyio.sleep(delay)
            finally:
                self._delaying.discard(state)
                state.scope = None
                state.retry_delay += _perf() - began
            if self.stop.stopping:
                self.ledger.cancelled(state)
            else:
                self._make_ready(state, _perf())
        except anyio.get_cancelled_exc_class():
            # The caller's cancellation or a forced stop: not our scope's.
            self.ledger.cancelled(state)
            raise
        finally:
            self._task_done()

    def _task_done(self) -> None:
        self._alive -= 1
        self._fill()
        if self._alive == 0:
            self._check_finished()

    # -- applying an outcome: the one place that decides what comes next --------------------------
    async def _apply(self, state: StageState, outcome: Outcome) -> None:
        kind = outcome.kind
        ledger = self.ledger
        if kind is OutcomeKind.COMPLETED:
            ledger.end(state, StageStatus.COMPLETED, None, outcome.value)
            if self._durable is not None:
                await self._durable.flush()  # committed before any dependent starts (R13.2)
            self._release_dependents(state)
            if self._restoring:
                self._restore_ready()
        elif kind is OutcomeKind.DEFERRED:
            self.slots.push(state)  # still QUEUED: resume refills
        elif kind is OutcomeKind.NOT_STARTED or kind is OutcomeKind.CANCELLED:
            ledger.end(state, StageStatus.CANCELLED, ledger.cancel_record())
        elif kind is OutcomeKind.USER_STOP:
            # A stage stopping the run on its own is a user stop (R5.1, R5.3).
            error = outcome.error
            ledger.end(state, StageStatus.CANCELLED, error)
            self._stop(Origin.USER, error.reason)  # type: ignore[union-attr]
        elif kind is OutcomeKind.FATAL:
            # R5.6: FAILED with it, dependents SKIPPED, everything else cancelled now.
            assert outcome.error is not None
            ledger.end(state, StageStatus.FAILED, outcome.error)
            self._skip_dependents(state)
            self._die(outcome.error)
        else:
            self._failed(state, outcome)

    def _failed(self, state: StageState, outcome: Outcome) -> None:
        """A failed or timed-out attempt: retry it, or end the stage (R4, R6)."""
        failure = outcome.error
        assert failure is not None
        timed_out = outcome.kind is OutcomeKind.TIMED_OUT
        tried = state.attempts
        if not self.stop.stopping and state.retry.should_retry(
            None if timed_out else failure, attempt=tried
        ):
            delay = state.retry.get_delay(tried - 1)
            state.status = StageStatus.RETRYING
            self.emitter.emit(
                EventKind.STAGE_RETRYING,
                stage_id=state.stage.stage_id,
                attempt=tried,
                status=StageStatus.RETRYING,
                delay=delay,
                error=describe(failure),
                exception=failure,
            )
            if delay > 0:
                self._alive += 1
                self._delaying.add(state)
                self._root.run(self._tg.start_soon, self._retry_task, state, delay)  # type: ignore[union-attr]
            else:
                self._make_ready(state, _perf())
            return
        self.ledger.end(state, StageStatus.TIMED_OUT if timed_out else StageStatus.FAILED, failure)
        self._skip_dependents(state)
        if state.stage.critical and not self.config.continue_on_error:
            self._stop(Origin.FAILURE, CancellationReason.ERROR)

    def _skip_dependents(self, state: StageState) -> None:
        """Every stage downstream of ``state`` that has not started ends
        SKIPPED, blaming ``state`` (R6.2, R5.3); each is visited at most once."""
        root = state.stage.stage_id
        plan = self.plan
        states = self.states
        todo = list(plan.dependents[state.position])
        while todo:
            dependent = states[todo.pop()]
            if dependent.status is StageStatus.PENDING:
                self.ledger.end(
                    dependent,
                    StageStatus.SKIPPED,
                    DependencyFailedException(dependent.stage.stage_id, root),
                )
                todo.extend(plan.dependents[dependent.position])

    # -- stopping ---------------------------------------------------------------------------------
    def _stop(self, origin: Origin, reason: CancellationReason) -> None:
        """Begin the stop sequence (R5.2). The first stop wins, except that the
        caller's cancellation takes over a stop already under way (R5.6)."""
        first = not self.stop.stopping
        if not self.stop.begin(origin):
            return
        self.ctx._cancel(reason)  # the first reason wins there
        self.emitter.emit(EventKind.STOP_REQUESTED, status=PipelineStatus.RUNNING, reason=reason)
        if first:
            for state in self._delaying:
                if state.scope is not None:
                    state.scope.cancel()
            self.wake()
            self._check_finished()

    def _die(self, exc: BaseException) -> None:
        """A ``KeyboardInterrupt`` or the like: cancel everything now (R5.6)."""
        self.stop.record_fatal(exc)
        self._stop(Origin.EXTERNAL, CancellationReason.EXTERNAL)
        if self._tg is not None:
            self.stop.forced = True
            self._tg.cancel_scope.cancel()

    # -- the end ----------------------------------------------------------------------------------
    async def _finish(self, sessions: list[Any]) -> PipelineResult:
        """Cleanup after a stop (R5.4), then the result (R6.3, R7.1); then
        re-raise what must be re-raised, after the result is recorded."""
        interrupted: BaseException | None = None
        if self.stop.origin is not None and self.config.cleanup_on_cancel:
            interrupted = await self.cleanup.run(self.started)
            if interrupted is None:
                interrupted = await _cancellation_pending()
        if interrupted is not None:
            self.stop.begin(Origin.EXTERNAL)  # the caller's cancellation takes over (R5.6)
        result = self.ledger.result(
            name=self.config.name,
            origin=self.stop.origin,
            start_wall=self._start_wall,
            metadata=self._metadata(sessions),
            run_id=None if self._durable is None else self._durable.run_id,
        )
        if self._durable is not None:
            await self._durable.finish(result)
        self.result = result
        self.emitter.emit(
            EventKind.RUN_FINISHED,
            status=result.status,
            reason=result.cancellation_reason,
            duration_ms=result.duration_ms,
            pipeline_result=result,
        )
        fatal = self.stop.fatal or self.cleanup.fatal
        if fatal is not None:
            raise fatal
        if interrupted is not None:
            raise interrupted
        return result

    def _metadata(self, sessions: list[Any]) -> dict[str, Any]:
        metadata: dict[str, Any] = {}
        if self.stop.origin is Origin.TIMEOUT:
            metadata["pipeline_timeout_seconds"] = self.config.timeout.pipeline_timeout_seconds
        if self.cleanup.log:
            metadata["cleanup"] = self.cleanup.log
        if self.cleanup.errors:
            metadata["cleanup_errors"] = self.cleanup.errors
        if self.ctx.metrics:
            metadata["metrics"] = dict(self.ctx.metrics)
        leftovers = still_running(sessions)
        if leftovers:
            metadata["still_running"] = leftovers
        return metadata


async def _cancellation_pending() -> BaseException | None:
    """The caller's cancellation, if it arrived while cleanup was shielded (R5.6)."""
    try:
        await anyio.lowlevel.checkpoint_if_cancelled()
    except anyio.get_cancelled_exc_class() as exc:
        return exc
    return None


def _first_real_error(exc: BaseException) -> BaseException:
    """The first exception in ``exc`` (a group, maybe nested) that is not a
    cancellation."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_real_error(inner)
            if not isinstance(found, anyio.get_cancelled_exc_class()):
                return found
    return exc
