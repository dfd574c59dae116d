"""Graph rules: the one place that decides whether stages form a valid DAG,
and the frozen plan the scheduler runs from. Everything here is O(V + E)."""

from __future__ import annotations

import graphlib
from collections.abc import Sequence
from typing import NoReturn

import attrs

from ._model.errors import PipelineValidationError
from ._model.stage import Stage

__all__ = ["Plan", "plan"]


@attrs.frozen
class Plan:
    """Stages by position (insertion order) with edges as positions.

    ``dependencies[i]`` lists the positions stage ``i`` waits for, in the
    order they were declared; ``dependents[i]`` the positions waiting for it.
    """

    stages: tuple[Stage, ...]
    dependencies: tuple[tuple[int, ...], ...]
    dependents: tuple[tuple[int, ...], ...]

    def __len__(self) -> int:
        return len(self.stages)


def plan(stages: Sequence[Stage]) -> Plan:
    """Check ``stages`` and index them for the scheduler.

    Raises :class:`PipelineValidationError` naming the stage for a duplicate
    id, an unknown dependency or a self-dependency, and the whole path for a
    cycle (``a -> b -> a``, read as "a runs before b").
    """
    index: dict[str, int] = {}
    for position, st in enumerate(stages):
        if st.stage_id in index:
            raise PipelineValidationError(
                f"duplicate stage id {st.stage_id!r}", stage_id=st.stage_id
            )
        index[st.stage_id] = position

    dependencies: list[tuple[int, ...]] = []
    dependents: list[list[int]] = [[] for _ in stages]
    backward = True  # every dependency added before its dependent: acyclic for sure
    for position, st in enumerate(stages):
        positions = []
        for dep in st.dependencies:
            dep_position = index.get(dep)
            if dep_position is None:
                raise PipelineValidationError(
                    f"stage {st.stage_id!r} depends on unknown stage {dep!r}",
                    stage_id=st.stage_id,
                )
            if dep_position >= position:
                if dep_position == position:
                    raise PipelineValidationError(
                        f"stage {st.stage_id!r} depends on itself", stage_id=st.stage_id
                    )
                backward = False
            positions.append(dep_position)
            dependents[dep_position].append(position)
        dependencies.append(tuple(positions))

    frozen_dependents = tuple(map(tuple, dependents))
    # Edges that all point back in insertion order cannot form a cycle; only
    # a graph with a forward edge needs the full check.
    if not backward and not _is_acyclic(dependencies, frozen_dependents):
        _reject_cycle(stages)
    return Plan(tuple(stages), tuple(dependencies), frozen_dependents)


def _is_acyclic(
    dependencies: Sequence[tuple[int, ...]], dependents: Sequence[tuple[int, ...]]
) -> bool:
    """Kahn's count over positions: cheap enough to run on every plan."""
    waiting = [len(deps) for deps in dependencies]
    ready = [i for i, n in enumerate(waiting) if n == 0]
    seen = 0
    while ready:
        position = ready.pop()
        seen += 1
        for dependent in dependents[position]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                ready.append(dependent)
    return seen == len(dependencies)


def _reject_cycle(stages: Sequence[Stage]) -> NoReturn:
    """Raise with one cycle's path; graphlib finds it (only on the error path).

    The path starts and ends at the earliest-added stage on the cycle, which
    is also the error's ``stage_id``: the same graph always gives the same
    message, whatever order graphlib walked it in.
    """
    sorter = graphlib.TopologicalSorter({st.stage_id: st.dependencies for st in stages})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        loop: list[str] = exc.args[1][:-1]  # graphlib repeats the first node at the end
        order = {st.stage_id: position for position, st in enumerate(stages)}
        first = min(range(len(loop)), key=lambda i: order[loop[i]])
        cycle = loop[first:] + loop[:first] + [loop[first]]
        raise PipelineValidationError(
            f"dependency cycle: {' -> '.join(cycle)}", stage_id=cycle[0]
        ) from None
    raise PipelineValidationError("dependency cycle")  # pragma: no cover - graphlib found it
