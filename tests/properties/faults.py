"""What a generated stage does, in the parts that must cross to a worker process.

This module is imported by the worker processes of the process executor
(a process stage's handler is a ``functools.partial`` of
:func:`remote_attempt`, pickled by reference), so it imports nothing heavy:
no Hypothesis, no anyio, no recorder. The exception types live here so that
an exception raised in a worker comes back as the very class the parent
compares with.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from proxima.data.pipeline.executors import WorkerLostError


class StageError(Exception):
    """A test-only exception type (not a builtin)."""


#: The exceptions a stage may raise, by name (names keep cases printable).
EXCEPTIONS: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "KeyError": KeyError,
    "ConnectionError": ConnectionError,  # an OSError
    "StageError": StageError,
}

#: Every exception type an attempt can end with, by name: the raised ones and
#: the executor's own for a worker process that died (R11.6).
FAILURES: dict[str, type[Exception]] = {**EXCEPTIONS, "WorkerLostError": WorkerLostError}

#: What a hanging attempt returns if nothing ever stops it (past the watchdog).
HANG_CAP_VALUE = "hang-cap"

# Attempt kinds.
OK = "ok"  # sleep `delay`, return a value derived from the input
RAISE = "raise"  # sleep `delay`, raise EXCEPTIONS[exc]
HANG = "hang"  # wait until cancelled (exceeds its timeout)
SHIELD = "shield"  # ignore cancellation for `delay` (shielded), checkpoint, return
COOP = "coop"  # `steps` x (ctx.check_cancelled(); sleep 1 ms), then return
BLOCK = "block"  # sync, in a worker thread or process: block for `delay`, then return
DIE = "die"  # sync, in a worker process: os._exit(3) (R11.6)

#: A process stage's plan: per attempt (kind, delay, exc, steps).
RemotePlan = tuple[tuple[str, float, str, int], ...]


def derive(sid: str, value: Any) -> str:
    """The value a stage returns: a short digest of its id and input (R3)."""
    digest = hashlib.sha1(repr(value).encode()).hexdigest()[:10]
    return f"{sid}<{digest}>"


def make_exc(name: str, sid: str, n: int) -> Exception:
    return EXCEPTIONS[name](f"{sid} attempt {n}")


def remote_attempt(sid: str, plan: RemotePlan, cap: float, ctx: Any, value: Any) -> Any:
    """A process stage's handler, run in a worker process.

    It picks its behaviour by the attempt number the worker's stand-in
    context reports (R11.4), so the parent needs no shared state with it.
    """
    n = ctx.attempt
    kind, delay, exc, steps = plan[min(n, len(plan)) - 1]
    if kind == RAISE:
        raise make_exc(exc, sid, n)
    if kind == DIE:
        os._exit(3)
    if kind == HANG:
        time.sleep(cap)  # killed at the deadline or the stop long before
        return HANG_CAP_VALUE
    if kind == BLOCK:
        time.sleep(delay)
    elif kind == COOP:
        for _ in range(steps):
            ctx.check_cancelled()  # a round trip to the parent
            time.sleep(0.001)
        ctx.check_cancelled()
    return derive(sid, value)
