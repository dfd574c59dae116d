"""What ``SQLiteStore`` and ``MemoryStore`` share above their tables: the
:class:`Store` protocol's methods, written once.

Each store says only how its tables are reached: ``_call`` (awaited; the
run's journal writes through it) and ``_plain`` (a plain call, usable
outside any event loop). How it opens its tables, which threads and which
file it uses stay in the store's own module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ._core import Journal, StoreCore, begin_row, check_begin_args, warn_all
from .base import RunInfo

if TYPE_CHECKING:
    from .._model.results import PipelineResult

__all__ = ["RowStore"]

T = TypeVar("T")


class RowStore:
    """The base of the two stores: the :class:`Store` protocol over a
    :class:`StoreCore` and a backend's tables. A subclass sets ``_core`` and
    implements ``_call`` and ``_plain``."""

    _core: StoreCore

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(tables, *args)`` without blocking the event loop."""
        raise NotImplementedError

    def _plain(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(tables, *args)`` as a plain call, outside any event loop."""
        raise NotImplementedError

    async def begin_run(
        self,
        *,
        run_id: str,
        pipeline_name: str,
        graph_fingerprint: str,
        started_at: float,
        resume: str | None,
        dependencies: Mapping[str, Sequence[str]] | None = None,
    ) -> Journal:
        """Record a new run (see :class:`Store`); raises ``RunNotFoundError`` or
        ``ResumeConflictError`` for a ``resume=`` that cannot be taken."""
        check_begin_args(run_id, pipeline_name, graph_fingerprint, started_at, resume)
        row = begin_row(
            run_id=run_id,
            pipeline_name=pipeline_name,
            graph_fingerprint=graph_fingerprint,
            started_at=started_at,
            dependencies=dependencies,
        )
        journal = Journal(self._core, self._call, run_id, None)
        journal._resumed_from = await self._call(self._core.begin, row, resume, journal)
        return journal

    def runs(self, pipeline_name: str | None = None, limit: int = 50) -> list[RunInfo]:
        """Recorded runs, newest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"runs(): limit must be an int >= 1, got {limit!r}")
        return self._plain(self._core.runs, pipeline_name, limit)

    def load(self, run_id: str) -> PipelineResult:
        """The recorded result of ``run_id`` (values decoded again)."""
        result, problems = self._plain(self._core.load, run_id)
        warn_all(problems)
        return result

    def delete_run(self, run_id: str) -> bool:
        """Delete a run and its stage rows; ``False`` if it was not there."""
        return self._plain(self._core.delete_run, run_id)
