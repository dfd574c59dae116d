"""Result records of a run: :class:`StageResult` and :class:`PipelineResult`.

They are plain outputs, so they carry no validators (building 100 000 of
them must stay cheap); ``to_dict()`` output always survives ``json.dumps``.
"""

from __future__ import annotations

import enum
import heapq
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
from .text import describe, safe_repr, shorten, text_of

__all__ = ["RESERVED_METRICS", "SUMMARY_TABLE_LIMIT", "PipelineResult", "StageResult", "jsonable"]

#: Metric names the engine fills in itself (R7.6); ``record_metric`` refuses them.
RESERVED_METRICS = frozenset({"queue_wait_ms", "retry_delay_ms", "attempts"})

_FAILED = (StageStatus.FAILED, StageStatus.TIMED_OUT)
#: Longest text of any one field in a result's repr.
_REPR_LIMIT = 80
#: Up to this many stages, ``summary()`` lists every stage by default.
SUMMARY_TABLE_LIMIT = 20
#: How many failed stages (and cleanup errors) a digest lists.
_DIGEST_FAILURES = 10
#: How many of the slowest stages a digest lists.
_DIGEST_SLOWEST = 5
#: Longest error text on one summary line.
_LINE_LIMIT = 200


#: Containers nested deeper than this are given as text (``json.dumps``
#: itself gives up at about the interpreter's recursion limit).
_MAX_DEPTH = 100
#: Ints too long for ``json.dumps`` (Python caps int -> str at 4300 digits).
_MAX_INT_BITS = 14_000


def jsonable(value: Any) -> Any:
    """``value`` made safe for ``json.dumps``: containers recursed into,
    enums as names, exceptions as text, anything else unknown as ``repr``.

    Never raises: a ``__repr__`` or ``__str__`` that raises, a container
    that contains itself (``<cycle: list>``) or nests too deep becomes a
    marker string instead (R7.3).
    """
    return _jsonable(value, set(), 0)


def _jsonable(value: Any, path: set[int], depth: int) -> Any:
    if value is None:
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        bits = value.bit_length()
        return value if bits <= _MAX_INT_BITS else f"<int of {bits} bits>"
    if isinstance(value, BaseException):
        return describe(value)
    if not isinstance(value, (dict, list, tuple)):
        return safe_repr(value, limit=None)
    key = id(value)
    if key in path:
        return f"<cycle: {type(value).__name__}>"
    if depth >= _MAX_DEPTH:
        return safe_repr(value)
    path.add(key)
    try:
        if isinstance(value, dict):
            return {_key_text(k): _jsonable(item, path, depth + 1) for k, item in value.items()}
        return [_jsonable(item, path, depth + 1) for item in value]
    except Exception:  # a broken container subclass: its repr is all we can give
        return safe_repr(value, limit=None)
    finally:
        path.discard(key)


def _key_text(key: Any) -> str:
    return key if isinstance(key, str) else text_of(key)


def _one_line(text: Any) -> str:
    """``text`` on one line, cut to ``_LINE_LIMIT``: a summary line stays a line."""
    return shorten(" ".join(text_of(text).split()), _LINE_LIMIT)


def _duration_key(result: StageResult) -> float:
    duration = result.duration_ms
    return duration if duration is not None else -1.0


def _table(results: list[StageResult], *, indent: str) -> list[str]:
    """One aligned line per stage: id, status, duration, attempts, error."""
    width = max((len(r.stage_id) for r in results), default=0)
    lines = []
    for r in results:
        ms = r.duration_ms
        line = f"{indent}{r.stage_id:<{width}}  {_name(r.status):<9}"
        line += f"  {ms:9.1f} ms" if ms is not None else f"  {'-':>9}   "
        line += f"  attempts={r.attempt_count}"
        if r.restored_from is not None:
            line += f"  restored from run {text_of(r.restored_from)}"
        if r.error and r.status is not StageStatus.COMPLETED:
            line += f"  {_one_line(r.error)}"
        lines.append(line)
    return lines


def _ended(result: StageResult) -> float:
    return result.end_time if result.end_time is not None else float("inf")


def _name(status: Any) -> str:
    return status.name if isinstance(status, enum.Enum) else safe_repr(status, _REPR_LIMIT)


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

    def __repr__(self) -> str:
        # Short whatever the result holds: a repr is for logs and debuggers.
        text = (
            f"StageResult(stage_id={safe_repr(self.stage_id, _REPR_LIMIT)}, "
            f"status={_name(self.status)}, attempt_count={self.attempt_count!r}, "
            f"result={safe_repr(self.result, _REPR_LIMIT)}"
        )
        if self.error is not None:
            text += f", error={safe_repr(self.error, _REPR_LIMIT)}"
        if self.restored_from is not None:
            text += f", restored_from={safe_repr(self.restored_from, _REPR_LIMIT)}"
        return text + ")"

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

    def __repr__(self) -> str:
        # Short whatever the stages hold: counts, never the stage results.
        counts = ", ".join(f"{n} {name}" for name, n in self._counts().items())
        return (
            f"PipelineResult(pipeline_id={safe_repr(self.pipeline_id, _REPR_LIMIT)}, "
            f"pipeline_name={safe_repr(self.pipeline_name, _REPR_LIMIT)}, "
            f"status={_name(self.status)}, "
            f"stages={len(self.stage_results)}" + (f" ({counts})" if counts else "") + ", "
            f"cancellation_reason={_name(self.cancellation_reason)})"
        )

    def _counts(self) -> dict[str, int]:
        """Lower-case status name -> number of stages, in ``StageStatus`` order."""
        seen: dict[StageStatus, int] = {}
        for r in self.stage_results.values():
            seen[r.status] = seen.get(r.status, 0) + 1
        return {s.name.lower(): seen[s] for s in StageStatus if s in seen}

    def summary(self, full: bool | None = None) -> str:
        """A readable multi-line report (R7.3) that stays short for big runs.

        It always gives the headline (name, id, status, duration), why the
        run stopped early, and the number of stages in each status. Then
        ``full=True`` lists every stage, one line each, while ``full=False``
        gives a digest: the failed stages with their errors (the first
        10), and the 5 slowest stages. The default (``None``) is the full
        list for runs of at most 20 stages and the digest beyond, so
        ``print(result.summary())`` of a 20 000-stage run prints a screen,
        not 20 000 lines. Failed cleanups come last.
        """
        stages = self.stage_results
        if full is None:
            full = len(stages) <= SUMMARY_TABLE_LIMIT
        duration = self.duration_ms
        took = f" in {duration:.1f} ms" if duration is not None else ""
        lines = [
            f"Pipeline {safe_repr(self.pipeline_name)} [{text_of(self.pipeline_id)}]: "
            f"{_name(self.status)}{took}"
        ]
        if self.cancellation_reason is not None:
            reason = self.cancellation_reason
            why = reason.value if isinstance(reason, enum.Enum) else safe_repr(reason)
            lines.append(f"  stopped early: {why}")
        totals = ", ".join(f"{n} {name}" for name, n in self._counts().items())
        lines.append(f"  {len(stages)} stages" + (f": {totals}" if totals else ""))
        restored = sum(1 for r in stages.values() if r.restored_from is not None)
        if restored:
            lines.append(f"  {restored} restored from a store, not run again")
        if full:
            lines += _table(list(stages.values()), indent="  ")
        else:
            lines += self._digest()
        cleanup_errors = self.metadata.get("cleanup_errors")
        if isinstance(cleanup_errors, dict):
            shown = list(cleanup_errors.items())
            if not full:
                shown = shown[:_DIGEST_FAILURES]
            for sid, err in shown:
                lines.append(f"  cleanup of {text_of(sid)} failed: {_one_line(err)}")
            if len(shown) < len(cleanup_errors):
                lines.append(f"  ... and {len(cleanup_errors) - len(shown)} more failed cleanups")
        return "\n".join(lines)

    def _digest(self) -> list[str]:
        """The failures (first few, with errors) and the slowest stages."""
        lines: list[str] = []
        failed = [r for r in self.stage_results.values() if r.status in _FAILED]
        if failed:
            lines.append(f"  failed ({len(failed)}):")
            lines += _table(failed[:_DIGEST_FAILURES], indent="    ")
            if len(failed) > _DIGEST_FAILURES:
                lines.append(f"    ... and {len(failed) - _DIGEST_FAILURES} more")
        timed = [r for r in self.stage_results.values() if r.duration_ms is not None]
        slowest = heapq.nlargest(_DIGEST_SLOWEST, timed, key=_duration_key)
        if slowest:
            lines.append("  slowest:")
            lines += _table(slowest, indent="    ")
        if self.stage_results:
            lines.append(f"  (summary(full=True) lists all {len(self.stage_results)} stages)")
        return lines

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
