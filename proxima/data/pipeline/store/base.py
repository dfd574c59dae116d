"""The seam where a run is made durable: the :class:`Store` protocol.

The engine talks to a store through one :class:`RunJournal` per run:

1. ``await store.begin_run(...)`` before any stage starts: records the run
   and, with ``resume=``, resolves the run to resume (``"latest"`` or an id)
   and claims it; an unknown run, or one another live run is resuming,
   raises here, before anything runs (R13.3, R13.5).
2. ``await journal.lookup(wanted)`` once, at the start: the stored values
   that may stand in for stages of this run (resume within the resumed run,
   the cache across every earlier run), already decoded and verified; a
   value whose signature does not match is left out with a warning (R13.6).
3. ``await journal.record_stage(result, key)`` for every terminal stage
   result, as it ends; the engine releases a COMPLETED stage's dependents
   only after this returned, so a value is committed before any dependent
   starts (R13.2).
4. ``await journal.finish(result)`` once, shielded, at the end of
   ``execute()`` whatever happened (also after a stop or an outer
   cancellation); it releases the resume claim.

The plain methods ``runs()`` and ``load()`` work outside any event loop
(the command line uses them, R13.7).
"""

from __future__ import annotations

from collections.abc import Sequence
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
    def run_id(self) -> str: ...
    @property
    def resumed_from(self) -> str | None: ...
    async def lookup(self, wanted: Sequence[Lookup]) -> dict[str, Restored]: ...
    async def record_stage(self, result: StageResult, key: str | None) -> None: ...
    async def finish(self, result: PipelineResult) -> None: ...


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
    ) -> RunJournal: ...

    def runs(self, pipeline_name: str | None = None, limit: int = 50) -> list[RunInfo]: ...

    def load(self, run_id: str) -> PipelineResult: ...
