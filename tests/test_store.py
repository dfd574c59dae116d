"""R13 store layer, tested directly against ``SQLiteStore`` (real files in
``tmp_path``) and ``MemoryStore``: records, lookups, loads, keys, signing,
codecs, the resume claim (also across real processes), crash safety of the
file under SIGKILL, and that no store call blocks the event loop."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import functools
import gc
import json
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
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

import anyio
import attrs
import pytest

import proxima
from proxima.data.pipeline import (
    CancellationReason,
    PipelineException,
    PipelineResult,
    PipelineStatus,
    Stage,
    StageResult,
    StageStatus,
)
from proxima.data.pipeline.store import (
    ENV_KEY,
    JsonCodec,
    Lookup,
    MemoryStore,
    PickleCodec,
    Restored,
    ResumeConflictError,
    RunJournal,
    RunNotFoundError,
    SQLiteStore,
    Store,
    StoreError,
    StoreWarning,
    UnfingerprintableError,
    code_version,
    fingerprint,
    graph_fingerprint,
    register_fingerprint,
    stage_keys,
    stage_version,
)
from proxima.data.pipeline.store.keys import lookups_for

pytestmark = pytest.mark.anyio

#: The folder holding the ``proxima`` package under test, for child processes.
PACKAGE_ROOT = str(pathlib.Path(proxima.__file__).resolve().parent.parent)


# -- builders -------------------------------------------------------------------------------------


def sr(
    sid: str,
    status: StageStatus = StageStatus.COMPLETED,
    result: Any = None,
    **kw: Any,
) -> StageResult:
    """A terminal stage result as the engine would record it."""
    kw.setdefault("start_time", 100.0)
    kw.setdefault("end_time", 101.0)
    kw.setdefault("attempt_count", 1)
    return StageResult(stage_id=sid, stage_name=sid.upper(), status=status, result=result, **kw)


def pr(
    *results: StageResult,
    status: PipelineStatus = PipelineStatus.COMPLETED,
    deps: dict[str, tuple[str, ...]] | None = None,
    **kw: Any,
) -> PipelineResult:
    """The run's final result, as handed to ``finish()``."""
    return PipelineResult(
        pipeline_id=kw.pop("pipeline_id", "pid-1"),
        pipeline_name=kw.pop("pipeline_name", "etl"),
        status=status,
        stage_results={r.stage_id: r for r in results},
        start_time=kw.pop("start_time", 99.0),
        end_time=kw.pop("end_time", 102.0),
        dependencies=deps if deps is not None else {r.stage_id: () for r in results},
        **kw,
    )


async def begin(
    store: Store,
    run_id: str | None = None,
    *,
    resume: str | None = None,
    pipeline: str = "etl",
    deps: dict[str, tuple[str, ...]] | None = None,
) -> RunJournal:
    return await store.begin_run(
        run_id=run_id or uuid.uuid4().hex,
        pipeline_name=pipeline,
        graph_fingerprint="graph-1",
        started_at=time.time(),
        resume=resume,
        dependencies=deps,
    )


def want(sid: str, key: str, *deps: str, resume: bool = True, cache: bool = False) -> Lookup:
    return Lookup(stage_id=sid, key=key, resume=resume, cache=cache, dependencies=deps)


async def completed_run(
    store: Store, run_id: str, values: dict[str, Any], *, pipeline: str = "etl"
) -> None:
    """A finished run in which every stage of ``values`` COMPLETED with its
    value, each stage keyed ``"k-<id>"``."""
    journal = await begin(store, run_id, pipeline=pipeline)
    results = [sr(sid, result=value) for sid, value in values.items()]
    for r in results:
        await journal.record_stage(r, f"k-{r.stage_id}")
    await journal.finish(pr(*results, pipeline_name=pipeline))


StoreFactory = Callable[..., Store]


@pytest.fixture(params=["sqlite", "memory"])
def make_store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> StoreFactory:
    """Stores of one kind; for SQLite every call opens the same file."""

    def make(**kw: Any) -> Store:
        if request.param == "sqlite":
            return SQLiteStore(tmp_path / "runs.db", **kw)
        return MemoryStore(**kw)

    return make


@pytest.fixture
def db(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "runs.db"


def raw(path: pathlib.Path) -> sqlite3.Connection:
    """A plain connection to the store file, to look at or tamper with it."""
    return sqlite3.connect(path, isolation_level=None)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


# -- round trips ----------------------------------------------------------------------------------


async def test_r13_2_record_then_load_gives_the_run_back(make_store: StoreFactory) -> None:
    store = make_store()
    journal = await begin(store, "run-1", deps={"a": (), "b": ("a",), "c": ("b",)})
    assert journal.run_id == "run-1"
    assert journal.resumed_from is None
    a = sr("a", result={"rows": [1, 2, 3]}, attempt_count=2, metrics={"rows": 3})
    b = sr(
        "b",
        StageStatus.FAILED,
        error="ValueError: bad row",
        exception=ValueError("bad row"),
        start_time=101.0,
        end_time=103.5,
        attempt_count=3,
    )
    c = sr(
        "c",
        StageStatus.SKIPPED,
        start_time=None,
        end_time=103.6,
        attempt_count=0,
        critical=False,
    )
    for r in (a, b, c):
        await journal.record_stage(r, f"k-{r.stage_id}")
    final = pr(
        a,
        b,
        c,
        status=PipelineStatus.FAILED,
        deps={"a": (), "b": ("a",), "c": ("b",)},
        cancellation_reason=CancellationReason.ERROR,
        metadata={"note": "nightly", "count": 3},
    )
    await journal.finish(final)

    loaded = store.load("run-1")
    assert loaded.run_id == "run-1"
    assert loaded.pipeline_id == "pid-1"
    assert loaded.pipeline_name == "etl"
    assert loaded.status is PipelineStatus.FAILED
    assert loaded.cancellation_reason is CancellationReason.ERROR
    assert (loaded.start_time, loaded.end_time) == (99.0, 102.0)
    assert loaded.metadata == {"note": "nightly", "count": 3}
    assert loaded.dependencies == {"a": (), "b": ("a",), "c": ("b",)}
    assert list(loaded.stage_results) == ["a", "b", "c"]
    la, lb, lc = (loaded.stage_results[s] for s in "abc")
    assert (la.status, la.result, la.attempt_count, la.metrics) == (
        StageStatus.COMPLETED,
        {"rows": [1, 2, 3]},
        2,
        {"rows": 3},
    )
    assert la.stage_name == "A"
    assert (lb.status, lb.error, lb.attempt_count) == (
        StageStatus.FAILED,
        "ValueError: bad row",
        3,
    )
    assert (lb.start_time, lb.end_time) == (101.0, 103.5)
    assert lb.result is None
    assert lb.exception is None  # exceptions come back as text only
    assert (lc.status, lc.start_time, lc.critical) == (StageStatus.SKIPPED, None, False)


async def test_r13_7_runs_lists_newest_first_by_pipeline_with_limit(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    for i in range(4):
        await completed_run(store, f"etl-{i}", {"a": i})
    await completed_run(store, "other-0", {"a": 0}, pipeline="other")
    assert [r.run_id for r in store.runs()] == ["other-0", "etl-3", "etl-2", "etl-1", "etl-0"]
    assert [r.run_id for r in store.runs("etl", limit=2)] == ["etl-3", "etl-2"]
    info = store.runs("other")[0]
    assert (info.pipeline_name, info.graph_fingerprint, info.status) == (
        "other",
        "graph-1",
        "COMPLETED",
    )
    assert info.ended_at == 102.0
    assert info.resumed_from is None
    with pytest.raises(ValueError, match="limit"):
        store.runs(limit=0)


def test_r13_7_plain_methods_work_outside_any_event_loop(db: pathlib.Path) -> None:
    store = SQLiteStore(db)  # made outside a loop
    assert store.runs() == []
    anyio.run(completed_run, store, "r1", {"a": 1})
    anyio.run(completed_run, store, "r2", {"a": 2}, backend="trio")
    assert [r.run_id for r in store.runs()] == ["r2", "r1"]
    assert store.load("r1").stage_results["a"].result == 1


async def test_r13_7_load_of_an_unfinished_run_shows_what_was_recorded(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    journal = await begin(store, "died", deps={"a": (), "b": ("a",)})
    await journal.record_stage(sr("a", result="A"), "k-a")
    # no finish(): the process "died" here
    loaded = store.load("died")
    assert loaded.status is PipelineStatus.RUNNING
    assert loaded.metadata == {"store": {"finished": False}}
    assert loaded.stage_results["a"].result == "A"
    assert loaded.stage_results["b"].status is StageStatus.PENDING
    assert loaded.dependencies == {"a": (), "b": ("a",)}
    assert store.runs()[0].status is None


async def test_r13_3_unknown_run_ids_are_refused_before_anything_is_written(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    with pytest.raises(RunNotFoundError, match="'nope'") as info:
        await begin(store, "r1", resume="nope")
    assert isinstance(info.value, PipelineException)
    assert isinstance(info.value, LookupError)
    await completed_run(store, "other-run", {"a": 1}, pipeline="other")
    with pytest.raises(RunNotFoundError, match="no run of pipeline 'etl'"):
        await begin(store, "r2", resume="latest")
    assert [r.run_id for r in store.runs()] == ["other-run"]  # nothing written
    with pytest.raises(RunNotFoundError):
        store.load("nope")


async def test_r13_3_latest_is_the_newest_run_of_this_pipeline(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    await completed_run(store, "etl-old", {"a": 1})
    await completed_run(store, "etl-new", {"a": 2})
    await completed_run(store, "other-newest", {"a": 3}, pipeline="other")
    journal = await begin(store, resume="latest")
    assert journal.resumed_from == "etl-new"
    restored = await journal.lookup([want("a", "k-a")])
    assert restored == {"a": Restored("a", 2, "etl-new", "resume")}
    await journal.finish(pr())


async def test_begin_run_names_a_bad_argument(make_store: StoreFactory) -> None:
    store = make_store()
    with pytest.raises(TypeError, match="run_id"):
        await store.begin_run(
            run_id="", pipeline_name="p", graph_fingerprint="g", started_at=1.0, resume=None
        )
    with pytest.raises(TypeError, match="resume"):
        await store.begin_run(
            run_id="r",
            pipeline_name="p",
            graph_fingerprint="g",
            started_at=1.0,
            resume=3,  # type: ignore[arg-type]
        )


def test_sqlite_store_refuses_a_path_that_is_not_a_file() -> None:
    with pytest.raises(ValueError, match="MemoryStore"):
        SQLiteStore(":memory:")
    with pytest.raises(TypeError, match="path"):
        SQLiteStore(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore("x.db", synchronous="OFF")  # type: ignore[arg-type]


def test_a_file_that_is_not_a_store_gives_a_store_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"not a database at all, just some text" * 100)
    with pytest.raises(StoreError, match=r"notes\.txt"):
        SQLiteStore(path).runs()


# -- resume and cache lookups ---------------------------------------------------------------------


async def test_r13_3_resume_restores_completed_stages_with_matching_keys(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    journal = await begin(store, "first")
    await journal.record_stage(sr("a", result=[1, 2]), "k-a")
    await journal.record_stage(sr("b", StageStatus.FAILED, error="boom"), "k-b")
    await journal.record_stage(sr("c", result="C"), "k-c-old")
    await journal.finish(pr(status=PipelineStatus.FAILED))

    second = await begin(store, "second", resume="first")
    assert second.resumed_from == "first"
    restored = await second.lookup(
        [want("a", "k-a"), want("b", "k-b", "a"), want("c", "k-c-new", "a"), want("d", "k-d")]
    )
    # b failed there, c's key changed (code or upstream), d never ran
    assert restored == {"a": Restored("a", [1, 2], "first", "resume")}
    await second.record_stage(sr("a", result=[1, 2], attempt_count=0, restored_from="first"), "k-a")
    await second.record_stage(sr("b", result="B"), "k-b")
    await second.finish(pr(status=PipelineStatus.COMPLETED))
    loaded = store.load("second")
    assert loaded.stage_results["a"].restored_from == "first"
    assert loaded.stage_results["a"].attempt_count == 0
    assert loaded.stage_results["a"].result == [1, 2]  # read from the run that computed it
    assert store.runs()[0].resumed_from == "first"


async def test_r13_3_a_stage_is_restored_only_if_everything_upstream_is(
    db: pathlib.Path,
) -> None:
    store = SQLiteStore(db, key="secret")
    await completed_run(store, "first", {"a": 1, "b": 2, "c": 3})
    with raw(db) as conn:  # a's value is damaged: a runs again, so b and c do too
        conn.execute("UPDATE stage_results SET value = value || x'00' WHERE stage_id = 'a'")
    journal = await begin(store, resume="first")
    with pytest.warns(StoreWarning, match="stage 'a'"):
        restored = await journal.lookup(
            [want("c", "k-c", "b"), want("b", "k-b", "a"), want("a", "k-a")]
        )
    assert restored == {}
    await journal.finish(pr())


async def test_r13_3_a_resumed_run_can_be_resumed_and_values_come_from_their_origin(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    await completed_run(store, "A", {"s1": "one", "s2": "two"})
    b = await begin(store, "B", resume="A")
    assert await b.lookup([want("s1", "k-s1")]) == {"s1": Restored("s1", "one", "A", "resume")}
    del b  # B "dies" before doing anything else: no finish, no row for s2
    gc.collect()
    c = await begin(store, "C", resume="B")
    restored = await c.lookup([want("s1", "k-s1"), want("s2", "k-s2", "s1")])
    assert restored == {
        "s1": Restored("s1", "one", "A", "resume"),  # through B's record of it
        "s2": Restored("s2", "two", "A", "resume"),  # B holds none: from the run B resumed
    }
    await c.finish(pr())


async def test_r13_4_cache_reuses_a_result_of_any_earlier_run(make_store: StoreFactory) -> None:
    store = make_store()
    await completed_run(store, "old", {"a": "cached"}, pipeline="elsewhere")
    journal = await begin(store, "new")
    restored = await journal.lookup([want("a", "k-a", resume=False, cache=True)])
    assert restored == {"a": Restored("a", "cached", "old", "cache")}
    assert await journal.lookup([want("a", "k-other", resume=False, cache=True)]) == {}
    assert await journal.lookup([want("a", "k-a", resume=False, cache=False)]) == {}
    await journal.finish(pr())


async def test_r13_4_cache_expiration_bounds_the_age(make_store: StoreFactory) -> None:
    store = make_store()
    await completed_run(store, "old", {"a": "cached"})
    recorded = time.time()
    journal = await begin(store, "new")
    fresh = Lookup("a", "k-a", resume=False, cache=True, max_age=3600.0)
    assert (await journal.lookup([fresh]))["a"].value == "cached"
    await anyio.sleep(max(0.0, recorded + 0.05 - time.time()))  # the row grows older than 10 ms
    stale = Lookup("a", "k-a", resume=False, cache=True, max_age=0.01)
    assert await journal.lookup([stale]) == {}
    await journal.finish(pr())


async def test_r13_4_the_cache_takes_the_newest_match(make_store: StoreFactory) -> None:
    store = make_store()
    await completed_run(store, "r1", {"a": "first"})
    await completed_run(store, "r2", {"a": "second"})
    journal = await begin(store)
    restored = await journal.lookup([want("a", "k-a", resume=False, cache=True)])
    assert restored["a"].from_run_id == "r2"
    await journal.finish(pr())


async def test_r13_3_restored_records_cost_no_write_until_the_next_one(db: pathlib.Path) -> None:
    store = SQLiteStore(db)
    await completed_run(store, "first", {"a": 1, "b": 2})
    journal = await begin(store, "second", resume="first")
    await journal.lookup([want("a", "k-a"), want("b", "k-b")])
    with raw(db) as conn:  # lookup() wrote both restored rows in one go
        rows = conn.execute(
            "SELECT stage_id, status, restored_from, value FROM stage_results "
            "WHERE run_id = 'second' ORDER BY stage_id"
        ).fetchall()
    assert rows == [("a", "COMPLETED", "first", None), ("b", "COMPLETED", "first", None)]
    restored_a = sr("a", result=1, attempt_count=0, restored_from="first", start_time=7.0)
    await journal.record_stage(restored_a, "k-a")  # remembered, written with the next write
    await journal.finish(pr(restored_a, sr("b", result=2, attempt_count=0, restored_from="first")))
    assert store.load("second").stage_results["a"].start_time == 7.0


async def test_r13_2_record_stages_writes_several_at_once(make_store: StoreFactory) -> None:
    store = make_store()
    journal = await begin(store, "r1")
    await journal.record_stages(
        [(sr("a", result=1), "k-a"), (sr("b", StageStatus.FAILED, error="x"), "k-b")]
    )
    await journal.record_stages([])
    await journal.finish(pr())
    loaded = store.load("r1")
    assert {s: r.status for s, r in loaded.stage_results.items()} == {
        "a": StageStatus.COMPLETED,
        "b": StageStatus.FAILED,
    }
    assert loaded.stage_results["a"].result == 1


async def test_deleting_a_run_removes_its_rows(make_store: StoreFactory) -> None:
    store = make_store()
    await completed_run(store, "r1", {"a": 1})
    await completed_run(store, "r2", {"a": 2})
    assert store.delete_run("r1") is True  # type: ignore[attr-defined]
    assert store.delete_run("r1") is False  # type: ignore[attr-defined]
    assert [r.run_id for r in store.runs()] == ["r2"]
    journal = await begin(store)
    restored = await journal.lookup([want("a", "k-a", resume=False, cache=True)])
    assert restored["a"].from_run_id == "r2"
    await journal.finish(pr())


# -- SQLite specifics: WAL, permissions, crash safety ---------------------------------------------


async def test_r13_1_the_file_is_in_wal_mode(db: pathlib.Path) -> None:
    await completed_run(SQLiteStore(db), "r1", {"a": 1})
    with raw(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_r13_6_the_file_and_its_wal_are_owner_only(db: pathlib.Path) -> None:
    old = os.umask(0o022)  # a usual umask would give 0o644
    try:
        store = SQLiteStore(db)
        assert _mode(db) == 0o600  # before any write
        journal = await begin(store)
        await journal.record_stage(sr("a", result=1), "k")
        for suffix in ("", "-wal", "-shm"):
            assert _mode(pathlib.Path(f"{db}{suffix}")) == 0o600, suffix
        await journal.finish(pr())
    finally:
        os.umask(old)


def _mode(path: pathlib.Path) -> int:
    return path.stat().st_mode & 0o777


_WRITER = """
import sys, time, anyio
from proxima.data.pipeline import StageResult, StageStatus
from proxima.data.pipeline.store import SQLiteStore

store = SQLiteStore(sys.argv[1], key="k")

async def main():
    journal = await store.begin_run(run_id="crash", pipeline_name="p",
        graph_fingerprint="g", started_at=time.time(), resume=None)
    i = 0
    while True:
        value = {"i": i, "pad": "x" * (i % 7 * 5000)}
        await journal.record_stage(
            StageResult(f"s{i}", f"S{i}", StageStatus.COMPLETED, result=value,
                        start_time=1.0, end_time=2.0, attempt_count=1), f"k{i}")
        print(i, flush=True)  # acknowledged: committed
        i += 1

anyio.run(main)
"""


def test_r13_5_a_sigkilled_writer_leaves_whole_rows_only(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "runs.db"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    rng = random.Random(1305)
    for _ in range(2):
        if db.exists():
            for suffix in ("", "-wal", "-shm"):
                pathlib.Path(f"{db}{suffix}").unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, str(script), str(db)],
            stdout=subprocess.PIPE,
            env=child_env(),
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "0"  # writing
        time.sleep(rng.uniform(0.05, 0.4))  # the moment of the kill: seeded, not a sync
        proc.send_signal(signal.SIGKILL)
        acknowledged = [int(line) for line in proc.stdout.read().split()]
        proc.stdout.close()
        proc.wait()
        last_ack = acknowledged[-1] if acknowledged else 0

        with raw(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            ids = [r[0] for r in conn.execute("SELECT stage_id FROM stage_results")]
        n = len(ids)
        assert sorted(ids) == sorted(f"s{i}" for i in range(n))  # a prefix, no gaps
        assert n >= last_ack + 1  # every acknowledged write is there

        async def check(n: int = n) -> dict[str, Restored]:
            store = SQLiteStore(db, key="k")
            journal = await begin(store, resume="crash", pipeline="p")
            restored = await journal.lookup([want(f"s{i}", f"k{i}") for i in range(n)])
            await journal.finish(pr())
            return restored

        restored = anyio.run(check)  # a warning here (a partial value) would fail the test
        assert len(restored) == n
        assert all(restored[f"s{i}"].value["i"] == i for i in range(n))


# -- integrity: keys and signatures ---------------------------------------------------------------


class _Payload:
    """Unpickling it touches a file: proof that a value was unpickled."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (_touch, (str(self.marker),))


def _touch(path: str) -> str:
    pathlib.Path(path).write_text("unpickled")
    return "replaced"


async def test_r13_6_a_tampered_value_is_never_unpickled(
    db: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    store = SQLiteStore(db, key="secret")
    await completed_run(store, "first", {"a": "genuine", "b": "fine"})
    marker = tmp_path / "unpickled.txt"
    with raw(db) as conn:
        conn.execute(
            "UPDATE stage_results SET value = ? WHERE stage_id = 'a'",
            (pickle.dumps(_Payload(marker)),),
        )
    journal = await begin(store, resume="first")
    with pytest.warns(StoreWarning, match=r"stage 'a'.*signature that does not match") as warned:
        restored = await journal.lookup([want("a", "k-a"), want("b", "k-b")])
    assert not marker.exists()
    assert list(restored) == ["b"]
    assert len(warned) == 1
    await journal.finish(pr())
    with pytest.warns(StoreWarning, match="stage 'a'"):
        loaded = store.load("first")
    assert not marker.exists()
    assert loaded.stage_results["a"].result is None
    assert loaded.stage_results["b"].result == "fine"


async def test_r13_6_without_a_key_the_file_is_trusted_input(
    db: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """What the docs' security note says: no key, no check."""
    store = SQLiteStore(db)
    await completed_run(store, "first", {"a": "genuine"})
    marker = tmp_path / "unpickled.txt"
    with raw(db) as conn:
        conn.execute("UPDATE stage_results SET value = ?", (pickle.dumps(_Payload(marker)),))
    journal = await begin(store, resume="first")
    restored = await journal.lookup([want("a", "k-a")])
    assert marker.exists()
    assert restored["a"].value == "replaced"
    await journal.finish(pr())


async def test_r13_6_a_signature_moved_to_another_row_does_not_verify(db: pathlib.Path) -> None:
    store = SQLiteStore(db, key="secret")
    await completed_run(store, "first", {"a": "value of a", "b": "value of b"})
    with raw(db) as conn:  # b gets a's value and a's (valid) signature
        conn.execute(
            "UPDATE stage_results SET (value, signature) = "
            "(SELECT value, signature FROM stage_results WHERE stage_id = 'a') "
            "WHERE stage_id = 'b'"
        )
    journal = await begin(store, resume="first")
    with pytest.warns(StoreWarning, match="stage 'b'"):
        restored = await journal.lookup([want("a", "k-a"), want("b", "k-b")])
    assert {sid: r.value for sid, r in restored.items()} == {"a": "value of a"}
    await journal.finish(pr())


async def test_r13_6_another_key_or_no_signature_means_run_again(
    db: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_KEY, "from-the-environment")
    await completed_run(SQLiteStore(db), "signed", {"a": 1})  # signed with the env's key
    monkeypatch.delenv(ENV_KEY)
    await completed_run(SQLiteStore(db), "unsigned", {"a": 1})

    other_key = SQLiteStore(db, key="another key")
    journal = await begin(other_key, resume="signed")
    with pytest.warns(StoreWarning, match="signature that does not match"):
        assert await journal.lookup([want("a", "k-a")]) == {}
    await journal.finish(pr())
    journal = await begin(other_key, resume="unsigned")
    with pytest.warns(StoreWarning, match="is not signed"):
        assert await journal.lookup([want("a", "k-a")]) == {}
    await journal.finish(pr())
    journal = await begin(SQLiteStore(db, key=b"from-the-environment"), resume="signed")
    assert (await journal.lookup([want("a", "k-a")]))["a"].value == 1
    await journal.finish(pr())


async def test_r13_6_a_signed_memory_store_restores_its_own_values() -> None:
    store = MemoryStore(key="secret")
    await completed_run(store, "first", {"a": [1]})
    journal = await begin(store, resume="first")
    assert (await journal.lookup([want("a", "k-a")]))["a"].value == [1]
    await journal.finish(pr())


def test_r13_6_an_empty_or_odd_key_is_refused(db: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        SQLiteStore(db, key=b"")
    with pytest.raises(TypeError, match="key"):
        MemoryStore(key=123)  # type: ignore[arg-type]
    assert "secret" not in repr(SQLiteStore(db, key="secret"))


# -- codecs and values that cannot be stored ------------------------------------------------------


async def test_r13_2_json_codec_round_trip(make_store: StoreFactory) -> None:
    store = make_store(codec=JsonCodec())
    value = {"rows": [1, 2.5, "x", None, True], "nested": {"k": [[]]}}
    await completed_run(store, "first", {"a": value})
    journal = await begin(store, resume="first")
    assert (await journal.lookup([want("a", "k-a")]))["a"].value == value
    await journal.finish(pr())
    assert store.load("first").stage_results["a"].result == value


async def test_r13_2_a_value_the_codec_cannot_encode_is_recorded_without_it(
    make_store: StoreFactory,
) -> None:
    store = make_store(codec=JsonCodec())
    journal = await begin(store, "first")
    with pytest.warns(StoreWarning, match=r"stage 'a'.*set.*json codec"):
        await journal.record_stage(sr("a", result={1, 2}), "k-a")  # JSON has no sets
    await journal.record_stage(sr("b", result=[1, 2]), "k-b")
    await journal.finish(pr(sr("a", result={1, 2}), sr("b", result=[1, 2])))
    loaded = store.load("first")
    assert loaded.stage_results["a"].status is StageStatus.COMPLETED
    assert loaded.stage_results["a"].result is None
    again = await begin(store, resume="first")
    assert list(await again.lookup([want("a", "k-a"), want("b", "k-b")])) == ["b"]
    await again.finish(pr())


async def test_r13_2_an_unpicklable_value_does_not_fail_the_record(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    journal = await begin(store, "first")
    with pytest.warns(StoreWarning, match=r"stage 'a'.*cannot be stored with the pickle codec"):
        await journal.record_stage(sr("a", result=threading.Lock()), "k-a")
    await journal.finish(pr())
    assert store.load("first").stage_results["a"].status is StageStatus.COMPLETED


async def test_r13_2_a_json_store_never_decodes_pickled_values(db: pathlib.Path) -> None:
    await completed_run(SQLiteStore(db), "pickled", {"a": 1})
    journal = await begin(SQLiteStore(db, codec=JsonCodec()), resume="pickled")
    with pytest.warns(StoreWarning, match="pickle codec"):
        assert await journal.lookup([want("a", "k-a")]) == {}
    await journal.finish(pr())


def test_codecs_have_names_and_round_trip() -> None:
    assert PickleCodec().name == "pickle"
    assert JsonCodec().name == "json"
    assert PickleCodec().decode(PickleCodec().encode((1, {2}))) == (1, {2})
    assert JsonCodec().decode(JsonCodec().encode((1, 2))) == [1, 2]  # JSON has no tuples


# -- concurrency: many runs, the claim, the event loop --------------------------------------------


async def test_r13_7_concurrent_runs_share_one_store(make_store: StoreFactory) -> None:
    store = make_store()

    async def one_run(n: int) -> None:
        journal = await begin(store, f"run-{n}")
        results = [sr(f"s{i}", result=(n, i)) for i in range(20)]
        for r in results:
            await journal.record_stage(r, f"k-{r.stage_id}-{n}")
        await journal.finish(pr(*results))

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(one_run, n)
    assert sorted(r.run_id for r in store.runs()) == [f"run-{n}" for n in range(5)]
    for n in range(5):
        loaded = store.load(f"run-{n}")
        assert [r.result for r in loaded.stage_results.values()] == [(n, i) for i in range(20)]


def test_r13_7_one_store_used_from_two_event_loops_at_once(db: pathlib.Path) -> None:
    store = SQLiteStore(db)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def in_thread(backend: str) -> None:
        async def main() -> None:
            journal = await begin(store, f"run-{backend}")
            barrier.wait()  # both runs are open at once
            for i in range(30):
                await journal.record_stage(sr(f"s{i}", result=i), f"k{i}")
            await journal.finish(pr())

        try:
            anyio.run(main, backend=backend)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=in_thread, args=(b,)) for b in ("asyncio", "trio")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    for backend in ("asyncio", "trio"):
        assert len(store.load(f"run-{backend}").stage_results) == 30


async def test_r13_5_a_second_resume_of_the_same_run_is_refused(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    await completed_run(store, "first", {"a": 1})
    holder = await begin(store, "holder", resume="first")
    with pytest.raises(ResumeConflictError, match=r"'holder'.*is resuming it already") as info:
        await begin(store, "second", resume="first")
    assert isinstance(info.value, PipelineException)
    assert isinstance(info.value, RuntimeError)
    assert info.value.pid == os.getpid()
    with pytest.raises(ResumeConflictError):  # "latest" names the same run
        await begin(store, "third", resume="latest")
    await holder.finish(pr())  # releases the claim
    later = await begin(store, "later", resume="first")
    assert later.resumed_from == "first"
    await later.finish(pr())


async def test_r13_5_a_run_still_going_on_cannot_be_resumed(make_store: StoreFactory) -> None:
    store = make_store()
    await completed_run(store, "done", {"a": 1})
    live = await begin(store, "live")
    with pytest.raises(ResumeConflictError, match="'live': it is still running"):
        await begin(store, resume="live")
    # "latest" passes over the run that is going on
    journal = await begin(store, resume="latest")
    assert journal.resumed_from == "done"
    await journal.finish(pr())
    await live.finish(pr())


_CLAIMANT = """
import sys, time, anyio
from proxima.data.pipeline.store import SQLiteStore

async def main():
    journal = await SQLiteStore(sys.argv[1]).begin_run(run_id="child", pipeline_name="etl",
        graph_fingerprint="g", started_at=time.time(), resume="first")
    print("claimed", flush=True)
    await anyio.sleep(60)

anyio.run(main, backend=sys.argv[2])
"""


@pytest.mark.parametrize("reap", [True, False], ids=["reaped", "zombie"])
def test_r13_5_another_process_holds_the_claim_until_it_dies(
    tmp_path: pathlib.Path, reap: bool
) -> None:
    db = tmp_path / "runs.db"
    store = SQLiteStore(db)
    anyio.run(completed_run, store, "first", {"a": 1})
    script = tmp_path / "claimant.py"
    script.write_text(_CLAIMANT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db), "trio" if reap else "asyncio"],
        stdout=subprocess.PIPE,
        env=child_env(),
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "claimed"
        with pytest.raises(ResumeConflictError, match="'child'") as info:
            anyio.run(functools.partial(begin, store, "mine", resume="first"))
        assert info.value.pid == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
    if reap:
        proc.wait()
    else:  # killed but not yet reaped by its parent: a zombie holds no claim
        deadline = time.monotonic() + 10
        while _proc_state(proc.pid) not in ("Z", None) and time.monotonic() < deadline:
            time.sleep(0.01)
    try:
        journal = anyio.run(functools.partial(begin, store, "mine", resume="first"))
        assert journal.resumed_from == "first"
    finally:
        proc.stdout.close()
        proc.wait()


def _proc_state(pid: int) -> str | None:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2]


class _SlowCodec:
    """Pickle, but encoding takes 0.3 s in whatever thread runs it."""

    name = "pickle"

    def encode(self, value: Any) -> bytes:
        time.sleep(0.3)
        return pickle.dumps(value)

    def decode(self, data: bytes) -> Any:
        return pickle.loads(data)


async def test_r13_1_a_long_write_does_not_block_the_event_loop(db: pathlib.Path) -> None:
    store = SQLiteStore(db, codec=_SlowCodec())
    journal = await begin(store)
    ticks = 0
    stop = anyio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        before = ticks
        await journal.record_stage(sr("big", result=b"x" * 20_000_000), "k")
        during = ticks - before
        stop.set()
    assert during >= 5  # about 30 when the loop is free
    await journal.finish(pr())
    assert len(store.load(journal.run_id).stage_results["big"].result) == 20_000_000


# -- fingerprints and keys ------------------------------------------------------------------------


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@attrs.frozen
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Box:
    label: str
    items: list[int]


class Pair(NamedTuple):
    left: int
    right: int


def test_r13_4_equal_values_have_equal_fingerprints() -> None:
    assert fingerprint({"b": 1, "a": [1, 2]}) == fingerprint({"a": [1, 2], "b": 1})
    assert fingerprint({"x", "y", "z"}) == fingerprint({"z", "y", "x"})
    assert fingerprint(Point(1, 2)) == fingerprint(Point(1, 2))
    assert fingerprint(Box("b", [1])) == fingerprint(Box("b", [1]))
    assert fingerprint(float("nan")) == fingerprint(float("nan"))
    big = 10**5000  # beyond int -> str's digit limit
    assert fingerprint(big) == fingerprint(10**5000)


def test_r13_4_different_values_have_different_fingerprints() -> None:
    values: list[Any] = [
        None,
        True,
        1,
        1.0,
        "1",
        b"1",
        bytearray(b"1"),
        [1],
        (1,),
        {1},
        frozenset({1}),
        {1: 1},
        {"1": 1},
        Color.RED,
        Color.BLUE,
        Point(1, 2),
        Point(2, 1),
        Box("1", []),
        Pair(1, 2),
        (1, 2),
        datetime.date(2024, 1, 1),
        datetime.datetime(2024, 1, 1),
        datetime.timedelta(1),
        decimal.Decimal("1.0"),
        decimal.Decimal("1"),
        uuid.UUID(int=1),
        pathlib.PurePosixPath("a/b"),
        range(3),
        1j,
        [[1], 2],
        [[1, 2]],
        "",
        [],
        {},
        0.0,
        -0.0,
    ]
    prints = [fingerprint(v) for v in values]
    assert len(set(prints)) == len(values)


def test_r13_4_an_unknown_type_raises_naming_the_type_and_the_place() -> None:
    with pytest.raises(TypeError, match=r"'_thread.lock'.*input\['conn'\]\[1\]"):
        fingerprint({"conn": [1, threading.Lock()]})
    with pytest.raises(TypeError, match=r"'builtins\.object' \(at input\.x\)"):
        fingerprint(Point(object(), 1))  # type: ignore[arg-type]
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(TypeError, match="contains itself"):
        fingerprint(loop)


def test_r13_4_register_fingerprint_teaches_a_type() -> None:
    class Money:
        def __init__(self, cents: int) -> None:
            self.cents = cents

    with pytest.raises(TypeError, match="Money"):
        fingerprint(Money(5))
    register_fingerprint(Money, lambda m: m.cents)
    assert fingerprint(Money(5)) == fingerprint(Money(5))
    assert fingerprint(Money(5)) != fingerprint(Money(6))
    assert fingerprint(Money(5)) != fingerprint(5)


_FP_MODULE = '''
import attrs, enum

class Mode(enum.Enum):
    FAST = "fast"

@attrs.frozen
class Job:
    name: str
    tags: frozenset

def handler(ctx, data):
    """Keep the known columns."""
    return {k: v for k, v in data.items() if k in {"alpha", "beta", "gamma", "delta"}}

VALUES = [
    {"alpha", "beta", "gamma", "delta", "epsilon"},
    frozenset({"x", "y", "z", "w"}),
    {"b": {"q", "r", "s"}, "a": [1, 2.5, None], "c": Mode.FAST},
    Job("j", frozenset({"one", "two", "three"})),
]
'''

_FP_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import fpmod
from proxima.data.pipeline.store import code_version, fingerprint
print(json.dumps([fingerprint(v) for v in fpmod.VALUES] + [code_version(fpmod.handler)]))
"""


def test_r13_4_fingerprints_are_the_same_in_every_process(tmp_path: pathlib.Path) -> None:
    (tmp_path / "fpmod.py").write_text(_FP_MODULE)
    outputs = set()
    for seed in ("0", "1", "4242"):
        done = subprocess.run(
            [sys.executable, "-c", _FP_SCRIPT, str(tmp_path)],
            env=child_env(PYTHONHASHSEED=seed),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1
    assert len(json.loads(outputs.pop())) == 5


def _compile(source: str, name: str = "h", first_line: int = 1) -> Any:
    namespace: dict[str, Any] = {"__name__": "handlers"}
    code = compile("\n" * (first_line - 1) + textwrap.dedent(source), "<handlers>", "exec")
    exec(code, namespace)
    return namespace[name]


_BASE = """
def h(ctx, data):
    rows = [r * 2 for r in data]
    return sum(rows) + 1
"""


def test_r13_3_code_version_ignores_layout_docstring_and_line_numbers() -> None:
    base = code_version(_compile(_BASE))
    assert code_version(_compile(_BASE)) == base
    assert code_version(_compile(_BASE, first_line=40)) == base
    relaid = '''
def h(ctx, data):
    """Doubles the rows, then adds one."""

    # a comment
    rows = [r * 2   for r in data]   # spacing
    return sum(rows) + 1
'''
    assert code_version(_compile(relaid)) == base
    handler = _compile(_BASE)
    for _ in range(2000):  # specialised (quickened) bytecode is not in co_code
        handler(None, [1, 2])
    assert code_version(handler) == base


@pytest.mark.parametrize(
    "changed",
    [
        _BASE.replace("+ 1", "+ 2"),  # a constant
        _BASE.replace("r * 2", "r * 3"),  # inside the comprehension (nested code)
        _BASE.replace("sum(rows)", "max(rows)"),  # a global name
        _BASE.replace("rows", "items"),  # a local name
        _BASE.replace("def h(ctx, data)", "def h(ctx, data, extra=1)"),  # the arguments
        _BASE.replace("def h", "async def h"),  # async
    ],
    ids=["constant", "nested", "global", "local", "arguments", "async"],
)
def test_r13_3_code_version_changes_with_the_code(changed: str) -> None:
    assert code_version(_compile(changed)) != code_version(_compile(_BASE))


def test_r13_3_code_version_sees_defaults_closures_and_partials() -> None:
    def make(n: int) -> Callable[[Any, Any], Any]:
        def h(ctx: Any, data: Any) -> Any:
            return data + n

        return h

    assert code_version(make(1)) == code_version(make(1))
    assert code_version(make(1)) != code_version(make(2))

    def with_default(ctx: Any, data: Any, scale: int = 2) -> Any:
        return data * scale

    before = code_version(with_default)
    with_default.__defaults__ = (3,)
    assert code_version(with_default) != before

    def base(ctx: Any, data: Any, factor: int) -> Any:
        return data * factor

    assert code_version(functools.partial(base, factor=2)) == code_version(
        functools.partial(base, factor=2)
    )
    assert code_version(functools.partial(base, factor=2)) != code_version(
        functools.partial(base, factor=3)
    )
    assert code_version(functools.partial(base, factor=2)) != code_version(base)


def test_r13_3_state_a_handler_closes_over_does_not_change_its_version() -> None:
    """A list that collects results, a mutable default: by type only."""

    def make(calls: list[str]) -> Callable[[Any, Any], Any]:
        def h(ctx: Any, data: Any, seen: dict[str, int] | None = None) -> Any:
            calls.append("h")
            return data

        return h

    calls: list[str] = []
    before = code_version(make(calls))
    calls.extend(["run 1", "run 2"])
    assert code_version(make(calls)) == before

    def cached(ctx: Any, data: Any, memo: dict[str, int] = {}) -> Any:  # noqa: B006
        memo[str(data)] = 1
        return data

    before = code_version(cached)
    cached(None, 1)
    assert code_version(cached) == before


def test_r13_3_code_version_unwraps_decorators_and_reads_callable_objects() -> None:
    def logged(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any) -> Any:
            return func(*args)

        return wrapper

    one = _compile("def h(ctx, data):\n    return 1\n")
    two = _compile("def h(ctx, data):\n    return 2\n")
    assert code_version(logged(one)) != code_version(logged(two))
    assert code_version(logged(one)) == code_version(logged(one))

    class Doubler:
        def __call__(self, ctx: Any, data: Any) -> Any:
            return data * 2

    class Tripler:
        def __call__(self, ctx: Any, data: Any) -> Any:
            return data * 3

    assert code_version(Doubler()) == code_version(Doubler())
    assert code_version(Doubler()) != code_version(Tripler())


def _st(sid: str, handler: Any, *deps: str, **kw: Any) -> Stage:
    return Stage(stage_id=sid, name=sid, handler=handler, dependencies=deps, **kw)


def _h1(ctx: Any, data: Any) -> Any:
    return data


def _h2(ctx: Any, data: Any) -> Any:
    return [data]


def test_r13_3_stage_version_prefers_the_given_version() -> None:
    assert stage_version(_st("a", _h1, version="2024-05")) == "v:2024-05"
    assert stage_version(_st("a", _h1)) == f"c:{code_version(_h1)}"


def test_r13_4_stage_keys_chain_upstream_keys_hamilton_style() -> None:
    stages = [_st("a", _h1), _st("b", _h1, "a"), _st("c", _h2, "a", "b"), _st("d", _h1)]
    keys = stage_keys(stages, None, {"day": "mon"})
    assert list(keys) == ["a", "b", "c", "d"]
    assert len(set(keys.values())) == 4
    assert stage_keys(stages, [[], [0], [0, 1], []], {"day": "mon"}) == keys  # Plan positions
    other_input = stage_keys(stages, None, {"day": "tue"})
    assert all(other_input[s] != keys[s] for s in "abcd")
    new_b = stage_keys(
        [stages[0], _st("b", _h1, "a", version="2"), *stages[2:]], None, {"day": "mon"}
    )
    assert (new_b["a"], new_b["d"]) == (keys["a"], keys["d"])
    assert new_b["b"] != keys["b"]
    assert new_b["c"] != keys["c"]
    swapped = stage_keys(
        [stages[0], stages[1], _st("c", _h2, "b", "a"), stages[3]], None, {"day": "mon"}
    )
    assert swapped["c"] != keys["c"]  # upstream order counts: it is the input's order
    versions = {"a": "x", "b": "x", "c": "x", "d": "x"}
    assert stage_keys(stages, None, {"day": "mon"}, versions) != keys


def test_r13_4_keys_never_rehash_stage_values() -> None:
    """A downstream key depends on its upstream keys only: it is computed
    before any stage ran, so no value can enter it."""
    stages = [_st("a", _h1), _st("b", _h1, "a")]
    assert stage_keys(stages, None, 1) == stage_keys(stages, None, 1)


def test_r13_4_an_unfingerprintable_input_names_the_stage() -> None:
    stages = [_st("load", _h1), _st("use", _h1, "load")]
    with pytest.raises(UnfingerprintableError, match=r"stage 'load'.*_thread.lock") as info:
        stage_keys(stages, None, {"lock": threading.Lock()})
    assert info.value.stage_id == "load"
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, PipelineException)


def test_r13_3_lookups_for_asks_for_every_stage_on_resume_and_cached_ones_otherwise() -> None:
    stages = [_st("a", _h1), _st("b", _h1, "a", cache=True, cache_expiration=60.0)]
    keys = stage_keys(stages, None, 1)
    assert lookups_for(stages, keys, resume=True) == [
        Lookup("a", keys["a"], resume=True, cache=False),
        Lookup("b", keys["b"], resume=True, cache=True, max_age=60.0, dependencies=("a",)),
    ]
    assert lookups_for(stages, keys, resume=False) == [
        Lookup("b", keys["b"], resume=False, cache=True, max_age=60.0, dependencies=("a",))
    ]
    assert lookups_for(stages, {}, resume=True) == []


def test_graph_fingerprint_follows_the_shape_only() -> None:
    shape = [_st("a", _h1), _st("b", _h1, "a")]
    assert graph_fingerprint(shape) == graph_fingerprint([_st("a", _h2), _st("b", _h2, "a")])
    assert graph_fingerprint(shape) != graph_fingerprint([_st("a", _h1), _st("b", _h1)])
    assert graph_fingerprint(shape, [[], [0]]) == graph_fingerprint(shape)
