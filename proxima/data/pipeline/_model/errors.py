"""The exception hierarchy.

Every exception keeps the constructor's positional arguments in ``args`` and
builds its message in ``__str__``, so a ``pickle`` round trip (used by process
pools and task queues) restores it whole, including ``.result``. Messages are
built with :mod:`.text`, so ``str()`` of these errors never raises, whatever
values they were given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .enums import CancellationReason
from .text import safe_repr, text_of

if TYPE_CHECKING:
    from .results import PipelineResult

__all__ = [
    "DependencyFailedException",
    "PipelineAlreadyRunningError",
    "PipelineCancelledException",
    "PipelineException",
    "PipelineTimeoutException",
    "PipelineValidationError",
    "StageExecutionException",
    "StageTimeoutException",
]


def _seconds(value: object) -> str:
    """``value`` as in ``"2.5s"``; a message must not fail on a bad value."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:g}s"
    return f"{safe_repr(value)}s"


class PipelineException(Exception):
    """Base class of every error this library raises on purpose.

    ``result`` is the finished run's :class:`PipelineResult` when the error was
    raised for a run (``raise_on_failure=True`` or ``raise_for_status()``),
    else ``None``.
    """

    result: PipelineResult | None = None

    def __str__(self) -> str:
        return text_of(self.args[0]) if self.args else type(self).__name__


class PipelineValidationError(PipelineException, ValueError):
    """The stages do not form a valid pipeline (duplicate id, unknown or
    self dependency, cycle). Raised before any stage runs."""

    def __init__(self, message: str, *, stage_id: str | None = None) -> None:
        super().__init__(message)
        self.stage_id = stage_id


class PipelineAlreadyRunningError(PipelineException, RuntimeError):
    """``execute()`` was called on a pipeline that is still running."""


class StageTimeoutException(PipelineException, TimeoutError):
    """One attempt of a stage ran past its timeout and was cancelled."""

    def __init__(self, stage_id: str, timeout_seconds: float) -> None:
        super().__init__(stage_id, timeout_seconds)
        self.stage_id = stage_id
        self.timeout_seconds = timeout_seconds

    def __str__(self) -> str:
        return f"stage {safe_repr(self.stage_id)} timed out after {_seconds(self.timeout_seconds)}"


class PipelineTimeoutException(PipelineException, TimeoutError):
    """The whole run went past ``pipeline_timeout_seconds``."""

    def __init__(self, timeout_seconds: float) -> None:
        super().__init__(timeout_seconds)
        self.timeout_seconds = timeout_seconds

    def __str__(self) -> str:
        return f"pipeline timed out after {_seconds(self.timeout_seconds)}"


class PipelineCancelledException(PipelineException):
    """The run was stopped; ``reason`` says why.

    A handler may raise it itself (``ctx.check_cancelled()`` does): the stage
    then ends CANCELLED, is not retried, and the run stops with ``reason``.
    """

    def __init__(
        self,
        reason: CancellationReason = CancellationReason.USER_REQUESTED,
        message: str | None = None,
    ) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        message = self.message
        if message is not None and not (isinstance(message, str) and not message):
            return text_of(message)
        reason = self.reason
        why = reason.value if isinstance(reason, CancellationReason) else safe_repr(reason)
        return f"pipeline cancelled ({why})"


class StageExecutionException(PipelineException):
    """A stage failed; ``cause`` is the exception its handler raised."""

    def __init__(self, stage_id: str, error: str, cause: BaseException | None = None) -> None:
        super().__init__(stage_id, error, cause)
        self.stage_id = stage_id
        self.error = error
        self.cause = cause

    def __str__(self) -> str:
        return f"stage {safe_repr(self.stage_id)} failed: {text_of(self.error)}"


class DependencyFailedException(PipelineException):
    """A stage was skipped because ``failed_dependency`` (the root of the
    failure, possibly several levels up) did not complete."""

    def __init__(self, stage_id: str, failed_dependency: str) -> None:
        super().__init__(stage_id, failed_dependency)
        self.stage_id = stage_id
        self.failed_dependency = failed_dependency

    def __str__(self) -> str:
        return (
            f"stage {safe_repr(self.stage_id)} skipped: "
            f"dependency {safe_repr(self.failed_dependency)} failed"
        )
