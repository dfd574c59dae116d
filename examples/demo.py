"""A small pipeline that shows proxima.data.pipeline at work.

Run it through the command line, ``proxima run examples/demo.py:build_pipeline``
(``nox -s demo`` does that, recording the run in ``.proxima/demo.db``), or as a
script, ``python examples/demo.py`` (``--backend trio`` for trio).

The graph::

    fetch_users ──┐
    fetch_orders ─┤
    fetch_prices ─┼──► merge ──► report
    fetch_stock ──┘    (fan-in: receives a dict of the four results)
    report ──────────► seal      (a checksum of the totals, in a worker process)
    fetch_users ─────► geocode   (optional; always too slow, so it times out)

* ``fetch_users``, ``fetch_orders``, ``fetch_prices`` and ``fetch_stock`` have
  no dependencies, so they start together (``max_parallel=5``).
* ``fetch_stock`` is a plain ``def`` that blocks (like a synchronous database
  driver would). The default executor, ``"auto"``, runs such a handler in a
  worker thread, so it blocks neither the event loop nor the other stages'
  timers.
* ``fetch_prices`` is flaky on purpose: its first two attempts raise
  ``ConnectionError``, the third succeeds. Its retry policy waits 0.3 s, then
  0.6 s (exponential backoff), so the stage ends COMPLETED with 3 attempts.
* ``merge`` depends on all four fetches. It starts as soon as the last of
  them completes and receives ``{"fetch_users": ..., "fetch_orders": ...,
  "fetch_prices": ..., "fetch_stock": ...}``, in the order its dependencies
  are listed.
* ``seal`` is CPU-bound (a key-derivation hash of the totals). With
  ``executor="process"`` it runs in a worker process, so it holds neither
  the event loop nor the interpreter's lock; its handler, input and result
  travel by pickle.
* ``geocode`` is the stage that times out. Its handler needs 10 s, but its
  timeout is 0.8 s per attempt: the library cancels it at the deadline
  (a hard stop, not a flag) and, with ``retry_on_timeout=False``, does not try
  again. Because it is ``critical=False`` (optional), the rest of the pipeline
  goes on, and the run ends PARTIALLY_COMPLETED rather than FAILED: only an
  optional stage fell short.

Run as a script, the stages narrate what they do, and the script shows what
the run reports about itself. In an
interactive terminal (and with rich installed, ``pip install 'proxima[rich]'``)
that is ``RichProgress``, a live table of the stages; otherwise, or with
``--plain``, a small listener prints one line per run-level event, retry and
finished stage. At the end it counts the events by kind. ``--html PATH``
writes the run's HTML report (graph, timeline, summary table) to ``PATH``.
The library itself never prints: everything on screen comes from this script.

The whole run takes under two seconds. The script exits 0 when the
run ends as described above, 1 otherwise, so it doubles as a smoke test.
Through the command line, the exit status is the run's: 3, PARTIALLY_COMPLETED.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import sys
import time
from typing import Any

import anyio

from proxima.data.pipeline import (
    EventKind,
    Pipeline,
    PipelineBuilder,
    PipelineContext,
    PipelineEvent,
    PipelineResult,
    PipelineStatus,
    RetryConfig,
    RetryStrategy,
    StageStatus,
)

START = time.perf_counter()
#: Whether the stages narrate: when run as a script. Under ``proxima run``
#: the command line's own progress display tells the story.
NARRATE = False


def say(message: str) -> None:
    """Print one progress line with the time since the demo started."""
    if NARRATE:
        print(f"[{time.perf_counter() - START:5.2f}s] {message}", flush=True)


# -- the stage handlers: each is called as handler(ctx, input) ------------------


async def fetch_users(ctx: PipelineContext, _: Any) -> list[str]:
    say("fetch_users: started")
    await anyio.sleep(0.6)  # stands in for an HTTP call
    say("fetch_users: done")
    return ["ada", "grace", "linus"]


async def fetch_orders(ctx: PipelineContext, _: Any) -> list[dict[str, Any]]:
    say("fetch_orders: started")
    await anyio.sleep(0.9)
    say("fetch_orders: done")
    return [
        {"user": "ada", "item": "lamp", "qty": 2},
        {"user": "grace", "item": "desk", "qty": 1},
        {"user": "ada", "item": "chair", "qty": 4},
    ]


class FlakyPriceService:
    """Fails the first ``failures`` calls, then answers: deterministic flakiness."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self, ctx: PipelineContext, _: Any) -> dict[str, float]:
        self.calls += 1
        say(f"fetch_prices: attempt {self.calls}")
        await anyio.sleep(0.15)
        if self.calls <= self.failures:
            say(f"fetch_prices: attempt {self.calls} fails (ConnectionError), will retry")
            raise ConnectionError("price service unavailable")
        # Handlers can add their own metrics to the stage's result.
        ctx.record_metric("price_service_calls", self.calls)
        say(f"fetch_prices: attempt {self.calls} succeeded")
        return {"lamp": 19.5, "desk": 120.0, "chair": 45.0}


def fetch_stock(ctx: PipelineContext, _: Any) -> dict[str, int]:
    # A plain def: it runs in a worker thread, so blocking here is fine.
    say("fetch_stock: started (blocking call, in a worker thread)")
    time.sleep(0.4)  # stands in for a synchronous database driver
    say("fetch_stock: done")
    return {"lamp": 12, "desk": 0, "chair": 30}


async def merge(ctx: PipelineContext, fetched: dict[str, Any]) -> list[dict[str, Any]]:
    # Several dependencies: the input is a dict of dependency id -> result.
    say(f"merge: got {list(fetched)}")
    prices = fetched["fetch_prices"]
    stock = fetched["fetch_stock"]
    known = set(fetched["fetch_users"])
    return [
        {**order, "total": order["qty"] * prices[order["item"]], "in_stock": stock[order["item"]]}
        for order in fetched["fetch_orders"]
        if order["user"] in known
    ]


async def report(ctx: PipelineContext, rows: list[dict[str, Any]]) -> dict[str, float]:
    # One dependency: the input is that dependency's result.
    totals: dict[str, float] = {}
    for row in rows:
        totals[row["user"]] = totals.get(row["user"], 0.0) + row["total"]
    ctx.set("totals", totals)  # shared data, readable after the run
    say(f"report: {totals}")
    return totals


def seal(ctx: PipelineContext, totals: dict[str, float]) -> str:
    # Runs in a worker process (executor="process"): CPU-bound work in parallel.
    data = json.dumps(totals, sort_keys=True).encode()
    return hashlib.pbkdf2_hmac("sha256", data, b"orders-demo", 20_000).hex()[:16]


async def geocode(ctx: PipelineContext, users: list[str]) -> dict[str, str]:
    say("geocode: started (needs 10 s, has 0.8 s)")
    await anyio.sleep(10)  # cancelled at the stage's deadline
    return {}  # never reached


def build_pipeline() -> Pipeline:
    """The demo pipeline, new each call (the flaky service counts its calls).

    Takes no arguments, so the command line can call it:
    ``proxima run examples/demo.py:build_pipeline``.
    """
    flaky = FlakyPriceService(failures=2)
    return (
        PipelineBuilder("orders-demo")
        .with_parallel(enabled=True, max_parallel=5)
        .with_timeout(stage_timeout=5.0, pipeline_timeout=30.0)
        .add_stage("fetch_users", "Fetch users", fetch_users)
        .add_stage("fetch_orders", "Fetch orders", fetch_orders)
        .add_stage(
            "fetch_prices",
            "Fetch prices (flaky)",
            flaky,
            retry_config=RetryConfig(
                max_retries=3,
                strategy=RetryStrategy.EXPONENTIAL_BACKOFF,
                initial_delay_seconds=0.3,  # waits 0.3 s, then 0.6 s
                retry_on_exceptions=(ConnectionError,),
            ),
        )
        .add_stage("fetch_stock", "Fetch stock (blocking)", fetch_stock)
        .add_stage(
            "merge",
            "Merge",
            merge,
            dependencies=["fetch_users", "fetch_orders", "fetch_prices", "fetch_stock"],
        )
        .add_stage("report", "Report", report, dependencies=["merge"])
        .add_stage(
            "seal", "Seal (worker process)", seal, dependencies=["report"], executor="process"
        )
        .add_stage(
            "geocode",
            "Geocode users (optional)",
            geocode,
            dependencies=["fetch_users"],
            timeout_seconds=0.8,
            retry_config=RetryConfig(retry_on_timeout=False),
            critical=False,
        )
        .build()
    )


def expected(result: PipelineResult) -> bool:
    """The outcome the module docstring promises."""
    stages = result.stage_results
    return (
        result.status is PipelineStatus.PARTIALLY_COMPLETED
        and stages["fetch_prices"].status is StageStatus.COMPLETED
        and stages["fetch_prices"].attempt_count == 3
        and stages["fetch_stock"].status is StageStatus.COMPLETED
        and stages["seal"].status is StageStatus.COMPLETED
        and stages["geocode"].status is StageStatus.TIMED_OUT
        and stages["report"].status is StageStatus.COMPLETED
    )


# -- watching the run: the library reports events, the demo shows them ------------

#: The events worth a line of their own in plain output (the rest are counted).
PLAIN_KINDS = {
    EventKind.RUN_STARTED,
    EventKind.RUN_PAUSED,
    EventKind.RUN_RESUMED,
    EventKind.STOP_REQUESTED,
    EventKind.STAGE_RETRYING,
    EventKind.STAGE_FINISHED,
    EventKind.CLEANUP_FINISHED,
    EventKind.RUN_FINISHED,
}


def print_event(event: PipelineEvent) -> None:
    """A listener: one plain line per interesting event.

    Listeners are called synchronously on the event loop's thread, so they
    should be quick; a print is.
    """
    if event.kind in PLAIN_KINDS:
        say(f"event: {event.describe()}")


def live_progress_available(plain: bool) -> bool:
    """Live progress needs an interactive terminal and rich."""
    if plain or not sys.stdout.isatty():
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    global NARRATE
    NARRATE = True
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the library's log")
    parser.add_argument("--plain", action="store_true", help="print event lines even in a terminal")
    parser.add_argument("--html", metavar="PATH", help="write the run's HTML report to PATH")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="    log %(name)s: %(message)s")

    pipeline = build_pipeline()
    counts: collections.Counter[str] = collections.Counter()
    pipeline.add_listener(lambda event: counts.update([event.kind.value]))
    say(f"running {pipeline.name!r} on {args.backend}")
    # run_sync starts an event loop of the chosen backend (anyio.run).
    if live_progress_available(args.plain):
        from proxima.data.pipeline import RichProgress

        with RichProgress(pipeline):
            result = pipeline.run_sync(backend=args.backend)
    else:
        pipeline.add_listener(print_event)
        result = pipeline.run_sync(backend=args.backend)

    print()
    print(result.summary())
    print()
    prices = result.stage_results["fetch_prices"]
    for attempt in prices.metrics["attempts"]:
        line = (
            f"fetch_prices attempt {attempt['attempt']}: {attempt['outcome']:<9}"
            f" {attempt['duration_ms']:6.1f} ms  {attempt['error'] or ''}"
        )
        print(line.rstrip())
    print(f"fetch_prices waited {prices.metrics['retry_delay_ms']:.0f} ms between attempts")
    print("seal of the totals (computed in a worker process):", result.stage_results["seal"].result)
    print("shared data after the run:", pipeline.context.data if pipeline.context else {})
    print("events:", ", ".join(f"{kind} {n}" for kind, n in counts.items()))
    if args.html:
        result.to_html(args.html)
        print(f"HTML report written to {args.html}")
    ok = expected(result)
    print("\noutcome as expected" if ok else "\nUNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
