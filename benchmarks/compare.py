"""Before/after: two result files of ``python -m benchmarks`` side by side.

``python -m benchmarks.compare BEFORE.json AFTER.json [--size 10000]``

For every DAG case (backend, shape, stages, par, variant) that both files
hold: the library's µs per stage and its ratio (wall and CPU) to the
baseline, before and after, and whether the after-ratio meets the 1.5x
target; then the bounded fan-out (``pool``) cases the same way. Each file's
ratios were measured against the baseline in its own run, so the two are
comparable even when the machine's speed differed between the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .report import DAG_LIMIT, measured, table

__all__ = ["main"]

Key = tuple[str, str, int, str, str]


def _dag(report: dict[str, Any], size: int | None) -> dict[Key, dict[str, Any]]:
    out: dict[Key, dict[str, Any]] = {}
    for o in measured(report["outcomes"]):
        if o["kind"] == "dag" and (size is None or o["size"] == size):
            key = (o["backend"], o["shape"], o["size"], o["parallel"], o.get("variant", "default"))
            out[key] = o
    return out


def _where(report: dict[str, Any]) -> str:
    library = report["meta"].get("library") or {}
    dirty = "+edits" if library.get("dirty") else ""
    return f"{library.get('commit') or report['meta'].get('commit')}{dirty}"


def render(before: dict[str, Any], after: dict[str, Any], size: int | None) -> str:
    old, new = _dag(before, size), _dag(after, size)
    rows = []
    for key in sorted(set(old) & set(new), key=lambda k: (k[4], k[0], k[2], k[1], k[3])):
        backend, shape, stages, parallel, variant = key
        b, a = old[key], new[key]
        rows.append(
            [
                "300 s" if variant == "default" else "none",
                backend,
                shape,
                f"{stages:,}",
                "N" if parallel == "unbounded" else parallel,
                f"{b['library']['us_per_stage']:.1f}",
                f"{a['library']['us_per_stage']:.1f}",
                f"{b['ratio']:.2f}",
                f"{a['ratio']:.2f}",
                f"{b['cpu_ratio']:.2f}",
                f"{a['cpu_ratio']:.2f}",
                "ok" if a["cpu_ratio"] <= DAG_LIMIT else "OVER",
            ]
        )
    lines = [
        f"before: {_where(before)} ({before['meta']['date']})   "
        f"after: {_where(after)} ({after['meta']['date']})",
        "lib us/st = library wall time per stage; ratio = library / baseline of the same run;",
        f"verdict: after cpu ratio <= {DAG_LIMIT}",
        *table(
            [
                "timeout",
                "backend",
                "shape",
                "stages",
                "par",
                "us/st before",
                "us/st after",
                "ratio before",
                "ratio after",
                "cpu before",
                "cpu after",
                "verdict",
            ],
            rows,
            right={3, 5, 6, 7, 8, 9, 10},
        ),
    ]
    pools = []
    for b in measured(before["outcomes"]):
        if b["kind"] != "pool":
            continue
        for a in measured(after["outcomes"]):
            if a["kind"] == "pool" and (a["backend"], a["variant"]) == (b["backend"], b["variant"]):
                for way in ("taskgroup", "pool", "pool+ctx"):
                    pools.append(
                        [
                            b["backend"],
                            b["variant"],
                            way,
                            f"{b['sides']['library']['median_s'] * 1e3:.0f}",
                            f"{a['sides']['library']['median_s'] * 1e3:.0f}",
                            f"{b['sides'][way]['cpu_ratio']:.2f}",
                            f"{a['sides'][way]['cpu_ratio']:.2f}",
                        ]
                    )
    if pools:
        lines += [
            "",
            "Bounded fan-out: library ms, and library CPU time over each way's, before and after",
            *table(
                [
                    "backend",
                    "timeout",
                    "way",
                    "lib ms before",
                    "lib ms after",
                    "cpu before",
                    "cpu after",
                ],
                pools,
                right={3, 4, 5, 6},
            ),
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--size", type=int, default=10_000, help="stages (0: every size)")
    args = parser.parse_args(argv)
    before = json.loads(args.before.read_text())
    after = json.loads(args.after.read_text())
    print(render(before, after, args.size or None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
