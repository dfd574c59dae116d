"""Applying an attempt's :class:`~.attempt.Outcome`: the one place that
decides what comes next for the stage (retry, failure, stop, dependents)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._model.enums import CancellationReason, StageStatus
from .._model.errors import PipelineCancelledException
from .._model.events import EventKind
from .._model.text import describe
from .attempt import COMPLETED, Outcome, OutcomeKind
from .stop import Origin

if TYPE_CHECKING:
    from .run import Run
    from .state import StageState

__all__ = ["apply"]

_COMPLETED = StageStatus.COMPLETED  # a module global: cheaper than the enum attribute


def apply(run: Run, state: StageState, outcome: Outcome) -> bool:
    """Give ``outcome`` of ``state``'s attempt its consequences. True means
    "COMPLETED, and a store must commit it before its dependents are
    released": the caller awaits the store, then calls :func:`release`."""
    if run.ctx._cancel_reason is not None and not run.stop.stopping:
        # A cancel from another thread that has not reached the loop yet
        # comes first: no retry after it, and it is the stop's reason.
        run.stop_if_cancelled()
    kind = outcome.kind
    ledger = run.ledger
    if kind is COMPLETED:
        ledger.end(state, _COMPLETED, None, outcome.value)
        if run.durable is not None:
            return True  # committed before any dependent starts (R13.2)
        run.flow.release(state)
    elif kind is OutcomeKind.DEFERRED:
        run.slots.push(state)  # still QUEUED: resume refills
    elif kind is OutcomeKind.NOT_STARTED or kind is OutcomeKind.CANCELLED:
        ledger.end(state, StageStatus.CANCELLED, ledger.cancel_record())
    elif kind is OutcomeKind.USER_STOP:
        # A stage stopping the run on its own is a user stop (R5.1, R5.3).
        error = outcome.error
        assert isinstance(error, PipelineCancelledException)
        ledger.end(state, StageStatus.CANCELLED, error)
        run.stop_run(Origin.USER, error.reason)
    elif kind is OutcomeKind.FATAL:
        # R5.6: FAILED with it, dependents SKIPPED, everything else cancelled now.
        assert outcome.error is not None
        ledger.end(state, StageStatus.FAILED, outcome.error)
        run.flow.skip_below(state)
        run.die(outcome.error)
    else:
        _failed(run, state, outcome)
    return False


def _failed(run: Run, state: StageState, outcome: Outcome) -> None:
    """A failed or timed-out attempt: retry it, or end the stage (R4, R6)."""
    failure = outcome.error
    assert failure is not None
    timed_out = outcome.kind is OutcomeKind.TIMED_OUT
    tried = state.attempts
    if not run.stop.stopping and state.retry.should_retry(
        None if timed_out else failure, attempt=tried
    ):
        delay = state.retry.get_delay(tried - 1)
        state.status = StageStatus.RETRYING
        run.emitter.emit(
            EventKind.STAGE_RETRYING,
            stage_id=state.stage.stage_id,
            attempt=tried,
            status=StageStatus.RETRYING,
            delay=delay,
            error=describe(failure),
            exception=failure,
        )
        if delay > 0:
            run.retry_later(state, delay)
        else:
            run.flow.requeue(state)
        return
    run.ledger.end(state, StageStatus.TIMED_OUT if timed_out else StageStatus.FAILED, failure)
    run.flow.skip_below(state)
    if state.stage.critical and not run.config.continue_on_error:
        run.stop_run(Origin.FAILURE, CancellationReason.ERROR)
