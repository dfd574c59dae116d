"""The facade: :class:`Pipeline`, :class:`PipelineBuilder`, :func:`run_pipeline`.

It validates, snapshots the stages into a plan and hands it to one
:class:`~._scheduler.Run` per ``execute()``. It never touches a task group;
it owns only what a caller sees between runs (``status``, ``result``).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal

import anyio
import attrs

from . import _render
from ._config import PipelineConfig, RetryConfig
from ._context import PipelineContext
from ._enums import CancellationReason, PipelineStatus, RetryStrategy, StageStatus
from ._errors import PipelineAlreadyRunningError, PipelineValidationError
from ._events import EventStream, Listener
from ._graph import Plan, plan
from ._results import PipelineResult
from ._scheduler import Run
from ._stage import CleanupHandler, Handler, Stage

__all__ = ["Pipeline", "PipelineBuilder", "run_pipeline"]


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
        self.config = config if config is not None else PipelineConfig()
        self.pipeline_id = pipeline_id or uuid.uuid4().hex[:12]
        self._stages: dict[str, Stage] = {}
        self._plan: Plan | None = None
        self._run: Run | None = None
        self._context: PipelineContext | None = None
        self._result: PipelineResult | None = None
        self._listeners: list[Listener] = []

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
        self, initial_input: Any = None, *, raise_on_failure: bool = False
    ) -> PipelineResult:
        """Run every stage and return the :class:`PipelineResult`.

        Failures become the result, not exceptions, unless
        ``raise_on_failure=True`` (then see :meth:`PipelineResult.raise_for_status`).
        If the calling task is cancelled, running stages are cancelled at
        once, cleanup runs, ``self.result`` records CANCELLED/EXTERNAL and the
        cancellation propagates. Works on asyncio (plain tasks,
        ``asyncio.wait_for``) and trio alike.
        """
        if self._run is not None:
            raise PipelineAlreadyRunningError(f"pipeline {self.name!r} is already running")
        run_plan = self._get_plan()
        ctx = PipelineContext(self.pipeline_id, self.config)
        run = Run(run_plan, self.config, ctx, initial_input, self._listeners)
        self._run, self._context = run, ctx
        try:
            result = await run.execute()
        finally:
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
    ) -> PipelineResult:
        """Run from synchronous code in a new event loop (``anyio.run``).

        Raises ``RuntimeError`` where an event loop already runs in this thread
        (async code, Jupyter): ``await execute()`` there. ``backend_options``
        go to ``anyio.run``, e.g. ``{"use_uvloop": True}``.
        """
        call = functools.partial(self.execute, initial_input, raise_on_failure=raise_on_failure)
        return anyio.run(call, backend=backend, backend_options=backend_options)

    # -- control --------------------------------------------------------------------
    def cancel(self, reason: CancellationReason = CancellationReason.USER_REQUESTED) -> None:
        """Request a stop of the current run (first reason wins); safe from any
        thread. Does nothing while no run is going on."""
        if self._run is not None and self._context is not None:
            self._context.cancel(reason)

    def pause(self) -> None:
        """Hold back new attempts until :meth:`resume`. No-op when idle."""
        if self._run is not None and self._context is not None:
            self._context.pause()

    def resume(self) -> None:
        """Let held-back attempts start at once. No-op when idle."""
        if self._run is not None and self._context is not None:
            self._context.resume()

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


class _Unset(enum.Enum):
    UNSET = enum.auto()


UNSET = _Unset.UNSET


def _given(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not UNSET}


class PipelineBuilder:
    """Fluent construction of a :class:`Pipeline`.

    Each ``with_*`` method changes only the fields it is given and validates
    them at once; :meth:`build` checks the graph and returns the pipeline.
    """

    def __init__(self, name: str = "pipeline") -> None:
        self._config = PipelineConfig(name=name)
        self._stages: dict[str, Stage] = {}

    @property
    def config(self) -> PipelineConfig:
        """The configuration built so far."""
        return self._config

    def with_retry(
        self,
        max_retries: int | _Unset = UNSET,
        strategy: RetryStrategy | _Unset = UNSET,
        initial_delay: float | _Unset = UNSET,
        max_delay: float | _Unset = UNSET,
        backoff_factor: float | _Unset = UNSET,
        retry_on_exceptions: Iterable[type[BaseException]] | _Unset | None = UNSET,
        retry_on_timeout: bool | _Unset = UNSET,
    ) -> PipelineBuilder:
        """Set the default retry policy of every stage."""
        retry = attrs.evolve(
            self._config.retry,
            **_given(
                max_retries=max_retries,
                strategy=strategy,
                initial_delay_seconds=initial_delay,
                max_delay_seconds=max_delay,
                backoff_factor=backoff_factor,
                retry_on_exceptions=retry_on_exceptions,
                retry_on_timeout=retry_on_timeout,
            ),
        )
        self._config = attrs.evolve(self._config, retry=retry)
        return self

    def with_timeout(
        self,
        stage_timeout: float | _Unset | None = UNSET,
        pipeline_timeout: float | _Unset | None = UNSET,
        cleanup_timeout: float | _Unset | None = UNSET,
        grace_period: float | _Unset | None = UNSET,
    ) -> PipelineBuilder:
        """Set time limits; ``None`` means no limit."""
        timeout = attrs.evolve(
            self._config.timeout,
            **_given(
                stage_timeout_seconds=stage_timeout,
                pipeline_timeout_seconds=pipeline_timeout,
                cleanup_timeout_seconds=cleanup_timeout,
                grace_period_seconds=grace_period,
            ),
        )
        self._config = attrs.evolve(self._config, timeout=timeout)
        return self

    def with_parallel(
        self, enabled: bool | _Unset = UNSET, max_parallel: int | _Unset = UNSET
    ) -> PipelineBuilder:
        """Run independent stages concurrently, at most ``max_parallel`` at once.

        Only the arguments given change; ``with_parallel()`` alone turns
        parallel execution on.
        """
        if enabled is UNSET and max_parallel is UNSET:
            enabled = True
        self._config = attrs.evolve(
            self._config, **_given(parallel_stages=enabled, max_parallel=max_parallel)
        )
        return self

    def continue_on_error(self, enabled: bool = True) -> PipelineBuilder:
        """Keep-going mode: a failure only skips the failed stage's dependents."""
        self._config = attrs.evolve(self._config, continue_on_error=enabled)
        return self

    def collect_metrics(self, enabled: bool = True) -> PipelineBuilder:
        """Record timings and attempts in each ``StageResult.metrics`` (on by default)."""
        self._config = attrs.evolve(self._config, collect_metrics=enabled)
        return self

    def cleanup_on_cancel(self, enabled: bool = True) -> PipelineBuilder:
        """After a stop, run the cleanup handlers of stages that started (on by default)."""
        self._config = attrs.evolve(self._config, cleanup_on_cancel=enabled)
        return self

    def add_stage(
        self,
        stage_id: str | Stage,
        name: str | None = None,
        handler: Handler | None = None,
        dependencies: Iterable[str] | None = None,
        *,
        timeout_seconds: float | None = None,
        retry_config: RetryConfig | None = None,
        critical: bool = True,
        cleanup_handler: CleanupHandler | None = None,
        description: str = "",
        tags: Iterable[str] | None = None,
    ) -> PipelineBuilder:
        """Add a stage, given either as a :class:`Stage` or as its fields."""
        if isinstance(stage_id, Stage):
            new = stage_id
        else:
            new = Stage(
                stage_id=stage_id,
                name=name if name is not None else stage_id,
                handler=handler,  # type: ignore[arg-type]  # validated by Stage
                dependencies=dependencies,  # converted to a tuple
                timeout_seconds=timeout_seconds,
                retry_config=retry_config,
                critical=critical,
                cleanup_handler=cleanup_handler,
                description=description,
                tags=tags,  # converted to a tuple
            )
        if new.stage_id in self._stages:
            raise PipelineValidationError(
                f"duplicate stage id {new.stage_id!r}", stage_id=new.stage_id
            )
        self._stages[new.stage_id] = new
        return self

    def build(self) -> Pipeline:
        """The pipeline, its graph already validated."""
        pipeline = Pipeline(self._config)
        pipeline.add_stages(self._stages.values())
        pipeline.validate()
        return pipeline


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
