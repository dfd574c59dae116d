"""The ledger of a run: each stage's one terminal record, and the run's result.

Every terminal :class:`StageResult` is written here and only here (R7.1), so
there is one place that emits STAGE_FINISHED, one that knows the record of a
stage a stop cancelled, and one that turns the stage records into the final
status (R6.3) and the :class:`PipelineResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from .._model.enums import CancellationReason, PipelineStatus, StageStatus
from .._model.errors import PipelineCancelledException
from .._model.events import EventKind
from .._model.results import PipelineResult, StageResult
from .._model.text import describe
from .context import PipelineContext
from .emitter import Emitter
from .state import StageState
from .stop import Origin

__all__ = ["TERMINAL", "Ledger"]

_perf = time.perf_counter
_wall = time.time

_COMPLETED = StageStatus.COMPLETED
_blank = object.__new__
TERMINAL = frozenset(
    {
        StageStatus.COMPLETED,
        StageStatus.FAILED,
        StageStatus.TIMED_OUT,
        StageStatus.CANCELLED,
        StageStatus.SKIPPED,
    }
)


class Ledger:
    """Result records of one run (see the module docstring)."""

    __slots__ = (
        "_cancel_exc",
        "_cancel_text",
        "_ctx",
        "_emitter",
        "_metrics_on",
        "_states",
        "on_end",
    )

    def __init__(
        self,
        states: Sequence[StageState],
        ctx: PipelineContext,
        emitter: Emitter,
        *,
        metrics: bool,
    ) -> None:
        self._states = states
        self._ctx = ctx
        self._emitter = emitter
        self._metrics_on = metrics
        self._cancel_exc: PipelineCancelledException | None = None
        self._cancel_text = ""
        #: Told of every terminal record (the store's journal queues it).
        self.on_end: Callable[[StageState], None] | None = None

    # -- attempts ---------------------------------------------------------------------------------
    def log_attempt(
        self,
        state: StageState,
        started: float,
        wall: float,
        outcome: str,
        exc: BaseException | None,
    ) -> None:
        """One entry of ``metrics["attempts"]`` (R7.6)."""
        if self._metrics_on:
            state.attempt_log.append(
                {
                    "attempt": state.attempts,
                    "start_time": wall,
                    "duration_ms": (_perf() - started) * 1000.0,
                    "queue_wait_ms": (started - state.ready_at) * 1000.0,
                    "outcome": outcome,
                    "error": None if exc is None else describe(exc),
                }
            )

    # -- terminal records -------------------------------------------------------------------------
    def end(
        self,
        state: StageState,
        status: StageStatus,
        exc: BaseException | None,
        value: Any = None,
        *,
        restored_from: str | None = None,
    ) -> StageResult:
        """Give ``state`` its one terminal :class:`StageResult`."""
        state.status = status
        state.end_wall = ended = _wall()
        stage = state.stage
        metrics = state.metrics
        if self._metrics_on and restored_from is None:
            metrics["queue_wait_ms"] = state.queue_wait * 1000.0
            metrics["retry_delay_ms"] = state.retry_delay * 1000.0
            metrics["attempts"] = state.attempt_log
        if exc is None:
            error = None
        elif exc is self._cancel_exc:
            error = self._cancel_text
        else:
            error = describe(exc)
        # Field by field rather than through ``StageResult(...)``: calling a
        # class with twelve keywords costs four times as much in CPython, once
        # per stage. tests/test_ledger.py checks that every field is set.
        result = _blank(StageResult)
        result.stage_id = stage.stage_id
        result.stage_name = stage.name
        result.status = status
        result.result = value
        result.error = error
        result.exception = exc
        result.start_time = state.start_wall
        result.end_time = ended
        result.attempt_count = state.attempts
        result.metrics = metrics
        result.critical = stage.critical
        result.restored_from = restored_from
        state.final = result
        state.input = None  # no further attempt needs it: let it go now, not at the run's end
        self._ctx._results[stage.stage_id] = result
        if self.on_end is not None:
            self.on_end(state)
        emitter = self._emitter
        # A COMPLETED record's event is DEBUG: wanted exactly when ``verbose``.
        if emitter.verbose or (status is not _COMPLETED and emitter.wants(status)):
            emitter.emit(
                EventKind.STAGE_FINISHED,
                stage_id=stage.stage_id,
                attempt=state.attempts,
                status=status,
                error=error,
                exception=exc,
                duration_ms=result.duration_ms,
                stage_result=result,
                restored_from=restored_from,
            )
        return result

    def cancelled(self, state: StageState) -> None:
        """``state`` ends CANCELLED by the stop under way, unless it already ended."""
        if state.status not in TERMINAL:
            self.end(state, StageStatus.CANCELLED, self.cancel_record())

    def cancel_record(self) -> PipelineCancelledException:
        """The record for stages a stop cancelled: one per run, since it only
        says why (stopping 1 000 stages should not build 1 000 of them)."""
        reason = self._ctx.cancellation_reason or CancellationReason.EXTERNAL
        exc = self._cancel_exc
        if exc is None or exc.reason is not reason:
            exc = self._cancel_exc = PipelineCancelledException(reason)
            self._cancel_text = describe(exc)
        return exc

    # -- the run's result -------------------------------------------------------------------------
    def final_status(self, origin: Origin | None) -> PipelineStatus:
        """R6.3: after a stop, who stopped it decides; else the stage records."""
        if origin is not None:
            return origin.final_status
        any_completed = False
        short_of_optional = False
        for state in self._states:
            if state.status is _COMPLETED:
                any_completed = True
            elif state.stage.critical:
                return PipelineStatus.FAILED
            else:
                short_of_optional = True
        if not short_of_optional:
            return PipelineStatus.COMPLETED
        return PipelineStatus.PARTIALLY_COMPLETED if any_completed else PipelineStatus.FAILED

    def result(
        self,
        *,
        name: str,
        origin: Origin | None,
        start_wall: float,
        metadata: dict[str, Any],
        run_id: str | None,
    ) -> PipelineResult:
        """The :class:`PipelineResult`; every stage not yet ended ends CANCELLED."""
        for state in self._states:
            if state.status is not _COMPLETED:
                self.cancelled(state)
        result = PipelineResult(
            pipeline_id=self._ctx.pipeline_id,
            pipeline_name=name,
            status=self.final_status(origin),
            stage_results={s.stage.stage_id: s.final for s in self._states},  # type: ignore[misc]
            start_time=start_wall,
            end_time=_wall(),
            metadata=metadata,
            dependencies={s.stage.stage_id: s.stage.dependencies for s in self._states},
            run_id=run_id,
        )
        if origin is not None:
            result.cancellation_reason = (
                CancellationReason.EXTERNAL
                if origin is Origin.EXTERNAL
                else self._ctx.cancellation_reason
            )
        return result
