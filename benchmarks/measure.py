"""Measurements, run inside one backend's worker process.

``python -m benchmarks.measure BACKEND`` reads a JSON list of cases on stdin
and writes one JSON object per line on stdout (progress goes to stderr).
Each case gets its own ``anyio.run`` (a fresh event loop); inside it the
library and the baseline run the same graph alternately, so both see the
same loop and the same machine noise.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import statistics
import subprocess
import sys
import time
import traceback
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator, Sequence
from cProfile import Profile
from pathlib import Path
from typing import Any

import anyio

from proxima.data.pipeline import (
    Pipeline,
    PipelineConfig,
    PipelineContext,
    PipelineStatus,
    RetryConfig,
    Stage,
    TimeoutConfig,
)

from .baseline import BaselineRunner, self_check
from .shapes import StageSpec, build_shape

__all__ = ["BACKENDS", "VARIANTS", "backend_run", "main", "run_case"]

#: Backend name -> ``anyio.run`` keyword arguments.
BACKENDS: dict[str, dict[str, Any]] = {
    "asyncio": {"backend": "asyncio"},
    "uvloop": {"backend": "asyncio", "backend_options": {"use_uvloop": True}},
    "trio": {"backend": "trio"},
}

_perf = time.perf_counter
_cpu = time.process_time

#: (wall seconds, CPU seconds of this process) of one timed run.
Timing = tuple[float, float]


async def noop(ctx: Any, data: Any) -> None:
    """The stage body of every DAG case: does nothing, returns ``None``."""
    return None


def backend_run(backend: str, func: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """``anyio.run(func, *args)`` on ``backend`` (a fresh event loop)."""
    return anyio.run(func, *args, **BACKENDS[backend])


def library_stages(specs: Sequence[StageSpec], handler: Callable[..., Any] = noop) -> list[Stage]:
    return [
        Stage(stage_id=s.stage_id, name=s.stage_id, handler=handler, dependencies=s.dependencies)
        for s in specs
    ]


#: DAG variants: name -> the baseline's stage timeout. ``default`` keeps the
#: library's defaults (a 300 s stage timeout, so one cancel scope per attempt
#: on both sides; the default retries, which a no-op never uses);
#: ``no-timeout`` has no stage timeout and retries off on the library side,
#: and no cancel scope at all on the baseline side: the fixed per-stage costs
#: show most there (issue 10).
VARIANTS: dict[str, float | None] = {"default": 300.0, "no-timeout": None}


def library_config(
    max_parallel: int, grace: float | None = None, variant: str = "default"
) -> PipelineConfig:
    """Metrics on, as the targets require; the stage timeout and retries as
    ``variant`` says (see :data:`VARIANTS`); ``grace`` for the cancel cases."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {list(VARIANTS)}")
    limits: dict[str, Any] = {} if grace is None else {"grace_period_seconds": grace}
    if variant == "default":
        return PipelineConfig(
            max_parallel=max_parallel, collect_metrics=True, timeout=TimeoutConfig(**limits)
        )
    return PipelineConfig(
        max_parallel=max_parallel,
        collect_metrics=True,
        retry=RetryConfig(max_retries=0),
        timeout=TimeoutConfig(stage_timeout_seconds=None, **limits),
    )


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# -- one timed run of each side ------------------------------------------------------
@contextlib.contextmanager
def _collector(enabled: bool) -> Iterator[None]:
    """Collect garbage first; keep the cyclic GC off inside if not ``enabled``."""
    gc.collect()
    if enabled:
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextlib.contextmanager
def _profiling(profiler: Profile | None) -> Iterator[None]:
    """Run ``profiler`` (if any) for the timed span only."""
    if profiler is None:
        yield
        return
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()


async def _time_library(
    stages: Sequence[Stage],
    max_parallel: int,
    gc_on: bool = True,
    profiler: Profile | None = None,
    variant: str = "default",
) -> Timing:
    pipeline = Pipeline(library_config(max_parallel, variant=variant)).add_stages(stages)
    with _collector(gc_on), _profiling(profiler):
        cpu, start = _cpu(), _perf()
        result = await pipeline.execute()
        elapsed, cpu = _perf() - start, _cpu() - cpu
    if result.status is not PipelineStatus.COMPLETED or len(result.stage_results) != len(stages):
        raise AssertionError(f"library run did not complete: {result.status}")
    return elapsed, cpu


async def _time_baseline(
    specs: Sequence[StageSpec],
    max_parallel: int,
    gc_on: bool = True,
    profiler: Profile | None = None,
    variant: str = "default",
    handler: Callable[..., Any] = noop,
) -> Timing:
    timeout = VARIANTS[variant]
    runner = BaselineRunner(specs, handler, max_parallel=max_parallel, stage_timeout=timeout)
    with _collector(gc_on), _profiling(profiler):
        cpu, start = _cpu(), _perf()
        results = await runner.run()
        elapsed, cpu = _perf() - start, _cpu() - cpu
    if len(results) != len(specs):
        raise AssertionError("baseline run did not complete")
    return elapsed, cpu


async def _traced_peak(run: Callable[[], Awaitable[Any]]) -> int:
    """Peak bytes allocated (tracemalloc) while ``run()`` runs, above the start."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        kept = await run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del kept
    return peak - before


# -- DAG cases -------------------------------------------------------------------------
async def dag_case(case: dict[str, Any]) -> dict[str, Any]:
    shape: str = case["shape"]
    size: int = case["size"]
    max_parallel: int = size if case["parallel"] == "unbounded" else int(case["parallel"])
    repeats: int = case["repeats"]
    variant: str = case.get("variant", "default")

    specs = build_shape(shape, size)
    stages = library_stages(specs)
    # Warm up code paths and allocator arenas on a small graph of the same shape.
    warm_specs = specs if size <= 1000 else build_shape(shape, 1000)
    warm_stages = stages if size <= 1000 else library_stages(warm_specs)
    warm_parallel = max_parallel if case["parallel"] != "unbounded" else len(warm_specs)
    await _time_library(warm_stages, warm_parallel, variant=variant)
    await _time_baseline(warm_specs, warm_parallel, variant=variant)

    gc_on: bool = case.get("gc", True)
    lib_times: list[Timing] = []
    base_times: list[Timing] = []
    for i in range(repeats):
        # Alternate which side goes first, so drift hits both alike.
        if i % 2 == 0:
            lib_times.append(await _time_library(stages, max_parallel, gc_on, variant=variant))
            base_times.append(await _time_baseline(specs, max_parallel, gc_on, variant=variant))
        else:
            base_times.append(await _time_baseline(specs, max_parallel, gc_on, variant=variant))
            lib_times.append(await _time_library(stages, max_parallel, gc_on, variant=variant))

    lib_mem: int | None = None
    base_mem: int | None = None
    if case.get("memory", True):

        async def lib_once() -> Any:
            config = library_config(max_parallel, variant=variant)
            return await Pipeline(config).add_stages(stages).execute()

        async def base_once() -> Any:
            timeout = VARIANTS[variant]
            runner = BaselineRunner(specs, noop, max_parallel=max_parallel, stage_timeout=timeout)
            return await runner.run()

        lib_mem = await _traced_peak(lib_once)
        base_mem = await _traced_peak(base_once)

    lib_median = _median([t[0] for t in lib_times])
    base_median = _median([t[0] for t in base_times])
    lib_cpu = _median([t[1] for t in lib_times])
    base_cpu = _median([t[1] for t in base_times])
    return {
        "kind": "dag",
        "shape": shape,
        "size": size,
        "parallel": case["parallel"],
        "variant": variant,
        "max_parallel": max_parallel,
        "edges": sum(len(s.dependencies) for s in specs),
        "repeats": repeats,
        "gc": gc_on,
        "library": {
            "times_s": [t[0] for t in lib_times],
            "cpu_times_s": [t[1] for t in lib_times],
            "median_s": lib_median,
            "cpu_median_s": lib_cpu,
            "us_per_stage": lib_median / size * 1e6,
            "peak_bytes": lib_mem,
            "bytes_per_stage": None if lib_mem is None else lib_mem / size,
        },
        "baseline": {
            "times_s": [t[0] for t in base_times],
            "cpu_times_s": [t[1] for t in base_times],
            "median_s": base_median,
            "cpu_median_s": base_cpu,
            "us_per_stage": base_median / size * 1e6,
            "peak_bytes": base_mem,
            "bytes_per_stage": None if base_mem is None else base_mem / size,
        },
        "ratio": lib_median / base_median,
        "cpu_ratio": lib_cpu / base_cpu,
        "extra_bytes_per_stage": (
            None if lib_mem is None or base_mem is None else (lib_mem - base_mem) / size
        ),
    }


# -- empty execute() --------------------------------------------------------------------
async def empty_case(case: dict[str, Any]) -> dict[str, Any]:
    repeats: int = case["repeats"]
    lib_times: list[float] = []
    base_times: list[float] = []
    config = library_config(4)
    for _ in range(5):  # warm-up
        await Pipeline(config).execute()
        await BaselineRunner([], noop, max_parallel=4).run()
    for _ in range(repeats):
        pipeline = Pipeline(config)
        start = _perf()
        await pipeline.execute()
        lib_times.append(_perf() - start)
        runner = BaselineRunner([], noop, max_parallel=4)
        start = _perf()
        await runner.run()
        base_times.append(_perf() - start)
    lib_median = _median(lib_times)
    base_median = _median(base_times)
    return {
        "kind": "empty",
        "repeats": repeats,
        "library_us": lib_median * 1e6,
        "baseline_us": base_median * 1e6,
        "ratio": lib_median / base_median,
    }


# -- cancellation latency -------------------------------------------------------------
async def _cancel_library(size: int, grace: float, profiler: Profile | None = None) -> Timing:
    """Start ``size`` stages that block, cancel once all run, time until
    ``execute()`` returns (``profiler``, if given, runs only for that span).

    With a grace period, every stage cooperates: it notices the stop (an
    event set right after ``cancel()``, standing in for the stage's own I/O
    noticing ``ctx.is_cancelled``) and leaves through
    ``ctx.check_cancelled()``; the baseline's stages simply return."""
    all_running = anyio.Event()
    stop_seen = anyio.Event()
    running = 0

    async def blocking(ctx: PipelineContext, data: Any) -> None:
        nonlocal running
        running += 1
        if running == size:
            all_running.set()
        if grace == 0:
            await anyio.sleep_forever()
        await stop_seen.wait()
        ctx.check_cancelled()

    specs = build_shape("wide", size)
    pipeline = Pipeline(library_config(size, grace)).add_stages(library_stages(specs, blocking))
    returned_at = returned_cpu = 0.0

    async def run() -> None:
        nonlocal returned_at, returned_cpu
        result = await pipeline.execute()
        returned_at, returned_cpu = _perf(), _cpu()
        if profiler is not None:
            profiler.disable()
        if result.status is not PipelineStatus.CANCELLED:
            raise AssertionError(f"library cancel run ended {result.status}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await all_running.wait()
        # Collect the start-up garbage now, so that only the stop's own
        # allocations can trigger a collection inside the timed span.
        gc.collect()
        if profiler is not None:
            profiler.enable()
        cpu, start = _cpu(), _perf()
        pipeline.cancel()
        stop_seen.set()
    return returned_at - start, returned_cpu - cpu


async def _cancel_baseline(size: int, grace: float, profiler: Profile | None = None) -> Timing:
    all_running = anyio.Event()
    stop_seen = anyio.Event()
    running = 0

    async def blocking(ctx: Any, data: Any) -> None:
        nonlocal running
        running += 1
        if running == size:
            all_running.set()
        if grace == 0:
            await anyio.sleep_forever()
        await stop_seen.wait()

    runner = BaselineRunner(
        build_shape("wide", size), blocking, max_parallel=size, grace_period=grace
    )
    returned_at = returned_cpu = 0.0

    async def run() -> None:
        nonlocal returned_at, returned_cpu
        await runner.run()
        returned_at, returned_cpu = _perf(), _cpu()
        if profiler is not None:
            profiler.disable()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await all_running.wait()
        # Collect the start-up garbage now, so that only the stop's own
        # allocations can trigger a collection inside the timed span.
        gc.collect()
        if profiler is not None:
            profiler.enable()
        cpu, start = _cpu(), _perf()
        runner.cancel()
        stop_seen.set()
    return returned_at - start, returned_cpu - cpu


async def cancel_case(case: dict[str, Any]) -> dict[str, Any]:
    size: int = case["size"]
    grace: float = case["grace"]
    repeats: int = case["repeats"]
    await _cancel_library(min(size, 100), grace)  # warm-up
    await _cancel_baseline(min(size, 100), grace)
    lib_times: list[Timing] = []
    base_times: list[Timing] = []
    for i in range(repeats):
        if i % 2 == 0:
            lib_times.append(await _cancel_library(size, grace))
            base_times.append(await _cancel_baseline(size, grace))
        else:
            base_times.append(await _cancel_baseline(size, grace))
            lib_times.append(await _cancel_library(size, grace))
    lib_median = _median([t[0] for t in lib_times])
    base_median = _median([t[0] for t in base_times])
    lib_cpu = _median([t[1] for t in lib_times])
    base_cpu = _median([t[1] for t in base_times])
    return {
        "kind": "cancel",
        "size": size,
        "grace": grace,
        "repeats": repeats,
        "library_ms": lib_median * 1e3,
        "baseline_ms": base_median * 1e3,
        "library_cpu_ms": lib_cpu * 1e3,
        "baseline_cpu_ms": base_cpu * 1e3,
        "library_times_s": [t[0] for t in lib_times],
        "baseline_times_s": [t[0] for t in base_times],
        "ratio": lib_median / base_median,
        "cpu_ratio": lib_cpu / base_cpu,
    }


CaseFn = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

CASE_KINDS: dict[str, CaseFn] = {
    "dag": dag_case,
    "empty": empty_case,
    "cancel": cancel_case,
}

#: The other suites' modules, by the prefix of their case kinds. Imported only
#: when one of their cases runs, so that the DAG suite also runs against an
#: older library that lacks executors or stores (``--library``).
SUITE_MODULES: dict[str, str] = {
    "pool": "benchmarks.pool",
    "exec": "benchmarks.executors",
    "store": "benchmarks.store",
}


def suite_module(kind: str) -> Any:
    """The module that runs (and describes) cases of ``kind``, or ``None``."""
    name = SUITE_MODULES.get(kind.split("_", 1)[0])
    return None if name is None else importlib.import_module(name)


async def _loop_name() -> str:
    try:
        import asyncio

        loop = asyncio.get_running_loop()
    except RuntimeError:
        return "trio"
    return f"{type(loop).__module__}.{type(loop).__name__}"


def run_case(backend: str, case: dict[str, Any]) -> dict[str, Any]:
    """Run one case in a fresh ``anyio.run`` on ``backend``.

    A case whose suite needs what the library under test lacks (an older
    library: no executors, no store) comes back marked ``skipped``."""
    started = _perf()
    kind = case["kind"]
    try:
        module = suite_module(kind)
        func: CaseFn = CASE_KINDS[kind] if module is None else module.KINDS[kind]
    except ImportError as exc:
        outcome: dict[str, Any] = {"kind": kind, "case": case, "skipped": str(exc)}
    else:
        try:
            outcome = backend_run(backend, func, case)
        except Exception as exc:  # one broken case must not lose the others' figures
            detail = "".join(traceback.format_exception(exc)[-12:])
            print(detail, file=sys.stderr, flush=True)
            outcome = {"kind": kind, "case": case, "error": f"{type(exc).__name__}: {exc}"}
    outcome["backend"] = backend
    outcome["elapsed_s"] = _perf() - started
    return outcome


def describe(outcome: dict[str, Any]) -> str:
    """One progress line for ``outcome``."""
    kind = outcome["kind"]
    head = f"[{outcome['backend']}]"
    if "skipped" in outcome:
        return f"{head} {kind}: skipped ({outcome['skipped']})"
    if "error" in outcome:
        return f"{head} {kind}: FAILED ({outcome['error']})"
    module = suite_module(kind)
    if module is not None:
        return f"{head} {module.describe(outcome)}"
    if kind == "dag":
        lib, base = outcome["library"], outcome["baseline"]
        variant = "" if outcome.get("variant", "default") == "default" else " no-timeout"
        return (
            f"{head} {outcome['shape']:<6} {outcome['size']:>6} par={outcome['parallel']:<9}"
            f"{variant} "
            f"lib {lib['us_per_stage']:6.1f} us/stage  base {base['us_per_stage']:6.1f}  "
            f"ratio {outcome['ratio']:.2f} (cpu {outcome['cpu_ratio']:.2f})  "
            f"({outcome['elapsed_s']:.1f}s)"
        )
    if kind == "empty":
        return (
            f"{head} empty execute(): lib {outcome['library_us']:.0f} us  "
            f"base {outcome['baseline_us']:.0f} us"
        )
    return (
        f"{head} cancel {outcome['size']} grace={outcome['grace']:g}s: "
        f"lib {outcome['library_ms']:.2f} ms  base {outcome['baseline_ms']:.2f} ms  "
        f"ratio {outcome['ratio']:.2f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("backend", choices=sorted(BACKENDS))
    args = parser.parse_args(argv)
    cases: list[dict[str, Any]] = json.load(sys.stdin)
    backend_run(args.backend, self_check)  # the baseline must be correct on this backend
    info = {"kind": "loop", "backend": args.backend, "loop": _loop_info(args.backend)}
    print(json.dumps({**info, "library": library_info()}))
    sys.stdout.flush()
    for case in cases:
        outcome = run_case(args.backend, case)
        print(describe(outcome), file=sys.stderr, flush=True)
        print(json.dumps(outcome), flush=True)
    return 0


def library_info() -> dict[str, Any]:
    """Where the library under test was imported from, and its git commit."""
    import proxima

    root = Path(proxima.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
        commit: str | None = out.stdout.strip() or None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "proxima"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
        dirty: bool | None = bool(status.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    # ``dirty``: the library's files differ from that commit (edits not committed yet).
    return {"path": str(root), "commit": commit, "dirty": dirty}


def _loop_info(backend: str) -> str:
    name: str = backend_run(backend, _loop_name)
    return name


if __name__ == "__main__":
    raise SystemExit(main())
