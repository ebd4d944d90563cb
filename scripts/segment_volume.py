"""Thin wrapper kept for existing command lines: `python scripts/segment_volume.py ...` runs `litenext-segment-volume`.

See `litenext_monai/cli/segment_volume.py` (`python scripts/segment_volume.py --help`).
"""

import sys

from litenext_monai.cli.segment_volume import main

if __name__ == "__main__":
    sys.exit(main())
