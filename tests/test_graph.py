"""R8.2 to R8.4: duplicate ids, unknown and self dependencies, cycles (with their
full path), checked by ``validate()``, ``PipelineBuilder.build()`` and at the
start of ``execute()`` before any stage runs; stages may be added in any
order. Property tests: random DAGs validate, a back edge is always reported
as a real cycle."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxima.data.pipeline import (
    Pipeline,
    PipelineBuilder,
    PipelineConfig,
    PipelineContext,
    PipelineException,
    PipelineStatus,
    PipelineValidationError,
    Stage,
    StageStatus,
    run_pipeline,
)

pytestmark = pytest.mark.anyio

CYCLE_RE = re.compile(r"[A-Za-z_][\w]*(?: -> [A-Za-z_][\w]*)+")


class Recorder:
    """Handlers that note every call, so a test can prove none ran."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def handler(self, sid: str) -> Any:
        async def run(ctx: PipelineContext, data: Any) -> str:
            self.calls.append(sid)
            return sid

        return run

    def stage(self, sid: str, *deps: str) -> Stage:
        return Stage(stage_id=sid, name=sid.upper(), handler=self.handler(sid), dependencies=deps)


def _cycle_path(message: str) -> list[str]:
    match = CYCLE_RE.search(message)
    assert match is not None, f"no 'a -> b -> a' path in {message!r}"
    return match.group(0).split(" -> ")


def _assert_real_cycle(path: list[str], deps: dict[str, set[str]]) -> None:
    """``path`` is closed and every step is an edge, all in one direction."""
    assert len(path) >= 3, path
    assert path[0] == path[-1], path
    assert len(set(path[:-1])) == len(path) - 1, f"path repeats a stage: {path}"
    pairs = list(itertools.pairwise(path))
    forward = all(a in deps[b] for a, b in pairs)  # "a runs before b"
    backward = all(b in deps[a] for a, b in pairs)  # "a depends on b"
    assert forward or backward, f"{path} is not a cycle of {deps}"


# -- R8.2 duplicates ---------------------------------------------------------------------


async def test_r8_2_duplicate_add_stage_raises_and_adds_nothing() -> None:
    rec = Recorder()
    pipeline = Pipeline(PipelineConfig(name="dup"))
    pipeline.add_stage(rec.stage("a"))
    impostor = Stage(stage_id="a", name="Impostor", handler=rec.handler("impostor"))
    with pytest.raises(PipelineValidationError) as info:
        pipeline.add_stage(impostor)
    assert "'a'" in str(info.value) or " a " in f" {info.value} "
    assert isinstance(info.value, PipelineException)
    assert isinstance(info.value, ValueError)
    assert list(pipeline.stage_statuses()) == ["a"]
    result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    assert rec.calls == ["a"]
    assert result.stage_results["a"].stage_name == "A"


async def test_r8_2_add_stages_is_all_or_nothing_on_duplicate_of_existing() -> None:
    rec = Recorder()
    pipeline = Pipeline(PipelineConfig(name="dup"))
    pipeline.add_stage(rec.stage("a"))
    with pytest.raises(PipelineValidationError):
        pipeline.add_stages([rec.stage("b"), rec.stage("c"), rec.stage("a")])
    assert list(pipeline.stage_statuses()) == ["a"]
    result = await pipeline.execute()
    assert list(result.stage_results) == ["a"]
    assert rec.calls == ["a"]


def test_r8_2_add_stages_is_all_or_nothing_on_duplicate_within_batch() -> None:
    rec = Recorder()
    pipeline = Pipeline()
    with pytest.raises(PipelineValidationError, match="x"):
        pipeline.add_stages([rec.stage("w"), rec.stage("x"), rec.stage("y"), rec.stage("x")])
    assert pipeline.stage_statuses() == {}
    pipeline.add_stages([rec.stage("w"), rec.stage("x")])
    assert list(pipeline.stage_statuses()) == ["w", "x"]


def test_r8_2_add_stages_is_all_or_nothing_on_non_stage_item() -> None:
    rec = Recorder()
    pipeline = Pipeline()
    with pytest.raises(TypeError):
        pipeline.add_stages([rec.stage("a"), "b"])  # type: ignore[list-item]
    assert pipeline.stage_statuses() == {}


def test_r8_2_builder_duplicate_raises_at_the_call() -> None:
    rec = Recorder()
    builder = PipelineBuilder("dup").add_stage("a", "A", rec.handler("a"))
    with pytest.raises(PipelineValidationError, match="a"):
        builder.add_stage("a", "Again", rec.handler("again"))
    assert list(builder.build().stage_statuses()) == ["a"]


# -- R8.3 unknown / self dependency, cycles ----------------------------------------------


def test_r8_3_validate_reports_unknown_dependency_naming_stage_and_dep() -> None:
    rec = Recorder()
    pipeline = Pipeline().add_stages([rec.stage("load"), rec.stage("process", "lod")])
    with pytest.raises(PipelineValidationError) as info:
        pipeline.validate()
    assert "process" in str(info.value)
    assert "lod" in str(info.value)


def test_r8_3_validate_reports_self_dependency_naming_stage() -> None:
    rec = Recorder()
    pipeline = Pipeline().add_stages([rec.stage("a"), rec.stage("loop", "a", "loop")])
    with pytest.raises(PipelineValidationError) as info:
        pipeline.validate()
    assert "loop" in str(info.value)


def test_r8_3_validate_reports_cycle_with_full_path() -> None:
    rec = Recorder()
    stages = [rec.stage("root"), rec.stage("a", "c"), rec.stage("b", "a"), rec.stage("c", "b")]
    pipeline = Pipeline().add_stages(stages)
    with pytest.raises(PipelineValidationError) as info:
        pipeline.validate()
    path = _cycle_path(str(info.value))
    assert set(path) == {"a", "b", "c"}
    _assert_real_cycle(path, {s.stage_id: set(s.dependencies) for s in stages})


def test_r8_3_validate_reports_two_stage_cycle() -> None:
    rec = Recorder()
    stages = [rec.stage("a", "b"), rec.stage("b", "a")]
    with pytest.raises(PipelineValidationError) as info:
        Pipeline().add_stages(stages).validate()
    path = _cycle_path(str(info.value))
    _assert_real_cycle(path, {s.stage_id: set(s.dependencies) for s in stages})


def test_r8_3_validate_accepts_valid_graph_and_returns_none() -> None:
    rec = Recorder()
    pipeline = Pipeline().add_stages([rec.stage("a"), rec.stage("b", "a"), rec.stage("c", "a")])
    assert pipeline.validate() is None  # type: ignore[func-returns-value]


def test_r8_3_validate_sees_stages_added_after_a_successful_validate() -> None:
    rec = Recorder()
    pipeline = Pipeline().add_stage(rec.stage("a"))
    pipeline.validate()
    pipeline.add_stage(rec.stage("b", "ghost"))
    with pytest.raises(PipelineValidationError, match="ghost"):
        pipeline.validate()


@pytest.mark.parametrize(
    ("stages", "needle"),
    [
        ([("a", ()), ("b", ("missing",))], "missing"),
        ([("a", ("a",))], "a"),
        ([("a", ("c",)), ("b", ("a",)), ("c", ("b",))], " -> "),
    ],
    ids=["unknown", "self", "cycle"],
)
def test_r8_3_builder_build_rejects_bad_graph(
    stages: list[tuple[str, tuple[str, ...]]], needle: str
) -> None:
    rec = Recorder()
    builder = PipelineBuilder("bad")
    for sid, deps in stages:
        builder.add_stage(sid, sid.upper(), rec.handler(sid), dependencies=list(deps))
    with pytest.raises(PipelineValidationError) as info:
        builder.build()
    assert needle in str(info.value)
    assert rec.calls == []


BAD_GRAPHS = {
    "unknown": [("ok", ()), ("a", ()), ("b", ("a", "nope"))],
    "self": [("ok", ()), ("a", ()), ("b", ("b",))],
    "cycle": [("ok", ()), ("a", ("c",)), ("b", ("a",)), ("c", ("b",))],
}


@pytest.mark.parametrize("kind", list(BAD_GRAPHS))
async def test_r8_3_execute_rejects_bad_graph_before_any_stage_runs(kind: str) -> None:
    rec = Recorder()
    pipeline = Pipeline()
    # add_stage never validates the graph: the error must come from execute()
    pipeline.add_stages([rec.stage(sid, *deps) for sid, deps in BAD_GRAPHS[kind]])
    with pytest.raises(PipelineValidationError) as info:
        await pipeline.execute(initial_input=1)
    assert rec.calls == [], "a stage ran although the graph is invalid"
    if kind == "cycle":
        _assert_real_cycle(
            _cycle_path(str(info.value)),
            {sid: set(deps) for sid, deps in BAD_GRAPHS[kind]},
        )
    assert pipeline.is_running is False


@pytest.mark.parametrize("kind", list(BAD_GRAPHS))
async def test_r8_3_run_pipeline_rejects_bad_graph_before_any_stage_runs(kind: str) -> None:
    rec = Recorder()
    with pytest.raises(PipelineValidationError):
        await run_pipeline([rec.stage(sid, *deps) for sid, deps in BAD_GRAPHS[kind]])
    assert rec.calls == []


# -- R8.4 any order ----------------------------------------------------------------------


async def test_r8_4_dependency_added_after_the_stage_that_needs_it() -> None:
    order: list[str] = []

    async def produce(ctx: PipelineContext, data: Any) -> int:
        order.append("produce")
        return 21

    async def consume(ctx: PipelineContext, data: Any) -> int:
        order.append("consume")
        return int(data) * 2

    pipeline = Pipeline()
    pipeline.add_stage(Stage(stage_id="consume", name="C", handler=consume, dependencies=["mid"]))
    pipeline.add_stage(Stage(stage_id="mid", name="M", handler=lambda c, x: x, dependencies=["p"]))
    with pytest.raises(PipelineValidationError, match="'p'"):
        pipeline.validate()  # not yet added: unknown for now
    pipeline.add_stage(Stage(stage_id="p", name="P", handler=produce))
    pipeline.validate()
    result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    assert order == ["produce", "consume"]
    assert result.stage_results["consume"].result == 42
    assert list(result.stage_results) == ["consume", "mid", "p"]


def test_r8_4_builder_accepts_dependency_added_later() -> None:
    rec = Recorder()
    pipeline = (
        PipelineBuilder("later")
        .add_stage("b", "B", rec.handler("b"), dependencies=["a"])
        .add_stage("a", "A", rec.handler("a"))
        .build()
    )
    assert pipeline.stage_statuses() == {"b": StageStatus.PENDING, "a": StageStatus.PENDING}


# -- properties --------------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn, min_size: int = 1) -> tuple[list[str], dict[str, list[str]]]:
    """A random DAG over ``s0..sN`` (edges only from a hidden topological rank
    to a later one), its stages listed in a random insertion order."""
    n = draw(st.integers(min_value=min_size, max_value=12))
    ranked = draw(st.permutations([f"s{i}" for i in range(n)]))
    deps: dict[str, list[str]] = {}
    for j, sid in enumerate(ranked):
        earlier = ranked[:j]
        chosen = draw(st.lists(st.sampled_from(earlier), unique=True)) if earlier else []
        deps[sid] = chosen
    order = draw(st.permutations(ranked))
    return list(order), deps


def _build(order: list[str], deps: dict[str, list[str]]) -> Pipeline:
    rec = Recorder()
    return Pipeline().add_stages([rec.stage(sid, *deps[sid]) for sid in order])


def _ancestors(sid: str, deps: dict[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(deps[sid])
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(deps[dep])
    return seen


@given(dags())
def test_r8_3_property_random_dag_validates(dag: tuple[list[str], dict[str, list[str]]]) -> None:
    order, deps = dag
    _build(order, deps).validate()
    builder = PipelineBuilder("dag")
    for sid in order:
        builder.add_stage(sid, sid, lambda c, x: x, dependencies=deps[sid])
    builder.build()


@given(dags(min_size=2), st.data())
def test_r8_3_property_back_edge_reports_a_real_cycle(
    dag: tuple[list[str], dict[str, list[str]]], data: st.DataObject
) -> None:
    order, deps = dag
    pairs = [(sid, above) for sid in order for above in sorted(_ancestors(sid, deps))]
    if not pairs:  # no edge at all: make one
        first, second = order[0], order[1]
        deps[second] = [first]
        pairs = [(second, first)]
    descendant, ancestor = data.draw(st.sampled_from(pairs))
    deps[ancestor] = [*deps[ancestor], descendant]  # the back edge
    with pytest.raises(PipelineValidationError) as info:
        _build(order, deps).validate()
    path = _cycle_path(str(info.value))
    _assert_real_cycle(path, {sid: set(d) for sid, d in deps.items()})
