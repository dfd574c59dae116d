"""What the process and the Dask executor share: a call encoded to cross to
a worker, and the worker's reply turned back into a value (R11.4)."""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Mapping
from typing import Any

import attrs

from .._model.enums import CancellationReason
from ._checks import is_async_callable
from ._errors import NotPicklableError
from ._pickling import dumps, loads, unpack_exception
from .base import StageCall

__all__ = [
    "Answer",
    "ConfigCache",
    "Encoded",
    "FinishedLog",
    "HandlerCache",
    "Snapshot",
    "cancellation_of",
    "encode",
    "finish",
]

#: An answer to a worker's question: ("value", pickle), ("missing",) or
#: ("error", why the value could not be sent).
Answer = tuple[Any, ...]


@attrs.frozen
class Encoded:
    """A call's parts, each pickled on its own (so an error names the part)."""

    stage_id: str
    attempt: int
    pipeline_id: str
    #: The run's config pickled, or why it could not be (then ``ctx.config``
    #: raises that in the worker, and nothing else is hurt).
    config: bytes | str
    #: The handler's key in the session's :class:`HandlerCache` (a worker
    #: that has its blob already may keep it unpickled under that key).
    handler_key: int
    handler: bytes
    input: bytes


class ConfigCache:
    """The run's config is pickled once per session, not once per call."""

    def __init__(self) -> None:
        self._last: tuple[Any, bytes | str] | None = None

    def pickled(self, config: Any) -> bytes | str:
        last = self._last
        if last is not None and last[0] is config:
            return last[1]
        try:
            blob: bytes | str = dumps(config, "the pipeline's config")
        except NotPicklableError as exc:
            blob = str(exc)
        self._last = (config, blob)
        return blob


class HandlerCache:
    """Each distinct handler is checked and pickled once per session, at its
    first call, not once per call. Keyed by the handler object's ``id``,
    which cannot be reused while the cache holds the handler; a session's
    cache ends with it. A handler that is refused (async, or not picklable)
    is not remembered: each of its calls fails the same way, before anything
    is sent."""

    def __init__(self, executor: str) -> None:
        self._executor = executor
        self._blobs: dict[int, tuple[Any, bytes]] = {}

    def pickled(self, handler: Any, where: str) -> tuple[int, bytes]:
        """(the handler's key, its pickle)."""
        key = id(handler)
        known = self._blobs.get(key)
        if known is not None:
            return key, known[1]
        if is_async_callable(handler):
            raise TypeError(
                f"{where}: the {self._executor} executor runs plain functions, and the handler "
                f"{handler!r} is async; run it on 'inline' (or 'auto')"
            )
        blob = dumps(handler, f"{where}: the handler {handler!r}")
        self._blobs[key] = (handler, blob)  # the handler held: its id stays its own
        return key, blob


def encode(call: StageCall, configs: ConfigCache, handlers: HandlerCache) -> Encoded:
    """Pickle the call, or raise naming the stage and the part that would not
    go, before anything is sent (R11.4)."""
    where = f"stage {call.stage_id!r}"
    key, handler = handlers.pickled(call.handler, where)
    return Encoded(
        stage_id=call.stage_id,
        attempt=call.attempt,
        pipeline_id=call.context.pipeline_id,
        config=configs.pickled(getattr(call.context, "config", None)),
        handler_key=key,
        handler=handler,
        input=dumps(call.input, f"{where}: the input"),
    )


def finish(reply: tuple[Any, ...], call: StageCall) -> Any:
    """The handler's value, after applying its recorded ``set`` and
    ``record_metric`` calls to the real context; or its exception, raised."""
    where = f"stage {call.stage_id!r}"
    if reply[0] == "raised":
        raise unpack_exception(reply[1], where)
    _, blob, changes = reply
    try:
        value = loads(blob)
        applied = [(kind, name, loads(value_blob)) for kind, name, value_blob in changes]
    except Exception as exc:
        raise RuntimeError(
            f"{where}: the worker's result could not be unpickled in the caller: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    for kind, name, change in applied:
        if kind == "set":
            call.context.set(name, change)
        else:
            call.context.record_metric(name, change)
    return value


class FinishedLog:
    """Where each finished stage's result stands in ``StageCall.finished``,
    kept per session, so that a snapshot costs O(1) per call however many
    stages have finished, instead of a copy of them all.

    The engine's mapping only grows, in finishing order (a result is added
    once, when its stage ends; see ``StageCall.finished``): so "finished
    when the attempt started" is "among the first ``n`` entries", with ``n``
    its length then. Each call notes the entries added since the last one
    (reading from the end, O(new entries)); a lookup is two dict reads,
    safe from another thread (the Dask session answers in one).
    """

    __slots__ = ("_order", "_source")

    def __init__(self) -> None:
        self._source: Mapping[str, Any] | None = None
        self._order: dict[str, int] = {}

    def mark(self, finished: Mapping[str, Any]) -> tuple[dict[str, int], int] | None:
        """(the positions, the count now) for a snapshot of ``finished``;
        ``None`` if this mapping cannot be followed so (then copy it)."""
        count = len(finished)
        order = self._order
        if finished is not self._source or count < len(order):
            # Another mapping (a hand-built call), or one that shrank: start
            # a new record, leaving the old one to the snapshots holding it.
            self._source, order = finished, {}
            self._order = order
        seen = len(order)
        if count > seen:
            # dict and mappingproxy read back from the end; a Mapping without
            # __reversed__ would "reverse" by integer indexing: never that.
            back = getattr(finished, "__reversed__", None)
            if back is None:
                self._source = None
                return None
            if count == seen + 1:  # the usual case: one stage ended since
                order[next(back())] = seen
            else:
                added: list[str] = list(itertools.islice(back(), count - seen))
                for position, stage_id in enumerate(reversed(added), seen):
                    order[stage_id] = position
        return order, count


class Snapshot:
    """The caller's state as an attempt starts, served to its worker's
    stand-in one value at a time when asked (R11.4): a stage pays only for
    what it reads, and a value that cannot be pickled fails only its read.

    The shared data is copied (shallow); the finished results are not: a
    lookup reads the engine's mapping and answers only for a stage that had
    finished when the attempt started (see :class:`FinishedLog`). A value
    changed in place later is seen changed, as it would be by an inline
    stage; a key set or a stage finished later is not.
    """

    __slots__ = ("_count", "_ctx", "_data", "_finished", "_order")

    def __init__(self, call: StageCall, log: FinishedLog) -> None:
        self._ctx = call.context
        self._data = dict(call.context.data)
        finished = call.finished
        marked = log.mark(finished) if finished else None
        if marked is None:
            self._finished: Mapping[str, Any] = dict(finished)
            self._order: dict[str, int] | None = None
            self._count = 0
        else:
            self._finished = finished
            self._order, self._count = marked

    def result(self, stage_id: Any) -> Any:
        """The result of ``stage_id`` if it had finished at the start, else ``None``."""
        order = self._order
        if order is not None:
            position = order.get(stage_id)
            if position is None or position >= self._count:
                return None
        return self._finished.get(stage_id)

    def answer(self, what: str, key: Any) -> Answer:
        """``what``: "get" (a key), "keys", "result" (a stage id) or "cancelled"."""
        if what == "cancelled":
            reason = cancellation_of(self._ctx)
            return ("value", None if reason is None else str(reason.value))
        if what == "keys":
            return ("value", pickle.dumps(list(self._data)))
        if what == "get":
            if key not in self._data:
                return ("missing",)
            value = self._data[key]
        else:
            value = self.result(key)
        try:
            return ("value", dumps(value, "it"))
        except NotPicklableError as exc:
            return ("error", str(exc))


def cancellation_of(ctx: Any) -> CancellationReason | None:
    """The run's stop reason, from the real context."""
    reason: CancellationReason | None = getattr(ctx, "cancellation_reason", None)
    if reason is None and ctx.is_cancelled:
        reason = CancellationReason.USER_REQUESTED
    return reason
