"""Regression tests for bugs found after the first version, one per bug."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from helpers import raises

from proxima.data.pipeline import (
    CancellationReason,
    PipelineBuilder,
    PipelineContext,
    PipelineStatus,
    Stage,
)


def test_regression_r5_6_second_task_cancel_during_cleanup_still_records_result() -> None:
    """asyncio only: a second ``Task.cancel()`` used to reach into the
    shielded cleanup (anyio cannot shield a task from its own native
    cancellation). Cleanups now run in a task of their own: they finish, the
    result is recorded, then the cancellation propagates."""
    log: list[str] = []

    async def sleeper(ctx: PipelineContext, _: Any) -> None:
        await anyio.sleep(10)

    cleanup_started: dict[str, asyncio.Event] = {}

    def cleanup_of(name: str, seconds: float) -> Any:
        async def cleanup(ctx: PipelineContext) -> None:
            log.append(f"{name} start")
            cleanup_started[name].set()
            await anyio.sleep(seconds)
            log.append(f"{name} end")

        return cleanup

    async def main() -> None:
        started = asyncio.Event()
        cleanup_started.update(a=asyncio.Event(), b=asyncio.Event())

        async def first(ctx: PipelineContext, _: Any) -> None:
            started.set()
            await anyio.sleep(10)

        pipeline = (
            PipelineBuilder("recancel")
            .add_stage(Stage("a", "A", first, cleanup_handler=cleanup_of("a", 0.01)))
            .add_stage(Stage("b", "B", sleeper, cleanup_handler=cleanup_of("b", 0.05)))
            .build()
        )
        task = asyncio.create_task(pipeline.execute())
        await started.wait()
        await asyncio.sleep(0.01)
        task.cancel()
        await cleanup_started["b"].wait()
        task.cancel()  # lands inside b's cleanup
        with pytest.raises(asyncio.CancelledError):
            await task
        result = pipeline.result
        assert result is not None
        assert result.status is PipelineStatus.CANCELLED
        assert result.cancellation_reason is CancellationReason.EXTERNAL
        assert "cleanup_errors" not in result.metadata
        assert log == ["b start", "b end", "a start", "a end"]
        assert not pipeline.is_running

    asyncio.run(main())


@pytest.mark.anyio
async def test_regression_r4_6_r7_6_stop_during_retry_delay_counts_only_time_waited() -> None:
    """A stop that cuts a 30 s retry delay short ends the stage CANCELLED at
    once, and ``retry_delay_ms`` counts the time actually waited."""
    from proxima.data.pipeline import RetryConfig, RetryStrategy, StageStatus

    pipeline = PipelineBuilder("delay-stop").with_parallel(max_parallel=1)

    async def other(ctx: PipelineContext, _: Any) -> None:
        ctx.cancel()  # runs while flaky waits out its delay

    retry = RetryConfig(strategy=RetryStrategy.CONSTANT, initial_delay_seconds=30)
    built = (
        pipeline.with_timeout(grace_period=None)
        .add_stage(Stage("flaky", "F", raises(OSError, "down"), retry_config=retry))
        .add_stage("other", "O", other)
        .build()
    )
    with anyio.fail_after(10):
        result = await built.execute()
    flaky_result = result.stage_results["flaky"]
    assert flaky_result.status is StageStatus.CANCELLED
    assert flaky_result.metrics["retry_delay_ms"] < 10_000
    assert result.status is PipelineStatus.CANCELLED


_SIGINT_SCRIPT = """
import os, signal, sys, threading
import anyio
from proxima.data.pipeline import PipelineBuilder, Stage

log = []

async def slow(ctx, _):
    threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
    await anyio.sleep(30)

async def cleanup(ctx):
    log.append("cleanup")

pipeline = PipelineBuilder("ctrl-c").add_stage(Stage("s", "S", slow, cleanup_handler=cleanup))
pipeline = pipeline.build()
try:
    pipeline.run_sync(backend=sys.argv[1])
except KeyboardInterrupt as exc:
    result = pipeline.result
    print(type(exc).__name__, log, result.status.name, result.cancellation_reason.name)
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_regression_r1_4_r5_6_ctrl_c_is_re_raised_bare_after_cleanup(backend: str) -> None:
    """A real SIGINT that lands in the scheduler's own task (not a stage) on
    trio used to escape as ``BaseExceptionGroup([KeyboardInterrupt])`` with no
    cleanup and no result."""
    import subprocess
    import sys

    if backend == "asyncio" and sys.version_info < (3, 11):
        pytest.skip("before 3.11, asyncio.run raises Ctrl-C in the loop, outside any task")

    done = subprocess.run(
        [sys.executable, "-c", _SIGINT_SCRIPT, backend],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.split() == [
        "KeyboardInterrupt",
        "['cleanup']",
        "CANCELLED",
        "EXTERNAL",
    ], done.stderr


@pytest.mark.anyio
async def test_regression_r4_4_blocking_sync_handler_past_its_deadline_times_out() -> None:
    """A sync handler cannot be interrupted, but one that overran its
    timeout must not count as COMPLETED."""
    import time

    from proxima.data.pipeline import StageStatus

    def blocking(ctx: PipelineContext, _: Any) -> str:
        time.sleep(0.1)
        return "late"

    pipeline = (
        PipelineBuilder("blocking")
        .with_retry(max_retries=0)
        .add_stage("b", "B", blocking, timeout_seconds=0.02)
        .build()
    )
    result = await pipeline.execute()
    assert result.stage_results["b"].status is StageStatus.TIMED_OUT


@pytest.mark.anyio
async def test_regression_r2_5_listener_that_cancels_keeps_event_order_for_all() -> None:
    """A listener that stops the run used to make later listeners see the
    STOP_REQUESTED event before the event being delivered."""
    from proxima.data.pipeline import EventKind, PipelineEvent

    async def slow(ctx: PipelineContext, _: Any) -> None:
        await anyio.sleep(5)

    pipeline = (
        PipelineBuilder("reentrant").with_timeout(grace_period=0).add_stage("a", "A", slow).build()
    )

    def stopper(event: PipelineEvent) -> None:
        if event.kind is EventKind.STAGE_STARTED:
            pipeline.cancel()

    seen: list[PipelineEvent] = []
    pipeline.add_listener(stopper)
    pipeline.add_listener(seen.append)
    await pipeline.execute()
    kinds = [e.kind for e in seen]
    assert kinds.index(EventKind.STAGE_STARTED) < kinds.index(EventKind.STOP_REQUESTED)
    stamps = [e.monotonic for e in seen]
    assert stamps == sorted(stamps)


@pytest.mark.anyio
async def test_regression_otel_handler_spans_nest_under_the_attempt_span() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from proxima.data.pipeline import OpenTelemetryListener

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    async def handler(ctx: PipelineContext, _: Any) -> None:
        with tracer.start_as_current_span("inner"):
            await anyio.lowlevel.checkpoint()

    pipeline = PipelineBuilder("otel").add_stage("a", "A", handler).build()
    pipeline.add_listener(OpenTelemetryListener(provider))
    await pipeline.execute()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    inner_parent = spans["inner"].parent
    assert inner_parent is not None
    assert inner_parent.span_id == spans["stage a"].context.span_id
