"""Regression tests for the engine-side bugs of the reliability issue (#9).

Each test names the rule it holds the engine to. Races are forced with
events and barriers the test controls, never looped until they happen.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import sys
import threading
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from helpers import executing, grace, make_pipeline, ok, st

from proxima.data.pipeline import (
    CancellationReason,
    EventKind,
    Pipeline,
    PipelineAlreadyRunningError,
    PipelineContext,
    PipelineEvent,
    PipelineStatus,
    RetryConfig,
    RetryStrategy,
    StageStatus,
    TimeoutConfig,
)

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio

LIMIT = 10
#: What every test here sets in a stage and looks for in others.
probe: contextvars.ContextVar[str] = contextvars.ContextVar("probe", default="unset")


# -- 1, 2: each attempt starts in a copy of the caller's context ----------------------------------


async def test_r2_context_variable_of_a_stage_is_invisible_to_dependents_and_slot_successors() -> (
    None
):
    seen: dict[str, str] = {}

    async def setter(ctx: PipelineContext, _: Any) -> str:
        seen["setter"] = probe.get()
        probe.set("leaked")
        return "a"

    def reader(name: str) -> Any:
        async def handler(ctx: PipelineContext, _: Any) -> str:
            seen[name] = probe.get()
            return name

        return handler

    token = probe.set("caller")
    try:
        # max_parallel=1: "next" takes the very slot "a" gave back, "child" depends on "a".
        pipeline = make_pipeline(
            st("a", setter),
            st("child", reader("child"), ["a"]),
            st("next", reader("next")),
            max_parallel=1,
        )
        with anyio.fail_after(LIMIT):
            result = await pipeline.execute()
    finally:
        probe.reset(token)
    assert result.status is PipelineStatus.COMPLETED
    assert seen == {"setter": "caller", "child": "caller", "next": "caller"}


async def test_r9_2_stages_started_by_resume_from_another_thread_see_the_callers_context() -> None:
    seen: list[str] = []

    paused = anyio.Event()

    async def pauser(ctx: PipelineContext, _: Any) -> str:
        ctx.pause()
        paused.set()
        return "p"

    async def later(ctx: PipelineContext, _: Any) -> str:
        seen.append(probe.get())
        return "l"

    pipeline = make_pipeline(st("p", pauser), st("later", later, ["p"]))
    token = probe.set("caller")
    try:
        async with executing(pipeline, limit=LIMIT):
            await paused.wait()
            await anyio.wait_all_tasks_blocked()
            other = contextvars.Context()  # the resuming thread has a context of its own
            await anyio.to_thread.run_sync(other.run, pipeline.resume)
    finally:
        probe.reset(token)
    assert seen == ["caller"]


# -- 3: control calls from another thread return at once, never deadlock --------------------------


async def test_r5_1_cancel_from_a_thread_returns_while_the_loop_thread_is_blocked() -> None:
    """An inline ``def`` stage blocks the loop's thread until a foreign
    thread's ``cancel()``, ``pause()`` and ``resume()`` have all returned:
    with a blocking hand-off this deadlocks (the test's own limit fails it)."""
    returned = threading.Event()

    def blocker(ctx: PipelineContext, _: Any) -> str:
        def control() -> None:
            ctx.pause()
            ctx.resume()
            ctx.cancel()
            returned.set()

        worker = threading.Thread(target=control)
        worker.start()
        assert returned.wait(LIMIT), "a control call waited for the blocked loop"
        worker.join()
        return "done"

    pipeline = make_pipeline(st("b", blocker), st("after", ok, ["b"]), executor="inline")
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.CANCELLED
    assert result.stage_results["b"].status is StageStatus.COMPLETED
    assert result.stage_results["after"].status is StageStatus.CANCELLED
    assert result.stage_results["after"].attempt_count == 0


def test_r5_1_two_pipelines_in_two_threads_cancelling_each_other_do_not_deadlock() -> None:
    both_in = threading.Barrier(2, timeout=LIMIT)
    pipelines: dict[str, Pipeline] = {}

    def crossing(other: str) -> Any:
        def handler(ctx: PipelineContext, _: Any) -> str:
            both_in.wait()  # both loops' threads are now blocked in a stage
            pipelines[other].cancel()
            both_in.wait()
            return "crossed"

        return handler

    for name, other in (("left", "right"), ("right", "left")):
        pipelines[name] = make_pipeline(
            st("x", crossing(other)), st("y", ok, ["x"]), executor="inline"
        )
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(p.run_sync) for p in pipelines.values()]
        results = [f.result(timeout=LIMIT) for f in futures]
    assert [r.status for r in results] == [PipelineStatus.CANCELLED] * 2


async def test_r5_1_worker_of_a_stage_own_pool_calling_cancel_does_not_deadlock() -> None:
    def handler(ctx: PipelineContext, _: Any) -> str:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(ctx.cancel).result(timeout=LIMIT)
        return "done"

    pipeline = make_pipeline(st("s", handler), st("t", ok, ["s"]), executor="inline")
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.CANCELLED
    assert result.stage_results["t"].status is StageStatus.CANCELLED


def test_r5_1_context_cancel_from_a_thread_after_a_run_on_a_stopped_loop_returns() -> None:
    import asyncio

    pipeline = make_pipeline(st("a", ok))
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(pipeline.execute())  # the loop is stopped, not closed
        ctx = pipeline.context
        assert ctx is not None
        worker = threading.Thread(target=ctx.cancel)
        worker.start()
        worker.join(LIMIT)
        assert not worker.is_alive(), "cancel() from a thread hung on a stopped loop"
        assert ctx.is_cancelled  # a standalone context records the request
    finally:
        loop.close()


# -- 4: a cancel from another thread right after execute() began is not lost ----------------------


async def test_r5_1_cancel_from_a_thread_right_after_execute_began_stops_the_run() -> None:
    """The cancel is sent from a thread at RUN_STARTED, the earliest moment
    the run is visible, and the listener waits until that thread's call has
    returned: the run must still stop."""
    calls: list[str] = []

    async def stage(ctx: PipelineContext, _: Any) -> str:
        calls.append("ran")
        return "x"

    pipeline = make_pipeline(st("a", stage))

    def at_start(event: PipelineEvent) -> None:
        if event.kind is EventKind.RUN_STARTED:
            worker = threading.Thread(target=pipeline.cancel)
            worker.start()
            worker.join(LIMIT)

    pipeline.add_listener(at_start)
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.CANCELLED
    assert calls == []
    assert result.stage_results["a"].attempt_count == 0


# -- 5: one run at a time, across threads ---------------------------------------------------------


def test_r8_6_second_run_sync_from_another_thread_is_refused() -> None:
    inside = threading.Event()
    release = threading.Event()

    def blocker(ctx: PipelineContext, _: Any) -> str:
        inside.set()
        assert release.wait(LIMIT)
        return "done"

    pipeline = make_pipeline(st("b", blocker))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(pipeline.run_sync)
        assert inside.wait(LIMIT)
        second = pool.submit(pipeline.run_sync, backend="trio")
        with pytest.raises(PipelineAlreadyRunningError):
            second.result(timeout=LIMIT)
        release.set()
        assert first.result(timeout=LIMIT).status is PipelineStatus.COMPLETED


# -- 6: an exception whose __str__ raises fails its stage -----------------------------------------


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


async def test_r8_5_exception_with_a_raising_str_fails_the_stage_not_the_run() -> None:
    async def bad(ctx: PipelineContext, _: Any) -> None:
        raise _Unprintable()

    pipeline = make_pipeline(st("bad", bad, critical=False), st("good", ok))
    pipeline.add_listener(lambda event: None)  # events carry the error text too
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    stage_result = result.stage_results["bad"]
    assert stage_result.status is StageStatus.FAILED
    assert isinstance(stage_result.exception, _Unprintable)
    assert stage_result.error is not None
    assert "_Unprintable" in stage_result.error
    assert result.status is PipelineStatus.PARTIALLY_COMPLETED


# -- 7: a handler's own task group under a forced stop --------------------------------------------


async def test_r1_4_handler_task_group_failing_while_forced_never_leaks_a_group() -> None:
    """When the grace period runs out, the handler's own task group holds the
    run's cancellation and its child's error (trio gathers both): execute()
    still returns, FAILED by the pipeline timeout."""

    async def child() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            raise ValueError("child broke while cancelled")

    async def handler(ctx: PipelineContext, _: Any) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(child)
            await anyio.sleep_forever()

    pipeline = make_pipeline(
        st("h", handler),
        timeout=TimeoutConfig(pipeline_timeout_seconds=0.05, grace_period_seconds=0.0),
    )
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.FAILED
    assert result.cancellation_reason is CancellationReason.TIMEOUT
    assert result.stage_results["h"].status in (StageStatus.CANCELLED, StageStatus.FAILED)


# -- 8: a BaseException from a cleanup or a listener ----------------------------------------------


class _Fatal(BaseException):
    pass


async def test_r5_6_base_exception_in_a_cleanup_runs_every_cleanup_records_then_reraises() -> None:
    cleaned: list[str] = []
    finished: list[PipelineEvent] = []

    def cleanup(name: str, exc: BaseException | None) -> Any:
        async def handler(ctx: PipelineContext) -> None:
            cleaned.append(name)
            if exc is not None:
                raise exc

        return handler

    async def stopper(ctx: PipelineContext, _: Any) -> str:
        ctx.cancel()
        return "s"

    pipeline = make_pipeline(
        st("a", ok, cleanup_handler=cleanup("a", None)),
        st("b", ok, ["a"], cleanup_handler=cleanup("b", _Fatal("in cleanup"))),
        st("c", stopper, ["b"], cleanup_handler=cleanup("c", None)),
    )
    pipeline.add_listener(
        lambda event: finished.append(event) if event.kind is EventKind.RUN_FINISHED else None
    )
    with anyio.fail_after(LIMIT), pytest.raises(_Fatal, match="in cleanup"):
        await pipeline.execute()
    assert cleaned == ["c", "b", "a"]
    result = pipeline.result
    assert result is not None
    assert result.status is PipelineStatus.CANCELLED
    assert "b" in result.metadata["cleanup_errors"]
    assert len(finished) == 1


async def test_r5_6_base_exception_from_a_listener_at_run_started_is_reraised_after_the_run() -> (
    None
):
    calls: list[str] = []

    async def stage(ctx: PipelineContext, _: Any) -> str:
        calls.append("ran")
        return "x"

    def listener(event: PipelineEvent) -> None:
        if event.kind is EventKind.RUN_STARTED:
            raise _Fatal("listener")

    pipeline = make_pipeline(st("a", stage))
    pipeline.add_listener(listener)
    with anyio.fail_after(LIMIT), pytest.raises(_Fatal, match="listener"):
        await pipeline.execute()
    assert calls == []
    assert pipeline.result is not None
    assert pipeline.result.status is PipelineStatus.CANCELLED
    assert pipeline.result.cancellation_reason is CancellationReason.EXTERNAL
    assert not pipeline.is_running


# -- 9 and the survivors: the caller's cancellation takes over a stop under way -------------------


async def test_r5_6_outer_deadline_expiring_during_a_user_stops_cleanup_is_reported() -> None:
    cleanup_started = anyio.Event()

    async def slow_cleanup(ctx: PipelineContext) -> None:
        cleanup_started.set()
        await anyio.sleep(0.3)

    async def stopper(ctx: PipelineContext, _: Any) -> str:
        ctx.cancel()
        return "s"

    pipeline = make_pipeline(st("s", stopper, cleanup_handler=slow_cleanup), timeout=grace(0.0))
    with anyio.fail_after(LIMIT):
        with anyio.move_on_after(0.1) as outer:
            await pipeline.execute()
    assert outer.cancelled_caught, "the caller's cancellation was swallowed"
    assert cleanup_started.is_set()
    result = pipeline.result
    assert result is not None
    assert result.status is PipelineStatus.CANCELLED
    assert result.cancellation_reason is CancellationReason.EXTERNAL
    assert result.metadata["cleanup"]["s"]["error"] is None  # the cleanup ran to its end


@pytest.mark.parametrize("stop", ["user", "pipeline_timeout"])
async def test_r5_6_callers_cancellation_during_a_stops_grace_period_takes_over(stop: str) -> None:
    in_grace = anyio.Event()

    async def lingering(ctx: PipelineContext, _: Any) -> None:
        if stop == "user":
            ctx.cancel()
        try:
            await anyio.sleep_forever()
        finally:
            in_grace.set()

    timeout = TimeoutConfig(
        grace_period_seconds=None,
        pipeline_timeout_seconds=0.05 if stop == "pipeline_timeout" else None,
    )
    pipeline = make_pipeline(st("l", lingering), timeout=timeout)
    stopping = anyio.Event()
    pipeline.add_listener(
        lambda event: stopping.set() if event.kind is EventKind.STOP_REQUESTED else None
    )
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                await pipeline.execute()

            tg.start_soon(run)
            await stopping.wait()
            await anyio.wait_all_tasks_blocked()  # the stop waits out an unbounded grace
            tg.cancel_scope.cancel()
    assert in_grace.is_set()
    result = pipeline.result
    assert result is not None
    assert result.status is PipelineStatus.CANCELLED
    assert result.cancellation_reason is CancellationReason.EXTERNAL


async def test_r5_6_after_a_sibling_keyboard_interrupt_a_swallowing_stage_ends_cancelled() -> None:
    swallowing = anyio.Event()

    async def swallower(ctx: PipelineContext, _: Any) -> str:
        try:
            swallowing.set()
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            pass  # swallowed: it returns a value anyway
        return "kept?"

    async def interrupter(ctx: PipelineContext, _: Any) -> None:
        await swallowing.wait()
        raise KeyboardInterrupt

    pipeline = make_pipeline(st("swallow", swallower), st("ki", interrupter))
    with anyio.fail_after(LIMIT), pytest.raises(KeyboardInterrupt):
        await pipeline.execute()
    result = pipeline.result
    assert result is not None
    assert result.stage_results["swallow"].status is StageStatus.CANCELLED
    assert result.stage_results["ki"].status is StageStatus.FAILED


# -- 14, 16 and idle control ----------------------------------------------------------------------


async def test_r1_3_run_sync_inside_a_running_loop_says_to_await_execute() -> None:
    pipeline = make_pipeline(st("a", ok))
    with pytest.raises(RuntimeError, match=r"await pipeline\.execute\(\)"):
        pipeline.run_sync()


def test_r5_1_cancel_validates_its_reason_while_idle_too() -> None:
    pipeline = make_pipeline(st("a", ok))
    with pytest.raises(TypeError, match="'user'"):
        pipeline.cancel("user")  # type: ignore[arg-type]


async def test_r5_1_r9_1_control_calls_on_an_idle_pipeline_leave_the_last_context_alone() -> None:
    pipeline = make_pipeline(st("a", ok))
    with anyio.fail_after(LIMIT):
        await pipeline.execute()
    ctx = pipeline.context
    assert ctx is not None
    pipeline.cancel()
    pipeline.pause()
    pipeline.resume()
    assert not ctx.is_cancelled
    assert not ctx.is_paused
    assert pipeline.status is PipelineStatus.COMPLETED


# -- the handler's own group without a stop is its failure ----------------------------------------


async def test_r8_5_handler_task_group_error_without_a_stop_fails_the_stage() -> None:
    async def handler(ctx: PipelineContext, _: Any) -> None:
        async def child() -> None:
            raise ValueError("child")

        async with anyio.create_task_group() as tg:
            tg.start_soon(child)

    pipeline = make_pipeline(st("h", handler, critical=False), st("o", ok))
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    stage_result = result.stage_results["h"]
    assert stage_result.status is StageStatus.FAILED
    assert isinstance(stage_result.exception, BaseExceptionGroup)
    assert result.status is PipelineStatus.PARTIALLY_COMPLETED


# -- R11.5: work an executor could not stop is reported ----------------------------------------


async def test_r11_5_thread_left_running_is_reported_by_event_log_and_metadata(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    events: list[PipelineEvent] = []

    def blocking(ctx: PipelineContext, _: Any) -> str:
        release.wait(LIMIT)  # cannot be interrupted: the thread is abandoned at the deadline
        return "late"

    pipeline = make_pipeline(st("b", blocking, timeout_seconds=0.05), executor="thread")
    pipeline.add_listener(events.append)
    try:
        with anyio.fail_after(LIMIT):
            result = await pipeline.execute()
    finally:
        release.set()
    assert result.stage_results["b"].status is StageStatus.TIMED_OUT
    assert "b" in result.metadata["still_running"]
    kinds = [e.kind for e in events]
    assert kinds[-2:] == [EventKind.WORK_LEFT_RUNNING, EventKind.RUN_FINISHED]
    assert events[-2].stage_id == "b"
    assert any(
        r.levelname == "WARNING" and "work_left_running" in r.getMessage() for r in caplog.records
    )


async def test_r6_3_cancel_from_a_thread_seen_before_its_signal_lands_still_stops_the_run() -> None:
    """The thread's cancel is visible on the context at once; when the loop
    sees it first (here: "b" already holds a slot and its attempt starts
    while the signal is still queued), "b" is never called and the run ends
    CANCELLED by the user, not COMPLETED with a stage cancelled by nobody."""

    def cancel_from_a_thread(ctx: PipelineContext, _: Any) -> str:
        worker = threading.Thread(target=ctx.cancel)
        worker.start()
        worker.join(LIMIT)  # the signal is queued; the loop has not run since
        return "a"

    pipeline = make_pipeline(
        st("a", cancel_from_a_thread), st("b", ok), max_parallel=2, executor="inline"
    )
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.CANCELLED
    assert result.cancellation_reason is CancellationReason.USER_REQUESTED
    b = result.stage_results["b"]
    # trio may start "b" before "a": then it ran before the cancel existed.
    assert (b.status, b.attempt_count) in ((StageStatus.CANCELLED, 0), (StageStatus.COMPLETED, 1))


@pytest.mark.parametrize("retries", [0, 1])
async def test_r4_6_r6_3_failure_right_after_a_threads_cancel_is_not_retried_and_run_is_cancelled(
    retries: int,
) -> None:
    """Another thread's ``cancel()`` has returned, its signal not yet on the
    loop, when the stage fails: the stop came first. No retry (R4.6), the
    stage ends FAILED, the run CANCELLED by the user (R6.3)."""

    def fails_after_a_threads_cancel(ctx: PipelineContext, _: Any) -> None:
        worker = threading.Thread(target=ctx.cancel)
        worker.start()
        worker.join(LIMIT)
        assert ctx.is_cancelled
        raise ValueError("after the stop")

    retry = RetryConfig(strategy=RetryStrategy.IMMEDIATE, max_retries=retries)
    pipeline = make_pipeline(st("f", fails_after_a_threads_cancel), retry=retry, executor="inline")
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.CANCELLED
    assert result.cancellation_reason is CancellationReason.USER_REQUESTED
    assert result.stage_results["f"].status is StageStatus.FAILED
    assert result.stage_results["f"].attempt_count == 1
