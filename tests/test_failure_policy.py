"""R6: failure policy (critical x continue_on_error) and the final status."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from helpers import blocks_forever, fails, hangs, make_pipeline, ok, st, statuses

from proxima.data.pipeline import (
    CancellationReason,
    DependencyFailedException,
    PipelineStatus,
    StageStatus,
    TimeoutConfig,
)

pytestmark = pytest.mark.anyio

S = StageStatus


# -- R6.1 the matrix ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("critical", "continue_on_error", "expected_stages", "expected_status", "expected_reason"),
    [
        pytest.param(
            True,
            False,
            {"before": S.COMPLETED, "bad": S.FAILED, "child": S.SKIPPED, "later": S.CANCELLED},
            PipelineStatus.FAILED,
            CancellationReason.ERROR,
            id="critical-stop_on_error",
        ),
        pytest.param(
            True,
            True,
            {"before": S.COMPLETED, "bad": S.FAILED, "child": S.SKIPPED, "later": S.COMPLETED},
            PipelineStatus.FAILED,
            None,
            id="critical-keep_going",
        ),
        pytest.param(
            False,
            False,
            {"before": S.COMPLETED, "bad": S.FAILED, "child": S.SKIPPED, "later": S.COMPLETED},
            PipelineStatus.PARTIALLY_COMPLETED,
            None,
            id="optional-stop_on_error",
        ),
        pytest.param(
            False,
            True,
            {"before": S.COMPLETED, "bad": S.FAILED, "child": S.SKIPPED, "later": S.COMPLETED},
            PipelineStatus.PARTIALLY_COMPLETED,
            None,
            id="optional-keep_going",
        ),
    ],
)
async def test_r6_1_r6_3_critical_by_continue_on_error_matrix(
    critical: bool,
    continue_on_error: bool,
    expected_stages: dict[str, StageStatus],
    expected_status: PipelineStatus,
    expected_reason: CancellationReason | None,
) -> None:
    # One stage at a time, so the order is fixed: before, bad, child|later.
    pipeline = make_pipeline(
        st("before", ok),
        st("bad", fails, critical=critical),
        st("child", ok, ["bad"], critical=False),
        st("later", ok),
        parallel_stages=False,
        continue_on_error=continue_on_error,
    )
    result = await pipeline.execute()
    assert statuses(result) == expected_stages
    assert result.status is expected_status
    assert result.cancellation_reason is expected_reason


@pytest.mark.parametrize("critical", [True, False])
async def test_r6_1_timed_out_stage_counts_as_a_failure(critical: bool) -> None:
    pipeline = make_pipeline(
        st("slow", hangs, timeout_seconds=0.05, critical=critical),
        st("child", ok, ["slow"], critical=False),
        st("later", ok, ["other"]),
        st("other", ok),
        parallel_stages=False,
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    assert result.stage_results["slow"].status is S.TIMED_OUT
    assert result.stage_results["child"].status is S.SKIPPED
    exc = result.stage_results["child"].exception
    assert isinstance(exc, DependencyFailedException)
    assert exc.failed_dependency == "slow"
    if critical:
        assert result.status is PipelineStatus.FAILED
        assert result.cancellation_reason is CancellationReason.ERROR
        assert result.stage_results["later"].status is S.CANCELLED
    else:
        assert result.status is PipelineStatus.PARTIALLY_COMPLETED
        assert result.cancellation_reason is None
        assert result.stage_results["later"].status is S.COMPLETED


async def test_r6_1_critical_failure_stops_running_stages_after_the_grace_period() -> None:
    running = anyio.Event()

    async def fails_once_other_runs(ctx: Any, _: Any) -> None:
        await running.wait()
        raise ValueError("critical failure")

    pipeline = make_pipeline(
        st("bad", fails_once_other_runs),
        st("other", blocks_forever(running)),
        timeout=TimeoutConfig(grace_period_seconds=0.05),
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    assert statuses(result) == {"bad": S.FAILED, "other": S.CANCELLED}
    assert result.status is PipelineStatus.FAILED
    assert result.cancellation_reason is CancellationReason.ERROR


# -- R6.2 dependents skipped, independent branches go on ------------------------------------------


async def test_r6_2_dependents_skipped_transitively_with_root_as_failed_dependency() -> None:
    calls: list[str] = []

    def recorded(name: str) -> Any:
        async def handler(ctx: Any, _: Any) -> str:
            calls.append(name)
            return name

        return handler

    pipeline = make_pipeline(
        st("root", recorded("root")),
        st("bad", fails, ["root"]),
        st("c1", recorded("c1"), ["bad"]),
        st("c2", recorded("c2"), ["c1"]),
        st("c3", recorded("c3"), ["c2", "root"]),
        st("side", recorded("side"), ["root"]),
        continue_on_error=True,
    )
    result = await pipeline.execute()
    for sid in ("c1", "c2", "c3"):
        stage = result.stage_results[sid]
        assert stage.status is S.SKIPPED
        assert isinstance(stage.exception, DependencyFailedException)
        assert stage.exception.stage_id == sid
        assert stage.exception.failed_dependency == "bad"
        assert stage.attempt_count == 0
    assert sorted(calls) == ["root", "side"]
    assert result.stage_results["side"].status is S.COMPLETED


async def test_r6_2_independent_branch_running_at_failure_time_keeps_running() -> None:
    failed = anyio.Event()

    async def fails_and_tells(ctx: Any, _: Any) -> None:
        failed.set()
        raise ValueError("failure")

    async def finishes_after_the_failure(ctx: Any, _: Any) -> str:
        await failed.wait()
        await anyio.lowlevel.checkpoint()
        return "branch done"

    pipeline = make_pipeline(
        st("bad", fails_and_tells),
        st("branch", finishes_after_the_failure),
        st("branch2", ok, ["branch"]),
        st("child", ok, ["bad"]),
        continue_on_error=True,
        timeout=TimeoutConfig(grace_period_seconds=0),  # a stop would cancel "branch"
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    assert statuses(result) == {
        "bad": S.FAILED,
        "branch": S.COMPLETED,
        "branch2": S.COMPLETED,
        "child": S.SKIPPED,
    }
    assert result.stage_results["branch"].result == "branch done"
    assert result.cancellation_reason is None


async def test_r6_2_optional_failure_without_continue_on_error_keeps_going() -> None:
    failed = anyio.Event()

    async def fails_and_tells(ctx: Any, _: Any) -> None:
        failed.set()
        raise ValueError("optional failure")

    async def finishes_after_the_failure(ctx: Any, _: Any) -> str:
        await failed.wait()
        await anyio.lowlevel.checkpoint()
        return "done"

    pipeline = make_pipeline(
        st("opt", fails_and_tells, critical=False),
        st("main", finishes_after_the_failure),
        st("after", ok, ["main"]),
        timeout=TimeoutConfig(grace_period_seconds=0),
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    assert statuses(result) == {"opt": S.FAILED, "main": S.COMPLETED, "after": S.COMPLETED}
    assert result.status is PipelineStatus.PARTIALLY_COMPLETED
    assert result.cancellation_reason is None


# -- R6.3 final status ----------------------------------------------------------------------------


async def test_r6_3_all_completed_is_completed() -> None:
    result = await make_pipeline(st("a", ok), st("b", ok, ["a"])).execute()
    assert result.status is PipelineStatus.COMPLETED
    assert result.cancellation_reason is None
    assert result.is_success


async def test_r6_3_empty_pipeline_is_completed() -> None:
    result = await make_pipeline().execute()
    assert result.status is PipelineStatus.COMPLETED
    assert result.stage_results == {}
    assert result.cancellation_reason is None


async def test_r6_3_critical_stage_skipped_because_optional_dependency_failed_is_failed() -> None:
    pipeline = make_pipeline(
        st("opt", fails, critical=False),
        st("needs_opt", ok, ["opt"], critical=True),
        st("other", ok),
    )
    result = await pipeline.execute()
    assert statuses(result) == {"opt": S.FAILED, "needs_opt": S.SKIPPED, "other": S.COMPLETED}
    assert result.status is PipelineStatus.FAILED
    assert result.cancellation_reason is None


async def test_r6_3_only_optional_stages_short_is_partially_completed() -> None:
    pipeline = make_pipeline(
        st("opt", fails, critical=False),
        st("opt_child", ok, ["opt"], critical=False),
        st("main", ok),
    )
    result = await pipeline.execute()
    assert statuses(result) == {"opt": S.FAILED, "opt_child": S.SKIPPED, "main": S.COMPLETED}
    assert result.status is PipelineStatus.PARTIALLY_COMPLETED
    assert not result.is_success


async def test_r6_3_no_stage_completed_is_failed() -> None:
    pipeline = make_pipeline(
        st("a", fails, critical=False),
        st("b", fails, critical=False),
        st("c", ok, ["a"], critical=False),
    )
    result = await pipeline.execute()
    assert statuses(result) == {"a": S.FAILED, "b": S.FAILED, "c": S.SKIPPED}
    assert result.status is PipelineStatus.FAILED
    assert result.cancellation_reason is None


async def test_r6_3_critical_failure_with_keep_going_is_failed_even_if_others_completed() -> None:
    pipeline = make_pipeline(
        st("bad", fails),
        st("a", ok),
        st("b", ok, ["a"]),
        continue_on_error=True,
    )
    result = await pipeline.execute()
    assert statuses(result) == {"bad": S.FAILED, "a": S.COMPLETED, "b": S.COMPLETED}
    assert result.status is PipelineStatus.FAILED
    assert result.cancellation_reason is None


@pytest.mark.parametrize(
    "reason",
    [CancellationReason.USER_REQUESTED, CancellationReason.TIMEOUT, CancellationReason.ERROR],
)
async def test_r6_3_r6_4_user_cancel_is_cancelled_whatever_the_reason(
    reason: CancellationReason,
) -> None:
    async def cancels(ctx: Any, _: Any) -> str:
        ctx.cancel(reason)
        return "done"

    pipeline = make_pipeline(st("a", cancels), st("b", ok, ["a"]))
    result = await pipeline.execute()
    assert result.status is PipelineStatus.CANCELLED
    assert result.cancellation_reason is reason
    assert statuses(result) == {"a": S.COMPLETED, "b": S.CANCELLED}


async def test_r6_3_r6_4_pipeline_timeout_is_failed_with_reason_timeout() -> None:
    pipeline = make_pipeline(
        st("a", hangs),
        timeout=TimeoutConfig(
            pipeline_timeout_seconds=0.05, stage_timeout_seconds=None, grace_period_seconds=0
        ),
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.FAILED
    assert result.cancellation_reason is CancellationReason.TIMEOUT


async def test_r6_4_cancellation_reason_is_none_when_not_stopped_early() -> None:
    pipeline = make_pipeline(st("bad", fails, critical=False), st("ok", ok))
    result = await pipeline.execute()
    assert result.status is PipelineStatus.PARTIALLY_COMPLETED
    assert result.cancellation_reason is None
