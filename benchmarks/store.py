"""Issue 12: what a durable run costs (``--suite store``).

* ``store_overhead``: the same pipeline of small-valued stages with
  ``store=SQLiteStore(path)`` and without, and the lean baseline without and
  with a **bare** ``sqlite3`` insert+commit per stage (one row like the
  store's, in a WAL file with ``synchronous=NORMAL``, as the store opens
  its file) made before the stage's dependents are released. The bare
  insert runs two ways: through ``anyio.to_thread.run_sync`` (the least a
  store that must not block the event loop does) and directly on the loop
  (the floor: blocking the loop). All in the same ``anyio.run``, alternating.
  The store's cost per stage is ``lib+store - lib``; the bare insert's is
  ``base+insert - base``; their ratio is the figure (aim: <= 2x).
* ``store_resume``: a 10 000-stage chain recorded once, then resumed with
  only its last stage changed (``Stage(version=...)``), so 9 999 stages are
  restored and one runs; time and tracemalloc peak against running the same
  10 000 no-op stages fresh (no store); the recording run's time is given too.

The library side has no stage timeout and retries off, metrics on. Store
files live in a fresh temporary directory per case. Only public API.
"""

from __future__ import annotations

import gc
import json
import pickle
import sqlite3
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from proxima.data.pipeline import Pipeline, PipelineResult, PipelineStatus, Stage
from proxima.data.pipeline.store import SQLiteStore

from .baseline import BaselineRunner
from .executors import _alternate, _summary
from .measure import library_config
from .shapes import StageSpec, build_shape

__all__ = ["KINDS", "BareTable", "cases", "describe", "render", "targets"]

_perf = time.perf_counter
Run = Callable[[], Awaitable[None]]

#: The small value every stage returns.
VALUE = "value"

#: A table shaped like the store's record of a stage (the same columns, key
#: and index), so a bare insert writes what the store writes.
_BARE_SCHEMA = """
CREATE TABLE IF NOT EXISTS stage_results (
    run_id TEXT NOT NULL, stage_id TEXT NOT NULL, stage_name TEXT NOT NULL, key TEXT,
    status TEXT NOT NULL, value BLOB, signature BLOB, codec TEXT,
    attempt_count INTEGER NOT NULL, error TEXT, exception TEXT, start_time REAL,
    end_time REAL, metrics TEXT NOT NULL, critical INTEGER NOT NULL, restored_from TEXT,
    created_at REAL NOT NULL, PRIMARY KEY (run_id, stage_id)
);
CREATE INDEX IF NOT EXISTS stage_results_cache ON stage_results (stage_id, key, created_at)
    WHERE status = 'COMPLETED' AND restored_from IS NULL AND value IS NOT NULL;
"""
_BARE_INSERT = "INSERT INTO stage_results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"


class BareTable:
    """One connection to a WAL file; :meth:`insert` is one insert+commit
    (autocommit mode: the insert is its own transaction)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_BARE_SCHEMA)
        self.lock = threading.Lock()
        self.run_id = ""

    def new_run(self) -> None:
        self.run_id = uuid.uuid4().hex

    def insert(self, stage_id: str, value: Any) -> None:
        now = time.time()
        row = (
            self.run_id,
            stage_id,
            stage_id,
            uuid.uuid4().hex,
            "COMPLETED",
            pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL),
            None,
            "pickle",
            1,
            None,
            None,
            now,
            now,
            json.dumps({"attempts": 1}),
            1,
            None,
            now,
        )
        with self.lock:
            self.conn.execute(_BARE_INSERT, row)

    def close(self) -> None:
        self.conn.close()


async def small(ctx: Any, data: Any) -> str:
    """A stage that returns a small value."""
    return VALUE


def _stages(specs: Sequence[StageSpec], version_of_last: str | None = None) -> list[Stage]:
    stages = [
        Stage(stage_id=s.stage_id, name=s.stage_id, handler=small, dependencies=s.dependencies)
        for s in specs
    ]
    if version_of_last is not None:
        last = specs[-1]
        stages[-1] = Stage(
            stage_id=last.stage_id,
            name=last.stage_id,
            handler=small,
            dependencies=last.dependencies,
            version=version_of_last,
        )
    return stages


def _completed(result: PipelineResult, size: int) -> PipelineResult:
    if result.status is not PipelineStatus.COMPLETED or len(result.stage_results) != size:
        raise AssertionError(f"library run did not complete: {result.status}")
    return result


# -- store overhead per stage --------------------------------------------------------------
async def overhead_case(case: dict[str, Any]) -> dict[str, Any]:
    shape: str = case["shape"]
    size: int = case["size"]
    parallel = 1 if shape == "chain" else size
    specs = build_shape(shape, size)
    stages = _stages(specs)
    config = library_config(parallel, variant="no-timeout")
    with tempfile.TemporaryDirectory(prefix="proxima-bench-") as tmp:
        store = SQLiteStore(Path(tmp) / "runs.db")
        bare = BareTable(Path(tmp) / "bare.db")
        try:

            async def lib() -> None:
                _completed(await Pipeline(config).add_stages(stages).execute(), size)

            async def lib_store() -> None:
                pipeline = Pipeline(config).add_stages(stages)
                _completed(await pipeline.execute(store=store), size)

            async def plain(sid: str, data: Any) -> str:
                return VALUE

            async def insert_thread(sid: str, data: Any) -> str:
                await anyio.to_thread.run_sync(bare.insert, sid, VALUE)
                return VALUE

            async def insert_sync(sid: str, data: Any) -> str:
                bare.insert(sid, VALUE)
                return VALUE

            def base(handler: Any) -> Run:
                async def run() -> None:
                    bare.new_run()
                    runner = BaselineRunner(
                        specs, handler, max_parallel=parallel, stage_timeout=None
                    )
                    if len(await runner.run()) != size:
                        raise AssertionError("baseline run did not complete")

                return run

            sides: dict[str, Run] = {
                "lib": lib,
                "lib+store": lib_store,
                "base": base(plain),
                "base+insert (thread)": base(insert_thread),
                "base+insert (on loop)": base(insert_sync),
            }
            s = _summary(await _alternate(sides, case["repeats"]), size)
        finally:
            bare.close()

    def per_stage(with_: str, without: str) -> float:
        return float(s[with_]["us_per_stage"] - s[without]["us_per_stage"])

    store_us = per_stage("lib+store", "lib")
    thread_us = per_stage("base+insert (thread)", "base")
    sync_us = per_stage("base+insert (on loop)", "base")
    return {
        "kind": "store_overhead",
        "shape": shape,
        "size": size,
        "repeats": case["repeats"],
        "sides": s,
        "store_us_per_stage": store_us,
        "bare_thread_us_per_stage": thread_us,
        "bare_sync_us_per_stage": sync_us,
        "ratio_to_no_store": s["lib+store"]["median_s"] / s["lib"]["median_s"],
        "cpu_ratio_to_no_store": s["lib+store"]["cpu_median_s"] / s["lib"]["cpu_median_s"],
        "ratio_to_bare_thread": store_us / thread_us,
        "ratio_to_bare_sync": store_us / sync_us,
    }


# -- resume of a long chain -------------------------------------------------------------------
async def _peak(run: Callable[[], Awaitable[Any]]) -> int:
    """tracemalloc peak (bytes above the start) while ``run()`` runs."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        kept = await run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del kept
    return peak - before


def _size_of(folder: Path) -> int:
    """Bytes in ``folder``'s files (the store, its WAL and shared memory)."""
    return sum(p.stat().st_size for p in folder.iterdir())


async def resume_case(case: dict[str, Any]) -> dict[str, Any]:
    size: int = case["size"]
    specs = build_shape("chain", size)
    first = _stages(specs, version_of_last="1")
    changed = _stages(specs, version_of_last="2")
    config = library_config(1, variant="no-timeout")
    with tempfile.TemporaryDirectory(prefix="proxima-bench-") as tmp:
        store = SQLiteStore(Path(tmp) / "runs.db")
        start = _perf()
        recorded = _completed(await Pipeline(config).add_stages(first).execute(store=store), size)
        record_s = _perf() - start
        run_id = recorded.run_id
        if run_id is None:
            raise AssertionError("a run with a store has no run_id")

        async def resume() -> PipelineResult:
            pipeline = Pipeline(config).add_stages(changed)
            result = _completed(await pipeline.execute(store=store, resume=run_id), size)
            restored = sum(r.restored_from is not None for r in result.stage_results.values())
            if restored != size - 1:
                raise AssertionError(f"resume restored {restored} stages, not {size - 1}")
            return result

        async def fresh() -> PipelineResult:
            return _completed(await Pipeline(config).add_stages(changed).execute(), size)

        # The recording run (timed once above) is not repeated: at several
        # seconds a run it would dominate the suite's time.
        runs: dict[str, Callable[[], Awaitable[Any]]] = {"resume": resume, "fresh": fresh}
        sides: dict[str, Run] = {}
        for name, fn in runs.items():

            async def side(fn: Callable[[], Awaitable[Any]] = fn) -> None:
                await fn()

            sides[name] = side
        s = _summary(await _alternate(sides, case["repeats"]), size)
        peaks = {name: await _peak(fn) for name, fn in runs.items()}
        db_bytes = _size_of(Path(tmp))
    return {
        "kind": "store_resume",
        "size": size,
        "repeats": case["repeats"],
        "record_s": record_s,
        "sides": s,
        "peak_bytes": peaks,
        "db_bytes": db_bytes,
        "ratio_to_fresh": s["resume"]["median_s"] / s["fresh"]["median_s"],
        "cpu_ratio_to_fresh": s["resume"]["cpu_median_s"] / s["fresh"]["cpu_median_s"],
        "memory_ratio_to_fresh": peaks["resume"] / peaks["fresh"],
    }


KINDS = {"store_overhead": overhead_case, "store_resume": resume_case}


def cases(*, quick: bool, repeats: int | None) -> list[dict[str, Any]]:
    """The store cases; ``quick`` runs fewer and smaller ones."""
    size = 1_000 if quick else 3_000
    out: list[dict[str, Any]] = [
        {
            "kind": "store_overhead",
            "shape": shape,
            "size": size,
            "repeats": repeats or (3 if quick else 9),
        }
        for shape in ("chain", "wide")
    ]
    out.append({"kind": "store_resume", "size": 10_000, "repeats": repeats or (2 if quick else 5)})
    return out


def describe(outcome: dict[str, Any]) -> str:
    if outcome["kind"] == "store_overhead":
        return (
            f"store {outcome['shape']} {outcome['size']}: +{outcome['store_us_per_stage']:.0f} "
            f"us/stage (x{outcome['ratio_to_no_store']:.2f} of no store)  bare insert "
            f"{outcome['bare_thread_us_per_stage']:.0f} us via thread "
            f"(store/bare {outcome['ratio_to_bare_thread']:.2f}), "
            f"{outcome['bare_sync_us_per_stage']:.0f} us on the loop "
            f"({outcome['ratio_to_bare_sync']:.2f})"
        )
    s = outcome["sides"]
    return (
        f"resume {outcome['size']}: {s['resume']['median_s'] * 1e3:.0f} ms vs fresh "
        f"{s['fresh']['median_s'] * 1e3:.0f} ms (x{outcome['ratio_to_fresh']:.2f}, cpu "
        f"x{outcome['cpu_ratio_to_fresh']:.2f}); peak {outcome['peak_bytes']['resume'] / 2**20:.1f}"
        f" MiB vs {outcome['peak_bytes']['fresh'] / 2**20:.1f} MiB"
    )


#: Issue 12's aim: the store's cost per stage within this much of a bare insert.
BARE_LIMIT = 2.0


def render(outcomes: list[dict[str, Any]]) -> list[str]:
    """The store tables."""
    from .report import table

    lines: list[str] = []
    rows = [
        [
            o["backend"],
            f"{o['shape']} {o['size']:,}",
            f"{o['sides']['lib']['us_per_stage']:.0f}",
            f"{o['sides']['lib+store']['us_per_stage']:.0f}",
            f"{o['ratio_to_no_store']:.2f} ({o['cpu_ratio_to_no_store']:.2f})",
            f"{o['store_us_per_stage']:.0f}",
            f"{o['bare_thread_us_per_stage']:.0f}",
            f"{o['ratio_to_bare_thread']:.2f}",
            f"{o['bare_sync_us_per_stage']:.0f}",
            f"{o['ratio_to_bare_sync']:.2f}",
            str(o["repeats"]),
        ]
        for o in outcomes
        if o["kind"] == "store_overhead"
    ]
    if rows:
        lines += [
            "Store overhead, small values, us per stage: lib, lib with SQLiteStore, their ratio",
            "(cpu); the store's cost (difference) against a bare insert+commit per stage through",
            "to_thread ('bare thr') and on the loop ('bare loop'), each over the baseline alone",
            *table(
                [
                    "backend",
                    "graph",
                    "lib",
                    "lib+store",
                    "x no store (cpu)",
                    "store +us",
                    "bare thr +us",
                    "store/bare thr",
                    "bare loop +us",
                    "store/bare loop",
                    "runs",
                ],
                rows,
                right={2, 3, 4, 5, 6, 7, 8, 9, 10},
            ),
        ]
    rows = [
        [
            o["backend"],
            f"{o['size']:,}",
            f"{o['sides']['resume']['median_s'] * 1e3:.0f}",
            f"{o['sides']['fresh']['median_s'] * 1e3:.0f}",
            f"{o['ratio_to_fresh']:.2f} ({o['cpu_ratio_to_fresh']:.2f})",
            f"{o['peak_bytes']['resume'] / 2**20:.1f}",
            f"{o['peak_bytes']['fresh'] / 2**20:.1f}",
            f"{o['memory_ratio_to_fresh']:.2f}",
            f"{o['record_s'] * 1e3:.0f}",
            str(o["repeats"]),
        ]
        for o in outcomes
        if o["kind"] == "store_resume"
    ]
    if rows:
        lines += [
            "",
            "Resume of a chain with all but the last stage restored, vs the same stages fresh",
            "(no store); peak = tracemalloc peak of one run; record = the run that stored them",
            *table(
                [
                    "backend",
                    "stages",
                    "resume ms",
                    "fresh ms",
                    "x fresh (cpu)",
                    "resume MiB",
                    "fresh MiB",
                    "x mem",
                    "record ms",
                    "runs",
                ],
                rows,
                right={1, 2, 3, 4, 5, 6, 7, 8, 9},
            ),
        ]
    return lines


def targets(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 12's aim, for every overhead case run."""
    from .report import target

    return [
        target(
            "store cost per stage / bare insert+commit via thread",
            f"{o['backend']} {o['shape']} {o['size']}",
            o["ratio_to_bare_thread"],
            BARE_LIMIT,
            "x",
        )
        for o in outcomes
        if o["kind"] == "store_overhead"
    ]
