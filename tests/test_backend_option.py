"""``pytest --backend NAME`` (what ``nox -s tests_backend`` runs) selects by the
backend parameter, not by test name: a test with "trio" in its name still runs
on an asyncio-only run, and a test without a backend parameter runs once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

_TESTS = """
import pytest

pytestmark = pytest.mark.anyio


async def test_async(anyio_backend):
    pass


def test_sync_named_trio_and_asyncio():
    pass


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sync_per_backend(backend):
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A small suite under the project's own conftest.py."""
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(test_suite=_TESTS)
    return pytester


def _passed(run: pytest.HookRecorder) -> list[str]:
    passed, _, failed = run.listoutcomes()
    assert not failed, failed
    return sorted(report.nodeid.split("::")[-1] for report in passed)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["--backend=asyncio"],
            [
                "test_async[asyncio]",
                "test_sync_named_trio_and_asyncio",
                "test_sync_per_backend[asyncio]",
            ],
            id="asyncio",
        ),
        pytest.param(
            ["--backend=trio"],
            ["test_async[trio]", "test_sync_named_trio_and_asyncio", "test_sync_per_backend[trio]"],
            id="trio",
        ),
        pytest.param(
            ["--backend=uvloop"],
            ["test_async[uvloop]", "test_sync_named_trio_and_asyncio"],
            id="uvloop",
        ),
        pytest.param(
            ["--backend=asyncio", "--backend=trio"],
            [
                "test_async[asyncio]",
                "test_async[trio]",
                "test_sync_named_trio_and_asyncio",
                "test_sync_per_backend[asyncio]",
                "test_sync_per_backend[trio]",
            ],
            id="two-backends",
        ),
        pytest.param(
            [],
            [
                "test_async[asyncio]",
                "test_async[trio]",
                "test_async[uvloop]",
                "test_sync_named_trio_and_asyncio",
                "test_sync_per_backend[asyncio]",
                "test_sync_per_backend[trio]",
            ],
            id="every-backend-by-default",
        ),
    ],
)
def test_backend_option_selects_by_the_backend_parameter(
    suite: pytest.Pytester, args: list[str], expected: list[str]
) -> None:
    if importlib.util.find_spec("uvloop") is None:  # pragma: no cover - platform
        expected = [name for name in expected if "uvloop" not in name]
    assert _passed(suite.inline_run(*args)) == expected
