"""proxima: stage-based async pipelines on anyio (asyncio and trio)."""

from __future__ import annotations

import functools

__all__ = ["__version__"]


@functools.cache
def _version() -> str:
    """The installed distribution's version: written once, in pyproject.toml."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("proxima")
    except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> str:
    """``proxima.__version__``, looked up on first use so that importing the
    library never pays for reading the package metadata."""
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'proxima' has no attribute {name!r}")
