"""Turning measurements into the scaling check, the target verdicts and the
plain-text table (readable when piped: no colour, no box drawing)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["best_cpu_ratio", "evaluate", "render", "scaling", "table", "target"]

Row = dict[str, Any]

#: Per-stage time at the largest size may be at most this times the one at 1 000.
SCALING_LIMIT = 1.5


#: The ratio every DAG shape must stay within at 10 000 stages, on asyncio and
#: trio, in both variants (issue 10; it was 2x for layers and fan-in before).
DAG_LIMIT = 1.5


def best_cpu_ratio(outcome: Row) -> float:
    """The DAG targets' statistic: the library's fastest CPU time over the
    baseline's fastest, both from the same interleaved runs.

    On the 2-core machines this runs on, the speed of the machine itself
    moves by 30 % and more from one run to the next (other tenants), and
    that noise only ever adds time: the fastest run of each side is the
    closest to what the code costs (``timeit``'s reasoning). Medians are
    reported beside it."""
    return float(min(outcome["library"]["cpu_times_s"]) / min(outcome["baseline"]["cpu_times_s"]))


def measured(outcomes: Sequence[Row]) -> list[Row]:
    """The outcomes that hold figures (not skipped, not failed)."""
    return [o for o in outcomes if "skipped" not in o and "error" not in o]


def _dag(outcomes: Sequence[Row]) -> list[Row]:
    return [o for o in measured(outcomes) if o["kind"] == "dag"]


def _suites(outcomes: Sequence[Row]) -> list[Any]:
    """The suite modules (pool, executors, store) whose cases were run, in order."""
    from .measure import suite_module

    modules: list[Any] = []
    for o in outcomes:
        module = suite_module(o["kind"])
        if module is not None and module not in modules:
            modules.append(module)
    return modules


def scaling(outcomes: Sequence[Row], small: int = 1000) -> list[Row]:
    """Per (backend, shape, parallel): per-stage time at the largest size run
    over the per-stage time at ``small`` (library and baseline)."""
    by_key: dict[tuple[str, str, str], dict[int, Row]] = {}
    for o in _dag(outcomes):
        if o.get("variant", "default") != "default":
            continue
        by_key.setdefault((o["backend"], o["shape"], o["parallel"]), {})[o["size"]] = o
    checks: list[Row] = []
    for (backend, shape, parallel), sizes in by_key.items():
        large = max(sizes)
        if small not in sizes or large <= small:
            continue
        lo, hi = sizes[small], sizes[large]
        lib = hi["library"]["us_per_stage"] / lo["library"]["us_per_stage"]
        base = hi["baseline"]["us_per_stage"] / lo["baseline"]["us_per_stage"]
        checks.append(
            {
                "backend": backend,
                "shape": shape,
                "parallel": parallel,
                "small": small,
                "large": large,
                "library_factor": lib,
                "baseline_factor": base,
                # The target is stated for 100 000; a smaller top size only informs.
                "official": large == 100_000,
                "ok": lib <= SCALING_LIMIT,
            }
        )
    return checks


def target(name: str, where: str, value: float, limit: float, unit: str) -> Row:
    """One target's verdict."""
    return _target(name, where, value, limit, unit)


def _target(name: str, where: str, value: float, limit: float, unit: str) -> Row:
    return {
        "target": name,
        "where": where,
        "value": value,
        "limit": limit,
        "unit": unit,
        "ok": value <= limit,
    }


def evaluate(outcomes: Sequence[Row]) -> list[Row]:
    """The issue's targets, for every case that was run."""
    targets: list[Row] = []
    for o in _dag(outcomes):
        variant = o.get("variant", "default")
        where = f"{o['backend']} {o['shape']} {o['size']} par={o['parallel']} {variant}"
        if o["size"] == 10_000 and o["backend"] in ("asyncio", "trio"):
            targets.append(
                _target(
                    "best cpu ratio to baseline at 10 000",
                    where,
                    best_cpu_ratio(o),
                    DAG_LIMIT,
                    "x",
                )
            )
        if o["size"] == 100_000 and o["shape"] == "wide" and o["extra_bytes_per_stage"] is not None:
            targets.append(
                _target(
                    "100 000 wide: memory above baseline",
                    where,
                    o["extra_bytes_per_stage"],
                    2048,
                    "B/stage",
                )
            )
    for o in measured(outcomes):
        if o["kind"] == "empty" and o["backend"] == "asyncio":
            targets.append(_target("empty execute()", "asyncio", o["library_us"], 200, "us"))
        if o["kind"] == "cancel" and o["grace"] == 0:
            targets.append(
                _target(
                    f"cancel {o['size']} running, zero grace: ratio to baseline",
                    o["backend"],
                    o["ratio"],
                    1.5,
                    "x",
                )
            )
    for check in scaling(outcomes):
        if check["official"]:
            targets.append(
                _target(
                    "scaling: us/stage at 100 000 over 1 000",
                    f"{check['backend']} {check['shape']} par={check['parallel']}",
                    check["library_factor"],
                    SCALING_LIMIT,
                    "x",
                )
            )
    for module in _suites(outcomes):
        targets += module.targets(measured(outcomes))
    return targets


# -- text ----------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Plain-text columns (``right``: the right-aligned ones)."""
    return _table(headers, rows, right)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def _bytes(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render(outcomes: Sequence[Row], meta: Row) -> str:
    """The whole report as text."""
    lines: list[str] = []
    lines.append(
        f"proxima.data.pipeline benchmarks  {meta['date']}  python {meta['python']}  "
        f"anyio {meta['versions'].get('anyio')}  cpus {meta['cpus']}"
    )
    lines += [
        "lib = proxima Pipeline.execute(); base = benchmarks/baseline.py, same run, same backend.",
        "Times are medians of wall time; ratio = lib / base; cpu ratio = the same with process",
        "CPU time; best cpu = fastest lib CPU time / fastest base CPU time of the same",
        "interleaved runs (noise only adds time: the DAG targets are judged on it);",
        "B/st = tracemalloc peak / stages.",
    ]
    library = meta.get("library") or {}
    if library:
        dirty = " + uncommitted edits" if library.get("dirty") else ""
        lines.append(f"library measured: {library.get('path')} at {library.get('commit')}{dirty}")
    if not meta.get("gc", True):
        lines.append("NOTE: cyclic GC was OFF during the timed runs (--no-gc).")
    dag = _dag(outcomes)
    if dag:
        headers = [
            "backend",
            "shape",
            "stages",
            "par",
            "timeout",
            "runs",
            "lib ms",
            "lib us/st",
            "base ms",
            "base us/st",
            "ratio",
            "cpu ratio",
            "best cpu",
            "lib B/st",
            "base B/st",
            "+B/st",
        ]
        rows = [
            [
                o["backend"],
                o["shape"],
                f"{o['size']:,}",
                "N" if o["parallel"] == "unbounded" else str(o["parallel"]),
                "300 s" if o.get("variant", "default") == "default" else "none",
                str(o["repeats"]),
                _ms(o["library"]["median_s"]),
                f"{o['library']['us_per_stage']:.1f}",
                _ms(o["baseline"]["median_s"]),
                f"{o['baseline']['us_per_stage']:.1f}",
                f"{o['ratio']:.2f}",
                f"{o['cpu_ratio']:.2f}",
                f"{best_cpu_ratio(o):.2f}",
                _bytes(o["library"]["bytes_per_stage"]),
                _bytes(o["baseline"]["bytes_per_stage"]),
                _bytes(o["extra_bytes_per_stage"]),
            ]
            for o in dag
        ]
        lines += [
            "",
            "DAG runs (par N = max_parallel >= stages; timeout: the stage timeout on both sides,"
            " 'none' = retries off too and no cancel scope in the baseline)",
        ]
        lines += _table(headers, rows, right={2, 3, *range(5, len(headers))})

    fixed = [o for o in measured(outcomes) if o["kind"] == "empty"]
    if fixed:
        rows = [
            [
                o["backend"],
                f"{o['library_us']:.0f}",
                f"{o['baseline_us']:.0f}",
                f"{o['ratio']:.2f}",
                str(o["repeats"]),
            ]
            for o in fixed
        ]
        lines += ["", "Fixed cost of an empty execute()"]
        lines += _table(["backend", "lib us", "base us", "ratio", "runs"], rows, right={1, 2, 3, 4})

    cancels = [o for o in measured(outcomes) if o["kind"] == "cancel"]
    if cancels:
        rows = [
            [
                o["backend"],
                f"{o['size']:,}",
                f"{o['grace'] * 1e3:g} ms" + (" (coop)" if o["grace"] else ""),
                f"{o['library_ms']:.2f}",
                f"{o['baseline_ms']:.2f}",
                f"{o['ratio']:.2f}",
                f"{o['cpu_ratio']:.2f}",
                str(o["repeats"]),
            ]
            for o in cancels
        ]
        lines += ["", "Cancellation latency: cancel() -> execute() returns, all stages running"]
        lines += _table(
            ["backend", "stages", "grace", "lib ms", "base ms", "ratio", "cpu ratio", "runs"],
            rows,
            right={1, 3, 4, 5, 6, 7},
        )

    checks = scaling(outcomes)
    if checks:
        rows = [
            [
                c["backend"],
                c["shape"],
                "N" if c["parallel"] == "unbounded" else str(c["parallel"]),
                f"{c['large']:,} / {c['small']:,}",
                f"{c['library_factor']:.2f}",
                f"{c['baseline_factor']:.2f}",
                ("ok" if c["ok"] else "OVER") + ("" if c["official"] else " (info)"),
            ]
            for c in checks
        ]
        lines += [
            "",
            f"Scaling: us/stage at the largest size over us/stage at 1,000 (limit "
            f"{SCALING_LIMIT}x at 100,000)",
        ]
        lines += _table(
            ["backend", "shape", "par", "sizes", "lib", "base", "verdict"], rows, right={4, 5}
        )

    for module in _suites(outcomes):
        section = module.render(measured(outcomes))
        if section:
            lines += ["", *section]

    broken = [o for o in outcomes if "skipped" in o or "error" in o]
    if broken:
        lines += ["", "Cases not measured"]
        lines += [
            f"  [{o['backend']}] {o['kind']}: "
            + (f"skipped ({o['skipped']})" if "skipped" in o else f"FAILED ({o['error']})")
            for o in broken
        ]

    targets = evaluate(outcomes)
    if targets:
        rows = [
            [
                t["target"],
                t["where"],
                f"{t['value']:,.2f} {t['unit']}",
                f"<= {t['limit']:g} {t['unit']}",
                "ok" if t["ok"] else "MISSED",
            ]
            for t in targets
        ]
        lines += ["", "Targets"]
        lines += _table(["target", "case", "value", "limit", "verdict"], rows, right={2})
        missed = sum(not t["ok"] for t in targets)
        lines.append(f"{len(targets) - missed} of {len(targets)} targets met")
    return "\n".join(lines)
