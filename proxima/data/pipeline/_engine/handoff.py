"""Signals from other threads, handed to the event loop without waiting.

``pipeline.cancel()``, ``pause()`` and ``resume()`` may come from any thread
(R5.1). They must return at once and never deadlock, even while the loop's
thread is blocked waiting on the caller, so they never wait for the loop:
the caller appends the signal to an inbox and asks the loop to look at it
(``call_soon_threadsafe`` on asyncio and uvloop, ``run_sync_soon`` on trio:
both only enqueue a callback). On the loop, the callback wakes the run's
supervising task, which applies the signals in the order they were sent.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

import anyio.lowlevel

__all__ = ["LoopHandoff"]


class LoopHandoff:
    """A one-way, non-blocking channel from any thread to one event loop."""

    __slots__ = ("_inbox", "_loop_thread", "_schedule", "_wake")

    def __init__(self, wake: Callable[[], None]) -> None:
        """Bind to the running loop; ``wake()`` is called on it when signals wait."""
        native: Any = anyio.lowlevel.current_token().native_token
        # asyncio (and uvloop) loops have call_soon_threadsafe; trio's token
        # has run_sync_soon. Both only enqueue, whatever the loop is doing.
        self._schedule: Callable[[Callable[[], None]], object] = (
            getattr(native, "call_soon_threadsafe", None) or native.run_sync_soon
        )
        self._loop_thread = threading.get_ident()
        self._inbox: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = (
            collections.deque()
        )
        self._wake = wake

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def send(self, func: Callable[..., None], *args: Any) -> bool:
        """Queue ``func(*args)`` for the loop; False if the loop is gone."""
        self._inbox.append((func, args))
        try:
            self._schedule(self._wake)
        except RuntimeError:  # the loop is closed, or trio's run has finished
            return False
        return True

    def drain(self) -> None:
        """Apply the queued signals, oldest first (on the loop's thread)."""
        inbox = self._inbox
        while inbox:
            func, args = inbox.popleft()
            func(*args)
