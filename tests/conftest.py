"""Every async test runs on each backend: asyncio (debug mode, so a
never-awaited coroutine fails loudly), trio, and asyncio+uvloop where uvloop
installs (skipped with a visible reason where it does not).

``pytest --backend trio`` (repeatable) keeps only the trio runs of the tests
parametrized by backend (the ``anyio_backend`` fixture, or a ``backend``
parameter); every other test still runs, once. ``nox -s tests_backend`` uses it.

Every test has a time limit (``timeout`` in pyproject.toml, pytest-timeout):
at that limit every thread's stack is dumped and the session ends, whatever
hangs. An async test gets a soft limit first, a little earlier (at 90% of
it, at least a second before): it fails on its own with the traceback of the
``await`` it was stuck in (a thread dump shows only the event loop) and the
session goes on.
"""

from __future__ import annotations

import functools
import inspect
import os
import signal
import time
from collections.abc import Callable, Generator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, settings

# A runner may start the suite with SIGINT ignored (a background job of a
# non-interactive shell is started so), and an ignored signal stays ignored
# in every process started from here: the command line then keeps ignoring
# Ctrl-C, as it must under nohup (R14.3), and the tests that press Ctrl-C at
# a real `proxima run` would wait forever. They stand for a terminal, where
# SIGINT reaches the foreground process, so the suite runs with it handled.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The default run keeps property tests to a few minutes in all; `nox -s
# properties` selects the larger budget.
settings.register_profile(
    "default",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("default")

try:
    import uvloop  # noqa: F401
except ImportError:  # pragma: no cover - depends on the platform
    _UVLOOP_SKIP: str | None = "uvloop is not installed on this platform"
else:
    _UVLOOP_SKIP = None

BACKENDS = [
    pytest.param(("asyncio", {"debug": True}), id="asyncio"),
    pytest.param(("trio", {}), id="trio"),
    pytest.param(
        ("asyncio", {"debug": True, "use_uvloop": True}),
        id="uvloop",
        marks=[pytest.mark.skipif(_UVLOOP_SKIP is not None, reason=str(_UVLOOP_SKIP))],
    ),
]


BACKEND_NAMES = ("asyncio", "trio", "uvloop")
#: The parameters that name a backend: the fixture, and sync tests that pick one.
_BACKEND_PARAMS = ("anyio_backend", "backend")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        choices=BACKEND_NAMES,
        default=[],
        help="run the backend-parametrized tests on this backend only (repeatable; "
        "default: every backend); tests without a backend parameter run as usual",
    )


def _backend_of(value: object) -> str | None:
    """``("asyncio", {"use_uvloop": True})`` -> ``"uvloop"``; ``"trio"`` -> ``"trio"``."""
    if isinstance(value, tuple) and value and isinstance(value[0], str):
        options = value[1] if len(value) > 1 else {}
        uvloop = isinstance(options, dict) and bool(options.get("use_uvloop"))
        return "uvloop" if uvloop else value[0]
    if isinstance(value, str) and value in BACKEND_NAMES:
        return value
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the runs on backends ``--backend`` did not name."""
    wanted = set(config.getoption("--backend"))
    if not wanted:
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params: dict[str, object] = callspec.params if callspec is not None else {}
        names = {_backend_of(params[p]) for p in _BACKEND_PARAMS if p in params} - {None}
        (dropped if names - wanted else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


@pytest.fixture
def backend_name(anyio_backend: tuple[str, dict[str, Any]]) -> str:
    """``"asyncio"`` or ``"trio"`` (uvloop reports as asyncio)."""
    return anyio_backend[0]


# -- time limits ----------------------------------------------------------------------------------

#: When an async test's soft limit fails it: this long before the hard limit,
#: so that the failure is reported (traceback, teardown) before the hard one.
_SOFT_MARGIN_SHARE = 0.1
_SOFT_MARGIN_MAX = 1.0
_STARTED = pytest.StashKey[float]()


def _time_limit(item: pytest.Item) -> float:
    """The item's pytest-timeout limit in seconds (0: none), looked up as
    pytest-timeout does: marker, then option, then environment, then ini."""
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    for value in (
        item.config.getoption("timeout", None),
        os.environ.get("PYTEST_TIMEOUT"),
        item.config.getini("timeout"),
    ):
        if value not in (None, ""):
            return float(value)
    return 0.0


def _soft_limit(limit: float) -> float:
    """Seconds from the start of a test to its soft limit: 90% of the hard
    limit, and at least 1 s (or half of it, for tiny limits) before it."""
    return limit - max(limit * _SOFT_MARGIN_SHARE, min(_SOFT_MARGIN_MAX, limit / 2))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """The hard limit counts from here (setup included), so the soft one does too."""
    item.stash[_STARTED] = time.monotonic()


def _within(limit: float, deadline: float, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    async def within_limit(*args: Any, **kwargs: Any) -> Any:
        try:
            with anyio.fail_after(max(deadline - time.monotonic(), 0.0)) as scope:
                return await func(*args, **kwargs)
        except TimeoutError:
            if scope.cancel_called:
                pytest.fail(
                    f"still running close to its time limit of {limit:g} s (see the await above)"
                )
            raise

    return within_limit


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """Run an async test inside its soft time limit."""
    func = pyfuncitem.obj
    limit = _time_limit(pyfuncitem)
    if limit <= 0 or not inspect.iscoroutinefunction(func):
        return (yield)
    started = pyfuncitem.stash.get(_STARTED, time.monotonic())
    pyfuncitem.obj = _within(limit, started + _soft_limit(limit), func)
    try:
        return (yield)
    finally:
        pyfuncitem.obj = func
