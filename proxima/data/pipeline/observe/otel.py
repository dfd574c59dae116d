"""OpenTelemetry tracing (optional extra ``proxima[otel]``).

One span per run, one child span per stage attempt, built from the run's
events, so tracing needs no hook inside the scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._model.enums import StageStatus
from .._model.errors import StageTimeoutException
from .._model.events import EventKind, PipelineEvent

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["OpenTelemetryListener"]

_OK_STATUSES = frozenset({StageStatus.COMPLETED, StageStatus.SKIPPED})


def _ns(wall: float) -> int:
    return int(wall * 1e9)


class OpenTelemetryListener:
    """A listener that traces runs: ``pipeline.add_listener(OpenTelemetryListener())``.

    The run span is named ``pipeline <name>``; attempt spans ``stage <id>``
    with attributes ``proxima.stage_id``, ``proxima.attempt`` and
    ``proxima.outcome``; a failed attempt's span has status ERROR and the
    exception recorded. Stops and cleanups are span events on the run span.
    Spans that a handler opens are children of its attempt's span.

    ``tracer_provider`` defaults to the global one; pass ``tracer`` to use a
    tracer you already have.
    """

    def __init__(
        self, tracer_provider: TracerProvider | None = None, *, tracer: Tracer | None = None
    ) -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ImportError(
                "OpenTelemetryListener needs opentelemetry-api: pip install 'proxima[otel]'"
            ) from exc
        from opentelemetry import context as otel_context

        self._trace = trace
        self._context = otel_context
        self._tracer = tracer or trace.get_tracer(
            "proxima.data.pipeline", tracer_provider=tracer_provider
        )
        self._runs: dict[str, Span] = {}
        self._attempts: dict[tuple[str, str], Span] = {}

    def __call__(self, event: PipelineEvent) -> None:
        kind = event.kind
        if kind is EventKind.RUN_STARTED:
            self._runs[event.pipeline_id] = self._tracer.start_span(
                f"pipeline {event.pipeline_name}",
                start_time=_ns(event.wall),
                attributes={
                    "proxima.pipeline_id": event.pipeline_id,
                    "proxima.pipeline_name": event.pipeline_name,
                },
            )
        elif kind is EventKind.STAGE_STARTED and event.stage_id is not None:
            parent = self._runs.get(event.pipeline_id)
            context = None if parent is None else self._trace.set_span_in_context(parent)
            span = self._tracer.start_span(
                f"stage {event.stage_id}",
                context=context,
                start_time=_ns(event.wall),
                attributes={
                    "proxima.stage_id": event.stage_id,
                    "proxima.attempt": event.attempt or 0,
                },
            )
            self._attempts[(event.pipeline_id, event.stage_id)] = span
            # STAGE_STARTED is delivered in the attempt's own task, right
            # before the handler is called: make the span current there so
            # spans the handler opens nest under it. The task ends with the
            # attempt, so nothing needs detaching.
            self._context.attach(self._trace.set_span_in_context(span))
        elif kind in (EventKind.STAGE_RETRYING, EventKind.STAGE_FINISHED):
            self._end_attempt(event)
        elif kind in (EventKind.STOP_REQUESTED, EventKind.CLEANUP_FINISHED):
            run = self._runs.get(event.pipeline_id)
            if run is not None:
                attributes: dict[str, Any] = {}
                if event.reason is not None:
                    attributes["proxima.reason"] = event.reason.value
                if event.stage_id is not None:
                    attributes["proxima.stage_id"] = event.stage_id
                if event.error:
                    attributes["proxima.error"] = event.error
                run.add_event(kind.value, attributes, timestamp=_ns(event.wall))
        elif kind is EventKind.RUN_FINISHED:
            run = self._runs.pop(event.pipeline_id, None)
            if run is not None:
                status = event.status.name if event.status is not None else "UNKNOWN"
                run.set_attribute("proxima.status", status)
                if event.reason is not None:
                    run.set_attribute("proxima.reason", event.reason.value)
                ok = status == "COMPLETED"
                run.set_status(self._status(ok, None if ok else f"pipeline ended {status}"))
                run.end(end_time=_ns(event.wall))

    def _end_attempt(self, event: PipelineEvent) -> None:
        assert event.stage_id is not None
        span = self._attempts.pop((event.pipeline_id, event.stage_id), None)
        if span is None:  # a stage that never started (skipped, cancelled in the queue)
            return
        if event.kind is EventKind.STAGE_RETRYING:
            timed_out = isinstance(event.exception, StageTimeoutException)
            outcome = "timed_out" if timed_out else "failed"
        else:
            status = event.status
            outcome = status.name.lower() if status is not None else "unknown"
        span.set_attribute("proxima.outcome", outcome)
        ok = event.status in _OK_STATUSES
        if event.exception is not None and not ok:
            span.record_exception(event.exception)
        span.set_status(self._status(ok, event.error))
        span.end(end_time=_ns(event.wall))

    def _status(self, ok: bool, description: str | None) -> Any:
        from opentelemetry.trace import Status, StatusCode

        if ok:
            return Status(StatusCode.OK)
        return Status(StatusCode.ERROR, description)
