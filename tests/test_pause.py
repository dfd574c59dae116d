"""R9: pause and resume."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from helpers import executing, finished, make_pipeline, recording, st, waits_for

from proxima.data.pipeline import (
    CancellationReason,
    PipelineConfig,
    PipelineContext,
    PipelineStatus,
    RetryConfig,
    RetryStrategy,
    StageStatus,
    TimeoutConfig,
)

pytestmark = pytest.mark.anyio


# -- R9.1 pause holds new attempts ----------------------------------------------------------------


async def test_r9_1_pause_holds_new_stages_while_running_ones_go_on() -> None:
    started, go = anyio.Event(), anyio.Event()
    calls: list[str] = []
    pipeline = make_pipeline(
        st("a", waits_for(started, go, calls, "a")),
        st("b", recording(calls, "b"), ["a"]),
    )
    async with executing(pipeline):
        await started.wait()
        assert pipeline.status is PipelineStatus.RUNNING
        pipeline.pause()
        assert pipeline.status is PipelineStatus.PAUSED  # type: ignore[comparison-overlap]
        go.set()  # the running stage goes on and finishes
        await anyio.wait_all_tasks_blocked()
        assert calls == ["a"]
        live = pipeline.stage_statuses()
        assert live["a"] is StageStatus.COMPLETED
        assert live["b"] is StageStatus.QUEUED
        assert pipeline.status is PipelineStatus.PAUSED
        assert pipeline.is_running
        pipeline.resume()
    assert calls == ["a", "b"]
    assert pipeline.result is not None
    assert pipeline.result.status is PipelineStatus.COMPLETED


async def test_r9_1_pause_holds_a_retry_attempt() -> None:
    started, go = anyio.Event(), anyio.Event()
    calls: list[int] = []

    async def fails_once(ctx: Any, _: Any) -> str:
        calls.append(len(calls) + 1)
        if len(calls) == 1:
            started.set()
            await go.wait()
            raise ValueError("first attempt fails")
        return "second attempt"

    pipeline = make_pipeline(
        st("s", fails_once),
        retry=RetryConfig(max_retries=2, strategy=RetryStrategy.IMMEDIATE),
    )
    async with executing(pipeline):
        await started.wait()
        pipeline.pause()
        go.set()
        await anyio.wait_all_tasks_blocked()
        assert calls == [1]  # the retry waits for resume
        assert pipeline.stage_statuses()["s"] is StageStatus.QUEUED
        pipeline.resume()
    assert calls == [1, 2]
    result = finished(pipeline)
    assert result.stage_results["s"].status is StageStatus.COMPLETED
    assert result.stage_results["s"].attempt_count == 2


async def test_r9_1_ctx_pause_from_a_stage_holds_its_dependents() -> None:
    paused = anyio.Event()
    calls: list[str] = []

    async def pauses(ctx: PipelineContext, _: Any) -> str:
        calls.append("a")
        ctx.pause()
        paused.set()
        return "a"

    pipeline = make_pipeline(st("a", pauses), st("b", recording(calls, "b"), ["a"]))
    async with executing(pipeline):
        await paused.wait()
        await anyio.wait_all_tasks_blocked()
        assert calls == ["a"]
        assert pipeline.status is PipelineStatus.PAUSED
        assert pipeline.stage_statuses()["b"] is StageStatus.QUEUED
        pipeline.resume()
    assert calls == ["a", "b"]
    assert pipeline.result is not None
    assert pipeline.result.status is PipelineStatus.COMPLETED


async def test_r9_1_pause_from_a_stage_holds_a_sibling_that_already_got_a_slot() -> None:
    called: list[tuple[str, bool]] = []

    def make(name: str) -> Any:
        def handler(ctx: PipelineContext, _: Any) -> str:
            called.append((name, ctx.is_paused))
            if len(called) == 1:
                ctx.pause()  # both got a slot; whichever runs first pauses the run
            return name

        return handler

    pipeline = make_pipeline(st("x", make("x")), st("y", make("y")), executor="inline")
    async with executing(pipeline):
        await anyio.wait_all_tasks_blocked()
        # No handler may be called once the pause was requested.
        assert [paused for _, paused in called] == [False]
        pipeline.resume()
    assert len(called) == 2
    assert pipeline.result is not None
    assert pipeline.result.status is PipelineStatus.COMPLETED


async def test_r9_1_pause_and_resume_while_idle_do_nothing() -> None:
    calls: list[str] = []
    pipeline = make_pipeline(st("a", recording(calls, "a")), st("b", recording(calls, "b"), ["a"]))
    pipeline.pause()
    assert pipeline.status is PipelineStatus.IDLE
    pipeline.resume()
    pipeline.pause()
    with anyio.fail_after(5):
        first = await pipeline.execute()  # not held by the earlier pause()
    assert first.status is PipelineStatus.COMPLETED
    assert calls == ["a", "b"]

    pipeline.pause()
    assert pipeline.status is PipelineStatus.COMPLETED  # type: ignore[comparison-overlap]
    pipeline.resume()
    assert pipeline.status is PipelineStatus.COMPLETED
    assert pipeline.result is first
    with anyio.fail_after(5):
        second = await pipeline.execute()
    assert second.status is PipelineStatus.COMPLETED
    assert calls == ["a", "b", "a", "b"]


# -- R9.2 resume and wait_if_paused ---------------------------------------------------------------


async def test_r9_2_resume_lets_queued_stages_start_at_once() -> None:
    started, go = anyio.Event(), anyio.Event()
    b_started = anyio.Event()
    calls: list[str] = []

    async def b(ctx: Any, _: Any) -> str:
        b_started.set()
        return "b"

    pipeline = make_pipeline(
        st("a", waits_for(started, go, calls, "a")),
        st("b", b),
        st("c", recording(calls, "c"), ["a"]),
        max_parallel=1,
    )
    async with executing(pipeline):
        await started.wait()
        pipeline.pause()
        go.set()
        await anyio.wait_all_tasks_blocked()
        assert not b_started.is_set()
        assert pipeline.stage_statuses()["b"] is StageStatus.QUEUED
        pipeline.resume()
        await b_started.wait()
    assert pipeline.result is not None
    assert pipeline.result.status is PipelineStatus.COMPLETED


async def test_r9_2_wait_if_paused_in_a_stage_blocks_while_paused_returns_on_resume() -> None:
    started, go = anyio.Event(), anyio.Event()
    progress: list[str] = []

    async def works_in_steps(ctx: PipelineContext, _: Any) -> str:
        progress.append("step 1")
        started.set()
        await go.wait()
        await ctx.wait_if_paused()
        progress.append("step 2")
        return "done"

    pipeline = make_pipeline(st("a", works_in_steps))
    async with executing(pipeline):
        await started.wait()
        pipeline.pause()
        go.set()
        await anyio.wait_all_tasks_blocked()
        assert progress == ["step 1"]
        assert pipeline.stage_statuses()["a"] is StageStatus.RUNNING
        pipeline.resume()
    assert progress == ["step 1", "step 2"]
    assert pipeline.result is not None
    assert pipeline.result.stage_results["a"].result == "done"


async def test_r9_2_wait_if_paused_on_a_standalone_context_returns_on_resume() -> None:
    ctx = PipelineContext(pipeline_id="p", config=PipelineConfig(name="standalone"))
    ctx.pause()
    returned: list[int] = []

    async def waiter(n: int) -> None:
        await ctx.wait_if_paused()
        returned.append(n)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(waiter, n)
            await anyio.wait_all_tasks_blocked()
            assert returned == []
            ctx.resume()
    assert sorted(returned) == [0, 1, 2]
    assert not ctx.is_paused


async def test_r9_2_wait_if_paused_returns_immediately_when_not_paused() -> None:
    ctx = PipelineContext(pipeline_id="p", config=PipelineConfig(name="standalone"))
    with anyio.fail_after(1):
        await ctx.wait_if_paused()
        ctx.pause()
        ctx.resume()
        await ctx.wait_if_paused()


async def test_r9_2_wait_if_paused_returns_on_cancel() -> None:
    ctx = PipelineContext(pipeline_id="p", config=PipelineConfig(name="standalone"))
    ctx.pause()
    returned = anyio.Event()

    async def waiter() -> None:
        await ctx.wait_if_paused()
        returned.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert not returned.is_set()
            ctx.cancel(CancellationReason.USER_REQUESTED)
    assert returned.is_set()


# -- R9.3 cancel while paused ---------------------------------------------------------------------


async def test_r9_3_cancel_while_paused_stops_promptly() -> None:
    started, go = anyio.Event(), anyio.Event()
    calls: list[str] = []

    async def cooperative(ctx: PipelineContext, _: Any) -> str:
        calls.append("a")
        started.set()
        await go.wait()
        await ctx.wait_if_paused()
        ctx.check_cancelled()
        return "a"

    pipeline = make_pipeline(
        st("a", cooperative),
        st("b", recording(calls, "b")),
        st("c", recording(calls, "c"), ["a"]),
        max_parallel=1,
        timeout=TimeoutConfig(grace_period_seconds=2.0),
    )
    async with executing(pipeline):
        await started.wait()
        pipeline.pause()
        go.set()
        await anyio.wait_all_tasks_blocked()
        cancelled_at = time.perf_counter()
        pipeline.cancel()
    elapsed = time.perf_counter() - cancelled_at
    assert elapsed < 1.0  # well below the 2 s grace period
    assert calls == ["a"]
    result = finished(pipeline)
    assert result.status is PipelineStatus.CANCELLED
    assert result.cancellation_reason is CancellationReason.USER_REQUESTED
    assert {sid: r.status for sid, r in result.stage_results.items()} == {
        "a": StageStatus.CANCELLED,
        "b": StageStatus.CANCELLED,
        "c": StageStatus.CANCELLED,
    }
    assert result.stage_results["b"].attempt_count == 0


async def test_r9_3_cancel_while_paused_with_only_queued_stages_stops_at_once() -> None:
    paused = anyio.Event()

    async def pauses(ctx: PipelineContext, _: Any) -> str:
        ctx.pause()
        paused.set()
        return "a"

    pipeline = make_pipeline(
        st("a", pauses),
        st("b", recording([], "b"), ["a"]),
        timeout=TimeoutConfig(grace_period_seconds=2.0),
    )
    async with executing(pipeline):
        await paused.wait()
        await anyio.wait_all_tasks_blocked()
        cancelled_at = time.perf_counter()
        pipeline.cancel()
    assert time.perf_counter() - cancelled_at < 1.0
    result = finished(pipeline)
    assert result.status is PipelineStatus.CANCELLED
    assert result.stage_results["a"].status is StageStatus.COMPLETED
    assert result.stage_results["b"].status is StageStatus.CANCELLED


async def test_r9_3_r5_5_pipeline_timeout_runs_on_while_paused() -> None:
    paused = anyio.Event()

    async def pauses(ctx: PipelineContext, _: Any) -> str:
        ctx.pause()
        paused.set()
        return "a"

    pipeline = make_pipeline(
        st("a", pauses),
        st("b", recording([], "b"), ["a"]),
        timeout=TimeoutConfig(pipeline_timeout_seconds=0.1, grace_period_seconds=0),
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    assert paused.is_set()
    assert result.status is PipelineStatus.FAILED
    assert result.cancellation_reason is CancellationReason.TIMEOUT
    assert result.stage_results["b"].status is StageStatus.CANCELLED
