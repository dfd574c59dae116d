"""The executors of a run: each stage's resolved, one session per executor.

Sessions are opened when ``execute()`` starts, before any stage runs, and
closed when it ends, shielded, whatever ended it (R11.8): a process pool or
a cluster an executor started for the run is released with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType
from typing import Any

import anyio

from .._model.config import PipelineConfig
from ..executors import resolve
from ..executors.base import ExecutorSession
from .state import StageState

__all__ = ["open_sessions", "still_running"]


async def open_sessions(
    states: Sequence[StageState], config: PipelineConfig, resources: AsyncExitStack
) -> list[ExecutorSession]:
    """Give every stage its session; ``resources`` closes them at the end."""
    by_spec: dict[tuple[Any, int], ExecutorSession] = {}
    by_executor: dict[int, ExecutorSession] = {}
    for state in states:
        stage = state.stage
        spec = stage.executor if stage.executor is not None else config.executor
        key = (spec if isinstance(spec, str) else id(spec), id(stage.handler))
        session = by_spec.get(key)
        if session is None:
            executor = resolve(spec, stage.handler)
            session = by_executor.get(id(executor))
            if session is None:
                session = await resources.enter_async_context(_Shielded(executor.session()))
                by_executor[id(executor)] = session
            by_spec[key] = session
        state.session = session
    return list(by_executor.values())


def still_running(sessions: Sequence[ExecutorSession]) -> dict[str, str]:
    """Stage id -> what of it may still run after ``execute()`` returns (R11.5)."""
    leftovers: dict[str, str] = {}
    for session in sessions:
        leftovers.update(session.still_running())
    return leftovers


class _Shielded:
    """An executor's session whose closing no cancellation can cut short."""

    __slots__ = ("_cm",)

    def __init__(self, cm: AbstractAsyncContextManager[ExecutorSession]) -> None:
        self._cm = cm

    async def __aenter__(self) -> ExecutorSession:
        return await self._cm.__aenter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        with anyio.CancelScope(shield=True):
            await self._cm.__aexit__(kind, exc, tb)
        return False
