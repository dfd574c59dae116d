"""R11: the Dask executor on real ``distributed`` clusters.

Most tests share one in-process cluster (``processes=False``) to stay fast;
the ones about pickling, a worker killed mid-task and restarts share one
``LocalCluster`` with a worker process under a nanny. Every async test runs
on asyncio, trio and uvloop: the executor drives a synchronous client from
threads, so the event loop is never Dask's.
"""

from __future__ import annotations

import functools
import os
import select
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from helpers import make_pipeline, st

from proxima.data.pipeline import RetryConfig, RetryStrategy, StageStatus
from proxima.data.pipeline.executors import DaskExecutor, NotPicklableError, WorkerLostError

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

pytestmark = pytest.mark.anyio

RETRY_ONCE = RetryConfig(strategy=RetryStrategy.IMMEDIATE, max_retries=1)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """In-process workers: tasks run in threads of this process."""
    with distributed.LocalCluster(
        n_workers=1, processes=False, threads_per_worker=4, dashboard_address=":0"
    ) as local:
        yield local


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    with distributed.Client(cluster) as dask_client:
        yield dask_client


@pytest.fixture(scope="module")
def process_client() -> Iterator[Any]:
    """One worker process under a nanny; a worker that dies fails its task
    at once (as in the embedded cluster) instead of being retried by Dask.

    Workers are killed here again and again: LocalCluster closes the nanny of
    a worker still missing 15 s (``lost-worker-timeout``) after it was lost,
    which can fall in the second of a later restart; these tests wait less.
    """
    settings = {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.deploy.lost-worker-timeout": "1h",
    }
    with dask.config.set(settings):
        local = distributed.LocalCluster(
            n_workers=1, processes=True, threads_per_worker=1, dashboard_address=":0"
        )
        with local, distributed.Client(local) as dask_client:
            yield dask_client


# Handlers: module-level, so that they pickle by reference and, on the
# in-process cluster, share this module's globals with the test.

WORKERS: list[Any] = []
GAVE_UP = threading.Event()


def records_its_worker(ctx: Any, value: Any) -> Any:
    WORKERS.append(distributed.get_worker())
    return value


def uses_the_stand_in(ctx: Any, value: Any) -> dict[str, Any]:
    ctx.set("written", value + 1)
    ctx.record_metric("rows", 12)
    return {
        "a": ctx.get("a"),
        "data": dict(ctx.data),
        "up": ctx.get_stage_result("up").result,
        "stage": (ctx.stage_id, ctx.attempt),
    }


def cooperates(ctx: Any, _: Any) -> None:
    GAVE_UP.clear()
    try:
        while True:
            ctx.check_cancelled()
            time.sleep(0.01)  # a unit of blocking work
    finally:
        GAVE_UP.set()


def raises_key_error(ctx: Any, _: Any) -> None:
    raise KeyError("no such row")


def dies_on_first_attempt(ctx: Any, _: Any) -> int:
    if ctx.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def its_pid() -> int:
    return os.getpid()


def pid_file_then_sleep(path: str, ctx: Any, _: Any) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(60)


async def up(ctx: Any, _: Any) -> int:
    ctx.set("a", "from up")
    return 41


async def after(ctx: Any, _: Any) -> Any:
    return ctx.get("written")


def _fresh_worker(client: Any, stuck: int) -> bool:
    """Whether the scheduler has a worker, and none is process ``stuck``."""
    pids = list(client.run(os.getpid, on_error="return").values())
    return bool(pids) and all(isinstance(pid, int) and pid != stuck for pid in pids)


async def _ends_within(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` is gone within ``seconds`` (waits on a pidfd)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = await anyio.to_thread.run_sync(select.select, [pidfd], [], [], seconds)
    finally:
        os.close(pidfd)
    return bool(readable)


# -- R11.7 clusters and clients -------------------------------------------------------------------


async def test_r11_7_embedded_local_cluster_runs_the_stage_and_is_closed_after_the_run() -> None:
    WORKERS.clear()
    executor = DaskExecutor(n_workers=1, processes=False, threads_per_worker=1)
    pipeline = make_pipeline(st("a", records_its_worker, executor=executor))
    result = await pipeline.execute("value")
    assert result.stage_results["a"].result == "value"
    (worker,) = WORKERS
    assert worker.status.name == "closed"


async def test_r11_7_a_callers_client_is_used_and_never_closed(client: Any) -> None:
    pipeline = make_pipeline(st("a", lambda c, v: v * 2, executor=DaskExecutor(client=client)))
    result = await pipeline.execute(21)
    assert result.stage_results["a"].result == 42
    assert client.status == "running"
    assert client.submit(lambda: "still usable").result() == "still usable"


async def test_r11_7_an_address_connects_to_a_running_cluster(cluster: Any) -> None:
    executor = DaskExecutor(cluster.scheduler_address)
    pipeline = make_pipeline(st("a", lambda c, v: v + 1, executor=executor))
    assert (await pipeline.execute(1)).stage_results["a"].result == 2
    assert cluster.status.name == "running"


def test_r11_7_bad_arguments_are_refused_at_construction(client: Any) -> None:
    with pytest.raises(ValueError, match="an address or a client, not both"):
        DaskExecutor("tcp://127.0.0.1:8786", client=client)
    with pytest.raises(ValueError, match="n_workers"):
        DaskExecutor(client=client, n_workers=2)
    with pytest.raises(TypeError, match="address"):
        DaskExecutor(8786)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="restart_on_timeout"):
        DaskExecutor(client=client, restart_on_timeout="yes")  # type: ignore[arg-type]


# -- R11.4 the context and pickling ---------------------------------------------------------------


async def test_r11_4_dask_stand_in_reads_the_snapshot_and_carries_set_and_metric_back(
    client: Any,
) -> None:
    pipeline = make_pipeline(
        st("up", up),
        st("x", uses_the_stand_in, ["up"], executor=DaskExecutor(client=client)),
        st("after", after, ["x"]),
    )
    result = await pipeline.execute()
    x = result.stage_results["x"]
    assert x.status is StageStatus.COMPLETED, x.error
    assert x.result == {
        "a": "from up",
        "data": {"a": "from up"},
        "up": 41,
        "stage": ("x", 1),
    }
    assert x.metrics["rows"] == 12
    assert result.stage_results["after"].result == 42


async def test_r11_4_unpicklable_input_fails_before_the_task_is_sent(client: Any) -> None:
    async def lock(ctx: Any, _: Any) -> Any:
        return threading.Lock()

    pipeline = make_pipeline(
        st("up", lock), st("load", lambda c, v: v, ["up"], executor=DaskExecutor(client=client))
    )
    result = await pipeline.execute()
    load = result.stage_results["load"]
    assert load.status is StageStatus.FAILED
    assert isinstance(load.exception, NotPicklableError)
    assert "stage 'load': the input cannot be pickled" in str(load.error)


async def test_r11_4_a_large_input_reaches_the_task(client: Any) -> None:
    big = os.urandom(3 << 20)  # scattered to the workers, not sent in the task graph
    pipeline = make_pipeline(st("a", lambda c, v: len(v), executor=DaskExecutor(client=client)))
    result = await pipeline.execute(big)
    assert result.stage_results["a"].result == len(big)


async def test_r11_4_a_handlers_exception_keeps_its_type(client: Any) -> None:
    pipeline = make_pipeline(st("a", raises_key_error, executor=DaskExecutor(client=client)))
    result = await pipeline.execute()
    assert isinstance(result.stage_results["a"].exception, KeyError)


async def test_r11_4_lambdas_and_closures_run_on_worker_processes(process_client: Any) -> None:
    offset = 100

    def closure(ctx: Any, value: int) -> tuple[int, int]:
        return os.getpid(), value + offset

    executor = DaskExecutor(client=process_client)
    pipeline = make_pipeline(
        st("closure", closure, executor=executor),
        st("lambda", lambda c, v: v * 2, executor=executor),
    )
    result = await pipeline.execute(1)
    pid, value = result.stage_results["closure"].result
    assert pid != os.getpid()
    assert value == 101
    assert result.stage_results["lambda"].result == 2


# -- R11.5 / R11.6 timeouts and lost workers ------------------------------------------------------


async def test_r11_5_dask_stage_ends_at_its_deadline_and_the_task_is_reported(
    client: Any,
) -> None:
    pipeline = make_pipeline(
        st("slow", cooperates, timeout_seconds=0.3, executor=DaskExecutor(client=client))
    )
    result = await pipeline.execute()
    assert result.stage_results["slow"].status is StageStatus.TIMED_OUT
    assert "Dask cannot interrupt a running task" in result.metadata["still_running"]["slow"]
    # Its future was cancelled, which check_cancelled() sees on the worker.
    assert await anyio.to_thread.run_sync(GAVE_UP.wait, 10)


async def test_r11_6_a_worker_killed_mid_task_fails_the_attempt_and_the_retry_completes(
    process_client: Any,
) -> None:
    executor = DaskExecutor(client=process_client)
    pipeline = make_pipeline(
        st("crunch", dies_on_first_attempt, executor=executor), retry=RETRY_ONCE
    )
    with anyio.fail_after(30):
        result = await pipeline.execute()
    crunch = result.stage_results["crunch"]
    assert crunch.status is StageStatus.COMPLETED, crunch.error
    assert crunch.attempt_count == 2
    first = crunch.metrics["attempts"][0]
    assert "stage 'crunch' (attempt 1): the Dask worker running it died" in str(first["error"])


async def test_r11_6_a_lost_worker_without_retries_fails_the_stage(process_client: Any) -> None:
    executor = DaskExecutor(client=process_client)
    pipeline = make_pipeline(st("crunch", dies_on_first_attempt, executor=executor))
    with anyio.fail_after(30):
        result = await pipeline.execute()
    crunch = result.stage_results["crunch"]
    assert crunch.status is StageStatus.FAILED
    assert isinstance(crunch.exception, WorkerLostError)


async def test_r11_5_restart_on_timeout_kills_the_worker_holding_the_overdue_task(
    process_client: Any, tmp_path: Path
) -> None:
    def worker_pid() -> int:
        # A function of this module: the worker has imported it, as the
        # stage's handler needs, so the deadline below is the task's alone.
        pid: int = process_client.submit(its_pid, pure=False).result(20)
        return pid

    await anyio.to_thread.run_sync(worker_pid)
    pid_file = tmp_path / "pid"
    executor = DaskExecutor(client=process_client, restart_on_timeout=True)
    handler = functools.partial(pid_file_then_sleep, str(pid_file))
    pipeline = make_pipeline(st("slow", handler, timeout_seconds=2, executor=executor))
    with anyio.fail_after(30):
        result = await pipeline.execute()
    assert result.stage_results["slow"].status is StageStatus.TIMED_OUT
    stuck = int(pid_file.read_text())
    # The worker process that held the task is killed (it is a child of this
    # process: LocalCluster's nannies run here) ...
    assert await _ends_within(stuck, 20), "the worker holding the overdue task still runs"
    # ... and its nanny starts a fresh one (the scheduler has no event to
    # wait on for that: look until it is there).
    with anyio.fail_after(20):
        while not await anyio.to_thread.run_sync(_fresh_worker, process_client, stuck):  # noqa: ASYNC110
            await anyio.sleep(0.05)
