"""Every ```python block in README.md and docs/ runs here.

The blocks of one page run in order, in one namespace (like a doctest
session), so a later block may use what an earlier one defined. Each page
runs once per backend of the ``anyio_backend`` fixture:

* a block with a top-level ``await`` is compiled with
  ``PyCF_ALLOW_TOP_LEVEL_AWAIT`` and awaited inside ``anyio.run`` on that
  backend (the way Jupyter or ``python -m asyncio`` would run it);
* any other block is executed as plain synchronous code, with
  ``__name__ == "__main__"`` so that a script's main guard runs.

An HTML comment on the line before a fence (blank lines allowed) changes that;
it stays visible to whoever edits the Markdown:

* ``<!-- skip: why -->`` never runs the block (the reason is required);
* ``<!-- backend: asyncio -->`` or ``<!-- backend: trio -->`` runs it only on
  that backend (uvloop counts as asyncio).

Fences in other languages (``text``, ``bash``, ``toml`` ...) are not run.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PYTHON_LANGS = {"python", "py", "python3"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,}|~{3,})(?P<info>[^`\n]*)$")
MARKER = re.compile(r"^\s*<!--\s*(?P<key>[\w-]+)\s*:\s*(?P<value>.*?)\s*-->\s*$")
BACKENDS = {"asyncio", "trio"}


@attrs.frozen
class Block:
    path: Path
    line: int  # 1-based line of the first code line
    source: str
    skip: str | None = None
    backend: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    return [f for f in files if f.is_file() and "_screenshots" not in f.parts]


def parse(path: Path) -> Iterator[Block]:
    """The Python fences of ``path`` with the markers just above them."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, ticks = match["indent"], match["ticks"]
        lang = match["info"].strip().split(" ")[0].lstrip("{").lstrip(".").lower()
        start = i + 1
        end = start
        while end < len(lines) and not (
            lines[end].strip().startswith(ticks) and lines[end].strip().strip(ticks[0]) == ""
        ):
            end += 1
        if lang in PYTHON_LANGS:
            body = [
                line[len(indent) :] if line.startswith(indent) else line.lstrip()
                for line in lines[start:end]
            ]
            yield Block(path, start + 1, "\n".join(body) + "\n", **markers_above(lines, i, path))
        i = end + 1


def markers_above(lines: list[str], fence: int, path: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    j = fence - 1
    while j >= 0 and (not lines[j].strip() or MARKER.match(lines[j])):
        marker = MARKER.match(lines[j])
        if marker:
            key, value = marker["key"], marker["value"]
            where = f"{path.relative_to(ROOT)}:{j + 1}"
            if key == "skip":
                assert value, f"{where}: a skip marker must say why"
                found["skip"] = value
            elif key == "backend":
                assert value in BACKENDS, f"{where}: unknown backend {value!r}"
                found["backend"] = value
            else:
                raise AssertionError(f"{where}: unknown marker {key!r}")
        j -= 1
    return found


def pages_with_blocks() -> list[Any]:
    return [
        pytest.param(path, id=str(path.relative_to(ROOT)))
        for path in doc_files()
        if any(True for _ in parse(path))
    ]


def run_block(
    block: Block, namespace: dict[str, Any], backend: str, options: dict[str, Any]
) -> None:
    # Pad with newlines so tracebacks point at the Markdown file's own lines.
    source = "\n" * (block.line - 1) + block.source
    code = compile(
        source, str(block.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    if code.co_flags & inspect.CO_COROUTINE:

        async def main() -> None:
            await eval(code, namespace)

        anyio.run(main, backend=backend, backend_options=options)
    else:
        exec(code, namespace)


@pytest.mark.parametrize("page", pages_with_blocks())
def test_page_examples(page: Path, anyio_backend: tuple[str, dict[str, Any]]) -> None:
    backend, options = anyio_backend
    namespace: dict[str, Any] = {"__name__": "__main__"}
    ran = 0
    for block in parse(page):
        if block.skip is not None or block.backend not in (None, backend):
            continue
        try:
            run_block(block, namespace, backend, options)
        except BaseException as exc:
            raise AssertionError(f"the example at {block.where} failed on {backend}") from exc
        ran += 1
    if ran == 0:
        pytest.skip(f"every example of {page.name} is marked as not for {backend}")


def test_examples_are_found() -> None:
    """Guards the collector itself: each opening ```python fence is collected."""
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        opened = len(re.findall(r"^[ \t]*```(?:python|py|python3)\b", text, flags=re.MULTILINE))
        assert opened == len(list(parse(path))), path
    assert sum(len(list(parse(p))) for p in doc_files()) > 20


def test_skipped_examples_say_why() -> None:
    skipped = [b for p in doc_files() for b in parse(p) if b.skip is not None]
    for block in skipped:
        assert len(block.skip or "") > 10, f"{block.where}: give a real reason to skip"


def test_readme_gives_the_two_commands() -> None:
    """The README's commands are the project's contract (.ci/run runs the second)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "python3 -m pip install nox && python3 -m nox -s demo" in readme
    assert "python3 -m pip install nox && python3 -m nox -s tests" in readme
