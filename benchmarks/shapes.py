"""DAG shapes used by the benchmarks, as plain ``(stage_id, dependencies)`` specs.

Both sides (the library and the baseline) are built from the same specs, so
they run exactly the same graph, in the same insertion order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["LAYERS_SEED", "SHAPES", "StageSpec", "build_shape"]

#: Seed of the ``layers`` shape's edge choice (fixed: every run builds the same graph).
LAYERS_SEED = 20261126


class StageSpec(NamedTuple):
    """One stage of a benchmark graph: its id and the ids it depends on."""

    stage_id: str
    dependencies: tuple[str, ...]


def _ids(n: int) -> list[str]:
    return [f"s{i}" for i in range(n)]


def chain(n: int) -> list[StageSpec]:
    """Each stage depends on the one before: no parallelism at all."""
    ids = _ids(n)
    return [StageSpec(sid, (ids[i - 1],) if i else ()) for i, sid in enumerate(ids)]


def wide(n: int) -> list[StageSpec]:
    """``n`` independent stages: all ready at once."""
    return [StageSpec(sid, ()) for sid in _ids(n)]


def layers(n: int) -> list[StageSpec]:
    """About sqrt(n) layers of sqrt(n) stages; each stage after the first
    layer depends on 2 distinct stages of the layer before (seeded choice)."""
    rng = random.Random(LAYERS_SEED)
    width = math.isqrt(n - 1) + 1  # ceil(sqrt(n)) for n >= 1
    ids = _ids(n)
    specs: list[StageSpec] = []
    previous: list[str] = []
    for start in range(0, n, width):
        layer = ids[start : start + width]
        for sid in layer:
            deps = tuple(rng.sample(previous, min(2, len(previous)))) if previous else ()
            specs.append(StageSpec(sid, deps))
        previous = layer
    return specs


def fanin(n: int) -> list[StageSpec]:
    """``n - 1`` independent stages, then one stage depending on all of them."""
    ids = _ids(n)
    specs = [StageSpec(sid, ()) for sid in ids[:-1]]
    specs.append(StageSpec(ids[-1], tuple(ids[:-1])))
    return specs


SHAPES: dict[str, Callable[[int], list[StageSpec]]] = {
    "chain": chain,
    "wide": wide,
    "layers": layers,
    "fanin": fanin,
}


def build_shape(shape: str, n: int) -> list[StageSpec]:
    """The specs of ``shape`` with ``n`` stages (``n >= 1``)."""
    if n < 1:
        raise ValueError(f"size must be >= 1, got {n}")
    return SHAPES[shape](n)
