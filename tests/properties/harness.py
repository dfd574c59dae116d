"""Run a generated :class:`~.strategies.Case` and record what happened.

Every handler logs its attempts (input received, whether its dependencies
were COMPLETED when it started, how it ended, whether a stop had begun when
it raised), keeps a live-handler counter (for R2.1 and for "no task left
running") and triggers the case's stop. Cleanup handlers log their order and
the number of handlers still alive when they ran.

The recorder is swapped per run (``Harness.fresh()``), so one built pipeline
can be executed again, on the same or another backend (R8.6).
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel

from proxima.data.pipeline import (
    Pipeline,
    PipelineCancelledException,
    PipelineConfig,
    PipelineContext,
    PipelineResult,
    RetryConfig,
    Stage,
    StageStatus,
    TimeoutConfig,
)

from .strategies import (
    CANCEL,
    COOP,
    EXCEPTIONS,
    FROM_OUTER,
    FROM_STAGE,
    FROM_TASK,
    FROM_THREAD,
    HANG,
    OK,
    PIPELINE_TIMEOUT,
    RAISE,
    RAISE_PCE,
    RETRY_ON_TYPES,
    SHIELD,
    Case,
    RetryCase,
    StageCase,
)

#: Fixed slack of the watchdog, for a loaded machine.
WATCHDOG_SLACK = 2.0


def watchdog_seconds(case: Case) -> float:
    """A generous upper bound for one run of ``case``: every attempt of every
    stage one after the other, each at its worst, plus retry delays, cleanups
    and the stop; times three, plus slack. Past it the run counts as hung."""
    total = (case.grace or 0.0) + (case.stop.timeout or 0.0)
    for sc in case.stages:
        rc = case.retry_of(sc)
        timeout = case.timeout_of(sc)
        for n in range(1, rc.max_attempts + 1):
            attempt = sc.attempt(n)
            total += attempt.delay + attempt.steps * 0.002 + rc.delay(n - 1) + 0.005
            if attempt.kind == HANG:
                total += timeout if timeout is not None else (case.stop.timeout or 0.0)
        total += case.cleanup_timeout or 0.01
    return WATCHDOG_SLACK + 3 * total


_clock = time.perf_counter

# How an attempt ended, as the handler saw it.
RETURNED = "returned"
RAISED = "raised"  # an Exception other than PipelineCancelledException
PCE = "pce"  # PipelineCancelledException (check_cancelled() or a deliberate stop)
CANCELLED = "cancelled"  # the backend's cancellation exception
HANG_CAP = "hang-cap"  # a hanging handler was never cancelled (only past the watchdog)


def derive(sid: str, value: Any) -> str:
    """The value a stage returns: a short digest of its id and input (R3)."""
    digest = hashlib.sha1(repr(value).encode()).hexdigest()[:10]
    return f"{sid}<{digest}>"


@dataclass
class AttemptLog:
    sid: str
    n: int
    input: Any
    start: float  # anyio.current_time() at entry
    deadline: float  # anyio.current_effective_deadline() at entry (the stage timeout)
    deps_status: dict[str, StageStatus | None]  # ctx.get_stage_result(dep).status at entry
    deps_returned: bool  # every dependency's handler had returned before this entry
    end: float | None = None  # anyio.current_time() when it ended
    exit: str | None = None
    value: Any = None
    exc: BaseException | None = None
    stop_begun_at_exit: bool = False  # ctx.is_cancelled right before returning/raising
    stop_begun_at_entry: bool = False  # a stop (or the caller's cancel) came before the call


@dataclass
class Recorder:
    """What one run's handlers and cleanups saw."""

    case: Case
    attempts: dict[str, list[AttemptLog]] = field(default_factory=dict)
    entry_order: list[tuple[str, int]] = field(default_factory=list)
    first_starts: list[str] = field(default_factory=list)
    live: int = 0
    max_live: int = 0
    finished: int = 0  # attempts that ended on their own (returned or raised)
    cleanups: list[str] = field(default_factory=list)
    cleanup_live: int = 0
    cleanup_max_live: int = 0
    handlers_live_at_cleanup: list[int] = field(default_factory=list)
    #: (source, whether a stop had begun when it was requested; None: unknown)
    cancel_requests: list[tuple[str, bool | None]] = field(default_factory=list)
    trigger: anyio.Event | None = None
    never: anyio.Event | None = None  # never set: what hanging code waits on
    returned_values: dict[str, Any] = field(default_factory=dict)
    outer_cancelled: bool = False  # the scope around execute() was cancelled
    outer: anyio.CancelScope | None = None
    #: execute() raised the caller's cancellation (None: no outer cancel happened).
    outer_propagated: bool | None = None

    def __post_init__(self) -> None:
        self.attempts = {sc.sid: [] for sc in self.case.stages}

    # -- the stop trigger ---------------------------------------------------------
    def _count_exit(self, ctx: PipelineContext, pipeline: Pipeline) -> bool:
        """Count a finished attempt; True if the handler must raise PCE now."""
        self.finished += 1
        stop = self.case.stop
        if stop.kind != CANCEL or self.finished != stop.after:
            return False
        if stop.source == FROM_STAGE:
            self.cancel_requests.append((FROM_STAGE, ctx.is_cancelled))
            if stop.via_pipeline:
                pipeline.cancel(stop.reason)
            else:
                ctx.cancel(stop.reason)
            return False
        if stop.source == RAISE_PCE:
            self.cancel_requests.append((RAISE_PCE, ctx.is_cancelled))
            return True
        assert self.trigger is not None
        self.trigger.set()
        return False

    def enter(self, ctx: PipelineContext, sc: StageCase, value: Any) -> AttemptLog:
        logs = self.attempts[sc.sid]
        n = len(logs) + 1
        deps_status = {}
        for dep in sc.deps:
            found = ctx.get_stage_result(dep)
            deps_status[dep] = None if found is None else found.status
        log = AttemptLog(
            sid=sc.sid,
            n=n,
            input=value,
            start=anyio.current_time(),
            deadline=anyio.current_effective_deadline(),
            deps_status=deps_status,
            deps_returned=all(d in self.returned_values for d in sc.deps),
            stop_begun_at_entry=ctx.is_cancelled or self.outer_cancelled,
        )
        logs.append(log)
        self.entry_order.append((sc.sid, n))
        if n == 1:
            self.first_starts.append(sc.sid)
        self.live += 1
        self.max_live = max(self.max_live, self.live)
        stop = self.case.stop
        if stop.kind == CANCEL and stop.after == 0 and self.trigger is not None:
            self.trigger.set()
        return log

    def leave(
        self,
        ctx: PipelineContext,
        pipeline: Pipeline,
        log: AttemptLog,
        kind: str,
        value: Any = None,
        exc: BaseException | None = None,
    ) -> PipelineCancelledException | None:
        """Record the end of an attempt. Returns an exception to raise instead
        (the RAISE_PCE stop source), else None."""
        swap: PipelineCancelledException | None = None
        if kind in (RETURNED, RAISED, PCE) and self._count_exit(ctx, pipeline):
            swap = PipelineCancelledException(self.case.stop.reason)
            kind, value, exc = PCE, None, swap
        log.end = anyio.current_time()
        log.exit = kind
        log.value = value
        log.exc = exc
        log.stop_begun_at_exit = ctx.is_cancelled
        if kind == RETURNED:
            self.returned_values[log.sid] = value
        self.live -= 1
        return swap


class Harness:
    """A pipeline built from a case, and the recorder of its current run."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.rec = Recorder(case)
        self.pipeline = build_pipeline(case, self)

    def fresh(self) -> Recorder:
        self.rec = Recorder(self.case)
        return self.rec


def _retry_config(rc: RetryCase) -> RetryConfig:
    return RetryConfig(
        max_retries=rc.max_retries,
        strategy=rc.strategy,
        initial_delay_seconds=rc.initial_delay,
        max_delay_seconds=rc.max_delay,
        backoff_factor=rc.backoff,
        retry_on_exceptions=(
            None if rc.retry_on is None else tuple(RETRY_ON_TYPES[n] for n in rc.retry_on)
        ),
        retry_on_timeout=rc.retry_on_timeout,
    )


def build_pipeline(case: Case, harness: Harness) -> Pipeline:
    config = PipelineConfig(
        name="generated",
        retry=_retry_config(case.retry),
        timeout=TimeoutConfig(
            stage_timeout_seconds=case.stage_timeout,
            pipeline_timeout_seconds=case.stop.timeout
            if case.stop.kind == PIPELINE_TIMEOUT
            else None,
            cleanup_timeout_seconds=case.cleanup_timeout,
            grace_period_seconds=case.grace,
        ),
        continue_on_error=case.continue_on_error,
        parallel_stages=case.parallel,
        max_parallel=case.max_parallel,
        collect_metrics=case.collect_metrics,
        cleanup_on_cancel=case.cleanup_on_cancel,
        # The handlers are plain functions (returning a coroutine for async
        # attempts) that record through anyio: on the loop's thread.
        executor="inline",
    )
    pipeline = Pipeline(config)
    pipeline.add_stages(
        Stage(
            stage_id=sc.sid,
            name=f"stage {sc.sid}",
            handler=functools.partial(_handler, harness, sc),
            dependencies=list(sc.deps),
            timeout_seconds=sc.timeout,
            retry_config=None if sc.retry is None else _retry_config(sc.retry),
            critical=sc.critical,
            cleanup_handler=None
            if sc.cleanup is None
            else functools.partial(_cleanup, harness, sc),
        )
        for sc in case.stages
    )
    return pipeline


def _make_exc(name: str, sid: str, n: int) -> Exception:
    return EXCEPTIONS[name](f"{sid} attempt {n}")


def _handler(harness: Harness, sc: StageCase, ctx: PipelineContext, value: Any) -> Any:
    """A plain function: runs sync attempts inline, returns a coroutine for the
    others (R3.4 allows both)."""
    rec = harness.rec
    log = rec.enter(ctx, sc, value)
    behaviour = sc.attempt(log.n)
    if not behaviour.sync:
        return _async_attempt(harness, sc, ctx, value, log)
    try:
        if behaviour.kind == RAISE:
            raise _make_exc(behaviour.exc, sc.sid, log.n)
        result = derive(sc.sid, value)
    except Exception as exc:
        swap = rec.leave(ctx, harness.pipeline, log, RAISED, exc=exc)
        if swap is not None:
            raise swap from None
        raise
    swap = rec.leave(ctx, harness.pipeline, log, RETURNED, value=result)
    if swap is not None:
        raise swap
    return result


async def _async_attempt(
    harness: Harness, sc: StageCase, ctx: PipelineContext, value: Any, log: AttemptLog
) -> Any:
    rec = harness.rec
    behaviour = sc.attempt(log.n)
    kind = behaviour.kind
    try:
        if kind in (OK, RAISE):
            await anyio.sleep(behaviour.delay)
            if kind == RAISE:
                raise _make_exc(behaviour.exc, sc.sid, log.n)
        elif kind == SHIELD:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(behaviour.delay)
            await anyio.lowlevel.checkpoint()  # a pending cancellation lands here
        elif kind == COOP:
            for _ in range(behaviour.steps):
                ctx.check_cancelled()
                await anyio.sleep(0.001)
            ctx.check_cancelled()
        elif kind == HANG:
            assert rec.never is not None
            with anyio.move_on_after(2 * watchdog_seconds(harness.case)):
                await rec.never.wait()
            rec.leave(ctx, harness.pipeline, log, HANG_CAP)
            return "hang-cap"
        result = derive(sc.sid, value)
    except anyio.get_cancelled_exc_class():
        rec.leave(ctx, harness.pipeline, log, CANCELLED)
        raise
    except PipelineCancelledException as exc:
        swap = rec.leave(ctx, harness.pipeline, log, PCE, exc=exc)
        raise swap or exc from None
    except Exception as exc:
        swap = rec.leave(ctx, harness.pipeline, log, RAISED, exc=exc)
        if swap is not None:
            raise swap from None
        raise
    swap = rec.leave(ctx, harness.pipeline, log, RETURNED, value=result)
    if swap is not None:
        raise swap
    return result


def _cleanup(harness: Harness, sc: StageCase, ctx: PipelineContext) -> Any:
    rec = harness.rec
    rec.cleanups.append(sc.sid)
    rec.handlers_live_at_cleanup.append(rec.live)
    if sc.cleanup == "sync":
        return None
    if sc.cleanup == "raise":
        raise RuntimeError(f"cleanup of {sc.sid} failed")
    return _async_cleanup(harness, sc)


async def _async_cleanup(harness: Harness, sc: StageCase) -> None:
    rec = harness.rec
    rec.cleanup_live += 1
    rec.cleanup_max_live = max(rec.cleanup_max_live, rec.cleanup_live)
    try:
        if sc.cleanup == "hang":
            assert rec.never is not None
            with anyio.move_on_after(2 * watchdog_seconds(harness.case)):
                await rec.never.wait()
        else:
            await anyio.lowlevel.checkpoint()
    finally:
        rec.cleanup_live -= 1


@dataclass
class Observation:
    """One run of a case on one backend."""

    backend: str
    result: PipelineResult | None
    rec: Recorder
    duration: float
    hung: bool
    leftover_tasks: list[str]
    raised: BaseException | None = None
    #: Read right after execute() returned: (is_running, result is pipeline.result,
    #: pipeline.status, pipeline.stage_statuses()).
    live_state: tuple[bool, bool, Any, dict[str, Any]] | None = None


async def run_once(harness: Harness, backend: str = "") -> Observation:
    """Execute the harness's pipeline once with a fresh recorder, firing the
    case's stop, and return what was seen."""
    rec = harness.fresh()
    rec.trigger = anyio.Event()
    rec.never = anyio.Event()
    pipeline = harness.pipeline
    case = harness.case
    helpers: set[int] = set()
    before = {t.id for t in anyio.get_running_tasks()}
    result: PipelineResult | None = None
    raised: BaseException | None = None
    leftover: list[str] = []
    live_state: tuple[bool, bool, Any, dict[str, Any]] | None = None

    async def canceller() -> None:
        helpers.add(anyio.get_current_task().id)
        assert rec.trigger is not None
        await rec.trigger.wait()
        if case.stop.source == FROM_TASK:
            ctx = pipeline.context
            rec.cancel_requests.append((FROM_TASK, bool(ctx and ctx.is_cancelled)))
            pipeline.cancel(case.stop.reason)
        elif case.stop.source == FROM_OUTER:
            assert rec.outer is not None
            rec.outer_cancelled = True
            rec.outer.cancel()
        else:
            rec.cancel_requests.append((FROM_THREAD, None))
            await anyio.to_thread.run_sync(pipeline.cancel, case.stop.reason)

    start = _clock()
    hung = False
    async with anyio.create_task_group() as tg:
        if case.stop.kind == CANCEL and case.stop.source in (FROM_TASK, FROM_THREAD, FROM_OUTER):
            tg.start_soon(canceller)
            await anyio.lowlevel.checkpoint()  # let it register and start waiting
        with anyio.move_on_after(watchdog_seconds(case)) as watchdog:
            with anyio.CancelScope() as rec.outer:
                try:
                    result = await pipeline.execute(case.initial_input)
                except anyio.get_cancelled_exc_class():
                    if rec.outer_cancelled and not watchdog.cancel_called:
                        rec.outer_propagated = True
                        result = pipeline.result
                    raise
                except Exception as exc:  # only PipelineException subclasses are allowed
                    raised = exc
                else:
                    live_state = (
                        pipeline.is_running,
                        pipeline.result is result,
                        pipeline.status,
                        pipeline.stage_statuses(),
                    )
                    if rec.outer_cancelled:
                        rec.outer_propagated = False
        hung = watchdog.cancelled_caught
        duration = _clock() - start
        leftover = [
            t.name or str(t.id)
            for t in anyio.get_running_tasks()
            if t.id not in before and t.id not in helpers
        ]
        tg.cancel_scope.cancel()
    if hung:
        result = pipeline.result
    return Observation(backend, result, rec, duration, hung, leftover, raised, live_state)


def run_on(harness: Harness, backend: tuple[str, dict[str, Any]]) -> Observation:
    """``run_once`` in a new event loop of the given ``anyio_backend`` param."""
    name, options = backend
    label = "uvloop" if options.get("use_uvloop") else name
    return anyio.run(
        functools.partial(run_once, harness, label), backend=name, backend_options=options
    )
