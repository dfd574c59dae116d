"""Configuration classes: frozen attrs classes validated on construction.

They are immutable so a validated value stays valid; derive a changed copy
with :func:`attrs.evolve` (which re-runs the validators).
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from . import validators as v
from .enums import RetryStrategy
from .errors import PipelineCancelledException

__all__ = ["PipelineConfig", "RetryConfig", "TimeoutConfig"]


def _to_strategy(value: Any) -> RetryStrategy:
    if isinstance(value, RetryStrategy):
        return value
    try:
        return RetryStrategy(value)
    except ValueError:
        choices = ", ".join(repr(s.value) for s in RetryStrategy)
        raise ValueError(
            f"RetryConfig.strategy must be a RetryStrategy or one of {choices}, got {value!r}"
        ) from None


def _to_exception_types(value: Any) -> tuple[type[BaseException], ...] | None:
    """A tuple of exception types, or ``None`` (any ``Exception``).

    A type that could never match a retried exception is refused rather
    than silently never applying (R4.3): a ``BaseException`` that is not an
    ``Exception`` (``KeyboardInterrupt``, ``SystemExit``, the backends'
    cancellation) and ``PipelineCancelledException`` (a stop, R5.3).
    ``BaseException`` itself is accepted: it matches every ``Exception``.
    """
    if value is None:
        return None
    field = "RetryConfig.retry_on_exceptions"
    if isinstance(value, (str, bytes)):
        raise TypeError(
            f"{field} must be None or a tuple of exception types, got the string {value!r} "
            "(pass the type itself, e.g. (ValueError,))"
        )
    items: Iterable[Any] = (value,) if isinstance(value, type) else value
    try:
        found = tuple(items)
    except TypeError:
        raise TypeError(
            f"{field} must be None or a tuple of exception types, got {value!r}"
        ) from None
    for item in found:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(f"{field} must hold exception types, got {item!r} in {value!r}")
        if not (issubclass(item, Exception) or issubclass(Exception, item)):
            raise TypeError(
                f"{field} can only hold Exception types: {item.__name__} is not an "
                "Exception, and such exceptions (cancellation, KeyboardInterrupt, "
                f"SystemExit) are never retried; got {value!r}"
            )
        if issubclass(item, PipelineCancelledException):
            raise TypeError(
                f"{field} cannot hold {item.__name__}: a stage raising it stops the run "
                f"and is never retried, got {value!r}"
            )
    return found


_GROWING = frozenset({RetryStrategy.LINEAR_BACKOFF, RetryStrategy.EXPONENTIAL_BACKOFF})


@attrs.frozen
class RetryConfig:
    """How often and how patiently a failed stage is tried again.

    ``max_retries`` counts retries, so a stage runs at most ``1 + max_retries``
    times; ``RetryStrategy.NONE`` means one attempt whatever ``max_retries``
    says. ``retry_on_exceptions=None`` retries any ``Exception``; a tuple
    retries only those types (and subclasses). Cancellation and
    ``KeyboardInterrupt`` are never retried, nor is
    ``PipelineCancelledException``. Timeouts are governed by
    ``retry_on_timeout`` alone.
    """

    #: Retries after the first attempt: at most ``1 + max_retries`` attempts.
    max_retries: int = attrs.field(default=3, validator=v.at_least(0, integer=True))
    #: How the delay grows between attempts (a :class:`RetryStrategy` or its value).
    strategy: RetryStrategy = attrs.field(
        default=RetryStrategy.EXPONENTIAL_BACKOFF, converter=_to_strategy
    )
    #: Delay before the first retry, in seconds.
    initial_delay_seconds: float = attrs.field(default=1.0, validator=v.delay)
    #: Cap on every delay, in seconds.
    max_delay_seconds: float = attrs.field(default=60.0, validator=v.delay)
    #: Multiplier per retry for EXPONENTIAL_BACKOFF (>= 1).
    backoff_factor: float = attrs.field(default=2.0, validator=v.at_least(1))
    #: Exception types worth a retry (subclasses included); ``None`` = any ``Exception``.
    retry_on_exceptions: tuple[type[BaseException], ...] | None = attrs.field(
        default=None, converter=_to_exception_types
    )
    #: Whether an attempt that timed out is retried.
    retry_on_timeout: bool = attrs.field(default=True, validator=v.boolean)

    @property
    def max_attempts(self) -> int:
        """The most attempts a stage gets under this config."""
        return 1 if self.strategy is RetryStrategy.NONE else 1 + self.max_retries

    def get_delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (counted from 0).

        CONSTANT waits ``initial``; LINEAR_BACKOFF ``initial * (attempt + 1)``;
        EXPONENTIAL_BACKOFF ``initial * backoff_factor ** attempt``; IMMEDIATE
        and NONE wait 0. Every delay is capped at ``max_delay_seconds``.
        """
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
            raise ValueError(f"attempt must be an int >= 0, got {attempt!r}")
        strategy = self.strategy
        initial = float(self.initial_delay_seconds)
        cap = float(self.max_delay_seconds)
        if strategy is RetryStrategy.CONSTANT:
            delay = initial
        elif strategy in _GROWING and initial > 0:
            # Float arithmetic: a huge ``attempt`` overflows at once instead
            # of building a huge int; past any float is past the cap too.
            try:
                if strategy is RetryStrategy.LINEAR_BACKOFF:
                    delay = initial * (attempt + 1.0)
                else:
                    delay = initial * float(self.backoff_factor) ** attempt
            except OverflowError:
                delay = cap
        else:
            delay = 0.0  # IMMEDIATE, NONE, or a zero base that grows to nothing
        return min(delay, cap)

    def should_retry(self, exc: BaseException | None, *, attempt: int) -> bool:
        """Whether a failed attempt number ``attempt`` (from 1) gets a retry.

        ``exc=None`` means the attempt timed out.
        """
        if attempt >= self.max_attempts:
            return False
        if exc is None:
            return self.retry_on_timeout
        if not isinstance(exc, Exception) or isinstance(exc, PipelineCancelledException):
            return False
        wanted = self.retry_on_exceptions
        return wanted is None or isinstance(exc, wanted)


@attrs.frozen
class TimeoutConfig:
    """Time limits. ``None`` means no limit; numbers must be finite and > 0,
    except that the grace period and the cleanup timeout may be 0 (cancel at
    once; give cleanup no time).

    The stage timeout applies to each attempt separately; the pipeline timeout
    runs from the start of ``execute()``, pauses included.
    """

    #: Limit for each attempt of a stage, unless the stage sets its own.
    stage_timeout_seconds: float | None = attrs.field(default=300.0, validator=v.timeout())
    #: Limit for the whole run, from the start of ``execute()``, pauses included.
    pipeline_timeout_seconds: float | None = attrs.field(default=3600.0, validator=v.timeout())
    #: Limit for each cleanup handler after a stop.
    #: 0 gives cleanup no time: a cleanup is cancelled at its first await.
    cleanup_timeout_seconds: float | None = attrs.field(
        default=30.0, validator=v.timeout(allow_zero=True)
    )
    #: How long running stages may finish on their own after a stop; 0 = cancel at once.
    grace_period_seconds: float | None = attrs.field(
        default=5.0, validator=v.timeout(allow_zero=True)
    )


def _to_tag_limits(value: Any) -> Mapping[str, int]:
    if value is None:
        return types.MappingProxyType({})
    if not isinstance(value, Mapping):
        raise TypeError(f"PipelineConfig.tag_limits must be a mapping of tag -> int, got {value!r}")
    return types.MappingProxyType(dict(value))


@attrs.frozen
class PipelineConfig:
    """Everything about a pipeline that is not its stages.

    ``continue_on_error=True`` is keep-going mode: a failed stage only skips
    its dependents. ``parallel_stages=False`` runs one stage at a time, in
    earliest-added topological order.
    """

    #: Shown in results, logs and events.
    name: str = attrs.field(default="pipeline", validator=v.non_empty_str)
    #: Default retry policy of every stage.
    retry: RetryConfig = attrs.field(
        factory=RetryConfig, validator=attrs.validators.instance_of(RetryConfig)
    )
    #: Time limits.
    timeout: TimeoutConfig = attrs.field(
        factory=TimeoutConfig, validator=attrs.validators.instance_of(TimeoutConfig)
    )
    #: Keep-going mode: a failure only skips its dependents, never stops the run.
    continue_on_error: bool = attrs.field(default=False, validator=v.boolean)
    #: Run independent stages concurrently; False = one at a time.
    parallel_stages: bool = attrs.field(default=True, validator=v.boolean)
    #: Most attempts running at once (with ``parallel_stages``).
    max_parallel: int = attrs.field(default=4, validator=v.at_least(1, integer=True))
    #: Record timings and attempts in each ``StageResult.metrics``.
    collect_metrics: bool = attrs.field(default=True, validator=v.boolean)
    #: After a stop, run the cleanup handlers of stages that started.
    cleanup_on_cancel: bool = attrs.field(default=True, validator=v.boolean)
    #: Where stages that name no executor run (R11): ``"auto"`` runs ``async def``
    #: handlers on the event loop and other callables in a worker thread.
    executor: Any = attrs.field(default="auto", validator=v.executor(optional=False))
    #: Tag -> most attempts of stages carrying that tag running at once (R12).
    tag_limits: Mapping[str, int] = attrs.field(
        factory=dict, converter=_to_tag_limits, validator=v.tag_limits
    )

    @property
    def concurrency_limit(self) -> int:
        """How many attempts may run at once under this config."""
        return self.max_parallel if self.parallel_stages else 1
