"""Every async test runs on each backend: asyncio (debug mode, so a
never-awaited coroutine fails loudly), trio, and asyncio+uvloop where uvloop
installs (skipped with a visible reason where it does not)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings

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


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


@pytest.fixture
def backend_name(anyio_backend: tuple[str, dict[str, Any]]) -> str:
    """``"asyncio"`` or ``"trio"`` (uvloop reports as asyncio)."""
    return anyio_backend[0]
