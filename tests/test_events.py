"""Run events (R2.5 states, R5 stops, R9 pause, R10.2 logging) and metrics (R7.6).

Every state change of a stage and of the run is one frozen ``PipelineEvent``,
delivered to listeners in order, through ``pipeline.events()`` and as one log
record under ``proxima.data.pipeline``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest
from helpers import (
    blocks_forever,
    executing,
    flaky,
    hangs,
    make_pipeline,
    ok,
    raises,
    st,
)

from proxima.data.pipeline import (
    CancellationReason,
    EventKind,
    Pipeline,
    PipelineCancelledException,
    PipelineContext,
    PipelineEvent,
    PipelineResult,
    PipelineStatus,
    RetryConfig,
    RetryStrategy,
    Stage,
    StageStatus,
    StageTimeoutException,
    TimeoutConfig,
)
from proxima.data.pipeline._engine import emitter as _events

pytestmark = pytest.mark.anyio

LOGGER = "proxima.data.pipeline"
#: Upper bound for any one test's run, so a bug fails instead of hanging.
LIMIT = 20
QUEUED, STARTED, RETRYING, FINISHED = (
    EventKind.STAGE_QUEUED,
    EventKind.STAGE_STARTED,
    EventKind.STAGE_RETRYING,
    EventKind.STAGE_FINISHED,
)


def _pipeline(*stages: Stage, **config: Any) -> Pipeline:
    """A pipeline named "events" (the name its events carry), no retries."""
    config.setdefault("name", "events")
    return make_pipeline(*stages, **config)


async def _run(
    pipeline: Pipeline, initial: Any = None
) -> tuple[PipelineResult, list[PipelineEvent]]:
    events: list[PipelineEvent] = []
    pipeline.add_listener(events.append)
    try:
        with anyio.fail_after(LIMIT):
            result = await pipeline.execute(initial)
    finally:
        pipeline.remove_listener(events.append)
    return result, events


def _of(events: list[PipelineEvent], sid: str) -> list[PipelineEvent]:
    return [e for e in events if e.stage_id == sid]


def _kinds(events: list[PipelineEvent]) -> list[EventKind]:
    return [e.kind for e in events]


# -- R2.5: every state change is an event ---------------------------------------------------


async def test_r2_5_each_state_change_is_an_event() -> None:
    pipeline = _pipeline(
        st("a", ok),
        st("b", lambda ctx, data: f"b({data})", ["a"]),
        pipeline_id="pid-1",
        parallel_stages=False,
    )
    result, events = await _run(pipeline)

    assert result.status is PipelineStatus.COMPLETED
    assert [(e.kind, e.stage_id, e.attempt, e.status) for e in events] == [
        (EventKind.RUN_STARTED, None, None, PipelineStatus.RUNNING),
        (QUEUED, "a", 1, StageStatus.QUEUED),
        (STARTED, "a", 1, StageStatus.RUNNING),
        (FINISHED, "a", 1, StageStatus.COMPLETED),
        (QUEUED, "b", 1, StageStatus.QUEUED),
        (STARTED, "b", 1, StageStatus.RUNNING),
        (FINISHED, "b", 1, StageStatus.COMPLETED),
        (EventKind.RUN_FINISHED, None, None, PipelineStatus.COMPLETED),
    ]
    assert {(e.pipeline_id, e.pipeline_name) for e in events} == {("pid-1", "events")}
    last = events[-1]
    assert last.pipeline_result is result
    assert last.reason is None
    assert last.duration_ms == result.duration_ms
    for event in events:
        if event.kind is FINISHED:
            assert event.stage_id is not None
            assert event.stage_result is result.stage_results[event.stage_id]
            assert event.duration_ms == event.stage_result.duration_ms
            assert event.error is None
            assert event.exception is None
        else:
            assert event.stage_result is None
        assert event.delay is None


async def test_r2_5_every_stage_of_a_parallel_diamond_goes_queued_started_finished() -> None:
    pipeline = _pipeline(
        st("a", ok),
        st("b", ok, ["a"]),
        st("c", ok, ["a"]),
        st("d", ok, ["b", "c"]),
    )
    result, events = await _run(pipeline)

    assert result.status is PipelineStatus.COMPLETED
    assert events[0].kind is EventKind.RUN_STARTED
    assert events[-1].kind is EventKind.RUN_FINISHED
    assert _kinds(events).count(EventKind.RUN_FINISHED) == 1
    for sid in "abcd":
        assert _kinds(_of(events, sid)) == [QUEUED, STARTED, FINISHED], sid
    # A dependent is queued only after its dependencies finished.
    position = {(e.kind, e.stage_id): i for i, e in enumerate(events)}
    assert position[(FINISHED, "b")] < position[(QUEUED, "d")]
    assert position[(FINISHED, "c")] < position[(QUEUED, "d")]


async def test_r2_5_events_are_frozen_ordered_and_carry_the_pipeline_id() -> None:
    pipeline = _pipeline(st("a", ok), st("b", ok, ["a"]))
    before = time.time()
    result, events = await _run(pipeline)
    after = time.time()

    assert events
    event = events[0]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.kind = EventKind.RUN_FINISHED  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.stage_id = "x"  # type: ignore[misc]
    monotonic = [e.monotonic for e in events]
    assert monotonic == sorted(monotonic)
    assert all(before - 1 <= e.wall <= after + 1 for e in events)
    assert {e.pipeline_id for e in events} == {pipeline.pipeline_id, result.pipeline_id}
    assert all(isinstance(e.describe(), str) and e.describe() for e in events)


async def test_r4_2_retry_event_carries_get_delay_and_the_error() -> None:
    retry = RetryConfig(
        max_retries=2,
        strategy=RetryStrategy.EXPONENTIAL_BACKOFF,
        initial_delay_seconds=0.01,
        backoff_factor=2.0,
    )
    raised: list[Exception] = []

    async def fails_twice(ctx: PipelineContext, data: Any) -> str:
        if len(raised) < 2:
            raised.append(ValueError(f"boom {len(raised) + 1}"))
            raise raised[-1]
        return "done"

    result, events = await _run(_pipeline(st("f", fails_twice, retry_config=retry)))

    assert result.status is PipelineStatus.COMPLETED
    assert [(e.kind, e.attempt) for e in _of(events, "f")] == [
        (QUEUED, 1),
        (STARTED, 1),
        (RETRYING, 1),
        (QUEUED, 2),
        (STARTED, 2),
        (RETRYING, 2),
        (QUEUED, 3),
        (STARTED, 3),
        (FINISHED, 3),
    ]
    retries = [e for e in events if e.kind is RETRYING]
    assert [e.delay for e in retries] == [retry.get_delay(0), retry.get_delay(1)]
    assert [e.error for e in retries] == ["ValueError: boom 1", "ValueError: boom 2"]
    assert [e.exception for e in retries] == raised
    assert all(e.exception is exc for e, exc in zip(retries, raised, strict=True))
    assert {e.status for e in retries} == {StageStatus.RETRYING}


async def test_r2_5_live_status_matches_the_event_when_it_is_delivered() -> None:
    """``event.status`` is the stage's new status: a listener that looks at
    ``pipeline.stage_statuses()`` while handling the event sees the same state."""
    calls = 0

    def fails_once(ctx: PipelineContext, data: Any) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("once")
        return "ok"

    retry = RetryConfig(max_retries=1, strategy=RetryStrategy.CONSTANT, initial_delay_seconds=0.01)
    pipeline = _pipeline(st("f", fails_once, retry_config=retry), st("g", ok, ["f"]))
    seen: list[tuple[EventKind, Any, Any]] = []

    def listener(event: PipelineEvent) -> None:
        if event.stage_id is not None and event.kind is not EventKind.CLEANUP_FINISHED:
            seen.append((event.kind, event.status, pipeline.stage_statuses()[event.stage_id]))

    pipeline.add_listener(listener)
    with anyio.fail_after(LIMIT):
        await pipeline.execute()

    assert RETRYING in [kind for kind, _, _ in seen]
    mismatches = [(kind, said, live) for kind, said, live in seen if said is not live]
    assert mismatches == []


async def test_r9_1_live_run_status_matches_pause_and_resume_events() -> None:
    def pauses(ctx: PipelineContext, data: Any) -> str:
        ctx.pause()
        ctx.resume()
        return "a"

    # On the loop (inline), each event is delivered as the signal is given.
    pipeline = _pipeline(st("a", pauses), executor="inline")
    seen: list[tuple[EventKind, Any, Any]] = []

    def listener(event: PipelineEvent) -> None:
        if event.kind in (EventKind.RUN_PAUSED, EventKind.RUN_RESUMED):
            seen.append((event.kind, event.status, pipeline.status))

    pipeline.add_listener(listener)
    with anyio.fail_after(LIMIT):
        await pipeline.execute()
    assert seen == [
        (EventKind.RUN_PAUSED, PipelineStatus.PAUSED, PipelineStatus.PAUSED),
        (EventKind.RUN_RESUMED, PipelineStatus.RUNNING, PipelineStatus.RUNNING),
    ]


async def test_r4_4_timed_out_attempt_retry_event_carries_the_timeout() -> None:
    calls = 0

    async def slow_once(ctx: PipelineContext, data: Any) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await anyio.sleep_forever()
        return "done"

    retry = RetryConfig(max_retries=1, strategy=RetryStrategy.IMMEDIATE)
    stage = st("t", slow_once, timeout_seconds=0.02, retry_config=retry)
    result, events = await _run(_pipeline(stage))

    assert result.status is PipelineStatus.COMPLETED
    (retrying,) = [e for e in events if e.kind is RETRYING]
    assert retrying.attempt == 1
    assert retrying.delay == 0.0
    assert isinstance(retrying.exception, StageTimeoutException)
    assert retrying.error is not None
    assert "StageTimeoutException" in retrying.error


async def test_r4_5_failed_and_timed_out_stages_finish_with_their_error() -> None:
    pipeline = _pipeline(
        st("bad", raises(ValueError, "boom")),
        st("slow", hangs, timeout_seconds=0.02),
        st("fine", ok),
        continue_on_error=True,
    )
    result, events = await _run(pipeline)

    (bad,) = [e for e in _of(events, "bad") if e.kind is FINISHED]
    assert bad.status is StageStatus.FAILED
    assert bad.error == "ValueError: boom"
    assert isinstance(bad.exception, ValueError)
    assert bad.stage_result is result.stage_results["bad"]
    (slow,) = [e for e in _of(events, "slow") if e.kind is FINISHED]
    assert slow.status is StageStatus.TIMED_OUT
    assert isinstance(slow.exception, StageTimeoutException)
    assert events[-1].kind is EventKind.RUN_FINISHED
    assert events[-1].status is result.status is PipelineStatus.FAILED


async def test_r6_2_skipped_stage_gets_a_finished_event() -> None:
    pipeline = _pipeline(
        st("bad", raises(ValueError, "boom")),
        st("after", ok, ["bad"]),
        st("later", ok, ["after"]),
        st("other", ok),
        continue_on_error=True,
    )
    result, events = await _run(pipeline)

    assert result.stage_results["after"].status is StageStatus.SKIPPED
    for sid in ("after", "later"):
        (finished,) = _of(events, sid)
        assert finished.kind is FINISHED
        assert finished.status is StageStatus.SKIPPED
        assert finished.attempt == 0
        assert finished.error is not None
        assert "DependencyFailedException" in finished.error
        assert finished.stage_result is result.stage_results[sid]
    assert _kinds(_of(events, "other")) == [QUEUED, STARTED, FINISHED]
    assert EventKind.STOP_REQUESTED not in _kinds(events)


# -- R5: stops and cleanup --------------------------------------------------------------------


async def test_r5_1_stop_emits_stop_requested_with_the_first_reason() -> None:
    started = anyio.Event()

    pipeline = _pipeline(
        st("a", blocks_forever(started)),
        st("b", ok, ["a"]),
        timeout=TimeoutConfig(grace_period_seconds=0),
    )
    events: list[PipelineEvent] = []
    pipeline.add_listener(events.append)
    async with executing(pipeline, limit=LIMIT) as run:
        await started.wait()
        pipeline.cancel(CancellationReason.RESOURCE_LIMIT)
        pipeline.cancel(CancellationReason.TIMEOUT)  # ignored: the first reason wins

    result = run.returned
    stops = [e for e in events if e.kind is EventKind.STOP_REQUESTED]
    assert len(stops) == 1
    assert stops[0].reason is CancellationReason.RESOURCE_LIMIT
    assert stops[0].status is PipelineStatus.RUNNING
    kinds = _kinds(events)
    assert kinds.index(EventKind.STOP_REQUESTED) < kinds.index(EventKind.RUN_FINISHED)
    (a_end,) = [e for e in _of(events, "a") if e.kind is FINISHED]
    assert a_end.status is StageStatus.CANCELLED
    assert a_end.attempt == 1
    (b_end,) = _of(events, "b")  # never queued: its dependency never completed
    assert (b_end.kind, b_end.status, b_end.attempt) == (FINISHED, StageStatus.CANCELLED, 0)
    assert events[-1].status is result.status is PipelineStatus.CANCELLED
    assert events[-1].reason is CancellationReason.RESOURCE_LIMIT


async def test_r5_1_stage_raising_cancelled_emits_stop_requested() -> None:
    async def stops(ctx: PipelineContext, data: Any) -> None:
        raise PipelineCancelledException(CancellationReason.USER_REQUESTED)

    result, events = await _run(_pipeline(st("s", stops)))

    assert result.status is PipelineStatus.CANCELLED
    (stop,) = [e for e in events if e.kind is EventKind.STOP_REQUESTED]
    assert stop.reason is CancellationReason.USER_REQUESTED
    (finished,) = [e for e in _of(events, "s") if e.kind is FINISHED]
    assert finished.status is StageStatus.CANCELLED


async def test_r5_5_pipeline_timeout_emits_stop_requested_timeout() -> None:
    timeout = TimeoutConfig(pipeline_timeout_seconds=0.05, grace_period_seconds=0)
    result, events = await _run(_pipeline(st("h", hangs), timeout=timeout))

    assert result.status is PipelineStatus.FAILED
    (stop,) = [e for e in events if e.kind is EventKind.STOP_REQUESTED]
    assert stop.reason is CancellationReason.TIMEOUT
    assert events[-1].reason is CancellationReason.TIMEOUT


async def test_r6_1_stopping_failure_emits_stop_requested_error() -> None:
    pipeline = _pipeline(
        st("bad", raises(ValueError, "boom")),
        st("hang", hangs),
        timeout=TimeoutConfig(grace_period_seconds=0),
    )
    result, events = await _run(pipeline)

    (stop,) = [e for e in events if e.kind is EventKind.STOP_REQUESTED]
    assert stop.reason is CancellationReason.ERROR
    assert result.status is PipelineStatus.FAILED
    kinds = [(e.kind, e.stage_id) for e in events]
    assert kinds.index((FINISHED, "bad")) < kinds.index((EventKind.STOP_REQUESTED, None))


async def test_r5_6_external_cancel_emits_stop_requested_external() -> None:
    """A cancel of the caller's task is a stop too (R5.6): the run reports it
    like every other stop, with reason EXTERNAL, before cleanup and the end."""
    started = anyio.Event()

    cleaned: list[str] = []
    pipeline = _pipeline(
        st("a", blocks_forever(started), cleanup_handler=lambda ctx: cleaned.append("a"))
    )
    events: list[PipelineEvent] = []
    pipeline.add_listener(events.append)
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pipeline.execute)
            await started.wait()
            tg.cancel_scope.cancel()

    assert cleaned == ["a"]
    assert pipeline.result is not None
    assert pipeline.result.cancellation_reason is CancellationReason.EXTERNAL
    assert events[-1].kind is EventKind.RUN_FINISHED
    stops = [e for e in events if e.kind is EventKind.STOP_REQUESTED]
    assert [e.reason for e in stops] == [CancellationReason.EXTERNAL]
    kinds = _kinds(events)
    assert kinds.index(EventKind.STOP_REQUESTED) < kinds.index(EventKind.CLEANUP_FINISHED)


async def test_r5_4_cleanup_emits_cleanup_finished_with_error_text() -> None:
    cleaned: list[str] = []

    async def clean_a(ctx: PipelineContext) -> None:
        cleaned.append("a")

    def clean_b(ctx: PipelineContext) -> None:
        cleaned.append("b")
        raise RuntimeError("cleanup broke")

    def stop_then_finish(ctx: PipelineContext, data: Any) -> str:
        ctx.cancel()
        return "b done"

    pipeline = _pipeline(
        st("a", ok, cleanup_handler=clean_a),
        st("b", stop_then_finish, ["a"], cleanup_handler=clean_b),
        st("c", ok, ["b"], cleanup_handler=lambda ctx: cleaned.append("c")),
    )
    result, events = await _run(pipeline)

    assert cleaned == ["b", "a"]  # reverse start order; c never started
    cleanups = [e for e in events if e.kind is EventKind.CLEANUP_FINISHED]
    assert [(e.stage_id, e.error) for e in cleanups] == [
        ("b", "RuntimeError: cleanup broke"),
        ("a", None),
    ]
    assert all(e.duration_ms is not None and e.duration_ms >= 0 for e in cleanups)
    assert result.metadata["cleanup_errors"] == {"b": "RuntimeError: cleanup broke"}
    kinds = _kinds(events)
    assert kinds.index(EventKind.STOP_REQUESTED) < kinds.index(EventKind.CLEANUP_FINISHED)
    assert kinds[-1] is EventKind.RUN_FINISHED
    c_events = _of(events, "c")  # ready once b completed, but never started
    assert STARTED not in _kinds(c_events)
    assert (c_events[-1].kind, c_events[-1].status) == (FINISHED, StageStatus.CANCELLED)
    assert c_events[-1].attempt == 0


async def test_r5_4_no_cleanup_event_after_a_normal_finish() -> None:
    cleaned: list[str] = []
    pipeline = _pipeline(st("a", ok, cleanup_handler=lambda ctx: cleaned.append("a")))
    result, events = await _run(pipeline)

    assert result.status is PipelineStatus.COMPLETED
    assert cleaned == []
    assert EventKind.CLEANUP_FINISHED not in _kinds(events)
    assert EventKind.STOP_REQUESTED not in _kinds(events)


# -- R9: pause and resume ------------------------------------------------------------------------


async def test_r9_1_pause_and_resume_are_events() -> None:
    b_queued = anyio.Event()

    def pauses(ctx: PipelineContext, data: Any) -> str:
        ctx.pause()
        ctx.pause()  # a second pause changes nothing
        return "a"

    pipeline = _pipeline(st("a", pauses), st("b", ok, ["a"]))
    events: list[PipelineEvent] = []

    def listener(event: PipelineEvent) -> None:
        events.append(event)
        if event.kind is QUEUED and event.stage_id == "b":
            b_queued.set()

    pipeline.add_listener(listener)
    statuses: list[Any] = []
    async with executing(pipeline, limit=LIMIT) as run:
        await b_queued.wait()
        statuses.append((pipeline.status, pipeline.stage_statuses()["b"]))
        pipeline.resume()
        pipeline.resume()  # a second resume changes nothing

    assert statuses == [(PipelineStatus.PAUSED, StageStatus.QUEUED)]
    assert run.returned.status is PipelineStatus.COMPLETED
    paused = [e for e in events if e.kind is EventKind.RUN_PAUSED]
    resumed = [e for e in events if e.kind is EventKind.RUN_RESUMED]
    assert [e.status for e in paused] == [PipelineStatus.PAUSED]
    assert [e.status for e in resumed] == [PipelineStatus.RUNNING]
    assert all(e.stage_id is None for e in paused + resumed)
    order = [(e.kind, e.stage_id) for e in events]
    assert (
        order.index((EventKind.RUN_PAUSED, None))
        < order.index((EventKind.RUN_RESUMED, None))
        < order.index((STARTED, "b"))
    )


# -- listeners ------------------------------------------------------------------------------------


async def test_listeners_are_called_in_order_for_every_event() -> None:
    calls: list[tuple[str, EventKind]] = []
    pipeline = _pipeline(st("a", ok), st("b", ok, ["a"]))
    pipeline.add_listener(lambda e: calls.append(("first", e.kind)))
    pipeline.add_listener(lambda e: calls.append(("second", e.kind)))
    with anyio.fail_after(LIMIT):
        await pipeline.execute()

    assert len(calls) == 2 * 8
    assert [who for who, _ in calls] == ["first", "second"] * 8
    assert [kind for _, kind in calls[::2]] == [kind for _, kind in calls[1::2]]


async def test_a_raising_listener_is_logged_and_never_breaks_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    def build() -> Pipeline:
        return _pipeline(
            st("a", lambda ctx, data: data + 1),
            st("b", lambda ctx, data: data * 10, ["a"]),
            st("bad", raises(ValueError, "boom"), critical=False),
        )

    with anyio.fail_after(LIMIT):
        plain = await build().execute(1)

    def broken(event: PipelineEvent) -> None:
        raise RuntimeError(f"listener broke on {event.kind.value}")

    pipeline = build()
    pipeline.add_listener(broken)
    seen: list[PipelineEvent] = []
    pipeline.add_listener(seen.append)
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute(1)

    assert result.status is plain.status is PipelineStatus.PARTIALLY_COMPLETED
    assert {sid: (r.status, r.result) for sid, r in result.stage_results.items()} == {
        sid: (r.status, r.result) for sid, r in plain.stage_results.items()
    }
    assert seen[-1].kind is EventKind.RUN_FINISHED  # later listeners still get everything
    failures = [r for r in caplog.records if r.name == LOGGER and "listener" in r.getMessage()]
    assert len(failures) == len(seen)
    assert all(r.levelno >= logging.ERROR and r.exc_info for r in failures)
    assert isinstance(failures[0].exc_info[1], RuntimeError)  # type: ignore[index]


async def test_remove_listener_stops_the_calls() -> None:
    kept: list[PipelineEvent] = []
    removed: list[PipelineEvent] = []
    pipeline = _pipeline(st("a", ok))
    pipeline.add_listener(kept.append)
    pipeline.add_listener(removed.append)
    pipeline.remove_listener(removed.append)
    pipeline.remove_listener(lambda e: None)  # never added: ignored
    with anyio.fail_after(LIMIT):
        await pipeline.execute()

    assert removed == []
    assert kept[-1].kind is EventKind.RUN_FINISHED

    once: list[PipelineEvent] = []

    def only_once(event: PipelineEvent) -> None:
        once.append(event)
        pipeline.remove_listener(only_once)  # removing itself during a run

    pipeline.add_listener(only_once)
    with anyio.fail_after(LIMIT):
        await pipeline.execute()
    assert _kinds(once) == [EventKind.RUN_STARTED]


async def test_add_listener_rejects_a_non_callable() -> None:
    with pytest.raises(TypeError):
        _pipeline(st("a", ok)).add_listener("nope")  # type: ignore[arg-type]


async def test_listener_added_during_a_run_gets_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # DEBUG off and no listener at the start: the normal-path events are off
    # until the listener arrives, and must come back on at once.
    caplog.set_level(logging.INFO, logger=LOGGER)
    started = anyio.Event()
    gate = anyio.Event()

    async def a(ctx: PipelineContext, data: Any) -> str:
        started.set()
        await gate.wait()
        return "a"

    pipeline = _pipeline(st("a", a), st("b", ok, ["a"]))
    late: list[PipelineEvent] = []
    async with executing(pipeline, limit=LIMIT):
        await started.wait()
        pipeline.add_listener(late.append)
        gate.set()

    assert [(e.kind, e.stage_id) for e in late] == [
        (FINISHED, "a"),
        (QUEUED, "b"),
        (STARTED, "b"),
        (FINISHED, "b"),
        (EventKind.RUN_FINISHED, None),
    ]


# -- the events() stream -----------------------------------------------------------------------


async def test_events_stream_yields_the_run_and_ends_after_run_finished() -> None:
    pipeline = _pipeline(
        st("a", ok), st("b", ok, ["a"]), st("c", raises(ValueError, "boom"), ["b"])
    )
    listened: list[PipelineEvent] = []
    pipeline.add_listener(listened.append)
    streamed: list[PipelineEvent] = []

    with anyio.fail_after(LIMIT):
        async with pipeline.events() as stream:

            async def consume() -> None:
                async for event in stream:
                    streamed.append(event)

            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                result = await pipeline.execute()
            # consume() returned on its own: the iteration ended after RUN_FINISHED

    assert streamed == listened
    assert streamed[-1].kind is EventKind.RUN_FINISHED
    assert streamed[-1].pipeline_result is result
    assert stream.dropped == 0
    # Out of the block the stream is detached: another run reaches only the listener.
    with anyio.fail_after(LIMIT):
        await pipeline.execute()
    assert len(listened) == 2 * len(streamed)
    assert [e async for e in stream] == []


async def test_events_stream_ends_after_one_run() -> None:
    pipeline = _pipeline(st("a", ok))
    with anyio.fail_after(LIMIT):
        async with pipeline.events() as stream:
            first = await pipeline.execute()
            await pipeline.execute()
            got = [e async for e in stream]
    assert _kinds(got).count(EventKind.RUN_FINISHED) == 1
    assert got[-1].pipeline_result is first


async def test_events_stream_rejects_a_bad_buffer_size() -> None:
    pipeline = _pipeline(st("a", ok))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_buffer"):
            async with pipeline.events(max_buffer=bad):  # type: ignore[arg-type]
                pass


async def test_events_stream_slow_consumer_drops_oldest_and_never_blocks_the_run() -> None:
    chain = [st("s0", ok)] + [st(f"s{i}", ok, [f"s{i - 1}"]) for i in range(1, 8)]
    pipeline = _pipeline(*chain)
    listened: list[PipelineEvent] = []
    pipeline.add_listener(listened.append)
    received: list[PipelineEvent] = []
    running_when_resumed: list[bool] = []
    run_done = anyio.Event()

    with anyio.fail_after(LIMIT):
        async with pipeline.events(max_buffer=3) as stream:

            async def consume() -> None:
                async for event in stream:
                    received.append(event)
                    if len(received) == 1:
                        await run_done.wait()  # fall far behind
                        running_when_resumed.append(pipeline.is_running)

            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                result = await pipeline.execute()
                run_done.set()

    assert result.status is PipelineStatus.COMPLETED
    assert running_when_resumed == [False]  # the run finished while nobody read
    total = len(listened)
    assert total == 2 + 3 * 8
    assert received[-1].kind is EventKind.RUN_FINISHED
    assert received[-1].pipeline_result is result
    assert len(received) <= 3 + 1
    assert stream.dropped == total - len(received) > 0
    assert received[-3:] == listened[-3:]  # the newest ones survive
    # What got through is in order and came from this run.
    indices = [next(i for i, e in enumerate(listened) if e is r) for r in received]
    assert indices == sorted(indices)


async def test_events_stream_entered_during_a_run_gets_the_rest() -> None:
    started = anyio.Event()
    gate = anyio.Event()

    async def a(ctx: PipelineContext, data: Any) -> str:
        started.set()
        await gate.wait()
        return "a"

    pipeline = _pipeline(st("a", a))
    got: list[PipelineEvent] = []
    async with executing(pipeline, limit=LIMIT):
        await started.wait()
        async with pipeline.events() as stream:
            gate.set()
            got = [e async for e in stream]
    assert [(e.kind, e.stage_id) for e in got] == [(FINISHED, "a"), (EventKind.RUN_FINISHED, None)]


# -- R10.2: logging -------------------------------------------------------------------------------


def _event_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and hasattr(r, "event")]


def _expected_level(event: PipelineEvent) -> int:
    if event.kind in (QUEUED, STARTED):
        return logging.DEBUG
    if event.kind is FINISHED:
        if event.status is StageStatus.COMPLETED:
            return logging.DEBUG
        if event.status in (StageStatus.FAILED, StageStatus.TIMED_OUT):
            return logging.WARNING
        return logging.INFO  # SKIPPED, CANCELLED
    if event.kind is EventKind.CLEANUP_FINISHED:
        return logging.WARNING if event.error else logging.DEBUG
    if event.kind is EventKind.WORK_LEFT_RUNNING:
        return logging.WARNING
    return logging.INFO  # run-level, and retries


async def _mixed_run() -> tuple[Pipeline, PipelineResult, list[PipelineEvent]]:
    """A run with every stage ending: completed, retried, failed, timed out, skipped."""
    once = flaky([], exc=KeyError, message="once")

    retry = RetryConfig(max_retries=1, strategy=RetryStrategy.IMMEDIATE)
    pipeline = _pipeline(
        st("ok", ok),
        st("flaky", once, retry_config=retry),
        st("bad", raises(ValueError, "boom")),
        st("slow", hangs, timeout_seconds=0.02),
        st("skipped", ok, ["bad"]),
        continue_on_error=True,
    )
    result, events = await _run(pipeline)
    return pipeline, result, events


async def _stopped_run() -> tuple[Pipeline, PipelineResult, list[PipelineEvent]]:
    """A run with a pause, a resume, a stop, a cancelled stage and a failing cleanup."""

    def pause_and_resume(ctx: PipelineContext, data: Any) -> str:
        ctx.pause()
        ctx.resume()
        return "p"

    def stops(ctx: PipelineContext, data: Any) -> None:
        ctx.cancel(CancellationReason.USER_REQUESTED)

    def bad_cleanup(ctx: PipelineContext) -> None:
        raise OSError("disk gone")

    pipeline = _pipeline(
        st("p", pause_and_resume, cleanup_handler=lambda ctx: None),
        st("stop", stops, ["p"], cleanup_handler=bad_cleanup),
        st("never", ok, ["stop"]),
    )
    result, events = await _run(pipeline)
    return pipeline, result, events


async def _abandoning_run() -> tuple[Pipeline, PipelineResult, list[PipelineEvent]]:
    """A thread stage blocked past its deadline: its thread is left running (R11.5)."""
    release = threading.Event()

    def blocked(ctx: PipelineContext, data: Any) -> str:
        release.wait(LIMIT)
        return "late"

    pipeline = _pipeline(st("blocked", blocked, timeout_seconds=0.02), executor="thread")
    try:
        result, events = await _run(pipeline)
    finally:
        release.set()
    return pipeline, result, events


async def test_r10_2_one_log_record_per_event(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    for scenario in (_mixed_run, _stopped_run):
        caplog.clear()
        pipeline, _, events = await scenario()
        records = _event_records(caplog)
        assert len(records) == len(events)
        for record, event in zip(records, events, strict=True):
            assert record.name == LOGGER
            assert record.pipeline_id == pipeline.pipeline_id  # type: ignore[attr-defined]
            assert record.pipeline_name == "events"  # type: ignore[attr-defined]
            assert record.event == event.kind.value  # type: ignore[attr-defined]
            assert record.stage_id == event.stage_id  # type: ignore[attr-defined]
            assert record.attempt == event.attempt  # type: ignore[attr-defined]
            status = None if event.status is None else event.status.name
            assert record.status == status  # type: ignore[attr-defined]
            assert record.getMessage() == event.describe()


async def test_r10_2_log_levels_follow_the_event(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    seen: set[tuple[EventKind, Any]] = set()
    for scenario in (_mixed_run, _stopped_run, _abandoning_run):
        caplog.clear()
        _, _, events = await scenario()
        records = _event_records(caplog)
        assert len(records) == len(events)
        for record, event in zip(records, events, strict=True):
            assert record.levelno == _expected_level(event), event.describe()
            seen.add((event.kind, event.status if event.kind is FINISHED else None))
    # The scenarios did cover every kind and every ending.
    assert set(EventKind) <= {kind for kind, _ in seen}
    assert {
        StageStatus.COMPLETED,
        StageStatus.FAILED,
        StageStatus.TIMED_OUT,
        StageStatus.SKIPPED,
        StageStatus.CANCELLED,
    } <= {status for kind, status in seen if kind is FINISHED}


async def test_r10_2_info_logging_shows_failures_but_not_the_normal_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    await _mixed_run()
    kinds = [r.event for r in _event_records(caplog)]  # type: ignore[attr-defined]
    assert "stage_queued" not in kinds
    assert "stage_started" not in kinds
    warnings = [r for r in _event_records(caplog) if r.levelno == logging.WARNING]
    assert sorted(r.stage_id for r in warnings) == ["bad", "slow"]  # type: ignore[attr-defined]
    assert kinds[0] == "run_started"
    assert kinds[-1] == "run_finished"


class _Counter:
    """Counts ``PipelineEvent`` constructions by kind."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kinds: list[EventKind] = []
        real: type[PipelineEvent] = vars(_events)["PipelineEvent"]

        def build(kind: EventKind, *args: Any, **kwargs: Any) -> PipelineEvent:
            self.kinds.append(kind)
            return real(kind, *args, **kwargs)

        monkeypatch.setattr(_events, "PipelineEvent", build)


async def test_r10_2_normal_path_events_not_built_without_listener_or_debug(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = _Counter(monkeypatch)
    pipeline = _pipeline(st("a", ok), st("b", ok, ["a"]), st("c", ok, ["b"]))

    caplog.set_level(logging.INFO, logger=LOGGER)
    with anyio.fail_after(LIMIT):
        result = await pipeline.execute()
    assert result.status is PipelineStatus.COMPLETED
    assert counter.kinds == [EventKind.RUN_STARTED, EventKind.RUN_FINISHED]

    # The rare ones are always built: here a retry.
    once = flaky([], message="once")
    retry = RetryConfig(max_retries=1, strategy=RetryStrategy.IMMEDIATE)
    counter.kinds.clear()
    with anyio.fail_after(LIMIT):
        await _pipeline(st("f", once, retry_config=retry)).execute()
    assert counter.kinds == [EventKind.RUN_STARTED, RETRYING, EventKind.RUN_FINISHED]

    # DEBUG on: everything is built (and logged).
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    counter.kinds.clear()
    with anyio.fail_after(LIMIT):
        await pipeline.execute()
    assert len(counter.kinds) == 2 + 3 * 3
    assert counter.kinds.count(FINISHED) == 3

    # A listener turns them on too, with DEBUG off.
    caplog.set_level(logging.INFO, logger=LOGGER)
    counter.kinds.clear()
    _, events = await _run(pipeline)
    assert counter.kinds == _kinds(events)
    assert len(events) == 2 + 3 * 3


# -- R7.6: metrics ---------------------------------------------------------------------------------


async def test_r7_6_metrics_queue_wait_retry_delay_and_attempts() -> None:
    first = flaky([], message="first")

    retry = RetryConfig(max_retries=2, strategy=RetryStrategy.CONSTANT, initial_delay_seconds=0.02)
    result, _ = await _run(_pipeline(st("f", first, retry_config=retry)))

    metrics = result.stage_results["f"].metrics
    # The time actually waited: the 20 ms delay, give or take timer slack.
    assert 15.0 <= metrics["retry_delay_ms"] < 2000.0
    assert metrics["queue_wait_ms"] >= 0
    attempts = metrics["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2]
    assert [a["outcome"] for a in attempts] == ["failed", "completed"]
    assert [a["error"] for a in attempts] == ["ValueError: first", None]
    for a in attempts:
        assert {"attempt", "start_time", "duration_ms", "outcome", "error", "queue_wait_ms"} <= set(
            a
        )
        assert a["duration_ms"] >= 0
        assert a["queue_wait_ms"] >= 0
    assert attempts[0]["start_time"] < attempts[1]["start_time"]
    assert sum(a["queue_wait_ms"] for a in attempts) == pytest.approx(
        metrics["queue_wait_ms"], abs=1e-6
    )


async def test_r7_6_queue_wait_counts_the_wait_for_a_slot() -> None:
    async def slowish(ctx: PipelineContext, data: Any) -> str:
        await anyio.sleep(0.05)
        return "a"

    pipeline = _pipeline(st("a", slowish), st("b", ok), parallel_stages=False)
    result, _ = await _run(pipeline)

    # b was ready from the start but had to wait for a's slot.
    assert result.stage_results["b"].metrics["queue_wait_ms"] >= 30
    assert result.stage_results["b"].metrics["attempts"][0]["queue_wait_ms"] >= 30


async def test_r7_6_attempt_outcomes_timed_out_and_cancelled() -> None:
    def stops(ctx: PipelineContext, data: Any) -> None:
        ctx.cancel()

    result, _ = await _run(_pipeline(st("slow", hangs, timeout_seconds=0.02)))
    assert [a["outcome"] for a in result.stage_results["slow"].metrics["attempts"]] == ["timed_out"]

    started = anyio.Event()

    pipeline = _pipeline(
        st("w", blocks_forever(started)),
        st("s", stops),
        timeout=TimeoutConfig(grace_period_seconds=0),
    )
    result, _ = await _run(pipeline)
    assert result.status is PipelineStatus.CANCELLED
    if result.stage_results["w"].attempt_count:  # it got a slot before the stop
        assert [a["outcome"] for a in result.stage_results["w"].metrics["attempts"]] == [
            "cancelled"
        ]


async def test_r7_6_record_metric_lands_in_the_calling_stage() -> None:
    async def a(ctx: PipelineContext, data: Any) -> str:
        ctx.record_metric("rows", 42)
        await anyio.lowlevel.checkpoint()
        ctx.record_metric("rows", 43)  # last value wins
        return "a"

    def b(ctx: PipelineContext, data: Any) -> str:
        ctx.record_metric("bytes", 7)
        with pytest.raises(ValueError, match="reserved"):
            ctx.record_metric("queue_wait_ms", 1)
        with pytest.raises(TypeError):
            ctx.record_metric("", 1)
        return "b"

    result, _ = await _run(_pipeline(st("a", a), st("b", b)))

    assert result.status is PipelineStatus.COMPLETED, result.summary()
    assert result.stage_results["a"].metrics["rows"] == 43
    assert "bytes" not in result.stage_results["a"].metrics
    assert result.stage_results["b"].metrics["bytes"] == 7
    assert "rows" not in result.stage_results["b"].metrics
    assert result.stage_results["b"].metrics["queue_wait_ms"] >= 0  # not overwritten


async def test_r7_6_no_library_metrics_without_collect_metrics() -> None:
    def a(ctx: PipelineContext, data: Any) -> str:
        ctx.record_metric("rows", 1)
        return "a"

    result, _ = await _run(_pipeline(st("a", a), collect_metrics=False))
    assert result.stage_results["a"].metrics == {"rows": 1}
