"""Where the time goes: cProfile of one DAG run (or one cancellation), per stage.

``python -m benchmarks.profiling --backend asyncio --shape chain --size 10000``

Prints, for the library and for the baseline, the functions with the most
own time, normalised per stage (calls/stage, own us/stage, cumulative
us/stage), and the own time summed per source file. cProfile slows every
Python call down, so absolute figures are inflated (roughly 2-3x); use them
to compare functions and the two sides, not as timings. ``--dump PREFIX``
also writes ``PREFIX.library.prof`` / ``PREFIX.baseline.prof`` for
snakeviz or ``pstats``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import cProfile
import pstats
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from .measure import (
    BACKENDS,
    VARIANTS,
    _cancel_baseline,
    _cancel_library,
    _time_baseline,
    _time_library,
    backend_run,
    library_stages,
    noop,
)
from .shapes import SHAPES, StageSpec, build_shape

__all__ = ["main", "profile_side"]

# (file, line, function) -> (primitive calls, calls, own time, cumulative time, callers)
StatKey = tuple[str, int, str]


def _short(path: str) -> str:
    """``path`` without the uninteresting prefix."""
    for marker, keep in (
        ("site-packages/", ""),
        ("proxima/", "proxima/"),
        ("benchmarks/", "benchmarks/"),
        ("lib/python3", "python3"),
    ):
        if marker in path:
            return keep + path.split(marker, 1)[1]
    return path


def profile_side(
    backend: str,
    run: Callable[[cProfile.Profile], Awaitable[Any]],
    warm: Callable[[], Awaitable[Any]],
) -> pstats.Stats:
    """``run(profiler)`` after one ``warm()``, in a fresh ``anyio.run``;
    ``run`` enables the profiler around the span that matters."""
    profiler = cProfile.Profile()

    async def body() -> None:
        await warm()
        await run(profiler)

    backend_run(backend, body)
    return pstats.Stats(profiler)


def report(title: str, stats: pstats.Stats, stages: int, top: int, match: str = "") -> str:
    raw: dict[StatKey, tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    lines = [
        f"== {title}: {total / stages * 1e6:.1f} us/stage own time in total "
        f"(under cProfile), {stages} stages",
        f"{'calls/st':>8}  {'own us/st':>9}  {'cum us/st':>9}  function",
    ]
    ranked = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)
    if match:
        ranked = [item for item in ranked if match in item[0][0]]
    for (path, line, func), (_, calls, own, cum, _) in ranked[:top]:
        lines.append(
            f"{calls / stages:8.2f}  {own / stages * 1e6:9.2f}  {cum / stages * 1e6:9.2f}  "
            f"{_short(path)}:{line}({func})"
        )
    by_file: dict[str, float] = {}
    for (path, _, _), (_, _, own, _, _) in raw.items():
        by_file[_short(path)] = by_file.get(_short(path), 0.0) + own
    lines.append(f"-- own time by file ({title})")
    for path, own in sorted(by_file.items(), key=lambda item: item[1], reverse=True)[:12]:
        lines.append(f"{own / stages * 1e6:9.2f} us/st  {100 * own / total:5.1f}%  {path}")
    return "\n".join(lines)


Job = tuple[Callable[[cProfile.Profile], Awaitable[Any]], Callable[[], Awaitable[Any]]]


def _cancel_job(side: str, size: int, grace: float) -> Job:
    """Profile from ``cancel()`` to ``execute()`` returning."""
    fn = _cancel_library if side == "library" else _cancel_baseline

    async def run(profiler: cProfile.Profile) -> Any:
        return await fn(size, grace, profiler)  # profiles cancel() .. execute() returning

    async def warm() -> Any:
        return await fn(min(size, 100), grace)

    return run, warm


def _dag_job(
    side: str,
    specs: Sequence[StageSpec],
    parallel: int,
    variant: str = "default",
    executor: str = "loop",
) -> Job:
    """Profile one whole ``execute()`` (or baseline run) of ``specs``.

    ``executor="loop"``: ``async def`` no-op stages (the DAG suite's); else
    ``def`` no-op stages on that executor, against a baseline whose stages
    call the handler directly (``inline``), through ``anyio.to_thread``
    (``thread``) or ``anyio.to_process`` (``process``)."""
    if executor == "loop":  # runs against a library without executors too
        handler: Any = noop

        def build(these: Sequence[StageSpec]) -> list[Any]:
            return library_stages(these)

    else:
        from . import executors

        handler = {
            "inline": executors.work,
            "thread": executors._to_thread,
            "process": executors._to_process,
        }[executor]

        def build(these: Sequence[StageSpec]) -> list[Any]:
            return executors._stages(these, executors.work, executor)

    stages = build(specs) if side == "library" else []
    small = specs[:1000]  # a prefix of any shape is a valid graph

    async def run(profiler: cProfile.Profile) -> Any:
        # Profiles the run itself (not the gc.collect() before it).
        if side == "library":
            return await _time_library(stages, parallel, profiler=profiler, variant=variant)
        return await _time_baseline(
            specs, parallel, profiler=profiler, variant=variant, handler=handler
        )

    async def warm() -> Any:
        if side == "library":
            return await _time_library(build(small), parallel, variant=variant)
        return await _time_baseline(small, parallel, variant=variant, handler=handler)

    return run, warm


def _store_job(side: str, specs: Sequence[StageSpec], parallel: int, mode: str) -> Job:
    """Profile a run with a ``SQLiteStore`` (``mode="record"``: against the
    baseline with a bare insert+commit per stage through a thread) or the
    resume of a recorded run whose last stage changed (``mode="resume"``:
    against the same stages run fresh, without a store)."""
    from pathlib import Path as _Path

    from proxima.data.pipeline import Pipeline
    from proxima.data.pipeline.store import SQLiteStore

    from . import store as bench_store
    from .baseline import BaselineRunner
    from .measure import library_config

    folder = _Path(tempfile.mkdtemp(prefix="proxima-bench-profile-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    config = library_config(parallel, variant="no-timeout")
    first = bench_store._stages(specs, version_of_last="1")
    changed = bench_store._stages(specs, version_of_last="2")
    sqlite = SQLiteStore(folder / "runs.db")
    recorded: list[str] = []

    async def library(profiler: cProfile.Profile | None) -> Any:
        pipeline = Pipeline(config).add_stages(changed if mode == "resume" else first)
        with _enabled(profiler):
            if mode == "record":
                return await pipeline.execute(store=sqlite)
            return await pipeline.execute(store=sqlite, resume=recorded[0])

    async def baseline(profiler: cProfile.Profile | None) -> Any:
        if mode == "resume":  # the same stages, fresh, no store
            pipeline = Pipeline(config).add_stages(changed)
            with _enabled(profiler):
                return await pipeline.execute()
        bare = bench_store.BareTable(folder / "bare.db")
        bare.new_run()

        async def insert(sid: str, data: Any) -> str:
            await anyio.to_thread.run_sync(bare.insert, sid, bench_store.VALUE)
            return bench_store.VALUE

        runner = BaselineRunner(specs, insert, max_parallel=parallel, stage_timeout=None)
        with _enabled(profiler):
            await runner.run()
        bare.close()

    async def run(profiler: cProfile.Profile) -> Any:
        return await (library if side == "library" else baseline)(profiler)

    async def warm() -> Any:
        result = await Pipeline(config).add_stages(first).execute(store=sqlite)
        assert result.run_id is not None
        recorded.append(result.run_id)
        return result

    return run, warm


@contextlib.contextmanager
def _enabled(profiler: cProfile.Profile | None) -> Iterator[None]:
    if profiler is None:
        yield
        return
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiling", description=__doc__)
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="asyncio")
    parser.add_argument("--shape", choices=[*SHAPES, "cancel"], default="chain")
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--parallel", default="unbounded", help="'unbounded' or an integer")
    parser.add_argument("--grace", type=float, default=0.0, help="for --shape cancel")
    parser.add_argument(
        "--variant",
        choices=sorted(VARIANTS),
        default="default",
        help="default: 300 s stage timeout on both sides; no-timeout: none, retries off",
    )
    parser.add_argument(
        "--executor",
        choices=["loop", "inline", "thread", "process"],
        default="loop",
        help="loop: async def stages (default); else def stages on that executor, against "
        "the baseline calling the handler directly / via to_thread / via to_process",
    )
    parser.add_argument(
        "--store",
        choices=["record", "resume"],
        default=None,
        help="record: a run with a SQLiteStore (baseline: a bare insert+commit per stage "
        "through a thread); resume: the resume of a recorded run with the last stage "
        "changed (baseline: the same stages fresh, no store); no-op stages, no timeout",
    )
    parser.add_argument("--side", choices=["library", "baseline", "both"], default="both")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--match", default="", help="only list functions whose file path contains this"
    )
    parser.add_argument("--dump", type=Path, default=None, help="write .prof files here")
    args = parser.parse_args(argv)

    size: int = args.size
    sides = ["library", "baseline"] if args.side == "both" else [args.side]
    for side in sides:
        if args.store is not None:
            parallel = size if args.parallel == "unbounded" else int(args.parallel)
            run, warm = _store_job(side, build_shape(args.shape, size), parallel, args.store)
            title = f"{side}, store {args.store}, {args.shape} {size}, {args.backend}"
        elif args.shape == "cancel":
            run, warm = _cancel_job(side, size, args.grace)
            title = f"{side}, cancel {size} running, grace {args.grace:g}s, {args.backend}"
        else:
            parallel = size if args.parallel == "unbounded" else int(args.parallel)
            specs = build_shape(args.shape, size)
            run, warm = _dag_job(side, specs, parallel, args.variant, args.executor)
            title = (
                f"{side}, {args.shape} {size} par={args.parallel} {args.variant} "
                f"executor={args.executor}, {args.backend}"
            )
        stats = profile_side(args.backend, run, warm)
        print(report(title, stats, size, args.top, args.match))
        print()
        if args.dump is not None:
            stats.dump_stats(f"{args.dump}.{side}.prof")
    return 0


if __name__ == "__main__":
    sys.exit(main())
