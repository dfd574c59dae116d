"""R2: when stages start. Ready stages start at once, at most ``max_parallel``
at a time (one with ``parallel_stages=False``); slots go to the earliest-added
ready stage; a retry delay holds no slot; live statuses; large pipelines."""

from __future__ import annotations

import heapq
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from helpers import NO_RETRY, blocks_forever, echo, fails, flaky, hangs, ok, raises, returns, st
from hypothesis import given
from hypothesis import strategies as hs

from proxima.data.pipeline import (
    Pipeline,
    PipelineConfig,
    PipelineContext,
    PipelineStatus,
    RetryConfig,
    RetryStrategy,
    StageStatus,
    TimeoutConfig,
)

pytestmark = pytest.mark.anyio

#: Upper bound for any one test's run, so a scheduling bug fails instead of hanging.
LIMIT = 20
SHORT_GRACE = TimeoutConfig(grace_period_seconds=0.2)


class Concurrency:
    """Counts handlers running at once."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0
        self.order: list[str] = []

    def handler(self, sid: str) -> Any:
        async def run(ctx: PipelineContext, data: Any) -> str:
            self.order.append(sid)
            self.current += 1
            self.peak = max(self.peak, self.current)
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            self.current -= 1
            return sid

        return run


# -- R2.1 ready stages start at once -----------------------------------------------------


async def test_r2_1_dependent_starts_without_waiting_for_unrelated_sibling() -> None:
    c_started = anyio.Event()

    async def b(ctx: PipelineContext, data: Any) -> str:
        # An unrelated sibling that can only finish once c has started.
        await c_started.wait()
        return "b"

    async def c(ctx: PipelineContext, data: Any) -> str:
        c_started.set()
        return f"c({data})"

    pipeline = Pipeline(PipelineConfig(name="r2.1", max_parallel=4))
    pipeline.add_stages([st("a", returns("a")), st("b", b), st("c", c, ["a"])])
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    assert result.stage_results["c"].result == "c(a)"


async def test_r2_1_dependent_of_a_deep_branch_starts_while_other_branch_runs() -> None:
    leaf_started = anyio.Event()

    async def slow_branch(ctx: PipelineContext, data: Any) -> str:
        await leaf_started.wait()
        return "slow"

    async def leaf(ctx: PipelineContext, data: Any) -> str:
        leaf_started.set()
        return "leaf"

    pipeline = Pipeline(PipelineConfig(name="r2.1-deep", max_parallel=2))
    pipeline.add_stages(
        [
            st("slow", slow_branch),
            st("s1", echo),
            st("s2", echo, ["s1"]),
            st("s3", echo, ["s2"]),
            st("leaf", leaf, ["s3"]),
            st("join", echo, ["slow", "leaf"]),
        ]
    )
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    assert result.stage_results["join"].result == {"slow": "slow", "leaf": "leaf"}


async def test_r2_1_ready_roots_all_start_together() -> None:
    n = 4
    started = 0
    all_started = anyio.Event()

    async def root(ctx: PipelineContext, data: Any) -> None:
        nonlocal started
        started += 1
        if started == n:
            all_started.set()
        await all_started.wait()  # deadlocks if roots are started one by one

    pipeline = Pipeline(PipelineConfig(name="roots", max_parallel=n))
    pipeline.add_stages([st(f"r{i}", root) for i in range(n)])
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED


@pytest.mark.parametrize("max_parallel", [1, 2, 3, 5])
async def test_r2_1_max_parallel_is_respected_and_reached(max_parallel: int) -> None:
    conc = Concurrency()
    pipeline = Pipeline(PipelineConfig(name="limit", max_parallel=max_parallel))
    pipeline.add_stages([st(f"s{i}", conc.handler(f"s{i}")) for i in range(12)])
    pipeline.add_stages(
        [st(f"d{i}", conc.handler(f"d{i}"), [f"s{i}", f"s{i + 1}"]) for i in range(11)]
    )
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    assert conc.peak == max_parallel
    assert len(conc.order) == 23


@pytest.mark.parametrize(
    "strategy", [RetryStrategy.IMMEDIATE, RetryStrategy.CONSTANT], ids=lambda s: s.name
)
async def test_r2_1_max_parallel_holds_across_retries(strategy: RetryStrategy) -> None:
    conc = Concurrency()
    failed_once: set[str] = set()

    def flaky(sid: str) -> Any:
        inner = conc.handler(sid)

        async def run(ctx: PipelineContext, data: Any) -> str:
            result: str = await inner(ctx, data)
            if sid not in failed_once:
                failed_once.add(sid)
                raise ConnectionError(f"{sid} fails once")
            return result

        return run

    retry = RetryConfig(max_retries=1, strategy=strategy, initial_delay_seconds=0.01)
    pipeline = Pipeline(PipelineConfig(name="retry-limit", max_parallel=3, retry=retry))
    pipeline.add_stages([st(f"s{i}", flaky(f"s{i}")) for i in range(9)])
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    assert all(r.attempt_count == 2 for r in result.stage_results.values())
    assert conc.peak == 3
    assert len(conc.order) == 18


@pytest.mark.parametrize("max_parallel", [1, 4, 16])
async def test_r2_1_parallel_stages_false_runs_exactly_one_at_a_time(max_parallel: int) -> None:
    conc = Concurrency()
    config = PipelineConfig(name="serial", parallel_stages=False, max_parallel=max_parallel)
    pipeline = Pipeline(config)
    pipeline.add_stages([st(f"s{i}", conc.handler(f"s{i}")) for i in range(8)])
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    assert conc.peak == 1
    assert conc.order == [f"s{i}" for i in range(8)]


# -- R2.2 earliest-added topological order -----------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        PipelineConfig(name="serial", parallel_stages=False),
        PipelineConfig(name="one-slot", max_parallel=1),
    ],
    ids=["parallel_stages=False", "max_parallel=1"],
)
async def test_r2_2_serial_order_is_earliest_added_topological(config: PipelineConfig) -> None:
    conc = Concurrency()
    pipeline = Pipeline(config)
    pipeline.add_stages(
        [
            st("a", conc.handler("a")),
            st("c", conc.handler("c"), ["a"]),
            st("b", conc.handler("b")),
        ]
    )
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    assert conc.order == ["a", "c", "b"]


async def test_r2_2_serial_order_with_sync_handlers_and_later_added_dependency() -> None:
    order: list[str] = []

    def handler(sid: str) -> Any:
        def run(ctx: PipelineContext, data: Any) -> str:
            order.append(sid)
            return sid

        return run

    pipeline = Pipeline(PipelineConfig(name="serial", parallel_stages=False))
    pipeline.add_stages(
        [
            st("d", handler("d"), ["e"]),
            st("a", handler("a")),
            st("c", handler("c"), ["a"]),
            st("e", handler("e")),
            st("b", handler("b")),
        ]
    )
    with anyio.fail_after(LIMIT):
        await pipeline.execute()
    # ready at start: a(1), e(3), b(4) -> a; releases c(2) -> c; then e -> d(0); then b
    assert order == ["a", "c", "e", "d", "b"]


def _earliest_first(order: list[str], deps: dict[str, list[str]]) -> list[str]:
    position = {sid: i for i, sid in enumerate(order)}
    waiting = {sid: len(deps[sid]) for sid in order}
    dependents: dict[str, list[str]] = {sid: [] for sid in order}
    for sid in order:
        for dep in deps[sid]:
            dependents[dep].append(sid)
    heap = [position[sid] for sid in order if waiting[sid] == 0]
    heapq.heapify(heap)
    out: list[str] = []
    while heap:
        sid = order[heapq.heappop(heap)]
        out.append(sid)
        for nxt in dependents[sid]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                heapq.heappush(heap, position[nxt])
    return out


@hs.composite
def dags(draw: hs.DrawFn) -> tuple[list[str], dict[str, list[str]]]:
    n = draw(hs.integers(min_value=1, max_value=10))
    ranked = draw(hs.permutations([f"s{i}" for i in range(n)]))
    deps = {
        sid: (draw(hs.lists(hs.sampled_from(ranked[:j]), unique=True)) if j else [])
        for j, sid in enumerate(ranked)
    }
    return list(draw(hs.permutations(ranked))), deps


@given(dag=dags(), serial=hs.booleans())
async def test_r2_2_property_serial_order_matches_earliest_first_kahn(
    dag: tuple[list[str], dict[str, list[str]]], serial: bool
) -> None:
    order, deps = dag
    conc = Concurrency()
    config = (
        PipelineConfig(name="p", parallel_stages=False)
        if serial
        else PipelineConfig(name="p", max_parallel=1)
    )
    pipeline = Pipeline(config)
    pipeline.add_stages([st(sid, conc.handler(sid), deps[sid]) for sid in order])
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    assert conc.order == _earliest_first(order, deps)


# -- R2.3 a retry delay holds no slot ----------------------------------------------------


async def test_r2_3_stage_waiting_out_retry_delay_does_not_hold_a_slot() -> None:
    attempts: list[int] = []
    seen: dict[str, StageStatus] = {}
    fails_every_time = flaky(
        attempts, failures=4, exc=ConnectionError, message="first attempt fails"
    )

    # A short grace so the run ends quickly after the watcher's cancel() (the
    # stop itself is the subject of test_r4_6_r5_2_stop_during_retry_delay_...).
    pipeline = Pipeline(PipelineConfig(name="r2.3", max_parallel=1, timeout=SHORT_GRACE))

    async def other(ctx: PipelineContext, data: Any) -> str:
        # Runs only if flaky gave its only slot back while it waits to retry.
        seen.update(pipeline.stage_statuses())
        pipeline.cancel()
        return "ran"

    long_delay = RetryConfig(
        max_retries=3, strategy=RetryStrategy.CONSTANT, initial_delay_seconds=30.0
    )
    pipeline.add_stages(
        [st("flaky", fails_every_time, retry_config=long_delay), st("other", other)]
    )
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert seen["flaky"] is StageStatus.RETRYING
    assert seen["other"] is StageStatus.RUNNING
    assert attempts == [1]
    assert result.stage_results["other"].status is StageStatus.COMPLETED
    assert result.stage_results["other"].result == "ran"
    assert result.stage_results["flaky"].status is StageStatus.CANCELLED
    assert result.stage_results["flaky"].attempt_count == 1


async def test_r4_6_r5_2_stop_during_retry_delay_does_not_wait_for_grace() -> None:
    """A stop ends a retry delay at once; with nothing left running the run
    must end then, not when the grace period runs out (here: never)."""
    pipeline = Pipeline(
        PipelineConfig(
            name="stop-in-delay",
            max_parallel=1,  # the stopper runs only once flaky is in its retry delay
            timeout=TimeoutConfig(grace_period_seconds=None),
        )
    )

    async def stopper(ctx: PipelineContext, data: Any) -> str:
        pipeline.cancel()
        return "stopped"

    long_delay = RetryConfig(strategy=RetryStrategy.CONSTANT, initial_delay_seconds=30.0)
    pipeline.add_stages(
        [
            st("flaky", raises(OSError, "retry me"), retry_config=long_delay),
            st("stopper", stopper),
        ]
    )
    with anyio.fail_after(2):  # a hang guard only: a correct run ends in milliseconds
        result = await pipeline.execute()
    assert result.status is PipelineStatus.CANCELLED
    assert result.stage_results["flaky"].status is StageStatus.CANCELLED
    assert result.stage_results["flaky"].attempt_count == 1
    assert result.stage_results["stopper"].status is StageStatus.COMPLETED


# -- R2.5 live statuses ------------------------------------------------------------------


async def test_r2_5_stage_statuses_show_pending_queued_running_live() -> None:
    a_running = anyio.Event()
    release = anyio.Event()
    seen_inside: dict[str, StageStatus] = {}
    pipeline = Pipeline(PipelineConfig(name="live", max_parallel=1))

    async def a(ctx: PipelineContext, data: Any) -> str:
        seen_inside.update(pipeline.stage_statuses())
        a_running.set()
        await release.wait()
        return "a"

    pipeline.add_stages([st("a", a), st("b", echo, ["a"]), st("c", echo)])
    outcome: dict[str, Any] = {}

    async def run() -> None:
        outcome["result"] = await pipeline.execute()

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await a_running.wait()
            live = pipeline.stage_statuses()
            assert pipeline.is_running
            assert pipeline.status is PipelineStatus.RUNNING
            release.set()
    expected_live = {"a": StageStatus.RUNNING, "b": StageStatus.PENDING, "c": StageStatus.QUEUED}
    assert seen_inside == expected_live
    assert live == expected_live
    assert pipeline.stage_statuses() == dict.fromkeys("abc", StageStatus.COMPLETED)
    assert outcome["result"].status is PipelineStatus.COMPLETED


async def test_r2_5_stage_statuses_show_retrying_live() -> None:
    pipeline = Pipeline(PipelineConfig(name="retrying", max_parallel=1, timeout=SHORT_GRACE))
    seen: dict[str, StageStatus] = {}

    async def watcher(ctx: PipelineContext, data: Any) -> None:
        seen.update(pipeline.stage_statuses())
        pipeline.cancel()

    slow_retry = RetryConfig(
        max_retries=2, strategy=RetryStrategy.CONSTANT, initial_delay_seconds=30.0
    )
    pipeline.add_stages(
        [
            st("flaky", raises(OSError, "try again later"), retry_config=slow_retry),
            st("after", returns(None), ["flaky"]),
            st("watcher", watcher),
        ]
    )
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert seen == {
        "flaky": StageStatus.RETRYING,
        "after": StageStatus.PENDING,
        "watcher": StageStatus.RUNNING,
    }
    assert pipeline.stage_statuses() == {
        "flaky": StageStatus.CANCELLED,
        "after": StageStatus.CANCELLED,
        "watcher": StageStatus.COMPLETED,
    }
    assert {sid: r.status for sid, r in result.stage_results.items()} == (pipeline.stage_statuses())


async def test_r2_5_stage_statuses_after_run_are_terminal() -> None:
    config = PipelineConfig(name="terminal", continue_on_error=True, retry=NO_RETRY)
    pipeline = Pipeline(config)
    pipeline.add_stages(
        [
            st("ok", ok),
            st("boom", fails),
            st("hang", hangs, timeout_seconds=0.05),
            st("after_boom", ok, ["boom"]),
            st("after_ok", ok, ["ok"]),
        ]
    )
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    expected = {
        "ok": StageStatus.COMPLETED,
        "boom": StageStatus.FAILED,
        "hang": StageStatus.TIMED_OUT,
        "after_boom": StageStatus.SKIPPED,
        "after_ok": StageStatus.COMPLETED,
    }
    assert pipeline.stage_statuses() == expected
    assert {sid: r.status for sid, r in result.stage_results.items()} == expected
    assert all(status.is_terminal for status in pipeline.stage_statuses().values())


async def test_r2_5_stage_statuses_after_cancel_are_cancelled() -> None:
    started = anyio.Event()
    pipeline = Pipeline(
        PipelineConfig(name="cancelled", timeout=TimeoutConfig(grace_period_seconds=0))
    )

    pipeline.add_stages(
        [
            st("hang", blocks_forever(started)),
            st("never", raises(AssertionError, "must not run"), ["hang"]),
        ]
    )
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pipeline.execute)
            await started.wait()
            assert pipeline.stage_statuses() == {
                "hang": StageStatus.RUNNING,
                "never": StageStatus.PENDING,
            }
            pipeline.cancel()
    assert pipeline.stage_statuses() == {
        "hang": StageStatus.CANCELLED,
        "never": StageStatus.CANCELLED,
    }
    assert pipeline.result is not None
    assert pipeline.result.status is PipelineStatus.CANCELLED


# -- R2.4 large pipelines ----------------------------------------------------------------


async def test_r2_4_five_thousand_stage_chain_completes() -> None:
    n = 5000

    async def inc(ctx: PipelineContext, data: Any) -> int:
        return int(data) + 1

    pipeline = Pipeline(PipelineConfig(name="chain"))
    pipeline.add_stages([st("s0", inc)] + [st(f"s{i}", inc, [f"s{i - 1}"]) for i in range(1, n)])
    with anyio.fail_after(120):
        result = await pipeline.execute(initial_input=0)
    assert result.status is PipelineStatus.COMPLETED
    assert len(result.stage_results) == n
    assert result.stage_results[f"s{n - 1}"].result == n


async def test_r2_4_five_thousand_stage_wide_pipeline_completes() -> None:
    n = 5000

    async def leaf(ctx: PipelineContext, data: Any) -> int:
        return int(data)

    def join(ctx: PipelineContext, data: Any) -> int:
        return sum(data.values())

    pipeline = Pipeline(PipelineConfig(name="wide"))
    pipeline.add_stages([st(f"w{i}", leaf) for i in range(n)])
    pipeline.add_stage(st("join", join, (f"w{i}" for i in range(n))))
    with anyio.fail_after(120):
        result = await pipeline.execute(initial_input=1)
    assert result.status is PipelineStatus.COMPLETED
    assert len(result.stage_results) == n + 1
    assert result.stage_results["join"].result == n
