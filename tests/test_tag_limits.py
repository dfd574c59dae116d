"""R12: limits per tag, on top of ``max_parallel``.

A stage held back by its tag stays QUEUED, holds no slot, never blocks a
later ready stage whose tags have room, and gives its tag slot back
whatever ends its attempt.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from helpers import executing, make_pipeline, ok, st, statuses

from proxima.data.pipeline import (
    PipelineBuilder,
    PipelineConfig,
    PipelineContext,
    PipelineStatus,
    RetryConfig,
    RetryStrategy,
    StageStatus,
)

pytestmark = pytest.mark.anyio

LIMIT = 10


class Live:
    """Counts the handlers running at once, per tag."""

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.order: list[str] = []

    def stage(self, name: str, *tags: str, pause: float = 0.01) -> Any:
        async def handler(ctx: PipelineContext, _: Any) -> str:
            self.order.append(name)
            for tag in tags:
                self.now[tag] = self.now.get(tag, 0) + 1
                self.peak[tag] = max(self.peak.get(tag, 0), self.now[tag])
            try:
                await anyio.sleep(pause)
            finally:
                for tag in tags:
                    self.now[tag] -= 1
            return name

        return handler


async def test_r12_1_at_most_the_limit_of_a_tag_runs_at_once() -> None:
    live = Live()
    stages = [st(f"d{i}", live.stage(f"d{i}", "db"), tags=["db"]) for i in range(6)]
    stages += [st(f"x{i}", live.stage(f"x{i}", "free"), tags=["free"]) for i in range(4)]
    pipeline = make_pipeline(*stages, max_parallel=8, tag_limits={"db": 2})
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    assert live.peak["db"] == 2
    assert live.peak["free"] == 4  # untagged by a limit: only max_parallel applies


async def test_r12_1_a_stage_with_two_limited_tags_waits_for_both() -> None:
    live = Live()
    pipeline = make_pipeline(
        st("both", live.stage("both", "db", "api"), tags=["db", "api"]),
        st("db", live.stage("db", "db"), tags=["db"]),
        st("api", live.stage("api", "api"), tags=["api"]),
        max_parallel=8,
        tag_limits={"db": 1, "api": 1},
    )
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    assert live.peak == {"db": 1, "api": 1}


async def test_r12_2_held_back_stage_stays_queued_and_never_blocks_a_later_ready_stage() -> None:
    """max_parallel=2, db limited to 1: while ``d1`` holds the db slot, the
    earlier-added ``d2`` waits QUEUED without a slot and the later ``x``
    takes the free one."""
    release = anyio.Event()
    x_running = anyio.Event()

    async def d1(ctx: PipelineContext, _: Any) -> str:
        await release.wait()
        return "d1"

    async def x(ctx: PipelineContext, _: Any) -> str:
        x_running.set()
        await release.wait()
        return "x"

    pipeline = make_pipeline(
        st("d1", d1, tags=["db"]),
        st("d2", ok, tags=["db"]),
        st("x", x),
        max_parallel=2,
        tag_limits={"db": 1},
    )
    async with executing(pipeline, limit=LIMIT):
        await x_running.wait()
        await anyio.wait_all_tasks_blocked()
        assert pipeline.stage_statuses() == {
            "d1": StageStatus.RUNNING,
            "d2": StageStatus.QUEUED,
            "x": StageStatus.RUNNING,
        }
        release.set()
    assert pipeline.result is not None
    assert pipeline.result.status is PipelineStatus.COMPLETED


async def test_r12_2_r2_2_freed_tag_slot_goes_to_the_earliest_stage_held_back_for_it() -> None:
    live = Live()
    stages = [st(f"d{i}", live.stage(f"d{i}", "db", pause=0.001), tags=["db"]) for i in range(5)]
    pipeline = make_pipeline(*stages, max_parallel=4, tag_limits={"db": 1})
    with anyio.fail_after(LIMIT):
        await pipeline.execute()
    assert live.order == ["d0", "d1", "d2", "d3", "d4"]


@pytest.mark.parametrize("ending", ["failed", "timed_out", "retried"])
async def test_r12_2_tag_slot_is_given_back_whatever_ends_the_attempt(ending: str) -> None:
    calls = 0

    async def first(ctx: PipelineContext, _: Any) -> str:
        nonlocal calls
        calls += 1
        if ending == "failed":
            raise ValueError("boom")
        if ending == "timed_out":
            await anyio.sleep_forever()
        if ending == "retried" and calls == 1:
            raise OSError("once")
        return "first"

    retry = RetryConfig(strategy=RetryStrategy.IMMEDIATE, max_retries=1)
    pipeline = make_pipeline(
        st("first", first, tags=["db"], critical=False, timeout_seconds=0.05, retry_config=retry),
        st("second", ok, tags=["db"]),
        max_parallel=2,  # a leaked db slot would hold "second" back forever
        tag_limits={"db": 1},
        retry=RetryConfig(strategy=RetryStrategy.NONE),
    )
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.stage_results["second"].status is StageStatus.COMPLETED


async def test_r12_2_tag_slots_never_leak_across_a_stop_and_an_outer_cancellation() -> None:
    started = anyio.Event()

    async def hang(ctx: PipelineContext, _: Any) -> None:
        started.set()
        await anyio.sleep_forever()

    pipeline = make_pipeline(
        st("h", hang, tags=["db"]), st("w", ok, tags=["db"]), tag_limits={"db": 1}
    )
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pipeline.execute)
            await started.wait()
            tg.cancel_scope.cancel()  # the caller gives up while "w" waits for the tag
    assert pipeline.result is not None
    assert statuses(pipeline.result) == {"h": StageStatus.CANCELLED, "w": StageStatus.CANCELLED}
    # The same pipeline runs again with its limit intact.
    pipeline2 = make_pipeline(
        st("a", ok, tags=["db"]), st("b", ok, tags=["db"]), tag_limits={"db": 1}
    )
    with anyio.fail_after(LIMIT):
        assert (await pipeline2.execute()).status is PipelineStatus.COMPLETED


@pytest.mark.parametrize(
    ("limits", "error", "match"),
    [
        ({"db": 0}, ValueError, r"tag_limits\['db'\] must be an int >= 1, got 0"),
        ({"db": True}, ValueError, r"tag_limits\['db'\] must be an int >= 1, got True"),
        ({"db": 1.5}, ValueError, "got 1.5"),
        ({"": 1}, ValueError, "a tag must be a non-empty string, got ''"),
        ({3: 1}, ValueError, "a tag must be a non-empty string, got 3"),
        (["db"], TypeError, "tag_limits must be a mapping"),
    ],
)
def test_r12_1_bad_tag_limits_are_refused_naming_the_field(
    limits: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        PipelineConfig(tag_limits=limits)


def test_r12_1_builder_with_tag_limits_merges_and_chains() -> None:
    builder = PipelineBuilder("tags")
    assert builder.with_tag_limits(db=2).with_tag_limits(api=1) is builder
    assert dict(builder.config.tag_limits) == {"db": 2, "api": 1}
    with pytest.raises(ValueError, match="tag_limits"):
        builder.with_tag_limits(db=0)
    assert dict(builder.config.tag_limits) == {"db": 2, "api": 1}  # nothing half-applied


def test_r12_1_tag_limits_cannot_be_changed_behind_the_configs_back() -> None:
    given = {"db": 2}
    config = PipelineConfig(tag_limits=given)
    given["db"] = 0
    assert config.tag_limits["db"] == 2
    with pytest.raises(TypeError):
        config.tag_limits["db"] = 5  # type: ignore[index]
