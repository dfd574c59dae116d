"""Generated pipelines, faults and stops against the contract (semantics.md).

Each test draws a :class:`~.strategies.Case`, runs it in a fresh event loop
of the ``anyio_backend`` param (asyncio in debug mode, trio, asyncio+uvloop)
and checks every invariant of ``invariants.violations`` (each message cites
its rule). The deterministic tests also compare with the reference model in
``model.py``. The example budget comes from the Hypothesis profile: 40 per
test by default, 400 under ``nox -s properties`` (``--hypothesis-profile=thorough``).

Every generated stage runs on a random executor (R11): ``inline`` or
``thread`` everywhere, and ``process`` too in the tests named for it, which
take a fifth of the budget (a worker process's start-up costs ~0.15 s).
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings

from .harness import Harness, run_on
from .invariants import assert_contract, note, signature, signature_diff
from .model import expected
from .strategies import (
    CANCEL,
    FROM_OUTER,
    FROM_STAGE,
    FROM_TASK,
    FROM_THREAD,
    INLINE,
    NO_STOP,
    OK,
    PIPELINE_TIMEOUT,
    PROCESS,
    RAISE,
    RAISE_PCE,
    THREAD,
    Attempt,
    Case,
    StageCase,
    cases,
    on_threads,
)

Backend = tuple[str, dict[str, Any]]

#: The profile's example budget (conftest.py; ``--hypothesis-profile``).
_BUDGET = settings().max_examples

try:
    import uvloop  # noqa: F401
except ImportError:  # pragma: no cover - depends on the platform
    _ALL_BACKENDS: list[Backend] = [("asyncio", {"debug": True}), ("trio", {})]
else:
    _ALL_BACKENDS = [
        ("asyncio", {"debug": True}),
        ("trio", {}),
        ("asyncio", {"debug": True, "use_uvloop": True}),
    ]


@given(case=cases())
def test_r2_r7_contract_holds_under_random_faults_and_stops(
    anyio_backend: Backend, case: Case
) -> None:
    """Random DAGs (0-60 stages), behaviours, flags and stops (none, cancel()
    from a stage/task/thread after k attempts, a PipelineCancelledException,
    a pipeline timeout). Checks R7.1 (one terminal result each, in order),
    R2.1 (dependencies first, at most max_parallel at once), R3 (inputs),
    R4 (attempt counts, retry rules, delays), R5.2/R5.3/R6.2 (SKIPPED exactly
    below failures, CANCELLED only after a stop), R5.4 (cleanup), R6.3/R6.4
    (status and reason), and that no handler or task outlives execute()."""
    obs = run_on(Harness(case), anyio_backend)
    note(case, obs)
    assert_contract(case, obs)


@given(case=cases(stops=(CANCEL, PIPELINE_TIMEOUT), all_cleanups=True, min_stages=2, max_stages=30))
def test_r5_4_cleanup_reverse_start_order_under_random_stops(
    anyio_backend: Backend, case: Case
) -> None:
    """R5.4: after a stop (user cancel, stage-raised cancel, pipeline timeout,
    stopping failure) the cleanup of every started stage runs once, in reverse
    start order, one at a time, after all handlers ended; failing or hanging
    cleanups land in metadata['cleanup_errors'] and change nothing else; no
    cleanup runs after a normal finish. All other invariants are checked too."""
    obs = run_on(Harness(case), anyio_backend)
    note(case, obs)
    assert_contract(case, obs)


@given(case=cases(stops=(PIPELINE_TIMEOUT, CANCEL), slow_retries=True, min_stages=2, max_stages=20))
def test_r4_6_r5_2_stops_landing_in_retry_delays_still_end_the_run(
    anyio_backend: Backend, case: Case
) -> None:
    """R4.6, R5.2, R5.5: most attempts fail and wait 10-20 ms before their
    retry; stops (pipeline timeout, cancel() from anywhere) land during those
    delays while other stages hang or work. The waiting stages end CANCELLED
    at once, the grace period still bounds the running ones (a hang is
    cancelled, execute() returns), and every other invariant holds."""
    obs = run_on(Harness(case), anyio_backend)
    note(case, obs)
    assert_contract(case, obs)


@given(
    case=cases(
        stops=(CANCEL,),
        sources=(FROM_OUTER,),
        min_stages=1,
        max_stages=30,
        slow_retries=False,
    )
)
def test_r5_6_caller_cancellation_at_random_moments(anyio_backend: Backend, case: Case) -> None:
    """R5.6: the caller's cancellation (a cancel scope around execute())
    arriving after k attempts: it propagates (never swallowed), running
    stages end at once, no new attempt starts (R5.2), cleanup runs (R5.4),
    pipeline.result is CANCELLED/EXTERNAL, and all other invariants hold."""
    obs = run_on(Harness(case), anyio_backend)
    note(case, obs)
    assert_contract(case, obs)


#: Issue 9, item 12 (``--hypothesis-seed=0`` on a loaded machine): a stopping
#: failure 1 ms into a parallel run with a 1 ms grace period, while other
#: attempts end at 2 ms: one of them may return in the very loop tick in
#: which the grace period runs out. The library discards such a value (R5.2:
#: the attempt is logged ``cancelled``, the stage ends CANCELLED); the model
#: predicts only FAILED/ERROR for such a run, which that race cannot change,
#: and R7.6 allows ``cancelled`` for an attempt that returned after the stop
#: began.
_GRACE_RACE = Case(
    stages=(
        StageCase("s0", (), (Attempt(RAISE, delay=0.001),), critical=True),
        *(
            StageCase(f"s{i}", (), (Attempt(OK, delay=0.002),), executor=executor)
            for i, executor in ((1, INLINE), (2, THREAD), (3, INLINE), (4, THREAD))
        ),
    ),
    parallel=True,
    max_parallel=8,
    grace=0.001,
)


@example(case=_GRACE_RACE)
@given(case=cases(deterministic=True, serial=False, stops=(NO_STOP,)))
def test_r6_reference_model_agrees_on_parallel_runs_without_stops(
    anyio_backend: Backend, case: Case
) -> None:
    """R3, R4.1-R4.5, R6.1-R6.3: with no stop and no timing races, terminal
    statuses, attempt counts, results, exceptions and the final status equal
    the sequential reference model's; a stopping failure gives FAILED/ERROR."""
    model = expected(case)
    obs = run_on(Harness(case), anyio_backend)
    note(case, obs)
    assert_contract(case, obs, model=model)


@given(
    case=cases(
        deterministic=True,
        serial=True,
        stops=(NO_STOP, CANCEL),
        sources=(FROM_STAGE, RAISE_PCE),
        max_stages=40,
    )
)
def test_r2_2_serial_runs_follow_the_model_including_in_stage_stops(
    anyio_backend: Backend, case: Case
) -> None:
    """R2.2: with parallel_stages=False attempts run one at a time in
    earliest-added topological order (retries re-queued); stops raised from
    inside a stage (R5.1), stopping failures (R6.1) and the resulting
    statuses (R5.3, R6.2, R6.3), attempt counts (R4.6) and cleanup order
    (R5.4) all match the reference model exactly."""
    model = expected(case)
    obs = run_on(Harness(case), anyio_backend)
    note(case, obs)
    assert_contract(case, obs, model=model)


@given(
    case=cases(deterministic=True, serial=False, stops=(NO_STOP,), max_stages=30)
    | cases(
        deterministic=True,
        serial=True,
        stops=(NO_STOP, CANCEL),
        sources=(FROM_STAGE, RAISE_PCE),
        max_stages=30,
    )
)
def test_r1_1_same_outcome_on_asyncio_trio_and_uvloop(case: Case) -> None:
    """R1.1: one generated case, run by the same Pipeline object on asyncio,
    trio and asyncio+uvloop (each in a new event loop; R8.6: a finished
    pipeline runs again from a fresh context), gives the same statuses,
    attempt counts, results, exception types, reason and cleanup errors on
    every backend, equal to the reference model's."""
    harness = Harness(case)
    model = expected(case)
    observations = [run_on(harness, backend) for backend in _ALL_BACKENDS]
    note(case, *observations)
    assert_contract(case, *observations, model=model)
    # A stopping failure in a parallel run leaves the other stages' fates to
    # timing: then only the pipeline's status and reason must agree.
    keys = None if model.stages is not None else {"pipeline"}
    first = signature(observations[0], keys)
    for obs in observations[1:]:
        diff = signature_diff(signature(obs, keys), first)
        assert not diff, f"({obs.backend}, {observations[0].backend}) differ: {diff}"


@given(case=cases(max_stages=20))
def test_r8_6_same_pipeline_runs_again_after_any_outcome(
    anyio_backend: Backend, case: Case
) -> None:
    """R8.6: after any generated outcome (stops, failures, timeouts) the same
    Pipeline executes again, from a fresh context, and the contract holds
    for every run."""
    harness = Harness(case)
    for _ in range(2):
        obs = run_on(harness, anyio_backend)
        note(case, obs)
        assert_contract(case, obs)


@settings(max_examples=max(1, _BUDGET // 4))
@given(
    case=cases(deterministic=True, serial=False, stops=(NO_STOP,), executors=(INLINE,))
    | cases(
        deterministic=True,
        serial=True,
        stops=(NO_STOP, CANCEL),
        sources=(FROM_STAGE, RAISE_PCE),
        max_stages=40,
        executors=(INLINE,),
    )
)
def test_r11_2_stages_moved_to_threads_end_as_inline_ones(
    anyio_backend: Backend, case: Case
) -> None:
    """R11.2, R11.8: a deterministic all-inline case, and the same case with
    every stage that can stay deterministic there moved to a worker thread
    (``strategies.on_threads``), give the same statuses, attempt counts,
    results, exception types, reason and cleanup errors, both equal to the
    reference model's; the contract holds for both runs."""
    threaded = on_threads(case)
    model = expected(case)
    inline = run_on(Harness(case), anyio_backend)
    moved = run_on(Harness(threaded), anyio_backend)
    note(threaded, moved)
    assert_contract(case, inline, model=model)
    assert_contract(threaded, moved, model=expected(threaded))
    keys = None if model.stages is not None else {"pipeline"}
    diff = signature_diff(signature(moved, keys), signature(inline, keys))
    assert not diff, f"thread stages and inline ones differ (thread, inline): {diff}"


#: The process tests' budget: a fifth of the profile's (8 by default).
_PROCESS_BUDGET = settings(max_examples=max(1, _BUDGET // 5))


def _with_process_stages(case: Case) -> bool:
    return any(sc.executor == PROCESS for sc in case.stages)


@_PROCESS_BUDGET
@given(
    case=cases(
        deterministic=True,
        serial=False,
        stops=(NO_STOP,),
        min_stages=2,
        max_stages=5,
        executors=(INLINE, THREAD, PROCESS),
    ).filter(_with_process_stages)
)
def test_r11_4_process_stages_follow_the_model(anyio_backend: Backend, case: Case) -> None:
    """R11.4, R11.6, R11.8: stages in worker processes (the handler a
    module-level function, pickled by reference; the input and result
    crossing by pickle) among inline and thread ones. The recorder cannot
    see into a worker: for a process stage it checks what the parent sees,
    the attempt's start, end and how it came back (a value, the handler's own
    exception type, WorkerLostError naming the stage for a worker that
    exited, a kill at the deadline), and the model's statuses, attempt
    counts, results derived from the input that crossed, and exception
    types. All other invariants hold."""
    model = expected(case)
    obs = run_on(Harness(case), anyio_backend)
    note(case, obs)
    assert_contract(case, obs, model=model)


@_PROCESS_BUDGET
@given(
    case=cases(
        stops=(CANCEL, PIPELINE_TIMEOUT),
        sources=(FROM_TASK, FROM_THREAD, FROM_OUTER),
        min_stages=2,
        max_stages=5,
        executors=(INLINE, THREAD, PROCESS),
    ).filter(_with_process_stages)
)
def test_r11_5_stops_and_timeouts_end_process_stages(anyio_backend: Backend, case: Case) -> None:
    """R11.5, R5.2, R5.6: stops from another task, another thread or the
    caller, and pipeline timeouts, landing on process stages that block,
    hang, cooperate through the stand-in context or die: the worker is
    killed, execute() returns (or raises the caller's cancellation), no
    attempt outlives it, and every invariant holds for what the parent sees.
    (Stops from inside a handler are not drawn: a process stage's handler
    cannot steer the run, R11.4.)"""
    obs = run_on(Harness(case), anyio_backend)
    note(case, obs)
    assert_contract(case, obs)
