"""R7: result records, opt-in raising, exceptions through pickle, metrics."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from helpers import (
    NO_RETRY,
    blocks_forever,
    finished,
    hangs,
    make_pipeline,
    raises,
    returns,
    st,
    stop_when,
)

from proxima.data.pipeline import (
    CancellationReason,
    DependencyFailedException,
    Pipeline,
    PipelineAlreadyRunningError,
    PipelineCancelledException,
    PipelineConfig,
    PipelineContext,
    PipelineException,
    PipelineResult,
    PipelineStatus,
    PipelineTimeoutException,
    PipelineValidationError,
    RetryConfig,
    RetryStrategy,
    Stage,
    StageExecutionException,
    StageResult,
    StageStatus,
    StageTimeoutException,
    TimeoutConfig,
)

pytestmark = pytest.mark.anyio

S = StageStatus
IMMEDIATE = RetryStrategy.IMMEDIATE


class Opaque:
    """A result value json cannot encode."""

    def __repr__(self) -> str:
        return "Opaque(42)"


# -- R7.1 every stage, in insertion order ---------------------------------------------------------


async def test_r7_1_a_stage_result_for_every_stage_in_insertion_order_whatever_happened() -> None:
    # Added out of dependency order; run one at a time so the outcome is fixed.
    pipeline = make_pipeline(
        st("skipped_child", returns(0), ["bad"]),
        st("done", returns(1)),
        st("slow", hangs, timeout_seconds=0.05, critical=False),
        st("bad", raises(ValueError("bad"))),
        st("never", returns(2)),
        parallel_stages=False,
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    order = ["skipped_child", "done", "slow", "bad", "never"]
    assert list(result.stage_results) == order
    for sid, stage_result in result.stage_results.items():
        assert isinstance(stage_result, StageResult)
        assert stage_result.stage_id == sid
        assert stage_result.stage_name == sid.upper()
    assert {sid: r.status for sid, r in result.stage_results.items()} == {
        "skipped_child": S.SKIPPED,
        "done": S.COMPLETED,
        "slow": S.TIMED_OUT,
        "bad": S.FAILED,
        "never": S.CANCELLED,
    }


async def test_r7_1_every_stage_present_after_the_callers_cancellation() -> None:
    started = anyio.Event()

    pipeline = make_pipeline(
        st("c", returns(3), ["b"]),
        st("a", blocks_forever(started)),
        st("b", returns(2), ["a"]),
        st("d", blocks_forever(started)),
    )
    with anyio.fail_after(5), anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pipeline.execute)
            await started.wait()
            scope.cancel()
    result = finished(pipeline)
    assert list(result.stage_results) == ["c", "a", "b", "d"]
    assert all(r.status is S.CANCELLED for r in result.stage_results.values())


# -- R7.2 successful / failed / skipped / cancelled -----------------------------------------------


async def test_r7_2_stage_lists_are_in_stage_order_not_time_order() -> None:
    pipeline = make_pipeline(
        st("late_fail", raises(ValueError("late")), ["done"]),
        st("early_fail", raises(ValueError("early"))),
        st("skipped", returns(0), ["early_fail"]),
        st("slow", hangs, timeout_seconds=0.05),
        st("done", returns(1)),
        st("first_ok", returns(2)),
        parallel_stages=False,
        continue_on_error=True,
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    # Time order of the failures was early_fail, slow, late_fail.
    assert result.failed_stages == ["late_fail", "early_fail", "slow"]
    assert result.successful_stages == ["done", "first_ok"]
    assert result.skipped_stages == ["skipped"]
    assert result.cancelled_stages == []


async def test_r7_2_cancelled_stages_listed_in_stage_order() -> None:
    async def cancels(ctx: PipelineContext, _: Any) -> str:
        ctx.cancel()
        return "ok"

    pipeline = make_pipeline(
        st("z", returns(0), ["first"]),
        st("first", cancels),
        st("y", returns(1)),
        parallel_stages=False,
    )
    result = await pipeline.execute()
    assert result.successful_stages == ["first"]
    assert result.cancelled_stages == ["z", "y"]
    assert result.failed_stages == []
    assert result.skipped_stages == []


# -- R7.3 to_dict / summary / StageResult ---------------------------------------------------------


async def test_r7_3_to_dict_passes_json_dumps_with_names_text_and_repr() -> None:
    opaque = Opaque()
    pipeline = make_pipeline(
        st("plain", returns({"rows": [1, 2, 3], "ok": True})),
        st("opaque", returns(opaque)),
        st("bad", raises(ValueError("broken input")), critical=False),
        st("child", returns(0), ["bad"], critical=False),
        Stage(stage_id="set", name="Set", handler=returns({1, 2})),
    )
    result = await pipeline.execute()
    data = json.loads(json.dumps(result.to_dict()))
    assert data["status"] == "PARTIALLY_COMPLETED"
    assert data["pipeline_name"] == result.pipeline_name
    stages = data["stage_results"]
    assert list(stages) == ["plain", "opaque", "bad", "child", "set"]
    assert stages["plain"]["status"] == "COMPLETED"
    assert stages["plain"]["result"] == {"rows": [1, 2, 3], "ok": True}
    assert stages["opaque"]["result"] == repr(opaque)
    assert stages["set"]["result"] == repr({1, 2})
    assert stages["bad"]["status"] == "FAILED"
    assert "ValueError" in stages["bad"]["exception"]
    assert "broken input" in stages["bad"]["exception"]
    assert "broken input" in stages["bad"]["error"]
    assert stages["child"]["status"] == "SKIPPED"
    assert isinstance(stages["child"]["exception"], str)


async def test_r7_3_to_dict_gives_the_cancellation_reason_as_its_name() -> None:
    async def cancels(ctx: PipelineContext, _: Any) -> None:
        ctx.cancel(CancellationReason.USER_REQUESTED)

    result = await make_pipeline(st("a", cancels)).execute()
    assert result.cancellation_reason is CancellationReason.USER_REQUESTED
    data = json.loads(json.dumps(result.to_dict()))
    assert data["status"] == "CANCELLED"
    assert data["cancellation_reason"] == "USER_REQUESTED"


async def test_r7_3_to_dict_survives_metadata_with_cleanup_errors_and_metrics() -> None:
    started = anyio.Event()

    async def blocks(ctx: PipelineContext, _: Any) -> None:
        ctx.record_metric("odd", Opaque())
        started.set()
        await anyio.sleep_forever()

    async def broken_cleanup(ctx: PipelineContext) -> None:
        raise OSError("disk gone")

    pipeline = make_pipeline(
        st("a", blocks, cleanup_handler=broken_cleanup),
        timeout=TimeoutConfig(grace_period_seconds=0),
    )
    result, _ = await stop_when(pipeline, started)
    data = json.loads(json.dumps(result.to_dict()))
    assert "disk gone" in json.dumps(data["metadata"])
    assert data["stage_results"]["a"]["metrics"]["odd"] == "Opaque(42)"


async def test_r7_3_summary_is_a_readable_multi_line_report() -> None:
    pipeline = Pipeline(PipelineConfig(name="etl", retry=NO_RETRY)).add_stages(
        [
            st("load", returns(1)),
            st("transform", raises(ValueError("bad row 7")), ["load"], critical=False),
            st("save", returns(2), ["transform"], critical=False),
        ]
    )
    result = await pipeline.execute()
    text = result.summary()
    assert isinstance(text, str)
    lines = text.splitlines()
    assert len(lines) >= 4
    assert "etl" in text
    assert "PARTIALLY_COMPLETED" in text
    for sid, status in (("load", "COMPLETED"), ("transform", "FAILED"), ("save", "SKIPPED")):
        line = next(line for line in lines if sid in line)
        assert status in line
    assert "bad row 7" in text


def test_r7_3_stage_result_duration_success_and_to_dict() -> None:
    result = StageResult(
        stage_id="process_data",
        stage_name="Process Data",
        status=StageStatus.COMPLETED,
        result={"processed": 100},
        start_time=1704067200.0,
        end_time=1704067210.0,
        attempt_count=1,
        metrics={"rows_processed": 100},
    )
    assert result.duration_ms == pytest.approx(10_000.0)
    assert result.is_success
    data = json.loads(json.dumps(result.to_dict()))
    assert data["stage_id"] == "process_data"
    assert data["stage_name"] == "Process Data"
    assert data["status"] == "COMPLETED"
    assert data["result"] == {"processed": 100}
    assert data["attempt_count"] == 1
    assert data["metrics"] == {"rows_processed": 100}
    assert data["error"] is None


@pytest.mark.parametrize("status", [s for s in StageStatus if s is not StageStatus.COMPLETED])
def test_r7_3_stage_result_is_success_only_when_completed(status: StageStatus) -> None:
    result = StageResult(stage_id="s", stage_name="S", status=status)
    assert not result.is_success
    json.dumps(result.to_dict())


def test_r7_3_stage_result_to_dict_with_exception_is_json() -> None:
    exc = KeyError("k")
    result = StageResult(
        stage_id="s",
        stage_name="S",
        status=StageStatus.FAILED,
        error="KeyError: 'k'",
        exception=exc,
        start_time=1.0,
        end_time=1.5,
        attempt_count=2,
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["status"] == "FAILED"
    assert "KeyError" in data["exception"]
    assert data["duration_ms"] == pytest.approx(500.0)


# -- R7.4 opt-in raising --------------------------------------------------------------------------


async def _cancels_with_resource_limit(ctx: PipelineContext, _: Any) -> None:
    ctx.cancel(CancellationReason.RESOURCE_LIMIT)


ORIGINAL = ValueError("the original")


def _scenario(name: str) -> tuple[Pipeline, type[PipelineException], Callable[[Any], None]]:
    if name == "cancelled":

        def check(exc: Any) -> None:
            assert exc.reason is CancellationReason.RESOURCE_LIMIT

        return (
            make_pipeline(st("a", _cancels_with_resource_limit)),
            PipelineCancelledException,
            check,
        )
    if name == "pipeline_timeout":

        def check(exc: Any) -> None:
            assert exc.timeout_seconds == 0.05

        return (
            make_pipeline(
                st("a", hangs),
                timeout=TimeoutConfig(
                    pipeline_timeout_seconds=0.05,
                    stage_timeout_seconds=None,
                    grace_period_seconds=0,
                ),
            ),
            PipelineTimeoutException,
            check,
        )
    if name == "stage_failed":

        def check(exc: Any) -> None:
            assert exc.stage_id == "bad"
            assert exc.cause is ORIGINAL
            assert "ValueError" in exc.error

        return (
            make_pipeline(st("ok", returns(1)), st("bad", raises(ORIGINAL), ["ok"])),
            StageExecutionException,
            check,
        )
    if name == "stage_timed_out":

        def check(exc: Any) -> None:
            assert exc.stage_id == "slow"
            assert exc.timeout_seconds == 0.05

        return (
            make_pipeline(st("slow", hangs, timeout_seconds=0.05)),
            StageTimeoutException,
            check,
        )
    if name == "partially_completed":

        def check(exc: Any) -> None:
            assert exc.stage_id == "opt"
            assert exc.cause is ORIGINAL

        return (
            make_pipeline(st("opt", raises(ORIGINAL), critical=False), st("ok", returns(1))),
            StageExecutionException,
            check,
        )
    assert name == "critical_only_skipped"

    def check_skipped(exc: Any) -> None:
        assert exc.stage_id == "needs_opt"
        assert exc.failed_dependency == "opt"

    return (
        make_pipeline(
            st("opt", raises(ORIGINAL), critical=False),
            st("needs_opt", returns(1), ["opt"]),
            st("ok", returns(2)),
        ),
        DependencyFailedException,
        check_skipped,
    )


SCENARIOS = [
    "cancelled",
    "pipeline_timeout",
    "stage_failed",
    "stage_timed_out",
    "partially_completed",
    "critical_only_skipped",
]


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_r7_4_raise_on_failure_raises_the_case_exception_carrying_the_result(
    scenario: str,
) -> None:
    pipeline, expected_type, check = _scenario(scenario)
    with anyio.fail_after(5), pytest.raises(PipelineException) as excinfo:
        await pipeline.execute(raise_on_failure=True)
    exc = excinfo.value
    assert type(exc) is expected_type
    check(exc)
    assert isinstance(exc.result, PipelineResult)
    assert exc.result == pipeline.result
    assert exc.result.status is not PipelineStatus.COMPLETED
    assert list(exc.result.stage_results) == [s.stage_id for s in pipeline.stages]


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_r7_4_raise_for_status_raises_the_case_exception_carrying_the_result(
    scenario: str,
) -> None:
    pipeline, expected_type, check = _scenario(scenario)
    with anyio.fail_after(5):
        result = await pipeline.execute()
    with pytest.raises(PipelineException) as excinfo:
        result.raise_for_status()
    exc = excinfo.value
    assert type(exc) is expected_type
    check(exc)
    assert exc.result is result


async def test_r7_4_completed_run_does_not_raise() -> None:
    pipeline = make_pipeline(st("a", returns(1)))
    result = await pipeline.execute(raise_on_failure=True)
    assert result.status is PipelineStatus.COMPLETED
    assert result.raise_for_status() is None  # type: ignore[func-returns-value]


async def test_r7_4_the_stage_that_failed_first_in_time_wins() -> None:
    early_failed = anyio.Event()
    early_exc = RuntimeError("early")

    async def fails_late(ctx: Any, _: Any) -> None:
        await early_failed.wait()
        await anyio.lowlevel.checkpoint()
        raise ValueError("late")

    async def fails_early(ctx: Any, _: Any) -> None:
        early_failed.set()
        raise early_exc

    pipeline = make_pipeline(
        st("late", fails_late),  # added first, fails second
        st("early", fails_early),
        continue_on_error=True,
    )
    with anyio.fail_after(5), pytest.raises(StageExecutionException) as excinfo:
        await pipeline.execute(raise_on_failure=True)
    assert excinfo.value.stage_id == "early"
    assert excinfo.value.cause is early_exc
    assert pipeline.result is not None
    assert pipeline.result.failed_stages == ["late", "early"]


# -- R7.5 exceptions survive pickle ---------------------------------------------------------------


EXCEPTIONS: list[tuple[BaseException, dict[str, Any]]] = [
    (PipelineException("plain"), {}),
    (PipelineValidationError("bad graph", stage_id="x"), {"stage_id": "x"}),
    (PipelineAlreadyRunningError("already running"), {}),
    (StageTimeoutException("s", 1.5), {"stage_id": "s", "timeout_seconds": 1.5}),
    (PipelineTimeoutException(30.0), {"timeout_seconds": 30.0}),
    (
        PipelineCancelledException(CancellationReason.RESOURCE_LIMIT),
        {"reason": CancellationReason.RESOURCE_LIMIT},
    ),
    (PipelineCancelledException(), {"reason": CancellationReason.USER_REQUESTED}),
    (
        StageExecutionException("s", "ValueError: boom", cause=None),
        {"stage_id": "s", "error": "ValueError: boom", "cause": None},
    ),
    (
        DependencyFailedException("child", "root"),
        {"stage_id": "child", "failed_dependency": "root"},
    ),
]


@pytest.mark.parametrize(
    ("exc", "attributes"),
    EXCEPTIONS,
    ids=[f"{type(e).__name__}-{i}" for i, (e, _) in enumerate(EXCEPTIONS)],
)
def test_r7_5_exception_keeps_its_attributes_through_pickle(
    exc: BaseException, attributes: dict[str, Any]
) -> None:
    restored = pickle.loads(pickle.dumps(exc))
    assert type(restored) is type(exc)
    assert str(restored) == str(exc)
    for name, value in attributes.items():
        assert getattr(exc, name) == value
        assert getattr(restored, name) == value
    assert restored.result is None  # type: ignore[attr-defined]


def test_r7_5_stage_execution_exception_keeps_its_cause_through_pickle() -> None:
    exc = StageExecutionException("s", "ValueError: boom", cause=ValueError("boom"))
    restored = pickle.loads(pickle.dumps(exc))
    assert isinstance(restored.cause, ValueError)
    assert str(restored.cause) == "boom"
    assert restored.stage_id == "s"
    assert restored.error == "ValueError: boom"


def test_r7_5_exception_is_still_catchable_by_its_bases_after_pickle() -> None:
    restored = pickle.loads(pickle.dumps(StageTimeoutException("s", 2.0)))
    assert isinstance(restored, PipelineException)
    assert isinstance(restored, TimeoutError)
    restored_v = pickle.loads(pickle.dumps(PipelineValidationError("m", stage_id="a")))
    assert isinstance(restored_v, ValueError)
    restored_r = pickle.loads(pickle.dumps(PipelineAlreadyRunningError("m")))
    assert isinstance(restored_r, RuntimeError)


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_r7_5_raised_exception_keeps_result_through_pickle(scenario: str) -> None:
    pipeline, _, _ = _scenario(scenario)
    with anyio.fail_after(5), pytest.raises(PipelineException) as excinfo:
        await pipeline.execute(raise_on_failure=True)
    restored = pickle.loads(pickle.dumps(excinfo.value))
    assert type(restored) is type(excinfo.value)
    assert str(restored) == str(excinfo.value)
    original_result = excinfo.value.result
    assert original_result is not None
    assert restored.result is not None
    assert restored.result.status is original_result.status
    assert restored.result.cancellation_reason is original_result.cancellation_reason
    assert restored.result.pipeline_id == original_result.pipeline_id
    assert {sid: r.status for sid, r in restored.result.stage_results.items()} == {
        sid: r.status for sid, r in original_result.stage_results.items()
    }


# -- R7.6 metrics ---------------------------------------------------------------------------------


async def test_r7_6_attempts_list_records_each_attempt_and_its_outcome() -> None:
    calls: list[int] = []

    async def fails_then_hangs_then_works(ctx: Any, _: Any) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first attempt")
        if len(calls) == 2:
            await anyio.sleep_forever()
        return "third"

    pipeline = make_pipeline(
        st("s", fails_then_hangs_then_works, timeout_seconds=0.1),
        retry=RetryConfig(max_retries=2, strategy=IMMEDIATE),
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    stage = result.stage_results["s"]
    attempts = stage.metrics["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert [a["outcome"] for a in attempts] == ["failed", "timed_out", "completed"]
    for entry in attempts:
        assert {"attempt", "start_time", "duration_ms", "outcome", "error"} <= set(entry)
        assert entry["duration_ms"] >= 0
    assert "ValueError" in attempts[0]["error"]
    assert attempts[2]["error"] is None
    assert attempts[1]["duration_ms"] >= 90
    starts = [a["start_time"] for a in attempts]
    assert starts == sorted(starts)
    assert stage.start_time is not None
    assert stage.end_time is not None
    assert stage.start_time <= starts[0] <= starts[-1] <= stage.end_time
    assert stage.metrics["retry_delay_ms"] == pytest.approx(0.0, abs=1.0)
    json.dumps(stage.to_dict())


async def test_r7_6_attempt_cut_by_a_stop_has_outcome_cancelled() -> None:
    started = anyio.Event()

    async def raises_cancelled(ctx: Any, _: Any) -> None:
        await started.wait()
        raise PipelineCancelledException(CancellationReason.USER_REQUESTED)

    pipeline = make_pipeline(
        st("blocked", blocks_forever(started)),
        st("self_stop", raises_cancelled),
        timeout=TimeoutConfig(grace_period_seconds=0),
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    for sid in ("blocked", "self_stop"):
        attempts = result.stage_results[sid].metrics["attempts"]
        assert [a["outcome"] for a in attempts] == ["cancelled"]


async def test_r7_6_queue_wait_ms_measures_ready_to_slot() -> None:
    async def takes_a_while(ctx: Any, _: Any) -> str:
        await anyio.sleep(0.1)
        return "first"

    pipeline = make_pipeline(
        st("first", takes_a_while),
        st("second", returns(2)),
        parallel_stages=False,
    )
    result = await pipeline.execute()
    first = result.stage_results["first"].metrics["queue_wait_ms"]
    second = result.stage_results["second"].metrics["queue_wait_ms"]
    assert first >= 0
    assert second >= 80  # ready from the start, slot only after "first" (0.1 s)


async def test_r7_6_retry_delay_ms_totals_the_waits_between_attempts() -> None:
    pipeline = make_pipeline(
        st("s", raises(ValueError("x"))),
        st("plain", returns(1)),
        retry=RetryConfig(
            max_retries=2, strategy=RetryStrategy.CONSTANT, initial_delay_seconds=0.05
        ),
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    assert result.stage_results["s"].attempt_count == 3
    assert result.stage_results["s"].metrics["retry_delay_ms"] >= 90
    assert result.stage_results["plain"].metrics["retry_delay_ms"] == 0


async def test_r7_6_every_stage_result_has_the_library_metrics() -> None:
    pipeline = make_pipeline(
        st("bad", raises(ValueError("x")), critical=False),
        st("skipped", returns(1), ["bad"], critical=False),
        st("ok", returns(2)),
    )
    result = await pipeline.execute()
    for stage_result in result.stage_results.values():
        assert {"queue_wait_ms", "retry_delay_ms", "attempts"} <= set(stage_result.metrics)
    assert result.stage_results["skipped"].metrics["attempts"] == []


async def test_r7_6_record_metric_lands_in_the_calling_stages_metrics() -> None:
    both_set = anyio.Event()
    arrived: list[str] = []

    def recorder(name: str, value: int) -> Any:
        async def handler(ctx: PipelineContext, _: Any) -> None:
            ctx.record_metric("rows", value)
            arrived.append(name)
            if len(arrived) == 2:
                both_set.set()
            await both_set.wait()  # both stages are mid-run at the same time
            ctx.record_metric(f"{name}_only", True)

        return handler

    def sync_recorder(ctx: PipelineContext, _: Any) -> None:
        ctx.record_metric("rows", 3)

    pipeline = make_pipeline(
        st("a", recorder("a", 1)),
        st("b", recorder("b", 2)),
        st("c", sync_recorder, ["a"]),
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    metrics = {sid: r.metrics for sid, r in result.stage_results.items()}
    assert metrics["a"]["rows"] == 1
    assert metrics["b"]["rows"] == 2
    assert metrics["c"]["rows"] == 3
    assert metrics["a"]["a_only"] is True
    assert "b_only" not in metrics["a"]
    assert metrics["b"]["b_only"] is True
    assert "a_only" not in metrics["b"]


async def test_r7_6_collect_metrics_false_omits_the_library_metrics() -> None:
    async def records(ctx: PipelineContext, _: Any) -> int:
        ctx.record_metric("rows", 10)
        return 1

    pipeline = make_pipeline(
        st("a", records),
        st("b", raises(ValueError("x")), critical=False),
        collect_metrics=False,
    )
    result = await pipeline.execute()
    for stage_result in result.stage_results.values():
        assert not {"queue_wait_ms", "retry_delay_ms", "attempts"} & set(stage_result.metrics)
    assert result.stage_results["a"].metrics == {"rows": 10}
