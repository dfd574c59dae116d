"""attrs validators shared by the configuration and stage classes.

Each error names the class, the field and the rejected value, so a typo in a
config file is found from the message alone.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

__all__ = [
    "EXECUTOR_NAMES",
    "at_least",
    "boolean",
    "delay",
    "executor",
    "non_empty_str",
    "optional_callable",
    "tag_limits",
    "timeout",
]


def _where(instance: Any, attribute: attrs.Attribute[Any]) -> str:
    return f"{type(instance).__name__}.{attribute.name}"


def _check_number(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{_where(instance, attribute)} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{_where(instance, attribute)} must be finite, got {value!r}")
    return float(value)


def timeout(*, allow_zero: bool = False) -> Any:
    """``None`` (no limit) or a finite number > 0 (>= 0 with ``allow_zero``)."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        number = _check_number(instance, attribute, value)
        if number < 0 or (number == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(
                f"{_where(instance, attribute)} must be None (no limit) or {bound}, got {value!r}"
            )

    return check


def delay(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A finite number of seconds >= 0."""
    if _check_number(instance, attribute, value) < 0:
        raise ValueError(f"{_where(instance, attribute)} must be >= 0, got {value!r}")


def at_least(minimum: float, *, integer: bool = False) -> Any:
    """A finite number (an ``int`` with ``integer``) >= ``minimum``."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if integer and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{_where(instance, attribute)} must be an int, got {value!r}")
        if _check_number(instance, attribute, value) < minimum:
            raise ValueError(f"{_where(instance, attribute)} must be >= {minimum:g}, got {value!r}")

    return check


def boolean(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{_where(instance, attribute)} must be a bool, got {value!r}")


def non_empty_str(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{_where(instance, attribute)} must be a str, got {value!r}")
    if not value.strip():
        raise ValueError(f"{_where(instance, attribute)} must be a non-empty string, got {value!r}")


def optional_callable(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{_where(instance, attribute)} must be callable or None, got {value!r}")


#: The executors that can be named by a string (R11.1).
EXECUTOR_NAMES = frozenset({"auto", "inline", "thread", "process"})


def executor(*, optional: bool) -> Any:
    """One of :data:`EXECUTOR_NAMES` or an object with the ``Executor``
    protocol's ``session`` method (``None`` too, with ``optional``)."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and optional:
            return
        if isinstance(value, str):
            if value not in EXECUTOR_NAMES:
                names = ", ".join(repr(n) for n in sorted(EXECUTOR_NAMES))
                raise ValueError(
                    f"{_where(instance, attribute)} must be one of {names} or an Executor, "
                    f"got {value!r}"
                )
            return
        if not callable(getattr(value, "session", None)):
            raise TypeError(
                f"{_where(instance, attribute)} must be an executor name or an object "
                f"implementing the Executor protocol, got {value!r}"
            )

    return check


def tag_limits(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A mapping of non-empty tag -> int >= 1 (R12.1)."""
    where = _where(instance, attribute)
    for tag, limit in value.items():
        if not isinstance(tag, str) or not tag.strip():
            raise ValueError(f"{where}: a tag must be a non-empty string, got {tag!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"{where}[{tag!r}] must be an int >= 1, got {limit!r}")
