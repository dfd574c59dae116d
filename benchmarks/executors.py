"""Issue 11: what running a stage somewhere else costs (``--suite executors``).

Each case compares a stage on an executor with the least a plain anyio
program needs to do the same, in the same ``anyio.run``, alternating sides:

* ``exec_thread``: a chain of ``def`` no-op stages on ``executor="thread"``
  against the lean baseline (``baseline.py``) whose stages each make one
  ``await anyio.to_thread.run_sync(...)`` call. Both sides also run the same
  chain with the handler called on the loop (library ``executor="inline"``,
  the baseline calling it directly), so the thread hop alone can be told
  apart: ``hop ratio = (lib thread - lib inline) / (base thread - base
  inline)``.
* ``exec_process``: the same with ``executor="process"`` against stages that
  each ``await anyio.to_process.run_sync(..., cancellable=True)``. The
  library starts its worker processes for each run (R11.8) while anyio's
  pool lives as long as the event loop, so the per-stage wall time is the
  span from the first stage's end to the last's over the stages between
  (a listener's STAGE_FINISHED; the baseline stamps its own), and what lies
  outside it (the worker's start-up, the run's end) is reported apart. CPU
  time, which counts the worker processes, is the slope between two chain
  lengths (20 and 520 stages; 2 020 in the full run).
* ``exec_dask``: a chain of stages on ``DaskExecutor(client=client)`` against
  stages that each ``client.submit(...)`` and await the future (in a worker
  thread: ``anyio.to_thread.run_sync(future.result)``, which works under
  asyncio and trio), on the same in-process ``LocalCluster``.
* ``exec_deadline``: a process stage that sleeps for a minute under a 0.5 s
  stage timeout: how long after its deadline the stage ends (the worker is
  killed at the deadline), against ``move_on_after`` around a cancellable
  ``anyio.to_process.run_sync`` call.
* ``exec_throughput``: 10 000 independent blocking ``def`` stages
  (``time.sleep(0.001)``) with ``max_parallel=32`` against a
  ``concurrent.futures.ThreadPoolExecutor(32)`` mapping the same calls (and
  the baseline through ``anyio.to_thread``, for reference).

The library side runs with no stage timeout and retries off (the baseline
then opens no cancel scope either), metrics on. Process and Dask figures are
wall time: the work happens in other processes or threads of a cluster, and
the caller's CPU time does not show it.
"""

from __future__ import annotations

import concurrent.futures
import gc
import os
import resource
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.to_process
import anyio.to_thread

from proxima.data.pipeline import (
    EventKind,
    Pipeline,
    PipelineConfig,
    PipelineEvent,
    PipelineStatus,
    RetryConfig,
    Stage,
    StageStatus,
    TimeoutConfig,
)

# At the top: a library without executors (an older commit under --library)
# makes the suite's cases come back "skipped" instead of failing.
from proxima.data.pipeline.executors import DaskExecutor

from .baseline import BaselineRunner
from .measure import library_config
from .shapes import StageSpec, build_shape

__all__ = ["KINDS", "cases", "describe", "render", "targets"]

_perf = time.perf_counter
_cpu = time.process_time

#: (wall seconds, CPU seconds of this process) of one timed run.
Timing = tuple[float, float]
Run = Callable[[], Awaitable[None]]


# -- handlers: module level, so that they pickle by reference ---------------------------
def work(ctx: Any, data: Any) -> None:
    """A ``def`` no-op stage body."""
    return None


def block(ctx: Any, data: Any) -> None:
    """A blocking ``def`` stage body: 1 ms of ``time.sleep``."""
    time.sleep(0.001)


def sleep_long(ctx: Any, data: Any) -> None:
    """A stage that only a kill ends."""
    time.sleep(60)


# -- helpers -----------------------------------------------------------------------------
def _stages(specs: Sequence[StageSpec], handler: Any, executor: Any) -> list[Stage]:
    return [
        Stage(
            stage_id=s.stage_id,
            name=s.stage_id,
            handler=handler,
            dependencies=s.dependencies,
            executor=executor,
        )
        for s in specs
    ]


def _library(stages: Sequence[Stage], max_parallel: int) -> Run:
    config = library_config(max_parallel, variant="no-timeout")

    async def run() -> None:
        result = await Pipeline(config).add_stages(stages).execute()
        if result.status is not PipelineStatus.COMPLETED or len(result.stage_results) != len(
            stages
        ):
            failed = [r.error for r in result.stage_results.values() if r.error is not None]
            raise AssertionError(f"library run did not complete: {result.status} {failed[:1]}")

    return run


def _baseline(specs: Sequence[StageSpec], handler: Any, max_parallel: int) -> Run:
    async def run() -> None:
        runner = BaselineRunner(specs, handler, max_parallel=max_parallel, stage_timeout=None)
        results = await runner.run()
        if len(results) != len(specs):
            raise AssertionError("baseline run did not complete")

    return run


def children_cpu() -> float:
    """CPU seconds used by this process's child processes so far: those
    already reaped (``getrusage``) plus those still alive (``/proc``).

    The library's process executor reaps its workers when ``execute()``
    ends, anyio keeps its own alive for the event loop's life; this counts
    both alike."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    me, tick = os.getpid(), os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # After the command: state, ppid, ..., utime (14th field), stime (15th).
        if int(fields[1]) == me:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def _timed(run: Run, children: bool = False) -> Timing:
    """Wall and CPU time of ``run()``; with ``children``, the CPU time of
    child processes counts too (sampled outside the timed span)."""
    gc.collect()
    before = children_cpu() if children else 0.0
    cpu, start = _cpu(), _perf()
    await run()
    wall, cpu = _perf() - start, _cpu() - cpu
    if children:
        cpu += children_cpu() - before
    return wall, cpu


async def _alternate(
    sides: dict[str, Run],
    repeats: int,
    children: bool = False,
    warm_ups: dict[str, Run] | None = None,
) -> dict[str, list[Timing]]:
    """Each side ``repeats`` times (after one warm-up each: the side itself,
    or a smaller run from ``warm_ups``), rotating who goes first, so drift
    and noise hit every side alike."""
    for name in sides:
        await (warm_ups or sides)[name]()
    times: dict[str, list[Timing]] = {name: [] for name in sides}
    order = list(sides.items())
    for i in range(repeats):
        turn = order[i % len(order) :] + order[: i % len(order)]
        for name, run in turn:
            times[name].append(await _timed(run, children))
    return times


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _summary(times: dict[str, list[Timing]], per: int) -> dict[str, dict[str, Any]]:
    """Medians per side, also per stage (``per`` stages a run)."""
    out: dict[str, dict[str, Any]] = {}
    for name, timings in times.items():
        wall = _median([t[0] for t in timings])
        cpu = _median([t[1] for t in timings])
        out[name] = {
            "times_s": [t[0] for t in timings],
            "cpu_times_s": [t[1] for t in timings],
            "median_s": wall,
            "cpu_median_s": cpu,
            "us_per_stage": wall / per * 1e6,
            "cpu_us_per_stage": cpu / per * 1e6,
        }
    return out


# -- thread -------------------------------------------------------------------------------
async def _to_thread(sid: str, data: Any) -> Any:
    return await anyio.to_thread.run_sync(work, sid, data)


async def thread_case(case: dict[str, Any]) -> dict[str, Any]:
    size: int = case["size"]
    specs = build_shape("chain", size)
    sides = {
        "library thread": _library(_stages(specs, work, "thread"), 1),
        "base thread": _baseline(specs, _to_thread, 1),
        "library inline": _library(_stages(specs, work, "inline"), 1),
        "base inline": _baseline(specs, work, 1),
    }
    s = _summary(await _alternate(sides, case["repeats"]), size)
    lt, bt, li, bi = (s[k] for k in sides)
    return {
        "kind": "exec_thread",
        "size": size,
        "repeats": case["repeats"],
        "sides": s,
        "ratio": lt["median_s"] / bt["median_s"],
        "cpu_ratio": lt["cpu_median_s"] / bt["cpu_median_s"],
        "hop_us": {
            "library": lt["us_per_stage"] - li["us_per_stage"],
            "baseline": bt["us_per_stage"] - bi["us_per_stage"],
        },
        "hop_ratio": (lt["median_s"] - li["median_s"]) / (bt["median_s"] - bi["median_s"]),
        "hop_cpu_ratio": (lt["cpu_median_s"] - li["cpu_median_s"])
        / (bt["cpu_median_s"] - bi["cpu_median_s"]),
    }


# -- process ------------------------------------------------------------------------------
async def _to_process(sid: str, data: Any) -> Any:
    return await anyio.to_process.run_sync(work, sid, data, cancellable=True)


def _slope(short: float, long: float, sizes: tuple[int, int]) -> float:
    """Seconds per stage between two chain lengths."""
    return (long - short) / (sizes[1] - sizes[0])


class _Stamps:
    """perf_counter when the first and the last stage of a run ended."""

    def __init__(self, last: str) -> None:
        self.last = last
        self.first_end: float | None = None
        self.last_end: float | None = None

    def ended(self, stage_id: str) -> None:
        now = _perf()
        if self.first_end is None:
            self.first_end = now
        if stage_id == self.last:
            self.last_end = now

    def span(self) -> float:
        if self.first_end is None or self.last_end is None:
            raise AssertionError("a stage end was not seen")
        return self.last_end - self.first_end


def _process_sides(n: int, spans: dict[str, list[float]]) -> dict[str, Run]:
    """The library and the baseline on an ``n``-stage process chain; each
    run appends the span from its first stage's end to its last's to
    ``spans`` (worker start-up and the run's end are outside it)."""
    specs = build_shape("chain", n)
    stages = _stages(specs, work, "process")
    last = specs[-1].stage_id
    config = library_config(1, variant="no-timeout")

    async def library() -> None:
        stamps = _Stamps(last)

        def listen(event: PipelineEvent) -> None:
            if event.kind is EventKind.STAGE_FINISHED and event.stage_id is not None:
                stamps.ended(event.stage_id)

        pipeline = Pipeline(config).add_stages(stages)
        pipeline.add_listener(listen)
        result = await pipeline.execute()
        if result.status is not PipelineStatus.COMPLETED:
            raise AssertionError(f"library run did not complete: {result.status}")
        spans[f"library {n}"].append(stamps.span())

    async def baseline() -> None:
        stamps = _Stamps(last)

        async def stage(sid: str, data: Any) -> Any:
            value = await _to_process(sid, data)
            stamps.ended(sid)
            return value

        runner = BaselineRunner(specs, stage, max_parallel=1, stage_timeout=None)
        if len(await runner.run()) != n:
            raise AssertionError("baseline run did not complete")
        spans[f"base {n}"].append(stamps.span())

    return {f"library {n}": library, f"base {n}": baseline}


async def process_case(case: dict[str, Any]) -> dict[str, Any]:
    small, large = case["sizes"]
    sizes = (small, large)
    spans: dict[str, list[float]] = {
        f"{side} {n}": [] for n in sizes for side in ("library", "base")
    }
    sides = {**_process_sides(small, spans), **_process_sides(large, spans)}
    s = _summary(await _alternate(sides, case["repeats"], children=True), 1)
    for name in spans:  # drop the warm-up run's span
        spans[name] = spans[name][1:]

    def per_stage(name: str, n: int) -> float:
        """Seconds per stage from the first stage's end to the last's."""
        return _median(spans[name]) / (n - 1)

    def cpu_slope(side: str) -> float:
        return _slope(
            s[f"{side} {small}"]["cpu_median_s"], s[f"{side} {large}"]["cpu_median_s"], sizes
        )

    lib, base = per_stage(f"library {large}", large), per_stage(f"base {large}", large)
    lib_cpu, base_cpu = cpu_slope("library"), cpu_slope("base")
    # What a run costs beyond its stages: the library starts its worker here.
    lib_start = s[f"library {large}"]["median_s"] - _median(spans[f"library {large}"])
    base_start = s[f"base {large}"]["median_s"] - _median(spans[f"base {large}"])
    return {
        "kind": "exec_process",
        "sizes": [small, large],
        "repeats": case["repeats"],
        "sides": s,
        "spans_s": spans,
        "library_us_per_stage": lib * 1e6,
        "baseline_us_per_stage": base * 1e6,
        "library_cpu_us_per_stage": lib_cpu * 1e6,
        "baseline_cpu_us_per_stage": base_cpu * 1e6,
        "ratio": lib / base,
        "cpu_ratio": lib_cpu / base_cpu,
        "library_outside_ms": lib_start * 1e3,
        "baseline_outside_ms": base_start * 1e3,
    }


# -- Dask -----------------------------------------------------------------------------------
def _start_dask() -> tuple[Any, Any]:
    import distributed

    cluster = distributed.LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=1, processes=False, threads_per_worker=4, dashboard_address=":0"
    )
    return cluster, distributed.Client(cluster)  # type: ignore[no-untyped-call]


def _stop_dask(cluster: Any, client: Any) -> None:
    client.close()
    cluster.close()


async def dask_case(case: dict[str, Any]) -> dict[str, Any]:
    size: int = case["size"]
    cluster, client = await anyio.to_thread.run_sync(_start_dask)
    try:

        async def submit(sid: str, data: Any) -> Any:
            future = client.submit(work, sid, data, pure=False)
            return await anyio.to_thread.run_sync(future.result)

        specs = build_shape("chain", size)
        sides = {
            "library": _library(_stages(specs, work, DaskExecutor(client=client)), 1),
            "base": _baseline(specs, submit, 1),
        }
        s = _summary(await _alternate(sides, case["repeats"]), size)
    finally:
        await anyio.to_thread.run_sync(_stop_dask, cluster, client)
    return {
        "kind": "exec_dask",
        "size": size,
        "repeats": case["repeats"],
        "sides": s,
        "ratio": s["library"]["median_s"] / s["base"]["median_s"],
        "cpu_ratio": s["library"]["cpu_median_s"] / s["base"]["cpu_median_s"],
    }


# -- a process stage's deadline ------------------------------------------------------------
async def _library_overshoot(deadline: float) -> dict[str, float]:
    """Seconds from the stage's deadline (STAGE_STARTED + ``deadline``) to its
    STAGE_FINISHED, seen by a listener, and by the events' own clock."""
    seen: dict[EventKind, tuple[float, float]] = {}

    def listen(event: PipelineEvent) -> None:
        if event.kind in (EventKind.STAGE_STARTED, EventKind.STAGE_FINISHED):
            seen.setdefault(event.kind, (_perf(), event.monotonic))

    config = PipelineConfig(
        max_parallel=1,
        collect_metrics=True,
        retry=RetryConfig(max_retries=0),
        timeout=TimeoutConfig(stage_timeout_seconds=deadline),
    )
    pipeline = Pipeline(config).add_stages(_stages(build_shape("wide", 1), sleep_long, "process"))
    pipeline.add_listener(listen)
    start = _perf()
    result = await pipeline.execute()
    returned = _perf()
    status = result.stage_results["s0"].status
    if status is not StageStatus.TIMED_OUT:
        raise AssertionError(f"the process stage ended {status}, not TIMED_OUT")
    started, finished = seen[EventKind.STAGE_STARTED], seen[EventKind.STAGE_FINISHED]
    return {
        "overshoot_s": finished[0] - started[0] - deadline,
        "event_overshoot_s": finished[1] - started[1] - deadline,
        "execute_s": returned - start,
    }


async def _baseline_overshoot(deadline: float) -> float:
    start = _perf()
    with anyio.move_on_after(deadline) as scope:
        await anyio.to_process.run_sync(sleep_long, None, None, cancellable=True)
    if not scope.cancelled_caught:
        raise AssertionError("the baseline's process call was not cancelled")
    return _perf() - start - deadline


async def deadline_case(case: dict[str, Any]) -> dict[str, Any]:
    timeout: float = case["timeout"]
    await anyio.to_process.run_sync(work, None, None)  # anyio's pool: one warm worker
    lib: list[dict[str, float]] = []
    base: list[float] = []
    for i in range(case["repeats"]):
        if i % 2:
            base.append(await _baseline_overshoot(timeout))
            lib.append(await _library_overshoot(timeout))
        else:
            lib.append(await _library_overshoot(timeout))
            base.append(await _baseline_overshoot(timeout))
    return {
        "kind": "exec_deadline",
        "timeout_s": timeout,
        "repeats": case["repeats"],
        "library_overshoot_ms": [x["overshoot_s"] * 1e3 for x in lib],
        "library_event_overshoot_ms": [x["event_overshoot_s"] * 1e3 for x in lib],
        "library_execute_ms": [x["execute_s"] * 1e3 for x in lib],
        "baseline_overshoot_ms": [x * 1e3 for x in base],
        "median_ms": _median([x["overshoot_s"] * 1e3 for x in lib]),
        "max_ms": max(x["overshoot_s"] * 1e3 for x in lib),
        "event_median_ms": _median([x["event_overshoot_s"] * 1e3 for x in lib]),
        "execute_median_ms": _median([x["execute_s"] * 1e3 for x in lib]),
        "baseline_median_ms": _median([x * 1e3 for x in base]),
    }


# -- throughput of blocking stages ----------------------------------------------------------
async def _to_thread_block(sid: str, data: Any) -> Any:
    return await anyio.to_thread.run_sync(block, sid, data)


async def throughput_case(case: dict[str, Any]) -> dict[str, Any]:
    size: int = case["size"]
    parallel: int = case["parallel"]
    specs = build_shape("wide", size)
    limiter = anyio.CapacityLimiter(parallel)

    async def base_thread(sid: str, data: Any) -> Any:
        return await anyio.to_thread.run_sync(block, sid, data, limiter=limiter)

    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:

        def ways(specs: list[StageSpec]) -> dict[str, Run]:
            async def thread_pool() -> None:
                n = len(specs)
                if sum(1 for _ in pool.map(block, range(n), range(n))) != n:
                    raise AssertionError("ThreadPoolExecutor: not every call ran")

            return {
                # def stages: executor="auto" puts them in worker threads (R11.2).
                "library": _library(_stages(specs, block, "auto"), parallel),
                "ThreadPoolExecutor": thread_pool,
                "base to_thread": _baseline(specs, base_thread, parallel),
            }

        sides = ways(specs)
        warm_ups = ways(build_shape("wide", 10 * parallel))  # every thread started
        s = _summary(await _alternate(sides, case["repeats"], warm_ups=warm_ups), size)
    lib, tpe = s["library"], s["ThreadPoolExecutor"]
    return {
        "kind": "exec_throughput",
        "size": size,
        "parallel": parallel,
        "repeats": case["repeats"],
        "ideal_s": size * 0.001 / parallel,
        "sides": s,
        "stages_per_s": {name: size / side["median_s"] for name, side in s.items()},
        "ratio": lib["median_s"] / tpe["median_s"],
        "cpu_ratio": lib["cpu_median_s"] / tpe["cpu_median_s"],
    }


KINDS = {
    "exec_thread": thread_case,
    "exec_process": process_case,
    "exec_dask": dask_case,
    "exec_deadline": deadline_case,
    "exec_throughput": throughput_case,
}


def cases(*, quick: bool, repeats: int | None) -> list[dict[str, Any]]:
    """The executor cases, smaller and fewer runs with ``quick``."""
    r = repeats
    return [
        {
            "kind": "exec_thread",
            "size": 1_000 if quick else 5_000,
            "repeats": r or (5 if quick else 9),
        },
        {
            "kind": "exec_process",
            "sizes": [20, 520] if quick else [20, 2020],
            "repeats": r or (3 if quick else 9),
        },
        {"kind": "exec_dask", "size": 50 if quick else 300, "repeats": r or (3 if quick else 9)},
        {"kind": "exec_deadline", "timeout": 0.5, "repeats": r or (3 if quick else 7)},
        {
            "kind": "exec_throughput",
            "size": 10_000,
            "parallel": 32,
            "repeats": r or (2 if quick else 5),
        },
    ]


def describe(outcome: dict[str, Any]) -> str:
    kind = outcome["kind"]
    if kind == "exec_thread":
        s = outcome["sides"]
        return (
            f"thread chain {outcome['size']}: lib {s['library thread']['us_per_stage']:.1f} "
            f"us/stage  base {s['base thread']['us_per_stage']:.1f}  ratio "
            f"{outcome['ratio']:.2f} (cpu {outcome['cpu_ratio']:.2f})  hop ratio "
            f"{outcome['hop_ratio']:.2f}"
        )
    if kind == "exec_process":
        return (
            f"process chain: lib {outcome['library_us_per_stage']:.0f} us/stage  base "
            f"{outcome['baseline_us_per_stage']:.0f}  ratio {outcome['ratio']:.2f} (cpu slope "
            f"{outcome['cpu_ratio']:.2f})  lib outside the stages "
            f"{outcome['library_outside_ms']:.0f} ms"
        )
    if kind == "exec_dask":
        s = outcome["sides"]
        return (
            f"dask chain {outcome['size']}: lib {s['library']['us_per_stage']:.0f} us/stage  "
            f"base {s['base']['us_per_stage']:.0f}  ratio {outcome['ratio']:.2f}"
        )
    if kind == "exec_deadline":
        return (
            f"process deadline {outcome['timeout_s']:g}s: ends {outcome['median_ms']:.0f} ms "
            f"after it (max {outcome['max_ms']:.0f})  anyio alone "
            f"{outcome['baseline_median_ms']:.0f} ms"
        )
    s = outcome["sides"]
    return (
        f"throughput {outcome['size']} x 1 ms, par {outcome['parallel']}: lib "
        f"{s['library']['median_s'] * 1e3:.0f} ms  ThreadPoolExecutor "
        f"{s['ThreadPoolExecutor']['median_s'] * 1e3:.0f} ms  ratio {outcome['ratio']:.2f} "
        f"(cpu {outcome['cpu_ratio']:.2f})"
    )


#: Issue 11's limits.
RATIO_LIMIT = 1.3
DEADLINE_LIMIT_MS = 100.0


def render(outcomes: list[dict[str, Any]]) -> list[str]:
    """The executor tables."""
    from .report import table

    lines: list[str] = []
    rows = []
    for o in outcomes:
        if o["kind"] == "exec_thread":
            s = o["sides"]
            rows.append(
                [
                    o["backend"],
                    "thread",
                    f"chain {o['size']:,}",
                    f"{s['library thread']['us_per_stage']:.1f}",
                    f"{s['base thread']['us_per_stage']:.1f}",
                    f"{o['ratio']:.2f}",
                    f"{o['cpu_ratio']:.2f}",
                    f"{o['hop_us']['library']:.1f} / {o['hop_us']['baseline']:.1f}",
                    f"{o['hop_ratio']:.2f} (cpu {o['hop_cpu_ratio']:.2f})",
                ]
            )
        elif o["kind"] == "exec_process":
            rows.append(
                [
                    o["backend"],
                    "process",
                    f"chain {o['sizes'][0]}..{o['sizes'][1]}",
                    f"{o['library_us_per_stage']:.0f}",
                    f"{o['baseline_us_per_stage']:.0f}",
                    f"{o['ratio']:.2f}",
                    f"{o['cpu_ratio']:.2f}",
                    f"outside {o['library_outside_ms']:.0f} / {o['baseline_outside_ms']:.0f} ms",
                    "-",
                ]
            )
        elif o["kind"] == "exec_dask":
            s = o["sides"]
            rows.append(
                [
                    o["backend"],
                    "dask",
                    f"chain {o['size']:,}",
                    f"{s['library']['us_per_stage']:.0f}",
                    f"{s['base']['us_per_stage']:.0f}",
                    f"{o['ratio']:.2f}",
                    f"{o['cpu_ratio']:.2f}",
                    "-",
                    "-",
                ]
            )
    if rows:
        lines += [
            "Executors: us per stage, library vs the bare anyio call (thread: to_thread.run_sync;",
            "process: to_process.run_sync, wall from the first stage's end to the last's, cpu the",
            "slope between two lengths, worker processes counted, 'outside' = start-up and end of",
            "a run, lib / bare; dask: client.submit + await, same in-process LocalCluster);",
            "hop = thread stage minus the same stage on the loop",
            *table(
                [
                    "backend",
                    "executor",
                    "graph",
                    "lib us/st",
                    "bare us/st",
                    "ratio",
                    "cpu ratio",
                    "hop us lib / bare",
                    "hop ratio",
                ],
                rows,
                right={3, 4, 5, 6},
            ),
        ]
    rows = [
        [
            o["backend"],
            f"{o['timeout_s']:g} s",
            f"{o['median_ms']:.0f}",
            f"{o['max_ms']:.0f}",
            f"{o['event_median_ms']:.0f}",
            f"{o['baseline_median_ms']:.0f}",
            f"{o['execute_median_ms']:.0f}",
            str(o["repeats"]),
        ]
        for o in outcomes
        if o["kind"] == "exec_deadline"
    ]
    if rows:
        lines += [
            "",
            "Process stage past its deadline: ms from the deadline (STAGE_STARTED + timeout) to",
            "STAGE_FINISHED, seen by a listener; 'events' = by the events' own clock; 'anyio' =",
            "move_on_after around a cancellable to_process.run_sync; 'execute' = whole run",
            *table(
                [
                    "backend",
                    "timeout",
                    "median ms",
                    "max ms",
                    "events ms",
                    "anyio ms",
                    "execute ms",
                    "runs",
                ],
                rows,
                right={2, 3, 4, 5, 6, 7},
            ),
        ]
    rows = []
    for o in outcomes:
        if o["kind"] != "exec_throughput":
            continue
        for name, side in o["sides"].items():
            rows.append(
                [
                    o["backend"],
                    name,
                    f"{side['median_s'] * 1e3:.0f}",
                    f"{side['cpu_median_s'] * 1e3:.0f}",
                    f"{o['stages_per_s'][name]:,.0f}",
                    f"{o['sides']['library']['median_s'] / side['median_s']:.2f}",
                    f"{o['sides']['library']['cpu_median_s'] / side['cpu_median_s']:.2f}",
                ]
            )
    if rows:
        first = next(o for o in outcomes if o["kind"] == "exec_throughput")
        lines += [
            "",
            f"Blocking def stages: {first['size']:,} x time.sleep(0.001), max_parallel "
            f"{first['parallel']} (ideal {first['ideal_s'] * 1e3:.0f} ms)",
            *table(
                ["backend", "way", "ms", "cpu ms", "stages/s", "lib/way", "cpu lib/way"],
                rows,
                right={2, 3, 4, 5, 6},
            ),
        ]
    return lines


def targets(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 11's limits, for every case run."""
    from .report import target

    out = []
    for o in outcomes:
        kind, where = o["kind"], o["backend"]
        if kind == "exec_thread":
            out.append(
                target(
                    "thread stage / bare to_thread (cpu)", where, o["cpu_ratio"], RATIO_LIMIT, "x"
                )
            )
        elif kind == "exec_process":
            out.append(
                target(
                    "process stage / bare to_process (per stage)",
                    where,
                    o["ratio"],
                    RATIO_LIMIT,
                    "x",
                )
            )
        elif kind == "exec_dask":
            out.append(
                target("dask stage / bare submit+await", where, o["ratio"], RATIO_LIMIT, "x")
            )
        elif kind == "exec_deadline":
            out.append(
                target(
                    "process stage ends after its deadline (median)",
                    where,
                    o["median_ms"],
                    DEADLINE_LIMIT_MS,
                    "ms",
                )
            )
    return out
