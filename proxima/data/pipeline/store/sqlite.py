"""``SQLiteStore``: the embedded default store, on the standard library's
``sqlite3`` (R13.1).

- **WAL mode**, so readers (``runs()``, ``load()``, another process) never
  wait for the writer and a crash never leaves a half-written page: SQLite
  replays or drops the write-ahead log when the file is next opened.
- **One transaction per write** (a stage's record, a run's start, its end):
  after a SIGKILL a row is there whole or not at all.
- ``synchronous=NORMAL`` by default: in WAL mode every committed transaction
  survives the process being killed (what R13.5 asks); only a power cut or
  an OS crash can lose the last few commits, never corrupt the file.
  ``synchronous="FULL"`` also survives those, at one ``fsync`` per stage.
- **Never on the event loop**: every call runs in a worker thread
  (``anyio.to_thread``), one at a time per store and event loop (a
  ``CapacityLimiter(1)``), on one connection guarded by a lock, so it works
  the same on asyncio and trio and from several event loops in several
  threads at once. Other processes write to the same file through SQLite's
  own locking (``BEGIN IMMEDIATE``, waiting up to ``timeout`` seconds).
- The file is created **readable and writable by its owner only** (0o600)
  with ``os.open`` before SQLite opens it; SQLite gives its ``-wal`` and
  ``-shm`` files the database file's permissions.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
import anyio.to_thread
import attrs
from anyio.lowlevel import RunVar

from . import _owner
from ._core import RunRow, StageRef, StageRow, StoreCore
from ._errors import StoreError
from ._rowstore import RowStore
from ._signing import signer_for
from .base import RunInfo
from .codecs import Codec, PickleCodec

if TYPE_CHECKING:
    from .._model.results import PipelineResult

__all__ = ["SQLiteStore"]

T = TypeVar("T")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    pipeline_name TEXT NOT NULL,
    graph_fingerprint TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    status TEXT,
    resumed_from TEXT,
    result TEXT,
    owner_pid INTEGER NOT NULL,
    owner_host TEXT NOT NULL,
    owner_start TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline_name, seq);
CREATE INDEX IF NOT EXISTS runs_resuming ON runs (resumed_from) WHERE ended_at IS NULL;
CREATE TABLE IF NOT EXISTS stage_results (
    run_id TEXT NOT NULL,
    stage_id TEXT NOT NULL,
    stage_name TEXT NOT NULL,
    key TEXT,
    status TEXT NOT NULL,
    value BLOB,
    signature BLOB,
    codec TEXT,
    attempt_count INTEGER NOT NULL,
    error TEXT,
    exception TEXT,
    start_time REAL,
    end_time REAL,
    metrics TEXT NOT NULL,
    critical INTEGER NOT NULL,
    restored_from TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, stage_id)
);
CREATE INDEX IF NOT EXISTS stage_results_cache ON stage_results (stage_id, key, created_at)
    WHERE status = 'COMPLETED' AND restored_from IS NULL AND value IS NOT NULL;
"""

_RUN_COLUMNS = (
    "run_id, pipeline_name, graph_fingerprint, started_at, ended_at, status, resumed_from, "
    "result, owner_pid, owner_host, owner_start, created_at"
)
_STAGE_COLUMNS = (
    "run_id, stage_id, stage_name, key, status, value, signature, codec, attempt_count, "
    "error, exception, start_time, end_time, metrics, critical, restored_from, created_at"
)
#: The same, read back: a value or signature someone rewrote as TEXT (or a
#: number) comes back as bytes, to fail its check, not the read.
_STAGE_READ = _STAGE_COLUMNS.replace(
    "value, signature,", "CAST(value AS BLOB), CAST(signature AS BLOB),"
)


_INSERT_STAGE = (
    f"INSERT OR REPLACE INTO stage_results ({_STAGE_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _run_row(r: tuple[Any, ...]) -> RunRow:
    return RunRow(
        run_id=r[0],
        pipeline_name=r[1],
        graph_fingerprint=r[2],
        started_at=r[3],
        ended_at=r[4],
        status=r[5],
        resumed_from=r[6],
        result=r[7],
        owner=_owner.Owner(r[8], r[9], r[10]),
        created_at=r[11],
    )


def _stage_row(r: tuple[Any, ...]) -> StageRow:
    return StageRow(
        run_id=r[0],
        stage_id=r[1],
        stage_name=r[2],
        key=r[3],
        status=r[4],
        value=r[5],
        signature=r[6],
        codec=r[7],
        attempt_count=r[8],
        error=r[9],
        exception=r[10],
        start_time=r[11],
        end_time=r[12],
        metrics=r[13],
        critical=bool(r[14]),
        restored_from=r[15],
        created_at=r[16],
    )


class _SQLiteTables:
    """The :class:`Tables` of one connection (used under the store's lock)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._depth = 0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction; nested, a savepoint inside the outer one (a
        batch of writes commits together, each write all or nothing)."""
        if self._depth:
            name = f"sp{self._depth}"
            self.conn.execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self.conn.execute(f"ROLLBACK TO {name}")
                self.conn.execute(f"RELEASE {name}")
                raise
            finally:
                self._depth -= 1
            self.conn.execute(f"RELEASE {name}")
            return
        # IMMEDIATE takes the write lock at once: two writers never both
        # read and then fail to upgrade (SQLITE_BUSY without waiting).
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self._depth = 0
        self.conn.execute("COMMIT")

    def get_run(self, run_id: str) -> RunRow | None:
        row = self.conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        return None if row is None else _run_row(row)

    def runs(self, pipeline_name: str | None, limit: int | None) -> list[RunRow]:
        args: list[Any] = []
        where = ""
        if pipeline_name is not None:
            where, args = "WHERE pipeline_name = ?", [pipeline_name]
        sql = f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_run_row(r) for r in self.conn.execute(sql, args)]

    def unfinished_resumers(self, run_id: str) -> list[RunRow]:
        rows = self.conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE resumed_from = ? AND ended_at IS NULL",
            (run_id,),
        )
        return [_run_row(r) for r in rows]

    def insert_run(self, row: RunRow) -> None:
        self.conn.execute(
            f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.run_id,
                row.pipeline_name,
                row.graph_fingerprint,
                row.started_at,
                row.ended_at,
                row.status,
                row.resumed_from,
                row.result,
                row.owner.pid,
                row.owner.host,
                row.owner.start,
                row.created_at,
            ),
        )

    def end_run(self, run_id: str, ended_at: float, status: str, result: str) -> None:
        self.conn.execute(
            "UPDATE runs SET ended_at = ?, status = ?, result = ? WHERE run_id = ?",
            (ended_at, status, result, run_id),
        )

    def stage_refs(self, run_id: str) -> dict[str, StageRef]:
        rows = self.conn.execute(
            "SELECT run_id, stage_id, key, status, restored_from FROM stage_results "
            "WHERE run_id = ?",
            (run_id,),
        )
        return {r[1]: StageRef(*r) for r in rows}

    def stage_rows(self, run_id: str) -> list[StageRow]:
        rows = self.conn.execute(
            f"SELECT {_STAGE_READ} FROM stage_results WHERE run_id = ? ORDER BY rowid",
            (run_id,),
        )
        return [_stage_row(r) for r in rows]

    def stage_row(self, run_id: str, stage_id: str) -> StageRow | None:
        row = self.conn.execute(
            f"SELECT {_STAGE_READ} FROM stage_results WHERE run_id = ? AND stage_id = ?",
            (run_id, stage_id),
        ).fetchone()
        return None if row is None else _stage_row(row)

    def cache_rows(
        self, stage_id: str, key: str, min_created: float | None, limit: int
    ) -> list[StageRow]:
        rows = self.conn.execute(
            f"SELECT {_STAGE_READ} FROM stage_results "
            "WHERE stage_id = ? AND key = ? AND status = 'COMPLETED' "
            "AND restored_from IS NULL AND value IS NOT NULL AND created_at >= ? "
            "ORDER BY created_at DESC LIMIT ?",
            (stage_id, key, float("-inf") if min_created is None else min_created, limit),
        )
        return [_stage_row(r) for r in rows]

    def put_stage_rows(self, rows: Sequence[StageRow]) -> None:
        values = [
            (
                r.run_id,
                r.stage_id,
                r.stage_name,
                r.key,
                r.status,
                r.value,
                r.signature,
                r.codec,
                r.attempt_count,
                r.error,
                r.exception,
                r.start_time,
                r.end_time,
                r.metrics,
                int(r.critical),
                r.restored_from,
                r.created_at,
            )
            for r in rows
        ]
        if len(values) == 1:
            self.conn.execute(_INSERT_STAGE, values[0])
        else:
            self.conn.executemany(_INSERT_STAGE, values)

    def delete_run(self, run_id: str) -> bool:
        with self.transaction():
            self.conn.execute("DELETE FROM stage_results WHERE run_id = ?", (run_id,))
            gone = self.conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount
        return bool(gone)


@attrs.define(eq=False)
class _Write:
    """One call waiting for the writer thread."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    #: Set when the write is done or it is this writer's turn to flush;
    #: made only when the writer has to wait.
    turn: anyio.Event | None = None
    done: bool = False
    result: Any = None
    error: BaseException | None = None


@attrs.define(eq=False)
class _Queue:
    """The writes of one event loop waiting for the writer thread."""

    limiter: anyio.CapacityLimiter
    pending: list[_Write] = attrs.field(factory=list)
    flushing: bool = False


def _create_private(path: str) -> None:
    """Create the database file owner-only, unless it exists already."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class SQLiteStore(RowStore):
    """A store in one SQLite file (see the module docstring for how it is
    written and why it is safe to kill).

    ``key`` (else ``$PROXIMA_STORE_KEY``) signs every stored value with
    HMAC-SHA256; a value whose signature does not match is never decoded.
    Without a key the file is trusted input, like any pickle file.
    ``codec`` is :class:`PickleCodec` unless given (``JsonCodec()`` never
    unpickles). The object can be made outside an event loop and shared by
    many runs, one after another or at once; :meth:`close` closes its
    connection (a later call opens it again).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        key: str | bytes | None = None,
        codec: Codec | None = None,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        timeout: float = 30.0,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"SQLiteStore: path must be a str or a path, got {path!r}")
        text = os.fspath(path)
        if not isinstance(text, str) or text in ("", ":memory:") or text.startswith("file:"):
            raise ValueError(
                f"SQLiteStore: path must name a file, got {text!r} (use MemoryStore() for a "
                "store in memory)"
            )
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(
                f"SQLiteStore: synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
            raise ValueError(f"SQLiteStore: timeout must be a number >= 0, got {timeout!r}")
        self.path = text
        self._synchronous = synchronous
        self._timeout = float(timeout)
        self._core = StoreCore(codec or PickleCodec(), signer_for(key), text)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._queue: RunVar[_Queue] = RunVar(f"proxima-sqlite-{id(self)}")
        _create_private(text)

    def __repr__(self) -> str:
        signed = ", signed" if self._core.signer is not None else ""
        return f"SQLiteStore({self.path!r}, codec={self._core.codec.name}{signed})"

    # -- connections ---------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        _create_private(self.path)
        conn = sqlite3.connect(
            self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"store {self.path!r}: could not switch to WAL mode ({mode})")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.path!r} has format {version}; this version reads "
                    f"{SCHEMA_VERSION} and older"
                )
            if version < SCHEMA_VERSION:
                # One transaction: the tables and the version appear together.
                conn.executescript(
                    f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};COMMIT;"
                )
        except BaseException:
            conn.close()
            raise
        return conn

    def _run_batch(self, batch: list[_Write]) -> None:
        """Every write of the batch in one transaction, each in a savepoint:
        one thread hop and one commit for all stages that ended together."""
        with self._lock:
            try:
                if self._conn is not None and self._pid != os.getpid():
                    # Inherited through fork(): SQLite forbids using it here,
                    # and closing it could release the parent's locks.
                    self._conn = None
                if self._conn is None:
                    self._conn = self._connect()
                    self._pid = os.getpid()
                tables = _SQLiteTables(self._conn)
                if len(batch) == 1:  # alone: its writes make their own transaction
                    write = batch[0]
                    try:
                        write.result = write.fn(tables, *write.args)
                    except Exception as exc:
                        write.error = exc
                else:
                    with tables.transaction():
                        for write in batch:
                            try:
                                with tables.transaction():
                                    write.result = write.fn(tables, *write.args)
                            except Exception as exc:
                                write.error = exc
            except sqlite3.Error as exc:  # the commit itself, or the connection
                error = StoreError(f"store {self.path!r}: {exc}")
                error.__cause__ = exc
                for write in batch:
                    write.result, write.error = None, error
        for write in batch:
            if isinstance(write.error, sqlite3.Error):
                wrapped = StoreError(f"store {self.path!r}: {write.error}")
                wrapped.__cause__ = write.error
                write.error = wrapped

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(tables, *args)`` in the worker thread, batched with the
        writes other tasks of this event loop submit meanwhile."""
        queue = self._queue.get(None)
        if queue is None:
            queue = _Queue(anyio.CapacityLimiter(1))
            self._queue.set(queue)
        write = _Write(fn, args)
        queue.pending.append(write)
        # Shielded: a write once submitted is carried out (it is short);
        # cancelling halfway would leave the caller not knowing whether the
        # stage is recorded.
        with anyio.CancelScope(shield=True):
            if queue.flushing:
                write.turn = anyio.Event()
                await write.turn.wait()
            if not write.done:
                await self._flush(queue, write)
        if write.error is not None:
            raise write.error
        return write.result  # type: ignore[no-any-return]

    async def _flush(self, queue: _Queue, mine: _Write) -> None:
        queue.flushing = True
        batch, queue.pending = queue.pending, []
        try:
            # Not abandoned on cancellation: the batch commits or fails whole.
            await anyio.to_thread.run_sync(self._run_batch, batch, limiter=queue.limiter)
        except BaseException as exc:  # pragma: no cover - the thread machinery itself failed
            for write in batch:
                write.error = write.error or StoreError(f"store {self.path!r}: {exc!r}")
            raise
        finally:
            for write in batch:
                write.done = True
                if write.turn is not None:
                    write.turn.set()
            if queue.pending:  # hand over: the first waiting writer flushes next
                turn = queue.pending[0].turn
                assert turn is not None  # it found the queue flushing, so it waits
                turn.set()
            else:
                queue.flushing = False
        assert mine.done

    def _plain(self, fn: Callable[..., T], *args: Any) -> T:
        """A plain call: its own connection, usable outside any event loop."""
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path!r}: {exc}") from exc
        try:
            return fn(_SQLiteTables(conn), *args)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path!r}: {exc}") from exc
        finally:
            conn.close()

    def close(self) -> None:
        """Close the writer connection (reopened by the next call)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the Store protocol (RowStore), in this store's words -------------------
    # Declared again for their docstrings only: here they are plain calls, each on
    # a connection of its own, which the shared wording does not say.
    def runs(self, pipeline_name: str | None = None, limit: int = 50) -> list[RunInfo]:
        """Recorded runs, newest first; a plain call (R13.7)."""
        return super().runs(pipeline_name, limit)

    def load(self, run_id: str) -> PipelineResult:
        """The recorded result of ``run_id``; a plain call (R13.7). Values that
        cannot be verified or decoded are left ``None``, with a warning."""
        return super().load(run_id)

    def delete_run(self, run_id: str) -> bool:
        """Delete a run and its stage rows; ``False`` if it was not there. Runs
        that restored values from it can no longer be resumed from those."""
        return super().delete_run(run_id)
