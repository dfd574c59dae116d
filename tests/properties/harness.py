"""Run a generated :class:`~.strategies.Case` and record what happened.

Every handler logs its attempts (input received, whether its dependencies
were COMPLETED when it started, how it ended, whether a stop had begun when
it raised), keeps a live-attempt counter (for R2.1 and for "no task left
running") and triggers the case's stop. Cleanup handlers log their order and
the number of attempts still alive when they ran.

Where a stage runs (R11) decides where its attempts are recorded:

* ``inline``: the handler records everything itself, on the loop's thread
  and clock (``anyio.current_time()``, ``anyio.current_effective_deadline()``).
* ``thread`` and ``process``: the stage runs on the library's own executor,
  seen through :class:`Observed`, a pass-through ``Executor`` whose
  ``call()`` runs on the loop inside the attempt's cancel scope. It records
  the attempt's start and deadline when the engine hands the call over, and
  its end when the engine stops waiting for it (a value, an exception, or a
  cancellation: a thread abandoned at its deadline, a worker killed), all on
  the loop's clock, so every timing invariant compares like with like. The
  thread part of a thread stage records, under the recorder's lock, how the
  handler ended in its thread and the stops it requested; it reads no anyio
  clock and sets no anyio event from the thread (the stop trigger is handed
  to the loop with the loop token, without waiting). A coroutine that a
  thread stage's handler returns is awaited on the loop (R11.2) and records
  its own end there, as an inline one does. A process stage's handler runs in
  another process with no recorder at all: for it the log holds only what
  the parent sees (when the call went out, when and how it came back).
* An attempt is *live* from the engine's call until the engine ends it. A
  thread abandoned at its deadline or at a forced stop still runs, but its
  attempt is over: it leaves the live count then (R2.1 counts attempts, not
  threads), and a thread still running when ``execute()`` returned is looked
  for in ``result.metadata["still_running"]`` instead (R11.5).

The recorder is swapped per run (``Harness.fresh()``), so one built pipeline
can be executed again, on the same or another backend (R8.6); a thread that
outlives its run keeps writing to its own run's recorder, never the next.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
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
from proxima.data.pipeline.executors import (
    Executor,
    ExecutorSession,
    ProcessExecutor,
    StageCall,
    resolve,
)

from .faults import HANG_CAP_VALUE, RemotePlan, derive, make_exc, remote_attempt
from .strategies import (
    BLOCK,
    CANCEL,
    COOP,
    FROM_OUTER,
    FROM_STAGE,
    FROM_TASK,
    FROM_THREAD,
    HANG,
    INLINE,
    OK,
    PIPELINE_TIMEOUT,
    PROCESS,
    RAISE,
    RAISE_PCE,
    RETRY_ON_TYPES,
    SHIELD,
    THREAD,
    Case,
    RetryCase,
    StageCase,
)

#: Fixed slack of the watchdog, for a loaded machine.
WATCHDOG_SLACK = 2.0
#: A worker process's start-up (~0.15 s quiet), with room for a loaded machine.
PROCESS_START = 0.5
#: At most this many worker processes per run: each start-up costs.
PROCESS_WORKERS = 2


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
            if sc.executor == PROCESS:
                total += PROCESS_START
        total += case.cleanup_timeout or 0.01
    return WATCHDOG_SLACK + 3 * total


_clock = time.perf_counter

# How an attempt ended, as the handler saw it.
RETURNED = "returned"
RAISED = "raised"  # an Exception other than PipelineCancelledException
PCE = "pce"  # PipelineCancelledException (check_cancelled() or a deliberate stop)
CANCELLED = "cancelled"  # the backend's cancellation exception
HANG_CAP = "hang-cap"  # a hanging handler was never cancelled (only past the watchdog)

#: The stop sources that fire from inside a handler (the others use the trigger).
_IN_STAGE = (FROM_STAGE, RAISE_PCE)


@dataclass
class AttemptLog:
    sid: str
    n: int
    input: Any  # what the engine handed to the handler (R3)
    start: float  # anyio.current_time() at entry, on the loop
    deadline: float  # anyio.current_effective_deadline() at entry (the stage timeout)
    deps_status: dict[str, StageStatus | None]  # ctx.get_stage_result(dep).status at entry
    deps_returned: bool  # every dependency's attempt had returned before this entry
    end: float | None = None  # anyio.current_time() when the engine's attempt ended
    exit: str | None = None  # how it ended, as the engine got it
    value: Any = None
    exc: BaseException | None = None
    stop_begun_at_exit: bool = False  # ctx.is_cancelled when it returned/raised to the engine
    stop_begun_at_entry: bool = False  # a stop (or the caller's cancel) came before the call
    executor: str = INLINE
    #: Thread stages: the handler was called in its thread, how it ended
    #: there, and whether it has (a thread abandoned by the engine runs on).
    called: bool = True
    thread_exit: str | None = None
    thread_done: bool = False
    abandoned: bool = False  # the engine ended it while its thread part still ran


#: The (recorder, log) of the thread-stage attempt whose handler runs in
#: this thread: set by the observing session on the loop, seen in the worker
#: thread because the thread runs in a copy of the attempt's context.
_CURRENT: contextvars.ContextVar[tuple[Recorder, AttemptLog] | None] = contextvars.ContextVar(
    "properties_current_attempt", default=None
)


@dataclass
class Recorder:
    """What one run's handlers and cleanups saw."""

    case: Case
    pipeline: Pipeline | None = None
    attempts: dict[str, list[AttemptLog]] = field(default_factory=dict)
    entry_order: list[tuple[str, int]] = field(default_factory=list)
    first_starts: list[str] = field(default_factory=list)
    live: int = 0  # attempts between the engine's call and the engine's end
    max_live: int = 0
    finished: int = 0  # attempts that ended on their own (returned or raised)
    cleanups: list[str] = field(default_factory=list)
    cleanup_live: int = 0
    cleanup_max_live: int = 0
    handlers_live_at_cleanup: list[int] = field(default_factory=list)
    #: (source, whether another stop had begun first; None: unknown)
    cancel_requests: list[tuple[str, bool | None]] = field(default_factory=list)
    trigger: anyio.Event | None = None
    never: anyio.Event | None = None  # never set: what hanging code waits on
    #: Set once execute() has returned: what blocking threads wait on.
    release: threading.Event = field(default_factory=threading.Event)
    returned_values: dict[str, Any] = field(default_factory=dict)
    outer_cancelled: bool = False  # the scope around execute() was cancelled
    outer: anyio.CancelScope | None = None
    #: execute() raised the caller's cancellation (None: no outer cancel happened).
    outer_propagated: bool | None = None
    #: Guards what worker threads and the loop both write.
    lock: threading.Lock = field(default_factory=threading.Lock)
    loop_thread: int = 0
    #: Queue a call on the loop without waiting (the loop token's own method).
    schedule: Callable[[Callable[[], None]], object] | None = None
    #: R11.2 (and R3) breaches handlers saw: code on the wrong thread, a wrong input.
    misplaced: list[str] = field(default_factory=list)
    #: Thread stages whose handler still ran in its thread after execute() returned.
    threads_after_run: set[str] = field(default_factory=set)
    #: How many attempts had been called when another OS thread was about to
    #: stop the run (None: none did). The engine checks for a stop right
    #: before it calls a handler, and the loop's thread goes from that check to
    #: the call without a pause; only another thread's stop can land in
    #: between, and only the very next call can have been checked before it.
    entries_at_thread_stop: int | None = None

    def __post_init__(self) -> None:
        self.attempts = {sc.sid: [] for sc in self.case.stages}

    # -- threads and the loop ---------------------------------------------------
    def on_loop(self, func: Callable[[], None]) -> None:
        """``func()`` on the loop's thread: now if this is it, else queued
        without waiting (a thread must never wait for the loop)."""
        if threading.get_ident() == self.loop_thread:
            func()
            return
        assert self.schedule is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone: the run is long over
            self.schedule(func)

    def thread_stop_coming(self) -> None:
        """A stop is about to be requested, from another OS thread if this is
        not the loop's (call with the lock held)."""
        if threading.get_ident() != self.loop_thread and self.entries_at_thread_stop is None:
            self.entries_at_thread_stop = len(self.entry_order)

    def placed(self, where: str, sid: str, *, on_loop: bool) -> None:
        """R11.2: record it if this code runs on the wrong thread."""
        if (threading.get_ident() == self.loop_thread) != on_loop:
            side = "on" if not on_loop else "off"
            self.misplaced.append(f"R11.2: {sid}: {where} ran {side} the event loop's thread")

    def running_threads(self) -> set[str]:
        """Thread stages whose handler is running in a thread right now."""
        with self.lock:
            return {
                log.sid
                for logs in self.attempts.values()
                for log in logs
                if log.executor == THREAD and log.called and not log.thread_done
            }

    # -- the stop trigger ---------------------------------------------------------
    def _count_exit(self, ctx: Any, *, in_handler: bool) -> bool:
        """Count a finished attempt (under the lock); True if the handler must
        raise PCE now. ``in_handler``: counted where the handler runs (False:
        a process stage's end, seen by the parent), so an in-stage stop can
        only be fired by a handler that can call cancel() itself."""
        stop = self.case.stop
        if stop.kind != CANCEL or (stop.source in _IN_STAGE and not in_handler):
            return False
        self.finished += 1
        if self.finished != stop.after:
            return False
        if stop.source == FROM_STAGE:
            self.thread_stop_coming()
            begun = ctx.is_cancelled
            if stop.via_pipeline:
                assert self.pipeline is not None
                self.pipeline.cancel(stop.reason)  # R5.1: returns at once, from any thread
            else:
                ctx.cancel(stop.reason)
            # Another stop may have come in between (from the loop, while this
            # ran in a thread): then ours was not the first.
            begun = begun or ctx.cancellation_reason is not stop.reason
            self.cancel_requests.append((FROM_STAGE, begun))
            return False
        if stop.source == RAISE_PCE:
            self.cancel_requests.append((RAISE_PCE, ctx.is_cancelled))
            return True
        trigger = self.trigger
        assert trigger is not None
        self.on_loop(trigger.set)
        return False

    # -- attempts -------------------------------------------------------------------
    def enter(self, ctx: PipelineContext, sc: StageCase, value: Any, executor: str) -> AttemptLog:
        """The engine calls an attempt (on the loop's thread, in its scope)."""
        logs = self.attempts[sc.sid]
        n = len(logs) + 1
        deps_status = {}
        for dep in sc.deps:
            found = ctx.get_stage_result(dep)
            deps_status[dep] = None if found is None else found.status
        with self.lock:
            late = ctx.is_cancelled and self.entries_at_thread_stop != len(self.entry_order)
            log = AttemptLog(
                sid=sc.sid,
                n=n,
                input=value,
                start=anyio.current_time(),
                deadline=anyio.current_effective_deadline(),
                deps_status=deps_status,
                deps_returned=all(d in self.returned_values for d in sc.deps),
                stop_begun_at_entry=late or self.outer_cancelled,
                executor=executor,
                called=executor != THREAD,
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
        log: AttemptLog,
        kind: str,
        value: Any = None,
        exc: BaseException | None = None,
    ) -> PipelineCancelledException | None:
        """The end of an attempt whose handler ends on the loop (inline, or a
        coroutine). Returns an exception to raise instead (the RAISE_PCE stop
        source), else None."""
        swap: PipelineCancelledException | None = None
        with self.lock:
            if kind in (RETURNED, RAISED, PCE) and self._count_exit(ctx, in_handler=True):
                swap = PipelineCancelledException(self.case.stop.reason)
                kind, value, exc = PCE, None, swap
        self._ended(ctx, log, kind, value, exc)
        return swap

    def thread_leave(
        self,
        ctx: PipelineContext,
        log: AttemptLog,
        kind: str,
        value: Any = None,
        exc: BaseException | None = None,
    ) -> PipelineCancelledException | None:
        """The handler's end in a worker thread (the engine's end comes later,
        in :meth:`observed_end`). A thread the engine has abandoned already
        counts for nothing: its attempt is over."""
        swap: PipelineCancelledException | None = None
        with self.lock:
            if log.exit is None:
                if kind in (RETURNED, RAISED, PCE) and self._count_exit(ctx, in_handler=True):
                    swap = PipelineCancelledException(self.case.stop.reason)
                    kind, value, exc = PCE, None, swap
                log.value, log.exc = value, exc
            log.thread_exit = kind
            log.thread_done = True
        return swap

    def observed_end(
        self,
        ctx: PipelineContext,
        log: AttemptLog,
        kind: str,
        value: Any = None,
        exc: BaseException | None = None,
    ) -> None:
        """The engine's end of a thread or process attempt, seen on the loop."""
        if log.executor == THREAD:
            with self.lock:
                ended = log.exit is not None
            if ended:
                # The handler returned a coroutine: the thread session awaited
                # it on the loop, and the coroutine recorded its own end.
                return
        if log.executor == THREAD and kind != CANCELLED:
            # The engine got what the handler gave in its thread.
            with self.lock:
                got = log.thread_exit
            if got is None:
                self.misplaced.append(
                    f"R11.2: {log.sid} attempt {log.n} came back before its handler ended"
                )
            else:
                kind, value, exc = got, log.value, log.exc
        elif log.executor == THREAD:
            with self.lock:
                log.abandoned = not log.thread_done
        elif log.executor == PROCESS and kind in (RETURNED, RAISED, PCE):
            with self.lock:
                self._count_exit(ctx, in_handler=False)
        self._ended(ctx, log, kind, value, exc)

    def _ended(
        self,
        ctx: PipelineContext,
        log: AttemptLog,
        kind: str,
        value: Any,
        exc: BaseException | None,
    ) -> None:
        """On the loop: the attempt is over for the engine."""
        with self.lock:
            log.end = anyio.current_time()
            log.exit = kind
            log.value = value
            log.exc = exc
            log.stop_begun_at_exit = ctx.is_cancelled
        if kind == RETURNED:
            self.returned_values[log.sid] = value
        self.live -= 1


class Observed:
    """A library executor seen from the loop (see the module docstring).

    Only a pass-through: the inner executor's own session does the work, so
    the thread hop, abandoning a thread at its deadline, killing a worker
    process and reporting what still runs are the library's. ``call()`` is
    a coroutine the engine awaits inside the attempt's cancel scope, as it
    would await the inner session's.
    """

    def __init__(self, inner: Executor, harness: Harness, kind: str) -> None:
        self.inner = inner
        self.harness = harness
        self.kind = kind

    def session(self) -> AbstractAsyncContextManager[ExecutorSession]:
        return self._open()

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[ExecutorSession]:
        async with self.inner.session() as session:
            yield _ObservedSession(self.harness.rec, session, self.kind)


class _ObservedSession:
    def __init__(self, rec: Recorder, inner: ExecutorSession, kind: str) -> None:
        self.rec = rec
        self.inner = inner
        self.kind = kind
        self._by_id = rec.case.by_id()

    async def call(self, call: StageCall) -> Any:
        rec = self.rec
        ctx = call.context
        log = rec.enter(ctx, self._by_id[call.stage_id], call.input, self.kind)
        if call.attempt != log.n:
            rec.misplaced.append(
                f"R4.5: {call.stage_id}: the executor got attempt {call.attempt}, "
                f"the {log.n}th call of the stage"
            )
        token = _CURRENT.set((rec, log))
        try:
            value = await self.inner.call(call)
        except anyio.get_cancelled_exc_class():
            rec.observed_end(ctx, log, CANCELLED)  # abandoned, or killed
            raise
        except PipelineCancelledException as exc:
            rec.observed_end(ctx, log, PCE, exc=exc)
            raise
        except Exception as exc:
            rec.observed_end(ctx, log, RAISED, exc=exc)
            raise
        finally:
            _CURRENT.reset(token)
        if inspect.iscoroutine(value):
            return value  # an inline handler's coroutine: the engine awaits it, it records its end
        rec.observed_end(ctx, log, HANG_CAP if value == HANG_CAP_VALUE else RETURNED, value)
        return value

    def still_running(self) -> dict[str, str]:
        return self.inner.still_running()


class Harness:
    """A pipeline built from a case, and the recorder of its current run."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.observed: dict[str, Observed] = {
            # The very executor Stage(executor="thread") names.
            THREAD: Observed(resolve(THREAD, None), self, THREAD),
            PROCESS: Observed(ProcessExecutor(max_workers=PROCESS_WORKERS), self, PROCESS),
        }
        self.pipeline = build_pipeline(case, self)
        self.rec = Recorder(case, self.pipeline)

    def fresh(self) -> Recorder:
        self.rec = Recorder(self.case, self.pipeline)
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
        # Every stage names its own executor; the default is never used.
        executor="inline",
    )
    pipeline = Pipeline(config)
    pipeline.add_stages(
        Stage(
            stage_id=sc.sid,
            name=f"stage {sc.sid}",
            handler=_stage_handler(case, harness, sc),
            dependencies=list(sc.deps),
            timeout_seconds=sc.timeout,
            retry_config=None if sc.retry is None else _retry_config(sc.retry),
            critical=sc.critical,
            cleanup_handler=_cleanup_handler(harness, sc),
            executor=INLINE if sc.executor == INLINE else harness.observed[sc.executor],
        )
        for sc in case.stages
    )
    return pipeline


def _stage_handler(case: Case, harness: Harness, sc: StageCase) -> Callable[..., Any]:
    """Inline and thread stages: ``_handler``, which records. Process stages:
    a picklable partial of a module-level function that records nothing (the
    recorder cannot cross to the worker)."""
    if sc.executor != PROCESS:
        return functools.partial(_handler, harness, sc)
    plan: RemotePlan = tuple((a.kind, a.delay, a.exc, a.steps) for a in sc.attempts)
    return functools.partial(remote_attempt, sc.sid, plan, 2 * watchdog_seconds(case))


def _handler(harness: Harness, sc: StageCase, ctx: PipelineContext, value: Any) -> Any:
    """A plain function: runs sync attempts where it is called, returns a
    coroutine for the others (R3.4 allows both). Inline, it is called on the
    loop and records the attempt itself; on a thread stage it is called in a
    worker thread, for an attempt the observing session has logged already."""
    current = _CURRENT.get()
    if current is None:
        rec = harness.rec
        rec.placed("the inline handler", sc.sid, on_loop=True)
        log = rec.enter(ctx, sc, value, INLINE)
        behaviour = sc.attempt(log.n)
        if not behaviour.sync:
            return _async_attempt(rec, sc, ctx, value, log)
        kind, result, exc = _sync_work(rec, sc, ctx, value, log)
        swap = rec.leave(ctx, log, kind, result, exc)
    else:
        rec, log = current
        rec.placed("the thread stage's handler", sc.sid, on_loop=False)
        if value is not log.input:
            rec.misplaced.append(f"R3: {sc.sid} attempt {log.n}: the thread got another input")
        log.called = True
        behaviour = sc.attempt(log.n)
        if not behaviour.sync:
            coroutine = _async_attempt(rec, sc, ctx, value, log)
            log.thread_done = True
            return coroutine
        kind, result, exc = _sync_work(rec, sc, ctx, value, log)
        swap = rec.thread_leave(ctx, log, kind, result, exc)
    if swap is not None:
        raise swap from None
    if exc is not None:
        raise exc
    return result


def _sync_work(
    rec: Recorder, sc: StageCase, ctx: PipelineContext, value: Any, log: AttemptLog
) -> tuple[str, Any, BaseException | None]:
    """A sync attempt's work, where the handler was called; how it ended.

    Only a thread stage blocks (``BLOCK``, a sync ``HANG``): on the release
    event, set once ``execute()`` has returned, so an abandoned thread ends
    soon after its run."""
    behaviour = sc.attempt(log.n)
    kind = behaviour.kind
    try:
        if kind == RAISE:
            raise make_exc(behaviour.exc, sc.sid, log.n)
        if kind == BLOCK:
            rec.release.wait(behaviour.delay)
        elif kind == COOP:
            for _ in range(behaviour.steps):
                ctx.check_cancelled()  # R11.3: works in a worker thread
                time.sleep(0.001)
            ctx.check_cancelled()
        elif kind == HANG and not rec.release.wait(2 * watchdog_seconds(rec.case)):
            return HANG_CAP, HANG_CAP_VALUE, None
    except PipelineCancelledException as exc:
        return PCE, None, exc
    except Exception as exc:
        return RAISED, None, exc
    return RETURNED, derive(sc.sid, value), None


async def _async_attempt(
    rec: Recorder, sc: StageCase, ctx: PipelineContext, value: Any, log: AttemptLog
) -> Any:
    rec.placed("the handler's coroutine", sc.sid, on_loop=True)
    behaviour = sc.attempt(log.n)
    kind = behaviour.kind
    try:
        if kind in (OK, RAISE):
            await anyio.sleep(behaviour.delay)
            if kind == RAISE:
                raise make_exc(behaviour.exc, sc.sid, log.n)
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
            with anyio.move_on_after(2 * watchdog_seconds(rec.case)):
                await rec.never.wait()
            rec.leave(ctx, log, HANG_CAP)
            return HANG_CAP_VALUE
        result = derive(sc.sid, value)
    except anyio.get_cancelled_exc_class():
        rec.leave(ctx, log, CANCELLED)
        raise
    except PipelineCancelledException as exc:
        swap = rec.leave(ctx, log, PCE, exc=exc)
        raise swap or exc from None
    except Exception as exc:
        swap = rec.leave(ctx, log, RAISED, exc=exc)
        if swap is not None:
            raise swap from None
        raise
    swap = rec.leave(ctx, log, RETURNED, value=result)
    if swap is not None:
        raise swap
    return result


def _cleanup_handler(harness: Harness, sc: StageCase) -> Callable[..., Any] | None:
    """The engine runs a plain-function cleanup in a worker thread and an
    ``async def`` one on the loop (R11.9): "sync" and "raise" are plain
    functions, "ok" and "hang" coroutines (so a hang is bounded by the cleanup
    timeout alone, not by a thread hop as well)."""
    if sc.cleanup is None:
        return None
    if sc.cleanup in ("sync", "raise"):
        return functools.partial(_sync_cleanup, harness, sc)
    return functools.partial(_async_cleanup, harness, sc)


def _cleanup_called(rec: Recorder, sc: StageCase) -> None:
    with rec.lock:
        rec.cleanups.append(sc.sid)
        rec.handlers_live_at_cleanup.append(rec.live)


def _sync_cleanup(harness: Harness, sc: StageCase, ctx: PipelineContext) -> None:
    rec = harness.rec
    rec.placed("a plain-function cleanup", sc.sid, on_loop=False)
    _cleanup_called(rec, sc)
    if sc.cleanup == "raise":
        raise RuntimeError(f"cleanup of {sc.sid} failed")


async def _async_cleanup(harness: Harness, sc: StageCase, ctx: PipelineContext) -> None:
    rec = harness.rec
    rec.placed("an async cleanup", sc.sid, on_loop=True)
    _cleanup_called(rec, sc)
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
    rec.loop_thread = threading.get_ident()
    native: Any = anyio.lowlevel.current_token().native_token
    # asyncio and uvloop: call_soon_threadsafe; trio's token: run_sync_soon.
    # Both only enqueue, whatever the loop is doing.
    rec.schedule = getattr(native, "call_soon_threadsafe", None) or native.run_sync_soon
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
            await anyio.to_thread.run_sync(cancel_from_thread)

    def cancel_from_thread() -> None:
        with rec.lock:
            rec.thread_stop_coming()
        pipeline.cancel(case.stop.reason)

    start = _clock()
    hung = False
    try:
        async with anyio.create_task_group() as tg:
            if case.stop.kind == CANCEL and case.stop.source in (
                FROM_TASK,
                FROM_THREAD,
                FROM_OUTER,
            ):
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
            rec.threads_after_run = rec.running_threads()
            hung = watchdog.cancelled_caught
            duration = _clock() - start
            leftover = [
                t.name or str(t.id)
                for t in anyio.get_running_tasks()
                if t.id not in before and t.id not in helpers
            ]
            tg.cancel_scope.cancel()
    finally:
        rec.release.set()  # the blocked threads of this run may end now
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
