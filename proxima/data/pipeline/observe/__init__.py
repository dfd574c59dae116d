"""What watches a run and draws its results: the event stream, rich progress,
OpenTelemetry spans, Mermaid/DOT text and the HTML report.

Nothing in the engine or the model imports this package at load time; the
facade wires its pieces to a pipeline.
"""

from .otel import OpenTelemetryListener as OpenTelemetryListener
from .progress import RichProgress as RichProgress
from .render import to_dot as to_dot
from .render import to_mermaid as to_mermaid
from .report import html_report as html_report
from .stream import EventStream as EventStream

__all__ = [
    "EventStream",
    "OpenTelemetryListener",
    "RichProgress",
    "html_report",
    "to_dot",
    "to_mermaid",
]
