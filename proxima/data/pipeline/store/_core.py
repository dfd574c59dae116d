"""What a store does, whatever holds its rows: the logic shared by
``SQLiteStore`` and ``MemoryStore``.

A backend provides :class:`Tables` (plain synchronous reads and writes, each
write atomic) and a way to call a function with them (``_call``: a worker
thread for SQLite, in place for memory). Everything else lives here, once:
resolving ``resume=``, the claim, which stored value may stand in for which
stage, signing and verifying, encoding and decoding, rebuilding a result.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

import attrs

from .._model.enums import CancellationReason, PipelineStatus, StageStatus
from .._model.log import logger
from .._model.results import PipelineResult, StageResult, jsonable
from .._model.text import describe
from . import _owner
from ._errors import ResumeConflictError, RunNotFoundError, StoreWarning
from ._signing import Signer
from .base import Lookup, Restored, RunInfo
from .codecs import Codec

__all__ = ["Journal", "RunRow", "StageRef", "StageRow", "StoreCore", "Tables"]

T = TypeVar("T")
_COMPLETED = StageStatus.COMPLETED.name
#: How far ``resume=`` follows a chain of resumed runs for a stage the
#: resumed run holds no row of (it died before recording it).
_MAX_CHAIN = 1000
#: How many cached candidates are tried before a stage runs anyway.
_MAX_CACHE_TRIES = 5


@attrs.define
class RunRow:
    run_id: str
    pipeline_name: str
    graph_fingerprint: str
    started_at: float
    ended_at: float | None
    status: str | None
    resumed_from: str | None
    #: JSON: the run's own fields (order of stages, dependencies, metadata...).
    result: str | None
    owner: _owner.Owner
    created_at: float

    def info(self) -> RunInfo:
        return RunInfo(
            run_id=self.run_id,
            pipeline_name=self.pipeline_name,
            graph_fingerprint=self.graph_fingerprint,
            started_at=self.started_at,
            ended_at=self.ended_at,
            status=self.status,
            resumed_from=self.resumed_from,
        )


@attrs.frozen
class StageRef:
    """A stage row without its value: what resume decides on."""

    run_id: str
    stage_id: str
    key: str | None
    status: str
    restored_from: str | None


@attrs.define
class StageRow:
    run_id: str
    stage_id: str
    stage_name: str
    key: str | None
    status: str
    value: bytes | None
    signature: bytes | None
    codec: str | None
    attempt_count: int
    error: str | None
    exception: str | None
    start_time: float | None
    end_time: float | None
    metrics: str
    critical: bool
    restored_from: str | None
    created_at: float


class Tables(Protocol):
    """A backend's rows. Writes outside ``transaction()`` are atomic each;
    inside, everything commits together or not at all."""

    def transaction(self) -> AbstractContextManager[None]: ...
    def get_run(self, run_id: str) -> RunRow | None: ...
    def runs(self, pipeline_name: str | None, limit: int | None) -> list[RunRow]: ...
    def unfinished_resumers(self, run_id: str) -> list[RunRow]: ...
    def insert_run(self, row: RunRow) -> None: ...
    def end_run(self, run_id: str, ended_at: float, status: str, result: str) -> None: ...
    def stage_refs(self, run_id: str) -> dict[str, StageRef]: ...
    def stage_rows(self, run_id: str) -> list[StageRow]: ...
    def stage_row(self, run_id: str, stage_id: str) -> StageRow | None: ...
    def cache_rows(
        self, stage_id: str, key: str, min_created: float | None, limit: int
    ) -> list[StageRow]: ...
    def put_stage_rows(self, rows: Sequence[StageRow]) -> None: ...
    def delete_run(self, run_id: str) -> bool: ...


# -- text that cannot fail ------------------------------------------------------------------------


def _safe_text(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a __str__ that raises must not break the record
        return f"<{type(value).__name__} whose str() failed>"


def _exception_text(exc: BaseException | None) -> str | None:
    return None if exc is None else describe(exc)


def _json(value: Any) -> str:
    try:
        return json.dumps(jsonable(value))
    except Exception:  # a __repr__ that raises, a cycle...
        return json.dumps({"<unrecordable>": type(value).__name__})


# -- the shared logic -----------------------------------------------------------------------------


@attrs.define
class _Opened:
    ok: bool
    value: Any = None
    problem: str | None = None


class StoreCore:
    """Codec, signer and the operations on :class:`Tables` (all sync)."""

    def __init__(self, codec: Codec, signer: Signer | None, where: str) -> None:
        self.codec = codec
        self.signer = signer
        self.where = where

    # -- values ----------------------------------------------------------
    def seal(
        self, run_id: str, stage_id: str, key: str | None, value: Any
    ) -> tuple[bytes | None, bytes | None, str | None, str | None]:
        """``(blob, signature, codec, problem)`` for a COMPLETED value."""
        try:
            blob = self.codec.encode(value)
            if not isinstance(blob, bytes):
                raise TypeError(f"codec {self.codec.name!r} returned {type(blob).__name__}")
        except Exception as exc:
            problem = (
                f"stage {stage_id!r}: its value ({type(value).__name__}) cannot be stored with "
                f"the {self.codec.name} codec ({describe(exc)}); the "
                "stage is recorded without it and will run again on resume"
            )
            return None, None, None, problem
        signature = None
        if self.signer is not None:
            signature = self.signer.sign(
                run_id=run_id, stage_id=stage_id, key=key or "", codec=self.codec.name, value=blob
            )
        return blob, signature, self.codec.name, None

    def open(self, row: StageRow) -> _Opened:
        """Verify then decode a stored value; never decode before the check."""
        where = f"stage {row.stage_id!r} (run {row.run_id!r})"
        if row.value is None:
            return _Opened(False, problem=f"{where}: no value was stored")
        if row.codec != self.codec.name:
            return _Opened(
                False,
                problem=f"{where}: stored with the {row.codec} codec, this store decodes "
                f"{self.codec.name} only; the stage runs again",
            )
        if self.signer is not None and not self.signer.verify(
            row.signature,
            run_id=row.run_id,
            stage_id=row.stage_id,
            key=row.key or "",
            codec=row.codec,
            value=row.value,
        ):
            why = (
                "is not signed" if row.signature is None else "has a signature that does not match"
            )
            return _Opened(
                False,
                problem=f"{where}: the stored value {why} (tampered with, or written with "
                "another key); it was not decoded and the stage runs again",
            )
        try:
            return _Opened(True, self.codec.decode(row.value))
        except Exception as exc:
            return _Opened(
                False,
                problem=f"{where}: the stored value cannot be decoded ({describe(exc)}); "
                "the stage runs again",
            )

    # -- runs ------------------------------------------------------------
    def live_holder(self, tables: Tables, target: RunRow) -> RunRow | None:
        """The live run that holds ``target``: itself, or a run resuming it."""
        if target.ended_at is None and _owner.is_alive(target.owner, target.run_id):
            return target
        for row in tables.unfinished_resumers(target.run_id):
            if _owner.is_alive(row.owner, row.run_id):
                return row
        return None

    def resolve(self, tables: Tables, resume: str, pipeline_name: str) -> RunRow:
        if resume != "latest":
            found = tables.get_run(resume)
            if found is None:
                raise RunNotFoundError(resume, pipeline_name)
            return found
        # "latest": the newest run of this pipeline that is not going on, so
        # two processes resuming "latest" after a crash pick the same run
        # (and the second is refused) instead of the second resuming the first.
        for row in tables.runs(pipeline_name, None):
            if row.ended_at is not None or not _owner.is_alive(row.owner, row.run_id):
                return row
        raise RunNotFoundError("latest", pipeline_name)

    def begin(self, tables: Tables, row: RunRow, resume: str | None, journal: Any) -> str | None:
        """Insert the run (claiming ``resume``) in one transaction."""
        with tables.transaction():
            if resume is not None:
                target = self.resolve(tables, resume, row.pipeline_name)
                holder = self.live_holder(tables, target)
                if holder is not None:
                    raise ResumeConflictError(target.run_id, holder.run_id, holder.owner.pid)
                row.resumed_from = target.run_id
            # Registered before the commit: another run of this process that
            # checks the claim after the commit sees this one alive.
            _owner.register(row.run_id, journal)
            try:
                tables.insert_run(row)
            except BaseException:
                _owner.unregister(row.run_id)
                raise
        return row.resumed_from

    def runs(self, tables: Tables, pipeline_name: str | None, limit: int) -> list[RunInfo]:
        return [row.info() for row in tables.runs(pipeline_name, limit)]

    def delete_run(self, tables: Tables, run_id: str) -> bool:
        return tables.delete_run(run_id)

    # -- rebuilding a result ----------------------------------------------
    def load(self, tables: Tables, run_id: str) -> tuple[PipelineResult, list[str]]:
        run = tables.get_run(run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        meta: dict[str, Any] = json.loads(run.result) if run.result else {}
        rows = {row.stage_id: row for row in tables.stage_rows(run_id)}
        dependencies = {sid: tuple(deps) for sid, deps in meta.get("dependencies", {}).items()}
        order = list(meta.get("stages") or dependencies or rows)
        order += [sid for sid in rows if sid not in set(order)]
        problems: list[str] = []
        results = {}
        for sid in order:
            row = rows.get(sid)
            results[sid] = (
                StageResult(stage_id=sid, stage_name=sid, status=StageStatus.PENDING)
                if row is None
                else self._stage_result(tables, row, problems)
            )
        metadata = dict(meta.get("metadata", {}))
        if run.ended_at is None:
            metadata["store"] = {"finished": False}
        reason = meta.get("cancellation_reason")
        result = PipelineResult(
            pipeline_id=meta.get("pipeline_id", run_id),
            pipeline_name=run.pipeline_name,
            status=PipelineStatus[run.status] if run.status else PipelineStatus.RUNNING,
            stage_results=results,
            start_time=meta.get("start_time", run.started_at),
            end_time=meta.get("end_time", run.ended_at),
            cancellation_reason=CancellationReason[reason] if reason else None,
            metadata=metadata,
            dependencies=dependencies,
            run_id=run_id,
        )
        return result, problems

    def _stage_result(self, tables: Tables, row: StageRow, problems: list[str]) -> StageResult:
        value = None
        if row.status == _COMPLETED:
            source: StageRow | None = row
            if row.restored_from is not None:
                source = tables.stage_row(row.restored_from, row.stage_id)
            if source is None:
                problems.append(
                    f"stage {row.stage_id!r} (run {row.run_id!r}): its value was restored from "
                    f"run {row.restored_from!r}, which the store no longer holds"
                )
            elif source.value is not None:
                opened = self.open(source)
                if opened.ok:
                    value = opened.value
                elif opened.problem:
                    problems.append(opened.problem)
        return StageResult(
            stage_id=row.stage_id,
            stage_name=row.stage_name,
            status=StageStatus[row.status],
            result=value,
            error=row.error,
            exception=None,
            start_time=row.start_time,
            end_time=row.end_time,
            attempt_count=row.attempt_count,
            metrics=json.loads(row.metrics) if row.metrics else {},
            critical=row.critical,
            restored_from=row.restored_from,
        )


def warn_all(problems: Sequence[str]) -> None:
    """Each problem as a :class:`StoreWarning` and a log warning, from the
    caller's thread (never from a worker thread), pointed at the first caller
    outside the store (the user's ``load()``, the engine's journal call),
    however many of the store's own methods lie in between."""
    if not problems:
        return
    level = _outside_the_store()
    for problem in problems:
        logger.warning("store: %s", problem)
        warnings.warn(problem, StoreWarning, stacklevel=level)


_STORE_PACKAGE = __name__.rpartition(".")[0] + "."


def _outside_the_store() -> int:
    """The ``stacklevel`` that, given to ``warnings.warn`` in :func:`warn_all`,
    names the nearest frame that is not one of this package's modules."""
    frame = sys._getframe(2)  # warn_all's caller
    level = 2
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        _STORE_PACKAGE
    ):
        frame = frame.f_back
        level += 1
    return level


# -- one run --------------------------------------------------------------------------------------

Caller = Callable[..., Any]


class Journal:
    """A store's handle on one run (the ``RunJournal`` protocol).

    ``call(fn, *args)`` runs ``fn(tables, *args)`` with the backend's tables
    without blocking the event loop, one at a time per store.
    """

    def __init__(
        self,
        core: StoreCore,
        call: Callable[..., Any],
        run_id: str,
        resumed_from: str | None,
    ) -> None:
        self._core = core
        self._call = call
        self._run_id = run_id
        self._resumed_from = resumed_from
        self._written: set[str] = set()  # stage ids with a row of this run
        self._restored: dict[str, Restored] = {}
        #: Restored stages' final records, written with the next write.
        self._pending: dict[str, StageRow] = {}
        self._state_lock = threading.Lock()
        self._finished = False

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def resumed_from(self) -> str | None:
        return self._resumed_from

    # -- lookup -----------------------------------------------------------
    async def lookup(self, wanted: Sequence[Lookup]) -> dict[str, Restored]:
        if not wanted:
            return {}
        restored, problems = await self._call(self._lookup, list(wanted), time.time())
        warn_all(problems)
        return restored  # type: ignore[no-any-return]

    def _lookup(
        self, tables: Tables, wanted: list[Lookup], now: float
    ) -> tuple[dict[str, Restored], list[str]]:
        chain = self._chain(tables, wanted)
        restored: dict[str, Restored] = {}
        problems: list[str] = []
        tried: set[tuple[str, str]] = set()
        rows: list[StageRow] = []
        for item in _in_dependency_order(wanted):
            found = None
            if item.resume:
                found = self._from_resumed(tables, chain, item, restored, tried, problems)
            if found is None and item.cache:
                found = self._from_cache(tables, item, now, tried, problems)
            if found is None:
                continue
            restored[item.stage_id], origin = found
            rows.append(
                StageRow(
                    run_id=self._run_id,
                    stage_id=item.stage_id,
                    stage_name=origin.stage_name,
                    key=item.key,
                    status=_COMPLETED,
                    value=None,  # the value stays in the run that computed it
                    signature=None,
                    codec=None,
                    attempt_count=0,
                    error=None,
                    exception=None,
                    start_time=now,
                    end_time=now,
                    metrics="{}",
                    critical=origin.critical,
                    restored_from=origin.run_id,
                    created_at=now,
                )
            )
        if rows:
            with tables.transaction():
                tables.put_stage_rows(rows)
        with self._state_lock:
            self._written.update(restored)
            self._restored.update(restored)
        return restored, problems

    def _chain(self, tables: Tables, wanted: list[Lookup]) -> list[dict[str, StageRef]]:
        """Rows of the resumed run, then of the run it resumed... as far as
        needed for a stage that a run died before recording."""
        if self._resumed_from is None or not any(w.resume for w in wanted):
            return []
        missing = {w.stage_id for w in wanted if w.resume}
        chain: list[dict[str, StageRef]] = []
        run_id: str | None = self._resumed_from
        seen: set[str] = set()
        while run_id is not None and missing and run_id not in seen and len(seen) < _MAX_CHAIN:
            seen.add(run_id)
            refs = tables.stage_refs(run_id)
            chain.append(refs)
            missing -= refs.keys()
            run = tables.get_run(run_id)
            run_id = run.resumed_from if run is not None else None
        return chain

    def _from_resumed(
        self,
        tables: Tables,
        chain: list[dict[str, StageRef]],
        item: Lookup,
        restored: Mapping[str, Restored],
        tried: set[tuple[str, str]],
        problems: list[str],
    ) -> tuple[Restored, StageRow] | None:
        ref = next((refs[item.stage_id] for refs in chain if item.stage_id in refs), None)
        if ref is None or ref.status != _COMPLETED or ref.key != item.key:
            return None
        if not all(dep in restored for dep in item.dependencies):
            return None  # something upstream runs again, so this stage does too
        origin = ref.restored_from or ref.run_id
        row = tables.stage_row(origin, item.stage_id)
        if row is None or row.key != item.key or row.restored_from is not None:
            return None
        return self._try(row, item, "resume", tried, problems)

    def _from_cache(
        self,
        tables: Tables,
        item: Lookup,
        now: float,
        tried: set[tuple[str, str]],
        problems: list[str],
    ) -> tuple[Restored, StageRow] | None:
        oldest = None if item.max_age is None else now - item.max_age
        for row in tables.cache_rows(item.stage_id, item.key, oldest, _MAX_CACHE_TRIES):
            if row.run_id == self._run_id:
                continue
            found = self._try(row, item, "cache", tried, problems)
            if found is not None:
                return found
        return None

    def _try(
        self,
        row: StageRow,
        item: Lookup,
        via: str,
        tried: set[tuple[str, str]],
        problems: list[str],
    ) -> tuple[Restored, StageRow] | None:
        if (row.run_id, row.stage_id) in tried or row.value is None:
            return None  # no value: already said when it was recorded
        tried.add((row.run_id, row.stage_id))
        opened = self._core.open(row)
        if not opened.ok:
            if opened.problem:
                problems.append(opened.problem)
            return None
        return Restored(item.stage_id, opened.value, row.run_id, via), row

    # -- record_stage -------------------------------------------------------
    async def record_stage(self, result: StageResult, key: str | None) -> None:
        with self._state_lock:
            if self._finished:
                logger.debug("store: record_stage(%r) after finish() ignored", result.stage_id)
                return
            if result.restored_from is not None and result.stage_id in self._restored:
                # Its row was written by lookup(); only its final times and
                # name are left, which ride along with the next write.
                self._pending[result.stage_id] = self._row(result, key, None)
                return
        problems = await self._call(self._record, result, key)
        warn_all(problems)

    async def record_stages(self, records: Sequence[tuple[StageResult, str | None]]) -> None:
        fresh = []
        with self._state_lock:
            if self._finished:
                logger.debug("store: record_stages() after finish() ignored")
                return
            for result, key in records:
                if result.restored_from is not None and result.stage_id in self._restored:
                    self._pending[result.stage_id] = self._row(result, key, None)
                else:
                    fresh.append((result, key))
        if fresh:
            warn_all(await self._call(self._record_many, fresh))

    def _record(self, tables: Tables, result: StageResult, key: str | None) -> list[str]:
        return self._record_many(tables, [(result, key)])

    def _record_many(
        self, tables: Tables, records: Sequence[tuple[StageResult, str | None]]
    ) -> list[str]:
        problems: list[str] = []
        rows = [self._row(result, key, problems) for result, key in records]
        with self._state_lock:
            pending = list(self._pending.values())
            self._pending.clear()
        try:
            with tables.transaction():
                tables.put_stage_rows([*pending, *rows])
        except BaseException:
            with self._state_lock:  # not written: they go with the next write
                self._pending = {r.stage_id: r for r in pending} | self._pending
            raise
        with self._state_lock:
            self._written.update(row.stage_id for row in rows)
        return problems

    def _row(self, result: StageResult, key: str | None, problems: list[str] | None) -> StageRow:
        blob = signature = codec = None
        status = result.status.name
        if result.status is StageStatus.COMPLETED and result.restored_from is None:
            blob, signature, codec, problem = self._core.seal(
                self._run_id, result.stage_id, key, result.result
            )
            if problem is not None and problems is not None:
                problems.append(problem)
        error = result.error
        if error is None and result.exception is not None and status != _COMPLETED:
            error = describe(result.exception)
        return StageRow(
            run_id=self._run_id,
            stage_id=result.stage_id,
            stage_name=_safe_text(result.stage_name),
            key=key,
            status=status,
            value=blob,
            signature=signature,
            codec=codec,
            attempt_count=int(result.attempt_count),
            error=error,
            exception=_exception_text(result.exception),
            start_time=result.start_time,
            end_time=result.end_time,
            metrics=_json(result.metrics),
            critical=bool(result.critical),
            restored_from=result.restored_from,
            created_at=time.time(),
        )

    # -- finish -------------------------------------------------------------
    async def finish(self, result: PipelineResult) -> None:
        with self._state_lock:
            if self._finished:
                return
            self._finished = True
        try:
            problems = await self._call(self._finish, result)
        finally:
            _owner.unregister(self._run_id)
        warn_all(problems)

    def _finish(self, tables: Tables, result: PipelineResult) -> list[str]:
        problems: list[str] = []
        with self._state_lock:
            rows = list(self._pending.values())
            self._pending.clear()
            written = set(self._written)
        rows += [
            self._row(r, None, problems)
            for sid, r in result.stage_results.items()
            if sid not in written and r.status.is_terminal
        ]
        meta = {
            "pipeline_id": result.pipeline_id,
            "stages": list(result.stage_results),
            "dependencies": {sid: list(deps) for sid, deps in result.dependencies.items()},
            "start_time": result.start_time,
            "end_time": result.end_time,
            "cancellation_reason": (
                result.cancellation_reason.name if result.cancellation_reason else None
            ),
            "metadata": json.loads(_json(result.metadata)),
        }
        ended = result.end_time if result.end_time is not None else time.time()
        with tables.transaction():
            if rows:
                tables.put_stage_rows(rows)
            tables.end_run(self._run_id, ended, result.status.name, json.dumps(meta))
        return problems


def _in_dependency_order(wanted: Sequence[Lookup]) -> Iterator[Lookup]:
    """Upstream before downstream (dependencies outside ``wanted`` ignored)."""
    by_id = {w.stage_id: w for w in wanted}
    waiting = {w.stage_id: sum(1 for d in w.dependencies if d in by_id) for w in wanted}
    dependents: dict[str, list[str]] = {}
    for w in wanted:
        for d in w.dependencies:
            if d in by_id:
                dependents.setdefault(d, []).append(w.stage_id)
    ready = [w.stage_id for w in reversed(wanted) if waiting[w.stage_id] == 0]
    emitted: set[str] = set()
    while ready:
        sid = ready.pop()
        emitted.add(sid)
        yield by_id[sid]
        for dependent in dependents.get(sid, ()):
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                ready.append(dependent)
    for w in wanted:  # a cycle cannot reach here from a valid plan; be total anyway
        if w.stage_id not in emitted:
            yield w


def begin_row(
    *,
    run_id: str,
    pipeline_name: str,
    graph_fingerprint: str,
    started_at: float,
    dependencies: Mapping[str, Sequence[str]] | None,
) -> RunRow:
    meta: dict[str, Any] = {}
    if dependencies is not None:
        meta["dependencies"] = {sid: list(deps) for sid, deps in dependencies.items()}
        meta["stages"] = list(dependencies)
    return RunRow(
        run_id=run_id,
        pipeline_name=pipeline_name,
        graph_fingerprint=graph_fingerprint,
        started_at=started_at,
        ended_at=None,
        status=None,
        resumed_from=None,
        result=json.dumps(meta) if meta else None,
        owner=_owner.this_process(),
        created_at=time.time(),
    )


def check_begin_args(
    run_id: Any, pipeline_name: Any, graph_fingerprint: Any, started_at: Any, resume: Any
) -> None:
    """Bad arguments named before anything is written."""
    for name, value in (
        ("run_id", run_id),
        ("pipeline_name", pipeline_name),
        ("graph_fingerprint", graph_fingerprint),
    ):
        if not isinstance(value, str) or not value:
            raise TypeError(f"begin_run: {name} must be a non-empty str, got {value!r}")
    if not isinstance(started_at, (int, float)) or isinstance(started_at, bool):
        raise TypeError(f"begin_run: started_at must be a number, got {started_at!r}")
    if resume is not None and (not isinstance(resume, str) or not resume):
        raise TypeError(
            f"resume must be a run id (a non-empty str), 'latest' or None, got {resume!r}"
        )
