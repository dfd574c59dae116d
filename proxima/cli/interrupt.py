"""Ctrl-C during ``proxima run`` (R14.3): first a graceful stop, then a stop now.

A task listens for SIGINT with ``anyio.open_signal_receiver`` (asyncio and
trio alike) for as long as ``execute()`` runs, so Ctrl-C never surfaces as a
``KeyboardInterrupt`` somewhere in the middle of the run:

1. the first SIGINT calls ``pipeline.cancel()``: no new attempt starts,
   running stages get the grace period to finish (``ctx.is_cancelled`` is
   true), then they are cancelled and the cleanup handlers run;
2. the second cancels the scope around ``execute()``, which the library
   treats as an outer cancellation: running stages are cancelled at once,
   without a grace period, and cleanup still runs (R5.6);
3. later ones only say that cleanup is still going on.

The receiver lives inside the event loop; once the run is over and the
loop gone, :func:`after_the_run` takes over while the command reports: the
work is done and recorded, nothing is left to stop, so a Ctrl-C there ends
the command at once with status 130 and one line, instead of Python's
``KeyboardInterrupt`` somewhere in the middle of the summary. (A Ctrl-C
outside both, while the target imports say, is a ``KeyboardInterrupt``
that ``main()`` turns into status 130.)

Where signals cannot be received this way (Windows), Ctrl-C stays Python's
``KeyboardInterrupt``, and ``main()`` turns it into exit status 130. A
process started with SIGINT ignored (``nohup``, a shell's background job)
keeps ignoring it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import attrs

if TYPE_CHECKING:
    from proxima.data.pipeline import Pipeline, PipelineResult

__all__ = ["AFTER_THE_RUN", "Interrupted", "after_the_run", "execute_interruptibly"]


@attrs.define
class Interrupted:
    """How a run ended as far as Ctrl-C is concerned."""

    #: The run's result; ``None`` only if a stop-now came before the run began.
    result: PipelineResult | None
    #: How many times SIGINT arrived during the run.
    signals: int = 0


async def execute_interruptibly(
    pipeline: Pipeline,
    execute: Callable[[], Awaitable[PipelineResult]],
    notice: Callable[[str], None],
) -> Interrupted:
    """Await ``execute()`` (which runs ``pipeline``) with Ctrl-C handled as
    the module docstring says; ``notice`` prints a line for the user."""
    outcome = Interrupted(result=None)
    failure: BaseException | None = None
    stop_now = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        await tg.start(_watch_sigint, pipeline, stop_now, notice, outcome)
        with stop_now:
            try:
                outcome.result = await execute()
            except BaseException as exc:
                if isinstance(exc, anyio.get_cancelled_exc_class()):
                    raise
                # Raised below, outside the task group, as itself (not
                # wrapped in an exception group): a store error, or a
                # KeyboardInterrupt raised by a stage (R5.6).
                failure = exc
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if outcome.result is None:
        outcome.result = pipeline.result
    return outcome


async def _watch_sigint(
    pipeline: Pipeline,
    stop_now: anyio.CancelScope,
    notice: Callable[[str], None],
    outcome: Interrupted,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started with SIGINT ignored (nohup, a background job): keep it so.
        task_status.started()
        return
    try:
        receiver = anyio.open_signal_receiver(signal.SIGINT)
        with receiver as signals:
            task_status.started()
            async for _ in signals:
                outcome.signals += 1
                _react(outcome.signals, pipeline, stop_now, notice)
    except NotImplementedError:  # pragma: no cover - Windows: KeyboardInterrupt as usual
        task_status.started()


#: What a Ctrl-C after the run says.
AFTER_THE_RUN = "Ctrl-C: the run has already ended; exiting."


@contextlib.contextmanager
def after_the_run(notice: Callable[[str], None]) -> Iterator[None]:
    """While the command reports on a run that is over, a Ctrl-C exits at
    once with status 130 (see the module docstring); the handler found is
    put back at the end. A SIGINT ignored from the start stays ignored."""
    previous = signal.getsignal(signal.SIGINT)
    if (
        previous is signal.SIG_IGN
        or previous is None  # set outside Python: leave it alone
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def exit_now(signum: int, frame: FrameType | None) -> None:
        # Ignored from here on: a second Ctrl-C cannot interrupt the exit.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with contextlib.suppress(Exception):  # a closed stderr: leave anyway
            notice(AFTER_THE_RUN)
        with contextlib.suppress(Exception):  # what the report printed so far
            sys.stdout.flush()
        # At once: a KeyboardInterrupt in the middle of the report could
        # surface anywhere, be caught by what is printing it, or arrive while
        # Python shuts down, when a SIGINT kills the process outright.
        os._exit(130)

    signal.signal(signal.SIGINT, exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _react(
    count: int, pipeline: Pipeline, stop_now: anyio.CancelScope, notice: Callable[[str], None]
) -> None:
    if count == 1 and not pipeline.is_running:
        # The run has not begun (or is over): nothing to stop gracefully.
        notice("Ctrl-C: stopping.")
        stop_now.cancel()
    elif count == 1:
        notice(f"Ctrl-C: stopping gracefully ({_grace(pipeline)}, then cleanup runs).")
        notice("Press Ctrl-C again to stop now.")
        pipeline.cancel()
    elif count == 2:
        notice("Ctrl-C again: stopping now (running stages are cancelled, cleanup still runs).")
        stop_now.cancel()
    else:
        notice(f"Still cleaning up ({_cleanup_bound(pipeline)}).")


def _grace(pipeline: Pipeline) -> str:
    seconds = pipeline.config.timeout.grace_period_seconds
    if seconds is None:
        return "running stages may finish on their own, with no time limit"
    if seconds == 0:
        return "running stages are cancelled at once"
    return f"running stages have {_seconds(seconds)} to finish"


def _cleanup_bound(pipeline: Pipeline) -> str:
    seconds = pipeline.config.timeout.cleanup_timeout_seconds
    if seconds is None:
        return "cleanup handlers have no time limit"
    return f"each cleanup handler has at most {_seconds(seconds)}"


def _seconds(value: Any) -> str:
    return f"{value:g}s"
