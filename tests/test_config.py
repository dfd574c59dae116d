"""R8.1 validation of the config classes and ``Stage``, the "None means no
limit" rule of the preamble, R4.2 ``get_delay``, and the builder's ``with_*``
methods (they change only the fields they are given, and reject bad values
at the call)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxima.data.pipeline import (
    PipelineBuilder,
    PipelineConfig,
    PipelineContext,
    RetryConfig,
    RetryStrategy,
    Stage,
    TimeoutConfig,
)

NAN = float("nan")
INF = float("inf")


async def _handler(ctx: PipelineContext, data: Any) -> Any:
    return data


def _assert_names(exc: BaseException, field: str, value: Any) -> None:
    message = str(exc)
    assert field in message, f"{field!r} not named in {message!r}"
    assert repr(value) in message, f"{value!r} not named in {message!r}"


def _check_rejected(cls: Any, field: str, value: Any, **base: Any) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        cls(**{**base, field: value})
    _assert_names(info.value, field, value)


# -- R8.1 RetryConfig --------------------------------------------------------------------

RETRY_BAD = [
    ("max_retries", -1),
    ("max_retries", -100),
    ("max_retries", 1.5),
    ("max_retries", True),
    ("max_retries", "3"),
    ("initial_delay_seconds", -0.5),
    ("initial_delay_seconds", NAN),
    ("initial_delay_seconds", INF),
    ("initial_delay_seconds", -INF),
    ("initial_delay_seconds", True),
    ("initial_delay_seconds", "1"),
    ("max_delay_seconds", -1.0),
    ("max_delay_seconds", NAN),
    ("max_delay_seconds", INF),
    ("max_delay_seconds", False),
    ("backoff_factor", 0.5),
    ("backoff_factor", 0.0),
    ("backoff_factor", -2.0),
    ("backoff_factor", NAN),
    ("backoff_factor", INF),
    ("backoff_factor", True),
    ("retry_on_timeout", 1),
    ("retry_on_timeout", "yes"),
    ("retry_on_timeout", None),
    ("strategy", "bogus"),
]


@pytest.mark.parametrize(("field", "value"), RETRY_BAD, ids=[f"{f}={v!r}" for f, v in RETRY_BAD])
def test_r8_1_retry_config_rejects_bad_field(field: str, value: Any) -> None:
    _check_rejected(RetryConfig, field, value)


def test_r8_1_retry_config_rejects_non_exception_types() -> None:
    with pytest.raises(TypeError) as info:
        RetryConfig(retry_on_exceptions=(ValueError, "KeyError"))
    assert "retry_on_exceptions" in str(info.value)
    assert "'KeyError'" in str(info.value)
    with pytest.raises(TypeError) as info:
        RetryConfig(retry_on_exceptions=(int,))
    assert "retry_on_exceptions" in str(info.value)


def test_r8_1_retry_config_accepts_edge_values() -> None:
    cfg = RetryConfig(
        max_retries=0,
        initial_delay_seconds=0,
        max_delay_seconds=0.0,
        backoff_factor=1,
        retry_on_exceptions=[KeyError, OSError],
        retry_on_timeout=False,
    )
    assert cfg.max_retries == 0
    assert cfg.initial_delay_seconds == 0
    assert cfg.backoff_factor == 1
    assert tuple(cfg.retry_on_exceptions or ()) == (KeyError, OSError)
    assert cfg.retry_on_timeout is False


# -- R8.1 TimeoutConfig ------------------------------------------------------------------

TIMEOUT_FIELDS = [
    "stage_timeout_seconds",
    "pipeline_timeout_seconds",
    "cleanup_timeout_seconds",
    "grace_period_seconds",
]
#: The grace period and the cleanup timeout may be 0 (the spec's defaults paragraph).
ZERO_ALLOWED = ("grace_period_seconds", "cleanup_timeout_seconds")
TIMEOUT_BAD = [
    (field, value)
    for field in TIMEOUT_FIELDS
    for value in (-1.0, -0.001, NAN, INF, -INF, True, "5")
] + [(field, 0) for field in TIMEOUT_FIELDS if field not in ZERO_ALLOWED]


@pytest.mark.parametrize(
    ("field", "value"), TIMEOUT_BAD, ids=[f"{f}={v!r}" for f, v in TIMEOUT_BAD]
)
def test_r8_1_timeout_config_rejects_bad_field(field: str, value: Any) -> None:
    _check_rejected(TimeoutConfig, field, value)


@pytest.mark.parametrize("field", TIMEOUT_FIELDS)
def test_preamble_timeout_none_means_no_limit(field: str) -> None:
    cfg = TimeoutConfig(**{field: None})
    assert getattr(cfg, field) is None


def test_preamble_all_timeouts_none_at_once() -> None:
    cfg = TimeoutConfig(
        stage_timeout_seconds=None,
        pipeline_timeout_seconds=None,
        cleanup_timeout_seconds=None,
        grace_period_seconds=None,
    )
    assert cfg == TimeoutConfig(None, None, None, None)


def test_preamble_grace_period_zero_is_allowed() -> None:
    assert TimeoutConfig(grace_period_seconds=0).grace_period_seconds == 0
    assert TimeoutConfig(grace_period_seconds=0.0).grace_period_seconds == 0.0


@pytest.mark.parametrize("field", TIMEOUT_FIELDS)
def test_preamble_timeout_small_positive_and_int_accepted(field: str) -> None:
    assert getattr(TimeoutConfig(**{field: 0.001}), field) == 0.001
    assert getattr(TimeoutConfig(**{field: 7}), field) == 7


# -- R8.1 PipelineConfig -----------------------------------------------------------------

PIPELINE_BAD = [
    ("max_parallel", 0),
    ("max_parallel", -1),
    ("max_parallel", 1.5),
    ("max_parallel", True),
    ("max_parallel", "4"),
    ("continue_on_error", 1),
    ("continue_on_error", "no"),
    ("parallel_stages", 0),
    ("parallel_stages", None),
    ("collect_metrics", "true"),
    ("cleanup_on_cancel", 1),
    ("retry", 3),
    ("timeout", 30.0),
]


@pytest.mark.parametrize(
    ("field", "value"), PIPELINE_BAD, ids=[f"{f}={v!r}" for f, v in PIPELINE_BAD]
)
def test_r8_1_pipeline_config_rejects_bad_field(field: str, value: Any) -> None:
    _check_rejected(PipelineConfig, field, value)


def test_r8_1_pipeline_config_max_parallel_one_is_allowed() -> None:
    assert PipelineConfig(max_parallel=1).max_parallel == 1


# -- R8.1 Stage --------------------------------------------------------------------------

STAGE_BASE: dict[str, Any] = {"stage_id": "s", "name": "S", "handler": _handler}
STAGE_BAD = [
    ("stage_id", ""),
    ("stage_id", 5),
    ("stage_id", None),
    ("dependencies", "load"),
    ("dependencies", 5),
    ("handler", None),
    ("handler", "not callable"),
    ("handler", 42),
    ("timeout_seconds", 0),
    ("timeout_seconds", -1.0),
    ("timeout_seconds", NAN),
    ("timeout_seconds", INF),
    ("timeout_seconds", True),
    ("critical", 1),
    ("critical", "yes"),
    ("cleanup_handler", "cleanup"),
    ("retry_config", {"max_retries": 2}),
]


@pytest.mark.parametrize(("field", "value"), STAGE_BAD, ids=[f"{f}={v!r}" for f, v in STAGE_BAD])
def test_r8_1_stage_rejects_bad_field(field: str, value: Any) -> None:
    _check_rejected(Stage, field, value, **STAGE_BASE)


def test_r8_1_stage_dependencies_bare_string_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError) as info:
        Stage(stage_id="b", name="B", handler=_handler, dependencies="a")
    _assert_names(info.value, "dependencies", "a")


def test_r8_1_stage_accepts_sync_and_lambda_handlers_and_no_timeout() -> None:
    st = Stage(stage_id="s", name="S", handler=lambda ctx, x: x, timeout_seconds=None)
    assert st.timeout_seconds is None
    assert Stage(stage_id="t", name="T", handler=print, dependencies=("s",)).dependencies


# -- R4.2 get_delay ----------------------------------------------------------------------

DELAY_TABLE = [
    # strategy, initial, factor, cap, [get_delay(0), get_delay(1), ...]
    (RetryStrategy.CONSTANT, 2.0, 2.0, 60.0, [2.0, 2.0, 2.0, 2.0]),
    (RetryStrategy.LINEAR_BACKOFF, 2.0, 2.0, 60.0, [2.0, 4.0, 6.0, 8.0]),
    (RetryStrategy.EXPONENTIAL_BACKOFF, 1.0, 2.0, 60.0, [1.0, 2.0, 4.0, 8.0, 16.0]),
    (RetryStrategy.EXPONENTIAL_BACKOFF, 0.5, 3.0, 60.0, [0.5, 1.5, 4.5, 13.5]),
    (RetryStrategy.IMMEDIATE, 5.0, 2.0, 60.0, [0.0, 0.0, 0.0]),
    (RetryStrategy.NONE, 5.0, 2.0, 60.0, [0.0, 0.0, 0.0]),
    # the cap applies to every strategy
    (RetryStrategy.CONSTANT, 10.0, 2.0, 3.0, [3.0, 3.0, 3.0]),
    (RetryStrategy.LINEAR_BACKOFF, 2.0, 2.0, 5.0, [2.0, 4.0, 5.0, 5.0]),
    (RetryStrategy.EXPONENTIAL_BACKOFF, 1.0, 2.0, 5.0, [1.0, 2.0, 4.0, 5.0, 5.0]),
    (RetryStrategy.EXPONENTIAL_BACKOFF, 1.0, 1.0, 60.0, [1.0, 1.0, 1.0]),
]


@pytest.mark.parametrize(
    ("strategy", "initial", "factor", "cap", "expected"),
    DELAY_TABLE,
    ids=[f"{row[0].name}-cap{row[3]:g}-init{row[1]:g}-f{row[2]:g}" for row in DELAY_TABLE],
)
def test_r4_2_get_delay_table(
    strategy: RetryStrategy, initial: float, factor: float, cap: float, expected: list[float]
) -> None:
    cfg = RetryConfig(
        strategy=strategy,
        initial_delay_seconds=initial,
        backoff_factor=factor,
        max_delay_seconds=cap,
    )
    assert [cfg.get_delay(n) for n in range(len(expected))] == pytest.approx(expected)


def test_r4_2_default_config_delays_count_from_zero() -> None:
    cfg = RetryConfig()
    assert cfg.get_delay(0) == 1.0
    assert cfg.get_delay(1) == 2.0
    assert cfg.get_delay(2) == 4.0
    assert cfg.get_delay(10) == 60.0
    assert cfg.get_delay(10_000) == 60.0


@given(
    strategy=st.sampled_from(list(RetryStrategy)),
    initial=st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
    cap=st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
    factor=st.floats(min_value=1, max_value=100, allow_nan=False, allow_infinity=False),
    attempt=st.integers(min_value=0, max_value=5000),
)
def test_r4_2_get_delay_is_capped_finite_and_non_negative(
    strategy: RetryStrategy, initial: float, cap: float, factor: float, attempt: int
) -> None:
    cfg = RetryConfig(
        strategy=strategy,
        initial_delay_seconds=initial,
        max_delay_seconds=cap,
        backoff_factor=factor,
    )
    delay = cfg.get_delay(attempt)
    assert math.isfinite(delay)
    assert 0 <= delay <= cap


@given(
    strategy=st.sampled_from(list(RetryStrategy)),
    initial=st.floats(min_value=0, max_value=1e3, allow_nan=False, allow_infinity=False),
    cap=st.floats(min_value=0, max_value=1e4, allow_nan=False, allow_infinity=False),
    factor=st.floats(min_value=1, max_value=10, allow_nan=False, allow_infinity=False),
    attempt=st.integers(min_value=0, max_value=2000),
)
def test_r4_2_get_delay_is_monotonic_in_attempt(
    strategy: RetryStrategy, initial: float, cap: float, factor: float, attempt: int
) -> None:
    cfg = RetryConfig(
        strategy=strategy,
        initial_delay_seconds=initial,
        max_delay_seconds=cap,
        backoff_factor=factor,
    )
    assert cfg.get_delay(attempt) <= cfg.get_delay(attempt + 1)


@given(
    initial=st.floats(min_value=0, max_value=100, allow_nan=False, allow_infinity=False),
    factor=st.floats(min_value=1, max_value=4, allow_nan=False, allow_infinity=False),
    attempt=st.integers(min_value=0, max_value=20),
)
def test_r4_2_get_delay_formula_with_cap(initial: float, factor: float, attempt: int) -> None:
    cap = 1e9
    kw: dict[str, Any] = {
        "initial_delay_seconds": initial,
        "backoff_factor": factor,
        "max_delay_seconds": cap,
    }
    exponential = RetryConfig(strategy=RetryStrategy.EXPONENTIAL_BACKOFF, **kw)
    linear = RetryConfig(strategy=RetryStrategy.LINEAR_BACKOFF, **kw)
    constant = RetryConfig(strategy=RetryStrategy.CONSTANT, **kw)
    assert exponential.get_delay(attempt) == pytest.approx(min(initial * factor**attempt, cap))
    assert linear.get_delay(attempt) == pytest.approx(min(initial * (attempt + 1), cap))
    assert constant.get_delay(attempt) == pytest.approx(initial)


# -- builder: change only the given fields, validate at the call -------------------------


def test_r8_builder_with_retry_changes_only_given_fields() -> None:
    builder = PipelineBuilder("p").with_retry(
        max_retries=7,
        strategy=RetryStrategy.LINEAR_BACKOFF,
        initial_delay=0.25,
        max_delay=9.0,
    )
    builder.with_retry(max_retries=1)
    retry = builder.build().config.retry
    assert retry.max_retries == 1
    assert retry.strategy is RetryStrategy.LINEAR_BACKOFF
    assert retry.initial_delay_seconds == 0.25
    assert retry.max_delay_seconds == 9.0
    assert retry.backoff_factor == RetryConfig().backoff_factor
    assert retry.retry_on_timeout is True


def test_r8_builder_with_retry_alone_keeps_defaults_for_the_rest() -> None:
    retry = PipelineBuilder("p").with_retry(max_retries=5).build().config.retry
    assert retry == RetryConfig(max_retries=5)


def test_r8_builder_with_timeout_changes_only_given_fields() -> None:
    builder = PipelineBuilder("p").with_timeout(stage_timeout=10.0, pipeline_timeout=100.0)
    builder.with_timeout(pipeline_timeout=50.0)
    timeout = builder.build().config.timeout
    assert timeout.stage_timeout_seconds == 10.0
    assert timeout.pipeline_timeout_seconds == 50.0
    assert timeout.cleanup_timeout_seconds == TimeoutConfig().cleanup_timeout_seconds
    assert timeout.grace_period_seconds == TimeoutConfig().grace_period_seconds


def test_r8_builder_with_timeout_none_means_no_limit() -> None:
    timeout = (
        PipelineBuilder("p")
        .with_timeout(stage_timeout=None, pipeline_timeout=None)
        .build()
        .config.timeout
    )
    assert timeout.stage_timeout_seconds is None
    assert timeout.pipeline_timeout_seconds is None
    assert timeout.cleanup_timeout_seconds == TimeoutConfig().cleanup_timeout_seconds


def test_r8_builder_with_parallel_changes_only_given_fields() -> None:
    # with_parallel(max_parallel=...) was not given `enabled`: serial mode stays.
    config = PipelineBuilder("p").with_parallel(enabled=False).with_parallel(max_parallel=2).config
    assert config.max_parallel == 2
    assert config.parallel_stages is False


def test_r8_builder_with_parallel_enabled_keeps_max_parallel() -> None:
    config = (
        PipelineBuilder("p")
        .with_parallel(enabled=True, max_parallel=3)
        .with_parallel(enabled=False)
        .build()
        .config
    )
    assert config.parallel_stages is False
    assert config.max_parallel == 3


def test_r8_builder_flags_do_not_touch_other_fields() -> None:
    builder = (
        PipelineBuilder("p")
        .with_retry(max_retries=9)
        .with_timeout(stage_timeout=1.0)
        .with_parallel(enabled=True, max_parallel=2)
    )
    before = builder.config
    builder.continue_on_error(enabled=True)
    after = builder.config
    assert after.continue_on_error is True
    assert after.retry == before.retry
    assert after.timeout == before.timeout
    assert after.max_parallel == before.max_parallel
    assert after.parallel_stages == before.parallel_stages
    assert after.name == "p"
    builder.continue_on_error(enabled=False)
    assert builder.config.continue_on_error is False


BUILDER_BAD: list[tuple[str, dict[str, Any], str, Any]] = [
    ("with_retry", {"max_retries": -1}, "max_retries", -1),
    ("with_retry", {"initial_delay": NAN}, "initial_delay", NAN),
    ("with_retry", {"max_delay": -5.0}, "max_delay", -5.0),
    ("with_retry", {"backoff_factor": 0.5}, "backoff_factor", 0.5),
    ("with_timeout", {"stage_timeout": -1.0}, "stage_timeout", -1.0),
    ("with_timeout", {"pipeline_timeout": INF}, "pipeline_timeout", INF),
    ("with_timeout", {"stage_timeout": 0}, "stage_timeout", 0),
    ("with_parallel", {"max_parallel": 0}, "max_parallel", 0),
    ("with_parallel", {"enabled": "yes"}, "", "yes"),
    ("continue_on_error", {"enabled": 1}, "", 1),
]


@pytest.mark.parametrize(
    ("method", "kwargs", "field", "value"),
    BUILDER_BAD,
    ids=[f"{m}-{next(iter(k))}={v!r}" for m, k, _, v in BUILDER_BAD],
)
def test_r8_1_builder_rejects_bad_value_at_the_call(
    method: str, kwargs: dict[str, Any], field: str, value: Any
) -> None:
    builder = PipelineBuilder("p")
    before = builder.config
    with pytest.raises((ValueError, TypeError)) as info:
        getattr(builder, method)(**kwargs)
    message = str(info.value)
    assert field in message
    assert repr(value) in message
    assert builder.config == before  # nothing half-done


def test_r8_1_builder_add_stage_rejects_bad_stage_at_the_call() -> None:
    builder = PipelineBuilder("p")
    with pytest.raises(TypeError, match="dependencies"):
        builder.add_stage("b", "B", _handler, dependencies="a")
    with pytest.raises(TypeError, match="handler"):
        builder.add_stage("c", "C", "not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stage_id"):
        builder.add_stage("", "Empty", _handler)
    assert builder.build().stages == ()
