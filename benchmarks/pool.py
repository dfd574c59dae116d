"""The stretch case of issue 10: a wide fan-out under a bounded ``max_parallel``.

20 000 independent stages, ``max_parallel=200``, each ``await
anyio.sleep(0.001)``. Four ways to run them, in the same ``anyio.run``:

* ``library``: ``Pipeline.execute()`` (one task per attempt, each started in
  its own copy of the caller's context);
* ``taskgroup``: a plain task group that starts all 20 000 tasks at once and
  an ``anyio.CapacityLimiter(200)`` that each task waits on;
* ``pool``: a hand-written pool of 200 worker tasks pulling stages from one
  iterator: no task per stage, but the stages share their worker's context
  (a ``ContextVar`` one stage sets is seen by the next stage that worker runs);
* ``pool+ctx``: the same pool, but each stage's coroutine is driven inside
  its own copy of the context captured at the start (``Context.run`` around
  every step), so stages are as isolated from each other's context
  variables as the library's. This shows how much of the pool's lead a
  cheaper attempt could keep without giving up per-stage isolation
  (measured only; the library does not do this).

In the ``default`` variant the three hand-written sides wrap each stage in a
300 s ``move_on_after`` as the library's default stage timeout does; in
``no-timeout`` none has a cancel scope per stage. Only public API is used.
"""

from __future__ import annotations

import contextvars
import gc
import statistics
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import anyio
import anyio.lowlevel

from proxima.data.pipeline import Pipeline, PipelineContext, PipelineStatus, Stage

from .measure import VARIANTS, library_config

__all__ = ["KINDS", "cases", "describe", "in_context", "render", "targets"]

_perf = time.perf_counter
_cpu = time.process_time

SIDES = ("library", "taskgroup", "pool", "pool+ctx")


@types.coroutine
def in_context(
    context: contextvars.Context, coro: Coroutine[Any, Any, Any]
) -> Generator[Any, Any, Any]:
    """Await ``coro`` with every step of it run inside ``context``.

    Whatever the coroutine yields to the event loop (an asyncio future, a
    trio trap) is passed through unchanged, and what the loop sends or
    throws back goes into the coroutine inside ``context``: the coroutine
    sees its own context variables, the task running it is unchanged."""
    send: Any = coro.send
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            yielded = context.run(send, value) if error is None else context.run(coro.throw, error)
        except StopIteration as stop:
            return stop.value
        try:
            value, error = (yield yielded), None
        except BaseException as exc:  # cancellation included: the coroutine handles it
            value, error = None, exc


def _stages(size: int, sleep: float) -> list[Stage]:
    async def nap(ctx: PipelineContext, data: Any) -> None:
        await anyio.sleep(sleep)

    return [
        Stage(stage_id=f"s{i}", name=f"s{i}", handler=nap, dependencies=()) for i in range(size)
    ]


def _sides(
    size: int, parallel: int, sleep: float, variant: str
) -> dict[str, Callable[[], Awaitable[None]]]:
    stages = _stages(size, sleep)
    timeout = VARIANTS[variant]

    async def library() -> None:
        pipeline = Pipeline(library_config(parallel, variant=variant)).add_stages(stages)
        result = await pipeline.execute()
        if result.status is not PipelineStatus.COMPLETED or len(result.stage_results) != size:
            raise AssertionError(f"library run did not complete: {result.status}")

    async def stage_body() -> None:
        if timeout is None:
            await anyio.sleep(sleep)
        else:
            with anyio.move_on_after(timeout):
                await anyio.sleep(sleep)

    async def taskgroup() -> None:
        limiter = anyio.CapacityLimiter(parallel)
        done = 0

        async def one() -> None:
            nonlocal done
            async with limiter:
                await stage_body()
                done += 1

        async with anyio.create_task_group() as tg:
            for _ in range(size):
                tg.start_soon(one)
        if done != size:
            raise AssertionError("taskgroup: not every stage ran")

    def pool_of(isolated: bool) -> Callable[[], Awaitable[None]]:
        async def pool() -> None:
            todo = iter(range(size))
            captured = contextvars.copy_context()
            done = 0

            async def worker() -> None:
                nonlocal done
                for _ in todo:
                    if isolated:
                        await in_context(captured.copy(), stage_body())
                    else:
                        await stage_body()
                    done += 1

            async with anyio.create_task_group() as tg:
                for _ in range(parallel):
                    tg.start_soon(worker)
            if done != size:
                raise AssertionError("pool: not every stage ran")

        return pool

    return {
        "library": library,
        "taskgroup": taskgroup,
        "pool": pool_of(False),
        "pool+ctx": pool_of(True),
    }


async def _check_isolation() -> None:
    """``in_context`` really isolates: a variable a stage sets is not seen
    by the next stage of the same worker, and a sleep and a cancellation
    pass through it."""
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=0)
    seen: list[int] = []
    captured = contextvars.copy_context()

    async def stage(i: int) -> None:
        seen.append(var.get())
        var.set(i)
        await anyio.lowlevel.checkpoint()

    for i in (1, 2, 3):
        await in_context(captured.copy(), stage(i))
    with anyio.move_on_after(0.01) as scope:
        await in_context(captured.copy(), anyio.sleep(10))
    if seen != [0, 0, 0] or not scope.cancelled_caught or var.get() != 0:
        raise AssertionError(f"in_context does not isolate: {seen}, {scope.cancelled_caught}")


async def pool_case(case: dict[str, Any]) -> dict[str, Any]:
    size: int = case["size"]
    parallel: int = case["parallel"]
    sleep: float = case["sleep"]
    repeats: int = case["repeats"]
    variant: str = case.get("variant", "no-timeout")
    await _check_isolation()
    for run in _sides(min(size, 2000), parallel, sleep, variant).values():  # warm-up
        await run()
    sides = _sides(size, parallel, sleep, variant)
    wall: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(repeats):
        order = list(sides.items())
        order = order[i % len(order) :] + order[: i % len(order)]  # rotate who goes first
        for name, run in order:
            gc.collect()
            c0, t0 = _cpu(), _perf()
            await run()
            wall[name].append(_perf() - t0)
            cpu[name].append(_cpu() - c0)
    medians = {name: statistics.median(values) for name, values in wall.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    return {
        "kind": "pool",
        "size": size,
        "parallel": parallel,
        "sleep": sleep,
        "variant": variant,
        "repeats": repeats,
        "ideal_s": size * sleep / parallel,
        "sides": {
            name: {
                "times_s": wall[name],
                "cpu_times_s": cpu[name],
                "median_s": medians[name],
                "cpu_median_s": cpu_medians[name],
                "ratio": medians["library"] / medians[name],
                "cpu_ratio": cpu_medians["library"] / cpu_medians[name],
            }
            for name in sides
        },
    }


KINDS = {"pool": pool_case}


def describe(outcome: dict[str, Any]) -> str:
    sides = outcome["sides"]
    parts = "  ".join(
        f"{name} {sides[name]['median_s'] * 1e3:.0f} ms (lib/x {sides[name]['ratio']:.2f}, "
        f"cpu {sides[name]['cpu_ratio']:.2f})"
        for name in SIDES[1:]
    )
    return (
        f"pool {outcome['size']} par={outcome['parallel']} {outcome['variant']}: "
        f"library {sides['library']['median_s'] * 1e3:.0f} ms  {parts}"
    )


def cases(
    *, quick: bool, repeats: int | None, variants: list[str] | None = None
) -> list[dict[str, Any]]:
    """The stretch case: 20 000 stages, 200 at once, 1 ms each. ``--quick``
    runs only the no-timeout variant (the one the issue states), 3 times."""
    wanted = ["no-timeout"] if quick else list(variants or VARIANTS)
    return [
        {
            "kind": "pool",
            "size": 20_000,
            "parallel": 200,
            "sleep": 0.001,
            "variant": variant,
            "repeats": repeats or (3 if quick else 7),
        }
        for variant in wanted
        if variant in VARIANTS
    ]


def render(outcomes: list[dict[str, Any]]) -> list[str]:
    """The stretch table: each way's time, and the library's time over it."""
    from .report import table

    rows = []
    for o in outcomes:
        if o["kind"] != "pool":
            continue
        for name in SIDES:
            side = o["sides"][name]
            rows.append(
                [
                    o["backend"],
                    o["variant"],
                    name,
                    f"{side['median_s'] * 1e3:.0f}",
                    f"{side['cpu_median_s'] * 1e3:.0f}",
                    f"{side['ratio']:.2f}",
                    f"{side['cpu_ratio']:.2f}",
                    str(o["repeats"]),
                ]
            )
    if not rows:
        return []
    first = next(o for o in outcomes if o["kind"] == "pool")
    return [
        f"Bounded fan-out (stretch): {first['size']:,} stages, max_parallel {first['parallel']}, "
        f"each anyio.sleep({first['sleep']:g}); ideal {first['ideal_s'] * 1e3:.0f} ms",
        *table(
            ["backend", "timeout", "way", "ms", "cpu ms", "lib/way", "cpu lib/way", "runs"],
            rows,
            right={3, 4, 5, 6, 7},
        ),
    ]


def targets(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """None: the stretch case is measured and reported only."""
    return []
