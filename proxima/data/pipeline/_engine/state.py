"""The live state of one stage during one run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._model.enums import StageStatus

if TYPE_CHECKING:
    import anyio

    from .._graph import Plan
    from .._model.config import PipelineConfig, RetryConfig
    from .._model.results import StageResult
    from .._model.stage import Stage
    from ..executors.base import ExecutorSession

__all__ = ["StageState"]

_PENDING = StageStatus.PENDING


class StageState:
    """What the engine knows about one stage while a run goes on.

    Slotted and plain: a run of 100 000 stages holds 100 000 of these.
    """

    __slots__ = (
        "attempt_log",
        "attempts",
        "end_wall",
        "final",
        "input",
        "key",
        "limits",
        "metrics",
        "position",
        "queue_wait",
        "ready_at",
        "retry",
        "retry_delay",
        "scope",
        "session",
        "stage",
        "start_wall",
        "status",
        "timeout",
        "waiting",
    )

    def __init__(
        self,
        position: int,
        stage: Stage,
        waiting: int,
        retry: RetryConfig,
        timeout: float | None,
        limits: tuple[str, ...],
    ) -> None:
        """One per stage, built by :meth:`StageState.for_plan`."""
        self.position = position
        self.stage = stage
        self.status = _PENDING
        #: Dependencies not yet COMPLETED (R2.4).
        self.waiting = waiting
        self.input: Any = None
        self.attempts = 0
        self.start_wall: float | None = None
        self.end_wall: float | None = None
        self.ready_at = 0.0
        self.queue_wait = 0.0
        self.retry_delay = 0.0
        self.attempt_log: list[dict[str, Any]] = []
        self.metrics: dict[str, Any] = {}
        #: The cancel scope of a retry delay in progress (a stop cancels it).
        self.scope: anyio.CancelScope | None = None
        self.final: StageResult | None = None
        self.retry = retry
        self.timeout = timeout
        #: The tags of this stage that have a limit (R12).
        self.limits = limits
        #: Where the handler runs: set when the run opens its executors.
        self.session: ExecutorSession | None = None
        #: The stage's store key (R13), when the run has a store.
        self.key: str | None = None

    @classmethod
    def for_plan(cls, plan: Plan, config: PipelineConfig) -> list[StageState]:
        """A state for every stage of ``plan``: the stage's own retry policy,
        timeout and limited tags, else the pipeline's."""
        retry = config.retry
        timeout = config.timeout.stage_timeout_seconds
        tag_limits = config.tag_limits
        states = []
        for position, (stage, deps) in enumerate(zip(plan.stages, plan.dependencies, strict=True)):
            own = stage.timeout_seconds
            limits = tuple(tag for tag in stage.tags if tag in tag_limits) if tag_limits else ()
            states.append(
                cls(
                    position,
                    stage,
                    len(deps),
                    stage.retry_config or retry,
                    timeout if own is None else own,
                    limits,
                )
            )
        return states
