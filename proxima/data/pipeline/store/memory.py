"""``MemoryStore``: the store's semantics with rows in memory (R13.1).

For tests and for trying the store out: resume, the cache, signing, codecs
and the resume claim behave as in :class:`SQLiteStore` (the logic is the
same code), but nothing survives the process. Values are encoded like in a
file, so a restored value is a copy, never the object the stage returned.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio.lowlevel
import attrs

from ._core import RunRow, StageRef, StageRow, StoreCore
from ._rowstore import RowStore
from ._signing import signer_for
from .codecs import Codec, PickleCodec

__all__ = ["MemoryStore"]

T = TypeVar("T")


class _MemoryTables:
    """Rows in dicts, indexed by run and by key. A transaction keeps an undo
    log, so one that fails halfway leaves nothing behind."""

    def __init__(self) -> None:
        self.runs_by_id: dict[str, RunRow] = {}
        self.stages: dict[str, dict[str, StageRow]] = {}  # run id -> stage id -> row
        self.by_key: dict[tuple[str, str | None], set[str]] = {}  # (stage, key) -> run ids
        self._undo: list[Callable[[], None]] | None = None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._undo is not None:  # nested: part of the outer one
            yield
            return
        self._undo = []
        try:
            yield
        except BaseException:
            for undo in reversed(self._undo):
                undo()
            raise
        finally:
            self._undo = None

    def _on_undo(self, undo: Callable[[], None]) -> None:
        if self._undo is not None:
            self._undo.append(undo)

    def get_run(self, run_id: str) -> RunRow | None:
        row = self.runs_by_id.get(run_id)
        return None if row is None else copy.copy(row)

    def runs(self, pipeline_name: str | None, limit: int | None) -> list[RunRow]:
        rows = [
            copy.copy(r)
            for r in reversed(self.runs_by_id.values())
            if pipeline_name is None or r.pipeline_name == pipeline_name
        ]
        return rows if limit is None else rows[:limit]

    def unfinished_resumers(self, run_id: str) -> list[RunRow]:
        return [
            copy.copy(r)
            for r in self.runs_by_id.values()
            if r.resumed_from == run_id and r.ended_at is None
        ]

    def insert_run(self, row: RunRow) -> None:
        if row.run_id in self.runs_by_id:
            raise ValueError(f"begin_run: run id {row.run_id!r} is already in the store")
        self.runs_by_id[row.run_id] = copy.copy(row)
        self._on_undo(lambda: self._forget_run(row.run_id))

    def _forget_run(self, run_id: str) -> None:
        self.runs_by_id.pop(run_id, None)

    def end_run(self, run_id: str, ended_at: float, status: str, result: str) -> None:
        row = self.runs_by_id.get(run_id)
        if row is not None:
            before = copy.copy(row)
            self.runs_by_id[run_id] = attrs.evolve(
                row, ended_at=ended_at, status=status, result=result
            )
            self._on_undo(lambda: self.runs_by_id.__setitem__(run_id, before))

    def stage_refs(self, run_id: str) -> dict[str, StageRef]:
        return {
            r.stage_id: StageRef(r.run_id, r.stage_id, r.key, r.status, r.restored_from)
            for r in self.stages.get(run_id, {}).values()
        }

    def stage_rows(self, run_id: str) -> list[StageRow]:
        return [copy.copy(r) for r in self.stages.get(run_id, {}).values()]

    def stage_row(self, run_id: str, stage_id: str) -> StageRow | None:
        row = self.stages.get(run_id, {}).get(stage_id)
        return None if row is None else copy.copy(row)

    def cache_rows(
        self, stage_id: str, key: str, min_created: float | None, limit: int
    ) -> list[StageRow]:
        rows = [
            r
            for run_id in self.by_key.get((stage_id, key), ())
            if (r := self.stages[run_id][stage_id]).status == "COMPLETED"
            and r.restored_from is None
            and r.value is not None
            and (min_created is None or r.created_at >= min_created)
        ]
        rows.sort(key=lambda r: r.created_at, reverse=True)
        return [copy.copy(r) for r in rows[:limit]]

    def put_stage_rows(self, rows: Sequence[StageRow]) -> None:
        for row in rows:
            self._put(copy.copy(row))

    def _put(self, row: StageRow) -> None:
        run = self.stages.setdefault(row.run_id, {})
        old = run.pop(row.stage_id, None)  # a replaced row goes last, as in SQLite
        if old is not None:
            self.by_key.get((old.stage_id, old.key), set()).discard(old.run_id)
        run[row.stage_id] = row
        self.by_key.setdefault((row.stage_id, row.key), set()).add(row.run_id)

        def undo() -> None:
            run.pop(row.stage_id, None)
            self.by_key.get((row.stage_id, row.key), set()).discard(row.run_id)
            if old is not None:
                self._put(old)

        self._on_undo(undo)

    def delete_run(self, run_id: str) -> bool:
        for row in self.stages.pop(run_id, {}).values():
            self.by_key.get((row.stage_id, row.key), set()).discard(run_id)
        return self.runs_by_id.pop(run_id, None) is not None


class MemoryStore(RowStore):
    """A store that keeps its rows in memory (see the module docstring).

    ``key``, ``codec`` as for :class:`SQLiteStore`. Safe to share between
    runs, event loops and threads of one process.
    """

    def __init__(self, *, key: str | bytes | None = None, codec: Codec | None = None) -> None:
        self._core = StoreCore(codec or PickleCodec(), signer_for(key), "memory")
        self._lock = threading.RLock()
        self._tables = _MemoryTables()

    def __repr__(self) -> str:
        return f"MemoryStore(runs={len(self._tables.runs_by_id)})"

    def _plain(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            return fn(self._tables, *args)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        # In place: the lock is held only for dict operations (and encoding),
        # never across an await.
        await anyio.lowlevel.checkpoint()
        return self._plain(fn, *args)
