"""Thin wrapper kept for existing command lines: `python scripts/benchmark.py ...` runs `litenext-benchmark`.

See `litenext_monai/cli/benchmark.py` (`python scripts/benchmark.py --help`).
"""

import sys

from litenext_monai.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
