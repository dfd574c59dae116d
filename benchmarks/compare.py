"""Before/after: result files of ``python -m benchmarks`` side by side.

``python -m benchmarks.compare BEFORE.json AFTER.json [--size 10000]``, or
with several rounds of each (run alternately, so that both sides meet the
same spells of load): ``--before B1.json B2.json ... --after A1.json ...``.

For every DAG case (backend, shape, stages, par, variant) that both sides
hold: the library's µs per stage and its ratio (wall and CPU) to the
baseline, before and after (with several rounds: the median over the
rounds, and the CPU ratio's range), and whether the after CPU ratio meets
the 1.5x target (judged on the best CPU ratio: see
:func:`benchmarks.report.best_cpu_ratio`); then the bounded fan-out (``pool``) cases the same way.
Each file's ratios were measured against the baseline in its own run, so
the sides are comparable even when the machine's speed differed between
the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .report import DAG_LIMIT, best_cpu_ratio, measured, table

__all__ = ["main"]

Key = tuple[str, str, int, str, str]


def _dag(reports: Sequence[dict[str, Any]], size: int | None) -> dict[Key, list[dict[str, Any]]]:
    """Each DAG case, with its outcome in every report that holds it."""
    out: dict[Key, list[dict[str, Any]]] = {}
    for report in reports:
        for o in measured(report["outcomes"]):
            if o["kind"] == "dag" and (size is None or o["size"] == size):
                variant = o.get("variant", "default")
                key = (o["backend"], o["shape"], o["size"], o["parallel"], variant)
                out.setdefault(key, []).append(o)
    return out


def _where(reports: Sequence[dict[str, Any]]) -> str:
    names = []
    for report in reports:
        library = report["meta"].get("library") or {}
        dirty = "+edits" if library.get("dirty") else ""
        name = f"{library.get('commit') or report['meta'].get('commit')}{dirty}"
        if name not in names:
            names.append(name)
    dates = sorted(report["meta"]["date"] for report in reports)
    span = dates[0] if len(dates) == 1 else f"{dates[0]} .. {dates[-1]}"
    return f"{', '.join(names)} ({len(reports)} run{'s' if len(reports) > 1 else ''}, {span})"


def _med(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _spread(values: Sequence[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else "-"


def _best(outcomes: Sequence[dict[str, Any]]) -> float:
    """:func:`best_cpu_ratio` over several rounds: the fastest library run of
    them all over the fastest baseline run of them all."""
    if len(outcomes) == 1:
        return best_cpu_ratio(outcomes[0])
    lib = min(min(o["library"]["cpu_times_s"]) for o in outcomes)
    base = min(min(o["baseline"]["cpu_times_s"]) for o in outcomes)
    return float(lib / base)


def render(
    before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]], size: int | None
) -> str:
    old, new = _dag(before, size), _dag(after, size)
    rows = []
    for key in sorted(set(old) & set(new), key=lambda k: (k[4], k[0], k[2], k[1], k[3])):
        backend, shape, stages, parallel, variant = key
        b, a = old[key], new[key]
        after_best = _best(a)
        rows.append(
            [
                "300 s" if variant == "default" else "none",
                backend,
                shape,
                f"{stages:,}",
                "N" if parallel == "unbounded" else parallel,
                f"{_med([o['library']['us_per_stage'] for o in b]):.1f}",
                f"{_med([o['library']['us_per_stage'] for o in a]):.1f}",
                f"{_med([o['ratio'] for o in b]):.2f}",
                f"{_med([o['ratio'] for o in a]):.2f}",
                f"{_med([o['cpu_ratio'] for o in b]):.2f}",
                _spread([o["cpu_ratio"] for o in b]),
                f"{_med([o['cpu_ratio'] for o in a]):.2f}",
                _spread([o["cpu_ratio"] for o in a]),
                f"{_best(b):.2f}",
                f"{after_best:.2f}",
                "ok" if after_best <= DAG_LIMIT else "OVER",
            ]
        )
    lines = [
        f"before: {_where(before)}",
        f"after:  {_where(after)}",
        "us/st = library wall time per stage; ratio = library / baseline of the same run;",
        "cpu = median CPU ratio over the rounds (its range); best = fastest library CPU time",
        f"over fastest baseline CPU time of all rounds; verdict: best after <= {DAG_LIMIT}",
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
                "(range)",
                "cpu after",
                "(range)",
                "best before",
                "best after",
                "verdict",
            ],
            rows,
            right={3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14},
        ),
    ]
    pools = []
    for (backend, variant), bs in _pools(before).items():
        as_ = _pools(after).get((backend, variant))
        if not as_:
            continue
        for way in ("taskgroup", "pool", "pool+ctx"):
            pools.append(
                [
                    backend,
                    variant,
                    way,
                    f"{_med([o['sides']['library']['median_s'] for o in bs]) * 1e3:.0f}",
                    f"{_med([o['sides']['library']['median_s'] for o in as_]) * 1e3:.0f}",
                    f"{_med([o['sides'][way]['cpu_ratio'] for o in bs]):.2f}",
                    f"{_med([o['sides'][way]['cpu_ratio'] for o in as_]):.2f}",
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


def markdown(
    before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]], size: int | None
) -> str:
    """The DAG comparison as Markdown, one table per variant: rows shape and
    par, a column per backend with the best CPU ratio before -> after."""
    old, new = _dag(before, size), _dag(after, size)
    keys = sorted(set(old) & set(new))
    backends = [b for b in ("asyncio", "uvloop", "trio") if any(k[0] == b for k in keys)]
    lines: list[str] = []
    for variant in ("default", "no-timeout"):
        rows = sorted({(k[1], k[2], k[3]) for k in keys if k[4] == variant})
        if not rows:
            continue
        title = "300 s stage timeout" if variant == "default" else "no stage timeout"
        lines += [
            f"**{title}** (CPU ratio to the baseline, before → after)",
            "",
            "| shape | stages | par | " + " | ".join(backends) + " |",
            "| --- | --- | --- | " + " | ".join("---" for _ in backends) + " |",
        ]
        for shape, stages, parallel in rows:
            cells = []
            for backend in backends:
                key = (backend, shape, stages, parallel, variant)
                if key not in old or key not in new:
                    cells.append("-")
                    continue
                b = _best(old[key])
                a = _best(new[key])
                mark = "" if a <= DAG_LIMIT else " ✗"
                cells.append(f"{b:.2f} → {a:.2f}{mark}")
            par = "N" if parallel == "unbounded" else parallel
            lines.append(f"| {shape} | {stages:,} | {par} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _pools(reports: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for report in reports:
        for o in measured(report["outcomes"]):
            if o["kind"] == "pool":
                out.setdefault((o["backend"], o["variant"]), []).append(o)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    parser.add_argument("files", type=Path, nargs="*", help="BEFORE.json AFTER.json")
    parser.add_argument("--before", type=Path, nargs="+", default=[], help="rounds before")
    parser.add_argument("--after", type=Path, nargs="+", default=[], help="rounds after")
    parser.add_argument("--size", type=int, default=10_000, help="stages (0: every size)")
    parser.add_argument(
        "--markdown", action="store_true", help="DAG tables in Markdown (for the README)"
    )
    args = parser.parse_args(argv)
    before_files, after_files = list(args.before), list(args.after)
    if args.files:
        if len(args.files) != 2 or before_files or after_files:
            parser.error("give BEFORE.json AFTER.json, or --before ... --after ...")
        before_files, after_files = [args.files[0]], [args.files[1]]
    if not before_files or not after_files:
        parser.error("nothing to compare: give BEFORE.json AFTER.json or --before/--after")
    before = [json.loads(path.read_text()) for path in before_files]
    after = [json.loads(path.read_text()) for path in after_files]
    show = markdown if args.markdown else render
    print(show(before, after, args.size or None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
