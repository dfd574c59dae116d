"""Pictures: ``Pipeline.to_mermaid/to_dot``, ``PipelineResult.to_mermaid`` coloured
by final status, the self-contained HTML report (``result.to_html``) and
``to_dict()`` with the dependencies (R7.3)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from helpers import make_pipeline, ok, raises, st

from proxima.data.pipeline import (
    Pipeline,
    PipelineContext,
    PipelineResult,
    PipelineStatus,
    PipelineValidationError,
    RetryConfig,
    RetryStrategy,
    Stage,
    StageStatus,
    TimeoutConfig,
)

pytestmark = pytest.mark.anyio

LIMIT = 20


def _stage(sid: str, handler: Any = ok, *deps: str, name: str | None = None, **kw: Any) -> Stage:
    """A stage labelled with its id unless ``name`` is given: the pictures
    show labels, and the assertions read best when labels are the ids."""
    return st(sid, handler, deps, name=sid if name is None else name, **kw)


def _pipeline(*stages: Stage, **config: Any) -> Pipeline:
    config.setdefault("name", "render")
    return make_pipeline(*stages, **config)


class Elements(HTMLParser):
    """Every element of a document with its class and the text of its
    ``<title>`` child (the hover text)."""

    def __init__(self, document: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[dict[str, Any]] = []
        self._open: list[dict[str, Any]] = []
        self.feed(document)
        self.close()

    def _element(self, tag: str, attrs: list[tuple[str, str | None]]) -> dict[str, Any]:
        attributes = dict(attrs)
        element = {
            "tag": tag,
            "classes": (attributes.get("class") or "").split(),
            "attrs": attributes,
            "title": "",
            "text": "",
        }
        self.elements.append(element)
        return element

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = self._element(tag, attrs)
        if tag not in ("meta", "br", "link", "img", "input", "hr"):
            self._open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self._open:
            return
        self._open[-1]["text"] += data
        if self._open[-1]["tag"] == "title" and len(self._open) > 1:
            self._open[-2]["title"] += data

    def having(self, tag: str, *classes: str) -> list[dict[str, Any]]:
        return [
            e for e in self.elements if e["tag"] == tag and all(c in e["classes"] for c in classes)
        ]


# -- Pipeline.to_mermaid / to_dot ---------------------------------------------------------


def _known_dag() -> Pipeline:
    # Added out of order on purpose: a dependency may come after its dependent.
    return _pipeline(
        _stage("join", ok, "load", "b", name="Join"),
        _stage("load", name="Load"),
        _stage("b"),
        _stage("out", ok, "join"),
    )


def test_to_mermaid_known_dag_exact_nodes_and_edges() -> None:
    assert _known_dag().to_mermaid() == (
        "flowchart LR\n"
        '    s0["Join<br/>join"]\n'
        '    s1["Load<br/>load"]\n'
        '    s2["b"]\n'
        '    s3["out"]\n'
        "    s1 --> s0\n"
        "    s2 --> s0\n"
        "    s0 --> s3\n"
    )


def test_to_mermaid_escapes_quotes_and_html_in_labels() -> None:
    pipeline = _pipeline(
        _stage("q", name='Say "hi" <b>&</b>'),
        _stage('id"x', ok, "q"),
    )
    text = pipeline.to_mermaid()
    assert text == (
        "flowchart LR\n"
        '    s0["Say #quot;hi#quot; &lt;b&gt;&amp;&lt;/b&gt;<br/>q"]\n'
        '    s1["id#quot;x"]\n'
        "    s0 --> s1\n"
    )
    # No raw quote ends a label early: each node line has exactly its two quotes.
    for line in text.splitlines()[1:3]:
        assert line.count('"') == 2


def test_to_mermaid_of_an_empty_pipeline() -> None:
    assert _pipeline().to_mermaid() == "flowchart LR\n"


def test_to_dot_known_dag_exact_nodes_and_edges() -> None:
    assert _known_dag().to_dot() == (
        'digraph "render" {\n'
        "    rankdir=LR;\n"
        '    node [shape=box, style="rounded"];\n'
        '    "join" [label="Join\\n(join)"];\n'
        '    "load" [label="Load\\n(load)"];\n'
        '    "b" [label="b"];\n'
        '    "out" [label="out"];\n'
        '    "load" -> "join";\n'
        '    "b" -> "join";\n'
        '    "join" -> "out";\n'
        "}\n"
    )


def test_to_dot_escapes_quotes_in_ids_labels_and_title() -> None:
    pipeline = _pipeline(
        _stage("q", name='Say "hi"'),
        _stage('id"x', ok, "q"),
        name='my "dag"',
    )
    assert pipeline.to_dot() == (
        'digraph "my \\"dag\\"" {\n'
        "    rankdir=LR;\n"
        '    node [shape=box, style="rounded"];\n'
        '    "q" [label="Say \\"hi\\"\\n(q)"];\n'
        '    "id\\"x" [label="id\\"x"];\n'
        '    "q" -> "id\\"x";\n'
        "}\n"
    )


def test_to_dot_escapes_backslashes_in_labels() -> None:
    """A backslash in a stage id or name is text, not a DOT escape: ``C:\\new``
    must not turn into a line break, and a trailing backslash must not
    swallow the closing quote (which leaves the DOT file unparsable)."""
    pipeline = _pipeline(
        _stage("C:\\new"),
        _stage("tail\\"),
        _stage("x", name="dir\\"),
    )
    lines = pipeline.to_dot().splitlines()
    assert '    "C:\\\\new" [label="C:\\\\new"];' in lines
    assert '    "tail\\\\" [label="tail\\\\"];' in lines
    assert '    "x" [label="dir\\\\\\n(x)"];' in lines


def test_pictures_validate_the_graph_first() -> None:
    pipeline = _pipeline(_stage("a", ok, "missing"))
    with pytest.raises(PipelineValidationError, match="missing"):
        pipeline.to_mermaid()
    with pytest.raises(PipelineValidationError, match="missing"):
        pipeline.to_dot()


# -- PipelineResult pictures -----------------------------------------------------------------


async def _execute(pipeline: Pipeline, initial: Any = None) -> PipelineResult:
    with anyio.fail_after(LIMIT):
        return await pipeline.execute(initial)


async def test_result_to_mermaid_colours_nodes_by_final_status() -> None:
    pipeline = _pipeline(
        _stage("a"),
        _stage("bad", raises(ValueError, "boom")),
        _stage("after", ok, "bad"),
        _stage("c", ok, "a"),
        continue_on_error=True,
    )
    result = await _execute(pipeline)
    assert [r.status for r in result.stage_results.values()] == [
        StageStatus.COMPLETED,
        StageStatus.FAILED,
        StageStatus.SKIPPED,
        StageStatus.COMPLETED,
    ]
    text = result.to_mermaid()
    lines = text.splitlines()

    # The graph part is the pipeline's own picture.
    assert text.startswith(pipeline.to_mermaid())
    class_defs = [line.split()[1] for line in lines if line.strip().startswith("classDef ")]
    assert sorted(class_defs) == ["completed", "failed", "skipped"]
    for status in ("completed", "failed", "skipped"):
        (line,) = [x for x in lines if x.strip().startswith(f"classDef {status} ")]
        assert re.search(r"fill:#[0-9a-f]{6}", line)
    fills = {re.search(r"fill:(#[0-9a-f]{6})", x)[1] for x in lines if "classDef" in x}  # type: ignore[index]
    assert len(fills) == 3  # one colour per status
    assert "    class s0,s3 completed" in lines
    assert "    class s1 failed" in lines
    assert "    class s2 skipped" in lines


async def test_result_to_mermaid_of_a_cancelled_run() -> None:
    def stops(ctx: PipelineContext, data: Any) -> str:
        ctx.cancel()
        return "stopped"

    pipeline = _pipeline(_stage("a", stops), _stage("b", ok, "a"))
    result = await _execute(pipeline)
    lines = result.to_mermaid().splitlines()
    assert "    class s0 completed" in lines
    assert "    class s1 cancelled" in lines


async def _retry_and_stop_with_cleanup() -> PipelineResult:
    """a completes; b fails once, waits a retry delay, completes; c stops the run
    and is cancelled after the grace period; d never starts. Cleanups of a and
    b run (b's raises); c has none."""
    calls = 0

    async def a(ctx: PipelineContext, data: Any) -> str:
        await anyio.lowlevel.checkpoint()
        return "a"

    async def b(ctx: PipelineContext, data: Any) -> str:
        nonlocal calls
        calls += 1
        await anyio.lowlevel.checkpoint()
        if calls == 1:
            raise ValueError("flaky <once>")
        return "b"

    async def c(ctx: PipelineContext, data: Any) -> None:
        ctx.cancel()
        await anyio.sleep_forever()

    async def clean_a(ctx: PipelineContext) -> None:
        await anyio.lowlevel.checkpoint()

    def clean_b(ctx: PipelineContext) -> None:
        raise RuntimeError("cleanup broke")

    retry = RetryConfig(max_retries=2, strategy=RetryStrategy.CONSTANT, initial_delay_seconds=0.02)
    pipeline = _pipeline(
        _stage("a", a, name="Load", cleanup_handler=clean_a),
        _stage("b", b, "a", name="Flaky", retry_config=retry, cleanup_handler=clean_b),
        _stage("c", c, "b", name="Stopper"),
        _stage("d", ok, "c", name="Never"),
        name="report",
        timeout=TimeoutConfig(grace_period_seconds=0),
    )
    result = await _execute(pipeline)
    assert result.status is PipelineStatus.CANCELLED
    assert [r.status for r in result.stage_results.values()] == [
        StageStatus.COMPLETED,
        StageStatus.COMPLETED,
        StageStatus.CANCELLED,
        StageStatus.CANCELLED,
    ]
    assert [r.attempt_count for r in result.stage_results.values()] == [1, 2, 1, 0]
    return result


async def test_result_to_html_is_one_self_contained_file(tmp_path: Path) -> None:
    result = await _retry_and_stop_with_cleanup()
    path = tmp_path / "report.html"
    document = result.to_html(path)

    assert path.read_text(encoding="utf-8") == document
    assert result.to_html() == document  # no path: only returned
    lower = document.lower()
    assert lower.startswith("<!doctype html>")
    assert "<script" not in lower
    assert "javascript:" not in lower
    assert "http://" not in lower
    assert "https://" not in lower
    assert "<link" not in lower
    assert "<img" not in lower
    assert "<iframe" not in lower
    assert "@import" not in lower
    assert "url(" not in lower
    assert " src=" not in lower
    assert " on" + "load=" not in lower
    assert "<style>" in lower  # styles are inline
    assert lower.count("<svg") == 2  # the DAG and the timeline, inline


async def test_result_to_html_has_one_node_per_stage_coloured_by_status() -> None:
    result = await _retry_and_stop_with_cleanup()
    page = Elements(result.to_html())

    nodes = page.having("g", "node")
    assert len(nodes) == len(result.stage_results) == 4
    statuses = [next(c for c in n["classes"] if c.startswith("status-")) for n in nodes]
    assert statuses == [
        "status-completed",
        "status-completed",
        "status-cancelled",
        "status-cancelled",
    ]
    # Hover titles name the stage and its status (and the error if any).
    assert [n["title"].split(":")[0] for n in nodes] == ["a", "b", "c", "d"]
    assert "CANCELLED" in nodes[3]["title"]
    assert "PipelineCancelledException" in nodes[3]["title"]
    assert len(page.having("path", "edge")) == 3


async def test_result_to_html_timeline_bars_for_attempts_delays_and_cleanup() -> None:
    result = await _retry_and_stop_with_cleanup()
    page = Elements(result.to_html())

    bars = page.having("rect", "bar")
    assert bars
    assert all(bar["title"] for bar in bars)  # every bar has a hover title
    attempts = page.having("rect", "bar", "attempt")
    assert [b["title"].split(":")[0] for b in attempts] == ["a", "b", "b", "c"]
    outcomes = [next(c for c in b["classes"] if c.startswith("outcome-")) for b in attempts]
    assert outcomes == [
        "outcome-completed",
        "outcome-failed",
        "outcome-completed",
        "outcome-cancelled",
    ]
    assert "attempt 1 failed" in attempts[1]["title"]
    assert "ValueError: flaky <once>" in attempts[1]["title"]  # escaped, then unescaped
    assert "attempt 2 completed" in attempts[2]["title"]

    delays = page.having("rect", "bar", "retry-delay")
    assert [b["title"] for b in delays] == ["b: retry delay"]

    cleanups = page.having("rect", "bar", "cleanup")
    assert [b["title"].split(":")[0] for b in cleanups] == ["a", "b"]
    assert "RuntimeError: cleanup broke" in cleanups[1]["title"]
    assert "broke" not in cleanups[0]["title"]

    queues = page.having("rect", "bar", "queue")
    assert len(queues) <= len(attempts)
    kinds = {"attempt", "retry-delay", "cleanup", "queue"}
    assert all(len(kinds & set(b["classes"])) == 1 for b in bars)
    assert len(bars) == len(attempts) + len(delays) + len(cleanups) + len(queues)
    # d never started: no bar in its row, but the row is labelled.
    assert not [b for b in bars if b["title"].startswith("d:")]
    assert [t["text"] for t in page.having("text", "row-label")] == ["a", "b", "c", "d"]

    # Bars sit inside the plot, and a row's bars are in time order.
    for bar in bars:
        assert float(bar["attrs"]["x"]) >= 150  # right of the row labels (160 px)
        assert float(bar["attrs"]["width"]) >= 1
    b_attempt_x = [float(b["attrs"]["x"]) for b in attempts[1:3]]
    assert b_attempt_x[0] < float(delays[0]["attrs"]["x"]) < b_attempt_x[1]


async def test_result_to_html_summary_table_rows() -> None:
    result = await _retry_and_stop_with_cleanup()
    page = Elements(result.to_html())

    rows = page.having("tr", "stage-row")
    assert len(rows) == 4
    cells = [c["text"] for c in page.having("td")]
    table = [cells[i : i + 6] for i in range(0, len(cells), 6)]
    assert [row[:4] for row in table] == [
        ["a", "Load", "COMPLETED", "1"],
        ["b", "Flaky", "COMPLETED", "2"],
        ["c", "Stopper", "CANCELLED", "1"],
        ["d", "Never", "CANCELLED", "0"],
    ]
    assert table[3][4] == ""  # never started: no duration
    assert float(table[0][4]) >= 0
    assert "PipelineCancelledException" in table[2][5]
    (summary,) = page.having("pre", "summary")
    assert summary["text"] == result.summary()
    assert "cleanup of b failed: RuntimeError: cleanup broke" in summary["text"]
    (h1,) = page.having("h1")
    assert "CANCELLED" in h1["text"]


async def test_result_to_html_escapes_stage_text() -> None:
    def evil(ctx: PipelineContext, data: Any) -> None:
        raise ValueError("<script>alert('x')</script> & <b>")

    pipeline = _pipeline(
        _stage("<img src=x>", evil, name="<script>alert(1)</script>"),
        name="<i>name</i>",
        continue_on_error=True,
    )
    result = await _execute(pipeline)
    document = result.to_html()
    assert "<script" not in document.lower()
    assert "<img" not in document.lower()
    assert "<i>" not in document
    page = Elements(document)
    assert len(page.having("tr", "stage-row")) == 1
    cells = [c["text"] for c in page.having("td")]
    assert cells[:3] == ["<img src=x>", "<script>alert(1)</script>", "FAILED"]
    assert cells[5] == "ValueError: <script>alert('x')</script> & <b>"


async def test_result_to_html_without_metrics_draws_one_bar_per_started_stage() -> None:
    pipeline = _pipeline(
        _stage("a"),
        _stage("bad", raises(ValueError, "boom")),
        _stage("after", ok, "bad"),
        collect_metrics=False,
        continue_on_error=True,
    )
    result = await _execute(pipeline)
    page = Elements(result.to_html())
    assert len(page.having("g", "node")) == 3
    bars = page.having("rect", "bar")
    assert sorted(b["title"].split(":")[0] for b in bars) == ["a", "bad"]
    assert all("attempt" in b["classes"] for b in bars)


async def test_result_to_html_of_an_empty_pipeline() -> None:
    result = await _execute(_pipeline())
    assert result.status is PipelineStatus.COMPLETED
    page = Elements(result.to_html())
    assert page.having("g", "node") == []
    assert page.having("rect", "bar") == []
    assert page.having("tr", "stage-row") == []


# -- to_dict and dependencies (R7.3) ------------------------------------------------------------


async def test_r7_3_to_dict_includes_dependencies_and_passes_json_dumps() -> None:
    marker = object()
    pipeline = _pipeline(
        _stage("load", lambda ctx, data: marker),
        _stage("b"),
        _stage("join", ok, "load", "b"),
        _stage("bad", raises(ValueError, "boom"), "join"),
        continue_on_error=True,
    )
    result = await _execute(pipeline)

    assert result.dependencies == {
        "load": (),
        "b": (),
        "join": ("load", "b"),
        "bad": ("join",),
    }
    data = result.to_dict()
    assert data["dependencies"] == {"load": [], "b": [], "join": ["load", "b"], "bad": ["join"]}
    text = json.dumps(data)
    assert json.loads(text) == data
    assert data["stage_results"]["load"]["result"] == repr(marker)
    assert data["stage_results"]["bad"]["status"] == "FAILED"
    assert data["stage_results"]["bad"]["exception"] == "ValueError: boom"
    attempts = data["stage_results"]["bad"]["metrics"]["attempts"]
    assert [a["outcome"] for a in attempts] == ["failed"]
    assert data["failed_stages"] == ["bad"]
