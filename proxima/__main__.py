"""``python -m proxima``: the command line, where the ``proxima`` script is not on PATH."""

from __future__ import annotations

import sys
from pathlib import Path

from proxima.cli import main

if __name__ == "__main__":
    # The commands it prints (the one that resumes a run) start the same way.
    sys.exit(main(prog=f"{Path(sys.executable).name or 'python'} -m proxima"))
