"""Small checks shared by the executors."""

from __future__ import annotations

from typing import Any

import attrs

from .._model.callables import is_async_callable

__all__ = ["is_async_callable", "max_workers_field"]


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
