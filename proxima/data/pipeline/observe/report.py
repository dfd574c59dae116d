"""The self-contained HTML report of a run: the graph coloured by status,
a timeline of every attempt, and the summary table (inline SVG and CSS, no
JavaScript at all)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from .render import OUTCOME_COLOURS, STATUS_COLOURS, layers, result_graph

if TYPE_CHECKING:
    from .._model.results import PipelineResult

__all__ = ["html_report"]


_NODE_W, _NODE_H, _GAP_X, _GAP_Y = 150, 40, 60, 16


def _dag_svg(result: PipelineResult) -> str:
    graph = result_graph(result)
    layer = layers(graph)
    rows: dict[int, int] = {}
    pos: dict[str, tuple[int, int]] = {}
    for sid in graph:
        column = layer[sid]
        row = rows.get(column, 0)
        rows[column] = row + 1
        pos[sid] = (10 + column * (_NODE_W + _GAP_X), 10 + row * (_NODE_H + _GAP_Y))
    width = 20 + (max(layer.values(), default=0) + 1) * (_NODE_W + _GAP_X)
    height = 20 + max(rows.values(), default=1) * (_NODE_H + _GAP_Y)
    parts = [f'<svg class="dag" width="{width}" height="{height}" role="img">']
    for sid, deps in graph.items():
        x2, y2 = pos[sid]
        for dep in deps:
            x1, y1 = pos[dep]
            parts.append(
                f'<path class="edge" d="M{x1 + _NODE_W},{y1 + _NODE_H // 2} '
                f"C{x1 + _NODE_W + _GAP_X // 2},{y1 + _NODE_H // 2} "
                f'{x2 - _GAP_X // 2},{y2 + _NODE_H // 2} {x2},{y2 + _NODE_H // 2}"/>'
            )
    for sid in graph:
        x, y = pos[sid]
        stage = result.stage_results[sid]
        tip = f"{sid}: {stage.status.name}" + (f" - {stage.error}" if stage.error else "")
        label = sid if len(sid) <= 20 else sid[:19] + "…"
        parts.append(
            f'<g class="node status-{stage.status.name.lower()}"><title>{_e(tip)}</title>'
            f'<rect x="{x}" y="{y}" width="{_NODE_W}" height="{_NODE_H}" rx="6" '
            f'fill="{STATUS_COLOURS[stage.status]}"/>'
            f'<text x="{x + _NODE_W // 2}" y="{y + _NODE_H // 2 + 4}">{_e(label)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _spans(result: PipelineResult, total: float) -> list[tuple[str, str, float, float, str]]:
    """(stage id, kind, start, end, hover text) for every bar of the timeline."""
    spans: list[tuple[str, str, float, float, str]] = []
    cleanup = result.metadata.get("cleanup", {})
    for sid, stage in result.stage_results.items():
        attempts = stage.metrics.get("attempts") if isinstance(stage.metrics, dict) else None
        if attempts:
            previous_end: float | None = None
            for a in attempts:
                start = a["start_time"]
                queued = start - a.get("queue_wait_ms", 0.0) / 1000.0
                if previous_end is not None and queued > previous_end:
                    spans.append((sid, "retry-delay", previous_end, queued, f"{sid}: retry delay"))
                if start - queued > 0.002 * total:  # skip waits too short to see
                    spans.append((sid, "queue", queued, start, f"{sid}: waiting for a slot"))
                end = start + a["duration_ms"] / 1000.0
                tip = f"{sid}: attempt {a['attempt']} {a['outcome']} ({a['duration_ms']:.1f} ms)"
                if a.get("error"):
                    tip += f" - {a['error']}"
                spans.append((sid, f"attempt outcome-{a['outcome']}", start, end, tip))
                previous_end = end
        elif stage.start_time is not None and stage.end_time is not None:
            tip = f"{sid}: {stage.status.name}"
            spans.append((sid, "attempt", stage.start_time, stage.end_time, tip))
        if sid in cleanup:
            c = cleanup[sid]
            end = c["start_time"] + c["duration_ms"] / 1000.0
            tip = f"{sid}: cleanup ({c['duration_ms']:.1f} ms)" + (
                f" - {c['error']}" if c.get("error") else ""
            )
            kind = "cleanup cleanup-failed" if c.get("error") else "cleanup"
            spans.append((sid, kind, c["start_time"], end, tip))
    return spans


def _gantt_svg(result: PipelineResult) -> str:
    t0 = result.start_time or 0.0
    t1 = result.end_time or t0
    spans = _spans(result, max(t1 - t0, 1e-6))
    t1 = max([t1, *(s[3] for s in spans)])
    total = max(t1 - t0, 1e-6)
    ids = list(result.stage_results)
    label_w, plot_w, row_h = 160, 800, 22
    height = 30 + row_h * len(ids)
    row = {sid: i for i, sid in enumerate(ids)}
    parts = [f'<svg class="gantt" width="{label_w + plot_w + 60}" height="{height}" role="img">']
    for i, sid in enumerate(ids):
        parts.append(f'<text class="row-label" x="4" y="{20 + i * row_h + 15}">{_e(sid)}</text>')
    for tick in range(6):
        x = label_w + plot_w * tick / 5
        parts.append(
            f'<line class="tick" x1="{x:.1f}" y1="10" x2="{x:.1f}" y2="{height}"/>'
            f'<text class="tick-label" x="{x:.1f}" y="10">{total * tick / 5 * 1000:.0f} ms</text>'
        )
    for sid, kind, start, end, tip in spans:
        x = label_w + plot_w * (start - t0) / total
        w = max(plot_w * (end - start) / total, 1.0)
        y = 20 + row[sid] * row_h + 3
        parts.append(
            f'<rect class="bar {kind}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
            f'height="{row_h - 6}"><title>{_e(tip)}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#263238}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
.edge{fill:none;stroke:#90a4ae;stroke-width:1.5}
.node text{font-size:12px;text-anchor:middle}
.node rect{stroke:#455a64}
.row-label,.tick-label{font-size:11px} .tick{stroke:#eceff1}
.bar.queue{fill:#cfd8dc} .bar.retry-delay{fill:#fff59d}
.bar.cleanup{fill:#9575cd} .bar.attempt{fill:#43a047}
.bar.cleanup-failed{fill:#6a1b9a;stroke:#e53935;stroke-width:2}
table{border-collapse:collapse} td,th{border:1px solid #cfd8dc;padding:3px 8px;text-align:left}
.legend span{display:inline-block;padding:2px 8px;margin-right:6px;border-radius:4px}
"""


def html_report(result: PipelineResult) -> str:
    """The whole report as one HTML document."""
    rows = []
    for sid, r in result.stage_results.items():
        ms = "" if r.duration_ms is None else f"{r.duration_ms:.1f}"
        status = r.status.name
        if r.restored_from is not None:
            status += f" (restored from run {_e(r.restored_from)})"
        rows.append(
            f"<tr class='stage-row'><td>{_e(sid)}</td><td>{_e(r.stage_name)}</td>"
            f"<td>{status}</td><td>{r.attempt_count}</td><td>{ms}</td>"
            f"<td>{_e(r.error or '')}</td></tr>"
        )
    legend = "".join(
        f'<span style="background:{colour}">{status.name}</span>'
        for status, colour in STATUS_COLOURS.items()
    )
    bars = "".join(
        f'<span style="background:{c}">attempt {o}</span>' for o, c in OUTCOME_COLOURS.items()
    ) + (
        '<span style="background:#cfd8dc">waiting for a slot</span>'
        '<span style="background:#fff59d">retry delay</span>'
        '<span style="background:#9575cd">cleanup</span>'
    )
    title = f"{result.pipeline_name} - {result.status.name}"
    outcome_css = "".join(f".bar.outcome-{o}{{fill:{c}}}" for o, c in OUTCOME_COLOURS.items())
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_CSS}{outcome_css}</style></head><body>"
        f"<h1>Pipeline {_e(result.pipeline_name)}: {result.status.name}</h1>"
        f"<pre class='summary'>{_e(result.summary())}</pre>"
        f"<h2>Stages</h2><p class='legend'>{legend}</p>{_dag_svg(result)}"
        f"<h2>Timeline</h2><p class='legend'>{bars}</p>{_gantt_svg(result)}"
        "<h2>Summary</h2><table><tr><th>id</th><th>name</th><th>status</th>"
        f"<th>attempts</th><th>ms</th><th>error</th></tr>{''.join(rows)}</table>"
        "</body></html>"
    )


def _e(text: Any) -> str:
    return html.escape(str(text))
