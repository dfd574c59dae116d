"""``"inline"``: the handler is called on the event loop's thread (R11.2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs

from .base import ExecutorSession, StageCall

__all__ = ["InlineExecutor"]


@attrs.frozen
class InlineExecutor:
    """Call the handler on the event loop; the engine awaits what it returns.

    Right for ``async def`` handlers. A blocking plain function here blocks
    the whole loop: timers, other stages and the timeout itself wait for it.
    """

    def session(self) -> AbstractAsyncContextManager[ExecutorSession]:
        """Nothing to open: one stateless session."""
        return _open()


class _InlineSession:
    def call(self, call: StageCall) -> Any:
        """The handler's value, or the awaitable it returned (a plain method,
        not a coroutine: one object less per call, the engine awaits either)."""
        return call.handler(call.context, call.input)

    def still_running(self) -> dict[str, str]:
        """Nothing: a coroutine is cancelled with its attempt."""
        return {}


_SESSION = _InlineSession()


@asynccontextmanager
async def _open() -> AsyncIterator[ExecutorSession]:
    yield _SESSION
