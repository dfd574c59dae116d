"""Building blocks shared by the test modules.

Several modules build pipelines from stage specs the same way, use the same
small handlers, and drive a run the same way: start ``execute()`` in the
background, wait until a handler signals it reached a point, then stop or
pause the run. These helpers keep those steps identical everywhere, so a test
body shows only what it is about.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from proxima.data.pipeline import (
    Pipeline,
    PipelineConfig,
    PipelineContext,
    PipelineResult,
    RetryConfig,
    RetryStrategy,
    Stage,
    StageStatus,
    TimeoutConfig,
)

#: Most tests check one attempt per stage unless they are about retries.
NO_RETRY = RetryConfig(strategy=RetryStrategy.NONE)


# -- building pipelines ---------------------------------------------------------------------------


def make_pipeline(
    *stages: Stage,
    retry: RetryConfig | None = None,
    timeout: TimeoutConfig | None = None,
    pipeline_id: str | None = None,
    **config: Any,
) -> Pipeline:
    """A pipeline of ``stages``; no retries unless ``retry`` says otherwise,
    so a failing test fails on its first attempt."""
    pipeline = Pipeline(
        PipelineConfig(retry=retry or NO_RETRY, timeout=timeout or TimeoutConfig(), **config),
        pipeline_id=pipeline_id,
    )
    pipeline.add_stages(stages)
    return pipeline


def st(
    stage_id: str, handler: Any, deps: Iterable[str] = (), *, name: str | None = None, **kw: Any
) -> Stage:
    """A stage named after its id (upper case, unless ``name`` is given), so
    specs stay one short line."""
    return Stage(
        stage_id=stage_id,
        name=stage_id.upper() if name is None else name,
        handler=handler,
        dependencies=deps,
        **kw,
    )


def stage_of(sid: str, handler: Any, *deps: str, **kw: Any) -> Stage:
    """Like ``st``, with the dependencies as trailing arguments (kept for the
    modules that still use it; new tests use ``st``)."""
    return Stage(stage_id=sid, name=sid.upper(), handler=handler, dependencies=deps, **kw)


def grace(seconds: float | None, **more: Any) -> TimeoutConfig:
    """A TimeoutConfig whose grace period is the point of the test."""
    return TimeoutConfig(grace_period_seconds=seconds, **more)


def statuses(result: PipelineResult) -> dict[str, StageStatus]:
    """Stage id -> final status, to compare a whole run in one assert."""
    return {sid: r.status for sid, r in result.stage_results.items()}


# -- handlers -------------------------------------------------------------------------------------


async def ok(ctx: Any, _: Any) -> str:
    """Succeeds at once."""
    return "ok"


async def fails(ctx: Any, _: Any) -> None:
    """Fails at once with an ordinary exception."""
    raise ValueError("stage failed")


async def hangs(ctx: Any, _: Any) -> None:
    """Never returns; only a cancellation ends it."""
    await anyio.sleep_forever()


def raises(exc: BaseException | type[BaseException], *args: Any) -> Any:
    """A handler raising ``exc``: that very instance (when the test checks
    identity), or a new instance of that type made from ``args`` per call."""

    async def handler(ctx: Any, _: Any) -> None:
        raise exc(*args) if isinstance(exc, type) else exc

    return handler


def flaky(
    calls: list[int],
    *,
    failures: int = 1,
    exc: type[Exception] = ValueError,
    message: str = "flaky",
    value: Any = "ok",
) -> Any:
    """A handler whose first ``failures`` calls raise ``exc(message)`` (``{n}``
    in it is the call's number) and whose later calls return ``value``; each
    call appends its number to ``calls``."""

    async def handler(ctx: Any, _: Any) -> Any:
        calls.append(len(calls) + 1)
        if len(calls) <= failures:
            raise exc(message.format(n=len(calls)))
        return value

    return handler


async def echo(ctx: Any, data: Any) -> Any:
    """Returns its input: shows what the stage received."""
    return data


def returns(value: Any) -> Any:
    """A handler returning ``value``, to tell stage results apart."""

    async def handler(ctx: Any, _: Any) -> Any:
        return value

    return handler


def recording(calls: list[str], name: str, value: Any = None) -> Any:
    """A handler appending ``name`` to ``calls``: shows whether and when it ran."""

    async def handler(ctx: Any, _: Any) -> Any:
        calls.append(name)
        return value if value is not None else name

    return handler


def blocks_forever(started: anyio.Event | None = None, log: list[str] | None = None) -> Any:
    """A handler that sets ``started`` and blocks until cancelled, logging
    ``"cancelled"``: the test knows it is running and sees it was stopped."""

    async def handler(ctx: Any, _: Any) -> None:
        if started is not None:
            started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            if log is not None:
                log.append("cancelled")
            raise

    return handler


def waits_for(started: anyio.Event, go: anyio.Event, calls: list[str], name: str) -> Any:
    """A handler that records its call, sets ``started`` and holds until
    ``go``: the test acts while the stage is known to be running."""

    async def handler(ctx: Any, _: Any) -> str:
        calls.append(name)
        started.set()
        await go.wait()
        return name

    return handler


def recording_cleanup(log: list[str], name: str) -> Callable[[PipelineContext], Any]:
    """A cleanup handler appending ``name`` to ``log``, to check cleanup order."""

    async def cleanup(ctx: PipelineContext) -> None:
        log.append(name)

    return cleanup


# -- driving a run --------------------------------------------------------------------------------


class Execution:
    """What a background ``execute()`` returned (None until it returned)."""

    def __init__(self) -> None:
        self.result: PipelineResult | None = None

    @property
    def returned(self) -> PipelineResult:
        """The result ``execute()`` returned, which must exist."""
        assert self.result is not None, "execute() did not return"
        return self.result


@asynccontextmanager
async def executing(pipeline: Pipeline, limit: float = 5) -> AsyncIterator[Execution]:
    """Run ``pipeline.execute()`` in a task group while the body acts on the
    run; the block ends when the run ended, and ``limit`` turns a hang into a
    failure."""
    run = Execution()

    async def execute() -> None:
        run.result = await pipeline.execute()

    with anyio.fail_after(limit):
        async with anyio.create_task_group() as tg:
            tg.start_soon(execute)
            yield run


def finished(pipeline: Pipeline) -> PipelineResult:
    """The pipeline's last result, which must exist."""
    result = pipeline.result
    assert result is not None
    return result


async def stop_when(
    pipeline: Pipeline,
    *events: anyio.Event,
    stop: Callable[[], object] | None = None,
    then: Callable[[], object] | None = None,
    limit: float = 5,
) -> tuple[PipelineResult, float]:
    """Run the pipeline in the background, wait for each of ``events``, call
    ``stop`` (default: ``pipeline.cancel()``) and then ``then``; return the
    pipeline's result and the seconds from the stop to the end of the run."""
    async with executing(pipeline, limit):
        for event in events:
            await event.wait()
        stopped_at = time.perf_counter()
        (pipeline.cancel if stop is None else stop)()
        if then is not None:
            then()
    return finished(pipeline), time.perf_counter() - stopped_at
