"""Public-API usage that ``mypy --strict`` must accept (listed in
``[tool.mypy] files``). Never run: it only has to type-check."""

from __future__ import annotations

from typing import Any

import anyio

from proxima.data.pipeline import (
    CancellationReason,
    DependencyFailedException,
    Pipeline,
    PipelineAlreadyRunningError,
    PipelineBuilder,
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
    create_stage,
    run_pipeline,
    stage,
    with_retry,
)


async def load(ctx: PipelineContext, _: Any) -> dict[str, int]:
    ctx.set("loaded", True)
    return {"rows": 3}


async def process(ctx: PipelineContext, data: dict[str, int]) -> int:
    previous: StageResult | None = ctx.get_stage_result("load")
    if previous is not None and previous.is_success:
        ctx.check_cancelled()
        await ctx.wait_if_paused()
    return data["rows"] * 2


def report(ctx: PipelineContext, total: int) -> str:
    flag: Any = ctx.get("loaded", default=False)
    return f"{total} {flag}"


async def cleanup(ctx: PipelineContext) -> None:
    ctx.set("cleaned", True)


@stage(stage_id="decorated", name="Decorated", dependencies=["load"], timeout_seconds=5.0)
async def decorated(ctx: PipelineContext, data: Any) -> bool:
    """A stage made by the decorator."""
    return data is not None


@with_retry(max_retries=2, strategy=RetryStrategy.CONSTANT, initial_delay=0.1)
async def fetch(url: str) -> bytes:
    return url.encode()


def configs() -> PipelineConfig:
    retry = RetryConfig(
        max_retries=3,
        strategy=RetryStrategy.EXPONENTIAL_BACKOFF,
        initial_delay_seconds=1.0,
        max_delay_seconds=60.0,
        backoff_factor=2.0,
        retry_on_exceptions=(ConnectionError, TimeoutError),
        retry_on_timeout=True,
    )
    delay: float = retry.get_delay(attempt=2)
    assert delay >= 0
    timeout = TimeoutConfig(
        stage_timeout_seconds=300.0,
        pipeline_timeout_seconds=None,
        cleanup_timeout_seconds=30.0,
        grace_period_seconds=0,
    )
    return PipelineConfig(
        name="typed",
        retry=retry,
        timeout=timeout,
        continue_on_error=False,
        parallel_stages=True,
        max_parallel=4,
        collect_metrics=True,
        cleanup_on_cancel=True,
    )


def stages() -> list[Stage]:
    return [
        Stage(
            stage_id="load",
            name="Load",
            handler=load,
            cleanup_handler=cleanup,
            retry_config=RetryConfig(max_retries=1),
            critical=True,
            description="load the rows",
            tags=["io"],
        ),
        create_stage("process", "Process", process, ["load"], 60.0, True),
        create_stage("report", "Report", report, dependencies=["process"]),
        decorated,
    ]


async def run_all() -> None:
    pipeline = Pipeline(configs())
    pipeline.add_stages(stages())
    pipeline.validate()
    result: PipelineResult = await pipeline.execute(initial_input={"x": 1})
    status: PipelineStatus = result.status
    if status is PipelineStatus.PARTIALLY_COMPLETED:
        failed: list[str] = result.failed_stages
        print(failed)
    ok: list[str] = result.successful_stages
    summary: str = result.summary()
    data: dict[str, Any] = result.to_dict()
    ms: float | None = result.duration_ms
    reason: CancellationReason | None = result.cancellation_reason
    print(ok, summary, data, ms, reason, result.is_success)
    for sid, stage_result in result.stage_results.items():
        st: StageStatus = stage_result.status
        print(sid, st.name, stage_result.result, stage_result.attempt_count)
    statuses: dict[str, StageStatus] = pipeline.stage_statuses()
    print(statuses, pipeline.is_running, pipeline.status, pipeline.result)
    pipeline.pause()
    pipeline.resume()
    pipeline.cancel()
    pipeline.cancel(CancellationReason.TIMEOUT)

    built: Pipeline = (
        PipelineBuilder("builder")
        .with_retry(max_retries=3, strategy=RetryStrategy.EXPONENTIAL_BACKOFF, initial_delay=1.0)
        .with_retry(max_delay=60.0)
        .with_timeout(stage_timeout=300.0, pipeline_timeout=3600.0)
        .with_timeout(stage_timeout=None)
        .with_parallel(enabled=True, max_parallel=4)
        .continue_on_error(enabled=False)
        .add_stage("a", "Stage A", load)
        .add_stage("b", "Stage B", lambda c, i: process(c, i), dependencies=["a"], critical=False)
        .build()
    )
    await built.execute(raise_on_failure=True)

    quick: PipelineResult = await run_pipeline(
        stages=stages(), initial_input=None, config=PipelineConfig(name="quick")
    )
    quick.raise_for_status()
    body: bytes = await fetch("https://example.invalid")
    print(body)


def run_blocking() -> PipelineResult:
    pipeline = Pipeline(PipelineConfig(name="sync")).add_stages(stages())
    first = pipeline.run_sync()
    second = pipeline.run_sync({"x": 1}, backend="trio")
    assert first.pipeline_id == second.pipeline_id
    return second


def handle_errors(exc: PipelineException) -> str:
    if isinstance(exc, StageTimeoutException):
        return f"{exc.stage_id} {exc.timeout_seconds}"
    if isinstance(exc, PipelineTimeoutException):
        return f"{exc.timeout_seconds}"
    if isinstance(exc, PipelineCancelledException):
        return exc.reason.value
    if isinstance(exc, StageExecutionException):
        cause: BaseException | None = exc.cause
        return f"{exc.stage_id} {exc.error} {cause}"
    if isinstance(exc, DependencyFailedException):
        return f"{exc.stage_id} {exc.failed_dependency}"
    if isinstance(exc, (PipelineValidationError, PipelineAlreadyRunningError)):
        return str(exc)
    return str(exc)


def context_alone() -> bool:
    ctx = PipelineContext(pipeline_id="abc123", config=PipelineConfig(name="test"))
    ctx.cancel(CancellationReason.USER_REQUESTED)
    ctx.pause()
    ctx.resume()
    return ctx.is_cancelled


def main() -> None:
    anyio.run(run_all)
    run_blocking()
