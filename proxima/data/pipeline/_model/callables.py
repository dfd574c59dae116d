"""What kind of callable a handler is, seen through partials and ``__call__``.

One owner for the question "is this handler async?": the ``"auto"``
executor (R11.2) and cleanup handlers (R11.9) both ask it.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

__all__ = ["is_async_callable"]


def is_async_callable(handler: Any) -> bool:
    """``async def`` functions, also behind ``functools.partial``, and objects
    whose ``__call__`` is ``async def`` (R11.2). A plain function that
    returns a coroutine is not: it runs in a thread, and its coroutine is
    awaited on the loop."""
    while isinstance(handler, functools.partial):
        handler = handler.func
    if inspect.iscoroutinefunction(handler):
        return True
    if inspect.isroutine(handler) or isinstance(handler, type):
        return False
    call = getattr(type(handler), "__call__", None)  # noqa: B004 - its kind is the question
    return call is not None and inspect.iscoroutinefunction(call)
