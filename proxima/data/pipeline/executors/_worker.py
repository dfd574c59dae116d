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

import contextlib
import importlib
import os
import pickle
import signal
import struct
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, BinaryIO

from .._model.enums import CancellationReason
from ._errors import NotPicklableError
from ._pickling import PackedError, dumps, loads, pack_exception
from ._standin import Change, WorkerContext, missing

if TYPE_CHECKING:
    from ._remote import Encoded

__all__ = [
    "AskingSource",
    "DaskSource",
    "PipeSource",
    "Reply",
    "Unloadable",
    "call_handler",
    "load_handler",
    "main",
    "run_dask_task",
    "run_handler",
]

_HEADER = struct.Struct("!Q")

#: What a call sends back: ("returned", value, changes) or ("raised", error).
Reply = tuple[str, Any, Any]


def run_handler(ctx: WorkerContext, handler_blob: bytes, input_blob: bytes) -> Reply:
    """Unpickle the handler and its input, call it, and pack what came of it."""
    return call_handler(ctx, load_handler(handler_blob), input_blob)


class Unloadable:
    """A handler the worker could not unpickle: each call of it says why."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def load_handler(blob: bytes) -> Any:
    """The handler unpickled, or an :class:`Unloadable` saying why not."""
    try:
        return loads(blob)
    except Exception as exc:
        return Unloadable(exc)


def call_handler(ctx: WorkerContext, handler: Any, input_blob: bytes) -> Reply:
    """Unpickle the input, call the handler, and pack what came of it."""
    stage = ctx.stage_id
    if isinstance(handler, Unloadable):
        return _raised(handler.error, f"stage {stage!r}: the worker could not unpickle the handler")
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


def run_dask_task(
    call: Encoded,
    channel: str,
    reason: CancellationReason | None,
    scattered: bytes | None = None,
) -> Reply:
    """The task a Dask stage's attempt runs on a worker. ``channel``: the
    session's queue for the stand-in's questions; ``reason``: the run's stop
    reason when the attempt started; ``scattered``: a large input, sent to
    the workers ahead of the task."""
    source = DaskSource(call.stage_id, channel, reason)
    ctx = WorkerContext(
        stage_id=call.stage_id,
        attempt=call.attempt,
        pipeline_id=call.pipeline_id,
        config=call.config,
        source=source,
    )
    try:
        return run_handler(ctx, call.handler, call.input if scattered is None else scattered)
    finally:
        source.close()


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


class AskingSource:
    """Reads the caller's snapshot of the attempt by asking for each value."""

    def __init__(self, stage_id: str) -> None:
        self._stage_id = stage_id

    def _ask(self, what: str, key: Any) -> tuple[Any, ...]:
        raise NotImplementedError

    def value(self, key: Any) -> Any:
        return self._fetch("get", key, f"ctx.get({key!r})")

    def keys(self) -> list[Any]:
        keys: list[Any] = self._fetch("keys", None, "ctx.data")
        return keys

    def stage_result(self, stage_id: str) -> Any:
        return self._fetch("result", stage_id, f"ctx.get_stage_result({stage_id!r})")

    def _fetch(self, what: str, key: Any, call: str) -> Any:
        answer = self._ask(what, key)
        if answer[0] == "missing":
            return missing()
        if answer[0] == "error":
            raise NotPicklableError(
                f"{call} in the worker of stage {self._stage_id!r}: the value could not be "
                f"sent from the caller ({answer[1]})"
            )
        return loads(answer[1])


class PipeSource(AskingSource):
    """A process worker asks over its pipe (a round trip while the handler
    waits); so does ``check_cancelled``, which sees a stop at once."""

    def __init__(self, channel: Channel, stage_id: str) -> None:
        super().__init__(stage_id)
        self._channel = channel

    def _ask(self, what: str, key: Any) -> tuple[Any, ...]:
        return self._channel.ask(what, key)

    def cancellation(self) -> CancellationReason | None:
        reason = self._channel.ask("cancelled", None)[1]
        return None if reason is None else CancellationReason(reason)


#: How long a Dask stand-in waits for the caller's answer.
_ASK_TIMEOUT = 60.0


class DaskSource(AskingSource):
    """A Dask task asks through two queues on the scheduler (the only party
    both the caller and a worker can always reach): the session's, which a
    thread of the session serves, and one of its own for the answers."""

    def __init__(self, stage_id: str, channel: str, reason: CancellationReason | None) -> None:
        super().__init__(stage_id)
        self._channel = channel
        self._reason = reason
        self._lock = threading.Lock()  # a handler's own threads may ask too
        self._queues: tuple[Any, Any] | None = None
        self._task, self._stopped = _current_task()

    def _ask(self, what: str, key: Any) -> tuple[Any, ...]:
        with self._lock:
            if self._queues is None:
                queue = _distributed().Queue
                self._queues = (queue(self._channel), queue())
            requests, answers = self._queues
            question = [answers.name, self._task, what, pickle.dumps(key)]
            requests.put(question)
            try:
                answer = answers.get(timeout=_ASK_TIMEOUT)
            except TimeoutError:
                raise RuntimeError(
                    f"the worker of stage {self._stage_id!r} asked the caller for "
                    f"{what} {key!r} and got no answer in {_ASK_TIMEOUT:g} s"
                ) from None
        return tuple(answer)

    def cancellation(self) -> CancellationReason | None:
        """The start's reason, or a stop seen since: the task's future was
        cancelled (the attempt's deadline, or a forced stop), which Dask marks
        on the worker though it cannot interrupt the task."""
        if self._reason is None and self._stopped is not None and self._stopped():
            # The run's own reason is not known here; the attempt is over.
            return CancellationReason.TIMEOUT
        return self._reason

    def close(self) -> None:
        if self._queues is not None:
            for queue in self._queues:
                with contextlib.suppress(Exception):
                    queue.close()


def _current_task() -> tuple[str | None, Any]:
    """This Dask task's key, and a check of whether its future was cancelled
    (``None``, ``None`` outside a Dask worker)."""
    try:
        worker = _distributed().get_worker()
        key: str = worker.get_current_task()
    except Exception:
        return None, None

    def stopped() -> bool:
        task = worker.state.tasks.get(key)
        return task is None or task.state in ("cancelled", "released", "forgotten")

    return key, stopped


def _distributed() -> Any:
    """Dask's distributed package, imported only in a Dask task."""
    return importlib.import_module("distributed")


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
    # The handlers of this worker's session, unpickled once each (a worker
    # serves one session, so this is bounded by the pipeline's handlers);
    # and the run's config, sent again only when it changes.
    handlers: dict[int, Any] = {}
    config: bytes | str = ""
    while True:
        message = channel.receive()
        if message is None:
            return
        stage_id, attempt, pipeline_id, new_config, key, handler_blob, input_blob = message
        if new_config is not None:
            config = new_config
        if handler_blob is not None:
            handlers[key] = load_handler(handler_blob)
        handler = handlers.get(key)
        if handler is None:  # the session sends each handler before its first use
            handler = Unloadable(LookupError(f"no handler under key {key}"))
        ctx = WorkerContext(
            stage_id=stage_id,
            attempt=attempt,
            pipeline_id=pipeline_id,
            config=config,
            source=PipeSource(channel, stage_id),
        )
        channel.send(call_handler(ctx, handler, input_blob))
        del ctx, message, handler, handler_blob, input_blob


if __name__ == "__main__":  # pragma: no cover - started by the process executor
    main()
    sys.exit(0)
