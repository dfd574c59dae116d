"""``python -m benchmarks``: proxima's scheduler against a lean anyio baseline.

Each backend runs in its own worker process (``benchmarks.measure``), one
fresh ``anyio.run`` per case. The table goes to stdout, progress to stderr,
and everything measured to ``benchmarks/results/latest.json``.
See ``benchmarks/README.md`` for how to read the output.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from . import executors, pool, store
from ._library import LIBRARY_ENV
from .baseline import self_check
from .measure import BACKENDS, VARIANTS, backend_run, describe, run_case
from .report import evaluate, render, scaling
from .shapes import SHAPES

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUTPUT = HERE / "results" / "latest.json"

FULL_SIZES = (100, 1_000, 10_000, 100_000)
QUICK_SIZES = (1_000, 10_000)
#: Timed runs per side, by size (median taken); small graphs are noisier.
FULL_REPEATS = {100: 21, 1_000: 9, 10_000: 5, 100_000: 3}
QUICK_REPEATS = {100: 11, 1_000: 5, 10_000: 3, 100_000: 1}
#: With --quick, the no-timeout variant runs only from this size on.
QUICK_VARIANT_MIN_SIZE = 10_000
CANCEL_STAGES = 1_000
CANCEL_GRACE = (0.0, 0.1)
#: The suites, in the order they run; ``--suite`` picks some.
SUITES = ("dag", "pool", "executors", "store")


def _csv(kind: type, choices: Sequence[str] | None = None) -> Any:
    def parse(text: str) -> list[Any]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if choices is not None:
            bad = [item for item in items if item not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {list(choices)}")
        return [kind(item.replace("_", "")) if kind is int else kind(item) for item in items]

    return parse


def _parallel(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        if item != "unbounded" and not (item.isdigit() and int(item) >= 1):
            raise argparse.ArgumentTypeError(
                f"--parallel takes 'unbounded' or integers, got {item}"
            )
    return items


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark proxima.data.pipeline against a lean anyio baseline.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="development: DAG sizes 1 000 and 10 000, fewer runs, smaller suites (about 5 min)",
    )
    parser.add_argument(
        "--suite",
        type=_csv(str, [*SUITES, "all"]),
        default=["all"],
        help="comma-separated: dag (DAG shapes, empty execute(), cancellation), pool (the "
        "bounded fan-out of issue 10), executors (issue 11), store (issue 12); default: all",
    )
    parser.add_argument(
        "--variants",
        type=_csv(str, list(VARIANTS)),
        default=list(VARIANTS),
        help="DAG variants: default (300 s stage timeout on both sides), no-timeout (none; "
        "retries off; the baseline opens no cancel scope); default: both",
    )
    parser.add_argument(
        "--library",
        type=Path,
        default=None,
        help="measure the library in this directory (one holding proxima/, e.g. a git "
        f"worktree of an older commit) instead of the installed one; default: ${LIBRARY_ENV}, "
        "else the first PYTHONPATH entry that holds proxima/",
    )
    parser.add_argument(
        "--shapes",
        type=_csv(str, list(SHAPES)),
        default=list(SHAPES),
        help="comma-separated: chain,wide,layers,fanin (default: all)",
    )
    parser.add_argument(
        "--sizes",
        type=_csv(int),
        default=None,
        help="comma-separated stage counts (default: 100,1000,10000,100000; --quick: up to 10000)",
    )
    parser.add_argument(
        "--backends",
        type=_csv(str, list(BACKENDS)),
        default=None,
        help="comma-separated: asyncio,uvloop,trio (default: all; with --quick the pool, "
        "executors and store suites skip uvloop unless it is named here)",
    )
    parser.add_argument(
        "--parallel",
        type=_parallel,
        default=["unbounded", "8"],
        help="comma-separated max_parallel settings: 'unbounded' (= stages) and/or "
        "integers (default: unbounded,8)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs per side for every case (default: by size, 21 at 100 down to 3 at "
        "100 000)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip tracemalloc runs")
    parser.add_argument(
        "--memory-all",
        action="store_true",
        help="trace memory for every 100 000-stage case, not only wide with max_parallel 8 "
        "(slow: tracemalloc makes a run about 4x slower)",
    )
    parser.add_argument(
        "--no-gc",
        action="store_true",
        help="keep the cyclic garbage collector off during timed DAG runs (to tell GC "
        "cost from scheduling cost; the targets are meant with GC on)",
    )
    parser.add_argument("--no-cancel", action="store_true", help="skip cancellation latency")
    parser.add_argument("--no-empty", action="store_true", help="skip the empty execute()")
    parser.add_argument(
        "--only-dag", action="store_true", help="DAG cases only (same as --no-cancel --no-empty)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"JSON results file (default: {DEFAULT_OUTPUT.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every backend in this process instead of one worker process each (for debugging)",
    )
    parser.add_argument(
        "--fail-on-miss", action="store_true", help="exit with status 1 if a target is missed"
    )
    args = parser.parse_args(argv)
    args.suite = list(SUITES) if "all" in args.suite else args.suite
    args.backends_named = args.backends is not None
    if args.backends is None:
        args.backends = list(BACKENDS)
    if args.library is None and os.environ.get(LIBRARY_ENV):
        args.library = Path(os.environ[LIBRARY_ENV])
    if args.library is None:
        args.library = _library_from_pythonpath()
    if args.library is not None:
        args.library = args.library.resolve()
        if not (args.library / "proxima" / "__init__.py").is_file():
            parser.error(f"--library {args.library}: no proxima/ package there")
        if args.in_process:
            parser.error("--library needs worker processes (leave out --in-process)")
    if args.sizes is None:
        args.sizes = list(QUICK_SIZES if args.quick else FULL_SIZES)
    if args.only_dag:
        args.no_cancel = args.no_empty = True
    return args


def build_cases(args: argparse.Namespace, backend: str = "asyncio") -> list[dict[str, Any]]:
    """The cases of one backend, in the order they run."""
    cases: list[dict[str, Any]] = []
    if "dag" in args.suite:
        cases += dag_cases(args)
    if args.quick and backend == "uvloop" and not args.backends_named:
        return cases  # --quick: the other suites on asyncio and trio only
    if "pool" in args.suite:
        cases += pool.cases(quick=args.quick, repeats=args.repeats, variants=args.variants)
    if "executors" in args.suite:
        cases += executors.cases(quick=args.quick, repeats=args.repeats)
    if "store" in args.suite:
        cases += store.cases(quick=args.quick, repeats=args.repeats)
    return cases


def dag_cases(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The DAG suite: the empty ``execute()``, every shape, size, parallelism
    and variant, and the cancellation latency."""
    table = QUICK_REPEATS if args.quick else FULL_REPEATS
    cases: list[dict[str, Any]] = []
    if not args.no_empty:
        cases.append({"kind": "empty", "repeats": args.repeats or (100 if args.quick else 300)})
    for size in sorted(args.sizes):
        repeats = args.repeats or table.get(size, 3 if size < 100_000 else 1)
        for variant in args.variants:
            if args.quick and variant != "default" and size < QUICK_VARIANT_MIN_SIZE:
                continue  # --quick: the no-timeout variant only where its targets are
            for shape in args.shapes:
                for parallel in args.parallel:
                    memory = (
                        not args.no_memory
                        # --quick: bytes per stage are the same at 1 000 as at 10 000
                        and (not args.quick or (variant == "default" and size < 10_000))
                        and (
                            size < 100_000
                            or args.memory_all
                            or (shape == "wide" and parallel != "unbounded")
                        )
                    )
                    cases.append(
                        {
                            "kind": "dag",
                            "shape": shape,
                            "size": size,
                            "parallel": parallel,
                            "variant": variant,
                            "repeats": repeats,
                            "memory": memory,
                            "gc": not args.no_gc,
                        }
                    )
    if not args.no_cancel:
        for grace in CANCEL_GRACE:
            cases.append(
                {
                    "kind": "cancel",
                    "size": CANCEL_STAGES,
                    "grace": grace,
                    "repeats": args.repeats or (5 if args.quick else 11),
                }
            )
    return cases


def _library_from_pythonpath() -> Path | None:
    """The first ``PYTHONPATH`` entry that holds ``proxima/`` (not this tree)."""
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if not entry:
            continue
        path = Path(entry).resolve()
        if path != ROOT and (path / "proxima" / "__init__.py").is_file():
            return path
    return None


def run_backend(
    backend: str, cases: list[dict[str, Any]], in_process: bool, library: Path | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All ``cases`` on ``backend``, in a worker process unless ``in_process``;
    the outcomes and where the measured library came from."""
    if in_process:
        from .measure import library_info

        backend_run(backend, self_check)
        outcomes = []
        for case in cases:
            outcome = run_case(backend, case)
            print(describe(outcome), file=sys.stderr, flush=True)
            outcomes.append(outcome)
        return outcomes, library_info()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop(LIBRARY_ENV, None)
    if library is not None:
        env[LIBRARY_ENV] = str(library)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.worker", backend],
        input=json.dumps(cases),
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"the {backend} worker failed (exit status {proc.returncode})")
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    info: dict[str, Any] = next((line for line in lines if line["kind"] == "loop"), {})
    return [line for line in lines if line["kind"] != "loop"], info.get("library", {})


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def available_backends(wanted: Sequence[str]) -> list[str]:
    usable = []
    for backend in wanted:
        module = {"uvloop": "uvloop", "trio": "trio"}.get(backend)
        if module is not None and _version(module) is None:
            print(f"skipping {backend}: {module} is not installed", file=sys.stderr)
            continue
        usable.append(backend)
    return usable


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backends = available_backends(args.backends)
    meta: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "versions": {
            name: _version(name) for name in ("proxima", "anyio", "trio", "uvloop", "attrs")
        },
        "commit": _git_commit(),
        "quick": args.quick,
        "suites": args.suite,
        "variants": args.variants,
        "backends": backends,
        "shapes": args.shapes,
        "sizes": sorted(args.sizes),
        "parallel": args.parallel,
        "gc": not args.no_gc,
        "load_before": _load(),
    }
    started = time.perf_counter()
    outcomes: list[dict[str, Any]] = []
    libraries: dict[str, Any] = {}
    for backend in backends:
        cases = build_cases(args, backend)
        print(f"== {backend}: {len(cases)} cases", file=sys.stderr, flush=True)
        ran, libraries[backend] = run_backend(backend, cases, args.in_process, args.library)
        outcomes += ran
    # Where the measured library came from (the same for every backend).
    meta["library"] = next(iter(libraries.values()), {})
    meta["load_after"] = _load()
    meta["elapsed_s"] = round(time.perf_counter() - started, 1)

    targets = evaluate(outcomes)
    report = {
        "meta": meta,
        "outcomes": outcomes,
        "scaling": scaling(outcomes),
        "targets": targets,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(render(outcomes, meta))
    print(f"\nJSON: {args.output}  (total {meta['elapsed_s']:.0f} s)")
    if args.fail_on_miss and not all(t["ok"] for t in targets):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
