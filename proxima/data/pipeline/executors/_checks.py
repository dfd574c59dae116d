"""Small checks shared by the executors."""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any

import attrs

__all__ = ["is_async_callable", "max_workers_field"]


def is_async_callable(handler: Any) -> bool:
    """``async def`` functions, also behind ``functools.partial``, and objects
    whose ``__call__`` is ``async def`` (R11.2). A plain function that
    returns a coroutine is not: it runs in a thread, and its coroutine is
    awaited on the loop."""
    while isinstance(handler, partial):
        handler = handler.func
    if inspect.iscoroutinefunction(handler):
        return True
    if inspect.isroutine(handler) or isinstance(handler, type):
        return False
    call = getattr(type(handler), "__call__", None)  # noqa: B004 - its kind is the question
    return call is not None and inspect.iscoroutinefunction(call)


def _check_max_workers(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    where = f"{type(instance).__name__}.{attribute.name}"
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where} must be an int >= 1 or None, got {value!r}")
    if value < 1:
        raise ValueError(f"{where} must be an int >= 1 or None, got {value!r}")


def max_workers_field() -> Any:
    """``max_workers``: ``None`` (the executor's default) or an int >= 1."""
    return attrs.field(default=None, validator=_check_max_workers)
