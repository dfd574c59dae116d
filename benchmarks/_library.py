"""Which library the benchmarks measure: ``PROXIMA_BENCH_LIBRARY``.

No import of proxima here: this runs before anything imports it (from
``benchmarks/__init__.py``), in every process of the benchmarks, the
worker processes that executors start included.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

__all__ = ["LIBRARY_ENV", "library_first"]

#: The environment variable naming the directory that holds ``proxima/``.
LIBRARY_ENV = "PROXIMA_BENCH_LIBRARY"


#: The name of the private directories that hold the ``proxima`` link.
_PREFIX = "proxima-bench-library-"

_active: list[str] = []


def library_first() -> None:
    """Make ``import proxima`` find the library under test (once per process).

    Not by putting its directory on ``sys.path``: a work tree of another
    commit also holds a ``benchmarks/`` package, which would then shadow
    this one in the worker processes that executors start (they inherit
    ``sys.path``). A private directory holding only a ``proxima`` link to it
    goes first instead; it is removed when this process exits."""
    library = os.environ.get(LIBRARY_ENV)
    if not library or _active:
        return
    source = os.path.join(os.path.abspath(library), "proxima")
    loaded = sys.modules.get("proxima")
    if loaded is not None:
        # A worker process started by an executor: it imported proxima (from
        # the link on the sys.path it inherited) before unpickling a handler
        # of ours. Anything else is a mix-up.
        where = os.path.dirname(os.path.realpath(loaded.__file__ or ""))
        if where != os.path.realpath(source):
            raise SystemExit(f"benchmarks: proxima came from {where}, not {source}")
        return
    if not os.path.isfile(os.path.join(source, "__init__.py")):
        raise SystemExit(f"benchmarks: no proxima package in {library}")
    for entry in sys.path:  # a child process that inherited the link: use it
        if os.path.basename(entry).startswith(_PREFIX) and os.path.realpath(
            os.path.join(entry, "proxima")
        ) == os.path.realpath(source):
            sys.path.remove(entry)
            sys.path.insert(0, entry)
            _active.append(entry)
            return
    shim = tempfile.mkdtemp(prefix=_PREFIX)
    atexit.register(shutil.rmtree, shim, ignore_errors=True)
    os.symlink(source, os.path.join(shim, "proxima"))
    sys.path.insert(0, shim)
    _active.append(shim)
