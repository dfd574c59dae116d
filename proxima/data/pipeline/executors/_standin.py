"""The context a handler sees in a worker process or on a Dask worker (R11.4).

The real :class:`PipelineContext` lives in the caller's process and holds
locks, an event loop token and every stage's result: it cannot cross. The
handler gets a :class:`WorkerContext` instead, built in the worker:

* ``get``, ``get_stage_result`` and ``data`` read a snapshot of the shared
  data and of the finished stages, taken when the attempt started;
* ``set`` and ``record_metric`` are recorded, and applied to the real
  context by the caller when the attempt completes (not when it fails);
* ``pipeline_id``, ``config``, ``stage_id`` and ``attempt`` are there;
* ``is_cancelled``, ``cancellation_reason`` and ``check_cancelled()`` ask
  the caller (process) or the Dask worker (Dask) whether a stop has begun,
  so cooperative code can end within the grace period;
* ``cancel``, ``pause``, ``resume``, ``is_paused`` and ``wait_if_paused``
  raise :class:`WorkerContextError`: a worker cannot steer the run.

Where the snapshot comes from is a :class:`Source`: the worker asks the
caller for each value when the handler first reads it (over the process's
pipe, or through the Dask scheduler), so a stage pays only for what it
reads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NoReturn, Protocol

from .._model.enums import CancellationReason
from .._model.errors import PipelineCancelledException
from .._model.results import RESERVED_METRICS
from ._errors import NotPicklableError
from ._pickling import dumps, loads

__all__ = ["Change", "Source", "WorkerContext", "WorkerContextError", "missing"]

#: A ``set`` or ``record_metric`` to apply in the caller: (kind, name, value).
Change = tuple[str, Any, bytes]

_MISSING: Any = object()
_NEVER_PAUSED = "a pause holds back new attempts and never reaches a running one"


class WorkerContextError(RuntimeError):
    """A context method that cannot work in a worker process was called."""


class Source(Protocol):
    """Where a :class:`WorkerContext` reads the caller's state."""

    def value(self, key: Any) -> Any:
        """The shared value under ``key`` at the attempt's start, else ``_MISSING``."""
        ...

    def keys(self) -> list[Any]:
        """The keys of the shared data at the attempt's start."""
        ...

    def stage_result(self, stage_id: str) -> Any:
        """The ``StageResult`` of a stage finished at the attempt's start, or ``None``."""
        ...

    def cancellation(self) -> CancellationReason | None:
        """The run's stop reason, if a stop has begun."""
        ...


class WorkerContext:
    """A picklable stand-in for ``PipelineContext`` in a worker (R11.4).

    See the module docstring for what each method does there.
    """

    def __init__(
        self,
        *,
        stage_id: str,
        attempt: int,
        pipeline_id: str,
        config: bytes | str,
        source: Source,
    ) -> None:
        #: The run's id, as ``PipelineContext.pipeline_id``.
        self.pipeline_id = pipeline_id
        #: The stage whose attempt this is.
        self.stage_id = stage_id
        #: The 1-based attempt number.
        self.attempt = attempt
        self._config = config  # pickled config, or why it could not be pickled
        self._source = source
        self._changes: list[Change] = []

    # -- what works -----------------------------------------------------------
    @property
    def config(self) -> Any:
        """The run's ``PipelineConfig``."""
        if isinstance(self._config, str):
            raise NotPicklableError(
                f"ctx.config is not available in the worker of stage {self.stage_id!r}: "
                f"{self._config}"
            )
        return loads(self._config)

    @property
    def data(self) -> Mapping[Any, Any]:
        """A read-only view of the shared data at the attempt's start; use
        :meth:`set` to change it."""
        return _DataView(self)

    def get(self, key: Any, default: Any = None) -> Any:
        """The value stored under ``key`` when the attempt started, else ``default``."""
        value = self._source.value(key)
        return default if value is _MISSING else value

    def get_stage_result(self, stage_id: str) -> Any:
        """The ``StageResult`` of a stage that had finished when the attempt
        started, else ``None``."""
        return self._source.stage_result(stage_id)

    def set(self, key: Any, value: Any) -> None:
        """Store ``value`` for later stages, once this attempt completes.

        The value is pickled now, as it is at this call; one that cannot be
        pickled raises here, naming the key.
        """
        blob = dumps(value, f"stage {self.stage_id!r}: the value of ctx.set({key!r}, ...)")
        self._changes.append(("set", key, blob))

    def record_metric(self, name: str, value: Any) -> None:
        """Add ``name: value`` to this stage's metrics, once this attempt completes."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"metric name must be a non-empty str, got {name!r}")
        if name in RESERVED_METRICS:
            raise ValueError(f"metric name {name!r} is reserved for the library's own metrics")
        blob = dumps(value, f"stage {self.stage_id!r}: the value of metric {name!r}")
        self._changes.append(("metric", name, blob))

    @property
    def is_cancelled(self) -> bool:
        """True once a stop of the run has begun."""
        return self._source.cancellation() is not None

    @property
    def cancellation_reason(self) -> CancellationReason | None:
        """Why the run is stopping, or ``None``."""
        return self._source.cancellation()

    def check_cancelled(self) -> None:
        """Raise ``PipelineCancelledException`` once a stop has begun (R5.2)."""
        reason = self._source.cancellation()
        if reason is not None:
            raise PipelineCancelledException(reason)

    # -- what cannot work across processes ------------------------------------
    def cancel(self, reason: CancellationReason = CancellationReason.USER_REQUESTED) -> None:
        """Not available in a worker: raise ``PipelineCancelledException``
        from the handler to stop the run (R5.3)."""
        self._cannot("cancel()", "raise PipelineCancelledException(reason) to stop the run")

    def pause(self) -> None:
        """Not available in a worker."""
        self._cannot("pause()", "pause the run from the caller")

    def resume(self) -> None:
        """Not available in a worker."""
        self._cannot("resume()", "resume the run from the caller")

    @property
    def is_paused(self) -> bool:
        """Not available in a worker."""
        self._cannot("is_paused", _NEVER_PAUSED)

    async def wait_if_paused(self) -> None:
        """Not available in a worker."""
        self._cannot("wait_if_paused()", _NEVER_PAUSED)

    def _cannot(self, what: str, instead: str) -> NoReturn:
        raise WorkerContextError(
            f"ctx.{what} cannot work in the worker of stage {self.stage_id!r}: the run is "
            f"controlled from the caller's process ({instead}; or run this stage on the "
            '"thread" executor)'
        )

    # -- for the executor -------------------------------------------------------
    def _take_changes(self) -> tuple[Change, ...]:
        changes, self._changes = tuple(self._changes), []
        return changes

    def __repr__(self) -> str:
        return f"<WorkerContext of stage {self.stage_id!r}, attempt {self.attempt}>"


class _DataView(Mapping[Any, Any]):
    """``ctx.data`` in a worker: reads through the source, never writes."""

    def __init__(self, ctx: WorkerContext) -> None:
        self._ctx = ctx

    def __getitem__(self, key: Any) -> Any:
        value = self._ctx._source.value(key)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[Any]:
        return iter(self._ctx._source.keys())

    def __len__(self) -> int:
        return len(self._ctx._source.keys())


def missing() -> Any:
    """The marker a :class:`Source` returns for an absent key."""
    return _MISSING
