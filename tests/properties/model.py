"""A reference model of the contract: small, sequential, no concurrency.

Given a generated :class:`~.strategies.Case` it computes what the terminal
statuses must be, assuming deterministic timing: every attempt does exactly
what its behaviour says, a hang or a shield past the deadline times out, and
nothing else races. It is only consulted for cases where timing cannot change
the answer (see ``strategies.cases(deterministic=True)``):

* parallel runs without a stop: each stage's fate depends only on its own
  behaviour and its dependencies' fates, so a walk in topological order gives
  statuses, attempt counts and results (R3, R4, R6.2, R6.3). If a critical
  stage fails and ``continue_on_error`` is off, the run stops (R6.1) and only
  the pipeline status and reason are predictable;
* serial runs (``parallel_stages=False``) with zero retry delays, and stops
  raised from inside a handler: one attempt at a time in earliest-first
  topological order (R2.2), so the whole run, stop included, is a simple
  loop over a heap.

Where a stage runs (R11) never changes the answer: the generator gives thread
and process stages only behaviours whose outcome does not depend on how long
a hop to a worker thread or a worker's start-up takes (see
``strategies.attempts``), and in-stage stops from a thread a grace period that
cannot cut them short (see ``strategies.cases``).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from proxima.data.pipeline import CancellationReason, PipelineStatus, StageStatus

from .faults import derive
from .strategies import (
    BLOCK,
    CANCEL,
    DIE,
    FROM_STAGE,
    HANG,
    RAISE,
    RAISE_PCE,
    SHIELD,
    Case,
    StageCase,
)

COMPLETED = StageStatus.COMPLETED
FAILED = StageStatus.FAILED
TIMED_OUT = StageStatus.TIMED_OUT
CANCELLED = StageStatus.CANCELLED
SKIPPED = StageStatus.SKIPPED
_FAILURES = (FAILED, TIMED_OUT)


@dataclass
class Expected:
    status: PipelineStatus
    reason: CancellationReason | None
    #: Per stage, or None when a stop makes them timing-dependent.
    stages: dict[str, StageStatus] | None = None
    attempts: dict[str, int] | None = None
    results: dict[str, object] | None = None
    #: Stage ids whose exception type is known: FAILED -> that exception's name.
    exc_names: dict[str, str] = field(default_factory=dict)
    #: SKIPPED stage -> the roots it may name as ``failed_dependency``.
    skip_roots: dict[str, set[str]] = field(default_factory=dict)
    #: Serial runs only: the exact (stage, attempt) start order and cleanup order.
    order: list[tuple[str, int]] | None = None
    cleanups: list[str] | None = None


def _attempt_outcome(case: Case, sc: StageCase, n: int) -> str:
    """'ok', 'raise' or 'timeout' for attempt ``n`` of ``sc`` without a stop."""
    behaviour = sc.attempt(n)
    if behaviour.kind in (RAISE, DIE):  # DIE: WorkerLostError (R11.6)
        return "raise"
    timeout = case.timeout_of(sc)
    if behaviour.kind == HANG:
        assert timeout is not None, "a hang without a timeout never ends on its own"
        return "timeout"
    if behaviour.kind in (SHIELD, BLOCK) and timeout is not None and behaviour.delay > timeout:
        return "timeout"  # ignores its deadline: cancelled, abandoned or killed there (R11.5)
    return "ok"  # ok, a short shield or block, cooperative work without a stop


def _retries(case: Case, sc: StageCase, n: int, outcome: str) -> bool:
    """R4.1, R4.3, R4.4: whether failed attempt ``n`` is followed by another."""
    rc = case.retry_of(sc)
    if n >= rc.max_attempts:
        return False
    if outcome == "timeout":
        return rc.retry_on_timeout
    return rc.retries_exception(sc.attempt(n).exc)


def _final_status(case: Case, stages: dict[str, StageStatus]) -> PipelineStatus:
    """R6.3 for a run that was not stopped."""
    by_id = case.by_id()
    if all(s is COMPLETED for s in stages.values()):
        return PipelineStatus.COMPLETED
    if not any(s is COMPLETED for s in stages.values()):
        return PipelineStatus.FAILED
    if any(by_id[sid].critical and s is not COMPLETED for sid, s in stages.items()):
        return PipelineStatus.FAILED
    return PipelineStatus.PARTIALLY_COMPLETED


def _skip_roots(case: Case, stages: dict[str, StageStatus]) -> dict[str, set[str]]:
    """Each SKIPPED stage -> its transitive dependencies that FAILED/TIMED_OUT."""
    roots: dict[str, set[str]] = {}
    for sc in case.topological():
        found: set[str] = set()
        for dep in sc.deps:
            if stages.get(dep) in _FAILURES:
                found.add(dep)
            found |= roots.get(dep, set())
        roots[sc.sid] = found
    return {sid: r for sid, r in roots.items() if stages.get(sid) is SKIPPED}


def expected(case: Case) -> Expected:
    """The model's answer for a deterministic case."""
    if case.parallel:
        assert case.stop.kind != CANCEL or case.stop.source not in (FROM_STAGE, RAISE_PCE)
        return _parallel_without_stop(case)
    return _serial(case)


def _input_of(case: Case, sc: StageCase, results: dict[str, object]) -> object:
    """R3.1-R3.3."""
    if not sc.deps:
        return case.initial_input
    if len(sc.deps) == 1:
        return results[sc.deps[0]]
    return {dep: results[dep] for dep in sc.deps}


def _parallel_without_stop(case: Case) -> Expected:
    stages: dict[str, StageStatus] = {}
    attempts: dict[str, int] = {}
    results: dict[str, object] = {}
    exc_names: dict[str, str] = {}
    for sc in case.topological():
        if any(stages[d] is not COMPLETED for d in sc.deps):
            stages[sc.sid] = SKIPPED  # R6.2
            attempts[sc.sid] = 0
            results[sc.sid] = None
            continue
        n = 1
        while True:
            outcome = _attempt_outcome(case, sc, n)
            if outcome == "ok" or not _retries(case, sc, n, outcome):
                break
            n += 1
        attempts[sc.sid] = n
        if outcome == "ok":
            stages[sc.sid] = COMPLETED
            results[sc.sid] = derive(sc.sid, _input_of(case, sc, results))
        else:
            stages[sc.sid] = FAILED if outcome == "raise" else TIMED_OUT
            results[sc.sid] = None
            if outcome == "raise":
                exc_names[sc.sid] = sc.attempt(n).exc
    by_id = case.by_id()
    stopped = not case.continue_on_error and any(
        by_id[sid].critical and s in _FAILURES for sid, s in stages.items()
    )
    if stopped:  # R6.1: a stop with reason ERROR; who else ran is a matter of timing
        return Expected(PipelineStatus.FAILED, CancellationReason.ERROR)
    ordered = {sc.sid: stages[sc.sid] for sc in case.stages}
    return Expected(
        status=_final_status(case, ordered),
        reason=None,
        stages=ordered,
        attempts=attempts,
        results=results,
        exc_names=exc_names,
        skip_roots=_skip_roots(case, ordered),
    )


def _serial(case: Case) -> Expected:
    """One attempt at a time, earliest-added ready stage first (R2.2); retry
    delays are zero, so a retried stage goes straight back on the heap."""
    by_pos = list(case.stages)
    position = {sc.sid: i for i, sc in enumerate(by_pos)}
    dependents: dict[str, list[str]] = {sc.sid: [] for sc in by_pos}
    waiting = {sc.sid: len(sc.deps) for sc in by_pos}
    for sc in by_pos:
        for dep in sc.deps:
            dependents[dep].append(sc.sid)
    stages: dict[str, StageStatus] = {}
    attempts = {sc.sid: 0 for sc in by_pos}
    results: dict[str, object] = {}
    exc_names: dict[str, str] = {}
    order: list[tuple[str, int]] = []
    first_starts: list[str] = []
    ready = [position[sc.sid] for sc in by_pos if not sc.deps]
    heapq.heapify(ready)
    finished = 0
    stop = case.stop
    origin: str | None = None  # "user" or "failure"

    while ready and origin is None:
        sc = by_pos[heapq.heappop(ready)]
        sid = sc.sid
        attempts[sid] += 1
        n = attempts[sid]
        order.append((sid, n))
        if n == 1:
            first_starts.append(sid)
        outcome = _attempt_outcome(case, sc, n)
        if outcome in ("ok", "raise"):  # the attempt ends on its own
            finished += 1
            if stop.kind == CANCEL and finished == stop.after:
                origin = "user"
                if stop.source == RAISE_PCE:
                    stages[sid] = CANCELLED  # R5.3: never retried
                    continue
        if outcome == "ok":
            stages[sid] = COMPLETED
            results[sid] = derive(sid, _input_of(case, sc, results))
            for dep in dependents[sid]:
                waiting[dep] -= 1
                if waiting[dep] == 0:
                    heapq.heappush(ready, position[dep])
            continue
        if origin is None and _retries(case, sc, n, outcome):
            heapq.heappush(ready, position[sid])  # R4.6: only while not stopping
            continue
        stages[sid] = FAILED if outcome == "raise" else TIMED_OUT
        if outcome == "raise":
            exc_names[sid] = sc.attempt(n).exc
        if origin is None and sc.critical and not case.continue_on_error:
            origin = "failure"  # R6.1

    # Whatever never ended: SKIPPED below a failure, else CANCELLED (R5.3, R6.2).
    failed_below: set[str] = set()
    for sc in case.topological():
        if sc.sid in stages:
            continue
        if any(stages.get(d) in _FAILURES or d in failed_below for d in sc.deps):
            stages[sc.sid] = SKIPPED
            failed_below.add(sc.sid)
        else:
            assert origin is not None, f"{sc.sid} never ran although nothing stopped the run"
            stages[sc.sid] = CANCELLED
    ordered = {sc.sid: stages[sc.sid] for sc in by_pos}
    if origin == "user":
        status, reason = PipelineStatus.CANCELLED, stop.reason
    elif origin == "failure":
        status, reason = PipelineStatus.FAILED, CancellationReason.ERROR
    else:
        status, reason = _final_status(case, ordered), None
    cleanups: list[str] = []
    if origin is not None and case.cleanup_on_cancel:
        by_id = case.by_id()
        cleanups = [sid for sid in reversed(first_starts) if by_id[sid].cleanup is not None]
    return Expected(
        status=status,
        reason=reason,
        stages=ordered,
        attempts=attempts,
        results={sid: results.get(sid) for sid in ordered},
        exc_names=exc_names,
        skip_roots=_skip_roots(case, ordered),
        order=order,
        cleanups=cleanups,
    )
