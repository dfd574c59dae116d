"""R11: where stages run. The inline, thread and process executors, first
through their sessions (a hand-built ``StageCall`` with a real
``PipelineContext``), then through real pipelines.

Process tests use real worker processes and real signals. A handler that
must be stopped while it runs tells the test its pid through a named pipe
(the test's read returns once the handler wrote it), so nothing waits on a
timer.
"""

from __future__ import annotations

import contextvars
import functools
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import pytest
from helpers import executing, make_pipeline, st, stop_when

from proxima.data.pipeline import (
    CancellationReason,
    PipelineCancelledException,
    PipelineContext,
    RetryConfig,
    RetryStrategy,
    StageResult,
    StageStatus,
    TimeoutConfig,
)
from proxima.data.pipeline.executors import (
    Executor,
    ExecutorSession,
    InlineExecutor,
    NotPicklableError,
    ProcessExecutor,
    RemoteTraceback,
    StageCall,
    ThreadExecutor,
    WorkerContextError,
    WorkerLostError,
    resolve,
)

pytestmark = pytest.mark.anyio

RETRY_ONCE = RetryConfig(strategy=RetryStrategy.IMMEDIATE, max_retries=1)


# -- helpers --------------------------------------------------------------------------------------


def call_of(
    handler: Any,
    value: Any = None,
    *,
    ctx: PipelineContext | None = None,
    stage_id: str = "s",
    attempt: int = 1,
    finished: dict[str, Any] | None = None,
) -> StageCall:
    """A hand-built call, as the engine would make it."""
    return StageCall(
        stage_id=stage_id,
        attempt=attempt,
        handler=handler,
        context=ctx if ctx is not None else PipelineContext("run-1"),
        input=value,
        finished=finished or {},
    )


async def run_call(session: ExecutorSession, call: StageCall) -> Any:
    """What the engine does with a session's answer."""
    value = session.call(call)
    if hasattr(value, "__await__"):
        value = await value
    if hasattr(value, "__await__"):
        value = await value
    return value


def gone(pid: int) -> bool:
    """True once no process has this pid (a zombie still has it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pid"
    os.mkfifo(path)
    return path


async def read_pid(fifo: Path, limit: float = 20) -> int:
    """The pid a worker's handler wrote into ``fifo`` (see :func:`tell_pid`)."""

    def read() -> str:
        with open(fifo) as pipe:
            return pipe.read()

    try:
        with anyio.fail_after(limit):
            text = await anyio.to_thread.run_sync(read, abandon_on_cancel=True)
    except TimeoutError:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let the reader thread go
        raise
    return int(text)


# Handlers for worker processes: module-level, so they pickle by reference.


def tell_pid(fifo: str) -> None:
    with open(fifo, "w") as pipe:
        pipe.write(str(os.getpid()))


def pid_then_sleep(fifo: str, ctx: Any, _: Any) -> None:
    tell_pid(fifo)
    time.sleep(60)


def pid_then_sleep_on_first_attempt(fifo: str, ctx: Any, _: Any) -> str:
    if ctx.attempt == 1:
        tell_pid(fifo)
        time.sleep(60)
    return f"attempt {ctx.attempt} in {os.getpid()}"


def pid_file_then_sleep(path: str, ctx: Any, _: Any) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(60)


def pid_then_cooperate(fifo: str, ctx: Any, _: Any) -> None:
    tell_pid(fifo)
    while True:
        ctx.check_cancelled()  # a round trip to the caller
        time.sleep(0.01)  # a unit of blocking work


def my_pid(ctx: Any, _: Any) -> int:
    return os.getpid()


def exits(code: int, ctx: Any, _: Any) -> None:
    os._exit(code)


def raises_value_error(ctx: Any, _: Any) -> None:
    raise ValueError("bad row 7")


def returns_lock(ctx: Any, _: Any) -> Any:
    return threading.Lock()


def uses_the_stand_in(ctx: Any, value: Any) -> dict[str, Any]:
    up = ctx.get_stage_result("up")
    ctx.set("written", value + 1)
    ctx.record_metric("rows", 12)
    return {
        "a": ctx.get("a"),
        "missing": ctx.get("nope", "default"),
        "data": dict(ctx.data),
        "up": up.result,
        "unknown": ctx.get_stage_result("other"),
        "pipeline_id": ctx.pipeline_id,
        "config": ctx.config.name,
        "stage": (ctx.stage_id, ctx.attempt),
        "pid": os.getpid(),
    }


def reads_after_go(ready: str, go: str, ctx: Any, _: Any) -> Any:
    tell_pid(ready)  # the attempt has started: its snapshot is taken
    with open(go) as pipe:  # blocks until the test changed the real context
        pipe.read()
    return ctx.get("a")


def checks_cancelled(ctx: Any, _: Any) -> str:
    ctx.check_cancelled()
    return "not cancelled"


def run_control(method: str, ctx: Any, _: Any) -> None:
    getattr(ctx, method)()


async def coroutine_handler(ctx: Any, _: Any) -> str:
    return "coroutine"


#: In the caller: one entry per pickling of a CountsPickles. In a worker: one
#: entry per unpickling of one (each worker has its own copy of the list).
PICKLED: list[str] = []
LOADED: list[str] = []


def _rebuilt_counter() -> CountsPickles:
    LOADED.append("loaded")
    return CountsPickles()


class CountsPickles:
    """A handler that counts how often it is pickled (in the caller) and
    unpickled (in the worker, where it returns the count and its pid)."""

    def __reduce__(self) -> tuple[Any, ...]:
        PICKLED.append("pickled")
        return (_rebuilt_counter, ())

    def __call__(self, ctx: Any, value: Any) -> tuple[int, int]:
        if ctx.stage_id == "a" and ctx.attempt == 1:
            raise ValueError("the first attempt of 'a' fails")
        return len(LOADED), os.getpid()


def _refuse_to_load() -> None:
    raise ValueError("this handler cannot be rebuilt here")


class LoadsNowhere:
    """Pickles in the caller; its unpickling fails in the worker."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse_to_load, ())

    def __call__(self, ctx: Any, value: Any) -> None:
        raise AssertionError("never called")


def applies_its_input(ctx: Any, value: Any) -> Any:
    return value["f"](value["x"])


def describes_its_input(ctx: Any, value: Any) -> tuple[str, str, int]:
    return type(value).__module__, type(value).__qualname__, value.x


def reads_results_after_go(ready: str, go: str, ctx: Any, _: Any) -> tuple[Any, Any]:
    tell_pid(ready)  # the attempt has started: its snapshot is taken
    with open(go) as pipe:  # blocks until the test finished another stage
        pipe.read()
    up, late = ctx.get_stage_result("up"), ctx.get_stage_result("late")
    return up.result, None if late is None else late.result


def results_so_far(ctx: Any, value: Any) -> dict[str, Any]:
    """The results of the stages before this one in the chain a, b, c, d."""
    ids = "abcd"[: "abcd".index(ctx.stage_id)]
    return {sid: getattr(ctx.get_stage_result(sid), "result", None) for sid in ids}


class AsyncCallable:
    async def __call__(self, ctx: Any, _: Any) -> str:
        return "called"


class SyncCallable:
    def __call__(self, ctx: Any, _: Any) -> str:
        return "called"


# -- R11.1 choosing an executor -------------------------------------------------------------------


def test_r11_1_auto_is_inline_for_async_handlers_and_thread_for_the_rest() -> None:
    inline, thread = resolve("inline", None), resolve("thread", None)
    assert isinstance(inline, InlineExecutor)
    assert isinstance(thread, ThreadExecutor)
    handler: Any
    for handler in (
        coroutine_handler,
        functools.partial(coroutine_handler),
        functools.partial(functools.partial(coroutine_handler)),
        AsyncCallable(),
    ):
        assert resolve("auto", handler) is inline, handler
    for handler in (my_pid, lambda c, i: None, SyncCallable(), functools.partial(exits, 1)):
        assert resolve("auto", handler) is thread, handler


def test_r11_1_names_give_shared_instances_and_executors_pass_through() -> None:
    assert resolve("process", my_pid) is resolve("process", uses_the_stand_in)
    assert isinstance(resolve("process", my_pid), ProcessExecutor)
    mine = ThreadExecutor(max_workers=3)
    assert resolve(mine, coroutine_handler) is mine
    assert isinstance(mine, Executor)


def test_r11_1_unknown_name_or_wrong_type_is_refused_naming_the_value() -> None:
    with pytest.raises(ValueError, match="'threads'"):
        resolve("threads", my_pid)
    with pytest.raises(TypeError, match="42"):
        resolve(42, my_pid)


@pytest.mark.parametrize("executor", [ThreadExecutor, ProcessExecutor])
def test_r11_1_max_workers_is_checked_at_construction(executor: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match=r"max_workers must be an int >= 1 or None, got 0"):
        executor(max_workers=0)
    with pytest.raises(TypeError, match=r"max_workers.*'2'"):
        executor(max_workers="2")
    assert executor(max_workers=2).max_workers == 2


def test_r11_7_importing_the_library_loads_neither_dask_nor_cloudpickle() -> None:
    code = (
        "import sys, proxima.data.pipeline, proxima.data.pipeline.executors\n"
        "print(sorted(m for m in ('dask', 'distributed', 'cloudpickle') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- R11.2 inline and thread sessions -------------------------------------------------------------


async def test_r11_2_inline_session_calls_on_the_loop_thread_and_returns_the_awaitable() -> None:
    async def where(ctx: Any, value: Any) -> tuple[int, Any]:
        return threading.get_ident(), value

    async with InlineExecutor().session() as session:
        returned = session.call(call_of(where, 5))
        assert hasattr(returned, "__await__")  # the engine awaits it
        assert await returned == (threading.get_ident(), 5)
        assert session.still_running() == {}


async def test_r11_2_thread_session_runs_in_a_worker_thread_in_the_callers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("caller's value")

    def where(ctx: Any, value: Any) -> tuple[int, str, Any]:
        return threading.get_ident(), var.get(), value

    async with ThreadExecutor().session() as session:
        ident, seen, value = await run_call(session, call_of(where, 5))
    assert ident != threading.get_ident()
    assert (seen, value) == ("caller's value", 5)


async def test_r11_2_a_threads_coroutine_is_handed_back_for_the_loop_to_await() -> None:
    async def on_loop() -> int:
        return threading.get_ident()

    async with ThreadExecutor().session() as session:
        assert await run_call(session, call_of(lambda c, i: on_loop())) == threading.get_ident()


async def test_r11_2_thread_session_max_workers_bounds_the_threads_at_once() -> None:
    lock = threading.Lock()
    running, peak = [0], [0]

    def work(ctx: Any, _: Any) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)  # the work itself, so that the calls overlap
        with lock:
            running[0] -= 1

    async with ThreadExecutor(max_workers=2).session() as session, anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(run_call, session, call_of(work))
    assert peak[0] == 2


async def test_r11_5_thread_abandoned_at_cancel_is_reported_until_it_ends() -> None:
    started, release, ended = threading.Event(), threading.Event(), threading.Event()

    def blocks(ctx: Any, _: Any) -> str:
        started.set()
        release.wait(10)
        ended.set()
        return "discarded"

    async with ThreadExecutor().session() as session:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_call, session, call_of(blocks, stage_id="slow"))
                await anyio.to_thread.run_sync(started.wait, 10)
                scope.cancel()
        assert scope.cancelled_caught
        assert "slow" in session.still_running()
        assert "cannot be killed" in session.still_running()["slow"]
        release.set()
        await anyio.to_thread.run_sync(ended.wait, 10)
        with anyio.fail_after(5):
            # The session hears of the end just after ``ended``: no event to wait on.
            while session.still_running():  # noqa: ASYNC110
                await anyio.sleep(0.01)


async def test_r11_3_check_cancelled_in_a_thread_raises_once_a_stop_began() -> None:
    ctx = PipelineContext("run-1")
    ctx.cancel(CancellationReason.USER_REQUESTED)
    async with ThreadExecutor().session() as session:
        with pytest.raises(PipelineCancelledException) as caught:
            await run_call(session, call_of(checks_cancelled, ctx=ctx))
    assert caught.value.reason is CancellationReason.USER_REQUESTED


# -- R11.4 the process session and its stand-in context -------------------------------------------


async def test_r11_4_process_session_runs_lambdas_and_closures_in_another_process() -> None:
    offset = 100

    def closure(ctx: Any, value: int) -> tuple[int, int]:
        return os.getpid(), value + offset

    async with ProcessExecutor().session() as session:
        pid, value = await run_call(session, call_of(closure, 1))
        assert pid != os.getpid()
        assert value == 101
        assert await run_call(session, call_of(lambda c, v: v * 2, 21)) == 42
        assert session.still_running() == {}


async def test_r11_4_stand_in_reads_a_snapshot_and_carries_set_and_metric_back() -> None:
    ctx = PipelineContext("run-7", data={"a": 1})
    up = StageResult(stage_id="up", stage_name="UP", status=StageStatus.COMPLETED, result=41)
    async with ProcessExecutor().session() as session:
        seen = await run_call(
            session, call_of(uses_the_stand_in, 9, ctx=ctx, stage_id="x", finished={"up": up})
        )
    assert seen["pid"] != os.getpid()
    assert seen == {
        "a": 1,
        "missing": "default",
        "data": {"a": 1},
        "up": 41,
        "unknown": None,
        "pipeline_id": "run-7",
        "config": ctx.config.name,
        "stage": ("x", 1),
        "pid": seen["pid"],
    }
    assert ctx.get("written") == 10
    assert ctx.metrics == {"rows": 12}  # outside a run, metrics land on the context


async def test_r11_4_the_snapshot_is_taken_when_the_attempt_starts(
    fifo: Path, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    os.mkfifo(go)
    ctx = PipelineContext("run-1", data={"a": "before"})
    handler = functools.partial(reads_after_go, str(fifo), str(go))
    seen: list[Any] = []

    async def call() -> None:
        seen.append(await run_call(session, call_of(handler, ctx=ctx)))

    def let_it_read() -> None:
        with open(go, "w") as pipe:
            pipe.write("go")

    async with ProcessExecutor().session() as session, anyio.create_task_group() as tg:
        tg.start_soon(call)
        await read_pid(fifo)
        ctx.set("a", "after")
        await anyio.to_thread.run_sync(let_it_read)
    assert seen == ["before"]


async def test_r11_4_stop_is_visible_to_check_cancelled_in_a_process() -> None:
    ctx = PipelineContext("run-1")
    async with ProcessExecutor().session() as session:
        assert await run_call(session, call_of(checks_cancelled, ctx=ctx)) == "not cancelled"
        ctx.cancel(CancellationReason.ERROR)
        with pytest.raises(PipelineCancelledException) as caught:
            await run_call(session, call_of(checks_cancelled, ctx=ctx))
    assert caught.value.reason is CancellationReason.ERROR


@pytest.mark.parametrize("method", ["cancel", "pause", "resume"])
async def test_r11_4_run_control_in_a_process_raises_a_clear_error(method: str) -> None:
    async with ProcessExecutor().session() as session:
        with pytest.raises(
            WorkerContextError, match=rf"ctx.{method}\(\) cannot work in the worker"
        ):
            await run_call(session, call_of(functools.partial(run_control, method)))


async def test_r11_4_unpicklable_input_fails_before_the_call_naming_stage_and_input(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    async with ProcessExecutor().session() as session:
        with pytest.raises(NotPicklableError, match=r"stage 'load': the input cannot be pickled"):
            await run_call(
                session,
                call_of(
                    functools.partial(pid_file_then_sleep, str(marker)),
                    threading.Lock(),
                    stage_id="load",
                ),
            )
    assert not marker.exists()


async def test_r11_4_unpicklable_handler_fails_before_the_call_naming_it() -> None:
    lock = threading.Lock()

    def holds_a_lock(ctx: Any, _: Any) -> bool:
        return lock.locked()

    async with ProcessExecutor().session() as session:
        with pytest.raises(NotPicklableError, match=r"stage 'load': the handler .*holds_a_lock"):
            await run_call(session, call_of(holds_a_lock, stage_id="load"))


async def test_r11_4_unpicklable_result_fails_naming_the_stage() -> None:
    async with ProcessExecutor().session() as session:
        with pytest.raises(NotPicklableError, match=r"stage 'lk': the handler's result"):
            await run_call(session, call_of(returns_lock, stage_id="lk"))


async def test_r11_4_async_handler_on_a_process_is_refused_before_the_call() -> None:
    async with ProcessExecutor().session() as session:
        with pytest.raises(TypeError, match=r"stage 's'.*is async"):
            await run_call(session, call_of(coroutine_handler))


async def test_r11_4_handler_exception_crosses_back_with_its_type_and_traceback() -> None:
    async with ProcessExecutor().session() as session:
        with pytest.raises(ValueError, match="bad row 7") as caught:
            await run_call(session, call_of(raises_value_error))
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert "raises_value_error" in str(caught.value.__cause__)


async def test_r11_4_a_handler_is_pickled_once_per_run_and_unpickled_once_per_worker() -> None:
    PICKLED.clear()
    handler = CountsPickles()  # one object on three stages, four attempts
    process = ProcessExecutor(max_workers=1)
    pipeline = make_pipeline(
        st("a", handler, executor=process),
        st("b", handler, ["a"], executor=process),
        st("c", handler, ["b"], executor=process),
        retry=RETRY_ONCE,
    )
    result = await pipeline.execute()
    assert result.status.name == "COMPLETED", result.stage_results
    assert result.stage_results["a"].attempt_count == 2
    assert PICKLED == ["pickled"]  # once in the caller
    seen = {sid: result.stage_results[sid].result for sid in "abc"}
    assert {loaded for loaded, _ in seen.values()} == {1}  # once in the worker
    assert len({pid for _, pid in seen.values()}) == 1
    assert seen["a"][1] != os.getpid()


async def test_r11_4_a_handler_pickled_once_is_sent_again_to_each_new_worker() -> None:
    PICKLED.clear()
    handler = CountsPickles()
    seen: list[tuple[int, int]] = []

    async def call(sid: str) -> None:
        seen.append(await run_call(session, call_of(handler, stage_id=sid)))

    # The first two calls both find no idle worker (each waits for its
    # worker's start-up): two workers, each sent the handler once.
    async with ProcessExecutor(max_workers=2).session() as session, anyio.create_task_group() as tg:
        for sid in ("x", "y", "z", "w"):
            tg.start_soon(call, sid)
    assert PICKLED == ["pickled"]
    assert len({pid for _, pid in seen}) == 2
    assert {loaded for loaded, _ in seen} == {1}  # each worker unpickled it once


async def test_r11_4_a_handler_that_cannot_be_unpickled_fails_each_call_naming_its_stage() -> None:
    handler = LoadsNowhere()
    async with ProcessExecutor(max_workers=1).session() as session:
        for sid in ("first", "second"):
            with pytest.raises(RuntimeError) as caught:
                await run_call(session, call_of(handler, stage_id=sid))
            assert str(caught.value).startswith(
                f"stage {sid!r}: the worker could not unpickle the handler: ValueError: "
                "this handler cannot be rebuilt here"
            )
        assert await run_call(session, call_of(my_pid)) != os.getpid()  # the worker is fine


async def test_r11_4_inputs_plain_pickle_cannot_take_go_by_cloudpickle() -> None:
    offset = 10
    async with ProcessExecutor(max_workers=1).session() as session:
        value = {"f": lambda x: x + offset, "x": 1}  # a closure: plain pickle refuses
        assert await run_call(session, call_of(applies_its_input, value)) == 11


async def test_r11_4_an_object_of_main_crosses_by_value_though_plain_pickle_takes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class MainThing:
        def __init__(self, x: int) -> None:
            self.x = x

    MainThing.__module__ = "__main__"
    MainThing.__qualname__ = MainThing.__name__ = "ProximaTestMainThing"
    # Now plain pickle finds it as __main__.ProximaTestMainThing, by
    # reference, which the worker's __main__ does not have.
    monkeypatch.setattr(sys.modules["__main__"], "ProximaTestMainThing", MainThing, raising=False)
    async with ProcessExecutor(max_workers=1).session() as session:
        seen = await run_call(session, call_of(describes_its_input, MainThing(5)))
    assert seen == ("__main__", "ProximaTestMainThing", 5)


async def test_r11_4_get_stage_result_sees_the_stages_finished_when_the_attempt_started(
    fifo: Path, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    os.mkfifo(go)

    def result_of(sid: str, value: int) -> StageResult:
        return StageResult(stage_id=sid, stage_name=sid, status=StageStatus.COMPLETED, result=value)

    finished: dict[str, Any] = {"up": result_of("up", 41)}  # live, as the engine's
    handler = functools.partial(reads_results_after_go, str(fifo), str(go))
    seen: list[Any] = []

    async def call() -> None:
        seen.append(await run_call(session, call_of(handler, finished=finished)))

    def let_it_read() -> None:
        with open(go, "w") as pipe:
            pipe.write("go")

    async with ProcessExecutor(max_workers=1).session() as session:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await read_pid(fifo)
            finished["late"] = result_of("late", 7)  # finished after the start
            await anyio.to_thread.run_sync(let_it_read)
        assert seen == [(41, None)]
        async with anyio.create_task_group() as tg:  # the next attempt sees it
            tg.start_soon(call)
            await read_pid(fifo)
            await anyio.to_thread.run_sync(let_it_read)
    assert seen == [(41, None), (41, 7)]


async def test_r11_4_process_stages_in_a_chain_see_every_earlier_stages_result() -> None:
    async def a(ctx: Any, _: Any) -> str:
        return "from a"

    pipeline = make_pipeline(
        st("a", a),
        st("b", results_so_far, ["a"], executor="process"),
        st("c", results_so_far, ["b"], executor="process"),
        st("d", results_so_far, ["c"], executor="process"),
    )
    result = await pipeline.execute()
    assert result.status.name == "COMPLETED", result.stage_results
    assert result.stage_results["b"].result == {"a": "from a"}
    assert result.stage_results["c"].result == {"a": "from a", "b": {"a": "from a"}}
    assert result.stage_results["d"].result == {
        "a": "from a",
        "b": {"a": "from a"},
        "c": {"a": "from a", "b": {"a": "from a"}},
    }


# -- R11.5 / R11.6 killing and dying workers ------------------------------------------------------


async def test_r11_5_process_session_kills_the_worker_on_cancellation(fifo: Path) -> None:
    pids: list[int] = []
    async with ProcessExecutor().session() as session:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    run_call, session, call_of(functools.partial(pid_then_sleep, str(fifo)))
                )
                pids.append(await read_pid(fifo))
                scope.cancel()
        assert scope.cancelled_caught
        (pid,) = pids
        assert gone(pid)
        assert session.still_running() == {}
        # The next call gets a fresh worker.
        assert await run_call(session, call_of(my_pid)) not in (pid, os.getpid())


async def test_r11_6_worker_killed_by_a_signal_fails_the_call_naming_stage_and_signal(
    fifo: Path,
) -> None:
    failure: list[BaseException] = []
    async with ProcessExecutor().session() as session:
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                try:
                    await run_call(
                        session,
                        call_of(functools.partial(pid_then_sleep, str(fifo)), stage_id="crunch"),
                    )
                except WorkerLostError as exc:
                    failure.append(exc)

            tg.start_soon(call)
            os.kill(await read_pid(fifo), signal.SIGKILL)
        assert len(failure) == 1
        assert "stage 'crunch' (attempt 1)" in str(failure[0])
        assert "killed by signal SIGKILL" in str(failure[0])
        assert await run_call(session, call_of(lambda c, v: v, "still works")) == "still works"


async def test_r11_6_os_exit_fails_the_call_with_its_exit_code() -> None:
    async with ProcessExecutor().session() as session:
        with pytest.raises(WorkerLostError, match=r"stage 'quit'.*exited with code 7"):
            await run_call(session, call_of(functools.partial(exits, 7), stage_id="quit"))


ORPHAN_CALLER = """
import os, sys, time
from proxima.data.pipeline import Pipeline, Stage

def hold(ctx, _):
    print("WORKER", os.getpid(), file=sys.stderr, flush=True)  # a worker's prints: stderr
    time.sleep(120)

pipeline = Pipeline()
pipeline.add_stage(Stage(stage_id="hold", name="Hold", handler=hold, executor="process"))
pipeline.run_sync()
"""


def test_r11_8_workers_of_a_caller_killed_outright_exit_on_their_own() -> None:
    caller = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_CALLER], stderr=subprocess.PIPE, text=True
    )
    try:
        assert caller.stderr is not None
        line = caller.stderr.readline()
        assert line.startswith("WORKER "), line
        worker = int(line.split()[1])
        pidfd = os.pidfd_open(worker)
    finally:
        caller.kill()
        caller.wait()
        if caller.stderr is not None:
            caller.stderr.close()
    try:
        # The worker notices within about a second that its caller is gone.
        readable, _, _ = select.select([pidfd], [], [], 20)
    finally:
        os.close(pidfd)
    assert readable, "the orphaned worker is still running"


async def test_r11_8_workers_are_reused_bounded_and_ended_with_the_session() -> None:
    async with ProcessExecutor(max_workers=1).session() as session:
        pids: list[int] = []

        async def call() -> None:
            pids.append(await run_call(session, call_of(my_pid)))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(call)
    assert len(set(pids)) == 1  # one worker at most, reused
    assert gone(pids[0])  # and ended with the session


# -- through pipelines ----------------------------------------------------------------------------


async def test_r11_2_three_blocking_def_stages_run_at_once_in_threads() -> None:
    barrier = threading.Barrier(3, timeout=10)

    def extract(ctx: Any, _: Any) -> int:
        barrier.wait()  # raises BrokenBarrierError unless all three block at once
        return threading.get_ident()

    pipeline = make_pipeline(*(st(name, extract) for name in "abc"), max_parallel=4)
    result = await pipeline.execute()
    assert {r.status for r in result.stage_results.values()} == {StageStatus.COMPLETED}
    idents = {r.result for r in result.stage_results.values()}
    assert len(idents) == 3
    assert threading.get_ident() not in idents


async def test_r11_5_thread_stage_times_out_at_its_deadline_and_is_reported() -> None:
    release = threading.Event()

    def blocks(ctx: Any, _: Any) -> str:
        release.wait(10)
        return "too late"

    pipeline = make_pipeline(st("slow", blocks, timeout_seconds=0.2, executor="thread"))
    try:
        result = await pipeline.execute()
    finally:
        release.set()
    assert result.stage_results["slow"].status is StageStatus.TIMED_OUT
    assert "slow" in result.metadata["still_running"]


async def test_r11_3_cooperative_thread_ends_cancelled_within_the_grace_period() -> None:
    started = threading.Event()
    token = anyio.lowlevel.current_token()
    running = anyio.Event()

    def loops(ctx: Any, _: Any) -> None:
        anyio.from_thread.run_sync(running.set, token=token)
        while True:
            ctx.check_cancelled()
            started.wait(0.01)  # a unit of blocking work

    pipeline = make_pipeline(
        st("work", loops, executor="thread"), timeout=TimeoutConfig(grace_period_seconds=5)
    )
    result, _ = await stop_when(pipeline, running)
    assert result.stage_results["work"].status is StageStatus.CANCELLED
    assert "still_running" not in result.metadata


async def test_r11_5_process_stage_is_killed_at_its_deadline(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    handler = functools.partial(pid_file_then_sleep, str(pid_file))
    pipeline = make_pipeline(st("crunch", handler, timeout_seconds=1.5, executor="process"))
    result = await pipeline.execute()
    assert result.stage_results["crunch"].status is StageStatus.TIMED_OUT
    assert gone(int(pid_file.read_text()))
    assert "still_running" not in result.metadata


async def test_r11_5_process_stage_is_killed_when_the_grace_period_runs_out(fifo: Path) -> None:
    handler = functools.partial(pid_then_sleep, str(fifo))
    pipeline = make_pipeline(
        st("crunch", handler, executor="process"), timeout=TimeoutConfig(grace_period_seconds=0.2)
    )
    pids: list[int] = []
    async with executing(pipeline, limit=30) as run:
        pids.append(await read_pid(fifo))
        pipeline.cancel()
    assert run.returned.stage_results["crunch"].status is StageStatus.CANCELLED
    assert gone(pids[0])


async def test_r11_3_cooperative_process_stage_ends_cancelled_within_the_grace_period(
    fifo: Path,
) -> None:
    handler = functools.partial(pid_then_cooperate, str(fifo))
    pipeline = make_pipeline(
        st("crunch", handler, executor="process"), timeout=TimeoutConfig(grace_period_seconds=60)
    )
    # Were it not to cooperate, it would be killed only after 60 s: far past the limit.
    async with executing(pipeline, limit=30) as run:
        await read_pid(fifo)
        pipeline.cancel()
    assert run.returned.stage_results["crunch"].status is StageStatus.CANCELLED


async def test_r11_6_sigkill_mid_task_fails_the_attempt_and_the_retry_completes(
    fifo: Path,
) -> None:
    handler = functools.partial(pid_then_sleep_on_first_attempt, str(fifo))
    pipeline = make_pipeline(st("crunch", handler, executor="process"), retry=RETRY_ONCE)
    async with executing(pipeline, limit=30) as run:
        os.kill(await read_pid(fifo), signal.SIGKILL)
    crunch = run.returned.stage_results["crunch"]
    assert crunch.status is StageStatus.COMPLETED
    assert crunch.attempt_count == 2
    assert str(crunch.result).startswith("attempt 2 in ")
    first = crunch.metrics["attempts"][0]
    assert "stage 'crunch' (attempt 1)" in str(first["error"])
    assert "SIGKILL" in str(first["error"])


async def test_r11_6_os_exit_in_a_process_stage_fails_it_with_a_clear_error() -> None:
    pipeline = make_pipeline(st("quit", functools.partial(exits, 3), executor="process"))
    result = await pipeline.execute()
    quit_ = result.stage_results["quit"]
    assert quit_.status is StageStatus.FAILED
    assert isinstance(quit_.exception, WorkerLostError)
    assert "stage 'quit'" in str(quit_.error)
    assert "exited with code 3" in str(quit_.error)


async def test_r11_4_process_stage_gets_its_input_and_carries_set_and_metric_back() -> None:
    async def up(ctx: Any, _: Any) -> int:
        ctx.set("a", "from up")
        return 41

    async def after(ctx: Any, _: Any) -> Any:
        return ctx.get("written")

    pipeline = make_pipeline(
        st("up", up),
        st("x", uses_the_stand_in, ["up"], executor="process"),
        st("after", after, ["x"]),
    )
    result = await pipeline.execute()
    x = result.stage_results["x"]
    assert x.status is StageStatus.COMPLETED, x.error
    assert x.result["pid"] != os.getpid()
    assert (x.result["a"], x.result["up"], x.result["stage"]) == ("from up", 41, ("x", 1))
    assert x.metrics["rows"] == 12
    assert result.stage_results["after"].result == 42


async def test_r11_4_unpicklable_input_fails_the_process_stage_naming_it() -> None:
    async def up(ctx: Any, _: Any) -> Any:
        return threading.Lock()

    pipeline = make_pipeline(st("up", up), st("load", lambda c, v: v, ["up"], executor="process"))
    result = await pipeline.execute()
    load = result.stage_results["load"]
    assert load.status is StageStatus.FAILED
    assert isinstance(load.exception, NotPicklableError)
    assert "stage 'load': the input cannot be pickled" in str(load.error)


async def test_r11_4_a_lambda_runs_as_a_process_stage_by_pipeline_default() -> None:
    pipeline = make_pipeline(st("double", lambda c, v: (v * 2, os.getpid())), executor="process")
    result = await pipeline.execute(21)
    value, pid = result.stage_results["double"].result
    assert value == 42
    assert pid != os.getpid()
    assert result.status.name == "COMPLETED"


async def test_r7_6_r11_4_a_reserved_metric_name_is_refused_inside_the_process() -> None:
    def records_attempts(ctx: Any, _: Any) -> str:
        ctx.record_metric("attempts", 3)  # the library's own: refused where it is called
        return "not reached"

    pipeline = make_pipeline(st("m", records_attempts, executor="process"))
    result = await pipeline.execute()
    m = result.stage_results["m"]
    assert m.status is StageStatus.FAILED
    assert "metric name 'attempts' is reserved" in str(m.error)


def test_r11_5_thread_job_abandoned_before_its_thread_began_never_calls_the_handler() -> None:
    """The attempt's deadline can pass while its job still waits for a worker
    thread: abandoning it then drops it (the handler is never called, and
    nothing is reported as still running); abandoning a job that has begun
    reports it until it ends."""
    from proxima.data.pipeline.executors import _thread

    calls: list[str] = []
    ended: list[object] = []
    call = StageCall(
        stage_id="t",
        attempt=1,
        handler=lambda ctx, data: calls.append(data),
        context=None,
        input="x",
    )
    early = _thread._Job(call)
    assert early.abandon(ended.append) is False  # not started: dropped, not reported
    assert early.run() is None
    assert calls == []
    assert ended == []

    started = threading.Event()
    release = threading.Event()

    def blocking(ctx: Any, data: Any) -> str:
        started.set()
        release.wait(10)
        return "late"

    late = _thread._Job(
        StageCall(stage_id="t", attempt=2, handler=blocking, context=None, input=None)
    )
    worker = threading.Thread(target=late.run)
    worker.start()
    assert started.wait(10)
    assert late.abandon(ended.append) is True  # running: reported until it ends
    release.set()
    worker.join(10)
    assert ended == [late]
