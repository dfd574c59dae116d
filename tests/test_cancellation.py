"""R5: cancellation, the stop sequence, grace period, cleanup, timeouts."""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import anyio.to_thread
import pytest
from helpers import (
    NO_RETRY,
    blocks_forever,
    executing,
    finished,
    grace,
    make_pipeline,
    raises,
    recording_cleanup,
    returns,
    st,
    stop_when,
)

from proxima.data.pipeline import (
    CancellationReason,
    DependencyFailedException,
    Pipeline,
    PipelineCancelledException,
    PipelineConfig,
    PipelineContext,
    PipelineStatus,
    RetryConfig,
    RetryStrategy,
    StageStatus,
    StageTimeoutException,
)

pytestmark = pytest.mark.anyio

# -- R5.1 requesting a stop -----------------------------------------------------------------------


async def test_r5_1_cancel_from_a_stage_is_idempotent_first_reason_wins() -> None:
    pipeline: Pipeline

    async def cancels(ctx: PipelineContext, _: Any) -> None:
        ctx.cancel(CancellationReason.RESOURCE_LIMIT)
        ctx.cancel(CancellationReason.ERROR)
        pipeline.cancel(CancellationReason.USER_REQUESTED)
        ctx.check_cancelled()

    pipeline = make_pipeline(st("a", cancels))
    result = await pipeline.execute()
    assert result.status is PipelineStatus.CANCELLED
    assert result.cancellation_reason is CancellationReason.RESOURCE_LIMIT
    assert result.stage_results["a"].status is StageStatus.CANCELLED


async def test_r5_1_cancel_from_another_task_is_idempotent_first_reason_wins() -> None:
    started = anyio.Event()
    pipeline = make_pipeline(st("a", blocks_forever(started)), timeout=grace(0.05))

    def cancel_three_times() -> None:
        pipeline.cancel(CancellationReason.RESOURCE_LIMIT)
        pipeline.cancel(CancellationReason.USER_REQUESTED)
        pipeline.cancel(CancellationReason.ERROR)

    result, _ = await stop_when(pipeline, started, stop=cancel_three_times)
    assert result.status is PipelineStatus.CANCELLED
    assert result.cancellation_reason is CancellationReason.RESOURCE_LIMIT
    assert result.stage_results["a"].status is StageStatus.CANCELLED


async def test_r5_1_cancel_from_another_thread() -> None:
    started = anyio.Event()
    pipeline = make_pipeline(st("a", blocks_forever(started)), timeout=grace(0.05))

    def from_thread() -> None:
        pipeline.cancel(CancellationReason.RESOURCE_LIMIT)
        pipeline.cancel(CancellationReason.USER_REQUESTED)

    async with executing(pipeline):
        await started.wait()
        thread = threading.Thread(target=from_thread)
        thread.start()
        await anyio.to_thread.run_sync(thread.join)
    result = finished(pipeline)
    assert result.status is PipelineStatus.CANCELLED
    assert result.cancellation_reason is CancellationReason.RESOURCE_LIMIT
    assert result.stage_results["a"].status is StageStatus.CANCELLED


async def test_r5_1_pipeline_cancel_while_idle_does_nothing() -> None:
    calls: list[str] = []

    async def handler(ctx: PipelineContext, _: Any) -> str:
        calls.append("a")
        ctx.check_cancelled()
        return "done"

    pipeline = make_pipeline(st("a", handler))
    pipeline.cancel()  # before any run
    first = await pipeline.execute()
    assert first.status is PipelineStatus.COMPLETED
    assert first.cancellation_reason is None

    pipeline.cancel(CancellationReason.ERROR)  # after the run
    assert pipeline.result is first
    assert pipeline.status is PipelineStatus.COMPLETED
    assert first.status is PipelineStatus.COMPLETED
    second = await pipeline.execute()
    assert second.status is PipelineStatus.COMPLETED
    assert second.cancellation_reason is None
    assert calls == ["a", "a"]


async def test_r5_1_standalone_context_records_the_cancel() -> None:
    ctx = PipelineContext(pipeline_id="abc", config=PipelineConfig(name="standalone"))
    assert not ctx.is_cancelled
    ctx.check_cancelled()  # does not raise
    ctx.cancel(CancellationReason.RESOURCE_LIMIT)
    ctx.cancel(CancellationReason.USER_REQUESTED)
    assert ctx.is_cancelled
    with pytest.raises(PipelineCancelledException) as excinfo:
        ctx.check_cancelled()
    assert excinfo.value.reason is CancellationReason.RESOURCE_LIMIT


async def test_r5_1_standalone_context_records_a_cancel_from_another_thread() -> None:
    ctx = PipelineContext(pipeline_id="abc", config=PipelineConfig(name="standalone"))
    thread = threading.Thread(target=ctx.cancel, args=(CancellationReason.EXTERNAL,))
    thread.start()
    await anyio.to_thread.run_sync(thread.join)
    assert ctx.is_cancelled
    with pytest.raises(PipelineCancelledException) as excinfo:
        ctx.check_cancelled()
    assert excinfo.value.reason is CancellationReason.EXTERNAL


async def test_r5_1_r5_3_stage_raising_pipeline_cancelled_is_a_user_stop_with_its_reason() -> None:
    raised = PipelineCancelledException(CancellationReason.RESOURCE_LIMIT, "out of quota")
    calls: list[int] = []
    other_started = anyio.Event()

    async def stops(ctx: PipelineContext, _: Any) -> None:
        await other_started.wait()
        calls.append(1)
        raise raised

    pipeline = make_pipeline(
        st("stopper", stops),
        st("other", blocks_forever(other_started)),
        retry=RetryConfig(max_retries=3, strategy=RetryStrategy.IMMEDIATE),
        timeout=grace(0.05),
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    assert calls == [1]  # never retried
    assert result.status is PipelineStatus.CANCELLED
    assert result.cancellation_reason is CancellationReason.RESOURCE_LIMIT
    stopper = result.stage_results["stopper"]
    assert stopper.status is StageStatus.CANCELLED
    assert stopper.attempt_count == 1
    assert isinstance(stopper.exception, PipelineCancelledException)
    assert stopper.exception.reason is CancellationReason.RESOURCE_LIMIT
    assert result.stage_results["other"].status is StageStatus.CANCELLED


# -- R5.2 the stop sequence -----------------------------------------------------------------------


def cooperative(started: anyio.Event, go: anyio.Event, seen: dict[str, Any]) -> Any:
    """Waits for ``go``, then reports what the context says, then returns."""

    async def handler(ctx: PipelineContext, _: Any) -> str:
        started.set()
        await go.wait()
        seen["is_cancelled"] = ctx.is_cancelled
        try:
            ctx.check_cancelled()
        except PipelineCancelledException as exc:
            seen["raised"] = exc
        return "finished within grace"

    return handler


async def test_r5_2_stop_makes_is_cancelled_true_and_check_cancelled_raise() -> None:
    started, go = anyio.Event(), anyio.Event()
    seen: dict[str, Any] = {}
    pipeline = make_pipeline(st("a", cooperative(started, go, seen)), timeout=grace(2.0))
    await stop_when(
        pipeline,
        started,
        stop=lambda: pipeline.cancel(CancellationReason.RESOURCE_LIMIT),
        then=go.set,
    )
    assert seen["is_cancelled"] is True
    assert isinstance(seen["raised"], PipelineCancelledException)
    assert seen["raised"].reason is CancellationReason.RESOURCE_LIMIT


async def test_r5_2_stage_finishing_within_grace_keeps_completed_and_its_result() -> None:
    started, go = anyio.Event(), anyio.Event()
    pipeline = make_pipeline(st("a", cooperative(started, go, {})), timeout=grace(2.0))
    result, _ = await stop_when(pipeline, started, then=go.set)
    assert result.status is PipelineStatus.CANCELLED
    assert result.stage_results["a"].status is StageStatus.COMPLETED
    assert result.stage_results["a"].result == "finished within grace"


async def test_r5_2_no_new_attempt_starts_after_a_stop() -> None:
    started, go = anyio.Event(), anyio.Event()
    later_calls: list[str] = []

    async def later(ctx: Any, _: Any) -> None:
        later_calls.append("b")

    pipeline = make_pipeline(
        st("a", cooperative(started, go, {})),
        st("b", later, ["a"]),
        st("c", later),
        parallel_stages=False,
        timeout=grace(2.0),
    )
    result, _ = await stop_when(pipeline, started, then=go.set)
    assert later_calls == []
    assert result.stage_results["a"].status is StageStatus.COMPLETED
    for sid in ("b", "c"):
        assert result.stage_results[sid].status is StageStatus.CANCELLED
        assert result.stage_results[sid].attempt_count == 0
        assert result.stage_results[sid].start_time is None


async def test_r5_2_running_stages_are_cancelled_after_the_grace_period() -> None:
    started = anyio.Event()
    log: list[str] = []
    pipeline = make_pipeline(st("a", blocks_forever(started, log)), timeout=grace(0.15))
    result, elapsed = await stop_when(pipeline, started)
    assert log == ["cancelled"]
    assert result.stage_results["a"].status is StageStatus.CANCELLED
    assert result.status is PipelineStatus.CANCELLED
    assert elapsed >= 0.13  # not before the grace period ran out


async def test_r5_2_grace_period_is_an_upper_bound_for_a_cooperative_stage() -> None:
    started, go = anyio.Event(), anyio.Event()

    async def cooperative_stage(ctx: PipelineContext, _: Any) -> None:
        started.set()
        await go.wait()
        ctx.check_cancelled()

    pipeline = make_pipeline(st("a", cooperative_stage), timeout=grace(2.0))
    result, elapsed = await stop_when(pipeline, started, then=go.set)
    assert result.stage_results["a"].status is StageStatus.CANCELLED
    assert elapsed < 1.0  # well below the 2 s grace period


async def test_r5_2_r5_7_stop_completes_at_once_when_a_stage_waits_for_a_retry() -> None:
    failed = anyio.Event()

    async def fails(ctx: Any, _: Any) -> None:
        failed.set()
        raise ValueError("retry later")

    pipeline = make_pipeline(
        st("s", fails),
        retry=RetryConfig(
            max_retries=3, strategy=RetryStrategy.CONSTANT, initial_delay_seconds=10.0
        ),
        timeout=grace(2.0),
    )
    result, elapsed = await stop_when(pipeline, failed)
    assert result.stage_results["s"].status is StageStatus.CANCELLED
    # Nothing is running: neither the 10 s delay nor the 2 s grace may hold it up.
    assert elapsed < 1.0


async def test_r5_2_grace_still_bounds_running_stages_while_another_waits_for_a_retry() -> None:
    failed, hanging = anyio.Event(), anyio.Event()

    async def fails(ctx: Any, _: Any) -> None:
        failed.set()
        raise ValueError("retry later")

    pipeline = make_pipeline(
        st("s", fails),
        st("h", blocks_forever(hanging), retry_config=NO_RETRY),
        retry=RetryConfig(
            max_retries=3, strategy=RetryStrategy.CONSTANT, initial_delay_seconds=10.0
        ),
        timeout=grace(0.1),
    )
    # With a 0.1 s grace period the run must end long before this deadline.
    result, _ = await stop_when(pipeline, failed, hanging, limit=2)
    assert result.status is PipelineStatus.CANCELLED
    assert result.stage_results["s"].status is StageStatus.CANCELLED
    assert result.stage_results["h"].status is StageStatus.CANCELLED


async def test_r5_2_stage_given_a_slot_but_not_called_ends_cancelled_with_zero_attempts() -> None:
    called: list[str] = []

    def make(name: str) -> Any:
        def handler(ctx: PipelineContext, _: Any) -> str:
            called.append(name)
            ctx.cancel()  # both got a slot; whichever runs first stops the run
            return name

        return handler

    pipeline = make_pipeline(
        st("x", make("x")), st("y", make("y")), timeout=grace(2.0), executor="inline"
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    assert len(called) == 1
    ran, other = called[0], ({"x", "y"} - set(called)).pop()
    assert result.stage_results[ran].status is StageStatus.COMPLETED
    assert result.stage_results[ran].attempt_count == 1
    assert result.stage_results[other].status is StageStatus.CANCELLED
    assert result.stage_results[other].attempt_count == 0
    assert result.stage_results[other].start_time is None


# -- R5.3 how never-started stages end ------------------------------------------------------------


async def test_r5_3_never_started_stages_skipped_if_upstream_failed_else_cancelled() -> None:
    pipeline = make_pipeline(
        st("ok", returns(1)),
        st("bad", raises(ValueError, "critical failure")),
        st("child", returns(2), ["bad"]),
        st("grandchild", returns(3), ["child"]),
        st("indep", returns(4)),
        st("after_ok", returns(5), ["ok"]),
        st("mixed", returns(6), ["indep", "child"]),
        parallel_stages=False,
    )
    result = await pipeline.execute()
    statuses = {sid: r.status for sid, r in result.stage_results.items()}
    assert statuses == {
        "ok": StageStatus.COMPLETED,
        "bad": StageStatus.FAILED,
        "child": StageStatus.SKIPPED,
        "grandchild": StageStatus.SKIPPED,
        "indep": StageStatus.CANCELLED,
        "after_ok": StageStatus.CANCELLED,
        "mixed": StageStatus.SKIPPED,
    }
    for sid in ("child", "grandchild", "mixed"):
        exc = result.stage_results[sid].exception
        assert isinstance(exc, DependencyFailedException)
        assert exc.failed_dependency == "bad"
    assert result.status is PipelineStatus.FAILED
    assert result.cancellation_reason is CancellationReason.ERROR


async def test_r5_3_dependents_of_a_stage_timing_out_during_grace_are_skipped() -> None:
    started = anyio.Event()
    pipeline = make_pipeline(
        st("slow", blocks_forever(started), timeout_seconds=0.1),
        st("after_slow", returns(1), ["slow"]),
        timeout=grace(2.0),
    )
    result, _ = await stop_when(pipeline, started)
    assert result.stage_results["slow"].status is StageStatus.TIMED_OUT
    assert result.stage_results["after_slow"].status is StageStatus.SKIPPED
    assert result.status is PipelineStatus.CANCELLED


@pytest.mark.parametrize("trigger", ["cancel", "pipeline_timeout"])
async def test_r5_3_stage_cancelled_by_a_stop_is_never_timed_out(trigger: str) -> None:
    started = anyio.Event()
    pipeline_timeout = 0.05 if trigger == "pipeline_timeout" else None
    pipeline = make_pipeline(
        st("a", blocks_forever(started), timeout_seconds=0.3),
        timeout=grace(0, pipeline_timeout_seconds=pipeline_timeout),
    )
    result, _ = await stop_when(
        pipeline, started, stop=pipeline.cancel if trigger == "cancel" else lambda: None
    )
    stage = result.stage_results["a"]
    assert stage.status is StageStatus.CANCELLED
    assert not isinstance(stage.exception, StageTimeoutException)
    assert result.failed_stages == []


# -- R5.4 cleanup ---------------------------------------------------------------------------------


async def test_r5_4_cleanup_runs_in_reverse_start_order_one_at_a_time() -> None:
    start_order: list[str] = []
    log: list[tuple[str, str]] = []
    active = [0, 0]  # now, max
    all_started = anyio.Event()

    def handler(name: str) -> Any:
        async def run(ctx: Any, _: Any) -> None:
            start_order.append(name)
            if len(start_order) == 3:
                all_started.set()
            await anyio.sleep_forever()

        return run

    def cleanup(name: str) -> Any:
        async def run(ctx: PipelineContext) -> None:
            active[0] += 1
            active[1] = max(active)
            log.append(("enter", name))
            await anyio.sleep(0.01)
            await anyio.lowlevel.checkpoint()
            log.append(("exit", name))
            active[0] -= 1

        return run

    pipeline = make_pipeline(
        *(st(n, handler(n), cleanup_handler=cleanup(n)) for n in ("a", "b", "c")),
        max_parallel=3,
        timeout=grace(0),
    )
    await stop_when(pipeline, all_started)
    expected: list[tuple[str, str]] = []
    for name in reversed(start_order):
        expected += [("enter", name), ("exit", name)]
    assert log == expected
    assert active[1] == 1


async def test_r5_4_cleanup_runs_in_reverse_start_order_sequential_chain() -> None:
    log: list[str] = []
    started = anyio.Event()
    pipeline = make_pipeline(
        st("a", returns(1), cleanup_handler=recording_cleanup(log, "a")),
        st("b", returns(2), ["a"], cleanup_handler=recording_cleanup(log, "b")),
        st("c", blocks_forever(started), ["b"], cleanup_handler=recording_cleanup(log, "c")),
        parallel_stages=False,
        timeout=grace(0),
    )
    await stop_when(pipeline, started)
    assert log == ["c", "b", "a"]


async def test_r5_4_cleanup_only_for_stages_that_started() -> None:
    log: list[str] = []
    started = anyio.Event()
    pipeline = make_pipeline(
        st("a", blocks_forever(started), cleanup_handler=recording_cleanup(log, "a")),
        st("b", returns(2), ["a"], cleanup_handler=recording_cleanup(log, "b")),
        st("q", returns(3), cleanup_handler=recording_cleanup(log, "q")),  # queued, no slot
        max_parallel=1,
        timeout=grace(0),
    )
    await stop_when(pipeline, started)
    assert log == ["a"]


async def test_r5_4_no_cleanup_for_a_stage_given_a_slot_but_not_called() -> None:
    called: list[str] = []
    log: list[str] = []

    def make(name: str) -> Any:
        def handler(ctx: PipelineContext, _: Any) -> str:
            called.append(name)
            ctx.cancel()
            return name

        return handler

    pipeline = make_pipeline(
        st("x", make("x"), cleanup_handler=recording_cleanup(log, "x")),
        st("y", make("y"), cleanup_handler=recording_cleanup(log, "y")),
        executor="inline",  # sync handlers on the loop: one at a time
    )
    with anyio.fail_after(5):
        await pipeline.execute()
    assert log == called


async def test_r5_4_cleanup_is_shielded_from_the_callers_cancellation() -> None:
    started = anyio.Event()
    log: list[str] = []

    async def slow_cleanup(ctx: PipelineContext) -> None:
        log.append("begin")
        await anyio.sleep(0.05)
        await anyio.lowlevel.checkpoint()
        log.append("end")

    pipeline = make_pipeline(st("a", blocks_forever(started), cleanup_handler=slow_cleanup))
    with anyio.fail_after(5), anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pipeline.execute)
            await started.wait()
            scope.cancel()
    assert log == ["begin", "end"]
    assert pipeline.result is not None
    assert "cleanup_errors" not in pipeline.result.metadata


async def test_r5_4_hanging_cleanup_is_bounded_by_cleanup_timeout_and_recorded() -> None:
    started = anyio.Event()
    log: list[str] = []

    async def hangs(ctx: PipelineContext) -> None:
        log.append("b begins")
        await anyio.sleep_forever()

    pipeline = make_pipeline(
        st("a", returns(1), cleanup_handler=recording_cleanup(log, "a")),
        st("b", blocks_forever(started), ["a"], cleanup_handler=hangs),
        timeout=grace(0, cleanup_timeout_seconds=0.1),
    )
    result, _ = await stop_when(pipeline, started)
    assert log == ["b begins", "a"]  # the next cleanup still ran
    errors = result.metadata["cleanup_errors"]
    assert set(errors) == {"b"}
    assert "time" in str(errors["b"]).lower()
    assert result.status is PipelineStatus.CANCELLED
    assert result.cancellation_reason is CancellationReason.USER_REQUESTED


async def test_r5_4_raising_cleanup_is_recorded_and_does_not_change_the_status() -> None:
    started = anyio.Event()
    log: list[str] = []

    async def broken(ctx: PipelineContext) -> None:
        log.append("b")
        raise RuntimeError("cleanup broke")

    pipeline = make_pipeline(
        st("a", returns(1), cleanup_handler=recording_cleanup(log, "a")),
        st("b", blocks_forever(started), ["a"], cleanup_handler=broken),
        timeout=grace(0),
    )
    result, _ = await stop_when(pipeline, started)
    assert log == ["b", "a"]
    errors = result.metadata["cleanup_errors"]
    assert set(errors) == {"b"}
    assert "cleanup broke" in str(errors["b"])
    assert "RuntimeError" in str(errors["b"])
    assert result.status is PipelineStatus.CANCELLED
    assert result.stage_results["a"].status is StageStatus.COMPLETED
    assert result.stage_results["b"].status is StageStatus.CANCELLED


@pytest.mark.parametrize("trigger", ["cancel", "critical_failure", "pipeline_timeout"])
async def test_r5_4_cleanup_runs_after_every_kind_of_stop(trigger: str) -> None:
    started = anyio.Event()
    log: list[str] = []

    async def fails(ctx: Any, _: Any) -> None:
        await started.wait()
        raise ValueError("boom")

    stages = [st("a", blocks_forever(started), cleanup_handler=recording_cleanup(log, "a"))]
    if trigger == "critical_failure":
        stages.append(st("f", fails, cleanup_handler=recording_cleanup(log, "f")))
    pipeline = make_pipeline(
        *stages,
        timeout=grace(0, pipeline_timeout_seconds=0.05 if trigger == "pipeline_timeout" else None),
    )
    await stop_when(
        pipeline, started, stop=pipeline.cancel if trigger == "cancel" else lambda: None
    )
    assert sorted(log) == (["a", "f"] if trigger == "critical_failure" else ["a"])


async def test_r5_4_cleanup_on_cancel_false_skips_cleanup() -> None:
    started = anyio.Event()
    log: list[str] = []
    pipeline = make_pipeline(
        st("a", blocks_forever(started), cleanup_handler=recording_cleanup(log, "a")),
        cleanup_on_cancel=False,
        timeout=grace(0),
    )
    await stop_when(pipeline, started)
    assert log == []
    assert pipeline.result is not None
    assert pipeline.result.status is PipelineStatus.CANCELLED


async def test_r5_4_no_cleanup_after_a_normal_finish() -> None:
    log: list[str] = []

    completed = make_pipeline(
        st("a", returns(1), cleanup_handler=recording_cleanup(log, "a")),
        st("b", returns(2), ["a"], cleanup_handler=recording_cleanup(log, "b")),
    )
    assert (await completed.execute()).status is PipelineStatus.COMPLETED

    kept_going = make_pipeline(
        st("a", returns(1), cleanup_handler=recording_cleanup(log, "a")),
        st(
            "f", raises(ValueError, "optional failure"), cleanup_handler=recording_cleanup(log, "f")
        ),
        continue_on_error=True,
    )
    result = await kept_going.execute()
    assert result.status is PipelineStatus.FAILED
    assert result.cancellation_reason is None
    assert log == []


# -- R5.5 pipeline timeout ------------------------------------------------------------------------


async def test_r5_5_pipeline_timeout_fails_with_reason_timeout() -> None:
    log: list[str] = []
    started_at = time.perf_counter()
    pipeline = make_pipeline(
        st("a", blocks_forever(log=log), timeout_seconds=None),
        st("b", returns(1), ["a"]),
        timeout=grace(0.05, pipeline_timeout_seconds=0.1, stage_timeout_seconds=None),
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    elapsed = time.perf_counter() - started_at
    assert result.status is PipelineStatus.FAILED
    assert result.cancellation_reason is CancellationReason.TIMEOUT
    assert result.metadata["pipeline_timeout_seconds"] == 0.1
    assert result.stage_results["a"].status is StageStatus.CANCELLED
    assert result.stage_results["b"].status is StageStatus.CANCELLED
    assert log == ["cancelled"]
    assert elapsed >= 0.09


# -- R5.6 the caller's cancellation and BaseExceptions --------------------------------------------


async def test_r5_6_caller_cancel_scope_propagates_and_records_external() -> None:
    started = anyio.Event()
    log: list[str] = []
    outcome: list[str] = []
    pipeline = make_pipeline(
        st("a", blocks_forever(started, log), cleanup_handler=recording_cleanup(log, "cleanup")),
        st("b", returns(1), ["a"]),
        timeout=grace(5.0),
    )

    async def run() -> None:
        try:
            await pipeline.execute()
        except anyio.get_cancelled_exc_class():
            outcome.append("cancelled")
            raise
        outcome.append("returned")

    with anyio.fail_after(5), anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await started.wait()
            cancelled_at = time.perf_counter()
            scope.cancel()
    elapsed = time.perf_counter() - cancelled_at
    assert outcome == ["cancelled"]
    assert scope.cancelled_caught
    assert log == ["cancelled", "cleanup"]
    assert elapsed < 2.5  # at once: no 5 s grace period
    result = pipeline.result
    assert result is not None
    assert result.status is PipelineStatus.CANCELLED
    assert result.cancellation_reason is CancellationReason.EXTERNAL
    assert result.stage_results["a"].status is StageStatus.CANCELLED
    assert result.stage_results["b"].status is StageStatus.CANCELLED
    assert not pipeline.is_running


async def test_r5_6_move_on_after_around_execute_is_not_swallowed() -> None:
    reached: list[bool] = []
    log: list[str] = []
    pipeline = make_pipeline(
        st("a", blocks_forever(), cleanup_handler=recording_cleanup(log, "cleanup"))
    )
    with anyio.fail_after(5), anyio.move_on_after(0.05) as scope:
        await pipeline.execute()
        reached.append(True)
    assert reached == []
    assert scope.cancelled_caught
    assert log == ["cleanup"]
    assert pipeline.result is not None
    assert pipeline.result.status is PipelineStatus.CANCELLED
    assert pipeline.result.cancellation_reason is CancellationReason.EXTERNAL


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
async def test_r5_6_base_exception_in_a_stage_is_reraised_as_itself_after_cleanup(
    exc_type: type[BaseException],
) -> None:
    other_started = anyio.Event()
    log: list[str] = []
    raised = exc_type()

    async def interrupts(ctx: Any, _: Any) -> None:
        await other_started.wait()
        raise raised

    pipeline = make_pipeline(
        st("kb", interrupts, cleanup_handler=recording_cleanup(log, "kb cleanup")),
        st(
            "other",
            blocks_forever(other_started, log),
            cleanup_handler=recording_cleanup(log, "other cleanup"),
        ),
        st("after", returns(1), ["other"]),
        retry=RetryConfig(max_retries=2, strategy=RetryStrategy.IMMEDIATE),
        timeout=grace(5.0),
    )
    started_at = time.perf_counter()
    with anyio.fail_after(5), pytest.raises(exc_type) as excinfo:
        await pipeline.execute()
    elapsed = time.perf_counter() - started_at
    assert excinfo.value is raised
    assert elapsed < 2.5  # the others were cancelled at once, not after the grace
    result = pipeline.result
    assert result is not None
    assert result.status is PipelineStatus.CANCELLED
    assert result.cancellation_reason is CancellationReason.EXTERNAL
    kb = result.stage_results["kb"]
    assert kb.status is StageStatus.FAILED
    assert kb.exception is raised
    assert kb.attempt_count == 1
    assert result.stage_results["other"].status is StageStatus.CANCELLED
    assert result.stage_results["after"].status is StageStatus.CANCELLED
    assert "cancelled" in log
    assert sorted(x for x in log if "cleanup" in x) == ["kb cleanup", "other cleanup"]
    assert not pipeline.is_running


# -- R5.7 waits return promptly on cancel ---------------------------------------------------------


async def test_r5_7_wait_if_paused_in_a_stage_returns_promptly_on_cancel() -> None:
    started, go = anyio.Event(), anyio.Event()
    seen: list[str] = []

    async def waits(ctx: PipelineContext, _: Any) -> None:
        started.set()
        await go.wait()
        await ctx.wait_if_paused()
        seen.append("returned")
        ctx.check_cancelled()

    pipeline = make_pipeline(st("a", waits), timeout=grace(2.0))
    async with executing(pipeline):
        await started.wait()
        pipeline.pause()
        go.set()
        await anyio.wait_all_tasks_blocked()
        assert seen == []  # held by the pause
        cancelled_at = time.perf_counter()
        pipeline.cancel()
    elapsed = time.perf_counter() - cancelled_at
    assert seen == ["returned"]
    assert finished(pipeline).stage_results["a"].status is StageStatus.CANCELLED
    assert elapsed < 1.0  # well below the 2 s grace period


async def test_r5_7_wait_if_paused_on_a_standalone_context_returns_on_cancel() -> None:
    ctx = PipelineContext(pipeline_id="abc", config=PipelineConfig(name="standalone"))
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
            ctx.cancel()
            await returned.wait()
    assert ctx.is_paused  # returned because of the cancel, not a resume
