"""What ``proxima run`` shows while a pipeline runs.

On a terminal, the library's :class:`~proxima.data.pipeline.RichProgress`
live table. Anywhere else (a pipe, a file, CI logs), :class:`PlainProgress`:
one line per stage that ends, per retry, per stop request, per cleanup and
per piece of work an executor could not stop (an abandoned thread),
each stamped with the seconds since the run started, so a log reads top to
bottom like the run did. Both are plain listeners, so they work the same
under asyncio and trio.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from proxima.data.pipeline import Pipeline, PipelineEvent

__all__ = ["PlainProgress", "is_terminal", "showing_progress"]


class PlainProgress:
    """A listener writing one line per event worth a line."""

    def __init__(self, pipeline: Pipeline, out: TextIO) -> None:
        self._out = out
        self._stages = len(pipeline.stages)
        self._width = max((len(s.stage_id) for s in pipeline.stages), default=0)
        self._started: float | None = None

    def __call__(self, event: PipelineEvent) -> None:
        line = self._line(event)
        if line is not None:
            stamp = 0.0 if self._started is None else event.monotonic - self._started
            print(f"{stamp:7.2f}s  {line}", file=self._out, flush=True)

    def _line(self, event: PipelineEvent) -> str | None:
        from proxima.data.pipeline import EventKind, StageStatus

        kind, sid = event.kind, f"{event.stage_id or '':<{self._width}}"
        if kind is EventKind.RUN_STARTED:
            self._started = event.monotonic
            return f"run {event.pipeline_name!r} started: {self._stages} stages"
        if kind is EventKind.STAGE_RETRYING:
            return (
                f"{sid}  attempt {event.attempt} failed, retry in {event.delay:g}s: {event.error}"
            )
        if kind is EventKind.STAGE_FINISHED and event.status is not None:
            took = "" if event.duration_ms is None else f"  {event.duration_ms / 1000:.2f}s"
            attempts = f"  ({event.attempt} attempts)" if (event.attempt or 0) > 1 else ""
            failed = event.status is not StageStatus.COMPLETED and event.error
            why = f"  {event.error}" if failed else ""
            return f"{sid}  {event.status.name}{took}{attempts}{why}"
        if kind is EventKind.STOP_REQUESTED:
            reason = event.reason.value if event.reason is not None else "requested"
            return f"stop requested ({reason})"
        if kind is EventKind.CLEANUP_FINISHED:
            outcome = f"failed: {event.error}" if event.error else "done"
            return f"{sid}  cleanup {outcome}"
        if kind is EventKind.WORK_LEFT_RUNNING:
            return f"{sid}  left running: {event.error}"
        if kind is EventKind.RUN_PAUSED:
            return "paused"
        if kind is EventKind.RUN_RESUMED:
            return "resumed"
        return None


@contextlib.contextmanager
def showing_progress(pipeline: Pipeline, *, live: bool) -> Iterator[None]:
    """Show the run's progress on stdout for the duration of the block:
    the live table when ``live``, plain lines otherwise."""
    if live:
        from proxima.data.pipeline import RichProgress

        with RichProgress(pipeline):
            yield
        return
    listener = PlainProgress(pipeline, sys.stdout)
    pipeline.add_listener(listener)
    try:
        yield
    finally:
        pipeline.remove_listener(listener)


def is_terminal() -> bool:
    """Live progress only where someone watches: stdout is a terminal."""
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())
