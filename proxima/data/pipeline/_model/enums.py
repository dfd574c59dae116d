"""The four enumerations of the public API.

Member names and values are part of the documented contract: ``StageStatus``
and ``PipelineStatus`` use ``auto()`` values in the documented order, the
other two use their lower-case string values.
"""

from __future__ import annotations

from enum import Enum, auto

__all__ = ["CancellationReason", "PipelineStatus", "RetryStrategy", "StageStatus"]


class StageStatus(Enum):
    """Where one stage is in its life (see the state diagram in the docs)."""

    PENDING = auto()
    QUEUED = auto()
    RUNNING = auto()
    COMPLETED = auto()
    FAILED = auto()
    CANCELLED = auto()
    SKIPPED = auto()
    RETRYING = auto()
    TIMED_OUT = auto()

    @property
    def is_terminal(self) -> bool:
        """True for the five states a stage never leaves."""
        return self in _TERMINAL_STAGE_STATES


_TERMINAL_STAGE_STATES = frozenset(
    {
        StageStatus.COMPLETED,
        StageStatus.FAILED,
        StageStatus.CANCELLED,
        StageStatus.SKIPPED,
        StageStatus.TIMED_OUT,
    }
)


class PipelineStatus(Enum):
    """Where a whole pipeline run is."""

    IDLE = auto()
    RUNNING = auto()
    PAUSED = auto()
    COMPLETED = auto()
    FAILED = auto()
    CANCELLED = auto()
    PARTIALLY_COMPLETED = auto()


class RetryStrategy(Enum):
    """How the delay between attempts grows (see ``RetryConfig.get_delay``)."""

    NONE = "none"
    IMMEDIATE = "immediate"
    LINEAR_BACKOFF = "linear_backoff"
    EXPONENTIAL_BACKOFF = "exponential_backoff"
    CONSTANT = "constant"


class CancellationReason(Enum):
    """Why a run (or a stage) was stopped early.

    The library itself sets USER_REQUESTED (the default of ``cancel()``),
    TIMEOUT, ERROR and EXTERNAL; DEPENDENCY_FAILED and RESOURCE_LIMIT are
    there for callers' own ``cancel(reason)``.
    """

    USER_REQUESTED = "user_requested"
    TIMEOUT = "timeout"
    DEPENDENCY_FAILED = "dependency_failed"
    RESOURCE_LIMIT = "resource_limit"
    ERROR = "error"
    EXTERNAL = "external"
