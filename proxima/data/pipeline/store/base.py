"""The seam where a run is made durable: the :class:`Store` protocol.

The engine talks to a store through one :class:`RunJournal` per run:

1. ``await store.begin_run(...)`` before any stage starts: records the run
   and, with ``resume=``, resolves the run to resume (``"latest"``: the
   newest run of this pipeline that is not going on; or an id) and claims
   it; an unknown run (``RunNotFoundError``), or one that is still going on
   or that another live run is resuming (``ResumeConflictError``), raises
   here, before anything runs (R13.3, R13.5).
2. ``await journal.lookup(wanted)`` once, at the start: the stored values
   that may stand in for stages of this run (resume within the resumed run,
   the cache across every earlier run), already verified and decoded; a
   value whose signature does not match is left out with a warning (R13.6).
   With ``resume=``, pass a :class:`Lookup` for every stage (with its
   ``dependencies``): a stage is restored by resume only if everything
   upstream of it is restored too. The restored stages are recorded in the
   new run right there, in one write.
3. ``await journal.record_stage(result, key)`` for every terminal stage
   result, as it ends; the engine releases a COMPLETED stage's dependents
   only after this returned, so a value is committed before any dependent
   starts (R13.2). For a restored stage (``result.restored_from`` set) it
   returns at once: its final times ride along with the next write.
4. ``await journal.finish(result)`` once, shielded, at the end of
   ``execute()`` whatever happened (also after a stop or an outer
   cancellation); it records the end and releases the resume claim.

The plain methods ``runs()`` and ``load()`` work outside any event loop
(the command line uses them, R13.7).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    from .._model.results import PipelineResult, StageResult

__all__ = ["Lookup", "Restored", "RunInfo", "RunJournal", "Store"]


@attrs.frozen
class RunInfo:
    """One recorded run, as ``store.runs()`` lists it."""

    run_id: str
    pipeline_name: str
    graph_fingerprint: str
    started_at: float
    #: ``None`` while the run is going on, or if its process died.
    ended_at: float | None
    #: The final status's name (``"COMPLETED"``...), ``None`` if unfinished.
    status: str | None
    #: The run this one resumed, if any.
    resumed_from: str | None = None


def _ids(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class Lookup:
    """A stage of the new run that a stored value might stand in for."""

    stage_id: str
    #: The stage's key: stage id + code version + upstream keys (roots: the
    #: initial input's fingerprint). See ``store.keys``.
    key: str
    #: Look in the resumed run (``resume=``) for this stage.
    resume: bool
    #: Look in every earlier run (``Stage(cache=True)``).
    cache: bool
    #: With ``cache``: the oldest acceptable result, in seconds.
    max_age: float | None = None
    #: The ids of the stages this one depends on. With ``resume``, a stage is
    #: restored only if each of them is restored too (by resume or the
    #: cache): when something upstream runs again, so does this stage
    #: (R13.3). So with ``resume=`` pass a ``Lookup`` for every stage.
    dependencies: tuple[str, ...] = attrs.field(default=(), converter=_ids)


@attrs.frozen
class Restored:
    """A stored COMPLETED value that stands in for a stage."""

    stage_id: str
    value: Any
    #: The run that computed the value.
    from_run_id: str
    #: ``"resume"`` or ``"cache"``.
    via: str


@runtime_checkable
class RunJournal(Protocol):
    """A store's handle on one run (see the module docstring)."""

    @property
    def run_id(self) -> str:
        """This run's id in the store."""
        ...

    @property
    def resumed_from(self) -> str | None:
        """The run this one resumes (``"latest"`` resolved), if any."""
        ...

    async def lookup(self, wanted: Sequence[Lookup]) -> dict[str, Restored]:
        """The stored values that stand in for stages of ``wanted``, by id."""
        ...

    async def record_stage(self, result: StageResult, key: str | None) -> None:
        """Record a terminal stage result; committed when this returns."""
        ...

    async def record_stages(self, records: Sequence[tuple[StageResult, str | None]]) -> None:
        """Record several ``(result, key)`` at once: one write, one commit."""
        ...

    async def finish(self, result: PipelineResult) -> None:
        """Record the run's end and release its resume claim."""
        ...


@runtime_checkable
class Store(Protocol):
    """Where runs are recorded (R13). ``SQLiteStore`` and ``MemoryStore``
    implement it; a shared database server would be the next one."""

    async def begin_run(
        self,
        *,
        run_id: str,
        pipeline_name: str,
        graph_fingerprint: str,
        started_at: float,
        resume: str | None,
        dependencies: Mapping[str, Sequence[str]] | None = None,
    ) -> RunJournal:
        """Record a new run; ``dependencies`` (stage id -> its dependencies'
        ids, in stage order) lets ``load()`` show the stages of a run that
        died before ``finish()``. Raises ``RunNotFoundError`` /
        ``ResumeConflictError`` (see the module docstring)."""
        ...

    def runs(self, pipeline_name: str | None = None, limit: int = 50) -> list[RunInfo]:
        """Recorded runs, newest first (of ``pipeline_name`` only, if given)."""
        ...

    def load(self, run_id: str) -> PipelineResult:
        """The recorded result of ``run_id`` (``RunNotFoundError`` if unknown)."""
        ...
