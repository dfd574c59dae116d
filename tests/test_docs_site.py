"""The built documentation site loads in headless Chromium without errors.

Needs a built site (``nox -s docs`` writes it to ``site/``; set
``PROXIMA_DOCS_SITE`` to check another folder) and a Chromium binary
(``apt-get install chromium``). Without either, the tests are skipped and say
why.

The site is served on 127.0.0.1 by a small HTTP server that adds a probe
script at the top of every HTML page it serves (the built files are not
changed). The probe reports ``console.error``/``console.warn`` calls, uncaught
errors, unhandled promise rejections and resources that failed to load as
console lines, which Chromium writes to stderr with ``--enable-logging``, and
says when the page has rendered its heading. The server also records every
request it answered with an error status. To start Chromium only once, it
opens a harness page that holds every page of the site in an iframe.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import tempfile
import threading
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(os.environ.get("PROXIMA_DOCS_SITE", ROOT / "site"))
CHROMIUM = next(
    (
        path
        for name in ("chromium", "chromium-browser", "google-chrome")
        if (path := shutil.which(name))
    ),
    None,
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)"
)
needs_site = pytest.mark.skipif(
    not (SITE / "index.html").is_file(),
    reason=f"no built documentation site at {SITE}: run `nox -s docs` first",
)

HARNESS = "/__harness__.html"
TAG = "__docs_probe__"
PROBE = """<script>(function () {
  function report(kind, detail) {
    console.log("__TAG__ " + location.pathname + " " + kind + ": " + detail);
  }
  ["error", "warn"].forEach(function (level) {
    var original = console[level];
    console[level] = function () {
      report("console." + level, Array.prototype.map.call(arguments, String).join(" "));
      return original.apply(console, arguments);
    };
  });
  window.addEventListener("error", function (event) {
    var target = event.target;
    if (target && target !== window && (target.src || target.href)) {
      report("failed to load", target.src || target.href);
    } else {
      report("uncaught", event.message);
    }
  }, true);
  window.addEventListener("unhandledrejection", function (event) {
    report("unhandled rejection", String(event.reason));
  });
  window.addEventListener("load", function () {
    report("ready", document.querySelector("h1") ? "rendered" : "no heading");
  });
})();</script>""".replace("__TAG__", TAG)
PROBE_LINE = re.compile(
    r":CONSOLE[:(]\d+\)?\] \""
    + TAG
    + r" (?P<page>\S+) (?P<kind>[\w. ]+): (?P<detail>.*)\", source:"
)
UNCAUGHT_LINE = re.compile(
    r":CONSOLE[:(]\d+\)?\] \"(?P<message>Uncaught.*)\", source: (?P<source>\S*)"
)


class ProbingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; HTML pages get the probe; error statuses are recorded."""

    errors: list[str]
    pages: list[str]

    def do_GET(self) -> None:
        if self.path == HARNESS:
            frames = "".join(
                f'<iframe src="/{page}" width="1280" height="900"></iframe>' for page in self.pages
            )
            icon = '<link rel="icon" href="data:,">'  # no favicon request for the harness
            return self._send_html(f"<html><head>{icon}</head><body>{frames}</body></html>")
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        if path.suffix == ".html" and path.is_file():
            page = path.read_text(encoding="utf-8")
            return self._send_html(page.replace("<head>", "<head>" + PROBE, 1))
        return super().do_GET()

    def _send_html(self, page: str) -> None:
        body = page.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        try:
            status = int(code)  # an HTTPStatus, whose str() differs before 3.11
        except (TypeError, ValueError):
            return
        if status >= 400:
            self.errors.append(f"HTTP {status} for {self.path}")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output quiet


@attrs.define
class Report:
    """What the probe saw on one page."""

    rendered: bool = False
    problems: list[str] = attrs.Factory(list)


def check_pages(folder: Path, pages: list[str]) -> tuple[dict[str, Report], list[str]]:
    """Load ``pages`` (paths relative to ``folder``) in one headless Chromium.

    Returns a report per page and the requests the server failed to answer.
    """
    assert CHROMIUM is not None
    handler: type[ProbingHandler] = type(
        "Handler", (ProbingHandler,), {"errors": [], "pages": pages}
    )
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(handler, directory=str(folder))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with tempfile.TemporaryDirectory() as profile:
            proc = subprocess.run(
                [
                    CHROMIUM,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    f"--user-data-dir={profile}",
                    "--enable-logging=stderr",
                    "--v=0",
                    "--virtual-time-budget=10000",
                    "--dump-dom",
                    f"http://127.0.0.1:{httpd.server_address[1]}{HARNESS}",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}: {proc.stderr[-2000:]}"

    by_path = {"/" + page.removesuffix("index.html"): page for page in pages}
    by_path |= {"/" + page: page for page in pages}
    reports = {page: Report() for page in pages}
    for line in proc.stderr.splitlines():
        if match := PROBE_LINE.search(line):
            report = reports.setdefault(by_path.get(match["page"], match["page"]), Report())
            if match["kind"] == "ready":
                report.rendered = match["detail"] == "rendered"
            else:
                report.problems.append(f"{match['kind']}: {match['detail']}")
        elif match := UNCAUGHT_LINE.search(line):
            source = match["source"].split("127.0.0.1:", 1)[-1].partition("/")[2]
            report = reports.setdefault(by_path.get("/" + source, source), Report())
            report.problems.append(match["message"])
    return reports, handler.errors


def site_pages() -> list[str]:
    if not SITE.is_dir():
        return ["index.html"]
    return sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob("index.html"))


@pytest.fixture(scope="module")
def site_check() -> tuple[dict[str, Report], list[str]]:
    return check_pages(SITE, site_pages())


@needs_chromium
@needs_site
@pytest.mark.parametrize(
    "page",
    [pytest.param(p, id=p.removesuffix("index.html").strip("/") or "home") for p in site_pages()],
)
def test_page_loads_without_errors(
    site_check: tuple[dict[str, Report], list[str]], page: str
) -> None:
    report = site_check[0][page]
    assert not report.problems, f"{page}: {report.problems}"
    assert report.rendered, f"{page} did not finish loading, or has no heading"


@needs_chromium
@needs_site
def test_site_has_no_broken_requests(site_check: tuple[dict[str, Report], list[str]]) -> None:
    reports, failed_requests = site_check
    assert not failed_requests
    unexpected = sorted(set(reports) - set(site_pages()))
    assert not unexpected, f"reports from pages outside the site: {unexpected}"


@needs_chromium
def test_the_probe_reports_errors(tmp_path: Path) -> None:
    """The checks above would catch a broken page (so their passing means something)."""
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "index.html").write_text(
        '<html><head><link rel="icon" href="data:,"></head><body><h1>fine</h1></body></html>',
        encoding="utf-8",
    )
    (tmp_path / "broken.html").write_text(
        '<html><head><link rel="icon" href="data:,"></head><body><p>no heading</p>'
        '<script>console.error("on purpose");</script>'
        "<script>notDefined();</script>"
        '<script src="missing.js"></script></body></html>',
        encoding="utf-8",
    )
    reports, failed_requests = check_pages(tmp_path, ["good/index.html", "broken.html"])
    assert reports["good/index.html"] == Report(rendered=True, problems=[])
    broken = reports["broken.html"]
    assert not broken.rendered
    text = "\n".join(broken.problems)
    assert "console.error: on purpose" in text
    assert "notDefined is not defined" in text
    assert "failed to load" in text
    assert "missing.js" in text
    assert "HTTP 404 for /missing.js" in failed_requests
