"""``"process"``: the handler runs in a worker process, killed at its deadline.

Why not ``anyio.to_process.run_sync(cancellable=True)``, which also kills
its worker on cancellation? Four things it cannot give (R11.4-R11.8):

* its pool belongs to the event loop and outlives the run; here each run's
  session owns its workers and closes them when ``execute()`` ends (R11.8);
* a worker that dies surfaces as ``BrokenWorkerProcess`` without the exit
  code; here the session holds the process and says "killed by signal
  SIGKILL" or "exited with code 3" (R11.6);
* a new worker re-runs the caller's ``__main__`` module (as multiprocessing
  does), which re-runs an unguarded script; here handlers cross with
  cloudpickle (functions of ``__main__`` by value), so nothing is re-run;
* the stand-in context needs a conversation while the handler runs (each
  ``ctx.get`` and ``ctx.check_cancelled`` is a round trip to the caller), not
  one request and one response.

A worker is started with ``sys.executable`` and the caller's ``sys.path``;
its start-up (about 0.15 s: Python and this library's import) counts in the
attempt's deadline (R11.5). After a normal return or a handler's exception
the worker is reused; after a kill or a death the next attempt gets a fresh
one.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any, cast

import anyio
import anyio.abc
import attrs
from anyio.streams.buffered import BufferedByteReceiveStream

from ._checks import max_workers_field
from ._errors import WorkerLostError
from ._remote import ConfigCache, Encoded, FinishedLog, HandlerCache, Snapshot, encode, finish
from .base import ExecutorSession, StageCall

__all__ = ["ProcessExecutor"]

_HEADER = struct.Struct("!Q")
_BOOT = (
    "import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
    "from proxima.data.pipeline.executors._worker import main; main()"
)
#: How long a worker that closed its pipe, or one asked to exit, may take.
_EXIT_WAIT = 2.0
#: The errors that mean the pipe to a worker broke: the worker died.
_PIPE_ERRORS = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)


@attrs.frozen
class ProcessExecutor:
    """Run handlers in worker processes; a deadline or a stop kills the worker.

    Handler, input and result must be picklable (cloudpickle: lambdas and
    closures work). The handler gets a :class:`WorkerContext` stand-in.
    """

    #: At most this many worker processes at once, per run (``None``: the
    #: number of CPUs). Attempts beyond it wait, inside their deadline.
    max_workers: int | None = max_workers_field()

    def session(self) -> AbstractAsyncContextManager[ExecutorSession]:
        """A pool of worker processes for one run, closed when it ends."""
        return _open(self.max_workers or os.cpu_count() or 1)


@asynccontextmanager
async def _open(max_workers: int) -> AsyncIterator[ExecutorSession]:
    session = _ProcessSession(max_workers)
    try:
        yield session
    finally:
        with anyio.CancelScope(shield=True):
            await session.aclose()


class _Worker:
    """One worker process and the two ends of its pipe."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.pid = process.pid
        self._stdin = cast(anyio.abc.ByteSendStream, process.stdin)
        self._stdout = BufferedByteReceiveStream(cast(anyio.abc.ByteReceiveStream, process.stdout))
        #: The keys of the handlers this worker was sent (it keeps them
        #: unpickled), and the last config blob it was sent.
        self.handlers: set[int] = set()
        self.config: bytes | str | None = None

    def call_message(self, call: Encoded) -> tuple[Any, ...]:
        """The call as it goes to this worker: the handler and the config
        only if it does not have them yet (``None`` otherwise)."""
        handler: bytes | None = call.handler
        if call.handler_key in self.handlers:
            handler = None
        else:
            self.handlers.add(call.handler_key)
        config: bytes | str | None = call.config
        if config is self.config:
            config = None
        else:
            self.config = config
        return (
            call.stage_id,
            call.attempt,
            call.pipeline_id,
            config,
            call.handler_key,
            handler,
            call.input,
        )

    async def send(self, message: tuple[Any, ...]) -> None:
        body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        await self._stdin.send(_HEADER.pack(len(body)) + body)

    async def receive(self) -> tuple[Any, ...]:
        (size,) = _HEADER.unpack(await self._stdout.receive_exactly(_HEADER.size))
        message: tuple[Any, ...] = pickle.loads(await self._stdout.receive_exactly(size))
        return message

    async def kill(self) -> None:
        """SIGKILL, then reap it (shielded: a kill must finish)."""
        with suppress(ProcessLookupError):
            self.process.kill()
        with anyio.CancelScope(shield=True):
            await self.process.aclose()

    async def ask_to_exit(self) -> None:
        """End its input: an idle worker exits when it reads that."""
        with anyio.CancelScope(shield=True):
            await self._stdin.aclose()

    async def close(self) -> None:
        """Wait for it to exit once asked; kill it if it does not."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(_EXIT_WAIT):
            await self.process.aclose()  # kills it when the wait is cut short
        if self.process.returncode is None:
            await self.kill()

    async def how_it_died(self) -> str:
        """Its exit, in words, once its pipe broke."""
        with anyio.move_on_after(_EXIT_WAIT):
            await self.process.wait()
        code = self.process.returncode
        if code is None:
            await self.kill()
            return "closed its pipe and stopped answering (it was killed)"
        await self.kill()  # reaped already; this closes the pipe ends
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"was killed by signal {name}"
        return f"exited with code {code} (os._exit, sys.exit or a crash in native code)"


async def _spawn() -> anyio.abc.Process:
    """A new worker process. Shielded: a cancellation here would lose the
    process; it lands at the next step instead, which kills the worker."""
    with anyio.CancelScope(shield=True):
        return await anyio.open_process(
            [sys.executable, "-c", _BOOT, json.dumps(sys.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
        )
    raise AssertionError("unreachable")  # pragma: no cover - for the type checkers


class _ProcessSession:
    """The worker processes of one run."""

    def __init__(self, max_workers: int) -> None:
        self._limiter = anyio.CapacityLimiter(max_workers)
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._configs = ConfigCache()
        self._handlers = HandlerCache("process")
        self._finished = FinishedLog()

    def still_running(self) -> dict[str, str]:
        """Nothing: a process stage's worker is killed, never abandoned."""
        return {}

    async def call(self, call: StageCall) -> Any:
        # Raises before anything starts.
        encoded = encode(call, self._configs, self._handlers)
        snapshot = Snapshot(call, self._finished)
        async with self._limiter:
            worker = await self._checkout()
            reply = await self._exchange(worker, encoded, snapshot)
        return finish(reply, call)

    async def _checkout(self) -> _Worker:
        """An idle worker that is still alive, else a new one."""
        while self._idle:
            worker = self._idle.pop()
            if worker.process.returncode is None:
                return worker
            await self._drop(worker)
        worker = _Worker(await _spawn())
        self._all.add(worker)
        return worker

    async def _exchange(
        self,
        worker: _Worker,
        call: Encoded,
        snapshot: Snapshot,
    ) -> tuple[Any, ...]:
        """Send the call, answer the stand-in's questions, return the reply.
        A cancellation kills the worker (R11.5); a broken pipe means it
        died (R11.6)."""
        try:
            await worker.send(worker.call_message(call))
            while True:
                reply = await worker.receive()
                if reply[0] != "ask":
                    break
                await worker.send(snapshot.answer(reply[1], reply[2]))
        except _PIPE_ERRORS:
            how = await worker.how_it_died()
            await self._drop(worker)
            raise WorkerLostError(
                f"stage {call.stage_id!r} (attempt {call.attempt}): its worker process "
                f"(pid {worker.pid}) {how}"
            ) from None
        except BaseException:  # the deadline, a stop, the caller's cancellation
            await worker.kill()
            await self._drop(worker)
            raise
        self._idle.append(worker)
        return reply

    async def _drop(self, worker: _Worker) -> None:
        self._all.discard(worker)
        if worker.process.returncode is None:
            await worker.kill()

    async def aclose(self) -> None:
        """Let idle workers exit (end of their input), kill any other."""
        idle, self._idle = self._idle, []
        for worker in idle:  # all at once: they exit side by side
            await worker.ask_to_exit()
        for worker in idle:
            await worker.close()
        for worker in list(self._all - set(idle)):
            await worker.kill()
        self._all.clear()
