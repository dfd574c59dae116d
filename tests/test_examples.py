"""examples/demo.py runs as its docstring promises, on each backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_demo(backend: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(DEMO), "--backend", backend],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"on {backend}" in out
    assert "PARTIALLY_COMPLETED" in out
    assert "fetch_prices: attempt 3 succeeded" in out
    assert "TIMED_OUT" in out
    assert "outcome as expected" in out
