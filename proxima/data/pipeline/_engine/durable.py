"""A run made durable: its keys, the stored values that stand in for stages,
and the records it writes (R13), through the store's :class:`RunJournal`.

Terminal records are queued as the ledger writes them and written, in
order, at the next point the engine awaits: when a stage COMPLETES, its
record (and every queued one) is committed **before** its dependents are
released (R13.2); the rest are written when the run ends, shielded.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Sequence
from typing import Any

import anyio

from .._graph import Plan
from .._model.log import logger
from .._model.results import PipelineResult
from .._model.text import describe
from ..store import StoreError
from ..store import keys as store_keys
from ..store.base import Restored, RunJournal, Store
from .state import StageState

__all__ = ["Durable"]


class Durable:
    """One run's side of a store (see the module docstring)."""

    __slots__ = ("_journal", "_pending", "_resume", "_store", "_writing", "errors", "restored")

    def __init__(self, store: Store, resume: str | None) -> None:
        self._store = store
        self._resume = resume
        self._journal: RunJournal | None = None
        self._pending: collections.deque[StageState] = collections.deque()
        self._writing = anyio.Lock()
        #: What went wrong writing records (the run went on regardless).
        self.errors: list[str] = []
        #: Stage id -> the stored value that stands in for it this run.
        self.restored: dict[str, Restored] = {}

    @property
    def run_id(self) -> str | None:
        return None if self._journal is None else self._journal.run_id

    async def open(
        self,
        plan: Plan,
        states: Sequence[StageState],
        *,
        name: str,
        started_at: float,
        initial_input: Any,
    ) -> None:
        """Record the run and find what may be restored; raises before
        anything runs for an unknown run to resume, a resume conflict, or an
        input that cannot be fingerprinted where a key is needed."""
        stages = plan.stages
        wants_keys = self._resume is not None or any(s.cache for s in stages)
        try:
            keys = store_keys.stage_keys(stages, plan.dependencies, initial_input)
        except TypeError:
            if wants_keys:
                raise
            keys = {}  # recording needs no keys: the run goes on without
        for state in states:
            state.key = keys.get(state.stage.stage_id)
        self._journal = journal = await self._store.begin_run(
            run_id=uuid.uuid4().hex,
            pipeline_name=name,
            graph_fingerprint=store_keys.graph_fingerprint(stages, plan.dependencies),
            started_at=started_at,
            resume=self._resume,
            dependencies={s.stage_id: s.dependencies for s in stages},
        )
        wanted = store_keys.lookups_for(stages, keys, resume=self._resume is not None)
        if wanted:
            self.restored = await journal.lookup(wanted)

    def ended(self, state: StageState) -> None:
        """The ledger gave ``state`` its terminal record: queue it."""
        self._pending.append(state)

    async def flush(self) -> None:
        """Write every queued record, oldest first; committed on return."""
        journal = self._journal
        pending = self._pending
        if journal is None or not pending:
            return
        async with self._writing:  # one write at a time; a later one takes what is left
            if not pending:
                return
            records = [(state.final, state.key) for state in pending]
            try:
                await journal.record_stages(records)  # type: ignore[arg-type]  # final is set
            except StoreError as exc:
                # The run is worth more than its record: it goes on, and the
                # stages whose records were lost simply run again on resume.
                self.errors.append(describe(exc))
                logger.warning("store: %d stage records not written: %s", len(records), exc)
            for _ in records:  # only now: a write cut short is written again at the end
                pending.popleft()

    async def finish(self, result: PipelineResult) -> None:
        """The rest of the records and the run's end, whatever ended it."""
        with anyio.CancelScope(shield=True):
            await self.flush()
            if self.errors:
                result.metadata["store_errors"] = list(self.errors)
            if self._journal is not None:
                try:
                    await self._journal.finish(result)
                except StoreError as exc:
                    result.metadata.setdefault("store_errors", []).append(describe(exc))
                    logger.warning("store: the end of run %s not written: %s", self.run_id, exc)
