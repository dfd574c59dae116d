"""Generated pipelines: a plain-data description of a case, and Hypothesis
strategies that build them.

A :class:`Case` is pure data (frozen dataclasses), so the same case can be
run on several backends, fed to the reference model and printed by
Hypothesis as a readable reproduction. ``harness.build_pipeline`` turns it
into a real :class:`~proxima.data.pipeline.Pipeline`.

Timing is kept tiny: handler delays of 0-3 ms, retry delays of 0-3 ms, stage
timeouts of 20-40 ms (only on stages that need one) and pipeline timeouts of
5-50 ms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from proxima.data.pipeline import CancellationReason, RetryStrategy


class StageError(Exception):
    """A test-only exception type (not a builtin)."""


#: The exceptions a stage may raise, by name (names keep cases printable).
EXCEPTIONS: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "KeyError": KeyError,
    "ConnectionError": ConnectionError,  # an OSError
    "StageError": StageError,
}

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

# Attempt kinds.
OK = "ok"  # sleep `delay`, return a value derived from the input
RAISE = "raise"  # sleep `delay`, raise EXCEPTIONS[exc]
HANG = "hang"  # wait until cancelled (exceeds its timeout)
SHIELD = "shield"  # ignore cancellation for `delay` (shielded), checkpoint, return
COOP = "coop"  # `steps` x (ctx.check_cancelled(); sleep 1 ms), then return

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


@dataclass(frozen=True)
class Attempt:
    """What one attempt of a handler does."""

    kind: str
    delay: float = 0.0
    exc: str = "ValueError"
    sync: bool = False  # run inline in a plain function (no await at all)
    steps: int = 0

    def __repr__(self) -> str:
        bits = [self.kind]
        if self.kind == RAISE:
            bits.append(self.exc)
        if self.kind in (OK, RAISE, SHIELD) and self.delay:
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
        return issubclass(EXCEPTIONS[exc_name], wanted)

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
) -> Attempt:
    """One attempt's behaviour.

    ``deterministic`` keeps to behaviours whose outcome no scheduling noise
    can change: on a stage with a timeout only instant (sync) attempts,
    attempts that hang until the timeout, or shields well past it.
    """
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
) -> Case:
    """A random pipeline with random faults and a random stop.

    ``slow_retries`` makes most attempts fail and every retry wait 10-20 ms,
    so that stops often land while stages wait out a retry delay.
    ``deterministic`` restricts to cases whose terminal statuses no timing can
    change (what the reference model can predict): no pipeline timeout, no
    stop from another task or thread, and no retry delay while a stop can
    happen (serial runs with in-stage stops get zero delays).
    """
    parallel = draw(st.booleans()) if serial is None else not serial
    stop_kind = draw(st.sampled_from(stops))
    if deterministic:
        assert stop_kind in (NO_STOP, CANCEL)
        assert stop_kind == NO_STOP or not parallel, "only serial stops are deterministic"
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
        behaviour = draw(
            st.lists(
                attempts(
                    timeout=effective,
                    deterministic=deterministic,
                    may_hang=may_hang,
                    faulty=slow_retries,
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
            )
        )
    order = draw(st.permutations(range(n))) if n else []
    untimed_hang = stage_timeout is None and any(
        a.kind == HANG for sc in stages if sc.timeout is None for a in sc.attempts
    )
    grace_choices: list[float | None] = [0.0, 0.001, 0.005, 0.02]
    if not untimed_hang:
        grace_choices.append(None)  # no limit: fine when everything ends on its own
    return Case(
        stages=tuple(stages[i] for i in order),
        continue_on_error=draw(st.booleans()),
        parallel=parallel,
        max_parallel=draw(st.integers(1, 8)),
        retry=draw(retry_cases(zero_delays=zero_delays, slow=slow_retries)),
        stage_timeout=stage_timeout,
        grace=draw(st.sampled_from(grace_choices)),
        # A plain-function cleanup runs in a worker thread (R11.9): leave room for
        # the hop on a loaded machine.
        cleanup_timeout=draw(st.sampled_from([0.1, 0.2] if hang_cleanups else [0.5, None])),
        cleanup_on_cancel=draw(st.sampled_from([True, True, True, False])),
        collect_metrics=draw(st.booleans()),
        stop=stop,
        initial_input=draw(st.one_of(st.none(), st.integers(-3, 3), st.text("ab", max_size=3))),
    )
