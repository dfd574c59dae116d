"""The store commands: ``proxima runs``, ``proxima show``, ``proxima report``.

They read an SQLite store file (R13) with its plain methods ``runs()`` and
``load()``, outside any event loop. Without ``--store`` they read
``.proxima/runs.db`` in the working directory (:data:`DEFAULT_STORE`), the
place ``proxima run --store .proxima/runs.db`` would write to; a store file
that does not exist is an error, never a new empty store.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from .errors import UsageError

if TYPE_CHECKING:
    from proxima.data.pipeline import PipelineResult
    from proxima.data.pipeline.store.base import RunInfo, Store

__all__ = [
    "DEFAULT_STORE",
    "check_writable",
    "open_store",
    "report_command",
    "runs_command",
    "show_command",
]

#: The store the commands read when ``--store`` is not given (and ``--resume``
#: without ``--store`` resumes from).
DEFAULT_STORE = Path(".proxima") / "runs.db"

#: The run id that names the newest run in the store.
LATEST = "latest"


def open_store(path: Path, *, create: bool) -> Store:
    """The SQLite store at ``path``; with ``create`` its folder and file are
    made when missing, else a missing file is a :class:`UsageError`."""
    try:
        from proxima.data.pipeline.store import SQLiteStore
    except ImportError:
        raise UsageError(
            "this command needs the run store (R13), which this version of proxima does not have"
        ) from None
    if not path.is_file():
        if not create:
            raise UsageError(
                f"no store at {str(path)!r} (runs are recorded by"
                f" `proxima run TARGET --store {path}`)"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--store: cannot create {str(path.parent)!r}: {exc}") from None
    with _store_errors():
        store: Store = SQLiteStore(path)
    return store


def check_writable(path: Path, option: str) -> None:
    """Fail before any work when ``path`` cannot be written: no such folder."""
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"{option}: no such folder: {str(folder)!r}")


def runs_command(
    store_path: Path, *, as_json: bool, pipeline: str | None = None, limit: int = 50
) -> int:
    """List the recorded runs, newest first."""
    if limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    store = open_store(store_path, create=False)
    with _store_errors():
        runs = store.runs(pipeline_name=pipeline, limit=limit)
    if as_json:
        print(json.dumps([attrs.asdict(run) for run in runs]))
        return 0
    if not runs:
        print(f"no runs in {store_path}" + (f" for pipeline {pipeline!r}" if pipeline else ""))
        return 0
    print(_table(runs))
    return 0


def show_command(run_id: str, store_path: Path, *, as_json: bool) -> int:
    """Print one recorded run: its summary, or its ``to_dict()`` JSON."""
    result = _load(open_store(store_path, create=False), run_id, store_path)
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.summary())
    return 0


def report_command(run_id: str, html: Path, store_path: Path) -> int:
    """Write the HTML report of one recorded run."""
    check_writable(html, "--html")
    result = _load(open_store(store_path, create=False), run_id, store_path)
    result.to_html(html)
    print(f"HTML report of run {result.run_id or run_id} written to {html}")
    return 0


def _load(store: Store, run_id: str, store_path: Path) -> PipelineResult:
    with _store_errors():
        if run_id == LATEST:
            newest = store.runs(limit=1)
            if not newest:
                raise UsageError(f"no runs in {store_path}")
            run_id = newest[0].run_id
        try:
            result: PipelineResult = store.load(run_id)
        except LookupError:
            raise UsageError(f"no run {run_id!r} in {store_path}") from None
    return result


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """A store that cannot be read (not a store file, locked, newer format)
    is the user's to fix: one line, exit 2."""
    from proxima.data.pipeline import PipelineException

    try:
        yield
    except PipelineException as exc:
        raise UsageError(str(exc)) from None


def _table(runs: list[RunInfo]) -> str:
    header = ("RUN ID", "PIPELINE", "STATUS", "STARTED", "DURATION", "RESUMED FROM")
    rows = [header, *(_row(run) for run in runs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _row(run: RunInfo) -> tuple[str, ...]:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started_at))
    took = "-" if run.ended_at is None else _duration(run.ended_at - run.started_at)
    return (
        run.run_id,
        run.pipeline_name,
        run.status or "UNFINISHED",
        started,
        took,
        run.resumed_from or "-",
    )


def _duration(seconds: float) -> str:
    return f"{seconds:.2f}s" if seconds < 60 else f"{seconds / 60:.1f}min"
