"""Entry point of one backend's worker process: ``python -m benchmarks.worker BACKEND``.

``benchmarks/__init__.py`` has already put the library under test first on
``sys.path`` (:mod:`benchmarks._library`), before anything imported it; this
hands over to :func:`benchmarks.measure.main`. The library comes from
``PROXIMA_BENCH_LIBRARY`` (a directory holding ``proxima/``; set by ``python
-m benchmarks --library PATH``, or taken from ``PYTHONPATH``), else it is
the one Python finds anyway. So the harness of one tree can measure the
library of another (``git worktree add /tmp/before ebd3091``): the harness
stays the same on both sides, and it uses only public API. The same holds
for ``PROXIMA_BENCH_LIBRARY=DIR python -m benchmarks.profiling ...``.
"""

from __future__ import annotations

# Absolute imports: anyio's process workers load this file (the parent's
# ``__main__``) as a plain module, outside its package.
from benchmarks._library import LIBRARY_ENV, library_first

__all__ = ["LIBRARY_ENV", "main"]


def main() -> int:
    library_first()
    from benchmarks.measure import main as measure_main

    return measure_main()


if __name__ == "__main__":
    raise SystemExit(main())
