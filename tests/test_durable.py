"""R13 end to end: ``execute(..., store=, resume=)`` and ``run_sync(...)``
with real SQLite files: recording, resume, code versions, the cache, errors
before anything runs, tampering, and crash safety shown by child processes
SIGKILLed at seeded random moments and then resumed."""

from __future__ import annotations

import functools
import inspect
import os
import pathlib
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from helpers import make_pipeline, returns, st

import proxima
from proxima.data.pipeline import Pipeline, PipelineStatus, StageStatus
from proxima.data.pipeline.store import (
    MemoryStore,
    ResumeConflictError,
    RunNotFoundError,
    SQLiteStore,
    Store,
    StoreWarning,
    UnfingerprintableError,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        "store" not in inspect.signature(Pipeline.execute).parameters,
        reason="the engine does not take store= yet",
    ),
]

PACKAGE_ROOT = str(pathlib.Path(proxima.__file__).resolve().parent.parent)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


@pytest.fixture
def db(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "runs.db"


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, db: pathlib.Path) -> Store:
    return SQLiteStore(db) if request.param == "sqlite" else MemoryStore()


def counting(calls: list[str], name: str, fail: Callable[[], bool] = lambda: False) -> Any:
    """Appends ``name`` to ``calls``; returns its input tagged with its name,
    or raises while ``fail()`` says so."""

    async def handler(ctx: Any, data: Any) -> Any:
        calls.append(name)
        if fail():
            raise RuntimeError(f"{name} failed on purpose")
        return [name, data]

    return handler


def chain(calls: list[str], fail: Callable[[], bool] = lambda: False, **versions: str) -> Pipeline:
    """a -> b -> c -> d, with c failing while ``fail()`` is true."""
    return make_pipeline(
        st("a", counting(calls, "a"), version=versions.get("a")),
        st("b", counting(calls, "b"), ["a"], version=versions.get("b")),
        st("c", counting(calls, "c", fail), ["b"], version=versions.get("c")),
        st("d", counting(calls, "d"), ["c"], version=versions.get("d")),
    )


def restored(result: Any) -> dict[str, str | None]:
    return {sid: r.restored_from for sid, r in result.stage_results.items()}


# -- recording ----------------------------------------------------------------------------------


async def test_r13_2_execute_records_the_run_and_every_stage(store: Store) -> None:
    calls: list[str] = []
    pipeline = chain(calls)
    result = await pipeline.execute("in", store=store)
    assert result.status is PipelineStatus.COMPLETED
    assert result.run_id is not None
    [info] = store.runs()
    assert (info.run_id, info.pipeline_name, info.status) == (
        result.run_id,
        pipeline.name,
        "COMPLETED",
    )
    assert info.ended_at is not None
    assert info.started_at <= info.ended_at
    loaded = store.load(result.run_id)
    assert loaded.status is PipelineStatus.COMPLETED
    assert {sid: r.status for sid, r in loaded.stage_results.items()} == dict.fromkeys(
        "abcd", StageStatus.COMPLETED
    )
    assert loaded.stage_results["d"].result == result.stage_results["d"].result
    assert loaded.dependencies == result.dependencies
    assert restored(result) == dict.fromkeys("abcd")


async def test_r13_2_a_value_is_committed_before_its_dependents_start(db: pathlib.Path) -> None:
    seen: list[Any] = []

    def reads_the_file(ctx: Any, data: Any) -> Any:
        # a plain def: runs in a worker thread, so a blocking read is fine
        with sqlite3.connect(db) as conn:
            seen.extend(conn.execute("SELECT stage_id, status FROM stage_results"))
        return data

    pipeline = make_pipeline(st("up", returns({"rows": 3})), st("down", reads_the_file, ["up"]))
    result = await pipeline.execute(None, store=SQLiteStore(db))
    assert result.status is PipelineStatus.COMPLETED
    assert seen == [("up", "COMPLETED")]


def test_r13_2_run_sync_records_on_trio_and_asyncio(db: pathlib.Path) -> None:
    store = SQLiteStore(db)
    calls: list[str] = []
    first = chain(calls).run_sync("x", store=store, backend="trio")
    second = chain(calls).run_sync("x", store=store, resume=first.run_id)
    assert calls == ["a", "b", "c", "d"]  # the second run restored everything
    assert second.status is PipelineStatus.COMPLETED
    assert [r.run_id for r in store.runs()] == [second.run_id, first.run_id]


# -- resume -------------------------------------------------------------------------------------


async def test_r13_3_resume_restores_completed_stages_and_runs_the_rest(store: Store) -> None:
    calls: list[str] = []
    broken = True
    pipeline = chain(calls, fail=lambda: broken)
    first = await pipeline.execute("in", store=store)
    assert first.status is PipelineStatus.FAILED
    assert calls == ["a", "b", "c"]

    calls.clear()
    broken = False
    second = await pipeline.execute("in", store=store, resume=first.run_id)
    assert second.status is PipelineStatus.COMPLETED
    assert calls == ["c", "d"]
    for sid in "ab":
        r = second.stage_results[sid]
        assert (r.status, r.attempt_count, r.restored_from) == (
            StageStatus.COMPLETED,
            0,
            first.run_id,
        )
    assert second.stage_results["b"].result == first.stage_results["b"].result
    assert second.stage_results["c"].result == ["c", ["b", ["a", "in"]]]
    assert (second.stage_results["c"].restored_from, second.stage_results["c"].attempt_count) == (
        None,
        1,
    )
    assert store.runs()[0].resumed_from == first.run_id


async def test_r13_3_latest_resumes_the_newest_run_and_a_resume_can_be_resumed(
    store: Store,
) -> None:
    calls: list[str] = []
    failing = {"b"}
    pipeline = make_pipeline(
        st("a", counting(calls, "a")),
        st("b", counting(calls, "b", lambda: "b" in failing), ["a"]),
        st("c", counting(calls, "c", lambda: "c" in failing), ["b"]),
    )
    first = await pipeline.execute(1, store=store)
    failing = {"c"}
    second = await pipeline.execute(1, store=store, resume="latest")
    assert restored(second) == {"a": first.run_id, "b": None, "c": None}
    assert second.status is PipelineStatus.FAILED
    calls.clear()
    failing = set()
    third = await pipeline.execute(1, store=store, resume="latest")
    assert third.status is PipelineStatus.COMPLETED
    assert calls == ["c"]
    # a's value still comes from the run that computed it
    assert restored(third) == {"a": first.run_id, "b": second.run_id, "c": None}


async def test_r13_3_a_new_version_reruns_the_stage_and_everything_downstream(
    store: Store,
) -> None:
    calls: list[str] = []
    first = await chain(calls, b="1").execute("in", store=store)
    calls.clear()
    second = await chain(calls, b="2").execute("in", store=store, resume=first.run_id)
    assert calls == ["b", "c", "d"]
    assert restored(second) == {"a": first.run_id, "b": None, "c": None, "d": None}


def _compiled(body: str) -> Any:
    namespace: dict[str, Any] = {"__name__": "handlers"}
    exec(textwrap.dedent(body), namespace)
    return namespace["transform"]


async def test_r13_3_changed_handler_code_reruns_the_stage_and_downstream(store: Store) -> None:
    calls: list[str] = []
    v1 = _compiled("def transform(ctx, data):\n    return [x * 2 for x in data]\n")
    v2 = _compiled("def transform(ctx, data):\n    return [x * 3 for x in data]\n")

    def build(transform: Any) -> Pipeline:
        return make_pipeline(
            st("load", counting(calls, "load")),
            st("transform", transform, ["load"]),
            st("report", counting(calls, "report"), ["transform"]),
            st("side", counting(calls, "side"), ["load"]),
        )

    first = await build(v1).execute([1], store=store)
    calls.clear()
    same = await build(v1).execute([1], store=store, resume=first.run_id)
    assert calls == []
    assert same.stage_results["report"].result == first.stage_results["report"].result
    changed = await build(v2).execute([1], store=store, resume=first.run_id)
    assert calls == ["report"]  # transform ran too: it does not count calls
    assert restored(changed) == {
        "load": first.run_id,
        "transform": None,
        "report": None,
        "side": first.run_id,
    }
    assert changed.stage_results["transform"].result == ["loadloadload", [1, 1, 1]]
    assert changed.stage_results["transform"].attempt_count == 1


async def test_r13_3_a_changed_initial_input_reruns_the_roots(store: Store) -> None:
    calls: list[str] = []
    first = await chain(calls).execute({"day": 1}, store=store)
    calls.clear()
    same = await chain(calls).execute({"day": 1}, store=store, resume=first.run_id)
    assert calls == []
    assert same.status is PipelineStatus.COMPLETED
    other = await chain(calls).execute({"day": 2}, store=store, resume=first.run_id)
    assert calls == ["a", "b", "c", "d"]
    assert restored(other) == dict.fromkeys("abcd")


async def test_r13_3_an_unknown_run_is_refused_before_anything_runs(store: Store) -> None:
    calls: list[str] = []
    with pytest.raises(RunNotFoundError, match="'no-such-run'"):
        await chain(calls).execute("in", store=store, resume="no-such-run")
    with pytest.raises(RunNotFoundError, match="latest"):
        await chain(calls).execute("in", store=store, resume="latest")
    assert calls == []
    assert store.runs() == []


async def test_r13_5_a_second_resume_of_the_same_run_is_refused(store: Store) -> None:
    calls: list[str] = []
    first = await chain(calls, fail=lambda: True).execute("in", store=store)
    holding = anyio.Event()
    release = anyio.Event()

    async def holds(ctx: Any, data: Any) -> Any:
        holding.set()
        await release.wait()
        return ["c", data]

    resumer = make_pipeline(
        st("a", counting(calls, "a")),
        st("b", counting(calls, "b"), ["a"]),
        st("c", holds, ["b"], version="fixed"),
        st("d", counting(calls, "d"), ["c"]),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(resumer.execute, "in", store=store, resume=first.run_id))
        await holding.wait()
        calls.clear()
        with pytest.raises(ResumeConflictError, match="is resuming it already"):
            await chain(calls).execute("in", store=store, resume=first.run_id)
        assert calls == []
        release.set()
    again = await chain(calls).execute("in", store=store, resume=first.run_id)  # released
    assert again.status is PipelineStatus.COMPLETED


# -- cache --------------------------------------------------------------------------------------


async def test_r13_4_cache_reuses_results_across_runs_within_the_expiration(
    store: Store,
) -> None:
    calls: list[str] = []

    def build(expiration: float | None) -> Pipeline:
        return make_pipeline(
            st("load", counting(calls, "load")),
            st("slow", counting(calls, "slow"), ["load"], cache=True, cache_expiration=expiration),
        )

    first = await build(3600).execute("x", store=store)
    second = await build(3600).execute("x", store=store)  # no resume: the cache alone
    assert calls == ["load", "slow", "load"]
    assert second.stage_results["slow"].restored_from == first.run_id
    assert second.stage_results["slow"].attempt_count == 0
    assert second.stage_results["slow"].result == first.stage_results["slow"].result
    await anyio.sleep(0.05)  # older than the expiration below
    calls.clear()
    third = await build(0.01).execute("x", store=store)
    assert calls == ["load", "slow"]
    assert third.stage_results["slow"].restored_from is None
    calls.clear()
    await build(None).execute("y", store=store)  # another input: another key
    assert calls == ["load", "slow"]


async def test_r13_4_an_unfingerprintable_input_names_the_stage_before_anything_runs(
    store: Store,
) -> None:
    calls: list[str] = []
    pipeline = make_pipeline(
        st("load", counting(calls, "load")),
        st("slow", counting(calls, "slow"), ["load"], cache=True),
    )
    with pytest.raises(UnfingerprintableError, match=r"stage 'load'.*_thread\.lock"):
        await pipeline.execute({"lock": threading.Lock()}, store=store)
    assert calls == []
    # without a cached stage or resume= a key is not needed: the run is
    # recorded (the values holding the lock without them)
    with pytest.warns(StoreWarning, match="cannot be stored"):
        result = await chain(calls).execute({"lock": threading.Lock()}, store=store)
    assert result.status is PipelineStatus.COMPLETED
    assert store.runs()[0].status == "COMPLETED"


# -- integrity ----------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


async def test_r13_6_a_tampered_value_reruns_its_stage_with_a_warning(
    db: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    calls: list[str] = []
    store = SQLiteStore(db, key="secret")
    first = await chain(calls).execute("in", store=store)
    marker = tmp_path / "unpickled"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE stage_results SET value = ? WHERE stage_id = 'b'",
            (pickle.dumps(_Payload(marker)),),
        )
    calls.clear()
    with pytest.warns(StoreWarning, match="stage 'b'"):
        second = await chain(calls).execute("in", store=store, resume=first.run_id)
    assert not marker.exists()
    assert calls == ["b", "c", "d"]
    assert second.status is PipelineStatus.COMPLETED
    assert second.stage_results["d"].result == first.stage_results["d"].result


# -- crash safety -------------------------------------------------------------------------------

_FLOW = '''
"""A small diamond-shaped pipeline shared by the test and its child processes."""
import os, sys, anyio
from proxima.data.pipeline import Pipeline, PipelineConfig, RetryConfig, RetryStrategy, Stage

CALLS = []
HOLD = os.environ.get("FLOW_HOLD") == "1"
FAIL = set(os.environ.get("FLOW_FAIL", "").split(",")) - {""}
DELAY = 0.05

SHAPE = {
    "s0": (), "s1": ("s0",), "s2": ("s0",), "s3": ("s1", "s2"), "s4": ("s3",),
    "s5": ("s4",), "s6": ("s4",), "s7": ("s5", "s6"), "s8": ("s7",), "s9": ("s8",),
}

def step(sid):
    async def handler(ctx, data):
        CALLS.append(sid)
        print("run", sid, flush=True)
        if sid in FAIL:
            raise RuntimeError(sid)
        if HOLD:
            print("holding", flush=True)
            await anyio.sleep_forever()
        await anyio.sleep(DELAY)
        return [sid, data]
    return handler

def build():
    pipeline = Pipeline(PipelineConfig(name="flow", max_parallel=2,
                                       retry=RetryConfig(strategy=RetryStrategy.NONE)))
    for sid, deps in SHAPE.items():
        pipeline.add_stage(Stage(stage_id=sid, name=sid, handler=step(sid), dependencies=deps))
    return pipeline
'''

_RUN_FLOW = """
import sys, anyio
sys.path.insert(0, sys.argv[1])
import flow
from proxima.data.pipeline.store import SQLiteStore

resume = sys.argv[3] if sys.argv[3] != "-" else None
backend = sys.argv[4]
options = {"use_uvloop": True} if backend == "uvloop" else {}
store = SQLiteStore(sys.argv[2])
print("ready", flush=True)
flow.build().run_sync("input", store=store, resume=resume,
                      backend="trio" if backend == "trio" else "asyncio", backend_options=options)
print("finished", flush=True)
"""


@pytest.fixture
def flow(tmp_path: pathlib.Path) -> Iterator[Any]:
    (tmp_path / "flow.py").write_text(_FLOW)
    (tmp_path / "run_flow.py").write_text(_RUN_FLOW)
    sys.path.insert(0, str(tmp_path))
    sys.modules.pop("flow", None)
    try:
        # the same file as the children's: the same code versions
        import flow as module  # type: ignore[import-not-found]

        yield module
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("flow", None)


def _backend_arg(anyio_backend: Any) -> str:
    name, options = anyio_backend
    return "uvloop" if options.get("use_uvloop") else name


def _run_and_kill(
    tmp_path: pathlib.Path, db: pathlib.Path, resume: str, backend: str, delay: float
) -> list[str]:
    """A child runs the flow and is SIGKILLed ``delay`` s after it is ready;
    returns what it printed."""
    with subprocess.Popen(
        [sys.executable, str(tmp_path / "run_flow.py"), str(tmp_path), str(db), resume, backend],
        stdout=subprocess.PIPE,
        env=child_env(),
        text=True,
    ) as proc:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # the run is recorded once a stage runs
            lines.append(line.strip())
            if line.startswith(("run ", "finished")):
                break
        time.sleep(delay)  # the moment of the kill: seeded, not a synchronisation
        proc.send_signal(signal.SIGKILL)
        lines += proc.stdout.read().splitlines()
    return lines


def _completed_by_chain(db: pathlib.Path, run_id: str) -> set[str]:
    """The stages a resume of ``run_id`` may restore: for each stage, its row
    in the newest run of the resume chain that holds one."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        decided: dict[str, str] = {}
        current: str | None = run_id
        while current is not None:
            for sid, status in conn.execute(
                "SELECT stage_id, status FROM stage_results WHERE run_id = ?", (current,)
            ):
                decided.setdefault(sid, status)
            row = conn.execute("SELECT resumed_from FROM runs WHERE run_id = ?", (current,))
            current = row.fetchone()[0]
    return {sid for sid, status in decided.items() if status == "COMPLETED"}


async def test_r13_5_sigkilled_runs_resume_with_only_unfinished_stages_rerun(
    tmp_path: pathlib.Path, db: pathlib.Path, flow: Any, anyio_backend: Any
) -> None:
    backend = _backend_arg(anyio_backend)
    rng = random.Random(f"r13.5-{backend}")
    # a fresh run killed, then a resume of it killed too
    for resume, latest_kill in (("-", 0.35), ("latest", 0.2)):
        delay = rng.uniform(0.0, latest_kill)
        printed = await anyio.to_thread.run_sync(
            _run_and_kill, tmp_path, db, resume, backend, delay
        )

    store = SQLiteStore(db)
    crashed = store.runs()[0]
    if "finished" not in printed:
        assert crashed.status is None  # unfinished: its process died
    done = _completed_by_chain(db, crashed.run_id)

    flow.CALLS.clear()
    result = await flow.build().execute("input", store=store, resume="latest")
    assert result.status is PipelineStatus.COMPLETED
    assert sorted(flow.CALLS) == sorted(set(flow.SHAPE) - done)
    assert {sid for sid, r in result.stage_results.items() if r.restored_from} == done
    fresh = await flow.build().execute("input")
    assert {s: r.result for s, r in result.stage_results.items()} == {
        s: r.result for s, r in fresh.stage_results.items()
    }


async def test_r13_5_two_processes_resuming_one_run_the_second_is_refused(
    tmp_path: pathlib.Path, db: pathlib.Path, flow: Any, anyio_backend: Any
) -> None:
    store = SQLiteStore(db)
    flow.FAIL = {"s4"}
    try:
        failed = await flow.build().execute("input", store=store)
    finally:
        flow.FAIL = set()
    assert failed.status is PipelineStatus.FAILED

    def start_holder() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(tmp_path / "run_flow.py"),
                str(tmp_path),
                str(db),
                failed.run_id or "",
                _backend_arg(anyio_backend),
            ],
            stdout=subprocess.PIPE,
            env=child_env(FLOW_HOLD="1"),
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:  # s4 runs again there, and holds
            if line.strip() == "holding":
                return proc
        raise AssertionError("the child never reached its holding stage")

    holder = await anyio.to_thread.run_sync(start_holder)
    try:
        flow.CALLS.clear()
        with pytest.raises(ResumeConflictError, match=f"process {holder.pid}"):
            await flow.build().execute("input", store=store, resume=failed.run_id)
        assert flow.CALLS == []
    finally:
        holder.send_signal(signal.SIGKILL)
        await anyio.to_thread.run_sync(holder.wait)
        assert holder.stdout is not None
        holder.stdout.close()
    result = await flow.build().execute("input", store=store, resume=failed.run_id)
    assert result.status is PipelineStatus.COMPLETED
    assert sorted(flow.CALLS) == ["s4", "s5", "s6", "s7", "s8", "s9"]


async def test_r13_7_summary_and_html_report_show_restored_stages(tmp_path: pathlib.Path) -> None:
    failing = {"on": True}

    async def first(ctx: Any, data: Any) -> int:
        return 1

    async def second(ctx: Any, data: Any) -> int:
        if failing["on"]:
            raise ValueError("not yet")
        return int(data) + 1

    def build() -> Pipeline:
        return make_pipeline(st("first", first), st("second", second, ["first"]), name="shown")

    store = SQLiteStore(tmp_path / "runs.db")
    with anyio.fail_after(10):
        old = await build().execute(store=store)
        failing["on"] = False
        new = await build().execute(store=store, resume=old.run_id)
    summary = new.summary(full=True)
    assert "1 restored from a store, not run again" in summary
    assert f"restored from run {old.run_id}" in summary
    assert f"COMPLETED (restored from run {old.run_id})" in new.to_html()


async def test_r13_2_a_store_that_cannot_write_never_fails_the_run(tmp_path: pathlib.Path) -> None:
    """Another process holds the database's write lock past the store's busy
    timeout while a stage completes: the run still completes, the lost
    writes are reported in ``metadata["store_errors"]``."""
    path = tmp_path / "runs.db"
    store = SQLiteStore(path, timeout=0.05)
    blocker = sqlite3.connect(path, isolation_level=None)

    async def lock_the_file(ctx: Any, data: Any) -> str:
        blocker.execute("BEGIN EXCLUSIVE")  # another writer, holding on
        return "locked"

    async def after(ctx: Any, data: Any) -> str:
        return f"{data}, still ran"

    pipeline = make_pipeline(st("lock", lock_the_file), st("after", after, ["lock"]), name="busy")
    try:
        with anyio.fail_after(10):
            result = await pipeline.execute(store=store)
    finally:
        if blocker.in_transaction:
            blocker.rollback()
        blocker.close()
    assert result.status is PipelineStatus.COMPLETED
    assert result.stage_results["after"].result == "locked, still ran"
    assert result.metadata["store_errors"]
