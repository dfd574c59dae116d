"""Run events as data: what a run reports as it goes.

Every state change of a stage (R2.5) and of the run becomes one frozen
:class:`PipelineEvent`. The engine builds and delivers them
(``_engine/emitter.py``); listeners, streams and the log consume them.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from .enums import CancellationReason, PipelineStatus, StageStatus
from .text import safe_repr

if TYPE_CHECKING:
    from .results import PipelineResult, StageResult

__all__ = ["EventKind", "Listener", "PipelineEvent", "event_level"]


class EventKind(enum.Enum):
    """What happened.

    The ``STAGE_*`` kinds carry ``stage_id`` and ``attempt`` (the attempt
    about to start, running, or just ended); ``CLEANUP_FINISHED`` and
    ``WORK_LEFT_RUNNING`` carry ``stage_id`` only; the ``RUN_*`` and
    ``STOP_REQUESTED`` kinds neither. ``WORK_LEFT_RUNNING`` comes just before
    ``RUN_FINISHED``, once per stage whose work an executor could not stop
    (an abandoned thread, a Dask task on its worker: R11.5); ``error`` says
    what is left.
    """

    RUN_STARTED = "run_started"
    RUN_PAUSED = "run_paused"
    RUN_RESUMED = "run_resumed"
    STOP_REQUESTED = "stop_requested"
    STAGE_QUEUED = "stage_queued"
    STAGE_STARTED = "stage_started"
    STAGE_RETRYING = "stage_retrying"
    STAGE_FINISHED = "stage_finished"
    CLEANUP_FINISHED = "cleanup_finished"
    WORK_LEFT_RUNNING = "work_left_running"
    RUN_FINISHED = "run_finished"


def _short(value: object) -> str:
    return safe_repr(value)


@attrs.frozen
class PipelineEvent:
    """One thing that happened during a run.

    ``monotonic`` (``time.monotonic()``) orders and spaces events; ``wall``
    (``time.time()``) places them in the day. ``status`` is the stage's new
    status for stage events and the run's status for run events. Fields that
    do not apply to a kind are ``None``: ``delay`` is the wait before a retry,
    ``error``/``exception`` the failure behind a retry, a stage's end or a
    failed cleanup, ``reason`` the stop reason, ``stage_result`` and
    ``pipeline_result`` the final records. ``duration_ms`` is the stage's
    duration on STAGE_FINISHED, the cleanup's on CLEANUP_FINISHED and the
    run's on RUN_FINISHED.
    """

    kind: EventKind
    pipeline_id: str
    pipeline_name: str
    monotonic: float
    wall: float
    stage_id: str | None = None
    attempt: int | None = None
    status: StageStatus | PipelineStatus | None = None
    delay: float | None = None
    error: str | None = attrs.field(default=None, repr=_short)
    exception: BaseException | None = attrs.field(default=None, repr=False)
    reason: CancellationReason | None = None
    duration_ms: float | None = None
    stage_result: StageResult | None = attrs.field(default=None, repr=False)
    pipeline_result: PipelineResult | None = attrs.field(default=None, repr=False)
    #: On STAGE_FINISHED of a stage restored from a store (R13.3): the run it came from.
    restored_from: str | None = None

    def describe(self) -> str:
        """A one-line human description (used for log messages)."""
        who = f"stage {self.stage_id}" if self.stage_id is not None else "pipeline"
        text = f"{self.pipeline_name}: {who} {self.kind.value}"
        if self.attempt:
            text += f" (attempt {self.attempt})"
        if self.status is not None:
            text += f" -> {self.status.name}"
        if self.reason is not None:
            text += f" [{self.reason.value}]"
        if self.delay is not None:
            text += f", retry in {self.delay:g}s"
        if self.error:
            text += f": {self.error}"
        if self.restored_from is not None:
            text += f" (restored from run {self.restored_from})"
        return text


#: A listener is a plain function taking one event; it runs on the loop's thread.
Listener = Callable[[PipelineEvent], object]

_QUIET_KINDS = frozenset({EventKind.STAGE_QUEUED, EventKind.STAGE_STARTED})
_LOUD_STATUSES = frozenset({StageStatus.FAILED, StageStatus.TIMED_OUT})


def event_level(kind: EventKind, status: object, error: object) -> int:
    """The log level of an event: DEBUG for the normal path, WARNING for
    failures, INFO for the rest."""
    if kind in _QUIET_KINDS:
        return logging.DEBUG
    if kind is EventKind.STAGE_FINISHED:
        if status is StageStatus.COMPLETED:
            return logging.DEBUG
        return logging.WARNING if status in _LOUD_STATUSES else logging.INFO
    if kind is EventKind.CLEANUP_FINISHED:
        return logging.WARNING if error else logging.DEBUG
    if kind is EventKind.WORK_LEFT_RUNNING:
        return logging.WARNING
    return logging.INFO
