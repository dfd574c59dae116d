"""``python -m proxima``: the command line, where the ``proxima`` script is not on PATH."""

from __future__ import annotations

import sys

from proxima.cli import main

if __name__ == "__main__":
    sys.exit(main(prog=f"{sys.executable.rsplit('/', 1)[-1]} -m proxima"))
