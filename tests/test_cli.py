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
import sys

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


class Child:
    """``proxima run`` in its own process group, with its stderr read line by
    line on a thread so that the test can wait for a given line."""

    def __init__(self, here: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxima", "run", *args, "--json"],
            cwd=here,
            stdin=subprocess.DEVNULL,
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
        """Exit status, the parsed JSON result, and all of stderr."""
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, json.loads(out), "".join(self.seen)

    def close(self) -> None:
        """Kill the child if it still runs; close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
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
