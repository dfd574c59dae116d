"""The ``proxima`` command line (R14): ``run``, ``graph``, ``validate``,
``runs``, ``show``, ``report``.

Needs the optional extra ``proxima[cli]`` (cyclopts and rich). Importing this
package is cheap: :func:`main` loads the application, and each command loads
the pipeline library, anyio and the user's module only when it runs, so that
``proxima --help`` answers quickly.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cyclopts import App

__all__ = ["main"]


def main(argv: Sequence[str] | None = None, *, prog: str = "proxima") -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``) and
    return the exit status.

    A usage or validation error prints one line on stderr and returns 2;
    Ctrl-C outside a run (while a module imports, say) prints one line and
    returns 130; neither prints a traceback.
    """
    from .errors import EXIT_USAGE, UsageError

    _ignore_ctrl_c_at_exit()
    try:
        app, cyclopts_error = _load_app(prog)
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    tokens = list(sys.argv[1:] if argv is None else argv)
    try:
        status = app(tokens, exit_on_error=False, print_error=False)
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except cyclopts_error as exc:
        _error(f"{exc} (see {prog} --help)")
        return EXIT_USAGE
    except KeyboardInterrupt:
        # A terminal has just echoed "^C" without a newline.
        start = "\n" if sys.stderr.isatty() else ""
        print(f"{start}Ctrl-C: stopped.", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:
        # The reader went away (`proxima runs | head`): say nothing more.
        _silence_stdout()
        return 1
    return status if isinstance(status, int) else 0


def _ignore_ctrl_c_at_exit() -> None:
    """Ignore SIGINT once the interpreter shuts down.

    After the ``atexit`` callbacks Python puts back the default action of a
    signal that has a Python handler, so a Ctrl-C in the last milliseconds
    (while modules are torn down) would kill the process by SIGINT; a signal
    ignored by then stays ignored. Registered once; it acts at exit only.
    """
    import atexit

    atexit.unregister(_ignore_sigint)  # once, however often main() runs
    atexit.register(_ignore_sigint)


def _ignore_sigint() -> None:
    import signal

    with contextlib.suppress(ValueError):  # not the main thread: nothing to do
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _load_app(prog: str) -> tuple[App, type[Exception]]:
    from .errors import UsageError

    try:
        from cyclopts import CycloptsError
    except ImportError:
        raise UsageError("the command line needs cyclopts: pip install 'proxima[cli]'") from None
    from . import app as app_module

    app_module.PROG[0] = prog
    return app_module.app, CycloptsError


def _silence_stdout() -> None:
    """Point stdout at devnull so that the interpreter's final flush does not
    fail again (the recipe of the `signal` module's documentation)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _error(message: str) -> None:
    print(f"proxima: error: {message}", file=sys.stderr, flush=True)
