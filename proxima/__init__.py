"""proxima: stage-based async pipelines on anyio (asyncio and trio)."""

__version__ = "0.1.0"
