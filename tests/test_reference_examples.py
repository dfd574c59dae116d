"""Every code example of api-reference.md, run with stand-in handlers.

Only two things differ from the reference text: external services are
replaced by local stand-ins, and retry delays of a second or more are cut to
milliseconds so the suite stays fast. Everything else is as documented.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from helpers import hangs, make_pipeline, ok, raises

from proxima.data.pipeline import (
    CancellationReason,
    DependencyFailedException,
    Pipeline,
    PipelineBuilder,
    PipelineCancelledException,
    PipelineConfig,
    PipelineContext,
    PipelineException,
    PipelineResult,
    PipelineStatus,
    PipelineTimeoutException,
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

pytestmark = pytest.mark.anyio


# -- Enums ----------------------------------------------------------------------------------------


def test_reference_enums_have_the_documented_members_and_values() -> None:
    assert [m.name for m in StageStatus] == [
        "PENDING",
        "QUEUED",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "SKIPPED",
        "RETRYING",
        "TIMED_OUT",
    ]
    assert [m.name for m in PipelineStatus] == [
        "IDLE",
        "RUNNING",
        "PAUSED",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "PARTIALLY_COMPLETED",
    ]
    assert {m.name: m.value for m in RetryStrategy} == {
        "NONE": "none",
        "IMMEDIATE": "immediate",
        "LINEAR_BACKOFF": "linear_backoff",
        "EXPONENTIAL_BACKOFF": "exponential_backoff",
        "CONSTANT": "constant",
    }
    assert {m.name: m.value for m in CancellationReason} == {
        "USER_REQUESTED": "user_requested",
        "TIMEOUT": "timeout",
        "DEPENDENCY_FAILED": "dependency_failed",
        "RESOURCE_LIMIT": "resource_limit",
        "ERROR": "error",
        "EXTERNAL": "external",
    }


# -- Configuration classes ------------------------------------------------------------------------


def test_reference_retry_config_example() -> None:
    config = RetryConfig(
        max_retries=3,
        strategy=RetryStrategy.EXPONENTIAL_BACKOFF,
        initial_delay_seconds=1.0,
        max_delay_seconds=60.0,
        backoff_factor=2.0,
        retry_on_exceptions=None,
        retry_on_timeout=True,
    )
    delay = config.get_delay(attempt=2)
    assert delay == pytest.approx(4.0)  # 1.0 * 2.0 ** 2 (R4.2)
    assert config.max_retries == 3
    assert config.retry_on_exceptions is None
    assert config.retry_on_timeout is True


def test_reference_timeout_config_example() -> None:
    config = TimeoutConfig(
        stage_timeout_seconds=300.0,
        pipeline_timeout_seconds=3600.0,
        cleanup_timeout_seconds=30.0,
        grace_period_seconds=5.0,
    )
    assert config.stage_timeout_seconds == 300.0
    assert config.pipeline_timeout_seconds == 3600.0
    assert config.cleanup_timeout_seconds == 30.0
    assert config.grace_period_seconds == 5.0


def test_reference_pipeline_config_example() -> None:
    config = PipelineConfig(
        name="my_pipeline",
        retry=RetryConfig(max_retries=3),
        timeout=TimeoutConfig(stage_timeout_seconds=60.0),
        continue_on_error=False,
        parallel_stages=True,
        max_parallel=4,
        collect_metrics=True,
        cleanup_on_cancel=True,
    )
    assert config.name == "my_pipeline"
    assert config.retry.max_retries == 3
    assert config.timeout.stage_timeout_seconds == 60.0
    assert config.continue_on_error is False
    assert config.parallel_stages is True
    assert config.max_parallel == 4
    assert config.collect_metrics is True
    assert config.cleanup_on_cancel is True


# -- Result classes -------------------------------------------------------------------------------


def _process_data_result() -> StageResult:
    return StageResult(
        stage_id="process_data",
        stage_name="Process Data",
        status=StageStatus.COMPLETED,
        result={"processed": 100},
        error=None,
        exception=None,
        start_time=1704067200.0,
        end_time=1704067210.0,
        attempt_count=1,
        metrics={"rows_processed": 100},
    )


def test_reference_stage_result_example() -> None:
    result = _process_data_result()
    assert result.duration_ms == pytest.approx(10_000.0)
    assert result.is_success is True
    data = result.to_dict()
    assert data["stage_id"] == "process_data"
    assert data["result"] == {"processed": 100}
    json.dumps(data)


def test_reference_pipeline_result_example() -> None:
    result = PipelineResult(
        pipeline_id="abc123",
        pipeline_name="data_pipeline",
        status=PipelineStatus.COMPLETED,
        stage_results={"process_data": _process_data_result()},
        start_time=1704067200.0,
        end_time=1704067300.0,
        cancellation_reason=None,
        metadata={},
    )
    assert result.duration_ms == pytest.approx(100_000.0)
    assert result.successful_stages == ["process_data"]
    assert result.failed_stages == []
    assert result.is_success is True
    summary = result.summary()
    assert "data_pipeline" in summary
    assert "process_data" in summary
    data = json.loads(json.dumps(result.to_dict()))
    assert data["pipeline_id"] == "abc123"
    assert data["status"] == "COMPLETED"


# -- Core classes ---------------------------------------------------------------------------------


async def test_reference_stage_example() -> None:
    cleaned: list[str] = []

    async def my_handler(ctx: PipelineContext, input_data: Any) -> dict[str, Any]:
        ctx.set("intermediate_result", {"key": "value"})
        return {"processed": True}

    async def my_cleanup(ctx: PipelineContext) -> None:
        cleaned.append("cleanup")

    process = Stage(
        stage_id="process",
        name="Process Data",
        handler=my_handler,
        dependencies=["load_data"],
        timeout_seconds=60.0,
        retry_config=RetryConfig(max_retries=2),
        critical=True,
        cleanup_handler=my_cleanup,
        description="Process loaded data",
        tags=["data", "processing"],
    )
    assert process.stage_id == "process"
    assert process.name == "Process Data"
    assert list(process.dependencies) == ["load_data"]
    assert process.timeout_seconds == 60.0
    assert process.retry_config == RetryConfig(max_retries=2)
    assert process.critical is True
    assert process.cleanup_handler is my_cleanup
    assert process.description == "Process loaded data"
    assert list(process.tags) == ["data", "processing"]

    seen: list[Any] = []

    async def load_data(ctx: PipelineContext, _: Any) -> str:
        return "rows"

    async def report(ctx: PipelineContext, processed: Any) -> None:
        seen.append((processed, ctx.get("intermediate_result")))

    pipeline = Pipeline(PipelineConfig(name="stage_example"))
    pipeline.add_stages(
        [
            process,
            Stage(stage_id="load_data", name="Load", handler=load_data),
            Stage(stage_id="report", name="Report", handler=report, dependencies=["process"]),
        ]
    )
    result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    assert result.stage_results["process"].result == {"processed": True}
    assert seen == [({"processed": True}, {"key": "value"})]
    assert cleaned == []  # cleanup runs only after a stop (R5.4)


async def test_reference_pipeline_context_example() -> None:
    context = PipelineContext(pipeline_id="abc123", config=PipelineConfig(name="test"))

    context.set("key", "value")
    assert context.get("key", default=None) == "value"
    assert context.get("missing", default="fallback") == "fallback"

    assert context.get_stage_result("previous_stage") is None

    assert not context.is_cancelled
    context.check_cancelled()  # nothing requested yet: no exception
    context.cancel(CancellationReason.USER_REQUESTED)
    assert context.is_cancelled
    with pytest.raises(PipelineCancelledException) as excinfo:
        context.check_cancelled()
    assert excinfo.value.reason is CancellationReason.USER_REQUESTED

    context.pause()
    context.resume()
    with anyio.fail_after(1):
        await context.wait_if_paused()


async def test_reference_pipeline_example() -> None:
    inputs: list[Any] = []

    async def record(ctx: PipelineContext, data: Any) -> Any:
        inputs.append(data)
        return data

    stage1 = Stage(stage_id="s1", name="One", handler=record)
    stage2 = Stage(stage_id="s2", name="Two", handler=record, dependencies=["s1"])
    stage3 = Stage(stage_id="s3", name="Three", handler=record, dependencies=["s2"])

    config = PipelineConfig(name="my_pipeline")
    pipeline = Pipeline(config)
    pipeline.add_stage(stage1)
    pipeline.add_stages([stage2, stage3])

    # Control while nothing runs: no effect.
    pipeline.cancel()
    pipeline.pause()
    pipeline.resume()
    assert pipeline.is_running is False
    assert pipeline.result is None

    result = await pipeline.execute(initial_input={"data": "..."})
    assert result.status is PipelineStatus.COMPLETED
    assert result.is_success is True
    assert inputs == [{"data": "..."}] * 3
    assert pipeline.is_running is False
    assert pipeline.result is result


# -- PipelineBuilder ------------------------------------------------------------------------------


async def test_reference_builder_example() -> None:
    async def stage_a(ctx: Any, _: Any) -> dict[str, int]:
        return {"a": 1}

    async def stage_b(ctx: Any, a_result: dict[str, int]) -> dict[str, int]:
        return {"b": a_result["a"] * 2}

    pipeline = (
        PipelineBuilder("my_pipeline")
        .with_retry(
            max_retries=3,
            strategy=RetryStrategy.EXPONENTIAL_BACKOFF,
            initial_delay=1.0,
            max_delay=60.0,
        )
        .with_timeout(
            stage_timeout=300.0,
            pipeline_timeout=3600.0,
        )
        .with_parallel(enabled=True, max_parallel=4)
        .continue_on_error(enabled=False)
        .add_stage("a", "Stage A", stage_a)
        .add_stage("b", "Stage B", stage_b, dependencies=["a"])
        .build()
    )
    assert isinstance(pipeline, Pipeline)

    result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    assert result.pipeline_name == "my_pipeline"
    assert result.stage_results["a"].result == {"a": 1}
    assert result.stage_results["b"].result == {"b": 2}
    assert result.stage_results["a"].stage_name == "Stage A"


# -- Decorators -----------------------------------------------------------------------------------


async def test_reference_stage_decorator_example() -> None:
    @stage(
        stage_id="process",
        name="Process Data",
        dependencies=["load"],
        timeout_seconds=60.0,
        critical=True,
    )
    async def process_data(ctx: Any, input_data: Any) -> dict[str, bool]:
        """Process the loaded data."""
        return {"processed": True}

    assert isinstance(process_data, Stage)
    assert process_data.stage_id == "process"
    assert process_data.name == "Process Data"
    assert list(process_data.dependencies) == ["load"]
    assert process_data.timeout_seconds == 60.0
    assert process_data.critical is True

    @stage(stage_id="load", name="Load")
    async def load(ctx: Any, _: Any) -> list[int]:
        return [1, 2, 3]

    pipeline = Pipeline(PipelineConfig(name="decorated"))
    pipeline.add_stage(load)
    pipeline.add_stage(process_data)  # used directly as a Stage object
    result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    assert result.stage_results["process"].result == {"processed": True}


async def test_reference_with_retry_example() -> None:
    class ExternalService:
        def __init__(self, failures: int) -> None:
            self.failures = failures
            self.calls = 0

        async def call(self) -> str:
            self.calls += 1
            if self.calls <= self.failures:
                raise ConnectionError(f"call {self.calls} failed")
            return "response"

    external_service = ExternalService(failures=2)

    @with_retry(
        max_retries=3,
        strategy=RetryStrategy.EXPONENTIAL_BACKOFF,
        initial_delay=0.001,  # the reference's 1.0 s, shortened
    )
    async def unreliable_operation() -> str:
        return await external_service.call()

    assert await unreliable_operation() == "response"
    assert external_service.calls == 3

    # "This will retry up to 3 times on failure": 4 calls, then the error.
    external_service = ExternalService(failures=100)
    with pytest.raises(ConnectionError, match="call 4 failed"):
        await unreliable_operation()
    assert external_service.calls == 4


# -- Convenience functions ------------------------------------------------------------------------


async def test_reference_run_pipeline_example() -> None:
    async def handler_a(ctx: Any, data: Any) -> dict[str, Any]:
        return {"from_a": data["data"]}

    async def handler_b(ctx: Any, a_result: dict[str, Any]) -> str:
        return f"b saw {a_result['from_a']}"

    stages = [
        Stage(stage_id="a", name="A", handler=handler_a),
        Stage(stage_id="b", name="B", handler=handler_b, dependencies=["a"]),
    ]

    result = await run_pipeline(
        stages=stages,
        initial_input={"data": "..."},
        config=PipelineConfig(name="quick_pipeline"),
    )
    assert isinstance(result, PipelineResult)
    assert result.status is PipelineStatus.COMPLETED
    assert result.pipeline_name == "quick_pipeline"
    assert result.stage_results["b"].result == "b saw ..."


def test_reference_create_stage_example() -> None:
    async def my_handler(ctx: Any, input_data: Any) -> None:
        return None

    created = create_stage(
        stage_id="process",
        name="Process Data",
        handler=my_handler,
        dependencies=["load"],
        timeout_seconds=60.0,
        critical=True,
    )
    assert isinstance(created, Stage)
    assert created.stage_id == "process"
    assert created.name == "Process Data"
    assert created.handler is my_handler
    assert list(created.dependencies) == ["load"]
    assert created.timeout_seconds == 60.0
    assert created.critical is True


# -- Exceptions -----------------------------------------------------------------------------------
# The reference catches these around `await pipeline.execute()`; a run only
# raises on request (R7.4), so the examples pass raise_on_failure=True.


def _pipeline(*stages: Stage, **config: Any) -> Pipeline:
    return make_pipeline(*stages, name="examples", **config)


#: The handler of the exception examples' failing stage.
_fails = raises(ValueError, "bad data")


async def test_reference_pipeline_exception_example() -> None:
    pipeline = _pipeline(Stage(stage_id="load", name="Load", handler=_fails))
    messages: list[str] = []
    try:
        await pipeline.execute(raise_on_failure=True)
    except PipelineException as e:
        messages.append(f"Pipeline error: {e}")
    assert len(messages) == 1
    assert "load" in messages[0]


async def test_reference_stage_timeout_exception_example() -> None:
    pipeline = _pipeline(Stage(stage_id="slow", name="Slow", handler=hangs, timeout_seconds=0.05))
    messages: list[str] = []
    with anyio.fail_after(5):
        try:
            await pipeline.execute(raise_on_failure=True)
        except StageTimeoutException as e:
            messages.append(f"Stage {e.stage_id} timed out after {e.timeout_seconds}s")
    assert messages == ["Stage slow timed out after 0.05s"]


async def test_reference_pipeline_timeout_exception_example() -> None:
    pipeline = _pipeline(
        Stage(stage_id="slow", name="Slow", handler=hangs),
        timeout=TimeoutConfig(
            pipeline_timeout_seconds=0.05, stage_timeout_seconds=None, grace_period_seconds=0
        ),
    )
    messages: list[str] = []
    with anyio.fail_after(5):
        try:
            await pipeline.execute(raise_on_failure=True)
        except PipelineTimeoutException as e:
            messages.append(f"Pipeline timed out after {e.timeout_seconds}s")
    assert messages == ["Pipeline timed out after 0.05s"]


async def test_reference_pipeline_cancelled_exception_example() -> None:
    async def cancels(ctx: PipelineContext, _: Any) -> None:
        ctx.cancel(CancellationReason.USER_REQUESTED)

    pipeline = _pipeline(Stage(stage_id="a", name="A", handler=cancels))
    messages: list[str] = []
    try:
        await pipeline.execute(raise_on_failure=True)
    except PipelineCancelledException as e:
        messages.append(f"Pipeline cancelled: {e.reason.value}")
    assert messages == ["Pipeline cancelled: user_requested"]


async def test_reference_stage_execution_exception_example() -> None:
    pipeline = _pipeline(Stage(stage_id="transform", name="Transform", handler=_fails))
    messages: list[str] = []
    try:
        await pipeline.execute(raise_on_failure=True)
    except StageExecutionException as e:
        messages.append(f"Stage {e.stage_id} failed: {e.error}")
        if e.cause:
            messages.append(f"Caused by: {e.cause}")
    assert len(messages) == 2
    assert messages[0].startswith("Stage transform failed: ")
    assert "bad data" in messages[0]
    assert messages[1] == "Caused by: bad data"


async def test_reference_dependency_failed_exception_example() -> None:
    # A critical stage that only ended SKIPPED (its optional dependency failed).
    pipeline = _pipeline(
        Stage(stage_id="enrich", name="Enrich", handler=_fails, critical=False),
        Stage(stage_id="publish", name="Publish", handler=ok, dependencies=["enrich"]),
    )
    messages: list[str] = []
    try:
        await pipeline.execute(raise_on_failure=True)
    except DependencyFailedException as e:
        messages.append(f"Stage {e.stage_id} skipped: dependency {e.failed_dependency} failed")
    except PipelineException as e:  # pragma: no cover - reported by the assert below
        messages.append(f"unexpected {type(e).__name__}: {e}")
    assert messages == ["Stage publish skipped: dependency enrich failed"]


# -- Examples -------------------------------------------------------------------------------------


async def test_reference_basic_pipeline_example() -> None:
    store: list[Any] = []

    async def fetch_from_source() -> list[int]:
        await anyio.lowlevel.checkpoint()
        return [3, 1, 2]

    def transform(data: list[int]) -> list[int]:
        return sorted(data)

    async def store_results(processed: list[int]) -> None:
        store.append(processed)

    async def load_data(ctx: PipelineContext, _: Any) -> list[int]:
        data = await fetch_from_source()
        ctx.set("raw_data", data)
        return data

    async def process_data(ctx: PipelineContext, data: list[int]) -> list[int]:
        assert ctx.get("raw_data") == data
        processed = transform(data)
        return processed

    async def save_results(ctx: PipelineContext, processed: list[int]) -> dict[str, bool]:
        await store_results(processed)
        return {"saved": True}

    config = PipelineConfig(name="etl_pipeline")
    pipeline = Pipeline(config)

    pipeline.add_stages(
        [
            Stage(stage_id="load", name="Load Data", handler=load_data),
            Stage(stage_id="process", name="Process", handler=process_data, dependencies=["load"]),
            Stage(stage_id="save", name="Save", handler=save_results, dependencies=["process"]),
        ]
    )

    result = await pipeline.execute()
    summary = result.summary()

    assert result.status is PipelineStatus.COMPLETED
    assert store == [[1, 2, 3]]
    assert result.stage_results["process"].result == [1, 2, 3]
    assert result.stage_results["save"].result == {"saved": True}
    assert "etl_pipeline" in summary
    for sid in ("load", "process", "save"):
        assert sid in summary


@pytest.mark.parametrize(
    ("flaky_failures", "important_fails", "expected_status", "expected_message"),
    [
        (2, False, PipelineStatus.COMPLETED, "All stages completed successfully"),
        (100, False, PipelineStatus.PARTIALLY_COMPLETED, "Some stages failed: ['flaky']"),
        (0, True, PipelineStatus.FAILED, "Pipeline failed: FAILED"),
    ],
    ids=["flaky_recovers", "flaky_gives_up", "important_fails"],
)
async def test_reference_pipeline_with_error_handling_example(
    flaky_failures: int,
    important_fails: bool,
    expected_status: PipelineStatus,
    expected_message: str,
) -> None:
    flaky_calls: list[int] = []

    async def flaky_stage(ctx: Any, _: Any) -> dict[str, bool]:
        # Fails a fixed number of times instead of at random.
        flaky_calls.append(1)
        if len(flaky_calls) <= flaky_failures:
            raise ConnectionError("Network error")
        return {"success": True}

    async def important_handler(ctx: Any, _: Any) -> dict[str, bool]:
        if important_fails:
            raise RuntimeError("important work failed")
        return {"important": True}

    pipeline = (
        PipelineBuilder("robust_pipeline")
        .with_retry(
            max_retries=5,
            strategy=RetryStrategy.EXPONENTIAL_BACKOFF,
            initial_delay=0.001,  # default 1.0 s, shortened
        )
        .with_timeout(stage_timeout=30.0, pipeline_timeout=300.0)
        .continue_on_error(enabled=True)
        .add_stage("flaky", "Flaky Stage", flaky_stage, critical=False)
        .add_stage("important", "Important Stage", important_handler, critical=True)
        .build()
    )

    with anyio.fail_after(10):
        result = await pipeline.execute()

    if result.status == PipelineStatus.COMPLETED:
        message = "All stages completed successfully"
    elif result.status == PipelineStatus.PARTIALLY_COMPLETED:
        message = f"Some stages failed: {result.failed_stages}"
    else:
        message = f"Pipeline failed: {result.status.name}"

    assert result.status is expected_status
    assert message == expected_message
    assert len(flaky_calls) == min(flaky_failures + 1, 6)  # at most 1 + max_retries


async def test_reference_parallel_stage_execution_example() -> None:
    running: set[str] = set()
    all_three = anyio.Event()

    async def execute_on_backend(backend_name: str) -> str:
        running.add(backend_name)
        if len(running) == 3:
            all_three.set()
        await all_three.wait()  # deadlocks unless the three run at once
        return f"{backend_name}-counts"

    async def process_backend(ctx: Any, _: Any, backend_name: str) -> dict[str, str]:
        result = await execute_on_backend(backend_name)
        return {backend_name: result}

    async def compare_handler(ctx: Any, results: dict[str, Any]) -> list[str]:
        return list(results)

    pipeline = (
        PipelineBuilder("parallel_comparison")
        .with_parallel(enabled=True, max_parallel=3)
        .add_stage("cirq", "Cirq Backend", lambda c, i: process_backend(c, i, "cirq"))
        .add_stage("qiskit", "Qiskit Backend", lambda c, i: process_backend(c, i, "qiskit"))
        .add_stage("lret", "LRET Backend", lambda c, i: process_backend(c, i, "lret"))
        .add_stage(
            "compare", "Compare Results", compare_handler, dependencies=["cirq", "qiskit", "lret"]
        )
        .build()
    )

    with anyio.fail_after(5):
        result = await pipeline.execute()

    assert result.status is PipelineStatus.COMPLETED
    assert result.stage_results["cirq"].result == {"cirq": "cirq-counts"}
    assert result.stage_results["compare"].result == ["cirq", "qiskit", "lret"]
