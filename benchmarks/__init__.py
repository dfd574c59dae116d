"""Benchmarks for :mod:`proxima.data.pipeline` (run with ``python -m benchmarks``).

Not a test suite: nothing here is collected by pytest. See README.md.
"""
