"""Regression tests for bugs found after the first version, one per bug."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from proxima.data.pipeline import (
    CancellationReason,
    PipelineBuilder,
    PipelineContext,
    PipelineStatus,
    Stage,
)


def test_regression_r5_6_second_task_cancel_during_cleanup_still_records_result() -> None:
    """asyncio only: a second ``Task.cancel()`` reaches into the shielded
    cleanup (anyio cannot shield native cancels). The run must still record
    its result, run the remaining cleanups and propagate the cancellation."""
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
            .add_stage(Stage("b", "B", sleeper, cleanup_handler=cleanup_of("b", 5)))
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
        assert "b" in result.metadata["cleanup_errors"]
        assert log[-2:] == ["a start", "a end"]  # the remaining cleanup still ran
        assert not pipeline.is_running

    asyncio.run(main())


@pytest.mark.anyio
async def test_regression_r4_6_r7_6_stop_during_retry_delay_counts_only_time_waited() -> None:
    """A stop that cuts a 30 s retry delay short ends the stage CANCELLED at
    once, and ``retry_delay_ms`` counts the time actually waited."""
    from proxima.data.pipeline import RetryConfig, RetryStrategy, StageStatus

    pipeline = PipelineBuilder("delay-stop").with_parallel(max_parallel=1)

    async def flaky(ctx: PipelineContext, _: Any) -> None:
        raise OSError("down")

    async def other(ctx: PipelineContext, _: Any) -> None:
        ctx.cancel()  # runs while flaky waits out its delay

    retry = RetryConfig(strategy=RetryStrategy.CONSTANT, initial_delay_seconds=30)
    built = (
        pipeline.with_timeout(grace_period=None)
        .add_stage(Stage("flaky", "F", flaky, retry_config=retry))
        .add_stage("other", "O", other)
        .build()
    )
    with anyio.fail_after(10):
        result = await built.execute()
    flaky_result = result.stage_results["flaky"]
    assert flaky_result.status is StageStatus.CANCELLED
    assert flaky_result.metrics["retry_delay_ms"] < 10_000
    assert result.status is PipelineStatus.CANCELLED
