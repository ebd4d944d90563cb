"""Thin wrapper kept for existing command lines: `python scripts/compare.py ...` runs `litenext-compare`.

See `litenext_monai/cli/compare.py` (`python scripts/compare.py --help`).
"""

import sys

from litenext_monai.cli.compare import main

if __name__ == "__main__":
    sys.exit(main())
