"""The stop state of a run: who stopped it, whether time is up, whether it ended."""

from __future__ import annotations

import enum

from .._model.enums import PipelineStatus

__all__ = ["Origin", "StopState"]


class Origin(enum.Enum):
    """Who stopped the run; decides the final status (R6.3)."""

    USER = "user"  # cancel(), ctx.cancel(), a stage raising PipelineCancelledException
    EXTERNAL = "external"  # the caller's cancellation, or KeyboardInterrupt in a stage
    TIMEOUT = "timeout"  # the pipeline's own deadline
    FAILURE = "failure"  # a critical stage failed and continue_on_error is off

    @property
    def final_status(self) -> PipelineStatus:
        return PipelineStatus.CANCELLED if self in _CANCELLING else PipelineStatus.FAILED


_CANCELLING = frozenset({Origin.USER, Origin.EXTERNAL})


class StopState:
    """Three facts and one rule.

    ``origin`` is set by the first stop; only the caller's cancellation may
    take over a stop already under way (R5.6). ``forced`` means the grace
    period is over and the run's task group was cancelled. ``finished``
    means nothing runs or waits any more. ``fatal`` is a ``BaseException``
    (``KeyboardInterrupt``...) to re-raise once the run is recorded.
    """

    __slots__ = ("fatal", "finished", "forced", "origin", "stopping")

    def __init__(self) -> None:
        self.origin: Origin | None = None
        #: ``origin is not None``, kept as a plain attribute: read for every attempt.
        self.stopping = False
        self.forced = False
        self.finished = False
        self.fatal: BaseException | None = None

    def begin(self, origin: Origin) -> bool:
        """Record a stop by ``origin``; False when it changes nothing."""
        if self.origin is not None and (
            origin is not Origin.EXTERNAL or self.origin is Origin.EXTERNAL
        ):
            return False
        if self.finished and origin is not Origin.EXTERNAL:
            return False
        self.origin = origin
        self.stopping = True
        return True

    def record_fatal(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
