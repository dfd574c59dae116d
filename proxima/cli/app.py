"""The cyclopts application: the commands, their options and their help.

Only the declarations live here. Each command imports what it needs when it
is called, so ``proxima --help`` loads cyclopts and nothing of the pipeline
library, anyio or trio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from cyclopts import App, Parameter

from .stores import DEFAULT_STORE

__all__ = ["app"]


def _version() -> str:
    """Read on ``--version`` only: the package metadata is not free to load."""
    import proxima

    return proxima.__version__


app = App(
    name="proxima",
    help=(
        "Run, watch, stop, resume and inspect proxima pipelines.\n\n"
        "A TARGET is package.module:name or path/to/file.py:name, where name is a Pipeline,"
        " a PipelineBuilder, or a function with no arguments that returns one."
    ),
    version=_version,
    result_action="return_value",
    help_on_error=False,
    # Plain text needs no Markdown parser: a quicker `--help`.
    help_format="plaintext",
    # Ctrl-C outside a run reaches main(), which says so on one line.
    suppress_keyboard_interrupt=False,
)


#: Set by ``main()``: how the user invoked us, for the commands we print.
PROG = ["proxima"]


@app.command
def run(
    target: str,
    /,
    *,
    input_json: Annotated[str | None, Parameter(name="--input")] = None,
    input_file: Annotated[
        Path | None, Parameter(name="--input-file", allow_leading_hyphen=True)
    ] = None,
    backend: Literal["asyncio", "trio"] = "asyncio",
    store: Path | None = None,
    resume: str | None = None,
    html: Path | None = None,
    as_json: Annotated[bool, Parameter(name="--json", negative="")] = False,
    no_progress: Annotated[bool, Parameter(name="--no-progress", negative="")] = False,
) -> int:
    """Run a pipeline once; the exit status says how it ended.

    0 COMPLETED, 1 FAILED, 3 PARTIALLY_COMPLETED, 130 stopped by Ctrl-C,
    2 a usage or validation error. Ctrl-C once stops gracefully (the grace
    period, then cleanup); twice stops now (cleanup still runs).

    Parameters
    ----------
    target
        The pipeline: package.module:name or path/to/file.py:name.
    input_json
        The initial input, as JSON text (e.g. '{"day": "2024-01-31"}').
    input_file
        Read the initial input as JSON from this file ("-" for stdin).
    backend
        The event loop to run on.
    store
        Record the run in this SQLite store file (e.g. .proxima/runs.db).
    resume
        Resume this run id from the store ("latest": the newest run of this
        pipeline): completed stages are not run again. Without --store, the
        store is .proxima/runs.db.
    html
        Write the run's HTML report (graph, timeline, table) to this file.
    as_json
        Print only the result as JSON (PipelineResult.to_dict()) on stdout.
    no_progress
        Show no progress while running, only the summary at the end.
    """
    from .run import RunOptions, run_command

    options = RunOptions(
        target=target,
        input_json=input_json,
        input_file=input_file,
        backend=backend,
        store=store,
        resume=resume,
        html=html,
        json=as_json,
        progress=not no_progress,
        prog=PROG[0],
    )
    return run_command(options)


@app.command
def graph(
    target: str,
    /,
    *,
    fmt: Annotated[Literal["mermaid", "dot"], Parameter(name="--format")] = "mermaid",
) -> int:
    """Print the pipeline's graph as a Mermaid flowchart or Graphviz DOT.

    Parameters
    ----------
    target
        The pipeline: package.module:name or path/to/file.py:name.
    fmt
        mermaid (renders on GitHub and in MkDocs) or dot (Graphviz).
    """
    from .graphs import graph_command

    return graph_command(target, fmt)


@app.command
def validate(target: str, /) -> int:
    """Check that the pipeline loads and its graph is valid (exit 0), or say why not (exit 2).

    Parameters
    ----------
    target
        The pipeline: package.module:name or path/to/file.py:name.
    """
    from .graphs import validate_command

    return validate_command(target)


@app.command
def runs(
    *,
    store: Path = DEFAULT_STORE,
    as_json: Annotated[bool, Parameter(name="--json", negative="")] = False,
    pipeline: str | None = None,
    limit: int = 50,
) -> int:
    """List the runs recorded in a store, newest first.

    Parameters
    ----------
    store
        The SQLite store file.
    as_json
        Print the list as JSON.
    pipeline
        Only the runs of the pipeline with this name.
    limit
        At most this many runs.
    """
    from .stores import runs_command

    return runs_command(store, as_json=as_json, pipeline=pipeline, limit=limit)


@app.command
def show(
    run_id: str,
    /,
    *,
    store: Path = DEFAULT_STORE,
    as_json: Annotated[bool, Parameter(name="--json", negative="")] = False,
) -> int:
    """Print a recorded run's summary.

    Parameters
    ----------
    run_id
        The run's id, or "latest".
    store
        The SQLite store file.
    as_json
        Print the result as JSON (PipelineResult.to_dict()).
    """
    from .stores import show_command

    return show_command(run_id, store, as_json=as_json)


@app.command
def report(run_id: str, /, *, html: Path, store: Path = DEFAULT_STORE) -> int:
    """Write a recorded run's HTML report.

    Parameters
    ----------
    run_id
        The run's id, or "latest".
    html
        The file to write.
    store
        The SQLite store file.
    """
    from .stores import report_command

    return report_command(run_id, html, store)
