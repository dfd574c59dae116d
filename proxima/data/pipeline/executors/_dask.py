"""``DaskExecutor``: each attempt is one task on a Dask cluster (R11.5-R11.7).

Dask's asynchronous client is asyncio-only, so the session drives a
*synchronous* ``distributed.Client`` (which runs its own event loop in a
thread of its own) and works the same under asyncio and trio: a task is
submitted from the loop's thread (``submit`` only queues a message), and
its result is awaited in a worker thread blocked in ``future.result()`` —
no polling. Blocking client calls (start, cancel, close) always run in
threads, never on the event loop.

What a timeout can do here: the attempt ends at once, and its future is
cancelled; but Dask cannot interrupt a task that is already running on a
worker (dask/distributed #2617), so it runs on, and the session reports it
in :meth:`still_running`. ``restart_on_timeout=True`` kills the worker
process holding it (its nanny starts a fresh one), which frees the worker.
Inside the task, ``ctx.check_cancelled()`` raises once the future was
cancelled, so cooperative code frees its worker on its own.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import pickle
import signal
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any

import anyio
import anyio.to_thread
import attrs

from ._errors import WorkerLostError
from ._remote import (
    ConfigCache,
    Encoded,
    FinishedLog,
    HandlerCache,
    Snapshot,
    cancellation_of,
    encode,
    finish,
)
from .base import ExecutorSession, StageCall

__all__ = ["DaskExecutor"]

#: How long the end of a run waits for cancellations and restarts it sent.
_LET_GO_WAIT = 10.0
#: Inputs larger than this (pickled) are scattered to the workers first.
_SCATTER_ABOVE = 1 << 20


class DaskExecutor:
    """Run each attempt as a task on a Dask cluster.

    Args:
        address: the scheduler of a running cluster (``"tcp://host:8786"``);
            the session connects a client to it and closes that client.
        client: a ``distributed.Client`` you own (a synchronous one); it is
            used as it is and never closed.
        restart_on_timeout: when an attempt is cancelled (its deadline, or a
            forced stop) while its task runs, kill the worker process holding
            it, so that the worker is freed too. Needs workers with a nanny
            (``LocalCluster(processes=True)``, ``dask worker``).
        **cluster_kwargs: with neither ``address`` nor ``client``, a
            ``distributed.LocalCluster(**cluster_kwargs)`` is started for the
            run and closed when it ends (its dashboard on any free port,
            unless ``dashboard_address`` says otherwise).

    Needs the ``dask`` extra (``pip install 'proxima[dask]'``).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        client: Any = None,
        restart_on_timeout: bool = False,
        **cluster_kwargs: Any,
    ) -> None:
        if address is not None and not (isinstance(address, str) and address.strip()):
            raise TypeError(
                f"DaskExecutor.address must be a non-empty str or None, got {address!r}"
            )
        if address is not None and client is not None:
            raise ValueError("DaskExecutor takes an address or a client, not both")
        if cluster_kwargs and (address is not None or client is not None):
            raise ValueError(
                "DaskExecutor: cluster options "
                f"({', '.join(sorted(cluster_kwargs))}) only apply to the embedded "
                "LocalCluster, not with an address or a client"
            )
        if client is not None and not callable(getattr(client, "submit", None)):
            raise TypeError(f"DaskExecutor.client must be a distributed.Client, got {client!r}")
        if not isinstance(restart_on_timeout, bool):
            raise TypeError(
                f"DaskExecutor.restart_on_timeout must be a bool, got {restart_on_timeout!r}"
            )
        self.address = address
        self.client = client
        self.restart_on_timeout = restart_on_timeout
        self.cluster_kwargs = cluster_kwargs

    def session(self) -> AbstractAsyncContextManager[ExecutorSession]:
        """A client (and, embedded, a cluster) for one run."""
        return _open(self)

    def __repr__(self) -> str:
        if self.client is not None:
            where = f"client={self.client!r}"
        elif self.address is not None:
            where = repr(self.address)
        else:
            where = ", ".join(f"{k}={v!r}" for k, v in self.cluster_kwargs.items())
        restart = ", restart_on_timeout=True" if self.restart_on_timeout else ""
        return f"DaskExecutor({where}{restart})"

    def __getstate__(self) -> dict[str, Any]:
        # A client cannot cross to a worker (inside a pipeline's config).
        return {**self.__dict__, "client": None}


@asynccontextmanager
async def _open(executor: DaskExecutor) -> AsyncIterator[ExecutorSession]:
    owned: list[Any] = []
    try:
        client = await anyio.to_thread.run_sync(_connect, executor, owned)
        answers = await anyio.to_thread.run_sync(_Answers, client)
        owned.append(answers)
        session = _DaskSession(client, executor.restart_on_timeout, answers)
        try:
            yield session
        finally:
            with anyio.CancelScope(shield=True):
                await session.aclose()
    finally:
        with anyio.CancelScope(shield=True):
            for resource in reversed(owned):  # the answers, the client, the cluster
                await anyio.to_thread.run_sync(resource.close)


def _connect(executor: DaskExecutor, owned: list[Any]) -> Any:
    """The client to use (blocking: runs in a thread)."""
    try:
        distributed = importlib.import_module("distributed")
    except ImportError as exc:
        raise ImportError(
            "DaskExecutor needs Dask's distributed package: pip install 'proxima[dask]'"
        ) from exc
    if executor.client is not None:
        return executor.client
    if executor.address is not None:
        client = distributed.Client(executor.address)
        owned.append(client)
        return client
    import dask.config

    # A worker that dies under a task fails the attempt at once (R11.6):
    # the pipeline's retry config decides what happens next, not Dask's.
    # Any free port for the dashboard: two runs (or a test session's
    # clusters) never fight over 8787, which Dask only warns about.
    options = {"dashboard_address": ":0", **executor.cluster_kwargs}
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(**options)
    owned.append(cluster)
    client = distributed.Client(cluster)
    owned.append(client)
    return client


def _wait(future: Any) -> tuple[str, Any]:
    """Block (in a worker thread) until the task ends; never raise."""
    from distributed.scheduler import KilledWorker

    try:
        return "reply", future.result()
    except KilledWorker as exc:
        return "killed", exc
    except Exception as exc:
        return "lost", exc


def _holder(dask_scheduler: Any, key: str) -> tuple[str, str | None] | None:
    """(On the scheduler.) The worker running ``key`` and its nanny, if any."""
    task = dask_scheduler.tasks.get(key)
    worker = getattr(task, "processing_on", None)
    if worker is None:
        return None
    return worker.address, worker.nanny


async def _exit_worker() -> None:  # pragma: no cover - runs in a Dask worker, which it kills
    """(On a worker with a nanny.) Die at once; the nanny starts a fresh
    worker. Async, so that ``client.run(wait=False)`` returns at once instead
    of waiting for an answer from a worker that is killing itself."""
    os.kill(os.getpid(), signal.SIGKILL)


class _Answers:
    """Answers the questions of the stand-in contexts in Dask tasks
    (``ctx.get``, ``ctx.get_stage_result``, ``ctx.data``) from the snapshot
    of their attempt, taken when it started (R11.4).

    A task puts its question on the session's queue on the scheduler; a
    thread of the session, blocked on that queue, answers on the task's own
    queue. Nothing is shipped with a task that does not ask, so a pipeline
    of many stages does not send every finished result with every task.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._queue: Any = importlib.import_module("distributed").Queue
        queue = self._queue
        self.channel = f"proxima-ask-{uuid.uuid4().hex}"
        self._requests: Any = queue(self.channel, client=client)
        self._lock = threading.Lock()
        self._snapshots: dict[str, Snapshot] = {}  # task key -> its attempt's snapshot
        self._thread = threading.Thread(target=self._serve, name=self.channel, daemon=True)
        self._thread.start()

    def register(self, key: str, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshots[key] = snapshot

    def forget(self, key: str) -> None:
        with self._lock:
            self._snapshots.pop(key, None)

    def _serve(self) -> None:
        while True:
            try:
                question = self._requests.get()
            except Exception:  # the client or the scheduler is gone
                return
            if question is None:
                return
            with suppress(Exception):
                self._answer(*question)

    def _answer(self, reply_to: str, key: str, what: str, arg: bytes) -> None:
        with self._lock:
            snapshot = self._snapshots.get(key)
        if snapshot is None:
            answer: tuple[Any, ...] = ("error", "its attempt is over")
        else:
            try:
                answer = snapshot.answer(what, pickle.loads(arg))
            except Exception as exc:
                answer = ("error", f"{type(exc).__name__}: {exc}")
        replies = self._queue(reply_to, client=self._client)
        replies.put(list(answer))
        replies.close()

    def close(self) -> None:
        """(Blocking.) Stop the thread and release the queue."""
        with suppress(Exception):
            self._requests.put(None)
        self._thread.join(_LET_GO_WAIT)
        with suppress(Exception):
            self._requests.close()


class _DaskSession:
    def __init__(self, client: Any, restart: bool, answers: _Answers) -> None:
        self._client = client
        self._restart = restart
        self._answers = answers
        self._configs = ConfigCache()
        self._handlers = HandlerCache("Dask")
        self._finished = FinishedLog()
        self._waiters = anyio.CapacityLimiter(math.inf)  # one thread per running task
        self._lock = threading.Lock()
        self._left: dict[str, tuple[str, str]] = {}  # task key -> (stage id, what runs)
        self._threads: list[threading.Thread] = []

    async def call(self, call: StageCall) -> Any:
        # Raises before anything is sent.
        encoded = encode(call, self._configs, self._handlers)
        key = f"proxima-{call.stage_id}-{call.attempt}-{uuid.uuid4().hex}"
        where = f"stage {call.stage_id!r} (attempt {call.attempt})"
        self._answers.register(key, Snapshot(call, self._finished))
        try:
            return await self._run(call, encoded, key, where)
        finally:
            self._answers.forget(key)

    async def _run(self, call: StageCall, encoded: Encoded, key: str, where: str) -> Any:
        from ._worker import run_dask_task

        reason = cancellation_of(call.context)
        args: tuple[Any, ...] = (encoded, self._answers.channel, reason)
        if len(encoded.input) > _SCATTER_ABOVE:
            # A large input goes to the workers on its own, not inside the
            # task graph through the scheduler (which Dask warns about).
            scattered = await anyio.to_thread.run_sync(
                functools.partial(self._client.scatter, encoded.input, hash=False)
            )
            args = (attrs.evolve(encoded, input=b""), self._answers.channel, reason, scattered)
        try:
            future = self._client.submit(run_dask_task, *args, key=key, pure=False)
        except Exception as exc:
            raise RuntimeError(f"{where}: its Dask task could not be submitted: {exc}") from exc
        try:
            kind, outcome = await anyio.to_thread.run_sync(
                _wait, future, abandon_on_cancel=True, limiter=self._waiters
            )
        except anyio.get_cancelled_exc_class():
            self._let_go(future, key, call.stage_id)
            raise
        if kind == "killed":
            raise WorkerLostError(f"{where}: the Dask worker running it died ({outcome})")
        if kind == "lost":
            raise WorkerLostError(
                f"{where}: its Dask task was lost ({type(outcome).__name__}: {outcome})"
            ) from outcome
        return finish(outcome, call)

    def _let_go(self, future: Any, key: str, stage_id: str) -> None:
        """The attempt is over: cancel its task, without waiting (a thread
        does the blocking calls), and remember it may still run."""
        with self._lock:
            self._left[key] = (stage_id, "may still be running on a Dask worker")
        thread = threading.Thread(
            target=self._cancel, args=(future, key), name=f"proxima-dask-cancel-{key}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _cancel(self, future: Any, key: str) -> None:
        """(In a thread.) Cancel the task; restart its worker if asked."""
        client = self._client
        try:
            holder = client.run_on_scheduler(_holder, key=key)
        except Exception:
            holder = None
        with suppress(Exception):
            future.cancel()
        with self._lock:
            stage_id = self._left[key][0]
            if holder is None:  # it was not running: nothing left behind
                del self._left[key]
                return
            self._left[key] = (stage_id, f"may still be running on Dask worker {holder[0]}")
        if not self._restart:
            return
        if holder[1] is None:
            with self._lock:
                self._left[key] = (
                    stage_id,
                    f"may still be running on Dask worker {holder[0]}, which has no nanny "
                    "and so could not be restarted",
                )
            return
        with suppress(Exception):  # the worker dies under the call, as it should
            # wait=False: the worker answers at once and then leaves and dies,
            # so no reply is awaited from a worker that is killing itself.
            client.run(_exit_worker, workers=[holder[0]], wait=False, on_error="ignore")
        with self._lock:
            self._left.pop(key, None)

    def still_running(self) -> dict[str, str]:
        """Stage id -> the Dask tasks of it that may still run: Dask cannot
        interrupt a running task."""
        with self._lock:
            left = list(self._left.items())
        report: dict[str, list[str]] = {}
        for key, (stage_id, what) in left:
            report.setdefault(stage_id, []).append(
                f"task {key} {what} (Dask cannot interrupt a running task)"
            )
        return {stage_id: "; ".join(items) for stage_id, items in report.items()}

    async def aclose(self) -> None:
        """Wait for the cancellations (and restarts) sent, boundedly."""
        threads, self._threads = self._threads, []
        with anyio.move_on_after(_LET_GO_WAIT):
            for thread in threads:
                await anyio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
