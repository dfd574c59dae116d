"""The context shared by the stages of one run.

It owns the run's signals (cancel and pause) so that stages, the pipeline
object and other threads all talk to one place; the scheduler subscribes to
them through :class:`RunControl`. A context also works on its own, outside
any run (for tests of a single handler).
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.from_thread
import anyio.lowlevel

from .._model.config import PipelineConfig
from .._model.enums import CancellationReason
from .._model.errors import PipelineCancelledException

if TYPE_CHECKING:
    from .._model.results import StageResult

__all__ = ["RESERVED_METRICS", "PipelineContext", "RunControl", "current_stage_metrics"]

#: Metric names the scheduler fills in itself (R7.6).
RESERVED_METRICS = frozenset({"queue_wait_ms", "retry_delay_ms", "attempts"})

#: The metrics dict of the stage whose handler is running in this task.
current_stage_metrics: ContextVar[dict[str, Any] | None] = ContextVar(
    "proxima_stage_metrics", default=None
)


class RunControl(Protocol):
    """What the scheduler hears from a context. Always called on the loop's
    thread."""

    def on_cancel(self, reason: CancellationReason) -> None: ...
    def on_pause(self) -> None: ...
    def on_resume(self) -> None: ...


class PipelineContext:
    """Data shared by the stages of one run, plus the run's cancel and pause
    signals.

    ``cancel()``, ``pause()`` and ``resume()`` may be called from a stage,
    from another task or from another thread; the first cancel reason wins.
    Each ``execute()`` starts from a fresh context.
    """

    def __init__(
        self,
        pipeline_id: str = "",
        config: PipelineConfig | None = None,
        *,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.pipeline_id = pipeline_id
        self.config = config if config is not None else PipelineConfig()
        self.data: dict[str, Any] = dict(data) if data else {}
        #: Metrics recorded outside any stage; they land in ``result.metadata["metrics"]``.
        self.metrics: dict[str, Any] = {}
        self._results: dict[str, StageResult] = {}
        self._cancel_reason: CancellationReason | None = None
        self._paused = False
        self._resume_event: anyio.Event | None = None
        self._control: RunControl | None = None
        self._loop_thread: int | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._lock = threading.Lock()

    # -- shared data -------------------------------------------------------
    def set(self, key: str, value: Any) -> None:
        """Store ``value`` for later stages (and for the caller after the run)."""
        self.data[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key`` with :meth:`set`, else ``default``."""
        return self.data.get(key, default)

    def get_stage_result(self, stage_id: str) -> StageResult | None:
        """The :class:`StageResult` of a stage that has finished, else ``None``."""
        return self._results.get(stage_id)

    def record_metric(self, name: str, value: Any) -> None:
        """Add ``name: value`` to the calling stage's ``StageResult.metrics``.

        Called outside a stage handler, it lands in the run's
        ``result.metadata["metrics"]``. The names the library fills in itself
        (``queue_wait_ms``, ``retry_delay_ms``, ``attempts``) are refused.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"metric name must be a non-empty str, got {name!r}")
        if name in RESERVED_METRICS:
            raise ValueError(f"metric name {name!r} is reserved for the library's own metrics")
        target = current_stage_metrics.get()
        (self.metrics if target is None else target)[name] = value

    # -- cancellation --------------------------------------------------------
    @property
    def is_cancelled(self) -> bool:
        """True once a stop was requested; cooperative stages check it between
        units of work."""
        return self._cancel_reason is not None

    @property
    def cancellation_reason(self) -> CancellationReason | None:
        """The first reason given to ``cancel()``, or ``None``."""
        return self._cancel_reason

    def cancel(self, reason: CancellationReason = CancellationReason.USER_REQUESTED) -> None:
        """Request a stop of the run. Idempotent: later reasons are ignored."""
        if not isinstance(reason, CancellationReason):
            raise TypeError(f"reason must be a CancellationReason, got {reason!r}")
        self._on_loop(self._cancel, reason)

    def check_cancelled(self) -> None:
        """Raise :class:`PipelineCancelledException` if a stop was requested.

        A cooperative stage calls this between units of work; the stage then
        ends CANCELLED within the grace period instead of being interrupted.
        """
        reason = self._cancel_reason
        if reason is not None:
            raise PipelineCancelledException(reason)

    # -- pause -----------------------------------------------------------------
    @property
    def is_paused(self) -> bool:
        """True while the run is paused."""
        return self._paused

    def pause(self) -> None:
        """Hold back new attempts until :meth:`resume`; running ones go on."""
        self._on_loop(self._pause)

    def resume(self) -> None:
        """Let held-back attempts start, and wake ``wait_if_paused()`` callers."""
        self._on_loop(self._resume)

    async def wait_if_paused(self) -> None:
        """Block while paused; return at once on resume or cancel.

        Also a cancellation point, so a loop that calls it stays interruptible.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        while self._paused and self._cancel_reason is None:
            if self._resume_event is None:
                self._bind_to_current_loop()
                self._resume_event = anyio.Event()
            await self._resume_event.wait()

    # -- internals -------------------------------------------------------------
    def _attach(self, control: RunControl | None) -> None:
        """Bind to the running loop and (un)subscribe the scheduler."""
        self._control = control
        if control is not None:
            self._bind_to_current_loop()

    def _bind_to_current_loop(self) -> None:
        self._loop_thread = threading.get_ident()
        self._token = anyio.lowlevel.current_token()

    def _on_loop(self, func: Any, *args: Any) -> None:
        """Run ``func`` on the loop's thread (signals touch anyio objects)."""
        token = self._token
        if token is None or threading.get_ident() == self._loop_thread:
            func(*args)
            return
        try:
            anyio.from_thread.run_sync(func, *args, token=token)
        except RuntimeError:
            # The loop is gone: the run is over, only record the request.
            with self._lock:
                func(*args)

    def _wake_paused(self) -> None:
        event, self._resume_event = self._resume_event, None
        if event is not None:
            event.set()

    def _cancel(self, reason: CancellationReason) -> None:
        if self._cancel_reason is not None:
            return
        self._cancel_reason = reason
        self._wake_paused()
        if self._control is not None:
            self._control.on_cancel(reason)

    def _pause(self) -> None:
        if self._paused:
            return
        self._paused = True
        if self._control is not None:
            self._control.on_pause()

    def _resume(self) -> None:
        if not self._paused:
            return
        self._paused = False
        self._wake_paused()
        if self._control is not None:
            self._control.on_resume()
