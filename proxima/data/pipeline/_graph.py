"""Graph rules: the one place that decides whether stages form a valid DAG,
and the frozen plan the scheduler runs from. Everything here is O(V + E)."""

from __future__ import annotations

import graphlib
from collections.abc import Sequence

import attrs

from ._errors import PipelineValidationError
from ._stage import Stage

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
    for position, st in enumerate(stages):
        positions = []
        for dep in st.dependencies:
            if dep == st.stage_id:
                raise PipelineValidationError(
                    f"stage {st.stage_id!r} depends on itself", stage_id=st.stage_id
                )
            dep_position = index.get(dep)
            if dep_position is None:
                raise PipelineValidationError(
                    f"stage {st.stage_id!r} depends on unknown stage {dep!r}",
                    stage_id=st.stage_id,
                )
            positions.append(dep_position)
            dependents[dep_position].append(position)
        dependencies.append(tuple(positions))

    _reject_cycles(stages)
    return Plan(tuple(stages), tuple(dependencies), tuple(tuple(d) for d in dependents))


def _reject_cycles(stages: Sequence[Stage]) -> None:
    sorter = graphlib.TopologicalSorter({st.stage_id: st.dependencies for st in stages})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle: list[str] = exc.args[1]
        raise PipelineValidationError(
            f"dependency cycle: {' -> '.join(cycle)}", stage_id=cycle[0]
        ) from None
