"""What each feature costs, without a profiler's distortion.

``python -m benchmarks.ablate --backend asyncio --shape chain --size 10000``

Times the library with features switched off through the public API
(metrics off, stage timeout ``None`` so no cancel scope per attempt, the
plan already built by an earlier run of the same ``Pipeline``) and the
baseline with and without its cancel scope, alternating the variants, and
prints the median CPU us/stage of each (process time: steadier than wall
time when other jobs share the machine) and its difference to the
library's default. Differences of about a us are noise on a busy machine.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from proxima.data.pipeline import Pipeline, PipelineConfig, PipelineStatus, TimeoutConfig

from .baseline import BaselineRunner
from .measure import BACKENDS, backend_run, library_stages, noop
from .shapes import SHAPES, build_shape

__all__ = ["main"]

_cpu = time.process_time


async def _ablate(shape: str, size: int, parallel: int, repeats: int) -> dict[str, float]:
    specs = build_shape(shape, size)
    stages = library_stages(specs)
    no_timeout = TimeoutConfig(stage_timeout_seconds=None)

    def config(metrics: bool, timeout: bool) -> PipelineConfig:
        return PipelineConfig(
            max_parallel=parallel,
            collect_metrics=metrics,
            timeout=TimeoutConfig() if timeout else no_timeout,
        )

    cached = Pipeline(config(True, True)).add_stages(stages)
    cached.validate()  # builds and caches the plan

    def library(metrics: bool, timeout: bool) -> Callable[[], Awaitable[Any]]:
        async def run() -> Any:
            return await Pipeline(config(metrics, timeout)).add_stages(stages).execute()

        return run

    async def cached_plan() -> Any:
        return await cached.execute()

    def baseline(timeout: bool) -> Callable[[], Awaitable[Any]]:
        async def run() -> Any:
            runner = BaselineRunner(
                specs, noop, max_parallel=parallel, stage_timeout=300.0 if timeout else None
            )
            return await runner.run()

        return run

    variants: dict[str, Callable[[], Awaitable[Any]]] = {
        "library (default: metrics on, timeout 300 s)": library(True, True),
        "library, plan cached (second execute)": cached_plan,
        "library, metrics off": library(False, True),
        "library, no stage timeout (no cancel scope)": library(True, False),
        "library, metrics off, no stage timeout": library(False, False),
        "baseline (timeout 300 s)": baseline(True),
        "baseline, no stage timeout": baseline(False),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():  # warm-up
        await run()
    for i in range(repeats):
        order = list(variants.items())
        if i % 2:
            order.reverse()
        for name, run in order:
            gc.collect()
            start = _cpu()
            outcome = await run()
            times[name].append(_cpu() - start)
            status = getattr(outcome, "status", PipelineStatus.COMPLETED)
            if status is not PipelineStatus.COMPLETED:
                raise AssertionError(f"{name}: {status}")
            del outcome
    return {name: statistics.median(values) / size * 1e6 for name, values in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ablate", description=__doc__)
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="asyncio")
    parser.add_argument("--shape", choices=list(SHAPES), default="chain")
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--parallel", default="unbounded", help="'unbounded' or an integer")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    parallel = args.size if args.parallel == "unbounded" else int(args.parallel)
    figures: dict[str, float] = backend_run(
        args.backend, _ablate, args.shape, args.size, parallel, args.repeats
    )
    reference = next(iter(figures.values()))
    print(f"{args.backend} {args.shape} {args.size} par={args.parallel}, median of {args.repeats}")
    for name, us in figures.items():
        print(f"  {us:7.2f} cpu us/stage  {us - reference:+7.2f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
