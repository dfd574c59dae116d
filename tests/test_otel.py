"""OpenTelemetryListener: one span per run, one child span per stage attempt,
with status and attributes, built from the run's events on every backend."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is not installed")

from helpers import NO_RETRY, blocks_forever, flaky, hangs, make_pipeline, ok, raises, st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

from proxima.data.pipeline import (
    OpenTelemetryListener,
    Pipeline,
    PipelineConfig,
    PipelineContext,
    PipelineResult,
    PipelineStatus,
    RetryConfig,
    RetryStrategy,
    Stage,
    StageStatus,
    TimeoutConfig,
)

pytestmark = pytest.mark.anyio

LIMIT = 20
ONE_RETRY = RetryConfig(max_retries=1, strategy=RetryStrategy.IMMEDIATE)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


async def _run(
    provider: TracerProvider, *stages: Stage, **config: Any
) -> tuple[Pipeline, PipelineResult]:
    config.setdefault("name", "otel")
    pipeline = make_pipeline(*stages, **config)
    pipeline.add_listener(OpenTelemetryListener(provider))
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    return pipeline, result


def _split(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, list[ReadableSpan]]:
    spans = list(exporter.get_finished_spans())
    runs = [s for s in spans if s.name.startswith("pipeline ")]
    assert len(runs) == 1, [s.name for s in spans]
    attempts = [s for s in spans if s is not runs[0]]
    attempts.sort(key=lambda s: (s.start_time, s.attributes["proxima.attempt"]))  # type: ignore[index]
    return runs[0], attempts


def _key(span: ReadableSpan) -> tuple[Any, Any, Any]:
    a = span.attributes
    assert a is not None
    return a["proxima.stage_id"], a["proxima.attempt"], a["proxima.outcome"]


async def test_otel_one_run_span_and_one_child_span_per_attempt(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    pipeline, result = await _run(
        provider,
        st("a", ok),
        st("b", flaky([], exc=KeyError, message="first"), ["a"], retry_config=ONE_RETRY),
        st("c", ok, ["b"]),
    )
    assert result.status is PipelineStatus.COMPLETED
    run, attempts = _split(exporter)

    assert run.name == "pipeline otel"
    assert run.parent is None
    assert run.status.status_code is StatusCode.OK
    assert run.attributes is not None
    assert run.attributes["proxima.pipeline_id"] == pipeline.pipeline_id
    assert run.attributes["proxima.pipeline_name"] == "otel"
    assert run.attributes["proxima.status"] == "COMPLETED"

    assert [_key(s) for s in attempts] == [
        ("a", 1, "completed"),
        ("b", 1, "failed"),
        ("b", 2, "completed"),
        ("c", 1, "completed"),
    ]
    assert [s.name for s in attempts] == ["stage a", "stage b", "stage b", "stage c"]
    for span in attempts:
        assert span.parent is not None
        assert span.parent.span_id == run.context.span_id
        assert span.context.trace_id == run.context.trace_id
        assert run.start_time <= span.start_time <= span.end_time <= run.end_time  # type: ignore[operator]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.OK,
        StatusCode.ERROR,
        StatusCode.OK,
        StatusCode.OK,
    ]
    failed = attempts[1]
    assert failed.status.description is not None
    assert "KeyError" in failed.status.description
    (exc_event,) = [e for e in failed.events if e.name == "exception"]
    assert exc_event.attributes is not None
    assert exc_event.attributes["exception.type"] == "KeyError"


async def test_otel_failed_run_is_error_with_the_stop_as_span_event(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    _, result = await _run(
        provider, st("bad", raises(ValueError, "boom")), st("after", ok, ["bad"])
    )
    assert result.status is PipelineStatus.FAILED
    assert result.stage_results["after"].status is StageStatus.SKIPPED
    run, attempts = _split(exporter)

    # The skipped stage never started: no attempt span for it.
    assert [_key(s) for s in attempts] == [("bad", 1, "failed")]
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[0].status.description == "ValueError: boom"
    assert [e.name for e in attempts[0].events] == ["exception"]

    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes is not None
    assert run.attributes["proxima.status"] == "FAILED"
    assert run.attributes["proxima.reason"] == "error"
    stops = [e for e in run.events if e.name == "stop_requested"]
    assert len(stops) == 1
    assert stops[0].attributes is not None
    assert stops[0].attributes["proxima.reason"] == "error"


async def test_otel_partially_completed_run_is_not_ok(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    _, result = await _run(
        provider, st("a", ok), st("opt", raises(ValueError, "boom"), critical=False)
    )
    assert result.status is PipelineStatus.PARTIALLY_COMPLETED
    run, attempts = _split(exporter)
    assert run.status.status_code is StatusCode.ERROR
    assert sorted(_key(s) for s in attempts) == [("a", 1, "completed"), ("opt", 1, "failed")]


async def test_otel_timed_out_attempts(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    _, result = await _run(
        provider, st("slow", hangs, timeout_seconds=0.02, retry_config=ONE_RETRY)
    )
    assert result.stage_results["slow"].status is StageStatus.TIMED_OUT
    run, attempts = _split(exporter)
    assert [_key(s) for s in attempts] == [("slow", 1, "timed_out"), ("slow", 2, "timed_out")]
    assert all(s.status.status_code is StatusCode.ERROR for s in attempts)
    assert run.status.status_code is StatusCode.ERROR


async def test_otel_stop_with_cleanup(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    started = anyio.Event()

    def bad_cleanup(ctx: PipelineContext) -> None:
        raise RuntimeError("cleanup broke")

    pipeline = Pipeline(
        PipelineConfig(name="otel", retry=NO_RETRY, timeout=TimeoutConfig(grace_period_seconds=0))
    )
    pipeline.add_stages(
        [st("w", blocks_forever(started), cleanup_handler=bad_cleanup), st("n", ok, ["w"])]
    )
    pipeline.add_listener(OpenTelemetryListener(provider))
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pipeline.execute)
            await started.wait()
            pipeline.cancel()

    assert pipeline.result is not None
    assert pipeline.result.status is PipelineStatus.CANCELLED
    run, attempts = _split(exporter)
    assert [_key(s) for s in attempts] == [("w", 1, "cancelled")]
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes is not None
    assert run.attributes["proxima.status"] == "CANCELLED"
    assert run.attributes["proxima.reason"] == "user_requested"
    events = {e.name: e.attributes for e in run.events}
    assert events["stop_requested"] is not None
    assert events["stop_requested"]["proxima.reason"] == "user_requested"
    cleanup = events["cleanup_finished"]
    assert cleanup is not None
    assert cleanup["proxima.stage_id"] == "w"
    assert cleanup["proxima.error"] == "RuntimeError: cleanup broke"


async def test_otel_each_run_is_its_own_trace(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    pipeline = Pipeline(PipelineConfig(name="otel")).add_stages([st("a", ok)])
    pipeline.add_listener(OpenTelemetryListener(provider))
    with anyio.fail_after(LIMIT):
        await pipeline.execute()
        await pipeline.execute()
    spans = exporter.get_finished_spans()
    runs = [s for s in spans if s.name == "pipeline otel"]
    assert len(runs) == 2
    assert len(spans) == 4
    assert runs[0].context.trace_id != runs[1].context.trace_id
    for run in runs:
        children = [
            s for s in spans if s.parent is not None and s.parent.span_id == run.context.span_id
        ]
        assert [s.name for s in children] == ["stage a"]
