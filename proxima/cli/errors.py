"""The one error type of the command line: a message for the user, exit status 2.

Everything the user can get wrong (a bad target, a module that fails to
import, invalid JSON, an invalid graph, an unknown run id) becomes a
:class:`UsageError`; ``main()`` prints its message on one line of stderr,
without a traceback, and exits 2 (R14.2).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["EXIT_USAGE", "UsageError", "describe_exception"]

#: The exit status of a usage or validation error (R14.2), as argparse uses.
EXIT_USAGE = 2


class UsageError(Exception):
    """Something the user can fix; ``str()`` is the whole message."""


def describe_exception(exc: BaseException, prefer_file: str | None = None) -> str:
    """``exc`` on one line: ``file:line: Type: message``.

    The place is the innermost frame in ``prefer_file`` (the user's module)
    when there is one, else the innermost frame: enough to find the bug
    without a traceback. A ``SyntaxError`` already names its place.
    """
    import traceback

    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, SyntaxError):
        return text
    frames = list(traceback.extract_tb(exc.__traceback__))
    if prefer_file is not None:
        wanted = _same_file(prefer_file)
        mine = [f for f in frames if _same_file(f.filename) == wanted]
        frames = mine or frames
    if not frames:
        return text
    frame = frames[-1]
    return f"{_short(frame.filename)}:{frame.lineno}: {text}"


def _same_file(name: str) -> str:
    try:
        return str(Path(name).resolve())
    except OSError:  # pragma: no cover - an unreadable path stays as it is
        return name


def _short(name: str) -> str:
    """A path relative to the working directory when it is under it."""
    try:
        return str(Path(name).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return name
