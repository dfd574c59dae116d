"""The end of a run: cleanup after a stop (R5.4), the result (R6.3, R7.1),
the store's last records (R13.2), RUN_FINISHED, then whatever must be
re-raised, only once the result is recorded (R5.6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from .._model.events import EventKind
from .._model.results import PipelineResult
from ..executors.base import ExecutorSession
from .sessions import still_running
from .stop import Origin

if TYPE_CHECKING:
    from .run import Run

__all__ = ["finish"]


async def finish(run: Run, sessions: Sequence[ExecutorSession]) -> PipelineResult:
    """Clean up, record and report the run; raise what must be raised."""
    stop = run.stop
    interrupted: BaseException | None = None
    if stop.origin is not None and run.config.cleanup_on_cancel:
        interrupted = await run.cleanup.after_stop(run.started)
        if interrupted is None:
            interrupted = await _cancellation_pending()
    if interrupted is not None:
        stop.begin(Origin.EXTERNAL)  # the caller's cancellation takes over (R5.6)
    durable = run.durable
    result = run.ledger.result(
        name=run.config.name,
        origin=stop.origin,
        start_wall=run.start_wall,
        metadata=_metadata(run, sessions),
        run_id=None if durable is None else durable.run_id,
    )
    if durable is not None:
        await durable.finish(result)
    run.result = result
    for stage_id, what in result.metadata.get("still_running", {}).items():
        run.emitter.emit(EventKind.WORK_LEFT_RUNNING, stage_id=stage_id, error=what)
    run.emitter.emit(
        EventKind.RUN_FINISHED,
        status=result.status,
        reason=result.cancellation_reason,
        duration_ms=result.duration_ms,
        pipeline_result=result,
    )
    fatal = stop.fatal or run.cleanup.fatal
    if fatal is not None:
        raise fatal
    if interrupted is not None:
        raise interrupted
    return result


def _metadata(run: Run, sessions: Sequence[ExecutorSession]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if run.stop.origin is Origin.TIMEOUT:
        metadata["pipeline_timeout_seconds"] = run.config.timeout.pipeline_timeout_seconds
    cleanup = run.cleanup
    if cleanup.log:
        metadata["cleanup"] = cleanup.log
    if cleanup.errors:
        metadata["cleanup_errors"] = cleanup.errors
    if run.ctx.metrics:
        metadata["metrics"] = dict(run.ctx.metrics)
    leftovers = still_running(sessions)
    if leftovers:
        metadata["still_running"] = leftovers
    return metadata


async def _cancellation_pending() -> BaseException | None:
    """The caller's cancellation, if it arrived while cleanup was shielded (R5.6)."""
    try:
        await anyio.lowlevel.checkpoint_if_cancelled()
    except anyio.get_cancelled_exc_class() as exc:
        return exc
    return None
