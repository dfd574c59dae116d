"""RichProgress: a live table of stages driven by the run's events, on every
backend, for terminal and plain (non-terminal) consoles."""

from __future__ import annotations

import io
import re
from typing import Any

import anyio
import pytest

pytest.importorskip("rich", reason="rich is not installed")

import anyio.lowlevel
from helpers import NO_RETRY, blocks_forever, ok, raises
from rich.console import Console

from proxima.data.pipeline import (
    Pipeline,
    PipelineConfig,
    PipelineContext,
    PipelineResult,
    PipelineStatus,
    RetryConfig,
    RetryStrategy,
    RichProgress,
    Stage,
    StageStatus,
    TimeoutConfig,
)

pytestmark = pytest.mark.anyio

LIMIT = 20
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100), out


def _plain() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=100), out


def _text(out: io.StringIO) -> str:
    return ANSI.sub("", out.getvalue())


def _final_rows(text: str) -> dict[str, list[str]]:
    """Stage id -> [status, attempt, elapsed] from the last table drawn."""
    body = text[text.rindex("┡") :]
    body = body[: body.index("└")]
    rows = {}
    for line in body.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip().strip("│").split("│")]
            rows[cells[0]] = cells[1:]
    return rows


def _mixed_pipeline() -> Pipeline:
    calls = 0

    async def flaky_step(ctx: PipelineContext, data: Any) -> str:
        nonlocal calls
        calls += 1
        await anyio.lowlevel.checkpoint()
        if calls == 1:
            raise KeyError("once")
        return "ok"

    pipeline = Pipeline(
        PipelineConfig(
            name="progress-demo",
            retry=NO_RETRY,
            continue_on_error=True,
        )
    )
    return pipeline.add_stages(
        [
            Stage("extract_rows", "Extract", ok),
            Stage(
                "flaky_step",
                "Flaky",
                flaky_step,
                ["extract_rows"],
                retry_config=RetryConfig(max_retries=1, strategy=RetryStrategy.IMMEDIATE),
            ),
            Stage("bad_stage", "Bad", raises(ValueError, "boom"), critical=False),
            Stage("skipped_one", "Skipped", ok, ["bad_stage"], critical=False),
        ]
    )


async def _execute(pipeline: Pipeline) -> PipelineResult:
    with anyio.fail_after(LIMIT):
        return await pipeline.execute()


async def test_rich_progress_terminal_shows_every_stage_and_final_status() -> None:
    console, out = _terminal()
    pipeline = _mixed_pipeline()
    with RichProgress(pipeline, console=console):
        result = await _execute(pipeline)

    assert result.status is PipelineStatus.PARTIALLY_COMPLETED
    assert "\x1b[" in out.getvalue()  # it did draw for a terminal
    text = _text(out)
    assert "progress-demo - PARTIALLY_COMPLETED  4/4 stages" in text
    rows = _final_rows(text)
    assert {sid: cells[0] for sid, cells in rows.items()} == {
        "extract_rows": "COMPLETED",
        "flaky_step": "COMPLETED",
        "bad_stage": "FAILED",
        "skipped_one": "SKIPPED",
    }
    assert rows["flaky_step"][1] == "2"  # the attempt that completed
    assert rows["extract_rows"][1] == "1"
    assert rows["skipped_one"][1:] == ["", ""]  # never started
    assert re.fullmatch(r"\d+\.\d\ds", rows["extract_rows"][2])
    assert "completed: 2" in text
    assert "failed: 1" in text
    assert "skipped: 1" in text


async def test_rich_progress_context_manager_removes_the_listener() -> None:
    console, out = _terminal()
    pipeline = _mixed_pipeline()
    progress = RichProgress(pipeline, console=console)
    with progress as entered:
        assert entered is progress
        await _execute(pipeline)
    drawn = out.getvalue()
    assert drawn

    again = await _execute(pipeline)  # no listener left: nothing more is drawn
    assert again.status is PipelineStatus.PARTIALLY_COMPLETED
    assert out.getvalue() == drawn


async def test_rich_progress_plain_console_prints_the_final_table_once() -> None:
    console, out = _plain()
    assert not console.is_terminal
    pipeline = _mixed_pipeline()
    with RichProgress(pipeline, console=console):
        await _execute(pipeline)

    text = out.getvalue()
    assert "\x1b[" not in text  # no cursor movement or colours for a file
    assert text.count("progress-demo - ") == 1  # one table, drawn at the end
    assert "progress-demo - PARTIALLY_COMPLETED  4/4 stages" in text
    rows = _final_rows(text)
    assert {sid: cells[0] for sid, cells in rows.items()} == {
        "extract_rows": "COMPLETED",
        "flaky_step": "COMPLETED",
        "bad_stage": "FAILED",
        "skipped_one": "SKIPPED",
    }


async def test_rich_progress_as_a_plain_listener_and_a_cancelled_run() -> None:
    console, out = _plain()
    started = anyio.Event()

    pipeline = Pipeline(
        PipelineConfig(name="stopped", timeout=TimeoutConfig(grace_period_seconds=0))
    )
    pipeline.add_stages(
        [
            Stage("waiting_stage", "W", blocks_forever(started)),
            Stage("later_stage", "L", ok, ["waiting_stage"]),
        ]
    )
    progress = RichProgress(console=console)
    pipeline.add_listener(progress)
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pipeline.execute)
            await started.wait()
            pipeline.cancel()
    pipeline.remove_listener(progress)

    assert pipeline.result is not None
    assert pipeline.result.status is PipelineStatus.CANCELLED
    text = out.getvalue()
    assert "stopped - CANCELLED  2/2 stages" in text
    rows = _final_rows(text)
    assert rows["waiting_stage"][0] == StageStatus.CANCELLED.name
    assert rows["later_stage"][0] == StageStatus.CANCELLED.name


async def test_rich_progress_max_rows_keeps_the_table_short() -> None:
    console, out = _plain()
    ids = [f"step_{i:02d}" for i in range(12)]
    pipeline = Pipeline(PipelineConfig(name="long"))
    pipeline.add_stages(
        [Stage(sid, sid, ok, [ids[i - 1]] if i else []) for i, sid in enumerate(ids)]
    )
    with RichProgress(pipeline, console=console, max_rows=4):
        await _execute(pipeline)

    text = out.getvalue()
    assert "long - COMPLETED  12/12 stages" in text
    rows = _final_rows(text)
    assert list(rows) == ids[::-1][:4]  # the latest finished first
    assert "completed: 12" in text
