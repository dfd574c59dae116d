"""Instructions per stage, counted by valgrind: a figure the machine's noise cannot move.

``python -m benchmarks.instructions --backend asyncio --shape chain --parallel 8``

Time on a shared 2-core machine moves by 30 % from one run to the next;
the number of machine instructions a run executes hardly moves at all. For
one DAG case this starts three processes under ``valgrind --tool=cachegrind
--cache-sim=no`` (no cache simulation: only instructions are counted), each
warming up both sides with one run: one does nothing more, one then runs
the library once, one the baseline once. The differences to the first are
the instructions of one library run and one baseline run; both include the
garbage collector's work, as the timed runs do. About a minute per case.

What instructions do not show: memory traffic (cache misses, the garbage
collector walking a large heap), which the timed runs do show. Read the
two together. ``--library DIR`` measures another checkout (before/after).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ._library import LIBRARY_ENV

__all__ = ["main"]

_REPO = Path(__file__).resolve().parent.parent


async def _child(shape: str, size: int, parallel: str, variant: str, side: str, count: int) -> None:
    from proxima.data.pipeline import Pipeline

    from .baseline import BaselineRunner
    from .measure import VARIANTS, library_config, library_stages, noop
    from .shapes import build_shape

    specs = build_shape(shape, size)
    stages = library_stages(specs)
    max_parallel = size if parallel == "unbounded" else int(parallel)

    async def library() -> object:
        config = library_config(max_parallel, variant=variant)
        return await Pipeline(config).add_stages(stages).execute()

    async def baseline() -> object:
        runner = BaselineRunner(
            specs, noop, max_parallel=max_parallel, stage_timeout=VARIANTS[variant]
        )
        return await runner.run()

    await library()  # warm-up, in every process alike
    await baseline()
    # Built before the measured run, as the timed benchmark builds it untimed.
    built = Pipeline(library_config(max_parallel, variant=variant)).add_stages(stages)
    for _ in range(count):
        gc.collect()
        if side == "library":
            await built.execute()
        else:
            await baseline()
    gc.collect()


def _count(argv: list[str], library: str | None) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(_REPO))
    if library:
        env[LIBRARY_ENV] = os.path.abspath(library)  # see benchmarks/_library.py
    command = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        *argv,
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=_REPO, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind run failed:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def measure(
    backend: str, shape: str, size: int, parallel: str, variant: str, library: str | None
) -> tuple[float, float]:
    """Instructions per stage of one library run and one baseline run."""
    case = [
        "--child",
        "--backend",
        backend,
        "--shape",
        shape,
        "--size",
        str(size),
        "--parallel",
        parallel,
        "--variant",
        variant,
    ]
    runs = [("library", 0), ("library", 1), ("baseline", 1)]
    with ThreadPoolExecutor(len(runs)) as pool:
        idle, lib, base = pool.map(
            lambda run: _count([*case, "--side", run[0], "--count", str(run[1])], library),
            runs,
        )
    return (lib - idle) / size, (base - idle) / size


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio", "uvloop"])
    parser.add_argument("--shape", default="chain", choices=["chain", "wide", "layers", "fanin"])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--parallel", default="8", help="'unbounded' or an integer")
    parser.add_argument("--variant", default="no-timeout", choices=["default", "no-timeout"])
    parser.add_argument("--library", default=None, help="a directory holding proxima/")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", default="library", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        from .measure import backend_run

        backend_run(
            args.backend,
            _child,
            args.shape,
            args.size,
            args.parallel,
            args.variant,
            args.side,
            args.count,
        )
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    lib, base = measure(
        args.backend, args.shape, args.size, args.parallel, args.variant, args.library
    )
    par = "N" if args.parallel == "unbounded" else args.parallel
    print(
        f"{args.backend} {args.shape} {args.size} par={par} {args.variant}: "
        f"library {lib:,.0f} instructions/stage, baseline {base:,.0f}, ratio {lib / base:.3f}"
        + (f"  (library: {args.library})" if args.library else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
