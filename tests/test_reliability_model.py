"""Issue 9, the model side: text that never breaks a run, delays that never
overflow, JSON that survives cycles, handlers checked when the stage is built
(R3.6), retry filters that can apply, summaries that summarise, dependencies
that equal their lists; and the tests that pin what mutants got away with
(delay arguments, should_retry, IMMEDIATE order, cycle ids, builder flags,
the event stream's listener, failure logging)."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import attrs
import pytest
from helpers import (
    blocks_forever,
    executing,
    fails,
    make_pipeline,
    ok,
    recording,
    recording_cleanup,
    st,
    stage_of,
)

from proxima.data.pipeline import (
    CancellationReason,
    EventKind,
    PipelineBuilder,
    PipelineCancelledException,
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
    stage,
    with_retry,
)
from proxima.data.pipeline._model.text import describe, safe_repr

pytestmark = pytest.mark.anyio

LOGGER = "proxima.data.pipeline"


class BadRepr:
    """A value whose ``__repr__`` raises."""

    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


class BadStr(Exception):
    """An exception whose ``__str__`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("str exploded")


class Stop(BaseException):
    """A BaseException that is not an Exception."""


def _stage_result(**fields: Any) -> StageResult:
    fields.setdefault("stage_id", "s")
    fields.setdefault("stage_name", "S")
    fields.setdefault("status", StageStatus.COMPLETED)
    return StageResult(**fields)


def _dumps(data: Any) -> Any:
    """``json.dumps`` then back: what survives is what a log or an API gets."""
    return json.loads(json.dumps(data))


# -- item 6: text that never raises (R7.3, R8.5) ---------------------------------------------------


def test_r8_5_describe_gives_type_and_message() -> None:
    assert describe(ValueError("bad row 7")) == "ValueError: bad row 7"
    assert describe(KeyError()) == "KeyError"


def test_r8_5_describe_survives_an_exception_whose_str_raises() -> None:
    text = describe(BadStr())
    assert text.startswith("BadStr (str() failed")
    assert "RuntimeError: str exploded" in text


def test_r7_3_safe_repr_survives_a_raising_repr() -> None:
    text = safe_repr(BadRepr())
    assert text.startswith("<BadRepr object (repr() failed")
    assert "repr exploded" in text
    assert safe_repr([BadRepr()]).startswith("[<BadRepr object")


def test_r7_3_safe_repr_cuts_long_reprs_with_a_marker() -> None:
    huge = "x" * 50_000_000
    text = safe_repr(huge, limit=100)
    assert len(text) < 150
    assert text.endswith("...[50000000 chars]")
    assert safe_repr(list(range(100_000)), limit=50).endswith("...[100000 items]")
    assert safe_repr(b"y" * 1000, limit=10).endswith("...[1000 bytes]")


def test_r7_3_safe_repr_of_short_values_is_their_repr() -> None:
    for value in ([1, "a"], (1,), (), {"k": [1, 2]}, {3}, set(), "text", None, 2.5):
        assert safe_repr(value) == repr(value)


def test_r7_3_safe_repr_marks_a_cycle_instead_of_recursing() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert safe_repr(loop) == "[<cycle: list>]"


def test_r7_3_to_dict_survives_a_result_whose_repr_raises() -> None:
    data = _dumps(_stage_result(result=BadRepr(), metrics={"odd": BadRepr()}).to_dict())
    assert data["result"].startswith("<BadRepr object (repr() failed")
    assert data["metrics"]["odd"].startswith("<BadRepr object")


def test_r7_3_to_dict_survives_an_exception_whose_str_raises_in_a_stage_result() -> None:
    result = _stage_result(status=StageStatus.FAILED, exception=BadStr(), error=describe(BadStr()))
    data = _dumps(result.to_dict())
    assert data["exception"].startswith("BadStr (str() failed")
    assert data["error"].startswith("BadStr (str() failed")
    pipeline_result = PipelineResult("p", "p", PipelineStatus.FAILED, {"s": result})
    assert "BadStr" in pipeline_result.summary()
    assert "BadStr" in json.dumps(pipeline_result.to_dict())


def test_r7_3_reprs_and_summary_survive_raising_user_text() -> None:
    result = _stage_result(result=BadRepr(), exception=BadStr())
    assert "repr() failed" in repr(result)
    pipeline_result = PipelineResult("p", "p", PipelineStatus.COMPLETED, {"s": result})
    assert "1 completed" in repr(pipeline_result)
    assert "s" in pipeline_result.summary()


def test_r8_5_library_error_messages_survive_odd_values() -> None:
    class BadText:
        def __str__(self) -> str:
            raise RuntimeError("no text")

        __repr__ = __str__

    assert "BadText" in str(PipelineException(BadText()))
    assert "'user'" in str(PipelineCancelledException("user"))  # type: ignore[arg-type]
    assert "BadText" in str(PipelineCancelledException(message=BadText()))  # type: ignore[arg-type]
    assert str(StageTimeoutException("s", "soon")) == "stage 's' timed out after 'soon's"  # type: ignore[arg-type]
    assert "failed" in str(StageExecutionException("s", BadText()))  # type: ignore[arg-type]
    assert "timed out" in str(PipelineTimeoutException(None))  # type: ignore[arg-type]


async def test_r8_5_handler_raising_an_exception_whose_str_raises_fails_the_stage() -> None:
    async def raises_bad_str(ctx: PipelineContext, _: Any) -> None:
        raise BadStr()

    result = await make_pipeline(st("bad", raises_bad_str), st("after", ok, ["bad"])).execute()
    bad = result.stage_results["bad"]
    assert bad.status is StageStatus.FAILED
    assert isinstance(bad.exception, BadStr)
    assert bad.error is not None
    assert bad.error.startswith("BadStr (str() failed")
    assert result.stage_results["after"].status is StageStatus.SKIPPED
    assert "BadStr" in json.dumps(result.to_dict())


async def test_r4_7_with_retry_survives_an_exception_whose_str_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)  # the retry message is formatted
    raised: list[BadStr] = []

    @with_retry(max_retries=2, strategy=RetryStrategy.IMMEDIATE)
    async def flaky() -> None:
        raised.append(BadStr())
        raise raised[-1]

    with pytest.raises(BadStr) as info:
        await flaky()
    assert info.value is raised[-1]
    assert len(raised) == 3
    retry_lines = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retry_lines) == 2
    assert all("BadStr (str() failed" in line for line in retry_lines)


# -- item 10: delays (R4.2) ------------------------------------------------------------------------

GROWING = [RetryStrategy.EXPONENTIAL_BACKOFF, RetryStrategy.LINEAR_BACKOFF]
HUGE_ATTEMPTS = [0, 1, 1023, 1024, 5000, 10**400]


@pytest.mark.parametrize("strategy", GROWING)
def test_r4_2_zero_base_delay_never_overflows_to_the_cap(strategy: RetryStrategy) -> None:
    config = RetryConfig(strategy=strategy, initial_delay_seconds=0, max_delay_seconds=60)
    assert [config.get_delay(n) for n in HUGE_ATTEMPTS] == [0.0] * len(HUGE_ATTEMPTS)


@pytest.mark.parametrize("strategy", GROWING)
def test_r4_2_an_overflowing_delay_is_the_cap(strategy: RetryStrategy) -> None:
    config = RetryConfig(strategy=strategy, initial_delay_seconds=0.5, max_delay_seconds=7)
    assert config.get_delay(0) == 0.5
    assert config.get_delay(1024) == 7.0
    assert config.get_delay(10**400) == 7.0


def test_r4_2_zero_cap_holds_every_delay_at_zero() -> None:
    config = RetryConfig(initial_delay_seconds=3, max_delay_seconds=0)
    assert [config.get_delay(n) for n in HUGE_ATTEMPTS] == [0.0] * len(HUGE_ATTEMPTS)


@pytest.mark.parametrize("attempt", [-1, True, False, 1.5, "1", None])
def test_r4_2_get_delay_rejects_an_attempt_that_is_not_an_int_from_0(attempt: Any) -> None:
    with pytest.raises(ValueError, match="attempt") as info:
        RetryConfig().get_delay(attempt)
    assert repr(attempt) in str(info.value)


# -- item 11: to_dict of self-referencing results (R7.3) -------------------------------------------


def test_r7_3_to_dict_of_a_self_referencing_result_marks_the_cycle() -> None:
    loop: dict[str, Any] = {"name": "loop"}
    loop["self"] = loop
    chain: list[Any] = [1]
    chain.append([chain])
    data = _dumps(_stage_result(result={"a": loop, "b": chain}).to_dict())
    assert data["result"]["a"] == {"name": "loop", "self": "<cycle: dict>"}
    assert data["result"]["b"] == [1, ["<cycle: list>"]]


def test_r7_3_to_dict_of_a_shared_but_acyclic_value_repeats_it() -> None:
    shared = [1, 2]
    data = _dumps(_stage_result(result={"x": shared, "y": shared}).to_dict())
    assert data["result"] == {"x": [1, 2], "y": [1, 2]}


def test_r7_3_to_dict_of_a_very_deep_result_passes_json_dumps() -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    data = _dumps(_stage_result(result=deep).to_dict())
    assert isinstance(data["result"], list)


def test_r7_3_to_dict_of_a_huge_int_passes_json_dumps() -> None:
    data = _dumps(_stage_result(result=10**5000).to_dict())
    assert data["result"].startswith("<int of ")


async def test_r7_3_to_dict_of_a_run_whose_stage_returns_a_cycle_passes_json_dumps() -> None:
    async def returns_cycle(ctx: PipelineContext, _: Any) -> Any:
        node: dict[str, Any] = {"id": 1}
        node["parent"] = node
        ctx.record_metric("node", node)
        return node

    result = await make_pipeline(st("s", returns_cycle)).execute()
    data = _dumps(result.to_dict())
    assert data["stage_results"]["s"]["result"] == {"id": 1, "parent": "<cycle: dict>"}
    assert data["stage_results"]["s"]["metrics"]["node"]["parent"] == "<cycle: dict>"


def test_r7_3_repr_of_a_result_that_contains_itself_is_finite() -> None:
    result = _stage_result()
    result.result = {"me": result}
    text = repr(result)
    assert len(text) < 400
    assert "<cycl" in text
    assert "<cycle: " in json.dumps(result.to_dict())


# -- item 13: handlers checked when the Stage is built (R3.6) --------------------------------------


async def _one_arg(ctx: PipelineContext) -> None:
    return None


async def _fan_in(ctx: PipelineContext, users: Any, orders: Any) -> None:
    return None


def _generator(ctx: PipelineContext, data: Any) -> Iterator[int]:
    yield 1


async def _async_generator(ctx: PipelineContext, data: Any) -> AsyncIterator[int]:
    yield 1


def _keyword_only(ctx: PipelineContext, data: Any, *, table: str) -> None:
    return None


class _GeneratorCall:
    def __call__(self, ctx: PipelineContext, data: Any) -> Iterator[int]:
        yield 1


class _AsyncGeneratorCall:
    async def __call__(self, ctx: PipelineContext, data: Any) -> AsyncIterator[int]:
        yield 1


class _NoInputCall:
    def __call__(self, ctx: PipelineContext) -> None:
        return None


_THREE_ARGS: Any = (None, 1, 2)
BAD_HANDLERS = {
    "one argument": (_one_arg, "_one_arg"),
    "fan-in arguments": (_fan_in, "_fan_in"),
    "no arguments": (lambda: None, "<lambda>"),
    "required keyword": (_keyword_only, "_keyword_only"),
    "generator": (_generator, "_generator"),
    "async generator": (_async_generator, "_async_generator"),
    "partial of a generator": (functools.partial(_generator), "_generator"),
    "generator __call__": (_GeneratorCall(), "_GeneratorCall"),
    "async generator __call__": (_AsyncGeneratorCall(), "_AsyncGeneratorCall"),
    "__call__ without input": (_NoInputCall(), "_NoInputCall"),
    "partial binding too much": (functools.partial(_fan_in, *_THREE_ARGS), "_fan_in"),
}


@pytest.mark.parametrize(("handler", "name"), BAD_HANDLERS.values(), ids=BAD_HANDLERS.keys())
def test_r3_6_stage_rejects_a_handler_that_cannot_be_called_with_ctx_and_input(
    handler: Any, name: str
) -> None:
    with pytest.raises(TypeError) as info:
        Stage(stage_id="load_users", name="Load", handler=handler)
    message = str(info.value)
    assert "'load_users'" in message
    assert name in message
    assert "R3.6" in message


def test_r3_6_fan_in_error_says_the_dependencies_come_as_one_dict() -> None:
    fan_in: Any = _fan_in
    with pytest.raises(TypeError, match="one dict"):
        Stage(stage_id="join", name="Join", handler=fan_in, dependencies=["users", "orders"])


async def _two(ctx: PipelineContext, data: Any) -> None:
    return None


async def _configured(config: dict[str, str], ctx: PipelineContext, data: Any) -> None:
    return None


class _Handlers:
    async def method(self, ctx: PipelineContext, data: Any) -> None:
        return None

    async def __call__(self, ctx: PipelineContext, data: Any) -> None:
        return None


GOOD_HANDLERS = {
    "ctx and input": _two,
    "defaults": lambda ctx, data=None, extra=1: None,
    "varargs only": lambda *args: None,
    "ctx and varargs": lambda ctx, *rest, **kw: None,
    "partial leaving two": functools.partial(_configured, {"table": "users"}),
    "keyword-only with default": lambda ctx, data, *, table="t": None,
    "bound method": _Handlers().method,
    "async __call__": _Handlers(),
    "builtin without a signature": min,
}


@pytest.mark.parametrize("handler", GOOD_HANDLERS.values(), ids=GOOD_HANDLERS.keys())
def test_r3_6_stage_accepts_every_handler_callable_with_ctx_and_input(handler: Any) -> None:
    assert Stage(stage_id="s", name="S", handler=handler).handler is handler


@pytest.mark.parametrize(
    "cleanup",
    [lambda ctx, extra: None, lambda: None, _two, _GeneratorCall(), _generator],
    ids=["two args", "no args", "handler-shaped", "generator __call__", "generator"],
)
def test_r3_6_stage_rejects_a_cleanup_that_cannot_be_called_with_ctx(cleanup: Any) -> None:
    with pytest.raises(TypeError, match=r"'s'.*cleanup_handler.*R3\.6"):
        Stage(stage_id="s", name="S", handler=_two, cleanup_handler=cleanup)


@pytest.mark.parametrize(
    "cleanup",
    [_one_arg, lambda ctx, extra=None: None, lambda *args: None, _NoInputCall()],
    ids=["ctx", "default", "varargs", "__call__"],
)
def test_r3_6_stage_accepts_a_cleanup_callable_with_ctx(cleanup: Any) -> None:
    assert Stage(stage_id="s", name="S", handler=_two, cleanup_handler=cleanup).cleanup_handler


def test_r3_6_every_way_of_building_a_stage_checks_the_handler() -> None:
    one_arg: Any = _one_arg  # the type checker would refuse these already
    fan_in: Any = _fan_in
    with pytest.raises(TypeError, match=r"'a'.*_one_arg"):
        create_stage("a", "A", one_arg)
    with pytest.raises(TypeError, match=r"'_one_arg'.*_one_arg"):
        stage(one_arg)
    with pytest.raises(TypeError, match=r"'b'.*_generator"):
        stage(stage_id="b")(_generator)
    with pytest.raises(TypeError, match=r"'c'.*_fan_in"):
        PipelineBuilder().add_stage("c", "C", fan_in)
    with pytest.raises(TypeError, match=r"'d'.*cleanup_handler"):
        PipelineBuilder().add_stage("d", "D", _two, cleanup_handler=fan_in)
    with pytest.raises(TypeError, match=r"'e'.*_one_arg"):
        attrs.evolve(Stage(stage_id="e", name="E", handler=_two), handler=one_arg)


# -- item 15: retry filters that can apply (R4.3) --------------------------------------------------


@pytest.mark.parametrize(
    "kind", [KeyboardInterrupt, SystemExit, GeneratorExit, Stop, PipelineCancelledException]
)
def test_r4_3_retry_on_exceptions_rejects_types_that_are_never_retried(kind: type) -> None:
    with pytest.raises(TypeError, match=kind.__name__) as info:
        RetryConfig(retry_on_exceptions=(ValueError, kind))
    assert "retry_on_exceptions" in str(info.value)
    with pytest.raises(TypeError, match=kind.__name__):
        with_retry(retry_on_exceptions=(kind,))
    with pytest.raises(TypeError, match=kind.__name__):
        PipelineBuilder().with_retry(retry_on_exceptions=[kind])


async def test_r4_3_retry_on_exceptions_rejects_the_backends_cancellation() -> None:
    cancelled = anyio.get_cancelled_exc_class()
    with pytest.raises(TypeError, match=cancelled.__name__):
        RetryConfig(retry_on_exceptions=(cancelled,))


@pytest.mark.parametrize("text", ["ValueError", "KeyError"])
def test_r4_3_retry_on_exceptions_as_a_string_names_the_whole_string(text: str) -> None:
    with pytest.raises(TypeError, match="retry_on_exceptions") as info:
        RetryConfig(retry_on_exceptions=text)
    message = str(info.value)
    assert repr(text) in message
    assert repr(text[0]) not in message  # not just its first letter


def test_r4_3_retry_on_exceptions_keeps_exception_types_and_base_exception() -> None:
    assert RetryConfig(retry_on_exceptions=[OSError]).retry_on_exceptions == (OSError,)
    assert RetryConfig(retry_on_exceptions=ValueError).retry_on_exceptions == (ValueError,)
    # BaseException matches every Exception, so it can apply: kept.
    assert RetryConfig(retry_on_exceptions=(BaseException,)).retry_on_exceptions == (BaseException,)


async def _a_real_cancellation() -> BaseException:
    """The backend's own cancellation exception, caught as a handler would."""
    caught: list[BaseException] = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.sleep(1)
        except anyio.get_cancelled_exc_class() as exc:
            caught.append(exc)
            raise
    return caught[0]


async def test_r4_3_should_retry_is_false_for_interrupts_cancellation_and_stops() -> None:
    config = RetryConfig(max_retries=5, retry_on_exceptions=(BaseException,))
    cancellation = await _a_real_cancellation()
    for exc in (
        KeyboardInterrupt(),
        SystemExit(1),
        Stop(),
        cancellation,
        PipelineCancelledException(CancellationReason.USER_REQUESTED),
    ):
        assert config.should_retry(exc, attempt=1) is False, exc
        assert RetryConfig(max_retries=5).should_retry(exc, attempt=1) is False, exc
    assert config.should_retry(ValueError(), attempt=1) is True
    assert config.should_retry(ValueError(), attempt=6) is False


# -- item 17: a summary that summarises, short reprs (R7.3) ----------------------------------------


def _big_result(n: int = 20_000, failures: int = 12) -> PipelineResult:
    stages: dict[str, StageResult] = {}
    failing = {7 + k * (n // failures) for k in range(failures)}
    for i in range(n):
        failed = i in failing
        stages[f"s{i}"] = _stage_result(
            stage_id=f"s{i}",
            stage_name=f"S{i}",
            status=StageStatus.FAILED if failed else StageStatus.COMPLETED,
            error=f"ValueError: row {i} is bad" if failed else None,
            start_time=1000.0,
            end_time=1000.0 + (i % 1000) / 1000 + (5.0 if i in (42, 4242) else 0),
            attempt_count=1,
        )
    return PipelineResult("run1", "crawl", PipelineStatus.PARTIALLY_COMPLETED, stages, 1000, 1010)


def test_r7_3_summary_of_a_big_run_is_a_digest() -> None:
    result = _big_result()
    text = result.summary()
    lines = text.splitlines()
    assert len(lines) < 40
    assert "crawl" in lines[0]
    assert "PARTIALLY_COMPLETED" in lines[0]
    assert "20000 stages: 19988 completed, 12 failed" in text
    assert "failed (12):" in text
    failed = [sid for sid, r in result.stage_results.items() if r.status is StageStatus.FAILED]
    for sid in failed[:10]:
        line = next(line for line in lines if line.split()[0] == sid)
        assert "FAILED" in line
        assert f"row {sid[1:]} is bad" in line
    assert "... and 2 more" in text
    slowest_at = lines.index("  slowest:")
    assert [line.split()[0] for line in lines[slowest_at + 1 : slowest_at + 3]] == [
        "s4242",
        "s42",
    ]
    assert "summary(full=True)" in text


def test_r7_3_full_summary_lists_every_stage() -> None:
    result = _big_result(n=300, failures=3)
    lines = result.summary(full=True).splitlines()
    assert len(lines) == 2 + 300
    assert lines[2].split()[:2] == ["s0", "COMPLETED"]


async def test_r7_3_summary_of_a_small_run_lists_every_stage_unless_asked_for_a_digest() -> None:
    pipeline = make_pipeline(
        st("load", ok),
        st("bad", fails, ["load"], critical=False),
        st("after", ok, ["bad"], critical=False),
        continue_on_error=True,
    )
    result = await pipeline.execute()
    table = result.summary()
    for sid, status in (("load", "COMPLETED"), ("bad", "FAILED"), ("after", "SKIPPED")):
        assert any(line.split()[:2] == [sid, status] for line in table.splitlines())
    digest = result.summary(full=False)
    assert "failed (1):" in digest
    assert not any(line.split()[:1] == ["after"] for line in digest.splitlines())


def test_r7_3_repr_of_a_result_holding_50_mb_is_short() -> None:
    blob = "x" * 50_000_000
    result = _stage_result(result=blob, error="E: " + "y" * 1_000_000)
    text = repr(result)
    assert len(text) < 400
    assert "StageResult(stage_id='s', status=COMPLETED" in text
    pipeline_result = PipelineResult("p", "p", PipelineStatus.COMPLETED, {"s": result})
    assert len(repr(pipeline_result)) < 300
    assert "stages=1 (1 completed)" in repr(pipeline_result)
    assert len(pipeline_result.summary()) < 1000


# -- item 18: dependencies equal their lists; cleanup may get 0 s (R8.1) ---------------------------


def test_r8_1_stage_dependencies_and_tags_compare_equal_to_the_lists_given() -> None:
    built = Stage(
        stage_id="process",
        name="Process",
        handler=_two,
        dependencies=["load_data"],
        tags=["data", "processing"],
    )
    assert built.dependencies == ["load_data"]
    assert ["load_data"] == built.dependencies  # noqa: SIM300 - the list on the left
    assert built.dependencies == ("load_data",)
    assert built.tags == ["data", "processing"]
    assert built.dependencies != ["other"]
    assert (built.dependencies != ["load_data"]) is False
    assert isinstance(built.dependencies, tuple)
    assert isinstance(built.tags, tuple)
    assert Stage(stage_id="s", name="S", handler=_two).dependencies == []
    for made in (
        create_stage("process", "Process", _two, ["load_data"]),
        PipelineBuilder()
        .add_stage("process", "P", _two, ["load_data"])
        .add_stage("load_data", "Load", _two)
        .build()
        .stages[0],
    ):
        assert made.dependencies == ["load_data"]


def test_r8_1_stage_stays_immutable_and_hashable() -> None:
    built = Stage(stage_id="s", name="S", handler=_two, dependencies=["a"], tags=["t"])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        built.dependencies = ("b",)  # type: ignore[misc, assignment]
    assert not hasattr(built.dependencies, "append")
    same = Stage(stage_id="s", name="S", handler=_two, dependencies=("a",), tags=("t",))
    assert built == same
    assert hash(built) == hash(same)
    assert len({built, same}) == 1


def test_r8_1_tags_must_be_strings() -> None:
    with pytest.raises(TypeError, match=r"Stage\.tags"):
        Stage(stage_id="s", name="S", handler=_two, tags=["ok", 3])


def test_r8_1_cleanup_timeout_may_be_zero() -> None:
    assert TimeoutConfig(cleanup_timeout_seconds=0.0).cleanup_timeout_seconds == 0.0
    assert TimeoutConfig(cleanup_timeout_seconds=0).cleanup_timeout_seconds == 0
    built = PipelineBuilder().with_timeout(cleanup_timeout=0).config
    assert built.timeout.cleanup_timeout_seconds == 0
    with pytest.raises(ValueError, match="cleanup_timeout_seconds"):
        TimeoutConfig(cleanup_timeout_seconds=-0.001)


async def test_r5_4_zero_cleanup_timeout_gives_cleanup_no_time() -> None:
    started = anyio.Event()
    finished: list[str] = []

    async def blocks(ctx: PipelineContext, _: Any) -> None:
        started.set()
        await anyio.sleep_forever()

    async def slow_cleanup(ctx: PipelineContext) -> None:
        await anyio.sleep(5)
        finished.append("cleanup")

    pipeline = make_pipeline(
        st("a", blocks, cleanup_handler=slow_cleanup),
        timeout=TimeoutConfig(grace_period_seconds=0, cleanup_timeout_seconds=0),
    )
    async with executing(pipeline) as run:
        await started.wait()
        pipeline.cancel()
    assert run.returned.status is PipelineStatus.CANCELLED
    assert finished == []
    assert "a" in run.returned.metadata["cleanup_errors"]


# -- mutant survivors ------------------------------------------------------------------------------


async def test_r2_2_immediate_retry_keeps_earliest_first_order_and_records_no_delay() -> None:
    calls: list[str] = []
    failed_once: list[bool] = []

    async def flaky(ctx: PipelineContext, _: Any) -> str:
        calls.append("b")
        if not failed_once:
            failed_once.append(True)
            raise ValueError("first attempt fails")
        return "b"

    pipeline = make_pipeline(
        st("a", recording(calls, "a")),
        st("b", flaky),
        st("c", recording(calls, "c")),
        retry=RetryConfig(max_retries=2, strategy=RetryStrategy.IMMEDIATE, initial_delay_seconds=5),
        parallel_stages=False,
    )
    result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    # The retried stage is ready at once, and it was added before c: it goes first.
    assert calls == ["a", "b", "b", "c"]
    metrics = result.stage_results["b"].metrics
    assert metrics["retry_delay_ms"] == 0
    assert [a["outcome"] for a in metrics["attempts"]] == ["failed", "completed"]
    assert result.stage_results["b"].attempt_count == 2


def _cycle_stages() -> list[Stage]:
    # The first stage is not on the cycle (it only waits for it).
    return [
        stage_of("report", _two, "b"),
        stage_of("a", _two, "c"),
        stage_of("b", _two, "a"),
        stage_of("c", _two, "b"),
        stage_of("free", _two),
    ]


async def test_r8_3_cycle_error_stage_id_names_a_stage_on_the_cycle() -> None:
    pipeline = make_pipeline(*_cycle_stages())
    with pytest.raises(PipelineValidationError) as info:
        pipeline.validate()
    assert info.value.stage_id == "a"  # the earliest-added stage on the cycle
    assert "a -> b -> c -> a" in str(info.value)
    with pytest.raises(PipelineValidationError) as at_run:
        await pipeline.execute()
    assert at_run.value.stage_id in {"a", "b", "c"}
    builder = PipelineBuilder()
    for each in _cycle_stages():
        builder.add_stage(each)
    with pytest.raises(PipelineValidationError) as at_build:
        builder.build()
    assert at_build.value.stage_id in {"a", "b", "c"}


async def test_builder_collect_metrics_false_takes_effect_and_chains() -> None:
    builder = PipelineBuilder("quiet").with_retry(strategy=RetryStrategy.NONE)
    assert builder.collect_metrics(False) is builder
    assert builder.collect_metrics(True).collect_metrics(False) is builder
    pipeline = builder.add_stage("a", "A", ok).build()
    assert pipeline.config.collect_metrics is False
    result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    metrics = result.stage_results["a"].metrics
    assert "attempts" not in metrics
    assert "queue_wait_ms" not in metrics


async def test_builder_cleanup_on_cancel_false_takes_effect_and_chains() -> None:
    for enabled in (False, True):
        started = anyio.Event()
        cleaned: list[str] = []
        blocks = blocks_forever(started)
        cleanup = recording_cleanup(cleaned, "a")
        builder = PipelineBuilder().with_timeout(grace_period=0)
        assert builder.cleanup_on_cancel(enabled) is builder
        pipeline = (
            builder.collect_metrics(False)
            .with_retry(strategy=RetryStrategy.NONE)
            .add_stage("a", "A", blocks, cleanup_handler=cleanup)
            .build()
        )
        assert pipeline.config.cleanup_on_cancel is enabled
        async with executing(pipeline) as run:
            await started.wait()
            pipeline.cancel()
        assert run.returned.status is PipelineStatus.CANCELLED
        assert cleaned == (["a"] if enabled else [])


async def test_events_stream_is_detached_from_the_pipeline_when_the_block_exits() -> None:
    pipeline = make_pipeline(st("a", ok))
    kinds: list[EventKind] = []
    async with pipeline.events() as stream:
        assert stream in pipeline._listeners
        async with executing(pipeline):
            async for event in stream:
                kinds.append(event.kind)
    assert kinds[0] is EventKind.RUN_STARTED
    assert kinds[-1] is EventKind.RUN_FINISHED
    assert stream not in pipeline._listeners
    assert pipeline._listeners == []

    attached: list[bool] = []

    async def consumer_breaks() -> None:
        async with pipeline.events() as failing:
            attached.append(failing in pipeline._listeners)
            raise LookupError("the consumer broke")

    with pytest.raises(LookupError):
        await consumer_breaks()
    assert attached == [True]
    assert pipeline._listeners == []


async def test_r10_2_failed_stage_is_logged_at_warning_with_no_listener_and_debug_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert not logging.getLogger(LOGGER).isEnabledFor(logging.DEBUG)
    pipeline = make_pipeline(st("breaks", fails), st("fine", ok), continue_on_error=True)
    assert pipeline._listeners == []
    result = await pipeline.execute()
    assert result.stage_results["breaks"].status is StageStatus.FAILED
    records = [r for r in caplog.records if r.name == LOGGER]
    failed = [r for r in records if "breaks" in r.getMessage()]
    assert len(failed) == 1
    assert failed[0].levelno == logging.WARNING
    assert "stage failed" in failed[0].getMessage()  # the error is in the message
    assert not any("fine" in r.getMessage() for r in records)  # success is DEBUG: off
