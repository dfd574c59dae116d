"""The lean baseline: the least a correct anyio DAG runner must do.

* an in-degree count per stage and a FIFO ready queue (stages become ready
  when their last dependency completes; each edge is touched once);
* one task per stage, spawned when the stage is ready *and* a slot is free;
* an :class:`anyio.CapacityLimiter` for ``max_parallel`` (slots are taken
  with ``acquire_on_behalf_of_nowait`` so no task is spawned just to wait);
* a cancel scope per stage (``move_on_after``) when a stage timeout is set;
* each stage's input is the pipeline input (no dependency), its single
  dependency's result, or a dict of dependency id -> result (the same
  inputs the library passes);
* results in a dict, stage id -> value.

Correct but spartan: a handler exception propagates out of :meth:`run`
(the task group cancels the rest), a timed-out stage raises
:class:`TimeoutError`, and unknown dependencies or cycles are reported
(``KeyError`` / ``RuntimeError``). :meth:`cancel` stops the run, optionally
after a grace period during which running stages may finish on their own.
No retries, no metrics, no per-stage result records: that is exactly the
gap the benchmark measures.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from .shapes import StageSpec

__all__ = ["BaselineRunner", "Handler", "self_check"]

#: ``handler(ctx, input)``: the baseline has no context object and passes the
#: stage id as ``ctx``.
Handler = Callable[[Any, Any], Any]


class BaselineRunner:
    """Runs ``specs`` once; create one per run."""

    def __init__(
        self,
        specs: Sequence[StageSpec],
        handler: Handler,
        *,
        max_parallel: int,
        stage_timeout: float | None = 300.0,
        grace_period: float = 0.0,
    ) -> None:
        self._specs = specs
        self._handler = handler
        self._max_parallel = max_parallel
        self._timeout = stage_timeout
        self._grace = grace_period
        self._stopping = False
        self._running = 0
        self._tg: anyio.abc.TaskGroup | None = None
        self._idle: anyio.Event | None = None
        self.results: dict[str, Any] = {}

    async def run(self, initial_input: Any = None) -> dict[str, Any]:
        specs = self._specs
        n = len(specs)
        ids = [spec.stage_id for spec in specs]
        index = {sid: i for i, sid in enumerate(ids)}
        deps = [tuple(index[d] for d in spec.dependencies) for spec in specs]
        waiting = [len(d) for d in deps]
        dependents: list[list[int]] = [[] for _ in range(n)]
        for i, ds in enumerate(deps):
            for d in ds:
                dependents[d].append(i)
        ready = deque(i for i in range(n) if not waiting[i])
        results = self.results
        limiter = anyio.CapacityLimiter(self._max_parallel)
        handler = self._handler
        timeout = self._timeout

        def dispatch() -> None:
            if self._stopping:
                return
            while ready:
                position = ready[0]
                try:
                    limiter.acquire_on_behalf_of_nowait(position)
                except anyio.WouldBlock:
                    return
                ready.popleft()
                self._running += 1
                tg.start_soon(stage_task, position)

        async def stage_task(position: int) -> None:
            sid = ids[position]
            ds = deps[position]
            if not ds:
                data = initial_input
            elif len(ds) == 1:
                data = results[ids[ds[0]]]
            else:
                data = {ids[d]: results[ids[d]] for d in ds}
            try:
                if timeout is None:
                    value = handler(sid, data)
                    if hasattr(value, "__await__"):
                        value = await value
                else:
                    with anyio.move_on_after(timeout) as scope:
                        value = handler(sid, data)
                        if hasattr(value, "__await__"):
                            value = await value
                    if scope.cancelled_caught:
                        raise TimeoutError(f"stage {sid!r} timed out after {timeout}s")
            finally:
                limiter.release_on_behalf_of(position)
                self._running -= 1
                if self._stopping and not self._running and self._idle is not None:
                    self._idle.set()
            results[sid] = value
            for d in dependents[position]:
                waiting[d] -= 1
                if not waiting[d]:
                    ready.append(d)
            dispatch()

        async with anyio.create_task_group() as tg:
            self._tg = tg
            dispatch()
        self._tg = None
        if len(results) < n and not self._stopping:
            raise RuntimeError("dependency cycle: some stages never became ready")
        return results

    def cancel(self) -> None:
        """Stop: no new stage starts; running ones get the grace period, then
        are cancelled. Call from the event loop's thread."""
        if self._stopping or self._tg is None:
            return
        self._stopping = True
        if self._grace <= 0 or not self._running:
            self._tg.cancel_scope.cancel()
            return
        self._idle = anyio.Event()
        self._tg.start_soon(self._grace_then_cancel)

    async def _grace_then_cancel(self) -> None:
        assert self._idle is not None
        assert self._tg is not None
        with anyio.move_on_after(self._grace):
            await self._idle.wait()
        if self._running:
            self._tg.cancel_scope.cancel()


async def self_check() -> None:
    """Check that the baseline is a correct runner; every benchmark worker
    runs this first, on its backend.

    On small graphs whose stages hit a checkpoint: no stage starts
    before all its dependencies finished, at most ``max_parallel`` stages
    run at once, each stage gets the input the library would pass, every
    stage runs exactly once, and a stage timeout cancels the stage.
    """
    from .shapes import build_shape

    for shape, size, limit in (("layers", 200, 3), ("chain", 20, 8), ("fanin", 20, 8)):
        await _check_graph(build_shape(shape, size), limit)

    async def slow(sid: str, data: Any) -> None:
        await anyio.sleep(10)

    try:
        await BaselineRunner(build_shape("wide", 1), slow, max_parallel=1, stage_timeout=0.01).run()
    except Exception as exc:  # an ExceptionGroup holding the TimeoutError
        if "TimeoutError" not in repr(exc):
            raise
    else:
        raise AssertionError("baseline: a timed-out stage did not fail the run")


async def _check_graph(specs: Sequence[StageSpec], limit: int) -> None:
    deps = {spec.stage_id: spec.dependencies for spec in specs}
    finished: set[str] = set()
    running = 0
    peak = 0

    async def checked(sid: str, data: Any) -> str:
        nonlocal running, peak
        want = deps[sid]
        if not want:
            expected: Any = "input"
        elif len(want) == 1:
            expected = want[0]  # each stage returns its own id
        else:
            expected = {d: d for d in want}
        if data != expected or not finished.issuperset(want) or sid in finished:
            raise AssertionError(f"baseline: stage {sid} got {data!r} too early or twice")
        running += 1
        peak = max(peak, running)
        await anyio.lowlevel.checkpoint()
        running -= 1
        finished.add(sid)
        return sid

    results = await BaselineRunner(specs, checked, max_parallel=limit).run("input")
    if results != {sid: sid for sid in deps} or peak > limit:
        raise AssertionError(f"baseline: wrong results or concurrency {peak} (limit {limit})")
