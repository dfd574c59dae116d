"""R3: what a handler receives and how it is called: ``initial_input`` for
roots, the single dependency's value, a dict in listed dependency order for
several; sync handlers inline, awaitables awaited; ``ctx.get_stage_result``."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Generator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from helpers import NO_RETRY, raises, st

from proxima.data.pipeline import (
    Pipeline,
    PipelineBuilder,
    PipelineConfig,
    PipelineContext,
    PipelineStatus,
    StageResult,
    StageStatus,
    run_pipeline,
)

pytestmark = pytest.mark.anyio

LIMIT = 20


class Inputs:
    """Handlers that record the input they were given."""

    def __init__(self) -> None:
        self.got: dict[str, Any] = {}

    def handler(self, sid: str, value: Any = None) -> Any:
        async def run(ctx: PipelineContext, data: Any) -> Any:
            self.got[sid] = data
            return sid if value is None else value

        return run


# -- R3.1 roots get initial_input --------------------------------------------------------


async def test_r3_1_every_root_receives_initial_input() -> None:
    rec = Inputs()
    payload = {"data": [1, 2, 3]}
    pipeline = Pipeline(PipelineConfig(name="roots"))
    pipeline.add_stages([st(f"r{i}", rec.handler(f"r{i}")) for i in range(3)])
    pipeline.add_stage(st("child", rec.handler("child"), ["r0"]))
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute(initial_input=payload)
    assert result.status is PipelineStatus.COMPLETED
    for i in range(3):
        assert rec.got[f"r{i}"] is payload
    assert rec.got["child"] == "r0"


async def test_r3_1_initial_input_defaults_to_none() -> None:
    rec = Inputs()
    with anyio.fail_after(LIMIT):
        await run_pipeline([st("root", rec.handler("root"))])
    assert rec.got == {"root": None}


async def test_r3_1_initial_input_positional_and_via_run_pipeline() -> None:
    rec = Inputs()
    with anyio.fail_after(LIMIT):
        result = await run_pipeline(
            [st("root", rec.handler("root"))],
            initial_input=7,
            config=PipelineConfig(name="quick"),
        )
    assert rec.got["root"] == 7
    assert result.pipeline_name == "quick"
    rec2 = Inputs()
    pipeline = Pipeline().add_stage(st("root", rec2.handler("root")))
    with anyio.fail_after(LIMIT):
        await pipeline.execute("positional")
    assert rec2.got["root"] == "positional"


# -- R3.2 one dependency: its value ------------------------------------------------------


async def test_r3_2_single_dependency_value_is_passed_unwrapped() -> None:
    rec = Inputs()
    produced = {"rows": 10}
    pipeline = Pipeline()
    pipeline.add_stages(
        [
            st("load", rec.handler("load", produced)),
            st("process", rec.handler("process"), ["load"]),
        ]
    )
    with anyio.fail_after(LIMIT):
        await pipeline.execute(initial_input="ignored-by-process")
    assert rec.got["process"] is produced


async def test_r3_2_single_dependency_returning_none_passes_none() -> None:
    rec = Inputs()

    async def nothing(ctx: PipelineContext, data: Any) -> None:
        return None

    pipeline = Pipeline().add_stages([st("a", nothing), st("b", rec.handler("b"), ["a"])])
    with anyio.fail_after(LIMIT):
        await pipeline.execute(initial_input="initial")
    assert "b" in rec.got
    assert rec.got["b"] is None


async def test_r3_2_chain_passes_each_result_on() -> None:
    async def stage_a(ctx: PipelineContext, _: Any) -> dict[str, int]:
        return {"a": 1}

    async def stage_b(ctx: PipelineContext, a_result: dict[str, int]) -> dict[str, int]:
        return {"b": a_result["a"] * 2}

    pipeline = (
        PipelineBuilder("my_pipeline")
        .add_stage("a", "Stage A", stage_a)
        .add_stage("b", "Stage B", stage_b, dependencies=["a"])
        .build()
    )
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.stage_results["b"].result == {"b": 2}


# -- R3.3 several dependencies: dict in listed order -------------------------------------


async def test_r3_3_several_dependencies_give_dict_in_listed_order() -> None:
    rec = Inputs()
    gate_z = anyio.Event()
    gate_m = anyio.Event()

    # Completion order a, m, z (by the gates); added order a, m, z; listed z, a, m.
    async def a(ctx: PipelineContext, data: Any) -> str:
        gate_m.set()
        return "A"

    async def m(ctx: PipelineContext, data: Any) -> str:
        await gate_m.wait()
        gate_z.set()
        return "M"

    async def z(ctx: PipelineContext, data: Any) -> str:
        await gate_z.wait()
        return "Z"

    pipeline = Pipeline(PipelineConfig(name="fan-in", max_parallel=4))
    pipeline.add_stages(
        [
            st("a", a),
            st("m", m),
            st("z", z),
            st("join", rec.handler("join"), ["z", "a", "m"]),
        ]
    )
    with anyio.fail_after(LIMIT):
        await pipeline.execute()
    got = rec.got["join"]
    assert isinstance(got, dict)
    assert got == {"z": "Z", "a": "A", "m": "M"}
    assert list(got) == ["z", "a", "m"]


async def test_r3_3_two_dependencies_are_a_dict_even_if_values_are_dicts() -> None:
    rec = Inputs()
    pipeline = Pipeline().add_stages(
        [
            st("left", rec.handler("left", {"x": 1})),
            st("right", rec.handler("right", None)),
            st("join", rec.handler("join"), ["right", "left"]),
        ]
    )
    with anyio.fail_after(LIMIT):
        await pipeline.execute()
    assert rec.got["join"] == {"right": "right", "left": {"x": 1}}
    assert list(rec.got["join"]) == ["right", "left"]


# -- R3.4 how handlers are called --------------------------------------------------------


@pytest.mark.parametrize(
    ("executor", "on_loop"), [("auto", False), ("thread", False), ("inline", True)]
)
async def test_r3_4_r11_2_sync_handler_runs_where_its_executor_says(
    executor: str, on_loop: bool
) -> None:
    """By default ("auto") a plain ``def`` handler runs in a worker thread;
    with ``executor="inline"`` on the event loop's thread. Either way it gets
    the real context and its input, and its result flows on (R3.2)."""
    loop_thread = threading.get_ident()
    seen: dict[str, Any] = {}

    def sync_handler(ctx: PipelineContext, data: Any) -> int:
        seen["thread"] = threading.get_ident()
        seen["ctx"] = ctx
        seen["data"] = data
        return int(data) + 1

    def sync_child(ctx: PipelineContext, data: Any) -> int:
        return int(data) * 10

    pipeline = Pipeline(PipelineConfig(executor=executor)).add_stages(
        [st("sync", sync_handler), st("child", sync_child, ["sync"])]
    )
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute(initial_input=4)
    assert result.status is PipelineStatus.COMPLETED
    assert (seen["thread"] == loop_thread) is on_loop
    assert seen["ctx"] is pipeline.context
    assert seen["data"] == 4
    assert result.stage_results["sync"].result == 5
    assert result.stage_results["child"].result == 50


async def test_r3_4_handler_called_with_ctx_and_input_positionally() -> None:
    calls: list[tuple[Any, ...]] = []

    async def handler(*args: Any, **kwargs: Any) -> None:
        calls.append((args, kwargs))

    pipeline = Pipeline().add_stage(st("h", handler))
    with anyio.fail_after(LIMIT):
        await pipeline.execute(initial_input="in")
    assert len(calls) == 1
    args, kwargs = calls[0]
    assert kwargs == {}
    assert len(args) == 2
    assert isinstance(args[0], PipelineContext)
    assert args[1] == "in"


async def test_r3_4_lambda_returning_coroutine_is_awaited() -> None:
    async def process_backend(ctx: PipelineContext, data: Any, backend: str) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        return {backend: data}

    async def compare(ctx: PipelineContext, results: dict[str, Any]) -> list[str]:
        return list(results)

    pipeline = (
        PipelineBuilder("parallel_comparison")
        .with_parallel(enabled=True, max_parallel=3)
        .add_stage("cirq", "Cirq Backend", lambda c, i: process_backend(c, i, "cirq"))
        .add_stage("qiskit", "Qiskit Backend", lambda c, i: process_backend(c, i, "qiskit"))
        .add_stage("lret", "LRET Backend", lambda c, i: process_backend(c, i, "lret"))
        .add_stage("compare", "Compare", compare, dependencies=["cirq", "qiskit", "lret"])
        .build()
    )
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute(initial_input=1)
    # asyncio runs in debug mode: a coroutine never awaited would also be reported.
    assert result.status is PipelineStatus.COMPLETED
    assert result.stage_results["cirq"].result == {"cirq": 1}
    assert result.stage_results["compare"].result == ["cirq", "qiskit", "lret"]


class _Later:
    """A bare awaitable that is not a coroutine."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, Any]:
        yield from anyio.lowlevel.checkpoint().__await__()
        return self.value


async def test_r3_4_sync_function_returning_awaitable_is_awaited() -> None:
    def handler(ctx: PipelineContext, data: Any) -> Awaitable[str]:
        return _Later(f"awaited {data}")

    pipeline = Pipeline().add_stage(st("h", handler))
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute(initial_input="x")
    assert result.stage_results["h"].result == "awaited x"


async def test_r3_4_stage_object_is_callable_like_its_handler() -> None:
    async def handler(ctx: PipelineContext, data: Any) -> int:
        return int(data) + 1

    stage = st("s", handler)
    assert await stage.handler(PipelineContext(), 1) == 2


# -- R3.5 get_stage_result ---------------------------------------------------------------


async def test_r3_5_get_stage_result_returns_finished_stage_result_else_none() -> None:
    seen: dict[str, Any] = {}
    hold = anyio.Event()

    async def load(ctx: PipelineContext, data: Any) -> dict[str, int]:
        return {"rows": 3}

    async def slow(ctx: PipelineContext, data: Any) -> str:
        await hold.wait()
        return "slow"

    async def process(ctx: PipelineContext, data: Any) -> str:
        seen["load"] = ctx.get_stage_result("load")
        seen["slow"] = ctx.get_stage_result("slow")  # still running
        seen["later"] = ctx.get_stage_result("later")  # not started
        seen["unknown"] = ctx.get_stage_result("no-such-stage")
        seen["self"] = ctx.get_stage_result("process")  # not finished yet
        hold.set()
        return "processed"

    async def later(ctx: PipelineContext, data: Any) -> None:
        seen["process_from_later"] = ctx.get_stage_result("process")

    pipeline = Pipeline(PipelineConfig(name="results", max_parallel=4))
    pipeline.add_stages(
        [
            st("load", load),
            st("slow", slow),
            st("process", process, ["load"]),
            st("later", later, ["process", "slow"]),
        ]
    )
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    load_result = seen["load"]
    assert isinstance(load_result, StageResult)
    assert load_result.stage_id == "load"
    assert load_result.status is StageStatus.COMPLETED
    assert load_result.result == {"rows": 3}
    assert load_result.is_success
    assert seen["slow"] is None
    assert seen["later"] is None
    assert seen["unknown"] is None
    assert seen["self"] is None
    from_later = seen["process_from_later"]
    assert isinstance(from_later, StageResult)
    assert from_later.result == "processed"


async def test_r3_5_get_stage_result_sees_a_failed_optional_stage() -> None:
    seen: dict[str, Any] = {}

    async def reporter(ctx: PipelineContext, data: Any) -> None:
        seen["boom"] = ctx.get_stage_result("boom")

    # One slot: boom (added first) ends before reporter starts.
    config = PipelineConfig(name="failed-result", max_parallel=1, retry=NO_RETRY)
    pipeline = Pipeline(config).add_stages(
        [st("boom", raises(ValueError, "bad input"), critical=False), st("reporter", reporter)]
    )
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.PARTIALLY_COMPLETED
    boom_result = seen["boom"]
    assert isinstance(boom_result, StageResult)
    assert boom_result.status is StageStatus.FAILED
    assert isinstance(boom_result.exception, ValueError)
