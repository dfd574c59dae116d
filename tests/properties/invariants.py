"""The contract, checked on one recorded run of a generated case.

``violations(case, obs)`` returns a list of messages, each starting with the
rule it checks; ``assert_contract`` fails with all of them at once. The
checks hold for every case, whatever the timing; ``compare_with_model``
adds the exact predictions of the reference model for deterministic cases.

Whatever executor runs a stage (R11.8), the same checks apply to the attempts
as the engine saw them (see ``harness``): for thread and process stages the
start, deadline and end come from the loop side of the executor call. On top:
R11.2 (a handler where its executor says, a coroutine on the loop), R11.5 (a
thread still running after ``execute()`` is reported) and R11.4/R11.6 (what a
worker process raised comes back as itself; a worker that exited fails the
attempt with an error naming the stage and how).
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import event

from proxima.data.pipeline import (
    CancellationReason,
    DependencyFailedException,
    PipelineCancelledException,
    PipelineStatus,
    StageStatus,
    StageTimeoutException,
)

from .harness import (
    CANCELLED,
    HANG_CAP,
    PCE,
    RAISED,
    RETURNED,
    AttemptLog,
    Observation,
)
from .model import Expected
from .strategies import (
    DIE,
    FAILURES,
    FROM_STAGE,
    PIPELINE_TIMEOUT,
    PROCESS,
    RAISE,
    RAISE_PCE,
    USER_REASONS,
    Case,
    StageCase,
)

_TERMINAL = {
    StageStatus.COMPLETED,
    StageStatus.FAILED,
    StageStatus.TIMED_OUT,
    StageStatus.CANCELLED,
    StageStatus.SKIPPED,
}
_FAILURES = (StageStatus.FAILED, StageStatus.TIMED_OUT)
#: Clock slack when comparing a recorded duration with a configured one.
_SLACK = 0.002


def violations(case: Case, obs: Observation) -> list[str]:
    out: list[str] = []
    bad = out.append
    rec = obs.rec
    if obs.hung:
        bad(
            "R5.2/R5.5: execute() did not return within the watchdog "
            f"({obs.duration:.1f}s): a stop or timeout never completed"
        )
    if obs.raised is not None:
        bad(f"R1.4: execute() raised {obs.raised!r} (failures belong in the result)")
    result = obs.result
    if result is None:
        bad("R10.1: no PipelineResult recorded")
        return out
    if obs.leftover_tasks:
        bad(f"R5.2: tasks still running after execute() returned: {obs.leftover_tasks}")
    if rec.live:
        bad(f"R5.2: {rec.live} attempt(s) still running after execute() returned")
    out.extend(rec.misplaced)  # R11.2 and R3, as the handlers saw them
    _still_running(obs, bad)

    if obs.live_state is not None:
        running, same, pipeline_status, live = obs.live_state
        if running or not same or pipeline_status is not result.status:
            bad(
                f"R10.1: after execute(): is_running={running}, result recorded={same}, "
                f"status={pipeline_status} vs {result.status}"
            )
        if live != {sid: r.status for sid, r in result.stage_results.items()}:
            bad("R2.5: stage_statuses() after the run differs from the stage results")

    by_id = case.by_id()
    ids = [sc.sid for sc in case.stages]
    # -- R7.1: exactly one terminal result per stage, in insertion order -------------
    if list(result.stage_results) != ids:
        bad(f"R7.1: stage_results keys {list(result.stage_results)} != insertion order {ids}")
        return out
    status: dict[str, StageStatus] = {}
    for sid, sr in result.stage_results.items():
        status[sid] = sr.status
        if sr.stage_id != sid or sr.status not in _TERMINAL:
            bad(f"R7.1: {sid}: result {sr.stage_id!r} with non-terminal status {sr.status}")
    if result.successful_stages != [s for s in ids if status[s] is StageStatus.COMPLETED]:
        bad("R7.2: successful_stages is not the COMPLETED stages in stage order")
    if result.failed_stages != [s for s in ids if status[s] in _FAILURES]:
        bad("R7.2: failed_stages is not the FAILED/TIMED_OUT stages in stage order")

    # -- who stopped the run (R6.3, R6.4) -----------------------------------------------
    reason = result.cancellation_reason
    stopped = reason is not None
    user_stop = reason in USER_REASONS
    for source, begun in rec.cancel_requests:
        if source in (FROM_STAGE, RAISE_PCE) and not begun and reason != case.stop.reason:
            bad(
                f"R5.1/R6.4: a stop was requested from a stage before any other stop, "
                f"but cancellation_reason is {reason} (first stop wins)"
            )
    if user_stop:
        if not rec.cancel_requests or reason is not case.stop.reason:
            bad(f"R6.4: cancellation_reason {reason} but no such stop was requested")
        if result.status is not PipelineStatus.CANCELLED:
            bad(f"R6.3: stopped by cancel() ({reason}) but status is {result.status.name}")
    elif reason is CancellationReason.TIMEOUT:
        if case.stop.kind != PIPELINE_TIMEOUT:
            bad("R6.4: cancellation_reason TIMEOUT without a pipeline timeout")
        elif obs.duration < case.stop.timeout - _SLACK:  # type: ignore[operator]
            bad(f"R5.5: pipeline timed out after {obs.duration:.4f}s < {case.stop.timeout}s")
        if result.status is not PipelineStatus.FAILED:
            bad(f"R5.5/R6.3: pipeline timeout but status is {result.status.name}")
        if result.metadata.get("pipeline_timeout_seconds") != case.stop.timeout:
            bad("R7.4: metadata['pipeline_timeout_seconds'] missing after a pipeline timeout")
    elif reason is CancellationReason.ERROR:
        if case.continue_on_error or not any(
            by_id[s].critical and status[s] in _FAILURES for s in ids
        ):
            bad("R6.1/R6.4: reason ERROR but no critical stage failed in stop-on-error mode")
        if result.status is not PipelineStatus.FAILED:
            bad(f"R6.3: stopped by a failure but status is {result.status.name}")
    elif reason is CancellationReason.EXTERNAL:
        if not rec.outer_cancelled:
            bad("R6.4: cancellation_reason EXTERNAL without the caller's cancellation")
        if result.status is not PipelineStatus.CANCELLED:
            bad(f"R5.6/R6.3: the caller's cancellation but status is {result.status.name}")
    elif reason is not None:
        bad(f"R6.4: unexpected cancellation_reason {reason}")
    else:
        # Not stopped: R6.3's table, and no stopping failure went unnoticed.
        if any(s is StageStatus.CANCELLED for s in status.values()):
            bad(f"R5.3/R6.4: CANCELLED stages but cancellation_reason is None: {status}")
        if not case.continue_on_error:
            for sid in ids:
                if by_id[sid].critical and status[sid] in _FAILURES:
                    bad(
                        f"R6.1: critical {sid} ended {status[sid].name} but the run was not stopped"
                    )
        expected = _r6_3_status(case, status)
        if result.status is not expected:
            bad(f"R6.3: status {result.status.name}, expected {expected.name} for {status}")

    # The caller's cancellation propagates (R5.6); if execute() returned, the
    # run had ended before it arrived.
    if rec.outer_propagated is False and reason is CancellationReason.EXTERNAL:
        bad("R5.6: execute() returned a result stopped by the caller's cancellation")
    if rec.outer_propagated and reason is None:
        bad("R5.6: execute() raised the caller's cancellation but the result shows no stop")

    # A critical stage that failed before any stop began stopped the run (R6.1),
    # and that first stop decides the reason (R5.1: the first stop wins).
    # "Before" is read when the engine got the failure; a stop from another OS
    # thread can still land between that and the engine acting on it, and
    # then it is first (only the status must agree with it: R6.3 above).
    thread_stop_first = rec.entries_at_thread_stop is not None and reason is case.stop.reason
    if not case.continue_on_error and not thread_stop_first:
        for sid in ids:
            logs = rec.attempts[sid]
            if (
                by_id[sid].critical
                and status[sid] in _FAILURES
                and logs
                and not logs[-1].stop_begun_at_exit
                and reason is not CancellationReason.ERROR
                and not (rec.outer_cancelled and reason is CancellationReason.EXTERNAL)
            ):
                bad(
                    f"R6.1/R6.4: critical {sid} ended {status[sid].name} before any stop, "
                    f"so the run stops with ERROR, but cancellation_reason is {reason}"
                )

    # -- per stage ----------------------------------------------------------------------
    dependencies_ok(case, obs, bad)
    for sc in case.stages:
        _stage(case, sc, obs, status, stopped, bad)

    # -- R2.1: concurrency ----------------------------------------------------------------
    # Live *attempts*, from the engine's call to the engine's end: a thread
    # abandoned at its deadline or at a forced stop runs on, but its attempt
    # is over and holds no slot (R11.5); R5.2 below counts the same way.
    if rec.max_live > case.limit:
        bad(f"R2.1: {rec.max_live} attempts ran at once, limit is {case.limit}")

    # -- R5.4: cleanup ----------------------------------------------------------------------
    _cleanup(case, obs, stopped, bad)
    return out


def _cleanup(case: Case, obs: Observation, stopped: bool, bad: Any) -> None:
    """R5.4 (and R11.9: a plain-function cleanup runs in a worker thread).

    The cleanup timeout counts from the engine's start of the cleanup, the
    hop to the worker thread included: on a loaded machine a plain-function
    cleanup can time out before its thread has called it (asyncio then never
    calls it; trio may, late). Such a cleanup, recorded as timed out after
    the full timeout, is left out of the order check."""
    result = obs.result
    rec = obs.rec
    assert result is not None
    by_id = case.by_id()
    errors = result.metadata.get("cleanup_errors", {})
    log = result.metadata.get("cleanup", {})
    hop_late = _hop_late(case, obs)
    want: list[str] = []
    if stopped and case.cleanup_on_cancel:
        want = [s for s in reversed(rec.first_starts) if by_id[s].cleanup is not None]
    ran = [s for s in rec.cleanups if s not in hop_late]
    if ran != [s for s in want if s not in hop_late] or not set(rec.cleanups) <= set(want):
        bad(
            f"R5.4: cleanups ran {rec.cleanups}, expected {want} "
            f"(reverse start order of started stages, only after a stop; log {log})"
        )
    if any(rec.handlers_live_at_cleanup):
        bad("R5.4: a cleanup ran while stage handlers were still running")
    if rec.cleanup_max_live > 1:
        bad("R5.4: cleanups ran concurrently")
    want_errors = {s for s in ran if by_id[s].cleanup in ("raise", "hang")} | hop_late
    if set(errors) != want_errors:
        bad(
            f"R5.4: cleanup_errors {sorted(errors)} != failing cleanups {sorted(want_errors)} "
            f"(log {log})"
        )


def _hop_late(case: Case, obs: Observation) -> set[str]:
    """Plain-function cleanups that timed out, after the full timeout: maybe
    before their worker thread ever called them (see ``_cleanup``)."""
    result = obs.result
    if result is None or case.cleanup_timeout is None:
        return set()
    by_id = case.by_id()
    log = result.metadata.get("cleanup", {})
    limit_ms = case.cleanup_timeout * 1000
    return {
        sid
        for sid, error in result.metadata.get("cleanup_errors", {}).items()
        if by_id[sid].cleanup in ("sync", "raise")
        and "timed out" in str(error)
        and log.get(sid, {}).get("duration_ms", 0.0) >= limit_ms - 2
    }


def _still_running(obs: Observation, bad: Any) -> None:
    """R11.5: a thread still running when ``execute()`` returned is reported
    in ``result.metadata["still_running"]``. (The converse is not checked: a
    listed thread may have ended in the meantime.)"""
    result = obs.result
    if result is None or not obs.rec.threads_after_run:
        return
    listed = result.metadata.get("still_running", {})
    missing = sorted(obs.rec.threads_after_run - set(listed))
    if missing:
        bad(
            f"R11.5: threads of {missing} ran on after execute() returned, but "
            f"metadata['still_running'] is {listed!r}"
        )


def _r6_3_status(case: Case, status: dict[str, StageStatus]) -> PipelineStatus:
    by_id = case.by_id()
    if all(s is StageStatus.COMPLETED for s in status.values()):
        return PipelineStatus.COMPLETED
    if not any(s is StageStatus.COMPLETED for s in status.values()):
        return PipelineStatus.FAILED
    if any(by_id[sid].critical and s is not StageStatus.COMPLETED for sid, s in status.items()):
        return PipelineStatus.FAILED
    return PipelineStatus.PARTIALLY_COMPLETED


def dependencies_ok(case: Case, obs: Observation, bad: Any) -> None:
    """R2.1 (no start before every dependency COMPLETED) and R3 (input)."""
    result = obs.result
    assert result is not None
    for sc in case.stages:
        for log in obs.rec.attempts[sc.sid]:
            not_done = [d for d, s in log.deps_status.items() if s is not StageStatus.COMPLETED]
            if not_done or not log.deps_returned:
                bad(
                    f"R2.1: {sc.sid} attempt {log.n} started before {not_done or sc.deps} completed"
                )
                continue
            want = _expected_input(case, sc, result.stage_results)
            if log.input != want or (
                isinstance(want, dict) and list(log.input) != list(want)  # R3.3: dependency order
            ):
                bad(f"R3: {sc.sid} attempt {log.n} got input {log.input!r}, expected {want!r}")


def _expected_input(case: Case, sc: StageCase, results: dict[str, Any]) -> Any:
    if not sc.deps:
        return case.initial_input  # R3.1
    if len(sc.deps) == 1:
        return results[sc.deps[0]].result  # R3.2
    return {dep: results[dep].result for dep in sc.deps}  # R3.3


def _transitive_failed(case: Case, sid: str, status: dict[str, StageStatus]) -> set[str]:
    by_id = case.by_id()
    found: set[str] = set()
    seen: set[str] = set()
    todo = list(by_id[sid].deps)
    while todo:
        dep = todo.pop()
        if dep in seen:
            continue
        seen.add(dep)
        if status[dep] in _FAILURES:
            found.add(dep)
        todo.extend(by_id[dep].deps)
    return found


def _stage(
    case: Case,
    sc: StageCase,
    obs: Observation,
    status: dict[str, StageStatus],
    stopped: bool,
    bad: Any,
) -> None:
    assert obs.result is not None
    sid = sc.sid
    sr = obs.result.stage_results[sid]
    logs: list[AttemptLog] = obs.rec.attempts[sid]
    rc = case.retry_of(sc)
    timeout = case.timeout_of(sc)
    st = sr.status
    if sr.attempt_count != len(logs):
        bad(f"R4.5: {sid} attempt_count {sr.attempt_count} but the handler ran {len(logs)} times")
    if len(logs) > rc.max_attempts:
        bad(f"R4.1: {sid} ran {len(logs)} attempts, at most {rc.max_attempts} allowed")
    if case.collect_metrics:
        _metrics(sid, sr.metrics, logs, bad)

    failed_roots = _transitive_failed(case, sid, status)
    if not logs:
        # R6.2 / R5.3: a stage that never started.
        if failed_roots:
            if st is not StageStatus.SKIPPED:
                bad(f"R5.3/R6.2: {sid} never started below failed {failed_roots} but is {st.name}")
            elif not (
                isinstance(sr.exception, DependencyFailedException)
                and sr.exception.stage_id == sid
                and sr.exception.failed_dependency in failed_roots
            ):
                bad(f"R6.2: {sid} SKIPPED with {sr.exception!r}, roots are {failed_roots}")
        elif st is StageStatus.SKIPPED:
            bad(f"R6.2: {sid} SKIPPED though no dependency failed")
        elif st is not StageStatus.CANCELLED or not stopped:
            bad(f"R5.3: {sid} never started, is {st.name}, run stopped: {stopped}")
        return

    if st is StageStatus.SKIPPED:
        bad(f"R6.2: {sid} started but ended SKIPPED")
        return
    for log in logs:
        if log.stop_begun_at_entry:
            bad(f"R5.2: {sid} attempt {log.n} was called after the stop began (no new attempt)")
        if log.exit == HANG_CAP:
            bad(f"R4.4/R5.2: {sid} attempt {log.n} hung and was never cancelled")
        if log.exit is None:
            bad(f"R5.2: {sid} attempt {log.n} never finished")
        if sc.executor == PROCESS and log.exit == RAISED:
            _crossed_back(sc, log, bad)
    # Every attempt but the last failed in a retryable way, before any stop (R4).
    for prev, nxt in itertools.pairwise(logs):
        why = _retry_reason(case, sc, prev)
        if why:
            bad(f"R4: {sid} attempt {prev.n} was retried although {why}")
        gap = nxt.start - (prev.end or nxt.start)
        delay = rc.delay(prev.n - 1)
        if gap < delay - _SLACK:
            bad(f"R4.2: {sid} retry {prev.n} came after {gap * 1000:.2f} ms < {delay * 1000:g} ms")
    last = logs[-1]
    if st is StageStatus.COMPLETED:
        if last.exit != RETURNED:
            bad(f"R4.5: {sid} COMPLETED but its last attempt ended {last.exit}")
        elif sr.result != last.value:
            bad(f"R3: {sid} result {sr.result!r} != returned {last.value!r}")
    elif st is StageStatus.FAILED:
        if last.exit != RAISED:
            bad(f"R4.5: {sid} FAILED but its last attempt ended {last.exit}")
        elif sr.exception is not last.exc:
            bad(f"R4.5: {sid} FAILED with {sr.exception!r}, not the raised {last.exc!r}")
        elif type(last.exc).__name__ not in (sr.error or ""):
            bad(f"R4.5: {sid} error {sr.error!r} does not name {type(last.exc).__name__}")
        _not_retried_enough(case, sc, last, stopped, bad)
    elif st is StageStatus.TIMED_OUT:
        if timeout is None:
            bad(f"R4.4: {sid} TIMED_OUT without a stage timeout")
        elif last.exit not in (CANCELLED, RETURNED) or not _past_deadline(last):
            took = (last.end or last.start) - last.start
            bad(
                f"R4.4/R5.3: {sid} TIMED_OUT after {took * 1000:.1f} ms, before its deadline "
                f"(timeout {timeout * 1000:g} ms, attempt ended {last.exit})"
            )
        if not (
            isinstance(sr.exception, StageTimeoutException)
            and sr.exception.stage_id == sid
            and sr.exception.timeout_seconds == timeout
        ):
            bad(f"R4.5: {sid} TIMED_OUT with {sr.exception!r}")
        _not_retried_enough(case, sc, last, stopped, bad)
    elif st is StageStatus.CANCELLED:
        if not stopped:
            bad(f"R5.3: {sid} CANCELLED but the run was not stopped")
        if not isinstance(sr.exception, PipelineCancelledException):
            bad(f"R5.3: {sid} CANCELLED with {sr.exception!r}")
        if last.exit == RETURNED and not last.stop_begun_at_exit:
            # Returning after a stop began may be too late: once the grace
            # period is over (or the run was cancelled at once), a value that
            # comes back no longer counts.
            bad(f"R5.2: {sid} returned a value but ended CANCELLED")
        if last.exit == RAISED and (last.stop_begun_at_exit or _retry_reason(case, sc, last)):
            bad(f"R4.6: {sid} raised after the stop / without a retry, yet ended CANCELLED")


def _crossed_back(sc: StageCase, log: AttemptLog, bad: Any) -> None:
    """R11.4, R11.6: what a process stage's attempt raised is what its
    handler raised in the worker, as itself; a worker that exited fails the
    attempt with an error naming the stage and how it died."""
    behaviour = sc.attempt(log.n)
    want = FAILURES.get(behaviour.exc) if behaviour.kind in (RAISE, DIE) else None
    if want is None or type(log.exc) is not want:
        bad(f"R11.4: {sc.sid} attempt {log.n} ({behaviour!r}) came back raising {log.exc!r}")
    elif behaviour.kind == DIE and (
        repr(sc.sid) not in str(log.exc) or "code 3" not in str(log.exc)
    ):
        bad(f"R11.6: {sc.sid}: a dead worker's error does not say which and how: {log.exc}")


def _past_deadline(log: AttemptLog) -> bool:
    """Whether the attempt ended at or after its stage deadline (both read on
    the event loop's clock, so preemption cannot skew them)."""
    return log.end is not None and log.end >= log.deadline - 1e-4


#: The R7.6 attempt outcome each way a handler can end maps to.
_OUTCOMES = {
    RETURNED: {"completed", "timed_out"},  # returned past its deadline: timed out
    RAISED: {"failed"},
    PCE: {"cancelled"},
    CANCELLED: {"cancelled", "timed_out"},
}


def _metrics(sid: str, metrics: dict[str, Any], logs: list[AttemptLog], bad: Any) -> None:
    """R7.6: queue_wait_ms, retry_delay_ms, and one attempts entry per attempt
    with the outcome the handler saw."""
    for key in ("queue_wait_ms", "retry_delay_ms"):
        value = metrics.get(key)
        if not isinstance(value, float) or value < 0:
            bad(f"R7.6: {sid} metrics[{key!r}] = {value!r}")
    entries = metrics.get("attempts", [])
    if len(entries) != len(logs):
        bad(f"R7.6: {sid} metrics['attempts'] has {len(entries)} entries for {len(logs)} attempts")
        return
    for entry, log in zip(entries, logs, strict=True):
        allowed = _OUTCOMES.get(log.exit or "", set())
        if log.exit == RETURNED and log.stop_begun_at_exit:
            # A value that reaches the run only after the grace period ran
            # out is discarded, the attempt logged cancelled (R5.2): on a
            # loaded machine the handler can return in the very loop tick
            # in which the grace period ends.
            allowed = allowed | {"cancelled"}
        if entry.get("attempt") != log.n or entry.get("outcome") not in allowed:
            bad(f"R7.6: {sid} attempt {log.n} ended {log.exit} but metrics say {entry}")


def _retry_reason(case: Case, sc: StageCase, log: AttemptLog) -> str:
    """Why attempt ``log`` must not be followed by another; '' if it may."""
    rc = case.retry_of(sc)
    timeout = case.timeout_of(sc)
    if log.n >= rc.max_attempts:
        return f"attempt {log.n} was the last allowed (R4.1)"
    if log.exit == RAISED:
        if log.stop_begun_at_exit:
            return "it failed after a stop began (R4.6)"
        name = type(log.exc).__name__
        if name in FAILURES and not rc.retries_exception(name):
            return f"{name} is not in retry_on_exceptions (R4.3)"
        return ""
    if log.exit == CANCELLED:
        if timeout is None or not _past_deadline(log):
            return "it was cancelled before its deadline, not timed out (R4.3)"
        if not rc.retry_on_timeout:
            return "retry_on_timeout is off (R4.4)"
        return ""
    if log.exit == RETURNED and timeout is not None and _past_deadline(log):
        # It returned, but only after its deadline (a loaded machine): an
        # attempt that overran its deadline has timed out (R4.4).
        return "" if rc.retry_on_timeout else "retry_on_timeout is off (R4.4)"
    return f"it ended {log.exit} (R4.3, R5.3)"


def _not_retried_enough(
    case: Case, sc: StageCase, last: AttemptLog, stopped: bool, bad: Any
) -> None:
    """A failed stage whose last attempt could have been retried must have
    been stopped from retrying (R4.1, R4.6)."""
    if not _retry_reason(case, sc, last) and not stopped:
        bad(f"R4.1: {sc.sid} ended after attempt {last.n} though a retry was due")


def compare_with_model(case: Case, obs: Observation, model: Expected) -> list[str]:
    """The real run against the reference model (deterministic cases only)."""
    out: list[str] = []
    bad = out.append
    result = obs.result
    if result is None:
        return ["model: no result"]
    if (result.status, result.cancellation_reason) != (model.status, model.reason):
        bad(
            f"model R6.3/R6.4: got {result.status.name}/{result.cancellation_reason}, "
            f"model says {model.status.name}/{model.reason}"
        )
    if model.stages is not None:
        got = {sid: r.status for sid, r in result.stage_results.items()}
        if got != model.stages:
            diff = {
                s: (got[s].name, model.stages[s].name) for s in got if got[s] != model.stages[s]
            }
            bad(f"model: stage statuses differ (got, model): {diff}")
    if model.attempts is not None:
        got_n = {sid: r.attempt_count for sid, r in result.stage_results.items()}
        if got_n != model.attempts:
            diff_n = {
                s: (got_n[s], model.attempts[s]) for s in got_n if got_n[s] != model.attempts[s]
            }
            bad(f"model R4: attempt counts differ (got, model): {diff_n}")
    if model.results is not None:
        for sid, want in model.results.items():
            if result.stage_results[sid].result != want:
                bad(f"model R3: {sid} result {result.stage_results[sid].result!r} != {want!r}")
    for sid, name in model.exc_names.items():
        exc = result.stage_results[sid].exception
        if type(exc) is not FAILURES[name]:
            bad(f"model R4.5: {sid} exception {exc!r}, expected a {name}")
    for sid, roots in model.skip_roots.items():
        exc = result.stage_results[sid].exception
        if not isinstance(exc, DependencyFailedException) or exc.failed_dependency not in roots:
            bad(f"model R6.2: {sid} skipped with {exc!r}, roots {roots}")
    if model.order is not None and obs.rec.entry_order != model.order:
        bad(f"model R2.2: attempts ran in order {obs.rec.entry_order}, model says {model.order}")
    late = _hop_late(case, obs)
    if model.cleanups is not None and [s for s in obs.rec.cleanups if s not in late] != [
        s for s in model.cleanups if s not in late
    ]:
        bad(f"model R5.4: cleanups {obs.rec.cleanups}, model says {model.cleanups}")
    return out


def signature(obs: Observation, keys: set[str] | None = None) -> dict[str, Any]:
    """What must not depend on the backend for a deterministic case (R1.1)."""
    result = obs.result
    if result is None:
        return {}
    late = _hop_late(obs.rec.case, obs)  # timing, not the backend
    sig: dict[str, Any] = {
        "pipeline": (result.status, result.cancellation_reason),
        "cleanup_errors": sorted(set(result.metadata.get("cleanup_errors", {})) - late),
    }
    for sid, r in result.stage_results.items():
        sig[sid] = (r.status, r.attempt_count, r.result, type(r.exception).__name__)
    return sig if keys is None else {k: v for k, v in sig.items() if k in keys}


def signature_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def assert_contract(case: Case, *observations: Observation, model: Expected | None = None) -> None:
    problems: list[str] = []
    for obs in observations:
        found = violations(case, obs)
        if model is not None:
            found += compare_with_model(case, obs, model)
        problems += [f"[{obs.backend}] {msg}" for msg in found]
    if problems:
        raise AssertionError(
            "contract violated:\n  " + "\n  ".join(problems[:40]) + f"\n(case: {case!r})"
        )


def note(case: Case, *observations: Observation) -> None:
    """Label the example for ``--hypothesis-show-statistics``, to see that the
    generated runs cover stops, retries, timeouts, skips and full slots."""
    n = len(case.stages)
    event(f"stages: {'0' if not n else '1-10' if n <= 10 else '11-30' if n <= 30 else '31-60'}")
    for obs in observations[:1]:
        result = obs.result
        if result is None:
            continue
        reason = result.cancellation_reason
        event(f"stopped by: {'nothing' if reason is None else reason.name}")
        statuses = {r.status for r in result.stage_results.values()}
        for status in (StageStatus.SKIPPED, StageStatus.TIMED_OUT, StageStatus.CANCELLED):
            if status in statuses:
                event(f"some stage {status.name}")
        if any(r.attempt_count > 1 for r in result.stage_results.values()):
            event("some stage retried")
        if n and obs.rec.max_live == case.limit:
            event("all slots in use at some point")
        if obs.rec.cleanups:
            event("cleanups ran")
        executors = {sc.executor for sc in case.stages}
        event(f"executors: {'+'.join(sorted(executors)) or '-'}")
        logs = [log for logs in obs.rec.attempts.values() for log in logs]
        if any(log.abandoned for log in logs):
            event("a thread abandoned by its attempt")
        if obs.rec.threads_after_run:
            event("a thread still running after execute()")
        if any(log.executor == PROCESS and log.exit == CANCELLED for log in logs):
            event("a worker process killed")
        if any(type(log.exc).__name__ == "WorkerLostError" for log in logs):
            event("a worker process died")
