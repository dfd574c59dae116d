"""A quick look at the store's cost per stage (R13), not the full benchmark.

Compares, in one process on one backend, per small value:

1. a bare ``sqlite3`` INSERT + COMMIT on the calling thread (WAL,
   ``synchronous=NORMAL``): the floor;
2. the same bare write through ``anyio.to_thread`` (what "never block the
   event loop" costs by itself);
3. ``SQLiteStore``'s ``record_stage`` awaited one after another (a chain);
4. ``record_stage`` from 50 tasks at once (a wide DAG: writes that pile up
   meanwhile share one transaction).

Run: ``python -m benchmarks.store_record [asyncio|trio] [N]``.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable

import anyio
import anyio.to_thread

from proxima.data.pipeline import StageResult, StageStatus
from proxima.data.pipeline.store import SQLiteStore

_VALUE = b"\x80\x05K\x01."  # pickle of 1


def _bare_table(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE t (run_id TEXT, stage_id TEXT, value BLOB, PRIMARY KEY (run_id, stage_id))"
    )
    return conn


def _insert(conn: sqlite3.Connection) -> Callable[[int], None]:
    def write(i: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?, ?, ?)", ("run", f"s{i}", _VALUE))
        conn.execute("COMMIT")

    return write


def bare(path: str, n: int) -> float:
    write = _insert(_bare_table(path))
    began = time.perf_counter()
    for i in range(n):
        write(i)
    return (time.perf_counter() - began) / n


async def bare_in_thread(path: str, n: int) -> float:
    write = _insert(_bare_table(path))
    limiter = anyio.CapacityLimiter(1)
    began = time.perf_counter()
    for i in range(n):
        await anyio.to_thread.run_sync(write, i, limiter=limiter)
    return (time.perf_counter() - began) / n


def _results(n: int) -> list[StageResult]:
    return [
        StageResult(f"s{i}", f"s{i}", StageStatus.COMPLETED, 1, None, None, 1.0, 2.0, 1)
        for i in range(n)
    ]


async def store(path: str, n: int, width: int) -> float:
    journal = await SQLiteStore(path).begin_run(
        run_id="run", pipeline_name="p", graph_fingerprint="g", started_at=time.time(), resume=None
    )
    results = _results(n)

    async def worker(part: list[StageResult]) -> None:
        for result in part:
            await journal.record_stage(result, "k" * 64)

    began = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for w in range(width):
            tg.start_soon(worker, results[w::width])
    return (time.perf_counter() - began) / n


def main() -> None:
    backend = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    folder = tempfile.mkdtemp()

    def db(name: str) -> str:
        return os.path.join(folder, f"{name}.db")

    floor = bare(db("bare"), n)
    hop = anyio.run(bare_in_thread, db("bare_thread"), n, backend=backend)
    chain = anyio.run(store, db("chain"), n, 1, backend=backend)
    wide = anyio.run(store, db("wide"), n, 50, backend=backend)
    print(f"{backend}, {n} small values, per stage:")
    print(f"  bare insert+commit           {floor * 1e6:7.1f} us")
    print(f"  bare, through a thread       {hop * 1e6:7.1f} us  ({hop / floor:4.2f}x bare)")
    print(
        f"  record_stage, one at a time  {chain * 1e6:7.1f} us  ({chain / floor:4.2f}x bare, "
        f"{chain / hop:4.2f}x bare through a thread)"
    )
    print(f"  record_stage, 50 at once     {wide * 1e6:7.1f} us  ({wide / floor:4.2f}x bare)")


if __name__ == "__main__":
    main()
