"""The public surface as the spec documents it: every name of api-reference.md
and extensions.md exported with a docstring, the ``__all__`` of each public
module complete and sorted, enum members, config defaults (contract
preamble), call signatures and exception attributes (R7.5)."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import inspect
import pickle
import re
import types
from pathlib import Path
from typing import Any

import pytest

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
PACKAGE = "proxima.data.pipeline"

#: Every name the spec imports from each public module: api-reference.md (and
#: R8.2/R8.6 of semantics.md for the two errors) for the package, extensions.md
#: (R11.1, R13.1) for the executors and the store.
SPEC_NAMES: dict[str, list[str]] = {
    PACKAGE: [
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
        "PipelineValidationError",
        "PipelineAlreadyRunningError",
    ],
    f"{PACKAGE}.executors": ["Executor", "ThreadExecutor", "ProcessExecutor", "DaskExecutor"],
    f"{PACKAGE}.store": ["SQLiteStore", "MemoryStore", "Store"],
}

#: The methods and properties the spec documents on each class (module, class).
SPEC_MEMBERS: dict[tuple[str, str], list[str]] = {
    (PACKAGE, "RetryConfig"): ["get_delay"],
    (PACKAGE, "StageResult"): ["duration_ms", "is_success", "to_dict"],
    (PACKAGE, "PipelineResult"): [
        "duration_ms",
        "successful_stages",
        "failed_stages",
        "is_success",
        "summary",
        "to_dict",
        "raise_for_status",
    ],
    (PACKAGE, "PipelineContext"): [
        "set",
        "get",
        "get_stage_result",
        "cancel",
        "is_cancelled",
        "check_cancelled",
        "pause",
        "resume",
        "wait_if_paused",
        "record_metric",
    ],
    (PACKAGE, "Pipeline"): [
        "add_stage",
        "add_stages",
        "execute",
        "run_sync",
        "cancel",
        "pause",
        "resume",
        "validate",
        "stage_statuses",
        "is_running",
        "result",
        "status",
    ],
    (PACKAGE, "PipelineBuilder"): [
        "with_retry",
        "with_timeout",
        "with_parallel",
        "continue_on_error",
        "with_executor",
        "with_tag_limits",
        "add_stage",
        "build",
    ],
    (f"{PACKAGE}.store", "Store"): ["runs", "load"],
    (f"{PACKAGE}.store", "SQLiteStore"): ["runs", "load"],
    (f"{PACKAGE}.store", "MemoryStore"): ["runs", "load"],
}

#: The public modules whose ``__all__`` must be complete and sorted.
PUBLIC_MODULES = [PACKAGE, f"{PACKAGE}.executors", f"{PACKAGE}.store", f"{PACKAGE}.observe"]


async def _handler(ctx: PipelineContext, data: Any) -> Any:
    return data


def _params(func: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(func).parameters)


def _public_module(name: str) -> types.ModuleType:
    """The module, or a visible skip while the issue that adds it is open
    (``executors`` and ``store`` arrive with R11 and R13)."""
    if importlib.util.find_spec(name) is None:  # pragma: no cover - until the module lands
        pytest.skip(f"{name} does not exist yet")
    return importlib.import_module(name)


def _own_docstring(obj: Any) -> str:
    """The object's own docstring: a class without one does not borrow its
    base's, a property's is its getter's."""
    if isinstance(obj, property):
        obj = obj.fget
    if isinstance(obj, staticmethod | classmethod):
        obj = obj.__func__
    doc = vars(obj).get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return (doc or "").strip()


def _explicit_exports(module: types.ModuleType) -> set[str]:
    """What a package's ``__init__`` makes public: ``from x import y as y``
    re-exports and its own public definitions; a plain ``from x import y``
    (``Any``, a helper) is a private import, as type checkers read it."""
    tree = ast.parse(inspect.getsource(module))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            names.update(a.name for a in node.names if a.asname == a.name)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return {name for name in names if not name.startswith("_")}


# -- names, docstrings and __all__ ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "name"), [(m, n) for m, names in SPEC_NAMES.items() for n in names]
)
def test_api_every_name_in_the_spec_is_exported_with_a_docstring(module: str, name: str) -> None:
    public = _public_module(module)
    assert name in public.__all__, f"{module}.__all__ lacks {name}"
    obj = getattr(public, name)
    namespace: dict[str, Any] = {}
    exec(f"from {module} import {name}", namespace)
    assert namespace[name] is obj
    assert _own_docstring(obj), f"{module}.{name} has no docstring"


@pytest.mark.parametrize(
    ("module", "cls", "member"),
    [(m, c, member) for (m, c), members in SPEC_MEMBERS.items() for member in members],
)
def test_api_every_member_in_the_spec_exists_with_a_docstring(
    module: str, cls: str, member: str
) -> None:
    owner = getattr(_public_module(module), cls)
    assert hasattr(owner, member), f"{cls}.{member} is documented but missing"
    assert _own_docstring(inspect.getattr_static(owner, member)), f"{cls}.{member} has no docstring"


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_api_all_is_complete(module: str) -> None:
    public = _public_module(module)
    listed = set(public.__all__)
    assert len(public.__all__) == len(listed), f"{module}.__all__ has duplicates"
    missing_attrs = sorted(name for name in listed if not hasattr(public, name))
    assert not missing_attrs, f"{module}.__all__ names what the module lacks: {missing_attrs}"
    exported = _explicit_exports(public)
    assert exported <= listed, f"public in {module} but not in __all__: {sorted(exported - listed)}"


def _isort_style(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_api_all_is_sorted(module: str) -> None:
    names = list(_public_module(module).__all__)
    assert names == sorted(names, key=_isort_style), f"{module}.__all__ is not sorted"


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_api_every_exported_class_and_function_has_a_docstring(module: str) -> None:
    public = _public_module(module)
    bare = [
        name
        for name in public.__all__
        if (inspect.isclass(getattr(public, name)) or inspect.isfunction(getattr(public, name)))
        and not _own_docstring(getattr(public, name))
    ]
    assert not bare, f"{module}: no docstring on {bare}"


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


# -- the version ----------------------------------------------------------------------------------


def test_version_is_written_once_in_pyproject() -> None:
    """``proxima.__version__`` is the installed distribution's version, which
    comes from pyproject.toml: no second copy to forget."""
    import proxima

    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    (written,) = re.findall(r'^version = "([^"]+)"$', pyproject, flags=re.MULTILINE)
    assert proxima.__version__ == importlib.metadata.version("proxima") == written
    source = Path(proxima.__file__).read_text(encoding="utf-8")
    assert written not in source, "proxima/__init__.py repeats the version"
