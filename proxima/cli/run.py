"""``proxima run``: load, validate, run with progress and Ctrl-C handling, report.

Everything that can be checked is checked before the run starts (the input's
JSON, the backend, the target, the graph, the store), so a mistake costs no
work and exits 2 with one line (R14.2). The run's outcome is the exit status:
0 COMPLETED, 1 FAILED, 3 PARTIALLY_COMPLETED, 130 CANCELLED.

With ``--json`` stdout holds the ``to_dict()`` JSON and nothing else; every
line meant for a person goes to stderr then.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from .errors import UsageError
from .stores import DEFAULT_STORE, check_writable, open_store

if TYPE_CHECKING:
    from proxima.data.pipeline import Pipeline, PipelineResult

    from .interrupt import Interrupted

__all__ = ["EXIT_STATUS", "RunOptions", "exit_status", "run_command"]

#: Final pipeline status name -> exit status (R14.2).
EXIT_STATUS = {"COMPLETED": 0, "FAILED": 1, "PARTIALLY_COMPLETED": 3, "CANCELLED": 130}


@attrs.frozen
class RunOptions:
    """The options of ``proxima run``, as parsed."""

    target: str
    input_json: str | None = None
    input_file: Path | None = None
    backend: str = "asyncio"
    store: Path | None = None
    resume: str | None = None
    html: Path | None = None
    json: bool = False
    progress: bool = True
    #: How the user invoked us, for the resume command we print.
    prog: str = "proxima"


def run_command(opts: RunOptions) -> int:
    """Run ``opts.target`` once; returns the exit status."""
    initial_input = read_input(opts.input_json, opts.input_file)
    _check_backend(opts.backend)
    from .target import load_target

    pipeline = load_target(opts.target)
    if opts.html is not None:
        check_writable(opts.html, "--html")
    store_path = opts.store if opts.store is not None else (DEFAULT_STORE if opts.resume else None)
    extra: dict[str, Any] = {}
    if store_path is not None:
        # A run to resume must be in an existing store; a new run may start one.
        extra["store"] = open_store(store_path, create=opts.resume is None)
        if opts.resume is not None:
            extra["resume"] = opts.resume
    human = sys.stderr if opts.json else sys.stdout
    outcome = _execute(pipeline, initial_input, extra, opts, human)
    from .interrupt import after_the_run

    with after_the_run(_notice):
        _pause_for_tests()
        result = outcome.result
        if result is None:
            print("Stopped before the run began.", file=sys.stderr)
            return EXIT_STATUS["CANCELLED"]
        _report(result, opts, store_path, human)
        # A Ctrl-C during the run means 130, even one that came as the run
        # was ending, too late to change its status.
        status = EXIT_STATUS["CANCELLED"] if outcome.signals else exit_status(result)
        _exit_now_if_threads_remain(result, status)
        return status


#: A private hook for tests/test_cli.py, not for users: with this variable
#: set, ``proxima run`` prints ``_PAUSED_AFTER_RUN`` on stderr once the run has
#: ended (the event loop and its Ctrl-C watcher are gone) and waits for a line
#: on stdin before it reports, so that a test can send SIGINT in that window.
_PAUSE_AFTER_RUN = "_PROXIMA_TEST_PAUSE_AFTER_RUN"
_PAUSED_AFTER_RUN = "proxima-test: the run has ended, waiting for stdin"


def _pause_for_tests() -> None:
    if os.environ.get(_PAUSE_AFTER_RUN):
        print(_PAUSED_AFTER_RUN, file=sys.stderr, flush=True)
        sys.stdin.readline()


def exit_status(result: PipelineResult) -> int:
    """The exit status of a finished run (R14.2)."""
    return EXIT_STATUS.get(result.status.name, 1)


def _exit_now_if_threads_remain(result: PipelineResult, status: int) -> None:
    """End the process at once when worker threads outlived the run.

    A thread cannot be killed (R11.5): a blocking ``def`` stage stopped at a
    deadline or after a grace period runs on, its result discarded. Python
    would wait for it at exit, so after Ctrl-C the command would seem to
    hang; it says so and leaves without waiting instead.
    """
    leftovers = result.metadata.get("still_running")
    if not leftovers:
        return
    for stage_id, what in dict(leftovers).items():
        print(f"stage {stage_id}: {what}", file=sys.stderr)
    print("Exiting without waiting for them.", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def read_input(input_json: str | None, input_file: Path | None) -> Any:
    """The initial input: ``--input`` JSON text, or ``--input-file`` (``-``
    is stdin); ``None`` without either."""
    if input_json is not None and input_file is not None:
        raise UsageError("give --input or --input-file, not both")
    if input_json is not None:
        text, source = input_json, "--input"
    elif input_file is not None:
        text, source = _read_file(input_file), f"--input-file {str(input_file)!r}"
    else:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source} is not valid JSON: {exc}") from None


def _read_file(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--input-file: no such file: {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--input-file: cannot read {str(path)!r}: {exc}") from None


def _check_backend(backend: str) -> None:
    if backend == "trio" and importlib.util.find_spec("trio") is None:
        raise UsageError("--backend trio needs trio: pip install 'proxima[trio]'")


def _execute(
    pipeline: Pipeline,
    initial_input: Any,
    extra: dict[str, Any],
    opts: RunOptions,
    human: TextIO,
) -> Interrupted:
    """Run on the chosen backend with progress shown and Ctrl-C handled."""
    import anyio

    from proxima.data.pipeline import PipelineException

    from .interrupt import execute_interruptibly
    from .progress import is_terminal, showing_progress

    async def main() -> Interrupted:
        execute = functools.partial(pipeline.execute, initial_input, **extra)
        return await execute_interruptibly(pipeline, execute, _notice)

    try:
        if opts.json:
            with stdout_to_stderr():
                return anyio.run(main, backend=opts.backend)
        if not opts.progress:
            return anyio.run(main, backend=opts.backend)
        with showing_progress(pipeline, live=is_terminal()):
            return anyio.run(main, backend=opts.backend)
    except PipelineException as exc:
        # Raised before any stage ran: e.g. an unknown run id to resume.
        raise UsageError(str(exc)) from None


def _notice(line: str) -> None:
    """A line about Ctrl-C for the user, on stderr."""
    # A terminal has just echoed "^C" without a newline.
    start = "\n" if line.startswith("Ctrl-C:") and sys.stderr.isatty() else ""
    print(start + line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send whatever the run prints to stdout (a stage's ``print``, a worker
    process's output) to stderr, so that with ``--json`` stdout holds the
    JSON alone. Done on the file descriptor, so child processes follow."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # pragma: no cover - no file descriptor 1: Python level only
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _report(result: PipelineResult, opts: RunOptions, store: Path | None, human: TextIO) -> None:
    """The summary (or the JSON), then a few lines on what else happened."""
    if opts.json:
        print(json.dumps(result.to_dict()))
    else:
        print(file=human)
        print(result.summary(), file=human)
    notes = []
    restored = _restored(result)
    if restored:
        notes.append(restored)
    if opts.html is not None:
        result.to_html(opts.html)
        notes.append(f"HTML report written to {opts.html}")
    if store is not None and result.run_id is not None:
        notes.append(f"Recorded in {store} as run {result.run_id}.")
        if result.status.name != "COMPLETED":
            notes.append(f"To resume it: {resume_command(opts, store, result.run_id)}")
    if notes:
        print("", *notes, sep="\n", file=human)


def _restored(result: PipelineResult) -> str | None:
    """A line saying which stages a resumed run took from earlier runs."""
    origins: dict[str, int] = {}
    for stage in result.stage_results.values():
        if stage.restored_from is not None:
            origins[stage.restored_from] = origins.get(stage.restored_from, 0) + 1
    if not origins:
        return None
    parts = [f"{_stages(n)} from run {run}" for run, n in origins.items()]
    return f"Not run again: {', '.join(parts)} (restored from the store)."


def _stages(n: int) -> str:
    return f"{n} stage" + ("" if n == 1 else "s")


def resume_command(opts: RunOptions, store: Path, run_id: str) -> str:
    """The command that resumes ``run_id``: the same target, input and store."""
    words = ["run", opts.target, "--store", str(store), "--resume", run_id]
    if opts.input_json is not None:
        words += ["--input", opts.input_json]
    if opts.input_file is not None:
        words += ["--input-file", str(opts.input_file)]
    if opts.backend != "asyncio":
        words += ["--backend", opts.backend]
    return f"{opts.prog} {shlex.join(words)}"
