"""R10.1 live state, R8.6 one run at a time, R10.2 logging."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from helpers import blocks_forever, executing, fails, make_pipeline, ok, st

from proxima.data.pipeline import (
    CancellationReason,
    Pipeline,
    PipelineAlreadyRunningError,
    PipelineContext,
    PipelineException,
    PipelineStatus,
    RetryConfig,
    RetryStrategy,
    StageExecutionException,
    StageStatus,
    TimeoutConfig,
)

pytestmark = pytest.mark.anyio

LOGGER = "proxima.data.pipeline"


async def cancels(ctx: PipelineContext, _: Any) -> str:
    ctx.cancel()
    return "cancelled the run"


# -- R10.1 status / is_running / result -----------------------------------------------------------


async def test_r10_1_before_the_first_run_status_idle_not_running_result_none() -> None:
    pipeline = make_pipeline(st("a", ok))
    assert pipeline.status is PipelineStatus.IDLE
    assert pipeline.is_running is False
    assert pipeline.result is None


@pytest.mark.parametrize(
    ("stages", "expected"),
    [
        ([("a", ok, True)], PipelineStatus.COMPLETED),
        ([("a", fails, True)], PipelineStatus.FAILED),
        ([("a", fails, False), ("b", ok, True)], PipelineStatus.PARTIALLY_COMPLETED),
        ([("a", cancels, True)], PipelineStatus.CANCELLED),
    ],
    ids=["completed", "failed", "partially_completed", "cancelled"],
)
async def test_r10_1_status_running_during_the_run_and_final_after(
    stages: list[tuple[str, Any, bool]], expected: PipelineStatus
) -> None:
    seen: list[tuple[PipelineStatus, bool, Any]] = []
    pipeline: Pipeline

    async def observe(ctx: Any, _: Any) -> None:
        seen.append((pipeline.status, pipeline.is_running, pipeline.result))

    pipeline = make_pipeline(
        st("observer", observe),
        *(st(sid, handler, ["observer"], critical=critical) for sid, handler, critical in stages),
    )
    result = await pipeline.execute()
    assert seen == [(PipelineStatus.RUNNING, True, None)]
    assert result.status is expected
    assert pipeline.status is expected
    assert pipeline.is_running is False
    assert pipeline.result is result


async def test_r10_1_status_paused_while_paused_then_running_again() -> None:
    started, go = anyio.Event(), anyio.Event()

    async def waits(ctx: Any, _: Any) -> None:
        started.set()
        await go.wait()

    pipeline = make_pipeline(st("a", waits))
    async with executing(pipeline):
        await started.wait()
        assert pipeline.status is PipelineStatus.RUNNING
        pipeline.pause()
        assert pipeline.status is PipelineStatus.PAUSED  # type: ignore[comparison-overlap]
        assert pipeline.is_running
        pipeline.resume()
        assert pipeline.status is PipelineStatus.RUNNING
        go.set()
    assert pipeline.status is PipelineStatus.COMPLETED


@pytest.mark.parametrize("paused", [False, True], ids=["running", "paused"])
async def test_r10_1_status_stays_running_through_a_stop_until_it_completes(paused: bool) -> None:
    started, go = anyio.Event(), anyio.Event()

    async def finishes_in_grace(ctx: Any, _: Any) -> str:
        started.set()
        await go.wait()
        return "finished"

    pipeline = make_pipeline(
        st("a", finishes_in_grace), timeout=TimeoutConfig(grace_period_seconds=2.0)
    )
    async with executing(pipeline):
        await started.wait()
        if paused:
            pipeline.pause()
        pipeline.cancel()
        await anyio.wait_all_tasks_blocked()
        assert pipeline.status is PipelineStatus.RUNNING  # the stop is under way
        assert pipeline.is_running
        assert pipeline.result is None
        go.set()
    assert pipeline.status is PipelineStatus.CANCELLED  # type: ignore[comparison-overlap]
    assert not pipeline.is_running


@pytest.mark.parametrize("ending", ["returns", "raise_on_failure", "caller_cancel"])
async def test_r10_1_is_running_exactly_during_execute(ending: str) -> None:
    started, go = anyio.Event(), anyio.Event()
    inside: list[bool] = []
    pipeline: Pipeline

    async def handler(ctx: Any, _: Any) -> None:
        inside.append(pipeline.is_running)
        started.set()
        await go.wait()
        if ending == "raise_on_failure":
            raise ValueError("fail so that execute raises")

    pipeline = make_pipeline(st("a", handler))
    assert not pipeline.is_running

    async def run() -> None:
        if ending == "raise_on_failure":
            with pytest.raises(StageExecutionException):
                await pipeline.execute(raise_on_failure=True)
        else:
            await pipeline.execute()

    with anyio.fail_after(5), anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await started.wait()
            assert pipeline.is_running
            if ending == "caller_cancel":
                scope.cancel()
            else:
                go.set()
    assert inside == [True]
    assert not pipeline.is_running
    assert pipeline.result is not None


async def test_r10_1_result_is_the_last_finished_runs_result() -> None:
    seen_during: list[Any] = []
    pipeline: Pipeline

    async def echo(ctx: Any, value: Any) -> Any:
        seen_during.append(pipeline.result)
        return value

    pipeline = make_pipeline(st("a", echo))
    first = await pipeline.execute("first")
    assert pipeline.result is first
    second = await pipeline.execute("second")
    assert seen_during == [None, first]  # during a run: the previous run's result
    assert pipeline.result is second
    assert second is not first
    assert second.stage_results["a"].result == "second"
    assert first.stage_results["a"].result == "first"


# -- R8.6 one run at a time; re-runs start fresh --------------------------------------------------


async def test_r8_6_second_execute_while_running_raises_already_running() -> None:
    started, go = anyio.Event(), anyio.Event()
    calls: list[str] = []

    async def waits(ctx: Any, _: Any) -> str:
        calls.append("a")
        started.set()
        await go.wait()
        return "first run"

    pipeline = make_pipeline(st("a", waits))
    async with executing(pipeline):
        await started.wait()
        with pytest.raises(PipelineAlreadyRunningError) as excinfo:
            await pipeline.execute()
        assert isinstance(excinfo.value, PipelineException)
        assert isinstance(excinfo.value, RuntimeError)
        # The running run is untouched.
        assert pipeline.is_running
        assert pipeline.status is PipelineStatus.RUNNING
        assert pipeline.result is None
        go.set()
    assert calls == ["a"]
    assert pipeline.result is not None
    assert pipeline.result.status is PipelineStatus.COMPLETED
    assert pipeline.result.stage_results["a"].result == "first run"


async def test_r8_6_execute_from_inside_its_own_stage_raises_already_running() -> None:
    pipeline: Pipeline

    async def recurses(ctx: Any, _: Any) -> None:
        await pipeline.execute()

    pipeline = make_pipeline(st("a", recurses))
    result = await pipeline.execute()
    assert result.stage_results["a"].status is StageStatus.FAILED
    assert isinstance(result.stage_results["a"].exception, PipelineAlreadyRunningError)


@pytest.mark.parametrize("first_ending", ["completed", "cancelled", "failed"])
async def test_r8_6_rerun_after_finish_starts_from_a_fresh_context(first_ending: str) -> None:
    contexts: list[PipelineContext] = []
    observed: list[dict[str, Any]] = []

    async def first(ctx: PipelineContext, run: int) -> str:
        contexts.append(ctx)
        observed.append(
            {
                "key": ctx.get("key"),
                "cancelled": ctx.is_cancelled,
                "paused": ctx.is_paused,
                "previous": ctx.get_stage_result("second"),
            }
        )
        ctx.set("key", f"run {run}")
        if run == 1:
            ctx.pause()
            ctx.resume()
            if first_ending == "cancelled":
                ctx.cancel(CancellationReason.RESOURCE_LIMIT)
            elif first_ending == "failed":
                raise ValueError("first run fails")
        return "first"

    pipeline = make_pipeline(st("first", first), st("second", ok, ["first"]))
    one = await pipeline.execute(1)
    assert (
        one.status
        is {
            "completed": PipelineStatus.COMPLETED,
            "cancelled": PipelineStatus.CANCELLED,
            "failed": PipelineStatus.FAILED,
        }[first_ending]
    )
    two = await pipeline.execute(2)
    assert two.status is PipelineStatus.COMPLETED
    assert two.cancellation_reason is None
    assert contexts[0] is not contexts[1]
    fresh = {"key": None, "cancelled": False, "paused": False, "previous": None}
    assert observed == [fresh, fresh]
    assert two.stage_results["second"].status is StageStatus.COMPLETED


# -- R10.2 logging --------------------------------------------------------------------------------


async def test_r10_2_logs_under_the_library_logger_and_never_prints(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    started = anyio.Event()

    async def broken_cleanup(ctx: PipelineContext) -> None:
        raise RuntimeError("cleanup broke")

    keep_going = make_pipeline(
        st("bad_stage", fails, critical=False),
        st("skipped_stage", ok, ["bad_stage"], critical=False),
        st("good", ok),
        retry=RetryConfig(max_retries=1, strategy=RetryStrategy.IMMEDIATE),
    )
    await keep_going.execute()

    stopped = make_pipeline(
        st("blocking", blocks_forever(started), cleanup_handler=broken_cleanup),
        timeout=TimeoutConfig(grace_period_seconds=0),
    )
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stopped.execute)
            await started.wait()
            stopped.pause()
            stopped.resume()
            stopped.cancel()

    ours = [r for r in caplog.records if r.name.startswith("proxima")]
    assert ours, "the library logged nothing"
    assert all(r.name == LOGGER or r.name.startswith(LOGGER + ".") for r in ours)
    text = "\n".join(r.getMessage() for r in ours)
    assert "bad_stage" in text  # the failure is logged
    assert "cleanup broke" in text  # so is the broken cleanup
    assert any(r.levelno >= logging.WARNING for r in ours if "cleanup" in r.getMessage())

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


async def test_r10_2_a_clean_run_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = make_pipeline(st("a", ok), st("b", ok, ["a"]))
    result = await pipeline.execute()
    assert result.summary()  # building a report prints nothing either
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""
