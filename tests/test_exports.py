"""The public surface of ``proxima.data.pipeline`` as api-reference.md
documents it: names, ``__all__``, enum members, config defaults (contract
preamble), call signatures and exception attributes (R7.5)."""

from __future__ import annotations

import inspect
import pickle
import types
from typing import Any

import pytest

import proxima.data.pipeline as pl
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

EMPTY = inspect.Parameter.empty

#: Every name api-reference.md imports from ``proxima.data.pipeline``.
DOCUMENTED_NAMES = [
    "StageStatus",
    "PipelineStatus",
    "RetryStrategy",
    "CancellationReason",
    "RetryConfig",
    "TimeoutConfig",
    "PipelineConfig",
    "StageResult",
    "PipelineResult",
    "Stage",
    "PipelineContext",
    "Pipeline",
    "PipelineBuilder",
    "stage",
    "with_retry",
    "run_pipeline",
    "create_stage",
    "PipelineException",
    "StageTimeoutException",
    "PipelineTimeoutException",
    "PipelineCancelledException",
    "StageExecutionException",
    "DependencyFailedException",
]
EXTENSIONS = ["PipelineValidationError", "PipelineAlreadyRunningError"]


async def _handler(ctx: PipelineContext, data: Any) -> Any:
    return data


def _params(func: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(func).parameters)


# -- names and __all__ -------------------------------------------------------------------


@pytest.mark.parametrize("name", DOCUMENTED_NAMES + EXTENSIONS)
def test_api_every_documented_name_is_importable(name: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"from proxima.data.pipeline import {name}", namespace)
    assert namespace[name] is getattr(pl, name)


def test_api_all_lists_every_documented_name_and_the_extensions() -> None:
    missing = set(DOCUMENTED_NAMES + EXTENSIONS) - set(pl.__all__)
    assert not missing, f"missing from __all__: {sorted(missing)}"


def test_api_all_has_no_duplicates_and_every_entry_exists() -> None:
    assert len(pl.__all__) == len(set(pl.__all__))
    for name in pl.__all__:
        assert hasattr(pl, name), f"__all__ names {name!r} but the module has no such attribute"


def test_api_every_public_attribute_is_in_all() -> None:
    public = {
        name
        for name, value in vars(pl).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(pl.__all__), (
        f"public but not in __all__: {sorted(public - set(pl.__all__))}"
    )


def test_api_star_import_gives_exactly_all() -> None:
    namespace: dict[str, Any] = {}
    exec("from proxima.data.pipeline import *", namespace)
    namespace.pop("__builtins__", None)
    assert set(namespace) == set(pl.__all__)


# -- enums -------------------------------------------------------------------------------


def test_api_stage_status_members_are_auto_in_documented_order() -> None:
    expected = [
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
    assert [m.name for m in StageStatus] == expected
    assert [m.value for m in StageStatus] == list(range(1, len(expected) + 1))


def test_api_pipeline_status_members_are_auto_in_documented_order() -> None:
    expected = [
        "IDLE",
        "RUNNING",
        "PAUSED",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "PARTIALLY_COMPLETED",
    ]
    assert [m.name for m in PipelineStatus] == expected
    assert [m.value for m in PipelineStatus] == list(range(1, len(expected) + 1))


def test_api_retry_strategy_string_values() -> None:
    assert {m.name: m.value for m in RetryStrategy} == {
        "NONE": "none",
        "IMMEDIATE": "immediate",
        "LINEAR_BACKOFF": "linear_backoff",
        "EXPONENTIAL_BACKOFF": "exponential_backoff",
        "CONSTANT": "constant",
    }
    assert [m.name for m in RetryStrategy] == [
        "NONE",
        "IMMEDIATE",
        "LINEAR_BACKOFF",
        "EXPONENTIAL_BACKOFF",
        "CONSTANT",
    ]


def test_api_cancellation_reason_string_values() -> None:
    assert {m.name: m.value for m in CancellationReason} == {
        "USER_REQUESTED": "user_requested",
        "TIMEOUT": "timeout",
        "DEPENDENCY_FAILED": "dependency_failed",
        "RESOURCE_LIMIT": "resource_limit",
        "ERROR": "error",
        "EXTERNAL": "external",
    }
    assert [m.name for m in CancellationReason] == [
        "USER_REQUESTED",
        "TIMEOUT",
        "DEPENDENCY_FAILED",
        "RESOURCE_LIMIT",
        "ERROR",
        "EXTERNAL",
    ]


# -- defaults (contract preamble) --------------------------------------------------------


def test_preamble_retry_config_defaults() -> None:
    cfg = RetryConfig()
    assert cfg.max_retries == 3
    assert cfg.strategy is RetryStrategy.EXPONENTIAL_BACKOFF
    assert cfg.initial_delay_seconds == 1.0
    assert cfg.max_delay_seconds == 60.0
    assert cfg.backoff_factor == 2.0
    assert cfg.retry_on_exceptions is None
    assert cfg.retry_on_timeout is True


def test_preamble_timeout_config_defaults() -> None:
    cfg = TimeoutConfig()
    assert cfg.stage_timeout_seconds == 300.0
    assert cfg.pipeline_timeout_seconds == 3600.0
    assert cfg.cleanup_timeout_seconds == 30.0
    assert cfg.grace_period_seconds == 5.0


def test_preamble_pipeline_config_defaults() -> None:
    cfg = PipelineConfig()
    assert isinstance(cfg.name, str)
    assert cfg.retry == RetryConfig()
    assert cfg.timeout == TimeoutConfig()
    assert cfg.continue_on_error is False
    assert cfg.parallel_stages is True
    assert cfg.max_parallel == 4
    assert cfg.collect_metrics is True
    assert cfg.cleanup_on_cancel is True


def test_preamble_pipeline_config_named_keeps_other_defaults() -> None:
    cfg = PipelineConfig(name="my_pipeline")
    assert cfg.name == "my_pipeline"
    assert cfg.retry == RetryConfig()
    assert cfg.timeout == TimeoutConfig()
    assert cfg.max_parallel == 4


def test_preamble_stage_defaults() -> None:
    st = Stage(stage_id="s", name="S", handler=_handler)
    assert st.stage_id == "s"
    assert st.name == "S"
    assert st.handler is _handler
    assert list(st.dependencies) == []
    assert st.timeout_seconds is None
    assert st.retry_config is None
    assert st.critical is True
    assert st.cleanup_handler is None
    assert not st.description
    assert list(st.tags) == []


def test_api_stage_accepts_every_documented_keyword() -> None:
    async def cleanup(ctx: PipelineContext) -> None:
        return None

    st = Stage(
        stage_id="process",
        name="Process Data",
        handler=_handler,
        dependencies=["load_data"],
        timeout_seconds=60.0,
        retry_config=RetryConfig(max_retries=2),
        critical=True,
        cleanup_handler=cleanup,
        description="Process loaded data",
        tags=["data", "processing"],
    )
    assert list(st.dependencies) == ["load_data"]
    assert st.timeout_seconds == 60.0
    assert st.retry_config == RetryConfig(max_retries=2)
    assert st.cleanup_handler is cleanup
    assert st.description == "Process loaded data"
    assert list(st.tags) == ["data", "processing"]


def test_api_pipeline_context_documented_usage() -> None:
    ctx = PipelineContext(pipeline_id="abc123", config=PipelineConfig(name="test"))
    assert ctx.pipeline_id == "abc123"
    assert ctx.config.name == "test"
    ctx.set("key", "value")
    assert ctx.get("key") == "value"
    assert ctx.get("missing") is None
    assert ctx.get("missing", default=7) == 7
    assert ctx.get_stage_result("previous_stage") is None
    assert ctx.is_cancelled is False
    ctx.check_cancelled()
    ctx.cancel(CancellationReason.USER_REQUESTED)
    assert ctx.is_cancelled is True
    with pytest.raises(PipelineCancelledException) as info:
        ctx.check_cancelled()
    assert info.value.reason is CancellationReason.USER_REQUESTED


def test_api_result_classes_accept_documented_keywords() -> None:
    sr = StageResult(
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
    assert sr.duration_ms == pytest.approx(10_000.0)
    assert sr.is_success is True
    assert sr.to_dict()["stage_id"] == "process_data"
    pr = PipelineResult(
        pipeline_id="abc123",
        pipeline_name="data_pipeline",
        status=PipelineStatus.COMPLETED,
        stage_results={"process_data": sr},
        start_time=1704067200.0,
        end_time=1704067300.0,
        cancellation_reason=None,
        metadata={},
    )
    assert pr.duration_ms == pytest.approx(100_000.0)
    assert pr.successful_stages == ["process_data"]
    assert pr.failed_stages == []
    assert pr.is_success is True
    assert isinstance(pr.summary(), str)
    assert pr.to_dict()["pipeline_id"] == "abc123"


# -- signatures --------------------------------------------------------------------------


def test_api_pipeline_signatures() -> None:
    init = _params(Pipeline.__init__)
    assert list(init)[1] == "config"
    execute = _params(Pipeline.execute)
    assert list(execute)[1] == "initial_input"
    assert execute["initial_input"].default is None
    run_sync = _params(Pipeline.run_sync)
    assert list(run_sync)[1] == "initial_input"
    assert run_sync["initial_input"].default is None
    assert run_sync["backend"].kind is inspect.Parameter.KEYWORD_ONLY
    assert run_sync["backend"].default == "asyncio"
    cancel = _params(Pipeline.cancel)
    assert cancel["reason"].default is CancellationReason.USER_REQUESTED
    assert list(_params(Pipeline.add_stage))[1] == "stage"
    assert list(_params(Pipeline.add_stages))[1] == "stages"
    for name in ("pause", "resume", "validate", "stage_statuses"):
        assert list(_params(getattr(Pipeline, name))) == ["self"], name
    for name in ("is_running", "result", "status"):
        assert isinstance(inspect.getattr_static(Pipeline, name), property), name


def test_api_pipeline_builder_signatures() -> None:
    assert list(_params(PipelineBuilder.__init__))[1] == "name"
    retry = _params(PipelineBuilder.with_retry)
    for name in ("max_retries", "strategy", "initial_delay", "max_delay"):
        assert name in retry, name
        assert retry[name].default is not EMPTY, f"with_retry({name}) must be optional"
    timeout = _params(PipelineBuilder.with_timeout)
    for name in ("stage_timeout", "pipeline_timeout"):
        assert name in timeout, name
        assert timeout[name].default is not EMPTY, f"with_timeout({name}) must be optional"
    parallel = _params(PipelineBuilder.with_parallel)
    assert "enabled" in parallel
    assert "max_parallel" in parallel
    assert parallel["max_parallel"].default is not EMPTY
    coe = _params(PipelineBuilder.continue_on_error)
    assert list(coe)[1] == "enabled"
    add = _params(PipelineBuilder.add_stage)
    assert list(add)[1:4] == ["stage_id", "name", "handler"]
    assert add["dependencies"].default is None
    assert add["critical"].default is True
    assert list(_params(PipelineBuilder.build)) == ["self"]


def test_api_stage_decorator_signature() -> None:
    params = _params(stage)
    for name in ("stage_id", "name", "dependencies", "timeout_seconds", "critical"):
        assert name in params, name
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    assert params["critical"].default is True
    assert params["dependencies"].default is None
    assert params["timeout_seconds"].default is None


def test_api_stage_decorator_builds_a_stage() -> None:
    @stage(
        stage_id="process",
        name="Process Data",
        dependencies=["load"],
        timeout_seconds=60.0,
        critical=True,
    )
    async def process_data(ctx: PipelineContext, input_data: Any) -> Any:
        """Process the loaded data."""
        return {"processed": True}

    assert isinstance(process_data, Stage)
    assert process_data.stage_id == "process"
    assert process_data.name == "Process Data"
    assert list(process_data.dependencies) == ["load"]
    assert process_data.timeout_seconds == 60.0
    assert process_data.critical is True


def test_api_with_retry_signature_defaults_match_retry_config() -> None:
    params = _params(with_retry)
    assert params["max_retries"].default == 3
    assert params["strategy"].default is RetryStrategy.EXPONENTIAL_BACKOFF
    assert params["initial_delay"].default == 1.0


def test_api_run_pipeline_signature() -> None:
    params = _params(run_pipeline)
    assert list(params)[:3] == ["stages", "initial_input", "config"]
    assert params["initial_input"].default is None
    assert params["config"].default is None
    assert inspect.iscoroutinefunction(run_pipeline)


def test_api_create_stage_signature() -> None:
    params = _params(create_stage)
    assert list(params)[:6] == [
        "stage_id",
        "name",
        "handler",
        "dependencies",
        "timeout_seconds",
        "critical",
    ]
    assert params["dependencies"].default is None
    assert params["timeout_seconds"].default is None
    assert params["critical"].default is True
    st = create_stage(
        stage_id="process",
        name="Process Data",
        handler=_handler,
        dependencies=["load"],
        timeout_seconds=60.0,
        critical=True,
    )
    assert isinstance(st, Stage)
    assert list(st.dependencies) == ["load"]


def test_api_retry_config_get_delay_signature() -> None:
    assert list(_params(RetryConfig.get_delay)) == ["self", "attempt"]
    assert RetryConfig().get_delay(attempt=2) == 4.0


def test_api_pipeline_context_signatures() -> None:
    init = _params(PipelineContext.__init__)
    assert list(init)[1:3] == ["pipeline_id", "config"]
    assert _params(PipelineContext.get)["default"].default is None
    assert _params(PipelineContext.cancel)["reason"].default is CancellationReason.USER_REQUESTED
    assert inspect.iscoroutinefunction(PipelineContext.wait_if_paused)


# -- exceptions --------------------------------------------------------------------------

EXCEPTION_CLASSES = [
    StageTimeoutException,
    PipelineTimeoutException,
    PipelineCancelledException,
    StageExecutionException,
    DependencyFailedException,
    PipelineValidationError,
    PipelineAlreadyRunningError,
]


@pytest.mark.parametrize("cls", EXCEPTION_CLASSES)
def test_api_every_exception_is_a_pipeline_exception(cls: type[BaseException]) -> None:
    assert issubclass(cls, PipelineException)
    assert issubclass(PipelineException, Exception)


def test_api_validation_error_is_a_value_error() -> None:
    assert issubclass(PipelineValidationError, PipelineException)
    assert issubclass(PipelineValidationError, ValueError)


def test_api_already_running_error_is_a_runtime_error() -> None:
    assert issubclass(PipelineAlreadyRunningError, PipelineException)
    assert issubclass(PipelineAlreadyRunningError, RuntimeError)


def test_r7_5_stage_timeout_exception_attributes() -> None:
    exc = StageTimeoutException("load", 1.5)
    assert exc.stage_id == "load"
    assert exc.timeout_seconds == 1.5
    assert "load" in str(exc)


def test_r7_5_pipeline_timeout_exception_attributes() -> None:
    exc = PipelineTimeoutException(3600.0)
    assert exc.timeout_seconds == 3600.0


def test_r7_5_pipeline_cancelled_exception_attributes() -> None:
    exc = PipelineCancelledException(CancellationReason.TIMEOUT)
    assert exc.reason is CancellationReason.TIMEOUT
    assert exc.reason.value == "timeout"


def test_r7_5_stage_execution_exception_attributes() -> None:
    cause = ConnectionError("network down")
    exc = StageExecutionException("fetch", "ConnectionError: network down", cause=cause)
    assert exc.stage_id == "fetch"
    assert exc.error == "ConnectionError: network down"
    assert exc.cause is cause
    assert StageExecutionException("fetch", "boom").cause is None


def test_r7_5_dependency_failed_exception_attributes() -> None:
    exc = DependencyFailedException("b", "a")
    assert exc.stage_id == "b"
    assert exc.failed_dependency == "a"


@pytest.mark.parametrize(
    ("exc", "attrs"),
    [
        (StageTimeoutException("s", 2.0), {"stage_id": "s", "timeout_seconds": 2.0}),
        (PipelineTimeoutException(9.0), {"timeout_seconds": 9.0}),
        (
            PipelineCancelledException(CancellationReason.EXTERNAL),
            {"reason": CancellationReason.EXTERNAL},
        ),
        (
            StageExecutionException("s", "ValueError: x", cause=ValueError("x")),
            {"stage_id": "s", "error": "ValueError: x"},
        ),
        (DependencyFailedException("b", "a"), {"stage_id": "b", "failed_dependency": "a"}),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else "",
)
def test_r7_5_exceptions_survive_pickle(exc: PipelineException, attrs: dict[str, Any]) -> None:
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    for name, value in attrs.items():
        assert getattr(copy, name) == value, name
