"""R4: retries and timeouts, for stages and for ``@with_retry``."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from helpers import executing, finished, flaky, make_pipeline, st, stop_when

from proxima.data.pipeline import (
    CancellationReason,
    PipelineStatus,
    RetryConfig,
    RetryStrategy,
    StageStatus,
    StageTimeoutException,
    TimeoutConfig,
    with_retry,
)

pytestmark = pytest.mark.anyio

IMMEDIATE = RetryStrategy.IMMEDIATE


class Boom(BaseException):
    """A BaseException that is not an Exception (like KeyboardInterrupt)."""


def failing_handler(calls: list[BaseException], *excs: BaseException) -> Any:
    """A handler raising ``excs`` in turn (the last one forever); each raised
    object is appended to ``calls``."""

    async def handler(ctx: Any, _: Any) -> Any:
        exc = excs[min(len(calls), len(excs) - 1)]
        calls.append(exc)
        raise exc

    return handler


# -- R4.1 effective retry config ------------------------------------------------------------------


async def test_r4_1_at_most_one_plus_max_retries_attempts() -> None:
    calls: list[BaseException] = []
    handler = failing_handler(calls, ValueError("nope"))
    pipeline = make_pipeline(
        st("s", handler),
        retry=RetryConfig(max_retries=2, strategy=IMMEDIATE),
    )
    result = await pipeline.execute()
    assert len(calls) == 3
    assert result.stage_results["s"].attempt_count == 3
    assert result.stage_results["s"].status is StageStatus.FAILED


async def test_r4_1_success_on_a_later_attempt_completes_the_stage() -> None:
    calls: list[int] = []
    handler = flaky(calls, failures=2, exc=ConnectionError, message="attempt {n}", value=42)
    pipeline = make_pipeline(
        st("s", handler),
        retry=RetryConfig(max_retries=3, strategy=IMMEDIATE),
    )
    result = await pipeline.execute()
    assert calls == [1, 2, 3]
    stage = result.stage_results["s"]
    assert stage.status is StageStatus.COMPLETED
    assert stage.result == 42
    assert stage.attempt_count == 3
    assert result.status is PipelineStatus.COMPLETED


async def test_r4_1_stage_retry_config_overrides_pipeline_retry() -> None:
    more: list[BaseException] = []
    fewer: list[BaseException] = []
    pipeline = make_pipeline(
        st(
            "more",
            failing_handler(more, ValueError("x")),
            name="More",
            retry_config=RetryConfig(max_retries=3, strategy=IMMEDIATE),
            critical=False,
        ),
        st(
            "fewer",
            failing_handler(fewer, ValueError("y")),
            name="Fewer",
            retry_config=RetryConfig(max_retries=0, strategy=IMMEDIATE),
            critical=False,
        ),
        retry=RetryConfig(max_retries=1, strategy=IMMEDIATE),
    )
    result = await pipeline.execute()
    assert len(more) == 4
    assert len(fewer) == 1
    assert result.stage_results["more"].attempt_count == 4
    assert result.stage_results["fewer"].attempt_count == 1


async def test_r4_1_pipeline_retry_applies_when_stage_has_none() -> None:
    calls: list[BaseException] = []
    pipeline = make_pipeline(
        st("s", failing_handler(calls, ValueError("x"))),
        retry=RetryConfig(max_retries=1, strategy=IMMEDIATE),
    )
    result = await pipeline.execute()
    assert len(calls) == 2
    assert result.stage_results["s"].attempt_count == 2


@pytest.mark.parametrize("where", ["pipeline", "stage"])
async def test_r4_1_strategy_none_means_one_attempt_whatever_max_retries(where: str) -> None:
    calls: list[BaseException] = []
    none = RetryConfig(max_retries=5, strategy=RetryStrategy.NONE, initial_delay_seconds=0)
    pipeline = make_pipeline(
        st(
            "s",
            failing_handler(calls, ValueError("x")),
            retry_config=none if where == "stage" else None,
        ),
        retry=none if where == "pipeline" else RetryConfig(max_retries=5, strategy=IMMEDIATE),
    )
    result = await pipeline.execute()
    assert len(calls) == 1
    assert result.stage_results["s"].attempt_count == 1
    assert result.stage_results["s"].status is StageStatus.FAILED


# -- R4.3 which exceptions are retried ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "expected_attempts"),
    [
        (OSError("listed type"), 3),
        (ConnectionError("subclass of a listed type"), 3),
        (ValueError("not listed"), 1),
    ],
)
async def test_r4_3_retry_on_exceptions_filters_by_type_including_subclasses(
    raised: Exception, expected_attempts: int
) -> None:
    calls: list[BaseException] = []
    pipeline = make_pipeline(
        st("s", failing_handler(calls, raised)),
        retry=RetryConfig(max_retries=2, strategy=IMMEDIATE, retry_on_exceptions=(OSError,)),
    )
    result = await pipeline.execute()
    assert len(calls) == expected_attempts
    assert result.stage_results["s"].attempt_count == expected_attempts
    assert result.stage_results["s"].exception is raised


async def test_r4_3_retry_on_exceptions_none_retries_any_exception() -> None:
    calls: list[BaseException] = []
    pipeline = make_pipeline(
        st("s", failing_handler(calls, LookupError("x"))),
        retry=RetryConfig(max_retries=2, strategy=IMMEDIATE, retry_on_exceptions=None),
    )
    result = await pipeline.execute()
    assert len(calls) == 3
    assert result.stage_results["s"].attempt_count == 3


async def test_r4_3_base_exceptions_are_never_retried() -> None:
    calls: list[BaseException] = []
    boom = Boom("not an Exception")
    pipeline = make_pipeline(
        st("s", failing_handler(calls, boom)),
        retry=RetryConfig(max_retries=3, strategy=IMMEDIATE, retry_on_exceptions=(BaseException,)),
    )
    with pytest.raises(Boom) as excinfo:
        await pipeline.execute()
    assert excinfo.value is boom
    assert len(calls) == 1
    assert pipeline.result is not None
    assert pipeline.result.stage_results["s"].attempt_count == 1
    assert pipeline.result.stage_results["s"].status is StageStatus.FAILED


# -- R4.4 stage timeouts --------------------------------------------------------------------------


async def test_r4_4_stage_timeout_is_a_hard_deadline_that_cancels_the_handler() -> None:
    events: list[str] = []

    async def hangs(ctx: Any, _: Any) -> None:
        events.append("started")
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            events.append("cancelled")
            raise

    pipeline = make_pipeline(st("s", hangs, timeout_seconds=0.1))
    started = time.perf_counter()
    with anyio.fail_after(5):
        result = await pipeline.execute()
    elapsed = time.perf_counter() - started
    assert events == ["started", "cancelled"]
    assert result.stage_results["s"].status is StageStatus.TIMED_OUT
    assert elapsed >= 0.09


async def test_r4_4_stage_timeout_applies_to_each_attempt_separately() -> None:
    calls: list[int] = []

    async def slow_then_quick(ctx: Any, _: Any) -> str:
        calls.append(len(calls) + 1)
        if len(calls) == 1:
            await anyio.sleep_forever()
        await anyio.sleep(0.05)
        return "second attempt"

    pipeline = make_pipeline(
        st("s", slow_then_quick, timeout_seconds=0.2),
        retry=RetryConfig(max_retries=1, strategy=IMMEDIATE),
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    stage = result.stage_results["s"]
    assert stage.status is StageStatus.COMPLETED
    assert stage.result == "second attempt"
    assert stage.attempt_count == 2


@pytest.mark.parametrize(
    ("stage_timeout", "config_timeout", "effective"),
    [
        (0.1, 30.0, 0.1),  # the stage's own timeout wins
        (None, 0.1, 0.1),  # else the pipeline default
    ],
)
async def test_r4_4_effective_stage_timeout_resolution(
    stage_timeout: float | None, config_timeout: float, effective: float
) -> None:
    pipeline = make_pipeline(
        st("s", lambda ctx, _: anyio.sleep_forever(), timeout_seconds=stage_timeout),
        timeout=TimeoutConfig(stage_timeout_seconds=config_timeout),
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    stage = result.stage_results["s"]
    assert stage.status is StageStatus.TIMED_OUT
    assert isinstance(stage.exception, StageTimeoutException)
    assert stage.exception.timeout_seconds == effective


async def test_r4_4_stage_timeout_overrides_even_a_shorter_pipeline_default() -> None:
    async def takes_a_while(ctx: Any, _: Any) -> str:
        await anyio.sleep(0.15)
        return "done"

    pipeline = make_pipeline(
        st("s", takes_a_while, timeout_seconds=30.0),
        timeout=TimeoutConfig(stage_timeout_seconds=0.05),
    )
    result = await pipeline.execute()
    assert result.stage_results["s"].status is StageStatus.COMPLETED
    assert result.stage_results["s"].result == "done"


async def test_r4_4_none_stage_timeout_means_no_limit() -> None:
    async def takes_a_while(ctx: Any, _: Any) -> str:
        await anyio.sleep(0.2)
        return "done"

    pipeline = make_pipeline(
        st("s", takes_a_while, timeout_seconds=None),
        timeout=TimeoutConfig(stage_timeout_seconds=None),
    )
    result = await pipeline.execute()
    assert result.stage_results["s"].status is StageStatus.COMPLETED
    assert result.stage_results["s"].result == "done"


@pytest.mark.parametrize(
    ("retry_on_timeout", "retry_on_exceptions", "expected_attempts"),
    [
        (False, None, 1),
        (False, (TimeoutError,), 1),  # retry_on_exceptions does not apply to timeouts
        (True, (KeyError,), 3),  # ... neither to stop them being retried
        (True, None, 3),
    ],
)
async def test_r4_4_timeouts_are_retried_only_with_retry_on_timeout(
    retry_on_timeout: bool,
    retry_on_exceptions: tuple[type[BaseException], ...] | None,
    expected_attempts: int,
) -> None:
    calls: list[int] = []

    async def hangs(ctx: Any, _: Any) -> None:
        calls.append(1)
        await anyio.sleep_forever()

    pipeline = make_pipeline(
        st("s", hangs, timeout_seconds=0.05),
        retry=RetryConfig(
            max_retries=2,
            strategy=IMMEDIATE,
            retry_on_timeout=retry_on_timeout,
            retry_on_exceptions=retry_on_exceptions,
        ),
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    assert len(calls) == expected_attempts
    assert result.stage_results["s"].attempt_count == expected_attempts
    assert result.stage_results["s"].status is StageStatus.TIMED_OUT


# -- R4.5 how a failed stage ends -----------------------------------------------------------------


async def test_r4_5_failed_stage_keeps_the_original_exception_unwrapped() -> None:
    original = KeyError("missing-key")
    pipeline = make_pipeline(
        st("s", failing_handler([], original)),
    )
    result = await pipeline.execute()
    stage = result.stage_results["s"]
    assert stage.status is StageStatus.FAILED
    assert stage.exception is original
    assert isinstance(stage.error, str)
    assert "KeyError" in stage.error
    assert "missing-key" in stage.error
    assert stage.attempt_count == 1


async def test_r4_5_failed_stage_keeps_the_last_attempts_exception() -> None:
    calls: list[BaseException] = []
    first, second = ValueError("first"), RuntimeError("second")
    pipeline = make_pipeline(
        st("s", failing_handler(calls, first, second)),
        retry=RetryConfig(max_retries=1, strategy=IMMEDIATE),
    )
    result = await pipeline.execute()
    stage = result.stage_results["s"]
    assert stage.exception is second
    assert stage.error is not None
    assert "RuntimeError" in stage.error
    assert stage.attempt_count == 2


async def test_r4_5_handler_raising_timeout_error_itself_is_failed_not_timed_out() -> None:
    own = TimeoutError("the handler's own timeout")
    pipeline = make_pipeline(
        st("s", failing_handler([], own), timeout_seconds=30.0),
        retry=RetryConfig(max_retries=1, strategy=IMMEDIATE, retry_on_timeout=False),
    )
    result = await pipeline.execute()
    stage = result.stage_results["s"]
    assert stage.status is StageStatus.FAILED
    assert stage.exception is own
    assert stage.attempt_count == 2


async def test_r4_5_timed_out_stage_has_stage_timeout_exception() -> None:
    pipeline = make_pipeline(
        st("slow", lambda ctx, _: anyio.sleep_forever(), name="Slow", timeout_seconds=0.05),
        retry=RetryConfig(max_retries=1, strategy=IMMEDIATE),
    )
    with anyio.fail_after(5):
        result = await pipeline.execute()
    stage = result.stage_results["slow"]
    assert stage.status is StageStatus.TIMED_OUT
    assert isinstance(stage.exception, StageTimeoutException)
    assert stage.exception.stage_id == "slow"
    assert stage.exception.timeout_seconds == 0.05
    assert stage.error is not None
    assert stage.attempt_count == 2


# -- R4.6 retries and stops -----------------------------------------------------------------------


@pytest.mark.parametrize("trigger", ["cancel", "critical_failure"])
async def test_r4_6_stop_during_retry_delay_ends_the_stage_at_once_as_cancelled(
    trigger: str,
) -> None:
    failed = anyio.Event()
    calls: list[int] = []

    async def fails(ctx: Any, _: Any) -> None:
        calls.append(1)
        failed.set()
        raise ValueError("retry me later")

    async def fails_after_the_other(ctx: Any, _: Any) -> None:
        await failed.wait()
        raise RuntimeError("critical failure")

    stages = [
        st(
            "s",
            fails,
            retry_config=RetryConfig(
                max_retries=3, strategy=RetryStrategy.CONSTANT, initial_delay_seconds=10.0
            ),
        )
    ]
    if trigger == "critical_failure":
        stages.append(st("k", fails_after_the_other))
    pipeline = make_pipeline(*stages, timeout=TimeoutConfig(grace_period_seconds=1.0))

    stopped_at: list[float] = []
    async with executing(pipeline):
        await failed.wait()
        stopped_at.append(time.time())
        if trigger == "cancel":
            assert pipeline.stage_statuses()["s"] is StageStatus.RETRYING
            pipeline.cancel()
    result = finished(pipeline)
    stage = result.stage_results["s"]
    assert stage.status is StageStatus.CANCELLED
    assert stage.attempt_count == 1
    assert len(calls) == 1
    assert stage.end_time is not None
    # At once: neither after the 10 s delay nor after the 1 s grace period.
    assert stage.end_time - stopped_at[0] < 0.5


async def test_r4_6_attempt_failing_after_a_stop_began_is_not_retried() -> None:
    started, go = anyio.Event(), anyio.Event()
    calls: list[int] = []

    async def fails_when_told(ctx: Any, _: Any) -> None:
        calls.append(1)
        started.set()
        await go.wait()
        raise ValueError("failed during the grace period")

    pipeline = make_pipeline(
        st("s", fails_when_told),
        retry=RetryConfig(max_retries=3, strategy=IMMEDIATE),
        timeout=TimeoutConfig(grace_period_seconds=2.0),
    )
    result, _ = await stop_when(pipeline, started, then=go.set)
    assert len(calls) == 1
    stage = result.stage_results["s"]
    assert stage.status is StageStatus.FAILED
    assert isinstance(stage.exception, ValueError)
    assert stage.attempt_count == 1
    assert result.status is PipelineStatus.CANCELLED
    assert result.cancellation_reason is CancellationReason.USER_REQUESTED


async def test_r4_6_attempt_timing_out_after_a_stop_began_is_not_retried() -> None:
    started = anyio.Event()
    calls: list[int] = []

    async def hangs(ctx: Any, _: Any) -> None:
        calls.append(1)
        started.set()
        await anyio.sleep_forever()

    pipeline = make_pipeline(
        st("s", hangs, timeout_seconds=0.1),
        retry=RetryConfig(max_retries=3, strategy=IMMEDIATE, retry_on_timeout=True),
        timeout=TimeoutConfig(grace_period_seconds=3.0),
    )
    result, _ = await stop_when(pipeline, started)
    assert len(calls) == 1
    assert result.stage_results["s"].status is StageStatus.TIMED_OUT
    assert result.stage_results["s"].attempt_count == 1


# -- R4.7 @with_retry -----------------------------------------------------------------------------


async def test_r4_7_with_retry_caps_calls_and_reraises_the_last_exception() -> None:
    raised: list[BaseException] = []

    @with_retry(max_retries=2, strategy=IMMEDIATE)
    async def always_fails() -> None:
        exc = ValueError(f"call {len(raised) + 1}")
        raised.append(exc)
        raise exc

    with pytest.raises(ValueError, match="call 3") as excinfo:
        await always_fails()
    assert len(raised) == 3
    assert excinfo.value is raised[-1]


async def test_r4_7_with_retry_returns_the_first_success_and_passes_arguments() -> None:
    calls: list[tuple[Any, ...]] = []

    @with_retry(max_retries=3, strategy=IMMEDIATE)
    async def flaky(a: int, *, b: int) -> int:
        calls.append((a, b))
        if len(calls) < 3:
            raise ConnectionError("flaky")
        return a + b

    assert await flaky(1, b=2) == 3
    assert calls == [(1, 2)] * 3
    assert flaky.__name__ == "flaky"


async def test_r4_7_with_retry_strategy_none_calls_once() -> None:
    raised: list[BaseException] = []

    @with_retry(max_retries=5, strategy=RetryStrategy.NONE)
    async def fails() -> None:
        exc = ValueError("once")
        raised.append(exc)
        raise exc

    with pytest.raises(ValueError, match="once") as excinfo:
        await fails()
    assert len(raised) == 1
    assert excinfo.value is raised[0]


@pytest.mark.parametrize(
    ("raised_type", "expected_calls"),
    [(OSError, 3), (ConnectionError, 3), (ValueError, 1)],
)
async def test_r4_7_with_retry_filters_exceptions_including_subclasses(
    raised_type: type[Exception], expected_calls: int
) -> None:
    raised: list[BaseException] = []

    @with_retry(max_retries=2, strategy=IMMEDIATE, retry_on_exceptions=(OSError,))
    async def fails() -> None:
        exc = raised_type("x")
        raised.append(exc)
        raise exc

    with pytest.raises(raised_type) as excinfo:
        await fails()
    assert len(raised) == expected_calls
    assert excinfo.value is raised[-1]


async def test_r4_7_with_retry_never_retries_base_exceptions() -> None:
    raised: list[BaseException] = []

    @with_retry(max_retries=3, strategy=IMMEDIATE, retry_on_exceptions=(BaseException,))
    async def fails() -> None:
        exc = Boom()
        raised.append(exc)
        raise exc

    with pytest.raises(Boom) as excinfo:
        await fails()
    assert len(raised) == 1
    assert excinfo.value is raised[0]


async def test_r4_7_with_retry_waits_the_strategys_delays() -> None:
    calls: list[float] = []

    @with_retry(max_retries=2, strategy=RetryStrategy.CONSTANT, initial_delay=0.05)
    async def fails() -> None:
        calls.append(time.perf_counter())
        raise ValueError("x")

    with pytest.raises(ValueError, match="x"):
        await fails()
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.04
    assert calls[2] - calls[1] >= 0.04


async def test_r4_7_with_retry_delay_is_cancellable() -> None:
    failed = anyio.Event()
    calls: list[int] = []

    @with_retry(max_retries=3, strategy=RetryStrategy.CONSTANT, initial_delay=10.0)
    async def fails() -> None:
        calls.append(1)
        failed.set()
        raise ValueError("x")

    # The 10 s delay must not hold up the cancel: fail_after(5) would fire.
    with anyio.fail_after(5), anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(fails)
            await failed.wait()
            scope.cancel()
    assert scope.cancelled_caught
    assert calls == [1]
