"""How the suite itself is run.

``pytest --backend NAME`` (what ``nox -s tests_backend`` runs) selects by the
backend parameter, not by test name: a test with "trio" in its name still runs
on an asyncio-only run, and a test without a backend parameter runs once.

Every test has a time limit (pytest-timeout, configured in pyproject.toml): a
hang on any backend fails with every thread's stack instead of stalling CI.
"""

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


_HANGS = """
import anyio
import pytest

pytestmark = pytest.mark.anyio


async def test_hangs(anyio_backend):
    await anyio.sleep_forever()
"""


def test_every_test_has_a_time_limit(pytestconfig: pytest.Config) -> None:
    assert float(pytestconfig.getini("timeout")) == 60
    assert pytestconfig.getini("timeout_method") == "thread"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_hanging_async_test_fails_with_its_await_at_the_soft_limit(
    pytester: pytest.Pytester, backend: str
) -> None:
    """The soft limit fails the test with its traceback, and the session goes on."""
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(test_hang=_HANGS + "\n\ndef test_after():\n    pass\n")
    result = pytester.runpytest_subprocess(
        f"--backend={backend}", "--timeout=2", "-o", "timeout_method=thread", timeout=60
    )
    result.assert_outcomes(failed=1, passed=1)
    output = result.stdout.str()
    assert "still running close to its time limit of 2 s" in output
    assert "await anyio.sleep_forever()" in output, "the await it was stuck in is shown"


_BLOCKS = """
import time
import pytest

pytestmark = pytest.mark.anyio


async def test_blocks(anyio_backend):
    time.sleep(600)
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_blocked_test_ends_the_run_with_every_stack_at_its_hard_limit(
    pytester: pytest.Pytester, pytestconfig: pytest.Config, backend: str
) -> None:
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(test_blocks=_BLOCKS)
    method = pytestconfig.getini("timeout_method")
    result = pytester.runpytest_subprocess(
        f"--backend={backend}", "--timeout=1", "-o", f"timeout_method={method}", timeout=60
    )
    assert result.ret != 0
    output = result.stdout.str()
    assert "Timeout" in output
    assert "time.sleep(600)" in output, "the blocked test's stack is shown"
