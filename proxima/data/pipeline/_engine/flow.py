"""What a stage's end does downstream: inputs, readiness, skips, restores.

A COMPLETED stage decrements its dependents' waiting counts (R2.4: each
edge is touched once); a dependent reaching zero gets its input (R3.1-R3.3)
and is queued, or, when a store has a value for it (R13.3), completed on
the spot and released in turn, in a loop rather than by recursion so a
10 000-stage restored chain needs no deep stack. A FAILED or TIMED_OUT stage
skips everything below it that has not started (R6.2, R5.3).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from .._graph import Plan
from .._model.enums import StageStatus
from .._model.errors import DependencyFailedException
from .._model.events import EventKind
from ..store.base import Restored
from .emitter import Emitter
from .ledger import Ledger
from .slots import Slots
from .state import StageState

__all__ = ["Flow"]

_perf = time.perf_counter
_QUEUED = StageStatus.QUEUED


class Flow:
    """Moves stages from PENDING to QUEUED (or restored), or to SKIPPED."""

    __slots__ = ("_emitter", "_ledger", "_plan", "_restoring", "_slots", "_states", "restored")

    def __init__(
        self,
        plan: Plan,
        states: Sequence[StageState],
        ledger: Ledger,
        slots: Slots,
        emitter: Emitter,
    ) -> None:
        self._plan = plan
        self._states = states
        self._ledger = ledger
        self._slots = slots
        self._emitter = emitter
        self._restoring: list[StageState] = []
        #: Stage id -> the stored value that stands in for it (set by the store).
        self.restored: Mapping[str, Restored] = {}

    def queue_roots(self, initial_input: Any) -> None:
        """Every stage without dependencies receives ``initial_input`` (R3.1)."""
        now = _perf()
        for state in self._states:
            if state.waiting == 0:
                state.input = initial_input
                self._ready(state, now)
        if self._restoring:
            self._restore()

    def requeue(self, state: StageState) -> None:
        """``state`` waits for a slot again (a retry, R4)."""
        self._ready(state, _perf())

    def release(self, state: StageState) -> None:
        """``state`` COMPLETED: its dependents whose dependencies all did are ready."""
        self._release(state)
        if self._restoring:
            self._restore()

    def skip_below(self, state: StageState) -> None:
        """Every stage downstream of ``state`` that has not started ends
        SKIPPED, blaming ``state``; each is visited at most once."""
        root = state.stage.stage_id
        dependents = self._plan.dependents
        states = self._states
        todo = list(dependents[state.position])
        while todo:
            dependent = states[todo.pop()]
            if dependent.status is StageStatus.PENDING:
                self._ledger.end(
                    dependent,
                    StageStatus.SKIPPED,
                    DependencyFailedException(dependent.stage.stage_id, root),
                )
                todo.extend(dependents[dependent.position])

    def _release(self, state: StageState) -> None:
        plan = self._plan
        states = self._states
        now = _perf()
        for position in plan.dependents[state.position]:
            dependent = states[position]
            dependent.waiting -= 1
            if dependent.waiting == 0:
                deps = plan.dependencies[position]
                if len(deps) == 1:
                    dependent.input = state.final.result  # type: ignore[union-attr]
                else:
                    dependent.input = {
                        (done := states[d]).stage.stage_id: done.final.result  # type: ignore[union-attr]
                        for d in deps
                    }
                self._ready(dependent, now)

    def _ready(self, state: StageState, now: float) -> None:
        if self.restored and state.stage.stage_id in self.restored:
            self._restoring.append(state)  # no slot, no attempt: its stored value stands in
            return
        state.status = _QUEUED
        state.ready_at = now
        self._slots.push(state)
        if self._emitter.verbose:
            self._emitter.emit(
                EventKind.STAGE_QUEUED,
                stage_id=state.stage.stage_id,
                attempt=state.attempts + 1,
                status=_QUEUED,
            )

    def _restore(self) -> None:
        restoring = self._restoring
        while restoring:
            state = restoring.pop()
            stored = self.restored[state.stage.stage_id]
            self._ledger.end(
                state,
                StageStatus.COMPLETED,
                None,
                stored.value,
                restored_from=stored.from_run_id,
            )
            self._release(state)
