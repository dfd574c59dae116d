"""Who runs next: the ready queue, the ``max_parallel`` slots and the tag limits.

Ready stages wait on a min-heap keyed by their position in the pipeline, so
the earliest-added ready stage takes a free slot (R2.2). A stage whose
limited tag is full (R12) is set aside on that tag's own heap, holding no
slot, so it never blocks a later ready stage whose tags have room; when an
attempt with that tag gives its slot back, the earliest stage set aside for
the tag returns to the ready heap. Every operation is O(log n).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

from .state import StageState

__all__ = ["Slots"]


class Slots:
    """Hands out attempt slots; one owner for every slot count."""

    __slots__ = ("_blocked", "_in_use", "_limit", "_ready", "_states", "_tag_limits", "running")

    def __init__(
        self, states: Sequence[StageState], limit: int, tag_limits: Mapping[str, int]
    ) -> None:
        self._states = states
        self._limit = limit
        self._tag_limits = dict(tag_limits)
        self._ready: list[int] = []
        self._blocked: dict[str, list[int]] = {tag: [] for tag in tag_limits}
        self._in_use: dict[str, int] = dict.fromkeys(tag_limits, 0)
        #: Attempts holding a slot now.
        self.running = 0

    def __bool__(self) -> bool:
        """Whether any stage waits for a slot (set-aside stages included)."""
        return bool(self._ready) or any(self._blocked.values())

    def push(self, state: StageState) -> None:
        """``state`` is ready (QUEUED) and waits for a slot."""
        heapq.heappush(self._ready, state.position)

    def push_roots(self, positions: list[int]) -> None:
        """Queue stages known to be in ascending order (already a heap)."""
        self._ready.extend(positions)

    def take(self) -> StageState | None:
        """The earliest ready stage that can run now, its slot taken; else None."""
        ready = self._ready
        while ready and self.running < self._limit:
            state = self._states[heapq.heappop(ready)]
            if state.limits and not self._fits(state):
                continue
            self.running += 1
            for tag in state.limits:
                self._in_use[tag] += 1
            return state
        return None

    def give_back(self, state: StageState) -> None:
        """The attempt of ``state`` ended, whatever ended it."""
        self.running -= 1
        for tag in state.limits:
            self._in_use[tag] -= 1
            blocked = self._blocked[tag]
            if blocked:
                heapq.heappush(self._ready, heapq.heappop(blocked))

    def _fits(self, state: StageState) -> bool:
        for tag in state.limits:
            if self._in_use[tag] >= self._tag_limits[tag]:
                heapq.heappush(self._blocked[tag], state.position)
                return False
        return True
