"""R1: backends and entry points. ``await pipeline.execute()`` under asyncio,
uvloop and trio; asyncio habits (tasks, ``wait_for``, ``gather``) and their
trio equivalents (nurseries, ``move_on_after``); ``run_sync`` from sync code;
``execute()`` never raises an ExceptionGroup of its own making."""

from __future__ import annotations

import ast
import asyncio
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import sniffio

import proxima.data.pipeline as pl
from proxima.data.pipeline import (
    CancellationReason,
    Pipeline,
    PipelineConfig,
    PipelineContext,
    PipelineStatus,
    Stage,
    StageStatus,
    TimeoutConfig,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

from helpers import NO_RETRY, executing, st

pytestmark = pytest.mark.anyio

LIMIT = 20

try:
    import uvloop  # noqa: F401
except ImportError:  # pragma: no cover - depends on the platform
    _HAS_UVLOOP = False
else:
    _HAS_UVLOOP = True

#: For the asyncio-only tests: asyncio (debug mode) and asyncio+uvloop, no trio.
ASYNCIO_ONLY = pytest.mark.parametrize(
    "anyio_backend",
    [
        pytest.param(("asyncio", {"debug": True}), id="asyncio"),
        pytest.param(
            ("asyncio", {"debug": True, "use_uvloop": True}),
            id="uvloop",
            marks=pytest.mark.skipif(not _HAS_UVLOOP, reason="uvloop is not installed"),
        ),
    ],
)
TRIO_ONLY = pytest.mark.parametrize("anyio_backend", [pytest.param(("trio", {}), id="trio")])


class Blocking:
    """A pipeline whose stages block until cancelled, with cleanup tracking."""

    def __init__(self, n: int = 1, *, cleanup_raises: bool = False, **config: Any) -> None:
        self.started: list[str] = []
        self.all_started = anyio.Event()
        self.cleaned: list[str] = []
        self.n = n
        config.setdefault("name", "blocking")
        config.setdefault("max_parallel", max(n, 1))
        self.pipeline = Pipeline(PipelineConfig(**config))
        for i in range(n):
            self.pipeline.add_stage(
                st(
                    f"s{i}",
                    self._handler(f"s{i}"),
                    cleanup_handler=self._cleanup(f"s{i}", cleanup_raises),
                )
            )
        self.pipeline.add_stage(st("after", self._handler("after"), ["s0"]))

    def _handler(self, sid: str) -> Any:
        async def run(ctx: PipelineContext, data: Any) -> None:
            self.started.append(sid)
            if len(self.started) == self.n:
                self.all_started.set()
            await anyio.sleep_forever()

        return run

    def _cleanup(self, sid: str, raises: bool) -> Any:
        async def cleanup(ctx: PipelineContext) -> None:
            self.cleaned.append(sid)
            if raises:
                raise RuntimeError(f"cleanup of {sid} failed")

        return cleanup

    async def cancel_from_outside(self) -> list[BaseException]:
        """Run the pipeline in a task group and cancel an enclosing anyio scope
        once every stage started; return what ``execute()`` raised."""
        caught: list[BaseException] = []
        with anyio.fail_after(LIMIT):
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:

                    async def run() -> None:
                        try:
                            await self.pipeline.execute()
                        except BaseException as exc:
                            caught.append(exc)
                            raise

                    tg.start_soon(run)
                    await self.all_started.wait()
                    scope.cancel()
        return caught

    def assert_cancelled_externally(self) -> None:
        result = self.pipeline.result
        assert result is not None, "pipeline.result must record the cancelled run"
        assert result.status is PipelineStatus.CANCELLED
        assert result.cancellation_reason is CancellationReason.EXTERNAL
        assert self.pipeline.is_running is False
        for i in range(self.n):
            assert result.stage_results[f"s{i}"].status is StageStatus.CANCELLED
        assert result.stage_results["after"].status is StageStatus.CANCELLED
        assert sorted(self.cleaned) == sorted(f"s{i}" for i in range(self.n))


async def _value_stage(ctx: PipelineContext, data: Any) -> Any:
    await anyio.lowlevel.checkpoint()
    return data


# -- R1.1 anyio only ---------------------------------------------------------------------


_CORE = [
    *sorted(
        str(p.relative_to(Path(pl.__file__).parent))
        for folder in ("_engine", "_facade", "_model")
        for p in (Path(pl.__file__).parent / folder).rglob("*.py")
    ),
    "_graph.py",
]


@pytest.mark.parametrize("module", _CORE)
def test_r1_1_core_imports_neither_asyncio_nor_trio(module: str) -> None:
    path = Path(pl.__file__).parent / module
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "trio", "uvloop"}, f"{module} imports {imported}"


async def test_r1_1_execute_works_unchanged_on_every_backend(backend_name: str) -> None:
    seen: list[str] = []

    async def which(ctx: PipelineContext, data: Any) -> str:
        seen.append(sniffio.current_async_library())
        await anyio.lowlevel.checkpoint()
        return f"{data}+"

    pipeline = Pipeline().add_stages([st("a", which), st("b", which, ["a"]), st("c", which, ["a"])])
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute(initial_input="x")
    assert result.status is PipelineStatus.COMPLETED
    assert result.stage_results["b"].result == "x++"
    assert seen == [backend_name] * 3


# -- R1.2 asyncio habits -----------------------------------------------------------------


@ASYNCIO_ONLY
async def test_r1_2_asyncio_create_task_runs_the_pipeline() -> None:
    pipeline = Pipeline().add_stages([st("a", _value_stage), st("b", _value_stage, ["a"])])
    task = asyncio.create_task(pipeline.execute(initial_input=42))
    with anyio.fail_after(LIMIT):
        result = await task
    assert result.status is PipelineStatus.COMPLETED
    assert result.stage_results["b"].result == 42
    assert pipeline.result is result


@ASYNCIO_ONLY
async def test_r1_2_asyncio_task_cancel_propagates_and_records_external() -> None:
    blk = Blocking(3)
    task = asyncio.create_task(blk.pipeline.execute())
    with anyio.fail_after(LIMIT):
        await blk.all_started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert task.cancelled()
    blk.assert_cancelled_externally()


@ASYNCIO_ONLY
async def test_r1_2_asyncio_wait_for_returns_result_in_time() -> None:
    pipeline = Pipeline().add_stage(st("a", _value_stage))
    result = await asyncio.wait_for(pipeline.execute(initial_input="ok"), LIMIT)
    assert result.status is PipelineStatus.COMPLETED
    assert result.stage_results["a"].result == "ok"


@ASYNCIO_ONLY
async def test_r1_2_asyncio_wait_for_timeout_propagates_and_records_external() -> None:
    blk = Blocking(2)
    with anyio.fail_after(LIMIT):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(blk.pipeline.execute(), 0.1)
    blk.assert_cancelled_externally()


@ASYNCIO_ONLY
async def test_r1_2_asyncio_gather_runs_different_pipelines_concurrently() -> None:
    first_ran = asyncio.Event()
    second_ran = asyncio.Event()

    async def first(ctx: PipelineContext, data: Any) -> str:
        first_ran.set()
        await second_ran.wait()  # only possible if the other pipeline runs meanwhile
        return "first"

    async def second(ctx: PipelineContext, data: Any) -> str:
        second_ran.set()
        await first_ran.wait()
        return "second"

    p1 = Pipeline(PipelineConfig(name="one")).add_stage(st("x", first))
    p2 = Pipeline(PipelineConfig(name="two")).add_stage(st("x", second))
    p3 = Pipeline(PipelineConfig(name="three")).add_stages(
        [st("x", _value_stage), st("y", _value_stage, ["x"])]
    )
    with anyio.fail_after(LIMIT):
        r1, r2, r3 = await asyncio.gather(p1.execute(), p2.execute(), p3.execute(initial_input=3))
    assert [r.status for r in (r1, r2, r3)] == [PipelineStatus.COMPLETED] * 3
    assert [r.pipeline_name for r in (r1, r2, r3)] == ["one", "two", "three"]
    assert r1.stage_results["x"].result == "first"
    assert r2.stage_results["x"].result == "second"
    assert r3.stage_results["y"].result == 3
    assert len({r.pipeline_id for r in (r1, r2, r3)}) == 3


# -- R1.2 the trio equivalents -----------------------------------------------------------


@TRIO_ONLY
async def test_r1_2_trio_nursery_runs_several_pipelines_concurrently() -> None:
    import trio

    first_ran = trio.Event()
    second_ran = trio.Event()
    results: dict[str, Any] = {}

    async def first(ctx: PipelineContext, data: Any) -> str:
        first_ran.set()
        await second_ran.wait()
        return "first"

    async def second(ctx: PipelineContext, data: Any) -> str:
        second_ran.set()
        await first_ran.wait()
        return "second"

    p1 = Pipeline(PipelineConfig(name="one")).add_stage(st("x", first))
    p2 = Pipeline(PipelineConfig(name="two")).add_stage(st("x", second))

    async def run(key: str, pipeline: Pipeline) -> None:
        results[key] = await pipeline.execute()

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "one", p1)
            nursery.start_soon(run, "two", p2)
    assert results["one"].status is PipelineStatus.COMPLETED
    assert results["two"].status is PipelineStatus.COMPLETED
    assert results["one"].stage_results["x"].result == "first"
    assert results["two"].stage_results["x"].result == "second"


@TRIO_ONLY
async def test_r1_2_trio_move_on_after_propagates_and_records_external() -> None:
    import trio

    blk = Blocking(2)
    reached = False
    with trio.fail_after(LIMIT):
        with trio.move_on_after(0.1) as scope:
            await blk.pipeline.execute()
            reached = True
    assert scope.cancelled_caught
    assert not reached
    blk.assert_cancelled_externally()


@TRIO_ONLY
async def test_r1_2_trio_nursery_cancel_propagates_and_records_external() -> None:
    import trio

    blk = Blocking(3)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(blk.pipeline.execute)
            await blk.all_started.wait()
            nursery.cancel_scope.cancel()
    assert nursery.cancel_scope.cancelled_caught
    blk.assert_cancelled_externally()


# -- R1.2 / R5.6 on every backend: an enclosing anyio scope ------------------------------


async def test_r1_2_enclosing_anyio_cancel_scope_propagates_and_records_external() -> None:
    blk = Blocking(3)
    caught = await blk.cancel_from_outside()
    assert len(caught) == 1
    assert isinstance(caught[0], anyio.get_cancelled_exc_class())
    blk.assert_cancelled_externally()


# -- R1.3 run_sync -----------------------------------------------------------------------


def _sync_pipeline(seen: list[str]) -> Pipeline:
    async def which(ctx: PipelineContext, data: Any) -> Any:
        seen.append(sniffio.current_async_library())
        await anyio.lowlevel.checkpoint()
        return data

    return Pipeline(PipelineConfig(name="sync")).add_stages([st("a", which), st("b", which, ["a"])])


def test_r1_3_run_sync_defaults_to_asyncio() -> None:
    seen: list[str] = []
    result = _sync_pipeline(seen).run_sync({"k": 1})
    assert result.status is PipelineStatus.COMPLETED
    assert result.stage_results["b"].result == {"k": 1}
    assert seen == ["asyncio", "asyncio"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_r1_3_run_sync_on_each_backend(backend: str) -> None:
    seen: list[str] = []
    pipeline = _sync_pipeline(seen)
    result = pipeline.run_sync(initial_input=5, backend=backend)  # type: ignore[arg-type]
    assert result.status is PipelineStatus.COMPLETED
    assert result.stage_results["b"].result == 5
    assert seen == [backend, backend]
    assert pipeline.result is result
    assert pipeline.is_running is False


def test_r1_3_run_sync_twice_runs_afresh() -> None:
    seen: list[str] = []
    pipeline = _sync_pipeline(seen)
    first = pipeline.run_sync(1)
    second = pipeline.run_sync(2, backend="trio")
    assert first.stage_results["b"].result == 1
    assert second.stage_results["b"].result == 2
    assert pipeline.result is second


def test_r1_3_run_sync_initial_input_defaults_to_none() -> None:
    seen: list[str] = []
    result = _sync_pipeline(seen).run_sync()
    assert result.stage_results["a"].result is None


# -- R1.4 never an ExceptionGroup --------------------------------------------------------


def _barrier_failing_stages(n: int, exc_types: list[type[Exception]]) -> list[Stage]:
    arrived = 0
    go = anyio.Event()

    def handler(i: int) -> Any:
        async def run(ctx: PipelineContext, data: Any) -> None:
            nonlocal arrived
            arrived += 1
            if arrived == n:
                go.set()
            await go.wait()
            raise exc_types[i % len(exc_types)](f"stage {i} failed")

        return run

    return [st(f"f{i}", handler(i)) for i in range(n)]


@pytest.mark.parametrize("continue_on_error", [False, True])
async def test_r1_4_many_stages_failing_at_once_give_a_result(continue_on_error: bool) -> None:
    n = 12
    config = PipelineConfig(
        name="many-failures",
        max_parallel=n,
        retry=NO_RETRY,
        continue_on_error=continue_on_error,
    )
    pipeline = Pipeline(config)
    pipeline.add_stages(_barrier_failing_stages(n, [ValueError, KeyError, OSError]))
    pipeline.add_stage(st("after", _value_stage, ["f0", "f1"]))
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.FAILED
    assert all(result.stage_results[f"f{i}"].status is StageStatus.FAILED for i in range(n))
    assert {type(result.stage_results[f"f{i}"].exception) for i in range(n)} == {
        ValueError,
        KeyError,
        OSError,
    }
    assert result.stage_results["after"].status is StageStatus.SKIPPED
    expected_reason = None if continue_on_error else CancellationReason.ERROR
    assert result.cancellation_reason is expected_reason


async def test_r1_4_many_stages_failing_at_once_with_raise_on_failure_raise_one_error() -> None:
    n = 8
    pipeline = Pipeline(PipelineConfig(name="raise", max_parallel=n, retry=NO_RETRY))
    pipeline.add_stages(_barrier_failing_stages(n, [ValueError]))
    with anyio.fail_after(LIMIT):
        with pytest.raises(pl.StageExecutionException) as info:
            await pipeline.execute(raise_on_failure=True)
    assert not isinstance(info.value, BaseExceptionGroup)
    assert isinstance(info.value.cause, ValueError)


@pytest.mark.parametrize("grace", [0, 0.05])
async def test_r1_4_several_stages_cancelled_at_once_give_a_result(grace: float) -> None:
    blk = Blocking(6, timeout=TimeoutConfig(grace_period_seconds=grace), cleanup_raises=True)
    async with executing(blk.pipeline, limit=LIMIT) as run:
        await blk.all_started.wait()
        blk.pipeline.cancel()
    result = run.returned
    assert result.status is PipelineStatus.CANCELLED
    assert result.cancellation_reason is CancellationReason.USER_REQUESTED
    assert all(result.stage_results[f"s{i}"].status is StageStatus.CANCELLED for i in range(6))
    assert set(result.metadata["cleanup_errors"]) == {f"s{i}" for i in range(6)}


async def test_r1_4_pipeline_timeout_with_several_running_and_cleanup_errors() -> None:
    timeouts = TimeoutConfig(pipeline_timeout_seconds=0.05, grace_period_seconds=0)
    blk = Blocking(4, timeout=timeouts, cleanup_raises=True)
    with anyio.fail_after(LIMIT):
        result = await blk.pipeline.execute()
    assert result.status is PipelineStatus.FAILED
    assert result.cancellation_reason is CancellationReason.TIMEOUT
    assert all(result.stage_results[f"s{i}"].status is StageStatus.CANCELLED for i in range(4))
    assert set(result.metadata["cleanup_errors"]) == {f"s{i}" for i in range(4)}


async def test_r1_4_external_cancel_with_cleanup_errors_raises_plain_cancellation() -> None:
    blk = Blocking(5, cleanup_raises=True)
    caught = await blk.cancel_from_outside()
    assert len(caught) == 1
    assert not isinstance(caught[0], BaseExceptionGroup)
    assert isinstance(caught[0], anyio.get_cancelled_exc_class())
    blk.assert_cancelled_externally()
    assert blk.pipeline.result is not None
    assert set(blk.pipeline.result.metadata["cleanup_errors"]) == {f"s{i}" for i in range(5)}


class Fatal(BaseException):
    """A non-Exception raised inside a stage (stands in for KeyboardInterrupt)."""


@pytest.mark.parametrize("exc_type", [Fatal, SystemExit])
async def test_r1_4_base_exception_in_stage_is_reraised_as_itself(
    exc_type: type[BaseException],
) -> None:
    blk = Blocking(3, max_parallel=4)  # a slot left for the fatal stage

    async def fatal(ctx: PipelineContext, data: Any) -> None:
        await blk.all_started.wait()
        raise exc_type("stop everything")

    blk.pipeline.add_stage(st("fatal", fatal))
    with anyio.fail_after(LIMIT):
        with pytest.raises(BaseException) as info:  # noqa: PT011 - the exact type is checked
            await blk.pipeline.execute()
    assert type(info.value) is exc_type
    result = blk.pipeline.result
    assert result is not None
    assert result.status is PipelineStatus.CANCELLED
    assert result.cancellation_reason is CancellationReason.EXTERNAL
    assert result.stage_results["fatal"].status is StageStatus.FAILED
    assert result.stage_results["fatal"].exception is info.value
    assert sorted(blk.cleaned) == ["s0", "s1", "s2"]


async def test_r1_4_two_base_exceptions_at_once_raise_one_not_a_group() -> None:
    go = anyio.Event()
    arrived = 0

    async def fatal(ctx: PipelineContext, data: Any) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            go.set()
        await go.wait()
        raise Fatal("both at once")

    pipeline = Pipeline(PipelineConfig(name="two-fatal", max_parallel=2))
    pipeline.add_stages([st("x", fatal), st("y", fatal)])
    with anyio.fail_after(LIMIT):
        with pytest.raises(BaseException) as info:  # noqa: PT011 - the exact type is checked
            await pipeline.execute()
    assert type(info.value) is Fatal
    assert pipeline.result is not None
    assert pipeline.result.status is PipelineStatus.CANCELLED
