"""Pictures of a pipeline's graph as text: Mermaid and Graphviz DOT.

Rendering is off the hot path; it may sort and lay out at leisure.
"""

from __future__ import annotations

import graphlib
import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .._model.enums import StageStatus

if TYPE_CHECKING:
    from .._model.results import PipelineResult

__all__ = [
    "OUTCOME_COLOURS",
    "STATUS_COLOURS",
    "Graph",
    "layers",
    "result_graph",
    "result_mermaid",
    "to_dot",
    "to_mermaid",
]

#: Fill colour per stage status, shared by every picture.
STATUS_COLOURS: dict[StageStatus, str] = {
    StageStatus.PENDING: "#eceff1",
    StageStatus.QUEUED: "#e3f2fd",
    StageStatus.RUNNING: "#90caf9",
    StageStatus.RETRYING: "#ffe082",
    StageStatus.COMPLETED: "#a5d6a7",
    StageStatus.FAILED: "#ef9a9a",
    StageStatus.TIMED_OUT: "#ffcc80",
    StageStatus.CANCELLED: "#b0bec5",
    StageStatus.SKIPPED: "#e0e0e0",
}
OUTCOME_COLOURS = {
    "completed": "#43a047",
    "failed": "#e53935",
    "timed_out": "#fb8c00",
    "cancelled": "#78909c",
}

Graph = Mapping[str, Sequence[str]]  # stage id -> its dependencies, in stage order


def to_mermaid(
    graph: Graph,
    names: Mapping[str, str] | None = None,
    statuses: Mapping[str, StageStatus] | None = None,
) -> str:
    """A Mermaid ``flowchart LR``; with ``statuses``, nodes coloured by status."""
    ids = {sid: f"s{i}" for i, sid in enumerate(graph)}
    lines = ["flowchart LR"]
    for sid, node in ids.items():
        name = sid if names is None else names.get(sid, sid)
        label = (
            _mermaid_text(sid) if name == sid else f"{_mermaid_text(name)}<br/>{_mermaid_text(sid)}"
        )
        lines.append(f'    {node}["{label}"]')
    for sid, deps in graph.items():
        for dep in deps:
            lines.append(f"    {ids[dep]} --> {ids[sid]}")
    if statuses is not None:
        used = sorted({statuses[sid] for sid in graph if sid in statuses}, key=lambda s: s.value)
        for status in used:
            lines.append(
                f"    classDef {status.name.lower()} fill:{STATUS_COLOURS[status]},stroke:#455a64"
            )
        for status in used:
            members = ",".join(ids[sid] for sid in graph if statuses.get(sid) is status)
            lines.append(f"    class {members} {status.name.lower()}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return html.escape(text, quote=False).replace('"', "#quot;")


def to_dot(graph: Graph, names: Mapping[str, str] | None = None, title: str = "pipeline") -> str:
    """A Graphviz ``digraph``, left to right, one box per stage."""
    lines = [
        f"digraph {_dot_id(title)} {{",
        "    rankdir=LR;",
        '    node [shape=box, style="rounded"];',
    ]
    for sid in graph:
        name = (names or {}).get(sid, sid)
        label = _dot_escape(sid) if name == sid else f"{_dot_escape(name)}\\n({_dot_escape(sid)})"
        lines.append(f'    {_dot_id(sid)} [label="{label}"];')
    for sid, deps in graph.items():
        for dep in deps:
            lines.append(f"    {_dot_id(dep)} -> {_dot_id(sid)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dot_id(text: str) -> str:
    return f'"{_dot_escape(text)}"'


def layers(graph: Graph) -> dict[str, int]:
    """Longest-path layer of each stage: where it sits left to right."""
    layer: dict[str, int] = {}
    for sid in graphlib.TopologicalSorter(dict(graph)).static_order():
        deps = graph.get(sid, ())
        layer[sid] = 1 + max((layer[d] for d in deps), default=-1)
    return layer


def result_graph(result: PipelineResult) -> dict[str, tuple[str, ...]]:
    """Stage id -> dependencies of a finished run, in stage order."""
    return {sid: tuple(result.dependencies.get(sid, ())) for sid in result.stage_results}


def result_mermaid(result: PipelineResult) -> str:
    """The run's graph as a Mermaid flowchart, nodes coloured by final status."""
    names = {sid: r.stage_name for sid, r in result.stage_results.items()}
    statuses = {sid: r.status for sid, r in result.stage_results.items()}
    return to_mermaid(result_graph(result), names, statuses)
