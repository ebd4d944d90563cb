"""Thin wrapper kept for existing command lines: `python scripts/export.py ...` runs `litenext-export`.

See `litenext_monai/cli/export.py` (`python scripts/export.py --help`).
"""

import sys

from litenext_monai.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
