"""Benchmarks for :mod:`proxima.data.pipeline` (run with ``python -m benchmarks``).

Not a test suite: nothing here is collected by pytest. See README.md.
"""

from ._library import library_first as _library_first

# Before anything imports proxima: PROXIMA_BENCH_LIBRARY picks the library
# under test (see _library.py).
_library_first()
