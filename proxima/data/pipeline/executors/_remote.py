"""What the process and the Dask executor share: a call encoded to cross to
a worker, and the worker's reply turned back into a value (R11.4)."""

from __future__ import annotations

import pickle
from typing import Any

import attrs

from .._model.enums import CancellationReason
from ._checks import is_async_callable
from ._errors import NotPicklableError
from ._pickling import dumps, loads, unpack_exception
from .base import StageCall

__all__ = ["Answer", "ConfigCache", "Encoded", "Snapshot", "cancellation_of", "encode", "finish"]

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


def encode(call: StageCall, executor: str, configs: ConfigCache) -> Encoded:
    """Pickle the call, or raise naming the stage and the part that would not
    go, before anything is sent (R11.4)."""
    where = f"stage {call.stage_id!r}"
    if is_async_callable(call.handler):
        raise TypeError(
            f"{where}: the {executor} executor runs plain functions, and the handler "
            f"{call.handler!r} is async; run it on 'inline' (or 'auto')"
        )
    return Encoded(
        stage_id=call.stage_id,
        attempt=call.attempt,
        pipeline_id=call.context.pipeline_id,
        config=configs.pickled(getattr(call.context, "config", None)),
        handler=dumps(call.handler, f"{where}: the handler {call.handler!r}"),
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


class Snapshot:
    """The caller's state as an attempt starts, served to its worker's
    stand-in one value at a time when asked (R11.4): a stage pays only for
    what it reads, and a value that cannot be pickled fails only its read.

    Shallow copies: a value changed in place later is seen changed, as it
    would be by an inline stage; a key set or a stage finished later is not.
    """

    __slots__ = ("_ctx", "_data", "_finished")

    def __init__(self, call: StageCall) -> None:
        self._ctx = call.context
        self._data = dict(call.context.data)
        self._finished = dict(call.finished)

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
            value = self._finished.get(key)
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
