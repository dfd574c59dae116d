"""The context shared by the stages of one run.

It owns the run's signals (cancel and pause) so that stages, the pipeline
object and other threads all talk to one place; the run subscribes to them
through :class:`RunControl`. A signal from another thread changes the
context's state at once, under a lock, and reaches the run through a
:class:`~.handoff.LoopHandoff`, never by waiting for the loop (R5.1). A
context also works on its own, outside any run (for tests of a handler).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.lowlevel

from .._model.config import PipelineConfig
from .._model.enums import CancellationReason
from .._model.errors import PipelineCancelledException
from .._model.results import RESERVED_METRICS
from .handoff import LoopHandoff

if TYPE_CHECKING:
    from .._model.results import StageResult

__all__ = ["PipelineContext", "RunControl", "current_stage_metrics"]


#: The metrics dict of the stage whose handler is running in this task (or
#: in this worker thread, which runs in a copy of the task's context).
current_stage_metrics: ContextVar[dict[str, Any] | None] = ContextVar(
    "proxima_stage_metrics", default=None
)


class RunControl(Protocol):
    """What the run hears from a context; always called on the loop's thread."""

    def on_cancel(self, reason: CancellationReason) -> None: ...
    def on_pause(self) -> None: ...
    def on_resume(self) -> None: ...
    def wake(self) -> None: ...


class PipelineContext:
    """Data shared by the stages of one run, plus the run's cancel and pause
    signals.

    ``cancel()``, ``pause()`` and ``resume()`` may be called from a stage,
    from another task or from another thread, and return at once; the first
    cancel reason wins. Every method may be called from a worker thread
    (a ``def`` stage running in one). Each ``execute()`` starts from a fresh
    context.
    """

    def __init__(
        self,
        pipeline_id: str = "",
        config: PipelineConfig | None = None,
        *,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.pipeline_id: str = pipeline_id
        self.config: PipelineConfig = config if config is not None else PipelineConfig()
        self.data: dict[str, Any] = dict(data) if data else {}
        #: Metrics recorded outside any stage; they land in ``result.metadata["metrics"]``.
        self.metrics: dict[str, Any] = {}
        self._results: dict[str, StageResult] = {}
        self._cancel_reason: CancellationReason | None = None
        self._paused = False
        self._resume_event: anyio.Event | None = None
        self._control: RunControl | None = None
        self._handoff: LoopHandoff | None = None
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
        with self._lock:
            if self._cancel_reason is not None:
                return
            self._cancel_reason = reason
        self._deliver(self._cancelled, reason)

    def check_cancelled(self) -> None:
        """Raise :class:`PipelineCancelledException` if a stop was requested.

        A cooperative stage calls this between units of work (also from a
        worker thread); the stage then ends CANCELLED within the grace period
        instead of being interrupted.
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
        with self._lock:
            if self._paused:
                return
            self._paused = True
        self._deliver(self._paused_now)

    def resume(self) -> None:
        """Let held-back attempts start, and wake ``wait_if_paused()`` callers."""
        with self._lock:
            if not self._paused:
                return
            self._paused = False
        self._deliver(self._resumed_now)

    async def wait_if_paused(self) -> None:
        """Block while paused; return at once on resume or cancel.

        Also a cancellation point, so a loop that calls it stays interruptible.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        while self._paused and self._cancel_reason is None:
            if self._resume_event is None:
                if self._handoff is None:
                    with self._lock:
                        self._handoff = LoopHandoff(self._drain_now)
                self._resume_event = anyio.Event()
            await self._resume_event.wait()

    # -- internals: the run's side ---------------------------------------------
    def _attach(self, control: RunControl) -> None:
        """Bind to the running loop and subscribe the run. A signal that
        arrived before (from another thread, right after ``execute()``
        began) is delivered now: it is never lost."""
        with self._lock:
            self._handoff = LoopHandoff(control.wake)
            self._control = control
            reason, paused = self._cancel_reason, self._paused
        if paused:
            control.on_pause()
        if reason is not None:
            control.on_cancel(reason)

    def _detach(self) -> None:
        """The run is over: apply what is still queued, then stand alone."""
        with self._lock:
            handoff, self._handoff = self._handoff, None
            self._control = None
        if handoff is not None:
            handoff.drain()

    def _drain(self) -> None:
        """Apply signals from other threads (the run calls this on the loop)."""
        handoff = self._handoff
        if handoff is not None:
            handoff.drain()

    def _drain_now(self) -> None:
        # A standalone context's wake-up: nobody else would drain.
        self._drain()

    def _deliver(self, func: Callable[..., None], *args: Any) -> None:
        """Run ``func`` on the loop's thread now, or queue it for the loop."""
        with self._lock:
            handoff = self._handoff
        if handoff is None or handoff.on_loop_thread() or not handoff.send(func, *args):
            func(*args)

    def _wake_paused(self) -> None:
        event, self._resume_event = self._resume_event, None
        if event is not None:
            event.set()

    def _cancelled(self, reason: CancellationReason) -> None:
        self._wake_paused()
        if self._control is not None:
            self._control.on_cancel(reason)

    def _paused_now(self) -> None:
        if self._control is not None:
            self._control.on_pause()

    def _resumed_now(self) -> None:
        self._wake_paused()
        if self._control is not None:
            self._control.on_resume()

    def _cancel(self, reason: CancellationReason) -> CancellationReason:
        """The run's own stop: record ``reason`` unless one was given first;
        return the reason that stands."""
        with self._lock:
            standing = self._cancel_reason
            if standing is not None:
                return standing
            self._cancel_reason = reason
        self._wake_paused()
        return reason
