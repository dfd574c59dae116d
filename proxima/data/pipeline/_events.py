"""Run events: what a run reports as it goes, for listeners, streams and logs.

Every state change of a stage (R2.5) and of the run becomes one frozen
:class:`PipelineEvent`. The scheduler hands them to an :class:`Emitter`,
which calls listeners in order (a listener that raises is logged and
ignored) and writes one log record per event.

Cost: an event is built only while somebody listens or its log level is on.
The scheduler also skips the call for the normal-path events (queued,
started, completed: DEBUG) unless ``Emitter.verbose``, since even the call's
keyword arguments cost something per stage.
"""

from __future__ import annotations

import collections
import enum
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._enums import CancellationReason, PipelineStatus, StageStatus
from ._log import logger

if TYPE_CHECKING:
    from ._results import PipelineResult, StageResult

__all__ = ["EventKind", "EventStream", "Listener", "PipelineEvent", "Emitter"]


class EventKind(enum.Enum):
    """What happened.

    The ``STAGE_*`` kinds carry ``stage_id`` and ``attempt`` (the attempt
    about to start, running, or just ended); ``CLEANUP_FINISHED`` carries
    ``stage_id`` only; the ``RUN_*`` and ``STOP_REQUESTED`` kinds neither.
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
    RUN_FINISHED = "run_finished"


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
    error: str | None = None
    exception: BaseException | None = attrs.field(default=None, repr=False)
    reason: CancellationReason | None = None
    duration_ms: float | None = None
    stage_result: StageResult | None = attrs.field(default=None, repr=False)
    pipeline_result: PipelineResult | None = attrs.field(default=None, repr=False)

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
        return text


#: A listener is a plain function taking one event; it runs on the loop's thread.
Listener = Callable[[PipelineEvent], object]

_QUIET_KINDS = frozenset({EventKind.STAGE_QUEUED, EventKind.STAGE_STARTED})
_LOUD_STATUSES = frozenset({StageStatus.FAILED, StageStatus.TIMED_OUT})


def _level(kind: EventKind, status: object, error: object) -> int:
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
    return logging.INFO


class Emitter:
    """Turns scheduler calls into events for one run."""

    __slots__ = ("_delivering", "_listeners", "_name", "_pending", "_pipeline_id", "verbose")

    def __init__(self, pipeline_id: str, name: str, listeners: list[Listener]) -> None:
        self._pipeline_id = pipeline_id
        self._name = name
        self._listeners = listeners  # the pipeline's live list
        self._pending: collections.deque[PipelineEvent] = collections.deque()
        self._delivering = False
        self.verbose = False
        self.refresh()

    def refresh(self) -> None:
        """Recompute whether the per-stage events are worth building."""
        self.verbose = bool(self._listeners) or logger.isEnabledFor(logging.DEBUG)

    def wants(self, status: StageStatus) -> bool:
        """Whether a STAGE_FINISHED event with ``status`` would reach anyone;
        lets the scheduler skip even the call when stopping many stages."""
        return bool(self._listeners) or logger.isEnabledFor(
            _level(EventKind.STAGE_FINISHED, status, None)
        )

    def emit(self, kind: EventKind, **fields: Any) -> None:
        """Build the event and deliver it.

        An event emitted while another is being delivered (a listener that
        cancels or pauses the run) waits until every listener has seen the
        current one, so all listeners see the same order. Nothing is built
        when nobody listens and the event's log level is off.
        """
        level = _level(kind, fields.get("status"), fields.get("error"))
        if not self._listeners and not logger.isEnabledFor(level):
            return
        event = PipelineEvent(
            kind, self._pipeline_id, self._name, time.monotonic(), time.time(), **fields
        )
        if self._delivering:
            self._pending.append(event)
            return
        self._delivering = True
        try:
            self._deliver(event)
            while self._pending:
                self._deliver(self._pending.popleft())
        finally:
            self._delivering = False

    def _deliver(self, event: PipelineEvent) -> None:
        level = _level(event.kind, event.status, event.error)
        if logger.isEnabledFor(level):
            logger.log(
                level,
                event.describe(),
                extra={
                    "pipeline_id": event.pipeline_id,
                    "pipeline_name": event.pipeline_name,
                    "event": event.kind.value,
                    "stage_id": event.stage_id,
                    "attempt": event.attempt,
                    "status": None if event.status is None else event.status.name,
                },
            )
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("event listener %r failed on %s", listener, event.kind.value)


class EventStream:
    """The events of one run as an async iterator, from ``pipeline.events()``.

    The buffer is bounded and never blocks the scheduler: when it is full,
    the oldest buffered event is dropped to make room and ``dropped`` counts
    it. The run's final ``RUN_FINISHED`` event is therefore always delivered,
    and the iteration ends after it.
    """

    def __init__(self, max_buffer: int) -> None:
        if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 1:
            raise ValueError(f"max_buffer must be an int >= 1, got {max_buffer!r}")
        self._send: MemoryObjectSendStream[PipelineEvent]
        self._receive: MemoryObjectReceiveStream[PipelineEvent]
        self._send, self._receive = anyio.create_memory_object_stream[PipelineEvent](max_buffer)
        self._ended = False
        #: Events lost because the consumer fell behind (oldest first).
        self.dropped = 0

    def __call__(self, event: PipelineEvent) -> None:
        """The listener side: buffer ``event`` without ever waiting."""
        if self._ended:
            return
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self._receive.receive_nowait()
            self.dropped += 1
            self._send.send_nowait(event)
        if event.kind is EventKind.RUN_FINISHED:
            self._ended = True
            self._send.close()

    def close(self) -> None:
        """End the iteration now and drop anything still buffered."""
        self._ended = True
        self._send.close()
        self._receive.close()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> PipelineEvent:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None
