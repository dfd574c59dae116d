"""One run of a plan: supervision, attempt tasks and the stop sequence.

The parts, each with one job: :class:`~.slots.Slots` hands out attempt
slots (R2.2, R12); :class:`~.flow.Flow` moves stages downstream (inputs,
readiness, skips, restores); :func:`~.attempt.attempt` makes one handler
call through the stage's executor and returns an
:class:`~.attempt.Outcome`; :func:`~.outcomes.apply` decides what follows
from it; :class:`~.stop.StopState` knows who stopped the run; the
:class:`~.ledger.Ledger` writes every terminal record and the result;
:class:`~.cleanup.Cleanup` runs the cleanups after a stop (R5.4);
:func:`~.ending.finish` ends the run; :class:`~.durable.Durable` is the
store's side (R13).

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
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from .._graph import Plan
from .._model.config import PipelineConfig
from .._model.enums import CancellationReason, PipelineStatus, StageStatus
from .._model.events import EventKind, Listener
from .._model.results import PipelineResult
from ..executors.base import ExecutorSession
from ..store.base import Store
from .attempt import attempt
from .cleanup import Cleanup
from .context import PipelineContext
from .durable import Durable
from .emitter import Emitter
from .ending import finish
from .flow import Flow
from .ledger import Ledger
from .outcomes import apply
from .sessions import open_sessions
from .slots import Slots
from .state import StageState
from .stop import Origin, StopState

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["Run"]

_perf = time.perf_counter
_wall = time.time


class Run:
    """One execution of a :class:`Plan`; create one per ``execute()``."""

    #: The running anyio backend, looked up once per run when ``execute()``
    #: starts: anyio's front functions (``anyio.current_time()``,
    #: ``anyio.CancelScope()``, ``anyio.lowlevel.checkpoint_if_cancelled()``)
    #: ask which library runs on every call, a third of what they cost, and
    #: every attempt calls them.
    backend: type[anyio.abc.AsyncBackend]

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
        self.states = StageState.for_plan(plan, config)
        self.stop = StopState()
        self.emitter = Emitter(ctx.pipeline_id, config.name, [] if listeners is None else listeners)
        self.emitter.on_fatal = self.die
        self.ledger = Ledger(self.states, ctx, self.emitter, metrics=config.collect_metrics)
        self.slots = Slots(self.states, config.concurrency_limit, config.tag_limits)
        self.flow = Flow(plan, self.states, self.ledger, self.slots, self.emitter)
        self.cleanup = Cleanup(ctx, self.emitter, config.timeout.cleanup_timeout_seconds)
        self.durable = None if store is None else Durable(store, resume)
        if self.durable is not None:
            self.ledger.on_end = self.durable.ended
        #: Stages in the order of their first attempt, for cleanup (R5.4).
        self.started: list[StageState] = []
        self.start_wall = 0.0
        self.result: PipelineResult | None = None
        self._delaying: set[StageState] = set()
        self._alive = 0  # tasks: attempts plus retry delays
        self._root = contextvars.copy_context()
        self._tg: anyio.abc.TaskGroup | None = None
        self._wakeup: anyio.Event | None = None

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
        self.stop_run(Origin.USER, reason)

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
        ``BaseException`` that escaped a stage, both after cleanup; before
        any stage runs, what opening an executor or the store raises."""
        self.start_wall = _wall()
        self.backend = anyio.lowlevel.current_token().backend_class
        async with contextlib.AsyncExitStack() as resources:
            sessions = await open_sessions(self.states, self.config, resources)
            if self.durable is not None:
                await self.durable.open(
                    self.plan,
                    self.states,
                    name=self.config.name,
                    started_at=self.start_wall,
                    initial_input=self._initial_input,
                )
                self.flow.restored = self.durable.restored
            try:
                return await self._supervised(sessions)
            finally:
                # The one reference cycle of a run (run -> emitter -> run.die):
                # broken, so the run's stage states are freed when the run is
                # dropped, not at the next garbage collection.
                self.emitter.on_fatal = None

    async def _supervised(self, sessions: Sequence[ExecutorSession]) -> PipelineResult:
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
                self.flow.queue_roots(self._initial_input)
                self._fill()
                self._check_finished()
                await self._supervise(deadline, timeouts.grace_period_seconds)
        except anyio.get_cancelled_exc_class():
            self.stop_run(Origin.EXTERNAL, CancellationReason.EXTERNAL)
            await finish(self, sessions)
            raise
        except BaseException as exc:
            # KeyboardInterrupt delivered to this task (trio's Ctrl-C) comes
            # out of the task group wrapped in a group: unwrap it (R1.4).
            self.die(_first_real_error(exc))
        finally:
            ctx._detach()
        return await finish(self, sessions)

    async def _supervise(self, deadline: float, grace: float | None) -> None:
        """Wait for the end, the deadline, a stop's grace period, or signals."""
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
                    self.stop_run(Origin.TIMEOUT, CancellationReason.TIMEOUT)
                else:
                    self._fill()
            if stop.stopping and not stop.finished:
                if grace_end is None:
                    # A stop is under way: running attempts get the grace period.
                    grace_end = math.inf if grace is None else now + grace
                elif now >= grace_end:
                    self._force()
                    return

    # -- attempt and retry tasks ------------------------------------------------------------------
    def _fill(self) -> None:
        """Hand free slots to ready stages, one task per attempt."""
        ctx = self.ctx
        if (
            self.stop.stopping
            or ctx._paused
            or (ctx._cancel_reason is not None and self.stop_if_cancelled())
        ):
            return
        take = self.slots.take
        assert self._tg is not None
        spawn = self._tg.create_task
        root = self._root
        while (state := take()) is not None:
            self._alive += 1
            # In a copy of the root context; named after its stage (asyncio's
            # and trio's task dumps show it), which also spares anyio working
            # out a name per task.
            spawn(self._attempt_task(state), name=state.stage.stage_id, context=root)

    def stop_if_cancelled(self) -> bool:
        """A cancel from another thread is visible on the context at once,
        before its signal reaches the loop: it stops the run from here."""
        reason = self.ctx.cancellation_reason
        if reason is None:
            return False
        self.stop_run(Origin.USER, reason)
        return True

    def retry_later(self, state: StageState, delay: float) -> None:
        """Start waiting out ``state``'s retry delay, without a slot (R2.3)."""
        self._alive += 1
        self._delaying.add(state)
        assert self._tg is not None
        self._tg.create_task(
            self._retry_task(state, delay), name=state.stage.stage_id, context=self._root
        )

    async def _attempt_task(self, state: StageState) -> None:
        """One attempt; its slot and its task count are given back here only."""
        try:
            if apply(self, state, await attempt(self, state)):
                assert self.durable is not None
                await self.durable.flush()  # before any dependent starts (R13.2)
                self.flow.release(state)
        except anyio.get_cancelled_exc_class():
            self.ledger.cancelled(state)
            raise
        finally:
            self.slots.give_back(state)
            self._alive -= 1  # _task_done(), written out: once per attempt
            self._fill()
            if self._alive == 0:
                self._check_finished()

    async def _retry_task(self, state: StageState, delay: float) -> None:
        """Wait out a retry delay, then re-queue (R4.6: a stop ends it at once)."""
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
                self.flow.requeue(state)
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

    def _check_finished(self) -> None:
        stop = self.stop
        if self._alive == 0 and (stop.stopping or not self.slots) and not stop.finished:
            stop.finished = True
            self.wake()

    # -- stopping ---------------------------------------------------------------------------------
    def stop_run(self, origin: Origin, reason: CancellationReason) -> None:
        """Begin the stop sequence (R5.2). The first stop wins, except that the
        caller's cancellation takes over a stop already under way (R5.6)."""
        first = not self.stop.stopping
        if not self.stop.begin(origin):
            return
        standing = self.ctx._cancel(reason)  # the first reason wins there
        if standing is not reason and origin is not Origin.EXTERNAL:
            # A cancel() from another thread got there first, its signal
            # still on its way: the run was stopped by the user (R6.3).
            self.stop.origin = Origin.USER
            reason = standing
        self.emitter.emit(EventKind.STOP_REQUESTED, status=PipelineStatus.RUNNING, reason=reason)
        if first:
            for state in self._delaying:
                if state.scope is not None:
                    state.scope.cancel()
            self.wake()
            self._check_finished()

    def die(self, exc: BaseException) -> None:
        """A ``KeyboardInterrupt`` or the like: cancel everything now (R5.6)."""
        self.stop.record_fatal(exc)
        self.stop_run(Origin.EXTERNAL, CancellationReason.EXTERNAL)
        self._force()

    def _force(self) -> None:
        """No grace left: cancel the task group's scope, and with it every
        attempt and retry delay (R5.2)."""
        if self._tg is not None:
            self.stop.forced = True
            self._tg.cancel_scope.cancel()


def _first_real_error(exc: BaseException) -> BaseException:
    """The first exception in ``exc`` (a group, maybe nested) that is not a
    cancellation."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_real_error(inner)
            if not isinstance(found, anyio.get_cancelled_exc_class()):
                return found
    return exc
