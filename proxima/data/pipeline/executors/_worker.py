"""The code that runs in a worker: a process worker's main loop, and the one
call both the process and the Dask executor make there.

A process worker talks to its session over its stdin and stdout, which it
keeps for itself: the handler's ``print`` goes to stderr (file descriptor 1
is pointed at 2), and its stdin is ``/dev/null``. Frames are an 8-byte
length and a pickled tuple. The worker ignores SIGINT: a Ctrl-C in the
terminal reaches the whole process group, and it is the caller who decides
what a stop means (a grace period, then a kill). Plain blocking code only:
no event loop runs here.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, BinaryIO

from .._model.enums import CancellationReason
from ._pickling import PackedError, dumps, loads, pack_exception
from ._standin import Change, SnapshotSource, WorkerContext, missing

if TYPE_CHECKING:
    from ._remote import Encoded

__all__ = ["Reply", "main", "run_dask_task", "run_handler"]

_HEADER = struct.Struct("!Q")

#: What a call sends back: ("returned", value, changes) or ("raised", error).
Reply = tuple[str, Any, Any]


def run_handler(ctx: WorkerContext, handler_blob: bytes, input_blob: bytes) -> Reply:
    """Unpickle the handler and its input, call it, and pack what came of it."""
    stage = ctx.stage_id
    try:
        handler = loads(handler_blob)
    except Exception as exc:
        return _raised(exc, f"stage {stage!r}: the worker could not unpickle the handler")
    try:
        value_in = loads(input_blob)
    except Exception as exc:
        return _raised(exc, f"stage {stage!r}: the worker could not unpickle the input")
    try:
        value = handler(ctx, value_in)
    except Exception as exc:
        return ("raised", pack_exception(exc), None)
    try:
        blob = dumps(value, f"stage {stage!r}: the handler's result")
    except Exception as exc:
        return ("raised", pack_exception(exc), None)
    changes: tuple[Change, ...] = ctx._take_changes()
    return ("returned", blob, changes)


def _raised(exc: Exception, what: str) -> Reply:
    wrapped = RuntimeError(f"{what}: {type(exc).__name__}: {exc}")
    wrapped.__cause__ = exc
    packed: PackedError = pack_exception(wrapped)
    return ("raised", packed, None)


# -- a Dask task ----------------------------------------------------------------------------------


def run_dask_task(call: Encoded, source: SnapshotSource, scattered: bytes | None = None) -> Reply:
    """The task a Dask stage's attempt runs on a worker (``scattered``: a
    large input, sent to the workers ahead of the task)."""
    source.live_cancellation = _dask_stop_check()
    ctx = WorkerContext(
        stage_id=call.stage_id,
        attempt=call.attempt,
        pipeline_id=call.pipeline_id,
        config=call.config,
        source=source,
    )
    return run_handler(ctx, call.handler, call.input if scattered is None else scattered)


def _dask_stop_check() -> Any:
    """A check that says whether this task's future was cancelled (the
    attempt's deadline or a forced stop): Dask marks a running task
    "cancelled" on its worker, though it cannot interrupt it."""
    try:
        from distributed import get_worker

        worker = get_worker()
        key = worker.get_current_task()
    except Exception:  # not in a Dask worker: keep the snapshot's answer
        return None

    def stopped() -> CancellationReason | None:
        task = worker.state.tasks.get(key)
        if task is None or task.state in ("cancelled", "released", "forgotten"):
            # The run's own reason is not known here; the attempt is over.
            return CancellationReason.TIMEOUT
        return None

    return stopped


# -- the process worker ---------------------------------------------------------------------------


class Channel:
    """The worker's end of the pipe to its session."""

    def __init__(self, reader: BinaryIO, writer: BinaryIO) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = threading.Lock()  # a handler's own threads may ask too

    def send(self, message: tuple[Any, ...]) -> None:
        body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(_HEADER.pack(len(body)) + body)
        self._writer.flush()

    def receive(self) -> tuple[Any, ...] | None:
        """The next message, or ``None`` once the session closed the pipe."""
        header = self._reader.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack(header)
        body = self._reader.read(size)
        if len(body) < size:
            return None
        message: tuple[Any, ...] = pickle.loads(body)
        return message

    def ask(self, *question: Any) -> tuple[Any, ...]:
        """One round trip to the session, while the handler waits."""
        with self._lock:
            self.send(("ask", *question))
            answer = self.receive()
        if answer is None:  # the session is gone: nobody wants our result
            os._exit(0)
        return answer


class RemoteSource:
    """The snapshot lives in the caller; each read is a round trip."""

    def __init__(self, channel: Channel, stage_id: str) -> None:
        self._channel = channel
        self._stage_id = stage_id

    def value(self, key: Any) -> Any:
        return self._fetch("get", key, f"ctx.get({key!r})")

    def keys(self) -> list[Any]:
        keys: list[Any] = self._fetch("keys", None, "ctx.data")
        return keys

    def stage_result(self, stage_id: str) -> Any:
        return self._fetch("result", stage_id, f"ctx.get_stage_result({stage_id!r})")

    def cancellation(self) -> CancellationReason | None:
        reason = self._channel.ask("cancelled", None)[1]
        return None if reason is None else CancellationReason(reason)

    def _fetch(self, what: str, key: Any, call: str) -> Any:
        from ._errors import NotPicklableError

        answer = self._channel.ask(what, key)
        if answer[0] == "missing":
            return missing()
        if answer[0] == "error":
            raise NotPicklableError(
                f"{call} in the worker of stage {self._stage_id!r}: the value could not be "
                f"sent from the caller ({answer[1]})"
            )
        return loads(answer[1])


def _exit_with_the_caller(caller: int) -> None:
    """(A daemon thread.) A caller killed outright (SIGKILL) cannot kill its
    workers: each notices within a second that it was orphaned, and exits,
    rather than run its handler to the end for nobody."""
    while os.getppid() == caller:
        time.sleep(1.0)
    os._exit(1)


def main() -> None:
    """Serve calls until the session closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch = threading.Thread(
        target=_exit_with_the_caller, args=(os.getppid(),), name="proxima-orphan-watch"
    )
    watch.daemon = True
    watch.start()
    reader = os.fdopen(os.dup(0), "rb")
    writer = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # the handler's prints go to stderr, never into the pipe
    channel = Channel(reader, writer)
    while True:
        message = channel.receive()
        if message is None:
            return
        stage_id, attempt, pipeline_id, config, handler_blob, input_blob = message
        ctx = WorkerContext(
            stage_id=stage_id,
            attempt=attempt,
            pipeline_id=pipeline_id,
            config=config,
            source=RemoteSource(channel, stage_id),
        )
        channel.send(run_handler(ctx, handler_blob, input_blob))
        del ctx, message, handler_blob, input_blob


if __name__ == "__main__":  # pragma: no cover - started by the process executor
    main()
    sys.exit(0)
