"""Turning user objects into text without letting them break the run.

A handler's exception or result is user code: its ``__str__`` or
``__repr__`` may raise, recurse forever or return 50 MB. Every place the
library turns such an object into text (stage errors, logs, ``to_dict()``,
``summary()``, reprs) goes through :func:`describe` or :func:`safe_repr`, so
the text is always produced and never the reason a run fails (R8.5, R7.3).
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import Any

__all__ = ["describe", "safe_repr", "shorten", "text_of"]

#: Marks the end of a cut text; the total length follows it.
CUT = "..."


def _type_name(value: object) -> str:
    """The name of ``value``'s type; a metaclass cannot make this fail."""
    name = getattr(type(value), "__qualname__", None)
    return name if isinstance(name, str) else object.__repr__(type(value))


def _plain_str(exc: BaseException) -> str:
    """``str(exc)`` when it works, else just the type's name (no recursion)."""
    try:
        text = str(exc)
    except Exception:
        return _type_name(exc)
    return f"{_type_name(exc)}: {text}" if text else _type_name(exc)


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` (or ``"TypeName"`` for an empty message).

    If ``str(exc)`` raises, the text says so instead of raising:
    ``"TypeName (str() failed: OtherError: ...)"``.
    """
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception as failure:
        return f"{name} (str() failed: {_plain_str(failure)})"
    return f"{name}: {text}" if text else name


def shorten(text: str, limit: int | None) -> str:
    """``text`` cut to about ``limit`` characters, saying how long it was."""
    if limit is None or len(text) <= limit:
        return text
    return f"{text[: max(limit, 0)]}{CUT}[{len(text)} chars]"


# Ids of the objects being repr'd right now, per thread: a value met again
# while its own repr is being built is a cycle (also through a ``__repr__``
# of ours, such as StageResult's, that calls safe_repr on its fields).
_active = threading.local()


def _active_ids() -> set[int]:
    ids: set[int] | None = getattr(_active, "ids", None)
    if ids is None:
        ids = _active.ids = set()
    return ids


def safe_repr(value: Any, limit: int | None = 200) -> str:
    """``repr(value)`` cut to ``limit`` characters plus a marker (``None``: no cut).

    Never raises: a ``__repr__`` that raises gives ``<TypeName object
    (repr() failed: ...)>``, and a value met again inside its own repr gives
    ``<cycle: TypeName>``. Strings, bytes and built-in containers are read
    only as far as the cut, so the repr of a 50 MB result costs little; a
    cut text ends with ``...[N chars]`` (or bytes, items) giving the size of
    the whole value.
    """
    if limit is None:
        return _one_repr(value)
    limit = max(limit, 0)
    taken: list[str] = []
    size = 0
    chunks = _chunks(value, limit)
    try:
        for chunk in chunks:
            taken.append(chunk)
            size += len(chunk)
            if size > limit:
                return "".join(taken)[:limit] + CUT + _size_note(value, size)
    finally:
        chunks.close()
    return "".join(taken)


def _one_repr(value: Any) -> str:
    """``repr(value)`` whole, or a marker when it raises or meets a cycle."""
    ids = _active_ids()
    key = id(value)
    if key in ids:
        return f"<cycle: {_type_name(value)}>"
    ids.add(key)
    try:
        text = repr(value)
    except Exception as failure:
        return f"<{_type_name(value)} object (repr() failed: {_plain_str(failure)})>"
    finally:
        ids.discard(key)
    if not isinstance(text, str):  # pragma: no cover - repr() itself checks this
        return object.__repr__(value)
    return text


_OPEN_CLOSE: dict[type, tuple[str, str]] = {
    list: ("[", "]"),
    tuple: ("(", ")"),
    set: ("{", "}"),
    dict: ("{", "}"),
}
_UNITS: dict[type, str] = {str: "chars", bytes: "bytes", bytearray: "bytes"}


def _size_note(value: Any, shown: int) -> str:
    kind = type(value)
    if kind in _UNITS:
        return f"[{len(value)} {_UNITS[kind]}]"
    if kind in _OPEN_CLOSE:
        return f"[{len(value)} items]"
    return f"[{shown}+ chars]"


def text_of(value: object) -> str:
    """``str(value)``, or its safe repr when ``__str__`` raises (for
    exception messages built from caller-given values)."""
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:
        return safe_repr(value)


def _chunks(value: Any, limit: int) -> Generator[str, None, None]:
    """The pieces of ``value``'s builtin repr, produced lazily so the reader
    can stop at the cut: a container yields its opening bracket before its
    items, so even deep nesting stops after ``limit`` levels."""
    kind = type(value)
    if kind in _UNITS and len(value) > limit:
        yield repr(value[: limit + 1])
        return
    if kind not in _OPEN_CLOSE or not value:
        yield _one_repr(value)
        return
    ids = _active_ids()
    key = id(value)
    if key in ids:
        yield f"<cycle: {_type_name(value)}>"
        return
    ids.add(key)
    try:
        opening, closing = _OPEN_CLOSE[kind]
        yield opening
        items = value.items() if kind is dict else value
        for position, item in enumerate(items):
            if position:
                yield ", "
            if kind is dict:
                yield from _chunks(item[0], limit)
                yield ": "
                item = item[1]
            yield from _chunks(item, limit)
        if kind is tuple and len(value) == 1:
            yield ","
        yield closing
    except Exception as failure:  # an item's __eq__/__hash__ or iteration broke
        yield f"<{_type_name(value)} (repr() failed: {_plain_str(failure)})>"
    finally:
        ids.discard(key)
