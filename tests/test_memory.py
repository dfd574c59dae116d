"""A finished run leaves nothing of the engine for the garbage collector:
its stage states and parts are freed by reference counting as soon as the
run is dropped, not whenever the next collection happens to run, also when
a result keeps a failed stage's exception (its traceback no longer starts
in the engine's frame, which held the run)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from proxima.data.pipeline import (
    Pipeline,
    PipelineConfig,
    PipelineContext,
    RetryConfig,
    RetryStrategy,
    Stage,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def saved_garbage() -> Iterator[list[Any]]:
    """The collector off, and what it would free kept in ``gc.garbage``."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()


def _engine_objects(objects: list[Any]) -> list[str]:
    return sorted(
        {
            type(o).__qualname__
            for o in objects
            if type(o).__module__.startswith("proxima.data.pipeline._engine")
        }
    )


async def test_a_finished_run_leaves_no_engine_object_in_a_reference_cycle(
    saved_garbage: list[Any],
) -> None:
    tries = {"flaky": 0}

    async def ok(ctx: PipelineContext, value: Any) -> int:
        return 1

    async def flaky(ctx: PipelineContext, value: Any) -> int:
        tries["flaky"] += 1
        if tries["flaky"] == 1:
            raise ConnectionError("once")
        return 2

    async def boom(ctx: PipelineContext, value: Any) -> int:
        raise ValueError("boom")

    pipeline = Pipeline(
        PipelineConfig(
            continue_on_error=True,
            retry=RetryConfig(strategy=RetryStrategy.IMMEDIATE, max_retries=1),
        )
    ).add_stages(
        [
            Stage(stage_id="a", name="a", handler=ok),
            Stage(stage_id="b", name="b", handler=flaky, dependencies=["a"]),
            Stage(stage_id="c", name="c", handler=boom, critical=False),
            Stage(stage_id="d", name="d", handler=ok, dependencies=["c"], critical=False),
        ]
    )
    result = await pipeline.execute()
    assert result.stage_results["b"].attempt_count == 2
    del pipeline, result  # the run, its context and its result: all unreachable now
    gc.collect()
    # A failed stage's exception keeps its traceback, whose handler frame
    # holds the context, whose results hold that exception: a cycle of the
    # context and the results, as any kept traceback makes. The run itself
    # (every stage's state, input and part) is not in it.
    left = [name for name in _engine_objects(saved_garbage) if name != "PipelineContext"]
    assert left == [], "engine objects freed only by the collector"
