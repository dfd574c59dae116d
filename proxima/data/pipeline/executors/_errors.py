"""What an executor raises when the work could not be run where it was sent.

Both are ordinary ``Exception`` subclasses, so the attempt fails (and is
retried per the retry config) like any handler failure; both keep their
message in ``args`` so they survive a pickle round trip from a worker.
"""

from __future__ import annotations

__all__ = ["NotPicklableError", "RemoteTraceback", "WorkerLostError"]


class WorkerLostError(RuntimeError):
    """The worker running an attempt died: a process killed by a signal, one
    that exited (``os._exit``, a crash), or a lost Dask worker (R11.6).

    The message names the stage and how the worker died, where that is known.
    """


class NotPicklableError(TypeError):
    """A handler, input, result or context value could not cross to or from a
    worker process. Raised before the handler is called when it is the
    handler or the input, so nothing runs with half its arguments."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, as text.

    Set as the ``__cause__`` of the exception re-raised in the caller (the way
    :mod:`concurrent.futures` does), so a log shows where the worker failed.
    """

    def __str__(self) -> str:
        return f'\n"""\n{self.args[0] if self.args else ""}"""'
