"""Generated pipelines: a plain-data description of a case, and Hypothesis
strategies that build them.

A :class:`Case` is pure data (frozen dataclasses), so the same case can be
run on several backends, fed to the reference model and printed by
Hypothesis as a readable reproduction. ``harness.build_pipeline`` turns it
into a real :class:`~proxima.data.pipeline.Pipeline`.

Timing is kept tiny: handler delays of 0-3 ms, retry delays of 0-3 ms, stage
timeouts of 20-40 ms (only on stages that need one) and pipeline timeouts of
5-50 ms.

Each stage names where it runs (R11): ``inline`` or ``thread`` (drawn for
every stage), or ``process`` where a strategy argument allows it. Thread
stages add attempts that block their thread (past their deadline too, or
until the run is over); process stages run only plain-function attempts,
plus a worker that exits.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hypothesis import strategies as st

from proxima.data.pipeline import CancellationReason, RetryStrategy

from .faults import BLOCK, COOP, DIE, EXCEPTIONS, FAILURES, HANG, OK, RAISE, SHIELD, StageError

__all__ = [
    "BLOCK",
    "COOP",
    "DIE",
    "EXCEPTIONS",
    "FAILURES",
    "HANG",
    "OK",
    "RAISE",
    "SHIELD",
    "StageError",
]

#: Types a retry config may restrict retries to (R4.3: subclasses included).
RETRY_ON_TYPES: dict[str, type[BaseException]] = {
    "ValueError": ValueError,
    "OSError": OSError,
    "KeyError": KeyError,
    "LookupError": LookupError,  # KeyError's base class
    "StageError": StageError,
}

#: Reasons a user stop may give; none of them is ERROR or TIMEOUT, so the
#: final ``cancellation_reason`` tells who stopped the run (R6.3, R6.4).
USER_REASONS = (
    CancellationReason.USER_REQUESTED,
    CancellationReason.RESOURCE_LIMIT,
    CancellationReason.DEPENDENCY_FAILED,
)

# Where a stage runs (R11): ``Stage(executor=...)``.
INLINE = "inline"  # on the event loop
THREAD = "thread"  # a worker thread; a coroutine it returns is awaited on the loop
PROCESS = "process"  # a worker process (its own, smaller-budget test)
#: What ``cases`` draws each stage's executor from by default: a third of the
#: stages in threads (a thread hop costs 1.5-2.5x an inline attempt here).
DEFAULT_EXECUTORS = (INLINE, INLINE, THREAD)

# Stop kinds and sources.
NO_STOP = "none"
CANCEL = "cancel"  # cancel once `after` attempts have finished (0: at the first start)
PIPELINE_TIMEOUT = "timeout"
FROM_STAGE = "stage"  # ctx.cancel()/pipeline.cancel() inside the handler
RAISE_PCE = "raise_pce"  # the handler raises PipelineCancelledException(reason)
FROM_TASK = "task"  # pipeline.cancel() from another task
FROM_THREAD = "thread"  # pipeline.cancel() from a worker thread
FROM_OUTER = "outer"  # the caller's cancellation: a cancel scope around execute()

STAGE_TIMEOUTS = (0.02, 0.03, 0.04)
#: A stage timeout no attempt comes near: a thread or process stage with a
#: timeout in a deterministic case gets this one unless every attempt is
#: sure to overrun (a thread hop or a worker's start-up on a loaded machine
#: can take longer than 20-40 ms, so a short timeout would decide by timing).
LONG_TIMEOUT = 5.0
#: A grace period no stopping attempt comes near (deterministic in-stage stops
#: from a worker thread: see ``cases``).
LONG_GRACE = 1.0


@dataclass(frozen=True)
class Attempt:
    """What one attempt of a handler does."""

    kind: str
    delay: float = 0.0
    exc: str = "ValueError"
    #: All of it in the handler's plain-function call (no await at all): on
    #: the loop for an inline stage, in the worker thread for a thread stage;
    #: otherwise the handler returns a coroutine, awaited on the loop (R11.2).
    sync: bool = False
    steps: int = 0

    def __repr__(self) -> str:
        bits = [self.kind]
        if self.kind == RAISE:
            bits.append(self.exc)
        if self.kind in (OK, RAISE, SHIELD, BLOCK) and self.delay:
            bits.append(f"{self.delay * 1000:g}ms")
        if self.kind == COOP:
            bits.append(f"{self.steps} steps")
        if self.sync:
            bits.append("sync")
        return "<" + " ".join(bits) + ">"


@dataclass(frozen=True)
class RetryCase:
    strategy: RetryStrategy = RetryStrategy.NONE
    max_retries: int = 0
    initial_delay: float = 0.0
    max_delay: float = 0.003
    backoff: float = 1.0
    retry_on: tuple[str, ...] | None = None
    retry_on_timeout: bool = True

    @property
    def max_attempts(self) -> int:
        return 1 if self.strategy is RetryStrategy.NONE else 1 + self.max_retries

    def retries_exception(self, exc_name: str) -> bool:
        """R4.3: ``None`` retries any Exception, a tuple only those types."""
        if self.retry_on is None:
            return True
        wanted = tuple(RETRY_ON_TYPES[name] for name in self.retry_on)
        return issubclass(FAILURES[exc_name], wanted)

    def delay(self, retry: int) -> float:
        """R4.2, spelled out independently of ``RetryConfig.get_delay``."""
        if self.strategy is RetryStrategy.CONSTANT:
            value = self.initial_delay
        elif self.strategy is RetryStrategy.LINEAR_BACKOFF:
            value = self.initial_delay * (retry + 1)
        elif self.strategy is RetryStrategy.EXPONENTIAL_BACKOFF:
            value = self.initial_delay * self.backoff**retry
        else:
            value = 0.0
        return min(value, self.max_delay)


@dataclass(frozen=True)
class StageCase:
    sid: str
    deps: tuple[str, ...]
    attempts: tuple[Attempt, ...]  # attempt n uses attempts[min(n, len) - 1]
    critical: bool = True
    timeout: float | None = None  # Stage.timeout_seconds
    retry: RetryCase | None = None  # Stage.retry_config
    cleanup: str | None = None  # None, "ok", "sync", "raise", "hang"
    executor: str = INLINE  # Stage.executor (R11.1)

    def attempt(self, n: int) -> Attempt:
        return self.attempts[min(n, len(self.attempts)) - 1]


@dataclass(frozen=True)
class Stop:
    kind: str = NO_STOP
    after: int = 1
    source: str = FROM_STAGE
    reason: CancellationReason = CancellationReason.USER_REQUESTED
    via_pipeline: bool = False  # stage source: pipeline.cancel() rather than ctx.cancel()
    timeout: float | None = None  # pipeline timeout for PIPELINE_TIMEOUT


@dataclass(frozen=True)
class Case:
    stages: tuple[StageCase, ...]  # insertion order
    continue_on_error: bool = False
    parallel: bool = True
    max_parallel: int = 4
    retry: RetryCase = field(default_factory=RetryCase)
    stage_timeout: float | None = None  # TimeoutConfig.stage_timeout_seconds
    grace: float | None = 0.005
    cleanup_timeout: float | None = 0.02
    cleanup_on_cancel: bool = True
    collect_metrics: bool = True
    stop: Stop = field(default_factory=Stop)
    initial_input: object = None

    @property
    def limit(self) -> int:
        """R2.1: how many attempts may run at once."""
        return self.max_parallel if self.parallel else 1

    def by_id(self) -> dict[str, StageCase]:
        return {sc.sid: sc for sc in self.stages}

    def retry_of(self, sc: StageCase) -> RetryCase:
        """R4.1: the stage's own retry config, else the pipeline's."""
        return sc.retry if sc.retry is not None else self.retry

    def timeout_of(self, sc: StageCase) -> float | None:
        """R4.4: the stage's own timeout, else the pipeline's stage timeout."""
        return sc.timeout if sc.timeout is not None else self.stage_timeout

    def topological(self) -> list[StageCase]:
        """Stages in an order where every dependency comes first."""
        done: set[str] = set()
        out: list[StageCase] = []
        todo = list(self.stages)
        while todo:
            rest = []
            for sc in todo:
                if all(d in done for d in sc.deps):
                    out.append(sc)
                    done.add(sc.sid)
                else:
                    rest.append(sc)
            todo = rest
        return out


# -- strategies ------------------------------------------------------------------

_DELAYS = st.sampled_from([0.0, 0.0, 0.001, 0.002, 0.003])
_EXC_NAMES = st.sampled_from(sorted(EXCEPTIONS))
_RETRY_ON = st.sampled_from(
    [None, None, ("ValueError",), ("OSError", "KeyError"), ("LookupError",), ("StageError",)]
)


@st.composite
def retry_cases(draw: st.DrawFn, *, zero_delays: bool = False, slow: bool = False) -> RetryCase:
    if slow:  # always retries, after 10-20 ms: long enough for a stop to land in a delay
        return RetryCase(
            strategy=draw(
                st.sampled_from(
                    [
                        RetryStrategy.CONSTANT,
                        RetryStrategy.LINEAR_BACKOFF,
                        RetryStrategy.EXPONENTIAL_BACKOFF,
                    ]
                )
            ),
            max_retries=draw(st.integers(1, 3)),
            initial_delay=draw(st.sampled_from([0.01, 0.02])),
            max_delay=0.02,
            backoff=draw(st.sampled_from([1.0, 2.0])),
            retry_on=None,
            retry_on_timeout=True,
        )
    strategy = draw(st.sampled_from(list(RetryStrategy)))
    # Mostly tiny delays; sometimes 10 ms, so that stops land during a delay.
    initial = 0.0 if zero_delays else draw(st.sampled_from([0.0, 0.0005, 0.001, 0.002, 0.01]))
    return RetryCase(
        strategy=strategy,
        max_retries=draw(st.integers(0, 3)),
        initial_delay=initial,
        max_delay=draw(st.sampled_from([0.001, 0.003, 0.01])),
        backoff=draw(st.sampled_from([1.0, 1.5, 2.0])),
        retry_on=draw(_RETRY_ON),
        retry_on_timeout=draw(st.booleans()),
    )


@st.composite
def attempts(
    draw: st.DrawFn,
    *,
    timeout: float | None,
    deterministic: bool,
    may_hang: bool,
    faulty: bool = False,
    executor: str = INLINE,
) -> Attempt:
    """One attempt's behaviour.

    ``deterministic`` keeps to behaviours whose outcome no scheduling noise
    can change: on an inline stage with a timeout only instant (sync)
    attempts, attempts that hang until the timeout, or shields well past it;
    on a thread or process stage with a short timeout only attempts sure to
    overrun it (the hop to a thread, or a worker's start-up, is not instant).
    """
    if executor != INLINE:
        return draw(_worker_attempts(timeout, deterministic, may_hang, faulty, executor))
    kinds = [OK, OK, OK, RAISE, RAISE, SHIELD, COOP]
    if timeout is not None or may_hang:
        kinds += [HANG]
    if faulty:
        kinds += [RAISE] * 4
    if deterministic and timeout is not None:
        kinds = [OK, OK, RAISE, HANG, SHIELD]
    kind = draw(st.sampled_from(kinds))
    if kind in (OK, RAISE):
        sync = True if deterministic and timeout is not None else draw(st.booleans())
        delay = 0.0 if sync else draw(_DELAYS)
        exc = draw(_EXC_NAMES) if kind == RAISE else "ValueError"
        return Attempt(kind, delay=delay, exc=exc, sync=sync)
    if kind == SHIELD:
        if timeout is not None and (deterministic or draw(st.booleans())):
            return Attempt(SHIELD, delay=timeout + 0.02)  # ignores its own deadline
        return Attempt(SHIELD, delay=draw(st.sampled_from([0.001, 0.003, 0.006])))
    if kind == COOP:
        return Attempt(COOP, steps=draw(st.integers(1, 4)))
    return Attempt(HANG)


@st.composite
def _worker_attempts(
    draw: st.DrawFn,
    timeout: float | None,
    deterministic: bool,
    may_hang: bool,
    faulty: bool,
    executor: str,
) -> Attempt:
    """An attempt of a thread or process stage.

    A thread stage's handler runs in a worker thread: sync attempts there
    (``BLOCK`` blocks the thread, a sync ``HANG`` blocks it until the run is
    over), the others return a coroutine that the loop awaits (R11.2). A
    process stage's handler is a plain function in a worker process: only
    sync kinds, plus ``DIE`` (the worker exits, R11.6).
    """
    limit = 0.0 if timeout is None else timeout
    short = timeout is not None and timeout < LONG_TIMEOUT
    thread = executor == THREAD
    kinds = [OK, OK, OK, RAISE, RAISE, COOP, BLOCK] + ([SHIELD] if thread else [DIE])
    if short or may_hang:
        kinds += [HANG]
    if faulty:
        kinds += [RAISE] * 4
    if deterministic and short:
        kinds = [HANG, BLOCK] + ([SHIELD] if thread else [])  # all sure to time out
    kind = draw(st.sampled_from(kinds))
    sync = True if not thread else draw(st.booleans())
    if kind in (OK, RAISE):
        delay = 0.0 if sync else draw(_DELAYS)
        exc = draw(_EXC_NAMES) if kind == RAISE else "ValueError"
        return Attempt(kind, delay=delay, exc=exc, sync=sync)
    if kind == BLOCK:
        if short and (deterministic or draw(st.booleans())):
            # Overruns its deadline: the thread is abandoned, the worker killed.
            return Attempt(BLOCK, delay=limit + 0.02, sync=True)
        return Attempt(BLOCK, delay=draw(st.sampled_from([0.001, 0.002, 0.003])), sync=True)
    if kind == SHIELD:
        if short and (deterministic or draw(st.booleans())):
            return Attempt(SHIELD, delay=limit + 0.02)
        return Attempt(SHIELD, delay=draw(st.sampled_from([0.001, 0.003, 0.006])))
    if kind == COOP:
        return Attempt(COOP, steps=draw(st.integers(1, 4)), sync=sync)
    if kind == DIE:
        return Attempt(DIE, exc="WorkerLostError", sync=True)
    return Attempt(HANG, sync=sync)


@st.composite
def cases(
    draw: st.DrawFn,
    *,
    max_stages: int = 60,
    min_stages: int = 0,
    deterministic: bool = False,
    serial: bool | None = None,
    stops: tuple[str, ...] = (NO_STOP, CANCEL, PIPELINE_TIMEOUT),
    sources: tuple[str, ...] = (FROM_STAGE, RAISE_PCE, FROM_TASK, FROM_THREAD),
    all_cleanups: bool = False,
    slow_retries: bool = False,
    executors: tuple[str, ...] = DEFAULT_EXECUTORS,
) -> Case:
    """A random pipeline with random faults and a random stop.

    ``slow_retries`` makes most attempts fail and every retry wait 10-20 ms,
    so that stops often land while stages wait out a retry delay.
    ``deterministic`` restricts to cases whose terminal statuses no timing can
    change (what the reference model can predict): no pipeline timeout, no
    stop from another task or thread, and no retry delay while a stop can
    happen (serial runs with in-stage stops get zero delays).

    Each stage runs on an executor drawn from ``executors`` (R11; repeat one
    to weight it). ``PROCESS`` belongs in small cases only (a worker's
    start-up costs ~0.15 s and more under load).
    """
    parallel = draw(st.booleans()) if serial is None else not serial
    stop_kind = draw(st.sampled_from(stops))
    if deterministic:
        assert stop_kind in (NO_STOP, CANCEL)
        assert stop_kind == NO_STOP or not parallel, "only serial stops are deterministic"
    # A process stage's handler cannot call cancel() (R11.4), and the harness
    # counts only handlers that can towards an in-stage stop; the model counts
    # every attempt: no in-stage stops with process stages.
    assert (
        PROCESS not in executors
        or CANCEL not in stops
        or not set(sources)
        & {
            FROM_STAGE,
            RAISE_PCE,
        }
    )
    if stop_kind == CANCEL:
        source = draw(st.sampled_from(sources))
        in_stage = source in (FROM_STAGE, RAISE_PCE)
        low = 1 if in_stage else 0  # 0: as soon as the first attempt starts
        stop = Stop(
            kind=CANCEL,
            after=draw(st.integers(low, 6) | st.integers(low, 40)),  # mostly early
            source=source,
            reason=draw(st.sampled_from(USER_REASONS)),
            via_pipeline=draw(st.booleans()),
        )
    elif stop_kind == PIPELINE_TIMEOUT:
        stop = Stop(kind=PIPELINE_TIMEOUT, timeout=draw(st.sampled_from([0.005, 0.01, 0.02, 0.05])))
    else:
        stop = Stop()
    zero_delays = deterministic and not parallel  # R2.2 order needs no retry delays
    may_hang = stop_kind == PIPELINE_TIMEOUT  # a hang without a timeout needs a sure stop

    n = draw(st.one_of(st.integers(min_stages, 8), st.integers(min_stages, max_stages)))
    stage_timeout = draw(st.sampled_from([None] * 6 + [0.03]))
    hang_cleanups = 0
    stages: list[StageCase] = []
    for i in range(n):
        deps: list[int] = []
        if i:
            # Up to 3 earlier stages (so no cycle), biased to recent ones for
            # deep chains; the listed order is kept (R3.3).
            pick = st.one_of(st.integers(max(0, i - 4), i - 1), st.integers(0, i - 1))
            deps = list(dict.fromkeys(draw(st.lists(pick, max_size=3))))
        timeout = draw(st.sampled_from([None] * 6 + list(STAGE_TIMEOUTS)))
        effective = timeout if timeout is not None else stage_timeout
        executor = draw(st.sampled_from(executors))
        if deterministic and executor != INLINE and effective is not None and draw(st.booleans()):
            # Either every attempt overruns the short timeout, or a timeout
            # that no attempt comes near (see LONG_TIMEOUT).
            timeout = effective = LONG_TIMEOUT
        behaviour = draw(
            st.lists(
                attempts(
                    timeout=effective,
                    deterministic=deterministic,
                    may_hang=may_hang,
                    faulty=slow_retries,
                    executor=executor,
                ),
                min_size=1,
                max_size=4,
            )
        )
        retry = draw(st.one_of(st.none(), retry_cases(zero_delays=zero_delays, slow=slow_retries)))
        kinds = ["ok", "sync", "raise"] + (["hang"] if hang_cleanups < 2 else [])
        some = st.sampled_from(kinds)
        cleanup = draw(some if all_cleanups else st.none() | some)
        hang_cleanups += cleanup == "hang"
        stages.append(
            StageCase(
                sid=f"s{i}",
                deps=tuple(f"s{d}" for d in deps),
                attempts=tuple(behaviour),
                critical=draw(st.booleans()),
                timeout=timeout,
                retry=retry,
                cleanup=cleanup,
                executor=executor,
            )
        )
    order = draw(st.permutations(range(n))) if n else []
    untimed_hang = stage_timeout is None and any(
        a.kind == HANG for sc in stages if sc.timeout is None for a in sc.attempts
    )
    grace_choices: list[float | None] = [0.0, 0.001, 0.005, 0.02]
    if not untimed_hang:
        grace_choices.append(None)  # no limit: fine when everything ends on its own
    if (
        deterministic
        and stop.kind == CANCEL
        and stop.source == FROM_STAGE
        and any(sc.executor != INLINE for sc in stages)
    ):
        # A stage that calls cancel() from a worker thread and then returns
        # races the grace period: the stop reaches the loop apart from the
        # return, and a grace period that ends first makes the value too late
        # (R5.2). Deterministic only with no grace limit, or a long one (in a
        # serial run nothing else is running, so it costs no time).
        grace_choices = [None, LONG_GRACE]
    return Case(
        stages=tuple(stages[i] for i in order),
        continue_on_error=draw(st.booleans()),
        parallel=parallel,
        max_parallel=draw(st.integers(1, 8)),
        retry=draw(retry_cases(zero_delays=zero_delays, slow=slow_retries)),
        stage_timeout=stage_timeout,
        grace=draw(st.sampled_from(grace_choices)),
        # A plain-function cleanup runs in a worker thread (R11.9): leave room for
        # the hop on a loaded machine (a hanging one is async, on the loop).
        cleanup_timeout=draw(st.sampled_from([0.1, 0.2] if hang_cleanups else [0.5, None])),
        cleanup_on_cancel=draw(st.sampled_from([True, True, True, False])),
        collect_metrics=draw(st.booleans()),
        stop=stop,
        initial_input=draw(st.one_of(st.none(), st.integers(-3, 3), st.text("ab", max_size=3))),
    )


def on_threads(case: Case) -> Case:
    """``case`` with every stage moved to a worker thread whose attempts stay
    deterministic there: all of them, unless a short timeout applies, and
    then only stages whose every attempt overruns it (a hang, a long shield).
    An in-stage ``cancel()`` from a thread races a grace period (see
    ``cases``), so such a case gets a long one (in a serial run it changes no
    outcome)."""

    def movable(sc: StageCase) -> bool:
        timeout = case.timeout_of(sc)
        if timeout is None or timeout >= LONG_TIMEOUT:
            return True
        return all(a.kind == HANG or (a.kind == SHIELD and a.delay > timeout) for a in sc.attempts)

    stages = tuple(replace(sc, executor=THREAD) if movable(sc) else sc for sc in case.stages)
    grace = case.grace
    if case.stop.kind == CANCEL and case.stop.source == FROM_STAGE and grace is not None:
        grace = LONG_GRACE
    return replace(case, stages=stages, grace=grace)
