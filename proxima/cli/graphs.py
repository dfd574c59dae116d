"""``proxima graph`` and ``proxima validate``: look at a pipeline without running it."""

from __future__ import annotations

from .target import load_target

__all__ = ["graph_command", "validate_command"]


def graph_command(target: str, fmt: str) -> int:
    """Print the graph of ``target`` as Mermaid (``fmt="mermaid"``) or DOT."""
    pipeline = load_target(target)
    text = pipeline.to_dot() if fmt == "dot" else pipeline.to_mermaid()
    print(text.rstrip("\n"))
    return 0


def validate_command(target: str) -> int:
    """Say ``ok`` with the stage count, or raise :class:`UsageError` saying why not."""
    pipeline = load_target(target)
    count = len(pipeline.stages)
    print(f"ok: pipeline {pipeline.name!r} is valid, {count} stage{'s' if count != 1 else ''}")
    return 0
