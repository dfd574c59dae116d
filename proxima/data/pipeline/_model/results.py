"""Result records of a run: :class:`StageResult` and :class:`PipelineResult`.

They are plain outputs, so they carry no validators (building 100 000 of
them must stay cheap); ``to_dict()`` output always survives ``json.dumps``.
"""

from __future__ import annotations

import enum
import os
import pathlib
from typing import Any

import attrs

from .enums import CancellationReason, PipelineStatus, StageStatus
from .errors import (
    DependencyFailedException,
    PipelineCancelledException,
    PipelineException,
    PipelineTimeoutException,
    StageExecutionException,
    StageTimeoutException,
)

__all__ = ["PipelineResult", "StageResult", "jsonable"]

_FAILED = (StageStatus.FAILED, StageStatus.TIMED_OUT)


def jsonable(value: Any) -> Any:
    """``value`` made safe for ``json.dumps``: containers recursed into,
    enums as names, exceptions as text, anything else unknown as ``repr``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(item) for k, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return repr(value)


def _ended(result: StageResult) -> float:
    return result.end_time if result.end_time is not None else float("inf")


def _duration_ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start) * 1000.0


@attrs.define(slots=True)
class StageResult:
    """What happened to one stage.

    ``start_time``/``end_time`` are wall-clock seconds (``time.time()``);
    ``start_time`` is ``None`` for a stage that never started. ``exception``
    is the handler's own exception for FAILED, a ``StageTimeoutException``
    for TIMED_OUT, a ``DependencyFailedException`` for SKIPPED and a
    ``PipelineCancelledException`` for CANCELLED.
    """

    stage_id: str
    stage_name: str
    status: StageStatus
    result: Any = None
    error: str | None = None
    exception: BaseException | None = None
    start_time: float | None = None
    end_time: float | None = None
    attempt_count: int = 0
    metrics: dict[str, Any] = attrs.field(factory=dict)
    #: Whether the stage was critical (its shortfall fails the run).
    critical: bool = True
    #: For a stage not run but restored from a store (R13.3, R13.4): the id
    #: of the run whose stored value stands in for it; else ``None``.
    restored_from: str | None = None

    @property
    def duration_ms(self) -> float | None:
        """Milliseconds from first start to end, or ``None`` if never started."""
        return _duration_ms(self.start_time, self.end_time)

    @property
    def is_success(self) -> bool:
        """True when the stage COMPLETED."""
        return self.status is StageStatus.COMPLETED

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as names, exceptions as text)."""
        return {
            "stage_id": self.stage_id,
            "stage_name": self.stage_name,
            "status": self.status.name,
            "result": jsonable(self.result),
            "error": self.error,
            "exception": jsonable(self.exception),
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration_ms": self.duration_ms,
            "attempt_count": self.attempt_count,
            "metrics": jsonable(self.metrics),
            "critical": self.critical,
            "restored_from": self.restored_from,
        }


@attrs.define(slots=True)
class PipelineResult:
    """What happened to a whole run; ``stage_results`` holds every stage in
    the order the stages were added."""

    pipeline_id: str
    pipeline_name: str
    status: PipelineStatus
    stage_results: dict[str, StageResult] = attrs.field(factory=dict)
    start_time: float | None = None
    end_time: float | None = None
    cancellation_reason: CancellationReason | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)
    #: Stage id -> the ids it depends on; lets a result draw its own graph.
    dependencies: dict[str, tuple[str, ...]] = attrs.field(factory=dict)
    #: The run's id in its store (R13.2); ``None`` for a run without a store.
    run_id: str | None = None

    @property
    def duration_ms(self) -> float | None:
        """Milliseconds from the start of ``execute()`` to the end of the run,
        cleanup included."""
        return _duration_ms(self.start_time, self.end_time)

    def _ids(self, *statuses: StageStatus) -> list[str]:
        return [sid for sid, r in self.stage_results.items() if r.status in statuses]

    @property
    def successful_stages(self) -> list[str]:
        """Ids of COMPLETED stages, in stage order."""
        return self._ids(StageStatus.COMPLETED)

    @property
    def failed_stages(self) -> list[str]:
        """Ids of FAILED or TIMED_OUT stages, in stage order."""
        return self._ids(*_FAILED)

    @property
    def skipped_stages(self) -> list[str]:
        """Ids of SKIPPED stages, in stage order."""
        return self._ids(StageStatus.SKIPPED)

    @property
    def cancelled_stages(self) -> list[str]:
        """Ids of CANCELLED stages, in stage order."""
        return self._ids(StageStatus.CANCELLED)

    @property
    def is_success(self) -> bool:
        """True when the run is COMPLETED (every stage completed)."""
        return self.status is PipelineStatus.COMPLETED

    def summary(self) -> str:
        """A readable multi-line report: totals, then one line per stage."""
        duration = self.duration_ms
        took = f" in {duration:.1f} ms" if duration is not None else ""
        lines = [f"Pipeline {self.pipeline_name!r} [{self.pipeline_id}]: {self.status.name}{took}"]
        if self.cancellation_reason is not None:
            lines.append(f"  stopped early: {self.cancellation_reason.value}")
        counts: dict[str, int] = {}
        for r in self.stage_results.values():
            counts[r.status.name] = counts.get(r.status.name, 0) + 1
        totals = ", ".join(f"{n} {name.lower()}" for name, n in counts.items())
        lines.append(f"  {len(self.stage_results)} stages" + (f": {totals}" if totals else ""))
        width = max((len(sid) for sid in self.stage_results), default=0)
        for sid, r in self.stage_results.items():
            ms = r.duration_ms
            line = f"  {sid:<{width}}  {r.status.name:<9}"
            line += f"  {ms:9.1f} ms" if ms is not None else f"  {'-':>9}   "
            line += f"  attempts={r.attempt_count}"
            if r.error and r.status is not StageStatus.COMPLETED:
                line += f"  {r.error}"
            lines.append(line)
        for sid, err in self.metadata.get("cleanup_errors", {}).items():
            lines.append(f"  cleanup of {sid} failed: {err}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; stage results nested under ``stage_results``."""
        return {
            "pipeline_id": self.pipeline_id,
            "pipeline_name": self.pipeline_name,
            "status": self.status.name,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration_ms": self.duration_ms,
            "cancellation_reason": jsonable(self.cancellation_reason),
            "successful_stages": self.successful_stages,
            "failed_stages": self.failed_stages,
            "stage_results": {sid: r.to_dict() for sid, r in self.stage_results.items()},
            "metadata": jsonable(self.metadata),
            "dependencies": {sid: list(deps) for sid, deps in self.dependencies.items()},
            "run_id": self.run_id,
        }

    def to_mermaid(self) -> str:
        """The run's graph as a Mermaid flowchart, nodes coloured by final status."""
        from ..observe.render import result_mermaid  # presentation, loaded on demand

        return result_mermaid(self)

    def to_html(self, path: str | os.PathLike[str] | None = None) -> str:
        """A self-contained HTML report: the graph coloured by status, a
        timeline of every attempt (slot wait, attempts, retry delays,
        cleanup) with hover titles, and the summary table. Written to
        ``path`` when given; the HTML is returned either way."""
        from ..observe.report import html_report  # presentation, loaded on demand

        document = html_report(self)
        if path is not None:
            pathlib.Path(path).write_text(document, encoding="utf-8")
        return document

    def raise_for_status(self) -> None:
        """Raise unless the run COMPLETED; the exception carries ``.result``.

        Cancelled -> ``PipelineCancelledException(reason)``; pipeline timeout ->
        ``PipelineTimeoutException``; otherwise the stage that failed first in
        time (``StageTimeoutException`` or ``StageExecutionException`` with the
        original as ``cause``); otherwise a critical stage's
        ``DependencyFailedException``.
        """
        if self.status is PipelineStatus.COMPLETED:
            return
        exc = self._failure()
        exc.result = self
        cause = exc.cause if isinstance(exc, StageExecutionException) else None
        raise exc from cause

    def _failure(self) -> PipelineException:
        reason = self.cancellation_reason
        if self.status is PipelineStatus.CANCELLED:
            return PipelineCancelledException(reason or CancellationReason.USER_REQUESTED)
        if reason is CancellationReason.TIMEOUT and "pipeline_timeout_seconds" in self.metadata:
            return PipelineTimeoutException(self.metadata["pipeline_timeout_seconds"])
        stages = list(self.stage_results.values())
        failed = [r for r in stages if r.status in _FAILED]
        if self.status is PipelineStatus.FAILED and not any(r.critical for r in failed):
            # Explain the FAILED status: a critical stage skipped after an
            # optional dependency failed, if there is one.
            skipped = [
                r
                for r in stages
                if r.critical and isinstance(r.exception, DependencyFailedException)
            ]
            if skipped:
                first_skipped = min(skipped, key=_ended)
                exc = first_skipped.exception
                assert isinstance(exc, DependencyFailedException)
                return DependencyFailedException(first_skipped.stage_id, exc.failed_dependency)
        if self.status is PipelineStatus.FAILED and any(r.critical for r in failed):
            failed = [r for r in failed if r.critical]
        if failed:
            first = min(failed, key=_ended)  # min is stable: ties go to stage order
            if isinstance(first.exception, StageTimeoutException):
                return StageTimeoutException(first.stage_id, first.exception.timeout_seconds)
            return StageExecutionException(
                first.stage_id, first.error or "failed", cause=first.exception
            )
        return PipelineException(f"pipeline {self.pipeline_name!r} ended {self.status.name}")
