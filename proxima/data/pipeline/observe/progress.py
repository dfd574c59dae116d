"""Live terminal progress with rich (optional extra ``proxima[rich]``).

A listener, so it works the same under asyncio and trio: events update a
small state table on the loop's thread and rich's refresh thread draws it;
a lock keeps the two apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from .._model.enums import StageStatus
from .._model.events import EventKind, Listener, PipelineEvent
from .._model.stage import Stage

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

__all__ = ["RichProgress", "Watchable"]


class Watchable(Protocol):
    """What :class:`RichProgress` needs of a pipeline: its stages and its
    listeners. A protocol, so that ``observe`` never imports the facade that
    sits above it (a :class:`~proxima.data.pipeline.Pipeline` satisfies it)."""

    @property
    def stages(self) -> Sequence[Stage]:
        """The stages in the order they were added."""
        ...

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every event of every run."""
        ...

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        ...


_STYLES = {
    StageStatus.PENDING: "dim",
    StageStatus.QUEUED: "cyan",
    StageStatus.RUNNING: "bold blue",
    StageStatus.RETRYING: "yellow",
    StageStatus.COMPLETED: "green",
    StageStatus.FAILED: "bold red",
    StageStatus.TIMED_OUT: "red",
    StageStatus.CANCELLED: "magenta",
    StageStatus.SKIPPED: "dim",
}


class _Row:
    __slots__ = ("attempt", "ended", "started", "status")

    def __init__(self) -> None:
        self.status = StageStatus.PENDING
        self.attempt = 0
        self.started: float | None = None
        self.ended: float | None = None


class RichProgress:
    """Overall progress and a live table of stages (status, attempt, elapsed).

    Use it as a context manager around runs of one pipeline
    (``with RichProgress(pipeline): await pipeline.execute()``) or add it as
    a listener yourself. The table shows the stages that are active and the
    latest finished ones, so it stays readable for pipelines of any size.

    ``console`` is the rich console to draw on (a new one on stdout by
    default); ``max_rows`` caps the table; ``refresh_per_second`` is how
    often rich redraws; ``transient=True`` erases the display at the end.
    """

    def __init__(
        self,
        pipeline: Watchable | None = None,
        *,
        console: Console | None = None,
        max_rows: int = 15,
        refresh_per_second: float = 8,
        transient: bool = False,
    ) -> None:
        try:
            from rich.console import Console
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ImportError("RichProgress needs rich: pip install 'proxima[rich]'") from exc
        self._pipeline = pipeline
        self._console = console or Console()
        self._max_rows = max_rows
        self._refresh = refresh_per_second
        self._transient = transient
        self._lock = threading.Lock()
        self._rows: dict[str, _Row] = {}
        self._title = ""
        self._run_status = ""
        self._live: Live | None = None

    def __enter__(self) -> RichProgress:
        if self._pipeline is not None:
            self._rows = {st.stage_id: _Row() for st in self._pipeline.stages}
            self._pipeline.add_listener(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pipeline is not None:
            self._pipeline.remove_listener(self)
        self._stop()

    def __call__(self, event: PipelineEvent) -> None:
        kind = event.kind
        with self._lock:
            if kind is EventKind.RUN_STARTED:
                self._title = event.pipeline_name
                self._run_status = "RUNNING"
                if self._pipeline is not None:
                    self._rows = {st.stage_id: _Row() for st in self._pipeline.stages}
            elif event.stage_id is not None and isinstance(event.status, StageStatus):
                row = self._rows.setdefault(event.stage_id, _Row())
                row.status = event.status
                row.attempt = event.attempt or row.attempt
                if kind is EventKind.STAGE_STARTED and row.started is None:
                    row.started = event.monotonic
                if kind is EventKind.STAGE_FINISHED:
                    row.ended = event.monotonic
            elif event.status is not None:
                self._run_status = event.status.name
        if kind is EventKind.RUN_STARTED:
            self._start()
        elif kind is EventKind.RUN_FINISHED:
            self._stop()

    def _start(self) -> None:
        from rich.live import Live

        self._stop()
        self._live = Live(
            get_renderable=self._render,
            console=self._console,
            refresh_per_second=self._refresh,
            transient=self._transient,
        )
        self._live.start()

    def _stop(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.refresh()
            live.stop()

    def _render(self) -> RenderableType:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        now = time.monotonic()
        with self._lock:
            rows = list(self._rows.items())
            title, run_status = self._title, self._run_status
        total = len(rows)
        done = sum(1 for _, r in rows if r.status.is_terminal)
        active = [(sid, r) for sid, r in rows if not r.status.is_terminal and r.started]
        finished = sorted(
            ((sid, r) for sid, r in rows if r.status.is_terminal),
            key=lambda item: item[1].ended or 0.0,
        )
        shown = (active + finished[::-1])[: self._max_rows]
        table = Table(title=f"{title} - {run_status}  {done}/{total} stages", expand=False)
        table.add_column("stage")
        table.add_column("status")
        table.add_column("attempt", justify="right")
        table.add_column("elapsed", justify="right")
        for sid, r in shown:
            elapsed = "" if r.started is None else f"{(r.ended or now) - r.started:.2f}s"
            style = _STYLES[r.status]
            table.add_row(sid, f"[{style}]{r.status.name}[/]", str(r.attempt or ""), elapsed)
        counts: dict[str, int] = {}
        for _, r in rows:
            counts[r.status.name] = counts.get(r.status.name, 0) + 1
        tally = "  ".join(f"{name.lower()}: {n}" for name, n in counts.items())
        header = Table.grid(padding=(0, 1))
        header.add_row(ProgressBar(total=max(total, 1), completed=done, width=40), tally)
        return Group(header, table)
