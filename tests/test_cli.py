"""The ``proxima`` command line (R14), end to end.

Every test runs ``python -m proxima ...`` in a child process on pipeline
files written to a temporary folder, the way a user would: real exit
statuses, real output, real SIGINTs. A child that must be interrupted says
where it is by printing a line, and the test waits for that line (never for
a fixed time) before it sends the signal.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and ptys")

#: The pipelines the tests run: a user's file, outside this repository.
FLOWS = """
import pathlib
import sys
import time

import anyio
import sniffio

from proxima.data.pipeline import (
    Pipeline,
    PipelineBuilder,
    PipelineConfig,
    RetryConfig,
    RetryStrategy,
    Stage,
)

NO_RETRY = RetryConfig(strategy=RetryStrategy.NONE)


def say(line):
    print(line, file=sys.stderr, flush=True)


async def echo(ctx, value):
    return value


async def shout(ctx, _):
    print("a stage printing to stdout", flush=True)
    return "shouted"


async def boom(ctx, _):
    raise RuntimeError("boom")


async def which_backend(ctx, _):
    return sniffio.current_async_library()


def builder(name):
    return PipelineBuilder(name).with_retry(max_retries=0)


completed = builder("completed").add_stage("echo", "Echo", echo).build()
failing = (
    builder("failing")
    .add_stage("echo", "Echo", echo)
    .add_stage("boom", "Boom", boom, dependencies=["echo"])
    .build()
)
partial = (
    builder("partial")
    .add_stage("echo", "Echo", echo)
    .add_stage("optional", "Optional", boom, critical=False)
    .build()
)
noisy = builder("noisy").add_stage("shout", "Shout", shout).build()
backend = builder("backend").add_stage("which", "Which", which_backend).build()
unbuilt = builder("unbuilt").add_stage("echo", "Echo", echo)


def make_builder():
    return builder("from-factory").add_stage("a", "A", echo).add_stage(
        "b", "B", echo, dependencies=["a"]
    )


def make_number():
    return 42


def needs_arguments(name):
    return builder(name).build()


def explodes():
    return 1 / 0


cyclic = Pipeline(PipelineConfig(name="cyclic"))
cyclic.add_stages(
    [
        Stage(stage_id="a", name="A", handler=echo, dependencies=["b"]),
        Stage(stage_id="b", name="B", handler=echo, dependencies=["a"]),
    ]
)
number = 42


async def gate(ctx, value):
    # Fails until a file named gate.open exists in the working directory.
    if not pathlib.Path("gate.open").exists():
        raise RuntimeError("the gate is closed")
    return value


gated = (
    builder("gated")
    .add_stage("echo", "Echo", echo)
    .add_stage("gate", "Gate", gate, dependencies=["echo"])
    .build()
)


# -- for Ctrl-C ---------------------------------------------------------------------


async def cooperative(ctx, _):
    say("cooperative: started")
    while not ctx.is_cancelled:  # a cooperative stage checks for a stop
        await anyio.sleep(0.01)
    return "saw the stop"


async def stubborn(ctx, _):
    say("stubborn: started")
    await anyio.sleep(120)  # ignores the stop: only a cancellation ends it
    return "never"


async def cleanup(ctx):
    say(f"cleanup ran, cancelled={ctx.is_cancelled}")


def blocking(ctx, _):
    say("blocking: started")
    time.sleep(60)  # blocking code that never checks for a stop: a thread
    return "never"


graceful = (
    builder("graceful")
    .with_timeout(grace_period=60)
    .add_stage("coop", "Coop", cooperative, cleanup_handler=cleanup)
    .build()
)
stop_now = (
    builder("stop-now")
    .with_timeout(grace_period=60)
    .add_stage("stubborn", "Stubborn", stubborn, cleanup_handler=cleanup)
    .build()
)
abandoned = (
    builder("abandoned")
    .with_timeout(grace_period=0.2)
    .add_stage("blocking", "Blocking", blocking, cleanup_handler=cleanup)
    .build()
)
"""

#: A file holding exactly one pipeline, so that TARGET may omit ``:name``.
SINGLE = """
from proxima.data.pipeline import PipelineBuilder


async def hello(ctx, _):
    return "hello"


only = PipelineBuilder("single").add_stage("hello", "Hello", hello).build()
"""

#: A module that fails while it is imported (line 4).
BROKEN = """
import math

value = math.sqrt(-1)
"""

#: A module that takes its time to import: it says so, then waits for stdin.
SLOW_IMPORT = """
import sys

print("slow: importing", file=sys.stderr, flush=True)
sys.stdin.readline()
"""


def line_of(source: str, text: str) -> int:
    """The 1-based line of ``source`` that holds ``text``."""
    return next(i for i, line in enumerate(source.splitlines(), 1) if text in line)


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the pipeline files; the child processes run in it."""
    folder = tmp_path_factory.mktemp("cli")
    (folder / "flows.py").write_text(FLOWS, encoding="utf-8")
    (folder / "single.py").write_text(SINGLE, encoding="utf-8")
    (folder / "broken.py").write_text(BROKEN, encoding="utf-8")
    (folder / "slow_import.py").write_text(SLOW_IMPORT, encoding="utf-8")
    (folder / "sub").mkdir()
    return folder


def proxima(
    here: Path, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m proxima *args`` in ``here`` and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "proxima", *args],
        cwd=here,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


# -- run: exit statuses, output --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        ("flows.py:completed", "COMPLETED", 0),
        ("flows.py:failing", "FAILED", 1),
        ("flows.py:partial", "PARTIALLY_COMPLETED", 3),
    ],
)
def test_r14_2_exit_status_follows_the_final_status(
    here: Path, target: str, status: str, code: int
) -> None:
    proc = proxima(here, "run", target)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert f": {status} in " in proc.stdout  # the summary's first line
    assert "Traceback" not in proc.stderr


def test_r14_2_plain_progress_lines_when_stdout_is_not_a_terminal(here: Path) -> None:
    proc = proxima(here, "run", "flows.py:failing")
    lines = proc.stdout.splitlines()
    assert any("run 'failing' started: 2 stages" in line for line in lines), proc.stdout
    finished = [line.split()[1:3] for line in lines if line.split()[1:2] in (["echo"], ["boom"])]
    assert finished[:2] == [["echo", "COMPLETED"], ["boom", "FAILED"]], proc.stdout
    assert "RuntimeError: boom" in proc.stdout


def test_r14_2_no_progress_prints_the_summary_only(here: Path) -> None:
    proc = proxima(here, "run", "flows.py:completed", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "started" not in proc.stdout
    assert proc.stdout.lstrip().startswith("Pipeline 'completed'"), proc.stdout


def test_r14_2_json_prints_to_dict_only_even_when_a_stage_prints(here: Path) -> None:
    proc = proxima(here, "run", "flows.py:noisy", "--json")
    assert proc.returncode == 0, proc.stderr
    data = as_json(proc)  # stdout is the JSON and nothing else
    assert data["status"] == "COMPLETED"
    assert data["stage_results"]["shout"]["result"] == "shouted"
    assert "a stage printing to stdout" in proc.stderr


@pytest.mark.parametrize("how", ["--input", "--input-file", "--input-file -"])
def test_r14_2_initial_input_from_json_text_file_or_stdin(here: Path, how: str) -> None:
    value = {"day": "2024-01-31", "ids": [1, 2, 3]}
    text = json.dumps(value)
    path = here / "sub" / "input.json"
    path.write_text(text, encoding="utf-8")
    args = {
        "--input": ["--input", text],
        "--input-file": ["--input-file", str(path)],
        "--input-file -": ["--input-file", "-"],
    }[how]
    stdin = text if how == "--input-file -" else None
    proc = proxima(here, "run", "flows.py:completed", "--json", *args, stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    assert as_json(proc)["stage_results"]["echo"]["result"] == value


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_r14_2_backend_option_chooses_the_event_loop(here: Path, backend: str) -> None:
    proc = proxima(here, "run", "flows.py:backend", "--backend", backend, "--json")
    assert proc.returncode == 0, proc.stderr
    assert as_json(proc)["stage_results"]["which"]["result"] == backend


def test_r14_2_html_report_is_written(here: Path) -> None:
    report = here / "sub" / "report.html"
    proc = proxima(here, "run", "flows.py:partial", "--html", str(report))
    assert proc.returncode == 3, proc.stderr
    assert f"HTML report written to {report}" in proc.stdout
    html = report.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html")
    assert "optional" in html


def test_r14_2_live_progress_on_a_terminal(here: Path) -> None:
    import pty

    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxima", "run", "flows.py:failing"],
        cwd=here,
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
    )
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    _, err = proc.communicate(timeout=60)
    out = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 1, err
    assert "failing - FAILED" in out  # the live table's title, at the end
    assert "\x1b[" in out  # drawn with terminal control sequences
    assert "Pipeline 'failing'" in out  # and the summary after it
    assert "started: 2 stages" not in out  # no plain lines on a terminal


# -- targets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "name", "stages"),
    [
        ("flows.py:completed", "completed", 1),  # a file and a Pipeline
        ("flows:completed", "completed", 1),  # a module and a Pipeline
        ("flows.py:unbuilt", "unbuilt", 1),  # a PipelineBuilder
        ("flows.py:make_builder", "from-factory", 2),  # a callable returning a builder
        ("single.py", "single", 1),  # no name: the file's only pipeline
    ],
)
def test_r14_1_target_forms(here: Path, target: str, name: str, stages: int) -> None:
    proc = proxima(here, "validate", target)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ok: pipeline {name!r} is valid, {stages} stage" + (
        "s" if stages > 1 else ""
    )


def test_r14_1_file_target_from_another_folder(here: Path) -> None:
    proc = proxima(here / "sub", "run", "../flows.py:completed", "--no-progress")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.py:p"], "no such file: 'missing.py'"),
        (["run", "no_such_module:p"], "cannot import 'no_such_module': no module named"),
        (
            ["run", "broken.py:value"],
            f"broken.py:{line_of(BROKEN, 'sqrt')}: ValueError: math domain error",
        ),
        (["run", "flows.py:nothing"], "has no attribute 'nothing'"),
        (["run", "flows.py:number"], "'flows.py:number' is a int, not a Pipeline"),
        (["run", "flows.py:make_number"], "returned a int, not a Pipeline"),
        (["run", "flows.py:needs_arguments"], "needs arguments (name)"),
        (
            ["run", "flows.py:explodes"],
            f"flows.py:{line_of(FLOWS, '1 / 0')}: ZeroDivisionError: division by zero",
        ),
        (["run", "flows.py"], "holds several pipelines: name one"),
        (["run", "flows.py:cyclic"], "invalid pipeline 'flows.py:cyclic': "),
        (["validate", "flows.py:cyclic"], "cycle"),
        (["run", "flows.py:completed", "--input", "{oops"], "--input is not valid JSON"),
        (["run", "flows.py:completed", "--input-file", "nope.json"], "no such file: 'nope.json'"),
        (["run", "flows.py:completed", "--input", "1", "--input-file", "x"], "not both"),
        (["run", "flows.py:completed", "--backend", "curio"], 'Invalid value "curio"'),
        (["run", "flows.py:completed", "--html", "nowhere/r.html"], "no such folder: 'nowhere'"),
        (["run"], "requires an argument"),
        (["frobnicate"], 'Unknown command "frobnicate"'),
    ],
)
def test_r14_2_usage_error_exits_2_with_one_line_and_no_traceback(
    here: Path, args: list[str], message: str
) -> None:
    proc = proxima(here, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("proxima: error: ")
    assert message in lines[0]


# -- graph, validate -------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "first"), [("mermaid", "flowchart LR"), ("dot", "digraph")])
def test_r14_4_graph_prints_mermaid_or_dot(here: Path, fmt: str, first: str) -> None:
    proc = proxima(here, "graph", "flows.py:make_builder", "--format", fmt)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(first)
    edge = "-->" if fmt == "mermaid" else "->"
    assert sum(edge in line for line in proc.stdout.splitlines()) == 1  # a -> b


def test_r14_4_graph_is_mermaid_by_default(here: Path) -> None:
    proc = proxima(here, "graph", "flows.py:completed")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("flowchart LR")


# -- Ctrl-C ----------------------------------------------------------------------------------------


#: The private hook of ``proxima run`` (proxima/cli/run.py): set, the command
#: prints PAUSED_AFTER_RUN once the run has ended and waits for stdin before
#: it reports.
PAUSE_AFTER_RUN = "_PROXIMA_TEST_PAUSE_AFTER_RUN"
PAUSED_AFTER_RUN = "proxima-test: the run has ended, waiting for stdin"
#: What a Ctrl-C after the run says (proxima/cli/interrupt.py).
AFTER_THE_RUN = "Ctrl-C: the run has already ended; exiting."


class Child:
    """``proxima run`` in its own process group, with its stderr read line by
    line on a thread so that the test can wait for a given line.

    ``hold_stdin`` gives it a stdin that never ends (nothing is written to
    it); ``pause_after_run`` also sets the hook that makes it wait there once
    the run has ended."""

    def __init__(
        self,
        here: Path,
        *args: str,
        json_output: bool = True,
        hold_stdin: bool = False,
        pause_after_run: bool = False,
    ) -> None:
        self.json_output = json_output
        env = dict(os.environ)
        if pause_after_run:
            env[PAUSE_AFTER_RUN] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxima", "run", *args, *(["--json"] if json_output else [])],
            cwd=here,
            env=env,
            stdin=subprocess.PIPE if hold_stdin or pause_after_run else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own group: a Ctrl-C from a terminal hits the group
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 30) -> None:
        """Block until the child printed a line containing ``text``."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"no line with {text!r} in {timeout}s; got {self.seen}")
            self.seen.append(line)
            if text in line:
                return

    def ctrl_c(self) -> None:
        """What a terminal does on Ctrl-C: SIGINT to the foreground group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def finish(self, timeout: float = 30) -> tuple[int, Any, str]:
        """Exit status, the parsed JSON result (stdout itself without
        ``--json``), and all of stderr."""
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, json.loads(out) if self.json_output else out, "".join(self.seen)

    def close(self) -> None:
        """Kill the child if it still runs; close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.close()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_r14_3_first_ctrl_c_stops_gracefully(
    here: Path, children: list[Child], backend: str
) -> None:
    child = Child(here, "flows.py:graceful", "--backend", backend)
    children.append(child)
    child.wait_for("cooperative: started")
    child.ctrl_c()
    code, result, err = child.finish()
    assert code == 130, err
    assert "Ctrl-C: stopping gracefully (running stages have 60s to finish" in err
    assert "Press Ctrl-C again to stop now." in err
    # The stage saw ctx.is_cancelled within the grace period and kept its result.
    assert result["status"] == "CANCELLED"
    assert result["cancellation_reason"] == "USER_REQUESTED"
    coop = result["stage_results"]["coop"]
    assert (coop["status"], coop["result"]) == ("COMPLETED", "saw the stop")
    assert "cleanup ran, cancelled=True" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_r14_3_second_ctrl_c_stops_now_and_cleanup_still_runs(
    here: Path, children: list[Child], backend: str
) -> None:
    child = Child(here, "flows.py:stop_now", "--backend", backend)
    children.append(child)
    child.wait_for("stubborn: started")
    child.ctrl_c()
    child.wait_for("Press Ctrl-C again to stop now.")
    child.ctrl_c()
    # The grace period is 60 s: ending within finish()'s 30 s means it did not wait.
    code, result, err = child.finish(timeout=30)
    assert code == 130, err
    assert "Ctrl-C again: stopping now" in err
    assert result["status"] == "CANCELLED"
    assert result["stage_results"]["stubborn"]["status"] == "CANCELLED"
    assert "cleanup ran, cancelled=True" in err
    assert "Traceback" not in err


def test_r14_3_ctrl_c_does_not_wait_for_a_thread_that_cannot_be_stopped(
    here: Path, children: list[Child]
) -> None:
    child = Child(here, "flows.py:abandoned")
    children.append(child)
    child.wait_for("blocking: started")
    child.ctrl_c()
    # The thread sleeps 60 s; ending within finish()'s 30 s means it was left behind.
    code, result, err = child.finish(timeout=30)
    assert code == 130, err
    assert result["stage_results"]["blocking"]["status"] == "CANCELLED"
    assert "cleanup ran, cancelled=True" in err
    assert "stage blocking: 1 worker thread still running" in err
    assert "Exiting without waiting for them." in err


def test_r14_3_plain_progress_says_what_was_left_running(here: Path, children: list[Child]) -> None:
    child = Child(here, "flows.py:abandoned", json_output=False)
    children.append(child)
    child.wait_for("blocking: started")
    child.ctrl_c()
    code, out, err = child.finish(timeout=30)
    assert code == 130, err
    assert "blocking  CANCELLED" in out
    assert "blocking  left running: 1 worker thread still running" in out


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("ctrl_c", ["first", "second"])
def test_r14_3_ctrl_c_after_the_run_ended_exits_130_at_once(
    here: Path, children: list[Child], backend: str, ctrl_c: str
) -> None:
    """The event loop and its Ctrl-C watcher are gone, the summary not yet
    written: a Ctrl-C there (the first, after a completed run, or the second,
    after a graceful stop) ends the command at once with 130 and one line
    saying so, not with a KeyboardInterrupt wherever the report was."""
    target = "flows.py:completed" if ctrl_c == "first" else "flows.py:graceful"
    child = Child(
        here,
        target,
        "--backend",
        backend,
        "--no-progress",
        json_output=False,
        pause_after_run=True,
    )
    children.append(child)
    if ctrl_c == "second":
        child.wait_for("cooperative: started")
        child.ctrl_c()
        child.wait_for("Press Ctrl-C again to stop now.")
    child.wait_for(PAUSED_AFTER_RUN)
    child.ctrl_c()
    code, out, err = child.finish()
    assert code == 130, err
    assert err.count(AFTER_THE_RUN) == 1, err
    assert err.rstrip().endswith(AFTER_THE_RUN), err
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err
    assert out == ""  # it left at once: no summary


def test_r14_3_ctrl_c_before_the_run_exits_130_with_one_line(
    here: Path, children: list[Child]
) -> None:
    child = Child(here, "slow_import.py:anything", json_output=False, hold_stdin=True)
    children.append(child)
    child.wait_for("slow: importing")
    child.ctrl_c()
    code, out, err = child.finish()
    assert code == 130, err
    assert err.splitlines()[-1] == "Ctrl-C: stopped.", err
    assert "Traceback" not in err
    assert out == ""


# -- the store: --store, --resume, runs, show, report ----------------------------------------------


def recorded_run_id(stdout: str) -> str:
    """The run id in the "Recorded in ... as run ID." line."""
    line = next(line for line in stdout.splitlines() if line.startswith("Recorded in "))
    return line.rsplit(" ", 1)[-1].rstrip(".")


def test_r14_2_failed_run_prints_the_command_that_resumes_it(here: Path, tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(FLOWS, encoding="utf-8")
    store = tmp_path / "runs.db"
    first = proxima(tmp_path, "run", "flows.py:gated", "--store", str(store), "--input", '{"n": 1}')
    assert first.returncode == 1, first.stdout + first.stderr
    run_id = recorded_run_id(first.stdout)
    resume = f"To resume it: {Path(sys.executable).name} -m proxima run flows.py:gated"
    resume += f" --store {store} --resume {run_id} --input '{{\"n\": 1}}'"
    assert resume in first.stdout.splitlines()
    # Fix the cause, then run the printed command: only the stage that failed runs again.
    (tmp_path / "gate.open").touch()
    words = shlex.split(resume.split(": ", 1)[1])[3:]  # after "python -m proxima"
    second = proxima(tmp_path, *words, "--json")
    assert second.returncode == 0, second.stderr
    result = as_json(second)
    echo, gate = result["stage_results"]["echo"], result["stage_results"]["gate"]
    assert (echo["status"], echo["attempt_count"], echo["restored_from"]) == (
        "COMPLETED",
        0,
        run_id,
    )
    assert (gate["status"], gate["attempt_count"], gate["result"]) == ("COMPLETED", 1, {"n": 1})
    assert result["run_id"] != run_id
    # With --json the notes go to stderr: what was restored, and where the run is recorded.
    assert f"Not run again: 1 stage from run {run_id} (restored from the store)." in second.stderr
    assert f"Recorded in {store} as run {result['run_id']}." in second.stderr
    assert "To resume it" not in second.stderr


def test_r14_4_runs_show_and_report_read_the_store(here: Path, tmp_path: Path) -> None:
    store = str(tmp_path / "runs.db")
    done = proxima(here, "run", "flows.py:completed", "--store", store, "--no-progress")
    failed = proxima(here, "run", "flows.py:failing", "--store", store, "--no-progress")
    assert (done.returncode, failed.returncode) == (0, 1), done.stderr + failed.stderr
    assert "To resume it" not in done.stdout  # only a run that fell short is worth resuming
    first, second = recorded_run_id(done.stdout), recorded_run_id(failed.stdout)

    listed = proxima(here, "runs", "--store", store)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0][:3] == ["RUN", "ID", "PIPELINE"]
    assert [row[:3] for row in rows[1:]] == [
        [second, "failing", "FAILED"],  # newest first
        [first, "completed", "COMPLETED"],
    ]
    as_list = as_json(proxima(here, "runs", "--store", store, "--json"))
    assert [(r["run_id"], r["status"]) for r in as_list] == [
        (second, "FAILED"),
        (first, "COMPLETED"),
    ]
    only = as_json(proxima(here, "runs", "--store", store, "--json", "--pipeline", "completed"))
    assert [r["run_id"] for r in only] == [first]

    shown = proxima(here, "show", second, "--store", store)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Pipeline 'failing'")
    assert "RuntimeError: boom" in shown.stdout
    data = as_json(proxima(here, "show", "latest", "--store", store, "--json"))
    assert (data["run_id"], data["status"]) == (second, "FAILED")

    html = tmp_path / "report.html"
    report = proxima(here, "report", first, "--html", str(html), "--store", store)
    assert report.returncode == 0, report.stderr
    assert html.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")


def test_r14_4_default_store_is_proxima_runs_db(here: Path, tmp_path: Path) -> None:
    flows = str(here / "flows.py")
    run = proxima(tmp_path, "run", f"{flows}:failing", "--store", ".proxima/runs.db")
    assert run.returncode == 1, run.stderr
    assert (tmp_path / ".proxima" / "runs.db").is_file()
    run_id = recorded_run_id(run.stdout)
    listed = as_json(proxima(tmp_path, "runs", "--json"))  # no --store: the default
    assert [r["run_id"] for r in listed] == [run_id]
    again = proxima(tmp_path, "run", f"{flows}:failing", "--resume", "latest", "--json")
    assert again.returncode == 1, again.stderr
    assert as_json(again)["stage_results"]["echo"]["restored_from"] == run_id


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["runs"], "no store at '.proxima/runs.db'"),
        (["show", "0123abcd"], "no store at"),
        (["run", "flows.py:completed", "--resume", "0123abcd"], "no store at"),
        (["run", "flows.py:completed", "--store", "new.db", "--resume", "latest"], "'new.db'"),
    ],
)
def test_r14_4_missing_store_is_a_usage_error(
    tmp_path: Path, here: Path, args: list[str], message: str
) -> None:
    (tmp_path / "flows.py").write_text(FLOWS, encoding="utf-8")
    proc = proxima(tmp_path, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr  # one line, no traceback
    assert message in proc.stderr
    assert not (tmp_path / "new.db").exists()  # a store to resume from is never made up


def test_r14_4_unknown_run_id_is_a_usage_error(here: Path, tmp_path: Path) -> None:
    store = str(tmp_path / "runs.db")
    assert proxima(here, "run", "flows.py:completed", "--store", store).returncode == 0
    for args in (
        ["show", "0123abcd", "--store", store],
        ["report", "0123abcd", "--html", str(tmp_path / "r.html"), "--store", store],
        ["run", "flows.py:completed", "--store", store, "--resume", "0123abcd"],
        ["run", "flows.py:failing", "--store", store, "--resume", "latest"],
    ):
        proc = proxima(here, *args)
        assert proc.returncode == 2, (args, proc.stdout + proc.stderr)
        assert proc.stderr.count("\n") == 1, proc.stderr  # one line, no traceback
        assert "0123abcd" in proc.stderr or "'failing'" in proc.stderr, proc.stderr


# -- the command itself ----------------------------------------------------------------------------


def test_r14_1_help_loads_neither_the_pipeline_library_nor_anyio(here: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "proxima", "--help"],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "graph", "validate", "runs", "show", "report"):
        assert f" {command} " in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "proxima.cli.app" in imported
    assert not {m for m in imported if m.startswith(("proxima.data", "anyio", "trio"))}


def test_r14_1_version(here: Path) -> None:
    import proxima as package

    proc = proxima(here, "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == package.__version__
