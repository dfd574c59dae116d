"""The facade: :class:`Pipeline`, :class:`PipelineBuilder`, :func:`run_pipeline`.

It validates, snapshots the stages into a plan and hands it to one
:class:`~._scheduler.Run` per ``execute()``. It never touches a task group;
it owns only what a caller sees between runs (``status``, ``result``).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal

import anyio

from .._engine.context import PipelineContext
from .._engine.run import Run
from .._graph import Plan, plan
from .._model.config import PipelineConfig
from .._model.enums import CancellationReason, PipelineStatus, StageStatus
from .._model.errors import PipelineAlreadyRunningError, PipelineValidationError
from .._model.events import Listener
from .._model.results import PipelineResult
from .._model.stage import Stage
from ..observe import render as _render
from ..observe.stream import EventStream
from ..store.base import Store

__all__ = ["Pipeline", "run_pipeline"]


class Pipeline:
    """A set of stages with dependencies, run by :meth:`execute`.

    Stages may be added in any order; the graph is checked by
    :meth:`validate` and again at the start of every run, before any stage
    starts. One run at a time; each run starts from a fresh
    :class:`PipelineContext`.
    """

    def __init__(
        self, config: PipelineConfig | None = None, *, pipeline_id: str | None = None
    ) -> None:
        if config is not None and not isinstance(config, PipelineConfig):
            raise TypeError(f"config must be a PipelineConfig, got {config!r}")
        self.config: PipelineConfig = config if config is not None else PipelineConfig()
        self.pipeline_id: str = pipeline_id or uuid.uuid4().hex[:12]
        self._stages: dict[str, Stage] = {}
        self._plan: Plan | None = None
        self._run: Run | None = None
        self._context: PipelineContext | None = None
        self._result: PipelineResult | None = None
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r} stages={len(self._stages)} status={self.status.name}>"

    # -- building -------------------------------------------------------------
    @property
    def name(self) -> str:
        """The pipeline's name (``config.name``), used in logs, events and results."""
        return self.config.name

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The stages in the order they were added."""
        return tuple(self._stages.values())

    def add_stage(self, stage: Stage) -> Pipeline:
        """Add one stage. A duplicate id raises :class:`PipelineValidationError`
        and adds nothing. Dependencies may name stages added later."""
        return self.add_stages([stage])

    def add_stages(self, stages: Iterable[Stage]) -> Pipeline:
        """Add several stages, all or nothing."""
        new = list(stages)
        seen = set(self._stages)
        for st in new:
            if not isinstance(st, Stage):
                raise TypeError(f"expected a Stage, got {st!r}")
            if st.stage_id in seen:
                raise PipelineValidationError(
                    f"duplicate stage id {st.stage_id!r} in pipeline {self.name!r}",
                    stage_id=st.stage_id,
                )
            seen.add(st.stage_id)
        for st in new:
            self._stages[st.stage_id] = st
        self._plan = None
        return self

    def validate(self) -> None:
        """Raise :class:`PipelineValidationError` for an unknown dependency, a
        self-dependency or a cycle (with its path); otherwise do nothing."""
        self._get_plan()

    def to_mermaid(self) -> str:
        """The stage graph as a Mermaid flowchart (``flowchart LR``)."""
        return _render.to_mermaid(
            self._graph(), {s.stage_id: s.name for s in self._stages.values()}
        )

    def to_dot(self) -> str:
        """The stage graph as Graphviz DOT text."""
        names = {s.stage_id: s.name for s in self._stages.values()}
        return _render.to_dot(self._graph(), names, self.name)

    def _graph(self) -> dict[str, tuple[str, ...]]:
        self.validate()
        return {s.stage_id: s.dependencies for s in self._stages.values()}

    def _get_plan(self) -> Plan:
        if self._plan is None:
            self._plan = plan(list(self._stages.values()))
        return self._plan

    # -- running ----------------------------------------------------------------
    async def execute(
        self,
        initial_input: Any = None,
        *,
        raise_on_failure: bool = False,
        store: Store | None = None,
        resume: str | None = None,
    ) -> PipelineResult:
        """Run every stage and return the :class:`PipelineResult`.

        Failures become the result, not exceptions, unless
        ``raise_on_failure=True`` (then see :meth:`PipelineResult.raise_for_status`).
        If the calling task is cancelled, running stages are cancelled at
        once, cleanup runs, ``self.result`` records CANCELLED/EXTERNAL and the
        cancellation propagates. Works on asyncio (plain tasks,
        ``asyncio.wait_for``) and trio alike.

        With ``store=`` (e.g. ``SQLiteStore("runs.db")``) the run and each
        stage's terminal result are recorded (``result.run_id``), a completed
        value before any dependent starts. ``resume=`` (a run id, or
        ``"latest"``) restores the stages that completed in that run, where
        their code and everything upstream are unchanged, and runs the rest.
        """
        _check_durable(store, resume)
        run_plan = self._get_plan()
        ctx = PipelineContext(self.pipeline_id, self.config)
        run = Run(
            run_plan, self.config, ctx, initial_input, self._listeners, store=store, resume=resume
        )
        with self._lock:  # R8.6 across threads: check and set in one step
            if self._run is not None:
                raise PipelineAlreadyRunningError(f"pipeline {self.name!r} is already running")
            self._run, self._context = run, ctx
        try:
            result = await run.execute()
        finally:
            with self._lock:
                self._run = None
            if run.result is not None:
                self._result = run.result
        if raise_on_failure:
            result.raise_for_status()
        return result

    def run_sync(
        self,
        initial_input: Any = None,
        *,
        backend: Literal["asyncio", "trio"] = "asyncio",
        backend_options: dict[str, Any] | None = None,
        raise_on_failure: bool = False,
        store: Store | None = None,
        resume: str | None = None,
    ) -> PipelineResult:
        """Run from synchronous code in a new event loop (``anyio.run``).

        Raises ``RuntimeError`` where an event loop already runs in this thread
        (async code, Jupyter): ``await execute()`` there. ``backend_options``
        go to ``anyio.run``, e.g. ``{"use_uvloop": True}``.
        """
        _check_durable(store, resume)
        call = functools.partial(
            self.execute,
            initial_input,
            raise_on_failure=raise_on_failure,
            store=store,
            resume=resume,
        )
        try:
            return anyio.run(call, backend=backend, backend_options=backend_options)
        except RuntimeError as exc:
            if "Already running" not in str(exc):
                raise
            raise RuntimeError(
                f"pipeline {self.name!r}: run_sync() cannot run inside a running event loop "
                f"({exc}); use `await pipeline.execute()` there instead"
            ) from exc

    # -- control --------------------------------------------------------------------
    def cancel(self, reason: CancellationReason = CancellationReason.USER_REQUESTED) -> None:
        """Request a stop of the current run (first reason wins); safe from any
        thread, returns at once. Does nothing while no run is going on (the
        last run's context is left as it was)."""
        if not isinstance(reason, CancellationReason):
            raise TypeError(f"reason must be a CancellationReason, got {reason!r}")
        ctx = self._live_context()
        if ctx is not None:
            ctx.cancel(reason)

    def pause(self) -> None:
        """Hold back new attempts until :meth:`resume`. No-op when idle."""
        ctx = self._live_context()
        if ctx is not None:
            ctx.pause()

    def resume(self) -> None:
        """Let held-back attempts start at once. No-op when idle."""
        ctx = self._live_context()
        if ctx is not None:
            ctx.resume()

    def _live_context(self) -> PipelineContext | None:
        with self._lock:
            return self._context if self._run is not None else None

    # -- observing ------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every :class:`PipelineEvent` of every run.

        Listeners run synchronously on the event loop's thread, in the order
        they were added; keep them quick. One that raises is logged and
        skipped: it never breaks the run. May be called during a run.
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        self._listeners.append(listener)
        if self._run is not None:
            self._run.emitter.refresh()

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``; a listener that was never added is ignored."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)
        if self._run is not None:
            self._run.emitter.refresh()

    @contextlib.asynccontextmanager
    async def events(self, max_buffer: int = 1000) -> AsyncIterator[EventStream]:
        """Iterate over the events of the next (or current) run.

        ``async with pipeline.events() as stream: async for event in stream``
        ends after the run's ``RUN_FINISHED`` event. The buffer holds
        ``max_buffer`` events and never blocks the run: a consumer that falls
        behind loses the oldest events (counted in ``stream.dropped``), never
        the final one.
        """
        stream = EventStream(max_buffer)
        self.add_listener(stream)
        try:
            yield stream
        finally:
            self.remove_listener(stream)
            stream.close()

    # -- state --------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        """True exactly while :meth:`execute` is running."""
        return self._run is not None

    @property
    def status(self) -> PipelineStatus:
        """IDLE before the first run, RUNNING or PAUSED during one, then the
        last run's final status."""
        if self._run is not None:
            return self._run.status
        return self._result.status if self._result is not None else PipelineStatus.IDLE

    @property
    def result(self) -> PipelineResult | None:
        """The last finished run's result, or ``None`` before any run."""
        return self._result

    @property
    def context(self) -> PipelineContext | None:
        """The current (or last) run's context: its shared data survives the run."""
        return self._context

    def stage_statuses(self) -> dict[str, StageStatus]:
        """Stage id -> current status: live during a run, final after it."""
        if self._run is not None:
            return self._run.stage_statuses()
        if self._result is not None:
            finished = {sid: r.status for sid, r in self._result.stage_results.items()}
            return {sid: finished.get(sid, StageStatus.PENDING) for sid in self._stages}
        return dict.fromkeys(self._stages, StageStatus.PENDING)


def _check_durable(store: Any, resume: Any) -> None:
    """Bad ``store``/``resume`` arguments fail before anything runs (R13)."""
    if store is not None and not isinstance(store, Store):
        raise TypeError(f"store must be a Store (e.g. SQLiteStore), got {store!r}")
    if resume is not None:
        if not isinstance(resume, str) or not resume:
            raise TypeError(f"resume must be a run id or 'latest', got {resume!r}")
        if store is None:
            raise ValueError(f"resume={resume!r} needs a store= to resume from")


async def run_pipeline(
    stages: Iterable[Stage],
    initial_input: Any = None,
    config: PipelineConfig | None = None,
    *,
    raise_on_failure: bool = False,
) -> PipelineResult:
    """Build a :class:`Pipeline` from ``stages`` and execute it once."""
    pipeline = Pipeline(config).add_stages(stages)
    return await pipeline.execute(initial_input, raise_on_failure=raise_on_failure)
