"""One attempt: call the handler once, through its executor, and say how it ended.

:func:`attempt` does not decide what happens next (a retry, a stop, the
dependents): it returns an :class:`Outcome` and the run applies it in one
place. Only a cancellation that belongs to the run (a forced stop) or to
the caller (R5.6) leaves it as an exception, after the attempt is logged.
"""

from __future__ import annotations

import enum
import inspect
import math
import sys
import time
import types
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import anyio
import anyio.lowlevel

from .._model.enums import StageStatus
from .._model.errors import PipelineCancelledException, StageTimeoutException
from .._model.events import EventKind
from ..executors.base import StageCall
from .context import current_stage_metrics

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from .run import Run
    from .state import StageState

__all__ = ["COMPLETED", "Outcome", "OutcomeKind", "attempt"]

_perf = time.perf_counter
_wall = time.time
_isawaitable = inspect.isawaitable
_Coroutine = types.CoroutineType  # what an async handler returns: no isawaitable() call
_RUNNING = StageStatus.RUNNING


class OutcomeKind(enum.Enum):
    NOT_STARTED = "not_started"  # a stop came before the handler call (R5.2)
    DEFERRED = "deferred"  # paused before the handler call: back to the queue (R9.1)
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"  # returned after the grace period ran out (R5.2)
    USER_STOP = "user_stop"  # the handler raised PipelineCancelledException (R5.3)
    FATAL = "fatal"  # a BaseException that is not a cancellation (R5.6)


class Outcome(NamedTuple):
    """How one attempt ended: a kind, and the value or the exception.

    A named tuple: immutable, and the completed path builds it with
    ``tuple.__new__``, a fraction of what calling a class costs."""

    kind: OutcomeKind
    value: Any = None
    error: BaseException | None = None


_tuple_new = tuple.__new__
_E = TypeVar("_E", bound=BaseException)
COMPLETED = OutcomeKind.COMPLETED
_NOT_STARTED = Outcome(OutcomeKind.NOT_STARTED)
_DEFERRED = Outcome(OutcomeKind.DEFERRED)
_CANCELLED = Outcome(OutcomeKind.CANCELLED)


async def attempt(run: Run, state: StageState) -> Outcome:
    """Make one attempt of ``state``'s stage (its slot is already taken).

    The completed path runs once per stage: every call saved here is saved
    10 000 times in a 10 000-stage run (see docs/design.md)."""
    ctx = run.ctx
    # A stop or a pause may have come since the slot was handed out: both
    # are checked right before the handler call (R5.2, R9.1).
    if run.stop.stopping or (ctx._cancel_reason is not None and run.stop_if_cancelled()):
        return _NOT_STARTED
    if ctx._paused:
        return _DEFERRED
    # The caller's cancellation may have landed since the slot was handed
    # out, before the run heard of it (R5.6): raises here if so.
    backend = run.backend
    await backend.checkpoint_if_cancelled()
    started, wall, call = _begin(run, state)
    session = state.session
    assert session is not None
    timeout = state.timeout
    value: Any = None
    timed_out = False
    try:
        if timeout is None:
            value = session.call(call)
            if type(value) is _Coroutine or _isawaitable(value):
                value = await value
                if type(value) is _Coroutine:  # an executor's coroutine gave the handler's
                    value = await value
        else:
            # anyio.move_on_after(timeout), without asking again which backend runs.
            with backend.create_cancel_scope(deadline=backend.current_time() + timeout) as scope:
                value = session.call(call)
                if type(value) is _Coroutine or _isawaitable(value):
                    value = await value
                    if type(value) is _Coroutine:
                        value = await value
            # A blocking handler on the loop cannot be interrupted, but one
            # that overran its deadline has still timed out. (The attempt's
            # own clock: the deadline was set a moment after ``started``.)
            timed_out = scope.cancel_called or _perf() - started >= timeout
    except anyio.get_cancelled_exc_class() as exc:
        if _cancelled_from_outside(run):
            run.ledger.log_attempt(state, started, wall, "cancelled", None)
            raise
        # Nothing cancelled us: the handler raised a stray cancellation
        # exception of its own (asyncio), a BaseException like any other.
        return _logged(run, state, started, wall, Outcome(OutcomeKind.FATAL, error=exc))
    except Exception as exc:
        return _failure(run, state, started, wall, _unhooked(exc))
    except BaseExceptionGroup as group:
        return await _group(run, state, started, wall, _unhooked(group), limit=timeout)
    except BaseException as exc:  # KeyboardInterrupt, SystemExit: R5.6
        return _logged(run, state, started, wall, Outcome(OutcomeKind.FATAL, error=_unhooked(exc)))
    if run.stop.forced and not timed_out:
        # Returned after the grace period ran out (it swallowed or outlasted
        # the cancellation): too late to count (R5.2).
        return _logged(run, state, started, wall, _CANCELLED)
    if timed_out:
        assert timeout is not None
        late = StageTimeoutException(call.stage_id, timeout)
        return _logged(run, state, started, wall, Outcome(OutcomeKind.TIMED_OUT, error=late))
    run.ledger.log_attempt(state, started, wall, "completed", None)
    return _tuple_new(Outcome, (COMPLETED, value, None))


def _begin(run: Run, state: StageState) -> tuple[float, float, StageCall]:
    """The attempt begins: count it, time it, tell the listeners; its call."""
    state.attempts += 1
    state.status = _RUNNING
    started = _perf()
    wall = _wall()
    state.queue_wait += started - state.ready_at
    if state.start_wall is None:
        state.start_wall = wall
        run.started.append(state)
    stage = state.stage
    if run.emitter.verbose:
        run.emitter.emit(
            EventKind.STAGE_STARTED,
            stage_id=stage.stage_id,
            attempt=state.attempts,
            status=_RUNNING,
        )
    current_stage_metrics.set(state.metrics)
    ctx = run.ctx
    # StageCall(stage_id, attempt, handler, context, input, finished), built
    # as the tuple it is (see Outcome).
    call = _tuple_new(
        StageCall,
        (stage.stage_id, state.attempts, stage.handler, ctx, state.input, ctx._results),
    )
    return started, wall, call


def _unhooked(exc: _E) -> _E:
    """``exc`` with this module's frame taken off the front of its traceback.

    The stage's result keeps the exception, and that frame holds the run
    (every stage's state, input and result): a user holding a failed result
    would keep the whole run alive, in a reference cycle. The traceback then
    starts where the stage's own code (or its executor) raised."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code is _ATTEMPT_CODE:
        exc.__traceback__ = tb.tb_next
    return exc


def _cancelled_from_outside(run: Run) -> bool:
    """A forced stop (R5.2) or the caller's cancellation (R5.6), as opposed
    to a cancellation exception the handler raised on its own."""
    return run.stop.forced or anyio.current_effective_deadline() == -math.inf


def _failure(run: Run, state: StageState, started: float, wall: float, exc: Exception) -> Outcome:
    if isinstance(exc, PipelineCancelledException):
        return _logged(run, state, started, wall, Outcome(OutcomeKind.USER_STOP, error=exc))
    return _logged(run, state, started, wall, Outcome(OutcomeKind.FAILED, error=exc))


async def _group(
    run: Run,
    state: StageState,
    started: float,
    wall: float,
    group: BaseExceptionGroup[BaseException],
    *,
    limit: float | None,
) -> Outcome:
    """The handler's own task group ended with a group. Cancellations in it
    come from the run or the stage's deadline; what else is in it is the
    handler's failure (trio gathers both into one group)."""
    cancelled, rest = group.split(anyio.get_cancelled_exc_class())
    if cancelled is None:
        if isinstance(group, Exception):
            return _failure(run, state, started, wall, group)
        return _logged(run, state, started, wall, Outcome(OutcomeKind.FATAL, error=group))
    if _cancelled_from_outside(run):
        run.ledger.log_attempt(state, started, wall, "cancelled", None)
        # Re-raise a cancellation of our own: the next checkpoint delivers
        # the run's (or the caller's) pending cancellation, bare.
        await anyio.lowlevel.checkpoint()
        raise group  # pragma: no cover - the checkpoint above raised
    if rest is None and limit is not None:
        exc = StageTimeoutException(state.stage.stage_id, limit)
        return _logged(run, state, started, wall, Outcome(OutcomeKind.TIMED_OUT, error=exc))
    failure = rest if rest is not None else group
    if isinstance(failure, Exception):
        return _failure(run, state, started, wall, failure)
    return _logged(run, state, started, wall, Outcome(OutcomeKind.FATAL, error=failure))


_LOG_NAMES = {
    OutcomeKind.COMPLETED: "completed",
    OutcomeKind.FAILED: "failed",
    OutcomeKind.TIMED_OUT: "timed_out",
    OutcomeKind.CANCELLED: "cancelled",
    OutcomeKind.USER_STOP: "cancelled",
    OutcomeKind.FATAL: "failed",
}


def _logged(run: Run, state: StageState, started: float, wall: float, outcome: Outcome) -> Outcome:
    """Log the attempt in ``metrics["attempts"]`` (R7.6) and hand it back."""
    error = outcome.error
    logged = None if outcome.kind is OutcomeKind.TIMED_OUT else error
    run.ledger.log_attempt(state, started, wall, _LOG_NAMES[outcome.kind], logged)
    return outcome


_ATTEMPT_CODE = attempt.__code__
