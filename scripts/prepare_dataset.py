"""Thin wrapper kept for existing command lines: `python scripts/prepare_dataset.py ...` runs `litenext-prepare`.

See `litenext_monai/cli/prepare.py` (`python scripts/prepare_dataset.py --help`).
"""

import sys

from litenext_monai.cli.prepare import main

if __name__ == "__main__":
    sys.exit(main())
