"""Adversarial cases: the combinations users hit, each followed by a second
run of the same pipeline (R8.6: it must be reusable).

Every async test runs on asyncio (debug), trio and asyncio+uvloop (the
``anyio_backend`` fixture of conftest.py). Synchronisation uses events and
counters; the few sleeps are tiny "do some work" steps. ``Track`` wraps every
handler: it counts live handlers and records first starts and cleanups, so
each test can check that a stop left nothing running (R5.2) and ran cleanup
once per started stage in reverse start order (R5.4).

Tests named ``test_regression_*`` pin contract violations found by this
layer; they fail until the library is fixed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from helpers import NO_RETRY, executing

from proxima.data.pipeline import (
    CancellationReason,
    DependencyFailedException,
    Pipeline,
    PipelineCancelledException,
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

Body = Callable[[PipelineContext, Any], Awaitable[Any]]
TERMINAL = {
    StageStatus.COMPLETED,
    StageStatus.FAILED,
    StageStatus.TIMED_OUT,
    StageStatus.CANCELLED,
    StageStatus.SKIPPED,
}
#: Upper bound for anything that must end "promptly": far above any delay
#: used here, far below the long delays a bug would wait out.
PROMPT = 10.0


class Track:
    """Builds stages whose handlers are counted and whose cleanups are logged.

    ``calm = True`` turns every handler into "return '<id>-ok'", for the
    second run that checks the pipeline is reusable.
    """

    def __init__(self) -> None:
        self.calm = False
        self.live = 0
        self.starts: list[str] = []
        self.cleanups: list[str] = []
        self.live_at_cleanup: list[int] = []
        self.with_cleanup: set[str] = set()
        self.ids: list[str] = []

    def reset(self) -> None:
        self.live = 0
        self.starts.clear()
        self.cleanups.clear()
        self.live_at_cleanup.clear()

    def stage(
        self,
        sid: str,
        body: Body,
        deps: Iterable[str] = (),
        *,
        cleanup: Callable[[PipelineContext], Awaitable[None]] | None = None,
        with_cleanup: bool = True,
        **kw: Any,
    ) -> Stage:
        async def handler(ctx: PipelineContext, value: Any) -> Any:
            self.live += 1
            if sid not in self.starts:
                self.starts.append(sid)
            try:
                if self.calm:
                    await anyio.lowlevel.checkpoint()
                    return f"{sid}-ok"
                return await body(ctx, value)
            finally:
                self.live -= 1

        async def default_cleanup(ctx: PipelineContext) -> None:
            await anyio.lowlevel.checkpoint()

        async def logged_cleanup(ctx: PipelineContext) -> None:
            self.cleanups.append(sid)
            self.live_at_cleanup.append(self.live)
            await (cleanup or default_cleanup)(ctx)

        self.ids.append(sid)
        if with_cleanup:
            self.with_cleanup.add(sid)
        return Stage(
            stage_id=sid,
            name=sid,
            handler=handler,
            dependencies=list(deps),
            cleanup_handler=logged_cleanup if with_cleanup else None,
            **kw,
        )

    def expected_cleanups(self) -> list[str]:
        """R5.4: every started stage with a cleanup, newest start first."""
        return [sid for sid in reversed(self.starts) if sid in self.with_cleanup]


def make(track_stages: Iterable[Stage], **config: Any) -> Pipeline:
    config.setdefault("retry", NO_RETRY)
    config.setdefault("timeout", TimeoutConfig(grace_period_seconds=0.01))
    pipeline = Pipeline(PipelineConfig(name="adversarial", **config))
    pipeline.add_stages(track_stages)
    return pipeline


def task_ids() -> set[int]:
    return {t.id for t in anyio.get_running_tasks()}


def assert_stopped_cleanly(
    result: PipelineResult | None,
    track: Track,
    *,
    before: set[int] | None = None,
    helpers: Iterable[int] = (),
) -> PipelineResult:
    """R7.1, R5.2, R5.4 after a stop."""
    assert result is not None, "R10.1: pipeline.result must record the run"
    assert list(result.stage_results) == track.ids, "R7.1: one result per stage, in order"
    for sid, sr in result.stage_results.items():
        assert sr.status in TERMINAL, f"R7.1: {sid} ended {sr.status}"
    assert track.live == 0, "R5.2: a handler is still running after execute() returned"
    assert result.cancellation_reason is not None, "R6.4: a stop sets cancellation_reason"
    assert track.cleanups == track.expected_cleanups(), (
        "R5.4: cleanup once per started stage, reverse start order"
    )
    assert not any(track.live_at_cleanup), "R5.4: cleanup ran while handlers were running"
    if before is not None:
        extra = task_ids() - before - set(helpers)
        assert not extra, f"R5.2: tasks left running after execute(): {extra}"
    return result


async def assert_reusable(pipeline: Pipeline, track: Track) -> None:
    """R8.6: the same pipeline runs again from a fresh context."""
    track.calm = True
    track.reset()
    with anyio.fail_after(PROMPT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED, result.summary()
    assert result.cancellation_reason is None
    assert [r.result for r in result.stage_results.values()] == [f"{s}-ok" for s in track.ids]
    assert track.cleanups == [], "R5.4: no cleanup after a normal finish"
    assert pipeline.context is not None
    assert not pipeline.context.is_cancelled, "R8.6: a fresh context"
    track.calm = False


class CallerScope:
    """``execute()`` inside a cancel scope the test cancels, as a caller that
    gives up would; ``outcome`` says whether execute() returned or the
    cancellation reached the caller."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.scope = anyio.CancelScope()
        self.outcome: list[str] = []

    async def run(self) -> None:
        with self.scope:
            try:
                await self.pipeline.execute()
                await anyio.lowlevel.checkpoint()
                self.outcome.append("returned")
            except anyio.get_cancelled_exc_class():
                self.outcome.append("cancelled")
                raise


def hang(started: Callable[[], None] | None = None) -> Body:
    async def body(ctx: PipelineContext, _: Any) -> Any:
        if started is not None:
            started()
        await anyio.sleep_forever()

    return body


def stopper(started: Counter) -> Body:
    """A stage that counts itself started, waits until every counted stage
    has started, then stops the run from inside and keeps running."""

    async def body(ctx: PipelineContext, _: Any) -> Any:
        started()
        await started.reached.wait()
        ctx.cancel()
        await anyio.sleep_forever()

    return body


class Counter:
    """An event that fires once ``count`` reaches ``target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.reached = anyio.Event()

    def __call__(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.reached.set()


# -- cancel storms -----------------------------------------------------------------------


async def _storm_once(
    pipeline: Pipeline, track: Track, state: dict[str, Any], reasons: dict[str, Any]
) -> None:
    """One storm: the trigger stage, a task and a thread cancel together."""
    thread_go = threading.Event()
    results: list[PipelineResult] = []
    helpers: set[int] = set()

    def from_thread() -> None:
        thread_go.wait(PROMPT)
        pipeline.cancel(reasons["thread"])

    async def from_task() -> None:
        helpers.add(anyio.get_current_task().id)
        await state["go"].wait()
        pipeline.cancel(reasons["task"])

    async def thread_helper() -> None:
        helpers.add(anyio.get_current_task().id)
        await anyio.to_thread.run_sync(from_thread)

    async def run() -> None:
        helpers.add(anyio.get_current_task().id)
        results.append(await pipeline.execute())

    before = task_ids()
    with anyio.fail_after(PROMPT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            tg.start_soon(from_task)
            tg.start_soon(thread_helper)
            await state["workers"].reached.wait()
            thread_go.set()
            state["go"].set()
    result = assert_stopped_cleanly(results[0], track, before=before, helpers=helpers)
    assert result.status is PipelineStatus.CANCELLED, "R6.3: cancel() gives CANCELLED"
    assert result.cancellation_reason in reasons.values()
    statuses = {sid: r.status for sid, r in result.stage_results.items()}
    assert all(statuses[f"w{i}"] is StageStatus.CANCELLED for i in range(5))
    assert statuses["trigger"] in (StageStatus.COMPLETED, StageStatus.CANCELLED)
    assert statuses["after"] is StageStatus.CANCELLED
    assert result.stage_results["after"].attempt_count == 0, "R5.2: no new attempt"
    ctx = pipeline.context
    assert ctx is not None
    assert ctx.cancellation_reason is result.cancellation_reason, "R5.1: first reason wins"


async def test_r5_1_cancel_storm_from_stage_task_and_thread_at_once() -> None:
    """R5.1: cancel() from a stage, from another task and from another thread,
    released at the same moment, is one stop: the first reason wins, the
    status is CANCELLED whatever the reason (R6.3), every stage ends once,
    cleanup runs once per started stage (R5.4). Repeated on the same pipeline
    (R8.6), then a calm run."""
    track = Track()
    reasons = {
        "stage": CancellationReason.RESOURCE_LIMIT,
        "task": CancellationReason.USER_REQUESTED,
        "thread": CancellationReason.DEPENDENCY_FAILED,
    }
    state: dict[str, Any] = {}

    async def trigger(ctx: PipelineContext, _: Any) -> str:
        state["workers"]()
        await state["go"].wait()
        ctx.cancel(reasons["stage"])
        return "fired"

    workers = [track.stage(f"w{i}", hang(lambda: state["workers"]())) for i in range(5)]
    pipeline = make(
        [*workers, track.stage("trigger", trigger), track.stage("after", hang(), ["trigger"])],
        max_parallel=8,
    )

    for _ in range(5):
        track.reset()
        state["workers"] = Counter(6)
        state["go"] = anyio.Event()
        await _storm_once(pipeline, track, state, reasons)
    await assert_reusable(pipeline, track)


@pytest.mark.parametrize("reason", [CancellationReason.TIMEOUT, CancellationReason.ERROR])
async def test_r6_3_cancel_with_a_timeout_or_error_reason_still_ends_cancelled(
    reason: CancellationReason,
) -> None:
    """R6.3: after cancel() the status follows who stopped the run, whatever
    the reason given: cancel(TIMEOUT) and cancel(ERROR) end CANCELLED, with
    that reason (R6.4), and no pipeline_timeout_seconds metadata (R7.4)."""
    track = Track()
    started = Counter(2)

    async def canceller(ctx: PipelineContext, _: Any) -> None:
        started()
        await started.reached.wait()
        ctx.cancel(reason)
        await anyio.sleep_forever()

    pipeline = make([track.stage("a", hang(started)), track.stage("b", canceller)])
    before = task_ids()
    with anyio.fail_after(PROMPT):
        result = await pipeline.execute()
    assert_stopped_cleanly(result, track, before=before)
    assert (result.status, result.cancellation_reason) == (PipelineStatus.CANCELLED, reason)
    assert "pipeline_timeout_seconds" not in result.metadata
    await assert_reusable(pipeline, track)


# -- cancel during a retry delay, a grace period, cleanup ------------------------------------


@pytest.mark.parametrize("stopper", ["cancel", "pipeline_timeout", "failure"])
async def test_r4_6_r5_2_stop_during_a_retry_delay_ends_it_at_once(stopper: str) -> None:
    """R4.6, R5.7: a stop (cancel(), pipeline timeout, a stopping failure)
    arriving while a stage waits out a 60 s retry delay ends that stage at
    once as CANCELLED with the attempts it made; a stage hanging meanwhile is
    cancelled after the grace period (R5.2), even though the retrying stage
    already left (the grace is still enforced)."""
    track = Track()
    failed = anyio.Event()
    hanging = anyio.Event()
    go_fail = anyio.Event()

    async def flaky(ctx: PipelineContext, _: Any) -> None:
        failed.set()
        raise ConnectionError("flaky")

    async def breaker(ctx: PipelineContext, _: Any) -> None:
        await go_fail.wait()
        raise ValueError("critical failure")

    stages = [
        track.stage(
            "flaky",
            flaky,
            retry_config=RetryConfig(
                max_retries=5, strategy=RetryStrategy.CONSTANT, initial_delay_seconds=60.0
            ),
            critical=False,
        ),
        track.stage("hang", hang(hanging.set)),
    ]
    if stopper == "failure":
        stages.append(track.stage("breaker", breaker))
    timeout = TimeoutConfig(
        grace_period_seconds=0.05,
        pipeline_timeout_seconds=1.0 if stopper == "pipeline_timeout" else None,
    )
    pipeline = make(stages, timeout=timeout)
    before = task_ids()
    async with executing(pipeline, limit=PROMPT) as run:
        await failed.wait()
        await hanging.wait()
        assert pipeline.stage_statuses()["flaky"] is StageStatus.RETRYING
        if stopper == "cancel":
            pipeline.cancel()
        elif stopper == "failure":
            go_fail.set()
    result = assert_stopped_cleanly(run.returned, track, before=before)
    flaky_result = result.stage_results["flaky"]
    assert flaky_result.status is StageStatus.CANCELLED, "R4.6: stop during a delay"
    assert flaky_result.attempt_count == 1
    assert isinstance(flaky_result.exception, PipelineCancelledException)
    assert result.stage_results["hang"].status is StageStatus.CANCELLED, "R5.2: after grace"
    want = {
        "cancel": (PipelineStatus.CANCELLED, CancellationReason.USER_REQUESTED),
        "pipeline_timeout": (PipelineStatus.FAILED, CancellationReason.TIMEOUT),
        "failure": (PipelineStatus.FAILED, CancellationReason.ERROR),
    }[stopper]
    assert (result.status, result.cancellation_reason) == want
    await assert_reusable(pipeline, track)


async def test_r5_2_cancel_again_during_the_grace_period_first_reason_wins() -> None:
    """R5.1, R5.2: during the grace period a second cancel() (from a task and
    from a thread, other reasons) changes nothing; a stage ignoring
    cancellation (shielded) that finishes within the grace keeps COMPLETED
    and its result; a cooperative stage ends CANCELLED through
    check_cancelled(); a hanging one is cancelled when the grace ends; a
    stage that never started ends CANCELLED with 0 attempts."""
    track = Track()
    started = Counter(3)
    release = anyio.Event()

    async def shielded(ctx: PipelineContext, _: Any) -> str:
        started()
        with anyio.CancelScope(shield=True):
            await release.wait()
        return "kept"

    async def cooperative(ctx: PipelineContext, _: Any) -> str:
        started()
        while True:
            ctx.check_cancelled()
            await ctx.wait_if_paused()
            await anyio.sleep(0.001)

    pipeline = make(
        [
            track.stage("shielded", shielded),
            track.stage("coop", cooperative),
            track.stage("hang", hang(started)),
            track.stage("never", hang(), ["hang"]),
        ],
        timeout=TimeoutConfig(grace_period_seconds=2.0),
    )
    before = task_ids()
    async with executing(pipeline, limit=PROMPT) as run:
        await started.reached.wait()
        pipeline.cancel(CancellationReason.USER_REQUESTED)
        pipeline.cancel(CancellationReason.RESOURCE_LIMIT)
        await anyio.to_thread.run_sync(pipeline.cancel, CancellationReason.EXTERNAL)
        assert pipeline.is_running, "still in the grace period"
        release.set()
    result = assert_stopped_cleanly(run.returned, track, before=before)
    assert (result.status, result.cancellation_reason) == (
        PipelineStatus.CANCELLED,
        CancellationReason.USER_REQUESTED,
    )
    by_id = result.stage_results
    assert (by_id["shielded"].status, by_id["shielded"].result) == (StageStatus.COMPLETED, "kept")
    assert by_id["coop"].status is StageStatus.CANCELLED
    assert isinstance(by_id["coop"].exception, PipelineCancelledException)
    assert by_id["coop"].exception.reason is CancellationReason.USER_REQUESTED
    assert by_id["hang"].status is StageStatus.CANCELLED
    assert (by_id["never"].status, by_id["never"].attempt_count) == (StageStatus.CANCELLED, 0)
    await assert_reusable(pipeline, track)


async def test_r5_4_cancel_and_outer_cancel_during_cleanup_do_not_interrupt_it() -> None:
    """R5.4, R5.6: while cleanup runs after a stop, another cancel() (task and
    thread) and the cancellation of an enclosing cancel scope neither
    interrupt the running cleanup (it is shielded) nor skip the remaining
    ones; the result is recorded and the outer cancellation is not lost."""
    track = Track()
    started = Counter(3)
    in_cleanup = anyio.Event()
    release = anyio.Event()
    finished: list[str] = []

    async def slow_cleanup(ctx: PipelineContext) -> None:
        in_cleanup.set()
        await release.wait()
        await anyio.sleep(0.001)
        finished.append("b")

    pipeline = make(
        [
            track.stage("a", hang(started)),
            track.stage("b", hang(started), cleanup=slow_cleanup),
            track.stage("c", stopper(started)),
        ]
    )
    before = task_ids()
    outer = CallerScope(pipeline)
    with anyio.fail_after(PROMPT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(outer.run)
            await in_cleanup.wait()
            pipeline.cancel(CancellationReason.RESOURCE_LIMIT)
            await anyio.to_thread.run_sync(pipeline.cancel, CancellationReason.DEPENDENCY_FAILED)
            outer.scope.cancel()
            await anyio.lowlevel.checkpoint()
            release.set()
    assert outer.outcome == ["cancelled"], "R5.6: the outer cancellation reaches the caller"
    assert finished == ["b"], "R5.4: the running cleanup was not interrupted"
    result = assert_stopped_cleanly(pipeline.result, track, before=before)
    assert result.status is PipelineStatus.CANCELLED
    assert result.cancellation_reason in (
        CancellationReason.USER_REQUESTED,
        CancellationReason.EXTERNAL,
    )
    assert "cleanup_errors" not in result.metadata
    await assert_reusable(pipeline, track)


async def test_r5_4_cleanup_hanging_past_its_timeout_is_cut_and_the_rest_still_run() -> None:
    """R5.4: a cleanup that hangs (waits forever) and one that shields itself
    past cleanup_timeout_seconds are both bounded and recorded in
    metadata['cleanup_errors']; the other cleanups still run, in reverse
    start order, and the status is unchanged."""
    track = Track()
    started = Counter(4)

    async def hangs(ctx: PipelineContext) -> None:
        await anyio.sleep_forever()

    async def shielded(ctx: PipelineContext) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.1)

    pipeline = make(
        [
            track.stage("a", hang(started)),
            track.stage("b", hang(started), cleanup=hangs),
            track.stage("c", hang(started), cleanup=shielded),
            track.stage("d", stopper(started)),
        ],
        timeout=TimeoutConfig(grace_period_seconds=0.0, cleanup_timeout_seconds=0.02),
    )
    before = task_ids()
    with anyio.fail_after(PROMPT):
        result = await pipeline.execute()
    assert_stopped_cleanly(result, track, before=before)
    assert sorted(track.cleanups) == ["a", "b", "c", "d"], "R5.4: the rest still ran"
    assert sorted(result.metadata.get("cleanup_errors", {})) == ["b", "c"]
    assert (result.status, result.cancellation_reason) == (
        PipelineStatus.CANCELLED,
        CancellationReason.USER_REQUESTED,
    )
    await assert_reusable(pipeline, track)


# -- handlers that fight back ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["return", "retry_wait", "raise"])
async def test_r5_2_handler_swallowing_cancellation_does_not_block_the_stop(how: str) -> None:
    """R5.2: a handler that catches the forced cancellation (then returns, or
    waits again, or raises its own error) cannot keep the run alive:
    execute() returns, every stage has one terminal result, no handler or
    task is left, cleanup ran once per started stage, the run is reusable."""
    track = Track()
    started = Counter(2)

    async def swallower(ctx: PipelineContext, _: Any) -> str:
        started()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            pass
        if how == "retry_wait":
            await anyio.sleep_forever()  # cancellation is level-triggered: lands again
        if how == "raise":
            raise RuntimeError("cleanup after swallowing failed")
        return "swallowed"

    pipeline = make(
        [
            track.stage("swallower", swallower),
            track.stage("stopper", stopper(started)),
            track.stage("child", hang(), ["swallower"]),
        ]
    )
    before = task_ids()
    with anyio.fail_after(PROMPT):
        result = await pipeline.execute()
    assert_stopped_cleanly(result, track, before=before)
    assert (result.status, result.cancellation_reason) == (
        PipelineStatus.CANCELLED,
        CancellationReason.USER_REQUESTED,
    )
    assert result.stage_results["child"].attempt_count == 0, "R5.2: no new attempt"
    await assert_reusable(pipeline, track)


async def test_regression_r5_2_swallowed_forced_cancellation_still_ends_cancelled() -> None:
    """R5.2: "then they are cancelled through their cancel scopes, and end
    CANCELLED". A handler that catches that cancellation and returns a value
    after the grace period did not finish within the grace, so it must not
    come out COMPLETED with the value it made up."""
    track = Track()
    started = Counter(2)

    async def swallower(ctx: PipelineContext, _: Any) -> str:
        started()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            return "swallowed"
        raise AssertionError("sleep_forever() returned")

    pipeline = make([track.stage("swallower", swallower), track.stage("stopper", stopper(started))])
    with anyio.fail_after(PROMPT):
        result = await pipeline.execute()
    assert_stopped_cleanly(result, track)
    swallowed = result.stage_results["swallower"]
    assert swallowed.status is StageStatus.CANCELLED, (
        f"R5.2: forced-cancelled stage ended {swallowed.status.name} "
        f"with result {swallowed.result!r}"
    )


async def test_regression_r5_2_no_attempt_starts_after_outer_cancellation() -> None:
    """R5.2, R5.6: once the caller's cancellation has arrived, no new attempt
    may start. Minimal case (found by
    test_r5_6_caller_cancellation_at_random_moments): a serial pipeline
    [a, b]; a's handler cancels the scope around execute() and returns at
    once. b's handler must not be called afterwards: b ends CANCELLED with
    attempt_count 0 and gets no cleanup."""
    track = Track()
    outer = anyio.CancelScope()

    async def a(ctx: PipelineContext, _: Any) -> str:
        outer.cancel()  # the caller gives up while a is running
        return "a"

    async def b(ctx: PipelineContext, _: Any) -> str:
        return "b"

    pipeline = make([track.stage("a", a), track.stage("b", b)], parallel_stages=False)
    with anyio.fail_after(PROMPT):
        with outer:
            await pipeline.execute()
    assert outer.cancelled_caught, "R5.6: the caller's cancellation propagates"
    result = pipeline.result
    assert result is not None
    assert result.cancellation_reason is CancellationReason.EXTERNAL
    assert track.starts == ["a"], f"R5.2: handlers called after the caller's cancel: {track.starts}"
    assert (result.stage_results["b"].status, result.stage_results["b"].attempt_count) == (
        StageStatus.CANCELLED,
        0,
    )


# -- KeyboardInterrupt / SystemExit in a stage -------------------------------------------------
# Sync tests around anyio.run, so that a BaseException escaping the event loop
# by mistake fails the test instead of interrupting the whole pytest session.


def _run_guarded(anyio_backend: tuple[str, dict[str, Any]], func: Callable[[], Any]) -> Any:
    name, options = anyio_backend
    try:
        return anyio.run(func, backend=name, backend_options=options)
    except (KeyboardInterrupt, SystemExit) as exc:  # pragma: no cover - a bug
        pytest.fail(f"R5.6: {exc!r} escaped the event loop instead of execute()")


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_r5_6_keyboard_interrupt_in_a_stage_is_reraised_after_cleanup(
    anyio_backend: tuple[str, dict[str, Any]], exc_type: type[BaseException]
) -> None:
    """R5.6: a stage raising KeyboardInterrupt/SystemExit ends FAILED with it
    recorded, the other running stages are cancelled at once (no grace),
    cleanup runs, pipeline.result is CANCELLED/EXTERNAL and the exception is
    re-raised from execute() as itself. The pipeline runs again afterwards."""

    async def main() -> None:
        track = Track()
        started = Counter(3)
        raised = exc_type("stop now")

        async def interrupt(ctx: PipelineContext, _: Any) -> None:
            started()
            await started.reached.wait()
            raise raised

        pipeline = make(
            [
                track.stage("a", hang(started)),
                track.stage("b", hang(started)),
                track.stage("boom", interrupt),
            ],
            timeout=TimeoutConfig(grace_period_seconds=60.0),  # must not be waited out
        )
        before = task_ids()
        with anyio.fail_after(PROMPT):
            with pytest.raises(exc_type) as info:
                await pipeline.execute()
        assert info.value is raised
        result = assert_stopped_cleanly(pipeline.result, track, before=before)
        assert (result.status, result.cancellation_reason) == (
            PipelineStatus.CANCELLED,
            CancellationReason.EXTERNAL,
        )
        boom = result.stage_results["boom"]
        assert (boom.status, boom.exception) == (StageStatus.FAILED, raised)
        assert result.stage_results["a"].status is StageStatus.CANCELLED
        assert result.stage_results["b"].status is StageStatus.CANCELLED
        await assert_reusable(pipeline, track)

    _run_guarded(anyio_backend, main)


def test_regression_r5_3_dependents_of_a_keyboard_interrupt_stage_are_skipped(
    anyio_backend: tuple[str, dict[str, Any]],
) -> None:
    """R5.3: after a stop, a stage that never started ends SKIPPED if a
    dependency ended FAILED. A stage raising KeyboardInterrupt ends FAILED
    (R5.6), so its never-started dependents must be SKIPPED with a
    DependencyFailedException naming it, not CANCELLED."""

    async def main() -> None:
        async def boom(ctx: PipelineContext, _: Any) -> None:
            await anyio.lowlevel.checkpoint()
            raise KeyboardInterrupt

        async def child(ctx: PipelineContext, value: Any) -> str:
            return "child"

        pipeline = make(
            [
                Stage(stage_id="boom", name="boom", handler=boom),
                Stage(stage_id="child", name="child", handler=child, dependencies=["boom"]),
            ]
        )
        with pytest.raises(KeyboardInterrupt):
            await pipeline.execute()
        result = pipeline.result
        assert result is not None
        assert result.stage_results["boom"].status is StageStatus.FAILED
        child_result = result.stage_results["child"]
        assert child_result.status is StageStatus.SKIPPED, (
            f"R5.3: never-started dependent of a FAILED stage ended {child_result.status.name}"
        )
        assert isinstance(child_result.exception, DependencyFailedException)
        assert child_result.exception.failed_dependency == "boom"

    _run_guarded(anyio_backend, main)


# -- outer cancellation while a stop is under way ---------------------------------------------


@pytest.mark.parametrize("stopper", ["cancel", "pipeline_timeout", "failure"])
async def test_r5_6_outer_cancellation_during_a_stop_propagates_and_cleans_up_once(
    stopper: str,
) -> None:
    """R5.6: the caller's cancellation arriving while a stop (cancel(),
    pipeline timeout, stopping failure) is in its grace period cancels the
    running stages at once, propagates to the caller (never swallowed), and
    cleanup still runs exactly once per started stage; pipeline.result is
    recorded with a consistent status and reason."""
    track = Track()
    started = Counter(3)
    stop_seen = anyio.Event()

    async def watcher(ctx: PipelineContext, _: Any) -> None:
        started()
        await started.reached.wait()
        # Every stage that can start has started: pause, and let
        # wait_if_paused() tell when the stop begins (it returns on cancel).
        ctx.pause()
        with anyio.CancelScope(shield=True):  # ignores the stop while it reports it
            await ctx.wait_if_paused()
            stop_seen.set()
        await anyio.sleep_forever()

    async def breaker(ctx: PipelineContext, _: Any) -> None:
        started()
        await started.reached.wait()
        if stopper == "failure":
            raise ValueError("critical failure")
        await anyio.sleep_forever()

    pipeline = make(
        [
            track.stage("watcher", watcher),
            track.stage("hang", hang(started)),
            track.stage("breaker", breaker),
            track.stage("after", hang(), ["hang"]),
        ],
        timeout=TimeoutConfig(
            grace_period_seconds=60.0,
            pipeline_timeout_seconds=0.1 if stopper == "pipeline_timeout" else None,
        ),
    )
    before = task_ids()
    outer = CallerScope(pipeline)
    with anyio.fail_after(PROMPT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(outer.run)
            await started.reached.wait()
            if stopper == "cancel":
                pipeline.cancel()
            await stop_seen.wait()
            outer.scope.cancel()
    assert outer.outcome == ["cancelled"], "R5.6: the caller's cancellation is never swallowed"
    result = assert_stopped_cleanly(pipeline.result, track, before=before)
    pairs = {
        (PipelineStatus.CANCELLED, CancellationReason.EXTERNAL),
        {
            "cancel": (PipelineStatus.CANCELLED, CancellationReason.USER_REQUESTED),
            "pipeline_timeout": (PipelineStatus.FAILED, CancellationReason.TIMEOUT),
            "failure": (PipelineStatus.FAILED, CancellationReason.ERROR),
        }[stopper],
    }
    assert (result.status, result.cancellation_reason) in pairs
    assert result.stage_results["hang"].status is StageStatus.CANCELLED
    assert result.stage_results["after"].attempt_count == 0
    await assert_reusable(pipeline, track)


async def test_regression_r5_4_asyncio_task_cancel_during_cleanup_interrupts_it(
    backend_name: str,
) -> None:
    """R5.4, R5.6 (asyncio habits, R1.2): cleanup handlers run "each shielded
    from cancellation". A single Task.cancel() of the task awaiting execute()
    -- exactly what asyncio.wait_for does when its deadline falls during
    cleanup -- must not interrupt the running cleanup; it must run to its end,
    and the cancellation then propagates."""
    if backend_name != "asyncio":
        pytest.skip("asyncio Task.cancel() only")
    track = Track()
    started = Counter(2)
    in_cleanup = anyio.Event()
    release = anyio.Event()
    finished: list[str] = []

    async def slow_cleanup(ctx: PipelineContext) -> None:
        in_cleanup.set()
        await release.wait()
        finished.append("a")

    pipeline = make(
        [track.stage("a", hang(started), cleanup=slow_cleanup), track.stage("b", stopper(started))]
    )
    task = asyncio.ensure_future(pipeline.execute())
    with anyio.fail_after(PROMPT):
        await in_cleanup.wait()
        task.cancel()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert finished == ["a"], "R5.4: the shielded cleanup was interrupted by Task.cancel()"
    result = assert_stopped_cleanly(pipeline.result, track)
    assert "cleanup_errors" not in result.metadata, result.metadata.get("cleanup_errors")


async def test_regression_r5_6_cancelled_error_raised_by_a_handler_itself(
    backend_name: str,
) -> None:
    """R5.6, R6.4: a handler that raises asyncio.CancelledError on its own
    (e.g. it awaited a future someone else cancelled; nobody cancelled the
    pipeline) raises a non-Exception inside a stage: that stage ends FAILED
    with it recorded, the others are cancelled, cleanup runs, and
    pipeline.result is CANCELLED/EXTERNAL. What must never happen is a result
    with CANCELLED stages but no cancellation_reason and no cleanup."""
    if backend_name != "asyncio":
        pytest.skip("only asyncio lets a handler raise its cancellation exception itself")
    track = Track()
    started = Counter(2)

    async def stray(ctx: PipelineContext, _: Any) -> None:
        started()
        await started.reached.wait()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.cancel()
        await future  # raises CancelledError, though nothing cancelled this task

    pipeline = make([track.stage("stray", stray), track.stage("other", hang(started))])
    outcome: list[BaseException | PipelineResult] = []
    with anyio.fail_after(PROMPT):
        try:
            outcome.append(await pipeline.execute())
        except asyncio.CancelledError as exc:
            outcome.append(exc)
    result = pipeline.result
    assert result is not None
    statuses = {sid: r.status.name for sid, r in result.stage_results.items()}
    assert result.stage_results["stray"].status is StageStatus.FAILED, statuses
    assert isinstance(result.stage_results["stray"].exception, asyncio.CancelledError)
    assert (result.status, result.cancellation_reason) == (
        PipelineStatus.CANCELLED,
        CancellationReason.EXTERNAL,
    ), f"R6.4: {result.status.name}/{result.cancellation_reason} with stages {statuses}"
    assert track.cleanups == track.expected_cleanups(), "R5.4: cleanup after the stop"
    assert isinstance(outcome[0], asyncio.CancelledError), "R5.6: re-raised as itself"


# -- 1000 stages --------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["running", "queued", "retrying", "chain"])
async def test_r5_2_thousand_stages_cancelled_at_once(layout: str) -> None:
    """R5.2, R4.6, R5.4: 1000 stages stopped by one cancel(): all running
    (max_parallel 1000), mostly queued (max_parallel 8), all waiting out a
    retry delay, or a chain. Every stage gets one terminal result (CANCELLED;
    attempt_count 1 if it started, else 0), cleanup runs once per started
    stage in reverse start order, nothing is left running, and the same
    pipeline then completes all 1000."""
    n = 1000
    track = Track()
    limit = {"running": n, "queued": 8, "retrying": n, "chain": 8}[layout]
    ready = Counter(limit if layout != "chain" else 1)

    async def work(ctx: PipelineContext, _: Any) -> None:
        ready()
        if layout == "retrying":
            raise ConnectionError("retry me")
        await anyio.sleep_forever()

    stages = [
        track.stage(
            f"s{i}",
            work,
            [f"s{i - 1}"] if layout == "chain" and i else (),
            with_cleanup=i % 2 == 0,
        )
        for i in range(n)
    ]
    retry = RetryConfig(max_retries=3, strategy=RetryStrategy.CONSTANT, initial_delay_seconds=60)
    pipeline = make(stages, max_parallel=limit, retry=retry)
    before = task_ids()
    async with executing(pipeline, limit=PROMPT * 3) as run:
        await ready.reached.wait()
        pipeline.cancel()
    result = assert_stopped_cleanly(run.returned, track, before=before)
    assert result.status is PipelineStatus.CANCELLED
    statuses = {r.status for r in result.stage_results.values()}
    assert statuses == {StageStatus.CANCELLED}
    attempts = sorted(r.attempt_count for r in result.stage_results.values())
    started = {"running": n, "queued": limit, "retrying": n, "chain": 1}[layout]
    assert attempts == [0] * (n - started) + [1] * started
    assert len(track.starts) == started
    with anyio.fail_after(PROMPT * 3):
        await assert_reusable(pipeline, track)
