"""The HTML report (``result.to_html``) as a real browser sees it: headless
Chromium loads the file with networking off, its rendered DOM has one node
group per stage and the expected timeline bars, and a screenshot renders.

Skipped with a visible reason where Chromium is not installed. The browser
runs twice per test session (DOM, screenshot), so these tests are sync and
run the pipeline once on asyncio via ``run_sync``.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import NO_RETRY

from proxima.data.pipeline import (
    Pipeline,
    PipelineConfig,
    PipelineContext,
    PipelineResult,
    PipelineStatus,
    RetryConfig,
    RetryStrategy,
    Stage,
    StageStatus,
    TimeoutConfig,
)

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed: the HTML report is not rendered"
)

#: Seconds allowed for one browser run (a noisy shared machine may be slow).
BROWSER_TIMEOUT = 120
WINDOW = (1200, 900)


def build_result() -> PipelineResult:
    """A diamond with a retry, a stop with a grace period, and cleanups (one failing).

    extract -> (clean, enrich) -> join -> publish. ``clean`` fails once and is
    retried after a delay; ``join`` stops the run and is cancelled after the
    grace period; ``publish`` never starts. Cleanups of ``extract`` and
    ``clean`` run (``clean``'s raises); ``enrich`` has none.
    """
    calls = 0

    async def extract(ctx: PipelineContext, data: Any) -> list[int]:
        await anyio.sleep(0.01)
        return [1, 2, 3]

    async def clean(ctx: PipelineContext, rows: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        await anyio.sleep(0.01)
        if calls == 1:
            raise ConnectionError("database <primary> went away")
        return rows

    async def enrich(ctx: PipelineContext, rows: list[int]) -> list[int]:
        await anyio.sleep(0.02)
        return [r * 10 for r in rows]

    async def join(ctx: PipelineContext, data: dict[str, Any]) -> None:
        ctx.cancel()
        await anyio.sleep_forever()

    async def cleanup_extract(ctx: PipelineContext) -> None:
        await anyio.sleep(0.005)

    def cleanup_clean(ctx: PipelineContext) -> None:
        raise RuntimeError("temp table still locked")

    retry = RetryConfig(max_retries=2, strategy=RetryStrategy.CONSTANT, initial_delay_seconds=0.03)
    pipeline = Pipeline(
        PipelineConfig(
            name="nightly-etl",
            retry=NO_RETRY,
            timeout=TimeoutConfig(grace_period_seconds=0.02),
        )
    )
    pipeline.add_stages(
        [
            Stage("extract", "Extract", extract, cleanup_handler=cleanup_extract),
            Stage(
                "clean",
                "Clean",
                clean,
                ["extract"],
                retry_config=retry,
                cleanup_handler=cleanup_clean,
            ),
            Stage("enrich", "Enrich", enrich, ["extract"]),
            Stage("join", "Join", join, ["clean", "enrich"]),
            Stage("publish", "Publish", lambda ctx, data: data, ["join"]),
        ]
    )
    result = pipeline.run_sync(backend="asyncio")
    assert result.status is PipelineStatus.CANCELLED, result.summary()
    assert [r.status for r in result.stage_results.values()] == [
        StageStatus.COMPLETED,
        StageStatus.COMPLETED,
        StageStatus.COMPLETED,
        StageStatus.CANCELLED,
        StageStatus.CANCELLED,
    ], result.summary()
    return result


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with networking and background services off."""
    assert CHROMIUM is not None
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def screenshot(html: Path, png: Path, tmp: Path) -> None:
    chromium(tmp, f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}", html.as_uri())


class Classes(HTMLParser):
    """Tag and class list of every element of a document."""

    def __init__(self, document: str) -> None:
        super().__init__()
        self.found: list[tuple[str, list[str]]] = []
        self.feed(document)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, (dict(attrs).get("class") or "").split()))

    def count(self, tag: str, *classes: str) -> int:
        return sum(1 for t, c in self.found if t == tag and all(x in c for x in classes))


def png_size_and_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the decompressed scanlines of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat = b""
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return width, height, zlib.decompress(idat)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PipelineResult]:
    tmp = tmp_path_factory.mktemp("report")
    result = build_result()
    path = tmp / "report.html"
    result.to_html(path)
    return path, result


def test_html_report_dom_in_chromium_has_every_node_and_bar(
    report: tuple[Path, PipelineResult], tmp_path: Path
) -> None:
    path, result = report
    source = Classes(path.read_text(encoding="utf-8"))
    done = chromium(tmp_path, "--dump-dom", path.as_uri())
    dom = Classes(done.stdout)

    # The browser parsed the whole file: same elements as the source.
    assert dom.count("svg") == 2
    assert dom.count("g", "node") == len(result.stage_results) == 5
    for status, n in (("status-completed", 3), ("status-cancelled", 2)):
        assert dom.count("g", "node", status) == n
    attempts = sum(r.attempt_count for r in result.stage_results.values())
    assert attempts == 5
    assert dom.count("rect", "bar", "attempt") == attempts
    assert dom.count("rect", "bar", "outcome-failed") == 1
    assert dom.count("rect", "bar", "outcome-cancelled") == 1
    assert dom.count("rect", "bar", "retry-delay") == 1
    assert dom.count("rect", "bar", "cleanup") == 2
    assert dom.count("rect", "bar") == source.count("rect", "bar")
    assert dom.count("rect", "bar", "queue") <= attempts
    assert dom.count("tr", "stage-row") == 5
    assert dom.count("script") == 0
    # Hover titles survive: one per node and per bar, plus the page title.
    assert dom.count("title") == 1 + dom.count("g", "node") + dom.count("rect", "bar")


def test_html_report_screenshot_in_chromium(
    report: tuple[Path, PipelineResult], tmp_path: Path
) -> None:
    path, _ = report
    png = tmp_path / "report.png"
    screenshot(path, png, tmp_path)

    assert png.exists()
    data = png.read_bytes()
    assert len(data) > 10_000  # a blank page compresses to a few hundred bytes
    width, height, pixels = png_size_and_pixels(data)
    assert (width, height) == WINDOW
    assert len(set(pixels)) > 50  # many colours: text, nodes, bars
    target = os.environ.get("PROXIMA_REPORT_SCREENSHOT")
    if target:  # keep a copy for the docs (docs/_screenshots/ is not committed)
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, target)
