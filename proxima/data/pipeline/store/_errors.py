"""Errors and the warning category of the store (R13).

They subclass :class:`PipelineException`, so ``except PipelineException``
still catches every error the library raises on purpose, and the matching
builtin (``LookupError``, ``RuntimeError``, ``TypeError``), so code that
knows nothing of this library still reads them right.
"""

from __future__ import annotations

from .._model.errors import PipelineException

__all__ = [
    "ResumeConflictError",
    "RunNotFoundError",
    "StoreError",
    "StoreWarning",
    "UnfingerprintableError",
]


class RunNotFoundError(PipelineException, LookupError):
    """``resume=`` names a run the store does not hold, or ``"latest"`` and
    the store holds no finished or abandoned run of this pipeline. Raised by
    ``begin_run``, before any stage runs (R13.3)."""

    def __init__(self, run_id: str, pipeline_name: str | None = None) -> None:
        super().__init__(run_id, pipeline_name)
        self.run_id = run_id
        self.pipeline_name = pipeline_name

    def __str__(self) -> str:
        if self.run_id == "latest":
            return f"resume='latest': the store holds no run of pipeline {self.pipeline_name!r}"
        return f"resume={self.run_id!r}: the store holds no run with this id"


class ResumeConflictError(PipelineException, RuntimeError):
    """The run to resume is still going on, or another live run (in this
    process or another) is resuming it already (R13.5)."""

    def __init__(self, run_id: str, holder: str, pid: int | None) -> None:
        super().__init__(run_id, holder, pid)
        self.run_id = run_id
        #: The live run that holds ``run_id``: itself, or the run resuming it.
        self.holder = holder
        self.pid = pid

    def __str__(self) -> str:
        where = f" (process {self.pid})" if self.pid is not None else ""
        if self.holder == self.run_id:
            return f"cannot resume run {self.run_id!r}: it is still running{where}"
        return (
            f"cannot resume run {self.run_id!r}: run {self.holder!r}{where} is resuming it already"
        )


class UnfingerprintableError(PipelineException, TypeError):
    """A stage's input cannot be turned into a key, so the store cannot
    tell whether a stored result stands for it (R13.4). ``stage_id`` names
    the stage; the message names the value's type and where it sits."""

    def __init__(self, stage_id: str, detail: str) -> None:
        super().__init__(stage_id, detail)
        self.stage_id = stage_id
        self.detail = detail

    def __str__(self) -> str:
        return f"stage {self.stage_id!r}: its input cannot be fingerprinted: {self.detail}"


class StoreError(PipelineException, RuntimeError):
    """The database could not be read or written (disk full, locked for
    longer than the timeout, not a store file...); ``__cause__`` is the
    ``sqlite3`` error."""


class StoreWarning(UserWarning):
    """A stored value was not used (bad signature, unknown codec, could not
    be decoded) or could not be stored (could not be encoded): the run goes
    on, and the stage runs again next time."""
