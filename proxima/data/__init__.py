"""Data-processing building blocks; see :mod:`proxima.data.pipeline`."""
