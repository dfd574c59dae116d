"""Delivery of run events to listeners and to the log.

Cost: an event is built only while somebody listens or its log level is on.
The engine also skips the call for the normal-path events (queued, started,
completed: DEBUG) unless ``Emitter.verbose``, since even the call's keyword
arguments cost something per stage.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from .._model.enums import StageStatus
from .._model.events import EventKind, Listener, PipelineEvent, event_level
from .._model.log import logger

__all__ = ["Emitter"]

_level = event_level


class Emitter:
    """Turns scheduler calls into events for one run."""

    __slots__ = (
        "_delivering",
        "_listeners",
        "_name",
        "_pending",
        "_pipeline_id",
        "on_fatal",
        "verbose",
    )

    def __init__(self, pipeline_id: str, name: str, listeners: list[Listener]) -> None:
        self._pipeline_id = pipeline_id
        self._name = name
        self._listeners = listeners  # the pipeline's live list
        self._pending: collections.deque[PipelineEvent] = collections.deque()
        self._delivering = False
        #: Called with a ``BaseException`` (``KeyboardInterrupt``...) a
        #: listener raised; without it, such an exception propagates.
        self.on_fatal: Callable[[BaseException], None] | None = None
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
            except BaseException as exc:  # KeyboardInterrupt and the like: R5.6
                if self.on_fatal is None:
                    raise
                self.on_fatal(exc)
