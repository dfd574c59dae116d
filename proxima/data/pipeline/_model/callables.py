"""What kind of callable a handler is, seen through partials and ``__call__``."""

from __future__ import annotations

import functools
import inspect
from typing import Any

__all__ = ["is_async_callable", "unwrap_callable"]


def unwrap_callable(func: Any) -> Any:
    """The function behind ``functools.partial`` layers, or an object's ``__call__``."""
    while isinstance(func, functools.partial):
        func = func.func
    if not inspect.isfunction(func) and not inspect.ismethod(func):
        call = getattr(type(func), "__call__", None)
        if call is not None and not isinstance(func, type):
            return call
    return func


def is_async_callable(func: Any) -> bool:
    """True for an ``async def`` function, a partial of one, or an object
    whose ``__call__`` is ``async def`` (R11.2's rule for ``"auto"``)."""
    return inspect.iscoroutinefunction(unwrap_callable(func))
